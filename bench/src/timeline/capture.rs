//! Where each request's time goes, as the two variants of the timeline record it: (a) from the
//! runtime's `blocking_first::split` events, caught by a `tracing` layer; (b) from clock reads
//! in the handler itself ([`Clock`]).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The target of the request span the timeline's router opens around (a)'s handler.
pub const SPAN_TARGET: &str = "blocking_first_bench::timeline";
/// The target of the runtime's split events.
const SPLIT_TARGET: &str = "blocking_first::split";

/// What a stretch of a request's time is spent as: the runtime's five kinds, and the time on the
/// runtime outside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    SlotWait,
    PoolQueue,
    Blocking,
    Io,
    Parked,
    /// On the runtime between the others: (b) resuming after a `spawn_blocking`, (a) the body's
    /// end on its loop until its handler returns.
    Runtime,
}

impl Part {
    pub const ALL: [Part; 6] = [
        Part::SlotWait,
        Part::PoolQueue,
        Part::Blocking,
        Part::Io,
        Part::Parked,
        Part::Runtime,
    ];

    /// The runtime's name for it (`slot_wait` ...), and `runtime`.
    pub fn name(self) -> &'static str {
        match self {
            Part::SlotWait => "slot_wait",
            Part::PoolQueue => "pool_queue",
            Part::Blocking => "blocking",
            Part::Io => "io",
            Part::Parked => "parked",
            Part::Runtime => "runtime",
        }
    }

    fn parse(name: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|part| part.name() == name)
    }
}

/// One request: when its handler started, and its time as consecutive parts.
#[derive(Debug, Clone)]
pub struct Request {
    pub start: Instant,
    /// `(part, from, length)`, `from` since `start`, in order.
    pub parts: Vec<(Part, Duration, Duration)>,
}

impl Request {
    pub fn total(&self) -> Duration {
        self.parts.iter().map(|&(_, _, length)| length).sum()
    }

    /// The time spent as `part`.
    pub fn sum(&self, part: Part) -> Duration {
        let of = |&&(p, _, _): &&(Part, Duration, Duration)| p == part;
        self.parts
            .iter()
            .filter(of)
            .map(|&(_, _, length)| length)
            .sum()
    }
}

/// The requests recorded so far (shared by the handlers and the timeline).
pub type Trace = Mutex<Vec<Request>>;

pub fn take(trace: &Trace) -> Vec<Request> {
    std::mem::take(&mut *trace.lock().unwrap_or_else(PoisonError::into_inner))
}

/// (b)'s clock reads: each part from one read to the next; gaps between them are runtime.
#[derive(Debug)]
pub struct Clock {
    start: Instant,
    cursor: Instant,
    parts: Vec<(Part, Duration, Duration)>,
}

impl Clock {
    pub fn start() -> Clock {
        let now = Instant::now();
        Clock {
            start: now,
            cursor: now,
            parts: Vec::with_capacity(12),
        }
    }

    /// `part` lasted from `from` to `to` (clamped to what is already recorded).
    pub fn mark(&mut self, part: Part, from: Instant, to: Instant) {
        let from = from.max(self.cursor);
        let to = to.max(from);
        if from > self.cursor {
            self.push(Part::Runtime, self.cursor, from);
        }
        self.push(part, from, to);
        self.cursor = to;
    }

    fn push(&mut self, part: Part, from: Instant, to: Instant) {
        self.parts.push((part, from - self.start, to - from));
    }

    /// The handler returns now: the time since the last part is runtime.
    pub fn finish(self) -> Request {
        self.finish_at(Instant::now())
    }

    fn finish_at(mut self, end: Instant) -> Request {
        if end > self.cursor {
            self.mark(Part::Runtime, self.cursor, end);
        }
        Request {
            start: self.start,
            parts: self.parts,
        }
    }
}

/// One split event, as the layer caught it.
#[derive(Debug, Default, Clone)]
pub struct Split {
    /// When the request span (around the handler) was opened.
    pub span_start: Option<Instant>,
    /// When the event arrived.
    pub arrived: Option<Instant>,
    pub outcome: String,
    pub segments: String,
    /// The event's `*_us` fields, in [`Part::ALL`] order (runtime: unused), and `total_us`.
    pub us: [u64; 5],
    pub total_us: u64,
    pub hops: u64,
}

impl Split {
    /// The request as the timeline draws it: the segments from the span's start, gaps and the
    /// tail up to the event's arrival as runtime. Checks the segments against the totals and
    /// appends what looks wrong to `odd`.
    pub fn request(&self, odd: &mut Vec<String>) -> Option<Request> {
        let (start, arrived) = (self.span_start?, self.arrived?);
        let mut clock = Clock {
            start,
            cursor: start,
            parts: Vec::new(),
        };
        let ms = |text: &str| {
            text.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
        };
        let mut sums = [0.0f64; 5];
        let mut previous_end = 0.0f64;
        for token in self.segments.split_whitespace() {
            if token == "..." {
                note(
                    odd,
                    self,
                    "more than 16 transitions (segments end with ...)",
                );
                continue;
            }
            let parsed = token.split_once('=').and_then(|(kind, span)| {
                let (from, length) = span.split_once('+')?;
                Some((Part::parse(kind)?, ms(from)?, ms(length)?))
            });
            let Some((part, from, length)) = parsed else {
                note(odd, self, &format!("unparsable segment {token:?}"));
                continue;
            };
            if (from - previous_end).abs() > 0.002 {
                note(
                    odd,
                    self,
                    &format!("segment {token} does not start where the last ended"),
                );
            }
            previous_end = from + length;
            sums[part as usize] += length;
            let at = |v: f64| start + Duration::from_secs_f64(v / 1e3);
            clock.mark(part, at(from), at(from + length));
        }
        for (at, part) in Part::ALL[..5].iter().enumerate() {
            // Segments are printed to the µs (rounded), the totals in whole µs (truncated).
            let drift = (sums[at] * 1e3 - self.us[at] as f64).abs();
            if drift > 2.0 + 0.5 * self.segments.split_whitespace().count() as f64 {
                note(
                    odd,
                    self,
                    &format!(
                        "{}: segments add up to {:.0} µs, {}_us = {}",
                        part.name(),
                        sums[at] * 1e3,
                        part.name(),
                        self.us[at]
                    ),
                );
            }
        }
        let stretches = self.segments.matches("blocking=").count() as u64;
        if self.hops != stretches && !self.segments.ends_with("...") {
            note(
                odd,
                self,
                &format!("hops = {}, {stretches} blocking segments", self.hops),
            );
        }
        let end_us = previous_end * 1e3;
        if (end_us - self.total_us as f64).abs() > 2.0 {
            note(
                odd,
                self,
                &format!(
                    "total_us = {}, segments end at {end_us:.0} µs",
                    self.total_us
                ),
            );
        }
        if self.outcome != "completed" {
            note(odd, self, &format!("outcome {}", self.outcome));
        }
        Some(clock.finish_at(arrived))
    }
}

fn note(odd: &mut Vec<String>, split: &Split, what: &str) {
    let mut line = String::new();
    let _ = write!(line, "{what} (segments: {:?})", split.segments);
    odd.push(line);
}

/// The timeline's `tracing` layer: keeps the split events of bodies run inside a request span,
/// with that span's start and the event's arrival. Enables nothing else (the split events are
/// `DEBUG`; no other target, no other level).
#[derive(Debug, Clone, Default)]
pub struct Capture {
    pub splits: Arc<Mutex<Vec<Split>>>,
}

/// The split events caught so far.
pub fn take_splits(capture: &Capture) -> Vec<Split> {
    std::mem::take(
        &mut *capture
            .splits
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    )
}

fn wanted(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    (metadata.is_event() && target == SPLIT_TARGET) || (metadata.is_span() && target == SPAN_TARGET)
}

/// The request span's start, in its extensions.
struct Opened(Instant);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if wanted(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        wanted(metadata)
    }

    fn on_new_span(&self, _: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened(Instant::now()));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let arrived = Instant::now();
        if event.metadata().target() != SPLIT_TARGET {
            return;
        }
        let mut split = Split {
            arrived: Some(arrived),
            span_start: ctx
                .event_span(event)
                .and_then(|span| span.extensions().get::<Opened>().map(|opened| opened.0)),
            ..Split::default()
        };
        event.record(&mut Fields(&mut split));
        self.splits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(split);
    }
}

struct Fields<'a>(&'a mut Split);

impl Visit for Fields<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        let name = field.name();
        if name == "total_us" {
            self.0.total_us = value;
        } else if name == "hops" {
            self.0.hops = value;
        } else if let Some(part) = name.strip_suffix("_us").and_then(Part::parse) {
            if let Some(slot) = self.0.us.get_mut(part as usize) {
                *slot = value;
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "outcome" {
            self.0.outcome = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            // `segments = %...`: a Display value, whose Debug is its Display.
            "segments" => self.0.segments = format!("{value:?}"),
            "outcome" => self.0.outcome = format!("{value:?}").trim_matches('"').to_string(),
            _ => {}
        }
    }
}
