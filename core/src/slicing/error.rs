//! [`SliceError`]: what went wrong while routing, assembling or processing a time slice, with
//! the field, row, source or slice it concerns and how to fix it.

use super::role::PieceRole;
use crate::coincidence::CoincidenceError;

/// Errors of the time-slice routing library.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SliceError {
    /// A [`SliceSpec`](super::SliceSpec) field outside what it may be; `problem` says what is
    /// expected.
    #[error("slice spec {field}: {problem}")]
    BadSpec {
        /// Field name (`slice_ps`, `builders`, `lead_in_ps`, `lead_out_ps`).
        field: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// From grouping or the sorters: an invalid configuration, unequal columns, rows out of
    /// time order.
    #[error("grouping or coincidence sorting: {0}")]
    Config(#[from] CoincidenceError),
    /// A source's rows are not in time order (within a batch or against its previous batch).
    #[error(
        "source {source_id}: row {row} of the batch has t_ps {t_ps} < previous {previous_ps}: \
         a source must send its singles time-sorted"
    )]
    NotTimeOrdered {
        /// The source (acquisition node or board) that sent the rows.
        source_id: u32,
        /// Row of the offending single in the batch that was passed in.
        row: usize,
        /// Time of the single before it.
        previous_ps: i64,
        /// Its time.
        t_ps: i64,
    },
    /// A source id the assembler was not built with.
    #[error("source {source_id} is not one of this builder's sources {known:?}")]
    UnknownSource {
        /// The unknown id.
        source_id: u32,
        /// The ids the assembler expects.
        known: Vec<u32>,
    },
    /// A piece or marker for a slice another builder owns.
    #[error("slice {slice} belongs to builder {owner}, not to builder {builder}")]
    WrongBuilder {
        /// The slice.
        slice: i64,
        /// Its builder (`slice mod builders`).
        owner: u32,
        /// This builder.
        builder: u32,
    },
    /// A piece for a slice that was already yielded as a job or abandoned (a late piece: the
    /// caller counts its rows as lost).
    #[error("source {source_id}: slice {slice} is already closed (yielded or abandoned)")]
    SliceClosed {
        /// The source.
        source_id: u32,
        /// The slice.
        slice: i64,
    },
    /// A piece for a slice the source had already ended.
    #[error("source {source_id}: piece for slice {slice} after the source ended it")]
    PieceAfterEnd {
        /// The source.
        source_id: u32,
        /// The slice.
        slice: i64,
    },
    /// A piece row outside the time range of its role (lead-in, body, lead-out) for its slice.
    #[error(
        "source {source_id}: slice {slice} {role} piece row {row} has t_ps {t_ps} outside \
         [{start_ps}, {end_ps})"
    )]
    RowOutsidePiece {
        /// The source.
        source_id: u32,
        /// The slice.
        slice: i64,
        /// The piece's role.
        role: PieceRole,
        /// Row in the piece.
        row: usize,
        /// Its time.
        t_ps: i64,
        /// Start of the role's time range.
        start_ps: i64,
        /// End (exclusive) of the role's time range.
        end_ps: i64,
    },
    /// Slice times leave the i64 picosecond range.
    #[error("slice {slice}: its time range plus lead-in/lead-out overflows i64 picoseconds")]
    TimeOverflow {
        /// The slice.
        slice: i64,
    },
}
