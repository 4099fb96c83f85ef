//! End-to-end tests of the `notes` example: the service runs on a temporary SQLite file and a
//! local preview service, both on loopback ports chosen by the system, and is driven over HTTP.

#[path = "../examples/notes/api.rs"]
mod api;
#[path = "../examples/notes/app.rs"]
mod app;
#[path = "../examples/notes/db.rs"]
mod db;
#[path = "../examples/notes/ops.rs"]
mod ops;
#[path = "../examples/notes/preview.rs"]
mod preview;
#[path = "../examples/notes/serve.rs"]
mod serve;
#[path = "../examples/notes/upstream.rs"]
mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use blocking_first::blocking_first;
use metrics_exporter_prometheus::PrometheusHandle;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use upstream::{Upstream, UpstreamConfig};

const LOOPBACK_ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
const MAX_UPLOAD: usize = 4096;

/// A preview service that answers at once and never fails.
const QUICK: UpstreamConfig = UpstreamConfig {
    latency: Duration::ZERO,
    failure_rate: 0.0,
};

/// The notes service on a fresh database, its preview service, and a client.
struct Service {
    base: String,
    http: reqwest::Client,
    server: Option<serve::Running>,
    upstream: Upstream,
    db_path: PathBuf,
    _dir: TempDir,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The process's Prometheus recorder: installed once for every test of this file, as `main`
/// installs it once for the service.
fn metrics() -> PrometheusHandle {
    static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();
    METRICS
        .get_or_init(|| ops::install_metrics().unwrap())
        .clone()
}

fn config(db_path: &Path, upstream: String, upstream_timeout: Duration) -> app::Config {
    app::Config {
        listen: LOOPBACK_ANY_PORT,
        db_path: db_path.to_path_buf(),
        cap: 4,
        upstream,
        upstream_timeout,
        max_upload_bytes: MAX_UPLOAD,
        metrics: metrics(),
    }
}

async fn start(upstream_config: UpstreamConfig) -> Service {
    let upstream = upstream::start(LOOPBACK_ANY_PORT, upstream_config)
        .await
        .unwrap();
    start_with(upstream, Duration::from_secs(30)).await
}

async fn start_with(upstream: Upstream, upstream_timeout: Duration) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("notes.sqlite");
    let server = app::start(config(&db_path, upstream.url(), upstream_timeout))
        .await
        .unwrap();
    Service {
        base: format!("http://{}", server.addr),
        http: client(),
        server: Some(server),
        upstream,
        db_path,
        _dir: dir,
    }
}

impl Service {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        send(self.http.get(self.url(path))).await
    }

    async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        send(self.http.post(self.url(path)).json(&body)).await
    }

    async fn put_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        send(self.http.put(self.url(path)).json(&body)).await
    }

    /// Creates a note and returns it.
    async fn create(&self, body: Value) -> db::Note {
        let (status, note) = self.post_json("/notes", body).await;
        assert_eq!(status, StatusCode::CREATED, "{note}");
        serde_json::from_value(note).unwrap()
    }

    /// Runs a counting query on the database file directly, behind the service's back.
    fn count(&self, sql: &str) -> i64 {
        let conn = rusqlite::Connection::open(&self.db_path).unwrap();
        conn.query_row(sql, [], |row| row.get(0)).unwrap()
    }
}

/// Sends a request; returns the status and the JSON body (`Null` when there is none).
async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", String::from_utf8_lossy(&bytes)))
    };
    (status, body)
}

/// Asserts an error answer: the status, and an `error` message containing `fragment`.
#[track_caller]
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, fragment: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    let message = answer.1["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no `error` message in {}", answer.1));
    assert!(
        message.contains(fragment),
        "`{message}` does not mention `{fragment}`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_database_is_created_seeded_and_kept_across_restarts() {
    let mut service = start(QUICK).await;
    let (status, notes) = service.get("/notes").await;
    assert_eq!(status, StatusCode::OK);
    let notes: Vec<db::Note> = serde_json::from_value(notes).unwrap();
    assert_eq!(notes.len(), 4, "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|note| note.title == "Read the tokio tutorial")
    );

    let (status, rust) = service.get("/notes?tag=rust").await;
    assert_eq!(status, StatusCode::OK);
    let rust: Vec<db::Note> = serde_json::from_value(rust).unwrap();
    assert_eq!(rust.len(), 2);
    assert!(
        rust.iter()
            .all(|note| note.tags.contains(&"rust".to_string()))
    );

    let (_, two) = service.get("/notes?limit=2").await;
    assert_eq!(two.as_array().unwrap().len(), 2);
    assert_error(
        &service.get("/notes?limit=0").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "`limit` must be between 1 and 200",
    );
    assert_error(
        &service.get("/notes?limit=many").await,
        StatusCode::BAD_REQUEST,
        "limit",
    );
    assert_error(
        &service.get("/notes?colour=red").await,
        StatusCode::BAD_REQUEST,
        "colour",
    );

    // Restarted on the same file: the notes are still there, and not seeded twice.
    service
        .create(json!({ "title": "Survives a restart" }))
        .await;
    service.server.take().unwrap().stop().await.unwrap();
    let server = app::start(config(
        &service.db_path,
        service.upstream.url(),
        Duration::from_secs(30),
    ))
    .await
    .unwrap();
    service.base = format!("http://{}", server.addr);
    let (_, notes) = service.get("/notes").await;
    let titles: Vec<&str> = notes
        .as_array()
        .unwrap()
        .iter()
        .map(|note| note["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles.len(), 5, "{titles:?}");
    assert_eq!(titles[0], "Survives a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_show_update_and_delete_a_note() {
    let service = start(QUICK).await;

    let response = service
        .http
        .post(service.url("/notes"))
        .json(&json!({
            "title": "  Plan the release  ",
            "body": "Changelog first.",
            "link": "https://example.com/releases/1",
            "tags": ["work", "q3"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()[LOCATION].to_str().unwrap().to_string();
    let created: db::Note = response.json().await.unwrap();
    assert_eq!(location, format!("/notes/{}", created.id));
    assert_eq!(created.title, "Plan the release", "titles are trimmed");
    assert_eq!(created.tags, ["q3", "work"]);

    // Show: the note, and a preview fetched from the preview service.
    let before = service.upstream.stats().requests;
    let (status, view) = service.get(&location).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let view: app::NoteView = serde_json::from_value(view).unwrap();
    assert_eq!(view.note, created);
    assert!(view.attachments.is_empty());
    let preview = view.preview.expect("the note has a link");
    assert_eq!(preview.url, "https://example.com/releases/1");
    assert_eq!(preview.title, "example.com/releases/1");
    assert_eq!(service.upstream.stats().requests, before + 1);
    let cached = format!(
        "SELECT count(*) FROM previews WHERE note_id = {}",
        created.id
    );
    assert_eq!(
        service.count(&cached),
        1,
        "the fetched preview is remembered"
    );

    // Update: every field and the tags are replaced; the old link's preview goes.
    let (status, updated) = service
        .put_json(
            &location,
            json!({ "title": "Release 1.0", "tags": ["done"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    let updated: db::Note = serde_json::from_value(updated).unwrap();
    assert_eq!(
        (
            updated.id,
            updated.title.as_str(),
            updated.body.as_str(),
            updated.link.as_deref()
        ),
        (created.id, "Release 1.0", "", None)
    );
    assert_eq!(updated.tags, ["done"]);
    assert!(updated.updated_at >= created.updated_at);
    assert_eq!(service.count(&cached), 0);

    // A note without a link is shown without calling the preview service.
    let before = service.upstream.stats().requests;
    let (status, view) = service.get(&location).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["note"]["title"], "Release 1.0");
    assert_eq!(view["preview"], Value::Null);
    assert_eq!(service.upstream.stats().requests, before);

    // Delete: 204, then the note and its rows are gone.
    let (status, body) = send(service.http.delete(service.url(&location))).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert_error(
        &service.get(&location).await,
        StatusCode::NOT_FOUND,
        &format!("note {} not found", created.id),
    );
    let tags = format!(
        "SELECT count(*) FROM note_tags WHERE note_id = {}",
        created.id
    );
    assert_eq!(service.count(&tags), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_notes_are_refused_with_422_and_not_stored() {
    let service = start(QUICK).await;
    let notes_before = service.count("SELECT count(*) FROM notes");
    let cases = [
        (
            json!({ "title": "" }),
            "`title` must have 1 to 120 characters",
        ),
        (
            json!({ "title": "   " }),
            "`title` must have 1 to 120 characters",
        ),
        (
            json!({ "title": "x".repeat(121) }),
            "`title` must have 1 to 120 characters",
        ),
        (
            json!({ "title": "t", "body": "b".repeat(10_001) }),
            "`body` must have at most 10000",
        ),
        (
            json!({ "title": "t", "link": "ftp://example.com/" }),
            "`link` must be an http(s) URL",
        ),
        (
            json!({ "title": "t", "link": "not a url" }),
            "`link` must be an http(s) URL",
        ),
        (
            json!({ "title": "t", "tags": ["Not OK"] }),
            "tag `Not OK` must have 1 to 32",
        ),
        (
            json!({ "title": "t", "tags": [""] }),
            "tag `` must have 1 to 32",
        ),
        (
            json!({ "title": "t", "tags": ["a","b","c","d","e","f","g","h","i"] }),
            "at most 8 `tags`",
        ),
        // Wrong types, missing and unknown fields: axum's rejection, in our JSON shape.
        (
            json!({ "title": 5 }),
            "invalid type: integer `5`, expected a string",
        ),
        (json!({ "body": "no title" }), "missing field `title`"),
        (
            json!({ "title": "t", "colour": "red" }),
            "unknown field `colour`",
        ),
        (
            json!({ "title": "t", "tags": "work" }),
            "invalid type: string \"work\", expected a sequence",
        ),
        (
            json!("just a title"),
            "invalid type: string \"just a title\", expected struct",
        ),
    ];
    for (body, message) in cases {
        let answer = service.post_json("/notes", body.clone()).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, message);
        let answer = service.put_json("/notes/1", body).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, message);
    }
    assert_eq!(service.count("SELECT count(*) FROM notes"), notes_before);
    let (_, first) = service.get("/notes/1").await;
    assert_eq!(
        first["note"]["title"], "Read the tokio tutorial",
        "updates were refused too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors_with_the_right_status() {
    let service = start(QUICK).await;
    let notes_before = service.count("SELECT count(*) FROM notes");
    let post = || service.http.post(service.url("/notes"));

    let json_type = (CONTENT_TYPE, "application/json");
    let answer = send(
        post()
            .header(json_type.0.clone(), json_type.1)
            .body("{\"title\": "),
    )
    .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "EOF while parsing");
    let answer = send(post().header(json_type.0, json_type.1).body("{title: 'x'}")).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "key must be a string");
    let answer = send(post().body("{\"title\": \"x\"}")).await;
    assert_error(
        &answer,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Content-Type: application/json",
    );
    let answer = send(
        post()
            .header(CONTENT_TYPE, "text/plain")
            .body("{\"title\": \"x\"}"),
    )
    .await;
    assert_error(
        &answer,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Content-Type: application/json",
    );

    assert_error(
        &service.get("/notes/abc").await,
        StatusCode::BAD_REQUEST,
        "Cannot parse",
    );
    let answer = send(service.http.delete(service.url("/notes/1.5"))).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "Cannot parse");
    assert_error(
        &service.get("/nowhere").await,
        StatusCode::NOT_FOUND,
        "no route for GET /nowhere",
    );
    let answer = send(service.http.patch(service.url("/notes/1"))).await;
    assert_error(
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "/notes/1 does not accept PATCH",
    );

    assert_eq!(service.count("SELECT count(*) FROM notes"), notes_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_404_on_every_note_endpoint() {
    let service = start(QUICK).await;
    let missing = "note 424242 not found";
    assert_error(
        &service.get("/notes/424242").await,
        StatusCode::NOT_FOUND,
        missing,
    );
    let answer = service
        .put_json("/notes/424242", json!({ "title": "t" }))
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, missing);
    let answer = send(service.http.delete(service.url("/notes/424242"))).await;
    assert_error(&answer, StatusCode::NOT_FOUND, missing);
    let upload = service
        .http
        .put(service.url("/notes/424242/attachments/a.txt"))
        .body("hello");
    assert_error(&send(upload).await, StatusCode::NOT_FOUND, missing);
    let answer = service.get("/notes/1/attachments/absent.txt").await;
    assert_error(
        &answer,
        StatusCode::NOT_FOUND,
        "note 1 has no attachment `absent.txt`",
    );
    assert_eq!(
        service.count("SELECT count(*) FROM notes WHERE id = 424242"),
        0
    );
    assert_eq!(service.count("SELECT count(*) FROM attachments"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_fails_midway_leaves_no_rows() {
    let service = start(QUICK).await;
    let notes = service.count("SELECT count(*) FROM notes");
    let tags = service.count("SELECT count(*) FROM note_tags");

    // The note row and the first two tag rows are written before the repeated tag fails.
    let answer = service
        .post_json(
            "/notes",
            json!({ "title": "Half written?", "tags": ["one", "two", "one"] }),
        )
        .await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "tag `one` is given more than once",
    );

    assert_eq!(service.count("SELECT count(*) FROM notes"), notes);
    assert_eq!(service.count("SELECT count(*) FROM note_tags"), tags);
    assert_eq!(
        service.count("SELECT count(*) FROM notes WHERE title = 'Half written?'"),
        0
    );
    assert_eq!(
        service.count("SELECT count(*) FROM note_tags WHERE tag IN ('one', 'two')"),
        0
    );

    // The same note without the repetition goes in whole.
    let note = service
        .create(json!({ "title": "Half written?", "tags": ["one", "two"] }))
        .await;
    assert_eq!(note.tags, ["one", "two"]);
    assert_eq!(service.count("SELECT count(*) FROM notes"), notes + 1);
    assert_eq!(service.count("SELECT count(*) FROM note_tags"), tags + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_fails_midway_changes_nothing() {
    let service = start(QUICK).await;
    let note = service
        .create(json!({ "title": "Before", "body": "kept", "tags": ["keep", "these"] }))
        .await;
    let path = format!("/notes/{}", note.id);

    // The title is updated and the old tags deleted before the repeated tag fails.
    let answer = service
        .put_json(&path, json!({ "title": "After", "tags": ["new", "new"] }))
        .await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "tag `new` is given more than once",
    );

    let (status, view) = service.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    let unchanged: db::Note = serde_json::from_value(view["note"].clone()).unwrap();
    assert_eq!(unchanged, note);
    let tags = format!("SELECT count(*) FROM note_tags WHERE note_id = {}", note.id);
    assert_eq!(service.count(&tags), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_stored_and_oversized_ones_refused_with_413() {
    let service = start(QUICK).await;
    let note = service.create(json!({ "title": "With files" })).await;
    let path = format!("/notes/{}/attachments", note.id);
    let content: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();

    let upload = service
        .http
        .put(service.url(&format!("{path}/data.bin")))
        .body(content.clone());
    let (status, stored) = send(upload).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_eq!(stored, json!({ "name": "data.bin", "size": 3000 }));

    let download = service
        .http
        .get(service.url(&format!("{path}/data.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.headers()[CONTENT_TYPE], "application/octet-stream");
    assert_eq!(download.bytes().await.unwrap().as_ref(), content.as_slice());

    let (_, view) = service.get(&format!("/notes/{}", note.id)).await;
    assert_eq!(
        view["attachments"],
        json!([{ "name": "data.bin", "size": 3000 }])
    );
    let (_, after) = service.get(&format!("/notes/{}", note.id)).await;
    assert!(after["note"]["updated_at"].as_str() >= Some(note.updated_at.as_str()));

    // Declared too large: refused before reading, nothing stored.
    let oversized = service
        .http
        .put(service.url(&format!("{path}/big.bin")))
        .body(vec![7u8; MAX_UPLOAD + 1]);
    assert_error(
        &send(oversized).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "limited to 4096 bytes",
    );
    let upload = service
        .http
        .put(service.url(&format!("{path}/.hidden")))
        .body("x");
    assert_error(
        &send(upload).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "attachment name",
    );

    assert_eq!(service.count("SELECT count(*) FROM attachments"), 1);
    assert_eq!(
        service.count("SELECT sum(length(content)) FROM attachments"),
        3000
    );

    // Replacing keeps one row per name.
    let upload = service
        .http
        .put(service.url(&format!("{path}/data.bin")))
        .body("short");
    assert_eq!(send(upload).await.1["size"], 5);
    assert_eq!(
        service.count("SELECT sum(length(content)) FROM attachments"),
        5
    );

    // Deleting the note deletes its attachments.
    let (status, _) = send(
        service
            .http
            .delete(service.url(&format!("/notes/{}", note.id))),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(service.count("SELECT count(*) FROM attachments"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_over_the_limit_is_refused_while_it_streams_in() {
    let service = start(QUICK).await;
    // No Content-Length: the size is only known by reading, two chunks of 2100 bytes.
    let chunk = "z".repeat(2100);
    let request = format!(
        "PUT /notes/1/attachments/stream.txt HTTP/1.1\r\nHost: notes\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let addr = service.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // The server may close before reading the final chunk; what it answered is what counts.
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains(r#"{"error":"uploads are limited to 4096 bytes"}"#),
        "{response}"
    );
    assert_eq!(service.count("SELECT count(*) FROM attachments"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_preview_service_is_a_502() {
    let failing = UpstreamConfig {
        latency: Duration::ZERO,
        failure_rate: 1.0,
    };
    let service = start(failing).await;
    assert_error(
        &service.get("/notes/1").await,
        StatusCode::BAD_GATEWAY,
        "the link preview service answered 503 Service Unavailable",
    );
    let seen = service.upstream.stats();
    assert_eq!((seen.requests, seen.failures), (1, 1));
    assert_eq!(service.count("SELECT count(*) FROM previews"), 0);

    // A note without a link does not need the service.
    let (status, view) = service.get("/notes/4").await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["preview"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_service_slower_than_the_timeout_is_a_504() {
    let slow = UpstreamConfig {
        latency: Duration::from_secs(30),
        failure_rate: 0.0,
    };
    let upstream = upstream::start(LOOPBACK_ANY_PORT, slow).await.unwrap();
    let service = start_with(upstream, Duration::from_millis(300)).await;
    let started = Instant::now();
    assert_error(
        &service.get("/notes/1").await,
        StatusCode::GATEWAY_TIMEOUT,
        "the link preview service did not answer within 300 ms",
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the timeout applies"
    );
    assert_eq!(service.count("SELECT count(*) FROM previews"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_preview_service_is_a_502() {
    // A port held by a socket that does not listen: connections to it are refused, and no
    // other server can take it meanwhile.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind(LOOPBACK_ANY_PORT).unwrap();
    let closed_addr = closed.local_addr().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("notes.sqlite");
    let server = app::start(config(
        &db_path,
        format!("http://{closed_addr}"),
        Duration::from_secs(30),
    ))
    .await
    .unwrap();
    let answer = send(client().get(format!("http://{}/notes/1", server.addr))).await;
    assert_error(
        &answer,
        StatusCode::BAD_GATEWAY,
        "the link preview service is unreachable",
    );
    server.stop().await.unwrap();
    drop(closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_runs_its_queries_side_by_side() {
    let service = start(QUICK).await;
    for title in ["one", "two", "three"] {
        service
            .create(json!({ "title": title, "tags": ["dashboard", title] }))
            .await;
    }
    let upload = service
        .http
        .put(service.url("/notes/2/attachments/a.txt"))
        .body("0123456789");
    assert_eq!(send(upload).await.0, StatusCode::CREATED);
    assert_eq!(service.get("/notes/1").await.0, StatusCode::OK);

    let (_, before) = service.get("/status").await;
    let (status, dashboard) = service.get("/dashboard").await;
    assert_eq!(status, StatusCode::OK, "{dashboard}");
    let (_, after) = service.get("/status").await;
    let dashboard: app::Dashboard = serde_json::from_value(dashboard).unwrap();

    let expected = db::Totals {
        notes: 7,
        // async, rust, web, database, errands from the seed; dashboard, one, two, three
        distinct_tags: 9,
        attachments: 1,
        attachment_bytes: 10,
        previews: 1,
    };
    assert_eq!(dashboard.totals, expected);
    assert_eq!(
        dashboard.top_tags[..2],
        [
            db::TagCount {
                tag: "dashboard".into(),
                notes: 3
            },
            db::TagCount {
                tag: "rust".into(),
                notes: 2
            },
        ]
    );
    assert_eq!(dashboard.top_tags.len(), 5);
    assert_eq!(dashboard.recent.len(), 5);
    assert!(
        dashboard
            .recent
            .windows(2)
            .all(|pair| pair[0].updated_at >= pair[1].updated_at),
        "most recent first"
    );

    // Two branches went to the scope (the third runs on the body's own thread), either
    // dispatched to other blocking threads or, with no slot free, inline.
    let branches = |status: &Value| {
        status["blocking"]["parallel_dispatched"].as_u64().unwrap()
            + status["blocking"]["parallel_inline"].as_u64().unwrap()
    };
    assert!(
        branches(&after) >= branches(&before) + 2,
        "{before} -> {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_endpoint_reports_the_cap_and_the_counters() {
    let service = start(QUICK).await;
    let (status, before) = service.get("/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        before["cap"]["name"], "db",
        "the cap the handlers run under: {before}"
    );
    assert_eq!(before["cap"]["capacity"], 4);
    assert_eq!(before["pool"]["max_size"], 4, "one connection per slot");
    assert_eq!(
        before["upstream"],
        format!("{}/preview", service.upstream.url())
    );

    assert_eq!(service.get("/notes").await.0, StatusCode::OK);
    let (_, after) = service.get("/status").await;
    let hops = |status: &Value| status["blocking"]["hops"].as_u64().unwrap();
    assert!(
        hops(&after) > hops(&before),
        "the list ran on the blocking pool"
    );
    let peak = after["cap"]["peak"].as_u64().unwrap();
    assert!((1..=4).contains(&peak), "{after}");
    assert!(after["pool"]["connections"].as_u64().unwrap() <= 4);
}

/// The path `#[blocking_first]` records for the show handler: the example and this file both
/// make `app` a module of a crate named `notes`.
const SHOW: &str = "notes::app::show_note";

/// Scrapes `/metrics` over HTTP, as Prometheus does: a 200 in the text format.
async fn scrape(service: &Service) -> String {
    let response = service
        .http
        .get(service.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[CONTENT_TYPE].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// The sum of the samples `name{labels} value` of a scrape whose labels include every one of
/// `labels` (each `key="value"`): 0 before the first.
fn sample(scraped: &str, name: &str, labels: &[&str]) -> f64 {
    scraped
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{')?.split_once("} "))
        .filter(|(found, _)| {
            labels
                .iter()
                .all(|label| found.split(',').any(|have| have == *label))
        })
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .sum()
}

/// What a dashboard built on the scrape relies on: each handler's time, its split and its hops,
/// labelled with the handler, counted once per request, and the cap's use. (Other tests share
/// the recorder and run meanwhile: counts are compared as lower bounds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_request_by_handler_in_the_prometheus_scrape() {
    const SHOWS: u32 = 3;
    let service = start(QUICK).await;
    let before = scrape(&service).await;
    for _ in 0..SHOWS {
        assert_eq!(service.get("/notes/1").await.0, StatusCode::OK);
    }
    let after = scrape(&service).await;

    for name in [
        "blocking_first_body_seconds",
        "blocking_first_segment_seconds",
        "blocking_first_hops_total",
        "blocking_first_limit_in_use",
        "blocking_first_limit_loops",
        "# HELP blocking_first_body_seconds",
    ] {
        assert!(after.contains(name), "no `{name}` in\n{after}");
    }
    let show = format!("function=\"{SHOW}\"");
    assert!(after.contains(&show), "no `{show}` label in\n{after}");

    let completed = [show.as_str(), "limit=\"db\"", "outcome=\"completed\""];
    let bodies = |scraped: &str| sample(scraped, "blocking_first_body_seconds_count", &completed);
    assert!(
        bodies(&after) >= bodies(&before) + f64::from(SHOWS),
        "{SHOWS} shows: {} -> {}",
        bodies(&before),
        bodies(&after)
    );
    // Each show hops for its queries, and waits on the preview service in its `io!` region.
    let hops = |scraped: &str| sample(scraped, "blocking_first_hops_total", &[&show]);
    assert!(hops(&after) >= hops(&before) + f64::from(SHOWS));
    let io = [show.as_str(), "segment=\"io\""];
    let io_time = |scraped: &str| sample(scraped, "blocking_first_segment_seconds_sum", &io);
    assert!(io_time(&after) > io_time(&before));
    let db = ["limit=\"db\""];
    assert_eq!(sample(&after, "blocking_first_limit_capacity", &db), 4.0);
    assert!(sample(&after, "blocking_first_limit_in_use", &db) <= 4.0);
}

/// What an operator relies on when requests hang: `/debug/bodies` lists the show handler's body
/// while it waits on the preview service (where it is in the source, under which cap, doing
/// what and for how long), and no longer once it has answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_bodies_lists_a_show_while_it_waits_on_the_preview_service() {
    // Longer than any other test's show takes: a show listed as older than half of it is this
    // test's, whatever the other tests run meanwhile.
    const HELD: Duration = Duration::from_secs(2);
    let ours = |body: &Value| {
        body["function"] == SHOW
            && body["age_us"].as_u64().unwrap() >= (HELD / 2).as_micros() as u64
    };
    let service = start(UpstreamConfig {
        latency: HELD,
        failure_rate: 0.0,
    })
    .await;
    let show = tokio::spawn(send(service.http.get(service.url("/notes/1"))));
    service.upstream.wait_for_requests(1).await;

    let body = loop {
        let (status, listed) = service.get("/debug/bodies").await;
        assert_eq!(status, StatusCode::OK, "{listed}");
        if let Some(body) = listed["bodies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| ours(b))
        {
            break body.clone();
        }
        assert!(
            !show.is_finished(),
            "answered before it was listed: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        body["state"], "io",
        "waiting in `io!`, holding no thread or slot: {body}"
    );
    assert_eq!(body["limit"], "db", "{body}");
    let file = body["file"].as_str().unwrap();
    assert!(file.ends_with("examples/notes/app.rs"), "{body}");
    let line = body["line"].as_u64().unwrap() as usize;
    let source: Vec<&str> = include_str!("../examples/notes/app.rs").lines().collect();
    assert!(source[line - 1].starts_with("#[blocking_first"), "{body}");
    assert!(source[line].starts_with("async fn show_note("), "{body}");
    // Its note's queries ran first, on a blocking thread; since then it has been waiting.
    let split = &body["split"];
    assert!(split["hops"].as_u64().unwrap() >= 1, "{body}");
    assert!(
        split["io_us"].as_u64() >= body["in_state_us"].as_u64(),
        "{body}"
    );
    assert!(
        body["in_state_us"].as_u64() <= body["age_us"].as_u64(),
        "{body}"
    );

    let (status, view) = show.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{view}");
    let (_, listed) = service.get("/debug/bodies").await;
    let bodies = listed["bodies"].as_array().unwrap();
    assert!(
        !bodies.iter().any(ours),
        "still listed after answering: {listed}"
    );
}

/// Each response of a handler carries `Server-Timing`: a show's time in `io!` (the preview
/// service's 150 ms) and in blocking code, as a browser's developer tools show them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_server_timing_with_where_the_time_went() {
    let service = start(UpstreamConfig {
        latency: Duration::from_millis(150),
        failure_rate: 0.0,
    })
    .await;
    let response = service
        .http
        .get(service.url("/notes/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let header = response.headers()["server-timing"]
        .to_str()
        .unwrap()
        .to_string();
    let entries: std::collections::HashMap<&str, f64> = header
        .split(", ")
        .map(|entry| {
            let (name, dur) = entry.split_once(";dur=").unwrap();
            (name, dur.parse().unwrap())
        })
        .collect();
    assert_eq!(entries.len(), 5, "{header}");
    assert!(entries["io"] >= 150.0, "{header}");
    assert!(entries["blocking"] > 0.0, "{header}");
    // A route that runs no body has none.
    let response = service.http.get(service.url("/nope")).send().await.unwrap();
    assert!(response.headers().get("server-timing").is_none());
}

/// The export is CSV of every note; a client that gives up on a long one stops it within
/// 50 ms (its blocking code checks `check_cancelled()` per row), and the cap's slot goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_on_an_export_stops_it_and_frees_its_slot() {
    const ROWS: i64 = 200;
    const GIVES_UP: Duration = Duration::from_millis(100);
    let exporting = || {
        blocking_first::observe::in_flight()
            .iter()
            .any(|body| body.function.ends_with("::export_notes"))
    };
    let service = start(QUICK).await;
    // The whole export, for a client that waits.
    let answer = service
        .http
        .get(service.url("/notes/export.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()[CONTENT_TYPE], "text/csv; charset=utf-8");
    let csv = answer.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,title,tags,updated_at");
    assert_eq!(
        lines.len() as i64 - 1,
        service.count("SELECT count(*) FROM notes")
    );
    assert!(lines[1].starts_with("1,\""), "{csv}");

    // Enough notes for an export of at least ROWS × 2 ms, written behind the service's back.
    let mut conn = rusqlite::Connection::open(&service.db_path).unwrap();
    let tx = conn.transaction().unwrap();
    for n in 0..ROWS {
        tx.execute(
            "INSERT INTO notes (title, body) VALUES (?1, '')",
            [format!("note {n}")],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(GIVES_UP)
        .build()
        .unwrap();
    let started = Instant::now();
    let gave_up = impatient.get(service.url("/notes/export.csv")).send().await;
    let gave_up_at = Instant::now();
    assert!(gave_up.unwrap_err().is_timeout());
    assert!(started.elapsed() >= GIVES_UP);
    while exporting() {
        assert!(
            gave_up_at.elapsed() < Duration::from_secs(5),
            "the export ran on for nobody"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stopped_after = gave_up_at.elapsed();
    assert!(
        stopped_after <= Duration::from_millis(50),
        "the export stopped {stopped_after:?} after its client gave up"
    );
    // Its slot went back: a show of a note is answered at once.
    let (status, view) = service.get("/notes/1").await;
    assert_eq!(status, StatusCode::OK, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_slow_shows_share_four_slots_without_holding_them_while_waiting() {
    const REQUESTS: u32 = 64;
    const LATENCY: Duration = Duration::from_millis(100);
    let service = start(UpstreamConfig {
        latency: LATENCY,
        failure_rate: 0.0,
    })
    .await;

    let started = Instant::now();
    let shows: Vec<_> = (0..REQUESTS)
        .map(|_| tokio::spawn(send(service.http.get(service.url("/notes/1")))))
        .collect();
    for show in shows {
        let (status, view) = show.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["preview"]["title"], "tokio.rs/tokio/tutorial");
    }
    let elapsed = started.elapsed();

    // One at a time this would take 64 × 100 ms; four at a time (slots held while waiting on
    // the preview service) 16 × 100 ms.
    assert!(
        elapsed < LATENCY * REQUESTS / 2,
        "{REQUESTS} shows took {elapsed:?}"
    );
    let seen = service.upstream.stats();
    assert_eq!(seen.requests, u64::from(REQUESTS));
    assert!(
        seen.peak_in_flight > 4,
        "the preview service saw at most {} calls at once: the waits held the slots",
        seen.peak_in_flight
    );

    let (_, status) = service.get("/status").await;
    let cap = &status["cap"];
    assert_eq!(cap["capacity"], 4);
    let peak = cap["peak"].as_u64().unwrap();
    assert!((1..=4).contains(&peak), "the cap was exceeded: {status}");
    let peak_in_blocking = status["blocking"]["peak_in_blocking"].as_u64().unwrap();
    assert!(
        (1..=4).contains(&peak_in_blocking),
        "more bodies than the cap in blocking code: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_requests_in_flight_finish() {
    let mut service = start(UpstreamConfig {
        latency: Duration::from_millis(300),
        failure_rate: 0.0,
    })
    .await;
    let in_flight = tokio::spawn(send(service.http.get(service.url("/notes/1"))));
    // The show is now waiting on the preview service, inside its `io!` region.
    service.upstream.wait_for_requests(1).await;

    service.server.take().unwrap().stop().await.unwrap();
    let (status, view) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["preview"]["url"], "https://tokio.rs/tokio/tutorial");
    assert_eq!(service.count("SELECT count(*) FROM previews"), 1);

    let refused = client().get(service.url("/status")).send().await;
    assert!(
        refused.is_err(),
        "still serving after shutdown: {refused:?}"
    );
    service.upstream.stop().await.unwrap();
}

/// A handler with a bug: an index out of bounds, in blocking code.
#[blocking_first(limit = db::DB)]
async fn explodes() -> String {
    let titles: Vec<String> = Vec::new();
    titles[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_json_500_and_the_server_keeps_serving() {
    let router =
        app::with_layers(axum::Router::new().route("/explode", axum::routing::get(explodes)));
    let listener = TcpListener::bind(LOOPBACK_ANY_PORT).await.unwrap();
    let server = serve::spawn(listener, router).unwrap();
    let url = format!("http://{}/explode", server.addr);
    for _ in 0..2 {
        let answer = send(client().get(&url)).await;
        assert_eq!(
            answer,
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "internal error" })
            )
        );
    }
    server.stop().await.unwrap();
}
