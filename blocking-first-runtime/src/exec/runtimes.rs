//! Whether the runtime a loop was started on is still alive, with one task per runtime.
//!
//! A loop may run jobs of several runtimes (limits are `static`), so it does not end just
//! because its jobs stop coming; but tokio's shutdown waits for every blocking task of the
//! runtime shutting down, so a loop must notice that its own runtime is going and end after its
//! current job. tokio tells a task, not a blocking thread: one *sentinel* task per runtime, never
//! finishing, is dropped by the runtime's shutdown and tells every loop started there.
//!
//! One per runtime, not one per loop: a runtime that nobody drives (a current-thread runtime
//! used only through `Handle::block_on` from plain threads) never polls its tasks, so a task per
//! loop start would pile up for the runtime's whole life.
//!
//! Not built under loom (the sentinel's protocol is tokio's, not ours): `runtimes_loom.rs` stands
//! in for it there.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::runtime::{Handle, Id};

use crate::sync::thread::{self, Thread};
use crate::sync::{AtomicBool, Mutex, Ordering, lock};

/// One runtime, as its loops see it.
#[derive(Default)]
pub(super) struct RuntimeLife {
    /// The runtime shut down (its sentinel was dropped).
    dead: AtomicBool,
    /// The loops running on its blocking pool now, to wake when it dies.
    loops: Mutex<Vec<Thread>>,
}

/// The runtimes with loops started on them and still alive.
static RUNTIMES: Mutex<Vec<(Id, Arc<RuntimeLife>)>> = Mutex::new(Vec::new());

/// Runs `task` on `handle`'s blocking pool; a pool shutting down drops it unrun, right here or
/// (if it was queued for a thread) later, on one of the pool's threads.
pub(super) fn spawn_blocking(handle: &Handle, task: impl FnOnce() + Send + 'static) {
    drop(handle.spawn_blocking(task));
}

/// The life of `handle`'s runtime; spawns its sentinel the first time.
pub(super) fn life_of(handle: &Handle) -> Arc<RuntimeLife> {
    let id = handle.id();
    let life = {
        let mut runtimes = lock(&RUNTIMES);
        if let Some((_, life)) = runtimes.iter().find(|(known, _)| *known == id) {
            return life.clone();
        }
        let life = Arc::new(RuntimeLife::default());
        runtimes.push((id, life.clone()));
        life
    };
    // Outside the lock: a runtime shutting down drops the sentinel right here, and its drop
    // takes the lock.
    drop(handle.spawn(Sentinel(life.clone())));
    life
}

impl RuntimeLife {
    pub(super) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    pub(super) fn flag(&self) -> &AtomicBool {
        &self.dead
    }

    /// Registers this thread's loop, to be woken if the runtime dies.
    pub(super) fn enter(&self) {
        lock(&self.loops).push(thread::current());
    }

    /// This thread's loop ended.
    pub(super) fn leave(&self) {
        let me = thread::current().id();
        lock(&self.loops).retain(|thread| thread.id() != me);
    }
}

/// A task on the runtime that never finishes; dropped only by the runtime's shutdown, which it
/// reports to the runtime's loops.
struct Sentinel(Arc<RuntimeLife>);

impl Future for Sentinel {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.0.dead.store(true, Ordering::Release);
        lock(&RUNTIMES).retain(|(_, life)| !Arc::ptr_eq(life, &self.0));
        for thread in lock(&self.0.loops).iter() {
            thread.unpark();
        }
    }
}
