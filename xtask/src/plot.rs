//! The SVG plots of `bench-report` (plotters' SVG backend, no font dependencies: text is
//! left to the SVG viewer's fonts).

use plotters::prelude::*;
use std::path::Path;

const SIZE: (u32, u32) = (800, 420);
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("plotting {}: {e}", path.display())
}

/// Horizontal bars of ratios on a logarithmic axis, drawn from parity (1, a line): right
/// of it the ratio is above 1, left of it below.
pub fn ratio_bars(path: &Path, title: &str, bars: &[(String, f64)]) -> Result<(), String> {
    let height = 80 + 22 * bars.len() as u32;
    let root = SVGBackend::new(path, (SIZE.0, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let finite = || {
        bars.iter()
            .map(|b| b.1)
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    let hi = finite().fold(1.0f64, f64::max) * 2.0;
    let lo = finite().fold(1.0f64, f64::min) / 1.5;
    let n = bars.len();
    // The category axis counts hundredths of a bar, so its key points sit at bar centres.
    let keys: Vec<i32> = (0..n as i32).map(|i| i * 100 + 50).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(330)
        .build_cartesian_2d(
            (lo..hi).log_scale(),
            (0..n as i32 * 100).with_key_points(keys),
        )
        .map_err(|e| err(path, e))?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .x_label_formatter(&|x| format!("{x:.1}×"))
        .y_label_formatter(&|y| {
            let i = (*y / 100).max(0) as usize;
            labels
                .get(n.saturating_sub(i + 1))
                .cloned()
                .unwrap_or_default()
        })
        .x_desc("peer's time / meridian's (log scale; right of 1: meridian is faster)")
        .draw()
        .map_err(|e| err(path, e))?;
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, (_, v))| {
            let y = (n - i - 1) as i32 * 100;
            let color = if *v >= 1.0 { COLORS[2] } else { COLORS[3] };
            (v.is_finite() && *v > 0.0)
                .then(|| Rectangle::new([(1.0, y + 15), (*v, y + 85)], color.filled()))
        }))
        .map_err(|e| err(path, e))?;
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, (_, v))| {
            let y = (n - i - 1) as i32 * 100;
            (v.is_finite() && *v > 0.0).then(|| {
                Text::new(
                    format!("{v:.2}×"),
                    (v.max(1.0) * 1.04, y + 75),
                    ("sans-serif", 11),
                )
            })
        }))
        .map_err(|e| err(path, e))?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, 0), (1.0, n as i32 * 100)],
            BLACK.stroke_width(1),
        )))
        .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}

/// Vertical bars: one group per entry of `groups`, one bar per entry of `series`.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    series: &[&str],
    groups: &[(String, Vec<f64>)],
) -> Result<(), String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let max = groups
        .iter()
        .flat_map(|g| g.1.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.15;
    let n = groups.len();
    // The category axis counts hundredths of a group, so its key points sit at group centres.
    let keys: Vec<i32> = (0..n as i32).map(|i| i * 100 + 50).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n as i32 * 100).with_key_points(keys), 0.0..max)
        .map_err(|e| err(path, e))?;
    let labels: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| {
            labels
                .get((*x / 100).max(0) as usize)
                .cloned()
                .unwrap_or_default()
        })
        .y_desc("ms")
        .draw()
        .map_err(|e| err(path, e))?;
    let width = 80 / series.len().max(1) as i32;
    for (s, name) in series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        chart
            .draw_series(groups.iter().enumerate().filter_map(|(g, (_, values))| {
                let v = *values.get(s)?;
                let x0 = g as i32 * 100 + 10 + s as i32 * width;
                v.is_finite()
                    .then(|| Rectangle::new([(x0, 0.0), (x0 + width * 9 / 10, v)], color.filled()))
            }))
            .map_err(|e| err(path, e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}

/// Lines with points over a logarithmic x axis (and y axis, with `log_y`).
pub fn log_lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    log_y: bool,
) -> Result<(), String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let all = || series.iter().flat_map(|s| s.1.iter().copied());
    let (x_min, x_max) = all().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(x), b.max(x)));
    let (y_min, y_max) = all().fold((f64::MAX, f64::MIN), |(a, b), (_, y)| (a.min(y), b.max(y)));
    if x_min > x_max {
        return Err(err(path, "no points"));
    }
    let x_range = (x_min / 1.3).max(1e-9)..x_max * 1.3;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70);
    let chart = &mut builder;
    let style = |i: usize| COLORS[i % COLORS.len()];
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart.map_err(|e| err(path, e))?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .light_line_style(WHITE)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| {
                    if *y >= 10.0 {
                        format!("{y:.0}")
                    } else {
                        format!("{y:.3}")
                    }
                })
                .draw()
                .map_err(|e| err(path, e))?;
            for (i, (name, pts)) in series.iter().enumerate() {
                let color = style(i);
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                    .map_err(|e| err(path, e))?
                    .label(*name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(PointSeries::of_element(
                        pts.iter().copied(),
                        4,
                        color.filled(),
                        &|c, s, st| Circle::new(c, s, st),
                    ))
                    .map_err(|e| err(path, e))?;
            }
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(|e| err(path, e))?;
        }};
    }
    if log_y {
        draw!(chart.build_cartesian_2d(
            x_range.log_scale(),
            ((y_min / 2.0).max(1e-9)..y_max * 2.0).log_scale()
        ));
    } else {
        draw!(chart.build_cartesian_2d(x_range.log_scale(), 0.0..y_max * 1.2));
    }
    root.present().map_err(|e| err(path, e))
}
