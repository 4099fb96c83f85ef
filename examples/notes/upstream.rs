//! A slow, sometimes failing "third-party" link-preview service, started next to the notes
//! service so the example needs nothing else: `GET /preview?url=...` answers after a latency,
//! or fails with a 503 at a given rate.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::preview::Preview;
use crate::serve::{self, Running};

/// How the service behaves.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamConfig {
    /// How long every answer takes.
    pub latency: Duration,
    /// The share of requests answered with a 503, from 0.0 to 1.0.
    pub failure_rate: f64,
}

/// The running service and what it has seen.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    server: Running,
}

/// What the service has seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamStats {
    pub requests: u64,
    pub failures: u64,
    /// The most requests it was working on at the same time.
    pub peak_in_flight: usize,
}

#[derive(Debug)]
struct Counters {
    config: UpstreamConfig,
    seed: u64,
    requests: AtomicU64,
    failures: AtomicU64,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    /// The number of requests received, for tests that wait for one to arrive.
    arrived: tokio::sync::watch::Sender<u64>,
}

/// Starts the service on `listen` (port 0: any free port).
pub async fn start(listen: SocketAddr, config: UpstreamConfig) -> io::Result<Upstream> {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    let counters = Arc::new(Counters {
        config,
        seed,
        requests: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        peak_in_flight: AtomicUsize::new(0),
        arrived: tokio::sync::watch::Sender::new(0),
    });
    let router = Router::new()
        .route("/preview", get(preview))
        .with_state(counters.clone());
    let listener = TcpListener::bind(listen).await?;
    let server = serve::spawn(listener, router)?;
    Ok(Upstream {
        addr: server.addr,
        counters,
        server,
    })
}

impl Upstream {
    /// The base URL to give the notes service.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> UpstreamStats {
        UpstreamStats {
            requests: self.counters.requests.load(Ordering::SeqCst),
            failures: self.counters.failures.load(Ordering::SeqCst),
            peak_in_flight: self.counters.peak_in_flight.load(Ordering::SeqCst),
        }
    }

    /// Waits until the service has received `count` requests in all.
    #[cfg(test)]
    pub async fn wait_for_requests(&self, count: u64) {
        let mut arrived = self.counters.arrived.subscribe();
        arrived
            .wait_for(|&seen| seen >= count)
            .await
            .expect("the counters outlive the service");
    }

    /// Stops the service once the requests in flight are answered.
    pub async fn stop(self) -> io::Result<()> {
        self.server.stop().await
    }
}

#[derive(Debug, Deserialize)]
struct PreviewQuery {
    url: String,
}

async fn preview(
    State(counters): State<Arc<Counters>>,
    Query(query): Query<PreviewQuery>,
) -> Response {
    let number = counters.requests.fetch_add(1, Ordering::SeqCst);
    counters.arrived.send_modify(|seen| *seen += 1);
    let _in_flight = InFlight::enter(&counters);
    tracing::debug!(url = query.url, "upstream: preview requested");

    tokio::time::sleep(counters.config.latency).await;
    if counters.fails(number) {
        counters.failures.fetch_add(1, Ordering::SeqCst);
        let error = json!({ "error": "simulated failure" });
        (StatusCode::SERVICE_UNAVAILABLE, Json(error)).into_response()
    } else {
        Json(describe(&query.url)).into_response()
    }
}

/// Counts a request in flight until it is answered or its caller gives up.
struct InFlight<'a>(&'a Counters);

impl<'a> InFlight<'a> {
    fn enter(counters: &'a Counters) -> InFlight<'a> {
        let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counters.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(counters)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Counters {
    /// Whether request number `number` fails: a pseudo-random draw (splitmix64), so a rate of
    /// 0.1 fails about one request in ten.
    fn fails(&self, number: u64) -> bool {
        let mut x = self.seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        let draw = (x >> 11) as f64 / (1u64 << 53) as f64;
        draw < self.config.failure_rate
    }
}

/// A made-up preview: the service does not fetch anything, it only describes the URL.
fn describe(link: &str) -> Preview {
    match link.parse::<Uri>() {
        Ok(url) => {
            let host = url.host().unwrap_or("unknown host");
            Preview {
                url: link.to_string(),
                title: format!("{host}{}", url.path()),
                description: format!("A page on {host}"),
            }
        }
        Err(_) => Preview {
            url: link.to_string(),
            title: link.to_string(),
            description: "Not a URL".to_string(),
        },
    }
}
