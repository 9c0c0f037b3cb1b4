//! Loading calibration from disk: a scandaq calibration directory (`--calib DIR`) or a PETsys
//! setup's `config.ini` (`--petsys-config FILE`), with errors that name the file and line; and
//! the three calibration flags of the commands that process hits ([`CalibrationArgs`]).

use anyhow::{Context, Result, bail};
use scandaq_core::calib::checksum_of;
use scandaq_core::{Calibration, EnergyTable, Geometry, SkewTable, TdcTable};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File names inside a scandaq calibration directory.
pub mod names {
    /// TDC table (PETsys layout), required.
    pub const TDC: &str = "tdc_calibration.tsv";
    /// ToT -> keV table, optional.
    pub const ENERGY: &str = "energy_calibration.tsv";
    /// Per-channel skew, optional.
    pub const SKEW: &str = "skew.tsv";
    /// Channel map (PETsys layout), optional.
    pub const MAP: &str = "map_channel.tsv";
}

/// A loaded calibration plus the texts it came from (copied into each run directory).
#[derive(Debug, Clone)]
pub struct LoadedCalibration {
    /// Parsed tables.
    pub calibration: Calibration,
    /// `(file name, text)` of every table read.
    pub texts: Vec<(String, String)>,
    /// Warnings for the user (missing optional tables).
    pub warnings: Vec<String>,
}

impl LoadedCalibration {
    /// No PET calibration at all (runs of OPM-MEG / ultrasound streams only): a PETsys
    /// board's hits are counted as `no_tdc_calibration`, never guessed.
    pub fn none() -> Self {
        let calibration = Calibration {
            checksum: checksum_of(&[]),
            sources: vec!["none".into()],
            ..Default::default()
        };
        Self {
            calibration,
            texts: Vec::new(),
            warnings: vec![
                "no PET calibration (--no-calib): hits of a PETsys board would be counted as no_tdc_calibration".into(),
            ],
        }
    }
}

/// The calibration flags of `scandaq run` and `scandaq replay` (flattened into both; `replay`
/// words their help for files).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CalibrationArgs {
    /// scandaq calibration directory.
    #[arg(long, conflicts_with = "petsys_config")]
    pub calib: Option<PathBuf>,
    /// PETsys config.ini naming the calibration tables.
    #[arg(long)]
    pub petsys_config: Option<PathBuf>,
    /// The run has no PETsys boards (only OPM-MEG / ultrasound streams): no PET calibration.
    #[arg(long, conflicts_with_all = ["calib", "petsys_config"])]
    pub no_calib: bool,
}

impl CalibrationArgs {
    /// True when any of the flags was given.
    pub fn given(&self) -> bool {
        self.calib.is_some() || self.petsys_config.is_some() || self.no_calib
    }

    /// The calibration the flags name: the tables of `--calib DIR` or of
    /// `--petsys-config FILE`, no PET calibration with `--no-calib`; `None` when no flag says.
    pub fn load(&self) -> Result<Option<LoadedCalibration>> {
        match (&self.calib, &self.petsys_config) {
            (Some(dir), _) => load_calibration_dir(dir).map(Some),
            (None, Some(ini)) => load_petsys_config(ini).map(Some),
            (None, None) if self.no_calib => Ok(Some(LoadedCalibration::none())),
            (None, None) => Ok(None),
        }
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read calibration table {}", path.display()))
}

fn assemble(
    tdc: (PathBuf, String),
    energy: Option<(PathBuf, String)>,
    skew: Option<(PathBuf, String)>,
    map: Option<(PathBuf, String)>,
    mut warnings: Vec<String>,
) -> Result<LoadedCalibration> {
    let name = |p: &Path| p.display().to_string();
    let tdc_table = TdcTable::parse(&name(&tdc.0), &tdc.1)?;
    if tdc_table.entries.is_empty() {
        bail!(
            "{}: the TDC calibration table has no entries",
            tdc.0.display()
        );
    }
    let energy_table = energy
        .as_ref()
        .map(|(p, t)| EnergyTable::parse(&name(p), t))
        .transpose()?;
    let skew_table = skew
        .as_ref()
        .map(|(p, t)| SkewTable::parse(&name(p), t))
        .transpose()?;
    let geometry = map
        .as_ref()
        .map(|(p, t)| Geometry::parse_map_channel(&name(p), t))
        .transpose()?;
    if energy_table.is_none() {
        warnings.push(
            "no energy calibration: the energy_kev column holds ToT in ns (flag bit 0 set)".into(),
        );
    }
    let mut texts = vec![];
    for (p, t) in [Some(tdc), energy, skew, map].into_iter().flatten() {
        let file = p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        texts.push((file, t));
    }
    let parts: Vec<(&str, &str)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let calibration = Calibration {
        checksum: checksum_of(&parts),
        sources: texts.iter().map(|(n, _)| n.clone()).collect(),
        tdc: tdc_table,
        energy: energy_table,
        skew: skew_table,
        geometry,
    };
    Ok(LoadedCalibration {
        calibration,
        texts,
        warnings,
    })
}

/// Loads `DIR/tdc_calibration.tsv` (required) and the optional energy, skew and map tables.
pub fn load_calibration_dir(dir: &Path) -> Result<LoadedCalibration> {
    if !dir.is_dir() {
        bail!(
            "calibration directory {} does not exist (give the folder holding {})",
            dir.display(),
            names::TDC
        );
    }
    let tdc_path = dir.join(names::TDC);
    if !tdc_path.is_file() {
        bail!(
            "{} is missing: a calibration directory needs at least the TDC table ({})",
            tdc_path.display(),
            names::TDC
        );
    }
    let optional = |n: &str| -> Result<Option<(PathBuf, String)>> {
        let p = dir.join(n);
        if p.is_file() {
            Ok(Some((p.clone(), read_text(&p)?)))
        } else {
            Ok(None)
        }
    };
    let tdc = (tdc_path.clone(), read_text(&tdc_path)?);
    let skew = optional(names::SKEW)?;
    let mut warnings = vec![];
    if skew.is_none() {
        warnings.push(format!(
            "no {} in {}: times are not skew-corrected",
            names::SKEW,
            dir.display()
        ));
    }
    assemble(
        tdc,
        optional(names::ENERGY)?,
        skew,
        optional(names::MAP)?,
        warnings,
    )
}

/// A parsed PETsys `config.ini`: section -> key -> value (section and key names lower-cased).
pub fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_lowercase();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.split(['#', ';']).next().unwrap_or("").trim();
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_lowercase(), v.to_string());
        }
    }
    out
}

/// Loads the tables a PETsys `config.ini` names (`[main]` tdc_calibration_table, channel_map,
/// time_offset_calibration_table; `%CDIR%` = the config's folder). Energy stays ToT in ns
/// unless `energy_calibration_table` (here a scandaq ToT -> keV table, not PETsys's QDC one)
/// is present; `timing_offsets_table` (scandaq's earlier name) also gives skews. The
/// `[sw_trigger]` section and trigger map are read by
/// [`PetsysTrigger`](crate::process::petsys_trigger::PetsysTrigger).
pub fn load_petsys_config(config: &Path) -> Result<LoadedCalibration> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read PETsys configuration {}", config.display()))?;
    let ini = parse_ini(&text);
    let cdir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let main = ini.get("main").with_context(|| {
        format!(
            "{}: no [main] section (a PETsys config.ini names its tables there)",
            config.display()
        )
    })?;
    let resolve = |key: &str| -> Option<PathBuf> {
        let v = main.get(key)?;
        let v = v.trim_matches('"');
        let replaced = v.replace("%CDIR%", &cdir.to_string_lossy());
        Some(PathBuf::from(replaced))
    };
    let tdc_path = resolve("tdc_calibration_table").with_context(|| {
        format!("{}: [main] has no tdc_calibration_table; add `tdc_calibration_table = %CDIR%/tdc_calibration.tsv`", config.display())
    })?;
    let tdc = (tdc_path.clone(), read_text(&tdc_path)?);
    let load_opt = |key: &str| -> Result<Option<(PathBuf, String)>> {
        match resolve(key) {
            Some(p) => Ok(Some((p.clone(), read_text(&p)?))),
            None => Ok(None),
        }
    };
    let mut warnings = vec![];
    let skew = match load_opt("time_offset_calibration_table")? {
        Some(t) => Some(t),
        None => load_opt("timing_offsets_table")?,
    };
    if skew.is_none() {
        warnings.push(
            "PETsys config names no time_offset_calibration_table: times are not skew-corrected"
                .into(),
        );
    }
    assemble(
        tdc,
        load_opt("energy_calibration_table")?,
        skew,
        load_opt("channel_map")?,
        warnings,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_sections_keys_and_comments() {
        let ini = parse_ini(
            "# c\n[main]\nTDC_calibration_table = %CDIR%/tdc.tsv # comment\n[sw_trigger]\nx=1\n",
        );
        assert_eq!(ini["main"]["tdc_calibration_table"], "%CDIR%/tdc.tsv");
        assert_eq!(ini["sw_trigger"]["x"], "1");
    }
}
