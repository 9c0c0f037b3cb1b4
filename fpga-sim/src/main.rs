//! `fpga-sim`: simulates a PET front end (preset `bench`) and writes its PETsys raw files,
//! ground truth, true calibration and summary to a directory, or streams it live over UDP or
//! TCP with fault injection.

use anyhow::{Context, Result, bail};
use clap::Parser;
use scandaq_fpga_sim::cli::{parse_duration, parse_preset, parse_rate, summary_paragraph};
use scandaq_fpga_sim::files::bench_file_list;
use scandaq_fpga_sim::stream::{Faults, StreamConfig, Transport, stream};
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
    /// Output directory (created if its parent exists). Required for files; optional when
    /// streaming (then calib/, truth.parquet and summary.json go there).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stream to a receiver listening for UDP datagrams at HOST:PORT.
    #[arg(long, conflicts_with = "tcp")]
    udp: Option<std::net::SocketAddr>,
    /// Serve the stream over TCP on HOST:PORT (scandaq connects).
    #[arg(long)]
    tcp: Option<std::net::SocketAddr>,
    /// Front-end boards (streams): 1, or 2 (one per module).
    #[arg(long, default_value_t = 1)]
    boards: u32,
    /// Probability per packet of losing it.
    #[arg(long, default_value_t = 0.0)]
    lose_packets: f64,
    /// Probability per packet of sending it twice.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Probability per packet of sending it after the next one.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// Probability per packet of flipping a payload byte after the CRC.
    #[arg(long, default_value_t = 0.0)]
    corrupt: f64,
    /// TCP: break the connection after this many packets (then wait for a reconnect).
    #[arg(long)]
    disconnect_after: Option<u64>,
    /// Largest packet in bytes, header included.
    #[arg(long, default_value_t = 8192)]
    max_packet_bytes: usize,
    /// Send as fast as possible instead of at the configured rate.
    #[arg(long)]
    unpaced: bool,
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
    let faults = Faults {
        lose_packets: args.lose_packets,
        duplicate: args.duplicate,
        reorder: args.reorder,
        corrupt: args.corrupt,
        disconnect_after: args.disconnect_after,
    };
    let transport = match (args.udp, args.tcp) {
        (Some(target), _) => Some(Transport::Udp { target }),
        (_, Some(listen)) => Some(Transport::Tcp { listen }),
        _ => None,
    };
    let Some(transport) = transport else {
        if faults != Faults::default() || args.boards != 1 {
            bail!(
                "--boards and fault injection need a stream: add --udp HOST:PORT or --tcp HOST:PORT"
            );
        }
        let Some(out) = args.out else {
            bail!("say where to write the files with --out DIR, or stream with --udp/--tcp");
        };
        let summary = write_bench_files(config, &out)
            .with_context(|| format!("simulating into {}", out.display()))?;
        println!(
            "{}",
            summary_paragraph(&summary, &out.display().to_string(), &bench_file_list())
        );
        return Ok(());
    };
    let summary = stream(StreamConfig {
        bench: config,
        boards: args.boards,
        transport,
        faults,
        max_packet_bytes: args.max_packet_bytes,
        paced: !args.unpaced,
        out_dir: args.out.clone(),
    })
    .context("streaming")?;
    println!(
        "fpga-sim streamed {} hits in {} packets on {} board(s) in {:.2} s ({:.2} M hits/s)",
        summary.hits_sent,
        summary.packets_sent,
        summary.boards.len(),
        summary.wall_seconds,
        summary.hits_sent as f64 / summary.wall_seconds.max(1e-9) / 1e6
    );
    let f = &summary.faults;
    println!(
        "  faults: lost {} packets ({} hits), corrupted {} ({} hits), duplicated {}, reordered {}, disconnects {} ({} packets, {} hits)",
        f.lost_packets,
        f.lost_hits,
        f.corrupted_packets,
        f.corrupted_hits,
        f.duplicated_packets,
        f.reordered_packets,
        f.disconnects,
        f.disconnect_lost_packets,
        f.disconnect_lost_hits
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
