//! Replaying the tail of a killed run's raw archive: the archive is replayed through the
//! run's calibration into a scratch run, and the singles newer than the salvaged table's end
//! are written into a new singles file ([`super::tail_writer`]).

use super::disk_full::disk_full_advice;
use super::tail_writer::{TailReplay, TailWriter, singles_end};
use super::verify::sha256_file;
use super::{Recovery, RecoveryNote, list_names};
use crate::acquire::live::{InputConfig, InputSpec, LiveConfig, LiveHandles, RunLimits, run_live};
use crate::process::calib_load::LoadedCalibration;
use anyhow::{Context, Result, bail};
use scandaq_core::run_state::RunMode;
use scandaq_sinks::manifest::FileRecord;
use scandaq_sinks::singles;
use std::path::{Path, PathBuf};

impl Recovery<'_> {
    /// Replays the tail of the run's first raw archive (the packets whose singles the tables
    /// lost) into a new singles file, and notes what it gave.
    pub(super) fn replay_archive_tail(&mut self) -> Result<()> {
        let Some(archive) = self.first_archive() else {
            return Ok(());
        };
        let dir = self.dir;
        let path = dir.join(&archive);
        if !self.files.iter().any(|f| f.path == archive) {
            // Committed before the process died but not yet listed.
            let (sha256, bytes) = sha256_file(&path)?;
            self.files.push(FileRecord {
                path: archive.clone(),
                rows: 0,
                bytes,
                sha256,
            });
        }
        let now = list_names(dir)?;
        match replay_tail(dir, &path, &self.files, &now, self.run) {
            Ok(t) => {
                self.notes.push(RecoveryNote {
                    file: t
                        .record
                        .as_ref()
                        .map_or_else(|| archive.clone(), |r| r.path.clone()),
                    action: "replayed".into(),
                    rows: t.record.as_ref().map_or(0, |r| r.rows),
                    bytes: t.record.as_ref().map_or(0, |r| r.bytes),
                    bytes_lost: 0,
                    note: format!(
                        "{} ({} singles of the archive were already in the tables)",
                        t.note, t.archive_rows_before
                    ),
                });
                self.files.extend(t.record);
            }
            Err(e) => {
                let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                if let Some(advice) =
                    disk_full_advice(&e, dir, &format!("replay the tail of {archive}"), size)
                {
                    bail!("{advice}");
                }
                self.problems
                    .push(format!("{archive}: tail not replayed: {e:#}"));
                self.notes.push(RecoveryNote {
                    file: archive.clone(),
                    action: "not replayed".into(),
                    rows: 0,
                    bytes: 0,
                    bytes_lost: 0,
                    note: format!("the archive's tail could not be replayed: {e:#}"),
                });
            }
        }
        Ok(())
    }

    /// The first raw archive by name, among the committed files and the names in the run
    /// directory.
    fn first_archive(&self) -> Option<String> {
        let is_archive = |p: &String| p.starts_with("raw-") && p.ends_with(".sdq");
        self.files
            .iter()
            .map(|f| f.path.clone())
            .filter(is_archive)
            .chain(self.names.iter().filter(|n| is_archive(n)).cloned())
            .min()
    }
}

/// The next free singles file index in `dir`.
fn next_singles_index(names: &[String]) -> u32 {
    names
        .iter()
        .filter_map(|n| n.strip_prefix("singles-")?.get(..5)?.parse::<u32>().ok())
        .max()
        .map_or(0, |i| i + 1)
}

/// Replays `archive` through the run's calibration into a scratch run inside `dir`, and
/// writes every single newer than the end of the salvaged table into a new singles file
/// (`singles-NNNNN.parquet`, the next index). The run's singles are in time order (the
/// merger releases them so), and the salvaged files hold a prefix of that order; the
/// archive's replay gives the same rows in the same order, so the tail is exactly the rows
/// after the salvaged table's last time (rows at that very time skipped as many times as the
/// table holds them).
fn replay_tail(
    dir: &Path,
    archive: &Path,
    files: &[FileRecord],
    names: &[String],
    run: u64,
) -> Result<TailReplay> {
    let (end, schema, clock_hz) = singles_end(dir, files)?;
    let schema = schema.unwrap_or_else(|| singles::schema(false));
    let has = |c: &str| schema.fields().iter().any(|f| f.name() == c);
    if has("x_mm") || has("photon_id") {
        bail!(
            "the run's singles carry derived columns (positions or photon ids), which a recovery does not re-derive; replay {} with `scandaq replay` for its tail",
            archive.display()
        );
    }
    let calibration = run_calibration(dir)?;
    let scratch = fresh_scratch_dir(dir)?;
    let config = tail_replay_config(archive, &scratch, has("frame"), clock_hz);
    let name = format!("singles-{:05}.parquet", next_singles_index(names));
    let result = (|| -> Result<TailReplay> {
        let summary = run_live(&config, &calibration, LiveHandles::new(RunMode::Recover))?;
        if let Some(e) = &summary.error {
            bail!("replaying {}: {e}", archive.display());
        }
        let mut tail = TailWriter::new(dir, name.clone(), schema.clone(), end, archive, run);
        for path in &singles_files(&summary.dir)? {
            tail.write_file(path)?;
        }
        tail.finish()
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    if result.is_err() {
        // A partial tail file must not be taken for a committed one by the next recovery.
        let _ = std::fs::remove_file(dir.join(format!("{name}.inprogress")));
    }
    result
}

/// The run's calibration, from the tables in `dir/calib` (none when it holds no table).
fn run_calibration(dir: &Path) -> Result<LoadedCalibration> {
    let calib_dir = dir.join("calib");
    let has_tables = std::fs::read_dir(&calib_dir)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".tsv"))
        })
        .unwrap_or(false);
    if has_tables {
        crate::process::calib_load::load_calibration_dir(&calib_dir)
            .with_context(|| format!("the run's calibration in {}", calib_dir.display()))
    } else {
        Ok(LoadedCalibration::none())
    }
}

/// An empty `dir/.recover-tail` for the scratch replay (a leftover one is removed first).
fn fresh_scratch_dir(dir: &Path) -> Result<PathBuf> {
    let scratch = dir.join(".recover-tail");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("cannot remove {}", scratch.display()))?;
    }
    std::fs::create_dir(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    Ok(scratch)
}

/// The scratch replay of `archive` into `scratch`: singles only (raw columns when the run's
/// table has them), at the run's clock, the archive's stream settings, one file per hour.
fn tail_replay_config(
    archive: &Path,
    scratch: &Path,
    raw_columns: bool,
    clock_hz: Option<u32>,
) -> LiveConfig {
    let (streams, _) =
        crate::commands::replay::archive_stream_settings(archive, None).unwrap_or_default();
    LiveConfig {
        inputs: vec![InputConfig {
            spec: InputSpec::Archive(archive.to_path_buf()),
            allow: vec![],
            policy: crate::acquire::ring::OverflowPolicy::Block,
            ring_chunks: 64,
            ingest: Default::default(),
        }],
        out_dir: scratch.to_path_buf(),
        limits: RunLimits::default(),
        raw_columns,
        raw_archive: false,
        stop_at_end_of_stream: false,
        stats_every: None,
        clock: scandaq_core::ClockModel {
            frequency_hz: clock_hz
                .unwrap_or(scandaq_core::ClockModel::TOFPET2_DEFAULT.frequency_hz),
        },
        coincidences: crate::process::coinc_stage::CoincidenceOptions {
            enabled: false,
            ..Default::default()
        },
        rotation: crate::process::pipeline::Rotation {
            commit_interval_s: Some(3600.0),
            ..Default::default()
        },
        streams,
        ..LiveConfig::default()
    }
}

/// The singles files of the scratch replay in `dir`, in name order.
fn singles_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut replayed: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("singles-") && n.ends_with(".parquet"))
        })
        .collect();
    replayed.sort();
    Ok(replayed)
}
