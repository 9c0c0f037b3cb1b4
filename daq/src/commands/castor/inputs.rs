//! What a CASToR export reads and decides before writing anything: the run (refused when it
//! is a PETLINK run or has no committed coincidence table), its crystal map, the export's
//! name, the coincidence windows, the TOF resolution and the time origin.

use super::CastorOptions;
use crate::commands::coinc_run;
use anyhow::{Result, anyhow, bail};
use scandaq_core::Geometry;
use scandaq_sinks::Manifest;
use scandaq_sinks::castor::{CrystalIds, LutEntry, lut_entries};
use std::path::Path;

/// The manifest of `run_dir`, refused when it is not a run directory or is a PETLINK run.
pub(super) fn read_run(run_dir: &Path) -> Result<Manifest> {
    coinc_run::read_run(run_dir, "CASToR list-mode")
}

/// The run's crystals (`calib/map_channel.tsv`), their CASToR ids and LUT entries.
pub(super) struct ScannerMap {
    pub(super) geometry: Geometry,
    pub(super) ids: CrystalIds,
    pub(super) lut: Vec<LutEntry>,
}

impl ScannerMap {
    pub(super) fn read(run_dir: &Path) -> Result<Self> {
        let map_path = run_dir.join("calib").join("map_channel.tsv");
        let geometry = coinc_run::crystal_map(
            run_dir,
            "the crystal positions are needed for the scanner LUT",
        )?;
        let ids = CrystalIds::from_geometry(&geometry);
        let lut = lut_entries(&geometry).map_err(|e| anyhow!("{}: {e}", map_path.display()))?;
        Ok(Self { geometry, ids, lut })
    }
}

/// The base name of the data files: `--name`, else the run directory's name.
pub(super) fn export_name(
    run_dir: &Path,
    opts: &CastorOptions,
    manifest: &Manifest,
) -> Result<String> {
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => run_dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| scandaq_sinks::run_dir::run_dir_name(manifest.run)),
    };
    if name.is_empty() || name.contains(['/', '\\', ' ', ':', '#']) {
        bail!("--name {name:?}: use a plain file name (no /, spaces, ':' or '#')");
    }
    Ok(name)
}

/// The TOF resolution to write (None: no TOF field): see [`coinc_run::tof_resolution`].
pub(super) fn tof_resolution(
    run_dir: &Path,
    opts: &CastorOptions,
    manifest: &Manifest,
    notes: &mut Vec<String>,
) -> Result<Option<f64>> {
    coinc_run::tof_resolution(run_dir, opts.tof_fwhm_ps, opts.no_tof, manifest, notes)
}
