//! Named counters: what was processed and, for everything not written, why.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counts by reason. Every hit, frame or byte that does not reach the output is added here
/// under a stable snake_case name (the same names appear in manifests and on the console).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LossCounts(pub BTreeMap<String, u64>);

/// Counters that ride with the losses from the frame scanner but lose nothing: a frame whose
/// ID was restored from its neighbours. The manifest moves them to `counts`; loss totals
/// leave them out.
pub const REPAIRS: [&str; 1] = ["repaired_frame_id"];

impl LossCounts {
    /// Takes the [`REPAIRS`] counters out of the losses.
    pub fn take_repairs(&mut self) -> BTreeMap<String, u64> {
        REPAIRS
            .iter()
            .filter_map(|r| self.0.remove(*r).map(|n| (r.to_string(), n)))
            .collect()
    }

    /// Sum of every count except the [`REPAIRS`].
    pub fn total_lost(&self) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| !REPAIRS.contains(&k.as_str()))
            .map(|(_, v)| v)
            .sum()
    }

    /// Adds `n` under `reason` (no entry is created for zero).
    pub fn add(&mut self, reason: &str, n: u64) {
        if n == 0 {
            return;
        }
        *self.0.entry(reason.to_string()).or_insert(0) += n;
    }

    /// Count under `reason` (0 if absent).
    pub fn get(&self, reason: &str) -> u64 {
        self.0.get(reason).copied().unwrap_or(0)
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &LossCounts) {
        for (k, v) in &other.0 {
            self.add(k, *v);
        }
    }

    /// Sum over the reasons whose name is in `reasons`.
    pub fn sum_of(&self, reasons: &[&str]) -> u64 {
        reasons.iter().map(|r| self.get(r)).sum()
    }

    /// `reason count, reason count, ...`, or `none`.
    pub fn summary(&self) -> String {
        if self.0.is_empty() {
            return "none".to_string();
        }
        self.0
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_merge_and_sum() {
        let mut a = LossCounts::default();
        a.add("no_tdc_calibration", 3);
        a.add("late_hit", 0);
        let mut b = LossCounts::default();
        b.add("no_tdc_calibration", 2);
        b.add("late_hit", 1);
        a.merge(&b);
        assert_eq!(a.get("no_tdc_calibration"), 5);
        assert_eq!(a.sum_of(&["no_tdc_calibration", "late_hit", "absent"]), 6);
    }
}
