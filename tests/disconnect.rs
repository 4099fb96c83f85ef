//! What axum (hyper) does with a handler whose client goes away while it runs long blocking
//! code, over HTTP/1.1 and HTTP/2: is the handler's future dropped, and how soon after the
//! client left does `is_cancelled()` turn true in its blocking code?
//!
//! Each case runs `ROUNDS` times and prints the median and the largest delay (`--nocapture`);
//! the assertions pin what a user may rely on. The figures in the cancellation guide come from
//! `cargo test --release -p blocking-first-tests --test disconnect -- --nocapture --test-threads 1`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use blocking_first::{Cancelled, blocking_first, check_cancelled};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tower_http::timeout::TimeoutLayer;

const ROUNDS: usize = 20;
/// The longest a handler here works if nobody cancels it.
const LONG: Duration = Duration::from_secs(10);

/// When the handler started and when its blocking code saw the cancellation (µs since `base`).
#[derive(Clone)]
struct Probe {
    base: Instant,
    started: Arc<AtomicU64>,
    saw: Arc<AtomicU64>,
    /// The handler ran to its end (nobody cancelled it).
    finished: Arc<AtomicU64>,
}

impl Probe {
    fn new() -> Probe {
        Probe {
            base: Instant::now(),
            started: Arc::default(),
            saw: Arc::default(),
            finished: Arc::default(),
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_micros() as u64 + 1
    }

    fn reset(&self) {
        for flag in [&self.started, &self.saw, &self.finished] {
            flag.store(0, Ordering::SeqCst);
        }
    }

    async fn started(&self) {
        while self.started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// How long after `left` the handler saw its cancellation; `None` if it did not within
    /// `wait`.
    async fn seen_after(&self, left: u64, wait: Duration) -> Option<Duration> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            let saw = self.saw.load(Ordering::SeqCst);
            if saw != 0 {
                return Some(Duration::from_micros(saw.saturating_sub(left)));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        None
    }
}

/// Works in 1 ms rows, checking before each, for up to `LONG`.
#[blocking_first]
async fn work(State(probe): State<Probe>) -> Result<&'static str, String> {
    probe.started.store(probe.now(), Ordering::SeqCst);
    let start = Instant::now();
    let rows = || -> Result<(), Cancelled> {
        while start.elapsed() < LONG {
            check_cancelled()?;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    };
    match rows() {
        Ok(()) => {
            probe.finished.store(probe.now(), Ordering::SeqCst);
            Ok("done")
        }
        Err(cancelled) => {
            probe.saw.store(probe.now(), Ordering::SeqCst);
            Err(cancelled.to_string())
        }
    }
}

async fn serve(probe: Probe, deadline: Option<Duration>) -> std::net::SocketAddr {
    let mut app = Router::new()
        .route("/work", get(work))
        // The request's body is not read: the handler starts while it still arrives.
        .route("/upload", post(work))
        .with_state(probe);
    if let Some(deadline) = deadline {
        // A server-side deadline: the handler's future is dropped when it runs out.
        app = app.layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            deadline,
        ));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn summary(name: &str, delays: &mut [Duration]) -> (Duration, Duration) {
    delays.sort();
    let (median, max) = (delays[delays.len() / 2], delays[delays.len() - 1]);
    println!(
        "{name}: is_cancelled() true after median {median:?}, max {max:?} \
         ({} rounds)",
        delays.len()
    );
    (median, max)
}

/// Runs `leave` (a client that starts a request, waits until the handler runs, then goes away
/// and returns when it left) `ROUNDS` times; returns the delays seen, or the rounds that never
/// saw it.
async fn rounds<F, Fut>(
    probe: &Probe,
    addr: std::net::SocketAddr,
    leave: F,
) -> Vec<Option<Duration>>
where
    F: Fn(std::net::SocketAddr, Probe) -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let mut seen = Vec::new();
    for _ in 0..ROUNDS {
        probe.reset();
        let left = leave(addr, probe.clone()).await;
        seen.push(probe.seen_after(left, Duration::from_millis(500)).await);
        // A handler nobody cancelled would hold a thread for `LONG`: wait for it to be gone
        // before the next round (cancelled ones already are).
        if seen.last().unwrap().is_none() {
            break;
        }
    }
    seen
}

fn all_seen(name: &str, seen: Vec<Option<Duration>>) -> (Duration, Duration) {
    let mut delays: Vec<Duration> = seen
        .iter()
        .map(|d| d.unwrap_or_else(|| panic!("{name}: a handler never saw its client leave")))
        .collect();
    summary(name, &mut delays)
}

#[test]
fn http1_a_client_that_closes_its_connection_cancels_the_handler() {
    common::multi_thread().block_on(async {
        let probe = Probe::new();
        let addr = serve(probe.clone(), None).await;
        let seen = rounds(&probe, addr, |addr, probe| async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /work HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            probe.started().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(stream);
            probe.now()
        })
        .await;
        let (_, max) = all_seen("HTTP/1.1, request complete, connection closed", seen);
        assert!(max < Duration::from_millis(200), "{max:?}");
    });
}

/// A client that sends headers and part of a body, waits until the handler runs, then closes
/// its connection; returns when it began sending, and when it left.
async fn leave_mid_body(addr: std::net::SocketAddr, probe: Probe) -> (u64, u64) {
    let sent = probe.now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\nsome")
        .await
        .unwrap();
    probe.started().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(stream);
    (sent, probe.now())
}

/// hyper reads nothing more from a connection whose request body the handler has not read, so
/// it does not see the client go: the handler runs on. (If this ever fails, hyper started to
/// notice: the cancellation guide must say so.)
#[test]
fn http1_a_client_that_closes_mid_body_is_not_noticed_while_the_body_is_unread() {
    common::multi_thread().block_on(async {
        let probe = Probe::new();
        let addr = serve(probe.clone(), None).await;
        let (_, left) = leave_mid_body(addr, probe.clone()).await;
        let seen = probe.seen_after(left, Duration::from_millis(500)).await;
        assert_eq!(seen, None, "hyper noticed the client leave mid-body");
        println!("HTTP/1.1, request body unread, connection closed: not cancelled in 500 ms");
    });
}

/// What does cancel it: a server-side deadline (`TimeoutLayer`) drops the handler's future.
#[test]
fn http1_a_timeout_layer_cancels_what_hyper_does_not_notice() {
    const DEADLINE: Duration = Duration::from_millis(100);
    common::multi_thread().block_on(async {
        let probe = Probe::new();
        let addr = serve(probe.clone(), Some(DEADLINE)).await;
        let mut late = Vec::new();
        for _ in 0..ROUNDS {
            probe.reset();
            // The deadline runs from when the server took the request, after the client began
            // sending it.
            let (sent, _) = leave_mid_body(addr, probe.clone()).await;
            let seen = probe.seen_after(sent, Duration::from_secs(2)).await;
            let seen = seen.expect("the deadline did not cancel the handler");
            assert!(seen >= DEADLINE, "cancelled before the deadline: {seen:?}");
            late.push(seen - DEADLINE);
        }
        let (_, max) = summary(
            "HTTP/1.1, request body unread, TimeoutLayer(100ms): after the deadline",
            &mut late,
        );
        assert!(max < Duration::from_millis(200), "{max:?}");
    });
}

#[test]
fn http2_a_client_that_gives_up_on_a_request_cancels_the_handler() {
    common::multi_thread().block_on(async {
        let probe = Probe::new();
        let addr = serve(probe.clone(), None).await;
        // Dropping the request resets its stream (RST_STREAM), as a browser does when the user
        // navigates away; the connection stays open for the next round.
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<Empty<axum::body::Bytes>>();
        let shared = Arc::new(Mutex::new(client));
        let seen = rounds(&probe, addr, |addr, probe| {
            let client = shared.lock().unwrap().clone();
            async move {
                let uri: axum::http::Uri = format!("http://{addr}/work").parse().unwrap();
                let request = tokio::spawn(async move { client.get(uri).await });
                probe.started().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                request.abort();
                probe.now()
            }
        })
        .await;
        let (_, max) = all_seen("HTTP/2, stream reset", seen);
        assert!(max < Duration::from_millis(200), "{max:?}");
    });
}
