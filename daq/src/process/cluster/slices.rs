//! The one place the cluster transport meets the slicing library (`scandaq_core::slicing`,
//! docs/cluster.md "Time slices and exactness"): the spec a cluster's `[coincidences]` needs,
//! a source's [`Slicer`] (pieces + a watermark of finished slices), a builder's
//! [`Assembler`] (sources by node name, lost sources and dropped rows remembered per slice)
//! and [`process`] (one job -> its prompts and delayeds with the run's options).
//!
//! Sources are numbered by their order among the cluster file's acquisition nodes (the
//! library breaks time ties by ascending id, as the single-process merge does by input).
//! Every source starts at slice 0 ([`FIRST_SLICE`]): detector time starts at 0 for PETsys
//! boards; rows before it would be counted, not routed.

use crate::process::coinc_stage::{CoincidenceOptions, SorterInput};
use anyhow::{Result, anyhow};
use scandaq_core::coincidence::{CoincidenceConfig, CrystalLut, SinglesRef};
use scandaq_core::slicing::{
    Piece, PieceRole, Routing, SliceAssembler, SliceJob, SliceNeeds, SliceOutput, SliceSpec,
    SourceSlicer, process_slice_with,
};
use std::collections::BTreeMap;

/// The first slice of every run.
pub const FIRST_SLICE: i64 = 0;

/// The prompt sorter's configuration of `options`, and the delayed one's when the run writes
/// a delayed table (`delay_ps` != 0).
pub fn sorter_configs(
    options: &CoincidenceOptions,
    energy_in_kev: bool,
) -> (CoincidenceConfig, Option<CoincidenceConfig>) {
    let prompt = options.prompt_config(energy_in_kev);
    let delayed = (options.delay_ps != 0).then(|| prompt.to_delayed(options.delay_ps));
    (prompt, delayed)
}

/// The spec for `slice_ps` slices over `builders` builders with the lead-in and lead-out
/// `options` need (grouping and single-window modes get a lead-in to a quiet gap).
pub fn cluster_spec(
    slice_ps: i64,
    builders: u32,
    options: &CoincidenceOptions,
) -> Result<SliceSpec> {
    let (prompt, delayed) = sorter_configs(options, true);
    let sorters: Vec<&CoincidenceConfig> =
        std::iter::once(&prompt).chain(delayed.as_ref()).collect();
    let needs =
        SliceNeeds::of_sorters(&sorters, options.grouping.as_ref()).map_err(|e| anyhow!("{e}"))?;
    SliceSpec::for_needs(slice_ps, builders, &needs).map_err(|e| anyhow!("{e}"))
}

/// One source's slicer.
#[derive(Debug)]
pub struct Slicer {
    inner: SourceSlicer,
    routing: Routing,
}

impl Slicer {
    /// The slicer of source `source_id` (its index among the acquisition nodes).
    pub fn new(spec: SliceSpec, source_id: u32) -> Result<Self> {
        Ok(Self {
            inner: SourceSlicer::new(spec, source_id, FIRST_SLICE).map_err(|e| anyhow!("{e}"))?,
            routing: Routing::default(),
        })
    }

    /// The pieces of `t_ps` (sorted, after every earlier batch) and, when it moved, the last
    /// slice the source has now finished.
    pub fn push(&mut self, t_ps: &[i64]) -> Result<(Vec<Piece>, Option<i64>)> {
        self.inner
            .push(t_ps, &mut self.routing)
            .map_err(|e| anyhow!("{e}"))?;
        let ended = &self.routing.ended;
        let through = (ended.end > ended.start).then(|| ended.end - 1);
        Ok((std::mem::take(&mut self.routing.pieces), through))
    }

    /// Singles before the first slice (not routed; a loss the node counts).
    pub fn rows_before_first(&self) -> u64 {
        self.inner.rows_before_first()
    }
}

/// A complete slice with what the transport knows of it.
#[derive(Debug)]
pub struct Job {
    /// The library's job (rows merged in time order).
    pub job: SliceJob,
    /// Acquisition nodes that died before finishing the slice.
    pub missing_sources: Vec<String>,
    /// Singles the sources said they dropped for it.
    pub dropped_rows: u64,
}

/// A builder's assembly of slices from its sources, by node name.
#[derive(Debug)]
pub struct Assembler {
    inner: SliceAssembler,
    spec: SliceSpec,
    ids: BTreeMap<String, u32>,
    /// Per source: every slice below this is finished by it.
    finished_before: BTreeMap<String, i64>,
    /// Sources that died: the slices they missed, `[from, to)` (`to` = `i64::MAX` while gone).
    lost: BTreeMap<String, Vec<(i64, i64)>>,
    /// Sources gone now (died and not back).
    gone: std::collections::BTreeSet<String>,
    /// Where each source that came back rejoined, latest last.
    rejoined: BTreeMap<String, i64>,
    ended: Vec<String>,
    dropped: BTreeMap<i64, u64>,
}

impl Assembler {
    /// Builder `builder` of `spec`, expecting `sources` (acquisition node names, in cluster
    /// file order: their ids).
    pub fn new(spec: SliceSpec, builder: u32, sources: &[String]) -> Result<Self> {
        let ids: BTreeMap<String, u32> = sources.iter().cloned().zip(0..).collect();
        let id_list: Vec<u32> = ids.values().copied().collect();
        Ok(Self {
            spec,
            inner: SliceAssembler::new(spec, builder, &id_list, FIRST_SLICE)
                .map_err(|e| anyhow!("{e}"))?,
            finished_before: sources.iter().map(|s| (s.clone(), FIRST_SLICE)).collect(),
            ids,
            lost: BTreeMap::new(),
            gone: Default::default(),
            rejoined: BTreeMap::new(),
            ended: Vec::new(),
            dropped: BTreeMap::new(),
        })
    }

    /// True when `source` is an acquisition node of the cluster file.
    pub fn knows(&self, source: &str) -> bool {
        self.ids.contains_key(source)
    }

    fn id(&self, source: &str) -> Result<u32> {
        self.ids.get(source).copied().ok_or_else(|| {
            anyhow!("a piece from {source:?}, which is no acquisition node of the cluster file")
        })
    }

    /// Rows of `slice` from `source` as `role` (and singles it dropped for the slice).
    pub fn add_piece(
        &mut self,
        source: &str,
        slice: i64,
        role: PieceRole,
        rows: &SorterInput,
        dropped: u64,
    ) -> Result<()> {
        let id = self.id(source)?;
        if dropped > 0 {
            *self.dropped.entry(slice).or_insert(0) += dropped;
        }
        self.inner
            .push_piece(id, slice, role, rows.singles_ref())
            .map_err(|e| anyhow!("{source}: {e}"))
    }

    /// `source` finished every slice through `slice`.
    pub fn finished_through(&mut self, source: &str, slice: i64) -> Result<()> {
        let id = self.id(source)?;
        let f = self
            .finished_before
            .entry(source.to_string())
            .or_insert(FIRST_SLICE);
        *f = (*f).max(slice.saturating_add(1));
        self.inner.end(id, slice).map_err(|e| anyhow!("{e}"))
    }

    /// `source` ended its stream cleanly.
    pub fn end_of_stream(&mut self, source: &str) -> Result<()> {
        self.finished_through(source, i64::MAX - 1)?;
        self.ended.push(source.to_string());
        Ok(())
    }

    /// `source` is gone: its unfinished slices complete without it and name it missing.
    pub fn source_gone(&mut self, source: &str) -> Result<()> {
        let id = self.id(source)?;
        let from = self
            .finished_before
            .get(source)
            .copied()
            .unwrap_or(FIRST_SLICE);
        self.lost
            .entry(source.to_string())
            .or_default()
            .push((from, i64::MAX));
        self.gone.insert(source.to_string());
        self.inner.end_source(id).map_err(|e| anyhow!("{e}"))
    }

    /// True when `source` died and has not come back.
    pub fn is_gone(&self, source: &str) -> bool {
        self.gone.contains(source)
    }

    /// The slice `source` last rejoined at, if it came back.
    pub fn rejoined_at(&self, source: &str) -> Option<i64> {
        self.rejoined.get(source).copied()
    }

    /// `source`, gone, is back (a restarted acquisition node, its first piece's first row at
    /// `first_t`, or a marker through `slice`): it is held to again from the first slice
    /// whose lead-in starts after that row (it may have missed the rows before it); the
    /// slices in between complete without it and name it missing. Returns that slice.
    pub fn rejoin(&mut self, source: &str, first_t: Option<i64>, slice: i64) -> Result<i64> {
        let id = self.id(source)?;
        let spec = self.spec;
        let from = first_t.map_or(slice, |t| spec.slice_of(t.saturating_add(spec.lead_in_ps)));
        let at = self
            .inner
            .rejoin(id, from.saturating_add(1))
            .map_err(|e| anyhow!("{e}"))?;
        if let Some(r) = self.lost.get_mut(source).and_then(|v| v.last_mut()) {
            r.1 = at;
        }
        self.gone.remove(source);
        self.rejoined.insert(source.to_string(), at);
        self.finished_before.insert(source.to_string(), at);
        Ok(at)
    }

    /// Slices every source has finished (or is gone), in order.
    pub fn take_ready(&mut self) -> Vec<Job> {
        let mut jobs = Vec::new();
        while let Some(job) = self.inner.pop_job() {
            let missing_sources = self
                .lost
                .iter()
                .filter(|(_, ranges)| ranges.iter().any(|r| (r.0..r.1).contains(&job.slice)))
                .map(|(s, _)| s.clone())
                .collect();
            let dropped_rows = self.dropped.remove(&job.slice).unwrap_or(0);
            jobs.push(Job {
                job,
                missing_sources,
                dropped_rows,
            });
        }
        jobs
    }

    /// Every source is ended or lost: the rest completes with what arrived (a stop).
    pub fn end_all(&mut self) -> Result<()> {
        for (source, id) in self.ids.clone() {
            if !self.ended.contains(&source) && !self.gone.contains(&source) {
                let from = self.finished_before[&source];
                self.lost
                    .entry(source.clone())
                    .or_default()
                    .push((from, i64::MAX));
                self.gone.insert(source.clone());
                self.inner.end_source(id).map_err(|e| anyhow!("{e}"))?;
            }
        }
        Ok(())
    }

    /// Slices holding rows.
    pub fn pending_slices(&self) -> usize {
        self.inner.slices_in_flight()
    }

    /// Singles held.
    pub fn pending_rows(&self) -> usize {
        self.inner.rows_held()
    }

    /// Every source ended or was lost and nothing is held.
    pub fn all_done(&self) -> bool {
        self.ids
            .keys()
            .all(|s| self.ended.contains(s) || self.gone.contains(s))
            && self.inner.slices_in_flight() == 0
    }
}

/// Sorts one job with `options` (energy window only when energies are keV).
pub fn process(
    job: &SliceJob,
    options: &CoincidenceOptions,
    energy_in_kev: bool,
    lut: &CrystalLut,
) -> Result<SliceOutput> {
    let (prompt, delayed) = sorter_configs(options, energy_in_kev);
    process_slice_with(
        job,
        Some(&prompt),
        delayed.as_ref(),
        options.grouping.as_ref(),
        lut,
    )
    .map_err(|e| anyhow!("slice {}: {e}", job.slice))
}

/// A job's rows as the sorter borrows them (for tests and counts).
pub fn job_rows(job: &SliceJob) -> SinglesRef<'_> {
    job.rows.view()
}
