//! The run summary at the top of the report: what the run was (sources, mode, state, stop
//! reason or failure), how long it ran and at what rates, its files, and every loss with its
//! reason, unit, meaning and when it happened (where the tables say, and for a live run the
//! run times the manifest's `loss_times` recorded).

use super::html::{Section, escape};
use super::tables::RunTables;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write;

/// What the other sections found that the summary shows.
#[derive(Default)]
pub(super) struct SummaryInputs {
    /// Time the data span, s, and which clock it is on.
    pub duration: Option<(f64, &'static str)>,
    /// Rates to show: (what, per second).
    pub rates: Vec<(String, f64)>,
    /// When losses happened, by loss reason name (text).
    pub loss_times: BTreeMap<String, String>,
}

/// The summary section and its data.
pub(super) fn summary_section(run: &RunTables, inputs: &SummaryInputs) -> (Section, Value) {
    let m = &run.manifest;
    let mut html = String::from("<table class=\"data kv\">");
    let mut row = |k: &str, v: String| {
        let _ = write!(html, "<tr><th>{k}</th><td>{v}</td></tr>");
    };
    row(
        "run",
        format!("{} ({})", m.run, escape(&run.dir.display().to_string())),
    );
    row("mode", escape(m.mode.name()));
    let state_class = if m.failure.is_some() || !m.complete {
        "bad"
    } else {
        "ok"
    };
    row(
        "state",
        format!(
            "<span class=\"{state_class}\">{}</span>{}",
            escape(m.state.name()),
            if m.complete { "" } else { " (incomplete)" }
        ),
    );
    if let Some(r) = m.stop_reason {
        row("stop reason", escape(r.name()));
    }
    if let Some(f) = m.failure {
        row(
            "failure",
            format!("<span class=\"bad\">{}</span>", escape(f.name())),
        );
    }
    if let Some(e) = &m.error {
        row("error", escape(e));
    }
    row("sources", escape(&m.sources.join(", ")));
    row("software", escape(&m.software_version));
    if !m.calibration.checksum.is_empty() {
        row(
            "calibration",
            format!(
                "sha256 {} ({})",
                escape(&m.calibration.checksum),
                escape(&m.calibration.tables.join(", "))
            ),
        );
    }
    if let Some((d, clock)) = inputs.duration {
        row("duration", format!("{d:.3} s ({clock})"));
    }
    for (what, r) in &inputs.rates {
        row(&escape(what), format!("{r:.1} /s"));
    }
    html.push_str("</table>");
    html.push_str(&loss_table(run, inputs));
    html.push_str(&file_table(run));
    html.push_str("<details><summary>All counts of the manifest</summary><table class=\"data\">");
    for (k, v) in &m.counts {
        let _ = write!(html, "<tr><td>{}</td><td>{v}</td></tr>", escape(k));
    }
    html.push_str("</table></details>");
    let data = json!({
        "run": m.run,
        "mode": m.mode.name(),
        "state": m.state.name(),
        "complete": m.complete,
        "stop_reason": m.stop_reason.map(|r| r.name()),
        "failure": m.failure.map(|f| f.name()),
        "sources": m.sources,
        "duration_s": inputs.duration.map(|d| d.0),
        "losses": m.losses.by_name(),
        "loss_times": inputs.loss_times,
        "loss_run_times": m.loss_times.iter().map(|t| json!({"place": t.place, "reason": t.reason, "first_s": t.first_s, "last_s": t.last_s, "count": t.count})).collect::<Vec<_>>(),
        "files": m.files.iter().map(|f| json!({"path": f.path, "rows": f.rows, "bytes": f.bytes})).collect::<Vec<_>>(),
    });
    (
        Section {
            id: "summary",
            title: "Run summary".into(),
            html,
        },
        data,
    )
}

fn loss_table(run: &RunTables, inputs: &SummaryInputs) -> String {
    let losses = &run.manifest.losses;
    if losses.is_empty() {
        return "<p class=\"ok\">No losses: everything received was written.</p>".into();
    }
    let mut html = format!(
        "<h3>Losses</h3><p class=\"bad\">{} lost in total (all units added)</p><table class=\"data\"><tr><th>reason</th><th>count</th><th>unit</th><th>counted when</th><th>when it happened</th></tr>",
        losses.total_lost()
    );
    for (reason, n) in &losses.0 {
        let when = when_it_happened(run, inputs, reason.name());
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{n}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(reason.name()),
            escape(reason.unit()),
            escape(reason.meaning()),
            escape(&when)
        );
    }
    html.push_str("</table>");
    html
}

/// When the losses under `reason` happened: what the tables say (detector or frame times)
/// and, for a live run, the run times at which the counters grew (the manifest's
/// `loss_times`).
fn when_it_happened(run: &RunTables, inputs: &SummaryInputs, reason: &str) -> String {
    let mut parts: Vec<String> = inputs.loss_times.get(reason).cloned().into_iter().collect();
    for t in run
        .manifest
        .loss_times
        .iter()
        .filter(|t| t.reason == reason)
    {
        let span = if t.last_s - t.first_s < 0.05 {
            format!("at {:.1} s", t.first_s)
        } else {
            format!("from {:.1} s to {:.1} s", t.first_s, t.last_s)
        };
        parts.push(format!("{}: {} {span} after the start", t.place, t.count));
    }
    if parts.is_empty() {
        return "not recorded (the manifest keeps totals only)".into();
    }
    parts.join("; ")
}

fn file_table(run: &RunTables) -> String {
    let mut html = String::from(
        "<h3>Files</h3><table class=\"data\"><tr><th>file</th><th>rows</th><th>bytes</th><th>sha256</th></tr>",
    );
    for f in &run.manifest.files {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&f.path),
            f.rows,
            f.bytes,
            escape(f.sha256.get(..16).unwrap_or(&f.sha256))
        );
    }
    html.push_str("</table>");
    html
}
