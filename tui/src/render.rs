//! Drawing the dashboard: `render(frame, &app)`. Everything is text with colours on top, so
//! a screen read without colour (a test, a screenshot, a colour-blind operator) still says
//! the same: losses read `DROPPED`, dead channels `··`, hot channels `!!`; on the MEG
//! channel map flat channels are `·`, saturated ones `#`, noisy ones `!`.

use crate::app::{App, CHANNELS_PER_MODULE, Level, View, all_losses, input_losses};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Table, Wrap};
use scandaq_core::snapshot::{
    ChannelHealth, MegSnapshot, RunState, StatsSnapshot, StreamFigures, UsSnapshot,
};

const RED: Style = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
const DIM: Style = Style::new().fg(Color::DarkGray);
const OK: Style = Style::new().fg(Color::Green);
const WARN: Style = Style::new().fg(Color::Yellow);
const TITLE: Style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);

/// Style of loss numbers: red when non-zero.
pub fn loss_style(n: u64) -> Style {
    if n > 0 { RED } else { OK }
}

/// `1234567` -> `1.23 M`.
pub fn si(x: f64) -> String {
    let a = x.abs();
    if a >= 1e9 {
        format!("{:.2} G", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// Seconds as `h:mm:ss`.
pub fn clock(s: f64) -> String {
    let s = s.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// A text sparkline of the last `width` values.
pub fn sparkline(values: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &values[values.len().saturating_sub(width)..];
    let max = tail.iter().copied().fold(0.0, f64::max);
    let mut s: String = tail
        .iter()
        .map(|&v| {
            if max <= 0.0 {
                '▁'
            } else {
                BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect();
    while s.chars().count() < width {
        s.insert(0, ' ');
    }
    s
}

/// A text gauge `██░░░░ 31%`.
pub fn gauge(fill: u64, capacity: u64, width: usize) -> String {
    if capacity == 0 {
        return "-".into();
    }
    let f = (fill as f64 / capacity as f64).clamp(0.0, 1.0);
    let full = (f * width as f64).round() as usize;
    format!(
        "{}{} {:>3.0}%",
        "█".repeat(full),
        "░".repeat(width - full),
        f * 100.0
    )
}

fn ellipsize_left(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if max <= 1 {
        return "…".into();
    }
    let tail: String = s.chars().skip(n - (max - 1)).collect();
    format!("…{tail}")
}

fn state_style(s: RunState) -> Style {
    match s {
        RunState::Running => OK.add_modifier(Modifier::BOLD),
        RunState::Stopping => WARN.add_modifier(Modifier::BOLD),
        RunState::Failed => RED,
        _ => Style::new().fg(Color::Blue).add_modifier(Modifier::BOLD),
    }
}

/// Draws the whole dashboard.
pub fn render(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let Some((snap, _)) = app.shown() else {
        let p = Paragraph::new(vec![
            Line::styled("scandaq dashboard", TITLE),
            Line::raw("waiting for the first statistics snapshot…"),
            Line::styled("q quit  ? help", DIM),
        ]);
        frame.render_widget(p, area);
        draw_overlays(frame, app);
        return;
    };
    let n_inputs = snap.inputs.len().max(1) as u16;
    let small = area.height < 36;
    let log_h = if small { 4 } else { (area.height / 5).max(4) };
    let sources_h = (3 + n_inputs).min(if small { 5 } else { 10 });
    // The run-long rate history of singles, prompts and delayeds: PET panels only.
    // One line on a small screen (the crystal map keeps its 8 rows at 80x24).
    let rates_h = if app.view != View::Overview || app.shows_streams() || area.height < 20 {
        0
    } else if area.height < 28 {
        1
    } else {
        RATE_LINES
    };
    let [header, sources, health, rates, sink, log, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(sources_h),
        Constraint::Min(6),
        Constraint::Length(rates_h),
        Constraint::Length(1),
        Constraint::Length(log_h),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, app, snap, header);
    draw_sources(frame, app, snap, sources);
    match app.view {
        View::Overview if app.shows_streams() => draw_streams(frame, app, health),
        View::Overview => draw_health(frame, app, snap, health),
        View::Losses => draw_losses(frame, app, snap, health),
    }
    if rates_h > 0 {
        draw_rate_history(frame, app, snap, rates);
    }
    draw_sink(frame, app, snap, sink);
    draw_log(frame, app, log);
    draw_footer(frame, app, snap, footer);
    draw_overlays(frame, app);
}

fn draw_header(frame: &mut Frame, app: &App, s: &StatsSnapshot, area: Rect) {
    let sep = Span::styled(" │ ", DIM);
    let mut l1 = vec![
        Span::styled(" scandaq", TITLE),
        sep.clone(),
        Span::raw(format!("run {:06}", s.info.run)),
        sep.clone(),
        Span::styled(s.state.name().to_uppercase(), state_style(s.state)),
        sep.clone(),
        Span::raw(clock(s.elapsed_s)),
    ];
    if !s.info.mode.is_empty() {
        l1.push(sep.clone());
        l1.push(Span::raw(s.info.mode.clone()));
    }
    // What matters most takes the place of the limits on a narrow screen: a failure, then a
    // disk about to fill; a healthy disk's free space is on the sink line.
    let (disk, disk_low) = disk_text(s, app.totals_rates().2);
    l1.push(sep.clone());
    if let Some(f) = s.health.failure {
        l1.push(Span::styled(
            format!("FAILED: {f}"),
            RED.add_modifier(Modifier::REVERSED | Modifier::BOLD),
        ));
    } else if disk_low {
        l1.push(Span::styled(disk.clone(), RED.add_modifier(Modifier::BOLD)));
    } else {
        l1.push(Span::raw(if s.info.limits.is_empty() {
            "no limits".to_string()
        } else {
            format!("limits: {}", s.info.limits.join(", "))
        }));
    }
    if app.is_frozen() {
        l1.push(Span::styled(
            "  FROZEN (p)",
            Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
        ));
    }
    frame.render_widget(
        Paragraph::new(vec![Line::from(l1), header_totals(app, s, area.width)]),
        area,
    );
}

/// The header's second line: output directory, what the PET tables hold (singles, prompts and
/// delayed; stream-only runs write their own tables, which this figure does not count), the
/// singles, and the dropped-data total.
fn header_totals(app: &App, s: &StatsSnapshot, width: u16) -> Line<'static> {
    let sep = Span::styled(" │ ", DIM);
    let losses = s.losses_total();
    let (singles_rate, _, _) = app.totals_rates();
    let pet = !app.stream_only();
    let written = pet.then(|| format!("written {:.1} MB", s.pet_table_bytes() as f64 / 1e6));
    let singles = pet.then(|| format!("singles {} ({}/s)", si(s.singles as f64), si(singles_rate)));
    let dropped = if losses > 0 {
        format!("DROPPED {losses}")
    } else {
        "dropped 0".to_string()
    };
    let parts: Vec<String> = written.into_iter().chain(singles).collect();
    let fixed = 5 + parts.iter().map(|p| p.chars().count() + 3).sum::<usize>() + dropped.len() + 3;
    let room = (width as usize).saturating_sub(fixed).max(8);
    let dir = if s.info.run_dir.is_empty() {
        "-".to_string()
    } else {
        ellipsize_left(&s.info.run_dir, room)
    };
    let mut l2 = vec![Span::raw(" out "), Span::raw(dir)];
    for p in parts {
        l2.push(sep.clone());
        l2.push(Span::raw(p));
    }
    l2.push(sep);
    l2.push(Span::styled(
        dropped,
        if losses > 0 {
            RED.add_modifier(Modifier::REVERSED)
        } else {
            OK
        },
    ));
    Line::from(l2)
}

/// `disk 12.3 GB free, full in 41 min` and whether that is low (under 10 minutes or 1 GB).
/// The time to full is the disk watch's (the filesystem's fill rate over the last seconds),
/// or else the free space over `write_rate` (the run's bytes per second); `not filling` when
/// neither says it fills.
pub fn disk_text(s: &StatsSnapshot, write_rate: f64) -> (String, bool) {
    let Some(free) = s.health.disk_free_bytes else {
        return (String::new(), false);
    };
    let gb = free as f64 / 1e9;
    let mut text = if gb >= 10.0 {
        format!("disk {gb:.0} GB free")
    } else if gb >= 1.0 {
        format!("disk {gb:.1} GB free")
    } else {
        format!("disk {:.0} MB free", free as f64 / 1e6)
    };
    let mut low = free < 1 << 30;
    let seconds_to_full = s
        .health
        .disk_seconds_to_full
        .or_else(|| (write_rate > 0.0).then(|| free as f64 / write_rate));
    match seconds_to_full {
        Some(secs) => {
            low |= secs < 600.0;
            text.push_str(", full in ");
            text.push_str(&duration_text(secs));
        }
        None => text.push_str(", not filling"),
    }
    (text, low)
}

/// `95 s`, `41 min`, `5.2 h`, `12 d`.
pub fn duration_text(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        "-".into()
    } else if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 2.0 * 3600.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 48.0 * 3600.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.0} d", secs / 86_400.0)
    }
}

fn draw_sources(frame: &mut Frame, app: &App, s: &StatsSnapshot, area: Rect) {
    let wide = area.width >= 120;
    let spark_w: usize = if wide { 30 } else { 10 };
    let header = Row::new(vec![
        "source", "pkt/s", "hits/s", "MB/s", "rate", "ring", "losses",
    ])
    .style(DIM);
    let rows: Vec<Row> = s
        .inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| {
            let r = app.input_rates(i);
            let losses = input_losses(s, i);
            let total: u64 = losses.values().sum();
            let loss_text = if total == 0 {
                "none".to_string()
            } else {
                let reasons: Vec<String> = losses
                    .iter()
                    .filter(|(_, v)| **v > 0)
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                format!("{total}: {}", reasons.join(", "))
            };
            let ring_style = if inp.ring_capacity > 0 && inp.ring_fill * 4 >= inp.ring_capacity * 3
            {
                RED
            } else {
                Style::new()
            };
            Row::new(vec![
                Span::raw(inp.label.clone()),
                Span::raw(si(r.packets)),
                Span::raw(si(r.hits)),
                Span::raw(format!("{:.1}", r.bytes / 1e6)),
                Span::styled(sparkline(&app.sparkline(i), spark_w), OK),
                Span::styled(
                    gauge(inp.ring_fill, inp.ring_capacity, if wide { 12 } else { 4 }),
                    ring_style,
                ),
                Span::styled(loss_text, loss_style(total)),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(if wide { 28 } else { 16 }),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Length(spark_w as u16),
        Constraint::Length(if wide { 17 } else { 9 }),
        Constraint::Min(10),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(block(" sources "));
    frame.render_widget(table, area);
}

fn block(title: &str) -> Block<'_> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(DIM)
        .title(Span::styled(title, TITLE))
}

fn draw_health(frame: &mut Frame, app: &App, s: &StatsSnapshot, area: Rect) {
    let wide = area.width >= 120;
    let [spectrum, crystal, coinc] = Layout::horizontal([
        Constraint::Percentage(if wide { 50 } else { 42 }),
        Constraint::Length(if wide { 40 } else { 22 }),
        Constraint::Min(14),
    ])
    .areas(area);
    draw_spectrum(frame, app, s, spectrum);
    draw_crystal_map(frame, app, crystal);
    draw_coincidences(frame, app, coinc);
}

/// Vertical bar rows for `values` in `height` text rows (eighth-block resolution).
fn bar_rows(values: &[f64], height: usize) -> Vec<String> {
    const PARTS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().fold(0.0, f64::max);
    (0..height)
        .map(|row| {
            let from_bottom = height - 1 - row;
            values
                .iter()
                .map(|&v| {
                    let eighths = if max > 0.0 {
                        (v / max * (height * 8) as f64).round() as usize
                    } else {
                        0
                    };
                    let here = eighths.saturating_sub(from_bottom * 8).min(8);
                    PARTS[here]
                })
                .collect()
        })
        .collect()
}

/// The spectrum shown: all channels (1 keV bins) or, after `e`, the selected module's
/// (MODULE_ENERGY_BIN bins); with its label.
fn spectrum_source<'s>(app: &App, s: &'s StatsSnapshot) -> (&'s [u64], f64, String) {
    if app.module_spectrum
        && let Some(m) = app.module()
    {
        let bins = s
            .module_energy_bins
            .iter()
            .find(|(id, _)| *id == m)
            .map_or(&[][..], |(_, b)| b.as_slice());
        return (
            bins,
            f64::from(scandaq_core::snapshot::MODULE_ENERGY_BIN),
            format!("module {m}"),
        );
    }
    (&s.energy_bins, 1.0, "all channels".into())
}

/// The fraction of `bins` (of `width` keV from 0) whose centre lies in `[lo, hi)` keV;
/// `None` without counts.
pub fn in_window_fraction(bins: &[u64], width: f64, (lo, hi): (f64, f64)) -> Option<f64> {
    let total: u64 = bins.iter().sum();
    let inside: u64 = bins
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let e = (*i as f64 + 0.5) * width;
            e >= lo && e < hi
        })
        .map(|(_, c)| c)
        .sum();
    (total > 0).then(|| inside as f64 / total as f64)
}

/// The spectrum panel's title: what is shown, the scale, the run's energy window and the
/// share of the counts in it.
fn spectrum_title(app: &App, label: &str, share: Option<f64>, panel_width: u16) -> String {
    let window = match app.energy_window_kev() {
        Some((lo, hi)) => {
            let share = share.map_or(String::new(), |f| format!(": {:.0}%", f * 100.0));
            format!("window {lo:.0}-{hi:.0}{share}")
        }
        None => "no energy window".into(),
    };
    let scale = if app.log_spectrum { ", log" } else { "" };
    if panel_width >= 60 {
        format!(" energy spectrum, {label} (keV{scale}); {window} ")
    } else if app.module_spectrum {
        format!(" keV{scale}, {label}, {window} ")
    } else {
        format!(" keV{scale}, {window} ")
    }
}

fn draw_spectrum(frame: &mut Frame, app: &App, s: &StatsSnapshot, area: Rect) {
    // Without a window nothing is marked (an empty range).
    let (lo_w, hi_w) = app.energy_window_kev().unwrap_or((0.0, 0.0));
    let (bins, width, label) = spectrum_source(app, s);
    let total: u64 = bins.iter().sum();
    let share = in_window_fraction(bins, width, (lo_w, hi_w));
    let title = spectrum_title(app, &label, share, area.width);
    let b = block(&title);
    let inner = b.inner(area);
    frame.render_widget(b, area);
    if inner.height < 3 || inner.width < 10 {
        return;
    }
    if total == 0 {
        frame.render_widget(Paragraph::new(Line::styled("no singles yet", DIM)), inner);
        return;
    }
    let range = (hi_w * 1.3).clamp(800.0, 2048.0);
    let cols = inner.width as usize;
    let per = range / cols as f64;
    let values: Vec<f64> = (0..cols)
        .map(|c| {
            let a = (c as f64 * per / width) as usize;
            let b = (((c + 1) as f64 * per / width) as usize).max(a + 1);
            let n = bins
                .get(a.min(bins.len())..b.min(bins.len()))
                .map_or(0, |x| x.iter().sum::<u64>()) as f64;
            // `l`: log scale (log10(1 + n), so an empty column stays empty).
            if app.log_spectrum { n.ln_1p() } else { n }
        })
        .collect();
    let in_win = |c: usize| {
        let e = (c as f64 + 0.5) * per;
        e >= lo_w && e < hi_w
    };
    let bar_h = inner.height as usize - 2;
    let mut lines: Vec<Line> = bar_rows(&values, bar_h)
        .into_iter()
        .map(|row| {
            Line::from(
                row.chars()
                    .enumerate()
                    .map(|(c, ch)| {
                        Span::styled(
                            ch.to_string(),
                            if in_win(c) {
                                OK
                            } else {
                                Style::new().fg(Color::Gray)
                            },
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let marker: String = (0..cols)
        .map(|c| if in_win(c) { '━' } else { ' ' })
        .collect();
    lines.push(Line::styled(marker, OK));
    let mut axis = vec![' '; cols];
    let step = if cols >= 60 { 100.0 } else { 200.0 };
    let mut e = 0.0;
    while e < range {
        let c = (e / per) as usize;
        for (k, ch) in format!("{e:.0}").chars().enumerate() {
            if c + k < cols {
                axis[c + k] = ch;
            }
        }
        e += step;
    }
    lines.push(Line::styled(axis.into_iter().collect::<String>(), DIM));
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_crystal_map(frame: &mut Frame, app: &App, area: Rect) {
    let modules = app.modules();
    let title = match app.module() {
        Some(m) => format!(
            " module {m} [{}/{}] ",
            app.selected_module.min(modules.len() - 1) + 1,
            modules.len()
        ),
        None => " crystal map ".to_string(),
    };
    let b = block(&title);
    let inner = b.inner(area);
    frame.render_widget(b, area);
    let Some(module) = app.module() else {
        frame.render_widget(Paragraph::new(Line::styled("no hits yet", DIM)), inner);
        return;
    };
    let rates = app.module_rates(module);
    let mut live: Vec<f64> = rates.iter().copied().filter(|&r| r > 0.0).collect();
    live.sort_by(f64::total_cmp);
    let median = live.get(live.len() / 2).copied().unwrap_or(0.0);
    let max = live.last().copied().unwrap_or(0.0);
    let wide = inner.width >= 34;
    let (mut dead, mut hot) = (0, 0);
    let mut lines = Vec::new();
    for row in 0..8u32 {
        let mut spans = vec![];
        for col in 0..8u32 {
            let ch = row * 8 + col;
            let r = rates[ch as usize];
            let (text, mut style) = if r <= 0.0 {
                dead += 1;
                ("··".to_string(), DIM)
            } else if median > 0.0 && r > 3.0 * median {
                hot += 1;
                ("!!".to_string(), RED.bg(Color::Red).fg(Color::White))
            } else {
                let f = if max > 0.0 { r / max } else { 0.0 };
                let shade = ['░', '▒', '▓', '█'][((f * 3.999) as usize).min(3)];
                let color = if f < 0.25 {
                    Color::Blue
                } else if f < 0.5 {
                    Color::Cyan
                } else if f < 0.75 {
                    Color::Green
                } else {
                    Color::Yellow
                };
                (shade.to_string().repeat(2), Style::new().fg(color))
            };
            if ch == app.selected_channel {
                style = style.add_modifier(Modifier::REVERSED);
            }
            spans.push(Span::styled(text, style));
            if wide {
                spans.push(Span::raw("  "));
            }
        }
        lines.push(Line::from(spans));
        if wide && inner.height >= 20 {
            lines.push(Line::raw(""));
        }
    }
    let ch = app.selected_channel;
    let sel = format!(
        "ch {} ({}): {}/s",
        module * CHANNELS_PER_MODULE + ch,
        ch,
        si(rates[ch as usize])
    );
    lines.push(Line::raw(sel));
    lines.push(Line::from(vec![
        Span::styled(format!("dead {dead}"), if dead > 0 { WARN } else { DIM }),
        Span::raw(" "),
        Span::styled(format!("hot {hot}"), if hot > 0 { RED } else { DIM }),
    ]));
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The coincidence panel's title: the longest that fits, with the Δt convention (the help
/// overlay has it in full).
fn coincidence_title(width: u16) -> &'static str {
    [
        " coincidences, Δt = t(lower module) − t(higher) ",
        " coincidences, Δt = t(low mod) − t(high) ",
        " Δt = t(low mod) − t(high mod) ",
    ]
    .into_iter()
    .find(|t| t.chars().count() + 2 <= usize::from(width))
    .unwrap_or(" coincidences ")
}

fn draw_coincidences(frame: &mut Frame, app: &App, area: Rect) {
    let b = block(coincidence_title(area.width));
    let inner = b.inner(area);
    frame.render_widget(b, area);
    let Some(c) = app.coincidences() else {
        frame.render_widget(
            Paragraph::new(vec![
                Line::raw("no coincidences yet"),
                Line::styled("prompt  -/s", DIM),
                Line::styled("delayed -/s", DIM),
            ])
            .wrap(Wrap { trim: true }),
            inner,
        );
        return;
    };
    let mut lines = vec![
        Line::raw(match c.fwhm_ps() {
            Some(f) => format!("Δt FWHM {f:.0} ps"),
            None => "Δt FWHM -".into(),
        }),
        Line::raw(match c.peak_ps() {
            // `+0`, not `-0`, for a peak within half a ps of 0.
            Some(p) => format!("peak at {:+.0} ps", p.round() + 0.0),
            None => "peak at -".into(),
        }),
        Line::raw(format!(
            "prompt {}/s  delayed {}/s",
            si(c.prompt_rate),
            si(c.delayed_rate)
        )),
    ];
    let h = (inner.height as usize).saturating_sub(lines.len() + 1);
    if h > 0 && !c.dt_bins.is_empty() {
        let cols = inner.width as usize;
        let (bins, lo_ps, hi_ps) = dt_zoom(c);
        let per = bins.len().div_ceil(cols).max(1);
        let values: Vec<f64> = bins
            .chunks(per)
            .map(|x| x.iter().sum::<u64>() as f64)
            .collect();
        lines.extend(
            bar_rows(&values, h)
                .into_iter()
                .map(|r| Line::styled(r, Style::new().fg(Color::Magenta))),
        );
        lines.push(Line::styled(dt_axis(lo_ps, hi_ps, values.len()), DIM));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The part of the Δt histogram the panel draws: ±4 FWHM around 0 (at least ±500 ps, at
/// most the whole window), so the peak's shape shows; with its edges in ps.
fn dt_zoom(c: &crate::app::CoincidenceView) -> (&[u64], f64, f64) {
    let n = c.dt_bins.len();
    let half = c.fwhm_ps().map_or(f64::INFINITY, |f| (4.0 * f).max(500.0));
    let first = ((-half - c.dt_min_ps) / c.bin_ps)
        .floor()
        .clamp(0.0, n as f64) as usize;
    let last = ((half - c.dt_min_ps) / c.bin_ps)
        .ceil()
        .clamp(0.0, n as f64) as usize;
    if last <= first {
        return (&c.dt_bins, c.dt_min_ps, c.dt_min_ps + n as f64 * c.bin_ps);
    }
    let edge = |i: usize| c.dt_min_ps + i as f64 * c.bin_ps;
    (&c.dt_bins[first..last], edge(first), edge(last))
}

/// `-840 ps` at the left, `+840` at the right of `width` columns.
fn dt_axis(lo_ps: f64, hi_ps: f64, width: usize) -> String {
    let left = format!("{lo_ps:.0} ps");
    let right = format!("{hi_ps:+.0}");
    let gap = width.saturating_sub(left.chars().count() + right.chars().count());
    format!("{left}{}{right}", " ".repeat(gap))
}

fn draw_losses(frame: &mut Frame, app: &App, s: &StatsSnapshot, area: Rect) {
    let base = app.shown().and_then(|(_, b)| b);
    let before = base.map(all_losses).unwrap_or_default();
    let dt = base.map_or(0.0, |b| s.elapsed_s - b.elapsed_s);
    let rows: Vec<Row> = all_losses(s)
        .into_iter()
        .map(|((place, reason), n)| {
            let was = before
                .get(&(place.clone(), reason.clone()))
                .copied()
                .unwrap_or(n);
            let r = if dt > 0.0 {
                n.saturating_sub(was) as f64 / dt
            } else {
                0.0
            };
            Row::new(vec![
                Span::raw(place),
                Span::raw(reason),
                Span::styled(n.to_string(), loss_style(n)),
                Span::raw(format!("{}/s", si(r))),
            ])
        })
        .collect();
    let empty = rows.is_empty();
    let table = Table::new(
        rows,
        [
            Constraint::Percentage(40),
            Constraint::Percentage(35),
            Constraint::Length(12),
            Constraint::Min(8),
        ],
    )
    .header(Row::new(vec!["where", "reason", "count", "rate"]).style(DIM))
    .block(block(" losses by place and reason (tab: overview) "));
    frame.render_widget(table, area);
    if empty {
        let inner = Rect {
            y: area.y + 2,
            height: 1,
            ..block("").inner(area)
        };
        frame.render_widget(Paragraph::new(Line::styled("no losses", OK)), inner);
    }
}

/// Lines of the run-long rate history (singles, prompts, delayeds).
const RATE_LINES: u16 = 3;

/// `values` squeezed into `width` points (means of neighbours) when there are more.
fn squeeze(values: &[f64], width: usize) -> Vec<f64> {
    if values.len() <= width || width == 0 {
        return values.to_vec();
    }
    let per = values.len().div_ceil(width);
    values
        .chunks(per)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect()
}

/// Singles, prompts and delayeds per second over the whole run, one sparkline each (every
/// point one bucket of run time; the newest bucket's rate at the end).
fn draw_rate_history(frame: &mut Frame, app: &App, s: &StatsSnapshot, area: Rect) {
    if area.height < RATE_LINES {
        return draw_rate_history_line(frame, app, s, area);
    }
    let h = app.history();
    let width = area.width as usize;
    let span = format!(
        " run {}, {:.0} s/pt",
        clock(s.elapsed_s),
        h.singles.seconds_per_point()
    );
    let spark_w = width
        .saturating_sub(10 + 12 + span.chars().count())
        .clamp(4, 120);
    let sorted = s.coincidences.is_some();
    let rows = [
        ("singles", &h.singles, true, OK),
        (
            "prompts",
            &h.prompts,
            sorted,
            Style::new().fg(Color::Magenta),
        ),
        ("delayed", &h.delayeds, sorted, WARN),
    ];
    let lines: Vec<Line> = rows
        .into_iter()
        .enumerate()
        .map(|(i, (label, hist, shown, style))| {
            let mut spans = vec![Span::styled(format!(" {label:<9}"), TITLE)];
            if !shown {
                spans.push(Span::styled("not sorted in this run", DIM));
                return Line::from(spans);
            }
            let points = squeeze(hist.points(), spark_w);
            let last = hist
                .points()
                .last()
                .map_or("-".to_string(), |r| format!("{}/s", si(*r)));
            spans.push(Span::styled(sparkline(&points, spark_w), style));
            spans.push(Span::raw(format!(" {last:<11}")));
            if i == 0 {
                spans.push(Span::styled(span.clone(), DIM));
            }
            Line::from(spans)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), area);
}

/// The rate history on one line (small screens): a short sparkline and the newest rate each.
fn draw_rate_history_line(frame: &mut Frame, app: &App, s: &StatsSnapshot, area: Rect) {
    let h = app.history();
    let sorted = s.coincidences.is_some();
    let spark_w = (area.width as usize).saturating_sub(3 * 18).clamp(3, 40) / 3;
    let mut spans = vec![];
    for (label, hist, style) in [
        ("singles", &h.singles, OK),
        ("prompts", &h.prompts, Style::new().fg(Color::Magenta)),
        ("delayed", &h.delayeds, WARN),
    ] {
        spans.push(Span::styled(format!(" {label} "), TITLE));
        if label != "singles" && !sorted {
            spans.push(Span::styled("-", DIM));
            continue;
        }
        spans.push(Span::styled(
            sparkline(&squeeze(hist.points(), spark_w), spark_w),
            style,
        ));
        let last = hist
            .points()
            .last()
            .map_or("-".to_string(), |r| format!("{}/s", si(*r)));
        spans.push(Span::raw(format!(" {last}")));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The sink line: what the singles sink writes per second (PET runs), the output disk's
/// free space and time to full, and the time inputs waited for room in their rings.
fn draw_sink(frame: &mut Frame, app: &App, s: &StatsSnapshot, area: Rect) {
    let (_, rows, bytes) = app.totals_rates();
    let waited: u64 = s.inputs.iter().map(|i| i.ring_blocked_ms).sum();
    let (disk, low) = disk_text(s, bytes);
    let mut spans = vec![Span::styled(" sink ", TITLE)];
    if !app.stream_only() {
        spans.push(Span::raw(format!(
            "{} rows/s {:.1} MB/s │ ",
            si(rows),
            bytes / 1e6
        )));
    }
    if !disk.is_empty() {
        spans.push(Span::styled(disk, if low { RED } else { Style::new() }));
        spans.push(Span::raw(" │ "));
    }
    spans.push(Span::raw(format!("ring wait {waited} ms")));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_log(frame: &mut Frame, app: &App, area: Rect) {
    let b = block(" log ");
    let inner = b.inner(area);
    frame.render_widget(b, area);
    let n = inner.height as usize;
    let entries: Vec<_> = app.log_entries().collect();
    let lines: Vec<Line> = entries[entries.len().saturating_sub(n)..]
        .iter()
        .map(|e| {
            let style = match e.level {
                Level::Info => Style::new(),
                Level::Warn => WARN,
                Level::Error => RED,
            };
            Line::styled(format!("[{:>7.1} s] {}", e.t_s, e.text), style)
        })
        .collect();
    if lines.is_empty() {
        frame.render_widget(Paragraph::new(Line::styled("no warnings", DIM)), inner);
    } else {
        frame.render_widget(Paragraph::new(lines), inner);
    }
}

fn draw_footer(frame: &mut Frame, app: &App, s: &StatsSnapshot, area: Rect) {
    let mut spans = vec![];
    if let Some(st) = &app.status {
        spans.push(Span::styled(format!(" {st} "), WARN));
    }
    if matches!(s.state, RunState::Stopped | RunState::Failed) && !app.options.attached {
        spans.push(Span::styled(" run ended: q exits ", OK));
    }
    let keys = if app.shows_streams() {
        if app.has_pet() {
            " q quit  s stop  m marker  p freeze  tab view  d PET  ←→ stream  ↑↓ channel  ? help"
        } else {
            " q quit  s stop  m marker  p freeze  tab view  ←→ stream  ↑↓ channel  ? help"
        }
    } else if !app.streams().is_empty() {
        " q quit s stop m marker p freeze tab view l log d streams ←→↑↓ crystal ? help"
    } else {
        " q quit  s stop  m marker  p freeze  tab view  l log  ←→↑↓ crystal  ? help"
    };
    spans.push(Span::styled(keys, DIM));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// The help overlay: the keys of the panels this run has (no PET keys in a stream-only run,
/// no stream-panel keys in a PET-only one).
fn help_lines(app: &App) -> Vec<Line<'static>> {
    let pet = !app.stream_only();
    let streams = !app.streams().is_empty();
    let mut lines = vec![
        Line::raw("q / Esc   quit (asks first if the run is still going)"),
        Line::raw("Ctrl-C    stop the run and quit"),
        Line::raw("s         stop the run (files committed, manifest written)"),
        Line::raw("m         write a marker row (markers.parquet)"),
        Line::raw("p         freeze / unfreeze the display"),
        Line::raw("tab       overview / losses view"),
    ];
    if pet {
        lines.extend([
            Line::raw("← →       select module (crystal map)"),
            Line::raw("↑ ↓       select channel in the module"),
            Line::raw("e         energy spectrum: all channels / selected module"),
            Line::raw("l         energy spectrum: linear / log scale"),
            Line::raw("          Δt = t(lower module) − t(higher); same module:"),
            Line::raw("          t(lower channel) − t(higher)"),
        ]);
    }
    if pet {
        lines.push(Line::raw(
            "d         PET panels / stream panels (MEG, ultrasound)",
        ));
    }
    if streams {
        lines.push(Line::raw(
            "← → ↑ ↓   on stream panels: select stream, MEG channel",
        ));
    }
    lines.push(Line::raw("?         this help (any key closes it)"));
    lines
}

fn draw_overlays(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if app.help {
        let lines = help_lines(app);
        let r = centered(area, 66, lines.len() as u16 + 2);
        frame.render_widget(Clear, r);
        frame.render_widget(Paragraph::new(lines).block(block(" help ")), r);
    }
    if app.confirm_quit {
        let r = centered(area, 46, 4);
        frame.render_widget(Clear, r);
        frame.render_widget(
            Paragraph::new(vec![
                Line::styled("The acquisition is still running.", WARN),
                Line::raw("Stop it and quit? y = yes, any key = no"),
            ])
            .block(block(" quit? ")),
            r,
        );
    }
}

/// A magnetic field (or raw counts) in a readable unit: `812 fT`, `1.25 pT`, `3.1 k counts`.
pub fn field(x: f64, unit: &str) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    if unit == "fT" {
        if x.abs() >= 1e6 {
            format!("{:.2} nT", x / 1e6)
        } else if x.abs() >= 1e3 {
            format!("{:.2} pT", x / 1e3)
        } else {
            format!("{x:.0} fT")
        }
    } else {
        format!("{} {unit}", si(x))
    }
}

/// The stream panels: the selected stream, and the next one beside it on a wide screen.
fn draw_streams(frame: &mut Frame, app: &App, area: Rect) {
    let streams = app.streams();
    let n = streams.len();
    let first = app.stream_index();
    let shown = if area.width >= 160 && n >= 2 { 2 } else { 1 };
    let areas = Layout::horizontal(vec![Constraint::Ratio(1, shown as u32); shown]).split(area);
    for (k, rect) in areas.iter().enumerate() {
        let i = (first + k) % n;
        let s = &streams[i];
        let which = if n > 1 {
            format!(" [{}/{n}, ←→]", i + 1)
        } else {
            String::new()
        };
        match &s.figures {
            StreamFigures::Meg(m) => draw_meg(frame, app, s.source_id, m, &which, k == 0, *rect),
            StreamFigures::Ultrasound(u) => draw_us(frame, s.source_id, u, &which, *rect),
        }
    }
}

/// One MEG channel's map cell: the health glyph, or a shade by RMS relative to the median.
fn meg_cell(health: ChannelHealth, rms: f64, median: f64) -> (char, Style) {
    match health {
        ChannelHealth::Flat => ('·', WARN),
        ChannelHealth::Saturated => ('#', RED.bg(Color::Red).fg(Color::White)),
        ChannelHealth::Noisy => ('!', RED.bg(Color::Red).fg(Color::White)),
        ChannelHealth::Ok => {
            let f = if median > 0.0 { rms / median } else { 0.0 };
            if f < 0.5 {
                ('░', Style::new().fg(Color::Blue))
            } else if f < 1.0 {
                ('▒', Style::new().fg(Color::Cyan))
            } else if f < 2.0 {
                ('▓', Style::new().fg(Color::Green))
            } else {
                ('█', Style::new().fg(Color::Yellow))
            }
        }
    }
}

fn draw_meg(
    frame: &mut Frame,
    app: &App,
    id: u32,
    m: &MegSnapshot,
    which: &str,
    selected: bool,
    area: Rect,
) {
    let b = block_owned(format!(" MEG stream {id}{which} "));
    let inner = b.inner(area);
    frame.render_widget(b, area);
    let mut lines = vec![meg_rates_line(m)];
    if m.windows == 0 || m.rms.is_empty() {
        lines.push(Line::styled(
            "channel RMS: waiting for the first analysis window",
            DIM,
        ));
        frame.render_widget(Paragraph::new(lines), inner);
        return;
    }
    let width = inner.width as usize;
    lines.push(meg_health_line(m));
    lines.push(meg_bad_channels_line(m, width));
    // The channel map: one cell per channel, rows of up to 64.
    let sel = app.meg_channel_index(m.rms.len());
    let room = (inner.height as usize).saturating_sub(lines.len() + 1);
    lines.extend(meg_channel_map(m, width, room, selected.then_some(sel)));
    if selected {
        lines.push(meg_selected_channel_line(m, sel));
    }
    // Per-channel RMS bars when there is room.
    let left = (inner.height as usize).saturating_sub(lines.len());
    if left >= 3 && width >= 10 {
        let values = fit_columns(&m.rms, width);
        lines.extend(
            bar_rows(&values, left.min(10))
                .into_iter()
                .map(|r| Line::styled(r, Style::new().fg(Color::Cyan))),
        );
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// Sample rate, blocks, trigger rate and the mains line of a MEG stream.
fn meg_rates_line(m: &MegSnapshot) -> Line<'static> {
    let sep = Span::styled(" │ ", DIM);
    let mains = if m.windows == 0 {
        "mains -".to_string()
    } else if m.mains_peak_hz > 0.0 {
        format!(
            "mains {:.0} Hz: peak {:.2} Hz {}",
            m.mains_hz,
            m.mains_peak_hz,
            field(m.mains_amplitude, &m.unit)
        )
    } else {
        format!(
            "mains {:.0} Hz {}",
            m.mains_hz,
            field(m.mains_amplitude, &m.unit)
        )
    };
    Line::from(vec![
        Span::raw(format!("{:.3} Hz", m.rate_hz)),
        sep.clone(),
        Span::raw(format!("blocks {}", si(m.blocks as f64))),
        sep.clone(),
        Span::raw(format!("trig {:.2} Hz", m.trigger_rate_hz)),
        sep,
        Span::raw(mains),
    ])
}

/// The median RMS and how many channels are in each health state.
fn meg_health_line(m: &MegSnapshot) -> Line<'static> {
    let (ok, flat, sat, noisy) = m.health_counts();
    let count = |label: &str, n: usize, bad: Style| {
        Span::styled(format!("{label} {n}"), if n > 0 { bad } else { DIM })
    };
    Line::from(vec![
        Span::raw(format!("RMS median {}", field(m.median_rms, &m.unit))),
        Span::styled(" │ ", DIM),
        Span::styled(format!("ok {ok}"), OK),
        Span::raw(" "),
        count("flat", flat, WARN),
        Span::raw(" "),
        count("saturated", sat, RED),
        Span::raw(" "),
        count("noisy", noisy, RED),
    ])
}

/// The channels that are not ok, by name, as many as fit in `width`.
fn meg_bad_channels_line(m: &MegSnapshot, width: usize) -> Line<'static> {
    let mut bad: Vec<Span> = Vec::new();
    let mut used = 0usize;
    for (i, h) in m.health.iter().enumerate() {
        if *h == ChannelHealth::Ok {
            continue;
        }
        let name = m.channel_names.get(i).map_or("?", String::as_str);
        let text = match h {
            ChannelHealth::Noisy if m.median_rms > 0.0 => format!(
                "{name} {} {:.1}x ",
                h.name(),
                f64::from(m.rms[i]) / m.median_rms
            ),
            _ => format!("{name} {} ", h.name()),
        };
        if used + text.chars().count() > width.saturating_sub(4) {
            bad.push(Span::styled("…", DIM));
            break;
        }
        used += text.chars().count();
        let style = if *h == ChannelHealth::Flat { WARN } else { RED };
        bad.push(Span::styled(text, style));
    }
    if bad.is_empty() {
        Line::styled("all channels ok", OK)
    } else {
        Line::from(bad)
    }
}

/// One cell per channel, rows of up to 64, at most `room` rows; the `selected` channel reversed.
fn meg_channel_map(
    m: &MegSnapshot,
    width: usize,
    room: usize,
    selected: Option<usize>,
) -> Vec<Line<'static>> {
    let n = m.rms.len();
    let cols = n.min(64).min(width.max(1));
    let cell_w = (width / cols.max(1)).clamp(1, 2);
    let rows = n.div_ceil(cols.max(1));
    (0..rows.min(room))
        .map(|r| {
            let spans: Vec<Span> = (r * cols..((r + 1) * cols).min(n))
                .map(|i| {
                    let (ch, mut style) = meg_cell(
                        m.health.get(i).copied().unwrap_or_default(),
                        f64::from(m.rms[i]),
                        m.median_rms,
                    );
                    if selected == Some(i) {
                        style = style.add_modifier(Modifier::REVERSED);
                    }
                    Span::styled(ch.to_string().repeat(cell_w), style)
                })
                .collect();
            Line::from(spans)
        })
        .collect()
}

/// Name, RMS and health of the channel the operator selected.
fn meg_selected_channel_line(m: &MegSnapshot, sel: usize) -> Line<'static> {
    let h = m.health.get(sel).copied().unwrap_or_default();
    Line::from(vec![
        Span::raw(format!(
            "ch {} {}: {} ",
            sel + 1,
            m.channel_names.get(sel).map_or("?", String::as_str),
            m.rms
                .get(sel)
                .map_or("-".to_string(), |r| field(f64::from(*r), &m.unit))
        )),
        Span::styled(h.name(), if h == ChannelHealth::Ok { OK } else { WARN }),
        Span::styled(format!("  (RMS over {:.1} s, ↑↓)", m.window_s), DIM),
    ])
}

/// An ultrasound element whose RMS is below this fraction of the median is shown as dead.
pub const DEAD_ELEMENT_FRACTION: f64 = 0.1;

fn draw_us(frame: &mut Frame, id: u32, u: &UsSnapshot, which: &str, area: Rect) {
    let b = block_owned(format!(" ultrasound stream {id}{which} "));
    let inner = b.inner(area);
    frame.render_widget(b, area);
    let sep = Span::styled(" │ ", DIM);
    let incomplete = if u.events_incomplete > 0 {
        Span::styled(format!("INCOMPLETE {}", u.events_incomplete), RED)
    } else {
        Span::styled("incomplete 0", OK)
    };
    let mut first = vec![
        Span::raw(format!("{:.1} frames/s", u.frames_per_s)),
        sep.clone(),
        Span::raw(format!("{} events/s", si(u.events_per_s))),
        sep.clone(),
        Span::raw(format!("{:.1} MB/s", u.mb_per_s)),
        sep.clone(),
        Span::raw(format!("written {}", si(u.events_written as f64))),
        sep.clone(),
        incomplete,
    ];
    if !u.rates_from_tx_clock && u.events_written > 0 {
        first.push(Span::styled(" (wall clock)", DIM));
    }
    let mut lines = vec![Line::from(first)];
    let Some((frame_no, tx)) = u.amplitude_event else {
        lines.push(Line::styled(
            "element amplitude: no complete event yet",
            DIM,
        ));
        frame.render_widget(Paragraph::new(lines), inner);
        return;
    };
    let mut sorted: Vec<f32> = u.element_rms.clone();
    sorted.sort_by(f32::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let (imax, max) = u
        .element_rms
        .iter()
        .enumerate()
        .fold((0, 0.0f32), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
    let peak = u.element_peak.iter().copied().fold(0.0f32, f32::max);
    lines.push(Line::raw(format!(
        "element RMS (LSB), frame {frame_no} tx {tx}: median {median:.0}, max {max:.0} (element {}), peak {peak:.0}",
        imax + 1
    )));
    // Elements far below the others: dead or disconnected.
    let dead: Vec<String> = u
        .element_rms
        .iter()
        .enumerate()
        .filter(|&(_, &r)| f64::from(r) < DEAD_ELEMENT_FRACTION * f64::from(median))
        .map(|(i, _)| (i + 1).to_string())
        .collect();
    if !dead.is_empty() {
        lines.push(Line::styled(
            format!("DEAD elements ({}): {}", dead.len(), dead.join(", ")),
            WARN,
        ));
    }
    let width = inner.width as usize;
    let left = (inner.height as usize).saturating_sub(lines.len() + 1);
    let n = u.element_rms.len();
    if left >= 1 && n > 0 && width >= 10 {
        let values = fit_columns(&u.element_rms, width);
        let cols = values.len();
        lines.extend(
            bar_rows(&values, left.min(12))
                .into_iter()
                .map(|r| Line::styled(r, Style::new().fg(Color::Magenta))),
        );
        let last = n.to_string();
        let mut axis = format!("1{}", " ".repeat(cols.saturating_sub(1 + last.len())));
        axis.push_str(&last);
        lines.push(Line::styled(format!("{axis}  element"), DIM));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// One bar per column: each value repeated when there are fewer values than columns, the
/// largest of each group when there are more (a single bad channel stays visible).
fn fit_columns(values: &[f32], width: usize) -> Vec<f64> {
    if values.is_empty() || width == 0 {
        return Vec::new();
    }
    if values.len() <= width {
        let k = width / values.len();
        return values
            .iter()
            .flat_map(|&v| std::iter::repeat_n(f64::from(v), k))
            .collect();
    }
    let per = values.len().div_ceil(width);
    values
        .chunks(per)
        .map(|c| f64::from(c.iter().copied().fold(0.0f32, f32::max)))
        .collect()
}

fn block_owned(title: String) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(DIM)
        .title(Span::styled(title, TITLE))
}
