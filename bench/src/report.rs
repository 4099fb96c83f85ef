//! The results: one markdown table (with the command and the machine), and an SVG plot.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use plotters::prelude::*;

use crate::args::Args;
use crate::load::Outcome;
use crate::variants::Variant;

/// One variant at one concurrency.
pub struct Row {
    pub variant: Variant,
    pub concurrency: usize,
    pub outcome: Outcome,
    /// Threads inside the blocking sections (for the thread-per-request server: busy threads).
    pub blocking_peak: usize,
    /// Variant (a): the most slots of its `Limit` taken at once.
    pub slots_peak: Option<usize>,
    /// OS threads the server added to the process, at the peak.
    pub os_threads_added: usize,
    pub conns_peak: usize,
    pub waiting_peak: usize,
    pub pg_active: Option<usize>,
    pub pg_connected: Option<usize>,
    /// Moves of work to another thread per request (hops, `spawn_blocking`, `block_in_place`).
    pub handoffs_per_request: f64,
}

impl Row {
    /// A progress line for the terminal.
    pub fn line(&self) -> String {
        format!(
            "({}) {:<26} c={:<4} {:>8.1} req/s  p50 {:>8.1} ms  p99 {:>8.1} ms  errors {}  \
             blocking {}  threads +{}  conns {}  waiting {}",
            self.variant.letter(),
            self.variant.label(),
            self.concurrency,
            self.outcome.per_second(),
            ms(self.outcome.quantile(0.5)),
            ms(self.outcome.quantile(0.99)),
            self.outcome.errors,
            self.blocking_peak,
            self.os_threads_added,
            self.conns_peak,
            self.waiting_peak,
        )
    }
}

/// The machine and the moment, captured around a run.
pub struct Environment {
    command: String,
    date: String,
    nproc: String,
    memory: String,
    cpu: String,
    kernel: String,
    load_before: String,
    load_after: String,
    database: &'static str,
    total: Duration,
}

impl Environment {
    pub fn capture(_args: &Args) -> Environment {
        let argv: Vec<String> = std::env::args().skip(1).map(|a| shell_quote(&a)).collect();
        let mut command = String::from("cargo run --release -p blocking-first-bench");
        if !argv.is_empty() {
            command.push_str(" -- ");
            command.push_str(&argv.join(" "));
        }
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory = shell("free", &["-h"])
            .lines()
            .find(|line| line.starts_with("Mem:"))
            .map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                format!(
                    "{} total, {} available",
                    cols.get(1).unwrap_or(&"?"),
                    cols.get(6).unwrap_or(&"?")
                )
            })
            .unwrap_or_else(|| "unknown".into());
        Environment {
            command,
            date: shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            nproc: shell("nproc", &[]),
            memory,
            cpu,
            kernel: shell("uname", &["-r"]),
            load_before: loadavg(),
            load_after: String::new(),
            database: "",
            total: Duration::ZERO,
        }
    }

    pub fn finish(mut self, database: &'static str, total: Duration) -> Environment {
        self.load_after = loadavg();
        self.database = database;
        self.total = total;
        self
    }

    pub fn summary(&self) -> String {
        format!(
            "{}\n{} | nproc {} | {} | {} | kernel {} | load before: {}",
            self.command,
            self.date,
            self.nproc,
            self.cpu,
            self.memory,
            self.kernel,
            self.load_before
        )
    }
}

fn shell(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|line| {
            line.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn shell_quote(arg: &str) -> String {
    if arg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Blocking time per request: every database call keeps a connection busy for the query time.
fn blocking_time(args: &Args) -> f64 {
    (args.reads + 1) as f64 * args.query.as_secs_f64()
}

pub fn markdown(args: &Args, env: &Environment, rows: &[Row], notes: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Load benchmark\n");
    let _ = writeln!(md, "```sh\n{}\n```\n", env.command);
    let _ = writeln!(
        md,
        "- date: {}; whole run {:.0} s\n\
         - machine: `nproc` = {}; CPU: {}; memory (`free -h`): {}; kernel {}\n\
         - load average (1/5/15 min) before: {}; after: {}\n\
         - database: {}, pool of {} connections; each call keeps its connection busy {} ms \
         (PostgreSQL: `pg_sleep` in the database; SQLite: a sleep holding the connection), then \
         runs its query\n\
         - handler: read step of {} read quer{} → upstream call ({} ms, local axum server) → one \
         write query\n\
         - server under test: tokio {} worker threads, `max_blocking_threads` {}; \
         `#[blocking_first]` limit = {}; thread-per-request server: {} threads\n\
         - load: {} measured requests per cell (at most {} s), after one unmeasured request per \
         client worker; reqwest client on its own 2-thread runtime in the same process; \
         127.0.0.1 only\n",
        env.date,
        env.total.as_secs_f64(),
        env.nproc,
        env.cpu,
        env.memory,
        env.kernel,
        env.load_before,
        env.load_after,
        env.database,
        args.pool,
        ms(args.query),
        args.reads,
        if args.reads == 1 { "y" } else { "ies" },
        ms(args.upstream),
        args.server_workers,
        args.max_blocking,
        args.pool,
        args.pool,
        args.requests,
        args.max_time.as_secs(),
    );

    let pg = args.pg.is_some();
    let _ = write!(
        md,
        "| variant | concurrency | req/s | p50 ms | p99 ms | errors | threads in blocking code \
         (peak) | OS threads added (peak) | DB connections in use (peak) | threads waiting for a \
         connection (peak) |{} handoffs / request |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|{}---:|\n",
        if pg {
            " PostgreSQL backends active (sampled peak) |"
        } else {
            ""
        },
        if pg { "---:|" } else { "" },
    );
    for row in rows {
        let o = &row.outcome;
        let mut errors = o.errors.to_string();
        if o.cut_by_time {
            errors.push_str(" (time bound hit)");
        }
        let blocking = match row.slots_peak {
            Some(slots) => format!("{} (limit slots: {slots})", row.blocking_peak),
            None => row.blocking_peak.to_string(),
        };
        let pg_cell = match (row.pg_active, row.pg_connected) {
            (Some(active), Some(connected)) => format!(" {active} of {connected} |"),
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "| ({}) {} | {} | {:.0} | {:.1} | {:.1} | {} | {} | {} | {} | {} |{} {:.2} |",
            row.variant.letter(),
            row.variant.label().replace('#', "\\#"),
            row.concurrency,
            o.per_second(),
            ms(o.quantile(0.5)),
            ms(o.quantile(0.99)),
            errors,
            blocking,
            row.os_threads_added,
            row.conns_peak,
            row.waiting_peak,
            pg_cell,
            row.handoffs_per_request,
        );
    }
    for note in notes {
        let _ = writeln!(md, "\n{note}");
    }
    for row in rows {
        if let Some(reason) = &row.outcome.first_error {
            let _ = writeln!(
                md,
                "\n({}) at concurrency {}: first error: `{}`",
                row.variant.letter(),
                row.concurrency,
                reason.replace('`', "'")
            );
        }
    }

    let _ = writeln!(
        md,
        "\n## Against the model\n\n\
         Per request, the database keeps a connection busy T_db = {} calls × {} ms = {:.1} ms and \
         the upstream takes T_up = {} ms. Upper bounds on throughput: a server that holds a thread \
         for the whole request with {} threads: min(c, {}) / (T_db + T_up); a server that holds \
         connections only for database calls: min(c / (T_db + T_up), {} / T_db). The measured \
         ratio (a)/(f) is compared with the ratio of these bounds.\n",
        args.reads + 1,
        ms(args.query),
        blocking_time(args) * 1000.0,
        ms(args.upstream),
        args.pool,
        args.pool,
        args.pool,
    );
    let _ = writeln!(
        md,
        "| concurrency | bound, thread per request (req/s) | bound, connections only for \
         queries (req/s) | measured (a) req/s | measured (f) req/s | (a)/(f) measured | (a)/(f) \
         bound | (a)/(b) measured |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let find = |variant, c| {
        rows.iter()
            .find(|row| row.variant == variant && row.concurrency == c)
    };
    for &c in &args.concurrency {
        let (sync_bound, async_bound) = bounds(args, c);
        let a = find(Variant::BlockingFirst, c).map(|r| r.outcome.per_second());
        let b = find(Variant::SpawnBlockingPerCall, c).map(|r| r.outcome.per_second());
        let f = find(Variant::ThreadPerRequest, c).map(|r| r.outcome.per_second());
        let show = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
        let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
            _ => "–".to_string(),
        };
        let _ = writeln!(
            md,
            "| {c} | {sync_bound:.0} | {async_bound:.0} | {} | {} | {} | {:.2} | {} |",
            show(a),
            show(f),
            ratio(a, f),
            async_bound / sync_bound,
            ratio(a, b),
        );
    }

    let _ = writeln!(
        md,
        "\n## Columns\n\n\
         - **req/s**: successful measured requests / time from the end of the warm-up round to \
         the last response. **p50/p99**: latency of successful measured requests, seen by the \
         client.\n\
         - **threads in blocking code**: the most threads at once inside the blocking sections of \
         the handler, counted by a gauge around them (the whole `spawn_blocking` closure for (b) \
         and (c), the `block_in_place` closure for (d), the database calls on the workers for \
         (e), busy server threads for (f), the blocking code between regions for (a), where the \
         peak slots taken from its `Limit` are shown too).\n\
         - **OS threads added**: the process's threads (`/proc/self/task`) sampled every 2 ms, \
         peak minus the count before the server started (tokio workers + blocking pool, or the \
         server's threads for (f)).\n\
         - **DB connections in use**: a gauge from `pool.get()` to the connection's return. \
         **threads waiting for a connection**: a gauge around `pool.get()`: threads blocked on \
         an exhausted pool.\n\
         - **PostgreSQL backends active**: `pg_stat_activity` rows of the database with \
         `state <> 'idle'`, sampled every 10 ms from a separate connection (not counted), of all the client \
         backends connected (autovacuum workers excluded).\n\
         - **handoffs / request**: moves of work to another thread per request: the driver's \
         hops onto the blocking pool for (a) (`blocking_first::stats().hops`), `spawn_blocking` \
         calls for (b) and (c), `block_in_place` calls for (d); (e) and (f) never move.\n"
    );
    md
}

/// The throughput bounds at concurrency `c`: (thread per request, connections only for queries).
fn bounds(args: &Args, c: usize) -> (f64, f64) {
    let t_db = blocking_time(args);
    let t = t_db + args.upstream.as_secs_f64();
    let pool = args.pool as f64;
    let c = c as f64;
    let sync = c.min(pool) / t;
    let held_for_queries = if t_db > 0.0 {
        (c / t).min(pool / t_db)
    } else {
        c / t
    };
    (sync, held_for_queries)
}

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
            "{}, pool {}, {} database calls × {} ms, upstream {} ms, {} requests per point; \
             nproc {}, load {} → {}",
            env.database,
            args.pool,
            args.reads + 1,
            ms(args.query),
            ms(args.upstream),
            args.requests,
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
    let throughput = |row: &Row| row.outcome.per_second();
    let p99 = |row: &Row| ms(row.outcome.quantile(0.99)).max(0.1);
    let threads = |row: &Row| row.os_threads_added.max(1) as f64;
    let max_of = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).fold(1.0f64, f64::max);
    let min_of = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).fold(f64::INFINITY, f64::min);

    panel(
        &panels[0],
        "throughput (req/s)",
        0.0..max_of(&throughput) * 1.1,
        false,
        args,
        rows,
        &throughput,
    )?;
    panel(
        &panels[1],
        "p99 latency (ms, log scale)",
        (min_of(&p99) * 0.8)..(max_of(&p99) * 1.5),
        true,
        args,
        rows,
        &p99,
    )?;
    panel(
        &panels[2],
        "OS threads added by the server (peak, log scale)",
        0.8..(max_of(&threads) * 1.5),
        true,
        args,
        rows,
        &threads,
    )?;
    root.present()?;
    Ok(())
}

/// One panel: concurrency on a log2 axis (ticks at powers of two), `value` on a linear or log axis.
fn panel(
    area: &Panel<'_>,
    caption: &str,
    y: std::ops::Range<f64>,
    log_y: bool,
    args: &Args,
    rows: &[Row],
    value: &dyn Fn(&Row) -> f64,
) -> Result<(), Error> {
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
