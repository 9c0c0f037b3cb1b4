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

use scandaq_core::LossReason;
use thiserror::Error;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Length of the block header.
pub const BLOCK_HEADER_LEN: usize = 16;
/// Flag bit: the last channel is a trigger bitmask.
pub const FLAG_TRIGGER_CHANNEL: u32 = 1 << 0;
/// Flag bit: some samples of the block are clipped.
pub const FLAG_CLIPPED: u32 = 1 << 1;

/// Wire layout of the block header (the table above).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct WireBlockHeader {
    sample_counter: U32,
    n_channels: U16,
    n_samples: U16,
    sample_rate_mhz: U32,
    flags: U32,
}
const _: () = assert!(size_of::<WireBlockHeader>() == BLOCK_HEADER_LEN);

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
    pub fn reason(&self) -> LossReason {
        match self {
            BlockError::Truncated { .. } => LossReason::MegTruncatedBlocks,
            BlockError::Empty { .. } => LossReason::MegEmptyBlocks,
            BlockError::LengthMismatch { got, expected, .. } if got < expected => {
                LossReason::MegTruncatedBlocks
            }
            BlockError::LengthMismatch { .. } => LossReason::MegOversizedBlocks,
        }
    }
}

/// Decodes one payload as a block.
pub fn decode_block(payload: &[u8]) -> Result<Block<'_>, BlockError> {
    let (wire, data) = WireBlockHeader::ref_from_prefix(payload)
        .map_err(|_| BlockError::Truncated { len: payload.len() })?;
    let header = BlockHeader {
        sample_counter: wire.sample_counter.get(),
        n_channels: wire.n_channels.get(),
        n_samples: wire.n_samples.get(),
        sample_rate_mhz: wire.sample_rate_mhz.get(),
        flags: wire.flags.get(),
    };
    if header.n_channels == 0 || header.n_samples == 0 {
        return Err(BlockError::Empty {
            n_channels: header.n_channels,
            n_samples: header.n_samples,
        });
    }
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
    let wire = WireBlockHeader {
        sample_counter: U32::new(header.sample_counter),
        n_channels: U16::new(header.n_channels),
        n_samples: U16::new(header.n_samples),
        sample_rate_mhz: U32::new(header.sample_rate_mhz),
        flags: U32::new(header.flags),
    };
    out.extend_from_slice(wire.as_bytes());
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

/// Kind of a channel in the channel table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// MEG magnetometer (an OPM axis); values in tesla.
    MegMag,
    /// MEG gradiometer; values in tesla per metre.
    MegGrad,
    /// Trigger bitmask channel.
    Trigger,
    /// Anything else (auxiliary inputs).
    Misc,
}

impl ChannelKind {
    /// Name used in the channel table and the `meg_channels` table.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::MegMag => "meg_mag",
            ChannelKind::MegGrad => "meg_grad",
            ChannelKind::Trigger => "trigger",
            ChannelKind::Misc => "misc",
        }
    }

    /// Parses a kind name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "meg_mag" => ChannelKind::MegMag,
            "meg_grad" => ChannelKind::MegGrad,
            "trigger" => ChannelKind::Trigger,
            "misc" => ChannelKind::Misc,
            _ => return None,
        })
    }
}

/// One channel of an OPM stream (a row of the channel table, docs/meg.md).
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelInfo {
    /// Channel name (unique).
    pub name: String,
    /// Kind.
    pub kind: ChannelKind,
    /// Calibration: physical value = raw * cal * range.
    pub cal: f64,
    /// Range factor (see `cal`).
    pub range: f64,
    /// Unit of the physical value ("T", "T/m", "bitmask", "V").
    pub unit: String,
    /// Group delay of the channel's signal path, ps (the physical event happened this long
    /// before the sample's time).
    pub delay_ps: i64,
    /// Sensor position, metres (device coordinates).
    pub position_m: [f64; 3],
    /// Sensitive-axis orientation (unit vector).
    pub orientation: [f64; 3],
}

/// Header line of the channel table (tab-separated columns).
pub const CHANNEL_TABLE_COLUMNS: [&str; 12] = [
    "name", "kind", "cal", "range", "unit", "delay_ps", "x_m", "y_m", "z_m", "ox", "oy", "oz",
];

/// Why a channel table could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChannelTableError {
    /// The header line is missing or not the expected columns.
    #[error("channel table header must be the tab-separated columns {expected:?}, found {found:?}")]
    Header {
        /// Expected columns.
        expected: String,
        /// What the first non-comment line held.
        found: String,
    },
    /// A row that cannot be parsed.
    #[error("channel table line {line}: {message}")]
    Row {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Formats a channel table (tab-separated, a `#` comment line, the header, one row per
/// channel). Floats are written in Rust's shortest round-trip form.
pub fn format_channel_table(channels: &[ChannelInfo]) -> String {
    let mut out = String::from("# scandaq OPM channel table v1: physical = raw * cal * range\n");
    out.push_str(&CHANNEL_TABLE_COLUMNS.join("\t"));
    out.push('\n');
    for c in channels {
        let p = c.position_m;
        let o = c.orientation;
        out.push_str(&format!(
            "{}\t{}\t{:e}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            c.name,
            c.kind.as_str(),
            c.cal,
            c.range,
            c.unit,
            c.delay_ps,
            p[0],
            p[1],
            p[2],
            o[0],
            o[1],
            o[2]
        ));
    }
    out
}

/// Parses a channel table written by [`format_channel_table`] (or by hand: `#` lines and
/// blank lines are skipped).
pub fn parse_channel_table(text: &str) -> Result<Vec<ChannelInfo>, ChannelTableError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let expected = CHANNEL_TABLE_COLUMNS.join("\t");
    match lines.next() {
        Some((_, h)) if h.trim_end() == expected => {}
        other => {
            return Err(ChannelTableError::Header {
                expected,
                found: other.map(|(_, l)| l.to_string()).unwrap_or_default(),
            });
        }
    }
    let mut out: Vec<ChannelInfo> = Vec::new();
    for (i, line) in lines {
        let row = |message: String| ChannelTableError::Row {
            line: i + 1,
            message,
        };
        let f: Vec<&str> = line.trim_end().split('\t').collect();
        if f.len() != CHANNEL_TABLE_COLUMNS.len() {
            return Err(row(format!(
                "{} columns, expected {}",
                f.len(),
                CHANNEL_TABLE_COLUMNS.len()
            )));
        }
        let num = |k: usize| -> Result<f64, ChannelTableError> {
            f[k].trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    row(format!(
                        "{} {:?} is not a number",
                        CHANNEL_TABLE_COLUMNS[k], f[k]
                    ))
                })
        };
        let kind = ChannelKind::parse(f[1].trim()).ok_or_else(|| {
            row(format!(
                "kind {:?} is not one of meg_mag, meg_grad, trigger, misc",
                f[1]
            ))
        })?;
        let delay_ps = f[5]
            .trim()
            .parse::<i64>()
            .map_err(|_| row(format!("delay_ps {:?} is not an integer", f[5])))?;
        let name = f[0].trim().to_string();
        if name.is_empty() || out.iter().any(|c| c.name == name) {
            return Err(row(format!("channel name {name:?} is empty or repeated")));
        }
        out.push(ChannelInfo {
            name,
            kind,
            cal: num(2)?,
            range: num(3)?,
            unit: f[4].trim().to_string(),
            delay_ps,
            position_m: [num(6)?, num(7)?, num(8)?],
            orientation: [num(9)?, num(10)?, num(11)?],
        });
    }
    Ok(out)
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
        assert_eq!(e.reason(), LossReason::MegTruncatedBlocks);
        assert_eq!(
            decode_block(&bytes[..10]).unwrap_err().reason(),
            LossReason::MegTruncatedBlocks
        );
    }

    #[test]
    fn channel_table_round_trip_and_errors() {
        let c = ChannelInfo {
            name: "OPM001X".into(),
            kind: ChannelKind::MegMag,
            cal: 1e-16,
            range: 1.0,
            unit: "T".into(),
            delay_ps: 1_250_000_000,
            position_m: [0.01, -0.02, 0.1],
            orientation: [1.0, 0.0, 0.0],
        };
        let t = ChannelInfo {
            name: "STI001".into(),
            kind: ChannelKind::Trigger,
            unit: "bitmask".into(),
            cal: 1.0,
            delay_ps: 0,
            ..c.clone()
        };
        let text = format_channel_table(&[c.clone(), t.clone()]);
        assert_eq!(parse_channel_table(&text), Ok(vec![c, t]));
        assert!(matches!(
            parse_channel_table("name\tkind\n"),
            Err(ChannelTableError::Header { .. })
        ));
        let bad = text.replace("meg_mag", "squid");
        assert!(
            matches!(
                parse_channel_table(&bad),
                Err(ChannelTableError::Row { line: 3, .. })
            ),
            "{:?}",
            parse_channel_table(&bad)
        );
    }
}
