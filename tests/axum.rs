//! End to end: a real axum server on 127.0.0.1 with `#[blocking_first]` handlers, a real SQLite
//! connection pool, a slow local upstream, requested with a real HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use r2d2_sqlite::SqliteConnectionManager;
use serde::{Deserialize, Serialize};
use tower_http::catch_panic::CatchPanicLayer;

type Pool = r2d2::Pool<SqliteConnectionManager>;

const POOL_SIZE: u32 = 4;

/// As many bodies in database code as the pool has connections.
static DB: Limit = Limit::new("db", POOL_SIZE as usize);

#[derive(Clone)]
struct AppState {
    pool: Pool,
    upstream: String,
    http: reqwest::Client,
    /// The most pool connections ever handed out at once.
    peak_connections: Arc<AtomicUsize>,
}

impl AppState {
    fn connection(&self) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, AppError> {
        let connection = self.pool.get()?;
        let state = self.pool.state();
        self.peak_connections.fetch_max(
            (state.connections - state.idle_connections) as usize,
            Ordering::SeqCst,
        );
        Ok(connection)
    }
}

#[derive(Debug)]
enum AppError {
    NotFound,
    Database(String),
    Upstream(String),
}

impl From<r2d2::Error> for AppError {
    fn from(err: r2d2::Error) -> Self {
        AppError::Database(err.to_string())
    }
}

impl From<rusqlite::Error> for AppError {
    fn from(err: rusqlite::Error) -> Self {
        match err {
            rusqlite::Error::QueryReturnedNoRows => AppError::NotFound,
            err => AppError::Database(err.to_string()),
        }
    }
}

impl From<reqwest::Error> for AppError {
    fn from(err: reqwest::Error) -> Self {
        AppError::Upstream(err.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AppError::NotFound => (StatusCode::NOT_FOUND, "not found".to_string()),
            AppError::Database(e) => (StatusCode::INTERNAL_SERVER_ERROR, e),
            AppError::Upstream(e) => (StatusCode::BAD_GATEWAY, e),
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Note {
    id: i64,
    title: String,
    preview: String,
    words: usize,
    tags: Vec<String>,
}

#[derive(Deserialize)]
struct NewNote {
    title: String,
    tags: Vec<String>,
}

#[blocking_first(limit = DB)]
async fn show(State(app): State<AppState>, Path(id): Path<i64>) -> Result<Json<Note>, AppError> {
    let title: String =
        app.connection()?
            .query_row("select title from notes where id = ?1", [id], |row| {
                row.get(0)
            })?;
    let preview = io! {
        app.http
            .get(format!("{}/preview/{id}", app.upstream))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?
    };
    let (words, tags) = parallel! {
        title.split_whitespace().count(),
        {
            let connection = app.connection()?;
            let mut query = connection.prepare("select tag from tags where note = ?1 order by tag")?;
            let tags = query.query_map([id], |row| row.get(0))?.collect::<Result<Vec<String>, _>>()?;
            Ok::<_, AppError>(tags)
        },
    };
    Ok(Json(Note {
        id,
        title,
        preview,
        words,
        tags: tags?,
    }))
}

#[blocking_first(limit = DB)]
async fn create(
    State(app): State<AppState>,
    Json(new): Json<NewNote>,
) -> Result<(StatusCode, Json<i64>), AppError> {
    let mut connection = app.connection()?;
    let transaction = connection.transaction()?;
    transaction.execute("insert into notes (title) values (?1)", [&new.title])?;
    let id = transaction.last_insert_rowid();
    for tag in &new.tags {
        transaction.execute("insert into tags (note, tag) values (?1, ?2)", (id, tag))?;
    }
    transaction.commit()?;
    Ok((StatusCode::CREATED, Json(id)))
}

#[blocking_first]
async fn boom() -> &'static str {
    panic!("handler bug")
}

async fn preview(Path(id): Path<i64>) -> Result<String, StatusCode> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    if id == 666 {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(format!("preview of {id}"))
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    address
}

struct TestApp {
    base: String,
    state: AppState,
    _dir: tempfile::TempDir,
}

impl TestApp {
    async fn get(&self, client: &reqwest::Client, path: &str) -> reqwest::Response {
        client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn note(&self, client: &reqwest::Client, id: i64) -> Note {
        self.get(client, &format!("/notes/{id}"))
            .await
            .json()
            .await
            .unwrap()
    }
}

async fn start() -> TestApp {
    let upstream = serve(Router::new().route("/preview/{id}", get(preview))).await;
    let dir = tempfile::tempdir().unwrap();
    let manager = SqliteConnectionManager::file(dir.path().join("notes.sqlite"))
        .with_init(|c| c.execute_batch("pragma journal_mode = wal; pragma busy_timeout = 5000;"));
    let pool = r2d2::Pool::builder()
        .max_size(POOL_SIZE)
        .connection_timeout(Duration::from_secs(5))
        .build(manager)
        .unwrap();
    pool.get()
        .unwrap()
        .execute_batch(
            "create table notes (id integer primary key, title text not null);
             create table tags (note integer not null references notes(id), tag text not null);
             insert into notes (id, title) values (1, 'first note here');
             insert into tags (note, tag) values (1, 'b'), (1, 'a');
             insert into notes (id, title) values (666, 'broken upstream');",
        )
        .unwrap();
    let state = AppState {
        pool,
        upstream: format!("http://{upstream}"),
        http: reqwest::Client::new(),
        peak_connections: Arc::default(),
    };
    let router = Router::new()
        .route("/notes/{id}", get(show))
        .route("/notes", post(create))
        .route("/boom", get(boom))
        .layer(CatchPanicLayer::new())
        .with_state(state.clone());
    let address = serve(router).await;
    TestApp {
        base: format!("http://{address}"),
        state,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_serve_real_requests_with_extractors_regions_and_errors() {
    let app = start().await;
    let client = reqwest::Client::new();

    let note = app.note(&client, 1).await;
    assert_eq!(
        note,
        Note {
            id: 1,
            title: "first note here".into(),
            preview: "preview of 1".into(),
            words: 3,
            tags: vec!["a".into(), "b".into()],
        }
    );

    let missing = app.get(&client, "/notes/2").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.text().await.unwrap(), r#"{"error":"not found"}"#);

    let upstream_down = app.get(&client, "/notes/666").await;
    assert_eq!(upstream_down.status(), StatusCode::BAD_GATEWAY);

    let created = client
        .post(format!("{}/notes", app.base))
        .json(&serde_json::json!({ "title": "new one", "tags": ["x"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let id: i64 = created.json().await.unwrap();
    let note = app.note(&client, id).await;
    assert_eq!(
        (note.title.as_str(), note.tags),
        ("new one", vec!["x".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_becomes_a_500_and_the_server_keeps_serving() {
    let app = start().await;
    let client = reqwest::Client::new();
    let response = app.get(&client, "/boom").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let after = app.get(&client, "/notes/1").await;
    assert_eq!(after.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_stay_within_the_cap_and_the_pool() {
    let app = start().await;
    DB.reset_peak();
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..200)
        .map(|_| {
            let client = client.clone();
            let url = format!("{}/notes/1", app.base);
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap().unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "some requests failed (a pool timeout is a 500): {statuses:?}"
    );
    let stats = DB.stats();
    assert!(
        stats.peak <= 4,
        "bodies in blocking code peaked at {}",
        stats.peak
    );
    let connections = app.state.peak_connections.load(Ordering::SeqCst);
    assert!(
        connections <= 4,
        "connections in use peaked at {connections}"
    );
}
