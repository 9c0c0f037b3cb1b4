//! `scandaq calibrate energy`: photopeaks in the ToT spectra.
//!
//! 1. The raw files go through the kernel with the TDC table only, so each single carries its
//!    ToT in ns; ToT spectra are filled per (channel, TAC), 0.2 ns bins up to 400 ns.
//! 2. Per channel, the 511 keV photopeak (and the 1274.5 keV line of Na-22 when present) is
//!    found on the sum of its TACs: the most prominent local maxima of the smoothed spectrum
//!    above `--min-tot-ns`; a pair whose ToT ratio the model `ToT = a ln(1 + E/b)` can give for
//!    511 and 1274.5 keV is taken as the two lines, else the most prominent peak is 511 keV.
//! 3. Each TAC's 511 keV peak is located near the channel's; the differences are the TACs'
//!    energy-branch offsets, written into `t0` of the TDC table's E entries (the mean over a
//!    channel's TACs is absorbed by the energy curve).
//! 4. On the aligned spectrum the peaks are refined (Gaussian = parabola in log counts) and
//!    the curve `E = b (exp(ToT/a) − 1)` is solved through them: two lines fix both `a` and
//!    `b` (the ratio of the two ToTs fixes `b`); with the 511 keV line alone, `a` is fixed to
//!    the median `a` of the two-line channels (or `--fixed-a-ns`, default 80 ns) and `b`
//!    follows.

use super::report::Report;
use super::tdc::summarise_stream;
use super::write_table;
use super::{check_inputs, copy_map_or_from, for_each_calibrated_batch, load_tdc, median};
use crate::process::calib_load::names;
use anyhow::{Result, bail};
use rayon::prelude::*;
use scandaq_core::calib::{Branch, EnergyEntry};
use scandaq_core::{Calibration, EnergyTable};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// Width of a ToT bin, ns.
pub const BIN_NS: f64 = 0.2;
/// Bins of a ToT spectrum (0 to 400 ns).
pub const BINS: usize = 2000;
/// The annihilation line, keV.
pub const E_511: f64 = 511.0;

/// Options of `scandaq calibrate energy`.
#[derive(Clone, Debug)]
pub struct EnergyOptions {
    /// Raw files.
    pub files: Vec<PathBuf>,
    /// TDC table (file or directory).
    pub tdc: PathBuf,
    /// Output calibration directory.
    pub out: PathBuf,
    /// Channel map to copy into `out` (default: the one beside the TDC table, if any).
    pub geometry: Option<PathBuf>,
    /// Second line, keV (1274.5 for Na-22); 0 = only the 511 keV line.
    pub second_line_kev: f64,
    /// Fixed ToT scale `a` (ns) for channels with one line.
    pub fixed_a_ns: Option<f64>,
    /// Peaks below this ToT (dark counts, noise) are ignored, ns.
    pub min_tot_ns: f64,
    /// Fewest hits a channel needs.
    pub min_hits: u64,
}

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

fn smooth(hist: &[f64], sigma_bins: f64) -> Vec<f64> {
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
fn refine(hist: &[f64], s: &[f64], guess: usize, window: usize) -> Option<Peak> {
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
fn find_lines(hist: &[f64], min_bin: usize, second_kev: f64) -> (Option<Peak>, Option<Peak>) {
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
fn add_shifted(dst: &mut [f64], src: &[u32], shift_ns: f64) {
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

/// What the fit found for one channel.
#[derive(Clone, Debug)]
struct ChannelResult {
    channel: u32,
    hits: u64,
    /// Per TAC: 511 keV peak ToT (ns), if found.
    tac_peaks: [Option<f64>; 4],
    peak_511: Option<Peak>,
    peak_2: Option<Peak>,
}

fn analyse_channel(
    channel: u32,
    tacs: &[Vec<u32>; 4],
    min_bin: usize,
    second_kev: f64,
) -> ChannelResult {
    let hits: u64 = tacs.iter().flatten().map(|&c| u64::from(c)).sum();
    let mut sum = vec![0.0; BINS];
    for t in tacs {
        add_shifted(&mut sum, t, 0.0);
    }
    let (p511, _) = find_lines(&sum, min_bin, second_kev);
    let mut tac_peaks = [None; 4];
    if let Some(p) = p511 {
        let guess = (p.tot_ns / BIN_NS) as usize;
        for (k, t) in tacs.iter().enumerate() {
            let h: Vec<f64> = t.iter().map(|&c| f64::from(c)).collect();
            if h.iter().sum::<f64>() < 50.0 {
                continue;
            }
            let s = smooth(&h, 1.0 / BIN_NS);
            tac_peaks[k] = refine(&h, &s, guess, (8.0 / BIN_NS) as usize).map(|p| p.tot_ns);
        }
    }
    let found: Vec<f64> = tac_peaks.iter().flatten().copied().collect();
    let mean = if found.is_empty() {
        0.0
    } else {
        found.iter().sum::<f64>() / found.len() as f64
    };
    let mut aligned = vec![0.0; BINS];
    for (k, t) in tacs.iter().enumerate() {
        add_shifted(&mut aligned, t, tac_peaks[k].map_or(0.0, |p| mean - p));
    }
    let (peak_511, peak_2) = find_lines(&aligned, min_bin, second_kev);
    ChannelResult {
        channel,
        hits,
        tac_peaks,
        peak_511,
        peak_2,
    }
}

/// Runs `scandaq calibrate energy`.
pub fn run(opts: &EnergyOptions) -> Result<Report> {
    check_inputs(&opts.files)?;
    let mut tdc = load_tdc(&opts.tdc)?;
    let cal = Calibration {
        tdc: tdc.clone(),
        ..Default::default()
    };
    let mut hists: HashMap<u32, [Vec<u32>; 4]> = HashMap::new();
    let counts = for_each_calibrated_batch(&opts.files, &cal, |_, b| {
        for i in 0..b.len() {
            let tot = f64::from(b.energy_kev[i]);
            let bin = (tot / BIN_NS).floor();
            if bin >= 0.0 && (bin as usize) < BINS {
                let h = hists
                    .entry(b.channel[i])
                    .or_insert_with(|| std::array::from_fn(|_| vec![0u32; BINS]));
                h[usize::from(b.tac[i] & 3)][bin as usize] += 1;
            }
        }
        Ok(())
    })?;
    if hists.is_empty() {
        bail!(
            "no calibrated hits in {} file(s) ({} hits read): does the TDC table belong to these files?",
            counts.files,
            counts.hits
        );
    }
    let min_bin = (opts.min_tot_ns / BIN_NS) as usize;
    let mut channels: Vec<u32> = hists.keys().copied().collect();
    channels.sort_unstable();
    let results: Vec<ChannelResult> = channels
        .par_iter()
        .map(|ch| analyse_channel(*ch, &hists[ch], min_bin, opts.second_line_kev))
        .collect();

    let mut report = Report::new("energy");
    report.line(format!(
        "method: photopeaks in the ToT spectra; TACs aligned on the 511 keV peak (E-branch t0); E = b (exp(ToT/a) - 1) through 511{} keV",
        if opts.second_line_kev > E_511 {
            format!(" and {}", opts.second_line_kev)
        } else {
            String::new()
        }
    ));
    summarise_stream(&mut report, &counts);

    // Two-line fits first (they set the fixed `a` for one-line channels).
    let mut fits: BTreeMap<u32, (f64, f64, bool)> = BTreeMap::new();
    for r in &results {
        if let (Some(p1), Some(p2)) = (r.peak_511, r.peak_2)
            && let Some(b) = solve_b(p2.tot_ns / p1.tot_ns, E_511, opts.second_line_kev)
        {
            let a = p1.tot_ns / (1.0 + E_511 / b).ln();
            fits.insert(r.channel, (a, b, true));
        }
    }
    let two_line_a: Vec<f64> = fits.values().map(|f| f.0).collect();
    let fixed_a = opts
        .fixed_a_ns
        .or_else(|| median(&two_line_a))
        .unwrap_or(80.0);
    let mut table = EnergyTable::default();
    let (mut res, mut hits_v, mut avals, mut bvals, mut tac_spread) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut one_line = 0usize;
    for r in &results {
        hits_v.push(r.hits as f64);
        if r.hits < opts.min_hits {
            report.outlier(
                r.channel,
                None,
                None,
                format!("too few hits ({} < {}): no entry", r.hits, opts.min_hits),
            );
            continue;
        }
        let Some(p1) = r.peak_511 else {
            report.outlier(
                r.channel,
                None,
                None,
                "no 511 keV photopeak found in the ToT spectrum: no entry".into(),
            );
            continue;
        };
        let (a, b) = match fits.get(&r.channel) {
            Some(&(a, b, _)) => (a, b),
            None => {
                one_line += 1;
                if opts.second_line_kev > E_511 {
                    report.outlier(
                        r.channel,
                        None,
                        None,
                        format!(
                            "{} keV line not found: a fixed to {fixed_a:.2} ns, b from the 511 keV peak",
                            opts.second_line_kev
                        ),
                    );
                }
                let b = E_511 / ((p1.tot_ns / fixed_a).exp() - 1.0);
                (fixed_a, b)
            }
        };
        if !(a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0) {
            report.outlier(
                r.channel,
                None,
                None,
                format!("fit failed (a = {a}, b = {b}): no entry"),
            );
            continue;
        }
        table
            .entries
            .insert(r.channel, EnergyEntry { a_ns: a, b_kev: b });
        avals.push(a);
        bvals.push(b);
        // Resolution at 511 keV: sigma_E = sigma_ToT dE/dToT = sigma_ToT (E + b) / a.
        res.push(2.355 * p1.sigma_ns * (E_511 + b) / a / E_511);
        // TAC alignment: E-branch t0 += (peak_tac - mean) / period_ns.
        let found: Vec<f64> = r.tac_peaks.iter().flatten().copied().collect();
        let mean = found.iter().sum::<f64>() / found.len().max(1) as f64;
        if let (Some(lo), Some(hi)) = (
            found.iter().copied().reduce(f64::min),
            found.iter().copied().reduce(f64::max),
        ) {
            tac_spread.push(hi - lo);
        }
        for (tac, p) in r.tac_peaks.iter().enumerate() {
            match p {
                Some(p) => {
                    if let Some(e) = tdc.entries.get_mut(&(r.channel, tac as u8, Branch::E)) {
                        e.t0 += (p - mean) * 1000.0 / counts.period_ps;
                    }
                }
                None => {
                    if tdc.get(r.channel, tac as u8, Branch::E).is_some() {
                        report.outlier(
                            r.channel,
                            Some(tac as u8),
                            Some('E'),
                            "511 keV peak not found for this TAC: its energy-branch offset is unchanged".into(),
                        );
                    }
                }
            }
        }
    }
    if table.entries.is_empty() {
        bail!(
            "no channel could be energy-calibrated:\n{}",
            report.to_text()
        );
    }
    // Resolution outliers: more than twice the median.
    let med_res = median(&res).unwrap_or(0.0);
    for (ch, r) in table.entries.keys().zip(&res) {
        if *r > 2.0 * med_res {
            report.outlier(
                *ch,
                None,
                None,
                format!(
                    "511 keV resolution {:.1} % FWHM, over twice the median {:.1} %",
                    100.0 * r,
                    100.0 * med_res
                ),
            );
        }
    }
    report.line(format!(
        "{} of {} channels calibrated ({} with two lines, {one_line} with the 511 keV line only, a fixed to {fixed_a:.2} ns there)",
        table.entries.len(),
        results.len(),
        table.entries.len() - one_line
    ));
    report.metric("channels_calibrated", table.entries.len() as f64);
    report.metric(
        "channels_two_lines",
        (table.entries.len() - one_line) as f64,
    );
    report.metric("hits_per_channel_median", median(&hits_v).unwrap_or(0.0));
    report.metric("a_ns_median", median(&avals).unwrap_or(0.0));
    report.metric("b_kev_median", median(&bvals).unwrap_or(0.0));
    report.metric("resolution_511_fwhm_pct_median", 100.0 * med_res);
    report.metric(
        "tac_peak_spread_ns_median",
        median(&tac_spread).unwrap_or(0.0),
    );
    let mut path = write_table(&opts.out, names::ENERGY, &table.to_text())?;
    report.files.push(path.display().to_string());
    path = write_table(&opts.out, names::TDC, &tdc.to_text())?;
    report.files.push(format!(
        "{} (energy-branch TAC offsets refined)",
        path.display()
    ));
    if copy_map_or_from(opts.geometry.as_deref(), &opts.tdc, &opts.out)?.is_some() {
        report
            .files
            .push(opts.out.join(names::MAP).display().to_string());
    }
    report.finish(&opts.out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
