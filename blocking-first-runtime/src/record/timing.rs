//! Each request's bodies' time splits added up, for `tower::ServerTimingLayer`.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Kind, Split};

/// The time splits of a request's top-level bodies (a nested body's time is inside its caller's,
/// and a branch's inside its body's: each counted once).
#[derive(Debug, Default)]
pub(crate) struct RequestTiming {
    /// Nanoseconds per kind, in [`Kind::ALL`] order.
    nanos: [AtomicU64; 5],
    bodies: AtomicU64,
}

thread_local! {
    /// The request whose future this thread polls now (set by the layer around each poll).
    static CURRENT: RefCell<Option<Arc<RequestTiming>>> = const { RefCell::new(None) };
}

impl RequestTiming {
    /// Adds a body's split.
    pub(crate) fn add(&self, split: &Split) {
        for (kind, total) in Kind::ALL.into_iter().zip(&self.nanos) {
            let nanos = u64::try_from(split.get(kind).as_nanos()).unwrap_or(u64::MAX);
            total.fetch_add(nanos, Ordering::Relaxed);
        }
        self.bodies.fetch_add(1, Ordering::Release);
    }

    /// The `Server-Timing` header's value (`slot_wait;dur=0.012, ..`, in milliseconds), if a
    /// body ended.
    pub(crate) fn header(&self) -> Option<String> {
        if self.bodies.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut value = String::with_capacity(96);
        for (kind, total) in Kind::ALL.into_iter().zip(&self.nanos) {
            if !value.is_empty() {
                value.push_str(", ");
            }
            // Milliseconds with three decimals, from whole microseconds (integers format in a
            // fraction of the instructions floats take).
            let micros = total.load(Ordering::Relaxed) / 1_000;
            let _ = write!(
                value,
                "{};dur={}.{:03}",
                kind.name(),
                micros / 1_000,
                micros % 1_000
            );
        }
        Some(value)
    }

    /// Makes `timing` the current request's on this thread until the guard drops.
    pub(crate) fn enter(timing: &Arc<RequestTiming>) -> Entered {
        Entered(CURRENT.replace(Some(timing.clone())))
    }
}

/// The request whose future this thread polls now, if a `ServerTimingLayer` is around it.
pub(crate) fn current() -> Option<Arc<RequestTiming>> {
    CURRENT.with_borrow(Clone::clone)
}

/// Guard of [`RequestTiming::enter`].
pub(crate) struct Entered(Option<Arc<RequestTiming>>);

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.0.take();
        let current = CURRENT.replace(previous);
        drop(current);
    }
}
