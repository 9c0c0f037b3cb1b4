//! Streaming front-end emulation: the bench's frames split into one stream per board, packed
//! whole into transport packets (docs/formats.md §1), with deterministic fault injection, sent
//! over UDP or served over TCP in real time at the configured hit rate. [`generate_packets`]
//! hands the same packets to a closure for in-process use and tests.
//!
//! # Boards
//! The bench has two modules, PETsys chips 0 and 1. With one board, source 0 carries every hit;
//! with two, board `b` (source_id `b`) carries the hits of chip `b`. Each frame of
//! [`BenchSim::next_slice`] is split by board and re-encoded with the same frameID and lost
//! flag; a board sends only its non-empty frames.
//!
//! # Packets
//! Payload format 1 (whole frames back to back), CRC on, at most `max_packet_bytes` including
//! the 32-byte header (a frame too big for that goes alone in a larger packet). A board's
//! pending frames are also sent once they have waited [`FLUSH_AFTER_SLICES`] slices (about
//! 10 ms of detector time), so low rates still arrive promptly; the rule depends only on
//! detector time, so the packets are the same paced or not. `seq` counts every packet a board
//! *generates* from 0, so a lost packet leaves a gap. A board's first packet (seq 0) carries
//! `FLAG_START_OF_STREAM` and is never lost or corrupted (a draw for either is ignored; it may
//! be duplicated or reordered). At the end
//! each board sends one empty
//! packet with `FLAG_END_OF_STREAM` and its own next seq; it is never faulted. Over UDP it is
//! sent [`UDP_END_OF_STREAM_COPIES`] times in all (same bytes, same seq): receivers treat repeats
//! of an end marker as harmless. [`generate_packets`] emits it once.
//!
//! # Faults
//! One draw per data packet from the run's seed, the outcomes exclusive:
//! - lost: never sent (`lost_packets`, `lost_hits`);
//! - corrupted: one payload byte flipped after the CRC was computed, so a receiver rejects it
//!   and its hits are lost (`corrupted_packets`, `corrupted_hits`);
//! - duplicated: sent twice in a row (`duplicated_packets`);
//! - reordered: held back and sent right after the next packet that goes out intact
//!   (`reordered_packets`; one packet per board is held at a time). A held packet with no
//!   intact successor before the end is sent in order and not counted.
//!
//! TCP `disconnect_after = N` (once per run): after N packets on the connection, the next
//! packet that is sent once, intact and with no held packet behind it gets only its first half
//! written; the connection is closed (`disconnects`, `disconnect_lost_packets` = 1,
//! `disconnect_lost_hits`), the server accepts the client's reconnection and continues with
//! the following packet, `seq` continuing. With these rules each count equals what a receiver
//! observes (gaps, repeats, seq below the highest seen, CRC failures), faults combined or not.
//!
//! `restart_at_s = T` (once per run): at the first slice whose first hit is at least T s of
//! detector time after the run's first hit, every board restarts as a front end does after a
//! reset: its pending frames and a held packet go out first, then `seq` starts again from 0
//! (the first packet again with `FLAG_START_OF_STREAM`, never lost) and the frame counter
//! from 0 (frame IDs relative to the restart slice's first frame); `restarts` = 1 per board.

use crate::BenchConfig;
use crate::config::SimError;
use crate::files::{
    SUMMARY_FILE, TRUTH_BATCH_ROWS, create_truth_writer, prepare_out_dir, write_calibration_dir,
    write_truth,
};
use crate::rng::Rng;
use crate::sim::{BenchSim, SimSummary};
use crate::truth::TruthBatch;
use scandaq_decoders::petsys::{FrameScanner, HitFields, encode_frame};
use scandaq_decoders::transport::{
    FLAG_END_OF_STREAM, FLAG_START_OF_STREAM, HEADER_LEN, encode_packet, payload_format,
};
use serde::{Deserialize, Serialize};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

/// Default largest packet, header included.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 8192;
/// Smallest `max_packet_bytes`: the header plus 64 bytes.
pub const MIN_MAX_PACKET_BYTES: usize = HEADER_LEN + 64;
/// Largest `max_packet_bytes` (a UDP datagram holds at most 65507 bytes).
pub const MAX_MAX_PACKET_BYTES: usize = 65_507;
/// A board's pending frames are packed and sent after this many slices (~1 ms each).
pub const FLUSH_AFTER_SLICES: u64 = 10;
/// Times the end-of-stream packet is sent over UDP (the same bytes each time).
pub const UDP_END_OF_STREAM_COPIES: usize = 3;
/// How long the TCP server waits for the first client.
pub const TCP_FIRST_ACCEPT_WAIT: Duration = Duration::from_secs(60);
/// How long the TCP server waits for a client to reconnect after a disconnect.
pub const TCP_REACCEPT_WAIT: Duration = Duration::from_secs(10);
/// A TCP client that reads nothing for this long ends the run with an error.
pub const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where packets go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams from an ephemeral socket to this address.
    Udp {
        /// Receiver address.
        target: SocketAddr,
    },
    /// Listen here and serve one client (scandaq connects).
    Tcp {
        /// Listening address.
        listen: SocketAddr,
    },
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Udp { target } => write!(f, "UDP to {target}"),
            Self::Tcp { listen } => write!(f, "TCP served on {listen}"),
        }
    }
}

/// Fault injection: probabilities per data packet (each in [0, 1), sum below 1), and the TCP
/// disconnect.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Packets never sent.
    pub lose_packets: f64,
    /// Packets sent twice.
    pub duplicate: f64,
    /// Packets sent after the following packet.
    pub reorder: f64,
    /// Packets with a payload byte flipped after the CRC.
    pub corrupt: f64,
    /// TCP only: cut the connection once, after this many packets on it.
    pub disconnect_after: Option<u64>,
    /// Restart every board once, this many seconds of detector time into the run: sequence
    /// numbers and frame counter from 0 again, start-of-stream flag on the first packet.
    #[serde(default)]
    pub restart_at_s: Option<f64>,
}

/// A streaming run.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// The simulated bench (rate, duration, seed; the seed also drives the faults).
    pub bench: BenchConfig,
    /// Boards: 1 (everything on source 0) or 2 (chip b on source b).
    pub boards: u32,
    /// Transport.
    pub transport: Transport,
    /// Faults.
    pub faults: Faults,
    /// Largest packet, header included (default 8192; a frame that does not fit goes alone).
    pub max_packet_bytes: usize,
    /// Real time at the configured rate (false: as fast as possible).
    pub paced: bool,
    /// Where to write calib/, truth.parquet and summary.json.
    pub out_dir: Option<PathBuf>,
    /// Board `b` sends as source_id `source_id_base + b` (several simulator processes can
    /// then feed one acquisition as distinct boards).
    pub source_id_base: u32,
    /// UDP only: generate every packet into memory first, then send them paced at the hit
    /// rate. The host's CPU then goes to the receiver under test, as with a real front-end
    /// (an FPGA costs the host nothing); memory is about 8.5 bytes per hit.
    pub prerender: bool,
}

impl StreamConfig {
    /// One board, no faults, 8192-byte packets, paced, no output directory.
    pub fn new(bench: BenchConfig, transport: Transport) -> Self {
        Self {
            bench,
            boards: 1,
            transport,
            faults: Faults::default(),
            max_packet_bytes: DEFAULT_MAX_PACKET_BYTES,
            paced: true,
            out_dir: None,
            source_id_base: 0,
            prerender: false,
        }
    }
}

/// What each fault affected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Packets not sent.
    pub lost_packets: u64,
    /// Hits in them.
    pub lost_hits: u64,
    /// Packets sent twice.
    pub duplicated_packets: u64,
    /// Packets sent late.
    pub reordered_packets: u64,
    /// Packets corrupted (a receiver rejects them by CRC).
    pub corrupted_packets: u64,
    /// Hits in them.
    pub corrupted_hits: u64,
    /// TCP disconnects injected.
    pub disconnects: u64,
    /// Packets cut by a disconnect.
    pub disconnect_lost_packets: u64,
    /// Hits in them.
    pub disconnect_lost_hits: u64,
    /// Board restarts (sequence and frame counter from 0 again).
    #[serde(default)]
    pub restarts: u64,
}

impl FaultCounts {
    /// Adds `o` to these counts.
    pub fn add(&mut self, o: &FaultCounts) {
        self.lost_packets += o.lost_packets;
        self.lost_hits += o.lost_hits;
        self.duplicated_packets += o.duplicated_packets;
        self.reordered_packets += o.reordered_packets;
        self.corrupted_packets += o.corrupted_packets;
        self.corrupted_hits += o.corrupted_hits;
        self.disconnects += o.disconnects;
        self.disconnect_lost_packets += o.disconnect_lost_packets;
        self.disconnect_lost_hits += o.disconnect_lost_hits;
        self.restarts += o.restarts;
    }

    /// Packets a receiver never gets intact (lost, corrupted or cut).
    pub fn packets_missing(&self) -> u64 {
        self.lost_packets + self.corrupted_packets + self.disconnect_lost_packets
    }

    /// Hits in those packets.
    pub fn hits_missing(&self) -> u64 {
        self.lost_hits + self.corrupted_hits + self.disconnect_lost_hits
    }
}

/// One board's totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BoardSummary {
    /// Transport source_id.
    pub source_id: u32,
    /// Hits put into packets (before faults).
    pub hits_sent: u64,
    /// Packets generated (sequence numbers used), end-of-stream included.
    pub packets_sent: u64,
    /// Frames put into packets.
    pub frames_sent: u64,
    /// Faults injected on this board.
    pub faults: FaultCounts,
}

/// The whole run's totals.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamSummary {
    /// Hits put into packets (before faults), all boards.
    pub hits_sent: u64,
    /// Packets generated, end-of-stream packets included, all boards.
    pub packets_sent: u64,
    /// Per board, by source_id.
    pub boards: Vec<BoardSummary>,
    /// Faults, all boards.
    pub faults: FaultCounts,
    /// Wall time of the run, seconds.
    pub wall_seconds: f64,
    /// TCP clients that went away without being told to (not injected): the packets in flight
    /// then are lost without being counted above.
    #[serde(default)]
    pub client_disconnects: u64,
    /// The simulator's own summary.
    pub sim: SimSummary,
}

impl StreamSummary {
    /// Hits sent per wall second.
    pub fn achieved_hit_rate(&self) -> f64 {
        if self.wall_seconds > 0.0 {
            self.hits_sent as f64 / self.wall_seconds
        } else {
            0.0
        }
    }
}

/// A packet on its way out of the generator.
struct Out<'a> {
    source_id: u32,
    bytes: &'a [u8],
    hits: u64,
    end_of_stream: bool,
    /// Sent once, intact, with nothing held behind it: a TCP disconnect may cut it and the
    /// receiver then sees exactly one more gap.
    cuttable: bool,
}

type Emit<'e> = dyn FnMut(&Out<'_>) -> bool + 'e;

struct Board {
    summary: BoardSummary,
    seq: u64,
    payload: Vec<u8>,
    payload_hits: u64,
    /// Slice in which the oldest pending frame was added.
    payload_since: u64,
    /// A packet held back for reordering, with its hits.
    held: Option<(Vec<u8>, u64)>,
}

struct Packer<'e> {
    boards: Vec<Board>,
    rng: Rng,
    faults: Faults,
    max_payload: usize,
    emit: &'e mut Emit<'e>,
    stopped: bool,
    /// Frame IDs are sent relative to this one (the first frame after a restart).
    frame_base: u64,
}

impl Packer<'_> {
    fn send(&mut self, out: Out<'_>) {
        if !self.stopped && !(self.emit)(&out) {
            self.stopped = true;
        }
    }

    fn add_frame(&mut self, b: usize, frame_id: u64, lossy: bool, words: &[u64], slice: u64) {
        let frame_bytes = 16 + 8 * words.len();
        let frame_id = frame_id.wrapping_sub(self.frame_base);
        let board = &self.boards[b];
        if !board.payload.is_empty() && board.payload.len() + frame_bytes > self.max_payload {
            self.flush(b);
        }
        let board = &mut self.boards[b];
        if board.payload.is_empty() {
            board.payload_since = slice;
        }
        encode_frame(&mut board.payload, frame_id, lossy, words);
        board.payload_hits += words.len() as u64;
        board.summary.frames_sent += 1;
    }

    /// Packs the board's pending frames into one packet and sends it, faults applied.
    fn flush(&mut self, b: usize) {
        let board = &mut self.boards[b];
        if board.payload.is_empty() {
            return;
        }
        let source_id = board.summary.source_id;
        let start = board.seq == 0;
        let mut packet = Vec::with_capacity(HEADER_LEN + board.payload.len());
        encode_packet(
            &mut packet,
            payload_format::PETSYS_TOFPET2,
            source_id,
            board.seq,
            if start { FLAG_START_OF_STREAM } else { 0 },
            &board.payload,
            true,
        );
        let hits = board.payload_hits;
        board.seq += 1;
        board.summary.packets_sent += 1;
        board.summary.hits_sent += hits;
        board.payload.clear();
        board.payload_hits = 0;

        let f = &self.faults;
        let u = self.rng.uniform();
        let lose = f.lose_packets;
        let corrupt = lose + f.corrupt;
        // The start packet is never lost or corrupted (1.0 is above every threshold); it may
        // be duplicated or reordered.
        let u = if start && u < corrupt { 1.0 } else { u };
        let duplicate = corrupt + f.duplicate;
        let reorder = duplicate + f.reorder;
        let counts = &mut board.summary.faults;
        let out = |bytes, cuttable| Out {
            source_id,
            bytes,
            hits,
            end_of_stream: false,
            cuttable,
        };
        if u < lose {
            counts.lost_packets += 1;
            counts.lost_hits += hits;
            // Not sent: a held packet waits for the next packet that goes out.
            return;
        }
        if u < corrupt {
            counts.corrupted_packets += 1;
            counts.corrupted_hits += hits;
            let at = HEADER_LEN + self.rng.below((packet.len() - HEADER_LEN) as u64) as usize;
            packet[at] ^= 0x5a;
            self.send(out(&packet, false));
            // The receiver rejects it: a held packet waits for an intact one.
            return;
        }
        if u < duplicate {
            counts.duplicated_packets += 1;
            self.send(out(&packet, false));
            self.send(out(&packet, false));
        } else if u < reorder && board.held.is_none() {
            counts.reordered_packets += 1;
            board.held = Some((packet, hits));
            return;
        } else {
            let cuttable = board.held.is_none() && !start;
            self.send(out(&packet, cuttable));
        }
        if let Some((late, late_hits)) = self.boards[b].held.take() {
            self.send(Out {
                source_id,
                bytes: &late,
                hits: late_hits,
                end_of_stream: false,
                cuttable: false,
            });
        }
    }

    /// Flushes board `b`'s pending frames and sends a held packet in order.
    fn flush_all(&mut self, b: usize) {
        self.flush(b);
        let board = &mut self.boards[b];
        let source_id = board.summary.source_id;
        if let Some((late, hits)) = board.held.take() {
            // Nothing intact followed it: it goes out in order, so it was not reordered.
            board.summary.faults.reordered_packets -= 1;
            self.send(Out {
                source_id,
                bytes: &late,
                hits,
                end_of_stream: false,
                cuttable: false,
            });
        }
    }

    /// Restarts every board: what it has goes out, then `seq` from 0 and frame IDs relative
    /// to `first_frame`.
    fn restart(&mut self, first_frame: u64) {
        for b in 0..self.boards.len() {
            self.flush_all(b);
            let board = &mut self.boards[b];
            board.seq = 0;
            board.summary.faults.restarts += 1;
        }
        self.frame_base = first_frame;
    }

    /// Flushes every board, releases held packets in order and sends the end-of-stream markers.
    fn finish(&mut self) {
        for b in 0..self.boards.len() {
            self.flush_all(b);
            let source_id = self.boards[b].summary.source_id;
            let board = &mut self.boards[b];
            let mut eos = Vec::with_capacity(HEADER_LEN);
            encode_packet(
                &mut eos,
                payload_format::PETSYS_TOFPET2,
                source_id,
                board.seq,
                FLAG_END_OF_STREAM
                    | if board.seq == 0 {
                        FLAG_START_OF_STREAM
                    } else {
                        0
                    },
                &[],
                true,
            );
            board.seq += 1;
            board.summary.packets_sent += 1;
            self.send(Out {
                source_id,
                bytes: &eos,
                hits: 0,
                end_of_stream: true,
                cuttable: false,
            });
        }
    }

    fn summary(self, wall_seconds: f64, sim: SimSummary) -> StreamSummary {
        let mut faults = FaultCounts::default();
        for b in &self.boards {
            faults.add(&b.summary.faults);
        }
        StreamSummary {
            hits_sent: self.boards.iter().map(|b| b.summary.hits_sent).sum(),
            packets_sent: self.boards.iter().map(|b| b.summary.packets_sent).sum(),
            boards: self.boards.into_iter().map(|b| b.summary).collect(),
            faults,
            wall_seconds,
            client_disconnects: 0,
            sim,
        }
    }
}

fn validate(config: &StreamConfig) -> Result<(), SimError> {
    if !(1..=2).contains(&config.boards) {
        return Err(SimError::config(
            "boards",
            config.boards,
            "the bench has 2 modules (chips 0 and 1): use 1 board (everything on source 0) \
             or 2 (chip b on source b)",
        ));
    }
    let f = &config.faults;
    for (name, p) in [
        ("lose_packets", f.lose_packets),
        ("duplicate", f.duplicate),
        ("reorder", f.reorder),
        ("corrupt", f.corrupt),
    ] {
        if !(0.0..1.0).contains(&p) {
            return Err(SimError::config(
                name,
                p,
                "must be a probability per packet in [0, 1)",
            ));
        }
    }
    if let Some(t) = f.restart_at_s
        && !(t.is_finite() && t >= 0.0)
    {
        return Err(SimError::config(
            "restart_at_s",
            t,
            "must be a time in seconds of detector time, >= 0",
        ));
    }
    let sum = f.lose_packets + f.duplicate + f.reorder + f.corrupt;
    if sum >= 1.0 {
        return Err(SimError::config(
            "faults",
            sum,
            "the fault probabilities must add up to less than 1",
        ));
    }
    if !(MIN_MAX_PACKET_BYTES..=MAX_MAX_PACKET_BYTES).contains(&config.max_packet_bytes) {
        return Err(SimError::config(
            "max_packet_bytes",
            config.max_packet_bytes,
            format!(
                "must be in [{MIN_MAX_PACKET_BYTES}, {MAX_MAX_PACKET_BYTES}] (32-byte header \
                 included)"
            ),
        ));
    }
    match config.transport {
        Transport::Udp { .. } => {
            if f.disconnect_after.is_some() {
                return Err(SimError::config(
                    "disconnect_after",
                    f.disconnect_after.unwrap_or(0),
                    "a disconnect needs the TCP transport (UDP has no connection)",
                ));
            }
            let largest = HEADER_LEN + 16 + 8 * config.bench.max_hits_per_frame;
            if largest > MAX_MAX_PACKET_BYTES {
                return Err(SimError::config(
                    "max_hits_per_frame",
                    config.bench.max_hits_per_frame,
                    format!(
                        "a full frame makes a {largest}-byte packet, more than a UDP datagram \
                         holds ({MAX_MAX_PACKET_BYTES})"
                    ),
                ));
            }
        }
        Transport::Tcp { .. } => {}
    }
    Ok(())
}

/// One slice of the simulator's output, on its way to the packer.
struct Slice {
    frames: Vec<u8>,
    /// Truth times of the first and last hit of the slice.
    first_t: Option<i64>,
    last_t: Option<i64>,
}

/// Slices (about 1 ms each) buffered between the simulator, the packer and the truth writer.
const PIPELINE_SLICES: usize = 16;

/// Runs the simulator, packs and faults the packets, hands each to `emit` (false = stop), and
/// writes calib/ and truth.parquet when `out_dir` is set. The simulator and the truth writer
/// run on their own threads, so the packer (and the socket) keep up with the generation.
fn run(config: &StreamConfig, emit: &mut Emit<'_>) -> Result<StreamSummary, SimError> {
    validate(config)?;
    let mut sim = BenchSim::new(config.bench.clone())?;
    let truth_writer = match &config.out_dir {
        Some(dir) => {
            prepare_out_dir(dir)?;
            write_calibration_dir(&sim, &dir.join(crate::files::CALIB_DIR))?;
            Some(create_truth_writer(&sim, dir)?)
        }
        None => None,
    };
    let mut packer = Packer {
        boards: (0..config.boards)
            .map(|b| Board {
                summary: BoardSummary {
                    source_id: config.source_id_base + b,
                    ..Default::default()
                },
                seq: 0,
                payload: Vec::with_capacity(config.max_packet_bytes),
                payload_hits: 0,
                payload_since: 0,
                held: None,
            })
            .collect(),
        rng: Rng::stream(config.bench.seed, 0x5eed_57ea),
        faults: config.faults.clone(),
        max_payload: config.max_packet_bytes - HEADER_LEN,
        emit,
        stopped: false,
        frame_base: 0,
    };
    let boards = config.boards as usize;
    let started = Instant::now();
    std::thread::scope(|scope| {
        let (slice_tx, slice_rx) = sync_channel::<Slice>(PIPELINE_SLICES);
        let (truth_tx, truth_rx) = match truth_writer.is_some() {
            true => {
                let (tx, rx) = sync_channel::<TruthBatch>(PIPELINE_SLICES);
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let simulator = scope.spawn(move || {
            let mut truth = TruthBatch::new();
            loop {
                let mut frames = Vec::with_capacity(64 << 10);
                if !sim.next_slice(&mut frames, &mut truth) {
                    break;
                }
                let slice = Slice {
                    frames,
                    first_t: truth.t_true_ps.first().copied(),
                    last_t: truth.t_true_ps.last().copied(),
                };
                match &truth_tx {
                    Some(tx) => {
                        if tx.send(std::mem::take(&mut truth)).is_err() {
                            break;
                        }
                    }
                    None => truth.clear(),
                }
                if slice_tx.send(slice).is_err() {
                    break;
                }
            }
            sim.summary()
        });
        let writer = truth_writer.zip(truth_rx).map(|(mut w, rx)| {
            scope.spawn(move || -> Result<(), SimError> {
                let mut pending = TruthBatch::new();
                for batch in rx {
                    pending.extend_from(&batch);
                    if pending.len() >= TRUTH_BATCH_ROWS {
                        write_truth(&mut w, &mut pending)?;
                    }
                }
                write_truth(&mut w, &mut pending)?;
                w.commit()?;
                Ok(())
            })
        });

        let mut first_t: Option<i64> = None;
        let mut restart_due = config.faults.restart_at_s;
        let mut spans = Vec::new();
        let mut words: Vec<Vec<u64>> = vec![Vec::new(); boards];
        for (slice_no, slice) in (0u64..).zip(slice_rx.iter()) {
            first_t = first_t.or(slice.first_t);
            let frames = &slice.frames;
            spans.clear();
            FrameScanner::new().scan(frames, true, &mut spans);
            if let (Some(at), Some(a), Some(t), Some(span)) =
                (restart_due, first_t, slice.first_t, spans.first())
                && (t - a) as f64 * 1e-12 >= at
            {
                packer.restart(span.frame);
                restart_due = None;
            }
            for span in &spans {
                for w in words.iter_mut() {
                    w.clear();
                }
                for k in 0..span.n_hits as usize {
                    let off = span.hits_offset + 8 * k;
                    let word =
                        u64::from_le_bytes(frames[off..off + 8].try_into().unwrap_or([0; 8]));
                    let chip = (HitFields::decode(word).channel >> 6) & 0x3f;
                    words[(chip as usize).min(boards - 1)].push(word);
                }
                for (b, w) in words.iter().enumerate() {
                    if !w.is_empty() {
                        packer.add_frame(b, span.frame, span.lossy, w, slice_no);
                    }
                }
            }
            for b in 0..boards {
                if slice_no >= packer.boards[b].payload_since + FLUSH_AFTER_SLICES {
                    packer.flush(b);
                }
            }
            if packer.stopped {
                break;
            }
            if let (true, Some(a), Some(b)) = (config.paced, first_t, slice.last_t) {
                let due = Duration::from_secs_f64(((b - a) as f64 * 1e-12).max(0.0));
                let elapsed = started.elapsed();
                if due > elapsed {
                    std::thread::sleep(due - elapsed);
                }
            }
        }
        let stopped = packer.stopped;
        // Stops the simulator thread when the run was cut short.
        drop(slice_rx);
        let sim_summary = simulator
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        // A simulator cut short by a failing truth writer ends without the end markers.
        if !stopped && sim_summary.finished {
            packer.finish();
        }
        if let Some(w) = writer {
            w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok(packer.summary(started.elapsed().as_secs_f64(), sim_summary))
    })
}

fn write_summary(dir: &Path, summary: &StreamSummary) -> Result<(), SimError> {
    let json = serde_json::to_string_pretty(summary).map_err(|e| SimError::Json {
        what: "stream summary",
        message: e.to_string(),
    })?;
    let path = dir.join(SUMMARY_FILE);
    std::fs::write(&path, json + "\n").map_err(|e| SimError::io("writing", &path, e))
}

/// Generates every packet of the run (faults applied, end-of-stream markers once each) and
/// hands it to `emit(source_id, packet)`; `emit` returning false stops the run early. The
/// transport in `config` is not used except for validation (a disconnect needs TCP; the TCP
/// disconnect itself is applied by [`stream`], not here). Writes calib/, truth.parquet and
/// summary.json when `out_dir` is set.
pub fn generate_packets(
    config: &StreamConfig,
    mut emit: impl FnMut(u32, &[u8]) -> bool,
) -> Result<StreamSummary, SimError> {
    let summary = run(config, &mut |p: &Out<'_>| emit(p.source_id, p.bytes))?;
    if let Some(dir) = &config.out_dir {
        write_summary(dir, &summary)?;
    }
    Ok(summary)
}

fn net(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> SimError {
    let action = action.into();
    move |source| SimError::Network { action, source }
}

/// Sends one datagram, retrying briefly when the socket buffer is full.
fn send_datagram(socket: &UdpSocket, bytes: &[u8], target: SocketAddr) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match socket.send_to(bytes, target) {
            Ok(_) => return Ok(()),
            Err(_) if tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

fn stream_udp(config: &StreamConfig, target: SocketAddr) -> Result<StreamSummary, SimError> {
    let bind = if target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let socket = UdpSocket::bind(bind).map_err(net("binding a UDP socket"))?;
    if config.prerender {
        return stream_udp_prerendered(config, &socket, target);
    }
    let mut error = None;
    let summary = run(config, &mut |p: &Out<'_>| {
        let copies = if p.end_of_stream {
            UDP_END_OF_STREAM_COPIES
        } else {
            1
        };
        for _ in 0..copies {
            if let Err(e) = send_datagram(&socket, p.bytes, target) {
                error = Some(net(format!("sending a datagram to {target}"))(e));
                return false;
            }
        }
        true
    })?;
    match error {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

/// One packet generated ahead of sending.
struct Rendered {
    end: usize,
    hits_before: u64,
    end_of_stream: bool,
}

/// [`StreamConfig::prerender`]: generates the whole run (unpaced), then sends it paced by
/// hits: packet `k` is due when the hits before it, at the configured rate, have elapsed.
fn stream_udp_prerendered(
    config: &StreamConfig,
    socket: &UdpSocket,
    target: SocketAddr,
) -> Result<StreamSummary, SimError> {
    let mut bytes = Vec::new();
    let mut packets = Vec::new();
    let mut hits = 0u64;
    let mut unpaced = config.clone();
    unpaced.paced = false;
    let mut summary = run(&unpaced, &mut |p: &Out<'_>| {
        bytes.extend_from_slice(p.bytes);
        packets.push(Rendered {
            end: bytes.len(),
            hits_before: hits,
            end_of_stream: p.end_of_stream,
        });
        hits += p.hits;
        true
    })?;
    eprintln!(
        "fpga-sim: {} packets ({:.1} MB, {hits} hits) generated in {:.1} s; sending",
        packets.len(),
        bytes.len() as f64 / 1e6,
        summary.wall_seconds
    );
    let rate = config.bench.hit_rate_hz.max(1.0);
    let started = Instant::now();
    let mut start = 0;
    for p in &packets {
        if config.paced {
            let due = Duration::from_secs_f64(p.hits_before as f64 / rate);
            let elapsed = started.elapsed();
            if due > elapsed + Duration::from_micros(200) {
                std::thread::sleep(due - elapsed);
            }
        }
        let copies = if p.end_of_stream {
            UDP_END_OF_STREAM_COPIES
        } else {
            1
        };
        for _ in 0..copies {
            send_datagram(socket, &bytes[start..p.end], target)
                .map_err(net(format!("sending a datagram to {target}")))?;
        }
        start = p.end;
    }
    summary.wall_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Waits up to `wait` for a client on the (non-blocking) listener.
pub(crate) fn accept(
    listener: &TcpListener,
    wait: Duration,
    what: &str,
) -> Result<TcpStream, SimError> {
    let deadline = Instant::now() + wait;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)
                    .map_err(net("configuring the TCP connection"))?;
                s.set_write_timeout(Some(TCP_WRITE_TIMEOUT))
                    .map_err(net("configuring the TCP connection"))?;
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                if Instant::now() >= deadline {
                    let addr = listener
                        .local_addr()
                        .map_or_else(|_| "?".to_string(), |a| a.to_string());
                    return Err(SimError::Network {
                        action: format!(
                            "no client {what} on {addr} within {} s",
                            wait.as_secs_f64()
                        ),
                        source: ErrorKind::TimedOut.into(),
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            // A client that gave up before being accepted: wait for the next one.
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
            Err(e) => return Err(net("accepting a TCP client")(e)),
        }
    }
}

fn client_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::UnexpectedEof
    )
}

fn stream_tcp(config: &StreamConfig, listen: SocketAddr) -> Result<StreamSummary, SimError> {
    let listener = TcpListener::bind(listen).map_err(net(format!("listening on TCP {listen}")))?;
    listener
        .set_nonblocking(true)
        .map_err(net("configuring the TCP listener"))?;
    let mut conn = Some(accept(&listener, TCP_FIRST_ACCEPT_WAIT, "connected")?);
    let mut on_connection = 0u64;
    let mut cut: Option<(u32, u64)> = None;
    let mut client_disconnects = 0u64;
    let mut error = None;
    let disconnect_after = config.faults.disconnect_after;
    let mut summary = run(config, &mut |p: &Out<'_>| {
        let result = (|| -> Result<(), SimError> {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(accept(&listener, TCP_REACCEPT_WAIT, "reconnected")?),
            };
            if cut.is_none() && p.cuttable && disconnect_after.is_some_and(|n| on_connection >= n) {
                // Injected disconnect: half the packet, then close.
                let _ = c.write_all(&p.bytes[..p.bytes.len() / 2]);
                let _ = c.flush();
                let _ = c.shutdown(Shutdown::Both);
                conn = None;
                cut = Some((p.source_id, p.hits));
                on_connection = 0;
                return Ok(());
            }
            match c.write_all(p.bytes) {
                Ok(()) => on_connection += 1,
                Err(e) if client_gone(&e) => {
                    // The client went away: serve its reconnection from the next packet on.
                    client_disconnects += 1;
                    conn = None;
                    on_connection = 0;
                }
                Err(e) => return Err(net("writing to the TCP client")(e)),
            }
            Ok(())
        })();
        match result {
            Ok(()) => true,
            Err(e) => {
                error = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = error {
        return Err(e);
    }
    if let Some(mut c) = conn {
        // Let the client read everything, then wait (briefly) for it to close.
        let _ = c.flush();
        let _ = c.shutdown(Shutdown::Write);
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        let mut sink = [0u8; 256];
        while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
    }
    if let Some((source_id, hits)) = cut {
        for counts in summary
            .boards
            .iter_mut()
            .filter(|b| b.source_id == source_id)
            .map(|b| &mut b.faults)
            .chain(std::iter::once(&mut summary.faults))
        {
            counts.disconnects += 1;
            counts.disconnect_lost_packets += 1;
            counts.disconnect_lost_hits += hits;
        }
    }
    summary.client_disconnects = client_disconnects;
    Ok(summary)
}

/// Streams the bench over the configured transport (blocking until the end-of-stream markers
/// are sent) and returns what was sent and injected. Writes calib/, truth.parquet and
/// summary.json when `out_dir` is set.
pub fn stream(config: StreamConfig) -> Result<StreamSummary, SimError> {
    let mut summary = match config.transport {
        Transport::Udp { target } => stream_udp(&config, target)?,
        Transport::Tcp { listen } => stream_tcp(&config, listen)?,
    };
    if let Some(dir) = &config.out_dir {
        // Wall time includes the TCP close.
        write_summary(dir, &summary)?;
    }
    summary.wall_seconds = summary.wall_seconds.max(0.0);
    Ok(summary)
}
