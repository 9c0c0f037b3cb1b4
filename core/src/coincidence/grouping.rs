//! Grouping (photon building): hits close in time and space become one photon with the time
//! and channel of its highest-energy hit and the summed energy; streaming ([`Grouper`]) and
//! whole-batch ([`group_hits`]); [`Grouper::push_labeled`] also says which photon each hit went
//! into ([`GroupLabels`]), for callers that write the hits beside the photons.

use super::batch::{GroupingStats, PhotonBatch, SinglesRef};
use super::config::{CoincidenceError, GroupingConfig};
use super::lut::CrystalLut;
use super::module_pairs::ModulePairTable;
use super::module_slots::ModuleSlots;
use super::sorter::check_order;

/// Closed groups kept at the front of [`Grouper`]'s open list before it is compacted (the
/// list is a `Vec` whose front part, before `head`, holds groups already closed: closing is
/// `head += 1`, and the open groups are one contiguous slice).
const COMPACT_AFTER: usize = 1024;

/// Groups the fast path ([`ModuleSlots`]) opens between two bulk closings.
const CLOSE_EVERY: usize = 256;

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

impl Open {
    /// A group of one hit.
    #[inline(always)]
    fn first(seq: u64, t: i64, pos: [f32; 3], module: u32, ch: u32, e: f32, f: u16) -> Self {
        Self {
            seq,
            t_first: t,
            pos_first: pos,
            module_first: module,
            best_t: t,
            best_ch: ch,
            best_e: e,
            sum_e: e,
            flags: f,
            multiplicity: 1,
        }
    }

    /// Adds a hit (its energy to the sum; its time and channel if it is the most energetic).
    #[inline(always)]
    fn join(&mut self, t: i64, ch: u32, e: f32, f: u16) {
        self.sum_e += e;
        self.flags |= f;
        self.multiplicity += 1;
        if e > self.best_e {
            self.best_e = e;
            self.best_t = t;
            self.best_ch = ch;
        }
    }
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
    // The fast path, when the rules allow it (see [`ModuleSlots`]).
    by_module: Option<ModuleSlots>,
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
            by_module: ModuleSlots::for_rules(&config, lut),
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
        // The fast path when the rules allow it; it hands over to the search otherwise.
        match labels {
            Some(l) => self.group_by_module::<true>(hits, l),
            None => self.group_by_module::<false>(hits, &mut GroupLabels::default()),
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
        let mut closer = Closer::new(&self.cfg, &mut self.stats, &mut self.done);
        let open = &mut self.open;
        let (mut head, mut next_seq) = (self.head, self.next_seq);
        let (ts, chs, es, fs) = columns(&hits);
        for k in 0..ts.len() {
            let (t, ch) = (ts[k], chs[k]);
            let Some((pos, module)) = lut.place(ch) else {
                closer.unmapped::<LABELS>(labels);
                continue;
            };
            closer.close_expired::<LABELS>(open, &mut head, t, w, labels);
            let (e, f) = (es[k], fs[k]);
            match candidate.first_joinable(&open[head..], pos, module) {
                Some(i) => {
                    let g = &mut open[head + i];
                    if LABELS {
                        labels.photon_id.push(g.seq);
                    }
                    g.join(t, ch, e, f);
                }
                None => {
                    if LABELS {
                        labels.photon_id.push(next_seq);
                    }
                    if head >= COMPACT_AFTER {
                        open.drain(..head);
                        head = 0;
                    }
                    open.push(Open::first(next_seq, t, pos, module, ch, e, f));
                    next_seq += 1;
                }
            }
        }
        self.head = head;
        self.next_seq = next_seq;
    }

    /// The grouping loop of the fast path ([`ModuleSlots`]): a hit joins its module's last
    /// group if that is still open, or opens a new one; expired groups are closed every
    /// [`CLOSE_EVERY`] groups and at the end, up to the last mapped hit's time, which leaves
    /// the same groups closed, in the same order, as [`Grouper::group`] closing them hit by
    /// hit (and, with `LABELS`, the same labels). Without slots (rules the fast path cannot
    /// follow) it runs [`Grouper::group`].
    fn group_by_module<const LABELS: bool>(
        &mut self,
        hits: SinglesRef<'_>,
        labels: &mut GroupLabels,
    ) {
        let Some(slots) = self.by_module.as_mut() else {
            return self.group::<LABELS>(hits, labels);
        };
        let w = self.cfg.window_ps;
        let mut closer = Closer::new(&self.cfg, &mut self.stats, &mut self.done);
        let open = &mut self.open;
        let (mut head, mut next_seq) = (self.head, self.next_seq);
        let mut last_mapped_t = None;
        let mut opened_since_close = 0;
        let (ts, chs, es, fs) = columns(&hits);
        for k in 0..ts.len() {
            let (t, ch) = (ts[k], chs[k]);
            let slot = slots.slot(ch);
            if slot == ModuleSlots::UNMAPPED {
                closer.unmapped::<LABELS>(labels);
                continue;
            }
            last_mapped_t = Some(t);
            let (e, f) = (es[k], fs[k]);
            // The time test first, from the slot table: most hits open a group. A group before
            // `head` is closed, and its window is over, so the test refuses it. Ids in `open`
            // run from `base` to `next_seq - 1`; a last group below `base` (drained, opened
            // before a `finish` in a stream whose times may be later than this one's, or none)
            // wraps to an index past the end.
            let (last, last_t_first) = slots.last_group(slot);
            if t.saturating_sub(last_t_first) <= w {
                let base = next_seq - open.len() as u64;
                let i = last.wrapping_sub(base);
                if i < open.len() as u64
                    && let Some(g) = open.get_mut(i as usize)
                {
                    if LABELS {
                        labels.photon_id.push(g.seq);
                    }
                    g.join(t, ch, e, f);
                    continue;
                }
            }
            if LABELS {
                labels.photon_id.push(next_seq);
            }
            // Position and module are only read by the search of the general path.
            open.push(Open::first(next_seq, t, [0.0; 3], 0, ch, e, f));
            slots.opened(slot, next_seq, t);
            next_seq += 1;
            opened_since_close += 1;
            if opened_since_close == CLOSE_EVERY {
                opened_since_close = 0;
                closer.close_expired::<LABELS>(open, &mut head, t, w, labels);
                if head >= COMPACT_AFTER {
                    open.drain(..head);
                    head = 0;
                }
            }
        }
        if let Some(t) = last_mapped_t {
            closer.close_expired::<LABELS>(open, &mut head, t, w, labels);
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
        let mut closer = Closer::new(&self.cfg, &mut self.stats, &mut self.done);
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

impl<'g> Closer<'g> {
    /// Borrows the grouper's cuts, counters and waiting photons.
    fn new(cfg: &'g GroupingConfig, stats: &'g mut GroupingStats, done: &'g mut Vec<Done>) -> Self {
        Self { cfg, stats, done }
    }

    /// Counts a hit on a channel missing from the geometry (and labels it ungrouped).
    #[inline(always)]
    fn unmapped<const LABELS: bool>(&mut self, labels: &mut GroupLabels) {
        self.stats.unmapped_channel += 1;
        if LABELS {
            labels.photon_id.push(GroupLabels::UNGROUPED);
        }
    }

    /// Closes the open groups (from `head` on) whose window is over at time `t`, in opening
    /// order; with `LABELS`, appends their multiplicities to `labels`.
    #[inline(always)]
    fn close_expired<const LABELS: bool>(
        &mut self,
        open: &[Open],
        head: &mut usize,
        t: i64,
        w: i64,
        labels: &mut GroupLabels,
    ) {
        while let Some(g) = open.get(*head)
            && t.saturating_sub(g.t_first) > w
        {
            if LABELS {
                labels.closed_multiplicity.push(g.multiplicity);
            }
            self.close(g);
            *head += 1;
        }
    }

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

/// The four columns of `hits`, cut to one length (checked equal before grouping), so the
/// loops index them without bounds checks.
fn columns<'h>(hits: &SinglesRef<'h>) -> (&'h [i64], &'h [u32], &'h [f32], &'h [u16]) {
    let n = hits.len();
    (
        &hits.t_ps[..n],
        &hits.channel[..n],
        &hits.energy_kev[..n],
        &hits.flags[..n],
    )
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

/// Squared distance between two crystal centres, in f64 (the grouper's distance test).
#[inline]
pub(crate) fn squared_distance(a: [f32; 3], b: [f32; 3]) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coincidence::ModulePairs;
    use crate::{Crystal, Geometry};

    /// Four modules of 3 x 3 crystals 4 mm apart (module diagonal ~11.3 mm), modules 100 mm
    /// apart; channels `16 * module + k`, so 9..15 of each 16 are unmapped.
    fn geometry() -> Geometry {
        let mut g = Geometry::default();
        for module in 0..4u32 {
            for k in 0..9u32 {
                let pos_mm = [
                    module as f32 * 100.0 + (k % 3) as f32 * 4.0,
                    (k / 3) as f32 * 4.0,
                    0.0,
                ];
                let crystal = Crystal {
                    module,
                    xi: k % 3,
                    yi: k / 3,
                    pos_mm,
                };
                g.crystals.insert(16 * module + k, crystal);
            }
        }
        g
    }

    /// Time-ordered hits, clustered (gaps of 0 to 3 windows), on 64 channel ids.
    fn hits(seed: u64, n: usize, window: i64) -> crate::HitBatch {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut b = crate::HitBatch::default();
        let mut t = 0i64;
        for _ in 0..n {
            let r = next();
            t += match r % 8 {
                0 | 1 => 0,
                2 => window,
                3 => window + 1,
                _ => (r >> 8) as i64 % (3 * window + 1),
            };
            b.t_ps.push(t);
            b.channel.push((r >> 20) as u32 % 64);
            b.energy_kev
                .push([100.0, 200.0, 511.0, 511.0, 300.0][(r >> 30) as usize % 5]);
            b.flags.push(1 << ((r >> 40) % 3));
        }
        b
    }

    /// Every output of a grouper fed `batches` then finished, twice (a second stream after the
    /// first's `finish`): photons, labels, counters, and `groups_closed` after each push.
    fn run(
        mut g: Grouper<'_>,
        all: &crate::HitBatch,
        cuts: &[usize],
    ) -> (PhotonBatch, GroupLabels, GroupingStats, Vec<u64>) {
        let (mut out, mut labels, mut closed) =
            (PhotonBatch::default(), GroupLabels::default(), vec![]);
        for _stream in 0..2 {
            for w in cuts.windows(2) {
                let batch = SinglesRef::from(all).slice(w[0]..w[1]);
                g.push_labeled(batch, &mut out, &mut labels).unwrap();
                closed.push(g.groups_closed());
            }
            g.finish_labeled(&mut out, &mut labels);
            closed.push(g.groups_closed());
        }
        (out, labels, g.stats, closed)
    }

    #[test]
    fn the_module_fast_path_gives_what_the_search_gives() {
        let lut = CrystalLut::from_geometry(&geometry());
        let window = 1_000;
        let rule_sets = [
            vec![[0, 0], [1, 1], [2, 2], [3, 3]],
            vec![[2, 2]],
            vec![[1, 1], [3, 3], [1, 1]],
        ];
        for seed in 1..40u64 {
            let all = hits(seed, 3_000, window);
            let cuts: Vec<usize> = [0, 1, 700, 701, 2_999, 3_000]
                .into_iter()
                .map(|c| (c + seed as usize * 37) % 3_001)
                .chain([0, 3_000])
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let pairs = rule_sets[seed as usize % rule_sets.len()].clone();
            let cfg = GroupingConfig {
                multi_hit_module_pairs: Some(ModulePairs(pairs)),
                min_hits: 1 + (seed % 2) as u32,
                max_hits: (seed % 3 == 0).then_some(2),
                energy_window: (seed % 4 == 0).then_some([150.0, 900.0]),
                ..GroupingConfig::new(window, 12.0)
            };
            let fast = Grouper::new(cfg.clone(), &lut).unwrap();
            assert!(
                fast.by_module.is_some(),
                "modules are 11.3 mm across, the limit 12 mm"
            );
            let mut search = Grouper::new(cfg, &lut).unwrap();
            search.by_module = None;
            let (got, want) = (run(fast, &all, &cuts), run(search, &all, &cuts));
            assert_eq!(got.0, want.0, "photons, seed {seed}");
            assert_eq!(got.1, want.1, "labels, seed {seed}");
            assert_eq!(got.2, want.2, "counters, seed {seed}");
            assert_eq!(got.3, want.3, "groups closed after each push, seed {seed}");
            assert!(want.2.multi_hit_photons > 0 && want.2.unmapped_channel > 0);
        }
    }

    #[test]
    fn a_module_wider_than_the_limit_keeps_the_search() {
        let lut = CrystalLut::from_geometry(&geometry());
        let cfg = GroupingConfig {
            multi_hit_module_pairs: Some(ModulePairs(vec![[0, 0]])),
            ..GroupingConfig::new(1_000, 11.0)
        };
        assert!(Grouper::new(cfg, &lut).unwrap().by_module.is_none());
    }
}
