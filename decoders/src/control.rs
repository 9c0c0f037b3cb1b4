//! Control packets (transport payload format 0xFFFF, docs/formats.md §7): records a front-end
//! sends beside its data, in the same source_id and sequence space. Kind 1 is a clock-sync
//! record: the device counter latched at an edge of the reference clock (a PPS or a
//! PTP-disciplined pulse), with the reference time of that edge. Stream processors fit the
//! board clock against these (offset + rate per segment).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | kind: 1 = clock sync |
//! | 2 | 2 | reserved (0) |
//! | 4 | 4 | device_fraction: fraction of a device tick at the edge, in units of 2^-32 tick |
//! | 8 | 8 | device_counter: the device counter at the edge (u64; a 32-bit counter sits in the low bits and wraps as the data's counter does) |
//! | 16 | 8 | reference_ns: reference-clock time of the edge, ns (i64) |
//! | 24 | 8 | reserved (0) |

use scandaq_core::LossReason;
use thiserror::Error;
use zerocopy::little_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Kind code of a clock-sync record.
pub const KIND_CLOCK_SYNC: u16 = 1;
/// Length of a clock-sync record.
pub const CLOCK_SYNC_LEN: usize = 32;

/// Wire layout of a clock-sync record (the table above).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct WireClockSync {
    kind: U16,
    reserved: U16,
    device_fraction: U32,
    device_counter: U64,
    reference_ns: I64,
    reserved_end: [u8; 8],
}

/// A clock-sync record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockSync {
    /// Device counter at the reference edge (raw, as the device counts; may wrap).
    pub device_counter: u64,
    /// Fraction of a tick at the edge, units of 2^-32 tick.
    pub device_fraction: u32,
    /// Reference time of the edge, ns.
    pub reference_ns: i64,
}

impl ClockSync {
    /// The device counter at the edge including the fraction, as f64 ticks (raw counter).
    pub fn device_ticks(&self) -> f64 {
        self.device_counter as f64 + self.device_fraction as f64 / 4_294_967_296.0
    }
}

/// A control payload, decoded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ControlRecord {
    /// A clock-sync record.
    ClockSync(ClockSync),
    /// A kind this version does not know (the caller counts and skips it).
    Unknown(u16),
}

/// Why a control payload could not be decoded.
#[derive(Debug, Error, PartialEq)]
pub enum ControlError {
    /// Shorter than its kind needs.
    #[error("control payload of kind {kind} is {len} bytes, needs {need}")]
    Truncated {
        /// Kind code.
        kind: u16,
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
}

impl ControlError {
    /// Loss reason under which the packet is counted.
    pub fn reason(&self) -> LossReason {
        match self {
            ControlError::Truncated { .. } => LossReason::ControlTruncated,
        }
    }
}

/// Decodes one control payload.
pub fn decode_control(payload: &[u8]) -> Result<ControlRecord, ControlError> {
    let Ok((kind, _)) = U16::read_from_prefix(payload) else {
        return Err(ControlError::Truncated {
            kind: 0,
            len: payload.len(),
            need: 2,
        });
    };
    match kind.get() {
        KIND_CLOCK_SYNC => {
            let (wire, _) =
                WireClockSync::ref_from_prefix(payload).map_err(|_| ControlError::Truncated {
                    kind: KIND_CLOCK_SYNC,
                    len: payload.len(),
                    need: CLOCK_SYNC_LEN,
                })?;
            Ok(ControlRecord::ClockSync(ClockSync {
                device_fraction: wire.device_fraction.get(),
                device_counter: wire.device_counter.get(),
                reference_ns: wire.reference_ns.get(),
            }))
        }
        other => Ok(ControlRecord::Unknown(other)),
    }
}

/// Encodes a clock-sync record (32 bytes).
pub fn encode_clock_sync(sync: &ClockSync) -> [u8; CLOCK_SYNC_LEN] {
    let wire = WireClockSync {
        kind: U16::new(KIND_CLOCK_SYNC),
        reserved: U16::ZERO,
        device_fraction: U32::new(sync.device_fraction),
        device_counter: U64::new(sync.device_counter),
        reference_ns: I64::new(sync.reference_ns),
        reserved_end: [0; 8],
    };
    zerocopy::transmute!(wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_sync_round_trip_and_truncation() {
        let s = ClockSync {
            device_counter: 0xFFFF_FFF0,
            device_fraction: 1 << 31,
            reference_ns: -5,
        };
        let bytes = encode_clock_sync(&s);
        assert_eq!(decode_control(&bytes), Ok(ControlRecord::ClockSync(s)));
        assert_eq!(s.device_ticks(), 4_294_967_280.5);
        assert_eq!(
            decode_control(&bytes[..20]),
            Err(ControlError::Truncated {
                kind: 1,
                len: 20,
                need: 32
            })
        );
        assert_eq!(decode_control(&[7, 0]), Ok(ControlRecord::Unknown(7)));
        assert!(decode_control(&[1]).is_err());
    }
}
