//! Bounds on the limit's queue, for shedding load before it runs: its length, and the time jobs
//! wait in it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::Limit;

/// How long jobs must keep waiting longer than the bound before the limit counts as full
/// (CoDel's interval, RFC 8289).
pub const QUEUE_TIME_INTERVAL: Duration = Duration::from_millis(100);

/// The state of shedding by time in queue (CoDel's, without its drop schedule: a request is
/// turned away at admission, before it costs anything, so every one arriving while the state
/// holds is).
pub(crate) struct QueueTime {
    /// The bound, in ns (0: none).
    pub(super) bound: AtomicU64,
    /// Since when every job leaving the queue had waited longer than the bound (0: the last one
    /// did not).
    above_since: AtomicU64,
    /// Jobs have waited longer than the bound for a whole interval, and still do.
    pub(super) shedding: AtomicBool,
    /// The mean time of the limit's jobs (ns; 0: none timed yet), a moving average: with the
    /// jobs waiting and the capacity, how long a new one would wait.
    job_ns: AtomicU64,
}

impl QueueTime {
    pub(super) const fn new(bound: u64) -> QueueTime {
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

const fn nanos(d: Duration) -> u64 {
    let n = d.as_nanos();
    if n > u64::MAX as u128 {
        u64::MAX
    } else {
        n as u64
    }
}

impl Limit {
    /// The same limit, counting as full ([`Limit::is_full`]) once `max_waiting` jobs wait in its
    /// queue. `blocking_first::tower::ShedLayer` (feature `tower`) then answers new requests with
    /// `503 Service Unavailable` before their handler runs; nothing already admitted is turned
    /// away, so every body that started finishes.
    ///
    /// ```
    /// # use blocking_first_runtime as blocking_first;
    /// use blocking_first::limit::Limit;
    ///
    /// /// 8 bodies in database code, and at most 64 waiting for one of those 8 slots.
    /// static DB: Limit = Limit::new("db", 8).with_max_waiting(64);
    ///
    /// assert_eq!(DB.max_waiting(), Some(64));
    /// assert!(!DB.is_full());
    /// ```
    ///
    /// # Panics
    /// If `max_waiting` is 0 (at compile time when used in a `static`).
    pub const fn with_max_waiting(mut self, max_waiting: usize) -> Limit {
        assert!(max_waiting > 0, "a full queue needs at least one place");
        self.max_waiting = AtomicUsize::new(max_waiting);
        self
    }

    /// Changes the bound of [`Limit::with_max_waiting`] (0 removes it). Takes effect for the
    /// next request checked.
    pub fn set_max_waiting(&self, max_waiting: usize) {
        self.max_waiting.store(max_waiting, Ordering::Release);
    }

    /// The bound set by [`Limit::with_max_waiting`], if any.
    pub fn max_waiting(&self) -> Option<usize> {
        match self.max_waiting.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }

    /// The same limit, counting as full ([`Limit::is_full`]) while a new job would wait longer
    /// than `max_queue_time` for a slot: when the jobs already waiting, at the mean time of the
    /// limit's jobs, fill that time, or when the jobs leaving the queue have waited longer than
    /// it over at least [`QUEUE_TIME_INTERVAL`] (CoDel's rule, RFC 8289, which catches what the
    /// mean misses), until one leaves having waited less or the queue is empty.
    /// `blocking_first::tower::ShedLayer` then answers new requests with 503.
    ///
    /// A bound on time adapts where a bound on length cannot: with slow queries a short queue
    /// already means a long wait, with fast ones a long queue drains in milliseconds. Pick the
    /// time a request may wait for a slot before an answer that comes later is worth less than a
    /// 503 now (a fraction of the client's timeout); [`Limit::with_max_waiting`] stays useful as
    /// a hard bound on memory. Both may be set: the limit is full when either says so.
    ///
    /// ```
    /// # use blocking_first_runtime as blocking_first;
    /// use std::time::Duration;
    ///
    /// use blocking_first::limit::Limit;
    ///
    /// /// Shed while requests wait more than 50 ms for one of the 8 slots.
    /// static DB: Limit = Limit::new("db", 8).with_max_queue_time(Duration::from_millis(50));
    ///
    /// assert_eq!(DB.max_queue_time(), Some(Duration::from_millis(50)));
    /// assert!(!DB.is_full());
    /// ```
    ///
    /// # Panics
    /// If `max_queue_time` is zero (at compile time when used in a `static`).
    pub const fn with_max_queue_time(mut self, max_queue_time: Duration) -> Limit {
        assert!(
            !max_queue_time.is_zero(),
            "a bound on time in queue must be above zero"
        );
        self.queue_time = QueueTime::new(nanos(max_queue_time));
        self
    }

    /// Changes the bound of [`Limit::with_max_queue_time`] (zero removes it).
    pub fn set_max_queue_time(&self, max_queue_time: Duration) {
        self.queue_time
            .bound
            .store(nanos(max_queue_time), Ordering::Release);
        if max_queue_time.is_zero() {
            self.queue_time.shedding.store(false, Ordering::Release);
        }
    }

    /// The bound set by [`Limit::with_max_queue_time`], if any.
    pub fn max_queue_time(&self) -> Option<Duration> {
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
        let now = crate::observe::now();
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

    /// Whether a new request should be turned away: the queue holds at least
    /// [`Limit::max_waiting`] jobs, or its jobs have waited longer than
    /// [`Limit::max_queue_time`] for an interval. Requests checked at the same instant may all
    /// pass, so the queue can exceed a bound by as many as arrive together.
    pub fn is_full(&self) -> bool {
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

    /// Counts one request turned away because the limit was full (in [`LimitStats::shed`]), for
    /// admission checks written by hand.
    ///
    /// [`LimitStats::shed`]: super::LimitStats::shed
    pub fn count_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!("blocking_first_shed_total", "limit" => self.name()).increment(1);
    }

    /// Jobs in the run queue now (`LimitStats::waiting`).
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}
