//! `scandaq demo`: the bench simulator runs in-process and streams its frames through the
//! same pipeline as a replay, with the simulator's true calibration, into a new run.

use crate::observe::live_stats::{
    BoardDecodeSnapshot, BoardTransportSnapshot, InputSnapshot, LiveStats, RunInfo, RunState,
};
use crate::observe::markers::SharedMarkers;
use crate::observe::stop::StopFlag;
use crate::process::calib_load::LoadedCalibration;
use crate::process::pipeline;
use crate::process::pipeline::Chunk;
use crate::process::session::{self, RunDescription, RunEnd, RunSummary};
use anyhow::{Result, anyhow};
use crossbeam_channel::bounded;
use scandaq_core::calib::checksum_of;
use scandaq_core::run_state::StopReason;
use scandaq_core::{Calibration, ClockModel, HitBatch};
use scandaq_fpga_sim::{BenchConfig, BenchSim, TruthBatch};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Bytes of frames gathered before handing a chunk to the pipeline.
const DEMO_CHUNK: usize = 4 << 20;

/// The simulator's true calibration, as if loaded from its tables.
pub fn true_calibration(sim: &BenchSim) -> LoadedCalibration {
    let texts = vec![
        ("tdc_calibration.tsv".to_string(), sim.true_tdc().to_text()),
        (
            "energy_calibration.tsv".to_string(),
            sim.true_energy().to_text(),
        ),
        ("skew.tsv".to_string(), sim.true_skew().to_text()),
        (
            "map_channel.tsv".to_string(),
            sim.geometry().to_map_channel(),
        ),
    ];
    let parts: Vec<(&str, &str)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    LoadedCalibration {
        calibration: Calibration {
            tdc: sim.true_tdc().clone(),
            energy: Some(sim.true_energy().clone()),
            skew: Some(sim.true_skew().clone()),
            geometry: Some(sim.geometry().clone()),
            checksum: checksum_of(&parts),
            sources: texts.iter().map(|(n, _)| n.clone()).collect(),
        },
        texts,
        warnings: vec![],
    }
}

/// What a demo shares with a dashboard and a control socket.
pub struct DemoLive {
    /// Statistics the dashboard reads (the simulator appears as one input, board 0).
    pub stats: Arc<LiveStats>,
    /// Set to end the demo early (the simulated stream ends; everything before is written).
    pub stop: StopFlag,
    /// Markers placed during the run (`markers.parquet`).
    pub markers: SharedMarkers,
    /// Pace the simulator to wall-clock time (1 s of detector time per second), so the
    /// dashboard shows a live acquisition rather than a replay at full speed.
    pub realtime: bool,
}

/// Runs the demo: `config.duration_s` of the bench preset into a new run under `out_dir`.
pub fn demo(
    config: BenchConfig,
    out_dir: &Path,
    show_progress: bool,
    raw_columns: bool,
    coincidences: crate::process::coinc_stage::CoincidenceOptions,
) -> Result<RunSummary> {
    demo_live(
        config,
        out_dir,
        show_progress,
        raw_columns,
        coincidences,
        None,
    )
}

/// [`demo`], optionally feeding live statistics and markers and obeying a stop flag.
pub fn demo_live(
    config: BenchConfig,
    out_dir: &Path,
    show_progress: bool,
    raw_columns: bool,
    coincidences: crate::process::coinc_stage::CoincidenceOptions,
    live: Option<DemoLive>,
) -> Result<RunSummary> {
    demo_with(
        config,
        out_dir,
        show_progress,
        raw_columns,
        coincidences,
        Default::default(),
        live,
    )
}

/// [`demo_live`] with the singles files' rotation and commit interval.
pub fn demo_with(
    config: BenchConfig,
    out_dir: &Path,
    show_progress: bool,
    raw_columns: bool,
    coincidences: crate::process::coinc_stage::CoincidenceOptions,
    rotation: crate::process::pipeline::Rotation,
    live: Option<DemoLive>,
) -> Result<RunSummary> {
    let duration_s = config.duration_s;
    let mut sim = BenchSim::new(config).map_err(|e| anyhow!("simulator configuration: {e}"))?;
    let calibration = true_calibration(&sim);
    let (tx, rx) = bounded::<Result<Chunk>>(2);
    let stop = live.as_ref().map(|l| l.stop.clone());
    let realtime = live.as_ref().is_some_and(|l| l.realtime);
    let input_cell = live.as_ref().map(|l| l.stats.register_input(SIM_INPUT));
    let producer = std::thread::Builder::new()
        .name("fpga-sim".into())
        .spawn(move || {
            let mut truth = TruthBatch::default();
            let mut frames = Vec::with_capacity(DEMO_CHUNK + (1 << 20));
            let mut slices = 0u64;
            let (mut total_slices, mut chunks, mut bytes_sent) = (0u64, 0u64, 0u64);
            let begun = Instant::now();
            let mut stopped;
            loop {
                stopped = stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
                let more = !stopped && sim.next_slice(&mut frames, &mut truth);
                truth = TruthBatch::default();
                slices += 1;
                total_slices += 1;
                // Paced: a chunk every 100 ms of detector time, sent when its time has come.
                let due = frames.len() >= DEMO_CHUNK || (realtime && slices >= 100);
                if due || (!more && !frames.is_empty()) {
                    if realtime {
                        let at = begun + Duration::from_millis(total_slices);
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    }
                    let bytes =
                        std::mem::replace(&mut frames, Vec::with_capacity(DEMO_CHUNK + (1 << 20)));
                    chunks += 1;
                    bytes_sent += bytes.len() as u64;
                    if tx
                        .send(Ok(Chunk {
                            bytes,
                            progress: slices,
                        }))
                        .is_err()
                    {
                        break;
                    }
                    slices = 0;
                    if let Some(cell) = &input_cell {
                        cell.try_publish(|| {
                            sim_input_snapshot(chunks, bytes_sent, tx.len(), !more)
                        });
                    }
                }
                if !more {
                    if let Some(cell) = &input_cell {
                        cell.publish(sim_input_snapshot(chunks, bytes_sent, 0, true));
                    }
                    break;
                }
            }
            (sim.summary(), stopped)
        })?;
    let bar = crate::observe::progress::progress_bar(show_progress, (duration_s * 1000.0) as u64);
    let mut extra_counts = BTreeMap::new();
    extra_counts.insert("simulated_ms".into(), (duration_s * 1000.0) as u64);
    let description = RunDescription {
        mode: "demo".into(),
        sources: vec![format!("fpga-sim bench preset, {duration_s} s")],
        clock: ClockModel::TOFPET2_DEFAULT,
        extra_counts,
        warnings: vec![],
        raw_columns,
        rotation,
        coincidences,
    };
    // session::run, with the statistics and markers fed at the sink.
    let mut start = session::begin(out_dir, &calibration, description)?;
    start.set_running(live.as_ref().map(|l| l.stats.as_ref()))?;
    if let Some(l) = &live {
        l.stats.info.publish(RunInfo {
            run: start.run_dir.run,
            run_dir: start.run_dir.path.display().to_string(),
            mode: "demo".into(),
            limits: vec![format!("duration {duration_s} s (simulated)")],
        });
    }
    let mut last_publish = Instant::now();
    let mut observe = |batch: &HitBatch| {
        if let Some(l) = &live {
            l.stats.record_singles(batch);
            l.markers.note_released(batch);
            if last_publish.elapsed() >= Duration::from_millis(50) {
                last_publish = Instant::now();
                // The demo's one board: hits counted as they reach the sink.
                let singles = l.stats.singles.load(Ordering::Relaxed);
                l.stats.board_decode.try_publish(|| {
                    vec![BoardDecodeSnapshot {
                        source_id: 0,
                        hits_decoded: singles,
                        ..Default::default()
                    }]
                });
            }
        }
    };
    let outcome = pipeline::run_observed(
        rx,
        &start.kernel,
        &start.run_dir.path,
        start.metadata.clone(),
        start.sink_settings(
            live.as_ref()
                .map_or_else(Arc::default, |l| l.stats.sink.clone()),
        ),
        &mut observe,
        |n| bar.inc(n),
    );
    bar.finish_and_clear();
    let joined = producer
        .join()
        .map_err(|_| anyhow!("the simulator thread panicked"));
    if let Some(l) = &live {
        l.stats.set_state(RunState::Stopping);
    }
    let (_, stopped) = joined?;
    let outcome = outcome?;
    let mut extra_files = vec![];
    let mut error = outcome.input_error.map(|e| format!("{e:#}"));
    if let Some(l) = &live {
        match l.markers.commit(&start.run_dir.path, &start.metadata) {
            Ok(Some(f)) => extra_files.push(f),
            Ok(None) => {}
            Err(e) => {
                error.get_or_insert(format!("markers: {e:#}"));
            }
        }
    }
    let end = RunEnd {
        counts: outcome.counts,
        sink: outcome.sink,
        extra_files,
        extra_counts: BTreeMap::new(),
        error,
        failure: None,
        stop_reason: if stopped {
            StopReason::StopRequested
        } else {
            StopReason::EndOfInput
        },
    };
    let summary = session::finish(start, end);
    if let Some(l) = &live {
        l.stats.set_state(match &summary {
            Ok(s) if s.error.is_none() => RunState::Stopped,
            _ => RunState::Failed,
        });
    }
    summary
}

/// Label of the demo's simulator in the statistics.
pub const SIM_INPUT: &str = "fpga-sim (in-process)";

fn sim_input_snapshot(chunks: u64, bytes: u64, queued: usize, ended: bool) -> InputSnapshot {
    InputSnapshot {
        label: SIM_INPUT.into(),
        packets_in: chunks,
        bytes_in: bytes,
        ring_fill: queued as u64,
        ring_capacity: 2,
        boards: vec![BoardTransportSnapshot {
            source_id: 0,
            packets_received: chunks,
            payload_bytes: bytes,
            ended,
            ..Default::default()
        }],
        ..Default::default()
    }
}
