//! The skew fit: least-squares offsets of the (channel, TAC) unknowns from the stored
//! coincidences (conjugate gradients on the graph Laplacian, matrix free), refitted three
//! times without the coincidences over 3 robust sigma, and the FWHM measure of its quality.

use super::super::median;

/// A stored coincidence: unknowns (channel-TAC indices) and measured-minus-geometric TOF.
#[derive(Clone, Copy, Debug)]
pub(super) struct Event {
    pub(super) a: u32,
    pub(super) b: u32,
    pub(super) y: f32,
}

/// `L x` for the Laplacian of the kept events.
fn laplacian(events: &[Event], keep: &[bool], x: &[f64], out: &mut [f64]) {
    out.iter_mut().for_each(|v| *v = 0.0);
    for (e, &k) in events.iter().zip(keep) {
        if k {
            let d = x[e.a as usize] - x[e.b as usize];
            out[e.a as usize] += d;
            out[e.b as usize] -= d;
        }
    }
}

/// Least-squares offsets (mean 0 over unknowns with data) by conjugate gradients.
pub(super) fn solve(events: &[Event], keep: &[bool], n: usize) -> Vec<f64> {
    let mut b = vec![0.0; n];
    let mut has = vec![false; n];
    for (e, &k) in events.iter().zip(keep) {
        if k {
            b[e.a as usize] += f64::from(e.y);
            b[e.b as usize] -= f64::from(e.y);
            has[e.a as usize] = true;
            has[e.b as usize] = true;
        }
    }
    let dot = |u: &[f64], v: &[f64]| u.iter().zip(v).map(|(a, b)| a * b).sum::<f64>();
    let mut x = vec![0.0; n];
    let mut r = b.clone();
    let mut p = r.clone();
    let mut ap = vec![0.0; n];
    let mut rr = dot(&r, &r);
    let stop = 1e-14 * rr.max(1e-300);
    for _ in 0..(4 * n).max(50) {
        if rr <= stop {
            break;
        }
        laplacian(events, keep, &p, &mut ap);
        let pap = dot(&p, &ap);
        if pap <= 0.0 {
            break;
        }
        let alpha = rr / pap;
        for i in 0..n {
            x[i] += alpha * p[i];
            r[i] -= alpha * ap[i];
        }
        let rr_new = dot(&r, &r);
        let beta = rr_new / rr;
        rr = rr_new;
        for i in 0..n {
            p[i] = r[i] + beta * p[i];
        }
    }
    let m = has.iter().filter(|h| **h).count().max(1) as f64;
    let mean = x
        .iter()
        .zip(&has)
        .filter(|(_, h)| **h)
        .map(|(v, _)| v)
        .sum::<f64>()
        / m;
    for (v, h) in x.iter_mut().zip(&has) {
        *v = if *h { *v - mean } else { 0.0 };
    }
    x
}

/// The result of the robust fit.
pub(super) struct Fit {
    /// Offset of each unknown, ps (mean 0 over the unknowns with data).
    pub(super) offsets_ps: Vec<f64>,
    /// Whether each coincidence was kept by the last round.
    pub(super) keep: Vec<bool>,
    /// Robust sigma of the residuals of the last round, ps.
    pub(super) sigma_ps: f64,
    /// Coincidences kept by the last round.
    pub(super) kept: usize,
    /// FWHM of measured-minus-geometric time before the fit.
    pub(super) fwhm_before_ps: Option<f64>,
    /// FWHM of the residuals of all coincidences after it.
    pub(super) fwhm_after_ps: Option<f64>,
}

impl Fit {
    /// Solves for `n` unknowns: three rounds, each dropping the coincidences more than
    /// 3 robust sigma (at least 30 ps) from the previous round's fit.
    pub(super) fn solve(events: &[Event], n: usize) -> Self {
        // Before calibration: spread of y itself.
        let ys: Vec<f64> = events.iter().map(|e| f64::from(e.y)).collect();
        let fwhm_before_ps = fwhm_ps(&ys);
        let mut keep = vec![true; events.len()];
        let mut x = vec![0.0; n];
        let mut sigma = 0.0;
        for _round in 0..3 {
            x = solve(events, &keep, n);
            let res: Vec<f64> = events.iter().map(|e| residual(e, &x)).collect();
            let abs: Vec<f64> = res.iter().map(|r| r.abs()).collect();
            sigma = 1.4826 * median(&abs).unwrap_or(0.0);
            let cut = (3.0 * sigma).max(30.0);
            for (k, r) in keep.iter_mut().zip(&res) {
                *k = r.abs() <= cut;
            }
        }
        let kept = keep.iter().filter(|k| **k).count();
        let all_residuals: Vec<f64> = events.iter().map(|e| residual(e, &x)).collect();
        Self {
            fwhm_after_ps: fwhm_ps(&all_residuals),
            offsets_ps: x,
            keep,
            sigma_ps: sigma,
            kept,
            fwhm_before_ps,
        }
    }
}

/// What is left of a coincidence's time once the offsets `x` are taken off, ps.
pub(super) fn residual(e: &Event, x: &[f64]) -> f64 {
    f64::from(e.y) - (x[e.a as usize] - x[e.b as usize])
}

/// FWHM (ps) of a set of values, from a 5 ps histogram with linear interpolation of the
/// half-maximum crossings; `None` when there are too few values.
pub fn fwhm_ps(values: &[f64]) -> Option<f64> {
    if values.len() < 50 {
        return None;
    }
    const BIN: f64 = 5.0;
    const HALF_RANGE: f64 = 5000.0;
    let n = (2.0 * HALF_RANGE / BIN) as usize;
    let mut h = vec![0.0f64; n];
    for &v in values {
        let i = ((v + HALF_RANGE) / BIN).floor();
        if i >= 0.0 && (i as usize) < n {
            h[i as usize] += 1.0;
        }
    }
    // Light smoothing (3 bins) against counting noise at the top.
    let s: Vec<f64> = (0..n)
        .map(|i| {
            let lo = i.saturating_sub(1);
            let hi = (i + 1).min(n - 1);
            h[lo..=hi].iter().sum::<f64>() / (hi - lo + 1) as f64
        })
        .collect();
    let top = (0..n).max_by(|&a, &b| s[a].total_cmp(&s[b]))?;
    let half = s[top] / 2.0;
    let mut l = top;
    while l > 0 && s[l] > half {
        l -= 1;
    }
    let mut r = top;
    while r + 1 < n && s[r] > half {
        r += 1;
    }
    let cross = |i_out: usize, i_in: usize| {
        let (a, b) = (s[i_out], s[i_in]);
        let f = if b > a { (half - a) / (b - a) } else { 0.5 };
        i_out as f64 + f * (i_in as f64 - i_out as f64)
    };
    let left = cross(l, l + 1);
    let right = cross(r, r.saturating_sub(1));
    Some((right - left) * BIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_offsets_up_to_the_gauge() {
        let truth = [100.0, -50.0, 20.0, -70.0, 0.0, 30.0];
        let mut events = vec![];
        for a in 0..3u32 {
            for b in 3..6u32 {
                for k in 0..5 {
                    let noise = (k as f64 - 2.0) * 10.0;
                    events.push(Event {
                        a,
                        b,
                        y: (truth[a as usize] - truth[b as usize] + noise) as f32,
                    });
                }
            }
        }
        let keep = vec![true; events.len()];
        let x = solve(&events, &keep, 7);
        let mean = truth.iter().sum::<f64>() / 6.0;
        for i in 0..6 {
            assert!((x[i] - (truth[i] - mean)).abs() < 1e-6, "{i}: {}", x[i]);
        }
        assert_eq!(x[6], 0.0);
    }

    #[test]
    fn fwhm_of_a_gaussian() {
        // Deterministic normal quantiles.
        let n = 20000;
        let v: Vec<f64> = (1..n)
            .map(|i| {
                let p = i as f64 / n as f64;
                // Acklam-free: Box-Muller on a grid is not uniform; use the logistic approx.
                85.0 * 0.5513 * (p / (1.0 - p)).ln() * 1.0
            })
            .collect();
        // Logistic with scale s has FWHM 2 s ln(3 + 2 sqrt 2) = 3.5255 s.
        let s = 85.0 * 0.5513;
        let f = fwhm_ps(&v).unwrap();
        assert!((f - 3.5255 * s).abs() < 10.0, "{f}");
    }
}
