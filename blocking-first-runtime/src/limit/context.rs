//! Which limit the blocking code on this thread runs under, for `parallel` branches and nested
//! bodies.

use std::cell::Cell;

use super::{Limit, Slot};

thread_local! {
    /// The limit of the body whose blocking code this thread runs, for `parallel` branches.
    static CURRENT: Cell<Option<&'static Limit>> = const { Cell::new(None) };
}

/// The limit of the body running blocking code on this thread, if any.
pub(crate) fn current() -> Option<&'static Limit> {
    CURRENT.get()
}

/// Holds `slot` and makes its limit [`current`] on this thread until dropped.
pub(crate) fn enter_context(slot: Slot) -> SlotContext {
    let previous = CURRENT.replace(Some(slot.limit()));
    SlotContext {
        _slot: slot,
        previous,
    }
}

/// Makes `limit` [`current`] on this thread until dropped (a loop running one of its jobs,
/// under the loop's own slot).
pub(crate) fn enter_limit(limit: &'static Limit) -> LimitContext {
    LimitContext(CURRENT.replace(Some(limit)))
}

/// Guard from [`enter_context`].
pub(crate) struct SlotContext {
    _slot: Slot,
    previous: Option<&'static Limit>,
}

impl Drop for SlotContext {
    fn drop(&mut self) {
        CURRENT.set(self.previous);
    }
}

/// Guard from [`enter_limit`].
pub(crate) struct LimitContext(Option<&'static Limit>);

impl Drop for LimitContext {
    fn drop(&mut self) {
        CURRENT.set(self.0);
    }
}
