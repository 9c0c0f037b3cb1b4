//! `scandaq export petsird RUN_DIR --out FILE.petsird|DIR`: a run's prompt and delayed
//! coincidences as a PETSIRD 0.12 list-mode file (ETSI PET Scanner Independent Raw Data, yardl
//! binary encoding), with the scanner described from the run's own crystal map. Format mapping,
//! field by field: docs/petsird.md.
//!
//! By job: [`yardl`] the binary encoding's primitives, [`layout`] the crystal map as PETSIRD
//! geometry, [`bins`] TOF and energy bins, [`header`] PETSIRD's `Header`, [`events`] a
//! coincidence table read batch by batch as PETSIRD events, [`file`] the file (atomic commit,
//! time blocks); this module decides everything from the run before writing anything.

mod bins;
mod events;
mod file;
mod header;
mod layout;
mod yardl;

use crate::commands::{cli, coinc_run};
use anyhow::Result;
use bins::{EnergyBins, TofBins};
use clap::Args;
use events::{EventCursor, EventMap};
use header::{CoincidencePolicy, ScannerFacts};
use layout::Layout;
use scandaq_core::run_state::EnergyUnit;
use scandaq_core::units::{parse_number_in, parse_whole};
use scandaq_sinks::castor::ScannerHeader;
use scandaq_sinks::coincidences::{DELAYED_FILE, DELAYED_TABLE};
use std::path::PathBuf;

/// `scandaq export petsird` arguments.
#[derive(Args, Clone, Debug)]
pub struct PetsirdArgs {
    /// The run directory (OUTDIR/run-NNNNNN).
    pub run_dir: PathBuf,
    /// The file to write when the path ends in .petsird, else a directory (created if missing,
    /// its parent must exist) that gets RUN.petsird (e.g. run-000001.petsird).
    #[arg(long, value_name = "FILE.petsird|DIR")]
    pub out: PathBuf,
    /// Length of one event time block, whole milliseconds.
    #[arg(long, value_name = "DURATION", default_value = "1ms",
          value_parser = parse_block_ms)]
    pub block: u32,
    /// Coincidence time resolution, FWHM (e.g. 200ps); default: the run's own (manifest).
    #[arg(long, value_name = "DURATION", value_parser = scandaq_core::units::parse_time_ps)]
    pub tof_fwhm: Option<i64>,
    /// TOF bin width (default: a quarter of the TOF resolution, at least 1 ps).
    #[arg(long, value_name = "DURATION", value_parser = scandaq_core::units::parse_time_ps)]
    pub tof_bin: Option<i64>,
    /// Write one TOF bin (the coincidence window) instead of TOF bins.
    #[arg(long)]
    pub no_tof: bool,
    /// Number of equal energy bins over the run's energy window.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = |s: &str| parse_whole(s, 1, 1024).map(|n| n as u32))]
    pub energy_bins: u32,
    /// Do not export the delayed coincidences.
    #[arg(long)]
    pub no_delayed: bool,
    /// Crystal depth of the element boxes, mm (map_channel.tsv has only positions).
    #[arg(long, value_name = "MM", default_value_t = 20.0,
          value_parser = |s: &str| parse_number_in(s, 0.001, 10_000.0, "mm"))]
    pub crystal_depth: f64,
}

/// `--block`: a duration in whole milliseconds.
fn parse_block_ms(s: &str) -> Result<u32, String> {
    let ps = scandaq_core::units::parse_time_ps(s)?;
    if ps <= 0 || ps % 1_000_000_000 != 0 {
        return Err(format!(
            "{s}: PETSIRD time blocks are whole milliseconds (e.g. 1ms, 10ms, 1s)"
        ));
    }
    u32::try_from(ps / 1_000_000_000).map_err(|_| format!("{s}: too long for a time block"))
}

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct PetsirdExport {
    /// The file.
    pub path: PathBuf,
    /// Blocks, events, bytes, clamps.
    pub written: file::Written,
    /// Detecting elements over all modules.
    pub elements: usize,
    /// Modules (replicas of the one module type).
    pub modules: usize,
    /// True when the modules are replicas of one module (else one module holds every crystal).
    pub replicated: bool,
    /// Energy bins.
    pub energy_bins: u32,
    /// TOF bins.
    pub tof_bins: u32,
    /// Decisions the user should know about.
    pub notes: Vec<String>,
}

/// Energy bins from the run's energy window (see docs/petsird.md, "Energy bins").
fn energy_bins(
    unit: EnergyUnit,
    window: Option<[f32; 2]>,
    count: u32,
    notes: &mut Vec<String>,
) -> EnergyBins {
    match (unit, window) {
        (EnergyUnit::Kev, Some([lo, hi])) if hi > lo => EnergyBins::equal(lo, hi, count),
        (EnergyUnit::Kev, _) => {
            notes.push(
                "no energy window recorded with the coincidences: one energy bin [0, 100000] keV"
                    .into(),
            );
            EnergyBins::equal(0.0, 100_000.0, 1)
        }
        _ => {
            notes.push("energies are ToT (no energy calibration), not keV: one energy bin [0, 100000] holding every event; the energy of an event is not recorded".into());
            EnergyBins::equal(0.0, 100_000.0, 1)
        }
    }
}

/// Exports `args.run_dir` (see the module doc). Everything is read and checked before the
/// file is created; the file appears complete or not at all.
pub fn export_petsird(args: &PetsirdArgs) -> Result<PetsirdExport> {
    let run_dir = &args.run_dir;
    let manifest = coinc_run::read_run(run_dir, "PETSIRD")?;
    let prompts_path = coinc_run::committed_prompts(run_dir)?;
    let geometry = coinc_run::crystal_map(
        run_dir,
        "the crystal positions are PETSIRD's scanner geometry",
    )?;
    let mut notes = Vec::new();
    let windows = coinc_run::Windows::of(&prompts_path[0]);
    let fwhm_ps = coinc_run::tof_resolution(
        run_dir,
        args.tof_fwhm.map(|t| t as f64),
        args.no_tof,
        &manifest,
        &mut notes,
    )?;
    let window_ps = windows.window_ps.unwrap_or_else(|| {
        notes.push(
            "the coincidence window is not recorded in the table: TOF bins cover +-4000 ps".into(),
        );
        4000
    });
    let tof = TofBins::covering(
        window_ps,
        fwhm_ps.map(|f| args.tof_bin.unwrap_or(((f / 4.0).round() as i64).max(1))),
    );
    let energy = energy_bins(
        manifest.energy_unit,
        windows.energy_window_kev,
        args.energy_bins,
        &mut notes,
    );
    let pitch = ScannerHeader::from_geometry("scandaq", &geometry, args.crystal_depth);
    let layout = Layout::of(
        &geometry,
        [
            args.crystal_depth as f32,
            pitch.crystal_transaxial_mm as f32,
            pitch.crystal_axial_mm as f32,
        ],
    );
    let delayed_files = if args.no_delayed {
        Vec::new()
    } else {
        coinc_run::committed_table(run_dir, DELAYED_TABLE)?
    };
    let export_delayed = !delayed_files.is_empty();
    if !args.no_delayed && !export_delayed {
        notes.push(format!(
            "no delayed table ({DELAYED_FILE}) in the run: only prompts exported"
        ));
    }
    let shift = windows.delay_ps.unwrap_or_else(|| {
        if export_delayed {
            notes.push(
                "the delay of the delayed window is not recorded: delayed TOF taken unshifted"
                    .into(),
            );
        }
        0
    });
    let t0 = coinc_run::time_origin(
        &manifest,
        &prompts_path,
        export_delayed.then_some(delayed_files.as_slice()),
    )?;
    let prompts = EventCursor::open(&prompts_path, 0)?;
    let delayed = if export_delayed {
        Some(EventCursor::open(&delayed_files, shift)?)
    } else {
        None
    };
    let path = cli::out_file(run_dir, &args.out, "petsird")?;

    let policy = CoincidencePolicy::of_gate(windows.policy.as_deref());
    let model_name = format!(
        "scandaq {} (crystal map of run {})",
        env!("CARGO_PKG_VERSION"),
        manifest.run
    );
    let mut head = Vec::new();
    header::encode(
        &mut head,
        &layout,
        &ScannerFacts {
            model_name: &model_name,
            tof,
            tof_resolution_mm: fwhm_ps.map_or(0.0, |f| (f * bins::HALF_C_MM_PER_PS) as f32),
            energy: &energy,
            prompts: policy,
            delayed: if export_delayed {
                policy
            } else {
                CoincidencePolicy::None
            },
        },
    );
    let plan = file::BlockPlan {
        t0_ps: t0,
        block_ms: args.block,
        last_t_ps: manifest.last_t_ps,
        map: EventMap {
            layout: &layout,
            energy: &energy,
            tof,
        },
    };
    let written = file::write(&path, &head, &plan, prompts, delayed)?;
    Ok(PetsirdExport {
        path,
        written,
        elements: layout.element_count(),
        modules: layout.modules.len(),
        replicated: layout.replicated,
        energy_bins: energy.count(),
        tof_bins: tof.count,
        notes,
    })
}

/// Carries out `scandaq export petsird` and prints what was written.
pub fn run(args: &PetsirdArgs) -> Result<()> {
    let e = export_petsird(args)?;
    let w = &e.written;
    println!(
        "PETSIRD 0.12 export: {} ({} bytes)",
        e.path.display(),
        w.bytes
    );
    println!(
        "  {} prompts, {} delayed in {} time blocks of {} ms",
        w.prompts, w.delayed, w.blocks, args.block
    );
    println!(
        "  scanner: {} detecting elements ({}), {} energy bin(s), {} TOF bin(s)",
        e.elements,
        if e.replicated {
            format!("{} replicated modules", e.modules)
        } else {
            "one module holding every crystal".to_string()
        },
        e.energy_bins,
        e.tof_bins
    );
    if w.clamped.energy > 0 || w.clamped.tof > 0 {
        println!(
            "  note: {} energies and {} time differences outside the bin edges were put in the nearest bin",
            w.clamped.energy, w.clamped.tof
        );
    }
    for n in &e.notes {
        println!("  note: {n}");
    }
    Ok(())
}
