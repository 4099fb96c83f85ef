//! A bound on the limit's queue, for shedding load before it runs.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Limit;

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

    /// Whether the queue holds at least [`Limit::max_waiting`] jobs now: a new request should be
    /// turned away. Requests checked at the same instant may all pass, so the queue can exceed
    /// the bound by as many as arrive together.
    pub fn is_full(&self) -> bool {
        self.max_waiting().is_some_and(|max| self.waiting() >= max)
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
