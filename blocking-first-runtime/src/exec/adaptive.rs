//! What an adaptive limit's moves do to the queue: when its capacity grows, loops start for the
//! jobs waiting; and while jobs wait for a slot, one thread checks every such limit for stalls
//! (every slot stuck while jobs wait) and grows it. The arithmetic of the moves is the slots'
//! (`slots::adaptive`); this is where they reach the queue.

use std::time::Duration;

use super::{Limit, Slot};
use crate::slots::Decision;
use crate::watcher::Watcher;

impl Limit {
    /// A job of this limit ran for `took`: adds it to the window, and adapts the capacity if it
    /// ends one.
    ///
    /// `started` and `now`: `clock::now` at its start and end.
    pub(crate) fn job_took(&'static self, started: u64, now: u64) {
        // The move happened under the config lock; what follows happens outside it: starting
        // loops may drop a job's body (its runtime shutting down), whose destructor may take the
        // lock again, and a subscriber may call `set_capacity` on this limit.
        if let Some(decision) = self.slots.job_took(started, now) {
            self.moved(&decision);
        }
    }

    /// After a capacity moved (outside the config lock): loops for the queued jobs if it grew,
    /// and the report.
    fn moved(&'static self, decision: &Decision) {
        if decision.to > decision.from {
            super::serve_queued(self, decision.to - decision.from);
        }
        self.slots.adapted(decision);
    }

    /// Jobs wait for a slot of this adaptive limit: grows it if every slot has been stuck long
    /// enough (see `Slots::grow_if_stalled`), then serves the queued jobs. Returns whether it
    /// grew.
    pub(crate) fn grow_if_stalled(&'static self, now: u64) -> bool {
        let Some(decision) = self.slots.grow_if_stalled(now) else {
            return false;
        };
        self.moved(&decision);
        true
    }

    /// A `parallel` branch found no slot of this limit and runs on its caller's thread: demand
    /// for more slots, as a job waiting for one is, that the queue does not show.
    pub(crate) fn branch_denied(&'static self) {
        if self.slots.branch_denied() {
            watch_stalls(self);
        }
    }

    /// A job (or a branch) found no free slot: the window counts the limit as used, and the
    /// stall check watches it.
    pub(crate) fn slot_wanted(&'static self) {
        if self.slots.slot_wanted() {
            watch_stalls(self);
        }
    }

    /// A slot for a body awaited from blocking code that found none free: an adaptive limit
    /// below its ceiling grows by one for it, at once (see `Slots::grow_for_nested`).
    pub(crate) fn grow_for_nested(&'static self) -> Option<Slot> {
        self.slots.grow_for_nested(|| Slot::new(self))
    }

    /// Sets an adaptive limit's floor (the global limit's, at its first use), raising the
    /// capacity to it.
    pub(crate) fn set_floor(&'static self, floor: usize) {
        if let Some(decision) = self.slots.set_floor(floor) {
            self.moved(&decision);
        }
    }
}

/// How often the stall watcher looks at the adaptive limits with jobs waiting.
const STALL_CHECK: Duration = Duration::from_millis(5);
/// The stall watcher ends after this long with no job waiting on any adaptive limit.
const STALL_IDLE_EXIT: Duration = Duration::from_secs(1);

static STALLS: Watcher<Limit> =
    Watcher::new("blocking-first-adaptive", STALL_CHECK, STALL_IDLE_EXIT);

/// A job waits for a slot of the adaptive `limit`: makes sure one thread checks it for stalls
/// ([`Limit::grow_if_stalled`]) while jobs wait; it ends a second after the last wait.
pub(crate) fn watch_stalls(limit: &'static Limit) {
    if !limit.slots.is_adaptive() {
        return;
    }
    // Listed once (a flag per limit): this runs for every job that waits.
    STALLS.watch(
        limit.slots.list_for_stalls().then_some(limit),
        watch_stalls_thread,
    );
}

fn watch_stalls_thread(watcher: &'static Watcher<Limit>) {
    watcher.run(
        |limit| limit.slots.slot_waiters() > 0,
        |limits| {
            let now = crate::clock::now();
            let mut waiting = false;
            for limit in limits {
                waiting |=
                    limit.slots.slot_waiters() > 0 || limit.slots.branch_denied_recently(now);
                // A subscriber that panics on the `DEBUG` event must not end the watching.
                crate::unwind::drop_caught(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
                    || limit.grow_if_stalled(now),
                )));
            }
            waiting
        },
    );
}
