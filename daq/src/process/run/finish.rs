//! The end of a run of the singles pipeline: what the pipeline hands back ([`RunEnd`]) is
//! turned into the final manifest (files, counts, losses, times) and the summary the command
//! prints ([`RunSummary`]).

use super::RunStart;
use crate::process::pipeline::{self, EnergyHistogram, PipelineCounts};
use anyhow::Result;
use scandaq_core::LossReason;
use scandaq_core::run_state::{FailureReason, StopReason};
use scandaq_sinks::Manifest;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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

/// Everything a finished pipeline hands back to [`RunStart::finish`].
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

impl RunStart {
    /// Records what the pipeline did in the manifest, finalises the run (see
    /// [`super::Run::end`]) and builds the summary.
    pub fn finish(self, end: RunEnd) -> Result<RunSummary> {
        let RunStart {
            mut run,
            description,
            calibration_warnings,
            started,
            ..
        } = self;
        let elapsed = started.elapsed();
        let mut counts = end.counts;
        let mut error = end.error;
        let manifest = run.manifest_mut();
        let (histogram, coincidence_counts) =
            record_sink(manifest, end.sink, &mut counts, &mut error);
        manifest.files.extend(end.extra_files);
        manifest.counts = description.extra_counts;
        manifest.counts.extend(end.extra_counts);
        manifest.counts.extend(coincidence_counts);
        record_counts(manifest, &mut counts, error.is_some());
        let (dir, manifest) = run.end(error.clone(), end.failure, end.stop_reason)?;
        let mut warnings = calibration_warnings;
        warnings.extend(description.warnings);
        Ok(RunSummary {
            run: dir.run,
            dir: dir.path,
            manifest,
            counts,
            histogram,
            elapsed,
            warnings,
            error,
        })
    }
}

/// Records the singles sink's report (files, time range) in `manifest`; returns the energy
/// spectrum and the coincidence stage's counts. The first error of the sink ends up in
/// `error`.
fn record_sink(
    manifest: &mut Manifest,
    sink: Result<pipeline::SinkReport>,
    counts: &mut PipelineCounts,
    error: &mut Option<String>,
) -> (EnergyHistogram, BTreeMap<String, u64>) {
    let report = match sink {
        Ok(report) => report,
        Err(e) => {
            error.get_or_insert(format!("{e:#}"));
            counts.singles_written = 0;
            return (EnergyHistogram::default(), BTreeMap::new());
        }
    };
    let mut coincidence_counts = BTreeMap::new();
    counts.singles_written = report.rows();
    counts.singles_sorted_only = report.sorted_only;
    manifest.first_t_ps = report.t_range.map(|r| r.0);
    manifest.last_t_ps = report.t_range.map(|r| r.1);
    manifest.files.extend(report.files);
    if let Some(e) = report.error {
        error.get_or_insert(format!("singles sink: {e}"));
    }
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
    (report.histogram, coincidence_counts)
}

/// Records the pipeline's counts and losses in `manifest`; a `failed` run counts the singles
/// that reached the sink but are in no committed file.
fn record_counts(manifest: &mut Manifest, counts: &mut PipelineCounts, failed: bool) {
    for (name, value) in [
        ("bytes_scanned", counts.bytes_scanned),
        ("frames", counts.frames),
        ("hits_decoded", counts.hits_decoded),
        ("singles_written", counts.singles_written),
        ("frame_wraps", counts.frame_wraps),
    ] {
        manifest.counts.insert(name.into(), value);
    }
    if counts.singles_sorted_only > 0 {
        // Coincidences-only mode: sorted, deliberately not stored (not a loss).
        manifest
            .counts
            .insert("singles_sorted_only".into(), counts.singles_sorted_only);
    }
    if failed {
        // Singles that reached the sink but are in no committed file (a full disk, a failed
        // write): counted, so a failed run never says "no losses". `scandaq recover` salvages
        // what of them is in the `.inprogress` files.
        let to_sink = counts.hits_decoded.saturating_sub(counts.hits_dropped());
        counts.losses.add(
            LossReason::UncommittedAfterFailure,
            to_sink.saturating_sub(counts.singles_written + counts.singles_sorted_only),
        );
    }
    // Repaired frame IDs lost nothing: they are counts, not losses.
    manifest.counts.extend(counts.losses.take_repairs());
    manifest.losses = counts.losses.clone();
}
