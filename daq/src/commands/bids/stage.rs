//! Where a recording's files are written before they join the dataset: a hidden staging
//! directory beside their destination (`meg/.scandaq-PREFIX.inprogress/`, ignored by BIDS
//! tools), each file written whole (temporary name, fsync, rename), then all renamed into
//! `meg/` with the data file last, so a killed export leaves either a staging directory (removed
//! by the next export of the same recording) or a recording whose FIF appears only after its
//! sidecars; `scans.tsv` lists it only after that.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The staging directory of one recording.
pub(super) struct Stage {
    dir: PathBuf,
    target: PathBuf,
    /// Sidecar names, in the order written.
    sidecars: Vec<String>,
    /// Data file names (FIF parts), in part order.
    data: Vec<String>,
}

impl Stage {
    /// Creates `target` (and its parents) and an empty staging directory in it for the files
    /// named `prefix_*`; a staging directory left by a killed export is removed first.
    pub(super) fn open(target: &Path, prefix: &str) -> Result<Self> {
        std::fs::create_dir_all(target)
            .with_context(|| format!("creating {}", target.display()))?;
        let dir = target.join(format!(".scandaq-{prefix}.inprogress"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| {
                format!("removing {}, left by an interrupted export", dir.display())
            })?;
        }
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir,
            target: target.to_path_buf(),
            sidecars: Vec::new(),
            data: Vec::new(),
        })
    }

    /// Where file `name` is written while staged.
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes sidecar `name` whole into the stage.
    pub(super) fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        scandaq_sinks::durable_file::write_atomic(&self.path(name), bytes)?;
        self.sidecars.push(name.to_string());
        Ok(())
    }

    /// Records data files written into the stage by another writer (the FIF export).
    pub(super) fn add_data(&mut self, files: &[PathBuf]) {
        self.data.extend(
            files
                .iter()
                .filter_map(|f| f.file_name())
                .map(|n| n.to_string_lossy().into_owned()),
        );
    }

    /// The names of the staged files.
    pub(super) fn names(&self) -> impl Iterator<Item = &String> {
        self.sidecars.iter().chain(&self.data)
    }

    /// Removes the stage and what it holds (the export failed; best effort: a stage left
    /// behind is removed by the next export of the recording).
    pub(super) fn abandon(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Moves every staged file into the target directory (sidecars first, then the data files
    /// from the last part to the first), syncs it and removes the stage; returns the files'
    /// final paths.
    pub(super) fn commit(self) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let order = self.sidecars.iter().chain(self.data.iter().rev());
        for name in order {
            let to = self.target.join(name);
            std::fs::rename(self.dir.join(name), &to)
                .with_context(|| format!("moving {name} into {}", self.target.display()))?;
            out.push(to);
        }
        scandaq_sinks::durable_file::sync_dir(&self.target);
        std::fs::remove_dir(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))?;
        Ok(out)
    }
}
