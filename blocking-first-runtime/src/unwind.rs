//! Dropping values whose destructors may panic, where a panic has nowhere to go.

use std::any::Any;
use std::mem;
use std::panic::{self, AssertUnwindSafe};

/// A panic's payload.
pub(crate) type Payload = Box<dyn Any + Send + 'static>;

/// How many nested panicking destructors [`drop_caught`] follows before it leaks the rest.
const NESTED: usize = 8;

/// Drops `value`, catching a panicking destructor, and returns that panic's payload.
pub(crate) fn catch_drop<V>(value: V) -> Option<Payload> {
    panic::catch_unwind(AssertUnwindSafe(|| drop(value))).err()
}

/// Drops `value` and never unwinds: a destructor's panic is caught, its payload dropped the same
/// way (a payload's own destructor may panic too), and a payload that keeps panicking is leaked
/// after a few rounds rather than dropped outside `catch_unwind`.
pub(crate) fn drop_caught<V>(value: V) {
    let mut payload = catch_drop(value);
    for _ in 0..NESTED {
        match payload {
            None => return,
            Some(inner) => payload = catch_drop(inner),
        }
    }
    mem::forget(payload);
}

/// Keeps the first panic payload in `first` and drops any later one with [`drop_caught`].
pub(crate) fn keep_first(first: &mut Option<Payload>, payload: Payload) {
    if first.is_none() {
        *first = Some(payload);
    } else {
        drop_caught(payload);
    }
}
