//! axum's `diesel-postgres` example on diesel + SQLite, its handlers written as blocking code with
//! `#[blocking_first]`; plus a handler that calls a slow upstream in `io!` and one that runs two
//! queries side by side with `parallel!`.

use std::error::Error;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use blocking_first::pool::Pool;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use serde::{Deserialize, Serialize};

pub type BoxError = Box<dyn Error + Send + Sync>;
type Db = Pool<ConnectionManager<SqliteConnection>>;

/// At most 4 handlers in database code at once, and 4 pooled connections.
static DB: Limit = Limit::new("db", 4);

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/");

// normally part of your generated schema.rs file
diesel::table! {
    users (id) {
        id -> Integer,
        name -> Text,
        hair_color -> Nullable<Text>,
    }
}

#[derive(Serialize, Deserialize, HasQuery)]
struct User {
    id: i32,
    name: String,
    hair_color: Option<String>,
}

#[derive(Deserialize, Insertable)]
#[diesel(table_name = users)]
struct NewUser {
    name: String,
    hair_color: Option<String>,
}

#[derive(Clone)]
struct App {
    db: Db,
    http: reqwest::Client,
    upstream: String,
}

/// The service: opens the database at `database_url` (running its migrations) and calls the
/// greeting service at `upstream`.
pub async fn app(database_url: &str, upstream: String) -> Result<Router, BoxError> {
    let db = open(database_url.to_owned()).await?;
    let http = reqwest::Client::new();
    Ok(Router::new()
        .route("/user/list", get(list_users))
        .route("/user/create", post(create_user))
        .route("/user/{id}/greeting", get(greet_user))
        .route("/user/stats", get(user_stats))
        .with_state(App { db, http, upstream }))
}

/// Opens the pool and brings the schema up to date: blocking code, like the handlers.
#[blocking_first(limit = DB)]
async fn open(database_url: String) -> Result<Db, BoxError> {
    let builder = diesel::r2d2::Pool::builder().connection_customizer(Box::new(WaitWhenBusy));
    let db = Pool::with_builder(&DB, builder, ConnectionManager::new(database_url))?;
    db.get()?.run_pending_migrations(MIGRATIONS)?;
    Ok(db)
}

/// SQLite has one writer at a time: the others wait for it (up to 5 s) instead of failing at
/// once with "database is locked".
#[derive(Debug)]
struct WaitWhenBusy;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for WaitWhenBusy {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.set_busy_timeout(Duration::from_secs(5));
        Ok(())
    }
}

#[blocking_first(limit = DB)]
async fn create_user(
    State(app): State<App>,
    Json(new_user): Json<NewUser>,
) -> Result<Json<User>, AppError> {
    let mut conn = app.db.get()?;
    let user = diesel::insert_into(users::table)
        .values(new_user)
        .returning(User::as_returning())
        .get_result(&mut conn)?;
    Ok(Json(user))
}

#[blocking_first(limit = DB)]
async fn list_users(State(app): State<App>) -> Result<Json<Vec<User>>, AppError> {
    let mut conn = app.db.get()?;
    Ok(Json(User::query().load(&mut conn)?))
}

#[derive(Serialize, Deserialize)]
struct Greeting {
    user: User,
    greeting: String,
}

/// A user, greeted by the slow upstream: no thread, slot or connection is held while it answers.
#[blocking_first(limit = DB)]
async fn greet_user(
    State(app): State<App>,
    Path(id): Path<i32>,
) -> Result<Json<Greeting>, AppError> {
    // The connection's scope ends with the statement: none is held in `io!`.
    let user = User::query()
        .filter(users::id.eq(id))
        .first(&mut app.db.get()?)?;
    let greeting = io! {
        let answer = app.http.post(&app.upstream).json(&user).send().await?;
        answer.error_for_status()?.json().await?
    };
    Ok(Json(Greeting { user, greeting }))
}

#[derive(Serialize)]
struct Stats {
    users: i64,
    hair_colors: Vec<String>,
}

/// Two queries side by side, each on its own connection (`Pool::with`: the closure is the
/// connection's scope).
#[blocking_first(limit = DB)]
async fn user_stats(State(app): State<App>) -> Result<Json<Stats>, AppError> {
    let (users, hair_colors) = parallel! {
        app.db.with(|conn| users::table.count().get_result(conn)),
        app.db.with(|conn| {
            users::table
                .select(users::hair_color.assume_not_null())
                .filter(users::hair_color.is_not_null())
                .distinct()
                .order(users::hair_color)
                .load(conn)
        }),
    };
    Ok(Json(Stats {
        users: users??,
        hair_colors: hair_colors??,
    }))
}

/// Any error as a response: a missing row is a 404, a failed upstream call a 502, the rest a 500.
struct AppError(StatusCode, String);

impl<E: Error + 'static> From<E> for AppError {
    fn from(err: E) -> Self {
        let any: &dyn Error = &err;
        let status = if matches!(any.downcast_ref(), Some(diesel::NotFound)) {
            StatusCode::NOT_FOUND
        } else if any.is::<reqwest::Error>() {
            StatusCode::BAD_GATEWAY
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        AppError(status, err.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

/// A slow third-party service for the example, on a free port: `POST` a user, get a greeting
/// 100 ms later. Returns its URL.
pub async fn start_upstream() -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/greeting", listener.local_addr()?);
    let greet = post(|Json(user): Json<User>| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Json(format!("Hello, {}!", user.name))
    });
    tokio::spawn(axum::serve(listener, Router::new().route("/greeting", greet)).into_future());
    Ok(url)
}
