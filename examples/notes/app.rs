//! The notes service: its routes, its handlers and how it starts.
//!
//! The handlers are written as blocking code with `#[blocking_first(limit = DB)]`: they take a
//! pooled SQLite connection like any synchronous program would, mark the calls to the slow
//! preview service with `io! { .. }`, and run independent queries side by side with
//! `parallel! { .. }`. While a handler waits on the network it holds no thread, no slot of the
//! `DB` cap and no connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, http};
use blocking_first::tower::ServerTimingLayer;
use blocking_first::{blocking_first, check_cancelled};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::api::{self, ApiError, JsonBody, PathArgs, QueryArgs};
use crate::db::{self, AttachmentInfo, DB, Note, NoteFields, TagCount, Totals};
use crate::ops;
use crate::preview::{self, Preview, PreviewClient};
use crate::serve::{self, Running};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How to start the service.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub db_path: PathBuf,
    /// Slots of the [`DB`] cap, and connections in the pool.
    pub cap: usize,
    /// Base URL of the link-preview service.
    pub upstream: String,
    pub upstream_timeout: Duration,
    pub max_upload_bytes: usize,
    /// The process's Prometheus recorder ([`ops::install_metrics`]), rendered by `/metrics`.
    pub metrics: PrometheusHandle,
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct App {
    pub db: db::Pool,
    pub previews: PreviewClient,
    pub max_upload_bytes: usize,
    pub metrics: PrometheusHandle,
}

/// Opens the database, then serves on `config.listen` until [`Running::stop`].
pub async fn start(config: Config) -> Result<Running, BoxError> {
    // The cap can only change while nothing uses it and no pool is sized by it: here, before
    // the first request and before the pool. (Services in one process share the cap: they
    // start with the same one, or this fails saying why.)
    if DB.capacity() != Some(config.cap) {
        DB.set_capacity(config.cap)?;
    }
    let path = config.db_path.clone();
    let pool = tokio::task::spawn_blocking(move || db::open(&path)).await??;
    let app = App {
        db: pool,
        previews: PreviewClient::new(&config.upstream, config.upstream_timeout)?,
        max_upload_bytes: config.max_upload_bytes,
        metrics: config.metrics,
    };
    let listener = TcpListener::bind(config.listen).await?;
    Ok(serve::spawn(listener, router(app))?)
}

/// Every route of the service, with its layers.
pub fn router(app: App) -> Router {
    let routes = Router::new()
        .route("/notes", get(list_notes).post(create_note))
        .route("/notes/export.csv", get(export_notes))
        .route(
            "/notes/{id}",
            get(show_note).put(update_note).delete(delete_note),
        )
        .route(
            "/notes/{id}/attachments/{name}",
            put(upload_attachment).get(download_attachment),
        )
        .route("/dashboard", get(dashboard))
        .route("/status", get(ops::status))
        .route("/metrics", get(ops::metrics))
        .route("/debug/bodies", get(ops::bodies))
        .fallback(api::no_route)
        .method_not_allowed_fallback(api::wrong_method)
        .with_state(app);
    with_layers(routes)
}

/// The layers around the routes: a span per request (the handlers' logs, in blocking code
/// and in `io!`, land inside it), panics turned into a JSON 500, and a `Server-Timing` header
/// on each response (where its blocking code spent its time, shown by a browser's developer
/// tools).
pub fn with_layers(routes: Router) -> Router {
    routes
        .layer(ServerTimingLayer::new())
        .layer(CatchPanicLayer::custom(api::panic_response))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
}

/// A note as clients send it, for create and update.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteInput {
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    link: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

impl NoteInput {
    /// Checks the rules a client must follow, answering 422 with the first one broken.
    fn validate(self) -> Result<NoteFields, ApiError> {
        let title = self.title.trim().to_string();
        if title.is_empty() || title.chars().count() > 120 {
            return Err(ApiError::invalid("`title` must have 1 to 120 characters"));
        }
        if self.body.chars().count() > 10_000 {
            return Err(ApiError::invalid(
                "`body` must have at most 10000 characters",
            ));
        }
        if let Some(link) = &self.link {
            if !preview::is_web_link(link) {
                return Err(ApiError::invalid(format!(
                    "`link` must be an http(s) URL, not `{link}`"
                )));
            }
        }
        if self.tags.len() > 8 {
            return Err(ApiError::invalid("at most 8 `tags`"));
        }
        for tag in &self.tags {
            let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
            if tag.is_empty() || tag.len() > 32 || !tag.chars().all(allowed) {
                return Err(ApiError::invalid(format!(
                    "tag `{tag}` must have 1 to 32 characters among a-z, 0-9 and -"
                )));
            }
        }
        // A tag given twice is not checked here: the database refuses it (see `db::insert_tags`).
        Ok(NoteFields {
            title,
            body: self.body,
            link: self.link,
            tags: self.tags,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    tag: Option<String>,
    limit: Option<u32>,
}

/// `GET /notes?tag=..&limit=..`
#[blocking_first(limit = DB)]
async fn list_notes(
    State(app): State<App>,
    QueryArgs(query): QueryArgs<ListQuery>,
) -> Result<Json<Vec<Note>>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("`limit` must be between 1 and 200"));
    }
    let conn = app.db.get()?;
    let notes = db::list_notes(&conn, query.tag.as_deref(), limit)?;
    Ok(Json(notes))
}

/// What rendering one exported row costs here: a stand-in for real per-row work (formatting a
/// page of a report, resizing an image) that makes an export long enough to be worth stopping.
pub const EXPORT_ROW_COST: Duration = Duration::from_millis(2);

/// `GET /notes/export.csv`: every note as CSV. Long blocking work that checks per row whether
/// its client is still there: one that gave up (or a timeout) stops it at the next row, and the
/// thread, the slot and the connection go back to the requests that still wait.
#[blocking_first(limit = DB)]
async fn export_notes(State(app): State<App>) -> Result<impl IntoResponse, ApiError> {
    let conn = app.db.get()?;
    let mut csv = String::from("id,title,tags,updated_at\n");
    let mut rows = 0;
    let exported = db::for_each_export_row(&conn, |row| {
        check_cancelled()?;
        std::thread::sleep(EXPORT_ROW_COST);
        csv.push_str(&row.to_csv());
        rows += 1;
        Ok::<_, ApiError>(())
    });
    if let Err(err) = exported {
        if err.status == api::CLIENT_GONE {
            tracing::info!(rows, "export stopped: its client is gone");
        }
        return Err(err);
    }
    tracing::info!(rows, "notes exported");
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv))
}

/// `POST /notes`: 201 with the note and its `Location`.
#[blocking_first(limit = DB)]
async fn create_note(
    State(app): State<App>,
    JsonBody(input): JsonBody<NoteInput>,
) -> Result<impl IntoResponse, ApiError> {
    let fields = input.validate()?;
    let mut conn = app.db.get()?;
    let note = db::create_note(&mut conn, &fields)?;
    tracing::info!(id = note.id, tags = note.tags.len(), "note created");
    let location = format!("/notes/{}", note.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(note),
    ))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NoteView {
    pub note: Note,
    pub attachments: Vec<AttachmentInfo>,
    /// A preview of the note's link, fetched from the preview service on every view.
    pub preview: Option<Preview>,
}

/// `GET /notes/{id}`: the note, its attachments and a fresh preview of its link.
#[blocking_first(limit = DB)]
async fn show_note(
    State(app): State<App>,
    PathArgs(id): PathArgs<i64>,
) -> Result<Json<NoteView>, ApiError> {
    // Blocking code: one connection for two queries, returned at the end of the block.
    let (note, attachments) = {
        let conn = app.db.get()?;
        let note = db::get_note(&conn, id)?.ok_or_else(|| ApiError::note_not_found(id))?;
        (note, db::attachments(&conn, id)?)
    };
    let Some(link) = note.link.clone() else {
        return Ok(Json(NoteView {
            note,
            attachments,
            preview: None,
        }));
    };
    // Async code: the body holds no thread, no slot and no connection while the service
    // takes its time. A failure or a timeout leaves the handler here with a 502 or 504.
    let preview = io! { app.previews.fetch(&link).await? };
    // Blocking again, with a fresh connection.
    let conn = app.db.get()?;
    if !db::save_preview(&conn, id, &link, &preview.title)? {
        return Err(ApiError::note_not_found(id));
    }
    tracing::debug!(id, title = preview.title, "preview saved");
    Ok(Json(NoteView {
        note,
        attachments,
        preview: Some(preview),
    }))
}

/// `PUT /notes/{id}`: replaces the note's fields and tags.
#[blocking_first(limit = DB)]
async fn update_note(
    State(app): State<App>,
    PathArgs(id): PathArgs<i64>,
    JsonBody(input): JsonBody<NoteInput>,
) -> Result<Json<Note>, ApiError> {
    let fields = input.validate()?;
    let mut conn = app.db.get()?;
    let note = db::update_note(&mut conn, id, &fields)?;
    let note = note.ok_or_else(|| ApiError::note_not_found(id))?;
    tracing::info!(id, "note updated");
    Ok(Json(note))
}

/// `DELETE /notes/{id}`: 204, with the note's tags, attachments and preview.
#[blocking_first(limit = DB)]
async fn delete_note(
    State(app): State<App>,
    PathArgs(id): PathArgs<i64>,
) -> Result<StatusCode, ApiError> {
    let conn = app.db.get()?;
    if !db::delete_note(&conn, id)? {
        return Err(ApiError::note_not_found(id));
    }
    tracing::info!(id, "note deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /notes/{id}/attachments/{name}`: stores the raw request body, 201.
#[blocking_first(limit = DB)]
async fn upload_attachment(
    State(app): State<App>,
    PathArgs((id, name)): PathArgs<(i64, String)>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if name.is_empty() || name.len() > 100 || name.starts_with('.') || !name.chars().all(name_ok) {
        return Err(ApiError::invalid(
            "an attachment name has 1 to 100 characters among A-Z, a-z, 0-9, '.', '-', '_' \
             and does not start with '.'",
        ));
    }
    // Fail before receiving a body that would be thrown away. The connection goes back at the
    // end of the condition: the upload may take a while to arrive.
    if !db::note_exists(&*app.db.get()?, id)? {
        return Err(ApiError::note_not_found(id));
    }
    // An async helper awaited from blocking code: the upload streams in holding no thread,
    // slot or connection.
    let content = read_upload(body, app.max_upload_bytes).await?;
    let mut conn = app.db.get()?;
    if !db::store_attachment(&mut conn, id, &name, &content)? {
        return Err(ApiError::note_not_found(id));
    }
    let size = content.len() as i64;
    tracing::info!(id, name, size, "attachment stored");
    Ok((StatusCode::CREATED, Json(AttachmentInfo { name, size })))
}

/// Receives a request body of at most `limit` bytes, or answers 413.
async fn read_upload(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("uploads are limited to {limit} bytes"),
        )
    };
    // A declared `Content-Length` over the limit is refused before reading anything.
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let mut content = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the upload was cut short: {err}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if content.len() + data.len() > limit {
                return Err(too_large());
            }
            content.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(content))
}

/// `GET /notes/{id}/attachments/{name}`: the stored bytes.
#[blocking_first(limit = DB)]
async fn download_attachment(
    State(app): State<App>,
    PathArgs((id, name)): PathArgs<(i64, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let conn = app.db.get()?;
    let content = db::attachment_content(&conn, id, &name)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("note {id} has no attachment `{name}`"),
        )
    })?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    Ok((headers, content))
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Dashboard {
    pub totals: Totals,
    pub top_tags: Vec<TagCount>,
    pub recent: Vec<Note>,
    pub took_ms: u64,
}

/// `GET /dashboard`: three independent queries, side by side, each on its own connection.
#[blocking_first(limit = DB)]
async fn dashboard(State(app): State<App>) -> Result<Json<Dashboard>, ApiError> {
    let started = Instant::now();
    // Each branch takes its own connection (`&*` borrows the SQLite connection inside the
    // pooled one) and gives it back when the branch ends; a `?` leaves only its branch. (A
    // connection taken before `parallel!` could not be used in a branch: it stays on its thread.)
    let (totals, top_tags, recent) = parallel! {
        db::totals(&*app.db.get()?),
        db::top_tags(&*app.db.get()?, 5),
        db::recent_notes(&*app.db.get()?, 5),
    };
    Ok(Json(Dashboard {
        totals: totals?,
        top_tags: top_tags?,
        recent: recent?,
        took_ms: started.elapsed().as_millis() as u64,
    }))
}
