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
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::slots::Slots;
use crate::sync::thread::Thread;
use crate::sync::{self, AtomicU8, Mutex, MutexGuard, Ordering};
use crate::watchdog;

mod adaptive;
pub(crate) mod context;
#[cfg(all(test, blocking_first_loom))]
mod loom;
mod looping;
#[cfg(not(blocking_first_loom))]
mod runtimes;
#[cfg(blocking_first_loom)]
mod runtimes_loom;
#[cfg(blocking_first_loom)]
use runtimes_loom as runtimes;

use looping::start_loop;
pub(crate) use looping::{Dying, Running, dying, wait_in_place};
mod slot;
pub(crate) use slot::{Busy, Slot};

/// How long an idle loop waits for work before it ends and gives its slot back (and its thread
/// back to tokio's blocking pool, where other limits and `spawn_blocking` may need it).
///
/// (Unused under loom, as are `LOOK` and `SPIN`: loom has no clock, see `looping::wait_idle`.)
#[cfg_attr(blocking_first_loom, allow(dead_code))]
pub(crate) const LINGER: Duration = Duration::from_millis(10);
/// How often a parked idle loop looks whether a loop start waits for a blocking thread: if one
/// does at two looks in a row, the pool is short of threads and the idle loop ends at once.
#[cfg_attr(blocking_first_loom, allow(dead_code))]
const LOOK: Duration = Duration::from_millis(1);
/// How long one idle loop per limit spins (yielding) before it parks: a job pushed meanwhile
/// costs no thread wake.
#[cfg_attr(blocking_first_loom, allow(dead_code))]
const SPIN: Duration = Duration::from_micros(50);
/// How long a loop with nothing else queued waits, in place, for a body pending on a plain
/// `.await` to be woken: a quick await then costs no hop.
pub(crate) const QUICK_AWAIT: Duration = Duration::from_micros(100);

/// A cap on how many bodies (and [`parallel`](crate::parallel) branches) run blocking code at once.
///
/// Declare one as a `static` and name it in `#[blocking_first(limit = PATH)]`. Waiting for a
/// slot holds no thread: the body waits as an ordinary pending future, in the limit's queue,
/// where bodies that already started go before those that have not.
///
/// Each slot is a *loop*: one thread of tokio's blocking pool that runs the limit's bodies one
/// after another, so a cap of `N` also means at most `N` threads. An idle loop lingers 10 ms
/// before it gives its slot and thread back ([`LimitStats::loops`](crate::limit::LimitStats::loops) counts them); an unbounded
/// limit starts a loop whenever none is idle.
///
/// A body takes a slot for each stretch of blocking code and gives it back while it waits in
/// `io!` or on an `.await`. So whatever it holds across a region (a pooled connection) is *not*
/// covered by the slot: give connections back before `io!` and take a new one after it, or the
/// bodies that took the freed slots can wait for connections that only come back after them.
/// With `blocking_first::pool::Pool` (feature `r2d2`) that mistake does not compile. With a raw
/// pool it is detected: when every slot of a capped limit has been held for at least a second
/// (and 20 of its usual stretches, as the detector saw them) without one given back, while
/// bodies wait to come back from `io!` or an `.await`, a `WARN` event at target `blocking_first::starvation` names the limit and says what
/// to do (at most once per limit every 30 s; counted in [`Stats::starvation_warnings`]).
///
/// ```
/// use blocking_first::blocking_first;
/// use blocking_first::limit::Limit;
///
/// /// As many bodies in database code as the pool has connections.
/// static DB: Limit = Limit::new("db", 8);
///
/// #[blocking_first(limit = DB)]
/// async fn count(name: String) -> usize {
///     name.len() // blocking code, at most 8 bodies at once
/// }
///
/// #[tokio::main]
/// async fn main() {
///     assert_eq!(count("four".into()).await, 4);
///     let stats = DB.stats();
///     assert_eq!((stats.capacity, stats.in_use), (Some(8), 0));
/// }
/// ```
///
/// [`Stats::starvation_warnings`]: crate::Stats::starvation_warnings
pub struct Limit {
    /// The permits and counters.
    pub(crate) slots: Slots,
    /// The run queue and the blocking loops that serve it.
    pub(crate) exec: Exec,
}

impl Limit {
    /// A limit of these slots, with an empty queue.
    pub(crate) const fn of(slots: Slots) -> Limit {
        Limit {
            slots,
            exec: Exec::new(),
        }
    }

    /// Takes a slot if one is free right now (for a stretch run inline, outside the loops).
    pub(crate) fn try_take(&'static self) -> Option<Slot> {
        self.slots.take_loop_slot().then(|| Slot::new(self))
    }

    /// Counts a job running on a loop as a slot in use until dropped.
    pub(crate) fn busy(&'static self) -> Busy {
        Busy::new(self)
    }

    /// A job that found no loop and no free slot entered the queue: an adaptive limit's slots
    /// are wanted.
    pub(crate) fn slot_wait_began(&'static self) {
        self.slots.slot_wait_began();
        self.slot_wanted();
    }
}

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
    /// Called under the queue's lock as the job is queued: `for_slot` when no loop is coming
    /// for it yet (every slot is busy), so it waits for one (a body's time split records it).
    fn queued(&self, _for_slot: bool) {}
    /// Its runtime shut down before a loop could take the job: report it (a body's caller gets a
    /// panic saying so) and drop the job here.
    fn abandon(self: Box<Self>);
}

/// Loop starts waiting for a thread of tokio's blocking pool, in the whole process: a hint for
/// idle loops, and a `static`, so std's even under loom (which reads it nowhere).
static PENDING_STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A limit's run queue and loop bookkeeping (a field of [`Limit`]).
pub(crate) struct Exec {
    #[cfg(not(blocking_first_loom))]
    queue: Mutex<Queue>,
    /// Under loom, built at first use: limits are `static`s, and a loom mutex belongs to one
    /// execution (a model makes a fresh limit in each).
    #[cfg(blocking_first_loom)]
    queue: std::sync::OnceLock<Mutex<Queue>>,
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
    /// The next entry's `seq`.
    next_seq: u64,
}

struct Entry {
    job: Box<dyn Job>,
    /// Identifies the entry while queued (not its job's address: a job that ran and was freed
    /// meanwhile may have left its address to a new one).
    seq: u64,
    /// Counted in the limit's `returning` (a started body that had to wait): the detector's cue.
    returning: bool,
    /// When it was queued (`clock::now`), if the limit sheds by time in queue and the job
    /// had to wait for a slot; 0 otherwise.
    queued_at: u64,
    /// It found no loop and no free slot (counted in the limit's `slot_waiters`).
    waits: bool,
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
            #[cfg(not(blocking_first_loom))]
            queue: Mutex::new(Queue::new()),
            #[cfg(blocking_first_loom)]
            queue: std::sync::OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        #[cfg(blocking_first_loom)]
        let queue = self.queue.get_or_init(|| Mutex::new(Queue::new()));
        #[cfg(not(blocking_first_loom))]
        let queue = &self.queue;
        sync::lock(queue)
    }

    /// Loops alive now.
    pub(crate) fn loops(&self) -> usize {
        self.lock().loops
    }
}

impl Queue {
    const fn new() -> Queue {
        Queue {
            started: VecDeque::new(),
            fresh: VecDeque::new(),
            idle: Vec::new(),
            spinning: false,
            loops: 0,
            next_seq: 0,
        }
    }

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
    #[cfg_attr(blocking_first_loom, allow(dead_code))]
    Branch,
}

/// What a submitter does after letting go of the lock.
enum Then {
    Unpark(Arc<Idle>),
    /// Start a loop (slot taken, counted) on the runtime of the queued entry with this `seq`.
    Start(Handle, u64),
    Nothing,
}

impl Then {
    /// Returns the job of entry `own`, taken back out of the queue, if a loop could not be
    /// started for it (its runtime is shutting down); other such jobs are abandoned.
    fn run(self, limit: &'static Limit, own: Option<u64>) -> Option<Box<dyn Job>> {
        let mut then = self;
        let mut returned = None;
        loop {
            match then {
                Then::Unpark(idle) => idle.thread.unpark(),
                Then::Start(handle, seq) => {
                    if start_loop(limit, &handle) {
                        return returned;
                    }
                    // Its runtime's blocking pool is shutting down: the job cannot run there.
                    let mut queue = limit.exec.lock();
                    let failed = take_entry(limit, &mut queue, |entry| entry.seq == seq);
                    then = kick(limit, &mut queue);
                    drop(queue);
                    match failed {
                        Some(job) if Some(seq) == own => returned = Some(job),
                        Some(job) => job.abandon(),
                        None => {}
                    }
                    continue;
                }
                Then::Nothing => {}
            }
            return returned;
        }
    }
}

/// Under the lock: removes the first queued job that `matches`.
fn take_entry(
    limit: &Limit,
    queue: &mut Queue,
    matches: impl Fn(&Entry) -> bool,
) -> Option<Box<dyn Job>> {
    let Queue { started, fresh, .. } = queue;
    let found = [started, fresh].into_iter().find_map(|list| {
        let at = list.iter().position(&matches)?;
        list.remove(at)
    })?;
    limit.slots.queued_changed(-1, found.returning);
    if found.waits {
        limit.slots.slot_wait_ended();
    }
    Some(found.job)
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
    let seq = queue.next_seq;
    queue.next_seq += 1;
    let then = if let Some(idle) = queue.idle.pop() {
        idle.state.store(CLAIMED, Ordering::Release);
        Then::Unpark(idle)
    } else if limit.slots.take_loop_slot() {
        queue.loops += 1;
        Then::Start(job.handle().clone(), seq)
    } else if only_if_served {
        drop(queue);
        limit.branch_denied();
        return Err(job);
    } else {
        Then::Nothing
    };
    let returning = matches!(then, Then::Nothing)
        && priority == Priority::Started
        && limit.slots.capacity().is_some();
    job.queued(matches!(then, Then::Nothing));
    let waits = matches!(then, Then::Nothing);
    let entry = Entry {
        job,
        seq,
        returning,
        queued_at: if waits && limit.slots.max_queue_time().is_some() {
            crate::clock::now()
        } else {
            0
        },
        waits,
    };
    match priority {
        Priority::Fresh => queue.fresh.push_back(entry),
        Priority::Started => queue.started.push_back(entry),
        Priority::Branch => queue.started.push_front(entry),
    }
    limit.slots.queued_changed(1, returning);
    if waits {
        limit.slot_wait_began();
    }
    drop(queue);
    if returning {
        watchdog::watch(&limit.slots);
    }

    match then.run(limit, Some(seq)) {
        Some(job) if only_if_served => Err(job),
        Some(job) => {
            job.abandon();
            Ok(())
        }
        None => Ok(()),
    }
}

/// Takes a body's job back out of the queue if no loop has taken it yet.
pub(crate) fn withdraw(limit: &'static Limit, key: *const ()) -> Option<Box<dyn Job>> {
    let mut queue = limit.exec.lock();
    let found = take_entry(limit, &mut queue, |entry| entry.job.key() == key)?;
    // Jobs behind it may be waiting for a loop that a failed start never gave them.
    let then = kick(limit, &mut queue);
    drop(queue);
    then.run(limit, None);
    Some(found)
}

/// Gives back a slot taken outside the loops (an inline stretch): if jobs wait and no loop is
/// idle, the slot starts a loop for them instead.
pub(crate) fn give_back_slot(limit: &'static Limit) {
    let mut queue = limit.exec.lock();
    limit.slots.give_back_loop_slot();
    let then = kick(limit, &mut queue);
    drop(queue);
    then.run(limit, None);
}

/// After an adaptive limit grew by `more` slots: loops for as many queued jobs.
pub(crate) fn serve_queued(limit: &'static Limit, more: usize) {
    for _ in 0..more.min(limit.slots.waiting()) {
        let mut queue = limit.exec.lock();
        let then = kick(limit, &mut queue);
        drop(queue);
        if matches!(then, Then::Nothing) {
            return;
        }
        then.run(limit, None);
    }
}

/// Under the lock, when no loop is coming for the queued jobs: those not counted yet as waiting
/// for a slot are now.
fn now_waiting(limit: &'static Limit, queue: &mut Queue) {
    let Queue { started, fresh, .. } = queue;
    for entry in started.iter_mut().chain(fresh.iter_mut()) {
        if !entry.waits {
            entry.waits = true;
            limit.slot_wait_began();
        }
    }
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
    if limit.slots.take_loop_slot() {
        queue.loops += 1;
        return Then::Start(front.job.handle().clone(), front.seq);
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
    queue.is_empty() && limit.slots.in_use() == 0
}
