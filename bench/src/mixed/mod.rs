//! The mixed mode (`--mixed`): handlers on the global limit (`#[blocking_first]` without
//! `limit =`), with the global limit adaptive (the default), unbounded
//! (`set_global_unbounded()`) and fixed (`set_global_capacity(n)`).
//!
//! Two loads, each variant of each in a fresh process (`--child`), rounds interleaved:
//! - CPU: a heavy endpoint (a CPU-bound body of `--heavy-ms` on one idle core) at 32 closed-loop
//!   clients beside a light one (a body of 1/50 of that) at 4;
//! - wait: a body sleeping 10 ms in blocking code at 32 clients.
//!
//! The CPU load also runs once more with the global limit left as it is and `/heavy` on a named
//! limit of its own (`Limit::new("heavy", cores)`): what a service does about a heavy endpoint.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use blocking_first::blocking_first;
use blocking_first::limit;
use blocking_first::limit::Limit;

use crate::args::{Args, cores};
use crate::fresh::{self, ChildOutput, Sampler, Window, median, window};
use crate::load::quantile;
use crate::report::{Environment, rotated};

const HEAVY_CLIENTS: usize = 32;
const LIGHT_CLIENTS: usize = 4;
const WAIT_CLIENTS: usize = 32;
const WAIT: Duration = Duration::from_millis(10);
/// The light body's work, as a fraction of the heavy one's.
const LIGHT_SHARE: u64 = 50;
/// Latencies and throughput count from this long after the start (threads peak from the start).
const SETTLE: Duration = Duration::from_secs(2);
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Global {
    Default,
    Unbounded,
    Fixed(usize),
    /// The default, and `/heavy` on [`HEAVY`] with this capacity (CPU load only).
    Own(usize),
}

/// `/heavy`'s own limit in [`Global::Own`].
static HEAVY: Limit = Limit::new("heavy", 2);

impl Global {
    fn spec(self) -> String {
        match self {
            Global::Default => "default".into(),
            Global::Unbounded => "unbounded".into(),
            Global::Fixed(n) => format!("fixed:{n}"),
            Global::Own(n) => format!("own:{n}"),
        }
    }

    fn parse(spec: &str) -> Option<Global> {
        match spec {
            "default" => Some(Global::Default),
            "unbounded" => Some(Global::Unbounded),
            _ => match spec.split_once(':')? {
                ("fixed", n) => n.parse().ok().map(Global::Fixed),
                ("own", n) => n.parse().ok().map(Global::Own),
                _ => None,
            },
        }
    }

    fn label(self) -> String {
        match self {
            Global::Default => "default (adaptive, no configuration)".into(),
            Global::Unbounded => "`set_global_unbounded()`".into(),
            Global::Fixed(n) => format!("`set_global_capacity({n})`"),
            Global::Own(n) => format!("default, and `/heavy` on `Limit::new(\"heavy\", {n})`"),
        }
    }

    fn short(self) -> String {
        match self {
            Global::Default => "default".into(),
            Global::Unbounded => "unbounded".into(),
            Global::Fixed(n) => format!("fixed {n}"),
            Global::Own(n) => format!("own {n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Cpu,
    Wait,
}

impl Load {
    fn spec(self) -> &'static str {
        match self {
            Load::Cpu => "cpu",
            Load::Wait => "wait",
        }
    }
}

/// The bodies' work, in [`fresh::spin`] iterations.
struct Work {
    heavy: u64,
    light: u64,
}

#[blocking_first]
async fn heavy(State(work): State<Arc<Work>>) -> String {
    fresh::spin(work.heavy).to_string()
}

#[blocking_first(limit = HEAVY)]
async fn heavy_own(State(work): State<Arc<Work>>) -> String {
    fresh::spin(work.heavy).to_string()
}

#[blocking_first]
async fn light(State(work): State<Arc<Work>>) -> String {
    fresh::spin(work.light).to_string()
}

#[blocking_first]
async fn wait() -> &'static str {
    std::thread::sleep(WAIT);
    "waited"
}

struct Run {
    global: Global,
    load: Load,
    out: ChildOutput,
}

pub fn run(args: &Args, environment: Environment) -> Result<(), String> {
    let started = Instant::now();
    let iterations = fresh::calibrate(args.heavy);
    eprintln!(
        "heavy body: {iterations} iterations (~{} ms on one idle core)",
        args.heavy.as_secs_f64() * 1000.0
    );
    let mut globals = vec![Global::Default, Global::Unbounded];
    globals.extend(args.fixed_caps().into_iter().map(Global::Fixed));
    globals.push(Global::Own(cores()));
    let mut runs = Vec::new();
    for round in 0..args.rounds {
        for load in [Load::Cpu, Load::Wait] {
            for global in rotated(&globals, round) {
                if load == Load::Wait && matches!(global, Global::Own(_)) {
                    continue;
                }
                let spec = format!("mixed {} {} {iterations}", global.spec(), load.spec());
                let out = ChildOutput::parse(&fresh::run_child(&spec)?);
                let run = Run { global, load, out };
                eprintln!("round {}/{}: {}", round + 1, args.rounds, line(args, &run));
                runs.push(run);
            }
        }
    }
    let environment = environment.finish("none (CPU-bound and sleeping bodies)", started.elapsed());
    let markdown = markdown(args, &environment, &globals, &runs, iterations);
    println!("\n{markdown}");
    let Some(out) = args.out_or("docs/bench/mixed") else {
        return Ok(());
    };
    let md = out.with_extension("md");
    std::fs::write(&md, &markdown).map_err(|e| format!("{}: {e}", md.display()))?;
    eprintln!("written {}", md.display());
    Ok(())
}

/// In the child process: one run, printed on stdout for the parent.
pub fn child(args: &Args, spec: &str) -> Result<(), String> {
    let words: Vec<&str> = spec.split_whitespace().collect();
    let ["mixed", global, load, iterations] = words.as_slice() else {
        return Err(format!("bad spec {spec}"));
    };
    let global = Global::parse(global).ok_or_else(|| format!("bad spec {spec}"))?;
    // First, before anything uses the global limit.
    match global {
        Global::Default => {}
        Global::Own(n) => HEAVY.set_capacity(n).map_err(|e| e.to_string())?,
        Global::Unbounded => limit::set_global_unbounded().map_err(|e| e.to_string())?,
        Global::Fixed(n) => limit::set_global_capacity(n).map_err(|e| e.to_string())?,
    }
    let heavy_work: u64 = iterations.parse().map_err(|_| format!("bad spec {spec}"))?;
    let work = Arc::new(Work {
        heavy: heavy_work,
        light: heavy_work / LIGHT_SHARE,
    });
    let heavy = match global {
        Global::Own(_) => get(heavy_own),
        _ => get(heavy),
    };
    let router = Router::new()
        .route("/heavy", heavy)
        .route("/light", get(light))
        .route("/wait", get(wait))
        .with_state(work);
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let threads_before = crate::gauge::os_threads();
    let (listener, addr) = crate::listen(&client_runtime)?;
    let server = crate::serve_on_tokio(args, listener, router)?;
    let endpoints = match *load {
        "cpu" => vec![
            (format!("http://{addr}/heavy"), HEAVY_CLIENTS),
            (format!("http://{addr}/light"), LIGHT_CLIENTS),
        ],
        "wait" => vec![(format!("http://{addr}/wait"), WAIT_CLIENTS)],
        _ => return Err(format!("bad spec {spec}")),
    };
    let start = Instant::now();
    let sampler = Sampler::start(start, SAMPLE_EVERY, || {
        let stats = limit::global().stats();
        (stats.capacity.unwrap_or(0), stats.in_use)
    });
    let done = client_runtime.block_on(fresh::closed_loop(&endpoints, start, args.mixed_time));
    let samples = sampler.finish();
    server.shutdown_timeout(Duration::from_secs(10));
    let pairs = vec![
        ("threads_before", threads_before.to_string()),
        ("global_peak", limit::global().stats().peak.to_string()),
    ];
    fresh::print_child(&pairs, &done, &samples);
    Ok(())
}

fn settled(args: &Args, out: &ChildOutput, tag: usize) -> Window {
    window(&out.done, tag, SETTLE, args.mixed_time)
}

/// Threads the server added: the peak over the run, and the median over its second half.
fn threads(args: &Args, out: &ChildOutput) -> (usize, usize) {
    let before = out.get("threads_before").unwrap_or(0.0) as usize;
    let peak = out.samples.iter().map(|s| s.threads).max().unwrap_or(0);
    let steady: Vec<f64> = out
        .samples
        .iter()
        .filter(|s| s.at >= args.mixed_time / 2 && s.at < args.mixed_time)
        .map(|s| s.threads as f64)
        .collect();
    (
        peak.saturating_sub(before),
        (median(&steady) as usize).saturating_sub(before),
    )
}

/// The global limit's capacity, median over the second half (0: unbounded).
fn capacity(args: &Args, out: &ChildOutput) -> f64 {
    median(
        &out.samples
            .iter()
            .filter(|s| s.at >= args.mixed_time / 2)
            .map(|s| s.capacity as f64)
            .collect::<Vec<_>>(),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn line(args: &Args, run: &Run) -> String {
    let (peak, steady) = threads(args, &run.out);
    let first = settled(args, &run.out, 0);
    let mut text = format!(
        "{:<5} {:<10} threads +{peak} (steady +{steady}) capacity {:.0} | {}: {:.0} req/s p50 \
         {:.1} p99 {:.1} ms",
        run.load.spec(),
        run.global.short(),
        capacity(args, &run.out),
        if run.load == Load::Cpu {
            "heavy"
        } else {
            "wait"
        },
        first.per_second,
        ms(quantile(&first.latencies, 0.5)),
        ms(quantile(&first.latencies, 0.99)),
    );
    if run.load == Load::Cpu {
        let light = settled(args, &run.out, 1);
        let _ = write!(
            text,
            " | light: {:.0} req/s p50 {:.1} p99 {:.1} ms",
            light.per_second,
            ms(quantile(&light.latencies, 0.5)),
            ms(quantile(&light.latencies, 0.99)),
        );
    }
    text
}

/// One endpoint of one variant, its rounds merged: req/s median (min–max), latencies pooled,
/// errors summed.
fn merged(args: &Args, runs: &[&Run], tag: usize) -> (f64, f64, f64, Vec<Duration>, usize) {
    let windows: Vec<Window> = runs.iter().map(|r| settled(args, &r.out, tag)).collect();
    let rates: Vec<f64> = windows.iter().map(|w| w.per_second).collect();
    let mut latencies: Vec<Duration> = windows.iter().flat_map(|w| w.latencies.clone()).collect();
    latencies.sort_unstable();
    (
        median(&rates),
        rates.iter().copied().fold(f64::INFINITY, f64::min),
        rates.iter().copied().fold(0.0, f64::max),
        latencies,
        windows.iter().map(|w| w.errors).sum(),
    )
}

fn markdown(
    args: &Args,
    env: &Environment,
    globals: &[Global],
    runs: &[Run],
    iterations: u64,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Mixed load on the global limit\n");
    md.push_str(&env.header());
    let _ = writeln!(
        md,
        "- handlers: `#[blocking_first]` without `limit =` (the global limit); server tokio {} \
         workers, `max_blocking_threads` {}; the global limit: adaptive between {} (the cores, at \
         least 2) and 512 by default, `set_global_unbounded()` (a loop started whenever none is \
         idle), or `set_global_capacity(n)`, called at start-up\n\
         - CPU load: `/heavy` spins {iterations} iterations (~{} ms on one idle core) at {} \
         closed-loop clients, `/light` 1/{LIGHT_SHARE} of that at {} clients\n\
         - wait load: `/wait` sleeps {} ms in blocking code, {} clients\n\
         - each run: a fresh process (cold start), {} s of load from the first request; req/s and \
         latencies from {} s on (latencies of all rounds pooled, req/s median over the rounds, \
         min–max); threads: OS threads the server added to the process (the load client's are \
         not counted), peak over the whole run (median over the rounds, max) and steady (median \
         of the samples of the second half, median over the rounds), sampled every {} ms; \
         capacity: the global limit's over the second half (– unbounded)\n\
         - {} rounds; in each, per load, every variant once in an order rotated by one per round\n",
        args.server_workers,
        args.max_blocking,
        cores(),
        args.heavy.as_secs_f64() * 1000.0,
        HEAVY_CLIENTS,
        LIGHT_CLIENTS,
        ms(WAIT),
        WAIT_CLIENTS,
        args.mixed_time.as_secs(),
        SETTLE.as_secs(),
        SAMPLE_EVERY.as_millis(),
        args.rounds,
    );
    for load in [Load::Cpu, Load::Wait] {
        let _ = match load {
            Load::Cpu => writeln!(
                md,
                "## CPU-heavy beside light\n\n\
                 | global limit | peak threads added (median, max) | steady threads added | \
                 capacity | heavy req/s | heavy p99 (ms) | light req/s | light p50 (ms) | light \
                 p99 (ms) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
            ),
            Load::Wait => writeln!(
                md,
                "\n## Waiting bodies (a {} ms sleep, {WAIT_CLIENTS} clients; at most {:.0} \
                 req/s)\n\n\
                 | global limit | peak threads added (median, max) | steady threads added | \
                 capacity | req/s | p50 (ms) | p99 (ms) |\n|---|---:|---:|---:|---:|---:|---:|",
                ms(WAIT),
                WAIT_CLIENTS as f64 / WAIT.as_secs_f64(),
            ),
        };
        for &global in globals {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| r.global == global && r.load == load)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let peaks: Vec<f64> = mine
                .iter()
                .map(|r| threads(args, &r.out).0 as f64)
                .collect();
            let steady = median(
                &mine
                    .iter()
                    .map(|r| threads(args, &r.out).1 as f64)
                    .collect::<Vec<_>>(),
            );
            let cap = median(
                &mine
                    .iter()
                    .map(|r| capacity(args, &r.out))
                    .collect::<Vec<_>>(),
            );
            let cap = if global == Global::Unbounded {
                "–".to_string()
            } else {
                format!("{cap:.0}")
            };
            let (rate, lo, hi, lat, errors) = merged(args, &mine, 0);
            let _ = write!(
                md,
                "| {} | {:.0} ({:.0}) | {steady:.0} | {cap} | {rate:.0} ({lo:.0}–{hi:.0}) | {:.1} \
                 |",
                global.label(),
                median(&peaks),
                peaks.iter().copied().fold(0.0, f64::max),
                ms(quantile(&lat, if load == Load::Cpu { 0.99 } else { 0.5 })),
            );
            let mut errors = errors;
            if load == Load::Cpu {
                let (rate, lo, hi, lat, e) = merged(args, &mine, 1);
                errors += e;
                let _ = writeln!(
                    md,
                    " {rate:.0} ({lo:.0}–{hi:.0}) | {:.1} | {:.1} |",
                    ms(quantile(&lat, 0.5)),
                    ms(quantile(&lat, 0.99)),
                );
            } else {
                let _ = writeln!(md, " {:.1} |", ms(quantile(&lat, 0.99)));
            }
            if errors > 0 {
                let _ = writeln!(md, "<!-- {} errors: {errors} -->", global.short());
            }
        }
    }
    md
}
