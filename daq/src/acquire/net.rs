//! Network inputs: a UDP socket (large receive buffer, the kernel's drop counter read from
//! `/proc/net/udp`) and a TCP client (resynchronises on `SDQ1` after a bad header, reconnects
//! after a disconnect). Each runs on its own thread and feeds an [`Ingest`].

use crate::acquire::ingest::Ingest;
use bytes::{Bytes, BytesMut};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use scandaq_core::LossReason;
use scandaq_decoders::transport::{HEADER_LEN, MAGIC, TransportHeader};
use std::io::{IoSliceMut, Read};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Requested UDP receive buffer (the kernel caps it at `net.core.rmem_max`).
const UDP_RCVBUF: usize = 64 << 20;
/// Pending frames are handed on at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Binds a UDP socket with a large receive buffer: `SO_RCVBUFFORCE` when the process may
/// (root or CAP_NET_ADMIN), otherwise `SO_RCVBUF`, which the kernel caps at
/// `net.core.rmem_max`. A buffer well below the request is reported on stderr with the fix.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &UDP_RCVBUF)
        .is_err()
    {
        let _ = socket.set_recv_buffer_size(UDP_RCVBUF);
    }
    // Linux reports twice the usable size.
    let granted = socket.recv_buffer_size().unwrap_or(0) / 2;
    if granted < UDP_RCVBUF / 4 {
        eprintln!(
            "warning: UDP receive buffer on {addr} is {} KiB, not the {} MiB asked for; bursts may be dropped by the kernel (counted as udp_kernel_drops). Raise the limit with `sysctl -w net.core.rmem_max={}`",
            granted >> 10,
            UDP_RCVBUF >> 20,
            UDP_RCVBUF
        );
    }
    socket.bind(&addr.into())?;
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
    Ok(socket)
}

/// Datagrams the kernel dropped on the UDP socket bound to `port` (the `drops` column of
/// `/proc/net/udp`), if it can be read.
pub fn udp_kernel_drops(port: u16) -> Option<u64> {
    let mut total = None;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port)
                && let Some(d) = f.last().and_then(|d| d.parse::<u64>().ok())
            {
                *total.get_or_insert(0) += d;
            }
        }
    }
    total
}

/// Datagrams taken per `recvmmsg` call.
pub const UDP_BATCH: usize = 64;
/// Largest datagram accepted (the transport packet limit is 64 KiB).
const UDP_MAX_DATAGRAM: usize = 65536;
/// How often the kernel's drop counter is read while running.
const KERNEL_DROPS_EVERY: Duration = Duration::from_millis(500);

/// Bytes of one batch buffer: [`UDP_BATCH`] slots of the largest datagram.
const BATCH_BYTES: usize = UDP_BATCH * UDP_MAX_DATAGRAM;

/// Batched datagram receive: one `recvmmsg` system call returns up to [`UDP_BATCH`]
/// datagrams with their senders (`MSG_WAITFORONE`: wait for the first, then take what is
/// already queued). The socket's read timeout bounds the wait. Each batch's buffer is handed
/// out as shared [`Bytes`] (one slice per datagram, no copy) and taken back for the next
/// batch once nothing refers to it (ingest keeps no reference past its `accept`).
pub struct BatchReceiver {
    /// The last batch's buffer, shared with the datagrams handed out.
    batch: Bytes,
    headers: MultiHeaders<SockaddrStorage>,
    /// `(length, sender)` of each datagram of the last batch, in arrival order.
    received: Vec<(usize, Option<IpAddr>)>,
}

impl Default for BatchReceiver {
    fn default() -> Self {
        Self {
            batch: BytesMut::zeroed(BATCH_BYTES).freeze(),
            headers: MultiHeaders::preallocate(UDP_BATCH, None),
            received: Vec::with_capacity(UDP_BATCH),
        }
    }
}

impl BatchReceiver {
    /// Receives one batch; `Ok(0)` after a timeout. With `nonblocking` it never waits.
    pub fn receive(&mut self, socket: &UdpSocket, nonblocking: bool) -> std::io::Result<usize> {
        self.received.clear();
        // The previous batch's buffer, unless a datagram of it is still referenced.
        let mut buffers = match std::mem::take(&mut self.batch).try_into_mut() {
            Ok(b) if b.len() == BATCH_BYTES => b,
            _ => BytesMut::zeroed(BATCH_BYTES),
        };
        let result = Self::receive_into(
            &mut buffers,
            &mut self.headers,
            &mut self.received,
            socket,
            nonblocking,
        );
        self.batch = buffers.freeze();
        result.map(|()| self.received.len())
    }

    /// One `recvmmsg` into the slots of `buffers`; `(length, sender)` of each datagram into
    /// `received`.
    fn receive_into(
        buffers: &mut [u8],
        headers: &mut MultiHeaders<SockaddrStorage>,
        received: &mut Vec<(usize, Option<IpAddr>)>,
        socket: &UdpSocket,
        nonblocking: bool,
    ) -> std::io::Result<()> {
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
            .chunks_mut(UDP_MAX_DATAGRAM)
            .map(|b| [IoSliceMut::new(b)])
            .collect();
        let flags = if nonblocking {
            MsgFlags::MSG_DONTWAIT
        } else {
            MsgFlags::MSG_WAITFORONE
        };
        match recvmmsg(socket.as_raw_fd(), headers, slices.iter_mut(), flags, None) {
            Ok(results) => {
                for r in results {
                    let peer = r.address.and_then(|a: SockaddrStorage| {
                        a.as_sockaddr_in()
                            .map(|v4| IpAddr::V4(v4.ip()))
                            .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                    });
                    received.push((r.bytes, peer));
                }
                Ok(())
            }
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(()),
            Err(e) => Err(std::io::Error::from(e)),
        }
    }

    /// The datagrams of the last batch: `(sender, bytes)`, each a slice of the batch buffer.
    pub fn datagrams(&self) -> impl Iterator<Item = (Option<IpAddr>, Bytes)> + '_ {
        self.received.iter().enumerate().map(|(i, &(len, peer))| {
            let start = i * UDP_MAX_DATAGRAM;
            let end = (start + len.min(UDP_MAX_DATAGRAM)).min(self.batch.len());
            (peer, self.batch.slice(start.min(end)..end))
        })
    }
}

/// Receives datagrams until `stop` (one datagram = one packet), in batches of up to
/// [`UDP_BATCH`] per system call; reads the kernel's drop counter as it goes.
pub fn run_udp(socket: UdpSocket, mut ingest: Ingest, stop: Arc<AtomicBool>) -> Ingest {
    let port = socket.local_addr().ok().map(|a| a.port());
    let drops_at_start = port.and_then(udp_kernel_drops).unwrap_or(0);
    let mut receiver = BatchReceiver::default();
    let mut last_flush = Instant::now();
    let mut last_drops = Instant::now();
    let mut closed = false;
    let read_drops = |ingest: &mut Ingest| {
        if let Some(d) = port.and_then(udp_kernel_drops) {
            ingest.kernel_drops = d.saturating_sub(drops_at_start);
        }
    };
    while !stop.load(Ordering::Relaxed) && !closed {
        match receiver.receive(&socket, false) {
            Ok(_) => closed = accept_batch(&receiver, &mut ingest),
            Err(_) => ingest.losses.add(LossReason::UdpReceiveErrors, 1),
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            if last_drops.elapsed() >= KERNEL_DROPS_EVERY {
                read_drops(&mut ingest);
                last_drops = Instant::now();
            }
            if ingest.flush(false).is_err() {
                closed = true;
            }
            last_flush = Instant::now();
        }
    }
    // Drain what the kernel still holds.
    while !closed {
        match receiver.receive(&socket, true) {
            Ok(n) if n > 0 => closed = accept_batch(&receiver, &mut ingest),
            _ => break,
        }
    }
    read_drops(&mut ingest);
    let _ = ingest.flush(true);
    ingest
}

/// Accepts every datagram of the receiver's last batch; true when processing has gone away.
fn accept_batch(receiver: &BatchReceiver, ingest: &mut Ingest) -> bool {
    for (peer, datagram) in receiver.datagrams() {
        let peer = peer.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        if ingest.accept_shared(peer, &datagram).is_err() {
            return true;
        }
    }
    false
}

/// How long one TCP connection attempt may take.
const CONNECT_ATTEMPT: Duration = Duration::from_millis(500);
/// Time between TCP connection attempts.
const CONNECT_RETRY_EVERY: Duration = Duration::from_secs(1);

/// Sleeps `d` in short steps; false when `stop` was set meanwhile.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !stop.load(Ordering::Relaxed)
}

/// A TCP input that never connected.
#[derive(Debug, thiserror::Error)]
#[error(
    "tcp {addr}: no connection within {timeout_s} s ({attempts} attempts, last: {last}); check that the front end serves on that address, or give it longer with --connect-timeout"
)]
pub struct NeverConnected {
    /// The front end's address.
    pub addr: SocketAddr,
    /// The time allowed, s.
    pub timeout_s: f64,
    /// Attempts made.
    pub attempts: u64,
    /// The last attempt's error.
    pub last: String,
}

/// Connects to `addr` and reads packets until `stop`, reconnecting after a disconnect. Each
/// failed attempt is reported on stderr (one line per attempt); without a first connection
/// within `connect_timeout` (or before `stop`), the input fails with [`NeverConnected`].
pub fn run_tcp(
    addr: SocketAddr,
    mut ingest: Ingest,
    stop: Arc<AtomicBool>,
    connect_timeout: Duration,
) -> Result<Ingest, NeverConnected> {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut read_buf = vec![0u8; 256 << 10];
    let mut last_flush = Instant::now();
    let mut connected_once = false;
    let mut resyncing;
    let begun = Instant::now();
    let mut attempts = 0u64;
    let mut last_error = String::from("not tried");
    'connect: while !stop.load(Ordering::Relaxed) {
        if !connected_once && begun.elapsed() >= connect_timeout {
            break;
        }
        attempts += 1;
        let mut stream = match TcpStream::connect_timeout(&addr, CONNECT_ATTEMPT) {
            Ok(s) => s,
            Err(e) => {
                last_error = e.to_string();
                if connected_once {
                    eprintln!(
                        "scandaq: tcp {addr}: reconnect attempt {attempts} failed ({e}); retrying"
                    );
                } else {
                    let left = connect_timeout.saturating_sub(begun.elapsed());
                    eprintln!(
                        "scandaq: tcp {addr}: connection attempt {attempts} failed ({e}); retrying for {:.0} s more",
                        left.as_secs_f64().ceil()
                    );
                }
                sleep_unless_stopped(CONNECT_RETRY_EVERY.saturating_sub(CONNECT_ATTEMPT), &stop);
                continue;
            }
        };
        if connected_once {
            ingest.losses.add(LossReason::TcpReconnects, 1);
        }
        connected_once = true;
        attempts = 0;
        resyncing = false;
        if !ingest.allowed(addr.ip()) {
            ingest.losses.add(LossReason::ForeignSenderConnections, 1);
            ingest.warn_rejected_sender(addr.ip());
            let _ = ingest.flush(true);
            return Ok(ingest);
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
        let _ = stream.set_nodelay(true);
        loop {
            if stop.load(Ordering::Relaxed) {
                break 'connect;
            }
            match stream.read(&mut read_buf) {
                Ok(0) if ingest.all_ended() => {
                    // The front-end closed after its end-of-stream: a normal end.
                    break 'connect;
                }
                Ok(0) => {
                    // Disconnected: a partial packet left in the buffer is lost.
                    if !buf.is_empty() {
                        ingest
                            .losses
                            .add(LossReason::TcpTruncatedBytes, buf.len() as u64);
                        buf.clear();
                    }
                    ingest.losses.add(LossReason::TcpDisconnects, 1);
                    continue 'connect;
                }
                Ok(n) => {
                    buf.extend_from_slice(&read_buf[..n]);
                    if parse_stream(&mut resyncing, &mut buf, addr, &mut ingest).is_err() {
                        break 'connect;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) if ingest.all_ended() => break 'connect,
                Err(_) => {
                    ingest.losses.add(LossReason::TcpDisconnects, 1);
                    buf.clear();
                    continue 'connect;
                }
            }
            if last_flush.elapsed() >= FLUSH_EVERY {
                if ingest.flush(false).is_err() {
                    break 'connect;
                }
                last_flush = Instant::now();
            }
        }
    }
    if !connected_once {
        return Err(NeverConnected {
            addr,
            timeout_s: connect_timeout.as_secs_f64(),
            attempts,
            last: last_error,
        });
    }
    let _ = ingest.flush(true);
    Ok(ingest)
}

/// Takes every whole packet off the front of `buf`; skips to the next `SDQ1` after a bad header.
fn parse_stream(
    resyncing: &mut bool,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
    ingest: &mut Ingest,
) -> Result<(), crate::acquire::ring::RingClosed> {
    let mut off = 0;
    while buf.len() - off >= HEADER_LEN {
        match TransportHeader::parse(&buf[off..]) {
            Ok(h) if h.payload_len <= 1 << 26 => {
                *resyncing = false;
                let len = h.packet_len();
                if buf.len() - off < len {
                    break;
                }
                ingest.accept(peer.ip(), &buf[off..off + len])?;
                off += len;
            }
            _ => {
                // One bad stretch counts once, even when it spans several reads.
                if !*resyncing {
                    ingest.losses.add(LossReason::BadHeader, 1);
                    *resyncing = true;
                }
                let next = buf[off + 1..]
                    .windows(4)
                    .position(|w| w == MAGIC)
                    .map(|p| off + 1 + p);
                let to = next.unwrap_or(buf.len() - 3);
                ingest
                    .losses
                    .add(LossReason::ResyncSkippedBytes, (to - off) as u64);
                off = to;
            }
        }
    }
    buf.drain(..off);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acquire::ingest::FrameChunk;
    use crate::acquire::ring::{OverflowPolicy, ring};
    use scandaq_decoders::petsys::encode_frame;
    use scandaq_decoders::transport::{encode_packet, payload_format};
    use std::io::Write;

    fn packet(seq: u64) -> Vec<u8> {
        let mut payload = Vec::new();
        encode_frame(&mut payload, 1000 + seq, false, &[seq]);
        let mut p = Vec::new();
        encode_packet(
            &mut p,
            payload_format::PETSYS_TOFPET2,
            3,
            seq,
            0,
            &payload,
            true,
        );
        p
    }

    #[test]
    fn udp_input_receives_and_accounts() {
        let socket = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let (p, mut c) = ring::<FrameChunk>(64, OverflowPolicy::Block);
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let h = std::thread::spawn(move || run_udp(socket, Ingest::new(vec![], p, false), s2));
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for seq in (0..50).filter(|s| s % 10 != 7) {
            tx.send_to(&packet(seq), addr).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        let ingest = h.join().unwrap();
        let b = &ingest.boards()[&3];
        assert_eq!(
            (b.seq.received, b.seq.missing(), b.seq.expected()),
            (45, 5, 50)
        );
        let mut packets = 0;
        while let Some(chunk) = c.pop() {
            packets += chunk.packets;
        }
        assert_eq!(packets, 45);
    }

    #[test]
    fn tcp_stream_resyncs_after_garbage_and_reconnects() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (p, mut c) = ring::<FrameChunk>(64, OverflowPolicy::Block);
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let h = std::thread::spawn(move || {
            run_tcp(
                addr,
                Ingest::new(vec![], p, false),
                s2,
                Duration::from_secs(10),
            )
            .unwrap()
        });
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(&packet(0)).unwrap();
        conn.write_all(b"garbage!garbage!garbage!garbage!garbage!")
            .unwrap();
        conn.write_all(&packet(1)).unwrap();
        let half = packet(2);
        conn.write_all(&half[..half.len() / 2]).unwrap();
        drop(conn);
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(&packet(3)).unwrap();
        conn.flush().unwrap();
        std::thread::sleep(Duration::from_millis(150));
        stop.store(true, Ordering::Relaxed);
        let ingest = h.join().unwrap();
        let b = &ingest.boards()[&3];
        assert_eq!((b.seq.received, b.seq.missing()), (3, 1));
        assert_eq!(ingest.losses.get(LossReason::BadHeader), 1);
        assert_eq!(ingest.losses.get(LossReason::ResyncSkippedBytes), 40);
        assert_eq!(ingest.losses.get(LossReason::TcpDisconnects), 1);
        assert_eq!(ingest.losses.get(LossReason::TcpReconnects), 1);
        assert!(ingest.losses.get(LossReason::TcpTruncatedBytes) > 0);
        let mut packets = 0;
        while let Some(chunk) = c.pop() {
            packets += chunk.packets;
        }
        assert_eq!(packets, 3);
    }
}
