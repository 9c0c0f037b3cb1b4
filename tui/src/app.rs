//! The dashboard's state: a history of snapshots (for rates and sparklines), what the operator
//! has selected, the freeze and help flags, and a log of warnings derived from how the
//! snapshots change. Pure: no terminal, no clock; `update` takes snapshots, `handle_key` takes
//! keys and says what the caller should do.

use scandaq_core::LossReason;
use scandaq_core::snapshot::{RunState, StatsSnapshot, StreamFigures, StreamSnapshot};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Channels per module (one TOFPET2 chip): a module is `channel >> 6`.
pub const CHANNELS_PER_MODULE: u32 = 64;
/// Rate samples kept for the sparklines.
pub const SPARK_POINTS: usize = 120;
/// Log entries kept.
pub const LOG_ENTRIES: usize = 200;
/// The window (seconds of run time) over which rates are averaged.
pub const RATE_WINDOW_S: f64 = 1.0;
/// Points a [`RunHistory`] keeps at most: when full, neighbours are merged so the points
/// always cover the whole run.
pub const RUN_HISTORY_POINTS: usize = 128;
/// Run time (s) one [`RunHistory`] point covers at first.
pub const RUN_HISTORY_FIRST_BUCKET_S: f64 = 1.0;

/// The rate of one counter over the whole run: one point per bucket of run time (at first
/// [`RUN_HISTORY_FIRST_BUCKET_S`]); when [`RUN_HISTORY_POINTS`] are reached, each pair of
/// neighbours is merged into one point and buckets double, so a long run still fits.
#[derive(Clone, Debug, PartialEq)]
pub struct RunHistory {
    bucket_s: f64,
    points: Vec<f64>,
    /// Run time and count at the start of the bucket being filled.
    bucket_start: Option<(f64, u64)>,
}

impl Default for RunHistory {
    fn default() -> Self {
        Self {
            bucket_s: RUN_HISTORY_FIRST_BUCKET_S,
            points: Vec::new(),
            bucket_start: None,
        }
    }
}

impl RunHistory {
    /// Takes the counter's value `count` at run time `t_s`; closes a bucket (one point, the
    /// mean rate over it) once it covers at least the bucket time.
    pub fn record(&mut self, t_s: f64, count: u64) {
        let Some((t0, n0)) = self.bucket_start else {
            self.bucket_start = Some((t_s, count));
            return;
        };
        if t_s < t0 || count < n0 {
            // A new run behind the same socket: start over.
            *self = Self::default();
            self.bucket_start = Some((t_s, count));
            return;
        }
        let dt = t_s - t0;
        if dt < self.bucket_s {
            return;
        }
        self.points.push((count - n0) as f64 / dt);
        self.bucket_start = Some((t_s, count));
        if self.points.len() >= RUN_HISTORY_POINTS {
            self.points = self
                .points
                .chunks(2)
                .map(|p| p.iter().sum::<f64>() / p.len() as f64)
                .collect();
            self.bucket_s *= 2.0;
        }
    }

    /// Mean rates (per second) of the closed buckets, oldest first.
    pub fn points(&self) -> &[f64] {
        &self.points
    }

    /// Run time one point covers now, s.
    pub fn seconds_per_point(&self) -> f64 {
        self.bucket_s
    }
}

/// A key the dashboard understands (backend-neutral; see [`crate::term::key_from_event`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A printable character.
    Char(char),
    /// Arrow left.
    Left,
    /// Arrow right.
    Right,
    /// Arrow up.
    Up,
    /// Arrow down.
    Down,
    /// Tab.
    Tab,
    /// Shift-Tab.
    BackTab,
    /// Escape.
    Esc,
    /// Enter.
    Enter,
    /// Ctrl-C (the terminal is in raw mode, so it arrives as a key, not a signal).
    CtrlC,
}

/// What the caller of [`App::handle_key`] should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond redrawing.
    None,
    /// Leave the dashboard (in-process: stop the run first if it still runs).
    Quit,
    /// `q` during a running acquisition: the dashboard now asks to confirm (`y` quits).
    ConfirmQuit,
    /// Stop the run (it drains, commits its files and writes the manifest).
    Stop,
    /// Write a marker row with this text into the run's data.
    Marker(String),
}

/// Which main view is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Header, sources, detector health, sink, log.
    Overview,
    /// Every loss counter by place and reason, with rates.
    Losses,
}

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// State changes, markers, ends of stream.
    Info,
    /// New loss reasons, reconnects, calibration gaps.
    Warn,
    /// The run ended on an error.
    Error,
}

/// One line of the log pane.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    /// Run time (s) when it was seen.
    pub t_s: f64,
    /// Severity.
    pub level: Level,
    /// What happened.
    pub text: String,
}

/// Coincidence statistics for the detector-health panel.
///
/// Filled by [`coincidence_view`] from the snapshot's coincidence fields; the panel says "no
/// coincidences yet" while there are none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CoincidenceView {
    /// Time-difference histogram (counts per bin), Δt oriented by detector: t of the single
    /// of the smaller module (then channel) minus t of the other
    /// ([`scandaq_core::snapshot::detector_ordered_dt_ps`]).
    pub dt_bins: Vec<u64>,
    /// Time difference at the low edge of bin 0, ps.
    pub dt_min_ps: f64,
    /// Bin width, ps.
    pub bin_ps: f64,
    /// Prompt coincidences per second.
    pub prompt_rate: f64,
    /// Delayed-window coincidences per second (randoms estimate).
    pub delayed_rate: f64,
}

impl CoincidenceView {
    /// Full width at half maximum of the time-difference histogram in ps (linear
    /// interpolation of the half-maximum crossings), `None` when empty.
    pub fn fwhm_ps(&self) -> Option<f64> {
        fwhm(&self.dt_bins, self.bin_ps)
    }

    /// Centre of the peak in ps: the midpoint of its two half-maximum crossings (0 for a
    /// point source centred between two modules), `None` when empty.
    pub fn peak_ps(&self) -> Option<f64> {
        let (left, right) = half_maximum_crossings(&self.dt_bins)?;
        // Bin i covers [min + i*w, min + (i+1)*w): its centre is at i + 0.5.
        Some(self.dt_min_ps + ((left + right) / 2.0 + 0.5) * self.bin_ps)
    }
}

/// FWHM of a histogram in units of `bin_width` (linear interpolation on both flanks).
pub fn fwhm(bins: &[u64], bin_width: f64) -> Option<f64> {
    let (left, right) = half_maximum_crossings(bins)?;
    Some((right - left) * bin_width)
}

/// Where a histogram's highest peak crosses half its maximum on either side, in bins
/// (fractional, linear interpolation; bin i's count sits at i), `None` when empty.
fn half_maximum_crossings(bins: &[u64]) -> Option<(f64, f64)> {
    let (imax, &max) = bins.iter().enumerate().max_by_key(|(_, c)| **c)?;
    if max == 0 {
        return None;
    }
    let half = max as f64 / 2.0;
    let mut left = 0.0;
    for i in (0..imax).rev() {
        let (a, b) = (bins[i] as f64, bins[i + 1] as f64);
        if a <= half {
            left = i as f64 + (half - a) / (b - a).max(1e-12);
            break;
        }
    }
    let mut right = (bins.len() - 1) as f64;
    for i in imax + 1..bins.len() {
        let (a, b) = (bins[i - 1] as f64, bins[i] as f64);
        if b <= half {
            right = (i - 1) as f64 + (a - half) / (a - b).max(1e-12);
            break;
        }
    }
    Some((left, right))
}

/// Coincidence statistics from a snapshot: the prompt time-difference histogram as
/// published, and prompt/delayed rates since `before` (or averaged over the run without it).
pub fn coincidence_view(
    snapshot: &StatsSnapshot,
    before: Option<&StatsSnapshot>,
) -> Option<CoincidenceView> {
    let c = snapshot.coincidences.as_ref()?;
    let earlier = before.and_then(|b| b.coincidences.as_ref().map(|e| (b.elapsed_s, e)));
    let (dt, prompts0, delayeds0) = match earlier {
        Some((t0, e)) if snapshot.elapsed_s > t0 => {
            (snapshot.elapsed_s - t0, e.prompts, e.delayeds)
        }
        _ => (snapshot.elapsed_s, 0, 0),
    };
    let rate = |now: u64, then: u64| {
        if dt > 0.0 {
            now.saturating_sub(then) as f64 / dt
        } else {
            0.0
        }
    };
    Some(CoincidenceView {
        dt_bins: c.dt_bins.clone(),
        dt_min_ps: c.dt_min_ps,
        bin_ps: c.bin_ps,
        prompt_rate: rate(c.prompts, prompts0),
        delayed_rate: rate(c.delayeds, delayeds0),
    })
}

/// How the dashboard is used. (The energy window marked on the spectrum is the run's own,
/// from its snapshot: [`App::energy_window_kev`].)
#[derive(Clone, Debug, Default)]
pub struct AppOptions {
    /// Attached to another process's run (`scandaq top`): `q` leaves the viewer without
    /// asking, since it stops nothing.
    pub attached: bool,
}

/// Rates of one input over the rate window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InputRates {
    /// Packets per second.
    pub packets: f64,
    /// Hits decoded per second (boards of this input).
    pub hits: f64,
    /// Bytes per second.
    pub bytes: f64,
    /// Losses per second (every reason).
    pub losses: f64,
}

/// The dashboard's state.
pub struct App {
    /// Options set at start.
    pub options: AppOptions,
    /// Snapshots of the last [`RATE_WINDOW_S`] seconds (newest last), for rates.
    recent: VecDeque<StatsSnapshot>,
    /// What is shown (the newest snapshot unless frozen).
    shown: Option<usize>,
    /// Frozen copy (display does not move while `p` holds it).
    frozen: Option<(StatsSnapshot, Option<StatsSnapshot>)>,
    /// Per-input hits/s history (sparklines).
    spark: Vec<VecDeque<f64>>,
    /// Singles/s history.
    singles_spark: VecDeque<f64>,
    /// Singles, prompts and delayeds per second over the whole run.
    history: RateHistories,
    coincidences: Option<CoincidenceView>,
    log: VecDeque<LogEntry>,
    /// Index into the sorted list of modules with hits.
    pub selected_module: usize,
    /// `e` pressed: the energy spectrum shows the selected module instead of all channels.
    pub module_spectrum: bool,
    /// `l` pressed: the energy spectrum's counts on a logarithmic scale.
    pub log_spectrum: bool,
    /// Channel within the selected module (0..63).
    pub selected_channel: u32,
    /// The main view.
    pub view: View,
    /// `?` pressed: the help overlay is open.
    pub help: bool,
    /// `q` pressed during a running acquisition: waiting for `y`.
    pub confirm_quit: bool,
    /// A line shown in the footer (last action's result).
    pub status: Option<String>,
    markers: u32,
    /// `d` pressed in a run with PET boards and streams: the stream panels replace the PET
    /// ones (a run with streams only always shows them).
    pub prefer_streams: bool,
    /// Index into the snapshot's streams of the stream shown first (←→).
    pub selected_stream: usize,
    /// Index into the selected MEG stream's channels (↑↓).
    pub selected_meg_channel: usize,
}

/// Which input an index of `boards_decoded` belongs to: the input that lists the board id,
/// or the only input when there is one and it lists none (the demo's simulator).
fn boards_of_input(s: &StatsSnapshot, input: usize) -> Vec<usize> {
    let Some(inp) = s.inputs.get(input) else {
        return vec![];
    };
    let ids: BTreeSet<u32> = inp.boards.iter().map(|b| b.source_id).collect();
    s.boards_decoded
        .iter()
        .enumerate()
        .filter(|(_, b)| ids.contains(&b.source_id) || (ids.is_empty() && s.inputs.len() == 1))
        .map(|(i, _)| i)
        .collect()
}

/// Hits decoded by the boards of input `i`.
pub fn input_hits(s: &StatsSnapshot, i: usize) -> u64 {
    boards_of_input(s, i)
        .into_iter()
        .map(|b| s.boards_decoded[b].hits_decoded)
        .sum()
}

/// Every loss counter of input `i` by `(place, reason)`: the input's own reasons, its ring and
/// kernel drops, its boards' sequence gaps and decode losses.
pub fn input_losses(s: &StatsSnapshot, i: usize) -> BTreeMap<String, u64> {
    let Some(inp) = s.inputs.get(i) else {
        return BTreeMap::new();
    };
    let mut out = inp.losses.clone();
    out.add(LossReason::RingOverflowPackets, inp.ring_dropped_packets);
    out.add(LossReason::UdpKernelDrops, inp.kernel_drops);
    out.add(
        LossReason::PacketGaps,
        inp.boards.iter().map(|b| b.packets_missing).sum(),
    );
    for b in boards_of_input(s, i) {
        out.merge(&s.boards_decoded[b].losses);
    }
    out.by_name()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Every loss counter of the snapshot as `(place, reason) -> count` (place: the input label,
/// `board N` for decode losses of boards no input lists).
pub fn all_losses(s: &StatsSnapshot) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    let mut claimed = BTreeSet::new();
    for (i, inp) in s.inputs.iter().enumerate() {
        claimed.extend(boards_of_input(s, i));
        for (k, v) in input_losses(s, i) {
            out.insert((inp.label.clone(), k), v);
        }
    }
    for (i, b) in s.boards_decoded.iter().enumerate() {
        if claimed.contains(&i) {
            continue;
        }
        for (k, v) in b.losses.by_name() {
            out.insert((format!("board {}", b.source_id), k.to_string()), v);
        }
    }
    out
}

fn rate(now: u64, then: u64, dt: f64) -> f64 {
    if dt <= 0.0 {
        0.0
    } else {
        now.saturating_sub(then) as f64 / dt
    }
}

impl App {
    /// A dashboard with no data yet.
    pub fn new(options: AppOptions) -> Self {
        Self {
            options,
            recent: VecDeque::new(),
            shown: None,
            frozen: None,
            spark: Vec::new(),
            singles_spark: VecDeque::new(),
            history: RateHistories::default(),
            coincidences: None,
            log: VecDeque::new(),
            selected_module: 0,
            module_spectrum: false,
            log_spectrum: false,
            selected_channel: 0,
            view: View::Overview,
            help: false,
            confirm_quit: false,
            status: None,
            markers: 0,
            prefer_streams: false,
            selected_stream: 0,
            selected_meg_channel: 0,
        }
    }

    /// Whether the snapshot on screen has PET boards (hits decoded or singles).
    pub fn has_pet(&self) -> bool {
        self.shown()
            .is_some_and(|(s, _)| !s.boards_decoded.is_empty() || s.singles > 0)
    }

    /// Whether the run on screen has streams (MEG, ultrasound) and no PET boards: then no PET
    /// panel or word is shown (a run with neither yet counts as PET, the default).
    pub fn stream_only(&self) -> bool {
        !self.streams().is_empty() && !self.has_pet()
    }

    /// The streams (MEG, ultrasound) of the snapshot on screen.
    pub fn streams(&self) -> &[StreamSnapshot] {
        self.shown().map_or(&[], |(s, _)| s.streams.as_slice())
    }

    /// Whether the detector area shows the stream panels: a run with streams and no PET
    /// boards, or a mixed run after `d`.
    pub fn shows_streams(&self) -> bool {
        !self.streams().is_empty() && (self.prefer_streams || !self.has_pet())
    }

    /// Index of the selected stream (clamped to the streams there are).
    pub fn stream_index(&self) -> usize {
        self.selected_stream
            .min(self.streams().len().saturating_sub(1))
    }

    /// Index of the selected MEG channel in `channels` channels (clamped).
    pub fn meg_channel_index(&self, channels: usize) -> usize {
        self.selected_meg_channel.min(channels.saturating_sub(1))
    }

    fn selected_meg_channels(&self) -> usize {
        match self.streams().get(self.stream_index()).map(|s| &s.figures) {
            Some(StreamFigures::Meg(m)) => m.rms.len(),
            _ => 0,
        }
    }

    /// Takes a new snapshot: rates, sparklines and the log move on (the display stays put
    /// while frozen; the history and the log still advance).
    pub fn update(&mut self, snapshot: StatsSnapshot) {
        let prev = self.recent.back().cloned();
        if let Some(p) = &prev
            && snapshot.elapsed_s < p.elapsed_s
        {
            // A new run behind the same socket (or a clock step): start over.
            self.recent.clear();
            self.spark.clear();
            self.singles_spark.clear();
        }
        let prev = self.recent.back().cloned();
        self.derive_log(prev.as_ref(), &snapshot);
        self.history.record(&snapshot);
        if let Some(p) = &prev {
            let dt = snapshot.elapsed_s - p.elapsed_s;
            self.spark.resize_with(snapshot.inputs.len(), VecDeque::new);
            for i in 0..snapshot.inputs.len() {
                let r = if i < p.inputs.len() {
                    rate(input_hits(&snapshot, i), input_hits(p, i), dt)
                } else {
                    0.0
                };
                push_capped(&mut self.spark[i], r, SPARK_POINTS);
            }
            push_capped(
                &mut self.singles_spark,
                rate(snapshot.singles, p.singles, dt),
                SPARK_POINTS,
            );
        }
        self.coincidences =
            coincidence_view(&snapshot, self.recent.front()).or(self.coincidences.take());
        self.recent.push_back(snapshot);
        // Keep one snapshot at or before the start of the rate window.
        let newest = self.recent.back().map_or(0.0, |s| s.elapsed_s);
        while self.recent.len() > 2 && self.recent[1].elapsed_s <= newest - RATE_WINDOW_S {
            self.recent.pop_front();
        }
        self.shown = Some(self.recent.len() - 1);
    }

    /// Replaces the coincidence statistics (HOOK for the coincidence sorter; see
    /// [`CoincidenceView`]).
    pub fn set_coincidences(&mut self, view: Option<CoincidenceView>) {
        self.coincidences = view;
    }

    /// The coincidence statistics, if any exist.
    pub fn coincidences(&self) -> Option<&CoincidenceView> {
        self.coincidences.as_ref()
    }

    fn derive_log(&mut self, prev: Option<&StatsSnapshot>, now: &StatsSnapshot) {
        let t = now.elapsed_s;
        let state_changed = prev.is_none_or(|p| p.state != now.state);
        if state_changed && prev.is_some() {
            let level = if now.state == RunState::Failed {
                Level::Error
            } else {
                Level::Info
            };
            self.log(t, level, format!("run {}", now.state.name()));
        }
        let had_failure = prev.is_some_and(|p| p.health.failure.is_some());
        if let (Some(f), false) = (now.health.failure, had_failure) {
            let what = now.health.error.clone().unwrap_or_default();
            self.log(t, Level::Error, format!("FAILED ({f}): {what}"));
        }
        let warned = prev.map_or(0, |p| p.health.warnings.len());
        let fresh = if now.health.warnings.len() >= warned {
            &now.health.warnings[warned..]
        } else {
            // The snapshot's list was trimmed: its last entry is the new one.
            &now.health.warnings[now.health.warnings.len().saturating_sub(1)..]
        };
        for w in fresh {
            self.log(t, Level::Warn, w.clone());
        }
        let before = prev.map(all_losses).unwrap_or_default();
        for ((place, reason), &n) in &all_losses(now) {
            let was = before
                .get(&(place.clone(), reason.clone()))
                .copied()
                .unwrap_or(0);
            if n <= was {
                continue;
            }
            if reason.contains("reconnect") {
                self.log(t, Level::Warn, format!("{place}: reconnected ({n} so far)"));
            } else if was == 0 {
                let what = if reason.starts_with("no_") && reason.contains("calibration") {
                    "calibration gap"
                } else {
                    "new loss"
                };
                self.log(t, Level::Warn, format!("{what}: {reason} = {n} at {place}"));
            }
        }
        for inp in &now.inputs {
            let warned = prev
                .and_then(|p| p.inputs.iter().find(|i| i.label == inp.label))
                .map_or(0, |i| i.warnings.len());
            for w in inp.warnings.iter().skip(warned) {
                self.log(t, Level::Warn, w.clone());
            }
            for b in &inp.boards {
                let was_ended = prev
                    .and_then(|p| p.inputs.iter().find(|i| i.label == inp.label))
                    .and_then(|i| i.boards.iter().find(|x| x.source_id == b.source_id))
                    .is_some_and(|x| x.ended);
                if b.ended && !was_ended {
                    self.log(
                        t,
                        Level::Info,
                        format!("{}: board {} ended its stream", inp.label, b.source_id),
                    );
                }
            }
        }
    }

    /// Adds a line to the log pane.
    pub fn log(&mut self, t_s: f64, level: Level, text: String) {
        push_capped(&mut self.log, LogEntry { t_s, level, text }, LOG_ENTRIES);
    }

    /// Adds a line at the current run time.
    pub fn note(&mut self, level: Level, text: String) {
        let t = self.latest().map_or(0.0, |s| s.elapsed_s);
        self.log(t, level, text);
    }

    /// The log, oldest first.
    pub fn log_entries(&self) -> impl DoubleEndedIterator<Item = &LogEntry> + ExactSizeIterator {
        self.log.iter()
    }

    /// The newest snapshot received (frozen or not).
    pub fn latest(&self) -> Option<&StatsSnapshot> {
        self.recent.back()
    }

    /// The snapshot on screen and the one the rates are taken against.
    pub fn shown(&self) -> Option<(&StatsSnapshot, Option<&StatsSnapshot>)> {
        if let Some((s, base)) = &self.frozen {
            return Some((s, base.as_ref()));
        }
        let i = self.shown?;
        let s = &self.recent[i];
        let base = self.recent.front().filter(|b| b.elapsed_s < s.elapsed_s);
        Some((s, base))
    }

    /// Whether `p` froze the display.
    pub fn is_frozen(&self) -> bool {
        self.frozen.is_some()
    }

    /// Rates of input `i` on screen.
    pub fn input_rates(&self, i: usize) -> InputRates {
        let Some((s, Some(b))) = self.shown() else {
            return InputRates::default();
        };
        let dt = s.elapsed_s - b.elapsed_s;
        let (Some(now), Some(then)) = (s.inputs.get(i), b.inputs.get(i)) else {
            return InputRates::default();
        };
        let loss_now: u64 = input_losses(s, i).values().sum();
        let loss_then: u64 = input_losses(b, i).values().sum();
        InputRates {
            packets: rate(now.packets_in, then.packets_in, dt),
            hits: rate(input_hits(s, i), input_hits(b, i), dt),
            bytes: rate(now.bytes_in, then.bytes_in, dt),
            losses: rate(loss_now, loss_then, dt),
        }
    }

    /// `(singles/s, sink rows/s, PET table bytes/s)` on screen.
    pub fn totals_rates(&self) -> (f64, f64, f64) {
        match self.shown() {
            Some((s, Some(b))) => {
                let dt = s.elapsed_s - b.elapsed_s;
                (
                    rate(s.singles, b.singles, dt),
                    rate(s.sink_rows, b.sink_rows, dt),
                    rate(s.pet_table_bytes(), b.pet_table_bytes(), dt),
                )
            }
            _ => (0.0, 0.0, 0.0),
        }
    }

    /// Hits/s history of input `i`, oldest first.
    pub fn sparkline(&self, i: usize) -> Vec<f64> {
        self.spark
            .get(i)
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Singles/s history, oldest first.
    pub fn singles_sparkline(&self) -> Vec<f64> {
        self.singles_spark.iter().copied().collect()
    }

    /// Singles, prompts and delayeds per second over the whole run.
    pub fn history(&self) -> &RateHistories {
        &self.history
    }

    /// The energy window the run applies, keV (lower, upper), from the snapshot on screen;
    /// `None` when the run applies none (no coincidences, `none`, ToT energies).
    pub fn energy_window_kev(&self) -> Option<(f64, f64)> {
        let [lo, hi] = self.shown()?.0.info.energy_window_kev?;
        Some((f64::from(lo), f64::from(hi)))
    }

    /// Modules (channel >> 6) that have hits on screen, ascending.
    pub fn modules(&self) -> Vec<u32> {
        let Some((s, _)) = self.shown() else {
            return vec![];
        };
        let set: BTreeSet<u32> = s
            .channel_hits
            .iter()
            .map(|(c, _)| c / CHANNELS_PER_MODULE)
            .collect();
        set.into_iter().collect()
    }

    /// The selected module, if any module has hits.
    pub fn module(&self) -> Option<u32> {
        let m = self.modules();
        m.get(self.selected_module.min(m.len().saturating_sub(1)))
            .copied()
    }

    /// Count rate (hits/s) of every channel of `module`, index = channel & 63. Over the rate
    /// window, or since the start with a single snapshot or once the run has ended (nothing
    /// arrives any more: the map would call every channel dead).
    pub fn module_rates(&self, module: u32) -> [f64; 64] {
        let mut out = [0.0; 64];
        let Some((s, base)) = self.shown() else {
            return out;
        };
        let base = base.filter(|_| !matches!(s.state, RunState::Stopped | RunState::Failed));
        let lo = module * CHANNELS_PER_MODULE;
        let in_module = |c: u32| c >= lo && c < lo + CHANNELS_PER_MODULE;
        let then: BTreeMap<u32, u64> = base
            .map(|b| {
                b.channel_hits
                    .iter()
                    .filter(|(c, _)| in_module(*c))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        let dt = base.map_or(s.elapsed_s, |b| s.elapsed_s - b.elapsed_s);
        for &(c, n) in s.channel_hits.iter().filter(|(c, _)| in_module(*c)) {
            out[(c - lo) as usize] = rate(n, then.get(&c).copied().unwrap_or(0), dt);
        }
        out
    }

    fn running(&self) -> bool {
        self.latest().is_some_and(|s| {
            matches!(
                s.state,
                RunState::Configured | RunState::Running | RunState::Stopping
            )
        })
    }

    /// `e`: all channels / the selected module; `l`: linear / log counts.
    fn toggle_spectrum(&mut self, key: Key) {
        if key == Key::Char('e') {
            self.module_spectrum = !self.module_spectrum;
        } else {
            self.log_spectrum = !self.log_spectrum;
        }
    }

    /// Applies a key; returns what the caller must do.
    pub fn handle_key(&mut self, key: Key) -> Action {
        if self.confirm_quit {
            self.confirm_quit = false;
            return match key {
                Key::Char('y') | Key::Char('Y') | Key::Char('q') | Key::Enter | Key::CtrlC => {
                    Action::Quit
                }
                _ => {
                    self.status = Some("quit cancelled".into());
                    Action::None
                }
            };
        }
        if self.help {
            // Any key closes the help; `q` still works from there.
            self.help = false;
            if !matches!(key, Key::Char('q')) {
                return Action::None;
            }
        }
        match key {
            Key::Char('q') | Key::Esc | Key::CtrlC => {
                if self.options.attached || !self.running() || key == Key::CtrlC {
                    Action::Quit
                } else {
                    self.confirm_quit = true;
                    Action::ConfirmQuit
                }
            }
            Key::Char('s') => {
                if self.running() {
                    self.status = Some("stop requested".into());
                    Action::Stop
                } else {
                    self.status = Some("the run is not running".into());
                    Action::None
                }
            }
            Key::Char('m') => {
                self.markers += 1;
                Action::Marker(format!("operator marker {}", self.markers))
            }
            Key::Char('p') => {
                if self.frozen.is_some() {
                    self.frozen = None;
                } else if let Some((s, b)) = self.shown() {
                    self.frozen = Some((s.clone(), b.cloned()));
                }
                Action::None
            }
            Key::Char('e') | Key::Char('l') => {
                self.toggle_spectrum(key);
                Action::None
            }
            Key::Char('d') => {
                if self.streams().is_empty() {
                    self.status = Some("no MEG or ultrasound streams in this run".into());
                } else if !self.has_pet() {
                    self.status = Some("this run has streams only".into());
                } else {
                    self.prefer_streams = !self.prefer_streams;
                }
                Action::None
            }
            Key::Right | Key::Left if self.shows_streams() => {
                let n = self.streams().len().max(1);
                let i = self.stream_index();
                self.selected_stream = if key == Key::Right {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                };
                Action::None
            }
            Key::Down | Key::Up if self.shows_streams() => {
                let n = self.selected_meg_channels().max(1);
                let i = self.meg_channel_index(n);
                self.selected_meg_channel = if key == Key::Down {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                };
                Action::None
            }
            Key::Char('?') | Key::Char('h') => {
                self.help = true;
                Action::None
            }
            Key::Tab | Key::BackTab => {
                self.view = match self.view {
                    View::Overview => View::Losses,
                    View::Losses => View::Overview,
                };
                Action::None
            }
            Key::Right => {
                let n = self.modules().len().max(1);
                self.selected_module = (self.selected_module + 1) % n;
                Action::None
            }
            Key::Left => {
                let n = self.modules().len().max(1);
                self.selected_module = (self.selected_module + n - 1) % n;
                Action::None
            }
            Key::Down => {
                self.selected_channel = (self.selected_channel + 1) % CHANNELS_PER_MODULE;
                Action::None
            }
            Key::Up => {
                self.selected_channel =
                    (self.selected_channel + CHANNELS_PER_MODULE - 1) % CHANNELS_PER_MODULE;
                Action::None
            }
            _ => Action::None,
        }
    }
}

/// The run-long rate histories of the dashboard's rates panel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateHistories {
    /// Singles handed to the sink, per second.
    pub singles: RunHistory,
    /// Prompt coincidences, per second (empty while the run sorts none).
    pub prompts: RunHistory,
    /// Delayed-window coincidences, per second.
    pub delayeds: RunHistory,
}

impl RateHistories {
    fn record(&mut self, s: &StatsSnapshot) {
        self.singles.record(s.elapsed_s, s.singles);
        if let Some(c) = &s.coincidences {
            self.prompts.record(s.elapsed_s, c.prompts);
            self.delayeds.record(s.elapsed_s, c.delayeds);
        }
    }
}

fn push_capped<T>(d: &mut VecDeque<T>, v: T, cap: usize) {
    if d.len() == cap {
        d.pop_front();
    }
    d.push_back(v);
}
