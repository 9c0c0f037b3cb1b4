//! The grouper's fast path for PETsys-style rules ([`ModuleSlots`]): when hits may only share
//! a photon with hits of their own module (every `M` pair of `map_trigger.tsv` is `[m, m]`)
//! and every such module fits inside the distance limit, a hit can join only the one open
//! group of its module, so the grouper keeps the last group opened on each module instead of
//! searching the open groups, and closes groups in bulk instead of at every hit.

use super::config::GroupingConfig;
use super::lut::CrystalLut;

/// Per module that may group: the id (`seq`) and first-hit time of the last group opened on
/// it, found from a hit's channel.
///
/// Exact by construction ([`ModuleSlots::for_rules`] accepts only rules where it is): with
/// only same-module pairs, a hit may join an open group only if that group's first hit is on
/// the same module; with the module inside the distance limit every such group qualifies, so
/// a new group opens on a module only when none of its groups is open, at most one is open
/// at a time, and "the earliest-opened joinable group" is the last one opened there, if it is
/// still open.
#[derive(Clone, Debug)]
pub(crate) struct ModuleSlots {
    /// Per channel id below [`CrystalLut::channel_bound`]: its module's slot,
    /// [`ModuleSlots::NEVER_GROUPS`] for a module no pair names, or [`ModuleSlots::UNMAPPED`]
    /// (one look-up per hit instead of the crystal's and then its slot).
    slot_of_channel: Vec<u32>,
    /// Per slot: `seq` and first hit's time of the last group opened on the module
    /// ([`ModuleSlots::NONE`] before the first), side by side so that a hit's time test
    /// reads this small table, not the group.
    last_group: Vec<(u64, i64)>,
}

impl ModuleSlots {
    /// Slot of channels missing from the geometry.
    pub(crate) const UNMAPPED: u32 = u32::MAX;
    /// Slot of crystals whose module no pair names: every hit there is a photon of its own.
    pub(crate) const NEVER_GROUPS: u32 = u32::MAX - 1;
    /// No group opened yet on the module: an id no group has, and a time no hit is within a
    /// window of.
    const NONE: (u64, i64) = (u64::MAX, i64::MIN);

    /// The slots for `cfg` over the crystals of `lut`, or `None` when the rules need the
    /// general search: no module rule (any two modules may group), a pair of two different
    /// modules, or a grouping module with a crystal position that is not finite or two
    /// crystals farther apart than `max_distance_mm` (its bounding box's diagonal decides,
    /// computed as the grouper compares distances, squared in f64: every pair's computed
    /// distance is at most the box's).
    pub(crate) fn for_rules(cfg: &GroupingConfig, lut: &CrystalLut) -> Option<Self> {
        let pairs = cfg.multi_hit_module_pairs.as_ref()?;
        if pairs.pairs().iter().any(|&[a, b]| a != b) {
            return None;
        }
        let mut slot_of_module = std::collections::HashMap::new();
        for &[m, _] in pairs.pairs() {
            let next = slot_of_module.len() as u32;
            slot_of_module.entry(m).or_insert(next);
        }
        let mut boxes = vec![([f32::INFINITY; 3], [f32::NEG_INFINITY; 3]); slot_of_module.len()];
        let mut slot_of_crystal = Vec::with_capacity(lut.len());
        for crystal in 0..lut.len() as u32 {
            let Some(&slot) = slot_of_module.get(&lut.module(crystal)) else {
                slot_of_crystal.push(Self::NEVER_GROUPS);
                continue;
            };
            let pos = lut.pos_mm(crystal);
            if pos.iter().any(|v| !v.is_finite()) {
                return None;
            }
            let (lo, hi) = &mut boxes[slot as usize];
            for axis in 0..3 {
                lo[axis] = lo[axis].min(pos[axis]);
                hi[axis] = hi[axis].max(pos[axis]);
            }
            slot_of_crystal.push(slot);
        }
        let dmax2 = cfg.max_distance_mm * cfg.max_distance_mm;
        // A box still at its initial infinities has no crystal: nothing to check.
        let fits = |(lo, hi): &([f32; 3], [f32; 3])| {
            lo[0] > hi[0] || super::grouping::squared_distance(*lo, *hi) <= dmax2
        };
        if !boxes.iter().all(fits) {
            return None;
        }
        let slot_of_channel = (0..lut.channel_bound())
            .map(|ch| match lut.crystal(ch) {
                Some(crystal) => slot_of_crystal[crystal as usize],
                None => Self::UNMAPPED,
            })
            .collect();
        Some(Self {
            slot_of_channel,
            last_group: vec![Self::NONE; boxes.len()],
        })
    }

    /// The slot of `channel` ([`ModuleSlots::UNMAPPED`] if the geometry has no crystal for
    /// it).
    #[inline(always)]
    pub(crate) fn slot(&self, channel: u32) -> u32 {
        self.slot_of_channel
            .get(channel as usize)
            .copied()
            .unwrap_or(Self::UNMAPPED)
    }

    /// `seq` and first hit's time of the last group opened on `slot` ([`ModuleSlots::NONE`]
    /// for [`ModuleSlots::NEVER_GROUPS`]).
    #[inline(always)]
    pub(crate) fn last_group(&self, slot: u32) -> (u64, i64) {
        self.last_group
            .get(slot as usize)
            .copied()
            .unwrap_or(Self::NONE)
    }

    /// Records that group `seq` was just opened on `slot` by a hit at `t_first` (no-op for
    /// [`ModuleSlots::NEVER_GROUPS`]).
    #[inline(always)]
    pub(crate) fn opened(&mut self, slot: u32, seq: u64, t_first: i64) {
        if let Some(last) = self.last_group.get_mut(slot as usize) {
            *last = (seq, t_first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coincidence::ModulePairs;
    use crate::{Crystal, Geometry};

    /// Two modules of two crystals each, 30 mm apart inside a module; module 2 has one crystal.
    fn lut() -> CrystalLut {
        let mut g = Geometry::default();
        for (ch, module, x) in [(0, 0, 0.0), (1, 0, 30.0), (2, 1, 500.0), (3, 1, 530.0)] {
            g.crystals.insert(
                ch,
                Crystal {
                    module,
                    xi: 0,
                    yi: 0,
                    pos_mm: [x, 0.0, 0.0],
                },
            );
        }
        g.crystals.insert(
            7,
            Crystal {
                module: 2,
                xi: 0,
                yi: 0,
                pos_mm: [900.0, 0.0, 0.0],
            },
        );
        CrystalLut::from_geometry(&g)
    }

    fn rules(pairs: Option<Vec<[u32; 2]>>, dmax: f64) -> GroupingConfig {
        GroupingConfig {
            multi_hit_module_pairs: pairs.map(ModulePairs),
            ..GroupingConfig::new(1_000, dmax)
        }
    }

    #[test]
    fn same_module_pairs_within_the_distance_take_the_fast_path() {
        let lut = lut();
        let s = ModuleSlots::for_rules(&rules(Some(vec![[1, 1], [0, 0], [1, 1]]), 30.0), &lut)
            .expect("every module fits in 30 mm");
        let slots: Vec<u32> = (0..9).map(|ch| s.slot(ch)).collect();
        let (never, unmapped) = (ModuleSlots::NEVER_GROUPS, ModuleSlots::UNMAPPED);
        assert_eq!(
            slots,
            vec![1, 1, 0, 0, unmapped, unmapped, unmapped, never, unmapped],
            "module 1 named first gets slot 0; module 2 is named by no pair"
        );
        assert_eq!(s.last_group(0), ModuleSlots::NONE);
        assert_eq!(s.last_group(ModuleSlots::NEVER_GROUPS), ModuleSlots::NONE);
        // An empty rule list: nothing groups, still exact.
        assert!(ModuleSlots::for_rules(&rules(Some(vec![]), 0.0), &lut).is_some());
    }

    #[test]
    fn rules_the_fast_path_cannot_follow_are_left_to_the_search() {
        let lut = lut();
        assert!(
            ModuleSlots::for_rules(&rules(None, 1e9), &lut).is_none(),
            "any pair"
        );
        assert!(
            ModuleSlots::for_rules(&rules(Some(vec![[0, 0], [0, 1]]), 1e9), &lut).is_none(),
            "a pair of two modules"
        );
        assert!(
            ModuleSlots::for_rules(&rules(Some(vec![[0, 0]]), 29.9), &lut).is_none(),
            "module 0 is 30 mm wide"
        );
        // Module 2's single crystal fits any limit; module 1 is not named, so its width is
        // no matter.
        assert!(ModuleSlots::for_rules(&rules(Some(vec![[2, 2]]), 0.0), &lut).is_some());
    }
}
