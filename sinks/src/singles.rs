//! The singles table (docs/tables.md): schema, encodings and the zero-copy mapping of a
//! [`HitBatch`] onto an Arrow record batch.

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

/// The singles schema.
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("t_ps", DataType::Int64, false),
                Field::new("channel", DataType::UInt32, false),
                Field::new("energy_kev", DataType::Float32, false),
                Field::new("flags", DataType::UInt16, false),
                Field::new("frame", DataType::UInt64, false),
                Field::new("tcoarse", DataType::UInt16, false),
                Field::new("ecoarse", DataType::UInt16, false),
                Field::new("tfine", DataType::UInt16, false),
                Field::new("efine", DataType::UInt16, false),
                Field::new("tac", DataType::UInt8, false),
            ]))
        })
        .clone()
}

/// Column encodings of the singles table: delta for times and frames, byte-stream-split for
/// energies, zstd.
pub fn write_options() -> WriteOptions {
    WriteOptions {
        delta_columns: vec!["t_ps", "frame"],
        byte_stream_split_columns: vec!["energy_kev"],
        ..WriteOptions::default()
    }
}

/// Moves a hit batch into an Arrow record batch without copying the columns.
pub fn to_record_batch(hits: HitBatch) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(hits.t_ps)),
        Arc::new(UInt32Array::from(hits.channel)),
        Arc::new(Float32Array::from(hits.energy_kev)),
        Arc::new(UInt16Array::from(hits.flags)),
        Arc::new(UInt64Array::from(hits.frame)),
        Arc::new(UInt16Array::from(hits.tcoarse)),
        Arc::new(UInt16Array::from(hits.ecoarse)),
        Arc::new(UInt16Array::from(hits.tfine)),
        Arc::new(UInt16Array::from(hits.efine)),
        Arc::new(UInt8Array::from(hits.tac)),
    ];
    // Every column has the same length by construction of HitBatch, so this cannot fail.
    RecordBatch::try_new(schema(), columns).expect("singles columns have equal lengths")
}
