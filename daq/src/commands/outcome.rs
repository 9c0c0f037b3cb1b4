//! How a command that wrote a run ends: its summary printed, and the process exit code
//! (failure when the run failed, with what to do about files left `.inprogress`).

use crate::process::session;
use std::process::ExitCode;

/// Prints the run's summary and returns its exit code. `detector_seconds`: the simulated
/// time of a demo that ran to its end (for the rate line).
pub fn finish_run(summary: session::RunSummary, detector_seconds: Option<f64>) -> ExitCode {
    session::print_summary(&summary, detector_seconds);
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
