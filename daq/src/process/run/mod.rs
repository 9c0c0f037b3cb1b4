//! The run lifecycle, one place for every kind of run (live `run`, `demo`, `.rawf`/`.sdq`
//! replay, PETLINK replay): [`Run`] allocates the numbered run directory (distinct numbers for
//! concurrent runs), reserves the space of its last manifest, moves the run through its states
//! and finalises it, writing `manifest.json` at each step:
//!
//! ```text
//! configured -> running -> stopping -> stopped
//!      |           |           '------> failed(reason)
//!      '-----------'-------------------> failed(reason)
//! ```
//!
//! `stopping` is shown live (statistics, dashboard, control socket) but not written: the next
//! manifest is the final one. A start that fails leaves a `failed` manifest with the reason,
//! never one that says `running`; a process that dies leaves `running`, which
//! `scandaq recover` later makes `recovered`. When a run is given the live statistics
//! ([`LiveStats`]), their state moves with the manifest's: nothing else sets either.
//!
//! [`start`] adds what a run of the singles pipeline needs on top (the calibration stored in
//! `calib/`, the compiled kernel, the files' metadata, the coincidence stage); [`finish`]
//! turns what the pipeline hands back into the final manifest and the run's summary.

pub mod finish;
pub mod start;

pub use finish::{RunEnd, RunSummary, failure_of};
pub use start::{RunDescription, RunStart};

use crate::observe::live_stats::LiveStats;
use anyhow::Result;
use scandaq_core::run_state::{FailureReason, RunMode, RunState, StopReason};
use scandaq_sinks::manifest::{release_manifest_space, reserve_manifest_space};
use scandaq_sinks::{Manifest, RunDir};
use std::path::Path;
use std::sync::Arc;

/// Software version written into files and manifests.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Marks a dead run's manifest as recovered, the one state change that happens after the run's
/// process: `complete: false`, `state: recovered`, and `stop_reason: process_ended` when it had
/// none. The manifest is kept as JSON so fields this version does not know survive (used by
/// `scandaq recover`).
pub fn mark_recovered(manifest: &mut serde_json::Map<String, serde_json::Value>) -> Result<()> {
    manifest.insert("complete".into(), false.into());
    manifest.insert("state".into(), serde_json::to_value(RunState::Recovered)?);
    if manifest.get("stop_reason").is_none_or(|v| v.is_null()) {
        manifest.insert(
            "stop_reason".into(),
            serde_json::to_value(StopReason::ProcessEnded)?,
        );
    }
    Ok(())
}

/// One run: its numbered directory, its manifest, and (when the run is watched live) the
/// statistics whose state follows the manifest's. The only code that moves a run through
/// its states.
pub struct Run {
    dir: RunDir,
    manifest: Manifest,
    stats: Option<Arc<LiveStats>>,
}

impl Run {
    /// Opens a new run: allocates its numbered directory under `out_dir`, reserves the space
    /// of its last manifest and writes the first one (state `configured`). From here on every
    /// way out leaves a manifest that says how the run ended.
    pub fn open(
        out_dir: &Path,
        mode: RunMode,
        sources: &[String],
        stats: Option<Arc<LiveStats>>,
    ) -> Result<Self> {
        let dir = RunDir::allocate(out_dir)?;
        let manifest = Manifest {
            run: dir.run,
            state: RunState::Configured,
            software_version: SOFTWARE_VERSION.to_string(),
            mode,
            sources: sources.to_vec(),
            ..Manifest::default()
        };
        let run = Self {
            dir,
            manifest,
            stats,
        };
        run.show(RunState::Configured);
        let opened = reserve_manifest_space(&run.dir.path)
            .and_then(|()| run.manifest.write_atomic(&run.dir.path))
            .map_err(anyhow::Error::from);
        match opened {
            Ok(()) => Ok(run),
            Err(e) => Err(run.fail(FailureReason::StartFailed, e)),
        }
    }

    /// The run number.
    pub fn number(&self) -> u64 {
        self.dir.run
    }

    /// The run directory (`OUTDIR/run-NNNNNN`).
    pub fn path(&self) -> &Path {
        &self.dir.path
    }

    /// The manifest so far.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest, to record what the run found (counts, files, losses, times). Its state
    /// moves only through the methods of [`Run`].
    pub fn manifest_mut(&mut self) -> &mut Manifest {
        &mut self.manifest
    }

    /// Writes the manifest as it is now (same state).
    pub fn write_manifest(&self) -> Result<()> {
        Ok(self.manifest.write_atomic(&self.dir.path)?)
    }

    /// Inputs started: the manifest (and the statistics) say `running`. A manifest that
    /// cannot be written fails the run (`start_failed`).
    pub fn set_running(&mut self) -> Result<()> {
        self.manifest.state = RunState::Running;
        self.show(RunState::Running);
        if let Err(e) = self.write_manifest() {
            self.record_failure(FailureReason::StartFailed, &e);
            return Err(e);
        }
        Ok(())
    }

    /// A stop was asked for (a limit, the end of the input, a signal, a failure): the
    /// statistics say `stopping` while the inputs drain; the manifest is written at the end.
    pub fn set_stopping(&self) {
        self.show(RunState::Stopping);
    }

    /// Ends the run on `error`: the manifest says `failed` with `reason` (best effort: the
    /// failure may be the disk itself; the reserved space is given up for it). Returns the
    /// error.
    pub fn fail(mut self, reason: FailureReason, error: anyhow::Error) -> anyhow::Error {
        self.record_failure(reason, &error);
        error
    }

    /// Ends a run that failed before it ran (an input that cannot start, a sink that cannot
    /// open): as [`Run::fail`], and the error returned names the run directory.
    pub fn fail_start(self, reason: FailureReason, error: anyhow::Error) -> anyhow::Error {
        let (run, path) = (self.dir.run, self.dir.path.clone());
        self.fail(reason, error).context(format!(
            "run {run} did not start (its manifest in {} says failed: {reason})",
            path.display()
        ))
    }

    /// Finalises a run that ended as asked: `stopped` with `reason`, `complete`.
    pub fn stop(self, reason: StopReason) -> Result<(RunDir, Manifest)> {
        self.end(None, None, reason)
    }

    /// Finalises the run: `stopped` with `stop_reason` and `complete` when there is no
    /// `error`, else `failed` with `failure` (or the reason [`failure_of`] reads in the
    /// error). Writes the final manifest, gives the reserved space back and returns the
    /// directory and the manifest as written.
    pub fn end(
        mut self,
        error: Option<String>,
        failure: Option<FailureReason>,
        stop_reason: StopReason,
    ) -> Result<(RunDir, Manifest)> {
        let m = &mut self.manifest;
        m.complete = error.is_none();
        m.state = if error.is_none() {
            RunState::Stopped
        } else {
            RunState::Failed
        };
        m.failure = error
            .as_deref()
            .map(|e| failure.unwrap_or_else(|| failure_of(e)));
        m.error = error;
        m.stop_reason = Some(if m.error.is_some() {
            StopReason::Failure
        } else {
            stop_reason
        });
        if let Err(e) = self.manifest.write_atomic(&self.dir.path) {
            let e = anyhow::Error::from(e);
            self.report(FailureReason::WriteFailed, &format!("{e:#}"));
            return Err(e);
        }
        release_manifest_space(&self.dir.path);
        match (self.manifest.failure, &self.manifest.error) {
            (Some(f), Some(e)) => self.report(f, e),
            _ => self.show(RunState::Stopped),
        }
        Ok((self.dir, self.manifest))
    }

    /// Writes the `failed` manifest (best effort) and gives the reserved space back.
    fn record_failure(&mut self, reason: FailureReason, error: &anyhow::Error) {
        let m = &mut self.manifest;
        m.state = RunState::Failed;
        m.failure = Some(reason);
        m.stop_reason = Some(StopReason::Failure);
        m.error = Some(format!("{error:#}"));
        let _ = m.write_atomic(&self.dir.path);
        release_manifest_space(&self.dir.path);
        self.report(reason, &format!("{error:#}"));
    }

    /// The statistics (if any) show the failure and say `failed`.
    fn report(&self, reason: FailureReason, error: &str) {
        if let Some(s) = &self.stats {
            s.set_failure(reason, error);
        }
        self.show(RunState::Failed);
    }

    /// The statistics (if any) say `state`.
    fn show(&self, state: RunState) {
        if let Some(s) = &self.stats {
            s.set_state(state);
        }
    }
}
