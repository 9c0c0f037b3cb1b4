//! Peak finding in a ToT spectrum: smoothing, local maxima, Gaussian refinement (a parabola
//! in log counts), the two-line model `ToT = a ln(1 + E/b)` and shifting a spectrum by a
//! fraction of a bin.

use super::{BIN_NS, E_511};

/// A peak: centre and Gaussian sigma (ns), prominence (smoothed counts).
#[derive(Clone, Copy, Debug)]
pub struct Peak {
    /// Centre, ns.
    pub tot_ns: f64,
    /// Gaussian sigma, ns.
    pub sigma_ns: f64,
    /// Prominence in the smoothed spectrum.
    pub prominence: f64,
}

pub(super) fn smooth(hist: &[f64], sigma_bins: f64) -> Vec<f64> {
    let r = (3.0 * sigma_bins).ceil() as isize;
    let w: Vec<f64> = (-r..=r)
        .map(|i| (-0.5 * (i as f64 / sigma_bins).powi(2)).exp())
        .collect();
    let n = hist.len() as isize;
    (0..n)
        .map(|i| {
            let (mut s, mut ws) = (0.0, 0.0);
            for (k, wk) in w.iter().enumerate() {
                let j = i + k as isize - r;
                if (0..n).contains(&j) {
                    s += wk * hist[j as usize];
                    ws += wk;
                }
            }
            s / ws
        })
        .collect()
}

/// Local maxima of `s` at or above bin `from`, with their topographic prominence.
fn maxima(s: &[f64], from: usize) -> Vec<(usize, f64)> {
    let mut out = vec![];
    for i in from.max(1)..s.len().saturating_sub(1) {
        if s[i] > s[i - 1] && s[i] >= s[i + 1] && s[i] > 0.0 {
            let mut left_min = s[i];
            let mut j = i;
            while j > 0 && s[j - 1] <= s[i] {
                j -= 1;
                left_min = left_min.min(s[j]);
            }
            let mut right_min = s[i];
            let mut j = i;
            while j + 1 < s.len() && s[j + 1] <= s[i] {
                j += 1;
                right_min = right_min.min(s[j]);
            }
            out.push((i, s[i] - left_min.max(right_min)));
        }
    }
    out
}

/// Refines a peak near bin `guess` (searching ±`window` bins): the smoothed maximum, then a
/// parabola fitted to the log counts within the half-maximum width.
pub(super) fn refine(hist: &[f64], s: &[f64], guess: usize, window: usize) -> Option<Peak> {
    let lo = guess.saturating_sub(window);
    let hi = (guess + window).min(s.len() - 1);
    let top = (lo..=hi).max_by(|&a, &b| s[a].total_cmp(&s[b]))?;
    if s[top] <= 0.0 {
        return None;
    }
    let half = 0.5 * s[top];
    let mut l = top;
    while l > 0 && s[l] > half {
        l -= 1;
    }
    let mut r = top;
    while r + 1 < s.len() && s[r] > half {
        r += 1;
    }
    // The narrower side: the other may sit on a Compton shoulder.
    let hw = (top - l).min(r - top).max(2);
    let (a, b) = (top.saturating_sub(hw), (top + hw).min(s.len() - 1));
    let (mut m, mut v) = ([[0.0; 3]; 3], [0.0; 3]);
    for (i, &c) in hist.iter().enumerate().take(b + 1).skip(a) {
        if c <= 0.0 {
            continue;
        }
        let x = i as f64 - top as f64;
        let basis = [1.0, x, x * x];
        for p in 0..3 {
            for q in 0..3 {
                m[p][q] += c * basis[p] * basis[q];
            }
            v[p] += c * basis[p] * c.ln();
        }
    }
    let fallback = Peak {
        tot_ns: (top as f64 + 0.5) * BIN_NS,
        sigma_ns: hw as f64 * BIN_NS / 1.1774,
        prominence: s[top],
    };
    let Some([_, c1, c2]) = solve3(m, v) else {
        return Some(fallback);
    };
    if c2 >= 0.0 {
        return Some(fallback);
    }
    let centre = -c1 / (2.0 * c2);
    if centre.abs() > hw as f64 {
        return Some(fallback);
    }
    Some(Peak {
        tot_ns: (top as f64 + centre + 0.5) * BIN_NS,
        sigma_ns: (-1.0 / (2.0 * c2)).sqrt() * BIN_NS,
        prominence: s[top],
    })
}

fn solve3(m: [[f64; 3]; 3], v: [f64; 3]) -> Option<[f64; 3]> {
    // Cramer's rule (well conditioned here: x is centred on the peak).
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(m);
    if d.abs() < 1e-300 || !d.is_finite() {
        return None;
    }
    let mut x = [0.0; 3];
    for (k, xk) in x.iter_mut().enumerate() {
        let mut mk = m;
        for r in 0..3 {
            mk[r][k] = v[r];
        }
        *xk = det(mk) / d;
    }
    x.iter().all(|x| x.is_finite()).then_some(x)
}

/// `b` (keV) such that `ln(1 + e2/b) / ln(1 + e1/b) = ratio` (the ToT ratio of two lines);
/// `None` when no positive `b` gives that ratio.
pub fn solve_b(ratio: f64, e1: f64, e2: f64) -> Option<f64> {
    let g = |b: f64| (1.0 + e2 / b).ln() / (1.0 + e1 / b).ln();
    // g increases from 1 (b -> 0) to e2/e1 (b -> infinity).
    let (mut lo, mut hi) = (1e-3f64.ln(), 1e7f64.ln());
    if !(ratio > g(lo.exp()) && ratio < g(hi.exp())) {
        return None;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if g(mid.exp()) < ratio {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some((0.5 * (lo + hi)).exp())
}

/// The 511 keV peak and, if found, the second line's, on a spectrum (bin contents).
pub(super) fn find_lines(
    hist: &[f64],
    min_bin: usize,
    second_kev: f64,
) -> (Option<Peak>, Option<Peak>) {
    let s = smooth(hist, 1.0 / BIN_NS);
    let mut cands = maxima(&s, min_bin);
    cands.sort_by(|a, b| b.1.total_cmp(&a.1));
    cands.truncate(8);
    let Some(&(_, top_prom)) = cands.first() else {
        return (None, None);
    };
    let cands: Vec<(usize, f64)> = cands
        .into_iter()
        .filter(|c| c.1 >= 0.05 * top_prom)
        .collect();
    let window = (10.0 / BIN_NS) as usize;
    let mut best: Option<(f64, usize, usize)> = None;
    if second_kev > E_511 {
        let max_ratio = second_kev / E_511;
        for &(i, pi) in &cands {
            for &(j, pj) in &cands {
                let r = (j as f64 + 0.5) / (i as f64 + 0.5);
                if j > i && r > 1.1 && r < max_ratio * 0.98 {
                    let score = pi.min(pj);
                    if best.is_none_or(|b| score > b.0) {
                        best = Some((score, i, j));
                    }
                }
            }
        }
    }
    match best {
        Some((score, i, j)) if score >= 0.1 * top_prom => (
            refine(hist, &s, i, window / 2),
            refine(hist, &s, j, window / 2),
        ),
        _ => (refine(hist, &s, cands[0].0, window / 2), None),
    }
}

/// Adds `src` shifted by `shift_ns` (linear interpolation between bins) into `dst`.
pub(super) fn add_shifted(dst: &mut [f64], src: &[u32], shift_ns: f64) {
    let shift = shift_ns / BIN_NS;
    let whole = shift.floor();
    let frac = shift - whole;
    let whole = whole as isize;
    let n = dst.len() as isize;
    for (i, &c) in src.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let j = i as isize + whole;
        let c = f64::from(c);
        if (0..n).contains(&j) {
            dst[j as usize] += c * (1.0 - frac);
        }
        if (0..n).contains(&(j + 1)) {
            dst[(j + 1) as usize] += c * frac;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::calibrate::energy::BINS;

    #[test]
    fn solve_b_inverts_the_ratio() {
        for b in [60.0, 150.0, 400.0] {
            let r = (1.0f64 + 1274.5 / b).ln() / (1.0f64 + 511.0 / b).ln();
            let got = solve_b(r, 511.0, 1274.5).unwrap();
            assert!((got - b).abs() / b < 1e-6, "{got} vs {b}");
        }
        assert!(solve_b(0.9, 511.0, 1274.5).is_none());
        assert!(solve_b(3.0, 511.0, 1274.5).is_none());
    }

    #[test]
    fn finds_two_gaussian_lines() {
        let mut h = vec![0.0; BINS];
        for (i, x) in h.iter_mut().enumerate() {
            let t = (i as f64 + 0.5) * BIN_NS;
            *x = 1000.0 * (-0.5 * ((t - 119.3) / 2.9f64).powi(2)).exp()
                + 600.0 * (-0.5 * ((t - 180.2) / 2.1f64).powi(2)).exp()
                + 20.0;
        }
        let (p1, p2) = find_lines(&h, 100, 1274.5);
        let (p1, p2) = (p1.unwrap(), p2.unwrap());
        assert!((p1.tot_ns - 119.3).abs() < 0.05, "{p1:?}");
        assert!((p2.tot_ns - 180.2).abs() < 0.05, "{p2:?}");
        assert!((p1.sigma_ns - 2.9).abs() < 0.2, "{p1:?}");
    }
}
