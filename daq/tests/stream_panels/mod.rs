//! The dashboard's stream figures end to end: fpga-sim's opm and us presets write a raw
//! archive, `scandaq::acquire::live` acquires it in-process with a `LiveStats`, and the published
//! snapshot's MEG and ultrasound figures are checked against the simulator's settings and
//! truth (sample and block counts, effective rate, trigger rate, the mains frequency, a dead
//! channel flagged flat and no other, frame rate, incomplete events, per-element amplitudes
//! recomputed from the stored RF); and `scandaq top`, attached to a real `scandaq run` over
//! the control socket, shows the MEG panel (tmux).

use super::read_parquet;
use arrow_array::cast::AsArray;
use arrow_array::types::{UInt16Type, UInt64Type};
use scandaq::acquire::live::{
    InputConfig, InputSpec, LiveConfig, LiveHandles, RunLimits, run_live,
};
use scandaq::acquire::ring::OverflowPolicy;
use scandaq::observe::live_stats::LiveStats;
use scandaq::process::calib_load::LoadedCalibration;
use scandaq::process::streams::StreamSettings;
use scandaq_core::snapshot::{
    ChannelHealth, MegSnapshot, StatsSnapshot, StreamFigures, StreamSnapshot, UsSnapshot,
};
use scandaq_decoders::meg::{ChannelKind, parse_channel_table};
use scandaq_fpga_sim::opm::{
    CHANNELS_FILE, OpmConfig, OpmSummary, TRUTH_TRIGGERS_FILE, read_trigger_truth, run_opm,
};
use scandaq_fpga_sim::packet_out::Destination;
use scandaq_fpga_sim::us::{TRUTH_FILE, TruthEvent, UsConfig, read_truth};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Acquires `archive` in-process with `streams` settings; returns the final snapshot.
fn acquire(archive: &Path, out: &Path, streams: StreamSettings) -> StatsSnapshot {
    let live = LiveConfig {
        inputs: vec![InputConfig {
            spec: InputSpec::Archive(archive.to_path_buf()),
            allow: vec![],
            policy: OverflowPolicy::Block,
            ring_chunks: 64,
            ingest: Default::default(),
        }],
        out_dir: out.to_path_buf(),
        limits: RunLimits {
            duration: Some(Duration::from_secs(120)),
            ..Default::default()
        },
        raw_columns: false,
        raw_archive: false,
        stop_at_end_of_stream: true,
        streams,
        ..LiveConfig::default()
    };
    let stats = Arc::new(LiveStats::default());
    let handles = LiveHandles {
        stats: stats.clone(),
        ..LiveHandles::new(scandaq_core::run_state::RunMode::Run)
    };
    let summary = run_live(&live, &LoadedCalibration::none(), handles).unwrap();
    assert!(summary.error.is_none(), "{:?}", summary.error);
    stats.snapshot()
}

fn only_stream(s: &StatsSnapshot) -> &StreamSnapshot {
    assert_eq!(s.streams.len(), 1, "{:?}", s.streams);
    &s.streams[0]
}

/// Simulates `config` into an archive (truth in `tmp/sim`) and acquires it.
fn meg_run(tmp: &Path, config: &OpmConfig) -> (MegSnapshot, OpmSummary) {
    let sim = tmp.join("sim");
    let archive = tmp.join("opm.sdq");
    let sent = run_opm(
        config,
        Destination::Archive {
            path: archive.clone(),
            metadata_json: "{}".into(),
        },
        None,
        Some(&sim),
    )
    .unwrap();
    let mut settings = StreamSettings::default();
    settings.meg.channel_table = Some(sim.join(CHANNELS_FILE));
    let snap = acquire(&archive, &tmp.join("runs"), settings);
    let s = only_stream(&snap);
    assert_eq!(s.source_id, config.source_id);
    // The plain stats line (`scandaq top` without a terminal) carries the stream too.
    let line = scandaq::observe::dashboard::plain_line(&snap, None);
    let flat = config.flat_channels.len();
    for part in [
        format!("; meg {}: ", config.source_id),
        format!("{} samples", sent.samples),
        format!("flat {flat} saturated 0 noisy 0"),
    ] {
        assert!(line.contains(&part), "{part:?} not in {line:?}");
    }
    match &s.figures {
        StreamFigures::Meg(m) => (m.clone(), sent),
        other => panic!("not a MEG stream: {other:?}"),
    }
}

fn check_meg(tmp: &Path, config: &OpmConfig) -> MegSnapshot {
    let (m, sent) = meg_run(tmp, config);
    let sim = tmp.join("sim");
    // Counters and rate.
    assert_eq!(m.blocks, sent.blocks);
    assert_eq!(m.samples, sent.samples);
    let f0 = config.clock.f0_hz;
    let drift = config.clock.ppm.abs() + config.clock.swing_ppm.abs() + 1.0;
    assert!(
        (m.rate_hz / f0 - 1.0).abs() < drift * 1e-6,
        "effective rate {} vs {f0} Hz",
        m.rate_hz
    );
    // Trigger rate from the truth's trigger times.
    let triggers = read_trigger_truth(&sim.join(TRUTH_TRIGGERS_FILE)).unwrap();
    assert_eq!(triggers.len() as u64, sent.triggers);
    let span_s = (triggers.last().unwrap().0 - triggers[0].0) as f64 / 1e9;
    let true_rate = (triggers.len() - 1) as f64 / span_s;
    // Edge times are quantised to one sample period at each end of the span.
    let tolerance = true_rate * 2.0 / f0 / span_s;
    assert!(
        (m.trigger_rate_hz - true_rate).abs() <= tolerance,
        "trigger rate {} vs truth {true_rate}",
        m.trigger_rate_hz
    );
    let pulses = triggers.len() as u64;
    assert!(
        m.trigger_edges == 2 * pulses || m.trigger_edges == 2 * pulses - 1,
        "{} edges for {pulses} pulses",
        m.trigger_edges
    );
    // Per-channel figures: every MEG channel of the table, in order, in fT.
    let table =
        parse_channel_table(&std::fs::read_to_string(sim.join(CHANNELS_FILE)).unwrap()).unwrap();
    let meg_names: Vec<String> = table
        .iter()
        .filter(|c| c.kind == ChannelKind::MegMag)
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(m.channel_names, meg_names);
    assert_eq!(m.unit, "fT");
    assert_eq!(
        (m.rms.len(), m.health.len()),
        (meg_names.len(), meg_names.len())
    );
    let whole_windows = (config.duration_s / scandaq::process::streams::panel::MEG_WINDOW_S) as u64;
    assert!(
        m.windows + 1 >= whole_windows && m.windows <= whole_windows,
        "{} windows in {} s",
        m.windows,
        config.duration_s
    );
    // The mains line: the simulated frequency, an amplitude within the simulated range
    // (each channel draws 0.3 to 1.0 times `mains_ft`).
    assert_eq!(m.mains_hz, config.mains_hz, "{m:?}");
    assert!(
        (m.mains_peak_hz - config.mains_hz).abs() < 0.1,
        "peak at {} Hz",
        m.mains_peak_hz
    );
    assert!(
        (0.3 * config.mains_ft..=1.05 * config.mains_ft).contains(&m.mains_amplitude),
        "mains amplitude {} fT",
        m.mains_amplitude
    );
    // Health: exactly the dead channels are flat, every other one is ok, with an RMS
    // between the white noise alone and white noise plus the largest mains.
    let white = config.white_noise_ft * (f0 / 2.0).sqrt();
    for (i, (h, r)) in m.health.iter().zip(&m.rms).enumerate() {
        if config.flat_channels.contains(&i) {
            assert_eq!(*h, ChannelHealth::Flat, "channel {i}: {m:?}");
            assert_eq!(*r, 0.0);
        } else {
            assert_eq!(*h, ChannelHealth::Ok, "channel {i} ({r} fT): {m:?}");
            let r = f64::from(*r);
            assert!(
                r > 0.9 * white && r < 3.0 * (white + config.mains_ft),
                "channel {i}: {r} fT"
            );
        }
    }
    m
}

#[test]
fn meg_figures_match_the_simulated_rate_triggers_mains_and_channels() {
    let tmp = tempfile::tempdir().unwrap();
    let config = OpmConfig {
        seed: 31,
        duration_s: 12.0,
        sensors: 8,
        ..OpmConfig::default()
    };
    assert_eq!(config.mains_hz, 50.0);
    let m = check_meg(tmp.path(), &config);
    assert_eq!(m.health_counts(), (24, 0, 0, 0));
}

#[test]
fn meg_figures_find_sixty_hertz_mains_and_a_dead_channel() {
    let tmp = tempfile::tempdir().unwrap();
    let config = OpmConfig {
        seed: 32,
        duration_s: 12.0,
        sensors: 8,
        clock: scandaq_fpga_sim::opm::DriftingClock {
            f0_hz: 1000.25,
            ..OpmConfig::default().clock
        },
        mains_hz: 60.0,
        flat_channels: vec![4],
        ..OpmConfig::default()
    };
    let m = check_meg(tmp.path(), &config);
    assert_eq!(m.health_counts(), (23, 1, 0, 0));
}

/// Per-element RMS of event `key` recomputed from the stored `rf_events` payload.
fn stored_element_rms(run_dir: &Path, key: (u64, u16), n_channels: usize) -> Vec<f32> {
    let (batches, _) = read_parquet(&run_dir.join("rf_events-source0.parquet"));
    for b in &batches {
        let frame = b
            .column_by_name("frame_no")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let tx = b
            .column_by_name("tx_index")
            .unwrap()
            .as_primitive::<UInt16Type>();
        let payload = b.column_by_name("payload").unwrap().as_binary::<i32>();
        for i in 0..b.num_rows() {
            if (frame.value(i), tx.value(i)) != key {
                continue;
            }
            let samples: Vec<i16> = payload
                .value(i)
                .chunks_exact(2)
                .map(|x| i16::from_le_bytes([x[0], x[1]]))
                .collect();
            let per = samples.len() / n_channels;
            return samples
                .chunks(per)
                .map(|c| {
                    let ss: f64 = c.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                    (ss / per as f64).sqrt() as f32
                })
                .collect();
        }
    }
    panic!("event {key:?} is not stored");
}

#[test]
fn ultrasound_figures_match_the_simulated_frame_rate_and_incomplete_events() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let config = UsConfig {
        seed: 41,
        frames: 300,
        frame_rate_hz: 250.0,
        n_elements: 64,
        n_samples: 1024,
        lose_packets: 0.002,
        paced: false,
        out_dir: Some(sim.clone()),
        ..UsConfig::default()
    };
    let archive = tmp.path().join("us.sdq");
    let sent = scandaq_fpga_sim::us::run(
        &config,
        Destination::Archive {
            path: archive.clone(),
            metadata_json: "{}".into(),
        },
    )
    .unwrap();
    let mut settings = StreamSettings::default();
    settings.ultrasound.sequence_file = Some(sim.join(scandaq_fpga_sim::us::SEQUENCE_FILE));
    let out = tmp.path().join("runs");
    let snap = acquire(&archive, &out, settings);
    let u: UsSnapshot = match &only_stream(&snap).figures {
        StreamFigures::Ultrasound(u) => u.clone(),
        other => panic!("not an ultrasound stream: {other:?}"),
    };
    let truth: Vec<TruthEvent> = read_truth(&sim.join(TRUTH_FILE)).unwrap();
    let complete: Vec<&TruthEvent> = truth.iter().filter(|t| t.complete).collect();
    // Events whose every chunk was lost are invisible; the others are counted incomplete.
    let incomplete_seen = truth
        .iter()
        .filter(|t| !t.complete && t.chunks_lost < t.chunks)
        .count() as u64;
    assert!(incomplete_seen > 0, "the loss rate must hit some events");
    assert_eq!(u.events_incomplete, incomplete_seen);
    assert_eq!(u.events_written, complete.len() as u64);
    assert_eq!(u.events_written, sent.complete_events);
    let frames: std::collections::BTreeSet<u64> = complete.iter().map(|t| t.frame_no).collect();
    assert_eq!(u.frames, frames.len() as u64);
    let event_bytes = 2 * u64::from(config.n_elements) * u64::from(config.n_samples);
    assert_eq!(u.rf_bytes, u.events_written * event_bytes);
    // Rates over the last second of transmit time: the simulated frame rate; events and
    // bytes in proportion to what completed.
    assert!(u.rates_from_tx_clock);
    assert!(
        (u.frames_per_s / config.frame_rate_hz - 1.0).abs() < 0.01,
        "{} frames/s vs {}",
        u.frames_per_s,
        config.frame_rate_hz
    );
    let complete_share = complete.len() as f64 / truth.len() as f64;
    let events_hz = config.frame_rate_hz * config.angles_deg.len() as f64 * complete_share;
    assert!(
        (u.events_per_s / events_hz - 1.0).abs() < 0.03,
        "{} events/s vs {events_hz}",
        u.events_per_s
    );
    assert!(
        (u.mb_per_s * 1e6 / (u.events_per_s * event_bytes as f64) - 1.0).abs() < 1e-9,
        "{u:?}"
    );
    // Per-element amplitudes of the event named, as recomputed from the stored payload.
    let key = u.amplitude_event.expect("an event's amplitudes");
    assert!(complete.iter().any(|t| (t.frame_no, t.tx_index) == key));
    let dir = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("run-"))
        .unwrap();
    let expected = stored_element_rms(&dir, key, usize::from(config.n_elements));
    assert_eq!(u.element_rms.len(), usize::from(config.n_elements));
    for (e, (a, b)) in u.element_rms.iter().zip(&expected).enumerate() {
        assert!(
            (a - b).abs() <= 1e-3 * b.max(1.0),
            "element {e}: {a} vs {b}"
        );
    }
    // Echoes make some elements far louder than the noise floor, and peaks exceed RMS.
    assert!(
        u.element_rms
            .iter()
            .all(|&r| r >= 0.5 * config.noise_lsb as f32)
    );
    assert!(
        u.element_peak
            .iter()
            .zip(&u.element_rms)
            .all(|(p, r)| p >= r)
    );
}

#[test]
fn stats_snapshots_carry_streams_through_json_and_old_ones_still_parse() {
    let mut s = LiveStats::default().snapshot();
    s.streams = vec![
        StreamSnapshot {
            source_id: 3,
            figures: StreamFigures::Meg(MegSnapshot {
                channel_names: vec!["A".into(), "B".into()],
                rms: vec![1.0, 0.0],
                health: vec![ChannelHealth::Noisy, ChannelHealth::Flat],
                ..Default::default()
            }),
        },
        StreamSnapshot {
            source_id: 4,
            figures: StreamFigures::Ultrasound(UsSnapshot {
                events_incomplete: 2,
                amplitude_event: Some((5, 1)),
                ..Default::default()
            }),
        },
    ];
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains(r#""kind":"meg""#) && json.contains(r#""kind":"ultrasound""#));
    assert!(json.contains(r#""noisy""#) && json.contains(r#""flat""#));
    let back: StatsSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    // A snapshot from before streams existed (no `streams` key) parses as a run without.
    let mut v: serde_json::Value = serde_json::to_value(&s).unwrap();
    v.as_object_mut().unwrap().remove("streams");
    let old: StatsSnapshot = serde_json::from_value(v).unwrap();
    assert!(old.streams.is_empty());
}

/// The real binaries: `scandaq run` receives an OPM stream (60 Hz mains, one dead channel)
/// over UDP and `scandaq top`, attached through the control socket in tmux, shows the MEG
/// panel with the dead channel flagged and the mains frequency.
#[test]
fn top_attached_to_a_meg_run_shows_the_meg_panel() {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let tmux = |args: &[&str]| {
        let o = Command::new("tmux").args(args).output().unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    if Command::new("tmux").arg("-V").output().is_err() {
        super::skip_unless_ci("tmux is not installed (apt-get install tmux)");
        return;
    }
    let wait = |what: &str, timeout_s: u64, f: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(timeout_s);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    let out = tmp.path().join("runs");
    let config = OpmConfig {
        seed: 33,
        duration_s: 6.0,
        sensors: 8,
        mains_hz: 60.0,
        flat_channels: vec![2],
        ..OpmConfig::default()
    };
    // The channel table first (the run reads it at start), from a short run of the same array.
    run_opm(
        &OpmConfig {
            duration_s: 0.01,
            ..config.clone()
        },
        Destination::Closure(Box::new(|_, _| true)),
        None,
        Some(&sim),
    )
    .unwrap();
    let port = crate::free_port_udp().port();
    let cfg = tmp.path().join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "[run]\nout = {:?}\nduration = \"120s\"\nstop_at_end_of_stream = false\n\
             [calibration]\nnone = true\n[[input]]\nudp = \"127.0.0.1:{port}\"\n\
             [meg]\nchannel_table = {:?}\n",
            out.display().to_string(),
            sim.join(CHANNELS_FILE).display().to_string(),
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_scandaq");
    /// The run, killed if the test fails before stopping it.
    struct Run(std::process::Child);
    impl Drop for Run {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut run = Run(Command::new(bin)
        .args(["run", "--config", cfg.to_str().unwrap(), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap());
    let run_dir = || {
        std::fs::read_dir(&out)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("run-"))
    };
    let socket = || run_dir().map(|d| d.join(scandaq::observe::control::SOCKET_NAME));
    wait("the run's control socket", 30, &mut || {
        socket().is_some_and(|s| s.exists())
    });
    let dir = run_dir().unwrap();
    let session = format!("scandaq-top-meg-{}", std::process::id());
    struct Kill<'a>(&'a str);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", self.0])
                .output();
        }
    }
    let _kill = Kill(&session);
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "80",
        "-y",
        "24",
        &format!("{bin} top {}", dir.display()),
    ]);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    run_opm(&config, Destination::Udp { target: addr }, Some(3.0), None).unwrap();
    let flat_name = parse_channel_table(&std::fs::read_to_string(sim.join(CHANNELS_FILE)).unwrap())
        .unwrap()[2]
        .name
        .clone();
    let mut screen = String::new();
    wait("the MEG panel with its figures", 30, &mut || {
        screen = tmux(&["capture-pane", "-p", "-t", &session]);
        screen.contains("MEG stream 0")
            && screen.contains("flat 1")
            && screen.contains(&format!("{flat_name} flat"))
            && screen.contains("mains 60 Hz")
    });
    assert!(screen.contains("ok 23"), "{screen}");
    // No PET panel and no PET wording anywhere, the help included.
    tmux(&["send-keys", "-t", &session, "?"]);
    let mut help = String::new();
    wait("the help overlay", 10, &mut || {
        help = tmux(&["capture-pane", "-p", "-t", &session]);
        help.contains("this help")
    });
    assert!(help.contains("select stream, MEG channel"), "{help}");
    for shown in [&screen, &help] {
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
        ] {
            assert!(!shown.contains(pet), "{pet:?} in a MEG-only run:\n{shown}");
        }
        let header = shown.lines().nth(1).unwrap_or_default();
        assert!(!header.contains("written"), "{shown}");
    }
    let stop = Command::new(bin)
        .args([
            "ctl",
            "stop",
            "--socket",
            socket().unwrap().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(stop.status.success(), "{stop:?}");
    let status = run.0.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success() && !stderr.contains("panicked"), "{stderr}");
}
