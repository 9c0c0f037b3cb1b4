//! `scandaq calibrate skew`: per-channel time offsets from a point source.
//!
//! The raw files go through the kernel with the TDC and energy tables (no skew); the
//! time-ordered singles are paired by the library sorter ([`CoincidenceSorter`]) inside an
//! energy window. Each (channel, TAC) is its own unknown (the sorter sees a channel map whose
//! "crystals" are (channel, TAC) pairs at the channel's position), because the TACs' timing
//! offsets `t0` are not observable by code density. For a coincidence of singles a and b,
//! `y = (t_a − t_b) − (|x_a − s| − |x_b − s|) / c` (measured minus geometric time of flight
//! for source position s) is `o_a − o_b` plus noise. The offsets minimise `Σ (y − o_a + o_b)²`:
//! the normal equations are a graph Laplacian, solved by conjugate gradients (matrix free over
//! the stored coincidences); coincidences more than 3 robust sigma from the fit (randoms,
//! mis-paired) are dropped and the system solved again (three rounds). Gauge: only differences
//! are observable, so the offsets are shifted to mean 0 over all (channel, TAC) with data.
//!
//! Output: `skew.tsv` (per channel the mean over its TACs, ps) and the TDC table with each
//! TAC's remaining offset added to `t0` of both branches (so the ToT, hence the energy
//! calibration, is unchanged).

use super::report::Report;
use super::tdc::summarise_stream;
use super::{check_inputs, for_each_calibrated_batch, load_energy, load_geometry, load_tdc};
use super::{median, read_table_text, write_table};
use crate::process::calib_load::names;
use anyhow::{Result, bail};
use scandaq_core::calib::Branch;
use scandaq_core::coincidence::{
    CoincidenceBatch, CoincidenceConfig, CoincidenceSorter, CrystalLut, Policy, SinglesRef,
};
use scandaq_core::{Calibration, Crystal, Geometry, SkewTable};
use std::path::PathBuf;

/// Speed of light, mm/ps.
const C_MM_PER_PS: f64 = 0.299_792_458;

/// Options of `scandaq calibrate skew`.
#[derive(Clone, Debug)]
pub struct SkewOptions {
    /// Raw files (point-source acquisitions).
    pub files: Vec<PathBuf>,
    /// TDC table (file or directory).
    pub tdc: PathBuf,
    /// Energy table (file or directory).
    pub energy: PathBuf,
    /// Channel map (file or directory).
    pub geometry: PathBuf,
    /// Source position, mm.
    pub source_mm: [f64; 3],
    /// Output calibration directory.
    pub out: PathBuf,
    /// Coincidence window, ps.
    pub window_ps: i64,
    /// Energy window, keV.
    pub energy_window_kev: [f32; 2],
    /// Fewest coincidences a (channel, TAC) needs.
    pub min_coincidences: u64,
    /// Most coincidences kept in memory (12 bytes each).
    pub max_coincidences: usize,
}

/// A stored coincidence: unknowns (channel-TAC indices) and measured-minus-geometric TOF.
#[derive(Clone, Copy, Debug)]
struct Event {
    a: u32,
    b: u32,
    y: f32,
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
fn solve(events: &[Event], keep: &[bool], n: usize) -> Vec<f64> {
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

/// Runs `scandaq calibrate skew`.
pub fn run(opts: &SkewOptions) -> Result<Report> {
    check_inputs(&opts.files)?;
    if opts.window_ps <= 0 {
        bail!("--window-ps must be positive");
    }
    let mut tdc = load_tdc(&opts.tdc)?;
    let energy = load_energy(&opts.energy)?;
    let (energy_file, energy_text) = read_table_text(&opts.energy, names::ENERGY)?;
    let (geometry, map_text) = load_geometry(&opts.geometry)?;
    // (channel, TAC) "crystals": unknown u = 4 * (dense channel index) + tac.
    let channels: Vec<u32> = geometry.crystals.keys().copied().collect();
    let n = 4 * channels.len();
    let mut dense = std::collections::HashMap::new();
    let mut tac_geometry = Geometry::default();
    let mut pos = Vec::with_capacity(n);
    for (i, (&ch, c)) in geometry.crystals.iter().enumerate() {
        dense.insert(ch, i as u32);
        for tac in 0..4u32 {
            tac_geometry
                .crystals
                .insert(4 * i as u32 + tac, Crystal { ..*c });
            pos.push(c.pos_mm);
        }
    }
    let lut = CrystalLut::from_geometry(&tac_geometry);
    let s = opts.source_mm;
    let dist = |p: [f32; 3]| {
        let d = [
            f64::from(p[0]) - s[0],
            f64::from(p[1]) - s[1],
            f64::from(p[2]) - s[2],
        ];
        (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
    };
    let geo_ps: Vec<f64> = pos.iter().map(|&p| dist(p) / C_MM_PER_PS).collect();

    let config = CoincidenceConfig {
        energy_window_kev: Some(opts.energy_window_kev),
        policy: Policy::RemoveMultiples,
        ..CoincidenceConfig::prompt(opts.window_ps)
    };
    let cal = Calibration {
        tdc: tdc.clone(),
        energy: Some(energy),
        ..Default::default()
    };
    let mut events: Vec<Event> = Vec::new();
    let mut dropped_cap = 0u64;
    let mut unmapped_hits = 0u64;
    let mut sorter = CoincidenceSorter::new(config.clone(), &lut)?;
    let mut file_now = 0usize;
    let mut coinc = CoincidenceBatch::default();
    let (mut t, mut ch, mut e, mut f) = (vec![], vec![], vec![], vec![]);
    let mut take = |coinc: &mut CoincidenceBatch, events: &mut Vec<Event>| {
        for i in 0..coinc.len() {
            if events.len() >= opts.max_coincidences {
                dropped_cap += 1;
                continue;
            }
            let (a, b) = (coinc.channel1[i], coinc.channel2[i]);
            let y = coinc.tof_ps[i] as f64 - (geo_ps[a as usize] - geo_ps[b as usize]);
            events.push(Event { a, b, y: y as f32 });
        }
        coinc.clear();
    };
    let counts = for_each_calibrated_batch(&opts.files, &cal, |file, batch| {
        if file != file_now {
            sorter.finish(&mut coinc);
            take(&mut coinc, &mut events);
            sorter = CoincidenceSorter::new(config.clone(), &lut)?;
            file_now = file;
        }
        t.clear();
        ch.clear();
        e.clear();
        f.clear();
        for i in 0..batch.len() {
            match dense.get(&batch.channel[i]) {
                Some(&d) => {
                    t.push(batch.t_ps[i]);
                    ch.push(4 * d + u32::from(batch.tac[i] & 3));
                    e.push(batch.energy_kev[i]);
                    f.push(batch.flags[i]);
                }
                None => unmapped_hits += 1,
            }
        }
        let singles = SinglesRef {
            t_ps: &t,
            channel: &ch,
            energy_kev: &e,
            flags: &f,
        };
        sorter.push(singles, &mut coinc)?;
        take(&mut coinc, &mut events);
        Ok(())
    })?;
    sorter.finish(&mut coinc);
    take(&mut coinc, &mut events);
    let mut report = Report::new("skew");
    report.line(format!(
        "method: coincidences (window {} ps, energy {}-{} keV, removeMultiples) minus geometric TOF for a source at ({}, {}, {}) mm; least squares per (channel, TAC) by conjugate gradients, 3 rounds dropping > 3 robust sigma; gauge: mean offset 0",
        opts.window_ps, opts.energy_window_kev[0], opts.energy_window_kev[1], s[0], s[1], s[2]
    ));
    summarise_stream(&mut report, &counts);
    if unmapped_hits > 0 {
        report.line(format!(
            "{unmapped_hits} hits on channels missing from the channel map were ignored"
        ));
    }
    if dropped_cap > 0 {
        report.line(format!(
            "{dropped_cap} coincidences beyond --max-coincidences {} were not used",
            opts.max_coincidences
        ));
    }
    if events.len() < 10 {
        bail!(
            "only {} coincidences found in the energy window {:?} keV: is this a point-source acquisition, and do the energy table and the channel map belong to it?",
            events.len(),
            opts.energy_window_kev
        );
    }

    // Before calibration: spread of y itself.
    let ys: Vec<f64> = events.iter().map(|e| f64::from(e.y)).collect();
    let fwhm_before = fwhm_ps(&ys);
    let mut keep = vec![true; events.len()];
    let mut x = vec![0.0; n];
    let mut sigma = 0.0;
    for _round in 0..3 {
        x = solve(&events, &keep, n);
        let res: Vec<f64> = events
            .iter()
            .map(|e| f64::from(e.y) - (x[e.a as usize] - x[e.b as usize]))
            .collect();
        let abs: Vec<f64> = res.iter().map(|r| r.abs()).collect();
        sigma = 1.4826 * median(&abs).unwrap_or(0.0);
        let cut = (3.0 * sigma).max(30.0);
        for (k, r) in keep.iter_mut().zip(&res) {
            *k = r.abs() <= cut;
        }
    }
    let residuals: Vec<f64> = events
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(e, _)| f64::from(e.y) - (x[e.a as usize] - x[e.b as usize]))
        .collect();
    let all_residuals: Vec<f64> = events
        .iter()
        .map(|e| f64::from(e.y) - (x[e.a as usize] - x[e.b as usize]))
        .collect();
    let fwhm_after = fwhm_ps(&all_residuals);
    let mut per_unknown = vec![0u64; n];
    let mut res_sum2 = vec![0.0f64; channels.len()];
    let mut res_n = vec![0u64; channels.len()];
    for (ev, k) in events.iter().zip(&keep) {
        if *k {
            per_unknown[ev.a as usize] += 1;
            per_unknown[ev.b as usize] += 1;
            let r = f64::from(ev.y) - (x[ev.a as usize] - x[ev.b as usize]);
            for u in [ev.a, ev.b] {
                res_sum2[u as usize / 4] += r * r;
                res_n[u as usize / 4] += 1;
            }
        }
    }

    let period_ps = counts.period_ps;
    let mut skew = SkewTable::default();
    let (mut tac_spread, mut ch_rms) = (vec![], vec![]);
    for (i, &channel) in channels.iter().enumerate() {
        let good: Vec<usize> = (0..4)
            .filter(|&k| per_unknown[4 * i + k] >= opts.min_coincidences)
            .collect();
        if good.is_empty() {
            let n_c: u64 = (0..4).map(|k| per_unknown[4 * i + k]).sum();
            report.outlier(
                channel,
                None,
                None,
                format!(
                    "too few coincidences ({n_c}, need {} per TAC): no skew entry, its hits will be counted as no_skew_calibration",
                    opts.min_coincidences
                ),
            );
            continue;
        }
        let mean = good.iter().map(|&k| x[4 * i + k]).sum::<f64>() / good.len() as f64;
        skew.offsets_ps.insert(channel, mean);
        let (lo, hi) = good.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &k| {
            (lo.min(x[4 * i + k]), hi.max(x[4 * i + k]))
        });
        tac_spread.push(hi - lo);
        for tac in 0..4u8 {
            let u = 4 * i + usize::from(tac);
            if per_unknown[u] < opts.min_coincidences {
                report.outlier(
                    channel,
                    Some(tac),
                    Some('T'),
                    format!(
                        "too few coincidences ({}): TAC timing offset unchanged",
                        per_unknown[u]
                    ),
                );
                continue;
            }
            let delta = (x[u] - mean) / period_ps;
            for b in [Branch::T, Branch::E] {
                if let Some(e) = tdc.entries.get_mut(&(channel, tac, b)) {
                    e.t0 += delta;
                }
            }
        }
        if res_n[i] > 0 {
            ch_rms.push((channel, (res_sum2[i] / res_n[i] as f64).sqrt()));
        }
    }
    let rms_values: Vec<f64> = ch_rms.iter().map(|c| c.1).collect();
    let med_rms = median(&rms_values).unwrap_or(0.0);
    for &(channel, r) in &ch_rms {
        if r > 1.5 * med_rms {
            report.outlier(
                channel,
                None,
                None,
                format!(
                    "residual {r:.0} ps rms, over 1.5 x the median {med_rms:.0} ps (timing problem on this channel?)"
                ),
            );
        }
    }
    if skew.offsets_ps.is_empty() {
        bail!("no channel had enough coincidences:\n{}", report.to_text());
    }
    let skews: Vec<f64> = skew.offsets_ps.values().copied().collect();
    let sk_mean = skews.iter().sum::<f64>() / skews.len() as f64;
    let sk_sd =
        (skews.iter().map(|v| (v - sk_mean).powi(2)).sum::<f64>() / skews.len() as f64).sqrt();
    report.line(format!(
        "{} coincidences used ({} kept within 3 sigma = {:.0} ps); {} of {} channels calibrated",
        events.len(),
        residuals.len(),
        sigma,
        skew.offsets_ps.len(),
        channels.len()
    ));
    report.line(format!(
        "coincidence time (minus geometric TOF) FWHM: {} ps before, {} ps after",
        fwhm_before.map_or("n/a".into(), |v| format!("{v:.0}")),
        fwhm_after.map_or("n/a".into(), |v| format!("{v:.0}"))
    ));
    report.metric("coincidences", events.len() as f64);
    report.metric("coincidences_kept", residuals.len() as f64);
    report.metric("channels_calibrated", skew.offsets_ps.len() as f64);
    report.metric("fwhm_before_ps", fwhm_before.unwrap_or(f64::NAN));
    report.metric("fwhm_after_ps", fwhm_after.unwrap_or(f64::NAN));
    report.metric("residual_robust_sigma_ps", sigma);
    report.metric("skew_sd_ps", sk_sd);
    report.metric(
        "tac_offset_spread_ps_median",
        median(&tac_spread).unwrap_or(0.0),
    );
    report.metric("channel_residual_rms_ps_median", med_rms);
    for (name, text) in [
        (names::SKEW, skew.to_text()),
        (names::TDC, tdc.to_text()),
        (names::MAP, map_text),
    ] {
        let p = write_table(&opts.out, name, &text)?;
        report.files.push(p.display().to_string());
    }
    let same_file = std::fs::canonicalize(&energy_file).ok()
        == std::fs::canonicalize(opts.out.join(names::ENERGY)).ok();
    if !same_file {
        let p = write_table(&opts.out, names::ENERGY, &energy_text)?;
        report.files.push(p.display().to_string());
    }
    report.finish(&opts.out)
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
