//! The scandaq crate's integration tests: one test binary, one module per area (the files in
//! daq/tests/<area>/mod.rs, listed at the end), and the helpers they share (the real binary,
//! Parquet readers, the simulator's bench run with its ground truth, readiness waits).
//! Expected values come from the simulator's truth, third-party files (../shared/data) or
//! real clients, never from the code under test.

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int64Type, UInt16Type, UInt32Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use scandaq::commands::replay::{ReplayOptions, replay};
use scandaq::process::calib_load::{load_calibration_dir, load_petsys_config};
use scandaq_core::hit_flags;
use scandaq_fpga_sim::{BenchConfig, write_bench_files};
use scandaq_sinks::Manifest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A UDP address on the loopback nobody listens on (bound, read, released).
fn free_port_udp() -> std::net::SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Simulated jitter of one single: CTR / (2.355 * sqrt 2).
fn jitter_sigma_ps(c: &BenchConfig) -> f64 {
    c.ctr_fwhm_ps / (2.355 * 2f64.sqrt())
}

fn bench_config() -> BenchConfig {
    BenchConfig {
        seed: 11,
        duration_s: 5.0,
        hit_rate_hz: 1e6,
        ..BenchConfig::default()
    }
    .near_wrap()
}

/// The 5 s bench simulation, written once per test binary.
fn sim_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = per_process_dir("sim");
        write_bench_files(bench_config(), &dir).unwrap();
        dir
    })
}

/// A folder for data written once per test process, in cargo's scratch folder for this
/// package's integration tests (`CARGO_TARGET_TMPDIR`), named by the process id. A `static`
/// is never dropped, so a `TempDir` held in one leaked ~90 MB into /tmp on every run of this
/// binary; instead the folders of processes that have ended are removed here.
fn per_process_dir(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("daq-tests");
    std::fs::create_dir_all(&root).unwrap();
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        let file_name = entry.file_name().to_string_lossy().to_string();
        let pid = file_name
            .split('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = root.join(format!("{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read_parquet(path: &Path) -> (Vec<RecordBatch>, BTreeMap<String, String>) {
    let file = std::fs::File::open(path).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let kv = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|e| (e.key.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    (builder.build().unwrap().map(|b| b.unwrap()).collect(), kv)
}

fn col_i64(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}
fn col_u32(batches: &[RecordBatch], name: &str) -> Vec<u32> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<UInt32Type>()
                .values()
                .to_vec()
        })
        .collect()
}
fn col_f32(batches: &[RecordBatch], name: &str) -> Vec<f32> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<Float32Type>()
                .values()
                .to_vec()
        })
        .collect()
}
fn col_u16(batches: &[RecordBatch], name: &str) -> Vec<u16> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(name)
                .unwrap()
                .as_primitive::<UInt16Type>()
                .values()
                .to_vec()
        })
        .collect()
}
fn col_str(batches: &[RecordBatch], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let arr = b.column_by_name(name).unwrap();
        let s = arrow_array::cast::AsArray::as_any_dictionary_opt(arr.as_ref())
            .map(|d| {
                let values = d.values().as_string::<i32>().clone();
                d.normalized_keys()
                    .iter()
                    .map(|&k| values.value(k).to_string())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_else(|| {
                arr.as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap_or("").to_string())
                    .collect()
            });
        out.extend(s);
    }
    out
}

struct Truth {
    t: Vec<i64>,
    channel: Vec<u32>,
    energy: Vec<f32>,
    kind: Vec<String>,
}

fn truth() -> &'static Truth {
    static T: OnceLock<Truth> = OnceLock::new();
    T.get_or_init(|| {
        let (b, _) = read_parquet(&sim_dir().join("truth.parquet"));
        Truth {
            t: col_i64(&b, "t_true_ps"),
            channel: col_u32(&b, "channel"),
            energy: col_f32(&b, "e_true_kev"),
            kind: col_str(&b, "kind"),
        }
    })
}

fn run_files(summary_dir: &Path) -> (Vec<RecordBatch>, BTreeMap<String, String>, Manifest) {
    let manifest = Manifest::read(summary_dir).unwrap();
    let (b, kv) = read_parquet(&summary_dir.join(&manifest.files[0].path));
    (b, kv, manifest)
}

/// Pairs output singles with truth rows channel by channel, in time order: returns
/// (truth index, single index) pairs. Dead time keeps hits on one channel hundreds of ns apart,
/// so order within a channel identifies each hit.
fn pair_by_channel(
    t_true: &[i64],
    ch_true: &[u32],
    t_out: &[i64],
    ch_out: &[u32],
) -> Vec<(usize, usize)> {
    let mut by_ch: BTreeMap<u32, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (i, &c) in ch_true.iter().enumerate() {
        by_ch.entry(c).or_default().0.push(i);
    }
    for (i, &c) in ch_out.iter().enumerate() {
        by_ch.entry(c).or_default().1.push(i);
    }
    let mut pairs = Vec::new();
    for (c, (mut a, mut b)) in by_ch {
        assert_eq!(
            a.len(),
            b.len(),
            "channel {c}: {} true hits, {} singles",
            a.len(),
            b.len()
        );
        a.sort_by_key(|&i| t_true[i]);
        b.sort_by_key(|&i| t_out[i]);
        pairs.extend(a.into_iter().zip(b));
    }
    pairs
}

fn scandaq(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args(args)
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    (
        code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
}

/// Polls `ready` every 20 ms until it holds; panics naming `what` after `timeout`. The
/// readiness wait every test here uses instead of a fixed sleep.
fn wait_for(what: &str, timeout: std::time::Duration, mut ready: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !ready() {
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Waits until the run under `out` says `running` in its manifest (its inputs are bound and
/// listening), failing at once if `child` exits first; returns the run directory.
fn wait_run_running(out: &Path, child: &mut std::process::Child) -> PathBuf {
    let mut dir = None;
    wait_for(
        "the run's manifest to say running",
        std::time::Duration::from_secs(120),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the run exited ({status}) before it said running");
            }
            dir = std::fs::read_dir(out).ok().and_then(|entries| {
                entries.flatten().map(|e| e.path()).find(|p| {
                    Manifest::read(p)
                        .is_ok_and(|m| m.state == scandaq_core::run_state::RunState::Running)
                })
            });
            dir.is_some()
        },
    );
    dir.expect("found above")
}

/// `fpga-sim` beside the `scandaq` binary (built by `cargo test --workspace`, as CI runs).
fn fpga_sim_exe() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_scandaq"))
        .with_file_name(format!("fpga-sim{}", std::env::consts::EXE_SUFFIX))
}

/// Writes a simulated run with the `fpga-sim` binary (`args` after `--out DIR`), or when it is
/// not built, with the library function it calls (`fallback`). Returns the `.rawf`.
fn simulate(dir: &Path, preset: &str, args: &[&str], fallback: impl FnOnce(&Path)) -> PathBuf {
    let exe = fpga_sim_exe();
    if exe.is_file() {
        let out = std::process::Command::new(&exe)
            .args(["--preset", preset, "--out", dir.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fpga-sim failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!(
            "note: {} not built (cargo build -p scandaq-fpga-sim); writing the {preset} files in process",
            exe.display()
        );
        fallback(dir);
    }
    dir.join(format!("{preset}.rawf"))
}

/// A live `scandaq` run started with `args`: the child, the rest of its stderr, and what it
/// said up to `running:` (or its first error), read before anything is sent to it.
struct LiveRunChild {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
    said: String,
}

/// Starts `scandaq ARGS` (stdout discarded) and waits for its `running:` line.
fn spawn_live_run(args: &[&str]) -> LiveRunChild {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.contains("running:") || line.contains("error") {
            break;
        }
    }
    LiveRunChild { child, lines, said }
}

impl LiveRunChild {
    /// Waits for the run to end and asserts it succeeded (its stderr in the message).
    fn wait_success(self) {
        let LiveRunChild {
            mut child,
            lines,
            said,
        } = self;
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        assert!(child.wait().unwrap().success(), "{said}{}", rest.join("\n"));
    }

    /// Kills the run (when the test cannot go on).
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when `python3 -c "import MODULES"` works (e.g. `"mne, pyarrow"`).
fn python_has(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `python3 scripts/SCRIPT ARGS...` and asserts it exits 0; returns its stdout and
/// stderr together.
fn python_script<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(script);
    let out = Command::new("python3")
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script}: {text}");
    text
}

/// The fpga-sim ring (`config`) written under `dir/ring` and replayed by `scandaq replay` into
/// `dir/runs`; returns (the simulation directory, the run directory).
fn replay_ring(dir: &Path, config: scandaq_fpga_sim::ring::RingConfig) -> (PathBuf, PathBuf) {
    let sim = dir.join("ring");
    scandaq_fpga_sim::ring::write_ring_files(config, &sim).unwrap();
    let out = dir.join("runs");
    let (code, stdout, stderr) = scandaq(&[
        "replay",
        sim.join("ring.rawf").to_str().unwrap(),
        "--calib",
        sim.join("calib").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    (sim, out.join("run-000001"))
}

/// A prerequisite of a test is missing (a tool, a Python package): under CI (env `CI` set)
/// the test fails naming it; elsewhere it prints `SKIPPED (not under CI): why` and the caller
/// returns.
fn skip_unless_ci(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{why} (CI installs it; the test cannot run without it)"
    );
    println!("SKIPPED (not under CI): {why}");
}

// ---------------------------------------------------------------------------------------------
// Live acquisition: fpga-sim streams over UDP/TCP, scandaq runs, counts are compared with what
// the simulator says it sent and injected.

// ---------------------------------------------------------------------------------------------
// Crash safety and exports: the real binary is SIGKILLed at random points and `scandaq
// recover` finalises what it left; a demo run is exported to CASToR and read back; a PETLINK
// run is refused.

#[path = "meg/mod.rs"]
mod meg;

#[path = "us/mod.rs"]
mod us;

#[path = "lifecycle/mod.rs"]
mod lifecycle;
#[path = "stream_panels/mod.rs"]
mod stream_panels;

#[path = "faults_durable/mod.rs"]
mod faults_durable;
#[path = "faults_frames/mod.rs"]
mod faults_frames;
#[path = "faults_ingest/mod.rs"]
mod faults_ingest;

#[path = "architecture/mod.rs"]
mod architecture;
#[path = "calib_gaps/mod.rs"]
mod calib_gaps;
#[path = "petsird/mod.rs"]
mod petsird;
#[path = "petsys_peer/mod.rs"]
mod petsys_peer;
#[path = "petsys_semantics/mod.rs"]
mod petsys_semantics;

#[path = "bids/mod.rs"]
mod bids;
#[path = "calibration/mod.rs"]
mod calibration;
#[path = "cli_grammar/mod.rs"]
mod cli_grammar;
#[path = "cluster/mod.rs"]
mod cluster;
#[path = "coincidences/mod.rs"]
mod coincidences;
#[path = "crash_safety/mod.rs"]
#[cfg(feature = "demo")] // every test here runs `scandaq demo`
mod crash_safety;
#[path = "dashboard/mod.rs"]
mod dashboard;
#[path = "live/mod.rs"]
mod live;
#[path = "petlink/mod.rs"]
mod petlink;
#[path = "replay/mod.rs"]
mod replay;
#[path = "report/mod.rs"]
mod report;
#[path = "rotation/mod.rs"]
mod rotation;
#[path = "run_lifecycle/mod.rs"]
mod run_lifecycle;
#[path = "singles_positions/mod.rs"]
mod singles_positions;
#[path = "time_slices/mod.rs"]
mod time_slices;
