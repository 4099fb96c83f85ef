//! A corpus of realistic handlers, expanded and compiled (under `clippy -D warnings` in CI), each
//! called once with its value checked: axum extractors, `Result` with `?` in and out of regions,
//! early `return`s, loops left from inside regions, `match` arms with regions, `let`-`else`,
//! nested and labeled blocks, `impl IntoResponse`, boxed errors, generics, `where` clauses,
//! `parallel!` with `?` in its branches and plain `.await` outside regions.

use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use blocking_first::blocking_first;
use r2d2_sqlite::SqliteConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

type Pool = r2d2::Pool<SqliteConnectionManager>;

/// Panics unless this is a blocking-pool thread (where `Handle::block_on` works).
fn assert_blocking_thread() {
    Handle::current().block_on(async {});
}

/// A slow asynchronous service the handlers call from `io!` regions.
#[derive(Clone)]
struct Upstream {
    delay: Duration,
    calls: Arc<AtomicUsize>,
}

#[derive(Debug, PartialEq)]
struct UpstreamError(String);

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream: {}", self.0)
    }
}

impl Error for UpstreamError {}

impl Upstream {
    async fn preview(&self, id: i64) -> Result<String, UpstreamError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        match id {
            13 => Err(UpstreamError(format!("no preview for {id}"))),
            _ => Ok(format!("preview {id}")),
        }
    }

    /// Pages of a listing: `cursor` 0..5 give a page, then an empty one.
    async fn page(&self, cursor: usize) -> Result<Vec<u32>, UpstreamError> {
        tokio::time::sleep(self.delay).await;
        Ok(if cursor < 5 {
            vec![cursor as u32 * 10, cursor as u32 * 10 + 1]
        } else {
            Vec::new()
        })
    }

    /// Fails the first `failures` calls, then succeeds.
    async fn flaky(&self, failures: usize) -> Result<String, UpstreamError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        if call < failures {
            Err(UpstreamError(format!("attempt {call} failed")))
        } else {
            Ok(format!("ok after {call}"))
        }
    }
}

#[derive(Clone)]
struct App {
    pool: Pool,
    upstream: Upstream,
}

#[derive(Debug)]
enum AppError {
    NotFound,
    Invalid(&'static str),
    Database(String),
    Upstream(UpstreamError),
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

impl From<UpstreamError> for AppError {
    fn from(err: UpstreamError) -> Self {
        AppError::Upstream(err)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match self {
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::Upstream(_) => StatusCode::BAD_GATEWAY,
        };
        (status, format!("{self:?}")).into_response()
    }
}

fn app() -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let manager = SqliteConnectionManager::file(dir.path().join("corpus.sqlite"))
        .with_init(|c| c.execute_batch("pragma journal_mode = wal; pragma busy_timeout = 5000;"));
    let pool = r2d2::Pool::builder().max_size(4).build(manager).unwrap();
    pool.get()
        .unwrap()
        .execute_batch(
            "create table users (id integer primary key, name text not null);
             create table notes (id integer primary key, user integer not null, title text not null);
             insert into users (id, name) values (1, 'ada'), (2, 'brian'), (13, 'unlucky');
             insert into notes (user, title) values (1, 'first'), (1, 'second'), (2, 'third');",
        )
        .unwrap();
    let app = App {
        pool,
        upstream: Upstream {
            delay: Duration::from_millis(2),
            calls: Arc::default(),
        },
    };
    (app, dir)
}

#[derive(Debug, Serialize, PartialEq)]
struct User {
    id: i64,
    name: String,
    preview: String,
    notes: usize,
}

/// 1. Extractors, `?` on database errors in blocking code and on an upstream error in `io!`.
#[blocking_first]
async fn show_user(State(app): State<App>, Path(id): Path<i64>) -> Result<Json<User>, AppError> {
    assert_blocking_thread();
    let connection = app.pool.get()?;
    let name: String =
        connection.query_row("select name from users where id = ?1", [id], |row| {
            row.get(0)
        })?;
    let preview = io! { app.upstream.preview(id).await? };
    assert_blocking_thread();
    let notes: i64 =
        connection.query_row("select count(*) from notes where user = ?1", [id], |row| {
            row.get(0)
        })?;
    Ok(Json(User {
        id,
        name,
        preview,
        notes: notes as usize,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extractors_and_question_marks_in_and_out_of_regions() {
    let (app, _dir) = app();
    let Json(user) = show_user(State(app.clone()), Path(1)).await.unwrap();
    assert_eq!(
        user,
        User {
            id: 1,
            name: "ada".into(),
            preview: "preview 1".into(),
            notes: 2
        }
    );
    assert!(matches!(
        show_user(State(app.clone()), Path(99)).await,
        Err(AppError::NotFound)
    ));
    assert!(matches!(
        show_user(State(app), Path(13)).await,
        Err(AppError::Upstream(UpstreamError(_)))
    ));
}

#[derive(Deserialize)]
struct NewNote {
    user: i64,
    title: String,
}

/// 2. Early `return` before any region, a transaction in blocking code, a notification in `io!`.
#[blocking_first]
async fn create_note(
    State(app): State<App>,
    Json(new): Json<NewNote>,
) -> Result<(StatusCode, Json<i64>), AppError> {
    if new.title.trim().is_empty() {
        return Err(AppError::Invalid("empty title"));
    }
    // A transaction borrows its connection and is not `Send`: it lives in a block that ends
    // before the region, as it would have to before any `.await`.
    let id = {
        let mut connection = app.pool.get()?;
        let transaction = connection.transaction()?;
        transaction.execute(
            "insert into notes (user, title) values (?1, ?2)",
            (new.user, &new.title),
        )?;
        let id = transaction.last_insert_rowid();
        transaction.commit()?;
        id
    };
    io! { app.upstream.preview(id).await? };
    Ok((StatusCode::CREATED, Json(id)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_return_transaction_and_region() {
    let (app, _dir) = app();
    let new = |title: &str| {
        Json(NewNote {
            user: 2,
            title: title.into(),
        })
    };
    let (status, Json(id)) = create_note(State(app.clone()), new("fourth"))
        .await
        .unwrap();
    assert_eq!((status, id), (StatusCode::CREATED, 4));
    assert!(matches!(
        create_note(State(app.clone()), new("  ")).await,
        Err(AppError::Invalid("empty title"))
    ));
    let count: i64 = app
        .pool
        .get()
        .unwrap()
        .query_row("select count(*) from notes", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 4, "the rejected note was not written");
}

/// 3. `impl IntoResponse`, `let`-`else` on a query parameter.
#[blocking_first]
async fn search(
    State(app): State<App>,
    Query(params): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let Some(term) = params.get("q") else {
        return (StatusCode::BAD_REQUEST, "missing q".to_string());
    };
    let connection = app.pool.get().unwrap();
    let mut query = connection
        .prepare("select title from notes where title like ?1 order by id")
        .unwrap();
    let titles: Vec<String> = query
        .query_map([format!("%{term}%")], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (StatusCode::OK, titles.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impl_into_response_and_let_else() {
    let (app, _dir) = app();
    let query = |pairs: &[(&str, &str)]| {
        Query(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    let found = search(State(app.clone()), query(&[("q", "ir")]))
        .await
        .into_response();
    assert_eq!(found.status(), StatusCode::OK);
    let body = axum::body::to_bytes(found.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"first,third");
    let missing = search(State(app), query(&[])).await.into_response();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
}

/// 4. A labeled loop left with `break` and `continue` from inside `io!`.
#[blocking_first]
async fn crawl(State(app): State<App>) -> Result<Vec<u32>, AppError> {
    let mut kept = Vec::new();
    let mut cursor = 0;
    'pages: loop {
        let page = io! {
            let page = app.upstream.page(cursor).await?;
            cursor += 1;
            if page.is_empty() {
                break 'pages;
            }
            if cursor == 2 {
                // Page 1 is skipped from inside the region.
                continue 'pages;
            }
            page
        };
        assert_blocking_thread();
        kept.extend(page);
    }
    assert_blocking_thread();
    Ok(kept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_left_from_inside_regions() {
    let (app, _dir) = app();
    assert_eq!(
        crawl(State(app)).await.unwrap(),
        [0, 1, 20, 21, 30, 31, 40, 41]
    );
}

/// 5. `match` arms that are regions, blocks with regions, and an early `return`.
#[blocking_first]
async fn classify(State(app): State<App>, Path(kind): Path<String>) -> Result<String, AppError> {
    let value = match kind.as_str() {
        "local" => {
            let connection = app.pool.get()?;
            let users: i64 =
                connection.query_row("select count(*) from users", [], |row| row.get(0))?;
            users.to_string()
        }
        "remote" => io! { app.upstream.preview(2).await? },
        "both" => {
            let name: String =
                app.pool
                    .get()?
                    .query_row("select name from users where id = 2", [], |row| row.get(0))?;
            let preview = io! { app.upstream.preview(2).await? };
            format!("{name}: {preview}")
        }
        _ => return Err(AppError::Invalid("unknown kind")),
    };
    assert_blocking_thread();
    Ok(value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_arms_with_regions() {
    let (app, _dir) = app();
    let run = |kind: &str| classify(State(app.clone()), Path(kind.to_string()));
    assert_eq!(run("local").await.unwrap(), "3");
    assert_eq!(run("remote").await.unwrap(), "preview 2");
    assert_eq!(run("both").await.unwrap(), "brian: preview 2");
    assert!(matches!(
        run("other").await,
        Err(AppError::Invalid("unknown kind"))
    ));
}

async fn find_name(id: i64) -> Option<String> {
    tokio::task::yield_now().await;
    (id < 10).then(|| format!("user {id}"))
}

/// 6. `let`-`else` whose initializer is a region (written with parentheses, so the initializer
/// does not end in `}`).
#[blocking_first]
async fn greeting(Path(id): Path<i64>) -> String {
    let Some(name) = io!(find_name(id).await) else {
        return "hello, stranger".into();
    };
    assert_blocking_thread();
    format!("hello, {name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn let_else_around_a_region() {
    assert_eq!(greeting(Path(3)).await, "hello, user 3");
    assert_eq!(greeting(Path(30)).await, "hello, stranger");
}

/// 7. Nested blocks, a labeled block left from inside a region, a region in an inner block.
#[blocking_first]
async fn first_long_title(State(app): State<App>, min: usize) -> Result<String, AppError> {
    let titles: Vec<String> = {
        let connection = app.pool.get()?;
        let mut query = connection.prepare("select title from notes order by id")?;
        query
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?
    };
    let found = 'search: {
        for title in &titles {
            let long = io! {
                tokio::task::yield_now().await;
                if title.len() >= min + 10 {
                    break 'search format!("far too long: {title}");
                }
                title.len() >= min
            };
            if long {
                break 'search title.clone();
            }
        }
        {
            let fallback = io! { app.upstream.preview(0).await? };
            format!("none ({fallback})")
        }
    };
    assert_blocking_thread();
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_and_labeled_blocks() {
    let (app, _dir) = app();
    assert_eq!(
        first_long_title(State(app.clone()), 6).await.unwrap(),
        "second"
    );
    assert_eq!(
        first_long_title(State(app), 9).await.unwrap(),
        "none (preview 0)"
    );
}

async fn remote_bonus(n: u64) -> Result<u64, UpstreamError> {
    tokio::task::yield_now().await;
    if n > 1000 {
        Err(UpstreamError("too big".into()))
    } else {
        Ok(n / 2)
    }
}

/// 8. `Box<dyn Error + Send + Sync>`: `?` converts three different error types, in and out of a
/// region, and a `return` of a boxed error.
#[blocking_first]
async fn boxed_errors(Path(input): Path<String>) -> Result<u64, Box<dyn Error + Send + Sync>> {
    let n: u64 = input.parse()?;
    if n == 0 {
        return Err("zero is not allowed".into());
    }
    let bonus = io! { remote_bonus(n).await? };
    if n == 7 {
        std::fs::read_to_string("/nonexistent/blocking-first/corpus")?;
    }
    Ok(n + bonus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boxed_errors_from_every_part() {
    let run = |s: &str| boxed_errors(Path(s.to_string()));
    assert_eq!(run("10").await.unwrap(), 15);
    assert!(run("ten").await.unwrap_err().to_string().contains("digit"));
    assert_eq!(
        run("0").await.unwrap_err().to_string(),
        "zero is not allowed"
    );
    assert_eq!(
        run("2000").await.unwrap_err().to_string(),
        "upstream: too big"
    );
    assert!(
        run("7")
            .await
            .unwrap_err()
            .downcast::<std::io::Error>()
            .is_ok()
    );
}

/// 9. A generic handler with bounds in the parameter list, over a `Json` body.
#[blocking_first]
async fn total<T: Into<u64> + Copy + Send + 'static>(Json(items): Json<Vec<T>>) -> u64 {
    let local: u64 = items.iter().map(|&item| item.into()).sum();
    let remote = io! {
        tokio::task::yield_now().await;
        items.len() as u64
    };
    local * 100 + remote
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_handler() {
    assert_eq!(total(Json(vec![1u32, 2, 3])).await, 603);
    assert_eq!(total(Json(vec![7u8])).await, 701);
}

/// 10. A `where` clause, an `impl Trait` in the return type's error position.
#[blocking_first]
async fn render<T, E>(value: T, check: E) -> Result<String, impl fmt::Debug>
where
    T: Serialize + Send + 'static,
    E: Fn(&str) -> bool + Send + 'static,
{
    let text = serde_json::to_string(&value).map_err(|err| err.to_string())?;
    let ok = io! {
        tokio::task::yield_now().await;
        check(&text)
    };
    if ok {
        Ok(text)
    } else {
        Err(format!("rejected {text}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_clause_and_impl_trait_error() {
    let short = |s: &str| s.len() < 10;
    assert_eq!(render(vec![1, 2], short).await.unwrap(), "[1,2]");
    assert_eq!(
        format!("{:?}", render("a long string", short).await.unwrap_err()),
        r#""rejected \"a long string\"""#
    );
}

#[derive(Debug, Serialize, PartialEq)]
struct Counts {
    users: i64,
    notes: i64,
    words: usize,
}

fn count(pool: &Pool, table: &str) -> Result<i64, AppError> {
    assert_blocking_thread();
    let connection = pool.get()?;
    Ok(
        connection.query_row(&format!("select count(*) from {table}"), [], |row| {
            row.get(0)
        })?,
    )
}

/// 11. `parallel!` whose branches use `?` (returning from the branch only) and each take their
/// own connection.
#[blocking_first]
async fn counts(State(app): State<App>, table: String) -> Result<Json<Counts>, AppError> {
    let (users, notes, words) = parallel! {
        count(&app.pool, "users"),
        {
            let n = count(&app.pool, &table)?;
            Ok::<_, AppError>(n)
        },
        table.split('_').count(),
    };
    Ok(Json(Counts {
        users: users?,
        notes: notes?,
        words,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_with_question_marks_in_branches() {
    let (app, _dir) = app();
    let Json(found) = counts(State(app.clone()), "notes".into()).await.unwrap();
    assert_eq!(
        found,
        Counts {
            users: 3,
            notes: 3,
            words: 1
        }
    );
    assert!(matches!(
        counts(State(app), "no_such_table".into()).await,
        Err(AppError::Database(message)) if message.contains("no such table")
    ));
}

async fn verify_token(token: &str) -> Option<String> {
    tokio::task::yield_now().await;
    token.strip_prefix("Bearer ").map(str::to_string)
}

/// 12. A plain `.await` outside any region, borrowing a local; `?` on an `Option` converted.
#[blocking_first]
async fn whoami(headers: HeaderMap) -> Result<String, StatusCode> {
    let header = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let user = verify_token(header).await.ok_or(StatusCode::UNAUTHORIZED)?;
    assert_blocking_thread();
    Ok(user.to_uppercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_await_outside_regions() {
    let mut headers = HeaderMap::new();
    assert_eq!(whoami(headers.clone()).await, Err(StatusCode::UNAUTHORIZED));
    headers.insert("authorization", HeaderValue::from_static("Bearer ada"));
    assert_eq!(whoami(headers).await.unwrap(), "ADA");
}

/// 13. `tokio::select!` inside a region (the region around the macro, not in its arguments).
#[blocking_first]
async fn first_of(State(app): State<App>, timeout: Duration) -> String {
    let winner = io! {
        tokio::select! {
            preview = app.upstream.preview(5) => preview.unwrap_or_default(),
            () = tokio::time::sleep(timeout) => "timed out".to_string(),
        }
    };
    assert_blocking_thread();
    winner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_inside_a_region() {
    let (mut app, _dir) = app();
    assert_eq!(
        first_of(State(app.clone()), Duration::from_secs(30)).await,
        "preview 5"
    );
    app.upstream.delay = Duration::from_secs(30);
    assert_eq!(
        first_of(State(app), Duration::from_millis(5)).await,
        "timed out"
    );
}

/// 14. Retries: `return` from inside a `match` on a region's value, `continue` after blocking
/// back-off, an unreachable tail.
#[blocking_first]
async fn with_retries(State(app): State<App>, failures: usize) -> Result<String, AppError> {
    for attempt in 0..3 {
        match io! { app.upstream.flaky(failures).await } {
            Ok(value) => return Ok(format!("{value} (attempt {attempt})")),
            Err(_) if attempt < 2 => {
                assert_blocking_thread();
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Err(err) => return Err(err.into()),
        }
    }
    unreachable!("the last attempt returns")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_returns_from_match_arms() {
    let (app, _dir) = app();
    assert_eq!(
        with_retries(State(app.clone()), 2).await.unwrap(),
        "ok after 2 (attempt 2)"
    );
    app.upstream.calls.store(0, Ordering::SeqCst);
    assert!(matches!(
        with_retries(State(app), 5).await,
        Err(AppError::Upstream(UpstreamError(message))) if message == "attempt 2 failed"
    ));
}

async fn double(x: u32) -> u32 {
    tokio::task::yield_now().await;
    x * 2
}

/// 15. `while let` with a region in its body and a `break` out of blocking code.
#[blocking_first]
async fn drain(Json(mut queue): Json<Vec<u32>>) -> (u32, usize) {
    let mut sum = 0;
    while let Some(x) = queue.pop() {
        sum += io! { double(x).await };
        assert_blocking_thread();
        if sum > 100 {
            break;
        }
    }
    (sum, queue.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_let_with_a_region() {
    assert_eq!(drain(Json(vec![1, 2, 3])).await, (12, 0));
    assert_eq!(drain(Json(vec![1, 2, 60, 10])).await, (140, 2));
}

async fn double_signed(x: i32) -> i32 {
    tokio::task::yield_now().await;
    x * 2
}

/// 15b. An edition-2024 let chain in a `while` condition, with a region in the loop.
#[blocking_first]
async fn drain_positive(Json(mut queue): Json<Vec<i32>>) -> (i32, usize) {
    let mut sum = 0;
    while let Some(x) = queue.pop()
        && x > 0
    {
        sum += io! { double_signed(x).await };
        assert_blocking_thread();
    }
    assert_blocking_thread();
    (sum, queue.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_let_chain_with_a_region() {
    assert_eq!(drain_positive(Json(vec![1, -1, 2, 3])).await, (10, 1));
    assert_eq!(drain_positive(Json(vec![4])).await, (8, 0));
}

/// 16. `?` on `Option` in and out of a region; an `io!` in tail position.
#[blocking_first]
async fn initials(Path(id): Path<i64>) -> Option<String> {
    let name = io! { find_name(id).await? };
    let first = name.chars().next()?;
    io! {
        tokio::task::yield_now().await;
        Some(format!("{first}{}", name.chars().last()?))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn option_question_marks_and_a_tail_region() {
    assert_eq!(initials(Path(4)).await.as_deref(), Some("u4"));
    assert_eq!(initials(Path(40)).await, None);
}

/// 17. A unit handler whose only work is a status: blocking code, then a tail region with the
/// status as its value.
#[blocking_first]
async fn touch(State(app): State<App>, Path(id): Path<i64>) -> StatusCode {
    let exists = app
        .pool
        .get()
        .unwrap()
        .query_row("select 1 from users where id = ?1", [id], |_| Ok(()))
        .is_ok();
    if !exists {
        return StatusCode::NOT_FOUND;
    }
    io! {
        match app.upstream.preview(id).await {
            Ok(_) => StatusCode::NO_CONTENT,
            Err(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_from_a_tail_region() {
    let (app, _dir) = app();
    assert_eq!(
        touch(State(app.clone()), Path(1)).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        touch(State(app.clone()), Path(13)).await,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(touch(State(app), Path(77)).await, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "current_thread")]
async fn the_corpus_runs_on_a_current_thread_runtime_too() {
    let (app, _dir) = app();
    let Json(user) = show_user(State(app.clone()), Path(2)).await.unwrap();
    assert_eq!(user.notes, 1);
    assert_eq!(crawl(State(app.clone())).await.unwrap().len(), 8);
    assert_eq!(
        first_long_title(State(app.clone()), 6).await.unwrap(),
        "second"
    );
    let Json(found) = counts(State(app), "notes".into()).await.unwrap();
    assert_eq!(found.users, 3);
}

/// 16. Locals named `io` and `parallel` used in other macros' arguments: `io != 0` is a
/// comparison, not a region (regression: it was rejected as "`io!` inside the arguments of
/// `assert!` cannot be rewritten").
#[blocking_first]
async fn locals_named_like_regions(io: u32, parallel: u32) -> String {
    assert!(io != 0);
    assert!(parallel != io, "{} {}", io, parallel);
    debug_assert!(io != parallel);
    let waited = io! { double_signed(1).await };
    assert_blocking_thread();
    format!("{io} {parallel} {waited}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locals_named_io_and_parallel_are_not_regions() {
    assert_eq!(locals_named_like_regions(1, 2).await, "1 2 2");
}

#[derive(Deserialize)]
struct PasteForm {
    text: String,
}

/// 17. A generic handler without written bounds, as in matze/wastebin: the extractor's error type
/// `E` is inferred at `.route`, the error is an `impl IntoResponse`, lints pass through
/// (`#[expect]`), with a let chain and an inner async block awaited from blocking code.
#[blocking_first]
#[expect(unused_variables, reason = "lint attributes reach the body")]
async fn paste<E>(form: Result<axum::Form<PasteForm>, E>) -> Result<String, impl IntoResponse> {
    let unread = 0;
    let Ok(axum::Form(form)) = form else {
        return Err(StatusCode::BAD_REQUEST);
    };
    let upper = async { form.text.to_uppercase() }.await;
    assert_blocking_thread();
    if let Some(first) = upper.chars().next()
        && first.is_alphabetic()
    {
        Ok(upper)
    } else {
        Err(StatusCode::UNPROCESSABLE_ENTITY)
    }
}

/// A trait bounded by `Send` only, as in rustic-rs/rustic_server: the attribute adds `'static`.
trait PathParts: Send {
    fn parts(&self) -> String;
}

struct ConfigPath(String);

impl PathParts for ConfigPath {
    fn parts(&self) -> String {
        format!("config/{}", self.0)
    }
}

/// 18. A type parameter with a `Send`-only trait bound, and an `impl Trait` argument.
#[blocking_first]
async fn get_config<P: PathParts>(path: P, also: impl PathParts) -> String {
    assert_blocking_thread();
    let wait = io! { double_signed(1).await };
    format!("{} {} {wait}", path.parts(), also.parts())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_handlers_without_written_bounds_compile_route_and_run() {
    use tower::ServiceExt;
    let app = axum::Router::new().route("/", axum::routing::post(paste));
    let send = |body: &'static str| {
        axum::http::Request::post("/")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(axum::body::Body::from(body))
            .unwrap()
    };
    let ok = app.clone().oneshot(send("text=hello")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let body = axum::body::to_bytes(ok.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"HELLO");
    let digits = app.clone().oneshot(send("text=42")).await.unwrap();
    assert_eq!(digits.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let rejected = app.oneshot(send("nope")).await.unwrap();
    assert_eq!(rejected.status(), StatusCode::BAD_REQUEST);

    let both = get_config(ConfigPath("a".into()), ConfigPath("b".into())).await;
    assert_eq!(both, "config/a config/b 2");
}
