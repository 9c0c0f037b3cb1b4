//! `scandaq calibrate energy`: photopeaks in the ToT spectra.
//!
//! 1. The raw files go through the kernel with the TDC table only, so each single carries its
//!    ToT in ns; ToT spectra are filled per (channel, TAC), 0.2 ns bins up to 400 ns.
//! 2. Per channel, the 511 keV photopeak (and the 1274.5 keV line of Na-22 when present) is
//!    found on the sum of its TACs: the most prominent local maxima of the smoothed spectrum
//!    above `--min-tot-ns`; a pair whose ToT ratio the model `ToT = a ln(1 + E/b)` can give for
//!    511 and 1274.5 keV is taken as the two lines, else the most prominent peak is 511 keV.
//! 3. Each TAC's 511 keV peak is located near the channel's; the differences are the TACs'
//!    energy-branch offsets, written into `t0` of the TDC table's E entries (the mean over a
//!    channel's TACs is absorbed by the energy curve).
//! 4. On the aligned spectrum the peaks are refined (Gaussian = parabola in log counts) and
//!    the curve `E = b (exp(ToT/a) − 1)` is solved through them: two lines fix both `a` and
//!    `b` (the ratio of the two ToTs fixes `b`); with the 511 keV line alone, `a` is fixed to
//!    the median `a` of the two-line channels (or `--fixed-a-ns`, default 80 ns) and `b`
//!    follows.
//!
//! By job: [`channels`] fills the ToT spectra and finds each channel's peaks (with the peak
//! finding of [`peaks`]), [`curves`] turns them into the energy curves and TAC offsets; this
//! module reports and writes the calibration directory.

mod channels;
mod curves;
mod peaks;

use super::report::Report;
use super::tdc::summarise_stream;
use super::write_table;
use super::{check_inputs, copy_map_or_from, load_tdc};
use crate::process::calib_load::names;
use anyhow::{Result, bail};
use channels::{analyse_channels, fill_tot_spectra};
use curves::EnergyCurves;
use scandaq_core::Calibration;
use std::path::PathBuf;

pub use peaks::{Peak, solve_b};

/// Width of a ToT bin, ns.
pub const BIN_NS: f64 = 0.2;
/// Bins of a ToT spectrum (0 to 400 ns).
pub const BINS: usize = 2000;
/// The annihilation line, keV.
pub const E_511: f64 = 511.0;

/// Options of `scandaq calibrate energy`.
#[derive(Clone, Debug)]
pub struct EnergyOptions {
    /// Raw files.
    pub files: Vec<PathBuf>,
    /// TDC table (file or directory).
    pub tdc: PathBuf,
    /// Output calibration directory.
    pub out: PathBuf,
    /// Channel map to copy into `out` (default: the one beside the TDC table, if any).
    pub geometry: Option<PathBuf>,
    /// Second line, keV (1274.5 for Na-22); 0 = only the 511 keV line.
    pub second_line_kev: f64,
    /// Fixed ToT scale `a` (ns) for channels with one line.
    pub fixed_a_ns: Option<f64>,
    /// Peaks below this ToT (dark counts, noise) are ignored, ns.
    pub min_tot_ns: f64,
    /// Fewest hits a channel needs.
    pub min_hits: u64,
}

/// Runs `scandaq calibrate energy`.
pub fn run(opts: &EnergyOptions) -> Result<Report> {
    check_inputs(&opts.files)?;
    let mut tdc = load_tdc(&opts.tdc)?;
    let cal = Calibration {
        tdc: tdc.clone(),
        ..Default::default()
    };
    let (hists, counts) = fill_tot_spectra(opts, &cal)?;
    if hists.is_empty() {
        bail!(
            "no calibrated hits in {} file(s) ({} hits read): does the TDC table belong to these files?",
            counts.files,
            counts.hits
        );
    }
    let results = analyse_channels(&hists, opts);

    let mut report = Report::new("energy");
    report.line(format!(
        "method: photopeaks in the ToT spectra; TACs aligned on the 511 keV peak (E-branch t0); E = b (exp(ToT/a) - 1) through 511{} keV",
        if opts.second_line_kev > E_511 {
            format!(" and {}", opts.second_line_kev)
        } else {
            String::new()
        }
    ));
    summarise_stream(&mut report, &counts);

    // Two-line fits first (they set the fixed `a` for one-line channels).
    let mut curves = EnergyCurves::new(&results, opts, counts.period_ps);
    for r in &results {
        curves.fit_channel(r, &mut tdc, &mut report);
    }
    if curves.table.entries.is_empty() {
        bail!(
            "no channel could be energy-calibrated:\n{}",
            report.to_text()
        );
    }
    curves.report(&mut report, results.len());
    let mut path = write_table(&opts.out, names::ENERGY, &curves.table.to_text())?;
    report.files.push(path.display().to_string());
    path = write_table(&opts.out, names::TDC, &tdc.to_text())?;
    report.files.push(format!(
        "{} (energy-branch TAC offsets refined)",
        path.display()
    ));
    if copy_map_or_from(opts.geometry.as_deref(), &opts.tdc, &opts.out)?.is_some() {
        report
            .files
            .push(opts.out.join(names::MAP).display().to_string());
    }
    report.finish(&opts.out)
}
