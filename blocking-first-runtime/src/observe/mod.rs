//! Where each body's time goes: its time split, the bodies in flight, and detectors for
//! blocking code where it does not belong.
//!
//! Every `#[blocking_first]` body records, at each move, what kind of time it is spending
//! ([`Kind`]): waiting for a slot of its limit, queued for a blocking thread, running blocking
//! code, in an `io!` region, or parked on an `.await` outside regions. One clock read per move.
//! When the body ends, its [`Split`] goes
//! - to `tracing`, as one `DEBUG` event at target `blocking_first::split`, inside the caller's
//!   span (so request spans and OpenTelemetry exporters get it);
//! - to the `metrics` facade with the `metrics` feature (names in the README);
//!
//! and while it runs, [`in_flight`] lists it.
//!
//! ```
//! # use blocking_first_runtime as blocking_first;
//! use blocking_first::observe;
//!
//! for body in observe::in_flight() {
//!     println!(
//!         "{} ({}:{}) {} for {:?}, {:?} old",
//!         body.function, body.file, body.line, body.state.name(), body.in_state, body.age,
//!     );
//! }
//! ```
//!
//! Recording is on by default; [`set_enabled`] turns it off (or on) at run time, for bodies
//! that start afterwards.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::limit::{self, Limit};
use crate::sync::lock_std;

pub mod detect;
mod registry;
mod report;

use crate::clock::now;
#[doc(hidden)]
pub use crate::record::Site;
pub use crate::record::{Kind, Split};
pub(crate) use registry::{deregister, register};
pub(crate) use report::{Outcome, report};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns recording of bodies' time splits (and their listing in [`in_flight`]) on or off, for
/// bodies that start from now on. On by default. Off, a body costs one relaxed load per move
/// instead of a clock read, and nothing reaches tracing, metrics or the detector of long
/// blocking stretches.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether bodies that start now record their time split.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Limits that bodies ran under, in the order first seen.
static LIMITS: Mutex<Vec<&'static Limit>> = Mutex::new(Vec::new());

/// As a body starts: remembers its limit (one relaxed load once it is known).
pub(crate) fn know(limit: &'static Limit) {
    if limit.slots.known_flag().load(Ordering::Relaxed)
        || limit.slots.known_flag().swap(true, Ordering::AcqRel)
    {
        return;
    }
    lock_std(&LIMITS).push(limit);
}

/// The global limit and every limit a `#[blocking_first]` body has run under so far: for a
/// status page that shows them all (`Limit::stats`).
pub fn limits() -> Vec<&'static Limit> {
    let known = lock_std(&LIMITS);
    let global = limit::global();
    std::iter::once(global)
        .chain(known.iter().copied().filter(|l| !std::ptr::eq(*l, global)))
        .collect()
}

/// Sets the gauges of every limit in [`limits`] to their values now (feature `metrics`). Each
/// body's end samples its own limit's; call this right before a scrape renders, so an idle
/// service shows its idle values too.
#[cfg(feature = "metrics")]
pub fn record_gauges() {
    for limit in limits() {
        report::gauges_of(limit);
    }
}

/// One live body, from [`in_flight`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BodySnapshot {
    /// Tells this body from every other body of the process (not in the order they started).
    pub id: u64,
    /// The annotated function, `module::name`.
    pub function: &'static str,
    /// Its source file.
    pub file: &'static str,
    /// The line of its `#[blocking_first]`.
    pub line: u32,
    /// The name of its [`Limit`].
    pub limit: &'static str,
    /// What it is doing now.
    pub state: Kind,
    /// For how long it has been doing it.
    pub in_state: Duration,
    /// Since its first move.
    pub age: Duration,
    /// Its time so far.
    pub split: Split,
    /// Its caller dropped it (a timeout, a client gone) while it ran blocking code: the stretch
    /// runs on, holding its thread and slot, until the body's next `.await` or region, where it
    /// stops.
    pub cancelled: bool,
}

/// Every body that started and has not ended, oldest first: where it is, what it is doing and
/// for how long. Cost: a lock per shard of the registry, held while copying.
pub fn in_flight() -> Vec<BodySnapshot> {
    let now = now();
    let mut bodies = Vec::new();
    registry::for_each(|shared| {
        let record = &shared.record;
        let Some(state) = record.kind() else { return };
        let (in_state, age) = record.ages(now);
        bodies.push(BodySnapshot {
            id: record.id(),
            function: record.site.function,
            file: record.site.file,
            line: record.site.line,
            limit: record.limit.name(),
            state,
            in_state,
            age,
            split: record.split(Some(now)),
            cancelled: shared.cancelled.load(crate::sync::Ordering::Relaxed),
        });
    });
    bodies.sort_by_key(|body| std::cmp::Reverse(body.age));
    bodies
}

#[cfg(feature = "serde")]
mod serialize {
    use serde::ser::{Serialize, SerializeStruct, Serializer};

    use super::{BodySnapshot, Split};

    fn us(duration: std::time::Duration) -> u64 {
        u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
    }

    /// Durations in whole microseconds, `*_us`.
    impl Serialize for Split {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut split = serializer.serialize_struct("Split", 7)?;
            split.serialize_field("total_us", &us(self.total()))?;
            split.serialize_field("slot_wait_us", &us(self.slot_wait))?;
            split.serialize_field("pool_queue_us", &us(self.pool_queue))?;
            split.serialize_field("blocking_us", &us(self.blocking))?;
            split.serialize_field("io_us", &us(self.io))?;
            split.serialize_field("parked_us", &us(self.parked))?;
            split.serialize_field("hops", &self.hops)?;
            split.end()
        }
    }

    /// Durations in whole microseconds, `*_us`.
    impl Serialize for BodySnapshot {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut body = serializer.serialize_struct("BodySnapshot", 10)?;
            body.serialize_field("id", &self.id)?;
            body.serialize_field("function", self.function)?;
            body.serialize_field("file", self.file)?;
            body.serialize_field("line", &self.line)?;
            body.serialize_field("limit", self.limit)?;
            body.serialize_field("state", &self.state)?;
            body.serialize_field("in_state_us", &us(self.in_state))?;
            body.serialize_field("age_us", &us(self.age))?;
            body.serialize_field("split", &self.split)?;
            body.serialize_field("cancelled", &self.cancelled)?;
            body.end()
        }
    }
}
