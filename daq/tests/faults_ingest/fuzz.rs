//! Fuzzing of the ingest path: arbitrary sequences of datagrams (valid board traffic with
//! gaps, repeats, reordering and restarts, mixed with headers of arbitrary sequence number,
//! source, flags, format and length, foreign senders and plain junk) fed to [`Ingest`]. Each
//! datagram must be taken in bounded time, the packets held and boards kept stay bounded, and
//! every packet is counted under exactly one outcome. A second harness checks the accounting
//! against a small reference model.
//!
//! Cases per harness: `SCANDAQ_FUZZ_CASES` (default 64, the CI run); each case is up to 400
//! datagrams. The harnesses print how many datagrams they generated (`--nocapture`).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use scandaq::acquire::ingest::{FrameChunk, Ingest, IngestOptions, MAX_BOARDS, REORDER_HOLD};
use scandaq::acquire::ring::{OverflowPolicy, RingConsumer, ring};
use scandaq_decoders::transport::{FLAG_START_OF_STREAM, encode_packet, payload_format};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

fn cases() -> u32 {
    std::env::var("SCANDAQ_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

const ME: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Longest a single datagram may take: wall time on a shared machine, so generous; a walk over
/// the numbers a stray header skips (2^62) or any spin would exceed it by far.
const PER_DATAGRAM: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
enum Op {
    /// The board's next packet.
    Next(u32),
    /// The board skips numbers (a gap).
    Skip(u32, u64),
    /// A packet `k` behind the board's next number (a late packet or a repeat).
    Back(u32, u64),
    /// The board restarts (next packet: seq 0 with the start flag).
    Restart(u32),
    /// An arbitrary header (+ payload).
    Header {
        source: u32,
        seq: u64,
        flags: u32,
        format: u16,
        payload: Vec<u8>,
        good_crc: bool,
        cut: u8,
    },
    /// A valid packet from a sender outside the allowlist.
    Foreign(u32, u64),
    /// Bytes.
    Junk(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    let board = 0u32..4;
    let seq = prop_oneof![
        0u64..2_000,
        any::<u64>(),
        Just(u64::MAX),
        (1u64 << 62)..(1u64 << 62) + 10,
        60_000u64..200_000,
    ];
    let source = prop_oneof![0u32..6, any::<u32>()];
    let format = prop_oneof![
        Just(payload_format::PETSYS_TOFPET2),
        Just(payload_format::OPM_BLOCK),
        Just(payload_format::US_RF_EVENT),
        Just(payload_format::CONTROL),
        any::<u16>(),
    ];
    prop_oneof![
        8 => board.clone().prop_map(Op::Next),
        1 => (board.clone(), prop_oneof![1u64..100, 60_000u64..70_000, any::<u64>()])
            .prop_map(|(b, n)| Op::Skip(b, n)),
        2 => (board.clone(), 0u64..80).prop_map(|(b, k)| Op::Back(b, k)),
        1 => board.clone().prop_map(Op::Restart),
        3 => (source, seq.clone(), 0u32..16, format, proptest::collection::vec(any::<u8>(), 0..48), any::<bool>(), 0u8..3)
            .prop_map(|(source, seq, flags, format, payload, good_crc, cut)| Op::Header {
                source, seq, flags, format, payload, good_crc, cut
            }),
        1 => (board, seq).prop_map(|(b, s)| Op::Foreign(b, s)),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Op::Junk),
    ]
}

/// A packet of one PETsys frame whose ID is the sequence number.
fn packet(source: u32, seq: u64, flags: u32) -> Vec<u8> {
    super::frame_packet(source, seq, flags)
}

fn datagram(op: &Op, next: &mut BTreeMap<u32, u64>) -> (IpAddr, Vec<u8>) {
    match op {
        Op::Next(b) => {
            let n = next.entry(*b).or_insert(0);
            let seq = *n;
            *n = n.saturating_add(1);
            let flags = if seq == 0 { FLAG_START_OF_STREAM } else { 0 };
            (ME, packet(*b, seq, flags))
        }
        Op::Skip(b, k) => {
            let n = next.entry(*b).or_insert(0);
            *n = n.saturating_add(*k);
            (ME, packet(*b, *n, 0))
        }
        Op::Back(b, k) => {
            let n = next.get(b).copied().unwrap_or(0);
            (ME, packet(*b, n.saturating_sub(*k + 1), 0))
        }
        Op::Restart(b) => {
            next.insert(*b, 1);
            (ME, packet(*b, 0, FLAG_START_OF_STREAM))
        }
        Op::Header {
            source,
            seq,
            flags,
            format,
            payload,
            good_crc,
            cut,
        } => {
            let mut p = Vec::new();
            encode_packet(&mut p, *format, *source, *seq, *flags, payload, *good_crc);
            if !*good_crc && *flags & 1 != 0 && !payload.is_empty() {
                p[28] ^= 1;
            }
            match cut {
                1 => p.truncate(p.len().saturating_sub(3)),
                2 => p.extend_from_slice(b"trailing"),
                _ => {}
            }
            (ME, p)
        }
        Op::Foreign(b, seq) => (STRANGER, packet(*b, *seq, 0)),
        Op::Junk(bytes) => (ME, bytes.clone()),
    }
}

fn drain(c: &mut RingConsumer<FrameChunk>, got: &mut Vec<FrameChunk>) {
    while let Some(chunk) = c.pop() {
        got.push(chunk);
    }
}

/// Input-level rejections (a packet that reached no board).
const REJECTIONS: [&str; 7] = [
    "foreign_sender_packets",
    "bad_header",
    "truncated_packet",
    "crc_error",
    "unsupported_payload_format",
    "unknown_source_packets",
    "excess_source_packets",
];

fn fuzz_case(ops: &[Op], expected_boards: bool) -> Result<u64, TestCaseError> {
    let (p, mut c) = ring::<FrameChunk>(1024, OverflowPolicy::Block);
    let options = IngestOptions {
        expected_boards: expected_boards.then(|| vec![0, 1, 2]),
        ..IngestOptions::default()
    };
    let mut ingest = Ingest::new(vec![ME], p, false).with_options(&options);
    let mut next = BTreeMap::new();
    let mut got = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let (peer, bytes) = datagram(op, &mut next);
        let t = Instant::now();
        ingest.accept(peer, &bytes).unwrap();
        if i % 16 == 15 {
            ingest.flush(false).unwrap();
        }
        let took = t.elapsed();
        prop_assert!(took < PER_DATAGRAM, "{op:?} took {took:?}");
        prop_assert!(ingest.board_count() <= MAX_BOARDS);
        prop_assert!(ingest.held_packets() <= ingest.board_count() * (REORDER_HOLD + 2));
        drain(&mut c, &mut got);
    }
    ingest.flush(true).unwrap();
    drain(&mut c, &mut got);
    prop_assert_eq!(ingest.held_packets(), 0);
    // Every packet under exactly one outcome.
    let boards = ingest.boards();
    let rejected: u64 = REJECTIONS.iter().map(|r| ingest.losses.get(r)).sum();
    let mut taken = 0;
    let mut received = 0;
    for (id, b) in &boards {
        let s = &b.seq;
        taken += s.received + s.duplicates + s.too_late + s.implausible + b.repeated_end_markers;
        received += s.received;
        // In u128: a session may span all 2^64 numbers (expected() then saturates).
        let sum =
            u128::from(s.received) + u128::from(s.missing()) + u128::from(s.missed_before_first());
        if s.expected() < u64::MAX {
            prop_assert_eq!(sum, u128::from(s.expected()), "board {}", id);
        }
        prop_assert!(!s.holds_suspect());
    }
    prop_assert_eq!(ingest.packets_in, rejected + taken);
    // Every packet taken is handed on exactly once.
    let delivered: u64 = got.iter().map(|c| c.packets).sum();
    let ring_dropped: u64 = boards.values().map(|b| b.ring_dropped_packets).sum();
    prop_assert_eq!(delivered + ring_dropped, received);
    Ok(ops.len() as u64)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn fuzz_ingest_with_arbitrary_datagrams() {
    let generated = std::sync::atomic::AtomicU64::new(0);
    let started = Instant::now();
    let strategy = (proptest::collection::vec(op(), 0..400), any::<bool>());
    runner()
        .run(&strategy, |(ops, expected)| {
            let n = fuzz_case(&ops, expected)?;
            generated.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
    eprintln!(
        "fuzz_ingest_with_arbitrary_datagrams: {} cases, {} datagrams in {:.1} s",
        cases(),
        generated.into_inner(),
        started.elapsed().as_secs_f64()
    );
}

/// Plausible traffic of up to three boards (numbers below 300, any order, repeats) against
/// a reference model: per board, the distinct numbers received, and the numbers before and
/// after the first one that never came.
#[test]
fn ingest_accounting_matches_a_reference_model() {
    let generated = std::sync::atomic::AtomicU64::new(0);
    let strategy = proptest::collection::vec((0u32..3, 0u64..300), 1..400);
    runner()
        .run(&strategy, |arrivals| {
            let (p, mut c) = ring::<FrameChunk>(1024, OverflowPolicy::Block);
            let mut ingest = Ingest::new(vec![], p, false);
            let mut got = Vec::new();
            for &(b, seq) in &arrivals {
                ingest.accept(ME, &packet(b, seq, 0)).unwrap();
                drain(&mut c, &mut got);
            }
            ingest.flush(true).unwrap();
            drain(&mut c, &mut got);
            generated.fetch_add(arrivals.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let boards = ingest.boards();
            let ids: BTreeSet<u32> = arrivals.iter().map(|a| a.0).collect();
            prop_assert_eq!(boards.len(), ids.len());
            for id in ids {
                let seqs: Vec<u64> = arrivals.iter().filter(|a| a.0 == id).map(|a| a.1).collect();
                let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
                let first = seqs[0];
                let max = *distinct.last().unwrap_or(&0);
                // A lone number is taken without counting anything missed before it.
                let lone = distinct.len() == 1;
                let missed = if lone {
                    0
                } else {
                    (0..first).filter(|n| !distinct.contains(n)).count() as u64
                };
                let gaps = (first..=max).filter(|n| !distinct.contains(n)).count() as u64;
                let s = &boards[&id].seq;
                prop_assert_eq!(s.received, distinct.len() as u64);
                prop_assert_eq!(s.duplicates, (seqs.len() - distinct.len()) as u64);
                prop_assert_eq!((s.too_late, s.implausible), (0, 0));
                prop_assert_eq!(s.missed_before_first(), missed);
                prop_assert_eq!(s.missing(), gaps);
                prop_assert_eq!(s.expected(), if lone { 1 } else { max + 1 });
                // The frames handed on are those of the distinct numbers, each once.
                let mut frames: Vec<u64> = got
                    .iter()
                    .filter(|c| c.source_id == id)
                    .flat_map(|c| {
                        c.frames
                            .chunks(24)
                            .map(|f| u64::from_le_bytes(f[..8].try_into().unwrap()) & 0xf_ffff_ffff)
                    })
                    .collect();
                frames.sort_unstable();
                prop_assert_eq!(frames, distinct.into_iter().collect::<Vec<_>>());
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "ingest_accounting_matches_a_reference_model: {} cases, {} datagrams",
        cases(),
        generated.into_inner()
    );
}
