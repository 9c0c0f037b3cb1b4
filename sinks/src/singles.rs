//! The singles table (docs/tables.md): schema, encodings and the zero-copy mapping of a
//! [`HitBatch`] onto an Arrow record batch. Four physics columns always; the six raw
//! diagnostic columns (frame, coarse and fine counters, TAC) only when asked for, since they
//! more than double the cost of writing the table.

use arrow_array::{
    ArrayRef, Float32Array, Int64Array, RecordBatch, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use scandaq_core::HitBatch;
use std::sync::{Arc, OnceLock};

use crate::WriteOptions;

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

/// The singles schema, with or without the raw diagnostic columns.
pub fn schema(raw_columns: bool) -> SchemaRef {
    static PHYSICS: OnceLock<SchemaRef> = OnceLock::new();
    static WITH_RAW: OnceLock<SchemaRef> = OnceLock::new();
    if !raw_columns {
        return PHYSICS
            .get_or_init(|| Arc::new(Schema::new(physics_fields())))
            .clone();
    }
    WITH_RAW
        .get_or_init(|| {
            let mut fields = physics_fields();
            fields.extend([
                Field::new("frame", DataType::UInt64, false),
                Field::new("tcoarse", DataType::UInt16, false),
                Field::new("ecoarse", DataType::UInt16, false),
                Field::new("tfine", DataType::UInt16, false),
                Field::new("efine", DataType::UInt16, false),
                Field::new("tac", DataType::UInt8, false),
            ]);
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// Column encodings of the singles table: delta for times and frames, byte-stream-split for
/// energies, dictionaries for channel ids and flags, zstd.
pub fn write_options() -> WriteOptions {
    WriteOptions {
        delta_columns: vec!["t_ps", "frame"],
        byte_stream_split_columns: vec!["energy_kev"],
        dictionary_columns: vec!["channel", "flags"],
        ..WriteOptions::default()
    }
}

/// Moves a hit batch into an Arrow record batch without copying the columns. Columns of
/// unequal length (a malformed batch) are an error, not a panic.
pub fn to_record_batch(
    hits: HitBatch,
    raw_columns: bool,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(hits.t_ps)),
        Arc::new(UInt32Array::from(hits.channel)),
        Arc::new(Float32Array::from(hits.energy_kev)),
        Arc::new(UInt16Array::from(hits.flags)),
    ];
    if raw_columns {
        columns.extend([
            Arc::new(UInt64Array::from(hits.frame)) as ArrayRef,
            Arc::new(UInt16Array::from(hits.tcoarse)),
            Arc::new(UInt16Array::from(hits.ecoarse)),
            Arc::new(UInt16Array::from(hits.tfine)),
            Arc::new(UInt16Array::from(hits.efine)),
            Arc::new(UInt8Array::from(hits.tac)),
        ]);
    }
    RecordBatch::try_new(schema(raw_columns), columns)
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
}
