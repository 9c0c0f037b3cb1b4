//! `scandaq recover RUN_DIR`: finalises the run directory of a process that died (its
//! manifest still says `complete: false`, `state: "running"`).
//!
//! 1. Committed files (renamed from `.inprogress`, so their footer was written and synced) are
//!    verified with a real Parquet footer read; their rows come from the footer and their
//!    SHA-256 is computed (and compared with the manifest's, when it lists them).
//! 2. Each `NAME.parquet.inprogress` is a Parquet file without a footer. It is salvaged: its
//!    page headers are walked from the `PAR1` magic on, the pages are cut into column chunks
//!    and row groups (a dictionary-encoded column's chunk starts with its dictionary page,
//!    which fixes the row count of each row group), every row group whose column chunks are
//!    all complete is decoded through a footer rebuilt in memory from the table's known schema,
//!    and the rows are rewritten into `NAME.parquet` (written atomically, like any table). The
//!    tail — the row group the writer was filling when it was killed — is lost and counted.
//!    The original is renamed `NAME.parquet.footerless` while this happens and removed once
//!    the salvaged file is committed (a recovery that dies itself resumes from it).
//! 3. The manifest is rewritten atomically: `complete` stays false (the run did not end
//!    cleanly), `state: "recovered"`, `files` lists what is now committed with rows, bytes and
//!    sha256, and `recovery` holds a note per file. Fields the recovery does not know are kept.
//!
//! Running it again on a recovered run re-verifies the files and changes nothing; a complete
//! run is verified and left alone.
//!
//! The work is split by job: [`verify`] (committed files), [`interrupted_tables`] (salvaging
//! footerless tables), [`archive`] (cutting and committing the raw archive), [`tail`] and
//! [`tail_writer`] (replaying the archive's tail into a new singles file), [`manifest`]
//! (reading and rewriting the manifest) and [`disk_full`] (the advice given when the disk is
//! full). A [`Recovery`] owns what the steps build up: the files now committed, a note per
//! file and the problems found.

mod archive;
mod disk_full;
mod interrupted_tables;
mod manifest;
mod tail;
mod tail_writer;
mod verify;

use anyhow::{Context, Result};
use scandaq_core::run_state::RunState;
use scandaq_sinks::Manifest;
use scandaq_sinks::coincidences::{DELAYED_TABLE, PROMPTS_TABLE};
use scandaq_sinks::manifest::FileRecord;
use scandaq_sinks::table_file_index;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use verify::verify_parquet;

/// What recovery did with one file (the manifest's `recovery.files`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryNote {
    /// File name (the committed name, or the leftover's name when nothing was salvaged).
    pub file: String,
    /// `verified`, `salvaged`, `not salvaged`, or `failed verification`.
    pub action: String,
    /// Rows in the committed file.
    pub rows: u64,
    /// Bytes of the committed file.
    pub bytes: u64,
    /// Bytes of the interrupted file that could not be salvaged.
    pub bytes_lost: u64,
    /// Human-readable detail.
    pub note: String,
}

impl RecoveryNote {
    /// A leftover file nothing could be salvaged from: `size` bytes lost, why in `note`.
    pub(super) fn not_salvaged(file: String, size: u64, note: String) -> Self {
        Self {
            file,
            action: "not salvaged".into(),
            rows: 0,
            bytes: 0,
            bytes_lost: size,
            note,
        }
    }
}

/// The manifest's `recovery` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverySection {
    /// scandaq version that recovered the run.
    pub software_version: String,
    /// The state the manifest had before (`running` for a killed process).
    pub previous_state: String,
    /// One note per file.
    pub files: Vec<RecoveryNote>,
}

/// The outcome of `scandaq recover`.
#[derive(Clone, Debug)]
pub struct RecoverReport {
    /// The run directory.
    pub dir: PathBuf,
    /// `complete`: the run had ended cleanly, nothing was changed.
    /// `already recovered`: verified again, nothing was changed. `recovered`: manifest rewritten.
    pub outcome: &'static str,
    /// Per-file notes.
    pub notes: Vec<RecoveryNote>,
    /// Problems found while verifying (non-empty = exit status 1).
    pub problems: Vec<String>,
}

/// Recovers `dir` (see the module doc).
pub fn recover(dir: &Path) -> Result<RecoverReport> {
    let (value, manifest) = manifest::read_manifest(dir)?;
    if manifest.complete || manifest.state == RunState::Recovered {
        let mut problems = Vec::new();
        let notes = verify::verify_listed(dir, &manifest.files, &mut problems);
        return Ok(RecoverReport {
            dir: dir.to_path_buf(),
            outcome: if manifest.complete {
                "complete"
            } else {
                "already recovered"
            },
            notes,
            problems,
        });
    }
    let mut recovery = Recovery::start(dir, &manifest)?;
    recovery.verify_unlisted_tables();
    recovery.salvage_interrupted_tables()?;
    recovery.commit_interrupted_archives();
    recovery.replay_archive_tail()?;
    recovery.rewrite_manifest(value, &manifest)?;
    Ok(RecoverReport {
        dir: dir.to_path_buf(),
        outcome: "recovered",
        notes: recovery.notes,
        problems: recovery.problems,
    })
}

/// The state of one recovery of a killed run, built up step by step.
struct Recovery<'a> {
    /// The run directory.
    dir: &'a Path,
    /// The run number (written into the files the recovery creates).
    run: u64,
    /// The files the manifest listed.
    listed: Vec<FileRecord>,
    /// The names in `dir` when the recovery started, in [`file_rank`] order.
    names: Vec<String>,
    /// The files now committed (the manifest's new `files`).
    files: Vec<FileRecord>,
    /// One note per file.
    notes: Vec<RecoveryNote>,
    /// Problems found (non-empty = exit status 1).
    problems: Vec<String>,
}

impl<'a> Recovery<'a> {
    /// Verifies the files the manifest lists (those that pass stay listed) and lists `dir`.
    fn start(dir: &'a Path, manifest: &Manifest) -> Result<Self> {
        let listed: Vec<FileRecord> = manifest.files.clone();
        let mut problems = Vec::new();
        let notes = verify::verify_listed(dir, &listed, &mut problems);
        let files: Vec<FileRecord> = listed
            .iter()
            .zip(&notes)
            .filter(|(_, n)| n.action == "verified")
            .map(|(f, _)| f.clone())
            .collect();
        let mut names = list_names(dir)?;
        names.sort_by_key(|n| file_rank(n));
        Ok(Self {
            dir,
            run: manifest.run,
            listed,
            names,
            files,
            notes,
            problems,
        })
    }
}

/// The names of the entries of `dir` (those that are valid UTF-8).
fn list_names(dir: &Path) -> Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect())
}

/// Order of the tables in `files`: singles, prompts, delayed, then the rest by name.
fn file_rank(name: &str) -> (u8, String) {
    let r = if name.starts_with("singles-") {
        0
    } else if table_file_index(name, PROMPTS_TABLE).is_some() {
        1
    } else if table_file_index(name, DELAYED_TABLE).is_some() {
        2
    } else {
        3
    };
    (r, name.to_string())
}

/// Prints a recovery report.
pub fn print_report(r: &RecoverReport) {
    match r.outcome {
        "complete" => println!(
            "{}: the run ended cleanly (complete: true); nothing to recover",
            r.dir.display()
        ),
        "already recovered" => println!(
            "{}: already recovered; files verified again, nothing changed",
            r.dir.display()
        ),
        _ => println!(
            "{}: recovered (state: recovered, complete: false)",
            r.dir.display()
        ),
    }
    for n in &r.notes {
        println!(
            "  {:<20} {}: {} rows, {} bytes{} — {}",
            n.action,
            n.file,
            n.rows,
            n.bytes,
            if n.bytes_lost > 0 {
                format!(", {} bytes lost", n.bytes_lost)
            } else {
                String::new()
            },
            n.note
        );
    }
    for p in &r.problems {
        println!("  problem: {p}");
    }
    if r.outcome == "recovered" {
        println!("  manifest {}", r.dir.join("manifest.json").display());
    }
}
