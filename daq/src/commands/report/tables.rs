//! Reading a run directory for the report: its manifest, its committed tables by kind, and a
//! streaming batch reader that decodes only the columns asked for, one record batch at a time
//! (a 50 GB run is never held in memory). Every error names the file and how to fix it.

use anyhow::{Context, Result, bail};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrowPrimitiveType, BinaryArray, PrimitiveArray, RecordBatch};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use scandaq_sinks::Manifest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A run directory and its manifest.
pub(super) struct RunTables {
    /// The run directory as given.
    pub dir: PathBuf,
    /// Its `manifest.json`.
    pub manifest: Manifest,
}

impl RunTables {
    /// Opens `dir`: it must be a directory holding a readable `manifest.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!(
                "{} is not a run directory: give OUTDIR/run-NNNNNN (the folder a run, replay or demo made, holding manifest.json)",
                dir.display()
            );
        }
        let path = dir.join("manifest.json");
        if !path.is_file() {
            bail!(
                "{} is not a run directory: it has no manifest.json (give OUTDIR/run-NNNNNN, the folder a run, replay or demo made)",
                dir.display()
            );
        }
        let manifest = Manifest::read(dir).with_context(|| {
            format!(
                "{}: the run's manifest cannot be read; if the run was killed, `scandaq recover {}` rewrites it",
                path.display(),
                dir.display()
            )
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// The committed Parquet tables whose file name starts with `prefix`, in name order.
    /// A table the manifest lists but the directory lacks is an error; an uncommitted one
    /// (`.inprogress`) left by a killed run is named with the fix.
    pub fn tables(&self, prefix: &str) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for f in &self.manifest.files {
            if !(f.path.starts_with(prefix) && f.path.ends_with(".parquet")) {
                continue;
            }
            let path = self.dir.join(&f.path);
            if !path.is_file() {
                bail!(
                    "{}: the manifest lists this table but it is missing; restore it from a copy of the run (or replay the raw data into a new run)",
                    path.display()
                );
            }
            out.push(path);
        }
        if out.is_empty() {
            self.refuse_uncommitted(prefix)?;
        }
        out.sort();
        Ok(out)
    }

    fn refuse_uncommitted(&self, prefix: &str) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) && name.ends_with(".parquet.inprogress") {
                bail!(
                    "{}: the run was interrupted before this table was committed; run `scandaq recover {}` first, then the report",
                    e.path().display(),
                    self.dir.display()
                );
            }
        }
        Ok(())
    }
}

/// The key-value metadata of a Parquet table (empty when it has none).
pub(super) fn key_values(path: &Path) -> Result<BTreeMap<String, String>> {
    let builder = open_builder(path)?;
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    Ok(kv)
}

fn open_builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<std::fs::File>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the table {}", path.display()))?;
    ParquetRecordBatchReaderBuilder::try_new(file).with_context(|| {
        format!(
            "{} is not a readable Parquet table (damaged or cut short); `scandaq inspect` it, `scandaq recover` the run if it was interrupted, or replay the raw data",
            path.display()
        )
    })
}

/// Reads `columns` of the table at `path` in batches of `batch_rows` and hands each batch to
/// `f` until it returns false. A missing column or a corrupt page is an error naming the file.
pub(super) fn for_each_batch(
    path: &Path,
    columns: &[&str],
    batch_rows: usize,
    mut f: impl FnMut(&Batch<'_>) -> Result<bool>,
) -> Result<()> {
    let builder = open_builder(path)?;
    let schema = builder.parquet_schema();
    for c in columns {
        if !schema.columns().iter().any(|d| d.name() == *c) {
            bail!(
                "{}: no column `{c}`; this is not the scandaq table its name says (written by another tool or an older scandaq?)",
                path.display()
            );
        }
    }
    let mask = ProjectionMask::columns(schema, columns.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(batch_rows.max(1))
        .build()
        .with_context(|| format!("cannot read {}", path.display()))?;
    for batch in reader {
        let batch = batch.with_context(|| {
            format!(
                "{}: corrupt data in the table; `scandaq inspect` it, or replay the raw data into a new run",
                path.display()
            )
        })?;
        if !f(&Batch {
            batch: &batch,
            path,
        })? {
            break;
        }
    }
    Ok(())
}

/// One record batch of a table, with typed column access that fails naming the file.
pub(super) struct Batch<'a> {
    batch: &'a RecordBatch,
    path: &'a Path,
}

impl Batch<'_> {
    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// Column `name` as a primitive array of `T`.
    pub fn primitive<T: ArrowPrimitiveType>(&self, name: &str) -> Result<&PrimitiveArray<T>> {
        self.column(name)?
            .as_primitive_opt::<T>()
            .with_context(|| self.wrong_type(name))
    }

    /// Column `name` as a binary array.
    pub fn binary(&self, name: &str) -> Result<&BinaryArray> {
        self.column(name)?
            .as_binary_opt::<i32>()
            .with_context(|| self.wrong_type(name))
    }

    /// Column `name` as strings (plain or dictionary-encoded), one per row.
    pub fn strings(&self, name: &str) -> Result<Vec<String>> {
        let col = self.column(name)?;
        if let Some(s) = col.as_string_opt::<i32>() {
            return Ok(s.iter().map(|v| v.unwrap_or("").to_string()).collect());
        }
        let d = col
            .as_any_dictionary_opt()
            .with_context(|| self.wrong_type(name))?;
        let values = d
            .values()
            .as_string_opt::<i32>()
            .with_context(|| self.wrong_type(name))?;
        Ok(d.normalized_keys()
            .iter()
            .map(|&k| values.value(k).to_string())
            .collect())
    }

    /// Column `name` as booleans.
    pub fn booleans(&self, name: &str) -> Result<Vec<bool>> {
        let col = self.column(name)?;
        let b = col
            .as_boolean_opt()
            .with_context(|| self.wrong_type(name))?;
        Ok((0..b.len()).map(|i| b.is_valid(i) && b.value(i)).collect())
    }

    fn column(&self, name: &str) -> Result<&dyn Array> {
        self.batch
            .column_by_name(name)
            .map(|c| c.as_ref())
            .with_context(|| format!("{}: no column `{name}`", self.path.display()))
    }

    fn wrong_type(&self, name: &str) -> String {
        format!(
            "{}: column `{name}` has an unexpected type; this is not the scandaq table its name says",
            self.path.display()
        )
    }
}
