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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod adaptive;
mod admission;

pub use crate::exec::Limit;
pub(crate) use crate::exec::Slot;
#[cfg(all(feature = "r2d2", feature = "tracing"))]
pub(crate) use crate::exec::context::job;
#[cfg(feature = "r2d2")]
pub(crate) use crate::exec::context::on_worker;
pub(crate) use crate::exec::context::{
    InStretch, OnWorker, current, enter_context, enter_limit, in_stretch,
};
use crate::exec::{self};
use crate::slots::Slots;
pub use crate::slots::{
    CapacityError, CapacityErrorKind, LimitStats, MAX_CAPACITY, QUEUE_TIME_INTERVAL,
};

/// tokio's default `max_blocking_threads`: the global limit's ceiling.
const GLOBAL_CEILING: usize = 512;

static GLOBAL: Limit = Limit::adaptive("global", 2, GLOBAL_CEILING);
/// The global limit's floor (the number of cores) was set.
static GLOBAL_FLOOR: AtomicBool = AtomicBool::new(false);

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
        Limit::of(Slots::new(name, capacity))
    }

    /// The name given at construction.
    pub fn name(&self) -> &'static str {
        self.slots.name()
    }

    /// The cap, or `None` when unbounded.
    pub fn capacity(&self) -> Option<usize> {
        self.slots.capacity()
    }

    /// Changes the cap (0 removes it). Meant for start-up. On an [adaptive](Limit::adaptive)
    /// limit it fixes the cap: the limit stops adapting.
    ///
    /// Fails, changing nothing, if `capacity` is above [`MAX_CAPACITY`], while any slot is
    /// taken or awaited, or while a connection pool sized by this limit is alive. The check and
    /// the change are one step: no body can take a slot in between.
    pub fn set_capacity(&self, capacity: usize) -> Result<(), CapacityError> {
        let slots = &self.slots;
        if capacity > MAX_CAPACITY {
            return Err(slots.error(CapacityErrorKind::TooLarge { max: MAX_CAPACITY }));
        }
        let _config = slots.lock_config();
        if slots.pools() > 0 {
            return Err(slots.error(CapacityErrorKind::SizesPool));
        }
        let old = slots.raw_capacity();
        // Every permit back at once, or nothing. Idle loops hold one each: they are retired,
        // their permits counted as taken back. A loop just finishing a job is given a moment to
        // go idle.
        let deadline = Instant::now() + SETTLE;
        loop {
            // Under the queue's lock: no job can be queued between the change and the new
            // permits, where it would find no loop and no permit; and every payment of the debt
            // happens under it too, so the count of permits is exact here.
            let changed =
                exec::retire_idle(self, |idle| slots.replace_capacity(old, idle, capacity));
            if changed {
                return Ok(());
            }
            if Instant::now() >= deadline || !exec::only_loops_busy(self) {
                return Err(slots.error(CapacityErrorKind::InUse));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Sizes a connection pool by this limit: returns the capacity, which cannot change (see
    /// [`Limit::set_capacity`]) until the returned guard is dropped with the pool.
    #[cfg_attr(not(feature = "r2d2"), allow(dead_code))]
    pub(crate) fn size_pool(&'static self) -> Result<PoolSizing, CapacityError> {
        let size = self.slots.size_pool()?;
        Ok(PoolSizing { limit: self, size })
    }

    /// A snapshot of this limit's counters.
    pub fn stats(&self) -> LimitStats {
        let slots = &self.slots;
        LimitStats {
            name: slots.name(),
            capacity: slots.capacity(),
            in_use: slots.in_use(),
            peak: slots.peak(),
            waiting: slots.waiting(),
            loops: self.exec.loops(),
            max_waiting: slots.max_waiting(),
            max_queue_time: slots.max_queue_time(),
            shed: slots.shed(),
            bounds: slots.bounds(),
        }
    }

    /// Resets the peak to the current use, to watch a new phase of a load.
    pub fn reset_peak(&self) {
        self.slots.reset_peak();
    }
}

/// How long [`Limit::set_capacity`] waits for loops that just finished a job to go idle.
const SETTLE: Duration = Duration::from_millis(50);

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
        self.limit.slots.pool_dropped();
    }
}
