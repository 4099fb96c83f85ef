//! Blocking work side by side on tokio's blocking pool, borrowing the caller's locals.
//!
//! [`scope`] is a synchronous scoped join, shaped like [`std::thread::scope`] but running its
//! branches on tokio's blocking pool (bounded, reused threads) instead of new threads. It is meant
//! for blocking code: the body of a `#[blocking_first]` function outside `io!`, or any code
//! already on a blocking thread. `parallel! { a, b }` expands to it; [`map`] is the dynamic form.
//!
//! Each branch dispatched to the pool takes a slot of the current body's
//! [`Limit`](crate::limit::Limit); when none is free, the branch runs right away on the caller's
//! thread instead. So a `parallel!` never takes the body above its cap and never deadlocks on a
//! saturated pool: a branch the pool has not started yet when the caller needs it is taken back
//! and run by the caller.
//!
//! ```
//! # use blocking_first_runtime as blocking_first;
//! use blocking_first::parallel;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! # tokio::task::spawn_blocking(|| {
//! let ids = vec![1, 2, 3];
//! let mut log = Vec::new();
//! let (sum, squares) = parallel::scope(|s| {
//!     let sum = s.spawn(|| ids.iter().sum::<i32>());        // borrows `ids`
//!     let squares = s.spawn(|| parallel::map(&ids, |id| id * id));
//!     log.push("both started");                              // the caller works meanwhile
//!     (sum.join(), squares.join())
//! });
//! assert_eq!((sum, squares), (6, vec![1, 4, 9]));
//! assert_eq!(log, ["both started"]);
//! # }).await.unwrap();
//! # }
//! ```
//!
//! This is the crate's one module with `unsafe`: branches borrow from the caller's stack, so a
//! pool task reaches its branch through a lifetime-erased pointer. Soundness rests on a `'static`
//! ticket per branch: a pool task touches the branch only after moving its ticket from
//! *queued* to *running*, and [`scope`] does not return, by value or by unwinding, while any
//! ticket is *running*. A branch the caller claims first is never touched by its pool task.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::mem::{self, ManuallyDrop};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::runtime::Handle;

use crate::limit::{self, Slot};
use crate::stats;

type Payload = Box<dyn Any + Send + 'static>;

/// Runs `f` with a [`Scope`] whose branches may borrow anything that outlives the call.
///
/// Returns once every branch has finished. If `f` or a branch nobody joined panicked, the panic
/// is re-raised with its payload after every branch has finished. Branches still queued on the
/// pool when `f` returns are taken back and run on this thread (or dropped, if `f` panicked).
pub fn scope<'env, F, R>(f: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let scope = Scope {
        branches: ManuallyDrop::new(Mutex::new(Vec::new())),
        runtime: Handle::try_current().ok(),
        limit: limit::current().unwrap_or_else(limit::global),
        _scope: PhantomData,
        _env: PhantomData,
    };
    let result = panic::catch_unwind(AssertUnwindSafe(|| f(&scope)));
    let unjoined_panic = scope.finish(result.is_ok());
    match (result, unjoined_panic) {
        (Err(payload), _) | (Ok(_), Some(payload)) => panic::resume_unwind(payload),
        (Ok(value), None) => value,
    }
}

/// Runs `f` over every item side by side and returns the results in the items' order.
///
/// The dynamic form of `parallel!`, for a number of operations known only at run time. The last
/// item runs on the caller's thread; the others take slots of the current limit while free.
///
/// ```
/// # use blocking_first_runtime as blocking_first;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # tokio::task::spawn_blocking(|| {
/// let lengths = blocking_first::parallel::map(["a", "bb", "ccc"], |word| word.len());
/// assert_eq!(lengths, [1, 2, 3]);
/// # }).await.unwrap();
/// # }
/// ```
pub fn map<I, F, T>(items: I, f: F) -> Vec<T>
where
    I: IntoIterator,
    I::Item: Send,
    F: Fn(I::Item) -> T + Sync,
    T: Send,
{
    let mut items: Vec<I::Item> = items.into_iter().collect();
    let Some(last) = items.pop() else {
        return Vec::new();
    };
    let f = &f;
    scope(|s| {
        let branches: Vec<_> = items
            .into_iter()
            .map(|item| s.spawn(move || f(item)))
            .collect();
        let last = f(last);
        let mut results: Vec<T> = branches.into_iter().map(Branch::join).collect();
        results.push(last);
        results
    })
}

/// A scope to spawn borrowing branches in; see [`scope`].
pub struct Scope<'scope, 'env: 'scope> {
    /// Every spawned branch, to claim or wait for at the end. `finish` empties it; the
    /// `ManuallyDrop` keeps the borrow checker from assuming a drop that could touch 'scope data
    /// after the scope's locals are gone (there is none: the vector is always empty by then).
    branches: ManuallyDrop<Mutex<Vec<Arc<dyn Claim + 'scope>>>>,
    runtime: Option<Handle>,
    limit: &'static limit::Limit,
    // Invariant lifetimes, as in `std::thread::Scope`: a branch cannot outlive the scope.
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl<'scope> Scope<'scope, '_> {
    /// Starts `f` on the blocking pool if a slot of the current limit is free, or runs it right
    /// now on this thread if not. [`Branch::join`] gives its value.
    pub fn spawn<F, T>(&'scope self, f: F) -> Branch<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let packet = Arc::new(Packet {
            ticket: Arc::new(Ticket::default()),
            job: Mutex::new(Some(Box::new(f))),
            outcome: Mutex::new(None),
        });
        lock(&self.branches).push(packet.clone());
        match (&self.runtime, self.limit.try_take()) {
            (Some(runtime), Some(slot)) => {
                stats::DISPATCHED.fetch_add(1, Ordering::Relaxed);
                dispatch(runtime, &packet, slot);
            }
            _ => {
                stats::INLINE.fetch_add(1, Ordering::Relaxed);
                packet.claim_and_run();
            }
        }
        Branch { packet }
    }

    /// Claims every branch no pool thread started (runs it if `run`, else drops it), waits for
    /// the ones that did, and returns the payload of a panic no [`Branch::join`] re-raised.
    fn finish(&self, run: bool) -> Option<Payload> {
        let branches = mem::take(&mut *lock(&self.branches));
        for branch in &branches {
            if run {
                branch.claim_and_run();
            } else {
                branch.claim_and_drop();
            }
            branch.wait();
        }
        branches.iter().find_map(|branch| branch.take_panic())
    }
}

/// Sends a branch to the blocking pool. The pool task holds the branch's `'static` ticket and a
/// lifetime-erased pointer to the branch, which it follows only after winning the ticket.
fn dispatch<'scope, T: Send + 'scope>(
    runtime: &Handle,
    packet: &Arc<Packet<'scope, T>>,
    slot: Slot,
) {
    let ticket = packet.ticket.clone();
    let runnable: *const (dyn Run + 'scope) = Arc::as_ptr(packet) as *const (dyn Run + 'scope);
    // SAFETY: only widens the trait object's lifetime bound; the pointer's layout is unchanged.
    // The pointer is followed only under the ticket protocol, in the pool task below.
    let runnable: *const (dyn Run + 'static) = unsafe { mem::transmute(runnable) };
    let target = PoolTarget(runnable);
    drop(runtime.spawn_blocking(move || {
        let _slot = limit::enter_context(slot);
        let target = target;
        if ticket.start_on_pool() {
            // SAFETY: `start_on_pool` moved the ticket from queued to running, so the caller
            // claimed nothing and `scope` is blocked in `finish` (or not there yet) until
            // `finish` below: the packet, owned by the scope's branch list until then,
            // is alive, and its borrows ('scope) are valid.
            unsafe { (*target.0).run() };
            ticket.finish();
        }
        // Unstarted (the caller claimed it, or the runtime discards this task): the pointer is
        // dropped without being followed.
    }));
}

/// A branch pointer sent to the pool (raw pointers are not `Send` by default).
struct PoolTarget(*const (dyn Run + 'static));

// SAFETY: the pointee is `Send + Sync` (`Run: Send + Sync`); the pointer is only followed under
// the ticket protocol (see `dispatch`), never after the scope has ended.
unsafe impl Send for PoolTarget {}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("branches", &lock(&self.branches).len())
            .field("limit", &self.limit.name())
            .finish()
    }
}

/// A branch started by [`Scope::spawn`].
pub struct Branch<'scope, T> {
    packet: Arc<Packet<'scope, T>>,
}

impl<T: Send> Branch<'_, T> {
    /// Waits for the branch and returns its value, running it here if the pool has not started
    /// it yet. Re-raises the branch's panic with its original payload.
    pub fn join(self) -> T {
        self.packet.claim_and_run();
        self.packet.ticket.wait();
        let outcome = lock(&self.packet.outcome).take();
        match outcome.expect("a finished branch has an outcome") {
            Ok(value) => value,
            Err(payload) => panic::resume_unwind(payload),
        }
    }
}

impl<T> fmt::Debug for Branch<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Branch").finish_non_exhaustive()
    }
}

/// Who runs a branch: decided once, under the ticket's lock.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum TicketState {
    #[default]
    Queued,
    /// A pool thread won the branch and is running it.
    OnPool,
    /// The caller won the branch (it runs it inline, or drops it).
    Claimed,
    /// The branch ran (or was dropped) and nobody touches it any more.
    Finished,
}

/// The `'static` part of a branch, shared with its pool task.
#[derive(Debug, Default)]
struct Ticket {
    state: Mutex<TicketState>,
    finished: Condvar,
}

impl Ticket {
    fn start_on_pool(&self) -> bool {
        self.transition(TicketState::OnPool)
    }

    fn claim(&self) -> bool {
        self.transition(TicketState::Claimed)
    }

    fn transition(&self, to: TicketState) -> bool {
        let mut state = lock(&self.state);
        let won = *state == TicketState::Queued;
        if won {
            *state = to;
        }
        won
    }

    fn finish(&self) {
        *lock(&self.state) = TicketState::Finished;
        self.finished.notify_all();
    }

    /// Blocks until the branch is finished.
    fn wait(&self) {
        let mut state = lock(&self.state);
        while *state != TicketState::Finished {
            state = self
                .finished
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// One branch: its ticket, its job, its outcome.
struct Packet<'scope, T> {
    ticket: Arc<Ticket>,
    job: Mutex<Option<Box<dyn FnOnce() -> T + Send + 'scope>>>,
    outcome: Mutex<Option<std::thread::Result<T>>>,
}

/// Running a branch, whatever its value type (what a pool task does).
trait Run: Send + Sync {
    fn run(&self);
}

impl<T: Send> Run for Packet<'_, T> {
    fn run(&self) {
        let job = lock(&self.job).take();
        if let Some(job) = job {
            let outcome = panic::catch_unwind(AssertUnwindSafe(job));
            *lock(&self.outcome) = Some(outcome);
        }
    }
}

/// What the scope needs of a branch at its end, whatever its value type.
trait Claim: Send + Sync {
    fn claim_and_run(&self);
    fn claim_and_drop(&self);
    fn wait(&self);
    fn take_panic(&self) -> Option<Payload>;
}

impl<T: Send> Claim for Packet<'_, T> {
    fn claim_and_run(&self) {
        if self.ticket.claim() {
            self.run();
            self.ticket.finish();
        }
    }

    fn claim_and_drop(&self) {
        if self.ticket.claim() {
            drop(lock(&self.job).take());
            self.ticket.finish();
        }
    }

    fn wait(&self) {
        self.ticket.wait();
    }

    fn take_panic(&self) -> Option<Payload> {
        match lock(&self.outcome).take() {
            Some(Err(payload)) => Some(payload),
            _ => None,
        }
    }
}

fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
