//! `blocking_first::pool` with diesel (feature `diesel`): a `Conn` of diesel's r2d2 manager is
//! taken as `&mut conn` by every diesel API a handler uses (queries, inserts with `returning`,
//! transactions that commit and roll back, migrations), in blocking code; and, since diesel's
//! connections must be `Send` and so this `Conn` is, one held across `io!` or an `.await` is
//! reported at run time, once per function, naming it. (Own test binary: it installs the
//! process-wide tracing subscriber.)

mod common;

use std::time::Duration;

use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use blocking_first::pool::{Conn, Pool};
use common::warnings::{Warning, install_subscriber};
use diesel::prelude::*;
use diesel::r2d2::ConnectionManager;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

type Manager = ConnectionManager<SqliteConnection>;
type Db = Pool<Manager>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The diesel example's schema: `users (id, name, hair_color)`.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../examples/diesel/migrations");

diesel::table! {
    users (id) {
        id -> Integer,
        name -> Text,
        hair_color -> Nullable<Text>,
    }
}

#[derive(Debug, PartialEq, Queryable, Selectable)]
#[diesel(table_name = users)]
struct User {
    id: i32,
    name: String,
    hair_color: Option<String>,
}

static DB: Limit = Limit::new("diesel-db", 2);

/// A pool on a fresh database file, its schema made by the migrations through a `Conn`.
async fn database(dir: &tempfile::TempDir) -> Db {
    let url = dir
        .path()
        .join("users.sqlite")
        .to_string_lossy()
        .into_owned();
    let db = Pool::build(&DB, Manager::new(url)).await.unwrap();
    let migrated = tokio::task::block_in_place(|| {
        let mut conn = db.get().unwrap();
        // `MigrationHarness` on the `Conn` itself.
        conn.run_pending_migrations(MIGRATIONS).unwrap().len()
    });
    assert_eq!(migrated, 1);
    db
}

/// Every call takes `&mut conn`, the `Conn` as it is.
#[blocking_first(limit = DB)]
async fn add_and_list(db: Db, name: &'static str) -> Result<(User, Vec<User>), BoxError> {
    common::assert_blocking_thread();
    let mut conn = db.get()?;
    let added = diesel::insert_into(users::table)
        .values((users::name.eq(name), users::hair_color.eq("brown")))
        .returning(User::as_returning())
        .get_result(&mut conn)?;
    let updated = diesel::update(users::table.find(added.id))
        .set(users::hair_color.eq("grey"))
        .execute(&mut conn)?;
    assert_eq!(updated, 1);
    let all = users::table
        .select(User::as_select())
        .order(users::id)
        .load(&mut conn)?;
    Ok((added, all))
}

/// A transaction through the `Conn`: committed when the closure returns `Ok`, rolled back when
/// it returns `Err`.
#[blocking_first(limit = DB)]
async fn transactions(db: Db) -> Result<i64, BoxError> {
    let mut conn = db.get()?;
    conn.transaction(|conn| {
        diesel::insert_into(users::table)
            .values(users::name.eq("committed"))
            .execute(conn)
    })?;
    let rolled_back: Result<(), diesel::result::Error> = conn.transaction(|conn| {
        diesel::insert_into(users::table)
            .values(users::name.eq("rolled back"))
            .execute(conn)?;
        Err(diesel::result::Error::RollbackTransaction)
    });
    assert!(rolled_back.is_err());
    Ok(users::table.count().get_result(&mut conn)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diesel_takes_the_conn_itself_in_queries_transactions_and_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;

    let (added, all) = add_and_list(db.clone(), "Ada").await.unwrap();
    assert_eq!(added.name, "Ada");
    assert_eq!(added.hair_color.as_deref(), Some("brown"));
    assert_eq!(
        all,
        vec![User {
            id: added.id,
            name: "Ada".into(),
            hair_color: Some("grey".into()),
        }]
    );

    // One row before, one committed, none of the rolled-back one.
    assert_eq!(transactions(db.clone()).await.unwrap(), 2);
    let names: Vec<String> = tokio::task::block_in_place(|| {
        users::table
            .select(users::name)
            .order(users::id)
            .load(&mut db.get().unwrap())
            .unwrap()
    });
    assert_eq!(names, ["Ada", "committed"]);

    // `Conn::establish` is not how a pooled connection is made, and says so.
    let error = match <Conn<Manager> as Connection>::establish("ignored") {
        Ok(_) => panic!("a Conn cannot be established directly"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("comes from a Pool"), "{error}");
}

fn warnings_of(function: &str) -> Vec<Warning> {
    common::warnings::at("blocking_first::pool")
        .into_iter()
        .filter(|w| {
            w.fields
                .get("function")
                .is_some_and(|f| f.ends_with(function))
        })
        .collect()
}

/// A diesel connection held across `io!`: it compiles (diesel's connections are `Send`), and the
/// stretch that ends holding it says so.
#[blocking_first(limit = DB)]
async fn held_across_io(db: Db) -> Result<i64, BoxError> {
    let mut conn = db.get()?;
    let before: i64 = users::table.count().get_result(&mut conn)?;
    io!(tokio::time::sleep(Duration::from_millis(1)).await);
    let after: i64 = users::table.count().get_result(&mut conn)?;
    Ok(before + after)
}

/// The same across a plain `.await` that suspends the body.
#[blocking_first(limit = DB)]
async fn held_across_await(db: Db) -> Result<i64, BoxError> {
    let mut conn = db.get()?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(users::table.count().get_result(&mut conn)?)
}

/// Connections given back before each region: nothing to say.
#[blocking_first(limit = DB)]
async fn scoped(db: Db) -> Result<i64, BoxError> {
    let before: i64 = users::table.count().get_result(&mut db.get()?)?;
    io!(tokio::time::sleep(Duration::from_millis(1)).await);
    let after: i64 = {
        let mut conn = db.get()?;
        users::table.count().get_result(&mut conn)?
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let last = db.with(|conn| users::table.count().get_result::<i64>(conn))??;
    Ok(before + after + last)
}

/// A connection sent to another thread and dropped there is no longer counted in the body.
#[blocking_first(limit = DB)]
async fn sent_away(db: Db) -> Result<(), BoxError> {
    let conn = db.get()?;
    std::thread::spawn(move || drop(conn)).join().unwrap();
    io!(tokio::time::sleep(Duration::from_millis(1)).await);
    let again = db.get()?;
    std::thread::spawn(move || drop(again)).join().unwrap();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diesel_conn_held_across_io_or_await_is_reported_once_per_function() {
    install_subscriber();
    let dir = tempfile::tempdir().unwrap();
    let db = database(&dir).await;
    let before = blocking_first::stats().connection_warnings;

    for _ in 0..3 {
        assert_eq!(scoped(db.clone()).await.unwrap(), 0);
        sent_away(db.clone()).await.unwrap();
    }
    assert!(warnings_of("scoped").is_empty());
    assert!(warnings_of("sent_away").is_empty());
    assert_eq!(blocking_first::stats().connection_warnings, before);

    for _ in 0..3 {
        assert_eq!(held_across_io(db.clone()).await.unwrap(), 0);
        assert_eq!(held_across_await(db.clone()).await.unwrap(), 0);
    }
    let io = warnings_of("held_across_io");
    assert_eq!(io.len(), 1, "{io:?}");
    let message = &io[0].fields["message"];
    assert!(
        message.contains("`io!` region or an `.await` that suspended it, with 1 connection(s)")
            && message.contains("limit `diesel-db`")
            && message.contains("End the connection's scope"),
        "{message}"
    );
    assert!(io[0].fields["file"].ends_with("diesel.rs"), "{io:?}");
    assert_eq!(warnings_of("held_across_await").len(), 1);
    assert_eq!(blocking_first::stats().connection_warnings, before + 2);

    // Every connection came back.
    let state = db.state();
    assert_eq!(state.idle_connections, state.connections);
}

static SECOND: Limit = Limit::new("diesel-second", 2);

/// Connections sent to another thread, or into a `parallel!` branch, and dropped there: the
/// next one taken is not a second one.
#[blocking_first(limit = SECOND)]
async fn dropped_elsewhere(db: Db) -> Result<(), BoxError> {
    let conn = db.get()?;
    std::thread::spawn(move || drop(conn)).join().unwrap();
    let again = db.get()?;
    parallel!(drop(again), std::thread::sleep(Duration::from_millis(5)));
    let _third = db.get()?;
    Ok(())
}

/// Two at once under one slot: the pool's warning about a second connection.
#[blocking_first(limit = SECOND)]
async fn two_at_once(db: Db) -> Result<(), BoxError> {
    let _first = db.get()?;
    let _second = db.get()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diesel_conn_dropped_on_another_thread_is_not_counted_as_held_there() {
    install_subscriber();
    let dir = tempfile::tempdir().unwrap();
    let url = dir
        .path()
        .join("second.sqlite")
        .to_string_lossy()
        .into_owned();
    let second = |w: &Warning| w.fields["message"].contains("a second connection");
    let db = Pool::build(&SECOND, Manager::new(url.clone()))
        .await
        .unwrap();
    for _ in 0..3 {
        dropped_elsewhere(db.clone()).await.unwrap();
    }
    let pool_warnings =
        |w: &Warning| w.fields.get("pool_limit").map(String::as_str) == Some("diesel-second");
    assert!(
        !common::warnings::at("blocking_first::pool")
            .iter()
            .any(|w| pool_warnings(w) && second(w)),
        "{:?}",
        common::warnings::at("blocking_first::pool")
    );
    // The warning itself still works.
    two_at_once(db.clone()).await.unwrap();
    let seconds = common::warnings::at("blocking_first::pool")
        .into_iter()
        .filter(|w| pool_warnings(w) && second(w))
        .count();
    assert_eq!(seconds, 1);
}

#[test]
fn a_diesel_conn_is_send_and_every_other_conn_is_not() {
    fn is_send<T: Send>() {}
    is_send::<Conn<Manager>>();
    // The others stay `!Send` (the compile error for one held across `io!`):
    // `ui/tests/ui/fail/pool_conn_across_io.rs`.
}
