//! `fpga-sim`: simulates a PET front end (preset `bench`) and writes its PETsys raw files,
//! ground truth, true calibration and summary to a directory.

use anyhow::{Context, Result};
use clap::Parser;
use scandaq_fpga_sim::cli::{parse_duration, parse_preset, parse_rate, summary_paragraph};
use scandaq_fpga_sim::files::bench_file_list;
use scandaq_fpga_sim::{BenchConfig, write_bench_files};
use std::path::PathBuf;
use std::process::ExitCode;

/// Simulate a PET front end and write PETsys .rawf/.idxf, truth.parquet, calib/ and summary.json.
#[derive(Parser, Debug)]
#[command(name = "fpga-sim", version, about, long_about = None)]
struct Args {
    /// Geometry preset (available: bench).
    #[arg(long, default_value = "bench", value_parser = parse_preset)]
    preset: String,
    /// Detector time to simulate: 5s, 500ms, 2m, or seconds (10).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    duration: f64,
    /// Target total hit rate: 1M, 250k, 5e5 (hits per second).
    #[arg(long, default_value = "1M", value_parser = parse_rate)]
    rate: f64,
    /// Random seed (same seed and settings give identical files).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory (created if its parent exists).
    #[arg(long)]
    out: PathBuf,
    /// Start the frameID counter so its 36-bit wrap falls mid-run.
    #[arg(long, conflicts_with = "start_frame")]
    near_wrap: bool,
    /// Raw 36-bit frameID of the first frame (default 0).
    #[arg(long)]
    start_frame: Option<u64>,
}

fn run(args: Args) -> Result<()> {
    // Only the bench preset exists; parse_preset has already rejected anything else.
    if args.preset != "bench" {
        anyhow::bail!(
            "preset {:?} is not implemented; available presets: bench",
            args.preset
        );
    }
    let mut config = BenchConfig {
        seed: args.seed,
        duration_s: args.duration,
        hit_rate_hz: args.rate,
        start_frame_id: args.start_frame.unwrap_or(0),
        ..BenchConfig::default()
    };
    if args.near_wrap {
        config = config.near_wrap();
    }
    let summary = write_bench_files(config, &args.out)
        .with_context(|| format!("simulating into {}", args.out.display()))?;
    println!(
        "{}",
        summary_paragraph(
            &summary,
            &args.out.display().to_string(),
            &bench_file_list()
        )
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fpga-sim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
