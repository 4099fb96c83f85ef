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
//! slots (`Limit::debt`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::Limit;

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

/// The adaptive part of a [`Limit`] made with [`Limit::adaptive`].
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
    /// When the window began (`observe::now`, ns; 0: not yet).
    started: AtomicU64,
    /// When a job last finished (`observe::now`, ns; 0: none yet), for the stall check.
    last_finish: AtomicU64,
    /// The no-load time (ns; 0: not known yet), readable without the lock.
    base_ns: AtomicU64,
    /// In the stall watcher's list (added once, never removed: limits are `static`).
    listed: AtomicBool,
    /// The last window's mean stretch time (ns; 0: none yet).
    last_rtt_ns: AtomicU64,
    /// Since when jobs have been waiting for a slot without a pause (`observe::now`, ns; 0:
    /// none waits), for the stall check: a wait that just began is not a stall.
    waiting_since: AtomicU64,
    /// When a `parallel` branch last found no slot and ran on its caller's thread instead
    /// (`observe::now`, ns; 0: never): demand that the queue does not show.
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
        let mut limit = Limit::with_capacity(name, min);
        limit.adaptive = Some(Adaptive::new(min, max));
        limit
    }

    /// Whether the limit adapts its capacity now.
    pub fn is_adaptive(&self) -> bool {
        self.adaptive.as_ref().is_some_and(Adaptive::is_on)
    }

    /// Whether a loop should time its jobs for the adaptation.
    pub(crate) fn times_jobs(&self) -> bool {
        self.is_adaptive() || self.max_queue_time().is_some()
    }

    /// A job of this limit ran for `took`: adds it to the window, and adapts the capacity if it
    /// ends one.
    ///
    /// `started` and `now`: `observe::now` at its start and end.
    pub(crate) fn job_took(&'static self, started: u64, now: u64) {
        let ns = now.saturating_sub(started);
        self.queue_time.job_took(ns);
        let Some(adaptive) = self.adaptive.as_ref().filter(|a| a.is_on()) else {
            return;
        };
        adaptive.last_finish.store(now, Ordering::Relaxed);
        let Some((rtt, concurrency, queued)) = adaptive.add(ns, self.in_use() + 1, now) else {
            return;
        };
        let decision = {
            let _config = self.lock_config();
            if !adaptive.is_on() {
                return;
            }
            let capacity = self.capacity.load(Ordering::Acquire);
            let decision = adaptive.decide(capacity, rtt, concurrency, queued);
            self.move_capacity(decision.from, decision.to);
            decision
        };
        // Outside the config lock: starting loops may drop a job's body (its runtime shutting
        // down), whose destructor may take the lock again, and a subscriber may call
        // `set_capacity` on this limit.
        self.moved(&decision);
    }

    /// After a capacity moved (outside the config lock): loops for the queued jobs if it grew,
    /// and the report.
    fn moved(&'static self, decision: &Decision) {
        if decision.to > decision.from {
            crate::exec::serve_queued(self, decision.to - decision.from);
        }
        adapted(self, decision);
    }

    /// Moves an adaptive limit's capacity from `from` to `to` (under the config lock): more
    /// permits (paying what it owes first; [`Limit::moved`] then starts loops for the queued
    /// jobs), or fewer: free permits taken now, the rest owed and not handed out again when they
    /// come back.
    fn move_capacity(&'static self, from: usize, to: usize) {
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
    /// by `max(1, √capacity)` per check. Returns whether it grew.
    pub(crate) fn grow_if_stalled(&'static self, now: u64) -> bool {
        let Some(adaptive) = self.adaptive.as_ref().filter(|a| a.is_on()) else {
            return false;
        };
        let denied = adaptive.denied_at.load(Ordering::Relaxed);
        let stall_floor = u64::try_from(STALL.as_nanos()).unwrap_or(u64::MAX);
        let wanted = denied != 0 && now.saturating_sub(denied) < stall_floor;
        if self.slot_waiters() == 0 && !wanted {
            adaptive.waiting_since.store(0, Ordering::Relaxed);
            return false;
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
            return false;
        }
        let (from, to) = {
            let _config = self.lock_config();
            let from = self.capacity.load(Ordering::Acquire);
            if !adaptive.is_on() || from >= adaptive.max {
                return false;
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
        self.moved(&Decision {
            from,
            to,
            rtt: Duration::ZERO,
            base: Duration::from_nanos(adaptive.base_ns.load(Ordering::Relaxed)),
            concurrency: f64::NAN,
        });
        true
    }

    /// A `parallel` branch found no slot of this limit and runs on its caller's thread: demand
    /// for more slots, as a job waiting for one is, that the queue does not show.
    pub(crate) fn branch_denied(&'static self) {
        let Some(adaptive) = self.adaptive.as_ref().filter(|a| a.is_on()) else {
            return;
        };
        adaptive
            .denied_at
            .store(crate::observe::now(), Ordering::Relaxed);
        self.slot_wanted();
    }

    /// A job (or a branch) found no free slot: the window counts the limit as used, and the
    /// stall check watches it.
    pub(crate) fn slot_wanted(&'static self) {
        let Some(adaptive) = self.adaptive.as_ref().filter(|a| a.is_on()) else {
            return;
        };
        adaptive.queued.store(true, Ordering::Relaxed);
        watch_stalls(self);
    }

    fn branch_denied_recently(&self, now: u64) -> bool {
        self.adaptive.as_ref().is_some_and(|adaptive| {
            let denied = adaptive.denied_at.load(Ordering::Relaxed);
            denied != 0 && now.saturating_sub(denied) < 1_000_000_000
        })
    }

    /// A slot for a body awaited from blocking code that found none free: an adaptive limit
    /// below its ceiling grows by one for it, at once. That code holds its thread while it
    /// waits, so waiting for a slot (and a loop, and a blocking thread) is what an unbounded
    /// pool never makes it do, and with a small blocking pool it could wait for good.
    pub(crate) fn grow_for_nested(&'static self) -> Option<super::Slot> {
        let adaptive = self.adaptive.as_ref().filter(|a| a.is_on())?;
        let _config = self.lock_config();
        let from = self.capacity.load(Ordering::Acquire);
        if !adaptive.is_on() || from >= adaptive.max {
            return None;
        }
        // A permit made for this slot: `capacity + debt` permits exist, as before.
        self.capacity.store(from + 1, Ordering::Release);
        Some(super::Slot::new(self))
        // (While the limit owes slots this still makes one: paying the debt frees no permit now,
        // and this caller cannot wait for one.)
    }

    /// Sets an adaptive limit's floor (the global limit's, at its first use), raising the
    /// capacity to it.
    pub(crate) fn set_floor(&'static self, floor: usize) {
        let Some(adaptive) = self.adaptive.as_ref() else {
            return;
        };
        let floor = floor.min(adaptive.max);
        let from = {
            let _config = self.lock_config();
            adaptive.min.store(floor, Ordering::Relaxed);
            let from = self.capacity.load(Ordering::Acquire);
            if !adaptive.is_on() || from >= floor {
                return;
            }
            self.move_capacity(from, floor);
            from
        };
        self.moved(&Decision {
            from,
            to: floor,
            rtt: Duration::ZERO,
            base: Duration::ZERO,
            concurrency: f64::NAN,
        });
    }

    /// Permits this limit will not hand out again when they come back (an adaptive limit that
    /// shrank below what was taken). A loop ends instead of taking its next job while it is
    /// positive.
    pub(crate) fn owes_slots(&self) -> bool {
        self.debt.load(Ordering::Acquire) > 0
    }
}

/// How often the stall watcher looks at the adaptive limits with jobs waiting.
const STALL_CHECK: Duration = Duration::from_millis(5);
/// The stall watcher ends after this long with no job waiting on any adaptive limit.
const STALL_IDLE_EXIT: Duration = Duration::from_secs(1);

static STALL_WATCHED: Mutex<Vec<&'static Limit>> = Mutex::new(Vec::new());
static STALL_RUNNING: AtomicBool = AtomicBool::new(false);

/// A job waits for a slot of the adaptive `limit`: makes sure one thread checks it for stalls
/// ([`Limit::grow_if_stalled`]) while jobs wait; it ends a second after the last wait.
pub(crate) fn watch_stalls(limit: &'static Limit) {
    if !limit.is_adaptive() {
        return;
    }
    // The list's lock only the first time: this runs for every job that waits.
    if let Some(adaptive) = &limit.adaptive {
        if !adaptive.listed.swap(true, Ordering::AcqRel) {
            lock(&STALL_WATCHED).push(limit);
        }
    }
    // SeqCst here and at the exit: either this sees the thread gone and starts one, or the
    // exiting thread sees this wait.
    if !STALL_RUNNING.swap(true, Ordering::SeqCst) {
        let spawned = std::thread::Builder::new()
            .name("blocking-first-adaptive".into())
            .spawn(watch_stalls_thread);
        if spawned.is_err() {
            STALL_RUNNING.swap(false, Ordering::SeqCst);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn watch_stalls_thread() {
    let mut idle = Duration::ZERO;
    loop {
        std::thread::sleep(STALL_CHECK);
        let limits = lock(&STALL_WATCHED).clone();
        let now = crate::observe::now();
        let mut waiting = false;
        for limit in limits {
            waiting |= limit.slot_waiters() > 0 || limit.branch_denied_recently(now);
            // A subscriber that panics on the `DEBUG` event must not end the watching.
            crate::unwind::drop_caught(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
                || limit.grow_if_stalled(now),
            )));
        }
        idle = if waiting {
            Duration::ZERO
        } else {
            idle + STALL_CHECK
        };
        if idle >= STALL_IDLE_EXIT {
            STALL_RUNNING.swap(false, Ordering::SeqCst);
            let waits = lock(&STALL_WATCHED)
                .iter()
                .any(|limit| limit.slot_waiters() > 0);
            if !waits || STALL_RUNNING.swap(true, Ordering::SeqCst) {
                return;
            }
            idle = Duration::ZERO;
        }
    }
}

/// Reports a window's end: a `DEBUG` event when the capacity moved, and the capacity gauge.
#[cfg_attr(
    not(any(feature = "tracing", feature = "metrics")),
    allow(unused_variables)
)]
fn adapted(limit: &'static Limit, decision: &Decision) {
    #[cfg(feature = "tracing")]
    if decision.to != decision.from {
        tracing::debug!(
            target: "blocking_first::adaptive",
            limit = limit.name(),
            from = decision.from,
            to = decision.to,
            stretch_us = u64::try_from(decision.rtt.as_micros()).unwrap_or(u64::MAX),
            base_us = u64::try_from(decision.base.as_micros()).unwrap_or(u64::MAX),
            concurrency = decision.concurrency,
            "capacity of limit `{}` moved from {} to {}",
            limit.name(),
            decision.from,
            decision.to,
        );
    }
    #[cfg(feature = "metrics")]
    {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("blocking_first_limit_capacity", "limit" => limit.name())
            .set(decision.to as f64);
    }
}
