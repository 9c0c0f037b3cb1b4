//! `scandaq calibrate skew`: per-channel time offsets from a point source.
//!
//! The raw files go through the kernel with the TDC and energy tables (no skew); the
//! time-ordered singles are paired by the library sorter ([`CoincidenceSorter`]) inside an
//! energy window. Each (channel, TAC) is its own unknown (the sorter sees a channel map whose
//! "crystals" are (channel, TAC) pairs at the channel's position), because the TACs' timing
//! offsets `t0` are not observable by code density. For a coincidence of singles a and b,
//! `y = (t_a − t_b) − (|x_a − s| − |x_b − s|) / c` (measured minus geometric time of flight
//! for source position s) is `o_a − o_b` plus noise. The offsets minimise `Σ (y − o_a + o_b)²`:
//! the normal equations are a graph Laplacian, solved by conjugate gradients (matrix free over
//! the stored coincidences); coincidences more than 3 robust sigma from the fit (randoms,
//! mis-paired) are dropped and the system solved again (three rounds). Gauge: only differences
//! are observable, so the offsets are shifted to mean 0 over all (channel, TAC) with data.
//!
//! Output: `skew.tsv` (per channel the mean over its TACs, ps) and the TDC table with each
//! TAC's remaining offset added to `t0` of both branches (so the ToT, hence the energy
//! calibration, is unchanged).
//!
//! By job: [`coincidences`] streams the raw files and stores the coincidences,
//! [`least_squares`] fits the offsets, [`offsets`] turns them into the skew and TDC tables;
//! this module checks the inputs, reports and writes the calibration directory.

mod coincidences;
mod least_squares;
mod offsets;

use super::report::Report;
use super::tdc::summarise_stream;
use super::{check_inputs, load_energy, load_geometry, load_tdc};
use super::{median, read_table_text, write_table};
use crate::process::calib_load::names;
use anyhow::{Result, bail};
use coincidences::{Collected, TacUnknowns, collect_coincidences};
use least_squares::Fit;
use offsets::SkewTables;
use scandaq_core::Calibration;
use std::path::PathBuf;

pub use least_squares::fwhm_ps;

/// Speed of light, mm/ps.
const C_MM_PER_PS: f64 = 0.299_792_458;

/// Options of `scandaq calibrate skew`.
#[derive(Clone, Debug)]
pub struct SkewOptions {
    /// Raw files (point-source acquisitions).
    pub files: Vec<PathBuf>,
    /// TDC table (file or directory).
    pub tdc: PathBuf,
    /// Energy table (file or directory).
    pub energy: PathBuf,
    /// Channel map (file or directory).
    pub geometry: PathBuf,
    /// Source position, mm.
    pub source_mm: [f64; 3],
    /// Output calibration directory.
    pub out: PathBuf,
    /// Coincidence window, ps.
    pub window_ps: i64,
    /// Energy window, keV.
    pub energy_window_kev: [f32; 2],
    /// Fewest coincidences a (channel, TAC) needs.
    pub min_coincidences: u64,
    /// Most coincidences kept in memory (12 bytes each).
    pub max_coincidences: usize,
}

/// Runs `scandaq calibrate skew`.
pub fn run(opts: &SkewOptions) -> Result<Report> {
    check_inputs(&opts.files)?;
    if opts.window_ps <= 0 {
        bail!("--window must be more than 0 (e.g. 10ns)");
    }
    let mut tdc = load_tdc(&opts.tdc)?;
    let energy = load_energy(&opts.energy)?;
    let (energy_file, energy_text) = read_table_text(&opts.energy, names::ENERGY)?;
    let (geometry, map_text) = load_geometry(&opts.geometry)?;
    let unknowns = TacUnknowns::new(&geometry, opts.source_mm);
    let cal = Calibration {
        tdc: tdc.clone(),
        energy: Some(energy),
        ..Default::default()
    };
    let collected = collect_coincidences(opts, &unknowns, &cal)?;
    let mut report = Report::new("skew");
    report_collection(&mut report, opts, &collected);
    let events = &collected.events;
    if events.len() < 10 {
        bail!(
            "only {} coincidences found in the energy window {:?} keV: is this a point-source acquisition, and do the energy table and the channel map belong to it?",
            events.len(),
            opts.energy_window_kev
        );
    }
    let fit = Fit::solve(events, unknowns.len());
    let mut tables = SkewTables::new(
        &unknowns.channels,
        events,
        &fit,
        opts.min_coincidences,
        collected.counts.period_ps,
    );
    tables.derive(&mut tdc, &mut report);
    if tables.skew.offsets_ps.is_empty() {
        bail!("no channel had enough coincidences:\n{}", report.to_text());
    }
    report_fit(&mut report, events.len(), &fit, &tables);
    for (name, text) in [
        (names::SKEW, tables.skew.to_text()),
        (names::TDC, tdc.to_text()),
        (names::MAP, map_text),
    ] {
        let p = write_table(&opts.out, name, &text)?;
        report.files.push(p.display().to_string());
    }
    let same_file = std::fs::canonicalize(&energy_file).ok()
        == std::fs::canonicalize(opts.out.join(names::ENERGY)).ok();
    if !same_file {
        let p = write_table(&opts.out, names::ENERGY, &energy_text)?;
        report.files.push(p.display().to_string());
    }
    report.finish(&opts.out)
}

/// The report's lines on the method and on what the raw files gave.
fn report_collection(report: &mut Report, opts: &SkewOptions, collected: &Collected) {
    let s = opts.source_mm;
    report.line(format!(
        "method: coincidences (window {} ps, energy {}-{} keV, removeMultiples) minus geometric TOF for a source at ({}, {}, {}) mm; least squares per (channel, TAC) by conjugate gradients, 3 rounds dropping > 3 robust sigma; gauge: mean offset 0",
        opts.window_ps, opts.energy_window_kev[0], opts.energy_window_kev[1], s[0], s[1], s[2]
    ));
    summarise_stream(report, &collected.counts);
    let unmapped_hits = collected.unmapped_hits;
    if unmapped_hits > 0 {
        report.line(format!(
            "{unmapped_hits} hits on channels missing from the channel map were ignored"
        ));
    }
    let dropped_cap = collected.dropped_cap;
    if dropped_cap > 0 {
        report.line(format!(
            "{dropped_cap} coincidences beyond --max-coincidences {} were not used",
            opts.max_coincidences
        ));
    }
}

/// The report's lines and metrics on the fit.
fn report_fit(report: &mut Report, coincidences: usize, fit: &Fit, tables: &SkewTables<'_>) {
    let skew = &tables.skew;
    let skews: Vec<f64> = skew.offsets_ps.values().copied().collect();
    let sk_mean = skews.iter().sum::<f64>() / skews.len() as f64;
    let sk_sd =
        (skews.iter().map(|v| (v - sk_mean).powi(2)).sum::<f64>() / skews.len() as f64).sqrt();
    report.line(format!(
        "{} coincidences used ({} kept within 3 sigma = {:.0} ps); {} of {} channels calibrated",
        coincidences,
        fit.kept,
        fit.sigma_ps,
        skew.offsets_ps.len(),
        tables.channel_count()
    ));
    report.line(format!(
        "coincidence time (minus geometric TOF) FWHM: {} ps before, {} ps after",
        fit.fwhm_before_ps
            .map_or("n/a".into(), |v| format!("{v:.0}")),
        fit.fwhm_after_ps
            .map_or("n/a".into(), |v| format!("{v:.0}"))
    ));
    report.metric("coincidences", coincidences as f64);
    report.metric("coincidences_kept", fit.kept as f64);
    report.metric("channels_calibrated", skew.offsets_ps.len() as f64);
    report.metric("fwhm_before_ps", fit.fwhm_before_ps.unwrap_or(f64::NAN));
    report.metric("fwhm_after_ps", fit.fwhm_after_ps.unwrap_or(f64::NAN));
    report.metric("residual_robust_sigma_ps", fit.sigma_ps);
    report.metric("skew_sd_ps", sk_sd);
    report.metric(
        "tac_offset_spread_ps_median",
        median(&tables.tac_spread).unwrap_or(0.0),
    );
    report.metric("channel_residual_rms_ps_median", tables.median_rms_ps);
}
