//! From the fitted (channel, TAC) offsets to the tables: per channel the mean over its TACs
//! with enough coincidences goes into the skew table, and each TAC's remaining offset is added
//! to `t0` of both its TDC branches; channels and TACs short of data, and channels whose
//! residuals are far above the median, are reported as outliers.

use super::super::median;
use super::super::report::Report;
use super::least_squares::{Event, Fit, residual};
use scandaq_core::calib::Branch;
use scandaq_core::{SkewTable, TdcTable};

/// How much each unknown and each channel is used by the kept coincidences.
struct Usage {
    /// Kept coincidences per unknown.
    per_unknown: Vec<u64>,
    /// Sum of squared residuals per channel, ps².
    residual_sum2: Vec<f64>,
    /// Residuals counted per channel.
    residual_n: Vec<u64>,
}

impl Usage {
    fn of(events: &[Event], fit: &Fit, channels: usize) -> Self {
        let mut usage = Self {
            per_unknown: vec![0u64; 4 * channels],
            residual_sum2: vec![0.0f64; channels],
            residual_n: vec![0u64; channels],
        };
        for (ev, k) in events.iter().zip(&fit.keep) {
            if *k {
                usage.per_unknown[ev.a as usize] += 1;
                usage.per_unknown[ev.b as usize] += 1;
                let r = residual(ev, &fit.offsets_ps);
                for u in [ev.a, ev.b] {
                    usage.residual_sum2[u as usize / 4] += r * r;
                    usage.residual_n[u as usize / 4] += 1;
                }
            }
        }
        usage
    }
}

/// Builds the skew table and corrects the TDC table from a fit.
pub(super) struct SkewTables<'a> {
    channels: &'a [u32],
    /// Fitted offset per unknown, ps.
    offsets_ps: &'a [f64],
    usage: Usage,
    min_coincidences: u64,
    /// Clock period, ps (TDC `t0` is in clock periods).
    period_ps: f64,
    /// Per channel: the mean offset of its TACs with enough data, ps.
    pub(super) skew: SkewTable,
    /// Per calibrated channel: the spread of its TACs' offsets, ps.
    pub(super) tac_spread: Vec<f64>,
    /// Per channel with residuals: their rms, ps.
    channel_rms: Vec<(u32, f64)>,
    /// The median of `channel_rms`, ps (once derived).
    pub(super) median_rms_ps: f64,
}

impl<'a> SkewTables<'a> {
    /// Number of channels in the map.
    pub(super) fn channel_count(&self) -> usize {
        self.channels.len()
    }

    pub(super) fn new(
        channels: &'a [u32],
        events: &[Event],
        fit: &'a Fit,
        min_coincidences: u64,
        period_ps: f64,
    ) -> Self {
        Self {
            channels,
            offsets_ps: &fit.offsets_ps,
            usage: Usage::of(events, fit, channels.len()),
            min_coincidences,
            period_ps,
            skew: SkewTable::default(),
            tac_spread: vec![],
            channel_rms: vec![],
            median_rms_ps: 0.0,
        }
    }

    /// Derives every channel's entry, correcting `tdc` and reporting outliers.
    pub(super) fn derive(&mut self, tdc: &mut TdcTable, report: &mut Report) {
        for (i, &channel) in self.channels.iter().enumerate() {
            self.derive_channel(i, channel, tdc, report);
        }
        let rms_values: Vec<f64> = self.channel_rms.iter().map(|c| c.1).collect();
        let med_rms = median(&rms_values).unwrap_or(0.0);
        for &(channel, r) in &self.channel_rms {
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
        self.median_rms_ps = med_rms;
    }

    /// The entry of the channel of dense index `i`.
    fn derive_channel(&mut self, i: usize, channel: u32, tdc: &mut TdcTable, report: &mut Report) {
        let x = self.offsets_ps;
        let per_unknown = &self.usage.per_unknown;
        let good: Vec<usize> = (0..4)
            .filter(|&k| per_unknown[4 * i + k] >= self.min_coincidences)
            .collect();
        if good.is_empty() {
            let n_c: u64 = (0..4).map(|k| per_unknown[4 * i + k]).sum();
            report.outlier(
                channel,
                None,
                None,
                format!(
                    "too few coincidences ({n_c}, need {} per TAC): no skew entry, its hits will be counted as no_skew_calibration",
                    self.min_coincidences
                ),
            );
            return;
        }
        let mean = good.iter().map(|&k| x[4 * i + k]).sum::<f64>() / good.len() as f64;
        self.skew.offsets_ps.insert(channel, mean);
        let (lo, hi) = good.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &k| {
            (lo.min(x[4 * i + k]), hi.max(x[4 * i + k]))
        });
        self.tac_spread.push(hi - lo);
        self.correct_tacs(i, channel, mean, tdc, report);
        if self.usage.residual_n[i] > 0 {
            let rms = (self.usage.residual_sum2[i] / self.usage.residual_n[i] as f64).sqrt();
            self.channel_rms.push((channel, rms));
        }
    }

    /// Adds each TAC's offset from the channel's `mean` to `t0` of both its branches.
    fn correct_tacs(
        &self,
        i: usize,
        channel: u32,
        mean: f64,
        tdc: &mut TdcTable,
        report: &mut Report,
    ) {
        for tac in 0..4u8 {
            let u = 4 * i + usize::from(tac);
            let used = self.usage.per_unknown[u];
            if used < self.min_coincidences {
                report.outlier(
                    channel,
                    Some(tac),
                    Some('T'),
                    format!("too few coincidences ({used}): TAC timing offset unchanged"),
                );
                continue;
            }
            let delta = (self.offsets_ps[u] - mean) / self.period_ps;
            for b in [Branch::T, Branch::E] {
                if let Some(e) = tdc.entries.get_mut(&(channel, tac, b)) {
                    e.t0 += delta;
                }
            }
        }
    }
}
