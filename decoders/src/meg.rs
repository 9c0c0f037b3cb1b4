//! OPM-MEG sample block (transport payload format 3, docs/formats.md §5 and docs/meg.md):
//! a 16-byte header and `n_samples * n_channels` little-endian i32 samples, sample-major
//! (`[sample][channel]`). Decoding borrows the sample bytes (no copy), so a sink can store
//! them bit-exact.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | sample_counter: u32 device counter of the block's first sample (wraps) |
//! | 4 | 2 | n_channels |
//! | 6 | 2 | n_samples |
//! | 8 | 4 | sample_rate_mhz: nominal sampling rate in millihertz |
//! | 12 | 4 | flags: bit 0 = last channel is a trigger bitmask; bit 1 = data clipped |
//! | 16 | 4 * n_channels * n_samples | i32 samples, sample-major |

use thiserror::Error;

/// Length of the block header.
pub const BLOCK_HEADER_LEN: usize = 16;
/// Flag bit: the last channel is a trigger bitmask.
pub const FLAG_TRIGGER_CHANNEL: u32 = 1 << 0;
/// Flag bit: some samples of the block are clipped.
pub const FLAG_CLIPPED: u32 = 1 << 1;

/// The header of a sample block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// Device counter of the block's first sample (wraps at 2^32).
    pub sample_counter: u32,
    /// Channels per sample.
    pub n_channels: u16,
    /// Samples in the block.
    pub n_samples: u16,
    /// Nominal sampling rate, mHz (the stream's true rate comes from the clock fit).
    pub sample_rate_mhz: u32,
    /// Flags ([`FLAG_TRIGGER_CHANNEL`], [`FLAG_CLIPPED`]).
    pub flags: u32,
}

impl BlockHeader {
    /// Bytes of sample data the header announces.
    pub fn data_len(&self) -> usize {
        4 * self.n_channels as usize * self.n_samples as usize
    }
}

/// A decoded block: header and the borrowed little-endian sample bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block<'a> {
    /// Header.
    pub header: BlockHeader,
    /// `n_samples * n_channels` little-endian i32, sample-major.
    pub data: &'a [u8],
}

impl Block<'_> {
    /// Raw value of sample `s`, channel `c` (`None` out of range).
    pub fn sample(&self, s: usize, c: usize) -> Option<i32> {
        let nc = self.header.n_channels as usize;
        if c >= nc {
            return None;
        }
        let o = 4 * (s * nc + c);
        let b = self.data.get(o..o + 4)?;
        Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Every raw value of channel `c`, in sample order.
    pub fn channel(&self, c: usize) -> impl Iterator<Item = i32> + '_ {
        (0..self.header.n_samples as usize).filter_map(move |s| self.sample(s, c))
    }
}

/// Why a payload is not a valid block.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BlockError {
    /// Shorter than the 16-byte header.
    #[error("OPM block of {len} bytes is shorter than its 16-byte header")]
    Truncated {
        /// Bytes present.
        len: usize,
    },
    /// A header announcing no channel or no sample.
    #[error("OPM block announces {n_channels} channels x {n_samples} samples (both must be > 0)")]
    Empty {
        /// Channels announced.
        n_channels: u16,
        /// Samples announced.
        n_samples: u16,
    },
    /// The payload length does not match the announced shape.
    #[error(
        "OPM block of {n_channels} channels x {n_samples} samples needs {expected} bytes of samples, payload has {got}"
    )]
    LengthMismatch {
        /// Channels announced.
        n_channels: u16,
        /// Samples announced.
        n_samples: u16,
        /// Sample bytes the shape needs.
        expected: usize,
        /// Sample bytes present.
        got: usize,
    },
}

impl BlockError {
    /// Loss reason under which the block is counted.
    pub fn reason(&self) -> &'static str {
        match self {
            BlockError::Truncated { .. } => "meg_truncated_blocks",
            BlockError::Empty { .. } => "meg_empty_blocks",
            BlockError::LengthMismatch { got, expected, .. } if got < expected => {
                "meg_truncated_blocks"
            }
            BlockError::LengthMismatch { .. } => "meg_oversized_blocks",
        }
    }
}

/// Decodes one payload as a block.
pub fn decode_block(payload: &[u8]) -> Result<Block<'_>, BlockError> {
    if payload.len() < BLOCK_HEADER_LEN {
        return Err(BlockError::Truncated { len: payload.len() });
    }
    let u16_at = |o: usize| u16::from_le_bytes([payload[o], payload[o + 1]]);
    let u32_at =
        |o: usize| u32::from_le_bytes([payload[o], payload[o + 1], payload[o + 2], payload[o + 3]]);
    let header = BlockHeader {
        sample_counter: u32_at(0),
        n_channels: u16_at(4),
        n_samples: u16_at(6),
        sample_rate_mhz: u32_at(8),
        flags: u32_at(12),
    };
    if header.n_channels == 0 || header.n_samples == 0 {
        return Err(BlockError::Empty {
            n_channels: header.n_channels,
            n_samples: header.n_samples,
        });
    }
    let data = &payload[BLOCK_HEADER_LEN..];
    if data.len() != header.data_len() {
        return Err(BlockError::LengthMismatch {
            n_channels: header.n_channels,
            n_samples: header.n_samples,
            expected: header.data_len(),
            got: data.len(),
        });
    }
    Ok(Block { header, data })
}

/// Appends the encoded block to `out`. `samples` is sample-major; its length should be
/// `n_channels * n_samples` (the encoder writes what it is given, so tests can build bad
/// blocks).
pub fn encode_block_into(header: &BlockHeader, samples: &[i32], out: &mut Vec<u8>) {
    out.reserve(BLOCK_HEADER_LEN + 4 * samples.len());
    out.extend_from_slice(&header.sample_counter.to_le_bytes());
    out.extend_from_slice(&header.n_channels.to_le_bytes());
    out.extend_from_slice(&header.n_samples.to_le_bytes());
    out.extend_from_slice(&header.sample_rate_mhz.to_le_bytes());
    out.extend_from_slice(&header.flags.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
}

/// Encodes one block.
pub fn encode_block(header: &BlockHeader, samples: &[i32]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_block_into(header, samples, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_vector_round_trip() {
        let h = BlockHeader {
            sample_counter: 0xFFFF_FFFE,
            n_channels: 2,
            n_samples: 2,
            sample_rate_mhz: 1_200_500,
            flags: FLAG_TRIGGER_CHANNEL,
        };
        let bytes = encode_block(&h, &[1, -1, 7, 4]);
        assert_eq!(
            &bytes[..16],
            &[
                0xFE, 0xFF, 0xFF, 0xFF, 2, 0, 2, 0, 116, 81, 18, 0, 1, 0, 0, 0
            ]
        );
        let b = decode_block(&bytes).unwrap();
        assert_eq!(b.header, h);
        assert_eq!(b.sample(0, 1), Some(-1));
        assert_eq!(b.channel(1).collect::<Vec<_>>(), vec![-1, 4]);
        assert_eq!(b.sample(0, 2), None);
        let e = decode_block(&bytes[..20]).unwrap_err();
        assert_eq!(e.reason(), "meg_truncated_blocks");
        assert_eq!(
            decode_block(&bytes[..10]).unwrap_err().reason(),
            "meg_truncated_blocks"
        );
    }
}
