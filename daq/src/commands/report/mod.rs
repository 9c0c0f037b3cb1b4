//! `scandaq report RUN_DIR [--out report.html]`: one self-contained HTML file a physicist
//! opens after a run and a lab attaches to its log book: the run summary (state, rates,
//! files, every loss), and for the data the run holds, PET (energy spectra with the fitted
//! photopeak, the oriented coincidence Δt histogram, count maps, rates), OPM-MEG (spectral
//! density and health per channel, trigger timeline) and ultrasound (a delay-and-sum B-mode
//! image of one frame). Figures are inline SVG (plotters) and PNG `data:` URIs: the file
//! needs no network and no script. The numbers are also in a JSON block
//! (`<script type="application/json" id="report-data">`).
//!
//! Tables are read batch by batch with only the needed columns, into fixed-size histograms,
//! so memory does not grow with the run.
//!
//! Owns: tables (run directory, streaming reads), histogram (bins, photopeak fit, FWHM),
//! figures (SVG charts), png (raster images), html (the page), summary, pet + pet_view,
//! meg, us (+ bmode). Imports only the shared crates and [`crate::process`] (the MEG channel
//! health of the dashboard).

mod bmode;
mod figures;
mod histogram;
mod html;
mod meg;
mod pet;
mod pet_view;
mod png;
mod summary;
mod tables;
mod us;

pub use meg::{StreamHealth, stream_health};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use summary::SummaryInputs;

/// `scandaq report` arguments.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run directory (OUTDIR/run-NNNNNN).
    pub run_dir: PathBuf,
    /// Output directory (created if missing, its parent must exist; the file is RUN.html,
    /// e.g. run-000001.html), or the file to write when the path ends in .html (default:
    /// RUN_DIR/report.html).
    #[arg(long, value_name = "DIR|FILE.html")]
    pub out: Option<PathBuf>,
}

/// Runs `scandaq report`: writes the file and prints where it is.
pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let out = report_path(&args.run_dir, args.out.as_deref())?;
    let written = write_report(&args.run_dir, &out)?;
    println!(
        "report of {} written to {} ({} figures, {} bytes)",
        args.run_dir.display(),
        out.display(),
        written.figures,
        written.bytes
    );
    Ok(ExitCode::SUCCESS)
}

/// The file `report --out OUT` writes: RUN_DIR/report.html without OUT, OUT itself when it
/// ends in `.html`, else `OUT/RUN.html` (the run directory's name), OUT made like every
/// `--out` directory (docs/cli.md).
fn report_path(run_dir: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let Some(out) = out else {
        return Ok(run_dir.join("report.html"));
    };
    if out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("html"))
    {
        return Ok(out.to_path_buf());
    }
    super::cli::prepare_out_dir(out)?;
    let run_name = std::fs::canonicalize(run_dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "run".into());
    Ok(out.join(format!("{run_name}.html")))
}

/// What [`write_report`] wrote.
#[derive(Debug)]
pub struct Written {
    /// Figures in the page.
    pub figures: usize,
    /// Size of the file, bytes.
    pub bytes: usize,
}

/// Reads the run at `run_dir` and writes its report to `out` (atomically: a temporary file
/// renamed into place).
pub fn write_report(run_dir: &Path, out: &Path) -> Result<Written> {
    let run = tables::RunTables::open(run_dir)?;
    let mut sections = Vec::new();
    let mut data = Map::new();
    let mut inputs = SummaryInputs::default();
    if let Some(p) = pet::pet_figures(&run)? {
        inputs.duration = Some((p.duration_s, "detector time, first to last single"));
        if p.duration_s > 0.0 {
            for (what, n) in [
                ("singles", p.singles),
                ("prompts", p.prompts),
                ("delayed", p.delayed),
            ] {
                inputs
                    .rates
                    .push((format!("{what} rate"), n as f64 / p.duration_s));
            }
        }
        if p.lossy_frames.0 > 0 {
            let (n, a, b) = p.lossy_frames;
            inputs.loss_times.insert(
                "frontend_lost_frames".into(),
                format!(
                    "{n} singles from flagged frames, detector time {:.6} s to {:.6} s",
                    a.saturating_sub(p.t0_ps) as f64 * 1e-12,
                    b.saturating_sub(p.t0_ps) as f64 * 1e-12
                ),
            );
        }
        let (section, d) = pet_view::pet_section(&p)?;
        sections.push(section);
        data.insert("pet".into(), d);
    }
    if let Some((section, d)) = meg::meg_section(&run, &mut inputs)? {
        sections.push(section);
        data.insert("meg".into(), d);
    }
    if let Some((section, d)) = us::us_section(&run, &mut inputs)? {
        sections.push(section);
        data.insert("us".into(), d);
    }
    let (summary, d) = summary::summary_section(&run, &inputs);
    sections.insert(0, summary);
    data.insert("summary".into(), d);
    let title = format!("scandaq run {} report", run.manifest.run);
    let page = html::page(&title, &sections, &Value::Object(data));
    write_file(out, page.as_bytes())?;
    Ok(Written {
        figures: page.matches("<figure class=\"fig\"").count(),
        bytes: page.len(),
    })
}

fn write_file(out: &Path, bytes: &[u8]) -> Result<()> {
    let name = out
        .file_name()
        .with_context(|| format!("--out {}: give a file name", out.display()))?;
    let tmp = out.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, bytes).with_context(|| {
        format!(
            "cannot write {} (is the folder there and writable? choose another with --out)",
            tmp.display()
        )
    })?;
    std::fs::rename(&tmp, out).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot move the report into place at {}", out.display())
    })
}
