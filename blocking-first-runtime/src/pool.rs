//! An [r2d2](https://docs.rs/r2d2) connection pool sized by a [`Limit`], whose connections cannot
//! be held across `io!` or `.await`. Needs the `r2d2` feature.
//!
//! A body takes a slot of its limit for each stretch of blocking code and gives the slot back
//! while it waits in `io!` or on an `.await`, so a slot covers a connection only while the body is
//! in blocking code. A connection kept across a region is outside the cap: with as many
//! connections as slots, once twice the cap's bodies are in flight, the bodies waiting in `io!`
//! keep every connection, the bodies that took their slots block in `get`, and the first bodies
//! cannot get a slot to come back. Everything stalls until r2d2's `connection_timeout` fails the
//! blocked `get`s.
//!
//! [`Pool`] turns that mistake into a compile error:
//! - its size is its limit's capacity, read when it is built, and the capacity cannot change
//!   while the pool is alive ([`Limit::set_capacity`] fails with
//!   [`CapacityErrorKind::SizesPool`](crate::limit::CapacityErrorKind::SizesPool));
//! - its connections, [`Conn`], are neither `Send` nor `Sync`. The body of a `#[blocking_first]`
//!   function must be `Send` because it moves between threads at its await points, which are
//!   every `io!` and every `.await`. A `Conn` alive across one of them does not compile; one
//!   taken, used and dropped in blocking code does. (diesel's connections must be `Send`, so with
//!   the `diesel` feature those of diesel's manager are, and holding one there is reported at run
//!   time instead: see [`Conn`].)
//!
//! The rule: **give the connection back before `io!` or `.await`, and take a new one after.**
//! End its scope to give it back: use it in one statement (`db.get()?.execute(..)?`) or in a
//! block that ends before the region (see [`Conn`]).
//!
//! ```
//! use std::time::Duration;
//!
//! use blocking_first::blocking_first;
//! use blocking_first::limit::Limit;
//! use blocking_first::pool::Pool;
//! use r2d2_sqlite::SqliteConnectionManager;
//!
//! type Error = Box<dyn std::error::Error + Send + Sync>;
//!
//! /// At most four bodies in database code at once, and four connections.
//! static DB: Limit = Limit::new("db", 4);
//!
//! #[blocking_first(limit = DB)]
//! async fn retitle(db: Pool<SqliteConnectionManager>, id: i64) -> Result<String, Error> {
//!     // Blocking code: a connection for one statement, given back at its end.
//!     let title: String =
//!         db.get()?.query_row("select title from notes where id = ?1", [id], |row| row.get(0))?;
//!     // Async code, holding no thread, no slot and no connection.
//!     let title = io! {
//!         tokio::time::sleep(Duration::from_millis(5)).await;
//!         title.to_uppercase()
//!     };
//!     // Blocking again, with a fresh connection.
//!     db.get()?.execute("update notes set title = ?1 where id = ?2", (&title, id))?;
//!     Ok(title)
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Error> {
//! # let manager = SqliteConnectionManager::file("file:pool-module-docs?mode=memory&cache=shared");
//! let db = tokio::task::spawn_blocking(move || Pool::new(&DB, manager)).await??;
//! assert_eq!(db.max_size(), 4);
//! # db.get()?.execute_batch(
//! #     "create table notes (id integer primary key, title text);
//! #      insert into notes values (1, 'draft');",
//! # )?;
//! assert_eq!(retitle(db, 1).await?, "DRAFT");
//! # Ok(()) }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
#[cfg(feature = "tracing")]
use std::sync::atomic::{AtomicBool, Ordering};

use r2d2::ManageConnection;

use crate::limit::{CapacityError, Limit, PoolSizing};

#[cfg(feature = "diesel")]
#[path = "pool_diesel.rs"]
mod diesel;
#[cfg(feature = "diesel")]
#[doc(hidden)]
pub use diesel::ConnTransactionManager;

/// An r2d2 pool with as many connections as its [`Limit`] has slots, handing out connections
/// ([`Conn`]) that cannot be held across `io!` or `.await`.
///
/// Cheap to clone (an `Arc` inside), like `r2d2::Pool`: put it in the application state. The
/// limit's capacity cannot change while any clone of the pool, or any of its connections, is
/// alive. Give every handler that uses the pool that limit, `#[blocking_first(limit = DB)]`: the
/// slots of its own limit are what keep connections and bodies in step. With the `tracing`
/// feature, a connection taken by a body under another limit logs a warning (once per pool).
///
/// ```
/// use std::time::Duration;
///
/// use blocking_first::limit::Limit;
/// use blocking_first::pool::Pool;
/// use r2d2_sqlite::SqliteConnectionManager;
///
/// static DB: Limit = Limit::new("db", 8);
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // The capacity first (say, from the command line), then the pool.
/// DB.set_capacity(2)?;
/// let pool = Pool::with_builder(
///     &DB,
///     r2d2::Pool::builder().connection_timeout(Duration::from_secs(5)),
///     SqliteConnectionManager::memory(),
/// )?;
/// assert_eq!(pool.max_size(), 2);
/// let answer: i64 = pool.get()?.query_row("select 6 * 7", [], |row| row.get(0))?;
/// assert_eq!(answer, 42);
///
/// // The pool and the cap cannot disagree.
/// assert!(DB.set_capacity(3).is_err());
/// drop(pool);
/// DB.set_capacity(3)?;
/// # Ok(()) }
/// ```
pub struct Pool<M: ManageConnection> {
    shared: Arc<Shared<M>>,
}

struct Shared<M: ManageConnection> {
    r2d2: r2d2::Pool<M>,
    /// Keeps the limit's capacity fixed while the pool is alive.
    sizing: PoolSizing,
    /// Whether the warning about a body under another limit was logged.
    #[cfg(feature = "tracing")]
    warned: AtomicBool,
    /// Whether the warning about a second connection under one slot was logged.
    #[cfg(feature = "tracing")]
    warned_second: AtomicBool,
}

impl<M: ManageConnection> Pool<M> {
    /// A pool of `limit`'s capacity of connections made by `manager`, with r2d2's defaults for
    /// everything else.
    ///
    /// Blocks until the pool has opened its connections (r2d2 opens them all at first, unless
    /// `min_idle` says otherwise): build it at start-up, in blocking code
    /// (`tokio::task::spawn_blocking`) when a runtime is running. Set the limit's capacity
    /// before.
    ///
    /// On an [adaptive](Limit::adaptive) limit the pool has room for the limit's ceiling and
    /// opens its floor's worth at first (`min_idle`); the rest are opened as the limit grows.
    ///
    /// # Errors
    /// If `limit` has no cap, or if the connections could not be opened within r2d2's
    /// `connection_timeout` (see [`BuildError`]).
    pub fn new(limit: &'static Limit, manager: M) -> Result<Pool<M>, BuildError> {
        let builder = r2d2::Pool::builder();
        let builder = match limit.stats().bounds {
            // A floor is at most `limit::MAX_CAPACITY`, which fits in a u32.
            Some((floor, _)) => builder.min_idle(u32::try_from(floor).ok()),
            None => builder,
        };
        Pool::with_builder(limit, builder, manager)
    }

    /// [`Pool::new`] with r2d2's other settings (timeouts, `min_idle`, handlers) taken from
    /// `builder`. The builder's `max_size` is replaced by `limit`'s capacity.
    ///
    /// # Errors
    /// As [`Pool::new`].
    ///
    /// # Panics
    /// As `r2d2::Builder::build`: if the builder's `min_idle` is above `limit`'s capacity.
    pub fn with_builder(
        limit: &'static Limit,
        builder: r2d2::Builder<M>,
        manager: M,
    ) -> Result<Pool<M>, BuildError> {
        let sizing = limit.size_pool().map_err(BuildError::Limit)?;
        // A capacity is at most `limit::MAX_CAPACITY`, which fits in a u32.
        let max_size = u32::try_from(sizing.size).expect("a Limit's capacity fits in a u32");
        let r2d2 =
            builder
                .max_size(max_size)
                .build(manager)
                .map_err(|error| BuildError::Connect {
                    limit: limit.name(),
                    error,
                })?;
        Ok(Pool {
            shared: Arc::new(Shared {
                r2d2,
                sizing,
                #[cfg(feature = "tracing")]
                warned: AtomicBool::new(false),
                #[cfg(feature = "tracing")]
                warned_second: AtomicBool::new(false),
            }),
        })
    }

    /// [`Pool::new`] from async code (`async fn main`): opens the connections on tokio's
    /// blocking pool, so no runtime worker blocks meanwhile.
    ///
    /// ```
    /// use blocking_first::limit::Limit;
    /// use blocking_first::pool::Pool;
    /// use r2d2_sqlite::SqliteConnectionManager;
    ///
    /// static DB: Limit = Limit::new("db", 4);
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), blocking_first::pool::BuildError> {
    ///     let db = Pool::build(&DB, SqliteConnectionManager::memory()).await?;
    ///     assert_eq!(db.max_size(), 4);
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    /// As [`Pool::new`].
    ///
    /// # Panics
    /// If building the pool panicked (the panic is re-raised), or if the runtime shut down
    /// before it could run.
    pub async fn build(limit: &'static Limit, manager: M) -> Result<Pool<M>, BuildError>
    where
        M: Send + 'static,
    {
        match tokio::task::spawn_blocking(move || Pool::new(limit, manager)).await {
            Ok(built) => built,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => panic!(
                "blocking-first: the tokio runtime shut down while the pool sized by limit `{}` \
                 was being built",
                limit.name()
            ),
        }
    }

    /// Runs `f` with a connection and gives the connection back as soon as `f` returns.
    ///
    /// The closure is the connection's scope, so it cannot be held across `io!` or `.await` by
    /// mistake, and there is nothing to `drop`. `f` gets the driver's own connection type
    /// (`&mut rusqlite::Connection`, `&mut diesel::SqliteConnection`, ...), which every API of
    /// the driver takes as it is. The outer `Result` is the pool's (no connection in time), the
    /// value is `f`'s, so `?` twice reads naturally:
    ///
    /// ```
    /// # use blocking_first::{blocking_first, limit::Limit, pool::Pool};
    /// # use r2d2_sqlite::SqliteConnectionManager;
    /// # static DB: Limit = Limit::new("db", 2);
    /// #[derive(Debug)]
    /// enum AppError {
    ///     Pool(r2d2::Error),
    ///     Db(rusqlite::Error),
    /// }
    /// # impl From<r2d2::Error> for AppError { fn from(e: r2d2::Error) -> Self { AppError::Pool(e) } }
    /// # impl From<rusqlite::Error> for AppError { fn from(e: rusqlite::Error) -> Self { AppError::Db(e) } }
    ///
    /// #[blocking_first(limit = DB)]
    /// async fn answer(db: Pool<SqliteConnectionManager>) -> Result<i64, AppError> {
    ///     let answer = db.with(|conn| conn.query_row("select 6 * 7", [], |row| row.get(0)))??;
    ///     // No connection is held here: the region below compiles.
    ///     io! { tokio::task::yield_now().await };
    ///     Ok(answer)
    /// }
    /// # #[tokio::main] async fn main() -> Result<(), AppError> {
    /// # let db = Pool::build(&DB, SqliteConnectionManager::memory()).await.unwrap();
    /// # assert_eq!(answer(db).await?, 42);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// r2d2's error, when no connection came free in time (as [`Pool::get`]).
    #[track_caller]
    pub fn with<T>(&self, f: impl FnOnce(&mut M::Connection) -> T) -> Result<T, r2d2::Error> {
        let mut conn = self.get()?;
        Ok(f(&mut conn))
    }

    /// Takes a connection, waiting for one to come free for at most r2d2's
    /// `connection_timeout`.
    ///
    /// Call it from blocking code, and give the connection back before the next `io!` or
    /// `.await` (see [`Conn`]). In a body under this pool's limit, a connection is always free
    /// at once unless connections are held elsewhere (outside any body, or two in one body).
    ///
    /// # Errors
    /// r2d2's error, when no connection came free in time.
    #[track_caller]
    pub fn get(&self) -> Result<Conn<M>, r2d2::Error> {
        if crate::limit::on_worker() {
            self.warn_on_worker(std::panic::Location::caller());
        }
        #[cfg(feature = "tracing")]
        self.warn_if_under_another_limit();
        #[cfg(feature = "tracing")]
        self.warn_if_second_under_one_slot();
        let inner = self.shared.r2d2.get()?;
        Ok(Conn {
            inner,
            #[cfg(feature = "tracing")]
            _held: Held::take(self.key()),
            _body: CountedInBody::take(),
            pool: self.clone(),
            _stays: Stays(PhantomData, PhantomData),
        })
    }

    /// Identifies this pool (and its clones) among the connections a thread holds: an address
    /// as a number, so that the one type in `Conn` that is not `Send` stays its marker, which
    /// rustc names in its error.
    #[cfg(feature = "tracing")]
    fn key(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// The limit this pool is sized by.
    pub fn limit(&self) -> &'static Limit {
        self.shared.sizing.limit
    }

    /// The number of connections the pool keeps at most: its limit's capacity.
    pub fn max_size(&self) -> u32 {
        self.shared.r2d2.max_size()
    }

    /// How many connections the pool has open now, and how many of them are idle.
    pub fn state(&self) -> r2d2::State {
        self.shared.r2d2.state()
    }

    /// A body under another limit takes its slots from that limit, which does not bound this
    /// pool's connections: say which limit to give the handler, once.
    #[cfg(feature = "tracing")]
    fn warn_if_under_another_limit(&self) {
        let Some(body_limit) = crate::limit::current() else {
            return;
        };
        let pool_limit = self.limit();
        if std::ptr::eq(body_limit, pool_limit) || self.shared.warned.swap(true, Ordering::Relaxed)
        {
            return;
        }
        tracing::warn!(
            target: "blocking_first::pool",
            pool_limit = pool_limit.name(),
            body_limit = body_limit.name(),
            "a connection of the pool sized by limit `{}` was taken in blocking code under limit \
             `{}`, whose slots do not bound this pool: annotate the handler with \
             #[blocking_first(limit = ..)] naming the `static` Limit `{}` the pool was built \
             from (logged once per pool)",
            pool_limit.name(),
            body_limit.name(),
            pool_limit.name(),
        );
    }
}

impl<M: ManageConnection> Pool<M> {
    /// A connection taken on a runtime worker outside every body (a handler without the
    /// attribute under `WorkerWatchLayer`, or inside `io!`): waiting for it and using it blocks
    /// every task on that worker. Said once per call site.
    #[cold]
    fn warn_on_worker(&self, at: &'static std::panic::Location<'static>) {
        static WARNED: std::sync::Mutex<Vec<&'static std::panic::Location<'static>>> =
            std::sync::Mutex::new(Vec::new());
        {
            let mut warned = crate::sync::lock_std(&WARNED);
            if warned.contains(&at) {
                return;
            }
            warned.push(at);
        }
        crate::stats::WORKER_WARNINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let limit = self.limit().name();
        let message = format!(
            "a connection of the pool sized by limit `{limit}` was taken on a runtime worker at \
             {at}, outside any #[blocking_first] body: waiting for it and using it blocks every \
             task on that worker. Annotate the handler with #[blocking_first(limit = ..)] naming \
             the `static` Limit `{limit}`, and take connections outside io! (logged once per \
             call site)"
        );
        #[cfg(feature = "tracing")]
        tracing::warn!(target: "blocking_first::pool", pool_limit = limit, at = %at, "{message}");
        #[cfg(not(feature = "tracing"))]
        eprintln!("WARN blocking_first::pool: {message}");
    }
}

#[cfg(feature = "tracing")]
impl<M: ManageConnection> Pool<M> {
    /// A second connection of this pool on a thread that holds one already, under a slot of the
    /// pool's limit: one slot then needs two connections, and a pool with one per slot runs dry
    /// for the other slots (a connection held across `parallel!` while a branch runs inline and
    /// takes its own; two taken in one body). Say so, once, before the wait that may follow.
    fn warn_if_second_under_one_slot(&self) {
        let pool_limit = self.limit();
        let under_its_slot = crate::limit::current().is_some_and(|l| std::ptr::eq(l, pool_limit));
        if !under_its_slot || !Held::holds(self.key()) {
            return;
        }
        if self.shared.warned_second.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::warn!(
            target: "blocking_first::pool",
            pool_limit = pool_limit.name(),
            "a second connection of the pool sized by limit `{}` was taken on a thread that \
             already holds one, under one slot of that limit: the pool has one connection per \
             slot, so the other slots may wait for a connection until r2d2's timeout. Give the \
             first connection back before taking another (end its scope), and hold none across \
             `parallel!` (logged once per pool)",
            pool_limit.name(),
        );
    }
}

#[cfg(feature = "tracing")]
thread_local! {
    /// The connections taken on this thread: their pool, the job of the loop that took them, and
    /// a handle that dies with the connection (wherever it is dropped: a diesel `Conn` may leave
    /// the thread).
    static HELD: std::cell::RefCell<Vec<(usize, u64, std::sync::Weak<()>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// One connection of a pool, counted as held by the thread that took it, in the job of its loop
/// that took it, while it lives. One of an earlier job was leaked (`mem::forget`) or sent away,
/// not held by this job.
#[cfg(feature = "tracing")]
struct Held {
    _alive: Arc<()>,
}

#[cfg(feature = "tracing")]
impl Held {
    fn take(pool: usize) -> Held {
        let alive = Arc::new(());
        let job = crate::limit::job();
        HELD.with_borrow_mut(|held| {
            // What is gone, or not this job's, is not held by it.
            held.retain(|(_, of, handle)| *of == job && handle.strong_count() > 0);
            held.push((pool, job, Arc::downgrade(&alive)));
        });
        Held { _alive: alive }
    }

    fn holds(pool: usize) -> bool {
        let job = crate::limit::job();
        HELD.with_borrow(|held| {
            held.iter()
                .any(|(of, at, handle)| (*of, *at) == (pool, job) && handle.strong_count() > 0)
        })
    }
}

impl<M: ManageConnection> Clone for Pool<M> {
    fn clone(&self) -> Self {
        Pool {
            shared: self.shared.clone(),
        }
    }
}

impl<M: ManageConnection> fmt::Debug for Pool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("limit", &self.limit().name())
            .field("max_size", &self.max_size())
            .field("state", &self.state())
            .finish()
    }
}

/// A connection taken from a [`Pool`]; dropping it gives it back.
///
/// It derefs to the driver's connection (`M::Connection`), so it is used like r2d2's:
/// `pool.get()?.query_row(..)`. Unlike r2d2's, it is neither `Send` nor `Sync`, so it stays in
/// the stretch of blocking code that took it. Holding one across an `io!` region or an `.await`
/// is a compile error ("future cannot be sent between threads safely") that points at the
/// `let` holding the connection and at the `io!` or `.await`:
///
/// ```compile_fail
/// # use blocking_first::blocking_first;
/// # use blocking_first::limit::Limit;
/// # use blocking_first::pool::Pool;
/// # use r2d2_sqlite::SqliteConnectionManager;
/// # type Error = Box<dyn std::error::Error + Send + Sync>;
/// # static DB: Limit = Limit::new("db", 4);
/// #[blocking_first(limit = DB)]
/// async fn touch(db: Pool<SqliteConnectionManager>, id: i64) -> Result<(), Error> {
///     let conn = db.get()?;
///     conn.execute("update notes set seen = seen + 1 where id = ?1", [id])?;
///     io! { tokio::task::yield_now().await };
///     conn.execute("update notes set touched = 1 where id = ?1", [id])?;
///     Ok(())
/// }
/// ```
///
/// Give it back before the region by ending its scope, and take a new one after. Use it in one
/// statement, in a block that ends before the region, or in a closure with [`Pool::with`]:
///
/// ```
/// # use blocking_first::blocking_first;
/// # use blocking_first::limit::Limit;
/// # use blocking_first::pool::Pool;
/// # use r2d2_sqlite::SqliteConnectionManager;
/// # type Error = Box<dyn std::error::Error + Send + Sync>;
/// # static DB: Limit = Limit::new("db", 4);
/// #[blocking_first(limit = DB)]
/// async fn touch(db: Pool<SqliteConnectionManager>, id: i64) -> Result<(), Error> {
///     db.get()?.execute("update notes set seen = seen + 1 where id = ?1", [id])?;
///     io! { tokio::task::yield_now().await };
///     {
///         let conn = db.get()?;
///         conn.execute("update notes set touched = 1 where id = ?1", [id])?;
///         conn.execute("update notes set seen = seen + 1 where id = ?1", [id])?;
///     }
///     tokio::task::yield_now().await;
///     db.with(|conn| conn.execute("update notes set touched = touched + 1 where id = ?1", [id]))??;
///     Ok(())
/// }
/// # #[tokio::main] async fn main() -> Result<(), Error> {
/// # let manager = SqliteConnectionManager::file("file:pool-conn-docs?mode=memory&cache=shared");
/// # let db = tokio::task::spawn_blocking(move || Pool::new(&DB, manager)).await??;
/// # db.get()?.execute_batch("create table notes (id integer, seen integer, touched integer);
/// #                          insert into notes values (1, 0, 0);")?;
/// # touch(db.clone(), 1).await?;
/// # let row: (i64, i64) = db.get()?.query_row("select seen, touched from notes", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
/// # assert_eq!(row, (2, 2));
/// # Ok(()) }
/// ```
///
/// A `drop(conn)` before the region is not enough once the connection has been used through a
/// reference (any method call): rustc still counts it as held across the next await point of
/// the same scope ([rust-lang/rust#116680](https://github.com/rust-lang/rust/issues/116680)),
/// and says "await occurs here, with `mut conn` maybe used later". Ending its scope (a block,
/// or [`Pool::with`]) always is.
///
/// ```compile_fail
/// # use blocking_first::{blocking_first, limit::Limit, pool::Pool};
/// # use r2d2_sqlite::SqliteConnectionManager;
/// # type Error = Box<dyn std::error::Error + Send + Sync>;
/// # static DB: Limit = Limit::new("db", 4);
/// #[blocking_first(limit = DB)]
/// async fn touch(db: Pool<SqliteConnectionManager>, id: i64) -> Result<(), Error> {
///     let conn = db.get()?;
///     conn.execute("update notes set seen = seen + 1 where id = ?1", [id])?;
///     drop(conn); // not enough: rustc still sees `conn` held across the region
///     io! { tokio::task::yield_now().await };
///     Ok(())
/// }
/// ```
///
/// **diesel.** With the `diesel` feature, diesel takes a `Conn` of its r2d2 manager
/// (`Conn<diesel::r2d2::ConnectionManager<C>>`) as it is, as it takes r2d2's own connection:
/// `.get_result(&mut conn)`, `.execute(&mut conn)`, `.load(&mut conn)`, `conn.transaction(..)`,
/// `conn.run_pending_migrations(..)`. diesel requires its connections to be `Send`, so that
/// `Conn` is, and holding it across `io!` or an `.await` compiles. It is caught when it happens
/// instead: the stretch of blocking code that ends (at an `io!`, or at an `.await` that suspends
/// the body; one woken within about 100 µs continues in place, keeping the slot) with a
/// connection taken in the body and not given back logs a `WARN` at target
/// `blocking_first::pool` naming the function, its file and line (once per function; counted in
/// [`Stats::connection_warnings`](crate::Stats::connection_warnings)). The rule is the same. Not
/// seen: a connection taken outside any body, or in another annotated function that returned it,
/// then held by this one. diesel's PostgreSQL `COPY` (`copy_from`, `copy_to`) takes `&mut *conn`
/// (diesel keeps the trait `copy_to` needs to itself). Without the feature, pass `&mut *conn`, or
/// use [`Pool::with`], whose closure gets `&mut` the driver's connection.
///
/// ```
/// # use blocking_first::{blocking_first, limit::Limit, pool::Pool};
/// use diesel::prelude::*;
/// use diesel::r2d2::ConnectionManager;
///
/// # type Error = Box<dyn std::error::Error + Send + Sync>;
/// static DB: Limit = Limit::new("db", 4);
///
/// #[blocking_first(limit = DB)]
/// async fn double(db: Pool<ConnectionManager<SqliteConnection>>) -> Result<i32, Error> {
///     let mut conn = db.get()?;
///     let four = diesel::select(2.into_sql::<diesel::sql_types::Integer>() * 2)
///         .get_result::<i32>(&mut conn)?;
///     Ok(four)
/// }
/// # #[tokio::main] async fn main() -> Result<(), Error> {
/// # let db = Pool::build(&DB, ConnectionManager::new(":memory:")).await?;
/// # assert_eq!(double(db).await?, 4);
/// # Ok(()) }
/// ```
///
/// For the same reason a `Conn` (but a diesel one) cannot move into, or be borrowed by, a
/// `parallel!` branch that may run on another thread, which is every branch but the last: take
/// one in each branch that needs one, and hold none across the `parallel!`. (The last branch runs on the caller's thread,
/// so it compiles to use the caller's connection; but a branch that finds no free slot runs
/// inline under the caller's slot, and its connection is then a second one for that slot.) Every
/// branch runs under a slot (its own, or the caller's when it runs inline on the caller's
/// thread), so while each holds at most one connection and the caller holds none, a connection
/// is free for each.
pub struct Conn<M: ManageConnection> {
    inner: r2d2::PooledConnection<M>,
    /// Counts the connection as held by this thread (for the warning about a second one).
    #[cfg(feature = "tracing")]
    _held: Held,
    /// Counts the connection in the body that took it, if any.
    _body: Option<CountedInBody>,
    /// Keeps the pool, and so the limit's capacity, fixed while the connection is out.
    pool: Pool<M>,
    /// Makes the connection neither `Send` nor `Sync` (but a diesel one `Send`), at no cost.
    _stays: Stays<M>,
}

/// [`Conn`]'s marker. When a body holds a `Conn` across an await, rustc's help line names the
/// innermost type that is not `Send`, the raw pointer: "the trait `Send` is not implemented for
/// `*const pool::EndTheConnScopeBeforeIoOrAwait`". So the pointee's name is the advice. It says
/// "end the scope", not "drop": a `drop(conn)` after a use does not satisfy rustc, ending the
/// scope always does. It holds no data, so whether it is `Send` is a choice: with the `diesel`
/// feature, the marker of diesel's manager is (diesel's `Connection` must be `Send`), and a held
/// diesel connection is reported at run time instead ([`CountedInBody`]).
struct Stays<M>(
    PhantomData<*const EndTheConnScopeBeforeIoOrAwait>,
    PhantomData<fn() -> M>,
);

/// Never instantiated: only named in [`Conn`]'s marker, where rustc's errors show it.
enum EndTheConnScopeBeforeIoOrAwait {}

/// A connection counted in the body whose blocking code took it (in the body's state, not the
/// thread's: a diesel `Conn` may be dropped on another thread). A stretch that ends, at an `io!`
/// or an `.await`, while the count is not 0 says so: the connection is then outside the cap.
struct CountedInBody(Arc<crate::mode::Shared>);

impl CountedInBody {
    fn take() -> Option<CountedInBody> {
        let body = crate::cancel::current_body()?;
        body.conns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(CountedInBody(body))
    }
}

impl Drop for CountedInBody {
    fn drop(&mut self) {
        self.0
            .conns
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<M: ManageConnection> Deref for Conn<M> {
    type Target = M::Connection;

    fn deref(&self) -> &M::Connection {
        &self.inner
    }
}

impl<M: ManageConnection> DerefMut for Conn<M> {
    fn deref_mut(&mut self) -> &mut M::Connection {
        &mut self.inner
    }
}

impl<M> fmt::Debug for Conn<M>
where
    M: ManageConnection,
    M::Connection: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("limit", &self.pool.limit().name())
            .field("connection", &*self.inner)
            .finish()
    }
}

/// Why [`Pool::new`] or [`Pool::with_builder`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// The limit cannot size a pool: it has no cap.
    Limit(CapacityError),
    /// The pool could not open its connections within r2d2's `connection_timeout`.
    Connect {
        /// The name of the limit the pool was sized by.
        limit: &'static str,
        /// r2d2's error, with the connection manager's last error in its message.
        error: r2d2::Error,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Limit(error) => fmt::Display::fmt(error, f),
            BuildError::Connect { limit, error } => write!(
                f,
                "the pool sized by limit `{limit}` could not open its connections ({error}): \
                 check the connection manager's settings (database path or URL), or allow more \
                 time with `Pool::with_builder` and r2d2's `connection_timeout`"
            ),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Limit(error) => Some(error),
            BuildError::Connect { error, .. } => Some(error),
        }
    }
}
