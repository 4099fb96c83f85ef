//! The database: a pool of synchronous connections (PostgreSQL or SQLite) behind two blocking
//! calls, with gauges of connections in use and of threads waiting for one.

use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

use postgres::types::Type;
use r2d2::Pool;
use r2d2_postgres::PostgresConnectionManager;
use r2d2_sqlite::SqliteConnectionManager;

use crate::gauge::Gauge;

pub type DbResult<T> = Result<T, String>;

enum Backend {
    Sqlite(Pool<SqliteConnectionManager>),
    Postgres(Pool<PostgresConnectionManager<postgres::NoTls>>),
}

/// A table `kv(id, v)` behind a pool; every call takes a connection and gives it back.
///
/// PostgreSQL statements go as typed unnamed statements (one round trip, no prepare).
pub struct Db {
    backend: Backend,
    /// How long each call keeps its connection busy beyond the query itself.
    query_time: Duration,
    /// Connections taken from the pool and not yet given back.
    pub in_use: Gauge,
    /// Threads blocked in `pool.get()` waiting for a free connection.
    pub waiting: Gauge,
}

impl Db {
    /// A SQLite database in `dir` (WAL mode), `rows` rows, a pool of `size` connections.
    pub fn sqlite(dir: &Path, size: usize, rows: i64, query_time: Duration) -> DbResult<Db> {
        let path = dir.join("loadbench.sqlite3");
        {
            let conn = rusqlite::Connection::open(&path).map_err(|e| e.to_string())?;
            conn.execute_batch(
                "pragma journal_mode = wal;
                 create table kv (id integer primary key, v integer not null);",
            )
            .map_err(|e| e.to_string())?;
            conn.execute(
                "with recursive n(i) as (select 1 union all select i + 1 from n where i < ?1)
                 insert into kv select i, 0 from n",
                [rows],
            )
            .map_err(|e| e.to_string())?;
        }
        let manager = SqliteConnectionManager::file(&path).with_init(|conn| {
            conn.execute_batch("pragma busy_timeout = 10000; pragma synchronous = normal;")
        });
        let pool = pool_builder(size)
            .build(manager)
            .map_err(|e| e.to_string())?;
        Ok(Db::new(Backend::Sqlite(pool), query_time))
    }

    /// The PostgreSQL database at `url`, table recreated with `rows` rows, a pool of `size`.
    pub fn postgres(url: &str, size: usize, rows: i64, query_time: Duration) -> DbResult<Db> {
        let config: postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
        {
            let mut client = config.connect(postgres::NoTls).map_err(|e| e.to_string())?;
            client
                .batch_execute(
                    "drop table if exists kv;
                     create table kv (id bigint primary key, v bigint not null);",
                )
                .map_err(|e| e.to_string())?;
            client
                .execute(
                    "insert into kv select i, 0 from generate_series(1, $1::bigint) as i",
                    &[&rows],
                )
                .map_err(|e| e.to_string())?;
            client
                .batch_execute("vacuum analyze kv")
                .map_err(|e| e.to_string())?;
        }
        let manager = PostgresConnectionManager::new(config, postgres::NoTls);
        let pool = pool_builder(size)
            .build(manager)
            .map_err(|e| e.to_string())?;
        Ok(Db::new(Backend::Postgres(pool), query_time))
    }

    fn new(backend: Backend, query_time: Duration) -> Db {
        Db {
            backend,
            query_time,
            in_use: Gauge::default(),
            waiting: Gauge::default(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        }
    }

    /// `select v from kv where id = ?`: one blocking call.
    pub fn read(&self, id: i64) -> DbResult<i64> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                let conn = self.take(pool)?;
                let _held = self.in_use.enter();
                std::thread::sleep(self.query_time);
                conn.query_row("select v from kv where id = ?1", [id], |row| row.get(0))
                    .map_err(|e| e.to_string())
            }
            Backend::Postgres(pool) => {
                let mut conn = self.take(pool)?;
                let _held = self.in_use.enter();
                self.pg_busy(&mut conn)?;
                let row = conn
                    .query_typed_one("select v from kv where id = $1", &[(&id, Type::INT8)])
                    .map_err(pg_error)?;
                Ok(row.get(0))
            }
        }
    }

    /// `select v from kv where id = ?` keeping the connection busy for `cost(n)` instead of the
    /// query time, `n` being the connections in use counting this one (`--adaptive`'s simulated
    /// resource).
    pub fn read_costed(&self, id: i64, cost: impl FnOnce(usize) -> Duration) -> DbResult<i64> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                let conn = self.take(pool)?;
                let _held = self.in_use.enter();
                std::thread::sleep(cost(self.in_use.now()));
                conn.query_row("select v from kv where id = ?1", [id], |row| row.get(0))
                    .map_err(|e| e.to_string())
            }
            Backend::Postgres(pool) => {
                let mut conn = self.take(pool)?;
                let _held = self.in_use.enter();
                let busy = cost(self.in_use.now());
                conn.batch_execute(&format!("select pg_sleep({})", busy.as_secs_f64()))
                    .map_err(pg_error)?;
                let row = conn
                    .query_typed_one("select v from kv where id = $1", &[(&id, Type::INT8)])
                    .map_err(pg_error)?;
                Ok(row.get(0))
            }
        }
    }

    /// `update kv set v = v + ? where id = ?`: one blocking call.
    pub fn write(&self, id: i64, delta: i64) -> DbResult<()> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                let conn = self.take(pool)?;
                let _held = self.in_use.enter();
                std::thread::sleep(self.query_time);
                conn.execute("update kv set v = v + ?2 where id = ?1", [id, delta])
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Backend::Postgres(pool) => {
                let mut conn = self.take(pool)?;
                let _held = self.in_use.enter();
                self.pg_busy(&mut conn)?;
                conn.query_typed(
                    "update kv set v = v + $2 where id = $1",
                    &[(&id, Type::INT8), (&delta, Type::INT8)],
                )
                .map(drop)
                .map_err(pg_error)
            }
        }
    }

    fn take<M: r2d2::ManageConnection>(
        &self,
        pool: &Pool<M>,
    ) -> DbResult<r2d2::PooledConnection<M>> {
        let taken = match pool.try_get() {
            Some(conn) => Ok(conn),
            None => {
                let _waiting = self.waiting.enter();
                pool.get().map_err(|e| format!("pool: {e}"))
            }
        };
        if CHECKOUT.get().is_some() {
            CHECKOUT.set(Some(Some(Instant::now())));
        }
        taken
    }

    /// The database itself stays busy on this connection for the configured query time.
    fn pg_busy(&self, conn: &mut postgres::Client) -> DbResult<()> {
        if self.query_time.is_zero() {
            return Ok(());
        }
        conn.batch_execute(&format!(
            "select pg_sleep({})",
            self.query_time.as_secs_f64()
        ))
        .map_err(pg_error)
    }
}

thread_local! {
    /// Inside [`noting_checkout`]: `Some(when the last checkout got its connection)`.
    static CHECKOUT: Cell<Option<Option<Instant>>> = const { Cell::new(None) };
}

/// Runs `f` and returns, with its result, when its last connection checkout on this thread got
/// a connection (`None`: it took none). The timeline's variant (b) splits its wait for the pool
/// from its query with it; outside, a checkout costs one thread-local read.
pub fn noting_checkout<T>(f: impl FnOnce() -> T) -> (T, Option<Instant>) {
    let outer = CHECKOUT.replace(Some(None));
    let result = f();
    let noted = CHECKOUT.replace(outer).flatten();
    (result, noted)
}

fn pool_builder<M: r2d2::ManageConnection>(size: usize) -> r2d2::Builder<M> {
    Pool::builder()
        .max_size(size as u32)
        .min_idle(Some(size as u32))
        .connection_timeout(Duration::from_secs(30))
        // No health-check query on every checkout: a round trip per call would double the
        // database work of this benchmark (and Django, for one, does not check by default).
        .test_on_check_out(false)
}

/// A PostgreSQL error with the server's message and code, not just "db error".
fn pg_error(err: postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => err.to_string(),
    }
}
