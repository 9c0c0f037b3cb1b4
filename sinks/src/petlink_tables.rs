//! The PETLINK list-mode tables (docs/tables.md): `petlink_events` (one row per prompt or
//! delayed coincidence) and `petlink_singles` (one row per singles / dead-time tag); their
//! schemas, encodings, key-value metadata from the Interfile header, and the zero-copy
//! mapping of the decoder's batches onto Arrow record batches.
//!
//! Time is `time_ms` (uint32, ms since acquisition start): the list mode's only clock is the
//! elapsed-time tag, 1 ms apart on the mMR, so a picosecond column would claim a precision
//! the data do not have. Multiply by 10^9 to compare with the singles table's `t_ps`.

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int16Array, RecordBatch, UInt16Array, UInt32Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use scandaq_decoders::interfile::PetlinkHeader;
use scandaq_decoders::petlink::{EventBatch, SinglesRateBatch};
use std::sync::{Arc, OnceLock};

use crate::WriteOptions;

/// Schema version of both PETLINK tables.
pub const PETLINK_SCHEMA_VERSION: &str = "1";
/// Table name (and `scandaq.table` metadata) of the events table.
pub const EVENTS_TABLE: &str = "petlink_events";
/// Table name of the singles-rate table.
pub const SINGLES_TABLE: &str = "petlink_singles";
/// File name of the events table in a run directory.
pub const EVENTS_FILE: &str = "petlink_events-00000.parquet";
/// File name of the singles-rate table in a run directory.
pub const SINGLES_FILE: &str = "petlink_singles-00000.parquet";

/// Schema of `petlink_events`.
pub fn events_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("time_ms", DataType::UInt32, false),
            Field::new("prompt", DataType::Boolean, false),
            Field::new("bin_address", DataType::UInt32, false),
            Field::new("sinogram", DataType::UInt32, false),
            Field::new("view", DataType::UInt16, false),
            Field::new("bin", DataType::UInt16, false),
            Field::new("segment", DataType::Int16, false),
            Field::new("axial_pos", DataType::UInt16, false),
        ]))
    })
    .clone()
}

/// Schema of `petlink_singles`.
pub fn singles_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("time_ms", DataType::UInt32, false),
            Field::new("block", DataType::UInt16, false),
            Field::new("raw_rate", DataType::UInt32, false),
            Field::new("scaled_rate_hz", DataType::Float64, false),
        ]))
    })
    .clone()
}

/// Encodings of `petlink_events`: delta for the time, dictionary for segments, zstd.
pub fn events_write_options() -> WriteOptions {
    WriteOptions {
        delta_columns: vec!["time_ms"],
        dictionary_columns: vec!["segment"],
        ..WriteOptions::default()
    }
}

/// Encodings of `petlink_singles`: delta for the time, dictionary for blocks, zstd.
pub fn singles_write_options() -> WriteOptions {
    WriteOptions {
        delta_columns: vec!["time_ms"],
        dictionary_columns: vec!["block"],
        ..WriteOptions::default()
    }
}

/// Moves an event batch into a record batch (columns are not copied, except the prompt flags
/// which Arrow packs into bits). Unequal column lengths are an error.
pub fn events_record_batch(b: EventBatch) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(b.time_ms)),
        Arc::new(BooleanArray::from(b.prompt)),
        Arc::new(UInt32Array::from(b.bin_address)),
        Arc::new(UInt32Array::from(b.sinogram)),
        Arc::new(UInt16Array::from(b.view)),
        Arc::new(UInt16Array::from(b.bin)),
        Arc::new(Int16Array::from(b.segment)),
        Arc::new(UInt16Array::from(b.axial_pos)),
    ];
    RecordBatch::try_new(events_schema(), columns)
}

/// Moves a singles-rate batch into a record batch. Unequal column lengths are an error.
pub fn singles_record_batch(b: SinglesRateBatch) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(b.time_ms)),
        Arc::new(UInt16Array::from(b.block)),
        Arc::new(UInt32Array::from(b.raw_rate)),
        Arc::new(Float64Array::from(b.scaled_rate_hz)),
    ];
    RecordBatch::try_new(singles_schema(), columns)
}

/// Key-value metadata describing the acquisition, from its Interfile header (`petlink.*`
/// keys; absent header fields are left out).
pub fn header_metadata(h: &PetlinkHeader) -> Vec<(String, String)> {
    let mut kv = vec![
        ("petlink.data_file", h.data_file.clone()),
        ("petlink.projections", h.projections.to_string()),
        ("petlink.views", h.views.to_string()),
        ("petlink.rings", h.rings.to_string()),
        (
            "petlink.max_ring_difference",
            h.max_ring_difference.to_string(),
        ),
        ("petlink.axial_compression", h.axial_compression.to_string()),
        ("petlink.tag_interval_ms", h.tag_interval_ms.to_string()),
        (
            "petlink.singles_scale_factor",
            h.singles_scale_factor.to_string(),
        ),
        (
            "petlink.segment_table",
            h.segment_table
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
    ];
    let mut opt = |k: &'static str, v: Option<String>| {
        if let Some(v) = v {
            kv.push((k, v));
        }
    };
    opt(
        "petlink.scanner",
        h.originating_system.as_ref().map(|s| match s.as_str() {
            "2008" => "Siemens Biograph mMR (originating system 2008)".to_string(),
            other => format!("originating system {other}"),
        }),
    );
    opt(
        "petlink.energy_window_kev",
        h.energy_window_kev.map(|(a, b)| format!("{a}-{b}")),
    );
    opt("petlink.segments", h.segments.map(|v| v.to_string()));
    opt(
        "petlink.singles_blocks",
        h.singles_blocks.map(|v| v.to_string()),
    );
    opt(
        "petlink.singles_polling_interval_s",
        h.singles_polling_interval_s.map(|v| v.to_string()),
    );
    opt(
        "petlink.total_listmode_words",
        h.total_listmode_words.map(|v| v.to_string()),
    );
    opt("petlink.time_sync", h.time_sync.map(|v| v.to_string()));
    opt(
        "petlink.image_duration_s",
        h.image_duration_s.map(|v| v.to_string()),
    );
    opt("petlink.study_date", h.study_date.clone());
    opt("petlink.study_time", h.study_time.clone());
    opt("petlink.isotope", h.isotope.clone());
    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_map_and_unequal_columns_are_an_error() {
        let mut e = EventBatch::with_capacity(2);
        e.time_ms.extend([1, 2]);
        e.prompt.extend([true, false]);
        e.bin_address.extend([3, 4]);
        e.sinogram.extend([0, 0]);
        e.view.extend([0, 0]);
        e.bin.extend([3, 4]);
        e.segment.extend([0, 0]);
        e.axial_pos.extend([0, 0]);
        assert_eq!(events_record_batch(e.clone()).unwrap().num_rows(), 2);
        e.bin.pop();
        assert!(events_record_batch(e).is_err());
        let s = SinglesRateBatch {
            time_ms: vec![1],
            block: vec![2],
            raw_rate: vec![3],
            scaled_rate_hz: vec![24.0],
        };
        assert_eq!(singles_record_batch(s).unwrap().num_columns(), 4);
    }
}
