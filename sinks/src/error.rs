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
