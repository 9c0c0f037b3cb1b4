//! The ultrasound tables (docs/ultrasound.md): `rf_events` (one row per complete RF event,
//! the i16 sample matrix stored bit-exact as an uncompressed binary blob) and `us_sequence`
//! (the transmit sequence the events' `tx_index` points into), plus [`UsSequence`], the
//! sequence file (`us_sequence.json`) that fpga-sim writes and a run's `[ultrasound]`
//! configuration names. The stream's `clock_segments` table has the MEG streams' schema
//! ([`crate::meg_tables::clock_segments_schema`]).
//!
//! Times are `i64` ns of the reference clock (see [`crate::meg_tables`] for why not `f64`).

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};

use crate::WriteOptions;

/// Schema version of the ultrasound tables.
pub const RF_SCHEMA_VERSION: &str = "2";
/// Table name of the events table.
pub const RF_EVENTS_TABLE: &str = "rf_events";
/// Table name of the transmit-sequence table.
pub const US_SEQUENCE_TABLE: &str = "us_sequence";
/// The only sample type of payload format 4.
pub const DTYPE_INT16: &str = "int16";

/// One transmit of the sequence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transmit {
    /// Index the events' `tx_index` refers to.
    pub tx_index: u16,
    /// Kind of transmit: `plane_wave` (steered by `angle_deg`) or `focused`.
    pub kind: String,
    /// Steering angle from the array normal, degrees (positive towards +x, higher elements).
    pub angle_deg: f64,
    /// Focal depth for focused transmits, m (None for plane waves).
    #[serde(default)]
    pub focus_m: Option<f64>,
}

/// A transmit sequence and the probe it drives (`us_sequence.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsSequence {
    /// Probe name.
    pub probe: String,
    /// Array elements (= receive channels).
    pub n_elements: u16,
    /// Element pitch, m.
    pub pitch_m: f64,
    /// Centre frequency of the transmit pulse, Hz.
    pub center_frequency_hz: f64,
    /// Receive sampling rate, Hz.
    pub sample_rate_hz: u32,
    /// Samples per channel per event.
    pub n_samples: u32,
    /// First received sample relative to transmit, ns.
    pub rx_offset_ns: i32,
    /// Speed of sound assumed by the sequence, m/s.
    pub speed_of_sound_m_s: f64,
    /// Rate of the board's tx_ticks counter, Hz (nominal).
    pub tick_rate_hz: f64,
    /// Frames per second (a frame = one pass through `transmits`).
    pub frame_rate_hz: f64,
    /// The transmits, in firing order within a frame.
    pub transmits: Vec<Transmit>,
}

impl UsSequence {
    /// Parses and checks a sequence file's JSON.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let s: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    /// Checks the values (positive rates, unique tx indices).
    pub fn validate(&self) -> Result<(), String> {
        if self.transmits.is_empty() {
            return Err("transmits: the sequence needs at least one transmit".into());
        }
        for (name, v) in [
            ("pitch_m", self.pitch_m),
            ("center_frequency_hz", self.center_frequency_hz),
            ("speed_of_sound_m_s", self.speed_of_sound_m_s),
            ("tick_rate_hz", self.tick_rate_hz),
            ("frame_rate_hz", self.frame_rate_hz),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(format!("{name} = {v}: must be a positive number"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.transmits {
            if !seen.insert(t.tx_index) {
                return Err(format!("transmits: tx_index {} appears twice", t.tx_index));
            }
        }
        Ok(())
    }
}

/// Schema of `rf_events`.
pub fn rf_events_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("stream", DataType::UInt32, false),
            Field::new("frame_no", DataType::UInt64, false),
            Field::new("tx_index", DataType::UInt16, false),
            Field::new("tx_ticks", DataType::UInt64, false),
            Field::new("tick", DataType::Int64, false),
            Field::new("counter_segment", DataType::UInt32, false),
            Field::new("t_tx_ns", DataType::Int64, true),
            Field::new("time_extrapolated", DataType::Boolean, false),
            Field::new("rx_offset_ns", DataType::Int32, false),
            Field::new("n_channels", DataType::UInt16, false),
            Field::new("n_samples", DataType::UInt32, false),
            Field::new("sample_rate_hz", DataType::UInt32, false),
            Field::new("dtype", DataType::Utf8, false),
            Field::new("payload", DataType::Binary, false),
        ]))
    })
    .clone()
}

/// Schema of `us_sequence`.
pub fn us_sequence_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let f = |n: &str| Field::new(n, DataType::Float64, false);
        Arc::new(Schema::new(vec![
            Field::new("stream", DataType::UInt32, false),
            Field::new("tx_index", DataType::UInt16, false),
            Field::new("kind", DataType::Utf8, false),
            f("angle_deg"),
            Field::new("focus_m", DataType::Float64, true),
            Field::new("probe", DataType::Utf8, false),
            Field::new("n_elements", DataType::UInt16, false),
            f("pitch_m"),
            f("center_frequency_hz"),
            Field::new("sample_rate_hz", DataType::UInt32, false),
            Field::new("n_samples", DataType::UInt32, false),
            Field::new("rx_offset_ns", DataType::Int32, false),
            f("speed_of_sound_m_s"),
            f("frame_rate_hz"),
        ]))
    })
    .clone()
}

/// Layout of `rf_events`: no compression at all (RF noise does not compress, and zstd would
/// cap the rate), plain blobs, delta-coded frame numbers and times, row groups cut at 64 MiB.
pub fn rf_events_write_options() -> WriteOptions {
    WriteOptions {
        compression: crate::Compression::None,
        row_group_rows: 1 << 16,
        row_group_bytes: 64 << 20,
        parallel_columns: false,
        parallel_row_groups: false,
        write_batch_rows: 1024,
        delta_columns: vec!["frame_no", "tx_ticks", "tick", "t_tx_ns"],
        byte_stream_split_columns: Vec::new(),
        dictionary_columns: vec!["dtype"],
        commit_interval: Some(crate::parquet_table::DEFAULT_COMMIT_INTERVAL),
        ..WriteOptions::default()
    }
}

/// One `rf_events` row (the payload is moved into the batch, not copied per row).
#[derive(Clone, Debug, PartialEq)]
pub struct RfEventRow {
    /// Stream (transport source_id).
    pub stream: u32,
    /// Frame number.
    pub frame_no: u64,
    /// Index into the transmit sequence.
    pub tx_index: u16,
    /// Raw device counter at transmit.
    pub tx_ticks: u64,
    /// The counter unwrapped, in the tick numbering of `clock_segments` (first_tick,
    /// last_tick).
    pub tick: i64,
    /// Counter segment of `tick` (a new one after a counter reset or jump): the
    /// `clock_segments` rows with this `counter_segment` time it.
    pub counter_segment: u32,
    /// Corrected transmit time, ns of the reference clock (None before any clock fit).
    pub t_tx_ns: Option<i64>,
    /// True when `t_tx_ns` was extrapolated beyond the fitted sync points.
    pub time_extrapolated: bool,
    /// First received sample relative to transmit, ns.
    pub rx_offset_ns: i32,
    /// Channels.
    pub n_channels: u16,
    /// Samples per channel.
    pub n_samples: u32,
    /// Sampling rate, Hz.
    pub sample_rate_hz: u32,
}

/// Accumulates `rf_events` rows and their payloads into one record batch.
#[derive(Default)]
pub struct RfEventsBuilder {
    stream: UInt32Builder,
    frame_no: UInt64Builder,
    tx_index: UInt16Builder,
    tx_ticks: UInt64Builder,
    tick: Int64Builder,
    counter_segment: UInt32Builder,
    t_tx_ns: Int64Builder,
    extrapolated: BooleanBuilder,
    rx_offset_ns: Int32Builder,
    n_channels: UInt16Builder,
    n_samples: UInt32Builder,
    sample_rate_hz: UInt32Builder,
    dtype: StringBuilder,
    payload: BinaryBuilder,
    payload_bytes: usize,
    rows: usize,
    /// Rows and payload bytes reserved for each batch.
    capacity: (usize, usize),
}

impl RfEventsBuilder {
    /// An empty builder whose payload buffer starts with room for `payload_bytes` (one
    /// batch's worth: no reallocation while it fills).
    pub fn with_capacity(rows: usize, payload_bytes: usize) -> Self {
        Self {
            payload: BinaryBuilder::with_capacity(rows, payload_bytes),
            capacity: (rows, payload_bytes),
            ..Self::default()
        }
    }

    /// Appends a row and its payload (copied once into the batch's value buffer). Fails when
    /// the batch's payloads would exceed 2 GiB (cut batches smaller).
    pub fn push(&mut self, r: &RfEventRow, payload: &[u8]) -> Result<(), ArrowError> {
        if i32::try_from(self.payload_bytes + payload.len()).is_err() {
            return Err(ArrowError::InvalidArgumentError(
                "rf_events batch payloads exceed 2 GiB; flush smaller batches".into(),
            ));
        }
        self.stream.append_value(r.stream);
        self.frame_no.append_value(r.frame_no);
        self.tx_index.append_value(r.tx_index);
        self.tx_ticks.append_value(r.tx_ticks);
        self.tick.append_value(r.tick);
        self.counter_segment.append_value(r.counter_segment);
        self.t_tx_ns.append_option(r.t_tx_ns);
        self.extrapolated.append_value(r.time_extrapolated);
        self.rx_offset_ns.append_value(r.rx_offset_ns);
        self.n_channels.append_value(r.n_channels);
        self.n_samples.append_value(r.n_samples);
        self.sample_rate_hz.append_value(r.sample_rate_hz);
        self.dtype.append_value(DTYPE_INT16);
        self.payload.append_value(payload);
        self.payload_bytes += payload.len();
        self.rows += 1;
        Ok(())
    }

    /// Rows buffered.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Payload bytes buffered.
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Takes the buffered rows as a batch (the builder is empty afterwards).
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let fresh = BinaryBuilder::with_capacity(self.capacity.0, self.capacity.1);
        let payload = std::mem::replace(&mut self.payload, fresh).finish();
        self.payload_bytes = 0;
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.stream.finish()),
            Arc::new(self.frame_no.finish()),
            Arc::new(self.tx_index.finish()),
            Arc::new(self.tx_ticks.finish()),
            Arc::new(self.tick.finish()),
            Arc::new(self.counter_segment.finish()),
            Arc::new(self.t_tx_ns.finish()),
            Arc::new(self.extrapolated.finish()),
            Arc::new(self.rx_offset_ns.finish()),
            Arc::new(self.n_channels.finish()),
            Arc::new(self.n_samples.finish()),
            Arc::new(self.sample_rate_hz.finish()),
            Arc::new(self.dtype.finish()),
            Arc::new(payload),
        ];
        RecordBatch::try_new(rf_events_schema(), columns)
    }
}

/// Builds the `us_sequence` batch of one stream.
pub fn us_sequence_batch(stream: u32, seq: &UsSequence) -> Result<RecordBatch, ArrowError> {
    let n = seq.transmits.len();
    let mut kind = StringBuilder::new();
    let mut probe = StringBuilder::new();
    let mut focus = Float64Builder::new();
    let rep_f64 = |v: f64| -> ArrayRef { Arc::new(arrow_array::Float64Array::from(vec![v; n])) };
    for t in &seq.transmits {
        kind.append_value(&t.kind);
        probe.append_value(&seq.probe);
        focus.append_option(t.focus_m);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(arrow_array::UInt32Array::from(vec![stream; n])),
        Arc::new(arrow_array::UInt16Array::from(
            seq.transmits.iter().map(|t| t.tx_index).collect::<Vec<_>>(),
        )),
        Arc::new(kind.finish()),
        Arc::new(arrow_array::Float64Array::from(
            seq.transmits
                .iter()
                .map(|t| t.angle_deg)
                .collect::<Vec<_>>(),
        )),
        Arc::new(focus.finish()),
        Arc::new(probe.finish()),
        Arc::new(arrow_array::UInt16Array::from(vec![seq.n_elements; n])),
        rep_f64(seq.pitch_m),
        rep_f64(seq.center_frequency_hz),
        Arc::new(arrow_array::UInt32Array::from(vec![seq.sample_rate_hz; n])),
        Arc::new(arrow_array::UInt32Array::from(vec![seq.n_samples; n])),
        Arc::new(arrow_array::Int32Array::from(vec![seq.rx_offset_ns; n])),
        rep_f64(seq.speed_of_sound_m_s),
        rep_f64(seq.frame_rate_hz),
    ];
    RecordBatch::try_new(us_sequence_schema(), columns)
}
