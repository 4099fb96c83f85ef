//! A raw r2d2 connection held across `io!`, end to end: with as many connections as slots and
//! four times as many concurrent requests, the service starves until r2d2 times out. The
//! detector must say so within seconds and name the limit; the same service that gives its
//! connection back before the region must neither stall nor warn.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::handler::Handler;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use r2d2_sqlite::SqliteConnectionManager;

type Pool = r2d2::Pool<SqliteConnectionManager>;

const CAP: usize = 4;
const REQUESTS: usize = 16;
/// How long a blocked `pool.get()` waits before r2d2 gives up (its default is 30 s).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(3);

static HELD: Limit = Limit::new("held_across_io", CAP);
static GIVEN_BACK: Limit = Limit::new("given_back", CAP);

struct AppError(String);

impl<E: std::error::Error> From<E> for AppError {
    fn from(err: E) -> Self {
        AppError(err.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.0).into_response()
    }
}

/// The mistake: the connection stays checked out while the body waits in `io!`.
#[blocking_first(limit = HELD)]
async fn holds_its_connection(State(pool): State<Pool>) -> Result<String, AppError> {
    let conn = pool.get()?;
    let a: i64 = conn.query_row("select 41", [], |row| row.get(0))?;
    io! { tokio::time::sleep(Duration::from_millis(250)).await };
    let b: i64 = conn.query_row("select ?1 + 1", [a], |row| row.get(0))?;
    Ok(b.to_string())
}

/// The rule: give it back before the region, take a new one after.
#[blocking_first(limit = GIVEN_BACK)]
async fn gives_it_back(State(pool): State<Pool>) -> Result<String, AppError> {
    let a: i64 = pool.get()?.query_row("select 41", [], |row| row.get(0))?;
    io! { tokio::time::sleep(Duration::from_millis(250)).await };
    let b: i64 = pool
        .get()?
        .query_row("select ?1 + 1", [a], |row| row.get(0))?;
    Ok(b.to_string())
}

/// Everything logged at WARN, by any thread (the detector runs on its own).
fn warnings() -> &'static Mutex<Vec<u8>> {
    static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        struct Sink;
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                LOG.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(|| Sink)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
    &LOG
}

fn warned_about(limit: &str) -> Option<String> {
    let log = String::from_utf8(warnings().lock().unwrap().clone()).unwrap();
    log.lines()
        .find(|line| line.contains(&format!("limit `{limit}` looks starved")))
        .map(str::to_owned)
}

/// Serves `handler` at `/` with a fresh pool, on 127.0.0.1.
async fn serve<H, T>(handler: H) -> SocketAddr
where
    H: Handler<T, Pool>,
    T: 'static,
{
    let router = Router::new().route("/", get(handler)).with_state(pool());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn pool() -> Pool {
    r2d2::Pool::builder()
        .max_size(CAP as u32)
        .connection_timeout(CONNECTION_TIMEOUT)
        .build(SqliteConnectionManager::memory())
        .unwrap()
}

/// Sends `REQUESTS` requests at once; returns how many answered 200, and how long it all took.
/// Meanwhile polls the log for a warning about `limit`, and returns when it first appeared.
async fn burst(addr: SocketAddr, limit: &str) -> (usize, Duration, Option<Duration>) {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let requests: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let response = client.get(format!("http://{addr}/")).send().await.unwrap();
                response.status() == StatusCode::OK
            })
        })
        .collect();
    let mut warned = None;
    while !requests.iter().all(|request| request.is_finished()) {
        if warned.is_none() && warned_about(limit).is_some() {
            warned = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut ok = 0;
    for request in requests {
        ok += usize::from(request.await.unwrap());
    }
    let elapsed = start.elapsed();
    if warned.is_none() && warned_about(limit).is_some() {
        warned = Some(elapsed);
    }
    (ok, elapsed, warned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_pool_connection_held_across_io_is_reported_within_seconds() {
    warnings();
    let addr = serve(holds_its_connection).await;
    let (ok, elapsed, warned) = burst(addr, HELD.name()).await;
    eprintln!("held across io!: {ok}/{REQUESTS} ok in {elapsed:.2?}, warning after {warned:.2?}");
    let warned = warned.expect("the starvation detector never warned");
    assert!(
        warned < Duration::from_secs(5),
        "warned only after {warned:?}"
    );
    let line = warned_about(HELD.name()).unwrap();
    eprintln!("{line}");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("blocking_first::pool::Pool"), "{line}");
    // The stall itself is real: the blocked `get`s time out.
    assert!(
        ok < REQUESTS,
        "every request succeeded: no starvation to report"
    );
    assert!(blocking_first::stats().starvation_warnings >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_given_back_before_io_neither_stall_nor_warn() {
    warnings();
    let addr = serve(gives_it_back).await;
    let (ok, elapsed, warned) = burst(addr, GIVEN_BACK.name()).await;
    eprintln!("given back before io!: {ok}/{REQUESTS} ok in {elapsed:.2?}");
    assert_eq!(ok, REQUESTS);
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert_eq!(warned, None, "a well-behaved service was reported");
    assert!(GIVEN_BACK.stats().peak <= CAP);
}
