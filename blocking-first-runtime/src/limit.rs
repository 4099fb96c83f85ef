//! Caps on how much blocking code runs at once.
//!
//! Every body runs its blocking code under a [`Limit`]: the process-wide [`global()`] one, or a
//! named one given as `#[blocking_first(limit = PATH)]`. A body takes one *slot* of its limit
//! for each stretch of blocking code and gives it back when it suspends or finishes, so a body
//! waiting on another service holds no slot. With database connections taken and returned inside
//! blocking code, a cap of `N` also means at most `N` connections in use.
//!
//! ```
//! # use blocking_first_runtime as blocking_first;
//! use blocking_first::limit::{self, Limit};
//!
//! /// Four connections in the pool, so at most four bodies in database code.
//! static DB: Limit = Limit::new("db", 4);
//!
//! // Everything else: at most 32 bodies in blocking code at once (set once, at start-up).
//! limit::set_global_capacity(32).unwrap();
//! assert_eq!(DB.capacity(), Some(4));
//! assert_eq!(limit::global().capacity(), Some(32));
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

mod adaptive;
mod admission;
mod context;
mod error;
mod slot;
mod stats_of;

pub use admission::QUEUE_TIME_INTERVAL;
#[cfg(all(feature = "r2d2", feature = "tracing"))]
pub(crate) use context::job;
#[cfg(feature = "r2d2")]
pub(crate) use context::on_worker;
pub(crate) use context::{
    InStretch, LimitContext, OnWorker, current, enter_context, enter_limit, in_stretch,
};
pub use error::{CapacityError, CapacityErrorKind};
pub(crate) use slot::{Busy, Slot};
pub use stats_of::LimitStats;

use crate::exec::{self, Exec};
use crate::stats;

/// tokio's default `max_blocking_threads`: the global limit's ceiling.
const GLOBAL_CEILING: usize = 512;

static GLOBAL: Limit = Limit::adaptive("global", 2, GLOBAL_CEILING);
/// The global limit's floor (the number of cores) was set.
static GLOBAL_FLOOR: AtomicBool = AtomicBool::new(false);

/// The permits of an unbounded limit's semaphore: more than any process can use, and still
/// within what `Semaphore::try_acquire_many` (a `u32`) can take back in one step.
const UNBOUNDED: usize = if Semaphore::MAX_PERMITS < u32::MAX as usize {
    Semaphore::MAX_PERMITS
} else {
    u32::MAX as usize
};

/// The largest capacity a [`Limit`] accepts.
pub const MAX_CAPACITY: usize = UNBOUNDED - 1;

/// The process-wide limit, used by every `#[blocking_first]` function without a `limit` argument.
///
/// [Adaptive](Limit::adaptive) by default, between the number of cores (at least 2) and 512
/// (tokio's default `max_blocking_threads`): work that burns CPU settles near the cores, work
/// that waits (a sleep, a remote call, a database serving everyone) grows it as far as it keeps
/// its stretch time, and a limit whose every slot is stuck while jobs wait opens more as an
/// unbounded pool would. [`set_global_capacity`] fixes it, [`set_global_unbounded`] removes the
/// cap.
pub fn global() -> &'static Limit {
    if !GLOBAL_FLOOR.load(Ordering::Relaxed) && !GLOBAL_FLOOR.swap(true, Ordering::AcqRel) {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        GLOBAL.set_floor(cores.max(2));
    }
    &GLOBAL
}

/// Caps the [`global()`] limit at `capacity` bodies in blocking code at once: a fixed cap, it
/// stops adapting (0 removes the cap, as [`set_global_unbounded`]).
///
/// Meant for start-up, before any body runs; see [`Limit::set_capacity`] for when it fails.
pub fn set_global_capacity(capacity: usize) -> Result<(), CapacityError> {
    global().set_capacity(capacity)
}

/// Removes the [`global()`] limit's cap: a loop starts whenever none is idle, and tokio's
/// `max_blocking_threads` is the only bound (the default before the global limit adapted).
///
/// Meant for start-up, before any body runs; see [`Limit::set_capacity`] for when it fails.
pub fn set_global_unbounded() -> Result<(), CapacityError> {
    global().set_capacity(0)
}

/// A cap on how many bodies (and [`parallel`](crate::parallel) branches) run blocking code at once.
///
/// Declare one as a `static` and name it in `#[blocking_first(limit = PATH)]`. Waiting for a
/// slot holds no thread: the body waits as an ordinary pending future, in the limit's queue,
/// where bodies that already started go before those that have not.
///
/// Each slot is a *loop*: one thread of tokio's blocking pool that runs the limit's bodies one
/// after another, so a cap of `N` also means at most `N` threads. An idle loop lingers 10 ms
/// before it gives its slot and thread back ([`LimitStats::loops`] counts them); an unbounded
/// limit starts a loop whenever none is idle.
///
/// A body takes a slot for each stretch of blocking code and gives it back while it waits in
/// `io!` or on an `.await`. So whatever it holds across a region (a pooled connection) is *not*
/// covered by the slot: give connections back before `io!` and take a new one after it, or the
/// bodies that took the freed slots can wait for connections that only come back after them.
/// With `blocking_first::pool::Pool` (feature `r2d2`) that mistake does not compile. With a raw
/// pool it is detected: when every slot of a capped limit has been held for at least a second
/// (and 20 of its usual stretches, as the detector saw them) without one given back, while
/// bodies wait to come back from `io!` or an `.await`, a `WARN` event at target `blocking_first::starvation` names the limit and says what
/// to do (at most once per limit every 30 s; counted in [`Stats::starvation_warnings`]).
///
/// ```
/// use blocking_first::blocking_first;
/// use blocking_first::limit::Limit;
///
/// /// As many bodies in database code as the pool has connections.
/// static DB: Limit = Limit::new("db", 8);
///
/// #[blocking_first(limit = DB)]
/// async fn count(name: String) -> usize {
///     name.len() // blocking code, at most 8 bodies at once
/// }
///
/// #[tokio::main]
/// async fn main() {
///     assert_eq!(count("four".into()).await, 4);
///     let stats = DB.stats();
///     assert_eq!((stats.capacity, stats.in_use), (Some(8), 0));
/// }
/// ```
///
/// [`Stats::starvation_warnings`]: crate::Stats::starvation_warnings
pub struct Limit {
    name: &'static str,
    /// Holds `capacity` permits (`UNBOUNDED` when there is no cap): every slot is a permit, so
    /// [`Limit::set_capacity`] can check "nothing in use" and change the cap in one step, by
    /// taking every permit back.
    semaphore: Semaphore,
    /// 0 means "no cap".
    capacity: AtomicUsize,
    /// Pools sized by this limit that are alive: the capacity cannot change under them.
    pools: AtomicUsize,
    /// Serialises capacity changes and pool sizing.
    config: Mutex<()>,
    in_use: AtomicUsize,
    peak: AtomicUsize,
    /// Jobs in the run queue.
    waiting: AtomicUsize,
    /// Bodies that already ran some blocking code waiting in the queue to come back.
    returning: AtomicUsize,
    /// Jobs in the queue that found no loop and no free slot (the others have a loop coming).
    slot_waiters: AtomicUsize,
    /// Slots given back since start: the starvation detector's sign of progress (one relaxed
    /// increment per hop; the detector reads the clock, a hop does not).
    releases: AtomicU64,
    /// When the detector last warned about this limit.
    last_warning: Mutex<Option<Instant>>,
    watched: AtomicBool,
    /// The run queue and the blocking loops that serve it.
    pub(crate) exec: Exec,
    /// Queued jobs at which [`Limit::is_full`] says so (0: never).
    max_waiting: AtomicUsize,
    /// Requests turned away because the queue was full.
    shed: AtomicU64,
    /// Listed in `observe::limits`.
    known: AtomicBool,
    /// Set by [`Limit::adaptive`].
    adaptive: Option<adaptive::Adaptive>,
    /// Shedding by time in queue ([`Limit::with_max_queue_time`]).
    queue_time: admission::QueueTime,
    /// Permits not to hand out again when they come back: an adaptive limit that shrank below
    /// what was taken (`capacity + debt` permits exist).
    debt: AtomicUsize,
}

impl Limit {
    /// A limit of `capacity` slots.
    ///
    /// # Panics
    /// If `capacity` is 0 or above [`MAX_CAPACITY`] (at compile time when used in a `static`).
    pub const fn new(name: &'static str, capacity: usize) -> Limit {
        assert!(capacity > 0, "a Limit needs at least one slot");
        assert!(
            capacity <= MAX_CAPACITY,
            "a Limit has at most MAX_CAPACITY slots"
        );
        Limit::with_capacity(name, capacity)
    }

    /// A limit without a cap: it only counts, for [`Limit::stats`].
    pub const fn unbounded(name: &'static str) -> Limit {
        Limit::with_capacity(name, 0)
    }

    const fn with_capacity(name: &'static str, capacity: usize) -> Limit {
        Limit {
            name,
            semaphore: Semaphore::const_new(permits(capacity)),
            capacity: AtomicUsize::new(capacity),
            pools: AtomicUsize::new(0),
            config: Mutex::new(()),
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            returning: AtomicUsize::new(0),
            slot_waiters: AtomicUsize::new(0),
            releases: AtomicU64::new(0),
            last_warning: Mutex::new(None),
            watched: AtomicBool::new(false),
            exec: Exec::new(),
            max_waiting: AtomicUsize::new(0),
            shed: AtomicU64::new(0),
            known: AtomicBool::new(false),
            adaptive: None,
            queue_time: admission::QueueTime::new(0),
            debt: AtomicUsize::new(0),
        }
    }

    /// The name given at construction.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The cap, or `None` when unbounded.
    pub fn capacity(&self) -> Option<usize> {
        match self.capacity.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }

    /// Changes the cap (0 removes it). Meant for start-up. On an [adaptive](Limit::adaptive)
    /// limit it fixes the cap: the limit stops adapting.
    ///
    /// Fails, changing nothing, if `capacity` is above [`MAX_CAPACITY`], while any slot is
    /// taken or awaited, or while a connection pool sized by this limit is alive. The check and
    /// the change are one step: no body can take a slot in between.
    pub fn set_capacity(&self, capacity: usize) -> Result<(), CapacityError> {
        if capacity > MAX_CAPACITY {
            return Err(self.error(CapacityErrorKind::TooLarge { max: MAX_CAPACITY }));
        }
        let _config = self.lock_config();
        if self.pools.load(Ordering::Acquire) > 0 {
            return Err(self.error(CapacityErrorKind::SizesPool));
        }
        let old = self.capacity.load(Ordering::Acquire);
        // Every permit back at once, or nothing: `permits(old)` fits in a u32 by construction.
        // Idle loops hold one each: they are retired, their permits counted as taken back. A
        // loop just finishing a job is given a moment to go idle. An adaptive limit that shrank
        // has `debt` permits more than its capacity.
        let deadline = Instant::now() + SETTLE;
        loop {
            // Under the queue's lock: no job can be queued between the change and the new
            // permits, where it would find no loop and no permit; and every payment of the debt
            // happens under it too, so the count of permits is exact here.
            let changed = exec::retire_idle(self, |idle| {
                let debt = self.debt.load(Ordering::Acquire);
                let all = u32::try_from(permits(old) + debt).expect("permits fit in a u32");
                let rest = all - u32::try_from(idle).expect("loops fit in a u32");
                let Ok(taken) = self.semaphore.try_acquire_many(rest) else {
                    return false;
                };
                taken.forget();
                self.debt.store(0, Ordering::Release);
                if let Some(adaptive) = &self.adaptive {
                    adaptive.on.store(false, Ordering::Relaxed);
                }
                self.capacity.store(capacity, Ordering::Release);
                self.semaphore.add_permits(permits(capacity));
                true
            });
            if changed {
                return Ok(());
            }
            if Instant::now() >= deadline || !exec::only_loops_busy(self) {
                return Err(self.error(CapacityErrorKind::InUse));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Sizes a connection pool by this limit: returns the capacity, which cannot change (see
    /// [`Limit::set_capacity`]) until the returned guard is dropped with the pool.
    #[cfg_attr(not(feature = "r2d2"), allow(dead_code))]
    pub(crate) fn size_pool(&'static self) -> Result<PoolSizing, CapacityError> {
        let _config = self.lock_config();
        // An adaptive limit's pool has room for its ceiling.
        let ceiling = self
            .adaptive
            .as_ref()
            .filter(|adaptive| adaptive.is_on())
            .map(|adaptive| adaptive.max);
        let Some(size) = ceiling.or(self.capacity()) else {
            return Err(self.error(CapacityErrorKind::Unbounded));
        };
        self.pools.fetch_add(1, Ordering::AcqRel);
        Ok(PoolSizing { limit: self, size })
    }

    fn lock_config(&self) -> std::sync::MutexGuard<'_, ()> {
        self.config.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, kind: CapacityErrorKind) -> CapacityError {
        CapacityError {
            name: self.name,
            kind,
        }
    }

    /// A snapshot of this limit's counters.
    pub fn stats(&self) -> LimitStats {
        LimitStats {
            name: self.name,
            capacity: self.capacity(),
            in_use: self.in_use.load(Ordering::Acquire),
            peak: self.peak.load(Ordering::Acquire),
            waiting: self.waiting.load(Ordering::Acquire),
            loops: self.exec.loops(),
            max_waiting: self.max_waiting(),
            max_queue_time: self.max_queue_time(),
            shed: self.shed.load(Ordering::Relaxed),
            bounds: self
                .adaptive
                .as_ref()
                .filter(|adaptive| adaptive.is_on())
                .map(|adaptive| (adaptive.min(), adaptive.max)),
        }
    }

    /// Resets the peak to the current use, to watch a new phase of a load.
    pub fn reset_peak(&self) {
        self.peak
            .store(self.in_use.load(Ordering::Acquire), Ordering::Release);
    }

    /// Takes a slot if one is free right now (for a stretch run inline, outside the loops).
    pub(crate) fn try_take(&'static self) -> Option<Slot> {
        self.take_loop_slot().then(|| Slot::new(self))
    }

    /// Takes one permit for good (a loop's, or an inline slot's), if one is free.
    pub(crate) fn take_loop_slot(&self) -> bool {
        match self.semaphore.try_acquire() {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back a permit taken with [`Limit::take_loop_slot`] (kept, if the limit owes one).
    pub(crate) fn give_back_loop_slot(&self) {
        let owed = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |debt| {
                debt.checked_sub(1)
            })
            .is_ok();
        if !owed {
            self.semaphore.add_permits(1);
        }
    }

    /// Counts a job running on a loop as a slot in use until dropped.
    pub(crate) fn busy(&'static self) -> Busy {
        Busy::new(self)
    }

    /// Records jobs entering (`delta` 1) or leaving (-1) the run queue.
    pub(crate) fn queued_changed(&self, delta: isize, returning: bool) {
        if delta > 0 {
            self.waiting.fetch_add(1, Ordering::AcqRel);
            stats::WAITING.fetch_add(1, Ordering::Relaxed);
            if returning {
                // SeqCst: see the detector's `watch`.
                self.returning.fetch_add(1, Ordering::SeqCst);
            }
        } else {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            stats::WAITING.fetch_sub(1, Ordering::Relaxed);
            if returning {
                self.returning.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// A job that found no loop and no free slot entered the queue: an adaptive limit's slots
    /// are wanted.
    pub(crate) fn slot_wait_began(&'static self) {
        self.slot_waiters.fetch_add(1, Ordering::AcqRel);
        self.slot_wanted();
    }

    /// A job counted by [`Limit::slot_wait_began`] left the queue.
    pub(crate) fn slot_wait_ended(&self) {
        self.slot_waiters.fetch_sub(1, Ordering::AcqRel);
    }

    /// Jobs in the queue that found no loop and no free slot.
    pub(crate) fn slot_waiters(&self) -> usize {
        self.slot_waiters.load(Ordering::Acquire)
    }

    pub(crate) fn watch_flag(&self) -> &AtomicBool {
        &self.watched
    }

    pub(crate) fn known_flag(&self) -> &AtomicBool {
        &self.known
    }

    pub(crate) fn returning_waiters(&self) -> usize {
        self.returning.load(Ordering::SeqCst)
    }

    /// Slots taken now.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }

    /// Slots given back since start.
    pub(crate) fn releases(&self) -> u64 {
        self.releases.load(Ordering::Relaxed)
    }

    /// Records a warning at `now` unless one was recorded less than `interval` ago.
    pub(crate) fn claim_warning(&self, now: Instant, interval: std::time::Duration) -> bool {
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| now.duration_since(at) < interval) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// How long [`Limit::set_capacity`] waits for loops that just finished a job to go idle.
const SETTLE: Duration = Duration::from_millis(50);

/// The semaphore permits that stand for `capacity` (0: no cap).
const fn permits(capacity: usize) -> usize {
    if capacity == 0 { UNBOUNDED } else { capacity }
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.stats(), f)
    }
}

/// A pool sized by a [`Limit`] (from `Limit::size_pool`): keeps the capacity fixed while alive.
#[derive(Debug)]
#[cfg_attr(not(feature = "r2d2"), allow(dead_code))]
pub(crate) struct PoolSizing {
    pub(crate) limit: &'static Limit,
    pub(crate) size: usize,
}

impl Drop for PoolSizing {
    fn drop(&mut self) {
        let _config = self.limit.lock_config();
        self.limit.pools.fetch_sub(1, Ordering::AcqRel);
    }
}
