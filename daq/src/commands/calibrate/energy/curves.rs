//! From each channel's photopeaks to its energy curve `E = b (exp(ToT/a) − 1)` and its TACs'
//! energy-branch offsets: two-line channels first (they set the `a` of one-line channels),
//! then every channel, with outliers reported and the figures of the report gathered.

use super::super::median;
use super::super::report::Report;
use super::channels::ChannelResult;
use super::peaks::{Peak, solve_b};
use super::{E_511, EnergyOptions};
use scandaq_core::calib::{Branch, EnergyEntry};
use scandaq_core::{EnergyTable, TdcTable};
use std::collections::BTreeMap;

/// The energy table being built and the figures the report gives of it.
pub(super) struct EnergyCurves<'a> {
    opts: &'a EnergyOptions,
    /// Curves `(a, b)` of the channels where both lines were found.
    two_line: BTreeMap<u32, (f64, f64)>,
    /// `a` (ns) for channels with the 511 keV line only.
    fixed_a: f64,
    /// Clock period, ps (TDC `t0` is in clock periods).
    period_ps: f64,
    pub(super) table: EnergyTable,
    /// Per calibrated channel: 511 keV resolution (fraction, FWHM).
    resolution: Vec<f64>,
    /// Per channel analysed: its hits.
    hits: Vec<f64>,
    a_ns: Vec<f64>,
    b_kev: Vec<f64>,
    /// Per calibrated channel: the spread of its TACs' 511 keV peaks, ns.
    tac_spread: Vec<f64>,
    /// Channels calibrated with the 511 keV line only.
    one_line: usize,
}

impl<'a> EnergyCurves<'a> {
    /// Fits the two-line channels of `results` and fixes `a` for the others.
    pub(super) fn new(results: &[ChannelResult], opts: &'a EnergyOptions, period_ps: f64) -> Self {
        let mut two_line = BTreeMap::new();
        for r in results {
            if let (Some(p1), Some(p2)) = (r.peak_511, r.peak_2)
                && let Some(b) = solve_b(p2.tot_ns / p1.tot_ns, E_511, opts.second_line_kev)
            {
                let a = p1.tot_ns / (1.0 + E_511 / b).ln();
                two_line.insert(r.channel, (a, b));
            }
        }
        let two_line_a: Vec<f64> = two_line.values().map(|f| f.0).collect();
        let fixed_a = opts
            .fixed_a_ns
            .or_else(|| median(&two_line_a))
            .unwrap_or(80.0);
        Self {
            opts,
            two_line,
            fixed_a,
            period_ps,
            table: EnergyTable::default(),
            resolution: vec![],
            hits: vec![],
            a_ns: vec![],
            b_kev: vec![],
            tac_spread: vec![],
            one_line: 0,
        }
    }

    /// Fits one channel: its curve into the table, its TACs' offsets into `tdc`.
    pub(super) fn fit_channel(
        &mut self,
        r: &ChannelResult,
        tdc: &mut TdcTable,
        report: &mut Report,
    ) {
        self.hits.push(r.hits as f64);
        if r.hits < self.opts.min_hits {
            report.outlier(
                r.channel,
                None,
                None,
                format!(
                    "too few hits ({} < {}): no entry",
                    r.hits, self.opts.min_hits
                ),
            );
            return;
        }
        let Some(p1) = r.peak_511 else {
            report.outlier(
                r.channel,
                None,
                None,
                "no 511 keV photopeak found in the ToT spectrum: no entry".into(),
            );
            return;
        };
        let (a, b) = self.curve(r.channel, p1, report);
        if !(a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0) {
            report.outlier(
                r.channel,
                None,
                None,
                format!("fit failed (a = {a}, b = {b}): no entry"),
            );
            return;
        }
        self.table
            .entries
            .insert(r.channel, EnergyEntry { a_ns: a, b_kev: b });
        self.a_ns.push(a);
        self.b_kev.push(b);
        // Resolution at 511 keV: sigma_E = sigma_ToT dE/dToT = sigma_ToT (E + b) / a.
        self.resolution
            .push(2.355 * p1.sigma_ns * (E_511 + b) / a / E_511);
        self.align_tacs(r, tdc, report);
    }

    /// The channel's curve `(a, b)`: its two-line fit, else `a` fixed and `b` from the 511 keV
    /// peak `p1`.
    fn curve(&mut self, channel: u32, p1: Peak, report: &mut Report) -> (f64, f64) {
        if let Some(&(a, b)) = self.two_line.get(&channel) {
            return (a, b);
        }
        self.one_line += 1;
        let fixed_a = self.fixed_a;
        if self.opts.second_line_kev > E_511 {
            report.outlier(
                channel,
                None,
                None,
                format!(
                    "{} keV line not found: a fixed to {fixed_a:.2} ns, b from the 511 keV peak",
                    self.opts.second_line_kev
                ),
            );
        }
        let b = E_511 / ((p1.tot_ns / fixed_a).exp() - 1.0);
        (fixed_a, b)
    }

    /// TAC alignment: E-branch t0 += (peak_tac - mean) / period_ns.
    fn align_tacs(&mut self, r: &ChannelResult, tdc: &mut TdcTable, report: &mut Report) {
        let found: Vec<f64> = r.tac_peaks.iter().flatten().copied().collect();
        let mean = found.iter().sum::<f64>() / found.len().max(1) as f64;
        if let (Some(lo), Some(hi)) = (
            found.iter().copied().reduce(f64::min),
            found.iter().copied().reduce(f64::max),
        ) {
            self.tac_spread.push(hi - lo);
        }
        for (tac, p) in r.tac_peaks.iter().enumerate() {
            match p {
                Some(p) => {
                    if let Some(e) = tdc.entries.get_mut(&(r.channel, tac as u8, Branch::E)) {
                        e.t0 += (p - mean) * 1000.0 / self.period_ps;
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

    /// Reports the resolution outliers (over twice the median), the summary line and the
    /// metrics; `analysed` is the number of channels analysed.
    pub(super) fn report(&self, report: &mut Report, analysed: usize) {
        let table = &self.table;
        let one_line = self.one_line;
        let fixed_a = self.fixed_a;
        let med_res = median(&self.resolution).unwrap_or(0.0);
        for (ch, r) in table.entries.keys().zip(&self.resolution) {
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
            analysed,
            table.entries.len() - one_line
        ));
        report.metric("channels_calibrated", table.entries.len() as f64);
        report.metric(
            "channels_two_lines",
            (table.entries.len() - one_line) as f64,
        );
        report.metric("hits_per_channel_median", median(&self.hits).unwrap_or(0.0));
        report.metric("a_ns_median", median(&self.a_ns).unwrap_or(0.0));
        report.metric("b_kev_median", median(&self.b_kev).unwrap_or(0.0));
        report.metric("resolution_511_fwhm_pct_median", 100.0 * med_res);
        report.metric(
            "tac_peak_spread_ns_median",
            median(&self.tac_spread).unwrap_or(0.0),
        );
    }
}
