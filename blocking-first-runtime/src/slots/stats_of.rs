//! What [`Limit::stats`](crate::limit::Limit::stats) returns.

/// Counters of one [`Limit`](crate::limit::Limit), from [`Limit::stats`](crate::limit::Limit::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LimitStats {
    /// The limit's name.
    pub name: &'static str,
    /// The cap, `None` when unbounded; an adaptive limit's current capacity.
    pub capacity: Option<usize>,
    /// An adaptive limit's floor and ceiling ([`Limit::adaptive`](crate::limit::Limit::adaptive));
    /// `None` for a fixed or unbounded one.
    pub bounds: Option<(usize, usize)>,
    /// Slots taken now (bodies in blocking code plus dispatched `parallel` branches).
    pub in_use: usize,
    /// The most slots ever taken at once (see [`Limit::reset_peak`](crate::limit::Limit::reset_peak)).
    pub peak: usize,
    /// Jobs waiting in the run queue for a loop now (they hold no thread).
    pub waiting: usize,
    /// Blocking loops alive now (each is one thread of tokio's blocking pool, holding one slot;
    /// at most the cap).
    pub loops: usize,
    /// The time in queue past which the limit counts as full ([`Limit::with_max_queue_time`](crate::limit::Limit::with_max_queue_time)).
    pub max_queue_time: Option<std::time::Duration>,
    /// The queue length at which the limit counts as full ([`Limit::with_max_waiting`](crate::limit::Limit::with_max_waiting)).
    pub max_waiting: Option<usize>,
    /// Requests turned away since start because the queue was full (by `blocking_first::tower`'s
    /// layer, or [`Limit::count_shed`](crate::limit::Limit::count_shed)).
    pub shed: u64,
}
