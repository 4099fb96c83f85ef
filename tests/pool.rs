//! `blocking_first::pool`: an r2d2 pool sized by a `Limit`. End to end, a real axum server on
//! 127.0.0.1 whose handlers give their SQLite connection back before `io!` and take a fresh one
//! after, at four times the cap's concurrency; then the pool's size, the capacity it fixes, its
//! errors, and the warning for a body under another limit. (Own test binary: it installs the
//! process-wide tracing subscriber.)
//!
//! Holding a connection across `io!` or `.await` does not compile:
//! `ui/tests/ui/fail/pool_conn_across_io.rs`, `ui/tests/ui/fail/pool_conn_across_await.rs`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use blocking_first::blocking_first;
use blocking_first::limit::{CapacityErrorKind, Limit};
use blocking_first::pool::{BuildError, Conn, Pool};
use common::warnings::{Warning, install_subscriber};
use r2d2_sqlite::SqliteConnectionManager;

// ----------------------------------------------------------------------------------------------
// End to end.

const CAP: usize = 4;

/// The cap of the end-to-end test, and its pool's size.
static SERVED: Limit = Limit::new("served", CAP);

#[derive(Clone)]
struct App {
    db: Pool<SqliteConnectionManager>,
    /// The most connections ever out of the pool at once, sampled at every `get`.
    peak_connections: Arc<AtomicUsize>,
    /// Bodies waiting in `io!` now, and at most.
    in_io: Arc<AtomicUsize>,
    peak_in_io: Arc<AtomicUsize>,
}

impl App {
    fn connection(&self) -> Result<Conn<SqliteConnectionManager>, AppError> {
        let conn = self.db.get()?;
        let state = self.db.state();
        self.peak_connections.fetch_max(
            (state.connections - state.idle_connections) as usize,
            Ordering::SeqCst,
        );
        Ok(conn)
    }
}

#[derive(Debug)]
struct AppError(String);

impl From<r2d2::Error> for AppError {
    fn from(err: r2d2::Error) -> Self {
        AppError(format!("pool: {err}"))
    }
}

impl From<rusqlite::Error> for AppError {
    fn from(err: rusqlite::Error) -> Self {
        AppError(format!("sqlite: {err}"))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.0).into_response()
    }
}

/// Reads, gives the connection back, waits 250 ms in `io!` holding no slot and no connection,
/// then writes with a fresh connection. With the connection kept across the region instead
/// (which does not compile with `pool::Pool`), 2 × `CAP` requests at once stall until r2d2's
/// connection timeout.
#[blocking_first(limit = SERVED)]
async fn slow_view(State(app): State<App>, Path(id): Path<i64>) -> Result<String, AppError> {
    let before: i64 = app.connection()?.query_row(
        "select count(*) from visits where page = ?1",
        [id],
        |row| row.get(0),
    )?;
    io! {
        let now = app.in_io.fetch_add(1, Ordering::SeqCst) + 1;
        app.peak_in_io.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(250)).await;
        app.in_io.fetch_sub(1, Ordering::SeqCst);
    };
    app.connection()?
        .execute("insert into visits (page) values (?1)", [id])?;
    Ok(format!("{before}"))
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    address
}

fn file_manager(path: &std::path::Path) -> SqliteConnectionManager {
    SqliteConnectionManager::file(path)
        .with_init(|c| c.execute_batch("pragma journal_mode = wal; pragma busy_timeout = 5000;"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_times_the_cap_of_requests_across_io_all_succeed_within_the_cap_and_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let manager = file_manager(&dir.path().join("visits.sqlite"));
    let pool = tokio::task::spawn_blocking(move || {
        let builder = r2d2::Pool::builder().connection_timeout(Duration::from_secs(5));
        Pool::with_builder(&SERVED, builder, manager)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(pool.max_size(), CAP as u32);
    tokio::task::block_in_place(|| {
        pool.get()
            .unwrap()
            .execute_batch("create table visits (page integer not null)")
            .unwrap();
    });
    let app = App {
        db: pool,
        peak_connections: Arc::default(),
        in_io: Arc::default(),
        peak_in_io: Arc::default(),
    };
    let router = Router::new()
        .route("/pages/{id}", get(slow_view))
        .with_state(app.clone());
    let base = format!("http://{}", serve(router).await);
    SERVED.reset_peak();

    let client = reqwest::Client::new();
    let started = Instant::now();
    let requests: Vec<_> = (0..4 * CAP as i64)
        .map(|i| {
            let request = client.get(format!("{base}/pages/{}", i % 3)).send();
            tokio::spawn(async move {
                let response = request.await.unwrap();
                (response.status(), response.text().await.unwrap())
            })
        })
        .collect();
    let answers = tokio::time::timeout(Duration::from_secs(2), async {
        let mut answers = Vec::new();
        for request in requests {
            answers.push(request.await.unwrap());
        }
        answers
    })
    .await
    .unwrap_or_else(|_| panic!("not all requests answered within 2 s: the pool stalled"));
    let took = started.elapsed();
    eprintln!(
        "{} requests with a pool::Pool and a 250 ms io! region: {took:.2?}",
        answers.len()
    );

    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let peak_in_io = app.peak_in_io.load(Ordering::SeqCst);
    assert!(
        peak_in_io >= 2 * CAP,
        "only {peak_in_io} bodies waited in io! at once: not the load at which held \
         connections stall"
    );
    let stats = SERVED.stats();
    assert!(
        stats.peak <= CAP,
        "bodies in blocking code peaked at {}",
        stats.peak
    );
    let connections = app.peak_connections.load(Ordering::SeqCst);
    assert!(
        (1..=CAP).contains(&connections),
        "connections out of the pool peaked at {connections}"
    );
    let state = app.db.state();
    assert!(
        state.connections as usize <= CAP,
        "the pool opened {} connections",
        state.connections
    );
    let visits: i64 = tokio::task::block_in_place(|| {
        app.db
            .get()
            .unwrap()
            .query_row("select count(*) from visits", [], |row| row.get(0))
            .unwrap()
    });
    assert_eq!(
        visits,
        4 * CAP as i64,
        "every request wrote after its region"
    );
}

// ----------------------------------------------------------------------------------------------
// The pool's size and the capacity it fixes.

#[test]
fn the_pool_has_as_many_connections_as_its_limit_has_slots() {
    static SIZED: Limit = Limit::new("sized", 3);
    let pool = Pool::new(&SIZED, SqliteConnectionManager::memory()).unwrap();
    assert_eq!(pool.max_size(), 3);
    assert!(std::ptr::eq(pool.limit(), &SIZED));
    drop(pool);

    // A `max_size` given to the builder gives way to the limit's capacity.
    let builder = r2d2::Pool::builder().max_size(10).min_idle(Some(0));
    let pool = Pool::with_builder(&SIZED, builder, SqliteConnectionManager::memory()).unwrap();
    assert_eq!(pool.max_size(), 3);
    let taken: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    assert_eq!(pool.state().connections, 3);
    assert_eq!(pool.state().idle_connections, 0);
    drop(taken);
    assert_eq!(pool.state().idle_connections, 3);
}

#[test]
fn the_capacity_cannot_change_while_the_pool_or_one_of_its_connections_is_alive() {
    static FIXED: Limit = Limit::new("fixed", 2);
    let pool = Pool::new(&FIXED, SqliteConnectionManager::memory()).unwrap();
    let clone = pool.clone();
    let err = FIXED.set_capacity(5).unwrap_err();
    assert_eq!(err.kind(), CapacityErrorKind::SizesPool);
    assert!(
        err.to_string()
            .contains("set the capacity before building the pool"),
        "{err}"
    );

    drop(pool);
    let conn = clone.get().unwrap();
    drop(clone);
    // The last handle is gone, but a connection is still out.
    let err = FIXED.set_capacity(5).unwrap_err();
    assert_eq!(err.kind(), CapacityErrorKind::SizesPool);
    let one: i64 = conn.query_row("select 1", [], |row| row.get(0)).unwrap();
    assert_eq!(one, 1);
    drop(conn);

    FIXED.set_capacity(5).unwrap();
    assert_eq!(FIXED.capacity(), Some(5));
    let pool = Pool::new(&FIXED, SqliteConnectionManager::memory()).unwrap();
    assert_eq!(pool.max_size(), 5);
}

#[test]
fn a_limit_without_a_cap_cannot_size_a_pool() {
    static UNCAPPED: Limit = Limit::unbounded("uncapped");
    let err = Pool::new(&UNCAPPED, SqliteConnectionManager::memory()).unwrap_err();
    let BuildError::Limit(cause) = &err else {
        panic!("expected a limit error, got {err:?}");
    };
    assert_eq!(cause.kind(), CapacityErrorKind::Unbounded);
    assert_eq!(
        err.to_string(),
        "limit `uncapped` has no cap, so it cannot size a connection pool: give it one \
         (`Limit::new(\"uncapped\", N)` or `set_capacity(N)`) before building the pool"
    );
    // Nothing was left behind: the capacity can still be set, then a pool built.
    UNCAPPED.set_capacity(2).unwrap();
    let pool = Pool::new(&UNCAPPED, SqliteConnectionManager::memory()).unwrap();
    assert_eq!(pool.max_size(), 2);
}

#[test]
fn a_pool_that_cannot_open_its_connections_says_which_and_what_to_check() {
    static UNREACHABLE: Limit = Limit::new("unreachable", 2);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no such directory").join("db.sqlite");
    let builder = r2d2::Pool::builder().connection_timeout(Duration::from_millis(300));
    let err = Pool::with_builder(
        &UNREACHABLE,
        builder,
        SqliteConnectionManager::file(missing),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::Connect {
                limit: "unreachable",
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with("the pool sized by limit `unreachable` could not open its connections")
            && message.contains("unable to open database file")
            && message.contains("connection_timeout"),
        "{message}"
    );
    // The failed pool fixes nothing.
    UNREACHABLE.set_capacity(3).unwrap();
}

// ----------------------------------------------------------------------------------------------
// A body under another limit.

/// The warnings about the pool sized by `limit`.
fn warnings_for(limit: &str) -> Vec<Warning> {
    common::warnings::WARNINGS
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.fields.get("pool_limit").map(String::as_str) == Some(limit))
        .cloned()
        .collect()
}

static WARNED_POOL: Limit = Limit::new("warned-pool", 2);
static ELSEWHERE: Limit = Limit::new("elsewhere", 2);

#[blocking_first(limit = WARNED_POOL)]
async fn under_the_pools_limit(db: Pool<SqliteConnectionManager>) -> i64 {
    db.get()
        .unwrap()
        .query_row("select 1", [], |row| row.get(0))
        .unwrap()
}

#[blocking_first(limit = ELSEWHERE)]
async fn under_another_limit(db: Pool<SqliteConnectionManager>) -> i64 {
    let (a, b) = parallel! {
        db.get().unwrap().query_row("select 2", [], |row| row.get::<_, i64>(0)).unwrap(),
        db.get().unwrap().query_row("select 3", [], |row| row.get::<_, i64>(0)).unwrap(),
    };
    a + b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_taken_under_another_limit_warns_once_naming_the_limit_to_use() {
    install_subscriber();
    let db =
        tokio::task::spawn_blocking(|| Pool::new(&WARNED_POOL, SqliteConnectionManager::memory()))
            .await
            .unwrap()
            .unwrap();

    // Outside any body, and in a body under the pool's own limit: nothing to say.
    tokio::task::block_in_place(|| drop(db.get().unwrap()));
    assert_eq!(under_the_pools_limit(db.clone()).await, 1);
    assert!(warnings_for("warned-pool").is_empty());

    // Under another limit: one warning, however many connections are taken.
    assert_eq!(under_another_limit(db.clone()).await, 5);
    assert_eq!(under_another_limit(db.clone()).await, 5);
    let warnings = warnings_for("warned-pool");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let warning = &warnings[0];
    assert_eq!(warning.target, "blocking_first::pool");
    assert_eq!(warning.fields["body_limit"], "elsewhere");
    let message = &warning.fields["message"];
    assert!(
        message.contains("annotate the handler with #[blocking_first(limit = ..)]")
            && message.contains("the `static` Limit `warned-pool`"),
        "{message}"
    );
}

static TWO_CONNS: Limit = Limit::new("two-conns", 2);

#[blocking_first(limit = TWO_CONNS)]
async fn one_connection_at_a_time(db: Pool<SqliteConnectionManager>) -> i64 {
    let first: i64 = db
        .get()
        .unwrap()
        .query_row("select 1", [], |row| row.get(0))
        .unwrap();
    let second: i64 = db
        .get()
        .unwrap()
        .query_row("select 2", [], |row| row.get(0))
        .unwrap();
    first + second
}

#[blocking_first(limit = TWO_CONNS)]
async fn holds_one_while_taking_another(db: Pool<SqliteConnectionManager>) -> i64 {
    let held = db.get().unwrap();
    let second: i64 = db
        .get()
        .unwrap()
        .query_row("select 2", [], |row| row.get(0))
        .unwrap();
    let first: i64 = held.query_row("select 1", [], |row| row.get(0)).unwrap();
    first + second
}

/// A connection held while the same slot takes a second one (two in one body, or one held across
/// `parallel!` while a branch that found no free slot runs inline under the caller's slot) can
/// run a pool sized by the cap dry: the pool says so once, naming its limit. One connection at a
/// time says nothing, nor do two on a plain thread (start-up work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_under_one_slot_warns_once_naming_the_limit() {
    install_subscriber();
    let db =
        tokio::task::spawn_blocking(|| Pool::new(&TWO_CONNS, SqliteConnectionManager::memory()))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(one_connection_at_a_time(db.clone()).await, 3);
    tokio::task::spawn_blocking({
        let db = db.clone();
        move || {
            let (_a, _b) = (db.get().unwrap(), db.get().unwrap());
        }
    })
    .await
    .unwrap();
    assert!(warnings_for("two-conns").is_empty());
    assert_eq!(holds_one_while_taking_another(db.clone()).await, 3);
    assert_eq!(holds_one_while_taking_another(db.clone()).await, 3);
    let warnings = warnings_for("two-conns");
    assert_eq!(warnings.len(), 1, "once per pool: {warnings:?}");
    assert!(
        warnings[0].fields["message"].contains("already holds one, under one slot"),
        "{warnings:?}"
    );
}

static LEAKY: Limit = Limit::new("leaky", 2);

#[blocking_first(limit = LEAKY)]
async fn leaks_a_connection(db: Pool<SqliteConnectionManager>) -> std::thread::ThreadId {
    std::mem::forget(db.get().unwrap());
    std::thread::current().id()
}

#[blocking_first(limit = LEAKY)]
async fn takes_one(db: Pool<SqliteConnectionManager>) -> std::thread::ThreadId {
    let n: i64 = db
        .get()
        .unwrap()
        .query_row("select 1", [], |row| row.get(0))
        .unwrap();
    assert_eq!(n, 1);
    std::thread::current().id()
}

/// A connection leaked with `mem::forget` by one body is not "held" by the next body that runs
/// on the same loop thread: that body's one connection is not a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_connection_does_not_make_the_next_body_on_its_thread_warn() {
    install_subscriber();
    let db = Pool::build(&LEAKY, SqliteConnectionManager::memory())
        .await
        .unwrap();
    let leaked_on = leaks_a_connection(db.clone()).await;
    let mut same_thread = false;
    for _ in 0..50 {
        same_thread |= takes_one(db.clone()).await == leaked_on;
    }
    assert!(
        same_thread,
        "no later body ran on the leaking body's loop thread"
    );
    assert!(
        warnings_for("leaky").is_empty(),
        "{:?}",
        warnings_for("leaky")
    );
}
