//! The OPM-MEG part of the report, per stream, read block by block from `meg_blocks`: the
//! amplitude spectral density of every channel (Welch: Hann-windowed segments of 1 to 2 s,
//! averaged; never across a gap in the samples), each channel's health over the run (the
//! dashboard's rules, docs/meg.md §4: the state it had in most 1 s windows), and the trigger
//! timeline from `triggers`.

use super::figures::{Chart, ImageChart, SIZE, Series, chart_svg, image_svg};
use super::html::{Section, escape, figure};
use super::png::{Pixels, encode_base64};
use super::summary::SummaryInputs;
use super::tables::{RunTables, for_each_batch};
use crate::process::streams::panel::MegPanel;
use anyhow::Result;
use arrow_array::types::{Float64Type, Int64Type, UInt8Type, UInt16Type, UInt32Type};
use plotters::prelude::ViridisRGB;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use scandaq_core::snapshot::ChannelHealth;
use scandaq_decoders::meg::{ChannelInfo, ChannelKind};
use scandaq_sinks::meg_tables::block_flags;
use serde_json::{Value, json};
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

/// Blocks decoded per batch (a block is a few KiB).
const BATCH_ROWS: usize = 256;
/// Trigger edges drawn one by one (all are counted).
const EDGES_DRAWN: usize = 5000;
/// Columns of the spectral map (frequency bins are averaged down to this).
const MAP_COLUMNS: usize = 400;
/// Gap times listed in the data block (all are counted).
const GAP_TIMES_LISTED: usize = 10_000;

/// The MEG section and its data, or None when the run has no MEG stream.
pub(super) fn meg_section(
    run: &RunTables,
    inputs: &mut SummaryInputs,
) -> Result<Option<(Section, Value)>> {
    let blocks = run.tables("meg_blocks-")?;
    if blocks.is_empty() {
        return Ok(None);
    }
    let mut html = String::new();
    let mut streams = Vec::new();
    for path in &blocks {
        let suffix = path
            .file_name()
            .map(|n| n.to_string_lossy().replace("meg_blocks-", ""))
            .unwrap_or_default();
        let channels = read_channels(&run.dir.join(format!("meg_channels-{suffix}")))?;
        let mut s = read_blocks(path, channels, true)?;
        let triggers = run.dir.join(format!("triggers-{suffix}"));
        if triggers.is_file() {
            s.triggers = read_triggers(&triggers)?;
        }
        if inputs.duration.is_none() && s.t_range.1 > s.t_range.0 {
            let d = s.t_range.1.saturating_sub(s.t_range.0) as f64 * 1e-9;
            inputs.duration = Some((d, "MEG reference clock, first to last block"));
        }
        if !s.gaps_ns.is_empty() {
            let when = times_text(&s.gaps_ns, s.t_range.0);
            inputs
                .loss_times
                .insert("meg_missing_samples".into(), format!("gaps at {when}"));
            inputs
                .loss_times
                .insert("meg_sample_gaps".into(), format!("at {when}"));
            // A rejected block's samples show up as the gap before the next block.
            for reason in [
                "meg_truncated_blocks",
                "meg_oversized_blocks",
                "meg_empty_blocks",
            ] {
                let text = format!("their samples are missing at the gaps at {when}");
                inputs.loss_times.insert(reason.into(), text);
            }
        }
        let name = suffix.trim_end_matches(".parquet").to_string();
        html.push_str(&stream_html(&name, &s)?);
        streams.push(stream_data(&name, &s));
    }
    let section = Section {
        id: "meg",
        title: "OPM-MEG".into(),
        html,
    };
    Ok(Some((section, json!({ "streams": streams }))))
}

/// "1.250 s, 3.000 s (+4 more)" from reference times relative to `t0_ns`.
fn times_text(times_ns: &[i64], t0_ns: i64) -> String {
    let mut s: Vec<String> = times_ns
        .iter()
        .take(5)
        .map(|t| format!("{:.3} s", t.saturating_sub(t0_ns) as f64 * 1e-9))
        .collect();
    if times_ns.len() > 5 {
        s.push(format!("(+{} more)", times_ns.len() - 5));
    }
    s.join(", ")
}

/// One stream's accumulations.
struct MegStream {
    names: Vec<String>,
    unit: String,
    blocks: u64,
    samples: u64,
    rate_hz: f64,
    t_range: (i64, i64),
    gaps_ns: Vec<i64>,
    /// Per analysed channel: windows in each health state (ok, flat, saturated, noisy).
    health_windows: Vec<[u64; 4]>,
    last_rms: Vec<f32>,
    /// Mains frequency of the last window, Hz.
    mains_hz: f64,
    welch: Option<Welch>,
    triggers: Triggers,
}

#[derive(Default)]
struct Triggers {
    /// Rising edges per bit.
    rising: std::collections::BTreeMap<u8, u64>,
    /// (t_ns, bit) of the first rising edges.
    drawn: Vec<(i64, u8)>,
}

fn read_channels(path: &Path) -> Result<Option<Vec<ChannelInfo>>> {
    if !path.is_file() {
        return Ok(None);
    }
    let mut out = Vec::new();
    let cols = ["name", "kind", "cal", "range", "unit", "delay_ps"];
    for_each_batch(path, &cols, 4096, |b| {
        let names = b.strings("name")?;
        let kinds = b.strings("kind")?;
        let units = b.strings("unit")?;
        let cal = b.primitive::<Float64Type>("cal")?.values();
        let range = b.primitive::<Float64Type>("range")?.values();
        let delay = b.primitive::<Int64Type>("delay_ps")?.values();
        for i in 0..b.rows() {
            out.push(ChannelInfo {
                name: names[i].clone(),
                kind: ChannelKind::parse(&kinds[i]).unwrap_or(ChannelKind::Misc),
                cal: cal[i],
                range: range[i],
                unit: units[i].clone(),
                delay_ps: delay[i],
                position_m: [0.0; 3],
                orientation: [0.0; 3],
            });
        }
        Ok(true)
    })?;
    Ok(Some(out))
}

/// Each MEG channel's health over a whole stream: the dashboard's analysis (docs/meg.md §4)
/// run over every block of `meg_blocks`, a channel's state being the one it had in most 1 s
/// windows (what the report shows and `scandaq export bids` writes as channel status).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamHealth {
    /// The analysed (MEG) channels, in table order.
    pub names: Vec<String>,
    /// Their state over the run.
    pub health: Vec<ChannelHealth>,
    /// Their windows in each state: ok, flat, saturated, noisy.
    pub windows: Vec<[u64; 4]>,
    /// The mains frequency the dashboard found (50 or 60 Hz; 0 without a complete window).
    pub mains_hz: f64,
}

/// The channel health of stream `stream` of `run_dir` over the run (one pass over its blocks,
/// without the spectra).
pub fn stream_health(run_dir: &Path, stream: u32) -> Result<StreamHealth> {
    use scandaq_sinks::meg_tables::{BLOCKS_TABLE, CHANNELS_TABLE, file_name};
    let channels = read_channels(&run_dir.join(file_name(CHANNELS_TABLE, stream)))?;
    let s = read_blocks(
        &run_dir.join(file_name(BLOCKS_TABLE, stream)),
        channels,
        false,
    )?;
    Ok(StreamHealth {
        health: s.health(),
        names: s.names,
        windows: s.health_windows,
        mains_hz: s.mains_hz,
    })
}

/// One pass over `meg_blocks`: the dashboard's figures window by window, the gaps and (with
/// `spectra`) the Welch spectra.
fn read_blocks(
    path: &Path,
    channels: Option<Vec<ChannelInfo>>,
    spectra: bool,
) -> Result<MegStream> {
    let mut panel = MegPanel::new(channels.clone());
    let mut s = MegStream {
        names: Vec::new(),
        unit: String::new(),
        blocks: 0,
        samples: 0,
        rate_hz: 0.0,
        t_range: (i64::MAX, i64::MIN),
        gaps_ns: Vec::new(),
        health_windows: Vec::new(),
        last_rms: Vec::new(),
        mains_hz: 0.0,
        welch: None,
        triggers: Triggers::default(),
    };
    let mut windows = 0;
    let cols = [
        "n_samples",
        "n_channels",
        "flags",
        "payload",
        "t_first_ns",
        "rate_hz",
    ];
    for_each_batch(path, &cols, BATCH_ROWS, |b| {
        let ns = b.primitive::<UInt16Type>("n_samples")?;
        let nc = b.primitive::<UInt16Type>("n_channels")?;
        let flags = b.primitive::<UInt32Type>("flags")?;
        let t = b.primitive::<Int64Type>("t_first_ns")?;
        let rate = b.primitive::<Float64Type>("rate_hz")?;
        let payload = b.binary("payload")?;
        for i in 0..b.rows() {
            use arrow_array::Array;
            let (n_samples, n_channels) = (usize::from(ns.value(i)), usize::from(nc.value(i)));
            if rate.is_valid(i) && rate.value(i) > 0.0 {
                s.rate_hz = rate.value(i);
            }
            let trigger_last = flags.value(i) & block_flags::TRIGGER_CHANNEL != 0;
            if t.is_valid(i) {
                let ti = t.value(i);
                s.t_range = (s.t_range.0.min(ti), s.t_range.1.max(ti));
                if flags.value(i) & block_flags::AFTER_GAP != 0 {
                    s.gaps_ns.push(ti);
                }
            }
            let data = payload.value(i);
            panel.push_block(data, n_samples, n_channels, s.rate_hz, trigger_last);
            let snap = panel.snapshot();
            if snap.windows != windows {
                windows = snap.windows;
                s.note_window(&snap);
            }
            s.blocks += 1;
            s.samples += n_samples as u64;
            if !spectra {
                continue;
            }
            let analysed = channel_scales(channels.as_deref(), n_channels, trigger_last);
            let gap = flags.value(i) & block_flags::AFTER_GAP != 0;
            let welch = s
                .welch
                .get_or_insert_with(|| Welch::new(s.rate_hz, analysed.clone()));
            welch.push(data, n_samples, n_channels, &analysed, gap);
        }
        Ok(true)
    })?;
    Ok(s)
}

impl MegStream {
    fn note_window(&mut self, snap: &scandaq_core::snapshot::MegSnapshot) {
        if self.names != snap.channel_names {
            self.names = snap.channel_names.clone();
            self.health_windows = vec![[0; 4]; self.names.len()];
        }
        self.unit = snap.unit.clone();
        for (w, h) in self.health_windows.iter_mut().zip(&snap.health) {
            w[health_index(*h)] += 1;
        }
        self.last_rms = snap.rms.clone();
        self.mains_hz = snap.mains_hz;
    }

    /// The state each channel had in most windows (ties: the worse state).
    fn health(&self) -> Vec<ChannelHealth> {
        self.health_windows
            .iter()
            .map(|w| {
                let k = (0..4).rev().max_by_key(|&k| w[k]).unwrap_or(0);
                [
                    ChannelHealth::Ok,
                    ChannelHealth::Flat,
                    ChannelHealth::Saturated,
                    ChannelHealth::Noisy,
                ][k]
            })
            .collect()
    }
}

fn health_index(h: ChannelHealth) -> usize {
    match h {
        ChannelHealth::Ok => 0,
        ChannelHealth::Flat => 1,
        ChannelHealth::Saturated => 2,
        ChannelHealth::Noisy => 3,
    }
}

/// Row indices of the analysed (MEG) channels and their scale to fT per count: the same
/// channels the dashboard analyses (without a matching channel table: all but the trigger,
/// in counts).
fn channel_scales(
    table: Option<&[ChannelInfo]>,
    n_channels: usize,
    trigger_last: bool,
) -> Vec<(usize, f64)> {
    match table {
        Some(t) if t.len() == n_channels => t
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.kind, ChannelKind::MegMag | ChannelKind::MegGrad))
            .map(|(i, c)| (i, c.cal * c.range * 1e15))
            .collect(),
        _ => (0..n_channels.saturating_sub(usize::from(trigger_last)))
            .map(|i| (i, 1.0))
            .collect(),
    }
}

/// Welch averaging of per-channel periodograms.
struct Welch {
    rate_hz: f64,
    len: usize,
    fft: Arc<dyn Fft<f64>>,
    window: Vec<f64>,
    /// Channel-major samples of the segment being filled.
    segment: Vec<f64>,
    filled: usize,
    channels: Vec<(usize, f64)>,
    /// Sum of |X|² per channel and frequency bin (len/2 + 1 bins).
    power: Vec<f64>,
    segments: u64,
}

impl Welch {
    fn new(rate_hz: f64, channels: Vec<(usize, f64)>) -> Self {
        // 1 to 2 s per segment (0.5 to 1 Hz resolution), a power of two for the FFT.
        let len = (rate_hz.max(1.0) as usize)
            .next_power_of_two()
            .clamp(256, 16_384);
        let n = len as f64;
        let window = (0..len)
            .map(|k| 0.5 - 0.5 * (std::f64::consts::TAU * k as f64 / n).cos())
            .collect();
        Self {
            rate_hz,
            len,
            fft: FftPlanner::new().plan_fft_forward(len),
            window,
            segment: vec![0.0; len * channels.len()],
            filled: 0,
            power: vec![0.0; (len / 2 + 1) * channels.len()],
            channels,
            segments: 0,
        }
    }

    /// Adds a block's rows; a block of another shape is left out, a gap restarts the segment.
    fn push(
        &mut self,
        data: &[u8],
        n_samples: usize,
        n_channels: usize,
        channels: &[(usize, f64)],
        gap: bool,
    ) {
        if channels != self.channels.as_slice() {
            return;
        }
        if gap {
            self.filled = 0;
        }
        for row in data.chunks_exact(4 * n_channels.max(1)).take(n_samples) {
            for (j, &(c, scale)) in self.channels.iter().enumerate() {
                let b = &row[4 * c..4 * c + 4];
                let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                self.segment[j * self.len + self.filled] = f64::from(v) * scale;
            }
            self.filled += 1;
            if self.filled == self.len {
                self.finish_segment();
            }
        }
    }

    fn finish_segment(&mut self) {
        let bins = self.len / 2 + 1;
        let mut buf = vec![Complex::new(0.0, 0.0); self.len];
        for j in 0..self.channels.len() {
            let x = &self.segment[j * self.len..(j + 1) * self.len];
            let mean = x.iter().sum::<f64>() / self.len as f64;
            for ((b, &v), &w) in buf.iter_mut().zip(x).zip(&self.window) {
                *b = Complex::new((v - mean) * w, 0.0);
            }
            self.fft.process(&mut buf);
            for (p, b) in self.power[j * bins..(j + 1) * bins].iter_mut().zip(&buf) {
                *p += b.norm_sqr();
            }
        }
        self.segments += 1;
        self.filled = 0;
    }

    /// Frequency step, Hz.
    fn df(&self) -> f64 {
        self.rate_hz / self.len as f64
    }

    /// One-sided amplitude spectral density of channel `j` (unit/√Hz), bins 0..=len/2.
    fn asd(&self, j: usize) -> Vec<f64> {
        let bins = self.len / 2 + 1;
        let w2: f64 = self.window.iter().map(|w| w * w).sum();
        let norm = 2.0 / (self.rate_hz * w2 * self.segments.max(1) as f64);
        self.power[j * bins..(j + 1) * bins]
            .iter()
            .map(|p| (p * norm).sqrt())
            .collect()
    }
}

fn read_triggers(path: &Path) -> Result<Triggers> {
    let mut t = Triggers::default();
    for_each_batch(path, &["t_ns", "bit", "rising"], 65_536, |b| {
        let time = b.primitive::<Int64Type>("t_ns")?;
        let bit = b.primitive::<UInt8Type>("bit")?.values();
        let rising = b.booleans("rising")?;
        for i in 0..b.rows() {
            use arrow_array::Array;
            if !rising[i] {
                continue;
            }
            *t.rising.entry(bit[i]).or_default() += 1;
            if t.drawn.len() < EDGES_DRAWN && time.is_valid(i) {
                t.drawn.push((time.value(i), bit[i]));
            }
        }
        Ok(true)
    })?;
    Ok(t)
}

fn stream_html(name: &str, s: &MegStream) -> Result<String> {
    let health = s.health();
    let mut html = format!("<h3>Stream {}</h3>", escape(name));
    let count = |h| health.iter().filter(|&&x| x == h).count();
    let _ = write!(
        html,
        "<p>{} blocks, {} samples, {:.3} Hz (fitted clock); channels: {} ok, {} flat, {} saturated, {} noisy.</p>",
        s.blocks,
        s.samples,
        s.rate_hz,
        count(ChannelHealth::Ok),
        count(ChannelHealth::Flat),
        count(ChannelHealth::Saturated),
        count(ChannelHealth::Noisy)
    );
    html.push_str(&health_table(s, &health));
    html.push_str("<div class=\"figs\">");
    if let Some(w) = s.welch.as_ref().filter(|w| w.segments > 0) {
        html.push_str(&spectrum_figures(name, s, w, &health)?);
    }
    html.push_str(&trigger_figure(name, s)?);
    html.push_str("</div>");
    Ok(html)
}

fn health_table(s: &MegStream, health: &[ChannelHealth]) -> String {
    let bad: Vec<usize> = (0..health.len())
        .filter(|&i| health[i] != ChannelHealth::Ok)
        .collect();
    if bad.is_empty() {
        return "<p class=\"ok\">Every channel healthy.</p>".into();
    }
    let mut t = format!(
        "<table class=\"data\"><tr><th>channel</th><th>health</th><th>RMS ({})</th><th>windows ok/flat/saturated/noisy</th></tr>",
        escape(&s.unit)
    );
    for i in bad {
        let w = s.health_windows[i];
        let _ = write!(
            t,
            "<tr><td>{}</td><td class=\"bad\">{}</td><td>{:.1}</td><td>{}/{}/{}/{}</td></tr>",
            escape(&s.names[i]),
            health[i].name(),
            s.last_rms.get(i).copied().unwrap_or(f32::NAN),
            w[0],
            w[1],
            w[2],
            w[3]
        );
    }
    t.push_str("</table>");
    t
}

fn spectrum_figures(
    name: &str,
    s: &MegStream,
    w: &Welch,
    health: &[ChannelHealth],
) -> Result<String> {
    let unit = if s.unit.is_empty() { "counts" } else { &s.unit };
    let asd: Vec<Vec<f64>> = (0..w.channels.len()).map(|j| w.asd(j)).collect();
    let df = w.df();
    let mut html = String::new();
    // The median over channels, and every channel that is not ok.
    let bins = asd.first().map_or(0, Vec::len);
    let median: Vec<(f64, f64)> = (1..bins)
        .map(|k| {
            let mut v: Vec<f64> = asd.iter().map(|a| a[k]).collect();
            v.sort_by(f64::total_cmp);
            (k as f64 * df, v[v.len() / 2])
        })
        .collect();
    let mut series = vec![Series::line("median of channels", median, 0)];
    for (j, a) in asd.iter().enumerate() {
        if health.get(j).is_some_and(|&h| h != ChannelHealth::Ok) && series.len() < 7 {
            let label = format!(
                "{} ({})",
                s.names.get(j).map_or("?", String::as_str),
                health[j].name()
            );
            let pts = (1..bins).map(|k| (k as f64 * df, a[k])).collect();
            series.push(Series::line(label, pts, series.len()));
        }
    }
    let chart = Chart {
        title: format!("Amplitude spectral density, {name}"),
        x_desc: "frequency (Hz)".into(),
        y_desc: format!("{unit}/√Hz"),
        series,
        log_y: true,
        markers: vec![],
    };
    if let Some(svg) = chart_svg(&chart, SIZE)? {
        let cap = format!(
            "Welch ASD ({} segments of {:.2} s, Hann); median over channels and the channels not ok",
            w.segments,
            w.len as f64 / w.rate_hz
        );
        html.push_str(&figure(&format!("meg-asd-{name}"), &svg, &escape(&cap)));
    }
    if let Some(svg) = asd_map(name, &asd, df, unit, health)? {
        let cap = "log10 ASD per channel (row) and frequency; colour from the 1st to the 99th percentile of the healthy channels";
        html.push_str(&figure(&format!("meg-asd-map-{name}"), &svg, cap));
    }
    Ok(html)
}

/// The channels × frequency map of log10 ASD as an image chart.
fn asd_map(
    name: &str,
    asd: &[Vec<f64>],
    df: f64,
    unit: &str,
    health: &[ChannelHealth],
) -> Result<Option<String>> {
    let bins = asd.first().map_or(0, Vec::len);
    if bins < 2 || asd.is_empty() {
        return Ok(None);
    }
    let per_col = (bins - 1).div_ceil(MAP_COLUMNS);
    let cols = (bins - 1) / per_col;
    let cells: Vec<f64> = asd
        .iter()
        .flat_map(|a| {
            (0..cols).map(move |c| {
                let s = &a[1 + c * per_col..1 + (c + 1) * per_col];
                (s.iter().sum::<f64>() / s.len() as f64).max(1e-300).log10()
            })
        })
        .collect();
    // The colour range from the healthy channels (a dead one would take the whole scale).
    let healthy = |row: usize| health.get(row).is_none_or(|&h| h == ChannelHealth::Ok);
    let mut sorted: Vec<f64> = cells
        .chunks(cols)
        .enumerate()
        .filter(|(row, _)| healthy(*row))
        .flat_map(|(_, c)| c.iter().copied())
        .collect();
    if sorted.is_empty() {
        sorted = cells.clone();
    }
    sorted.sort_by(f64::total_cmp);
    let lo = sorted[sorted.len() / 100];
    let hi = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
    let span = if hi > lo { hi - lo } else { 1.0 };
    let rgb: Vec<u8> = cells
        .iter()
        .flat_map(|&v| {
            let c = ViridisRGB::get_color(((v - lo) / span).clamp(0.0, 1.0));
            [c.0, c.1, c.2]
        })
        .collect();
    let Some(png) = encode_base64(cols, asd.len(), Pixels::Rgb, &rgb) else {
        return Ok(None);
    };
    let title = format!("ASD per channel ({unit}/√Hz, log), {name}");
    let svg = image_svg(
        &ImageChart {
            title: &title,
            x_desc: "frequency (Hz)",
            y_desc: "channel (table order)",
            x: (df * 0.5, df * (0.5 + (cols * per_col) as f64)),
            y: (0.0, asd.len() as f64),
            y_down: true,
            png_base64: &png,
        },
        SIZE,
    )?;
    Ok(Some(svg))
}

fn trigger_figure(name: &str, s: &MegStream) -> Result<String> {
    let t = &s.triggers;
    if t.drawn.is_empty() {
        return Ok(String::new());
    }
    let t0 = s.t_range.0.min(t.drawn[0].0);
    let mut series = Vec::new();
    for (k, &bit) in t.rising.keys().enumerate() {
        let pts: Vec<(f64, f64)> = t
            .drawn
            .iter()
            .filter(|e| e.1 == bit)
            .map(|e| (e.0.saturating_sub(t0) as f64 * 1e-9, f64::from(bit)))
            .collect();
        series.push(Series {
            name: format!("bit {bit}"),
            points: pts,
            colour: k,
            dots: true,
        });
    }
    let chart = Chart {
        title: format!("Trigger timeline, {name}"),
        x_desc: "time since the first block (s)".into(),
        y_desc: "trigger bit".into(),
        series,
        log_y: false,
        markers: vec![],
    };
    let Some(svg) = chart_svg(&chart, SIZE)? else {
        return Ok(String::new());
    };
    let total: u64 = t.rising.values().sum();
    let cap = format!(
        "Rising trigger edges ({total}{}), by bit",
        if t.drawn.len() < total as usize {
            format!("; the first {} drawn", t.drawn.len())
        } else {
            String::new()
        }
    );
    Ok(figure(&format!("meg-triggers-{name}"), &svg, &cap))
}

fn stream_data(name: &str, s: &MegStream) -> Value {
    let health = s.health();
    let asd_at = |j: usize, f: f64| {
        s.welch.as_ref().filter(|w| w.segments > 0).and_then(|w| {
            let k = (f / w.df()).round() as usize;
            w.asd(j).get(k).copied()
        })
    };
    let channels: Vec<Value> = s
        .names
        .iter()
        .enumerate()
        .map(|(j, n)| {
            json!({
                "name": n,
                "health": health.get(j).map(|h| h.name()),
                "rms": s.last_rms.get(j),
                "windows": s.health_windows.get(j),
                "asd_10hz": asd_at(j, 10.0),
            })
        })
        .collect();
    json!({
        "stream": name,
        "blocks": s.blocks,
        "samples": s.samples,
        "rate_hz": s.rate_hz,
        "unit": s.unit,
        "psd_segments": s.welch.as_ref().map(|w| w.segments),
        "psd_df_hz": s.welch.as_ref().map(|w| w.df()),
        "channels": channels,
        "gaps": s.gaps_ns.len(),
        "gap_times_ns": s.gaps_ns.iter().take(GAP_TIMES_LISTED).collect::<Vec<_>>(),
        "trigger_rising_edges": s.triggers.rising.iter().map(|(b, n)| (b.to_string(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
    })
}
