//! The singles table (docs/tables.md): schema, encodings and the zero-copy mapping of a
//! [`HitBatch`] onto an Arrow record batch. Four physics columns always; optional groups of
//! columns ([`SinglesColumns`]): crystal positions (`x_mm`, `y_mm`, `z_mm`), photon grouping
//! (`photon_id`, `photon_multiplicity`), and the six raw diagnostic columns (frame, coarse and
//! fine counters, TAC), which more than double the cost of writing the table.

use arrow_array::{
    ArrayRef, Float32Array, Int64Array, RecordBatch, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use scandaq_core::HitBatch;
use std::sync::{Arc, OnceLock};

use crate::WriteOptions;

/// Name of the singles table: its files are `singles-00000.parquet`, `singles-00001.parquet`,
/// ... (a new one at each rotation; [`crate::table_file_name`]).
pub const SINGLES_TABLE: &str = "singles";

/// Schema version of the singles table.
pub const SINGLES_SCHEMA_VERSION: &str = "1";

fn physics_fields() -> Vec<Field> {
    vec![
        Field::new("t_ps", DataType::Int64, false),
        Field::new("channel", DataType::UInt32, false),
        Field::new("energy_kev", DataType::Float32, false),
        Field::new("flags", DataType::UInt16, false),
    ]
}

/// Which optional column groups a singles table carries (in this order after the four
/// physics columns: positions, photons, raw).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinglesColumns {
    /// `x_mm`, `y_mm`, `z_mm` (float32): the crystal centre from the run's geometry, NaN for
    /// a channel missing from it.
    pub positions: bool,
    /// `photon_id` (uint64) and `photon_multiplicity` (uint16): the photon (group of hits) each
    /// single was grouped into; [`UNGROUPED_PHOTON_ID`] and 0 for a single not grouped.
    pub photons: bool,
    /// The six raw diagnostic columns.
    pub raw: bool,
}

impl SinglesColumns {
    fn index(self) -> usize {
        usize::from(self.positions) | usize::from(self.photons) << 1 | usize::from(self.raw) << 2
    }

    fn from_index(i: usize) -> Self {
        Self {
            positions: i & 1 != 0,
            photons: i & 2 != 0,
            raw: i & 4 != 0,
        }
    }
}

/// `photon_id` of a single that was not grouped (its channel is missing from the geometry).
pub const UNGROUPED_PHOTON_ID: u64 = u64::MAX;

/// The optional derived columns of one batch (empty for a group that is off).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DerivedColumns {
    /// Crystal centre x, mm.
    pub x_mm: Vec<f32>,
    /// Crystal centre y, mm.
    pub y_mm: Vec<f32>,
    /// Crystal centre z, mm.
    pub z_mm: Vec<f32>,
    /// Run-unique id of the photon the single was grouped into.
    pub photon_id: Vec<u64>,
    /// Hits in that photon (saturates at 65535).
    pub photon_multiplicity: Vec<u16>,
}

fn fields_of(columns: SinglesColumns) -> Vec<Field> {
    let mut fields = physics_fields();
    if columns.positions {
        fields.extend([
            Field::new("x_mm", DataType::Float32, false),
            Field::new("y_mm", DataType::Float32, false),
            Field::new("z_mm", DataType::Float32, false),
        ]);
    }
    if columns.photons {
        fields.extend([
            Field::new("photon_id", DataType::UInt64, false),
            Field::new("photon_multiplicity", DataType::UInt16, false),
        ]);
    }
    if columns.raw {
        fields.extend([
            Field::new("frame", DataType::UInt64, false),
            Field::new("tcoarse", DataType::UInt16, false),
            Field::new("ecoarse", DataType::UInt16, false),
            Field::new("tfine", DataType::UInt16, false),
            Field::new("efine", DataType::UInt16, false),
            Field::new("tac", DataType::UInt8, false),
        ]);
    }
    fields
}

/// The singles schema with the given optional columns.
pub fn schema_with(columns: SinglesColumns) -> SchemaRef {
    static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
    SCHEMAS.get_or_init(build_all)[columns.index()].clone()
}

fn build_all() -> Vec<SchemaRef> {
    (0..8)
        .map(|i| Arc::new(Schema::new(fields_of(SinglesColumns::from_index(i)))))
        .collect()
}

/// Every schema a singles table can have (for readers that must recognise one, e.g. recovery).
pub fn all_schemas() -> Vec<SchemaRef> {
    (0..8)
        .map(|i| schema_with(SinglesColumns::from_index(i)))
        .collect()
}

/// The singles schema, with or without the raw diagnostic columns (no derived columns).
pub fn schema(raw_columns: bool) -> SchemaRef {
    schema_with(SinglesColumns {
        raw: raw_columns,
        ..SinglesColumns::default()
    })
}

/// Columns of the singles table that builds before 2026-12-07 also wrote as dictionaries
/// (`scandaq recover` tries that layout too, to find the row groups of their files).
pub const FORMER_DICTIONARY_COLUMNS: &[&str] = &["flags"];

/// Column encodings of the singles table: delta for times and frames, byte-stream-split for
/// energies, dictionaries for channel ids and positions, zstd.
pub fn write_options() -> WriteOptions {
    WriteOptions {
        delta_columns: vec!["t_ps", "frame", "photon_id"],
        byte_stream_split_columns: vec!["energy_kev"],
        // Data pages of 16 384 rows (from about 33 k: the page limit of 20 000 rows was met
        // only after the second of the sink's ~16 k-row batches). Page-sized buffers — the
        // encoded page, its compressed copy, zstd's workspace sized for it (up to 577 KB) — are
        // the largest allocations the encoding repeats, on the rayon workers; at the larger
        // size they fit none of the holes glibc's arenas keep and pushed the arenas' tops up
        // all through a run, so a replay's RSS crept with its length. Half the size, the creep
        // is smaller, not gone (issue 16, BENCHMARKS.md, session 14). The file is up to 0.3 %
        // larger; CPU within the noise.
        write_batch_rows: 16_384,
        page_rows: Some(16_384),
        // Positions repeat per crystal: a dictionary of the crystal centres (plain + zstd was
        // both larger, 8.9 vs 7.8 B/single, and slower on the bench). Flags are plain: zstd
        // takes their runs of equal values to the same size as a dictionary did, for 10 % less
        // of the table's encoding CPU (`sink_codecs`, BENCHMARKS.md).
        dictionary_columns: vec!["channel", "x_mm", "y_mm", "z_mm", "photon_multiplicity"],
        // Row groups of 256 k rows (about 4.5 MB of columns) rather than the default 1 M: up
        // to one per core plus one are being encoded at a time, and with 1 M-row groups how
        // many a run happened to hold at its peak swung its peak RSS by tens of MB (issue 16,
        // BENCHMARKS.md). The file is within 0.3 % of the size.
        row_group_rows: 256 << 10,
        compression: crate::Compression::TABLES_DEFAULT,
        ..WriteOptions::default()
    }
}

/// Moves a hit batch into an Arrow record batch without copying the columns. Columns of
/// unequal length (a malformed batch) are an error, not a panic.
pub fn to_record_batch(
    hits: HitBatch,
    raw_columns: bool,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    to_record_batch_with(
        hits,
        DerivedColumns::default(),
        SinglesColumns {
            raw: raw_columns,
            ..SinglesColumns::default()
        },
    )
}

/// [`to_record_batch`] with the optional column groups of `columns`, the derived ones taken
/// from `derived` (moved, not copied). A group whose columns are missing or of the wrong
/// length is an error, not a panic.
pub fn to_record_batch_with(
    hits: HitBatch,
    derived: DerivedColumns,
    columns: SinglesColumns,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let raw_columns = columns.raw;
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(hits.t_ps)),
        Arc::new(UInt32Array::from(hits.channel)),
        Arc::new(Float32Array::from(hits.energy_kev)),
        Arc::new(UInt16Array::from(hits.flags)),
    ];
    if columns.positions {
        arrays.extend([
            Arc::new(Float32Array::from(derived.x_mm)) as ArrayRef,
            Arc::new(Float32Array::from(derived.y_mm)),
            Arc::new(Float32Array::from(derived.z_mm)),
        ]);
    }
    if columns.photons {
        arrays.extend([
            Arc::new(UInt64Array::from(derived.photon_id)) as ArrayRef,
            Arc::new(UInt16Array::from(derived.photon_multiplicity)),
        ]);
    }
    let mut columns_out = arrays;
    if raw_columns {
        columns_out.extend([
            Arc::new(UInt64Array::from(hits.frame)) as ArrayRef,
            Arc::new(UInt16Array::from(hits.tcoarse)),
            Arc::new(UInt16Array::from(hits.ecoarse)),
            Arc::new(UInt16Array::from(hits.tfine)),
            Arc::new(UInt16Array::from(hits.efine)),
            Arc::new(UInt8Array::from(hits.tac)),
        ]);
    }
    RecordBatch::try_new(schema_with(columns), columns_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_columns_map_and_unequal_ones_are_an_error() {
        let b = HitBatch::from_times(&[1, 2, 3]);
        assert_eq!(to_record_batch(b.clone(), true).unwrap().num_columns(), 10);
        assert_eq!(to_record_batch(b.clone(), false).unwrap().num_rows(), 3);
        let mut bad = b;
        bad.energy_kev.pop();
        assert!(to_record_batch(bad, false).is_err());
    }

    #[test]
    fn derived_columns_follow_the_physics_ones_and_must_match_in_length() {
        let b = HitBatch::from_times(&[1, 2]);
        let cols = SinglesColumns {
            positions: true,
            photons: true,
            raw: false,
        };
        let derived = DerivedColumns {
            x_mm: vec![1.0, f32::NAN],
            y_mm: vec![2.0, f32::NAN],
            z_mm: vec![3.0, f32::NAN],
            photon_id: vec![0, UNGROUPED_PHOTON_ID],
            photon_multiplicity: vec![1, 0],
        };
        let r = to_record_batch_with(b.clone(), derived.clone(), cols).unwrap();
        let names: Vec<_> = r
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "t_ps",
                "channel",
                "energy_kev",
                "flags",
                "x_mm",
                "y_mm",
                "z_mm",
                "photon_id",
                "photon_multiplicity"
            ]
        );
        let mut short = derived;
        short.photon_id.pop();
        assert!(to_record_batch_with(b, short, cols).is_err());
        assert_eq!(all_schemas().len(), 8);
    }
}
