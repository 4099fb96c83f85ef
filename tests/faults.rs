//! Faults under load: a real axum server on 127.0.0.1 whose `#[blocking_first(limit = CAP)]`
//! handlers do blocking work, call a slow local upstream from `io!` (some calls time out), run
//! `parallel!` branches, and sometimes panic (`CatchPanicLayer` → 500), while some clients give
//! up mid-request (a client timeout shorter than the handler, or a dropped request future).
//!
//! A deadline middleware drops some handlers while their body waits in `io!` or runs blocking
//! code (503).
//!
//! Checked: every request is accounted for (none lost, none hung), the cap is never exceeded
//! (the limit's own peak and an independent gauge), every resource a body owns is dropped exactly
//! once, code after the next region boundary of a dropped body never runs, and threads, live
//! heap bytes and resident memory return near their baseline (measured after an identical
//! warm-up round) afterwards.
//!
//! The full run is ignored by default; it prints the figures for the README:
//!
//! ```sh
//! cargo test --release -p blocking-first-tests --test faults -- --ignored --nocapture
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Extension, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use serde::Deserialize;
use tokio::runtime::{Builder, Runtime};
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;

/// As many bodies (and `parallel!` branches) in blocking code at once as a pool of 8 connections.
static CAP: Limit = Limit::new("faults", 8);
const CAP_SIZE: usize = 8;

/// The two load tests measure process-wide threads and memory: never at the same time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

// ----------------------------------------------------------------------------------------------
// Server side.

struct Counters {
    /// Resources created and dropped by bodies.
    created: AtomicUsize,
    dropped: AtomicUsize,
    /// Bodies that reached one of their normal exits.
    finished: AtomicUsize,
    /// Threads running this limit's blocking code now, and at most (an independent gauge).
    gauge: AtomicUsize,
    gauge_peak: AtomicUsize,
    /// Bodies that finished a stretch of blocking code after their handler was dropped.
    held: AtomicUsize,
    /// Code after such a body's next region boundary that ran anyway (must stay 0).
    ran_after_drop: AtomicUsize,
}

impl Counters {
    const fn new() -> Counters {
        Counters {
            created: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            gauge: AtomicUsize::new(0),
            gauge_peak: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            ran_after_drop: AtomicUsize::new(0),
        }
    }
}

/// The server's counters (the load tests run one at a time).
static COUNTERS: Counters = Counters::new();

thread_local! {
    /// Nesting of gauge sections on this thread (a branch run inline is not another slot).
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Counts this thread as running capped blocking code while it lives.
struct InBlocking(());

impl InBlocking {
    fn enter() -> Self {
        if DEPTH.replace(DEPTH.get() + 1) == 0 {
            let now = COUNTERS.gauge.fetch_add(1, Ordering::SeqCst) + 1;
            COUNTERS.gauge_peak.fetch_max(now, Ordering::SeqCst);
        }
        InBlocking(())
    }
}

impl Drop for InBlocking {
    fn drop(&mut self) {
        DEPTH.set(DEPTH.get() - 1);
        if DEPTH.get() == 0 {
            COUNTERS.gauge.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A resource a body owns (a pooled connection, a temporary file).
struct Resource(());

impl Resource {
    fn open() -> Resource {
        COUNTERS.created.fetch_add(1, Ordering::SeqCst);
        Resource(())
    }

    fn finish(&self) {
        COUNTERS.finished.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Resource {
    fn drop(&mut self) {
        COUNTERS.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct Server {
    http: reqwest::Client,
    upstream: String,
}

/// What the client asks a request to do.
#[derive(Deserialize)]
struct Job {
    /// Microseconds of blocking work before and after the upstream call.
    work_us: u64,
    /// How long the upstream takes, and how long the handler waits for it.
    upstream_ms: u64,
    upstream_timeout_ms: u64,
    /// Milliseconds of extra blocking work before the upstream call (a slow query).
    stall_ms: u64,
    /// "before" or "after" the upstream call, to panic there.
    panic: Option<String>,
    /// 1: stay in blocking code until the deadline middleware has dropped this handler.
    #[serde(default)]
    hold: u8,
}

/// Set by the deadline middleware once it has dropped the handler's future.
#[derive(Clone, Default)]
struct Dropped(Arc<AtomicBool>);

fn busy(us: u64) {
    let until = Instant::now() + Duration::from_micros(us);
    let mut x = 0u64;
    while Instant::now() < until {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
}

fn checksum(data: &[u8]) -> u32 {
    let _counted = InBlocking::enter();
    busy(50);
    data.iter().map(|&b| u32::from(b)).sum()
}

#[blocking_first(limit = CAP)]
async fn work(
    State(server): State<Server>,
    Extension(dropped): Extension<Dropped>,
    Query(job): Query<Job>,
) -> Result<String, (StatusCode, String)> {
    let resource = Resource::open();
    let payload = {
        let _counted = InBlocking::enter();
        busy(job.work_us);
        if job.stall_ms > 0 {
            thread::sleep(Duration::from_millis(job.stall_ms));
        }
        if job.hold == 1 {
            // Blocking code is not interrupted: it runs on after its handler was dropped,
            // until the next region boundary.
            let give_up = Instant::now() + Duration::from_secs(5);
            while !dropped.0.load(Ordering::SeqCst) && Instant::now() < give_up {
                thread::sleep(Duration::from_millis(1));
            }
            COUNTERS.held.fetch_add(1, Ordering::SeqCst);
        }
        if job.panic.as_deref() == Some("before") {
            panic!("injected fault before the upstream call");
        }
        vec![7u8; 64]
    };
    let reply = io! {
        let url = format!("{}/slow?ms={}", server.upstream, job.upstream_ms);
        let request = server
            .http
            .get(url)
            .timeout(Duration::from_millis(job.upstream_timeout_ms));
        match request.send().await {
            Ok(response) => response
                .text()
                .await
                .map_err(|err| (StatusCode::BAD_GATEWAY, err.to_string()))?,
            Err(err) if err.is_timeout() => {
                resource.finish();
                return Err((StatusCode::GATEWAY_TIMEOUT, "upstream timed out".into()));
            }
            Err(err) => return Err((StatusCode::BAD_GATEWAY, err.to_string())),
        }
    };
    if job.hold == 1 {
        COUNTERS.ran_after_drop.fetch_add(1, Ordering::SeqCst);
    }
    let _counted = InBlocking::enter();
    let (a, b) = parallel! { checksum(&payload[..32]), checksum(&payload[32..]) };
    busy(job.work_us);
    if job.panic.as_deref() == Some("after") {
        panic!("injected fault after the upstream call");
    }
    resource.finish();
    Ok(format!("{reply} {}", a + b))
}

/// A deadline middleware: a request asking for `deadline_ms` gets a 503 when its handler takes
/// longer, and the handler's future is dropped.
async fn deadline(mut request: Request, next: Next) -> Response {
    let dropped = Dropped::default();
    request.extensions_mut().insert(dropped.clone());
    let deadline = request
        .uri()
        .query()
        .and_then(|query| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("deadline_ms="))
        })
        .and_then(|ms| ms.parse().ok());
    match deadline {
        Some(ms) => {
            match tokio::time::timeout(Duration::from_millis(ms), next.run(request)).await {
                Ok(response) => response,
                Err(_) => {
                    // The handler's future is gone by now.
                    dropped.0.store(true, Ordering::SeqCst);
                    StatusCode::SERVICE_UNAVAILABLE.into_response()
                }
            }
        }
        None => next.run(request).await,
    }
}

/// Upstream requests being served now (their tasks hold memory until they end).
static UPSTREAM_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

struct Serving(());

impl Drop for Serving {
    fn drop(&mut self) {
        UPSTREAM_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn slow_upstream(Query(params): Query<BTreeMap<String, u64>>) -> String {
    UPSTREAM_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let _serving = Serving(());
    let ms = params.get("ms").copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    format!("upstream {ms}")
}

// ----------------------------------------------------------------------------------------------
// Client side.

/// What a request is meant to meet, and so what its outcome must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// 200 with the upstream's answer.
    Ok,
    /// The upstream is slower than the handler waits: 504.
    UpstreamTimeout,
    /// The handler panics in blocking code, before or after its region: 500.
    Panic,
    /// The client's own timeout is shorter than the handler's wait in `io!`.
    ClientTimeout,
    /// The client drops the request future while the handler is in blocking code.
    ClientDrop,
    /// The server's deadline middleware drops the handler while it waits in `io!`: 503.
    DeadlineInIo,
    /// The server's deadline middleware drops the handler while it is in blocking code (or
    /// waits for a slot): 503.
    DeadlineInBlocking,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    GatewayTimeout,
    ServerError,
    Unavailable,
    Cancelled,
    /// Anything else: a lost request.
    Unexpected,
    /// No outcome before the per-request deadline.
    Hung,
}

fn expected(kind: Kind) -> Outcome {
    match kind {
        Kind::Ok => Outcome::Ok,
        Kind::UpstreamTimeout => Outcome::GatewayTimeout,
        Kind::Panic => Outcome::ServerError,
        Kind::ClientTimeout | Kind::ClientDrop => Outcome::Cancelled,
        Kind::DeadlineInIo | Kind::DeadlineInBlocking => Outcome::Unavailable,
    }
}

/// xorshift64, so a run can be replayed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn plan(index: u64) -> (Kind, String) {
    let mut seed = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    next(&mut seed);
    let roll = next(&mut seed) % 100;
    let work_us = 200 + next(&mut seed) % 600;
    let quick = 1 + next(&mut seed) % 10;
    let (kind, upstream_ms, upstream_timeout_ms, stall_ms, extra) = match roll {
        0..=63 => (Kind::Ok, quick, 30_000, 0, ""),
        64..=71 => (Kind::UpstreamTimeout, 2_000, 50, 0, ""),
        72..=75 => (Kind::Panic, quick, 30_000, 0, "&panic=before"),
        76..=79 => (Kind::Panic, quick, 30_000, 0, "&panic=after"),
        80..=84 => (Kind::ClientTimeout, 3_000, 30_000, 0, ""),
        85..=89 => (Kind::ClientDrop, quick, 30_000, 20, ""),
        // Long enough to get a slot first, then dropped while parked in `io!`.
        90..=97 => (Kind::DeadlineInIo, 3_000, 30_000, 0, "&deadline_ms=500"),
        _ => (
            Kind::DeadlineInBlocking,
            quick,
            30_000,
            0,
            "&deadline_ms=250&hold=1",
        ),
    };
    let query = format!(
        "work_us={work_us}&upstream_ms={upstream_ms}&upstream_timeout_ms={upstream_timeout_ms}\
         &stall_ms={stall_ms}{extra}"
    );
    (kind, query)
}

async fn one_request(client: &reqwest::Client, base: &str, kind: Kind, query: &str) -> Outcome {
    let url = format!("{base}/work?{query}");
    let send = async {
        let request = match kind {
            // The client gives up long before the handler's 3 s wait in `io!` is over.
            Kind::ClientTimeout => client.get(url).timeout(Duration::from_millis(500)),
            _ => client.get(url),
        };
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.text().await;
                match (status, body) {
                    (StatusCode::OK, Ok(body)) if body.starts_with("upstream ") => Outcome::Ok,
                    (StatusCode::GATEWAY_TIMEOUT, Ok(_)) => Outcome::GatewayTimeout,
                    (StatusCode::INTERNAL_SERVER_ERROR, Ok(_)) => Outcome::ServerError,
                    (StatusCode::SERVICE_UNAVAILABLE, Ok(_)) => Outcome::Unavailable,
                    _ => Outcome::Unexpected,
                }
            }
            Err(err) if err.is_timeout() && kind == Kind::ClientTimeout => Outcome::Cancelled,
            Err(_) => Outcome::Unexpected,
        }
    };
    if kind == Kind::ClientDrop {
        // The handler stalls 20 ms in blocking code: dropping the request after 3 ms leaves it
        // there.
        return match tokio::time::timeout(Duration::from_millis(3), send).await {
            Err(_) => Outcome::Cancelled,
            Ok(_) => Outcome::Unexpected,
        };
    }
    tokio::time::timeout(Duration::from_secs(60), send)
        .await
        .unwrap_or(Outcome::Hung)
}

// ----------------------------------------------------------------------------------------------
// Process figures.

fn status_field(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
}

fn threads() -> u64 {
    status_field("Threads:")
}

fn rss_kib() -> u64 {
    status_field("VmRSS:")
}

/// The system allocator, counting live heap bytes: resident memory alone cannot tell a leak from
/// memory the allocator keeps for reuse.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and only
// updates a counter besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_kib() -> u64 {
    LIVE.load(Ordering::Relaxed) as u64 / 1024
}

/// Samples threads and memory in the background until dropped; keeps the peaks.
struct Monitor {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<(u64, u64, u64)>>,
}

impl Monitor {
    fn start() -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let (mut threads_peak, mut rss_peak, mut live_peak) = (0, 0, 0);
            while !flag.load(Ordering::SeqCst) {
                threads_peak = threads_peak.max(threads());
                rss_peak = rss_peak.max(rss_kib());
                live_peak = live_peak.max(live_kib());
                thread::sleep(Duration::from_millis(10));
            }
            (threads_peak, rss_peak, live_peak)
        });
        Monitor {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// Waits (polling) until `cond` holds or `limit` passes; returns whether it held.
fn settle(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

// ----------------------------------------------------------------------------------------------
// The load.

struct Load {
    requests: u64,
    concurrency: usize,
    /// Requests of the same mix before the measured phase, so that the memory baseline
    /// includes warmed-up allocator pools, connection buffers and runtime structures.
    warm_up: u64,
    /// The whole measured phase must end within this.
    deadline: Duration,
    /// Live heap bytes may end at most this far above their warmed-up baseline (a leak of a
    /// few hundred bytes per request would show).
    live_slack_kib: u64,
    /// Resident memory may end at most this far above its warmed-up baseline (the allocator
    /// keeps freed memory for reuse, so this bound is loose).
    rss_slack_kib: u64,
}

/// Idle blocking threads expire after this; the "after" figures wait for it.
const KEEP_ALIVE: Duration = Duration::from_millis(300);

fn runtime(name: &str, blocking_threads: usize) -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(blocking_threads)
        .thread_keep_alive(KEEP_ALIVE)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

/// Sends `count` requests (starting at plan index `first`) at `concurrency`; tallies outcomes.
async fn drive_load(
    base: String,
    first: u64,
    count: u64,
    concurrency: usize,
) -> BTreeMap<(Kind, Outcome), u64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for index in first..first + count {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let (client, base) = (client.clone(), base.clone());
        tasks.spawn(async move {
            let (kind, query) = plan(index);
            let outcome = one_request(&client, &base, kind, &query).await;
            drop(permit);
            (kind, outcome)
        });
    }
    let mut tally = BTreeMap::new();
    while let Some(result) = tasks.join_next().await {
        *tally.entry(result.unwrap()).or_insert(0) += 1;
    }
    tally
}

fn run(load: &Load) -> String {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Injected panics are expected: keep their messages out of the output.
    let default_hook = Arc::new(std::panic::take_hook());
    let hook = default_hook.clone();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .unwrap_or_default();
        if !message.starts_with("injected fault") {
            (*hook)(info);
        }
    }));

    let counters = &COUNTERS;
    let server_runtime = runtime("server", 64);
    let client_runtime = runtime("client", 4);

    let base = server_runtime.block_on(async {
        let upstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = format!("http://{}", upstream_listener.local_addr().unwrap());
        tokio::spawn(async move {
            let router = Router::new().route("/slow", get(slow_upstream));
            axum::serve(upstream_listener, router).await.unwrap();
        });
        let server = Server {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .build()
                .unwrap(),
            upstream,
        };
        let router = Router::new()
            .route("/work", get(work))
            .layer(middleware::from_fn(deadline))
            .layer(CatchPanicLayer::new())
            .with_state(server);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        base
    });
    let threads_idle = threads();

    // Warm-up, then the baseline: idle blocking threads gone.
    let warm = client_runtime.block_on(drive_load(
        base.clone(),
        1_000_000,
        load.warm_up,
        load.concurrency,
    ));
    assert!(
        warm.iter()
            .all(|(&(kind, outcome), _)| outcome == expected(kind)),
        "warm-up: {warm:?}"
    );
    let quiet = |counters: &Counters| {
        counters.created.load(Ordering::SeqCst) == counters.dropped.load(Ordering::SeqCst)
            && CAP.stats().in_use == 0
            && CAP.stats().waiting == 0
            && UPSTREAM_IN_FLIGHT.load(Ordering::SeqCst) == 0
            && blocking_first::stats().in_blocking == 0
            && blocking_first::stats().waiting_for_slot == 0
    };
    assert!(
        settle(Duration::from_secs(30), || quiet(counters)),
        "warm-up bodies never settled"
    );
    assert!(
        settle(Duration::from_secs(10), || threads() <= threads_idle),
        "threads after warm-up: {} (idle {threads_idle})",
        threads()
    );
    let threads_before = threads();
    let rss_before = rss_kib();
    let live_before = live_kib();
    CAP.reset_peak();
    counters.gauge_peak.store(0, Ordering::SeqCst);
    let created_before = counters.created.load(Ordering::SeqCst);
    let finished_before = counters.finished.load(Ordering::SeqCst);
    let held_before = counters.held.load(Ordering::SeqCst);

    // The measured load, under a global deadline.
    let monitor = Monitor::start();
    let started = Instant::now();
    let tally = client_runtime
        .block_on(async {
            tokio::time::timeout(
                load.deadline,
                drive_load(base.clone(), 0, load.requests, load.concurrency),
            )
            .await
        })
        .unwrap_or_else(|_| panic!("the load did not finish within {:?}", load.deadline));
    let elapsed = started.elapsed();

    // Quiescence: every body gone (cancelled ones finish their blocking stretch first), every
    // idle blocking thread expired.
    assert!(
        settle(Duration::from_secs(30), || quiet(counters)),
        "bodies never settled: created {}, dropped {}, {:?}",
        counters.created.load(Ordering::SeqCst),
        counters.dropped.load(Ordering::SeqCst),
        CAP.stats()
    );
    let (threads_peak, rss_peak, live_peak) = monitor.finish();
    let threads_settled = settle(Duration::from_secs(10), || threads() <= threads_before);
    let threads_after = threads();
    let rss_after = rss_kib();
    let live_after = live_kib();
    drop(client_runtime);
    drop(server_runtime);
    std::panic::set_hook(Box::new(move |info| (*default_hook)(info)));

    // Accounting: every request has exactly the outcome its kind calls for.
    let sent: u64 = tally.values().sum();
    let mut by_outcome: BTreeMap<Outcome, u64> = BTreeMap::new();
    for (&(_, outcome), &n) in &tally {
        *by_outcome.entry(outcome).or_insert(0) += n;
    }
    let wrong: Vec<_> = tally
        .iter()
        .filter(|&(&(kind, outcome), _)| outcome != expected(kind))
        .collect();
    assert_eq!(sent, load.requests, "requests lost: {tally:?}");
    assert!(wrong.is_empty(), "unexpected outcomes: {wrong:?}");

    // The cap.
    let cap = CAP.stats();
    let gauge_peak = counters.gauge_peak.load(Ordering::SeqCst);
    assert!(cap.peak <= CAP_SIZE, "the limit's peak {}", cap.peak);
    assert!(
        gauge_peak <= CAP_SIZE,
        "capped code ran on {gauge_peak} threads at once"
    );
    assert!(
        cap.peak >= 2,
        "bodies never overlapped (peak {}): not a load",
        cap.peak
    );

    // Resources: one per body, each dropped exactly once.
    let created = counters.created.load(Ordering::SeqCst) - created_before;
    let dropped_total = counters.dropped.load(Ordering::SeqCst);
    assert_eq!(
        counters.created.load(Ordering::SeqCst),
        dropped_total,
        "resources created vs dropped"
    );
    let finished = counters.finished.load(Ordering::SeqCst) - finished_before;
    let panics = by_outcome.get(&Outcome::ServerError).copied().unwrap_or(0);
    let cancelled = by_outcome.get(&Outcome::Cancelled).copied().unwrap_or(0);
    let deadlines = by_outcome.get(&Outcome::Unavailable).copied().unwrap_or(0);
    let unfinished = created as u64 - finished as u64;
    // Every body that did not reach a normal exit panicked, met the server's deadline or lost
    // its client.
    assert!(
        unfinished >= panics && unfinished <= panics + cancelled + deadlines,
        "{unfinished} bodies did not finish ({panics} panics, {deadlines} deadlines, \
         {cancelled} cancelled)"
    );
    // Handlers dropped while their body waited in `io!` or ran blocking code.
    let held = counters.held.load(Ordering::SeqCst) - held_before;
    assert!(
        unfinished > panics,
        "no body was dropped in flight: the cancellation path was not exercised"
    );
    assert_eq!(
        COUNTERS.ran_after_drop.load(Ordering::SeqCst),
        0,
        "a body dropped in blocking code ran past its next region boundary"
    );
    // A dropped request may be dropped before its body ever started.
    assert!(
        created as u64 <= load.requests && created as u64 >= load.requests - cancelled - deadlines
    );

    // Threads and memory back near the baseline.
    assert!(
        threads_settled,
        "threads: {threads_after} after, {threads_before} before"
    );
    assert!(
        live_after <= live_before + load.live_slack_kib,
        "live heap: {live_after} KiB after, {live_before} KiB before (peak {live_peak} KiB)"
    );
    assert!(
        rss_after <= rss_before + load.rss_slack_kib,
        "memory: {rss_after} KiB after, {rss_before} KiB before (peak {rss_peak} KiB)"
    );

    let mut report = String::new();
    let per_second = load.requests as f64 / elapsed.as_secs_f64();
    writeln!(
        report,
        "{} requests at concurrency {} in {:.2} s: {per_second:.0} requests/s",
        load.requests,
        load.concurrency,
        elapsed.as_secs_f64()
    )
    .unwrap();
    writeln!(
        report,
        "outcomes: {} ok, {} upstream timeouts (504), {} panics (500), {} server deadlines \
         (503), {} cancelled by the client, {} lost, {} hung",
        by_outcome.get(&Outcome::Ok).copied().unwrap_or(0),
        by_outcome
            .get(&Outcome::GatewayTimeout)
            .copied()
            .unwrap_or(0),
        panics,
        deadlines,
        cancelled,
        by_outcome.get(&Outcome::Unexpected).copied().unwrap_or(0),
        by_outcome.get(&Outcome::Hung).copied().unwrap_or(0),
    )
    .unwrap();
    writeln!(
        report,
        "bodies: {created} started, {unfinished} dropped before a normal exit (panics, \
         deadlines, disconnects), {held} of them in blocking code, which \
         finished its stretch first; resources created = dropped = {dropped_total} (warm-up included)"
    )
    .unwrap();
    writeln!(
        report,
        "cap {CAP_SIZE}: limit peak {}, gauge peak {gauge_peak}",
        cap.peak
    )
    .unwrap();
    writeln!(
        report,
        "threads: {threads_before} before, {threads_peak} peak, {threads_after} after \
         (blocking threads expire after {KEEP_ALIVE:?})"
    )
    .unwrap();
    writeln!(
        report,
        "RSS: {} MiB before (after an identical warm-up round), {} MiB peak, {} MiB after; live \
         heap: {} KiB before, {} MiB peak, {} KiB after",
        rss_before / 1024,
        rss_peak / 1024,
        rss_after / 1024,
        live_before,
        live_peak / 1024,
        live_after,
    )
    .unwrap();
    report
}

#[test]
fn a_thousand_requests_with_faults_are_all_accounted_for() {
    let report = run(&Load {
        requests: 1_000,
        concurrency: 100,
        warm_up: 1_000,
        deadline: Duration::from_secs(60),
        live_slack_kib: 4 * 1024,
        rss_slack_kib: 64 * 1024,
    });
    eprintln!("{report}");
}

#[test]
#[ignore = "20 000 requests: run with `cargo test --release -p blocking-first-tests --test faults -- --ignored --nocapture`"]
fn twenty_thousand_requests_with_faults_are_all_accounted_for() {
    let report = run(&Load {
        requests: 20_000,
        concurrency: 500,
        warm_up: 20_000,
        deadline: Duration::from_secs(300),
        live_slack_kib: 4 * 1024,
        rss_slack_kib: 64 * 1024,
    });
    eprintln!("{report}");
}
