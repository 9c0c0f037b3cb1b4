//! The time-slice adapter: the one place the cluster transport meets the slicing library.
//! Until `scandaq_core::slicing` lands (another branch), this holds a small implementation of
//! its interface: [`SliceSpec`] (slice length, builders, lead-out), [`SourceSlicer`] (a
//! time-sorted singles batch of one source -> pieces + the slices it finished),
//! [`SliceAssembler`] (a builder's pieces from M sources -> complete slices) and
//! [`process_slice`] (a slice's singles -> its prompts and delayeds).
//!
//! Exactness (docs/cluster.md): in multi-window mode every window is independent, so a builder
//! that keeps the pairs whose opener (`t1_ps`) lies in its slice and also receives the next
//! `max(window, delay + window)` of singles produces exactly the single-process pairs. Single
//! window mode and grouping carry state across windows: this adapter flags such slices
//! inexact (`exact = false`) rather than extending them back to a quiet gap.

use crate::process::cluster::protocol::PieceRole;
use crate::process::coinc_stage::{CoincidenceOptions, SorterInput};
use anyhow::{Result, anyhow, bail};
use scandaq_core::coincidence::{
    CoincidenceBatch, CoincidenceSorter, CoincidenceStats, CrystalLut, WindowMode,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// How detector time is cut into slices and routed: slice `k` covers
/// `[k * slice_ps, (k + 1) * slice_ps)` and goes to builder `k mod builders`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceSpec {
    /// Slice length, ps.
    pub slice_ps: i64,
    /// Builder nodes.
    pub builders: u32,
    /// Singles before a slice sent with it (0 here: multi-window needs none).
    pub lead_in_ps: i64,
    /// Singles after a slice sent with it: the partners of pairs opened inside it.
    pub lead_out_ps: i64,
}

impl SliceSpec {
    /// The spec for `options` (lead-out = the delayed window's far edge, or the prompt
    /// window's, plus 1 ps: the windows are closed intervals).
    pub fn new(slice_ps: i64, builders: u32, options: &CoincidenceOptions) -> Result<Self> {
        if builders == 0 {
            bail!("a cluster needs at least one builder node");
        }
        let far = if options.delay_ps != 0 {
            options.delay_ps.saturating_abs() + options.window_ps
        } else {
            options.window_ps
        };
        let lead_out_ps = far.saturating_add(1);
        if slice_ps < lead_out_ps.saturating_mul(2) {
            bail!(
                "slice = {slice_ps} ps is too short for the coincidence windows (lead-out {lead_out_ps} ps): use at least twice that, e.g. 10ms"
            );
        }
        Ok(Self {
            slice_ps,
            builders,
            lead_in_ps: 0,
            lead_out_ps,
        })
    }

    /// The slice holding time `t_ps`.
    pub fn slice_of(&self, t_ps: i64) -> i64 {
        t_ps.div_euclid(self.slice_ps)
    }

    /// The builder that owns `slice`.
    pub fn builder_of(&self, slice: i64) -> u32 {
        slice.rem_euclid(i64::from(self.builders)) as u32
    }

    /// `[start, end)` of `slice`, ps.
    pub fn range_ps(&self, slice: i64) -> (i64, i64) {
        let start = slice.saturating_mul(self.slice_ps);
        (start, start.saturating_add(self.slice_ps))
    }

    /// True when the sorter's result on a slice is the single-process result.
    pub fn exact_for(options: &CoincidenceOptions) -> bool {
        let mode = options.prompt_config(true).mode;
        mode == WindowMode::MultiWindow && options.grouping.is_none()
    }
}

/// Rows of one source's batch bound for one builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The slice the rows serve.
    pub slice: i64,
    /// Its builder.
    pub builder: u32,
    /// Rows of the batch.
    pub rows: Range<usize>,
    /// Body or lead-out.
    pub role: PieceRole,
}

/// Cuts one source's time-sorted singles into pieces and says which slices it finished.
#[derive(Debug)]
pub struct SourceSlicer {
    spec: SliceSpec,
    last_t: Option<i64>,
    finished_through: Option<i64>,
    first_slice: Option<i64>,
}

impl SourceSlicer {
    /// A slicer for `spec`.
    pub fn new(spec: SliceSpec) -> Self {
        Self {
            spec,
            last_t: None,
            finished_through: None,
            first_slice: None,
        }
    }

    /// The pieces of `t_ps` (sorted, after every earlier batch) and the last slice this source
    /// has now finished (None when that did not move).
    pub fn push(&mut self, t_ps: &[i64]) -> Result<(Vec<Piece>, Option<i64>)> {
        let (Some(&first), Some(&last)) = (t_ps.first(), t_ps.last()) else {
            return Ok((vec![], None));
        };
        if self.last_t.is_some_and(|l| first < l) || t_ps.windows(2).any(|w| w[1] < w[0]) {
            bail!("singles out of time order reached the slicer");
        }
        self.first_slice.get_or_insert(self.spec.slice_of(first));
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < t_ps.len() {
            let slice = self.spec.slice_of(t_ps[at]);
            let (start, end) = self.spec.range_ps(slice);
            let body_end = at + t_ps[at..].partition_point(|&t| t < end);
            // Rows near the start of this slice are the lead-out of the one before it.
            let lead_end =
                at + t_ps[at..body_end].partition_point(|&t| t < start + self.spec.lead_out_ps);
            if lead_end > at {
                pieces.push(self.piece(slice - 1, at..lead_end, PieceRole::LeadOut));
            }
            pieces.push(self.piece(slice, at..body_end, PieceRole::Body));
            at = body_end;
        }
        self.last_t = Some(last);
        // Slice k is finished once a single at or beyond (k + 1) * S + lead-out is seen.
        let through = self.spec.slice_of(last - self.spec.lead_out_ps) - 1;
        let moved = self.finished_through.is_none_or(|f| through > f);
        if moved {
            self.finished_through = Some(through);
        }
        Ok((pieces, moved.then_some(through)))
    }

    /// End of stream: the last slice with data (every slice is finished now).
    pub fn finish(&mut self) -> Option<i64> {
        let last = self.spec.slice_of(self.last_t?);
        self.finished_through = Some(last);
        Some(last)
    }

    fn piece(&self, slice: i64, rows: Range<usize>, role: PieceRole) -> Piece {
        Piece {
            slice,
            builder: self.spec.builder_of(slice),
            rows,
            role,
        }
    }
}

/// One slice's singles as received, per source.
#[derive(Debug, Default)]
pub struct SliceJob {
    /// The slice.
    pub slice: i64,
    /// Body and lead-out rows of every source, in arrival order per source.
    pub parts: Vec<SorterInput>,
    /// Singles the sources dropped before sending (the slice is incomplete when > 0).
    pub dropped_rows: u64,
    /// Sources that ended (died) before finishing the slice.
    pub missing_sources: Vec<String>,
}

/// A builder's assembly of slices from its sources.
#[derive(Debug)]
pub struct SliceAssembler {
    sources: Vec<String>,
    finished: BTreeMap<String, i64>,
    gone: BTreeSet<String>,
    pending: BTreeMap<i64, SliceJob>,
    first_slice: BTreeMap<String, i64>,
}

impl SliceAssembler {
    /// An assembler waiting for `sources` (the acquisition nodes' names).
    pub fn new(sources: Vec<String>) -> Self {
        Self {
            sources,
            finished: BTreeMap::new(),
            gone: BTreeSet::new(),
            pending: BTreeMap::new(),
            first_slice: BTreeMap::new(),
        }
    }

    /// Rows of `slice` from `source`.
    pub fn add_piece(&mut self, source: &str, slice: i64, rows: SorterInput, dropped: u64) {
        self.first_slice.entry(source.to_string()).or_insert(slice);
        let job = self.pending.entry(slice).or_insert_with(|| SliceJob {
            slice,
            ..SliceJob::default()
        });
        job.dropped_rows += dropped;
        if !rows.is_empty() {
            job.parts.push(rows);
        }
    }

    /// `source` finished every slice through `slice`.
    pub fn finished_through(&mut self, source: &str, slice: i64) {
        let f = self.finished.entry(source.to_string()).or_insert(slice);
        *f = (*f).max(slice);
    }

    /// `source` is gone (its stream ended without end-of-stream): slices it had not finished
    /// are completed without it and name it missing.
    pub fn source_gone(&mut self, source: &str) {
        self.gone.insert(source.to_string());
    }

    /// Slices every live source has finished, in order, taken out of the assembler.
    pub fn take_ready(&mut self) -> Vec<SliceJob> {
        let mut ready = Vec::new();
        while let Some((&slice, _)) = self.pending.first_key_value() {
            let mut missing = Vec::new();
            let mut waiting = false;
            for s in &self.sources {
                let done = self.finished.get(s).is_some_and(|&f| f >= slice);
                if done {
                    continue;
                }
                if self.gone.contains(s) {
                    missing.push(s.clone());
                } else {
                    waiting = true;
                }
            }
            if waiting {
                break;
            }
            if let Some(mut job) = self.pending.remove(&slice) {
                job.missing_sources = missing;
                ready.push(job);
            }
        }
        ready
    }

    /// Slices waiting for a source.
    pub fn pending_slices(&self) -> usize {
        self.pending.len()
    }

    /// Singles held in waiting slices.
    pub fn pending_rows(&self) -> usize {
        self.pending
            .values()
            .flat_map(|j| j.parts.iter())
            .map(SorterInput::len)
            .sum()
    }

    /// True when every source has finished or is gone, and nothing waits.
    pub fn all_done(&self, ended: &BTreeSet<String>) -> bool {
        self.sources
            .iter()
            .all(|s| ended.contains(s) || self.gone.contains(s))
            && self.pending.is_empty()
    }

    /// Takes every waiting slice out, whatever its sources said (the builder stops).
    pub fn abandon_all(&mut self) -> Vec<SliceJob> {
        std::mem::take(&mut self.pending).into_values().collect()
    }
}

/// What one slice gave.
#[derive(Debug, Default)]
pub struct SliceOutput {
    /// The slice.
    pub slice: i64,
    /// Prompt pairs opened inside the slice.
    pub prompts: CoincidenceBatch,
    /// Delayed pairs opened inside the slice.
    pub delayed: CoincidenceBatch,
    /// Prompt sorter counters over the slice's rows (lead-out included).
    pub stats: CoincidenceStats,
    /// The pairs are the single-process pairs (window mode allows it, nothing missing).
    pub exact: bool,
}

/// Sorts one slice: the sources' rows merged in time order, the prompt and delayed sorters
/// run over them, and only the pairs whose first single lies inside the slice kept.
pub fn process_slice(
    spec: &SliceSpec,
    options: &CoincidenceOptions,
    energy_in_kev: bool,
    lut: &CrystalLut,
    job: &SliceJob,
) -> Result<SliceOutput> {
    let merged = merge_sorted(&job.parts);
    let (start, end) = spec.range_ps(job.slice);
    let prompt_cfg = options.prompt_config(energy_in_kev);
    let mut out = SliceOutput {
        slice: job.slice,
        exact: SliceSpec::exact_for(options)
            && job.dropped_rows == 0
            && job.missing_sources.is_empty(),
        ..SliceOutput::default()
    };
    let mut sorter = CoincidenceSorter::new(prompt_cfg.clone(), lut)
        .map_err(|e| anyhow!("coincidences: {e}"))?;
    let mut all = CoincidenceBatch::default();
    sorter
        .push(merged.singles_ref(), &mut all)
        .map_err(|e| anyhow!("slice {}: {e}", job.slice))?;
    sorter.finish(&mut all);
    out.stats = *sorter.stats();
    out.prompts = keep_opened_in(all, start, end);
    if options.delay_ps != 0 {
        let mut delayed_sorter =
            CoincidenceSorter::new(prompt_cfg.to_delayed(options.delay_ps), lut)
                .map_err(|e| anyhow!("coincidences (delayed): {e}"))?;
        let mut all = CoincidenceBatch::default();
        delayed_sorter
            .push(merged.singles_ref(), &mut all)
            .map_err(|e| anyhow!("slice {} (delayed): {e}", job.slice))?;
        delayed_sorter.finish(&mut all);
        out.delayed = keep_opened_in(all, start, end);
    }
    Ok(out)
}

/// The rows of `batch` whose first single lies in `[start, end)`.
fn keep_opened_in(batch: CoincidenceBatch, start: i64, end: i64) -> CoincidenceBatch {
    let mut out = CoincidenceBatch::default();
    for i in 0..batch.len() {
        let t = batch.t1_ps[i];
        if t < start || t >= end {
            continue;
        }
        out.t1_ps.push(batch.t1_ps[i]);
        out.t2_ps.push(batch.t2_ps[i]);
        out.channel1.push(batch.channel1[i]);
        out.channel2.push(batch.channel2[i]);
        out.energy1_kev.push(batch.energy1_kev[i]);
        out.energy2_kev.push(batch.energy2_kev[i]);
        out.tof_ps.push(batch.tof_ps[i]);
        out.flags.push(batch.flags[i]);
    }
    out
}

/// The rows of `parts` (each sorted) in one time order (stable: equal times keep part order).
fn merge_sorted(parts: &[SorterInput]) -> SorterInput {
    let n: usize = parts.iter().map(SorterInput::len).sum();
    let mut order: Vec<(i64, u32, u32)> = Vec::with_capacity(n);
    for (p, part) in parts.iter().enumerate() {
        order.extend(
            part.t_ps
                .iter()
                .enumerate()
                .map(|(i, &t)| (t, p as u32, i as u32)),
        );
    }
    order.sort_unstable();
    let mut out = SorterInput {
        t_ps: Vec::with_capacity(n),
        channel: Vec::with_capacity(n),
        energy_kev: Vec::with_capacity(n),
        flags: Vec::with_capacity(n),
    };
    for (t, p, i) in order {
        let part = &parts[p as usize];
        let i = i as usize;
        out.t_ps.push(t);
        out.channel.push(part.channel[i]);
        out.energy_kev.push(part.energy_kev[i]);
        out.flags.push(part.flags[i]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SliceSpec {
        SliceSpec {
            slice_ps: 100,
            builders: 2,
            lead_in_ps: 0,
            lead_out_ps: 10,
        }
    }

    #[test]
    fn pieces_cover_bodies_and_lead_outs_and_finish_slices_behind_the_lead_out() {
        let mut s = SourceSlicer::new(spec());
        let (pieces, through) = s.push(&[5, 50, 99, 100, 104, 150, 205]).unwrap();
        let want = vec![
            Piece {
                slice: 0,
                builder: 0,
                rows: 0..3,
                role: PieceRole::Body,
            },
            Piece {
                slice: 0,
                builder: 0,
                rows: 3..5,
                role: PieceRole::LeadOut,
            },
            Piece {
                slice: 1,
                builder: 1,
                rows: 3..6,
                role: PieceRole::Body,
            },
            Piece {
                slice: 2,
                builder: 0,
                rows: 6..7,
                role: PieceRole::Body,
            },
        ];
        assert_eq!(pieces, want);
        // 205 - 10 = 195 lies in slice 1: slice 0 is finished, slice 1 not yet.
        assert_eq!(through, Some(0));
        assert!(
            s.push(&[100]).is_err(),
            "time order is checked across batches"
        );
        assert_eq!(s.finish(), Some(2));
    }

    #[test]
    fn a_slice_is_ready_once_every_source_finished_it_or_is_gone() {
        let mut a = SliceAssembler::new(vec!["a".into(), "b".into()]);
        a.add_piece("a", 4, SorterInput::default(), 0);
        a.finished_through("a", 4);
        assert!(a.take_ready().is_empty());
        a.source_gone("b");
        let ready = a.take_ready();
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].missing_sources, vec!["b".to_string()]);
    }
}
