//! Sink errors: what failed, on which path, and what the user can do.

use std::path::{Path, PathBuf};

/// A sink could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// File-system error on a path.
    #[error("{action} {path}: {source}{hint}", hint = io_hint(source))]
    Io {
        /// What was being done ("creating", "writing", ...).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Parquet/Arrow encoding error.
    #[error("writing Parquet file {path}: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Library message.
        message: String,
    },
    /// The output directory is unusable.
    #[error("{0}")]
    OutputDir(String),
}

fn io_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (check the directory's permissions or choose another --out)"
        }
        std::io::ErrorKind::NotFound => " (create the directory first, or choose another --out)",
        std::io::ErrorKind::StorageFull => {
            " (the disk is full: free space or choose another --out)"
        }
        _ => "",
    }
}

impl SinkError {
    /// An I/O error on `path`.
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl SinkError {
    /// True when the error is a full disk (ENOSPC) or an exceeded quota (EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Io { source, .. } => is_disk_full_io(source),
            Self::Parquet { message, .. } => {
                message.contains("No space left on device") || message.contains("quota exceeded")
            }
            Self::OutputDir(_) => false,
        }
    }
}

/// True for ENOSPC (no space left on device) and EDQUOT (disk quota exceeded).
pub fn is_disk_full_io(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(28) | Some(122))
}
