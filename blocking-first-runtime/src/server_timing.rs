//! A tower layer that adds a `Server-Timing` header to each response: where the request's
//! `#[blocking_first]` bodies spent their time, so a browser's developer tools show it (the
//! network panel's "Timing" tab) with no other tooling.
//!
//! ```
//! use axum::Router;
//! use axum::routing::get;
//! use blocking_first::blocking_first;
//! use blocking_first::tower::ServerTimingLayer;
//!
//! #[blocking_first]
//! async fn report() -> String {
//!     "42".to_owned() // a query, in a real handler
//! }
//!
//! let app: Router = Router::new()
//!     .route("/report", get(report))
//!     .layer(ServerTimingLayer::new());
//! // A response then carries, for example:
//! // server-timing: slot_wait;dur=0.000, pool_queue;dur=0.041, blocking;dur=1.240, io;dur=0.000, parked;dur=0.000
//! ```
//!
//! The five entries are the kinds of a body's time split (see `blocking_first::observe`), in
//! milliseconds, added up over the request's bodies: every annotated function the handler
//! awaits from its own async code. A body awaited by another body (a nested call) or a
//! `parallel` branch runs inside its caller's time and is not added again. Bodies that run side
//! by side (`tokio::join!` of two annotated calls) each add their own time, so the entries can
//! exceed the request's wall time. A request that ran no body gets no header. Recording must be
//! on (`observe::set_enabled`, on by default).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::record::timing::RequestTiming;

/// Adds `Server-Timing` to each response: the request's bodies' time split (see the module
/// docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTimingLayer {
    _private: (),
}

impl ServerTimingLayer {
    /// The layer.
    pub fn new() -> ServerTimingLayer {
        ServerTimingLayer::default()
    }
}

impl<S> Layer<S> for ServerTimingLayer {
    type Service = ServerTiming<S>;

    fn layer(&self, inner: S) -> ServerTiming<S> {
        ServerTiming { inner }
    }
}

/// The service of [`ServerTimingLayer`].
#[derive(Debug, Clone)]
pub struct ServerTiming<S> {
    inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for ServerTiming<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ServerTimingFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let timing = Arc::new(RequestTiming::default());
        let future = {
            // Bodies first polled while the inner service builds its future count too.
            let _current = RequestTiming::enter(&timing);
            self.inner.call(request)
        };
        ServerTimingFuture { future, timing }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ServerTiming`]: the inner future, with the request's timing current
    /// around each poll.
    #[derive(Debug)]
    pub struct ServerTimingFuture<F> {
        #[pin]
        future: F,
        timing: Arc<RequestTiming>,
    }
}

impl<F, ResBody, E> Future for ServerTimingFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let polled = {
            let _current = RequestTiming::enter(this.timing);
            this.future.poll(cx)
        };
        let Poll::Ready(Ok(mut response)) = polled else {
            return polled;
        };
        if let Some(value) = this
            .timing
            .header()
            .and_then(|text| HeaderValue::from_str(&text).ok())
        {
            response
                .headers_mut()
                .append(HeaderName::from_static("server-timing"), value);
        }
        Poll::Ready(Ok(response))
    }
}
