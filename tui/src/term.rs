//! The terminal loop shared by the in-process dashboard and `scandaq top`: raw mode and the
//! alternate screen, restored on every way out (return, error, panic via a panic hook, a
//! signal via the `exit` flag the caller sets from its signal handler), a redraw every
//! 100 ms (10 Hz), keys handed to [`App::handle_key`].

use crate::app::{Action, App, Key};
use crate::render::render;
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use crossterm::{cursor, execute};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use scandaq_core::snapshot::StatsSnapshot;
use std::io::{IsTerminal, Stdout};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Redraw period (10 Hz).
pub const FRAME: Duration = Duration::from_millis(100);

/// Whether stdin and stdout are both terminals (the dashboard needs both).
pub fn is_interactive() -> bool {
    std::io::stdout().is_terminal() && std::io::stdin().is_terminal()
}

/// Converts a crossterm key event (presses only) into a dashboard key.
pub fn key_from_event(ev: &KeyEvent) -> Option<Key> {
    if ev.kind != KeyEventKind::Press {
        return None;
    }
    if ev.modifiers.contains(KeyModifiers::CONTROL) && ev.code == KeyCode::Char('c') {
        return Some(Key::CtrlC);
    }
    Some(match ev.code {
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Left => Key::Left,
        KeyCode::Right => Key::Right,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Esc => Key::Esc,
        KeyCode::Enter => Key::Enter,
        _ => return None,
    })
}

/// Puts the terminal back: raw mode off, main screen, cursor shown. Safe to call twice.
pub fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(std::io::stdout(), LeaveAlternateScreen, cursor::Show);
}

/// Raw mode + alternate screen for as long as it lives.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> std::io::Result<Self> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
        });
        enable_raw_mode()?;
        let guard = TerminalGuard;
        execute!(std::io::stdout(), EnterAlternateScreen, cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// What the loop asks of its owner besides snapshots.
pub trait Controller {
    /// The newest snapshot, if a new one is available.
    fn poll(&mut self) -> Option<StatsSnapshot>;
    /// Carries out an action ([`Action::Stop`], [`Action::Marker`], and [`Action::Quit`]
    /// just before the loop returns); may log into the app.
    fn act(&mut self, action: &Action, app: &mut App);
}

/// Runs the dashboard until `q` (confirmed), Ctrl-C, or `exit` is set (a signal). The
/// terminal is restored however it ends.
pub fn run(
    app: &mut App,
    controller: &mut dyn Controller,
    exit: &AtomicBool,
) -> std::io::Result<()> {
    let _guard = TerminalGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    terminal.clear()?;
    run_loop(&mut terminal, app, controller, exit)
}

fn run_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    app: &mut App,
    controller: &mut dyn Controller,
    exit: &AtomicBool,
) -> std::io::Result<()> {
    let mut next = Instant::now();
    loop {
        if exit.load(Ordering::Relaxed) {
            controller.act(&Action::Quit, app);
            return Ok(());
        }
        let now = Instant::now();
        if now >= next {
            if let Some(s) = controller.poll() {
                app.update(s);
            }
            terminal.draw(|f| render(f, app))?;
            next = now + FRAME;
        }
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(k) => {
                    if let Some(key) = key_from_event(&k) {
                        let action = app.handle_key(key);
                        if action != Action::None && action != Action::ConfirmQuit {
                            controller.act(&action, app);
                        }
                        if action == Action::Quit {
                            return Ok(());
                        }
                        terminal.draw(|f| render(f, app))?;
                    }
                }
                Event::Resize(..) => {
                    terminal.autoresize()?;
                    terminal.draw(|f| render(f, app))?;
                }
                _ => {}
            }
        }
    }
}
