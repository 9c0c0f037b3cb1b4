//! The live statistics model: lock-free counters and histograms that the acquisition updates
//! once per batch and anything else (the stderr stats line, the dashboard, a control socket)
//! reads as a consistent-enough [`StatsSnapshot`] at ~10 Hz, without ever blocking the
//! acquisition.

use scandaq_core::HitBatch;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Energy histogram bins (1 keV, or 1 ns of ToT).
pub const ENERGY_BINS: usize = 2048;
/// Channel ids below this get their own rate counter; others share `other_channel_hits`.
pub const TRACKED_CHANNELS: usize = 1 << 16;

/// Shared, lock-free statistics of one acquisition.
pub struct LiveStats {
    started: Instant,
    /// Singles handed to the sink.
    pub singles: AtomicU64,
    /// Frame bytes taken off the input rings.
    pub frame_bytes: AtomicU64,
    /// Chunks waiting in the input rings (gauge).
    pub ring_fill: AtomicU64,
    /// Boards seen.
    pub boards: AtomicU64,
    energy: Box<[AtomicU64]>,
    channels: Box<[AtomicU64]>,
    other_channel_hits: AtomicU64,
}

/// A copy of the statistics at one instant.
#[derive(Clone, Debug, Serialize)]
pub struct StatsSnapshot {
    /// Seconds since the acquisition started.
    pub elapsed_s: f64,
    /// Singles handed to the sink.
    pub singles: u64,
    /// Frame bytes taken off the input rings.
    pub frame_bytes: u64,
    /// Chunks waiting in the input rings.
    pub ring_fill: u64,
    /// Boards seen.
    pub boards: u64,
    /// Energy histogram (1 keV or 1 ns bins from 0).
    pub energy_bins: Vec<u64>,
    /// `(channel, hits)` for every channel with hits.
    pub channel_hits: Vec<(u32, u64)>,
    /// Hits on channel ids above the tracked range.
    pub other_channel_hits: u64,
}

impl Default for LiveStats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            singles: AtomicU64::new(0),
            frame_bytes: AtomicU64::new(0),
            ring_fill: AtomicU64::new(0),
            boards: AtomicU64::new(0),
            energy: (0..ENERGY_BINS).map(|_| AtomicU64::new(0)).collect(),
            channels: (0..TRACKED_CHANNELS).map(|_| AtomicU64::new(0)).collect(),
            other_channel_hits: AtomicU64::new(0),
        }
    }
}

impl LiveStats {
    /// Accounts for a batch of singles on its way to the sink: histogrammed locally first,
    /// then one atomic add per touched bin (not per hit).
    pub fn record_singles(&self, batch: &HitBatch) {
        self.singles
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut energy = vec![0u32; ENERGY_BINS];
        for &e in &batch.energy_kev {
            if e >= 0.0 && e < ENERGY_BINS as f32 {
                energy[e as usize] += 1;
            }
        }
        for (bin, &n) in self.energy.iter().zip(&energy) {
            if n > 0 {
                bin.fetch_add(u64::from(n), Ordering::Relaxed);
            }
        }
        let mut sorted = batch.channel.clone();
        sorted.sort_unstable();
        for run in sorted.chunk_by(|a, b| a == b) {
            let n = run.len() as u64;
            match self.channels.get(run[0] as usize) {
                Some(c) => c.fetch_add(n, Ordering::Relaxed),
                None => self.other_channel_hits.fetch_add(n, Ordering::Relaxed),
            };
        }
    }

    /// Copies every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            elapsed_s: self.started.elapsed().as_secs_f64(),
            singles: self.singles.load(Ordering::Relaxed),
            frame_bytes: self.frame_bytes.load(Ordering::Relaxed),
            ring_fill: self.ring_fill.load(Ordering::Relaxed),
            boards: self.boards.load(Ordering::Relaxed),
            energy_bins: self
                .energy
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            channel_hits: self
                .channels
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let n = c.load(Ordering::Relaxed);
                    (n > 0).then_some((i as u32, n))
                })
                .collect(),
            other_channel_hits: self.other_channel_hits.load(Ordering::Relaxed),
        }
    }
}

impl StatsSnapshot {
    /// Singles per second between `earlier` and this snapshot.
    pub fn singles_rate_since(&self, earlier: &StatsSnapshot) -> f64 {
        let dt = self.elapsed_s - earlier.elapsed_s;
        if dt <= 0.0 {
            0.0
        } else {
            (self.singles - earlier.singles) as f64 / dt
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fill_counters_and_histograms() {
        let stats = LiveStats::default();
        let mut b = HitBatch::from_times(&[1, 2, 3, 4]);
        b.channel = vec![5, 5, 70_000, 9];
        b.energy_kev = vec![511.2, 511.9, 3000.0, -1.0];
        stats.record_singles(&b);
        let s = stats.snapshot();
        assert_eq!(s.singles, 4);
        assert_eq!(s.energy_bins[511], 2);
        assert_eq!(s.energy_bins.iter().sum::<u64>(), 2);
        assert_eq!(s.channel_hits, vec![(5, 2), (9, 1)]);
        assert_eq!(s.other_channel_hits, 1);
        let later = stats.snapshot();
        assert_eq!(later.singles_rate_since(&s), 0.0);
    }
}
