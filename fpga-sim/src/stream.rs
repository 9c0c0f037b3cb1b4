//! Streaming front-end emulation of the PET bench: the bench's frames split into one stream
//! per board and packed whole into transport packets (docs/formats.md §1), which the
//! simulator's one sender ([`crate::packet_out`]) faults, paces and sends over UDP or serves
//! over TCP in real time at the configured hit rate. [`generate_packets`] hands the same
//! packets to a closure for in-process use and tests.
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
//! be duplicated or reordered). At the end each board sends one empty packet with
//! `FLAG_END_OF_STREAM` and its own next seq; it is never faulted. Over UDP it is sent
//! [`UDP_END_OF_STREAM_COPIES`] times in all (same bytes, same seq): receivers treat repeats
//! of an end marker as harmless. [`generate_packets`] emits it once. Packets leave one at a
//! time, as soon as they are made.
//!
//! # Faults
//! One draw per data packet from the run's seed (stream [`BENCH_FAULT_STREAM`]), the outcomes
//! exclusive, applied by [`crate::packet_out`] (its module documentation has the rules):
//! lost (`lost_packets`, `lost_hits`), corrupted after the CRC (`corrupted_packets`,
//! `corrupted_hits`), duplicated (`duplicated_packets`), reordered behind the next intact
//! packet (`reordered_packets`). TCP `disconnect_after = N` (once per run) cuts the
//! connection in the middle of a packet (`disconnects`, `disconnect_lost_packets` = 1,
//! `disconnect_lost_hits`) and serves the client's reconnection from the following packet,
//! `seq` continuing. With these rules each count equals what a receiver observes (gaps,
//! repeats, seq below the highest seen, CRC failures), faults combined or not.
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
use crate::packet_out::{Destination, Pacing, PacketOut, PacketOutOptions, PacketOutSummary};
use crate::sim::{BenchSim, SimSummary};
use crate::truth::TruthBatch;
use scandaq_decoders::petsys::{FrameScanner, FrameSpan, HitFields, encode_frame};
use scandaq_decoders::transport::{HEADER_LEN, payload_format};
use scandaq_sinks::ParquetTableWriter;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::{Duration, Instant};

pub use crate::packet_out::UDP_END_OF_STREAM_COPIES;
pub use crate::packet_out::faults::{FaultCounts, Faults};

/// Random stream of the bench's fault draws.
pub const BENCH_FAULT_STREAM: u64 = 0x5eed_57ea;
/// Default largest packet, header included.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 8192;
/// Smallest `max_packet_bytes`: the header plus 64 bytes.
pub const MIN_MAX_PACKET_BYTES: usize = HEADER_LEN + 64;
/// Largest `max_packet_bytes` (a UDP datagram holds at most 65507 bytes).
pub const MAX_MAX_PACKET_BYTES: usize = 65_507;
/// A board's pending frames are packed and sent after this many slices (~1 ms each).
pub const FLUSH_AFTER_SLICES: u64 = 10;
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

/// One board's pending payload and totals.
struct Board {
    summary: BoardSummary,
    payload: Vec<u8>,
    payload_hits: u64,
    /// Slice in which the oldest pending frame was added.
    payload_since: u64,
}

/// The bench's packetizer: splits each slice's frames by board, packs whole frames into each
/// board's payload, and hands full (or old enough) payloads to the sender.
struct Packer<'a> {
    boards: Vec<Board>,
    out: PacketOut<'a>,
    max_payload: usize,
    /// Frame IDs are sent relative to this one (the first frame after a restart).
    frame_base: u64,
    /// Prerendering: each packet is due when the hits before it have elapsed at this rate.
    pace_by_hits: Option<f64>,
    /// Hits put into packets so far.
    hits_packed: u64,
    /// Scratch: the frames of a slice, and one frame's hit words per board.
    spans: Vec<FrameSpan>,
    words: Vec<Vec<u64>>,
}

impl<'a> Packer<'a> {
    fn new(config: &StreamConfig, mut out: PacketOut<'a>, pace_by_hits: Option<f64>) -> Self {
        let boards: Vec<Board> = (0..config.boards)
            .map(|b| Board {
                summary: BoardSummary {
                    source_id: config.source_id_base + b,
                    ..Default::default()
                },
                payload: Vec::with_capacity(config.max_packet_bytes),
                payload_hits: 0,
                payload_since: 0,
            })
            .collect();
        for board in &boards {
            out.declare_source(board.summary.source_id, payload_format::PETSYS_TOFPET2);
        }
        Self {
            words: vec![Vec::new(); boards.len()],
            boards,
            out,
            max_payload: config.max_packet_bytes - HEADER_LEN,
            frame_base: 0,
            pace_by_hits,
            hits_packed: 0,
            spans: Vec::new(),
        }
    }

    /// Packs one slice's frames: restarts the boards first when the slice has a frame and
    /// `restart` says so, then sends the payloads that are due.
    fn add_slice(
        &mut self,
        slice_no: u64,
        frames: &[u8],
        restart: impl FnOnce() -> bool,
    ) -> Result<(), SimError> {
        let mut spans = std::mem::take(&mut self.spans);
        spans.clear();
        FrameScanner::new().scan(frames, true, &mut spans);
        if let Some(first) = spans.first()
            && restart()
        {
            self.restart(first.frame)?;
        }
        for span in &spans {
            self.split_frame(span, frames, slice_no)?;
        }
        self.spans = spans;
        for b in 0..self.boards.len() {
            if slice_no >= self.boards[b].payload_since + FLUSH_AFTER_SLICES {
                self.flush(b)?;
            }
        }
        Ok(())
    }

    /// Splits one frame's hits by board (chip `b` on board `b`, or all on board 0).
    fn split_frame(
        &mut self,
        span: &FrameSpan,
        frames: &[u8],
        slice_no: u64,
    ) -> Result<(), SimError> {
        let last = self.boards.len() - 1;
        let mut words = std::mem::take(&mut self.words);
        for w in words.iter_mut() {
            w.clear();
        }
        for k in 0..span.n_hits as usize {
            let off = span.hits_offset + 8 * k;
            let word = u64::from_le_bytes(frames[off..off + 8].try_into().unwrap_or([0; 8]));
            let chip = (HitFields::decode(word).channel >> 6) & 0x3f;
            words[(chip as usize).min(last)].push(word);
        }
        let mut result = Ok(());
        for (b, w) in words.iter().enumerate() {
            if !w.is_empty() && result.is_ok() {
                result = self.add_frame(b, span.frame, span.lossy, w, slice_no);
            }
        }
        self.words = words;
        result
    }

    fn add_frame(
        &mut self,
        b: usize,
        frame_id: u64,
        lossy: bool,
        words: &[u64],
        slice: u64,
    ) -> Result<(), SimError> {
        let frame_bytes = 16 + 8 * words.len();
        let frame_id = frame_id.wrapping_sub(self.frame_base);
        let board = &self.boards[b];
        if !board.payload.is_empty() && board.payload.len() + frame_bytes > self.max_payload {
            self.flush(b)?;
        }
        let board = &mut self.boards[b];
        if board.payload.is_empty() {
            board.payload_since = slice;
        }
        encode_frame(&mut board.payload, frame_id, lossy, words);
        board.payload_hits += words.len() as u64;
        board.summary.frames_sent += 1;
        Ok(())
    }

    /// Packs board `b`'s pending frames into one packet and hands it to the sender.
    fn flush(&mut self, b: usize) -> Result<(), SimError> {
        let board = &mut self.boards[b];
        if board.payload.is_empty() {
            return Ok(());
        }
        if let Some(rate) = self.pace_by_hits {
            self.out
                .pace_to(Duration::from_secs_f64(self.hits_packed as f64 / rate))?;
        }
        let hits = board.payload_hits;
        self.out.send_counted(
            board.summary.source_id,
            payload_format::PETSYS_TOFPET2,
            &[&board.payload],
            hits,
        )?;
        board.summary.packets_sent += 1;
        board.summary.hits_sent += hits;
        board.payload.clear();
        board.payload_hits = 0;
        self.hits_packed += hits;
        Ok(())
    }

    /// Restarts every board: what it has goes out, then `seq` from 0 and frame IDs relative
    /// to `first_frame`.
    fn restart(&mut self, first_frame: u64) -> Result<(), SimError> {
        for b in 0..self.boards.len() {
            self.flush(b)?;
            self.out.restart_source(self.boards[b].summary.source_id)?;
        }
        self.frame_base = first_frame;
        Ok(())
    }

    /// Flushes every board and ends its stream (a held packet, then the end-of-stream marker).
    fn end_streams(&mut self) -> Result<(), SimError> {
        for b in 0..self.boards.len() {
            self.flush(b)?;
            self.out.end_source(self.boards[b].summary.source_id)?;
            self.boards[b].summary.packets_sent += 1;
        }
        Ok(())
    }

    /// Sends what is left (`complete`: the end markers too) and adds up the run's totals.
    fn finish(
        mut self,
        complete: bool,
        started: Instant,
        sim: SimSummary,
    ) -> Result<StreamSummary, SimError> {
        let packets = match complete {
            true => {
                self.end_streams()?;
                self.report_prerendered(started)?;
                self.out.finish()?
            }
            false => self.out.finish_without_end_markers()?,
        };
        let wall_seconds = match self.pace_by_hits {
            // Prerendered: the sending alone (generating came first).
            Some(_) => packets.wall_seconds,
            None => started.elapsed().as_secs_f64(),
        };
        Ok(stream_summary(self.boards, &packets, wall_seconds, sim))
    }

    /// Prerendering: says what was generated, before the sending starts.
    fn report_prerendered(&mut self, started: Instant) -> Result<(), SimError> {
        self.out.flush()?;
        if let Some(t) = self.out.prerendered_totals() {
            eprintln!(
                "fpga-sim: {} packets ({:.1} MB, {} hits) generated in {:.1} s; sending",
                t.packets,
                t.bytes as f64 / 1e6,
                t.hits,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}

/// The run's totals: the boards' own counts, their faults from the sender.
fn stream_summary(
    boards: Vec<Board>,
    packets: &PacketOutSummary,
    wall_seconds: f64,
    sim: SimSummary,
) -> StreamSummary {
    let mut faults = FaultCounts::default();
    let boards: Vec<BoardSummary> = boards
        .into_iter()
        .map(|b| {
            let mut s = b.summary;
            if let Some(i) = packets
                .sources
                .iter()
                .position(|c| c.source_id == s.source_id)
                && let Some(f) = packets.source_faults.get(i)
            {
                s.faults = f.clone();
            }
            faults.add(&s.faults);
            s
        })
        .collect();
    StreamSummary {
        hits_sent: boards.iter().map(|b| b.hits_sent).sum(),
        packets_sent: boards.iter().map(|b| b.packets_sent).sum(),
        boards,
        faults,
        wall_seconds,
        client_disconnects: packets.client_disconnects,
        sim,
    }
}

/// Checks the configuration; errors name the field and the accepted range.
fn validate(config: &StreamConfig) -> Result<(), SimError> {
    if !(1..=2).contains(&config.boards) {
        return Err(SimError::config(
            "boards",
            config.boards,
            "the bench has 2 modules (chips 0 and 1): use 1 board (everything on source 0) \
             or 2 (chip b on source b)",
        ));
    }
    config.faults.validate()?;
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
        Transport::Udp { .. } => validate_udp(config),
        Transport::Tcp { .. } => Ok(()),
    }
}

/// UDP: no disconnect, and a full frame must fit a datagram.
fn validate_udp(config: &StreamConfig) -> Result<(), SimError> {
    if let Some(n) = config.faults.disconnect_after {
        return Err(SimError::config(
            "disconnect_after",
            n,
            "a disconnect needs the TCP transport (UDP has no connection)",
        ));
    }
    let largest = HEADER_LEN + 16 + 8 * config.bench.max_hits_per_frame;
    if largest > MAX_MAX_PACKET_BYTES {
        return Err(SimError::config(
            "max_hits_per_frame",
            config.bench.max_hits_per_frame,
            format!(
                "a full frame makes a {largest}-byte packet, more than a UDP datagram holds \
                 ({MAX_MAX_PACKET_BYTES})"
            ),
        ));
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

/// Writes calib/ and opens truth.parquet when `out_dir` is set.
fn open_outputs(
    config: &StreamConfig,
    sim: &BenchSim,
) -> Result<Option<ParquetTableWriter>, SimError> {
    let Some(dir) = &config.out_dir else {
        return Ok(None);
    };
    prepare_out_dir(dir)?;
    write_calibration_dir(sim, &dir.join(crate::files::CALIB_DIR))?;
    Ok(Some(create_truth_writer(sim, dir)?))
}

/// The simulator thread: slices to the packer, truth to the writer, until the run ends or
/// a receiver goes away. Returns the simulator's summary.
fn simulate(
    mut sim: BenchSim,
    slices: std::sync::mpsc::SyncSender<Slice>,
    truth_tx: Option<std::sync::mpsc::SyncSender<TruthBatch>>,
) -> SimSummary {
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
        if slices.send(slice).is_err() {
            break;
        }
    }
    sim.summary()
}

/// The truth writer thread: batches of [`TRUTH_BATCH_ROWS`] rows, then the commit.
fn write_truth_file(mut w: ParquetTableWriter, rx: Receiver<TruthBatch>) -> Result<(), SimError> {
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
}

/// Detector-time bookkeeping of the packing loop: pacing and the restart.
struct Clock {
    /// Truth time of the run's first hit.
    first_t: Option<i64>,
    restart_due: Option<f64>,
    /// Pace each slice to its detector time.
    paced: bool,
}

impl Clock {
    /// Notes a slice (the run's first hit time).
    fn note(&mut self, slice: &Slice) {
        self.first_t = self.first_t.or(slice.first_t);
    }

    /// True (once) when the boards restart at this slice.
    fn restart_now(&mut self, slice: &Slice) -> bool {
        if let (Some(at), Some(a), Some(t)) = (self.restart_due, self.first_t, slice.first_t)
            && (t - a) as f64 * 1e-12 >= at
        {
            self.restart_due = None;
            return true;
        }
        false
    }

    /// When the slice's last hit is due, counted from the run's first hit.
    fn due(&self, slice: &Slice) -> Option<Duration> {
        match (self.paced, self.first_t, slice.last_t) {
            (true, Some(a), Some(b)) => {
                Some(Duration::from_secs_f64(((b - a) as f64 * 1e-12).max(0.0)))
            }
            _ => None,
        }
    }
}

/// Packs every slice from `slices` and paces it; returns false when the sender stopped.
fn pack_slices(
    packer: &mut Packer<'_>,
    slices: &Receiver<Slice>,
    mut clock: Clock,
) -> Result<bool, SimError> {
    for (slice_no, slice) in (0u64..).zip(slices.iter()) {
        clock.note(&slice);
        packer.add_slice(slice_no, &slice.frames, || clock.restart_now(&slice))?;
        if packer.out.stopped() {
            return Ok(false);
        }
        if let Some(due) = clock.due(&slice) {
            packer.out.pace_to(due)?;
        }
    }
    Ok(true)
}

/// Runs the simulator, packs the packets and hands them to `destination`, and writes calib/
/// and truth.parquet when `out_dir` is set. The simulator and the truth writer run on their
/// own threads, so the packer (and the socket) keep up with the generation.
fn run(
    config: &StreamConfig,
    destination: Destination<'_>,
    options: PacketOutOptions,
) -> Result<StreamSummary, SimError> {
    validate(config)?;
    let sim = BenchSim::new(config.bench.clone())?;
    let truth_writer = open_outputs(config, &sim)?;
    let prerender = options.prerender;
    let mut out = PacketOut::open(destination, options)?;
    out.wait_for_receiver()?;
    let pace_by_hits = (prerender && config.paced).then(|| config.bench.hit_rate_hz.max(1.0));
    let mut packer = Packer::new(config, out, pace_by_hits);
    let clock = Clock {
        first_t: None,
        restart_due: config.faults.restart_at_s,
        paced: config.paced && !prerender,
    };
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
        let simulator = scope.spawn(move || simulate(sim, slice_tx, truth_tx));
        let writer = truth_writer
            .zip(truth_rx)
            .map(|(w, rx)| scope.spawn(move || write_truth_file(w, rx)));
        let packed = pack_slices(&mut packer, &slice_rx, clock);
        // Stops the simulator thread when the run was cut short.
        drop(slice_rx);
        let sim_summary = simulator
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let truth_written = match writer {
            Some(w) => w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => Ok(()),
        };
        // A simulator cut short by a failing truth writer ends without the end markers.
        let complete = packed? && sim_summary.finished;
        let summary = packer.finish(complete, started, sim_summary)?;
        truth_written?;
        Ok(summary)
    })
}

/// The sender's options for a bench stream.
fn sender_options(config: &StreamConfig) -> PacketOutOptions {
    PacketOutOptions {
        pacing: Pacing::Unpaced,
        faults: config.faults.clone(),
        seed: config.bench.seed,
        fault_stream: BENCH_FAULT_STREAM,
        // Each packet leaves as soon as it is made.
        udp_batch: 1,
        prerender: config.prerender && matches!(config.transport, Transport::Udp { .. }),
        tcp_reconnect: true,
    }
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
/// disconnect itself is applied by [`stream`], not here), nor is `prerender`. Writes calib/,
/// truth.parquet and summary.json when `out_dir` is set.
pub fn generate_packets(
    config: &StreamConfig,
    mut emit: impl FnMut(u32, &[u8]) -> bool,
) -> Result<StreamSummary, SimError> {
    let mut options = sender_options(config);
    options.faults.disconnect_after = None;
    options.prerender = false;
    let destination =
        Destination::Closure(Box::new(|source_id, packet: &[u8]| emit(source_id, packet)));
    let summary = run(config, destination, options)?;
    if let Some(dir) = &config.out_dir {
        write_summary(dir, &summary)?;
    }
    Ok(summary)
}

/// Streams the bench over the configured transport (blocking until the end-of-stream markers
/// are sent) and returns what was sent and injected. Writes calib/, truth.parquet and
/// summary.json when `out_dir` is set.
pub fn stream(config: StreamConfig) -> Result<StreamSummary, SimError> {
    let destination = match config.transport {
        Transport::Udp { target } => Destination::Udp { target },
        Transport::Tcp { listen } => Destination::Tcp { listen },
    };
    let mut summary = run(&config, destination, sender_options(&config))?;
    if let Some(dir) = &config.out_dir {
        write_summary(dir, &summary)?;
    }
    summary.wall_seconds = summary.wall_seconds.max(0.0);
    Ok(summary)
}
