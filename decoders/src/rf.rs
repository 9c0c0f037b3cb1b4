//! Ultrasound RF event chunks (transport payload format 4, docs/formats.md §6 and
//! docs/ultrasound.md) and their reassembly into whole events.
//!
//! An RF event is the `n_channels * n_samples` little-endian i16 matrix received after one
//! transmit, channel-major (`[channel][sample]`). A board splits an event larger than a packet
//! into chunks; every chunk repeats the 40-byte event header with its own `chunk_index` and
//! `chunk_offset` (byte offset of its samples in the event's sample array):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | frame_no (u64) |
//! | 8 | 2 | tx_index: index into the run's transmit sequence |
//! | 10 | 2 | n_channels |
//! | 12 | 4 | n_samples (per channel) |
//! | 16 | 8 | tx_ticks: device counter at transmit (u64) |
//! | 24 | 4 | rx_offset_ns: first received sample relative to transmit, ns (i32) |
//! | 28 | 4 | sample_rate_hz (u32) |
//! | 32 | 2 | chunk_index (0-based) |
//! | 34 | 2 | chunk_count (1 when the event fits one packet) |
//! | 36 | 4 | chunk_offset: byte offset of this chunk's samples within the event |
//! | 40 | rest | this chunk's i16 samples |
//!
//! [`decode_chunk`] borrows the sample bytes; [`RfReassembler`] copies them bit-exact into the
//! event's buffer and hands out an event once all `chunk_count` chunks arrived and together
//! cover the event exactly. It keeps at most `max_open_events` events open: one still
//! incomplete when newer ones push it out, or at [`RfReassembler::finish`], is counted under
//! `us_incomplete_events` and never emitted (never written half-filled).

use scandaq_core::LossCounts;
use scandaq_core::LossReason;
use std::collections::{HashSet, VecDeque};
use thiserror::Error;
use zerocopy::little_endian::{I32, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Length of the event header repeated in every chunk.
pub const CHUNK_HEADER_LEN: usize = 40;
/// Largest event the decoder accepts (bytes of samples): 1 GiB.
pub const MAX_EVENT_BYTES: u64 = 1 << 30;
/// Default bound on the events the reassembler keeps open at once.
pub const DEFAULT_MAX_OPEN_EVENTS: usize = 64;

/// Wire layout of the 40-byte chunk header (the table above).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct WireChunkHeader {
    frame_no: U64,
    tx_index: U16,
    n_channels: U16,
    n_samples: U32,
    tx_ticks: U64,
    rx_offset_ns: I32,
    sample_rate_hz: U32,
    chunk_index: U16,
    chunk_count: U16,
    chunk_offset: U32,
}
const _: () = assert!(size_of::<WireChunkHeader>() == CHUNK_HEADER_LEN);

/// The event header (the part every chunk of one event repeats identically).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RfEventHeader {
    /// Frame number.
    pub frame_no: u64,
    /// Index into the run's transmit sequence.
    pub tx_index: u16,
    /// Receive channels.
    pub n_channels: u16,
    /// Samples per channel.
    pub n_samples: u32,
    /// Device counter at transmit.
    pub tx_ticks: u64,
    /// First received sample relative to transmit, ns.
    pub rx_offset_ns: i32,
    /// Sampling rate, Hz.
    pub sample_rate_hz: u32,
}

impl RfEventHeader {
    /// Bytes of the whole event's sample array (`2 * n_channels * n_samples`).
    pub fn event_bytes(&self) -> u64 {
        2 * u64::from(self.n_channels) * u64::from(self.n_samples)
    }

    /// The reassembly key: one event per (frame_no, tx_index).
    pub fn key(&self) -> (u64, u16) {
        (self.frame_no, self.tx_index)
    }
}

/// A chunk's header: the event header and where the chunk sits in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The event.
    pub event: RfEventHeader,
    /// 0-based index of this chunk.
    pub chunk_index: u16,
    /// Chunks making up the event.
    pub chunk_count: u16,
    /// Byte offset of this chunk's samples within the event's sample array.
    pub chunk_offset: u32,
}

/// A decoded chunk: header and the borrowed sample bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RfChunk<'a> {
    /// Header.
    pub header: ChunkHeader,
    /// This chunk's little-endian i16 samples.
    pub samples: &'a [u8],
}

/// Why a chunk was rejected. [`RfError::reason`] is the loss-counter name.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RfError {
    /// Shorter than the 40-byte header.
    #[error("RF chunk of {0} bytes is shorter than the 40-byte event header")]
    Truncated(usize),
    /// chunk_count is 0 or chunk_index >= chunk_count.
    #[error("RF chunk index {index} is not below its chunk_count {count}")]
    ChunkIndex {
        /// chunk_index.
        index: u16,
        /// chunk_count.
        count: u16,
    },
    /// The event's shape is empty or larger than the decoder accepts.
    #[error(
        "RF event shape {n_channels} channels x {n_samples} samples is {bytes} bytes; \
         accepted: 1 ..= {max} bytes"
    )]
    ShapeOverflow {
        /// n_channels.
        n_channels: u16,
        /// n_samples.
        n_samples: u32,
        /// 2 * n_channels * n_samples.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The chunk's bytes fall (partly) outside the event's sample array.
    #[error(
        "RF chunk at byte offset {offset} with {len} bytes lies outside its event of {event_bytes} bytes"
    )]
    OutsideEvent {
        /// chunk_offset.
        offset: u32,
        /// Sample bytes in the chunk.
        len: usize,
        /// The event's size.
        event_bytes: u64,
    },
    /// Offset or length not a whole number of i16 samples, or an empty chunk.
    #[error(
        "RF chunk at byte offset {offset} with {len} bytes is not a non-empty run of whole i16 samples"
    )]
    Misaligned {
        /// chunk_offset.
        offset: u32,
        /// Sample bytes in the chunk.
        len: usize,
    },
}

impl RfError {
    /// Loss-counter reason under which the chunk is counted.
    pub fn reason(&self) -> LossReason {
        match self {
            Self::Truncated(_) => LossReason::UsTruncatedChunks,
            Self::ChunkIndex { .. } => LossReason::UsBadChunkIndex,
            Self::ShapeOverflow { .. } => LossReason::UsBadEventShape,
            Self::OutsideEvent { .. } => LossReason::UsChunkOutsideEvent,
            Self::Misaligned { .. } => LossReason::UsMisalignedChunks,
        }
    }
}

/// Decodes one format-4 payload, checking the chunk against its event's shape (limit
/// [`MAX_EVENT_BYTES`]).
pub fn decode_chunk(payload: &[u8]) -> Result<RfChunk<'_>, RfError> {
    decode_chunk_limited(payload, MAX_EVENT_BYTES)
}

/// [`decode_chunk`] with a smaller event-size limit.
pub fn decode_chunk_limited(payload: &[u8], max_event_bytes: u64) -> Result<RfChunk<'_>, RfError> {
    let (wire, samples) =
        WireChunkHeader::ref_from_prefix(payload).map_err(|_| RfError::Truncated(payload.len()))?;
    let event = RfEventHeader {
        frame_no: wire.frame_no.get(),
        tx_index: wire.tx_index.get(),
        n_channels: wire.n_channels.get(),
        n_samples: wire.n_samples.get(),
        tx_ticks: wire.tx_ticks.get(),
        rx_offset_ns: wire.rx_offset_ns.get(),
        sample_rate_hz: wire.sample_rate_hz.get(),
    };
    let header = ChunkHeader {
        event,
        chunk_index: wire.chunk_index.get(),
        chunk_count: wire.chunk_count.get(),
        chunk_offset: wire.chunk_offset.get(),
    };
    if header.chunk_index >= header.chunk_count {
        return Err(RfError::ChunkIndex {
            index: header.chunk_index,
            count: header.chunk_count,
        });
    }
    let event_bytes = event.event_bytes();
    let max = max_event_bytes.min(MAX_EVENT_BYTES);
    if event_bytes == 0 || event_bytes > max {
        return Err(RfError::ShapeOverflow {
            n_channels: event.n_channels,
            n_samples: event.n_samples,
            bytes: event_bytes,
            max,
        });
    }
    if samples.is_empty()
        || !samples.len().is_multiple_of(2)
        || !header.chunk_offset.is_multiple_of(2)
    {
        return Err(RfError::Misaligned {
            offset: header.chunk_offset,
            len: samples.len(),
        });
    }
    if u64::from(header.chunk_offset) + samples.len() as u64 > event_bytes {
        return Err(RfError::OutsideEvent {
            offset: header.chunk_offset,
            len: samples.len(),
            event_bytes,
        });
    }
    Ok(RfChunk { header, samples })
}

/// The 40-byte chunk header.
pub fn encode_chunk_header(h: &ChunkHeader) -> [u8; CHUNK_HEADER_LEN] {
    let e = &h.event;
    let wire = WireChunkHeader {
        frame_no: U64::new(e.frame_no),
        tx_index: U16::new(e.tx_index),
        n_channels: U16::new(e.n_channels),
        n_samples: U32::new(e.n_samples),
        tx_ticks: U64::new(e.tx_ticks),
        rx_offset_ns: I32::new(e.rx_offset_ns),
        sample_rate_hz: U32::new(e.sample_rate_hz),
        chunk_index: U16::new(h.chunk_index),
        chunk_count: U16::new(h.chunk_count),
        chunk_offset: U32::new(h.chunk_offset),
    };
    zerocopy::transmute!(wire)
}

/// Appends one chunk payload (header + samples) to `out`.
pub fn encode_chunk(out: &mut Vec<u8>, h: &ChunkHeader, samples: &[u8]) {
    out.extend_from_slice(&encode_chunk_header(h));
    out.extend_from_slice(samples);
}

/// Splits an event of `event_bytes` sample bytes into chunks whose payload (header included)
/// is at most `max_payload` bytes: returns each chunk's header and its byte range in the
/// event. Chunks hold whole i16 samples; at most 65535 chunks (`None` beyond, or when
/// `max_payload` leaves no room for a sample).
pub fn plan_chunks(
    event: &RfEventHeader,
    max_payload: usize,
) -> Option<Vec<(ChunkHeader, std::ops::Range<usize>)>> {
    let total = usize::try_from(event.event_bytes()).ok()?;
    let room = max_payload.checked_sub(CHUNK_HEADER_LEN)? & !1;
    if room == 0 || total == 0 || total > u32::MAX as usize {
        return None;
    }
    let count = total.div_ceil(room);
    let chunk_count = u16::try_from(count).ok()?;
    Some(
        (0..count)
            .map(|i| {
                let start = i * room;
                let end = (start + room).min(total);
                (
                    ChunkHeader {
                        event: *event,
                        chunk_index: i as u16,
                        chunk_count,
                        chunk_offset: start as u32,
                    },
                    start..end,
                )
            })
            .collect(),
    )
}

/// A complete event: header and the whole sample array, bit-exact as the board sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RfEvent {
    /// Header.
    pub header: RfEventHeader,
    /// `n_channels * n_samples` little-endian i16, channel-major.
    pub samples: Vec<u8>,
}

/// Reassembly totals (what was lost is in [`RfReassembler::losses`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReassemblyCounts {
    /// Chunks of the complete events.
    pub chunks: u64,
    /// Events completed and emitted.
    pub events_complete: u64,
    /// Events never completed (also counted under `us_incomplete_events`).
    pub events_incomplete: u64,
    /// Sample bytes of the complete events.
    pub event_bytes: u64,
}

struct OpenEvent {
    header: RfEventHeader,
    chunk_count: u16,
    /// One bit per chunk index.
    received: Vec<u64>,
    n_received: u32,
    /// (offset, len) of each accepted chunk.
    ranges: Vec<(u32, u32)>,
    data: Vec<u8>,
}

impl OpenEvent {
    fn has(&self, index: u16) -> bool {
        self.received[index as usize / 64] & (1 << (index % 64)) != 0
    }
    fn mark(&mut self, index: u16) {
        self.received[index as usize / 64] |= 1 << (index % 64);
        self.n_received += 1;
    }
    /// True when the accepted chunks tile the event exactly.
    fn covers_exactly(&mut self) -> bool {
        self.ranges.sort_unstable();
        let mut at = 0u64;
        for &(o, l) in &self.ranges {
            if u64::from(o) != at {
                return false;
            }
            at += u64::from(l);
        }
        at == self.header.event_bytes()
    }
}

/// Collects chunks per (frame_no, tx_index) until all of an event's chunks arrived; see the
/// module documentation. Loss reasons: every [`RfError::reason`], `us_incomplete_events`,
/// `us_incomplete_event_chunks` (chunks held by them), `us_duplicate_chunks` (a chunk index
/// already received, or a chunk of an event already emitted), `us_conflicting_chunks` (the
/// event header or chunk_count differs from the event's first chunk), `us_late_chunks` (a
/// chunk of an event already given up as incomplete), `us_inconsistent_events` (all
/// chunk_count chunks arrived but do not tile the event: gaps or overlaps; not emitted).
pub struct RfReassembler {
    max_open_events: usize,
    max_event_bytes: u64,
    open: VecDeque<OpenEvent>,
    /// Keys of events recently emitted / given up, to recognise their stragglers.
    closed: VecDeque<((u64, u16), bool)>,
    closed_set: HashSet<(u64, u16)>,
    closed_incomplete: HashSet<(u64, u16)>,
    pool: Vec<Vec<u8>>,
    counts: ReassemblyCounts,
    losses: LossCounts,
}

impl RfReassembler {
    /// A reassembler keeping at most `max_open_events` (>= 1) events open, each at most
    /// `max_event_bytes` (capped at [`MAX_EVENT_BYTES`]).
    pub fn new(max_open_events: usize, max_event_bytes: u64) -> Self {
        Self {
            max_open_events: max_open_events.max(1),
            max_event_bytes: max_event_bytes.min(MAX_EVENT_BYTES),
            open: VecDeque::new(),
            closed: VecDeque::new(),
            closed_set: HashSet::new(),
            closed_incomplete: HashSet::new(),
            pool: Vec::new(),
            counts: ReassemblyCounts::default(),
            losses: LossCounts::default(),
        }
    }

    /// Totals so far.
    pub fn counts(&self) -> &ReassemblyCounts {
        &self.counts
    }

    /// Losses so far, by reason.
    pub fn losses(&self) -> &LossCounts {
        &self.losses
    }

    /// Events currently open.
    pub fn open_events(&self) -> usize {
        self.open.len()
    }

    /// Gives an emitted event's buffer back for reuse (saves an allocation per event).
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.pool.len() < 2 * self.max_open_events {
            buffer.clear();
            self.pool.push(buffer);
        }
    }

    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b.resize(len, 0);
        b
    }

    fn remember_closed(&mut self, key: (u64, u16), incomplete: bool) {
        let limit = 4 * self.max_open_events + 16;
        while self.closed.len() >= limit {
            if let Some((old, inc)) = self.closed.pop_front() {
                self.closed_set.remove(&old);
                if inc {
                    self.closed_incomplete.remove(&old);
                }
            }
        }
        if self.closed_set.insert(key) {
            self.closed.push_back((key, incomplete));
            if incomplete {
                self.closed_incomplete.insert(key);
            }
        }
    }

    fn give_up(&mut self, ev: OpenEvent) {
        self.counts.events_incomplete += 1;
        self.losses.add(LossReason::UsIncompleteEvents, 1);
        self.losses.add(
            LossReason::UsIncompleteEventChunks,
            u64::from(ev.n_received),
        );
        let key = ev.header.key();
        self.recycle(ev.data);
        self.remember_closed(key, true);
    }

    /// Takes one format-4 payload; calls `emit` with each event it completes (at most one).
    pub fn push(&mut self, payload: &[u8], emit: &mut impl FnMut(RfEvent)) {
        let chunk = match decode_chunk_limited(payload, self.max_event_bytes) {
            Ok(c) => c,
            Err(e) => {
                self.losses.add(e.reason(), 1);
                return;
            }
        };
        let h = chunk.header;
        let key = h.event.key();
        let len = chunk.samples.len();
        let offset = h.chunk_offset as usize;
        // Fast path: a single-chunk event is complete on arrival.
        if h.chunk_count == 1 && !self.closed_set.contains(&key) {
            if self.open.iter().any(|o| o.header.key() == key) {
                self.losses.add(LossReason::UsConflictingChunks, 1);
                return;
            }
            if offset != 0 || len as u64 != h.event.event_bytes() {
                self.losses.add(LossReason::UsInconsistentEvents, 1);
                self.remember_closed(key, true);
                return;
            }
            let mut data = self.buffer(0);
            data.extend_from_slice(chunk.samples);
            self.complete(h.event, data, 1, emit);
            return;
        }
        let pos = self.open.iter().rposition(|o| o.header.key() == key);
        let pos = match pos {
            Some(p) => p,
            None => {
                if self.closed_set.contains(&key) {
                    let reason = if self.closed_incomplete.contains(&key) {
                        LossReason::UsLateChunks
                    } else {
                        LossReason::UsDuplicateChunks
                    };
                    self.losses.add(reason, 1);
                    return;
                }
                while self.open.len() >= self.max_open_events {
                    if let Some(old) = self.open.pop_front() {
                        self.give_up(old);
                    }
                }
                let words = (h.chunk_count as usize).div_ceil(64);
                let data = self.buffer(h.event.event_bytes() as usize);
                self.open.push_back(OpenEvent {
                    header: h.event,
                    chunk_count: h.chunk_count,
                    received: vec![0; words],
                    n_received: 0,
                    ranges: Vec::with_capacity(h.chunk_count as usize),
                    data,
                });
                self.open.len() - 1
            }
        };
        let ev = &mut self.open[pos];
        if ev.header != h.event || ev.chunk_count != h.chunk_count {
            self.losses.add(LossReason::UsConflictingChunks, 1);
            return;
        }
        if ev.has(h.chunk_index) {
            self.losses.add(LossReason::UsDuplicateChunks, 1);
            return;
        }
        ev.mark(h.chunk_index);
        ev.ranges.push((h.chunk_offset, len as u32));
        ev.data[offset..offset + len].copy_from_slice(chunk.samples);
        if ev.n_received == u32::from(ev.chunk_count) {
            let Some(mut ev) = self.open.remove(pos) else {
                return;
            };
            if !ev.covers_exactly() {
                self.losses.add(LossReason::UsInconsistentEvents, 1);
                self.losses.add(
                    LossReason::UsIncompleteEventChunks,
                    u64::from(ev.n_received),
                );
                self.recycle(ev.data);
                self.remember_closed(key, true);
                return;
            }
            self.complete(ev.header, ev.data, u64::from(ev.n_received), emit);
        }
    }

    fn complete(
        &mut self,
        header: RfEventHeader,
        samples: Vec<u8>,
        chunks: u64,
        emit: &mut impl FnMut(RfEvent),
    ) {
        self.counts.chunks += chunks;
        self.counts.events_complete += 1;
        self.counts.event_bytes += samples.len() as u64;
        self.remember_closed(header.key(), false);
        emit(RfEvent { header, samples });
    }

    /// Ends the stream: every event still open is counted incomplete and dropped.
    pub fn finish(&mut self) {
        while let Some(ev) = self.open.pop_front() {
            self.give_up(ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(frame_no: u64, tx_index: u16, n_channels: u16, n_samples: u32) -> RfEventHeader {
        RfEventHeader {
            frame_no,
            tx_index,
            n_channels,
            n_samples,
            tx_ticks: 123_456_789,
            rx_offset_ns: -250,
            sample_rate_hz: 25_000_000,
        }
    }

    fn chunks_of(ev: &RfEventHeader, data: &[u8], max_payload: usize) -> Vec<Vec<u8>> {
        plan_chunks(ev, max_payload)
            .unwrap()
            .into_iter()
            .map(|(h, r)| {
                let mut p = Vec::new();
                encode_chunk(&mut p, &h, &data[r]);
                p
            })
            .collect()
    }

    #[test]
    fn decode_errors_name_their_reason() {
        let ev = header(1, 0, 4, 8);
        let mut p = Vec::new();
        let h = ChunkHeader {
            event: ev,
            chunk_index: 0,
            chunk_count: 1,
            chunk_offset: 0,
        };
        encode_chunk(&mut p, &h, &[7u8; 64]);
        // The test vector of docs/ultrasound.md.
        let expect: [u8; 40] = [
            1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 8, 0, 0, 0, 0x15, 0xcd, 0x5b, 0x07, 0, 0, 0, 0,
            0x06, 0xff, 0xff, 0xff, 0x40, 0x78, 0x7d, 0x01, 0, 0, 1, 0, 0, 0, 0, 0,
        ];
        assert_eq!(&p[..40], &expect[..]);
        assert_eq!(decode_chunk(&p).unwrap().samples, &[7u8; 64][..]);
        assert_eq!(
            decode_chunk(&p[..39]).unwrap_err().reason(),
            LossReason::UsTruncatedChunks
        );
        let mut bad = p.clone();
        bad.push(0);
        bad.push(0);
        assert_eq!(
            decode_chunk(&bad).unwrap_err().reason(),
            LossReason::UsChunkOutsideEvent
        );
        let mut odd = p.clone();
        odd.pop();
        assert_eq!(
            decode_chunk(&odd).unwrap_err().reason(),
            LossReason::UsMisalignedChunks
        );
        let mut idx = p.clone();
        idx[32] = 1;
        assert_eq!(
            decode_chunk(&idx).unwrap_err().reason(),
            LossReason::UsBadChunkIndex
        );
        let mut shape = p.clone();
        shape[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        shape[10..12].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(
            decode_chunk(&shape).unwrap_err().reason(),
            LossReason::UsBadEventShape
        );
    }

    #[test]
    fn reassembles_out_of_order_and_counts_incomplete() {
        let ev = header(5, 2, 3, 1000);
        let data: Vec<u8> = (0..6000u32).map(|i| (i * 7) as u8).collect();
        let mut chunks = chunks_of(&ev, &data, 1000);
        assert_eq!(chunks.len(), 7);
        chunks.reverse();
        let mut r = RfReassembler::new(4, 1 << 20);
        let mut out = Vec::new();
        for c in &chunks {
            r.push(c, &mut |e| out.push(e));
        }
        // A duplicate after completion is recognised.
        r.push(&chunks[0], &mut |e| out.push(e));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].samples, data);
        assert_eq!(out[0].header, ev);
        assert_eq!(r.losses().get(LossReason::UsDuplicateChunks), 1);
        assert_eq!(r.counts().chunks, 7);
        // An event missing one chunk is never emitted.
        let ev2 = header(6, 0, 3, 1000);
        for c in chunks_of(&ev2, &data, 1000).iter().skip(1) {
            r.push(c, &mut |e| out.push(e));
        }
        r.finish();
        assert_eq!(out.len(), 1);
        assert_eq!(r.losses().get(LossReason::UsIncompleteEvents), 1);
        assert_eq!(r.losses().get(LossReason::UsIncompleteEventChunks), 6);
    }

    #[test]
    fn bounded_open_events_push_out_the_oldest() {
        let data = vec![1u8; 4000];
        let mut r = RfReassembler::new(2, 1 << 20);
        let mut out = Vec::new();
        let evs: Vec<_> = (0..3).map(|f| header(f, 0, 2, 1000)).collect();
        let cs: Vec<_> = evs.iter().map(|e| chunks_of(e, &data, 2040)).collect();
        // First chunk of each of three events: the first is pushed out.
        for c in &cs {
            r.push(&c[0], &mut |e| out.push(e));
        }
        assert_eq!(r.losses().get(LossReason::UsIncompleteEvents), 1);
        // Its straggler is late, not a new event.
        r.push(&cs[0][1], &mut |e| out.push(e));
        assert_eq!(r.losses().get(LossReason::UsLateChunks), 1);
        r.push(&cs[1][1], &mut |e| out.push(e));
        r.push(&cs[2][1], &mut |e| out.push(e));
        assert_eq!(out.len(), 2);
        r.finish();
        assert_eq!(r.counts().events_incomplete, 1);
    }
}
