//! How a command that wrote a run ends: its summary printed, and the process exit code
//! (failure when the run failed, with what to do about files left `.inprogress`).

use crate::process::run::RunSummary;
use scandaq_core::run_state::EnergyUnit;
use std::process::ExitCode;

/// Prints the run's summary and returns its exit code. `detector_seconds`: the simulated
/// time of a demo that ran to its end (for the rate line).
pub fn finish_run(summary: RunSummary, detector_seconds: Option<f64>) -> ExitCode {
    print_summary(&summary, detector_seconds);
    match &summary.error {
        Some(e) => {
            let reason = summary
                .manifest
                .failure
                .map_or("failed".to_string(), |f| f.to_string());
            let salvage = if summary
                .manifest
                .files
                .iter()
                .any(|f| f.path.ends_with(".inprogress"))
                || has_inprogress_files(&summary.dir)
            {
                format!(
                    "; files left .inprogress hold more: `scandaq recover {}` salvages them",
                    summary.dir.display()
                )
            } else {
                String::new()
            };
            eprintln!(
                "error ({reason}): {e} (everything committed before it is in {}{salvage})",
                summary.dir.display()
            );
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}

/// True when `dir` still holds files a run did not commit.
fn has_inprogress_files(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".inprogress"))
}

/// Prints the human summary of a run on stdout.
pub fn print_summary(s: &RunSummary, detector_seconds: Option<f64>) {
    let c = &s.counts;
    println!("run {} -> {}", s.run, s.dir.display());
    // A run without PET calibration (streams only) has no singles to speak of.
    if s.manifest.calibration.tables != ["none"] {
        print_pet_lines(s, detector_seconds);
    }
    println!("  losses: {}", c.losses.summary());
    for f in &s.manifest.files {
        println!(
            "  wrote {} ({} rows, {} bytes)",
            s.dir.join(&f.path).display(),
            f.rows,
            f.bytes
        );
    }
    println!("  manifest {}", s.dir.join("manifest.json").display());
    for w in &s.warnings {
        println!("  note: {w}");
    }
}

/// The PET lines of a summary: frames, hits and singles, time span, photopeak, coincidences.
fn print_pet_lines(s: &RunSummary, detector_seconds: Option<f64>) {
    let c = &s.counts;
    // Coincidences-only runs sort their singles without writing them.
    let (singles, verb) = match c.singles_sorted_only {
        0 => (c.singles_written, "written"),
        n => (
            c.singles_written + n,
            "sorted (coincidences only: no singles table)",
        ),
    };
    println!(
        "  frames {}  hits decoded {}  singles {verb} {}  in {:.2} s wall time ({:.1} M hits/s)",
        c.frames,
        c.hits_decoded,
        singles,
        s.elapsed.as_secs_f64(),
        c.hits_decoded as f64 / s.elapsed.as_secs_f64().max(1e-9) / 1e6
    );
    if let (Some(a), Some(b)) = (s.manifest.first_t_ps, s.manifest.last_t_ps) {
        let span = (b - a) as f64 * 1e-12;
        let secs = detector_seconds.unwrap_or(span);
        println!(
            "  time span {:.3} s of detector time, singles rate {:.0} /s",
            span,
            singles as f64 / secs.max(1e-12)
        );
    }
    if s.manifest.energy_unit == EnergyUnit::Kev {
        match s.histogram.peak_in(400, 650) {
            Some(p) => println!("  photopeak at {p:.1} keV"),
            None => println!("  photopeak: not found in 400-650 keV"),
        }
    } else {
        println!("  energies are ToT in ns (no energy calibration)");
    }
    let count = |k: &str| s.manifest.counts.get(k).copied();
    if let Some(p) = count("coincidences.prompt.pairs") {
        let delayed = match count("coincidences.delayed.pairs") {
            Some(d) => format!("{d} delayed (randoms estimate)"),
            None => "no delayed window".into(),
        };
        println!(
            "  coincidences: {p} prompt, {delayed}, {} multiples seen",
            count("coincidences.prompt.multiples_seen").unwrap_or(0)
        );
    }
}
