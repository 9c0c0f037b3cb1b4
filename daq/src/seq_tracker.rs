//! Per-source sequence accounting of transport packets (docs/formats.md §1): gaps (lost
//! packets), duplicates and out-of-order arrivals, exactly, within a bounded window.

use std::collections::BTreeSet;

/// Packets further back than this behind the newest are no longer waited for: a gap that old is
/// final, and a packet that old is counted as `too_late` (dropped, not reordered).
pub const REORDER_WINDOW: u64 = 1 << 16;

/// What to do with an arriving packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqVerdict {
    /// The next packet, or one after a gap: use it.
    InOrder,
    /// A packet that fills an earlier gap: use it (counted as out of order).
    Late,
    /// Seen before: drop it (counted as duplicate).
    Duplicate,
    /// Older than the reorder window: drop it (counted as too_late).
    TooLate,
}

/// Sequence state of one source.
#[derive(Clone, Debug, Default)]
pub struct SeqTracker {
    first: Option<u64>,
    highest: u64,
    missing: BTreeSet<u64>,
    /// Packets accepted.
    pub received: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Late packets that filled a gap.
    pub out_of_order: u64,
    /// Packets older than the window.
    pub too_late: u64,
    /// Missing packets given up on (older than the window).
    pub lost_final: u64,
}

impl SeqTracker {
    /// Accounts for a packet with sequence number `seq`.
    pub fn observe(&mut self, seq: u64) -> SeqVerdict {
        let Some(_) = self.first else {
            self.first = Some(seq);
            self.highest = seq;
            self.received += 1;
            return SeqVerdict::InOrder;
        };
        if seq > self.highest {
            for missing in self.highest + 1..seq {
                if seq - missing > REORDER_WINDOW {
                    self.lost_final += 1;
                } else {
                    self.missing.insert(missing);
                }
            }
            self.highest = seq;
            while let Some(&oldest) = self.missing.first() {
                if self.highest - oldest > REORDER_WINDOW {
                    self.missing.pop_first();
                    self.lost_final += 1;
                } else {
                    break;
                }
            }
            self.received += 1;
            SeqVerdict::InOrder
        } else if self.missing.remove(&seq) {
            self.received += 1;
            self.out_of_order += 1;
            SeqVerdict::Late
        } else if self.highest - seq > REORDER_WINDOW || Some(seq) < self.first {
            self.too_late += 1;
            SeqVerdict::TooLate
        } else {
            self.duplicates += 1;
            SeqVerdict::Duplicate
        }
    }

    /// `last - first + 1`.
    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.highest - f + 1)
    }

    /// Packets never received (gaps), final and still open.
    pub fn missing(&self) -> u64 {
        self.lost_final + self.missing.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_duplicates_and_reorders_are_exact() {
        let mut t = SeqTracker::default();
        let seqs = [0, 1, 3, 2, 2, 5, 6, 6, 9];
        let v: Vec<SeqVerdict> = seqs.iter().map(|&s| t.observe(s)).collect();
        assert_eq!(v[3], SeqVerdict::Late);
        assert_eq!(v[4], SeqVerdict::Duplicate);
        assert_eq!(t.expected(), 10);
        assert_eq!(t.received, 7);
        assert_eq!(t.duplicates, 2);
        assert_eq!(t.out_of_order, 1);
        assert_eq!(t.missing(), 3); // 4, 7, 8
        assert_eq!(t.received + t.missing(), t.expected());
    }
}
