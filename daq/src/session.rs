//! One processing run from start to manifest: allocates the run directory, stores the
//! calibration it used, runs the pipeline, and writes `manifest.json` (complete or not).

use crate::calib_load::LoadedCalibration;
use crate::calibrate::CompiledCalibration;
use crate::coinc_stage::{CoincidenceOptions, CoincidenceSetup};
use crate::pipeline::{self, Chunk, EnergyHistogram, PipelineCounts};
use anyhow::{Context, Result};
use crossbeam_channel::Receiver;
use scandaq_core::ClockModel;
use scandaq_sinks::manifest::CalibrationRecord;
use scandaq_sinks::{Manifest, RunDir};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Software version written into files and manifests.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a finished run reports to the command that started it.
#[derive(Debug)]
pub struct RunSummary {
    /// Run number.
    pub run: u64,
    /// Run directory.
    pub dir: PathBuf,
    /// The manifest as written.
    pub manifest: Manifest,
    /// Counts.
    pub counts: PipelineCounts,
    /// Energy spectrum of the singles written.
    pub histogram: EnergyHistogram,
    /// Wall time of the processing.
    pub elapsed: Duration,
    /// Warnings for the user.
    pub warnings: Vec<String>,
    /// The error that ended the run early, if any (the run's committed data is intact).
    pub error: Option<String>,
}

/// How a run is described in its outputs.
pub struct RunDescription {
    /// `replay`, `demo`, ...
    pub mode: String,
    /// Inputs.
    pub sources: Vec<String>,
    /// Front-end clock.
    pub clock: ClockModel,
    /// Extra counts known before processing (e.g. idxf steps).
    pub extra_counts: BTreeMap<String, u64>,
    /// Extra warnings.
    pub warnings: Vec<String>,
    /// Write the raw diagnostic columns into the singles table.
    pub raw_columns: bool,
    /// Singles file rotation.
    pub rotation: pipeline::Rotation,
    /// Coincidence sorting.
    pub coincidences: CoincidenceOptions,
}

/// A run that has started: directory allocated, calibration stored, manifest says incomplete.
pub struct RunStart {
    /// The run directory.
    pub run_dir: RunDir,
    /// The compiled calibration.
    pub kernel: CompiledCalibration,
    /// The manifest so far.
    pub manifest: Manifest,
    /// Key-value metadata for the run's Parquet files.
    pub metadata: pipeline::FileMetadata,
    /// How the run was described.
    pub description: RunDescription,
    /// Calibration warnings.
    pub calibration_warnings: Vec<String>,
    /// When processing started.
    pub started: Instant,
    /// The coincidence stage, when coincidences are sorted.
    pub coincidences: Option<CoincidenceSetup>,
}

impl RunStart {
    /// The sink settings of this run, with `counters` for live statistics.
    pub fn sink_settings(
        &self,
        counters: std::sync::Arc<crate::live_stats::SinkCounters>,
    ) -> pipeline::SinkSettings {
        pipeline::SinkSettings {
            raw_columns: self.description.raw_columns,
            rotation: self.description.rotation,
            coincidences: self.coincidences.clone(),
            counters,
        }
    }
}

/// Allocates the run directory, copies the calibration into it and writes the first
/// (incomplete) manifest.
pub fn begin(
    out_dir: &Path,
    calibration: &LoadedCalibration,
    description: RunDescription,
) -> Result<RunStart> {
    let run_dir = RunDir::allocate(out_dir)?;
    let calib_dir = run_dir.path.join("calib");
    std::fs::create_dir(&calib_dir)
        .with_context(|| format!("cannot create {}", calib_dir.display()))?;
    for (name, text) in &calibration.texts {
        std::fs::write(calib_dir.join(name), text)
            .with_context(|| format!("cannot write {}", calib_dir.join(name).display()))?;
    }
    let kernel = CompiledCalibration::new(&calibration.calibration, description.clock);
    let energy_unit = if kernel.energy_in_kev() {
        "keV"
    } else {
        "ToT_ns"
    };
    let manifest = Manifest {
        run: run_dir.run,
        complete: false,
        state: "running".into(),
        software_version: SOFTWARE_VERSION.to_string(),
        mode: description.mode.clone(),
        sources: description.sources.clone(),
        energy_unit: energy_unit.to_string(),
        calibration: CalibrationRecord {
            checksum: calibration.calibration.checksum.clone(),
            tables: calibration.calibration.sources.clone(),
        },
        ..Manifest::default()
    };
    // A manifest exists from the start, so an interrupted run says it is incomplete.
    manifest.write_atomic(&run_dir.path)?;
    let kv = |k: &str, v: String| (k.to_string(), v);
    let metadata = vec![
        kv("scandaq.run", run_dir.run.to_string()),
        kv("scandaq.table", "singles".into()),
        kv(
            "scandaq.schema_version",
            scandaq_sinks::singles::SINGLES_SCHEMA_VERSION.into(),
        ),
        kv("scandaq.software_version", SOFTWARE_VERSION.into()),
        kv("scandaq.mode", description.mode.clone()),
        kv("scandaq.source", description.sources.join(";")),
        kv(
            "scandaq.calibration_checksum",
            calibration.calibration.checksum.clone(),
        ),
        kv("scandaq.energy_unit", energy_unit.into()),
        kv(
            "scandaq.clock_hz",
            description.clock.frequency_hz.to_string(),
        ),
    ];
    let mut calibration_warnings = calibration.warnings.clone();
    let coincidences = match CoincidenceSetup::new(
        &description.coincidences,
        calibration.calibration.geometry.as_ref(),
        kernel.energy_in_kev(),
    ) {
        Ok(setup) => setup,
        Err(why) => {
            calibration_warnings.push(why);
            None
        }
    };
    if coincidences.as_ref().is_some_and(|c| c.options.enabled)
        && !kernel.energy_in_kev()
        && description.coincidences.energy_window_kev.is_some()
    {
        calibration_warnings.push(
            "energies are ToT (no energy table): coincidences are sorted without an energy window"
                .into(),
        );
    }
    Ok(RunStart {
        run_dir,
        kernel,
        manifest,
        metadata,
        description,
        calibration_warnings,
        started: Instant::now(),
        coincidences,
    })
}

/// Everything a finished pipeline hands back to [`finish`].
pub struct RunEnd {
    /// Counts and losses.
    pub counts: PipelineCounts,
    /// The sink's report.
    pub sink: Result<pipeline::SinkReport>,
    /// Other committed files (e.g. the raw archive).
    pub extra_files: Vec<scandaq_sinks::FileRecord>,
    /// Extra counts (per source, ...).
    pub extra_counts: BTreeMap<String, u64>,
    /// The error that ended the run early, if any.
    pub error: Option<String>,
    /// Why the run stopped (limits, end of stream, a stop request).
    pub stop_reason: Option<String>,
}

/// Writes the final manifest and builds the summary.
pub fn finish(start: RunStart, end: RunEnd) -> Result<RunSummary> {
    let RunStart {
        run_dir,
        mut manifest,
        description,
        calibration_warnings,
        started,
        ..
    } = start;
    let elapsed = started.elapsed();
    let mut counts = end.counts;
    let mut error = end.error;
    let mut histogram = EnergyHistogram::default();
    let mut coincidence_counts = BTreeMap::new();
    match end.sink {
        Ok(report) => {
            counts.singles_written = report.rows();
            manifest.first_t_ps = report.t_range.map(|r| r.0);
            manifest.last_t_ps = report.t_range.map(|r| r.1);
            manifest.files.extend(report.files);
            if let Some(e) = report.error {
                error.get_or_insert(format!("singles sink: {e}"));
            }
            histogram = report.histogram;
            match report.coincidences {
                Some(Ok(c)) => {
                    coincidence_counts = c.counts();
                    manifest.files.extend(c.files);
                }
                Some(Err(e)) => {
                    error.get_or_insert(format!("coincidences: {e:#}"));
                }
                None => {}
            }
        }
        Err(e) => {
            error.get_or_insert(format!("{e:#}"));
            counts.singles_written = 0;
        }
    }
    manifest.files.extend(end.extra_files);
    manifest.counts = description.extra_counts;
    manifest.counts.extend(end.extra_counts);
    manifest.counts.extend(coincidence_counts);
    manifest
        .counts
        .insert("bytes_scanned".into(), counts.bytes_scanned);
    manifest.counts.insert("frames".into(), counts.frames);
    manifest
        .counts
        .insert("hits_decoded".into(), counts.hits_decoded);
    manifest
        .counts
        .insert("singles_written".into(), counts.singles_written);
    manifest
        .counts
        .insert("frame_wraps".into(), counts.frame_wraps);
    manifest.losses = counts.losses.clone();
    manifest.complete = error.is_none();
    manifest.state = if error.is_none() { "stopped" } else { "error" }.into();
    manifest.error = error.clone();
    manifest.stop_reason = end.stop_reason;
    manifest.write_atomic(&run_dir.path)?;
    let mut warnings = calibration_warnings;
    warnings.extend(description.warnings);
    Ok(RunSummary {
        run: run_dir.run,
        dir: run_dir.path,
        manifest,
        counts,
        histogram,
        elapsed,
        warnings,
        error,
    })
}

/// Runs `input` through the pipeline into a new run directory under `out_dir`.
pub fn run(
    out_dir: &Path,
    calibration: &LoadedCalibration,
    description: RunDescription,
    input: Receiver<Result<Chunk>>,
    on_progress: impl FnMut(u64),
) -> Result<RunSummary> {
    let start = begin(out_dir, calibration, description)?;
    let outcome = pipeline::run(
        input,
        &start.kernel,
        &start.run_dir.path,
        start.metadata.clone(),
        start.sink_settings(Default::default()),
        on_progress,
    )?;
    let end = RunEnd {
        counts: outcome.counts,
        sink: outcome.sink,
        extra_files: vec![],
        extra_counts: BTreeMap::new(),
        error: outcome.input_error.map(|e| format!("{e:#}")),
        stop_reason: Some("end of input".into()),
    };
    finish(start, end)
}

/// Prints the human summary of a run on stdout.
pub fn print_summary(s: &RunSummary, detector_seconds: Option<f64>) {
    let c = &s.counts;
    println!("run {} -> {}", s.run, s.dir.display());
    println!(
        "  frames {}  hits decoded {}  singles written {}  in {:.2} s wall time ({:.1} M hits/s)",
        c.frames,
        c.hits_decoded,
        c.singles_written,
        s.elapsed.as_secs_f64(),
        c.hits_decoded as f64 / s.elapsed.as_secs_f64().max(1e-9) / 1e6
    );
    if let (Some(a), Some(b)) = (s.manifest.first_t_ps, s.manifest.last_t_ps) {
        let span = (b - a) as f64 * 1e-12;
        let secs = detector_seconds.unwrap_or(span);
        println!(
            "  time span {:.3} s of detector time, singles rate {:.0} /s",
            span,
            c.singles_written as f64 / secs.max(1e-12)
        );
    }
    if s.manifest.energy_unit == "keV" {
        match s.histogram.peak_in(400, 650) {
            Some(p) => println!("  photopeak at {p:.1} keV"),
            None => println!("  photopeak: not found in 400-650 keV"),
        }
    } else {
        println!("  energies are ToT in ns (no energy calibration)");
    }
    let count = |k: &str| s.manifest.counts.get(k).copied();
    if let Some(p) = count("coincidences.prompt.pairs") {
        let d = count("coincidences.delayed.pairs").unwrap_or(0);
        println!(
            "  coincidences: {p} prompt, {d} delayed (randoms estimate), {} multiples seen",
            count("coincidences.prompt.multiples_seen").unwrap_or(0)
        );
    }
    println!("  losses: {}", c.losses.summary());
    for f in &s.manifest.files {
        println!(
            "  wrote {} ({} rows, {} bytes)",
            s.dir.join(&f.path).display(),
            f.rows,
            f.bytes
        );
    }
    println!("  manifest {}", s.dir.join("manifest.json").display());
    for w in &s.warnings {
        println!("  note: {w}");
    }
}
