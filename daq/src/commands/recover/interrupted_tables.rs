//! Salvaging the tables a killed run was writing: each `NAME.parquet.inprogress` (or the
//! `NAME.parquet.footerless` an interrupted recovery left) is renamed `.footerless`, its
//! complete row groups are rewritten into `NAME.parquet`, and what could not be saved is
//! counted.

use super::disk_full::disk_full_advice;
use super::{Recovery, RecoveryNote};
use anyhow::{Context, Result, bail};
use scandaq_sinks::salvage::{Salvage, salvage};
use std::path::Path;

impl Recovery<'_> {
    /// Interrupted tables: NAME.parquet.inprogress (or .footerless left by an interrupted
    /// recovery).
    pub(super) fn salvage_interrupted_tables(&mut self) -> Result<()> {
        let names = std::mem::take(&mut self.names);
        let result = names.iter().try_for_each(|name| self.salvage_table(name));
        self.names = names;
        result
    }

    /// Salvages one leftover `name`, if it is an interrupted table.
    fn salvage_table(&mut self, name: &str) -> Result<()> {
        let Some(final_name) = name
            .strip_suffix(".inprogress")
            .or_else(|| name.strip_suffix(".footerless"))
            .filter(|f| f.ends_with(".parquet"))
        else {
            return Ok(());
        };
        let dir = self.dir;
        let original = dir.join(name);
        if dir.join(final_name).exists() {
            if name.ends_with(".footerless") {
                // A recovery died after committing the salvaged file: finish its clean-up.
                let _ = std::fs::remove_file(&original);
            } else {
                self.notes.push(RecoveryNote {
                    file: name.to_string(),
                    action: "not salvaged".into(),
                    rows: 0,
                    bytes: 0,
                    bytes_lost: std::fs::metadata(&original).map_or(0, |m| m.len()),
                    note: format!(
                        "{final_name} is already committed; this leftover was left in place"
                    ),
                });
            }
            return Ok(());
        }
        let size = std::fs::metadata(&original).map_or(0, |m| m.len());
        let footerless = dir.join(format!("{final_name}.footerless"));
        if original != footerless {
            std::fs::rename(&original, &footerless)
                .with_context(|| format!("cannot rename {}", original.display()))?;
        }
        match salvage(dir, &footerless, final_name, self.run).map_err(anyhow::Error::from) {
            Ok(s) => self.note_salvaged(final_name, &footerless, size, s),
            Err(e) => {
                if let Some(advice) =
                    disk_full_advice(&e, dir, &format!("rewrite {final_name}"), size)
                {
                    // The partial rewrite goes; the interrupted file stays for the next try.
                    let _ = std::fs::remove_file(dir.join(format!("{final_name}.inprogress")));
                    bail!("{advice} ({final_name}.footerless is kept)");
                }
                self.notes.push(RecoveryNote::not_salvaged(
                    format!("{final_name}.footerless"),
                    size,
                    format!(
                        "no footer (the writer was killed before closing the file): {e:#}; {size} bytes lost (file kept as {final_name}.footerless)"
                    ),
                ));
                Ok(())
            }
        }
    }

    /// Notes what a salvage gave; a committed rewrite replaces the footerless file.
    fn note_salvaged(
        &mut self,
        final_name: &str,
        footerless: &Path,
        size: u64,
        s: Salvage,
    ) -> Result<()> {
        let Some(rec) = s.record else {
            let why = s.why_stopped.unwrap_or_else(|| {
                "the writer was killed before it finished its first row group".into()
            });
            self.notes.push(RecoveryNote::not_salvaged(
                format!("{final_name}.footerless"),
                size,
                format!(
                    "no footer (the writer was killed before closing the file) and no complete row group: {why}; {size} bytes lost (file kept as {final_name}.footerless)"
                ),
            ));
            return Ok(());
        };
        let stop = s
            .why_stopped
            .map(|w| format!(" (stopped: {w})"))
            .unwrap_or_default();
        self.notes.push(RecoveryNote {
            file: final_name.to_string(),
            action: "salvaged".into(),
            rows: rec.rows,
            bytes: rec.bytes,
            bytes_lost: s.bytes_lost,
            note: format!(
                "the writer was killed before closing the file (no footer): {} complete row group(s), {} rows rewritten from its pages; the last {} bytes (the row group being written) lost{stop}",
                s.row_groups, rec.rows, s.bytes_lost
            ),
        });
        self.files.push(rec);
        std::fs::remove_file(footerless)
            .with_context(|| format!("cannot remove {}", footerless.display()))
    }
}
