//! The raw packet archive (`.sdq`, docs/formats.md §1): a 64-byte file header (`SDQA`, u16
//! version 1, u16 reserved, u32 metadata_len, 52 reserved zero bytes), `metadata_len` bytes of
//! UTF-8 JSON, then transport packets exactly as received.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Archive magic.
pub const ARCHIVE_MAGIC: [u8; 4] = *b"SDQA";
/// Header size.
pub const ARCHIVE_HEADER_LEN: usize = 64;
/// Version written.
pub const ARCHIVE_VERSION: u16 = 1;

/// Wire layout of the file header.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct WireArchiveHeader {
    magic: [u8; 4],
    version: U16,
    reserved: U16,
    metadata_len: U32,
    reserved_end: [u8; 52],
}

/// Why an archive header is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// Too short.
    #[error("file is {0} bytes, shorter than the 64-byte .sdq header")]
    Short(usize),
    /// Wrong magic.
    #[error("not a scandaq raw archive (magic {0:02x?}, expected \"SDQA\")")]
    BadMagic([u8; 4]),
    /// Unknown version.
    #[error("raw archive version {0} is not supported (this scandaq reads version 1)")]
    Version(u16),
}

/// Encodes the file header for `metadata_len` bytes of JSON.
pub fn encode_header(metadata_len: u32) -> [u8; ARCHIVE_HEADER_LEN] {
    let wire = WireArchiveHeader {
        magic: ARCHIVE_MAGIC,
        version: U16::new(ARCHIVE_VERSION),
        reserved: U16::ZERO,
        metadata_len: U32::new(metadata_len),
        reserved_end: [0; 52],
    };
    zerocopy::transmute!(wire)
}

/// Parses the header; returns the metadata length.
pub fn parse_header(bytes: &[u8]) -> Result<u32, ArchiveError> {
    let (wire, _) =
        WireArchiveHeader::ref_from_prefix(bytes).map_err(|_| ArchiveError::Short(bytes.len()))?;
    if wire.magic != ARCHIVE_MAGIC {
        return Err(ArchiveError::BadMagic(wire.magic));
    }
    let version = wire.version.get();
    if version != ARCHIVE_VERSION {
        return Err(ArchiveError::Version(version));
    }
    Ok(wire.metadata_len.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_rejects() {
        let h = encode_header(1234);
        assert_eq!(&h[..4], b"SDQA");
        assert_eq!(parse_header(&h), Ok(1234));
        assert!(matches!(
            parse_header(&h[..10]),
            Err(ArchiveError::Short(10))
        ));
        let mut bad = h;
        bad[4] = 9;
        assert_eq!(parse_header(&bad), Err(ArchiveError::Version(9)));
    }
}
