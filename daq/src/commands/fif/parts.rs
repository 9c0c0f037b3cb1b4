//! The files of a (possibly split) FIF export: `X.fif`, `X-1.fif`, ... (or BIDS's
//! `X_split-01_meg.fif`, `X_split-02_meg.fif`, ...) each a whole FIF file linked to its
//! neighbours, written as `.inprogress` and renamed once all are complete.

use super::END_RESERVE;
use super::fiff;
use super::tags::Fif;
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The name of part `k` of a split set: `X.fif`, `X-1.fif`, `X-2.fif`, ... (MNE's
/// "neuromag" split naming).
pub fn part_path(out: &Path, k: u32) -> PathBuf {
    if k == 0 {
        return out.to_path_buf();
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let part = match name.strip_suffix(".fif") {
        Some(stem) => format!("{stem}-{k}.fif"),
        None => format!("{name}-{k}"),
    };
    out.with_file_name(part)
}

/// How the parts of a split export are named.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SplitNaming {
    /// `X.fif`, `X-1.fif`, `X-2.fif`, ... (MNE's "neuromag" naming).
    #[default]
    Neuromag,
    /// BIDS (MNE's "bids" naming): `X_meg.fif` while the export fits one file; when it
    /// splits, `X_split-01_meg.fif`, `X_split-02_meg.fif`, ... (the split entity goes
    /// before the last `_suffix`).
    Bids,
}

/// The final name of part `k` of `out` under `naming`, `split` when the export has more
/// than one part.
pub fn split_part_path(out: &Path, k: u32, naming: SplitNaming, split: bool) -> PathBuf {
    match naming {
        SplitNaming::Neuromag => part_path(out, k),
        SplitNaming::Bids if !split => out.to_path_buf(),
        SplitNaming::Bids => {
            let name = out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let entity = format!("split-{:02}", k + 1);
            let part = match name.rfind('_') {
                Some(i) => format!("{}_{entity}{}", &name[..i], &name[i..]),
                None => format!("{entity}_{name}"),
            };
            out.with_file_name(part)
        }
    }
}

/// The files of a (possibly split) FIF export: each part is a whole FIF file (file id,
/// measurement info, a raw-data block starting at its first sample), linked to its
/// neighbours by `FIFFB_REF` blocks (role, file name, measurement id, part number) as
/// MNE-Python writes and follows them. Parts are written as `NAME.inprogress` and renamed
/// when all are complete.
pub(super) struct PartWriter {
    out: PathBuf,
    /// File id, directory pointer, free list, measurement block start, its id and the
    /// measurement info: the same at the start of every part.
    head: Vec<u8>,
    id: (i32, i32),
    split_bytes: u64,
    naming: SplitNaming,
    fif: Option<Fif<std::io::BufWriter<std::fs::File>>>,
    part: u32,
    /// Temporary names of the parts written.
    parts: Vec<PathBuf>,
}

impl PartWriter {
    /// The writer of the parts of `out`, each starting with `head`, at most `split_bytes` each,
    /// named as `naming` says.
    pub(super) fn new(
        out: &Path,
        head: Vec<u8>,
        id: (i32, i32),
        split_bytes: u64,
        naming: SplitNaming,
    ) -> Self {
        Self {
            out: out.to_path_buf(),
            head,
            id,
            split_bytes,
            naming,
            fif: None,
            part: 0,
            parts: Vec::new(),
        }
    }

    /// The name part `k` is written under until the export is complete.
    fn tmp_path(&self, k: u32) -> PathBuf {
        let p = part_path(&self.out, k);
        let mut name = p.file_name().unwrap_or_default().to_os_string();
        name.push(".inprogress");
        p.with_file_name(name)
    }

    /// Starts part `self.part` whose first sample is `first_sample` (0 = the export's first).
    fn open(&mut self, first_sample: i64) -> Result<()> {
        let tmp = self.tmp_path(self.part);
        let f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut fif = Fif {
            w: std::io::BufWriter::new(f),
            pos: 0,
        };
        fif.w
            .write_all(&self.head)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fif.pos = self.head.len() as u64;
        fif.int(fiff::BLOCK_START, &[fiff::B_RAW_DATA])?;
        let first = i32::try_from(first_sample)
            .context("the export is longer than 2^31 samples (FIF sample numbers are 32-bit)")?;
        fif.int(fiff::FIRST_SAMPLE, &[first])?;
        if self.part > 0 {
            let prev = split_part_path(&self.out, self.part - 1, self.naming, true);
            self.reference(&mut fif, fiff::ROLE_PREV_FILE, &prev, self.part - 1)?;
        }
        self.parts.push(tmp);
        self.fif = Some(fif);
        Ok(())
    }

    /// A `FIFFB_REF` block pointing at part `num`, `file`, in the role `role`.
    fn reference(
        &self,
        fif: &mut Fif<std::io::BufWriter<std::fs::File>>,
        role: i32,
        file: &Path,
        num: u32,
    ) -> Result<()> {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        fif.int(fiff::BLOCK_START, &[fiff::B_REF])?;
        fif.int(fiff::REF_ROLE, &[role])?;
        fif.tag(
            fiff::REF_FILE_NAME,
            fiff::T_STRING,
            name.as_bytes(),
            fiff::NEXT_SEQ,
        )?;
        fif.id(fiff::REF_FILE_ID, self.id.0, self.id.1)?;
        fif.int(fiff::REF_FILE_NUM, &[num as i32])?;
        fif.int(fiff::BLOCK_END, &[fiff::B_REF])?;
        Ok(())
    }

    /// Ends the open part (with a reference to the next one when `more`).
    fn close_part(&mut self, more: bool) -> Result<()> {
        let Some(mut fif) = self.fif.take() else {
            return Ok(());
        };
        if more {
            let next = split_part_path(&self.out, self.part + 1, self.naming, true);
            self.reference(&mut fif, fiff::ROLE_NEXT_FILE, &next, self.part + 1)?;
        }
        fif.int(fiff::BLOCK_END, &[fiff::B_RAW_DATA])?;
        fif.int(fiff::BLOCK_END, &[fiff::B_MEAS])?;
        fif.tag(fiff::NOP, fiff::T_VOID, &[], fiff::NEXT_NONE)?;
        let tmp = self.tmp_path(self.part);
        let file = fif
            .w
            .into_inner()
            .map_err(|e| anyhow::anyhow!("writing {}: {}", tmp.display(), e.error()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        Ok(())
    }

    /// Writes one data buffer starting at `first_sample`, in a new part when it would not
    /// fit the current one.
    pub(super) fn buffer(&mut self, first_sample: i64, typ: i32, bytes: &[u8]) -> Result<()> {
        let need = 16 + bytes.len() as u64 + END_RESERVE;
        match &self.fif {
            None => self.open(first_sample)?,
            Some(f) if f.pos + need > self.split_bytes => {
                self.close_part(true)?;
                self.part += 1;
                self.open(first_sample)?;
            }
            Some(_) => {}
        }
        let fif = self.fif.as_mut().context("no open FIF part")?;
        if fif.pos + need > self.split_bytes {
            bail!(
                "a split size of {} bytes cannot hold the measurement info and one data buffer \
                 plus the end tags: give at least {} bytes",
                self.split_bytes,
                fif.pos + need
            );
        }
        fif.tag(fiff::DATA_BUFFER, typ, bytes, fiff::NEXT_SEQ)
    }

    /// Closes the last part and renames every part to its final name; returns them.
    pub(super) fn finish(mut self) -> Result<Vec<PathBuf>> {
        self.close_part(false)?;
        let split = self.parts.len() > 1;
        let mut out = Vec::new();
        for (k, tmp) in self.parts.iter().enumerate() {
            let path = split_part_path(&self.out, k as u32, self.naming, split);
            std::fs::rename(tmp, &path)
                .with_context(|| format!("renaming to {}", path.display()))?;
            out.push(path);
        }
        // Best effort: the renames survive a crash.
        if let Some(dir) = self.out.parent() {
            scandaq_sinks::durable_file::sync_dir(dir);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_parts_are_named_as_mne_and_bids_name_them() {
        let out = Path::new("/d/sub-01_task-a_meg.fif");
        let name = |k, naming, split| {
            split_part_path(out, k, naming, split)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        assert_eq!(
            name(0, SplitNaming::Neuromag, true),
            "sub-01_task-a_meg.fif"
        );
        assert_eq!(
            name(2, SplitNaming::Neuromag, true),
            "sub-01_task-a_meg-2.fif"
        );
        assert_eq!(name(0, SplitNaming::Bids, false), "sub-01_task-a_meg.fif");
        assert_eq!(
            name(0, SplitNaming::Bids, true),
            "sub-01_task-a_split-01_meg.fif"
        );
        assert_eq!(
            name(11, SplitNaming::Bids, true),
            "sub-01_task-a_split-12_meg.fif"
        );
    }
}
