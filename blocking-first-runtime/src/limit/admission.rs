//! The limit's admission bounds, as users set them: the length of its queue and the time jobs
//! wait in it (the arithmetic is `slots::admission`'s).

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use super::Limit;
use crate::slots::{QueueTime, nanos};

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
        self.slots.max_waiting = AtomicUsize::new(max_waiting);
        self
    }

    /// Changes the bound of [`Limit::with_max_waiting`] (0 removes it). Takes effect for the
    /// next request checked.
    pub fn set_max_waiting(&self, max_waiting: usize) {
        self.slots.set_max_waiting(max_waiting);
    }

    /// The bound set by [`Limit::with_max_waiting`], if any.
    pub fn max_waiting(&self) -> Option<usize> {
        self.slots.max_waiting()
    }

    /// The same limit, counting as full ([`Limit::is_full`]) while a new job would wait longer
    /// than `max_queue_time` for a slot: when the jobs already waiting, at the mean time of the
    /// limit's jobs, fill that time, or when the jobs leaving the queue have waited longer than
    /// it over at least [`QUEUE_TIME_INTERVAL`](super::QUEUE_TIME_INTERVAL) (CoDel's rule, RFC 8289, which catches what the
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
        self.slots.queue_time = QueueTime::new(nanos(max_queue_time));
        self
    }

    /// Changes the bound of [`Limit::with_max_queue_time`] (zero removes it).
    pub fn set_max_queue_time(&self, max_queue_time: Duration) {
        self.slots.set_max_queue_time(max_queue_time);
    }

    /// The bound set by [`Limit::with_max_queue_time`], if any.
    pub fn max_queue_time(&self) -> Option<Duration> {
        self.slots.max_queue_time()
    }

    /// Whether a new request should be turned away: the queue holds at least
    /// [`Limit::max_waiting`] jobs, or its jobs have waited longer than
    /// [`Limit::max_queue_time`] for an interval. Requests checked at the same instant may all
    /// pass, so the queue can exceed a bound by as many as arrive together.
    pub fn is_full(&self) -> bool {
        self.slots.is_full()
    }

    /// Counts one request turned away because the limit was full (in [`LimitStats::shed`]), for
    /// admission checks written by hand.
    ///
    /// [`LimitStats::shed`]: super::LimitStats::shed
    pub fn count_shed(&self) {
        self.slots.count_shed();
    }
}
