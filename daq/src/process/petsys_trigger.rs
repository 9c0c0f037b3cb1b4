//! PETsys's software trigger as its converters read it: the `[sw_trigger]` keys of a
//! `config.ini` and the `trigger_map` it names (`map_trigger.tsv`), turned into scandaq's
//! coincidence options so that `--petsys-config` gives the coincidences
//! `convert_raw_to_coincidence` gives (docs/coincidences.md, "PETsys configurations").

use crate::process::calib_load::parse_ini;
use crate::process::coinc_stage::CoincidenceOptions;
use crate::process::trigger_map::parse_trigger_map;
use anyhow::{Context, Result, bail};
use scandaq_core::coincidence::{GroupingConfig, ModulePairs, Policy};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `[sw_trigger]` keys PETsys's converters read, with their defaults (clock periods for
/// the windows, mm, the energy column's unit).
const KEYS: [(&str, f64); 7] = [
    ("group_max_hits", 64.0),
    ("group_min_hits", 1.0),
    ("group_min_energy", -1e6),
    ("group_max_energy", 1e6),
    ("group_max_distance", 100.0),
    ("group_time_window", 20.0),
    ("coincidence_time_window", 2.0),
];

/// Keys PETsys's example config.ini writes in `[sw_trigger]` that its converters do not read.
const NOT_READ_BY_PETSYS: [(&str, &str); 2] = [
    ("group_min_multiplicity", "group_min_hits"),
    ("group_max_multiplicity", "group_max_hits"),
];

/// A PETsys `[sw_trigger]` section and trigger map.
#[derive(Clone, Debug, PartialEq)]
pub struct PetsysTrigger {
    /// Every key of [`KEYS`], as given or defaulted.
    values: BTreeMap<&'static str, f64>,
    /// `C` region pairs (may coincide); `None` when the config names no readable trigger map.
    pub coincidence_regions: Option<ModulePairs>,
    /// `M` region pairs (may be grouped into one photon).
    pub multi_hit_regions: Option<ModulePairs>,
    /// Notes for the operator (keys PETsys does not read, a missing trigger map).
    pub warnings: Vec<String>,
}

impl PetsysTrigger {
    /// Reads `[sw_trigger]` and the trigger map of the PETsys `config.ini` at `config`.
    pub fn load(config: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(config)
            .with_context(|| format!("cannot read PETsys configuration {}", config.display()))?;
        let ini = parse_ini(&text);
        let empty = BTreeMap::new();
        let section = ini.get("sw_trigger").unwrap_or(&empty);
        let mut values = BTreeMap::new();
        let mut warnings = Vec::new();
        for (key, default) in KEYS {
            let v = match section.get(key) {
                Some(text) => parse_number(config, key, text)?,
                None => default,
            };
            values.insert(key, v);
        }
        for key in section.keys() {
            if KEYS.iter().any(|(k, _)| k == key) {
                continue;
            }
            let hint = NOT_READ_BY_PETSYS
                .iter()
                .find(|(k, _)| k == key)
                .map_or(String::new(), |(_, read)| {
                    format!(" (PETsys's converters read {read})")
                });
            warnings.push(format!(
                "{}: [sw_trigger] {key} is not a key PETsys's converters read; ignored{hint}",
                config.display()
            ));
        }
        let (coincidence_regions, multi_hit_regions) = match trigger_map_path(config, &ini) {
            Some(path) if path.is_file() => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read trigger map {}", path.display()))?;
                let (c, m) = parse_trigger_map(&path, &text)?;
                (Some(c), Some(m))
            }
            other => {
                warnings.push(format!(
                    "{}: {}: coincidences are sorted without region rules (any two modules may \
                     coincide, hits of any modules may share a photon)",
                    config.display(),
                    match other {
                        Some(p) => format!("trigger_map {} not found", p.display()),
                        None => "[main] names no trigger_map".into(),
                    }
                ));
                (None, None)
            }
        };
        let trigger = Self {
            values,
            coincidence_regions,
            multi_hit_regions,
            warnings,
        };
        trigger.check(config)?;
        Ok(trigger)
    }

    fn get(&self, key: &str) -> f64 {
        self.values.get(key).copied().unwrap_or(f64::NAN)
    }

    fn check(&self, config: &Path) -> Result<()> {
        for key in [
            "group_time_window",
            "coincidence_time_window",
            "group_max_distance",
        ] {
            let v = self.get(key);
            if !(v.is_finite() && v >= 0.0) {
                bail!(
                    "{}: [sw_trigger] {key} = {v}: expected a number >= 0",
                    config.display()
                );
            }
        }
        if self.get("coincidence_time_window") <= 0.0 {
            bail!(
                "{}: [sw_trigger] coincidence_time_window must be > 0 (clock periods)",
                config.display()
            );
        }
        for key in ["group_min_hits", "group_max_hits"] {
            let v = self.get(key);
            if !(v.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&v)) {
                bail!(
                    "{}: [sw_trigger] {key} = {v}: expected a whole number >= 0",
                    config.display()
                );
            }
        }
        Ok(())
    }

    /// `base` with PETsys's coincidence settings for a clock of `clock_hz`: windows in clock
    /// periods turned into ps (rounded), grouping on (window, distance, hit-count and energy
    /// cuts, `M` regions), `C` regions as the good-pair rule, no energy window (PETsys has
    /// none; its energy cut is the photon's), `takeAllGoods`, multi-window. The delay, the
    /// `enabled` switch and the singles-table options are kept.
    pub fn coincidence_options(
        &self,
        base: CoincidenceOptions,
        clock_hz: f64,
    ) -> CoincidenceOptions {
        let period_ps = 1e12 / clock_hz;
        let ps = |key: &str| (self.get(key) * period_ps).round() as i64;
        CoincidenceOptions {
            window_ps: ps("coincidence_time_window"),
            energy_window_kev: None,
            policy: Policy::TakeAllGoods,
            single_window: false,
            window_mode: None,
            allowed_module_pairs: self.coincidence_regions.clone(),
            grouping: Some(GroupingConfig {
                window_ps: ps("group_time_window"),
                max_distance_mm: self.get("group_max_distance"),
                multi_hit_module_pairs: self.multi_hit_regions.clone(),
                min_hits: self.get("group_min_hits") as u32,
                max_hits: Some(self.get("group_max_hits") as u32),
                energy_window: Some([
                    self.get("group_min_energy") as f32,
                    self.get("group_max_energy") as f32,
                ]),
            }),
            ..base
        }
    }
}

/// The coincidence options of a run or replay, in layers: `base` (scandaq's defaults or the
/// run file's), then PETsys's `[sw_trigger]` and trigger map when `petsys_config` is given
/// (windows converted at `clock_hz`), then the keys `given` in the run configuration's
/// `[coincidences]` table (with the file's path), then `flags`. Notes for the operator are
/// appended to `notes`.
pub fn resolve_coincidence_options(
    base: CoincidenceOptions,
    petsys_config: Option<&Path>,
    clock_hz: f64,
    given: Option<(&toml::Table, &Path)>,
    flags: &crate::process::coinc_stage::CoincidenceArgs,
    notes: &mut Vec<String>,
) -> Result<CoincidenceOptions> {
    let mut options = base;
    if let Some(config) = petsys_config {
        let trigger = PetsysTrigger::load(config)?;
        notes.extend(trigger.warnings.iter().cloned());
        options = trigger.coincidence_options(options, clock_hz);
        notes.push(trigger.summary(&options));
    }
    let grouping_asked =
        flags.sets_grouping() || given.is_some_and(|(t, _)| t.contains_key("grouping"));
    if let Some((table, path)) = given
        && !table.is_empty()
    {
        options = options.overlaid_with(table, path)?;
    }
    let mut options = flags.apply(options)?;
    notes.extend(flags.notes());
    // PETsys's grouping serves its coincidences: a singles-only run keeps today's singles
    // table (no photon columns) unless grouping was asked for by a key or a flag.
    if !options.enabled && petsys_config.is_some() && !grouping_asked {
        options.grouping = None;
    }
    Ok(options)
}

impl PetsysTrigger {
    /// One line saying what the PETsys settings became.
    fn summary(&self, o: &CoincidenceOptions) -> String {
        let regions = |p: &Option<ModulePairs>| {
            p.as_ref()
                .map_or("any".to_string(), |p| format!("{} pairs", p.pairs().len()))
        };
        let g = o.grouping.as_ref();
        format!(
            "PETsys [sw_trigger]: coincidence window {} ps, C regions {}; grouping {} ps / {} mm, \
             {}..{} hits, energy {}, M regions {} (flags and [coincidences] keys override)",
            o.window_ps,
            regions(&self.coincidence_regions),
            g.map_or(0, |g| g.window_ps),
            g.map_or(0.0, |g| g.max_distance_mm),
            g.map_or(1, |g| g.min_hits),
            g.and_then(|g| g.max_hits).unwrap_or(u32::MAX),
            g.and_then(|g| g.energy_window)
                .map_or("any".to_string(), |[lo, hi]| format!("{lo}..{hi}")),
            regions(&self.multi_hit_regions),
        )
    }
}

fn parse_number(config: &Path, key: &str, text: &str) -> Result<f64> {
    text.trim().trim_matches('"').parse::<f64>().map_err(|_| {
        anyhow::anyhow!(
            "{}: [sw_trigger] {key} = {text:?} is not a number (windows are in clock periods)",
            config.display()
        )
    })
}

/// The trigger map `[main] trigger_map` names (`%CDIR%` = the config's folder).
fn trigger_map_path(
    config: &Path,
    ini: &BTreeMap<String, BTreeMap<String, String>>,
) -> Option<PathBuf> {
    let cdir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let v = ini.get("main")?.get("trigger_map")?;
    Some(PathBuf::from(
        v.trim_matches('"')
            .replace("%CDIR%", &cdir.to_string_lossy()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sw_trigger_keys_become_options_in_ps_and_unread_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("map_trigger.tsv"), "0\t1\tC\n0\t0\tM\n").unwrap();
        let ini = dir.path().join("config.ini");
        std::fs::write(
            &ini,
            "[main]\ntrigger_map = %CDIR%/map_trigger.tsv\n[sw_trigger]\n\
             group_time_window = 4\ncoincidence_time_window = 1.5\ngroup_max_hits = 8\n\
             group_min_energy = 2.5\ngroup_max_multiplicity = 9\n",
        )
        .unwrap();
        let t = PetsysTrigger::load(&ini).unwrap();
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
        assert!(
            t.warnings[0].contains("group_max_multiplicity")
                && t.warnings[0].contains("group_max_hits")
        );
        let o = t.coincidence_options(CoincidenceOptions::default(), 200e6);
        assert_eq!(o.window_ps, 7_500);
        assert_eq!(o.energy_window_kev, None);
        assert_eq!(o.allowed_module_pairs, Some(ModulePairs(vec![[0, 1]])));
        let g = o.grouping.unwrap();
        assert_eq!(g.window_ps, 20_000);
        assert_eq!(g.max_distance_mm, 100.0);
        assert_eq!((g.min_hits, g.max_hits), (1, Some(8)));
        assert_eq!(g.energy_window, Some([2.5, 1e6]));
        assert_eq!(g.multi_hit_module_pairs, Some(ModulePairs(vec![[0, 0]])));
        // A clock of 250 MHz: 4 ns periods.
        let o = t.coincidence_options(CoincidenceOptions::default(), 250e6);
        assert_eq!(o.window_ps, 6_000);
        std::fs::write(&ini, "[sw_trigger]\ncoincidence_time_window = two\n").unwrap();
        let e = PetsysTrigger::load(&ini).unwrap_err().to_string();
        assert!(
            e.contains("coincidence_time_window") && e.contains("\"two\""),
            "{e}"
        );
        std::fs::write(&ini, "[sw_trigger]\ngroup_max_hits = 2.5\n").unwrap();
        let e = PetsysTrigger::load(&ini).unwrap_err().to_string();
        assert!(e.contains("group_max_hits = 2.5"), "{e}");
        std::fs::write(&ini, "[main]\n").unwrap();
        let t = PetsysTrigger::load(&ini).unwrap();
        assert!(
            t.warnings[0].contains("names no trigger_map"),
            "{:?}",
            t.warnings
        );
        assert_eq!(
            t.coincidence_options(CoincidenceOptions::default(), 200e6)
                .window_ps,
            10_000
        );
    }
}
