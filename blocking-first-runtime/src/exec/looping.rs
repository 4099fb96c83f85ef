//! The loops themselves: starting one, its life on a blocking thread, idling, ending.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use tokio::runtime::Handle;

use super::context::{self, LimitContext};
use super::runtimes::{self, RuntimeLife};
use super::{Busy, Limit};
use super::{CLAIMED, IDLE, Idle, Job, PENDING_STARTS, QUICK_AWAIT, RETIRED, kick};
use crate::sync::{AtomicBool, AtomicU8, Ordering, thread};

/// Starts a loop (its slot already taken and counted) on `handle`'s blocking pool. Returns
/// `false`, with the slot given back, if that pool is shutting down.
pub(super) fn start_loop(limit: &'static Limit, handle: &Handle) -> bool {
    let life = runtimes::life_of(handle);
    let settled = Arc::new(AtomicBool::new(false));
    let mut starting = Starting {
        limit,
        life: Some(life),
        settled: settled.clone(),
    };
    PENDING_STARTS.fetch_add(1, Ordering::AcqRel);
    // A pool shutting down drops the closure unrun, right here or later: `Starting` reports it.
    let runtime = handle.id();
    runtimes::spawn_blocking(handle, move || {
        let life = starting.life.take().expect("taken once");
        PENDING_STARTS.fetch_sub(1, Ordering::AcqRel);
        run_loop(limit, runtime, life);
    });
    // Already set: dropped unstarted right here, and the caller finds the queued jobs a loop.
    !settled.swap(true, Ordering::AcqRel)
}

/// A loop's slot and count while it has not started: given back if the runtime drops the loop
/// unstarted (it is shutting down), and the queued jobs found another loop.
struct Starting {
    limit: &'static Limit,
    life: Option<Arc<RuntimeLife>>,
    /// Set by the first of `start_loop` returning and the loop dropped unstarted (swapped on
    /// both sides): the second one finds the queued jobs another loop.
    settled: Arc<AtomicBool>,
}

impl Drop for Starting {
    fn drop(&mut self) {
        if self.life.take().is_none() {
            return;
        }
        PENDING_STARTS.fetch_sub(1, Ordering::AcqRel);
        let limit = self.limit;
        let mut queue = limit.exec.lock();
        queue.loops -= 1;
        limit.slots.give_back_loop_slot();
        // Dropped right in `start_loop` (a pool shut down already), its caller kicks when it
        // returns `false`. Dropped after it returned (a pool that queued the loop for a thread,
        // then shut down), nobody else would: the queued jobs, maybe a live runtime's, would wait
        // with the slot free and no loop until the next submit.
        let then = self
            .settled
            .swap(true, Ordering::AcqRel)
            .then(|| kick(limit, &mut queue));
        drop(queue);
        if let Some(then) = then {
            then.run(limit, None);
        }
    }
}

#[cfg(not(blocking_first_loom))]
thread_local! {
    /// The runtime whose blocking pool this thread is, while it runs a loop.
    static LOOP_OF: std::cell::RefCell<Option<(tokio::runtime::Id, Arc<RuntimeLife>)>> =
        const { std::cell::RefCell::new(None) };
}

/// A runtime's shutdown, as blocking code of one of its bodies reads it (for `is_cancelled`).
pub(crate) struct Dying(Arc<RuntimeLife>);

impl Dying {
    pub(crate) fn is_set(&self) -> bool {
        self.0.is_dead()
    }
}

/// If this thread runs a loop of `runtime`: that runtime's shutdown. A loop of another runtime
/// (limits are shared) says nothing of `runtime`.
#[cfg(not(blocking_first_loom))]
pub(crate) fn dying(runtime: tokio::runtime::Id) -> Option<Dying> {
    LOOP_OF.with_borrow(|of| {
        of.as_ref()
            .filter(|(id, _)| *id == runtime)
            .map(|(_, life)| Dying(life.clone()))
    })
}

/// Under loom no runtime dies (see `runtimes_loom.rs`).
#[cfg(blocking_first_loom)]
pub(crate) fn dying(_runtime: tokio::runtime::Id) -> Option<Dying> {
    None
}

/// A loop: runs jobs while there are any, lingers, ends. Its slot is given back at the end, also
/// if a job unwinds through it.
fn run_loop(limit: &'static Limit, runtime: tokio::runtime::Id, life: Arc<RuntimeLife>) {
    life.enter();
    // A blocking thread runs one loop at a time; the next loop on it replaces this.
    #[cfg(not(blocking_first_loom))]
    LOOP_OF.set(Some((runtime, life.clone())));
    #[cfg(blocking_first_loom)]
    let _ = runtime;
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
        // An adaptive limit that shrank: this loop's slot is one it owes.
        if ending.life.is_dead() || limit.slots.owes_slots() {
            return;
        }
        if let Some(entry) = queue.pop() {
            limit.slots.queued_changed(-1, entry.returning);
            if entry.waits {
                limit.slots.slot_wait_ended();
            }
            let drained = queue.is_empty();
            drop(queue);
            limit.slots.dequeued(entry.queued_at, drained);
            run_job(limit, entry.job);
            queue = exec.lock();
            continue;
        }
        idle.state.store(IDLE, Ordering::Release);
        queue.idle.push(idle.clone());
        let spin = !queue.spinning;
        queue.spinning |= spin;
        drop(queue);
        wait_idle(&idle, ending.life.flag(), spin);
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
    life: Arc<RuntimeLife>,
    retired: bool,
}

impl Drop for Ending {
    fn drop(&mut self) {
        let limit = self.limit;
        let mut queue = limit.exec.lock();
        queue.loops -= 1;
        if !self.retired {
            limit.slots.give_back_loop_slot();
        }
        let then = kick(limit, &mut queue);
        if matches!(then, super::Then::Nothing) {
            // Jobs left with no loop coming (this loop ended to pay what an adaptive limit
            // owes): they wait for a slot now, where the stall check sees them.
            super::now_waiting(limit, &mut queue);
        }
        drop(queue);
        self.life.leave();
        #[cfg(not(blocking_first_loom))]
        LOOP_OF.set(None);
        then.run(limit, None);
    }
}

/// Waits until the loop is claimed or retired, its runtime shuts down, [`LINGER`] passes, or
/// loop starts keep waiting for a blocking thread (the pool is short: give this one back).
///
/// [`LINGER`]: super::LINGER
#[cfg(not(blocking_first_loom))]
fn wait_idle(idle: &Idle, dead: &AtomicBool, spin: bool) {
    use super::{LINGER, LOOK, SPIN};

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

/// Under loom (no clock, no timed park: see `sync::thread`), the wait is one look, a yield to
/// the other threads, and the end of the linger. The loop then decides under the queue's lock
/// whether it was claimed or retired meanwhile, or leaves the idle list and ends, and loom
/// explores every order of those decisions against the submitters and `retire_idle`.
#[cfg(blocking_first_loom)]
fn wait_idle(idle: &Idle, dead: &AtomicBool, _spin: bool) {
    if idle.state.load(Ordering::Acquire) == IDLE && !dead.load(Ordering::Acquire) {
        thread::yield_now();
    }
}

/// A job running on a loop: the limit is current on the thread, a slot counted in use (fields
/// drop in order: the count falls before the context goes). A body's job also counts itself in
/// [`stats()`](crate::stats()) (a `parallel` branch is not a body).
pub(crate) struct Running {
    _busy: Busy,
    _context: LimitContext,
}

/// Runs one job under the limit's context.
fn run_job(limit: &'static Limit, job: Box<dyn Job>) {
    let running = Running {
        _context: context::enter_limit(limit),
        _busy: limit.busy(),
    };
    // An adaptive limit learns from how long its jobs take.
    let clock = limit.slots.times_jobs().then(crate::clock::now);
    // A job catches its own panics (a body's reaches its caller, as does a panic of the
    // observers around its stretch); one escaping anyway (a subscriber panicking as a branch
    // enters its span) must not take the loop's accounting down, and is reported.
    let ran = panic::catch_unwind(AssertUnwindSafe(|| job.run(limit, running)));
    if let Some(start) = clock {
        // A subscriber or a recorder that panics on the adaptation's report: dropped, the loop
        // goes on.
        let now = crate::clock::now();
        crate::unwind::drop_caught(panic::catch_unwind(AssertUnwindSafe(|| {
            limit.job_took(start, now);
        })));
    }
    if let Err(payload) = ran {
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a string)");
        eprintln!(
            "blocking-first: a panic escaped a job on a blocking loop of limit `{}` (from a \
             destructor or a tracing subscriber); the loop goes on: {message}",
            limit.slots.name()
        );
        crate::unwind::drop_caught(payload);
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
        if limit.slots.waiting() > 0 || cancelled() || start.elapsed() >= QUICK_AWAIT {
            return woken();
        }
        thread::yield_now();
    }
}
