//! Blocking work side by side on tokio's blocking pool, borrowing the caller's locals.
//!
//! [`scope`] is a synchronous scoped join, shaped like [`std::thread::scope`] but running its
//! branches on tokio's blocking pool (bounded, reused threads) instead of new threads. It is meant
//! for blocking code: the body of a `#[blocking_first]` function outside `io!`, or any code
//! already on a blocking thread. `parallel! { a, b }` expands to it; [`map`] is the dynamic form.
//!
//! Each branch dispatched to the pool takes a slot of the current body's
//! [`Limit`]; when none is free, the branch runs right away on the caller's
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
//! pool task reaches its branch through a lifetime-erased pointer. Soundness rests on two
//! protocols (in `ticket.rs`, model-checked with loom):
//! - a `'static` ticket per branch: a pool task touches the branch only after moving its ticket
//!   from *queued* to *running*; a branch the caller claims first is never touched by its pool
//!   task;
//! - a count of the scope's unfinished branches, raised before a branch can start (so a branch
//!   spawned by a branch counts too) and lowered after its last touch of borrowed data: [`scope`]
//!   does not return, by value or by unwinding, before it is zero, and claims back every branch
//!   spawned while it waits.

use std::fmt;
use std::marker::PhantomData;
use std::mem::{self, ManuallyDrop};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::limit::{self, Limit};
use crate::stats;
use crate::sync::{self as shim, Mutex};
use crate::ticket::{Pending, Ticket};
use crate::unwind::{Payload, catch_drop, drop_caught, keep_first};

mod pool;

use pool::Pool;

/// Runs `f` with a [`Scope`] whose branches may borrow anything that outlives the call.
///
/// Returns once every branch has finished, including branches spawned by other branches. If `f`
/// or a branch nobody joined panicked, the panic is re-raised with its payload after every branch
/// has finished. Branches still queued on the pool when `f` returns are taken back and run on this
/// thread (or dropped, if `f` panicked; a destructor that panics there is caught, and the scope
/// still waits for every other branch).
pub fn scope<'env, F, R>(f: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let scope = Scope {
        branches: ManuallyDrop::new(Mutex::new(Vec::new())),
        pending: Arc::new(Pending::new()),
        pool: Pool::current(),
        limit: limit::current().unwrap_or_else(limit::global),
        _scope: PhantomData,
        _env: PhantomData,
    };
    let result = panic::catch_unwind(AssertUnwindSafe(|| f(&scope)));
    // `finish` never unwinds: it returns only once every branch has finished.
    let unjoined_panic = scope.finish(result.is_ok());
    // Whatever is not re-raised is dropped caught: a destructor that panicked while this unwinds
    // would abort the process.
    let payload = match (result, unjoined_panic) {
        (Ok(value), None) => return value,
        (Ok(value), Some(payload)) => {
            drop_caught(value);
            payload
        }
        (Err(payload), unjoined) => {
            drop_caught(unjoined);
            payload
        }
    };
    panic::resume_unwind(payload)
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
    /// Branches spawned and not yet taken by `finish`, to claim or wait for at the end. Empty
    /// when the scope ends; the `ManuallyDrop` keeps the borrow checker from assuming a drop that
    /// could touch 'scope data after the scope's locals are gone.
    branches: ManuallyDrop<Mutex<Vec<Arc<dyn Claim + 'scope>>>>,
    /// Unfinished branches, shared with their pool tasks (`'static`: a pool task lowers the
    /// count as its very last step, when the scope may already be gone).
    pending: Arc<Pending>,
    pool: Option<Pool>,
    limit: &'static Limit,
    // Invariant lifetimes, as in `std::thread::Scope`: a branch cannot outlive the scope.
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
}

impl<'scope> Scope<'scope, '_> {
    /// Starts `f` on the blocking pool if a slot of the current limit is free, or runs it right
    /// now on this thread if not. [`Branch::join`] gives its value.
    ///
    /// May be called from a running branch, also after the scope's closure returned: the scope
    /// waits for that branch as for any other.
    pub fn spawn<F, T>(&'scope self, f: F) -> Branch<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let packet = Arc::new(Packet {
            ticket: Arc::new(Ticket::new(None)),
            pending: self.pending.clone(),
            job: Mutex::new(Some(Box::new(f))),
            outcome: Mutex::new(None),
        });
        // Counted before anything can start or claim it; announced once `finish` can find it.
        self.pending.add();
        shim::lock(&self.branches).push(packet.clone());
        self.pending.announce();
        let dispatched = self
            .pool
            .as_ref()
            .is_some_and(|pool| dispatch(pool, self.limit, &packet));
        if !dispatched {
            // Runs it here; a branch that runs cannot leave a destructor's panic behind.
            drop_caught(packet.claim(true));
        }
        Branch { packet }
    }

    /// Claims every branch no pool thread started (runs it if `run`, else drops it), waits for
    /// the others -- also those spawned meanwhile by running branches -- and returns the payload
    /// of a panic no [`Branch::join`] re-raised.
    ///
    /// Never unwinds: everything that may run user code here (a branch, a destructor, a panic
    /// payload's destructor) runs under `catch_unwind`, so the wait below cannot be skipped.
    fn finish(&self, run: bool) -> Option<Payload> {
        let mut ended = Vec::new();
        let (mut unjoined, mut drop_panic) = (None, None);
        loop {
            let seen = self.pending.announced();
            let batch = mem::take(&mut *shim::lock(&self.branches));
            for branch in &batch {
                if let Some(payload) = branch.claim(run) {
                    keep_first(&mut drop_panic, payload);
                }
            }
            ended.extend(batch);
            if !self.pending.settle(seen) {
                continue;
            }
            // Every branch announced so far has finished: nothing touches borrowed data now.
            if unjoined.is_none() {
                unjoined = ended.iter().find_map(|branch| branch.take_panic());
            }
            // Values nobody joined drop here, one at a time so that two panicking destructors do
            // not abort. A destructor may hold the scope and spawn into it: then go round again.
            for branch in ended.drain(..) {
                if let Some(payload) = catch_drop(branch) {
                    keep_first(&mut drop_panic, payload);
                }
            }
            if self.pending.announced() == seen {
                break;
            }
        }
        match unjoined {
            Some(payload) => {
                drop_caught(drop_panic);
                Some(payload)
            }
            None => drop_panic,
        }
    }
}

/// Sends a branch to a loop; `false` if none can take it now. The loop's job holds the branch's
/// `'static` ticket and the scope's `'static` count, and a lifetime-erased pointer to the branch,
/// which it follows only after winning the ticket.
fn dispatch<'scope, T: Send + 'scope>(
    pool: &Pool,
    limit: &'static Limit,
    packet: &Arc<Packet<'scope, T>>,
) -> bool {
    let ticket = packet.ticket.clone();
    let pending = packet.pending.clone();
    let runnable: *const (dyn Run + 'scope) = Arc::as_ptr(packet) as *const (dyn Run + 'scope);
    // SAFETY: only widens the trait object's lifetime bound; the pointer's layout is unchanged.
    // The pointer is followed only under the ticket protocol, in the pool task below.
    let runnable: *const (dyn Run + 'static) = unsafe { mem::transmute(runnable) };
    let target = PoolTarget(runnable);
    pool.spawn(limit, move || {
        let target = target;
        let Some(slot) = ticket.start_on_pool() else {
            // The caller claimed the branch (or the runtime discards this task): the pointer is
            // dropped without being followed.
            return;
        };
        // Counted here, where the pool won the branch: one the caller took back ran inline.
        stats::DISPATCHED.fetch_add(1, Ordering::Relaxed);
        let context = slot.map(limit::enter_context);
        // SAFETY: `start_on_pool` moved the ticket from queued to running, so the caller claimed
        // nothing, and the branch is counted unfinished in `pending` until `pending.finished()`
        // below. `scope` does not return or unwind before that count is zero, and keeps the
        // packet (in its branch list) alive until it returns: the pointee is alive and its
        // borrows ('scope) are valid for the whole call.
        unsafe { (*target.0).run() };
        ticket.finish();
        drop(context);
        // The last step: from here on the scope may end, and this task touches only `'static`
        // data (its ticket and the count, kept alive by its own `Arc`s).
        pending.finished();
    })
}

/// A branch pointer sent to the pool (raw pointers are not `Send` by default).
struct PoolTarget(*const (dyn Run + 'static));

// SAFETY: the pointee is `Send + Sync` (`Run: Send + Sync`); the pointer is only followed under
// the ticket protocol (see `dispatch`), never after the scope has ended.
unsafe impl Send for PoolTarget {}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("branches", &shim::lock(&self.branches).len())
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
        drop_caught(self.packet.claim(true));
        self.packet.ticket.wait();
        let outcome = shim::lock(&self.packet.outcome).take();
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

/// One branch: its ticket, the scope's count, its job, its outcome.
struct Packet<'scope, T> {
    ticket: Arc<Ticket>,
    pending: Arc<Pending>,
    job: Mutex<Option<Box<dyn FnOnce() -> T + Send + 'scope>>>,
    outcome: Mutex<Option<std::thread::Result<T>>>,
}

/// Running a branch, whatever its value type (what a pool task does).
trait Run: Send + Sync {
    fn run(&self);
}

impl<T: Send> Run for Packet<'_, T> {
    fn run(&self) {
        let job = shim::lock(&self.job).take();
        if let Some(job) = job {
            let outcome = panic::catch_unwind(AssertUnwindSafe(job));
            *shim::lock(&self.outcome) = Some(outcome);
        }
    }
}

/// What the scope needs of a branch at its end, whatever its value type.
trait Claim: Send + Sync {
    /// Takes the branch if no pool thread started it: runs it here (`run`) or drops it unrun.
    /// Returns the panic of a destructor that ran while dropping it.
    fn claim(&self, run: bool) -> Option<Payload>;
    fn take_panic(&self) -> Option<Payload>;
}

impl<T: Send> Claim for Packet<'_, T> {
    fn claim(&self, run: bool) -> Option<Payload> {
        if !self.ticket.claim() {
            return None;
        }
        let drop_panic = if run {
            stats::INLINE.fetch_add(1, Ordering::Relaxed);
            self.run();
            None
        } else {
            let job = shim::lock(&self.job).take();
            let drop_panic = catch_drop(job);
            // A `join` from a branch still running gets a clear panic, not a missing outcome.
            let dropped: Payload = Box::new(
                "blocking-first: this branch was dropped unrun because the scope's closure panicked",
            );
            *shim::lock(&self.outcome) = Some(Err(dropped));
            drop_panic
        };
        self.ticket.finish();
        self.pending.finished();
        drop_panic
    }

    fn take_panic(&self) -> Option<Payload> {
        // Leaves a value in place: it is dropped with the packet, under `catch_unwind`.
        let mut outcome = shim::lock(&self.outcome);
        match outcome.take() {
            Some(Err(payload)) => Some(payload),
            other => {
                *outcome = other;
                None
            }
        }
    }
}
