//! A body's stretch as a loop's job, and the handoff through which its outcome comes back.

use std::any::Any;
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::runtime::Handle;

use super::{Boxed, Stretch, parked_or_io, run_stretch};
use crate::exec::{self, Job};
use crate::limit::{self, InStretch, Limit};
use crate::mode::Shared;
use crate::observe::{self, detect};
use crate::record::Kind;
use crate::span::Span;
use crate::stats::InBlocking;
use crate::sync::Ordering;
use crate::sync::lock_std as lock;
use crate::unwind::drop_caught;

/// A stretch of a body's blocking code, as a loop's job.
pub(super) struct BodyJob<T> {
    pub(super) body: Boxed<T>,
    pub(super) shared: Arc<Shared>,
    pub(super) waker: Waker,
    pub(super) span: Span,
    pub(super) handle: Handle,
    pub(super) handoff: Arc<Handoff<T>>,
}

impl<T: Send + 'static> Job for BodyJob<T> {
    fn run(self: Box<Self>, limit: &'static Limit, running: exec::Running) {
        let BodyJob {
            mut body,
            shared,
            waker,
            span,
            handle,
            handoff,
        } = *self;
        // Entered until the end: the body's destructors, when it is dropped here, and whatever
        // an abandoned outcome drops, see the body's own runtime too.
        let _runtime = handle.enter();
        let counted = InBlocking::enter();
        let record = &shared.record;
        // The body's own panics are caught by the inner `catch_unwind`; the outer one catches
        // what the observers around it run: a tracing subscriber (entering the span, the
        // detectors' warnings) or a metrics recorder that panics. Either way the outcome below
        // is handed off and the slot given back: nothing a user callback does strands the caller.
        let mut stretch = None;
        let observed = panic::catch_unwind(AssertUnwindSafe(|| {
            let _entered = span.enter();
            record.enter_hop();
            let ran = panic::catch_unwind(AssertUnwindSafe(|| {
                run_stretch(
                    body.as_mut(),
                    &shared,
                    &waker,
                    Some(limit),
                    Some(handle.id()),
                )
            }));
            let ended = match &ran {
                Ok(Stretch::Back) => record.enter(parked_or_io(&shared)),
                _ => record.end(),
            };
            stretch = Some(ran);
            detect::segment_ended(record.site, limit.name(), ended);
        }));
        let outcome = match (stretch, observed) {
            (Some(Ok(Stretch::Done(value))), Ok(())) => Outcome::Done(value),
            // Cancelled: the driver is gone, and the body is dropped below with what nobody
            // will take.
            (Some(Ok(Stretch::Back | Stretch::Cancelled)), Ok(())) => Outcome::Back(body),
            (Some(Err(payload)), observed) => {
                // The body's own panic is what its caller sees.
                drop_caught(observed);
                drop_as_blocking_code(body);
                Outcome::Panicked(payload)
            }
            // An observer panicked around a stretch that did not panic: the caller sees that
            // panic instead of the body's result (the body is dropped here, unfinished).
            (stretch, Err(payload)) => {
                if stretch.is_none() {
                    record.end();
                }
                drop_as_blocking_code((stretch, body));
                Outcome::Panicked(payload)
            }
            (None, Ok(())) => unreachable!("the stretch's outcome is kept before observers run"),
        };
        if shared.cancelled.load(Ordering::Acquire) {
            // Nobody will take the outcome (the driver is gone, or drops what it finds in the
            // handoff; a cancelled stretch implies this): dropped here, where the body's
            // destructors see a body's context, and an observer's panic with it.
            drop_as_blocking_code(outcome);
            drop(counted);
            drop(running);
            let stopped_here = handoff.stop();
            let_go(&shared);
            if stopped_here {
                report_stopped(&shared, &span);
            }
            return;
        }
        // The slot is free before the caller can see the outcome.
        drop(counted);
        drop(running);
        if let Some(abandoned) = handoff.complete(outcome) {
            // The driver was dropped in between. This loop still holds its own slot of the
            // limit, so the outcome's destructors run as blocking code under it.
            let context = limit::enter_limit(limit);
            drop_as_blocking_code(abandoned);
            drop(context);
            let_go(&shared);
            report_stopped(&shared, &span);
            return;
        }
        let_go(&shared);
    }

    fn handle(&self) -> &Handle {
        &self.handle
    }

    fn key(&self) -> *const () {
        Arc::as_ptr(&self.shared).cast()
    }

    fn queued(&self, for_slot: bool) {
        self.shared.record.enter(if for_slot {
            Kind::SlotWait
        } else {
            Kind::PoolQueue
        });
    }

    fn abandon(self: Box<Self>) {
        let BodyJob {
            body,
            handoff,
            shared,
            span,
            ..
        } = *self;
        // Its split ends here, the time it waited for a loop counted.
        shared.record.end();
        drop_caught(body);
        // Given back if the driver is gone: dropped here, and reported here.
        let abandoned = handoff.complete(Outcome::Panicked(Box::new(
            "blocking-first: the tokio runtime shut down before this body could run its \
             blocking code; the body was dropped without finishing",
        )));
        let gone = abandoned.is_some();
        drop_caught(abandoned);
        let_go(&shared);
        if gone {
            report_stopped(&shared, &span);
        }
    }
}

/// Drops what a body left on a loop (the body itself, its value, its panic) as blocking code of
/// a body: an annotated function that a destructor awaits with `Handle::block_on` runs right
/// here, under the loop's slot, instead of waiting for a slot this thread holds. Never unwinds.
fn drop_as_blocking_code<V>(value: V) {
    let _marked = InStretch::enter();
    drop_caught(value);
}

/// After a loop is done with a body (its outcome handed off, if any): a driver dropped while the
/// loop still had it left it listed in flight, for the loop to take off. Read after the handoff,
/// whose lock orders it with the driver's `cancelled` and `abandon`: either the driver found the
/// outcome (and took the body off itself) or this sees `cancelled`.
fn let_go(shared: &Arc<Shared>) {
    if shared.cancelled.load(Ordering::Acquire) {
        observe::deregister(shared);
    }
}

/// Reports a cancelled body that its loop stopped (its driver left that to the loop), with how
/// long it ran after its caller let go. A subscriber's panic is dropped: the loop goes on.
fn report_stopped(shared: &Shared, span: &Span) {
    // Its split ends here (a stretch that ended waiting left it open): the time it ran for
    // nobody counts up to now.
    shared.record.end();
    drop_caught(panic::catch_unwind(AssertUnwindSafe(|| {
        observe::report(&shared.record, observe::Outcome::Cancelled, span, None);
    })));
}

/// What a stretch on a loop ended with.
pub(super) enum Outcome<T> {
    /// The body completed.
    Done(T),
    /// The body asked for async mode or waits on an `.await`: the driver takes it back.
    Back(Boxed<T>),
    /// The body panicked (it was dropped on the loop): re-raised in the caller.
    Panicked(Box<dyn Any + Send + 'static>),
}

/// Where a loop leaves a stretch's [`Outcome`] for the driver.
pub(super) struct Handoff<T>(std::sync::Mutex<HandoffState<T>>);

enum HandoffState<T> {
    /// No outcome yet; the driver's waker, once it polled.
    Empty(Option<Waker>),
    Ready(Outcome<T>),
    /// The driver was dropped while a loop ran the body: an outcome arriving now is dropped
    /// where it arrives, and the body reported there.
    Abandoned,
    /// A loop stopped the body, cancelled, before the driver abandoned the handoff: the driver
    /// reports it.
    Stopped,
}

/// What a dropped driver found in the handoff.
pub(super) enum Abandoned<T> {
    /// The stretch's outcome, for the driver to drop.
    Found(Outcome<T>),
    /// Nothing yet: a loop still runs the body, and will drop and report it.
    Running,
    /// The loop stopped the body already: the driver reports it.
    Stopped,
}

impl<T> Handoff<T> {
    pub(super) fn new() -> Handoff<T> {
        Handoff(std::sync::Mutex::new(HandoffState::Empty(None)))
    }

    /// Leaves `outcome` for the driver; gives it back if the driver was dropped (abandoned the
    /// handoff), for the caller to drop.
    fn complete(&self, outcome: Outcome<T>) -> Option<Outcome<T>> {
        let mut state = lock(&self.0);
        match mem::replace(&mut *state, HandoffState::Abandoned) {
            HandoffState::Empty(waker) => {
                *state = HandoffState::Ready(outcome);
                drop(state);
                if let Some(waker) = waker {
                    waker.wake();
                }
                None
            }
            HandoffState::Abandoned => Some(outcome),
            HandoffState::Ready(_) | HandoffState::Stopped => {
                unreachable!("one outcome per stretch")
            }
        }
    }

    /// A loop stopped the body, cancelled, without an outcome for the driver: returns whether
    /// the driver abandoned the handoff already (then the loop reports the body).
    fn stop(&self) -> bool {
        let mut state = lock(&self.0);
        match mem::replace(&mut *state, HandoffState::Stopped) {
            HandoffState::Empty(_) => false,
            HandoffState::Abandoned => {
                *state = HandoffState::Abandoned;
                true
            }
            HandoffState::Ready(_) | HandoffState::Stopped => {
                unreachable!("one outcome per stretch")
            }
        }
    }

    pub(super) fn poll(&self, cx: &Context<'_>) -> Poll<Outcome<T>> {
        let mut state = lock(&self.0);
        match mem::replace(&mut *state, HandoffState::Empty(None)) {
            HandoffState::Ready(outcome) => Poll::Ready(outcome),
            HandoffState::Empty(Some(waker)) if waker.will_wake(cx.waker()) => {
                *state = HandoffState::Empty(Some(waker));
                Poll::Pending
            }
            HandoffState::Empty(_) => {
                *state = HandoffState::Empty(Some(cx.waker().clone()));
                Poll::Pending
            }
            HandoffState::Abandoned | HandoffState::Stopped => {
                unreachable!("a body stopped by its loop was cancelled: its driver is gone")
            }
        }
    }

    /// The driver is dropped: what it finds.
    pub(super) fn abandon(&self) -> Abandoned<T> {
        match mem::replace(&mut *lock(&self.0), HandoffState::Abandoned) {
            HandoffState::Ready(outcome) => Abandoned::Found(outcome),
            HandoffState::Empty(_) => Abandoned::Running,
            HandoffState::Stopped => Abandoned::Stopped,
            HandoffState::Abandoned => unreachable!("a driver is dropped once"),
        }
    }
}
