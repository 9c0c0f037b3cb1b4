//! When a live run's losses happened: samples the statistics snapshot a few times a second and
//! keeps, per place and reason, the run time at which each loss counter was first and last
//! seen growing (the manifest's `loss_times`, shown by `scandaq report`).

use scandaq_core::snapshot::StatsSnapshot;
use scandaq_sinks::LossTime;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often the snapshot is sampled: the resolution of the recorded times.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// First and last growth of every loss counter seen so far.
#[derive(Debug, Default)]
pub struct LossTimeline {
    /// (place, reason) -> (count at the last sample, first seen s, last growth s).
    counters: BTreeMap<(String, String), (u64, f64, f64)>,
    last_sample: Option<Instant>,
}

impl LossTimeline {
    /// Samples `snapshot` when [`SAMPLE_EVERY`] has passed since the last sample.
    pub fn sample_if_due(&mut self, snapshot: impl FnOnce() -> StatsSnapshot) {
        if self.last_sample.is_some_and(|t| t.elapsed() < SAMPLE_EVERY) {
            return;
        }
        self.last_sample = Some(Instant::now());
        self.sample(&snapshot());
    }

    /// Records every loss counter of `snapshot` that grew since the previous sample, at the
    /// snapshot's run time.
    pub fn sample(&mut self, snapshot: &StatsSnapshot) {
        let now_s = snapshot.elapsed_s;
        for (key, count) in scandaq_tui::app::all_losses(snapshot) {
            if count == 0 {
                continue;
            }
            let entry = self.counters.entry(key).or_insert((0, now_s, now_s));
            if count > entry.0 {
                entry.0 = count;
                entry.2 = now_s;
            }
        }
    }

    /// The recorded times, in (place, reason) order.
    pub fn records(&self) -> Vec<LossTime> {
        self.counters
            .iter()
            .map(|((place, reason), &(count, first_s, last_s))| LossTime {
                place: place.clone(),
                reason: reason.clone(),
                first_s,
                last_s,
                count,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scandaq_core::snapshot::InputSnapshot;

    fn snapshot_at(elapsed_s: f64, ring_dropped_packets: u64) -> StatsSnapshot {
        StatsSnapshot {
            elapsed_s,
            inputs: vec![InputSnapshot {
                label: "udp:5000".into(),
                ring_dropped_packets,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn records_the_first_and_last_growth_of_each_counter() {
        let mut t = LossTimeline::default();
        t.sample(&snapshot_at(1.0, 0));
        t.sample(&snapshot_at(2.0, 5));
        t.sample(&snapshot_at(3.0, 9));
        t.sample(&snapshot_at(4.0, 9));
        let r = t.records();
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            (r[0].place.as_str(), r[0].reason.as_str()),
            ("udp:5000", "ring_overflow_packets")
        );
        assert_eq!((r[0].first_s, r[0].last_s, r[0].count), (2.0, 3.0, 9));
    }
}
