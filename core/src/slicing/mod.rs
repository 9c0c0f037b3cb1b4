//! Time slices: carry calibrated, time-sorted singles from M acquisition sources to N
//! builders so that every builder produces exactly its share of the single-process
//! coincidence result (docs/cluster.md, "Time slices and exactness"). Pure: no I/O, no
//! threads; the transport (Arrow Flight, daq) moves the rows.
//!
//! - [`spec`]: [`SliceSpec`] (slice length, builders, lead-in, lead-out) and [`SliceNeeds`],
//!   derived from the coincidence configuration.
//! - [`source`]: [`SourceSlicer`], one source's batches cut into [`Piece`]s and end markers;
//!   [`role`]: [`PieceRole`] (lead-in, body, lead-out).
//! - [`rows`]: [`SliceRows`] columns and the k-way merge with the single-process tie order.
//! - [`assemble`]: [`SliceAssembler`], a builder's pieces merged into [`SliceJob`]s;
//!   [`MissingSlice`] for abandoned ones.
//! - [`process`]: [`process_slice`] (or [`process_slice_with`], sorters optional) ->
//!   [`SliceOutput`] with [`SliceStats`].
//! - `quiet`, `body_sort`, `group_stage`: the quiet-gap search and the per-stage runs
//!   `process` uses.
//! - errors: [`SliceError`] (module [`error`]).
//!
//! Imports only `crate::coincidence`'s public API (sorter, grouper, batches, configs).

pub mod assemble;
mod body_sort;
pub mod error;
mod group_stage;
pub mod process;
pub mod quiet;
pub mod role;
pub mod rows;
pub mod source;
pub mod spec;

pub use assemble::{MissingSlice, SliceAssembler, SliceJob};
pub use error::SliceError;
pub use process::{SliceOutput, SliceStats, add_grouping, process_slice, process_slice_with};
pub use quiet::{first_quiet_start, quiet_start};
pub use role::PieceRole;
pub use rows::{SliceRows, merge_runs};
pub use source::{Piece, Routing, SourceSlicer};
pub use spec::{DEFAULT_SLICE_PS, LEAD_IN_QUIET_GAPS, SliceNeeds, SliceSpec};
