//! Grouping and coincidence sorting (docs/physics.md §4, GATE 10 sorter semantics).
//!
//! - [`config`]: [`CoincidenceConfig`], [`GroupingConfig`], [`Policy`], [`WindowMode`] and
//!   the [`CoincidenceError`] for impossible configurations and bad input.
//! - [`lut`]: [`CrystalLut`], the dense channel -> crystal position/module table.
//! - [`module_pairs`]: [`ModulePairs`], the module (trigger region) pairs a rule allows.
//! - [`batch`]: input view [`SinglesRef`], outputs [`PhotonBatch`], [`CoincidenceBatch`],
//!   counters.
//! - [`grouping`]: photon building ([`Grouper`], [`group_hits`], per-hit [`GroupLabels`]);
//!   `module_slots`, its fast path when hits group only within their own module.
//! - [`sorter`]: the sorter ([`CoincidenceSorter`] streaming, [`sort_coincidences`]).
//! - [`parallel`]: [`sort_coincidences_parallel`], cut at gaps and sorted on rayon.
//!
//! Semantics, configuration and output schema: `docs/coincidences.md`.

pub mod batch;
pub mod config;
pub mod grouping;
pub mod lut;
pub mod module_pairs;
mod module_slots;
pub mod parallel;
pub mod sorter;

pub use batch::{
    CoincidenceBatch, CoincidenceStats, GroupingStats, PhotonBatch, SinglesRef, coinc_flags,
};
pub use config::{
    CoincidenceConfig, CoincidenceError, DEFAULT_DELAY_PS, DEFAULT_WINDOW_PS, GroupingConfig,
    ModuleDifference, Policy, WindowMode,
};
pub use grouping::{GroupLabels, Grouper, group_hits};
pub use lut::CrystalLut;
pub use module_pairs::{MAX_MODULES, ModulePairTable, ModulePairs};
pub use parallel::{gap_cuts, sort_coincidences_parallel, sort_coincidences_sliced};
pub use sorter::{CoincidenceSorter, sort_coincidences};
