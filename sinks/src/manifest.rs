//! The run manifest (`manifest.json`): counts, losses, files and time span of a run; written
//! atomically (temporary file, fsync, rename) so a reader never sees half of one.

use crate::durable_file::write_atomic;
use crate::error::SinkError;
use scandaq_core::LossCounts;
use scandaq_core::run_state::{EnergyUnit, FailureReason, RunMode, RunState, StopReason};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// One committed output file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// File name relative to the run directory.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// The manifest of one run directory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Run number.
    pub run: u64,
    /// True once every file is committed and the run ended cleanly.
    pub complete: bool,
    /// Run state when the manifest was written: `configured` while the run starts, `running`
    /// while it goes on (a manifest left in either means the process died), then `stopped`,
    /// `failed` or (after `scandaq recover`) `recovered`.
    #[serde(default)]
    pub state: RunState,
    /// Why the run stopped (`duration limit`, `end of stream`, `stop requested`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    /// Why the run failed (`disk_full`, `start_failed`, ...), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureReason>,
    /// The error that ended the run, if any: what happened and where.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// scandaq version that wrote the run.
    pub software_version: String,
    /// What produced the data (`replay`, `demo`, ...).
    pub mode: RunMode,
    /// Input files or sources.
    pub sources: Vec<String>,
    /// Unit of the singles `energy_kev` column: `keV` or `ToT_ns`.
    pub energy_unit: EnergyUnit,
    /// Calibration checksum (sha256) and the tables it covers.
    pub calibration: CalibrationRecord,
    /// Processing counts (hits decoded, singles written, frames, ...).
    pub counts: BTreeMap<String, u64>,
    /// Everything not written, by reason.
    pub losses: LossCounts,
    /// Committed files.
    pub files: Vec<FileRecord>,
    /// First singles time, ps.
    pub first_t_ps: Option<i64>,
    /// Last singles time, ps.
    pub last_t_ps: Option<i64>,
    /// The scanner's coincidence time resolution (FWHM, ps) when the run knows it (the demo
    /// writes its simulated bench's); `scandaq export castor` writes it as the TOF resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctr_fwhm_ps: Option<i64>,
    /// When the losses of a live run happened: per place and reason, the run time at which
    /// the count was first and last seen growing (sampled 4 times a second). Empty for
    /// replays and for runs that lost nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loss_times: Vec<LossTime>,
}

/// When one loss counter of a live run grew (docs/tables.md "manifest.json").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossTime {
    /// Where it was counted: the input's label, or `board N` for a board no input lists.
    pub place: String,
    /// The loss reason's documented name.
    pub reason: String,
    /// Seconds since the run started when the count was first seen above zero.
    pub first_s: f64,
    /// Seconds since the run started when the count was last seen growing.
    pub last_s: f64,
    /// The count at the end of the run.
    pub count: u64,
}

/// Which calibration a run used.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalibrationRecord {
    /// sha256 over the tables' names and texts.
    pub checksum: String,
    /// Table paths.
    pub tables: Vec<String>,
}

impl Manifest {
    /// Writes `dir/manifest.json` atomically. When the disk is full, the space reserved at
    /// the run's start ([`reserve_manifest_space`]) is given up and the write tried once more,
    /// so the last manifest of a run that filled its disk still lands.
    pub fn write_atomic(&self, dir: &Path) -> Result<(), SinkError> {
        match self.try_write_atomic(dir) {
            Err(e) if e.is_disk_full() && release_manifest_space(dir) => self.try_write_atomic(dir),
            other => other,
        }
    }

    fn try_write_atomic(&self, dir: &Path) -> Result<(), SinkError> {
        let mut text =
            serde_json::to_string_pretty(self).map_err(|e| SinkError::OutputDir(e.to_string()))?;
        text.push('\n');
        write_atomic(&dir.join("manifest.json"), text.as_bytes())
    }

    /// Adds `record` to the files of the manifest in `dir` (read, appended, written
    /// atomically): how a table lists each file it commits while the run goes on. Calls from
    /// the threads of one process are serialised, so two tables committing at once both land.
    pub fn record_file(dir: &Path, record: &FileRecord) -> Result<(), SinkError> {
        static UPDATING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = UPDATING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut m = Self::read(dir)?;
        m.files.push(record.clone());
        m.write_atomic(dir)
    }

    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self, SinkError> {
        let path = dir.join("manifest.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| SinkError::io("reading", &path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            SinkError::OutputDir(format!("{}: not a scandaq manifest: {e}", path.display()))
        })
    }
}

/// Name of the file that holds space for the final manifest.
pub const MANIFEST_RESERVE: &str = ".manifest-reserve";
/// Bytes held for the final manifest: a manifest of hundreds of boards is about 100 KiB.
pub const MANIFEST_RESERVE_BYTES: usize = 1 << 20;

/// Holds [`MANIFEST_RESERVE_BYTES`] of disk in `dir` (written and synced, so the filesystem
/// has really allocated them) for the run's last manifest.
pub fn reserve_manifest_space(dir: &Path) -> Result<(), SinkError> {
    let path = dir.join(MANIFEST_RESERVE);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&vec![0u8; MANIFEST_RESERVE_BYTES])?;
        f.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&path);
        SinkError::io("reserving space for the manifest in", &path, e)
    })
}

/// Gives the reserved space back; true when there was a reservation to give.
pub fn release_manifest_space(dir: &Path) -> bool {
    std::fs::remove_file(dir.join(MANIFEST_RESERVE)).is_ok()
}
