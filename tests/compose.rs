//! `#[blocking_first]` among what surrounds handlers in a real service: `#[axum::debug_handler]`
//! in both orders, `#[tracing::instrument]` below it, other attributes, methods on `Arc<Self>`,
//! generic handlers, `impl IntoResponse`, `State` substates, and a `Router` with middleware
//! layers (tracing, panic catching, a `from_fn` middleware, a timeout) serving real HTTP requests
//! on 127.0.0.1. (Own test binary: it installs the process-wide tracing subscriber.)

// Attributes written on a #[blocking_first] function must reach the expanded function: with
// these lints denied, `attributed` below only compiles if its `allow`s were passed through.
#![deny(unused_variables, unused_mut)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use blocking_first::blocking_first;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

/// Panics unless this is a blocking-pool thread (where `Handle::block_on` works).
fn assert_blocking_thread() {
    Handle::current().block_on(async {});
}

/// Whether this thread is a blocking-pool thread, without panicking.
fn on_blocking_thread() -> bool {
    std::panic::catch_unwind(assert_blocking_thread).is_ok()
}

fn install_subscriber() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry()).unwrap();
        // `on_blocking_thread` panics on purpose on workers: keep those out of the output.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.contains("Cannot start a runtime from within a runtime")
                && message != "handler bug"
            {
                default(info);
            }
        }));
    });
}

/// The name of the current span, as code at this point sees it.
fn span_name() -> &'static str {
    Span::current().metadata().map_or("<none>", |m| m.name())
}

/// Waits (polling) until `cond` holds, failing after 10 s.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not reached in 10 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

// ----------------------------------------------------------------------------------------------
// State with substates.

#[derive(Clone, FromRef)]
struct AppState {
    config: Config,
    visits: Visits,
    probes: Probes,
}

#[derive(Clone)]
struct Config {
    greeting: String,
}

#[derive(Clone, Default)]
struct Visits(Arc<AtomicUsize>);

/// What the slow and panicking handlers report about themselves.
#[derive(Clone, Default)]
struct Probes {
    started: Arc<AtomicBool>,
    ran_after_region: Arc<AtomicBool>,
    drops: Arc<AtomicUsize>,
    dropped_on_worker: Arc<AtomicBool>,
    spans: Arc<Mutex<Vec<&'static str>>>,
}

/// Owned by a body: counts its drops and where they happened.
struct Guard(Probes);

impl Drop for Guard {
    fn drop(&mut self) {
        // (No check while unwinding: a second panic there would abort.)
        if !std::thread::panicking() && !on_blocking_thread() {
            self.0.dropped_on_worker.store(true, Ordering::SeqCst);
        }
        self.0.drops.fetch_add(1, Ordering::SeqCst);
    }
}

fn state() -> AppState {
    AppState {
        config: Config {
            greeting: "hello".into(),
        },
        visits: Visits::default(),
        probes: Probes::default(),
    }
}

// ----------------------------------------------------------------------------------------------
// Handlers.

/// `#[axum::debug_handler]` below `#[blocking_first]`: it checks the expanded function.
#[blocking_first]
#[axum::debug_handler]
async fn debug_below(State(config): State<Config>, Path(name): Path<String>) -> String {
    assert_blocking_thread();
    let suffix = io! {
        tokio::task::yield_now().await;
        "!"
    };
    format!("{} {name}{suffix}", config.greeting)
}

/// `#[axum::debug_handler]` above `#[blocking_first]`: it checks the function as written.
///
/// In this order the body may not contain `io!` or `parallel!`: `debug_handler` copies the body
/// as written into a check function of its own, where no `#[blocking_first]` rewrites the
/// regions (`cannot find macro `io``). A plain `.await` is fine.
#[axum::debug_handler]
#[blocking_first]
async fn debug_above(State(visits): State<Visits>, Json(body): Json<Greeting>) -> Json<Greeting> {
    assert_blocking_thread();
    let count = visits.0.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::task::yield_now().await;
    assert_blocking_thread();
    Json(Greeting {
        text: format!("{} #{count}", body.text),
    })
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
struct Greeting {
    text: String,
}

/// Substates taken with `FromRef`, several `State` extractors in one handler.
#[blocking_first]
async fn substates(
    State(config): State<Config>,
    State(visits): State<Visits>,
    State(whole): State<AppState>,
) -> String {
    let before = visits.0.load(Ordering::SeqCst);
    let same = Arc::ptr_eq(&visits.0, &whole.visits.0);
    format!("{} {before} {same}", config.greeting)
}

/// A generic handler, routed at a concrete type.
#[blocking_first]
async fn tagged<T>(Json(value): Json<T>) -> Json<Tagged<T>>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let size = serde_json::to_string(&value).unwrap().len();
    let tag = io! {
        tokio::task::yield_now().await;
        format!("{size} bytes")
    };
    Json(Tagged { tag, value })
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Tagged<T> {
    tag: String,
    value: T,
}

/// `impl IntoResponse`, with an early return of the same type.
#[blocking_first]
async fn teapot(Path(n): Path<u32>) -> impl IntoResponse {
    if n == 0 {
        return (
            StatusCode::IM_A_TEAPOT,
            [("x-kind", "zero")],
            "zero".to_string(),
        );
    }
    let doubled = io! {
        tokio::task::yield_now().await;
        n * 2
    };
    (StatusCode::OK, [("x-kind", "number")], doubled.to_string())
}

/// A service whose methods are handlers' bodies.
struct Catalog {
    items: Vec<String>,
    lookups: AtomicUsize,
}

impl Catalog {
    /// Shared receiver: the body owns an `Arc` of the service.
    #[blocking_first]
    async fn lookup(self: Arc<Self>, index: usize) -> Option<String> {
        assert_blocking_thread();
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let item = self.items.get(index)?.clone();
        io! {
            tokio::task::yield_now().await;
            Some(format!("{item} ({} lookups)", self.lookups.load(Ordering::SeqCst)))
        }
    }

    /// Receiver by value.
    #[blocking_first]
    async fn into_summary(self) -> String {
        let count = io! {
            tokio::task::yield_now().await;
            self.items.len()
        };
        format!("{count} items, {} lookups", self.lookups.into_inner())
    }
}

/// `#[tracing::instrument]` below `#[blocking_first]`: the span covers the whole driven body,
/// blocking code and `io!` code alike.
#[blocking_first]
#[tracing::instrument(name = "load_item", skip(catalog), fields(kind = "catalog"))]
async fn instrumented(catalog: Arc<Catalog>, index: usize) -> (&'static str, &'static str) {
    assert_blocking_thread();
    assert!(index < catalog.items.len());
    let blocking = span_name();
    let in_io = io! {
        tokio::time::sleep(Duration::from_millis(2)).await;
        span_name()
    };
    (blocking, in_io)
}

/// `#[tracing::instrument(err)]` below `#[blocking_first]`, with an early `return`.
#[blocking_first]
#[tracing::instrument(err)]
async fn instrumented_fallible(n: u32) -> Result<u32, String> {
    if n == 0 {
        return Err("zero".into());
    }
    let n = io! {
        tokio::task::yield_now().await;
        n + 1
    };
    Ok(n)
}

/// Documented, with lints allowed above and below the attribute, and `must_use`.
#[allow(unused_variables)]
#[must_use = "the answer is the point"]
#[blocking_first]
#[cfg_attr(all(), allow(unused_mut))]
async fn attributed(x: u32) -> u32 {
    let unused = 1;
    let mut y = x;
    io! { tokio::task::yield_now().await };
    y + 1
}

/// Slow in an `io!` region: the timeout middleware gives up first.
#[blocking_first]
async fn slow(State(probes): State<Probes>) -> &'static str {
    let _guard = Guard(probes.clone());
    probes.spans.lock().unwrap().push(span_name());
    probes.started.store(true, Ordering::SeqCst);
    io! { tokio::time::sleep(Duration::from_secs(30)).await };
    probes.ran_after_region.store(true, Ordering::SeqCst);
    "finished"
}

/// Panics in blocking code after a region.
#[blocking_first]
async fn panics(State(probes): State<Probes>) -> &'static str {
    let _guard = Guard(probes.clone());
    io! { tokio::task::yield_now().await };
    probes.spans.lock().unwrap().push(span_name());
    panic!("handler bug");
}

/// Sees the request span of `TraceLayer` in blocking code and in `io!` code.
#[blocking_first]
async fn traced() -> String {
    assert_blocking_thread();
    let blocking = span_name();
    let in_io = io! {
        tokio::time::sleep(Duration::from_millis(2)).await;
        span_name()
    };
    format!("{blocking} {in_io}")
}

/// A `from_fn` middleware: counts requests and tags responses.
async fn tag(State(visits): State<Visits>, request: Request, next: Next) -> Response {
    visits.0.fetch_add(1, Ordering::SeqCst);
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert("x-tagged", HeaderValue::from_static("yes"));
    response
}

/// A timeout layer as a `from_fn` middleware: 504 after 300 ms, dropping the handler's future.
async fn timeout(request: Request, next: Next) -> Response {
    match tokio::time::timeout(Duration::from_millis(300), next.run(request)).await {
        Ok(response) => response,
        Err(_) => StatusCode::GATEWAY_TIMEOUT.into_response(),
    }
}

fn router(state: AppState, catalog: Arc<Catalog>) -> Router {
    let lookup = move |Path(index): Path<usize>| {
        let catalog = catalog.clone();
        async move { catalog.lookup(index).await.ok_or(StatusCode::NOT_FOUND) }
    };
    Router::new()
        .route("/debug/below/{name}", get(debug_below))
        .route("/debug/above", post(debug_above))
        .route("/substates", get(substates))
        .route("/tagged", post(tagged::<Greeting>))
        .route("/teapot/{n}", get(teapot))
        .route("/catalog/{index}", get(lookup))
        .route("/slow", get(slow))
        .route("/panics", get(panics))
        .route("/traced", get(traced))
        .layer(middleware::from_fn_with_state(state.visits.clone(), tag))
        .layer(middleware::from_fn(timeout))
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

fn catalog() -> Arc<Catalog> {
    Arc::new(Catalog {
        items: vec!["lamp".into(), "desk".into()],
        lookups: AtomicUsize::new(0),
    })
}

async fn get_text(client: &reqwest::Client, url: String) -> (StatusCode, String) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

tokio::task_local! {
    static REQUEST_ID: u32;
}

thread_local! {
    static CALLER_THREAD_VALUE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// What a body sees of the caller's task-local and thread-local values.
#[blocking_first]
async fn locals_seen() -> (Option<u32>, u32, Option<u32>) {
    assert_blocking_thread();
    let task_local_in_blocking = REQUEST_ID.try_with(|id| *id).ok();
    let thread_local_in_blocking = CALLER_THREAD_VALUE.get();
    let task_local_in_io = io! {
        tokio::time::sleep(Duration::from_millis(2)).await;
        // Bound here: a final expression without `.await` would run after the switch back.
        let id = REQUEST_ID.try_with(|id| *id).ok();
        id
    };
    (
        task_local_in_blocking,
        thread_local_in_blocking,
        task_local_in_io,
    )
}

// ----------------------------------------------------------------------------------------------
// Tests.

#[test]
fn task_locals_and_thread_locals_are_not_carried_into_blocking_code() {
    for runtime in [
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    ] {
        runtime.block_on(async {
            CALLER_THREAD_VALUE.set(7);
            let seen = REQUEST_ID.scope(42, locals_seen()).await;
            // Blocking code runs on a pool thread, outside the caller's task: neither value is
            // there. `io!` code that has suspended is polled by the caller's task again, inside
            // the task-local's scope.
            assert_eq!(seen, (None, 0, Some(42)));
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_handler_in_both_orders_compiles_and_serves() {
    install_subscriber();
    let state = state();
    let base = serve(router(state.clone(), catalog())).await;
    let client = reqwest::Client::new();
    assert_eq!(
        get_text(&client, format!("{base}/debug/below/ada")).await,
        (StatusCode::OK, "hello ada!".to_string())
    );
    // The middleware and the handler both count: 1 for the first request, then 2 per request.
    for expected in ["hi #3", "hi #5"] {
        let response = client
            .post(format!("{base}/debug/above"))
            .json(&Greeting { text: "hi".into() })
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let greeting: Greeting = response.json().await.unwrap();
        assert_eq!(greeting.text, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substates_generic_handlers_and_impl_into_response_serve() {
    install_subscriber();
    let state = state();
    let base = serve(router(state.clone(), catalog())).await;
    let client = reqwest::Client::new();

    // The middleware counted this request before the handler read the count.
    assert_eq!(
        get_text(&client, format!("{base}/substates")).await,
        (StatusCode::OK, "hello 1 true".to_string())
    );

    let response = client
        .post(format!("{base}/tagged"))
        .json(&Greeting { text: "hey".into() })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Tagged<Greeting>>().await.unwrap(),
        Tagged {
            tag: "14 bytes".into(),
            value: Greeting { text: "hey".into() }
        }
    );

    for (n, status, kind, body) in [
        (0, StatusCode::IM_A_TEAPOT, "zero", "zero"),
        (21, StatusCode::OK, "number", "42"),
    ] {
        let response = client
            .get(format!("{base}/teapot/{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
        assert_eq!(response.headers()["x-kind"], kind);
        assert_eq!(response.headers()["x-tagged"], "yes");
        assert_eq!(response.text().await.unwrap(), body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_on_arc_self_and_self_serve_and_run() {
    install_subscriber();
    let catalog = catalog();
    let base = serve(router(state(), catalog.clone())).await;
    let client = reqwest::Client::new();
    assert_eq!(
        get_text(&client, format!("{base}/catalog/1")).await,
        (StatusCode::OK, "desk (1 lookups)".to_string())
    );
    assert_eq!(
        get_text(&client, format!("{base}/catalog/7")).await.0,
        StatusCode::NOT_FOUND
    );
    // The server's router holds a clone; a fresh catalog shows the by-value receiver.
    let own = Arc::into_inner(self::catalog()).unwrap();
    assert_eq!(own.into_summary().await, "2 items, 0 lookups");
    assert_eq!(catalog.lookups.load(Ordering::SeqCst), 2);
}

#[test]
fn tracing_instrument_below_blocking_first_spans_the_whole_body() {
    install_subscriber();
    for runtime in [
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    ] {
        runtime.block_on(async {
            assert_eq!(instrumented(catalog(), 1).await, ("load_item", "load_item"));
            assert_eq!(instrumented_fallible(0).await, Err("zero".to_string()));
            assert_eq!(instrumented_fallible(1).await, Ok(2));
        });
    }
}

#[tokio::test(flavor = "current_thread")]
async fn other_attributes_pass_through() {
    // `must_use` holds: the value is used. The lint attributes are checked at compile time by
    // this file's `#![deny(unused_variables, unused_mut)]`.
    let answer = attributed(41).await;
    assert_eq!(answer, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_layers_wrap_bodies_tracing_panics_and_timeouts() {
    install_subscriber();
    let state = state();
    let probes = state.probes.clone();
    let base = serve(router(state.clone(), catalog())).await;
    let client = reqwest::Client::new();

    // TraceLayer's request span is current in blocking code and in io code.
    let (status, body) = get_text(&client, format!("{base}/traced")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "request request"));

    // A panic becomes a 500; the body's locals are dropped once; the server keeps serving.
    let response = client.get(format!("{base}/panics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(probes.drops.load(Ordering::SeqCst), 1);
    assert_eq!(
        get_text(&client, format!("{base}/teapot/1")).await.0,
        StatusCode::OK
    );

    // The timeout drops the handler while it waits in `io!`: no code after the region runs, its
    // locals are dropped once, on a blocking thread.
    let started = Instant::now();
    let response = client.get(format!("{base}/slow")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(probes.started.load(Ordering::SeqCst));
    wait_until("the slow body dropped", || {
        probes.drops.load(Ordering::SeqCst) == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        probes.drops.load(Ordering::SeqCst),
        2,
        "dropped exactly once"
    );
    assert!(!probes.ran_after_region.load(Ordering::SeqCst));
    assert!(!probes.dropped_on_worker.load(Ordering::SeqCst));
    assert_eq!(*probes.spans.lock().unwrap(), ["request", "request"]);

    // The `from_fn` middleware saw every request, including the failed ones.
    assert_eq!(state.visits.0.load(Ordering::SeqCst), 4);
}
