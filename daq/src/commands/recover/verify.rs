//! Verifying committed files of a killed run: a Parquet file's footer is read and every file
//! is hashed, and compared with what the manifest lists (when it lists the file).

use super::{Recovery, RecoveryNote};
use anyhow::{Context, Result, anyhow};
use parquet::file::reader::{FileReader, SerializedFileReader};
use scandaq_sinks::manifest::FileRecord;
use std::path::Path;

/// Hashes a file: (sha256, bytes).
pub(super) fn sha256_file(path: &Path) -> Result<(String, u64)> {
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

/// Verifies the files the manifest lists: a note each, and a problem for each that is
/// unreadable or differs from its listing.
pub(super) fn verify_listed(
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

impl Recovery<'_> {
    /// Committed but unlisted tables (the process died after their rename): verified and
    /// listed.
    pub(super) fn verify_unlisted_tables(&mut self) {
        let dir = self.dir;
        for name in self.names.iter().filter(|n| n.ends_with(".parquet")) {
            if self.listed.iter().any(|f| &f.path == name) {
                continue;
            }
            match verify_parquet(&dir.join(name)) {
                Ok((rows, bytes, sha256)) => {
                    self.files.push(FileRecord {
                        path: name.clone(),
                        rows,
                        bytes,
                        sha256: sha256.clone(),
                    });
                    self.notes.push(RecoveryNote {
                        file: name.clone(),
                        action: "verified".into(),
                        rows,
                        bytes,
                        bytes_lost: 0,
                        note: "committed before the process died (not yet listed); footer read, sha256 computed".into(),
                    });
                }
                Err(e) => {
                    self.problems.push(format!("{name}: {e:#}"));
                    self.notes.push(RecoveryNote {
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
    }
}
