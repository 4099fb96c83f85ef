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
//! This is the crate's one module with `unsafe`: branches borrow from the caller's stack, so their
//! lifetime is erased to cross into `spawn_blocking`. Soundness rests on [`scope`] not returning,
//! by value or by unwinding, before every dispatched task has dropped everything it borrows.

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
        pending: Arc::new(Pending::default()),
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
    pending: Arc<Pending>,
    /// Every spawned branch, to take back or wait for at the end. `finish` empties it; the
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
            state: Mutex::new(State::Queued(Box::new(f))),
            done: Condvar::new(),
        });
        lock(&self.branches).push(packet.clone());
        match (&self.runtime, self.limit.try_take()) {
            (Some(runtime), Some(slot)) => {
                stats::DISPATCHED.fetch_add(1, Ordering::Relaxed);
                self.dispatch(runtime, packet.clone(), slot);
            }
            _ => {
                stats::INLINE.fetch_add(1, Ordering::Relaxed);
                packet.run_if_queued();
            }
        }
        Branch { packet }
    }

    fn dispatch<T: Send + 'scope>(
        &self,
        runtime: &Handle,
        packet: Arc<Packet<'scope, T>>,
        slot: Slot,
    ) {
        self.pending.add();
        let task = Dispatched {
            packet: Some(packet),
            pending: self.pending.clone(),
        };
        let job: Box<dyn FnOnce() + Send + 'scope> = Box::new(move || {
            let _slot = limit::enter_context(slot);
            task.run();
        });
        // SAFETY: the job borrows data that lives for 'scope. `scope` does not return (nor
        // unwind) before `pending` is back to zero, and `pending` falls only in
        // `Dispatched::drop`, after the packet (the one thing with 'scope data the job holds) is
        // dropped. That drop happens whether the pool runs the job or discards it unrun (runtime
        // shutting down). After it, only 'static data (`Arc<Pending>`, the box's memory) is
        // touched. The transmute only widens the trait object's lifetime bound; layout is equal.
        let job: Box<dyn FnOnce() + Send + 'static> = unsafe { mem::transmute(job) };
        drop(runtime.spawn_blocking(job));
    }

    /// Takes back every branch nobody started (runs it if `run`, else drops it), waits for the
    /// others, and returns the payload of a panic no [`Branch::join`] re-raised.
    fn finish(&self, run: bool) -> Option<Payload> {
        let branches = mem::take(&mut *lock(&self.branches));
        for branch in &branches {
            if run {
                branch.run_if_queued();
            } else {
                branch.drop_if_queued();
            }
        }
        self.pending.wait_for_zero();
        branches.iter().find_map(|branch| branch.take_panic())
    }
}

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

impl<T> Branch<'_, T> {
    /// Waits for the branch and returns its value, running it here if the pool has not started
    /// it yet. Re-raises the branch's panic with its original payload.
    pub fn join(self) -> T {
        self.packet.run_if_queued();
        match self.packet.wait() {
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

/// One branch's job and outcome, shared by its [`Branch`], the scope and the pool task.
struct Packet<'scope, T> {
    state: Mutex<State<'scope, T>>,
    done: Condvar,
}

enum State<'scope, T> {
    Queued(Box<dyn FnOnce() -> T + Send + 'scope>),
    Running,
    Done(std::thread::Result<T>),
    /// The outcome was taken by `join`, or the job was dropped unrun.
    Taken,
}

impl<T> Packet<'_, T> {
    /// Runs the job if nobody has started it yet.
    fn run_if_queued(&self) {
        let job = {
            let mut state = lock(&self.state);
            match mem::replace(&mut *state, State::Running) {
                State::Queued(job) => job,
                other => {
                    *state = other;
                    return;
                }
            }
        };
        let outcome = panic::catch_unwind(AssertUnwindSafe(job));
        *lock(&self.state) = State::Done(outcome);
        self.done.notify_all();
    }

    /// Blocks until the job has run, then takes its outcome.
    fn wait(&self) -> std::thread::Result<T> {
        let mut state = lock(&self.state);
        loop {
            match mem::replace(&mut *state, State::Taken) {
                State::Done(outcome) => return outcome,
                State::Running => {
                    *state = State::Running;
                    state = self
                        .done
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                State::Queued(_) | State::Taken => unreachable!("joined before it ran"),
            }
        }
    }
}

/// What the scope needs of a branch whatever its value type.
trait Claim: Send + Sync {
    fn run_if_queued(&self);
    fn drop_if_queued(&self);
    fn take_panic(&self) -> Option<Payload>;
}

impl<T: Send> Claim for Packet<'_, T> {
    fn run_if_queued(&self) {
        Packet::run_if_queued(self);
    }

    fn drop_if_queued(&self) {
        let mut state = lock(&self.state);
        if let State::Queued(_) = &*state {
            let job = mem::replace(&mut *state, State::Taken);
            drop(state);
            drop(job);
        }
    }

    fn take_panic(&self) -> Option<Payload> {
        let mut state = lock(&self.state);
        match mem::replace(&mut *state, State::Taken) {
            State::Done(Err(payload)) => Some(payload),
            other => {
                *state = other;
                None
            }
        }
    }
}

/// The pool task's hold on a packet. Its drop (run or discarded unrun) releases the packet
/// *before* counting the task done: the order `scope`'s soundness rests on.
struct Dispatched<'scope, T> {
    packet: Option<Arc<Packet<'scope, T>>>,
    pending: Arc<Pending>,
}

impl<T> Dispatched<'_, T> {
    fn run(self) {
        if let Some(packet) = &self.packet {
            packet.run_if_queued();
        }
    }
}

impl<T> Drop for Dispatched<'_, T> {
    fn drop(&mut self) {
        drop(self.packet.take());
        self.pending.done();
    }
}

/// Count of dispatched tasks not yet finished with their packet.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    zero: Condvar,
}

impl Pending {
    fn add(&self) {
        *lock(&self.count) += 1;
    }

    fn done(&self) {
        let mut count = lock(&self.count);
        *count -= 1;
        if *count == 0 {
            self.zero.notify_all();
        }
    }

    fn wait_for_zero(&self) {
        let mut count = lock(&self.count);
        while *count > 0 {
            count = self
                .zero
                .wait(count)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
