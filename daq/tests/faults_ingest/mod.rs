//! Transport and ingest faults through the real `scandaq` binary fed by fpga-sim's packet
//! generator (issue 13, items 1, 2 and the ingest side of 6): stray headers with implausible
//! sequence numbers, stops while a suspect is held, board restarts, senders started before the
//! run, allowlist and expected-board rejections, a TCP input that never connects, and a raw
//! archive with a flipped sequence bit. Then the ingest fuzzer and its reference model.

use super::{col_u16, no_panic, read_parquet, sim_dir};
use crate::free_port_udp;
use scandaq_core::hit_flags;
use scandaq_decoders::petsys::encode_frame;
use scandaq_decoders::transport::{
    FLAG_END_OF_STREAM, FLAG_START_OF_STREAM, TransportHeader, encode_packet, payload_format,
};
use scandaq_fpga_sim::BenchConfig;
use scandaq_fpga_sim::stream::{
    Faults, StreamConfig, StreamSummary, Transport, generate_packets, stream,
};
use scandaq_sinks::Manifest;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod fuzz;

/// A `scandaq run` child whose stderr lines are collected as they come.
struct Run {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    out: PathBuf,
    spawned: Instant,
}

/// A `scandaq run` on a free UDP port with `extra` arguments, in a fresh temporary output
/// directory, once it is listening. The directory lives as long as the returned guard.
fn udp_run(extra: &[&str]) -> (tempfile::TempDir, std::net::SocketAddr, Run) {
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_port_udp();
    let port = addr.to_string();
    let mut args = vec!["--udp", port.as_str()];
    args.extend_from_slice(extra);
    let run = spawn_run(tmp.path(), &args);
    run.wait_ready();
    (tmp, addr, run)
}

fn spawn_run(out: &Path, args: &[&str]) -> Run {
    let calib = sim_dir().join("calib");
    let mut child = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .arg("run")
        .args(args)
        .args([
            "--calib",
            calib.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let sink = lines.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push((Instant::now(), line));
        }
    });
    Run {
        child,
        lines,
        out: out.to_path_buf(),
        spawned: Instant::now(),
    }
}

impl Run {
    /// When a stderr line containing `what` arrived (waiting up to `timeout` for it).
    fn wait_line(&self, what: &str, timeout: Duration) -> Option<Instant> {
        let until = Instant::now() + timeout;
        loop {
            if let Some((t, _)) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|(_, l)| l.contains(what))
            {
                return Some(*t);
            }
            if Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The run is acquiring: its first stats line is out (inputs started).
    fn wait_ready(&self) {
        assert!(
            self.wait_line("running:", Duration::from_secs(30))
                .is_some(),
            "the run never said it was running: {}",
            self.stderr()
        );
    }

    fn stderr(&self) -> String {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits up to `timeout` for the exit; a run still going then is killed (None).
    fn wait_exit(&mut self, timeout: Duration) -> Option<(ExitStatus, Instant)> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some((status, Instant::now()));
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn manifest(&self) -> Manifest {
        Manifest::read(&self.out.join("run-000001")).unwrap()
    }

    /// Waits until the run's input has taken in `n` packets (read over its control socket).
    fn wait_packets(&self, n: u64) {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let got = scandaq::observe::control::find_socket(None, std::slice::from_ref(&self.out))
                .and_then(|s| scandaq::observe::control::status(&s))
                .map_or(0, |s| s.inputs.iter().map(|i| i.packets_in).sum::<u64>());
            if got >= n {
                return;
            }
            assert!(
                Instant::now() < until,
                "the run took in {got} of {n} packets"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // A failed test leaves no run behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn count(m: &Manifest, key: &str) -> u64 {
    m.counts.get(key).copied().unwrap_or(0)
}

/// A bench stream of `boards` boards to `target`.
fn bench(target: SocketAddr, boards: u32, seed: u64, duration_s: f64, rate: f64) -> StreamConfig {
    StreamConfig {
        boards,
        ..StreamConfig::new(
            BenchConfig {
                seed,
                duration_s,
                hit_rate_hz: rate,
                ..BenchConfig::default()
            },
            Transport::Udp { target },
        )
    }
}

/// Exact per-board accounting needs every datagram a test sent to reach the run: one the kernel
/// drops (a starved receiver on a loaded machine) is a gap nobody injected. `attempt(rate)` runs
/// the whole scenario at one rate (in `unit`) and returns the run's `udp_kernel_drops` with what
/// the checks need. An attempt with drops is discarded, not checked at all, and the scenario is
/// run again at the next, lower, rate; if every attempt lost datagrams the test fails, naming
/// each attempt's rate and drops. The kept attempt (no drops) is returned for every check.
fn without_kernel_drops<T>(
    what: &str,
    unit: &str,
    rates: &[f64],
    mut attempt: impl FnMut(f64) -> (u64, T),
) -> T {
    let mut dropped = Vec::new();
    for &rate in rates {
        let (drops, kept) = attempt(rate);
        if drops == 0 {
            return kept;
        }
        eprintln!(
            "note: {what}: at {rate} {unit} the kernel dropped {drops} datagrams; repeating slower"
        );
        dropped.push(format!("{rate} {unit}: {drops} dropped"));
    }
    panic!(
        "{what}: the kernel dropped datagrams in every attempt ({}): the receiver never kept up, \
         so the exact counts cannot be checked",
        dropped.join("; ")
    );
}

/// A 32-byte header alone, as a stray datagram would carry it.
fn stray(source: u32, seq: u64) -> Vec<u8> {
    let mut p = Vec::new();
    encode_packet(
        &mut p,
        payload_format::PETSYS_TOFPET2,
        source,
        seq,
        0,
        &[],
        false,
    );
    p
}

/// A packet of one PETsys frame with one hit.
fn frame_packet(source: u32, seq: u64, flags: u32) -> Vec<u8> {
    let mut payload = Vec::new();
    encode_frame(&mut payload, seq, false, &[seq]);
    let mut p = Vec::new();
    encode_packet(
        &mut p,
        payload_format::PETSYS_TOFPET2,
        source,
        seq,
        flags,
        &payload,
        true,
    );
    p
}

fn is_end_marker(packet: &[u8]) -> bool {
    TransportHeader::parse(packet).is_ok_and(|h| h.flags & FLAG_END_OF_STREAM != 0)
}

/// Sends fpga-sim's packets of `config` (end markers held back, so the run goes on) to
/// `target`, and `extra` from another socket after the `after`-th packet.
fn send_with_stray(
    config: &StreamConfig,
    target: SocketAddr,
    after: u64,
    extra: &[u8],
) -> StreamSummary {
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut n = 0;
    let sent = generate_packets(config, |_, bytes| {
        if is_end_marker(bytes) {
            return true;
        }
        tx.send_to(bytes, target).unwrap();
        n += 1;
        if n == after {
            other.send_to(extra, target).unwrap();
        }
        true
    })
    .unwrap();
    assert!(n >= after, "only {n} packets: the stray was never sent");
    sent
}

#[test]
fn a_stray_header_with_an_implausible_sequence_number_costs_one_packet_and_no_time() {
    for stray_seq in [1u64 << 62, 1_000_000_000_000, 100_000_000] {
        // 60 000 hits at 200 k hits/s, else 15 000 at 50 k/s, else 6 000 at 20 k/s: 0.3 s of
        // sending inside the 4 s run.
        let (run, _tmp, sent, status, at) = without_kernel_drops(
            &format!("stray seq {stray_seq}"),
            "hits/s",
            &[2e5, 5e4, 2e4],
            |rate| {
                let (tmp, addr, mut run) = udp_run(&["--duration", "4s"]);
                let config = bench(addr, 1, 31, 0.3, rate);
                let sent = send_with_stray(&config, addr, 20, &stray(0, stray_seq));
                let exit = run.wait_exit(Duration::from_secs(15));
                let stderr = run.stderr();
                let (status, at) =
                    exit.unwrap_or_else(|| panic!("seq {stray_seq}: the run hung: {stderr}"));
                no_panic(&stderr);
                let drops = run.manifest().losses.get("udp_kernel_drops");
                (drops, (run, tmp, sent, status, at))
            },
        );
        let stderr = run.stderr();
        assert!(status.success(), "seq {stray_seq}: {stderr}");
        let took = at - run.spawned;
        assert!(
            took < Duration::from_secs_f64(4.0 + 2.0),
            "seq {stray_seq}: a 4 s run took {took:?}"
        );
        let m = run.manifest();
        assert_eq!(m.stop_reason.map(|r| r.name()), Some("duration limit"));
        assert_eq!(m.losses.get("implausible_sequence"), 1, "seq {stray_seq}");
        // Every packet fpga-sim sent (all but the held-back end marker) and every hit.
        assert_eq!(
            count(&m, "board.0.packets_received"),
            sent.packets_sent - 1,
            "seq {stray_seq}"
        );
        assert_eq!(count(&m, "board.0.packets_missing"), 0, "seq {stray_seq}");
        assert_eq!(
            count(&m, "board.0.hits_decoded"),
            sent.hits_sent,
            "seq {stray_seq}"
        );
        assert_eq!(m.losses.get("too_late_packets"), 0);
    }
}

#[test]
fn sigint_or_ctl_stop_while_a_suspect_is_held_ends_the_run_promptly() {
    for (stray_seq, by_ctl) in [(1u64 << 62, false), (1_000_000_000_000, true)] {
        let (tmp, addr, mut run) = udp_run(&[]);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for seq in 0..5 {
            let flags = if seq == 0 { FLAG_START_OF_STREAM } else { 0 };
            tx.send_to(&frame_packet(0, seq, flags), addr).unwrap();
        }
        tx.send_to(&stray(0, stray_seq), addr).unwrap();
        run.wait_packets(6);
        let asked = Instant::now();
        if by_ctl {
            let (code, _, err) =
                super::scandaq(&["ctl", "stop", "--out", tmp.path().to_str().unwrap()]);
            assert_eq!(code, 0, "{err}");
        } else {
            let killed = Command::new("kill")
                .args(["-INT", &run.child.id().to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
        }
        let exit = run.wait_exit(Duration::from_secs(10));
        let stderr = run.stderr();
        let (status, at) = exit.unwrap_or_else(|| panic!("the stop was ignored: {stderr}"));
        no_panic(&stderr);
        assert!(status.success(), "{stderr}");
        assert!(
            at - asked < Duration::from_millis(1500),
            "stop took {:?}",
            at - asked
        );
        let m = run.manifest();
        assert_eq!(m.stop_reason.map(|r| r.name()), Some("stop requested"));
        assert_eq!(m.losses.get("implausible_sequence"), 1);
        assert_eq!(count(&m, "board.0.packets_received"), 5);
        assert_eq!(count(&m, "board.0.hits_decoded"), 5);
    }
}

#[test]
fn a_board_that_restarts_mid_run_has_both_sessions_written() {
    // 100 000 hits at 200 k hits/s, else 25 000 at 50 k/s, else 7 500 at 15 k/s; both boards
    // restart at 0.25 s of detector time.
    let (run, _tmp, sent, status) =
        without_kernel_drops("board restart", "hits/s", &[2e5, 5e4, 1.5e4], |rate| {
            let (tmp, addr, mut run) = udp_run(&["--raw-columns"]);
            let config = StreamConfig {
                faults: Faults {
                    restart_at_s: Some(0.25),
                    ..Faults::default()
                },
                ..bench(addr, 2, 32, 0.5, rate)
            };
            let sent = stream(config).unwrap();
            let exit = run.wait_exit(Duration::from_secs(30));
            let stderr = run.stderr();
            let (status, _) = exit.unwrap_or_else(|| panic!("the run did not end: {stderr}"));
            no_panic(&stderr);
            let drops = run.manifest().losses.get("udp_kernel_drops");
            (drops, (run, tmp, sent, status))
        });
    assert_eq!(sent.faults.restarts, 2);
    let stderr = run.stderr();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("board 0 restarted"), "{stderr}");
    let m = run.manifest();
    assert_eq!(m.stop_reason.map(|r| r.name()), Some("end of stream"));
    assert_eq!(count(&m, "board_restarts"), 2);
    for b in &sent.boards {
        let id = b.source_id;
        assert_eq!(count(&m, &format!("board.{id}.restarts")), 1);
        assert_eq!(count(&m, &format!("board.{id}.restart.0.first_seq")), 0);
        assert_eq!(count(&m, &format!("board.{id}.restart.0.session")), 1);
        assert!(count(&m, &format!("board.{id}.restart.0.previous_highest_seq")) > 0);
        assert_eq!(count(&m, &format!("board.{id}.duplicates")), 0);
        assert_eq!(count(&m, &format!("board.{id}.packets_missing")), 0);
        // Both sessions decoded: every hit fpga-sim sent.
        assert_eq!(
            count(&m, &format!("board.{id}.hits_decoded")),
            b.hits_sent,
            "board {id}"
        );
    }
    // Rows from both sessions; the second session's are flagged, none is late.
    assert_eq!(m.losses.get("late_hit"), 0);
    let rows = m.counts["singles_written"];
    let mut flags = Vec::new();
    for f in m.files.iter().filter(|f| f.path.starts_with("singles-")) {
        let (b, _) = read_parquet(&run.out.join("run-000001").join(&f.path));
        flags.extend(col_u16(&b, "flags"));
    }
    assert_eq!(flags.len() as u64, rows);
    let rebased = flags
        .iter()
        .filter(|&&f| f & hit_flags::CLOCK_REBASED != 0)
        .count() as u64;
    assert!(
        rebased > rows / 4 && rebased < rows * 3 / 4,
        "{rebased} of {rows}"
    );
}

#[test]
fn packets_a_sender_sent_before_the_run_started_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_port_udp();
    let config = bench(addr, 2, 33, 4.0, 2e4);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let sender = std::thread::spawn(move || {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut n = 0;
        generate_packets(&config, |_, bytes| {
            // Nobody listens yet: the first datagrams are lost.
            let _ = tx.send_to(bytes, addr);
            n += 1;
            if n == 20 {
                let _ = started_tx.send(());
            }
            true
        })
        .unwrap()
    });
    started_rx.recv().unwrap();
    let mut run = spawn_run(tmp.path(), &["--udp", &addr.to_string()]);
    let sent = sender.join().unwrap();
    let exit = run.wait_exit(Duration::from_secs(30));
    let stderr = run.stderr();
    let (status, _) = exit.unwrap_or_else(|| panic!("the run did not end: {stderr}"));
    no_panic(&stderr);
    assert!(status.success(), "{stderr}");
    let m = run.manifest();
    let mut missed_total = 0;
    for b in &sent.boards {
        let id = b.source_id;
        let missed = count(&m, &format!("board.{id}.missed_before_first_packet"));
        let received = count(&m, &format!("board.{id}.packets_received"));
        let missing = count(&m, &format!("board.{id}.packets_missing"));
        assert!(missed > 0, "board {id}: {m:?}");
        // Every number the sender used is received, a gap, or missed before the first.
        assert_eq!(received + missing + missed, b.packets_sent, "board {id}");
        assert_eq!(
            count(&m, &format!("board.{id}.packets_expected")),
            b.packets_sent
        );
        missed_total += missed;
    }
    assert_eq!(m.losses.get("missed_before_first_packet"), missed_total);
}

#[test]
fn an_allowlist_that_rejects_the_sender_says_so_within_a_second() {
    let (_tmp, addr, mut run) = udp_run(&["--allow", "10.1.2.3", "--duration", "3s"]);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent_at = Instant::now();
    for seq in 0..3 {
        tx.send_to(&frame_packet(0, seq, 0), addr).unwrap();
    }
    let warned = run.wait_line("--allow 127.0.0.1", Duration::from_secs(5));
    let stderr = run.stderr();
    let warned = warned.unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(
        warned - sent_at < Duration::from_secs(1),
        "{:?}",
        warned - sent_at
    );
    assert!(
        stderr.contains("rejecting packets from 127.0.0.1"),
        "{stderr}"
    );
    let (status, _) = run.wait_exit(Duration::from_secs(15)).unwrap();
    assert!(status.success());
    let m = run.manifest();
    assert_eq!(m.losses.get("foreign_sender_packets"), 3);
}

#[test]
fn unexpected_and_excess_source_ids_are_counted_not_made_boards() {
    // With a list of expected boards.
    let (_tmp, addr, mut run) = udp_run(&["--boards", "0", "--duration", "2s"]);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in 0..6 {
        tx.send_to(&frame_packet(0, seq, 0), addr).unwrap();
        if seq < 4 {
            tx.send_to(&frame_packet(7, seq, 0), addr).unwrap();
        }
    }
    let (status, _) = run.wait_exit(Duration::from_secs(15)).unwrap();
    let stderr = run.stderr();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("source id 7"), "{stderr}");
    let m = run.manifest();
    assert_eq!(m.losses.get("unknown_source_packets"), 4);
    assert_eq!(count(&m, "board.0.packets_received"), 6);
    assert!(!m.counts.keys().any(|k| k.starts_with("board.7.")));

    // Without a list: at most MAX_BOARDS boards.
    // 300 datagrams at once, else paced at 2 000/s, else at 500/s (0.6 s of the 4 s run).
    let (run, _tmp) = without_kernel_drops(
        "300 source ids",
        "datagrams/s",
        &[f64::INFINITY, 2e3, 5e2],
        |rate| {
            let (tmp, addr, mut run) = udp_run(&["--duration", "4s"]);
            let started = Instant::now();
            for source in 0..300u32 {
                // Pacing (a send schedule), not a wait for anything to happen.
                let due = Duration::from_secs_f64(f64::from(source) / rate);
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(ahead);
                }
                tx.send_to(&frame_packet(source, 0, FLAG_START_OF_STREAM), addr)
                    .unwrap();
            }
            let (status, _) = run.wait_exit(Duration::from_secs(15)).unwrap();
            assert!(status.success(), "{}", run.stderr());
            let drops = run.manifest().losses.get("udp_kernel_drops");
            (drops, (run, tmp))
        },
    );
    let m = run.manifest();
    let cap = scandaq::acquire::ingest::MAX_BOARDS as u64;
    assert_eq!(m.losses.get("excess_source_packets"), 300 - cap);
    // Every datagram is a board's packet or an excess one.
    let received: u64 = m
        .counts
        .iter()
        .filter(|(k, _)| k.starts_with("board.") && k.ends_with(".packets_received"))
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(received, cap);
    let boards = m
        .counts
        .keys()
        .filter(|k| k.starts_with("board.") && k.ends_with(".packets_received"))
        .count() as u64;
    assert!(boards <= cap, "{boards} boards");
}

#[test]
fn tcp_to_an_address_where_nothing_listens_retries_then_fails_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut run = spawn_run(
        tmp.path(),
        &["--tcp", &port.to_string(), "--connect-timeout", "2s"],
    );
    let exit = run.wait_exit(Duration::from_secs(20));
    let stderr = run.stderr();
    let (status, at) = exit.unwrap_or_else(|| panic!("the run did not give up: {stderr}"));
    no_panic(&stderr);
    assert!(!status.success(), "{stderr}");
    assert!(at - run.spawned < Duration::from_secs(8), "{stderr}");
    assert!(stderr.contains("connection attempt 1 failed"), "{stderr}");
    assert!(stderr.contains("connection attempt 2 failed"), "{stderr}");
    assert!(
        stderr.contains(&format!("tcp {port}: no connection within 2 s")),
        "{stderr}"
    );
    for debug in ["Tcp(", "Some(", "Os {"] {
        assert!(!stderr.contains(debug), "Debug text: {stderr}");
    }
    let m = run.manifest();
    assert_eq!(
        (m.state.name(), m.failure.map(|f| f.name())),
        ("failed", Some("input_failed")),
        "{m:?}"
    );
}

#[test]
fn replay_of_an_archive_with_a_flipped_sequence_bit_finishes_and_counts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let config = StreamConfig {
        paced: false,
        ..bench("127.0.0.1:9".parse().unwrap(), 2, 34, 0.2, 5e5)
    };
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let sent = generate_packets(&config, |_, p| {
        packets.push(p.to_vec());
        true
    })
    .unwrap();
    // Bit 62 of one packet's sequence number (the CRC covers the payload only).
    let victim = packets.len() / 2;
    packets[victim][16 + 7] ^= 0x40;
    let (h, payload) = scandaq_decoders::transport::decode_packet(&packets[victim]).unwrap();
    assert!(h.seq >= 1 << 62);
    let mut spans = Vec::new();
    scandaq_decoders::FrameScanner::new().scan(payload, true, &mut spans);
    let victim_hits: u64 = spans.iter().map(|s| u64::from(s.n_hits)).sum();
    let mut w =
        scandaq_sinks::archive::RawArchiveWriter::create(tmp.path(), "flipped.sdq", r#"{"run":1}"#)
            .unwrap();
    for p in &packets {
        w.write_packets(p, 1).unwrap();
    }
    w.commit().unwrap();
    let out = tmp.path().join("replayed");
    let calib = sim_dir().join("calib");
    let mut child = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args([
            "replay",
            tmp.path().join("flipped.sdq").to_str().unwrap(),
            "--calib",
            calib.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the replay hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let m = Manifest::read(&out.join("run-000001")).unwrap();
    assert_eq!(m.losses.get("implausible_sequence"), 1);
    let decoded: u64 = sent
        .boards
        .iter()
        .map(|b| count(&m, &format!("board.{}.hits_decoded", b.source_id)))
        .sum();
    assert_eq!(decoded, sent.hits_sent - victim_hits);
}
