//! The two small protocols `parallel::scope` rests on, kept free of `unsafe` and of tokio so the
//! loom models (`src/loom.rs`) run them as they are:
//!
//! - a [`Ticket`] per branch decides, once, who runs it: a pool thread or the scope's caller;
//! - [`Pending`] counts the scope's unfinished branches, *however and wherever* they were
//!   spawned, and is what the scope waits on before it returns or re-raises a panic.

use crate::limit::Slot;
use crate::sync::{self, Condvar, Mutex};

/// Who runs a branch: decided once, under the ticket's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TicketState {
    Queued,
    /// A pool thread won the branch and is running it.
    OnPool,
    /// The caller won the branch (it runs it inline, or drops it).
    Claimed,
    /// The branch ran (or was dropped) and nobody touches it any more.
    Finished,
}

/// The `'static` part of a branch, shared with its pool task.
#[derive(Debug)]
pub(crate) struct Ticket {
    state: Mutex<(TicketState, Option<Slot>)>,
    finished: Condvar,
}

impl Ticket {
    /// A queued branch, holding the slot its pool task will run under (if it is dispatched).
    pub(crate) fn new(slot: Option<Slot>) -> Ticket {
        Ticket {
            state: Mutex::new((TicketState::Queued, slot)),
            finished: Condvar::new(),
        }
    }

    /// The pool task's side: wins the branch if nobody claimed it, and takes its slot.
    pub(crate) fn start_on_pool(&self) -> Option<Option<Slot>> {
        let mut state = sync::lock(&self.state);
        if state.0 != TicketState::Queued {
            return None;
        }
        state.0 = TicketState::OnPool;
        Some(state.1.take())
    }

    /// The caller's side: wins the branch if no pool thread started it. The slot sent with the
    /// branch is given back at once: the caller runs the branch under its own slot.
    pub(crate) fn claim(&self) -> bool {
        let slot = {
            let mut state = sync::lock(&self.state);
            if state.0 != TicketState::Queued {
                return false;
            }
            state.0 = TicketState::Claimed;
            state.1.take()
        };
        drop(slot);
        true
    }

    /// The winner's side, after its last touch of the branch.
    pub(crate) fn finish(&self) {
        sync::lock(&self.state).0 = TicketState::Finished;
        self.finished.notify_all();
    }

    /// Blocks until the branch is finished.
    pub(crate) fn wait(&self) {
        let mut state = sync::lock(&self.state);
        while state.0 != TicketState::Finished {
            state = sync::wait(&self.finished, state);
        }
    }

    #[cfg(all(test, blocking_first_loom))]
    pub(crate) fn state(&self) -> TicketState {
        sync::lock(&self.state).0
    }
}

/// The unfinished branches of one scope, and how many were ever announced.
#[derive(Debug)]
pub(crate) struct Pending {
    counts: Mutex<Counts>,
    changed: Condvar,
}

#[derive(Debug)]
struct Counts {
    /// Branches added and not finished: queued, running, or being claimed.
    unfinished: usize,
    /// Branches announced (put where the scope's end will find them) since the start.
    announced: usize,
}

impl Pending {
    pub(crate) fn new() -> Pending {
        Pending {
            counts: Mutex::new(Counts {
                unfinished: 0,
                announced: 0,
            }),
            changed: Condvar::new(),
        }
    }

    /// Counts a new branch, before anything can start or claim it.
    pub(crate) fn add(&self) {
        sync::lock(&self.counts).unfinished += 1;
    }

    /// Tells a waiting [`settle`](Pending::settle) that a branch can be found in the scope's
    /// list now; called after putting it there.
    pub(crate) fn announce(&self) {
        sync::lock(&self.counts).announced += 1;
        self.changed.notify_all();
    }

    /// Counts a branch as finished: called after the last touch of anything it borrowed.
    pub(crate) fn finished(&self) {
        let mut counts = sync::lock(&self.counts);
        counts.unfinished -= 1;
        drop(counts);
        self.changed.notify_all();
    }

    /// How many branches were announced so far; read *before* taking the scope's list.
    pub(crate) fn announced(&self) -> usize {
        sync::lock(&self.counts).announced
    }

    /// Waits until branches were announced after `seen` (`false`: take the list again), or,
    /// failing that, until no branch is unfinished (`true`).
    pub(crate) fn settle(&self, seen: usize) -> bool {
        let mut counts = sync::lock(&self.counts);
        loop {
            // New branches first: even if they finished already, the scope must take them
            // (their panics and values are its to re-raise and drop).
            if counts.announced != seen {
                return false;
            }
            if counts.unfinished == 0 {
                return true;
            }
            counts = sync::wait(&self.changed, counts);
        }
    }
}
