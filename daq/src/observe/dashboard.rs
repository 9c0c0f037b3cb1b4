//! The operator dashboard in the terminal: in-process (`scandaq run --tui`, `scandaq demo`)
//! it reads snapshots straight from the run's [`LiveStats`]; attached (`scandaq top`) it
//! reads them from the run's control socket. Both use `scandaq_tui`'s terminal loop (10 Hz,
//! terminal restored on exit, panic and signals).

use crate::observe::control::{self, Subscription};
use crate::observe::live_stats::{LiveStats, StatsSnapshot};
use crate::observe::markers::SharedMarkers;
use crate::observe::stop::StopFlag;
use anyhow::{Context, Result};
use scandaq_core::snapshot::{ChannelHealth, StreamFigures, StreamSnapshot};
use scandaq_tui::{Action, App, AppOptions, Level, term};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Whether the dashboard can run here (stdin and stdout are terminals).
pub fn can_run() -> bool {
    term::is_interactive()
}

/// The dashboard of a run in this process.
struct InProcess {
    stats: Arc<LiveStats>,
    stop: StopFlag,
    markers: SharedMarkers,
}

impl term::Controller for InProcess {
    fn poll(&mut self) -> Option<StatsSnapshot> {
        Some(self.stats.snapshot())
    }

    fn act(&mut self, action: &Action, app: &mut App) {
        match action {
            Action::Stop | Action::Quit => {
                if !self.stop.swap(true, Ordering::Relaxed) && *action == Action::Stop {
                    app.note(
                        Level::Info,
                        "stop requested: draining and committing".into(),
                    );
                }
            }
            Action::Marker(text) => {
                let m = self.markers.add(text, "dashboard");
                app.note(Level::Info, marker_note(m.seq, m.t_ps, &m.text));
            }
            Action::None | Action::ConfirmQuit => {}
        }
    }
}

fn marker_note(seq: u32, t_ps: Option<i64>, text: &str) -> String {
    match t_ps {
        Some(t) => format!(
            "marker {seq} \"{text}\" at detector time {:.6} s",
            t as f64 * 1e-12
        ),
        None => format!("marker {seq} \"{text}\" (no singles yet)"),
    }
}

/// Runs the dashboard of an acquisition in this process until the operator quits (which
/// stops the run if it still goes) or `exit` is set (a signal). Returns once the terminal is
/// restored; the caller then waits for the run to finish.
pub fn run_in_process(
    stats: Arc<LiveStats>,
    stop: StopFlag,
    markers: SharedMarkers,
    exit: &AtomicBool,
    options: AppOptions,
) -> Result<()> {
    let mut app = App::new(options);
    let mut controller = InProcess {
        stats,
        stop,
        markers,
    };
    term::run(&mut app, &mut controller, exit).context("the dashboard's terminal failed")
}

/// The dashboard attached to another process's run through its control socket.
struct Attached {
    socket: PathBuf,
    latest: Latest,
    _closed: Arc<AtomicBool>,
}

impl term::Controller for Attached {
    fn poll(&mut self) -> Option<StatsSnapshot> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn act(&mut self, action: &Action, app: &mut App) {
        let reply = match action {
            Action::Stop => control::request(&self.socket, &json!({"cmd": "stop"}))
                .map(|_| "stop requested: the run drains and commits".to_string()),
            Action::Marker(text) => {
                control::request(&self.socket, &json!({"cmd": "marker", "text": text})).map(|r| {
                    let m = &r["marker"];
                    marker_note(
                        m["seq"].as_u64().unwrap_or(0) as u32,
                        m["t_ps"].as_i64(),
                        text,
                    )
                })
            }
            _ => return,
        };
        match reply {
            Ok(note) => app.note(Level::Info, note),
            Err(e) => app.note(Level::Error, format!("{e:#}")),
        }
    }
}

/// Reads a subscription on a thread, keeping only the newest snapshot.
/// The newest snapshot a reader thread has received.
type Latest = Arc<Mutex<Option<StatsSnapshot>>>;

fn spawn_reader(socket: &Path) -> Result<(Latest, Arc<AtomicBool>)> {
    let mut sub = Subscription::open(socket)?;
    let latest = Arc::new(Mutex::new(None));
    let closed = Arc::new(AtomicBool::new(false));
    let (l, c) = (latest.clone(), closed.clone());
    std::thread::Builder::new()
        .name("top-reader".into())
        .spawn(move || {
            while let Ok(Some(s)) = sub.next_snapshot() {
                *l.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
            }
            c.store(true, Ordering::Relaxed);
        })?;
    Ok((latest, closed))
}

/// `scandaq top`: the dashboard of the run behind `socket`. `q` leaves the viewer; the run
/// goes on. Without a terminal, prints a stats line every second instead.
pub fn top(socket: &Path, exit: &AtomicBool) -> Result<()> {
    if !can_run() {
        return plain_lines(socket, exit);
    }
    let (latest, closed) = spawn_reader(socket)?;
    let mut app = App::new(AppOptions { attached: true });
    app.note(Level::Info, format!("attached to {}", socket.display()));
    let mut c = Attached {
        socket: socket.to_path_buf(),
        latest,
        _closed: closed,
    };
    term::run(&mut app, &mut c, exit).context("the dashboard's terminal failed")
}

/// One line of plain statistics (no terminal), with a short part per MEG or ultrasound stream.
pub fn plain_line(now: &StatsSnapshot, before: Option<&StatsSnapshot>) -> String {
    let rate = before.map_or(0.0, |b| now.singles_rate_since(b));
    let losses = now.losses_total();
    let mut line = format!(
        "[{:>6.1} s] run {} {}: {} singles ({:.2} M/s), {:.1} MB written, {}",
        now.elapsed_s,
        now.info.run,
        now.state.name(),
        now.singles,
        rate / 1e6,
        now.pet_table_bytes() as f64 / 1e6,
        if losses == 0 {
            "no losses".to_string()
        } else {
            format!("LOSSES {losses}")
        }
    );
    for s in &now.streams {
        line.push_str(&stream_part(s));
    }
    line
}

/// `; meg 3: ...` or `; us 0: ...` for the plain stats line.
fn stream_part(s: &StreamSnapshot) -> String {
    match &s.figures {
        StreamFigures::Meg(m) => {
            let bad = |h: ChannelHealth| m.health.iter().filter(|&&x| x == h).count();
            format!(
                "; meg {}: {:.2} Hz, {} samples, triggers {:.2}/s, median RMS {:.0} {}, \
                 mains {:.1} Hz, flat {} saturated {} noisy {}",
                s.source_id,
                m.rate_hz,
                m.samples,
                m.trigger_rate_hz,
                m.median_rms,
                m.unit,
                m.mains_peak_hz,
                bad(ChannelHealth::Flat),
                bad(ChannelHealth::Saturated),
                bad(ChannelHealth::Noisy)
            )
        }
        StreamFigures::Ultrasound(u) => format!(
            "; us {}: {:.1} frames/s, {:.0} MB/s, {} events, {}",
            s.source_id,
            u.frames_per_s,
            u.mb_per_s,
            u.events_written,
            if u.events_incomplete == 0 {
                "none incomplete".to_string()
            } else {
                format!("INCOMPLETE {}", u.events_incomplete)
            }
        ),
    }
}

fn plain_lines(socket: &Path, exit: &AtomicBool) -> Result<()> {
    eprintln!(
        "scandaq top: not a terminal, printing a stats line every second ({})",
        socket.display()
    );
    let mut sub = Subscription::open(socket)?;
    let mut last: Option<StatsSnapshot> = None;
    while !exit.load(Ordering::Relaxed) {
        let Some(s) = sub.next_snapshot()? else {
            println!("the acquisition closed its control socket");
            return Ok(());
        };
        if last
            .as_ref()
            .is_none_or(|l| s.elapsed_s - l.elapsed_s >= 1.0)
        {
            println!("{}", plain_line(&s, last.as_ref()));
            last = Some(s);
        }
    }
    Ok(())
}
