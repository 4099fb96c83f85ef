//! Two `#[blocking_first]` handlers: `cargo run --example hello`, then
//! `curl localhost:3000/hello/you` and `curl localhost:3000/slow-square/12`.

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use blocking_first::blocking_first;
use tower_http::catch_panic::CatchPanicLayer;

/// Blocking code only: it runs on tokio's blocking pool, never on a runtime worker.
#[blocking_first]
async fn hello(Path(name): Path<String>) -> String {
    let greeting = std::fs::read_to_string("/etc/hostname")
        .map(|host| format!("hello {name}, from {}", host.trim()))
        .unwrap_or_else(|_| format!("hello {name}"));
    greeting + "\n"
}

/// Blocking work around an async wait that holds no thread.
#[blocking_first]
async fn slow_square(Path(n): Path<u64>) -> String {
    let square = n * n; // blocking part (imagine a database query)
    io! {
        // async part: waits on the runtime, like a call to another service
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    format!("{n}² = {square}, after a 200 ms wait that held no thread\n")
}

#[tokio::main]
async fn main() {
    let app = Router::new()
        .route("/hello/{name}", get(hello))
        .route("/slow-square/{n}", get(slow_square))
        .layer(CatchPanicLayer::new());
    let address = std::env::var("HELLO_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&address).await.unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum::serve(listener, app)
        .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.unwrap() })
        .await
        .unwrap();
}
