//! The processing side of a live run: per-board decode state ([`BoardState`], one per board
//! session, moved onto the run's timeline after a restart), the merger that restores time
//! order, the OPM-MEG / ultrasound stream stage, and the raw-archive tap; [`Decoding`] owns
//! them and drains the input rings into them.

use super::inputs::InputThread;
use crate::acquire::ingest::FrameChunk;
use crate::observe::live_stats::BoardDecodeSnapshot;
use crate::process::frame_decode::{PendingDecode, PipelineCounts, Processor};
use crate::process::kernel::CompiledCalibration;
use crate::process::merge::KWayMerger;
use crate::process::streams::StreamReport;
use crate::process::streams::stage::StreamStage;
use anyhow::{Result, anyhow};
use rayon::Scope;
use scandaq_core::{HitBatch, LossReason};
use scandaq_sinks::FileRecord;
use scandaq_sinks::archive::RawArchiveWriter;
use std::collections::{BTreeMap, VecDeque};

/// Chunks taken off one input's ring per processing round (between merger releases).
const DRAIN_CHUNKS_PER_CALL: usize = 8;

/// Chunks being decoded on the pool at once, over all boards: while they decode, the
/// processing thread merges, releases and hands on earlier singles. Bounds what is in flight
/// (a chunk is at most ~256 KiB of frames).
const DECODES_IN_FLIGHT: usize = 16;

/// How far (detector time, ps) a raw-archive input may run ahead of the slowest archive input
/// that still holds packets before it is no longer drained: archives are read as fast as they
/// are taken, so without this the one whose reader started first ran ahead of a board the
/// other had not delivered yet, whose first hits were then late (`late_hit`) or, if the first
/// archive ended before, never read (an early end of stream).
const ARCHIVE_PACE_PS: i64 = 20_000_000_000;

/// The raw archive the run records packets into (when asked), and the first error writing
/// it (the archive stops then; the run fails on it).
pub(super) struct ArchiveTap {
    writer: Option<RawArchiveWriter>,
    error: Option<String>,
}

impl ArchiveTap {
    /// A tap into `writer` (none: nothing is recorded).
    pub(super) fn new(writer: Option<RawArchiveWriter>) -> Self {
        Self {
            writer,
            error: None,
        }
    }

    /// True when packets are recorded.
    pub(super) fn is_on(&self) -> bool {
        self.writer.is_some()
    }

    /// The first error writing the archive.
    pub(super) fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn write(&mut self, chunk: &FrameChunk) {
        if let Some(w) = self.writer.as_mut()
            && !chunk.raw.is_empty()
            && let Err(e) = w.write_packets(&chunk.raw, chunk.raw_packets)
        {
            self.stop_on(e.to_string());
        }
    }

    /// Keeps the commit interval when no packets arrive.
    pub(super) fn tick(&mut self) {
        if let Some(Err(e)) = self.writer.as_mut().map(RawArchiveWriter::tick) {
            self.stop_on(e.to_string());
        }
    }

    /// Commits the archive: its file record (if it was written) and the first error.
    fn commit(self) -> (Option<FileRecord>, Option<String>) {
        let mut error = self.error;
        let file = match self.writer.map(RawArchiveWriter::commit) {
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => {
                error = Some(e.to_string());
                None
            }
            None => None,
        };
        (file, error)
    }

    fn stop_on(&mut self, error: String) {
        self.error = Some(error);
        self.writer = None;
    }
}

/// What the processing side hands to the run's end.
pub(super) struct DecodeEnd {
    /// Counts and losses of every board (late hits included).
    pub(super) counts: PipelineCounts,
    /// Per-board counts for the manifest.
    pub(super) extra: BTreeMap<String, u64>,
    /// Boards seen.
    pub(super) boards: u64,
    /// The stream stage's report and errors.
    pub(super) streams: (StreamReport, Vec<String>),
    /// The raw archive's file and first error.
    pub(super) archive: (Option<FileRecord>, Option<String>),
}

/// The boards' decode state, the merger, the stream stage and the raw-archive tap of a run.
pub(super) struct Decoding<'k> {
    kernel: &'k CompiledCalibration,
    /// The singles carry the raw diagnostic columns (`raw_columns`).
    raw_columns: bool,
    boards: BTreeMap<u32, BoardState<'k>>,
    /// The input (index) each board's chunks came through.
    board_input: BTreeMap<u32, usize>,
    timeline: Timeline,
    merger: KWayMerger,
    /// Chunks being decoded on the pool, in the order they arrived, with their board:
    /// completed in that order, so the singles reach the merger as if decoded in turn.
    pending: VecDeque<(u32, PendingDecode)>,
    streams: StreamStage,
    /// The raw archive.
    pub(super) archive: ArchiveTap,
}

impl<'k> Decoding<'k> {
    /// Nothing decoded yet.
    pub(super) fn new(
        kernel: &'k CompiledCalibration,
        raw_columns: bool,
        streams: StreamStage,
        archive: ArchiveTap,
    ) -> Self {
        Self {
            kernel,
            raw_columns,
            boards: BTreeMap::new(),
            board_input: BTreeMap::new(),
            timeline: Timeline::default(),
            // Boards may lag each other by 0.5 s of detector time; nothing within 50 ms of the
            // newest hit is released, so a board whose data starts a little later is not late.
            merger: KWayMerger::new(500_000_000_000, 50_000_000_000),
            pending: VecDeque::new(),
            streams,
            archive,
        }
    }

    /// Drains every ring once into the boards' processors (their frames decoded on the pool
    /// through `scope`) and the merger; returns whether anything arrived. Decodes that have
    /// finished are completed; the others by [`Self::settle`].
    pub(super) fn drain<'s>(
        &mut self,
        inputs: &mut [InputThread],
        scope: &Scope<'s>,
    ) -> Result<bool>
    where
        'k: 's,
    {
        let mut got = false;
        let floor = self.archive_floor(inputs);
        for (index, input) in inputs.iter_mut().enumerate() {
            // An archive ahead of the slowest one waits for it (the slowest is always drained).
            if input.finite
                && floor
                    .is_some_and(|f| self.input_newest(index) > f.saturating_add(ARCHIVE_PACE_PS))
            {
                continue;
            }
            // A bounded number per call: the caller releases merged hits to the sink between
            // calls, so an input that refills its ring as fast as it is drained cannot make
            // the merger hold an unbounded backlog.
            for _ in 0..DRAIN_CHUNKS_PER_CALL {
                let Some(chunk) = input.consumer.pop() else {
                    break;
                };
                got = true;
                if !StreamStage::is_stream_chunk(&chunk) {
                    self.board_input.entry(chunk.source_id).or_insert(index);
                }
                self.take(chunk, scope)?;
            }
        }
        self.settle(false)?;
        Ok(got)
    }

    /// Records `chunk` in the archive and hands it to its stream or its board (its frames
    /// decoded on the pool; a restart or an end of stream first completes every decode).
    fn take<'s>(&mut self, mut chunk: FrameChunk, scope: &Scope<'s>) -> Result<()>
    where
        'k: 's,
    {
        self.archive.write(&chunk);
        if chunk.frames.is_empty() && !chunk.end_of_stream && chunk.packets == 0 {
            return Ok(()); // archive-only chunk (rejected packets)
        }
        if StreamStage::is_stream_chunk(&chunk) {
            return self.streams.push(&chunk);
        }
        let restarts = self
            .boards
            .get(&chunk.source_id)
            .is_some_and(|b| chunk.session > b.session);
        if restarts {
            self.settle(true)?;
        }
        let (kernel, raw) = (self.kernel, self.raw_columns);
        let (merger, timeline) = (&mut self.merger, &mut self.timeline);
        let board = self
            .boards
            .entry(chunk.source_id)
            .or_insert_with(|| BoardState::new(kernel, raw, chunk.session, chunk.source_id));
        if restarts {
            board.next_session(chunk.session, kernel, merger, timeline)?;
        }
        if !chunk.frames.is_empty() {
            let decode = board
                .processor
                .submit(std::mem::take(&mut chunk.frames), scope);
            self.pending.push_back((chunk.source_id, decode));
            while self.pending.len() > DECODES_IN_FLIGHT {
                self.complete_oldest()?;
            }
        }
        if chunk.end_of_stream && self.boards.get(&chunk.source_id).is_some_and(|b| !b.ended) {
            self.settle(true)?;
            let (merger, timeline) = (&mut self.merger, &mut self.timeline);
            if let Some(board) = self.boards.get_mut(&chunk.source_id) {
                board.ended = true;
                board.push(&[], true, merger, timeline)?;
                merger.end(board.key);
            }
        }
        Ok(())
    }

    /// Completes the decodes that have finished (`wait`: every one, waiting for them), in
    /// the order they were started, into the merger.
    pub(super) fn settle(&mut self, wait: bool) -> Result<()> {
        while let Some((_, decode)) = self.pending.front() {
            if !wait && !decode.is_done() {
                break;
            }
            self.complete_oldest()?;
        }
        Ok(())
    }

    /// Completes the oldest decode into its board (waiting for it if need be).
    fn complete_oldest(&mut self) -> Result<()> {
        let Some((source_id, decode)) = self.pending.pop_front() else {
            return Ok(());
        };
        let board = self
            .boards
            .get_mut(&source_id)
            .ok_or_else(|| anyhow!("a decode of board {source_id} outlived its board"))?;
        board.complete(decode, &mut self.merger, &mut self.timeline)
    }

    /// Merged singles ready for the sink (`inputs`: an archive not yet exhausted holds them
    /// back to where it has got, so boards it has not delivered yet are not late).
    pub(super) fn release(&mut self, inputs: &[InputThread]) -> HitBatch {
        let floor = self.archive_floor(inputs).unwrap_or(i64::MAX);
        self.merger.release_below(floor)
    }

    /// The newest singles time of the boards input `index` delivered (`i64::MIN`: none yet).
    fn input_newest(&self, index: usize) -> i64 {
        self.board_input
            .iter()
            .filter(|&(_, &i)| i == index)
            .filter_map(|(id, _)| self.boards.get(id).map(|b| b.newest))
            .max()
            .unwrap_or(i64::MIN)
    }

    /// The least newest time over the raw-archive inputs that still hold packets (none: no
    /// such input). Nothing at or after it may be released, and no archive may run more than
    /// [`ARCHIVE_PACE_PS`] ahead of it.
    fn archive_floor(&self, inputs: &[InputThread]) -> Option<i64> {
        inputs
            .iter()
            .enumerate()
            .filter(|(_, input)| input.finite && !input.exhausted())
            .map(|(index, _)| self.input_newest(index))
            .min()
    }

    /// True when every board and stream seen (at least one) has sent its end of stream.
    pub(super) fn all_ended(&self) -> bool {
        (!self.boards.is_empty() || !self.streams.is_empty())
            && self.boards.values().all(|b| b.ended)
            && (self.streams.is_empty() || self.streams.all_ended())
    }

    /// Boards seen.
    pub(super) fn board_count(&self) -> usize {
        self.boards.len()
    }

    /// Ends every board that has not sent its end of stream (its last singles flushed into
    /// the merger); stops at the first error.
    pub(super) fn end_boards(&mut self) -> Result<()> {
        self.settle(true)?;
        for board in self.boards.values_mut() {
            if !board.ended {
                board.push(&[], true, &mut self.merger, &mut self.timeline)?;
            }
        }
        Ok(())
    }

    /// Everything the merger still holds.
    pub(super) fn finish_merger(&mut self) -> HitBatch {
        self.merger.finish()
    }

    /// Per-board decode counts for the stats snapshot.
    pub(super) fn snapshot(&self) -> Vec<BoardDecodeSnapshot> {
        self.boards
            .iter()
            .map(|(&id, b)| {
                let c = b.counts();
                BoardDecodeSnapshot {
                    source_id: id,
                    frames: c.frames,
                    hits_decoded: c.hits_decoded,
                    losses: c.losses,
                }
            })
            .collect()
    }

    /// The counts of every board, the streams' report and the committed archive.
    pub(super) fn close(self) -> DecodeEnd {
        let mut counts = PipelineCounts::default();
        let mut extra = BTreeMap::new();
        for (&id, board) in &self.boards {
            let c = board.counts();
            counts.bytes_scanned += c.bytes_scanned;
            counts.frames += c.frames;
            counts.hits_decoded += c.hits_decoded;
            counts.frame_wraps += c.frame_wraps;
            counts.losses.merge(&c.losses);
            extra.insert(format!("board.{id}.hits_decoded"), c.hits_decoded);
            extra.insert(format!("board.{id}.frames"), c.frames);
        }
        counts
            .losses
            .add(LossReason::LateHit, self.merger.late_hits());
        DecodeEnd {
            counts,
            extra,
            boards: self.boards.len() as u64,
            streams: self.streams.finish(),
            archive: self.archive.commit(),
        }
    }
}

/// Per-board processing state (of the board's current session).
struct BoardState<'k> {
    processor: Processor<'k>,
    /// Its processor fills the raw diagnostic columns.
    raw: bool,
    ended: bool,
    /// The board's session (0, then one more per restart; see [`crate::acquire::ingest`]).
    session: u32,
    /// The merger stream of this session.
    key: u32,
    /// Sessions after a restart: the offset that puts their clock onto the run's timeline
    /// (fixed by the session's first singles).
    rebase: Option<i64>,
    /// Counts of the board's earlier sessions.
    earlier: PipelineCounts,
    /// Newest singles time handed to the merger over its sessions (`i64::MIN`: none yet).
    newest: i64,
}

/// Times and merger streams shared by the boards' sessions.
#[derive(Default)]
struct Timeline {
    /// Newest singles time handed to the merger (ps), if any.
    newest: Option<i64>,
    /// Sessions after a restart opened so far (their merger streams are numbered down from
    /// `u32::MAX - 1`; a board's first session uses its source id, so ties between boards
    /// break as before, whatever order their chunks arrive in).
    keys: u32,
}

impl<'k> BoardState<'k> {
    fn new(kernel: &'k CompiledCalibration, raw: bool, session: u32, key: u32) -> Self {
        Self {
            processor: Processor::new(kernel).raw_columns(raw),
            raw,
            ended: false,
            session,
            key,
            rebase: None,
            earlier: PipelineCounts::default(),
            newest: i64::MIN,
        }
    }

    /// This board's counts over all its sessions.
    fn counts(&self) -> PipelineCounts {
        let mut c = self.processor.counts();
        let e = &self.earlier;
        c.bytes_scanned += e.bytes_scanned;
        c.frames += e.frames;
        c.hits_decoded += e.hits_decoded;
        c.frame_wraps += e.frame_wraps;
        c.losses.merge(&e.losses);
        c
    }

    /// Decodes `frames` (and the session's end with `eof`) into the merger in the caller's
    /// turn.
    fn push(
        &mut self,
        frames: &[u8],
        eof: bool,
        merger: &mut KWayMerger,
        timeline: &mut Timeline,
    ) -> Result<()> {
        let (processor, mut place) = self.placing(merger, timeline);
        processor.push(frames, eof, &mut place)
    }

    /// Completes a decode this board's processor started, into the merger.
    fn complete(
        &mut self,
        decode: PendingDecode,
        merger: &mut KWayMerger,
        timeline: &mut Timeline,
    ) -> Result<()> {
        let (processor, mut place) = self.placing(merger, timeline);
        processor.complete(decode, &mut place)
    }

    /// The processor, and what places its singles into the merger: a session after a restart
    /// is moved onto the run's timeline and flagged.
    fn placing<'s>(
        &'s mut self,
        merger: &'s mut KWayMerger,
        timeline: &'s mut Timeline,
    ) -> (
        &'s mut Processor<'k>,
        impl FnMut(HitBatch) -> Result<()> + 's,
    ) {
        let (key, restarted, rebase) = (self.key, self.session > 0, &mut self.rebase);
        let newest = &mut self.newest;
        let place = move |mut b: HitBatch| {
            if restarted && !b.is_empty() {
                // The board's clock restarted with it: its first singles are placed at the
                // newest time of the run so far, and the session keeps that offset.
                let offset = *rebase.get_or_insert_with(|| {
                    timeline.newest.map_or(0, |n| n.saturating_sub(b.t_ps[0]))
                });
                for t in &mut b.t_ps {
                    *t = t.saturating_add(offset);
                }
                for f in &mut b.flags {
                    *f |= scandaq_core::hit_flags::CLOCK_REBASED;
                }
            }
            if let Some(&last) = b.t_ps.last() {
                timeline.newest = Some(timeline.newest.map_or(last, |n| n.max(last)));
                *newest = (*newest).max(last);
            }
            merger.push(key, b);
            Ok(())
        };
        (&mut self.processor, place)
    }

    /// Ends the current session and opens `session`, on a new merger stream.
    fn next_session(
        &mut self,
        session: u32,
        kernel: &'k CompiledCalibration,
        merger: &mut KWayMerger,
        timeline: &mut Timeline,
    ) -> Result<()> {
        if !self.ended {
            self.push(&[], true, merger, timeline)?;
        }
        merger.end(self.key);
        let (earlier, newest) = (self.counts(), self.newest);
        timeline.keys += 1;
        *self = Self::new(kernel, self.raw, session, u32::MAX - timeline.keys);
        self.earlier = earlier;
        self.newest = newest;
        Ok(())
    }
}
