//! The endpoints for whoever runs the service: `/status` (the counters now), `/metrics` (the
//! Prometheus scrape) and `/debug/bodies` (the handler bodies in flight). None of them blocks,
//! so they are plain async handlers, and all of them serialize the library's own structs.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use blocking_first::limit::LimitStats;
use blocking_first::observe::{self, BodySnapshot};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

use crate::app::App;
use crate::db::DB;

/// Histogram buckets for the runtime's `*_seconds` metrics, from half a millisecond (a quick
/// query) to the preview service's timeouts.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Installs the process's Prometheus recorder (once: a second call fails) and returns the
/// handle `/metrics` renders. Without a scrape listener of its own, the caller runs its upkeep.
pub fn install_metrics() -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new()
        .set_buckets(&BUCKETS)?
        .install_recorder()
}

/// What `/status` answers.
#[derive(Debug, Serialize)]
pub struct Status {
    /// `blocking_first::stats()`: the process-wide counters.
    pub blocking: blocking_first::Stats,
    /// The `DB` cap's counters.
    pub cap: LimitStats,
    pub pool: PoolStatus,
    /// Where previews are asked from.
    pub upstream: String,
}

/// The connection pool now.
#[derive(Debug, Serialize)]
pub struct PoolStatus {
    pub max_size: u32,
    pub connections: u32,
    pub idle: u32,
}

/// `GET /status`: the blocking-concurrency counters, the cap in force and the pool.
pub async fn status(State(app): State<App>) -> Json<Status> {
    let pool = app.db.state();
    Json(Status {
        blocking: blocking_first::stats(),
        cap: DB.stats(),
        pool: PoolStatus {
            max_size: app.db.max_size(),
            connections: pool.connections,
            idle: pool.idle_connections,
        },
        upstream: app.previews.endpoint().to_string(),
    })
}

/// `GET /metrics`: every metric of the process in Prometheus' text format, among them each
/// handler's time split (`blocking_first_body_seconds`, `blocking_first_segment_seconds`), its
/// hops and the `db` cap's use (its gauges set right now, so an idle service shows 0 in use).
pub async fn metrics(State(app): State<App>) -> impl IntoResponse {
    observe::record_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
}

/// What `/debug/bodies` answers.
#[derive(Debug, Serialize)]
pub struct Bodies {
    /// Oldest first.
    pub bodies: Vec<BodySnapshot>,
}

/// `GET /debug/bodies`: every handler body in flight, where it is in the source, what it is
/// doing now (`slot_wait`, `pool_queue`, `blocking`, `io`, `parked`) and its time so far. For
/// operators: it names source files, so keep it off a public listener.
pub async fn bodies() -> Json<Bodies> {
    Json(Bodies {
        bodies: observe::in_flight(),
    })
}
