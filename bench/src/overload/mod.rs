//! The overload mode (`--overload`): variant (a) under open-loop load past its sustainable rate,
//! with `ShedLayer` (a bounded queue, 503 at once past it) and without (an unbounded queue).
//!
//! First a closed-loop cell of (a) at concurrency 128 gives the sustainable rate R. Then, for each
//! of 2 rounds, for each rate 1×, 2×, 4× R, both servers get requests started at that fixed rate
//! for `--overload-seconds`, in an order that alternates per round, each on a fresh server
//! runtime; a cell ends when every request it started has finished (at most 60 s more).

mod report;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use blocking_first::tower::ShedLayer;
use tokio::time::{Instant, MissedTickBehavior};

use crate::load::quantile;
use crate::report::Environment;
use crate::variants::{App, DB, Variant};
use crate::{Setup, cell};
use report::{markdown, plot};

const ROUNDS: usize = 2;
const MULTIPLES: [usize; 3] = [1, 2, 4];
const CALIBRATION_CONCURRENCY: usize = 128;
/// How long a cell waits for its outstanding requests after the offering window.
const DRAIN: Duration = Duration::from_secs(60);

/// One (rate, shedding) cell of one round, or (merged) all rounds of it.
#[derive(Debug, Default)]
pub(crate) struct Point {
    multiple: usize,
    shed: bool,
    /// Requests started / window, req/s (merged: median over the rounds).
    pub(crate) offered: f64,
    /// 200s that finished inside the window / window, req/s (merged: median).
    pub(crate) admitted: f64,
    /// Latencies of the 200s and of the 503s (from the scheduled start), sorted.
    pub(crate) ok: Vec<Duration>,
    pub(crate) rejected: Vec<Duration>,
    /// Anything else: other statuses, transport errors, requests unfinished after the drain.
    pub(crate) errors: usize,
    pub(crate) first_error: Option<String>,
    /// Counted by the limit (`DB.stats().shed`): cross-checks the client's 503s.
    shed_by_server: u64,
    rss_kib: usize,
    /// Peak RSS − RSS at the cell's start (merged: max): freed memory the allocator keeps makes
    /// the peak of a later cell include earlier cells' growth.
    rss_added_kib: usize,
    os_threads: usize,
}

impl Point {
    fn line(&self, label: &str) -> String {
        format!(
            "{label} {}×R {:<7} offered {:>6.0}/s  admitted {:>6.0}/s  p50 {:>7.1} ms  p99 \
             {:>7.1} ms  503s {:>6} (server {:>6}, p99 {:>5.1} ms)  errors {:>4}  RSS {:>5.0} MiB \
             (+{:.0})  threads {:>4}",
            self.multiple,
            shedding(self.shed),
            self.offered,
            self.admitted,
            ms(quantile(&self.ok, 0.5)),
            ms(quantile(&self.ok, 0.99)),
            self.rejected.len(),
            self.shed_by_server,
            ms(quantile(&self.rejected, 0.99)),
            self.errors,
            mib(self.rss_kib),
            mib(self.rss_added_kib),
            self.os_threads,
        )
    }
}

pub fn run(setup: &Setup<'_>, environment: Environment) -> Result<(), String> {
    let args = setup.args;
    let started = std::time::Instant::now();
    DB.set_max_waiting(0);
    let calibration = cell(setup, Variant::BlockingFirst, CALIBRATION_CONCURRENCY, 0)?;
    let rate = calibration.outcome.per_second();
    eprintln!(
        "sustainable rate R = {rate:.0} req/s ((a), closed loop, concurrency \
         {CALIBRATION_CONCURRENCY}, {} requests, {} errors)",
        calibration.outcome.ok, calibration.outcome.errors
    );
    if !(rate.is_finite() && rate > 0.0) {
        return Err("the calibration cell served nothing".into());
    }
    let mut points = Vec::new();
    for round in 0..ROUNDS {
        for multiple in MULTIPLES {
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for shed in order {
                let point = overload_cell(setup, rate, multiple, shed)?;
                eprintln!("{}", point.line(&format!("round {}/{ROUNDS}", round + 1)));
                points.push(point);
            }
        }
    }
    DB.set_max_waiting(0);
    let environment = environment.finish(setup.db.kind(), started.elapsed());
    let rows = merge(points);
    let markdown = markdown(args, &environment, rate, &rows);
    println!("\n{markdown}");
    let Some(out) = args.out_or("docs/bench/overload") else {
        return Ok(());
    };
    crate::write_report(&out, &markdown, |svg| {
        plot(svg, &environment, rate, &rows).map_err(|e| format!("plot: {e}"))
    })
}

/// One cell: a fresh server of (a), shedding or not, offered `multiple × rate` req/s.
fn overload_cell(
    setup: &Setup<'_>,
    rate: f64,
    multiple: usize,
    shed: bool,
) -> Result<Point, String> {
    let args = setup.args;
    DB.set_max_waiting(if shed { args.max_waiting() } else { 0 });
    let shed_before = DB.stats().shed;
    let rss_before = crate::gauge::rss_kib();
    setup.monitor.reset();
    let app = Arc::new(App::new(
        setup.db.clone(),
        setup.upstream.addr,
        args.reads,
        args.rows,
    ));
    let router = Variant::BlockingFirst
        .router(app)
        .ok_or("variant (a) runs on tokio")?;
    let router = if shed {
        router.layer(ShedLayer::new(&DB))
    } else {
        router
    };
    let (listener, addr) = crate::listen(setup.client_runtime)?;
    let runtime = crate::serve_on_tokio(args, listener, router)?;
    let window = args.overload_time;
    let mut point = setup.client_runtime.block_on(offer(
        format!("http://{addr}/"),
        rate * multiple as f64,
        Duration::ZERO,
        window,
        args.rows,
    ));
    runtime.shutdown_timeout(Duration::from_secs(10));
    point.multiple = multiple;
    point.shed = shed;
    point.shed_by_server = DB.stats().shed - shed_before;
    point.rss_kib = setup
        .monitor
        .peaks
        .rss_kib
        .load(std::sync::atomic::Ordering::Acquire);
    point.rss_added_kib = point.rss_kib.saturating_sub(rss_before);
    point.os_threads = setup
        .monitor
        .peaks
        .os_threads
        .load(std::sync::atomic::Ordering::Acquire);
    Ok(point)
}

/// Open loop: one request task started per tick of a `rate` Hz interval (missed ticks burst)
/// for `warmup + window`, then waits for them all (at most [`DRAIN`]). Only requests scheduled
/// in the window are counted.
pub(crate) async fn offer(
    url: String,
    rate: f64,
    warmup: Duration,
    window: Duration,
    rows: i64,
) -> Point {
    let client = reqwest::Client::builder()
        .timeout(DRAIN)
        .build()
        .expect("reqwest client");
    let tally = Arc::new(Mutex::new(Point::default()));
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let start = Instant::now() + warmup;
    let end = start + window;
    let mut tasks = Vec::new();
    let mut counted = 0;
    loop {
        let scheduled = interval.tick().await;
        if scheduled >= end {
            break;
        }
        let measured = scheduled >= start;
        counted += usize::from(measured);
        let id = (tasks.len() as i64).wrapping_mul(7919).rem_euclid(rows) + 1;
        let (client, url, tally) = (client.clone(), url.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let result = match client.get(format!("{url}?id={id}")).send().await {
                Ok(response) => {
                    let status = response.status();
                    response
                        .text()
                        .await
                        .map(|body| (status, body))
                        .map_err(|e| e.to_string())
                }
                Err(err) => Err(err.to_string()),
            };
            let now = Instant::now();
            let latency = now - scheduled;
            if !measured {
                return;
            }
            let mut tally = tally.lock().expect("tally");
            match result {
                Ok((status, _)) if status.is_success() => {
                    tally.ok.push(latency);
                    if now <= end {
                        tally.admitted += 1.0;
                    }
                }
                Ok((status, _)) if status.as_u16() == 503 => tally.rejected.push(latency),
                Ok((status, body)) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert(format!("{status}: {body}"));
                }
                Err(reason) => {
                    tally.errors += 1;
                    tally.first_error.get_or_insert(reason);
                }
            }
        }));
    }
    let started = counted;
    let deadline = Instant::now() + DRAIN;
    for task in &mut tasks {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            break;
        }
    }
    for task in &tasks {
        task.abort();
    }
    let mut point = std::mem::take(&mut *tally.lock().expect("tally"));
    let finished = point.ok.len() + point.rejected.len() + point.errors;
    if finished < started {
        point.errors += started - finished;
        point
            .first_error
            .get_or_insert(format!("{} unfinished after the drain", started - finished));
    }
    point.ok.sort_unstable();
    point.rejected.sort_unstable();
    point.offered = started as f64 / window.as_secs_f64();
    point.admitted /= window.as_secs_f64();
    point
}

/// One row per (rate, shedding): rates median over the rounds, latencies pooled, errors summed,
/// peaks max.
fn merge(points: Vec<Point>) -> Vec<Point> {
    let mut rows = Vec::new();
    for multiple in MULTIPLES {
        for shed in [true, false] {
            let cells: Vec<&Point> = points
                .iter()
                .filter(|p| p.multiple == multiple && p.shed == shed)
                .collect();
            if cells.is_empty() {
                continue;
            }
            let median = |f: &dyn Fn(&Point) -> f64| {
                let mut values: Vec<f64> = cells.iter().map(|p| f(p)).collect();
                values.sort_by(f64::total_cmp);
                let n = values.len();
                if n % 2 == 1 {
                    values[n / 2]
                } else {
                    (values[n / 2 - 1] + values[n / 2]) / 2.0
                }
            };
            let pooled = |f: &dyn Fn(&Point) -> &Vec<Duration>| {
                let mut all: Vec<Duration> = cells.iter().flat_map(|p| f(p).clone()).collect();
                all.sort_unstable();
                all
            };
            rows.push(Point {
                multiple,
                shed,
                offered: median(&|p| p.offered),
                admitted: median(&|p| p.admitted),
                ok: pooled(&|p| &p.ok),
                rejected: pooled(&|p| &p.rejected),
                errors: cells.iter().map(|p| p.errors).sum(),
                first_error: cells.iter().find_map(|p| p.first_error.clone()),
                shed_by_server: cells.iter().map(|p| p.shed_by_server).sum(),
                rss_kib: cells.iter().map(|p| p.rss_kib).max().unwrap_or(0),
                rss_added_kib: cells.iter().map(|p| p.rss_added_kib).max().unwrap_or(0),
                os_threads: cells.iter().map(|p| p.os_threads).max().unwrap_or(0),
            });
        }
    }
    rows
}

fn shedding(shed: bool) -> &'static str {
    if shed { "shed" } else { "no shed" }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn mib(kib: usize) -> f64 {
    kib as f64 / 1024.0
}
