//! Live acquisition (`scandaq run`) and raw-archive replay: inputs on their own threads feed
//! [`Ingest`](crate::acquire::ingest::Ingest)s, which hand per-board frame chunks through
//! bounded rings to the processing thread; there each board has its own decode/calibrate
//! processor, a k-way merge restores global time order, and the singles sink (plus the
//! optional raw archive) write the run.
//!
//! Start order: sinks, processing, then inputs. Stop order: inputs (they drain and flush),
//! processing drains the rings and flushes every board, then the sinks commit their files and
//! the manifest is written. The run's states (configured -> running -> stopping -> stopped |
//! failed) are moved by its [`Run`](crate::process::run::Run).
//!
//! The files, by job: `inputs` (input threads, the raw-archive reader), `boards` (per-board
//! decode state, the shared timeline, draining the rings), `start` (opening the run, its
//! sinks and inputs), `run_loop` (the acquisition loop and its stop conditions), `shutdown`
//! (draining, closing and accounting) and `console` (what the operator sees on stderr).
//! `LiveRun` (in `run_loop`) owns the state of one acquisition; [`run_live`] starts it, runs
//! its loop and finishes it.

mod boards;
mod console;
mod inputs;
mod run_loop;
mod shutdown;
mod start;

use crate::observe::disk_watch::DiskWarnLevels;
use crate::observe::live_stats::LiveStats;
use crate::process::calib_load::LoadedCalibration;
use crate::process::coinc_stage::CoincidenceOptions;
use crate::process::run::RunSummary;
use crate::process::streams::StreamSettings;
use anyhow::Result;
use scandaq_core::run_state::RunMode;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::acquire::ingest::IngestOptions;
use crate::acquire::ring::OverflowPolicy;
pub use crate::observe::stop::StopFlag;

/// Where packets come from.
#[derive(Clone, Debug, PartialEq)]
pub enum InputSpec {
    /// Listen for datagrams on this address.
    Udp(SocketAddr),
    /// Connect to a front-end serving a TCP stream at this address.
    Tcp(SocketAddr),
    /// Read a raw archive (`.sdq`) written by an earlier run.
    Archive(PathBuf),
}

/// One input and its policies.
#[derive(Clone, Debug)]
pub struct InputConfig {
    /// The input.
    pub spec: InputSpec,
    /// Front-end addresses allowed to send (empty = any).
    pub allow: Vec<IpAddr>,
    /// What the input's ring does when full.
    pub policy: OverflowPolicy,
    /// Ring capacity in chunks (each up to 256 KiB of frames).
    pub ring_chunks: usize,
    /// Expected boards, TCP connect timeout.
    pub ingest: IngestOptions,
}

/// When a run stops by itself.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunLimits {
    /// Wall-clock duration.
    pub duration: Option<Duration>,
    /// Singles written.
    pub max_hits: Option<u64>,
    /// Frame bytes accepted from the inputs.
    pub max_bytes: Option<u64>,
}

/// A live run.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// Inputs.
    pub inputs: Vec<InputConfig>,
    /// Output directory (runs are made inside it).
    pub out_dir: PathBuf,
    /// Limits.
    pub limits: RunLimits,
    /// Keep raw diagnostic columns in the singles.
    pub raw_columns: bool,
    /// Record packets as received into `raw-00000.sdq`.
    pub raw_archive: bool,
    /// Stop once every board seen has sent end-of-stream.
    pub stop_at_end_of_stream: bool,
    /// Print a stats line on stderr this often (None = quiet).
    pub stats_every: Option<Duration>,
    /// Front-end clock.
    pub clock: scandaq_core::ClockModel,
    /// Coincidence sorting.
    pub coincidences: CoincidenceOptions,
    /// File rotation of the singles and coincidence tables.
    pub rotation: crate::process::pipeline::Rotation,
    /// Stream processors' settings (`[meg]`, `[ultrasound]`).
    pub streams: StreamSettings,
    /// When to warn that the output disk is filling.
    pub disk_warn: DiskWarnLevels,
}

impl Default for LiveConfig {
    /// No inputs, `./scandaq-runs`, no limits, stop at end of stream, quiet, the TOFPET2 clock,
    /// default coincidences, rotation, streams and disk warnings.
    fn default() -> Self {
        Self {
            inputs: vec![],
            out_dir: PathBuf::from("scandaq-runs"),
            limits: RunLimits::default(),
            raw_columns: false,
            raw_archive: false,
            stop_at_end_of_stream: true,
            stats_every: None,
            clock: scandaq_core::ClockModel::TOFPET2_DEFAULT,
            coincidences: CoincidenceOptions::default(),
            rotation: crate::process::pipeline::Rotation::default(),
            streams: StreamSettings::default(),
            disk_warn: DiskWarnLevels::default(),
        }
    }
}

impl std::fmt::Display for InputSpec {
    /// `udp ADDR`, `tcp ADDR`, `archive PATH`: how inputs are named in manifests, stats and
    /// messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputSpec::Udp(addr) => write!(f, "udp {addr}"),
            InputSpec::Tcp(addr) => write!(f, "tcp {addr}"),
            InputSpec::Archive(path) => write!(f, "archive {}", path.display()),
        }
    }
}

/// What a live run shares with its caller: the stop flag (signals, the control socket, a
/// dashboard), the mode the manifest records, the statistics anyone may snapshot while the run
/// goes on, and the operator markers it writes into `markers.parquet`.
pub struct LiveHandles {
    /// Raise to stop the run (it drains and commits).
    pub stop: StopFlag,
    /// `run`, `replay` (a raw archive), `recover` (a killed run's archive tail).
    pub mode: RunMode,
    /// Published statistics ([`LiveStats::snapshot`] from any thread).
    pub stats: Arc<LiveStats>,
    /// Markers to place (dashboard, control socket).
    pub markers: crate::observe::markers::SharedMarkers,
    /// A copy of every singles batch handed to the singles sink (its four physics columns),
    /// in time order: a cluster acquisition node's feed to its builders (docs/cluster.md).
    /// Bounded; the receiver must keep up (it never waits on the network).
    pub singles_tap: Option<crossbeam_channel::Sender<crate::process::coinc_stage::SorterInput>>,
}

impl LiveHandles {
    /// Fresh handles: a stop flag not raised, empty statistics and markers.
    pub fn new(mode: RunMode) -> Self {
        Self {
            stop: crate::observe::stop::new_stop_flag(),
            mode,
            stats: Arc::new(LiveStats::default()),
            markers: Arc::default(),
            singles_tap: None,
        }
    }
}

/// Runs a live acquisition until a limit, the stop flag, or the end of every stream.
pub fn run_live(
    config: &LiveConfig,
    calibration: &LoadedCalibration,
    handles: LiveHandles,
) -> Result<RunSummary> {
    let started = start::start_run(config, calibration, &handles)?;
    let kernel = started.start.kernel.clone();
    let mut run = run_loop::LiveRun::new(config, started, handles, &kernel);
    let reason = run.acquire();
    run.finish(reason)
}

/// The limits as an operator reads them.
pub fn limit_descriptions(limits: &RunLimits) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(d) = limits.duration {
        out.push(format!("duration {} s", d.as_secs_f64()));
    }
    if let Some(h) = limits.max_hits {
        out.push(format!("hits {h}"));
    }
    if let Some(b) = limits.max_bytes {
        out.push(format!("bytes {b}"));
    }
    out
}
