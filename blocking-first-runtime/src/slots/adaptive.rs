//! An adaptive limit: a capacity that moves between a floor and a ceiling from the time its
//! blocking stretches take.
//!
//! # The signal
//!
//! Every job a loop of the limit runs (a stretch of a body's blocking code, a `parallel`
//! branch) is timed: one clock read at each end. That is the time the *resource* behind the
//! limit takes (a database serving its queries, the CPU), measured where it is spent, apart from
//! the time a body waits for a slot and from its `io!` time. A resource that serves `N` at once
//! keeps that time flat up to `N` concurrent stretches; past `N` the stretches queue inside it and
//! the time grows with the concurrency. Work that waits on something unbounded (a sleep, a remote
//! call from blocking code) keeps it flat at any concurrency.
//!
//! # The algorithm
//!
//! Samples are gathered in windows (at least 16 stretches and 50 ms, or 4 stretches and 1 s).
//! At the end of each window, with `rtt` the window's mean stretch time and `base` the no-load
//! time:
//!
//! - `rtt > 1.25 × base`: the resource queues; the capacity becomes
//!   `capacity × max(0.5, 1.25 × base / rtt)` (gradient2's multiplicative decrease, with its
//!   tolerance);
//! - otherwise, if the limit was used (a job found no free slot, or at least half the slots were
//!   busy on average): `capacity + max(1, √capacity)` while the time is flat (at most 1.05 ×
//!   `base`: gradient2's queue allowance), `capacity + 1` near the knee (gradient2's guard against
//!   growing while the application, not the resource, limits the throughput);
//! - otherwise unchanged; always within `[min, max]`.
//!
//! `base` is where gradient2 and Vegas fail in known ways:
//!
//! - a long average of loaded times drifts upward under constant load, and the limit with it
//!   (Netflix concurrency-limits#165). Here `base` is the lowest window mean seen, and it only
//!   rises on evidence: a whole window at the floor still above the tolerance. No queue is left
//!   to shrink, so the work itself got slower (a phase change), and `base` becomes that time.
//! - Envoy's periodic probe at a minimal concurrency sheds requests (envoyproxy/envoy#8337):
//!   there is no probe. A limit whose work got faster sees it at once (a lower mean); one whose
//!   work got slower shrinks, and the shrinking is what shows the time did not follow.
//!
//! Shrinking never stops a running stretch: permits above the new capacity are not handed out
//! again when they come back, and a loop ends instead of taking its next job while the limit owes
//! slots (`Slots::debt`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::sync::lock_std as lock;
use std::time::Duration;

use super::Slots;

/// Smallest window: stretches and time.
const WINDOW_SAMPLES: u64 = 16;
const WINDOW_TIME: u64 = 50_000_000;
/// A slow resource's window: fewer stretches, longer.
const SLOW_SAMPLES: u64 = 4;
const SLOW_TIME: u64 = 1_000_000_000;
/// How far above the no-load time a window's mean may be before the limit shrinks.
const TOLERANCE: f64 = 1.25;
/// Up to how far above the no-load time a window's mean counts as flat (growth by `√capacity`;
/// between this and the tolerance, by one).
const FLAT: f64 = 1.05;
/// The shortest time without a stretch finishing, while jobs wait, that opens more slots.
pub(crate) const STALL: Duration = Duration::from_millis(10);

/// The adaptive part of a limit made with `Limit::adaptive`.
pub(crate) struct Adaptive {
    /// The floor: atomic because the global limit's is the number of cores, known at run time.
    pub(super) min: AtomicUsize,
    pub(super) max: usize,
    /// Cleared by `set_capacity`: the limit keeps a fixed cap from then on.
    pub(super) on: AtomicBool,
    /// The window in progress.
    sum_ns: AtomicU64,
    count: AtomicU64,
    /// Slots in use, summed at each sample (the window's mean concurrency).
    sum_in_use: AtomicU64,
    /// A job waited for a slot during the window.
    queued: AtomicBool,
    /// When the window began (`clock::now`, ns; 0: not yet).
    started: AtomicU64,
    /// When a job last finished (`clock::now`, ns; 0: none yet), for the stall check.
    last_finish: AtomicU64,
    /// The no-load time (ns; 0: not known yet), readable without the lock.
    base_ns: AtomicU64,
    /// In the stall watcher's list (added once, never removed: limits are `static`).
    listed: AtomicBool,
    /// The last window's mean stretch time (ns; 0: none yet).
    last_rtt_ns: AtomicU64,
    /// Since when jobs have been waiting for a slot without a pause (`clock::now`, ns; 0:
    /// none waits), for the stall check: a wait that just began is not a stall.
    waiting_since: AtomicU64,
    /// When a `parallel` branch last found no slot and ran on its caller's thread instead
    /// (`clock::now`, ns; 0: never): demand that the queue does not show.
    denied_at: AtomicU64,
    control: Mutex<Control>,
}

/// What the adaptation remembers between windows.
#[derive(Debug, Clone, Copy)]
struct Control {
    /// The no-load stretch time (ns); 0 before the first window.
    base: f64,
}

/// One window's end, for the event.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) struct Decision {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) rtt: Duration,
    pub(crate) base: Duration,
    pub(crate) concurrency: f64,
}

impl Adaptive {
    pub(super) const fn new(min: usize, max: usize) -> Adaptive {
        Adaptive {
            min: AtomicUsize::new(min),
            max,
            on: AtomicBool::new(true),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
            sum_in_use: AtomicU64::new(0),
            queued: AtomicBool::new(false),
            started: AtomicU64::new(0),
            last_finish: AtomicU64::new(0),
            base_ns: AtomicU64::new(0),
            listed: AtomicBool::new(false),
            last_rtt_ns: AtomicU64::new(0),
            denied_at: AtomicU64::new(0),
            waiting_since: AtomicU64::new(0),
            control: Mutex::new(Control { base: 0.0 }),
        }
    }

    pub(super) fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    pub(super) fn min(&self) -> usize {
        self.min.load(Ordering::Relaxed)
    }

    /// Adds a stretch of `ns`, run while `in_use` slots were taken; returns the window's
    /// numbers if this sample ends it.
    fn add(&self, ns: u64, in_use: usize, now: u64) -> Option<(f64, f64, bool)> {
        let started = match self.started.load(Ordering::Relaxed) {
            0 => {
                // The first sample starts the first window.
                let _ = self
                    .started
                    .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                now
            }
            at => at,
        };
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.sum_in_use.fetch_add(in_use as u64, Ordering::Relaxed);
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let elapsed = now.saturating_sub(started);
        let ends = (count >= WINDOW_SAMPLES && elapsed >= WINDOW_TIME)
            || (count >= SLOW_SAMPLES && elapsed >= SLOW_TIME);
        if !ends {
            return None;
        }
        // One closer per window: the one that resets its start. Samples racing with the reset
        // count in the next window.
        if self
            .started
            .compare_exchange(started, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        let count = self.count.swap(0, Ordering::Relaxed).max(1);
        let sum = self.sum_ns.swap(0, Ordering::Relaxed);
        let in_use = self.sum_in_use.swap(0, Ordering::Relaxed);
        let queued = self.queued.swap(false, Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        Some((
            sum as f64 / count as f64,
            in_use as f64 / count as f64,
            queued,
        ))
    }

    /// The capacity after a window of mean time `rtt` (ns) at mean concurrency `concurrency`,
    /// from `capacity`.
    fn decide(&self, capacity: usize, rtt: f64, concurrency: f64, queued: bool) -> Decision {
        let mut control = lock(&self.control);
        if control.base == 0.0 || rtt < control.base {
            control.base = rtt;
        } else if capacity <= self.min() && rtt > TOLERANCE * control.base {
            // Still slow at the floor, a whole window long: not queueing, the work got slower.
            control.base = rtt;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        {
            self.base_ns.store(control.base as u64, Ordering::Relaxed);
            self.last_rtt_ns.store(rtt as u64, Ordering::Relaxed);
        }
        #[allow(clippy::cast_precision_loss)]
        let current = capacity as f64;
        let target = if rtt > TOLERANCE * control.base {
            (current * (TOLERANCE * control.base / rtt).max(0.5)).floor()
        } else if !(queued || concurrency >= current / 2.0) {
            current
        } else if rtt <= FLAT * control.base {
            // Flat: far from the knee, grow fast.
            (current + current.sqrt().max(1.0)).ceil()
        } else {
            // Rising, within the tolerance: near the knee, one slot at a time.
            current + 1.0
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let to = (target as usize).clamp(self.min(), self.max);
        Decision {
            from: capacity,
            to,
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            rtt: Duration::from_nanos(rtt as u64),
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            base: Duration::from_nanos(control.base as u64),
            concurrency,
        }
    }
}

impl Slots {
    /// Whether the limit adapts its capacity now.
    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive.as_ref().is_some_and(Adaptive::is_on)
    }

    /// Whether a loop should time its jobs for the adaptation.
    pub(crate) fn times_jobs(&self) -> bool {
        self.is_adaptive() || self.max_queue_time().is_some()
    }

    /// A job of this limit ran from `started` to `now` (`clock::now`): adds it to the window, and
    /// moves the capacity if it ends one. Returns the move, for the caller to act on (outside the
    /// config lock) and report.
    #[must_use = "a move the caller must act on: `Limit::job_took` serves the queued jobs and reports it"]
    pub(crate) fn job_took(&self, started: u64, now: u64) -> Option<Decision> {
        let ns = now.saturating_sub(started);
        self.queue_time.job_took(ns);
        let adaptive = self.adaptive.as_ref().filter(|a| a.is_on())?;
        adaptive.last_finish.store(now, Ordering::Relaxed);
        let (rtt, concurrency, queued) = adaptive.add(ns, self.in_use() + 1, now)?;
        let _config = self.lock_config();
        if !adaptive.is_on() {
            return None;
        }
        let capacity = self.capacity.load(Ordering::Acquire);
        let decision = adaptive.decide(capacity, rtt, concurrency, queued);
        self.move_capacity(decision.from, decision.to);
        Some(decision)
    }

    /// Moves an adaptive limit's capacity from `from` to `to` (under the config lock): more
    /// permits (paying what it owes first; the caller then starts loops for the queued jobs), or
    /// fewer: free permits taken now, the rest owed and not handed out again when they come
    /// back.
    fn move_capacity(&self, from: usize, to: usize) {
        self.capacity.store(to, Ordering::Release);
        if to == from {
            return;
        }
        if to > from {
            let mut more = to - from;
            let paid = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |debt| {
                    Some(debt - debt.min(more))
                })
                .map_or(0, |debt| debt.min(more));
            more -= paid;
            self.semaphore.add_permits(more);
        } else {
            let fewer = from - to;
            let mut taken = 0;
            while taken < fewer && self.take_loop_slot() {
                taken += 1;
            }
            self.debt.fetch_add(fewer - taken, Ordering::AcqRel);
        }
    }

    /// Jobs wait for a slot of this adaptive limit: has every slot been stuck long enough that
    /// more should be opened? With no stretch finishing for twice the no-load time (at least
    /// [`STALL`]), the resource is not what holds the work up (a sleep, a remote call, blocking
    /// code waiting on other blocking code): the capacity grows as an unbounded pool's would,
    /// by `max(1, √capacity)` per check. Returns the move if it grew.
    #[must_use = "a move the caller must act on: `Limit::grow_if_stalled` serves the queued jobs and reports it"]
    pub(crate) fn grow_if_stalled(&self, now: u64) -> Option<Decision> {
        let adaptive = self.adaptive.as_ref().filter(|a| a.is_on())?;
        let denied = adaptive.denied_at.load(Ordering::Relaxed);
        let stall_floor = u64::try_from(STALL.as_nanos()).unwrap_or(u64::MAX);
        let wanted = denied != 0 && now.saturating_sub(denied) < stall_floor;
        if self.slot_waiters() == 0 && !wanted {
            adaptive.waiting_since.store(0, Ordering::Relaxed);
            return None;
        }
        let waiting_since = match adaptive.waiting_since.load(Ordering::Relaxed) {
            0 => {
                adaptive.waiting_since.store(now, Ordering::Relaxed);
                now
            }
            since => since,
        };
        // Twice the usual stretch: the no-load time, or the last window's if the work got slower
        // (then finishing one stretch in twice the old time is not a stall).
        let stall = adaptive
            .base_ns
            .load(Ordering::Relaxed)
            .max(adaptive.last_rtt_ns.load(Ordering::Relaxed))
            .saturating_mul(2)
            .max(u64::try_from(STALL.as_nanos()).unwrap_or(u64::MAX));
        let since = adaptive
            .last_finish
            .load(Ordering::Relaxed)
            .max(waiting_since);
        if now.saturating_sub(since) < stall {
            return None;
        }
        let (from, to) = {
            let _config = self.lock_config();
            let from = self.capacity.load(Ordering::Acquire);
            if !adaptive.is_on() || from >= adaptive.max {
                return None;
            }
            #[allow(clippy::cast_precision_loss)]
            let step = (from as f64).sqrt().max(1.0).ceil();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let to = (from + step as usize).min(adaptive.max);
            self.move_capacity(from, to);
            (from, to)
        };
        // The next stall counts from here.
        adaptive.last_finish.store(now, Ordering::Relaxed);
        Some(Decision {
            from,
            to,
            rtt: Duration::ZERO,
            base: Duration::from_nanos(adaptive.base_ns.load(Ordering::Relaxed)),
            concurrency: f64::NAN,
        })
    }

    /// A `parallel` branch found no slot of this limit and runs on its caller's thread: demand
    /// for more slots, as a job waiting for one is, that the queue does not show. Returns
    /// whether the limit adapts (then the stall check should watch it).
    #[must_use = "whether the stall watcher must watch this limit: call `Limit::branch_denied`"]
    pub(crate) fn branch_denied(&self) -> bool {
        let Some(adaptive) = self.adaptive.as_ref().filter(|a| a.is_on()) else {
            return false;
        };
        adaptive
            .denied_at
            .store(crate::clock::now(), Ordering::Relaxed);
        self.slot_wanted()
    }

    /// A job (or a branch) found no free slot: the window counts the limit as used. Returns
    /// whether the limit adapts (then the stall check should watch it).
    #[must_use = "whether the stall watcher must watch this limit: call `Limit::slot_wanted`"]
    pub(crate) fn slot_wanted(&self) -> bool {
        let Some(adaptive) = self.adaptive.as_ref().filter(|a| a.is_on()) else {
            return false;
        };
        adaptive.queued.store(true, Ordering::Relaxed);
        true
    }

    /// Whether the stall check should list this limit: the first call on an adaptive limit.
    pub(crate) fn list_for_stalls(&self) -> bool {
        self.adaptive
            .as_ref()
            .is_some_and(|adaptive| !adaptive.listed.swap(true, Ordering::AcqRel))
    }

    pub(crate) fn branch_denied_recently(&self, now: u64) -> bool {
        self.adaptive.as_ref().is_some_and(|adaptive| {
            let denied = adaptive.denied_at.load(Ordering::Relaxed);
            denied != 0 && now.saturating_sub(denied) < 1_000_000_000
        })
    }

    /// A slot for a body awaited from blocking code that found none free: an adaptive limit
    /// below its ceiling grows by one for it, at once, and `take` takes the slot (under the
    /// config lock). That code holds its thread while it waits, so waiting for a slot (and a
    /// loop, and a blocking thread) is what an unbounded pool never makes it do, and with a small
    /// blocking pool it could wait for good.
    pub(crate) fn grow_for_nested<T>(&self, take: impl FnOnce() -> T) -> Option<T> {
        let adaptive = self.adaptive.as_ref().filter(|a| a.is_on())?;
        let _config = self.lock_config();
        let from = self.capacity.load(Ordering::Acquire);
        if !adaptive.is_on() || from >= adaptive.max {
            return None;
        }
        // A permit made for this slot: `capacity + debt` permits exist, as before.
        self.capacity.store(from + 1, Ordering::Release);
        Some(take())
        // (While the limit owes slots this still makes one: paying the debt frees no permit now,
        // and this caller cannot wait for one.)
    }

    /// Sets an adaptive limit's floor (the global limit's, at its first use), raising the
    /// capacity to it. Returns the move if it grew.
    #[must_use = "a move the caller must act on: `Limit::set_floor` serves the queued jobs and reports it"]
    pub(crate) fn set_floor(&self, floor: usize) -> Option<Decision> {
        let adaptive = self.adaptive.as_ref()?;
        let floor = floor.min(adaptive.max);
        let from = {
            let _config = self.lock_config();
            adaptive.min.store(floor, Ordering::Relaxed);
            let from = self.capacity.load(Ordering::Acquire);
            if !adaptive.is_on() || from >= floor {
                return None;
            }
            self.move_capacity(from, floor);
            from
        };
        Some(Decision {
            from,
            to: floor,
            rtt: Duration::ZERO,
            base: Duration::ZERO,
            concurrency: f64::NAN,
        })
    }

    /// Permits this limit will not hand out again when they come back (an adaptive limit that
    /// shrank below what was taken). A loop ends instead of taking its next job while it is
    /// positive.
    pub(crate) fn owes_slots(&self) -> bool {
        self.debt.load(Ordering::Acquire) > 0
    }

    /// Reports a move of the capacity: a `DEBUG` event when it moved, and the capacity gauge.
    #[cfg_attr(
        not(any(feature = "tracing", feature = "metrics")),
        allow(unused_variables)
    )]
    pub(crate) fn adapted(&self, decision: &Decision) {
        #[cfg(feature = "tracing")]
        if decision.to != decision.from {
            tracing::debug!(
                target: "blocking_first::adaptive",
                limit = self.name(),
                from = decision.from,
                to = decision.to,
                stretch_us = u64::try_from(decision.rtt.as_micros()).unwrap_or(u64::MAX),
                base_us = u64::try_from(decision.base.as_micros()).unwrap_or(u64::MAX),
                concurrency = decision.concurrency,
                "capacity of limit `{}` moved from {} to {}",
                self.name(),
                decision.from,
                decision.to,
            );
        }
        #[cfg(feature = "metrics")]
        {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("blocking_first_limit_capacity", "limit" => self.name())
                .set(decision.to as f64);
        }
    }
}
