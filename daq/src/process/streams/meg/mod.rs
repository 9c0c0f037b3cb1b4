//! Processor for OPM-MEG sample blocks (payload format 3, docs/meg.md): decodes each block,
//! unwraps its 32-bit sample counter, counts gaps, duplicates and counter jumps, fits the board
//! clock against the clock-sync control records ([`scandaq_core::clock_fit`]) and gives every
//! block the corrected reference time of its first sample. A block is held until a sync point
//! at or after its last sample has arrived (bounded by `max_hold_s`), so its time is
//! interpolated, not extrapolated. Rows go to `meg_blocks` and `triggers` through a writer
//! thread ([`writer`]); `meg_channels` and `clock_segments` are written at the end.

mod writer;

use super::{StreamContext, StreamFigure, StreamProcessor, StreamReport};
use anyhow::{Context, Result};
use scandaq_core::LossCounts;
use scandaq_core::LossReason;
use scandaq_core::clock_fit::{ClockFit, ClockFitConfig, CounterUnwrapper, SyncPoint};
use scandaq_decoders::control::{ControlRecord, decode_control};
use scandaq_decoders::meg::{
    ChannelInfo, FLAG_CLIPPED, FLAG_TRIGGER_CHANNEL, decode_block, parse_channel_table,
};
use scandaq_sinks::ParquetTableWriter;
use scandaq_sinks::meg_tables::{
    self, BlockRow, BlocksBuilder, CHANNELS_TABLE, CLOCK_SEGMENTS_TABLE, TriggerRow, block_flags,
};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use writer::{Batch, Writer};

/// `meg_blocks` rows per record batch sent to the writer (or fewer when they reach
/// [`BATCH_BYTES`]).
const BATCH_ROWS: usize = 4096;
/// Payload bytes per record batch.
const BATCH_BYTES: usize = 16 << 20;

fn default_max_residual_ns() -> f64 {
    ClockFitConfig::default().max_residual_ns
}
fn default_jump_residual_ns() -> f64 {
    ClockFitConfig::default().jump_residual_ns
}
fn default_max_hold_s() -> f64 {
    5.0
}
fn default_max_gap_samples() -> u64 {
    1_000_000
}
fn default_max_backward_samples() -> u64 {
    20_000
}

/// Settings from the run configuration's `[meg]` section (also stored, with the channel
/// table's text, in a raw archive's metadata so a replay uses them: docs/meg.md §5).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MegSettings {
    /// The channel table (tab-separated: name, kind, cal, range, unit, delay_ps, position,
    /// orientation; `fpga-sim --preset opm --out DIR` writes `DIR/opm_channels.tsv`). Without
    /// it `meg_channels` is not written and `scandaq export fif` cannot run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_table: Option<PathBuf>,
    /// The channel table's text itself (what a raw archive stores; read from
    /// `channel_table` by [`MegSettings::resolve`]). When set it is used and `channel_table`
    /// only records where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_table_tsv: Option<String>,
    /// Largest residual of a sync point from its clock segment's line, ns; beyond it a new
    /// segment starts (the clock drifted).
    #[serde(default = "default_max_residual_ns")]
    pub clock_max_residual_ns: f64,
    /// A sync point this far (ns) from the extrapolated line is a clock jump/reset.
    #[serde(default = "default_jump_residual_ns")]
    pub clock_jump_residual_ns: f64,
    /// Longest a block waits for the sync point after it, seconds of samples; then its time
    /// is extrapolated (flagged).
    #[serde(default = "default_max_hold_s")]
    pub max_hold_s: f64,
    /// Largest forward step of the sample counter counted as missing samples; beyond it the
    /// counter jumped (a new counter segment).
    #[serde(default = "default_max_gap_samples")]
    pub max_gap_samples: u64,
    /// How far a counter may step back (a duplicate, a sync latched in an earlier block)
    /// before it is a reset.
    #[serde(default = "default_max_backward_samples")]
    pub max_backward_samples: u64,
}

impl Default for MegSettings {
    fn default() -> Self {
        Self {
            channel_table: None,
            channel_table_tsv: None,
            clock_max_residual_ns: default_max_residual_ns(),
            clock_jump_residual_ns: default_jump_residual_ns(),
            max_hold_s: default_max_hold_s(),
            max_gap_samples: default_max_gap_samples(),
            max_backward_samples: default_max_backward_samples(),
        }
    }
}

/// Reads a channel table file.
pub fn load_channel_table(path: &Path) -> Result<Vec<ChannelInfo>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the MEG channel table {}", path.display()))?;
    parse_channel_table(&text)
        .with_context(|| format!("MEG channel table {} ([meg] channel_table)", path.display()))
}

impl MegSettings {
    /// Where the channel table comes from, for messages.
    fn table_origin(&self) -> String {
        match &self.channel_table {
            Some(p) => format!("[meg] channel_table = {}", p.display()),
            None => "[meg] channel_table_tsv (the table stored in the raw archive)".into(),
        }
    }

    /// Checks every setting and reads the channel table into `channel_table_tsv`, so a bad
    /// table or value stops the run before it starts (not at the first packet) and the
    /// resolved settings can travel with a raw archive. Errors say which key, what is wrong
    /// and how to fix it.
    pub fn resolve(&self) -> Result<Self> {
        let mut out = self.clone();
        let positive = |key: &str, v: f64| -> Result<()> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                anyhow::bail!("[meg] {key} = {v}: must be a positive number (see docs/meg.md §5)")
            }
        };
        positive("clock_max_residual_ns", self.clock_max_residual_ns)?;
        positive("clock_jump_residual_ns", self.clock_jump_residual_ns)?;
        positive("max_hold_s", self.max_hold_s)?;
        if self.clock_jump_residual_ns <= self.clock_max_residual_ns {
            anyhow::bail!(
                "[meg] clock_jump_residual_ns = {} must be larger than clock_max_residual_ns = {} \
                 (a clock step is a much larger residual than drift)",
                self.clock_jump_residual_ns,
                self.clock_max_residual_ns
            );
        }
        if self.max_gap_samples == 0 {
            anyhow::bail!("[meg] max_gap_samples = 0: must be at least 1 (default 1000000)");
        }
        if out.channel_table_tsv.is_none()
            && let Some(path) = &self.channel_table
        {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "[meg] channel_table = {}: cannot read it ({e}); give the path of the \
                     tab-separated channel table (relative paths are from the directory scandaq \
                     runs in; `fpga-sim --preset opm --out DIR` writes DIR/opm_channels.tsv), or \
                     remove the key to run without one (no meg_channels, no FIF export)",
                    path.display()
                )
            })?;
            out.channel_table_tsv = Some(text);
        }
        if out.channel_table_tsv.is_some() {
            out.channels()?;
        }
        Ok(out)
    }

    /// The channel table parsed from `channel_table_tsv` (or read from `channel_table` when
    /// the settings were not resolved); `None` without a table. Errors name the origin, the
    /// line and the column.
    pub fn channels(&self) -> Result<Option<Vec<ChannelInfo>>> {
        let text = match (&self.channel_table_tsv, &self.channel_table) {
            (Some(t), _) => t.clone(),
            (None, Some(p)) => return load_channel_table(p).map(Some),
            (None, None) => return Ok(None),
        };
        let table = parse_channel_table(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}; fix the table (columns: {}; docs/meg.md §2)",
                self.table_origin(),
                scandaq_decoders::meg::CHANNEL_TABLE_COLUMNS.join(", ")
            )
        })?;
        if table.is_empty() {
            anyhow::bail!(
                "{}: the table has a header but no channel rows; add one row per channel in \
                 block order",
                self.table_origin()
            );
        }
        for (i, c) in table.iter().enumerate() {
            if c.cal == 0.0 || c.range == 0.0 {
                anyhow::bail!(
                    "{}: channel {} ({:?}) has cal {} and range {}: both must be non-zero \
                     (physical value = raw * cal * range)",
                    self.table_origin(),
                    i,
                    c.name,
                    c.cal,
                    c.range
                );
            }
        }
        Ok(Some(table))
    }
}

/// A block waiting for the sync point after it.
struct Held {
    index: i64,
    counter: u32,
    counter_segment: u32,
    n_samples: u16,
    n_channels: u16,
    flags: u32,
    payload: Vec<u8>,
}

struct MegProcessor {
    source_id: u32,
    run_dir: PathBuf,
    metadata: Vec<(String, String)>,
    settings: MegSettings,
    channels: Option<Vec<ChannelInfo>>,
    unwrap: CounterUnwrapper,
    fit: ClockFit,
    next_index: Option<i64>,
    /// Flags to put on the next block (gap, counter jump).
    pending_flags: u32,
    held: VecDeque<Held>,
    held_samples: i64,
    hold_limit_samples: i64,
    last_trigger: Option<i32>,
    blocks: BlocksBuilder,
    triggers: Vec<TriggerRow>,
    writer: Option<Writer>,
    losses: LossCounts,
    warnings: Vec<String>,
    n_blocks: u64,
    n_samples: u64,
    n_syncs: u64,
    n_trigger_edges: u64,
    n_extrapolated: u64,
    counter_jumps: u64,
    shape_warned: bool,
    rate_hz: f64,
    /// Dashboard figures: per-channel RMS, health, mains line (`super::panel`).
    dashboard: super::panel::MegPanel,
    /// Nominal sampling rate from the block headers, Hz.
    nominal_rate_hz: f64,
    /// Corrected time of the first and the last rising trigger edge, ns, and their count.
    trigger_span: Option<(i64, i64, u64)>,
}

/// Makes the processor for one stream.
pub fn new_processor(ctx: StreamContext) -> Result<Box<dyn StreamProcessor>> {
    let settings = ctx.settings.meg.clone();
    let channels = settings.channels()?;
    let dashboard = super::panel::MegPanel::new(channels.clone());
    let writer = Writer::start(&ctx.run_dir, &ctx.metadata, ctx.source_id)?;
    let fit = ClockFit::new(ClockFitConfig {
        max_residual_ns: settings.clock_max_residual_ns,
        jump_residual_ns: settings.clock_jump_residual_ns,
        ..ClockFitConfig::default()
    });
    let mut warnings = Vec::new();
    if channels.is_none() {
        warnings.push(format!(
            "MEG stream {}: no [meg] channel_table: meg_channels not written, values stay raw counts",
            ctx.source_id
        ));
    }
    Ok(Box::new(MegProcessor {
        source_id: ctx.source_id,
        run_dir: ctx.run_dir,
        metadata: ctx.metadata,
        unwrap: CounterUnwrapper::u32_counter(
            settings.max_gap_samples,
            settings.max_backward_samples,
        ),
        settings,
        channels,
        fit,
        next_index: None,
        pending_flags: 0,
        held: VecDeque::new(),
        held_samples: 0,
        hold_limit_samples: i64::MAX,
        last_trigger: None,
        blocks: BlocksBuilder::default(),
        triggers: Vec::new(),
        writer: Some(writer),
        losses: LossCounts::default(),
        warnings,
        n_blocks: 0,
        n_samples: 0,
        n_syncs: 0,
        n_trigger_edges: 0,
        n_extrapolated: 0,
        counter_jumps: 0,
        shape_warned: false,
        rate_hz: 0.0,
        dashboard,
        nominal_rate_hz: 0.0,
        trigger_span: None,
    }))
}

impl MegProcessor {
    fn on_counter_jump(&mut self, j: &scandaq_core::clock_fit::CounterJump) -> Result<()> {
        self.counter_jumps += 1;
        self.warnings.push(format!(
            "MEG stream {}: sample counter jumped {:?} from {} to {} (counter segment {}); \
             indices continue after the last block, times restart with a new clock segment",
            self.source_id, j.kind, j.raw_before, j.raw_after, j.new_segment
        ));
        self.pending_flags |= block_flags::COUNTER_JUMP;
        // The held blocks will never get a sync point of their own segment after them.
        self.release_held(true)
    }

    /// Releases held blocks whose bracketing sync point has arrived (all of them when
    /// `all`), and those held too long.
    fn release_held(&mut self, all: bool) -> Result<()> {
        while let Some(front) = self.held.front() {
            let last_tick = front.index + i64::from(front.n_samples) - 1;
            let bracketed = match (self.fit.last_tick(), self.fit.last_counter_segment()) {
                (Some(t), Some(seg)) => {
                    seg > front.counter_segment || (seg == front.counter_segment && t >= last_tick)
                }
                _ => false,
            };
            if !(all || bracketed || self.held_samples > self.hold_limit_samples) {
                break;
            }
            if let Some(b) = self.held.pop_front() {
                self.held_samples -= i64::from(b.n_samples);
                self.emit(b)?;
            }
        }
        Ok(())
    }

    /// Times a block, finds its trigger edges and adds its row.
    fn emit(&mut self, b: Held) -> Result<()> {
        let mut flags = b.flags;
        let time = self.fit.time(b.index, 0.0);
        let rate = time
            .and_then(|t| self.fit.ns_per_tick(t.segment))
            .map(|ns| 1e9 / ns);
        if time.is_none_or(|t| t.extrapolated) {
            flags |= block_flags::TIME_EXTRAPOLATED;
            self.n_extrapolated += 1;
        }
        if let Some(r) = rate {
            self.rate_hz = r;
        }
        if b.flags & block_flags::TRIGGER_CHANNEL != 0 && b.n_channels > 0 {
            let nch = b.n_channels as usize;
            let c = nch - 1;
            for s in 0..b.n_samples as usize {
                let o = 4 * (s * nch + c);
                let Some(bytes) = b.payload.get(o..o + 4) else {
                    break;
                };
                let v = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                let prev = *self.last_trigger.get_or_insert(v);
                let changed = prev ^ v;
                if changed != 0 {
                    let sample = b.index + s as i64;
                    let t = self.fit.time(sample, 0.0);
                    for bit in 0..32u8 {
                        if changed & (1 << bit) != 0 {
                            self.triggers.push(TriggerRow {
                                stream: self.source_id,
                                sample,
                                t_ns: t.map(|t| t.ns),
                                bit,
                                rising: v & (1 << bit) != 0,
                                extrapolated: t.is_none_or(|t| t.extrapolated),
                            });
                            self.n_trigger_edges += 1;
                            if let (true, Some(t)) = (v & (1 << bit) != 0, t) {
                                let span = self.trigger_span.get_or_insert((t.ns, t.ns, 0));
                                span.1 = t.ns;
                                span.2 += 1;
                            }
                        }
                    }
                }
                self.last_trigger = Some(v);
            }
        }
        self.dashboard.push_block(
            &b.payload,
            usize::from(b.n_samples),
            usize::from(b.n_channels),
            self.nominal_rate_hz,
            b.flags & block_flags::TRIGGER_CHANNEL != 0,
        );
        self.blocks.push(&BlockRow {
            stream: self.source_id,
            first_sample: b.index,
            counter: b.counter,
            counter_segment: b.counter_segment,
            n_samples: b.n_samples,
            n_channels: b.n_channels,
            t_first_ns: time.map(|t| t.ns),
            rate_hz: rate,
            flags,
            payload: &b.payload,
        });
        if self.blocks.rows() >= BATCH_ROWS || self.blocks.bytes() >= BATCH_BYTES {
            self.flush_batches()?;
        }
        Ok(())
    }

    /// Rising trigger edges per second from their corrected times (first to last).
    fn trigger_rate_hz(&self) -> f64 {
        match self.trigger_span {
            Some((first, last, n)) if n > 1 && last > first => {
                (n - 1) as f64 * 1e9 / (last - first) as f64
            }
            _ => 0.0,
        }
    }

    fn flush_batches(&mut self) -> Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        if self.blocks.rows() > 0 {
            let batch = self
                .blocks
                .finish()
                .context("building a meg_blocks batch")?;
            writer.send(Batch::Blocks(batch))?;
        }
        if !self.triggers.is_empty() {
            let batch =
                meg_tables::triggers_batch(&self.triggers).context("building a triggers batch")?;
            self.triggers.clear();
            writer.send(Batch::Triggers(batch))?;
        }
        Ok(())
    }

    fn write_small_table(
        &self,
        table: &str,
        schema: arrow_schema::SchemaRef,
        batch: arrow_array::RecordBatch,
    ) -> Result<scandaq_sinks::FileRecord> {
        let mut w = ParquetTableWriter::create(
            &self.run_dir,
            &meg_tables::file_name(table, self.source_id),
            schema,
            &meg_tables::small_write_options(),
            writer::table_metadata(&self.metadata, table, self.source_id),
        )?;
        w.write(&batch)?;
        Ok(w.commit()?)
    }
}

impl StreamProcessor for MegProcessor {
    fn payload(&mut self, payload: &[u8]) -> Result<()> {
        let block = match decode_block(payload) {
            Ok(b) => b,
            Err(e) => {
                // Its samples show up as a gap in the next block's index.
                self.losses.add(e.reason(), 1);
                return Ok(());
            }
        };
        let h = block.header;
        self.nominal_rate_hz = f64::from(h.sample_rate_mhz) / 1000.0;
        if self.hold_limit_samples == i64::MAX && h.sample_rate_mhz > 0 {
            self.hold_limit_samples =
                (self.settings.max_hold_s * f64::from(h.sample_rate_mhz) / 1000.0).ceil() as i64;
        }
        let u = self
            .unwrap
            .push_span(u64::from(h.sample_counter), u64::from(h.n_samples));
        if let Some(j) = u.jump {
            self.on_counter_jump(&j)?;
        }
        let n = i64::from(h.n_samples);
        // The index is the unwrapped tick (the clock fit works in the same space); after a
        // jump it continues right after the highest count seen, the true gap is unknown.
        let index = u.tick;
        let jumped = self.pending_flags & block_flags::COUNTER_JUMP != 0;
        if let Some(next) = self.next_index.filter(|_| !jumped) {
            if index > next {
                self.losses
                    .add(LossReason::MegMissingSamples, (index - next) as u64);
                self.losses.add(LossReason::MegSampleGaps, 1);
                self.pending_flags |= block_flags::AFTER_GAP;
            } else if index < next {
                if index + n <= next {
                    self.losses.add(LossReason::MegDuplicateBlocks, 1);
                } else {
                    self.losses.add(LossReason::MegOverlappingBlocks, 1);
                }
                return Ok(());
            }
        }
        self.next_index = Some(index + n);
        let mut flags = std::mem::take(&mut self.pending_flags);
        if h.flags & FLAG_TRIGGER_CHANNEL != 0 {
            flags |= block_flags::TRIGGER_CHANNEL;
        }
        if h.flags & FLAG_CLIPPED != 0 {
            flags |= block_flags::CLIPPED;
        }
        if let Some(ch) = &self.channels
            && ch.len() != h.n_channels as usize
        {
            flags |= block_flags::SHAPE_MISMATCH;
            if !self.shape_warned {
                self.shape_warned = true;
                self.warnings.push(format!(
                    "MEG stream {}: blocks carry {} channels, the channel table describes {}",
                    self.source_id,
                    h.n_channels,
                    ch.len()
                ));
            }
        }
        self.n_blocks += 1;
        self.n_samples += h.n_samples as u64;
        self.held_samples += n;
        self.held.push_back(Held {
            index,
            counter: h.sample_counter,
            counter_segment: u.segment,
            n_samples: h.n_samples,
            n_channels: h.n_channels,
            flags,
            payload: block.data.to_vec(),
        });
        self.release_held(false)
    }

    fn control(&mut self, payload: &[u8]) -> Result<()> {
        let sync = match decode_control(payload) {
            Ok(ControlRecord::ClockSync(s)) => s,
            Ok(ControlRecord::Unknown(_)) => {
                self.losses.add(LossReason::ControlUnknownKindPackets, 1);
                return Ok(());
            }
            Err(e) => {
                self.losses.add(e.reason(), 1);
                return Ok(());
            }
        };
        let u = self.unwrap.push(sync.device_counter & 0xFFFF_FFFF);
        if let Some(j) = u.jump {
            self.on_counter_jump(&j)?;
        }
        self.n_syncs += 1;
        let outcome = self.fit.add(
            SyncPoint {
                tick: u.tick,
                frac: f64::from(sync.device_fraction) / 4_294_967_296.0,
                reference_ns: sync.reference_ns,
            },
            u.segment,
        );
        if outcome == scandaq_core::clock_fit::PointOutcome::NotAdvancing {
            self.losses.add(LossReason::MegSyncPointsNotAdvancing, 1);
        }
        self.release_held(false)
    }

    fn figures(&self) -> Vec<StreamFigure> {
        vec![
            ("blocks".into(), self.n_blocks as f64, "".into()),
            ("samples".into(), self.n_samples as f64, "".into()),
            ("rate".into(), self.rate_hz, "Hz".into()),
            (
                "trigger edges".into(),
                self.n_trigger_edges as f64,
                "".into(),
            ),
            ("trigger rate".into(), self.trigger_rate_hz(), "Hz".into()),
            (
                "median channel RMS".into(),
                self.dashboard.median_rms().unwrap_or(f64::NAN),
                "fT".into(),
            ),
        ]
    }

    fn panel(&self) -> Option<scandaq_core::snapshot::StreamFigures> {
        let mut m = self.dashboard.snapshot();
        m.blocks = self.n_blocks;
        m.samples = self.n_samples;
        m.rate_hz = self.rate_hz;
        m.trigger_edges = self.n_trigger_edges;
        m.trigger_rate_hz = self.trigger_rate_hz();
        Some(scandaq_core::snapshot::StreamFigures::Meg(m))
    }

    fn finish(mut self: Box<Self>) -> Result<StreamReport> {
        self.release_held(true)?;
        self.flush_batches()?;
        let mut files = self
            .writer
            .take()
            .map(Writer::finish)
            .transpose()?
            .unwrap_or_default();
        let id = self.source_id;
        if let Some(ch) = &self.channels {
            let batch = meg_tables::channels_batch(id, ch).context("building meg_channels")?;
            files.push(self.write_small_table(
                CHANNELS_TABLE,
                meg_tables::channels_schema(),
                batch,
            )?);
        }
        let segments = self.fit.segments();
        let batch =
            meg_tables::clock_segments_batch(id, &segments).context("building clock_segments")?;
        files.push(self.write_small_table(
            CLOCK_SEGMENTS_TABLE,
            meg_tables::clock_segments_schema(),
            batch,
        )?);
        if self.n_blocks > 0 && self.n_syncs == 0 {
            self.warnings.push(format!(
                "MEG stream {id}: no clock-sync record arrived; t_first_ns is null in every block"
            ));
        }
        let mut counts = std::collections::BTreeMap::new();
        for (k, v) in [
            ("blocks", self.n_blocks),
            ("samples", self.n_samples),
            ("sync_records", self.n_syncs),
            ("clock_segments", segments.len() as u64),
            ("trigger_edges", self.n_trigger_edges),
            ("counter_jumps", self.counter_jumps),
            ("blocks_time_extrapolated", self.n_extrapolated),
        ] {
            counts.insert(format!("meg.{id}.{k}"), v);
        }
        let panel = StreamProcessor::panel(&*self);
        Ok(StreamReport {
            files,
            counts,
            losses: self.losses,
            warnings: self.warnings,
            panel,
        })
    }
}
