//! The kinds of time a body spends, and its split between them.

use std::fmt;
use std::time::Duration;

/// What kind of time a body is spending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Kind {
    /// Queued for a slot of its limit: every slot is busy.
    SlotWait,
    /// Handed to a blocking thread that has not picked it up yet (a loop waking up, or a new
    /// one waiting for tokio's blocking pool to start it).
    PoolQueue,
    /// Running blocking code, on a blocking thread, holding a slot.
    Blocking,
    /// In an `io!` region: on the runtime, holding no thread while it waits.
    Io,
    /// Waiting on an `.await` outside any `io!` region (holding no thread).
    Parked,
}

impl Kind {
    pub(crate) const ALL: [Kind; 5] = [
        Kind::SlotWait,
        Kind::PoolQueue,
        Kind::Blocking,
        Kind::Io,
        Kind::Parked,
    ];

    /// Its name in events, metric labels and JSON: `slot_wait`, `pool_queue`, `blocking`,
    /// `io`, `parked`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::SlotWait => "slot_wait",
            Kind::PoolQueue => "pool_queue",
            Kind::Blocking => "blocking",
            Kind::Io => "io",
            Kind::Parked => "parked",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How long a body spent in each [`Kind`] of time, from its first move to its end (or to now,
/// for a body in flight), and how often it hopped onto a blocking thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Split {
    /// Queued for a slot of its limit.
    pub slot_wait: Duration,
    /// Handed to a blocking thread not yet running it.
    pub pool_queue: Duration,
    /// Running blocking code.
    pub blocking: Duration,
    /// In `io!` regions.
    pub io: Duration,
    /// Parked on `.await`s outside regions.
    pub parked: Duration,
    /// Moves onto a blocking thread.
    pub hops: u32,
}

impl Split {
    /// The time spent as `kind`.
    pub fn get(&self, kind: Kind) -> Duration {
        match kind {
            Kind::SlotWait => self.slot_wait,
            Kind::PoolQueue => self.pool_queue,
            Kind::Blocking => self.blocking,
            Kind::Io => self.io,
            Kind::Parked => self.parked,
        }
    }

    /// All of it: the body's wall time.
    pub fn total(&self) -> Duration {
        Kind::ALL.iter().map(|&kind| self.get(kind)).sum()
    }
}
