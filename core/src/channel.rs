//! PETsys absolute channel identifiers: `portID << 17 | slaveID << 12 | chipID << 6 | channel`.

use serde::{Deserialize, Serialize};

/// A 22-bit PETsys absolute channel id, as carried in TOFPET2 hit words and used as the
/// `channel` column of every scandaq table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChannelId(pub u32);

impl ChannelId {
    /// Largest valid id (22 bits).
    pub const MAX: u32 = (1 << 22) - 1;

    /// Builds an id from its parts; returns `None` when a part is out of range
    /// (port < 32, slave < 32, chip < 64, channel < 64).
    pub fn from_parts(port: u32, slave: u32, chip: u32, channel: u32) -> Option<Self> {
        if port >= 32 || slave >= 32 || chip >= 64 || channel >= 64 {
            return None;
        }
        Some(Self(port << 17 | slave << 12 | chip << 6 | channel))
    }

    /// `(portID, slaveID, chipID, channelID)`.
    pub fn parts(self) -> (u32, u32, u32, u32) {
        let v = self.0;
        (
            (v >> 17) & 0x1f,
            (v >> 12) & 0x1f,
            (v >> 6) & 0x3f,
            v & 0x3f,
        )
    }
}

impl std::fmt::Display for ChannelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (p, s, c, ch) = self.parts();
        write!(f, "{} (port {p} slave {s} chip {c} channel {ch})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_and_reject_out_of_range() {
        let id = ChannelId::from_parts(3, 7, 41, 63).unwrap();
        assert_eq!(id.parts(), (3, 7, 41, 63));
        assert!(id.0 <= ChannelId::MAX);
        assert!(ChannelId::from_parts(32, 0, 0, 0).is_none());
        assert!(ChannelId::from_parts(0, 0, 64, 0).is_none());
    }

    /// docs/formats.md: `port << 17 | slave << 12 | chip << 6 | channel`, 22 bits.
    #[test]
    fn the_largest_id_and_a_literal_one_match_the_documented_layout() {
        assert_eq!(ChannelId::MAX, 4_194_303);
        assert_eq!(
            ChannelId::from_parts(31, 31, 63, 63),
            Some(ChannelId(ChannelId::MAX))
        );
        // 2 << 17 | 5 << 12 | 9 << 6 | 33 = 262144 + 20480 + 576 + 33.
        assert_eq!(ChannelId::from_parts(2, 5, 9, 33), Some(ChannelId(283_233)));
        assert_eq!(
            ChannelId(283_233).to_string(),
            "283233 (port 2 slave 5 chip 9 channel 33)"
        );
    }
}
