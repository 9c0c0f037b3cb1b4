//! The OPM-MEG tables (docs/meg.md): `meg_blocks` (one row per sample block, payload stored
//! bit-exact as the little-endian bytes received), `meg_channels` (the stream's channel table),
//! `triggers` (edges of the trigger channel) and `clock_segments` (the fitted board clock, so a
//! replay or an analysis can redo the time correction). Schemas, encodings and row builders.
//!
//! Times are `i64` ns of the reference clock (Unix epoch when the reference is PTP/GPS): an
//! `f64` has a 53-bit mantissa, so epoch nanoseconds (~2^60.6) would be rounded to 256 ns; an
//! integer keeps 1 ns, far below the 1 µs the time correction is held to.

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, UInt8Builder,
    UInt16Builder, UInt32Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use std::sync::{Arc, OnceLock};

use crate::WriteOptions;

/// Schema version of the MEG tables.
pub const MEG_SCHEMA_VERSION: &str = "1";
/// Table name of the blocks table.
pub const BLOCKS_TABLE: &str = "meg_blocks";
/// Table name of the channels table.
pub const CHANNELS_TABLE: &str = "meg_channels";
/// Table name of the triggers table.
pub const TRIGGERS_TABLE: &str = "triggers";
/// Table name of the clock-segments table.
pub const CLOCK_SEGMENTS_TABLE: &str = "clock_segments";

/// `meg_blocks.flags` bits.
pub mod block_flags {
    /// The last channel is a trigger bitmask (from the device).
    pub const TRIGGER_CHANNEL: u32 = 1 << 0;
    /// Some samples clipped (from the device).
    pub const CLIPPED: u32 = 1 << 1;
    /// The corrected time is extrapolated (no sync points on both sides of the block, or
    /// none at all: then `t_first_ns` is null).
    pub const TIME_EXTRAPOLATED: u32 = 1 << 8;
    /// Samples are missing right before this block (a gap in the sample index).
    pub const AFTER_GAP: u32 = 1 << 9;
    /// The device counter jumped at this block (new counter segment; the index continues
    /// right after the previous block, the true gap is unknown).
    pub const COUNTER_JUMP: u32 = 1 << 10;
    /// The block's shape differs from the channel table (channels not described).
    pub const SHAPE_MISMATCH: u32 = 1 << 11;
}

/// File name of a table for one stream.
pub fn file_name(table: &str, source_id: u32) -> String {
    format!("{table}-source{source_id}.parquet")
}

/// Schema of `meg_blocks`.
pub fn blocks_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("stream", DataType::UInt32, false),
            Field::new("first_sample", DataType::Int64, false),
            Field::new("counter", DataType::UInt32, false),
            Field::new("counter_segment", DataType::UInt32, false),
            Field::new("n_samples", DataType::UInt16, false),
            Field::new("n_channels", DataType::UInt16, false),
            Field::new("t_first_ns", DataType::Int64, true),
            Field::new("rate_hz", DataType::Float64, true),
            Field::new("flags", DataType::UInt32, false),
            Field::new("payload", DataType::Binary, false),
        ]))
    })
    .clone()
}

/// Schema of `meg_channels`.
pub fn channels_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let f = |n: &str| Field::new(n, DataType::Float64, false);
        Arc::new(Schema::new(vec![
            Field::new("stream", DataType::UInt32, false),
            Field::new("index", DataType::UInt16, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            f("cal"),
            f("range"),
            Field::new("unit", DataType::Utf8, false),
            Field::new("delay_ps", DataType::Int64, false),
            f("x_m"),
            f("y_m"),
            f("z_m"),
            f("ox"),
            f("oy"),
            f("oz"),
        ]))
    })
    .clone()
}

/// Schema of `triggers`.
pub fn triggers_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("stream", DataType::UInt32, false),
            Field::new("sample", DataType::Int64, false),
            Field::new("t_ns", DataType::Int64, true),
            Field::new("bit", DataType::UInt8, false),
            Field::new("rising", DataType::Boolean, false),
            Field::new("extrapolated", DataType::Boolean, false),
        ]))
    })
    .clone()
}

/// Schema of `clock_segments`.
pub fn clock_segments_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("stream", DataType::UInt32, false),
            Field::new("segment", DataType::UInt32, false),
            Field::new("counter_segment", DataType::UInt32, false),
            Field::new("first_tick", DataType::Int64, false),
            Field::new("last_tick", DataType::Int64, false),
            Field::new("offset_ns", DataType::Int64, false),
            Field::new("ns_per_tick", DataType::Float64, false),
            Field::new("rate_hz", DataType::Float64, false),
            Field::new("rms_residual_ns", DataType::Float64, false),
            Field::new("max_residual_ns", DataType::Float64, false),
            Field::new("n_points", DataType::UInt32, false),
            Field::new("start", DataType::Utf8, false),
        ]))
    })
    .clone()
}

/// Encodings of `meg_blocks`: delta for the monotone index and time, zstd; the payload is
/// plain (noise does not compress much, zstd level 1 keeps it cheap). Row groups are cut at
/// 64 MiB of buffered bytes.
pub fn blocks_write_options() -> WriteOptions {
    WriteOptions {
        delta_columns: vec!["first_sample", "t_first_ns"],
        row_group_bytes: 64 << 20,
        ..WriteOptions::default()
    }
}

/// Encodings of the small tables.
pub fn small_write_options() -> WriteOptions {
    WriteOptions::default()
}

/// One `meg_blocks` row.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockRow<'a> {
    /// Stream (transport source_id).
    pub stream: u32,
    /// Unwrapped index of the first sample.
    pub first_sample: i64,
    /// Raw device counter of the first sample.
    pub counter: u32,
    /// Counter segment.
    pub counter_segment: u32,
    /// Samples.
    pub n_samples: u16,
    /// Channels.
    pub n_channels: u16,
    /// Corrected time of the first sample, ns (None: no clock fit yet).
    pub t_first_ns: Option<i64>,
    /// Effective sampling rate from the clock fit, Hz.
    pub rate_hz: Option<f64>,
    /// [`block_flags`].
    pub flags: u32,
    /// Sample bytes as received (LE i32, sample-major).
    pub payload: &'a [u8],
}

/// Accumulates `meg_blocks` rows.
pub struct BlocksBuilder {
    stream: UInt32Builder,
    first_sample: Int64Builder,
    counter: UInt32Builder,
    counter_segment: UInt32Builder,
    n_samples: UInt16Builder,
    n_channels: UInt16Builder,
    t_first_ns: Int64Builder,
    rate_hz: Float64Builder,
    flags: UInt32Builder,
    payload: BinaryBuilder,
    rows: usize,
    bytes: usize,
}

impl Default for BlocksBuilder {
    fn default() -> Self {
        Self {
            stream: UInt32Builder::new(),
            first_sample: Int64Builder::new(),
            counter: UInt32Builder::new(),
            counter_segment: UInt32Builder::new(),
            n_samples: UInt16Builder::new(),
            n_channels: UInt16Builder::new(),
            t_first_ns: Int64Builder::new(),
            rate_hz: Float64Builder::new(),
            flags: UInt32Builder::new(),
            payload: BinaryBuilder::new(),
            rows: 0,
            bytes: 0,
        }
    }
}

impl BlocksBuilder {
    /// Appends a row.
    pub fn push(&mut self, r: &BlockRow<'_>) {
        self.stream.append_value(r.stream);
        self.first_sample.append_value(r.first_sample);
        self.counter.append_value(r.counter);
        self.counter_segment.append_value(r.counter_segment);
        self.n_samples.append_value(r.n_samples);
        self.n_channels.append_value(r.n_channels);
        self.t_first_ns.append_option(r.t_first_ns);
        self.rate_hz.append_option(r.rate_hz);
        self.flags.append_value(r.flags);
        self.payload.append_value(r.payload);
        self.rows += 1;
        self.bytes += r.payload.len() + 40;
    }

    /// Rows buffered.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate bytes buffered.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes the buffered rows as a record batch (the builder is left empty).
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        self.bytes = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.stream.finish()),
            Arc::new(self.first_sample.finish()),
            Arc::new(self.counter.finish()),
            Arc::new(self.counter_segment.finish()),
            Arc::new(self.n_samples.finish()),
            Arc::new(self.n_channels.finish()),
            Arc::new(self.t_first_ns.finish()),
            Arc::new(self.rate_hz.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.payload.finish()),
        ];
        RecordBatch::try_new(blocks_schema(), columns)
    }
}

/// One trigger edge.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TriggerRow {
    /// Stream.
    pub stream: u32,
    /// Unwrapped sample index of the first sample showing the new state.
    pub sample: i64,
    /// Its corrected time, ns.
    pub t_ns: Option<i64>,
    /// Bit number (0 = least significant).
    pub bit: u8,
    /// Rising (bit set) or falling.
    pub rising: bool,
    /// The time is extrapolated.
    pub extrapolated: bool,
}

/// Builds a `triggers` batch.
pub fn triggers_batch(rows: &[TriggerRow]) -> Result<RecordBatch, ArrowError> {
    let mut stream = UInt32Builder::new();
    let mut sample = Int64Builder::new();
    let mut t = Int64Builder::new();
    let mut bit = UInt8Builder::new();
    let mut rising = BooleanBuilder::new();
    let mut extra = BooleanBuilder::new();
    for r in rows {
        stream.append_value(r.stream);
        sample.append_value(r.sample);
        t.append_option(r.t_ns);
        bit.append_value(r.bit);
        rising.append_value(r.rising);
        extra.append_value(r.extrapolated);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(stream.finish()),
        Arc::new(sample.finish()),
        Arc::new(t.finish()),
        Arc::new(bit.finish()),
        Arc::new(rising.finish()),
        Arc::new(extra.finish()),
    ];
    RecordBatch::try_new(triggers_schema(), columns)
}

/// Builds the `meg_channels` batch of one stream.
pub fn channels_batch(
    stream: u32,
    channels: &[scandaq_decoders::meg::ChannelInfo],
) -> Result<RecordBatch, ArrowError> {
    let mut s = UInt32Builder::new();
    let mut idx = UInt16Builder::new();
    let mut name = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut unit = StringBuilder::new();
    let mut delay = Int64Builder::new();
    let mut f: Vec<Float64Builder> = (0..8).map(|_| Float64Builder::new()).collect();
    for (i, c) in channels.iter().enumerate() {
        s.append_value(stream);
        idx.append_value(i as u16);
        name.append_value(&c.name);
        kind.append_value(c.kind.as_str());
        unit.append_value(&c.unit);
        delay.append_value(c.delay_ps);
        let vals = [
            c.cal,
            c.range,
            c.position_m[0],
            c.position_m[1],
            c.position_m[2],
            c.orientation[0],
            c.orientation[1],
            c.orientation[2],
        ];
        for (b, v) in f.iter_mut().zip(vals) {
            b.append_value(v);
        }
    }
    let mut fl: Vec<ArrayRef> = f
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let pos: Vec<ArrayRef> = fl.split_off(2);
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(s.finish()),
        Arc::new(idx.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
    ];
    columns.extend(fl);
    columns.push(Arc::new(unit.finish()));
    columns.push(Arc::new(delay.finish()));
    columns.extend(pos);
    RecordBatch::try_new(channels_schema(), columns)
}

/// Builds the `clock_segments` batch of one stream.
pub fn clock_segments_batch(
    stream: u32,
    segments: &[scandaq_core::clock_fit::ClockSegment],
) -> Result<RecordBatch, ArrowError> {
    let mut s = UInt32Builder::new();
    let mut seg = UInt32Builder::new();
    let mut cseg = UInt32Builder::new();
    let mut first = Int64Builder::new();
    let mut last = Int64Builder::new();
    let mut offset = Int64Builder::new();
    let mut nspt = Float64Builder::new();
    let mut rate = Float64Builder::new();
    let mut rms = Float64Builder::new();
    let mut max = Float64Builder::new();
    let mut n = UInt32Builder::new();
    let mut start = StringBuilder::new();
    for (i, c) in segments.iter().enumerate() {
        s.append_value(stream);
        seg.append_value(i as u32);
        cseg.append_value(c.counter_segment);
        first.append_value(c.first_tick);
        last.append_value(c.last_tick);
        offset.append_value(c.offset_ns);
        nspt.append_value(c.ns_per_tick);
        rate.append_value(1e9 / c.ns_per_tick);
        rms.append_value(c.rms_residual_ns);
        max.append_value(c.max_residual_ns);
        n.append_value(c.n_points);
        start.append_value(c.start.as_str());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(s.finish()),
        Arc::new(seg.finish()),
        Arc::new(cseg.finish()),
        Arc::new(first.finish()),
        Arc::new(last.finish()),
        Arc::new(offset.finish()),
        Arc::new(nspt.finish()),
        Arc::new(rate.finish()),
        Arc::new(rms.finish()),
        Arc::new(max.finish()),
        Arc::new(n.finish()),
        Arc::new(start.finish()),
    ];
    RecordBatch::try_new(clock_segments_schema(), columns)
}
