//! The adaptive mode (`--adaptive`): static caps against `Limit::adaptive(2, 64)` on a resource
//! whose best cap is not known in advance, and shedding by time in queue.
//!
//! The resource: one query per request, on a pool of 64 connections (SQLite, or PostgreSQL with
//! `--pg`). Its query keeps the connection busy for `q × max(1, n / slots) × (1 + contention ×
//! max(0, n − slots))`, `n` being the queries inside it when the query starts: it serves `slots`
//! queries at once, shares itself past them, and loses throughput to contention the further past
//! them it is driven. After `--phase-seconds`, `q` becomes 4 × q.
//!
//! Every run is a fresh process (`--child`): a static cap or the adaptive limit, 64 closed-loop
//! clients from a cold start for two phases; rounds interleave the variants in a rotated order.
//! Then the adaptive limit with `max_queue_time` and `ShedLayer`, open loop at 1×, 2× and 4× the
//! rate it sustained in the first phase.

mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use blocking_first::tower::ShedLayer;

use crate::args::Args;
use crate::db::Db;
use crate::fresh::{self, ChildOutput, Sampler};
use crate::report::{Environment, rotated};
use crate::variants::{Failure, Req};

/// The static caps' limit (its capacity set at start-up) and the adaptive one.
static STATIC: Limit = Limit::new("db", 8);
static ADAPTIVE: Limit = Limit::adaptive("db", MIN, MAX);
const MIN: usize = 2;
const MAX: usize = 64;
/// Closed-loop clients of the sweep.
const CLIENTS: usize = 64;
/// The targets are checked from this long after the start and after the phase change.
const SETTLE: Duration = Duration::from_secs(5);
/// Open-loop runs: offered load before the measured window (the limit starts cold).
const WARMUP: Duration = Duration::from_secs(3);
const MULTIPLES: [usize; 3] = [1, 2, 4];
const PHASE_FACTOR: u64 = 4;
/// The process is sampled this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    Static(usize),
    Adaptive,
}

impl Variant {
    fn spec(self) -> String {
        match self {
            Variant::Static(cap) => format!("closed static {cap}"),
            Variant::Adaptive => "closed adaptive".into(),
        }
    }

    fn label(self) -> String {
        match self {
            Variant::Static(cap) => format!("`Limit::new(\"db\", {cap})`"),
            Variant::Adaptive => format!("`Limit::adaptive(\"db\", {MIN}, {MAX})`"),
        }
    }

    fn short(self) -> String {
        match self {
            Variant::Static(cap) => format!("static {cap}"),
            Variant::Adaptive => format!("adaptive {MIN}–{MAX}"),
        }
    }
}

/// The simulated resource behind the pool.
struct Resource {
    db: Db,
    query: Duration,
    slots: usize,
    contention: f64,
    /// 1, then [`PHASE_FACTOR`].
    factor: AtomicU64,
}

impl Resource {
    fn cost(&self, inside: usize) -> Duration {
        let n = inside as f64;
        let slots = self.slots as f64;
        let shared = (n / slots).max(1.0);
        let contended = 1.0 + self.contention * (n - slots).max(0.0);
        self.query
            .mul_f64(self.factor.load(Ordering::Relaxed) as f64 * shared * contended)
    }

    fn query(&self, id: i64) -> Result<String, Failure> {
        Ok(self
            .db
            .read_costed(id.clamp(1, 1000), |n| self.cost(n))?
            .to_string())
    }
}

#[blocking_first(limit = STATIC)]
async fn on_static(
    State(resource): State<Arc<Resource>>,
    Query(req): Query<Req>,
) -> Result<String, Failure> {
    resource.query(req.id)
}

#[blocking_first(limit = ADAPTIVE)]
async fn on_adaptive(
    State(resource): State<Arc<Resource>>,
    Query(req): Query<Req>,
) -> Result<String, Failure> {
    resource.query(req.id)
}

/// One run of one variant, as its child process reported it.
pub(crate) struct Run {
    pub variant: Variant,
    pub round: usize,
    pub out: ChildOutput,
}

/// One open-loop run with shedding.
pub(crate) struct ShedRun {
    pub multiple: usize,
    pub out: ChildOutput,
}

pub fn run(args: &Args, environment: Environment) -> Result<(), String> {
    let started = Instant::now();
    let mut variants: Vec<Variant> = args.caps.iter().map(|&c| Variant::Static(c)).collect();
    variants.push(Variant::Adaptive);
    let mut runs = Vec::new();
    for round in 0..args.rounds {
        for variant in rotated(&variants, round) {
            let out = ChildOutput::parse(&fresh::run_child(&variant.spec())?);
            let run = Run {
                variant,
                round,
                out,
            };
            eprintln!("{}", report::line(args, &run));
            runs.push(run);
        }
    }
    let rate = fresh::median(
        &runs
            .iter()
            .filter(|r| r.variant == Variant::Adaptive)
            .map(|r| report::settled(args, &r.out, 0).per_second)
            .collect::<Vec<_>>(),
    );
    eprintln!("the adaptive limit's rate in the first phase: R = {rate:.0} req/s");
    let mut shed = Vec::new();
    for round in 0..args.rounds {
        for multiple in rotated(&MULTIPLES, round) {
            let out = ChildOutput::parse(&fresh::run_child(&format!("shed {multiple} {rate:.3}"))?);
            let run = ShedRun { multiple, out };
            eprintln!(
                "round {}/{}: {}",
                round + 1,
                args.rounds,
                report::shed_line(&run)
            );
            shed.push(run);
        }
    }
    let environment = environment.finish(database(args), started.elapsed());
    let markdown = report::markdown(args, &environment, &variants, &runs, rate, &shed);
    println!("\n{markdown}");
    let Some(out) = args.out_or("docs/bench/adaptive") else {
        return Ok(());
    };
    crate::write_report(&out, &markdown, |svg| {
        report::plot(svg, args, &environment, &runs).map_err(|e| format!("plot: {e}"))
    })
}

fn database(args: &Args) -> &'static str {
    if args.pg.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}

/// In the child process: one run, printed on stdout for the parent.
pub fn child(args: &Args, spec: &str) -> Result<(), String> {
    let words: Vec<&str> = spec.split_whitespace().collect();
    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let db = match &args.pg {
        Some(url) => Db::postgres(url, MAX, 1000, args.query)?,
        None => Db::sqlite(temp.path(), MAX, 1000, args.query)?,
    };
    let resource = Arc::new(Resource {
        db,
        query: args.query,
        slots: args.slots,
        contention: args.contention,
        factor: AtomicU64::new(1),
    });
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (limit, router) = match words.as_slice() {
        ["closed", "static", cap] => {
            let cap: usize = cap.parse().map_err(|_| format!("bad spec {spec}"))?;
            STATIC.set_capacity(cap).map_err(|e| e.to_string())?;
            (&STATIC, Router::new().route("/", get(on_static)))
        }
        ["closed", "adaptive"] => (&ADAPTIVE, Router::new().route("/", get(on_adaptive))),
        ["shed", _, _] => {
            ADAPTIVE.set_max_queue_time(args.max_queue());
            let router = Router::new()
                .route("/", get(on_adaptive))
                .layer(ShedLayer::new(&ADAPTIVE));
            (&ADAPTIVE, router)
        }
        _ => return Err(format!("bad spec {spec}")),
    };
    let router = router.with_state(resource.clone());
    let threads_before = crate::gauge::os_threads();
    let (listener, addr) = crate::listen(&client_runtime)?;
    let server = crate::serve_on_tokio(args, listener, router)?;
    let url = format!("http://{addr}/");
    let start = Instant::now();
    let sampler = Sampler::start(start, SAMPLE_EVERY, {
        let resource = resource.clone();
        move || {
            (
                limit.stats().capacity.unwrap_or(0),
                resource.db.in_use.now(),
            )
        }
    });
    let mut pairs = vec![("threads_before", threads_before.to_string())];
    let done = if let ["shed", multiple, rate] = words.as_slice() {
        let multiple: f64 = multiple.parse().map_err(|_| format!("bad spec {spec}"))?;
        let rate: f64 = rate.parse().map_err(|_| format!("bad spec {spec}"))?;
        let point = client_runtime.block_on(crate::overload::offer(
            url,
            rate * multiple,
            WARMUP,
            args.overload_time,
            1000,
        ));
        pairs.push(("offered", format!("{:.1}", point.offered)));
        pairs.push(("admitted", format!("{:.1}", point.admitted)));
        pairs.push(("errors", point.errors.to_string()));
        pairs.push(("shed", limit.stats().shed.to_string()));
        let as_done = |tag: usize, latency: &Duration| fresh::Done {
            tag,
            at: Duration::ZERO,
            latency: *latency,
            ok: true,
        };
        let mut done: Vec<fresh::Done> = point.ok.iter().map(|l| as_done(0, l)).collect();
        done.extend(point.rejected.iter().map(|l| as_done(1, l)));
        done
    } else {
        let phase = args.phase_time;
        let changer = std::thread::spawn({
            let resource = resource.clone();
            move || {
                std::thread::sleep(phase.saturating_sub(start.elapsed()));
                resource.factor.store(PHASE_FACTOR, Ordering::Relaxed);
            }
        });
        let done = client_runtime.block_on(fresh::closed_loop(&[(url, CLIENTS)], start, 2 * phase));
        let _ = changer.join();
        done
    };
    server.shutdown_timeout(Duration::from_secs(10));
    let samples = sampler.finish();
    pairs.push(("conns_peak", resource.db.in_use.peak().to_string()));
    pairs.push(("slots_peak", limit.stats().peak.to_string()));
    fresh::print_child(&pairs, &done, &samples);
    Ok(())
}
