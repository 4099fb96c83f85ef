//! The driver: one body future, polled on tokio's blocking pool in blocking mode and from the
//! caller's task in async mode.
//!
//! The body stays one `async` block (rustc keeps its borrows, `?`, loops and error messages); the
//! driver only decides *where* each poll happens. A blocking-mode poll runs inside
//! `spawn_blocking`, which loops while the body keeps being woken and hands the body back
//! ([`Hop::Back`]) as soon as it asks for async mode or waits on an `.await`. An async-mode poll
//! happens right in [`Drive::poll`], holding no blocking thread.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::mem;
use std::panic;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::limit::{self, Limit, Slot};
use crate::mode::{Mode, Shared};
use crate::span::Span;
use crate::stats::{self, InBlocking};
use crate::sync::Ordering;

/// A body, boxed once for the driver's whole life.
#[doc(hidden)]
pub struct Body<T>(pub(crate) Pin<Box<dyn Future<Output = T> + Send + 'static>>);

impl<T> Body<T> {
    /// Wraps a boxed body. Generated code boxes it in a function of its own, `body_must_be_send`,
    /// written at the user's `#[blocking_first]`: that function's bound is the only place the body
    /// is required to be `Send`, so a body that is not is reported there, in the user's code.
    pub fn new(body: Pin<Box<dyn Future<Output = T> + Send + 'static>>) -> Body<T> {
        Body(body)
    }
}

impl<T> fmt::Debug for Body<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Body")
    }
}

/// Starts driving the body that `make` builds around its [`Mode`] handle; what
/// `#[blocking_first]` expands to (`__private::drive`). The body is boxed by the caller, in
/// `body_must_be_send`, so that a non-`Send` body is reported there. `limit`: the [`Limit`] whose
/// slots the body's blocking code takes (`None`: the global one). The body does not start before
/// the returned future is first polled.
pub fn drive_body<F, T>(limit: Option<&'static Limit>, make: F) -> Drive<T>
where
    F: FnOnce(Mode) -> Body<T>,
    T: Send + 'static,
{
    // Starts as if woken: the first poll must run the body's opening blocking code.
    let shared = Arc::new(Shared::new());
    let Body(body) = make(Mode {
        shared: shared.clone(),
    });
    Drive {
        waker: Waker::from(shared.clone()),
        shared,
        state: State::Held(body),
        limit: limit.unwrap_or_else(limit::global),
        started: false,
        span: Span::current(),
    }
}

/// The future returned by [`drive_body`]: resolves to the body's output.
///
/// Dropping it while the body runs blocking code lets that stretch finish, then drops the body on
/// that blocking thread without running it further.
#[must_use = "futures do nothing unless awaited"]
pub struct Drive<T: Send + 'static> {
    state: State<T>,
    shared: Arc<Shared>,
    /// The waker every poll of the body gets: it routes wakes through `shared`.
    waker: Waker,
    limit: &'static Limit,
    /// Whether the body has been polled at all (an unstarted body can be dropped anywhere).
    started: bool,
    span: Span,
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

enum State<T> {
    /// The body is with the driver: not started, in async mode, or parked on an `.await`.
    Held(Boxed<T>),
    /// The body waits for a slot of its limit before its next stretch of blocking code.
    Taking(Boxed<T>, Pin<Box<dyn Future<Output = Slot> + Send>>),
    /// The body is on the blocking pool.
    Hopping(JoinHandle<Hop<T>>),
    /// The body finished or panicked.
    Done,
}

/// What a stretch on the blocking pool ends with.
enum Hop<T> {
    /// The body completed.
    Done(T),
    /// The body asked for async mode or waits on an `.await`: the driver takes it back.
    Back(Boxed<T>),
    /// The driver was dropped; the body was dropped on the blocking thread.
    Dropped,
}

impl<T: Send + 'static> Future for Drive<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        loop {
            match mem::replace(&mut this.state, State::Done) {
                State::Hopping(mut handle) => match Pin::new(&mut handle).poll(cx) {
                    Poll::Pending => {
                        this.state = State::Hopping(handle);
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(Hop::Done(value))) => return Poll::Ready(value),
                    Poll::Ready(Ok(Hop::Back(body))) => this.state = State::Held(body),
                    Poll::Ready(Ok(Hop::Dropped)) => {
                        unreachable!("a body is only dropped after its driver is")
                    }
                    Poll::Ready(Err(err)) if err.is_panic() => {
                        panic::resume_unwind(err.into_panic())
                    }
                    Poll::Ready(Err(_)) => panic!(
                        "blocking-first: the tokio runtime shut down while this body was on its \
                         blocking pool; the body was dropped without finishing"
                    ),
                },
                State::Taking(body, mut take) => match take.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.state = State::Taking(body, take);
                        return Poll::Pending;
                    }
                    Poll::Ready(slot) if in_stretch() => {
                        let mut body = body;
                        if let Poll::Ready(value) = this.run_inline(&mut body, Some(slot)) {
                            return Poll::Ready(value);
                        }
                        this.state = State::Held(body);
                    }
                    Poll::Ready(slot) => this.state = this.hop(body, slot),
                },
                State::Held(mut body) => {
                    if !this.shared.take_wake() && this.shared.park(cx.waker()) {
                        this.state = State::Held(body);
                        return Poll::Pending;
                    }
                    if !this.shared.io.load(Ordering::Acquire) {
                        // Awaited from another body's blocking code: run right here, on its
                        // blocking thread, under its slot (same limit) or a free one of ours.
                        if in_stretch() {
                            let covered = limit::current()
                                .is_some_and(|current| std::ptr::eq(current, this.limit));
                            let slot = if covered { None } else { this.limit.try_take() };
                            if covered || slot.is_some() {
                                if let Poll::Ready(value) = this.run_inline(&mut body, slot) {
                                    return Poll::Ready(value);
                                }
                                this.state = State::Held(body);
                                continue;
                            }
                        }
                        this.state = match this.limit.try_take() {
                            Some(slot) => this.hop(body, slot),
                            None => State::Taking(body, this.limit.take(this.started)),
                        };
                        continue;
                    }
                    if let Poll::Ready(value) = this.poll_here(&mut body) {
                        return Poll::Ready(value);
                    }
                    this.state = State::Held(body);
                    if this.shared.io.load(Ordering::Acquire) && this.shared.is_woken() {
                        // Woken while still in async mode: yield to the runtime instead of
                        // re-polling in place, which would livelock once tokio's cooperative
                        // budget is spent.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                State::Done => panic!("`Drive` polled after completion"),
            }
        }
    }
}

impl<T: Send + 'static> Drive<T> {
    /// Polls the body in async mode, on the caller's task.
    fn poll_here(&mut self, body: &mut Boxed<T>) -> Poll<T> {
        self.started = true;
        self.shared.on_blocking.store(false, Ordering::Release);
        let _entered = self.span.enter();
        body.as_mut().poll(&mut Context::from_waker(&self.waker))
    }

    /// Runs a stretch of the body right here, inside the stretch of the body that awaits it (so
    /// on a blocking thread): no hop. `slot`: one of this body's limit, unless the thread's slot
    /// already is.
    fn run_inline(&mut self, body: &mut Boxed<T>, slot: Option<Slot>) -> Poll<T> {
        self.started = true;
        stats::NESTED_INLINE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _slot = slot.map(limit::enter_context);
        let _entered = self.span.enter();
        match run_stretch(body.as_mut(), &self.shared, &self.waker) {
            Stretch::Done(value) => Poll::Ready(value),
            Stretch::Back => Poll::Pending,
            Stretch::Cancelled => unreachable!("a driver being polled is not dropped"),
        }
    }

    /// Moves the body onto the blocking pool for a stretch of blocking code.
    fn hop(&mut self, body: Boxed<T>, slot: Slot) -> State<T> {
        self.started = true;
        let shared = self.shared.clone();
        let waker = self.waker.clone();
        let span = self.span.clone();
        let Ok(handle) = Handle::try_current() else {
            panic!(
                "blocking-first: a #[blocking_first] function was awaited outside a tokio \
                 runtime; await it inside one (e.g. #[tokio::main])"
            )
        };
        State::Hopping(handle.spawn_blocking(move || {
            // Dropped in reverse: the count falls before the slot is given back, and the body
            // (when dropped here) goes before both.
            let _slot = limit::enter_context(slot);
            let _counted = InBlocking::enter();
            let _entered = span.enter();
            let mut body = body;
            match run_stretch(body.as_mut(), &shared, &waker) {
                Stretch::Done(value) => Hop::Done(value),
                Stretch::Back => Hop::Back(body),
                Stretch::Cancelled => {
                    drop(body);
                    Hop::Dropped
                }
            }
        }))
    }
}

/// How [`run_stretch`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stretch<T> {
    /// The body completed.
    Done(T),
    /// The body asked for async mode or waits on an `.await` nobody has woken yet.
    Back,
    /// The driver was dropped: the body must not be polled again.
    Cancelled,
}

thread_local! {
    /// Set while this thread polls a body in a stretch of blocking code: an annotated function
    /// awaited there runs its own blocking code right here instead of hopping.
    static IN_STRETCH: Cell<bool> = const { Cell::new(false) };
}

fn in_stretch() -> bool {
    IN_STRETCH.get()
}

/// Marks this thread as in a stretch until dropped (also when the poll panics).
struct InStretch(bool);

impl InStretch {
    fn enter() -> InStretch {
        InStretch(IN_STRETCH.replace(true))
    }
}

impl Drop for InStretch {
    fn drop(&mut self) {
        IN_STRETCH.set(self.0);
    }
}

/// Polls the body on this blocking thread for as long as it stays in blocking mode and keeps
/// being woken.
pub(crate) fn run_stretch<F: Future + ?Sized>(
    mut body: Pin<&mut F>,
    shared: &Shared,
    waker: &Waker,
) -> Stretch<F::Output> {
    let mut cx = Context::from_waker(waker);
    shared.on_blocking.store(true, Ordering::Release);
    loop {
        if shared.cancelled.load(Ordering::Acquire) {
            return Stretch::Cancelled;
        }
        // Consumed with a read-modify-write, which synchronises with the waker: the poll below
        // sees whatever the wake announced (a plain store here could lose it).
        shared.take_wake();
        let polled = {
            let _marked = InStretch::enter();
            body.as_mut().poll(&mut cx)
        };
        if let Poll::Ready(value) = polled {
            return Stretch::Done(value);
        }
        if shared.cancelled.load(Ordering::Acquire) {
            return Stretch::Cancelled;
        }
        if shared.io.load(Ordering::Acquire) || !shared.is_woken() {
            shared.on_blocking.store(false, Ordering::Release);
            return Stretch::Back;
        }
    }
}

impl<T: Send + 'static> Drop for Drive<T> {
    fn drop(&mut self) {
        self.shared.cancelled.store(true, Ordering::Release);
        let body = match mem::replace(&mut self.state, State::Done) {
            State::Done => return,
            // The blocking thread sees `cancelled` at the body's next boundary and drops it
            // there. But its stretch may have ended already, leaving the body (or the value) in
            // the handle: dropping the handle here would drop them on this thread, a worker. So
            // a task takes whatever the stretch ends with and drops it off the workers. Only
            // this path pays for it; a hop does not.
            State::Hopping(stretch) => {
                match Handle::try_current() {
                    Ok(handle) => drop(handle.spawn(drop_off_the_workers(stretch))),
                    // No runtime (it is shutting down): nothing is a worker any more.
                    Err(_) => drop(stretch),
                }
                return;
            }
            State::Held(body) | State::Taking(body, _) => body,
        };
        // A started body may own connections or files: run its destructors on a blocking thread,
        // not on a runtime worker. Without a runtime (it is shutting down) drop it here.
        if let (true, Ok(handle)) = (self.started, Handle::try_current()) {
            drop(handle.spawn_blocking(move || drop(body)));
        }
    }
}

/// Waits for the stretch of a dropped driver and drops what it ended with on a blocking thread.
async fn drop_off_the_workers<T: Send + 'static>(stretch: JoinHandle<Hop<T>>) {
    let leftover: Box<dyn Send> = match stretch.await {
        Ok(Hop::Back(body)) => Box::new(body),
        Ok(Hop::Done(value)) => Box::new(value),
        // Dropped on the blocking thread already, or the stretch panicked (its payload is
        // nobody's any more) or was cancelled by the runtime's shutdown.
        Ok(Hop::Dropped) | Err(_) => return,
    };
    if let Ok(handle) = Handle::try_current() {
        drop(handle.spawn_blocking(move || drop(leftover)));
    }
}

impl<T: Send + 'static> fmt::Debug for Drive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Held(_) if self.shared.io.load(Ordering::Acquire) => "async",
            State::Held(_) => "parked",
            State::Taking(..) => "waiting for a slot",
            State::Hopping(_) => "blocking",
            State::Done => "done",
        };
        f.debug_struct("Drive")
            .field("state", &state)
            .field("limit", &self.limit.name())
            .finish()
    }
}
