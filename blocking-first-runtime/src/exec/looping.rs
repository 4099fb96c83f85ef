//! The loops themselves: starting one, its life on a blocking thread, idling, ending.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::{self, Thread};
use std::time::Instant;

use tokio::runtime::Handle;

use super::{
    CLAIMED, IDLE, Idle, Job, LINGER, LOOK, PENDING_STARTS, QUICK_AWAIT, RETIRED, SPIN, kick,
};
use crate::limit::{self, Limit};
use crate::stats::InBlocking;

/// Starts a loop (its slot already taken and counted) on `handle`'s blocking pool. Returns
/// `false`, with the slot given back, if that pool is shutting down.
pub(super) fn start_loop(limit: &'static Limit, handle: &Handle) -> bool {
    let life = Arc::new(Life::default());
    let failed = Arc::new(AtomicBool::new(false));
    let mut starting = Starting {
        limit,
        life: Some(life.clone()),
        failed: failed.clone(),
    };
    PENDING_STARTS.fetch_add(1, Ordering::AcqRel);
    drop(handle.spawn(Sentinel(life)));
    // A pool shutting down drops the closure right here, unrun: `Starting` reports it.
    drop(handle.spawn_blocking(move || {
        let life = starting.life.take().expect("taken once");
        PENDING_STARTS.fetch_sub(1, Ordering::AcqRel);
        run_loop(limit, life);
    }));
    !failed.load(Ordering::Acquire)
}

/// A loop's slot and count while it has not started: given back if the runtime drops the loop
/// unstarted (it is shutting down).
struct Starting {
    limit: &'static Limit,
    life: Option<Arc<Life>>,
    /// Set when dropped unstarted.
    failed: Arc<AtomicBool>,
}

impl Drop for Starting {
    fn drop(&mut self) {
        let Some(life) = self.life.take() else {
            return;
        };
        PENDING_STARTS.fetch_sub(1, Ordering::AcqRel);
        let mut queue = self.limit.exec.lock();
        queue.loops -= 1;
        self.limit.give_back_loop_slot();
        drop(queue);
        life.end();
        // Whoever started it sees this flag and finds another loop for the queued jobs, if
        // `start_loop` has not returned yet; if it has (the runtime dropped the queued loop at
        // shutdown), the flag is read by nobody and the next submit or slot given back kicks.
        self.failed.store(true, Ordering::Release);
    }
}

/// What a loop and the sentinel task on its runtime share.
#[derive(Default)]
struct Life {
    /// The runtime the loop was started on shut down (or the loop ended).
    dead: AtomicBool,
    /// The loop ended: the sentinel task may finish.
    ended: AtomicBool,
    thread: Mutex<Option<Thread>>,
    sentinel: Mutex<Option<Waker>>,
}

impl Life {
    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        if let Some(waker) = lock(&self.sentinel).take() {
            waker.wake();
        }
    }
}

/// A task on the loop's runtime that lives until the loop ends; dropped early only by the
/// runtime's shutdown, which it reports to the loop.
struct Sentinel(Arc<Life>);

impl Future for Sentinel {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        *lock(&self.0.sentinel) = Some(cx.waker().clone());
        if self.0.ended.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.0.dead.store(true, Ordering::Release);
        if let Some(thread) = lock(&self.0.thread).as_ref() {
            thread.unpark();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A loop: runs jobs while there are any, lingers, ends. Its slot is given back at the end, also
/// if a job unwinds through it.
fn run_loop(limit: &'static Limit, life: Arc<Life>) {
    *lock(&life.thread) = Some(thread::current());
    let mut ending = Ending {
        limit,
        life,
        retired: false,
    };
    let exec = &limit.exec;
    // Out of the idle list whenever this loop holds the lock and is not idle.
    let idle = Arc::new(Idle {
        state: AtomicU8::new(IDLE),
        thread: thread::current(),
    });
    let mut queue = exec.lock();
    loop {
        if ending.life.dead.load(Ordering::Acquire) {
            return;
        }
        if let Some(entry) = queue.pop() {
            limit.queued_changed(-1, entry.returning);
            drop(queue);
            run_job(limit, entry.job);
            queue = exec.lock();
            continue;
        }
        idle.state.store(IDLE, Ordering::Release);
        queue.idle.push(idle.clone());
        let spin = !queue.spinning;
        queue.spinning |= spin;
        drop(queue);
        wait_idle(&idle, &ending.life.dead, spin);
        queue = exec.lock();
        if spin {
            queue.spinning = false;
        }
        match idle.state.load(Ordering::Acquire) {
            CLAIMED => continue,
            RETIRED => {
                ending.retired = true;
                return;
            }
            _ => {
                // Lingered long enough, or the runtime is gone: leave the idle list and end.
                queue.idle.retain(|other| !Arc::ptr_eq(other, &idle));
                return;
            }
        }
    }
}

/// Ends a loop: its count and (unless retired) its slot go back; queued jobs get a new loop.
struct Ending {
    limit: &'static Limit,
    life: Arc<Life>,
    retired: bool,
}

impl Drop for Ending {
    fn drop(&mut self) {
        let limit = self.limit;
        let mut queue = limit.exec.lock();
        queue.loops -= 1;
        if !self.retired {
            limit.give_back_loop_slot();
        }
        let then = kick(limit, &mut queue);
        drop(queue);
        self.life.end();
        then.run(limit, None);
    }
}

/// Waits until the loop is claimed or retired, its runtime shuts down, [`LINGER`] passes, or
/// loop starts keep waiting for a blocking thread (the pool is short: give this one back).
fn wait_idle(idle: &Idle, dead: &AtomicBool, spin: bool) {
    let waiting = || idle.state.load(Ordering::Acquire) == IDLE && !dead.load(Ordering::Acquire);
    let start = Instant::now();
    if spin {
        while waiting() && start.elapsed() < SPIN {
            for _ in 0..32 {
                std::hint::spin_loop();
            }
            thread::yield_now();
        }
    }
    let mut starts_waited = false;
    while waiting() {
        let Some(left) = LINGER.checked_sub(start.elapsed()) else {
            return;
        };
        thread::park_timeout(left.min(LOOK));
        let starts_wait = PENDING_STARTS.load(Ordering::Acquire) > 0;
        if starts_wait && starts_waited {
            return;
        }
        starts_waited = starts_wait;
    }
}

/// A job running on a loop: the limit is current on the thread, a slot counted in use, a body
/// counted in blocking code (fields drop in order: the counts fall before the context goes).
pub(crate) struct Running {
    _busy: limit::Busy,
    _counted: InBlocking,
    _context: limit::LimitContext,
}

/// Runs one job under the limit's context, counted as a body in blocking code.
fn run_job(limit: &'static Limit, job: Box<dyn Job>) {
    let running = Running {
        _context: limit::enter_limit(limit),
        _counted: InBlocking::enter(),
        _busy: limit.busy(),
    };
    // A job catches its own panics (a body's reaches its caller); one escaping anyway must not
    // take the loop's accounting down, and is reported.
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| job.run(limit, running))) {
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a string)");
        eprintln!("blocking-first: a destructor panicked on a blocking loop: {message}");
        // The payload's own destructor may panic too: that one is dropped unreported.
        drop(panic::catch_unwind(AssertUnwindSafe(|| drop(payload))));
    }
}

/// Waits in place, for at most [`QUICK_AWAIT`], for `woken` to be set while nothing else is
/// queued on this limit. Returns whether it was.
pub(crate) fn wait_in_place(
    limit: &Limit,
    woken: impl Fn() -> bool,
    cancelled: impl Fn() -> bool,
) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..16 {
            if woken() {
                return true;
            }
            std::hint::spin_loop();
        }
        if limit.waiting() > 0 || cancelled() || start.elapsed() >= QUICK_AWAIT {
            return woken();
        }
        thread::yield_now();
    }
}
