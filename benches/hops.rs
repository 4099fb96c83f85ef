//! What a `#[blocking_first]` body costs a handler, next to the tools it replaces, measured
//! interleaved.
//!
//! ```sh
//! cargo bench --bench hops                        # 320 rounds, writes docs/bench/hops.md
//! BENCH_ROUNDS=40 cargo bench --bench hops        # a quicker look
//! cargo bench --bench hops -- --calls no_region 1000   # just run calls (for scripts/callgrind.sh)
//! BENCH_ROUNDS=100 cargo bench --bench hops --profile dev   # unoptimized: docs/bench/hops-debug.md
//! ```
//!
//! The detectors are off in every row but `io_round_trip_detecting`, whatever the build's default.
//!
//! Each round times a batch of calls of every variant (right after a few untimed calls of the
//! same variant, so no batch pays for what the one before it left cold), in an order shuffled
//! afresh every round, with the floor -- a bare `spawn_blocking(|| ()).await` round trip -- measured first and last.
//! A variant's ratio in a round is its time per call over the mean of that round's two floors,
//! so a machine that drifts moves both sides of the ratio together. Reported per variant: the
//! median time per call, the median ratio and its interquartile range over all rounds, and the
//! driver's hops per call (from `blocking_first::stats()` over a separate pass).
//!
//! Calls are awaited one after another from a task on a runtime worker of a two-worker
//! runtime, as a handler's caller would: each call starts from a worker and ends back on it.

use std::fmt::Write as _;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::process::Command;
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

use blocking_first::blocking_first;
use blocking_first::limit::Limit;
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

/// blocking → io → blocking, the io part really waiting once (a yield): two hops.
#[blocking_first]
async fn io_round_trip() -> u64 {
    let before = black_box(1);
    io! { tokio::task::yield_now().await };
    black_box(before + 1)
}

/// `no_region` plus 1000 calls of `is_cancelled()`, as a long export checks once per row: the
/// difference over `no_region` is a check's cost times 1000.
#[blocking_first]
async fn cancel_checks_1000() -> u64 {
    let mut seen = 0;
    for _ in 0..1000 {
        seen += u64::from(black_box(blocking_first::is_cancelled()));
    }
    black_box(seen + 1)
}

/// An io region whose await completes at once: lazy switching keeps the body where it is.
#[blocking_first]
async fn io_without_suspension() -> u64 {
    let before = black_box(1);
    let ready = io! { std::future::ready(black_box(2)).await };
    black_box(before + ready)
}

/// An annotated handler that awaits another one from its blocking code.
#[blocking_first]
async fn nested_1() -> u64 {
    black_box(no_region().await + 1)
}

/// Two levels of nesting.
#[blocking_first]
async fn nested_2() -> u64 {
    black_box(nested_1().await + 1)
}

/// A handler with no blocking work at all, annotated anyway.
#[blocking_first]
async fn format_annotated(id: u64) -> String {
    format!("note {id}")
}

/// The same handler as a plain async fn: what not annotating costs.
async fn format_plain(id: u64) -> String {
    format!("note {id}")
}

/// A service answering at once, for the cost of `WorkerWatchLayer` around it.
#[derive(Clone, Copy)]
struct Answer;

impl tower_service::Service<http::Request<()>> for Answer {
    type Response = u64;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<u64, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::convert::Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<()>) -> Self::Future {
        std::future::ready(Ok(black_box(request.uri().path().len() as u64)))
    }
}

/// A service whose handler is one `#[blocking_first]` body, for the cost of `ServerTimingLayer`
/// around it (it adds the body's split to the request's and formats the header).
#[derive(Clone, Copy)]
struct WithBody;

type Responding =
    Pin<Box<dyn Future<Output = Result<http::Response<()>, std::convert::Infallible>> + Send>>;

impl tower_service::Service<http::Request<()>> for WithBody {
    type Response = http::Response<()>;
    type Error = std::convert::Infallible;
    type Future = Responding;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::convert::Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        Box::pin(async {
            black_box(no_region().await);
            Ok(http::Response::new(()))
        })
    }
}

/// One request to [`WithBody`], directly.
async fn body_response() -> usize {
    use tower_service::Service as _;
    WithBody.call(request()).await.unwrap().headers().len()
}

/// One request to [`WithBody`] through `ServerTimingLayer`.
async fn body_response_timed() -> usize {
    use tower_layer::Layer as _;
    use tower_service::Service as _;
    let mut service = blocking_first::tower::ServerTimingLayer::new().layer(WithBody);
    service.call(request()).await.unwrap().headers().len()
}

fn request() -> http::Request<()> {
    http::Request::get("/notes/1").body(()).unwrap()
}

/// One request to [`Answer`], directly.
async fn answer_plain() -> u64 {
    use tower_service::Service as _;
    Answer.call(request()).await.unwrap()
}

/// One request to [`Answer`] through `WorkerWatchLayer` (its poll timed).
async fn answer_watched() -> u64 {
    use tower_layer::Layer as _;
    use tower_service::Service as _;
    static WATCHED: OnceLock<blocking_first::tower::WorkerWatch<Answer>> = OnceLock::new();
    let mut service = WATCHED
        .get_or_init(|| blocking_first::tower::WorkerWatchLayer::new().layer(Answer))
        .clone();
    service.call(request()).await.unwrap()
}

#[inline(never)]
fn trivial(x: u64) -> u64 {
    black_box(x)
}

/// `parallel!` over three trivial branches, from a blocking thread.
#[blocking_first]
async fn parallel_3(iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        black_box(parallel! { trivial(i), trivial(i + 1), trivial(i + 2) });
    }
    start.elapsed()
}

/// `std::thread::scope` with three trivial threads, from a blocking thread.
#[blocking_first]
async fn thread_scope_3(iters: u64) -> Duration {
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

/// A thread that completes futures after a busy wait: an `.await` that resolves after a known,
/// short time, like a quick query to a local service.
fn resolver() -> &'static mpsc::Sender<(Duration, tokio::sync::oneshot::Sender<()>)> {
    static RESOLVER: OnceLock<mpsc::Sender<(Duration, tokio::sync::oneshot::Sender<()>)>> =
        OnceLock::new();
    RESOLVER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Duration, tokio::sync::oneshot::Sender<()>)>();
        std::thread::spawn(move || {
            for (after, done) in rx {
                let start = Instant::now();
                while start.elapsed() < after {
                    std::hint::spin_loop();
                }
                let _ = done.send(());
            }
        });
        tx
    })
}

async fn resolved_after(micros: u64) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    resolver()
        .send((Duration::from_micros(micros), tx))
        .unwrap();
    rx.await.unwrap();
}

/// A plain `.await` in blocking code that resolves in about 10 µs.
#[blocking_first]
async fn quick_await_10() {
    resolved_after(10).await;
}

/// The same await in a plain `async fn`.
async fn quick_await_10_plain() {
    resolved_after(10).await;
}

#[blocking_first]
async fn quick_await_50() {
    resolved_after(50).await;
}

async fn quick_await_50_plain() {
    resolved_after(50).await;
}

async fn bare_spawn_blocking() {
    tokio::task::spawn_blocking(|| black_box(())).await.unwrap();
}

/// `block_in_place` followed by a yield, as in a handler that awaits between blocking calls
/// (without the yield, back-to-back calls find the core handed off already and cost nothing).
async fn block_in_place_then_yield() -> u64 {
    let value = tokio::task::block_in_place(|| black_box(1));
    tokio::task::yield_now().await;
    value
}

/// The machine's thread-wake floor: a round trip between two threads over channels.
fn ping_pong(iters: u64) -> Duration {
    let (to_echo, echo_rx) = mpsc::channel::<u64>();
    let (to_main, main_rx) = mpsc::channel::<u64>();
    let echo = std::thread::spawn(move || {
        while let Ok(v) = echo_rx.recv() {
            if to_main.send(v).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    for i in 0..iters {
        to_echo.send(i).unwrap();
        black_box(main_rx.recv().unwrap());
    }
    let elapsed = start.elapsed();
    drop(to_echo);
    echo.join().unwrap();
    elapsed
}

type Timed = Pin<Box<dyn Future<Output = Duration> + Send>>;

/// One variant: how to time `iters` calls of it.
struct Variant {
    id: &'static str,
    what: &'static str,
    /// Times `iters` calls.
    run: fn(&Runtime, u64) -> Duration,
    /// Whether hops per call mean anything here.
    counts_hops: bool,
}

/// Times `iters` sequential awaits of `call()` from a task on a runtime worker.
fn on_worker<F, Fut>(rt: &Runtime, iters: u64, call: F) -> Duration
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

/// [`on_worker`] with recording of time splits off (`observe::set_enabled(false)`): the same
/// binary, so the recording's cost is the difference, measured interleaved.
fn unrecorded<F, Fut>(rt: &Runtime, iters: u64, call: F) -> Duration
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future + Send,
{
    blocking_first::observe::set_enabled(false);
    let took = on_worker(rt, iters, call);
    blocking_first::observe::set_enabled(true);
    took
}

/// [`on_worker`] with both detectors on (their default thresholds, which these bodies stay under).
fn detecting<F, Fut>(rt: &Runtime, iters: u64, call: F) -> Duration
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future + Send,
{
    use blocking_first::observe::detect;
    detect::enable(detect::Detectors::default());
    let took = on_worker(rt, iters, call);
    detect::disable();
    took
}

/// Runs a body that times its own loop, from a task on a runtime worker.
fn in_body(rt: &Runtime, body: Timed) -> Duration {
    rt.block_on(rt.spawn(body)).unwrap()
}

fn variants() -> Vec<Variant> {
    vec![
        Variant {
            id: "no_region",
            what: "`#[blocking_first]` body, no region",
            run: |rt, n| on_worker(rt, n, no_region),
            counts_hops: true,
        },
        Variant {
            id: "no_region_unrecorded",
            what: "same, with recording of time splits off",
            run: |rt, n| unrecorded(rt, n, no_region),
            counts_hops: true,
        },
        Variant {
            id: "cancel_checks_1000",
            what: "same, calling `is_cancelled()` 1000 times",
            run: |rt, n| on_worker(rt, n, cancel_checks_1000),
            counts_hops: true,
        },
        Variant {
            id: "no_region_capped",
            what: "same, under a `Limit` of 4 slots",
            run: |rt, n| on_worker(rt, n, no_region_capped),
            counts_hops: true,
        },
        Variant {
            id: "io_round_trip",
            what: "blocking → `io! { yield_now().await }` → blocking",
            run: |rt, n| on_worker(rt, n, io_round_trip),
            counts_hops: true,
        },
        Variant {
            id: "io_round_trip_unrecorded",
            what: "same, with recording of time splits off",
            run: |rt, n| unrecorded(rt, n, io_round_trip),
            counts_hops: true,
        },
        Variant {
            id: "io_round_trip_detecting",
            what: "same, recorded, with both detectors on",
            run: |rt, n| detecting(rt, n, io_round_trip),
            counts_hops: true,
        },
        Variant {
            id: "io_without_suspension",
            what: "blocking → `io! { ready(2).await }` (never suspends) → blocking",
            run: |rt, n| on_worker(rt, n, io_without_suspension),
            counts_hops: true,
        },
        Variant {
            id: "nested_1",
            what: "an annotated body awaiting another from its blocking code",
            run: |rt, n| on_worker(rt, n, nested_1),
            counts_hops: true,
        },
        Variant {
            id: "nested_2",
            what: "two levels of that",
            run: |rt, n| on_worker(rt, n, nested_2),
            counts_hops: true,
        },
        Variant {
            id: "format_annotated",
            what: "a handler with no blocking work (`format!`), annotated",
            run: |rt, n| on_worker(rt, n, || format_annotated(7)),
            counts_hops: true,
        },
        Variant {
            id: "format_plain",
            what: "the same handler as a plain `async fn`",
            run: |rt, n| on_worker(rt, n, || format_plain(7)),
            counts_hops: true,
        },
        Variant {
            id: "quick_await_10",
            what: "a plain `.await` resolving in ~10 µs (another thread), in blocking code",
            run: |rt, n| on_worker(rt, n, quick_await_10),
            counts_hops: true,
        },
        Variant {
            id: "quick_await_10_plain",
            what: "the same await in a plain `async fn`",
            run: |rt, n| on_worker(rt, n, quick_await_10_plain),
            counts_hops: true,
        },
        Variant {
            id: "quick_await_50",
            what: "a plain `.await` resolving in ~50 µs, in blocking code",
            run: |rt, n| on_worker(rt, n, quick_await_50),
            counts_hops: true,
        },
        Variant {
            id: "quick_await_50_plain",
            what: "the same await in a plain `async fn`",
            run: |rt, n| on_worker(rt, n, quick_await_50_plain),
            counts_hops: true,
        },
        Variant {
            id: "block_in_place_then_yield",
            what: "`block_in_place(|| ..)` on a worker, then `yield_now().await`",
            run: |rt, n| on_worker(rt, n, block_in_place_then_yield),
            counts_hops: false,
        },
        Variant {
            id: "yield_now",
            what: "`yield_now().await` alone (to subtract from the row above)",
            run: |rt, n| on_worker(rt, n, tokio::task::yield_now),
            counts_hops: false,
        },
        Variant {
            id: "parallel_3",
            what: "`parallel!` of 3 trivial branches, inside a blocking thread",
            run: |rt, n| in_body(rt, Box::pin(parallel_3(n))),
            counts_hops: false,
        },
        Variant {
            id: "thread_scope_3",
            what: "`std::thread::scope` with 3 trivial threads, inside a blocking thread",
            run: |rt, n| in_body(rt, Box::pin(thread_scope_3(n))),
            counts_hops: false,
        },
        Variant {
            id: "answer_plain",
            what: "a request to a service that answers at once (a plain `async fn` caller)",
            run: |rt, n| on_worker(rt, n, answer_plain),
            counts_hops: false,
        },
        Variant {
            id: "answer_watched",
            what: "the same through `WorkerWatchLayer`",
            run: |rt, n| on_worker(rt, n, answer_watched),
            counts_hops: false,
        },
        Variant {
            id: "body_response",
            what: "a tower service whose handler awaits `no_region`",
            run: |rt, n| on_worker(rt, n, body_response),
            counts_hops: true,
        },
        Variant {
            id: "body_response_timed",
            what: "the same through `ServerTimingLayer` (a `Server-Timing` header)",
            run: |rt, n| on_worker(rt, n, body_response_timed),
            counts_hops: true,
        },
        Variant {
            id: "ping_pong",
            what: "two threads passing a value back and forth (the thread-wake floor)",
            run: |_, n| ping_pong(n),
            counts_hops: false,
        },
    ]
}

const FLOOR: Variant = Variant {
    id: "spawn_blocking",
    what: "bare `spawn_blocking(|| ()).await` round trip (the floor)",
    run: |rt, n| on_worker(rt, n, bare_spawn_blocking),
    counts_hops: false,
};

/// Calls per variant per round.
const BATCH: u64 = 100;
/// Untimed calls of a variant right before its timed batch.
const WARM: u64 = 10;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--calls") {
        return calls_only(
            &args[at + 1],
            args[at + 2].parse().expect("a number of calls"),
        );
    }
    // `cargo bench` passes `--bench`; a bare filter argument is not supported here.
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(320);
    // Every row but `_detecting` without the detectors, in any build (debug builds start with
    // them on).
    blocking_first::observe::detect::disable();
    let started = SystemTime::now();
    let load_before = load_average();
    let rt = runtime();
    let variants = variants();

    // Hops per call, and a warm-up of every variant.
    let hops: Vec<Option<f64>> = variants
        .iter()
        .map(|variant| {
            let before = blocking_first::stats().hops;
            (variant.run)(&rt, 1_000);
            let delta = blocking_first::stats().hops - before;
            variant.counts_hops.then(|| delta as f64 / 1_000.0)
        })
        .collect();
    (FLOOR.run)(&rt, 1_000);

    let n = variants.len();
    let mut per_call: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut floors = Vec::new();
    let nanos = |d: Duration| d.as_nanos() as f64 / BATCH as f64;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..rounds {
        (FLOOR.run)(&rt, WARM);
        let first = nanos((FLOOR.run)(&rt, BATCH));
        let mut times = vec![0.0; n];
        for i in shuffled(n, &mut seed) {
            // Untimed calls first, so no batch pays for what the variant before it left cold
            // (an idle loop ended, another limit's loop hot).
            (variants[i].run)(&rt, WARM);
            times[i] = nanos((variants[i].run)(&rt, BATCH));
        }
        (FLOOR.run)(&rt, WARM);
        let last = nanos((FLOOR.run)(&rt, BATCH));
        let floor = (first + last) / 2.0;
        floors.push(floor);
        for i in 0..n {
            per_call[i].push(times[i]);
            ratios[i].push(times[i] / floor);
        }
    }

    let elapsed = started.elapsed().unwrap_or_default();
    let mut table = table(&variants, &per_call, &ratios, &hops, &floors);
    table.push_str(&recording_cost(&variants, &per_call));
    println!("{table}");
    let header = header(rounds, elapsed, load_before, load_average());
    // An unoptimized build writes beside the optimized results, not over them.
    let (command, file) = if cfg!(debug_assertions) {
        (
            "BENCH_ROUNDS=100 cargo bench --bench hops --profile dev",
            "docs/bench/hops-debug.md",
        )
    } else {
        ("cargo bench --bench hops", "docs/bench/hops.md")
    };
    let doc = format!("# Microbenchmarks: hops\n\n```sh\n{command}\n```\n\n{header}\n{table}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    match std::fs::write(&out, doc) {
        Ok(()) => println!("written to {}", out.display()),
        Err(err) => eprintln!("could not write {}: {err}", out.display()),
    }
}

/// Runs `calls` calls of one variant and nothing else: for instruction counts.
fn calls_only(id: &str, calls: u64) {
    let rt = runtime();
    let all = variants();
    let variant = std::iter::once(&FLOOR)
        .chain(all.iter())
        .find(|variant| variant.id == id)
        .unwrap_or_else(|| panic!("no variant `{id}`"));
    (variant.run)(&rt, calls);
}

fn table(
    variants: &[Variant],
    per_call: &[Vec<f64>],
    ratios: &[Vec<f64>],
    hops: &[Option<f64>],
    floors: &[f64],
) -> String {
    let mut out = String::new();
    out.push_str(
        "| benchmark | what | median per call | median ratio to the floor | ratio p25–p75 | hops/call |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    let mut sorted_floors = floors.to_vec();
    let (floor_median, _, _) = quartiles(&mut sorted_floors);
    let _ = writeln!(
        out,
        "| `{}` | {} | {} | **1.00** | – | – |",
        FLOOR.id,
        FLOOR.what.replace('|', "\\|"),
        micros(floor_median),
    );
    for (i, variant) in variants.iter().enumerate() {
        let (time, _, _) = quartiles(&mut per_call[i].clone());
        let (ratio, p25, p75) = quartiles(&mut ratios[i].clone());
        let hops = hops[i].map_or("–".to_string(), |h| format!("{h:.2}"));
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | **{ratio:.2}** | {p25:.2}–{p75:.2} | {hops} |",
            variant.id,
            variant.what.replace('|', "\\|"),
            micros(time),
        );
    }
    out
}

/// What observing costs: each row over its base, per round (both measured in that round).
const COSTS: [(&str, &str); 6] = [
    ("no_region", "no_region_unrecorded"),
    ("cancel_checks_1000", "no_region"),
    ("io_round_trip", "io_round_trip_unrecorded"),
    ("io_round_trip_detecting", "io_round_trip"),
    ("answer_watched", "answer_plain"),
    ("body_response_timed", "body_response"),
];

/// The [`COSTS`] table: median ratio, its interquartile range, and the median extra per call.
fn recording_cost(variants: &[Variant], per_call: &[Vec<f64>]) -> String {
    let mut out = String::from(
        "\nWhat observing costs: recording of time splits (on by default) against off, 1000 \
         cancellation checks against none, the detectors on against off, and \
         `WorkerWatchLayer` and `ServerTimingLayer` against no layer, per round:\n\n\
         | row / its base | median ratio | p25–p75 | median extra per call |\n\
         |---|---:|---:|---:|\n",
    );
    let at = |id: &str| variants.iter().position(|v| v.id == id);
    for (row, base) in COSTS {
        let (Some(on), Some(off)) = (at(row), at(base)) else {
            continue;
        };
        let rounds = 0..per_call[on].len();
        let mut ratios: Vec<f64> = rounds
            .clone()
            .map(|round| per_call[on][round] / per_call[off][round])
            .collect();
        let mut extra: Vec<f64> = rounds
            .map(|round| per_call[on][round] - per_call[off][round])
            .collect();
        let (ratio, p25, p75) = quartiles(&mut ratios);
        let (extra, _, _) = quartiles(&mut extra);
        let _ = writeln!(
            out,
            "| `{row}` / `{base}` | **{ratio:.3}** | {p25:.3}–{p75:.3} | {} |",
            micros(extra)
        );
    }
    out
}

/// `0..n` in a fresh order each round (xorshift, from a fixed seed: runs are repeatable). A
/// rotation would give every variant the same predecessor in every round, and what that one
/// leaves behind (a loop spinning, a thread parked) moved a variant's time by up to 0.8 µs.
fn shuffled(n: usize, seed: &mut u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for at in (1..n).rev() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        order.swap(at, (*seed % (at as u64 + 1)) as usize);
    }
    order
}

/// Median, 25th and 75th percentile.
fn quartiles(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.25), at(0.75))
}

fn micros(nanos: f64) -> String {
    if nanos < 1_000.0 {
        format!("{nanos:.0} ns")
    } else {
        format!("{:.2} µs", nanos / 1_000.0)
    }
}

fn header(rounds: usize, elapsed: Duration, before: String, after: String) -> String {
    let sh = |cmd: &str| {
        Command::new("sh")
            .args(["-c", cmd])
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "- date: {}; whole run {:.0?}\n\
         - machine: `nproc` = {}; CPU: {}; kernel {}; {}\n\
         - load average (1/5/15 min) before: {before}; after: {after}\n\
         - {rounds} rounds; each round times {BATCH} calls of every variant (after {WARM} untimed ones), in an order \
           shuffled afresh every round, between two measurements of the floor; ratio = time per call / \
           mean of the round's two floors; median and interquartile range over the rounds. \
           hops/call: `blocking_first::stats()` over 1000 calls before the rounds.\n\
         - calls are awaited one after another from a task on a worker of a 2-worker \
           multi-thread runtime; the `_3` rows loop inside a blocking thread; `ping_pong` runs \
           on plain threads\n",
        sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        elapsed,
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs"),
        sh("uname -r"),
        sh("rustc --version"),
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "n/a".into())
}
