//! The overload mode's report: the markdown table and the SVG plot.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::{CALIBRATION_CONCURRENCY, DRAIN, Point, ROUNDS, mib, ms, shedding};
use crate::args::Args;
use crate::load::quantile;
use crate::report::Environment;

pub(super) fn markdown(args: &Args, env: &Environment, rate: f64, rows: &[Point]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Overload: `ShedLayer` vs an unbounded queue\n");
    md.push_str(&env.header());
    let _ = writeln!(
        md,
        "- handler: variant (a) `#[blocking_first(limit = DB)]`, limit = pool = {}; {} database \
         calls × {} ms, upstream {} ms; server: tokio {} workers, fresh runtime per cell\n\
         - sustainable rate R = {rate:.0} req/s: a closed-loop cell of (a) at concurrency \
         {CALIBRATION_CONCURRENCY} ({} requests)\n\
         - offered load: open loop, one request started per tick of a fixed-rate tokio interval \
         (missed ticks burst) for {} s per cell, at 1×, 2×, 4× R; latency counted from the \
         scheduled start; after the window the cell waits for every started request (at most \
         {} s; unfinished ones count as errors)\n\
         - shed: `ShedLayer::new(&DB)` and `DB.set_max_waiting({})` (503 + Retry-After at once \
         while {} wait); no shed: `DB.set_max_waiting(0)`, no layer\n\
         - {ROUNDS} rounds; in each, per rate, shed and no shed in an order alternating per \
         round; a row: req/s medians over the rounds, latencies of all rounds pooled, 503s and \
         errors summed, peaks max\n\
         - admitted req/s: 200s finished inside the window / window; peak RSS and OS threads are \
         of the whole process (the load client runs in it too), sampled every 10 ms / 2 ms; \
         the allocator keeps freed memory, so a cell's peak RSS includes earlier cells' growth: \
         RSS added (peak − RSS at the cell's start) is the cleaner comparison, and even it \
         understates a cell that reuses memory an earlier cell left\n",
        args.pool,
        args.reads + 1,
        ms(args.query),
        ms(args.upstream),
        args.server_workers,
        args.requests_per_cell(),
        args.overload_time.as_secs(),
        DRAIN.as_secs(),
        args.max_waiting(),
        args.max_waiting(),
    );
    let _ = writeln!(
        md,
        "| offered | shedding | offered req/s | admitted req/s | p50 200 (ms) | p99 200 (ms) \
         | 503s | p99 503 (ms) | other errors | peak RSS (MiB) | RSS added (MiB) | peak OS threads |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in rows {
        let _ = writeln!(
            md,
            "| {}×R | {} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {:.1} | {} | {:.0} | {:.0} | {} |",
            row.multiple,
            shedding(row.shed),
            row.offered,
            row.admitted,
            ms(quantile(&row.ok, 0.5)),
            ms(quantile(&row.ok, 0.99)),
            row.rejected.len(),
            ms(quantile(&row.rejected, 0.99)),
            row.errors,
            mib(row.rss_kib),
            mib(row.rss_added_kib),
            row.os_threads,
        );
    }
    for row in rows.iter().filter(|row| row.first_error.is_some()) {
        let _ = writeln!(
            md,
            "\n{}×R {}: first error: `{}`",
            row.multiple,
            shedding(row.shed),
            row.first_error
                .as_deref()
                .unwrap_or_default()
                .replace('`', "'")
        );
    }
    md
}

type Error = Box<dyn std::error::Error>;

/// Two panels against the offered load (×R): p99 of the 200s, and admitted req/s.
pub(super) fn plot(path: &Path, env: &Environment, rate: f64, rows: &[Point]) -> Result<(), Error> {
    let root = SVGBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.draw_text(
        &format!(
            "(a) under open-loop overload, R = {rate:.0} req/s; red: ShedLayer, blue: no \
             shedding; {}",
            env.machine_short()
        ),
        &("sans-serif", 15).into_font().color(&BLACK),
        (20, 12),
    )?;
    let panels = body.split_evenly((1, 2));
    let x = 0.8f64..4.4f64;
    let series = |shed: bool, f: &dyn Fn(&Point) -> f64| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r.shed == shed)
            .map(|r| (r.multiple as f64, f(r)))
            .collect()
    };
    let p99 = |r: &Point| ms(quantile(&r.ok, 0.99)).max(0.1);
    let top = rows.iter().map(p99).fold(1.0, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("p99 latency of the 200s (ms, log)", ("sans-serif", 17))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x.clone(), (0.1f64..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered load (× R)")
        .max_light_lines(0)
        .draw()?;
    for (shed, color) in [(true, RED), (false, BLUE)] {
        chart.draw_series(LineSeries::new(series(shed, &p99), color.stroke_width(2)))?;
        chart.draw_series(
            series(shed, &p99)
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    let admitted = |r: &Point| r.admitted;
    let top = rows.iter().map(|r| r.offered).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("admitted req/s (grey: offered)", ("sans-serif", 17))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("offered load (× R)")
        .max_light_lines(0)
        .draw()?;
    let grey = RGBColor(150, 150, 150);
    chart.draw_series(LineSeries::new(
        series(true, &|r| r.offered),
        grey.stroke_width(1),
    ))?;
    for (shed, color) in [(true, RED), (false, BLUE)] {
        chart.draw_series(LineSeries::new(
            series(shed, &admitted),
            color.stroke_width(2),
        ))?;
        chart.draw_series(
            series(shed, &admitted)
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    root.present()?;
    Ok(())
}
