//! PETsys's trigger map (`map_trigger.tsv`: `region1 region2 C|M` per line) read into the
//! module pairs scandaq's sorter (`C`: may coincide) and grouping (`M`: may share a photon)
//! take.

use anyhow::{Result, bail};
use scandaq_core::coincidence::{MAX_MODULES, ModulePairs};
use std::collections::BTreeMap;
use std::path::Path;

/// Parses a PETsys `map_trigger.tsv` (`region1 region2 C|M` per line, `#` comments): the `C`
/// pairs and the `M` pairs. As in PETsys, a later line for the same pair replaces an earlier
/// one. Errors name the file and line.
pub fn parse_trigger_map(path: &Path, text: &str) -> Result<(ModulePairs, ModulePairs)> {
    let mut kinds: BTreeMap<[u32; 2], char> = BTreeMap::new();
    for (k, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), k + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [a, b, kind] = fields[..] else {
            bail!(
                "{}: expected `region1 region2 C|M` (3 fields), got {:?}",
                at(),
                line
            );
        };
        let region = |s: &str| -> Result<u32> {
            match s.parse::<u32>() {
                Ok(r) if r < MAX_MODULES => Ok(r),
                _ => bail!(
                    "{}: region {s:?}: expected a whole number from 0 to {}",
                    at(),
                    MAX_MODULES - 1
                ),
            }
        };
        let (a, b) = (region(a)?, region(b)?);
        let kind = match kind.to_ascii_uppercase().as_str() {
            "C" => 'C',
            "M" => 'M',
            other => bail!(
                "{}: trigger type {other:?}: expected C (coincidence) or M (multi-hit)",
                at()
            ),
        };
        kinds.insert([a.min(b), a.max(b)], kind);
    }
    let of = |want: char| {
        ModulePairs(
            kinds
                .iter()
                .filter(|(_, k)| **k == want)
                .map(|(p, _)| *p)
                .collect(),
        )
    };
    Ok((of('C'), of('M')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_map_lines_later_lines_win_and_errors_name_the_line() {
        let p = Path::new("map_trigger.tsv");
        let (c, m) = parse_trigger_map(
            p,
            "# r1 r2 type\n0\t0\tM\n1 1 m\n0\t1\tC\n2\t1\tC\n1\t2\tM\n",
        )
        .unwrap();
        assert_eq!(c, ModulePairs(vec![[0, 1]]));
        assert_eq!(m, ModulePairs(vec![[0, 0], [1, 1], [1, 2]]));
        let e = parse_trigger_map(p, "0\t1\tC\n0\t1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("map_trigger.tsv line 2") && e.contains("3 fields"),
            "{e}"
        );
        let e = parse_trigger_map(p, "0\t1\tX\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("\"X\""), "{e}");
        let e = parse_trigger_map(p, "0\t4096\tC\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("4096"), "{e}");
    }
}
