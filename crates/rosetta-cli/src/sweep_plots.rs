//! A sweep's plots as PNG files: the objective of each trial over time, the objective against each
//! swept key, and every trial's validation curve (pruned trials marked where they stopped).
//!
//! Text is drawn with a system TrueType font (as the attention heatmaps are); without one the
//! plots are skipped with a notice and the tables are still written.

use anyhow::Result;
use plotters::prelude::*;
use plotters::style::FontStyle;
use rosetta_sweep::report::{Report, show_value};
use rosetta_sweep::study::{Status, TrialRow};
use std::path::Path;

const SIZE: (u32, u32) = (900, 540);
const COMPLETE: RGBColor = RGBColor(31, 119, 180);
const PRUNED: RGBColor = RGBColor(255, 127, 14);
const BEST: RGBColor = RGBColor(44, 160, 44);

/// Registers the label font once; false when the system has none.
fn font_ready() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(|| {
        let Some(bytes) = crate::heatmap::font_bytes() else {
            return false;
        };
        // plotters keeps registered fonts for the whole process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

fn color(t: &TrialRow) -> RGBColor {
    if t.status == Status::Pruned {
        PRUNED
    } else {
        COMPLETE
    }
}

/// The range of values with a margin, never empty.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3 * hi.abs().max(1.0));
    (lo - pad, hi + pad)
}

/// Writes every plot into `out`; returns how many.
pub fn write_all(report: &Report, out: &Path) -> Result<usize> {
    if !font_ready() {
        eprintln!(
            "note: no TrueType font found (set ROSETTA_FONT to a .ttf file): plots skipped, tables written"
        );
        return Ok(0);
    }
    let finished: Vec<&TrialRow> = report
        .trials
        .iter()
        .filter(|t| t.objective.is_some() && t.status.is_finished())
        .collect();
    if finished.is_empty() {
        eprintln!("note: no finished trial yet: nothing to plot");
        return Ok(0);
    }
    let mut count = 0;
    over_time(report, &finished, &out.join("objective_over_time.png"))?;
    count += 1;
    for key in &report.keys {
        let name = format!("objective_vs_{}.png", key.replace('.', "_"));
        if against_key(report, &finished, key, &out.join(name))? {
            count += 1;
        }
    }
    if report.training && !report.curves.is_empty() {
        curves(report, &out.join("validation_curves.png"))?;
        count += 1;
    }
    Ok(count)
}

fn metric_label(report: &Report) -> String {
    format!("validation {}", report.metric.name())
}

/// Each finished trial's objective at the time it finished, and the best so far.
fn over_time(report: &Report, finished: &[&TrialRow], path: &Path) -> Result<()> {
    let start = report
        .trials
        .iter()
        .filter_map(|t| t.started)
        .fold(f64::INFINITY, f64::min);
    let mut points: Vec<(f64, f64, &TrialRow)> = finished
        .iter()
        .map(|t| {
            let minutes = (t.finished.unwrap_or(start) - start) / 60.0;
            (minutes, t.objective.unwrap_or(0.0), *t)
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (x0, x1) = span(points.iter().map(|p| p.0).chain([0.0]));
    let (y0, y1) = span(points.iter().map(|p| p.1));
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Objective of each trial over the sweep", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(60)
        .build_cartesian_2d(x0.max(0.0)..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("minutes since the sweep began (trial finished)")
        .y_desc(metric_label(report))
        .draw()?;
    let mut best: Option<f64> = None;
    let mut staircase = Vec::new();
    for &(x, y, _) in &points {
        if best.is_none_or(|b| report.direction.better(y, b)) {
            // A step: level until this trial finished, then up (or down) to its value.
            if let Some(b) = best {
                staircase.push((x, b));
            }
            best = Some(y);
        }
        staircase.push((x, best.unwrap_or(y)));
    }
    chart
        .draw_series(LineSeries::new(staircase, BEST.stroke_width(2)))?
        .label("best so far")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BEST.stroke_width(2)));
    chart
        .draw_series(
            points
                .iter()
                .filter(|p| p.2.status != Status::Pruned)
                .map(|&(x, y, _)| Circle::new((x, y), 5, COMPLETE.filled())),
        )?
        .label("complete")
        .legend(|(x, y)| Circle::new((x + 9, y), 5, COMPLETE.filled()));
    chart
        .draw_series(
            points
                .iter()
                .filter(|p| p.2.status == Status::Pruned)
                .map(|&(x, y, _)| Cross::new((x, y), 6, PRUNED.stroke_width(2))),
        )?
        .label("pruned")
        .legend(|(x, y)| Cross::new((x + 9, y), 6, PRUNED.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A finished trial's marker: a dot, or a cross when the pruner stopped it.
fn marker<DB: DrawingBackend>(x: f64, y: f64, t: &TrialRow) -> DynElement<'static, DB, (f64, f64)> {
    if t.status == Status::Pruned {
        Cross::new((x, y), 6, color(t).stroke_width(2)).into_dyn()
    } else {
        Circle::new((x, y), 5, color(t).filled()).into_dyn()
    }
}

/// The objective against one swept key: numbers on a numeric axis (logarithmic when the values
/// span more than a factor of 20), anything else as categories.
fn against_key(report: &Report, finished: &[&TrialRow], key: &str, path: &Path) -> Result<bool> {
    let values: Vec<(&toml::Value, f64, &TrialRow)> = finished
        .iter()
        .filter_map(|t| Some((t.params.get(key)?, t.objective?, *t)))
        .collect();
    if values.is_empty() {
        return Ok(false);
    }
    let numeric: Option<Vec<f64>> = values
        .iter()
        .map(|(v, _, _)| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
        .collect();
    let (y0, y1) = span(values.iter().map(|v| v.1));
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!("Objective against {key}");
    match numeric {
        Some(xs) => {
            let (lo, hi) = xs
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let log = lo > 0.0 && hi / lo > 20.0;
            let tx = |v: f64| if log { v.log10() } else { v };
            let (x0, x1) = span(xs.iter().map(|&v| tx(v)));
            let mut chart = ChartBuilder::on(&root)
                .caption(caption, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(42)
                .y_label_area_size(60)
                .build_cartesian_2d(x0..x1, y0..y1)?;
            chart
                .configure_mesh()
                .x_desc(if log {
                    format!("{key} (log scale)")
                } else {
                    key.to_owned()
                })
                .y_desc(metric_label(report))
                .x_label_formatter(&|v| {
                    if log {
                        format!("{:.2e}", 10f64.powf(*v))
                    } else {
                        format!("{v:.3}")
                    }
                })
                .draw()?;
            chart.draw_series(
                values
                    .iter()
                    .zip(&xs)
                    .map(|((_, y, t), &x)| marker(tx(x), *y, t)),
            )?;
        }
        None => {
            let mut categories: Vec<String> = Vec::new();
            for (v, _, _) in &values {
                let s = show_value(v);
                if !categories.contains(&s) {
                    categories.push(s);
                }
            }
            let n = categories.len() as f64;
            let mut chart = ChartBuilder::on(&root)
                .caption(caption, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(42)
                .y_label_area_size(60)
                .build_cartesian_2d(-0.5..n - 0.5, y0..y1)?;
            let labels = categories.clone();
            chart
                .configure_mesh()
                .x_desc(key)
                .y_desc(metric_label(report))
                .x_labels(categories.len() * 2 + 1)
                .x_label_formatter(&move |v| {
                    let i = v.round();
                    if (v - i).abs() < 0.01 && i >= 0.0 {
                        labels.get(i as usize).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .draw()?;
            chart.draw_series(values.iter().map(|(v, y, t)| {
                let i = categories
                    .iter()
                    .position(|c| *c == show_value(v))
                    .unwrap_or(0);
                marker(i as f64, *y, t)
            }))?;
        }
    }
    root.present()?;
    Ok(true)
}

/// Every trial's validation curve; pruned trials end in a cross, the best trial is drawn thick.
fn curves(report: &Report, path: &Path) -> Result<()> {
    let steps = report.curves.values().flatten().map(|p| p.step as f64);
    let (x0, x1) = span(steps.chain([0.0]));
    let (y0, y1) = span(report.curves.values().flatten().map(|p| p.objective));
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Validation curves (× = stopped by the pruner)",
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(60)
        .build_cartesian_2d(x0.max(0.0)..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("updates")
        .y_desc(metric_label(report))
        .draw()?;
    let best = report.best().map(|t| t.id);
    for t in &report.trials {
        let Some(points) = report.curves.get(&t.id) else {
            continue;
        };
        let line: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.step as f64, p.objective))
            .collect();
        let is_best = Some(t.id) == best;
        let style = if is_best {
            BEST.stroke_width(3)
        } else {
            color(t).mix(0.7).stroke_width(1)
        };
        let series = chart.draw_series(LineSeries::new(line.clone(), style))?;
        if is_best {
            series
                .label(format!("best: trial {}", t.id))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BEST.stroke_width(3)));
        }
        if t.status == Status::Pruned
            && let Some(&(x, y)) = line.last()
        {
            chart.draw_series(std::iter::once(Cross::new(
                (x, y),
                6,
                PRUNED.stroke_width(2),
            )))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}
