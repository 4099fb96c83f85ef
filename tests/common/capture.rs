//! A tracing subscriber that keeps the runtime's own events (targets `blocking_first::*`), with
//! their fields as text and the span they were recorded in.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, Once};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One captured event.
#[derive(Debug, Clone)]
pub struct Captured {
    pub target: String,
    pub level: Level,
    pub fields: BTreeMap<String, String>,
    /// The name of the span it was recorded in, if any.
    pub span: Option<String>,
}

impl Captured {
    /// A field's value as text (panics if absent).
    pub fn get(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("event has no field `{name}`: {self:?}"))
    }

    /// A field's value as a number (panics if absent or not one).
    pub fn num(&self, name: &str) -> u64 {
        self.get(name)
            .parse()
            .unwrap_or_else(|_| panic!("field `{name}` is not a number: {self:?}"))
    }

    /// A split event's five kinds added up, in µs.
    pub fn parts(&self) -> u64 {
        [
            "slot_wait_us",
            "pool_queue_us",
            "blocking_us",
            "io_us",
            "parked_us",
        ]
        .iter()
        .map(|name| self.num(name))
        .sum()
    }

    /// A split event's `segments` field as (kind, start ms, length ms).
    pub fn segments(&self) -> Vec<(String, f64, f64)> {
        self.get("segments")
            .split(' ')
            .filter(|segment| *segment != "...")
            .map(|segment| {
                let (kind, times) = segment.split_once('=').expect("kind=start+length");
                let (start, length) = times.split_once('+').expect("start+length");
                (
                    kind.to_string(),
                    start.parse().unwrap(),
                    length.parse().unwrap(),
                )
            })
            .collect()
    }
}

/// Whole microseconds.
pub fn us(d: std::time::Duration) -> u64 {
    d.as_micros() as u64
}

static EVENTS: Mutex<Vec<Captured>> = Mutex::new(Vec::new());

struct Capture;

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

/// The runtime's own event as text, with the span it was recorded in (`None` for other events).
pub fn read<S: Subscriber + for<'a> LookupSpan<'a>>(
    event: &Event<'_>,
    ctx: &Context<'_, S>,
) -> Option<Captured> {
    let target = event.metadata().target();
    if !target.starts_with("blocking_first") {
        return None;
    }
    let mut fields = BTreeMap::new();
    event.record(&mut Fields(&mut fields));
    Some(Captured {
        target: target.to_string(),
        level: *event.metadata().level(),
        fields,
        span: ctx.event_span(event).map(|span| span.name().to_string()),
    })
}

/// Keeps an event for [`events`] (for a test's own layer).
pub fn keep(event: Captured) {
    EVENTS.lock().unwrap_or_else(|e| e.into_inner()).push(event);
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if let Some(event) = read(event, &ctx) {
            keep(event);
        }
    }
}

/// Installs the capturing subscriber as the process's default (once).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(Capture);
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

/// The captured events at `target` whose field `function` ends with `function`.
pub fn events(target: &str, function: &str) -> Vec<Captured> {
    EVENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|event| {
            event.target == target
                && event
                    .fields
                    .get("function")
                    .is_some_and(|f| f.ends_with(function))
        })
        .cloned()
        .collect()
}
