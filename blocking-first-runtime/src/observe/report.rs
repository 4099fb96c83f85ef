//! What happens when a body ends: its split goes to tracing and to the metrics facade.

use crate::record::Record;
#[cfg(feature = "metrics")]
use crate::record::{Handles, SiteMetrics};
use crate::span::Span;

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Panicked,
    /// Its future was dropped before it completed.
    Cancelled,
}

impl Outcome {
    #[cfg_attr(not(any(feature = "tracing", feature = "metrics")), allow(dead_code))]
    fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Panicked => "panicked",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Reports a body that ended (`now`: for a body still running somewhere, cancelled, the time up
/// to which its current segment counts).
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(crate) fn report(record: &Record, outcome: Outcome, span: &Span, now: Option<u64>) {
    // Nothing to compute when no subscriber wants `DEBUG` and there are no metrics.
    #[cfg(feature = "tracing")]
    let traced = tracing::level_filters::LevelFilter::current()
        >= tracing::level_filters::LevelFilter::DEBUG;
    #[cfg(not(feature = "tracing"))]
    let traced = false;
    let timing = record.timing.get();
    if !record.is_on() || !(traced || cfg!(feature = "metrics") || timing.is_some()) {
        return;
    }
    let split = record.split(now);
    if let Some(timing) = timing {
        timing.add(&split);
    }
    // How long a cancelled body's blocking code ran for nobody (0 if it stopped at once).
    let after_cancel = record.after_cancel();
    #[cfg(feature = "tracing")]
    {
        let us = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        tracing::debug!(
            target: "blocking_first::split",
            parent: span,
            function = record.site.function,
            file = record.site.file,
            line = record.site.line,
            limit = record.limit.name(),
            // The limit's capacity as the body ended (an adaptive limit's moves; 0: unbounded).
            capacity = record.limit.capacity().unwrap_or(0),
            outcome = outcome.name(),
            total_us = us(split.total()),
            slot_wait_us = us(split.slot_wait),
            pool_queue_us = us(split.pool_queue),
            blocking_us = us(split.blocking),
            io_us = us(split.io),
            parked_us = us(split.parked),
            hops = split.hops,
            after_cancel_us = us(after_cancel),
            segments = %record.segments(now),
            "body {}", outcome.name(),
        );
    }
    #[cfg(feature = "metrics")]
    metrics_of(record, outcome, &split, after_cancel);
    #[cfg(not(feature = "metrics"))]
    let _ = after_cancel;
}

#[cfg(feature = "metrics")]
const REFRESH: u64 = 1_000_000_000;

#[cfg(feature = "metrics")]
impl SiteMetrics {
    /// Runs `use_them` with the function's handles, looked up again if they are a second old.
    fn with(&self, record: &Record, now: u64, use_them: impl FnOnce(&Handles)) {
        let read = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, handles)) = read.as_ref() {
            if now.saturating_sub(*at) < REFRESH {
                return use_them(handles);
            }
        }
        drop(read);
        let handles = Handles::look_up(record);
        use_them(&handles);
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((now, handles));
    }
}

#[cfg(feature = "metrics")]
impl Handles {
    fn look_up(record: &Record) -> Handles {
        let function = record.site.function;
        let limit = record.limit.name();
        describe();
        Handles {
            body: Default::default(),
            segments: Default::default(),
            after_cancel: std::sync::OnceLock::new(),
            hops: metrics::counter!(
                "blocking_first_hops_total", "function" => function, "limit" => limit,
            ),
            in_use: metrics::gauge!("blocking_first_limit_in_use", "limit" => limit),
            waiting: metrics::gauge!("blocking_first_limit_waiting", "limit" => limit),
        }
    }
}

#[cfg(feature = "metrics")]
fn metrics_of(
    record: &Record,
    outcome: Outcome,
    split: &crate::record::Split,
    after_cancel: std::time::Duration,
) {
    use crate::record::Kind;

    let function = record.site.function;
    let limit = record.limit.name();
    let now = record.last_move();
    record.site.metrics.with(record, now, |handles| {
        handles.body[outcome as usize]
            .get_or_init(|| {
                metrics::histogram!(
                    "blocking_first_body_seconds",
                    "function" => function, "limit" => limit, "outcome" => outcome.name(),
                )
            })
            .record(split.total().as_secs_f64());
        // Only the kinds the body spent time in: a histogram's count is how many bodies did.
        for (kind, histogram) in Kind::ALL.into_iter().zip(&handles.segments) {
            let time = split.get(kind);
            if !time.is_zero() {
                histogram
                    .get_or_init(|| {
                        metrics::histogram!(
                            "blocking_first_segment_seconds",
                            "function" => function, "limit" => limit, "segment" => kind.name(),
                        )
                    })
                    .record(time.as_secs_f64());
            }
        }
        if outcome == Outcome::Cancelled {
            handles
                .after_cancel
                .get_or_init(|| {
                    metrics::histogram!(
                        "blocking_first_after_cancel_seconds",
                        "function" => function, "limit" => limit,
                    )
                })
                .record(after_cancel.as_secs_f64());
        }
        handles.hops.increment(u64::from(split.hops));
        // Sampled as each body ends. usize -> f64: exact below 2^53.
        #[allow(clippy::cast_precision_loss)]
        {
            handles.in_use.set(record.limit.slots.in_use() as f64);
            handles.waiting.set(record.limit.slots.waiting() as f64);
        }
    });
}

/// Sets `limit`'s gauges to its values now.
#[cfg(feature = "metrics")]
pub(crate) fn gauges_of(limit: &'static crate::limit::Limit) {
    let stats = limit.stats();
    let name = stats.name;
    // usize -> f64: exact below 2^53.
    #[allow(clippy::cast_precision_loss)]
    {
        metrics::gauge!("blocking_first_limit_in_use", "limit" => name).set(stats.in_use as f64);
        metrics::gauge!("blocking_first_limit_waiting", "limit" => name).set(stats.waiting as f64);
        metrics::gauge!("blocking_first_limit_loops", "limit" => name).set(stats.loops as f64);
        if let Some(capacity) = stats.capacity {
            metrics::gauge!("blocking_first_limit_capacity", "limit" => name).set(capacity as f64);
        }
    }
}

/// The metrics' descriptions and units (`# HELP` lines), given to the recorder with each
/// look-up of handles.
#[cfg(feature = "metrics")]
fn describe() {
    use metrics::Unit;

    metrics::describe_histogram!(
        "blocking_first_body_seconds",
        Unit::Seconds,
        "Wall time of each #[blocking_first] body, from its first move to its end"
    );
    metrics::describe_histogram!(
        "blocking_first_segment_seconds",
        Unit::Seconds,
        "Time of each body in each kind (slot_wait, pool_queue, blocking, io, parked), for the \
         bodies that spent time in it"
    );
    metrics::describe_histogram!(
        "blocking_first_after_cancel_seconds",
        Unit::Seconds,
        "How long each cancelled body ran after its caller let go of it (0: it stopped at once; \
         see blocking_first::is_cancelled)"
    );
    metrics::describe_counter!(
        "blocking_first_hops_total",
        "Moves of bodies onto a blocking thread"
    );
    metrics::describe_gauge!(
        "blocking_first_limit_in_use",
        "Slots of the limit in use (sampled as bodies end, and by observe::record_gauges)"
    );
    metrics::describe_gauge!(
        "blocking_first_limit_waiting",
        "Jobs queued for a slot of the limit (sampled as bodies end, and by record_gauges)"
    );
    metrics::describe_gauge!(
        "blocking_first_limit_loops",
        "Blocking loops (threads) of the limit alive (set by observe::record_gauges)"
    );
    metrics::describe_gauge!("blocking_first_limit_capacity", "The limit's cap");
    metrics::describe_counter!(
        "blocking_first_shed_total",
        "Requests turned away because the limit's queue was full"
    );
    metrics::describe_counter!(
        "blocking_first_detector_warnings_total",
        "Warnings of the detectors of blocking code inside io! and of long stretches"
    );
}
