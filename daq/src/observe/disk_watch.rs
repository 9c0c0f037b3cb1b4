//! Watches the free space of the filesystem a run writes to: free bytes and, from the write
//! rate over the last checks, the time until it is full. Warns (once per level) before the
//! disk fills, so an operator can act while the run still goes on.

use crate::observe::live_stats::LiveStats;
use scandaq_sinks::error::human_bytes;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the run checks (one `statvfs`).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// When to warn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiskWarnLevels {
    /// Warn when fewer bytes than this are free.
    pub min_free_bytes: u64,
    /// Warn when the disk is full in less than this at the current write rate.
    pub min_time_to_full: Duration,
}

impl Default for DiskWarnLevels {
    /// 1 GiB, or 10 minutes of writing.
    fn default() -> Self {
        Self {
            min_free_bytes: 1 << 30,
            min_time_to_full: Duration::from_secs(600),
        }
    }
}

/// One reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiskReading {
    /// Bytes available to an unprivileged writer.
    pub free_bytes: u64,
    /// Seconds until full at the write rate measured over the last readings.
    pub seconds_to_full: Option<f64>,
}

/// Free-space watch of one directory's filesystem.
pub struct DiskWatch {
    dir: PathBuf,
    levels: DiskWarnLevels,
    /// (when, free bytes) of the reading the rate is measured from.
    rate_base: Option<(Instant, u64)>,
    last_check: Option<Instant>,
    /// Warned about low free space / about the time to full already.
    warned_free: bool,
    warned_time: bool,
}

/// Free bytes on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
}

impl DiskWatch {
    /// Watches `dir`'s filesystem.
    pub fn new(dir: &Path, levels: DiskWarnLevels) -> Self {
        Self {
            dir: dir.to_path_buf(),
            levels,
            rate_base: None,
            last_check: None,
            warned_free: false,
            warned_time: false,
        }
    }

    /// Reads the free space when [`CHECK_EVERY`] has passed since the last reading; returns
    /// the reading and the warnings it raises (each level warns once).
    pub fn check(&mut self) -> Option<(DiskReading, Vec<String>)> {
        let now = Instant::now();
        if self
            .last_check
            .is_some_and(|t| now.duration_since(t) < CHECK_EVERY)
        {
            return None;
        }
        self.last_check = Some(now);
        let free = free_bytes(&self.dir).ok()?;
        Some(self.reading(now, free))
    }

    /// Reads the free space when it is time ([`Self::check`]) and publishes the reading and
    /// its warnings into `stats` (what the dashboard and the control socket show).
    pub fn publish_into(&mut self, stats: &LiveStats) {
        if let Some((reading, warnings)) = self.check() {
            stats.set_disk(reading.free_bytes, reading.seconds_to_full);
            for w in warnings {
                stats.warn(w);
            }
        }
    }

    /// Turns a free-space reading at `now` into the time to full and the warnings.
    fn reading(&mut self, now: Instant, free: u64) -> (DiskReading, Vec<String>) {
        // The rate over at least 5 s (one reading is noise: page cache, background flushes).
        let (base_t, base_free) = *self.rate_base.get_or_insert((now, free));
        let span = now.duration_since(base_t).as_secs_f64();
        let seconds_to_full = (span >= 1.0 && base_free > free).then(|| {
            let rate = (base_free - free) as f64 / span;
            free as f64 / rate
        });
        if span >= 5.0 {
            self.rate_base = Some((now, free));
        }
        let mut warnings = Vec::new();
        let dir = self.dir.display();
        if free < self.levels.min_free_bytes && !self.warned_free {
            self.warned_free = true;
            warnings.push(format!(
                "disk almost full: {} free on the filesystem of {dir}; the run stops when it is full (free space, or start the next run with another --out)",
                human_bytes(free)
            ));
        }
        if let Some(s) = seconds_to_full
            && s < self.levels.min_time_to_full.as_secs_f64()
            && !self.warned_time
        {
            self.warned_time = true;
            warnings.push(format!(
                "disk full in about {:.0} s at the current write rate ({} free on the filesystem of {dir})",
                s,
                human_bytes(free)
            ));
        }
        (
            DiskReading {
                free_bytes: free,
                seconds_to_full,
            },
            warnings,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_per_level_with_the_time_to_full() {
        let dir = tempfile::tempdir().unwrap();
        let levels = DiskWarnLevels {
            min_free_bytes: 100_000_000,
            min_time_to_full: Duration::from_secs(60),
        };
        let mut w = DiskWatch::new(dir.path(), levels);
        let t0 = Instant::now();
        // 1 GB free, nothing written: no time to full, no warning.
        let (r, warn) = w.reading(t0, 1_000_000_000);
        assert_eq!((r.seconds_to_full, warn.len()), (None, 0));
        // 10 MB/s for 2 s: 98 s to full, above 60 s.
        let (r, warn) = w.reading(t0 + Duration::from_secs(2), 980_000_000);
        assert!((r.seconds_to_full.unwrap() - 98.0).abs() < 1e-6, "{r:?}");
        assert!(warn.is_empty());
        // 500 MB/s: under a minute left.
        let (r, warn) = w.reading(t0 + Duration::from_secs(4), 200_000_000);
        assert!(r.seconds_to_full.unwrap() < 60.0);
        assert_eq!(warn.len(), 1);
        assert!(warn[0].contains("disk full in about"), "{warn:?}");
        // Under the free-space level: that warning once, the time warning not again.
        let (_, warn) = w.reading(t0 + Duration::from_secs(5), 50_000_000);
        assert_eq!(warn.len(), 1);
        assert!(warn[0].contains("50.0 MB free"), "{warn:?}");
        let (_, warn) = w.reading(t0 + Duration::from_secs(6), 10_000_000);
        assert!(warn.is_empty());
    }

    #[test]
    fn reads_a_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        let mut w = DiskWatch::new(dir.path(), DiskWarnLevels::default());
        assert!(w.check().is_some());
        assert!(w.check().is_none(), "checked again within a second");
    }
}
