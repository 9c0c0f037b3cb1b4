//! `scandaq demo`: the bench simulator runs in-process and streams its frames through the
//! same pipeline as a replay, with the simulator's true calibration, into a new run.

use crate::commands::outcome::finish_run;
use crate::observe::control::{ControlContext, ControlServer};
use crate::observe::dashboard;
use crate::observe::disk_watch::{DiskWarnLevels, DiskWatch};
use crate::observe::live_stats::{
    BoardDecodeSnapshot, BoardTransportSnapshot, InputSnapshot, LatestCell, LiveStats, RunInfo,
};
use crate::observe::markers::SharedMarkers;
use crate::observe::stop::StopFlag;
use crate::observe::stop::stop_on_signals;
use crate::process::calib_load::LoadedCalibration;
use crate::process::coinc_stage::{CoincidenceArgs, CoincidenceOptions};
use crate::process::pipeline::{self, Chunk, PipelineOutcome};
use crate::process::run::{RunDescription, RunEnd, RunStart, RunSummary};
use anyhow::{Result, anyhow};
use crossbeam_channel::{Sender, bounded};
use scandaq_core::calib::checksum_of;
use scandaq_core::run_state::{RunMode, StopReason};
use scandaq_core::units::{parse_duration_s, parse_rate_hz, parse_whole};
use scandaq_core::{Calibration, ClockModel, HitBatch};
use scandaq_fpga_sim::{BenchConfig, BenchSim, TruthBatch};
use scandaq_tui::AppOptions;
use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
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

/// How a demo runs, beyond the simulator's own settings.
#[derive(Default)]
pub struct DemoOptions {
    /// Show a progress bar on stderr.
    pub show_progress: bool,
    /// Write the raw diagnostic columns into the singles table.
    pub raw_columns: bool,
    /// Coincidence sorting.
    pub coincidences: CoincidenceOptions,
    /// The singles files' rotation and commit interval.
    pub rotation: crate::process::pipeline::Rotation,
    /// Live statistics, markers and a stop flag for a dashboard or control socket.
    pub live: Option<DemoLive>,
}

/// Runs the demo: `config.duration_s` of the bench preset into a new run under `out_dir`.
pub fn demo(config: BenchConfig, out_dir: &Path, options: DemoOptions) -> Result<RunSummary> {
    let DemoOptions {
        show_progress,
        raw_columns,
        coincidences,
        rotation,
        live,
    } = options;
    let duration_s = config.duration_s;
    let ctr_fwhm_ps = config.ctr_fwhm_ps;
    let sim = BenchSim::new(config).map_err(|e| anyhow!("simulator configuration: {e}"))?;
    let calibration = true_calibration(&sim);
    let (tx, rx) = bounded::<Result<Chunk>>(2);
    let producer = SimFeed::new(sim, tx, live.as_ref()).spawn()?;
    let bar = crate::observe::progress::progress_bar(show_progress, (duration_s * 1000.0) as u64);
    let mut extra_counts = BTreeMap::new();
    extra_counts.insert("simulated_ms".into(), (duration_s * 1000.0) as u64);
    let description = RunDescription {
        mode: RunMode::Demo,
        sources: vec![format!("fpga-sim bench preset, {duration_s} s")],
        clock: ClockModel::TOFPET2_DEFAULT,
        extra_counts,
        warnings: vec![],
        raw_columns,
        rotation,
        coincidences,
    };
    let stats = live.as_ref().map(|l| l.stats.clone());
    let mut start = RunStart::begin(out_dir, &calibration, description, stats)?;
    start.run.manifest_mut().ctr_fwhm_ps = Some(ctr_fwhm_ps.round() as i64);
    start.set_running()?;
    if let Some(l) = &live {
        l.stats.info.publish(RunInfo {
            run: start.run.number(),
            run_dir: start.run.path().display().to_string(),
            mode: RunMode::Demo.name().into(),
            limits: vec![format!("duration {duration_s} s (simulated)")],
            energy_window_kev: start
                .coincidences
                .as_ref()
                .and_then(|c| c.applied_energy_window_kev()),
        });
    }
    let mut observe = SinkObserver::new(live.as_ref(), start.run.path());
    let outcome = pipeline::run_observed(
        rx,
        &start.kernel,
        start.run.path(),
        start.metadata.clone(),
        start.sink_settings(
            live.as_ref()
                .map_or_else(Arc::default, |l| l.stats.sink.clone()),
        ),
        &mut |batch| observe.note(batch),
        |n| bar.inc(n),
    );
    bar.finish_and_clear();
    let joined = producer
        .join()
        .map_err(|_| anyhow!("the simulator thread panicked"));
    start.run.set_stopping();
    let stopped = joined?;
    finish_demo(start, outcome?, stopped, live.as_ref())
}

/// Commits the demo's markers and finalises its run.
fn finish_demo(
    start: RunStart,
    outcome: PipelineOutcome,
    stopped: bool,
    live: Option<&DemoLive>,
) -> Result<RunSummary> {
    let mut extra_files = vec![];
    let mut error = outcome.input_error.map(|e| format!("{e:#}"));
    if let Some(l) = live {
        match l.markers.commit(start.run.path(), &start.metadata) {
            Ok(Some(f)) => extra_files.push(f),
            Ok(None) => {}
            Err(e) => {
                error.get_or_insert(format!("markers: {e:#}"));
            }
        }
    }
    start.finish(RunEnd {
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
    })
}

/// What the demo shows of the singles on their way to the sink: the statistics and markers
/// of a watched demo, and its one board's decode count (every 50 ms).
struct SinkObserver<'a> {
    live: Option<&'a DemoLive>,
    last_publish: Instant,
    /// The output disk's free space, for the dashboard.
    disk: DiskWatch,
}

impl<'a> SinkObserver<'a> {
    fn new(live: Option<&'a DemoLive>, run_dir: &Path) -> Self {
        Self {
            live,
            last_publish: Instant::now(),
            disk: DiskWatch::new(run_dir, DiskWarnLevels::default()),
        }
    }

    fn note(&mut self, batch: &HitBatch) {
        let Some(l) = self.live else { return };
        self.disk.publish_into(&l.stats);
        l.stats.record_singles(batch);
        l.markers.note_released(batch);
        if self.last_publish.elapsed() >= Duration::from_millis(50) {
            self.last_publish = Instant::now();
            // The demo's one board: hits counted as they reach the sink.
            let singles = l.stats.singles.load(Ordering::Relaxed);
            l.stats.board_decode.publish(vec![BoardDecodeSnapshot {
                source_id: 0,
                hits_decoded: singles,
                ..Default::default()
            }]);
        }
    }
}

/// Frames gathered by the simulator before a chunk is handed on (room for one more slice).
const FRAMES_CAPACITY: usize = DEMO_CHUNK + (1 << 20);

/// The simulator's thread: slices of simulated frames gathered into chunks for the pipeline,
/// paced to wall-clock time when asked, its progress published as the demo's one input.
struct SimFeed {
    sim: BenchSim,
    tx: Sender<Result<Chunk>>,
    stop: Option<StopFlag>,
    realtime: bool,
    cell: Option<Arc<LatestCell<InputSnapshot>>>,
    chunks: u64,
    bytes_sent: u64,
}

impl SimFeed {
    fn new(sim: BenchSim, tx: Sender<Result<Chunk>>, live: Option<&DemoLive>) -> Self {
        Self {
            sim,
            tx,
            stop: live.map(|l| l.stop.clone()),
            realtime: live.is_some_and(|l| l.realtime),
            cell: live.map(|l| l.stats.register_input(SIM_INPUT)),
            chunks: 0,
            bytes_sent: 0,
        }
    }

    /// Starts the thread; it returns whether the stop flag ended the simulation.
    fn spawn(self) -> Result<JoinHandle<bool>> {
        Ok(std::thread::Builder::new()
            .name("fpga-sim".into())
            .spawn(move || self.run())?)
    }

    fn run(mut self) -> bool {
        let mut truth = TruthBatch::default();
        let mut frames = Vec::with_capacity(FRAMES_CAPACITY);
        let (mut slices, mut total_slices) = (0u64, 0u64);
        let begun = Instant::now();
        loop {
            let stopped = self
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed));
            let more = !stopped && self.sim.next_slice(&mut frames, &mut truth);
            truth = TruthBatch::default();
            slices += 1;
            total_slices += 1;
            // Paced: a chunk every 100 ms of detector time, sent when its time has come.
            let due = frames.len() >= DEMO_CHUNK || (self.realtime && slices >= 100);
            if due || (!more && !frames.is_empty()) {
                if self.realtime {
                    let at = begun + Duration::from_millis(total_slices);
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                }
                let bytes = std::mem::replace(&mut frames, Vec::with_capacity(FRAMES_CAPACITY));
                if !self.send(bytes, slices, !more) {
                    return stopped;
                }
                slices = 0;
            }
            if !more {
                self.publish(0, true);
                return stopped;
            }
        }
    }

    /// Hands `bytes` on; false when the pipeline has stopped taking chunks.
    fn send(&mut self, bytes: Vec<u8>, progress: u64, ended: bool) -> bool {
        self.chunks += 1;
        self.bytes_sent += bytes.len() as u64;
        if self.tx.send(Ok(Chunk { bytes, progress })).is_err() {
            return false;
        }
        self.publish(self.tx.len(), ended);
        true
    }

    fn publish(&self, queued: usize, ended: bool) {
        if let Some(cell) = &self.cell {
            cell.publish(sim_input_snapshot(
                self.chunks,
                self.bytes_sent,
                queued,
                ended,
            ));
        }
    }
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

/// `--duration` of a demo: a duration up to the simulator's longest run
/// ([`scandaq_fpga_sim::config::MAX_DURATION_S`], one hour: its times are f64 picoseconds
/// since the run start, finer than 1 ps only that far).
fn demo_duration_s(s: &str) -> Result<f64, String> {
    let max = scandaq_fpga_sim::config::MAX_DURATION_S;
    match parse_duration_s(s)? {
        d if d <= max => Ok(d),
        d => Err(format!(
            "{d} s is longer than the simulator's limit of {max} s (1h): give --duration 1h or \
             less (each demo is a new run; run several for more)"
        )),
    }
}

/// `scandaq demo`: simulate a two-module PET bench in-process, acquire it, and write Parquet.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Detector time to simulate (e.g. 10s, 500ms), at most 1h (the simulator's limit:
    /// README "Demo").
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = demo_duration_s)]
    pub duration: f64,
    /// Hit rate of the simulated bench (e.g. 1M, 250k).
    #[arg(long, default_value = "1M", value_parser = parse_rate_hz)]
    pub rate: f64,
    /// Simulator seed.
    #[arg(long, default_value_t = 1, value_parser = |s: &str| parse_whole(s, 0, u64::MAX))]
    pub seed: u64,
    /// Output directory; each demo makes a new run-NNNNNN inside it (created if missing, its
    /// parent must exist).
    #[arg(long, value_name = "DIR", default_value = "scandaq-runs")]
    pub out: PathBuf,
    /// Also write the raw diagnostic columns (frame, coarse/fine counters, TAC).
    #[arg(long)]
    pub raw_columns: bool,
    /// No dashboard: run at full speed with a progress bar and print the summary (the default when stdin/stdout is not a terminal).
    #[arg(long)]
    pub no_tui: bool,
    /// Commit interval: every single is on disk within this time, so a power cut costs at most this much (e.g. 1s, 250ms) [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = crate::process::pipeline::parse_commit_interval)]
    pub commit_interval: Option<f64>,
    /// Start a new singles or coincidence file at this size (e.g. 2GB, 512MiB) [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = scandaq_core::units::parse_bytes)]
    pub rotate_size: Option<u64>,
    /// Coincidence settings (window, delay, energy window, policy, grouping).
    #[command(flatten)]
    pub coincidences: CoincidenceArgs,
}

/// `scandaq demo`: the embedded simulator into a new run, with the dashboard on a terminal
/// (paced to wall-clock time) or at full speed with a summary otherwise.
pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let DemoArgs {
        duration,
        rate,
        seed,
        out,
        raw_columns,
        no_tui,
        commit_interval,
        rotate_size,
        coincidences,
    } = args;
    let rotation = crate::process::pipeline::Rotation {
        commit_interval_s: commit_interval,
        max_bytes: rotate_size,
        ..Default::default()
    };
    for note in coincidences.notes() {
        eprintln!("scandaq demo: note: {note}");
    }
    let coincidences = coincidences.apply(CoincidenceOptions::default())?;
    if !no_tui && dashboard::can_run() {
        let config = scandaq_fpga_sim::BenchConfig {
            seed,
            duration_s: duration,
            hit_rate_hz: rate,
            ..Default::default()
        };
        return demo_dashboard(config, out, raw_columns, coincidences, rotation);
    }
    let config = scandaq_fpga_sim::BenchConfig {
        seed,
        duration_s: duration,
        hit_rate_hz: rate,
        ..Default::default()
    };
    println!(
        "scandaq demo: simulating a two-module LYSO bench with a Na-22 source, {duration} s at {:.0} hits/s",
        rate
    );
    // Ctrl-C (or SIGTERM) stops the simulation; what was acquired is committed. A
    // control socket (`scandaq ctl status` shows the progress) while it runs.
    let stats = Arc::new(LiveStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signals(&stop)?;
    let markers: SharedMarkers = Arc::default();
    let control = ControlServer::start_for_run(ControlContext {
        stats: stats.clone(),
        stop: stop.clone(),
        markers: markers.clone(),
    });
    let live = DemoLive {
        stats,
        stop,
        markers,
        realtime: false,
    };
    let summary = demo(
        config,
        &out,
        DemoOptions {
            show_progress: true,
            raw_columns,
            coincidences,
            rotation,
            live: Some(live),
        },
    );
    control.shutdown();
    let summary = summary?;
    let ran_out = summary.manifest.stop_reason != Some(StopReason::StopRequested);
    Ok(finish_run(summary, ran_out.then_some(duration)))
}

/// `scandaq demo` with the dashboard: the simulator paced to wall-clock time, the dashboard
/// on this thread, the acquisition on another, a control socket in the run directory.
fn demo_dashboard(
    config: scandaq_fpga_sim::BenchConfig,
    out: PathBuf,
    raw_columns: bool,
    coincidences: CoincidenceOptions,
    rotation: crate::process::pipeline::Rotation,
) -> Result<ExitCode> {
    let duration = config.duration_s;
    let stats = Arc::new(LiveStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let markers: SharedMarkers = Arc::default();
    let exit = Arc::new(AtomicBool::new(false));
    stop_on_signals(&exit)?;
    let control = ControlServer::start_for_run(ControlContext {
        stats: stats.clone(),
        stop: stop.clone(),
        markers: markers.clone(),
    });
    let live = DemoLive {
        stats: stats.clone(),
        stop: stop.clone(),
        markers: markers.clone(),
        realtime: true,
    };
    let worker = std::thread::Builder::new()
        .name("demo".into())
        .spawn(move || {
            demo(
                config,
                &out,
                DemoOptions {
                    show_progress: false,
                    raw_columns,
                    coincidences,
                    rotation,
                    live: Some(live),
                },
            )
        })?;
    let ui = dashboard::run_in_process(stats, stop.clone(), markers, &exit, AppOptions::default());
    stop.store(true, Ordering::Relaxed);
    let summary = worker
        .join()
        .map_err(|_| anyhow!("the demo thread panicked"))?;
    control.shutdown();
    if let Err(e) = ui {
        eprintln!("warning: {e:#}");
    }
    let summary = summary?;
    let ran_out = summary.manifest.stop_reason != Some(StopReason::StopRequested);
    Ok(finish_run(summary, ran_out.then_some(duration)))
}
