//! Command-line flags of the `us` preset (flattened into `fpga-sim`'s arguments) and the
//! preset's entry point from `main`.

use super::{UsConfig, UsSummary, run};
use crate::packet_out::Destination;
use std::path::PathBuf;

/// Flags that only apply to `--preset us`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct UsArgs {
    /// US: frames per second (each frame fires every angle once) [default: 100].
    #[arg(long, value_name = "HZ", help_heading = "US preset")]
    pub frame_rate: Option<f64>,
    /// US: frames to send [default: --duration x --frame-rate].
    #[arg(long, help_heading = "US preset")]
    pub frames: Option<u64>,
    /// US: plane-wave angles in degrees, comma-separated [default: -10,-5,0,5,10].
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        help_heading = "US preset"
    )]
    pub angles: Option<Vec<f64>>,
    /// US: array elements = receive channels [default: 128].
    #[arg(long, help_heading = "US preset")]
    pub elements: Option<u16>,
    /// US: samples per channel per event [default: 2048].
    #[arg(long, help_heading = "US preset")]
    pub samples: Option<u32>,
    /// US: RF sampling rate, Hz, 20e6..50e6 [default: 25e6].
    #[arg(long, value_name = "HZ", help_heading = "US preset")]
    pub rf_sample_rate: Option<f64>,
    /// US: nominal rate of the tx tick counter, Hz [default: 100e6].
    #[arg(long, value_name = "HZ", help_heading = "US preset")]
    pub tick_rate: Option<f64>,
    /// US: board clock rate error, ppm [default: 3].
    #[arg(
        long,
        value_name = "PPM",
        allow_hyphen_values = true,
        help_heading = "US preset"
    )]
    pub clock_ppm: Option<f64>,
    /// US: drift of the clock error, ppm per second [default: 0.2].
    #[arg(
        long,
        value_name = "PPM_PER_S",
        allow_hyphen_values = true,
        help_heading = "US preset"
    )]
    pub clock_drift: Option<f64>,
    /// US: clock-sync record period (e.g. 100ms; a plain number is seconds) [default: 100ms].
    #[arg(long, value_name = "DURATION", value_parser = crate::cli::parse_duration, help_heading = "US preset")]
    pub sync_interval: Option<f64>,
    /// US: probability per chunk of truncating its payload.
    #[arg(long, value_name = "P", help_heading = "US preset")]
    pub truncate_chunks: Option<f64>,
    /// US and OPM: write the packets to this `.sdq` raw archive instead of sending them (its metadata carries the sequence / channel table `scandaq replay` uses).
    #[arg(long, value_name = "FILE", help_heading = "US preset")]
    pub archive: Option<PathBuf>,
}

impl UsArgs {
    /// Flags given, by name (to refuse them with another preset).
    pub fn given(&self) -> Vec<&'static str> {
        [
            ("--frame-rate", self.frame_rate.is_some()),
            ("--frames", self.frames.is_some()),
            ("--angles", self.angles.is_some()),
            ("--elements", self.elements.is_some()),
            ("--samples", self.samples.is_some()),
            ("--rf-sample-rate", self.rf_sample_rate.is_some()),
            ("--tick-rate", self.tick_rate.is_some()),
            ("--clock-ppm", self.clock_ppm.is_some()),
            ("--clock-drift", self.clock_drift.is_some()),
            ("--sync-interval", self.sync_interval.is_some()),
            ("--truncate-chunks", self.truncate_chunks.is_some()),
            ("--archive", self.archive.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(f, _)| *f)
        .collect()
    }
}

pub use crate::preset_args::CommonArgs;

/// Builds the configuration from the flags.
pub fn config(common: &CommonArgs, us: &UsArgs) -> UsConfig {
    let d = UsConfig::default();
    let frame_rate_hz = us.frame_rate.unwrap_or(d.frame_rate_hz);
    UsConfig {
        seed: common.seed,
        frames: us
            .frames
            .unwrap_or_else(|| (common.duration_s * frame_rate_hz).round().max(1.0) as u64),
        frame_rate_hz,
        angles_deg: us.angles.clone().unwrap_or(d.angles_deg),
        n_elements: us.elements.unwrap_or(d.n_elements),
        n_samples: us.samples.unwrap_or(d.n_samples),
        sample_rate_hz: us.rf_sample_rate.map_or(d.sample_rate_hz, |r| {
            r.round().clamp(0.0, u32::MAX as f64) as u32
        }),
        tick_rate_hz: us.tick_rate.unwrap_or(d.tick_rate_hz),
        clock_ppm: us.clock_ppm.unwrap_or(d.clock_ppm),
        clock_drift_ppm_per_s: us.clock_drift.unwrap_or(d.clock_drift_ppm_per_s),
        sync_interval_s: us.sync_interval.unwrap_or(d.sync_interval_s),
        max_packet_bytes: common.max_packet_bytes.unwrap_or(d.max_packet_bytes),
        source_id: common.source_id,
        lose_packets: common.lose_packets.unwrap_or(0.0),
        truncate_chunks: us.truncate_chunks.unwrap_or(0.0),
        // An archive is written as fast as the disk takes it.
        paced: !common.unpaced && us.archive.is_none(),
        prerender: common.prerender,
        out_dir: common.out.clone(),
        ..d
    }
}

/// Runs the preset from the command line; returns the summary and a one-paragraph report.
/// `clock_reset_at`: `--clock-reset-at S` (shared with the opm preset), the board's tick
/// counter restarts from 0 at that simulated time.
pub fn run_cli(
    common: CommonArgs,
    us: &UsArgs,
    clock_reset_at: Option<f64>,
) -> anyhow::Result<(UsSummary, String)> {
    let config = UsConfig {
        clock_reset_at_s: clock_reset_at,
        ..config(&common, us)
    };
    let destination = match (common.udp, common.tcp, &us.archive) {
        (Some(target), None, None) => Destination::Udp { target },
        (None, Some(listen), None) => Destination::Tcp { listen },
        (None, None, Some(path)) => Destination::Archive {
            path: path.clone(),
            metadata_json: super::archive_metadata(&config),
        },
        (None, None, None) => anyhow::bail!(
            "--preset us needs a destination: --udp HOST:PORT, --tcp HOST:PORT or --archive FILE.sdq"
        ),
        _ => anyhow::bail!("give only one of --udp, --tcp and --archive"),
    };
    let summary = run(&config, destination)?;
    let report = format!(
        "fpga-sim preset us seed {}: {} frames x {} transmits = {} RF events ({} channels x {} \
         samples, {:.1} MB of RF) in {} chunks and {} sync records over {:.3} s simulated, \
         {:.3} s wall ({:.0} MB/s of RF); faults: {} packets lost, {} chunks truncated, {} \
         events incomplete, {} clock resets",
        summary.seed,
        summary.frames,
        config.angles_deg.len(),
        summary.events,
        config.n_elements,
        config.n_samples,
        summary.rf_bytes as f64 / 1e6,
        summary.chunks,
        summary.sync_records,
        summary.sim_seconds,
        summary.wall_seconds,
        summary.rf_mb_per_s,
        summary.faults.lost_packets,
        summary.faults.truncated_chunks,
        summary.faults.incomplete_events,
        summary.faults.clock_resets,
    );
    Ok((summary, report))
}
