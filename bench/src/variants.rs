//! The one handler, written six ways: database read step, upstream call, database write.
//!
//! Every way uses the same pool of connections. The blocking sections each way controls are
//! counted by `App::blocking` (threads inside blocking code) and `App::handoffs` (moves of work to
//! another thread); the database counts its own connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use serde::Deserialize;
use tokio::runtime::Handle;

use crate::db::{Db, DbResult, noting_checkout};
use crate::gauge::Gauge;
use crate::timeline::{Clock, Part, Trace};
use crate::upstream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// (a) `#[blocking_first(limit = DB)]`, the upstream call in `io!`.
    BlockingFirst,
    /// (b) every database call in its own `spawn_blocking`.
    SpawnBlockingPerCall,
    /// (c) the whole body in one `spawn_blocking`, `Handle::block_on` for the upstream call.
    SpawnBlockingBlockOn,
    /// (d) every blocking step in `block_in_place`.
    BlockInPlace,
    /// (e) blocking calls right in the async handler, on the runtime's workers.
    BlockingInAsync,
    /// (f) a synchronous server: a fixed pool of threads, one request per thread at a time.
    ThreadPerRequest,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::BlockingFirst,
        Variant::SpawnBlockingPerCall,
        Variant::SpawnBlockingBlockOn,
        Variant::BlockInPlace,
        Variant::BlockingInAsync,
        Variant::ThreadPerRequest,
    ];

    pub fn letter(self) -> &'static str {
        match self {
            Variant::BlockingFirst => "a",
            Variant::SpawnBlockingPerCall => "b",
            Variant::SpawnBlockingBlockOn => "c",
            Variant::BlockInPlace => "d",
            Variant::BlockingInAsync => "e",
            Variant::ThreadPerRequest => "f",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Variant::BlockingFirst => "#[blocking_first]",
            Variant::SpawnBlockingPerCall => "spawn_blocking per call",
            Variant::SpawnBlockingBlockOn => "spawn_blocking + block_on",
            Variant::BlockInPlace => "block_in_place",
            Variant::BlockingInAsync => "blocking in async",
            Variant::ThreadPerRequest => "thread per request",
        }
    }

    /// The axum routes of the five variants served by tokio (`None` for the thread-per-request
    /// server, which has its own).
    pub fn router(self, app: Arc<App>) -> Option<Router> {
        let route = match self {
            Variant::BlockingFirst => get(with_blocking_first),
            Variant::SpawnBlockingPerCall => get(spawn_blocking_per_call),
            Variant::SpawnBlockingBlockOn => get(spawn_blocking_block_on),
            Variant::BlockInPlace => get(with_block_in_place),
            Variant::BlockingInAsync => get(blocking_in_async),
            Variant::ThreadPerRequest => return None,
        };
        Some(Router::new().route("/", route).with_state(app))
    }
}

/// The cap of variant (a), set to the pool size at start-up: at most this many bodies in
/// blocking code, so at most this many connections taken.
pub static DB: Limit = Limit::new("db", 8);

/// What a handler needs, and the counters of one cell of the benchmark.
pub struct App {
    pub db: Arc<Db>,
    pub upstream: upstream::Client,
    pub upstream_addr: SocketAddr,
    reads: usize,
    rows: i64,
    /// Threads inside the blocking sections the handler controls.
    pub blocking: Gauge,
    /// Work moved to another thread by `spawn_blocking` or `block_in_place` (variants b–d).
    pub handoffs: AtomicU64,
    /// Requests that reached a handler.
    pub served: AtomicU64,
    /// `--timeline`: where (b) records each request's clock reads (`None`: it reads no clock).
    pub timeline: Option<Arc<Trace>>,
}

impl App {
    pub fn new(db: Arc<Db>, upstream_addr: SocketAddr, reads: usize, rows: i64) -> App {
        App {
            db,
            upstream: upstream::Client::new(upstream_addr),
            upstream_addr,
            reads,
            rows,
            blocking: Gauge::default(),
            handoffs: AtomicU64::new(0),
            served: AtomicU64::new(0),
            timeline: None,
        }
    }

    /// The id of the `k`-th row the read step looks at.
    fn key(&self, id: i64, k: usize) -> i64 {
        (id - 1 + k as i64).rem_euclid(self.rows) + 1
    }

    /// The read step: `reads` blocking queries.
    pub fn read_step(&self, id: i64) -> DbResult<i64> {
        (0..self.reads).try_fold(0, |sum, k| Ok(sum + self.db.read(self.key(id, k))?))
    }

    /// The write step: one blocking query (adds the upstream's answer to the row).
    pub fn write_step(&self, id: i64, delta: i64) -> DbResult<()> {
        self.db.write(id, delta)
    }

    fn count_request(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    fn count_handoff(&self) {
        self.handoffs.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Deserialize)]
pub struct Req {
    pub id: i64,
}

/// A failed request: 500 with the reason.
#[derive(Debug)]
pub struct Failure(String);

impl From<String> for Failure {
    fn from(reason: String) -> Failure {
        Failure(reason)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.0).into_response()
    }
}

/// (a) Blocking code by default; the upstream call is the one async region.
#[blocking_first(limit = DB)]
async fn with_blocking_first(
    State(app): State<Arc<App>>,
    Query(req): Query<Req>,
) -> Result<String, Failure> {
    app.count_request();
    let read = {
        let _blocking = app.blocking.enter();
        app.read_step(req.id)?
    };
    let extra = io! { app.upstream.call().await? };
    let _blocking = app.blocking.enter();
    app.write_step(req.id, extra)?;
    Ok((read + extra).to_string())
}

/// Runs `step` on tokio's blocking pool, counted as a handoff and as a blocking section.
async fn off_thread<T: Send + 'static>(
    app: &Arc<App>,
    step: impl FnOnce(&App) -> DbResult<T> + Send + 'static,
) -> Result<T, Failure> {
    app.count_handoff();
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let _blocking = app.blocking.enter();
        step(&app)
    })
    .await
    .map_err(|err| Failure(err.to_string()))?
    .map_err(Failure)
}

/// (b) Each database call hops to the blocking pool and back. With `--timeline`, it reads the
/// clock around each hop, each checkout and the upstream call.
async fn spawn_blocking_per_call(
    State(app): State<Arc<App>>,
    Query(req): Query<Req>,
) -> Result<String, Failure> {
    app.count_request();
    let mut clock = app.timeline.as_ref().map(|_| Clock::start());
    let mut read = 0;
    for k in 0..app.reads {
        let key = app.key(req.id, k);
        read += off_thread_timed(&app, clock.as_mut(), move |app| app.db.read(key)).await?;
    }
    let called = clock.as_ref().map(|_| Instant::now());
    let extra = app.upstream.call().await?;
    if let (Some(clock), Some(called)) = (clock.as_mut(), called) {
        clock.mark(Part::Io, called, Instant::now());
    }
    off_thread_timed(&app, clock.as_mut(), move |app| {
        app.write_step(req.id, extra)
    })
    .await?;
    if let (Some(trace), Some(clock)) = (&app.timeline, clock) {
        trace
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(clock.finish());
    }
    Ok((read + extra).to_string())
}

/// [`off_thread`], and with a `clock` its parts: queued for a blocking thread until the closure
/// starts, waiting for a connection until the checkout got one, then the query.
async fn off_thread_timed<T: Send + 'static>(
    app: &Arc<App>,
    clock: Option<&mut Clock>,
    step: impl FnOnce(&App) -> DbResult<T> + Send + 'static,
) -> Result<T, Failure> {
    let Some(clock) = clock else {
        return off_thread(app, step).await;
    };
    let called = Instant::now();
    let (value, began, checkout, done) = off_thread(app, move |app| {
        let began = Instant::now();
        let (value, checkout) = noting_checkout(|| step(app));
        Ok((value, began, checkout, Instant::now()))
    })
    .await?;
    let checkout = checkout.unwrap_or(began);
    clock.mark(Part::PoolQueue, called, began);
    clock.mark(Part::SlotWait, began, checkout);
    clock.mark(Part::Blocking, checkout, done);
    value.map_err(Failure)
}

/// (c) One hop for the whole body; the upstream call blocks its thread in `block_on`.
async fn spawn_blocking_block_on(
    State(app): State<Arc<App>>,
    Query(req): Query<Req>,
) -> Result<String, Failure> {
    app.count_request();
    let runtime = Handle::current();
    off_thread(&app, move |app| {
        let read = app.read_step(req.id)?;
        let extra = runtime.block_on(app.upstream.call())?;
        app.write_step(req.id, extra)?;
        Ok((read + extra).to_string())
    })
    .await
}

/// Runs `step` in `block_in_place`, counted as a handoff and as a blocking section.
fn in_place<T>(app: &App, step: impl FnOnce(&App) -> DbResult<T>) -> Result<T, Failure> {
    app.count_handoff();
    tokio::task::block_in_place(|| {
        let _blocking = app.blocking.enter();
        step(app)
    })
    .map_err(Failure)
}

/// (d) Each blocking step hands the worker's core to another thread for its duration.
async fn with_block_in_place(
    State(app): State<Arc<App>>,
    Query(req): Query<Req>,
) -> Result<String, Failure> {
    app.count_request();
    let read = in_place(&app, |app| app.read_step(req.id))?;
    let extra = app.upstream.call().await?;
    in_place(&app, |app| app.write_step(req.id, extra))?;
    Ok((read + extra).to_string())
}

/// (e) The accident: blocking calls on the runtime's worker threads.
async fn blocking_in_async(
    State(app): State<Arc<App>>,
    Query(req): Query<Req>,
) -> Result<String, Failure> {
    app.count_request();
    let read = {
        let _blocking = app.blocking.enter();
        app.read_step(req.id)?
    };
    let extra = app.upstream.call().await?;
    let _blocking = app.blocking.enter();
    app.write_step(req.id, extra)?;
    Ok((read + extra).to_string())
}

/// (f) The body of the thread-per-request server: plain blocking code, blocking upstream client.
pub fn thread_per_request(app: &App, id: i64) -> DbResult<String> {
    app.count_request();
    let read = app.read_step(id)?;
    let extra = upstream::call_blocking(app.upstream_addr)?;
    app.write_step(id, extra)?;
    Ok((read + extra).to_string())
}
