//! Command-line flags of the opm preset (flattened into `fpga-sim`'s arguments) and the
//! preset's entry point from `main`.

use super::{DriftingClock, OpmConfig, OpmFaults, OpmSummary, run_opm};
use crate::packet_out::Destination;

/// Flags that only apply to `--preset opm`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OpmArgs {
    /// OPM: nominal sampling rate, Hz (non-integer allowed) [default: 1200.5].
    #[arg(long, value_name = "HZ", help_heading = "OPM preset")]
    pub sample_rate: Option<f64>,
    /// OPM: triaxial sensors (3 channels each, plus a trigger channel) [default: 64].
    #[arg(long, help_heading = "OPM preset")]
    pub sensors: Option<usize>,
    /// OPM: samples per block [default: as many as fit --max-packet-bytes].
    #[arg(long, help_heading = "OPM preset")]
    pub samples_per_block: Option<usize>,
    /// OPM: mean board-clock rate offset, ppm [default: 3]; a slow 1.5 ppm swing is added.
    #[arg(
        long,
        value_name = "PPM",
        help_heading = "OPM preset",
        allow_hyphen_values = true
    )]
    pub drift_ppm: Option<f64>,
    /// OPM: send at this multiple of real time (e.g. 50 sends 10 min in 12 s) [default: 1];
    /// --unpaced sends as fast as possible.
    #[arg(long, value_name = "X", help_heading = "OPM preset")]
    pub speed: Option<f64>,
    /// OPM: probability per block of truncating its payload.
    #[arg(long, value_name = "P", help_heading = "OPM preset")]
    pub truncate_blocks: Option<f64>,
    /// OPM: make the sample counter jump (skip 5,000,000 counts) at this simulated time (e.g.
    /// 30s, 500ms; a plain number is seconds).
    #[arg(long, value_name = "TIME", value_parser = crate::cli::parse_duration, help_heading = "OPM preset")]
    pub counter_jump_at: Option<f64>,
    /// OPM and US: reset the board clock (its counter restarts at 0) at this simulated time
    /// (e.g. 30s; a plain number is seconds).
    #[arg(long, value_name = "TIME", value_parser = crate::cli::parse_duration, help_heading = "OPM preset")]
    pub clock_reset_at: Option<f64>,
    /// OPM: mains frequency, Hz [default: 50].
    #[arg(long, value_name = "HZ", help_heading = "OPM preset")]
    pub mains_hz: Option<f64>,
    /// OPM: dead channels (0-based MEG channel indices, comma-separated): they send a
    /// constant.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        help_heading = "OPM preset"
    )]
    pub flat_channels: Vec<usize>,
}

impl OpmArgs {
    /// Flags given, by name (to refuse them with another preset).
    pub fn given(&self) -> Vec<&'static str> {
        [
            ("--sample-rate", self.sample_rate.is_some()),
            ("--sensors", self.sensors.is_some()),
            ("--samples-per-block", self.samples_per_block.is_some()),
            ("--drift-ppm", self.drift_ppm.is_some()),
            ("--speed", self.speed.is_some()),
            ("--truncate-blocks", self.truncate_blocks.is_some()),
            ("--counter-jump-at", self.counter_jump_at.is_some()),
            ("--clock-reset-at", self.clock_reset_at.is_some()),
            ("--mains-hz", self.mains_hz.is_some()),
            ("--flat-channels", !self.flat_channels.is_empty()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(f, _)| *f)
        .collect()
    }
}

pub use crate::preset_args::CommonArgs;

/// Runs the preset; returns the summary and a one-paragraph report.
/// `archive`: write the packets to this `.sdq` raw archive (with the channel table in its
/// metadata) instead of streaming them.
pub fn run(
    common: CommonArgs,
    args: &OpmArgs,
    archive: Option<&std::path::Path>,
) -> anyhow::Result<(OpmSummary, String)> {
    let d = OpmConfig::default();
    let f0 = args.sample_rate.unwrap_or(d.clock.f0_hz);
    let config = OpmConfig {
        seed: common.seed,
        duration_s: common.duration_s,
        clock: DriftingClock {
            f0_hz: f0,
            ppm: args.drift_ppm.unwrap_or(d.clock.ppm),
            ..d.clock
        },
        sensors: args.sensors.unwrap_or(d.sensors),
        max_packet_bytes: common.max_packet_bytes.unwrap_or(d.max_packet_bytes),
        samples_per_block: args.samples_per_block,
        source_id: common.source_id,
        start_counter: u32::MAX - (20.0 * f0).min(1e9) as u32,
        faults: OpmFaults {
            lose_packets: common.lose_packets.unwrap_or(0.0),
            truncate_blocks: args.truncate_blocks.unwrap_or(0.0),
            counter_jump_at_s: args.counter_jump_at,
            clock_reset_at_s: args.clock_reset_at,
        },
        mains_hz: args.mains_hz.unwrap_or(d.mains_hz),
        flat_channels: args.flat_channels.clone(),
        ..d
    };
    if let Some(s) = args.speed
        && !(s.is_finite() && s > 0.0)
    {
        anyhow::bail!("--speed {s}: give a positive multiple of real time (e.g. 50)");
    }
    // An archive is written as fast as the disk takes it.
    let speed = if common.unpaced || (archive.is_some() && args.speed.is_none()) {
        None
    } else {
        Some(args.speed.unwrap_or(1.0))
    };
    let (destination, to) = match (common.udp, common.tcp, archive) {
        (Some(target), None, None) => (Destination::Udp { target }, format!("UDP to {target}")),
        (None, Some(listen), None) => {
            eprintln!("fpga-sim: serving TCP on {listen}; waiting for scandaq to connect");
            (Destination::Tcp { listen }, format!("TCP on {listen}"))
        }
        (None, None, Some(path)) => (
            Destination::Archive {
                path: path.to_path_buf(),
                metadata_json: super::archive_metadata(&config),
            },
            format!("into the raw archive {}", path.display()),
        ),
        (None, None, None) => {
            anyhow::bail!(
                "the opm preset streams: give --udp HOST:PORT, --tcp HOST:PORT or --archive FILE.sdq (and --out DIR for the channel table and truth)"
            )
        }
        _ => anyhow::bail!("give only one of --udp, --tcp and --archive"),
    };
    let summary = run_opm(&config, destination, speed, common.out.as_deref())?;
    let f = &summary.faults;
    let report = format!(
        "fpga-sim opm: {} blocks ({} samples x {} channels, {} per block) and {} clock-sync records sent {to}; \
         {} triggers; faults: {} blocks lost ({} samples), {} truncated, {} counter jumps, {} clock resets{}",
        summary.blocks,
        summary.samples,
        summary.n_channels,
        summary.samples_per_block,
        summary.sync_records,
        summary.triggers,
        f.lost_blocks,
        f.lost_samples,
        f.truncated_blocks,
        f.counter_jumps,
        f.clock_resets,
        match &common.out {
            Some(d) => format!(
                "; wrote {}/{{{}, {}, {}, {}}}",
                d.display(),
                super::CHANNELS_FILE,
                super::TRUTH_BLOCKS_FILE,
                super::TRUTH_TRIGGERS_FILE,
                super::SUMMARY_FILE
            ),
            None => String::new(),
        }
    );
    Ok((summary, report))
}
