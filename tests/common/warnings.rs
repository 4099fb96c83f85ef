//! A tracing subscriber that keeps every `WARN` event with its fields, for the tests of the
//! warnings users are meant to see (a pool used wrongly, a route that blocks a worker).

use std::collections::BTreeMap;
use std::sync::{Mutex, Once};

use tracing_subscriber::layer::{Context, SubscriberExt};

/// A WARN event with its fields.
#[derive(Debug, Clone)]
pub struct Warning {
    pub target: String,
    pub fields: BTreeMap<String, String>,
}

pub static WARNINGS: Mutex<Vec<Warning>> = Mutex::new(Vec::new());

struct CaptureWarnings;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() != tracing::Level::WARN {
            return;
        }
        struct Fields(BTreeMap<String, String>);
        impl tracing::field::Visit for Fields {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.insert(field.name().into(), value.into());
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.insert(field.name().into(), format!("{value:?}"));
            }
        }
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        WARNINGS.lock().unwrap().push(Warning {
            target: event.metadata().target().into(),
            fields: fields.0,
        });
    }
}

/// Installs the process-wide subscriber that keeps the warnings (once per process).
pub fn install_subscriber() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(CaptureWarnings);
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

/// The warnings at `target`.
pub fn at(target: &str) -> Vec<Warning> {
    WARNINGS
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.target == target)
        .cloned()
        .collect()
}
