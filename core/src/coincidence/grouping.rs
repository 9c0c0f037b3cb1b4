//! Grouping (photon building): hits close in time and space become one photon with the time
//! and channel of its highest-energy hit and the summed energy; streaming ([`Grouper`]) and
//! whole-batch ([`group_hits`]); [`Grouper::push_labeled`] also says which photon each hit went
//! into ([`GroupLabels`]), for callers that write the hits beside the photons.

use super::batch::{GroupingStats, PhotonBatch, SinglesRef};
use super::config::{CoincidenceError, GroupingConfig};
use super::lut::CrystalLut;
use super::module_pairs::ModulePairTable;
use super::sorter::check_order;

/// Closed groups kept at the front of [`Grouper`]'s open list before it is compacted (the
/// list is a `Vec` whose front part, before `head`, holds groups already closed: closing is
/// `head += 1`, and the open groups are one contiguous slice).
const COMPACT_AFTER: usize = 1024;

#[derive(Clone, Copy, Debug)]
struct Open {
    seq: u64,
    t_first: i64,
    pos_first: [f32; 3],
    module_first: u32,
    best_t: i64,
    best_ch: u32,
    best_e: f32,
    sum_e: f32,
    flags: u16,
    multiplicity: u32,
}

#[derive(Clone, Copy, Debug)]
struct Done {
    t: i64,
    seq: u64,
    channel: u32,
    energy: f32,
    flags: u16,
    multiplicity: u32,
}

/// Per-hit output of [`Grouper::push_labeled`] / [`Grouper::finish_labeled`]: which photon
/// (group) each hit went into, and the multiplicity of every group once it is closed.
///
/// Group ids are `0, 1, 2, ...` in the order the groups were opened, over the grouper's whole
/// life (never reused, also across [`Grouper::finish`]). Groups close in id order, so the
/// `k`-th multiplicity ever appended to `closed_multiplicity` is that of group `k`, and a hit
/// whose id is below the number of groups closed so far has its final multiplicity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupLabels {
    /// One entry per hit offered, in order: its group id, or [`GroupLabels::UNGROUPED`] for a
    /// hit on a channel missing from the geometry (dropped, counted as `unmapped_channel`).
    pub photon_id: Vec<u64>,
    /// Multiplicity (hits) of each group as it closes, in group id order.
    pub closed_multiplicity: Vec<u32>,
}

impl GroupLabels {
    /// Group id of a hit that was not grouped (channel missing from the geometry).
    pub const UNGROUPED: u64 = u64::MAX;

    /// Empties both columns (keeps their capacity).
    pub fn clear(&mut self) {
        self.photon_id.clear();
        self.closed_multiplicity.clear();
    }
}

/// Streaming grouper.
///
/// Hits are taken in time order. A hit joins the earliest-opened group that is still open
/// (`t_hit - t_first <= window_ps`), whose first hit's crystal is within `max_distance_mm`
/// (3-D distance between crystal centres, compared squared in f64) and, with
/// `multi_hit_module_pairs`, whose first hit's module forms an allowed pair with the hit's;
/// otherwise it opens a new group. A closed group outside the hit-count or energy cuts gives
/// no photon (counted by reason).
/// A photon has the time, channel and crystal of the group's highest-energy hit (ties: the
/// earliest such hit), energy = f32 sum of the hit energies in hit order, flags = OR of the
/// hit flags, multiplicity = number of hits. Photons are emitted in time order (equal times:
/// in the order their groups were opened), so the output can feed the coincidence sorter.
/// Hits on channels missing from the geometry are dropped and counted.
#[derive(Debug)]
pub struct Grouper<'a> {
    cfg: GroupingConfig,
    lut: &'a CrystalLut,
    // `cfg.multi_hit_module_pairs` as a bit table.
    multi_hit: Option<ModulePairTable>,
    // Groups in opening order; those from `head` on are open, those before it closed.
    open: Vec<Open>,
    head: usize,
    done: Vec<Done>,
    next_seq: u64,
    last_t: Option<i64>,
    stats: GroupingStats,
}

impl<'a> Grouper<'a> {
    /// A grouper for `config` (validated here) with crystal positions from `lut`.
    pub fn new(config: GroupingConfig, lut: &'a CrystalLut) -> Result<Self, CoincidenceError> {
        config.validate()?;
        Ok(Self {
            multi_hit: config.multi_hit_module_pairs.as_ref().map(|p| p.table()),
            cfg: config,
            lut,
            open: Vec::new(),
            head: 0,
            done: Vec::new(),
            next_seq: 0,
            last_t: None,
            stats: GroupingStats::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> &GroupingStats {
        &self.stats
    }

    /// Groups the next time-ordered batch of hits, appending to `out` every photon that no
    /// later hit can change or precede. On error nothing of the batch is used.
    pub fn push(
        &mut self,
        hits: SinglesRef<'_>,
        out: &mut PhotonBatch,
    ) -> Result<(), CoincidenceError> {
        self.push_impl(hits, out, None)
    }

    /// [`Grouper::push`], also appending to `labels` each hit's group id and the multiplicity
    /// of every group closed meanwhile. Same photons as `push`. On error nothing is appended.
    pub fn push_labeled(
        &mut self,
        hits: SinglesRef<'_>,
        out: &mut PhotonBatch,
        labels: &mut GroupLabels,
    ) -> Result<(), CoincidenceError> {
        self.push_impl(hits, out, Some(labels))
    }

    /// Number of groups closed so far: every group id below it is final.
    pub fn groups_closed(&self) -> u64 {
        self.open.get(self.head).map_or(self.next_seq, |g| g.seq)
    }

    fn push_impl(
        &mut self,
        hits: SinglesRef<'_>,
        out: &mut PhotonBatch,
        labels: Option<&mut GroupLabels>,
    ) -> Result<(), CoincidenceError> {
        hits.check_lengths()?;
        check_order(hits.t_ps, self.last_t)?;
        self.stats.hits_in += hits.len() as u64;
        match labels {
            Some(l) => self.group::<true>(hits, l),
            None => self.group::<false>(hits, &mut GroupLabels::default()),
        }
        // The closed groups before `head` are not needed any more.
        self.open.drain(..self.head);
        self.head = 0;
        if let Some(&t) = hits.t_ps.last() {
            self.last_t = Some(t);
            // Later photons have t >= the first hit of their group >= this bound.
            let bound = self.open.first().map_or(t, |g| g.t_first.min(t));
            self.emit(Some(bound), out);
        }
        Ok(())
    }

    /// The grouping loop over checked hits; `LABELS` says whether `labels` is filled (one
    /// copy of the loop without any per-hit label test).
    fn group<const LABELS: bool>(&mut self, hits: SinglesRef<'_>, labels: &mut GroupLabels) {
        let w = self.cfg.window_ps;
        let candidate = Candidate {
            // Squared distances are compared (no square root per candidate group).
            dmax2: self.cfg.max_distance_mm * self.cfg.max_distance_mm,
            multi_hit: self.multi_hit.as_ref(),
        };
        let lut = self.lut;
        let mut closer = Closer {
            cfg: &self.cfg,
            stats: &mut self.stats,
            done: &mut self.done,
        };
        let open = &mut self.open;
        let (mut head, mut next_seq) = (self.head, self.next_seq);
        let n = hits.len();
        let (ts, chs, es, fs) = (
            &hits.t_ps[..n],
            &hits.channel[..n],
            &hits.energy_kev[..n],
            &hits.flags[..n],
        );
        for k in 0..n {
            let (t, ch) = (ts[k], chs[k]);
            let Some((pos, module)) = lut.place(ch) else {
                closer.stats.unmapped_channel += 1;
                if LABELS {
                    labels.photon_id.push(GroupLabels::UNGROUPED);
                }
                continue;
            };
            while let Some(g) = open.get(head)
                && t.saturating_sub(g.t_first) > w
            {
                if LABELS {
                    labels.closed_multiplicity.push(g.multiplicity);
                }
                closer.close(g);
                head += 1;
            }
            let (e, f) = (es[k], fs[k]);
            match candidate.first_joinable(&open[head..], pos, module) {
                Some(i) => {
                    let g = &mut open[head + i];
                    if LABELS {
                        labels.photon_id.push(g.seq);
                    }
                    g.sum_e += e;
                    g.flags |= f;
                    g.multiplicity += 1;
                    if e > g.best_e {
                        g.best_e = e;
                        g.best_t = t;
                        g.best_ch = ch;
                    }
                }
                None => {
                    if LABELS {
                        labels.photon_id.push(next_seq);
                    }
                    if head >= COMPACT_AFTER {
                        open.drain(..head);
                        head = 0;
                    }
                    open.push(Open {
                        seq: next_seq,
                        t_first: t,
                        pos_first: pos,
                        module_first: module,
                        best_t: t,
                        best_ch: ch,
                        best_e: e,
                        sum_e: e,
                        flags: f,
                        multiplicity: 1,
                    });
                    next_seq += 1;
                }
            }
        }
        self.head = head;
        self.next_seq = next_seq;
    }

    /// Closes every group and emits the remaining photons; ready for a new stream afterwards.
    pub fn finish(&mut self, out: &mut PhotonBatch) {
        self.finish_impl(out, None);
    }

    /// [`Grouper::finish`], appending the multiplicities of the groups it closes to `labels`.
    pub fn finish_labeled(&mut self, out: &mut PhotonBatch, labels: &mut GroupLabels) {
        self.finish_impl(out, Some(labels));
    }

    fn finish_impl(&mut self, out: &mut PhotonBatch, mut labels: Option<&mut GroupLabels>) {
        let mut closer = Closer {
            cfg: &self.cfg,
            stats: &mut self.stats,
            done: &mut self.done,
        };
        for g in &self.open[self.head..] {
            if let Some(l) = labels.as_deref_mut() {
                l.closed_multiplicity.push(g.multiplicity);
            }
            closer.close(g);
        }
        self.open.clear();
        self.head = 0;
        self.emit(None, out);
        self.last_t = None;
    }

    /// Emits the closed photons earlier than `bound` (all when `None`) in (time, seq) order.
    fn emit(&mut self, bound: Option<i64>, out: &mut PhotonBatch) {
        // Groups close in opening order and a photon's time is at most a grouping window
        // after its first hit, so `done` is nearly sorted (keys are unique).
        crate::nearly_sorted::sort_nearly_sorted_by_key(&mut self.done, |d| (d.t, d.seq));
        let n = match bound {
            Some(b) => self.done.partition_point(|d| d.t < b),
            None => self.done.len(),
        };
        let ready = &self.done[..n];
        // Column by column: each extend knows its length (no capacity check per photon).
        out.t_ps.extend(ready.iter().map(|d| d.t));
        out.channel.extend(ready.iter().map(|d| d.channel));
        out.energy_kev.extend(ready.iter().map(|d| d.energy));
        out.flags.extend(ready.iter().map(|d| d.flags));
        out.multiplicity
            .extend(ready.iter().map(|d| d.multiplicity));
        self.stats.photons_out += n as u64;
        self.stats.multi_hit_photons += ready.iter().filter(|d| d.multiplicity > 1).count() as u64;
        self.done.drain(..n);
    }
}

/// Where closed groups go: the cuts, their counters and the photons waiting to be emitted
/// (borrowed from the [`Grouper`] for the length of a loop).
struct Closer<'g> {
    cfg: &'g GroupingConfig,
    stats: &'g mut GroupingStats,
    done: &'g mut Vec<Done>,
}

impl Closer<'_> {
    /// Closes `g`: its photon waits to be emitted, unless a cut rejects it (counted).
    #[inline]
    fn close(&mut self, g: &Open) {
        let cfg = self.cfg;
        let stats = &mut *self.stats;
        let rejected = if cfg.max_hits.is_some_and(|max| g.multiplicity > max) {
            Some(&mut stats.rejected_too_many_hits)
        } else if g.multiplicity < cfg.min_hits {
            Some(&mut stats.rejected_too_few_hits)
        } else {
            match cfg.energy_window {
                // A NaN sum is outside any window: counted as below it.
                Some([lo, _]) if g.sum_e < lo || g.sum_e.is_nan() => {
                    Some(&mut stats.rejected_below_min_energy)
                }
                Some([_, hi]) if g.sum_e > hi => Some(&mut stats.rejected_above_max_energy),
                _ => None,
            }
        };
        if let Some(counter) = rejected {
            *counter += 1;
            return;
        }
        self.done.push(Done {
            t: g.best_t,
            seq: g.seq,
            channel: g.best_ch,
            energy: g.sum_e,
            flags: g.flags,
            multiplicity: g.multiplicity,
        });
    }
}

/// The rule by which a hit may join an open group.
struct Candidate<'t> {
    dmax2: f64,
    multi_hit: Option<&'t ModulePairTable>,
}

impl Candidate<'_> {
    /// Index of the first of `groups` a hit at `pos` on `module` may join (module rule, then
    /// distance). A plain loop, inlined: `iter().find` / `position` left the test in a call
    /// per open group.
    #[inline(always)]
    fn first_joinable(&self, groups: &[Open], pos: [f32; 3], module: u32) -> Option<usize> {
        for (i, g) in groups.iter().enumerate() {
            if self
                .multi_hit
                .is_none_or(|m| m.allows(g.module_first, module))
                && squared_distance(g.pos_first, pos) <= self.dmax2
            {
                return Some(i);
            }
        }
        None
    }
}

#[inline]
fn squared_distance(a: [f32; 3], b: [f32; 3]) -> f64 {
    let dx = a[0] as f64 - b[0] as f64;
    let dy = a[1] as f64 - b[1] as f64;
    let dz = a[2] as f64 - b[2] as f64;
    dx * dx + dy * dy + dz * dz
}

/// Groups one whole time-ordered batch of hits into photons (see [`Grouper`]).
pub fn group_hits(
    config: &GroupingConfig,
    lut: &CrystalLut,
    hits: SinglesRef<'_>,
) -> Result<(PhotonBatch, GroupingStats), CoincidenceError> {
    let mut g = Grouper::new(config.clone(), lut)?;
    let mut out = PhotonBatch::default();
    g.push(hits, &mut out)?;
    g.finish(&mut out);
    Ok((out, g.stats))
}
