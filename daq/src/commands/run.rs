//! `scandaq run`: the command-line flags over the TOML run file, and the live acquisition
//! with its stats line or dashboard.

use crate::acquire::live::{LiveConfig, LiveHandles, run_live};
use crate::acquire::ring::OverflowPolicy;
use crate::acquire::run_config::{self, RunFile};
use crate::commands::outcome::finish_run;
use crate::observe::control::{ControlContext, ControlServer};
use crate::observe::dashboard;
use crate::observe::live_stats::LiveStats;
use crate::observe::markers::SharedMarkers;
use crate::observe::stop::stop_on_signals;
use crate::process::calib_load::{CalibrationArgs, LoadedCalibration};
use crate::process::coinc_stage::{CoincidenceArgs, CoincidenceOptions};
use crate::process::petsys_trigger::resolve_coincidence_options;
use crate::process::run::RunSummary;
use anyhow::{Result, anyhow};
use scandaq_core::run_state::RunMode;
use scandaq_core::units::{parse_bytes, parse_duration_s, parse_whole};
use scandaq_tui::AppOptions;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// `scandaq run`: acquire from live front-ends (UDP/TCP) into a new run.
#[derive(clap::Args)]
pub struct RunArgs {
    /// TOML run configuration (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen for front-end datagrams on HOST:PORT (repeatable).
    #[arg(long)]
    pub udp: Vec<SocketAddr>,
    /// Connect to a front-end TCP stream at HOST:PORT (repeatable).
    #[arg(long)]
    pub tcp: Vec<SocketAddr>,
    /// Accept packets only from these front-end IP addresses (repeatable; default: any).
    #[arg(long)]
    pub allow: Vec<IpAddr>,
    /// The boards (source ids) expected, e.g. 0,1; other sources are counted as
    /// unknown_source_packets [default: any, up to 256 per input].
    #[arg(long, value_delimiter = ',', value_name = "IDS",
          value_parser = |s: &str| parse_whole(s, 0, u64::from(u32::MAX)).map(|n| n as u32))]
    pub boards: Option<Vec<u32>>,
    /// TCP: fail the run if no connection is made within this time (e.g. 30s) [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = duration_text, allow_hyphen_values = true)]
    pub connect_timeout: Option<String>,
    /// Overflow policy of the input rings.
    #[arg(long, value_parser = ["drop", "block"])]
    pub policy: Option<String>,
    /// Calibration: `--calib DIR`, `--petsys-config FILE` or `--no-calib` (over the run
    /// file's `[calibration]`).
    #[command(flatten)]
    pub calibration: CalibrationArgs,
    /// Stop after this wall-clock time (e.g. 60s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_s)]
    pub duration: Option<f64>,
    /// Stop after this many singles.
    #[arg(long, value_parser = |s: &str| parse_whole(s, 1, u64::MAX))]
    pub max_hits: Option<u64>,
    /// Stop after this many bytes of frames accepted (e.g. 10GB, 512MiB, 1000000).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub max_bytes: Option<u64>,
    /// Output directory; each run makes a new run-NNNNNN inside it (created if missing, its
    /// parent must exist) [default: the run file's run.out, else scandaq-runs].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Record packets as received into raw-00000.sdq (replayable with `scandaq replay`).
    #[arg(long)]
    pub raw_archive: bool,
    /// Also write the raw diagnostic columns.
    #[arg(long)]
    pub raw_columns: bool,
    /// No stats line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Start a new singles or coincidence file at this size (e.g. 2GB, 512MiB) [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = size_text, allow_hyphen_values = true)]
    pub rotate_size: Option<String>,
    /// Start a new singles or coincidence file after this wall-clock time (e.g. 10m).
    #[arg(long, value_name = "DURATION", value_parser = duration_text, allow_hyphen_values = true)]
    pub rotate_every: Option<String>,
    /// Commit interval: every single (and archived packet) is on disk within this time, so a power cut costs at most this much (e.g. 1s, 250ms) [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = duration_text, allow_hyphen_values = true)]
    pub commit_interval: Option<String>,
    /// Page compression of the singles and coincidence tables: lz4 (LZ4_RAW, the default),
    /// zstd (level 1), zstd:N, or none.
    #[arg(long, value_name = "CODEC")]
    pub compression: Option<String>,
    /// Show the operator dashboard (needs a terminal; otherwise the stats line is printed).
    #[arg(long)]
    pub tui: bool,
    /// Coincidence settings (window, delay, energy window, policy, grouping).
    #[command(flatten)]
    pub coincidences: CoincidenceArgs,
}

/// A duration flag laid over the run file's text key: checked now, kept as written.
fn duration_text(s: &str) -> Result<String, String> {
    parse_duration_s(s).map(|_| s.trim().to_string())
}

/// A size flag laid over the run file's text key: checked now, kept as written.
fn size_text(s: &str) -> Result<String, String> {
    parse_bytes(s).map(|_| s.trim().to_string())
}

/// `scandaq run`: the run file (if any) with the flags on top, validated; the acquisition
/// with the stats line, or the dashboard on a terminal (`--tui`); a control socket meanwhile.
pub fn run(args: RunArgs) -> Result<ExitCode> {
    let mut v = run_file(&args)?.validate()?;
    if args.quiet {
        v.live.stats_every = None;
    }
    // The validated `[calibration]`, as the flags would give it.
    let calibration = CalibrationArgs {
        calib: v.calib_dir.clone(),
        petsys_config: v.petsys_config.clone(),
        no_calib: false,
    }
    .load()?
    .unwrap_or_else(LoadedCalibration::none);
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signals(&stop)?;
    if !args.quiet {
        eprintln!(
            "scandaq run: {} input(s), Ctrl-C stops cleanly",
            v.live.inputs.len()
        );
    }
    let handles = LiveHandles {
        stop,
        mode: RunMode::Run,
        stats: Arc::new(LiveStats::default()),
        markers: SharedMarkers::default(),
        singles_tap: None,
    };
    let control = ControlServer::start_for_run(ControlContext {
        stats: handles.stats.clone(),
        stop: handles.stop.clone(),
        markers: handles.markers.clone(),
    });
    if args.tui && !dashboard::can_run() {
        eprintln!(
            "scandaq run: --tui needs a terminal on stdin and stdout; printing the stats line instead"
        );
    }
    let summary = if args.tui && dashboard::can_run() {
        v.live.stats_every = None;
        with_dashboard(v.live, calibration, handles)?
    } else {
        run_live(&v.live, &calibration, handles)?
    };
    control.shutdown();
    Ok(finish_run(summary, None))
}

/// The acquisition on its own thread, the dashboard on this one; closing the dashboard stops
/// the run.
fn with_dashboard(
    live: LiveConfig,
    calibration: LoadedCalibration,
    handles: LiveHandles,
) -> Result<RunSummary> {
    let exit = Arc::new(AtomicBool::new(false));
    stop_on_signals(&exit)?;
    let (stats, stop, markers) = (
        handles.stats.clone(),
        handles.stop.clone(),
        handles.markers.clone(),
    );
    let worker = std::thread::Builder::new()
        .name("acquisition".into())
        .spawn(move || run_live(&live, &calibration, handles))?;
    let ui = dashboard::run_in_process(stats, stop.clone(), markers, &exit, AppOptions::default());
    stop.store(true, Ordering::Relaxed);
    let summary = worker
        .join()
        .map_err(|_| anyhow!("the acquisition thread panicked"))?;
    if let Err(e) = ui {
        eprintln!("warning: {e:#}");
    }
    summary
}

/// The run file `--config` names (or an empty one) with the flags laid over it.
fn run_file(args: &RunArgs) -> Result<RunFile> {
    let mut file = match &args.config {
        Some(path) => run_config::read(path)?,
        None => RunFile::default(),
    };
    override_inputs(&mut file, args);
    let calib = &args.calibration;
    if calib.given() {
        file.calibration.dir = calib.calib.clone();
        file.calibration.petsys_config = calib.petsys_config.clone();
        file.calibration.none = calib.no_calib.then_some(true);
    }
    override_run(&mut file.run, args);
    // With a PETsys config, its [sw_trigger] settings come under the file's [coincidences]
    // keys and the flags.
    let petsys = file.calibration.petsys_config.clone();
    let (base, given) = match (&petsys, &args.config) {
        (Some(_), Some(path)) => (
            CoincidenceOptions::default(),
            Some((&file.coincidence_keys, path.as_path())),
        ),
        (Some(_), None) => (CoincidenceOptions::default(), None),
        (None, _) => (file.coincidences.clone(), None),
    };
    let mut notes = Vec::new();
    let options = resolve_coincidence_options(
        base,
        petsys.as_deref(),
        f64::from(file.run.clock_hz()?),
        given,
        &args.coincidences,
        &mut notes,
    )?;
    file.coincidences = options;
    if !args.quiet {
        for note in notes {
            eprintln!("scandaq run: {note}");
        }
    }
    Ok(file)
}

/// `--udp` / `--tcp` replace the file's inputs; `--allow` and `--policy` apply to each.
fn override_inputs(file: &mut RunFile, args: &RunArgs) {
    if !args.udp.is_empty() || !args.tcp.is_empty() {
        file.input.clear();
        for a in &args.udp {
            file.input.push(run_config::InputSection {
                udp: Some(a.to_string()),
                ..Default::default()
            });
        }
        for a in &args.tcp {
            file.input.push(run_config::InputSection {
                tcp: Some(a.to_string()),
                ..Default::default()
            });
        }
    }
    for input in &mut file.input {
        if !args.allow.is_empty() {
            input.allow = args.allow.iter().map(|a| a.to_string()).collect();
        }
        if let Some(p) = &args.policy {
            input.policy = Some(if p == "block" {
                OverflowPolicy::Block
            } else {
                OverflowPolicy::Drop
            });
        }
    }
}

/// The `[run]` keys the flags give.
fn override_run(run: &mut run_config::RunSection, args: &RunArgs) {
    if let Some(d) = args.duration {
        run.duration = Some(format!("{d}s"));
    }
    if args.boards.is_some() {
        run.boards = args.boards.clone();
    }
    if args.connect_timeout.is_some() {
        run.connect_timeout = args.connect_timeout.clone();
    }
    if args.max_hits.is_some() {
        run.max_hits = args.max_hits;
    }
    if args.max_bytes.is_some() {
        run.max_bytes = args.max_bytes;
    }
    if let Some(o) = &args.out {
        run.out = Some(o.clone());
    }
    if args.raw_archive {
        run.raw_archive = Some(true);
    }
    if args.raw_columns {
        run.raw_columns = Some(true);
    }
    if args.rotate_size.is_some() {
        run.rotate_size = args.rotate_size.clone();
    }
    if args.rotate_every.is_some() {
        run.rotate_every = args.rotate_every.clone();
    }
    if args.compression.is_some() {
        run.compression = args.compression.clone();
    }
    if args.commit_interval.is_some() {
        run.commit_interval = args.commit_interval.clone();
    }
}
