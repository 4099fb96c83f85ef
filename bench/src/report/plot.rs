//! The SVG plot of the merged rows: throughput (median, with the min–max of the rounds), p99
//! latency and OS threads added, against concurrency.

use std::path::Path;

use plotters::prelude::*;

use super::{Environment, Row, ms};
use crate::args::Args;
use crate::variants::Variant;

const COLORS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(90, 90, 90),
];

fn color(variant: Variant) -> RGBColor {
    let index = Variant::ALL.iter().position(|v| *v == variant).unwrap_or(0);
    COLORS[index % COLORS.len()]
}

/// Three panels against concurrency: throughput, p99 latency, OS threads added.
pub fn plot(path: &Path, args: &Args, env: &Environment, rows: &[Row]) -> Result<(), String> {
    draw(path, args, env, rows).map_err(|e| format!("plot: {e}"))
}

type Panel<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Error = Box<dyn std::error::Error>;

fn draw(path: &Path, args: &Args, env: &Environment, rows: &[Row]) -> Result<(), Error> {
    let root = SVGBackend::new(path, (1500, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(80);
    title.draw_text(
        &format!(
            "{}, pool {}, {} database calls × {} ms, upstream {} ms, {} rounds × {} requests \
             per point (interleaved); nproc {}, load {} → {}",
            env.database,
            args.pool,
            args.reads + 1,
            ms(args.query),
            ms(args.upstream),
            args.rounds,
            args.requests_per_cell(),
            env.nproc,
            env.load_before,
            env.load_after,
        ),
        &("sans-serif", 16).into_font().color(&BLACK),
        (20, 14),
    )?;
    // One legend for the three panels.
    let mut x = 20;
    for &variant in &args.variants {
        if !rows.iter().any(|row| row.variant == variant) {
            continue;
        }
        let label = format!("({}) {}", variant.letter(), variant.label());
        title.draw(&PathElement::new(
            vec![(x, 56), (x + 24, 56)],
            color(variant).stroke_width(3),
        ))?;
        title.draw_text(
            &label,
            &("sans-serif", 14).into_font().color(&BLACK),
            (x + 30, 49),
        )?;
        x += 60 + 8 * label.len() as i32;
    }

    let panels = body.split_evenly((1, 3));
    let throughput = |row: &Row| row.per_second;
    let throughput_max = |row: &Row| row.per_second_max;
    let p99 = |row: &Row| ms(row.quantile(0.99)).max(0.1);
    let threads = |row: &Row| row.os_threads_added.max(1) as f64;
    let max_of = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).fold(1.0f64, f64::max);
    let min_of = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).fold(f64::INFINITY, f64::min);

    panel(
        &panels[0],
        args,
        rows,
        &Measure {
            caption: "throughput (req/s, median; bars: min–max of the rounds)",
            y: 0.0..max_of(&throughput_max) * 1.1,
            log_y: false,
            value: &throughput,
            spread: Some(&|row: &Row| (row.per_second_min, row.per_second_max)),
        },
    )?;
    panel(
        &panels[1],
        args,
        rows,
        &Measure {
            caption: "p99 latency (ms, log scale)",
            y: (min_of(&p99) * 0.8)..(max_of(&p99) * 1.5),
            log_y: true,
            value: &p99,
            spread: None,
        },
    )?;
    panel(
        &panels[2],
        args,
        rows,
        &Measure {
            caption: "OS threads added by the server (peak, log scale)",
            y: 0.8..(max_of(&threads) * 1.5),
            log_y: true,
            value: &threads,
            spread: None,
        },
    )?;
    root.present()?;
    Ok(())
}

/// What one panel shows.
struct Measure<'a> {
    caption: &'a str,
    y: std::ops::Range<f64>,
    log_y: bool,
    value: &'a dyn Fn(&Row) -> f64,
    /// A vertical bar at each point, from low to high.
    spread: Option<Spread<'a>>,
}

type Spread<'a> = &'a dyn Fn(&Row) -> (f64, f64);

/// One panel: concurrency on a log2 axis (ticks at powers of two), the measure on a linear or log
/// axis.
fn panel(area: &Panel<'_>, args: &Args, rows: &[Row], measure: &Measure<'_>) -> Result<(), Error> {
    let (caption, log_y, value, spread) = (
        measure.caption,
        measure.log_y,
        measure.value,
        measure.spread,
    );
    let y = measure.y.clone();
    let log2 = |c: usize| (c as f64).log2();
    let low = args
        .concurrency
        .iter()
        .copied()
        .map(log2)
        .fold(f64::MAX, f64::min);
    let high = args
        .concurrency
        .iter()
        .copied()
        .map(log2)
        .fold(f64::MIN, f64::max);
    let x = (low.floor() - 0.3)..(high.ceil() + 0.3);
    let ticks = (high.ceil() - low.floor()) as usize + 1;
    let x_label = |v: &f64| {
        if (v - v.round()).abs() < 1e-6 {
            format!("{:.0}", v.round().exp2())
        } else {
            String::new()
        }
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60);
    let points = |variant: Variant| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|row| row.variant == variant)
            .map(|row| (log2(row.concurrency), value(row)))
            .collect()
    };
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("client concurrency")
                .x_labels(ticks)
                .x_label_formatter(&x_label)
                .y_label_formatter(&|v| format!("{v:.0}"))
                .max_light_lines(0)
                .draw()?;
            for &variant in &args.variants {
                let color = color(variant);
                chart.draw_series(LineSeries::new(points(variant), color.stroke_width(2)))?;
                chart.draw_series(
                    points(variant)
                        .into_iter()
                        .map(|point| Circle::new(point, 3, color.filled())),
                )?;
                if let Some(spread) = spread {
                    chart.draw_series(rows.iter().filter(|row| row.variant == variant).map(
                        |row| {
                            let (low, high) = spread(row);
                            let x = log2(row.concurrency);
                            PathElement::new(vec![(x, low), (x, high)], color.stroke_width(1))
                        },
                    ))?;
                }
            }
        }};
    }
    if log_y {
        finish!(builder.build_cartesian_2d(x, y.log_scale())?);
    } else {
        finish!(builder.build_cartesian_2d(x, y)?);
    }
    Ok(())
}
