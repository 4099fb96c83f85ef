//! Shedding load: `ShedLayer` answers 503 with `Retry-After` exactly once the limit's queue holds
//! `max_waiting` jobs, without running the handler, lets a request below the bound through, and
//! composes with `TraceLayer`, `CatchPanicLayer` and a timeout.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use blocking_first::tower::ShedLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// One slot, and at most two requests waiting for it.
static SHED: Limit = Limit::new("shed", 1).with_max_waiting(2);

/// Closed until opened: handlers block on it in their blocking code.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn wait(&self) {
        let (open, changed) = &*self.0;
        let mut open = open.lock().unwrap();
        while !*open {
            open = changed.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }
}

#[blocking_first(limit = SHED)]
async fn held(State(gate): State<Gate>) -> &'static str {
    gate.wait();
    "done"
}

#[blocking_first(limit = SHED)]
async fn panics() -> &'static str {
    panic!("a handler bug")
}

async fn until(mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(10), "never happened");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_sheds_exactly_at_the_bound_and_composes_with_trace_panic_and_timeout_layers() {
    let gate = Gate::default();
    // Outside in: catch panics, trace every request (the 503s too), shed, then time out only
    // what was admitted.
    let app = Router::new()
        .route("/held", get(held))
        .route("/panics", get(panics))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(ShedLayer::new(&SHED).retry_after(Duration::from_secs(2)))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::new())
        .with_state(gate.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str| {
        let (client, url) = (client.clone(), format!("{url}{path}"));
        tokio::spawn(async move { client.get(url).send().await.unwrap() })
    };

    // A bug in a handler is still a 500, through every layer.
    assert_eq!(get("/panics").await.unwrap().status(), 500);

    // One request takes the only slot, two wait: the second of them was admitted one below the
    // bound.
    let holding = get("/held");
    until(|| SHED.stats().in_use == 1).await;
    let first_waiting = get("/held");
    until(|| SHED.stats().waiting == 1).await;
    assert!(!SHED.is_full(), "one below the bound is not full");
    let second_waiting = get("/held");
    until(|| SHED.stats().waiting == 2).await;
    assert!(SHED.is_full());

    // At the bound: 503 at once, with the Retry-After, and the handler never runs.
    let shed_before = SHED.stats().shed;
    let asked = Instant::now();
    let shed = get("/held").await.unwrap();
    let took = asked.elapsed();
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "2");
    assert!(took < Duration::from_millis(500), "the 503 took {took:?}");
    assert_eq!(SHED.stats().shed, shed_before + 1);
    assert_eq!(SHED.stats().waiting, 2, "the shed request never queued");

    // Everything admitted finishes.
    gate.open();
    for request in [holding, first_waiting, second_waiting] {
        let response = request.await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "done");
    }
    until(|| SHED.stats().waiting == 0).await;
    assert!(!SHED.is_full());
    assert_eq!(get("/held").await.unwrap().status(), 200, "admitted again");
}
