//! Hits on channels an energy or skew table lacks are dropped and counted by reason, never
//! guessed: the counts are compared with the simulator's ground truth (`truth.parquet`).

use super::{load_calibration_dir, sim_dir, truth};
use scandaq::commands::replay::{ReplayOptions, replay};
use std::path::Path;

/// Copies the bench's full calibration into `dir`, then removes from each `(table, prefix)` the
/// one row whose first four columns are `prefix` (port, slave, chip, channel).
fn calib_without(dir: &Path, edits: &[(&str, &str)]) {
    std::fs::create_dir(dir).unwrap();
    for f in std::fs::read_dir(sim_dir().join("calib")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
    }
    for (table, prefix) in edits {
        let text = std::fs::read_to_string(dir.join(table)).unwrap();
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with(prefix))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            text.lines().count() - kept.lines().count(),
            1,
            "{table}: one row {prefix:?}"
        );
        std::fs::write(dir.join(table), kept).unwrap();
    }
}

#[test]
fn channels_missing_from_the_energy_or_skew_table_are_counted_by_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let calib = tmp.path().join("calib");
    // Channel 6 (port 0, slave 0, chip 0, channel 6) loses its energy row; channel 70
    // (chip 1, channel 6) its skew row.
    calib_without(
        &calib,
        &[
            ("energy_calibration.tsv", "0\t0\t0\t6\t"),
            ("skew.tsv", "0\t0\t1\t6\t"),
        ],
    );
    let s = replay(
        &sim_dir().join("bench.rawf"),
        &load_calibration_dir(&calib).unwrap(),
        &tmp.path().join("out"),
        ReplayOptions::default(),
    )
    .unwrap();
    let on = |ch: u32| truth().channel.iter().filter(|&&c| c == ch).count() as u64;
    let (no_energy, no_skew) = (on(6), on(70));
    assert!(no_energy > 0 && no_skew > 0, "{no_energy} {no_skew}");
    let losses = &s.counts.losses;
    assert_eq!(losses.get("no_energy_calibration"), no_energy, "{losses:?}");
    assert_eq!(losses.get("no_skew_calibration"), no_skew, "{losses:?}");
    assert_eq!(losses.get("no_tdc_calibration"), 0, "{losses:?}");
    assert_eq!(
        s.counts.singles_written,
        truth().t.len() as u64 - no_energy - no_skew
    );
}
