//! `runtimes.rs` under loom: every runtime stays alive (how tokio reports a shutdown, by dropping
//! a task, is tokio's protocol, not ours), and a loop starts as a loom thread instead of a task
//! on tokio's blocking pool.
//!
//! A model may shut one runtime's blocking pool down ([`CLOSING`]), as tokio does: a loop
//! started there before the shutdown is dropped unrun later, on a thread of the pool, and one
//! started after it is dropped unrun at once.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use tokio::runtime::{Handle, Id};

use crate::sync::AtomicBool;

thread_local! {
    /// The runtime whose blocking pool the running model shuts down, and whether it has yet.
    /// (loom runs all of a model's threads on the thread that calls `loom::model`.)
    pub(super) static CLOSING: Cell<Option<(Id, bool)>> = const { Cell::new(None) };
    /// The running model's threads of blocking pools, not joined yet.
    static POOL_THREADS: RefCell<Vec<loom::thread::JoinHandle<()>>> = const {
        RefCell::new(Vec::new())
    };
}

/// One runtime, as its loops see it: alive for good.
pub(super) struct RuntimeLife {
    /// Never set.
    dead: AtomicBool,
}

pub(super) fn life_of(_handle: &Handle) -> Arc<RuntimeLife> {
    Arc::new(RuntimeLife {
        dead: AtomicBool::new(false),
    })
}

impl RuntimeLife {
    pub(super) fn is_dead(&self) -> bool {
        false
    }

    pub(super) fn flag(&self) -> &AtomicBool {
        &self.dead
    }

    pub(super) fn enter(&self) {}

    pub(super) fn leave(&self) {}
}

/// Runs `task` on a loom thread, unless `handle`'s pool is [`CLOSING`].
pub(super) fn spawn_blocking(handle: &Handle, task: impl FnOnce() + Send + 'static) {
    let thread = match CLOSING.get() {
        Some((id, true)) if id == handle.id() => return drop(task),
        // Queued for a thread; the pool shuts down and drops it there.
        Some((id, false)) if id == handle.id() => loom::thread::spawn(move || {
            CLOSING.set(Some((id, true)));
            drop(task);
        }),
        _ => loom::thread::spawn(task),
    };
    POOL_THREADS.with_borrow_mut(|threads| threads.push(thread));
}

/// Joins every thread of the blocking pools, those they start too: afterwards the model is
/// quiescent.
#[cfg(test)]
pub(super) fn join_pool_threads() {
    while let Some(thread) = POOL_THREADS.with_borrow_mut(Vec::pop) {
        thread.join().expect("a loop does not panic");
    }
}
