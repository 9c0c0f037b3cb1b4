//! Writing a ring run to disk: `ring.rawf` + `ring.idxf`, `truth.parquet` (extended schema),
//! the true calibration in `calib/` and `summary.json`.

use crate::config::SimError;
use crate::files::{
    CALIB_DIR, CALIB_FILES, SUMMARY_FILE, TRUTH_FILE, create_truth_writer_for, prepare_out_dir,
    write_calibration_tables, write_idxf, write_json, write_rawf_run,
};
use crate::ring::config::RingConfig;
use crate::ring::sim::{RingSim, RingSummary};
use crate::truth::TruthBatch;
use std::path::Path;

/// Raw frames file of the ring preset.
pub const RING_RAWF_FILE: &str = "ring.rawf";
/// Index of the ring raw file.
pub const RING_IDXF_FILE: &str = "ring.idxf";

/// Every file [`write_ring_files`] writes, relative to its directory.
pub fn ring_file_list() -> Vec<String> {
    let mut v: Vec<String> = [RING_RAWF_FILE, RING_IDXF_FILE, TRUTH_FILE, SUMMARY_FILE]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(CALIB_FILES.iter().map(|f| format!("{CALIB_DIR}/{f}")));
    v
}

/// Writes the ring simulator's true calibration into `dir` (same files as the bench preset;
/// `map_trigger.tsv` from [`crate::ring::RingGeometry::map_trigger`]).
pub fn write_ring_calibration_dir(sim: &RingSim, dir: &Path) -> Result<(), SimError> {
    write_calibration_tables(
        dir,
        sim.true_tdc(),
        sim.true_energy(),
        sim.true_skew(),
        sim.geometry(),
        &sim.ring_geometry().map_trigger(),
    )
}

/// Simulates a whole ring run and writes it to `dir` (created if its parent exists):
/// `ring.rawf` (ToT 200 MHz header + frames), `ring.idxf` (one step), `truth.parquet` (rows in
/// emission order, [`TruthBatch::schema_extended`]; metadata `seed` and `config`), `calib/`
/// and `summary.json`. Returns the summary.
pub fn write_ring_files(config: RingConfig, dir: &Path) -> Result<RingSummary, SimError> {
    let mut sim = RingSim::new(config)?;
    prepare_out_dir(dir)?;
    write_ring_calibration_dir(&sim, &dir.join(CALIB_DIR))?;
    let writer = create_truth_writer_for(
        dir,
        sim.config().seed,
        sim.config(),
        TruthBatch::schema_extended(),
    )?;
    let run = write_rawf_run(dir, RING_RAWF_FILE, writer, true, |f, t| {
        sim.next_slice(f, t)
    })?;
    let summary = sim.summary();
    let first = summary
        .first_frame_id
        .unwrap_or(sim.config().start_frame_id);
    let last = summary.last_frame_id.unwrap_or(first);
    write_idxf(&dir.join(RING_IDXF_FILE), run.bytes_written, first, last)?;
    write_json(&dir.join(SUMMARY_FILE), &summary)?;
    Ok(summary)
}
