//! [`process_slice`]: grouping (optional) and the prompt and delayed sorters over one
//! [`SliceJob`], keeping the outputs whose opener lies in the body ([`SliceOutput`]), with
//! the body's counters and whether the result is exact ([`SliceStats`]).

use super::assemble::SliceJob;
use super::body_sort::{BodySort, sort_body};
use super::error::SliceError;
use super::group_stage::group_slice;
use super::quiet::first_quiet_start;
use super::spec::SliceNeeds;
use crate::coincidence::{
    CoincidenceBatch, CoincidenceConfig, CoincidenceStats, CrystalLut, GroupingConfig,
    GroupingStats, PhotonBatch, SinglesRef,
};
use serde::{Deserialize, Serialize};

/// Counters of one slice (or, summed with [`SliceStats::add`], of many). Every counter is
/// the body's share: summed over the slices of a run they equal the single-process counters
/// when every slice is exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceStats {
    /// Slices processed.
    pub slices: u64,
    /// Slices whose result may differ from the single process (`exact = false`).
    pub inexact_slices: u64,
    /// ... because grouping found no quiet gap in the lead-in.
    pub inexact_grouping: u64,
    /// ... because the single-window prompt sorter found no quiet gap.
    pub inexact_prompt: u64,
    /// ... because the single-window delayed sorter found no quiet gap.
    pub inexact_delayed: u64,
    /// Rows of the job's lead-in (duplicates of the previous slice's tail).
    pub rows_lead_in: u64,
    /// Rows of the job's body.
    pub rows_body: u64,
    /// Rows of the job's lead-out (duplicates of the next slice's head).
    pub rows_lead_out: u64,
    /// Grouping counters of the body (zero without grouping): hits by hit time, photons by
    /// photon time, rejected groups by the time of their first hit.
    pub grouping: GroupingStats,
    /// Prompt sorter counters of the body: singles by time, window counters by opener.
    pub prompt: CoincidenceStats,
    /// Delayed sorter counters of the body.
    pub delayed: CoincidenceStats,
}

impl SliceStats {
    /// Adds every counter of `other`.
    pub fn add(&mut self, other: &SliceStats) {
        self.slices += other.slices;
        self.inexact_slices += other.inexact_slices;
        self.inexact_grouping += other.inexact_grouping;
        self.inexact_prompt += other.inexact_prompt;
        self.inexact_delayed += other.inexact_delayed;
        self.rows_lead_in += other.rows_lead_in;
        self.rows_body += other.rows_body;
        self.rows_lead_out += other.rows_lead_out;
        add_grouping(&mut self.grouping, &other.grouping);
        self.prompt.add(&other.prompt);
        self.delayed.add(&other.delayed);
    }
}

/// Adds every counter of `b` to `a`.
pub fn add_grouping(a: &mut GroupingStats, b: &GroupingStats) {
    a.hits_in += b.hits_in;
    a.unmapped_channel += b.unmapped_channel;
    a.photons_out += b.photons_out;
    a.multi_hit_photons += b.multi_hit_photons;
    a.rejected_too_many_hits += b.rejected_too_many_hits;
    a.rejected_too_few_hits += b.rejected_too_few_hits;
    a.rejected_below_min_energy += b.rejected_below_min_energy;
    a.rejected_above_max_energy += b.rejected_above_max_energy;
}

/// What one slice gives: the pairs whose opener lies in the body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SliceOutput {
    /// The slice.
    pub slice: i64,
    /// Prompt coincidences with `t1_ps` (the opener) in the body, in the sorter's order.
    pub prompts: CoincidenceBatch,
    /// Delayed coincidences with `t1_ps` in the body.
    pub delayed: CoincidenceBatch,
    /// The body's counters.
    pub stats: SliceStats,
    /// True when the outputs and counters are exactly the single process's share of this
    /// slice (docs/cluster.md, "Time slices and exactness"); false when a stage that carries
    /// state found no quiet gap in the lead-in (then they may differ near the slice start).
    pub exact: bool,
}

/// Groups (when `grouping` is set) and sorts one slice with `prompt` and `delayed`, keeping
/// the pairs whose opener (member 1, `t1_ps`: the earlier single, which opened the window)
/// lies in the body. Concatenated in slice order, the outputs of every slice equal the
/// single-process output of the whole stream when every slice is exact.
///
/// Errors: invalid configurations, a spec whose lead-out is too short for them
/// ([`SliceNeeds`]), unequal columns, rows out of time order, times overflowing.
pub fn process_slice(
    job: &SliceJob,
    prompt: &CoincidenceConfig,
    delayed: &CoincidenceConfig,
    grouping: Option<&GroupingConfig>,
    lut: &CrystalLut,
) -> Result<SliceOutput, SliceError> {
    process_slice_with(job, Some(prompt), Some(delayed), grouping, lut)
}

/// [`process_slice`] with either sorter optional (a run without a delayed table, say): a
/// sorter that is `None` gives no pairs and zero counters, and is not part of the lead-out
/// and quiet-gap needs.
pub fn process_slice_with(
    job: &SliceJob,
    prompt: Option<&CoincidenceConfig>,
    delayed: Option<&CoincidenceConfig>,
    grouping: Option<&GroupingConfig>,
    lut: &CrystalLut,
) -> Result<SliceOutput, SliceError> {
    let sorters: Vec<&CoincidenceConfig> = prompt.into_iter().chain(delayed).collect();
    let needs = SliceNeeds::of_sorters(&sorters, grouping)?;
    job.spec.check_covers(&needs)?;
    let hits = job.rows.view();
    hits.check_lengths()?;
    let body_ps = job.spec.body_ps(job.slice);
    // A time no single before the job's lead-in exceeds.
    let before_ps = body_ps
        .start
        .saturating_sub(job.spec.lead_in_ps)
        .saturating_sub(1);
    // The body's rows, from the times (not trusting `job.body`, a public field).
    let body = hits.t_ps.partition_point(|&t| t < body_ps.start)
        ..hits.t_ps.partition_point(|&t| t < body_ps.end);
    let n = hits.len() as u64;
    let mut stats = SliceStats {
        slices: 1,
        rows_lead_in: body.start as u64,
        rows_body: body.len() as u64,
        rows_lead_out: n - body.end as u64,
        ..SliceStats::default()
    };
    let photons: PhotonBatch;
    let (input, input_before_ps) = match grouping {
        Some(g) => {
            let quiet = first_quiet_start(hits.t_ps, body.start, before_ps, g.window_ps);
            let (start, found) = match quiet {
                Some(p) => (p, true),
                None => (0, false),
            };
            stats.inexact_grouping = u64::from(!found);
            let (p, gstats) = group_slice(g, lut, hits, start, body.clone(), body_ps.clone())?;
            stats.grouping = gstats;
            photons = p;
            let before = if start == 0 {
                before_ps
            } else {
                hits.t_ps[start - 1]
            };
            (SinglesRef::from(&photons), before)
        }
        None => (hits, before_ps),
    };
    let run = |cfg: Option<&CoincidenceConfig>| match cfg {
        Some(c) => sort_body(c, lut, input, body_ps.clone(), input_before_ps, job.slice),
        None => Ok(BodySort::default()),
    };
    let p = run(prompt)?;
    let d = run(delayed)?;
    stats.inexact_prompt = u64::from(!p.exact);
    stats.inexact_delayed = u64::from(!d.exact);
    stats.prompt = p.stats;
    stats.delayed = d.stats;
    let exact = stats.inexact_grouping + stats.inexact_prompt + stats.inexact_delayed == 0;
    stats.inexact_slices = u64::from(!exact);
    Ok(SliceOutput {
        slice: job.slice,
        prompts: p.pairs,
        delayed: d.pairs,
        stats,
        exact,
    })
}
