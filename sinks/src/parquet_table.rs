//! One Parquet file written atomically: rows go to `NAME.inprogress`, which is fsynced and
//! renamed to `NAME` on commit; the SHA-256 and size are computed while writing.
//!
//! Row groups are cut by rows or by buffered bytes, whichever comes first. Each is encoded and
//! compressed with parquet's `ArrowColumnWriter` API, or, for the flat, non-nullable primitive
//! columns every scandaq table has, straight from the value buffers by parquet's column
//! writer (`direct_chunk`, same bytes, without the Arrow writer's per-value index list and
//! gathered copy; parallel row groups only): with `parallel_row_groups`, whole row
//! groups are handed to rayon tasks (one per core in flight plus one queued, so the cores
//! share the work evenly whatever the columns cost, counted over all the tables the process
//! writes by an [`EncodeBudget`]) and their column chunks spliced into the file in order;
//! otherwise the open row group's columns are encoded batch by batch, in parallel
//! (`parallel_columns`) or one after the other.
//!
//! **Commit interval** ([`WriteOptions::commit_interval`], default 1 s): a power cut or SIGKILL
//! must cost at most that much. A row group is also cut once its oldest row has waited
//! [`CUT_FRACTION`] of the interval, whatever its size; row groups being encoded are appended
//! as soon as they are ready (and waited for once they are [`APPEND_FRACTION`] of the interval
//! old); every append is followed by a flush of the writer's buffer and a background
//! fdatasync. Each appended row group is therefore complete on disk — every column chunk's
//! pages, with the dictionary pages `scandaq recover` uses to find its boundaries — within the
//! interval of its rows reaching the writer. The writer checks the clock in
//! [`ParquetTableWriter::write`] and [`ParquetTableWriter::tick`]; a sink that may go quiet
//! calls `tick` a few times per interval.

use crate::direct_chunk::{DirectColumns, EncodedChunk};
use crate::durable_file::{BackgroundSync, HashingFile, copy_io_error, sync_dir};
use crate::error::SinkError;
use crate::manifest::FileRecord;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::{Compression as PageCodec, Encoding, ZstdLevel};
use parquet::errors::Result as ParquetResult;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;
use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// Key-value metadata written into a Parquet file's footer (run id, units, calibration, ...).
pub type FileMetadata = Vec<(String, String)>;

/// Default commit interval: what a power cut may cost at most.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// A row group is cut once its oldest row has waited this fraction of the commit interval
/// (the rest is left for the stages before the writer, the encoding and the fdatasync).
pub const CUT_FRACTION: f64 = 0.6;
/// A row group being encoded is waited for once it has been in flight this fraction of the
/// commit interval.
pub const APPEND_FRACTION: f64 = 0.2;

/// How a table's columns are laid out in the file.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// Page compression.
    pub compression: Compression,
    /// Rows per row group (at most).
    pub row_group_rows: usize,
    /// Buffered Arrow bytes per row group (at most): wide rows cut row groups earlier.
    pub row_group_bytes: usize,
    /// Encode a row group's columns in parallel (rayon); false = one after the other.
    pub parallel_columns: bool,
    /// Encode whole row groups as rayon tasks, several in flight (the fastest on a few cores;
    /// costs up to one row group of buffered rows per core, plus one).
    pub parallel_row_groups: bool,
    /// Values the column writers take at a time; page limits (1 MiB, [`Self::page_rows`]) are
    /// checked between them. Parquet's default is 1024; narrow tables use more (the
    /// coincidences 20 000, pages of 20 000 rows as pyarrow writes; the singles 16 384), which
    /// cut the sequential encoder's CPU by about 10 %. Keep it small for wide rows (blobs),
    /// where it bounds page bytes.
    pub write_batch_rows: usize,
    /// Rows per data page at most (parquet's default, 20 000, when `None`). A page is cut once
    /// this many rows are buffered, checked after each batch of `write_batch_rows` values, so
    /// set both alike for pages of exactly this many rows. Page-sized buffers (the encoded
    /// page, its compressed copy, zstd's workspace sized for it) are the largest allocations
    /// the encoding repeats; see [`crate::singles::write_options`].
    pub page_rows: Option<usize>,
    /// Columns written with DELTA_BINARY_PACKED (monotone integers such as times).
    pub delta_columns: Vec<&'static str>,
    /// Columns written with BYTE_STREAM_SPLIT (floats).
    pub byte_stream_split_columns: Vec<&'static str>,
    /// Columns written with dictionary encoding (few distinct values, e.g. channel ids). All
    /// others are plain: interning high-cardinality values was the sink's largest cost (20 % of
    /// a replay's CPU) for little size gain under zstd.
    pub dictionary_columns: Vec<&'static str>,
    /// Every row is in a complete row group, appended to the file and flushed to disk, within
    /// this time of reaching the writer (`None`: row groups are cut by size only). See the
    /// module doc.
    pub commit_interval: Option<Duration>,
    /// Row groups being encoded, counted over the tables sharing it (parallel row groups).
    pub encode_budget: Arc<EncodeBudget>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Zstd(1),
            row_group_rows: 1 << 20,
            row_group_bytes: 128 << 20,
            parallel_columns: true,
            parallel_row_groups: true,
            write_batch_rows: 1024,
            page_rows: None,
            delta_columns: Vec::new(),
            byte_stream_split_columns: Vec::new(),
            dictionary_columns: Vec::new(),
            commit_interval: Some(DEFAULT_COMMIT_INTERVAL),
            encode_budget: EncodeBudget::shared(),
        }
    }
}

/// Page compression of a table. The singles and coincidence tables take it from
/// `--compression` / `[run] compression` ([`Compression::TABLES_DEFAULT`], LZ4_RAW, unless
/// set); other tables use zstd level 1. Measured trade-off (BENCHMARKS.md, "Codecs and
/// encodings"): against zstd 1, LZ4_RAW costs 6-8 % more bytes for about 16 % less encoding
/// CPU; no compression costs 12-76 % more bytes; higher zstd levels gain well under 1 % of
/// size for 2-3x the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Compression {
    /// Pages stored as they are (`none`).
    None,
    /// LZ4_RAW (a plain LZ4 block per page; `lz4`).
    Lz4Raw,
    /// zstd at a level from 1 (the fastest) to 22 (`zstd`, `zstd:N`).
    Zstd(i32),
}

impl Compression {
    /// What the singles and coincidence tables use unless told otherwise: LZ4_RAW, the
    /// cheapest codec within 1.1x of zstd 1's file size on these tables.
    pub const TABLES_DEFAULT: Compression = Compression::Lz4Raw;

    /// The same codec as parquet's page codec.
    fn page_codec(self) -> Result<PageCodec, String> {
        Ok(match self {
            Compression::None => PageCodec::UNCOMPRESSED,
            Compression::Lz4Raw => PageCodec::LZ4_RAW,
            Compression::Zstd(level) => {
                PageCodec::ZSTD(ZstdLevel::try_new(level).map_err(|e| e.to_string())?)
            }
        })
    }
}

impl Default for Compression {
    fn default() -> Self {
        Self::TABLES_DEFAULT
    }
}

impl std::fmt::Display for Compression {
    /// The text [`Compression::from_str`] reads back: `none`, `lz4` or `zstd:N`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Lz4Raw => f.write_str("lz4"),
            Compression::Zstd(level) => write!(f, "zstd:{level}"),
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    /// `lz4`, `zstd` (level 1), `zstd:N` (N in 1..=22) or `none`.
    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text.trim() {
            "none" => Compression::None,
            "lz4" | "lz4_raw" => Compression::Lz4Raw,
            "zstd" => Compression::Zstd(1),
            other => match other.strip_prefix("zstd:").map(str::parse::<i32>) {
                Some(Ok(level)) if (1..=22).contains(&level) => Compression::Zstd(level),
                _ => {
                    return Err(format!(
                        "compression {text:?}: expected lz4 (the default), zstd (level 1), \
                         zstd:N (N from 1 to 22) or none"
                    ));
                }
            },
        })
    }
}

impl TryFrom<String> for Compression {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Compression> for String {
    fn from(c: Compression) -> String {
        c.to_string()
    }
}

/// An open Parquet file being written.
pub struct ParquetTableWriter {
    final_path: PathBuf,
    tmp_path: PathBuf,
    writer: SerializedFileWriter<HashingFile>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// The columns whose row groups are encoded from their value buffers, not by the Arrow
    /// writer (parallel row groups only; `None`: every column by the Arrow writer).
    direct: Option<Arc<DirectColumns>>,
    /// Column writers of the open row group (created at its first rows).
    open: Option<Vec<ArrowColumnWriter>>,
    pending_rows: usize,
    pending_bytes: usize,
    row_group_rows: usize,
    row_group_bytes: usize,
    row_groups: usize,
    parallel_columns: bool,
    parallel_row_groups: bool,
    /// Rows of the row group being gathered (parallel_row_groups).
    gathered: Vec<RecordBatch>,
    /// Row groups being encoded, oldest first; each delivers its column chunks.
    in_flight: VecDeque<InFlight>,
    /// Counts row groups in flight over the tables sharing it.
    encode_budget: Arc<EncodeBudget>,
    /// Cut the open row group once its oldest row is this old.
    cut_after: Option<Duration>,
    /// Wait for a row group in flight once it is this old.
    append_after: Option<Duration>,
    /// When the oldest row of the open row group arrived.
    pending_since: Option<Instant>,
    /// Rows in row groups already in the file.
    appended_rows: u64,
    /// Row groups handed out for encoding (their index in the file).
    launched: usize,
    rows: u64,
    background_sync: BackgroundSync,
}

/// A row group handed to a rayon task.
struct InFlight {
    rows: usize,
    launched: Instant,
    result: Receiver<ParquetResult<Vec<EncodedChunk>>>,
    /// Held until the row group is appended (or the writer is dropped).
    _slot: EncodeSlot,
}

/// Row groups launched for encoding and not yet appended, over the tables that share it (by
/// default every table of the process, [`EncodeBudget::shared`]): their rows and column
/// chunks are the sinks' largest memory. A replay writing singles, prompts and delayed had up
/// to one per core plus one in flight per table, and how many it reached at its peak varied
/// from run to run (so its peak RSS did, with the run's length); a [`ParquetTableWriter`] now
/// waits for its own oldest before it launches beyond [`EncodeBudget::allowed`] across the
/// tables, keeping only the one it just launched.
#[derive(Debug, Default)]
pub struct EncodeBudget {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

impl EncodeBudget {
    /// The process's budget, shared by every table that is not given its own.
    pub fn shared() -> Arc<Self> {
        static SHARED: LazyLock<Arc<EncodeBudget>> = LazyLock::new(Arc::default);
        SHARED.clone()
    }

    /// Row groups that may be in flight across the tables: one per core plus one queued.
    pub fn allowed() -> usize {
        rayon::current_num_threads().max(1) + 1
    }

    /// Row groups in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The most row groups that were in flight at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn take(self: &Arc<Self>) -> EncodeSlot {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(now, Ordering::Relaxed);
        EncodeSlot(self.clone())
    }
}

/// One row group counted in an [`EncodeBudget`] while it lives.
struct EncodeSlot(Arc<EncodeBudget>);

impl Drop for EncodeSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Encodes `batches` into `writers` (one per leaf column, schema order) and closes them; the
/// columns of `direct` are encoded from their value buffers instead (their writer unused).
fn encode_row_group(
    writers: Vec<ArrowColumnWriter>,
    batches: &[RecordBatch],
    schema: &SchemaRef,
    parallel_columns: bool,
    direct: Option<&DirectColumns>,
) -> ParquetResult<Vec<EncodedChunk>> {
    let fields = schema.fields();
    let encode = |(i, mut w): (usize, ArrowColumnWriter)| -> ParquetResult<EncodedChunk> {
        if let Some(d) = direct.filter(|d| d.has(i)) {
            return d.encode(i, batches.iter().map(|rows| rows.column(i).as_ref()));
        }
        for rows in batches {
            for leaf in compute_leaves(&fields[i], rows.column(i))? {
                w.write(&leaf)?;
            }
        }
        w.close().map(EncodedChunk::Arrow)
    };
    if parallel_columns {
        writers.into_par_iter().enumerate().map(encode).collect()
    } else {
        writers.into_iter().enumerate().map(encode).collect()
    }
}

/// Whether a Parquet error wraps an I/O error of a full disk.
fn io_error_is_disk_full(e: &parquet::errors::ParquetError) -> bool {
    match e {
        parquet::errors::ParquetError::External(inner) => inner
            .downcast_ref::<std::io::Error>()
            .is_some_and(crate::error::is_disk_full),
        _ => false,
    }
}

fn parquet_err(path: &Path, e: impl std::fmt::Display) -> SinkError {
    SinkError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl ParquetTableWriter {
    /// Creates `dir/file_name.inprogress` for rows of `schema`, with `metadata` as key-value
    /// metadata (more can be added before commit).
    pub fn create(
        dir: &Path,
        file_name: &str,
        schema: SchemaRef,
        options: &WriteOptions,
        metadata: FileMetadata,
    ) -> Result<Self, SinkError> {
        let final_path = dir.join(file_name);
        let tmp_path = dir.join(format!("{file_name}.inprogress"));
        // Checked before the file exists: a refused codec leaves nothing for `recover` to find.
        let compression = options
            .compression
            .page_codec()
            .map_err(|e| parquet_err(&final_path, e))?;
        let file = File::create(&tmp_path).map_err(|e| SinkError::io("creating", &tmp_path, e))?;
        let mut props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(options.row_group_rows))
            .set_dictionary_enabled(false)
            // Min/max per column chunk (row group), not per page, and no offset index: a writer
            // holds every page's index entries until the footer, ~10 MiB per GB of singles,
            // which made a replay's memory grow with its file. Readers prune by row group
            // (256 k singles, 128 k coincidences), which DuckDB and pyarrow use anyway.
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_offset_index_disabled(true)
            .set_write_batch_size(options.write_batch_rows.max(1))
            .set_data_page_row_count_limit(options.page_rows.map_or(
                parquet::file::properties::DEFAULT_DATA_PAGE_ROW_COUNT_LIMIT,
                |rows| rows.max(1),
            ))
            .set_created_by(format!("scandaq {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(
                metadata
                    .into_iter()
                    .map(|(k, v)| KeyValue::new(k, v))
                    .collect(),
            ));
        for col in &options.delta_columns {
            props = props
                .set_column_dictionary_enabled(ColumnPath::from(*col), false)
                .set_column_encoding(ColumnPath::from(*col), Encoding::DELTA_BINARY_PACKED);
        }
        for col in &options.dictionary_columns {
            props = props.set_column_dictionary_enabled(ColumnPath::from(*col), true);
        }
        for col in &options.byte_stream_split_columns {
            props = props
                .set_column_dictionary_enabled(ColumnPath::from(*col), false)
                .set_column_encoding(ColumnPath::from(*col), Encoding::BYTE_STREAM_SPLIT);
        }
        let background_sync = BackgroundSync::new(&file)
            .map_err(|e| SinkError::io("opening a second handle on", &tmp_path, e))?;
        let sink = HashingFile::new(file)
            .map_err(|e| SinkError::io("starting the hashing thread for", &tmp_path, e))?;
        let (mut writer, factory) = ArrowWriter::try_new(sink, schema.clone(), Some(props.build()))
            .and_then(|w| w.into_serialized_writer())
            .map_err(|e| parquet_err(&final_path, e))?;
        // The magic on disk from the start: an interrupted file is recognisably Parquet.
        writer
            .flush()
            .map_err(|e| SinkError::io("writing", &tmp_path, e))?;
        let direct = options
            .parallel_row_groups
            .then(|| Arc::new(DirectColumns::of(&writer, &schema)));
        Ok(Self {
            final_path,
            tmp_path,
            writer,
            factory,
            schema,
            direct,
            open: None,
            pending_rows: 0,
            pending_bytes: 0,
            row_group_rows: options.row_group_rows.max(1),
            row_group_bytes: options.row_group_bytes.max(1),
            row_groups: 0,
            parallel_columns: options.parallel_columns,
            parallel_row_groups: options.parallel_row_groups,
            gathered: Vec::new(),
            in_flight: VecDeque::new(),
            encode_budget: options.encode_budget.clone(),
            cut_after: options.commit_interval.map(|i| i.mul_f64(CUT_FRACTION)),
            append_after: options.commit_interval.map(|i| i.mul_f64(APPEND_FRACTION)),
            pending_since: None,
            appended_rows: 0,
            launched: 0,
            rows: 0,
            background_sync,
        })
    }

    /// Appends a batch of rows (buffered until a row group is full).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(parquet_err(
                &self.final_path,
                format!(
                    "batch schema {:?} does not match the table's {:?}",
                    batch.schema().fields(),
                    self.schema.fields()
                ),
            ));
        }
        if batch.num_rows() > 0 && self.pending_rows == 0 {
            self.pending_since = Some(Instant::now());
        }
        let mut batch = batch.clone();
        let bytes_per_row = (batch.get_array_memory_size() / batch.num_rows().max(1)).max(1);
        while batch.num_rows() > 0 {
            let room_rows = self.row_group_rows - self.pending_rows;
            let room_bytes = self.row_group_bytes.saturating_sub(self.pending_bytes);
            let take = room_rows
                .min((room_bytes / bytes_per_row).max(1))
                .min(batch.num_rows());
            let head = batch.slice(0, take);
            batch = batch.slice(take, batch.num_rows() - take);
            self.pending_bytes += take * bytes_per_row;
            self.pending_rows += take;
            self.rows += take as u64;
            if self.parallel_row_groups {
                self.gathered.push(head);
            } else {
                self.encode(&head)?;
            }
            if self.pending_rows >= self.row_group_rows
                || self.pending_bytes >= self.row_group_bytes
            {
                self.cut()?;
                if batch.num_rows() > 0 {
                    self.pending_since = Some(Instant::now());
                }
            }
        }
        self.tick()
    }

    /// Ends the open row group: launched for encoding (parallel row groups) or closed and
    /// appended.
    fn cut(&mut self) -> Result<(), SinkError> {
        self.pending_since = None;
        if self.parallel_row_groups {
            self.launch_row_group()
        } else {
            self.flush_row_group()
        }
    }

    /// Keeps the commit interval's promise: cuts the open row group when its oldest row has
    /// waited long enough, appends every encoded row group that is ready (waiting for those
    /// in flight too long), and starts the fdatasync of what was appended. Call it a few times
    /// per commit interval when no rows arrive (`write` calls it too). An error of an earlier
    /// background flush (a full disk) is reported here, at once.
    pub fn tick(&mut self) -> Result<(), SinkError> {
        let now = Instant::now();
        if let (Some(since), Some(after)) = (self.pending_since, self.cut_after)
            && self.pending_rows > 0
            && now.duration_since(since) >= after
        {
            self.cut()?;
        }
        while let Some(oldest) = self.in_flight.front() {
            let overdue = self
                .append_after
                .is_some_and(|a| now.duration_since(oldest.launched) >= a);
            let chunks = if overdue {
                oldest.result.recv().map_err(|_| ())
            } else {
                match oldest.result.try_recv() {
                    Ok(c) => Ok(c),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => Err(()),
                }
            };
            let rows = oldest.rows;
            self.in_flight.pop_front();
            self.appended_rows += rows as u64;
            let chunks = chunks
                .map_err(|_| parquet_err(&self.final_path, "a row group's encoding task died"))?
                .map_err(|e| self.failed("encoding a row group of", e))?;
            self.append_chunks(chunks)?;
        }
        let tmp_path = &self.tmp_path;
        self.background_sync
            .tick()
            .map_err(|e| SinkError::io("syncing", tmp_path, copy_io_error(e)))
    }

    /// An error of the Parquet layer: [`SinkError::DiskFull`] when the file's last write
    /// failed on a full disk.
    fn failed(&self, action: &'static str, e: parquet::errors::ParquetError) -> SinkError {
        if self.writer.inner().saw_disk_full() || io_error_is_disk_full(&e) {
            SinkError::disk_full(action, &self.tmp_path, None)
        } else {
            parquet_err(&self.final_path, e)
        }
    }

    /// Encodes `rows` into the open row group's column writers, every column in parallel.
    fn encode(&mut self, rows: &RecordBatch) -> Result<(), SinkError> {
        let path = self.final_path.clone();
        let writers = match self.open.as_mut() {
            Some(w) => w,
            None => self.open.insert(
                self.factory
                    .create_column_writers(self.row_groups)
                    .map_err(|e| parquet_err(&path, e))?,
            ),
        };
        let fields = self.schema.fields();
        // Flat (non-nested) schemas: one leaf writer per field, in schema order.
        let encode = |(i, w): (usize, &mut ArrowColumnWriter)| -> ParquetResult<()> {
            for leaf in compute_leaves(&fields[i], rows.column(i))? {
                w.write(&leaf)?;
            }
            Ok(())
        };
        if self.parallel_columns {
            writers.par_iter_mut().enumerate().try_for_each(encode)
        } else {
            writers.iter_mut().enumerate().try_for_each(encode)
        }
        .map_err(|e| parquet_err(&path, e))
    }

    /// Hands the gathered rows to a rayon task as one row group; appends finished row groups
    /// (oldest first) while more than one per core, plus one, are in flight.
    fn launch_row_group(&mut self) -> Result<(), SinkError> {
        let batches = std::mem::take(&mut self.gathered);
        let rows = self.pending_rows;
        self.pending_rows = 0;
        self.pending_bytes = 0;
        if batches.is_empty() {
            return Ok(());
        }
        // One row group queued beyond the pool's threads, so a worker that finishes finds the
        // next one ready while this thread splices and hashes the oldest; as many over all
        // the tables sharing the budget, though a table always has one in flight.
        let allowed = EncodeBudget::allowed();
        while self.in_flight.len() >= allowed
            || (!self.in_flight.is_empty() && self.encode_budget.in_flight() >= allowed)
        {
            self.append_oldest()?;
        }
        let writers = self
            .factory
            .create_column_writers(self.launched)
            .map_err(|e| parquet_err(&self.final_path, e))?;
        self.launched += 1;
        let slot = self.encode_budget.take();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let schema = self.schema.clone();
        let parallel_columns = self.parallel_columns;
        let direct = self.direct.clone();
        rayon::spawn(move || {
            let _ = tx.send(encode_row_group(
                writers,
                &batches,
                &schema,
                parallel_columns,
                direct.as_deref(),
            ));
        });
        self.in_flight.push_back(InFlight {
            rows,
            launched: Instant::now(),
            result: rx,
            _slot: slot,
        });
        Ok(())
    }

    /// Waits for the oldest row group in flight and splices it into the file.
    fn append_oldest(&mut self) -> Result<(), SinkError> {
        let Some(InFlight {
            rows,
            result,
            _slot,
            ..
        }) = self.in_flight.pop_front()
        else {
            return Ok(());
        };
        self.appended_rows += rows as u64;
        let chunks = result
            .recv()
            .map_err(|_| parquet_err(&self.final_path, "a row group's encoding task died"))?
            .map_err(|e| self.failed("encoding a row group of", e))?;
        self.append_chunks(chunks)
    }

    /// Appends a row group's column chunks to the file, pushes them out of the writer's
    /// buffer and the hashing file's into the file (so the row group is whole on disk, not up
    /// to 256 KiB short) and starts their fdatasync.
    fn append_chunks(&mut self, chunks: Vec<EncodedChunk>) -> Result<(), SinkError> {
        let appended = (|| -> ParquetResult<()> {
            let mut row_group = self.writer.next_row_group()?;
            for chunk in chunks {
                chunk.append_to_row_group(&mut row_group)?;
            }
            row_group.close()?;
            self.writer.flush()?;
            Ok(())
        })();
        appended.map_err(|e| self.failed("writing", e))?;
        self.row_groups += 1;
        self.background_sync.kick();
        Ok(())
    }

    /// Closes the open row group: its column chunks (closed in parallel) go into the file.
    /// With parallel row groups: launches the gathered rows and waits for every row group.
    fn flush_row_group(&mut self) -> Result<(), SinkError> {
        if self.parallel_row_groups {
            self.launch_row_group()?;
            while !self.in_flight.is_empty() {
                self.append_oldest()?;
            }
            return Ok(());
        }
        let Some(writers) = self.open.take() else {
            return Ok(());
        };
        let path = self.final_path.clone();
        let close = |w: ArrowColumnWriter| w.close().map(EncodedChunk::Arrow);
        let chunks: Vec<EncodedChunk> = if self.parallel_columns {
            writers
                .into_par_iter()
                .map(close)
                .collect::<ParquetResult<Vec<_>>>()
        } else {
            writers
                .into_iter()
                .map(close)
                .collect::<ParquetResult<Vec<_>>>()
        }
        .map_err(|e| parquet_err(&path, e))?;
        self.pending_since = None;
        self.append_chunks(chunks)?;
        self.launched = self.row_groups;
        self.appended_rows += self.pending_rows as u64;
        self.pending_rows = 0;
        self.pending_bytes = 0;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Rows in row groups appended to the file (complete on disk, or being synced).
    pub fn appended_rows(&self) -> u64 {
        self.appended_rows
    }

    /// Bytes flushed to the file so far (whole row groups; the open one is in memory).
    pub fn bytes_written(&self) -> u64 {
        self.writer.bytes_written() as u64
    }

    /// The file's size once every row given so far is written: the bytes flushed plus the
    /// rows still buffered or being encoded, at the compressed bytes per row seen so far (8
    /// before the first row group). What size-based rotation compares with its limit.
    pub fn bytes_estimate(&self) -> u64 {
        let written = self.bytes_written();
        let per_row = if self.appended_rows > 0 {
            written as f64 / self.appended_rows as f64
        } else {
            8.0
        };
        written + ((self.rows - self.appended_rows) as f64 * per_row) as u64
    }

    /// Adds a key-value metadata entry (written with the footer).
    pub fn add_metadata(&mut self, key: &str, value: String) {
        self.writer
            .append_key_value_metadata(KeyValue::new(key.to_string(), value));
    }

    /// Writes the footer, fsyncs, renames `.inprogress` to the final name and returns the
    /// file's record (name relative to its directory, rows, bytes, sha256).
    pub fn commit(mut self) -> Result<FileRecord, SinkError> {
        self.flush_row_group()?;
        let Self {
            final_path,
            tmp_path,
            mut writer,
            rows,
            background_sync,
            ..
        } = self;
        // The footer: written and pushed out of the writer's buffer (it may be the write that
        // finds the disk full).
        if let Err(e) = writer.finish() {
            return Err(
                if writer.inner().saw_disk_full() || io_error_is_disk_full(&e) {
                    SinkError::disk_full("writing the footer of", &tmp_path, None)
                } else {
                    parquet_err(&final_path, e)
                },
            );
        }
        background_sync
            .finish()
            .map_err(|e| SinkError::io("syncing", &tmp_path, e))?;
        // The hashing thread catches up while the file syncs.
        let sink = writer.inner_mut();
        sink.file()
            .sync_all()
            .map_err(|e| SinkError::io("syncing", &tmp_path, e))?;
        let bytes = sink.bytes();
        let sha256 = sink
            .finish_hash()
            .map_err(|e| SinkError::io("hashing", &tmp_path, e))?;
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
            rows,
            bytes,
            sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Int64Type};
    use arrow_array::{Float32Array, Int64Array};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use std::time::{Duration, Instant};

    /// Columns of every type the direct encoding takes, with values of `seed`: a rising time,
    /// few channel ids, small flags, random floats (NaN among them) and a nullable column
    /// with nulls, which keeps the Arrow writer.
    fn mixed_batch(schema: &SchemaRef, rows: usize, seed: u64) -> RecordBatch {
        use arrow_array::{
            ArrayRef, Float64Array, Int32Array, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
        };
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let r: Vec<u64> = (0..rows).map(|_| next()).collect();
        let mut t = seed as i64 * 1_000_000;
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| -> ArrayRef {
                match (f.name().as_str(), f.data_type()) {
                    ("maybe", _) => Arc::new(Int64Array::from_iter(
                        r.iter().map(|&v| (v % 5 != 0).then_some(v as i64 % 1000)),
                    )),
                    (_, DataType::Int64) => {
                        Arc::new(Int64Array::from_iter_values(r.iter().map(|&v| {
                            t += (v % 40_000) as i64;
                            t
                        })))
                    }
                    (_, DataType::UInt64) => {
                        Arc::new(UInt64Array::from_iter_values(r.iter().map(|&v| v >> 3)))
                    }
                    (_, DataType::Int32) => Arc::new(Int32Array::from_iter_values(
                        r.iter().map(|&v| (v >> 40) as i32 - (1 << 22)),
                    )),
                    (_, DataType::UInt32) => Arc::new(UInt32Array::from_iter_values(
                        r.iter()
                            .map(|&v| [7, 1 << 31, 3, u32::MAX][(v >> 20) as usize % 4]),
                    )),
                    (_, DataType::UInt16) => Arc::new(UInt16Array::from_iter_values(
                        r.iter().map(|&v| (v >> 50) as u16 % 9),
                    )),
                    (_, DataType::UInt8) => Arc::new(UInt8Array::from_iter_values(
                        r.iter().map(|&v| (v >> 33) as u8),
                    )),
                    (_, DataType::Float32) => {
                        Arc::new(Float32Array::from_iter_values(r.iter().map(|&v| {
                            if v % 97 == 0 {
                                f32::NAN
                            } else {
                                (v >> 40) as f32 * 0.01
                            }
                        })))
                    }
                    (_, DataType::Float64) => Arc::new(Float64Array::from_iter_values(
                        r.iter().map(|&v| (v >> 11) as f64 * 1e-3),
                    )),
                    (name, other) => panic!("{name}: no test values for {other}"),
                }
            })
            .collect();
        RecordBatch::try_new(schema.clone(), columns).unwrap()
    }

    /// The bytes of a committed file of `batches` (each sliced in two, so that arrays with
    /// offsets are written too), with the direct encoding on or off.
    fn file_bytes(
        schema: &SchemaRef,
        options: &WriteOptions,
        batches: &[RecordBatch],
        direct: bool,
    ) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            ParquetTableWriter::create(dir.path(), "t.parquet", schema.clone(), options, vec![])
                .unwrap();
        assert_eq!(w.direct.is_some(), options.parallel_row_groups);
        if !direct {
            w.direct = None;
        }
        for b in batches {
            let half = b.num_rows() / 3;
            w.write(&b.slice(0, half)).unwrap();
            w.write(&b.slice(half, b.num_rows() - half)).unwrap();
        }
        let record = w.commit().unwrap();
        std::fs::read(dir.path().join(record.path)).unwrap()
    }

    /// The columns written from their value buffers give the file the Arrow writer gives,
    /// byte for byte: every supported type, under each codec, with delta, dictionary and
    /// byte-stream-split encodings, several pages and row groups, and a nullable column (with
    /// nulls) beside them that stays with the Arrow writer; also the singles (every optional
    /// column) and coincidence tables with their own options.
    #[test]
    fn direct_columns_write_the_same_file_as_arrows_writer() {
        let mixed = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Int64, false),
            Field::new("id", DataType::UInt64, false),
            Field::new("ch", DataType::UInt32, false),
            Field::new("e", DataType::Float32, false),
            Field::new("flags", DataType::UInt16, false),
            Field::new("tac", DataType::UInt8, false),
            Field::new("i", DataType::Int32, false),
            Field::new("d", DataType::Float64, false),
            Field::new("maybe", DataType::Int64, true),
        ]));
        let mut cases = vec![];
        for compression in [Compression::Lz4Raw, Compression::Zstd(1), Compression::None] {
            let options = WriteOptions {
                compression,
                row_group_rows: 5_000,
                write_batch_rows: 700,
                page_rows: Some(1_400),
                delta_columns: vec!["t", "id"],
                byte_stream_split_columns: vec!["e"],
                dictionary_columns: vec!["ch", "tac"],
                commit_interval: None,
                ..WriteOptions::default()
            };
            cases.push((mixed.clone(), options));
        }
        let singles = crate::singles::schema_with(crate::singles::SinglesColumns {
            positions: true,
            photons: true,
            raw: true,
        });
        cases.push((singles, crate::singles::write_options()));
        cases.push((
            crate::coincidences::schema(),
            crate::coincidences::write_options(),
        ));
        for (schema, options) in cases {
            // Several row groups whatever the table's own size.
            let options = WriteOptions {
                commit_interval: None,
                row_group_rows: options.row_group_rows.min(8_000),
                ..options
            };
            let batches: Vec<RecordBatch> = (1..6)
                .map(|seed| mixed_batch(&schema, 4_000 + 997 * seed as usize, seed))
                .collect();
            let direct = file_bytes(&schema, &options, &batches, true);
            let arrow = file_bytes(&schema, &options, &batches, false);
            assert!(
                direct == arrow,
                "{:?} / {:?}: the files differ",
                schema.fields(),
                options.compression
            );
            let reader = SerializedFileReader::new(bytes::Bytes::from(direct)).unwrap();
            assert!(reader.metadata().num_row_groups() >= 2);
        }
    }

    /// Every codec text reads back to itself, through `FromStr`/`Display` and through serde;
    /// wrong texts are refused with the accepted forms named.
    #[test]
    fn compression_texts_read_back_and_wrong_ones_name_the_choices() {
        for (text, codec) in [
            ("lz4", Compression::Lz4Raw),
            ("lz4_raw", Compression::Lz4Raw),
            ("zstd", Compression::Zstd(1)),
            ("zstd:7", Compression::Zstd(7)),
            (" none ", Compression::None),
        ] {
            let parsed: Compression = text.parse().unwrap();
            assert_eq!(parsed, codec, "{text}");
            assert_eq!(codec.to_string().parse::<Compression>().unwrap(), codec);
            let json = serde_json::to_string(&codec).unwrap();
            assert_eq!(serde_json::from_str::<Compression>(&json).unwrap(), codec);
        }
        assert_eq!(Compression::default(), Compression::Lz4Raw);
        for bad in ["zstd:0", "zstd:23", "lz5", "gzip", ""] {
            let e = bad.parse::<Compression>().unwrap_err();
            assert!(e.contains("lz4") && e.contains("zstd:N"), "{bad}: {e}");
        }
        assert!(serde_json::from_str::<Compression>("\"zstd:99\"").is_err());
        // A level built in code rather than parsed is refused too, before any file exists.
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Int64, false)]));
        let options = WriteOptions {
            compression: Compression::Zstd(99),
            ..WriteOptions::default()
        };
        assert!(
            ParquetTableWriter::create(dir.path(), "x.parquet", schema, &options, vec![]).is_err()
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    fn batch(schema: &SchemaRef, start: i64, n: usize) -> RecordBatch {
        let t: Vec<i64> = (0..n as i64).map(|i| start + 3 * i).collect();
        let e: Vec<f32> = t.iter().map(|&x| (x % 1000) as f32 * 0.5).collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(t)),
                Arc::new(Float32Array::from(e)),
            ],
        )
        .unwrap()
    }

    /// Three tables written at once while the pool's threads are busy, so the row groups they
    /// launch wait in flight: over the three they stay within the shared budget (each table
    /// may keep the one it just launched), where each alone would hold one per core plus one;
    /// every slot is given back once the files are committed.
    #[test]
    fn tables_sharing_a_budget_keep_their_row_groups_in_flight_within_it() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("t_ps", DataType::Int64, false),
            Field::new("energy_kev", DataType::Float32, false),
        ]));
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(EncodeBudget::default());
        for _ in 0..rayon::current_num_threads() {
            rayon::spawn(|| std::thread::sleep(Duration::from_millis(100)));
        }
        let tables = 3;
        std::thread::scope(|scope| {
            for k in 0..tables {
                let (schema, budget, dir) = (schema.clone(), budget.clone(), dir.path());
                scope.spawn(move || {
                    let options = WriteOptions {
                        row_group_rows: 1000,
                        encode_budget: budget,
                        ..WriteOptions::default()
                    };
                    let name = format!("t{k}.parquet");
                    let mut w =
                        ParquetTableWriter::create(dir, &name, schema.clone(), &options, vec![])
                            .unwrap();
                    for g in 0..10 {
                        w.write(&batch(&schema, g * 3000, 1000)).unwrap();
                    }
                    assert_eq!(w.commit().unwrap().rows, 10_000);
                });
            }
        });
        let allowed = EncodeBudget::allowed();
        assert!(
            budget.peak() < allowed + tables,
            "{} row groups in flight at once; allowed {allowed} over {tables} tables",
            budget.peak()
        );
        assert!(budget.peak() >= 2, "the tables never overlapped");
        assert_eq!(budget.in_flight(), 0, "every slot is given back");
    }

    #[test]
    fn parallel_row_groups_round_trip_and_are_cut_by_rows_and_bytes() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("t_ps", DataType::Int64, false),
            Field::new("energy_kev", DataType::Float32, false),
        ]));
        let dir = tempfile::tempdir().unwrap();
        let cases = [(1000, usize::MAX, 8), (usize::MAX, 4096, 0)];
        for ((rows, bytes, expect_groups), whole_groups) in
            cases.into_iter().flat_map(|c| [(c, true), (c, false)])
        {
            let options = WriteOptions {
                row_group_rows: rows,
                row_group_bytes: bytes,
                parallel_row_groups: whole_groups,
                delta_columns: vec!["t_ps"],
                byte_stream_split_columns: vec!["energy_kev"],
                ..WriteOptions::default()
            };
            let name = format!("t-{rows}-{bytes}-{whole_groups}.parquet");
            let mut w =
                ParquetTableWriter::create(dir.path(), &name, schema.clone(), &options, vec![])
                    .unwrap();
            let mut start = 0;
            for n in [700, 1300, 2500, 3500] {
                w.write(&batch(&schema, start, n)).unwrap();
                start += 3 * n as i64;
            }
            w.add_metadata("first_t_ps", "0".into());
            let record = w.commit().unwrap();
            assert_eq!(record.rows, 8000);
            assert!(!dir.path().join(format!("{name}.inprogress")).exists());
            let path = dir.path().join(&name);
            let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
            let groups = reader.metadata().num_row_groups();
            if expect_groups > 0 {
                assert_eq!(groups, expect_groups);
            } else {
                assert!(
                    groups > 8,
                    "a 4 KiB byte limit cuts many small groups: {groups}"
                );
            }
            let kv = reader
                .metadata()
                .file_metadata()
                .key_value_metadata()
                .unwrap();
            assert!(kv.iter().any(|k| k.key == "first_t_ps"));
            let back = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                File::open(&path).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            let mut t = Vec::new();
            let mut e = Vec::new();
            for b in back {
                let b = b.unwrap();
                assert_eq!(b.schema().fields(), schema.fields());
                t.extend_from_slice(b.column(0).as_primitive::<Int64Type>().values());
                e.extend_from_slice(b.column(1).as_primitive::<Float32Type>().values());
            }
            let want: Vec<i64> = (0..8000).map(|i| 3 * i).collect();
            assert_eq!(t, want);
            assert!(
                e.iter()
                    .zip(&want)
                    .all(|(e, t)| *e == (t % 1000) as f32 * 0.5)
            );
        }
    }

    /// Rows of every data page of column `column` in row group 0.
    fn data_page_rows(path: &Path, column: usize) -> Vec<u32> {
        let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
        let mut pages = reader
            .get_row_group(0)
            .unwrap()
            .get_column_page_reader(column)
            .unwrap();
        let mut out = Vec::new();
        while let Some(p) = pages.get_next_page().unwrap() {
            if p.page_type() != parquet::basic::PageType::DICTIONARY_PAGE {
                out.push(p.num_values());
            }
        }
        out
    }

    #[test]
    fn write_batch_rows_sets_the_page_granularity() {
        let dir = tempfile::tempdir().unwrap();
        // Page limits (20 000 rows here) are checked once per batch of values.
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("t_ps", DataType::Int64, false),
            Field::new("energy_kev", DataType::Float32, false),
        ]));
        for (batch_rows, limit, page_rows) in [
            (20_000, None, vec![20_000; 5]),
            (1024, None, vec![20_480; 4]),
            // Pages of exactly the limit when the batches match it (the singles' layout).
            (16_384, Some(16_384), vec![16_384; 6]),
            // A limit below the batch is met only after a whole batch.
            (20_000, Some(16_384), vec![20_000; 5]),
        ] {
            let options = WriteOptions {
                write_batch_rows: batch_rows,
                page_rows: limit,
                compression: Compression::None,
                ..WriteOptions::default()
            };
            let name = format!("n{batch_rows}-{limit:?}.parquet");
            let mut w =
                ParquetTableWriter::create(dir.path(), &name, schema.clone(), &options, vec![])
                    .unwrap();
            w.write(&batch(&schema, 0, 100_000)).unwrap();
            w.commit().unwrap();
            let pages = data_page_rows(&dir.path().join(&name), 0);
            assert_eq!(pages[..page_rows.len()], page_rows[..], "{pages:?}");
        }
    }

    /// Rows that stop coming are cut into a row group, appended, pushed out of every buffer
    /// and synced within the commit interval (not before its cut fraction), with tick()
    /// alone; the row groups stay whole in the committed file.
    #[test]
    fn a_quiet_writer_puts_its_rows_on_disk_within_the_commit_interval() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("t_ps", DataType::Int64, false),
            Field::new("energy_kev", DataType::Float32, false),
        ]));
        let dir = tempfile::tempdir().unwrap();
        let interval = Duration::from_millis(400);
        for whole_groups in [true, false] {
            let options = WriteOptions {
                parallel_row_groups: whole_groups,
                commit_interval: Some(interval),
                ..WriteOptions::default()
            };
            let name = format!("q-{whole_groups}.parquet");
            let mut w =
                ParquetTableWriter::create(dir.path(), &name, schema.clone(), &options, vec![])
                    .unwrap();
            let tmp = dir.path().join(format!("{name}.inprogress"));
            for round in 1..=2u64 {
                let start = Instant::now();
                w.write(&batch(&schema, 0, 1000)).unwrap();
                assert_eq!(w.appended_rows(), 1000 * (round - 1), "cut too early");
                loop {
                    w.tick().unwrap();
                    if w.appended_rows() == 1000 * round && w.background_sync.idle() {
                        break;
                    }
                    assert!(
                        start.elapsed() < Duration::from_secs(10),
                        "rows never reached the disk"
                    );
                    std::thread::sleep(Duration::from_millis(2));
                }
                let took = start.elapsed();
                assert!(
                    took >= interval.mul_f64(CUT_FRACTION) && took <= interval,
                    "on disk after {took:?}"
                );
                // Nothing held in a buffer: the file holds every byte written.
                assert_eq!(
                    std::fs::metadata(&tmp).unwrap().len(),
                    w.bytes_written(),
                    "round {round}"
                );
            }
            w.commit().unwrap();
            let reader =
                SerializedFileReader::new(File::open(dir.path().join(&name)).unwrap()).unwrap();
            let groups: Vec<i64> = reader
                .metadata()
                .row_groups()
                .iter()
                .map(|g| g.num_rows())
                .collect();
            assert_eq!(groups, [1000, 1000]);
        }
    }

    #[test]
    fn a_batch_of_another_schema_is_an_error() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("t_ps", DataType::Int64, false),
            Field::new("energy_kev", DataType::Float32, false),
        ]));
        let other: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, false),
            Field::new("energy_kev", DataType::Float32, false),
        ]));
        let dir = tempfile::tempdir().unwrap();
        let mut w = ParquetTableWriter::create(
            dir.path(),
            "a.parquet",
            schema,
            &WriteOptions::default(),
            vec![],
        )
        .unwrap();
        let e = w.write(&batch(&other, 0, 10)).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
    }
}
