//! What the operator of a live run sees on stderr: the stats line every `stats_every`, the
//! inputs' new warnings, disk warnings and failures (in colour on a terminal).

use crate::observe::live_stats::{LiveStats, StatsSnapshot};
use scandaq_core::run_state::FailureReason;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The stderr side of a live run (silent when `every` is `None`).
pub(super) struct Console {
    every: Option<Duration>,
    last_stats: Instant,
    last_snapshot: StatsSnapshot,
    last_warning_check: Instant,
    warnings_printed: BTreeMap<String, usize>,
}

impl Console {
    /// A console printing the stats line every `every` (None = quiet).
    pub(super) fn new(every: Option<Duration>, stats: &LiveStats) -> Self {
        Self {
            every,
            last_stats: Instant::now(),
            last_snapshot: stats.snapshot(),
            last_warning_check: Instant::now(),
            warnings_printed: BTreeMap::new(),
        }
    }

    /// True when the console prints.
    pub(super) fn prints(&self) -> bool {
        self.every.is_some()
    }

    /// Records a failure in the statistics and says it on stderr in red.
    pub(super) fn failure(&self, stats: &LiveStats, failure: FailureReason, error: &str) {
        report_failure(stats, failure, error, self.prints());
    }

    /// Says `warning` on stderr in yellow.
    pub(super) fn warn(&self, warning: &str) {
        if self.prints() {
            eprintln!("{}", paint(&format!("warning: {warning}"), YELLOW));
        }
    }

    /// Says `line` on stderr.
    pub(super) fn say(&self, line: &str) {
        if self.prints() {
            eprintln!("{line}");
        }
    }

    /// Prints the inputs' new warnings (every [`WARNINGS_EVERY`]) and the stats line when due.
    pub(super) fn tick(&mut self, stats: &LiveStats) {
        let Some(every) = self.every else { return };
        if self.last_warning_check.elapsed() >= WARNINGS_EVERY {
            self.last_warning_check = Instant::now();
            print_new_warnings(stats, &mut self.warnings_printed);
        }
        if self.last_stats.elapsed() >= every {
            self.last_stats = Instant::now();
            let now = stats.snapshot();
            print_stats_line(&now, &self.last_snapshot);
            self.last_snapshot = now;
        }
    }
}

/// The stats line: time, singles and their rate since `before`, boards, bytes, ring fill and
/// losses.
fn print_stats_line(now: &StatsSnapshot, before: &StatsSnapshot) {
    let losses = now.losses_total();
    eprintln!(
        "[{:>6.1} s] running: {} singles ({:.2} M/s), {} boards, {:.1} MB in, {} chunks waiting, {}",
        now.elapsed_s,
        now.singles,
        now.singles_rate_since(before) / 1e6,
        now.boards,
        now.frame_bytes as f64 / 1e6,
        now.ring_fill,
        if losses == 0 {
            "no losses".to_string()
        } else {
            paint(
                &format!("LOSSES {losses} (see the manifest for reasons)"),
                RED,
            )
        }
    );
}

/// Records a failure in the statistics (the dashboard shows it at once) and, when `print`,
/// says it on stderr in red.
fn report_failure(stats: &LiveStats, failure: FailureReason, error: &str, print: bool) {
    stats.set_failure(failure, error);
    if print {
        eprintln!(
            "{}",
            paint(
                &format!("FAILED ({failure}): {error}: stopping the acquisition"),
                RED
            )
        );
    }
}

const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";

/// `text` in `colour` when stderr is a terminal, plain otherwise.
fn paint(text: &str, colour: &str) -> String {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        format!("{colour}{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// How often the inputs' warnings are checked for new ones to print.
const WARNINGS_EVERY: Duration = Duration::from_millis(100);

/// Prints, on stderr, the inputs' warnings not printed yet (`printed`: per input label, how
/// many were).
fn print_new_warnings(stats: &LiveStats, printed: &mut BTreeMap<String, usize>) {
    for input in stats.inputs_snapshot() {
        let done = printed.entry(input.label).or_insert(0);
        for w in input.warnings.iter().skip(*done) {
            eprintln!("{}", paint(&format!("warning: {w}"), YELLOW));
        }
        *done = (*done).max(input.warnings.len());
    }
}
