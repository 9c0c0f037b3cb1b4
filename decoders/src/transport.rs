//! The scandaq transport packet (docs/formats.md §1): a 32-byte little-endian header
//! (`SDQ1`, header_len, payload_format, source_id, flags, seq, payload_len, crc32c) + payload.

use scandaq_core::LossReason;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Header magic.
pub const MAGIC: [u8; 4] = *b"SDQ1";
/// Header length of this version.
pub const HEADER_LEN: usize = 32;
/// Flag bit 0: the payload CRC-32C is present.
pub const FLAG_CRC: u32 = 1 << 0;
/// Flag bit 1: end of stream.
pub const FLAG_END_OF_STREAM: u32 = 1 << 1;
/// Flag bit 2: start of stream. The sender sets it on the first packet it sends after it
/// (re)starts counting `seq` (normally `seq` 0); a receiver that sees it on a packet other
/// than a repeat of the current stream's first packet opens a new session for the source
/// (the board restarted). Receivers predating the bit ignore it.
pub const FLAG_START_OF_STREAM: u32 = 1 << 2;

/// Payload formats.
pub mod payload_format {
    /// One or more whole PETsys TOFPET2 frames.
    pub const PETSYS_TOFPET2: u16 = 1;
    /// PETLINK 32-bit words.
    pub const PETLINK32: u16 = 2;
    /// OPM-MEG sample block.
    pub const OPM_BLOCK: u16 = 3;
    /// Ultrasound RF event chunk.
    pub const US_RF_EVENT: u16 = 4;
    /// Control packet.
    pub const CONTROL: u16 = 0xFFFF;
}

/// Wire layout of the header.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct WireHeader {
    magic: [u8; 4],
    header_len: U16,
    payload_format: U16,
    source_id: U32,
    flags: U32,
    seq: U64,
    payload_len: U32,
    crc32c: U32,
}
const _: () = assert!(size_of::<WireHeader>() == HEADER_LEN);

/// A decoded transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportHeader {
    /// Header length in bytes (>= 32; extra bytes are skipped).
    pub header_len: u16,
    /// Payload format code ([`payload_format`]).
    pub payload_format: u16,
    /// Front-end board / stream id.
    pub source_id: u32,
    /// Flag bits.
    pub flags: u32,
    /// Per-source packet counter.
    pub seq: u64,
    /// Payload bytes after the header.
    pub payload_len: u32,
    /// CRC-32C of the payload (when [`FLAG_CRC`] is set).
    pub crc32c: u32,
}

/// Why a packet was rejected. The names are the loss-counter reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Fewer than 32 bytes.
    #[error("packet of {0} bytes is shorter than the 32-byte transport header")]
    Short(usize),
    /// Magic is not `SDQ1`.
    #[error("bad magic {0:02x?} (expected \"SDQ1\")")]
    BadMagic([u8; 4]),
    /// header_len below 32.
    #[error("header_len {0} is below 32")]
    BadHeaderLen(u16),
    /// Payload extends past the bytes available.
    #[error("payload_len {payload_len} exceeds the {available} bytes available after the header")]
    Truncated {
        /// Declared payload length.
        payload_len: u32,
        /// Bytes available after the header.
        available: usize,
    },
    /// CRC mismatch.
    #[error("payload CRC-32C {computed:08x} does not match header {expected:08x}")]
    Crc {
        /// CRC in the header.
        expected: u32,
        /// CRC of the bytes received.
        computed: u32,
    },
}

impl TransportError {
    /// Loss-counter reason name.
    pub fn reason(&self) -> LossReason {
        match self {
            Self::Short(_) | Self::BadMagic(_) | Self::BadHeaderLen(_) => LossReason::BadHeader,
            Self::Truncated { .. } => LossReason::TruncatedPacket,
            Self::Crc { .. } => LossReason::CrcError,
        }
    }
}

impl TransportHeader {
    /// Parses the header at the start of `bytes` (does not look at the payload).
    pub fn parse(bytes: &[u8]) -> Result<Self, TransportError> {
        let (wire, _) =
            WireHeader::ref_from_prefix(bytes).map_err(|_| TransportError::Short(bytes.len()))?;
        if wire.magic != MAGIC {
            return Err(TransportError::BadMagic(wire.magic));
        }
        let header_len = wire.header_len.get();
        if usize::from(header_len) < HEADER_LEN {
            return Err(TransportError::BadHeaderLen(header_len));
        }
        Ok(Self {
            header_len,
            payload_format: wire.payload_format.get(),
            source_id: wire.source_id.get(),
            flags: wire.flags.get(),
            seq: wire.seq.get(),
            payload_len: wire.payload_len.get(),
            crc32c: wire.crc32c.get(),
        })
    }

    /// Total packet length (header + payload).
    pub fn packet_len(&self) -> usize {
        usize::from(self.header_len) + self.payload_len as usize
    }
}

/// Decodes one packet from the start of `bytes`, checking length and CRC. Returns the header
/// and the payload slice; trailing bytes beyond the packet are ignored.
pub fn decode_packet(bytes: &[u8]) -> Result<(TransportHeader, &[u8]), TransportError> {
    let h = TransportHeader::parse(bytes)?;
    let start = usize::from(h.header_len);
    let available = bytes.len().saturating_sub(start);
    if h.payload_len as usize > available {
        return Err(TransportError::Truncated {
            payload_len: h.payload_len,
            available,
        });
    }
    // `available` is 0 both when the payload is empty and when header_len points past the
    // end of the bytes: slice with `get` so a header_len beyond the packet is an error, not a
    // panic.
    let payload =
        bytes
            .get(start..start + h.payload_len as usize)
            .ok_or(TransportError::Truncated {
                payload_len: h.payload_len,
                available,
            })?;
    if h.flags & FLAG_CRC != 0 {
        let computed = crc32c::crc32c(payload);
        if computed != h.crc32c {
            return Err(TransportError::Crc {
                expected: h.crc32c,
                computed,
            });
        }
    }
    Ok((h, payload))
}

/// Appends a packet (32-byte header + payload) to `out`, with a CRC when `with_crc`.
pub fn encode_packet(
    out: &mut Vec<u8>,
    payload_format: u16,
    source_id: u32,
    seq: u64,
    extra_flags: u32,
    payload: &[u8],
    with_crc: bool,
) {
    let flags = extra_flags | if with_crc { FLAG_CRC } else { 0 };
    let wire = WireHeader {
        magic: MAGIC,
        header_len: U16::new(HEADER_LEN as u16),
        payload_format: U16::new(payload_format),
        source_id: U32::new(source_id),
        flags: U32::new(flags),
        seq: U64::new(seq),
        payload_len: U32::new(payload.len() as u32),
        crc32c: U32::new(if with_crc { crc32c::crc32c(payload) } else { 0 }),
    };
    out.extend_from_slice(wire.as_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        let mut out = Vec::new();
        encode_packet(&mut out, 1, 7, 0x0102, 0, b"abcd", true);
        assert_eq!(&out[0..4], b"SDQ1");
        assert_eq!(&out[4..6], &[32, 0]);
        assert_eq!(&out[8..12], &[7, 0, 0, 0]);
        assert_eq!(&out[16..24], &[2, 1, 0, 0, 0, 0, 0, 0]);
        // CRC-32C("abcd") = 0x92c80a31
        assert_eq!(&out[28..32], &0x92c8_0a31u32.to_le_bytes());
        let (h, p) = decode_packet(&out).unwrap();
        assert_eq!((h.source_id, h.seq, p), (7, 0x0102, &b"abcd"[..]));
        out[33] ^= 1;
        assert_eq!(
            decode_packet(&out).unwrap_err().reason(),
            LossReason::CrcError
        );
    }
}
