//! One body's time split: the kind of time it is spending now, since when, the time spent in
//! each kind so far, and the first transitions in order (for timelines).
//!
//! Written by whoever moves the body (its driver, a loop), one at a time: every transition
//! happens-after the previous one through the run queue's lock or the handoff, so plain relaxed
//! loads and stores suffice. [`in_flight`](crate::observe::in_flight) reads it concurrently and
//! may see a transition half-done; its figures are clamped, never negative.
//!
//! A body's record is a field of the state its driver and loops share (`mode::Shared`), so it
//! sits below `mode`; `observe` reads it (the bodies in flight, the report at each end) and
//! re-exports what is public here ([`Kind`], [`Split`], [`Site`]).

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::clock::now;
use crate::limit::Limit;
pub use kind::{Kind, Split};
pub use site::Site;
#[cfg(feature = "metrics")]
pub(crate) use site::{Handles, SiteMetrics};

mod kind;
mod site;
#[cfg_attr(not(feature = "tower"), allow(dead_code))]
pub(crate) mod timing;

const KINDS: usize = 5;
/// Not polled yet, or polled but not yet moved anywhere.
const UNSTARTED: u8 = 5;
/// Completed, panicked or dropped by its loop.
const ENDED: u8 = 6;
/// Transitions kept in order for [`Segments`]; later ones only add to the totals.
const LOG: usize = 16;

fn nanos(n: u64) -> Duration {
    Duration::from_nanos(n)
}

/// A body's record (a field of the state its driver and loops share).
///
/// `repr(C)`, the fields every move touches first and together (64 bytes): a move by a thread
/// of the other side pulls in as few cache lines as can be.
#[repr(C)]
pub(crate) struct Record {
    /// Observation was on when the body started: its transitions are recorded.
    on: AtomicBool,
    kind: AtomicU8,
    /// Somebody listens to the split event: the moves are also logged in order, for `segments`.
    logging: AtomicBool,
    log_len: AtomicU8,
    hops: AtomicU32,
    /// When the first transition happened.
    started: AtomicU64,
    /// When the current kind began (the end, once ended).
    since: AtomicU64,
    totals: [AtomicU64; KINDS],
    pub(crate) site: &'static Site,
    pub(crate) limit: &'static Limit,
    /// `kind << 58 | start offset in ns from `started``.
    log: [AtomicU64; LOG],
    /// The start offset of the first transition not logged (0: none yet).
    overflow_at: AtomicU64,
    /// Where the registry keeps it (index + 1; 0: not registered).
    pub(crate) registered: AtomicUsize,
    /// Its number among the bodies in flight.
    id: AtomicU64,
    /// When its caller let go of it (0: it did not).
    cancelled_at: AtomicU64,
    /// The request (under `tower::ServerTimingLayer`) whose `Server-Timing` its split joins: set
    /// at the first poll of a body that no other body awaits.
    pub(crate) timing: OnceLock<std::sync::Arc<timing::RequestTiming>>,
}

const SHIFT: u32 = 58;

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("function", &self.site.function)
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

impl Record {
    pub(crate) fn new(site: &'static Site, limit: &'static Limit) -> Record {
        Record {
            site,
            limit,
            on: AtomicBool::new(false),
            logging: AtomicBool::new(false),
            kind: AtomicU8::new(UNSTARTED),
            started: AtomicU64::new(0),
            since: AtomicU64::new(0),
            totals: Default::default(),
            hops: AtomicU32::new(0),
            log_len: AtomicU8::new(0),
            log: Default::default(),
            overflow_at: AtomicU64::new(0),
            registered: AtomicUsize::new(0),
            id: AtomicU64::new(0),
            cancelled_at: AtomicU64::new(0),
            timing: OnceLock::new(),
        }
    }

    /// The body's caller let go of it at `now`.
    pub(crate) fn cancel(&self, now: u64) {
        self.cancelled_at.store(now.max(1), Ordering::Relaxed);
    }

    /// How long a cancelled body ran after its caller let go: from then to its end, if it ended
    /// after (a body stopped by its driver at once ran for no time).
    pub(crate) fn after_cancel(&self) -> Duration {
        let at = self.cancelled_at.load(Ordering::Relaxed);
        if at == 0 || self.kind.load(Ordering::Acquire) != ENDED {
            return Duration::ZERO;
        }
        nanos(self.since.load(Ordering::Relaxed).saturating_sub(at))
    }

    /// At the body's first poll: records it from now on if observation is on, and logs its
    /// moves in order too if a subscriber may want the split event's `segments`.
    pub(crate) fn begin(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
        #[cfg(feature = "tracing")]
        self.logging.store(
            on && tracing::level_filters::LevelFilter::current()
                >= tracing::level_filters::LevelFilter::DEBUG,
            Ordering::Relaxed,
        );
    }

    pub(crate) fn set_id(&self, id: u64) {
        self.id.store(id, Ordering::Relaxed);
    }

    pub(crate) fn id(&self) -> u64 {
        self.id.load(Ordering::Relaxed)
    }

    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The body now spends its time as `kind`: one clock read. Returns the kind that ended and
    /// how long it lasted (`None` when not recorded, or when the body had not started).
    pub(crate) fn enter(&self, kind: Kind) -> Option<(Kind, Duration)> {
        self.transition(kind as u8)
    }

    /// A hop: the body starts a stretch of blocking code on a loop.
    pub(crate) fn enter_hop(&self) -> Option<(Kind, Duration)> {
        let ended = self.transition(Kind::Blocking as u8);
        if self.is_on() {
            let hops = self.hops.load(Ordering::Relaxed);
            self.hops.store(hops + 1, Ordering::Relaxed);
        }
        ended
    }

    /// The body completed, panicked or was dropped by its loop.
    pub(crate) fn end(&self) -> Option<(Kind, Duration)> {
        self.transition(ENDED)
    }

    fn transition(&self, to: u8) -> Option<(Kind, Duration)> {
        if !self.is_on() {
            return None;
        }
        let from = self.kind.load(Ordering::Relaxed);
        if from == ENDED {
            return None;
        }
        let now = now();
        let since = self.since.load(Ordering::Relaxed);
        let ended = if from == UNSTARTED {
            self.started.store(now, Ordering::Relaxed);
            None
        } else {
            let length = now.saturating_sub(since);
            let total = &self.totals[usize::from(from)];
            total.store(total.load(Ordering::Relaxed) + length, Ordering::Relaxed);
            Some((Kind::ALL[usize::from(from)], nanos(length)))
        };
        self.since.store(now, Ordering::Relaxed);
        // Last, with `Release`: a reader that sees the new kind (`Acquire`) sees its start too.
        self.kind.store(to, Ordering::Release);
        if !self.logging.load(Ordering::Relaxed) {
            return ended;
        }
        let logged = self.log_len.load(Ordering::Relaxed);
        let offset = now.saturating_sub(self.started.load(Ordering::Relaxed));
        if to != ENDED
            && usize::from(logged) == LOG
            && self.overflow_at.load(Ordering::Relaxed) == 0
        {
            self.overflow_at.store(offset.max(1), Ordering::Relaxed);
        }
        if to != ENDED && usize::from(logged) < LOG {
            self.log[usize::from(logged)].store(
                u64::from(to) << SHIFT | offset.min((1 << SHIFT) - 1),
                Ordering::Relaxed,
            );
            self.log_len.store(logged + 1, Ordering::Relaxed);
        }
        ended
    }

    /// The kind the body is in now, if it started and has not ended.
    pub(crate) fn kind(&self) -> Option<Kind> {
        // `Acquire`, pairing with the `Release` of `transition`: read first, it makes the
        // current kind's start (and the body's) visible to what is read after it.
        Kind::ALL
            .get(usize::from(self.kind.load(Ordering::Acquire)))
            .copied()
    }

    /// The split so far. `now`: count the current kind up to then (for a body still running).
    pub(crate) fn split(&self, now: Option<u64>) -> Split {
        let mut totals: [u64; KINDS] =
            std::array::from_fn(|kind| self.totals[kind].load(Ordering::Relaxed));
        if let (Some(now), Some(kind)) = (now, self.kind()) {
            totals[kind as usize] += now.saturating_sub(self.since.load(Ordering::Relaxed));
        }
        Split {
            slot_wait: nanos(totals[Kind::SlotWait as usize]),
            pool_queue: nanos(totals[Kind::PoolQueue as usize]),
            blocking: nanos(totals[Kind::Blocking as usize]),
            io: nanos(totals[Kind::Io as usize]),
            parked: nanos(totals[Kind::Parked as usize]),
            hops: self.hops.load(Ordering::Relaxed),
        }
    }

    /// When the body last moved (ended, for a body that did): the clock without reading it.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn last_move(&self) -> u64 {
        self.since.load(Ordering::Relaxed)
    }

    /// How long the body has been in its current kind, and its age, at `now`.
    pub(crate) fn ages(&self, now: u64) -> (Duration, Duration) {
        let since = self.since.load(Ordering::Relaxed);
        let started = self.started.load(Ordering::Relaxed);
        (
            nanos(now.saturating_sub(since)),
            nanos(now.saturating_sub(started)),
        )
    }

    /// The first transitions in order. `now`: for a body that has not ended (cancelled), where
    /// its current segment ends.
    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    pub(crate) fn segments(&self, now: Option<u64>) -> Segments<'_> {
        Segments(self, now)
    }

    #[cfg_attr(not(feature = "tracing"), allow(dead_code))]
    fn logged(&self, now: Option<u64>) -> impl Iterator<Item = (Kind, Duration, Duration)> + '_ {
        let len = usize::from(self.log_len.load(Ordering::Relaxed));
        let end = match (now, self.kind()) {
            (Some(now), Some(_)) => now,
            _ => self.since.load(Ordering::Relaxed),
        }
        .saturating_sub(self.started.load(Ordering::Relaxed));
        (0..len).map(move |at| {
            let entry = self.log[at].load(Ordering::Relaxed);
            let start = entry & ((1 << SHIFT) - 1);
            let next = match self.log.get(at + 1) {
                Some(next) if at + 1 < len => next.load(Ordering::Relaxed) & ((1 << SHIFT) - 1),
                _ => match self.overflow_at.load(Ordering::Relaxed) {
                    0 => end,
                    overflow => overflow,
                },
            };
            let kind = Kind::ALL[usize::try_from(entry >> SHIFT).unwrap_or(0) % KINDS];
            (kind, nanos(start), nanos(next.saturating_sub(start)))
        })
    }
}

/// A body's segments in order, `kind=start+length` in milliseconds (the `segments` field of the
/// split event): `pool_queue=0.000+0.012 blocking=0.012+5.104 io=5.116+3.002`. A body with
/// more than 16 transitions ends with `...` (its totals still count everything).
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) struct Segments<'a>(&'a Record, Option<u64>);

impl fmt::Display for Segments<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        for (at, (kind, start, length)) in self.0.logged(self.1).enumerate() {
            if at > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={:.3}+{:.3}", kind.name(), ms(start), ms(length))?;
        }
        if self.0.overflow_at.load(Ordering::Relaxed) != 0 {
            f.write_str(" ...")?;
        }
        Ok(())
    }
}
