//! The simulator's one packet sender (docs/formats.md §1), used by every streaming preset
//! (bench through [`crate::stream`], opm, us; ring writes files only): it numbers each
//! source's packets, adds the CRC-32C, injects seeded faults, paces the output and delivers it
//! over UDP, TCP, into a `.sdq` raw archive or to a closure.
//!
//! By job: `packetizer` builds packets into a batch, [`faults`] draws each data packet's
//! fate, [`pacing`] holds batches back to a rate or a simulator's clock (and prerenders),
//! [`transports`] hands batches to the destination. This file keeps the sources' sequence
//! spaces and ties the four together.
//!
//! # Use
//! ```no_run
//! use scandaq_fpga_sim::packet_out::{Destination, PacketOut, PacketOutOptions, Pacing};
//! use scandaq_fpga_sim::packet_out::faults::Faults;
//! use scandaq_decoders::transport::payload_format;
//! # fn main() -> Result<(), scandaq_fpga_sim::SimError> {
//! let options = PacketOutOptions {
//!     pacing: Pacing::BytesPerSecond(200e6),
//!     faults: Faults::loss(0.001),
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
//! (seq 0) carries `FLAG_START_OF_STREAM` and is never lost or corrupted. Several sources may
//! be interleaved freely: the caller decides the order by calling [`PacketOut::send_parts`] /
//! [`PacketOut::send_control`] with their source ids. [`PacketOut::end_source`] (or
//! [`PacketOut::finish`], for each source not yet ended, in order of first appearance or
//! [`PacketOut::declare_source`]) sends one empty packet with `FLAG_END_OF_STREAM` and the
//! source's next seq, in the payload format of its last data packet (the declared one, or
//! control if it sent none); over UDP it goes out [`UDP_END_OF_STREAM_COPIES`] times (same
//! bytes, same seq), elsewhere once. End markers and control packets are never faulted.
//! [`PacketOut::restart_source`] starts a source's `seq` from 0 again, as a front end does
//! after a reset.
//!
//! # Faults
//! One uniform draw per data packet from `Rng::stream(seed, fault_stream)` decides it, the
//! outcomes exclusive ([`faults::Faults`]):
//! - lost: numbered, never sent ([`Sent::lost`] tells the caller, for its truth);
//! - corrupted: one payload byte flipped after the CRC was computed (a second draw picks it);
//! - duplicated: sent twice in a row;
//! - reordered: held back and sent right after the next packet of its source that goes out
//!   intact (one held packet per source). A held packet with no intact successor before the
//!   source ends or restarts is sent in order and not counted.
//!
//! [`SourceCounts`] counts lost packets and payload bytes per source;
//! [`PacketOutSummary::source_faults`] every fault, with the callers' hit counts
//! ([`PacketOut::send_counted`]). TCP `disconnect_after = N` (with
//! [`PacketOutOptions::tcp_reconnect`]): after N packets on the connection, the next packet
//! that is sent once, intact and with no held packet behind it gets only its first half
//! written; the connection is closed and the receiver's reconnection served from the
//! following packet on.
//!
//! # Pacing
//! [`Pacing::BytesPerSecond`] (wire bytes, headers included) or [`Pacing::PacketsPerSecond`]
//! hold each batch back until the rate allows it, measured from the first packet;
//! [`PacketOut::pace_to`] additionally lets a simulator pace on its own clock (e.g. frame
//! times). [`Pacing::Unpaced`] sends as fast as the destination takes it. With
//! [`PacketOutOptions::prerender`] the packets are generated first, kept in memory, and sent
//! at [`PacketOut::finish`] with the same pacing.
//!
//! # Destinations
//! - [`Destination::Udp`]: one datagram per packet, [`PacketOutOptions::udp_batch`] datagrams per
//!   `sendmmsg` system call (a 500 MB/s stream of 8 KiB packets is 60 000 datagrams/s; one
//!   system call each would cost a core), a 4 MiB send buffer, retries while the kernel reports
//!   a full buffer.
//! - [`Destination::Tcp`]: listens at open ([`PacketOut::local_addr`] gives the bound port);
//!   the receiver connects, accepted at the first flush or [`PacketOut::wait_for_receiver`]
//!   (waiting up to [`TCP_ACCEPT_WAIT`]); packets are written back to back in 256 KiB
//!   batches, and a client that goes away is an error. With
//!   [`PacketOutOptions::tcp_reconnect`] packets are written one at a time and a client that
//!   goes away is served again when it reconnects (within [`TCP_REACCEPT_WAIT`]).
//! - [`Destination::Archive`]: a `.sdq` raw archive (64-byte `SDQA` header, the given metadata
//!   JSON, packets exactly as a receiver would have them), written `.inprogress` and committed
//!   by [`PacketOut::finish`] through `scandaq_sinks::archive::RawArchiveWriter`; lost packets
//!   are absent from it as from the wire. End markers are written once.
//! - [`Destination::Closure`]: `f(source_id, packet)` per packet (tests, in-process use);
//!   returning false stops the emitter ([`PacketOut::stopped`]).

pub mod faults;
pub mod pacing;
mod packetizer;
pub mod transports;

use crate::config::SimError;
use faults::{Fate, FaultCounts, FaultDraw, Faults};
use packetizer::Batch;
use scandaq_decoders::transport::{FLAG_END_OF_STREAM, HEADER_LEN, payload_format};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Instant;
use transports::Sink;

pub use pacing::Pacing;
pub use transports::{
    Destination, PacketSink, TCP_ACCEPT_WAIT, TCP_REACCEPT_WAIT, TCP_WRITE_TIMEOUT,
};

/// Times the end-of-stream packet is sent over UDP (the same bytes each time).
pub const UDP_END_OF_STREAM_COPIES: usize = 3;
/// Bytes collected before a TCP or archive write.
pub const STREAM_BATCH_BYTES: usize = 256 << 10;
/// Default datagrams per `sendmmsg` call.
pub const DEFAULT_UDP_BATCH: usize = 32;
/// Largest packet a UDP datagram holds (header included).
pub const MAX_UDP_PACKET_BYTES: usize = 65_507;
/// Random stream of the fault draws (independent of a preset's physics streams).
pub const LOSS_STREAM: u64 = 0x9ac4_e700_0000_0001;

/// Emitter options.
#[derive(Clone, Debug, PartialEq)]
pub struct PacketOutOptions {
    /// Rate limit.
    pub pacing: Pacing,
    /// Fault probabilities per data packet (and the TCP disconnect).
    pub faults: Faults,
    /// Seed of the fault draws.
    pub seed: u64,
    /// Random stream of the fault draws (default [`LOSS_STREAM`]).
    pub fault_stream: u64,
    /// Datagrams per `sendmmsg` call (UDP; 1..=1024).
    pub udp_batch: usize,
    /// Generate everything first, keeping the packets in memory (the run's wire bytes), then
    /// send them with the same pacing: a benchmark's sender then costs only its system calls,
    /// as a front-end board on its own hardware would, not the physics. UDP and TCP only.
    pub prerender: bool,
    /// TCP: write packets one at a time and serve the receiver again when it reconnects (a
    /// front-end board's behaviour); needed for `faults.disconnect_after`.
    pub tcp_reconnect: bool,
}

impl Default for PacketOutOptions {
    fn default() -> Self {
        Self {
            pacing: Pacing::Unpaced,
            faults: Faults::default(),
            seed: 1,
            fault_stream: LOSS_STREAM,
            udp_batch: DEFAULT_UDP_BATCH,
            prerender: false,
            tcp_reconnect: false,
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
    /// Every fault per source, in the order of `sources` (not in the presets' summary files:
    /// `sources` carries the loss they report).
    #[serde(skip)]
    pub source_faults: Vec<FaultCounts>,
    /// TCP clients that went away without being told to ([`PacketOutOptions::tcp_reconnect`]):
    /// the packet in flight then is lost without being counted in `source_faults`.
    #[serde(skip)]
    pub client_disconnects: u64,
}

impl PacketOutSummary {
    /// Data packets lost by fault injection, all sources.
    pub fn lost_packets(&self) -> u64 {
        self.sources.iter().map(|s| s.lost_packets).sum()
    }
}

/// A packet held back for reordering, with its hits.
struct Held {
    bytes: Vec<u8>,
    hits: u64,
}

/// One source's sequence space.
struct Source {
    counts: SourceCounts,
    faults: FaultCounts,
    seq: u64,
    last_format: Option<u16>,
    held: Option<Held>,
    ended: bool,
}

/// The emitter. See the module documentation.
pub struct PacketOut<'a> {
    sink: Sink<'a>,
    options: PacketOutOptions,
    draw: FaultDraw,
    sources: Vec<Source>,
    /// Packets waiting to be written.
    batch: Batch,
    batch_packets: usize,
    batch_bytes: usize,
    started: Option<Instant>,
    wire_packets: u64,
    wire_bytes: u64,
    stopped: bool,
    /// With [`PacketOutOptions::prerender`]: the batches generated so far, and the pacing
    /// time the next one gets.
    prerendered: Option<pacing::Prerendered>,
}

impl<'a> PacketOut<'a> {
    /// Opens the destination (binds the UDP socket, starts listening on TCP, creates the
    /// archive's `.inprogress` file).
    pub fn open(destination: Destination<'a>, options: PacketOutOptions) -> Result<Self, SimError> {
        validate(&options)?;
        let (sink, limits) = Sink::open(destination, &options)?;
        if options.prerender && !sink.is_network() {
            return Err(SimError::config(
                "prerender",
                true,
                "prerendering paces a network stream: use it with --udp or --tcp",
            ));
        }
        if options.faults.disconnect_after.is_some() && !matches!(sink, Sink::Tcp(_)) {
            return Err(SimError::config(
                "disconnect_after",
                options.faults.disconnect_after.unwrap_or(0),
                "a disconnect needs the TCP transport (UDP has no connection)",
            ));
        }
        Ok(Self {
            sink,
            draw: FaultDraw::new(options.seed, options.fault_stream, options.faults.clone()),
            prerendered: options.prerender.then(pacing::Prerendered::default),
            options,
            sources: Vec::new(),
            batch: Batch::with_capacity(STREAM_BATCH_BYTES + 65_536),
            batch_packets: limits.packets,
            batch_bytes: limits.bytes,
            started: None,
            wire_packets: 0,
            wire_bytes: 0,
            stopped: false,
        })
    }

    /// The TCP listening address (useful with port 0); `None` for other destinations.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.sink.local_addr()
    }

    /// TCP: waits (up to [`TCP_ACCEPT_WAIT`]) for the receiver to connect now, before the
    /// first packet is made; other destinations: nothing.
    pub fn wait_for_receiver(&mut self) -> Result<(), SimError> {
        self.sink.wait_for_receiver()
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

    /// Registers `source_id` now (sources end, at [`PacketOut::finish`], in the order they
    /// appeared), with the payload format its end-of-stream marker has if it sends no data.
    pub fn declare_source(&mut self, source_id: u32, format: u16) {
        let i = self.source_index(source_id);
        self.sources[i].last_format.get_or_insert(format);
    }

    fn source_index(&mut self, source_id: u32) -> usize {
        // Few sources: a linear search beats a map.
        match self
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
                    faults: FaultCounts::default(),
                    seq: 0,
                    last_format: None,
                    held: None,
                    ended: false,
                });
                self.sources.len() - 1
            }
        }
    }

    fn check_size(&self, payload_len: usize) -> Result<(), SimError> {
        let limit = match self.sink.is_udp() {
            true => MAX_UDP_PACKET_BYTES,
            false => HEADER_LEN + u32::MAX as usize,
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
        if self.batch.spans.len() >= self.batch_packets
            || self.batch.bytes.len() >= self.batch_bytes
        {
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
        self.send_counted(source_id, format, parts, 0)
    }

    /// Sends one data packet (see [`PacketOut::send_parts`]).
    pub fn send(&mut self, source_id: u32, format: u16, payload: &[u8]) -> Result<Sent, SimError> {
        self.send_parts(source_id, format, &[payload])
    }

    /// [`PacketOut::send_parts`] for a packet carrying `hits` of the caller's units (the PET
    /// bench's hits), which the fault counts add up.
    pub fn send_counted(
        &mut self,
        source_id: u32,
        format: u16,
        parts: &[&[u8]],
        hits: u64,
    ) -> Result<Sent, SimError> {
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        self.check_size(payload_len)?;
        self.started.get_or_insert_with(Instant::now);
        let i = self.source_index(source_id);
        let src = &mut self.sources[i];
        let seq = src.seq;
        let fate = self.draw.draw(seq == 0, payload_len, src.held.is_none());
        src.seq += 1;
        src.last_format = Some(format);
        let c = &mut src.counts;
        c.packets += 1;
        c.data_packets += 1;
        c.payload_bytes += payload_len as u64;
        if fate == Fate::Lost {
            c.lost_packets += 1;
            c.lost_payload_bytes += payload_len as u64;
            src.faults.lost_packets += 1;
            src.faults.lost_hits += hits;
            // Not sent: a held packet waits for the next packet that goes out.
            return Ok(Sent { seq, lost: true });
        }
        if !self.stopped {
            self.push_data(i, (format, seq, parts, hits), fate);
            self.after_push()?;
        }
        Ok(Sent { seq, lost: false })
    }

    /// Puts a data packet that is not lost into the batch, its fate applied.
    fn push_data(&mut self, i: usize, packet: (u16, u64, &[&[u8]], u64), fate: Fate) {
        let (format, seq, parts, hits) = packet;
        let src = &mut self.sources[i];
        let source_id = src.counts.source_id;
        let k = self.batch.push_packet(source_id, format, seq, 0, parts);
        self.batch.spans[k].hits = hits;
        match fate {
            Fate::Corrupted { at } => {
                src.faults.corrupted_packets += 1;
                src.faults.corrupted_hits += hits;
                let span = self.batch.spans[k];
                self.batch.bytes[span.start + HEADER_LEN + at] ^= 0x5a;
                // The receiver rejects it: a held packet waits for an intact one.
                return;
            }
            Fate::Reordered => {
                src.faults.reordered_packets += 1;
                let bytes = self.batch.take_last().unwrap_or_default();
                src.held = Some(Held { bytes, hits });
                return;
            }
            Fate::Duplicated => {
                src.faults.duplicated_packets += 1;
                self.batch.duplicate_last();
            }
            Fate::Intact => self.batch.spans[k].cuttable = src.held.is_none() && seq != 0,
            Fate::Lost => return,
        }
        if let Some(late) = src.held.take() {
            self.batch.push_bytes(source_id, &late.bytes, late.hits);
        }
    }

    /// Sends a held packet of source `i` in order: nothing intact followed it, so it was not
    /// reordered.
    fn release_held(&mut self, i: usize) {
        let src = &mut self.sources[i];
        if let Some(late) = src.held.take() {
            src.faults.reordered_packets -= 1;
            if !self.stopped {
                self.batch
                    .push_bytes(src.counts.source_id, &late.bytes, late.hits);
            }
        }
    }

    /// Sends a control packet (format 0xFFFF) in `source_id`'s sequence space; never faulted.
    /// Returns its seq.
    pub fn send_control(&mut self, source_id: u32, payload: &[u8]) -> Result<u64, SimError> {
        self.check_size(payload.len())?;
        self.started.get_or_insert_with(Instant::now);
        let i = self.source_index(source_id);
        let src = &mut self.sources[i];
        let seq = src.seq;
        src.seq += 1;
        src.counts.packets += 1;
        src.counts.control_packets += 1;
        if !self.stopped {
            self.batch
                .push_packet(source_id, payload_format::CONTROL, seq, 0, &[payload]);
            self.after_push()?;
        }
        Ok(seq)
    }

    /// Restarts `source_id` as a front end does after a reset: a held packet goes out first,
    /// then `seq` starts from 0 again (the next packet carries `FLAG_START_OF_STREAM`).
    pub fn restart_source(&mut self, source_id: u32) -> Result<(), SimError> {
        let i = self.source_index(source_id);
        self.release_held(i);
        let src = &mut self.sources[i];
        src.seq = 0;
        src.faults.restarts += 1;
        self.after_push()
    }

    /// Ends `source_id`: a held packet goes out in order, then the end-of-stream marker
    /// (never faulted; over UDP [`UDP_END_OF_STREAM_COPIES`] copies).
    pub fn end_source(&mut self, source_id: u32) -> Result<(), SimError> {
        let i = self.source_index(source_id);
        self.release_held(i);
        let copies = match self.sink.is_udp() {
            true => UDP_END_OF_STREAM_COPIES,
            false => 1,
        };
        let s = &mut self.sources[i];
        let (seq, format) = (s.seq, s.last_format.unwrap_or(payload_format::CONTROL));
        s.seq += 1;
        s.counts.packets += 1;
        s.ended = true;
        if !self.stopped {
            let k = self
                .batch
                .push_packet(source_id, format, seq, FLAG_END_OF_STREAM, &[]);
            self.batch.spans[k].copies = copies;
        }
        self.after_push()
    }

    /// Writes every batched packet to the destination (prerendering: keeps them for later).
    pub fn flush(&mut self) -> Result<(), SimError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        if self.prerendered.is_some() {
            self.keep_prerendered();
            return Ok(());
        }
        self.write_batch()
    }

    /// Writes the current batch to the destination, paced.
    fn write_batch(&mut self) -> Result<(), SimError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.pace_batch();
        let result = self.sink.write(&self.batch);
        let (n, bytes) = (self.batch.wire_packets(), self.batch.wire_bytes());
        self.batch.clear();
        self.stopped |= result?.stopped;
        self.wire_packets += n;
        self.wire_bytes += bytes;
        Ok(())
    }

    /// Sends the end-of-stream markers of every source not yet ended, flushes, closes the
    /// destination (TCP: lets the client read everything; archive: commits the file) and
    /// returns the totals.
    pub fn finish(mut self) -> Result<PacketOutSummary, SimError> {
        self.flush()?;
        for i in 0..self.sources.len() {
            if !self.sources[i].ended {
                let id = self.sources[i].counts.source_id;
                self.end_source(id)?;
            }
        }
        self.close(true)
    }

    /// Flushes and closes the destination without end-of-stream markers (a run cut short:
    /// the receiver sees the stream stop), and returns the totals.
    pub fn finish_without_end_markers(self) -> Result<PacketOutSummary, SimError> {
        self.close(false)
    }

    fn close(mut self, graceful: bool) -> Result<PacketOutSummary, SimError> {
        self.flush()?;
        self.send_prerendered()?;
        let wall_seconds = self.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let closed = self.sink.close(graceful)?;
        let mut source_faults: Vec<FaultCounts> =
            self.sources.iter().map(|s| s.faults.clone()).collect();
        if let Some((source_id, hits)) = closed.cut
            && let Some(i) = self
                .sources
                .iter()
                .position(|s| s.counts.source_id == source_id)
        {
            let f = &mut source_faults[i];
            f.disconnects += 1;
            f.disconnect_lost_packets += 1;
            f.disconnect_lost_hits += hits;
        }
        Ok(PacketOutSummary {
            sources: self.sources.into_iter().map(|s| s.counts).collect(),
            wire_packets: self.wire_packets,
            wire_bytes: self.wire_bytes,
            wall_seconds,
            archive: closed.archive,
            stopped: self.stopped,
            source_faults,
            client_disconnects: closed.client_disconnects,
        })
    }

    /// The fault probabilities in force.
    pub fn faults(&self) -> &Faults {
        self.draw.faults()
    }
}

/// Checks the options; errors name the field and the accepted range.
fn validate(options: &PacketOutOptions) -> Result<(), SimError> {
    options.faults.validate()?;
    if !(1..=1024).contains(&options.udp_batch) {
        return Err(SimError::config(
            "udp_batch",
            options.udp_batch,
            "datagrams per sendmmsg call must be in [1, 1024]",
        ));
    }
    match options.pacing {
        Pacing::BytesPerSecond(r) | Pacing::PacketsPerSecond(r) if r.is_nan() || r <= 0.0 => {
            Err(SimError::config(
                "pacing",
                r,
                "a paced rate must be positive (use Pacing::Unpaced for no limit)",
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{setsockopt, sockopt};
    use scandaq_decoders::transport::decode_packet;
    use std::io::Read;
    use std::net::{TcpStream, UdpSocket};
    use std::time::Duration;

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
            faults: Faults::loss(0.1),
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
            faults: Faults::loss(0.1),
            seed: 3,
            ..Default::default()
        });
        assert_eq!(got, got2);
    }

    #[test]
    fn every_fault_restart_and_end_marker_is_counted_as_a_receiver_sees_it() {
        let mut got: Received = Vec::new();
        let summary = {
            let mut out = PacketOut::open(
                Destination::Closure(Box::new(|s, p: &[u8]| {
                    got.push((s, p.to_vec()));
                    true
                })),
                PacketOutOptions {
                    faults: Faults {
                        lose_packets: 0.1,
                        duplicate: 0.1,
                        reorder: 0.1,
                        corrupt: 0.1,
                        ..Faults::default()
                    },
                    seed: 5,
                    ..Default::default()
                },
            )
            .unwrap();
            out.declare_source(9, 1);
            for i in 0..300u32 {
                out.send_counted(9, 1, &[&i.to_le_bytes()], 2).unwrap();
                if i == 150 {
                    out.restart_source(9).unwrap();
                }
            }
            out.finish().unwrap()
        };
        let f = &summary.source_faults[0];
        assert!(f.lost_packets > 0 && f.corrupted_packets > 0 && f.duplicated_packets > 0);
        assert!(f.reordered_packets > 0);
        assert_eq!(f.lost_hits, 2 * f.lost_packets);
        assert_eq!(f.restarts, 1);
        let crc_failures = got
            .iter()
            .filter(|(_, p)| decode_packet(p).is_err())
            .count();
        assert_eq!(crc_failures as u64, f.corrupted_packets);
        let repeats = got.windows(2).filter(|w| w[0] == w[1]).count();
        assert_eq!(repeats as u64, f.duplicated_packets);
        // Every data packet arrives (held ones included) except the lost, plus the end marker.
        assert_eq!(
            got.len() as u64,
            300 - f.lost_packets + f.duplicated_packets + 1
        );
        let (h, payload) = decode_packet(&got[got.len() - 1].1).unwrap();
        assert!(h.flags & FLAG_END_OF_STREAM != 0 && payload.is_empty());
        assert_eq!(h.payload_format, 1);
        let starts = got
            .iter()
            .filter_map(|(_, p)| decode_packet(p).ok())
            .filter(|(h, _)| h.seq == 0)
            .count();
        assert!(starts >= 2, "a start packet before and after the restart");
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
                faults: Faults::loss(0.1),
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
