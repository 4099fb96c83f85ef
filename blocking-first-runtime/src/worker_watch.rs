//! A tower layer that names the routes whose handlers block a runtime worker.
//!
//! A handler without `#[blocking_first]` that calls a synchronous driver, or blocking code
//! inside `io!`, compiles and runs, and stalls every task on its worker while it blocks. This
//! layer times each poll of the inner service's future (two clock reads) and, past a threshold,
//! logs one `WARN` per route per interval, at target `blocking_first::worker`, naming the request
//! and how long the poll took. Put it on an axum `Router` with `Router::layer`: axum applies it
//! to each route, so each route has its own interval.
//!
//! ```
//! use std::time::Duration;
//!
//! use axum::Router;
//! use axum::routing::get;
//! use blocking_first::tower::WorkerWatchLayer;
//!
//! async fn forgot_the_attribute() -> &'static str {
//!     std::thread::sleep(Duration::from_millis(50)); // blocks a runtime worker
//!     "done"
//! }
//!
//! let app: Router = Router::new()
//!     .route("/slow", get(forgot_the_attribute))
//!     .layer(WorkerWatchLayer::new()); // 10 ms, one warning per route every 10 s
//! ```
//!
//! Its poll also marks the thread as a runtime worker polling a request, which lets
//! `blocking_first::pool` warn about a connection taken there, outside every body.
//!
//! What it times is the future that produces the response: the extractors, the handler, and
//! `IntoResponse` (serializing a large `Json` runs there, on the worker, even for an annotated
//! handler, whose body ends before). Not timed: the response body's own polls after the headers
//! (a streaming body), and nothing tells it that a handler used `block_in_place` (a connection
//! taken inside one is reported, though `block_in_place` moved the worker's other tasks away).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use crate::limit::OnWorker;

/// Times each poll of the inner service's future and warns, once per route per interval, about
/// a poll that held its runtime worker longer than a threshold (10 ms unless set).
#[derive(Debug, Clone, Copy)]
pub struct WorkerWatchLayer {
    threshold: Duration,
    interval: Duration,
}

impl WorkerWatchLayer {
    /// Warns about polls longer than 10 ms, at most once per route every 10 s.
    pub fn new() -> WorkerWatchLayer {
        WorkerWatchLayer {
            threshold: Duration::from_millis(10),
            interval: Duration::from_secs(10),
        }
    }

    /// The longest poll that is not reported.
    pub fn threshold(mut self, threshold: Duration) -> WorkerWatchLayer {
        self.threshold = threshold;
        self
    }

    /// At most one warning per route per `interval`.
    pub fn interval(mut self, interval: Duration) -> WorkerWatchLayer {
        self.interval = interval;
        self
    }
}

impl Default for WorkerWatchLayer {
    fn default() -> WorkerWatchLayer {
        WorkerWatchLayer::new()
    }
}

impl<S> Layer<S> for WorkerWatchLayer {
    type Service = WorkerWatch<S>;

    fn layer(&self, inner: S) -> WorkerWatch<S> {
        WorkerWatch {
            inner,
            route: Arc::new(Route {
                threshold: self.threshold,
                interval: self.interval,
                last_warned: Mutex::new(None),
            }),
        }
    }
}

/// The service [`WorkerWatchLayer`] makes (one per route under axum's `Router::layer`).
#[derive(Debug, Clone)]
pub struct WorkerWatch<S> {
    inner: S,
    /// Shared by the clones axum makes per request, and by their requests' futures.
    route: Arc<Route>,
}

/// One route's settings, and when it last warned.
#[derive(Debug)]
struct Route {
    threshold: Duration,
    interval: Duration,
    last_warned: Mutex<Option<Instant>>,
}

impl<S, B> Service<Request<B>> for WorkerWatch<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = WorkerWatchFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Kept as they are (cheap clones): the text is made only for a warning.
        let request_line = (request.method().clone(), request.uri().clone());
        WorkerWatchFuture {
            future: self.inner.call(request),
            watch: Watch {
                request_line,
                route: self.route.clone(),
            },
        }
    }
}

/// What a request's future needs to report a long poll.
#[derive(Debug)]
struct Watch {
    request_line: (http::Method, http::Uri),
    route: Arc<Route>,
}

impl Watch {
    fn took(&self, took: Duration, now: Instant) {
        let route = &*self.route;
        if took <= route.threshold {
            return;
        }
        {
            let mut last = crate::sync::lock_std(&route.last_warned);
            if last.is_some_and(|at| now.duration_since(at) < route.interval) {
                return;
            }
            *last = Some(now);
        }
        let (method, uri) = &self.request_line;
        warn(&format!("{method} {}", uri.path()), took);
    }
}

fn warn(route: &str, took: Duration) {
    let message = format!(
        "{route} blocked a runtime worker for {took:.1?} in one poll: every task on that worker \
         waited meanwhile. Annotate its handler with #[blocking_first], or move the blocking \
         call out of io!; if it is annotated already, the time went to extracting the request or \
         serializing the response (a large body: build its bytes in blocking code)"
    );
    crate::stats::WORKER_WARNINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "blocking_first::worker",
        route,
        took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        "{message}"
    );
    #[cfg(not(feature = "tracing"))]
    eprintln!("WARN blocking_first::worker: {message}");
}

pin_project_lite::pin_project! {
    /// The future of [`WorkerWatch`]: the inner future, each poll timed.
    #[derive(Debug)]
    pub struct WorkerWatchFuture<F> {
        #[pin]
        future: F,
        watch: Watch,
    }
}

impl<F: Future> Future for WorkerWatchFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let start = Instant::now();
        let polled = {
            let _on_worker = OnWorker::enter();
            this.future.poll(cx)
        };
        let now = Instant::now();
        this.watch.took(now.duration_since(start), now);
        polled
    }
}
