//! Which limit the blocking code on this thread runs under, for `parallel` branches and nested
//! bodies.

use std::cell::Cell;

use super::{Limit, Slot};

thread_local! {
    /// The limit of the body whose blocking code this thread runs, for `parallel` branches.
    static CURRENT: Cell<Option<&'static Limit>> = const { Cell::new(None) };
    /// Set while this thread runs a body's blocking code: a stretch of it, or one of its
    /// `parallel` branches. An annotated function awaited there (`Handle::block_on` included)
    /// runs its own blocking code right here instead of hopping and waiting for a slot, which a
    /// branch holding one of the last slots would wait for forever.
    static IN_STRETCH: Cell<bool> = const { Cell::new(false) };
    /// Set while this thread, a runtime worker, polls async code the crate can see: a body in
    /// an `io!` region, or a request under `WorkerWatchLayer`. Blocking there stalls the worker.
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
    /// Counts the jobs this thread started running (see [`job`]): only the pool's warnings
    /// read it.
    #[cfg(all(feature = "r2d2", feature = "tracing"))]
    static JOB: Cell<u64> = const { Cell::new(0) };
}

/// Whether this thread is a runtime worker polling a body's `io!` code or a watched request,
/// and not a body's blocking code awaited from there (see `ON_WORKER`).
#[cfg_attr(not(feature = "r2d2"), allow(dead_code))]
pub(crate) fn on_worker() -> bool {
    ON_WORKER.get() && !IN_STRETCH.get()
}

/// Marks this thread as a runtime worker polling async code until dropped.
pub(crate) struct OnWorker(bool);

impl OnWorker {
    pub(crate) fn enter() -> OnWorker {
        OnWorker(ON_WORKER.replace(true))
    }
}

impl Drop for OnWorker {
    fn drop(&mut self) {
        ON_WORKER.set(self.0);
    }
}

/// Whether this thread runs a body's blocking code now (see `IN_STRETCH`).
pub(crate) fn in_stretch() -> bool {
    IN_STRETCH.get()
}

/// Marks this thread as running a body's blocking code until dropped (also when it panics).
pub(crate) struct InStretch(bool);

impl InStretch {
    pub(crate) fn enter() -> InStretch {
        InStretch(IN_STRETCH.replace(true))
    }
}

impl Drop for InStretch {
    fn drop(&mut self) {
        IN_STRETCH.set(self.0);
    }
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

/// Makes `limit` [`current`] on this thread until dropped (a loop running one of its jobs,
/// under the loop's own slot). Starts a new job on this thread (see [`job`]).
pub(crate) fn enter_limit(limit: &'static Limit) -> LimitContext {
    #[cfg(all(feature = "r2d2", feature = "tracing"))]
    JOB.set(JOB.get().wrapping_add(1));
    LimitContext(CURRENT.replace(Some(limit)))
}

/// Which job of its loop this thread runs: what a job left behind for good (a connection
/// leaked with `mem::forget`) belongs to an earlier one.
#[cfg(all(feature = "r2d2", feature = "tracing"))]
pub(crate) fn job() -> u64 {
    JOB.get()
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

/// Guard from [`enter_limit`].
pub(crate) struct LimitContext(Option<&'static Limit>);

impl Drop for LimitContext {
    fn drop(&mut self) {
        CURRENT.set(self.0);
    }
}
