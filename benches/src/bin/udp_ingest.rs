//! UDP ingest harness: a paced sender thread pushes 8 KiB transport datagrams over loopback
//! into scandaq's UDP input (recvmmsg batches -> header/CRC/sequence checks -> ring), and a
//! consumer thread drains the ring. Reports, per rate, what was sent, what arrived, and every
//! loss by reason (sequence gaps, kernel drops, ring overflow). Compare with
//! `iperf3 -u -l 8192 -b RATE` (benches/scripts/udp_ingest_vs_iperf3.sh runs both).
//!
//! Usage: `udp_ingest [--seconds S] [--drop] RATE_GBIT [RATE_GBIT ...]`
//! (`--drop`: the live ring policy, overflow dropped and counted; default block.)

use scandaq::acquire::ingest::{FrameChunk, Ingest};
use scandaq::acquire::net::{bind_udp, run_udp};
use scandaq::acquire::ring::{OverflowPolicy, ring};
use scandaq_decoders::transport::{HEADER_LEN, encode_packet, payload_format};
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Bytes per datagram on the wire (UDP payload), as iperf3's `-l 8192`.
const DATAGRAM: usize = 8192;
/// CRC on the payload, as a front end would send it.
const WITH_CRC: bool = true;

struct Outcome {
    sent: u64,
    received: u64,
    missing: u64,
    kernel_drops: u64,
    ring_dropped: u64,
    seconds: f64,
}

fn run(rate_gbit: f64, seconds: f64, policy: OverflowPolicy) -> Outcome {
    let socket = bind_udp("127.0.0.1:0".parse().expect("address")).expect("bind");
    let target = socket.local_addr().expect("local address");
    let (producer, mut consumer) = ring::<FrameChunk>(256, policy);
    let ring_stats = producer.stats();
    let ingest = Ingest::new(vec![], producer, false);
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        std::thread::spawn(move || run_udp(socket, ingest, stop))
    };
    let consumer_done = Arc::new(AtomicBool::new(false));
    let drainer = {
        let done = consumer_done.clone();
        std::thread::spawn(move || {
            let mut bytes = 0u64;
            loop {
                match consumer.pop() {
                    Some(chunk) => bytes += chunk.frames.len() as u64,
                    None if done.load(Ordering::Relaxed) && consumer.is_finished() => break,
                    None => std::thread::sleep(Duration::from_micros(200)),
                }
            }
            bytes
        })
    };

    // Pre-built packets (distinct sequence numbers are written per send).
    let payload = vec![0x5au8; DATAGRAM - HEADER_LEN - 4];
    let sender = UdpSocket::bind("127.0.0.1:0").expect("sender socket");
    let _ = socket2::SockRef::from(&sender).set_send_buffer_size(16 << 20);
    let per_second = rate_gbit * 1e9 / 8.0 / DATAGRAM as f64;
    let interval = Duration::from_secs_f64(1.0 / per_second);
    let start = Instant::now();
    let mut next = start;
    let mut sent = 0u64;
    let mut packet = Vec::with_capacity(DATAGRAM);
    while start.elapsed().as_secs_f64() < seconds {
        let now = Instant::now();
        if now < next {
            if next - now > Duration::from_micros(200) {
                std::thread::sleep(next - now - Duration::from_micros(100));
            }
            continue;
        }
        // Catch up in bursts of at most 64 datagrams when behind.
        let mut burst = 0;
        while next <= Instant::now() && burst < 64 {
            packet.clear();
            encode_packet(
                &mut packet,
                payload_format::PETSYS_TOFPET2,
                1,
                sent,
                0,
                &payload,
                WITH_CRC,
            );
            debug_assert_eq!(packet.len(), DATAGRAM);
            if sender.send_to(&packet, target).is_ok() {
                sent += 1;
            }
            next += interval;
            burst += 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let ingest = receiver.join().expect("receiver thread");
    consumer_done.store(true, Ordering::Relaxed);
    let boards = ingest.boards();
    let board = boards.get(&1).cloned().unwrap_or_default();
    let received = board.seq.received;
    let out = Outcome {
        sent,
        received,
        // Includes datagrams lost after the last one received, which no gap shows.
        missing: sent - received,
        kernel_drops: ingest.kernel_drops,
        ring_dropped: ring_stats.dropped_packets.load(Ordering::Relaxed),
        seconds,
    };
    drop(ingest);
    let _ = drainer.join();
    out
}

fn main() {
    let mut seconds = 10.0;
    let mut policy = OverflowPolicy::Block;
    let mut rates = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds N")
            }
            "--drop" => policy = OverflowPolicy::Drop,
            r => rates.push(r.parse::<f64>().expect("rate in Gbit/s")),
        }
    }
    if rates.is_empty() {
        rates = vec![1.0, 2.0, 4.0, 6.0, 8.0];
    }
    println!(
        "scandaq UDP ingest, {DATAGRAM}-byte datagrams over loopback, {seconds} s per rate, ring policy {policy:?}"
    );
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>9}",
        "Gbit/s", "achieved", "sent", "received", "missing", "kernel", "ring", "loss %"
    );
    for rate in rates {
        let o = run(rate, seconds, policy);
        let achieved = o.sent as f64 * DATAGRAM as f64 * 8.0 / o.seconds / 1e9;
        println!(
            "{:>8.2} {:>10.2} {:>10} {:>10} {:>10} {:>8} {:>8} {:>9.4}",
            rate,
            achieved,
            o.sent,
            o.received,
            o.missing,
            o.kernel_drops,
            o.ring_dropped,
            100.0 * o.missing as f64 / o.sent.max(1) as f64
        );
    }
}
