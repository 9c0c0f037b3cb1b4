//! The `scandaq` command line: parses the arguments, calls the command (daq/src/commands/)
//! and maps its error to the exit code, printing it on one line.
//!
//! Without the `demo` feature (a scanner build: `--no-default-features`) `scandaq demo` still
//! parses, whatever its arguments, and fails with a message saying how to get it back
//! (`DEMO_MISSING`), rather than clap's "unrecognized subcommand".

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
#[cfg(feature = "demo")]
use scandaq::commands::demo;
use scandaq::commands::{
    attach, calibrate, cluster, config_check, export, inspect, node, recover, replay, report,
    run as run_cmd,
};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "scandaq",
    version,
    about = "Acquisition pipeline for PET, MEG and ultrasound front-ends"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Simulate a two-module PET bench in-process, acquire it, and write Parquet (no hardware needed).
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Not in this build (built without the demo feature): rebuild with the default features.
    #[cfg(not(feature = "demo"))]
    Demo {
        /// Ignored: the command is not in this build.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Reprocess a PETsys .rawf file or raw archive into calibrated singles, or a PETLINK .l list-mode file into events, in Parquet.
    Replay(replay::ReplayArgs),
    /// Acquire from live front-ends (UDP/TCP) into a new run; Ctrl-C stops cleanly.
    Run(run_cmd::RunArgs),
    /// Check a run configuration file without running anything.
    Config {
        #[command(subcommand)]
        action: config_check::ConfigAction,
    },
    /// Show the dashboard of a running acquisition (attached through its control socket; q leaves, the run goes on), or with --cluster every node of a cluster.
    Top {
        /// A run directory or its control.sock (default: the newest live run under --out).
        target: Option<PathBuf>,
        /// Where to look for runs when no target is given (default: ./runs and ./scandaq-runs).
        #[arg(long)]
        out: Option<PathBuf>,
        /// A cluster file: show every node's statistics (Flight DoAction "stats") as a table.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["target", "out"])]
        cluster: Option<PathBuf>,
        /// With --cluster: print the table once and exit.
        #[arg(long, requires = "cluster")]
        once: bool,
    },
    /// Run one node of a cluster (acquisition or builder, as the cluster file says).
    Node(node::NodeArgs),
    /// A cluster on this machine (`local`), or a run's merged manifest (`manifest`).
    Cluster {
        #[command(subcommand)]
        action: cluster::ClusterAction,
    },
    /// Talk to a running acquisition's control socket (for scripts).
    Ctl {
        #[command(subcommand)]
        action: attach::CtlAction,
        /// The control socket (or the run directory holding it); default: the newest live run.
        #[arg(long, global = true)]
        socket: Option<PathBuf>,
        /// Where to look for runs when no --socket is given (default: ./runs and ./scandaq-runs).
        #[arg(long, global = true)]
        out: Option<PathBuf>,
    },
    /// Export a run to the formats reconstruction tools read.
    Export {
        #[command(subcommand)]
        format: export::ExportFormat,
    },
    /// Finalise the run directory of a process that died: verify committed files, salvage the interrupted ones, rewrite the manifest (state: recovered).
    Recover {
        /// The run directory (OUTDIR/run-NNNNNN).
        run_dir: PathBuf,
    },
    /// Derive calibration tables (tdc, energy, skew) from raw .rawf acquisitions.
    Calibrate {
        #[command(subcommand)]
        kind: calibrate::CalibrateCommand,
    },
    /// Write a run's report: one self-contained HTML file with its summary, losses and figures (PET spectra, coincidence timing, MEG spectra, ultrasound B-mode).
    Report(report::ReportArgs),
    /// Summarise a .rawf, a .sdq raw archive, a PETLINK .l list-mode file (with its header), a scandaq Parquet file, or a run directory.
    Inspect {
        /// File or run directory.
        path: PathBuf,
    },
}

/// What `scandaq demo` says in a build without the `demo` feature.
#[cfg(not(feature = "demo"))]
const DEMO_MISSING: &str = "this scandaq was built without the demo feature (a scanner build: \
     no simulator); rebuild with the default features (cargo build --release -p scandaq) to \
     get `scandaq demo`";

fn main() -> ExitCode {
    // Named workers: `top -H` and perf tell decoding from the rest ("rayon-0", ...). The
    // pool is the default one otherwise (one worker per core).
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("rayon-{i}"))
        .build_global();
    // Numeric options take values starting with `-`, for our parsers to name the range.
    let matches = scandaq::commands::cli::accept_negative_values(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(args),
        #[cfg(not(feature = "demo"))]
        Command::Demo { .. } => anyhow::bail!("{DEMO_MISSING}"),
        Command::Replay(args) => replay::run(args),
        Command::Run(args) => run_cmd::run(args),
        Command::Config { action } => config_check::run(action),
        Command::Top {
            cluster: Some(file),
            once,
            ..
        } => cluster::top::run(&file, once),
        Command::Top { target, out, .. } => attach::top(target.as_deref(), out),
        Command::Node(args) => node::run(args),
        Command::Cluster { action } => cluster::run(action),
        Command::Ctl {
            action,
            socket,
            out,
        } => attach::ctl(action, socket.as_deref(), out),
        Command::Export { format } => export::run(format),
        Command::Recover { run_dir } => {
            let r = recover::recover(&run_dir)?;
            recover::print_report(&r);
            Ok(if r.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Calibrate { kind } => {
            calibrate::run_cli(kind)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => report::run(args),
        Command::Inspect { path } => {
            inspect::inspect(&path)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
