//! Charts as SVG, drawn by `plotters`: series in, an SVG document out. The dashboard serves them, and
//! the benchmarks write them next to their tables.
//!
//! - [`lines`]: lines over x, each with an optional band (e.g. an error bound around an offset), on a
//!   linear or a logarithmic y axis (a log axis shows seconds and microseconds on one chart);
//! - [`stacked_bars`]: one bar per label, split into named parts (e.g. a failover's phases).

use plotters::prelude::*;

/// A named line: (x, y) points and, optionally, a band (x, low, high) drawn beneath it.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub band: Vec<(f64, f64, f64)>,
}

impl Series {
    /// A line without a band.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { name: name.into(), points, band: Vec::new() }
    }
}

/// The y axis' scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Linear,
    /// Logarithmic between these bounds (values are clamped into them; zero and below show at the low end).
    Log {
        min: f64,
        max: f64,
    },
}

/// A chart's size and captions.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub width: u32,
    pub height: u32,
    pub y: Scale,
}

impl Chart {
    /// A 720 × 300 chart with a linear y axis.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Self { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), width: 720, height: 300, y: Scale::Linear }
    }

    /// The same chart with a logarithmic y axis from `min` to `max`.
    pub fn log(mut self, min: f64, max: f64) -> Self {
        self.y = Scale::Log { min, max };
        self
    }

    /// The same chart at another size.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.width = width;
        self.height = height;
        self
    }
}

/// The palette, one colour per series in turn.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// The colour of the `i`th series.
pub fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// The colour of the `i`th series as CSS (`#rrggbb`), for legends drawn outside the chart.
pub fn css_color(i: usize) -> String {
    let RGBColor(r, g, b) = color(i);
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn x_range(series: &[Series]) -> (f64, f64) {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0).chain(s.band.iter().map(|b| b.0)));
    let (lo, hi) = xs.filter(|x| x.is_finite()).fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

fn y_range(series: &[Series]) -> (f64, f64) {
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1).chain(s.band.iter().flat_map(|b| [b.1, b.2])));
    let (lo, hi) = ys.filter(|y| y.is_finite()).fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        (lo - 1.0, hi + 1.0)
    } else {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    }
}

/// Draws `series` as lines (bands beneath them) and returns the SVG document. Points that are not
/// finite are skipped; an empty chart still draws its axes.
pub fn lines(chart: &Chart, series: &[Series]) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (chart.width, chart.height)).into_drawing_area();
        let (x0, x1) = x_range(series);
        let drawn = match chart.y {
            Scale::Linear => {
                let (y0, y1) = y_range(series);
                draw_lines(&root, chart, series, x0..x1, y0..y1, |y| y)
            }
            Scale::Log { min, max } => {
                let clamp = move |y: f64| if y.is_finite() { y.clamp(min, max) } else { y };
                draw_lines(&root, chart, series, x0..x1, (min..max).log_scale(), clamp)
            }
        };
        if let Err(e) = drawn.and_then(|()| root.present().map_err(|e| e.to_string())) {
            tracing::debug!(error = %e, "cannot draw a chart");
        }
    }
    svg
}

fn draw_lines<Y>(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    chart: &Chart,
    series: &[Series],
    x: std::ops::Range<f64>,
    y: Y,
    fit: impl Fn(f64) -> f64,
) -> Result<(), String>
where
    Y: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
    Y::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
{
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(|e| e.to_string())?;
    let log = matches!(chart.y, Scale::Log { .. });
    let y_format = |v: &f64| if log { format!("{v:.0e}") } else { format!("{}", (v * 1000.0).round() / 1000.0) };
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .y_label_formatter(&y_format)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        if !s.band.is_empty() {
            let band: Vec<(f64, f64)> = s
                .band
                .iter()
                .filter(|b| b.0.is_finite() && b.1.is_finite() && b.2.is_finite())
                .map(|b| (b.0, fit(b.2)))
                .chain(s.band.iter().rev().filter(|b| b.0.is_finite() && b.1.is_finite() && b.2.is_finite()).map(|b| (b.0, fit(b.1))))
                .collect();
            ctx.draw_series(std::iter::once(Polygon::new(band, c.mix(0.18)))).map_err(|e| e.to_string())?;
        }
        let points: Vec<(f64, f64)> = s.points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).map(|p| (p.0, fit(p.1))).collect();
        ctx.draw_series(LineSeries::new(points, c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(&s.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
    }
    if series.iter().any(|s| !s.name.is_empty()) {
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One bar per label, each split into the named parts stacked from zero; returns the SVG document.
/// `parts[k].1[i]` is part `k` of bar `i` (missing or negative values count as zero).
pub fn stacked_bars(chart: &Chart, labels: &[String], parts: &[(String, Vec<f64>)]) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (chart.width, chart.height)).into_drawing_area();
        if let Err(e) = draw_bars(&root, chart, labels, parts).and_then(|()| root.present().map_err(|e| e.to_string())) {
            tracing::debug!(error = %e, "cannot draw a chart");
        }
    }
    svg
}

fn draw_bars(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    chart: &Chart,
    labels: &[String],
    parts: &[(String, Vec<f64>)],
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let value = |k: usize, i: usize| parts[k].1.get(i).copied().filter(|v| v.is_finite() && *v > 0.0).unwrap_or(0.0);
    let top = (0..labels.len()).map(|i| (0..parts.len()).map(|k| value(k, i)).sum::<f64>()).fold(0.0, f64::max);
    let n = labels.len().max(1);
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n as f64, 0f64..if top > 0.0 { top * 1.1 } else { 1.0 })
        .map_err(|e| e.to_string())?;
    let labels_owned: Vec<String> = labels.to_vec();
    ctx.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .disable_x_mesh()
        .x_labels(n.min(20))
        .x_label_formatter(&|x| labels_owned.get(x.floor() as usize).cloned().unwrap_or_default())
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|e| e.to_string())?;
    for (k, (name, _)) in parts.iter().enumerate() {
        let c = color(k);
        let bars = (0..labels.len()).map(|i| {
            let below: f64 = (0..k).map(|j| value(j, i)).sum();
            let x = i as f64;
            Rectangle::new([(x + 0.15, below), (x + 0.85, below + value(k, i))], c.filled())
        });
        ctx.draw_series(bars)
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_chart_holds_seconds_and_microseconds_and_its_band() {
        let line = Series {
            name: "mobile".into(),
            points: vec![(0.0, 3.2), (5.0, 2e-4), (10.0, 1e-5)],
            band: vec![(0.0, 3.1, 3.3), (5.0, 1e-4, 3e-4), (10.0, 5e-6, 2e-5)],
        };
        let svg = lines(
            &Chart::new("offsets", "s", "|offset| (s)").log(1e-7, 1e3),
            &[line, Series::new("laptop", vec![(0.0, f64::NAN), (1.0, 0.0)])],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains("mobile") && svg.contains("laptop") && svg.contains("offsets"));
        assert!(svg.contains("<polyline") || svg.contains("<path"), "no line drawn");
        assert!(svg.contains("<polygon"), "no band drawn");
    }

    #[test]
    fn empty_and_degenerate_inputs_still_draw_axes() {
        for series in [vec![], vec![Series::new("one", vec![(1.0, 1.0)])], vec![Series::new("inf", vec![(f64::INFINITY, 1.0)])]] {
            let svg = lines(&Chart::new("t", "x", "y"), &series);
            assert!(svg.contains("</svg>"));
        }
        let svg = stacked_bars(
            &Chart::new("phases", "trial", "ms"),
            &["1".into(), "2".into()],
            &[("detection".into(), vec![200.0, 180.0]), ("election".into(), vec![3.0]), ("announcement".into(), vec![f64::NAN, -1.0])],
        );
        assert!(svg.contains("detection") && svg.contains("<rect"), "{svg}");
        assert!(stacked_bars(&Chart::new("none", "x", "y"), &[], &[]).contains("</svg>"));
    }
}
