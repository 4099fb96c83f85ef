//! Detectors of blocking code where it does not belong. On by default in debug builds (where
//! mistakes are made; the `io!` one at 10 ms there, since unoptimized code is slower), off in
//! release builds; either way one call or an environment variable changes that:
//!
//! - **Blocking inside `io!`**: one poll of a body in an `io!` region, on a runtime worker, that
//!   runs longer than [`Detectors::io_poll`] (1 ms by default). Such a poll stalls every other
//!   task on that worker.
//! - **Long blocking stretches**: a stretch of blocking code that holds its thread (and its
//!   limit's slot) longer than [`Detectors::stretch`] (1 s by default).
//!
//! Each warns with the function, its file and line and the duration, as a `WARN` event at target
//! `blocking_first::detect` (on standard error without the `tracing` feature), at most once per
//! function and detector per [`Detectors::interval`] (60 s by default), and counts it in
//! [`Stats::detector_warnings`](crate::Stats::detector_warnings).
//!
//! ```
//! # use blocking_first_runtime as blocking_first;
//! use std::time::Duration;
//!
//! use blocking_first::observe::detect::{self, Detectors};
//!
//! // At start-up: both detectors, with their default thresholds...
//! detect::enable(Detectors::default());
//! // ...or with your own.
//! detect::enable(Detectors::default().io_poll(Duration::from_micros(500)).stretch(None));
//! ```
//!
//! Or, without code: `BLOCKING_FIRST_DETECT=1` (the defaults), `BLOCKING_FIRST_DETECT=0` (both
//! off, also in a debug build), or a list such as
//! `BLOCKING_FIRST_DETECT=io_poll=500us,stretch=200ms,interval=10s` (`off` or `0` for either
//! detector turns it off), read when the first body starts. A call to [`enable`] or [`disable`]
//! wins over the variable, and the variable over the build's default.
//!
//! Cost when on: two clock reads per poll in an `io!` region; the stretch detector reads the
//! time the split records anyway (it needs recording on, the default).

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Kind, Site};
use crate::stats;

/// Thresholds in ns (0: off) and the interval between two warnings of one function.
static IO_POLL: AtomicU64 = AtomicU64::new(0);
static STRETCH: AtomicU64 = AtomicU64::new(0);
static INTERVAL: AtomicU64 = AtomicU64::new(0);
static FROM_ENV: Once = Once::new();

/// The `io!` poll threshold of the debug builds' default.
const DEBUG_IO_POLL: Duration = Duration::from_millis(10);

/// The environment variable read when the first body starts.
pub const ENV: &str = "BLOCKING_FIRST_DETECT";

/// Which detectors to turn on, and their thresholds (for [`enable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detectors {
    io_poll: Option<Duration>,
    stretch: Option<Duration>,
    interval: Duration,
}

impl Default for Detectors {
    /// Both detectors: an `io!` poll over 1 ms, a blocking stretch over 1 s, one warning per
    /// function and detector per 60 s.
    fn default() -> Detectors {
        Detectors {
            io_poll: Some(Duration::from_millis(1)),
            stretch: Some(Duration::from_secs(1)),
            interval: Duration::from_secs(60),
        }
    }
}

impl Detectors {
    /// Warns about one poll in an `io!` region that runs longer than this (`None`: off).
    pub fn io_poll(mut self, threshold: impl Into<Option<Duration>>) -> Detectors {
        self.io_poll = threshold.into();
        self
    }

    /// Warns about one stretch of blocking code that runs longer than this (`None`: off).
    pub fn stretch(mut self, threshold: impl Into<Option<Duration>>) -> Detectors {
        self.stretch = threshold.into();
        self
    }

    /// At most one warning per function and detector per `interval`.
    pub fn interval(mut self, interval: Duration) -> Detectors {
        self.interval = interval;
        self
    }

    /// Parses the environment variable's value.
    fn parse(value: &str) -> Result<Option<Detectors>, String> {
        let value = value.trim();
        match value {
            "" | "0" | "off" | "false" => return Ok(None),
            "1" | "on" | "true" => return Ok(Some(Detectors::default())),
            _ => {}
        }
        let mut detectors = Detectors::default();
        for item in value.split(',') {
            let (key, raw) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}` is not `name=duration`"))?;
            let duration = match raw.trim() {
                "0" | "off" => None,
                raw => Some(parse_duration(raw)?),
            };
            match key.trim() {
                "io_poll" => detectors.io_poll = duration,
                "stretch" => detectors.stretch = duration,
                "interval" => detectors.interval = duration.unwrap_or(Duration::ZERO),
                other => {
                    return Err(format!(
                        "unknown detector `{other}` (expected io_poll, stretch or interval)"
                    ));
                }
            }
        }
        Ok(Some(detectors))
    }
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    let at = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(at);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{raw}` is not a duration such as 500us, 2ms or 1s"))?;
    let scale = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        _ => return Err(format!("`{raw}`: the unit must be ns, us, ms or s")),
    };
    Duration::try_from_secs_f64(number * scale).map_err(|_| format!("`{raw}` is too long"))
}

fn ns(duration: Option<Duration>) -> u64 {
    duration.map_or(0, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
    })
}

/// Turns the detectors on as given (replacing any earlier setting, and the variable's).
pub fn enable(detectors: Detectors) {
    FROM_ENV.call_once(|| {});
    set(Some(detectors));
}

/// Turns both detectors off.
pub fn disable() {
    FROM_ENV.call_once(|| {});
    set(None);
}

fn set(detectors: Option<Detectors>) {
    let detectors = detectors.unwrap_or(Detectors {
        io_poll: None,
        stretch: None,
        interval: Duration::ZERO,
    });
    INTERVAL.store(ns(Some(detectors.interval)), Ordering::Relaxed);
    IO_POLL.store(ns(detectors.io_poll), Ordering::Relaxed);
    STRETCH.store(ns(detectors.stretch), Ordering::Relaxed);
}

/// When a body starts: reads the environment variable the first time.
pub(crate) fn read_env() {
    FROM_ENV.call_once(|| {
        let Ok(value) = std::env::var(ENV) else {
            // Debug builds: both detectors. The `io!` one at 10 ms: unoptimized code is
            // several times slower, and tests run side by side preempt the workers, so 1 ms
            // would warn about clean regions.
            if cfg!(debug_assertions) {
                set(Some(Detectors::default().io_poll(DEBUG_IO_POLL)));
            }
            return;
        };
        match Detectors::parse(&value) {
            Ok(detectors) => set(detectors),
            Err(problem) => eprintln!(
                "blocking-first: {ENV}={value:?} is not understood ({problem}); the detectors \
                 stay off. Examples: {ENV}=1, {ENV}=io_poll=500us,stretch=200ms"
            ),
        }
    });
}

/// The `io!` poll threshold, if that detector is on (one relaxed load).
pub(crate) fn io_poll_threshold() -> Option<u64> {
    match IO_POLL.load(Ordering::Relaxed) {
        0 => None,
        threshold => Some(threshold),
    }
}

/// After one poll in an `io!` region on a worker that took `took` ns.
pub(crate) fn io_poll_took(site: &Site, took: u64, threshold: u64) {
    if took > threshold && claim(site, 0) {
        warn(
            site,
            Kind::Io,
            Duration::from_nanos(took),
            Duration::from_nanos(threshold),
            "",
        );
    }
}

/// After a segment of a body ended: warns if it was a long stretch of blocking code.
pub(crate) fn segment_ended(site: &Site, limit: &'static str, ended: Option<(Kind, Duration)>) {
    let Some((Kind::Blocking, length)) = ended else {
        return;
    };
    let threshold = STRETCH.load(Ordering::Relaxed);
    if threshold != 0 && ns(Some(length)) > threshold && claim(site, 1) {
        warn(
            site,
            Kind::Blocking,
            length,
            Duration::from_nanos(threshold),
            limit,
        );
    }
}

/// Whether this function's detector `which` may warn now (and records that it does).
fn claim(site: &Site, which: usize) -> bool {
    let now = crate::clock::now() + 1;
    let interval = INTERVAL.load(Ordering::Relaxed);
    let last = &site.warned[which];
    let before = last.load(Ordering::Relaxed);
    if before != 0 && now.saturating_sub(before) < interval {
        return false;
    }
    last.compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
}

fn warn(site: &Site, kind: Kind, took: Duration, threshold: Duration, limit: &str) {
    stats::DETECTOR_WARNINGS.fetch_add(1, Ordering::Relaxed);
    let (function, file, line) = (site.function, site.file, site.line);
    let message = if kind == Kind::Io {
        format!(
            "blocking-first: `{function}` ({file}:{line}) ran {took:?} in one poll of an `io!` \
             region on a runtime worker (threshold {threshold:?}): that is blocking code inside \
             `io!`, and it stalls every task on that worker; move it out of the `io!` block"
        )
    } else {
        format!(
            "blocking-first: `{function}` ({file}:{line}) held a blocking thread and a slot of \
             limit `{limit}` for {took:?} in one stretch of blocking code (threshold \
             {threshold:?}); if that is a slow query or a lock held long, shorten it, or give \
             the function a limit of its own"
        )
    };
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "blocking_first::detect",
        function,
        file,
        line,
        detector = if kind == Kind::Io { "io_poll" } else { "stretch" },
        took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        threshold_us = u64::try_from(threshold.as_micros()).unwrap_or(u64::MAX),
        "{message}"
    );
    #[cfg(not(feature = "tracing"))]
    eprintln!("{message}");
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "blocking_first_detector_warnings_total",
        "function" => function,
        "detector" => if kind == Kind::Io { "io_poll" } else { "stretch" },
    )
    .increment(1);
}

/// A stretch of `site` ended, at an `io!` region or an `.await`, while the body held `held`
/// connections of `blocking_first::pool` (only a diesel one can be held there: the others are not
/// `Send`). Always on (the check is one load per stretch that ends unfinished); said once per
/// function.
#[cold]
pub(crate) fn held_connection(site: &Site, limit: &str, held: usize) {
    if site.warned[2].swap(1, Ordering::Relaxed) != 0 {
        return;
    }
    stats::CONNECTION_WARNINGS.fetch_add(1, Ordering::Relaxed);
    let (function, file, line) = (site.function, site.file, site.line);
    let message = format!(
        "`{function}` ({file}:{line}) left its blocking code, at an `io!` region or an `.await` \
         that suspended it, with {held} connection(s) of `blocking_first::pool` taken in it and \
         not given back (held across it, moved elsewhere, or leaked): while it waits, its slot of \
         limit `{limit}` serves another body, which may then wait for a connection until r2d2's \
         timeout. End the connection's scope before the `io!` or `.await` (use it in one \
         statement, in a block, or in `Pool::with`) and take a new one after (logged once per \
         function)"
    );
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "blocking_first::pool", function, file, line, limit, held, "{message}");
    #[cfg(not(feature = "tracing"))]
    eprintln!("WARN blocking_first::pool: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_variable() {
        assert_eq!(Detectors::parse("off"), Ok(None));
        assert_eq!(Detectors::parse("1"), Ok(Some(Detectors::default())));
        assert_eq!(
            Detectors::parse("io_poll=500us, stretch=off,interval=2.5s"),
            Ok(Some(Detectors {
                io_poll: Some(Duration::from_micros(500)),
                stretch: None,
                interval: Duration::from_millis(2500),
            }))
        );
        assert!(Detectors::parse("io_poll=5 parsecs").is_err());
        assert!(Detectors::parse("colour=2ms").is_err());
        assert!(Detectors::parse("io_poll").is_err());
    }
}
