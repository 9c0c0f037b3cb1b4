//! The stream side of the processing thread: routes each stream board's payloads (in
//! sequence order, as ingest delivered them) to its [`StreamProcessor`], created on the
//! board's first data payload, and gathers the processors' reports at the end of the run.
//! With [`StreamStage::publish_into`] it also publishes every stream's dashboard figures
//! ([`StreamProcessor::panel`]) at most every [`PUBLISH_EVERY`], and their final values
//! (after the processors flushed everything) when the run ends.

use super::{StreamContext, StreamProcessor, StreamReport, StreamSettings, new_processor};
use crate::observe::live_stats::LatestCell;
use crate::process::frame_chunk::FrameChunk;
use anyhow::{Context, Result};
use scandaq_core::LossCounts;
use scandaq_core::LossReason;
use scandaq_core::snapshot::StreamSnapshot;
use scandaq_decoders::transport::payload_format;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Control payloads held for a board whose data format is not known yet.
const MAX_EARLY_CONTROL: usize = 4096;
/// Shortest interval between two publications of the streams' figures (the dashboard and the
/// control socket read at 10 Hz).
pub const PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// One stream board.
#[derive(Default)]
struct StreamBoard {
    processor: Option<Box<dyn StreamProcessor>>,
    /// Control payloads that arrived before the first data payload.
    early_control: Vec<Vec<u8>>,
    ended: bool,
}

/// Every stream board of a run.
pub struct StreamStage {
    run_dir: PathBuf,
    metadata: Vec<(String, String)>,
    settings: StreamSettings,
    boards: BTreeMap<u32, StreamBoard>,
    losses: LossCounts,
    publish: Option<Arc<LatestCell<Vec<StreamSnapshot>>>>,
    last_publish: Option<Instant>,
}

impl StreamStage {
    /// A stage writing into `run_dir` with the run's Parquet metadata.
    pub fn new(
        run_dir: PathBuf,
        metadata: Vec<(String, String)>,
        settings: StreamSettings,
    ) -> Self {
        Self {
            run_dir,
            metadata,
            settings,
            boards: BTreeMap::new(),
            losses: LossCounts::default(),
            publish: None,
            last_publish: None,
        }
    }

    /// Publishes the streams' figures into `cell` from now on (e.g. `LiveStats::streams`).
    pub fn publish_into(&mut self, cell: Arc<LatestCell<Vec<StreamSnapshot>>>) {
        self.publish = Some(cell);
    }

    /// Every stream's dashboard figures now, by source id.
    pub fn snapshots(&self) -> Vec<StreamSnapshot> {
        self.boards
            .iter()
            .filter_map(|(&source_id, b)| {
                let figures = b.processor.as_ref()?.panel()?;
                Some(StreamSnapshot { source_id, figures })
            })
            .collect()
    }

    /// Publishes when [`PUBLISH_EVERY`] has passed since the last publication; a reader
    /// holding the cell only makes it skip this one.
    fn publish_due(&mut self) {
        let Some(cell) = &self.publish else { return };
        if self
            .last_publish
            .is_some_and(|t| t.elapsed() < PUBLISH_EVERY)
        {
            return;
        }
        self.last_publish = Some(Instant::now());
        cell.publish(self.snapshots());
    }

    /// True when `chunk` belongs to a stream board (not to the PETsys hit pipeline).
    pub fn is_stream_chunk(chunk: &FrameChunk) -> bool {
        chunk.payload_format != payload_format::PETSYS_TOFPET2
    }

    /// True when at least one stream exists and every one has ended. Only sources that sent
    /// stream data count: control packets alone (e.g. from a PETsys board) make no stream.
    pub fn all_ended(&self) -> bool {
        !self.is_empty() && self.streams().all(|b| b.ended)
    }

    /// True when no source has sent stream data.
    pub fn is_empty(&self) -> bool {
        self.streams().next().is_none()
    }

    fn streams(&self) -> impl Iterator<Item = &StreamBoard> {
        self.boards.values().filter(|b| b.processor.is_some())
    }

    /// Hands a stream board's chunk to its processor.
    pub fn push(&mut self, chunk: &FrameChunk) -> Result<()> {
        let board = self.boards.entry(chunk.source_id).or_default();
        if board.processor.is_none() && chunk.payload_format != 0 {
            let ctx = StreamContext {
                run_dir: self.run_dir.clone(),
                metadata: self.metadata.clone(),
                source_id: chunk.source_id,
                payload_format: chunk.payload_format,
                settings: self.settings.clone(),
            };
            let mut processor = new_processor(ctx)
                .with_context(|| format!("starting the processor of stream {}", chunk.source_id))?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "payload format {} of source {} is not a stream format",
                        chunk.payload_format,
                        chunk.source_id
                    )
                })?;
            for control in board.early_control.drain(..) {
                processor.control(&control)?;
            }
            board.processor = Some(processor);
        }
        let mut start = 0usize;
        for &(format, end) in &chunk.payload_ends {
            let end = end as usize;
            let Some(payload) = chunk.frames.get(start..end) else {
                break;
            };
            start = end;
            match (&mut board.processor, format) {
                (Some(p), payload_format::CONTROL) => p
                    .control(payload)
                    .with_context(|| format!("stream {}", chunk.source_id))?,
                (Some(p), _) => p
                    .payload(payload)
                    .with_context(|| format!("stream {}", chunk.source_id))?,
                (None, _) if board.early_control.len() < MAX_EARLY_CONTROL => {
                    board.early_control.push(payload.to_vec());
                }
                (None, _) => self.losses.add(LossReason::ControlBeforeDataPackets, 1),
            }
        }
        board.ended |= chunk.end_of_stream;
        self.publish_due();
        Ok(())
    }

    /// Live figures of every stream, by source id.
    pub fn figures(&self) -> Vec<(u32, Vec<super::StreamFigure>)> {
        self.boards
            .iter()
            .filter_map(|(&id, b)| b.processor.as_ref().map(|p| (id, p.figures())))
            .collect()
    }

    /// Finishes every processor; errors are gathered, not fatal to the others' files.
    pub fn finish(self) -> (StreamReport, Vec<String>) {
        let mut total = StreamReport {
            losses: self.losses,
            ..Default::default()
        };
        let mut errors = Vec::new();
        let mut last = Vec::new();
        for (id, board) in self.boards {
            let early = board.early_control.len() as u64;
            total
                .losses
                .add(LossReason::ControlWithoutStreamPackets, early);
            let Some(processor) = board.processor else {
                continue;
            };
            let before = processor.panel();
            match processor.finish() {
                Ok(r) => {
                    if let Some(figures) = r.panel.or(before) {
                        last.push(StreamSnapshot {
                            source_id: id,
                            figures,
                        });
                    }
                    total.files.extend(r.files);
                    total.counts.extend(r.counts);
                    total.losses.merge(&r.losses);
                    total.warnings.extend(r.warnings);
                }
                Err(e) => {
                    errors.push(format!("stream {id}: {e:#}"));
                    if let Some(figures) = before {
                        last.push(StreamSnapshot {
                            source_id: id,
                            figures,
                        });
                    }
                }
            }
        }
        if let Some(cell) = &self.publish {
            cell.publish(last);
        }
        (total, errors)
    }
}
