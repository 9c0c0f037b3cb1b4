//! The run lifecycle through the real binary: a full disk, starts that fail, concurrent runs
//! into one output directory, Ctrl-C on a demo without dashboard, and user-facing text
//! without Rust Debug formatting. Each case asserts the manifest's state, failure reason and
//! the exit code.

use super::faults_durable::SmallDisk;
use super::{free_port_udp, no_panic, scandaq, sim_dir};
use crate::wait_for as wait_until;
use scandaq::acquire::live::LiveHandles;
use scandaq_core::run_state::{FailureReason, RunMode, RunState, StopReason};
use scandaq_fpga_sim::BenchConfig;
use scandaq_fpga_sim::stream::{StreamConfig, Transport, stream};
use scandaq_sinks::Manifest;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The only run directory under `out`.
fn only_run(out: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("run-"))
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

/// Waits for the run under `out` to say `running` (its inputs are listening): the readiness
/// signal, instead of a fixed sleep.
fn wait_running(out: &Path) -> PathBuf {
    wait_until(
        "the run's manifest to say running",
        Duration::from_secs(60),
        || {
            out.is_dir()
                && std::fs::read_dir(out)
                    .unwrap()
                    .flatten()
                    .any(|e| Manifest::read(&e.path()).is_ok_and(|m| m.state == RunState::Running))
        },
    );
    only_run(out)
}

fn udp_sender(port: u16, seconds: f64, rate: f64) -> StreamConfig {
    StreamConfig::new(
        BenchConfig {
            seed: 3,
            duration_s: seconds,
            hit_rate_hz: rate,
            ..BenchConfig::default()
        },
        Transport::Udp {
            target: format!("127.0.0.1:{port}").parse().unwrap(),
        },
    )
}

#[test]
fn a_full_disk_fails_the_live_run_at_once_naming_the_path() {
    let Some(disk) = SmallDisk::mount(12) else {
        return;
    };
    let out = disk.dir.join("runs");
    let addr = free_port_udp();
    let calib = sim_dir().join("calib");
    let child = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args(["run", "--udp", &addr.to_string(), "--calib"])
        .arg(&calib)
        .args(["--duration", "60s", "--raw-archive", "--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_running(&out);
    // 20 s of 1 M hits/s: the archive fills 12 MiB within a few seconds.
    let sender = std::thread::spawn(move || stream(udp_sender(addr.port(), 20.0, 1e6)));
    let t0 = Instant::now();
    let done = child.wait_with_output().unwrap();
    let ended_after = t0.elapsed();
    let _ = sender.join();
    let stderr = String::from_utf8_lossy(&done.stderr);
    no_panic(&stderr);
    assert_eq!(done.status.code(), Some(1), "{stderr}");
    assert!(
        ended_after < Duration::from_secs(15),
        "the run went on for {ended_after:?} on a full disk (its sender sends for 20 s)"
    );
    let dir = only_run(&out);
    let m = Manifest::read(&dir).unwrap();
    assert_eq!(m.state, RunState::Failed, "{m:?}");
    assert_eq!(m.failure, Some(FailureReason::DiskFull), "{m:?}");
    assert_eq!(m.stop_reason, Some(StopReason::Failure));
    let error = m.error.clone().unwrap();
    assert!(error.contains(&dir.display().to_string()), "{error}");
    // Said at once in the stats line, and at the end in one line that names the path.
    assert!(stderr.contains("FAILED (disk_full)"), "{stderr}");
    assert!(stderr.contains("warning: disk almost full"), "{stderr}");
    let last = stderr.lines().rfind(|l| l.starts_with("error")).unwrap();
    assert!(
        last.contains("disk_full") && last.contains(&dir.display().to_string()),
        "{last}"
    );
    assert!(!dir.join("manifest.json.tmp").exists());
    assert!(
        !dir.join(scandaq_sinks::manifest::MANIFEST_RESERVE).exists(),
        "the reserve is given back"
    );
}

#[cfg(feature = "demo")]
#[test]
fn a_full_disk_fails_the_demo_and_counts_what_was_not_committed() {
    let Some(disk) = SmallDisk::mount(8) else {
        return;
    };
    let out = disk.dir.join("runs");
    let (code, _stdout, stderr) = scandaq(&[
        "demo",
        "--duration",
        "10s",
        "--rate",
        "1M",
        "--no-tui",
        "--out",
        out.to_str().unwrap(),
    ]);
    no_panic(&stderr);
    assert_eq!(code, 1, "{stderr}");
    let dir = only_run(&out);
    let m = Manifest::read(&dir).unwrap();
    assert_eq!(
        (m.state, m.failure),
        (RunState::Failed, Some(FailureReason::DiskFull))
    );
    let decoded = m.counts["hits_decoded"];
    assert!(
        m.losses.get("uncommitted_after_failure") > 0,
        "{:?}",
        m.losses
    );
    assert_eq!(
        m.counts["singles_written"] + m.losses.get("uncommitted_after_failure"),
        decoded
            - m.losses
                .sum_of(&["no_tdc_calibration", "no_energy_calibration", "late_hit"]),
        "every decoded hit is written or counted"
    );
    assert!(stderr.contains("scandaq recover"), "{stderr}");
}

#[test]
fn a_port_in_use_fails_the_start_and_leaves_a_failed_run() {
    let tmp = tempfile::tempdir().unwrap();
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let out = tmp.path().join("runs");
    let (code, _stdout, stderr) = scandaq(&[
        "run",
        "--udp",
        &addr.to_string(),
        "--no-calib",
        "--duration",
        "5s",
        "--out",
        out.to_str().unwrap(),
    ]);
    no_panic(&stderr);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen for UDP on {addr}")),
        "{stderr}"
    );
    let dir = only_run(&out);
    let m = Manifest::read(&dir).unwrap();
    assert_eq!(
        (m.state, m.failure),
        (RunState::Failed, Some(FailureReason::StartFailed)),
        "{m:?}"
    );
    assert!(stderr.contains("says failed: start_failed"), "{stderr}");
    // Nothing was made that a reader could take for data.
    let tables: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".parquet") || n.contains(".sdq"))
        .collect();
    assert!(tables.is_empty(), "{tables:?}");
    drop(busy);
}

/// Names of the files under `dir` a reader could take for data.
fn data_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".parquet") || n.contains(".sdq"))
        .collect()
}

#[test]
fn a_raw_archive_that_cannot_be_opened_fails_the_start_and_leaves_a_failed_run() {
    use scandaq::acquire::live::{InputConfig, InputSpec, LiveConfig, run_live};
    use scandaq::acquire::ring::OverflowPolicy;

    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-archive.sdq");
    let out = tmp.path().join("runs");
    // The live pipeline with an archive input, as `scandaq replay` and `recover` build it.
    let live = LiveConfig {
        inputs: vec![InputConfig {
            spec: InputSpec::Archive(missing.clone()),
            allow: vec![],
            policy: OverflowPolicy::Block,
            ring_chunks: 64,
            ingest: Default::default(),
        }],
        out_dir: out.clone(),
        ..LiveConfig::default()
    };
    let calib =
        scandaq::process::calib_load::load_calibration_dir(&sim_dir().join("calib")).unwrap();
    let Err(err) = run_live(&live, &calib, LiveHandles::new(RunMode::Replay)) else {
        panic!("a run over a missing archive started and ended without an error");
    };
    let text = format!("{err:#}");
    assert!(
        text.contains(&format!("cannot open raw archive {}", missing.display())),
        "{text}"
    );
    assert!(text.contains("says failed: start_failed"), "{text}");
    let dir = only_run(&out);
    let m = Manifest::read(&dir).unwrap();
    assert_eq!(
        (m.state, m.failure, m.stop_reason),
        (
            RunState::Failed,
            Some(FailureReason::StartFailed),
            Some(StopReason::Failure)
        ),
        "{m:?}"
    );
    let error = m.error.unwrap_or_default();
    assert!(error.contains(&missing.display().to_string()), "{error}");
    assert_eq!(data_files(&dir), Vec::<String>::new());

    // `scandaq replay` checks the archive before it allocates a run: the command fails naming
    // the file, and no run directory (so nothing a reader could take for data) is made.
    let out = tmp.path().join("replayed");
    let (code, _stdout, stderr) = scandaq(&[
        "replay",
        missing.to_str().unwrap(),
        "--calib",
        sim_dir().join("calib").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    no_panic(&stderr);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot open {}", missing.display())),
        "{stderr}"
    );
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}

#[test]
fn sigterm_stops_a_live_run_like_sigint_and_commits_it() {
    let tmp = tempfile::tempdir().unwrap();
    let calib = sim_dir().join("calib");
    let udp = free_port_udp();
    let mut child = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args([
            "run",
            "--udp",
            &udp.to_string(),
            "--calib",
            calib.to_str().unwrap(),
            "--out",
            tmp.path().to_str().unwrap(),
            "--quiet",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // SIGTERM once the run is running and has singles: a stop mid-acquisition.
    let dir = crate::wait_run_running(tmp.path(), &mut child);
    let sent = stream(udp_sender(udp.port(), 0.05, 2e5)).unwrap();
    assert!(sent.hits_sent > 0);
    let socket = dir.join(scandaq::observe::control::SOCKET_NAME);
    wait_until(
        "the run to hand singles to its sink",
        Duration::from_secs(60),
        || scandaq::observe::control::status(&socket).is_ok_and(|s| s.singles > 0),
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    no_panic(&stderr);
    // Exit 0, not death by the signal: the handler turned SIGTERM into a stop request.
    assert_eq!(out.status.code(), Some(0), "{:?}: {stderr}", out.status);
    let m = Manifest::read(&dir).unwrap();
    assert!(m.complete, "a clean stop commits the run: {m:?}");
    assert_eq!(
        (m.state, m.stop_reason),
        (RunState::Stopped, Some(StopReason::StopRequested)),
        "{m:?}"
    );
    assert!(m.counts["singles_written"] > 0, "{:?}", m.counts);
    let names: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        names,
        [
            "singles-00000.parquet",
            "coincidences-00000.parquet",
            "delayed-00000.parquet"
        ]
    );
    for f in &m.files {
        assert!(dir.join(&f.path).exists(), "{}", f.path);
    }
    // The committed singles file holds every single the manifest counts.
    let file = std::fs::File::open(dir.join("singles-00000.parquet")).unwrap();
    let rows = parquet::file::reader::FileReader::metadata(
        &parquet::file::reader::SerializedFileReader::new(file).unwrap(),
    )
    .file_metadata()
    .num_rows();
    assert_eq!(rows as u64, m.counts["singles_written"]);
}

#[cfg(feature = "demo")]
#[test]
fn concurrent_runs_into_one_directory_get_distinct_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_scandaq"))
                .args(["demo", "--duration", "200ms", "--seed"])
                .arg(i.to_string())
                .args(["--no-tui", "--out"])
                .arg(&out)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{stderr}");
    }
    let mut runs: Vec<u64> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
        .map(|e| {
            let m = Manifest::read(&e.path()).unwrap();
            assert_eq!(m.state, RunState::Stopped, "{m:?}");
            m.run
        })
        .collect();
    runs.sort_unstable();
    assert_eq!(runs, vec![1, 2, 3, 4]);
}

#[cfg(feature = "demo")]
#[test]
fn ctrl_c_stops_a_demo_without_dashboard_and_commits_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    // A long simulation: without a clean stop this takes minutes.
    let child = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args(["demo", "--duration", "600s", "--no-tui", "--out"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dir = wait_running(&out);
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let t0 = Instant::now();
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let m = Manifest::read(&dir).unwrap();
    assert_eq!(
        (m.state, m.stop_reason),
        (RunState::Stopped, Some(StopReason::StopRequested))
    );
    assert!(m.complete);
    let singles = m
        .files
        .iter()
        .find(|f| f.path.starts_with("singles"))
        .unwrap();
    assert_eq!(singles.rows, m.counts["singles_written"]);
}

#[test]
fn user_facing_text_has_no_rust_debug_formatting() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let addr = free_port_udp();
    let cfg = tmp.path().join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\nout = {:?}\nduration = \"1s\"\n[calibration]\nnone = true\n[[input]]\nudp = \"{addr}\"\nallow = [\"127.0.0.1\"]\n",
            out.display().to_string()
        ),
    )
    .unwrap();
    let (code, stdout, stderr) = scandaq(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("input udp {addr}, policy drop, allow 127.0.0.1")),
        "{stdout}"
    );
    assert!(stdout.contains("limits: duration 1 s"), "{stdout}");
    let (code, _, stderr) = scandaq(&["run", "--config", cfg.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 0, "{stderr}");
    let manifest = std::fs::read_to_string(only_run(&out).join("manifest.json")).unwrap();
    assert!(manifest.contains(&format!("\"udp {addr}\"")), "{manifest}");
    for text in [&stdout, &manifest] {
        for debug in ["Udp(", "Some(", "None", "Tcp(", "Archive("] {
            assert!(!text.contains(debug), "{debug} in {text}");
        }
    }
}
