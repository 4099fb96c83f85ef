//! The example over HTTP: creates users, lists them, greets one through the slow upstream and
//! counts them with two queries side by side.

use std::time::{Duration, Instant};

use blocking_first_example_diesel::{app, start_upstream};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_over_http() {
    let dir = tempfile::tempdir().unwrap(); // removed when the test ends, passed or failed
    let database = dir.path().join("users.sqlite");
    let app = app(database.to_str().unwrap(), start_upstream().await.unwrap())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    let http = reqwest::Client::new();

    // Eight users created at once: concurrent writers on four connections, which wait for each
    // other (`WaitWhenBusy`) instead of failing with "database is locked".
    let creates: Vec<_> = (0..8)
        .map(|i| {
            let hair_color = ["brown", "orange", "black"].get(i % 4).copied();
            let request = http
                .post(format!("{base}/user/create"))
                .json(&json!({ "name": format!("user {i}"), "hair_color": hair_color }));
            tokio::spawn(async move { request.send().await.unwrap() })
        })
        .collect();
    for create in creates {
        let created = create.await.unwrap();
        let status = created.status();
        let body = created.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        let user: Value = serde_json::from_str(&body).unwrap();
        assert!(user["id"].as_i64().unwrap() >= 1, "{user}");
    }
    let ferris = http
        .post(format!("{base}/user/create"))
        .json(&json!({ "name": "Ferris", "hair_color": "orange" }))
        .send()
        .await
        .unwrap();
    let ferris: Value = ferris.json().await.unwrap();
    assert_eq!(
        ferris,
        json!({ "id": 9, "name": "Ferris", "hair_color": "orange" })
    );

    let list = get(&http, &format!("{base}/user/list"), StatusCode::OK).await;
    let list: Vec<Value> = list.json().await.unwrap();
    assert_eq!(list.len(), 9);
    assert_eq!(list[8], ferris);
    assert_eq!(list.iter().filter(|u| u["hair_color"].is_null()).count(), 2);

    // The slow upstream, called in `io!`.
    let started = Instant::now();
    let greeting = get(&http, &format!("{base}/user/9/greeting"), StatusCode::OK).await;
    let greeting: Value = greeting.json().await.unwrap();
    assert_eq!(
        greeting,
        json!({ "user": ferris, "greeting": "Hello, Ferris!" })
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    let missing = get(
        &http,
        &format!("{base}/user/99/greeting"),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(missing.text().await.unwrap(), "Record not found");

    // Two queries side by side with `parallel!`.
    let stats = get(&http, &format!("{base}/user/stats"), StatusCode::OK).await;
    let stats: Value = stats.json().await.unwrap();
    assert_eq!(
        stats,
        json!({ "users": 9, "hair_colors": ["black", "brown", "orange"] })
    );

    // A body axum cannot read: its rejection, before the handler runs.
    let bad = http
        .post(format!("{base}/user/create"))
        .json(&json!({ "name": 42 }))
        .send();
    assert_eq!(
        bad.await.unwrap().status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

/// GETs `url`, expecting `status`.
async fn get(http: &reqwest::Client, url: &str, status: StatusCode) -> reqwest::Response {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), status, "GET {url}");
    response
}
