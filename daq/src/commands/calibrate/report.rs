//! The calibration report: a title, summary lines, named metrics and the outliers (channel,
//! TAC where relevant, and why), printed on stdout and written beside the tables as
//! `report-KIND.txt` and `report-KIND.json`.

use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// A channel (or channel TAC/branch) the calibration could not treat normally.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Outlier {
    /// PETsys absolute channel id.
    pub channel: u32,
    /// TAC, when the problem is per TAC.
    pub tac: Option<u8>,
    /// Branch (`T` or `E`), when the problem is per TDC branch.
    pub branch: Option<char>,
    /// What is wrong and what was done about it.
    pub reason: String,
}

/// One command's report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// `tdc`, `energy` or `skew`.
    pub kind: String,
    /// Human-readable summary lines (method, inputs, results).
    pub summary: Vec<String>,
    /// Named numeric results (units in the name).
    pub metrics: BTreeMap<String, f64>,
    /// Outliers, named.
    pub outliers: Vec<Outlier>,
    /// Files written.
    pub files: Vec<String>,
}

impl Report {
    /// An empty report of `kind`.
    pub fn new(kind: &str) -> Self {
        Self {
            kind: kind.to_string(),
            ..Default::default()
        }
    }

    /// Adds a summary line.
    pub fn line(&mut self, s: impl Into<String>) {
        self.summary.push(s.into());
    }

    /// Sets a metric.
    pub fn metric(&mut self, name: &str, value: f64) {
        self.metrics.insert(name.to_string(), value);
    }

    /// Names an outlier.
    pub fn outlier(&mut self, channel: u32, tac: Option<u8>, branch: Option<char>, reason: String) {
        self.outliers.push(Outlier {
            channel,
            tac,
            branch,
            reason,
        });
    }

    /// The report as text (what is printed on stdout).
    pub fn to_text(&self) -> String {
        let mut s = format!("scandaq calibrate {}\n", self.kind);
        for l in &self.summary {
            let _ = writeln!(s, "  {l}");
        }
        if !self.metrics.is_empty() {
            let _ = writeln!(s, "  metrics:");
            for (k, v) in &self.metrics {
                let _ = writeln!(s, "    {k:<40} {v:.4}");
            }
        }
        if self.outliers.is_empty() {
            let _ = writeln!(s, "  outliers: none");
        } else {
            let _ = writeln!(s, "  outliers ({}):", self.outliers.len());
            const SHOWN: usize = 50;
            for o in self.outliers.iter().take(SHOWN) {
                let mut what = format!("channel {}", super::channel_name(o.channel));
                if let Some(t) = o.tac {
                    let _ = write!(what, " tac {t}");
                }
                if let Some(b) = o.branch {
                    let _ = write!(what, " branch {b}");
                }
                let _ = writeln!(s, "    {what}: {}", o.reason);
            }
            if self.outliers.len() > SHOWN {
                let _ = writeln!(
                    s,
                    "    ... and {} more (all in report-{}.json)",
                    self.outliers.len() - SHOWN,
                    self.kind
                );
            }
        }
        for f in &self.files {
            let _ = writeln!(s, "  wrote {f}");
        }
        s
    }

    /// Writes `report-KIND.txt` and `report-KIND.json` into `dir`, records them, and prints
    /// the text on stdout.
    pub fn finish(mut self, dir: &Path) -> Result<Self> {
        let txt = format!("report-{}.txt", self.kind);
        let json = format!("report-{}.json", self.kind);
        self.files.push(dir.join(&txt).display().to_string());
        self.files.push(dir.join(&json).display().to_string());
        let text = self.to_text();
        super::write_table(dir, &txt, &text)?;
        super::write_table(dir, &json, &serde_json::to_string_pretty(&self)?)?;
        print!("{text}");
        Ok(self)
    }
}
