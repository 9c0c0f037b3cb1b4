//! Fault injection per data packet, drawn from a seeded random stream: [`Faults`] says how
//! likely each fault is, [`FaultCounts`] counts what happened, and [`FaultDraw`] makes the one
//! draw per data packet that decides its [`Fate`].

use crate::config::SimError;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Fault injection: probabilities per data packet (each in [0, 1), sum below 1), and the TCP
/// disconnect.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Packets never sent.
    pub lose_packets: f64,
    /// Packets sent twice.
    pub duplicate: f64,
    /// Packets sent after the following packet.
    pub reorder: f64,
    /// Packets with a payload byte flipped after the CRC.
    pub corrupt: f64,
    /// TCP only: cut the connection once, after this many packets on it.
    pub disconnect_after: Option<u64>,
    /// Restart every board once, this many seconds of detector time into the run: sequence
    /// numbers and frame counter from 0 again, start-of-stream flag on the first packet.
    #[serde(default)]
    pub restart_at_s: Option<f64>,
}

impl Faults {
    /// Packet loss only, with probability `p` per data packet.
    pub fn loss(p: f64) -> Self {
        Self {
            lose_packets: p,
            ..Self::default()
        }
    }

    /// Checks that each probability is in [0, 1) and that they add up to less than 1.
    pub fn validate(&self) -> Result<(), SimError> {
        for (name, p) in [
            ("lose_packets", self.lose_packets),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("corrupt", self.corrupt),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(SimError::config(
                    name,
                    p,
                    "must be a probability per packet in [0, 1)",
                ));
            }
        }
        if let Some(t) = self.restart_at_s
            && !(t.is_finite() && t >= 0.0)
        {
            return Err(SimError::config(
                "restart_at_s",
                t,
                "must be a time in seconds of detector time, >= 0",
            ));
        }
        let sum = self.lose_packets + self.duplicate + self.reorder + self.corrupt;
        if sum >= 1.0 {
            return Err(SimError::config(
                "faults",
                sum,
                "the fault probabilities must add up to less than 1",
            ));
        }
        Ok(())
    }
}

/// What each fault affected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Packets not sent.
    pub lost_packets: u64,
    /// Hits in them.
    pub lost_hits: u64,
    /// Packets sent twice.
    pub duplicated_packets: u64,
    /// Packets sent late.
    pub reordered_packets: u64,
    /// Packets corrupted (a receiver rejects them by CRC).
    pub corrupted_packets: u64,
    /// Hits in them.
    pub corrupted_hits: u64,
    /// TCP disconnects injected.
    pub disconnects: u64,
    /// Packets cut by a disconnect.
    pub disconnect_lost_packets: u64,
    /// Hits in them.
    pub disconnect_lost_hits: u64,
    /// Board restarts (sequence and frame counter from 0 again).
    #[serde(default)]
    pub restarts: u64,
}

impl FaultCounts {
    /// Adds `o` to these counts.
    pub fn add(&mut self, o: &FaultCounts) {
        self.lost_packets += o.lost_packets;
        self.lost_hits += o.lost_hits;
        self.duplicated_packets += o.duplicated_packets;
        self.reordered_packets += o.reordered_packets;
        self.corrupted_packets += o.corrupted_packets;
        self.corrupted_hits += o.corrupted_hits;
        self.disconnects += o.disconnects;
        self.disconnect_lost_packets += o.disconnect_lost_packets;
        self.disconnect_lost_hits += o.disconnect_lost_hits;
        self.restarts += o.restarts;
    }

    /// Packets a receiver never gets intact (lost, corrupted or cut).
    pub fn packets_missing(&self) -> u64 {
        self.lost_packets + self.corrupted_packets + self.disconnect_lost_packets
    }

    /// Hits in those packets.
    pub fn hits_missing(&self) -> u64 {
        self.lost_hits + self.corrupted_hits + self.disconnect_lost_hits
    }
}

/// What happens to one data packet; the outcomes are exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Numbered, never sent.
    Lost,
    /// Sent with the payload byte at this offset flipped after the CRC.
    Corrupted {
        /// Offset in the payload.
        at: usize,
    },
    /// Sent twice in a row.
    Duplicated,
    /// Held back and sent right after the next packet that goes out intact.
    Reordered,
    /// Sent once, as made.
    Intact,
}

/// The run's fault draws: one uniform per data packet (and one more for the byte a
/// corruption flips), from `Rng::stream(seed, stream)`.
pub(crate) struct FaultDraw {
    rng: Rng,
    faults: Faults,
}

impl FaultDraw {
    pub(crate) fn new(seed: u64, stream: u64, faults: Faults) -> Self {
        Self {
            rng: Rng::stream(seed, stream),
            faults,
        }
    }

    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The fate of a data packet with `payload_len` bytes of payload. A source's start packet
    /// (`start`) is never lost or corrupted (the draw is made all the same; it may be
    /// duplicated or reordered); a packet is reordered only when `can_hold` (one held packet
    /// per source at a time).
    pub(crate) fn draw(&mut self, start: bool, payload_len: usize, can_hold: bool) -> Fate {
        let f = &self.faults;
        let u = self.rng.uniform();
        let lose = f.lose_packets;
        let corrupt = lose + f.corrupt;
        // 1.0 is above every threshold.
        let u = if start && u < corrupt { 1.0 } else { u };
        let duplicate = corrupt + f.duplicate;
        let reorder = duplicate + f.reorder;
        if u < lose {
            Fate::Lost
        } else if u < corrupt && payload_len > 0 {
            Fate::Corrupted {
                at: self.rng.below(payload_len as u64) as usize,
            }
        } else if u < corrupt {
            // An empty payload has no byte to flip.
            Fate::Intact
        } else if u < duplicate {
            Fate::Duplicated
        } else if u < reorder && can_hold {
            Fate::Reordered
        } else {
            Fate::Intact
        }
    }
}
