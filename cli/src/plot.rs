//! SVG plots of results (plotters): a scan curve, a Brazil band, a ranking, a pull plot,
//! toy distributions and the time per toy of `bench toys`.

use crate::common::{CliError, CliResult};
use nextstat::infer::{RankingEntry, UpperLimit};
use nextstat::toys::Ensembles;
use plotters::prelude::*;
use std::path::Path;

fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> CliError + '_ {
    move |e| CliError {
        message: format!("cannot draw {}: {e}", path.display()),
        code: 1,
    }
}

fn range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = (hi - lo).max(1e-9);
    (lo - pad * span, hi + pad * span)
}

/// Delta 2*NLL against the POI, with the 1 and 4 (one and two sigma) lines.
pub fn scan(path: &Path, poi: &str, points: &[(f64, f64)]) -> CliResult {
    let e = draw_err(path);
    let root = SVGBackend::new(path, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let (x0, x1) = range(points.iter().map(|p| p.0), 0.02);
    let (_, y1) = range(points.iter().map(|p| p.1).chain([4.5]), 0.05);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("profile likelihood scan of {poi}"),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, 0f64..y1)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc(poi)
        .y_desc("-2 ln λ (Δ 2·NLL)")
        .draw()
        .map_err(&e)?;
    for (level, label) in [(1.0, "1σ"), (4.0, "2σ")] {
        chart
            .draw_series(LineSeries::new([(x0, level), (x1, level)], BLACK.mix(0.4)))
            .map_err(&e)?
            .label(label);
    }
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            BLUE.stroke_width(2),
        ))
        .map_err(&e)?;
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

/// CLs against the POI: observed line, expected median dashed, 1 and 2 sigma bands, alpha line.
pub fn brazil(path: &Path, poi: &str, ul: &UpperLimit) -> CliResult {
    let e = draw_err(path);
    let root = SVGBackend::new(path, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let hi = ul.exp[4].max(ul.obs) * 1.3;
    let tests: Vec<_> = ul.tests.iter().filter(|t| t.mu <= hi).collect();
    let x0 = tests.first().map_or(0.0, |t| t.mu);
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("CLs upper limit on {poi}"), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..hi, 0f64..1.05)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc(poi)
        .y_desc("CLs")
        .draw()
        .map_err(&e)?;
    let band = |lo: usize, up: usize| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = tests.iter().map(|t| (t.mu, t.cls_exp[up])).collect();
        v.extend(tests.iter().rev().map(|t| (t.mu, t.cls_exp[lo])));
        v
    };
    let yellow = RGBColor(255, 223, 0);
    let green = RGBColor(0, 200, 0);
    chart
        .draw_series([Polygon::new(band(0, 4), yellow.filled())])
        .map_err(&e)?;
    chart
        .draw_series([Polygon::new(band(1, 3), green.filled())])
        .map_err(&e)?;
    chart
        .draw_series(LineSeries::new(
            tests.iter().map(|t| (t.mu, t.cls_exp[2])),
            BLACK.stroke_width(1),
        ))
        .map_err(&e)?;
    chart
        .draw_series(LineSeries::new(
            tests.iter().map(|t| (t.mu, t.cls_obs)),
            BLACK.stroke_width(3),
        ))
        .map_err(&e)?;
    chart
        .draw_series(LineSeries::new(
            [(x0, ul.alpha), (hi, ul.alpha)],
            RED.stroke_width(1),
        ))
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

type Chart<'a> = ChartContext<
    'a,
    SVGBackend<'a>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Writes row names (top row first) to the left of the plot area, one per unit of y.
fn row_labels(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    chart: &Chart<'_>,
    x_left: f64,
    names: &[String],
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    let n = names.len() as f64;
    let style = TextStyle::from(("sans-serif", 13).into_font()).pos(
        plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Right,
            plotters::style::text_anchor::VPos::Center,
        ),
    );
    for (k, name) in names.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(x_left, n - k as f64 - 0.5));
        root.draw(&Text::new(name.clone(), (px - 8, py), style.clone()))?;
    }
    Ok(())
}

/// Horizontal bars of post-fit (filled) and pre-fit (outline) impacts, largest on top.
pub fn ranking(path: &Path, poi: &str, entries: &[RankingEntry]) -> CliResult {
    let e = draw_err(path);
    let height = 120 + 28 * entries.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let m = entries
        .iter()
        .flat_map(|r| {
            [
                r.postfit_up,
                r.postfit_down,
                r.prefit_up.unwrap_or(0.0),
                r.prefit_down.unwrap_or(0.0),
            ]
        })
        .fold(1e-9f64, |a, v| a.max(v.abs()))
        * 1.1;
    let n = entries.len() as f64;
    let names: Vec<String> = entries.iter().map(|r| r.name.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("impact on {poi}"), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(220)
        .build_cartesian_2d(-m..m, 0f64..n)
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc(format!("Δ{poi}"))
        .y_labels(0)
        .disable_y_mesh()
        .draw()
        .map_err(&e)?;
    row_labels(&root, &chart, -m, &names).map_err(&e)?;
    for (k, r) in entries.iter().enumerate() {
        let y = n - k as f64 - 1.0;
        let bar = |v: f64, style: ShapeStyle| Rectangle::new([(0.0, y + 0.2), (v, y + 0.8)], style);
        if let (Some(u), Some(d)) = (r.prefit_up, r.prefit_down) {
            chart
                .draw_series([bar(u, BLUE.stroke_width(1)), bar(d, CYAN.stroke_width(1))])
                .map_err(&e)?;
        }
        chart
            .draw_series([
                bar(r.postfit_up, BLUE.mix(0.7).filled()),
                bar(r.postfit_down, CYAN.mix(0.7).filled()),
            ])
            .map_err(&e)?;
    }
    root.present().map_err(&e)?;
    Ok(())
}

/// Pulls (bestfit - centre) / prefit sigma with post-fit error bars, and the +-1, +-2 bands.
pub fn pulls(path: &Path, pulls: &[(String, f64, f64)]) -> CliResult {
    let e = draw_err(path);
    let height = 120 + 22 * pulls.len() as u32;
    let root = SVGBackend::new(path, (800, height)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let n = pulls.len() as f64;
    let names: Vec<String> = pulls.iter().map(|p| p.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption("pulls of constrained parameters", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(220)
        .build_cartesian_2d(-3f64..3f64, 0f64..n.max(1.0))
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc("(θ̂ - θ₀) / Δθ")
        .y_labels(0)
        .disable_y_mesh()
        .draw()
        .map_err(&e)?;
    row_labels(&root, &chart, -3.0, &names).map_err(&e)?;
    let yellow = RGBColor(255, 223, 0);
    let green = RGBColor(0, 200, 0);
    chart
        .draw_series([Rectangle::new(
            [(-2.0, 0.0), (2.0, n)],
            yellow.mix(0.5).filled(),
        )])
        .map_err(&e)?;
    chart
        .draw_series([Rectangle::new(
            [(-1.0, 0.0), (1.0, n)],
            green.mix(0.5).filled(),
        )])
        .map_err(&e)?;
    for (k, (_, pull, err)) in pulls.iter().enumerate() {
        let y = n - k as f64 - 0.5;
        chart
            .draw_series(LineSeries::new(
                [((pull - err).max(-3.0), y), ((pull + err).min(3.0), y)],
                BLACK.stroke_width(2),
            ))
            .map_err(&e)?;
        chart
            .draw_series([Circle::new((pull.clamp(-3.0, 3.0), y), 4, BLACK.filled())])
            .map_err(&e)?;
    }
    root.present().map_err(&e)?;
    Ok(())
}

/// Histograms of the toys' test statistics for both hypotheses (log scale) and the observed
/// value, like pyhf's and cabinetry's toy plots.
pub fn toys(path: &Path, poi: &str, mu: f64, q_obs: f64, ens: &Ensembles) -> CliResult {
    let e = draw_err(path);
    let sb: Vec<f64> = ens
        .signal_plus_background
        .iter()
        .flatten()
        .copied()
        .collect();
    let b: Vec<f64> = ens.background_only.iter().flatten().copied().collect();
    let hi = sb.iter().chain(&b).copied().fold(q_obs, f64::max).max(1e-6) * 1.05;
    let n_bins = 50;
    let width = hi / n_bins as f64;
    let hist = |v: &[f64]| -> Vec<f64> {
        let mut h = vec![0.0; n_bins];
        for &x in v {
            let i = ((x / width) as usize).min(n_bins - 1);
            h[i] += 1.0;
        }
        let n = v.len().max(1) as f64;
        h.iter().map(|c| c / (n * width)).collect()
    };
    let (hs, hb) = (hist(&sb), hist(&b));
    let ymin = 0.5 / (sb.len().max(b.len()).max(1) as f64 * width);
    let ymax = hs.iter().chain(&hb).copied().fold(ymin * 10.0, f64::max) * 2.0;
    let root = SVGBackend::new(path, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("test statistic of toys, {poi} = {mu}"),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..hi, (ymin..ymax).log_scale())
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc("test statistic")
        .y_desc("density")
        .draw()
        .map_err(&e)?;
    let steps = |h: &[f64]| -> Vec<(f64, f64)> {
        let mut pts = Vec::with_capacity(2 * h.len());
        for (i, &v) in h.iter().enumerate() {
            let v = v.max(ymin);
            pts.push((i as f64 * width, v));
            pts.push(((i + 1) as f64 * width, v));
        }
        pts
    };
    chart
        .draw_series(LineSeries::new(steps(&hs), RED.stroke_width(2)))
        .map_err(&e)?
        .label(format!("signal + background ({})", sb.len()))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(steps(&hb), BLUE.stroke_width(2)))
        .map_err(&e)?
        .label(format!("background only ({})", b.len()))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            [(q_obs, ymin), (q_obs, ymax)],
            BLACK.stroke_width(2),
        ))
        .map_err(&e)?
        .label("observed")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

/// Time per toy against toys per hypothesis, log-log, one line per engine (`bench toys`).
pub fn bench_toys(path: &Path, model: &str, curves: &[(String, Vec<(f64, f64)>)]) -> CliResult {
    let e = draw_err(path);
    let positive = |f: fn(&(f64, f64)) -> f64| {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in curves.iter().flat_map(|c| c.1.iter().map(f)) {
            if v.is_finite() && v > 0.0 {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if lo.is_finite() {
            (lo, hi)
        } else {
            (1.0, 10.0)
        }
    };
    let (x0, x1) = positive(|p| p.0);
    let (y0, y1) = positive(|p| p.1);
    let (x0, x1) = (x0 / 1.4, x1 * 1.4);
    let (y0, y1) = (y0 / 1.5, y1 * 1.5);
    // Room at the top for the legend: a fifth of the (log) height, at least a factor of 2.
    let y1 = y1 * (y1 / y0).powf(0.25).max(2.0);
    // Labelled ticks at 1, 2, 5 per decade, or at every digit where that gives fewer than 3.
    const ALL: [f64; 9] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    let bold = |lo: f64, hi: f64| {
        let t = log_ticks(lo, hi, &[1.0, 2.0, 5.0]);
        if t.len() < 3 {
            log_ticks(lo, hi, &ALL)
        } else {
            t
        }
    };
    let root = SVGBackend::new(path, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(&e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("time per toy against batch size, {model}"),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x0..x1)
                .log_scale()
                .with_key_points(bold(x0, x1))
                .with_light_points(log_ticks(x0, x1, &ALL)),
            (y0..y1)
                .log_scale()
                .with_key_points(bold(y0, y1))
                .with_light_points(log_ticks(y0, y1, &ALL)),
        )
        .map_err(&e)?;
    chart
        .configure_mesh()
        .x_desc("toys per hypothesis")
        .y_desc("µs per toy")
        .x_label_formatter(&|v| compact(*v))
        .y_label_formatter(&|v| compact(*v))
        .draw()
        .map_err(&e)?;
    let colors = [BLUE, RED, GREEN, MAGENTA, BLACK];
    for (k, (label, points)) in curves.iter().enumerate() {
        let color = colors[k % colors.len()];
        let pts: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|&(x, y)| x > 0.0 && y > 0.0 && y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(&e)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(&e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(&e)?;
    root.present().map_err(&e)?;
    Ok(())
}

/// `m · 10^k` for every mantissa `m` and decade `k` with the value in `lo..=hi`.
fn log_ticks(lo: f64, hi: f64, mantissas: &[f64]) -> Vec<f64> {
    let mut out = Vec::new();
    if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
        return out;
    }
    for k in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
        for m in mantissas {
            let v = m * 10f64.powi(k);
            if (lo..=hi).contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

/// A tick label without trailing zeros: 100, 3k, 10k, 2.5, 0.04.
fn compact(v: f64) -> String {
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if v >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if v >= 1e3 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if v >= 1.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}
