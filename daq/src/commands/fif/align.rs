//! Per-channel delay alignment for the FIF export (docs/meg.md §6): shifts every channel by
//! its group delay (`meg_channels.delay_ps`) so all channels' samples refer to the same
//! instants, the block's corrected sample times.
//!
//! A channel's sample *k* shows the field that was there `delay` before the sample's time, so
//! the aligned value at sample *k* is the channel's signal at the fractional position
//! `k + s` with `s = delay_ps · 1e-12 · sfreq` samples. It is interpolated with a
//! Kaiser-windowed sinc of [`HALF_TAPS`]` · 2` taps centred on `k + s`, normalised to unit DC
//! gain (a whole-sample shift is an exact copy). The stream is processed in contiguous
//! segments (a gap ends one): taps falling outside the segment use its first or last sample
//! (edge replication), so the samples within `HALF_TAPS + ceil(s)` of a gap or of the ends are
//! less accurate. Trigger channels are never interpolated (bitmasks are copied as they are).

use std::f64::consts::PI;

/// Taps on each side of the interpolation point.
pub const HALF_TAPS: usize = 16;
/// Kaiser window shape parameter.
pub const KAISER_BETA: f64 = 8.0;

/// How one channel is produced.
#[derive(Clone, Debug)]
struct ChannelFilter {
    /// Offset (samples) of the first tap relative to the output sample.
    first: i64,
    /// Coefficients (one: a plain copy).
    taps: Vec<f64>,
}

/// Modified Bessel function of the first kind, order 0 (series; exact enough for the window).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..60 {
        term *= q / (k as f64 * k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// The interpolation coefficients for a fractional position `mu` in [0, 1) after the
/// sample at tap index `HALF_TAPS - 1`: taps at offsets `-(HALF_TAPS-1) ..= HALF_TAPS`.
pub fn fractional_taps(mu: f64) -> Vec<f64> {
    let half = HALF_TAPS as f64;
    let i0b = bessel_i0(KAISER_BETA);
    let mut taps: Vec<f64> = (-(HALF_TAPS as i64) + 1..=HALF_TAPS as i64)
        .map(|i| {
            let x = i as f64 - mu;
            let sinc = if x == 0.0 {
                1.0
            } else {
                (PI * x).sin() / (PI * x)
            };
            let r = (x / half).clamp(-1.0, 1.0);
            sinc * bessel_i0(KAISER_BETA * (1.0 - r * r).sqrt()) / i0b
        })
        .collect();
    let sum: f64 = taps.iter().sum();
    for t in &mut taps {
        *t /= sum;
    }
    taps
}

/// Aligns a sample-major stream of rows channel by channel; rows go in by their sample index
/// ([`DelayAligner::push`]) and come out, aligned, in order through a callback.
pub struct DelayAligner {
    nch: usize,
    filters: Vec<ChannelFilter>,
    /// Largest tap offset ahead of the output sample.
    ahead: i64,
    /// Largest tap offset behind it.
    behind: i64,
    rows: Vec<i32>,
    buf_start: i64,
    seg_start: i64,
    next_out: i64,
    open: bool,
    out: Vec<f32>,
}

impl DelayAligner {
    /// `shifts[c]`: channel c's delay in samples (delay · sfreq); `interpolate[c]` false
    /// copies the channel unshifted (trigger bitmasks).
    pub fn new(shifts: &[f64], interpolate: &[bool]) -> Self {
        let filters: Vec<ChannelFilter> = shifts
            .iter()
            .zip(interpolate)
            .map(|(&s, &interp)| {
                let s = if s.is_finite() { s } else { 0.0 };
                let whole = s.floor();
                let mu = s - whole;
                if !interp || s == 0.0 {
                    ChannelFilter {
                        first: 0,
                        taps: vec![1.0],
                    }
                } else if mu == 0.0 {
                    ChannelFilter {
                        first: whole as i64,
                        taps: vec![1.0],
                    }
                } else {
                    ChannelFilter {
                        first: whole as i64 - HALF_TAPS as i64 + 1,
                        taps: fractional_taps(mu),
                    }
                }
            })
            .collect();
        let ahead = filters
            .iter()
            .map(|f| f.first + f.taps.len() as i64 - 1)
            .max()
            .unwrap_or(0)
            .max(0);
        let behind = filters.iter().map(|f| -f.first).max().unwrap_or(0).max(0);
        Self {
            nch: shifts.len(),
            filters,
            ahead,
            behind,
            rows: Vec::new(),
            buf_start: 0,
            seg_start: 0,
            next_out: 0,
            open: false,
            out: Vec::new(),
        }
    }

    /// True when no channel is shifted (the output equals the input).
    pub fn is_identity(&self) -> bool {
        self.filters
            .iter()
            .all(|f| f.first == 0 && f.taps.len() == 1)
    }

    fn buf_end(&self) -> i64 {
        self.buf_start + (self.rows.len() / self.nch.max(1)) as i64
    }

    /// Adds `n` rows (`data.len() / nch`) starting at sample `start`; a start after the
    /// previous rows' end closes the segment (a gap). Emits every row that can be computed
    /// as `emit(first_sample, rows)` (sample-major f32).
    pub fn push(&mut self, start: i64, data: &[i32], emit: &mut impl FnMut(i64, &[f32])) {
        if self.nch == 0 {
            return;
        }
        if self.open && start != self.buf_end() {
            self.close(emit);
        }
        if !self.open {
            self.open = true;
            self.rows.clear();
            self.buf_start = start;
            self.seg_start = start;
            self.next_out = start;
        }
        self.rows.extend_from_slice(data);
        let upto = self.buf_end() - self.ahead;
        self.emit_until(upto, emit);
        // Keep only what later outputs still read.
        let keep_from = (self.next_out - self.behind).max(self.buf_start);
        let drop_rows = (keep_from - self.buf_start) as usize;
        if drop_rows > 0 {
            self.rows.drain(..drop_rows * self.nch);
            self.buf_start = keep_from;
        }
    }

    /// Emits the rest of the current segment (edge-replicated at its end).
    pub fn close(&mut self, emit: &mut impl FnMut(i64, &[f32])) {
        if self.open {
            let end = self.buf_end();
            self.emit_until(end, emit);
            self.open = false;
            self.rows.clear();
        }
    }

    fn emit_until(&mut self, upto: i64, emit: &mut impl FnMut(i64, &[f32])) {
        if upto <= self.next_out {
            return;
        }
        let nch = self.nch;
        let lo = self.seg_start;
        let hi = self.buf_end() - 1;
        self.out.clear();
        self.out.reserve((upto - self.next_out) as usize * nch);
        for k in self.next_out..upto {
            for (c, f) in self.filters.iter().enumerate() {
                let v = if f.taps.len() == 1 {
                    let j = (k + f.first).clamp(lo, hi);
                    self.rows[(j - self.buf_start) as usize * nch + c] as f64
                } else if k + f.first >= lo && k + f.first + f.taps.len() as i64 - 1 <= hi {
                    // Every tap inside the segment: a strided dot product.
                    let base = (k + f.first - self.buf_start) as usize * nch + c;
                    f.taps
                        .iter()
                        .zip(self.rows[base..].iter().step_by(nch))
                        .map(|(h, x)| h * f64::from(*x))
                        .sum()
                } else {
                    let mut acc = 0.0;
                    for (i, h) in f.taps.iter().enumerate() {
                        let j = (k + f.first + i as i64).clamp(lo, hi);
                        acc += h * self.rows[(j - self.buf_start) as usize * nch + c] as f64;
                    }
                    acc
                };
                self.out.push(v as f32);
            }
        }
        emit(self.next_out, &self.out);
        self.next_out = upto;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Aligns a whole signal pushed in blocks of `block` rows (one segment).
    fn run(shifts: &[f64], signal: &[Vec<i32>], block: usize) -> Vec<Vec<f32>> {
        let nch = shifts.len();
        let n = signal[0].len();
        let mut a = DelayAligner::new(shifts, &vec![true; nch]);
        let mut out = vec![Vec::new(); nch];
        let mut next = 0i64;
        let mut collect = |first: i64, rows: &[f32]| {
            assert_eq!(first, next, "rows come out in order, without holes");
            for r in rows.chunks(nch) {
                for (c, v) in r.iter().enumerate() {
                    out[c].push(*v);
                }
            }
            next += (rows.len() / nch) as i64;
        };
        let mut k = 0;
        while k < n {
            let m = block.min(n - k);
            let data: Vec<i32> = (k..k + m)
                .flat_map(|i| signal.iter().map(move |ch| ch[i]))
                .collect();
            a.push(k as i64, &data, &mut collect);
            k += m;
        }
        a.close(&mut collect);
        out
    }

    #[test]
    fn fractional_delay_of_sines_is_accurate_below_0_4_fs() {
        // A sine of amplitude 1e5 counts at f (cycles/sample) delayed by s samples: the
        // aligned output must be the sine at k + s.
        let n = 4000;
        for f in [0.01, 0.1, 0.25, 0.4] {
            for s in [0.0, 0.37, 1.2, 3.6, 7.5] {
                let x: Vec<i32> = (0..n)
                    .map(|k| (1e5 * (2.0 * PI * f * k as f64).sin()).round() as i32)
                    .collect();
                let y = run(&[s], &[x], 97);
                assert_eq!(y[0].len(), n);
                let mut worst: f64 = 0.0;
                for (k, got) in y[0].iter().enumerate().take(n - 100).skip(100) {
                    let want = 1e5 * (2.0 * PI * f * (k as f64 + s)).sin();
                    worst = worst.max((*got as f64 - want).abs());
                }
                let rel = worst / 1e5;
                eprintln!("fractional delay: f {f} fs, shift {s}: worst relative error {rel:.2e}");
                let bound = if f <= 0.25 { 1e-4 } else { 3e-4 };
                assert!(rel < bound, "f {f} shift {s}: relative error {rel}");
            }
        }
    }

    #[test]
    fn copies_exactly_streams_in_any_block_size_and_restarts_at_gaps() {
        let x: Vec<i32> = (0..500).map(|k| (k * 7919 % 1000) - 500).collect();
        let whole = run(&[0.0, 2.0, 1.5], &[x.clone(), x.clone(), x.clone()], 500);
        assert_eq!(whole[0], x.iter().map(|&v| v as f32).collect::<Vec<_>>());
        // A whole-sample shift is a copy (the end replicates the last sample).
        for k in 0..500 {
            assert_eq!(whole[1][k], x[(k + 2).min(499)] as f32);
        }
        for block in [1, 7, 64] {
            let y = run(&[0.0, 2.0, 1.5], &[x.clone(), x.clone(), x.clone()], block);
            assert_eq!(y, whole, "block size {block}");
        }
        // A gap: two segments, each aligned on its own.
        let mut a = DelayAligner::new(&[1.0], &[true]);
        let mut got: Vec<(i64, Vec<f32>)> = Vec::new();
        let mut emit = |first: i64, rows: &[f32]| got.push((first, rows.to_vec()));
        a.push(0, &[1, 2, 3], &mut emit);
        a.push(10, &[7, 8], &mut emit);
        a.close(&mut emit);
        let flat: Vec<(i64, f32)> = got
            .iter()
            .flat_map(|(f, r)| r.iter().enumerate().map(move |(i, v)| (f + i as i64, *v)))
            .collect();
        assert_eq!(
            flat,
            vec![(0, 2.0), (1, 3.0), (2, 3.0), (10, 8.0), (11, 8.0)]
        );
    }
}
