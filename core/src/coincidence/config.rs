//! Configuration of grouping and of the coincidence sorter (windows, energy cut, geometric
//! "good pair" criteria, multiples policy, window mode) and its validation errors.

use super::module_pairs::ModulePairs;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Default delay of the delayed-coincidence window: 100 ns.
pub const DEFAULT_DELAY_PS: i64 = 100_000;

/// Default coincidence window: 4 ns.
pub const DEFAULT_WINDOW_PS: i64 = 4_000;

/// What a window holding more than one pair (a *multiple*) keeps. Names as in GATE
/// (`takeAllGoods`, ...), which is also their serde and [`FromStr`] spelling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Policy {
    /// Every good pair of the window.
    #[default]
    TakeAllGoods,
    /// The winner among the good pairs.
    TakeWinnerOfGoods,
    /// The winner of all pairs, if it is good.
    TakeWinnerIfIsGood,
    /// The winner of all pairs, if every pair of the window is good.
    TakeWinnerIfAllAreGoods,
    /// The good pair, if exactly one pair of the window is good.
    TakeIfOnlyOneGood,
    /// Nothing.
    RemoveMultiples,
}

impl Policy {
    /// Every policy, in declaration order.
    pub const ALL: [Policy; 6] = [
        Policy::TakeAllGoods,
        Policy::TakeWinnerOfGoods,
        Policy::TakeWinnerIfIsGood,
        Policy::TakeWinnerIfAllAreGoods,
        Policy::TakeIfOnlyOneGood,
        Policy::RemoveMultiples,
    ];

    /// The GATE name (`takeAllGoods`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Policy::TakeAllGoods => "takeAllGoods",
            Policy::TakeWinnerOfGoods => "takeWinnerOfGoods",
            Policy::TakeWinnerIfIsGood => "takeWinnerIfIsGood",
            Policy::TakeWinnerIfAllAreGoods => "takeWinnerIfAllAreGoods",
            Policy::TakeIfOnlyOneGood => "takeIfOnlyOneGood",
            Policy::RemoveMultiples => "removeMultiples",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Policy::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "unknown multiples policy {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Which singles open a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowMode {
    /// Every single (inside the energy window) opens its own window (GATE 10 default).
    #[default]
    MultiWindow,
    /// A single that was the second member of a kept pair opens no window of its own
    /// (scandaq's single-window rule: only pairs the policy kept suppress; not what GATE 10
    /// does, see [`WindowMode::SingleWindowGate10`]).
    SingleWindow,
    /// GATE 10.1.1's single-window rule (`allDigiOpenCoincGate = False` in
    /// `opengate/actors/coincidences.py`): a single that is a candidate of any earlier single's
    /// window (another crystal, within the window) opens no window of its own — whether or not
    /// that pair is good or kept, and whether or not the earlier single opened a window itself.
    SingleWindowGate10,
}

/// Minimum module difference of a good pair (an extra criterion, off by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleDifference {
    /// A pair is good only if its module difference is at least this.
    pub min: u32,
    /// Number of modules around the ring. When set, the difference wraps around the ring:
    /// `d = |m1 - m2| mod n`, difference `min(d, n - d)` (modules `0` and `n - 1` are
    /// neighbours). When unset the plain `|m1 - m2|` is used.
    pub ring_modules: Option<u32>,
}

impl ModuleDifference {
    /// The module difference of modules `a` and `b` under this rule.
    pub fn difference(&self, a: u32, b: u32) -> u32 {
        let d = a.abs_diff(b);
        match self.ring_modules {
            Some(n) if n > 0 => {
                let d = d % n;
                d.min(n - d)
            }
            _ => d,
        }
    }
}

/// Coincidence sorter configuration. Times are integer picoseconds, distances mm, energies keV.
///
/// A candidate `j` of opener `i` satisfies `offset_ps <= t_j - t_i <= offset_ps + window_ps`
/// (closed on both ends).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoincidenceConfig {
    /// Window length, ps (> 0).
    pub window_ps: i64,
    /// Window start after the opener, ps: 0 for prompt coincidences, > `window_ps` for delayed.
    pub offset_ps: i64,
    /// Delayed (randoms) sorter: output flagged [`coinc_flags::DELAYED`](super::coinc_flags::DELAYED).
    pub delayed: bool,
    /// Energy window `[min, max]` keV, closed, applied before sorting; `None` = no cut.
    pub energy_window_kev: Option<[f32; 2]>,
    /// Minimum transaxial distance (x-y plane) of a good pair, mm.
    pub min_transaxial_mm: Option<f64>,
    /// Maximum axial difference `|z1 - z2|` of a good pair, mm.
    pub max_axial_mm: Option<f64>,
    /// Minimum module difference of a good pair (off by default).
    pub min_module_difference: Option<ModuleDifference>,
    /// Good pair: the two crystals' modules form one of these pairs (PETsys's `C` entries of
    /// `map_trigger.tsv`); `None` = any modules.
    pub allowed_module_pairs: Option<ModulePairs>,
    /// What a multiple keeps.
    pub policy: Policy,
    /// Multi-window (default) or single-window.
    pub mode: WindowMode,
}

impl Default for CoincidenceConfig {
    fn default() -> Self {
        Self::prompt(DEFAULT_WINDOW_PS)
    }
}

impl CoincidenceConfig {
    /// Prompt coincidences in a `window_ps` window (offset 0), no cuts, `takeAllGoods`,
    /// multi-window.
    pub fn prompt(window_ps: i64) -> Self {
        Self {
            window_ps,
            offset_ps: 0,
            delayed: false,
            energy_window_kev: None,
            min_transaxial_mm: None,
            max_axial_mm: None,
            min_module_difference: None,
            allowed_module_pairs: None,
            policy: Policy::TakeAllGoods,
            mode: WindowMode::MultiWindow,
        }
    }

    /// Delayed coincidences: a `window_ps` window starting [`DEFAULT_DELAY_PS`] after the opener.
    pub fn delayed(window_ps: i64) -> Self {
        Self {
            offset_ps: DEFAULT_DELAY_PS,
            delayed: true,
            ..Self::prompt(window_ps)
        }
    }

    /// The same configuration as a delayed sorter with the given offset (cuts, policy and mode
    /// kept).
    pub fn to_delayed(&self, offset_ps: i64) -> Self {
        Self {
            offset_ps,
            delayed: true,
            ..self.clone()
        }
    }

    /// `offset_ps + window_ps`: the largest `t_j - t_i` of a candidate (valid configs only).
    pub fn span_ps(&self) -> i64 {
        self.offset_ps.saturating_add(self.window_ps)
    }

    /// Checks the configuration; the error names the offending fields.
    pub fn validate(&self) -> Result<(), CoincidenceError> {
        if self.window_ps <= 0 {
            return Err(CoincidenceError::WindowNotPositive {
                window_ps: self.window_ps,
            });
        }
        if self.offset_ps.checked_add(self.window_ps).is_none() {
            return Err(CoincidenceError::WindowTooLong {
                offset_ps: self.offset_ps,
                window_ps: self.window_ps,
            });
        }
        if self.delayed {
            if self.offset_ps <= self.window_ps {
                return Err(CoincidenceError::DelayNotAfterWindow {
                    offset_ps: self.offset_ps,
                    window_ps: self.window_ps,
                });
            }
        } else if self.offset_ps != 0 {
            return Err(CoincidenceError::PromptWithOffset {
                offset_ps: self.offset_ps,
            });
        }
        if let Some([lo, hi]) = self.energy_window_kev
            && !(lo.is_finite() && hi.is_finite() && lo <= hi)
        {
            return Err(CoincidenceError::BadEnergyWindow { min: lo, max: hi });
        }
        for (field, v) in [
            ("min_transaxial_mm", self.min_transaxial_mm),
            ("max_axial_mm", self.max_axial_mm),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(CoincidenceError::BadLimit { field, value: v });
            }
        }
        if let Some(ModuleDifference {
            ring_modules: Some(0),
            ..
        }) = self.min_module_difference
        {
            return Err(CoincidenceError::BadLimit {
                field: "min_module_difference.ring_modules",
                value: 0.0,
            });
        }
        check_module_ids("allowed_module_pairs", self.allowed_module_pairs.as_ref())?;
        Ok(())
    }

    /// True when no geometric criterion is set (every pair is good).
    pub(crate) fn no_criteria(&self) -> bool {
        self.min_transaxial_mm.is_none()
            && self.max_axial_mm.is_none()
            && self.min_module_difference.is_none()
            && self.allowed_module_pairs.is_none()
    }
}

/// Grouping (photon building) configuration.
///
/// A hit joins a group when `t_hit - t_first <= window_ps`, the 3-D distance between its
/// crystal and the group's first crystal is `<= max_distance_mm` (both closed), and (when
/// `multi_hit_module_pairs` is set) the two crystals' modules form one of those pairs, where
/// `first` is the group's first (earliest) hit. A closed group whose hit count is outside
/// `[min_hits, max_hits]` or whose summed energy is outside `energy_window` gives no photon
/// (counted in [`GroupingStats`](super::GroupingStats) by reason). The defaults group across
/// all modules and reject nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupingConfig {
    /// Time window from the group's first hit, ps (>= 0).
    pub window_ps: i64,
    /// Distance limit from the group's first hit, mm (>= 0).
    pub max_distance_mm: f64,
    /// Module pairs whose hits may share a photon (PETsys's `M` entries of `map_trigger.tsv`);
    /// `None` = any. A hit on a module no pair names starts a photon of its own.
    pub multi_hit_module_pairs: Option<ModulePairs>,
    /// Groups with fewer hits give no photon (PETsys `group_min_hits`).
    pub min_hits: u32,
    /// Groups with more hits give no photon (PETsys `group_max_hits`); `None` = no limit.
    pub max_hits: Option<u32>,
    /// Closed window on the photon's summed energy, in the energy column's unit (keV, or ToT
    /// ns without an energy table: PETsys `group_min_energy` / `group_max_energy`); `None` =
    /// no cut.
    pub energy_window: Option<[f32; 2]>,
}

impl Default for GroupingConfig {
    fn default() -> Self {
        Self {
            window_ps: 10_000,
            max_distance_mm: 100.0,
            multi_hit_module_pairs: None,
            min_hits: 1,
            max_hits: None,
            energy_window: None,
        }
    }
}

impl GroupingConfig {
    /// A grouping of `window_ps` and `max_distance_mm` with no module rule and no photon cuts.
    pub fn new(window_ps: i64, max_distance_mm: f64) -> Self {
        Self {
            window_ps,
            max_distance_mm,
            ..Self::default()
        }
    }

    /// True when some closed groups may give no photon (a hit-count or energy cut is set).
    pub fn rejects_photons(&self) -> bool {
        self.min_hits > 1 || self.max_hits.is_some() || self.energy_window.is_some()
    }

    /// Checks the configuration; the error names the offending field.
    pub fn validate(&self) -> Result<(), CoincidenceError> {
        if self.window_ps < 0 {
            return Err(CoincidenceError::BadLimit {
                field: "grouping.window_ps",
                value: self.window_ps as f64,
            });
        }
        if !(self.max_distance_mm.is_finite() && self.max_distance_mm >= 0.0) {
            return Err(CoincidenceError::BadLimit {
                field: "grouping.max_distance_mm",
                value: self.max_distance_mm,
            });
        }
        if let Some(max) = self.max_hits
            && max < self.min_hits.max(1)
        {
            return Err(CoincidenceError::BadSetting {
                field: "grouping.max_hits",
                problem: format!(
                    "{max} is below min_hits ({}) or 1: no photon could pass",
                    self.min_hits
                ),
            });
        }
        if let Some([lo, hi]) = self.energy_window
            && !(lo.is_finite() && hi.is_finite() && lo <= hi)
        {
            return Err(CoincidenceError::BadSetting {
                field: "grouping.energy_window",
                problem: format!("[{lo}, {hi}] must be finite with min <= max"),
            });
        }
        check_module_ids(
            "grouping.multi_hit_module_pairs",
            self.multi_hit_module_pairs.as_ref(),
        )
    }
}

/// Refuses a module id of [`MAX_MODULES`](super::module_pairs::MAX_MODULES) or more in `pairs`.
fn check_module_ids(
    field: &'static str,
    pairs: Option<&ModulePairs>,
) -> Result<(), CoincidenceError> {
    match pairs.and_then(ModulePairs::out_of_range) {
        Some(m) => Err(CoincidenceError::BadSetting {
            field,
            problem: format!(
                "module {m} is out of range: module (trigger region) ids go from 0 to {}",
                super::module_pairs::MAX_MODULES - 1
            ),
        }),
        None => Ok(()),
    }
}

/// Errors of grouping and coincidence sorting: impossible configurations and bad input.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CoincidenceError {
    /// `window_ps <= 0`.
    #[error("coincidence window_ps must be > 0, got {window_ps}")]
    WindowNotPositive {
        /// The configured window.
        window_ps: i64,
    },
    /// A delayed window that starts before the prompt window ends.
    #[error(
        "delayed coincidences: offset_ps ({offset_ps}) must be greater than window_ps \
         ({window_ps}), otherwise the delayed window overlaps the prompt one"
    )]
    DelayNotAfterWindow {
        /// The configured offset.
        offset_ps: i64,
        /// The configured window.
        window_ps: i64,
    },
    /// A prompt sorter with a non-zero offset.
    #[error(
        "prompt coincidences: offset_ps must be 0, got {offset_ps} (set delayed = true for a delayed window)"
    )]
    PromptWithOffset {
        /// The configured offset.
        offset_ps: i64,
    },
    /// `offset_ps + window_ps` overflows.
    #[error("offset_ps ({offset_ps}) + window_ps ({window_ps}) overflows i64")]
    WindowTooLong {
        /// The configured offset.
        offset_ps: i64,
        /// The configured window.
        window_ps: i64,
    },
    /// Energy window not finite or min > max.
    #[error("energy_window_kev [{min}, {max}] must be finite with min <= max")]
    BadEnergyWindow {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// A limit that must be finite and non-negative (or positive) is not.
    #[error("{field} must be finite and >= 0 (ring_modules > 0), got {value}")]
    BadLimit {
        /// Field name.
        field: &'static str,
        /// Offending value.
        value: f64,
    },
    /// A setting outside what it may be; `problem` says what is expected.
    #[error("{field}: {problem}")]
    BadSetting {
        /// Field name.
        field: &'static str,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// Input columns of unequal length.
    #[error(
        "input columns differ in length: t_ps {t_ps}, channel {channel}, energy_kev {energy_kev}, flags {flags}"
    )]
    ColumnLengths {
        /// Length of `t_ps`.
        t_ps: usize,
        /// Length of `channel`.
        channel: usize,
        /// Length of `energy_kev`.
        energy_kev: usize,
        /// Length of `flags`.
        flags: usize,
    },
    /// Input not in time order (within a batch or across successive batches).
    #[error(
        "input not in time order: row {index} of the batch has t_ps {t_ps} < previous {previous_ps}"
    )]
    NotTimeOrdered {
        /// Row of the offending single in the batch that was passed in.
        index: usize,
        /// Time of the single before it (possibly from an earlier batch).
        previous_ps: i64,
        /// Its time.
        t_ps: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::{CoincidenceConfig, CoincidenceError, GroupingConfig, ModuleDifference};
    use crate::coincidence::ModulePairs;

    #[test]
    fn a_non_finite_energy_window_is_refused_naming_the_field() {
        for [lo, hi] in [
            [f32::NAN, 600.0],
            [400.0, f32::NAN],
            [400.0, f32::INFINITY],
            [f32::NEG_INFINITY, 600.0],
        ] {
            let mut c = CoincidenceConfig::prompt(4000);
            c.energy_window_kev = Some([lo, hi]);
            let e = c.validate().unwrap_err();
            assert!(
                matches!(e, CoincidenceError::BadEnergyWindow { .. }),
                "[{lo}, {hi}]: {e:?}"
            );
            let m = e.to_string();
            assert!(
                m.contains("energy_window_kev") && m.contains("finite"),
                "[{lo}, {hi}]: {m}"
            );
        }
        // A finite window is taken: the refusal is about the values, not the field.
        let mut c = CoincidenceConfig::prompt(4000);
        c.energy_window_kev = Some([400.0, 600.0]);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn a_ring_of_zero_modules_is_refused_naming_the_field() {
        let with_ring = |ring_modules| {
            let mut c = CoincidenceConfig::prompt(4000);
            c.min_module_difference = Some(ModuleDifference {
                min: 1,
                ring_modules,
            });
            c.validate()
        };
        let e = with_ring(Some(0)).unwrap_err();
        assert_eq!(
            e,
            CoincidenceError::BadLimit {
                field: "min_module_difference.ring_modules",
                value: 0.0
            }
        );
        let m = e.to_string();
        assert!(m.contains("min_module_difference.ring_modules"), "{m}");
        assert!(m.contains("ring_modules > 0"), "{m}");
        assert_eq!(with_ring(Some(1)), Ok(()));
        assert_eq!(with_ring(Some(24)), Ok(()));
        assert_eq!(with_ring(None), Ok(()));
    }

    #[test]
    fn grouping_cuts_and_module_ids_are_checked_naming_the_field() {
        let field_of = |g: GroupingConfig| match g.validate() {
            Err(CoincidenceError::BadSetting { field, problem }) => format!("{field}: {problem}"),
            other => format!("{other:?}"),
        };
        let base = GroupingConfig::new(10_000, 100.0);
        assert_eq!(base.validate(), Ok(()));
        let m = field_of(GroupingConfig {
            min_hits: 3,
            max_hits: Some(2),
            ..base.clone()
        });
        assert!(
            m.starts_with("grouping.max_hits: 2 is below min_hits (3)"),
            "{m}"
        );
        let m = field_of(GroupingConfig {
            max_hits: Some(0),
            ..base.clone()
        });
        assert!(m.starts_with("grouping.max_hits: 0"), "{m}");
        let ok = GroupingConfig {
            min_hits: 2,
            max_hits: Some(2),
            energy_window: Some([-1e6, 1e6]),
            multi_hit_module_pairs: Some(ModulePairs(vec![[4095, 0]])),
            ..base.clone()
        };
        assert_eq!(ok.validate(), Ok(()));
        for w in [[5.0, 1.0], [f32::NAN, 1.0], [0.0, f32::INFINITY]] {
            let m = field_of(GroupingConfig {
                energy_window: Some(w),
                ..base.clone()
            });
            assert!(m.starts_with("grouping.energy_window"), "{w:?}: {m}");
        }
        let m = field_of(GroupingConfig {
            multi_hit_module_pairs: Some(ModulePairs(vec![[0, 4096]])),
            ..base
        });
        assert!(
            m.contains("grouping.multi_hit_module_pairs: module 4096 is out of range"),
            "{m}"
        );
        let mut c = CoincidenceConfig::prompt(4000);
        c.allowed_module_pairs = Some(ModulePairs(vec![[9000, 1]]));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.starts_with("allowed_module_pairs: module 9000"), "{e}");
    }
}
