//! Reading the manifest of the run to recover, and rewriting it atomically once the files are
//! recovered (`state: "recovered"`, the new `files`, a `recovery` section); fields the
//! recovery does not know are kept as they were.

use super::disk_full::disk_full_advice;
use super::{Recovery, RecoverySection, file_rank};
use anyhow::{Context, Result, anyhow, bail};
use scandaq_sinks::Manifest;
use std::path::Path;

/// Reads `dir/manifest.json`: as JSON (to keep the fields it does not know) and typed.
pub(super) fn read_manifest(dir: &Path) -> Result<(serde_json::Value, Manifest)> {
    let manifest_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "{}: no readable manifest.json, so this is not a scandaq run directory (give OUTDIR/run-NNNNNN)",
            dir.display()
        )
    })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", manifest_path.display()))?;
    let manifest: Manifest = serde_json::from_value(value.clone())
        .with_context(|| format!("{}: not a scandaq manifest", manifest_path.display()))?;
    Ok((value, manifest))
}

impl Recovery<'_> {
    /// Rewrites the manifest: `complete: false`, `state: "recovered"`, the committed files in
    /// table order, the recovery notes, and `stop_reason: process ended` when it had none.
    pub(super) fn rewrite_manifest(
        &mut self,
        mut value: serde_json::Value,
        manifest: &Manifest,
    ) -> Result<()> {
        self.files.sort_by_key(|f| file_rank(&f.path));
        let section = RecoverySection {
            software_version: env!("CARGO_PKG_VERSION").to_string(),
            previous_state: manifest.state.to_string(),
            files: self.notes.clone(),
        };
        let obj = value.as_object_mut().ok_or_else(|| {
            anyhow!(
                "{}: not a JSON object",
                self.dir.join("manifest.json").display()
            )
        })?;
        crate::process::run::mark_recovered(obj)?;
        obj.insert("files".into(), serde_json::to_value(&self.files)?);
        obj.insert("recovery".into(), serde_json::to_value(&section)?);
        write_final_manifest(self.dir, &value)
    }
}

/// Writes the recovered manifest. The space the run reserved for its last manifest is given
/// up for it if the disk is full (and given back once it is written: the run is closed).
fn write_final_manifest(dir: &Path, value: &serde_json::Value) -> Result<()> {
    let mut written = write_manifest_value(dir, value);
    if written.is_err() && scandaq_sinks::manifest::release_manifest_space(dir) {
        written = write_manifest_value(dir, value);
    }
    scandaq_sinks::manifest::release_manifest_space(dir);
    if let Err(e) = written {
        let needed = serde_json::to_string_pretty(value).map_or(1 << 16, |t| t.len() as u64);
        if let Some(advice) = disk_full_advice(&e, dir, "write manifest.json", needed) {
            let _ = std::fs::remove_file(dir.join("manifest.json.tmp"));
            bail!("{advice}");
        }
        return Err(e);
    }
    Ok(())
}

/// Writes `value` as pretty JSON to `dir/manifest.json`, atomically.
fn write_manifest_value(dir: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(scandaq_sinks::durable_file::write_atomic(
        &dir.join("manifest.json"),
        text.as_bytes(),
    )?)
}
