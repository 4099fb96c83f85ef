//! The driver: one body future, polled on a blocking loop of its limit in blocking mode and from
//! the caller's task in async mode.
//!
//! The body stays one `async` block (rustc keeps its borrows, `?`, loops and error messages); the
//! driver only decides *where* each poll happens. A blocking-mode poll is a job in the limit's run
//! queue (`exec/`): a loop polls it while it keeps being woken and hands it back
//! ([`Outcome::Back`]) as soon as it asks for async mode or waits on an `.await` that is not
//! quick. An async-mode poll happens right in [`Drive::poll`], holding no blocking thread.

use std::fmt;
use std::future::Future;
use std::mem;
use std::panic;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::runtime::Handle;

use crate::cancel;
use crate::exec::{self, Priority};

mod job;
mod stretch;

use crate::clock;
use crate::limit::in_stretch;
use crate::limit::{self, Limit, Slot};
use crate::mode::{Mode, Shared};
use crate::observe::{self, detect};
use crate::record::{Kind, Record, Site};
use crate::span::Span;
use crate::stats;
use crate::sync::Ordering;
use crate::unwind::drop_caught;
use job::{Abandoned, BodyJob, Handoff, Outcome};
pub(crate) use stretch::{Stretch, parked_or_io, run_stretch};

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
/// slots the body's blocking code takes (`None`: the global one); `site`: where the function is,
/// for its time split. The body does not start before the returned future is first polled.
pub fn drive_body<F, T>(site: &'static Site, limit: Option<&'static Limit>, make: F) -> Drive<T>
where
    F: FnOnce(Mode) -> Body<T>,
    T: Send + 'static,
{
    let limit = limit.unwrap_or_else(limit::global);
    // Starts as if woken: the first poll must run the body's opening blocking code.
    let shared = Arc::new(Shared::new(Record::new(site, limit)));
    let Body(body) = make(Mode {
        shared: shared.clone(),
    });
    Drive {
        waker: Waker::from(shared.clone()),
        shared,
        handoff: Arc::new(Handoff::new()),
        state: State::Held(body),
        limit,
        started: false,
        reported: false,
        in_poll: false,
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
    /// Where a loop hands back what a stretch ended with.
    handoff: Arc<Handoff<T>>,
    limit: &'static Limit,
    /// Whether the body has been polled at all (an unstarted body can be dropped anywhere).
    started: bool,
    /// Whether its end was reported (to tracing and metrics) and it left the bodies in flight.
    reported: bool,
    /// Set while `poll` runs: still set at the drop only if a poll unwound (the body panicked on
    /// this thread, in async mode or inline).
    in_poll: bool,
    span: Span,
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

enum State<T> {
    /// The body is with the driver: not started, in async mode, or parked on an `.await`.
    Held(Boxed<T>),
    /// The body is in its limit's run queue or on one of its loops.
    Hopping,
    /// The body finished or panicked.
    Done,
}

impl<T: Send + 'static> Future for Drive<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        this.in_poll = true;
        let polled = this.poll_body(cx);
        this.in_poll = false;
        polled
    }
}

impl<T: Send + 'static> Drive<T> {
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        let this = self;
        loop {
            match mem::replace(&mut this.state, State::Done) {
                State::Hopping => match this.handoff.poll(cx) {
                    Poll::Pending => {
                        this.state = State::Hopping;
                        return Poll::Pending;
                    }
                    Poll::Ready(Outcome::Done(value)) => {
                        this.finish(observe::Outcome::Completed, None);
                        return Poll::Ready(value);
                    }
                    Poll::Ready(Outcome::Back(body)) => this.state = State::Held(body),
                    Poll::Ready(Outcome::Panicked(payload)) => {
                        this.finish(observe::Outcome::Panicked, None);
                        panic::resume_unwind(payload)
                    }
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
                            let slot = if covered {
                                None
                            } else {
                                this.limit
                                    .try_take()
                                    .or_else(|| this.limit.grow_for_nested())
                            };
                            if covered || slot.is_some() {
                                if let Poll::Ready(value) = this.run_inline(&mut body, slot) {
                                    return Poll::Ready(value);
                                }
                                this.state = State::Held(body);
                                continue;
                            }
                        }
                        this.hop(body);
                        this.state = State::Hopping;
                        continue;
                    }
                    // A panic here (the body's, or a subscriber's on the `io!` detector's
                    // warning) leaves the body with the driver, whose drop then drops it off the
                    // runtime workers, instead of on this worker as the panic unwinds.
                    let polled =
                        panic::catch_unwind(panic::AssertUnwindSafe(|| this.poll_here(&mut body)));
                    match polled {
                        Ok(Poll::Ready(value)) => return Poll::Ready(value),
                        Ok(Poll::Pending) => {}
                        Err(payload) => {
                            this.state = State::Held(body);
                            panic::resume_unwind(payload)
                        }
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

    /// At the body's first poll: its record starts (if observation is on) and it is listed in
    /// flight.
    fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        // Polled first from another body's code (it awaits this one): that body's
        // cancellation is this one's too. Otherwise its split joins the request's
        // `Server-Timing`, if a layer times the request.
        let parent = cancel::current_body();
        if parent.is_none() {
            if let Some(timing) = crate::record::timing::current() {
                let _ = self.shared.record.timing.set(timing);
            }
        }
        self.shared.inherit(parent);
        detect::read_env();
        observe::know(self.limit);
        let on = observe::is_enabled();
        self.shared.record.begin(on);
        if on {
            observe::register(&self.shared);
        }
    }

    /// The body ended: its split is reported and it leaves the bodies in flight. `now`: for a
    /// body cancelled mid-segment.
    fn finish(&mut self, outcome: observe::Outcome, now: Option<u64>) {
        if mem::replace(&mut self.reported, true) || !self.started {
            return;
        }
        // Off the list first: a subscriber that lists the bodies in flight must not see this
        // one, and one that panics must not leave it listed for good.
        observe::deregister(&self.shared);
        observe::report(&self.shared.record, outcome, &self.span, now);
    }

    /// Polls the body in async mode, on the caller's task.
    fn poll_here(&mut self, body: &mut Boxed<T>) -> Poll<T> {
        self.start();
        self.shared.on_blocking.store(false, Ordering::Release);
        let entered = self.span.enter();
        let mut cx = Context::from_waker(&self.waker);
        // Only on a runtime worker: polled from another body's stretch (a blocking thread), a
        // long poll stalls no task.
        let on_worker = !in_stretch();
        let _marked = on_worker.then(limit::OnWorker::enter);
        let _body = cancel::enter_body(Some(self.shared.clone()), None);
        let polled = match detect::io_poll_threshold().filter(|_| on_worker) {
            None => body.as_mut().poll(&mut cx),
            Some(threshold) => {
                let start = clock::now();
                let polled = body.as_mut().poll(&mut cx);
                let took = clock::now().saturating_sub(start);
                detect::io_poll_took(self.shared.record.site, took, threshold);
                polled
            }
        };
        drop(entered);
        if polled.is_ready() {
            self.shared.record.end();
            self.finish(observe::Outcome::Completed, None);
        }
        polled
    }

    /// Runs a stretch of the body right here, inside the stretch of the body that awaits it (so
    /// on a blocking thread): no hop. `slot`: one of this body's limit, unless the thread's slot
    /// already is.
    fn run_inline(&mut self, body: &mut Boxed<T>, slot: Option<Slot>) -> Poll<T> {
        self.start();
        stats::NESTED_INLINE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slot = slot.map(limit::enter_context);
        let entered = self.span.enter();
        let record = &self.shared.record;
        record.enter(Kind::Blocking);
        // A panic unwinds to the caller, whose drop of this driver reports it.
        // Inside the awaiting body's stretch: its runtime is this body's (this thread may be one of
        // its loops).
        let runtime = Handle::try_current().ok().map(|handle| handle.id());
        let stretch = run_stretch(body.as_mut(), &self.shared, &self.waker, None, runtime);
        let ended = match &stretch {
            Stretch::Done(_) => record.end(),
            _ => record.enter(parked_or_io(&self.shared)),
        };
        detect::segment_ended(record.site, self.limit.name(), ended);
        drop(entered);
        // The slot goes back before the caller sees the result.
        drop(slot);
        match stretch {
            Stretch::Done(value) => {
                self.finish(observe::Outcome::Completed, None);
                Poll::Ready(value)
            }
            Stretch::Back => Poll::Pending,
            Stretch::Cancelled => unreachable!("a driver being polled is not dropped"),
        }
    }

    /// Queues the body for a loop of its limit, for a stretch of blocking code.
    fn hop(&mut self, body: Boxed<T>) {
        let priority = if self.started {
            Priority::Started
        } else {
            Priority::Fresh
        };
        self.start();
        let Ok(handle) = Handle::try_current() else {
            panic!(
                "blocking-first: a #[blocking_first] function was awaited outside a tokio \
                 runtime; await it inside one (e.g. #[tokio::main])"
            )
        };
        let job = Box::new(BodyJob {
            body,
            shared: self.shared.clone(),
            waker: self.waker.clone(),
            span: self.span.clone(),
            handle,
            handoff: self.handoff.clone(),
        });
        if exec::submit(self.limit, job, priority, false).is_err() {
            unreachable!("a body's job is always queued");
        }
    }
}

impl<T: Send + 'static> Drop for Drive<T> {
    fn drop(&mut self) {
        // Timed first: how long the body runs for nobody counts from here.
        let now = (self.started && self.shared.record.is_on()).then(clock::now);
        if let Some(now) = now {
            self.shared.record.cancel(now);
        }
        self.shared.cancelled.store(true, Ordering::Release);
        // Reported last (a subscriber may panic), but timed now.
        // A poll unwound: the body panicked on this thread (async mode, or inline). Not
        // `thread::panicking()`: a body dropped while its caller unwinds was cancelled.
        let outcome = if self.in_poll {
            observe::Outcome::Panicked
        } else {
            observe::Outcome::Cancelled
        };
        let report = (!mem::replace(&mut self.reported, true) && self.started).then_some(outcome);
        let mut on_a_loop = false;
        let leftover: Option<Box<dyn Send>> = match mem::replace(&mut self.state, State::Done) {
            State::Done => None,
            // Still queued: take it back. On a loop: the loop sees `cancelled` at the body's
            // next boundary, drops it there and reports it; if its stretch ended already, what
            // it ended with is in the handoff, to be dropped off the workers.
            State::Hopping => match exec::withdraw(self.limit, Arc::as_ptr(&self.shared).cast()) {
                Some(job) => Some(job),
                None => match self.handoff.abandon() {
                    Abandoned::Found(Outcome::Done(value)) => Some(Box::new(value)),
                    Abandoned::Found(Outcome::Back(body)) => Some(Box::new(body)),
                    Abandoned::Found(Outcome::Panicked(payload)) => {
                        Some(Box::new(CaughtDrop(payload)))
                    }
                    Abandoned::Stopped => None,
                    Abandoned::Running => {
                        on_a_loop = true;
                        None
                    }
                },
            },
            State::Held(body) => Some(Box::new(body)),
        };
        // Off the list, unless its stretch still runs on a loop: listed (as cancelled) until
        // the loop lets it go, since it holds a thread and a slot till then.
        if !on_a_loop {
            observe::deregister(&self.shared);
        }
        // A started body may own connections or files: run its destructors on a blocking thread,
        // not on a runtime worker. Without a runtime (it is shutting down) drop it here.
        if let Some(leftover) = leftover {
            match (self.started, Handle::try_current()) {
                (true, Ok(handle)) => drop(handle.spawn_blocking(move || drop(leftover))),
                _ => drop(leftover),
            }
        }
        // A body still running on a loop is reported by the loop when it stops, with how long
        // it ran after this.
        if let Some(outcome) = report.filter(|_| !on_a_loop) {
            let report = || observe::report(&self.shared.record, outcome, &self.span, now);
            if std::thread::panicking() {
                // Dropped while its caller unwinds: a subscriber that panicked here would abort
                // the process. Its panic is dropped instead (the caller's own is on its way).
                drop_caught(panic::catch_unwind(panic::AssertUnwindSafe(report)));
            } else {
                report();
            }
        }
    }
}

/// A panic payload whose own destructor may panic: dropped caught.
struct CaughtDrop(Box<dyn std::any::Any + Send>);

impl Drop for CaughtDrop {
    fn drop(&mut self) {
        drop_caught(mem::replace(&mut self.0, Box::new(())));
    }
}

impl<T: Send + 'static> fmt::Debug for Drive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Held(_) if self.shared.io.load(Ordering::Acquire) => "async",
            State::Held(_) => "parked",
            State::Hopping => "blocking",
            State::Done => "done",
        };
        f.debug_struct("Drive")
            .field("state", &state)
            .field("limit", &self.limit.name())
            .finish()
    }
}
