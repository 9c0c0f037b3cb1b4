//! Rendered-screen tests of the dashboard (ratatui TestBackend at 80x24 and 200x50, compared
//! with insta snapshots and checked for the words and colours that matter) and key handling.

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use scandaq_core::snapshot::{
    BoardDecodeSnapshot, BoardTransportSnapshot, InputSnapshot, RunInfo, RunState, StatsSnapshot,
};
use scandaq_core::{LossCounts, LossReason};
use scandaq_tui::app::fwhm;
use scandaq_tui::{Action, App, AppOptions, CoincidenceView, Key, View, render};

/// A two-board UDP run at about 1 M singles/s, `t` seconds in.
fn snapshot(t: f64, state: RunState, lossy: bool) -> StatsSnapshot {
    let hits = (t * 1e6) as u64;
    let mut energy_bins = vec![0u64; 2048];
    for (i, b) in energy_bins.iter_mut().enumerate().take(800) {
        let e = i as f64;
        let peak = (-((e - 511.0) / 20.0).powi(2) / 2.0).exp() * 1000.0;
        let compton = if e < 340.0 { 150.0 } else { 0.0 };
        *b = ((peak + compton) * t) as u64;
    }
    // Module 0 and 1 (channels 0-127); channel 5 dead, channel 70 hot.
    let mut channel_hits = Vec::new();
    for c in 0..128u32 {
        let n = match c {
            5 => 0,
            70 => (t * 40_000.0) as u64,
            _ => (t * (7_000.0 + 50.0 * f64::from(c % 8))) as u64,
        };
        if n > 0 {
            channel_hits.push((c, n));
        }
    }
    let mut input_losses = LossCounts::default();
    let mut decode_losses = LossCounts::default();
    let (missing, ring_dropped) = if lossy {
        input_losses.add(LossReason::CrcError, (t * 3.0) as u64);
        decode_losses.add(LossReason::NoTdcCalibration, (t * 100.0) as u64);
        ((t * 40.0) as u64, (t * 10.0) as u64)
    } else {
        (0, 0)
    };
    let board = |id: u32, share: u64| BoardTransportSnapshot {
        source_id: id,
        packets_received: (t * 2000.0) as u64 / share,
        packets_missing: missing / share,
        duplicates: 0,
        out_of_order: 0,
        payload_bytes: (t * 8e6) as u64 / share,
        ended: state == RunState::Stopped,
    };
    StatsSnapshot {
        info: RunInfo {
            run: 42,
            run_dir: "/data/scandaq-runs/run-000042".into(),
            mode: "run".into(),
            limits: vec!["duration 60 s".into()],
            energy_window_kev: Some([425.0, 650.0]),
        },
        state,
        elapsed_s: t,
        inputs: vec![InputSnapshot {
            label: "udp 0.0.0.0:5000".into(),
            packets_in: (t * 2000.0) as u64,
            bytes_in: (t * 8e6) as u64,
            losses: input_losses,
            ring_fill: if lossy { 250 } else { 3 },
            ring_capacity: 256,
            ring_dropped_packets: ring_dropped,
            ring_blocked_ms: 0,
            kernel_drops: 0,
            boards: vec![board(0, 2), board(1, 2)],
            warnings: vec![],
        }],
        boards_decoded: vec![
            BoardDecodeSnapshot {
                source_id: 0,
                frames: (t * 1000.0) as u64,
                hits_decoded: hits / 2,
                losses: decode_losses.clone(),
            },
            BoardDecodeSnapshot {
                source_id: 1,
                frames: (t * 1000.0) as u64,
                hits_decoded: hits / 2,
                losses: LossCounts::default(),
            },
        ],
        sink_rows: hits,
        sink_bytes: (t * 9e6) as u64,
        singles: hits,
        frame_bytes: (t * 8e6) as u64,
        ring_fill: 3,
        boards: 2,
        energy_bins,
        channel_hits,
        other_channel_hits: 0,
        module_energy_bins: vec![],
        coincidences: None,
        streams: vec![],
        health: Default::default(),
    }
}

fn app_with(state: RunState, lossy: bool) -> App {
    let mut app = App::new(AppOptions::default());
    for k in 1..=5 {
        let t = 10.0 + f64::from(k) * 0.25;
        let st = if k == 5 { state } else { RunState::Running };
        app.update(snapshot(t, st, lossy));
    }
    app
}

fn draw(app: &App, w: u16, h: u16) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| render(f, app)).unwrap();
    t.backend().buffer().clone()
}

fn text(b: &Buffer) -> String {
    let mut out = String::new();
    for y in 0..b.area.height {
        let mut line = String::new();
        for x in 0..b.area.width {
            line.push_str(b[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Position of the first occurrence of `needle` on screen.
fn find(b: &Buffer, needle: &str) -> Option<(u16, u16)> {
    for y in 0..b.area.height {
        let line: Vec<String> = (0..b.area.width)
            .map(|x| b[(x, y)].symbol().to_string())
            .collect();
        let joined: String = line.concat();
        if let Some(byte) = joined.find(needle) {
            // Convert the byte offset to a cell index (one symbol per cell).
            let mut acc = 0;
            for (x, s) in line.iter().enumerate() {
                if acc == byte {
                    return Some((x as u16, y));
                }
                acc += s.len();
            }
        }
    }
    None
}

const SIZES: [(u16, u16); 2] = [(80, 24), (200, 50)];

#[test]
fn healthy_run_renders_rates_spectrum_map_and_no_losses() {
    let app = app_with(RunState::Running, false);
    for (w, h) in SIZES {
        let b = draw(&app, w, h);
        let s = text(&b);
        insta::assert_snapshot!(format!("healthy_{w}x{h}"), s);
        for needle in [
            "run 000042",
            "RUNNING",
            "0:00:11",
            "dropped 0",
            "udp 0.0.0.0:5000",
            "1.00 M",
            "none",
            "window 425-650",
            "module 0 [1/2]",
            "no coincidences yet",
            "1.00 M rows/s 9.0 MB/s",
            "no warnings",
        ] {
            assert!(s.contains(needle), "{w}x{h}: {needle:?} missing in\n{s}");
        }
        assert!(!s.contains("DROPPED"), "{s}");
        // Channel 5 of module 0 is dead.
        assert!(s.contains("··"), "{s}");
        let (x, y) = find(&b, "dropped 0").unwrap();
        assert_eq!(b[(x, y)].fg, Color::Green);
    }
}

#[test]
fn lossy_run_highlights_losses_in_red_and_logs_new_reasons() {
    let app = app_with(RunState::Running, true);
    for (w, h) in SIZES {
        let b = draw(&app, w, h);
        let s = text(&b);
        insta::assert_snapshot!(format!("lossy_{w}x{h}"), s);
        let (x, y) = find(&b, "DROPPED").unwrap_or_else(|| panic!("{s}"));
        assert_eq!(b[(x, y)].fg, Color::Red, "dropped total must be red");
        let (x, y) = find(&b, "crc_error").unwrap_or_else(|| panic!("{s}"));
        assert_eq!(b[(x, y)].fg, Color::Red, "the source's losses must be red");
        // The nearly full ring is red too.
        assert!(s.contains("98%"), "{s}");
        // The log says which loss reasons appeared.
        assert!(s.contains("new loss: "), "{s}");
    }
    let log: Vec<String> = app.log_entries().map(|e| e.text.clone()).collect();
    for reason in [
        "crc_error",
        "packet_gaps",
        "ring_overflow_packets",
        "calibration gap: no_tdc_calibration",
    ] {
        assert!(
            log.iter().any(|l| l.contains(reason)),
            "{reason} not logged: {log:?}"
        );
    }
    // Logged once, not at every snapshot.
    assert_eq!(log.iter().filter(|l| l.contains("crc_error")).count(), 1);
}

#[test]
fn a_failure_and_a_filling_disk_show_at_once_in_red() {
    let mut app = app_with(RunState::Running, false);
    let mut s = snapshot(11.5, RunState::Running, false);
    s.health.disk_free_bytes = Some(300_000_000);
    s.health.disk_seconds_to_full = Some(95.0);
    s.health
        .warnings
        .push("disk full in about 95 s at the current write rate".into());
    app.update(s.clone());
    for (w, h) in SIZES {
        let b = draw(&app, w, h);
        let text = text(&b);
        let (x, y) = find(&b, "disk 300").unwrap_or_else(|| panic!("{text}"));
        assert_eq!(b[(x, y)].fg, Color::Red, "a disk 95 s from full is red");
        assert!(text.contains("full in 95 s"), "{text}");
    }
    s.elapsed_s = 11.75;
    s.state = RunState::Stopping;
    s.health.failure = Some(scandaq_core::run_state::FailureReason::DiskFull);
    s.health.error = Some(
        "singles sink: writing /data/run-000042/singles-00000.parquet: No space left on device"
            .into(),
    );
    app.update(s);
    for (w, h) in SIZES {
        let b = draw(&app, w, h);
        let text = text(&b);
        let (x, y) = find(&b, "FAILED: disk_full").unwrap_or_else(|| panic!("{text}"));
        assert_eq!(b[(x, y)].fg, Color::Red, "{text}");
    }
    let log: Vec<String> = app.log_entries().map(|e| e.text.clone()).collect();
    assert!(
        log.iter()
            .any(|l| l.starts_with("FAILED (disk_full)") && l.contains("singles-00000.parquet")),
        "{log:?}"
    );
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("disk full in about"))
            .count(),
        1,
        "{log:?}"
    );
}

#[test]
fn stopped_run_says_so() {
    let app = app_with(RunState::Stopped, false);
    for (w, h) in SIZES {
        let b = draw(&app, w, h);
        let s = text(&b);
        insta::assert_snapshot!(format!("stopped_{w}x{h}"), s);
        assert!(s.contains("STOPPED"), "{s}");
        assert!(s.contains("run ended: q exits"), "{s}");
    }
    let log: Vec<String> = app.log_entries().map(|e| e.text.clone()).collect();
    assert!(log.iter().any(|l| l == "run stopped"), "{log:?}");
    assert!(log.iter().any(|l| l.contains("board 1 ended")), "{log:?}");
}

#[test]
fn first_screen_and_overlays_render() {
    let mut app = App::new(AppOptions::default());
    let s = text(&draw(&app, 80, 24));
    assert!(
        s.contains("waiting for the first statistics snapshot"),
        "{s}"
    );
    app.update(snapshot(1.0, RunState::Running, false));
    assert_eq!(app.handle_key(Key::Char('?')), Action::None);
    let s = text(&draw(&app, 80, 24));
    assert!(s.contains("freeze / unfreeze"), "{s}");
    assert_eq!(
        app.handle_key(Key::Char('x')),
        Action::None,
        "any key closes help"
    );
    assert!(!app.help);
    assert_eq!(app.handle_key(Key::Char('q')), Action::ConfirmQuit);
    let s = text(&draw(&app, 80, 24));
    assert!(s.contains("Stop it and quit?"), "{s}");
    // Tiny terminals do not panic.
    for (w, h) in [(20, 5), (1, 1), (80, 10)] {
        draw(&app, w, h);
    }
}

#[test]
fn quit_asks_first_while_running_and_not_after() {
    let mut app = app_with(RunState::Running, false);
    assert_eq!(app.handle_key(Key::Char('q')), Action::ConfirmQuit);
    assert!(app.confirm_quit);
    assert_eq!(app.handle_key(Key::Char('n')), Action::None);
    assert!(!app.confirm_quit);
    assert_eq!(app.handle_key(Key::Char('q')), Action::ConfirmQuit);
    assert_eq!(app.handle_key(Key::Char('y')), Action::Quit);
    // Ctrl-C stops and quits without asking (like Ctrl-C on the plain `scandaq run`).
    assert_eq!(app.handle_key(Key::CtrlC), Action::Quit);

    let mut stopped = app_with(RunState::Stopped, false);
    assert_eq!(stopped.handle_key(Key::Char('q')), Action::Quit);
    assert_eq!(stopped.handle_key(Key::Char('s')), Action::None);

    let mut attached = App::new(AppOptions { attached: true });
    attached.update(snapshot(1.0, RunState::Running, false));
    assert_eq!(attached.handle_key(Key::Char('q')), Action::Quit);
}

#[test]
fn keys_stop_mark_freeze_select_and_switch_view() {
    let mut app = app_with(RunState::Running, false);
    assert_eq!(app.handle_key(Key::Char('s')), Action::Stop);
    assert_eq!(
        app.handle_key(Key::Char('m')),
        Action::Marker("operator marker 1".into())
    );
    assert_eq!(
        app.handle_key(Key::Char('m')),
        Action::Marker("operator marker 2".into())
    );

    // Freeze: new snapshots do not move the display.
    let before = app.shown().unwrap().0.elapsed_s;
    app.handle_key(Key::Char('p'));
    assert!(app.is_frozen());
    app.update(snapshot(20.0, RunState::Running, false));
    assert_eq!(app.shown().unwrap().0.elapsed_s, before);
    assert!(text(&draw(&app, 80, 24)).contains("FROZEN"));
    app.handle_key(Key::Char('p'));
    assert_eq!(app.shown().unwrap().0.elapsed_s, 20.0);

    // Modules: 0 and 1; right moves to module 1 (hot channel 70 = module 1, channel 6).
    assert_eq!(app.modules(), vec![0, 1]);
    app.handle_key(Key::Right);
    assert_eq!(app.module(), Some(1));
    let rates = app.module_rates(1);
    assert!(rates[6] > 3.0 * rates[0], "{rates:?}");
    let s = text(&draw(&app, 80, 24));
    assert!(s.contains("module 1 [2/2]") && s.contains("!!"), "{s}");
    app.handle_key(Key::Right);
    assert_eq!(app.module(), Some(0));
    app.handle_key(Key::Left);
    assert_eq!(app.module(), Some(1));
    app.handle_key(Key::Up);
    assert_eq!(app.selected_channel, 63);
    app.handle_key(Key::Down);
    assert_eq!(app.selected_channel, 0);

    app.handle_key(Key::Tab);
    assert_eq!(app.view, View::Losses);
    let s = text(&draw(&app, 80, 24));
    assert!(
        s.contains("losses by place and reason") && s.contains("no losses"),
        "{s}"
    );
    app.handle_key(Key::Tab);
    assert_eq!(app.view, View::Overview);
}

#[test]
fn rates_come_from_consecutive_snapshots() {
    let app = app_with(RunState::Running, false);
    let r = app.input_rates(0);
    assert!((r.hits - 1e6).abs() < 1e3, "{r:?}");
    assert!((r.packets - 2000.0).abs() < 1.0, "{r:?}");
    assert!((r.bytes - 8e6).abs() < 1e3, "{r:?}");
    let (singles, rows, bytes) = app.totals_rates();
    assert!((singles - 1e6).abs() < 1e3 && (rows - 1e6).abs() < 1e3 && bytes > 0.0);
    assert_eq!(app.sparkline(0).len(), 4);
}

#[test]
fn coincidence_panel_shows_fwhm_once_coincidences_exist() {
    let mut app = app_with(RunState::Running, false);
    // A triangle 0,1,2,...,10,...,1,0: FWHM = 10 bins.
    let mut bins: Vec<u64> = (0..=10).collect();
    bins.extend((0..10).rev());
    let f = fwhm(&bins, 25.0).unwrap();
    assert!((f - 250.0).abs() < 1e-9, "{f}");
    app.set_coincidences(Some(CoincidenceView {
        dt_bins: bins,
        dt_min_ps: -262.5,
        bin_ps: 25.0,
        prompt_rate: 12_345.0,
        delayed_rate: 678.0,
    }));
    let s = text(&draw(&app, 200, 50));
    assert!(s.contains("Δt FWHM 250 ps"), "{s}");
    // Bins centred on -250, -225, ..., 250 ps: the triangle's apex at 0.
    assert!(s.contains("peak at +0 ps"), "{s}");
    assert!(s.contains("prompt 12.3 k/s"), "{s}");
    assert!(!s.contains("no coincidences yet"));
}

#[test]
fn coincidence_panel_is_fed_from_the_snapshot() {
    use scandaq_core::snapshot::CoincidenceSnapshot;
    let mut app = App::new(AppOptions::default());
    // 10 000 prompts/s and 500 delayeds/s; a Gaussian time difference of sigma 85 ps
    // (FWHM 2.3548 * 85 = 200 ps) in 10 ps bins.
    let at = |t: f64| {
        let mut s = snapshot(t, RunState::Running, false);
        let mut c = CoincidenceSnapshot::new(4_000, 800);
        let tofs: Vec<i64> = (-400..=400)
            .flat_map(|x: i64| {
                let n = (1000.0 * t * (-(x as f64 / 85.0).powi(2) / 2.0).exp()) as usize;
                std::iter::repeat_n(x, n)
            })
            .collect();
        c.add_dt(tofs);
        c.prompts = (t * 10_000.0) as u64;
        c.delayeds = (t * 500.0) as u64;
        s.coincidences = Some(c);
        s
    };
    app.update(at(1.0));
    app.update(at(2.0));
    let view = app.coincidences().expect("fed from the snapshot");
    assert!((view.prompt_rate - 10_000.0).abs() < 1.0, "{view:?}");
    assert!((view.delayed_rate - 500.0).abs() < 1.0, "{view:?}");
    let fwhm = view.fwhm_ps().unwrap();
    assert!((fwhm - 200.0).abs() < 10.0, "{fwhm}");
    let s = text(&draw(&app, 200, 50));
    assert!(s.contains("prompt 10.0 k/s"), "{s}");
    // Drawn over ±4 FWHM (4 x 201 ps, to whole 10 ps bins) around 0, not the whole ±4 ns.
    assert!(s.contains("-810 ps") && s.contains("+810"), "{s}");
    assert!(s.contains("peak at +0 ps"), "{s}");
    assert!(!s.contains("no coincidences yet"));
}

#[test]
fn e_shows_the_selected_module_spectrum() {
    use scandaq_core::snapshot::{MODULE_ENERGY_BIN, MODULE_ENERGY_BINS};
    let mut app = App::new(AppOptions::default());
    let mut s = snapshot(2.0, RunState::Running, false);
    // Module 0: everything in the photopeak (511 keV); module 1: everything at 100 keV (a
    // module whose gain dropped).
    let bin = |kev: f32| (kev / MODULE_ENERGY_BIN) as usize;
    let mut m0 = vec![0u64; MODULE_ENERGY_BINS];
    m0[bin(511.0)] = 5000;
    let mut m1 = vec![0u64; MODULE_ENERGY_BINS];
    m1[bin(100.0)] = 5000;
    s.module_energy_bins = vec![(0, m0), (1, m1)];
    app.update(s);
    let all = text(&draw(&app, 200, 50));
    assert!(all.contains("energy spectrum, all channels"), "{all}");
    assert_eq!(app.handle_key(Key::Char('e')), Action::None);
    let m0 = text(&draw(&app, 200, 50));
    assert!(
        m0.contains("energy spectrum, module 0 (keV); window 425-650: 100%"),
        "{m0}"
    );
    app.handle_key(Key::Right);
    let m1 = text(&draw(&app, 200, 50));
    assert!(
        m1.contains("energy spectrum, module 1 (keV); window 425-650: 0%"),
        "{m1}"
    );
    let small = text(&draw(&app, 80, 24));
    assert!(small.contains("module 1"), "{small}");
    app.handle_key(Key::Char('e'));
    assert!(text(&draw(&app, 200, 50)).contains("energy spectrum, all channels"));
}

#[path = "stream_panels/mod.rs"]
mod stream_panels;

#[test]
fn input_warnings_reach_the_log_once() {
    let mut app = App::new(AppOptions::default());
    app.update(snapshot(1.0, RunState::Running, false));
    let warning =
        "udp 0.0.0.0:5000: rejecting packets from 10.0.0.9, which is not in the allowlist";
    for t in [1.25, 1.5] {
        let mut s = snapshot(t, RunState::Running, false);
        s.inputs[0].warnings.push(warning.into());
        app.update(s);
    }
    let log: Vec<String> = app.log_entries().map(|e| e.text.clone()).collect();
    assert_eq!(
        log.iter().filter(|l| l.as_str() == warning).count(),
        1,
        "{log:?}"
    );
}

/// The share of the fixture's spectrum in `[lo, hi)` keV, counted here bin by bin.
fn share_by_hand(s: &StatsSnapshot, lo: usize, hi: usize) -> f64 {
    let total: u64 = s.energy_bins.iter().sum();
    let inside: u64 = s.energy_bins[lo..hi].iter().sum();
    inside as f64 / total as f64
}

#[test]
fn the_spectrum_marks_the_runs_own_energy_window_and_its_share() {
    let mut s = snapshot(2.0, RunState::Running, false);
    s.info.energy_window_kev = Some([300.0, 700.0]);
    let mut app = App::new(AppOptions::default());
    app.update(s.clone());
    assert_eq!(app.energy_window_kev(), Some((300.0, 700.0)));
    let percent = (share_by_hand(&s, 300, 700) * 100.0).round();
    for (w, h) in SIZES {
        let screen = text(&draw(&app, w, h));
        assert!(
            screen.contains(&format!("window 300-700: {percent:.0}%")),
            "{w}x{h}: {screen}"
        );
        assert!(!screen.contains("425"), "no built-in window: {screen}");
    }
    // A run without a window (coincidences off, `none`, ToT energies) marks none.
    s.info.energy_window_kev = None;
    s.elapsed_s = 2.5;
    app.update(s);
    let screen = text(&draw(&app, 200, 50));
    assert!(screen.contains("no energy window"), "{screen}");
    assert!(!screen.contains('━'), "nothing marked: {screen}");
}

#[test]
fn l_toggles_the_spectrum_between_linear_and_log_counts() {
    let mut app = app_with(RunState::Running, false);
    let linear = draw(&app, 200, 50);
    let lin_text = text(&linear);
    assert!(
        lin_text.contains("energy spectrum, all channels (keV);"),
        "{lin_text}"
    );
    assert!(
        text(&draw(&app, 80, 24)).contains("l log"),
        "the key is in the footer"
    );
    assert_eq!(app.handle_key(Key::Char('l')), Action::None);
    assert!(app.log_spectrum);
    let log = draw(&app, 200, 50);
    let log_text = text(&log);
    assert!(log_text.contains("(keV, log);"), "{log_text}");
    // The Compton shelf (150 counts per bin against a 1000-count peak) is a low bar on the
    // linear scale and a tall one on the log scale: more filled cells in the spectrum.
    let filled = |b: &Buffer| {
        let (x0, y0) = find(b, "energy spectrum").unwrap();
        let (x1, _) = find(b, "module 0").unwrap();
        (y0..y0 + 20)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&p| b[p].symbol() == "█")
            .count()
    };
    assert!(filled(&log) > filled(&linear) + 20, "{log_text}");
    app.handle_key(Key::Char('?'));
    assert!(text(&draw(&app, 80, 24)).contains("linear / log scale"));
    app.handle_key(Key::Char('x'));
    app.handle_key(Key::Char('l'));
    assert!(!app.log_spectrum);
}

#[test]
fn rate_history_covers_the_whole_run_in_a_bounded_number_of_points() {
    use scandaq_tui::app::{RUN_HISTORY_POINTS, RunHistory};
    let mut h = RunHistory::default();
    // 10 Hz snapshots for 1000 s: 1000 counts/s for 500 s, then 3000/s.
    let mut count = 0u64;
    for k in 0..=10_000u64 {
        let t = k as f64 / 10.0;
        if k > 0 {
            count += if t <= 500.0 { 100 } else { 300 };
        }
        h.record(t, count);
    }
    let p = h.points();
    assert!(
        p.len() < RUN_HISTORY_POINTS && p.len() >= RUN_HISTORY_POINTS / 2,
        "{p:?}"
    );
    let covered = p.len() as f64 * h.seconds_per_point();
    assert!((900.0..=1000.0).contains(&covered), "{covered} s of 1000");
    assert!((p[0] - 1000.0).abs() < 1.0, "{p:?}");
    assert!((p[p.len() - 1] - 3000.0).abs() < 1.0, "{p:?}");
    assert!((p[p.len() / 4] - 1000.0).abs() < 1.0 && (p[3 * p.len() / 4] - 3000.0).abs() < 1.0);
    // A new run behind the same socket starts over.
    h.record(1.0, 5);
    assert!(h.points().is_empty());
}

#[test]
fn rates_panel_shows_singles_prompts_and_delayeds_over_the_run() {
    use scandaq_core::snapshot::CoincidenceSnapshot;
    let mut app = App::new(AppOptions::default());
    for k in 0..=40 {
        let t = f64::from(k) * 0.25;
        let mut s = snapshot(t, RunState::Running, false);
        let mut c = CoincidenceSnapshot::new(4_000, 400);
        c.prompts = (t * 20_000.0) as u64;
        c.delayeds = (t * 700.0) as u64;
        s.coincidences = Some(c);
        app.update(s);
    }
    for (w, h) in SIZES {
        let screen = text(&draw(&app, w, h));
        for needle in [
            " singles", "1.00 M/s", " prompts", "20.0 k/s", " delayed", "700/s",
        ] {
            assert!(screen.contains(needle), "{w}x{h}: {needle:?} in\n{screen}");
        }
    }
    // A line per counter where there is room, with the time the points cover.
    let screen = text(&draw(&app, 200, 50));
    assert!(screen.contains("run 0:00:10, 1 s/pt"), "{screen}");
    // Without coincidences the two lines say so.
    let app = app_with(RunState::Running, false);
    let screen = text(&draw(&app, 200, 50));
    assert!(screen.contains("not sorted in this run"), "{screen}");
}

#[test]
fn disk_free_space_and_time_to_full_at_the_write_rate() {
    let mut app = app_with(RunState::Running, false);
    let mut s = snapshot(11.5, RunState::Running, false);
    // 52 GB free, no reading of the filesystem's own fill rate yet: the run writes 9 MB/s,
    // full in 52e9 / 9e6 s = 96 min.
    s.health.disk_free_bytes = Some(52_000_000_000);
    app.update(s.clone());
    for (w, h) in SIZES {
        let screen = text(&draw(&app, w, h));
        assert!(
            screen.contains("disk 52 GB free, full in 96 min"),
            "{w}x{h}: {screen}"
        );
    }
    // The disk watch's reading (the whole filesystem) wins when there is one.
    s.elapsed_s = 11.75;
    s.health.disk_seconds_to_full = Some(3.0 * 86_400.0);
    app.update(s);
    assert!(text(&draw(&app, 80, 24)).contains("disk 52 GB free, full in 3 d"));
}

#[test]
fn after_the_run_ends_the_crystal_map_shows_the_runs_average_not_dead_channels() {
    let mut app = App::new(AppOptions::default());
    let running = snapshot(10.0, RunState::Running, false);
    app.update(running.clone());
    // Stopped: the counts stand still from here on.
    for t in [10.5, 11.0] {
        let mut s = running.clone();
        s.elapsed_s = t;
        s.state = RunState::Stopped;
        app.update(s);
    }
    let rates = app.module_rates(0);
    // Channel 0: 7000 hits/s for 10 s, averaged over the 11 s of the run.
    assert!((rates[0] - 70_000.0 / 11.0).abs() < 1.0, "{rates:?}");
    assert_eq!(rates[5], 0.0, "the dead channel stays dead");
    let screen = text(&draw(&app, 200, 50));
    assert!(screen.contains("dead 1 hot 0"), "{screen}");
}

#[test]
fn a_run_before_its_first_single_still_reads_as_pet() {
    let mut s = snapshot(0.1, RunState::Running, false);
    s.boards_decoded.clear();
    s.singles = 0;
    let mut app = App::new(AppOptions::default());
    app.update(s);
    let screen = text(&draw(&app, 100, 30));
    assert!(screen.contains("│ singles 0 (0/s)"), "{screen}");
    assert!(
        screen.contains("energy spectrum") || screen.contains("keV"),
        "{screen}"
    );
}
