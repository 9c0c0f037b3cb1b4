//! The raw archive a killed run was writing (`raw-NNNNN.sdq.inprogress`): cut after its last
//! whole packet, synced and committed under its final name.

use super::verify::sha256_file;
use super::{Recovery, RecoveryNote};
use anyhow::{Context, Result, anyhow, bail};
use scandaq_sinks::manifest::FileRecord;
use std::path::Path;

impl Recovery<'_> {
    /// The raw archive being written when the process died: cut at its last whole packet and
    /// committed (its tail is replayed afterwards, by [`Recovery::replay_archive_tail`]).
    pub(super) fn commit_interrupted_archives(&mut self) {
        let dir = self.dir;
        for name in &self.names {
            let Some(final_name) = name
                .strip_suffix(".inprogress")
                .filter(|f| f.starts_with("raw-") && f.ends_with(".sdq"))
            else {
                continue;
            };
            if dir.join(final_name).exists() {
                self.notes.push(left_in_place(
                    dir,
                    name,
                    format!("{final_name} is already committed; this leftover was left in place"),
                ));
                continue;
            }
            match commit_archive(dir, name, final_name) {
                Ok(c) => {
                    self.notes.push(RecoveryNote {
                        file: final_name.to_string(),
                        action: "committed".into(),
                        rows: c.record.rows,
                        bytes: c.record.bytes,
                        bytes_lost: c.bytes_cut,
                        note: format!(
                            "raw archive the writer was killed in: cut after its last whole packet ({} packets kept, {} bytes of a partial packet cut), synced and renamed",
                            c.record.rows, c.bytes_cut
                        ),
                    });
                    self.files.push(c.record);
                }
                Err(e) => {
                    self.problems.push(format!("{name}: {e:#}"));
                    self.notes.push(left_in_place(dir, name, format!("{e:#}")));
                }
            }
        }
    }
}

/// The note of an interrupted file left as it is (nothing of it salvaged: all its bytes lost).
fn left_in_place(dir: &Path, name: &str, note: String) -> RecoveryNote {
    let size = std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    RecoveryNote::not_salvaged(name.to_string(), size, note)
}

/// What committing an interrupted archive gave.
struct ArchiveCommit {
    record: FileRecord,
    /// Bytes after the last whole packet, cut off.
    bytes_cut: u64,
}

/// Commits `dir/name` (`raw-NNNNN.sdq.inprogress`) as `dir/final_name`: the file is cut after
/// its last whole packet (a packet the writer was writing when killed is incomplete), synced
/// and renamed. Bytes that do not parse as a packet header are stepped over one at a time, as
/// a replay does (they were counted when received).
fn commit_archive(dir: &Path, name: &str, final_name: &str) -> Result<ArchiveCommit> {
    use scandaq_decoders::archive::{ARCHIVE_HEADER_LEN, parse_header};
    use scandaq_decoders::transport::{HEADER_LEN, TransportHeader};
    use std::os::unix::fs::FileExt;
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata()?.len();
    let mut head = [0u8; ARCHIVE_HEADER_LEN];
    file.read_exact_at(&mut head, 0).with_context(|| {
        format!(
            "{}: shorter than an archive header (killed before anything was archived)",
            path.display()
        )
    })?;
    let meta_len = parse_header(&head).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut pos = (ARCHIVE_HEADER_LEN + meta_len as usize) as u64;
    if pos > size {
        bail!(
            "{}: killed while its metadata was being written",
            path.display()
        );
    }
    let mut end = pos;
    let mut packets = 0u64;
    let mut header = [0u8; HEADER_LEN];
    while pos + HEADER_LEN as u64 <= size {
        file.read_exact_at(&mut header, pos)?;
        match TransportHeader::parse(&header) {
            Ok(h) => {
                let next = pos + h.packet_len() as u64;
                if next > size {
                    break; // the packet being written when the process died
                }
                packets += 1;
                pos = next;
                end = next;
            }
            Err(_) => pos += 1,
        }
    }
    if end < size {
        file.set_len(end)
            .with_context(|| format!("cannot cut {} at byte {end}", path.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    drop(file);
    let final_path = dir.join(final_name);
    std::fs::rename(&path, &final_path)
        .with_context(|| format!("cannot rename {}", path.display()))?;
    scandaq_sinks::durable_file::sync_dir(dir);
    let (sha256, bytes) = sha256_file(&final_path)?;
    Ok(ArchiveCommit {
        record: FileRecord {
            path: final_name.to_string(),
            rows: packets,
            bytes,
            sha256,
        },
        bytes_cut: size - end,
    })
}
