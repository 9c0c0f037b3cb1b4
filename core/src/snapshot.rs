//! The statistics snapshot of a running acquisition: plain data (serde) that the acquisition
//! fills, the dashboard renders and the control socket streams. No counters live here; the
//! lock-free model that produces snapshots is `scandaq::live_stats`.

use serde::{Deserialize, Serialize};

/// Energy histogram bins (1 keV, or 1 ns of ToT).
pub const ENERGY_BINS: usize = 2048;
/// Channel ids below this get their own rate counter; others share `other_channel_hits`.
pub const TRACKED_CHANNELS: usize = 1 << 16;
/// Channels per module (PETsys: 64 channels per ASIC).
pub const CHANNELS_PER_MODULE: usize = 64;
/// Bin width of the per-module energy spectra, keV (or ns of ToT without an energy table).
pub const MODULE_ENERGY_BIN: f32 = 8.0;
/// Bins of each per-module energy spectrum (0 to 2048 keV).
pub const MODULE_ENERGY_BINS: usize = 256;

pub use crate::run_state::{FailureReason, RunState, StopReason};

/// What the run is: set once at the start.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    /// Run number (the `run-NNNNNN` directory).
    pub run: u64,
    /// The run directory.
    pub run_dir: String,
    /// `run`, `demo`, `replay`.
    pub mode: String,
    /// Limits as the operator set them (`duration 60 s`, `hits 1000000`, ...; empty = none).
    pub limits: Vec<String>,
    /// Energy window `[min, max]` keV the run's coincidence sorting applies (what the
    /// dashboard marks on the spectrum); `None` when it applies none (coincidences off, the
    /// window set to `none`, or energies in ToT without an energy table).
    #[serde(default)]
    pub energy_window_kev: Option<[f32; 2]>,
}

/// What one input (a UDP socket, a TCP connection, an archive reader) reports about itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct InputSnapshot {
    /// `udp ADDR`, `tcp ADDR` or `archive PATH`.
    pub label: String,
    /// Packets that arrived (before any check).
    pub packets_in: u64,
    /// Bytes that arrived.
    pub bytes_in: u64,
    /// Losses at this input by reason (bad headers, CRC errors, foreign senders, gaps...).
    pub losses: crate::LossCounts,
    /// Chunks waiting in the input's ring.
    pub ring_fill: u64,
    /// Ring capacity in chunks.
    pub ring_capacity: u64,
    /// Packets dropped because the ring was full.
    pub ring_dropped_packets: u64,
    /// Time the input waited for room in the ring (block policy), ms.
    pub ring_blocked_ms: u64,
    /// Datagrams the kernel dropped on the socket (UDP, from /proc/net/udp).
    pub kernel_drops: u64,
    /// Per board (transport source_id) sequence accounting.
    pub boards: Vec<BoardTransportSnapshot>,
    /// Warnings for the operator, oldest first (a sender the allowlist rejects, a board
    /// outside the expected list, a board restart, ...); bounded.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One board's transport accounting as seen by an input.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BoardTransportSnapshot {
    /// Transport source_id.
    pub source_id: u32,
    /// Packets accepted (not duplicates).
    pub packets_received: u64,
    /// Packets never received (sequence gaps).
    pub packets_missing: u64,
    /// Duplicate packets dropped.
    pub duplicates: u64,
    /// Packets that arrived out of order.
    pub out_of_order: u64,
    /// Payload bytes accepted.
    pub payload_bytes: u64,
    /// The board said end of stream.
    pub ended: bool,
}

/// One board's decode counts as seen by the processing thread.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BoardDecodeSnapshot {
    /// Transport source_id.
    pub source_id: u32,
    /// Frames decoded.
    pub frames: u64,
    /// Hits decoded.
    pub hits_decoded: u64,
    /// Hits lost in decode/calibration by reason.
    pub losses: crate::LossCounts,
}

/// A copy of the statistics at one instant.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StatsSnapshot {
    /// What the run is.
    pub info: RunInfo,
    /// Run state.
    pub state: RunState,
    /// Seconds since the acquisition started.
    pub elapsed_s: f64,
    /// Per input: packets, bytes, losses by reason, ring fill, kernel drops, boards.
    pub inputs: Vec<InputSnapshot>,
    /// Per board: frames and hits decoded, decode losses.
    pub boards_decoded: Vec<BoardDecodeSnapshot>,
    /// Rows written by the singles sink.
    pub sink_rows: u64,
    /// Bytes the singles sink has flushed to its file.
    pub sink_bytes: u64,
    /// Singles handed to the sink.
    pub singles: u64,
    /// Frame bytes taken off the input rings.
    pub frame_bytes: u64,
    /// Chunks waiting in the input rings.
    pub ring_fill: u64,
    /// Boards seen.
    pub boards: u64,
    /// Energy histogram (1 keV or 1 ns bins from 0).
    pub energy_bins: Vec<u64>,
    /// `(channel, hits)` for every channel with hits.
    pub channel_hits: Vec<(u32, u64)>,
    /// Hits on channel ids above the tracked range.
    pub other_channel_hits: u64,
    /// `(module, counts per MODULE_ENERGY_BIN bin)` for every module (channel / 64) with
    /// hits: the selected module's spectrum on the dashboard.
    #[serde(default)]
    pub module_energy_bins: Vec<(u32, Vec<u64>)>,
    /// Coincidence sorting so far; `None` while the run sorts none (or none yet).
    #[serde(default)]
    pub coincidences: Option<CoincidenceSnapshot>,
    /// Sampled streams (OPM-MEG, ultrasound) by source id; empty in a PET-only run.
    #[serde(default)]
    pub streams: Vec<StreamSnapshot>,
    /// Failure, warnings and the output disk's free space.
    #[serde(default)]
    pub health: RunHealth,
}

/// What could end the run, or already did: the failure (shown at once, in red), the
/// operator warnings the run has raised, and the output disk's free space.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunHealth {
    /// Why the run failed, once it has.
    #[serde(default)]
    pub failure: Option<FailureReason>,
    /// What failed and where (one line).
    #[serde(default)]
    pub error: Option<String>,
    /// Warnings raised so far (low disk space, rejected senders, ...), oldest first; at most
    /// [`RunHealth::MAX_WARNINGS`] are kept.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Free bytes on the run directory's filesystem, at the last check.
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
    /// Seconds until that filesystem is full at the current write rate (none while nothing
    /// is written).
    #[serde(default)]
    pub disk_seconds_to_full: Option<f64>,
}

impl RunHealth {
    /// Warnings kept in a snapshot (the stats line and the manifest have them all).
    pub const MAX_WARNINGS: usize = 32;
}

/// Coincidence counters and the prompt time-difference histogram, published by the
/// coincidence stage as it sorts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CoincidenceSnapshot {
    /// Prompt coincidences written.
    pub prompts: u64,
    /// Delayed-window coincidences written (randoms estimate).
    pub delayeds: u64,
    /// Bytes the prompt and delayed tables hold so far (flushed, or committed at the end).
    #[serde(default)]
    pub bytes_written: u64,
    /// Singles the sorter has consumed.
    pub singles_sorted: u64,
    /// Histogram of the prompts' Δt oriented by detector ([`detector_ordered_dt_ps`]:
    /// the single of the smaller module first, then of the smaller channel), counts per bin.
    /// Not the tables' `tof_ps` (opener minus partner, never positive): a centred point
    /// source gives a peak at 0 whose FWHM is the CTR.
    pub dt_bins: Vec<u64>,
    /// Δt at the low edge of bin 0, ps.
    pub dt_min_ps: f64,
    /// Bin width, ps.
    pub bin_ps: f64,
    /// Prompt window, ps.
    pub window_ps: i64,
}

impl CoincidenceSnapshot {
    /// An empty histogram of `bins` bins covering `[-window_ps, window_ps]`.
    pub fn new(window_ps: i64, bins: usize) -> Self {
        let bins = bins.max(1);
        let span = 2.0 * window_ps.max(1) as f64;
        Self {
            dt_bins: vec![0; bins],
            dt_min_ps: -(window_ps.max(1) as f64),
            bin_ps: span / bins as f64,
            window_ps,
            ..Default::default()
        }
    }

    /// Adds prompt time differences (ps, from [`detector_ordered_dt_ps`]) to the histogram;
    /// values outside `[-window, +window]` are ignored (+window itself, which a pair exactly
    /// one window apart has when oriented the other way, goes into the last bin).
    pub fn add_dt(&mut self, dt_ps: impl IntoIterator<Item = i64>) {
        let n = self.dt_bins.len();
        let top = self.dt_min_ps + n as f64 * self.bin_ps;
        for t in dt_ps {
            let x = (t as f64 - self.dt_min_ps) / self.bin_ps;
            if x >= 0.0 && (x as usize) < n {
                self.dt_bins[x as usize] += 1;
            } else if t as f64 == top && n > 0 {
                self.dt_bins[n - 1] += 1;
            }
        }
    }
}

/// One single of a coincidence pair, as the dashboard orders the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairSingle {
    /// Detection time, ps.
    pub t_ps: i64,
    /// Detector module (the crystal's `region` in the run's `map_channel.tsv`).
    pub module: u32,
    /// PETsys absolute channel id.
    pub channel: u32,
}

/// Δt of a coincidence pair oriented by detector, the dashboard's convention
/// (docs/coincidences.md, "Δt on the dashboard"): the single with the smaller module id comes
/// first, ties broken by the smaller channel id, and Δt = t_first − t_second. Unlike the
/// sorter's `tof_ps` (opener minus partner, so never positive) the sign follows the
/// detectors, not the arrival order: a point source centred between two modules gives a
/// symmetric peak at 0 whose FWHM is the coincidence time resolution. Saturates instead of
/// overflowing.
pub fn detector_ordered_dt_ps(a: PairSingle, b: PairSingle) -> i64 {
    // Both differences, then a select: which detector comes first is a coin toss per pair,
    // so a branch on it was mispredicted about every second pair.
    std::hint::select_unpredictable(
        (a.module, a.channel) <= (b.module, b.channel),
        a.t_ps.saturating_sub(b.t_ps),
        b.t_ps.saturating_sub(a.t_ps),
    )
}

/// One sampled stream's live figures, as its processor last published them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StreamSnapshot {
    /// Transport source_id of the stream.
    pub source_id: u32,
    /// What kind of stream it is, with its kind's figures.
    pub figures: StreamFigures,
}

/// The figures of one kind of stream.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StreamFigures {
    /// An OPM-MEG sample stream (payload format 3).
    Meg(MegSnapshot),
    /// An ultrasound RF event stream (payload format 4).
    Ultrasound(UsSnapshot),
}

/// Health of one MEG channel over the last analysis window (thresholds: docs/meg.md, "Live
/// figures").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelHealth {
    /// None of the below.
    #[default]
    Ok,
    /// Constant (stuck) or RMS far below the median: a dead or disconnected sensor.
    Flat,
    /// Samples at the code limits or railed at the window's extreme: clipping.
    Saturated,
    /// RMS far above the median.
    Noisy,
}

impl ChannelHealth {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            ChannelHealth::Ok => "ok",
            ChannelHealth::Flat => "flat",
            ChannelHealth::Saturated => "saturated",
            ChannelHealth::Noisy => "noisy",
        }
    }
}

/// OPM-MEG live figures. Per-channel vectors cover the MEG channels only (magnetometers and
/// gradiometers, not the trigger channel), in channel-table order, all of the same length.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MegSnapshot {
    /// Blocks accepted.
    pub blocks: u64,
    /// Samples accepted.
    pub samples: u64,
    /// Effective sampling rate from the fitted board clock, Hz (0 until fitted).
    pub rate_hz: f64,
    /// Trigger edges seen (rising and falling, every bit).
    pub trigger_edges: u64,
    /// Rising trigger edges per second, from their corrected times (first to last), Hz.
    pub trigger_rate_hz: f64,
    /// Unit of the amplitudes: `fT` with a channel table, `counts` without.
    pub unit: String,
    /// Channel names.
    pub channel_names: Vec<String>,
    /// Per-channel RMS about the mean (DC removed) over the last window, in `unit`.
    pub rms: Vec<f32>,
    /// Per-channel health over the last window.
    pub health: Vec<ChannelHealth>,
    /// Median of `rms`.
    pub median_rms: f64,
    /// Mains frequency found (50 or 60 Hz; 0 before the first window).
    pub mains_hz: f64,
    /// Frequency of the spectral peak near `mains_hz` (0.25 Hz scan, interpolated), Hz.
    pub mains_peak_hz: f64,
    /// Median over the channels of the amplitude of the mains line, in `unit`.
    pub mains_amplitude: f64,
    /// Stream time the per-channel figures cover, s.
    pub window_s: f64,
    /// Analysis windows completed (0: the per-channel figures are not there yet).
    pub windows: u64,
}

impl MegSnapshot {
    /// How many channels are in each health state: (ok, flat, saturated, noisy).
    pub fn health_counts(&self) -> (usize, usize, usize, usize) {
        let n = |h| self.health.iter().filter(|&&x| x == h).count();
        (
            n(ChannelHealth::Ok),
            n(ChannelHealth::Flat),
            n(ChannelHealth::Saturated),
            n(ChannelHealth::Noisy),
        )
    }
}

/// Ultrasound RF live figures. Rates are over the last second of transmit time (the fitted
/// tx clock; wall-clock time until the first clock-sync record).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct UsSnapshot {
    /// Complete events handed to the `rf_events` writer.
    pub events_written: u64,
    /// Events that never completed (lost chunks): counted, never written.
    pub events_incomplete: u64,
    /// Frames (distinct frame numbers) with at least one complete event.
    pub frames: u64,
    /// Frames per second.
    pub frames_per_s: f64,
    /// Complete events per second.
    pub events_per_s: f64,
    /// RF sample bytes per second of complete events, MB/s (1e6 bytes).
    pub mb_per_s: f64,
    /// RF sample bytes of complete events.
    pub rf_bytes: u64,
    /// `true` when the rates use the fitted tx clock, `false` for wall-clock time.
    pub rates_from_tx_clock: bool,
    /// Per receive element: RMS of the RF samples of one recent event, LSB.
    pub element_rms: Vec<f32>,
    /// Per receive element: largest |sample| of the same event, LSB.
    pub element_peak: Vec<f32>,
    /// The event the amplitudes come from: (frame_no, tx_index).
    pub amplitude_event: Option<(u64, u16)>,
}

impl StatsSnapshot {
    /// Bytes the run's PET tables hold so far: the singles files and the prompt and delayed
    /// coincidence files (a coincidences-only run writes only the latter).
    pub fn pet_table_bytes(&self) -> u64 {
        self.sink_bytes + self.coincidences.as_ref().map_or(0, |c| c.bytes_written)
    }

    /// Total of every loss counter the snapshot knows (inputs, rings, kernel, decode).
    pub fn losses_total(&self) -> u64 {
        let inputs: u64 = self
            .inputs
            .iter()
            .map(|i| {
                i.losses.total_lost()
                    + i.ring_dropped_packets
                    + i.kernel_drops
                    + i.boards.iter().map(|b| b.packets_missing).sum::<u64>()
            })
            .sum();
        let decode: u64 = self
            .boards_decoded
            .iter()
            .map(|b| b.losses.total_lost())
            .sum();
        inputs + decode
    }

    /// Singles per second between `earlier` and this snapshot.
    pub fn singles_rate_since(&self, earlier: &StatsSnapshot) -> f64 {
        let dt = self.elapsed_s - earlier.elapsed_s;
        if dt <= 0.0 {
            0.0
        } else {
            (self.singles - earlier.singles) as f64 / dt
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LossReason;

    fn snapshot(
        inputs: Vec<InputSnapshot>,
        boards_decoded: Vec<BoardDecodeSnapshot>,
    ) -> StatsSnapshot {
        StatsSnapshot {
            info: RunInfo::default(),
            state: RunState::default(),
            elapsed_s: 1.0,
            inputs,
            boards_decoded,
            sink_rows: 0,
            sink_bytes: 0,
            singles: 0,
            frame_bytes: 0,
            ring_fill: 0,
            boards: 0,
            energy_bins: vec![],
            channel_hits: vec![],
            other_channel_hits: 0,
            module_energy_bins: vec![],
            coincidences: None,
            streams: vec![],
            health: RunHealth::default(),
        }
    }

    #[test]
    fn losses_total_adds_every_place_and_leaves_repairs_out() {
        let mut input_losses = crate::LossCounts::default();
        input_losses.add(LossReason::CrcError, 2);
        let mut decode_losses = crate::LossCounts::default();
        decode_losses.add(LossReason::LateHit, 7);
        decode_losses.add(LossReason::RepairedFrameId, 100);
        let input = |losses: crate::LossCounts, missing: u64| InputSnapshot {
            losses,
            ring_dropped_packets: 3,
            kernel_drops: 5,
            boards: vec![BoardTransportSnapshot {
                packets_missing: missing,
                ..Default::default()
            }],
            ..Default::default()
        };
        let board = BoardDecodeSnapshot {
            losses: decode_losses,
            ..Default::default()
        };
        let s = snapshot(
            vec![input(input_losses, 11), input(Default::default(), 13)],
            vec![board.clone(), board],
        );
        // inputs: (2 + 3 + 5 + 11) + (0 + 3 + 5 + 13); decode: 7 + 7 (repairs are no loss).
        assert_eq!(s.losses_total(), 21 + 21 + 14);
        assert_eq!(snapshot(vec![], vec![]).losses_total(), 0);
    }

    #[test]
    fn health_counts_count_each_state() {
        use ChannelHealth::{Flat, Noisy, Ok, Saturated};
        let meg = MegSnapshot {
            health: vec![Ok, Flat, Noisy, Ok, Saturated, Noisy, Noisy],
            ..Default::default()
        };
        assert_eq!(meg.health_counts(), (2, 1, 1, 3));
    }

    #[test]
    fn tof_histogram_bins_by_hand() {
        // Window 1000 ps, 4 bins over [-1000, 1000): edges -1000, -500, 0, 500, 1000.
        let mut c = CoincidenceSnapshot::new(1000, 4);
        c.add_dt([
            -1000, -501, -500, -1, 0, 499, 500, 999, 1000, -1001, 1001, 5000,
        ]);
        // +1000 (the window's closed end) is in the last bin; beyond either end is outside.
        assert_eq!(c.dt_bins, vec![2, 2, 2, 3]);
        c.add_dt([250, 250]);
        assert_eq!(c.dt_bins, vec![2, 2, 4, 3]);
    }

    #[test]
    fn pairs_are_ordered_by_module_then_channel_not_by_arrival() {
        let single = |t_ps, module, channel| PairSingle {
            t_ps,
            module,
            channel,
        };
        // Module 0 first, whichever arrived first and whichever the sorter called opener.
        let early_m1 = single(1_000, 1, 64);
        let late_m0 = single(1_150, 0, 63);
        assert_eq!(detector_ordered_dt_ps(early_m1, late_m0), 150);
        assert_eq!(detector_ordered_dt_ps(late_m0, early_m1), 150);
        let early_m0 = single(1_000, 0, 5);
        let late_m1 = single(1_150, 1, 70);
        assert_eq!(detector_ordered_dt_ps(early_m0, late_m1), -150);
        assert_eq!(detector_ordered_dt_ps(late_m1, early_m0), -150);
        // The module decides even against the channel ids (a map may number them apart).
        let m0_high_channel = single(2_000, 0, 500);
        let m1_low_channel = single(2_040, 1, 3);
        assert_eq!(detector_ordered_dt_ps(m1_low_channel, m0_high_channel), -40);
        // Same module: the smaller channel first.
        let a = single(10, 2, 130);
        let b = single(30, 2, 129);
        assert_eq!(detector_ordered_dt_ps(a, b), 20);
        assert_eq!(detector_ordered_dt_ps(b, a), 20);
        // Absurd times saturate instead of overflowing.
        let far = single(i64::MIN, 0, 0);
        assert_eq!(
            detector_ordered_dt_ps(far, single(i64::MAX, 1, 0)),
            i64::MIN
        );
    }

    #[test]
    fn singles_rate_between_two_snapshots() {
        let mut earlier = snapshot(vec![], vec![]);
        earlier.elapsed_s = 2.0;
        earlier.singles = 1_000;
        let mut now = snapshot(vec![], vec![]);
        now.elapsed_s = 6.0;
        now.singles = 9_000;
        assert_eq!(now.singles_rate_since(&earlier), 2_000.0);
        // No time between them: no rate rather than a division by zero.
        assert_eq!(now.singles_rate_since(&now), 0.0);
    }

    #[test]
    fn channel_health_names_are_the_documented_ones() {
        // docs/meg.md, "Live figures": ok, flat, saturated, noisy; serialised the same.
        for (h, name) in [
            (ChannelHealth::Ok, "ok"),
            (ChannelHealth::Flat, "flat"),
            (ChannelHealth::Saturated, "saturated"),
            (ChannelHealth::Noisy, "noisy"),
        ] {
            assert_eq!(h.name(), name);
            assert_eq!(serde_json::to_string(&h).unwrap(), format!("\"{name}\""));
        }
    }
}
