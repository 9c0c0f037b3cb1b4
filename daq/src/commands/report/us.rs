//! The ultrasound part of the report, per stream: events and frames stored, frames with
//! missing transmits (when), and the B-mode image of the first frame whose every transmit
//! was stored ([`super::bmode`]), with its brightest points. The RF is read in two passes:
//! the event index without payloads, then only the chosen frame's payloads.

use super::bmode::{Image, Probe, TxEvent, beamform};
use super::figures::{ImageChart, image_svg};
use super::html::{Section, escape, figure};
use super::png::{Pixels, encode_base64};
use super::summary::SummaryInputs;
use super::tables::{RunTables, for_each_batch};
use anyhow::{Result, bail};
use arrow_array::Array;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, UInt16Type, UInt32Type, UInt64Type};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// Dynamic range of the B-mode image, dB.
const RANGE_DB: f32 = 50.0;
/// Bright points listed.
const PEAKS: usize = 10;

/// The ultrasound section and its data, or None when the run has no RF stream.
pub(super) fn us_section(
    run: &RunTables,
    inputs: &mut SummaryInputs,
) -> Result<Option<(Section, Value)>> {
    let events = run.tables("rf_events-")?;
    if events.is_empty() {
        return Ok(None);
    }
    let mut html = String::new();
    let mut streams = Vec::new();
    for path in &events {
        let suffix = path
            .file_name()
            .map(|n| n.to_string_lossy().replace("rf_events-", ""))
            .unwrap_or_default();
        let name = suffix.trim_end_matches(".parquet").to_string();
        let seq_path = run.dir.join(format!("us_sequence-{suffix}"));
        let (probe, angles) = read_sequence(&seq_path)?;
        let index = read_index(path)?;
        let missing = index.frames_missing_transmits(angles.len());
        if !missing.is_empty() {
            let t0 = index.t_range.0;
            let mut when: Vec<String> = missing
                .iter()
                .take(5)
                .map(|(f, t)| match t {
                    Some(t) => format!("frame {f} at {:.3} s", t.saturating_sub(t0) as f64 * 1e-9),
                    None => format!("frame {f}"),
                })
                .collect();
            if missing.len() > 5 {
                when.push(format!("(+{} more frames)", missing.len() - 5));
            }
            inputs
                .loss_times
                .insert("us_incomplete_events".into(), when.join(", "));
        }
        if inputs.duration.is_none() && index.t_range.1 > index.t_range.0 {
            let d = index.t_range.1.saturating_sub(index.t_range.0) as f64 * 1e-9;
            inputs.duration = Some((d, "ultrasound transmit clock, first to last event"));
        }
        let frame = index.first_complete_frame(angles.len());
        let image = match frame {
            Some(f) => {
                let events = read_frame(path, f, &angles)?;
                beamform(&probe, &events)
            }
            None => None,
        };
        html.push_str(&stream_html(&name, &index, frame, image.as_ref())?);
        streams.push(stream_data(
            &name,
            &index,
            frame,
            image.as_ref(),
            missing.len(),
        ));
    }
    let section = Section {
        id: "us",
        title: "Ultrasound".into(),
        html,
    };
    Ok(Some((section, json!({ "streams": streams }))))
}

/// The probe and the steering angle of every transmit (by tx_index) of `us_sequence`.
fn read_sequence(path: &Path) -> Result<(Probe, BTreeMap<u16, f64>)> {
    if !path.is_file() {
        bail!(
            "{}: the ultrasound sequence table is missing, so the RF cannot be beamformed; replay the raw data with the sequence (`--config ultrasound.toml`)",
            path.display()
        );
    }
    let mut probe = None;
    let mut angles = BTreeMap::new();
    let cols = [
        "tx_index",
        "angle_deg",
        "n_elements",
        "pitch_m",
        "center_frequency_hz",
        "speed_of_sound_m_s",
    ];
    for_each_batch(path, &cols, 4096, |b| {
        let tx = b.primitive::<UInt16Type>("tx_index")?.values();
        let angle = b.primitive::<Float64Type>("angle_deg")?.values();
        let n = b.primitive::<UInt16Type>("n_elements")?.values();
        let pitch = b.primitive::<Float64Type>("pitch_m")?.values();
        let f0 = b.primitive::<Float64Type>("center_frequency_hz")?.values();
        let c = b.primitive::<Float64Type>("speed_of_sound_m_s")?.values();
        for i in 0..b.rows() {
            angles.insert(tx[i], angle[i]);
            probe.get_or_insert(Probe {
                n_elements: usize::from(n[i]),
                pitch_m: pitch[i],
                center_frequency_hz: f0[i],
                speed_of_sound_m_s: c[i],
            });
        }
        Ok(true)
    })?;
    match probe {
        Some(p) => Ok((p, angles)),
        None => bail!("{}: the sequence table has no transmit", path.display()),
    }
}

/// The event index of `rf_events`: transmits stored per frame, with the frame's first time.
struct EventIndex {
    /// frame_no -> (transmits stored, earliest t_tx_ns).
    frames: BTreeMap<u64, (usize, Option<i64>)>,
    events: u64,
    t_range: (i64, i64),
}

impl EventIndex {
    fn first_complete_frame(&self, n_tx: usize) -> Option<u64> {
        self.frames
            .iter()
            .find(|(_, (n, _))| *n >= n_tx)
            .map(|(f, _)| *f)
    }

    /// Frames with fewer transmits than the sequence (between the first and last frame;
    /// wholly missing frames are not seen here).
    fn frames_missing_transmits(&self, n_tx: usize) -> Vec<(u64, Option<i64>)> {
        self.frames
            .iter()
            .filter(|(_, (n, _))| *n < n_tx)
            .map(|(f, (_, t))| (*f, *t))
            .collect()
    }
}

fn read_index(path: &Path) -> Result<EventIndex> {
    let mut idx = EventIndex {
        frames: BTreeMap::new(),
        events: 0,
        t_range: (i64::MAX, i64::MIN),
    };
    for_each_batch(path, &["frame_no", "t_tx_ns"], 65_536, |b| {
        let frame = b.primitive::<UInt64Type>("frame_no")?.values();
        let t = b.primitive::<Int64Type>("t_tx_ns")?;
        for i in 0..b.rows() {
            let time = t.is_valid(i).then(|| t.value(i));
            let e = idx.frames.entry(frame[i]).or_insert((0, None));
            e.0 += 1;
            if let Some(ti) = time {
                e.1 = Some(e.1.map_or(ti, |x: i64| x.min(ti)));
                idx.t_range = (idx.t_range.0.min(ti), idx.t_range.1.max(ti));
            }
        }
        idx.events += b.rows() as u64;
        Ok(true)
    })?;
    Ok(idx)
}

/// The events of frame `frame`, one per transmit of the sequence.
fn read_frame(path: &Path, frame: u64, angles: &BTreeMap<u16, f64>) -> Result<Vec<TxEvent>> {
    let mut out: BTreeMap<u16, TxEvent> = BTreeMap::new();
    let cols = [
        "frame_no",
        "tx_index",
        "rx_offset_ns",
        "n_channels",
        "n_samples",
        "sample_rate_hz",
        "payload",
    ];
    for_each_batch(path, &cols, 8, |b| {
        let f = b.primitive::<UInt64Type>("frame_no")?.values();
        let tx = b.primitive::<UInt16Type>("tx_index")?.values();
        let rx = b.primitive::<Int32Type>("rx_offset_ns")?.values();
        let nc = b.primitive::<UInt16Type>("n_channels")?.values();
        let ns = b.primitive::<UInt32Type>("n_samples")?.values();
        let fs = b.primitive::<UInt32Type>("sample_rate_hz")?.values();
        let payload = b.binary("payload")?;
        for i in 0..b.rows() {
            let Some(&angle) = angles.get(&tx[i]) else {
                continue;
            };
            if f[i] != frame {
                continue;
            }
            let rf: Vec<i16> = payload
                .value(i)
                .chunks_exact(2)
                .map(|s| i16::from_le_bytes([s[0], s[1]]))
                .collect();
            out.insert(
                tx[i],
                TxEvent {
                    angle_deg: angle,
                    rx_offset_ns: rx[i],
                    sample_rate_hz: f64::from(fs[i]),
                    n_channels: usize::from(nc[i]),
                    n_samples: ns[i] as usize,
                    rf,
                },
            );
        }
        // Events are stored about in frame order (at most the reassembler's open events
        // apart): stop once well past the frame.
        Ok(out.len() < angles.len() && f.last().is_none_or(|&l| l <= frame.saturating_add(64)))
    })?;
    Ok(out.into_values().collect())
}

fn stream_html(
    name: &str,
    idx: &EventIndex,
    frame: Option<u64>,
    image: Option<&Image>,
) -> Result<String> {
    let mut html = format!("<h3>Stream {}</h3>", escape(name));
    let _ = write!(
        html,
        "<p>{} events stored in {} frames.</p>",
        idx.events,
        idx.frames.len()
    );
    let (Some(frame), Some(img)) = (frame, image) else {
        html.push_str("<p class=\"bad\">No frame with every transmit stored: no B-mode image.</p>");
        return Ok(html);
    };
    let Some(png) = encode_base64(img.nx, img.nz, Pixels::Grey, &img.grey(RANGE_DB)) else {
        return Ok(html);
    };
    let title = format!("B-mode, frame {frame}, {name}");
    let half_dx = img.dx_m * 500.0;
    let half_dz = img.dz_m * 500.0;
    let svg = image_svg(
        &ImageChart {
            title: &title,
            x_desc: "lateral position (mm)",
            y_desc: "depth (mm)",
            x: (
                img.x0_m * 1e3 - half_dx,
                (img.x0_m + (img.nx - 1) as f64 * img.dx_m) * 1e3 + half_dx,
            ),
            y: (
                img.z0_m * 1e3 - half_dz,
                (img.z0_m + (img.nz - 1) as f64 * img.dz_m) * 1e3 + half_dz,
            ),
            y_down: true,
            png_base64: &png,
        },
        (520, 640),
    )?;
    let peaks = img.peaks(PEAKS, -RANGE_DB, 2.0);
    let list: Vec<String> = peaks
        .iter()
        .take(6)
        .map(|p| format!("({:.1}, {:.1}) mm {:.1} dB", p.x_mm, p.z_mm, p.db))
        .collect();
    let cap = format!(
        "Delay-and-sum, plane waves compounded, {RANGE_DB} dB range; brightest points (x, depth): {}",
        list.join("; ")
    );
    html.push_str(&format!(
        "<div class=\"figs\">{}</div>",
        figure(&format!("us-bmode-{name}"), &svg, &escape(&cap))
    ));
    Ok(html)
}

fn stream_data(
    name: &str,
    idx: &EventIndex,
    frame: Option<u64>,
    image: Option<&Image>,
    frames_missing: usize,
) -> Value {
    json!({
        "stream": name,
        "events": idx.events,
        "frames": idx.frames.len(),
        "frames_missing_transmits": frames_missing,
        "bmode": image.map(|img| json!({
            "frame": frame,
            "range_db": RANGE_DB,
            "nx": img.nx,
            "nz": img.nz,
            "x0_mm": img.x0_m * 1e3,
            "dx_mm": img.dx_m * 1e3,
            "z0_mm": img.z0_m * 1e3,
            "dz_mm": img.dz_m * 1e3,
            "peaks": img.peaks(PEAKS, -RANGE_DB, 2.0),
        })),
    })
}
