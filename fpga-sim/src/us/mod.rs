//! The `us` preset: an ultrasound research RF board (docs/ultrasound.md). A 128-element linear
//! array fires a sequence of steered plane waves; each transmit yields one RF event (the
//! `n_channels * n_samples` i16 echo matrix of a few point scatterers plus noise, see [`echo`])
//! sent as payload-format-4 chunks of at most `max_packet_bytes` (docs/formats.md §6) through
//! [`crate::packet_out`].
//!
//! # Timing and clock
//! Frame `f`, transmit `k` fires at reference time `t = t_start + (f * n_tx + k) / (frame_rate
//! * n_tx)` (transmits evenly spaced). The board latches its tick counter at transmit:
//! `tx_ticks = floor(tick0 + tick_rate * (t + ppm * 1e-6 * t + drift * 1e-6 * t^2 / 2))`, a
//! clock off by `clock_ppm` and drifting by `clock_drift_ppm_per_s`. Every `sync_interval_s`
//! (from t = 0) the board sends a clock-sync control record (`decoders::control`) with the
//! counter and its sub-tick fraction at that reference edge, before any event at or after it.
//! Reference times are ns since `REFERENCE_EPOCH_NS`.
//!
//! # Output (`out_dir`)
//! - `us_truth.tsv`: one row per event: frame_no, tx_index, true transmit time (ns, rounded),
//!   tx_ticks, chunks, chunks lost, chunks truncated, `complete` (every chunk sent intact) and
//!   the SHA-256 of the exact RF bytes (the event's i16 little-endian sample array);
//! - `us_sequence.json`: the transmit sequence ([`scandaq_sinks::rf_tables::UsSequence`]);
//! - `ultrasound.toml`: a run-config fragment (`[ultrasound]`) pointing at it;
//! - `summary.json`: events, chunks, packets, bytes, faults ([`UsSummary`]).
//!
//! # Faults
//! `lose_packets` (per data packet, by [`crate::packet_out`]) and `truncate_chunks` (per chunk,
//! its payload cut to a random shorter length before the CRC is computed, so the transport
//! accepts it and the RF decoder must reject or out-of-tile it): either makes the event
//! incomplete in the truth. Clock-sync packets are never faulted. `clock_reset_at_s`: the
//! board's tick counter restarts from 0 at that reference time (same rate and drift), so
//! `tx_ticks` and the sync records' counters drop; the truth's `tx_ticks` show it.

pub mod cli;
pub mod echo;

use crate::config::SimError;
use crate::packet_out::faults::Faults;
use crate::packet_out::{Destination, Pacing, PacketOut, PacketOutOptions, PacketOutSummary};
use crate::rng::Rng;
use echo::{EchoGeometry, Scatterer, default_scatterers, noise_table, render_event};
use scandaq_decoders::control::{ClockSync, encode_clock_sync};
use scandaq_decoders::rf::{CHUNK_HEADER_LEN, RfEventHeader, encode_chunk_header, plan_chunks};
use scandaq_decoders::transport::{HEADER_LEN, payload_format};
use scandaq_sinks::rf_tables::{Transmit, UsSequence};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Reference time of the run's t = 0, ns (2027-01-15T08:00:00Z).
pub const REFERENCE_EPOCH_NS: i64 = 1_800_000_000_000_000_000;
/// Truth file name.
pub const TRUTH_FILE: &str = "us_truth.tsv";
/// Sequence file name.
pub const SEQUENCE_FILE: &str = "us_sequence.json";
/// Run-config fragment file name.
pub const CONFIG_FRAGMENT_FILE: &str = "ultrasound.toml";
/// Summary file name.
pub const SUMMARY_FILE: &str = "summary.json";
/// Columns of the truth file.
pub const TRUTH_COLUMNS: &str = "frame_no\ttx_index\ttrue_tx_time_ns\ttx_ticks\tchunks\tchunks_lost\tchunks_truncated\tcomplete\tsha256";

/// The `us` preset's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsConfig {
    /// Seed of everything random (noise, faults, clock start).
    pub seed: u64,
    /// Frames to send.
    pub frames: u64,
    /// Frames per second.
    pub frame_rate_hz: f64,
    /// Plane-wave steering angles, degrees (one transmit each per frame).
    pub angles_deg: Vec<f64>,
    /// Elements (= channels).
    pub n_elements: u16,
    /// Element pitch, m.
    pub pitch_m: f64,
    /// Centre frequency, Hz.
    pub center_frequency_hz: f64,
    /// Sampling rate, Hz (20–50 MS/s).
    pub sample_rate_hz: u32,
    /// Samples per channel per event.
    pub n_samples: u32,
    /// First sample relative to transmit, ns.
    pub rx_offset_ns: i32,
    /// Speed of sound, m/s.
    pub speed_of_sound_m_s: f64,
    /// RMS noise, LSB.
    pub noise_lsb: f64,
    /// Nominal tick rate of tx_ticks, Hz.
    pub tick_rate_hz: f64,
    /// Board clock rate error, ppm.
    pub clock_ppm: f64,
    /// Drift of the rate error, ppm per second.
    pub clock_drift_ppm_per_s: f64,
    /// Clock-sync record period, s.
    pub sync_interval_s: f64,
    /// Largest packet, header included.
    pub max_packet_bytes: usize,
    /// Transport source_id.
    pub source_id: u32,
    /// Probability per data packet of losing it.
    pub lose_packets: f64,
    /// Probability per chunk of truncating it.
    pub truncate_chunks: f64,
    /// Real time (frames at frame_rate_hz) instead of as fast as possible.
    pub paced: bool,
    /// Generate every packet first (in memory: the run's RF bytes), then send them paced
    /// ([`PacketOutOptions::prerender`]); for benchmarks, so the physics does not share the
    /// receiver's CPU.
    #[serde(default)]
    pub prerender: bool,
    /// Where the truth, sequence, config fragment and summary go.
    pub out_dir: Option<PathBuf>,
    /// Reset the board's tick counter to 0 at this reference time, s since t = 0.
    #[serde(default)]
    pub clock_reset_at_s: Option<f64>,
}

impl Default for UsConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            frames: 200,
            frame_rate_hz: 100.0,
            angles_deg: vec![-10.0, -5.0, 0.0, 5.0, 10.0],
            n_elements: 128,
            pitch_m: 0.3e-3,
            center_frequency_hz: 5e6,
            sample_rate_hz: 25_000_000,
            n_samples: 2048,
            rx_offset_ns: 2000,
            speed_of_sound_m_s: 1540.0,
            noise_lsb: 12.0,
            tick_rate_hz: 100e6,
            clock_ppm: 3.0,
            clock_drift_ppm_per_s: 0.2,
            sync_interval_s: 0.1,
            max_packet_bytes: 8192,
            source_id: 0,
            lose_packets: 0.0,
            truncate_chunks: 0.0,
            paced: true,
            prerender: false,
            out_dir: None,
            clock_reset_at_s: None,
        }
    }
}

impl UsConfig {
    /// Events per second.
    pub fn event_rate_hz(&self) -> f64 {
        self.frame_rate_hz * self.angles_deg.len() as f64
    }

    /// Bytes of one event's samples.
    pub fn event_bytes(&self) -> u64 {
        2 * u64::from(self.n_elements) * u64::from(self.n_samples)
    }

    /// RF payload rate, bytes per second.
    pub fn rf_bytes_per_s(&self) -> f64 {
        self.event_rate_hz() * self.event_bytes() as f64
    }

    /// The transmit sequence.
    pub fn sequence(&self) -> UsSequence {
        UsSequence {
            probe: format!("linear-{}", self.n_elements),
            n_elements: self.n_elements,
            pitch_m: self.pitch_m,
            center_frequency_hz: self.center_frequency_hz,
            sample_rate_hz: self.sample_rate_hz,
            n_samples: self.n_samples,
            rx_offset_ns: self.rx_offset_ns,
            speed_of_sound_m_s: self.speed_of_sound_m_s,
            tick_rate_hz: self.tick_rate_hz,
            frame_rate_hz: self.frame_rate_hz,
            transmits: self
                .angles_deg
                .iter()
                .enumerate()
                .map(|(i, &a)| Transmit {
                    tx_index: i as u16,
                    kind: "plane_wave".into(),
                    angle_deg: a,
                    focus_m: None,
                })
                .collect(),
        }
    }

    /// Checks every value; errors name the field and the accepted range.
    pub fn validate(&self) -> Result<(), SimError> {
        self.validate_rates()?;
        self.validate_sequence()?;
        self.validate_packets()?;
        self.validate_timing()
    }

    /// Positive rates and sizes, the clock, the noise.
    fn validate_rates(&self) -> Result<(), SimError> {
        let positive = |name: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(SimError::config(name, v, "must be a positive number"))
            }
        };
        positive("frame_rate_hz", self.frame_rate_hz)?;
        positive("pitch_m", self.pitch_m)?;
        positive("center_frequency_hz", self.center_frequency_hz)?;
        positive("speed_of_sound_m_s", self.speed_of_sound_m_s)?;
        positive("tick_rate_hz", self.tick_rate_hz)?;
        positive("sync_interval_s", self.sync_interval_s)?;
        if let Some(t) = self.clock_reset_at_s {
            positive("clock_reset_at_s", t)?;
        }
        if !(self.noise_lsb.is_finite() && self.noise_lsb >= 0.0) {
            return Err(SimError::config(
                "noise_lsb",
                self.noise_lsb,
                "must be >= 0",
            ));
        }
        Ok(())
    }

    /// Angles, elements, sampling and the clock error.
    fn validate_sequence(&self) -> Result<(), SimError> {
        if self.angles_deg.is_empty() || self.angles_deg.len() > 256 {
            return Err(SimError::config(
                "angles_deg",
                self.angles_deg.len(),
                "give 1 to 256 plane-wave angles",
            ));
        }
        if let Some(a) = self
            .angles_deg
            .iter()
            .find(|a| a.is_nan() || a.abs() >= 45.0)
        {
            return Err(SimError::config(
                "angles_deg",
                a,
                "steering angles must be within (-45, 45) degrees",
            ));
        }
        if self.n_elements == 0 {
            return Err(SimError::config(
                "n_elements",
                0,
                "needs at least one element",
            ));
        }
        if !(20_000_000..=50_000_000).contains(&self.sample_rate_hz) {
            return Err(SimError::config(
                "sample_rate_hz",
                self.sample_rate_hz,
                "research RF boards sample at 20-50 MS/s",
            ));
        }
        if !(16..=65_536).contains(&self.n_samples) {
            return Err(SimError::config(
                "n_samples",
                self.n_samples,
                "samples per channel must be in [16, 65536]",
            ));
        }
        if self.clock_ppm.abs() > 1000.0 || self.clock_drift_ppm_per_s.abs() > 100.0 {
            return Err(SimError::config(
                "clock_ppm",
                self.clock_ppm,
                "clock error within +-1000 ppm and drift within +-100 ppm/s",
            ));
        }
        Ok(())
    }

    /// Packet size (an event must fit 65535 chunks) and the fault probabilities.
    fn validate_packets(&self) -> Result<(), SimError> {
        let lo = HEADER_LEN + CHUNK_HEADER_LEN + 64;
        if !(lo..=crate::packet_out::MAX_UDP_PACKET_BYTES).contains(&self.max_packet_bytes) {
            return Err(SimError::config(
                "max_packet_bytes",
                self.max_packet_bytes,
                format!(
                    "must be in [{lo}, {}] (32-byte transport header and 40-byte chunk header \
                     included)",
                    crate::packet_out::MAX_UDP_PACKET_BYTES
                ),
            ));
        }
        let payload = self.max_packet_bytes - HEADER_LEN;
        let probe = RfEventHeader {
            frame_no: 0,
            tx_index: 0,
            n_channels: self.n_elements,
            n_samples: self.n_samples,
            tx_ticks: 0,
            rx_offset_ns: 0,
            sample_rate_hz: self.sample_rate_hz,
        };
        if plan_chunks(&probe, payload).is_none() {
            return Err(SimError::config(
                "max_packet_bytes",
                self.max_packet_bytes,
                "an event would need more than 65535 chunks: use larger packets",
            ));
        }
        for (name, p) in [
            ("lose_packets", self.lose_packets),
            ("truncate_chunks", self.truncate_chunks),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(SimError::config(name, p, "must be a probability in [0, 1)"));
            }
        }
        Ok(())
    }

    /// Each receive window must end before the next transmit.
    fn validate_timing(&self) -> Result<(), SimError> {
        // Each receive window must end before the next transmit.
        let pri = 1.0 / self.event_rate_hz();
        let window = f64::from(self.rx_offset_ns) * 1e-9
            + f64::from(self.n_samples) / f64::from(self.sample_rate_hz);
        if window > pri {
            return Err(SimError::config(
                "frame_rate_hz",
                self.frame_rate_hz,
                format!(
                    "{} transmits per frame leave {:.1} us between transmits, less than the \
                     {:.1} us receive window (rx_offset + n_samples / sample_rate): lower the \
                     frame rate, the angles or the samples",
                    self.angles_deg.len(),
                    pri * 1e6,
                    window * 1e6
                ),
            ));
        }
        Ok(())
    }
}

/// What fault injection did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsFaults {
    /// Data packets lost.
    pub lost_packets: u64,
    /// Chunks truncated.
    pub truncated_chunks: u64,
    /// Events with at least one lost or truncated chunk.
    pub incomplete_events: u64,
    /// Board clock resets (the tick counter restarted from 0).
    #[serde(default)]
    pub clock_resets: u64,
}

/// The run's totals (`summary.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UsSummary {
    /// Preset name (`us`).
    pub preset: String,
    /// Seed.
    pub seed: u64,
    /// Frames sent.
    pub frames: u64,
    /// Events (frames x transmits).
    pub events: u64,
    /// Events whose every chunk was sent intact.
    pub complete_events: u64,
    /// Chunks generated (lost ones included).
    pub chunks: u64,
    /// Clock-sync records sent.
    pub sync_records: u64,
    /// RF sample bytes generated (all events).
    pub rf_bytes: u64,
    /// Packets and bytes on the wire (from the emitter).
    pub packets: PacketOutSummary,
    /// Faults injected.
    pub faults: UsFaults,
    /// Simulated time of the last transmit, s.
    pub sim_seconds: f64,
    /// Wall time, s.
    pub wall_seconds: f64,
    /// RF bytes per wall second.
    pub rf_mb_per_s: f64,
    /// The configuration.
    pub config: UsConfig,
}

/// The board's clock model.
struct BoardClock {
    tick0: f64,
    rate: f64,
    ppm: f64,
    drift: f64,
    /// The counter restarts from 0 at this reference time.
    reset_at: Option<f64>,
}

impl BoardClock {
    /// The running clock, never reset.
    fn free_running(&self, t: f64) -> f64 {
        self.tick0 + self.rate * (t + self.ppm * 1e-6 * t + 0.5 * self.drift * 1e-6 * t * t)
    }

    /// Device ticks (fractional) at reference time `t` s since the epoch.
    fn ticks(&self, t: f64) -> f64 {
        match self.reset_at {
            Some(r) if t >= r => self.free_running(t) - self.free_running(r),
            _ => self.free_running(t),
        }
    }
}

fn write_text(path: &Path, text: &str) -> Result<(), SimError> {
    std::fs::write(path, text).map_err(|e| SimError::io("writing", path, e))
}

/// Metadata JSON for a `.sdq` raw archive of the run of `config`: what made it, the
/// sequence, and under `"streams"` the `[ultrasound]` settings `scandaq replay` uses
/// (`{"ultrasound": {"sequence_json": ...}}`, the same key a `scandaq run --raw-archive`
/// writes).
pub fn archive_metadata(config: &UsConfig) -> String {
    serde_json::json!({
        "source": "fpga-sim --preset us",
        "seed": config.seed,
        "sequence": config.sequence(),
        "streams": {"ultrasound": {
            "sequence_json": serde_json::to_string(&config.sequence()).unwrap_or_default(),
        }},
    })
    .to_string()
}

/// The truth file of a run, open.
struct TruthTsv {
    w: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
}

/// Writes the sequence and the run-config fragment into `out_dir` and opens the truth file
/// (header written); `None` without `out_dir`.
fn open_outputs(config: &UsConfig) -> Result<Option<TruthTsv>, SimError> {
    let Some(dir) = &config.out_dir else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir).map_err(|e| SimError::io("creating", dir, e))?;
    let seq = config.sequence();
    let json = serde_json::to_string_pretty(&seq).map_err(|e| SimError::Json {
        what: "us sequence",
        message: e.to_string(),
    })?;
    write_text(&dir.join(SEQUENCE_FILE), &(json + "\n"))?;
    let seq_path =
        std::fs::canonicalize(dir.join(SEQUENCE_FILE)).unwrap_or_else(|_| dir.join(SEQUENCE_FILE));
    write_text(
        &dir.join(CONFIG_FRAGMENT_FILE),
        &format!(
            "[ultrasound]\nsequence_file = {:?}\ntick_rate_hz = {}\n",
            seq_path.display().to_string(),
            config.tick_rate_hz
        ),
    )?;
    let path = dir.join(TRUTH_FILE);
    let f = std::fs::File::create(&path).map_err(|e| SimError::io("creating", &path, e))?;
    let mut w = std::io::BufWriter::new(f);
    writeln!(w, "{TRUTH_COLUMNS}").map_err(|e| SimError::io("writing", &path, e))?;
    Ok(Some(TruthTsv { w, path }))
}

/// The echo templates of each transmit angle.
fn templates(config: &UsConfig) -> Vec<Vec<i16>> {
    let geometry = EchoGeometry {
        n_elements: config.n_elements,
        pitch_m: config.pitch_m,
        center_frequency_hz: config.center_frequency_hz,
        fractional_bandwidth: 0.6,
        sample_rate_hz: f64::from(config.sample_rate_hz),
        n_samples: config.n_samples,
        rx_offset_ns: config.rx_offset_ns,
        speed_of_sound_m_s: config.speed_of_sound_m_s,
    };
    let scatterers: Vec<Scatterer> = default_scatterers();
    config
        .angles_deg
        .iter()
        .map(|&a| geometry.template(a, &scatterers))
        .collect()
}

/// What became of one event's chunks.
#[derive(Default)]
struct EventFate {
    lost: u64,
    truncated: u64,
    /// The sender stopped (a closure destination) in the middle of the event.
    stopped: bool,
}

/// The run's totals so far.
#[derive(Default)]
struct Totals {
    events: u64,
    complete_events: u64,
    chunks: u64,
    rf_bytes: u64,
    faults: UsFaults,
    /// Reference time of the last transmit, s.
    last_t: f64,
}

/// A run in progress: the board between transmits.
struct UsRun<'c, 'a> {
    config: &'c UsConfig,
    out: PacketOut<'a>,
    templates: Vec<Vec<i16>>,
    noise: Vec<i16>,
    noise_rng: Rng,
    fault_rng: Rng,
    clock: BoardClock,
    truth: Option<TruthTsv>,
    /// Reference time of the first transmit, s.
    t_start: f64,
    event_rate: f64,
    max_payload: usize,
    /// Scratch: the event's RF bytes, a truncated chunk.
    rf: Vec<u8>,
    cut: Vec<u8>,
    next_sync: u64,
    totals: Totals,
}

impl<'c, 'a> UsRun<'c, 'a> {
    fn new(
        config: &'c UsConfig,
        destination: Destination<'a>,
        truth: Option<TruthTsv>,
    ) -> Result<Self, SimError> {
        let templates = templates(config);
        let mut noise_rng = Rng::stream(config.seed, 0x05_0001);
        let noise = noise_table(&mut noise_rng, config.noise_lsb);
        let fault_rng = Rng::stream(config.seed, 0x05_0002);
        let mut clock_rng = Rng::stream(config.seed, 0x05_0003);
        let clock = BoardClock {
            tick0: (1u64 << 40) as f64 + clock_rng.below(1 << 30) as f64,
            rate: config.tick_rate_hz,
            ppm: config.clock_ppm,
            drift: config.clock_drift_ppm_per_s,
            reset_at: config.clock_reset_at_s,
        };
        let out = PacketOut::open(
            destination,
            PacketOutOptions {
                pacing: Pacing::Unpaced,
                faults: Faults::loss(config.lose_packets),
                seed: config.seed,
                prerender: config.prerender,
                ..PacketOutOptions::default()
            },
        )?;
        let event_rate = config.event_rate_hz();
        let (nc, ns) = (usize::from(config.n_elements), config.n_samples as usize);
        let max_payload = config.max_packet_bytes - HEADER_LEN;
        Ok(Self {
            config,
            out,
            templates,
            noise,
            noise_rng,
            fault_rng,
            clock,
            truth,
            // The first transmit a quarter sync interval after t = 0, so the first sync
            // precedes it.
            t_start: 0.25 * config.sync_interval_s.min(1.0 / event_rate),
            event_rate,
            max_payload,
            rf: Vec::with_capacity(2 * nc * ns),
            cut: Vec::with_capacity(max_payload),
            next_sync: 0,
            totals: Totals::default(),
        })
    }

    /// Clock-sync records for every reference edge up to `t`.
    fn send_syncs_until(&mut self, t: f64) -> Result<(), SimError> {
        let config = self.config;
        while self.next_sync as f64 * config.sync_interval_s <= t {
            let ts = self.next_sync as f64 * config.sync_interval_s;
            let ticks = self.clock.ticks(ts);
            let whole = ticks.floor();
            let sync = ClockSync {
                device_counter: whole as u64,
                device_fraction: ((ticks - whole) * 4_294_967_296.0).min(4_294_967_295.0) as u32,
                reference_ns: REFERENCE_EPOCH_NS + (ts * 1e9).round() as i64,
            };
            if config.paced {
                self.out.pace_to(Duration::from_secs_f64(ts))?;
            }
            self.out
                .send_control(config.source_id, &encode_clock_sync(&sync))?;
            self.next_sync += 1;
        }
        Ok(())
    }

    /// Fires transmit `k` of frame `frame`: syncs due, the event's chunks, its truth row.
    /// Returns false when the sender stopped.
    fn transmit(&mut self, frame: u64, k: u64) -> Result<bool, SimError> {
        let config = self.config;
        let n_tx = config.angles_deg.len() as u64;
        let t = self.t_start + (frame * n_tx + k) as f64 / self.event_rate;
        self.totals.last_t = t;
        self.send_syncs_until(t)?;
        if config.paced {
            self.out.pace_to(Duration::from_secs_f64(t))?;
        }
        let header = RfEventHeader {
            frame_no: frame,
            tx_index: k as u16,
            n_channels: config.n_elements,
            n_samples: config.n_samples,
            tx_ticks: self.clock.ticks(t).floor() as u64,
            rx_offset_ns: config.rx_offset_ns,
            sample_rate_hz: config.sample_rate_hz,
        };
        render_event(
            &self.templates[k as usize],
            &self.noise,
            usize::from(config.n_elements),
            config.n_samples as usize,
            &mut self.noise_rng,
            &mut self.rf,
        );
        let plan = plan_chunks(&header, self.max_payload).unwrap_or_default();
        let fate = self.send_chunks(&plan)?;
        if fate.stopped {
            return Ok(false);
        }
        let complete = fate.lost == 0 && fate.truncated == 0;
        let totals = &mut self.totals;
        totals.events += 1;
        totals.complete_events += u64::from(complete);
        totals.chunks += plan.len() as u64;
        totals.rf_bytes += self.rf.len() as u64;
        totals.faults.truncated_chunks += fate.truncated;
        totals.faults.incomplete_events += u64::from(!complete);
        self.write_truth(&header, t, plan.len(), &fate)?;
        Ok(true)
    }

    /// Sends the event's chunks, truncating some (fault injection).
    fn send_chunks(
        &mut self,
        plan: &[(scandaq_decoders::rf::ChunkHeader, std::ops::Range<usize>)],
    ) -> Result<EventFate, SimError> {
        let config = self.config;
        let mut fate = EventFate::default();
        for (ch, range) in plan {
            let head = encode_chunk_header(ch);
            let body = &self.rf[range.clone()];
            let sent = if config.truncate_chunks > 0.0
                && self.fault_rng.uniform() < config.truncate_chunks
            {
                fate.truncated += 1;
                self.cut.clear();
                self.cut.extend_from_slice(&head);
                self.cut.extend_from_slice(body);
                let keep = self.fault_rng.below(self.cut.len() as u64) as usize;
                self.cut.truncate(keep);
                self.out
                    .send(config.source_id, payload_format::US_RF_EVENT, &self.cut)?
            } else {
                self.out.send_parts(
                    config.source_id,
                    payload_format::US_RF_EVENT,
                    &[&head, body],
                )?
            };
            fate.lost += u64::from(sent.lost);
            if self.out.stopped() {
                fate.stopped = true;
                break;
            }
        }
        Ok(fate)
    }

    /// The event's row of `us_truth.tsv`.
    fn write_truth(
        &mut self,
        header: &RfEventHeader,
        t: f64,
        chunks: usize,
        fate: &EventFate,
    ) -> Result<(), SimError> {
        let Some(tsv) = self.truth.as_mut() else {
            return Ok(());
        };
        let hash = hex(&Sha256::digest(&self.rf));
        let (lost, truncated) = (fate.lost, fate.truncated);
        writeln!(
            tsv.w,
            "{}\t{}\t{}\t{}\t{chunks}\t{lost}\t{truncated}\t{}\t{hash}",
            header.frame_no,
            header.tx_index,
            REFERENCE_EPOCH_NS + (t * 1e9).round() as i64,
            header.tx_ticks,
            u8::from(lost == 0 && truncated == 0),
        )
        .map_err(|e| SimError::io("writing", &tsv.path, e))
    }

    /// Ends the streams, syncs the truth file and adds up the summary.
    fn finish(self, started: std::time::Instant) -> Result<UsSummary, SimError> {
        let config = self.config;
        let packets = self.out.finish()?;
        let mut t = self.totals;
        t.faults.lost_packets = packets.lost_packets();
        t.faults.clock_resets = u64::from(config.clock_reset_at_s.is_some_and(|r| r <= t.last_t));
        // Prerendered: the sending alone (generating came first).
        let wall_seconds = if config.prerender {
            packets.wall_seconds
        } else {
            started.elapsed().as_secs_f64()
        };
        if let Some(tsv) = self.truth {
            tsv.w
                .into_inner()
                .map_err(|e| SimError::io("writing", &tsv.path, e.into_error()))?
                .sync_all()
                .map_err(|e| SimError::io("syncing", &tsv.path, e))?;
        }
        Ok(UsSummary {
            preset: "us".into(),
            seed: config.seed,
            frames: config.frames,
            events: t.events,
            complete_events: t.complete_events,
            chunks: t.chunks,
            sync_records: self.next_sync,
            rf_bytes: t.rf_bytes,
            packets,
            faults: t.faults,
            sim_seconds: t.last_t,
            wall_seconds,
            rf_mb_per_s: if wall_seconds > 0.0 {
                t.rf_bytes as f64 / wall_seconds / 1e6
            } else {
                0.0
            },
            config: config.clone(),
        })
    }
}

/// Runs the preset into `destination`; writes the output files when `out_dir` is set.
pub fn run(config: &UsConfig, destination: Destination<'_>) -> Result<UsSummary, SimError> {
    config.validate()?;
    let truth = open_outputs(config)?;
    let mut run = UsRun::new(config, destination, truth)?;
    let started = std::time::Instant::now();
    let n_tx = config.angles_deg.len() as u64;
    'frames: for frame in 0..config.frames {
        for k in 0..n_tx {
            if !run.transmit(frame, k)? {
                break 'frames;
            }
        }
    }
    let summary = run.finish(started)?;
    if let Some(dir) = &config.out_dir {
        let json = serde_json::to_string_pretty(&summary).map_err(|e| SimError::Json {
            what: "us summary",
            message: e.to_string(),
        })?;
        write_text(&dir.join(SUMMARY_FILE), &(json + "\n"))?;
    }
    Ok(summary)
}

use scandaq_core::hex::hex_lower as hex;

/// One row of `us_truth.tsv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruthEvent {
    /// Frame number.
    pub frame_no: u64,
    /// Transmit index.
    pub tx_index: u16,
    /// True transmit time, ns of the reference clock.
    pub true_tx_time_ns: i64,
    /// Device counter latched at transmit.
    pub tx_ticks: u64,
    /// Chunks of the event.
    pub chunks: u32,
    /// Chunks lost.
    pub chunks_lost: u32,
    /// Chunks truncated.
    pub chunks_truncated: u32,
    /// Every chunk sent intact.
    pub complete: bool,
    /// SHA-256 (hex) of the event's RF bytes.
    pub sha256: String,
}

/// Reads `us_truth.tsv`.
pub fn read_truth(path: &Path) -> Result<Vec<TruthEvent>, SimError> {
    let text = std::fs::read_to_string(path).map_err(|e| SimError::io("reading", path, e))?;
    let bad =
        |line: usize, what: &str| SimError::OutputDir(format!("{}:{line}: {what}", path.display()));
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 9 {
            return Err(bad(i + 1, "expected 9 tab-separated fields"));
        }
        let num = |k: usize| f[k].parse::<i64>().map_err(|_| bad(i + 1, "bad number"));
        rows.push(TruthEvent {
            frame_no: num(0)? as u64,
            tx_index: num(1)? as u16,
            true_tx_time_ns: num(2)?,
            tx_ticks: f[3]
                .parse::<u64>()
                .map_err(|_| bad(i + 1, "bad tx_ticks"))?,
            chunks: num(4)? as u32,
            chunks_lost: num(5)? as u32,
            chunks_truncated: num(6)? as u32,
            complete: num(7)? == 1,
            sha256: f[8].to_string(),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scandaq_decoders::rf::RfReassembler;
    use scandaq_decoders::transport::decode_packet;

    #[test]
    fn packets_reassemble_to_the_truth_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let config = UsConfig {
            frames: 6,
            n_samples: 512,
            n_elements: 32,
            paced: false,
            lose_packets: 0.05,
            seed: 9,
            out_dir: Some(dir.path().to_path_buf()),
            ..UsConfig::default()
        };
        let mut packets = Vec::new();
        let summary = run(
            &config,
            Destination::Closure(Box::new(|_, p: &[u8]| {
                packets.push(p.to_vec());
                true
            })),
        )
        .unwrap();
        assert_eq!(summary.events, 30);
        let truth = read_truth(&dir.path().join(TRUTH_FILE)).unwrap();
        assert_eq!(truth.len(), 30);
        assert!(
            truth.iter().any(|t| !t.complete),
            "5% loss must hit an event"
        );
        let mut r = RfReassembler::new(8, 1 << 24);
        let mut got = Vec::new();
        let mut syncs = 0;
        for p in &packets {
            let (h, payload) = decode_packet(p).unwrap();
            match h.payload_format {
                payload_format::US_RF_EVENT if !payload.is_empty() => {
                    r.push(payload, &mut |e| got.push(e))
                }
                payload_format::CONTROL => syncs += 1,
                _ => {}
            }
        }
        r.finish();
        assert!(syncs >= 1);
        let complete: Vec<&TruthEvent> = truth.iter().filter(|t| t.complete).collect();
        assert_eq!(got.len(), complete.len());
        for (e, t) in got.iter().zip(&complete) {
            assert_eq!(
                (e.header.frame_no, e.header.tx_index),
                (t.frame_no, t.tx_index)
            );
            assert_eq!(hex(&Sha256::digest(&e.samples)), t.sha256);
        }
    }
}
