//! A run's table written as a sequence of files, `NAME-00000.parquet`, `NAME-00001.parquet`,
//! ...: the singles, the prompt coincidences and the delayed coincidences each are one. A new
//! file starts when the open one reaches the run's [`Rotation`] size or age, and each file
//! committed while the run goes on is added to the manifest on disk at once, so a crash keeps
//! it on record.
//!
//! Why every long-lived table rotates: a Parquet writer holds every row group's metadata until
//! it writes the footer (about 2.3 KB per row group for the singles, 5 KB for the coincidence
//! tables), so one file per run made memory grow with the run (docs/tables.md).

use anyhow::Result;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use scandaq_sinks::{
    FileMetadata, FileRecord, Manifest, ParquetTableWriter, WriteOptions, table_file_name,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// File size at which a new file starts when no size is configured. A Parquet writer keeps
/// every row group's metadata in memory until it writes the footer (and glibc's arenas keep
/// the space around those long-lived pieces): 1 GiB files keep a one-pass replay of a 1.2 G-hit
/// file at 109 MB of peak RSS where 4 GiB files reached 144 MB (one file per coincidence table:
/// 164 MB), near the 79-89 MB of a 10-100 M-hit file (BENCHMARKS.md, session 16). 1 GiB is
/// also a size Parquet readers parallelise well over.
pub const DEFAULT_ROTATE_BYTES: u64 = 1 << 30;

/// When a run's tables start a new file (`singles-00001.parquet`, `coincidences-00001.parquet`,
/// ...), how often the open one is made durable, and how its pages are compressed. Each file
/// is committed (fsync + rename) as it closes and added to the manifest at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rotation {
    /// Start a new file once this many bytes are written ([`DEFAULT_ROTATE_BYTES`] when
    /// `None`).
    pub max_bytes: Option<u64>,
    /// Start a new file after this much wall-clock time, seconds.
    pub max_seconds: Option<f64>,
    /// Commit interval, seconds (1 s when `None`): every row is in a complete row group on
    /// disk (fdatasync started) within it, so a power cut or SIGKILL costs at most this much
    /// (docs/reliability.md).
    #[serde(default)]
    pub commit_interval_s: Option<f64>,
    /// Compression of the singles and coincidence tables.
    #[serde(default)]
    pub compression: scandaq_sinks::Compression,
}

impl Rotation {
    /// The commit interval.
    pub fn commit_interval(&self) -> Duration {
        self.commit_interval_s
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(scandaq_sinks::parquet_table::DEFAULT_COMMIT_INTERVAL, |s| {
                Duration::from_secs_f64(s.clamp(0.01, 3600.0))
            })
    }

    /// The size at which a file is cut.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.unwrap_or(DEFAULT_ROTATE_BYTES)
    }
}

/// Parses a commit interval (`1s`, `250ms`): at least 10 ms, at most an hour.
pub fn parse_commit_interval(text: &str) -> Result<f64> {
    let s = scandaq_core::units::parse_duration_s(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !(0.01..=3600.0).contains(&s) {
        anyhow::bail!("commit interval {text}: expected 10 ms .. 1 h");
    }
    Ok(s)
}

/// One table of a run, as a sequence of files.
pub struct RotatingTable {
    dir: PathBuf,
    /// The table's name, the files' prefix (`singles`, `coincidences`, `delayed`).
    name: &'static str,
    schema: SchemaRef,
    /// Layout of every file; its commit interval and compression are the rotation's.
    options: WriteOptions,
    metadata: FileMetadata,
    rotation: Rotation,
    next_index: u32,
    writer: Option<ParquetTableWriter>,
    opened: Instant,
    /// First and last time of the open file's rows (its `first_t_ps`, `last_t_ps`).
    range: Option<(i64, i64)>,
    committed: Vec<FileRecord>,
}

impl RotatingTable {
    /// Table `name` of the run in `dir`, laid out as `options` says (its compression and
    /// commit interval replaced by the rotation's). No file is open yet.
    pub fn new(
        dir: &Path,
        name: &'static str,
        schema: SchemaRef,
        options: WriteOptions,
        metadata: FileMetadata,
        rotation: Rotation,
    ) -> Self {
        let options = WriteOptions {
            commit_interval: Some(rotation.commit_interval()),
            compression: rotation.compression,
            ..options
        };
        Self {
            dir: dir.to_path_buf(),
            name,
            schema,
            options,
            metadata,
            rotation,
            next_index: 0,
            writer: None,
            opened: Instant::now(),
            range: None,
            committed: Vec::new(),
        }
    }

    /// The open file, created when there is none (so a run can create its first file before
    /// anything runs, and an unwritable directory fails at once).
    pub fn open(&mut self) -> Result<&mut ParquetTableWriter> {
        let writer = match self.writer.take() {
            Some(w) => w,
            None => {
                let w = ParquetTableWriter::create(
                    &self.dir,
                    &table_file_name(self.name, self.next_index),
                    self.schema.clone(),
                    &self.options,
                    self.metadata.clone(),
                )?;
                self.next_index += 1;
                self.opened = Instant::now();
                self.range = None;
                w
            }
        };
        Ok(self.writer.insert(writer))
    }

    /// Writes rows whose times run from `first` to `last`; commits the file when it is due.
    pub fn write(&mut self, record: &RecordBatch, first: i64, last: i64) -> Result<()> {
        self.open()?.write(record)?;
        self.range = Some(self.range.map_or((first, last), |(a, _)| (a, last)));
        let due = self
            .writer
            .as_ref()
            .is_some_and(|w| w.bytes_estimate() >= self.rotation.max_bytes())
            || self
                .rotation
                .max_seconds
                .is_some_and(|s| self.opened.elapsed().as_secs_f64() >= s);
        if due {
            self.commit(true)?;
        }
        Ok(())
    }

    /// Commits the open file (if any); `record_now` also adds it to the manifest on disk.
    pub fn commit(&mut self, record_now: bool) -> Result<()> {
        let Some(mut w) = self.writer.take() else {
            return Ok(());
        };
        if let Some((a, b)) = self.range {
            w.add_metadata("first_t_ps", a.to_string());
            w.add_metadata("last_t_ps", b.to_string());
        }
        let record = w.commit()?;
        if record_now {
            // Best effort: the final manifest lists every file anyway, and `recover` finds
            // the committed files a crash left unlisted.
            let _ = Manifest::record_file(&self.dir, &record);
        }
        self.committed.push(record);
        Ok(())
    }

    /// Keeps the commit interval with no rows arriving (see [`ParquetTableWriter::tick`]).
    pub fn tick(&mut self) -> Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.tick()?;
        }
        Ok(())
    }

    /// Bytes on disk: the committed files and what the open one has flushed.
    pub fn bytes(&self) -> u64 {
        self.committed.iter().map(|f| f.bytes).sum::<u64>()
            + self.writer.as_ref().map_or(0, |w| w.bytes_written())
    }

    /// Rows written: the committed files' and the open one's.
    pub fn rows(&self) -> u64 {
        self.committed.iter().map(|f| f.rows).sum::<u64>()
            + self.writer.as_ref().map_or(0, |w| w.rows())
    }

    /// Commits the open file and returns every committed file, in order.
    pub fn finish(mut self) -> Result<Vec<FileRecord>> {
        self.commit(false)?;
        Ok(self.committed)
    }

    /// The committed files, leaving the open one as it is (a sink that failed).
    pub fn into_committed(self) -> Vec<FileRecord> {
        self.committed
    }
}
