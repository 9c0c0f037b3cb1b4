//! A builder node's output: hive-partitioned Parquet tables
//! `OUT/run=R/builder=B/coincidences-NNNNN.parquet` and `delayed-NNNNN.parquet` (the same
//! schema and atomic writer as a single-process run) and the builder's manifest
//! `builder-manifest.json`: counts, losses and the slices that never completed, with their
//! time ranges.

use anyhow::{Context, Result, anyhow};
use scandaq_core::coincidence::CoincidenceBatch;
use scandaq_core::slicing::{SliceOutput, SliceSpec};
use scandaq_sinks::{FileMetadata, FileRecord, ParquetTableWriter, coincidences};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The builder manifest's file name (beside the tables).
pub const BUILDER_MANIFEST: &str = "builder-manifest.json";
/// Pairs gathered before a table write.
const WRITE_ROWS: usize = 64 << 10;

/// A slice that never completed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MissingSlice {
    /// Slice number.
    pub slice: i64,
    /// Its detector-time range `[start_ps, end_ps)`.
    pub start_ps: i64,
    /// End (exclusive).
    pub end_ps: i64,
    /// Why: `source_lost` (an acquisition node died before finishing it), `dropped_rows`
    /// (a sender dropped singles of it), `builder_unreachable` (a sender could not reach the
    /// builder), `builder_stopped` (the builder stopped before it completed).
    pub reason: String,
    /// The acquisition nodes concerned.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Whether pairs of the slice were written anyway (from what did arrive).
    #[serde(default)]
    pub written: bool,
}

/// What one builder wrote and lost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuilderManifest {
    /// Cluster run number.
    pub run: u64,
    /// The builder's name.
    pub builder: String,
    /// Slice length, ps.
    pub slice_ps: i64,
    /// True once the tables are committed, every source ended its stream and no slice is
    /// missing.
    pub complete: bool,
    /// Committed tables (paths relative to the builder directory).
    pub files: Vec<FileRecord>,
    /// Counts: `prompts`, `delayed`, `slices_written`, `slices_inexact`, `singles_received`,
    /// `source.NAME.singles`, ...
    pub counts: BTreeMap<String, u64>,
    /// Losses by name (`cluster_dropped_singles`: singles the senders dropped for this
    /// builder's slices and said so).
    pub losses: BTreeMap<String, u64>,
    /// Slices that did not complete, in order.
    pub missing_slices: Vec<MissingSlice>,
    /// How each source's stream ended: `end_of_stream`, `lost`, or `never_connected`.
    pub sources: BTreeMap<String, String>,
    /// Every life of the builder in this run, in order: a restart (same name, same run) adds
    /// one and carries the counts, files and missing slices of the lives before it that
    /// committed; a life that died left only uncommitted tables, and every slice no committed
    /// life covers is missing (the run manifest lists them, `builder_lost`).
    #[serde(default)]
    pub lives: Vec<BuilderLife>,
}

/// One life of a builder (docs/cluster.md "A restarted builder").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuilderLife {
    /// Its tables' number (`coincidences-NNNNN.parquet`).
    pub file_number: u32,
    /// It committed its tables and this manifest (false: it died; its tables are lost).
    pub committed: bool,
    /// The first and last slice it wrote (none: it wrote none, or it died).
    pub slices: Option<(i64, i64)>,
}

impl BuilderManifest {
    /// Whether a committed life of this manifest wrote `slice` or owned it (a life covers
    /// from its first slice, or from the start for the first life, through its last slice,
    /// or to the end for the last life).
    pub fn covers(&self, slice: i64) -> bool {
        let n = self.lives.len();
        if n == 0 {
            return true; // a manifest from before lives were recorded: one life
        }
        self.lives.iter().enumerate().any(|(i, life)| {
            let (first, last) = life.slices.unwrap_or((i64::MAX, i64::MIN));
            let from = if i == 0 { i64::MIN } else { first };
            let to = if i + 1 == n { i64::MAX } else { last };
            life.committed && (from..=to).contains(&slice)
        })
    }
}

/// One of the builder's tables.
struct Table {
    writer: ParquetTableWriter,
    pending: CoincidenceBatch,
}

impl Table {
    fn append(&mut self, mut rows: CoincidenceBatch) -> Result<()> {
        let p = &mut self.pending;
        p.t1_ps.append(&mut rows.t1_ps);
        p.t2_ps.append(&mut rows.t2_ps);
        p.channel1.append(&mut rows.channel1);
        p.channel2.append(&mut rows.channel2);
        p.energy1_kev.append(&mut rows.energy1_kev);
        p.energy2_kev.append(&mut rows.energy2_kev);
        p.tof_ps.append(&mut rows.tof_ps);
        p.flags.append(&mut rows.flags);
        if self.pending.len() >= WRITE_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let record = coincidences::to_record_batch(batch)
            .map_err(|e| anyhow!("building a coincidence row group: {e}"))?;
        self.writer.write(&record)?;
        Ok(())
    }

    fn commit(mut self) -> Result<FileRecord> {
        self.flush()?;
        Ok(self.writer.commit()?)
    }
}

/// The tables and manifest of one builder in one run.
pub struct BuilderOutput {
    dir: PathBuf,
    prompts: Option<Table>,
    delayed: Option<Table>,
    /// The manifest as it grows.
    pub manifest: BuilderManifest,
    spec: SliceSpec,
}

impl BuilderOutput {
    /// `out/run=R/builder=B/`, created with its tables (file number one past those there).
    pub fn create(
        out: &Path,
        run: u64,
        builder: &str,
        spec: SliceSpec,
        with_delayed: bool,
        metadata: FileMetadata,
    ) -> Result<Self> {
        let dir = builder_dir(out, run, builder);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the builder directory {}", dir.display()))?;
        let n = next_file_number(&dir)?;
        let table = |name: &str| -> Result<Table> {
            let mut meta = metadata.clone();
            meta.push(("scandaq.table".into(), name.into()));
            meta.push((
                "scandaq.schema_version".into(),
                coincidences::COINCIDENCES_SCHEMA_VERSION.into(),
            ));
            Ok(Table {
                writer: ParquetTableWriter::create(
                    &dir,
                    &format!("{name}-{n:05}.parquet"),
                    coincidences::schema(),
                    &coincidences::write_options(),
                    meta,
                )?,
                pending: CoincidenceBatch::default(),
            })
        };
        let prompts = table("coincidences")?;
        let delayed = with_delayed.then(|| table("delayed")).transpose()?;
        let manifest = earlier_lives(&dir, n, run, builder, spec)?;
        Ok(Self {
            dir,
            prompts: Some(prompts),
            delayed,
            manifest,
            spec,
        })
    }

    /// The builder directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one processed slice.
    pub fn write_slice(&mut self, out: SliceOutput) -> Result<()> {
        if let Some(life) = self.manifest.lives.last_mut() {
            let k = out.slice;
            life.slices = Some(life.slices.map_or((k, k), |(a, b)| (a.min(k), b.max(k))));
        }
        let count =
            |m: &mut BuilderManifest, k: &str, n: u64| *m.counts.entry(k.into()).or_insert(0) += n;
        count(&mut self.manifest, "prompts", out.prompts.len() as u64);
        count(&mut self.manifest, "delayed", out.delayed.len() as u64);
        count(&mut self.manifest, "slices_written", 1);
        count(&mut self.manifest, "slices_inexact", u64::from(!out.exact));
        if let Some(p) = self.prompts.as_mut() {
            p.append(out.prompts)?;
        }
        if let Some(d) = self.delayed.as_mut() {
            d.append(out.delayed)?;
        }
        Ok(())
    }

    /// Records `slice` as missing (with `written` saying whether its pairs were written).
    pub fn missing(&mut self, slice: i64, reason: &str, sources: Vec<String>, written: bool) {
        let body = self.spec.body_ps(slice);
        let (start_ps, end_ps) = (body.start, body.end);
        self.manifest.missing_slices.push(MissingSlice {
            slice,
            start_ps,
            end_ps,
            reason: reason.into(),
            sources,
            written,
        });
    }

    /// Adds `n` to count `key`.
    pub fn count(&mut self, key: &str, n: u64) {
        *self.manifest.counts.entry(key.into()).or_insert(0) += n;
    }

    /// Adds `n` to loss `key`.
    pub fn loss(&mut self, key: &str, n: u64) {
        if n > 0 {
            *self.manifest.losses.entry(key.into()).or_insert(0) += n;
        }
    }

    /// Writes the manifest as it is now (atomically).
    pub fn write_manifest(&self) -> Result<()> {
        let text = serde_json::to_vec_pretty(&self.manifest)?;
        scandaq_sinks::durable_file::write_atomic(&self.dir.join(BUILDER_MANIFEST), &text)?;
        Ok(())
    }

    /// Commits the tables and writes the final manifest.
    pub fn commit(mut self, complete: bool) -> Result<BuilderManifest> {
        self.manifest.missing_slices.sort_by_key(|m| m.slice);
        if let Some(p) = self.prompts.take() {
            self.manifest.files.push(p.commit()?);
        }
        if let Some(d) = self.delayed.take() {
            self.manifest.files.push(d.commit()?);
        }
        self.manifest.complete = complete;
        if let Some(life) = self.manifest.lives.last_mut() {
            life.committed = true;
        }
        self.write_manifest()?;
        Ok(self.manifest)
    }
}

/// `out/run=R/builder=B`.
pub fn builder_dir(out: &Path, run: u64, builder: &str) -> PathBuf {
    out.join(format!("run={run}"))
        .join(format!("builder={builder}"))
}

/// The manifest a new life of the builder in `dir` starts from: the last committed life's
/// manifest (its counts, files and missing slices carried on), plus a dead life for every
/// table number below `number` it does not know (tables left `.inprogress`), plus this life.
fn earlier_lives(
    dir: &Path,
    number: u32,
    run: u64,
    builder: &str,
    spec: SliceSpec,
) -> Result<BuilderManifest> {
    let path = dir.join(BUILDER_MANIFEST);
    let mut m = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<BuilderManifest>(&bytes).with_context(|| {
            format!(
                "{}: not a builder manifest (move it away to start afresh)",
                path.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BuilderManifest {
            run,
            builder: builder.to_string(),
            slice_ps: spec.slice_ps,
            ..BuilderManifest::default()
        },
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    m.complete = false;
    for file_number in 0..number {
        if !m.lives.iter().any(|l| l.file_number == file_number) {
            m.lives.push(BuilderLife {
                file_number,
                ..BuilderLife::default()
            });
        }
    }
    m.lives.sort_by_key(|l| l.file_number);
    m.lives.push(BuilderLife {
        file_number: number,
        ..BuilderLife::default()
    });
    Ok(m)
}

/// One past the highest `coincidences-NNNNN.parquet` in `dir` (0 when none).
fn next_file_number(dir: &Path) -> Result<u32> {
    let mut next = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let number = name
            .strip_prefix("coincidences-")
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(n) = number {
            next = next.max(n + 1);
        }
    }
    Ok(next)
}
