//! Streaming front-end emulation: the bench's frames split into one stream per board (board b
//! carries PETsys chip b), packed whole into transport packets of at most `max_packet_bytes`,
//! with deterministic fault injection, sent over UDP or served over TCP at the configured hit
//! rate. [`generate_packets`] yields the same packets in-process for tests.
//!
//! Faults (one draw per packet, exclusive): lost (never sent), corrupted (one payload byte
//! flipped after the CRC was computed), duplicated (sent twice), reordered (sent after the next
//! packet). TCP `disconnect_after = N`: after N packets the connection gets half of the next
//! packet and is closed; the server then waits for the client to reconnect. End-of-stream
//! packets are never faulted; over UDP each is sent three times (receivers ignore repeats).

use crate::BenchConfig;
use crate::config::SimError;
use crate::rng::Rng;
use crate::sim::{BenchSim, SimSummary};
use crate::truth::TruthBatch;
use scandaq_decoders::petsys::{FrameScanner, encode_frame};
use scandaq_decoders::transport::{FLAG_END_OF_STREAM, HEADER_LEN, encode_packet, payload_format};
use scandaq_sinks::{ParquetTableWriter, WriteOptions};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where packets go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams to this address.
    Udp {
        /// Receiver address.
        target: SocketAddr,
    },
    /// Serve one TCP client on this address.
    Tcp {
        /// Listening address.
        listen: SocketAddr,
    },
}

/// Fault injection: probabilities per packet, and the TCP disconnect.
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
    /// TCP only: break the connection after this many packets.
    pub disconnect_after: Option<u64>,
}

/// A streaming run.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// The simulated bench.
    pub bench: BenchConfig,
    /// Boards (1: everything on source 0; 2: chip b on source b).
    pub boards: u32,
    /// Transport.
    pub transport: Transport,
    /// Faults.
    pub faults: Faults,
    /// Largest packet, header included (a frame that does not fit goes alone).
    pub max_packet_bytes: usize,
    /// Real time at the configured rate (false: as fast as possible).
    pub paced: bool,
    /// Where to write calib/, truth.parquet and summary.json.
    pub out_dir: Option<PathBuf>,
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
    /// Packets corrupted.
    pub corrupted_packets: u64,
    /// Hits in them.
    pub corrupted_hits: u64,
    /// TCP disconnects.
    pub disconnects: u64,
    /// Packets cut by a disconnect.
    pub disconnect_lost_packets: u64,
    /// Hits in them.
    pub disconnect_lost_hits: u64,
}

impl FaultCounts {
    fn add(&mut self, o: &FaultCounts) {
        self.lost_packets += o.lost_packets;
        self.lost_hits += o.lost_hits;
        self.duplicated_packets += o.duplicated_packets;
        self.reordered_packets += o.reordered_packets;
        self.corrupted_packets += o.corrupted_packets;
        self.corrupted_hits += o.corrupted_hits;
        self.disconnects += o.disconnects;
        self.disconnect_lost_packets += o.disconnect_lost_packets;
        self.disconnect_lost_hits += o.disconnect_lost_hits;
    }
}

/// One board's totals.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BoardSummary {
    /// Transport source_id.
    pub source_id: u32,
    /// Hits put into packets (before faults).
    pub hits_sent: u64,
    /// Packets generated (sequence numbers used), end-of-stream included.
    pub packets_sent: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Faults injected on this board.
    pub faults: FaultCounts,
}

/// The whole run's totals.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamSummary {
    /// Hits put into packets.
    pub hits_sent: u64,
    /// Packets generated.
    pub packets_sent: u64,
    /// Per board.
    pub boards: Vec<BoardSummary>,
    /// Faults, all boards.
    pub faults: FaultCounts,
    /// Wall time.
    pub wall_seconds: f64,
    /// The simulator's own summary.
    pub sim: SimSummary,
}

struct BoardState {
    summary: BoardSummary,
    seq: u64,
    payload: Vec<u8>,
    payload_hits: u64,
    held: Option<(Vec<u8>, u64)>,
}

/// A packet on its way out, with what a sink needs to know about it.
pub struct OutPacket<'a> {
    /// Board.
    pub source_id: u32,
    /// The packet.
    pub bytes: &'a [u8],
    /// Hits in it.
    pub hits: u64,
    /// End-of-stream marker.
    pub end_of_stream: bool,
}

fn validate(config: &StreamConfig) -> Result<(), SimError> {
    if !(1..=2).contains(&config.boards) {
        return Err(SimError::config(
            "boards",
            config.boards,
            "the bench has 2 modules: use 1 or 2 boards",
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
                "a probability per packet in [0, 1)",
            ));
        }
    }
    if f.lose_packets + f.duplicate + f.reorder + f.corrupt >= 1.0 {
        return Err(SimError::config(
            "faults",
            "sum",
            "the fault probabilities must add up to less than 1",
        ));
    }
    if config.max_packet_bytes < HEADER_LEN + 64 || config.max_packet_bytes > 65_000 {
        return Err(SimError::config(
            "max_packet_bytes",
            config.max_packet_bytes,
            "between 96 and 65000",
        ));
    }
    if f.disconnect_after.is_some() && !matches!(config.transport, Transport::Tcp { .. }) {
        return Err(SimError::config(
            "disconnect_after",
            "set",
            "a disconnect needs the TCP transport",
        ));
    }
    Ok(())
}

/// Generates every packet (faults applied) and hands each to `emit`; `emit` returning false
/// stops the run. Also writes truth and calibration when `out_dir` is set.
pub fn generate_packets(
    config: &StreamConfig,
    mut emit: impl FnMut(OutPacket<'_>) -> bool,
) -> Result<StreamSummary, SimError> {
    validate(config)?;
    let mut sim = BenchSim::new(config.bench.clone())?;
    let mut truth_writer = match &config.out_dir {
        Some(dir) => {
            crate::files::prepare_out_dir(dir)?;
            crate::files::write_calibration_dir(&sim, &dir.join("calib"))?;
            let options = WriteOptions {
                delta_columns: vec!["t_true_ps"],
                dictionary_columns: vec!["channel", "kind"],
                ..Default::default()
            };
            Some(ParquetTableWriter::create(
                dir,
                "truth.parquet",
                TruthBatch::schema(),
                &options,
                vec![],
            )?)
        }
        None => None,
    };
    let mut rng = Rng::stream(config.bench.seed, 0x5eed_57ea);
    let mut boards: Vec<BoardState> = (0..config.boards)
        .map(|b| BoardState {
            summary: BoardSummary {
                source_id: b,
                ..Default::default()
            },
            seq: 0,
            payload: Vec::new(),
            payload_hits: 0,
            held: None,
        })
        .collect();
    let started = Instant::now();
    let mut first_t: Option<i64> = None;
    let mut frames = Vec::new();
    let mut truth = TruthBatch::default();
    let mut scanner_spans = Vec::new();
    let mut words_by_board: Vec<Vec<u64>> = vec![Vec::new(); config.boards as usize];
    let max_payload = config.max_packet_bytes - HEADER_LEN;
    let faults = config.faults.clone();
    let mut stopped = false;

    // Sends the board's pending payload as one packet, applying faults.
    let send_packet = |board: &mut BoardState,
                       rng: &mut Rng,
                       emit: &mut dyn FnMut(OutPacket<'_>) -> bool|
     -> bool {
        if board.payload.is_empty() {
            return true;
        }
        let mut packet = Vec::with_capacity(HEADER_LEN + board.payload.len());
        encode_packet(
            &mut packet,
            payload_format::PETSYS_TOFPET2,
            board.summary.source_id,
            board.seq,
            0,
            &board.payload,
            true,
        );
        let hits = board.payload_hits;
        board.seq += 1;
        board.summary.packets_sent += 1;
        board.summary.hits_sent += hits;
        board.payload.clear();
        board.payload_hits = 0;
        let id = board.summary.source_id;
        let f = &mut board.summary.faults;
        let u = rng.uniform();
        let (l, c, d, r) = (
            faults.lose_packets,
            faults.corrupt,
            faults.duplicate,
            faults.reorder,
        );
        let mut out: Vec<(Vec<u8>, u64)> = Vec::new();
        if u < l {
            f.lost_packets += 1;
            f.lost_hits += hits;
        } else if u < l + c {
            f.corrupted_packets += 1;
            f.corrupted_hits += hits;
            let at = HEADER_LEN + (rng.uniform() * (packet.len() - HEADER_LEN) as f64) as usize;
            let at = at.min(packet.len() - 1);
            packet[at] ^= 0x5a;
            out.push((packet, hits));
        } else if u < l + c + d {
            f.duplicated_packets += 1;
            out.push((packet.clone(), hits));
            out.push((packet, hits));
        } else if u < l + c + d + r && board.held.is_none() {
            f.reordered_packets += 1;
            board.held = Some((packet, hits));
            return true;
        } else {
            out.push((packet, hits));
        }
        if let Some(held) = board.held.take() {
            out.push(held);
        }
        for (bytes, hits) in &out {
            if !emit(OutPacket {
                source_id: id,
                bytes,
                hits: *hits,
                end_of_stream: false,
            }) {
                return false;
            }
        }
        true
    };

    while !stopped && sim.next_slice(&mut frames, &mut truth) {
        if let Some(w) = truth_writer.as_mut() {
            let batch = truth
                .to_record_batch()
                .map_err(|e| SimError::Arrow(e.to_string()))?;
            w.write(&batch)?;
        }
        let slice_end = truth.t_true_ps.last().copied();
        first_t = first_t.or(truth.t_true_ps.first().copied());
        truth.clear();
        scanner_spans.clear();
        let mut scanner = FrameScanner::new();
        scanner.scan(&frames, true, &mut scanner_spans);
        for span in &scanner_spans {
            for w in words_by_board.iter_mut() {
                w.clear();
            }
            for k in 0..span.n_hits as usize {
                let off = span.hits_offset + 8 * k;
                let mut b = [0u8; 8];
                b.copy_from_slice(&frames[off..off + 8]);
                let word = u64::from_le_bytes(b);
                let chip = ((word >> 42) >> 6) & 0x3f;
                let board = if config.boards == 1 {
                    0
                } else {
                    (chip as usize).min(config.boards as usize - 1)
                };
                words_by_board[board].push(word);
            }
            for (b, words) in words_by_board.iter().enumerate() {
                if words.is_empty() {
                    continue;
                }
                let frame_bytes = 16 + 8 * words.len();
                let board = &mut boards[b];
                if !board.payload.is_empty()
                    && board.payload.len() + frame_bytes > max_payload
                    && !send_packet(board, &mut rng, &mut emit)
                {
                    stopped = true;
                }
                encode_frame(
                    &mut board.payload,
                    span.frame & ((1 << 36) - 1),
                    span.lossy,
                    words,
                );
                board.payload_hits += words.len() as u64;
                board.summary.frames_sent += 1;
            }
        }
        frames.clear();
        if config.paced {
            if let (Some(a), Some(b)) = (first_t, slice_end) {
                let due = Duration::from_secs_f64(((b - a) as f64 * 1e-12).max(0.0));
                let elapsed = started.elapsed();
                if due > elapsed {
                    std::thread::sleep(due - elapsed);
                }
            }
        }
    }
    for board in boards.iter_mut() {
        if !stopped && !send_packet(board, &mut rng, &mut emit) {
            stopped = true;
        }
        if let Some((bytes, hits)) = board.held.take() {
            if !stopped
                && !emit(OutPacket {
                    source_id: board.summary.source_id,
                    bytes: &bytes,
                    hits,
                    end_of_stream: false,
                })
            {
                stopped = true;
            }
        }
        let mut eos = Vec::new();
        encode_packet(
            &mut eos,
            payload_format::PETSYS_TOFPET2,
            board.summary.source_id,
            board.seq,
            FLAG_END_OF_STREAM,
            &[],
            true,
        );
        board.seq += 1;
        board.summary.packets_sent += 1;
        if !stopped {
            let _ = emit(OutPacket {
                source_id: board.summary.source_id,
                bytes: &eos,
                hits: 0,
                end_of_stream: true,
            });
        }
    }
    if let Some(w) = truth_writer {
        w.commit()?;
    }
    let mut faults_total = FaultCounts::default();
    for b in &boards {
        faults_total.add(&b.summary.faults);
    }
    let summary = StreamSummary {
        hits_sent: boards.iter().map(|b| b.summary.hits_sent).sum(),
        packets_sent: boards.iter().map(|b| b.summary.packets_sent).sum(),
        boards: boards.into_iter().map(|b| b.summary).collect(),
        faults: faults_total,
        wall_seconds: started.elapsed().as_secs_f64(),
        sim: sim.summary(),
    };
    Ok(summary)
}

fn hits_in_payload(packet: &[u8]) -> u64 {
    let mut s = FrameScanner::new();
    let mut spans = Vec::new();
    s.scan(packet.get(HEADER_LEN..).unwrap_or(&[]), true, &mut spans);
    s.hits
}

/// Streams the bench over the configured transport; returns what was sent and injected.
pub fn stream(config: StreamConfig) -> Result<StreamSummary, SimError> {
    let io =
        |action: &'static str, e: std::io::Error| SimError::OutputDir(format!("{action}: {e}"));
    let mut summary = match config.transport.clone() {
        Transport::Udp { target } => {
            let bind: SocketAddr = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .map_err(|_| SimError::OutputDir("bad bind address".into()))?;
            let socket = UdpSocket::bind(bind).map_err(|e| io("binding a UDP socket", e))?;
            let mut send_error = None;
            let summary = generate_packets(&config, |p| {
                let repeats = if p.end_of_stream { 3 } else { 1 };
                for _ in 0..repeats {
                    if let Err(e) = socket.send_to(p.bytes, target) {
                        // The receiver is not up yet or the buffer is full: retry once, briefly.
                        std::thread::sleep(Duration::from_millis(1));
                        if let Err(e2) = socket.send_to(p.bytes, target) {
                            send_error = Some(format!("sending to {target}: {e}; {e2}"));
                            return false;
                        }
                    }
                }
                true
            })?;
            if let Some(e) = send_error {
                return Err(SimError::OutputDir(e));
            }
            summary
        }
        Transport::Tcp { listen } => {
            let listener = TcpListener::bind(listen).map_err(|e| io("listening for TCP", e))?;
            let accept = |listener: &TcpListener| -> Result<TcpStream, SimError> {
                listener
                    .set_nonblocking(true)
                    .map_err(|e| io("listening", e))?;
                let deadline = Instant::now() + Duration::from_secs(10);
                loop {
                    match listener.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(false).map_err(|e| io("accepting", e))?;
                            let _ = s.set_nodelay(true);
                            return Ok(s);
                        }
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                && Instant::now() < deadline =>
                        {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => return Err(io("waiting for scandaq to connect (10 s)", e)),
                    }
                }
            };
            let mut conn = Some(accept(&listener)?);
            let mut on_connection = 0u64;
            let mut cut: Vec<(u32, u64)> = Vec::new();
            let mut error = None;
            let disconnect_after = config.faults.disconnect_after;
            let mut summary = generate_packets(&config, |p| {
                if disconnect_after == Some(on_connection) && cut.is_empty() && !p.end_of_stream {
                    if let Some(mut c) = conn.take() {
                        let _ = c.write_all(&p.bytes[..p.bytes.len() / 2]);
                        let _ = c.flush();
                        let _ = c.shutdown(std::net::Shutdown::Both);
                    }
                    cut.push((p.source_id, hits_in_payload(p.bytes)));
                    match accept(&listener) {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            error = Some(e);
                            return false;
                        }
                    }
                    on_connection = 0;
                    return true;
                }
                let Some(c) = conn.as_mut() else { return false };
                if let Err(e) = c.write_all(p.bytes) {
                    error = Some(io("writing to scandaq", e));
                    return false;
                }
                on_connection += 1;
                true
            })?;
            if let Some(e) = error {
                return Err(e);
            }
            if let Some(mut c) = conn {
                let _ = c.flush();
                // Let the client read everything before the socket closes.
                let _ = c.shutdown(std::net::Shutdown::Write);
                let mut sink = [0u8; 64];
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = std::io::Read::read(&mut c, &mut sink);
            }
            for (id, hits) in cut {
                if let Some(b) = summary.boards.iter_mut().find(|b| b.source_id == id) {
                    b.faults.disconnects += 1;
                    b.faults.disconnect_lost_packets += 1;
                    b.faults.disconnect_lost_hits += hits;
                }
                summary.faults.disconnects += 1;
                summary.faults.disconnect_lost_packets += 1;
                summary.faults.disconnect_lost_hits += hits;
            }
            summary
        }
    };
    summary.wall_seconds = summary.wall_seconds.max(0.0);
    if let Some(dir) = &config.out_dir {
        let json = serde_json::to_string_pretty(&summary).map_err(|e| SimError::Json {
            what: "summary",
            message: e.to_string(),
        })?;
        std::fs::write(dir.join("summary.json"), json)
            .map_err(|e| SimError::io("writing", &dir.join("summary.json"), e))?;
    }
    Ok(summary)
}
