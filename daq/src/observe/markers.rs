//! Operator markers: `m` on the dashboard or `scandaq ctl marker TEXT` put a row into the
//! run's `markers.parquet` (docs/tables.md): wall-clock time, the detector time of the latest
//! single released to the sink, how many singles precede it in the singles file, and a text.
//! Markers are kept in memory and the table is committed with the run (listed in the
//! manifest); a run without markers has no markers file.

use anyhow::{Result, anyhow};
use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
    UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use scandaq_core::HitBatch;
use scandaq_sinks::FileMetadata;
use scandaq_sinks::{FileRecord, ParquetTableWriter, WriteOptions};
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// File name of the markers table in a run directory.
pub const MARKERS_FILE: &str = "markers.parquet";
/// Schema version of the markers table.
pub const MARKERS_SCHEMA_VERSION: &str = "1";

/// One marker row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Marker {
    /// 1, 2, ... in the order they were placed.
    pub seq: u32,
    /// Wall-clock time (UTC), ns since the Unix epoch.
    pub wall_time_ns: i64,
    /// Seconds since the marker log was created (the run's start).
    pub run_elapsed_s: f64,
    /// Detector time (`t_ps` of the singles table) of the latest single released to the
    /// sink when the marker was placed; `None` before the first single.
    pub t_ps: Option<i64>,
    /// Singles released to the sink before the marker (its row position in the singles file).
    pub singles_before: u64,
    /// Who placed it: `dashboard`, `ctl`.
    pub source: String,
    /// The operator's text.
    pub text: String,
}

/// Markers of one run, shared by the acquisition (which notes released singles), the
/// dashboard and the control socket (which add markers).
#[derive(Debug)]
pub struct Markers {
    rows: Mutex<Vec<Marker>>,
    last_t_ps: AtomicI64,
    singles: AtomicU64,
    started: Instant,
}

impl Default for Markers {
    fn default() -> Self {
        Self {
            rows: Mutex::new(Vec::new()),
            last_t_ps: AtomicI64::new(i64::MIN),
            singles: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

/// A shared marker log.
pub type SharedMarkers = Arc<Markers>;

impl Markers {
    /// Notes a batch of singles on its way to the sink (two relaxed atomic stores; called by
    /// the acquisition once per batch).
    pub fn note_released(&self, batch: &HitBatch) {
        if let Some(&t) = batch.t_ps.last() {
            self.last_t_ps.store(t, Ordering::Relaxed);
        }
        self.singles
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
    }

    /// Places a marker now.
    pub fn add(&self, text: &str, source: &str) -> Marker {
        let wall_time_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let t = self.last_t_ps.load(Ordering::Relaxed);
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let marker = Marker {
            seq: rows.len() as u32 + 1,
            wall_time_ns,
            run_elapsed_s: self.started.elapsed().as_secs_f64(),
            t_ps: (t != i64::MIN).then_some(t),
            singles_before: self.singles.load(Ordering::Relaxed),
            source: source.to_string(),
            text: text.to_string(),
        };
        rows.push(marker.clone());
        marker
    }

    /// Every marker so far.
    pub fn list(&self) -> Vec<Marker> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes `markers.parquet` into `dir` (atomically) if any marker was placed; returns
    /// its record for the manifest. `metadata` is the run's file metadata (the table name
    /// and schema version are replaced).
    pub fn commit(&self, dir: &Path, metadata: &FileMetadata) -> Result<Option<FileRecord>> {
        let rows = self.list();
        if rows.is_empty() {
            return Ok(None);
        }
        let mut meta: FileMetadata = metadata
            .iter()
            .filter(|(k, _)| k != "scandaq.table" && k != "scandaq.schema_version")
            .cloned()
            .collect();
        meta.push(("scandaq.table".into(), "markers".into()));
        meta.push((
            "scandaq.schema_version".into(),
            MARKERS_SCHEMA_VERSION.into(),
        ));
        let batch = record_batch(&rows)?;
        let mut writer = ParquetTableWriter::create(
            dir,
            MARKERS_FILE,
            batch.schema(),
            &WriteOptions::default(),
            meta,
        )?;
        writer.write(&batch)?;
        Ok(Some(writer.commit()?))
    }
}

/// The markers table's schema.
pub fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::UInt32, false),
        Field::new(
            "wall_time",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("run_elapsed_s", DataType::Float64, false),
        Field::new("t_ps", DataType::Int64, true),
        Field::new("singles_before", DataType::UInt64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]))
}

fn record_batch(rows: &[Marker]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.seq))),
        Arc::new(
            TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.wall_time_ns))
                .with_timezone("UTC"),
        ),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.run_elapsed_s),
        )),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.t_ps))),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.singles_before),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.source.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.text.as_str()),
        )),
    ];
    RecordBatch::try_new(schema(), columns).map_err(|e| anyhow!("building the markers table: {e}"))
}
