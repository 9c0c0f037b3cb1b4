//! Processor for ultrasound RF event chunks (payload format 4, docs/ultrasound.md): decodes
//! each chunk, reassembles events bit-exact ([`RfReassembler`]), fits the board's tx tick
//! clock from its clock-sync control records ([`ClockFit`]) to give every event a corrected
//! transmit time, and hands complete events to a writer thread that stores them in
//! `rf_events-sourceN.parquet` (uncompressed binary blobs). At the end it writes
//! `us_sequence-sourceN.parquet` (from the `[ultrasound]` sequence file) and
//! `clock_segments-sourceN.parquet` (the fitted clock, so a replay or an analysis can redo
//! the correction from the stored raw `tx_ticks`).
//!
//! An event is never written half-filled: one still incomplete when `max_open_events` newer
//! events push it out, or at the end of the run, is counted under `us_incomplete_events`.
//! The corrected time of an event uses the clock fit as it stands when the event completes
//! (sync records arrive in sequence order with the data, so the open segment is extrapolated
//! by at most one sync interval; `time_extrapolated` marks it).

use super::{StreamContext, StreamFigure, StreamProcessor, StreamReport};
use anyhow::{Context, Result, anyhow};
use crossbeam_channel::{Receiver, Sender, bounded};
use scandaq_core::LossCounts;
use scandaq_core::LossReason;
use scandaq_core::clock_fit::{
    ClockFit, ClockFitConfig, CounterUnwrapper, SegmentStart, SyncPoint,
};
use scandaq_decoders::control::{ControlRecord, decode_control};
use scandaq_decoders::rf::{DEFAULT_MAX_OPEN_EVENTS, RfEvent, RfReassembler};
use scandaq_sinks::meg_tables::{CLOCK_SEGMENTS_TABLE, clock_segments_batch, file_name};
use scandaq_sinks::rf_tables::{
    RF_EVENTS_TABLE, RF_SCHEMA_VERSION, RfEventRow, RfEventsBuilder, US_SEQUENCE_TABLE, UsSequence,
    rf_events_schema, rf_events_write_options, us_sequence_batch, us_sequence_schema,
};
use scandaq_sinks::{FileRecord, ParquetTableWriter, WriteOptions};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Instant;

/// Default largest event accepted, bytes of samples (256 MiB).
pub const DEFAULT_MAX_EVENT_BYTES: u64 = 256 << 20;
/// Default payload bytes per `rf_events` record batch handed to the Parquet writer.
pub const DEFAULT_BATCH_BYTES: usize = 8 << 20;
/// Complete events queued for the writer thread at most (back-pressure beyond).
const WRITER_QUEUE_EVENTS: usize = 256;

/// Settings from the run configuration's `[ultrasound]` section (also stored, with the
/// sequence's text, in a raw archive's metadata so a replay uses them).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UsSettings {
    /// Transmit sequence file (`us_sequence.json`, as fpga-sim writes it): stored as the
    /// `us_sequence` table; its `tick_rate_hz` is the default tick rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence_file: Option<PathBuf>,
    /// The sequence file's text itself (what a raw archive stores; read from
    /// `sequence_file` by [`UsSettings::resolve`]); used instead of the file when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence_json: Option<String>,
    /// Nominal rate of the boards' `tx_ticks` counter, Hz (used until two clock-sync
    /// records give the fitted rate).
    pub tick_rate_hz: Option<f64>,
    /// Events kept open for reassembly at most [default: 64].
    pub max_open_events: Option<usize>,
    /// Largest event accepted, bytes of samples [default: 256 MiB].
    pub max_event_bytes: Option<u64>,
    /// Payload bytes per record batch written [default: 8 MiB].
    pub batch_bytes: Option<usize>,
}

impl UsSettings {
    /// Checks the settings and reads the sequence file into `sequence_json`, so a bad file
    /// stops the run before it starts and the settings can travel with a raw archive.
    pub fn resolve(&self) -> Result<Self> {
        let mut out = self.clone();
        if out.sequence_json.is_none()
            && let Some(path) = &self.sequence_file
        {
            out.sequence_json = Some(std::fs::read_to_string(path).map_err(|e| {
                anyhow!(
                    "[ultrasound] sequence_file = {}: cannot read it ({e}); give the path of \
                     the us_sequence.json the front end uses (fpga-sim --preset us --out DIR \
                     writes DIR/us_sequence.json) or remove the key",
                    path.display()
                )
            })?);
        }
        out.sequence()?;
        if let Some(r) = self.tick_rate_hz
            && (!r.is_finite() || r <= 0.0)
        {
            anyhow::bail!("[ultrasound] tick_rate_hz = {r}: must be a positive rate in Hz");
        }
        if self.max_open_events == Some(0) {
            anyhow::bail!("[ultrasound] max_open_events = 0: must be at least 1 (default 64)");
        }
        Ok(out)
    }

    /// The transmit sequence from `sequence_json` (or `sequence_file`), `None` without one.
    fn sequence(&self) -> Result<Option<UsSequence>> {
        let origin = match &self.sequence_file {
            Some(p) => format!("[ultrasound] sequence_file = {}", p.display()),
            None => "[ultrasound] sequence_json (the sequence stored in the raw archive)".into(),
        };
        let text = match (&self.sequence_json, &self.sequence_file) {
            (Some(t), _) => t.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("{origin}: cannot read it"))?,
            (None, None) => return Ok(None),
        };
        UsSequence::from_json(&text)
            .map(Some)
            .map_err(|e| anyhow!("{origin}: {e} (see docs/ultrasound.md for the format)"))
    }
}

/// A complete event on its way to the writer thread.
struct Record {
    row: RfEventRow,
    samples: Vec<u8>,
}

struct UsProcessor {
    source_id: u32,
    run_dir: PathBuf,
    metadata: Vec<(String, String)>,
    sequence: Option<UsSequence>,
    reassembler: RfReassembler,
    unwrapper: CounterUnwrapper,
    fit: ClockFit,
    to_writer: Option<Sender<Record>>,
    writer: Option<JoinHandle<Result<FileRecord>>>,
    losses: LossCounts,
    payloads: u64,
    sync_records: u64,
    events_without_time: u64,
    events_unknown_tx: u64,
    /// Tick-counter jumps (a board clock reset: backwards; forwards: a glitch).
    counter_jumps: u64,
    jump_warnings: Vec<String>,
    started: Instant,
    /// Dashboard figures: rates in tx time, per-element amplitude (`super::panel`).
    dashboard: super::panel::UsPanel,
}

/// Makes the processor for one stream.
pub fn new_processor(ctx: StreamContext) -> Result<Box<dyn StreamProcessor>> {
    let s = &ctx.settings.ultrasound;
    let sequence = s.sequence()?;
    let tick_rate = s.tick_rate_hz.or(sequence.as_ref().map(|q| q.tick_rate_hz));
    if let Some(r) = tick_rate
        && (!r.is_finite() || r <= 0.0)
    {
        anyhow::bail!("ultrasound.tick_rate_hz = {r}: must be a positive rate in Hz");
    }
    let mut metadata = ctx.metadata.clone();
    metadata.push(("scandaq.table".into(), RF_EVENTS_TABLE.into()));
    metadata.push(("scandaq.schema_version".into(), RF_SCHEMA_VERSION.into()));
    metadata.push(("scandaq.stream".into(), ctx.source_id.to_string()));
    if let Some(q) = &sequence {
        metadata.push((
            "scandaq.us_sequence".into(),
            serde_json::to_string(q).unwrap_or_default(),
        ));
    }
    let batch_bytes = s.batch_bytes.unwrap_or(DEFAULT_BATCH_BYTES).max(1);
    let writer = ParquetTableWriter::create(
        &ctx.run_dir,
        &file_name(RF_EVENTS_TABLE, ctx.source_id),
        rf_events_schema(),
        &rf_events_write_options(),
        metadata,
    )
    .with_context(|| format!("creating the rf_events table of stream {}", ctx.source_id))?;
    let (tx, rx) = bounded::<Record>(WRITER_QUEUE_EVENTS);
    let handle = std::thread::Builder::new()
        .name(format!("us-writer-{}", ctx.source_id))
        .spawn(move || write_events(writer, rx, batch_bytes))
        .context("starting the rf_events writer thread")?;
    let fit = ClockFit::new(ClockFitConfig {
        nominal_ns_per_tick: tick_rate.map(|r| 1e9 / r),
        ..ClockFitConfig::default()
    });
    // A 64-bit tick counter: forward steps up to a day are plausible, backwards a second.
    let per_s = tick_rate.unwrap_or(1e9) as u64;
    Ok(Box::new(UsProcessor {
        source_id: ctx.source_id,
        run_dir: ctx.run_dir,
        metadata: ctx.metadata,
        sequence,
        reassembler: RfReassembler::new(
            s.max_open_events.unwrap_or(DEFAULT_MAX_OPEN_EVENTS),
            s.max_event_bytes.unwrap_or(DEFAULT_MAX_EVENT_BYTES),
        ),
        unwrapper: CounterUnwrapper::u64_counter(per_s.saturating_mul(86_400), per_s),
        fit,
        to_writer: Some(tx),
        writer: Some(handle),
        losses: LossCounts::default(),
        payloads: 0,
        sync_records: 0,
        events_without_time: 0,
        events_unknown_tx: 0,
        counter_jumps: 0,
        jump_warnings: Vec::new(),
        started: Instant::now(),
        dashboard: Default::default(),
    }))
}

/// The writer thread: batches rows until `batch_bytes` of payload, writes, commits at the end.
fn write_events(
    mut writer: ParquetTableWriter,
    rx: Receiver<Record>,
    batch_bytes: usize,
) -> Result<FileRecord> {
    let mut builder = RfEventsBuilder::with_capacity(64, batch_bytes + (1 << 20));
    for r in rx {
        builder.push(&r.row, &r.samples)?;
        drop(r.samples);
        if builder.payload_bytes() >= batch_bytes {
            writer.write(&builder.finish()?)?;
        }
    }
    if builder.rows() > 0 {
        writer.write(&builder.finish()?)?;
    }
    Ok(writer.commit()?)
}

impl UsProcessor {
    /// Counts a tick-counter jump (seen in an event's `tx_ticks` or a sync record) and says
    /// what it means for the times.
    fn on_counter_jump(&mut self, j: &scandaq_core::clock_fit::CounterJump, seen_in: &str) {
        self.counter_jumps += 1;
        let what = match j.kind {
            scandaq_core::clock_fit::JumpKind::Backward => "went back (a board clock reset)",
            scandaq_core::clock_fit::JumpKind::Forward => "jumped forward",
        };
        let times = if seen_in.starts_with("event") {
            "events until the next clock-sync record have no corrected time, then times \
             restart with a new clock segment"
        } else {
            "times restart with a new clock segment at this record"
        };
        self.jump_warnings.push(format!(
            "ultrasound stream {}: tx tick counter {what} from {} to {} in {seen_in} (counter \
             segment {}): {times}",
            self.source_id, j.raw_before, j.raw_after, j.new_segment
        ));
    }

    fn store(&mut self, ev: RfEvent) -> Result<()> {
        let h = ev.header;
        let u = self.unwrapper.push(h.tx_ticks);
        if let Some(j) = u.jump {
            self.on_counter_jump(&j, &format!("event frame {} tx {}", h.frame_no, h.tx_index));
        }
        let time = match self.fit.last_counter_segment() {
            Some(seg) if seg == u.segment => self.fit.time(u.tick, 0.0),
            _ => None,
        };
        if time.is_none() {
            self.events_without_time += 1;
        }
        if let Some(q) = &self.sequence
            && !q.transmits.iter().any(|t| t.tx_index == h.tx_index)
        {
            self.events_unknown_tx += 1;
        }
        self.dashboard.push_event(
            h.frame_no,
            h.tx_index,
            time.map(|t| t.ns),
            usize::from(h.n_channels),
            &ev.samples,
        );
        let record = Record {
            row: RfEventRow {
                stream: self.source_id,
                frame_no: h.frame_no,
                tx_index: h.tx_index,
                tx_ticks: h.tx_ticks,
                tick: u.tick,
                counter_segment: u.segment,
                t_tx_ns: time.map(|t| t.ns),
                time_extrapolated: time.is_none_or(|t| t.extrapolated),
                rx_offset_ns: h.rx_offset_ns,
                n_channels: h.n_channels,
                n_samples: h.n_samples,
                sample_rate_hz: h.sample_rate_hz,
            },
            samples: ev.samples,
        };
        let sent = self.to_writer.as_ref().map(|tx| tx.send(record));
        if !matches!(sent, Some(Ok(()))) {
            // The writer stopped: its error says why.
            return Err(self.writer_error());
        }
        Ok(())
    }

    fn writer_error(&mut self) -> anyhow::Error {
        self.to_writer = None;
        match self.writer.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => e.context("writing rf_events"),
            Some(Err(_)) => anyhow!("the rf_events writer thread panicked"),
            _ => anyhow!("the rf_events writer stopped"),
        }
    }

    fn small_table(
        &self,
        table: &str,
        schema: arrow_schema::SchemaRef,
        batch: arrow_array::RecordBatch,
    ) -> Result<FileRecord> {
        let mut metadata = self.metadata.clone();
        metadata.push(("scandaq.table".into(), table.into()));
        metadata.push(("scandaq.schema_version".into(), RF_SCHEMA_VERSION.into()));
        metadata.push(("scandaq.stream".into(), self.source_id.to_string()));
        let mut w = ParquetTableWriter::create(
            &self.run_dir,
            &file_name(table, self.source_id),
            schema,
            &WriteOptions::default(),
            metadata,
        )?;
        w.write(&batch)?;
        Ok(w.commit()?)
    }
}

impl StreamProcessor for UsProcessor {
    fn payload(&mut self, payload: &[u8]) -> Result<()> {
        self.payloads += 1;
        let mut done = None;
        self.reassembler.push(payload, &mut |e| done = Some(e));
        match done {
            Some(ev) => self.store(ev),
            None => Ok(()),
        }
    }

    fn control(&mut self, payload: &[u8]) -> Result<()> {
        match decode_control(payload) {
            Ok(ControlRecord::ClockSync(s)) => {
                self.sync_records += 1;
                let u = self.unwrapper.push(s.device_counter);
                if let Some(j) = u.jump {
                    self.on_counter_jump(&j, "a clock-sync record");
                }
                let p = SyncPoint {
                    tick: u.tick,
                    frac: f64::from(s.device_fraction) / 4_294_967_296.0,
                    reference_ns: s.reference_ns,
                };
                self.fit.add(p, u.segment);
            }
            Ok(ControlRecord::Unknown(_)) => {
                self.losses.add(LossReason::ControlUnknownKindPackets, 1)
            }
            Err(e) => self.losses.add(e.reason(), 1),
        }
        Ok(())
    }

    fn figures(&self) -> Vec<StreamFigure> {
        let c = self.reassembler.counts();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        vec![
            (
                "events/s".into(),
                c.events_complete as f64 / secs,
                "Hz".into(),
            ),
            (
                "RF MB/s".into(),
                c.event_bytes as f64 / secs / 1e6,
                "MB/s".into(),
            ),
            (
                "incomplete events".into(),
                c.events_incomplete as f64,
                String::new(),
            ),
        ]
    }

    fn panel(&self) -> Option<scandaq_core::snapshot::StreamFigures> {
        let incomplete = self.reassembler.counts().events_incomplete;
        Some(scandaq_core::snapshot::StreamFigures::Ultrasound(
            self.dashboard.snapshot(incomplete),
        ))
    }

    fn finish(mut self: Box<Self>) -> Result<StreamReport> {
        self.reassembler.finish();
        self.to_writer = None;
        let events_file = match self.writer.take().map(|h| h.join()) {
            Some(Ok(r)) => r.context("writing rf_events")?,
            Some(Err(_)) => anyhow::bail!("the rf_events writer thread panicked"),
            None => anyhow::bail!("the rf_events writer had already stopped"),
        };
        let mut report = StreamReport::default();
        report.files.push(events_file);
        if let Some(q) = &self.sequence {
            let batch = us_sequence_batch(self.source_id, q)?;
            report
                .files
                .push(self.small_table(US_SEQUENCE_TABLE, us_sequence_schema(), batch)?);
        }
        let segments = self.fit.segments();
        let batch = clock_segments_batch(self.source_id, &segments)?;
        report.files.push(self.small_table(
            CLOCK_SEGMENTS_TABLE,
            scandaq_sinks::meg_tables::clock_segments_schema(),
            batch,
        )?);
        for s in &segments {
            if matches!(s.start, SegmentStart::ClockJump | SegmentStart::CounterJump) {
                report.warnings.push(format!(
                    "ultrasound stream {}: board clock {} at tick {} (a new clock segment)",
                    self.source_id,
                    s.start.as_str(),
                    s.first_tick
                ));
            }
        }
        report.warnings.append(&mut self.jump_warnings);
        if self.events_without_time > 0 {
            report.warnings.push(format!(
                "ultrasound stream {}: {} events stored without a corrected time (no clock-sync \
                 record and no tick_rate_hz yet)",
                self.source_id, self.events_without_time
            ));
        }
        let c = self.reassembler.counts().clone();
        let id = self.source_id;
        for (k, v) in [
            ("packets", self.payloads),
            ("chunks", c.chunks),
            ("events_complete", c.events_complete),
            ("events_incomplete", c.events_incomplete),
            ("rf_bytes", c.event_bytes),
            ("sync_records", self.sync_records),
            ("clock_segments", segments.len() as u64),
            ("events_without_time", self.events_without_time),
            ("events_unknown_tx_index", self.events_unknown_tx),
            ("counter_jumps", self.counter_jumps),
        ] {
            report.counts.insert(format!("us.{id}.{k}"), v);
        }
        report.losses.merge(self.reassembler.losses());
        report.losses.merge(&self.losses);
        report.panel = StreamProcessor::panel(&*self);
        Ok(report)
    }
}
