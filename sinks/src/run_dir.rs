//! Run directories: `OUTDIR/run-NNNNNN/`, numbered from a counter persisted in OUTDIR
//! (`.scandaq-last-run`) so a run number is never reused, even after directories are deleted.
//! Runs started at the same moment into one output directory take the counter in turn (an
//! exclusive lock on `.scandaq-runs.lock`), so each gets its own number.
//!
//! Names are `run-` and the number in six digits ([`run_dir_name`]): `run-000001` to
//! `run-999999`. A longer number is preceded by one `x` per digit past six: `run-x1000000`,
//! `run-xx10000000`. A letter sorts after every digit (in byte order and in the usual locales),
//! and more `x`s mean more digits, so a plain sort of the names (`ls`, a shell glob) always
//! follows the run numbers, also across the six-digit boundary and beside existing runs.

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

/// Digits of the plain run-directory names; longer numbers carry a width mark.
const PLAIN_DIGITS: usize = 6;

/// The directory name of run `run`: `run-000042`, and past six digits one `x` per extra
/// digit (`run-x1000000`, `run-xx10000000`) so names sort as the numbers do.
pub fn run_dir_name(run: u64) -> String {
    let digits = format!("{run:06}");
    let width_mark = "x".repeat(digits.len().saturating_sub(PLAIN_DIGITS));
    format!("run-{width_mark}{digits}")
}

/// The run number a directory name gives (`run-000042` -> 42, `run-x1000000` -> 1000000),
/// or None for other names, including a width mark that does not match the digits. Unmarked
/// long names (`run-1000000`, written by scandaq before the width mark) still give their
/// number, so the counter never reuses them.
pub fn run_number_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("run-")?;
    let digits = rest.trim_start_matches('x');
    let marks = rest.len() - digits.len();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let width_ok = marks == 0 || (digits.len() == PLAIN_DIGITS + marks && !digits.starts_with('0'));
    if !width_ok {
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
            next.path.ends_with("run-x1000000"),
            "{}",
            next.path.display()
        );
        assert_eq!(RunDir::allocate(&out).unwrap().run, 1_000_001);
        // A plain byte sort of the names (what `ls` in the C locale and a glob give) is the
        // order of the numbers, across the six-digit boundary.
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| run_number_of(n).is_some())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["run-999999", "run-x1000000", "run-x1000001"]);
        assert_eq!(run_number_of("run-000042"), Some(42));
        assert_eq!(run_number_of("run-x1000001"), Some(1_000_001));
        assert_eq!(run_number_of("run-"), None);
        assert_eq!(run_number_of("run-x"), None);
        assert_eq!(run_number_of("run-x000042"), None);
        assert_eq!(run_number_of("run-x10000000"), None);
        assert_eq!(run_number_of("run-12.tmp"), None);
        assert_eq!(run_dir_name(7), "run-000007");
    }

    #[test]
    fn names_sort_as_the_numbers_at_every_width() {
        let numbers: Vec<u64> = (0..20)
            .flat_map(|p| {
                let base = 10u64.pow(p);
                [base - 1, base, base + 1, base.saturating_mul(7)]
            })
            .chain([u64::MAX - 1, u64::MAX])
            .collect();
        let mut by_name: Vec<String> = numbers.iter().map(|&n| run_dir_name(n)).collect();
        by_name.sort_unstable();
        by_name.dedup();
        let mut by_number = numbers.clone();
        by_number.sort_unstable();
        by_number.dedup();
        let parsed: Vec<u64> = by_name.iter().map(|n| run_number_of(n).unwrap()).collect();
        assert_eq!(parsed, by_number);
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
