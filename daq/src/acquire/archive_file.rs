//! Opening a scandaq raw archive (`.sdq`, docs/formats.md §1): the header check and the
//! metadata block, shared by the archive input of a run or replay and by `scandaq inspect`.

use anyhow::{Context, Result};
use scandaq_decoders::archive::{ARCHIVE_HEADER_LEN, parse_header};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Largest payload an archived packet may declare (as for a TCP stream); a header claiming
/// more is skipped like a bad one.
pub const MAX_ARCHIVED_PAYLOAD: u32 = 1 << 26;

/// Opens the archive at `path`, checks its header and reads its metadata block. Returns the
/// file positioned at the first packet, and the metadata bytes (JSON, possibly empty).
pub fn open_archive(path: &Path) -> Result<(File, Vec<u8>)> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut head = [0u8; ARCHIVE_HEADER_LEN];
    file.read_exact(&mut head)
        .with_context(|| format!("{}: too short for a raw archive", path.display()))?;
    let meta_len = parse_header(&head).with_context(|| format!("{}", path.display()))?;
    let mut meta = vec![0u8; meta_len as usize];
    file.read_exact(&mut meta)
        .with_context(|| format!("{}: the archive's metadata is truncated", path.display()))?;
    Ok((file, meta))
}
