//! The run lifecycle, one place for every kind of run (live, demo, `.rawf`/`.sdq` replay,
//! PETLINK replay): allocates the numbered run directory (distinct numbers for concurrent
//! runs), reserves the space of its last manifest, stores the calibration it used, moves the
//! run through its states (configured -> running -> stopped | failed(reason); `recover`
//! later makes a dead run `recovered`) and writes `manifest.json` at each step. A start that
//! fails leaves a `failed` manifest with the reason, never one that says `running`.

use crate::process::calib_load::LoadedCalibration;
use crate::process::coinc_stage::{CoincidenceOptions, CoincidenceSetup};
use crate::process::kernel::CompiledCalibration;
use crate::process::pipeline::{self, Chunk, EnergyHistogram, PipelineCounts};
use anyhow::{Context, Result};
use crossbeam_channel::Receiver;
use scandaq_core::ClockModel;
use scandaq_core::LossReason;
use scandaq_core::run_state::{EnergyUnit, FailureReason, RunMode, RunState, StopReason};
use scandaq_sinks::manifest::{CalibrationRecord, release_manifest_space, reserve_manifest_space};
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
    pub mode: RunMode,
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
    pub metadata: scandaq_sinks::FileMetadata,
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
    /// Inputs started: the manifest (and `stats`, when given) say `running`.
    pub fn set_running(
        &mut self,
        stats: Option<&crate::observe::live_stats::LiveStats>,
    ) -> Result<()> {
        self.manifest.state = RunState::Running;
        if let Some(s) = stats {
            s.set_state(RunState::Running);
        }
        self.manifest
            .write_atomic(&self.run_dir.path)
            .map_err(anyhow::Error::from)
    }

    /// Ends a run that failed before it ran (an input that cannot start, a sink that cannot
    /// open): the manifest says `failed` with `reason` and the error, and the error returned
    /// names the run directory.
    pub fn fail_start(mut self, reason: FailureReason, error: anyhow::Error) -> anyhow::Error {
        fail_run(&self.run_dir, &mut self.manifest, reason, &error);
        error.context(format!(
            "run {} did not start (its manifest in {} says failed: {})",
            self.run_dir.run,
            self.run_dir.path.display(),
            reason
        ))
    }

    /// The sink settings of this run, with `counters` for live statistics.
    pub fn sink_settings(
        &self,
        counters: std::sync::Arc<crate::observe::live_stats::SinkCounters>,
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
    let (run_dir, mut manifest) = open_run(out_dir, description.mode, &description.sources)?;
    if let Err(e) = store_calibration(&run_dir, calibration) {
        fail_run(&run_dir, &mut manifest, FailureReason::StartFailed, &e);
        return Err(e);
    }
    begin_prepared(run_dir, manifest, calibration, description)
}

/// Opens a new run: allocates its numbered directory under `out_dir`, reserves the space of
/// its last manifest and writes the first one (state `configured`). Every kind of run starts
/// here; from here on every way out leaves a manifest that says how the run ended.
pub fn open_run(out_dir: &Path, mode: RunMode, sources: &[String]) -> Result<(RunDir, Manifest)> {
    let run_dir = RunDir::allocate(out_dir)?;
    let mut manifest = Manifest {
        run: run_dir.run,
        state: RunState::Configured,
        software_version: SOFTWARE_VERSION.to_string(),
        mode,
        sources: sources.to_vec(),
        ..Manifest::default()
    };
    let opened = reserve_manifest_space(&run_dir.path)
        .and_then(|()| manifest.write_atomic(&run_dir.path))
        .map_err(anyhow::Error::from);
    if let Err(e) = opened {
        fail_run(&run_dir, &mut manifest, FailureReason::StartFailed, &e);
        return Err(e);
    }
    Ok((run_dir, manifest))
}

/// Writes the final manifest of a run that ended as asked (state `stopped`) and gives the
/// reserved space back.
pub fn close_run(run_dir: &RunDir, manifest: &mut Manifest, reason: StopReason) -> Result<()> {
    manifest.complete = true;
    manifest.state = RunState::Stopped;
    manifest.stop_reason = Some(reason);
    manifest.write_atomic(&run_dir.path)?;
    release_manifest_space(&run_dir.path);
    Ok(())
}

/// Stores the calibration texts the run uses in its `calib/`.
fn store_calibration(run_dir: &RunDir, calibration: &LoadedCalibration) -> Result<()> {
    let calib_dir = run_dir.path.join("calib");
    std::fs::create_dir(&calib_dir)
        .with_context(|| format!("cannot create {}", calib_dir.display()))?;
    for (name, text) in &calibration.texts {
        std::fs::write(calib_dir.join(name), text)
            .with_context(|| format!("cannot write {}", calib_dir.join(name).display()))?;
    }
    Ok(())
}

/// Writes the `failed` manifest of a run (best effort: the failure may be the disk itself;
/// the reserved space is given up for it) and gives the reserved space back.
pub fn fail_run(
    run_dir: &RunDir,
    manifest: &mut Manifest,
    reason: FailureReason,
    error: &anyhow::Error,
) {
    manifest.state = RunState::Failed;
    manifest.failure = Some(reason);
    manifest.stop_reason = Some(StopReason::Failure);
    manifest.error = Some(format!("{error:#}"));
    let _ = manifest.write_atomic(&run_dir.path);
    release_manifest_space(&run_dir.path);
}

fn begin_prepared(
    run_dir: RunDir,
    manifest: Manifest,
    calibration: &LoadedCalibration,
    description: RunDescription,
) -> Result<RunStart> {
    let kernel = CompiledCalibration::new(&calibration.calibration, description.clock);
    let energy_unit = if kernel.energy_in_kev() {
        EnergyUnit::Kev
    } else {
        EnergyUnit::TotNs
    };
    let mut manifest = Manifest {
        energy_unit,
        calibration: CalibrationRecord {
            checksum: calibration.calibration.checksum.clone(),
            tables: calibration.calibration.sources.clone(),
        },
        ..manifest
    };
    // A manifest exists from the start, so an interrupted run says it is incomplete.
    if let Err(e) = manifest.write_atomic(&run_dir.path) {
        let e = anyhow::Error::from(e);
        fail_run(&run_dir, &mut manifest, FailureReason::StartFailed, &e);
        return Err(e);
    }
    let kv = |k: &str, v: String| (k.to_string(), v);
    let metadata = vec![
        kv("scandaq.run", run_dir.run.to_string()),
        kv("scandaq.table", "singles".into()),
        kv(
            "scandaq.schema_version",
            scandaq_sinks::singles::SINGLES_SCHEMA_VERSION.into(),
        ),
        kv("scandaq.software_version", SOFTWARE_VERSION.into()),
        kv("scandaq.mode", description.mode.name().into()),
        kv("scandaq.source", description.sources.join(";")),
        kv(
            "scandaq.calibration_checksum",
            calibration.calibration.checksum.clone(),
        ),
        kv("scandaq.energy_unit", energy_unit.name().into()),
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
    /// Why it failed, when that is known where the error happened (otherwise
    /// [`failure_of`] classifies the error text).
    pub failure: Option<FailureReason>,
    /// Why the run stopped (limits, end of stream, a stop request).
    pub stop_reason: StopReason,
}

/// Classifies an error that crossed threads as text: a full disk (the OS's ENOSPC/EDQUOT
/// messages, stable strerror texts) or a failed write of an output, else processing.
pub fn failure_of(error: &str) -> FailureReason {
    if error.contains("No space left on device")
        || error.contains("quota exceeded")
        || error.contains("disk full:")
    {
        FailureReason::DiskFull
    } else if error.contains("sink") || error.contains("writing") || error.contains("archive") {
        FailureReason::WriteFailed
    } else {
        FailureReason::ProcessingFailed
    }
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
    if error.is_some() {
        // Singles that reached the sink but are in no committed file (a full disk, a failed
        // write): counted, so a failed run never says "no losses". `scandaq recover` salvages
        // what of them is in the `.inprogress` files.
        let to_sink = counts.hits_decoded.saturating_sub(counts.hits_dropped());
        counts.losses.add(
            LossReason::UncommittedAfterFailure,
            to_sink.saturating_sub(counts.singles_written),
        );
    }
    // Repaired frame IDs lost nothing: they are counts, not losses.
    manifest.counts.extend(counts.losses.take_repairs());
    manifest.losses = counts.losses.clone();
    manifest.complete = error.is_none();
    manifest.state = if error.is_none() {
        RunState::Stopped
    } else {
        RunState::Failed
    };
    manifest.failure = error
        .as_deref()
        .map(|e| end.failure.unwrap_or_else(|| failure_of(e)));
    manifest.error = error.clone();
    manifest.stop_reason = Some(if error.is_some() {
        StopReason::Failure
    } else {
        end.stop_reason
    });
    manifest.write_atomic(&run_dir.path)?;
    release_manifest_space(&run_dir.path);
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
    let mut start = begin(out_dir, calibration, description)?;
    start.set_running(None)?;
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
        failure: None,
        stop_reason: StopReason::EndOfInput,
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
    if s.manifest.energy_unit == EnergyUnit::Kev {
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
