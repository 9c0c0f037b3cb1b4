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

use anyhow::{Context, Result, anyhow, bail};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};
use scandaq_core::run_state::RunMode;
use scandaq_sinks::coincidences::{DELAYED_FILE, PROMPTS_FILE};
use scandaq_sinks::manifest::FileRecord;
use scandaq_sinks::salvage::salvage;
use scandaq_sinks::{ParquetTableWriter, WriteOptions, singles};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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

fn sha256_file(path: &Path) -> Result<(String, u64)> {
    Ok(scandaq_sinks::castor::sha256_file(path)?)
}

/// Reads the footer of a committed Parquet file and hashes it: (rows, bytes, sha256).
pub fn verify_parquet(path: &Path) -> Result<(u64, u64, String)> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = SerializedFileReader::new(f)
        .map_err(|e| anyhow!("{}: Parquet footer unreadable: {e}", path.display()))?;
    let rows = reader.metadata().file_metadata().num_rows();
    let (sha, bytes) = sha256_file(path)?;
    Ok((u64::try_from(rows).unwrap_or(0), bytes, sha))
}

/// Order of the tables in `files`: singles, prompts, delayed, then the rest by name.
fn file_rank(name: &str) -> (u8, String) {
    let r = if name.starts_with("singles-") {
        0
    } else if name == PROMPTS_FILE {
        1
    } else if name == DELAYED_FILE {
        2
    } else {
        3
    };
    (r, name.to_string())
}

fn verify_listed(
    dir: &Path,
    files: &[FileRecord],
    problems: &mut Vec<String>,
) -> Vec<RecoveryNote> {
    files
        .iter()
        .map(|f| {
            let path = dir.join(&f.path);
            match verify_parquet_or_raw(&path) {
                Ok((rows, bytes, sha)) => {
                    let mut issues = Vec::new();
                    if rows != f.rows && f.path.ends_with(".parquet") {
                        issues.push(format!("footer says {rows} rows, manifest {}", f.rows));
                    }
                    if bytes != f.bytes {
                        issues.push(format!("{bytes} bytes, manifest {}", f.bytes));
                    }
                    if !f.sha256.is_empty() && sha != f.sha256 {
                        issues.push("sha256 differs from the manifest's".into());
                    }
                    if issues.is_empty() {
                        RecoveryNote {
                            file: f.path.clone(),
                            action: "verified".into(),
                            rows: f.rows,
                            bytes,
                            bytes_lost: 0,
                            note: "listed in the manifest; footer read, sha256 matches".into(),
                        }
                    } else {
                        problems.push(format!("{}: {}", f.path, issues.join("; ")));
                        RecoveryNote {
                            file: f.path.clone(),
                            action: "failed verification".into(),
                            rows,
                            bytes,
                            bytes_lost: 0,
                            note: issues.join("; "),
                        }
                    }
                }
                Err(e) => {
                    problems.push(format!("{}: {e:#}", f.path));
                    RecoveryNote {
                        file: f.path.clone(),
                        action: "failed verification".into(),
                        rows: 0,
                        bytes: 0,
                        bytes_lost: f.bytes,
                        note: format!("{e:#}"),
                    }
                }
            }
        })
        .collect()
}

/// Parquet files: footer + hash; other files (raw archives): hash only, rows as listed.
fn verify_parquet_or_raw(path: &Path) -> Result<(u64, u64, String)> {
    if path.extension().is_some_and(|e| e == "parquet") {
        verify_parquet(path)
    } else {
        let (sha, bytes) = sha256_file(path)?;
        Ok((0, bytes, sha))
    }
}

fn write_manifest_value(dir: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(scandaq_sinks::durable_file::write_atomic(
        &dir.join("manifest.json"),
        text.as_bytes(),
    )?)
}

/// The note of an interrupted file left as it is (nothing of it salvaged: all its bytes lost).
fn left_in_place(dir: &Path, name: &str, note: String) -> RecoveryNote {
    RecoveryNote {
        file: name.to_string(),
        action: "not salvaged".into(),
        rows: 0,
        bytes: 0,
        bytes_lost: std::fs::metadata(dir.join(name)).map_or(0, |m| m.len()),
        note,
    }
}

/// Recovers `dir` (see the module doc).
pub fn recover(dir: &Path) -> Result<RecoverReport> {
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "{}: no readable manifest.json, so this is not a scandaq run directory (give OUTDIR/run-NNNNNN)",
            dir.display()
        )
    })?;
    let mut value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", manifest_path.display()))?;
    let manifest: scandaq_sinks::Manifest = serde_json::from_value(value.clone())
        .with_context(|| format!("{}: not a scandaq manifest", manifest_path.display()))?;
    let mut problems = Vec::new();
    if manifest.complete || manifest.state == scandaq_core::run_state::RunState::Recovered {
        let notes = verify_listed(dir, &manifest.files, &mut problems);
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
    let listed: Vec<FileRecord> = manifest.files.clone();
    let mut notes = verify_listed(dir, &listed, &mut problems);
    let mut files: Vec<FileRecord> = listed
        .iter()
        .zip(&notes)
        .filter(|(_, n)| n.action == "verified")
        .map(|(f, _)| f.clone())
        .collect();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort_by_key(|n| file_rank(n));
    // Committed but unlisted tables (the process died after their rename).
    for name in names.iter().filter(|n| n.ends_with(".parquet")) {
        if listed.iter().any(|f| &f.path == name) {
            continue;
        }
        match verify_parquet(&dir.join(name)) {
            Ok((rows, bytes, sha256)) => {
                files.push(FileRecord {
                    path: name.clone(),
                    rows,
                    bytes,
                    sha256: sha256.clone(),
                });
                notes.push(RecoveryNote {
                    file: name.clone(),
                    action: "verified".into(),
                    rows,
                    bytes,
                    bytes_lost: 0,
                    note: "committed before the process died (not yet listed); footer read, sha256 computed".into(),
                });
            }
            Err(e) => {
                problems.push(format!("{name}: {e:#}"));
                notes.push(RecoveryNote {
                    file: name.clone(),
                    action: "failed verification".into(),
                    rows: 0,
                    bytes: 0,
                    bytes_lost: 0,
                    note: format!("{e:#}"),
                });
            }
        }
    }
    // Interrupted tables: NAME.parquet.inprogress (or .footerless left by an interrupted
    // recovery).
    for name in &names {
        let Some(final_name) = name
            .strip_suffix(".inprogress")
            .or_else(|| name.strip_suffix(".footerless"))
            .filter(|f| f.ends_with(".parquet"))
        else {
            continue;
        };
        let original = dir.join(name);
        if dir.join(final_name).exists() {
            if name.ends_with(".footerless") {
                // A recovery died after committing the salvaged file: finish its clean-up.
                let _ = std::fs::remove_file(&original);
            } else {
                notes.push(RecoveryNote {
                    file: name.clone(),
                    action: "not salvaged".into(),
                    rows: 0,
                    bytes: 0,
                    bytes_lost: std::fs::metadata(&original).map_or(0, |m| m.len()),
                    note: format!(
                        "{final_name} is already committed; this leftover was left in place"
                    ),
                });
            }
            continue;
        }
        let size = std::fs::metadata(&original).map_or(0, |m| m.len());
        let footerless = dir.join(format!("{final_name}.footerless"));
        if original != footerless {
            std::fs::rename(&original, &footerless)
                .with_context(|| format!("cannot rename {}", original.display()))?;
        }
        match salvage(dir, &footerless, final_name, manifest.run).map_err(anyhow::Error::from) {
            Ok(s) => match s.record {
                Some(rec) => {
                    let stop = s
                        .why_stopped
                        .map(|w| format!(" (stopped: {w})"))
                        .unwrap_or_default();
                    notes.push(RecoveryNote {
                        file: final_name.to_string(),
                        action: "salvaged".into(),
                        rows: rec.rows,
                        bytes: rec.bytes,
                        bytes_lost: s.bytes_lost,
                        note: format!(
                            "the writer was killed before closing the file (no footer): {} complete row group(s), {} rows rewritten from its pages; the last {} bytes (the row group being written) lost{stop}",
                            s.row_groups, rec.rows, s.bytes_lost
                        ),
                    });
                    files.push(rec);
                    std::fs::remove_file(&footerless)
                        .with_context(|| format!("cannot remove {}", footerless.display()))?;
                }
                None => {
                    let why = s.why_stopped.unwrap_or_else(|| {
                        "the writer was killed before it finished its first row group".into()
                    });
                    notes.push(RecoveryNote {
                        file: format!("{final_name}.footerless"),
                        action: "not salvaged".into(),
                        rows: 0,
                        bytes: 0,
                        bytes_lost: size,
                        note: format!(
                            "no footer (the writer was killed before closing the file) and no complete row group: {why}; {size} bytes lost (file kept as {final_name}.footerless)"
                        ),
                    });
                }
            },
            Err(e) => {
                if let Some(advice) =
                    disk_full_advice(&e, dir, &format!("rewrite {final_name}"), size)
                {
                    // The partial rewrite goes; the interrupted file stays for the next try.
                    let _ = std::fs::remove_file(dir.join(format!("{final_name}.inprogress")));
                    bail!("{advice} ({final_name}.footerless is kept)");
                }
                notes.push(RecoveryNote {
                file: format!("{final_name}.footerless"),
                action: "not salvaged".into(),
                rows: 0,
                bytes: 0,
                bytes_lost: size,
                note: format!(
                    "no footer (the writer was killed before closing the file): {e:#}; {size} bytes lost (file kept as {final_name}.footerless)"
                ),
            });
            }
        }
    }
    // The raw archive being written when the process died: cut at its last whole packet and
    // committed; then its tail (the packets whose singles the tables lost) is replayed.
    for name in &names {
        let Some(final_name) = name
            .strip_suffix(".inprogress")
            .filter(|f| f.starts_with("raw-") && f.ends_with(".sdq"))
        else {
            continue;
        };
        if dir.join(final_name).exists() {
            notes.push(left_in_place(
                dir,
                name,
                format!("{final_name} is already committed; this leftover was left in place"),
            ));
            continue;
        }
        match commit_archive(dir, name, final_name) {
            Ok(c) => {
                notes.push(RecoveryNote {
                    file: final_name.to_string(),
                    action: "committed".into(),
                    rows: c.record.rows,
                    bytes: c.record.bytes,
                    bytes_lost: c.bytes_cut,
                    note: format!(
                        "raw archive the writer was killed in: cut after its last whole packet ({} packets kept, {} bytes of a partial packet cut), synced and renamed",
                        c.record.rows, c.bytes_cut
                    ),
                });
                files.push(c.record);
            }
            Err(e) => {
                problems.push(format!("{name}: {e:#}"));
                notes.push(left_in_place(dir, name, format!("{e:#}")));
            }
        }
    }
    let archives: Vec<String> = files
        .iter()
        .map(|f| f.path.clone())
        .filter(|p| p.starts_with("raw-") && p.ends_with(".sdq"))
        .chain(
            names
                .iter()
                .filter(|n| n.starts_with("raw-") && n.ends_with(".sdq"))
                .cloned(),
        )
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if let Some(archive) = archives.first() {
        let path = dir.join(archive);
        if !files.iter().any(|f| &f.path == archive) {
            // Committed before the process died but not yet listed.
            let (sha256, bytes) = sha256_file(&path)?;
            files.push(FileRecord {
                path: archive.clone(),
                rows: 0,
                bytes,
                sha256,
            });
        }
        let now: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        match replay_archive_tail(dir, &path, &files, &now, manifest.run) {
            Ok(t) => {
                let rows = t.record.as_ref().map_or(0, |r| r.rows);
                notes.push(RecoveryNote {
                    file: t
                        .record
                        .as_ref()
                        .map_or_else(|| archive.clone(), |r| r.path.clone()),
                    action: "replayed".into(),
                    rows,
                    bytes: t.record.as_ref().map_or(0, |r| r.bytes),
                    bytes_lost: 0,
                    note: format!(
                        "{} ({} singles of the archive were already in the tables)",
                        t.note, t.archive_rows_before
                    ),
                });
                files.extend(t.record);
            }
            Err(e) => {
                let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                if let Some(advice) =
                    disk_full_advice(&e, dir, &format!("replay the tail of {archive}"), size)
                {
                    bail!("{advice}");
                }
                problems.push(format!("{archive}: tail not replayed: {e:#}"));
                notes.push(RecoveryNote {
                    file: archive.clone(),
                    action: "not replayed".into(),
                    rows: 0,
                    bytes: 0,
                    bytes_lost: 0,
                    note: format!("the archive's tail could not be replayed: {e:#}"),
                });
            }
        }
    }
    files.sort_by_key(|f| file_rank(&f.path));
    let section = RecoverySection {
        software_version: env!("CARGO_PKG_VERSION").to_string(),
        previous_state: manifest.state.to_string(),
        files: notes.clone(),
    };
    let obj = value
        .as_object_mut()
        .ok_or_else(|| anyhow!("{}: not a JSON object", manifest_path.display()))?;
    obj.insert("complete".into(), false.into());
    obj.insert("state".into(), "recovered".into());
    obj.insert("files".into(), serde_json::to_value(&files)?);
    obj.insert("recovery".into(), serde_json::to_value(&section)?);
    if obj.get("stop_reason").is_none_or(|v| v.is_null()) {
        obj.insert(
            "stop_reason".into(),
            serde_json::to_value(scandaq_core::run_state::StopReason::ProcessEnded)?,
        );
    }
    // The space the run reserved for its last manifest is given up for it if the disk is full
    // (and given back once it is written: the run is closed).
    let mut written = write_manifest_value(dir, &value);
    if written.is_err() && scandaq_sinks::manifest::release_manifest_space(dir) {
        written = write_manifest_value(dir, &value);
    }
    scandaq_sinks::manifest::release_manifest_space(dir);
    if let Err(e) = written {
        let needed = serde_json::to_string_pretty(&value).map_or(1 << 16, |t| t.len() as u64);
        if let Some(advice) = disk_full_advice(&e, dir, "write manifest.json", needed) {
            let _ = std::fs::remove_file(dir.join("manifest.json.tmp"));
            bail!("{advice}");
        }
        return Err(e);
    }
    Ok(RecoverReport {
        dir: dir.to_path_buf(),
        outcome: "recovered",
        notes,
        problems,
    })
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

// ---------------------------------------------------------------------------------------------
// The raw archive of a killed run: committed up to its last whole packet, and its tail
// replayed into the singles table.

/// What committing an interrupted archive gave.
struct ArchiveCommit {
    record: FileRecord,
    /// Bytes after the last whole packet, cut off.
    bytes_cut: u64,
}

/// Commits `dir/name` (`raw-NNNNN.sdq.inprogress`) as `dir/final_name`: the file is cut after
/// its last whole packet (a packet the writer was writing when killed is incomplete), synced
/// and renamed. Bytes that do not parse as a packet header are stepped over one at a time, as
/// a replay does (they were counted when received).
fn commit_archive(dir: &Path, name: &str, final_name: &str) -> Result<ArchiveCommit> {
    use scandaq_decoders::archive::{ARCHIVE_HEADER_LEN, parse_header};
    use scandaq_decoders::transport::{HEADER_LEN, TransportHeader};
    use std::os::unix::fs::FileExt;
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata()?.len();
    let mut head = [0u8; ARCHIVE_HEADER_LEN];
    file.read_exact_at(&mut head, 0).with_context(|| {
        format!(
            "{}: shorter than an archive header (killed before anything was archived)",
            path.display()
        )
    })?;
    let meta_len = parse_header(&head).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut pos = (ARCHIVE_HEADER_LEN + meta_len as usize) as u64;
    if pos > size {
        bail!(
            "{}: killed while its metadata was being written",
            path.display()
        );
    }
    let mut end = pos;
    let mut packets = 0u64;
    let mut header = [0u8; HEADER_LEN];
    while pos + HEADER_LEN as u64 <= size {
        file.read_exact_at(&mut header, pos)?;
        match TransportHeader::parse(&header) {
            Ok(h) => {
                let next = pos + h.packet_len() as u64;
                if next > size {
                    break; // the packet being written when the process died
                }
                packets += 1;
                pos = next;
                end = next;
            }
            Err(_) => pos += 1,
        }
    }
    if end < size {
        file.set_len(end)
            .with_context(|| format!("cannot cut {} at byte {end}", path.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    drop(file);
    let final_path = dir.join(final_name);
    std::fs::rename(&path, &final_path)
        .with_context(|| format!("cannot rename {}", path.display()))?;
    scandaq_sinks::durable_file::sync_dir(dir);
    let (sha256, bytes) = sha256_file(&final_path)?;
    Ok(ArchiveCommit {
        record: FileRecord {
            path: final_name.to_string(),
            rows: packets,
            bytes,
            sha256,
        },
        bytes_cut: size - end,
    })
}

/// Where the salvaged singles end: the last row's time and how many rows of the table have
/// that time (the archive's rows at that time are skipped that many times).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TableEnd {
    last_t_ps: Option<i64>,
    rows_at_last: u64,
    rows: u64,
}

/// Reads the end of the singles table from its last non-empty file.
fn singles_end(
    dir: &Path,
    files: &[FileRecord],
) -> Result<(TableEnd, Option<arrow_schema::SchemaRef>, Option<u32>)> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
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

/// The next free singles file index in `dir`.
fn next_singles_index(names: &[String]) -> u32 {
    names
        .iter()
        .filter_map(|n| n.strip_prefix("singles-")?.get(..5)?.parse::<u32>().ok())
        .max()
        .map_or(0, |i| i + 1)
}

/// What replaying the archive's tail gave.
struct TailReplay {
    record: Option<FileRecord>,
    note: String,
    /// Rows the archive gives up to the end of the salvaged table (it should equal the rows
    /// the table holds).
    archive_rows_before: u64,
}

/// Replays `archive` through the run's calibration into a scratch run inside `dir`, and
/// writes every single newer than the end of the salvaged table into a new singles file
/// (`singles-NNNNN.parquet`, the next index). The run's singles are in time order (the
/// merger releases them so), and the salvaged files hold a prefix of that order; the
/// archive's replay gives the same rows in the same order, so the tail is exactly the rows
/// after the salvaged table's last time (rows at that very time skipped as many times as the
/// table holds them).
fn replay_archive_tail(
    dir: &Path,
    archive: &Path,
    files: &[FileRecord],
    names: &[String],
    run: u64,
) -> Result<TailReplay> {
    use crate::acquire::live::{
        InputConfig, InputSpec, LiveConfig, LiveHandles, RunLimits, run_live,
    };
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    let (end, schema, clock_hz) = singles_end(dir, files)?;
    let schema = schema.unwrap_or_else(|| singles::schema(false));
    let has = |c: &str| schema.fields().iter().any(|f| f.name() == c);
    if has("x_mm") || has("photon_id") {
        bail!(
            "the run's singles carry derived columns (positions or photon ids), which a recovery does not re-derive; replay {} with `scandaq replay` for its tail",
            archive.display()
        );
    }
    let calib_dir = dir.join("calib");
    let has_tables = std::fs::read_dir(&calib_dir)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".tsv"))
        })
        .unwrap_or(false);
    let calibration = if has_tables {
        crate::process::calib_load::load_calibration_dir(&calib_dir)
            .with_context(|| format!("the run's calibration in {}", calib_dir.display()))?
    } else {
        crate::process::calib_load::LoadedCalibration::none()
    };
    let scratch = dir.join(".recover-tail");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("cannot remove {}", scratch.display()))?;
    }
    std::fs::create_dir(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let (streams, _) =
        crate::commands::replay::archive_stream_settings(archive, None).unwrap_or_default();
    let config = LiveConfig {
        inputs: vec![InputConfig {
            spec: InputSpec::Archive(archive.to_path_buf()),
            allow: vec![],
            policy: crate::acquire::ring::OverflowPolicy::Block,
            ring_chunks: 64,
            ingest: Default::default(),
        }],
        out_dir: scratch.clone(),
        limits: RunLimits::default(),
        raw_columns: has("frame"),
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
    };
    let result = (|| -> Result<TailReplay> {
        let summary = run_live(&config, &calibration, LiveHandles::new(RunMode::Recover))?;
        if let Some(e) = &summary.error {
            bail!("replaying {}: {e}", archive.display());
        }
        let mut replayed: Vec<PathBuf> = std::fs::read_dir(&summary.dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("singles-") && n.ends_with(".parquet"))
            })
            .collect();
        replayed.sort();
        let name = format!("singles-{:05}.parquet", next_singles_index(names));
        let mut writer: Option<ParquetTableWriter> = None;
        let (mut before, mut at_last_skipped, mut tail_rows) = (0u64, 0u64, 0u64);
        let (mut first_t, mut last_t) = (None, None);
        for path in &replayed {
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path)?)?.build()?;
            for batch in reader {
                let batch = batch?;
                if batch.schema().fields() != schema.fields() {
                    bail!("the archive's replay gives singles of another schema than the run's");
                }
                let t = batch.column(0).as_primitive::<Int64Type>().values();
                // Rows of this batch already in the table.
                let mut start = 0usize;
                if let Some(last) = end.last_t_ps {
                    start = t.partition_point(|&x| x < last);
                    while start < t.len() && t[start] == last && at_last_skipped < end.rows_at_last
                    {
                        start += 1;
                        at_last_skipped += 1;
                    }
                }
                before += start as u64;
                if start == t.len() {
                    continue;
                }
                first_t.get_or_insert(t[start]);
                last_t = t.last().copied();
                let w = match writer.as_mut() {
                    Some(w) => w,
                    None => writer.insert(ParquetTableWriter::create(
                        dir,
                        &name,
                        schema.clone(),
                        &WriteOptions {
                            commit_interval: None,
                            ..singles::write_options()
                        },
                        vec![
                            ("scandaq.run".into(), run.to_string()),
                            ("scandaq.table".into(), "singles".into()),
                            (
                                "scandaq.software_version".into(),
                                env!("CARGO_PKG_VERSION").into(),
                            ),
                            (
                                "scandaq.recovered".into(),
                                format!(
                                    "replayed by scandaq recover from the raw archive {}: the singles newer than the last salvaged row",
                                    archive.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
                                ),
                            ),
                        ],
                    )?),
                };
                let tail = batch.slice(start, batch.num_rows() - start);
                tail_rows += tail.num_rows() as u64;
                w.write(&tail)?;
            }
        }
        let record = match writer {
            Some(mut w) => {
                if let (Some(a), Some(b)) = (first_t, last_t) {
                    w.add_metadata("first_t_ps", a.to_string());
                    w.add_metadata("last_t_ps", b.to_string());
                }
                Some(w.commit()?)
            }
            None => None,
        };
        let consistent = if before == end.rows {
            String::new()
        } else {
            format!(
                "; note: the archive gives {before} singles up to the table's last row where the table holds {}",
                end.rows
            )
        };
        Ok(TailReplay {
            record,
            note: format!(
                "replayed {} through the run's calibration: {tail_rows} singles newer than the last salvaged one (t_ps {}) written{consistent}; coincidences of the tail are not re-derived (replay the archive for them)",
                archive
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                end.last_t_ps
                    .map_or_else(|| "none".to_string(), |t| t.to_string()),
            ),
            archive_rows_before: before,
        })
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    if result.is_err() {
        // A partial tail file must not be taken for a committed one by the next recovery.
        let name = format!(
            "singles-{:05}.parquet.inprogress",
            next_singles_index(names)
        );
        let _ = std::fs::remove_file(dir.join(name));
    }
    result
}

/// When `e` is a full disk: what the recovery needs (bytes, where) and what to do.
fn disk_full_advice(e: &anyhow::Error, dir: &Path, what: &str, needed: u64) -> Option<String> {
    let full = e.chain().any(|c| {
        c.downcast_ref::<scandaq_sinks::SinkError>()
            .is_some_and(scandaq_sinks::SinkError::is_disk_full)
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(scandaq_sinks::error::is_disk_full)
    });
    if !full {
        return None;
    }
    let free = scandaq_sinks::error::free_bytes(dir).unwrap_or(0);
    Some(format!(
        "the disk holding {} is full: recover needs about {} free there to {what} ({} free now); free space (or copy the run directory to a disk with room) and run `scandaq recover` again — nothing is lost meanwhile",
        dir.display(),
        scandaq_sinks::error::human_bytes(needed),
        scandaq_sinks::error::human_bytes(free),
    ))
}
