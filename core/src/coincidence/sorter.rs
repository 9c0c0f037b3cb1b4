//! The coincidence sorter: energy cut, window opening (multi- or single-window), same-crystal
//! removal, good-pair criteria and multiples policies, streaming over successive time-ordered
//! batches with a bounded carry-over ([`CoincidenceSorter`]), and the whole-batch entry point
//! [`sort_coincidences`].

use super::batch::{CoincidenceBatch, CoincidenceStats, SinglesRef, coinc_flags};
use super::config::{CoincidenceConfig, CoincidenceError, Policy, WindowMode};
use super::lut::CrystalLut;
use super::module_pairs::ModulePairTable;
use std::cmp::Ordering::{Equal, Greater, Less};

/// Input rows handled per step of [`CoincidenceSorter::push`].
const PIECE: usize = 8192;

/// Streaming coincidence sorter.
///
/// Feed time-ordered batches with [`push`](Self::push) (each batch in order, later batches not
/// earlier than the previous one), then call [`finish`](Self::finish). Pairs are written as
/// soon as an opener's window is complete, i.e. once a single later than
/// `t_opener + offset + window` has been seen; only the singles from the first incomplete
/// opener on are carried over (those within `offset + window` of the newest single), so memory
/// is bounded by the rate times `offset + window`. The output, and the stats, are identical to
/// sorting the concatenation at once, however the input is split.
#[derive(Debug)]
pub struct CoincidenceSorter<'a> {
    cfg: CoincidenceConfig,
    lut: &'a CrystalLut,
    // `cfg.allowed_module_pairs` as a bit table.
    allowed_modules: Option<ModulePairTable>,
    out_flags: u16,
    // Singles past the energy cut, from the first opener whose window is not complete yet.
    t: Vec<i64>,
    ch: Vec<u32>,
    e: Vec<f32>,
    crystal: Vec<u32>,
    // Single-window modes: opens no window (SingleWindow: partner of a kept pair;
    // SingleWindowGate10: candidate of an earlier single's window).
    suppressed: Vec<bool>,
    // Window pointers relative to the carried singles: first candidate, one past the last.
    lo: usize,
    hi: usize,
    last_t: Option<i64>,
    cand: Vec<u32>,
    good: Vec<bool>,
    // Kept pairs of the current `process` (opener, partner, flags), as indices into the
    // carried singles: written out column by column before the carried singles move.
    kept: Vec<(usize, usize, u16)>,
    stats: CoincidenceStats,
}

impl<'a> CoincidenceSorter<'a> {
    /// A sorter for `config` (validated here) with crystal positions from `lut`.
    pub fn new(config: CoincidenceConfig, lut: &'a CrystalLut) -> Result<Self, CoincidenceError> {
        config.validate()?;
        Ok(Self {
            out_flags: if config.delayed {
                coinc_flags::DELAYED
            } else {
                0
            },
            allowed_modules: config.allowed_module_pairs.as_ref().map(|p| p.table()),
            cfg: config,
            lut,
            t: Vec::new(),
            ch: Vec::new(),
            e: Vec::new(),
            crystal: Vec::new(),
            suppressed: Vec::new(),
            lo: 0,
            hi: 0,
            last_t: None,
            cand: Vec::new(),
            good: Vec::new(),
            kept: Vec::new(),
            stats: CoincidenceStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CoincidenceConfig {
        &self.cfg
    }

    /// Counters since creation (or the last [`take_stats`](Self::take_stats)).
    pub fn stats(&self) -> &CoincidenceStats {
        &self.stats
    }

    /// Returns the counters and resets them.
    pub fn take_stats(&mut self) -> CoincidenceStats {
        std::mem::take(&mut self.stats)
    }

    /// Number of singles carried over, waiting for later input.
    pub fn pending(&self) -> usize {
        self.t.len()
    }

    /// Sorts the next time-ordered batch, appending every coincidence whose window is complete
    /// to `out`. On error (unequal columns, time order broken inside the batch or against the
    /// previous batch) nothing of the batch is used and the sorter state is unchanged.
    pub fn push(
        &mut self,
        singles: SinglesRef<'_>,
        out: &mut CoincidenceBatch,
    ) -> Result<(), CoincidenceError> {
        singles.check_lengths()?;
        check_order(singles.t_ps, self.last_t)?;
        if let Some(&t) = singles.t_ps.last() {
            self.last_t = Some(t);
        }
        // Cache-sized pieces: the carried columns stay small (tail + one piece) and hot.
        let mut start = 0;
        while start < singles.len() {
            let end = (start + PIECE).min(singles.len());
            self.append_filtered(singles.slice(start..end));
            self.process(false, out);
            start = end;
        }
        Ok(())
    }

    /// Flushes: sorts the carried singles as the end of the stream, appending their
    /// coincidences to `out`. The sorter is then ready for a new stream (counters are kept).
    pub fn finish(&mut self, out: &mut CoincidenceBatch) {
        self.process(true, out);
        self.last_t = None;
        self.lo = 0;
        self.hi = 0;
    }

    fn append_filtered(&mut self, s: SinglesRef<'_>) {
        let n = s.len();
        self.stats.singles_in += n as u64;
        let (elo, ehi) = match self.cfg.energy_window_kev {
            Some([a, b]) => (a, b),
            None => (f32::NEG_INFINITY, f32::INFINITY),
        };
        let cut = self.cfg.energy_window_kev.is_some();
        if !cut && self.append_all_if_mapped(s) {
            return;
        }
        // Branch-free compaction: write every row at `w`, advance `w` only for kept rows.
        let base = self.t.len();
        let cap = base + n;
        self.t.resize(cap, 0);
        self.ch.resize(cap, 0);
        self.e.resize(cap, 0.0);
        self.crystal.resize(cap, 0);
        self.suppressed.resize(cap, false);
        let (t, ch, e, cr) = (
            &mut self.t[base..],
            &mut self.ch[base..],
            &mut self.e[base..],
            &mut self.crystal[base..],
        );
        let (mut w, mut outside) = (0usize, 0u64);
        for k in 0..n {
            let energy = s.energy_kev[k];
            let inside = !cut || (energy >= elo && energy <= ehi);
            let crystal = self.lut.crystal_or_unmapped(s.channel[k]);
            let mapped = crystal != CrystalLut::UNMAPPED;
            t[w] = s.t_ps[k];
            ch[w] = s.channel[k];
            e[w] = energy;
            cr[w] = crystal;
            outside += !inside as u64;
            w += (inside & mapped) as usize;
        }
        self.t.truncate(base + w);
        self.ch.truncate(base + w);
        self.e.truncate(base + w);
        self.crystal.truncate(base + w);
        self.suppressed.truncate(base + w);
        self.stats.outside_energy_window += outside;
        self.stats.unmapped_channel += n as u64 - outside - w as u64;
    }

    /// Without an energy cut: appends every row of `s` and returns true when all its channels
    /// are mapped (straight copies, no compaction); otherwise appends nothing, returns false.
    fn append_all_if_mapped(&mut self, s: SinglesRef<'_>) -> bool {
        let base = self.crystal.len();
        let mut unmapped = false;
        self.crystal.extend(s.channel.iter().map(|&c| {
            let crystal = self.lut.crystal_or_unmapped(c);
            unmapped |= crystal == CrystalLut::UNMAPPED;
            crystal
        }));
        if unmapped {
            self.crystal.truncate(base);
            return false;
        }
        self.t.extend_from_slice(s.t_ps);
        self.ch.extend_from_slice(s.channel);
        self.e.extend_from_slice(s.energy_kev);
        self.suppressed.resize(self.t.len(), false);
        true
    }

    /// Opens windows in order while they are complete (all of them when `at_end`), then drops
    /// the processed openers.
    fn process(&mut self, at_end: bool, out: &mut CoincidenceBatch) {
        let n = self.t.len();
        let off = self.cfg.offset_ps;
        let span = self.cfg.span_ps();
        let single = self.cfg.mode == WindowMode::SingleWindow;
        let gate10 = self.cfg.mode == WindowMode::SingleWindowGate10;
        let (mut lo, mut hi) = (self.lo, self.hi);
        let mut i = 0;
        while i < n {
            if single && self.suppressed[i] {
                self.stats.openers_suppressed += 1;
                i += 1;
                continue;
            }
            let ti = self.t[i];
            if lo <= i {
                lo = i + 1;
            }
            while lo < n && self.t[lo].saturating_sub(ti) < off {
                lo += 1;
            }
            if hi < lo {
                hi = lo;
            }
            while hi < n && self.t[hi].saturating_sub(ti) <= span {
                hi += 1;
            }
            if hi == n && !at_end {
                break;
            }
            if gate10 {
                // Every candidate of this window opens none of its own, even when this single
                // is itself suppressed (so its window is still needed, complete).
                let chi = self.ch[i];
                for j in lo..hi {
                    self.suppressed[j] |= self.ch[j] != chi;
                }
                if self.suppressed[i] {
                    self.stats.openers_suppressed += 1;
                    i += 1;
                    continue;
                }
            }
            self.stats.windows_opened += 1;
            if lo < hi {
                self.window(i, lo, hi);
            }
            i += 1;
        }
        self.write_kept(out);
        if i == n {
            self.t.clear();
            self.ch.clear();
            self.e.clear();
            self.crystal.clear();
            self.suppressed.clear();
        } else if i > 0 {
            self.t.drain(..i);
            self.ch.drain(..i);
            self.e.drain(..i);
            self.crystal.drain(..i);
            self.suppressed.drain(..i);
        }
        self.lo = lo.saturating_sub(i);
        self.hi = hi.saturating_sub(i);
    }

    /// Appends the pairs in `kept` to `out`, column by column, and empties `kept`.
    fn write_kept(&mut self, out: &mut CoincidenceBatch) {
        let (kept, t, ch, e) = (&self.kept, &self.t, &self.ch, &self.e);
        out.t1_ps.extend(kept.iter().map(|&(i, _, _)| t[i]));
        out.t2_ps.extend(kept.iter().map(|&(_, j, _)| t[j]));
        out.channel1.extend(kept.iter().map(|&(i, _, _)| ch[i]));
        out.channel2.extend(kept.iter().map(|&(_, j, _)| ch[j]));
        out.energy1_kev.extend(kept.iter().map(|&(i, _, _)| e[i]));
        out.energy2_kev.extend(kept.iter().map(|&(_, j, _)| e[j]));
        out.tof_ps
            .extend(kept.iter().map(|&(i, j, _)| t[i].saturating_sub(t[j])));
        out.flags.extend(kept.iter().map(|&(_, _, f)| f));
        self.kept.clear();
    }

    /// The window of opener `i` with candidate slots `lo..hi`.
    #[inline]
    fn window(&mut self, i: usize, lo: usize, hi: usize) {
        let chi = self.ch[i];
        if hi - lo == 1 {
            // The most frequent window, without the candidate list.
            if self.ch[lo] != chi {
                self.one_pair(i, lo);
            }
            return;
        }
        let mut cand = std::mem::take(&mut self.cand);
        cand.clear();
        cand.extend((lo..hi).filter(|&j| self.ch[j] != chi).map(|j| j as u32));
        match cand.len() {
            0 => {}
            1 => self.one_pair(i, cand[0] as usize),
            _ => self.multiple(i, &cand),
        }
        self.cand = cand;
    }

    /// A window whose only pair is (`i`, `j`).
    #[inline]
    fn one_pair(&mut self, i: usize, j: usize) {
        self.stats.one_pair_windows += 1;
        if self.is_good(i, j) {
            self.keep(i, j, self.out_flags);
        } else {
            self.stats.one_pair_not_good += 1;
        }
    }

    fn multiple(&mut self, i: usize, cand: &[u32]) {
        self.stats.multiples_seen += 1;
        let mut good = std::mem::take(&mut self.good);
        good.clear();
        good.extend(cand.iter().map(|&j| self.is_good(i, j as usize)));
        let flags = self.out_flags | coinc_flags::MULTIPLE;
        let kept_before = self.stats.pairs_kept;
        let pick = match self.cfg.policy {
            Policy::TakeAllGoods => {
                for (k, &j) in cand.iter().enumerate() {
                    if good[k] {
                        self.keep(i, j as usize, flags);
                    }
                }
                None
            }
            Policy::TakeWinnerOfGoods => self.winner(i, cand, |k| good[k]),
            Policy::TakeWinnerIfIsGood => self.winner(i, cand, |_| true).filter(|&k| good[k]),
            Policy::TakeWinnerIfAllAreGoods => {
                if good.iter().all(|&g| g) {
                    self.winner(i, cand, |_| true)
                } else {
                    None
                }
            }
            Policy::TakeIfOnlyOneGood => {
                let mut goods = good.iter().enumerate().filter(|(_, g)| **g);
                match (goods.next(), goods.next()) {
                    (Some((k, _)), None) => Some(k),
                    _ => None,
                }
            }
            Policy::RemoveMultiples => None,
        };
        if let Some(k) = pick {
            self.keep(i, cand[k] as usize, flags);
        }
        if self.stats.pairs_kept == kept_before {
            self.stats.multiples_rejected += 1;
        }
        self.good = good;
    }

    /// Index into `cand` of the pair with the highest `e_i + e_j` (in f64) among those for
    /// which `eligible(k)`; ties go to the earliest partner.
    fn winner(&self, i: usize, cand: &[u32], eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let ei = self.e[i] as f64;
        let mut best: Option<(usize, f64)> = None;
        for (k, &j) in cand.iter().enumerate() {
            if !eligible(k) {
                continue;
            }
            let s = ei + self.e[j as usize] as f64;
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((k, s));
            }
        }
        best.map(|(k, _)| k)
    }

    #[inline]
    fn is_good(&self, i: usize, j: usize) -> bool {
        if self.cfg.no_criteria() {
            return true;
        }
        let (ci, cj) = (self.crystal[i], self.crystal[j]);
        let (a, b) = (self.lut.pos_mm(ci), self.lut.pos_mm(cj));
        if let Some(min) = self.cfg.min_transaxial_mm {
            let dx = a[0] as f64 - b[0] as f64;
            let dy = a[1] as f64 - b[1] as f64;
            // Good only when d >= min (a NaN distance is not good).
            if !matches!(
                (dx * dx + dy * dy).sqrt().partial_cmp(&min),
                Some(Greater | Equal)
            ) {
                return false;
            }
        }
        if let Some(max) = self.cfg.max_axial_mm
            && !matches!(
                (a[2] as f64 - b[2] as f64).abs().partial_cmp(&max),
                Some(Less | Equal)
            )
        {
            return false;
        }
        if let Some(md) = self.cfg.min_module_difference
            && md.difference(self.lut.module(ci), self.lut.module(cj)) < md.min
        {
            return false;
        }
        if let Some(table) = &self.allowed_modules
            && !table.allows(self.lut.module(ci), self.lut.module(cj))
        {
            return false;
        }
        true
    }

    /// Keeps the pair (`i`, `j`): noted in `kept`, written by [`Self::write_kept`].
    #[inline]
    fn keep(&mut self, i: usize, j: usize, flags: u16) {
        self.kept.push((i, j, flags));
        self.stats.pairs_kept += 1;
        if self.cfg.mode == WindowMode::SingleWindow {
            self.suppressed[j] = true;
        }
    }
}

/// Errors unless `t` is non-decreasing and not earlier than `previous`.
pub(crate) fn check_order(t: &[i64], previous: Option<i64>) -> Result<(), CoincidenceError> {
    let first_ok = match (previous, t.first()) {
        (Some(p), Some(&f)) => f >= p,
        _ => true,
    };
    // A fold without early exit: vectorised, where `all` stopped at every element.
    if first_ok && t.windows(2).fold(true, |ok, w| ok & (w[0] <= w[1])) {
        return Ok(());
    }
    let mut prev = previous.unwrap_or(i64::MIN);
    for (index, &t_ps) in t.iter().enumerate() {
        if t_ps < prev {
            return Err(CoincidenceError::NotTimeOrdered {
                index,
                previous_ps: prev,
                t_ps,
            });
        }
        prev = t_ps;
    }
    Ok(())
}

/// Sorts one whole time-ordered batch: appends its coincidences to `out` and returns the
/// counters. Same result as a [`CoincidenceSorter`] fed the batch in any split.
pub fn sort_coincidences(
    config: &CoincidenceConfig,
    lut: &CrystalLut,
    singles: SinglesRef<'_>,
    out: &mut CoincidenceBatch,
) -> Result<CoincidenceStats, CoincidenceError> {
    let mut sorter = CoincidenceSorter::new(config.clone(), lut)?;
    sorter.push(singles, out)?;
    sorter.finish(out);
    Ok(sorter.take_stats())
}
