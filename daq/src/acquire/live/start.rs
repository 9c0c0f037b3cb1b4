//! Starting a live run, in order: the run opened (directory, calibration, manifest), the inputs
//! held (what can fail at start fails before any file is made, and leaves the run `failed`),
//! the sinks (stream stage, singles sink, raw archive), then the input threads; the run then
//! says `running`.

use super::boards::ArchiveTap;
use super::inputs::Inputs;
use super::{LiveConfig, LiveHandles, limit_descriptions};
use crate::observe::live_stats::{LiveStats, RunInfo};
use crate::observe::markers::SharedMarkers;
use crate::process::calib_load::LoadedCalibration;
use crate::process::coinc_stage::SorterInput;
use crate::process::pipeline::{SinkReport, spawn_singles_sink};
use crate::process::run::{RunDescription, RunStart, SOFTWARE_VERSION};
use crate::process::streams::StreamSettings;
use crate::process::streams::stage::StreamStage;
use anyhow::{Result, anyhow, bail};
use crossbeam_channel::Sender;
use scandaq_core::HitBatch;
use scandaq_core::run_state::FailureReason;
use scandaq_sinks::archive::RawArchiveWriter;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Largest batch handed to the singles sink (about 10 MB of columns); the sink queue holds
/// a few of them, so its memory is bounded whatever the release sizes.
const MAX_SINK_BATCH_HITS: usize = 1 << 18;

/// A live run that is running: its start, inputs, sinks.
pub(super) struct Started {
    /// The run.
    pub(super) start: RunStart,
    /// The input threads.
    pub(super) inputs: Inputs,
    /// The OPM-MEG / ultrasound stream stage.
    pub(super) streams: StreamStage,
    /// The raw archive (when recorded).
    pub(super) archive: ArchiveTap,
    /// The singles sink.
    pub(super) sink: SinkFeed,
}

/// Opens the run and starts its sinks and inputs; the run says `running` when this returns.
pub(super) fn start_run(
    config: &LiveConfig,
    calibration: &LoadedCalibration,
    handles: &LiveHandles,
) -> Result<Started> {
    if config.inputs.is_empty() {
        bail!("a run needs at least one input (--udp ADDR, --tcp ADDR or [[input]] in the config)");
    }
    // Checked (and the files they name read) before anything starts.
    let stream_settings = config.streams.resolve()?;
    let description = RunDescription {
        mode: handles.mode,
        sources: config.inputs.iter().map(|i| i.spec.to_string()).collect(),
        clock: config.clock,
        extra_counts: BTreeMap::new(),
        warnings: vec![],
        raw_columns: config.raw_columns,
        rotation: config.rotation,
        coincidences: config.coincidences.clone(),
    };
    let stats = &handles.stats;
    let mut start = RunStart::begin(
        &config.out_dir,
        calibration,
        description,
        Some(stats.clone()),
    )?;
    let opened = match Inputs::open(&config.inputs) {
        Ok(o) => o,
        Err(e) => return Err(start.fail_start(FailureReason::StartFailed, e)),
    };
    // Sinks first.
    let mut streams = StreamStage::new(
        start.run.path().to_path_buf(),
        start.metadata.clone(),
        stream_settings.clone(),
    );
    streams.publish_into(stats.streams.clone());
    let sink = SinkFeed::spawn(
        &start,
        stats.clone(),
        handles.markers.clone(),
        handles.singles_tap.clone(),
    )?;
    stats.info.publish(RunInfo {
        run: start.run.number(),
        run_dir: start.run.path().display().to_string(),
        mode: handles.mode.name().into(),
        limits: limit_descriptions(&config.limits),
        energy_window_kev: start
            .coincidences
            .as_ref()
            .and_then(|c| c.applied_energy_window_kev()),
    });
    let archive = ArchiveTap::new(raw_archive(config, &start, calibration, &stream_settings)?);
    // Then processing, then inputs.
    let inputs = match Inputs::start(&config.inputs, opened, archive.is_on(), stats) {
        Ok(inputs) => inputs,
        Err(e) => {
            let mut sink = sink;
            let _ = sink.close();
            return Err(start.fail_start(FailureReason::StartFailed, e));
        }
    };
    start.set_running()?;
    Ok(Started {
        start,
        inputs,
        streams,
        archive,
        sink,
    })
}

/// The raw archive `raw-00000.sdq` when the run records one, with the metadata a replay
/// needs (inputs, calibration checksum, stream settings).
fn raw_archive(
    config: &LiveConfig,
    start: &RunStart,
    calibration: &LoadedCalibration,
    streams: &StreamSettings,
) -> Result<Option<RawArchiveWriter>> {
    if !config.raw_archive {
        return Ok(None);
    }
    let meta = serde_json::json!({
        "run": start.run.number(),
        "software_version": SOFTWARE_VERSION,
        "inputs": config.inputs.iter().map(|i| i.spec.to_string()).collect::<Vec<_>>(),
        "calibration_checksum": calibration.calibration.checksum,
        (crate::process::streams::ARCHIVE_METADATA_KEY): streams,
    });
    let mut w = RawArchiveWriter::create(start.run.path(), "raw-00000.sdq", &meta.to_string())?;
    w.set_commit_interval(config.rotation.commit_interval());
    Ok(Some(w))
}

/// The singles sink of a live run: its queue and thread, the singles sent, and what sees
/// them on the way (statistics, markers).
pub(super) struct SinkFeed {
    tx: Option<Sender<HitBatch>>,
    handle: Option<JoinHandle<Result<SinkReport>>>,
    /// Singles handed to the sink.
    pub(super) singles_sent: u64,
    stats: Arc<LiveStats>,
    markers: SharedMarkers,
    tap: Option<Sender<SorterInput>>,
}

impl SinkFeed {
    fn spawn(
        start: &RunStart,
        stats: Arc<LiveStats>,
        markers: SharedMarkers,
        tap: Option<Sender<SorterInput>>,
    ) -> Result<Self> {
        let (tx, handle) = spawn_singles_sink(
            start.run.path(),
            start.metadata.clone(),
            start.sink_settings(stats.sink.clone()),
        )?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
            singles_sent: 0,
            stats,
            markers,
            tap,
        })
    }

    /// Hands `batch` to the sink, in pieces of at most [`MAX_SINK_BATCH_HITS`]: the sink
    /// queue is bounded in batches, so each is bounded in bytes too (a slow loop iteration
    /// can release seconds of data at once).
    pub(super) fn send(&mut self, batch: HitBatch) -> Result<()> {
        self.singles_sent += batch.len() as u64;
        self.stats.record_singles(&batch);
        self.markers.note_released(&batch);
        if let Some(tap) = &self.tap
            && tap.send(SorterInput::of_singles(&batch)).is_err()
        {
            // The tap's reader ended (its owner reports why); the run goes on.
            self.tap = None;
        }
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| anyhow!("the Parquet sink stopped"))?;
        let stopped = |_| anyhow!("the Parquet sink stopped");
        if batch.len() <= MAX_SINK_BATCH_HITS {
            return tx.send(batch).map_err(stopped);
        }
        for start in (0..batch.len()).step_by(MAX_SINK_BATCH_HITS) {
            let end = (start + MAX_SINK_BATCH_HITS).min(batch.len());
            let mut piece = HitBatch::with_capacity(end - start);
            piece.extend_from_range(&batch, start..end);
            tx.send(piece).map_err(stopped)?;
        }
        Ok(())
    }

    /// Ends the sink's input and waits for it to commit its files.
    pub(super) fn close(&mut self) -> Result<SinkReport> {
        drop(self.tx.take());
        self.handle
            .take()
            .ok_or_else(|| anyhow!("the Parquet sink was closed already"))?
            .join()
            .map_err(|_| anyhow!("the Parquet sink thread panicked"))
            .and_then(|r| r)
    }
}
