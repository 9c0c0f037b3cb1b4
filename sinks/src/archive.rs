//! The raw packet archive writer (`raw-00000.sdq`): header, run metadata JSON, then packets
//! exactly as received; written as `.inprogress` and committed (fsync, rename) at the end.
//! Within the commit interval of being handed to it, every packet is out of the writer's
//! buffer and being fdatasynced ([`RawArchiveWriter::tick`]), so after a power cut or SIGKILL
//! `scandaq recover` finds every packet received up to one interval before it (the file is
//! cut at its last whole packet and committed).

use crate::durable_file::sync_dir;
use crate::durable_file::{BackgroundSync, copy_io_error};
use crate::error::SinkError;
use crate::manifest::FileRecord;
use crate::parquet_table::{CUT_FRACTION, DEFAULT_COMMIT_INTERVAL};
use scandaq_decoders::archive::encode_header;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An archive being written.
pub struct RawArchiveWriter {
    final_path: PathBuf,
    tmp_path: PathBuf,
    out: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
    packets: u64,
    /// Flush the buffer and start an fdatasync this often.
    flush_every: Duration,
    last_flush: Instant,
    /// Bytes in the buffer not yet flushed.
    unflushed: bool,
    background_sync: BackgroundSync,
}

impl RawArchiveWriter {
    /// Creates `dir/file_name.inprogress` with the header and `metadata_json`.
    pub fn create(dir: &Path, file_name: &str, metadata_json: &str) -> Result<Self, SinkError> {
        let final_path = dir.join(file_name);
        let tmp_path = dir.join(format!("{file_name}.inprogress"));
        let file = File::create(&tmp_path).map_err(|e| SinkError::io("creating", &tmp_path, e))?;
        let background_sync = BackgroundSync::new(&file)
            .map_err(|e| SinkError::io("opening a second handle on", &tmp_path, e))?;
        let mut w = Self {
            final_path,
            tmp_path,
            out: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            bytes: 0,
            packets: 0,
            flush_every: DEFAULT_COMMIT_INTERVAL.mul_f64(CUT_FRACTION),
            last_flush: Instant::now(),
            unflushed: false,
            background_sync,
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

    /// Sets the commit interval (default 1 s): every packet is flushed and being synced
    /// within it.
    pub fn set_commit_interval(&mut self, interval: Duration) {
        self.flush_every = interval.mul_f64(CUT_FRACTION);
    }

    /// Appends whole packets as received (`packets` of them).
    pub fn write_packets(&mut self, raw: &[u8], packets: u64) -> Result<(), SinkError> {
        self.packets += packets;
        self.unflushed |= !raw.is_empty();
        self.write_bytes(raw)?;
        self.tick()
    }

    /// Flushes the buffer to the file and starts its fdatasync once the oldest unflushed
    /// packet may be [`CUT_FRACTION`] of the commit interval old; reports a failed background
    /// sync (a full disk) at once. Call it a few times per interval when no packets arrive.
    pub fn tick(&mut self) -> Result<(), SinkError> {
        if self.unflushed && self.last_flush.elapsed() >= self.flush_every / 2 {
            self.out
                .flush()
                .map_err(|e| SinkError::io("writing", &self.tmp_path, e))?;
            self.unflushed = false;
            self.last_flush = Instant::now();
            self.background_sync.kick();
        } else if !self.unflushed {
            self.last_flush = Instant::now();
        }
        let tmp_path = &self.tmp_path;
        self.background_sync
            .tick()
            .map_err(|e| SinkError::io("syncing", tmp_path, copy_io_error(e)))
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
            background_sync,
            ..
        } = self;
        let file = out
            .into_inner()
            .map_err(|e| SinkError::io("flushing", &tmp_path, e.into_error()))?;
        background_sync
            .finish()
            .map_err(|e| SinkError::io("syncing", &tmp_path, e))?;
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
            sha256: scandaq_core::hex::hex_lower(&hasher.finalize()),
        })
    }
}
