//! The coincidence tables (docs/tables.md): `coincidences-NNNNN.parquet` (prompts) and
//! `delayed-NNNNN.parquet` (the delayed window, a randoms estimate), each a sequence of files
//! rotated like the singles, share one schema; a
//! [`CoincidenceBatch`] maps onto it without copying the columns.

use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch, UInt16Array, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use scandaq_core::coincidence::CoincidenceBatch;
use std::sync::{Arc, OnceLock};

use crate::WriteOptions;

/// Name of the prompt coincidence table: its files are `coincidences-00000.parquet`,
/// `coincidences-00001.parquet`, ... (a new one at each rotation; [`crate::table_file_name`]).
pub const PROMPTS_TABLE: &str = "coincidences";
/// Name of the delayed coincidence table (`delayed-00000.parquet`, ...).
pub const DELAYED_TABLE: &str = "delayed";
/// The first file of a run's prompt coincidence table.
pub const PROMPTS_FILE: &str = "coincidences-00000.parquet";
/// The first file of a run's delayed coincidence table.
pub const DELAYED_FILE: &str = "delayed-00000.parquet";

/// Schema version of the coincidence tables.
pub const COINCIDENCES_SCHEMA_VERSION: &str = "1";

/// The coincidence schema (prompt and delayed tables alike).
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("t1_ps", DataType::Int64, false),
                Field::new("t2_ps", DataType::Int64, false),
                Field::new("channel1", DataType::UInt32, false),
                Field::new("channel2", DataType::UInt32, false),
                Field::new("energy1_kev", DataType::Float32, false),
                Field::new("energy2_kev", DataType::Float32, false),
                Field::new("tof_ps", DataType::Int64, false),
                Field::new("flags", DataType::UInt16, false),
            ]))
        })
        .clone()
}

/// Encodings: delta for times (opener times rise; partner times and TOF are close to them),
/// byte-stream-split for energies, dictionaries for channels and flags, zstd.
pub fn write_options() -> WriteOptions {
    WriteOptions {
        delta_columns: vec!["t1_ps", "t2_ps", "tof_ps"],
        byte_stream_split_columns: vec!["energy1_kev", "energy2_kev"],
        dictionary_columns: vec!["channel1", "channel2", "flags"],
        // 42 B a row, and a row group is buffered per table while up to one per core plus one
        // are being encoded: 1 M-row groups held ~170 MB per table at high coincidence rates,
        // and a one-pass replay's peak heap still swung between 99 and 117 MB with 256 k-row
        // groups; 80-89 MB with these (5.5 MB each), for 0.1 % more bytes (BENCHMARKS.md,
        // issue 16).
        row_group_rows: 128 << 10,
        // Values handed to the column writers at a time: the page row limit (20 000) is then
        // met in one go instead of in 1024-value steps, as the singles do.
        write_batch_rows: 20_000,
        compression: crate::Compression::TABLES_DEFAULT,
        ..WriteOptions::default()
    }
}

/// Moves a coincidence batch into an Arrow record batch (no copy). Unequal column lengths are
/// an error, not a panic.
pub fn to_record_batch(c: CoincidenceBatch) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(c.t1_ps)),
        Arc::new(Int64Array::from(c.t2_ps)),
        Arc::new(UInt32Array::from(c.channel1)),
        Arc::new(UInt32Array::from(c.channel2)),
        Arc::new(Float32Array::from(c.energy1_kev)),
        Arc::new(Float32Array::from(c.energy2_kev)),
        Arc::new(Int64Array::from(c.tof_ps)),
        Arc::new(UInt16Array::from(c.flags)),
    ];
    RecordBatch::try_new(schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_column_and_refuses_ragged_batches() {
        let c = CoincidenceBatch {
            t1_ps: vec![1, 2],
            t2_ps: vec![3, 4],
            channel1: vec![5, 6],
            channel2: vec![7, 8],
            energy1_kev: vec![511.0, 510.0],
            energy2_kev: vec![509.0, 508.0],
            tof_ps: vec![-2, -2],
            flags: vec![0, 1],
        };
        let rb = to_record_batch(c.clone()).unwrap();
        assert_eq!((rb.num_rows(), rb.num_columns()), (2, 8));
        let mut bad = c;
        bad.flags.pop();
        assert!(to_record_batch(bad).is_err());
    }
}
