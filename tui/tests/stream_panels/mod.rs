//! The MEG and ultrasound panels, drawn from synthetic snapshots: the numbers appear, a flat
//! and a noisy channel show as such (glyph, colour, name), ultrasound incomplete events are
//! red, a mixed PET + stream run switches with `d`, and every size renders.

use super::{SIZES, draw, find, snapshot, text};
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use scandaq_core::snapshot::{
    ChannelHealth, MegSnapshot, RunState, StatsSnapshot, StreamFigures, StreamSnapshot, UsSnapshot,
};
use scandaq_tui::{Action, App, AppOptions, Key};

/// Index of the flat and the noisy channel of [`meg`].
const FLAT: usize = 11;
const NOISY: usize = 40;

fn channel_name(i: usize) -> String {
    format!("OPM{:03}{}", i / 3 + 1, ["Z", "Y", "X"][i % 3])
}

/// 64 triaxial sensors; channel [`FLAT`] dead and [`NOISY`] 7.5 times the median RMS when
/// `faulty`, otherwise every channel between 700 and 900 fT.
fn meg(faulty: bool) -> MegSnapshot {
    let n = 192;
    let mut rms: Vec<f32> = (0..n).map(|i| 700.0 + (i % 9) as f32 * 25.0).collect();
    let mut health = vec![ChannelHealth::Ok; n];
    if faulty {
        rms[FLAT] = 0.4;
        health[FLAT] = ChannelHealth::Flat;
        rms[NOISY] = 6000.0;
        health[NOISY] = ChannelHealth::Noisy;
    }
    MegSnapshot {
        blocks: 1234,
        samples: 1234 * 10,
        rate_hz: 1200.5004,
        trigger_edges: 40,
        trigger_rate_hz: 1.004,
        unit: "fT".into(),
        channel_names: (0..n).map(channel_name).collect(),
        rms,
        health,
        median_rms: 800.0,
        mains_hz: 50.0,
        mains_peak_hz: 50.02,
        mains_amplitude: 1234.0,
        window_s: 1.0,
        windows: 12,
    }
}

fn us() -> UsSnapshot {
    UsSnapshot {
        events_written: 197,
        events_incomplete: 3,
        frames: 40,
        frames_per_s: 200.0,
        events_per_s: 1000.0,
        mb_per_s: 131.07,
        rf_bytes: 197 * 131_072,
        rates_from_tx_clock: true,
        element_rms: (0..128).map(|e| 10.0 + e as f32).collect(),
        element_peak: (0..128).map(|e| 100.0 + e as f32).collect(),
        amplitude_event: Some((39, 4)),
    }
}

/// A run of streams only (no PET boards), `t` seconds in.
fn stream_run(t: f64, streams: Vec<StreamSnapshot>) -> StatsSnapshot {
    let mut s = snapshot(t, RunState::Running, false);
    s.boards_decoded.clear();
    s.singles = 0;
    s.sink_rows = 0;
    s.channel_hits.clear();
    s.energy_bins = vec![0; s.energy_bins.len()];
    s.streams = streams;
    s
}

fn meg_stream(faulty: bool) -> StreamSnapshot {
    StreamSnapshot {
        source_id: 3,
        figures: StreamFigures::Meg(meg(faulty)),
    }
}

fn us_stream() -> StreamSnapshot {
    StreamSnapshot {
        source_id: 7,
        figures: StreamFigures::Ultrasound(us()),
    }
}

fn app_of(snapshots: impl IntoIterator<Item = StatsSnapshot>) -> App {
    let mut app = App::new(AppOptions::default());
    for s in snapshots {
        app.update(s);
    }
    app
}

/// Cells showing `glyph` and their colours.
fn cells(b: &Buffer, glyph: &str) -> Vec<(Option<Color>, Option<Color>)> {
    let mut out = Vec::new();
    for y in 0..b.area.height {
        for x in 0..b.area.width {
            if b[(x, y)].symbol() == glyph {
                out.push((Some(b[(x, y)].fg), Some(b[(x, y)].bg)));
            }
        }
    }
    out
}

#[test]
fn meg_panel_shows_the_numbers_and_a_flat_and_a_noisy_channel() {
    let app = app_of([
        stream_run(1.0, vec![meg_stream(true)]),
        stream_run(1.5, vec![meg_stream(true)]),
    ]);
    assert!(
        app.shows_streams(),
        "a stream-only run shows the stream panels"
    );
    let flat_label = format!("{} flat", channel_name(FLAT));
    let noisy_label = format!("{} noisy 7.5x", channel_name(NOISY));
    assert_eq!(
        (flat_label.as_str(), noisy_label.as_str()),
        ("OPM004X flat", "OPM014Y noisy 7.5x")
    );
    for (w, h) in SIZES {
        let b = draw(&app, w, h);
        let s = text(&b);
        for needle in [
            "MEG stream 3",
            "1200.500 Hz",
            "trig 1.00 Hz",
            "mains 50 Hz: peak 50.02 Hz 1.23 pT",
            "RMS median 800 fT",
            "ok 190",
            "flat 1",
            "noisy 1",
            &flat_label,
            &noisy_label,
            "ch 1 OPM001Z: 700 fT ok",
        ] {
            assert!(s.contains(needle), "{w}x{h}: {needle:?} missing in\n{s}");
        }
        assert!(!s.contains("energy spectrum"), "no PET panels: {s}");
        // On the map: the flat channel is `·` (yellow), the noisy one `!` on red; one cell
        // each (1 or 2 characters wide).
        let flat = cells(&b, "·");
        let noisy = cells(&b, "!");
        assert!((1..=2).contains(&flat.len()), "{w}x{h}: {flat:?}\n{s}");
        assert_eq!(flat.len(), noisy.len(), "{s}");
        assert!(flat.iter().all(|c| c.0 == Some(Color::Yellow)), "{flat:?}");
        assert!(noisy.iter().all(|c| c.1 == Some(Color::Red)), "{noisy:?}");
        let (x, y) = find(&b, "noisy 1").unwrap();
        assert_eq!(b[(x, y)].fg, Color::Red);
    }
    // The same run without faults: no glyphs, everything ok.
    let healthy = app_of([stream_run(1.0, vec![meg_stream(false)])]);
    for (w, h) in SIZES {
        let b = draw(&healthy, w, h);
        let s = text(&b);
        assert!(s.contains("all channels ok") && s.contains("ok 192"), "{s}");
        assert!(
            cells(&b, "·").is_empty() && cells(&b, "!").is_empty(),
            "{s}"
        );
    }
}

#[test]
fn arrows_select_the_meg_channel_and_the_stream() {
    let mut app = app_of([stream_run(1.0, vec![meg_stream(true), us_stream()])]);
    for _ in 0..FLAT {
        assert_eq!(app.handle_key(Key::Down), Action::None);
    }
    let s = text(&draw(&app, 80, 24));
    assert!(s.contains("ch 12 OPM004X: 0 fT flat"), "{s}");
    app.handle_key(Key::Up);
    app.handle_key(Key::Up);
    let s = text(&draw(&app, 80, 24));
    assert!(s.contains("ch 10 OPM004Z: 700 fT ok"), "{s}");
    // Wrap-around: up from the first channel is the last.
    let mut top = app_of([stream_run(1.0, vec![meg_stream(true)])]);
    top.handle_key(Key::Up);
    assert!(text(&draw(&top, 80, 24)).contains("ch 192 OPM064X"));
    // At 80x24 one stream at a time; → shows the next.
    let s = text(&draw(&app, 80, 24));
    assert!(
        s.contains("MEG stream 3 [1/2, ←→]") && !s.contains("ultrasound"),
        "{s}"
    );
    app.handle_key(Key::Right);
    let s = text(&draw(&app, 80, 24));
    assert!(
        s.contains("ultrasound stream 7 [2/2, ←→]") && !s.contains("MEG stream"),
        "{s}"
    );
    // On a wide screen both, side by side.
    let s = text(&draw(&app, 200, 50));
    assert!(
        s.contains("ultrasound stream 7") && s.contains("MEG stream 3"),
        "{s}"
    );
}

#[test]
fn ultrasound_panel_shows_rates_amplitudes_and_incomplete_events_in_red() {
    let app = app_of([stream_run(2.0, vec![us_stream()])]);
    for (w, h) in SIZES {
        let b = draw(&app, w, h);
        let s = text(&b);
        for needle in [
            "ultrasound stream 7",
            "200.0 frames/s",
            "1000 events/s",
            "131.1 MB/s",
            "written 197",
            "INCOMPLETE 3",
            "frame 39 tx 4",
            "max 137 (element 128)",
        ] {
            assert!(s.contains(needle), "{w}x{h}: {needle:?} missing in\n{s}");
        }
        let (x, y) = find(&b, "INCOMPLETE 3").unwrap();
        assert_eq!(b[(x, y)].fg, Color::Red);
        // The per-element bars rise from element 1 to 128: the full block is at the right.
        let full = find(&b, "█").unwrap_or_else(|| panic!("no bars: {s}"));
        assert!(full.0 > w / 2, "{w}x{h}: {full:?}\n{s}");
    }
    assert!(!text(&draw(&app, 80, 24)).contains("DEAD"));
    // Two silent elements (17 and 40) are named.
    let mut dead = us();
    dead.element_rms[16] = 0.0;
    dead.element_rms[39] = 3.0;
    let app_dead = app_of([stream_run(
        2.0,
        vec![StreamSnapshot {
            source_id: 7,
            figures: StreamFigures::Ultrasound(dead),
        }],
    )]);
    for (w, h) in SIZES {
        let s = text(&draw(&app_dead, w, h));
        assert!(s.contains("DEAD elements (2): 17, 40"), "{s}");
    }
    let mut clean = us();
    clean.events_incomplete = 0;
    let app = app_of([stream_run(
        2.0,
        vec![StreamSnapshot {
            source_id: 7,
            figures: StreamFigures::Ultrasound(clean),
        }],
    )]);
    let b = draw(&app, 80, 24);
    let (x, y) = find(&b, "incomplete 0").unwrap_or_else(|| panic!("{}", text(&b)));
    assert_eq!(b[(x, y)].fg, Color::Green);
}

#[test]
fn mixed_run_shows_pet_first_and_d_switches_to_the_streams() {
    let mut s = snapshot(1.0, RunState::Running, false);
    s.streams = vec![meg_stream(true)];
    let mut app = app_of([s]);
    assert!(!app.shows_streams());
    let pet = text(&draw(&app, 80, 24));
    assert!(pet.contains("keV") && pet.contains("d streams"), "{pet}");
    assert_eq!(app.handle_key(Key::Char('d')), Action::None);
    assert!(app.shows_streams());
    let streams = text(&draw(&app, 80, 24));
    assert!(
        streams.contains("MEG stream 3") && !streams.contains("keV") && streams.contains("d PET"),
        "{streams}"
    );
    app.handle_key(Key::Char('d'));
    assert!(text(&draw(&app, 80, 24)).contains("keV"));
    // PET only: `d` says there is nothing to switch to; the help lists the key.
    let mut pet_only = app_of([snapshot(1.0, RunState::Running, false)]);
    pet_only.handle_key(Key::Char('d'));
    assert!(!pet_only.shows_streams());
    assert!(text(&draw(&pet_only, 80, 24)).contains("no MEG or ultrasound streams"));
    pet_only.handle_key(Key::Char('?'));
    assert!(text(&draw(&pet_only, 80, 24)).contains("PET panels / stream panels"));
}

#[test]
fn stream_panels_render_at_every_size_and_before_the_first_window() {
    let mut waiting = meg(false);
    waiting.windows = 0;
    waiting.rms.clear();
    waiting.health.clear();
    let mut no_event = us();
    no_event.amplitude_event = None;
    no_event.element_rms.clear();
    no_event.element_peak.clear();
    let app = app_of([stream_run(
        0.5,
        vec![
            StreamSnapshot {
                source_id: 1,
                figures: StreamFigures::Meg(waiting),
            },
            StreamSnapshot {
                source_id: 2,
                figures: StreamFigures::Ultrasound(no_event),
            },
        ],
    )]);
    let s = text(&draw(&app, 200, 50));
    assert!(s.contains("waiting for the first analysis window"), "{s}");
    assert!(s.contains("no complete event yet"), "{s}");
    let full = app_of([stream_run(1.0, vec![meg_stream(true), us_stream()])]);
    for (w, h) in [(20, 5), (1, 1), (80, 10), (40, 30), (80, 24), (300, 80)] {
        draw(&app, w, h);
        draw(&full, w, h);
    }
}

#[test]
fn a_stream_only_run_shows_no_pet_panels_or_wording() {
    for streams in [
        vec![meg_stream(true)],
        vec![us_stream()],
        vec![meg_stream(false), us_stream()],
    ] {
        let mut app = app_of([
            stream_run(10.0, streams.clone()),
            stream_run(10.5, streams.clone()),
        ]);
        let mut screens = vec![];
        for (w, h) in [(80, 24), (100, 30), (200, 50)] {
            screens.push(text(&draw(&app, w, h)));
        }
        app.handle_key(Key::Char('?'));
        screens.push(text(&draw(&app, 100, 30)));
        for s in &screens {
            for pet in [
                "singles",
                "energy",
                "keV",
                "coincidence",
                "prompt",
                "delayed",
                "module",
                "crystal",
                "Δt",
                "l log",
                "rows/s",
            ] {
                assert!(!s.contains(pet), "{pet:?} in a stream-only run:\n{s}");
            }
            // The singles sink's "written" (stream tables are not counted in it).
            let header = s.lines().nth(1).unwrap_or_default();
            assert!(!header.contains("written"), "{s}");
        }
        assert!(
            screens[3].contains("select stream, MEG channel"),
            "{}",
            screens[3]
        );
    }
}
