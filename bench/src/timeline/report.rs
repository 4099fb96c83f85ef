//! The timeline mode's report: `timeline.md` (command, setup, how to read the picture, medians)
//! and `timeline.svg` (one panel per variant, one row per request).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::{Panel, Part, WARM_UP, WINDOW, ms};
use crate::args::Args;
use crate::report::Environment;

fn color(part: Part) -> RGBColor {
    match part {
        Part::SlotWait => RGBColor(214, 39, 40),
        Part::PoolQueue => RGBColor(255, 127, 14),
        Part::Blocking => RGBColor(31, 119, 180),
        Part::Io => RGBColor(44, 160, 44),
        Part::Parked => RGBColor(148, 103, 189),
        Part::Runtime => RGBColor(160, 160, 160),
    }
}

fn label(part: Part) -> &'static str {
    match part {
        Part::SlotWait => "slot wait",
        Part::PoolQueue => "pool queue",
        Part::Blocking => "blocking",
        Part::Io => "io",
        Part::Parked => "parked",
        Part::Runtime => "runtime (outside the others)",
    }
}

/// How each variant's kinds of time are measured, for the panel captions and the markdown.
fn source(panel: &Panel) -> &'static str {
    match panel.variant.letter() {
        "a" => "from the runtime's blocking_first::split events (slot wait: the limit's queue)",
        _ => "from clock reads in the handler (slot wait: r2d2's pool.get() on a blocking thread)",
    }
}

fn setup_line(args: &Args, env: &Environment) -> String {
    format!(
        "{}; pool = cap {}; {} reads + 1 write × {} ms, upstream {} ms; {} clients, {} server \
         workers; rows: the first {} requests started after a {} s warm-up, by start",
        env.machine_short(),
        args.pool,
        args.reads,
        ms(args.query),
        ms(args.upstream),
        args.timeline_clients,
        args.server_workers,
        args.timeline_rows,
        WARM_UP.as_secs(),
    )
}

pub(super) fn markdown(args: &Args, env: &Environment, panels: &[Panel], odd: &[String]) -> String {
    let mut md = String::new();
    let svg = args
        .out
        .as_deref()
        .filter(|_| args.out_given)
        .and_then(|out| out.with_extension("svg").file_name().map(|n| n.to_owned()))
        .map_or_else(
            || "timeline.svg".into(),
            |n| n.to_string_lossy().into_owned(),
        );
    let _ = writeln!(
        md,
        "# Timeline: where requests wait, (a) `#[blocking_first]` vs (b) `spawn_blocking` per \
         call\n\n![one row per request, coloured by kind of time]({svg})\n"
    );
    md.push_str(&env.header());
    let _ = writeln!(
        md,
        "- handler: {} reads, an upstream call ({} ms), 1 write; every database call keeps its \
         connection {} ms; pool = cap = {} (`DB` for (a), the r2d2 pool for both)\n\
         - server: tokio, {} workers, `max_blocking_threads` {}; each variant on a fresh server\n\
         - load: {} closed-loop clients, {} s warm-up, then a {} ms window; drawn: the first {} \
         requests whose handler started in the window, by start; numbers: every request that \
         started in the window\n\
         - (a) `#[blocking_first(limit = DB)]`: the runtime's split, one `DEBUG` event at target \
         `blocking_first::split` per body, caught by a `tracing` layer installed only in this \
         mode; a middleware's span around the handler gives the request's start; `segments` \
         are placed from it\n\
         - (b) `spawn_blocking` per call: clock reads in the handler: before each \
         `spawn_blocking`, as its closure starts, when the r2d2 checkout got its connection, as \
         the closure ends, around the upstream call\n",
        args.reads,
        ms(args.upstream),
        ms(args.query),
        args.pool,
        args.server_workers,
        args.max_blocking,
        args.timeline_clients,
        WARM_UP.as_secs(),
        WINDOW.as_millis(),
        args.timeline_rows,
    );
    md.push_str(
        "## How to read it\n\n\
         One row per request, top to bottom by the time its handler started; x: milliseconds \
         since the window opened. Colours:\n\n\
         - **slot wait** (red): waiting for one of the cap's slots. (a): queued in the limit's \
         run queue, holding no thread. (b): inside `pool.get()`, on a blocking thread it holds.\n\
         - **pool queue** (orange): handed to the blocking side, not yet running: (a) a loop \
         picking the body up, (b) `spawn_blocking` starting the closure.\n\
         - **blocking** (blue): running the database call, holding a slot (a connection).\n\
         - **io** (green): the upstream call: (a) the `io!` region, (b) the plain `.await`.\n\
         - **parked** (purple): (a) an `.await` outside `io!` (none in this handler).\n\
         - **runtime** (grey): the request on the runtime outside all of these: (b) each \
         `spawn_blocking`'s task resuming; (a) from the body's end on its loop to the event in \
         the handler, back on the runtime (not part of the split's `total_us`).\n\n\
         Both variants have one connection per slot; the difference is where a request waits \
         for it and what it holds meanwhile: (a) waits before its blocking code, in the queue; \
         (b) waits on a blocking thread, so it holds a thread per waiting call (see the thread \
         peaks below).\n\n",
    );
    // Closed loop: each client keeps one request in flight, which holds a connection for its
    // database calls only; past about pool × (unloaded latency / connection time) clients, the
    // pool is busy all the time and requests queue.
    let held = (args.reads + 1) as f64 * ms(args.query);
    let saturating = args.pool as f64 * (held + ms(args.upstream)) / held;
    let _ = writeln!(
        md,
        "With {} clients and a request holding a connection {held:.0} ms of its {:.0} ms \
         unloaded, the pool is saturated from about {saturating:.0} clients on (pool × {:.0} / \
         {held:.0}); below that requests barely wait and both variants look alike.\n",
        args.timeline_clients,
        held + ms(args.upstream),
        held + ms(args.upstream),
    );
    let _ = writeln!(
        md,
        "## Numbers (ms per request, median (p90))\n\n\
         | variant | requests | total | slot wait | pool queue | blocking | io | parked | runtime \
         | threads in blocking code, peak | OS threads, peak |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for panel in panels {
        let cell = |part: Option<Part>| {
            let (p50, p90) = (
                ms(Panel::quantile(&panel.all, part, 0.5)),
                ms(Panel::quantile(&panel.all, part, 0.9)),
            );
            format!("{} ({})", round(p50), round(p90))
        };
        let _ = writeln!(
            md,
            "| ({}) {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            panel.variant.letter(),
            panel.variant.label(),
            panel.all.len(),
            cell(None),
            cell(Some(Part::SlotWait)),
            cell(Some(Part::PoolQueue)),
            cell(Some(Part::Blocking)),
            cell(Some(Part::Io)),
            cell(Some(Part::Parked)),
            cell(Some(Part::Runtime)),
            panel.blocking_peak,
            panel.os_threads_peak,
        );
    }
    let _ = writeln!(
        md,
        "\nOS threads: the whole process (the load client and the upstream run in it too). \
         Errors: {}.\n",
        panels
            .iter()
            .map(|p| format!("({}) {}", p.variant.letter(), p.errors))
            .collect::<Vec<_>>()
            .join(", ")
    );
    md.push_str("## Checks of the split events\n\n");
    if odd.is_empty() {
        md.push_str(
            "Every event of (a) was inside its request span, completed, its segments \
             contiguous from 0 and adding up to its `*_us` totals.\n",
        );
    }
    for note in odd {
        let _ = writeln!(md, "- {}", note.replace('|', "\\|"));
    }
    md
}

/// Two significant figures or so: 0.012, 0.41, 3.1, 52.
fn round(value: f64) -> String {
    match value {
        0.0 => "0".into(),
        v if v < 0.1 => format!("{v:.3}"),
        v if v < 10.0 => format!("{v:.2}"),
        v => format!("{v:.1}"),
    }
}

type Error = Box<dyn std::error::Error>;

pub(super) fn plot(
    path: &Path,
    args: &Args,
    env: &Environment,
    panels: &[Panel],
) -> Result<(), Error> {
    let rows = args.timeline_rows;
    let row_px = 14u32;
    let panel_px = rows as u32 * row_px + 130;
    let header = 78u32;
    let root =
        SVGBackend::new(path, (1400, header + panel_px * panels.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(header);
    title.draw_text(
        "Where each request's time goes: (a) #[blocking_first] vs (b) spawn_blocking per call",
        &("sans-serif", 20).into_font().color(&BLACK),
        (20, 10),
    )?;
    title.draw_text(
        &setup_line(args, env),
        &("sans-serif", 13).into_font().color(&RGBColor(60, 60, 60)),
        (20, 36),
    )?;
    let mut x = 20;
    for part in Part::ALL {
        title.draw(&Rectangle::new(
            [(x, 58), (x + 22, 70)],
            color(part).filled(),
        ))?;
        let text = label(part);
        title.draw_text(
            text,
            &("sans-serif", 14).into_font().color(&BLACK),
            (x + 28, 57),
        )?;
        x += 46 + 8 * text.len() as i32;
    }
    let end = panels
        .iter()
        .flat_map(|panel| {
            panel
                .drawn
                .iter()
                .map(move |r| r.start - panel.window + r.total())
        })
        .max()
        .map_or(100.0, ms);
    let x_max = (end / 10.0).ceil() * 10.0;
    let areas = body.split_evenly((panels.len(), 1));
    for (panel, area) in panels.iter().zip(&areas) {
        draw_panel(area, panel, x_max)?;
    }
    root.present()?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
    x_max: f64,
) -> Result<(), Error> {
    let all = &panel.all;
    let q = |part| round(ms(Panel::quantile(all, Some(part), 0.5)));
    let name = format!(
        "({}) {}: {}",
        panel.variant.letter(),
        panel.variant.label(),
        source(panel)
    );
    let medians = format!(
        "medians of the {} requests that started in the window (ms): slot wait {}, pool queue {}, \
         blocking {}, io {}, runtime {}, total {}; threads in blocking code: at most {}",
        all.len(),
        q(Part::SlotWait),
        q(Part::PoolQueue),
        q(Part::Blocking),
        q(Part::Io),
        q(Part::Runtime),
        round(ms(Panel::quantile(all, None, 0.5))),
        panel.blocking_peak,
    );
    let (head, area) = area.split_vertically(46);
    head.draw_text(
        &name,
        &("sans-serif", 16).into_font().color(&BLACK),
        (20, 8),
    )?;
    head.draw_text(
        &medians,
        &("sans-serif", 13).into_font().color(&RGBColor(60, 60, 60)),
        (20, 28),
    )?;
    let rows = panel.drawn.len() as f64;
    let mut chart = ChartBuilder::on(&area)
        .margin_left(12)
        .margin_right(16)
        .margin_bottom(8)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..x_max, (rows + 0.5)..0.5)?;
    chart
        .configure_mesh()
        .x_desc("time since the window opened (ms)")
        .y_desc("request (by start)")
        .x_labels(16)
        .y_labels(rows as usize / 5 + 1)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .max_light_lines(1)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (row, request) in panel.drawn.iter().enumerate() {
        let origin = ms(request.start - panel.window);
        let (top, bottom) = (row as f64 + 0.65, row as f64 + 1.35);
        chart.draw_series(request.parts.iter().map(|&(part, from, length)| {
            let x0 = origin + ms(from);
            Rectangle::new([(x0, top), (x0 + ms(length), bottom)], color(part).filled())
        }))?;
    }
    Ok(())
}
