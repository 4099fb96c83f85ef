//! The timeline mode (`--timeline`): where each request's time goes, request by request, in
//! variant (a) `#[blocking_first(limit = DB)]` and variant (b) `spawn_blocking` per call, same
//! handler, same database, at a client concurrency above the cap.
//!
//! Each variant runs on a fresh server at `--timeline-clients` closed-loop clients for
//! [`WARM_UP`] and then [`WINDOW`]; the picture draws the first `--timeline-rows` requests whose
//! handler started after the warm-up, one row each, from its start, coloured by kind of time:
//! - (a): the runtime's own split, one `DEBUG` event at target `blocking_first::split` per body,
//!   caught by a small `tracing` layer ([`capture::Capture`], installed only in this mode, enabling
//!   nothing else). A middleware opens a span around the handler; the layer notes when it opened
//!   (the request's start) and when the body's event arrived in it. The event's `segments` are
//!   offsets from the body's first move, placed from the span's start; the time from the body's
//!   end (on its loop) to the event (in the handler, back on the runtime) is drawn as runtime.
//! - (b): clock reads in the handler ([`Clock`]): before each `spawn_blocking`, as its closure
//!   starts (pool queue), when the r2d2 checkout got its connection (slot wait: the pool is the
//!   cap), as the closure ends (blocking), around the upstream call (io); the gaps between them
//!   (the task resuming on the runtime) are runtime.
//!
//! The medians per kind, the run's setup and the command go to `timeline.md` next to the SVG.

mod capture;
mod report;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

use crate::load::quantile;
use crate::report::Environment;
use crate::variants::{App, Variant};
use crate::{Setup, load};
use capture::{Capture, SPAN_TARGET};
pub use capture::{Clock, Part, Request, Trace};

/// Load before the window opens: connections open, loops and threads started, queues settled.
pub const WARM_UP: Duration = Duration::from_secs(1);
/// Load after the warm-up; the medians count the requests that started in it.
pub const WINDOW: Duration = Duration::from_millis(800);

/// One variant's run.
pub struct Panel {
    pub variant: Variant,
    /// The requests whose handler started in the window, by start.
    pub all: Vec<Request>,
    /// The window's first `--timeline-rows`.
    pub drawn: Vec<Request>,
    /// When the window opened: the x axis's zero.
    pub window: Instant,
    /// Responses the load client got in the whole run, and its errors.
    pub ok: usize,
    pub errors: usize,
    /// Peaks over the run: threads inside the handler's blocking sections, OS threads.
    pub blocking_peak: usize,
    pub os_threads_peak: usize,
}

impl Panel {
    /// The `q` quantile of each request's time as `part`, over `requests`.
    pub fn quantile(requests: &[Request], part: Option<Part>, q: f64) -> Duration {
        let mut values: Vec<Duration> = requests
            .iter()
            .map(|r| part.map_or_else(|| r.total(), |part| r.sum(part)))
            .collect();
        values.sort_unstable();
        quantile(&values, q)
    }
}

pub fn run(setup: &Setup<'_>, environment: Environment) -> Result<(), String> {
    let args = setup.args;
    let started = Instant::now();
    let capture = Capture::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(capture.clone()))
        .map_err(|e| format!("installing the timeline's tracing layer: {e}"))?;
    let mut panels = Vec::new();
    let mut odd = Vec::new();
    for variant in [Variant::BlockingFirst, Variant::SpawnBlockingPerCall] {
        let panel = measure(setup, variant, &capture, &mut odd)?;
        eprintln!("{}", line(&panel));
        if panel.drawn.len() < args.timeline_rows {
            return Err(format!(
                "({}) only {} requests started in the window, {} to draw",
                variant.letter(),
                panel.drawn.len(),
                args.timeline_rows
            ));
        }
        panels.push(panel);
    }
    for note in odd.iter().take(10) {
        eprintln!("odd split event: {note}");
    }
    let environment = environment.finish(setup.db.kind(), started.elapsed());
    let markdown = report::markdown(args, &environment, &panels, &odd);
    println!("\n{markdown}");
    let Some(out) = args.out_or("docs/bench/timeline") else {
        return Ok(());
    };
    crate::write_report(&out, &markdown, |svg| {
        report::plot(svg, args, &environment, &panels).map_err(|e| format!("plot: {e}"))
    })
}

/// Opens the span around the handler whose start and split events the layer keeps.
async fn in_span(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let span = tracing::debug_span!(target: SPAN_TARGET, "request");
    next.run(request).instrument(span).await
}

/// One variant on a fresh server under [`WARM_UP`] + [`WINDOW`] of closed-loop load.
fn measure(
    setup: &Setup<'_>,
    variant: Variant,
    capture: &Capture,
    odd: &mut Vec<String>,
) -> Result<Panel, String> {
    let args = setup.args;
    let trace = Arc::new(Trace::default());
    let mut app = App::new(setup.db.clone(), setup.upstream.addr, args.reads, args.rows);
    if variant == Variant::SpawnBlockingPerCall {
        app.timeline = Some(trace.clone());
    }
    let app = Arc::new(app);
    let router = variant
        .router(app.clone())
        .ok_or("the timeline's variants run on tokio")?;
    let router = match variant {
        Variant::BlockingFirst => router.layer(axum::middleware::from_fn(in_span)),
        _ => router,
    };
    let (listener, addr) = crate::listen(setup.client_runtime)?;
    let runtime = crate::serve_on_tokio(args, listener, router)?;
    setup.monitor.reset();
    capture::take_splits(capture);
    let began = Instant::now();
    let outcome = setup.client_runtime.block_on(load::run(
        format!("http://{addr}/"),
        args.timeline_clients,
        usize::MAX / 2,
        WARM_UP + WINDOW,
        args.rows,
    ));
    runtime.shutdown_timeout(Duration::from_secs(10));

    let mut requests = match variant {
        Variant::BlockingFirst => {
            let splits = capture::take_splits(capture);
            let unmatched = splits.iter().filter(|s| s.span_start.is_none()).count();
            if unmatched > 0 {
                odd.push(format!("{unmatched} split events outside a request span"));
            }
            let mut notes = Vec::new();
            let requests = splits
                .iter()
                .filter_map(|s| s.request(&mut notes))
                .collect();
            summarize(odd, notes, splits.len());
            requests
        }
        _ => capture::take(&trace),
    };
    requests.sort_by_key(|r| r.start);
    let window = began + WARM_UP;
    let all: Vec<Request> = requests
        .into_iter()
        .filter(|r| r.start >= window && r.start < window + WINDOW)
        .collect();
    let drawn = all.iter().take(args.timeline_rows).cloned().collect();
    let peaks = &setup.monitor.peaks;
    Ok(Panel {
        variant,
        all,
        drawn,
        window,
        ok: outcome.ok,
        errors: outcome.errors,
        blocking_peak: app.blocking.peak(),
        os_threads_peak: peaks.os_threads.load(Ordering::Acquire),
    })
}

/// Adds one line per kind of oddity in the split events (with a count and the first example).
fn summarize(odd: &mut Vec<String>, notes: Vec<String>, events: usize) {
    let mut kinds: Vec<(String, usize, String)> = Vec::new();
    for note in notes {
        let kind = note.split(" (segments").next().unwrap_or_default();
        let kind = kind.split(':').next().unwrap_or_default().to_string();
        match kinds.iter_mut().find(|(k, _, _)| *k == kind) {
            Some((_, count, _)) => *count += 1,
            None => kinds.push((kind, 1, note)),
        }
    }
    for (_, count, example) in kinds {
        odd.push(format!("{count} of {events} events: {example}"));
    }
}

fn line(panel: &Panel) -> String {
    let q = |part, q| ms(Panel::quantile(&panel.all, part, q));
    format!(
        "({}) {:<24} {} requests in the window, {} ok / {} errors in all; median total {:.1} ms, \
         slot wait {:.2} (p90 {:.2}), pool queue {:.3} (p90 {:.3}), blocking {:.1}, io {:.1}, \
         parked {:.2}, runtime {:.3} ms; threads in blocking code peak {}, OS threads peak {}",
        panel.variant.letter(),
        panel.variant.label(),
        panel.all.len(),
        panel.ok,
        panel.errors,
        q(None, 0.5),
        q(Some(Part::SlotWait), 0.5),
        q(Some(Part::SlotWait), 0.9),
        q(Some(Part::PoolQueue), 0.5),
        q(Some(Part::PoolQueue), 0.9),
        q(Some(Part::Blocking), 0.5),
        q(Some(Part::Io), 0.5),
        q(Some(Part::Parked), 0.5),
        q(Some(Part::Runtime), 0.5),
        panel.blocking_peak,
        panel.os_threads_peak,
    )
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
