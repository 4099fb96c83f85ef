//! What happens when a body ends: its split goes to tracing and to the metrics facade.

use super::Record;
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
    if !record.is_on() {
        return;
    }
    let split = record.split(now);
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
            outcome = outcome.name(),
            total_us = us(split.total()),
            slot_wait_us = us(split.slot_wait),
            pool_queue_us = us(split.pool_queue),
            blocking_us = us(split.blocking),
            io_us = us(split.io),
            parked_us = us(split.parked),
            hops = split.hops,
            segments = %record.segments(),
            "body {}", outcome.name(),
        );
    }
    #[cfg(feature = "metrics")]
    metrics_of(record, outcome, &split);
}

#[cfg(feature = "metrics")]
fn metrics_of(record: &Record, outcome: Outcome, split: &super::Split) {
    use super::Kind;

    let function = record.site.function;
    let limit = record.limit.name();
    metrics::histogram!(
        "blocking_first_body_seconds",
        "function" => function, "limit" => limit, "outcome" => outcome.name(),
    )
    .record(split.total().as_secs_f64());
    for kind in Kind::ALL {
        metrics::histogram!(
            "blocking_first_segment_seconds",
            "function" => function, "limit" => limit, "segment" => kind.name(),
        )
        .record(split.get(kind).as_secs_f64());
    }
    metrics::counter!("blocking_first_hops_total", "function" => function, "limit" => limit)
        .increment(u64::from(split.hops));
    let stats = record.limit.stats();
    // usize -> f64: exact below 2^53.
    #[allow(clippy::cast_precision_loss)]
    {
        metrics::gauge!("blocking_first_limit_in_use", "limit" => limit).set(stats.in_use as f64);
        metrics::gauge!("blocking_first_limit_waiting", "limit" => limit)
            .set(stats.waiting as f64);
        metrics::gauge!("blocking_first_limit_loops", "limit" => limit).set(stats.loops as f64);
        if let Some(capacity) = stats.capacity {
            metrics::gauge!("blocking_first_limit_capacity", "limit" => limit)
                .set(capacity as f64);
        }
    }
}
