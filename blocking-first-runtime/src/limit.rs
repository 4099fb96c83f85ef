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

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::stats;

static GLOBAL: Limit = Limit::unbounded("global");

/// The process-wide limit, used by every `#[blocking_first]` function without a `limit` argument.
///
/// Unbounded (tokio's own `max_blocking_threads` is the only bound) until
/// [`set_global_capacity`] is called.
pub fn global() -> &'static Limit {
    &GLOBAL
}

/// Caps the [`global()`] limit at `capacity` bodies in blocking code at once.
///
/// Meant for start-up, before any body runs; fails if the global limit is in use.
pub fn set_global_capacity(capacity: usize) -> Result<(), LimitInUse> {
    GLOBAL.set_capacity(capacity)
}

/// A cap on how many bodies (and [`parallel`](crate::parallel) branches) run blocking code at once.
///
/// Declare one as a `static` and name it in `#[blocking_first(limit = PATH)]`. Waiting for a
/// slot holds no thread: the body waits as an ordinary pending future.
pub struct Limit {
    name: &'static str,
    semaphore: Semaphore,
    /// 0 means "no cap".
    capacity: AtomicUsize,
    in_use: AtomicUsize,
    peak: AtomicUsize,
    waiting: AtomicUsize,
}

impl Limit {
    /// A limit of `capacity` slots.
    ///
    /// # Panics
    /// If `capacity` is 0 (at compile time when used in a `static`).
    pub const fn new(name: &'static str, capacity: usize) -> Limit {
        assert!(capacity > 0, "a Limit needs at least one slot");
        Limit::with_capacity(name, capacity)
    }

    /// A limit without a cap: it only counts, for [`Limit::stats`].
    pub const fn unbounded(name: &'static str) -> Limit {
        Limit::with_capacity(name, 0)
    }

    const fn with_capacity(name: &'static str, capacity: usize) -> Limit {
        Limit {
            name,
            semaphore: Semaphore::const_new(capacity),
            capacity: AtomicUsize::new(capacity),
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
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

    /// Changes the cap (0 removes it). Meant for start-up: fails while any slot is taken or awaited.
    pub fn set_capacity(&self, capacity: usize) -> Result<(), LimitInUse> {
        if self.in_use.load(Ordering::Acquire) > 0 || self.waiting.load(Ordering::Acquire) > 0 {
            return Err(LimitInUse { name: self.name });
        }
        let old = self.capacity.swap(capacity, Ordering::AcqRel);
        self.semaphore.forget_permits(old);
        self.semaphore.add_permits(capacity);
        Ok(())
    }

    /// A snapshot of this limit's counters.
    pub fn stats(&self) -> LimitStats {
        LimitStats {
            name: self.name,
            capacity: self.capacity(),
            in_use: self.in_use.load(Ordering::Acquire),
            peak: self.peak.load(Ordering::Acquire),
            waiting: self.waiting.load(Ordering::Acquire),
        }
    }

    /// Resets the peak to the current use, to watch a new phase of a load.
    pub fn reset_peak(&self) {
        self.peak
            .store(self.in_use.load(Ordering::Acquire), Ordering::Release);
    }

    /// Takes a slot if one is free right now.
    pub(crate) fn try_take(&'static self) -> Option<Slot> {
        if self.capacity.load(Ordering::Acquire) == 0 {
            return Some(Slot::new(self, None));
        }
        let permit = self.semaphore.try_acquire().ok()?;
        Some(Slot::new(self, Some(permit)))
    }

    /// Waits for a slot, holding no thread. Boxed because it is stored in the driver's state.
    pub(crate) fn take(&'static self) -> Pin<Box<dyn Future<Output = Slot> + Send>> {
        Box::pin(async move {
            self.waiting.fetch_add(1, Ordering::AcqRel);
            stats::WAITING.fetch_add(1, Ordering::Relaxed);
            let _waiting = Waiting(self);
            // The semaphore is never closed, so `acquire` only fails if that invariant breaks.
            let permit = self
                .semaphore
                .acquire()
                .await
                .expect("limit semaphore closed");
            Slot::new(self, Some(permit))
        })
    }
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.stats(), f)
    }
}

struct Waiting(&'static Limit);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        stats::WAITING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One slot of a [`Limit`], held for one stretch of blocking code; dropping it gives it back.
#[derive(Debug)]
pub(crate) struct Slot {
    limit: &'static Limit,
    _permit: Option<SemaphorePermit<'static>>,
}

impl Slot {
    fn new(limit: &'static Limit, permit: Option<SemaphorePermit<'static>>) -> Slot {
        let now = limit.in_use.fetch_add(1, Ordering::AcqRel) + 1;
        limit.peak.fetch_max(now, Ordering::AcqRel);
        Slot {
            limit,
            _permit: permit,
        }
    }

    pub(crate) fn limit(&self) -> &'static Limit {
        self.limit
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Decrement before the permit is released (fields drop after this), so `in_use` never
        // shows more than the capacity.
        self.limit.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counters of one [`Limit`], from [`Limit::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitStats {
    /// The limit's name.
    pub name: &'static str,
    /// The cap, `None` when unbounded.
    pub capacity: Option<usize>,
    /// Slots taken now (bodies in blocking code plus dispatched `parallel` branches).
    pub in_use: usize,
    /// The most slots ever taken at once (see [`Limit::reset_peak`]).
    pub peak: usize,
    /// Bodies waiting for a slot now (they hold no thread).
    pub waiting: usize,
}

/// [`Limit::set_capacity`] was called while the limit was in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitInUse {
    name: &'static str,
}

impl fmt::Display for LimitInUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the capacity of limit `{}` can only change while no body uses it: set it at start-up",
            self.name
        )
    }
}

impl std::error::Error for LimitInUse {}

thread_local! {
    /// The limit of the body whose blocking code this thread runs, for `parallel` branches.
    static CURRENT: Cell<Option<&'static Limit>> = const { Cell::new(None) };
}

/// The limit of the body running blocking code on this thread, if any.
pub(crate) fn current() -> Option<&'static Limit> {
    CURRENT.get()
}

/// Holds `slot` and makes its limit [`current`] on this thread until dropped.
pub(crate) fn enter_context(slot: Slot) -> SlotContext {
    let previous = CURRENT.replace(Some(slot.limit()));
    SlotContext {
        _slot: slot,
        previous,
    }
}

/// Guard from [`enter_context`].
pub(crate) struct SlotContext {
    _slot: Slot,
    previous: Option<&'static Limit>,
}

impl Drop for SlotContext {
    fn drop(&mut self) {
        CURRENT.set(self.previous);
    }
}
