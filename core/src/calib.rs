//! Calibration tables and their documented text formats (see docs/calibration.md):
//! TDC fine-time per (channel, TAC, branch), ToT -> keV per channel, time skew per channel.

pub use crate::table_text::TableError;
use crate::table_text::rows;
use crate::{ChannelId, Geometry};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// TDC branch: `T` (timing, leading edge) or `E` (energy, trailing edge in ToT mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Branch {
    /// Timing branch.
    T = 0,
    /// Energy branch.
    E = 1,
}

/// One TAC's response: `fine = a0 + a1*q + a2*q^2`, and its offset `t0` (clock periods).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TdcEntry {
    /// Offset in clock periods, subtracted from the edge time.
    pub t0: f64,
    /// Constant term (fine-code units).
    pub a0: f64,
    /// Linear term (codes per clock period).
    pub a1: f64,
    /// Quadratic term.
    pub a2: f64,
}

impl TdcEntry {
    /// Solves `fine = a0 + a1*q + a2*q^2` for the phase `q` (clock periods) in the
    /// numerically stable form `q = 2(f-a0) / (a1 + sqrt(a1^2 + 4 a2 (f-a0)))`, which also
    /// holds for `a2 == 0`. A negative discriminant is clamped to zero.
    #[inline]
    pub fn phase(&self, fine: f64) -> f64 {
        let d = fine - self.a0;
        let disc = (self.a1 * self.a1 + 4.0 * self.a2 * d).max(0.0);
        2.0 * d / (self.a1 + disc.sqrt())
    }
}

/// TDC calibration, keyed by (channel id, TAC, branch).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TdcTable {
    /// Entries.
    pub entries: BTreeMap<(u32, u8, Branch), TdcEntry>,
}

const TDC_LAYOUT: &str = "portID slaveID chipID channelID tacID branch(T|E) t0 a0 a1 a2";

impl TdcTable {
    /// Parses the PETsys-compatible `tdc_calibration.tsv` layout.
    pub fn parse(name: &str, text: &str) -> Result<Self, TableError> {
        let mut entries = BTreeMap::new();
        for row in rows(name, text, 10, TDC_LAYOUT) {
            let row = row?;
            let id = row.channel(0)?;
            let tac: u8 = row.get(4, "tacID")?;
            if tac > 3 {
                return Err(row.error(format!("tacID {tac} out of range 0..3")));
            }
            let branch = match row.fields[5] {
                "T" | "t" => Branch::T,
                "E" | "e" => Branch::E,
                other => return Err(row.error(format!("branch must be T or E, found {other:?}"))),
            };
            let e = TdcEntry {
                t0: row.finite(6, "t0")?,
                a0: row.finite(7, "a0")?,
                a1: row.finite(8, "a1")?,
                a2: row.finite(9, "a2")?,
            };
            if e.a1 <= 0.0 {
                return Err(row.error(format!(
                    "a1 = {} must be positive (codes per clock period)",
                    e.a1
                )));
            }
            if entries.insert((id.0, tac, branch), e).is_some() {
                return Err(row.error(format!(
                    "duplicate entry for channel {} tac {tac} branch {branch:?}",
                    id.0
                )));
            }
        }
        Ok(Self { entries })
    }

    /// Writes the table in the layout [`TdcTable::parse`] reads.
    pub fn to_text(&self) -> String {
        let mut out = format!("# {TDC_LAYOUT}\n");
        for (&(id, tac, branch), e) in &self.entries {
            let (p, s, c, ch) = ChannelId(id).parts();
            let b = if branch == Branch::T { 'T' } else { 'E' };
            let _ = writeln!(
                out,
                "{p}\t{s}\t{c}\t{ch}\t{tac}\t{b}\t{:?}\t{:?}\t{:?}\t{:?}",
                e.t0, e.a0, e.a1, e.a2
            );
        }
        out
    }

    /// Entry for (channel, tac, branch).
    pub fn get(&self, channel: u32, tac: u8, branch: Branch) -> Option<&TdcEntry> {
        self.entries.get(&(channel, tac, branch))
    }
}

/// ToT -> energy model of one channel: `E_keV = b_kev * (exp(tot_ns / a_ns) - 1)`, the inverse of
/// the saturating response `ToT = a_ns * ln(1 + E / b_kev)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EnergyEntry {
    /// Scale of the ToT response, ns.
    pub a_ns: f64,
    /// Saturation energy, keV.
    pub b_kev: f64,
}

impl EnergyEntry {
    /// Energy in keV of a ToT in ns.
    #[inline]
    pub fn energy_kev(&self, tot_ns: f64) -> f64 {
        self.b_kev * ((tot_ns / self.a_ns).exp() - 1.0)
    }
}

/// Energy calibration by channel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnergyTable {
    /// Entries by channel id.
    pub entries: BTreeMap<u32, EnergyEntry>,
}

const ENERGY_LAYOUT: &str = "portID slaveID chipID channelID a_ns b_kev";

impl EnergyTable {
    /// Parses `energy_calibration.tsv`.
    pub fn parse(name: &str, text: &str) -> Result<Self, TableError> {
        let mut entries = BTreeMap::new();
        for row in rows(name, text, 6, ENERGY_LAYOUT) {
            let row = row?;
            let id = row.channel(0)?;
            let e = EnergyEntry {
                a_ns: row.finite(4, "a_ns")?,
                b_kev: row.finite(5, "b_kev")?,
            };
            if e.a_ns <= 0.0 || e.b_kev <= 0.0 {
                return Err(row.error("a_ns and b_kev must be positive".into()));
            }
            if entries.insert(id.0, e).is_some() {
                return Err(row.error(format!("channel {} appears twice", id.0)));
            }
        }
        Ok(Self { entries })
    }

    /// Writes the table.
    pub fn to_text(&self) -> String {
        let mut out = format!("# {ENERGY_LAYOUT}   (E_keV = b_kev * (exp(ToT_ns / a_ns) - 1))\n");
        for (&id, e) in &self.entries {
            let (p, s, c, ch) = ChannelId(id).parts();
            let _ = writeln!(out, "{p}\t{s}\t{c}\t{ch}\t{:?}\t{:?}", e.a_ns, e.b_kev);
        }
        out
    }
}

/// Per-channel time offsets (skew), ps; subtracted from each hit's time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SkewTable {
    /// Offsets by channel id, ps.
    pub offsets_ps: BTreeMap<u32, f64>,
}

const SKEW_LAYOUT: &str = "portID slaveID chipID channelID t0_ps";

impl SkewTable {
    /// Parses `skew.tsv`.
    pub fn parse(name: &str, text: &str) -> Result<Self, TableError> {
        let mut offsets_ps = BTreeMap::new();
        for row in rows(name, text, 5, SKEW_LAYOUT) {
            let row = row?;
            let id = row.channel(0)?;
            if offsets_ps.insert(id.0, row.finite(4, "t0_ps")?).is_some() {
                return Err(row.error(format!("channel {} appears twice", id.0)));
            }
        }
        Ok(Self { offsets_ps })
    }

    /// Writes the table.
    pub fn to_text(&self) -> String {
        let mut out = format!("# {SKEW_LAYOUT}\n");
        for (&id, t) in &self.offsets_ps {
            let (p, s, c, ch) = ChannelId(id).parts();
            let _ = writeln!(out, "{p}\t{s}\t{c}\t{ch}\t{t:?}");
        }
        out
    }
}

/// Everything a replay needs to turn raw words into physics, with the checksum of the texts
/// it was read from (recorded in every output file and manifest).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calibration {
    /// Fine-time calibration (required).
    pub tdc: TdcTable,
    /// ToT -> keV; `None` = energies stay ToT in ns.
    pub energy: Option<EnergyTable>,
    /// Per-channel skew; `None` = no skew correction.
    pub skew: Option<SkewTable>,
    /// Channel map, if one was given.
    pub geometry: Option<Geometry>,
    /// sha256 (hex) over the names and texts of the tables, in load order.
    pub checksum: String,
    /// Where each table came from, for the manifest.
    pub sources: Vec<String>,
}

/// sha256 hex digest over `(name, text)` pairs; stable across platforms.
pub fn checksum_of(parts: &[(&str, &str)]) -> String {
    let mut h = Sha256::new();
    for (name, text) in parts {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    crate::hex::hex_lower(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tdc_round_trip_and_phase_inversion() {
        let mut t = TdcTable::default();
        let e = TdcEntry {
            t0: 0.31,
            a0: 95.5,
            a1: 310.25,
            a2: -11.0,
        };
        t.entries.insert((70, 2, Branch::E), e);
        let back = TdcTable::parse("tdc", &t.to_text()).unwrap();
        assert_eq!(back, t);
        for q in [0.0, 0.013, 0.5, 0.999] {
            let fine = e.a0 + e.a1 * q + e.a2 * q * q;
            assert!((e.phase(fine) - q).abs() < 1e-12, "q={q}");
        }
        let linear = TdcEntry { a2: 0.0, ..e };
        assert!((linear.phase(e.a0 + e.a1 * 0.25) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn bad_rows_name_line_and_column() {
        let err = TdcTable::parse("tdc_calibration.tsv", "# c\n0 0 0 1 0 X 0 1 2 3\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("branch must be T or E"));
        let err = SkewTable::parse("skew.tsv", "0 0 0 1 nan\n").unwrap_err();
        assert!(err.to_string().contains("t0_ps"), "{err}");
        let err = EnergyTable::parse("energy.tsv", "0 0 0 1 2.0\n").unwrap_err();
        assert!(err.to_string().contains("expected 6 columns"), "{err}");
    }

    /// docs/calibration.md: tacID 0..3; a_ns and b_kev both positive; entries found by
    /// (channel, TAC, branch).
    #[test]
    fn tac_range_positive_energy_terms_and_lookup() {
        // Channel 0x1041 = port 0, slave 1, chip 1, channel 1.
        let t = TdcTable::parse("tdc", "0 1 1 1 3 T 0.5 100 300 -10\n").unwrap();
        let e = t.get(0x1041, 3, Branch::T).expect("the row's entry");
        assert_eq!((e.t0, e.a0, e.a1, e.a2), (0.5, 100.0, 300.0, -10.0));
        assert!(t.get(0x1041, 3, Branch::E).is_none());
        assert!(t.get(0x1041, 2, Branch::T).is_none());
        let err = TdcTable::parse("tdc", "0 1 1 1 4 T 0.5 100 300 -10\n").unwrap_err();
        assert!(err.message.contains("tacID 4 out of range"), "{err}");
        for row in ["0 0 0 1 -2.0 10\n", "0 0 0 1 2.0 0\n"] {
            let err = EnergyTable::parse("energy.tsv", row).unwrap_err();
            assert!(err.message.contains("must be positive"), "{row}: {err}");
        }
    }

    #[test]
    fn energy_and_skew_round_trip() {
        let mut e = EnergyTable::default();
        e.entries.insert(
            3,
            EnergyEntry {
                a_ns: 81.5,
                b_kev: 140.25,
            },
        );
        assert_eq!(EnergyTable::parse("e", &e.to_text()).unwrap(), e);
        let tot = 81.5 * (1.0f64 + 511.0 / 140.25).ln();
        assert!((e.entries[&3].energy_kev(tot) - 511.0).abs() < 1e-9);
        let mut s = SkewTable::default();
        s.offsets_ps.insert(9, -312.5);
        assert_eq!(SkewTable::parse("s", &s.to_text()).unwrap(), s);
    }

    #[test]
    fn checksum_depends_on_content() {
        assert_ne!(checksum_of(&[("a", "1")]), checksum_of(&[("a", "2")]));
        assert_eq!(checksum_of(&[("a", "1")]).len(), 64);
    }
}
