//! Process-wide counters: cheap relaxed atomics, read with [`stats()`].
//!
//! ```
//! # use blocking_first_runtime as blocking_first;
//! let before = blocking_first::stats();
//! // ... serve some requests ...
//! let after = blocking_first::stats();
//! assert!(after.hops >= before.hops);
//! ```

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

pub(crate) static HOPS: AtomicU64 = AtomicU64::new(0);
pub(crate) static IN_BLOCKING: AtomicUsize = AtomicUsize::new(0);
pub(crate) static PEAK_IN_BLOCKING: AtomicUsize = AtomicUsize::new(0);
pub(crate) static WAITING: AtomicUsize = AtomicUsize::new(0);
pub(crate) static DISPATCHED: AtomicU64 = AtomicU64::new(0);
pub(crate) static INLINE: AtomicU64 = AtomicU64::new(0);
pub(crate) static NESTED_INLINE: AtomicU64 = AtomicU64::new(0);
pub(crate) static STARVATION_WARNINGS: AtomicU64 = AtomicU64::new(0);
pub(crate) static DETECTOR_WARNINGS: AtomicU64 = AtomicU64::new(0);
pub(crate) static WORKER_WARNINGS: AtomicU64 = AtomicU64::new(0);
pub(crate) static CONNECTION_WARNINGS: AtomicU64 = AtomicU64::new(0);

/// A snapshot of the process-wide counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Stats {
    /// Moves of a body onto the blocking pool since start.
    pub hops: u64,
    /// Bodies running blocking code now. Bodies only: a [`Limit`](crate::limit::Limit)'s own
    /// counters also count the `parallel` branches that hold its slots.
    pub in_blocking: usize,
    /// The most bodies ever in blocking code at once (see [`reset_peak`]).
    pub peak_in_blocking: usize,
    /// Bodies (and `parallel` branches) waiting in the queue of their
    /// [`Limit`](crate::limit::Limit) for a slot now.
    pub waiting_for_slot: usize,
    /// `parallel` branches sent to other blocking threads (each held a slot of its limit).
    pub parallel_dispatched: u64,
    /// `parallel` branches that found no free slot (or no runtime) and ran on the caller's thread
    /// instead. The last branch of `parallel!` and `parallel::map`, which always runs on the
    /// caller's thread, is in neither count.
    pub parallel_inline: u64,
    /// Stretches of an annotated function awaited from another body's blocking code that ran
    /// right there, on the caller's blocking thread, instead of hopping.
    pub nested_inline: u64,
    /// Warnings of the starvation detector so far: a capped limit whose every slot was held far
    /// longer than usual while bodies waited to come back from `io!` or an `.await` (see
    /// [`Limit`](crate::limit::Limit)).
    pub starvation_warnings: u64,
    /// Warnings of the detectors of blocking code inside `io!` and of long blocking stretches
    /// so far (see [`observe::detect`](crate::observe::detect)).
    pub detector_warnings: u64,
    /// Warnings about a runtime worker blocked: a route's poll under
    /// `blocking_first::tower::WorkerWatchLayer` past its threshold, and a pooled connection taken
    /// on a worker outside every body.
    pub worker_warnings: u64,
    /// Functions whose blocking code reached an `io!` region or an `.await` holding a connection
    /// of `blocking_first::pool` (a diesel one: the others do not compile there), each counted
    /// once.
    pub connection_warnings: u64,
}

/// Reads the process-wide counters.
///
/// ```
/// # use blocking_first_runtime as blocking_first;
/// let before = blocking_first::stats();
/// // ... serve some requests ...
/// let after = blocking_first::stats();
/// assert!(after.hops >= before.hops);
/// println!("hops so far: {}, bodies in blocking code now: {}", after.hops, after.in_blocking);
/// ```
pub fn stats() -> Stats {
    Stats {
        hops: HOPS.load(Ordering::Relaxed),
        in_blocking: IN_BLOCKING.load(Ordering::Relaxed),
        peak_in_blocking: PEAK_IN_BLOCKING.load(Ordering::Relaxed),
        waiting_for_slot: WAITING.load(Ordering::Relaxed),
        parallel_dispatched: DISPATCHED.load(Ordering::Relaxed),
        parallel_inline: INLINE.load(Ordering::Relaxed),
        nested_inline: NESTED_INLINE.load(Ordering::Relaxed),
        starvation_warnings: STARVATION_WARNINGS.load(Ordering::Relaxed),
        detector_warnings: DETECTOR_WARNINGS.load(Ordering::Relaxed),
        worker_warnings: WORKER_WARNINGS.load(Ordering::Relaxed),
        connection_warnings: CONNECTION_WARNINGS.load(Ordering::Relaxed),
    }
}

/// Resets the peak of bodies in blocking code to the current number.
pub fn reset_peak() {
    PEAK_IN_BLOCKING.store(IN_BLOCKING.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// Counts one body in blocking code for as long as it lives.
pub(crate) struct InBlocking(());

impl InBlocking {
    pub(crate) fn enter() -> InBlocking {
        HOPS.fetch_add(1, Ordering::Relaxed);
        let now = IN_BLOCKING.fetch_add(1, Ordering::Relaxed) + 1;
        PEAK_IN_BLOCKING.fetch_max(now, Ordering::Relaxed);
        InBlocking(())
    }
}

impl Drop for InBlocking {
    fn drop(&mut self) {
        IN_BLOCKING.fetch_sub(1, Ordering::Relaxed);
    }
}
