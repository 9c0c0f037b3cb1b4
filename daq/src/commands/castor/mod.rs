//! `scandaq export castor RUN_DIR --out DIR`: a run's prompt coincidences as a CASToR
//! list-mode pair (`NAME.cdh` + `NAME.cdf`), the delayed coincidences as a second pair
//! (`NAME_delayed.*`), and the scanner description generated from the run's own
//! `calib/map_channel.tsv` (`scandaq_NAME.hscan` + `.lut`, `NAME_crystal_ids.tsv`).
//! Layout and id mapping: docs/formats.md, "CASToR list-mode export".

use anyhow::{Context, Result, anyhow, bail};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt32Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use scandaq_core::Geometry;
use scandaq_core::run_state::EnergyUnit;
use scandaq_sinks::Manifest;
use scandaq_sinks::castor::{
    CdfEvent, CdfWriter, CdhHeader, CrystalIds, ScannerHeader, TofHeader, lut_bytes, lut_entries,
    write_atomic,
};
use std::path::{Path, PathBuf};

use scandaq_sinks::coincidences::{DELAYED_FILE, PROMPTS_FILE};

/// The refusal for a PETLINK run (sinogram bin addresses, no crystal pairs).
pub const PETLINK_REFUSAL: &str = "this run carries sinogram bin addresses (PETLINK), not crystal pairs; CASToR list-mode export needs crystal pairs (two crystal ids per event), which a PETLINK list mode does not record. Reconstruct PETLINK data as sinograms (e.g. with STIR or the vendor's tools); nothing was written";

/// How to export.
#[derive(Clone, Debug)]
pub struct CastorOptions {
    /// Output directory (created if its parent exists).
    pub out: PathBuf,
    /// Base name of the data files (default: the run directory's name).
    pub name: Option<String>,
    /// Coincidence time resolution FWHM, ps (`TOF resolution (ps)`).
    pub tof_fwhm_ps: Option<f64>,
    /// Write no TOF field.
    pub no_tof: bool,
    /// Do not export the delayed coincidences.
    pub no_delayed: bool,
    /// Crystal depth for the `.hscan`, mm (map_channel.tsv has only positions).
    pub crystal_depth_mm: f64,
}

/// One written list-mode pair.
#[derive(Clone, Debug)]
pub struct ListModeExport {
    /// The `.cdh`.
    pub header: PathBuf,
    /// The `.cdf`.
    pub data: PathBuf,
    /// Events written.
    pub events: u64,
    /// `.cdf` size in bytes.
    pub bytes: u64,
}

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct CastorExport {
    /// Prompts.
    pub prompts: ListModeExport,
    /// Delayed coincidences, when the run has them and they were asked for.
    pub delayed: Option<ListModeExport>,
    /// The `.hscan`.
    pub hscan: PathBuf,
    /// The `.lut`.
    pub lut: PathBuf,
    /// The crystal-id table.
    pub ids: PathBuf,
    /// Crystals in the LUT.
    pub crystals: usize,
    /// TOF keys written (None: no TOF field).
    pub tof: Option<TofHeader>,
    /// Decisions the user should know about.
    pub notes: Vec<String>,
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

/// Streams one coincidence table into a `.cdf`; returns (events, bytes, largest t2_ps).
fn write_cdf(
    table: &Path,
    cdf: &Path,
    ids: &CrystalIds,
    t0_ps: i64,
    tof: bool,
    tof_shift_ps: i64,
) -> Result<(u64, u64, Option<i64>)> {
    let file =
        std::fs::File::open(table).with_context(|| format!("cannot open {}", table.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable Parquet file", table.display()))?;
    let rows = builder.metadata().file_metadata().num_rows();
    let reader = builder.with_batch_size(64 << 10).build()?;
    let mut w = CdfWriter::create(cdf, tof)?;
    let mut t_max = None::<i64>;
    let col = |b: &arrow_array::RecordBatch, name: &str| {
        b.column_by_name(name).cloned().ok_or_else(|| {
            anyhow!(
                "{}: column {name} missing: not a scandaq coincidence table",
                table.display()
            )
        })
    };
    for batch in reader {
        let b = batch.with_context(|| format!("reading {}", table.display()))?;
        let (t1, t2, c1, c2, tf) = (
            col(&b, "t1_ps")?,
            col(&b, "t2_ps")?,
            col(&b, "channel1")?,
            col(&b, "channel2")?,
            col(&b, "tof_ps")?,
        );
        let bad = || anyhow!("{}: unexpected column types", table.display());
        let t1 = t1.as_primitive_opt::<Int64Type>().ok_or_else(bad)?;
        let t2 = t2.as_primitive_opt::<Int64Type>().ok_or_else(bad)?;
        let c1 = c1.as_primitive_opt::<UInt32Type>().ok_or_else(bad)?;
        let c2 = c2.as_primitive_opt::<UInt32Type>().ok_or_else(bad)?;
        let tf = tf.as_primitive_opt::<Int64Type>().ok_or_else(bad)?;
        for i in 0..b.num_rows() {
            let id = |ch: u32| {
                ids.id_of(ch).ok_or_else(|| {
                    anyhow!(
                        "{}: channel {} is not in the run's calib/map_channel.tsv, so it has no crystal id; the table and the map do not belong together",
                        table.display(),
                        scandaq_core::ChannelId(ch)
                    )
                })
            };
            let dt = t1.value(i) - t0_ps;
            let time_ms = u32::try_from(dt.div_euclid(1_000_000_000)).map_err(|_| {
                anyhow!(
                    "{}: event at t1_ps {} is {} ms from the acquisition start (t_ps {t0_ps}): outside CASToR's u32 millisecond range",
                    table.display(),
                    t1.value(i),
                    dt.div_euclid(1_000_000_000)
                )
            })?;
            t_max = Some(t_max.map_or(t2.value(i), |m| m.max(t2.value(i))));
            w.push(&CdfEvent {
                time_ms,
                tof_ps: tof.then(|| (tf.value(i) + tof_shift_ps) as f32),
                id1: id(c1.value(i))?,
                id2: id(c2.value(i))?,
            })?;
        }
    }
    if w.events() != rows as u64 {
        bail!(
            "{}: wrote {} events but the table's footer says {rows} rows",
            table.display(),
            w.events()
        );
    }
    let (events, bytes) = w.commit()?;
    Ok((events, bytes, t_max))
}

/// Exports `run_dir` (see the module doc). Refuses PETLINK runs and runs without a committed
/// coincidence table before writing anything.
pub fn export_castor(run_dir: &Path, opts: &CastorOptions) -> Result<CastorExport> {
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

    let name = match &opts.name {
        Some(n) => n.clone(),
        None => run_dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| format!("run-{:06}", manifest.run)),
    };
    if name.is_empty() || name.contains(['/', '\\', ' ', ':', '#']) {
        bail!("--name {name:?}: use a plain file name (no /, spaces, ':' or '#')");
    }
    let scanner = format!("scandaq_{name}");
    let mut notes = Vec::new();

    let config = coincidence_config(&prompts);
    let cfg_i64 = |k: &str| {
        config
            .as_ref()
            .and_then(|c| c.get(k))
            .and_then(|v| v.as_i64())
    };
    let window_ps = cfg_i64("window_ps");
    let delay_ps = cfg_i64("delay_ps");

    let timing_calibrated = manifest.energy_unit == EnergyUnit::Kev
        && manifest
            .calibration
            .tables
            .iter()
            .any(|t| t.contains("skew"));
    let fwhm = if opts.no_tof {
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
    };

    // Time origin: the run's first single (or, for a recovered run without a time span, the
    // first opener of the tables).
    let delayed_path = run_dir.join(DELAYED_FILE);
    let export_delayed = !opts.no_delayed && delayed_path.is_file();
    let t0 = match manifest.first_t_ps {
        Some(t) => t,
        None => {
            let a = first_t1(&prompts)?;
            let b = if export_delayed {
                first_t1(&delayed_path)?
            } else {
                None
            };
            match (a, b) {
                (Some(a), Some(b)) => a.min(b),
                (Some(t), None) | (None, Some(t)) => t,
                (None, None) => 0,
            }
        }
    };

    // Everything checked: now write.
    let out = &opts.out;
    if !out.exists() {
        std::fs::create_dir_all(out).with_context(|| {
            format!(
                "cannot create output directory {} (check the path)",
                out.display()
            )
        })?;
    } else if !out.is_dir() {
        bail!("--out {} exists but is not a directory", out.display());
    }
    let tof_range = window_ps.map(|w| 2.0 * w as f64);
    let list_mode = |table: &Path, base: &str, shift: i64, what: &str| -> Result<ListModeExport> {
        let cdf = out.join(format!("{base}.cdf"));
        let (events, bytes, t_max) = write_cdf(table, &cdf, &ids, t0, fwhm.is_some(), shift)?;
        let t_end = manifest.last_t_ps.or(t_max).unwrap_or(t0);
        let mut comments = vec![
            format!(
                "written by scandaq {} export castor from {} ({what})",
                env!("CARGO_PKG_VERSION"),
                table.display()
            ),
            format!(
                "time origin: t_ps {t0} of the run (its first single); event time = floor((t1_ps - t0) / 1e9) ms"
            ),
            format!(
                "crystal ids: {name}_crystal_ids.tsv (id = rank of the PETsys channel id among the channels of calib/map_channel.tsv); crystal 1 = channel1 (window opener), crystal 2 = channel2"
            ),
        ];
        if fwhm.is_some() {
            comments.push(if shift == 0 {
                "TOF = t(crystal 1) - t(crystal 2) = tof_ps of the coincidence table (ps; <= 0 since crystal 1 opened the window)".into()
            } else {
                format!("TOF = tof_ps + {shift} (the delay): t(crystal 1) - t(crystal 2) on the prompt window's scale")
            });
        }
        let header = CdhHeader {
            scanner_name: scanner.clone(),
            data_filename: format!("{base}.cdf"),
            number_of_events: events,
            start_time_s: 0.0,
            duration_s: ((t_end - t0).max(0) as f64 * 1e-12 * 1e6).round() / 1e6,
            tof: fwhm.map(|f| TofHeader {
                resolution_ps: f,
                measurement_range_ps: tof_range.unwrap_or(2.0 * 4000.0),
            }),
            comments,
        };
        let cdh = out.join(format!("{base}.cdh"));
        write_atomic(&cdh, header.to_text().as_bytes())?;
        Ok(ListModeExport {
            header: cdh,
            data: cdf,
            events,
            bytes,
        })
    };
    if fwhm.is_some() && window_ps.is_none() {
        notes.push("the coincidence window is not recorded in the table: List TOF measurement range set to 8000 ps (a 4 ns window)".into());
    }
    let prompts_out = list_mode(&prompts, &name, 0, "prompt coincidences")?;
    let delayed_out = if export_delayed {
        let shift = match (fwhm, delay_ps) {
            (Some(_), Some(d)) => d,
            (Some(_), None) => {
                notes.push("the delay of the delayed window is not recorded: delayed TOF written unshifted".into());
                0
            }
            _ => 0,
        };
        Some(list_mode(
            &delayed_path,
            &format!("{name}_delayed"),
            shift,
            "delayed-window coincidences: a randoms estimate, not data to reconstruct as prompts",
        )?)
    } else {
        if !opts.no_delayed {
            notes.push(format!(
                "no delayed table ({DELAYED_FILE}) in the run: only prompts exported"
            ));
        }
        None
    };

    let hscan = out.join(format!("{scanner}.hscan"));
    let lut_path = out.join(format!("{scanner}.lut"));
    let ids_path = out.join(format!("{name}_crystal_ids.tsv"));
    let header = ScannerHeader::from_geometry(&scanner, &geometry, opts.crystal_depth_mm);
    write_atomic(&hscan, header.to_text().as_bytes())?;
    write_atomic(&lut_path, &lut_bytes(&lut))?;
    write_atomic(&ids_path, ids.to_tsv(&geometry).as_bytes())?;
    Ok(CastorExport {
        prompts: prompts_out,
        delayed: delayed_out,
        hscan,
        lut: lut_path,
        ids: ids_path,
        crystals: ids.len(),
        tof: fwhm.map(|f| TofHeader {
            resolution_ps: f,
            measurement_range_ps: tof_range.unwrap_or(8000.0),
        }),
        notes,
    })
}

/// Prints what an export wrote.
pub fn print_summary(e: &CastorExport) {
    let pair = |what: &str, l: &ListModeExport| {
        println!(
            "  {what}: {} events -> {} + {} ({} bytes)",
            l.events,
            l.header.display(),
            l.data.display(),
            l.bytes
        );
    };
    println!("CASToR list-mode export");
    pair("prompts", &e.prompts);
    if let Some(d) = &e.delayed {
        pair("delayed (randoms estimate)", d);
    }
    match &e.tof {
        Some(t) => println!(
            "  TOF: delta t = t(crystal 1) - t(crystal 2), resolution {} ps FWHM, range {} ps",
            t.resolution_ps, t.measurement_range_ps
        ),
        None => println!("  TOF: not written"),
    }
    println!(
        "  scanner: {} crystals -> {} + {} (copy both into CASToR's config/scanner directory); ids in {}",
        e.crystals,
        e.hscan.display(),
        e.lut.display(),
        e.ids.display()
    );
    for n in &e.notes {
        println!("  note: {n}");
    }
}
