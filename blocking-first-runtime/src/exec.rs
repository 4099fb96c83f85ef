//! Each limit's run queue and the blocking loops that serve it.
//!
//! A *loop* is one long-lived task on tokio's blocking pool (started with `spawn_blocking`, so
//! runtime context and shutdown keep working) that holds one slot of its limit for its whole
//! life and runs *jobs* (stretches of bodies' blocking code, and `parallel` branches) one after
//! another. A hop onto the blocking side is "push the job; hand it to an idle loop, or start a
//! loop if a slot is free, or leave it queued for the next loop that finishes". So a capped
//! limit never has more loops (threads) than slots, and under load a loop goes from one job to
//! the next with no thread created and no thread woken.
//!
//! - **Order**: jobs of bodies that already ran (coming back from `io!` or an `.await`) and
//!   `parallel` branches go before bodies that have not started.
//! - **Idle loops** spin briefly (one per limit at a time), then park, and end after
//!   [`LINGER`] without work, giving their slot back. A loop also ends, after its current job,
//!   once the runtime it was started on shuts down (a task on that runtime tells it).
//! - **Several runtimes**: limits are `static`, so one queue may hold jobs of several runtimes.
//!   A loop enters the runtime of each job it runs, so `Handle::current()`, `tokio::spawn` and
//!   timers in blocking code reach the body's own runtime.
//!
//! Every change to the queue, the idle list, the loop count and the slots loops hold happens
//! under the queue's lock, so a job is never left queued while a slot is free and no loop runs:
//! a submitter either finds a loop (idle, or one that will pop the job) or a free slot.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use crate::limit::{self, Limit};
use crate::stats::InBlocking;
use crate::watchdog;

/// How long an idle loop waits for work before it ends and gives its slot back.
pub(crate) const LINGER: Duration = Duration::from_millis(500);
/// How long one idle loop per limit spins (yielding) before it parks: a job pushed meanwhile
/// costs no thread wake.
const SPIN: Duration = Duration::from_micros(50);
/// How long a loop with nothing else queued waits, in place, for a body pending on a plain
/// `.await` to be woken: a quick await then costs no hop.
pub(crate) const QUICK_AWAIT: Duration = Duration::from_micros(100);

/// Work for a loop: a stretch of a body's blocking code or a `parallel` branch.
pub(crate) trait Job: Send {
    /// Runs on a loop, inside the limit's context and counted in use until `running` is
    /// dropped: drop it before publishing a result, so a caller that sees the result sees the
    /// slot free. Must not unwind (the loop catches it anyway).
    fn run(self: Box<Self>, limit: &'static Limit, running: Running);
    /// The runtime the job belongs to: entered while it runs, and where a loop is started for it.
    fn handle(&self) -> &Handle;
    /// Identifies a body's job, for [`withdraw`].
    fn key(&self) -> *const ();
}

/// A limit's run queue and loop bookkeeping (a field of [`Limit`]).
pub(crate) struct Exec {
    queue: Mutex<Queue>,
    /// Jobs in the queue, readable without the lock (a loop waiting in place stops when > 0).
    queued: AtomicUsize,
}

struct Queue {
    /// Bodies that already ran, and `parallel` branches (at the front).
    started: VecDeque<Entry>,
    /// Bodies that have not started.
    fresh: VecDeque<Entry>,
    /// Loops waiting for work, most recent last.
    idle: Vec<Arc<Idle>>,
    /// Whether an idle loop is spinning (at most one per limit burns a CPU).
    spinning: bool,
    /// Loops alive (each holds one slot), including those starting up.
    loops: usize,
}

struct Entry {
    job: Box<dyn Job>,
    /// Counted in the limit's `returning` (a started body that had to wait): the detector's cue.
    returning: bool,
}

/// An idle loop, as the queue sees it.
struct Idle {
    state: AtomicU8,
    thread: Thread,
}

const IDLE: u8 = 0;
/// A submitter handed the loop work: it goes back to the queue.
const CLAIMED: u8 = 1;
/// `set_capacity` took the loop's slot: it ends without giving it back.
const RETIRED: u8 = 2;

impl Exec {
    pub(crate) const fn new() -> Exec {
        Exec {
            queue: Mutex::new(Queue {
                started: VecDeque::new(),
                fresh: VecDeque::new(),
                idle: Vec::new(),
                spinning: false,
                loops: 0,
            }),
            queued: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loops alive now.
    pub(crate) fn loops(&self) -> usize {
        self.lock().loops
    }

    /// Jobs waiting for a loop now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

impl Queue {
    fn pop(&mut self) -> Option<Entry> {
        self.started.pop_front().or_else(|| self.fresh.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.started.is_empty() && self.fresh.is_empty()
    }
}

/// Where a submitted job goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// A body that has not run yet: after everything else.
    Fresh,
    /// A body coming back from `io!` or an `.await`.
    Started,
    /// A `parallel` branch: its caller waits for it, so it goes first.
    Branch,
}

/// What a submitter does after letting go of the lock.
enum Then {
    Unpark(Arc<Idle>),
    Start(Handle),
    Nothing,
}

impl Then {
    fn run(self, limit: &'static Limit) {
        match self {
            Then::Unpark(idle) => idle.thread.unpark(),
            Then::Start(handle) => start_loop(limit, &handle),
            Then::Nothing => {}
        }
    }
}

/// Queues `job` for a loop of `limit`. With `only_if_served`, queues it only if a loop takes it
/// at once (an idle one or a new one) and hands it back otherwise (`parallel` runs it inline).
pub(crate) fn submit(
    limit: &'static Limit,
    job: Box<dyn Job>,
    priority: Priority,
    only_if_served: bool,
) -> Result<(), Box<dyn Job>> {
    let exec = &limit.exec;
    let mut queue = exec.lock();
    let then = if let Some(idle) = queue.idle.pop() {
        idle.state.store(CLAIMED, Ordering::Release);
        Then::Unpark(idle)
    } else if limit.take_loop_slot() {
        queue.loops += 1;
        Then::Start(job.handle().clone())
    } else if only_if_served {
        return Err(job);
    } else {
        Then::Nothing
    };
    let returning = matches!(then, Then::Nothing)
        && priority == Priority::Started
        && limit.capacity().is_some();
    let entry = Entry { job, returning };
    match priority {
        Priority::Fresh => queue.fresh.push_back(entry),
        Priority::Started => queue.started.push_back(entry),
        Priority::Branch => queue.started.push_front(entry),
    }
    exec.queued.fetch_add(1, Ordering::AcqRel);
    limit.queued_changed(1, returning);
    drop(queue);
    if returning {
        watchdog::watch(limit);
    }
    then.run(limit);
    Ok(())
}

/// Takes a body's job back out of the queue if no loop has taken it yet.
pub(crate) fn withdraw(limit: &'static Limit, key: *const ()) -> Option<Box<dyn Job>> {
    let exec = &limit.exec;
    let mut queue = exec.lock();
    let found = {
        let Queue { started, fresh, .. } = &mut *queue;
        [started, fresh].into_iter().find_map(|list| {
            let at = list.iter().position(|entry| entry.job.key() == key)?;
            list.remove(at)
        })
    }?;
    exec.queued.fetch_sub(1, Ordering::AcqRel);
    limit.queued_changed(-1, found.returning);
    // Jobs behind it may be waiting for a loop that a failed start never gave them.
    let then = kick(limit, &mut queue);
    drop(queue);
    then.run(limit);
    Some(found.job)
}

/// Gives back a slot taken outside the loops (an inline stretch): if jobs wait and no loop is
/// idle, the slot starts a loop for them instead.
pub(crate) fn give_back_slot(limit: &'static Limit) {
    let mut queue = limit.exec.lock();
    limit.give_back_loop_slot();
    let then = kick(limit, &mut queue);
    drop(queue);
    then.run(limit);
}

/// Under the lock: makes sure a queued job has a loop coming.
fn kick(limit: &'static Limit, queue: &mut Queue) -> Then {
    let Some(front) = queue.started.front().or_else(|| queue.fresh.front()) else {
        return Then::Nothing;
    };
    if let Some(idle) = queue.idle.pop() {
        idle.state.store(CLAIMED, Ordering::Release);
        return Then::Unpark(idle);
    }
    if limit.take_loop_slot() {
        queue.loops += 1;
        return Then::Start(front.job.handle().clone());
    }
    Then::Nothing
}

/// For `set_capacity`: under the lock, runs `change` with the number of idle loops (whose slots
/// it counts as taken back) and, if it succeeds, retires them: they end without giving their
/// slots back. Fails while any loop is busy or starting, or anything is queued.
pub(crate) fn retire_idle(limit: &Limit, change: impl FnOnce(usize) -> bool) -> bool {
    let mut queue = limit.exec.lock();
    if !queue.is_empty() || queue.loops != queue.idle.len() || !change(queue.idle.len()) {
        return false;
    }
    for idle in queue.idle.drain(..) {
        idle.state.store(RETIRED, Ordering::Release);
        idle.thread.unpark();
    }
    true
}

/// Whether only loops finishing a job (not bodies, not queued jobs) keep `set_capacity` from
/// succeeding right now: it is worth waiting a moment.
pub(crate) fn only_loops_busy(limit: &Limit) -> bool {
    let queue = limit.exec.lock();
    queue.is_empty() && limit.in_use() == 0
}

/// Starts a loop (its slot already taken and counted) on `handle`'s blocking pool.
fn start_loop(limit: &'static Limit, handle: &Handle) {
    let life = Arc::new(Life::default());
    let mut starting = Starting {
        limit,
        life: Some(life.clone()),
    };
    drop(handle.spawn(Sentinel(life.clone())));
    drop(handle.spawn_blocking(move || {
        let life = starting.life.take().expect("taken once");
        run_loop(limit, life);
    }));
}

/// A loop's slot and count while it has not started: given back if the runtime drops the loop
/// unstarted (it is shutting down).
struct Starting {
    limit: &'static Limit,
    life: Option<Arc<Life>>,
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(life) = self.life.take() {
            let mut queue = self.limit.exec.lock();
            queue.loops -= 1;
            self.limit.give_back_loop_slot();
            drop(queue);
            life.end();
        }
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
            exec.queued.fetch_sub(1, Ordering::AcqRel);
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
        then.run(limit);
    }
}

/// Waits until the loop is claimed or retired, its runtime shuts down, or [`LINGER`] passes.
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
    while waiting() {
        let Some(left) = LINGER.checked_sub(start.elapsed()) else {
            return;
        };
        thread::park_timeout(left);
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
        if limit.exec.queued() > 0 || cancelled() || start.elapsed() >= QUICK_AWAIT {
            return woken();
        }
        thread::yield_now();
    }
}
