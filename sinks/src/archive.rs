//! The raw packet archive writer (`raw-00000.sdq`): header, run metadata JSON, then packets
//! exactly as received; written as `.inprogress` and committed (fsync, rename) at the end.

use crate::error::SinkError;
use crate::manifest::FileRecord;
use crate::parquet_table::sync_dir;
use scandaq_decoders::archive::encode_header;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// An archive being written.
pub struct RawArchiveWriter {
    final_path: PathBuf,
    tmp_path: PathBuf,
    out: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
    packets: u64,
}

impl RawArchiveWriter {
    /// Creates `dir/file_name.inprogress` with the header and `metadata_json`.
    pub fn create(dir: &Path, file_name: &str, metadata_json: &str) -> Result<Self, SinkError> {
        let final_path = dir.join(file_name);
        let tmp_path = dir.join(format!("{file_name}.inprogress"));
        let file = File::create(&tmp_path).map_err(|e| SinkError::io("creating", &tmp_path, e))?;
        let mut w = Self {
            final_path,
            tmp_path,
            out: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            bytes: 0,
            packets: 0,
        };
        w.write_bytes(&encode_header(metadata_json.len() as u32))?;
        w.write_bytes(metadata_json.as_bytes())?;
        Ok(w)
    }

    fn write_bytes(&mut self, b: &[u8]) -> Result<(), SinkError> {
        self.out
            .write_all(b)
            .map_err(|e| SinkError::io("writing", &self.tmp_path, e))?;
        self.hasher.update(b);
        self.bytes += b.len() as u64;
        Ok(())
    }

    /// Appends whole packets as received (`packets` of them).
    pub fn write_packets(&mut self, raw: &[u8], packets: u64) -> Result<(), SinkError> {
        self.packets += packets;
        self.write_bytes(raw)
    }

    /// Flushes, fsyncs and renames; the record's `rows` is the packet count.
    pub fn commit(self) -> Result<FileRecord, SinkError> {
        let Self {
            final_path,
            tmp_path,
            out,
            hasher,
            bytes,
            packets,
        } = self;
        let file = out
            .into_inner()
            .map_err(|e| SinkError::io("flushing", &tmp_path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| SinkError::io("syncing", &tmp_path, e))?;
        std::fs::rename(&tmp_path, &final_path)
            .map_err(|e| SinkError::io("renaming", &tmp_path, e))?;
        if let Some(dir) = final_path.parent() {
            sync_dir(dir);
        }
        Ok(FileRecord {
            path: final_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            rows: packets,
            bytes,
            sha256: hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        })
    }
}
