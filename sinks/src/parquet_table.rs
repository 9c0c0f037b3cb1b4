//! One Parquet file written atomically: rows go to `NAME.inprogress`, which is fsynced and
//! renamed to `NAME` on commit; the SHA-256 and size are computed while writing.

use crate::error::SinkError;
use crate::manifest::FileRecord;
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How a table's columns are laid out in the file.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// zstd level (1 = fastest); `None` = uncompressed.
    pub zstd_level: Option<i32>,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Columns written with DELTA_BINARY_PACKED (monotone integers such as times).
    pub delta_columns: Vec<&'static str>,
    /// Columns written with BYTE_STREAM_SPLIT (floats).
    pub byte_stream_split_columns: Vec<&'static str>,
    /// Columns written with dictionary encoding (few distinct values, e.g. channel ids). All
    /// others are plain: interning high-cardinality values was the sink's largest cost (20 % of
    /// a replay's CPU) for little size gain under zstd.
    pub dictionary_columns: Vec<&'static str>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            zstd_level: Some(1),
            row_group_rows: 1 << 20,
            delta_columns: Vec::new(),
            byte_stream_split_columns: Vec::new(),
            dictionary_columns: Vec::new(),
        }
    }
}

/// Writer that hashes and counts every byte on its way to the file.
struct HashingFile {
    file: File,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// An open Parquet file being written.
pub struct ParquetTableWriter {
    final_path: PathBuf,
    tmp_path: PathBuf,
    writer: ArrowWriter<HashingFile>,
    rows: u64,
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
        metadata: Vec<(String, String)>,
    ) -> Result<Self, SinkError> {
        let final_path = dir.join(file_name);
        let tmp_path = dir.join(format!("{file_name}.inprogress"));
        let file = File::create(&tmp_path).map_err(|e| SinkError::io("creating", &tmp_path, e))?;
        let compression = match options.zstd_level {
            Some(level) => Compression::ZSTD(
                ZstdLevel::try_new(level).map_err(|e| parquet_err(&final_path, e))?,
            ),
            None => Compression::UNCOMPRESSED,
        };
        let mut props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(options.row_group_rows))
            .set_dictionary_enabled(false)
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
        let sink = HashingFile {
            file,
            hasher: Sha256::new(),
            bytes: 0,
        };
        let writer = ArrowWriter::try_new(sink, schema, Some(props.build()))
            .map_err(|e| parquet_err(&final_path, e))?;
        Ok(Self {
            final_path,
            tmp_path,
            writer,
            rows: 0,
        })
    }

    /// Appends a batch of rows.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        self.writer
            .write(batch)
            .map_err(|e| parquet_err(&self.final_path, e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes flushed to the file so far (whole row groups; the open one is in memory).
    pub fn bytes_written(&self) -> u64 {
        self.writer.bytes_written() as u64
    }

    /// Adds a key-value metadata entry (written with the footer).
    pub fn add_metadata(&mut self, key: &str, value: String) {
        self.writer
            .append_key_value_metadata(KeyValue::new(key.to_string(), value));
    }

    /// Writes the footer, fsyncs, renames `.inprogress` to the final name and returns the
    /// file's record (name relative to its directory, rows, bytes, sha256).
    pub fn commit(self) -> Result<FileRecord, SinkError> {
        let Self {
            final_path,
            tmp_path,
            writer,
            rows,
        } = self;
        let sink = writer
            .into_inner()
            .map_err(|e| parquet_err(&final_path, e))?;
        sink.file
            .sync_all()
            .map_err(|e| SinkError::io("syncing", &tmp_path, e))?;
        std::fs::rename(&tmp_path, &final_path)
            .map_err(|e| SinkError::io("renaming", &tmp_path, e))?;
        if let Some(dir) = final_path.parent() {
            sync_dir(dir);
        }
        let sha256 = sink
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(FileRecord {
            path: final_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            rows,
            bytes: sink.bytes,
            sha256,
        })
    }
}

/// Best-effort fsync of a directory so a rename survives a crash.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
