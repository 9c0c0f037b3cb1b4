//! The PET section of the page: figures and tables from [`PetFigures`], and the same numbers
//! for the report's machine-readable data block.

use super::figures::{Chart, SIZE, Series, chart_svg, grid_svg};
use super::histogram::Histogram;
use super::html::{Section, figure};
use super::pet::{ModuleFigures, PetFigures};
use anyhow::Result;
use scandaq_core::run_state::EnergyUnit;
use serde_json::{Value, json};
use std::fmt::Write;

/// Modules drawn one by one (the rest are in the table and the data block).
const MODULES_DRAWN: usize = 16;

/// The PET section and its data.
pub(super) fn pet_section(p: &PetFigures) -> Result<(Section, Value)> {
    let unit = unit_name(p.energy_unit);
    let mut html = String::new();
    html.push_str(&module_table(p, unit));
    html.push_str("<h3>Energy spectra</h3><div class=\"figs\">");
    for m in p.modules.iter().take(MODULES_DRAWN) {
        if let Some(svg) = chart_svg(&energy_chart(m, unit, p.energy_unit), SIZE)? {
            let caption = match &m.photopeak {
                Some(g) => format!(
                    "Module {}: photopeak at {:.1} {unit}, FWHM {:.1} {unit} ({:.1} %), Gaussian fit in red",
                    m.module,
                    g.mean,
                    g.fwhm(),
                    100.0 * g.fwhm() / g.mean
                ),
                None => format!("Module {}: no photopeak found", m.module),
            };
            html.push_str(&figure(&format!("pet-energy-{}", m.module), &svg, &caption));
        }
    }
    html.push_str("</div>");
    if p.modules.len() > MODULES_DRAWN {
        let _ = write!(
            html,
            "<p>{} more modules: see the table above.</p>",
            p.modules.len() - MODULES_DRAWN
        );
    }
    html.push_str(&coincidence_figures(p)?);
    html.push_str("<h3>Count maps</h3><div class=\"figs\">");
    for m in p.modules.iter().take(2 * MODULES_DRAWN) {
        let values: Vec<f64> = m.channel_counts.iter().map(|&c| c as f64).collect();
        let svg = grid_svg(
            &format!("Module {} singles per channel", m.module),
            8,
            8,
            &values,
        )?;
        let caption = format!(
            "Module {}: singles per channel ({} to {}, colour from the least to the most), channel &amp; 63 = 8 × row + column (row 0 at the top)",
            m.module,
            m.channel_counts.iter().min().unwrap_or(&0),
            m.channel_counts.iter().max().unwrap_or(&0)
        );
        html.push_str(&figure(&format!("pet-map-{}", m.module), &svg, &caption));
    }
    html.push_str("</div>");
    html.push_str(&rate_figures(p)?);
    let data = pet_data(p, unit);
    Ok((
        Section {
            id: "pet",
            title: "PET".into(),
            html,
        },
        data,
    ))
}

fn unit_name(u: EnergyUnit) -> &'static str {
    match u {
        EnergyUnit::TotNs => "ns ToT",
        _ => "keV",
    }
}

fn module_table(p: &PetFigures, unit: &str) -> String {
    let res = if p.energy_unit == EnergyUnit::TotNs {
        "FWHM / position (ToT: not an energy resolution)"
    } else {
        "resolution"
    };
    let mut t = format!(
        "<table class=\"data\"><tr><th>module</th><th>singles</th><th>photopeak ({unit})</th><th>FWHM ({unit})</th><th>{res}</th></tr>"
    );
    for m in &p.modules {
        let singles: u64 = m.channel_counts.iter().sum();
        let (pos, fwhm, res) = match &m.photopeak {
            Some(g) => (
                format!("{:.1}", g.mean),
                format!("{:.1}", g.fwhm()),
                format!("{:.1} %", 100.0 * g.fwhm() / g.mean),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{singles}</td><td>{pos}</td><td>{fwhm}</td><td>{res}</td></tr>",
            m.module
        );
    }
    t.push_str("</table>");
    t
}

fn energy_chart(m: &ModuleFigures, unit: &str, energy_unit: EnergyUnit) -> Chart {
    let mut series = vec![Series::steps("singles", &m.energy, 1.0, 0)];
    if let Some(g) = &m.photopeak {
        // Over the fitted range (about ±1 FWHM).
        let lo = g.mean - g.fwhm();
        let points = (0..=100)
            .map(|k| lo + 2.0 * g.fwhm() * f64::from(k) / 100.0)
            .map(|x| (x, g.at(x)))
            .collect();
        series.push(Series::line("Gaussian fit", points, 1));
    }
    Chart {
        title: format!("Module {} energy", m.module),
        x_desc: format!("energy ({unit})"),
        y_desc: format!("singles per {:.1} {unit}", m.energy.bin),
        series,
        log_y: true,
        markers: if energy_unit == EnergyUnit::Kev {
            vec![(511.0, "511".into())]
        } else {
            vec![]
        },
    }
}

fn coincidence_figures(p: &PetFigures) -> Result<String> {
    let mut html = String::from("<h3>Coincidences</h3>");
    let _ = write!(
        html,
        "<p>{} prompts, {} delayed (randoms estimate){}.</p><div class=\"figs\">",
        p.prompts,
        p.delayed,
        p.window_ps
            .map(|w| format!("; coincidence window {w} ps"))
            .unwrap_or_default()
    );
    let mut markers = Vec::new();
    let caption = match p.dt_fwhm {
        Some((peak, w)) => {
            // The label starts at its marker and runs right: on the right edge it stays
            // clear of the peak.
            markers.push((peak - w / 2.0, String::new()));
            markers.push((peak + w / 2.0, format!("FWHM {w:.0} ps")));
            format!(
                "Prompt Δt = t_first − t_second (first: smaller module, then smaller channel); peak at {peak:.0} ps, FWHM {w:.0} ps"
            )
        }
        None => "Prompt Δt = t_first − t_second: no peak to measure".into(),
    };
    let chart = Chart {
        title: "Coincidence time difference".into(),
        x_desc: "Δt (ps)".into(),
        y_desc: format!("prompts per {:.0} ps", p.dt.bin),
        series: vec![Series::steps("prompts", &zoomed(&p.dt, p.dt_fwhm), 1.0, 0)],
        log_y: false,
        markers,
    };
    if p.prompts > 0
        && let Some(svg) = chart_svg(&chart, SIZE)?
    {
        html.push_str(&figure("pet-dt", &svg, &caption));
    }
    html.push_str("</div>");
    Ok(html)
}

/// The bins of `h` within 6 FWHM of its peak (all of it without a peak).
fn zoomed(h: &Histogram, peak: Option<(f64, f64)>) -> Histogram {
    let Some((centre, width)) = peak else {
        return h.clone();
    };
    let keep = |k: usize| (h.centre(k) - centre).abs() <= 6.0 * width;
    let first = (0..h.counts.len()).find(|&k| keep(k)).unwrap_or(0);
    let counts: Vec<u64> = (first..h.counts.len())
        .take_while(|&k| keep(k))
        .map(|k| h.counts[k])
        .collect();
    let mut z = Histogram::new(h.lo + first as f64 * h.bin, h.bin, counts.len());
    z.counts = counts;
    z
}

fn rate_figures(p: &PetFigures) -> Result<String> {
    let mut html = String::from("<h3>Rates over time</h3><div class=\"figs\">");
    let per_s = 1.0 / p.singles_rate.bin;
    let x_desc = format!("detector time since t_ps = {} (s)", p.t0_ps);
    let singles = Chart {
        title: "Singles rate".into(),
        x_desc: x_desc.clone(),
        y_desc: "singles/s".into(),
        series: vec![Series::steps("singles", &p.singles_rate, per_s, 0)],
        log_y: false,
        markers: vec![],
    };
    if p.singles > 0
        && let Some(svg) = chart_svg(&singles, SIZE)?
    {
        let cap = format!("Singles per second, bins of {} s", p.singles_rate.bin);
        html.push_str(&figure("pet-singles-rate", &svg, &cap));
    }
    let pairs = Chart {
        title: "Prompt and delayed rates".into(),
        x_desc,
        y_desc: "pairs/s".into(),
        series: vec![
            Series::steps("prompts", &p.prompts_rate, per_s, 0),
            Series::steps("delayed", &p.delayed_rate, per_s, 1),
        ],
        log_y: false,
        markers: vec![],
    };
    if p.prompts + p.delayed > 0
        && let Some(svg) = chart_svg(&pairs, SIZE)?
    {
        let cap = format!(
            "Prompt and delayed coincidences per second (opener time), bins of {} s",
            p.prompts_rate.bin
        );
        html.push_str(&figure("pet-pair-rates", &svg, &cap));
    }
    html.push_str("</div>");
    Ok(html)
}

fn pet_data(p: &PetFigures, unit: &str) -> Value {
    let modules: Vec<Value> = p
        .modules
        .iter()
        .map(|m| {
            json!({
                "module": m.module,
                "singles": m.channel_counts.iter().sum::<u64>(),
                "channel_counts": m.channel_counts.to_vec(),
                "photopeak": m.photopeak.map(|g| json!({
                    "position": g.mean,
                    "fwhm": g.fwhm(),
                    "resolution_pct": 100.0 * g.fwhm() / g.mean,
                })),
            })
        })
        .collect();
    let span_s = p.duration_s;
    json!({
        "energy_unit": p.energy_unit.name(),
        "energy_axis_unit": unit,
        "photopeak_search": [p.peak_range.0, p.peak_range.1],
        "singles": p.singles,
        "prompts": p.prompts,
        "delayed": p.delayed,
        "singles_from_lossy_frames": p.lossy_frames.0,
        "modules": modules,
        "t0_ps": p.t0_ps,
        "time_bin_s": p.singles_rate.bin,
        "duration_s": p.duration_s,
        "rates_hz": {
            "singles": p.singles as f64 / span_s,
            "prompts": p.prompts as f64 / span_s,
            "delayed": p.delayed as f64 / span_s,
        },
        "dt": {
            "orientation": "smaller module (region in calib/map_channel.tsv, else channel / 64) first, ties: smaller channel; dt = t_first - t_second; a pair exactly +window apart in the last bin",
            "lo_ps": p.dt.lo,
            "bin_ps": p.dt.bin,
            "counts": p.dt.counts,
            "outside": p.dt.outside,
            "peak_ps": p.dt_fwhm.map(|f| f.0),
            "fwhm_ps": p.dt_fwhm.map(|f| f.1),
            "window_ps": p.window_ps,
        },
    })
}
