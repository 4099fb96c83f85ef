//! What a `#[blocking_first]` body costs, next to the tools it replaces.
//!
//! Every benchmark runs on a two-worker multi-thread tokio runtime, from a task on a worker (as an
//! axum handler would), except the `parallel` group, whose loops run inside a blocking thread.
//! The list runs three times in a row (criterion groups `hops`, `hops-round2`, `hops-round3`).
//! Afterwards each median is printed as a ratio to the bare `spawn_blocking(|| ()).await` round
//! trip of the same round (measured first and last in the round; the ratio uses the mean of the
//! two), with the median ratio over the rounds and the hops per call counted by the driver's own
//! counters (`blocking_first::stats()`), as a markdown table also written to
//! `<criterion dir>/hops/ratios.md`.
//!
//! `cargo bench --bench hops` (a filter argument runs a subset, as with any criterion bench).

use std::future::Future;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use criterion::Criterion;
use tokio::runtime::Runtime;

/// A capped limit, to see what taking a slot adds to a hop.
static CAPPED: Limit = Limit::new("bench", 4);

#[blocking_first]
async fn no_region() -> u64 {
    black_box(1)
}

#[blocking_first(limit = CAPPED)]
async fn no_region_capped() -> u64 {
    black_box(1)
}

/// blocking → io → blocking, the io part suspending once: two hops onto the blocking pool.
#[blocking_first]
async fn io_round_trip() -> u64 {
    let before = black_box(1);
    io! { tokio::task::yield_now().await };
    black_box(before + 1)
}

/// An io region whose await completes at once: lazy switching keeps the body where it is.
#[blocking_first]
async fn io_without_suspension() -> u64 {
    let before = black_box(1);
    let ready = io! { std::future::ready(black_box(2)).await };
    black_box(before + ready)
}

#[inline(never)]
fn trivial(x: u64) -> u64 {
    black_box(x)
}

/// `iters` rounds of `parallel!` over three trivial branches, timed inside the body.
#[blocking_first]
async fn parallel_loop(iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        black_box(parallel! { trivial(i), trivial(i + 1), trivial(i + 2) });
    }
    start.elapsed()
}

/// The same three calls one after another, timed inside the body.
#[blocking_first]
async fn sequential_loop(iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        black_box((trivial(i), trivial(i + 1), trivial(i + 2)));
    }
    start.elapsed()
}

/// The same three calls on three new threads of `std::thread::scope`, timed inside the body.
#[blocking_first]
async fn thread_scope_loop(iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        black_box(std::thread::scope(|s| {
            let a = s.spawn(|| trivial(i));
            let b = s.spawn(|| trivial(i + 1));
            let c = s.spawn(|| trivial(i + 2));
            (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
        }));
    }
    start.elapsed()
}

async fn bare_spawn_blocking() {
    tokio::task::spawn_blocking(|| black_box(())).await.unwrap();
}

/// `block_in_place` followed by a yield, as in a handler that awaits between blocking calls.
///
/// Without the yield, every call after the first would find the worker's core already handed off
/// and run the closure in place for free: a loop of back-to-back calls measures nothing real.
async fn block_in_place_then_yield() -> u64 {
    let value = tokio::task::block_in_place(|| black_box(1));
    tokio::task::yield_now().await;
    value
}

/// The yield alone, to subtract from the row above.
async fn yield_now() {
    tokio::task::yield_now().await;
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Times `iters` sequential awaits of `call()` from a task on a runtime worker.
fn time_on_worker<F, Fut>(rt: &Runtime, iters: u64, call: F) -> Duration
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future + Send,
{
    rt.block_on(rt.spawn(async move {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(call().await);
        }
        start.elapsed()
    }))
    .unwrap()
}

/// Runs a body that times its own loop, from a task on a runtime worker.
fn time_in_body<Fut>(rt: &Runtime, body: Fut) -> Duration
where
    Fut: Future<Output = Duration> + Send + 'static,
{
    rt.block_on(rt.spawn(body)).unwrap()
}

/// One row of the results: a benchmark id, what it measures, and the driver's counters per call.
struct Row {
    id: &'static str,
    what: &'static str,
    counters: Option<Counters>,
}

/// Driver counters per call, from `blocking_first::stats()` deltas over a checking pass.
#[derive(Clone, Copy)]
struct Counters {
    hops: f64,
    dispatched: f64,
    inline: f64,
}

/// Runs `calls` calls of `call` and returns the driver's counters per call.
fn count<F, Fut>(rt: &Runtime, calls: u64, call: F) -> Counters
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future + Send,
{
    let before = blocking_first::stats();
    time_on_worker(rt, calls, call);
    let after = blocking_first::stats();
    let per_call = |delta: u64| delta as f64 / calls as f64;
    Counters {
        hops: per_call(after.hops - before.hops),
        dispatched: per_call(after.parallel_dispatched - before.parallel_dispatched),
        inline: per_call(after.parallel_inline - before.parallel_inline),
    }
}

/// Counters of one `parallel!`-style loop body of `iters` rounds, per round.
fn count_loop<Fut>(rt: &Runtime, iters: u64, body: Fut) -> Counters
where
    Fut: Future<Output = Duration> + Send + 'static,
{
    let before = blocking_first::stats();
    time_in_body(rt, body);
    let after = blocking_first::stats();
    let per_round = |delta: u64| delta as f64 / iters as f64;
    Counters {
        hops: per_round(after.hops - before.hops),
        dispatched: per_round(after.parallel_dispatched - before.parallel_dispatched),
        inline: per_round(after.parallel_inline - before.parallel_inline),
    }
}

fn main() {
    let started = SystemTime::now();
    let rt = runtime();
    let checks = 2_000;
    let rows = vec![
        Row {
            id: "spawn_blocking",
            what: "bare `spawn_blocking(|| ()).await` round trip (the floor)",
            counters: Some(count(&rt, checks, bare_spawn_blocking)),
        },
        Row {
            id: "no_region",
            what: "`#[blocking_first]` body, no region",
            counters: Some(count(&rt, checks, no_region)),
        },
        Row {
            id: "no_region_capped",
            what: "same, under a `Limit` of 4 slots",
            counters: Some(count(&rt, checks, no_region_capped)),
        },
        Row {
            id: "io_round_trip",
            what: "blocking → `io! { yield_now().await }` → blocking",
            counters: Some(count(&rt, checks, io_round_trip)),
        },
        Row {
            id: "io_without_suspension",
            what: "blocking → `io! { ready(2).await }` (never suspends) → blocking",
            counters: Some(count(&rt, checks, io_without_suspension)),
        },
        Row {
            id: "block_in_place_then_yield",
            what: "`block_in_place(|| ..)` on a worker, then `yield_now().await`",
            counters: None,
        },
        Row {
            id: "yield_now",
            what: "`yield_now().await` alone (to subtract from the row above)",
            counters: None,
        },
        Row {
            id: "parallel_3",
            what: "`parallel!` of 3 trivial branches, inside a blocking thread",
            counters: Some(count_loop(&rt, checks, parallel_loop(checks))),
        },
        Row {
            id: "sequential_3",
            what: "3 trivial calls in sequence, inside a blocking thread",
            counters: Some(count_loop(&rt, checks, sequential_loop(checks))),
        },
        Row {
            id: "thread_scope_3",
            what: "`std::thread::scope` with 3 trivial threads, inside a blocking thread",
            counters: Some(count_loop(&rt, checks, thread_scope_loop(checks))),
        },
        Row {
            id: "spawn_blocking_again",
            what: "the floor measured again, last in the round",
            counters: Some(count(&rt, checks, bare_spawn_blocking)),
        },
    ];

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40)
        .configure_from_args();
    // The whole list runs several times in a row: a drift of the machine (other processes on
    // its few cores) then shows as a spread between rounds instead of a skewed ratio.
    let groups: Vec<String> = (1..=ROUNDS).map(group_name).collect();
    for group in &groups {
        bench_all(&mut criterion, group, &rt);
    }
    criterion.final_summary();

    report(&rows, &groups, started);
}

const ROUNDS: usize = 3;

fn group_name(round: usize) -> String {
    if round == 1 {
        "hops".to_string()
    } else {
        format!("hops-round{round}")
    }
}

fn bench_all(criterion: &mut Criterion, name: &str, rt: &Runtime) {
    let mut group = criterion.benchmark_group(name);
    group.bench_function("spawn_blocking", |b| {
        b.iter_custom(|iters| time_on_worker(rt, iters, bare_spawn_blocking))
    });
    group.bench_function("no_region", |b| {
        b.iter_custom(|iters| time_on_worker(rt, iters, no_region))
    });
    group.bench_function("no_region_capped", |b| {
        b.iter_custom(|iters| time_on_worker(rt, iters, no_region_capped))
    });
    group.bench_function("io_round_trip", |b| {
        b.iter_custom(|iters| time_on_worker(rt, iters, io_round_trip))
    });
    group.bench_function("io_without_suspension", |b| {
        b.iter_custom(|iters| time_on_worker(rt, iters, io_without_suspension))
    });
    group.bench_function("block_in_place_then_yield", |b| {
        b.iter_custom(|iters| time_on_worker(rt, iters, block_in_place_then_yield))
    });
    group.bench_function("yield_now", |b| {
        b.iter_custom(|iters| time_on_worker(rt, iters, yield_now))
    });
    group.bench_function("parallel_3", |b| {
        b.iter_custom(|iters| time_in_body(rt, parallel_loop(iters)))
    });
    group.bench_function("sequential_3", |b| {
        b.iter_custom(|iters| time_in_body(rt, sequential_loop(iters)))
    });
    group.bench_function("thread_scope_3", |b| {
        b.iter_custom(|iters| time_in_body(rt, thread_scope_loop(iters)))
    });
    group.bench_function("spawn_blocking_again", |b| {
        b.iter_custom(|iters| time_on_worker(rt, iters, bare_spawn_blocking))
    });
    group.finish();
}

/// Where criterion writes its results: the same rule criterion itself follows.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let metadata = std::env::var_os("CARGO").and_then(|cargo| {
        Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .ok()
    });
    metadata
        .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
        .and_then(|meta| meta["target_directory"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("criterion")
}

/// The median and its 95% confidence interval, in nanoseconds, if this run measured `id`.
fn median(dir: &Path, group: &str, id: &str, run_started: SystemTime) -> Option<(f64, f64, f64)> {
    let path = dir.join(group).join(id).join("new").join("estimates.json");
    let fresh = std::fs::metadata(&path)
        .and_then(|meta| meta.modified())
        .is_ok_and(|modified| modified >= run_started);
    if !fresh {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let median = &json["median"];
    Some((
        median["point_estimate"].as_f64()?,
        median["confidence_interval"]["lower_bound"].as_f64()?,
        median["confidence_interval"]["upper_bound"].as_f64()?,
    ))
}

fn report(rows: &[Row], groups: &[String], run_started: SystemTime) {
    let dir = criterion_dir();
    // Per round: the floor is measured first and last; ratios use the mean of the two.
    let floors: Vec<Option<f64>> = groups
        .iter()
        .map(|group| {
            let both: Vec<f64> = ["spawn_blocking", "spawn_blocking_again"]
                .iter()
                .filter_map(|id| median(&dir, group, id, run_started).map(|(m, ..)| m))
                .collect();
            (!both.is_empty()).then(|| both.iter().sum::<f64>() / both.len() as f64)
        })
        .collect();
    if floors.iter().all(Option::is_none) {
        println!("(the spawn_blocking benchmarks did not run: no ratios to print)");
        return;
    }
    let mut table = format!(
        "| benchmark | what | median per round ({rounds} rounds) | ratio to the floor per round \
         | median ratio | hops/call | parallel branches dispatched / inline per call |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
        rounds = groups.len(),
    );
    for row in rows {
        let mut medians = Vec::new();
        let mut ratios = Vec::new();
        for (group, floor) in groups.iter().zip(&floors) {
            if let Some((m, ..)) = median(&dir, group, row.id, run_started) {
                medians.push(m);
                if let Some(floor) = floor {
                    ratios.push(m / floor);
                }
            }
        }
        if medians.is_empty() {
            continue;
        }
        let (hops, branches) = match row.counters {
            Some(c) => (
                format!("{:.2}", c.hops),
                format!("{:.2} / {:.2}", c.dispatched, c.inline),
            ),
            None => ("n/a".to_string(), "n/a".to_string()),
        };
        let list = |values: &[f64], show: &dyn Fn(f64) -> String| {
            values
                .iter()
                .map(|&v| show(v))
                .collect::<Vec<_>>()
                .join(", ")
        };
        table.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} |\n",
            row.id,
            row.what.replace('|', "\\|"),
            list(&medians, &micros),
            list(&ratios, &|r| format!("{r:.2}")),
            middle(&mut ratios).map_or("n/a".to_string(), |r| format!("**{r:.2}**")),
            hops,
            branches,
        ));
    }
    println!("\n{table}");
    let out = dir.join("hops").join("ratios.md");
    match std::fs::write(&out, &table) {
        Ok(()) => println!("written to {}", out.display()),
        Err(err) => println!("could not write {}: {err}", out.display()),
    }
}

/// The median of a few values.
fn middle(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

fn micros(nanos: f64) -> String {
    if nanos < 1_000.0 {
        format!("{nanos:.2} ns")
    } else {
        format!("{:.2} µs", nanos / 1_000.0)
    }
}
