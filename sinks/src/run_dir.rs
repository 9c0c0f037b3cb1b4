//! Run directories: `OUTDIR/run-NNNNNN/`, numbered from a counter persisted in OUTDIR
//! (`.scandaq-last-run`) so a run number is never reused, even after directories are deleted.
//! Runs started at the same moment into one output directory take the counter in turn (an
//! exclusive lock on `.scandaq-runs.lock`), so each gets its own number.
//!
//! Names are `run-` and the number with at least six digits ([`run_dir_name`]): `run-000001`
//! to `run-999999`, then `run-1000000` and on. Within six digits the names sort as the numbers
//! do; past them a plain sort of names does not (`run-1000000` < `run-999999`), so everything
//! that orders runs orders them by [`run_number_of`] (and `ls -v` lists them in order).

use crate::error::SinkError;
use std::io::Write;
use std::path::{Path, PathBuf};

const COUNTER_FILE: &str = ".scandaq-last-run";
const LOCK_FILE: &str = ".scandaq-runs.lock";

/// An allocated run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    /// Run number.
    pub run: u64,
    /// `OUTDIR/run-NNNNNN`.
    pub path: PathBuf,
}

/// The directory name of run `run`: `run-000042`, `run-1000000`.
pub fn run_dir_name(run: u64) -> String {
    format!("run-{run:06}")
}

/// The run number a directory name gives (`run-000042` -> 42), or None for other names.
pub fn run_number_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("run-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn highest_existing_run(outdir: &Path) -> u64 {
    std::fs::read_dir(outdir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| run_number_of(e.file_name().to_str()?))
        .max()
        .unwrap_or(0)
}

impl RunDir {
    /// Allocates the next run number in `outdir` and creates its directory.
    ///
    /// `outdir` is created when missing if its parent exists; a missing parent is an error
    /// (most likely a typo in the path).
    pub fn allocate(outdir: &Path) -> Result<Self, SinkError> {
        if !outdir.exists() {
            let parent = outdir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(SinkError::OutputDir(format!(
                    "output directory {} does not exist, nor does its parent {}: check the path, or create it with `mkdir -p {}`",
                    outdir.display(),
                    parent.display(),
                    outdir.display()
                )));
            }
            std::fs::create_dir(outdir)
                .map_err(|e| SinkError::io("creating output directory", outdir, e))?;
        } else if !outdir.is_dir() {
            return Err(SinkError::OutputDir(format!(
                "output path {} exists but is not a directory: choose another --out",
                outdir.display()
            )));
        }
        // Held until this function returns: one allocation at a time per output directory.
        let lock_path = outdir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| SinkError::io("opening the run-number lock", &lock_path, e))?;
        lock.lock()
            .map_err(|e| SinkError::io("locking the run-number lock", &lock_path, e))?;
        let counter_path = outdir.join(COUNTER_FILE);
        let last = std::fs::read_to_string(&counter_path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let mut run = last.max(highest_existing_run(outdir)) + 1;
        let path = loop {
            let path = outdir.join(run_dir_name(run));
            match std::fs::create_dir(&path) {
                Ok(()) => break path,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => run += 1,
                Err(e) => return Err(SinkError::io("creating run directory", &path, e)),
            }
        };
        let tmp = outdir.join(format!("{COUNTER_FILE}.{}.tmp", std::process::id()));
        let write_counter = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{run}")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &counter_path)
        };
        write_counter().map_err(|e| SinkError::io("writing run counter", &counter_path, e))?;
        Ok(Self { run, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_allocations_get_distinct_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("runs");
        std::fs::create_dir(&out).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let out = out.clone();
                std::thread::spawn(move || RunDir::allocate(&out).unwrap().run)
            })
            .collect();
        let mut runs: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        runs.sort_unstable();
        assert_eq!(runs, (1..=8).collect::<Vec<u64>>());
        let counter = std::fs::read_to_string(out.join(COUNTER_FILE)).unwrap();
        assert_eq!(counter.trim(), "8");
    }

    #[test]
    fn run_numbers_past_999999_keep_counting_and_order_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("runs");
        std::fs::create_dir(&out).unwrap();
        std::fs::create_dir(out.join("run-999999")).unwrap();
        let next = RunDir::allocate(&out).unwrap();
        assert_eq!(next.run, 1_000_000);
        assert!(
            next.path.ends_with("run-1000000"),
            "{}",
            next.path.display()
        );
        assert_eq!(RunDir::allocate(&out).unwrap().run, 1_000_001);
        // Ordered by number, the newest is last (a plain name sort would not say so).
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| run_number_of(n).is_some())
            .collect();
        names.sort_by_key(|n| run_number_of(n));
        assert_eq!(names, ["run-999999", "run-1000000", "run-1000001"]);
        assert_eq!(run_number_of("run-000042"), Some(42));
        assert_eq!(run_number_of("run-"), None);
        assert_eq!(run_number_of("run-12.tmp"), None);
        assert_eq!(run_dir_name(7), "run-000007");
    }

    #[test]
    fn run_numbers_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("runs");
        let a = RunDir::allocate(&out).unwrap();
        let b = RunDir::allocate(&out).unwrap();
        assert_eq!((a.run, b.run), (1, 2));
        assert!(b.path.ends_with("run-000002"));
        std::fs::remove_dir(&b.path).unwrap();
        std::fs::remove_dir(&a.path).unwrap();
        assert_eq!(RunDir::allocate(&out).unwrap().run, 3);
        let err = RunDir::allocate(&dir.path().join("no/such/dir"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
