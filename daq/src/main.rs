//! The `scandaq` command line: demo, replay, inspect.

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use scandaq::{calib_load, demo, inspect, replay, session};
use scandaq_core::units::{parse_duration_s, parse_rate_hz};
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
        /// Do not open the dashboard (the dashboard is not built yet; the demo always prints a summary).
        #[arg(long)]
        no_tui: bool,
    },
    /// Reprocess a PETsys .rawf file into calibrated singles in Parquet.
    Replay {
        /// The .rawf file (its .idxf is looked for beside it).
        file: PathBuf,
        /// scandaq calibration directory (tdc_calibration.tsv, energy_calibration.tsv, skew.tsv, map_channel.tsv).
        #[arg(long, conflicts_with = "petsys_config")]
        calib: Option<PathBuf>,
        /// A PETsys config.ini naming the setup's calibration tables.
        #[arg(long)]
        petsys_config: Option<PathBuf>,
        /// Output directory; each replay makes a new run-NNNNNN inside it.
        #[arg(long)]
        out: PathBuf,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Also write the raw diagnostic columns (frame, coarse/fine counters, TAC).
        #[arg(long)]
        raw_columns: bool,
    },
    /// Summarise a .rawf, a scandaq Parquet file, or a run directory.
    Inspect {
        /// File or run directory.
        path: PathBuf,
    },
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
            eprintln!(
                "error: {e} (everything committed before it is in {})",
                summary.dir.display()
            );
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Demo {
            duration,
            rate,
            seed,
            out,
            raw_columns,
            no_tui: _,
        } => {
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
            let summary = demo::demo(config, &out, true, raw_columns)?;
            Ok(finish(summary, Some(duration)))
        }
        Command::Replay {
            file,
            calib,
            petsys_config,
            out,
            no_progress,
            raw_columns,
        } => {
            let calibration = match (calib, petsys_config) {
                (Some(dir), None) => calib_load::load_calibration_dir(&dir)?,
                (None, Some(ini)) => calib_load::load_petsys_config(&ini)?,
                _ => bail!(
                    "replay needs a calibration: --calib DIR (scandaq tables) or --petsys-config config.ini (a PETsys setup)"
                ),
            };
            let summary = replay::replay(
                &file,
                &calibration,
                &out,
                replay::ReplayOptions {
                    progress: !no_progress,
                    raw_columns,
                },
            )?;
            Ok(finish(summary, None))
        }
        Command::Inspect { path } => {
            inspect::inspect(&path)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
