//! The operator dashboard's plumbing: control socket, markers, and the real binary in tmux.
// Helpers shared with the tests that run `scandaq demo` (absent without the demo feature).
#![cfg_attr(not(feature = "demo"), allow(unused_imports, dead_code))]

use super::{col_str, read_parquet};
use crate::wait_for as wait_until;
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
#[cfg(feature = "demo")]
use scandaq::commands::demo::{DemoLive, DemoOptions, demo};
use scandaq::observe::control::{self, ControlContext, ControlServer, SOCKET_NAME};
use scandaq::observe::live_stats::{LiveStats, RunState};
use scandaq::observe::markers::SharedMarkers;
use scandaq_fpga_sim::BenchConfig;
use scandaq_sinks::Manifest;
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

#[cfg(feature = "demo")]
#[test]
fn control_socket_serves_status_subscribe_marker_and_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let stats = Arc::new(LiveStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let markers: SharedMarkers = Arc::default();
    let ctx = ControlContext {
        stats: stats.clone(),
        stop: stop.clone(),
        markers: markers.clone(),
    };
    let server = ControlServer::start_for_run(ctx);
    let live = DemoLive {
        stats: stats.clone(),
        stop: stop.clone(),
        markers,
        realtime: true,
    };
    let config = BenchConfig {
        seed: 3,
        duration_s: 60.0,
        hit_rate_hz: 2e5,
        ..BenchConfig::default()
    };
    let out2 = out.clone();
    let run = std::thread::spawn(move || {
        demo(
            config,
            &out2,
            DemoOptions {
                live: Some(live),
                ..DemoOptions::default()
            },
        )
    });
    wait_until("the control socket", Duration::from_secs(20), || {
        server.socket_path().is_some()
    });
    let socket = server.socket_path().unwrap();
    assert_eq!(socket.file_name().unwrap(), SOCKET_NAME);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is owner-only");
    // Found by looking under the output directory, as `scandaq top` does.
    assert_eq!(
        control::find_socket(None, std::slice::from_ref(&out)).unwrap(),
        socket
    );

    // A viewer that subscribes and never reads must not hold anything up.
    let mut stuck = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    writeln!(stuck, "{}", json!({"cmd": "subscribe"})).unwrap();

    wait_until("singles", Duration::from_secs(20), || {
        control::status(&socket).unwrap().singles > 0
    });
    let s = control::status(&socket).unwrap();
    assert_eq!(s.state, RunState::Running);
    assert_eq!(s.info.mode, "demo");
    let mut sub = control::Subscription::open(&socket).unwrap();
    let a = sub.next_snapshot().unwrap().unwrap();
    let mut b = a.clone();
    for _ in 0..5 {
        b = sub.next_snapshot().unwrap().unwrap();
    }
    assert!(
        b.elapsed_s > a.elapsed_s + 0.3,
        "{} {}",
        a.elapsed_s,
        b.elapsed_s
    );
    assert!(
        b.singles > a.singles,
        "rates move: {} {}",
        a.singles,
        b.singles
    );

    let reply = control::request(&socket, &json!({"cmd": "marker", "text": "beam on"})).unwrap();
    assert_eq!(reply["marker"]["seq"], 1);
    assert!(reply["marker"]["t_ps"].as_i64().unwrap() > 0);
    let bad = format!(
        "{:#}",
        control::request(&socket, &json!({"cmd": "rm -rf"})).unwrap_err()
    );
    assert!(bad.contains("unknown command \"rm -rf\""), "{bad}");
    assert!(!bad.contains("Some("), "no Rust Debug text: {bad}");

    control::request(&socket, &json!({"cmd": "stop"})).unwrap();
    let summary = run.join().unwrap().unwrap();
    let s = control::status(&socket).unwrap();
    assert_eq!(s.state, RunState::Stopped);
    server.shutdown();
    assert!(!socket.exists(), "the socket file is removed");
    drop(stuck);

    let m = Manifest::read(&summary.dir).unwrap();
    assert_eq!(m.stop_reason.map(|r| r.name()), Some("stop requested"));
    assert!(m.complete);
    assert!(
        m.files
            .iter()
            .any(|f| f.path == "markers.parquet" && f.rows == 1)
    );
    let (batches, kv) = read_parquet(&summary.dir.join("markers.parquet"));
    assert_eq!(kv.get("scandaq.table").map(String::as_str), Some("markers"));
    assert_eq!(col_str(&batches, "text"), vec!["beam on"]);
    assert_eq!(col_str(&batches, "source"), vec!["ctl"]);
    let t = batches[0].column_by_name("t_ps").unwrap();
    assert!(t.as_primitive::<Int64Type>().value(0) > 0);
}

fn tmux(args: &[&str]) -> String {
    let o = Command::new("tmux").args(args).output().unwrap();
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn pane(session: &str) -> String {
    tmux(&["capture-pane", "-p", "-t", session])
}

fn singles_on_screen(screen: &str) -> Option<f64> {
    let i = screen.find("│ singles ")? + "│ singles ".len();
    let rest: Vec<&str> = screen[i..].split_whitespace().take(2).collect();
    let n: f64 = rest.first()?.parse().ok()?;
    Some(match rest.get(1) {
        Some(&"M") => n * 1e6,
        Some(&"k") => n * 1e3,
        _ => n,
    })
}

/// Starts `cmd` in a detached 100x30 tmux session named `name`.
fn start_session(name: &str, cmd: &str) {
    tmux(&[
        "new-session",
        "-d",
        "-s",
        name,
        "-x",
        "100",
        "-y",
        "30",
        cmd,
    ]);
}

struct Session(String);
impl Drop for Session {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.0]);
    }
}

fn wait_screen(session: &str, what: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = pane(session);
        if s.contains(what) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what:?} on the screen:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_dir(out: &Path) -> PathBuf {
    std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("run-"))
        .unwrap()
}

#[cfg(feature = "demo")]
/// Drives the real binary in tmux: `scandaq demo` shows the dashboard, the rates move,
/// `scandaq top` attached to it shows the same run and can be killed without harm, `m`
/// writes a marker, `q` asks and `y` stops and quits, the terminal is restored.
#[test]
fn demo_dashboard_in_tmux_marker_quit_and_top() {
    if Command::new("tmux").arg("-V").output().is_err() {
        crate::skip_unless_ci("tmux is not installed (apt-get install tmux)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let bin = env!("CARGO_BIN_EXE_scandaq");
    let id = std::process::id();
    let demo = Session(format!("scandaq-demo-{id}"));
    let cmd = format!(
        "{bin} demo --duration 120s --rate 200k --out {}; echo SCANDAQ-EXIT=$?; sleep 60",
        out.display()
    );
    start_session(&demo.0, &cmd);
    let s1 = wait_screen(&demo.0, "RUNNING", 60);
    assert!(s1.contains("fpga-sim (in-pro"), "{s1}");
    let a = singles_on_screen(&s1);
    let mut s2 = String::new();
    super::wait_for("the singles count to move", Duration::from_secs(60), || {
        s2 = pane(&demo.0);
        matches!((a, singles_on_screen(&s2)), (Some(a), Some(b)) if b > a)
    });
    let b = singles_on_screen(&s2);
    assert_eq!(
        tmux(&["display", "-p", "-t", &demo.0, "#{alternate_on}"]).trim(),
        "1"
    );

    // `scandaq top` attached to the same run shows its number and state.
    let dir = run_dir(&out);
    let top = Session(format!("scandaq-top-{id}"));
    let top_cmd = format!("{bin} top {}", dir.display());
    start_session(&top.0, &top_cmd);
    let t = wait_screen(&top.0, "RUNNING", 30);
    assert!(t.contains("run 000001"), "{t}");
    assert!(t.contains("fpga-sim (in-pro"), "{t}");
    // Killing the viewer does not disturb the run: its session is gone, and the run's
    // own dashboard still says RUNNING with a singles count that keeps moving.
    drop(top);
    assert!(
        !tmux(&["list-sessions", "-F", "#{session_name}"])
            .lines()
            .any(|l| l == format!("scandaq-top-{id}")),
        "the viewer's session is gone"
    );
    let mut s3 = String::new();
    super::wait_for(
        "the singles count to move on",
        Duration::from_secs(60),
        || {
            s3 = pane(&demo.0);
            assert!(s3.contains("RUNNING"), "{s3}");
            singles_on_screen(&s3) > b
        },
    );

    tmux(&["send-keys", "-t", &demo.0, "m"]);
    wait_screen(
        &demo.0,
        "marker 1 \"operator marker 1\" at detector time",
        10,
    );
    tmux(&["send-keys", "-t", &demo.0, "q"]);
    wait_screen(&demo.0, "Stop it and quit?", 10);
    tmux(&["send-keys", "-t", &demo.0, "y"]);
    let end = wait_screen(&demo.0, "SCANDAQ-EXIT=", 60);
    assert!(end.contains("SCANDAQ-EXIT=0"), "{end}");
    assert!(end.contains("markers.parquet (1 rows"), "{end}");
    // Restored: main screen, the summary on it, no dashboard left over.
    assert_eq!(
        tmux(&["display", "-p", "-t", &demo.0, "#{alternate_on}"]).trim(),
        "0"
    );
    assert!(!end.contains("┌ sources"), "{end}");

    let m = Manifest::read(&dir).unwrap();
    assert_eq!(m.stop_reason.map(|r| r.name()), Some("stop requested"));
    let (batches, _) = read_parquet(&dir.join("markers.parquet"));
    assert_eq!(col_str(&batches, "text"), vec!["operator marker 1"]);
    assert_eq!(col_str(&batches, "source"), vec!["dashboard"]);
    assert!(!dir.join(SOCKET_NAME).exists());
}

/// `scandaq top` attached to a real `scandaq run` fed by fpga-sim over UDP with lost
/// packets: the viewer shows the counters `scandaq ctl status` reports (singles, the
/// dropped-data total and its reason), and killing the viewer does not disturb the run,
/// which, stopped over its control socket afterwards, completes with every board's hits
/// accounted for.
#[test]
fn top_attached_to_a_udp_run_shows_its_counters_and_can_be_killed() {
    if Command::new("tmux").arg("-V").output().is_err() {
        crate::skip_unless_ci("tmux is not installed (apt-get install tmux)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let bin = env!("CARGO_BIN_EXE_scandaq");
    let port = crate::free_port_udp().port();
    let cfg = tmp.path().join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\nout = {:?}\nduration = \"20m\"\nstop_at_end_of_stream = false\n\
             [calibration]\ndir = {:?}\n[[input]]\nudp = \"127.0.0.1:{port}\"\n",
            out.display().to_string(),
            super::sim_dir().join("calib").display().to_string(),
        ),
    )
    .unwrap();
    let mut run = Command::new(bin)
        .args(["run", "--config", cfg.to_str().unwrap(), "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let dir = super::wait_run_running(&out, &mut run);
    wait_until("the run's control socket", Duration::from_secs(60), || {
        dir.join(SOCKET_NAME).exists()
    });
    let id = std::process::id();
    let top = Session(format!("scandaq-top-run-{id}"));
    let top_cmd = format!("{bin} top {}", dir.display());
    start_session(&top.0, &top_cmd);
    wait_screen(&top.0, "RUNNING", 30);

    // Two boards at 200 k hits/s for 2 s, 1 % of the packets lost.
    let sent_dir = tmp.path().join("sender");
    let config = scandaq_fpga_sim::stream::StreamConfig {
        boards: 2,
        faults: scandaq_fpga_sim::stream::Faults {
            lose_packets: 0.01,
            ..Default::default()
        },
        out_dir: Some(sent_dir),
        ..scandaq_fpga_sim::stream::StreamConfig::new(
            BenchConfig {
                seed: 5,
                duration_s: 2.0,
                hit_rate_hz: 2e5,
                ..BenchConfig::default()
            },
            scandaq_fpga_sim::stream::Transport::Udp {
                target: format!("127.0.0.1:{port}").parse().unwrap(),
            },
        )
    };
    let sent = scandaq_fpga_sim::stream::stream(config).unwrap();
    let lost = sent.faults.lost_packets;
    assert!(lost > 0);

    // Everything has arrived; the counters stand still until the run is stopped.
    let socket = dir.join(SOCKET_NAME);
    wait_until("every packet counted", Duration::from_secs(60), || {
        control::request(&socket, &json!({"cmd": "status"}))
            .map(|s| {
                let boards = s["snapshot"]["inputs"][0]["boards"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                boards.len() == 2 && boards.iter().all(|b| b["ended"].as_bool() == Some(true))
            })
            .unwrap_or(false)
    });
    // Every board's hits decoded (the sender's truth), then the viewer and `ctl status`
    // agree: polled together until top's refresh shows what ctl says.
    let expected: Vec<(u32, u64)> = sent
        .boards
        .iter()
        .map(|b| (b.source_id, b.hits_sent - b.faults.lost_hits))
        .collect();
    wait_until(
        "every board's hits decoded",
        Duration::from_secs(60),
        || {
            control::status(&socket).is_ok_and(|s| {
                expected.iter().all(|&(id, n)| {
                    s.boards_decoded
                        .iter()
                        .any(|b| b.source_id == id && b.hits_decoded == n)
                })
            })
        },
    );
    let (mut screen, mut singles, mut missing) = (String::new(), 0.0, 0);
    wait_until(
        "top to show what ctl status says",
        Duration::from_secs(60),
        || {
            let reply = control::request(&socket, &json!({"cmd": "status"})).unwrap();
            let status = &reply["snapshot"];
            missing = status["inputs"][0]["boards"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["packets_missing"].as_u64().unwrap())
                .sum();
            singles = status["singles"].as_u64().unwrap() as f64;
            screen = pane(&top.0);
            screen.contains(&format!("DROPPED {missing}"))
                && singles_on_screen(&screen)
                    .is_some_and(|shown| (shown - singles).abs() <= singles * 1e-3 + 1.0)
        },
    );
    assert_eq!(missing, lost);
    assert!(
        screen.contains(&format!("packet_gaps {missing}")),
        "{screen}"
    );
    assert!(singles > 0.0);
    assert!(screen.contains("run 000001"), "{screen}");
    // The run's own energy window (the default 400-650 keV), sent over the socket.
    assert!(screen.contains("window 400-650"), "{screen}");

    // Killing the viewer does not disturb the run: still running, it stops when asked,
    // with every hit accounted for, per board.
    drop(top);
    let reply = control::request(&socket, &json!({"cmd": "status"})).unwrap();
    assert_eq!(reply["snapshot"]["state"], "running", "{reply}");
    control::request(&socket, &json!({"cmd": "stop"})).unwrap();
    let status = run.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let m = Manifest::read(&dir).unwrap();
    assert_eq!(m.stop_reason.map(|r| r.name()), Some("stop requested"));
    for b in &sent.boards {
        let id = b.source_id;
        assert_eq!(
            m.counts[&format!("board.{id}.hits_decoded")],
            b.hits_sent - b.faults.lost_hits,
            "board {id}"
        );
    }
}

/// `scandaq ctl` and `scandaq top` without a terminal, and clear errors with no run.
#[test]
fn ctl_and_top_without_a_run_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_scandaq");
    let o = Command::new(bin)
        .args(["ctl", "status", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("no running acquisition found"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let o = Command::new(bin)
        .args(["top"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("neither a control socket nor a run directory"),
        "{err}"
    );
}

/// The number (sign, digits, point) right after the first `marker` on the screen.
fn number_after(screen: &str, marker: &str) -> Option<f64> {
    let i = screen.find(marker)? + marker.len();
    let n: String = screen[i..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
        .collect();
    n.parse().ok()
}

/// The screen line that starts with `label` (after spaces).
fn line_starting<'s>(screen: &'s str, label: &str) -> Option<&'s str> {
    screen.lines().find(|l| l.trim_start().starts_with(label))
}

#[cfg(feature = "demo")]
/// Issue 17, "the dashboard must not mislead", through the real binary in tmux: the
/// coincidence panel's Δt FWHM, from the pairs the demo really sorts, is the simulator's
/// CTR and its peak sits at 0 (point source centred between the modules); the spectrum
/// marks the run's own energy window (`--energy-window 350:700`) with the share of the
/// snapshot's counts in it; `l` switches to a log scale; singles, prompts and delayeds
/// have a rate history; the sink line shows the disk's free space (as `df` says) and a
/// time to full; after `s` the header keeps what the committed singles files hold.
#[test]
fn demo_dashboard_shows_the_true_ctr_the_runs_window_rates_disk_and_final_figures() {
    if Command::new("tmux").arg("-V").output().is_err() {
        crate::skip_unless_ci("tmux is not installed (apt-get install tmux)");
        return;
    }
    // Enough prompts for a stable peak: 30 000 pairs.
    let (_tmp, out, session, socket) = demo_in_tmux("dash17", "--energy-window 350:700", 30_000);

    // 1. Δt: FWHM = the simulated CTR (the manifest's, which the simulator was given), peak
    // at 0.
    let ctr = Manifest::read(&run_dir(&out)).unwrap().ctr_fwhm_ps.unwrap() as f64;
    assert_eq!(ctr, BenchConfig::default().ctr_fwhm_ps);
    let screen = wait_screen(&session.0, "Δt FWHM", 10);
    let fwhm = number_after(&screen, "Δt FWHM ").unwrap_or_else(|| panic!("{screen}"));
    let peak = number_after(&screen, "peak at ").unwrap_or_else(|| panic!("{screen}"));
    assert!(
        (fwhm - ctr).abs() < 0.15 * ctr,
        "Δt FWHM {fwhm} ps on screen, simulated CTR {ctr} ps:\n{screen}"
    );
    assert!(peak.abs() < 0.15 * ctr, "peak at {peak} ps:\n{screen}");
    assert!(screen.contains("Δt = t(low mod) − t(high"), "{screen}");

    // 2. The run's window, and the share of the snapshot's spectrum in it (counted here).
    let mut shown = (0.0, 0.0);
    wait_until(
        "the window's share to match ctl status",
        Duration::from_secs(30),
        || {
            let s = control::status(&socket).unwrap();
            let total: u64 = s.energy_bins.iter().sum();
            let inside: u64 = s.energy_bins[350..700].iter().sum();
            let expected = 100.0 * inside as f64 / total as f64;
            let screen = pane(&session.0);
            let on_screen = number_after(&screen, "window 350-700: ");
            shown = (on_screen.unwrap_or(-1.0), expected);
            on_screen.is_some_and(|p| (p - expected).abs() <= 1.0)
        },
    );
    // Most singles are dark counts far below the window; some are in it, not all.
    assert!(shown.1 > 0.5 && shown.1 < 99.5, "{shown:?}");
    assert!(!pane(&session.0).contains("425"), "no built-in window");

    // 3. `l`: log scale.
    tmux(&["send-keys", "-t", &session.0, "l"]);
    let screen = wait_screen(&session.0, "keV, log", 10);
    assert!(
        screen.contains("l log"),
        "the key is on the help line:\n{screen}"
    );

    // 4. Rate history over the run: singles, prompts and delayeds, each with a rate.
    for label in ["singles ", "prompts ", "delayed "] {
        let line = line_starting(&screen, label).unwrap_or_else(|| panic!("{label}\n{screen}"));
        assert!(
            line.contains("/s") && !line.contains("not sorted"),
            "{line}"
        );
    }

    // 5. Free space as `df` reports it for the output directory, and a time to full.
    let df = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(&out)
        .output()
        .unwrap();
    let avail_gb: f64 = String::from_utf8_lossy(&df.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse::<f64>()
        .unwrap()
        / 1e9;
    let disk_gb = number_after(&screen, "disk ").unwrap_or_else(|| panic!("{screen}"));
    let unit_gb = if screen.contains(&format!("disk {disk_gb} MB")) {
        1e-3
    } else {
        1.0
    };
    assert!(
        (disk_gb * unit_gb - avail_gb).abs() <= 0.05 * avail_gb + 1.0,
        "disk {disk_gb} on screen, df says {avail_gb:.1} GB:\n{screen}"
    );
    assert!(screen.contains(" free, full in "), "{screen}");

    // 6. Stop: the header keeps what the committed PET tables hold.
    stop_and_check_the_written_figure(&session.0, &out, 1_000_000);
}

#[cfg(feature = "demo")]
/// A 300 s demo at 300 k singles/s with `extra` flags, in a tmux session named after `tag`,
/// running and with at least `prompts` prompts sorted; gives the temporary directory (keep it),
/// the output directory, the session and the control socket.
fn demo_in_tmux(
    tag: &str,
    extra: &str,
    prompts: u64,
) -> (tempfile::TempDir, PathBuf, Session, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let bin = env!("CARGO_BIN_EXE_scandaq");
    let session = Session(format!("scandaq-{tag}-{}", std::process::id()));
    let cmd = format!(
        "{bin} demo --duration 300s --rate 300k {extra} --out {}; \
         echo SCANDAQ-EXIT=$?; sleep 60",
        out.display()
    );
    start_session(&session.0, &cmd);
    wait_screen(&session.0, "RUNNING", 60);
    let socket = run_dir(&out).join(SOCKET_NAME);
    wait_until("the control socket", Duration::from_secs(30), || {
        socket.exists()
    });
    wait_until(
        &format!("{prompts} prompts"),
        Duration::from_secs(240),
        || {
            control::status(&socket)
                .ok()
                .and_then(|s| s.coincidences)
                .is_some_and(|c| c.prompts >= prompts)
        },
    );
    (tmp, out, session, socket)
}

#[cfg(feature = "demo")]
/// Presses `s`, waits for the final manifest and checks the header's "written" figure equals
/// the committed singles, prompt and delayed files (at least `min_bytes`), then quits; gives
/// the final manifest.
fn stop_and_check_the_written_figure(session: &str, out: &Path, min_bytes: u64) -> Manifest {
    tmux(&["send-keys", "-t", session, "s"]);
    wait_screen(session, "STOPPED", 60);
    let dir = run_dir(out);
    wait_until("the final manifest", Duration::from_secs(60), || {
        Manifest::read(&dir).is_ok_and(|m| m.complete)
    });
    let m = Manifest::read(&dir).unwrap();
    let table_bytes: u64 = m
        .files
        .iter()
        .filter(|f| {
            ["singles", "coincidences", "delayed"]
                .iter()
                .any(|t| f.path.starts_with(t))
        })
        .map(|f| f.bytes)
        .sum();
    assert!(table_bytes >= min_bytes, "{:?}", m.files);
    let written = format!("written {:.1} MB", table_bytes as f64 / 1e6);
    let screen = wait_screen(session, &written, 10);
    assert!(screen.contains("STOPPED"), "{screen}");
    tmux(&["send-keys", "-t", session, "q"]);
    let end = wait_screen(session, "SCANDAQ-EXIT=", 60);
    assert!(end.contains("SCANDAQ-EXIT=0"), "{end}");
    m
}

#[cfg(feature = "demo")]
#[test]
fn a_coincidences_only_demo_shows_the_coincidence_files_as_written() {
    if Command::new("tmux").arg("-V").output().is_err() {
        crate::skip_unless_ci("tmux is not installed (apt-get install tmux)");
        return;
    }
    let (_tmp, out, session, _) = demo_in_tmux("dash-conly", "--coincidences-only", 20_000);
    // No singles table: the whole figure is the prompt and delayed files.
    let m = stop_and_check_the_written_figure(&session.0, &out, 100_000);
    assert!(
        !m.files.iter().any(|f| f.path.starts_with("singles")),
        "{:?}",
        m.files
    );
}
