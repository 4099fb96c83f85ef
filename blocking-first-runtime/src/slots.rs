//! The counting half of a limit: its permits and capacity, the slots in use, the jobs waiting,
//! the adaptive controller's arithmetic and the queue's bounds. Plain atomics and one
//! configuration lock; nothing here knows the run queue, the loops or the bodies.
//!
//! A [`Limit`](crate::limit::Limit) is a [`Slots`] and a run queue (`exec`): the queue and its
//! loops take and give back permits here, and count what they do here.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::Semaphore;

mod adaptive;
mod admission;
mod error;
mod stats_of;

pub(crate) use adaptive::{Adaptive, Decision};
pub use admission::QUEUE_TIME_INTERVAL;
pub(crate) use admission::{QueueTime, nanos};
pub use error::{CapacityError, CapacityErrorKind};
pub use stats_of::LimitStats;

use crate::stats;
use crate::sync::lock_std;

/// The permits of an unbounded limit's semaphore: more than any process can use, and still
/// within what `Semaphore::try_acquire_many` (a `u32`) can take back in one step.
const UNBOUNDED: usize = if Semaphore::MAX_PERMITS < u32::MAX as usize {
    Semaphore::MAX_PERMITS
} else {
    u32::MAX as usize
};

/// The largest capacity a [`Limit`](crate::limit::Limit) accepts.
pub const MAX_CAPACITY: usize = UNBOUNDED - 1;

/// A limit's slots and counters (a field of [`Limit`](crate::limit::Limit)).
pub(crate) struct Slots {
    name: &'static str,
    /// Holds `capacity` permits (`UNBOUNDED` when there is no cap): every slot is a permit, so
    /// `Limit::set_capacity` can check "nothing in use" and change the cap in one step, by
    /// taking every permit back.
    semaphore: Semaphore,
    /// 0 means "no cap".
    capacity: AtomicUsize,
    /// Pools sized by this limit that are alive: the capacity cannot change under them.
    pools: AtomicUsize,
    /// Serialises capacity changes and pool sizing.
    config: Mutex<()>,
    in_use: AtomicUsize,
    peak: AtomicUsize,
    /// Jobs in the run queue.
    waiting: AtomicUsize,
    /// Bodies that already ran some blocking code waiting in the queue to come back.
    returning: AtomicUsize,
    /// Jobs in the queue that found no loop and no free slot (the others have a loop coming).
    slot_waiters: AtomicUsize,
    /// Slots given back since start: the starvation detector's sign of progress (one relaxed
    /// increment per hop; the detector reads the clock, a hop does not).
    releases: AtomicU64,
    /// When the detector last warned about this limit.
    last_warning: Mutex<Option<Instant>>,
    watched: AtomicBool,
    /// Queued jobs at which `Limit::is_full` says so (0: never).
    pub(crate) max_waiting: AtomicUsize,
    /// Requests turned away because the queue was full.
    shed: AtomicU64,
    /// Listed in `observe::limits`.
    known: AtomicBool,
    /// Set by `Limit::adaptive`.
    adaptive: Option<Adaptive>,
    /// Shedding by time in queue (`Limit::with_max_queue_time`).
    pub(crate) queue_time: QueueTime,
    /// Permits not to hand out again when they come back: an adaptive limit that shrank below
    /// what was taken (`capacity + debt` permits exist).
    debt: AtomicUsize,
}

impl Slots {
    /// `capacity` slots (0: no cap).
    pub(crate) const fn new(name: &'static str, capacity: usize) -> Slots {
        Slots {
            name,
            semaphore: Semaphore::const_new(permits(capacity)),
            capacity: AtomicUsize::new(capacity),
            pools: AtomicUsize::new(0),
            config: Mutex::new(()),
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            returning: AtomicUsize::new(0),
            slot_waiters: AtomicUsize::new(0),
            releases: AtomicU64::new(0),
            last_warning: Mutex::new(None),
            watched: AtomicBool::new(false),
            max_waiting: AtomicUsize::new(0),
            shed: AtomicU64::new(0),
            known: AtomicBool::new(false),
            adaptive: None,
            queue_time: QueueTime::new(0),
            debt: AtomicUsize::new(0),
        }
    }

    /// `min` slots, adapting between `min` and `max`.
    pub(crate) const fn adaptive(name: &'static str, min: usize, max: usize) -> Slots {
        let mut slots = Slots::new(name, min);
        slots.adaptive = Some(Adaptive::new(min, max));
        slots
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The cap, or `None` when unbounded.
    pub(crate) fn capacity(&self) -> Option<usize> {
        match self.capacity.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }

    /// Pools sized by this limit that are alive.
    pub(crate) fn pools(&self) -> usize {
        self.pools.load(Ordering::Acquire)
    }

    /// For `Limit::set_capacity`, under the queue's lock, with `idle` loops whose permits count
    /// as taken back: takes every permit of the `old` capacity back at once, or nothing, and
    /// hands out those of `capacity`. Fixes an adaptive limit's cap.
    pub(crate) fn replace_capacity(&self, old: usize, idle: usize, capacity: usize) -> bool {
        // Every permit back at once, or nothing: `permits(old)` fits in a u32 by construction.
        // An adaptive limit that shrank has `debt` permits more than its capacity.
        let debt = self.debt.load(Ordering::Acquire);
        let all = u32::try_from(permits(old) + debt).expect("permits fit in a u32");
        let rest = all - u32::try_from(idle).expect("loops fit in a u32");
        let Ok(taken) = self.semaphore.try_acquire_many(rest) else {
            return false;
        };
        taken.forget();
        self.debt.store(0, Ordering::Release);
        if let Some(adaptive) = &self.adaptive {
            adaptive.on.store(false, Ordering::Relaxed);
        }
        self.capacity.store(capacity, Ordering::Release);
        self.semaphore.add_permits(permits(capacity));
        true
    }

    /// The capacity as stored (0: no cap).
    pub(crate) fn raw_capacity(&self) -> usize {
        self.capacity.load(Ordering::Acquire)
    }

    /// Counts a pool sized by this limit (under the config lock): its size, an adaptive limit's
    /// ceiling or the cap.
    pub(crate) fn size_pool(&self) -> Result<usize, CapacityError> {
        let _config = self.lock_config();
        // An adaptive limit's pool has room for its ceiling.
        let ceiling = self
            .adaptive
            .as_ref()
            .filter(|adaptive| adaptive.is_on())
            .map(|adaptive| adaptive.max);
        let Some(size) = ceiling.or(self.capacity()) else {
            return Err(self.error(CapacityErrorKind::Unbounded));
        };
        self.pools.fetch_add(1, Ordering::AcqRel);
        Ok(size)
    }

    /// A pool counted by [`Slots::size_pool`] was dropped.
    pub(crate) fn pool_dropped(&self) {
        let _config = self.lock_config();
        self.pools.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn lock_config(&self) -> std::sync::MutexGuard<'_, ()> {
        lock_std(&self.config)
    }

    pub(crate) fn error(&self, kind: CapacityErrorKind) -> CapacityError {
        CapacityError {
            name: self.name,
            kind,
        }
    }

    /// The most slots taken at once.
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    /// Requests turned away because the queue was full.
    pub(crate) fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// An adaptive limit's floor and ceiling, while it adapts.
    pub(crate) fn bounds(&self) -> Option<(usize, usize)> {
        self.adaptive
            .as_ref()
            .filter(|adaptive| adaptive.is_on())
            .map(|adaptive| (adaptive.min(), adaptive.max))
    }

    /// Resets the peak to the current use.
    pub(crate) fn reset_peak(&self) {
        self.peak
            .store(self.in_use.load(Ordering::Acquire), Ordering::Release);
    }

    /// Takes one permit for good (a loop's, or an inline slot's), if one is free.
    pub(crate) fn take_loop_slot(&self) -> bool {
        match self.semaphore.try_acquire() {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back a permit taken with [`Slots::take_loop_slot`] (kept, if the limit owes one).
    pub(crate) fn give_back_loop_slot(&self) {
        let owed = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |debt| {
                debt.checked_sub(1)
            })
            .is_ok();
        if !owed {
            self.semaphore.add_permits(1);
        }
    }

    /// A slot starts being used (a job on a loop, or a stretch run inline).
    pub(crate) fn use_began(&self) {
        let now = self.in_use.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::AcqRel);
    }

    /// A slot counted by [`Slots::use_began`] is no longer used: a slot given back, for the
    /// starvation detector.
    pub(crate) fn use_ended(&self) {
        self.in_use.fetch_sub(1, Ordering::AcqRel);
        self.releases.fetch_add(1, Ordering::Relaxed);
    }

    /// Records jobs entering (`delta` 1) or leaving (-1) the run queue.
    pub(crate) fn queued_changed(&self, delta: isize, returning: bool) {
        if delta > 0 {
            self.waiting.fetch_add(1, Ordering::AcqRel);
            stats::WAITING.fetch_add(1, Ordering::Relaxed);
            if returning {
                // SeqCst: see the detector's `watch`.
                self.returning.fetch_add(1, Ordering::SeqCst);
            }
        } else {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            stats::WAITING.fetch_sub(1, Ordering::Relaxed);
            if returning {
                self.returning.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// A job that found no loop and no free slot entered the queue.
    pub(crate) fn slot_wait_began(&self) {
        self.slot_waiters.fetch_add(1, Ordering::AcqRel);
    }

    /// A job counted by [`Slots::slot_wait_began`] left the queue.
    pub(crate) fn slot_wait_ended(&self) {
        self.slot_waiters.fetch_sub(1, Ordering::AcqRel);
    }

    /// Jobs in the queue that found no loop and no free slot.
    pub(crate) fn slot_waiters(&self) -> usize {
        self.slot_waiters.load(Ordering::Acquire)
    }

    pub(crate) fn watch_flag(&self) -> &AtomicBool {
        &self.watched
    }

    pub(crate) fn known_flag(&self) -> &AtomicBool {
        &self.known
    }

    pub(crate) fn returning_waiters(&self) -> usize {
        self.returning.load(Ordering::SeqCst)
    }

    /// Slots taken now.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }

    /// Slots given back since start.
    pub(crate) fn releases(&self) -> u64 {
        self.releases.load(Ordering::Relaxed)
    }

    /// Records a warning at `now` unless one was recorded less than `interval` ago.
    pub(crate) fn claim_warning(&self, now: Instant, interval: std::time::Duration) -> bool {
        let mut last = lock_std(&self.last_warning);
        if last.is_some_and(|at| now.duration_since(at) < interval) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// The semaphore permits that stand for `capacity` (0: no cap).
const fn permits(capacity: usize) -> usize {
    if capacity == 0 { UNBOUNDED } else { capacity }
}
