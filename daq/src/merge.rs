//! Time-order restoration with a watermark: calibrated blocks arrive in stream order, each
//! sorted, but calibration (TAC offsets, skews) can move a hit slightly before hits of the
//! previous block. The merger holds back a window of `lateness_ps` and releases everything
//! older; a hit that still arrives behind the released time is counted as `late_hit`.

use scandaq_core::HitBatch;

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
    pub fn push(&mut self, mut batch: HitBatch) -> HitBatch {
        debug_assert!(batch.is_time_ordered());
        let late = batch.t_ps.partition_point(|&t| t < self.released_up_to);
        if late > 0 {
            self.late_hits += late as u64;
            let _ = batch.take_before(self.released_up_to);
        }
        if batch.is_empty() {
            return HitBatch::default();
        }
        self.pending = if self.pending.is_empty() {
            batch
        } else {
            HitBatch::merge_sorted(&self.pending, &batch)
        };
        let newest = *self.pending.t_ps.last().unwrap_or(&i64::MIN);
        let watermark = newest.saturating_sub(self.lateness_ps);
        if watermark <= self.released_up_to {
            return HitBatch::default();
        }
        self.released_up_to = watermark;
        self.pending.take_before(watermark)
    }

    /// Releases everything still pending (end of stream).
    pub fn finish(&mut self) -> HitBatch {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(times: &[i64]) -> HitBatch {
        let mut b = HitBatch::default();
        for &t in times {
            b.t_ps.push(t);
            b.channel.push(0);
            b.energy_kev.push(0.0);
            b.flags.push(0);
            b.frame.push(0);
            b.tcoarse.push(0);
            b.ecoarse.push(0);
            b.tfine.push(0);
            b.efine.push(0);
            b.tac.push(0);
        }
        b
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
