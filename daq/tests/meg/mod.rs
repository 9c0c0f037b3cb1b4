//! OPM-MEG end to end: `fpga-sim`'s opm preset streams over UDP to `scandaq run`, and the
//! run's `meg_blocks`, `triggers`, `clock_segments` and `meg_channels` are checked against the
//! simulator's truth (sample indices contiguous, corrected times within 1 µs, trigger edges
//! within one sample period). Bad input (lost and truncated blocks, a counter jump, a clock
//! reset, arbitrary bytes) is counted, never a panic.

use super::{no_panic, read_parquet};
use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, UInt8Type, UInt16Type, UInt32Type};
use scandaq_fpga_sim::opm::{
    BlockTruth, CHANNELS_FILE, OpmConfig, OpmFaults, OpmSummary, TRUTH_BLOCKS_FILE,
    TRUTH_TRIGGERS_FILE, read_block_truth, read_trigger_truth, run_opm,
};
use scandaq_fpga_sim::packet_out::Destination;
use scandaq_sinks::Manifest;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_port_udp() -> std::net::SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn i64s(b: &[RecordBatch], name: &str) -> Vec<Option<i64>> {
    b.iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect()
}

fn u32s(b: &[RecordBatch], name: &str) -> Vec<u32> {
    b.iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<UInt32Type>()
                .values()
                .to_vec()
        })
        .collect()
}

fn u16s(b: &[RecordBatch], name: &str) -> Vec<u16> {
    b.iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<UInt16Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// What a streamed run left.
struct OpmRun {
    _tmp: tempfile::TempDir,
    run_dir: PathBuf,
    sim_dir: PathBuf,
    sent: OpmSummary,
    manifest: Manifest,
}

impl OpmRun {
    fn table(&self, name: &str) -> Vec<RecordBatch> {
        read_parquet(&self.run_dir.join(format!("{name}-source0.parquet"))).0
    }
    fn loss(&self, reason: &str) -> u64 {
        self.manifest.losses.get(reason)
    }
    fn count(&self, key: &str) -> u64 {
        self.manifest.counts.get(key).copied().unwrap_or(0)
    }
}

/// Streams `config` over UDP at `speed` x real time into `scandaq run --no-calib` (recording
/// the packets into `raw-00000.sdq` when `archive`).
fn stream_run(config: &OpmConfig, speed: f64) -> OpmRun {
    stream_run_with(config, speed, false)
}

fn stream_run_with(config: &OpmConfig, speed: f64, archive: bool) -> OpmRun {
    let tmp = tempfile::tempdir().unwrap();
    let sim_dir = tmp.path().join("sim");
    let runs = tmp.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let cfg = tmp.path().join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[meg]\nchannel_table = {:?}\n",
            sim_dir.join(CHANNELS_FILE).to_str().unwrap()
        ),
    )
    .unwrap();
    let addr = free_port_udp();
    let child = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args([
            "run",
            "--udp",
            &addr.to_string(),
            "--no-calib",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            runs.to_str().unwrap(),
            "--duration",
            "20m",
            "--quiet",
        ])
        .args(archive.then_some("--raw-archive"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800)); // the run binds its socket first
    let sent = run_opm(
        config,
        Destination::Udp { target: addr },
        Some(speed),
        Some(&sim_dir),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    no_panic(&stderr);
    assert!(out.status.success(), "scandaq run failed: {stderr}");
    let run_dir = runs.join("run-000001");
    let manifest = Manifest::read(&run_dir).unwrap();
    assert!(manifest.complete, "{stderr}");
    assert_eq!(
        manifest.losses.get("udp_kernel_drops"),
        0,
        "the receiver kept up"
    );
    OpmRun {
        _tmp: tmp,
        run_dir,
        sim_dir,
        sent,
        manifest,
    }
}

/// Corrected times of every stored block against the truth, by first-sample index; returns
/// the worst error (ns) over blocks not flagged extrapolated, and how many were compared.
fn time_errors(run: &OpmRun, truth: &[BlockTruth]) -> (f64, usize) {
    let blocks = run.table("meg_blocks");
    let firsts = i64s(&blocks, "first_sample");
    let times = i64s(&blocks, "t_first_ns");
    let flags = u32s(&blocks, "flags");
    // The stream's first stored index is the first sample's unwrapped counter.
    let origin = firsts[0].unwrap();
    let by_index: std::collections::HashMap<i64, i64> = truth
        .iter()
        .filter(|t| !t.lost && !t.truncated)
        .map(|t| (t.first_sample as i64, t.t_ref_ns))
        .collect();
    let mut worst = 0.0f64;
    let mut compared = 0;
    for ((f, t), fl) in firsts.iter().zip(&times).zip(&flags) {
        if fl & scandaq_sinks::meg_tables::block_flags::TIME_EXTRAPOLATED != 0 {
            continue;
        }
        if let (Some(truth_ns), Some(t)) = (by_index.get(&(f.unwrap() - origin)), t) {
            worst = worst.max((t - truth_ns).abs() as f64);
            compared += 1;
        }
    }
    (worst, compared)
}

#[test]
fn ten_minutes_over_udp_with_drift_contiguous_times_within_a_microsecond() {
    let config = OpmConfig {
        seed: 11,
        duration_s: 600.0,
        sensors: 8,
        ..OpmConfig::default()
    };
    let run = stream_run(&config, 120.0);
    let truth = read_block_truth(&run.sim_dir.join(TRUTH_BLOCKS_FILE)).unwrap();
    let blocks = run.table("meg_blocks");
    // Every block arrived, in order, and the sample indices are contiguous.
    let firsts: Vec<i64> = i64s(&blocks, "first_sample")
        .into_iter()
        .flatten()
        .collect();
    let ns = u16s(&blocks, "n_samples");
    assert_eq!(firsts.len() as u64, run.sent.blocks);
    for k in 1..firsts.len() {
        assert_eq!(firsts[k], firsts[k - 1] + ns[k - 1] as i64, "block {k}");
    }
    let total: u64 = ns.iter().map(|&n| n as u64).sum();
    assert_eq!(total, run.sent.samples);
    assert_eq!(run.count("meg.0.samples"), run.sent.samples);
    assert_eq!(run.loss("meg_missing_samples"), 0);
    assert_eq!(run.loss("meg_duplicate_blocks"), 0);
    // The counter wrapped during the run (it starts 20 s before its wrap).
    let counters = u32s(&blocks, "counter");
    assert!(
        counters.windows(2).any(|w| w[1] < w[0]),
        "the counter wraps"
    );
    assert!(u32s(&blocks, "counter_segment").iter().all(|&s| s == 0));
    // Corrected first-sample times within 1 µs of the truth, for every block: none is
    // extrapolated (the simulator latches one reference edge after the last block).
    let (worst, compared) = time_errors(&run, &truth);
    assert_eq!(
        compared,
        truth.len(),
        "every block interpolated and compared"
    );
    assert!(worst <= 1000.0, "worst corrected-time error {worst} ns");
    eprintln!("opm 10 min: {compared} blocks, worst time error {worst} ns");
    // The effective rate follows the drifting clock (1200.5 Hz + 1.5..4.5 ppm).
    let rates: Vec<f64> = blocks
        .iter()
        .flat_map(|b| {
            b.column_by_name("rate_hz")
                .unwrap()
                .as_primitive::<Float64Type>()
                .values()
                .to_vec()
        })
        .collect();
    for r in &rates {
        let ppm = (r / 1200.5 - 1.0) * 1e6;
        assert!((1.0..5.0).contains(&ppm), "rate {r} Hz = {ppm} ppm");
    }
    // Trigger edges within one sample period of the true pulse times.
    let triggers = run.table("triggers");
    let t_ns: Vec<i64> = i64s(&triggers, "t_ns").into_iter().flatten().collect();
    let bits: Vec<u8> = triggers
        .iter()
        .flat_map(|b| {
            b.column_by_name("bit")
                .unwrap()
                .as_primitive::<UInt8Type>()
                .values()
                .to_vec()
        })
        .collect();
    let rising: Vec<bool> = triggers
        .iter()
        .flat_map(|b| {
            b.column_by_name("rising")
                .unwrap()
                .as_boolean()
                .iter()
                .map(|v| v.unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let true_triggers = read_trigger_truth(&run.sim_dir.join(TRUTH_TRIGGERS_FILE)).unwrap();
    let rises: Vec<(i64, u8)> = (0..t_ns.len())
        .filter(|&i| rising[i])
        .map(|i| (t_ns[i], bits[i]))
        .collect();
    assert_eq!(rises.len(), true_triggers.len());
    let period_ns = 1e9 / 1200.5;
    for ((t, bit), (true_t, true_bits)) in rises.iter().zip(&true_triggers) {
        assert_eq!(1i32 << bit, *true_bits);
        let d = (t - true_t) as f64;
        assert!(
            (-1000.0..period_ns + 1000.0).contains(&d),
            "trigger at {true_t}: measured {t}, {d} ns late"
        );
    }
    // Clock segments follow the drift; channel table stored.
    let segs = run.table("clock_segments");
    assert!(segs.iter().map(|b| b.num_rows()).sum::<usize>() >= 3);
    let channels = run.table("meg_channels");
    assert_eq!(
        channels.iter().map(|b| b.num_rows()).sum::<usize>(),
        run.sent.n_channels
    );
}

#[test]
fn lost_and_truncated_blocks_counter_jump_and_clock_reset_are_counted() {
    let config = OpmConfig {
        seed: 5,
        duration_s: 240.0,
        sensors: 4,
        faults: OpmFaults {
            lose_packets: 0.003,
            truncate_blocks: 0.003,
            counter_jump_at_s: Some(60.0),
            clock_reset_at_s: Some(150.0),
        },
        ..OpmConfig::default()
    };
    let run = stream_run_with(&config, 120.0, true);
    let f = &run.sent.faults;
    assert!(f.lost_blocks > 0 && f.truncated_blocks > 0, "{f:?}");
    assert_eq!(run.loss("meg_truncated_blocks"), f.truncated_blocks);
    assert_eq!(
        run.loss("meg_missing_samples"),
        f.lost_samples + f.truncated_samples,
        "every lost or truncated block is a counted gap"
    );
    assert_eq!(run.count("meg.0.counter_jumps"), 2);
    let blocks = run.table("meg_blocks");
    assert_eq!(
        blocks.iter().map(|b| b.num_rows() as u64).sum::<u64>(),
        run.sent.blocks - f.lost_blocks - f.truncated_blocks
    );
    let segs = u32s(&blocks, "counter_segment");
    assert_eq!(*segs.last().unwrap(), 2);
    // Blocks that are not flagged extrapolated are still within 1 µs after the reset.
    let truth = read_block_truth(&run.sim_dir.join(TRUTH_BLOCKS_FILE)).unwrap();
    let (worst, compared) = time_errors_segmented(&run, &truth);
    assert!(compared > blocks.iter().map(|b| b.num_rows()).sum::<usize>() * 9 / 10);
    assert!(worst <= 1000.0, "worst {worst} ns");
    // Replaying the raw archive redoes the same correction: identical blocks and times.
    let archive = std::fs::read_dir(&run.run_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "sdq"))
        .expect("the run recorded a raw archive");
    let replays = run.run_dir.parent().unwrap().join("replays");
    std::fs::create_dir_all(&replays).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args([
            "replay",
            archive.to_str().unwrap(),
            "--no-calib",
            "--no-progress",
            "--out",
        ])
        .arg(&replays)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    no_panic(&stderr);
    assert!(out.status.success(), "{stderr}");
    let replayed = read_parquet(
        &replays
            .join("run-000001")
            .join("meg_blocks-source0.parquet"),
    )
    .0;
    for name in ["first_sample", "t_first_ns"] {
        assert_eq!(i64s(&replayed, name), i64s(&blocks, name), "{name}");
    }
    assert_eq!(u32s(&replayed, "flags"), u32s(&blocks, "flags"));
}

/// Like [`time_errors`] across counter segments: matches stored blocks to the truth by
/// their raw counter and order instead of by index.
fn time_errors_segmented(run: &OpmRun, truth: &[BlockTruth]) -> (f64, usize) {
    let blocks = run.table("meg_blocks");
    let counters = u32s(&blocks, "counter");
    let times = i64s(&blocks, "t_first_ns");
    let flags = u32s(&blocks, "flags");
    let kept: Vec<&BlockTruth> = truth.iter().filter(|t| !t.lost && !t.truncated).collect();
    assert_eq!(kept.len(), counters.len());
    let mut worst = 0.0f64;
    let mut compared = 0;
    for (i, t) in kept.iter().enumerate() {
        assert_eq!(t.counter, counters[i]);
        if flags[i] & scandaq_sinks::meg_tables::block_flags::TIME_EXTRAPOLATED != 0 {
            continue;
        }
        if let Some(ns) = times[i] {
            worst = worst.max((ns - t.t_ref_ns).abs() as f64);
            compared += 1;
        }
    }
    (worst, compared)
}

#[test]
fn arbitrary_payloads_and_control_records_are_counted_never_a_panic() {
    use scandaq::streams::{StreamContext, StreamSettings, new_processor};
    use scandaq_decoders::transport::payload_format;
    let tmp = tempfile::tempdir().unwrap();
    let mut p = new_processor(StreamContext {
        run_dir: tmp.path().to_path_buf(),
        metadata: vec![],
        source_id: 9,
        payload_format: payload_format::OPM_BLOCK,
        settings: StreamSettings::default(),
    })
    .unwrap()
    .unwrap();
    // Deterministic junk: every length 0..200 with pseudo-random bytes, as data and control.
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for len in 0..200usize {
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        p.payload(&bytes).unwrap();
        p.control(&bytes).unwrap();
    }
    let report = p.finish().unwrap();
    let total: u64 = [
        "meg_truncated_blocks",
        "meg_empty_blocks",
        "meg_oversized_blocks",
    ]
    .iter()
    .map(|r| report.losses.get(r))
    .sum();
    let kept = report.counts.get("meg.9.blocks").copied().unwrap_or(0);
    let dropped =
        report.losses.get("meg_duplicate_blocks") + report.losses.get("meg_overlapping_blocks");
    assert_eq!(total + kept + dropped, 200, "{report:?}");
    for f in &report.files {
        assert!(tmp.path().join(&f.path).exists());
    }
}

/// True when `python3 -c "import mne"` works.
fn have_mne() -> bool {
    Command::new("python3")
        .args(["-c", "import mne, pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn fif_export_is_read_by_mne_with_matching_names_rate_and_tesla_values() {
    let config = OpmConfig {
        seed: 3,
        duration_s: 30.0,
        sensors: 8,
        faults: OpmFaults {
            lose_packets: 0.002,
            ..OpmFaults::default()
        },
        ..OpmConfig::default()
    };
    let run = stream_run(&config, 60.0);
    let fif = run.run_dir.join("export.fif");
    let out = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args([
            "export",
            "fif",
            run.run_dir.to_str().unwrap(),
            "--out",
            fif.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    no_panic(&stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let gaps = run.loss("meg_missing_samples");
    if gaps > 0 {
        assert!(
            stdout.contains(&format!("{gaps} missing samples filled")),
            "{stdout}"
        );
    }
    let bytes = std::fs::read(&fif).unwrap();
    // FIFF_FILE_ID (100), type id struct (31), 20 bytes, big-endian.
    assert_eq!(&bytes[..12], &[0, 0, 0, 100, 0, 0, 0, 31, 0, 0, 0, 20]);
    if !have_mne() {
        eprintln!(
            "NOTICE: python3 cannot import mne (pip install mne): the MNE-Python check of the FIF export is skipped"
        );
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/check_fif_mne.py");
    let check = Command::new("python3")
        .args([
            script,
            run.run_dir.to_str().unwrap(),
            fif.to_str().unwrap(),
            "--channel",
            "OPM003Z",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{text}");
    assert!(text.contains("all FIF checks passed"), "{text}");
    eprintln!("{text}");
    // Refusals: a run without MEG tables, a missing stream.
    let err = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args([
            "export",
            "fif",
            run.sim_dir.to_str().unwrap(),
            "--out",
            fif.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("no meg_blocks"));
}

#[test]
fn in_process_stream_gives_dashboard_figures_from_the_data() {
    use scandaq::streams::{StreamContext, StreamSettings, new_processor};
    use scandaq_decoders::transport::{decode_packet, payload_format};
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let config = OpmConfig {
        seed: 2,
        duration_s: 12.0,
        sensors: 4,
        ..OpmConfig::default()
    };
    run_opm(
        &config,
        Destination::Closure(Box::new(|_, p| {
            packets.push(p.to_vec());
            true
        })),
        None,
        Some(&sim),
    )
    .unwrap();
    let mut settings = StreamSettings::default();
    settings.meg.channel_table = Some(sim.join(CHANNELS_FILE));
    let mut p = new_processor(StreamContext {
        run_dir: tmp.path().to_path_buf(),
        metadata: vec![],
        source_id: 0,
        payload_format: payload_format::OPM_BLOCK,
        settings,
    })
    .unwrap()
    .unwrap();
    for packet in &packets {
        let (h, payload) = decode_packet(packet).unwrap();
        if payload.is_empty() {
            continue;
        }
        if h.payload_format == payload_format::CONTROL {
            p.control(payload).unwrap();
        } else {
            p.payload(payload).unwrap();
        }
    }
    let figures = p.figures();
    let get = |name: &str| figures.iter().find(|f| f.0 == name).unwrap().1;
    let triggers = read_trigger_truth(&sim.join(TRUTH_TRIGGERS_FILE)).unwrap();
    let true_rate =
        (triggers.len() - 1) as f64 * 1e9 / (triggers.last().unwrap().0 - triggers[0].0) as f64;
    assert!(
        (get("trigger rate") - true_rate).abs() < 1e-3,
        "{figures:?}"
    );
    // White 15 fT/sqrt(Hz) over 600 Hz is 367 fT rms; mains adds up to 2 pT amplitude.
    assert!(
        (300.0..3000.0).contains(&get("median channel RMS")),
        "{figures:?}"
    );
    assert!((get("rate") / 1200.5 - 1.0).abs() < 6e-6, "{figures:?}");
    let report = p.finish().unwrap();
    assert_eq!(report.counts["meg.0.blocks_time_extrapolated"], 0);
    assert_eq!(
        report.counts["meg.0.samples"],
        (12.0f64 * 1200.5).floor() as u64
    );
}
