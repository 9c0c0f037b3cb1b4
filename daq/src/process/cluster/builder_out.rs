//! A builder node's output: hive-partitioned Parquet tables
//! `OUT/run=R/builder=B/coincidences-NNNNN.parquet` and `delayed-NNNNN.parquet` (the same
//! schema and atomic writer as a single-process run) and the builder's manifest
//! `builder-manifest.json`: counts, losses and the slices that never completed, with their
//! time ranges. The two tables are cut together at a slice boundary once either file reaches
//! the cluster's `rotate_size` (or `rotate_every`), so a builder's memory does not grow with
//! the run: a Parquet writer holds every row group's metadata until its footer.

use crate::process::rotating_table::Rotation;
use anyhow::{Context, Result, anyhow};
use scandaq_core::coincidence::CoincidenceBatch;
use scandaq_core::slicing::{SliceOutput, SliceSpec};
use scandaq_sinks::{
    FileMetadata, FileRecord, ParquetTableWriter, coincidences, table_file_index, table_file_name,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The builder manifest's file name (beside the tables).
pub const BUILDER_MANIFEST: &str = "builder-manifest.json";
/// Pairs gathered before a table write.
const WRITE_ROWS: usize = 64 << 10;
/// The prompt table's file prefix.
const PROMPTS: &str = coincidences::PROMPTS_TABLE;
/// The delayed table's file prefix.
const DELAYED: &str = coincidences::DELAYED_TABLE;

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
    /// Its (first) tables' number (`coincidences-NNNNN.parquet`).
    pub file_number: u32,
    /// The number of the last tables it opened, when it cut its tables (rotation): its files
    /// are `file_number ..= last_file_number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_file_number: Option<u32>,
    /// It committed its tables and this manifest (false: it died; its open tables are lost).
    pub committed: bool,
    /// The first and last slice it wrote (none: it wrote none, or it died before its first
    /// rotation).
    pub slices: Option<(i64, i64)>,
    /// The last slice in tables it committed at a rotation: a life that died still covers
    /// the slices through this one (their pairs are in committed files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_through: Option<i64>,
}

impl BuilderLife {
    /// Whether table number `n` is one of this life's.
    fn owns_file(&self, n: u32) -> bool {
        (self.file_number..=self.last_file_number.unwrap_or(self.file_number)).contains(&n)
    }
}

impl BuilderManifest {
    /// Whether a life of this manifest wrote `slice` to a committed file or owned it (a
    /// committed life covers from its first slice, or from the start for the first life,
    /// through its last slice, or to the end for the last life; a life that died covers
    /// through the last slice of the tables it committed at a rotation).
    pub fn covers(&self, slice: i64) -> bool {
        let n = self.lives.len();
        if n == 0 {
            return true; // a manifest from before lives were recorded: one life
        }
        self.lives.iter().enumerate().any(|(i, life)| {
            let (first, last) = life.slices.unwrap_or((i64::MAX, i64::MIN));
            let from = if i == 0 { i64::MIN } else { first };
            let to = match (life.committed, life.committed_through) {
                (true, _) if i + 1 == n => i64::MAX,
                (true, _) => last,
                (false, Some(through)) => through,
                (false, None) => return false,
            };
            (from..=to).contains(&slice)
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

    /// The open file's size once every row given so far is written: the writer's estimate
    /// plus the rows gathered here, at its bytes per row (8 before its first row group).
    fn bytes(&self) -> u64 {
        let (bytes, rows) = (self.writer.bytes_estimate(), self.writer.rows());
        let per_row = if rows > 0 {
            bytes as f64 / rows as f64
        } else {
            8.0
        };
        bytes + (self.pending.len() as f64 * per_row) as u64
    }
}

/// The tables and manifest of one builder in one run.
pub struct BuilderOutput {
    dir: PathBuf,
    /// The open tables (none between a rotation and the next slice).
    prompts: Option<Table>,
    delayed: Option<Table>,
    with_delayed: bool,
    /// The open tables' number (the next tables' once they are committed).
    number: u32,
    /// When the open tables were created.
    opened: Instant,
    metadata: FileMetadata,
    rotation: Rotation,
    /// The manifest as it grows.
    pub manifest: BuilderManifest,
    spec: SliceSpec,
}

impl BuilderOutput {
    /// `out/run=R/builder=B/`, created with its tables (file number one past those there),
    /// cut as `rotation` says.
    pub fn create(
        out: &Path,
        run: u64,
        builder: &str,
        spec: SliceSpec,
        with_delayed: bool,
        metadata: FileMetadata,
        rotation: Rotation,
    ) -> Result<Self> {
        let dir = builder_dir(out, run, builder);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the builder directory {}", dir.display()))?;
        let number = next_file_number(&dir)?;
        let manifest = earlier_lives(&dir, number, run, builder, spec)?;
        let mut output = Self {
            dir,
            prompts: None,
            delayed: None,
            with_delayed,
            number,
            opened: Instant::now(),
            metadata,
            rotation,
            manifest,
            spec,
        };
        output.open_tables()?;
        Ok(output)
    }

    /// Creates the tables numbered `self.number` (`.inprogress` until committed).
    fn open_tables(&mut self) -> Result<()> {
        let table = |name: &str| -> Result<Table> {
            let mut meta = self.metadata.clone();
            meta.push(("scandaq.table".into(), name.into()));
            meta.push((
                "scandaq.schema_version".into(),
                coincidences::COINCIDENCES_SCHEMA_VERSION.into(),
            ));
            Ok(Table {
                writer: ParquetTableWriter::create(
                    &self.dir,
                    &table_file_name(name, self.number),
                    coincidences::schema(),
                    &coincidences::write_options(),
                    meta,
                )?,
                pending: CoincidenceBatch::default(),
            })
        };
        self.prompts = Some(table(PROMPTS)?);
        self.delayed = self.with_delayed.then(|| table(DELAYED)).transpose()?;
        self.opened = Instant::now();
        if let Some(life) = self.manifest.lives.last_mut()
            && self.number != life.file_number
        {
            life.last_file_number = Some(self.number);
        }
        Ok(())
    }

    /// Whether the open tables are due to be cut: either file at the rotation size, or open
    /// for the rotation's age.
    fn rotation_due(&self) -> bool {
        let max = self.rotation.max_bytes();
        let big = [&self.prompts, &self.delayed]
            .into_iter()
            .flatten()
            .any(|t| t.bytes() >= max);
        big || self
            .rotation
            .max_seconds
            .is_some_and(|s| self.opened.elapsed().as_secs_f64() >= s)
    }

    /// Commits the open tables and records them, with the slices they hold, in the manifest
    /// on disk; the next slice opens the next tables.
    fn rotate(&mut self) -> Result<()> {
        self.commit_tables()?;
        if let Some(life) = self.manifest.lives.last_mut() {
            life.committed_through = life.slices.map(|(_, last)| last);
        }
        self.number += 1;
        self.write_manifest()
    }

    /// Commits the open tables (if any) and lists them in the manifest.
    fn commit_tables(&mut self) -> Result<()> {
        if let Some(p) = self.prompts.take() {
            self.manifest.files.push(p.commit()?);
        }
        if let Some(d) = self.delayed.take() {
            self.manifest.files.push(d.commit()?);
        }
        Ok(())
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
        if self.prompts.is_none() {
            self.open_tables()?;
        }
        if let Some(p) = self.prompts.as_mut() {
            p.append(out.prompts)?;
        }
        if let Some(d) = self.delayed.as_mut() {
            d.append(out.delayed)?;
        }
        if self.rotation_due() {
            self.rotate()?;
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
        self.commit_tables()?;
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
        if !m.lives.iter().any(|l| l.owns_file(file_number)) {
            set_aside_unlisted(dir, file_number, &m)?;
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

/// Renames the committed tables numbered `n` that manifest `m` does not list to
/// `NAME-NNNNN.parquet.unlisted`: a life that died between committing a cut and writing its
/// manifest left them, and the run counts their slices missing, so a reader listing the
/// directory must not take their pairs as well. They stay on disk for inspection.
fn set_aside_unlisted(dir: &Path, n: u32, m: &BuilderManifest) -> Result<()> {
    for table in [PROMPTS, DELAYED] {
        let name = table_file_name(table, n);
        let path = dir.join(&name);
        if !path.is_file() || m.files.iter().any(|f| f.path == name) {
            continue;
        }
        let aside = dir.join(format!("{name}.unlisted"));
        std::fs::rename(&path, &aside).with_context(|| {
            format!(
                "cannot set aside {} (not in the builder manifest)",
                path.display()
            )
        })?;
        eprintln!(
            "scandaq: {} was committed by a builder life that died before listing it in {}; \
             its slices are counted missing, so it is set aside as {}",
            path.display(),
            BUILDER_MANIFEST,
            aside.display()
        );
    }
    Ok(())
}

/// One past the highest `coincidences-NNNNN.parquet` or `delayed-NNNNN.parquet` in `dir`,
/// committed or `.inprogress` (0 when none).
fn next_file_number(dir: &Path) -> Result<u32> {
    let mut next = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let name = [".inprogress", ".unlisted"]
            .into_iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        let number = [PROMPTS, DELAYED]
            .into_iter()
            .find_map(|table| table_file_index(name, table));
        if let Some(n) = number {
            next = next.max(n + 1);
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scandaq_core::slicing::SliceStats;

    /// Slice `k` with `n` prompts and `n` delayed pairs at times in it.
    fn slice_output(spec: SliceSpec, k: i64, n: usize) -> SliceOutput {
        let start = spec.body_ps(k).start;
        let pairs = || {
            let mut b = CoincidenceBatch::default();
            for i in 0..n as i64 {
                b.t1_ps.push(start + i * 10);
                b.t2_ps.push(start + i * 10 + 3);
                b.channel1.push(i as u32);
                b.channel2.push(i as u32 + 64);
                b.energy1_kev.push(511.0);
                b.energy2_kev.push(510.0);
                b.tof_ps.push(-3);
                b.flags.push(0);
            }
            b
        };
        SliceOutput {
            slice: k,
            prompts: pairs(),
            delayed: pairs(),
            stats: SliceStats::default(),
            exact: true,
        }
    }

    fn read_manifest(dir: &Path) -> BuilderManifest {
        serde_json::from_slice(&std::fs::read(dir.join(BUILDER_MANIFEST)).unwrap()).unwrap()
    }

    fn rows_in(path: &Path) -> usize {
        let file = std::fs::File::open(path).unwrap();
        parquet::file::reader::SerializedFileReader::new(file)
            .map(|r| {
                use parquet::file::reader::FileReader;
                r.metadata().file_metadata().num_rows() as usize
            })
            .unwrap()
    }

    /// One-second slices over `builders` builders, and tables cut at 1 500 B: 100 rows a
    /// slice at 8 B a row (the estimate before any row group) is 800 B, so a cut every two
    /// slices.
    fn small_cuts(builders: u32) -> (SliceSpec, Rotation) {
        let spec = SliceSpec {
            slice_ps: 1_000_000_000,
            builders,
            lead_in_ps: 0,
            lead_out_ps: 0,
        };
        let rotation = Rotation {
            max_bytes: Some(1_500),
            ..Rotation::default()
        };
        (spec, rotation)
    }

    /// Tables cut every two slices: each committed pair of files is in the manifest on disk at
    /// once; a builder that dies keeps them (its manifest says through which slice), loses only
    /// its open file, and a restarted life numbers its tables past everything there.
    #[test]
    fn rotated_tables_are_recorded_as_they_commit_and_survive_a_death() {
        let tmp = tempfile::tempdir().unwrap();
        let (spec, rotation) = small_cuts(2);
        let create =
            || BuilderOutput::create(tmp.path(), 1, "b0", spec, true, vec![], rotation).unwrap();
        let mut first = create();
        let dir = first.dir().to_path_buf();
        for k in [0, 2, 4, 6, 8] {
            first.write_slice(slice_output(spec, k, 100)).unwrap();
        }
        let on_disk = read_manifest(&dir);
        assert_eq!(on_disk.files.len(), 4, "{on_disk:?}");
        let life = &on_disk.lives[0];
        assert_eq!(
            (life.file_number, life.last_file_number, life.committed),
            (0, Some(1), false)
        );
        assert_eq!(life.committed_through, Some(6));
        for n in 0..2 {
            for table in [PROMPTS, DELAYED] {
                assert_eq!(rows_in(&dir.join(table_file_name(table, n))), 200);
            }
        }
        drop(first); // a death: slice 8 is only in `coincidences-00002.parquet.inprogress`
        assert!(dir.join("coincidences-00002.parquet.inprogress").is_file());
        assert!(!dir.join("coincidences-00002.parquet").exists());

        let mut second = create();
        second.write_slice(slice_output(spec, 12, 100)).unwrap();
        let m = second.commit(true).unwrap();
        let numbers: Vec<(u32, Option<u32>, bool)> = m
            .lives
            .iter()
            .map(|l| (l.file_number, l.last_file_number, l.committed))
            .collect();
        assert_eq!(
            numbers,
            [(0, Some(1), false), (2, None, false), (3, None, true)]
        );
        assert!(dir.join("coincidences-00003.parquet").is_file());
        // The dead life covers what it committed, the new one from its first slice on.
        for (k, covered) in [(-5, true), (0, true), (6, true), (8, false), (10, false)] {
            assert_eq!(m.covers(k), covered, "slice {k}");
        }
        assert!(m.covers(12) && m.covers(1_000));
        // The dead life's open table is left as it was.
        assert!(dir.join("coincidences-00002.parquet.inprogress").is_file());
        // Counts carried from the committed tables only (slice 8 died with its file).
        assert_eq!(m.counts["prompts"], 500);
        assert_eq!(m.files.len(), 6);
        let listed: usize = m.files.iter().map(|f| f.rows as usize).sum();
        assert_eq!(listed, 1_000);
        assert_eq!(m, read_manifest(&dir));
    }

    /// A life killed between committing a cut and writing its manifest: the restart sets the
    /// committed but unlisted tables aside (`.unlisted`), so their pairs are not read as well
    /// as counted missing, and numbers its own tables past them.
    #[test]
    fn tables_committed_but_never_listed_are_set_aside_at_the_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let (spec, rotation) = small_cuts(1);
        let create =
            || BuilderOutput::create(tmp.path(), 1, "b0", spec, true, vec![], rotation).unwrap();
        let mut first = create();
        let dir = first.dir().to_path_buf();
        for k in [0, 1] {
            first.write_slice(slice_output(spec, k, 100)).unwrap();
        }
        let after_first_cut = std::fs::read(dir.join(BUILDER_MANIFEST)).unwrap();
        for k in [2, 3] {
            first.write_slice(slice_output(spec, k, 100)).unwrap();
        }
        assert!(dir.join("coincidences-00001.parquet").is_file());
        // The manifest write of the second cut never happened.
        std::fs::write(dir.join(BUILDER_MANIFEST), after_first_cut).unwrap();
        drop(first);
        let mut second = create();
        second.write_slice(slice_output(spec, 5, 100)).unwrap();
        let m = second.commit(true).unwrap();
        for table in [PROMPTS, DELAYED] {
            let name = table_file_name(table, 1);
            assert!(!dir.join(&name).exists(), "{name}");
            assert!(dir.join(format!("{name}.unlisted")).is_file(), "{name}");
        }
        let numbers: Vec<(u32, bool)> = m
            .lives
            .iter()
            .map(|l| (l.file_number, l.committed))
            .collect();
        assert_eq!(numbers, [(0, false), (1, false), (2, true)]);
        assert!(m.covers(1) && !m.covers(2) && !m.covers(3) && m.covers(5));
        assert_eq!(m.counts["prompts"], 300);
        let listed: u64 = m.files.iter().map(|f| f.rows).sum();
        assert_eq!(listed, 600);
    }

    /// `rotate_every` cuts by age alone (the size far away): a file per slice when each
    /// slice comes after the age has passed; none while it has not.
    #[test]
    fn tables_are_cut_by_age() {
        let tmp = tempfile::tempdir().unwrap();
        let (spec, _) = small_cuts(1);
        // An age far above how long three small slices take even on a loaded machine (at
        // 0.3 s a stalled CI run could have cut early).
        let rotation = Rotation {
            max_seconds: Some(1.0),
            ..Rotation::default()
        };
        let mut out =
            BuilderOutput::create(tmp.path(), 1, "b0", spec, false, vec![], rotation).unwrap();
        // Quickly, within the age: one file.
        for k in [0, 1, 2] {
            out.write_slice(slice_output(spec, k, 100)).unwrap();
        }
        assert!(out.manifest.files.is_empty(), "{:?}", out.manifest.files);
        // Each slice after the age: a cut after it.
        for k in [3, 4] {
            std::thread::sleep(std::time::Duration::from_millis(1_050));
            out.write_slice(slice_output(spec, k, 100)).unwrap();
        }
        let m = out.commit(true).unwrap();
        let rows: Vec<u64> = m.files.iter().map(|f| f.rows).collect();
        assert_eq!(rows, [400, 100], "{m:?}");
        assert_eq!(m.lives[0].last_file_number, Some(1));
    }

    /// Two slices fill a file exactly (the cut comes after the second): a cut right at the
    /// last slice leaves no empty file behind.
    #[test]
    fn a_cut_at_the_last_slice_leaves_no_empty_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (spec, rotation) = small_cuts(1);
        let mut out =
            BuilderOutput::create(tmp.path(), 1, "b0", spec, false, vec![], rotation).unwrap();
        for k in [0, 1] {
            out.write_slice(slice_output(spec, k, 100)).unwrap();
        }
        let m = out.commit(true).unwrap();
        assert_eq!(m.files.len(), 1, "{m:?}");
        assert_eq!(m.lives[0].last_file_number, None);
        let names: Vec<String> = std::fs::read_dir(builder_dir(tmp.path(), 1, "b0"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".parquet"))
            .collect();
        assert_eq!(names, ["coincidences-00000.parquet"]);
    }
}
