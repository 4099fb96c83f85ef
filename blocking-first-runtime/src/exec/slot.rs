//! Slots in use: a stretch run inline ([`Slot`]) or a job on a loop ([`Busy`]).

use super::Limit;

/// One slot of a [`Limit`] taken outside the loops, for a stretch run inline in another body's
/// stretch; dropping it gives it back (to a queued job first).
#[derive(Debug)]
pub(crate) struct Slot {
    busy: Option<Busy>,
}

impl Slot {
    /// Wraps a permit already taken with `take_loop_slot`.
    pub(super) fn new(limit: &'static Limit) -> Slot {
        Slot {
            busy: Some(Busy::new(limit)),
        }
    }

    pub(crate) fn limit(&self) -> &'static Limit {
        self.busy.as_ref().expect("held until dropped").limit
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let limit = self.limit();
        // The count falls before the permit goes back, so `in_use` never exceeds the cap.
        drop(self.busy.take());
        super::give_back_slot(limit);
    }
}

/// Counts one slot in use (`in_use`, `peak`) until dropped; its end counts as a slot given back
/// for the starvation detector.
#[derive(Debug)]
pub(crate) struct Busy {
    limit: &'static Limit,
}

impl Busy {
    pub(super) fn new(limit: &'static Limit) -> Busy {
        limit.slots.use_began();
        Busy { limit }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.limit.slots.use_ended();
    }
}
