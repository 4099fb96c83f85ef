//! `ServerTimingLayer` over HTTP: a real server, a real client, the header's entries against
//! what the handler did.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use blocking_first::blocking_first;
use blocking_first::tower::ServerTimingLayer;

/// 30 ms of blocking code, then 40 ms in `io!`.
#[blocking_first]
async fn blocking_then_io() -> &'static str {
    std::thread::sleep(Duration::from_millis(30));
    io!(tokio::time::sleep(Duration::from_millis(40)).await);
    "done"
}

#[blocking_first]
async fn inner() -> u32 {
    std::thread::sleep(Duration::from_millis(20));
    1
}

/// 20 ms of its own and 20 ms of a nested call's, on its thread: 40 ms of blocking in all,
/// counted once.
#[blocking_first]
async fn with_a_nested_call() -> String {
    std::thread::sleep(Duration::from_millis(20));
    let one = inner().await;
    one.to_string()
}

async fn no_body() -> &'static str {
    "plain"
}

/// The header's entries, in milliseconds.
fn entries(response: &reqwest::Response) -> Option<HashMap<String, f64>> {
    let value = response.headers().get("server-timing")?.to_str().unwrap();
    Some(
        value
            .split(", ")
            .map(|entry| {
                let (name, dur) = entry.split_once(";dur=").expect("name;dur=ms");
                (name.to_string(), dur.parse().unwrap())
            })
            .collect(),
    )
}

#[test]
fn each_response_carries_its_bodies_time_split_once() {
    common::multi_thread().block_on(async {
        let app = Router::new()
            .route("/both", get(blocking_then_io))
            .route("/nested", get(with_a_nested_call))
            .route("/plain", get(no_body))
            .layer(ServerTimingLayer::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = reqwest::Client::builder().no_proxy().build().unwrap();

        let response = client
            .get(format!("http://{addr}/both"))
            .send()
            .await
            .unwrap();
        let both = entries(&response).expect("a Server-Timing header");
        let names: Vec<&str> = ["slot_wait", "pool_queue", "blocking", "io", "parked"].to_vec();
        for name in &names {
            assert!(both.contains_key(*name), "{both:?}");
        }
        assert!((30.0..200.0).contains(&both["blocking"]), "{both:?}");
        assert!((40.0..200.0).contains(&both["io"]), "{both:?}");
        assert_eq!(response.text().await.unwrap(), "done");

        let response = client
            .get(format!("http://{addr}/nested"))
            .send()
            .await
            .unwrap();
        let nested = entries(&response).expect("a Server-Timing header");
        assert!(
            (40.0..100.0).contains(&nested["blocking"]),
            "the nested call's 20 ms counted once: {nested:?}"
        );

        let response = client
            .get(format!("http://{addr}/plain"))
            .send()
            .await
            .unwrap();
        assert!(entries(&response).is_none(), "no body ran: no header");
    });
}
