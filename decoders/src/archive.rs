//! The raw packet archive (`.sdq`, docs/formats.md §1): a 64-byte file header (`SDQA`, u16
//! version 1, u16 reserved, u32 metadata_len, 52 reserved zero bytes), `metadata_len` bytes of
//! UTF-8 JSON, then transport packets exactly as received.

/// Archive magic.
pub const ARCHIVE_MAGIC: [u8; 4] = *b"SDQA";
/// Header size.
pub const ARCHIVE_HEADER_LEN: usize = 64;
/// Version written.
pub const ARCHIVE_VERSION: u16 = 1;

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
    let mut h = [0u8; ARCHIVE_HEADER_LEN];
    h[0..4].copy_from_slice(&ARCHIVE_MAGIC);
    h[4..6].copy_from_slice(&ARCHIVE_VERSION.to_le_bytes());
    h[8..12].copy_from_slice(&metadata_len.to_le_bytes());
    h
}

/// Parses the header; returns the metadata length.
pub fn parse_header(bytes: &[u8]) -> Result<u32, ArchiveError> {
    if bytes.len() < ARCHIVE_HEADER_LEN {
        return Err(ArchiveError::Short(bytes.len()));
    }
    let magic: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != ARCHIVE_MAGIC {
        return Err(ArchiveError::BadMagic(magic));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != ARCHIVE_VERSION {
        return Err(ArchiveError::Version(version));
    }
    Ok(u32::from_le_bytes([
        bytes[8], bytes[9], bytes[10], bytes[11],
    ]))
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
