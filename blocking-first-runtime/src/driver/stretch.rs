//! A stretch: the body polled on one blocking thread for as long as it stays in blocking mode.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::runtime::Id;

use crate::cancel;
use crate::exec;
use crate::limit::{InStretch, Limit};
use crate::mode::Shared;
use crate::record::Kind;
use crate::sync::Ordering;

/// What a body that came back from a stretch without completing waits in.
pub(crate) fn parked_or_io(shared: &Shared) -> Kind {
    if shared.io.load(Ordering::Acquire) {
        Kind::Io
    } else {
        Kind::Parked
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

/// Polls the body on this blocking thread for as long as it stays in blocking mode and keeps
/// being woken.
///
/// `on_loop`: the limit whose loop this is. When the body waits on a plain `.await` and nothing
/// else is queued there, the loop waits a moment for the wake and continues in place.
///
/// `runtime`: the runtime the body belongs to (see [`cancel::enter_body`]).
pub(crate) fn run_stretch<F: Future + ?Sized>(
    mut body: Pin<&mut F>,
    shared: &Arc<Shared>,
    waker: &Waker,
    on_loop: Option<&Limit>,
    runtime: Option<Id>,
) -> Stretch<F::Output> {
    let mut cx = Context::from_waker(waker);
    // What `is_cancelled` reads in the body's blocking code.
    let _body = cancel::enter_body(Some(shared.clone()), runtime);
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
        if shared.io.load(Ordering::Acquire) {
            return leave(shared);
        }
        if shared.is_woken() {
            continue;
        }
        let quick = on_loop.is_some_and(|limit| {
            exec::wait_in_place(
                limit,
                || shared.is_woken(),
                || shared.cancelled.load(Ordering::Acquire),
            )
        });
        if !quick {
            return leave(shared);
        }
    }
}

/// The body leaves its blocking code unfinished (for `io!` or an `.await` that waits): off this
/// thread, holding no pooled connection or told so.
fn leave<T>(shared: &Shared) -> Stretch<T> {
    shared.on_blocking.store(false, Ordering::Release);
    let held = shared.conns.load(std::sync::atomic::Ordering::Relaxed);
    if held != 0 {
        let record = &shared.record;
        crate::observe::detect::held_connection(record.site, record.limit.name(), held);
    }
    Stretch::Back
}
