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
}

static EVENTS: Mutex<Vec<Captured>> = Mutex::new(Vec::new());

struct Capture;

/// Records an event's fields as text.
pub struct Fields<'a>(pub &'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if !target.starts_with("blocking_first") {
            return;
        }
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let span = ctx.event_span(event).map(|span| span.name().to_string());
        EVENTS.lock().unwrap().push(Captured {
            target: target.to_string(),
            level: *event.metadata().level(),
            fields,
            span,
        });
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
        .unwrap()
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
