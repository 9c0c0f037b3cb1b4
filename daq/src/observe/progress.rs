//! The progress bar of batch commands (replay, recover): shown on a terminal, hidden otherwise.

/// A byte-count progress bar on a terminal, hidden otherwise (or when `show` is false).
pub fn progress_bar(show: bool, len: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {percent}% eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
