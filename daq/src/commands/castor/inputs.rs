//! What a CASToR export reads and decides before writing anything: the run (refused when it
//! is a PETLINK run or has no committed coincidence table), its crystal map, the export's
//! name, the coincidence windows, the TOF resolution and the time origin.

use super::{CastorOptions, PETLINK_REFUSAL, is_petlink_run};
use anyhow::{Context, Result, anyhow, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use scandaq_core::Geometry;
use scandaq_core::run_state::EnergyUnit;
use scandaq_sinks::Manifest;
use scandaq_sinks::castor::{CrystalIds, LutEntry, lut_entries};
use scandaq_sinks::coincidences::PROMPTS_FILE;
use std::path::{Path, PathBuf};

/// The manifest of `run_dir`, refused when it is not a run directory or is a PETLINK run.
pub(super) fn read_run(run_dir: &Path) -> Result<Manifest> {
    if !run_dir.is_dir() {
        bail!(
            "{} is not a run directory (expected OUTDIR/run-NNNNNN with a manifest.json)",
            run_dir.display()
        );
    }
    let manifest = Manifest::read(run_dir).with_context(|| {
        format!(
            "{} is not a scandaq run directory (its manifest.json cannot be read)",
            run_dir.display()
        )
    })?;
    if is_petlink_run(run_dir, &manifest) {
        bail!("{}: {PETLINK_REFUSAL}", run_dir.display());
    }
    Ok(manifest)
}

/// The run's committed prompts table; an interrupted or missing one is refused with what to do.
pub(super) fn committed_prompts(run_dir: &Path) -> Result<PathBuf> {
    let prompts = run_dir.join(PROMPTS_FILE);
    if !prompts.is_file() {
        if run_dir.join(format!("{PROMPTS_FILE}.inprogress")).exists() {
            bail!(
                "{}: the run was interrupted before its coincidence table was committed ({PROMPTS_FILE}.inprogress); run `scandaq recover {}` first, then export",
                run_dir.display(),
                run_dir.display()
            );
        }
        bail!(
            "{}: the run has no coincidence table ({PROMPTS_FILE}): it was taken with --no-coincidences or without a crystal map; replay its raw data with a calibration that includes map_channel.tsv to sort coincidences",
            run_dir.display()
        );
    }
    Ok(prompts)
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
        let map_text = std::fs::read_to_string(&map_path).with_context(|| {
            format!(
                "cannot read {}: the crystal positions are needed for the scanner LUT",
                map_path.display()
            )
        })?;
        let geometry = Geometry::parse_map_channel(&map_path.display().to_string(), &map_text)?;
        if geometry.crystals.is_empty() {
            bail!("{}: no crystals in the map", map_path.display());
        }
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

/// The coincidence window and delay recorded in a coincidence table's metadata, ps.
pub(super) struct Windows {
    pub(super) window_ps: Option<i64>,
    pub(super) delay_ps: Option<i64>,
}

impl Windows {
    pub(super) fn of(table: &Path) -> Self {
        let config = coincidence_config(table);
        let cfg_i64 = |k: &str| {
            config
                .as_ref()
                .and_then(|c| c.get(k))
                .and_then(|v| v.as_i64())
        };
        Self {
            window_ps: cfg_i64("window_ps"),
            delay_ps: cfg_i64("delay_ps"),
        }
    }
}

/// The `scandaq.coincidence_config` metadata of a coincidence table, when readable.
fn coincidence_config(path: &Path) -> Option<serde_json::Value> {
    let file = std::fs::File::open(path).ok()?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).ok()?;
    let kv = builder.metadata().file_metadata().key_value_metadata()?;
    let v = kv
        .iter()
        .find(|e| e.key == "scandaq.coincidence_config")?
        .value
        .clone()?;
    serde_json::from_str(&v).ok()
}

/// The TOF resolution to write (None: no TOF field): `--tof-fwhm`, else the run's own when its
/// times are calibrated; refused when it is unknown.
pub(super) fn tof_resolution(
    run_dir: &Path,
    opts: &CastorOptions,
    manifest: &Manifest,
    notes: &mut Vec<String>,
) -> Result<Option<f64>> {
    let timing_calibrated = manifest.energy_unit == EnergyUnit::Kev
        && manifest
            .calibration
            .tables
            .iter()
            .any(|t| t.contains("skew"));
    Ok(if opts.no_tof {
        None
    } else if let Some(f) = opts.tof_fwhm_ps {
        if !(f.is_finite() && f > 0.0) {
            bail!("--tof-fwhm {f}: must be a positive time (e.g. 200ps)");
        }
        if !timing_calibrated {
            notes.push("the run's times are not fully calibrated (no skew table, or ToT energies): TOF written as asked, but expect it to be biased".into());
        }
        Some(f)
    } else if !timing_calibrated {
        notes.push("TOF not written: the run's times are not fully calibrated (no skew table, or ToT energies); give --tof-fwhm to write it anyway".into());
        None
    } else if let Some(ctr) = manifest.ctr_fwhm_ps {
        let f = ctr as f64;
        notes.push(format!(
            "TOF resolution {f} ps: the run's coincidence time resolution, from its manifest (give --tof-fwhm to override)"
        ));
        Some(f)
    } else {
        bail!(
            "{}: the TOF resolution of this scanner is unknown: give --tof-fwhm DURATION (the coincidence time resolution, FWHM, e.g. 250ps), or --no-tof to export without TOF",
            run_dir.display()
        );
    })
}

/// Time origin: the run's first single (or, for a recovered run without a time span, the
/// first opener of the tables exported).
pub(super) fn time_origin(
    manifest: &Manifest,
    prompts: &Path,
    delayed: Option<&Path>,
) -> Result<i64> {
    if let Some(t) = manifest.first_t_ps {
        return Ok(t);
    }
    let a = first_t1(prompts)?;
    let b = match delayed {
        Some(delayed) => first_t1(delayed)?,
        None => None,
    };
    Ok(match (a, b) {
        (Some(a), Some(b)) => a.min(b),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => 0,
    })
}

/// First `t1_ps` of a coincidence table (rows are in opener order, so the smallest).
fn first_t1(path: &Path) -> Result<Option<i64>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?
        .with_batch_size(1)
        .with_limit(1)
        .build()?;
    match reader.next() {
        Some(b) => {
            let b = b?;
            let t = b
                .column_by_name("t1_ps")
                .ok_or_else(|| anyhow!("{}: no t1_ps column", path.display()))?;
            Ok(t.as_primitive_opt::<Int64Type>().map(|a| a.value(0)))
        }
        None => Ok(None),
    }
}
