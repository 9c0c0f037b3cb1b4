//! The start of a run of the singles pipeline: the [`Run`] opened, the calibration it uses
//! stored in its `calib/` and compiled, the key-value metadata of its Parquet files, and the
//! coincidence stage set up ([`RunStart`]).

use super::Run;
use crate::observe::live_stats::{LiveStats, SinkCounters};
use crate::process::calib_load::LoadedCalibration;
use crate::process::coinc_stage::{CoincidenceOptions, CoincidenceSetup};
use crate::process::kernel::CompiledCalibration;
use crate::process::pipeline;
use anyhow::{Context, Result};
use scandaq_core::ClockModel;
use scandaq_core::run_state::{EnergyUnit, FailureReason, RunMode};
use scandaq_sinks::manifest::CalibrationRecord;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// How a run is described in its outputs.
pub struct RunDescription {
    /// `replay`, `demo`, ...
    pub mode: RunMode,
    /// Inputs.
    pub sources: Vec<String>,
    /// Front-end clock.
    pub clock: ClockModel,
    /// Extra counts known before processing (e.g. idxf steps).
    pub extra_counts: BTreeMap<String, u64>,
    /// Extra warnings.
    pub warnings: Vec<String>,
    /// Write the raw diagnostic columns into the singles table.
    pub raw_columns: bool,
    /// File rotation of the singles and coincidence tables.
    pub rotation: pipeline::Rotation,
    /// Coincidence sorting.
    pub coincidences: CoincidenceOptions,
}

/// A run that has started: directory allocated, calibration stored, manifest says
/// `configured` (then `running` once its inputs start).
pub struct RunStart {
    /// The run (directory, manifest, state).
    pub run: Run,
    /// The compiled calibration.
    pub kernel: CompiledCalibration,
    /// Key-value metadata for the run's Parquet files.
    pub metadata: scandaq_sinks::FileMetadata,
    /// How the run was described.
    pub description: RunDescription,
    /// Calibration warnings.
    pub calibration_warnings: Vec<String>,
    /// When processing started.
    pub started: Instant,
    /// The coincidence stage, when coincidences are sorted.
    pub coincidences: Option<CoincidenceSetup>,
    /// The run has a PET calibration (a TDC table). Without one (`--no-calib`: OPM-MEG /
    /// ultrasound streams only) no hit can become a single, so no singles table is written
    /// and no coincidences are sorted.
    pub pet_calibration: bool,
}

impl RunStart {
    /// Opens the run under `out_dir` (its state shown in `stats`, when given), copies the
    /// calibration into it and records it in the manifest.
    pub fn begin(
        out_dir: &Path,
        calibration: &LoadedCalibration,
        description: RunDescription,
        stats: Option<Arc<LiveStats>>,
    ) -> Result<Self> {
        let mut run = Run::open(out_dir, description.mode, &description.sources, stats)?;
        if let Err(e) = store_calibration(run.path(), calibration) {
            return Err(run.fail(FailureReason::StartFailed, e));
        }
        let kernel = CompiledCalibration::new(&calibration.calibration, description.clock);
        let energy_unit = if kernel.energy_in_kev() {
            EnergyUnit::Kev
        } else {
            EnergyUnit::TotNs
        };
        let m = run.manifest_mut();
        m.energy_unit = energy_unit;
        m.calibration = CalibrationRecord {
            checksum: calibration.calibration.checksum.clone(),
            tables: calibration.calibration.sources.clone(),
        };
        // A manifest exists from the start, so an interrupted run says it is incomplete.
        if let Err(e) = run.write_manifest() {
            return Err(run.fail(FailureReason::StartFailed, e));
        }
        let metadata = file_metadata(run.number(), calibration, &description, energy_unit);
        let pet_calibration = !calibration.calibration.tdc.entries.is_empty();
        let (coincidences, calibration_warnings) = if pet_calibration {
            coincidence_setup(calibration, &description, &kernel)
        } else {
            (None, calibration.warnings.clone())
        };
        Ok(Self {
            run,
            kernel,
            metadata,
            description,
            calibration_warnings,
            started: Instant::now(),
            coincidences,
            pet_calibration,
        })
    }

    /// Inputs started: the manifest (and the statistics) say `running`.
    pub fn set_running(&mut self) -> Result<()> {
        self.run.set_running()
    }

    /// Ends a run that failed before it ran; see [`Run::fail_start`].
    pub fn fail_start(self, reason: FailureReason, error: anyhow::Error) -> anyhow::Error {
        self.run.fail_start(reason, error)
    }

    /// The sink settings of this run, with `counters` for live statistics.
    pub fn sink_settings(&self, counters: Arc<SinkCounters>) -> pipeline::SinkSettings {
        pipeline::SinkSettings {
            raw_columns: self.description.raw_columns,
            rotation: self.description.rotation,
            coincidences: self.coincidences.clone(),
            counters,
            singles_table: self.pet_calibration,
        }
    }
}

/// Stores the calibration texts the run uses in its `calib/`.
fn store_calibration(run_dir: &Path, calibration: &LoadedCalibration) -> Result<()> {
    let calib_dir = run_dir.join("calib");
    std::fs::create_dir(&calib_dir)
        .with_context(|| format!("cannot create {}", calib_dir.display()))?;
    for (name, text) in &calibration.texts {
        std::fs::write(calib_dir.join(name), text)
            .with_context(|| format!("cannot write {}", calib_dir.join(name).display()))?;
    }
    Ok(())
}

/// The key-value metadata every singles file of run `run` carries.
fn file_metadata(
    run: u64,
    calibration: &LoadedCalibration,
    description: &RunDescription,
    energy_unit: EnergyUnit,
) -> scandaq_sinks::FileMetadata {
    let kv = |k: &str, v: String| (k.to_string(), v);
    vec![
        kv("scandaq.run", run.to_string()),
        kv("scandaq.table", "singles".into()),
        kv(
            "scandaq.schema_version",
            scandaq_sinks::singles::SINGLES_SCHEMA_VERSION.into(),
        ),
        kv("scandaq.software_version", super::SOFTWARE_VERSION.into()),
        kv("scandaq.mode", description.mode.name().into()),
        kv("scandaq.source", description.sources.join(";")),
        kv(
            "scandaq.calibration_checksum",
            calibration.calibration.checksum.clone(),
        ),
        kv("scandaq.energy_unit", energy_unit.name().into()),
        kv(
            "scandaq.clock_hz",
            description.clock.frequency_hz.to_string(),
        ),
    ]
}

/// The coincidence stage the description asks for (none, with a warning, when the
/// calibration cannot place the hits), and the calibration's warnings.
fn coincidence_setup(
    calibration: &LoadedCalibration,
    description: &RunDescription,
    kernel: &CompiledCalibration,
) -> (Option<CoincidenceSetup>, Vec<String>) {
    let mut warnings = calibration.warnings.clone();
    let coincidences = match CoincidenceSetup::new(
        &description.coincidences,
        calibration.calibration.geometry.as_ref(),
        kernel.energy_in_kev(),
    ) {
        Ok(setup) => setup,
        Err(why) => {
            warnings.push(why);
            None
        }
    };
    if coincidences.as_ref().is_some_and(|c| c.options.enabled)
        && !kernel.energy_in_kev()
        && description.coincidences.energy_window_kev.is_some()
    {
        warnings.push(
            "energies are ToT (no energy table): coincidences are sorted without an energy window"
                .into(),
        );
    }
    (coincidences, warnings)
}
