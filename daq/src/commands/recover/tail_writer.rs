//! Writing the tail of a killed run's singles: the rows of the archive's replay newer than
//! the end of the salvaged table go into a new singles file. [`TableEnd`] is where the
//! salvaged table ends; [`TailWriter`] skips the rows the table already holds and writes the
//! rest.

use anyhow::{Result, anyhow, bail};
use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use scandaq_sinks::manifest::FileRecord;
use scandaq_sinks::{ParquetTableWriter, WriteOptions, singles};
use std::path::Path;

/// Where the salvaged singles end: the last row's time and how many rows of the table have
/// that time (the archive's rows at that time are skipped that many times).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct TableEnd {
    last_t_ps: Option<i64>,
    rows_at_last: u64,
    rows: u64,
}

/// Reads the end of the singles table from its last non-empty file.
pub(super) fn singles_end(
    dir: &Path,
    files: &[FileRecord],
) -> Result<(TableEnd, Option<arrow_schema::SchemaRef>, Option<u32>)> {
    let mut singles: Vec<&FileRecord> = files
        .iter()
        .filter(|f| f.path.starts_with("singles-") && f.path.ends_with(".parquet"))
        .collect();
    singles.sort_by(|a, b| a.path.cmp(&b.path));
    let rows = singles.iter().map(|f| f.rows).sum();
    let mut schema = None;
    let mut clock_hz = None;
    let mut end = TableEnd {
        rows,
        ..TableEnd::default()
    };
    for f in singles.iter().rev() {
        let path = dir.join(&f.path);
        let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path)?)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        if schema.is_none() {
            schema = Some(builder.schema().clone());
        }
        if clock_hz.is_none() {
            clock_hz = builder
                .metadata()
                .file_metadata()
                .key_value_metadata()
                .and_then(|kv| kv.iter().find(|k| k.key == "scandaq.clock_hz"))
                .and_then(|k| k.value.as_deref()?.parse().ok());
        }
        let groups = builder.metadata().num_row_groups();
        if f.rows == 0 || groups == 0 {
            continue;
        }
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [0]);
        let reader = builder
            .with_row_groups(vec![groups - 1])
            .with_projection(mask)
            .build()?;
        let mut t = Vec::new();
        for b in reader {
            t.extend_from_slice(b?.column(0).as_primitive::<Int64Type>().values());
        }
        if let Some(&last) = t.last() {
            end.last_t_ps = Some(last);
            end.rows_at_last = t.iter().rev().take_while(|&&x| x == last).count() as u64;
            break;
        }
    }
    Ok((end, schema, clock_hz))
}

/// What replaying the archive's tail gave.
pub(super) struct TailReplay {
    pub(super) record: Option<FileRecord>,
    pub(super) note: String,
    /// Rows the archive gives up to the end of the salvaged table (it should equal the rows
    /// the table holds).
    pub(super) archive_rows_before: u64,
}

/// Writes the replayed singles newer than the salvaged table's end into `dir/name`, opened at
/// the first such row (no file when there is none).
pub(super) struct TailWriter<'a> {
    dir: &'a Path,
    /// The tail file's name (`singles-NNNNN.parquet`).
    name: String,
    /// The run's singles schema (the replay must give the same).
    schema: SchemaRef,
    /// Where the salvaged table ends.
    end: TableEnd,
    /// The raw archive replayed.
    archive: &'a Path,
    /// The run number, for the file's metadata.
    run: u64,
    writer: Option<ParquetTableWriter>,
    /// Replayed rows already in the table.
    rows_before: u64,
    /// Replayed rows at the table's last time skipped so far.
    at_last_skipped: u64,
    /// Rows written to the tail file.
    tail_rows: u64,
    first_t_ps: Option<i64>,
    last_t_ps: Option<i64>,
}

impl<'a> TailWriter<'a> {
    pub(super) fn new(
        dir: &'a Path,
        name: String,
        schema: SchemaRef,
        end: TableEnd,
        archive: &'a Path,
        run: u64,
    ) -> Self {
        Self {
            dir,
            name,
            schema,
            end,
            archive,
            run,
            writer: None,
            rows_before: 0,
            at_last_skipped: 0,
            tail_rows: 0,
            first_t_ps: None,
            last_t_ps: None,
        }
    }

    /// Passes every row of one replayed singles file.
    pub(super) fn write_file(&mut self, path: &Path) -> Result<()> {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?.build()?;
        for batch in reader {
            self.write_batch(&batch?)?;
        }
        Ok(())
    }

    /// Writes the rows of `batch` the table does not hold yet.
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.schema.fields() {
            bail!("the archive's replay gives singles of another schema than the run's");
        }
        let t = batch.column(0).as_primitive::<Int64Type>().values();
        let start = self.rows_already_in_table(t);
        self.rows_before += start as u64;
        if start == t.len() {
            return Ok(());
        }
        self.first_t_ps.get_or_insert(t[start]);
        self.last_t_ps = t.last().copied();
        let tail = batch.slice(start, batch.num_rows() - start);
        self.tail_rows += tail.num_rows() as u64;
        self.writer()?.write(&tail)?;
        Ok(())
    }

    /// How many leading rows of a batch with times `t` the table already holds: those before
    /// its last time, and those at that time as many times as the table holds them.
    fn rows_already_in_table(&mut self, t: &[i64]) -> usize {
        let Some(last) = self.end.last_t_ps else {
            return 0;
        };
        let mut start = t.partition_point(|&x| x < last);
        while start < t.len() && t[start] == last && self.at_last_skipped < self.end.rows_at_last {
            start += 1;
            self.at_last_skipped += 1;
        }
        start
    }

    /// The tail file's writer, created at its first row.
    fn writer(&mut self) -> Result<&mut ParquetTableWriter> {
        let writer = match self.writer.take() {
            Some(w) => w,
            None => ParquetTableWriter::create(
                self.dir,
                &self.name,
                self.schema.clone(),
                &WriteOptions {
                    commit_interval: None,
                    ..singles::write_options()
                },
                vec![
                    ("scandaq.run".into(), self.run.to_string()),
                    ("scandaq.table".into(), "singles".into()),
                    (
                        "scandaq.software_version".into(),
                        env!("CARGO_PKG_VERSION").into(),
                    ),
                    (
                        "scandaq.recovered".into(),
                        format!(
                            "replayed by scandaq recover from the raw archive {}: the singles newer than the last salvaged row",
                            file_name_of(self.archive)
                        ),
                    ),
                ],
            )?,
        };
        Ok(self.writer.insert(writer))
    }

    /// Commits the tail file (when any row was written) and says what the replay gave.
    pub(super) fn finish(self) -> Result<TailReplay> {
        let record = match self.writer {
            Some(mut w) => {
                if let (Some(a), Some(b)) = (self.first_t_ps, self.last_t_ps) {
                    w.add_metadata("first_t_ps", a.to_string());
                    w.add_metadata("last_t_ps", b.to_string());
                }
                Some(w.commit()?)
            }
            None => None,
        };
        let before = self.rows_before;
        let consistent = if before == self.end.rows {
            String::new()
        } else {
            format!(
                "; note: the archive gives {before} singles up to the table's last row where the table holds {}",
                self.end.rows
            )
        };
        Ok(TailReplay {
            record,
            note: format!(
                "replayed {} through the run's calibration: {} singles newer than the last salvaged one (t_ps {}) written{consistent}; coincidences of the tail are not re-derived (replay the archive for them)",
                file_name_of(self.archive),
                self.tail_rows,
                self.end
                    .last_t_ps
                    .map_or_else(|| "none".to_string(), |t| t.to_string()),
            ),
            archive_rows_before: before,
        })
    }
}

/// The file name of `path` (empty when it has none).
fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
