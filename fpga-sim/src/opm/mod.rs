//! The `opm` preset: an OPM-MEG digitiser (docs/physics.md §5, docs/meg.md) sending sample blocks
//! (payload format 3) and clock-sync control records through [`crate::packet_out`].
//!
//! The board samples at a nominal, non-integer rate (default 1200.5 Hz) from a clock that
//! drifts a few ppm, slowly varying ([`DriftingClock`]); its 32-bit sample counter starts near
//! its wrap. At every reference-clock second the board latches its counter (with the sub-sample
//! fraction) and sends a clock-sync record, after the block holding that instant. Signals come
//! from [`signal`]; trigger pulses happen on the reference timeline and are seen by the trigger
//! channel at the first sample at or after them.
//!
//! Faults: lost packets (the emitter's seeded loss), truncated blocks, a sample-counter jump
//! (the counter skips [`COUNTER_JUMP`] counts while sampling continues) and a clock reset (the
//! counter restarts from 0).
//!
//! With an output directory the run leaves the channel table (`opm_channels.tsv`, the file
//! the `[meg] channel_table` setting names), the truth (`opm_truth_blocks.tsv`: true reference
//! time of every block's first sample, `opm_truth_triggers.tsv`) and `summary.json`.

pub mod cli;
pub mod signal;

use crate::config::SimError;
use crate::packet_out::faults::Faults;
use crate::packet_out::{Destination, PacketOut, PacketOutOptions, PacketOutSummary};
use crate::rng::Rng;
use scandaq_decoders::control::{ClockSync, encode_clock_sync};
use scandaq_decoders::meg::{
    BlockHeader, FLAG_TRIGGER_CHANNEL, encode_block_into, format_channel_table,
};
use scandaq_decoders::transport::{HEADER_LEN, payload_format};
use serde::{Deserialize, Serialize};
use signal::Trigger;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Counts the sample counter skips at a counter-jump fault.
pub const COUNTER_JUMP: i64 = 5_000_000;
/// Channel table file name.
pub const CHANNELS_FILE: &str = "opm_channels.tsv";
/// Block truth file name.
pub const TRUTH_BLOCKS_FILE: &str = "opm_truth_blocks.tsv";
/// Trigger truth file name.
pub const TRUTH_TRIGGERS_FILE: &str = "opm_truth_triggers.tsv";
/// Summary file name.
pub const SUMMARY_FILE: &str = "summary.json";
/// Random streams.
const CHANNEL_STREAM: u64 = 0x0e3_0001;
const NOISE_STREAM: u64 = 0x0e3_0002;
const TRIGGER_STREAM: u64 = 0x0e3_0003;
const FAULT_STREAM: u64 = 0x0e3_0004;

/// A board clock drifting against the reference: its rate is
/// `f0 * (1 + 1e-6 * (ppm + swing_ppm * sin(2 pi t / period_s)))`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftingClock {
    /// Nominal sampling rate, Hz.
    pub f0_hz: f64,
    /// Mean rate offset, ppm.
    pub ppm: f64,
    /// Amplitude of the slow rate swing, ppm.
    pub swing_ppm: f64,
    /// Period of the swing, s.
    pub period_s: f64,
    /// Sample 0 is taken when this many samples' worth of clock has elapsed since t = 0.
    pub phase0: f64,
}

impl DriftingClock {
    /// Samples' worth of clock elapsed at reference time `t` s (continuous).
    pub fn ticks_at(&self, t: f64) -> f64 {
        let w = std::f64::consts::TAU / self.period_s;
        self.f0_hz * (t + 1e-6 * (self.ppm * t - self.swing_ppm / w * ((w * t).cos() - 1.0)))
    }

    fn rate_at(&self, t: f64) -> f64 {
        let w = std::f64::consts::TAU / self.period_s;
        self.f0_hz * (1.0 + 1e-6 * (self.ppm + self.swing_ppm * (w * t).sin()))
    }

    /// Reference time (s since the run start) of true sample `j` (0-based, fractional allowed).
    pub fn sample_time(&self, j: f64) -> f64 {
        let target = j + self.phase0;
        let mut t = target / self.f0_hz;
        for _ in 0..4 {
            t -= (self.ticks_at(t) - target) / self.rate_at(t);
        }
        t
    }

    /// Continuous sample position (sample j at j) at reference time `t`.
    pub fn sample_position(&self, t: f64) -> f64 {
        self.ticks_at(t) - self.phase0
    }
}

/// Faults to inject.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpmFaults {
    /// Probability per data packet of losing it.
    pub lose_packets: f64,
    /// Probability per block of truncating its payload.
    pub truncate_blocks: f64,
    /// Simulated time (s) of a sample-counter jump.
    pub counter_jump_at_s: Option<f64>,
    /// Simulated time (s) of a clock reset (the counter restarts from 0).
    pub clock_reset_at_s: Option<f64>,
}

/// Everything the opm preset can be told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpmConfig {
    /// Seed of every random draw.
    pub seed: u64,
    /// Simulated time, s.
    pub duration_s: f64,
    /// The board clock (its `f0_hz` is the nominal sampling rate).
    pub clock: DriftingClock,
    /// Triaxial sensors (3 channels each; a trigger channel follows).
    pub sensors: usize,
    /// Largest packet, header included (blocks hold as many samples as fit).
    pub max_packet_bytes: usize,
    /// Samples per block (default: as many as fit `max_packet_bytes`).
    pub samples_per_block: Option<usize>,
    /// Transport source id.
    pub source_id: u32,
    /// Sample counter of the first sample (default: 20 s before the 32-bit wrap).
    pub start_counter: u32,
    /// Reference time of t = 0, ns (Unix epoch).
    pub reference_start_ns: i64,
    /// White noise, fT/sqrt(Hz).
    pub white_noise_ft: f64,
    /// Mains (50 Hz) amplitude, fT.
    pub mains_ft: f64,
    /// Evoked response amplitude, fT.
    pub evoked_ft: f64,
    /// Trigger intervals are uniform in this range, s.
    pub trigger_interval_s: (f64, f64),
    /// Faults.
    pub faults: OpmFaults,
    /// Mains frequency, Hz (50 or 60 Hz grids).
    #[serde(default = "default_mains_hz")]
    pub mains_hz: f64,
    /// Channels (0-based, MEG channels only) that are dead: they send [`FLAT_CHANNEL_VALUE`]
    /// at every sample.
    #[serde(default)]
    pub flat_channels: Vec<usize>,
}

/// What a dead channel ([`OpmConfig::flat_channels`]) sends, raw counts.
pub const FLAT_CHANNEL_VALUE: i32 = 1000;

fn default_mains_hz() -> f64 {
    50.0
}

impl Default for OpmConfig {
    fn default() -> Self {
        let f0 = 1200.5;
        Self {
            seed: 1,
            duration_s: 10.0,
            clock: DriftingClock {
                f0_hz: f0,
                ppm: 3.0,
                swing_ppm: 1.5,
                period_s: 240.0,
                phase0: 0.37,
            },
            sensors: 64,
            max_packet_bytes: 8192,
            samples_per_block: None,
            source_id: 0,
            start_counter: u32::MAX - (20.0 * f0) as u32,
            reference_start_ns: 1_795_000_000_000_000_000,
            white_noise_ft: 15.0,
            mains_ft: 2000.0,
            evoked_ft: 400.0,
            trigger_interval_s: (0.7, 1.3),
            faults: OpmFaults::default(),
            mains_hz: default_mains_hz(),
            flat_channels: Vec::new(),
        }
    }
}

impl OpmConfig {
    /// Channels per sample (3 per sensor + the trigger channel).
    pub fn n_channels(&self) -> usize {
        3 * self.sensors + 1
    }

    /// Samples per block.
    pub fn block_samples(&self) -> usize {
        self.samples_per_block.unwrap_or_else(|| {
            (self.max_packet_bytes.saturating_sub(HEADER_LEN + 16) / (4 * self.n_channels()))
                .clamp(1, u16::MAX as usize)
        })
    }

    /// Checks every field; the error names the field and the accepted range.
    pub fn validate(&self) -> Result<(), SimError> {
        let range = |f: &'static str, v: f64, lo: f64, hi: f64| {
            if v.is_finite() && (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(SimError::config(f, v, format!("must be in [{lo}, {hi}]")))
            }
        };
        range("duration_s", self.duration_s, 1e-3, 24.0 * 3600.0)?;
        range("sample_rate_hz", self.clock.f0_hz, 1.0, 100_000.0)?;
        range("drift_ppm", self.clock.ppm, -1000.0, 1000.0)?;
        range("sensors", self.sensors as f64, 1.0, 21_000.0)?;
        range("lose_packets", self.faults.lose_packets, 0.0, 0.999_999)?;
        range(
            "truncate_blocks",
            self.faults.truncate_blocks,
            0.0,
            0.999_999,
        )?;
        range("mains_hz", self.mains_hz, 1.0, 1000.0)?;
        if let Some(&c) = self.flat_channels.iter().find(|&&c| c >= 3 * self.sensors) {
            return Err(SimError::config(
                "flat_channels",
                c,
                format!("must be MEG channels, 0..{}", 3 * self.sensors),
            ));
        }
        let spb = self.block_samples();
        if spb == 0 || spb > u16::MAX as usize {
            return Err(SimError::config(
                "samples_per_block",
                spb,
                "must be 1..=65535",
            ));
        }
        if HEADER_LEN + 16 + 4 * spb * self.n_channels() > crate::packet_out::MAX_UDP_PACKET_BYTES {
            return Err(SimError::config(
                "samples_per_block",
                spb,
                format!(
                    "a block of {spb} samples x {} channels does not fit a 64 KiB datagram",
                    self.n_channels()
                ),
            ));
        }
        Ok(())
    }
}

/// Faults injected, as counted by the simulator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpmFaultCounts {
    /// Blocks lost (never sent).
    pub lost_blocks: u64,
    /// Samples in them.
    pub lost_samples: u64,
    /// Blocks sent truncated.
    pub truncated_blocks: u64,
    /// Samples in them.
    pub truncated_samples: u64,
    /// Counter jumps.
    pub counter_jumps: u64,
    /// Clock resets.
    pub clock_resets: u64,
}

/// What a run produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpmSummary {
    /// Preset name ("opm").
    pub preset: String,
    /// The configuration.
    pub config: Option<OpmConfig>,
    /// Channels per sample.
    pub n_channels: usize,
    /// Samples per block.
    pub samples_per_block: usize,
    /// Blocks generated (lost and truncated included).
    pub blocks: u64,
    /// Samples generated.
    pub samples: u64,
    /// Clock-sync records sent.
    pub sync_records: u64,
    /// Trigger pulses inside the run.
    pub triggers: u64,
    /// Faults injected.
    pub faults: OpmFaultCounts,
    /// The emitter's per-source packet counts.
    pub packets: PacketOutSummary,
}

/// One block's truth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockTruth {
    /// Transport seq of its packet.
    pub seq: u64,
    /// True index of its first sample (0 = the run's first sample).
    pub first_sample: u64,
    /// Raw counter in the header.
    pub counter: u32,
    /// Samples.
    pub n_samples: u16,
    /// Reference time of the first sample, ns.
    pub t_ref_ns: i64,
    /// Lost by the emitter.
    pub lost: bool,
    /// Sent truncated.
    pub truncated: bool,
}

struct TruthFiles {
    blocks: std::io::BufWriter<std::fs::File>,
    triggers: std::io::BufWriter<std::fs::File>,
    blocks_path: std::path::PathBuf,
}

fn create(path: &Path) -> Result<std::io::BufWriter<std::fs::File>, SimError> {
    std::fs::File::create(path)
        .map(std::io::BufWriter::new)
        .map_err(|e| SimError::io("creating", path, e))
}

/// The channel models of the run of `config` (drawn from its seed's channel stream).
fn channel_models(config: &OpmConfig) -> Vec<signal::ChannelModel> {
    signal::channels(
        config.sensors,
        config.clock.f0_hz,
        config.white_noise_ft,
        config.mains_ft,
        config.evoked_ft,
        &mut Rng::stream(config.seed, CHANNEL_STREAM),
    )
}

/// The channel table the run of `config` uses (the one `out_dir/opm_channels.tsv` holds).
pub fn channel_table(config: &OpmConfig) -> Vec<scandaq_decoders::meg::ChannelInfo> {
    channel_models(config).into_iter().map(|m| m.info).collect()
}

/// Metadata JSON for a `.sdq` raw archive of the run of `config`: what made it, and under
/// `"streams"` the `[meg]` settings `scandaq replay` uses, with the channel table's text
/// (`{"meg": {"channel_table_tsv": ...}}`, the same key a `scandaq run --raw-archive` writes).
pub fn archive_metadata(config: &OpmConfig) -> String {
    serde_json::json!({
        "source": "fpga-sim --preset opm",
        "seed": config.seed,
        "streams": {
            "meg": {"channel_table_tsv": format_channel_table(&channel_table(config))},
        },
    })
    .to_string()
}

/// The trigger pulses of the run: the first at 0.5 s, then at random intervals.
fn draw_triggers(config: &OpmConfig) -> Vec<Trigger> {
    let mut rng = Rng::stream(config.seed, TRIGGER_STREAM);
    let mut t = 0.5;
    let mut v = Vec::new();
    while t < config.duration_s {
        v.push(Trigger {
            t_s: t,
            bits: if rng.uniform() < 0.5 { 1 } else { 2 },
        });
        t += rng.range(config.trigger_interval_s.0, config.trigger_interval_s.1);
    }
    v
}

/// Writes the channel table and the trigger truth into `dir` and opens the block truth
/// (header written).
fn open_truth_files(
    dir: &Path,
    config: &OpmConfig,
    models: &[signal::ChannelModel],
    triggers: &[Trigger],
) -> Result<TruthFiles, SimError> {
    std::fs::create_dir_all(dir).map_err(|e| SimError::io("creating", dir, e))?;
    let table: Vec<_> = models.iter().map(|m| m.info.clone()).collect();
    let p = dir.join(CHANNELS_FILE);
    std::fs::write(&p, format_channel_table(&table)).map_err(|e| SimError::io("writing", &p, e))?;
    let blocks_path = dir.join(TRUTH_BLOCKS_FILE);
    let mut blocks = create(&blocks_path)?;
    let mut trig = create(&dir.join(TRUTH_TRIGGERS_FILE))?;
    let w = |e| SimError::io("writing", &blocks_path, e);
    writeln!(
        blocks,
        "seq\tfirst_sample\tcounter\tn_samples\tt_ref_ns\tlost\ttruncated"
    )
    .map_err(w)?;
    writeln!(trig, "t_ref_ns\tbits").map_err(w)?;
    for tr in triggers {
        writeln!(
            trig,
            "{}\t{}",
            config.reference_start_ns + (tr.t_s * 1e9).round() as i64,
            tr.bits
        )
        .map_err(w)?;
    }
    Ok(TruthFiles {
        blocks,
        triggers: trig,
        blocks_path,
    })
}

/// The board's sample counter: `counter = base + true sample index`, the base changing at
/// the injected faults (a jump, a reset).
struct Counter {
    /// (first true sample, base), in order.
    bases: Vec<(i64, i64)>,
    jump_pending: Option<f64>,
    reset_pending: Option<f64>,
}

impl Counter {
    fn base_at(&self, j: i64) -> i64 {
        self.bases
            .iter()
            .rev()
            .find(|(from, _)| *from <= j)
            .map_or(0, |b| b.1)
    }

    /// The 32-bit counter value of true sample `j`.
    fn value(&self, j: i64) -> i64 {
        (self.base_at(j) + j).rem_euclid(1 << 32)
    }

    /// Applies a jump or reset due at the block starting at sample `j`, time `t_first`.
    fn apply_faults(&mut self, j: u64, t_first: f64, faults: &mut OpmFaultCounts) {
        if self.jump_pending.is_some_and(|t| t_first >= t) {
            self.jump_pending = None;
            let b = self.base_at(j as i64) + COUNTER_JUMP;
            self.bases.push((j as i64, b));
            faults.counter_jumps += 1;
        }
        if self.reset_pending.is_some_and(|t| t_first >= t) {
            self.reset_pending = None;
            self.bases.push((j as i64, -(j as i64)));
            faults.clock_resets += 1;
        }
    }
}

/// One block: where it starts and its samples' reference times.
struct Block {
    /// True index of its first sample.
    j: u64,
    n: usize,
    t_first: f64,
    t_last: f64,
}

/// A run in progress: the digitiser between blocks.
struct OpmRun<'c, 'a> {
    config: &'c OpmConfig,
    out: PacketOut<'a>,
    models: Vec<signal::ChannelModel>,
    noise: Rng,
    fault_rng: Rng,
    triggers: Vec<Trigger>,
    /// First trigger that may still touch a block.
    trig_lo: usize,
    truth: Option<TruthFiles>,
    counter: Counter,
    /// Next reference second whose clock-sync record is due.
    next_edge: i64,
    summary: OpmSummary,
    /// Scratch: the block's samples, its payload.
    row: Vec<i32>,
    payload: Vec<u8>,
}

impl<'c, 'a> OpmRun<'c, 'a> {
    fn new(
        config: &'c OpmConfig,
        destination: Destination<'a>,
        out_dir: Option<&Path>,
    ) -> Result<Self, SimError> {
        let models = channel_models(config);
        let triggers = draw_triggers(config);
        let truth = match out_dir {
            Some(dir) => Some(open_truth_files(dir, config, &models, &triggers)?),
            None => None,
        };
        let out = PacketOut::open(
            destination,
            PacketOutOptions {
                faults: Faults::loss(config.faults.lose_packets),
                seed: config.seed,
                ..PacketOutOptions::default()
            },
        )?;
        let (spb, nch) = (config.block_samples(), config.n_channels());
        Ok(Self {
            summary: OpmSummary {
                preset: "opm".into(),
                config: Some(config.clone()),
                n_channels: nch,
                samples_per_block: spb,
                triggers: triggers.len() as u64,
                ..OpmSummary::default()
            },
            config,
            out,
            models,
            noise: Rng::stream(config.seed, NOISE_STREAM),
            fault_rng: Rng::stream(config.seed, FAULT_STREAM),
            triggers,
            trig_lo: 0,
            truth,
            counter: Counter {
                bases: vec![(i64::MIN, config.start_counter as i64)],
                jump_pending: config.faults.counter_jump_at_s,
                reset_pending: config.faults.clock_reset_at_s,
            },
            next_edge: 0,
            row: Vec::with_capacity(spb * nch),
            payload: Vec::with_capacity(16 + 4 * spb * nch),
        })
    }

    /// The clock-sync record of reference second `edge`: the counter there.
    fn send_sync(&mut self, edge: i64) -> Result<(), SimError> {
        let config = self.config;
        let pos = config.clock.sample_position(edge as f64);
        let whole = pos.floor();
        let sync = ClockSync {
            device_counter: self.counter.value(whole as i64) as u64,
            device_fraction: ((pos - whole) * 4_294_967_296.0).min(4_294_967_295.0) as u32,
            reference_ns: config.reference_start_ns + edge * 1_000_000_000,
        };
        self.out
            .send_control(config.source_id, &encode_clock_sync(&sync))?;
        self.summary.sync_records += 1;
        Ok(())
    }

    /// The samples of `block` into `row`, flat channels forced.
    fn sample(&mut self, block: &Block) {
        let (n, t_first, t_last) = (block.n, block.t_first, block.t_last);
        while self.trig_lo < self.triggers.len() && self.triggers[self.trig_lo].t_s + 0.5 < t_first
        {
            self.trig_lo += 1;
        }
        let near: Vec<Trigger> = self.triggers[self.trig_lo..]
            .iter()
            .take_while(|tr| tr.t_s <= t_last)
            .copied()
            .collect();
        self.row.clear();
        for i in 0..n {
            let t = if n > 1 {
                t_first + (t_last - t_first) * i as f64 / (n - 1) as f64
            } else {
                t_first
            };
            let start = self.row.len();
            signal::sample_row_at(
                &mut self.models,
                t,
                &near,
                &mut self.noise,
                &mut self.row,
                self.config.mains_hz,
            );
            for &c in &self.config.flat_channels {
                self.row[start + c] = FLAT_CHANNEL_VALUE;
            }
        }
    }

    /// Makes, faults and sends one block, then the clock-sync records its time passed.
    fn block(&mut self, block: Block) -> Result<(), SimError> {
        let config = self.config;
        self.counter
            .apply_faults(block.j, block.t_first, &mut self.summary.faults);
        self.sample(&block);
        let counter = self.counter.value(block.j as i64) as u32;
        let header = BlockHeader {
            sample_counter: counter,
            n_channels: config.n_channels() as u16,
            n_samples: block.n as u16,
            sample_rate_mhz: (config.clock.f0_hz * 1000.0).round() as u32,
            flags: FLAG_TRIGGER_CHANNEL,
        };
        self.payload.clear();
        encode_block_into(&header, &self.row, &mut self.payload);
        let truncated = self.fault_rng.uniform() < config.faults.truncate_blocks;
        if truncated {
            let keep = (self.fault_rng.uniform() * self.payload.len() as f64) as usize;
            self.payload.truncate(keep.min(self.payload.len() - 1));
        }
        let sent = self
            .out
            .send(config.source_id, payload_format::OPM_BLOCK, &self.payload)?;
        self.count(&block, sent.lost, truncated);
        self.write_truth(&block, sent, counter, truncated)?;
        while (self.next_edge as f64) <= block.t_last {
            self.send_sync(self.next_edge)?;
            self.next_edge += 1;
        }
        Ok(())
    }

    fn count(&mut self, block: &Block, lost: bool, truncated: bool) {
        let s = &mut self.summary;
        let n = block.n as u64;
        s.blocks += 1;
        s.samples += n;
        if lost {
            s.faults.lost_blocks += 1;
            s.faults.lost_samples += n;
        } else if truncated {
            s.faults.truncated_blocks += 1;
            s.faults.truncated_samples += n;
        }
    }

    /// The block's row of `opm_truth_blocks.tsv`.
    fn write_truth(
        &mut self,
        block: &Block,
        sent: crate::packet_out::Sent,
        counter: u32,
        truncated: bool,
    ) -> Result<(), SimError> {
        let Some(tf) = self.truth.as_mut() else {
            return Ok(());
        };
        writeln!(
            tf.blocks,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            sent.seq,
            block.j,
            counter,
            block.n,
            self.config.reference_start_ns + (block.t_first * 1e9).round() as i64,
            u8::from(sent.lost),
            u8::from(truncated && !sent.lost)
        )
        .map_err(|e| SimError::io("writing", &tf.blocks_path, e))
    }

    /// The last sync, the end markers, the truth files flushed.
    fn finish(mut self) -> Result<OpmSummary, SimError> {
        // The board keeps counting after its last block: the next reference edge is latched
        // and sent too, so the last blocks lie between two sync points.
        self.send_sync(self.next_edge)?;
        self.summary.packets = self.out.finish()?;
        if let Some(mut tf) = self.truth {
            tf.blocks
                .flush()
                .and_then(|_| tf.triggers.flush())
                .map_err(|e| SimError::io("writing", &tf.blocks_path, e))?;
        }
        Ok(self.summary)
    }
}

/// Simulates the run into `destination`, paced at `speed` times real time (`None`: as fast
/// as the destination takes it), writing the channel table, truth and summary into
/// `out_dir` when given.
pub fn run_opm(
    config: &OpmConfig,
    destination: Destination<'_>,
    speed: Option<f64>,
    out_dir: Option<&Path>,
) -> Result<OpmSummary, SimError> {
    config.validate()?;
    let clock = config.clock;
    let mut run = OpmRun::new(config, destination, out_dir)?;
    let n_total = (config.duration_s * clock.f0_hz).floor().max(1.0) as u64;
    let spb = config.block_samples() as u64;
    let mut j: u64 = 0;
    while j < n_total {
        let n = spb.min(n_total - j) as usize;
        let block = Block {
            j,
            n,
            t_first: clock.sample_time(j as f64),
            t_last: clock.sample_time((j + n as u64 - 1) as f64),
        };
        let t_last = block.t_last;
        run.block(block)?;
        j += n as u64;
        if let Some(speed) = speed {
            run.out.pace_to(Duration::from_secs_f64(t_last / speed))?;
        }
    }
    let summary = run.finish()?;
    if let Some(dir) = out_dir {
        let p = dir.join(SUMMARY_FILE);
        let json = serde_json::to_string_pretty(&summary).map_err(|e| SimError::Json {
            what: "summary",
            message: e.to_string(),
        })?;
        std::fs::write(&p, json).map_err(|e| SimError::io("writing", &p, e))?;
    }
    Ok(summary)
}

/// Reads `opm_truth_blocks.tsv`.
pub fn read_block_truth(path: &Path) -> Result<Vec<BlockTruth>, SimError> {
    let text = std::fs::read_to_string(path).map_err(|e| SimError::io("reading", path, e))?;
    let bad = |line: usize| {
        SimError::OutputDir(format!(
            "{} line {line}: not a block truth row",
            path.display()
        ))
    };
    text.lines()
        .enumerate()
        .skip(1)
        .map(|(i, l)| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() != 7 {
                return Err(bad(i + 1));
            }
            let u = |k: usize| f[k].parse::<i64>().map_err(|_| bad(i + 1));
            Ok(BlockTruth {
                seq: u(0)? as u64,
                first_sample: u(1)? as u64,
                counter: u(2)? as u32,
                n_samples: u(3)? as u16,
                t_ref_ns: u(4)?,
                lost: u(5)? != 0,
                truncated: u(6)? != 0,
            })
        })
        .collect()
}

/// Reads `opm_truth_triggers.tsv` as (reference ns, bits).
pub fn read_trigger_truth(path: &Path) -> Result<Vec<(i64, i32)>, SimError> {
    let text = std::fs::read_to_string(path).map_err(|e| SimError::io("reading", path, e))?;
    text.lines()
        .enumerate()
        .skip(1)
        .map(|(i, l)| {
            let mut f = l.split('\t').map(|x| x.parse::<i64>());
            match (f.next(), f.next()) {
                (Some(Ok(t)), Some(Ok(b))) => Ok((t, b as i32)),
                _ => Err(SimError::OutputDir(format!(
                    "{} line {}: not a trigger truth row",
                    path.display(),
                    i + 1
                ))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use scandaq_decoders::control::{ControlRecord, decode_control};
    use scandaq_decoders::meg::decode_block;
    use scandaq_decoders::transport::decode_packet;

    /// Runs a short config into memory: (block headers with their first sample's truth
    /// time, sync records).
    fn collect(config: &OpmConfig) -> (Vec<(u32, u16)>, Vec<ClockSync>, OpmSummary) {
        let mut packets: Vec<Vec<u8>> = Vec::new();
        let summary = run_opm(
            config,
            Destination::Closure(Box::new(|_, p| {
                packets.push(p.to_vec());
                true
            })),
            None,
            None,
        )
        .unwrap();
        let (mut blocks, mut syncs) = (Vec::new(), Vec::new());
        for p in &packets {
            let (h, payload) = decode_packet(p).unwrap();
            match h.payload_format {
                // The end-of-stream marker is an empty packet.
                payload_format::OPM_BLOCK if !payload.is_empty() => {
                    let b = decode_block(payload).unwrap();
                    blocks.push((b.header.sample_counter, b.header.n_samples));
                }
                payload_format::CONTROL if !payload.is_empty() => {
                    if let Ok(ControlRecord::ClockSync(s)) = decode_control(payload) {
                        syncs.push(s);
                    }
                }
                _ => {}
            }
        }
        (blocks, syncs, summary)
    }

    #[test]
    fn counter_wraps_syncs_match_the_clock_and_runs_are_deterministic() {
        let config = OpmConfig {
            duration_s: 25.0,
            sensors: 2,
            ..OpmConfig::default()
        };
        let (blocks, syncs, summary) = collect(&config);
        assert_eq!(blocks.len() as u64, summary.blocks);
        // Consecutive counters (mod 2^32), and the wrap happens (start 20 s before it).
        for w in blocks.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(w[0].1 as u32));
        }
        assert!(blocks.windows(2).any(|w| w[1].0 < w[0].0));
        // One sync per reference second plus the one after the last block.
        assert_eq!(syncs.len() as u64, summary.sync_records);
        assert_eq!(syncs.len(), 26, "edges 0..=24 s during the run, then 25 s");
        for (k, s) in syncs.iter().enumerate() {
            let pos = config.clock.sample_position(k as f64);
            let expect = (config.start_counter as f64 + pos).rem_euclid(4_294_967_296.0);
            let got = s.device_ticks();
            assert!((got - expect).abs() < 1e-6, "edge {k}: {got} vs {expect}");
            assert_eq!(
                s.reference_ns,
                config.reference_start_ns + k as i64 * 1_000_000_000
            );
        }
        let again = collect(&config);
        assert_eq!(again.0, blocks);
    }
}
