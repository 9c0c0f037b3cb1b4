//! The struct-of-arrays hit batch: calibrated singles plus the raw fields kept for diagnostics.

/// Bit flags of a hit (`flags` column).
pub mod hit_flags {
    /// Energy column holds ToT in ns (no energy calibration was applied).
    pub const ENERGY_IS_TOT_NS: u16 = 1 << 0;
    /// No skew correction was applied to this hit's time.
    pub const NO_SKEW: u16 = 1 << 1;
    /// The hit came from a frame whose front-end lost-data flag was set.
    pub const FROM_LOSSY_FRAME: u16 = 1 << 2;
    /// The fine-time code was outside the calibrated range (phase clamped).
    pub const FINE_OUT_OF_RANGE: u16 = 1 << 3;
    /// The hit's board restarted during the run and its clock with it: the hit belongs to a
    /// later session whose times were moved onto the run's timeline at the restart (offset
    /// known only roughly), so its time is not synchronised with other boards or with the
    /// board's earlier sessions (docs/formats.md §1, "Sessions").
    pub const CLOCK_REBASED: u16 = 1 << 5;
}

/// A batch of hits as columns; row `i` is one hit. The four physics columns (`t_ps`, `channel`,
/// `energy_kev`, `flags`) have the same length; the raw diagnostic columns (`frame` .. `tac`)
/// are either all empty (not requested) or all of that length too.
///
/// `t_ps` is the corrected time in picoseconds since the device clock's zero (unwrapped);
/// `energy_kev` is keV, or ToT in ns when `flags` has [`hit_flags::ENERGY_IS_TOT_NS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HitBatch {
    /// Corrected time, ps.
    pub t_ps: Vec<i64>,
    /// PETsys absolute channel id.
    pub channel: Vec<u32>,
    /// Energy in keV (or ToT ns, see flags).
    pub energy_kev: Vec<f32>,
    /// [`hit_flags`] bits.
    pub flags: Vec<u16>,
    /// Unwrapped frame number the hit was read in (raw diagnostics).
    pub frame: Vec<u64>,
    /// Raw timing-branch coarse counter.
    pub tcoarse: Vec<u16>,
    /// Raw energy-branch coarse counter.
    pub ecoarse: Vec<u16>,
    /// Decoded timing fine code (after the +27 mod 1024 fix-up).
    pub tfine: Vec<u16>,
    /// Decoded energy fine code.
    pub efine: Vec<u16>,
    /// TAC used (0..4).
    pub tac: Vec<u8>,
}

impl HitBatch {
    /// Empty batch with room for `n` hits in every column.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            t_ps: Vec::with_capacity(n),
            channel: Vec::with_capacity(n),
            energy_kev: Vec::with_capacity(n),
            flags: Vec::with_capacity(n),
            frame: Vec::with_capacity(n),
            tcoarse: Vec::with_capacity(n),
            ecoarse: Vec::with_capacity(n),
            tfine: Vec::with_capacity(n),
            efine: Vec::with_capacity(n),
            tac: Vec::with_capacity(n),
        }
    }

    /// A batch with the given times, channel = row index and every other column zero (for
    /// tests and examples).
    pub fn from_times(times: &[i64]) -> Self {
        let n = times.len();
        Self {
            t_ps: times.to_vec(),
            channel: (0..n as u32).collect(),
            energy_kev: (0..n).map(|k| k as f32).collect(),
            flags: vec![0; n],
            frame: vec![0; n],
            tcoarse: vec![0; n],
            ecoarse: vec![0; n],
            tfine: vec![0; n],
            efine: vec![0; n],
            tac: vec![0; n],
        }
    }

    /// Number of hits.
    pub fn len(&self) -> usize {
        self.t_ps.len()
    }

    /// True when the batch holds no hit.
    pub fn is_empty(&self) -> bool {
        self.t_ps.is_empty()
    }

    /// Removes every hit, keeping the allocations.
    pub fn clear(&mut self) {
        self.t_ps.clear();
        self.channel.clear();
        self.energy_kev.clear();
        self.flags.clear();
        self.frame.clear();
        self.tcoarse.clear();
        self.ecoarse.clear();
        self.tfine.clear();
        self.efine.clear();
        self.tac.clear();
    }

    /// Appends row `i` of `other` (its raw columns only when `other` has them).
    pub fn push_row_from(&mut self, other: &HitBatch, i: usize) {
        self.t_ps.push(other.t_ps[i]);
        self.channel.push(other.channel[i]);
        self.energy_kev.push(other.energy_kev[i]);
        self.flags.push(other.flags[i]);
        if other.frame.len() == other.len() {
            self.frame.push(other.frame[i]);
            self.tcoarse.push(other.tcoarse[i]);
            self.ecoarse.push(other.ecoarse[i]);
            self.tfine.push(other.tfine[i]);
            self.efine.push(other.efine[i]);
            self.tac.push(other.tac[i]);
        }
    }

    /// Appends rows `range` of `other` (column-wise slice copies; its raw columns only when
    /// `other` has them).
    pub fn extend_from_range(&mut self, other: &HitBatch, range: std::ops::Range<usize>) {
        self.t_ps.extend_from_slice(&other.t_ps[range.clone()]);
        self.channel
            .extend_from_slice(&other.channel[range.clone()]);
        self.energy_kev
            .extend_from_slice(&other.energy_kev[range.clone()]);
        self.flags.extend_from_slice(&other.flags[range.clone()]);
        if other.frame.len() != other.len() {
            return;
        }
        self.frame.extend_from_slice(&other.frame[range.clone()]);
        self.tcoarse
            .extend_from_slice(&other.tcoarse[range.clone()]);
        self.ecoarse
            .extend_from_slice(&other.ecoarse[range.clone()]);
        self.tfine.extend_from_slice(&other.tfine[range.clone()]);
        self.efine.extend_from_slice(&other.efine[range.clone()]);
        self.tac.extend_from_slice(&other.tac[range]);
    }

    /// The rows of `a` then `b` (row `k` of `b` numbered `a.len() + k`) in `order`. Raw
    /// columns are merged when both batches have them (else left empty).
    fn merge_through(a: &HitBatch, b: &HitBatch, order: &[u32]) -> HitBatch {
        fn gather<T: Copy>(a: &[T], b: &[T], order: &[u32]) -> Vec<T> {
            let both = [a, b].concat();
            order.iter().map(|&k| both[k as usize]).collect()
        }
        let raw = a.frame.len() == a.len() && b.frame.len() == b.len();
        let raw_gather = |x: &[u16], y: &[u16]| if raw { gather(x, y, order) } else { Vec::new() };
        HitBatch {
            t_ps: gather(&a.t_ps, &b.t_ps, order),
            channel: gather(&a.channel, &b.channel, order),
            energy_kev: gather(&a.energy_kev, &b.energy_kev, order),
            flags: gather(&a.flags, &b.flags, order),
            frame: if raw {
                gather(&a.frame, &b.frame, order)
            } else {
                Vec::new()
            },
            tcoarse: raw_gather(&a.tcoarse, &b.tcoarse),
            ecoarse: raw_gather(&a.ecoarse, &b.ecoarse),
            tfine: raw_gather(&a.tfine, &b.tfine),
            efine: raw_gather(&a.efine, &b.efine),
            tac: if raw {
                gather(&a.tac, &b.tac, order)
            } else {
                Vec::new()
            },
        }
    }

    /// Keeps, among rows `start..`, those for which `keep(i - start)` is true (in order);
    /// rows before `start` are untouched.
    pub fn retain_from(&mut self, start: usize, keep: impl Fn(usize) -> bool) {
        fn retain<T: Copy>(v: &mut Vec<T>, start: usize, keep: &impl Fn(usize) -> bool) {
            let mut w = start;
            for r in start..v.len() {
                if keep(r - start) {
                    v[w] = v[r];
                    w += 1;
                }
            }
            v.truncate(w);
        }
        retain(&mut self.t_ps, start, &keep);
        retain(&mut self.channel, start, &keep);
        retain(&mut self.energy_kev, start, &keep);
        retain(&mut self.flags, start, &keep);
        retain(&mut self.frame, start, &keep);
        retain(&mut self.tcoarse, start, &keep);
        retain(&mut self.ecoarse, start, &keep);
        retain(&mut self.tfine, start, &keep);
        retain(&mut self.efine, start, &keep);
        retain(&mut self.tac, start, &keep);
    }

    /// True when `t_ps` is non-decreasing.
    pub fn is_time_ordered(&self) -> bool {
        self.t_ps.windows(2).all(|w| w[0] <= w[1])
    }

    /// Sorts the batch by `t_ps` (stable: equal times keep their order). A batch nearly in
    /// order is sorted in place ([`HitBatch::put_few_in_time_order`]); otherwise (time, row)
    /// keys are sorted once, then each column is gathered through the permutation.
    pub fn sort_by_time(&mut self) {
        if self.is_time_ordered() || self.put_few_in_time_order() {
            return;
        }
        let order = time_order(&self.t_ps, &self.frame);
        self.permute(&order);
    }

    /// [`HitBatch::sort_by_time`] with each row's frame number given apart (`frame`, one per
    /// row, as the decoder read them), for batches whose raw columns are left empty: the rows
    /// of one frame are contiguous, which keeps the sort short. Same permutation as
    /// `sort_by_time` with those frames in the `frame` column; a `frame` of another length,
    /// or rows that [`HitBatch::put_few_in_time_order`] moved before giving up, only make the
    /// sort slower.
    pub fn sort_by_time_in_frames(&mut self, frame: &[u64]) {
        if self.is_time_ordered() || self.put_few_in_time_order() {
            return;
        }
        let order = time_order(&self.t_ps, frame);
        self.permute(&order);
    }

    /// Sorts a batch that is nearly in time order in place, row by row: each row earlier than
    /// the one before it moves back behind the last row not later than it (so equal times keep
    /// their order), in every column. Returns false, having moved nothing, when more than one
    /// row in [`FEW_DESCENTS`] is out of order, and false, with the batch still a stable
    /// partial sort of itself, when the rows would move more than [`MOVES_PER_ROW`] places
    /// per row in all. A front end that reads frames out by coarse time (as fpga-sim's does)
    /// leaves only hits of one clock to swap, a place or two each, and this then replaces the
    /// whole sort key, permutation and gathered columns (10 % of a singles replay's CPU).
    fn put_few_in_time_order(&mut self) -> bool {
        let n = self.len();
        let descents = self.t_ps.windows(2).filter(|w| w[0] > w[1]).count();
        if descents * FEW_DESCENTS > n {
            return false;
        }
        let mut budget = n.saturating_mul(MOVES_PER_ROW);
        // A row moves exactly when it is earlier than some row before it (the rows before it,
        // once in order, end with their maximum). Those rows are listed a slice at a time
        // without a branch per row (a quarter of the rows in the ring preset, at random: a
        // branch on each was mispredicted about as often), then moved one by one.
        let mut latest = i64::MIN;
        let mut to_move = [0u32; MOVE_LIST];
        let mut start = 0;
        while start < n {
            let end = (start + MOVE_LIST).min(n);
            let mut listed = 0;
            for (i, &t) in self.t_ps[start..end].iter().enumerate() {
                to_move[listed] = (start + i) as u32;
                listed += (t < latest) as usize;
                latest = latest.max(t);
            }
            for &i in &to_move[..listed] {
                let i = i as usize;
                let t = self.t_ps[i];
                // Rows ..i are in order: the row goes after the last one not later than it,
                // a place or two back as a rule (a linear scan, not a binary search).
                let mut to = i - 1;
                while to > 0 && self.t_ps[to - 1] > t {
                    to -= 1;
                }
                if i - to > budget {
                    return false;
                }
                budget -= i - to;
                self.move_row_back(i, to);
            }
            start = end;
        }
        true
    }

    /// Moves row `from` to `to` (< `from`) in every column, shifting rows `to..from` up one.
    /// Raw columns only when present, as [`HitBatch::permute`].
    fn move_row_back(&mut self, from: usize, to: usize) {
        let n = self.len();
        fn shift<T: Copy>(col: &mut [T], n: usize, from: usize, to: usize) {
            if col.len() == n {
                // Element by element, not `rotate_right`: a move is one or two places, where
                // a memmove call per column costs more than the move; and not by swaps, which
                // the compiler made into loads of two elements that a store of the previous
                // move (one row on) could not forward to.
                let moved = col[from];
                let mut k = from;
                while k > to {
                    col[k] = col[k - 1];
                    k -= 1;
                }
                col[to] = moved;
            }
        }
        shift(&mut self.t_ps, n, from, to);
        shift(&mut self.channel, n, from, to);
        shift(&mut self.energy_kev, n, from, to);
        shift(&mut self.flags, n, from, to);
        shift(&mut self.frame, n, from, to);
        shift(&mut self.tcoarse, n, from, to);
        shift(&mut self.ecoarse, n, from, to);
        shift(&mut self.tfine, n, from, to);
        shift(&mut self.efine, n, from, to);
        shift(&mut self.tac, n, from, to);
    }

    /// Gathers every column through `order` (raw columns only when present).
    fn permute(&mut self, order: &[u32]) {
        fn gather<T: Copy>(col: &mut Vec<T>, order: &[u32]) {
            if col.len() != order.len() {
                return;
            }
            let sorted: Vec<T> = order.iter().map(|&i| col[i as usize]).collect();
            *col = sorted;
        }
        gather(&mut self.t_ps, order);
        gather(&mut self.channel, order);
        gather(&mut self.energy_kev, order);
        gather(&mut self.flags, order);
        gather(&mut self.frame, order);
        gather(&mut self.tcoarse, order);
        gather(&mut self.ecoarse, order);
        gather(&mut self.tfine, order);
        gather(&mut self.efine, order);
        gather(&mut self.tac, order);
    }

    /// Splits off and returns every hit with `t_ps < limit`, assuming the batch is time
    /// ordered; the hits at or after `limit` stay in `self`.
    pub fn take_before(&mut self, limit: i64) -> HitBatch {
        let n = self.t_ps.partition_point(|&t| t < limit);
        if n == 0 {
            return HitBatch::default();
        }
        if n == self.len() {
            return std::mem::take(self);
        }
        // The head keeps the columns' allocations; only the tail (usually the short rest a
        // merger holds back) is copied.
        let tail = self.split_off(n);
        std::mem::replace(self, tail)
    }

    /// Returns rows `at..` and leaves rows `..at` in `self` (the tail is copied; the head
    /// keeps the allocations). Raw columns of another length than `t_ps` (empty: not
    /// requested) stay as they are in `self` and the tail's are empty.
    pub fn split_off(&mut self, at: usize) -> HitBatch {
        let len = self.len();
        fn cut<T>(col: &mut Vec<T>, at: usize, len: usize) -> Vec<T> {
            if col.len() == len {
                col.split_off(at)
            } else {
                Vec::new()
            }
        }
        HitBatch {
            t_ps: cut(&mut self.t_ps, at, len),
            channel: cut(&mut self.channel, at, len),
            energy_kev: cut(&mut self.energy_kev, at, len),
            flags: cut(&mut self.flags, at, len),
            frame: cut(&mut self.frame, at, len),
            tcoarse: cut(&mut self.tcoarse, at, len),
            ecoarse: cut(&mut self.ecoarse, at, len),
            tfine: cut(&mut self.tfine, at, len),
            efine: cut(&mut self.efine, at, len),
            tac: cut(&mut self.tac, at, len),
        }
    }

    /// Merges two time-ordered batches into one time-ordered batch (`a` first on ties).
    /// Batches that take turns in long runs are copied run by run; batches whose hits
    /// interleave closely (two boards of one scanner, a run of a hit or two each) are merged
    /// through a row order gathered column by column, since a copy per run of one hit cost
    /// ten slice copies and a binary search per hit (the top function of a live run).
    pub fn merge_sorted(a: &HitBatch, b: &HitBatch) -> HitBatch {
        // (A row order is u32: batches are far smaller, but a larger pair is copied by runs.)
        if u32::try_from(a.len() + b.len()).is_ok() {
            let (order, runs) = merge_order(&a.t_ps, &b.t_ps);
            if runs.saturating_mul(LONG_RUN) > order.len() {
                return Self::merge_through(a, b, &order);
            }
        }
        let mut out = HitBatch::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            if a.t_ps[i] <= b.t_ps[j] {
                // Copy the whole run of `a` that precedes b[j] at once.
                let end = i + a.t_ps[i..].partition_point(|&t| t <= b.t_ps[j]);
                out.extend_from_range(a, i..end);
                i = end;
            } else {
                let end = j + b.t_ps[j..].partition_point(|&t| t < a.t_ps[i]);
                out.extend_from_range(b, j..end);
                j = end;
            }
        }
        out.extend_from_range(a, i..a.len());
        out.extend_from_range(b, j..b.len());
        out
    }
}

/// Runs at least this long on average are merged run by run ([`HitBatch::merge_sorted`]).
const LONG_RUN: usize = 16;

/// The stable merge order of two sorted time columns (row `k` of `b` numbered `a.len() + k`,
/// `a` first on ties) and the number of runs it takes from one side at a time.
fn merge_order(a: &[i64], b: &[i64]) -> (Vec<u32>, usize) {
    let mut order = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    let mut runs = 0;
    let mut last_from_a = None;
    while i < a.len() && j < b.len() {
        let from_a = a[i] <= b[j];
        runs += (last_from_a != Some(from_a)) as usize;
        last_from_a = Some(from_a);
        order.push(if from_a { i } else { a.len() + j } as u32);
        i += from_a as usize;
        j += !from_a as usize;
    }
    runs += (i < a.len() && last_from_a != Some(true)) as usize;
    runs += (j < b.len() && last_from_a != Some(false)) as usize;
    order.extend((i..a.len()).map(|k| k as u32));
    order.extend((j..b.len()).map(|k| (a.len() + k) as u32));
    (order, runs)
}

/// [`HitBatch::put_few_in_time_order`] sorts in place only with at most one row out of order
/// in this many. A read-out in coarse-time order with multi-hit clusters (hits of one photon
/// in neighbouring crystals, a few ps apart, listed by channel) has about one in four (the
/// ring preset: 24 %); an unordered one, one in two.
const FEW_DESCENTS: usize = 3;

/// Rows [`HitBatch::put_few_in_time_order`] checks before moving the ones out of order.
const MOVE_LIST: usize = 256;

/// Places a row may move, per row of the batch, in [`HitBatch::put_few_in_time_order`].
const MOVES_PER_ROW: usize = 4;

/// Bits of a packed sort key that hold the row index.
const ROW_BITS: u32 = 24;

/// The rows of `t_ps` in time order, equal times in row order. When the batch spans less
/// than 2^40 ps (1.1 s) and has fewer than 2^24 rows, each (time, row) pair is packed into
/// one `u64` (time since the batch's earliest << 24 | row): sorting 8-byte integers instead
/// of 16-byte pairs took about 40 % off a replay's sorting CPU (perf samples in the sort,
/// 180 → 104, bench replay of 9.9 M hits). Otherwise the pairs are sorted.
/// The permutation that sorts `t_ps` (stable). Rows of one frame (equal `frame`, contiguous:
/// the decoder's order) are sorted on their own first, then the few rows a calibration moved
/// across a frame edge are put in place; a batch without that shape is sorted whole. Every
/// path sorts unique (time, row) keys, so all give the same permutation.
fn time_order(t_ps: &[i64], frame: &[u64]) -> Vec<u32> {
    let (Some(&min), Some(&max)) = (t_ps.iter().min(), t_ps.iter().max()) else {
        return Vec::new();
    };
    let span = max.abs_diff(min);
    if t_ps.len() < 1 << ROW_BITS && span < 1 << (64 - ROW_BITS) {
        let mut keys: Vec<u64> = t_ps
            .iter()
            .enumerate()
            .map(|(i, &t)| (t.abs_diff(min) << ROW_BITS) | i as u64)
            .collect();
        sort_by_frames(&mut keys, frame);
        let mask = (1u64 << ROW_BITS) - 1;
        keys.iter().map(|&k| (k & mask) as u32).collect()
    } else {
        let mut keys: Vec<(i64, u32)> = t_ps
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, i as u32))
            .collect();
        keys.sort_unstable();
        keys.iter().map(|&(_, i)| i).collect()
    }
}

/// Sorts unique `keys` (time, row), using the frame segments when `frame` gives them: each
/// frame's rows are sorted alone (short sorts), then the rows that straddle frame edges are
/// put in place (an insertion pass that falls back to a whole sort when too many are off).
fn sort_by_frames(keys: &mut [u64], frame: &[u64]) {
    if frame.len() != keys.len() {
        keys.sort_unstable();
        return;
    }
    let mut start = 0;
    for end in 1..=keys.len() {
        if end == keys.len() || frame[end] != frame[start] {
            sort_frame(&mut keys[start..end]);
            start = end;
        }
    }
    crate::nearly_sorted::sort_nearly_sorted_by_key(keys, |&k| k);
}

/// Sorts the unique keys of one frame, unless they are nearly in order: a frame with few
/// neighbours out of order (a front end that reads a frame out by coarse time, as fpga-sim's
/// does, leaves only hits of one clock to swap) is left to the block's insertion pass after
/// it, which puts those few in place; only an unordered read-out is sorted here. Counting
/// the descents is one linear pass; sorting every frame whole was about 8 % of a
/// coincidences-only replay's CPU.
fn sort_frame(keys: &mut [u64]) {
    let descents = keys.windows(2).filter(|w| w[0] > w[1]).count();
    if descents * NEARLY_SORTED_DESCENTS > keys.len() {
        keys.sort_unstable();
    }
}

/// A frame with at most one descent per this many keys is left to the insertion pass.
const NEARLY_SORTED_DESCENTS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded 64-bit LCG's high bits: the tests' reproducible random numbers.
    fn lcg(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        }
    }

    #[test]
    fn frame_segments_sort_like_a_whole_sort() {
        // Frames of random sizes with times spilling across their edges, and a shuffled
        // batch that exhausts the insertion budget: every path equals a plain stable sort.
        // Frames read out in random order (whole sorts), and read out by coarse clock with
        // hits of one clock in random order (insertion passes; equal times included).
        let mut next = lcg(12345);
        let cases = [0i64, 300, 5_000, 1_000_000_000]
            .into_iter()
            .flat_map(|spill| [(spill, false), (spill, true)]);
        for (spill, by_clock) in cases {
            let mut b = HitBatch::default();
            let mut f = 0u64;
            while b.len() < 5000 {
                let n = next() % 40;
                let mut times: Vec<i64> = (0..n)
                    .map(|_| {
                        f as i64 * 5_120_000 + (next() % 5_120_000) as i64 - spill / 2
                            + (next() as i64 % (spill + 1))
                    })
                    .collect();
                if by_clock {
                    // Coarse clock order (5 ns), the fine part left as it came.
                    times.sort_by_key(|t| t.div_euclid(5_000));
                    if let Some(&t) = times.first() {
                        times.push(t);
                    }
                }
                for t in times {
                    b.t_ps.push(t);
                    b.channel.push(b.len() as u32);
                    b.energy_kev.push(0.0);
                    b.flags.push(0);
                    b.frame.push(f);
                    b.tcoarse.push(0);
                    b.ecoarse.push(0);
                    b.tfine.push(0);
                    b.efine.push(0);
                    b.tac.push(0);
                }
                f += 1;
            }
            let mut want: Vec<(i64, u32)> = b
                .t_ps
                .iter()
                .copied()
                .zip(b.channel.iter().copied())
                .collect();
            want.sort_by_key(|&(t, _)| t);
            b.sort_by_time();
            let got: Vec<(i64, u32)> = b
                .t_ps
                .iter()
                .copied()
                .zip(b.channel.iter().copied())
                .collect();
            assert_eq!(got, want, "spill {spill}, by clock {by_clock}");
        }
    }

    #[test]
    fn nearly_ordered_batches_sort_in_place_like_a_stable_sort() {
        let mut next = lcg(99);
        // Jittered by up to two steps (in-place path, ties included), every 10th row pulled far
        // back (few descents, but the move budget runs out midway: the keyed sort finishes),
        // and shuffled (too many descents: the keyed sort from the start).
        for case in ["jitter", "far", "shuffled"] {
            let mut b = HitBatch::default();
            for row in 0..3000u32 {
                let t = match case {
                    "jitter" => row as i64 * 100 + (next() % 250) as i64 / 50 * 50,
                    "far" if row % 10 == 9 => (next() % 1000) as i64,
                    "far" => row as i64 * 100,
                    _ => (next() % 300_000) as i64,
                };
                b.t_ps.push(t);
                b.channel.push(row);
                b.energy_kev.push(row as f32);
                b.flags.push(row as u16);
                // Raw columns present: they move with their rows.
                b.frame.push(row as u64);
                b.tcoarse.push(row as u16);
                b.ecoarse.push(row as u16);
                b.tfine.push(row as u16);
                b.efine.push(row as u16);
                b.tac.push(row as u8);
            }
            let mut want: Vec<(i64, u32)> = b.t_ps.iter().copied().zip(0..).collect();
            want.sort_by_key(|&(t, _)| t);
            let frames = b.frame.clone();
            b.sort_by_time_in_frames(&frames);
            let rows: Vec<u32> = want.iter().map(|&(_, r)| r).collect();
            assert_eq!(
                b.t_ps,
                want.iter().map(|&(t, _)| t).collect::<Vec<_>>(),
                "{case}"
            );
            assert_eq!(b.channel, rows, "{case}");
            assert_eq!(
                b.energy_kev,
                rows.iter().map(|&r| r as f32).collect::<Vec<_>>()
            );
            assert_eq!(b.flags, rows.iter().map(|&r| r as u16).collect::<Vec<_>>());
            assert_eq!(b.frame, rows.iter().map(|&r| r as u64).collect::<Vec<_>>());
            assert_eq!(b.tcoarse, b.flags);
            assert_eq!(b.ecoarse, b.flags);
            assert_eq!(b.tfine, b.flags);
            assert_eq!(b.efine, b.flags);
            assert_eq!(b.tac, rows.iter().map(|&r| r as u8).collect::<Vec<_>>());
        }
    }

    fn batch(times: &[i64]) -> HitBatch {
        HitBatch::from_times(times)
    }

    #[test]
    fn merges_of_any_interleaving_equal_a_stable_sort() {
        let mut next = lcg(5);
        // Hit by hit interleaving (merged through the row order), long runs (run by run),
        // ties, one side empty; raw columns on both sides, then on one side only.
        for (step, run, raw_b) in [(7, 1, true), (3, 1, true), (5, 200, true), (2, 1, false)] {
            let mut side = |n: u64, id0: u32, raw: bool| {
                let mut b = HitBatch::default();
                let mut t = 0i64;
                for k in 0..n as u32 {
                    if k % run == 0 {
                        t += (next() % (step * run as u64 * 2)) as i64;
                    }
                    b.t_ps.push(t);
                    b.channel.push(id0 + k);
                    b.energy_kev.push((id0 + k) as f32);
                    b.flags.push(k as u16);
                    if raw {
                        b.frame.push((id0 + k) as u64);
                        b.tcoarse.push(k as u16);
                        b.ecoarse.push(k as u16);
                        b.tfine.push(k as u16);
                        b.efine.push(k as u16);
                        b.tac.push(k as u8);
                    }
                }
                b
            };
            let a = side(3000, 0, true);
            let b = side(2000, 1_000_000, raw_b);
            for (x, y) in [(&a, &b), (&b, &a), (&a, &HitBatch::default())] {
                let m = HitBatch::merge_sorted(x, y);
                let mut want: Vec<(i64, u32)> = (x.t_ps.iter().zip(&x.channel))
                    .chain(y.t_ps.iter().zip(&y.channel))
                    .map(|(&t, &c)| (t, c))
                    .collect();
                want.sort_by_key(|&(t, _)| t);
                let got: Vec<(i64, u32)> = m.t_ps.iter().copied().zip(m.channel.clone()).collect();
                assert_eq!(got, want, "step {step}, run {run}");
                let energies: Vec<f32> = m.channel.iter().map(|&c| c as f32).collect();
                assert_eq!(m.energy_kev, energies);
                let both_raw = x.frame.len() == x.len() && y.frame.len() == y.len();
                if both_raw {
                    let frames: Vec<u64> = m.channel.iter().map(|&c| c as u64).collect();
                    assert_eq!(m.frame, frames, "step {step}, run {run}");
                    assert_eq!(m.tac.len(), m.len());
                }
            }
        }
    }

    #[test]
    fn merge_is_ordered_and_stable() {
        let a = batch(&[1, 3, 3, 9]);
        let b = batch(&[0, 3, 4, 10, 11]);
        let m = HitBatch::merge_sorted(&a, &b);
        assert_eq!(m.t_ps, vec![0, 1, 3, 3, 3, 4, 9, 10, 11]);
        // Ties: a's rows (channel 1, 2) before b's row (channel 1 of b).
        assert_eq!(&m.channel[2..5], &[1, 2, 1]);
        assert_eq!(&m.energy_kev[2..5], &[1.0, 2.0, 1.0]);
    }

    #[test]
    fn retain_from_keeps_prefix_and_order() {
        let mut b = batch(&[1, 2, 3, 4, 5]);
        b.retain_from(1, |i| i % 2 == 1);
        assert_eq!(b.t_ps, vec![1, 3, 5]);
        assert_eq!(b.channel, vec![0, 2, 4]);
    }

    #[test]
    fn sort_and_take_before() {
        let mut b = batch(&[5, 1, 4, 1]);
        b.sort_by_time();
        assert_eq!(b.t_ps, vec![1, 1, 4, 5]);
        assert_eq!(b.channel, vec![1, 3, 2, 0]);
        let head = b.take_before(4);
        assert_eq!(head.t_ps, vec![1, 1]);
        assert_eq!(b.t_ps, vec![4, 5]);
    }

    #[test]
    fn sort_by_time_equals_a_stable_sort_for_packed_and_wide_spans() {
        let mut x = 7u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Narrow spans (packed keys, many ties), a span just over 2^40 ps, and the extremes.
        let spans: [i64; 4] = [50, 1 << 30, (1 << 40) + 3, i64::MAX];
        for span in spans {
            let times: Vec<i64> = (0..5000)
                .map(|_| {
                    let t = (next() % span.unsigned_abs()) as i64;
                    if span == i64::MAX {
                        t.wrapping_mul(2)
                    } else {
                        t - span / 3
                    }
                })
                .collect();
            let mut b = batch(&times);
            b.sort_by_time();
            let mut want: Vec<(i64, u32)> = times
                .iter()
                .enumerate()
                .map(|(i, &t)| (t, i as u32))
                .collect();
            want.sort_by_key(|&(t, _)| t); // stable: ties keep row order
            assert_eq!(
                b.t_ps,
                want.iter().map(|w| w.0).collect::<Vec<_>>(),
                "span {span}"
            );
            assert_eq!(
                b.channel,
                want.iter().map(|w| w.1).collect::<Vec<_>>(),
                "span {span}"
            );
        }
    }
}
