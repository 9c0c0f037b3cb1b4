//! The file under a Parquet writer: [`HashingFile`] counts and SHA-256-hashes every byte on
//! its way to disk, the hashing on a helper thread, and remembers a full disk; [`BackgroundSync`]
//! flushes what is written to disk (fdatasync) while more is produced, drops it from the page
//! cache, and makes sure a flush starts after every row group appended (the commit interval's
//! durability, docs/reliability.md). Also the crash-safe small-file primitives every writer of
//! the workspace uses: [`sync_dir`] and [`write_atomic`].

use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// A copy of `e` (kind and OS error number kept) for reporting an error that is also kept.
pub(crate) fn copy_io_error(e: &std::io::Error) -> std::io::Error {
    e.raw_os_error().map_or_else(
        || std::io::Error::new(e.kind(), e.to_string()),
        std::io::Error::from_raw_os_error,
    )
}

/// Best-effort fsync of a directory so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Replaces `path` with `bytes` atomically: writes `PATH.tmp` beside it, fsyncs it, renames it
/// over `path` and fsyncs the directory, so a crash leaves either the old or the new file. The
/// temporary file is removed when any step fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), crate::SinkError> {
    use crate::SinkError;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| SinkError::io("creating", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| SinkError::io("writing", &tmp, e))?;
        f.sync_all()
            .map_err(|e| SinkError::io("syncing", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| SinkError::io("renaming", &tmp, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// Bytes handed to the hashing thread at a time: every chunk is exactly this long (the last
/// one of a file excepted), in buffers the hashing thread hands back for reuse. 256 KiB (was
/// 1 MiB): the buffers there can be (queued, being hashed, pending) hold at most 1.5 MiB; a
/// starved hasher fills its queue more often the longer a run is (heaptrack: 2.1 MB of hashing
/// buffers at the live-heap peak of a 10 M-hit replay, 6.3 MB at 100 M with 1 MiB chunks;
/// BENCHMARKS.md, issue 16, session 14).
const HASH_CHUNK: usize = 256 << 10;
/// Chunks queued for the hashing thread at most (then the writer waits for it). The hasher
/// takes 0.55 s of CPU per GB, far less than the encoding, but on a loaded machine it can be
/// starved: a deeper queue (8 chunks of 4 MiB) then filled up in long runs, and was what made
/// the live heap's peak grow with the file size (heaptrack, singles only: 4 MB of hashing
/// buffers at the peak of a 10 M-hit replay, 21 MB at 100 M; BENCHMARKS.md, issue 16).
const HASH_QUEUE_CHUNKS: usize = 4;

/// Writer that counts every byte on its way to the file and hashes it (SHA-256) on a helper
/// thread: hashing costs 0.55 s of CPU per GB, which on the writer's own thread capped the
/// `rf_events` writer; now the two overlap (the bytes are copied once more, ~0.1 s/GB).
///
/// Bytes reach the file a hashing chunk at a time, or at [`Write::flush`]: the Parquet
/// writer hands over a spliced column chunk in 8 KiB pieces, and a system call for each cost
/// more kernel CPU than the encoding it followed saved (issue 16, session 19). Whoever needs
/// the bytes on disk flushes first (the table writer does after every row group).
pub(crate) struct HashingFile {
    file: File,
    bytes: u64,
    /// Bytes written but not yet handed to the hashing thread (at most [`HASH_CHUNK`]).
    pending: Vec<u8>,
    /// How many bytes at the front of `pending` are in the file already.
    in_file: usize,
    to_hasher: Option<SyncSender<Vec<u8>>>,
    /// Hashed chunks handed back, emptied, for reuse: after the first few chunks no buffer
    /// is allocated.
    recycled: Receiver<Vec<u8>>,
    hasher: Option<JoinHandle<Sha256>>,
    /// A write failed because the file system is full.
    disk_full: bool,
}

impl HashingFile {
    /// Wraps a freshly created file and starts its hashing thread.
    pub(crate) fn new(file: File) -> std::io::Result<Self> {
        let (tx, rx): (SyncSender<Vec<u8>>, Receiver<Vec<u8>>) = sync_channel(HASH_QUEUE_CHUNKS);
        // Room for every buffer there can be (queued, being hashed, pending), so handing one
        // back never blocks the hasher.
        let (back_tx, recycled) = sync_channel(HASH_QUEUE_CHUNKS + 2);
        let hasher = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for mut chunk in rx {
                    h.update(&chunk);
                    chunk.clear();
                    let _ = back_tx.try_send(chunk);
                }
                h
            })?;
        Ok(Self {
            file,
            bytes: 0,
            pending: Vec::with_capacity(HASH_CHUNK),
            in_file: 0,
            to_hasher: Some(tx),
            recycled,
            hasher: Some(hasher),
            disk_full: false,
        })
    }

    /// The file (for syncing).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Whether a write failed on a full disk (ENOSPC, EDQUOT).
    pub(crate) fn saw_disk_full(&self) -> bool {
        self.disk_full
    }

    /// Bytes written (in the file once flushed).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the bytes of `pending` not yet in the file.
    fn write_out(&mut self) -> std::io::Result<()> {
        if let Some(rest) = self.pending.get(self.in_file..).filter(|r| !r.is_empty()) {
            self.file.write_all(rest).inspect_err(|e| {
                self.disk_full |= crate::error::is_disk_full(e);
            })?;
            self.in_file = self.pending.len();
        }
        Ok(())
    }

    /// Sends the pending chunk, once in the file, to the hashing thread; the next one is a
    /// recycled buffer when one is back.
    fn hand_to_hasher(&mut self) -> std::io::Result<()> {
        self.write_out()?;
        self.in_file = 0;
        let Some(tx) = &self.to_hasher else {
            // Only after finish_hash: nothing is hashed any more.
            self.pending.clear();
            return Ok(());
        };
        let next = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(HASH_CHUNK));
        let chunk = std::mem::replace(&mut self.pending, next);
        tx.send(chunk)
            .map_err(|_| std::io::Error::other("the file's hashing thread stopped"))
    }

    /// The SHA-256 of every byte written, as lowercase hex (every byte is in the file
    /// afterwards).
    pub(crate) fn finish_hash(&mut self) -> std::io::Result<String> {
        self.write_out()?;
        let stopped = || std::io::Error::other("the file's hashing thread stopped");
        let (Some(tx), Some(handle)) = (self.to_hasher.take(), self.hasher.take()) else {
            return Err(stopped());
        };
        if !self.pending.is_empty() {
            tx.send(std::mem::take(&mut self.pending))
                .map_err(|_| stopped())?;
        }
        drop(tx);
        let digest = handle.join().map_err(|_| stopped())?.finalize();
        Ok(scandaq_core::hex::hex_lower(&digest))
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Filled up to HASH_CHUNK exactly, never beyond: the buffers keep their one size.
        let take = buf.len().min(HASH_CHUNK - self.pending.len());
        self.pending.extend_from_slice(&buf[..take]);
        self.bytes += take as u64;
        if self.pending.len() == HASH_CHUNK {
            self.hand_to_hasher()?;
        }
        Ok(take)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.write_out()?;
        self.file.flush()
    }
}

/// Flushes the row groups already in the file to disk on a helper thread while the next ones
/// are encoded, so the commit's fsync finds little left to write (it was ~10 % of a singles
/// file's write time), then drops the file's clean pages from the page cache
/// (`POSIX_FADV_DONTNEED`): a run writes far more than it re-reads, the cache stays flat, and
/// the next writes reuse the freed pages — on the reference VM, writing into fresh page-cache
/// pages cost 2.2 s of kernel CPU per GB against 0.2 s for recycled ones (`dd`, 2 GB). At most
/// one flush runs; a row group finished meanwhile is marked pending and its flush starts at
/// the next [`BackgroundSync::tick`] or kick after the running one ends, so every row group is
/// on disk within one flush time plus one tick of its append.
pub(crate) struct BackgroundSync {
    /// A second handle on the file being written.
    file: File,
    running: Option<JoinHandle<std::io::Result<()>>>,
    /// Bytes appended since the running flush started (it may not cover them).
    pending: bool,
    /// The first error a flush met, reported at once by [`BackgroundSync::tick`] and by the
    /// commit.
    error: Option<std::io::Error>,
}

impl BackgroundSync {
    /// Flushes of `file` (a second handle is opened on it).
    pub(crate) fn new(file: &File) -> std::io::Result<Self> {
        Ok(Self {
            file: file.try_clone()?,
            running: None,
            pending: false,
            error: None,
        })
    }

    /// Starts a flush unless one is still running (then one starts at the next tick or kick
    /// after it).
    pub(crate) fn kick(&mut self) {
        if self.running.as_ref().is_some_and(|h| !h.is_finished()) {
            self.pending = true;
            return;
        }
        self.pending = false;
        self.wait();
        match self.file.try_clone() {
            Ok(file) => {
                self.running = Some(std::thread::spawn(move || {
                    file.sync_data()?;
                    // Advice only: a kernel that ignores it changes nothing but memory use.
                    let _ = posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
                    Ok(())
                }))
            }
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    /// Starts the flush a kick left pending once the running one has ended; the first error
    /// any flush met so far (kept for the commit too).
    pub(crate) fn tick(&mut self) -> Result<(), &std::io::Error> {
        if self.pending {
            self.kick();
        } else if self.running.as_ref().is_some_and(|h| h.is_finished()) {
            self.wait();
        }
        self.error.as_ref().map_or(Ok(()), Err)
    }

    /// Whether every byte appended before the last kick has been flushed.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> bool {
        !self.pending && self.running.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits for the running flush, keeping its error (the first one counts).
    fn wait(&mut self) {
        if let Some(handle) = self.running.take() {
            let result = handle
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the flush thread panicked")));
            if let Err(e) = result {
                self.error.get_or_insert(e);
            }
        }
    }

    /// Waits for the running flush; the first error any flush met.
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        self.wait();
        if self.pending {
            self.kick();
            self.wait();
        }
        self.error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_sha256_of_the_bytes_in_the_file() {
        // Writes of odd sizes crossing several hashing chunks.
        hash_of_writes(&[1, 4095, HASH_CHUNK - 7, 3 * HASH_CHUNK + 11, 0, 17]);
        // Writes ending exactly on a chunk boundary, one byte short of it and one past it,
        // and more chunks than the queue and the recycled buffers hold.
        hash_of_writes(&[
            HASH_CHUNK,
            HASH_CHUNK - 1,
            1,
            HASH_CHUNK + 1,
            HASH_CHUNK - 1,
        ]);
        hash_of_writes(&[HASH_CHUNK - 1, 2, HASH_CHUNK - 1]);
        hash_of_writes(&[(HASH_QUEUE_CHUNKS + 5) * HASH_CHUNK, 1, HASH_CHUNK]);
    }

    /// Writes blocks of the given sizes through a [`HashingFile`]; its hash and byte count
    /// must be those of the file on disk.
    fn hash_of_writes(sizes: &[usize]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let mut f = HashingFile::new(File::create(&path).unwrap()).unwrap();
        let mut sync = BackgroundSync::new(f.file()).unwrap();
        let mut x = 1u64;
        for &n in sizes {
            let buf: Vec<u8> = (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 56) as u8
                })
                .collect();
            f.write_all(&buf).unwrap();
            // The chunks keep one size: the pending one is never grown past it.
            assert!(f.pending.len() < HASH_CHUNK);
            assert_eq!(f.pending.capacity(), HASH_CHUNK);
            // Flushed, every byte so far is in the file.
            if n % 2 == 1 {
                f.flush().unwrap();
                assert_eq!(std::fs::metadata(&path).unwrap().len(), f.bytes());
            }
            sync.kick();
        }
        sync.finish().unwrap();
        let bytes = f.bytes();
        let hash = f.finish_hash().unwrap();
        let content = std::fs::read(&path).unwrap();
        assert_eq!(bytes, content.len() as u64);
        let want = scandaq_core::hex::hex_lower(&Sha256::digest(&content));
        assert_eq!(hash, want);
    }
}
