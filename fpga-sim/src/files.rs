//! Writing a simulated run to disk: the `.rawf` + `.idxf` pair, `truth.parquet`, the true
//! calibration as a PETsys-style `calib/` folder, and `summary.json`.

use crate::config::{BenchConfig, SimError};
use crate::sim::{BenchSim, SimSummary};
use crate::truth::TruthBatch;
use scandaq_core::{EnergyTable, Geometry, SkewTable, TdcTable};
use scandaq_decoders::RawfHeader;
use scandaq_decoders::idxf::{self, IdxfStep};
use scandaq_decoders::rawf::RAWF_HEADER_LEN;
use scandaq_sinks::{ParquetTableWriter, WriteOptions};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Raw frames file (64-byte `.rawf` header + frames).
pub const RAWF_FILE: &str = "bench.rawf";
/// Index of the raw file (one step).
pub const IDXF_FILE: &str = "bench.idxf";
/// Ground truth, one row per emitted hit.
pub const TRUTH_FILE: &str = "truth.parquet";
/// Counts and configuration of the run.
pub const SUMMARY_FILE: &str = "summary.json";
/// Folder of the true calibration.
pub const CALIB_DIR: &str = "calib";
/// Files written into the calibration folder.
pub const CALIB_FILES: [&str; 6] = [
    "tdc_calibration.tsv",
    "energy_calibration.tsv",
    "skew.tsv",
    "map_channel.tsv",
    "map_trigger.tsv",
    "config.ini",
];

/// Every file [`write_bench_files`] writes, relative to its directory.
pub fn bench_file_list() -> Vec<String> {
    let mut v: Vec<String> = [RAWF_FILE, IDXF_FILE, TRUTH_FILE, SUMMARY_FILE]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(CALIB_FILES.iter().map(|f| format!("{CALIB_DIR}/{f}")));
    v
}

/// PETsys `config.ini` naming the tables beside it, with the `[sw_trigger]` keys PETsys's
/// `convert_raw_to_coincidence` / `convert_raw_to_group` read (windows in clock periods; the
/// values are PETsys's defaults except the coincidence window). `skew.tsv` has the layout of
/// PETsys's time offset table (port slave chip channel t0_ps, subtracted from the time), so it
/// is named as `time_offset_calibration_table`. `energy_calibration.tsv` (scandaq's ToT -> keV
/// table) is not named: PETsys reads `energy_calibration_table` only for QDC mode, in another
/// format (the file says so in a comment too).
pub const CONFIG_INI: &str = "[main]
tdc_calibration_table = %CDIR%/tdc_calibration.tsv
time_offset_calibration_table = %CDIR%/skew.tsv
channel_map = %CDIR%/map_channel.tsv
trigger_map = %CDIR%/map_trigger.tsv
# energy_calibration.tsv (ToT -> keV) is scandaq's own table: PETsys reads
# energy_calibration_table only for QDC mode, in another format, so it is not named here.
[sw_trigger]
group_time_window = 20
group_max_distance = 100.0
group_min_hits = 1
group_max_hits = 64
group_min_energy = -1e6
group_max_energy = +1e6
coincidence_time_window = 2
";

/// PETsys `map_trigger.tsv`: regions 0 and 1 in coincidence, multi-hit grouping within each.
pub const MAP_TRIGGER: &str = "0\t1\tC\n0\t0\tM\n1\t1\tM\n";

/// Truth rows gathered before a record batch goes to the Parquet writer.
pub(crate) const TRUTH_BATCH_ROWS: usize = 1 << 16;

pub(crate) fn write_truth(
    writer: &mut ParquetTableWriter,
    truth: &mut TruthBatch,
) -> Result<(), SimError> {
    write_truth_layout(writer, truth, false)
}

/// Writes and clears `truth` with the bench schema, or the extended (ring) one.
pub(crate) fn write_truth_layout(
    writer: &mut ParquetTableWriter,
    truth: &mut TruthBatch,
    extended: bool,
) -> Result<(), SimError> {
    if !truth.is_empty() {
        let batch = if extended {
            truth.to_record_batch_extended()
        } else {
            truth.to_record_batch()
        }
        .map_err(|e| SimError::Arrow(e.to_string()))?;
        writer.write(&batch)?;
        truth.clear();
    }
    Ok(())
}

pub(crate) fn write_text(path: &Path, text: &str) -> Result<(), SimError> {
    std::fs::write(path, text).map_err(|e| SimError::io("writing", path, e))
}

/// Writes the simulator's true calibration into `dir` (created if missing):
/// `tdc_calibration.tsv`, `energy_calibration.tsv`, `skew.tsv`, `map_channel.tsv`,
/// `map_trigger.tsv` and `config.ini`.
pub fn write_calibration_dir(sim: &BenchSim, dir: &Path) -> Result<(), SimError> {
    write_calibration_tables(
        dir,
        sim.true_tdc(),
        sim.true_energy(),
        sim.true_skew(),
        sim.geometry(),
        MAP_TRIGGER,
    )
}

/// Writes the calibration folder [`CALIB_FILES`] from the given tables (any preset).
pub fn write_calibration_tables(
    dir: &Path,
    tdc: &TdcTable,
    energy: &EnergyTable,
    skew: &SkewTable,
    geometry: &Geometry,
    map_trigger: &str,
) -> Result<(), SimError> {
    std::fs::create_dir_all(dir).map_err(|e| SimError::io("creating directory", dir, e))?;
    write_text(&dir.join("tdc_calibration.tsv"), &tdc.to_text())?;
    write_text(&dir.join("energy_calibration.tsv"), &energy.to_text())?;
    write_text(&dir.join("skew.tsv"), &skew.to_text())?;
    write_text(&dir.join("map_channel.tsv"), &geometry.to_map_channel())?;
    write_text(&dir.join("map_trigger.tsv"), map_trigger)?;
    write_text(&dir.join("config.ini"), CONFIG_INI)?;
    Ok(())
}

/// Creates `dir` if it does not exist (its parent must exist); refuses a path that is a file.
pub(crate) fn prepare_out_dir(dir: &Path) -> Result<(), SimError> {
    if dir.is_dir() {
        return Ok(());
    }
    if dir.exists() {
        return Err(SimError::OutputDir(format!(
            "output path {} exists and is not a directory",
            dir.display()
        )));
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        return Err(SimError::OutputDir(format!(
            "cannot create output directory {}: its parent {} does not exist",
            dir.display(),
            parent.display()
        )));
    }
    std::fs::create_dir(dir).map_err(|e| SimError::io("creating directory", dir, e))
}

/// Opens `dir/truth.parquet` for the rows of `sim`, with the `seed` and `config` metadata.
pub(crate) fn create_truth_writer(
    sim: &BenchSim,
    dir: &Path,
) -> Result<ParquetTableWriter, SimError> {
    create_truth_writer_for(dir, sim.config().seed, sim.config(), TruthBatch::schema())
}

/// Opens `dir/truth.parquet` with `schema` and the `seed` and `config` (JSON) metadata.
pub(crate) fn create_truth_writer_for<C: serde::Serialize>(
    dir: &Path,
    seed: u64,
    config: &C,
    schema: arrow_schema::SchemaRef,
) -> Result<ParquetTableWriter, SimError> {
    let config_json = serde_json::to_string(config).map_err(|e| SimError::Json {
        what: "configuration",
        message: e.to_string(),
    })?;
    let options = WriteOptions {
        delta_columns: vec!["t_true_ps"],
        dictionary_columns: vec!["channel", "kind"],
        ..Default::default()
    };
    let metadata = vec![
        ("seed".to_string(), seed.to_string()),
        ("config".to_string(), config_json),
    ];
    Ok(ParquetTableWriter::create(
        dir, TRUTH_FILE, schema, &options, metadata,
    )?)
}

/// Where a `.rawf` run ended: bytes written (header included).
pub(crate) struct RawfRun {
    pub bytes_written: u64,
}

/// Writes `dir/rawf_name` (ToT 200 MHz header + the frames `next_slice` yields) and the truth
/// rows to `truth_writer` (bench or extended schema), then commits the truth file.
pub(crate) fn write_rawf_run(
    dir: &Path,
    rawf_name: &str,
    mut truth_writer: ParquetTableWriter,
    extended: bool,
    mut next_slice: impl FnMut(&mut Vec<u8>, &mut TruthBatch) -> bool,
) -> Result<RawfRun, SimError> {
    let rawf_path = dir.join(rawf_name);
    let file = File::create(&rawf_path).map_err(|e| SimError::io("creating", &rawf_path, e))?;
    let mut rawf = BufWriter::with_capacity(1 << 20, file);
    rawf.write_all(&RawfHeader::tot_200mhz(0.0).encode())
        .map_err(|e| SimError::io("writing", &rawf_path, e))?;
    let mut bytes_written = RAWF_HEADER_LEN as u64;
    let mut frames = Vec::with_capacity(1 << 20);
    let mut truth = TruthBatch::new();
    while next_slice(&mut frames, &mut truth) {
        rawf.write_all(&frames)
            .map_err(|e| SimError::io("writing", &rawf_path, e))?;
        bytes_written += frames.len() as u64;
        frames.clear();
        if truth.len() >= TRUTH_BATCH_ROWS {
            write_truth_layout(&mut truth_writer, &mut truth, extended)?;
        }
    }
    write_truth_layout(&mut truth_writer, &mut truth, extended)?;
    let file = rawf
        .into_inner()
        .map_err(|e| SimError::io("writing", &rawf_path, e.into_error()))?;
    file.sync_all()
        .map_err(|e| SimError::io("syncing", &rawf_path, e))?;
    truth_writer.commit()?;
    Ok(RawfRun { bytes_written })
}

/// Writes the one-step `.idxf` for a run of `bytes_written` bytes.
pub(crate) fn write_idxf(
    path: &Path,
    bytes_written: u64,
    first: u64,
    last: u64,
) -> Result<(), SimError> {
    let step = IdxfStep {
        start_offset: RAWF_HEADER_LEN as u64,
        end_offset: bytes_written,
        first_frame_id: first,
        last_frame_id: last,
        step1: 0.0,
        step2: 0.0,
    };
    write_text(path, &idxf::format(&[step]))
}

/// Writes `value` as pretty JSON (newline-terminated) to `path`.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), SimError> {
    let json = serde_json::to_string_pretty(value).map_err(|e| SimError::Json {
        what: "summary",
        message: e.to_string(),
    })?;
    write_text(path, &(json + "\n"))
}

/// Simulates a whole run and writes it to `dir` (created if its parent exists):
/// `bench.rawf` (ToT 200 MHz header + frames), `bench.idxf` (one step), `truth.parquet`
/// (rows in emission order; metadata `seed` and `config`), `calib/` (see
/// [`write_calibration_dir`]) and `summary.json`. Returns the summary.
pub fn write_bench_files(config: BenchConfig, dir: &Path) -> Result<SimSummary, SimError> {
    let mut sim = BenchSim::new(config)?;
    prepare_out_dir(dir)?;
    write_calibration_dir(&sim, &dir.join(CALIB_DIR))?;

    let truth_writer = create_truth_writer(&sim, dir)?;
    let run = write_rawf_run(dir, RAWF_FILE, truth_writer, false, |f, t| {
        sim.next_slice(f, t)
    })?;
    let summary = sim.summary();
    let first = summary
        .first_frame_id
        .unwrap_or(sim.config().start_frame_id);
    let last = summary.last_frame_id.unwrap_or(first);
    write_idxf(&dir.join(IDXF_FILE), run.bytes_written, first, last)?;
    write_json(&dir.join(SUMMARY_FILE), &summary)?;
    Ok(summary)
}
