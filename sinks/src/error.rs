//! Sink errors: what failed, on which path, and what the user can do. A full disk (ENOSPC,
//! EDQUOT) on any write, sync or rename is its own variant, [`SinkError::DiskFull`], so a run
//! can stop on it at once and say so (docs/reliability.md).

use std::path::{Path, PathBuf};

/// A sink could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// File-system error on a path.
    #[error("{action} {path}: {source}{hint}", path = path.display(), hint = io_hint(source))]
    Io {
        /// What was being done ("creating", "writing", ...).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file system holding `path` is full (or the user's quota is): nothing more can be
    /// written there. What was committed before stays committed.
    #[error("{}", disk_full_message(action, path, *free_bytes, *needed_bytes))]
    DiskFull {
        /// What was being done ("writing", "syncing", "renaming", ...).
        action: &'static str,
        /// The file being written.
        path: PathBuf,
        /// Bytes free for unprivileged users on its file system when the error was seen
        /// (`None` when that could not be read).
        free_bytes: Option<u64>,
        /// Bytes the operation needed, when known.
        needed_bytes: Option<u64>,
    },
    /// Parquet/Arrow encoding error.
    #[error("writing Parquet file {path}: {message}", path = path.display())]
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

fn disk_full_message(action: &str, path: &Path, free: Option<u64>, needed: Option<u64>) -> String {
    let free = free.map_or_else(String::new, |f| format!(", {} free", human_bytes(f)));
    let needed = needed.map_or_else(String::new, |n| format!(", {} needed", human_bytes(n)));
    format!(
        "disk full: {action} {}{free}{needed}; free space on that file system or choose another --out (everything committed before is kept; an interrupted run is finalised with `scandaq recover RUN_DIR`)",
        path.display()
    )
}

/// `12.3 MB` style (decimal units), exact bytes below 10 kB.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if b < 10_000 {
        return format!("{b} bytes");
    }
    let mut v = b as f64;
    let mut unit = "bytes";
    for u in UNITS {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

fn io_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (check the directory's permissions or choose another --out)"
        }
        std::io::ErrorKind::NotFound => " (create the directory first, or choose another --out)",
        _ => "",
    }
}

/// Whether `e` says the file system (or the user's quota) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().map(nix::errno::Errno::from_raw),
        Some(nix::errno::Errno::ENOSPC | nix::errno::Errno::EDQUOT)
    ) || e.kind() == std::io::ErrorKind::StorageFull
}

/// Bytes available to unprivileged users on the file system holding `path` (or its nearest
/// existing ancestor).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let mut p = Some(path);
    while let Some(q) = p {
        if let Ok(s) = nix::sys::statvfs::statvfs(q) {
            // The field types differ between platforms (u32 on some).
            #[allow(clippy::useless_conversion)]
            return Some(
                u64::from(s.blocks_available()).saturating_mul(u64::from(s.fragment_size())),
            );
        }
        p = q.parent();
    }
    None
}

impl SinkError {
    /// An I/O error on `path`; a full disk becomes [`SinkError::DiskFull`].
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        if is_disk_full(&source) {
            return Self::disk_full(action, path, None);
        }
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// A full disk while `action` on `path` (free space read now).
    pub fn disk_full(action: &'static str, path: &Path, needed_bytes: Option<u64>) -> Self {
        Self::DiskFull {
            action,
            path: path.to_path_buf(),
            free_bytes: free_bytes(path),
            needed_bytes,
        }
    }

    /// Whether this is a full disk (also when the Parquet library carried the OS error as
    /// text: its `External` errors keep only the message).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::DiskFull { .. } => true,
            Self::Parquet { message, .. } => {
                message.contains("No space left on device")
                    || message.contains("Disk quota exceeded")
            }
            Self::Io { .. } | Self::OutputDir(_) => false,
        }
    }

    /// The path the error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Io { path, .. } | Self::DiskFull { path, .. } | Self::Parquet { path, .. } => {
                Some(path)
            }
            Self::OutputDir(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_and_edquot_become_disk_full_naming_the_path() {
        for errno in [nix::errno::Errno::ENOSPC, nix::errno::Errno::EDQUOT] {
            let e = SinkError::io(
                "writing",
                Path::new("/data/run-000001/singles-00000.parquet.inprogress"),
                std::io::Error::from_raw_os_error(errno as i32),
            );
            assert!(e.is_disk_full());
            let m = e.to_string();
            assert!(
                m.starts_with("disk full: writing /data/run-000001/singles"),
                "{m}"
            );
            assert!(m.contains("choose another --out"), "{m}");
        }
        let other = SinkError::io(
            "writing",
            Path::new("/x"),
            std::io::Error::from_raw_os_error(nix::errno::Errno::EIO as i32),
        );
        assert!(!other.is_disk_full());
        assert_eq!(human_bytes(12_345_678), "12.3 MB");
    }
}
