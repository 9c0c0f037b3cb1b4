//! Which pairs of modules a rule allows: PETsys's trigger map (`map_trigger.tsv`: `C` region
//! pairs may form coincidences, `M` region pairs may be grouped into one photon), as a list in
//! configurations ([`ModulePairs`]) and as a bit table on the hot path ([`ModulePairTable`]).
//! A module is a crystal's `module` in the geometry (PETsys's trigger region).

use serde::{Deserialize, Serialize};

/// Largest module id a pair may name, plus one (PETsys: `MAX_TRIGGER_REGIONS` = 4096).
pub const MAX_MODULES: u32 = 4096;

/// Unordered pairs of modules: `[a, b]` allows `(a, b)` and `(b, a)`; `[a, a]` allows two
/// crystals of module `a`. Serialized as a list of two-element lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModulePairs(pub Vec<[u32; 2]>);

impl ModulePairs {
    /// The pairs.
    pub fn pairs(&self) -> &[[u32; 2]] {
        &self.0
    }

    /// The first module id that is too large ([`MAX_MODULES`] or more), if any.
    pub fn out_of_range(&self) -> Option<u32> {
        self.0.iter().flatten().copied().find(|&m| m >= MAX_MODULES)
    }

    /// The lookup table (ids of [`MAX_MODULES`] or more are left out: validate first).
    pub fn table(&self) -> ModulePairTable {
        let n = self
            .0
            .iter()
            .flatten()
            .copied()
            .filter(|&m| m < MAX_MODULES)
            .max()
            .map_or(0, |m| m as usize + 1);
        let mut bits = vec![0u64; (n * n).div_ceil(64)];
        for &[a, b] in &self.0 {
            if a >= MAX_MODULES || b >= MAX_MODULES {
                continue;
            }
            for k in [a as usize * n + b as usize, b as usize * n + a as usize] {
                bits[k / 64] |= 1 << (k % 64);
            }
        }
        ModulePairTable { n, bits }
    }
}

/// Dense symmetric bit table of [`ModulePairs`]: `allows(a, b)` without hashing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModulePairTable {
    n: usize,
    bits: Vec<u64>,
}

impl ModulePairTable {
    /// True when modules `a` and `b` form an allowed pair (false for a module no pair names).
    #[inline]
    pub fn allows(&self, a: u32, b: u32) -> bool {
        let (a, b) = (a as usize, b as usize);
        if a >= self.n || b >= self.n {
            return false;
        }
        let k = a * self.n + b;
        self.bits[k / 64] & (1 << (k % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_symmetric_and_nothing_else_is_allowed() {
        let t = ModulePairs(vec![[0, 1], [2, 2], [5, 3]]).table();
        let allowed: Vec<(u32, u32)> = (0..8)
            .flat_map(|a| (0..8).map(move |b| (a, b)))
            .filter(|&(a, b)| t.allows(a, b))
            .collect();
        assert_eq!(
            allowed,
            vec![(0, 1), (1, 0), (2, 2), (3, 5), (5, 3)],
            "exactly the listed pairs, both ways"
        );
        assert!(!t.allows(u32::MAX, 0));
        assert!(!ModulePairs::default().table().allows(0, 0));
    }

    #[test]
    fn the_largest_module_id_is_accepted_and_the_next_is_named() {
        let top = MAX_MODULES - 1;
        let p = ModulePairs(vec![[top, 0]]);
        assert_eq!(p.out_of_range(), None);
        assert!(p.table().allows(0, top));
        assert_eq!(
            ModulePairs(vec![[1, MAX_MODULES]]).out_of_range(),
            Some(MAX_MODULES)
        );
    }
}
