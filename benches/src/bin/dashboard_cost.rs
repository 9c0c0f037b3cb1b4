//! Dashboard cost harness: the same acquisition with and without a dashboard watching it.
//!
//! A raw archive (`.sdq`) of a two-board bench run is generated once; then
//! `scandaq::acquire::live::run_live_with_stats` replays it (the live pipeline: ingest, rings,
//! decode/calibrate, k-way merge, singles and coincidence sinks) REPEATS times with the
//! dashboard off and on, alternating so machine load affects both alike. "On" is the
//! in-process dashboard's work exactly as `scandaq run --tui` does it: every frame (100 ms, the
//! dashboard's `FRAME`) a stats snapshot is taken, the app state updated and the whole screen
//! rendered at 200x50 through ratatui's crossterm backend; the escape sequences go to
//! `io::sink()` instead of a terminal, so the terminal emulator's own work (another process) is
//! not counted. Prints the median singles/s of each mode and the cost in percent.
//!
//! Usage: `dashboard_cost [MILLION_HITS] [REPEATS]` (defaults 20 and 5).

use ratatui::layout::Rect;
use ratatui::prelude::CrosstermBackend;
use ratatui::{Terminal, TerminalOptions, Viewport};
use scandaq::acquire::live::{InputConfig, InputSpec, LiveConfig, RunLimits, run_live_with_stats};
use scandaq::acquire::ring::OverflowPolicy;
use scandaq::observe::live_stats::LiveStats;
use scandaq::process::calib_load::load_calibration_dir;
use scandaq_fpga_sim::BenchConfig;
use scandaq_fpga_sim::stream::{StreamConfig, Transport, generate_packets};
use scandaq_sinks::archive::RawArchiveWriter;
use scandaq_tui::{App, AppOptions, render};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes the archive and the calibration; returns the archive's path.
fn prepare(dir: &Path, hits: f64) -> std::path::PathBuf {
    let rate = 5e6;
    let mut config = StreamConfig::new(
        BenchConfig {
            seed: 3,
            duration_s: hits / rate,
            hit_rate_hz: rate,
            ..BenchConfig::default()
        },
        Transport::Udp {
            target: "127.0.0.1:9".parse().expect("address"),
        },
    );
    config.boards = 2;
    config.paced = false;
    config.out_dir = Some(dir.join("sim"));
    let mut archive = RawArchiveWriter::create(dir, "bench.sdq", "{}").expect("create the archive");
    generate_packets(&config, |_, packet| {
        archive.write_packets(packet, 1).expect("write the archive");
        true
    })
    .expect("generate");
    archive.commit().expect("commit the archive");
    dir.join("bench.sdq")
}

/// The in-process dashboard's work, until `done`.
fn dashboard(stats: Arc<LiveStats>, done: Arc<AtomicBool>) -> u64 {
    let backend = CrosstermBackend::new(std::io::sink());
    let mut terminal = Terminal::with_options(
        backend,
        TerminalOptions {
            viewport: Viewport::Fixed(Rect::new(0, 0, 200, 50)),
        },
    )
    .expect("terminal");
    let mut app = App::new(AppOptions::default());
    let mut frames = 0;
    let mut next = Instant::now();
    while !done.load(Ordering::Relaxed) {
        app.update(stats.snapshot());
        terminal.draw(|f| render(f, &app)).expect("draw");
        frames += 1;
        next += scandaq_tui::term::FRAME;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    frames
}

fn main() {
    let mut args = std::env::args().skip(1);
    let million: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20.0);
    let repeats: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let tmp = tempfile::tempdir().expect("temp dir");
    let archive = prepare(tmp.path(), million * 1e6);
    let calibration =
        load_calibration_dir(&tmp.path().join("sim/calib")).expect("the simulator's calibration");
    let config = LiveConfig {
        inputs: vec![InputConfig {
            spec: InputSpec::Archive(archive),
            allow: vec![],
            policy: OverflowPolicy::Block,
            ring_chunks: 64,
            ingest: Default::default(),
        }],
        out_dir: tmp.path().join("runs"),
        limits: RunLimits::default(),
        raw_columns: false,
        raw_archive: false,
        stop_at_end_of_stream: false,
        ..LiveConfig::default()
    };
    std::fs::create_dir_all(&config.out_dir).expect("runs dir");
    let mut rates = [Vec::new(), Vec::new()];
    let mut frames_drawn = 0;
    for _ in 0..repeats {
        for (mode, with_dashboard) in [false, true].into_iter().enumerate() {
            let stats = Arc::new(LiveStats::default());
            let done = Arc::new(AtomicBool::new(false));
            let viewer = with_dashboard.then(|| {
                let (stats, done) = (stats.clone(), done.clone());
                std::thread::spawn(move || dashboard(stats, done))
            });
            let started = Instant::now();
            let summary = run_live_with_stats(
                &config,
                &calibration,
                Arc::new(AtomicBool::new(false)),
                "bench",
                stats,
            )
            .expect("run");
            let secs = started.elapsed().as_secs_f64();
            done.store(true, Ordering::Relaxed);
            if let Some(v) = viewer {
                frames_drawn += v.join().expect("dashboard thread");
            }
            assert!(summary.error.is_none(), "{:?}", summary.error);
            rates[mode].push(summary.counts.singles_written as f64 / secs);
            std::fs::remove_dir_all(&summary.dir).expect("remove the run");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let off = median(&mut rates[0]);
    let on = median(&mut rates[1]);
    println!(
        "{million} M hits, {repeats} runs per mode: dashboard off {:.2} M singles/s, on {:.2} M singles/s ({frames_drawn} frames drawn); cost {:.1} %",
        off / 1e6,
        on / 1e6,
        (1.0 - on / off) * 100.0
    );
}
