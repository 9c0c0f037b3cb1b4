//! scandaq-core: the vocabulary every scandaq crate shares.
//!
//! Hit batches (struct-of-arrays), PETsys channel identifiers, scanner geometry, calibration
//! tables with their text formats, clock/unwrap helpers and named loss counters, the
//! coincidence library and its time slices for a cluster ([`slicing`]). No I/O, no threads:
//! parsers take `&str` and formatters return `String`, the caller owns the files.

pub mod calib;
pub mod channel;
pub mod clock;
pub mod clock_fit;
pub mod coincidence;
pub mod geometry;
pub mod hex;
pub mod hits;
mod nearly_sorted;
pub mod run_state;
pub mod slicing;
pub mod snapshot;
pub mod stats;
mod table_text;
pub mod units;

pub use calib::{Calibration, EnergyTable, SkewTable, TableError, TdcEntry, TdcTable};
pub use channel::ChannelId;
pub use clock::{ClockModel, FrameUnwrapper};
pub use coincidence::{
    CoincidenceBatch, CoincidenceConfig, CoincidenceError, CoincidenceSorter, CoincidenceStats,
    CrystalLut, GroupingConfig, Policy, WindowMode,
};
pub use geometry::{Crystal, Geometry};
pub use hits::{HitBatch, hit_flags};
pub use slicing::{
    MissingSlice, Piece, PieceRole, SliceAssembler, SliceError, SliceJob, SliceOutput, SliceSpec,
    SliceStats, SourceSlicer, process_slice,
};
pub use stats::{LossCounts, LossReason};
