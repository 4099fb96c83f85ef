//! The caller's tracing span is current in a body's blocking code, its io code and its parallel
//! branches, on every thread. (Own test binary: it installs the process-wide subscriber.)

mod common;

use std::sync::Once;

use blocking_first::blocking_first;
use common::*;
use tracing::{Instrument, Span, span::Id};

fn install_subscriber() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry()).unwrap();
    });
}

fn current() -> Option<Id> {
    Span::current().id()
}

#[blocking_first]
async fn spans_seen() -> Vec<Option<Id>> {
    let mut seen = vec![current()];
    assert_blocking_thread();
    seen.push(io! {
        suspend().await;
        let on_worker = current();
        on_worker
    });
    suspend().await;
    seen.push(current());
    let (a, b) = parallel! { current(), current() };
    seen.extend([a, b]);
    seen
}

/// Unbounded, so that a loop is always free for the branch below (the global limit adapts from
/// its floor, and a branch that finds no slot runs on its caller's thread).
static WIDE: blocking_first::limit::Limit = blocking_first::limit::Limit::unbounded("tracing-wide");

/// A branch that surely runs on another loop (the caller's own branch sleeps first), as the
/// span's one chance to be lost.
#[blocking_first(limit = WIDE)]
async fn span_in_a_dispatched_branch() -> (Option<Id>, bool) {
    let caller = std::thread::current().id();
    let ((span, thread), ()) = parallel! {
        (current(), std::thread::current().id()),
        std::thread::sleep(std::time::Duration::from_millis(50)),
    };
    (span, thread != caller)
}

// `#[tracing::instrument]` *above* `#[blocking_first]` is a compile error with a fix-it message:
// see ui/tests/ui/fail/instrument_above.rs.
#[blocking_first]
#[tracing::instrument(name = "instrumented")]
async fn instrumented_outer(id: u32) -> (Option<Id>, Option<Id>, &'static str) {
    let name = Span::current().metadata().map_or("", |m| m.name());
    let blocking = current();
    let in_io = io! {
        suspend().await;
        let seen = current();
        seen
    };
    (blocking, in_io, name)
}

#[test]
fn the_callers_span_is_current_in_every_part_of_the_body() {
    install_subscriber();
    on_both_flavors(|| async {
        let span = tracing::info_span!("request");
        let expected = span.id();
        assert!(expected.is_some());
        let seen = spans_seen().instrument(span).await;
        assert_eq!(seen, vec![expected; 5]);

        let span = tracing::info_span!("request");
        let expected = span.id();
        let (seen, elsewhere) = span_in_a_dispatched_branch().instrument(span).await;
        assert!(elsewhere, "the branch ran on another thread");
        assert_eq!(seen, expected, "the span in a branch on another loop");
    });
}

#[test]
fn blocking_first_above_tracing_instrument_runs_the_whole_body_in_the_span() {
    install_subscriber();
    on_both_flavors(|| async {
        let (blocking, in_io, name) = instrumented_outer(7).await;
        assert_eq!(name, "instrumented");
        assert!(blocking.is_some());
        assert_eq!(blocking, in_io);
    });
}
