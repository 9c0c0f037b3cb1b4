//! Transport-level ingest of one input (a UDP socket or a TCP connection): validates each
//! packet's header and CRC, applies the front-end address allowlist, tracks sequence numbers per
//! board (gaps, duplicates, reordering), restores packet order within a small window, and hands
//! per-board chunks to a ring: whole PETsys frames for PET boards, packet payloads with their
//! boundaries for stream boards (OPM-MEG, ultrasound; see [`crate::streams`]). Every packet is
//! counted under a reason.

use crate::live_stats::{BoardTransportSnapshot, InputSnapshot, LatestCell};
use crate::ring::{RingClosed, RingItem, RingProducer};
use crate::seq_tracker::{SeqTracker, SeqVerdict};
use scandaq_core::LossCounts;
use scandaq_decoders::transport::{self, FLAG_END_OF_STREAM, payload_format};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Packets held back waiting for a gap to fill before the gap is given up on.
pub const REORDER_HOLD: usize = 64;
/// A board's pending frames are handed on once they reach this size.
const CHUNK_BYTES: usize = 256 << 10;

/// Whole frames of one board, in packet order, handed from an input to the processing stage.
#[derive(Debug, Default)]
pub struct FrameChunk {
    /// Board (transport source_id).
    pub source_id: u32,
    /// The board's data payload format (0 while only control packets have been seen).
    pub payload_format: u16,
    /// PETsys frames back to back (PET boards), or packet payloads back to back (streams).
    pub frames: Vec<u8>,
    /// Stream boards only: for each payload in `frames`, its payload format (data or
    /// control) and its end offset in `frames`.
    pub payload_ends: Vec<(u16, u32)>,
    /// Packets whose payloads are in `frames`.
    pub packets: u64,
    /// The board said end of stream.
    pub end_of_stream: bool,
    /// Packets exactly as received from allowed senders, in arrival order (for the raw
    /// archive), when archiving; may be carried by a chunk of any board.
    pub raw: Vec<u8>,
    /// Packets in `raw`.
    pub raw_packets: u64,
}

impl RingItem for FrameChunk {
    fn packets(&self) -> u64 {
        self.packets
    }
    fn bytes(&self) -> u64 {
        self.frames.len() as u64
    }
}

/// Per-board transport accounting.
#[derive(Debug, Default, Clone)]
pub struct BoardCounts {
    /// Sequence accounting.
    pub seq: SeqTracker,
    /// Payload bytes accepted.
    pub payload_bytes: u64,
    /// End of stream seen.
    pub ended: bool,
    /// Control packets of a PETsys board (it has no use for them), dropped.
    pub control_dropped: u64,
    /// Packets of this board dropped because the ring to processing was full.
    pub ring_dropped_packets: u64,
    /// Their payload bytes.
    pub ring_dropped_bytes: u64,
    /// PETsys hits in them (from the frame headers).
    pub ring_dropped_hits: u64,
}

/// Hits in whole PETsys frames (read from the frame headers only).
fn hits_in_frames(frames: &[u8]) -> u64 {
    let mut spans = Vec::new();
    scandaq_decoders::FrameScanner::new().scan(frames, true, &mut spans);
    spans.iter().map(|s| s.n_hits as u64).sum()
}

#[derive(Debug, Default)]
struct Board {
    counts: BoardCounts,
    next_seq: Option<u64>,
    /// Data payload format, fixed by the board's first data packet.
    format: Option<u16>,
    held: BTreeMap<u64, (u16, Vec<u8>)>,
    pending: FrameChunk,
}

/// Ingest state of one input.
pub struct Ingest {
    allow: BTreeSet<IpAddr>,
    boards: BTreeMap<u32, Board>,
    ring: RingProducer<FrameChunk>,
    archive: bool,
    raw: Vec<u8>,
    raw_packets: u64,
    /// Input-level losses by reason (bad headers, CRC errors, foreign senders, ...).
    pub losses: LossCounts,
    /// Packets and bytes that arrived (before any check).
    pub packets_in: u64,
    /// Bytes that arrived.
    pub bytes_in: u64,
    /// Datagrams the kernel dropped on this input's socket (UDP), as last read.
    pub kernel_drops: u64,
    published: Option<(String, Arc<LatestCell<InputSnapshot>>)>,
}

impl Ingest {
    /// New ingest; an empty `allow` list accepts every sender.
    pub fn new(allow: Vec<IpAddr>, ring: RingProducer<FrameChunk>, archive: bool) -> Self {
        Self {
            allow: allow.into_iter().collect(),
            boards: BTreeMap::new(),
            ring,
            archive,
            raw: Vec::new(),
            raw_packets: 0,
            losses: LossCounts::default(),
            packets_in: 0,
            bytes_in: 0,
            kernel_drops: 0,
            published: None,
        }
    }

    /// Publishes this input's counters into `cell` (labelled `label`) at every flush.
    pub fn publish_into(&mut self, label: String, cell: Arc<LatestCell<InputSnapshot>>) {
        self.published = Some((label, cell));
        self.publish(true);
    }

    /// Copies the counters into the published cell; with `wait` false it never blocks (a
    /// reader holding the cell makes it skip this time).
    pub fn publish(&self, wait: bool) {
        let Some((label, cell)) = &self.published else {
            return;
        };
        let snapshot = || {
            let ring = self.ring.stats();
            InputSnapshot {
                label: label.clone(),
                packets_in: self.packets_in,
                bytes_in: self.bytes_in,
                losses: self.losses.0.clone(),
                ring_fill: self.ring.fill() as u64,
                ring_capacity: self.ring.capacity() as u64,
                ring_dropped_packets: ring.dropped_packets.load(Ordering::Relaxed),
                ring_blocked_ms: ring.blocked_ns.load(Ordering::Relaxed) / 1_000_000,
                kernel_drops: self.kernel_drops,
                boards: self
                    .boards
                    .iter()
                    .map(|(&id, b)| BoardTransportSnapshot {
                        source_id: id,
                        packets_received: b.counts.seq.received,
                        packets_missing: b.counts.seq.missing(),
                        duplicates: b.counts.seq.duplicates,
                        out_of_order: b.counts.seq.out_of_order,
                        payload_bytes: b.counts.payload_bytes,
                        ended: b.counts.ended,
                    })
                    .collect(),
            }
        };
        if wait {
            cell.publish(snapshot());
        } else {
            cell.try_publish(snapshot);
        }
    }

    /// Per-board counts.
    pub fn boards(&self) -> BTreeMap<u32, BoardCounts> {
        self.boards
            .iter()
            .map(|(&id, b)| (id, b.counts.clone()))
            .collect()
    }

    /// True when every board seen has sent end-of-stream (a closed connection is then normal).
    pub fn all_ended(&self) -> bool {
        !self.boards.is_empty() && self.boards.values().all(|b| b.counts.ended)
    }

    /// True when `peer` may send to us.
    pub fn allowed(&self, peer: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.contains(&peer)
    }

    /// Accounts for one whole packet from `peer`.
    pub fn accept(&mut self, peer: IpAddr, packet: &[u8]) -> Result<(), RingClosed> {
        self.packets_in += 1;
        self.bytes_in += packet.len() as u64;
        if !self.allowed(peer) {
            self.losses.add("foreign_sender_packets", 1);
            return Ok(());
        }
        if self.archive {
            self.raw.extend_from_slice(packet);
            self.raw_packets += 1;
        }
        let (header, payload) = match transport::decode_packet(packet) {
            Ok(x) => x,
            Err(e) => {
                self.losses.add(e.reason(), 1);
                return Ok(());
            }
        };
        let format = header.payload_format;
        let is_control = format == payload_format::CONTROL;
        if !is_control && !is_supported_data_format(format) {
            self.losses.add("unsupported_payload_format", 1);
            return Ok(());
        }
        let board = self.boards.entry(header.source_id).or_default();
        board.pending.source_id = header.source_id;
        let mut format_changed = false;
        if !is_control {
            match board.format {
                None => {
                    board.format = Some(format);
                    board.pending.payload_format = format;
                    if format == payload_format::PETSYS_TOFPET2 {
                        // Control packets that came first: PETsys boards have none to use.
                        let n = board.pending.payload_ends.len() as u64;
                        board.counts.control_dropped += n;
                        board.pending.frames.clear();
                        board.pending.payload_ends.clear();
                    }
                }
                Some(f) if f != format => {
                    // Dropped below, after it has taken its place in the sequence.
                    self.losses.add("payload_format_changed_packets", 1);
                    format_changed = true;
                }
                Some(_) => {}
            }
        }
        let end = header.flags & FLAG_END_OF_STREAM != 0;
        if end && board.counts.ended {
            // Repeated end markers (UDP senders repeat them) are expected, not duplicates.
            return Ok(());
        }
        match board.counts.seq.observe(header.seq) {
            SeqVerdict::Duplicate | SeqVerdict::TooLate => return Ok(()),
            SeqVerdict::InOrder | SeqVerdict::Late => {}
        }
        let payload = if format_changed { &[][..] } else { payload };
        board.counts.payload_bytes += payload.len() as u64;
        if end {
            board.counts.ended = true;
        }

        // Restore packet order within REORDER_HOLD packets.
        match board.next_seq {
            Some(next) if header.seq < next => {
                // A late packet whose gap was already given up on: deliver it as it is.
                deliver(board, format, payload);
            }
            _ => {
                board.held.insert(header.seq, (format, payload.to_vec()));
                release_in_order(board, end);
            }
        }
        board.pending.end_of_stream |= end;
        if board.pending.frames.len() >= CHUNK_BYTES || end {
            Self::hand_on(&mut self.ring, board, &mut self.raw, &mut self.raw_packets)?;
        }
        Ok(())
    }

    /// Hands every board's pending frames on (call periodically and at the end).
    pub fn flush(&mut self, final_flush: bool) -> Result<(), RingClosed> {
        for board in self.boards.values_mut() {
            if final_flush {
                release_in_order(board, true);
            }
            if board.pending.packets > 0 || board.pending.end_of_stream {
                Self::hand_on(&mut self.ring, board, &mut self.raw, &mut self.raw_packets)?;
            }
        }
        if !self.raw.is_empty() {
            // Packets that reached no board's frames (rejected ones) still go to the archive.
            let chunk = FrameChunk {
                source_id: u32::MAX,
                raw: std::mem::take(&mut self.raw),
                raw_packets: std::mem::take(&mut self.raw_packets),
                ..Default::default()
            };
            self.ring.push(chunk)?;
        }
        self.publish(final_flush);
        Ok(())
    }

    fn hand_on(
        ring: &mut RingProducer<FrameChunk>,
        board: &mut Board,
        raw: &mut Vec<u8>,
        raw_packets: &mut u64,
    ) -> Result<(), RingClosed> {
        let id = board.pending.source_id;
        let format = board.pending.payload_format;
        board.pending.raw = std::mem::take(raw);
        board.pending.raw_packets = std::mem::take(raw_packets);
        let chunk = std::mem::replace(
            &mut board.pending,
            FrameChunk {
                source_id: id,
                payload_format: format,
                ..Default::default()
            },
        );
        let Some(dropped) = ring.push_or_return(chunk)? else {
            return Ok(());
        };
        // The ring was full: the chunk is lost (the ring counted it); say what was in it.
        board.counts.ring_dropped_packets += dropped.packets;
        board.counts.ring_dropped_bytes += dropped.frames.len() as u64;
        if format == payload_format::PETSYS_TOFPET2 {
            board.counts.ring_dropped_hits += hits_in_frames(&dropped.frames);
        }
        if dropped.end_of_stream {
            // The end marker itself must arrive, or the run would wait for this board.
            ring.push_blocking(FrameChunk {
                source_id: id,
                payload_format: format,
                end_of_stream: true,
                ..Default::default()
            })?;
        }
        Ok(())
    }
}

/// Moves held packets into the board's pending frames in sequence order; gives up on a gap
/// once more than REORDER_HOLD packets wait behind it (or when `all`).
fn release_in_order(board: &mut Board, all: bool) {
    while let Some((&seq, _)) = board.held.first_key_value() {
        let in_order = board.next_seq.is_none_or(|n| seq <= n);
        if !(in_order || all || board.held.len() > REORDER_HOLD) {
            break;
        }
        if let Some((format, payload)) = board.held.remove(&seq) {
            deliver(board, format, &payload);
        }
        board.next_seq = Some(seq + 1);
    }
}

/// Data payload formats ingest hands on (PETsys frames, and the stream formats).
fn is_supported_data_format(format: u16) -> bool {
    matches!(
        format,
        payload_format::PETSYS_TOFPET2 | payload_format::OPM_BLOCK | payload_format::US_RF_EVENT
    )
}

/// Appends one packet's payload to the board's pending chunk; stream boards (and boards
/// whose data format is not known yet) keep each payload's boundary.
fn deliver(board: &mut Board, format: u16, payload: &[u8]) {
    board.pending.packets += 1;
    if format == payload_format::CONTROL && board.format == Some(payload_format::PETSYS_TOFPET2) {
        // PETsys boards have no control records; the packet kept its place in the sequence.
        board.counts.control_dropped += 1;
        return;
    }
    if payload.is_empty() {
        return; // end-of-stream markers
    }
    board.pending.frames.extend_from_slice(payload);
    if board.format != Some(payload_format::PETSYS_TOFPET2) {
        let end = u32::try_from(board.pending.frames.len()).unwrap_or(u32::MAX);
        board.pending.payload_ends.push((format, end));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{OverflowPolicy, ring};
    use scandaq_decoders::petsys::encode_frame;
    use scandaq_decoders::transport::encode_packet;
    use std::net::Ipv4Addr;

    fn packet(source: u32, seq: u64, frame_id: u64) -> Vec<u8> {
        let mut payload = Vec::new();
        encode_frame(&mut payload, frame_id, false, &[frame_id]);
        let mut p = Vec::new();
        encode_packet(
            &mut p,
            payload_format::PETSYS_TOFPET2,
            source,
            seq,
            0,
            &payload,
            true,
        );
        p
    }

    #[test]
    fn reorders_counts_and_rejects() {
        let (p, mut c) = ring::<FrameChunk>(16, OverflowPolicy::Block);
        let me = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let stranger = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
        let mut ingest = Ingest::new(vec![me], p, false);
        for seq in [0, 2, 1, 1, 3] {
            ingest.accept(me, &packet(7, seq, 100 + seq)).unwrap();
        }
        ingest.accept(stranger, &packet(7, 4, 104)).unwrap();
        let mut bad = packet(7, 5, 105);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        ingest.accept(me, &bad).unwrap();
        ingest.flush(true).unwrap();
        let b = &ingest.boards()[&7];
        assert_eq!(
            (b.seq.received, b.seq.duplicates, b.seq.out_of_order),
            (4, 1, 1)
        );
        assert_eq!(ingest.losses.get("foreign_sender_packets"), 1);
        assert_eq!(ingest.losses.get("crc_error"), 1);
        let chunk = c.pop().unwrap();
        assert_eq!(chunk.packets, 4);
        // Frames delivered in sequence order 100, 101, 102, 103.
        let ids: Vec<u64> = chunk
            .frames
            .chunks(24)
            .map(|f| u64::from_le_bytes(f[..8].try_into().unwrap()) & 0xf_ffff_ffff)
            .collect();
        assert_eq!(ids, vec![100, 101, 102, 103]);
    }

    #[test]
    fn ring_overflow_is_counted_per_board_and_the_end_marker_still_arrives() {
        let (p, mut c) = ring::<FrameChunk>(1, OverflowPolicy::Drop);
        let me = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut ingest = Ingest::new(vec![], p, false);
        // Chunk 1 (2 packets, 2 hits) fills the ring; chunk 2 (3 packets, 3 hits) is dropped.
        for seq in 0..2 {
            ingest.accept(me, &packet(4, seq, seq)).unwrap();
        }
        ingest.flush(false).unwrap();
        for seq in 2..5 {
            ingest.accept(me, &packet(4, seq, seq)).unwrap();
        }
        ingest.flush(false).unwrap();
        let b = &ingest.boards()[&4];
        assert_eq!((b.ring_dropped_packets, b.ring_dropped_hits), (3, 3));
        // The last chunk carries the end marker while the ring is still full: its data is
        // dropped and counted, the marker waits for room (a consumer frees it later).
        let consumer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let mut got = Vec::new();
            while got.len() < 2 {
                match c.pop() {
                    Some(chunk) => got.push(chunk),
                    None => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
            got
        });
        ingest.accept(me, &packet(4, 5, 5)).unwrap();
        let mut end = Vec::new();
        encode_packet(
            &mut end,
            payload_format::PETSYS_TOFPET2,
            4,
            6,
            FLAG_END_OF_STREAM,
            &[],
            true,
        );
        ingest.accept(me, &end).unwrap();
        ingest.flush(true).unwrap();
        let got = consumer.join().unwrap();
        assert_eq!(got[0].packets, 2);
        assert!(got[1].end_of_stream && got[1].frames.is_empty());
        let b = &ingest.boards()[&4];
        assert_eq!((b.ring_dropped_packets, b.ring_dropped_hits), (5, 4));
    }

    fn stream_packet(source: u32, seq: u64, format: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        encode_packet(&mut p, format, source, seq, 0, payload, true);
        p
    }

    #[test]
    fn stream_payloads_keep_boundaries_order_and_control_records() {
        let (p, mut c) = ring::<FrameChunk>(16, OverflowPolicy::Block);
        let me = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut ingest = Ingest::new(vec![], p, false);
        let ctl = payload_format::CONTROL;
        let opm = payload_format::OPM_BLOCK;
        // A control record first, then data arriving out of order, a duplicate, a format
        // change (dropped, counted) and an end-of-stream marker.
        let sent: [(u64, u16, &[u8]); 6] = [
            (0, ctl, b"sync0"),
            (2, opm, b"block-two"),
            (1, opm, b"block1"),
            (1, opm, b"block1"),
            (3, payload_format::US_RF_EVENT, b"rf"),
            (4, opm, b"b4"),
        ];
        for (seq, format, payload) in sent {
            ingest
                .accept(me, &stream_packet(3, seq, format, payload))
                .unwrap();
        }
        let mut end = Vec::new();
        encode_packet(&mut end, opm, 3, 5, FLAG_END_OF_STREAM, &[], true);
        ingest.accept(me, &end).unwrap();
        // A PETsys board's control packet is counted and dropped, its frames untouched.
        ingest.accept(me, &packet(9, 0, 50)).unwrap();
        ingest
            .accept(me, &stream_packet(9, 1, ctl, b"sync"))
            .unwrap();
        ingest.accept(me, &packet(9, 2, 51)).unwrap();
        ingest.flush(true).unwrap();
        assert_eq!(ingest.losses.get("payload_format_changed_packets"), 1);
        let mut chunks = Vec::new();
        while let Some(chunk) = c.pop() {
            chunks.push(chunk);
        }
        let stream: Vec<&FrameChunk> = chunks.iter().filter(|c| c.source_id == 3).collect();
        assert_eq!(stream.len(), 1, "{chunks:?}");
        let chunk = stream[0];
        assert_eq!(chunk.payload_format, opm);
        assert!(chunk.end_of_stream);
        let mut start = 0;
        let mut got = Vec::new();
        for &(format, end) in &chunk.payload_ends {
            got.push((format, &chunk.frames[start..end as usize]));
            start = end as usize;
        }
        let want: Vec<(u16, &[u8])> = vec![
            (ctl, b"sync0"),
            (opm, b"block1"),
            (opm, b"block-two"),
            (opm, b"b4"),
        ];
        assert_eq!(got, want);
        let pet = chunks.iter().find(|c| c.source_id == 9).unwrap();
        assert_eq!(pet.payload_format, payload_format::PETSYS_TOFPET2);
        assert!(pet.payload_ends.is_empty());
        assert_eq!(pet.frames.len(), 48, "two frames, no control bytes");
        assert_eq!(ingest.boards()[&9].control_dropped, 1);
        assert_eq!(ingest.boards()[&9].seq.missing(), 0);
    }
}
