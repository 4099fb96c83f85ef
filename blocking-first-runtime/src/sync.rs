//! The synchronisation primitives of the crate's concurrency protocols, swapped for loom's when
//! the crate is built with `--cfg blocking_first_loom`, so the model tests in `src/loom.rs`
//! explore the interleavings of the real code.
//!
//! (Not `cfg(loom)`: tokio reads that flag too, and a tokio built with it needs loom itself.)
//!
//! Rule for code over these types: an atomic that any thread changes with a read-modify-write
//! is never changed with a plain `store` while others may touch it. The memory model allows a
//! store there, but loom 0.7 lets a racing store slip between the read and the write of an RMW
//! and so reports executions that cannot happen; RMWs only keep the models exact.

#[cfg(not(blocking_first_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(not(blocking_first_loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(blocking_first_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, Ordering};
#[cfg(blocking_first_loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning: every protocol here keeps its state consistent at each
/// unlock, so a panic elsewhere while it was held leaves nothing half-done.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits on `condvar`, ignoring poisoning (see [`lock`]).
pub(crate) fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar
        .wait(guard)
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
