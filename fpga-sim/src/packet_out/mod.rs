//! A generic transport-packet emitter (docs/formats.md §1) that any preset can use: it numbers
//! each source's packets, adds the CRC-32C, injects seeded packet loss, paces the output and
//! delivers it over UDP, TCP, into a `.sdq` raw archive or to a closure.
//!
//! # Use
//! ```no_run
//! use scandaq_fpga_sim::packet_out::{Destination, PacketOut, PacketOutOptions, Pacing};
//! use scandaq_decoders::transport::payload_format;
//! # fn main() -> Result<(), scandaq_fpga_sim::SimError> {
//! let options = PacketOutOptions {
//!     pacing: Pacing::BytesPerSecond(200e6),
//!     lose_packets: 0.001,
//!     seed: 7,
//!     ..PacketOutOptions::default()
//! };
//! let target = "127.0.0.1:5600".parse().unwrap();
//! let mut out = PacketOut::open(Destination::Udp { target }, options)?;
//! let header = [0u8; 40];
//! let samples = vec![0u8; 8000];
//! // One data packet of source 3 (payload = header ++ samples, copied once into the batch).
//! let sent = out.send_parts(3, payload_format::US_RF_EVENT, &[&header, &samples])?;
//! if sent.lost { /* the truth records that this chunk never left */ }
//! // A control packet in the same source's sequence space (never faulted).
//! out.send_control(3, &[0u8; 32])?;
//! let summary = out.finish()?; // end-of-stream markers, flush, close
//! # Ok(()) }
//! ```
//!
//! # Packets and sources
//! Every packet is a 32-byte header + payload, CRC flag set. `seq` counts each source's
//! packets from 0, lost ones included (a lost packet leaves a gap); a source's first packet
//! (seq 0) carries `FLAG_START_OF_STREAM` and is never lost. Several sources may be
//! interleaved freely: the caller decides the order by calling [`PacketOut::send_parts`] /
//! [`PacketOut::send_control`] with their source ids. [`PacketOut::finish`] sends, for each
//! source in order of first appearance, one empty packet with `FLAG_END_OF_STREAM` and the
//! source's next seq, in the payload format of its last data packet (control if it sent none);
//! over UDP it goes out [`UDP_END_OF_STREAM_COPIES`] times (same bytes, same seq) as in
//! [`crate::stream`], elsewhere once. End markers and control packets are never faulted.
//!
//! # Faults
//! One uniform draw per data packet from `Rng::stream(seed, LOSS_STREAM)`; below
//! `lose_packets` the packet is numbered but not sent. [`Sent::lost`] tells the caller (for its
//! truth), and [`SourceCounts`] counts lost packets and payload bytes per source.
//!
//! # Pacing
//! [`Pacing::BytesPerSecond`] (wire bytes, headers included) or [`Pacing::PacketsPerSecond`]
//! hold each batch back until the rate allows it, measured from the first packet;
//! [`PacketOut::pace_to`] additionally lets a simulator pace on its own clock (e.g. frame times).
//! [`Pacing::Unpaced`] sends as fast as the destination takes it. With
//! [`PacketOutOptions::prerender`] the packets are generated first, kept in memory, and sent
//! at [`PacketOut::finish`] with the same pacing.
//!
//! # Destinations
//! - [`Destination::Udp`]: one datagram per packet, [`PacketOutOptions::udp_batch`] datagrams per
//!   `sendmmsg` system call (a 500 MB/s stream of 8 KiB packets is 60 000 datagrams/s; one
//!   system call each would cost a core), a 4 MiB send buffer, retries while the kernel reports
//!   a full buffer.
//! - [`Destination::Tcp`]: listens at open ([`PacketOut::local_addr`] gives the bound port);
//!   the receiver connects, accepted at the first flush (waiting up to [`TCP_ACCEPT_WAIT`]);
//!   packets are written back to back in 256 KiB batches. A client that goes away is an error.
//! - [`Destination::Archive`]: a `.sdq` raw archive (64-byte `SDQA` header, the given metadata
//!   JSON, packets exactly as a receiver would have them), written `.inprogress` and committed
//!   by [`PacketOut::finish`] through `scandaq_sinks::archive::RawArchiveWriter`; lost packets
//!   are absent from it as from the wire. End markers are written once.
//! - [`Destination::Closure`]: `f(source_id, packet)` per packet (tests, in-process use);
//!   returning false stops the emitter ([`PacketOut::stopped`]).

use crate::config::SimError;
use crate::rng::Rng;
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg, setsockopt, sockopt,
};
use scandaq_decoders::transport::{
    FLAG_CRC, FLAG_END_OF_STREAM, FLAG_START_OF_STREAM, HEADER_LEN, MAGIC, payload_format,
};
use scandaq_sinks::archive::RawArchiveWriter;
use serde::{Deserialize, Serialize};
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Times the end-of-stream packet is sent over UDP (the same bytes each time).
pub const UDP_END_OF_STREAM_COPIES: usize = 3;
/// How long a TCP destination waits for the receiver to connect.
pub const TCP_ACCEPT_WAIT: Duration = Duration::from_secs(60);
/// A TCP client that reads nothing for this long ends the run with an error.
pub const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes collected before a TCP or archive write.
pub const STREAM_BATCH_BYTES: usize = 256 << 10;
/// Default datagrams per `sendmmsg` call.
pub const DEFAULT_UDP_BATCH: usize = 32;
/// Largest packet a UDP datagram holds (header included).
pub const MAX_UDP_PACKET_BYTES: usize = 65_507;
/// Random stream of the loss draws (independent of a preset's physics streams).
pub const LOSS_STREAM: u64 = 0x9ac4_e700_0000_0001;
/// UDP send buffer requested.
const UDP_SEND_BUFFER: usize = 4 << 20;

/// A closure receiving `(source_id, packet bytes)`; false stops the emitter.
pub type PacketSink<'a> = Box<dyn FnMut(u32, &[u8]) -> bool + 'a>;

/// Where the packets go.
pub enum Destination<'a> {
    /// Datagrams from an ephemeral socket to this address.
    Udp {
        /// Receiver address.
        target: SocketAddr,
    },
    /// Listen here and serve one client (the receiver connects).
    Tcp {
        /// Listening address (port 0 picks a free port; see [`PacketOut::local_addr`]).
        listen: SocketAddr,
    },
    /// A `.sdq` raw archive file.
    Archive {
        /// The file to create (its directory must exist).
        path: PathBuf,
        /// Metadata JSON stored after the archive header (run number, configuration...).
        metadata_json: String,
    },
    /// A closure per packet.
    Closure(PacketSink<'a>),
}

impl std::fmt::Debug for Destination<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Udp { target } => write!(f, "UDP to {target}"),
            Self::Tcp { listen } => write!(f, "TCP served on {listen}"),
            Self::Archive { path, .. } => write!(f, "archive {}", path.display()),
            Self::Closure(_) => write!(f, "closure"),
        }
    }
}

/// Output rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Pacing {
    /// As fast as the destination takes it.
    #[default]
    Unpaced,
    /// Wire bytes (headers included) per second.
    BytesPerSecond(f64),
    /// Packets per second.
    PacketsPerSecond(f64),
}

/// Emitter options.
#[derive(Clone, Debug, PartialEq)]
pub struct PacketOutOptions {
    /// Rate limit.
    pub pacing: Pacing,
    /// Probability per data packet of losing it (in [0, 1)).
    pub lose_packets: f64,
    /// Seed of the loss draws.
    pub seed: u64,
    /// Datagrams per `sendmmsg` call (UDP; 1..=1024).
    pub udp_batch: usize,
    /// Generate everything first, keeping the packets in memory (the run's wire bytes), then
    /// send them with the same pacing: a benchmark's sender then costs only its system calls,
    /// as a front-end board on its own hardware would, not the physics. UDP and TCP only.
    pub prerender: bool,
}

impl Default for PacketOutOptions {
    fn default() -> Self {
        Self {
            pacing: Pacing::Unpaced,
            lose_packets: 0.0,
            seed: 1,
            udp_batch: DEFAULT_UDP_BATCH,
            prerender: false,
        }
    }
}

/// What happened to one data packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Its sequence number.
    pub seq: u64,
    /// Lost by fault injection (numbered, never sent).
    pub lost: bool,
}

/// One source's totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    /// Transport source_id.
    pub source_id: u32,
    /// Sequence numbers used (data, control and end-of-stream packets, lost ones included).
    pub packets: u64,
    /// Data packets generated (lost ones included).
    pub data_packets: u64,
    /// Control packets sent.
    pub control_packets: u64,
    /// Data payload bytes generated (lost ones included).
    pub payload_bytes: u64,
    /// Data packets lost by fault injection.
    pub lost_packets: u64,
    /// Their payload bytes.
    pub lost_payload_bytes: u64,
}

/// The emitter's totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PacketOutSummary {
    /// Per source, in order of first appearance.
    pub sources: Vec<SourceCounts>,
    /// Packets handed to the destination (end-marker copies included).
    pub wire_packets: u64,
    /// Their bytes, headers included.
    pub wire_bytes: u64,
    /// Seconds from the first packet to the end.
    pub wall_seconds: f64,
    /// The archive file written (archive destination).
    pub archive: Option<scandaq_sinks::FileRecord>,
    /// True when a closure stopped the emitter early.
    pub stopped: bool,
}

impl PacketOutSummary {
    /// Data packets lost by fault injection, all sources.
    pub fn lost_packets(&self) -> u64 {
        self.sources.iter().map(|s| s.lost_packets).sum()
    }
}

/// Packets generated ahead of sending ([`PacketOutOptions::prerender`]).
struct PrerenderedBatch {
    /// Not sent before this time after the start of sending ([`PacketOut::pace_to`]).
    not_before: Duration,
    batch: Vec<u8>,
    spans: Vec<(u32, usize, usize)>,
}

struct Source {
    counts: SourceCounts,
    seq: u64,
    last_format: Option<u16>,
}

enum Sink<'a> {
    Udp {
        socket: UdpSocket,
        target: SockaddrStorage,
        target_text: String,
        headers: MultiHeaders<SockaddrStorage>,
    },
    Tcp {
        listener: TcpListener,
        conn: Option<TcpStream>,
    },
    Archive(RawArchiveWriter),
    Closure(PacketSink<'a>),
}

/// The emitter. See the module documentation.
pub struct PacketOut<'a> {
    sink: Sink<'a>,
    options: PacketOutOptions,
    rng: Rng,
    sources: Vec<Source>,
    /// Packets waiting to be written, back to back.
    batch: Vec<u8>,
    /// `(source_id, start, len)` of each packet in `batch`.
    spans: Vec<(u32, usize, usize)>,
    batch_packets: usize,
    batch_bytes: usize,
    started: Option<Instant>,
    wire_packets: u64,
    wire_bytes: u64,
    stopped: bool,
    /// With [`PacketOutOptions::prerender`]: the batches generated so far, and the pacing
    /// time the next one gets.
    prerendered: Option<(Vec<PrerenderedBatch>, Duration)>,
}

fn net(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> SimError {
    let action = action.into();
    move |source| SimError::Network { action, source }
}

impl<'a> PacketOut<'a> {
    /// Opens the destination (binds the UDP socket, starts listening on TCP, creates the
    /// archive's `.inprogress` file).
    pub fn open(destination: Destination<'a>, options: PacketOutOptions) -> Result<Self, SimError> {
        if !(0.0..1.0).contains(&options.lose_packets) {
            return Err(SimError::config(
                "lose_packets",
                options.lose_packets,
                "must be a probability per packet in [0, 1)",
            ));
        }
        if !(1..=1024).contains(&options.udp_batch) {
            return Err(SimError::config(
                "udp_batch",
                options.udp_batch,
                "datagrams per sendmmsg call must be in [1, 1024]",
            ));
        }
        match options.pacing {
            Pacing::BytesPerSecond(r) | Pacing::PacketsPerSecond(r) if r.is_nan() || r <= 0.0 => {
                return Err(SimError::config(
                    "pacing",
                    r,
                    "a paced rate must be positive (use Pacing::Unpaced for no limit)",
                ));
            }
            _ => {}
        }
        let (sink, batch_packets, batch_bytes) = match destination {
            Destination::Udp { target } => {
                let bind = if target.is_ipv4() {
                    SocketAddr::from(([0, 0, 0, 0], 0))
                } else {
                    SocketAddr::from(([0u16; 8], 0))
                };
                let socket = UdpSocket::bind(bind).map_err(net("binding a UDP socket"))?;
                // A larger buffer absorbs bursts; the kernel may cap it (not an error).
                let _ = setsockopt(&socket, sockopt::SndBuf, &UDP_SEND_BUFFER);
                (
                    Sink::Udp {
                        socket,
                        target: SockaddrStorage::from(target),
                        target_text: target.to_string(),
                        headers: MultiHeaders::preallocate(options.udp_batch, None),
                    },
                    options.udp_batch,
                    usize::MAX,
                )
            }
            Destination::Tcp { listen } => {
                let listener =
                    TcpListener::bind(listen).map_err(net(format!("listening on TCP {listen}")))?;
                listener
                    .set_nonblocking(true)
                    .map_err(net("configuring the TCP listener"))?;
                (
                    Sink::Tcp {
                        listener,
                        conn: None,
                    },
                    usize::MAX,
                    STREAM_BATCH_BYTES,
                )
            }
            Destination::Archive {
                path,
                metadata_json,
            } => {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| {
                        SimError::OutputDir(format!(
                            "archive path {} has no file name",
                            path.display()
                        ))
                    })?;
                let w = RawArchiveWriter::create(&dir, &name, &metadata_json)?;
                (Sink::Archive(w), usize::MAX, STREAM_BATCH_BYTES)
            }
            Destination::Closure(f) => (Sink::Closure(f), 1, usize::MAX),
        };
        if options.prerender && !matches!(sink, Sink::Udp { .. } | Sink::Tcp { .. }) {
            return Err(SimError::config(
                "prerender",
                true,
                "prerendering paces a network stream: use it with --udp or --tcp",
            ));
        }
        Ok(Self {
            sink,
            rng: Rng::stream(options.seed, LOSS_STREAM),
            prerendered: options.prerender.then(|| (Vec::new(), Duration::ZERO)),
            options,
            sources: Vec::new(),
            batch: Vec::with_capacity(STREAM_BATCH_BYTES + 65_536),
            spans: Vec::new(),
            batch_packets,
            batch_bytes,
            started: None,
            wire_packets: 0,
            wire_bytes: 0,
            stopped: false,
        })
    }

    /// The TCP listening address (useful with port 0); `None` for other destinations.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.sink {
            Sink::Tcp { listener, .. } => listener.local_addr().ok(),
            _ => None,
        }
    }

    /// True once a closure destination asked to stop; further packets are discarded.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Sequence number the next packet of `source_id` will get.
    pub fn next_seq(&self, source_id: u32) -> u64 {
        self.sources
            .iter()
            .find(|s| s.counts.source_id == source_id)
            .map_or(0, |s| s.seq)
    }

    fn source(&mut self, source_id: u32) -> &mut Source {
        // Few sources: a linear search beats a map.
        let i = match self
            .sources
            .iter()
            .position(|s| s.counts.source_id == source_id)
        {
            Some(i) => i,
            None => {
                self.sources.push(Source {
                    counts: SourceCounts {
                        source_id,
                        ..Default::default()
                    },
                    seq: 0,
                    last_format: None,
                });
                self.sources.len() - 1
            }
        };
        &mut self.sources[i]
    }

    /// Appends one packet (header + the concatenated parts) to the batch.
    fn push_packet(&mut self, source_id: u32, format: u16, seq: u64, flags: u32, parts: &[&[u8]]) {
        let start = self.batch.len();
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        self.batch.resize(start + HEADER_LEN, 0);
        let mut crc = 0u32;
        for p in parts {
            self.batch.extend_from_slice(p);
            crc = crc32c::crc32c_append(crc, p);
        }
        let flags = if seq == 0 {
            flags | FLAG_START_OF_STREAM
        } else {
            flags
        };
        let h = &mut self.batch[start..start + HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4..6].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        h[6..8].copy_from_slice(&format.to_le_bytes());
        h[8..12].copy_from_slice(&source_id.to_le_bytes());
        h[12..16].copy_from_slice(&(flags | FLAG_CRC).to_le_bytes());
        h[16..24].copy_from_slice(&seq.to_le_bytes());
        h[24..28].copy_from_slice(&(payload_len as u32).to_le_bytes());
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        self.spans
            .push((source_id, start, HEADER_LEN + payload_len));
    }

    fn check_size(&self, payload_len: usize) -> Result<(), SimError> {
        let limit = match self.sink {
            Sink::Udp { .. } => MAX_UDP_PACKET_BYTES,
            _ => HEADER_LEN + u32::MAX as usize,
        };
        if HEADER_LEN + payload_len > limit {
            return Err(SimError::config(
                "payload_len",
                payload_len,
                format!(
                    "a packet of {} bytes does not fit a UDP datagram ({MAX_UDP_PACKET_BYTES} \
                     bytes at most): split the payload into smaller chunks",
                    HEADER_LEN + payload_len
                ),
            ));
        }
        Ok(())
    }

    fn after_push(&mut self) -> Result<(), SimError> {
        if self.spans.len() >= self.batch_packets || self.batch.len() >= self.batch_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends one data packet whose payload is the concatenation of `parts` (so a header and a
    /// slice of a larger buffer need no intermediate copy). The packet may be lost by fault
    /// injection; [`Sent`] says so.
    pub fn send_parts(
        &mut self,
        source_id: u32,
        format: u16,
        parts: &[&[u8]],
    ) -> Result<Sent, SimError> {
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        self.check_size(payload_len)?;
        self.started.get_or_insert_with(Instant::now);
        let lost = self.rng.uniform() < self.options.lose_packets;
        let src = self.source(source_id);
        let seq = src.seq;
        // A source's start packet is never lost (the draw is made all the same).
        let lost = lost && seq != 0;
        src.seq += 1;
        src.last_format = Some(format);
        let c = &mut src.counts;
        c.packets += 1;
        c.data_packets += 1;
        c.payload_bytes += payload_len as u64;
        if lost {
            c.lost_packets += 1;
            c.lost_payload_bytes += payload_len as u64;
            return Ok(Sent { seq, lost });
        }
        if !self.stopped {
            self.push_packet(source_id, format, seq, 0, parts);
            self.after_push()?;
        }
        Ok(Sent { seq, lost })
    }

    /// Sends one data packet (see [`PacketOut::send_parts`]).
    pub fn send(&mut self, source_id: u32, format: u16, payload: &[u8]) -> Result<Sent, SimError> {
        self.send_parts(source_id, format, &[payload])
    }

    /// Sends a control packet (format 0xFFFF) in `source_id`'s sequence space; never faulted.
    /// Returns its seq.
    pub fn send_control(&mut self, source_id: u32, payload: &[u8]) -> Result<u64, SimError> {
        self.check_size(payload.len())?;
        self.started.get_or_insert_with(Instant::now);
        let src = self.source(source_id);
        let seq = src.seq;
        src.seq += 1;
        src.counts.packets += 1;
        src.counts.control_packets += 1;
        if !self.stopped {
            self.push_packet(source_id, payload_format::CONTROL, seq, 0, &[payload]);
            self.after_push()?;
        }
        Ok(seq)
    }

    /// Waits until `t` has passed since the first packet (a simulator pacing on its own clock,
    /// e.g. frame times); batched packets are written first so they are not held back.
    pub fn pace_to(&mut self, t: Duration) -> Result<(), SimError> {
        if self.prerendered.is_some() {
            self.flush()?;
            if let Some((_, not_before)) = &mut self.prerendered {
                *not_before = t;
            }
            return Ok(());
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        let elapsed = started.elapsed();
        if t > elapsed {
            self.flush()?;
            let elapsed = started.elapsed();
            if t > elapsed {
                std::thread::sleep(t - elapsed);
            }
        }
        Ok(())
    }

    /// Holds the next batch back until the configured rate allows it.
    fn pace_batch(&self) {
        let Some(started) = self.started else { return };
        let due = match self.options.pacing {
            Pacing::Unpaced => return,
            Pacing::BytesPerSecond(r) => self.wire_bytes as f64 / r,
            Pacing::PacketsPerSecond(r) => self.wire_packets as f64 / r,
        };
        let due = Duration::from_secs_f64(due);
        let elapsed = started.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }

    /// Writes every batched packet to the destination (prerendering: keeps them for later).
    pub fn flush(&mut self) -> Result<(), SimError> {
        if self.spans.is_empty() {
            return Ok(());
        }
        if let Some((batches, not_before)) = &mut self.prerendered {
            let capacity = self.batch.capacity();
            batches.push(PrerenderedBatch {
                not_before: *not_before,
                batch: std::mem::replace(&mut self.batch, Vec::with_capacity(capacity)),
                spans: std::mem::take(&mut self.spans),
            });
            return Ok(());
        }
        self.write_batch()
    }

    /// Sends the prerendered batches, each no earlier than its pacing time after the first.
    fn send_prerendered(&mut self) -> Result<(), SimError> {
        let Some((batches, _)) = self.prerendered.take() else {
            return Ok(());
        };
        let started = Instant::now();
        self.started = Some(started);
        for b in batches {
            let elapsed = started.elapsed();
            if b.not_before > elapsed {
                std::thread::sleep(b.not_before - elapsed);
            }
            self.batch = b.batch;
            self.spans = b.spans;
            self.write_batch()?;
            if self.stopped {
                break;
            }
        }
        Ok(())
    }

    /// Writes the current batch to the destination, paced.
    fn write_batch(&mut self) -> Result<(), SimError> {
        if self.spans.is_empty() {
            return Ok(());
        }
        self.pace_batch();
        let n = self.spans.len() as u64;
        let bytes = self.batch.len() as u64;
        let result = match &mut self.sink {
            Sink::Udp {
                socket,
                target,
                target_text,
                headers,
            } => send_udp_batch(socket, headers, target, &self.batch, &self.spans)
                .map_err(net(format!("sending datagrams to {target_text}"))),
            Sink::Tcp { listener, conn } => {
                let c = match conn {
                    Some(c) => c,
                    None => conn.insert(accept(listener)?),
                };
                c.write_all(&self.batch)
                    .map_err(net("writing to the TCP client"))
            }
            Sink::Archive(w) => w.write_packets(&self.batch, n).map_err(SimError::from),
            Sink::Closure(f) => {
                for &(source_id, start, len) in &self.spans {
                    if !f(source_id, &self.batch[start..start + len]) {
                        self.stopped = true;
                        break;
                    }
                }
                Ok(())
            }
        };
        self.batch.clear();
        self.spans.clear();
        result?;
        self.wire_packets += n;
        self.wire_bytes += bytes;
        Ok(())
    }

    /// Sends the end-of-stream markers, flushes, closes the destination (TCP: lets the client
    /// read everything; archive: commits the file) and returns the totals.
    pub fn finish(mut self) -> Result<PacketOutSummary, SimError> {
        self.flush()?;
        let copies = match self.sink {
            Sink::Udp { .. } => UDP_END_OF_STREAM_COPIES,
            _ => 1,
        };
        for i in 0..self.sources.len() {
            let s = &mut self.sources[i];
            let (id, seq) = (s.counts.source_id, s.seq);
            let format = s.last_format.unwrap_or(payload_format::CONTROL);
            s.seq += 1;
            s.counts.packets += 1;
            for _ in 0..copies {
                if !self.stopped {
                    self.push_packet(id, format, seq, FLAG_END_OF_STREAM, &[]);
                }
            }
        }
        self.flush()?;
        self.send_prerendered()?;
        let wall_seconds = self.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let archive = match self.sink {
            Sink::Tcp {
                conn: Some(mut c), ..
            } => {
                let _ = c.flush();
                let _ = c.shutdown(Shutdown::Write);
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut sink = [0u8; 256];
                while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
                None
            }
            Sink::Archive(w) => Some(w.commit()?),
            _ => None,
        };
        Ok(PacketOutSummary {
            sources: self.sources.into_iter().map(|s| s.counts).collect(),
            wire_packets: self.wire_packets,
            wire_bytes: self.wire_bytes,
            wall_seconds,
            archive,
            stopped: self.stopped,
        })
    }
}

/// Sends the batch's packets as datagrams, `sendmmsg` at a time; a partial send continues with
/// the rest, a full buffer is retried (1 ms apart, up to 1 s).
fn send_udp_batch(
    socket: &UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    target: &SockaddrStorage,
    batch: &[u8],
    spans: &[(u32, usize, usize)],
) -> std::io::Result<()> {
    let mut done = 0;
    let mut retries = 0;
    while done < spans.len() {
        let slices: Vec<[IoSlice<'_>; 1]> = spans[done..]
            .iter()
            .map(|&(_, start, len)| [IoSlice::new(&batch[start..start + len])])
            .collect();
        let addrs = vec![Some(*target); slices.len()];
        let cmsgs: [ControlMessage<'_>; 0] = [];
        match sendmmsg(
            socket.as_raw_fd(),
            headers,
            &slices,
            &addrs,
            cmsgs,
            MsgFlags::empty(),
        ) {
            Ok(results) => {
                let n = results.count();
                if n == 0 {
                    retries += 1;
                    if retries > 1000 {
                        return Err(ErrorKind::WriteZero.into());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                done += n;
            }
            Err(Errno::EAGAIN | Errno::ENOBUFS | Errno::EINTR) if retries < 1000 => {
                retries += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            // The receiver's port was not open yet (an ICMP reply to an earlier datagram):
            // UDP does not care, and neither does a sender that streams before anyone listens.
            Err(Errno::ECONNREFUSED) => {}
            Err(e) => return Err(std::io::Error::from(e)),
        }
    }
    Ok(())
}

/// Waits up to [`TCP_ACCEPT_WAIT`] for the receiver on the (non-blocking) listener.
fn accept(listener: &TcpListener) -> Result<TcpStream, SimError> {
    crate::stream::accept(listener, TCP_ACCEPT_WAIT, "connected")
}

#[cfg(test)]
mod tests {
    use super::*;
    use scandaq_decoders::transport::decode_packet;

    /// Packets received by the closure, `(source_id, bytes)`.
    type Received = Vec<(u32, Vec<u8>)>;

    fn collect(options: PacketOutOptions) -> (Received, PacketOutSummary, Vec<Sent>) {
        let mut got = Vec::new();
        let mut sent = Vec::new();
        let summary = {
            let mut out = PacketOut::open(
                Destination::Closure(Box::new(|s, p: &[u8]| {
                    got.push((s, p.to_vec()));
                    true
                })),
                options,
            )
            .unwrap();
            for i in 0..200u32 {
                let src = i % 3;
                let body = i.to_le_bytes();
                sent.push(out.send_parts(src, 4, &[&body, b"xyz"]).unwrap());
                if i % 50 == 0 {
                    out.send_control(src, &[1, 0, 0, 0]).unwrap();
                }
            }
            out.finish().unwrap()
        };
        (got, summary, sent)
    }

    #[test]
    fn sequences_crc_loss_and_end_markers() {
        let (got, summary, sent) = collect(PacketOutOptions {
            lose_packets: 0.1,
            seed: 3,
            ..Default::default()
        });
        let lost = sent.iter().filter(|s| s.lost).count() as u64;
        assert!(lost > 5 && lost < 40, "{lost}");
        assert_eq!(summary.lost_packets(), lost);
        let mut last_seq = [None::<u64>; 3];
        let mut eos = 0;
        for (src, p) in &got {
            let (h, payload) = decode_packet(p).unwrap();
            assert_eq!(h.source_id, *src);
            if let Some(prev) = last_seq[*src as usize] {
                assert!(h.seq > prev);
            }
            last_seq[*src as usize] = Some(h.seq);
            if h.flags & FLAG_END_OF_STREAM != 0 {
                eos += 1;
                assert!(payload.is_empty());
                assert_eq!(h.payload_format, 4);
            } else if h.payload_format == 4 {
                assert_eq!(&payload[4..], b"xyz");
            }
        }
        assert_eq!(eos, 3);
        // Everything numbered: received + lost = generated.
        assert_eq!(got.len() as u64 + lost, 200 + 4 + 3);
        let per: u64 = summary.sources.iter().map(|s| s.packets).sum();
        assert_eq!(per, 207);
        // Deterministic in the seed.
        let (got2, _, _) = collect(PacketOutOptions {
            lose_packets: 0.1,
            seed: 3,
            ..Default::default()
        });
        assert_eq!(got, got2);
    }

    #[test]
    fn archive_destination_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.sdq");
        let mut out = PacketOut::open(
            Destination::Archive {
                path: path.clone(),
                metadata_json: "{\"run\":1}".into(),
            },
            PacketOutOptions::default(),
        )
        .unwrap();
        for i in 0..1000u32 {
            out.send(7, 4, &vec![i as u8; 500]).unwrap();
        }
        let s = out.finish().unwrap();
        assert_eq!(s.archive.as_ref().unwrap().rows, 1001);
        let bytes = std::fs::read(&path).unwrap();
        let meta_len = scandaq_decoders::archive::parse_header(&bytes).unwrap() as usize;
        let mut at = scandaq_decoders::archive::ARCHIVE_HEADER_LEN + meta_len;
        let mut n = 0u64;
        while at < bytes.len() {
            let (h, _) = decode_packet(&bytes[at..]).unwrap();
            assert_eq!(h.seq, n);
            n += 1;
            at += h.packet_len();
        }
        assert_eq!(n, 1001);
    }

    #[test]
    fn udp_and_tcp_deliver() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let target = rx.local_addr().unwrap();
        let mut out = PacketOut::open(
            Destination::Udp { target },
            PacketOutOptions {
                udp_batch: 8,
                pacing: Pacing::PacketsPerSecond(20_000.0),
                ..Default::default()
            },
        )
        .unwrap();
        for i in 0..100u32 {
            out.send(1, 4, &i.to_le_bytes()).unwrap();
        }
        let s = out.finish().unwrap();
        assert_eq!(s.wire_packets, 103);
        let mut buf = [0u8; 2048];
        for i in 0..103u64 {
            let n = rx.recv(&mut buf).unwrap();
            let (h, _) = decode_packet(&buf[..n]).unwrap();
            assert_eq!(h.seq, i.min(100));
        }

        let mut out = PacketOut::open(
            Destination::Tcp {
                listen: "127.0.0.1:0".parse().unwrap(),
            },
            PacketOutOptions::default(),
        )
        .unwrap();
        let addr = out.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            let mut all = Vec::new();
            c.read_to_end(&mut all).unwrap();
            all
        });
        for i in 0..50u32 {
            out.send(2, 4, &vec![i as u8; 3000]).unwrap();
        }
        out.finish().unwrap();
        let all = reader.join().unwrap();
        let mut at = 0;
        let mut n = 0;
        while at < all.len() {
            let (h, _) = decode_packet(&all[at..]).unwrap();
            at += h.packet_len();
            n += 1;
        }
        assert_eq!(n, 51);
    }

    /// The datagrams one emitter run delivers to a fresh UDP socket, and how long the sending
    /// took from the first packet.
    fn udp_run(prerender: bool) -> (Vec<Vec<u8>>, PacketOutSummary) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = setsockopt(&rx, sockopt::RcvBuf, &(4usize << 20));
        let mut out = PacketOut::open(
            Destination::Udp {
                target: rx.local_addr().unwrap(),
            },
            PacketOutOptions {
                udp_batch: 4,
                lose_packets: 0.1,
                seed: 9,
                prerender,
                ..Default::default()
            },
        )
        .unwrap();
        for i in 0..60u32 {
            if i % 20 == 0 {
                out.pace_to(Duration::from_millis(u64::from(i))).unwrap();
                out.send_control(1, &i.to_le_bytes()).unwrap();
            }
            out.send(1, 4, &vec![i as u8; 500]).unwrap();
        }
        let summary = out.finish().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..summary.wire_packets {
            let n = rx.recv(&mut buf).unwrap();
            got.push(buf[..n].to_vec());
        }
        (got, summary)
    }

    #[test]
    fn prerendered_udp_sends_the_same_packets_with_the_same_pacing() {
        let (live, live_summary) = udp_run(false);
        let (pre, pre_summary) = udp_run(true);
        assert!(live_summary.lost_packets() > 0, "the loss draws apply");
        assert_eq!(pre_summary.sources, live_summary.sources);
        assert_eq!(pre, live, "same bytes, same order");
        // The last pace_to (40 ms) holds the packets after it back, from the first one sent.
        assert!(
            pre_summary.wall_seconds >= 0.040,
            "{}",
            pre_summary.wall_seconds
        );

        let dir = tempfile::tempdir().unwrap();
        let e = PacketOut::open(
            Destination::Archive {
                path: dir.path().join("a.sdq"),
                metadata_json: "{}".into(),
            },
            PacketOutOptions {
                prerender: true,
                ..Default::default()
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("--udp or --tcp"), "{e}");
    }
}
