//! Time-order restoration with a watermark: calibrated blocks arrive in stream order, each
//! sorted, but calibration (TAC offsets, skews) can move a hit slightly before hits of the
//! previous block. The merger holds back a window of `lateness_ps` and releases everything
//! older; a hit that still arrives behind the released time is counted as `late_hit`.

use scandaq_core::HitBatch;
use std::collections::VecDeque;

/// Watermark merger of sorted batches.
#[derive(Debug)]
pub struct TimeMerger {
    pending: HitBatch,
    released_up_to: i64,
    lateness_ps: i64,
    late_hits: u64,
}

impl TimeMerger {
    /// New merger holding back `lateness_ps` of data.
    pub fn new(lateness_ps: i64) -> Self {
        Self {
            pending: HitBatch::default(),
            released_up_to: i64::MIN,
            lateness_ps,
            late_hits: 0,
        }
    }

    /// Hits dropped because they arrived behind the released time.
    pub fn late_hits(&self) -> u64 {
        self.late_hits
    }

    /// Adds a time-ordered batch; returns the hits that are now final (time ordered, all
    /// before every hit still pending), possibly empty.
    pub fn push(&mut self, batch: HitBatch) -> HitBatch {
        let mut parts = Vec::new();
        self.push_into(batch, &mut parts);
        let mut out = HitBatch::default();
        for p in parts {
            if out.is_empty() {
                out = p;
            } else {
                out.extend_from_range(&p, 0..p.len());
            }
        }
        out
    }

    /// [`TimeMerger::push`], appending the final hits to `ready` as up to two non-empty
    /// batches (in time order, each time ordered). When everything pending precedes the new batch (the
    /// usual case: blocks arrive in stream order), the batch's columns are handed on as they
    /// are and only the held-back rest is copied; otherwise the two are merged.
    pub fn push_into(&mut self, mut batch: HitBatch, ready: &mut Vec<HitBatch>) {
        debug_assert!(batch.is_time_ordered());
        let late = batch.t_ps.partition_point(|&t| t < self.released_up_to);
        if late > 0 {
            self.late_hits += late as u64;
            let _ = batch.take_before(self.released_up_to);
        }
        let (Some(&first), Some(&last)) = (batch.t_ps.first(), batch.t_ps.last()) else {
            return;
        };
        let newest = self.pending.t_ps.last().map_or(last, |&p| p.max(last));
        let watermark = newest.saturating_sub(self.lateness_ps);
        let in_order = self.pending.t_ps.last().is_none_or(|&p| p <= first);
        if watermark <= self.released_up_to || !in_order {
            self.pending = if self.pending.is_empty() {
                batch
            } else {
                HitBatch::merge_sorted(&self.pending, &batch)
            };
            if watermark > self.released_up_to {
                self.released_up_to = watermark;
                let out = self.pending.take_before(watermark);
                if !out.is_empty() {
                    ready.push(out);
                }
            }
            return;
        }
        self.released_up_to = watermark;
        // Pending rows all precede the batch (ties: pending first, as merge_sorted puts them).
        let head = self.pending.take_before(watermark);
        if !head.is_empty() {
            ready.push(head);
        }
        if self.pending.is_empty() {
            let out = batch.take_before(watermark);
            self.pending = batch;
            if !out.is_empty() {
                ready.push(out);
            }
        } else {
            // Some pending rows are at or after the watermark, so every batch row is too.
            self.pending.extend_from_range(&batch, 0..batch.len());
        }
    }

    /// Releases everything still pending (end of stream).
    pub fn finish(&mut self) -> HitBatch {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `push_into` (and `push`) against the merger's rule written plainly on rows: drop what
    /// is behind the released time, stable-merge the rest behind the pending rows, release
    /// every row more than `lateness` before the newest. Random sorted batches that overlap
    /// the pending rows, follow them, or arrive late; physics-only batches too.
    #[test]
    fn push_into_releases_what_the_plain_rule_releases() {
        let mut rng = 11u64;
        let mut next = |m: u64| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) % m
        };
        for case in 0..200 {
            let lateness = 1 + next(50) as i64;
            let (mut m, mut plain) = (TimeMerger::new(lateness), TimeMerger::new(lateness));
            let (mut pending, mut released, mut late) = (Vec::<(i64, u32)>::new(), i64::MIN, 0);
            let (mut want, mut got, mut got_plain) = (Vec::new(), Vec::new(), Vec::new());
            let (mut t0, mut id) = (0i64, 0u32);
            for _ in 0..30 {
                t0 += next(60) as i64 - 20;
                let n = next(12) as usize;
                let mut times: Vec<i64> = (0..n).map(|_| t0 + next(40) as i64).collect();
                times.sort();
                let mut b = HitBatch::from_times(&times);
                for c in &mut b.channel {
                    *c = id;
                    id += 1;
                }
                // The rule on rows.
                let rows: Vec<(i64, u32)> = times.iter().copied().zip(b.channel.clone()).collect();
                late += rows.iter().filter(|r| r.0 < released).count() as u64;
                pending.extend(rows.into_iter().filter(|r| r.0 >= released));
                pending.sort_by_key(|r| r.0);
                if let Some(&(newest, _)) = pending.last() {
                    let w = newest.saturating_sub(lateness);
                    if w > released {
                        released = w;
                        let k = pending.partition_point(|r| r.0 < w);
                        want.extend(pending.drain(..k));
                    }
                }
                let mut ready = Vec::new();
                let physics = HitBatch {
                    t_ps: b.t_ps.clone(),
                    channel: b.channel.clone(),
                    energy_kev: b.energy_kev.clone(),
                    flags: b.flags.clone(),
                    ..HitBatch::default()
                };
                if case % 2 == 0 {
                    m.push_into(b, &mut ready);
                } else {
                    m.push_into(physics.clone(), &mut ready);
                }
                for r in ready {
                    assert!(r.is_time_ordered() && !r.is_empty());
                    got.extend(r.t_ps.iter().copied().zip(r.channel.iter().copied()));
                }
                let r = plain.push(physics);
                got_plain.extend(r.t_ps.iter().copied().zip(r.channel.iter().copied()));
            }
            want.extend(pending);
            let rest = m.finish();
            got.extend(rest.t_ps.iter().copied().zip(rest.channel.iter().copied()));
            let rest = plain.finish();
            got_plain.extend(rest.t_ps.iter().copied().zip(rest.channel.iter().copied()));
            assert_eq!(got, want, "case {case}");
            assert_eq!(got_plain, want, "case {case}");
            assert_eq!(
                (m.late_hits(), plain.late_hits()),
                (late, late),
                "case {case}"
            );
        }
    }

    fn batch(times: &[i64]) -> HitBatch {
        HitBatch::from_times(times)
    }

    #[test]
    fn restores_order_within_lateness_and_counts_late_hits() {
        let mut m = TimeMerger::new(10);
        let mut out = Vec::new();
        out.extend(m.push(batch(&[0, 5, 20, 30])).t_ps); // releases < 20
        out.extend(m.push(batch(&[18, 25, 40])).t_ps); // 18 < 20 released: late; releases < 30
        out.extend(m.push(batch(&[31, 50])).t_ps); // 31 is within the held-back window
        out.extend(m.finish().t_ps);
        assert_eq!(out, vec![0, 5, 20, 25, 30, 31, 40, 50]);
        assert_eq!(m.late_hits(), 1);
    }
}

/// K-way time merge of several time-ordered streams (one per front-end board) with a
/// watermark: hits are released once every active stream has moved past them, and never within
/// `hold_ps` of the newest hit (so a board whose first data arrives a little after the others'
/// is not late). A stream that falls more than `max_skew_ps` behind the most advanced one no
/// longer holds the others back (memory stays bounded); its hits that arrive behind the
/// released time are counted as late.
#[derive(Debug)]
pub struct KWayMerger {
    streams: std::collections::BTreeMap<u32, StreamQueue>,
    released_up_to: i64,
    max_skew_ps: i64,
    hold_ps: i64,
    late_hits: u64,
}

/// One stream's pending hits: sorted runs, each run's hits at or after every hit of the run
/// before it. A batch that overlaps the newest run is merged with it (and with older runs
/// only while they overlap), so a push costs O(batch + overlapping run), never O(pending),
/// however far a lagging board holds the watermark back.
#[derive(Debug, Default)]
struct StreamQueue {
    runs: VecDeque<HitBatch>,
    newest: i64,
    ended: bool,
}

impl StreamQueue {
    fn push(&mut self, mut batch: HitBatch) {
        while let (Some(&last), Some(&first)) = (
            self.runs.back().and_then(|r| r.t_ps.last()),
            batch.t_ps.first(),
        ) {
            if last <= first {
                break;
            }
            let Some(run) = self.runs.pop_back() else {
                break;
            };
            batch = HitBatch::merge_sorted(&run, &batch);
        }
        self.runs.push_back(batch);
    }

    /// Removes and returns every pending hit before `watermark`, in time order.
    fn take_before(&mut self, watermark: i64) -> HitBatch {
        let mut out = HitBatch::default();
        while let Some(front) = self.runs.front_mut() {
            let whole = front.t_ps.last().is_some_and(|&t| t < watermark);
            let part = if whole {
                self.runs.pop_front().unwrap_or_default()
            } else {
                front.take_before(watermark)
            };
            if out.is_empty() {
                out = part;
            } else {
                out.extend_from_range(&part, 0..part.len());
            }
            if !whole {
                break;
            }
        }
        out
    }
}

impl KWayMerger {
    /// New merger.
    pub fn new(max_skew_ps: i64, hold_ps: i64) -> Self {
        Self {
            streams: Default::default(),
            released_up_to: i64::MIN,
            max_skew_ps,
            hold_ps,
            late_hits: 0,
        }
    }

    /// Hits dropped because their stream was behind the released time.
    pub fn late_hits(&self) -> u64 {
        self.late_hits
    }

    /// Hits waiting for the watermark, over all streams.
    pub fn pending_hits(&self) -> usize {
        self.streams
            .values()
            .flat_map(|q| q.runs.iter())
            .map(HitBatch::len)
            .sum()
    }

    /// Adds a time-ordered batch of stream `id`.
    pub fn push(&mut self, id: u32, mut batch: HitBatch) {
        let late = batch.t_ps.partition_point(|&t| t < self.released_up_to);
        if late > 0 {
            self.late_hits += late as u64;
            let _ = batch.take_before(self.released_up_to);
        }
        let q = self.streams.entry(id).or_insert_with(|| StreamQueue {
            newest: i64::MIN,
            ..Default::default()
        });
        if let Some(&last) = batch.t_ps.last() {
            q.newest = q.newest.max(last);
            q.push(batch);
        }
    }

    /// Marks stream `id` as finished (it no longer holds the watermark back).
    pub fn end(&mut self, id: u32) {
        self.streams.entry(id).or_default().ended = true;
    }

    /// Releases every hit before the current watermark, merged in time order.
    pub fn release(&mut self) -> HitBatch {
        self.release_below(i64::MAX)
    }

    /// Releases every hit before the current watermark and before `limit`, merged in time
    /// order: `limit` is a time some input not yet seen as a stream may still send from (a raw
    /// archive whose boards have not all appeared), which neither the hold nor the skew rule
    /// may release past.
    pub fn release_below(&mut self, limit: i64) -> HitBatch {
        let newest_max = self
            .streams
            .values()
            .map(|q| q.newest)
            .max()
            .unwrap_or(i64::MIN);
        let active_min = self
            .streams
            .values()
            .filter(|q| !q.ended)
            .map(|q| q.newest)
            .min();
        let watermark = match active_min {
            Some(m) => m
                .max(newest_max.saturating_sub(self.max_skew_ps))
                .min(newest_max.saturating_sub(self.hold_ps)),
            None => newest_max.saturating_add(1),
        };
        self.take_before(watermark.min(limit))
    }

    /// Releases everything (end of run).
    pub fn finish(&mut self) -> HitBatch {
        self.take_before(i64::MAX)
    }

    fn take_before(&mut self, watermark: i64) -> HitBatch {
        if watermark <= self.released_up_to {
            return HitBatch::default();
        }
        let mut out = HitBatch::default();
        for q in self.streams.values_mut() {
            let part = q.take_before(watermark);
            if !part.is_empty() {
                out = if out.is_empty() {
                    part
                } else {
                    HitBatch::merge_sorted(&out, &part)
                };
            }
        }
        self.released_up_to = watermark;
        out
    }
}

#[cfg(test)]
mod kway_tests {
    use super::*;

    fn batch(times: &[i64]) -> HitBatch {
        HitBatch::from_times(times)
    }

    #[test]
    fn merges_streams_in_time_order_with_watermark() {
        let mut m = KWayMerger::new(1_000, 0);
        let mut out = Vec::new();
        m.push(0, batch(&[1, 4, 9]));
        out.extend(m.release().t_ps); // stream 0 alone: releases < 9
        m.push(1, batch(&[2, 3, 10]));
        out.extend(m.release().t_ps); // 2, 3 are late (released up to 9)
        m.push(0, batch(&[12]));
        out.extend(m.release().t_ps);
        m.end(0);
        m.end(1);
        out.extend(m.finish().t_ps);
        assert_eq!(out, vec![1, 4, 9, 10, 12]);
        assert_eq!(m.late_hits(), 2);
    }

    #[test]
    fn hold_keeps_room_for_a_board_that_starts_late() {
        let mut m = KWayMerger::new(1_000_000, 50);
        m.push(0, batch(&[10, 20, 100]));
        assert_eq!(m.release().t_ps, vec![10, 20]); // held back: >= 100 - 50
        m.push(1, batch(&[60, 70])); // within the hold of the newest hit (100): not late
        assert_eq!(m.release().t_ps, Vec::<i64>::new()); // watermark still capped at 50
        m.push(1, batch(&[120]));
        assert_eq!(m.release().t_ps, vec![60]); // min(active) = 100, capped at 120 - 50 = 70
        assert_eq!(m.late_hits(), 0);
    }

    #[test]
    fn overlapping_batches_merge_into_runs_and_release_in_order() {
        let mut m = KWayMerger::new(1_000_000, 0);
        // Stream 0 sends overlapping batches (calibration moves hits across block edges);
        // stream 1 lags, holding the watermark back so runs accumulate.
        m.push(0, batch(&[10, 20, 30]));
        m.push(0, batch(&[25, 40, 50]));
        m.push(0, batch(&[60, 70]));
        m.push(0, batch(&[5, 65, 80]));
        m.push(1, batch(&[1]));
        assert_eq!(m.pending_hits(), 12);
        let mut out = m.release().t_ps; // watermark = newest of stream 1 = 1
        assert!(out.is_empty());
        m.push(1, batch(&[45]));
        out.extend(m.release().t_ps); // < 45
        assert_eq!(out, vec![1, 5, 10, 20, 25, 30, 40]);
        m.end(1);
        m.end(0);
        out.extend(m.finish().t_ps);
        assert_eq!(out, vec![1, 5, 10, 20, 25, 30, 40, 45, 50, 60, 65, 70, 80]);
        assert_eq!(m.pending_hits(), 0);
        assert_eq!(m.late_hits(), 0);
    }

    #[test]
    fn a_lagging_stream_does_not_hold_memory() {
        let mut m = KWayMerger::new(100, 0);
        m.push(0, batch(&[0]));
        m.push(1, batch(&[1_000]));
        let out = m.release(); // watermark = max(0, 1000-100) = 900
        assert_eq!(out.t_ps, vec![0]);
    }
}
