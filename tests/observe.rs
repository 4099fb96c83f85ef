//! Each body's time split: what lands in which kind, that it adds up to the wall time, that it
//! reaches tracing inside the caller's span, and the bodies in flight caught in each state.
//! (Own test binary: it installs the process-wide subscriber.)

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use blocking_first::observe::{self, BodySnapshot, Kind};
use common::capture::{self, Captured, us};
use common::*;
use tokio::sync::oneshot;
use tracing::Instrument;

const MS: Duration = Duration::from_millis(1);

/// Tests that switch recording off, or count every body in flight, run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

static ONE: Limit = Limit::new("one", 1);

#[blocking_first(limit = ONE)]
async fn hold_the_slot(started: Arc<AtomicBool>, hold: Duration) {
    started.store(true, Ordering::SeqCst);
    std::thread::sleep(hold);
}

/// 40 ms blocking, 50 ms in `io!`, 30 ms parked on an `.await` outside regions, 20 ms blocking;
/// it queues first for the slot that `hold_the_slot` keeps for 60 ms.
#[blocking_first(limit = ONE)]
async fn known_sleeps() -> u32 {
    std::thread::sleep(40 * MS);
    io! { tokio::time::sleep(50 * MS).await };
    tokio::time::sleep(30 * MS).await;
    std::thread::sleep(20 * MS);
    7
}

fn the_event(function: &str) -> Captured {
    let events = capture::events("blocking_first::split", function);
    assert_eq!(events.len(), 1, "one split event per body: {events:?}");
    events.into_iter().next().unwrap()
}

/// The line of this file where `text` is.
fn line_of(text: &str) -> u64 {
    let source = include_str!("observe.rs");
    let at = source.find(text).expect("in this file");
    source[..at].lines().count() as u64 + 1
}

/// The segments, without the queue kinds: the order in which the body did things.
fn kinds_in_order(event: &Captured) -> Vec<String> {
    event
        .segments()
        .into_iter()
        .map(|(kind, _, _)| kind)
        .filter(|kind| !matches!(kind.as_str(), "slot_wait" | "pool_queue"))
        .collect()
}

#[test]
fn a_split_adds_up_to_the_wall_time_and_each_sleep_lands_in_its_kind() {
    capture::install();
    let _serial = serial();
    let rt = multi_thread();
    let (value, wall) = rt.block_on(async {
        let started = Arc::new(AtomicBool::new(false));
        let holder = tokio::spawn(hold_the_slot(started.clone(), 60 * MS));
        while !started.load(Ordering::SeqCst) {
            tokio::time::sleep(MS / 4).await;
        }
        let start = Instant::now();
        let value = known_sleeps()
            .instrument(tracing::info_span!("request"))
            .await;
        let wall = start.elapsed();
        holder.await.unwrap();
        (value, wall)
    });
    assert_eq!(value, 7);
    let event = the_event("::known_sleeps");
    assert_eq!(event.level, tracing::Level::DEBUG);
    assert_eq!(
        event.span.as_deref(),
        Some("request"),
        "recorded in the caller's span"
    );
    assert_eq!(event.get("limit"), "one");
    assert_eq!(event.get("outcome"), "completed");
    assert!(event.get("file").ends_with("observe.rs"), "{event:?}");
    let (slot_wait, pool_queue, blocking, io, parked, total) = (
        event.num("slot_wait_us"),
        event.num("pool_queue_us"),
        event.num("blocking_us"),
        event.num("io_us"),
        event.num("parked_us"),
        event.num("total_us"),
    );
    // Each kind holds its sleep, and not much more (a hop is tens of µs; 10 ms is slack for a
    // loaded machine).
    let around = |got: u64, slept: Duration, name: &str| {
        assert!(
            got >= us(slept) && got <= us(slept + 10 * MS),
            "{name}: {got} µs for a {slept:?} sleep; {event:?}"
        );
    };
    around(blocking, 60 * MS, "blocking");
    around(io, 50 * MS, "io");
    around(parked, 30 * MS, "parked");
    // It waited for the rest of the holder's 60 ms.
    assert!(
        slot_wait >= us(40 * MS) && slot_wait <= us(70 * MS),
        "slot wait {slot_wait} µs; {event:?}"
    );
    assert!(pool_queue < us(10 * MS), "{event:?}");
    // Whole microseconds each: the parts may round down by up to 1 µs each.
    let parts = event.parts();
    assert!(
        parts <= total && parts + 5 >= total,
        "{parts} µs of parts, {total} µs total"
    );
    // The split covers the caller's wall time, within 5%.
    let wall = us(wall);
    assert!(
        total <= wall && total * 100 >= wall * 95,
        "split {total} µs against {wall} µs of wall time"
    );
    // First move, back from `io!`, back from the parked `.await`.
    assert_eq!(
        event.num("line"),
        line_of("async fn known_sleeps") - 1,
        "the attribute's line"
    );
    assert_eq!(event.num("hops"), 3);
    assert_eq!(
        kinds_in_order(&event),
        ["blocking", "io", "blocking", "parked", "blocking"],
        "{event:?}"
    );
}

static HELD: Limit = Limit::new("held", 1);
/// Its own limit, so no idle loop of another test can take its job.
static FRESH: Limit = Limit::unbounded("fresh");

#[blocking_first(limit = HELD)]
async fn blocked_in_blocking_code(gate: Arc<Barrier>) {
    gate.wait(); // in
    gate.wait(); // out
}

#[blocking_first(limit = HELD)]
async fn waiting_for_the_slot() {}

#[blocking_first]
async fn waiting_in_io(wake: oneshot::Receiver<()>) {
    io! { wake.await.ok() };
}

#[blocking_first]
async fn parked_on_an_await(wake: oneshot::Receiver<()>) {
    wake.await.ok();
}

#[blocking_first(limit = FRESH)]
async fn queued_for_a_thread() {}

fn find(function: &str) -> Option<BodySnapshot> {
    observe::in_flight()
        .into_iter()
        .find(|body| body.function.ends_with(function))
}

/// Waits until `function` is in flight in `state`, and checks what the snapshot says of it.
fn caught(function: &str, state: Kind, limit: &str) -> BodySnapshot {
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        last = find(function).or(last);
        if let Some(body) = last.as_ref().filter(|body| body.state == state) {
            assert_eq!(body.limit, limit);
            assert!(body.file.ends_with("observe.rs"), "{body:?}");
            assert_eq!(
                u64::from(body.line),
                line_of(&format!("async fn {function}")) - 1
            );
            assert!(body.in_state <= body.age, "{body:?}");
            assert!(body.split.get(state) >= body.in_state, "{body:?}");
            return body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "`{function}` not seen in state {state}; last seen: {last:?}"
        );
        std::thread::sleep(MS);
    }
}

#[test]
fn in_flight_catches_a_body_in_each_state() {
    let _serial = serial();
    let rt = multi_thread();
    let gate = Arc::new(Barrier::new(2));
    let blocking = rt.spawn(blocked_in_blocking_code(gate.clone()));
    gate.wait();
    caught("blocked_in_blocking_code", Kind::Blocking, "held");
    let slot = rt.spawn(waiting_for_the_slot());
    caught("waiting_for_the_slot", Kind::SlotWait, "held");

    let (wake_io, io) = oneshot::channel();
    let in_io = rt.spawn(waiting_in_io(io));
    caught("waiting_in_io", Kind::Io, "global");
    let (wake_parked, parked) = oneshot::channel();
    let parked = rt.spawn(parked_on_an_await(parked));
    caught("parked_on_an_await", Kind::Parked, "global");

    // A runtime whose only blocking thread is taken: a new loop waits for it.
    let [_, small] = with_one_blocking_thread();
    let release = Arc::new(Barrier::new(2));
    let taken = small.spawn_blocking({
        let release = release.clone();
        move || release.wait()
    });
    let queued = small.spawn(queued_for_a_thread());
    let seen = caught("queued_for_a_thread", Kind::PoolQueue, "fresh");
    assert_eq!(seen.split.hops, 0);
    let mut ids: Vec<u64> = observe::in_flight().iter().map(|body| body.id).collect();
    let listed = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert!(
        listed >= 5 && ids.len() == listed,
        "one id per body: {ids:?}"
    );
    let limits: Vec<&str> = observe::limits().iter().map(|limit| limit.name()).collect();
    for name in ["global", "held", "fresh"] {
        assert!(limits.contains(&name), "{limits:?}");
    }

    // Let each go: each leaves the list.
    release.wait();
    small.block_on(async {
        taken.await.unwrap();
        queued.await.unwrap();
    });
    gate.wait();
    wake_io.send(()).unwrap();
    wake_parked.send(()).unwrap();
    rt.block_on(async {
        for task in [blocking, slot, in_io, parked] {
            task.await.unwrap();
        }
    });
    for function in [
        "blocked_in_blocking_code",
        "waiting_for_the_slot",
        "waiting_in_io",
        "parked_on_an_await",
        "queued_for_a_thread",
    ] {
        assert!(find(function).is_none(), "`{function}` still listed");
    }
}

#[blocking_first]
async fn sleeps_then_io(entered: Arc<AtomicBool>) {
    std::thread::sleep(5 * MS);
    io! {
        entered.store(true, Ordering::SeqCst);
        std::future::pending::<()>().await
    };
}

#[blocking_first]
async fn panics_in_blocking_code() {
    std::thread::sleep(MS);
    panic!("on purpose");
}

#[blocking_first]
async fn panics_in_io() {
    io! {
        suspend().await;
        panic!("on purpose")
    };
}

/// A dropped body is reported as cancelled, with the time up to its drop; a panicking one as
/// panicked, wherever it panicked. Neither stays in flight.
#[test]
fn cancelled_and_panicked_bodies_are_reported_and_leave_the_list() {
    capture::install();
    let _serial = serial();
    let rt = multi_thread();
    rt.block_on(async {
        let entered = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(sleeps_then_io(entered.clone()));
        while !entered.load(Ordering::SeqCst) {
            tokio::time::sleep(MS).await;
        }
        tokio::time::sleep(10 * MS).await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert!(tokio::spawn(panics_in_blocking_code()).await.is_err());
        assert!(tokio::spawn(panics_in_io()).await.is_err());
    });
    let cancelled = the_event("::sleeps_then_io");
    assert_eq!(cancelled.get("outcome"), "cancelled");
    assert!(cancelled.num("blocking_us") >= us(5 * MS), "{cancelled:?}");
    assert!(cancelled.num("io_us") >= us(10 * MS), "{cancelled:?}");
    // Its last segment (in `io!`) runs up to the drop, as the totals do.
    let segments = cancelled.segments();
    let (kind, _, length) = segments.last().unwrap();
    assert!(kind == "io" && *length >= 10.0, "{segments:?}");
    assert_eq!(
        the_event("::panics_in_blocking_code").get("outcome"),
        "panicked"
    );
    assert_eq!(the_event("::panics_in_io").get("outcome"), "panicked");
    for function in ["sleeps_then_io", "panics_in_blocking_code", "panics_in_io"] {
        assert!(find(function).is_none(), "`{function}` still listed");
    }
}

#[blocking_first]
async fn while_recording_is_off() -> u32 {
    io! { suspend().await };
    3
}

/// Off, bodies still run, but are neither listed nor reported.
#[test]
fn recording_can_be_turned_off_at_run_time() {
    capture::install();
    let _serial = serial();
    let rt = multi_thread();
    observe::set_enabled(false);
    let listed = rt.block_on(async {
        let task = tokio::spawn(while_recording_is_off());
        tokio::time::sleep(MS).await;
        let listed = find("while_recording_is_off");
        assert_eq!(task.await.unwrap(), 3);
        listed
    });
    observe::set_enabled(true);
    assert!(listed.is_none());
    assert!(capture::events("blocking_first::split", "::while_recording_is_off").is_empty());
    assert_eq!(rt.block_on(while_recording_is_off()), 3);
    assert_eq!(
        the_event("::while_recording_is_off").get("outcome"),
        "completed"
    );
}
