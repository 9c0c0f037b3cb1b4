//! The BIDS entities of one recording (`sub`, `ses`, `task`, `run`), checked as the
//! specification's labels and indices, and the file names they give: the recording's
//! `sub-S_ses-X_task-T[_run-N]_<suffix>` files in `sub-S/ses-X/meg/`, its session's
//! `sub-S_ses-X_scans.tsv` and `sub-S_ses-X_coordsystem.json`.

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// The suffixes (with extension) of one recording's own files, besides the split data files.
pub(super) const RECORDING_FILES: [&str; 5] = [
    "meg.fif",
    "meg.json",
    "channels.tsv",
    "events.tsv",
    "events.json",
];

/// The entities of one recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entities {
    /// `sub-<label>`.
    pub subject: String,
    /// `ses-<label>`.
    pub session: String,
    /// `task-<label>`.
    pub task: String,
    /// `run-<index>` (digits as given, so `01` stays `01`).
    pub run: Option<String>,
}

/// Checks a BIDS label: letters and digits only.
fn check_label(flag: &str, value: &str) -> Result<()> {
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!(
            "{flag} {value:?}: a BIDS label holds only letters and digits (a-z, A-Z, 0-9; no \
             '-', '_', spaces or accents), e.g. 01 or control3"
        );
    }
    Ok(())
}

impl Entities {
    /// The entities, each checked (`--subject`, `--session`, `--task` labels, `--run` index).
    pub fn new(subject: &str, session: &str, task: &str, run: Option<&str>) -> Result<Self> {
        check_label("--subject", subject)?;
        check_label("--session", session)?;
        check_label("--task", task)?;
        if let Some(run) = run
            && (run.is_empty() || !run.chars().all(|c| c.is_ascii_digit()))
        {
            bail!("--run {run:?}: a BIDS run is an index, a non-negative integer such as 1 or 01");
        }
        Ok(Self {
            subject: subject.into(),
            session: session.into(),
            task: task.into(),
            run: run.map(str::to_string),
        })
    }

    /// `sub-S_ses-X`: the session's file prefix.
    pub(super) fn session_prefix(&self) -> String {
        format!("sub-{}_ses-{}", self.subject, self.session)
    }

    /// `sub-S_ses-X_task-T[_run-N]`: the recording's file prefix.
    pub(super) fn prefix(&self) -> String {
        let mut p = format!("{}_task-{}", self.session_prefix(), self.task);
        if let Some(run) = &self.run {
            p.push_str("_run-");
            p.push_str(run);
        }
        p
    }

    /// `ROOT/sub-S/ses-X`.
    pub(super) fn session_dir(&self, root: &Path) -> PathBuf {
        root.join(format!("sub-{}", self.subject))
            .join(format!("ses-{}", self.session))
    }

    /// `ROOT/sub-S/ses-X/meg`.
    pub(super) fn meg_dir(&self, root: &Path) -> PathBuf {
        self.session_dir(root).join("meg")
    }

    /// True when `name` is one of this recording's files: `PREFIX_<suffix>` for a suffix
    /// of [`RECORDING_FILES`] or a split data file `PREFIX_split-NN_meg.fif` (and not a
    /// recording with more entities, e.g. a run of a recording given without one).
    pub(super) fn owns(&self, name: &str) -> bool {
        let Some(rest) = name
            .strip_prefix(&self.prefix())
            .and_then(|r| r.strip_prefix('_'))
        else {
            return false;
        };
        if RECORDING_FILES.contains(&rest) {
            return true;
        }
        rest.strip_prefix("split-")
            .and_then(|r| r.strip_suffix("_meg.fif"))
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    }

    /// This recording's files already in the meg directory (sorted).
    pub(super) fn existing_files(&self, root: &Path) -> Result<Vec<PathBuf>> {
        self.files_where(root, |name| self.owns(name))
    }

    /// The files in the meg directory whose names `keep` selects (sorted).
    fn files_where(&self, root: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
        let dir = self.meg_dir(root);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|e| anyhow::anyhow!("listing {}: {e}", dir.display()))?;
            if keep(&e.file_name().to_string_lossy()) {
                out.push(e.path());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Refuses a recording that BIDS's inheritance principle would mix with another one of
    /// the same task: the sidecars of a recording without a run apply to every run of the
    /// task, so the task's recordings either all have a run or none has.
    pub(super) fn check_runs_consistent(&self, root: &Path) -> Result<()> {
        let bare = Self {
            run: None,
            ..self.clone()
        };
        let others = match self.run {
            Some(_) => bare.existing_files(root)?,
            None => {
                let runs = format!("{}_run-", self.prefix());
                self.files_where(root, |n| n.starts_with(&runs))?
            }
        };
        if let Some(other) = others.first() {
            bail!(
                "{} holds {}: a task's recordings must all have a --run or none (BIDS applies \
                 the sidecars of a recording without a run to every run of its task); {}",
                self.meg_dir(root).display(),
                other.file_name().unwrap_or_default().to_string_lossy(),
                if self.run.is_some() {
                    "export without --run to replace it (--overwrite), or use another --task"
                } else {
                    "give --run"
                }
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_alphanumeric_and_runs_are_indices() {
        assert!(Entities::new("01", "a1", "rest", Some("01")).is_ok());
        for (s, x, t, r) in [
            ("0_1", "a", "t", None),
            ("01", "a-b", "t", None),
            ("01", "a", "", None),
            ("01", "a", "t é", None),
            ("01", "a", "t", Some("1a")),
            ("01", "a", "t", Some("")),
        ] {
            let e = Entities::new(s, x, t, r).unwrap_err().to_string();
            assert!(e.contains("BIDS"), "{e}");
        }
    }

    #[test]
    fn a_recording_owns_its_files_and_its_splits_only() {
        let e = Entities::new("01", "1", "aef", None).unwrap();
        assert_eq!(e.prefix(), "sub-01_ses-1_task-aef");
        for yes in [
            "sub-01_ses-1_task-aef_meg.fif",
            "sub-01_ses-1_task-aef_split-02_meg.fif",
            "sub-01_ses-1_task-aef_channels.tsv",
        ] {
            assert!(e.owns(yes), "{yes}");
        }
        for no in [
            "sub-01_ses-1_task-aef_run-1_meg.fif",
            "sub-01_ses-1_task-aefx_meg.fif",
            "sub-01_ses-1_coordsystem.json",
            "sub-01_ses-1_task-aef_split-_meg.fif",
        ] {
            assert!(!e.owns(no), "{no}");
        }
        let r = Entities::new("01", "1", "aef", Some("2")).unwrap();
        assert!(r.owns("sub-01_ses-1_task-aef_run-2_events.tsv"));
        assert!(!r.owns("sub-01_ses-1_task-aef_events.tsv"));
    }
}
