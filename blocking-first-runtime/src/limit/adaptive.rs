//! Adaptive limits, as users make them (the algorithm is `slots::adaptive`'s; growing for the
//! queued jobs and the stall check, `exec::adaptive`'s).

use super::Limit;
use crate::slots::Slots;

impl Limit {
    /// A limit whose capacity moves between `min` and `max` from what its bodies measure: it
    /// starts at `min`, grows while the time its blocking stretches take stays flat and its slots
    /// are used, and shrinks when that time rises (the resource behind it queues). See the
    /// module `limit`'s docs for the algorithm, [`LimitStats::capacity`] for where it is now.
    ///
    /// [`Limit::set_capacity`] fixes it (the limit stops adapting). A
    /// `blocking_first::pool::Pool` sized by it has `max` connections (opened as needed), so the
    /// pool never caps below the limit.
    ///
    /// ```
    /// # use blocking_first_runtime as blocking_first;
    /// use blocking_first::limit::Limit;
    ///
    /// /// Between 2 and 64 bodies in database code, wherever the database serves best.
    /// static DB: Limit = Limit::adaptive("db", 2, 64);
    ///
    /// assert_eq!(DB.capacity(), Some(2)); // it starts at its floor
    /// assert_eq!(DB.stats().bounds, Some((2, 64)));
    /// ```
    ///
    /// # Panics
    /// If `min` is 0, `max` is below `min`, or `max` is above [`MAX_CAPACITY`] (at compile time
    /// when used in a `static`).
    ///
    /// [`LimitStats::capacity`]: super::LimitStats::capacity
    /// [`MAX_CAPACITY`]: super::MAX_CAPACITY
    pub const fn adaptive(name: &'static str, min: usize, max: usize) -> Limit {
        assert!(min > 0, "an adaptive Limit needs at least one slot");
        assert!(max >= min, "an adaptive Limit's max is at least its min");
        assert!(
            max <= super::MAX_CAPACITY,
            "a Limit has at most MAX_CAPACITY slots"
        );
        Limit::of(Slots::adaptive(name, min, max))
    }

    /// Whether the limit adapts its capacity now.
    pub fn is_adaptive(&self) -> bool {
        self.slots.is_adaptive()
    }
}
