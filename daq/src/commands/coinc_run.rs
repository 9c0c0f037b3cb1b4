//! What every list-mode export (CASToR, PETSIRD) reads of a run before writing anything: the
//! manifest (a PETLINK run refused), the committed prompt and delayed tables (each a sequence
//! of files), the crystal map, the
//! coincidence settings recorded in a table's metadata, and the run's time origin.

use anyhow::{Context, Result, anyhow, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use scandaq_core::Geometry;
use scandaq_core::run_state::EnergyUnit;
use scandaq_sinks::Manifest;
use scandaq_sinks::coincidences::{PROMPTS_FILE, PROMPTS_TABLE};
use scandaq_sinks::{TableFiles, table_file_name};
use std::path::{Path, PathBuf};

/// The refusal for a PETLINK run (sinogram bin addresses, no crystal pairs); `format` names the
/// export ("CASToR list-mode", "PETSIRD").
pub fn petlink_refusal(format: &str) -> String {
    format!(
        "this run carries sinogram bin addresses (PETLINK), not crystal pairs; {format} export needs crystal pairs (two crystal ids per event), which a PETLINK list mode does not record. Reconstruct PETLINK data as sinograms (e.g. with STIR or the vendor's tools); nothing was written"
    )
}

/// True when `dir` holds a PETLINK replay (its tables are `petlink_*`).
pub fn is_petlink_run(dir: &Path, manifest: &Manifest) -> bool {
    manifest
        .files
        .iter()
        .any(|f| f.path.starts_with("petlink_"))
        || std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with("petlink_"))
            })
}

/// The manifest of `run_dir`, refused when it is not a run directory or is a PETLINK run
/// (`format` names the export in the refusal).
pub fn read_run(run_dir: &Path, format: &str) -> Result<Manifest> {
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
        bail!("{}: {}", run_dir.display(), petlink_refusal(format));
    }
    Ok(manifest)
}

/// The committed files of coincidence table `name` (`coincidences` or `delayed`) in
/// `run_dir`, in order (none when the run has no such table). Refused, with what to do, when
/// the run was interrupted while writing it (a `.inprogress` file) or a file of the sequence is
/// missing.
pub fn committed_table(run_dir: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let files = TableFiles::find(run_dir, name)
        .with_context(|| format!("cannot list {}", run_dir.display()))?;
    // A leftover `.inprogress` beside its committed file (which `recover` leaves in place,
    // saying so) is not an interrupted table.
    if let Some(open) = files.interrupted.iter().find(|f| {
        f.strip_suffix(".inprogress")
            .is_some_and(|committed| !run_dir.join(committed).is_file())
    }) {
        bail!(
            "{}: the run was interrupted before its coincidence table was committed ({open}); run `scandaq recover {}` first, then export",
            run_dir.display(),
            run_dir.display()
        );
    }
    if let Some(gap) = files.first_gap() {
        bail!(
            "{}: {} is missing from the run's {name} table (the files after it are there): copy it from where the run was taken, then export again",
            run_dir.display(),
            table_file_name(name, gap)
        );
    }
    Ok(files.paths())
}

/// The run's committed prompt table (its files, in order); an interrupted, incomplete or
/// missing one is refused with what to do.
pub fn committed_prompts(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let prompts = committed_table(run_dir, PROMPTS_TABLE)?;
    if prompts.is_empty() {
        bail!(
            "{}: the run has no coincidence table ({PROMPTS_FILE}): it was taken with --no-coincidences or without a crystal map; replay its raw data with a calibration that includes map_channel.tsv to sort coincidences",
            run_dir.display()
        );
    }
    Ok(prompts)
}

/// The run's crystal map (`calib/map_channel.tsv`), refused when missing, unreadable or
/// empty; `why` says what the export needs it for.
pub fn crystal_map(run_dir: &Path, why: &str) -> Result<Geometry> {
    let map_path = run_dir.join("calib").join("map_channel.tsv");
    let map_text = std::fs::read_to_string(&map_path).with_context(|| {
        format!(
            "cannot read {}: {why}; copy the map_channel.tsv the run was taken with into {}",
            map_path.display(),
            run_dir.join("calib").display()
        )
    })?;
    let geometry = Geometry::parse_map_channel(&map_path.display().to_string(), &map_text)?;
    if geometry.crystals.is_empty() {
        bail!("{}: no crystals in the map", map_path.display());
    }
    Ok(geometry)
}

/// The coincidence settings recorded in a coincidence table's metadata
/// (`scandaq.coincidence_config`), each `None` when not recorded.
#[derive(Clone, Debug, Default)]
pub struct Windows {
    /// Prompt window, ps.
    pub window_ps: Option<i64>,
    /// Offset of the delayed window, ps.
    pub delay_ps: Option<i64>,
    /// Energy window `[min, max]`, keV.
    pub energy_window_kev: Option<[f32; 2]>,
    /// Multiples policy (GATE name).
    pub policy: Option<String>,
}

impl Windows {
    /// The settings of `table` (all `None` when its metadata cannot be read).
    pub fn of(table: &Path) -> Self {
        let Some(config) = coincidence_config(table) else {
            return Self::default();
        };
        let cfg_i64 = |k: &str| config.get(k).and_then(|v| v.as_i64());
        let energy = config
            .get("energy_window_kev")
            .and_then(|v| v.as_array())
            .and_then(|a| match a.as_slice() {
                [lo, hi] => Some([lo.as_f64()? as f32, hi.as_f64()? as f32]),
                _ => None,
            });
        Self {
            window_ps: cfg_i64("window_ps"),
            delay_ps: cfg_i64("delay_ps"),
            energy_window_kev: energy,
            policy: config
                .get("policy")
                .and_then(|v| v.as_str())
                .map(str::to_string),
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

/// The TOF resolution to write, ps FWHM (None: no TOF): `--tof-fwhm`, else the run's own when its
/// times are calibrated; refused when it is unknown.
pub fn tof_resolution(
    run_dir: &Path,
    tof_fwhm_ps: Option<f64>,
    no_tof: bool,
    manifest: &Manifest,
    notes: &mut Vec<String>,
) -> Result<Option<f64>> {
    let timing_calibrated = manifest.energy_unit == EnergyUnit::Kev
        && manifest
            .calibration
            .tables
            .iter()
            .any(|t| t.contains("skew"));
    Ok(if no_tof {
        None
    } else if let Some(f) = tof_fwhm_ps {
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
/// first opener of the tables exported, each given as its files in order).
pub fn time_origin(
    manifest: &Manifest,
    prompts: &[PathBuf],
    delayed: Option<&[PathBuf]>,
) -> Result<i64> {
    if let Some(t) = manifest.first_t_ps {
        return Ok(t);
    }
    let first_of = |files: &[PathBuf]| -> Result<Option<i64>> {
        for file in files {
            if let Some(t) = first_t1(file)? {
                return Ok(Some(t));
            }
        }
        Ok(None)
    };
    let a = first_of(prompts)?;
    let b = match delayed {
        Some(delayed) => first_of(delayed)?,
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
