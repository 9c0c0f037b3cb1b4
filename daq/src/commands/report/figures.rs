//! The report's figures as inline SVG, drawn with plotters' SVG backend: line charts (spectra,
//! histograms as steps, rates), scatter charts (trigger timelines), count maps (one
//! coloured cell per crystal) and images (a PNG, [`super::png`], placed in a chart's plotting
//! area so it has real axes). Every figure is a string of SVG, so the page needs no network
//! and no script.

use super::histogram::Histogram;
use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Width and height of a figure, px.
pub(super) const SIZE: (u32, u32) = (640, 360);
/// A smaller figure (count maps).
pub(super) const SMALL: (u32, u32) = (300, 300);

/// Colours of series, in order.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// One line of a chart.
pub(super) struct Series {
    /// Legend text (empty: no legend entry).
    pub name: String,
    /// Points in data coordinates.
    pub points: Vec<(f64, f64)>,
    /// Index into the palette.
    pub colour: usize,
    /// Draw points as dots instead of a line.
    pub dots: bool,
}

impl Series {
    /// A line.
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>, colour: usize) -> Self {
        Self {
            name: name.into(),
            points,
            colour,
            dots: false,
        }
    }

    /// A histogram as a step line (each bin's top drawn flat across the bin).
    pub fn steps(name: impl Into<String>, h: &Histogram, scale: f64, colour: usize) -> Self {
        let mut points = Vec::with_capacity(2 * h.counts.len());
        for (k, &c) in h.counts.iter().enumerate() {
            let x0 = h.lo + k as f64 * h.bin;
            points.push((x0, c as f64 * scale));
            points.push((x0 + h.bin, c as f64 * scale));
        }
        Self::line(name, points, colour)
    }
}

/// A chart: title, axis descriptions and its series.
pub(super) struct Chart {
    /// Title above the plot.
    pub title: String,
    /// x axis description (with the unit).
    pub x_desc: String,
    /// y axis description (with the unit).
    pub y_desc: String,
    /// The lines.
    pub series: Vec<Series>,
    /// Plot log10 of the y values (zero and negative values are left out).
    pub log_y: bool,
    /// Vertical marker lines (x, label).
    pub markers: Vec<(f64, String)>,
}

fn draw_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a figure: {e}")
}

/// Draws `chart` as an SVG of `size`; None when it has no finite point to show.
pub(super) fn chart_svg(chart: &Chart, size: (u32, u32)) -> Result<Option<String>> {
    let tr = |y: f64| if chart.log_y { y.log10() } else { y };
    let all = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|&(x, y)| (x, tr(y)))
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return Ok(None);
    }
    if x1 <= x0 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let dots = chart.series.iter().any(|s| s.dots);
    if !chart.log_y && !dots {
        y0 = y0.min(0.0);
    }
    let pad = if y1 > y0 { 0.05 * (y1 - y0) } else { 1.0 };
    let below = if chart.log_y || dots { pad } else { 0.0 };
    let (y0, y1) = (y0 - below, y1 + pad);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err)?;
        let log_y = chart.log_y;
        let y_fmt = move |v: &f64| {
            if log_y {
                format!("1e{v:.1}")
            } else {
                short_number(*v)
            }
        };
        c.configure_mesh()
            .x_desc(chart.x_desc.as_str())
            .y_desc(chart.y_desc.as_str())
            .x_label_formatter(&|v| short_number(*v))
            .y_label_formatter(&y_fmt)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(draw_err)?;
        let mut legend = false;
        for s in &chart.series {
            let colour = PALETTE[s.colour % PALETTE.len()];
            let pts = s
                .points
                .iter()
                .map(|&(x, y)| (x, tr(y)))
                .filter(|(x, y)| x.is_finite() && y.is_finite());
            let drawn = if s.dots {
                c.draw_series(pts.map(|p| Circle::new(p, 3, colour.filled())))
                    .map_err(draw_err)?
            } else {
                c.draw_series(LineSeries::new(pts, colour.stroke_width(1)))
                    .map_err(draw_err)?
            };
            if !s.name.is_empty() {
                legend = true;
                drawn.label(s.name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
            }
        }
        for (x, label) in &chart.markers {
            let style = BLACK.mix(0.6).stroke_width(1);
            c.draw_series(LineSeries::new([(*x, y0), (*x, y1)], style))
                .map_err(draw_err)?;
            c.draw_series(std::iter::once(Text::new(
                label.clone(),
                (*x, y1 - pad),
                ("sans-serif", 11),
            )))
            .map_err(draw_err)?;
        }
        if legend {
            c.configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font(("sans-serif", 11))
                .draw()
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(Some(svg))
}

/// A number for an axis label: integers plain, others with up to 3 significant digits,
/// large and small ones in exponent form.
pub(super) fn short_number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.1e}")
    } else if v.fract() == 0.0 || a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .into()
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .into()
    }
}

/// A map of `nx` x `ny` cells coloured by `values` (row-major, row 0 at the top), with the
/// colour scale from the smallest to the largest value; cells with a negative value are left
/// grey.
pub(super) fn grid_svg(title: &str, nx: usize, ny: usize, values: &[f64]) -> Result<String> {
    let max = values.iter().copied().fold(0.0f64, f64::max);
    let min = values
        .iter()
        .copied()
        .filter(|&v| v >= 0.0)
        .fold(max, f64::min);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SMALL).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(28)
            .build_cartesian_2d(0..nx, 0..ny)
            .map_err(draw_err)?;
        c.configure_mesh()
            .disable_mesh()
            .x_labels(nx.min(8))
            .y_labels(ny.min(8))
            .draw()
            .map_err(draw_err)?;
        let cells = (0..ny).flat_map(|row| (0..nx).map(move |col| (row, col)));
        c.draw_series(cells.filter_map(|(row, col)| {
            let v = *values.get(row * nx + col)?;
            let colour = if v < 0.0 {
                RGBColor(200, 200, 200)
            } else {
                ViridisRGB::get_color(if max > min {
                    (v - min) / (max - min)
                } else {
                    0.5
                })
            };
            // Row 0 at the top: y runs upwards in the chart.
            let y = ny - 1 - row;
            Some(Rectangle::new(
                [(col, y), (col + 1, y + 1)],
                colour.filled(),
            ))
        }))
        .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// An image chart: axes for `x` and `y` (data ranges; the image's first row is at `y.0`,
/// drawn at the top when `y_down`) with the PNG `png_base64` filling the plotting area.
pub(super) struct ImageChart<'a> {
    /// Title.
    pub title: &'a str,
    /// x axis description.
    pub x_desc: &'a str,
    /// y axis description.
    pub y_desc: &'a str,
    /// Data range of the image's columns (left edge of the first, right edge of the last).
    pub x: (f64, f64),
    /// Data range of the image's rows (first row's edge, last row's edge).
    pub y: (f64, f64),
    /// First image row at the top (depth axes) instead of at the bottom.
    pub y_down: bool,
    /// The image, base64 PNG.
    pub png_base64: &'a str,
}

/// Draws an [`ImageChart`] of `size`.
pub(super) fn image_svg(img: &ImageChart<'_>, size: (u32, u32)) -> Result<String> {
    let mut svg = String::new();
    let area;
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (ya, yb) = if img.y_down {
            (img.y.1, img.y.0)
        } else {
            (img.y.0, img.y.1)
        };
        let (lo, hi) = (ya.min(yb), ya.max(yb));
        let c = build(&root, img, (lo, hi))?;
        area = c.plotting_area().get_pixel_range();
        root.present().map_err(draw_err)?;
    }
    let transform = if img.y_down == (img.y.1 > img.y.0) {
        // The image's first row must be at the top: it is, as PNG rows run downwards.
        String::new()
    } else {
        let (y0, y1) = (area.1.start, area.1.end);
        format!(" transform=\"translate(0 {}) scale(1 -1)\"", y0 + y1)
    };
    let image = format!(
        "<image x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" preserveAspectRatio=\"none\" style=\"image-rendering:pixelated\"{transform} href=\"data:image/png;base64,{}\"/>",
        area.0.start,
        area.1.start,
        area.0.end - area.0.start,
        area.1.end - area.1.start,
        img.png_base64
    );
    match svg.rfind("</svg>") {
        Some(at) => svg.insert_str(at, &image),
        None => return Err(anyhow!("drawing a figure: no SVG produced")),
    }
    Ok(svg)
}

fn build<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    img: &ImageChart<'_>,
    (lo, hi): (f64, f64),
) -> Result<ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    let (x0, x1) = (img.x.0.min(img.x.1), img.x.0.max(img.x.1));
    let y_range = if img.y_down { hi..lo } else { lo..hi };
    let mut c = ChartBuilder::on(root)
        .caption(img.title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y_range)
        .map_err(draw_err)?;
    c.configure_mesh()
        .disable_mesh()
        .x_desc(img.x_desc)
        .y_desc(img.y_desc)
        .x_label_formatter(&|v| short_number(*v))
        .y_label_formatter(&|v| short_number(*v))
        .draw()
        .map_err(draw_err)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_one_svg_element_with_its_title_and_an_empty_one_is_none() {
        let chart = Chart {
            title: "Energy <module 0>".into(),
            x_desc: "keV".into(),
            y_desc: "counts".into(),
            series: vec![Series::line("a", vec![(0.0, 1.0), (1.0, 3.0)], 0)],
            log_y: false,
            markers: vec![(0.5, "511".into())],
        };
        let svg = chart_svg(&chart, SIZE).unwrap().unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50]);
        assert!(svg.contains("Energy &lt;module 0&gt;"), "title escaped");
        let empty = Chart {
            series: vec![],
            ..chart
        };
        assert!(chart_svg(&empty, SIZE).unwrap().is_none());
    }

    #[test]
    fn an_image_chart_embeds_the_png_inside_the_svg() {
        let svg = image_svg(
            &ImageChart {
                title: "B-mode",
                x_desc: "x (mm)",
                y_desc: "depth (mm)",
                x: (-10.0, 10.0),
                y: (5.0, 50.0),
                y_down: true,
                png_base64: "AAAA",
            },
            SIZE,
        )
        .unwrap();
        let image = svg.find("<image").unwrap();
        assert!(image < svg.rfind("</svg>").unwrap());
        assert!(svg.contains("data:image/png;base64,AAAA"));
    }
}
