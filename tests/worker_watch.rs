//! The mistakes that compile and block a runtime worker, named where they happen: a route whose
//! handler lost its attribute, blocking code inside `io!` (both under `WorkerWatchLayer`), and a
//! pooled connection taken on a worker outside every body. A clean service says nothing. (Own
//! test binary: it installs the process-wide subscriber that captures the warnings.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use blocking_first::pool::Pool;
use blocking_first::tower::WorkerWatchLayer;
use common::warnings::{Warning, install_subscriber};
use r2d2_sqlite::SqliteConnectionManager;

fn warnings(target: &str) -> Vec<Warning> {
    common::warnings::at(target)
}

const BLOCK: Duration = Duration::from_millis(40);

static WATCHED_DB: Limit = Limit::new("watched-db", 2);

type Db = Pool<SqliteConnectionManager>;

async fn forgot_the_attribute() -> &'static str {
    std::thread::sleep(BLOCK);
    "blocked a worker"
}

#[blocking_first]
async fn blocking_inside_io() -> &'static str {
    io! {
        tokio::task::yield_now().await;
        std::thread::sleep(BLOCK);
    };
    "blocked a worker inside io!"
}

#[blocking_first(limit = WATCHED_DB)]
async fn clean(State(db): State<Db>) -> String {
    std::thread::sleep(BLOCK);
    let n: i64 = db
        .with(|conn| conn.query_row("select 1", [], |row| row.get(0)))
        .unwrap()
        .unwrap();
    io! { tokio::time::sleep(BLOCK).await };
    format!("{n}")
}

async fn connection_without_the_attribute(State(db): State<Db>) -> String {
    let n: i64 = db
        .get()
        .unwrap()
        .query_row("select 2", [], |row| row.get(0))
        .unwrap();
    format!("{n}")
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_that_block_a_worker_are_named_once_and_clean_ones_never() {
    install_subscriber();
    let db = Pool::build(&WATCHED_DB, SqliteConnectionManager::memory())
        .await
        .unwrap();
    // Outside every body, on plain threads (start-up work, migrations): nothing to say.
    let on_a_plain_thread = db.clone();
    tokio::task::spawn_blocking(move || drop(on_a_plain_thread.get().unwrap()))
        .await
        .unwrap();
    let app = Router::new()
        .route("/forgot", get(forgot_the_attribute))
        .route("/io", get(blocking_inside_io))
        .route("/clean", get(clean))
        .route("/conn", get(connection_without_the_attribute))
        .with_state(db)
        .layer(WorkerWatchLayer::new());
    let address = serve(app).await;
    let client = reqwest::Client::new();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let response = client
                .get(format!("http://{address}{path}"))
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
        }
    };
    for _ in 0..3 {
        get("/clean").await;
    }
    assert!(
        warnings("blocking_first::worker").is_empty(),
        "a clean route"
    );
    assert!(warnings("blocking_first::pool").is_empty(), "a clean route");
    let before = blocking_first::stats().worker_warnings;
    for _ in 0..3 {
        get("/forgot").await;
        get("/io").await;
        get("/conn").await;
    }
    let routes: Vec<_> = warnings("blocking_first::worker")
        .into_iter()
        .map(|w| {
            let took: u64 = w.fields["took_us"].parse().unwrap();
            assert!(took >= 40_000, "{w:?}");
            let message = &w.fields["message"];
            assert!(
                message.contains("blocked a runtime worker")
                    && message.contains("Annotate its handler with #[blocking_first]"),
                "{message}"
            );
            w.fields["route"].clone()
        })
        .collect();
    // One warning per route per interval, however many requests.
    assert_eq!(routes, ["GET /forgot", "GET /io"], "{routes:?}");
    let pool = warnings("blocking_first::pool");
    assert_eq!(pool.len(), 1, "once per call site: {pool:?}");
    assert_eq!(pool[0].fields["pool_limit"], "watched-db");
    assert!(
        pool[0].fields["at"].starts_with("tests/worker_watch.rs:"),
        "the call site: {pool:?}"
    );
    assert!(
        pool[0].fields["message"]
            .contains("Annotate the handler with #[blocking_first(limit = ..)]"),
        "{pool:?}"
    );
    assert_eq!(blocking_first::stats().worker_warnings - before, 3);
}
