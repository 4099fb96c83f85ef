//! The starvation detector: a limit whose every slot has been held far longer than its usual
//! stretch while bodies wait to come back from `io!` or an `.await`.
//!
//! That is the signature of a resource kept across a region (a raw pool's connection held across
//! `io!`): the bodies waiting in the region hold every connection, the bodies that took their
//! slots block waiting for one, and the first bodies cannot get a slot to come back. Nothing
//! here can break the cycle without giving up the cap, so it is reported, loudly and early.
//!
//! One thread watches, and only while some body that already started waits for a slot of a
//! capped limit; it ends a second after the last such wait.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::slots::Slots;
use crate::watcher::Watcher;

/// How often the watching thread looks.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// The watching thread ends after this long with no started body waiting for a slot.
const IDLE_EXIT: Duration = Duration::from_secs(1);
/// No slot given back for at least this long (and for 20 usual stretches) is starvation.
const MIN_STALL: Duration = Duration::from_secs(1);
/// How many usual stretches without a slot given back count as starvation.
const STALL_STRETCHES: u64 = 20;
/// At most one warning per limit per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(30);

static WATCHER: Watcher<Slots> = Watcher::new("blocking-first-watchdog", CHECK_EVERY, IDLE_EXIT);

/// Starts watching `limit` (a body that already started waits for one of its slots).
pub(crate) fn watch(limit: &'static Slots) {
    let first = !limit.watch_flag().swap(true, Ordering::AcqRel);
    WATCHER.watch(first.then_some(limit), run);
}

fn run(watcher: &'static Watcher<Slots>) {
    let mut watches: Vec<Watch> = Vec::new();
    // `returning` is read SeqCst (see `Watcher::watch`).
    watcher.run(
        |limit| limit.returning_waiters() > 0,
        |limits| {
            let now = Instant::now();
            for limit in limits {
                if !watches
                    .iter()
                    .any(|watch| std::ptr::eq(watch.limit, *limit))
                {
                    watches.push(Watch::new(limit, now));
                }
            }
            let mut anyone_waiting = false;
            for watch in &mut watches {
                anyone_waiting |= watch.limit.returning_waiters() > 0;
                if let Some(stall) = watch.tick(now) {
                    // A subscriber that panics on the warning must not end the watching for
                    // good (the watcher would stay marked running with no thread behind it).
                    crate::unwind::drop_caught(std::panic::catch_unwind(|| report(&stall)));
                }
            }
            anyone_waiting
        },
    );
}

/// What the watching thread knows of one limit. All clock reads happen here, none in a hop.
struct Watch {
    limit: &'static Slots,
    /// `Slots::releases` at the last look.
    releases: u64,
    /// When the limit last made progress (gave a slot back), or was last not full.
    progress: Instant,
    last_look: Instant,
    /// Slot time observed while the limit was full, and the slots given back meanwhile: their
    /// ratio is the limit's usual stretch.
    full_slot_time: Duration,
    full_releases: u64,
}

impl Watch {
    fn new(limit: &'static Slots, now: Instant) -> Watch {
        Watch {
            limit,
            releases: limit.releases(),
            progress: now,
            last_look: now,
            full_slot_time: Duration::ZERO,
            full_releases: 0,
        }
    }

    /// Looks at the limit again; returns a stall to report.
    fn tick(&mut self, now: Instant) -> Option<Stall> {
        let elapsed = now.duration_since(self.last_look);
        self.last_look = now;
        let capacity = self.limit.capacity()?;
        let full = self.limit.in_use() >= capacity;
        let releases = self.limit.releases();
        let given_back = releases.wrapping_sub(self.releases);
        self.releases = releases;
        if full && given_back > 0 {
            self.full_slot_time += elapsed * u32::try_from(capacity).unwrap_or(u32::MAX);
            self.full_releases += given_back;
        }
        let waiting = self.limit.returning_waiters();
        if given_back > 0 || !full || waiting == 0 {
            self.progress = now;
            return None;
        }
        let stalled = now.duration_since(self.progress);
        let usual = match u32::try_from(self.full_releases) {
            Ok(0) | Err(_) => Duration::ZERO,
            Ok(n) => self.full_slot_time / n,
        };
        if !is_stall(stalled, usual) || !self.limit.claim_warning(now, WARN_INTERVAL) {
            return None;
        }
        Some(Stall {
            limit: self.limit.name(),
            capacity,
            stalled,
            usual,
            waiting,
        })
    }
}

/// What the detector saw on one limit.
#[derive(Debug)]
struct Stall {
    limit: &'static str,
    capacity: usize,
    stalled: Duration,
    usual: Duration,
    waiting: usize,
}

/// Whether `stalled` without a slot given back is starvation for a limit whose stretches usually
/// take `usual`.
fn is_stall(stalled: Duration, usual: Duration) -> bool {
    let usual_nanos = u64::try_from(usual.as_nanos()).unwrap_or(u64::MAX);
    let relative = Duration::from_nanos(usual_nanos.saturating_mul(STALL_STRETCHES));
    stalled >= MIN_STALL.max(relative)
}

fn report(stall: &Stall) {
    let Stall {
        limit,
        capacity,
        stalled,
        usual,
        waiting,
    } = stall;
    // The usual stretch is known once the detector has seen the limit full and moving; before
    // that, a limit whose blocking code is simply this slow looks the same.
    let usual = if usual.is_zero() {
        " (no usual stretch seen yet: if its blocking code really runs this long, this is \
         only saturation)"
            .to_owned()
    } else {
        format!(" (a stretch of blocking code usually takes {usual:.1?})")
    };
    let message = format!(
        "limit `{limit}` looks starved: all {capacity} of its slots have been held for at least \
         {stalled:.1?} without one given back{usual}, while {waiting} bodies wait for a slot to come back from `io!` or an \
         `.await`. A body probably keeps a pooled connection (or another resource the others \
         need) across `io!` or `.await`, and the bodies that took its slot now wait for that \
         resource. Give connections back before `io!`/`.await` and take a new one after, or \
         use `blocking_first::pool::Pool`, whose connections cannot be held across them."
    );
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "blocking_first::starvation",
        limit = *limit,
        capacity = *capacity,
        stalled_ms = u64::try_from(stalled.as_millis()).unwrap_or(u64::MAX),
        waiting = *waiting,
        "{message}"
    );
    #[cfg(not(feature = "tracing"))]
    eprintln!("WARN blocking_first::starvation: {message}");
    crate::stats::STARVATION_WARNINGS.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_long_in_absolute_terms_and_against_the_usual_stretch() {
        let ms = Duration::from_millis;
        assert!(!is_stall(ms(999), ms(1)));
        assert!(is_stall(ms(1000), ms(1)));
        assert!(is_stall(ms(1000), ms(50)));
        assert!(!is_stall(ms(1999), ms(100)), "20 usual stretches of 100 ms");
        assert!(is_stall(ms(2000), ms(100)));
    }
}
