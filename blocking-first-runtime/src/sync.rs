//! The synchronisation primitives of the crate's concurrency protocols, swapped for loom's when
//! the crate is built with `--cfg blocking_first_loom`, so the model tests (`src/loom.rs`, and
//! `loom.rs` beside the module they check, as in `exec/`) explore the interleavings of the real
//! code.
//!
//! (Not `cfg(loom)`: tokio reads that flag too, and a tokio built with it needs loom itself.)
//!
//! Rule for code over these types: an atomic that any thread changes with a read-modify-write
//! is never changed with a plain `store` while others may touch it. The memory model allows a
//! store there, but loom 0.7 lets a racing store slip between the read and the write of an RMW
//! and so reports executions that cannot happen; RMWs only keep the models exact.
//!
//! What lives in a `static` cannot hold a loom object (one belongs to a single execution, and a
//! `const` cannot build one): the process-wide registries and hints stay std's, and a limit's
//! run queue (limits are `static`s) builds its loom mutex at first use (`exec::Exec`), so a model
//! makes a fresh limit in each execution. A limit's slots stay tokio's `Semaphore`: without
//! tokio's own `cfg(loom)` it is std atomics underneath, so under loom each take or give-back is
//! one indivisible step that loom neither interleaves nor orders; the loops take and give back
//! slots only under the queue's lock, which loom does see.

#[cfg(not(blocking_first_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
#[cfg(not(blocking_first_loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(blocking_first_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, Ordering};
#[cfg(blocking_first_loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

/// Threads, for parking and waking them: std's, or loom's.
///
/// loom has no clock and no timed park, so there is no `park_timeout` under loom: the one timed
/// wait, an idle loop's linger (`exec/looping.rs`), has a loom variant that looks once, yields to
/// the other threads and ends, as if its time ran out. That is honest because the loops never
/// trust a wait's length or its reason: whatever ends the wait (a claim, a retirement, the time
/// running out, a spurious wake), the loop decides what happened under the queue's lock, where
/// loom explores every order of the claims, retirements and lingering out.
pub(crate) mod thread {
    #[cfg(not(blocking_first_loom))]
    pub(crate) use std::thread::{Thread, current, park_timeout, yield_now};

    #[cfg(blocking_first_loom)]
    pub(crate) use loom::thread::{Thread, current, yield_now};
}

/// Locks `mutex`, ignoring poisoning: every protocol here keeps its state consistent at each
/// unlock, so a panic elsewhere while it was held leaves nothing half-done.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// [`lock`] for std's mutex whatever the build: the process-wide registries, which live in
/// `static`s and so are never loom's.
pub(crate) fn lock_std<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
