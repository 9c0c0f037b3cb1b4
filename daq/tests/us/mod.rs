//! Ultrasound RF streams end to end (docs/ultrasound.md): fpga-sim `--preset us` sends RF
//! events (with lost packets and truncated chunks), `scandaq run` / `scandaq replay` store
//! them, and the stored payloads are compared with the simulator's truth hash by hash; the
//! events the truth says are incomplete must be exactly the ones missing and counted. Bad
//! input through the binary and the processor never panics.

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt16Type, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use scandaq_fpga_sim::packet_out::Destination;
use scandaq_fpga_sim::us::{SEQUENCE_FILE, TRUTH_FILE, TruthEvent, UsConfig, read_truth, run};
use scandaq_sinks::Manifest;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A small, fast ultrasound run: 64 channels x 1024 samples (128 KiB events, 17 chunks each).
fn small_config(seed: u64, out: &Path) -> UsConfig {
    UsConfig {
        seed,
        frames: 40,
        frame_rate_hz: 200.0,
        n_elements: 64,
        n_samples: 1024,
        out_dir: Some(out.to_path_buf()),
        ..UsConfig::default()
    }
}

fn read_batches(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// Column `name` of `b` as a primitive array (the test fails if it is missing).
fn col<'a, T: arrow_array::ArrowPrimitiveType>(
    b: &'a RecordBatch,
    name: &str,
) -> &'a arrow_array::PrimitiveArray<T> {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_primitive::<T>()
}

/// A stored event: (frame_no, tx_index) -> (sha256 of the payload, t_tx_ns).
type Stored = BTreeMap<(u64, u16), (String, Option<i64>)>;

fn stored_events(run_dir: &Path) -> Stored {
    let mut out = Stored::new();
    for b in read_batches(&run_dir.join("rf_events-source0.parquet")) {
        let frame = col::<UInt64Type>(&b, "frame_no");
        let tx = col::<UInt16Type>(&b, "tx_index");
        let t = col::<Int64Type>(&b, "t_tx_ns");
        let payload = b.column_by_name("payload").unwrap().as_binary::<i32>();
        let dtype = b.column_by_name("dtype").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            assert_eq!(dtype.value(i), "int16");
            let hash: String = Sha256::digest(payload.value(i))
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect();
            let time = (!arrow_array::Array::is_null(t, i)).then(|| t.value(i));
            let dup = out.insert((frame.value(i), tx.value(i)), (hash, time));
            assert!(dup.is_none(), "event stored twice");
        }
    }
    out
}

/// Stored events == the truth's complete events, hash for hash; returns (true transmit time,
/// |corrected - true|) in ns of each event with a corrected time.
fn check_against_truth(stored: &Stored, truth: &[TruthEvent]) -> Vec<(i64, i64)> {
    let complete: BTreeMap<(u64, u16), &TruthEvent> = truth
        .iter()
        .filter(|t| t.complete)
        .map(|t| ((t.frame_no, t.tx_index), t))
        .collect();
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        complete.keys().collect::<Vec<_>>(),
        "the stored events are exactly the complete ones"
    );
    let mut errors = Vec::new();
    for (k, (hash, t)) in stored {
        let truth = complete[k];
        assert_eq!(hash, &truth.sha256, "payload of event {k:?} is bit-exact");
        if let Some(t) = t {
            errors.push((truth.true_tx_time_ns, (t - truth.true_tx_time_ns).abs()));
        }
    }
    errors
}

fn manifest_of(run_dir: &Path) -> Manifest {
    let m = Manifest::read(run_dir).unwrap();
    assert!(m.complete, "run committed: {:?}", m.error);
    m
}

fn only_run_dir(out: &Path) -> PathBuf {
    std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("run-"))
        .expect("a run directory")
}

#[test]
fn rf_events_over_udp_are_bit_exact_and_lost_chunks_make_exactly_the_truths_incomplete_events() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let config = UsConfig {
        lose_packets: 0.003,
        ..small_config(21, &sim)
    };
    std::fs::create_dir_all(&sim).unwrap();
    let seq = sim.join(SEQUENCE_FILE);
    std::fs::write(&seq, serde_json::to_string(&config.sequence()).unwrap()).unwrap();
    let out = tmp.path().join("runs");
    let port = crate::free_port_udp().port();
    let cfg = tmp.path().join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\nout = {:?}\nduration = \"60s\"\n[calibration]\nnone = true\n\
             [[input]]\nudp = \"127.0.0.1:{port}\"\n\
             [ultrasound]\nsequence_file = {:?}\ntick_rate_hz = {}\n",
            out.display().to_string(),
            seq.display().to_string(),
            config.tick_rate_hz,
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args(["run", "--config", cfg.to_str().unwrap(), "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The run-number lock file appears in `out` before the run directory does, so wait for
    // the manifest to say running (the UDP socket is bound by then).
    crate::wait_run_running(&out, &mut child);
    let target = format!("127.0.0.1:{port}").parse().unwrap();
    let summary = run(&config, Destination::Udp { target }).unwrap();
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(result.status.success(), "{stderr}");
    let dir = only_run_dir(&out);
    let m = manifest_of(&dir);
    let truth = read_truth(&sim.join(TRUTH_FILE)).unwrap();
    assert_eq!(truth.len() as u64, summary.events);
    assert_eq!(
        m.losses.get("udp_kernel_drops"),
        0,
        "machine too busy: {m:?}"
    );
    let incomplete_seen = truth
        .iter()
        .filter(|t| !t.complete && t.chunks_lost < t.chunks)
        .count() as u64;
    assert!(incomplete_seen > 0, "the loss rate must hit some events");
    let errors = check_against_truth(&stored_events(&dir), &truth);
    assert_eq!(
        errors.len() as u64,
        summary.complete_events,
        "every event has a time"
    );
    assert_eq!(m.losses.get("us_incomplete_events"), incomplete_seen);
    assert_eq!(m.counts["us.0.events_complete"], summary.complete_events);
    assert_eq!(m.counts["us.0.sync_records"], summary.sync_records);
    // Corrected transmit times: before the second sync record only the nominal rate is known
    // (3 ppm off: up to 300 ns after 0.1 s), within 1 us; once two records gave the fitted
    // rate, within a few 10 ns ticks.
    let worst = errors.iter().map(|e| e.1).max().unwrap_or(0);
    assert!(worst < 1000, "corrected transmit time off by {worst} ns");
    let second_sync =
        scandaq_fpga_sim::us::REFERENCE_EPOCH_NS + (config.sync_interval_s * 1e9) as i64;
    let fitted: Vec<i64> = errors
        .iter()
        .filter(|e| e.0 > second_sync)
        .map(|e| e.1)
        .collect();
    assert!(
        fitted.len() > 50,
        "{} events after the second sync record",
        fitted.len()
    );
    let worst_fitted = fitted.iter().max().copied().unwrap_or(0);
    assert!(
        worst_fitted < 100,
        "fitted transmit time off by {worst_fitted} ns"
    );
    for table in ["us_sequence", "clock_segments"] {
        let f = format!("{table}-source0.parquet");
        assert!(m.files.iter().any(|r| r.path == f), "{f} in the manifest");
    }
    let seq_rows: usize = read_batches(&dir.join("us_sequence-source0.parquet"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(seq_rows, config.angles_deg.len());
}

#[test]
fn replayed_archive_with_truncated_chunks_stores_exactly_the_complete_events() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let config = UsConfig {
        lose_packets: 0.002,
        truncate_chunks: 0.004,
        paced: false,
        ..small_config(22, &sim)
    };
    let archive = tmp.path().join("us.sdq");
    let summary = run(
        &config,
        Destination::Archive {
            path: archive.clone(),
            // Carries the sequence: the replay needs no --config for us_sequence.
            metadata_json: scandaq_fpga_sim::us::archive_metadata(&config),
        },
    )
    .unwrap();
    assert!(summary.faults.truncated_chunks > 0);
    let out = tmp.path().join("runs");
    let result = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args([
            "replay",
            archive.to_str().unwrap(),
            "--no-calib",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(result.status.success(), "{stderr}");
    let dir = only_run_dir(&out);
    let m = manifest_of(&dir);
    let truth = read_truth(&sim.join(TRUTH_FILE)).unwrap();
    check_against_truth(&stored_events(&dir), &truth);
    let incomplete_seen = truth
        .iter()
        .filter(|t| !t.complete && t.chunks_lost < t.chunks)
        .count() as u64;
    // A truncated chunk is either rejected (the event stays incomplete) or accepted short
    // (every chunk arrived but they do not tile the event): both are counted, never stored.
    assert_eq!(
        m.losses.get("us_incomplete_events") + m.losses.get("us_inconsistent_events"),
        incomplete_seen,
        "{:?}",
        m.losses
    );
    let seq_rows: usize = read_batches(&dir.join("us_sequence-source0.parquet"))
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(
        seq_rows,
        config.angles_deg.len(),
        "sequence from the archive"
    );
}

#[test]
fn garbage_rf_chunks_and_control_records_are_counted_never_a_panic() {
    use scandaq::process::streams::{StreamContext, StreamSettings, new_processor};
    let tmp = tempfile::tempdir().unwrap();
    let mut p = new_processor(StreamContext {
        run_dir: tmp.path().to_path_buf(),
        metadata: vec![],
        source_id: 9,
        payload_format: 4,
        settings: StreamSettings::default(),
    })
    .unwrap()
    .expect("format 4 is a stream");
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..3000 {
        let len = (next() % 300) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 3 == 0 && bytes.len() >= 40 {
            // Plausible headers: small shapes, chunk_index < chunk_count.
            bytes[10] = 2;
            bytes[11] = 0;
            bytes[12..16].copy_from_slice(&64u32.to_le_bytes());
            bytes[32] = 0;
            bytes[33] = 0;
            bytes[34] = (next() % 3 + 1) as u8;
            bytes[35] = 0;
        }
        p.payload(&bytes).unwrap();
        if i % 7 == 0 {
            p.control(&bytes[..bytes.len().min(40)]).unwrap();
        }
    }
    let report = p.finish().unwrap();
    let accounted: u64 = report.losses.0.values().sum::<u64>() + report.counts["us.9.chunks"];
    assert!(accounted > 0);
    assert!(
        report.losses.get("us_truncated_chunks") > 0,
        "{:?}",
        report.losses
    );
    assert_eq!(report.files[0].path, "rf_events-source9.parquet");
}

#[test]
fn rf_events_over_tcp_with_a_board_clock_reset_are_bit_exact_and_the_reset_is_counted() {
    use scandaq_fpga_sim::us::REFERENCE_EPOCH_NS;
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    // 0.5 s of frames, sync records every 50 ms, the board's counter restarts from 0 at
    // 223.4 ms (between two sync edges).
    let reset_s = 0.2234;
    let config = UsConfig {
        frames: 100,
        sync_interval_s: 0.05,
        paced: false,
        clock_reset_at_s: Some(reset_s),
        ..small_config(23, &sim)
    };
    std::fs::create_dir_all(&sim).unwrap();
    let seq = sim.join(SEQUENCE_FILE);
    std::fs::write(&seq, serde_json::to_string(&config.sequence()).unwrap()).unwrap();
    let listen: std::net::SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let sim_config = config.clone();
    let sender = std::thread::spawn(move || run(&sim_config, Destination::Tcp { listen }));
    let out = tmp.path().join("runs");
    let cfg = tmp.path().join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[ultrasound]\nsequence_file = {:?}\ntick_rate_hz = {}\n",
            seq.display().to_string(),
            config.tick_rate_hz,
        ),
    )
    .unwrap();
    let result = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args(["run", "--tcp", &listen.to_string(), "--no-calib", "--quiet"])
        .args([
            "--duration",
            "120s",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let summary = sender.join().unwrap().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    assert!(result.status.success(), "{text}");
    assert_eq!(summary.faults.clock_resets, 1);
    let dir = only_run_dir(&out);
    let m = manifest_of(&dir);
    let truth = read_truth(&sim.join(TRUTH_FILE)).unwrap();
    // TCP loses nothing: every event stored, bit-exact.
    assert!(truth.iter().all(|t| t.complete));
    let errors = check_against_truth(&stored_events(&dir), &truth);
    assert!(
        m.losses.0.values().all(|&v| v == 0),
        "nothing lost: {:?}",
        m.losses
    );
    // The reset is in the truth (the counter drops) ...
    let reset_ns = REFERENCE_EPOCH_NS + (reset_s * 1e9) as i64;
    let after: Vec<&TruthEvent> = truth
        .iter()
        .filter(|t| t.true_tx_time_ns >= reset_ns)
        .collect();
    let before = truth
        .iter()
        .rfind(|t| t.true_tx_time_ns < reset_ns)
        .unwrap();
    assert!(
        after[0].tx_ticks < before.tx_ticks / 1000,
        "the counter restarted"
    );
    // ... counted once and reported, with a new clock segment starting at it.
    assert_eq!(m.counts["us.0.counter_jumps"], 1, "{:?}", m.counts);
    assert!(text.contains("a board clock reset"), "{text}");
    let starts: Vec<String> = read_batches(&dir.join("clock_segments-source0.parquet"))
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name("start").unwrap().as_string::<i32>();
            (0..b.num_rows())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        starts.iter().filter(|s| *s == "counter_jump").count(),
        1,
        "{starts:?}"
    );
    // Events between the reset and the next sync edge (250 ms) cannot be timed: exactly
    // those are stored without a time and counted; every other event is within 1 us.
    let next_edge = REFERENCE_EPOCH_NS + 250_000_000;
    let untimed = truth
        .iter()
        .filter(|t| (reset_ns..next_edge).contains(&t.true_tx_time_ns))
        .count() as u64;
    assert!(untimed > 5, "{untimed} events in the blind interval");
    assert_eq!(m.counts["us.0.events_without_time"], untimed);
    assert_eq!(errors.len() as u64, summary.events - untimed);
    let stored = stored_events(&dir);
    for t in &truth {
        let timed = stored[&(t.frame_no, t.tx_index)].1.is_some();
        let blind = (reset_ns..next_edge).contains(&t.true_tx_time_ns);
        assert_eq!(timed, !blind, "event {} {}", t.frame_no, t.tx_index);
    }
    let worst = errors.iter().map(|e| e.1).max().unwrap();
    assert!(worst < 1000, "corrected transmit time off by {worst} ns");
    // A second pass from the stored tables times every event, the blind ones included: each
    // event's (counter_segment, tick) against the clock_segments of that counter segment.
    let retimed = retime_from_clock_segments(&dir);
    let mut worst_retimed = 0i64;
    for t in &truth {
        let (t_ns, stored_ns) = retimed[&(t.frame_no, t.tx_index)];
        // Interpolated between sync points, an event is off by the quantisation of its
        // integer tx_ticks (under one 10 ns tick at the simulator's 100 MHz) plus the line
        // fit's error between sync points (a few ns): asserted within 15 ns (measured 11 ns).
        let err = (t_ns - t.true_tx_time_ns).abs();
        assert!(
            err <= 15,
            "event {} {} re-timed {err} ns off (bound 15 ns)",
            t.frame_no,
            t.tx_index
        );
        if let Some(s) = stored_ns {
            assert!((t_ns - s).abs() < 1000, "re-timed vs stored t_tx_ns");
        }
        worst_retimed = worst_retimed.max(err);
    }
    eprintln!(
        "us over tcp with a clock reset: {} events bit-exact, {untimed} untimed after the \
         reset, worst time error {worst} ns; re-timed from clock_segments, all within \
         {worst_retimed} ns",
        summary.events
    );
}

/// Every stored event's transmit time recomputed from `rf_events.(counter_segment, tick)` and
/// the `clock_segments` table (the segment of the same counter segment that starts at or
/// before the tick, else its first one), with the stored `t_tx_ns`, by (frame_no, tx_index).
fn retime_from_clock_segments(dir: &Path) -> BTreeMap<(u64, u16), (i64, Option<i64>)> {
    use arrow_array::Array;
    use arrow_array::types::{Float64Type, UInt32Type};
    // (counter_segment, first_tick, offset_ns, ns_per_tick), sorted.
    let mut segments = Vec::new();
    for b in read_batches(&dir.join("clock_segments-source0.parquet")) {
        let cs = col::<UInt32Type>(&b, "counter_segment");
        let first = col::<Int64Type>(&b, "first_tick");
        let offset = col::<Int64Type>(&b, "offset_ns");
        let slope = col::<Float64Type>(&b, "ns_per_tick");
        for i in 0..b.num_rows() {
            segments.push((cs.value(i), first.value(i), offset.value(i), slope.value(i)));
        }
    }
    segments.sort_by_key(|s| (s.0, s.1));
    let mut out = BTreeMap::new();
    for b in read_batches(&dir.join("rf_events-source0.parquet")) {
        let frame = col::<UInt64Type>(&b, "frame_no");
        let tx = col::<UInt16Type>(&b, "tx_index");
        let tick = col::<Int64Type>(&b, "tick");
        let cs = col::<UInt32Type>(&b, "counter_segment");
        let t = col::<Int64Type>(&b, "t_tx_ns");
        for i in 0..b.num_rows() {
            let own: Vec<_> = segments.iter().filter(|s| s.0 == cs.value(i)).collect();
            let seg = own
                .iter()
                .rev()
                .find(|s| s.1 <= tick.value(i))
                .or(own.first())
                .expect("a clock segment for the event's counter segment");
            let t_ns = seg.2 + ((tick.value(i) - seg.1) as f64 * seg.3).round() as i64;
            let stored = (!t.is_null(i)).then(|| t.value(i));
            out.insert((frame.value(i), tx.value(i)), (t_ns, stored));
        }
    }
    out
}
