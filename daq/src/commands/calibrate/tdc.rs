//! `scandaq calibrate tdc`: the code-density method. With hits uncorrelated to the clock the
//! phase `q` of an edge is uniform in [0, 1), so the cumulative histogram of a (channel, TAC,
//! branch)'s fine codes is the code -> phase map. The TDC response is monotonic in `q`, so
//! the fraction of hits with code `<= c` is the phase at which the (continuous) response
//! crosses `c + 0.5`. A least-squares fit of `fine = a0 + a1 q + a2 q^2` to those points
//! gives the [`TdcEntry`] constants; the quadratic is what the table format and kernel hold,
//! and the residual of the fit (reported) shows whether a lookup table would be needed.
//!
//! The TAC offset `t0` is not observable from code density (any `t0` leaves `q` uniform): it is
//! written as 0 here and measured later, `t0` of the energy branch by `calibrate energy`
//! (photopeak alignment of the TACs) and both branches' offsets by `calibrate skew`.

use super::report::Report;
use super::{StreamCounts, check_inputs, copy_map, for_each_raw_hit, median, write_table};
use crate::process::calib_load::names;
use anyhow::{Result, bail};
use rayon::prelude::*;
use scandaq_core::TdcEntry;
use scandaq_core::TdcTable;
use scandaq_core::calib::Branch;
use std::collections::HashMap;
use std::path::PathBuf;

/// Options of `scandaq calibrate tdc`.
#[derive(Clone, Debug)]
pub struct TdcOptions {
    /// Raw files.
    pub files: Vec<PathBuf>,
    /// Output calibration directory.
    pub out: PathBuf,
    /// Channel map to copy into `out` (file or directory).
    pub geometry: Option<PathBuf>,
    /// Fewest hits a (channel, TAC, branch) needs for a fit.
    pub min_hits: u64,
}

/// Result of one (channel, TAC, branch) fit.
#[derive(Clone, Debug)]
pub struct TdcFit {
    /// The fitted response (t0 = 0).
    pub entry: TdcEntry,
    /// Hits used.
    pub hits: u64,
    /// RMS of (fitted phase − code-density phase) over the codes, ps.
    pub rms_ps: f64,
    /// Largest |fitted phase − code-density phase|, ps.
    pub max_ps: f64,
    /// RMS expected from counting statistics alone, ps.
    pub expected_rms_ps: f64,
}

/// Solves the 3×3 system `m x = v` by Gaussian elimination with partial pivoting.
fn solve3(mut m: [[f64; 3]; 3], mut v: [f64; 3]) -> Option<[f64; 3]> {
    for col in 0..3 {
        let piv = (col..3).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[piv][col].abs() < 1e-300 {
            return None;
        }
        m.swap(col, piv);
        v.swap(col, piv);
        for r in col + 1..3 {
            let f = m[r][col] / m[col][col];
            let pivot_row = m[col];
            for (x, p) in m[r].iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
            v[r] -= f * v[col];
        }
    }
    let mut x = [0.0; 3];
    for r in (0..3).rev() {
        let s: f64 = (r + 1..3).map(|c| m[r][c] * x[c]).sum();
        x[r] = (v[r] - s) / m[r][r];
    }
    x.iter().all(|x| x.is_finite()).then_some(x)
}

/// Code-density fit of one histogram of 1024 fine codes; `Err` says why there is no entry.
pub fn fit_code_density(hist: &[u32], period_ps: f64, min_hits: u64) -> Result<TdcFit, String> {
    let n: u64 = hist.iter().map(|&c| u64::from(c)).sum();
    if n < min_hits.max(10) {
        return Err(format!("too few hits ({n} < {min_hits})"));
    }
    let nf = n as f64;
    // Points (q, f): q = fraction of hits with code <= c, f = c + 0.5.
    let mut points = Vec::with_capacity(hist.len());
    let mut cum = 0u64;
    for (c, &k) in hist.iter().enumerate() {
        if k == 0 && cum == 0 {
            continue;
        }
        cum += u64::from(k);
        let q = cum as f64 / nf;
        // The first and last few per mille are dominated by the code noise at the edges.
        if q > 0.002 && q < 0.998 {
            points.push((q, c as f64 + 0.5));
        }
    }
    if points.len() < 8 {
        return Err(format!(
            "only {} distinct fine codes: not a TDC response (is the clock phase random?)",
            points.len()
        ));
    }
    let (mut m, mut v) = ([[0.0; 3]; 3], [0.0; 3]);
    for &(q, f) in &points {
        let basis = [1.0, q, q * q];
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += basis[i] * basis[j];
            }
            v[i] += basis[i] * f;
        }
    }
    let [a0, a1, a2] = solve3(m, v).ok_or("singular code-density fit")?;
    let entry = TdcEntry {
        t0: 0.0,
        a0,
        a1,
        a2,
    };
    // Monotonic on [0, 1] (the kernel's root needs it).
    if a1 <= 0.0 || a1 + 2.0 * a2 <= 0.0 {
        return Err(format!(
            "fitted response not increasing over a clock period (a1 = {a1:.2}, a2 = {a2:.2})"
        ));
    }
    let (mut s2, mut max) = (0.0f64, 0.0f64);
    for &(q, f) in &points {
        let d = (entry.phase(f) - q).abs();
        s2 += d * d;
        max = max.max(d);
    }
    Ok(TdcFit {
        entry,
        hits: n,
        rms_ps: (s2 / points.len() as f64).sqrt() * period_ps,
        max_ps: max * period_ps,
        expected_rms_ps: (1.0 / (6.0 * nf)).sqrt() * period_ps,
    })
}

/// Key of a (channel, TAC, branch) histogram.
fn key(channel: u32, tac: u8, branch: Branch) -> u64 {
    (u64::from(channel) << 3) | (u64::from(tac) << 1) | branch as u64
}

fn unkey(k: u64) -> (u32, u8, Branch) {
    let branch = if k & 1 == 0 { Branch::T } else { Branch::E };
    ((k >> 3) as u32, ((k >> 1) & 3) as u8, branch)
}

/// Runs `scandaq calibrate tdc`: histograms, fits, writes `tdc_calibration.tsv`, the map
/// (if given) and the report.
pub fn run(opts: &TdcOptions) -> Result<Report> {
    check_inputs(&opts.files)?;
    let mut hists: HashMap<u64, Vec<u32>> = HashMap::new();
    let (counts, clock) = for_each_raw_hit(&opts.files, |h| {
        for (branch, fine) in [(Branch::T, h.tfine), (Branch::E, h.efine)] {
            let hist = hists
                .entry(key(h.channel, h.tac, branch))
                .or_insert_with(|| vec![0u32; 1024]);
            hist[usize::from(fine & 0x3ff)] += 1;
        }
    })?;
    if counts.hits == 0 {
        bail!(
            "no hits in {} file(s): nothing to calibrate (frames scanned: {})",
            counts.files,
            counts.frames
        );
    }
    let period_ps = clock.period_ps();
    let mut keys: Vec<u64> = hists.keys().copied().collect();
    keys.sort_unstable();
    let fits: Vec<(u64, Result<TdcFit, String>)> = keys
        .par_iter()
        .map(|&k| (k, fit_code_density(&hists[&k], period_ps, opts.min_hits)))
        .collect();
    let mut report = Report::new("tdc");
    report.line(
        "method: code density per (channel, TAC, branch) -> least-squares quadratic fine = a0 + a1 q + a2 q^2; t0 = 0 (TAC offsets come from `calibrate energy` and `calibrate skew`)"
    );
    summarise_stream(&mut report, &counts);
    let mut table = FittedTable::default();
    for (k, fit) in &fits {
        table.add(*k, fit, &mut report);
    }
    // A (channel, TAC) needs both branches, or the kernel drops its hits.
    let channels: std::collections::BTreeSet<u32> = keys.iter().map(|&k| unkey(k).0).collect();
    table.flag_single_branches(&channels, &mut report);
    if table.table.entries.is_empty() {
        let text = report.to_text();
        bail!("no (channel, TAC, branch) could be calibrated:\n{text}");
    }
    table.summarise(&mut report, channels.len(), fits.len());
    let path = write_table(&opts.out, names::TDC, &table.table.to_text())?;
    report.files.push(path.display().to_string());
    if copy_map(opts.geometry.as_deref(), &opts.out)?.is_some() {
        report
            .files
            .push(opts.out.join(names::MAP).display().to_string());
    }
    report.finish(&opts.out)
}

/// The TDC table built from the fits, and the figures the report gives of them.
#[derive(Default)]
struct FittedTable {
    table: TdcTable,
    /// Per entry: the fit's residual rms, ps.
    rms_ps: Vec<f64>,
    /// Per entry: the fit's largest residual, ps.
    max_ps: Vec<f64>,
    /// Per entry: the hits fitted.
    hits: Vec<f64>,
}

impl FittedTable {
    /// Adds the fit of histogram `k` (an entry, or an outlier saying why there is none).
    fn add(&mut self, k: u64, fit: &Result<TdcFit, String>, report: &mut Report) {
        let (ch, tac, branch) = unkey(k);
        let b = if branch == Branch::T { 'T' } else { 'E' };
        match fit {
            Ok(f) => {
                self.table.entries.insert((ch, tac, branch), f.entry);
                self.rms_ps.push(f.rms_ps);
                self.max_ps.push(f.max_ps);
                self.hits.push(f.hits as f64);
                if f.rms_ps > 3.0 * f.expected_rms_ps + 5.0 {
                    report.outlier(
                        ch,
                        Some(tac),
                        Some(b),
                        format!(
                            "fit residual {:.1} ps rms (statistics alone: {:.1} ps): the response is not quadratic; kept",
                            f.rms_ps, f.expected_rms_ps
                        ),
                    );
                }
            }
            Err(why) => report.outlier(ch, Some(tac), Some(b), format!("no entry: {why}")),
        }
    }

    /// Reports each (channel, TAC) of `channels` with one branch calibrated only.
    fn flag_single_branches(
        &self,
        channels: &std::collections::BTreeSet<u32>,
        report: &mut Report,
    ) {
        for &ch in channels {
            for tac in 0..4u8 {
                let t = self.table.get(ch, tac, Branch::T).is_some();
                let e = self.table.get(ch, tac, Branch::E).is_some();
                if t != e {
                    report.outlier(
                        ch,
                        Some(tac),
                        None,
                        "only one branch calibrated: this TAC's hits will be dropped (no_tdc_calibration)".into(),
                    );
                }
            }
        }
    }

    /// The report's summary line and metrics.
    fn summarise(&self, report: &mut Report, channels: usize, histograms: usize) {
        let entries = self.table.entries.len();
        report.line(format!(
            "{channels} channels, {entries} of {histograms} (channel, TAC, branch) entries fitted"
        ));
        report.metric("entries", entries as f64);
        report.metric("channels", channels as f64);
        report.metric("hits_per_entry_median", median(&self.hits).unwrap_or(0.0));
        report.metric(
            "fit_residual_rms_ps_median",
            median(&self.rms_ps).unwrap_or(0.0),
        );
        report.metric(
            "fit_residual_rms_ps_max",
            self.rms_ps.iter().copied().fold(0.0, f64::max),
        );
        report.metric(
            "fit_residual_abs_ps_max",
            self.max_ps.iter().copied().fold(0.0, f64::max),
        );
    }
}

/// Adds the stream counts to a report.
pub fn summarise_stream(report: &mut Report, counts: &StreamCounts) {
    report.line(format!(
        "read {} file(s): {} bytes, {} frames, {} hits",
        counts.files, counts.bytes, counts.frames, counts.hits
    ));
    for (k, v) in &counts.losses {
        report.line(format!("loss {k}: {v}"));
    }
    report.metric("hits_read", counts.hits as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_density_recovers_a_quadratic_response() {
        let e = TdcEntry {
            t0: 0.0,
            a0: 90.0,
            a1: 330.0,
            a2: -12.0,
        };
        // Exact code density: phases on a fine uniform grid.
        let mut hist = vec![0u32; 1024];
        let n = 200_000;
        for i in 0..n {
            let q = (i as f64 + 0.5) / n as f64;
            let f = e.a0 + e.a1 * q + e.a2 * q * q;
            hist[(f + 0.5) as usize] += 1;
        }
        let fit = fit_code_density(&hist, 5000.0, 100).unwrap();
        for q in [0.05, 0.3, 0.6, 0.95] {
            let f = e.a0 + e.a1 * q + e.a2 * q * q;
            assert!((fit.entry.phase(f) - q).abs() * 5000.0 < 2.0, "q={q}");
        }
        assert!(fit_code_density(&hist[..0], 5000.0, 100).is_err());
        let mut one = vec![0u32; 1024];
        one[5] = 1000;
        assert!(fit_code_density(&one, 5000.0, 100).is_err());
    }
}
