//! `scandaq export castor RUN_DIR --out DIR`: a run's prompt coincidences as a CASToR
//! list-mode pair (`NAME.cdh` + `NAME.cdf`), the delayed coincidences as a second pair
//! (`NAME_delayed.*`), and the scanner description generated from the run's own
//! `calib/map_channel.tsv` (`scandaq_NAME.hscan` + `.lut`, `NAME_crystal_ids.tsv`).
//! Layout and id mapping: docs/formats.md, "CASToR list-mode export".
//!
//! By job: [`inputs`] reads and checks everything before anything is written (so a refusal
//! leaves no file), [`list_mode`] writes one `.cdf` + `.cdh` pair; this module writes the
//! pairs and the scanner description.

mod inputs;
mod list_mode;

use crate::commands::coinc_run::{self, Windows};
use anyhow::Result;
use inputs::ScannerMap;
use list_mode::ListModeWriter;
use scandaq_sinks::castor::{ScannerHeader, TofHeader, lut_bytes, write_atomic};
use scandaq_sinks::coincidences::{DELAYED_FILE, DELAYED_TABLE};
use std::path::{Path, PathBuf};

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

/// Exports `run_dir` (see the module doc). Refuses PETLINK runs and runs without a committed
/// coincidence table before writing anything.
pub fn export_castor(run_dir: &Path, opts: &CastorOptions) -> Result<CastorExport> {
    let manifest = inputs::read_run(run_dir)?;
    let prompts = coinc_run::committed_prompts(run_dir)?;
    let map = ScannerMap::read(run_dir)?;
    let name = inputs::export_name(run_dir, opts, &manifest)?;
    let scanner = format!("scandaq_{name}");
    let mut notes = Vec::new();
    let windows = Windows::of(&prompts[0]);
    let fwhm = inputs::tof_resolution(run_dir, opts, &manifest, &mut notes)?;
    let delayed = if opts.no_delayed {
        Vec::new()
    } else {
        coinc_run::committed_table(run_dir, DELAYED_TABLE)?
    };
    let export_delayed = !delayed.is_empty();
    let t0 = coinc_run::time_origin(
        &manifest,
        &prompts,
        export_delayed.then_some(delayed.as_slice()),
    )?;

    // Everything checked: now write.
    let out = &opts.out;
    create_out_dir(out)?;
    let tof_range = windows.window_ps.map(|w| 2.0 * w as f64);
    let list_mode = ListModeWriter {
        out,
        name: &name,
        scanner: &scanner,
        ids: &map.ids,
        t0_ps: t0,
        last_t_ps: manifest.last_t_ps,
        fwhm_ps: fwhm,
        tof_range_ps: tof_range,
    };
    if fwhm.is_some() && windows.window_ps.is_none() {
        notes.push("the coincidence window is not recorded in the table: List TOF measurement range set to 8000 ps (a 4 ns window)".into());
    }
    let prompts_out = list_mode.write(&prompts, &name, 0, "prompt coincidences")?;
    let delayed_out = if export_delayed {
        let shift = match (fwhm, windows.delay_ps) {
            (Some(_), Some(d)) => d,
            (Some(_), None) => {
                notes.push("the delay of the delayed window is not recorded: delayed TOF written unshifted".into());
                0
            }
            _ => 0,
        };
        Some(list_mode.write(
            &delayed,
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
    let (hscan, lut_path, ids_path) = write_scanner(out, &name, &scanner, &map, opts)?;
    Ok(CastorExport {
        prompts: prompts_out,
        delayed: delayed_out,
        hscan,
        lut: lut_path,
        ids: ids_path,
        crystals: map.ids.len(),
        tof: fwhm.map(|f| TofHeader {
            resolution_ps: f,
            measurement_range_ps: tof_range.unwrap_or(8000.0),
        }),
        notes,
    })
}

/// Creates the output directory when it does not exist (refused when `out` is a file).
fn create_out_dir(out: &Path) -> Result<()> {
    crate::commands::cli::prepare_out_dir(out)
}

/// Writes the scanner description: `.hscan`, `.lut` and the crystal-id table; returns their
/// paths.
fn write_scanner(
    out: &Path,
    name: &str,
    scanner: &str,
    map: &ScannerMap,
    opts: &CastorOptions,
) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let hscan = out.join(format!("{scanner}.hscan"));
    let lut_path = out.join(format!("{scanner}.lut"));
    let ids_path = out.join(format!("{name}_crystal_ids.tsv"));
    let header = ScannerHeader::from_geometry(scanner, &map.geometry, opts.crystal_depth_mm);
    write_atomic(&hscan, header.to_text().as_bytes())?;
    write_atomic(&lut_path, &lut_bytes(&map.lut))?;
    write_atomic(&ids_path, map.ids.to_tsv(&map.geometry).as_bytes())?;
    Ok((hscan, lut_path, ids_path))
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
