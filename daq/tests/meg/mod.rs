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

use crate::free_port_udp;

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
    // scandaq reads (and checks) the channel table when the run starts; the simulator
    // writes the same table again into its --out directory.
    std::fs::create_dir_all(&sim_dir).unwrap();
    std::fs::write(
        sim_dir.join(CHANNELS_FILE),
        scandaq_decoders::meg::format_channel_table(&scandaq_fpga_sim::opm::channel_table(config)),
    )
    .unwrap();
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_scandaq"))
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
    // The sender starts once the run's manifest says running (its socket is bound).
    super::wait_run_running(&runs, &mut child);
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
    use scandaq::process::streams::{StreamContext, StreamSettings, new_processor};
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
    let run = stream_run_with(&config, 60.0, true);
    // The replay of the run's raw archive (no flags: the [meg] settings, channel table
    // included, travel in the archive) gives the same tables ...
    let replay_dir = replay_archive(&run_archive(&run), &run.run_dir.join("replays"), &[]);
    for table in ["meg_blocks", "meg_channels", "triggers", "clock_segments"] {
        let live_file = run.run_dir.join(format!("{table}-source0.parquet"));
        assert!(
            live_file.is_file(),
            "the live run wrote no {table} table; its files: {:?}, manifest: {:?}",
            std::fs::read_dir(&run.run_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect::<Vec<_>>(),
            run.manifest
        );
        let (live, _) = read_parquet(&live_file);
        let (replayed, _) = read_parquet(&replay_dir.join(format!("{table}-source0.parquet")));
        assert_same_rows(&live, &replayed, table);
    }
    let fif = run.run_dir.join("export.fif");
    let stdout = export_fif(&run.run_dir, &fif, &[]);
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
        super::skip_unless_ci(
            "python3 cannot import mne and pyarrow (pip install mne pyarrow): the MNE-Python check of the FIF export",
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
    // ... and so the same FIF file, which MNE reads.
    let replay_fif = replay_dir.join("export.fif");
    export_fif(&replay_dir, &replay_fif, &[]);
    assert!(
        std::fs::read(&replay_fif).unwrap() == bytes,
        "the replay's FIF differs from the live run's"
    );
    mne_check(&replay_dir, &replay_fif, &["--channel", "OPM003Z"]);
    // --unaligned: the samples as recorded (integer buffers), checked exactly.
    let plain_fif = replay_dir.join("plain.fif");
    let stdout = export_fif(&replay_dir, &plain_fif, &["--unaligned"]);
    assert!(stdout.contains("samples as recorded"), "{stdout}");
    mne_check(&replay_dir, &plain_fif, &["--channel", "OPM005Y"]);
    // Split files (as for runs over 2 GiB), forced small: X.fif, X-1.fif, ... each within
    // the size, linked so MNE reads the whole run from X.fif; the same samples as one file.
    let split = replay_dir.join("split.fif");
    let stdout = export_fif(&replay_dir, &split, &["--split-size", "1MB"]);
    let parts: Vec<PathBuf> = std::iter::once(split.clone())
        .chain((1..).map(|k| replay_dir.join(format!("split-{k}.fif"))))
        .take_while(|p| p.exists())
        .collect();
    let whole = std::fs::metadata(&replay_fif).unwrap().len();
    assert!(whole > 3_000_000, "{whole} bytes");
    assert!(
        parts.len() as u64 >= whole / 1_000_000,
        "{parts:?} from {whole} bytes"
    );
    assert!(
        stdout.contains(&format!("split into {} files", parts.len())),
        "{stdout}"
    );
    for p in &parts {
        assert!(
            std::fs::metadata(p).unwrap().len() <= 1_000_000,
            "{}",
            p.display()
        );
    }
    let (nch, one, _) = read_fif_data(&replay_fif);
    let mut joined = Vec::new();
    for p in &parts {
        let (n, v, float) = read_fif_data(p);
        assert!(n == nch && float);
        joined.extend(v);
    }
    assert!(joined == one, "the parts hold the single file's samples");
    mne_check(&replay_dir, &split, &["--channel", "OPM003Z"]);
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

/// An OPM stream processor writing into `run_dir`, fed every packet (control and data, in
/// order; empty end markers skipped).
fn feed_opm_processor(
    run_dir: &std::path::Path,
    settings: scandaq::process::streams::StreamSettings,
    packets: &[Vec<u8>],
) -> Box<dyn scandaq::process::streams::StreamProcessor> {
    use scandaq::process::streams::{StreamContext, new_processor};
    use scandaq_decoders::transport::{decode_packet, payload_format};
    let mut p = new_processor(StreamContext {
        run_dir: run_dir.to_path_buf(),
        metadata: vec![],
        source_id: 0,
        payload_format: payload_format::OPM_BLOCK,
        settings,
    })
    .unwrap()
    .unwrap();
    for packet in packets {
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
    p
}

#[test]
fn in_process_stream_gives_dashboard_figures_from_the_data() {
    use scandaq::process::streams::StreamSettings;
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
    let p = feed_opm_processor(tmp.path(), settings, &packets);
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

/// The raw archive a run recorded (`--raw-archive`).
fn run_archive(run: &OpmRun) -> PathBuf {
    std::fs::read_dir(&run.run_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "sdq"))
        .expect("the run recorded a raw archive")
}

/// `scandaq replay ARCHIVE --no-calib --out OUT EXTRA...`; returns the new run directory.
fn replay_archive(archive: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> PathBuf {
    let (ok, stderr) = try_replay(archive, out, extra);
    assert!(ok, "replay failed: {stderr}");
    let mut runs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    runs.sort();
    runs.pop().unwrap()
}

/// Runs a replay; returns (success, stderr).
fn try_replay(archive: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> (bool, String) {
    std::fs::create_dir_all(out).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .arg("replay")
        .arg(archive)
        .args(["--no-calib", "--no-progress", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    no_panic(&stderr);
    (o.status.success(), stderr)
}

/// `scandaq export fif RUN --out FIF EXTRA...` must succeed; returns its stdout.
fn export_fif(run_dir: &std::path::Path, fif: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args(["export", "fif"])
        .arg(run_dir)
        .arg("--out")
        .arg(fif)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    no_panic(&stderr);
    assert!(out.status.success(), "export fif failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs scripts/check_fif_mne.py (without mne: fails under CI, says SKIPPED elsewhere).
fn mne_check(run_dir: &std::path::Path, fif: &std::path::Path, extra: &[&str]) {
    if !have_mne() {
        super::skip_unless_ci(&format!(
            "python3 cannot import mne and pyarrow: the MNE check of {}",
            fif.display()
        ));
        return;
    }
    let mut args = vec![run_dir.as_os_str(), fif.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let text = super::python_script("check_fif_mne.py", &args);
    assert!(text.contains("all FIF checks passed"), "{text}");
}

/// The two tables hold the same rows, column by column (file metadata such as the run
/// number may differ).
fn assert_same_rows(a: &[RecordBatch], b: &[RecordBatch], table: &str) {
    let rows = |x: &[RecordBatch]| x.iter().map(|b| b.num_rows()).sum::<usize>();
    assert_eq!(rows(a), rows(b), "{table}: row counts");
    assert!(rows(a) > 0, "{table} is empty");
    assert_eq!(a.len(), b.len(), "{table}: batches as read");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.schema().fields(), y.schema().fields(), "{table}: schema");
        assert!(x.columns() == y.columns(), "{table}: values differ");
    }
}

#[test]
fn fpga_sim_archive_replays_with_its_channel_table_and_config_overrides_it() {
    use scandaq_fpga_sim::opm::{archive_metadata, channel_table};
    let tmp = tempfile::tempdir().unwrap();
    let config = OpmConfig {
        seed: 4,
        duration_s: 8.0,
        sensors: 3,
        ..OpmConfig::default()
    };
    let archive = tmp.path().join("opm.sdq");
    run_opm(
        &config,
        Destination::Archive {
            path: archive.clone(),
            metadata_json: archive_metadata(&config),
        },
        None,
        None,
    )
    .unwrap();
    let truth = channel_table(&config);
    let names = |run: &std::path::Path| -> Vec<String> {
        read_parquet(&run.join("meg_channels-source0.parquet"))
            .0
            .iter()
            .flat_map(|b| {
                let c = b.column_by_name("name").unwrap().as_string::<i32>();
                (0..b.num_rows())
                    .map(|i| c.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let delays = |run: &std::path::Path| -> Vec<Option<i64>> {
        i64s(
            &read_parquet(&run.join("meg_channels-source0.parquet")).0,
            "delay_ps",
        )
    };
    // The simulator's archive carries its channel table: meg_channels as simulated.
    let run = replay_archive(&archive, &tmp.path().join("a"), &[]);
    let want: Vec<String> = truth.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names(&run), want);
    assert_eq!(
        delays(&run),
        truth.iter().map(|c| Some(c.delay_ps)).collect::<Vec<_>>()
    );
    let fif = tmp.path().join("a.fif");
    export_fif(&run, &fif, &[]);
    mne_check(&run, &fif, &[]);
    // --config overrides: another channel table (first channel renamed) and a setting.
    let mut renamed = truth.clone();
    renamed[0].name = "RENAMED".into();
    let table = tmp.path().join("renamed.tsv");
    std::fs::write(
        &table,
        scandaq_decoders::meg::format_channel_table(&renamed),
    )
    .unwrap();
    let cfg = tmp.path().join("replay.toml");
    std::fs::write(
        &cfg,
        format!(
            "[meg]\nchannel_table = {:?}\nmax_hold_s = 2\n",
            table.to_str().unwrap()
        ),
    )
    .unwrap();
    let run = replay_archive(
        &archive,
        &tmp.path().join("b"),
        &["--config", cfg.to_str().unwrap()],
    );
    assert_eq!(names(&run)[0], "RENAMED");
    assert_eq!(names(&run)[1..], want[1..]);
    // A broken table given with --config stops the replay before it starts, naming it.
    std::fs::write(&table, "name\tkind\nA\tsquid\n").unwrap();
    let (ok, stderr) = try_replay(
        &archive,
        &tmp.path().join("c"),
        &["--config", cfg.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(
        stderr.contains("renamed.tsv") && stderr.contains("header"),
        "{stderr}"
    );
    assert!(
        !tmp.path().join("c").join("run-000001").exists(),
        "no run directory is made for a replay that cannot start"
    );
}

/// The data buffers of a FIF file written by `scandaq export fif` (tags in sequence):
/// (channels, sample-major values as stored, whether they were floats).
fn read_fif_data(path: &std::path::Path) -> (usize, Vec<f64>, bool) {
    let bytes = std::fs::read(path).unwrap();
    let be = |o: usize| i32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let (mut pos, mut nch, mut values, mut float) = (0usize, 0usize, Vec::new(), false);
    while pos + 16 <= bytes.len() {
        let (kind, typ, size) = (be(pos), be(pos + 4), be(pos + 8) as usize);
        let data = &bytes[pos + 16..pos + 16 + size];
        match (kind, typ) {
            (200, 3) => nch = be(pos + 16) as usize,
            (300, 3) => values.extend(
                data.chunks_exact(4)
                    .map(|c| f64::from(i32::from_be_bytes([c[0], c[1], c[2], c[3]]))),
            ),
            (300, 4) => {
                float = true;
                values.extend(
                    data.chunks_exact(4)
                        .map(|c| f64::from(f32::from_be_bytes([c[0], c[1], c[2], c[3]]))),
                )
            }
            _ => {}
        }
        pos += 16 + size;
    }
    (nch, values, float)
}

/// The lag (s) at which `g * evoked(t - lag)` fits channel `y` best, over the samples near
/// the true triggers: `windows` holds (sample index, true time since the trigger, bits).
fn evoked_lag(y: &[f64], windows: &[(usize, f64, i32)]) -> f64 {
    use scandaq_fpga_sim::opm::signal::evoked_response;
    let score = |lag: f64| {
        let (mut ys, mut ss) = (0.0, 0.0);
        for &(k, tau, bits) in windows {
            let s = evoked_response(tau - lag, bits);
            ys += y[k] * s;
            ss += s * s;
        }
        if ss > 0.0 { ys * ys / ss } else { 0.0 }
    };
    let best = |lo: f64, hi: f64, step: f64| {
        let n = ((hi - lo) / step).round() as usize;
        (0..=n)
            .map(|i| lo + i as f64 * step)
            .max_by(|a, b| score(*a).total_cmp(&score(*b)))
            .unwrap()
    };
    let coarse = best(-1e-3, 4e-3, 10e-6);
    best(coarse - 10e-6, coarse + 10e-6, 0.1e-6)
}

#[test]
fn fif_export_aligns_channel_delays_so_evoked_responses_line_up_with_truth() {
    use scandaq::commands::fif::{FifOptions, export_fif_with};
    use scandaq::process::streams::StreamSettings;
    use scandaq_fpga_sim::opm::channel_table;
    // Noise-free evoked responses (no white, 1/f or mains), large enough that rounding to
    // counts does not matter; 4 sensors = 12 channels with group delays of 1-3 ms.
    let config = OpmConfig {
        seed: 7,
        duration_s: 12.0,
        sensors: 4,
        white_noise_ft: 0.0,
        mains_ft: 0.0,
        evoked_ft: 1e5,
        ..OpmConfig::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let mut packets: Vec<Vec<u8>> = Vec::new();
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
    let table = channel_table(&config);
    let mut settings = StreamSettings::default();
    settings.meg.channel_table_tsv = Some(scandaq_decoders::meg::format_channel_table(&table));
    let run_dir = tmp.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let p = feed_opm_processor(&run_dir, settings, &packets);
    p.finish().unwrap();
    let aligned = tmp.path().join("aligned.fif");
    let plain = tmp.path().join("plain.fif");
    let e = export_fif_with(&run_dir, &aligned, &FifOptions::default()).unwrap();
    assert!(e.aligned && e.max_shift_samples > 1.0, "{e:?}");
    let e = export_fif_with(
        &run_dir,
        &plain,
        &FifOptions {
            unaligned: true,
            ..FifOptions::default()
        },
    )
    .unwrap();
    assert!(!e.aligned);
    // FIF sample k is true sample k (nothing lost): its true time from the simulator's clock.
    let truth_triggers = read_trigger_truth(&sim.join(TRUTH_TRIGGERS_FILE)).unwrap();
    let (nch, a, float) = read_fif_data(&aligned);
    assert!(float);
    let (nch2, u, float2) = read_fif_data(&plain);
    assert!(!float2 && nch == table.len() && nch2 == nch && a.len() == u.len());
    let n = a.len() / nch;
    let mut windows = Vec::new();
    for &(t_ns, bits) in &truth_triggers {
        let tr = (t_ns - config.reference_start_ns) as f64 * 1e-9;
        let lo = config.clock.sample_position(tr - 0.01).ceil().max(0.0) as usize;
        let hi = (config.clock.sample_position(tr + 0.41).floor() as usize).min(n - 1);
        for k in lo..=hi {
            windows.push((k, config.clock.sample_time(k as f64) - tr, bits));
        }
    }
    assert!(
        windows.len() > 4000,
        "{} samples near triggers",
        windows.len()
    );
    let (mut worst_aligned, mut worst_plain) = (0.0f64, 0.0f64);
    let mut delays = Vec::new();
    for (c, info) in table.iter().enumerate() {
        let column = |v: &[f64]| (0..n).map(|k| v[k * nch + c]).collect::<Vec<f64>>();
        if info.kind == scandaq_decoders::meg::ChannelKind::Trigger {
            assert_eq!(
                column(&a),
                column(&u),
                "the trigger channel is copied as is"
            );
            continue;
        }
        let delay = info.delay_ps as f64 * 1e-12;
        delays.push(delay);
        let lag_aligned = evoked_lag(&column(&a), &windows);
        let lag_plain = evoked_lag(&column(&u), &windows);
        // As recorded, the response lags by the channel's delay; aligned, it does not.
        worst_plain = worst_plain.max((lag_plain - delay).abs());
        worst_aligned = worst_aligned.max(lag_aligned.abs());
        assert!(
            lag_plain > 0.9e-3,
            "{}: unaligned lag {lag_plain} s",
            info.name
        );
    }
    let spread = delays.iter().cloned().fold(f64::MIN, f64::max)
        - delays.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        spread > 0.5e-3,
        "channels with different delays: {delays:?}"
    );
    eprintln!(
        "delay alignment: {} channels, delays {:.3}..{:.3} ms; worst |lag| aligned {:.2} us, \
         unaligned |lag - delay| {:.2} us",
        delays.len(),
        delays.iter().cloned().fold(f64::MAX, f64::min) * 1e3,
        delays.iter().cloned().fold(f64::MIN, f64::max) * 1e3,
        worst_aligned * 1e6,
        worst_plain * 1e6
    );
    assert!(
        worst_plain < 5e-6,
        "the truth's delays are the table's: {worst_plain}"
    );
    assert!(
        worst_aligned < 5e-6,
        "aligned channels line up with the truth: {worst_aligned}"
    );
}

#[test]
fn missing_or_broken_channel_table_stops_the_run_at_startup_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("run.toml");
    let table = tmp.path().join("channels.tsv");
    let scandaq = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_scandaq"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        no_panic(&stderr);
        (o.status.success(), stderr)
    };
    let runs = tmp.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    let addr = free_port_udp().to_string();
    let run_args = [
        "run",
        "--udp",
        &addr,
        "--no-calib",
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        runs.to_str().unwrap(),
        "--duration",
        "30s",
        "--quiet",
    ];
    let check_args = ["config", "check", cfg.to_str().unwrap()];
    std::fs::write(
        &cfg,
        format!(
            "[calibration]\nnone = true\n[[input]]\nudp = {addr:?}\n[meg]\nchannel_table = {:?}\n",
            table.to_str().unwrap()
        ),
    )
    .unwrap();
    // Missing: `config check` and `run` fail at once (no packet needed), naming key and path.
    for args in [&check_args[..], &run_args[..]] {
        let (ok, stderr) = scandaq(args);
        assert!(!ok, "{args:?}");
        assert!(
            stderr.contains("[meg] channel_table")
                && stderr.contains("channels.tsv")
                && stderr.contains("cannot read"),
            "{stderr}"
        );
    }
    // A broken row: the line and the column are named.
    let good = scandaq_decoders::meg::format_channel_table(&scandaq_fpga_sim::opm::channel_table(
        &OpmConfig {
            sensors: 2,
            ..OpmConfig::default()
        },
    ));
    let broken = good.replacen("meg_mag", "squid", 1);
    std::fs::write(&table, &broken).unwrap();
    for args in [&check_args[..], &run_args[..]] {
        let (ok, stderr) = scandaq(args);
        assert!(!ok);
        assert!(
            stderr.contains("line 3")
                && stderr.contains("squid")
                && stderr.contains("channels.tsv"),
            "{stderr}"
        );
    }
    // A header without rows, and a bad clock setting.
    std::fs::write(&table, good.lines().take(2).collect::<Vec<_>>().join("\n")).unwrap();
    let (ok, stderr) = scandaq(&check_args);
    assert!(!ok && stderr.contains("no channel rows"), "{stderr}");
    std::fs::write(&table, &good).unwrap();
    let (ok, stderr) = scandaq(&check_args);
    assert!(ok, "{stderr}");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}clock_max_residual_ns = -5\n")).unwrap();
    let (ok, stderr) = scandaq(&check_args);
    assert!(!ok && stderr.contains("clock_max_residual_ns"), "{stderr}");
    // Nothing was started: no run directory.
    assert!(std::fs::read_dir(&runs).unwrap().next().is_none());
}
