//! The `scandaq` command line: demo, replay, inspect.

use anyhow::{Result, anyhow, bail};
use clap::{Parser, Subcommand};
use scandaq::acquire::live::{
    InputConfig, InputSpec, LiveConfig, RunLimits, run_live, run_live_with_markers,
};
use scandaq::acquire::ring::OverflowPolicy;
use scandaq::acquire::run_config::{self, RunFile};
use scandaq::commands::{castor as export, demo, inspect, petlink_replay, recover, replay};
use scandaq::observe::control::{self, ControlContext, ControlServer};
use scandaq::observe::dashboard;
use scandaq::observe::live_stats::LiveStats;
use scandaq::observe::markers::SharedMarkers;
use scandaq::observe::stop::stop_on_signals;
use scandaq::process::coinc_stage::{CoincidenceArgs, CoincidenceOptions};
use scandaq::process::{calib_load, session};
use scandaq_core::run_state::StopReason;
use scandaq_core::units::{parse_duration_s, parse_rate_hz};
use scandaq_tui::AppOptions;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    Demo {
        /// Detector time to simulate (e.g. 10s, 500ms).
        #[arg(long, default_value = "10s", value_parser = parse_duration_s)]
        duration: f64,
        /// Hit rate of the simulated bench (e.g. 1M, 250k).
        #[arg(long, default_value = "1M", value_parser = parse_rate_hz)]
        rate: f64,
        /// Simulator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory for runs.
        #[arg(long, default_value = "scandaq-runs")]
        out: PathBuf,
        /// Also write the raw diagnostic columns (frame, coarse/fine counters, TAC).
        #[arg(long)]
        raw_columns: bool,
        /// No dashboard: run at full speed with a progress bar and print the summary (the default when stdin/stdout is not a terminal).
        #[arg(long)]
        no_tui: bool,
        /// Commit interval: every single is on disk within this time, so a power cut costs at most this much (e.g. 1s, 250ms) [default: 1s].
        #[arg(long, value_name = "DURATION", value_parser = scandaq::process::pipeline::parse_commit_interval)]
        commit_interval: Option<f64>,
        /// Start a new singles file at this size (e.g. 2GB, 512MiB) [default: 4GiB].
        #[arg(long, value_name = "SIZE", value_parser = scandaq_core::units::parse_bytes)]
        rotate_size: Option<u64>,
        #[command(flatten)]
        coincidences: CoincidenceArgs,
    },
    /// Reprocess a PETsys .rawf file or raw archive into calibrated singles, or a PETLINK .l list-mode file into events, in Parquet.
    Replay {
        /// The .rawf file (its .idxf is looked for beside it), a .sdq raw archive, or a PETLINK .l file.
        file: PathBuf,
        /// Interfile header of a PETLINK .l file (default: FILE.l.hdr, FILE.l.hdr.STIR, FILE.hdr or a *.hdr* naming FILE).
        #[arg(long)]
        header: Option<PathBuf>,
        /// scandaq calibration directory (tdc_calibration.tsv, energy_calibration.tsv, skew.tsv, map_channel.tsv).
        #[arg(long, conflicts_with = "petsys_config")]
        calib: Option<PathBuf>,
        /// A PETsys config.ini naming the setup's calibration tables.
        #[arg(long)]
        petsys_config: Option<PathBuf>,
        /// A .sdq archive with no PETsys boards (only OPM-MEG / ultrasound streams) needs no PET calibration.
        #[arg(long, conflicts_with_all = ["calib", "petsys_config"])]
        no_calib: bool,
        /// Run configuration whose [meg] / [ultrasound] keys override the stream settings stored in the .sdq archive (channel table, clock-fit settings, sequence).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output directory; each replay makes a new run-NNNNNN inside it.
        #[arg(long)]
        out: PathBuf,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Also write the raw diagnostic columns (frame, coarse/fine counters, TAC).
        #[arg(long)]
        raw_columns: bool,
        /// Start a new singles file at this size (e.g. 2GB, 512MiB) [default: 4GiB].
        #[arg(long, value_name = "SIZE", value_parser = scandaq_core::units::parse_bytes)]
        rotate_size: Option<u64>,
        #[command(flatten)]
        coincidences: CoincidenceArgs,
    },
    /// Acquire from live front-ends (UDP/TCP) into a new run; Ctrl-C stops cleanly.
    Run(RunArgs),
    /// Check a run configuration file without running anything.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Show the dashboard of a running acquisition (attached through its control socket; q leaves, the run goes on).
    Top {
        /// A run directory or its control.sock (default: the newest live run under --out).
        target: Option<PathBuf>,
        /// Where to look for runs when no target is given (default: ./runs and ./scandaq-runs).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Talk to a running acquisition's control socket (for scripts).
    Ctl {
        #[command(subcommand)]
        action: CtlAction,
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
        format: ExportFormat,
    },
    /// Finalise the run directory of a process that died: verify committed files, salvage the interrupted ones, rewrite the manifest (state: recovered).
    Recover {
        /// The run directory (OUTDIR/run-NNNNNN).
        run_dir: PathBuf,
    },
    /// Derive calibration tables (tdc, energy, skew) from raw .rawf acquisitions.
    Calibrate {
        #[command(subcommand)]
        kind: scandaq::commands::calibrate::CalibrateCommand,
    },
    /// Summarise a .rawf, a scandaq Parquet file, or a run directory.
    Inspect {
        /// File or run directory.
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum ExportFormat {
    /// CASToR list mode: NAME.cdh + NAME.cdf (prompts), NAME_delayed.* (delayed), scandaq_NAME.hscan + .lut (scanner from the run's map_channel.tsv).
    Castor {
        /// The run directory (OUTDIR/run-NNNNNN).
        run_dir: PathBuf,
        /// Output directory (created if its parent exists).
        #[arg(long)]
        out: PathBuf,
        /// Base name of the data files (default: the run directory's name).
        #[arg(long)]
        name: Option<String>,
        /// Coincidence time resolution, FWHM (e.g. 200ps), written as the TOF resolution.
        #[arg(long, value_name = "DURATION", value_parser = scandaq_core::units::parse_time_ps)]
        tof_fwhm: Option<i64>,
        /// Write no TOF field.
        #[arg(long)]
        no_tof: bool,
        /// Do not export the delayed coincidences.
        #[arg(long)]
        no_delayed: bool,
        /// Crystal depth for the scanner description, mm.
        #[arg(long, default_value_t = 20.0)]
        crystal_depth: f64,
    },
    /// Raw FIF (MNE-Python: mne.io.read_raw_fif) of a run's OPM-MEG stream: channels, calibrations, effective sampling rate, data buffers, trigger channel.
    Fif {
        /// The run directory (OUTDIR/run-NNNNNN).
        run_dir: PathBuf,
        /// The FIF file to write.
        #[arg(long)]
        out: PathBuf,
        /// The stream (source id) to export, when the run has several.
        #[arg(long)]
        stream: Option<u32>,
        /// Write the samples as recorded; by default each channel is shifted by its group delay (meg_channels.delay_ps) so all channels refer to the same instants.
        #[arg(long)]
        unaligned: bool,
        /// Largest size of one file (default and at most 2 GiB - 1 MiB); more data continues in FILE-1.fif, FILE-2.fif, ... linked as MNE's split files (mne.io.read_raw_fif(FILE) reads them all).
        #[arg(long, value_name = "SIZE", value_parser = scandaq_core::units::parse_bytes)]
        split_size: Option<u64>,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Parse and validate FILE; prints what the run would do.
    Check {
        /// The TOML run configuration.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum CtlAction {
    /// Print the run's statistics snapshot as one JSON line.
    Status,
    /// Stop the run (it drains, commits its files and writes the manifest).
    Stop,
    /// Write a marker row (wall clock, detector time, TEXT) into the run's markers.parquet.
    Marker {
        /// The marker's text.
        text: Vec<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML run configuration (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen for front-end datagrams on HOST:PORT (repeatable).
    #[arg(long)]
    udp: Vec<SocketAddr>,
    /// Connect to a front-end TCP stream at HOST:PORT (repeatable).
    #[arg(long)]
    tcp: Vec<SocketAddr>,
    /// Accept packets only from these front-end IP addresses (repeatable; default: any).
    #[arg(long)]
    allow: Vec<IpAddr>,
    /// The boards (source ids) expected, e.g. 0,1; other sources are counted as
    /// unknown_source_packets [default: any, up to 256 per input].
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    boards: Option<Vec<u32>>,
    /// TCP: fail the run if no connection is made within this time (e.g. 30s) [default: 10s].
    #[arg(long, value_name = "DURATION")]
    connect_timeout: Option<String>,
    /// Overflow policy of the input rings.
    #[arg(long, value_parser = ["drop", "block"])]
    policy: Option<String>,
    /// scandaq calibration directory.
    #[arg(long, conflicts_with = "petsys_config")]
    calib: Option<PathBuf>,
    /// PETsys config.ini naming the calibration tables.
    #[arg(long)]
    petsys_config: Option<PathBuf>,
    /// The run has no PETsys boards (only OPM-MEG / ultrasound streams): no PET calibration.
    #[arg(long, conflicts_with_all = ["calib", "petsys_config"])]
    no_calib: bool,
    /// Stop after this wall-clock time (e.g. 60s).
    #[arg(long, value_parser = parse_duration_s)]
    duration: Option<f64>,
    /// Stop after this many singles.
    #[arg(long)]
    max_hits: Option<u64>,
    /// Stop after this many bytes of frames accepted.
    #[arg(long)]
    max_bytes: Option<u64>,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Record packets as received into raw-00000.sdq (replayable with `scandaq replay`).
    #[arg(long)]
    raw_archive: bool,
    /// Also write the raw diagnostic columns.
    #[arg(long)]
    raw_columns: bool,
    /// No stats line on stderr.
    #[arg(long)]
    quiet: bool,
    /// Start a new singles file at this size (e.g. 2GB, 512MiB) [default: 4GiB].
    #[arg(long, value_name = "SIZE")]
    rotate_size: Option<String>,
    /// Start a new singles file after this wall-clock time (e.g. 10m).
    #[arg(long, value_name = "DURATION")]
    rotate_every: Option<String>,
    /// Commit interval: every single (and archived packet) is on disk within this time, so a power cut costs at most this much (e.g. 1s, 250ms) [default: 1s].
    #[arg(long, value_name = "DURATION")]
    commit_interval: Option<String>,
    /// Show the operator dashboard (needs a terminal; otherwise the stats line is printed).
    #[arg(long)]
    tui: bool,
    #[command(flatten)]
    coincidences: CoincidenceArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn finish(summary: session::RunSummary, detector_seconds: Option<f64>) -> ExitCode {
    session::print_summary(&summary, detector_seconds);
    match &summary.error {
        Some(e) => {
            let reason = summary
                .manifest
                .failure
                .map_or("failed".to_string(), |f| f.to_string());
            let salvage = if summary
                .manifest
                .files
                .iter()
                .any(|f| f.path.ends_with(".inprogress"))
                || has_inprogress_files(&summary.dir)
            {
                format!(
                    "; files left .inprogress hold more: `scandaq recover {}` salvages them",
                    summary.dir.display()
                )
            } else {
                String::new()
            };
            eprintln!(
                "error ({reason}): {e} (everything committed before it is in {}{salvage})",
                summary.dir.display()
            );
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}

/// True when `dir` still holds files a run did not commit.
fn has_inprogress_files(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".inprogress"))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Demo {
            duration,
            rate,
            seed,
            out,
            raw_columns,
            no_tui,
            commit_interval,
            rotate_size,
            coincidences,
        } => {
            let rotation = scandaq::process::pipeline::Rotation {
                commit_interval_s: commit_interval,
                max_bytes: rotate_size,
                ..Default::default()
            };
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
            let live = demo::DemoLive {
                stats,
                stop,
                markers,
                realtime: false,
            };
            let summary = demo::demo_with(
                config,
                &out,
                true,
                raw_columns,
                coincidences,
                rotation,
                Some(live),
            );
            control.shutdown();
            let summary = summary?;
            let ran_out = summary.manifest.stop_reason != Some(StopReason::StopRequested);
            Ok(finish(summary, ran_out.then_some(duration)))
        }
        Command::Replay {
            file,
            header,
            calib,
            petsys_config,
            no_calib,
            config,
            out,
            no_progress,
            raw_columns,
            rotate_size,
            coincidences,
        } => {
            let rotation = scandaq::process::pipeline::Rotation {
                max_bytes: rotate_size,
                max_seconds: None,
                commit_interval_s: None,
            };
            let coincidences = coincidences.apply(CoincidenceOptions::default())?;
            if petlink_replay::is_petlink(&file, header.as_deref()) {
                let summary = petlink_replay::replay_petlink(&file, header.as_deref(), &out)?;
                petlink_replay::print_summary(&summary);
                return Ok(ExitCode::SUCCESS);
            }
            let calibration = match (calib, petsys_config) {
                (Some(dir), None) => calib_load::load_calibration_dir(&dir)?,
                (None, Some(ini)) => calib_load::load_petsys_config(&ini)?,
                (None, None) if no_calib && is_raw_archive(&file) => {
                    calib_load::LoadedCalibration::none()
                }
                _ => bail!(
                    "replay needs a calibration: --calib DIR (scandaq tables) or --petsys-config config.ini (a PETsys setup); a .sdq archive of OPM-MEG / ultrasound streams only takes --no-calib"
                ),
            };
            if config.is_some() && !is_raw_archive(&file) {
                bail!(
                    "--config only applies to a .sdq raw archive (its [meg] / [ultrasound] stream settings)"
                );
            }
            if is_raw_archive(&file) {
                let (streams, notes) = replay::archive_stream_settings(&file, config.as_deref())?;
                for n in notes {
                    eprintln!("replay: {n}");
                }
                let live = LiveConfig {
                    inputs: vec![InputConfig {
                        spec: InputSpec::Archive(file.clone()),
                        allow: vec![],
                        policy: OverflowPolicy::Block,
                        ring_chunks: 64,
                        ingest: Default::default(),
                    }],
                    out_dir: out,
                    limits: RunLimits::default(),
                    raw_columns,
                    raw_archive: false,
                    stop_at_end_of_stream: false,
                    coincidences,
                    rotation,
                    streams,
                    ..LiveConfig::default()
                };
                let summary = run_live(
                    &live,
                    &calibration,
                    Arc::new(AtomicBool::new(false)),
                    "replay",
                )?;
                return Ok(finish(summary, None));
            }
            let summary = replay::replay(
                &file,
                &calibration,
                &out,
                replay::ReplayOptions {
                    progress: !no_progress,
                    raw_columns,
                    coincidences,
                    rotation,
                },
            )?;
            Ok(finish(summary, None))
        }
        Command::Run(args) => run_command(args),
        Command::Config {
            action: ConfigAction::Check { file },
        } => {
            let v = run_config::read(&file)?.validate()?;
            println!("{}: ok", file.display());
            for i in &v.live.inputs {
                let allow = if i.allow.is_empty() {
                    "any sender".to_string()
                } else {
                    i.allow
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                println!(
                    "  input {}, policy {}, allow {allow}, ring {} chunks",
                    i.spec, i.policy, i.ring_chunks
                );
            }
            match (&v.calib_dir, &v.petsys_config) {
                (Some(d), _) => println!("  calibration dir {}", d.display()),
                (_, Some(p)) => println!("  PETsys config {}", p.display()),
                _ => println!("  no PET calibration (calibration.none = true)"),
            }
            let limits = scandaq::acquire::live::limit_descriptions(&v.live.limits);
            println!(
                "  output {}  limits: {}",
                v.live.out_dir.display(),
                if limits.is_empty() {
                    "none".to_string()
                } else {
                    limits.join(", ")
                }
            );
            if let (Some(ch), Some(p)) = (
                v.live.streams.meg.channels()?,
                &v.live.streams.meg.channel_table,
            ) {
                println!("  MEG channel table {}: {} channels", p.display(), ch.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Top { target, out } => {
            let socket = control::find_socket(target.as_deref(), &run_search_dirs(out))?;
            let exit = Arc::new(AtomicBool::new(false));
            stop_on_signals(&exit)?;
            dashboard::top(&socket, &exit)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ctl {
            action,
            socket,
            out,
        } => {
            let socket = control::find_socket(socket.as_deref(), &run_search_dirs(out))?;
            match action {
                CtlAction::Status => {
                    println!("{}", serde_json::to_string(&control::status(&socket)?)?);
                }
                CtlAction::Stop => {
                    control::request(&socket, &serde_json::json!({"cmd": "stop"}))?;
                    println!("stop requested ({})", socket.display());
                }
                CtlAction::Marker { text } => {
                    let reply = control::request(
                        &socket,
                        &serde_json::json!({"cmd": "marker", "text": text.join(" ")}),
                    )?;
                    println!("{}", reply["marker"]);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            format:
                ExportFormat::Castor {
                    run_dir,
                    out,
                    name,
                    tof_fwhm,
                    no_tof,
                    no_delayed,
                    crystal_depth,
                },
        } => {
            let e = export::export_castor(
                &run_dir,
                &export::CastorOptions {
                    out,
                    name,
                    tof_fwhm_ps: tof_fwhm.map(|t| t as f64),
                    no_tof,
                    no_delayed,
                    crystal_depth_mm: crystal_depth,
                },
            )?;
            export::print_summary(&e);
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            format:
                ExportFormat::Fif {
                    run_dir,
                    out,
                    stream,
                    unaligned,
                    split_size,
                },
        } => {
            let e = scandaq::commands::fif::export_fif_with(
                &run_dir,
                &out,
                &scandaq::commands::fif::FifOptions {
                    stream,
                    unaligned,
                    split_bytes: split_size,
                },
            )?;
            if e.files.len() > 1 {
                println!(
                    "split into {} files: {}",
                    e.files.len(),
                    e.files
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            println!(
                "wrote {}: stream {}, {} channels, {} samples at {:.6} Hz, {}{}",
                e.path.display(),
                e.stream,
                e.channels,
                e.samples,
                e.sfreq,
                if e.aligned {
                    format!(
                        "channels aligned by their delays (largest shift {:.3} samples)",
                        e.max_shift_samples
                    )
                } else {
                    "samples as recorded".to_string()
                },
                if e.gap_samples_filled > 0 {
                    format!(
                        " ({} missing samples filled with zeros)",
                        e.gap_samples_filled
                    )
                } else {
                    String::new()
                }
            );
            Ok(ExitCode::SUCCESS)
        }
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
            scandaq::commands::calibrate::run_cli(kind)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { path } => {
            inspect::inspect(&path)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn is_raw_archive(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == scandaq_decoders::archive::ARCHIVE_MAGIC
}

fn run_command(args: RunArgs) -> Result<ExitCode> {
    let mut file = match &args.config {
        Some(path) => run_config::read(path)?,
        None => RunFile::default(),
    };
    // Flags override the file.
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
    if args.calib.is_some() || args.petsys_config.is_some() || args.no_calib {
        file.calibration.dir = args.calib.clone();
        file.calibration.petsys_config = args.petsys_config.clone();
        file.calibration.none = args.no_calib.then_some(true);
    }
    if let Some(d) = args.duration {
        file.run.duration = Some(format!("{d}s"));
    }
    if args.boards.is_some() {
        file.run.boards = args.boards.clone();
    }
    if args.connect_timeout.is_some() {
        file.run.connect_timeout = args.connect_timeout.clone();
    }
    if args.max_hits.is_some() {
        file.run.max_hits = args.max_hits;
    }
    if args.max_bytes.is_some() {
        file.run.max_bytes = args.max_bytes;
    }
    if let Some(o) = &args.out {
        file.run.out = Some(o.clone());
    }
    if args.raw_archive {
        file.run.raw_archive = Some(true);
    }
    if args.raw_columns {
        file.run.raw_columns = Some(true);
    }
    file.coincidences = args.coincidences.apply(file.coincidences.clone())?;
    if args.rotate_size.is_some() {
        file.run.rotate_size = args.rotate_size.clone();
    }
    if args.rotate_every.is_some() {
        file.run.rotate_every = args.rotate_every.clone();
    }
    if args.commit_interval.is_some() {
        file.run.commit_interval = args.commit_interval.clone();
    }
    let mut v = file.validate()?;
    if args.quiet {
        v.live.stats_every = None;
    }
    let calibration = match (&v.calib_dir, &v.petsys_config) {
        (Some(d), _) => calib_load::load_calibration_dir(d)?,
        (_, Some(p)) => calib_load::load_petsys_config(p)?,
        _ => calib_load::LoadedCalibration::none(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signals(&stop)?;
    if !args.quiet {
        eprintln!(
            "scandaq run: {} input(s), Ctrl-C stops cleanly",
            v.live.inputs.len()
        );
    }
    let stats = Arc::new(LiveStats::default());
    let markers: SharedMarkers = Arc::default();
    let control = ControlServer::start_for_run(ControlContext {
        stats: stats.clone(),
        stop: stop.clone(),
        markers: markers.clone(),
    });
    if args.tui && !dashboard::can_run() {
        eprintln!(
            "scandaq run: --tui needs a terminal on stdin and stdout; printing the stats line instead"
        );
    }
    let summary = if args.tui && dashboard::can_run() {
        v.live.stats_every = None;
        let exit = Arc::new(AtomicBool::new(false));
        stop_on_signals(&exit)?;
        let (live, s, m, st) = (v.live.clone(), stats.clone(), markers.clone(), stop.clone());
        let worker = std::thread::Builder::new()
            .name("acquisition".into())
            .spawn(move || run_live_with_markers(&live, &calibration, st, "run", s, m))?;
        let ui =
            dashboard::run_in_process(stats, stop.clone(), markers, &exit, AppOptions::default());
        stop.store(true, Ordering::Relaxed);
        let summary = worker
            .join()
            .map_err(|_| anyhow!("the acquisition thread panicked"))?;
        if let Err(e) = ui {
            eprintln!("warning: {e:#}");
        }
        summary?
    } else {
        run_live_with_markers(&v.live, &calibration, stop, "run", stats, markers)?
    };
    control.shutdown();
    Ok(finish(summary, None))
}

/// Where `top` and `ctl` look for live runs.
fn run_search_dirs(out: Option<PathBuf>) -> Vec<PathBuf> {
    match out {
        Some(o) => vec![o],
        None => vec![PathBuf::from("runs"), PathBuf::from("scandaq-runs")],
    }
}

/// `scandaq demo` with the dashboard: the simulator paced to wall-clock time, the dashboard
/// on this thread, the acquisition on another, a control socket in the run directory.
fn demo_dashboard(
    config: scandaq_fpga_sim::BenchConfig,
    out: PathBuf,
    raw_columns: bool,
    coincidences: CoincidenceOptions,
    rotation: scandaq::process::pipeline::Rotation,
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
    let window = coincidences
        .energy_window_kev
        .map_or((425.0, 650.0), |[a, b]| (f64::from(a), f64::from(b)));
    let live = demo::DemoLive {
        stats: stats.clone(),
        stop: stop.clone(),
        markers: markers.clone(),
        realtime: true,
    };
    let worker = std::thread::Builder::new()
        .name("demo".into())
        .spawn(move || {
            demo::demo_with(
                config,
                &out,
                false,
                raw_columns,
                coincidences,
                rotation,
                Some(live),
            )
        })?;
    let ui = dashboard::run_in_process(
        stats,
        stop.clone(),
        markers,
        &exit,
        AppOptions {
            energy_window_kev: window,
            attached: false,
        },
    );
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
    Ok(finish(summary, ran_out.then_some(duration)))
}
