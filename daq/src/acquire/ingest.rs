//! Transport-level ingest of one input (a UDP socket, a TCP connection or a raw archive):
//! validates each packet's header and CRC, applies the front-end address allowlist and the
//! expected-boards list (or the board cap), tracks sequence numbers per board (gaps,
//! duplicates, reordering, implausible numbers, jumps, restarts; see [`crate::acquire::seq_tracker`]),
//! restores packet order within a small window, and hands per-board chunks to a ring: whole
//! PETsys frames for PET boards, packet payloads with their boundaries for stream boards
//! (OPM-MEG, ultrasound; see [`crate::process::streams`]). Every packet is counted under exactly one
//! outcome, and what an operator must act on (a rejected sender, an unknown board, a restart)
//! becomes a warning in the input's snapshot.
//!
//! A board restart (start-of-stream flag, or a confirmed jump back) opens a new *session*:
//! the old session's data is handed on first, and the chunks carry the session number so the
//! processing stage can decode the new session on its own clock.

use crate::acquire::ring::{RingClosed, RingItem, RingProducer};
use crate::acquire::seq_tracker::{SeqTracker, SeqVerdict, SuspectOutcome};
use crate::observe::live_stats::{BoardTransportSnapshot, InputSnapshot, LatestCell};
use bytes::Bytes;
use scandaq_core::LossCounts;
use scandaq_core::LossReason;
use scandaq_decoders::transport::{
    self, FLAG_CRC, FLAG_END_OF_STREAM, FLAG_START_OF_STREAM, payload_format,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Packets held back waiting for a gap to fill before the gap is given up on.
pub const REORDER_HOLD: usize = 64;
/// A board's pending frames are handed on once they reach this size.
const CHUNK_BYTES: usize = 256 << 10;
/// Boards one input accepts when no expected-boards list is given; packets of further source
/// ids are counted as `excess_source_packets`.
pub const MAX_BOARDS: usize = 256;
/// Warnings kept per input.
const MAX_WARNINGS: usize = 32;
/// Rejected senders / unknown source ids named in warnings, per input.
const MAX_NAMED: usize = 16;
/// Restart events kept per board (all are counted).
pub const MAX_RESTART_EVENTS: usize = 16;
/// Default time a TCP input waits for its first connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Ingest policies of one input beyond the allowlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestOptions {
    /// The boards (source ids) expected; packets of others are counted as
    /// `unknown_source_packets`. None: any, up to [`MAX_BOARDS`].
    pub expected_boards: Option<Vec<u32>>,
    /// TCP: the run fails if no connection is made within this time.
    pub connect_timeout: Duration,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            expected_boards: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

pub use crate::process::frame_chunk::FrameChunk;

impl RingItem for FrameChunk {
    fn packets(&self) -> u64 {
        self.packets
    }
    fn bytes(&self) -> u64 {
        self.frames.len() as u64
    }
}

/// A board restart as ingest saw it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestartEvent {
    /// The session it opened (1 for the first restart).
    pub session: u32,
    /// Milliseconds since the input started.
    pub at_ms: u64,
    /// Packets the input had received before it.
    pub after_packets: u64,
    /// Sequence number of the new session's first packet.
    pub first_seq: u64,
    /// Highest sequence number of the session before.
    pub previous_highest_seq: u64,
}

/// Per-board transport accounting.
#[derive(Debug, Default, Clone)]
pub struct BoardCounts {
    /// Sequence accounting.
    pub seq: SeqTracker,
    /// Payload bytes accepted.
    pub payload_bytes: u64,
    /// End of stream seen (in the current session).
    pub ended: bool,
    /// Repeats of an end-of-stream marker (UDP senders repeat them; harmless, not data).
    pub repeated_end_markers: u64,
    /// Control packets of a PETsys board (it has no use for them), dropped.
    pub control_dropped: u64,
    /// Packets of this board dropped because the ring to processing was full.
    pub ring_dropped_packets: u64,
    /// Their payload bytes.
    pub ring_dropped_bytes: u64,
    /// PETsys hits in them (from the frame headers).
    pub ring_dropped_hits: u64,
    /// The first [`MAX_RESTART_EVENTS`] restarts (`seq.restarts` counts all).
    pub restarts: Vec<RestartEvent>,
}

/// Hits in whole PETsys frames (read from the frame headers only).
fn hits_in_frames(frames: &[u8]) -> u64 {
    let mut spans = Vec::new();
    scandaq_decoders::FrameScanner::new().scan(frames, true, &mut spans);
    spans.iter().map(|s| s.n_hits as u64).sum()
}

/// A packet held while the board's next packet decides whether its number is believed.
#[derive(Debug)]
struct Suspect {
    seq: u64,
    format: u16,
    flags: u32,
    payload: Bytes,
}

/// A packet's payload: its bytes and, when they live in a shared receive buffer, a handle on
/// them, so that passing the packet through the reorder hold costs a reference count, not a
/// copy.
struct Payload<'a> {
    bytes: &'a [u8],
    shared: Option<Bytes>,
}

impl<'a> Payload<'a> {
    fn borrowed(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            shared: None,
        }
    }

    /// The payload to keep in the reorder hold. The shared handle only when `transient`
    /// (the packet leaves the hold before this packet's call returns): a packet that waits
    /// gets its own copy, so it never pins a whole receive batch.
    fn keep(self, transient: bool) -> Bytes {
        match self.shared {
            Some(b) if transient => b,
            _ => Bytes::copy_from_slice(self.bytes),
        }
    }
}

#[derive(Debug, Default)]
struct Board {
    counts: BoardCounts,
    session: u32,
    next_seq: Option<u64>,
    /// Data payload format, fixed by the board's first data packet.
    format: Option<u16>,
    held: BTreeMap<u64, (u16, Bytes)>,
    suspect: Option<Suspect>,
    pending: FrameChunk,
}

/// Ingest state of one input.
pub struct Ingest {
    allow: BTreeSet<IpAddr>,
    expected: Option<BTreeSet<u32>>,
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
    label: String,
    started: Instant,
    warnings: Vec<String>,
    named_senders: BTreeSet<IpAddr>,
    named_sources: BTreeSet<u32>,
    published: Option<(String, Arc<LatestCell<InputSnapshot>>)>,
}

impl Ingest {
    /// New ingest; an empty `allow` list accepts every sender.
    pub fn new(allow: Vec<IpAddr>, ring: RingProducer<FrameChunk>, archive: bool) -> Self {
        Self {
            allow: allow.into_iter().collect(),
            expected: None,
            boards: BTreeMap::new(),
            ring,
            archive,
            raw: Vec::new(),
            raw_packets: 0,
            losses: LossCounts::default(),
            packets_in: 0,
            bytes_in: 0,
            kernel_drops: 0,
            label: "input".into(),
            started: Instant::now(),
            warnings: Vec::new(),
            named_senders: BTreeSet::new(),
            named_sources: BTreeSet::new(),
            published: None,
        }
    }

    /// Applies the expected-boards list of `options`.
    pub fn with_options(mut self, options: &IngestOptions) -> Self {
        self.expected = options
            .expected_boards
            .as_ref()
            .map(|b| b.iter().copied().collect());
        self
    }

    /// Publishes this input's counters into `cell` (labelled `label`) at every flush.
    pub fn publish_into(&mut self, label: String, cell: Arc<LatestCell<InputSnapshot>>) {
        self.label = label.clone();
        self.published = Some((label, cell));
        self.publish();
    }

    /// Copies the counters into the published cell (lock-free: never waits for readers).
    pub fn publish(&self) {
        let Some((label, cell)) = &self.published else {
            return;
        };
        let snapshot = || {
            let ring = self.ring.stats();
            InputSnapshot {
                label: label.clone(),
                packets_in: self.packets_in,
                bytes_in: self.bytes_in,
                losses: self.losses.clone(),
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
                warnings: self.warnings.clone(),
            }
        };
        cell.publish(snapshot());
    }

    /// Per-board counts.
    pub fn boards(&self) -> BTreeMap<u32, BoardCounts> {
        self.boards
            .iter()
            .map(|(&id, b)| (id, b.counts.clone()))
            .collect()
    }

    /// Boards seen (bounded by the expected list or [`MAX_BOARDS`]).
    pub fn board_count(&self) -> usize {
        self.boards.len()
    }

    /// Packets held in memory: waiting for a gap to fill or as suspects (bounded: at most
    /// [`REORDER_HOLD`] + 2 per board).
    pub fn held_packets(&self) -> usize {
        self.boards
            .values()
            .map(|b| b.held.len() + usize::from(b.suspect.is_some()))
            .sum()
    }

    /// Warnings for the operator so far, oldest first.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// True when every board seen has sent end-of-stream (a closed connection is then normal).
    pub fn all_ended(&self) -> bool {
        !self.boards.is_empty() && self.boards.values().all(|b| b.counts.ended)
    }

    /// True when `peer` may send to us.
    pub fn allowed(&self, peer: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.contains(&peer)
    }

    fn warn(&mut self, text: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(text);
        }
    }

    /// Records (once per address, for the first few) a warning naming a sender the
    /// allowlist rejects, and how to accept it.
    pub fn warn_rejected_sender(&mut self, peer: IpAddr) {
        if self.named_senders.contains(&peer) || self.named_senders.len() > MAX_NAMED {
            return;
        }
        self.named_senders.insert(peer);
        if self.named_senders.len() > MAX_NAMED {
            let text = format!(
                "{}: more senders outside the allowlist; their packets are counted as foreign_sender_packets",
                self.label
            );
            self.warn(text);
            return;
        }
        let allowed: Vec<String> = self.allow.iter().map(|a| a.to_string()).collect();
        let text = format!(
            "{}: rejecting packets from {peer}, which is not in the allowlist ({}); counted as foreign_sender_packets. If {peer} is a front end, add --allow {peer} (or \"{peer}\" to the input's allow list in the run config)",
            self.label,
            allowed.join(", ")
        );
        self.warn(text);
    }

    /// Whether packets of the new board `id` are taken (the expected list, or the cap).
    fn admit_board(&mut self, id: u32) -> bool {
        let reason = match &self.expected {
            Some(expected) if expected.contains(&id) => return true,
            Some(_) => LossReason::UnknownSourcePackets,
            None if self.boards.len() < MAX_BOARDS => return true,
            None => LossReason::ExcessSourcePackets,
        };
        self.losses.add(reason, 1);
        if !self.named_sources.contains(&id) && self.named_sources.len() <= MAX_NAMED {
            self.named_sources.insert(id);
            let text = if self.named_sources.len() > MAX_NAMED {
                format!(
                    "{}: packets of more source ids are dropped, counted as {reason}",
                    self.label
                )
            } else if reason == LossReason::UnknownSourcePackets {
                let list: Vec<String> = self
                    .expected
                    .iter()
                    .flatten()
                    .map(|b| b.to_string())
                    .collect();
                format!(
                    "{}: packets of source id {id}, which is not an expected board ({}), are dropped, counted as unknown_source_packets; add it to --boards / run.boards if it is one",
                    self.label,
                    list.join(", ")
                )
            } else {
                format!(
                    "{}: packets of source id {id} are dropped: this input already has {MAX_BOARDS} boards (the limit without a list of expected boards); counted as excess_source_packets. Name the boards with --boards / run.boards",
                    self.label
                )
            };
            self.warn(text);
        }
        false
    }

    /// Accounts for one whole packet from `peer`.
    pub fn accept(&mut self, peer: IpAddr, packet: &[u8]) -> Result<(), RingClosed> {
        self.accept_packet(peer, packet, None)
    }

    /// [`Ingest::accept`] for a packet in a shared buffer (a UDP receive batch): a packet
    /// passing through in order is never copied before its board's pending chunk.
    pub fn accept_shared(&mut self, peer: IpAddr, packet: &Bytes) -> Result<(), RingClosed> {
        self.accept_packet(peer, packet, Some(packet))
    }

    fn accept_packet(
        &mut self,
        peer: IpAddr,
        packet: &[u8],
        shared: Option<&Bytes>,
    ) -> Result<(), RingClosed> {
        let Some((header, payload)) = self.check(peer, packet) else {
            return Ok(());
        };
        let shared = shared.and_then(|p| {
            let start = usize::from(header.header_len);
            let end = start + payload.len();
            (end <= p.len()).then(|| p.slice(start..end))
        });
        let format = header.payload_format;
        let id = header.source_id;
        let packets_in = self.packets_in;
        let board = self.boards.entry(id).or_default();
        board.pending.source_id = id;
        let start = header.flags & FLAG_START_OF_STREAM != 0;
        let end = header.flags & FLAG_END_OF_STREAM != 0;
        if end && board.counts.ended {
            // Repeated end markers (UDP senders repeat them) are expected, not duplicates.
            board.counts.repeated_end_markers += 1;
            return Ok(());
        }
        let fingerprint = match (start, header.flags & FLAG_CRC != 0) {
            (false, _) => 0,
            (true, true) => header.crc32c,
            (true, false) => crc32c::crc32c(payload),
        };
        let previous_highest = board.counts.seq.highest().unwrap_or(0);
        let seen = board.counts.seq.observe(header.seq, start, fingerprint);
        let ring = &mut self.ring;
        let (raw, raw_packets) = (&mut self.raw, &mut self.raw_packets);
        let mut restarted = None;
        let confirmed = match seen.suspect {
            Some(SuspectOutcome::Confirmed { restart }) => {
                let held = board.suspect.take();
                if let (true, Some(s)) = (restart, &held) {
                    new_session(ring, board, raw, raw_packets)?;
                    restarted = Some(s.seq);
                }
                held
            }
            Some(SuspectOutcome::Rejected) => {
                board.suspect = None;
                None
            }
            None => None,
        };
        if seen.restart {
            new_session(ring, board, raw, raw_packets)?;
            restarted = Some(header.seq);
        }
        let take = matches!(seen.verdict, SeqVerdict::InOrder | SeqVerdict::Late);
        let losses = &mut self.losses;
        let this = Payload {
            bytes: payload,
            shared,
        };
        let take_this = |board: &mut Board, losses: &mut LossCounts| {
            if take {
                place(board, losses, header.seq, format, header.flags, this);
            }
        };
        match confirmed {
            // The two in sequence order.
            Some(s) if take && s.seq > header.seq => {
                take_this(board, losses);
                place_suspect(board, losses, &s);
            }
            Some(s) => {
                place_suspect(board, losses, &s);
                take_this(board, losses);
            }
            None => take_this(board, losses),
        }
        if seen.verdict == SeqVerdict::Held {
            board.suspect = Some(Suspect {
                seq: header.seq,
                format,
                flags: header.flags,
                payload: Bytes::copy_from_slice(payload),
            });
        }
        if board.pending.frames.len() >= CHUNK_BYTES || board.pending.end_of_stream {
            hand_on(ring, board, raw, raw_packets)?;
        }
        if let Some(first_seq) = restarted {
            self.record_restart(id, first_seq, previous_highest, packets_in);
        }
        Ok(())
    }

    /// Counts the packet in, and checks it up to its board: the allowlist (it then goes to
    /// the archive), the header and CRC, the payload format, the board list or cap. The
    /// header and payload of a packet that passes; None (counted) for one that does not.
    fn check<'p>(
        &mut self,
        peer: IpAddr,
        packet: &'p [u8],
    ) -> Option<(transport::TransportHeader, &'p [u8])> {
        self.packets_in += 1;
        self.bytes_in += packet.len() as u64;
        if !self.allowed(peer) {
            self.losses.add(LossReason::ForeignSenderPackets, 1);
            self.warn_rejected_sender(peer);
            return None;
        }
        if self.archive {
            self.raw.extend_from_slice(packet);
            self.raw_packets += 1;
        }
        let (header, payload) = match transport::decode_packet(packet) {
            Ok(x) => x,
            Err(e) => {
                self.losses.add(e.reason(), 1);
                return None;
            }
        };
        let format = header.payload_format;
        if format != payload_format::CONTROL && !is_supported_data_format(format) {
            self.losses.add(LossReason::UnsupportedPayloadFormat, 1);
            return None;
        }
        let id = header.source_id;
        if !self.boards.contains_key(&id) && !self.admit_board(id) {
            return None;
        }
        Some((header, payload))
    }

    /// Records board `id`'s restart (its new session's first packet `first_seq`, the input's
    /// `packets_in`-th) and warns about it.
    fn record_restart(&mut self, id: u32, first_seq: u64, previous_highest: u64, packets_in: u64) {
        let Some(board) = self.boards.get_mut(&id) else {
            return;
        };
        let at_ms = self.started.elapsed().as_millis() as u64;
        let event = RestartEvent {
            session: board.session,
            at_ms,
            after_packets: packets_in - 1,
            first_seq,
            previous_highest_seq: previous_highest,
        };
        if board.counts.restarts.len() < MAX_RESTART_EVENTS {
            board.counts.restarts.push(event);
        }
        let session = board.session;
        let text = format!(
            "{}: board {id} restarted {:.3} s into the input (sequence {previous_highest} -> {first_seq}); its data from then on is session {session}, decoded on its own clock (singles flag bit 5, clock_rebased)",
            self.label,
            at_ms as f64 / 1e3,
        );
        self.warn(text);
    }

    /// Adds this input's per-board counts (`board.{id}.*` keys and run totals) to a run's
    /// `counts`, and its transport losses by reason to `losses` (call after the final flush).
    pub fn account(&self, counts: &mut BTreeMap<String, u64>, losses: &mut LossCounts) {
        let mut add = |key: String, n: u64| *counts.entry(key).or_insert(0) += n;
        for (id, board) in &self.boards {
            let b = &board.counts;
            let s = &b.seq;
            add(format!("board.{id}.packets_expected"), s.expected());
            add(format!("board.{id}.packets_received"), s.received);
            add(format!("board.{id}.packets_missing"), s.missing());
            add(format!("board.{id}.duplicates"), s.duplicates);
            add(format!("board.{id}.out_of_order"), s.out_of_order);
            add(format!("board.{id}.payload_bytes"), b.payload_bytes);
            add(format!("board.{id}.end_of_stream"), u64::from(b.ended));
            add(
                format!("board.{id}.ring_dropped_packets"),
                b.ring_dropped_packets,
            );
            add(format!("board.{id}.ring_dropped_hits"), b.ring_dropped_hits);
            add("out_of_order_packets".into(), s.out_of_order);
            for (key, n) in [
                ("missed_before_first_packet", s.missed_before_first()),
                ("implausible_sequence", s.implausible),
                ("sequence_jumps", s.jumps),
                ("restarts", s.restarts),
            ] {
                if n > 0 {
                    add(format!("board.{id}.{key}"), n);
                }
            }
            add("sequence_jumps".into(), s.jumps);
            add("board_restarts".into(), s.restarts);
            for (k, r) in b.restarts.iter().enumerate() {
                let p = format!("board.{id}.restart.{k}");
                add(format!("{p}.session"), u64::from(r.session));
                add(format!("{p}.at_ms"), r.at_ms);
                add(format!("{p}.after_packets"), r.after_packets);
                add(format!("{p}.first_seq"), r.first_seq);
                add(format!("{p}.previous_highest_seq"), r.previous_highest_seq);
            }
            losses.add(LossReason::PacketGaps, s.missing());
            losses.add(LossReason::MissedBeforeFirstPacket, s.missed_before_first());
            losses.add(LossReason::ImplausibleSequence, s.implausible);
            losses.add(LossReason::UnsupportedControlPackets, b.control_dropped);
            losses.add(LossReason::DuplicatePackets, s.duplicates);
            losses.add(LossReason::TooLatePackets, s.too_late);
        }
        losses.merge(&self.losses);
    }

    /// Hands every board's pending frames on (call periodically and at the end).
    pub fn flush(&mut self, final_flush: bool) -> Result<(), RingClosed> {
        for board in self.boards.values_mut() {
            if final_flush {
                match board.counts.seq.finish() {
                    Some(SuspectOutcome::Confirmed { .. }) => {
                        if let Some(s) = board.suspect.take() {
                            place_suspect(board, &mut self.losses, &s);
                        }
                    }
                    Some(SuspectOutcome::Rejected) => board.suspect = None,
                    None => {}
                }
                release_in_order(board, true);
            }
            if board.pending.packets > 0 || board.pending.end_of_stream {
                hand_on(&mut self.ring, board, &mut self.raw, &mut self.raw_packets)?;
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
        self.publish();
        Ok(())
    }
}

/// Takes a confirmed suspect into the board (see [`place`]).
fn place_suspect(board: &mut Board, losses: &mut LossCounts, s: &Suspect) {
    let payload = Payload::borrowed(&s.payload);
    place(board, losses, s.seq, s.format, s.flags, payload);
}

/// Takes an accepted packet into the board: its data format, its payload, the reorder hold.
fn place(
    board: &mut Board,
    losses: &mut LossCounts,
    seq: u64,
    format: u16,
    flags: u32,
    payload: Payload<'_>,
) {
    let mut format_changed = false;
    if format != payload_format::CONTROL {
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
                // It has taken its place in the sequence; its payload is dropped.
                losses.add(LossReason::PayloadFormatChangedPackets, 1);
                format_changed = true;
            }
            Some(_) => {}
        }
    }
    let end = flags & FLAG_END_OF_STREAM != 0;
    let payload = if format_changed {
        Payload::borrowed(&[])
    } else {
        payload
    };
    board.counts.payload_bytes += payload.bytes.len() as u64;
    if end {
        board.counts.ended = true;
    }
    // Restore packet order within REORDER_HOLD packets.
    match board.next_seq {
        Some(next) if seq < next => {
            // A late packet whose gap was already given up on: deliver it as it is.
            deliver(board, format, payload.bytes);
        }
        next => {
            // In order with nothing held: it leaves the hold again at once.
            let transient = board.held.is_empty() && next.is_none_or(|n| seq == n);
            board.held.insert(seq, (format, payload.keep(transient)));
            release_in_order(board, end);
        }
    }
    board.pending.end_of_stream |= end;
}

/// Closes the board's session (everything held goes out, in order) and opens the next.
fn new_session(
    ring: &mut RingProducer<FrameChunk>,
    board: &mut Board,
    raw: &mut Vec<u8>,
    raw_packets: &mut u64,
) -> Result<(), RingClosed> {
    release_in_order(board, true);
    if board.pending.packets > 0 || board.pending.end_of_stream {
        hand_on(ring, board, raw, raw_packets)?;
    }
    board.session += 1;
    board.pending.session = board.session;
    board.next_seq = None;
    board.counts.ended = false;
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
    let session = board.session;
    board.pending.raw = std::mem::take(raw);
    board.pending.raw_packets = std::mem::take(raw_packets);
    let chunk = std::mem::replace(
        &mut board.pending,
        FrameChunk {
            source_id: id,
            session,
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
            session,
            payload_format: format,
            end_of_stream: true,
            ..Default::default()
        })?;
    }
    Ok(())
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
        board.next_seq = Some(seq.saturating_add(1));
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
    use crate::acquire::ring::{OverflowPolicy, ring};
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
        assert_eq!(ingest.losses.get(LossReason::ForeignSenderPackets), 1);
        assert_eq!(ingest.losses.get(LossReason::CrcError), 1);
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
        assert_eq!(
            ingest.losses.get(LossReason::PayloadFormatChangedPackets),
            1
        );
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
