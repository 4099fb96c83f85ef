//! Tower layers for axum routers: [`ShedLayer`] sheds load with `503 Service Unavailable` while
//! a [`Limit`]'s queue is full; [`WorkerWatchLayer`] names the routes whose handlers block a
//! runtime worker; [`ServerTimingLayer`] adds a `Server-Timing` header with where each request's
//! blocking code spent its time.
//!
//! ```
//! use axum::Router;
//! use axum::routing::get;
//! use blocking_first::blocking_first;
//! use blocking_first::limit::Limit;
//! use blocking_first::tower::ShedLayer;
//!
//! /// 8 bodies in database code, at most 64 waiting for a slot; past that, 503 at once.
//! static DB: Limit = Limit::new("db", 8).with_max_waiting(64);
//!
//! #[blocking_first(limit = DB)]
//! async fn count() -> String {
//!     "42".to_owned() // a query, in a real handler
//! }
//!
//! let app: Router = Router::new()
//!     .route("/count", get(count))
//!     .layer(ShedLayer::new(&DB));
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode, header};
use tower_layer::Layer;
use tower_service::Service;

use crate::limit::Limit;

#[path = "worker_watch.rs"]
mod worker_watch;

#[path = "server_timing.rs"]
mod server_timing;

pub use server_timing::{ServerTiming, ServerTimingFuture, ServerTimingLayer};
pub use worker_watch::{WorkerWatch, WorkerWatchFuture, WorkerWatchLayer};

/// Wraps a service (an axum `Router`, a route) so that requests arriving while `limit` is full
/// ([`Limit::is_full`]) get `503 Service Unavailable` with a `Retry-After` header at once,
/// without reaching the service; other requests pass through unchanged.
///
/// Put it outside the layers that should see only admitted requests (a timeout), and inside
/// those that should see every request (a `TraceLayer` logging the 503s). A limit without
/// [`Limit::with_max_waiting`] is never full: the layer then passes everything.
#[derive(Debug, Clone, Copy)]
pub struct ShedLayer {
    limit: &'static Limit,
    retry_after: Duration,
}

impl ShedLayer {
    /// Sheds for `limit`, telling clients to retry after 1 s.
    pub fn new(limit: &'static Limit) -> ShedLayer {
        ShedLayer {
            limit,
            retry_after: Duration::from_secs(1),
        }
    }

    /// The `Retry-After` a shed client gets (whole seconds, at least 1).
    pub fn retry_after(mut self, retry_after: Duration) -> ShedLayer {
        self.retry_after = retry_after;
        self
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            limit: self.limit,
            retry_after: HeaderValue::from(self.retry_after.as_secs().max(1)),
        }
    }
}

/// The service [`ShedLayer`] makes.
#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    limit: &'static Limit,
    retry_after: HeaderValue,
}

impl<S, B, ResBody> Service<Request<B>> for Shed<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ShedFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.limit.is_full() {
            self.limit.count_shed();
            let mut response = Response::new(ResBody::default());
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, self.retry_after.clone());
            return ShedFuture::Shed {
                response: Some(response),
            };
        }
        ShedFuture::Inner {
            future: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Shed`]: the 503, or the inner service's future.
    #[project = ShedProjection]
    #[derive(Debug)]
    pub enum ShedFuture<F, ResBody> {
        /// Turned away.
        Shed { response: Option<Response<ResBody>> },
        /// Admitted.
        Inner { #[pin] future: F },
    }
}

impl<F, ResBody, E> Future for ShedFuture<F, ResBody>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShedProjection::Shed { response } => Poll::Ready(Ok(response
                .take()
                .expect("a shed response is polled to completion once"))),
            ShedProjection::Inner { future } => future.poll(cx),
        }
    }
}
