//! The dashboard figures of the sampled streams, computed on the processing thread as the
//! data pass: [`MegPanel`] (per-channel RMS, channel health, mains line) for OPM-MEG sample
//! blocks and [`UsPanel`] (frame, event and byte rates, per-element amplitude) for ultrasound
//! RF events. Both keep fixed-size per-channel accumulators (structure of arrays, updated once
//! per sample row or per event, nothing allocated per sample) and hand out small copies
//! ([`MegSnapshot`], [`UsSnapshot`]) when the run publishes its statistics.
//!
//! MEG analysis (docs/meg.md, "Live figures"): samples are accumulated over windows of
//! [`MEG_WINDOW_S`] of stream time; at the end of each window every MEG channel gets its RMS
//! about the mean, its health, and its amplitude at 50 and 60 Hz (Goertzel filters on the
//! Hann-windowed samples). The mains frequency is the candidate with the larger median
//! amplitude; its peak frequency comes from a 0.25 Hz scan of one reference channel (the one
//! with the median mains amplitude in the previous window) with log-parabolic interpolation.

use scandaq_core::snapshot::{ChannelHealth, MegSnapshot, UsSnapshot};
use scandaq_decoders::meg::{ChannelInfo, ChannelKind};
use std::collections::VecDeque;
use std::time::Instant;

/// Stream time each MEG analysis window covers, s.
pub const MEG_WINDOW_S: f64 = 1.0;
/// A channel whose RMS is below this fraction of the median RMS is flat (dead).
pub const FLAT_RMS_FRACTION: f64 = 0.02;
/// A channel whose RMS is above this multiple of the median RMS is noisy.
pub const NOISY_RMS_FACTOR: f64 = 5.0;
/// A moving channel with at least this share of a window's samples at the window's minimum or
/// maximum code is railed (saturated).
pub const RAILED_FRACTION: f64 = 0.05;
/// Mains frequencies considered, Hz.
pub const MAINS_CANDIDATES_HZ: [f64; 2] = [50.0, 60.0];
/// The peak scan: frequencies `SCAN_LO_HZ + k * SCAN_STEP_HZ`, k < SCAN_POINTS (44 to 66 Hz).
const SCAN_LO_HZ: f64 = 44.0;
const SCAN_STEP_HZ: f64 = 0.25;
const SCAN_POINTS: usize = 89;
/// The peak is looked for within this distance of the mains frequency, Hz.
const PEAK_SEARCH_HZ: f64 = 5.0;
/// Fewest samples in a window (lower rates get longer windows).
const MIN_WINDOW_SAMPLES: usize = 64;
/// Most samples in a window (higher rates get shorter windows; bounds the memory a corrupt
/// rate in a block header can ask for).
const MAX_WINDOW_SAMPLES: usize = 1 << 17;
/// Stream time the ultrasound rates are averaged over, ns.
const US_RATE_WINDOW_NS: i64 = 1_000_000_000;
/// Stream time between two per-element amplitude computations, ns.
const US_AMPLITUDE_EVERY_NS: i64 = 100_000_000;

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One Goertzel resonator's state: after N inputs `|X(f)|^2 = s1^2 + s2^2 - c s1 s2`.
#[derive(Clone, Copy, Debug, Default)]
struct Goertzel {
    s1: f64,
    s2: f64,
}

impl Goertzel {
    #[inline]
    fn push(&mut self, coeff: f64, x: f64) {
        let s0 = x + coeff * self.s1 - self.s2;
        self.s2 = self.s1;
        self.s1 = s0;
    }

    fn magnitude(&self, coeff: f64) -> f64 {
        (self.s1 * self.s1 + self.s2 * self.s2 - coeff * self.s1 * self.s2)
            .max(0.0)
            .sqrt()
    }
}

fn goertzel_coeff(f_hz: f64, rate_hz: f64) -> f64 {
    2.0 * (std::f64::consts::TAU * f_hz / rate_hz).cos()
}

/// Per-channel accumulators of the window in progress (one entry per channel of a sample
/// row, the trigger channel included; it is simply not reported).
#[derive(Default)]
struct Accumulators {
    shift: Vec<f64>,
    sum: Vec<f64>,
    sumsq: Vec<f64>,
    min: Vec<i32>,
    max: Vec<i32>,
    at_min: Vec<u32>,
    at_max: Vec<u32>,
    mains: Vec<[Goertzel; 2]>,
    scan: Vec<Goertzel>,
}

impl Accumulators {
    fn reset(&mut self, nch: usize) {
        self.shift.clear();
        self.shift.resize(nch, 0.0);
        for v in [&mut self.sum, &mut self.sumsq] {
            v.clear();
            v.resize(nch, 0.0);
        }
        self.min.clear();
        self.min.resize(nch, i32::MAX);
        self.max.clear();
        self.max.resize(nch, i32::MIN);
        for v in [&mut self.at_min, &mut self.at_max] {
            v.clear();
            v.resize(nch, 0);
        }
        self.mains.clear();
        self.mains.resize(nch, [Goertzel::default(); 2]);
        self.scan.clear();
        self.scan.resize(SCAN_POINTS, Goertzel::default());
    }
}

/// Live figures of one OPM-MEG stream (see the module docs).
pub struct MegPanel {
    table: Option<Vec<ChannelInfo>>,
    /// Channels per sample row the set-up is for (0: not set up yet).
    nch: usize,
    rate_hz: f64,
    /// Row indices of the channels reported, with their scale (unit per count).
    analysed: Vec<(usize, f64)>,
    window_len: usize,
    hann: Vec<f64>,
    hann_sum: f64,
    mains_coeff: [f64; 2],
    scan_coeff: Vec<f64>,
    /// Row index of the channel the peak scan runs on.
    reference: usize,
    acc: Accumulators,
    /// Samples in the window so far.
    n: usize,
    /// The figures of the last completed window (the counters are the processor's).
    out: MegSnapshot,
}

impl MegPanel {
    /// A panel; `table` (the `[meg]` channel table) gives names, kinds and the calibration
    /// to fT; without it every non-trigger channel is reported in raw counts.
    pub fn new(table: Option<Vec<ChannelInfo>>) -> Self {
        Self {
            table,
            nch: 0,
            rate_hz: 0.0,
            analysed: Vec::new(),
            window_len: 0,
            hann: Vec::new(),
            hann_sum: 0.0,
            mains_coeff: [0.0; 2],
            scan_coeff: Vec::new(),
            reference: 0,
            acc: Accumulators::default(),
            n: 0,
            out: MegSnapshot::default(),
        }
    }

    fn set_up(&mut self, nch: usize, rate_hz: f64, trigger_last: bool) {
        self.nch = nch;
        self.rate_hz = rate_hz;
        let mut names = Vec::new();
        self.analysed.clear();
        match &self.table {
            Some(t) if t.len() == nch => {
                for (i, c) in t.iter().enumerate() {
                    if matches!(c.kind, ChannelKind::MegMag | ChannelKind::MegGrad) {
                        self.analysed.push((i, c.cal * c.range * 1e15));
                        names.push(c.name.clone());
                    }
                }
                self.out.unit = "fT".into();
            }
            _ => {
                let n = if trigger_last { nch - 1 } else { nch };
                for i in 0..n {
                    self.analysed.push((i, 1.0));
                    names.push(format!("ch{i}"));
                }
                self.out.unit = "counts".into();
            }
        }
        self.window_len = ((rate_hz * MEG_WINDOW_S).round() as usize)
            .clamp(MIN_WINDOW_SAMPLES, MAX_WINDOW_SAMPLES);
        let n = self.window_len as f64;
        self.hann = (0..self.window_len)
            .map(|k| 0.5 - 0.5 * (std::f64::consts::TAU * k as f64 / (n - 1.0)).cos())
            .collect();
        self.hann_sum = self.hann.iter().sum();
        self.mains_coeff = MAINS_CANDIDATES_HZ.map(|f| goertzel_coeff(f, rate_hz));
        self.scan_coeff = (0..SCAN_POINTS)
            .map(|k| goertzel_coeff(SCAN_LO_HZ + k as f64 * SCAN_STEP_HZ, rate_hz))
            .collect();
        self.reference = self.analysed.first().map_or(0, |a| a.0);
        self.out.channel_names = names;
        self.out.rms.clear();
        self.out.health.clear();
        self.out.windows = 0;
        self.acc.reset(nch);
        self.n = 0;
    }

    /// Takes one block: `data` holds `n_samples` rows of `n_channels` little-endian i32
    /// (sample-major); `rate_hz` is the nominal sampling rate; `trigger_last` says the last
    /// channel is the trigger bitmask. Blocks of another shape restart the analysis.
    pub fn push_block(
        &mut self,
        data: &[u8],
        n_samples: usize,
        n_channels: usize,
        rate_hz: f64,
        trigger_last: bool,
    ) {
        if n_channels == 0 || !(rate_hz.is_finite() && rate_hz > 0.0) {
            return;
        }
        if n_channels != self.nch || (rate_hz / self.rate_hz - 1.0).abs() > 0.01 {
            self.set_up(n_channels, rate_hz, trigger_last);
        }
        let scan_on = rate_hz > 2.0 * (SCAN_LO_HZ + SCAN_POINTS as f64 * SCAN_STEP_HZ);
        for row in data.chunks_exact(4 * n_channels).take(n_samples) {
            let w = self.hann[self.n];
            let first = self.n == 0;
            let a = &mut self.acc;
            let cells = row.chunks_exact(4).zip(a.shift.iter_mut()).zip(
                a.sum
                    .iter_mut()
                    .zip(a.sumsq.iter_mut())
                    .zip(a.mains.iter_mut()),
            );
            let mut reference_x = 0.0;
            for (c, ((b, shift), ((sum, sumsq), g))) in cells.enumerate() {
                let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if first {
                    *shift = f64::from(v);
                }
                let x = f64::from(v) - *shift;
                *sum += x;
                *sumsq += x * x;
                let xw = x * w;
                g[0].push(self.mains_coeff[0], xw);
                g[1].push(self.mains_coeff[1], xw);
                if c == self.reference {
                    reference_x = xw;
                }
            }
            for ((b, (mn, mx)), (at_mn, at_mx)) in row
                .chunks_exact(4)
                .zip(a.min.iter_mut().zip(a.max.iter_mut()))
                .zip(a.at_min.iter_mut().zip(a.at_max.iter_mut()))
            {
                let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if v < *mn {
                    *mn = v;
                    *at_mn = 1;
                } else if v == *mn {
                    *at_mn += 1;
                }
                if v > *mx {
                    *mx = v;
                    *at_mx = 1;
                } else if v == *mx {
                    *at_mx += 1;
                }
            }
            if scan_on {
                for (g, &coeff) in a.scan.iter_mut().zip(&self.scan_coeff) {
                    g.push(coeff, reference_x);
                }
            }
            self.n += 1;
            if self.n == self.window_len {
                self.finish_window(scan_on);
            }
        }
    }

    fn finish_window(&mut self, scan_on: bool) {
        let n = self.n as f64;
        let a = &self.acc;
        let to_amp = 2.0 / self.hann_sum;
        let mut rms = Vec::with_capacity(self.analysed.len());
        let mut amps: Vec<[f64; 2]> = Vec::with_capacity(self.analysed.len());
        for &(c, scale) in &self.analysed {
            let mean = a.sum[c] / n;
            let var = (a.sumsq[c] / n - mean * mean).max(0.0);
            rms.push(var.sqrt() * scale.abs());
            amps.push(
                [0, 1].map(|k| a.mains[c][k].magnitude(self.mains_coeff[k]) * to_amp * scale.abs()),
            );
        }
        let median_rms = median(&mut rms.clone());
        let health: Vec<ChannelHealth> = self
            .analysed
            .iter()
            .zip(&rms)
            .map(|(&(c, _), &r)| {
                let (mn, mx) = (a.min[c], a.max[c]);
                let railed = (f64::from(a.at_min[c].max(a.at_max[c]))) >= RAILED_FRACTION * n;
                if i64::from(mx) - i64::from(mn) <= 1 || r < FLAT_RMS_FRACTION * median_rms {
                    ChannelHealth::Flat
                } else if mn == i32::MIN || mx == i32::MAX || railed {
                    ChannelHealth::Saturated
                } else if median_rms > 0.0 && r > NOISY_RMS_FACTOR * median_rms {
                    ChannelHealth::Noisy
                } else {
                    ChannelHealth::Ok
                }
            })
            .collect();
        // The mains line: the candidate with the larger median amplitude over the channels
        // that are not flat.
        let live: Vec<usize> = (0..health.len())
            .filter(|&i| health[i] != ChannelHealth::Flat)
            .collect();
        let med = |k: usize| median(&mut live.iter().map(|&i| amps[i][k]).collect::<Vec<_>>());
        let (a50, a60) = (med(0), med(1));
        let k = usize::from(a60 > a50);
        let mains_hz = MAINS_CANDIDATES_HZ[k];
        self.out.mains_hz = mains_hz;
        self.out.mains_amplitude = a50.max(a60);
        self.out.mains_peak_hz = 0.0;
        if scan_on && let Some((peak_hz, gain)) = self.peak_near(mains_hz) {
            // The line may sit off the nominal frequency: the amplitude is the peak's.
            self.out.mains_peak_hz = peak_hz;
            self.out.mains_amplitude *= gain;
        }
        // Next window's reference: the channel with the median mains amplitude.
        let mut by_amp: Vec<usize> = live
            .iter()
            .copied()
            .filter(|&i| health[i] != ChannelHealth::Saturated)
            .collect();
        by_amp.sort_by(|&x, &y| amps[x][k].total_cmp(&amps[y][k]));
        if let Some(&i) = by_amp.get(by_amp.len() / 2) {
            self.reference = self.analysed[i].0;
        }
        self.out.rms = rms.iter().map(|&r| r as f32).collect();
        self.out.health = health;
        self.out.median_rms = median_rms;
        self.out.window_s = n / self.rate_hz;
        self.out.windows += 1;
        self.acc.reset(self.nch);
        self.n = 0;
    }

    /// Frequency of the largest scan point within [`PEAK_SEARCH_HZ`] of `mains_hz`, refined
    /// by a parabola through the log magnitudes of it and its neighbours; with the ratio of
    /// the peak's magnitude to the magnitude at `mains_hz` (1 to 3).
    fn peak_near(&self, mains_hz: f64) -> Option<(f64, f64)> {
        let mags: Vec<f64> = self
            .acc
            .scan
            .iter()
            .zip(&self.scan_coeff)
            .map(|(g, &c)| g.magnitude(c))
            .collect();
        let freq = |k: usize| SCAN_LO_HZ + k as f64 * SCAN_STEP_HZ;
        let best = (0..SCAN_POINTS)
            .filter(|&k| (freq(k) - mains_hz).abs() <= PEAK_SEARCH_HZ)
            .max_by(|&x, &y| mags[x].total_cmp(&mags[y]));
        let k = best?;
        let at_mains = ((mains_hz - SCAN_LO_HZ) / SCAN_STEP_HZ).round() as usize;
        let gain = |ln_peak: f64| match mags.get(at_mains) {
            Some(&m) if m > 0.0 => (ln_peak - m.ln()).exp().clamp(1.0, 3.0),
            _ => 1.0,
        };
        if k == 0 || k + 1 >= SCAN_POINTS || mags[k] <= 0.0 {
            return Some((freq(k), gain(mags[k].max(1e-300).ln())));
        }
        let (l, m, r) = (
            mags[k - 1].max(1e-300).ln(),
            mags[k].ln(),
            mags[k + 1].max(1e-300).ln(),
        );
        let den = l - 2.0 * m + r;
        let delta = if den < 0.0 {
            (0.5 * (l - r) / den).clamp(-0.5, 0.5)
        } else {
            0.0
        };
        let ln_peak = m - 0.25 * (l - r) * delta;
        Some((freq(k) + delta * SCAN_STEP_HZ, gain(ln_peak)))
    }

    /// Median RMS of the last completed window, `None` before the first.
    pub fn median_rms(&self) -> Option<f64> {
        (self.out.windows > 0).then_some(self.out.median_rms)
    }

    /// The figures of the last completed window (counters left at zero for the caller).
    pub fn snapshot(&self) -> MegSnapshot {
        self.out.clone()
    }
}

/// Cumulative counts when a frame started (its first complete event), at its transmit time.
#[derive(Clone, Copy, Debug)]
struct Checkpoint {
    t_ns: i64,
    frames: u64,
    events: u64,
    bytes: u64,
}

/// Live figures of one ultrasound RF stream.
pub struct UsPanel {
    started: Instant,
    events: u64,
    frames: u64,
    bytes: u64,
    last_frame: Option<u64>,
    /// Whether the checkpoints' times are the fitted tx clock.
    tx_clock: bool,
    window: VecDeque<Checkpoint>,
    last_amplitude_ns: Option<i64>,
    element_rms: Vec<f32>,
    element_peak: Vec<f32>,
    amplitude_event: Option<(u64, u16)>,
}

impl Default for UsPanel {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            events: 0,
            frames: 0,
            bytes: 0,
            last_frame: None,
            tx_clock: false,
            window: VecDeque::new(),
            last_amplitude_ns: None,
            element_rms: Vec::new(),
            element_peak: Vec::new(),
            amplitude_event: None,
        }
    }
}

impl UsPanel {
    /// Takes one complete event on its way to the writer: `t_tx_ns` is its corrected transmit
    /// time (`None` before the tx clock is fitted: wall-clock time is used then), `samples`
    /// its `n_channels * n_samples` little-endian i16, channel-major. The per-element
    /// amplitudes are computed on at most one event per 100 ms of stream time.
    pub fn push_event(
        &mut self,
        frame_no: u64,
        tx_index: u16,
        t_tx_ns: Option<i64>,
        n_channels: usize,
        samples: &[u8],
    ) {
        let tx_clock = t_tx_ns.is_some();
        let t_ns = t_tx_ns.unwrap_or_else(|| self.started.elapsed().as_nanos() as i64);
        let went_back = self.window.back().is_some_and(|b| t_ns < b.t_ns);
        if tx_clock != self.tx_clock || went_back {
            // Another time base (or the board clock restarted): the old checkpoints cannot be
            // compared with the new ones.
            self.tx_clock = tx_clock;
            self.window.clear();
            self.last_amplitude_ns = None;
        }
        if self.last_frame != Some(frame_no) {
            self.last_frame = Some(frame_no);
            self.window.push_back(Checkpoint {
                t_ns,
                frames: self.frames,
                events: self.events,
                bytes: self.bytes,
            });
            self.frames += 1;
            while self.window.len() > 2 && self.window[1].t_ns <= t_ns - US_RATE_WINDOW_NS {
                self.window.pop_front();
            }
        }
        self.events += 1;
        self.bytes += samples.len() as u64;
        let due = self
            .last_amplitude_ns
            .is_none_or(|last| t_ns - last >= US_AMPLITUDE_EVERY_NS || t_ns < last);
        if due && n_channels > 0 && samples.len() >= 2 * n_channels {
            self.last_amplitude_ns = Some(t_ns);
            self.amplitudes(frame_no, tx_index, n_channels, samples);
        }
    }

    fn amplitudes(&mut self, frame_no: u64, tx_index: u16, n_channels: usize, samples: &[u8]) {
        let per = samples.len() / 2 / n_channels;
        self.element_rms.clear();
        self.element_peak.clear();
        for ch in samples.chunks_exact(2 * per).take(n_channels) {
            let (mut ss, mut peak) = (0.0f64, 0i32);
            for b in ch.chunks_exact(2) {
                let v = i32::from(i16::from_le_bytes([b[0], b[1]]));
                ss += f64::from(v * v);
                peak = peak.max(v.abs());
            }
            self.element_rms
                .push((ss / per.max(1) as f64).sqrt() as f32);
            self.element_peak.push(peak as f32);
        }
        self.amplitude_event = Some((frame_no, tx_index));
    }

    /// The figures now; `events_incomplete` from the reassembler.
    pub fn snapshot(&self, events_incomplete: u64) -> UsSnapshot {
        let (mut frames_per_s, mut events_per_s, mut mb_per_s) = (0.0, 0.0, 0.0);
        if let (Some(a), Some(b)) = (self.window.front(), self.window.back()) {
            let dt = (b.t_ns - a.t_ns) as f64 / 1e9;
            if dt > 0.0 {
                frames_per_s = (b.frames - a.frames) as f64 / dt;
                events_per_s = (b.events - a.events) as f64 / dt;
                mb_per_s = (b.bytes - a.bytes) as f64 / dt / 1e6;
            }
        }
        UsSnapshot {
            events_written: self.events,
            events_incomplete,
            frames: self.frames,
            frames_per_s,
            events_per_s,
            mb_per_s,
            rf_bytes: self.bytes,
            rates_from_tx_clock: self.tx_clock,
            element_rms: self.element_rms.clone(),
            element_peak: self.element_peak.clone(),
            amplitude_event: self.amplitude_event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of 4 channels: 0 a sine of `f` Hz and amplitude `amp` counts plus an offset,
    /// 1 constant, 2 ten times channel 0, 3 0.9 times it.
    fn block(first: usize, n: usize, rate: f64, f: f64, amp: f64) -> Vec<u8> {
        let mut out = Vec::new();
        for s in first..first + n {
            let t = s as f64 / rate;
            let x = amp * (std::f64::consts::TAU * f * t).sin();
            for v in [x + 1000.0, 77.0, 10.0 * x, x * 0.9] {
                out.extend_from_slice(&(v.round() as i32).to_le_bytes());
            }
        }
        out
    }

    #[test]
    fn meg_window_finds_mains_rms_and_health() {
        for f in [50.0, 60.0, 50.7] {
            let mut p = MegPanel::new(None);
            let rate = 1200.5;
            let mut first = 0;
            while p.out.windows < 2 {
                p.push_block(&block(first, 37, rate, f, 5000.0), 37, 4, rate, false);
                first += 37;
            }
            let s = p.snapshot();
            assert_eq!(s.unit, "counts");
            assert_eq!(s.rms.len(), 4);
            let true_rms = 5000.0 / 2f64.sqrt();
            assert!((f64::from(s.rms[0]) / true_rms - 1.0).abs() < 0.01, "{s:?}");
            assert_eq!(s.health[1], ChannelHealth::Flat);
            assert_eq!(s.health[0], ChannelHealth::Ok);
            assert_eq!(s.health[2], ChannelHealth::Noisy, "{s:?}");
            let expect_mains = if f < 55.0 { 50.0 } else { 60.0 };
            assert_eq!(s.mains_hz, expect_mains);
            assert!((s.mains_peak_hz - f).abs() < 0.1, "{f}: {s:?}");
            // Median over the channels that are not flat (4500, 5000, 50000).
            assert!((s.mains_amplitude / 5000.0 - 1.0).abs() < 0.05, "{s:?}");
        }
    }

    #[test]
    fn meg_railed_channel_is_saturated() {
        let mut p = MegPanel::new(None);
        let rate = 1000.0;
        let mut data = Vec::new();
        for s in 0..1000usize {
            let x = 3000.0 * (s as f64 * 0.3).sin();
            for v in [x, x * 1.1, x.min(1500.0), x * 0.9] {
                data.extend_from_slice(&(v.round() as i32).to_le_bytes());
            }
        }
        p.push_block(&data, 1000, 4, rate, false);
        let s = p.snapshot();
        assert_eq!(s.windows, 1);
        assert_eq!(s.health[2], ChannelHealth::Saturated, "{s:?}");
        assert_eq!(s.health_counts(), (3, 0, 1, 0));
    }

    #[test]
    fn meg_bad_shapes_and_rates_never_panic() {
        let mut p = MegPanel::new(None);
        let junk: Vec<u8> = (0..4099u32).map(|i| (i * 37 % 251) as u8).collect();
        for (n, nch, rate, trig) in [
            (10, 0, 1000.0, true),
            (10, 1, 1000.0, true),
            (1000, 3, 1000.0, false),
            (5, 7, f64::NAN, false),
            (5, 7, 0.0, false),
            (5, 7, -3.0, false),
            (50, 2, 4.0e9, true),
            (65535, 193, 6000.0, true),
            (3, 1, 1.0, false),
        ] {
            for _ in 0..40 {
                p.push_block(&junk, n, nch, rate, trig);
            }
            let s = p.snapshot();
            assert_eq!(s.rms.len(), s.health.len());
            assert!(p.window_len <= MAX_WINDOW_SAMPLES);
        }
    }

    #[test]
    fn us_rates_restart_when_the_tx_clock_goes_back() {
        let mut p = UsPanel::default();
        let ev = vec![0u8; 16];
        for f in 0..400u64 {
            // A board clock reset after frame 199: times restart from 0.
            let t = (f % 200) as i64 * 5_000_000;
            p.push_event(f, 0, Some(t), 2, &ev);
        }
        let s = p.snapshot(0);
        assert!((s.frames_per_s - 200.0).abs() < 1e-6, "{s:?}");
        assert_eq!(s.frames, 400);
    }

    #[test]
    fn us_rates_follow_the_tx_clock() {
        let mut p = UsPanel::default();
        let ev = vec![0u8; 2 * 4 * 10];
        // 250 frames/s, 3 transmits per frame, 1 ms apart.
        for f in 0..500u64 {
            for tx in 0..3u16 {
                let t = f as i64 * 4_000_000 + i64::from(tx) * 1_000_000;
                p.push_event(f, tx, Some(t), 4, &ev);
            }
        }
        let s = p.snapshot(2);
        assert!(s.rates_from_tx_clock);
        assert!((s.frames_per_s - 250.0).abs() < 1e-6, "{s:?}");
        assert!((s.events_per_s - 750.0).abs() < 1e-6, "{s:?}");
        assert!((s.mb_per_s - 750.0 * 80.0 / 1e6).abs() < 1e-9, "{s:?}");
        assert_eq!(
            (s.frames, s.events_written, s.events_incomplete),
            (500, 1500, 2)
        );
        assert_eq!(s.element_rms, vec![0.0; 4]);
    }
}
