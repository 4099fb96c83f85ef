//! Bounds on the limit's queue, for shedding load before it runs: its length, and the time jobs
//! wait in it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::Slots;

/// How long jobs must keep waiting longer than the bound before the limit counts as full
/// (CoDel's interval, RFC 8289).
pub const QUEUE_TIME_INTERVAL: Duration = Duration::from_millis(100);

/// The state of shedding by time in queue (CoDel's, without its drop schedule: a request is
/// turned away at admission, before it costs anything, so every one arriving while the state
/// holds is).
pub(crate) struct QueueTime {
    /// The bound, in ns (0: none).
    bound: AtomicU64,
    /// Since when every job leaving the queue had waited longer than the bound (0: the last one
    /// did not).
    above_since: AtomicU64,
    /// Jobs have waited longer than the bound for a whole interval, and still do.
    shedding: AtomicBool,
    /// The mean time of the limit's jobs (ns; 0: none timed yet), a moving average: with the
    /// jobs waiting and the capacity, how long a new one would wait.
    job_ns: AtomicU64,
}

impl QueueTime {
    pub(crate) const fn new(bound: u64) -> QueueTime {
        QueueTime {
            bound: AtomicU64::new(bound),
            above_since: AtomicU64::new(0),
            shedding: AtomicBool::new(false),
            job_ns: AtomicU64::new(0),
        }
    }

    /// A job of the limit ran for `ns`: the moving average (weight 1/8) moves, if the limit
    /// has a bound on time in queue (nothing else reads it).
    pub(super) fn job_took(&self, ns: u64) {
        if self.bound.load(Ordering::Relaxed) == 0 {
            return;
        }
        let old = self.job_ns.load(Ordering::Relaxed);
        let new = if old == 0 { ns } else { old - old / 8 + ns / 8 };
        self.job_ns.store(new, Ordering::Relaxed);
    }

    /// Whether a job queued now, behind `waiters` that found no slot either, would wait longer
    /// than `bound` for one of `capacity` slots, at the jobs' mean time.
    fn would_wait_past(&self, bound: u64, waiters: usize, capacity: usize) -> bool {
        let job = self.job_ns.load(Ordering::Relaxed);
        if job == 0 || capacity == 0 {
            return false;
        }
        let ahead = u64::try_from(waiters).unwrap_or(u64::MAX);
        let slots = u64::try_from(capacity).unwrap_or(u64::MAX);
        ahead.saturating_mul(job) / slots >= bound
    }
}

pub(crate) const fn nanos(d: Duration) -> u64 {
    let n = d.as_nanos();
    if n > u64::MAX as u128 {
        u64::MAX
    } else {
        n as u64
    }
}

impl Slots {
    /// Changes the bound on jobs waiting (0 removes it).
    pub(crate) fn set_max_waiting(&self, max_waiting: usize) {
        self.max_waiting.store(max_waiting, Ordering::Release);
    }

    /// The bound on jobs waiting, if any.
    pub(crate) fn max_waiting(&self) -> Option<usize> {
        match self.max_waiting.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }

    /// Changes the bound on time in queue (zero removes it).
    pub(crate) fn set_max_queue_time(&self, max_queue_time: Duration) {
        self.queue_time
            .bound
            .store(nanos(max_queue_time), Ordering::Release);
        if max_queue_time.is_zero() {
            self.queue_time.shedding.store(false, Ordering::Release);
        }
    }

    /// The bound on time in queue, if any.
    pub(crate) fn max_queue_time(&self) -> Option<Duration> {
        match self.queue_time.bound.load(Ordering::Acquire) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    /// A job left the queue for a loop; `queued_at`: when it was queued (0: it did not wait, or
    /// the limit has no bound on time), `drained`: the queue is empty now.
    pub(crate) fn dequeued(&self, queued_at: u64, drained: bool) {
        let state = &self.queue_time;
        let bound = state.bound.load(Ordering::Relaxed);
        if bound == 0 {
            return;
        }
        let now = crate::clock::now();
        let waited = if queued_at == 0 {
            0
        } else {
            now.saturating_sub(queued_at)
        };
        if waited <= bound || drained {
            state.above_since.store(0, Ordering::Relaxed);
            state.shedding.store(false, Ordering::Release);
            return;
        }
        let since = match state.above_since.load(Ordering::Relaxed) {
            0 => {
                state.above_since.store(now, Ordering::Relaxed);
                now
            }
            since => since,
        };
        if now.saturating_sub(since) >= nanos(QUEUE_TIME_INTERVAL) {
            state.shedding.store(true, Ordering::Release);
        }
    }

    /// Whether a new request should be turned away (`Limit::is_full`).
    pub(crate) fn is_full(&self) -> bool {
        if self.max_waiting().is_some_and(|max| self.waiting() >= max) {
            return true;
        }
        let bound = self.queue_time.bound.load(Ordering::Relaxed);
        let waiters = self.slot_waiters();
        // An empty queue is never full: jobs withdrawn by their cancelled callers leave no one
        // to clear the state, and nothing would ever be admitted again.
        bound != 0
            && waiters > 0
            && (self.queue_time.shedding.load(Ordering::Acquire)
                || self.queue_time.would_wait_past(
                    bound,
                    waiters,
                    self.capacity.load(Ordering::Acquire),
                ))
    }

    /// Counts one request turned away because the limit was full.
    pub(crate) fn count_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("blocking_first_shed_total", "limit" => self.name()).increment(1);
    }

    /// Jobs in the run queue now (`LimitStats::waiting`).
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}
