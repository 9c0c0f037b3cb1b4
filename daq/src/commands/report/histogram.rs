//! Fixed-bin histograms filled batch by batch, and the two measurements the report takes from
//! them: a Gaussian photopeak fit and the full width at half maximum of a peak.

use serde::Serialize;

/// Counts in equal bins from `lo` (values outside are counted apart, not binned).
#[derive(Clone, Debug, Serialize)]
pub(super) struct Histogram {
    /// Low edge of bin 0.
    pub lo: f64,
    /// Bin width.
    pub bin: f64,
    /// Counts per bin.
    pub counts: Vec<u64>,
    /// Values below `lo` or at or above the last edge (NaN included).
    pub outside: u64,
}

impl Histogram {
    /// `n` bins of `bin` from `lo` (at least one bin; a non-positive width becomes 1).
    pub fn new(lo: f64, bin: f64, n: usize) -> Self {
        Self {
            lo,
            bin: if bin > 0.0 && bin.is_finite() {
                bin
            } else {
                1.0
            },
            counts: vec![0; n.max(1)],
            outside: 0,
        }
    }

    /// Adds one value.
    #[inline]
    pub fn add(&mut self, x: f64) {
        let k = (x - self.lo) / self.bin;
        if k >= 0.0 && k < self.counts.len() as f64 {
            self.counts[k as usize] += 1;
        } else {
            self.outside += 1;
        }
    }

    /// Adds one value, a value on the upper edge into the last bin (a closed top).
    #[inline]
    pub fn add_top_closed(&mut self, x: f64) {
        if x == self.hi() {
            if let Some(last) = self.counts.last_mut() {
                *last += 1;
            }
        } else {
            self.add(x);
        }
    }

    /// Centre of bin `k`.
    pub fn centre(&self, k: usize) -> f64 {
        self.lo + (k as f64 + 0.5) * self.bin
    }

    /// Upper edge of the last bin.
    pub fn hi(&self) -> f64 {
        self.lo + self.bin * self.counts.len() as f64
    }

    /// Index of the highest bin (3-bin running sum, so one noisy bin does not win) among
    /// the bins whose centre lies in `[from, to]`.
    fn peak_bin(&self, from: f64, to: f64) -> Option<usize> {
        let n = self.counts.len();
        let smooth = |k: usize| {
            let a = self.counts[k.saturating_sub(1)];
            let c = self.counts[(k + 1).min(n - 1)];
            a + self.counts[k] + c
        };
        (0..n)
            .filter(|&k| (from..=to).contains(&self.centre(k)))
            .max_by_key(|&k| (smooth(k), std::cmp::Reverse(k)))
            .filter(|&k| self.counts[k] > 0)
    }

    /// Full width at half maximum of the highest peak whose centre lies in `[from, to]`:
    /// the half-maximum crossings on both sides, linearly interpolated between bins. The
    /// maximum is the 3-bin mean at the peak. Returns (peak centre, FWHM).
    pub fn fwhm(&self, from: f64, to: f64) -> Option<(f64, f64)> {
        let k = self.peak_bin(from, to)?;
        let n = self.counts.len();
        let y = |i: usize| self.counts[i] as f64;
        let top = (y(k.saturating_sub(1)) + y(k) + y((k + 1).min(n - 1))) / 3.0;
        let half = top / 2.0;
        let mut l = k;
        while l > 0 && y(l) > half {
            l -= 1;
        }
        let mut r = k;
        while r + 1 < n && y(r) > half {
            r += 1;
        }
        if y(l) > half || y(r) > half {
            return None; // the peak runs off the histogram
        }
        // Crossing between bin l (<= half) and l + 1 (> half), and r - 1 (> half) and r.
        let cross = |a: usize, b: usize| {
            let (ya, yb) = (y(a), y(b));
            let f = if yb != ya {
                (half - ya) / (yb - ya)
            } else {
                0.5
            };
            self.centre(a) + f * (self.centre(b) - self.centre(a))
        };
        let left = cross(l, l + 1);
        let right = cross(r, r - 1);
        Some((self.centre(k), right - left))
    }

    /// Gaussian fit of the highest peak whose centre lies in `[from, to]`: a least-squares
    /// parabola through the logarithm of the counts (weighted by the counts) over the bins
    /// within 1.2 half widths of the peak, refined twice around the fitted centre. Returns
    /// (mean, sigma, amplitude) or None when there is no clear peak.
    pub fn gaussian_peak(&self, from: f64, to: f64) -> Option<Gaussian> {
        let (mut mean, width) = self.fwhm(from, to)?;
        let mut sigma = width / 2.3548;
        let mut fit = None;
        for _ in 0..3 {
            let lo = mean - 1.2 * 1.1774 * sigma;
            let hi = mean + 1.2 * 1.1774 * sigma;
            let points: Vec<(f64, f64)> = (0..self.counts.len())
                .filter(|&k| (lo..=hi).contains(&self.centre(k)) && self.counts[k] > 0)
                .map(|k| (self.centre(k) - mean, self.counts[k] as f64))
                .collect();
            let g = fit_log_parabola(&points, mean)?;
            if !(from - width..=to + width).contains(&g.mean) {
                return None;
            }
            mean = g.mean;
            sigma = g.sigma;
            fit = Some(g);
        }
        fit
    }
}

/// A fitted Gaussian.
#[derive(Clone, Copy, Debug, Serialize)]
pub(super) struct Gaussian {
    /// Centre.
    pub mean: f64,
    /// Standard deviation.
    pub sigma: f64,
    /// Height at the centre (counts per bin).
    pub amplitude: f64,
}

impl Gaussian {
    /// Full width at half maximum.
    pub fn fwhm(&self) -> f64 {
        2.0 * (2.0 * 2f64.ln()).sqrt() * self.sigma
    }

    /// Height at `x`.
    pub fn at(&self, x: f64) -> f64 {
        self.amplitude * (-0.5 * ((x - self.mean) / self.sigma).powi(2)).exp()
    }
}

/// Weighted least squares of ln y = a + b u + c u² over (u, y) points (u relative to
/// `origin`); a Gaussian when c < 0.
fn fit_log_parabola(points: &[(f64, f64)], origin: f64) -> Option<Gaussian> {
    if points.len() < 3 {
        return None;
    }
    // Normal equations for the weights w = y (the variance of ln y is about 1/y).
    let mut m = [[0.0f64; 3]; 3];
    let mut v = [0.0f64; 3];
    for &(u, y) in points {
        let l = y.ln();
        let p = [1.0, u, u * u];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += y * p[i] * p[j];
            }
            v[i] += y * p[i] * l;
        }
    }
    let [a, b, c] = solve3(m, v)?;
    if c >= 0.0 || !c.is_finite() {
        return None;
    }
    let sigma = (-1.0 / (2.0 * c)).sqrt();
    let u0 = -b / (2.0 * c);
    let amplitude = (a + b * u0 + c * u0 * u0).exp();
    (sigma.is_finite() && amplitude.is_finite()).then_some(Gaussian {
        mean: origin + u0,
        sigma,
        amplitude,
    })
}

/// Solves the 3x3 system by Cramer's rule (None when singular).
fn solve3(m: [[f64; 3]; 3], v: [f64; 3]) -> Option<[f64; 3]> {
    let det = |a: [[f64; 3]; 3]| {
        a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
    };
    let d = det(m);
    if d.abs() < 1e-300 || !d.is_finite() {
        return None;
    }
    let mut out = [0.0; 3];
    for (k, o) in out.iter_mut().enumerate() {
        let mut mk = m;
        for i in 0..3 {
            mk[i][k] = v[i];
        }
        *o = det(mk) / d;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Gaussian of known centre and width drawn bin by bin (expected counts, rounded),
    /// on a flat background.
    fn drawn(mean: f64, sigma: f64) -> Histogram {
        let mut h = Histogram::new(0.0, 2.0, 500);
        for k in 0..500 {
            let x = h.centre(k);
            h.counts[k] =
                (5000.0 * (-0.5 * ((x - mean) / sigma).powi(2)).exp()).round() as u64 + 20;
        }
        h
    }

    #[test]
    fn gaussian_fit_finds_centre_and_width() {
        let h = drawn(511.0, 24.0);
        let g = h.gaussian_peak(400.0, 650.0).unwrap();
        assert!((g.mean - 511.0).abs() < 0.5, "{g:?}");
        assert!((g.fwhm() - 2.3548 * 24.0).abs() < 2.0, "{g:?}");
    }

    #[test]
    fn fwhm_interpolates_half_maximum() {
        let h = drawn(100.0, 10.0);
        let (c, w) = h.fwhm(0.0, 1000.0).unwrap();
        assert!((c - 100.0).abs() <= 1.0);
        // The background raises the half level a little: within 3 % of 2.3548 sigma.
        assert!((w - 23.548).abs() < 0.03 * 23.548, "{w}");
    }

    #[test]
    fn no_peak_in_an_empty_histogram() {
        let h = Histogram::new(0.0, 1.0, 10);
        assert!(h.fwhm(0.0, 10.0).is_none());
        assert!(h.gaussian_peak(0.0, 10.0).is_none());
    }

    #[test]
    fn values_outside_are_counted_apart() {
        let mut h = Histogram::new(0.0, 1.0, 4);
        for x in [-1.0, 0.0, 3.9, 4.0, f64::NAN] {
            h.add(x);
        }
        assert_eq!(h.counts, vec![1, 0, 0, 1]);
        assert_eq!(h.outside, 3);
        h.add_top_closed(4.0);
        h.add_top_closed(4.5);
        assert_eq!(h.counts, vec![1, 0, 0, 2]);
        assert_eq!(h.outside, 4);
    }
}
