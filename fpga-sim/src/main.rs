//! `fpga-sim`: simulates a front end with ground truth. PET presets `bench` and `ring` write
//! PETsys raw files, truth, true calibration and a summary to a directory, or (bench) stream
//! live over UDP or TCP with fault injection; `opm` (OPM-MEG digitiser) and `us` (ultrasound
//! receive board) stream transport packets or write a raw archive.

use anyhow::{Context, Result, bail};
use clap::Parser;
use scandaq_fpga_sim::cli::{
    merge_sources, parse_activity, parse_duration, parse_packet_bytes, parse_preset,
    parse_probability, parse_rate, parse_source, ring_summary_paragraph, stream_report,
    summary_paragraph,
};
use scandaq_fpga_sim::files::{CALIB_DIR, CALIB_FILES, SUMMARY_FILE, TRUTH_FILE, bench_file_list};
use scandaq_fpga_sim::packet_out::TCP_ACCEPT_WAIT;
use scandaq_fpga_sim::ring::{Phantom, RingConfig, Source, ring_file_list, write_ring_files};
use scandaq_fpga_sim::stream::DEFAULT_MAX_PACKET_BYTES;
use scandaq_fpga_sim::{BenchConfig, write_bench_files};
use scandaq_fpga_sim::{Faults, StreamConfig, Transport, stream};
use std::path::PathBuf;
use std::process::ExitCode;

/// Simulate a front end (PET bench or ring, OPM-MEG digitiser, ultrasound board) with ground truth.
#[derive(Parser, Debug)]
#[command(name = "fpga-sim", version, about, long_about = None)]
struct Args {
    /// Preset: bench (two PET modules), ring (full PET ring), opm (OPM-MEG digitiser), us (ultrasound receive board).
    #[arg(long, default_value = "bench", value_parser = parse_preset)]
    preset: String,
    /// Detector time to simulate: 5s, 500ms, 2m, or seconds (10).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    duration: f64,
    /// Target total hit rate: 1M, 250k, 5e5 (hits per second) [default: 1M for bench, 3M for
    /// ring].
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Random seed (same seed and settings give identical files).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory (created if its parent exists). Required for files; optional when
    /// streaming (then calib/, truth.parquet and summary.json go there).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stream to a receiver listening for UDP datagrams at HOST:PORT.
    #[arg(long, conflicts_with = "tcp", value_name = "HOST:PORT")]
    udp: Option<std::net::SocketAddr>,
    /// Serve the stream over TCP: listen on HOST:PORT and wait for scandaq to connect.
    #[arg(long, value_name = "HOST:PORT")]
    tcp: Option<std::net::SocketAddr>,
    /// Front-end boards (streams): 1 (source 0 carries everything) or 2 (source b = chip b).
    #[arg(long, default_value_t = 1)]
    boards: u32,
    /// Source id of the first board (board b sends as source id BASE + b); lets several
    /// simulator processes feed one acquisition as distinct boards.
    #[arg(long, default_value_t = 0, value_name = "BASE")]
    source_id_base: u32,
    /// Probability per packet of losing it (not sent).
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    lose_packets: Option<f64>,
    /// Probability per packet of sending it twice.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    duplicate: Option<f64>,
    /// Probability per packet of sending it after the next one.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    reorder: Option<f64>,
    /// Probability per packet of flipping a payload byte after the CRC.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    corrupt: Option<f64>,
    /// TCP: cut the connection once, after N packets (half a packet is written), then wait
    /// for scandaq to reconnect.
    #[arg(long, value_name = "N")]
    disconnect_after: Option<u64>,
    /// Restart every board once, this far into the run in detector time (e.g. 0.5s): sequence
    /// numbers and frame counter from 0 again, the first packet flagged start-of-stream.
    #[arg(long, value_name = "TIME", value_parser = parse_duration)]
    restart_at: Option<f64>,
    /// Largest packet in bytes, 32-byte header included [default: 8192].
    #[arg(long, value_name = "BYTES", value_parser = parse_packet_bytes)]
    max_packet_bytes: Option<usize>,
    /// Send as fast as possible instead of in real time at --rate.
    #[arg(long)]
    unpaced: bool,
    /// UDP: generate the whole run into memory first (bench: about 8.5 bytes per hit; us: the
    /// run's RF bytes), then send it paced (--rate; us: frame times), so the simulator's CPU
    /// does not compete with the receiver under test.
    #[arg(long, requires = "udp")]
    prerender: bool,
    /// Start the frameID counter so its 36-bit wrap falls mid-run.
    #[arg(long, conflicts_with = "start_frame")]
    near_wrap: bool,
    /// Raw 36-bit frameID of the first frame (default 0).
    #[arg(long)]
    start_frame: Option<u64>,
    /// Ring: total source activity in Bq (50M, 5e7, 50MBq); overrides --rate.
    #[arg(long, value_parser = parse_activity, help_heading = "Ring preset")]
    activity: Option<f64>,
    /// Ring: a source, point:X,Y,Z | line:X,Y,Z:X,Y,Z | cylinder:R,L[:X,Y,Z] (mm); repeat for
    /// several point sources [default: point:0,0,0].
    #[arg(long, value_parser = parse_source, help_heading = "Ring preset")]
    source: Vec<Source>,
    /// Ring: put a water cylinder phantom (object scatter) around the axis.
    #[arg(long, help_heading = "Ring preset")]
    phantom: bool,
    /// Ring: phantom radius, mm [default: 100].
    #[arg(long, requires = "phantom", help_heading = "Ring preset")]
    phantom_radius: Option<f64>,
    /// Ring: phantom axial length, mm [default: 200].
    #[arg(long, requires = "phantom", help_heading = "Ring preset")]
    phantom_length: Option<f64>,
    /// Ring: radius of the module front faces, mm [default: 400].
    #[arg(long, help_heading = "Ring preset")]
    ring_radius: Option<f64>,
    /// Ring: number of 64-channel modules around the ring [default: 32].
    #[arg(long, help_heading = "Ring preset")]
    modules: Option<usize>,
    /// Ring: coincidence time resolution, FWHM (e.g. 200ps) [default: 200ps].
    #[arg(long, value_name = "DURATION", value_parser = scandaq_core::units::parse_time_ps,
          allow_hyphen_values = true, help_heading = "Ring preset")]
    ctr: Option<i64>,
    /// Old spelling of --ctr, in ps (`--ctr-ps 200`).
    #[arg(long, hide = true, conflicts_with = "ctr", value_parser = scandaq_core::units::parse_legacy_ps)]
    ctr_ps: Option<i64>,
    /// Ring: photon pair acollinearity, degrees FWHM [default: 0.5].
    #[arg(long, help_heading = "Ring preset")]
    acollinearity: Option<f64>,
    /// Ring: mean positron range, mm [default: 0].
    #[arg(long, help_heading = "Ring preset")]
    positron_range: Option<f64>,
    /// Ring: simulate only photon axes with |cos(polar angle)| <= this (1 = all directions;
    /// default automatic, see docs/physics.md "Ring preset: axial acceptance").
    #[arg(long, value_name = "COS", help_heading = "Ring preset")]
    axial_acceptance: Option<f64>,
    /// Ring: probability that a photopeak photon shares its energy with neighbouring crystals
    /// [default: 0.3].
    #[arg(long, help_heading = "Ring preset")]
    inter_crystal: Option<f64>,
    #[command(flatten)]
    opm: scandaq_fpga_sim::opm::cli::OpmArgs,
    #[command(flatten)]
    us: scandaq_fpga_sim::us::cli::UsArgs,
}

fn ring_options_given(args: &Args) -> Vec<&'static str> {
    [
        ("--activity", args.activity.is_some()),
        ("--source", !args.source.is_empty()),
        ("--phantom", args.phantom),
        ("--ring-radius", args.ring_radius.is_some()),
        ("--modules", args.modules.is_some()),
        ("--ctr", args.ctr.is_some() || args.ctr_ps.is_some()),
        ("--acollinearity", args.acollinearity.is_some()),
        ("--positron-range", args.positron_range.is_some()),
        ("--inter-crystal", args.inter_crystal.is_some()),
        ("--axial-acceptance", args.axial_acceptance.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(f, _)| *f)
    .collect()
}

fn run_ring(args: Args) -> Result<()> {
    if args.udp.is_some() || args.tcp.is_some() {
        bail!(
            "streaming (--udp/--tcp) is only implemented for the bench preset; write files with --out DIR"
        );
    }
    let d = RingConfig::default();
    let mut config = RingConfig {
        seed: args.seed,
        duration_s: args.duration,
        hit_rate_hz: args.rate.unwrap_or(d.hit_rate_hz),
        activity_bq: args.activity,
        start_frame_id: args.start_frame.unwrap_or(0),
        modules: args.modules.unwrap_or(d.modules),
        ring_radius_mm: args.ring_radius.unwrap_or(d.ring_radius_mm),
        source: merge_sources(&args.source).map_err(anyhow::Error::msg)?,
        phantom: args.phantom.then(|| {
            let p = Phantom::default();
            Phantom {
                radius_mm: args.phantom_radius.unwrap_or(p.radius_mm),
                length_mm: args.phantom_length.unwrap_or(p.length_mm),
                ..p
            }
        }),
        ctr_fwhm_ps: args
            .ctr
            .or(args.ctr_ps)
            .map_or(d.ctr_fwhm_ps, |ps| ps as f64),
        acollinearity_fwhm_deg: args.acollinearity.unwrap_or(d.acollinearity_fwhm_deg),
        positron_range_mm: args.positron_range.unwrap_or(d.positron_range_mm),
        inter_crystal_fraction: args.inter_crystal.unwrap_or(d.inter_crystal_fraction),
        axial_acceptance_cos: args.axial_acceptance,
        ..d
    };
    if args.near_wrap {
        config = config.near_wrap();
    }
    let Some(out) = args.out else {
        bail!("say where to write the files with --out DIR");
    };
    let summary = write_ring_files(config, &out)
        .with_context(|| format!("simulating into {}", out.display()))?;
    println!(
        "{}",
        ring_summary_paragraph(&summary, &out.display().to_string(), &ring_file_list())
    );
    Ok(())
}

fn run_opm(args: Args) -> Result<()> {
    let ring_only = ring_options_given(&args);
    if !ring_only.is_empty() {
        bail!("{} only apply to --preset ring", ring_only.join(", "));
    }
    let bench_only: Vec<&str> = [
        ("--rate", args.rate.is_some()),
        ("--duplicate", args.duplicate.is_some()),
        ("--reorder", args.reorder.is_some()),
        ("--corrupt", args.corrupt.is_some()),
        ("--disconnect-after", args.disconnect_after.is_some()),
        ("--boards", args.boards != 1),
        ("--prerender", args.prerender),
        ("--near-wrap", args.near_wrap),
        ("--start-frame", args.start_frame.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(f, _)| *f)
    .collect();
    if !bench_only.is_empty() {
        bail!(
            "{} do not apply to --preset opm (its counter starts near its wrap; faults: --lose-packets, --truncate-blocks, --counter-jump-at, --clock-reset-at)",
            bench_only.join(", ")
        );
    }
    let common = common_args(&args);
    let (_, report) =
        scandaq_fpga_sim::opm::cli::run(common, &args.opm, args.us.archive.as_deref())?;
    println!("{report}");
    Ok(())
}

/// The flags the stream presets (opm, us) share.
fn common_args(args: &Args) -> scandaq_fpga_sim::preset_args::CommonArgs {
    scandaq_fpga_sim::preset_args::CommonArgs {
        duration_s: args.duration,
        seed: args.seed,
        out: args.out.clone(),
        udp: args.udp,
        tcp: args.tcp,
        source_id: args.source_id_base,
        lose_packets: args.lose_packets,
        max_packet_bytes: args.max_packet_bytes,
        unpaced: args.unpaced,
        prerender: args.prerender,
    }
}

fn run_us(args: Args) -> Result<()> {
    let ring_only = ring_options_given(&args);
    // --clock-reset-at S also serves the us preset.
    let opm_only: Vec<&str> = args
        .opm
        .given()
        .into_iter()
        .filter(|f| *f != "--clock-reset-at")
        .collect();
    if !ring_only.is_empty() || !opm_only.is_empty() {
        bail!(
            "{} do not apply to --preset us",
            [ring_only, opm_only].concat().join(", ")
        );
    }
    let common = common_args(&args);
    let (_, report) =
        scandaq_fpga_sim::us::cli::run_cli(common, &args.us, args.opm.clock_reset_at)?;
    println!("{report}");
    Ok(())
}

fn run(args: Args) -> Result<()> {
    if args.preset == "us" {
        return run_us(args);
    }
    // --archive FILE.sdq also serves the opm preset.
    let us_only: Vec<&str> = args
        .us
        .given()
        .into_iter()
        .filter(|f| !(args.preset == "opm" && *f == "--archive"))
        .collect();
    if !us_only.is_empty() {
        bail!("{} only apply to --preset us", us_only.join(", "));
    }
    if args.preset == "opm" {
        return run_opm(args);
    }
    let opm_only = args.opm.given();
    if !opm_only.is_empty() {
        bail!("{} only apply to --preset opm", opm_only.join(", "));
    }
    if args.preset == "ring" {
        return run_ring(args);
    }
    run_bench(args)
}

/// The bench preset: files, or a stream when --udp or --tcp is given.
fn run_bench(args: Args) -> Result<()> {
    // parse_preset has already rejected anything but bench and ring.
    let ring_only = ring_options_given(&args);
    if !ring_only.is_empty() {
        bail!("{} only apply to --preset ring", ring_only.join(", "));
    }
    let mut config = BenchConfig {
        seed: args.seed,
        duration_s: args.duration,
        hit_rate_hz: args.rate.unwrap_or(BenchConfig::default().hit_rate_hz),
        start_frame_id: args.start_frame.unwrap_or(0),
        ..BenchConfig::default()
    };
    if args.near_wrap {
        config = config.near_wrap();
    }
    let transport = match (args.udp, args.tcp) {
        (Some(target), _) => Transport::Udp { target },
        (_, Some(listen)) => Transport::Tcp { listen },
        _ => return write_bench(args, config),
    };
    stream_bench(args, config, transport)
}

/// The bench to files (no stream options allowed).
fn write_bench(args: Args, config: BenchConfig) -> Result<()> {
    let stream_flags = [
        ("--lose-packets", args.lose_packets.is_some()),
        ("--duplicate", args.duplicate.is_some()),
        ("--reorder", args.reorder.is_some()),
        ("--corrupt", args.corrupt.is_some()),
        ("--disconnect-after", args.disconnect_after.is_some()),
        ("--restart-at", args.restart_at.is_some()),
        ("--boards", args.boards != 1),
        ("--max-packet-bytes", args.max_packet_bytes.is_some()),
        ("--unpaced", args.unpaced),
    ];
    let given: Vec<&str> = stream_flags
        .iter()
        .filter(|(_, set)| *set)
        .map(|(f, _)| *f)
        .collect();
    if !given.is_empty() {
        bail!(
            "stream options ({}) need --udp HOST:PORT or --tcp HOST:PORT (faults need a stream); \
             drop them to write files",
            given.join(", ")
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
    Ok(())
}

/// The bench streamed live over `transport`, faults injected.
fn stream_bench(args: Args, config: BenchConfig, transport: Transport) -> Result<()> {
    if let (Transport::Udp { .. }, Some(_)) = (&transport, args.disconnect_after) {
        bail!("--disconnect-after needs --tcp: a UDP stream has no connection to break");
    }
    if !(1..=2).contains(&args.boards) {
        bail!(
            "--boards {}: the bench has 2 modules (chips 0 and 1); use --boards 1 (everything \
             on source 0) or --boards 2 (chip b on source b)",
            args.boards
        );
    }
    if let Transport::Tcp { listen } = &transport {
        eprintln!(
            "fpga-sim: serving TCP on {listen}; waiting up to {} s for scandaq to connect",
            TCP_ACCEPT_WAIT.as_secs()
        );
    }
    let faults = Faults {
        lose_packets: args.lose_packets.unwrap_or(0.0),
        duplicate: args.duplicate.unwrap_or(0.0),
        reorder: args.reorder.unwrap_or(0.0),
        corrupt: args.corrupt.unwrap_or(0.0),
        disconnect_after: args.disconnect_after,
        restart_at_s: args.restart_at,
    };
    let rate = config.hit_rate_hz;
    let out = args.out.clone();
    let summary = stream(StreamConfig {
        bench: config,
        boards: args.boards,
        source_id_base: args.source_id_base,
        transport: transport.clone(),
        faults,
        max_packet_bytes: args.max_packet_bytes.unwrap_or(DEFAULT_MAX_PACKET_BYTES),
        paced: !args.unpaced,
        out_dir: out.clone(),
        prerender: args.prerender,
    })
    .context("streaming")?;
    let files: Vec<String> = match &out {
        Some(_) => [TRUTH_FILE, SUMMARY_FILE]
            .iter()
            .map(|f| f.to_string())
            .chain(CALIB_FILES.iter().map(|f| format!("{CALIB_DIR}/{f}")))
            .collect(),
        None => Vec::new(),
    };
    let dir = out.map(|d| d.display().to_string()).unwrap_or_default();
    println!("{}", summary_paragraph(&summary.sim, &dir, &files));
    println!("{}", stream_report(&summary, &transport, rate));
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
