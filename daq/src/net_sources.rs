//! Network inputs: a UDP socket (large receive buffer, the kernel's drop counter read from
//! `/proc/net/udp`) and a TCP client (resynchronises on `SDQ1` after a bad header, reconnects
//! after a disconnect). Each runs on its own thread and feeds an [`Ingest`].

use crate::ingest::Ingest;
use scandaq_decoders::transport::{HEADER_LEN, MAGIC, TransportHeader};
use std::io::Read;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Requested UDP receive buffer (the kernel caps it at `net.core.rmem_max`).
const UDP_RCVBUF: usize = 64 << 20;
/// Pending frames are handed on at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Binds a UDP socket with a large receive buffer.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(UDP_RCVBUF);
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
            if local_port == Some(port) {
                if let Some(d) = f.last().and_then(|d| d.parse::<u64>().ok()) {
                    *total.get_or_insert(0) += d;
                }
            }
        }
    }
    total
}

/// Receives datagrams until `stop`; one datagram = one packet.
pub fn run_udp(socket: UdpSocket, mut ingest: Ingest, stop: Arc<AtomicBool>) -> Ingest {
    let mut buf = vec![0u8; 65536];
    let mut last_flush = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                if ingest.accept(peer.ip(), &buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => ingest.losses.add("udp_receive_errors", 1),
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            if ingest.flush(false).is_err() {
                break;
            }
            last_flush = Instant::now();
        }
    }
    // Drain what the kernel still holds.
    let _ = socket.set_nonblocking(true);
    while let Ok((n, peer)) = socket.recv_from(&mut buf) {
        if ingest.accept(peer.ip(), &buf[..n]).is_err() {
            break;
        }
    }
    let _ = ingest.flush(true);
    ingest
}

/// Connects to `addr` and reads packets until `stop`, reconnecting after a disconnect.
pub fn run_tcp(addr: SocketAddr, mut ingest: Ingest, stop: Arc<AtomicBool>) -> Ingest {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut read_buf = vec![0u8; 256 << 10];
    let mut last_flush = Instant::now();
    let mut connected_once = false;
    let mut resyncing;
    'connect: while !stop.load(Ordering::Relaxed) {
        let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(s) => s,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if connected_once {
            ingest.losses.add("tcp_reconnects", 1);
        }
        connected_once = true;
        resyncing = false;
        if !ingest.allowed(addr.ip()) {
            ingest.losses.add("foreign_sender_connections", 1);
            return ingest;
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
                        ingest.losses.add("tcp_truncated_bytes", buf.len() as u64);
                        buf.clear();
                    }
                    ingest.losses.add("tcp_disconnects", 1);
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
                    ingest.losses.add("tcp_disconnects", 1);
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
    let _ = ingest.flush(true);
    ingest
}

/// Takes every whole packet off the front of `buf`; skips to the next `SDQ1` after a bad header.
fn parse_stream(
    resyncing: &mut bool,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
    ingest: &mut Ingest,
) -> Result<(), crate::ring::RingClosed> {
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
                    ingest.losses.add("bad_header", 1);
                    *resyncing = true;
                }
                let next = buf[off + 1..]
                    .windows(4)
                    .position(|w| w == MAGIC)
                    .map(|p| off + 1 + p);
                let to = next.unwrap_or(buf.len() - 3);
                ingest.losses.add("resync_skipped_bytes", (to - off) as u64);
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
    use crate::ingest::FrameChunk;
    use crate::ring::{OverflowPolicy, ring};
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
        let h = std::thread::spawn(move || run_tcp(addr, Ingest::new(vec![], p, false), s2));
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
        assert_eq!(ingest.losses.get("bad_header"), 1);
        assert_eq!(ingest.losses.get("resync_skipped_bytes"), 40);
        assert_eq!(ingest.losses.get("tcp_disconnects"), 1);
        assert_eq!(ingest.losses.get("tcp_reconnects"), 1);
        assert!(ingest.losses.get("tcp_truncated_bytes") > 0);
        let mut packets = 0;
        while let Some(chunk) = c.pop() {
            packets += chunk.packets;
        }
        assert_eq!(packets, 3);
    }
}
