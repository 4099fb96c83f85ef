//! Edge cases of `observe`: bodies cancelled at every stage and at random moments, panics (in a
//! body, in a destructor, in the caller, in a subscriber), runtimes that shut down under a body,
//! nested bodies (inline and on a full limit), bodies awaited from `parallel!` branches, many
//! bodies starting and ending while `in_flight` is read, recording toggled while bodies run,
//! subscribers that re-enter `in_flight`, split sums for a body that spends time in every kind,
//! current-thread and paused-clock runtimes, and the detectors under concurrency.
//!
//! What every test checks, one way or another: exactly one `blocking_first::split` event per body
//! that started, in the caller's span; `in_flight` never lists a body that ended and always lists
//! one that runs; a split's parts add up to its total, and the total to the wall time.
//!
//! Each of these failed before the fix it checks: a body dropped while its caller unwinds is
//! `cancelled`, not `panicked`; a subscriber that panics, or lists the bodies in flight from
//! inside the split event, finds the ended body off the list; an annotated function awaited
//! inside `io!` of a nested body is not "blocking inside `io!`"; an out-of-range duration in the
//! variable is refused, not a panic at every body's start; a cancelled body whose stretch still
//! runs stays listed (as cancelled) until its loop lets go. A paused clock on a limit shared
//! with another runtime's loop behaves as README's "What does not hold" says.
//!
//! (Own test binary: it installs the process-wide subscriber, a layer of its own that can also
//! re-enter `in_flight` or panic for chosen functions, and sets the detectors and recording,
//! which are process-wide: the tests that touch those run alone, see [`exclusive`].)

mod common;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Once, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use blocking_first::observe::detect::{self, Detectors};
use blocking_first::observe::{self, BodySnapshot, Kind};
use common::capture::{self, Captured, us};
use common::{multi_thread, panic_message, suspend, wait_until, with_one_blocking_thread};
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;
use tracing::Instrument;
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const MS: Duration = Duration::from_millis(1);
const SPLIT: &str = "blocking_first::split";
const DETECT: &str = "blocking_first::detect";

// ------------------------------------------------------------------------------------------------
// The subscriber: keeps the runtime's events; for a few chosen functions it also calls
// `in_flight` from inside `on_event`, or panics.

/// For each split event of `reentrant_*`: how many bodies of that function `in_flight` listed,
/// called from inside `on_event`.
static REENTRANT_SAW: Mutex<Vec<(String, usize)>> = Mutex::new(Vec::new());

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Edges;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Edges {
    fn on_event(&self, event: &Event<'_>, ctx: LayerContext<'_, S>) {
        let Some(captured) = capture::read(event, &ctx) else {
            return;
        };
        let split = captured.target == SPLIT;
        let detect = captured.target == DETECT;
        let function = captured.fields.get("function").cloned().unwrap_or_default();
        if let Some((_, name)) = function.rsplit_once("::").filter(|_| split) {
            if name.starts_with("reentrant_") {
                // A layer that shows what else runs when a body ends (a slow-request dump).
                let listed = observe::in_flight()
                    .iter()
                    .filter(|body| body.function == function)
                    .count();
                lock(&REENTRANT_SAW).push((name.to_string(), listed));
            }
        }
        capture::keep(captured);
        if split && function.ends_with("::subscriber_panics_while_its_caller_unwinds") {
            panic!("a subscriber that panics while the caller unwinds");
        }
        if split && function.ends_with("::subscriber_panics") {
            panic!("a subscriber that panics on this body's split event");
        }
        if detect
            && (function.ends_with("::warning_panics") || function.ends_with("::io_warning_panics"))
        {
            panic!("a subscriber that panics on every warning");
        }
    }
}

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(Edges);
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

/// The captured events at `target` of the function whose name is `name`.
fn events_at(target: &str, name: &str) -> Vec<Captured> {
    capture::events(target, &format!("::{name}"))
}

fn splits(name: &str) -> Vec<Captured> {
    events_at(SPLIT, name)
}

/// The one split event of `name` (exactly one).
fn the_split(name: &str) -> Captured {
    let events = splits(name);
    assert_eq!(events.len(), 1, "one split event for `{name}`: {events:?}");
    events.into_iter().next().unwrap()
}

/// Parts and total agree (each rounded down to whole µs).
fn assert_adds_up(event: &Captured) {
    let (parts, total) = (event.parts(), event.num("total_us"));
    assert!(
        parts <= total && parts + 5 >= total,
        "{parts} µs of parts against a total of {total} µs: {event:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// Process-wide state: recording and the detectors. Tests that change either (or count every
// event of a kind) take the write lock; every other test takes the read lock.

static GLOBAL: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    install();
    GLOBAL.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    install();
    GLOBAL.write().unwrap_or_else(|e| e.into_inner())
}

/// Turns the detectors off and recording on again, also when the test fails.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        detect::disable();
        observe::set_enabled(true);
    }
}

// ------------------------------------------------------------------------------------------------
// In-flight helpers.

fn listed(name: &str) -> Vec<BodySnapshot> {
    let suffix = format!("::{name}");
    observe::in_flight()
        .into_iter()
        .filter(|body| body.function.ends_with(&suffix))
        .collect()
}

fn find(name: &str) -> Option<BodySnapshot> {
    listed(name).into_iter().next()
}

fn assert_unlisted(name: &str) {
    let left = listed(name);
    assert!(
        left.is_empty(),
        "`{name}` ended but is still in flight: {left:?}"
    );
}

/// Waits until a body of `name` is in flight in `state`.
fn caught(name: &str, state: Kind) -> BodySnapshot {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = None;
    loop {
        last = find(name).or(last);
        if let Some(body) = last.as_ref().filter(|body| body.state == state) {
            return body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "`{name}` not seen in state {state}; last seen: {last:?}"
        );
        thread::sleep(MS / 4);
    }
}

/// The same, from inside a task.
async fn caught_async(name: &str, state: Kind) -> BodySnapshot {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(body) = find(name).filter(|body| body.state == state) {
            return body;
        }
        assert!(Instant::now() < deadline, "`{name}` not seen in {state}");
        tokio::time::sleep(MS / 4).await;
    }
}

fn wait_flag(flag: &AtomicBool) {
    wait_until(|| flag.load(SeqCst));
}

/// Blocking code that waits for `release` (never longer than 10 s).
fn hold_until(release: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !release.load(SeqCst) && Instant::now() < deadline {
        thread::sleep(MS / 4);
    }
}

/// A pair of flags: the body says it started, the test lets it go.
#[derive(Clone, Default)]
struct Gate {
    started: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
}

impl Gate {
    fn enter(&self) {
        self.started.store(true, SeqCst);
        hold_until(&self.release);
    }

    fn wait_started(&self) {
        wait_flag(&self.started);
    }

    fn open(&self) {
        self.release.store(true, SeqCst);
    }
}

// ================================================================================================
// 1. Cancelled at each stage: one `cancelled` event, the time up to the drop, gone from the list.

static STAGE_SLOT: Limit = Limit::new("edges-stage-slot", 1);

#[blocking_first(limit = STAGE_SLOT)]
async fn stage_slot_holder(gate: Gate) {
    gate.enter();
}

#[blocking_first(limit = STAGE_SLOT)]
async fn cancelled_waiting_for_a_slot(ran: Arc<AtomicBool>) {
    ran.store(true, SeqCst);
}

#[test]
fn cancelled_while_queued_for_a_slot() {
    let _g = shared();
    let rt = multi_thread();
    let gate = Gate::default();
    let holder = rt.spawn(stage_slot_holder(gate.clone()));
    gate.wait_started();
    let ran = Arc::new(AtomicBool::new(false));
    let waiter = rt.spawn(cancelled_waiting_for_a_slot(ran.clone()));
    caught("cancelled_waiting_for_a_slot", Kind::SlotWait);
    thread::sleep(10 * MS);
    waiter.abort();
    assert!(rt.block_on(waiter).unwrap_err().is_cancelled());
    let event = the_split("cancelled_waiting_for_a_slot");
    assert_eq!(event.get("outcome"), "cancelled");
    assert!(event.num("slot_wait_us") >= us(10 * MS), "{event:?}");
    assert_eq!(event.num("hops"), 0, "{event:?}");
    assert_adds_up(&event);
    assert_unlisted("cancelled_waiting_for_a_slot");
    gate.open();
    rt.block_on(holder).unwrap();
    assert!(!ran.load(SeqCst), "a withdrawn body never runs");
    assert_eq!(the_split("stage_slot_holder").get("outcome"), "completed");
    assert_eq!(STAGE_SLOT.stats().waiting, 0);
}

/// Its own limit: no idle loop of another test can take its job.
static STAGE_POOL: Limit = Limit::unbounded("edges-stage-pool");

#[blocking_first(limit = STAGE_POOL)]
async fn cancelled_waiting_for_a_thread(ran: Arc<AtomicBool>) {
    ran.store(true, SeqCst);
}

#[test]
fn cancelled_while_queued_for_a_loop_to_start() {
    let _g = shared();
    let [_, small] = with_one_blocking_thread();
    let occupy = Gate::default();
    let taken = small.spawn_blocking({
        let occupy = occupy.clone();
        move || occupy.enter()
    });
    occupy.wait_started();
    let ran = Arc::new(AtomicBool::new(false));
    let task = small.spawn(cancelled_waiting_for_a_thread(ran.clone()));
    caught("cancelled_waiting_for_a_thread", Kind::PoolQueue);
    thread::sleep(10 * MS);
    task.abort();
    assert!(small.block_on(task).unwrap_err().is_cancelled());
    let event = the_split("cancelled_waiting_for_a_thread");
    assert_eq!(event.get("outcome"), "cancelled");
    assert!(event.num("pool_queue_us") >= us(10 * MS), "{event:?}");
    assert_adds_up(&event);
    assert_unlisted("cancelled_waiting_for_a_thread");
    occupy.open();
    small.block_on(taken).unwrap();
    // The loop started for it finds nothing to run.
    thread::sleep(30 * MS);
    assert!(!ran.load(SeqCst), "a withdrawn body never runs");
    assert_eq!(splits("cancelled_waiting_for_a_thread").len(), 1);
}

static STAGE_MID: Limit = Limit::new("edges-stage-mid", 1);

#[blocking_first(limit = STAGE_MID)]
async fn cancelled_mid_stretch(gate: Gate, after: Arc<AtomicBool>) {
    gate.enter();
    io! { tokio::task::yield_now().await };
    after.store(true, SeqCst);
}

/// Dropped mid-stretch: listed, as cancelled, while the stretch still runs on its thread and
/// holds its slot; reported once, when the stretch lets go, with how long it ran for nobody;
/// nothing after the stretch runs.
#[test]
fn cancelled_mid_stretch_is_reported_when_its_stretch_ends_with_the_time_it_ran_for_nobody() {
    let _g = shared();
    let rt = multi_thread();
    let gate = Gate::default();
    let after = Arc::new(AtomicBool::new(false));
    let task = rt.spawn(cancelled_mid_stretch(gate.clone(), after.clone()));
    gate.wait_started();
    caught("cancelled_mid_stretch", Kind::Blocking);
    thread::sleep(10 * MS);
    task.abort();
    assert!(rt.block_on(task).unwrap_err().is_cancelled());
    // Its stretch still holds a thread and a slot: listed, as cancelled, until it lets go.
    let holding = find("cancelled_mid_stretch").expect("listed while its stretch runs");
    assert!(
        holding.cancelled && holding.state == Kind::Blocking,
        "{holding:?}"
    );
    assert_eq!(STAGE_MID.stats().in_use, 1, "the stretch still runs");
    thread::sleep(20 * MS);
    assert!(
        splits("cancelled_mid_stretch").is_empty(),
        "reported before the stretch let go"
    );
    gate.open();
    wait_until(|| STAGE_MID.stats().in_use == 0);
    wait_until(|| find("cancelled_mid_stretch").is_none());
    wait_until(|| !splits("cancelled_mid_stretch").is_empty());
    let event = the_split("cancelled_mid_stretch");
    assert_eq!(event.get("outcome"), "cancelled");
    assert!(event.num("blocking_us") >= us(30 * MS), "{event:?}");
    assert!(event.num("after_cancel_us") >= us(20 * MS), "{event:?}");
    assert_eq!(event.num("hops"), 1);
    assert_adds_up(&event);
    thread::sleep(5 * MS);
    assert!(!after.load(SeqCst), "nothing after the stretch runs");
    assert_eq!(splits("cancelled_mid_stretch").len(), 1, "no second event");
    assert_unlisted("cancelled_mid_stretch");
}

#[blocking_first]
async fn cancelled_in_io() {
    std::thread::sleep(2 * MS);
    io! { std::future::pending::<()>().await };
}

#[blocking_first]
async fn cancelled_parked(wake: oneshot::Receiver<()>) {
    wake.await.ok();
}

#[blocking_first]
async fn timed_out_in_io() {
    io! { tokio::time::sleep(Duration::from_secs(10)).await };
}

#[test]
fn cancelled_in_io_parked_or_by_a_timeout() {
    let _g = shared();
    let rt = multi_thread();
    let in_io = rt.spawn(cancelled_in_io());
    caught("cancelled_in_io", Kind::Io);
    let (_wake, parked) = oneshot::channel::<()>();
    let parked = rt.spawn(cancelled_parked(parked));
    caught("cancelled_parked", Kind::Parked);
    thread::sleep(10 * MS);
    in_io.abort();
    parked.abort();
    rt.block_on(async {
        assert!(in_io.await.unwrap_err().is_cancelled());
        assert!(parked.await.unwrap_err().is_cancelled());
        let timed_out = tokio::time::timeout(20 * MS, timed_out_in_io())
            .instrument(tracing::info_span!("deadline"))
            .await;
        assert!(timed_out.is_err());
    });
    let io = the_split("cancelled_in_io");
    assert_eq!(io.get("outcome"), "cancelled");
    assert!(io.num("io_us") >= us(10 * MS), "{io:?}");
    assert!(io.num("blocking_us") >= us(2 * MS), "{io:?}");
    let parked = the_split("cancelled_parked");
    assert_eq!(parked.get("outcome"), "cancelled");
    assert!(parked.num("parked_us") >= us(10 * MS), "{parked:?}");
    let timed_out = the_split("timed_out_in_io");
    assert_eq!(timed_out.get("outcome"), "cancelled");
    assert_eq!(
        timed_out.span.as_deref(),
        Some("deadline"),
        "in the caller's span"
    );
    assert!(timed_out.num("io_us") >= us(15 * MS), "{timed_out:?}");
    for event in [&io, &parked, &timed_out] {
        assert_adds_up(event);
    }
    for name in ["cancelled_in_io", "cancelled_parked", "timed_out_in_io"] {
        assert_unlisted(name);
    }
}

/// A cancelled body's segments cover its time up to the drop, as its totals do: the last
/// segment runs to the drop, not zero.
#[test]
fn a_cancelled_bodys_segments_run_up_to_the_drop() {
    let _g = shared();
    let rt = multi_thread();
    rt.block_on(async {
        let timed_out = tokio::time::timeout(30 * MS, segments_of_a_cancelled_body()).await;
        assert!(timed_out.is_err());
    });
    let event = the_split("segments_of_a_cancelled_body");
    assert_eq!(event.get("outcome"), "cancelled");
    let segments = event.segments();
    let (kind, _, length) = segments.last().unwrap().clone();
    assert_eq!(kind, "io", "{event:?}");
    let io_ms = event.num("io_us") as f64 / 1e3;
    assert!(
        length >= io_ms - 0.01,
        "the last segment (io) lasts {length} ms, but io_us says {io_ms} ms: {event:?}"
    );
    let covered: f64 = segments.iter().map(|(_, _, length)| length).sum();
    let total_ms = event.num("total_us") as f64 / 1e3;
    assert!(
        (covered - total_ms).abs() < 0.05,
        "segments cover {covered} ms of a {total_ms} ms split: {event:?}"
    );
}

#[blocking_first]
async fn segments_of_a_cancelled_body() {
    std::thread::sleep(5 * MS);
    io! { std::future::pending::<()>().await };
}

// ================================================================================================
// 2. Cancelled at random moments: exactly one event per body that started.

static ANYWHERE: Limit = Limit::new("edges-anywhere", 2);

#[blocking_first(limit = ANYWHERE)]
async fn cancelled_anywhere(n: u32) {
    let spin = Instant::now();
    while spin.elapsed() < Duration::from_micros(u64::from(n % 7) * 40) {
        std::hint::spin_loop();
    }
    io! { tokio::task::yield_now().await };
    std::thread::sleep(Duration::from_micros(50));
    tokio::task::yield_now().await; // a quick await, outside regions
    if n % 3 == 0 {
        io! { suspend().await };
    } else {
        tokio::time::sleep(MS).await; // parked
    }
    std::thread::sleep(Duration::from_micros(30));
}

/// Sets its flag when first polled: the body inside has started from then on.
struct FirstPolled<F> {
    inner: Pin<Box<F>>,
    polled: Arc<AtomicBool>,
}

impl<F: Future> Future for FirstPolled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.polled.store(true, SeqCst);
        this.inner.as_mut().poll(cx)
    }
}

#[test]
fn cancelled_at_random_moments_each_started_body_reports_once() {
    let _g = shared();
    let rt = multi_thread();
    let mut seed = 0x2545_f491_u64;
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let mut started = Vec::new();
    let mut outcomes = HashMap::new();
    rt.block_on(async {
        for round in 0..60u32 {
            let mut tasks = Vec::new();
            for k in 0..4u32 {
                let polled = Arc::new(AtomicBool::new(false));
                started.push(polled.clone());
                let task = tokio::spawn(FirstPolled {
                    inner: Box::pin(cancelled_anywhere(round * 4 + k)),
                    polled,
                });
                tasks.push(task);
            }
            for task in tasks {
                let yields = random(40);
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
                if random(4) == 0 {
                    tokio::time::sleep(MS).await;
                }
                task.abort();
                let outcome = match task.await {
                    Ok(()) => "completed",
                    Err(e) if e.is_cancelled() => "cancelled",
                    Err(e) => panic!("{e}"),
                };
                *outcomes.entry(outcome).or_insert(0) += 1;
            }
        }
    });
    let started = started.iter().filter(|polled| polled.load(SeqCst)).count();
    // A body cancelled mid-stretch is reported by its loop when the stretch lets go: wait for
    // those (a second or two at most; the assertion below says which are missing).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while splits("cancelled_anywhere").len() < started && std::time::Instant::now() < deadline {
        thread::sleep(MS);
    }
    let events = splits("cancelled_anywhere");
    assert_eq!(
        events.len(),
        started,
        "one event per started body ({outcomes:?}); events by outcome: {:?}",
        events.iter().fold(HashMap::new(), |mut by, e| {
            *by.entry(e.get("outcome").to_string()).or_insert(0) += 1;
            by
        })
    );
    for event in &events {
        assert!(
            matches!(event.get("outcome"), "cancelled" | "completed"),
            "{event:?}"
        );
        assert_adds_up(event);
    }
    assert_unlisted("cancelled_anywhere");
    wait_until(|| ANYWHERE.stats().in_use == 0 && ANYWHERE.stats().waiting == 0);
}

// ================================================================================================
// 3. Panics: in a destructor of a body's local, in the caller, outside a runtime, in the
//    subscriber.

struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !thread::panicking() {
            panic!("a destructor that panics");
        }
    }
}

#[blocking_first]
async fn destructor_panics_when_cancelled() {
    let _local = PanicsOnDrop;
    io! { std::future::pending::<()>().await };
}

#[blocking_first]
async fn destructor_panics_at_the_end_on_a_loop() {
    let _local = PanicsOnDrop;
    std::thread::sleep(MS);
}

#[blocking_first]
async fn destructor_panics_at_the_end_in_io() {
    io! {
        let _local = PanicsOnDrop;
        suspend().await;
    };
}

#[test]
fn a_destructor_that_panics_gives_one_event_and_leaves_the_list() {
    let _g = shared();
    let rt = multi_thread();
    rt.block_on(async {
        let task = tokio::spawn(destructor_panics_when_cancelled());
        caught_async("destructor_panics_when_cancelled", Kind::Io).await;
        task.abort();
        // Dropped on a blocking thread, where its panic is caught.
        assert!(task.await.unwrap_err().is_cancelled());
        let panicked = tokio::spawn(destructor_panics_at_the_end_on_a_loop()).await;
        assert!(panicked.unwrap_err().is_panic());
        let panicked = tokio::spawn(destructor_panics_at_the_end_in_io()).await;
        assert!(panicked.unwrap_err().is_panic());
    });
    assert_eq!(
        the_split("destructor_panics_when_cancelled").get("outcome"),
        "cancelled"
    );
    assert_eq!(
        the_split("destructor_panics_at_the_end_on_a_loop").get("outcome"),
        "panicked"
    );
    assert_eq!(
        the_split("destructor_panics_at_the_end_in_io").get("outcome"),
        "panicked"
    );
    for name in [
        "destructor_panics_when_cancelled",
        "destructor_panics_at_the_end_on_a_loop",
        "destructor_panics_at_the_end_in_io",
    ] {
        assert_adds_up(&the_split(name));
        assert_unlisted(name);
    }
}

#[blocking_first]
async fn bystander_of_a_panic(wake: oneshot::Receiver<()>) {
    wake.await.ok();
}

/// Runs `body` (the function `name`) in a `select!` beside a branch that panics once the body is
/// parked, so the body is dropped while its caller unwinds; the caller's own panic comes out.
fn dropped_while_its_caller_unwinds(
    name: &'static str,
    body: impl Future<Output = ()> + Send + 'static,
) {
    let rt = multi_thread();
    let task = rt.spawn(async move {
        tokio::select! {
            biased;
            _ = body => {}
            _ = async {
                caught_async(name, Kind::Parked).await;
                panic!("the caller's own panic");
            } => {}
        }
    });
    let err = rt.block_on(task).unwrap_err();
    assert_eq!(panic_message(&*err.into_panic()), "the caller's own panic");
}

/// A body dropped because its *caller* panicked (another branch of a `select!`) did not panic:
/// it was cancelled.
#[test]
fn a_body_dropped_by_its_callers_panic_is_cancelled_not_panicked() {
    let _g = shared();
    let (_wake, parked) = oneshot::channel::<()>();
    dropped_while_its_caller_unwinds("bystander_of_a_panic", bystander_of_a_panic(parked));
    let event = the_split("bystander_of_a_panic");
    assert_unlisted("bystander_of_a_panic");
    assert_eq!(
        event.get("outcome"),
        "cancelled",
        "the body never panicked; its caller dropped it: {event:?}"
    );
}

#[blocking_first]
async fn awaited_outside_a_runtime() -> u32 {
    1
}

/// A minimal executor with no tokio runtime around.
fn block_on_without_runtime<F: Future>(future: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        thread::park_timeout(10 * MS);
    }
}

#[test]
fn awaited_outside_a_runtime_panics_once_and_leaves_no_trace() {
    let _g = shared();
    let err = thread::spawn(|| block_on_without_runtime(awaited_outside_a_runtime()))
        .join()
        .unwrap_err();
    assert!(
        panic_message(&*err).contains("outside a tokio runtime"),
        "{}",
        panic_message(&*err)
    );
    assert_eq!(
        the_split("awaited_outside_a_runtime").get("outcome"),
        "panicked"
    );
    assert_unlisted("awaited_outside_a_runtime");
}

#[blocking_first]
async fn subscriber_panics(wake: oneshot::Receiver<()>) {
    wake.await.ok();
}

/// A subscriber that panics on a body's split event (a buggy layer, a writer that panics) must
/// not leave the body listed in flight forever.
#[test]
fn a_subscriber_that_panics_does_not_leave_the_body_in_flight() {
    let _g = shared();
    let rt = multi_thread();
    let (_wake, parked) = oneshot::channel::<()>();
    let task = rt.spawn(subscriber_panics(parked));
    caught("subscriber_panics", Kind::Parked);
    task.abort();
    // The panic came out of the body's drop, which tokio caught.
    let err = rt.block_on(task).unwrap_err();
    assert!(err.is_panic(), "{err:?}");
    assert_eq!(splits("subscriber_panics").len(), 1);
    thread::sleep(5 * MS);
    assert_unlisted("subscriber_panics");
}

#[blocking_first]
async fn reentrant_cancelled(wake: oneshot::Receiver<()>) {
    io! { wake.await.ok() };
}

#[blocking_first]
async fn reentrant_completed() {
    io! { suspend().await };
}

/// A layer that calls `in_flight` from inside `on_event` (to show what else runs when a body
/// ends): no deadlock, and the body that just ended is not among them.
#[test]
fn in_flight_called_from_inside_the_split_event_does_not_list_the_ended_body() {
    let _g = shared();
    let rt = multi_thread();
    rt.block_on(async {
        reentrant_completed().await;
        let (_wake, wait) = oneshot::channel::<()>();
        let task = tokio::spawn(reentrant_cancelled(wait));
        caught_async("reentrant_cancelled", Kind::Io).await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    });
    let saw = lock(&REENTRANT_SAW).clone();
    assert_eq!(saw.len(), 2, "{saw:?}");
    for (name, listed) in saw {
        assert_eq!(
            listed, 0,
            "`{name}` was still listed in flight while its split event was recorded"
        );
    }
}

// ================================================================================================
// 4. Runtimes that go away under a body.

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

#[blocking_first]
async fn outlives_its_runtime_in_io(dropped: Arc<AtomicBool>) {
    let _local = SetOnDrop(dropped);
    io! { std::future::pending::<()>().await };
}

static OUTLIVE: Limit = Limit::new("edges-outlive", 1);

#[blocking_first(limit = OUTLIVE)]
async fn outlive_holder(gate: Gate) {
    gate.enter();
}

#[blocking_first(limit = OUTLIVE)]
async fn outlives_its_runtime_queued(ran: Arc<AtomicBool>) {
    ran.store(true, SeqCst);
}

/// Polls `future` on `rt` until `ready` holds, then returns with `future` still pending.
fn poll_on_until<F: Future + Unpin>(rt: &Runtime, future: &mut F, ready: impl Fn() -> bool) {
    rt.block_on(async {
        tokio::select! {
            _ = future => panic!("completed"),
            _ = async {
                while !ready() {
                    tokio::time::sleep(MS / 4).await;
                }
            } => {}
        }
    });
}

/// A body whose future outlives its runtime (held outside any task) is reported when it is
/// finally dropped, on a thread with no runtime, and leaves nothing listed.
#[test]
fn a_body_dropped_after_its_runtime_shut_down() {
    let _g = shared();
    // In io!: held by the driver.
    let rt = multi_thread();
    let dropped = Arc::new(AtomicBool::new(false));
    let mut body = Box::pin(outlives_its_runtime_in_io(dropped.clone()));
    poll_on_until(&rt, &mut body, || {
        find("outlives_its_runtime_in_io").is_some_and(|b| b.state == Kind::Io)
    });
    drop(rt);
    assert!(splits("outlives_its_runtime_in_io").is_empty());
    drop(body);
    assert!(dropped.load(SeqCst), "dropped right here, with no runtime");
    assert_eq!(
        the_split("outlives_its_runtime_in_io").get("outcome"),
        "cancelled"
    );
    assert_unlisted("outlives_its_runtime_in_io");

    // Queued for a slot that a body of another runtime holds.
    let holder_rt = multi_thread();
    let gate = Gate::default();
    let holder = holder_rt.spawn(outlive_holder(gate.clone()));
    gate.wait_started();
    let rt = multi_thread();
    let ran = Arc::new(AtomicBool::new(false));
    let mut body = Box::pin(outlives_its_runtime_queued(ran.clone()));
    poll_on_until(&rt, &mut body, || {
        find("outlives_its_runtime_queued").is_some_and(|b| b.state == Kind::SlotWait)
    });
    drop(rt);
    drop(body);
    let event = the_split("outlives_its_runtime_queued");
    assert_eq!(event.get("outcome"), "cancelled");
    assert_adds_up(&event);
    assert_unlisted("outlives_its_runtime_queued");
    gate.open();
    holder_rt.block_on(holder).unwrap();
    assert!(!ran.load(SeqCst));
    assert_eq!(OUTLIVE.stats().waiting, 0);
}

static SHUTDOWN: Limit = Limit::new("edges-shutdown", 1);

#[blocking_first(limit = SHUTDOWN)]
async fn shutdown_mid_stretch(gate: Gate, after: Arc<AtomicBool>) {
    gate.enter();
    io! { tokio::task::yield_now().await };
    after.store(true, SeqCst);
}

#[blocking_first(limit = SHUTDOWN)]
async fn shutdown_queued(ran: Arc<AtomicBool>) {
    ran.store(true, SeqCst);
}

#[blocking_first]
async fn shutdown_in_io() {
    io! { std::future::pending::<()>().await };
}

#[blocking_first]
async fn shutdown_parked(wake: oneshot::Receiver<()>) {
    wake.await.ok();
}

/// The runtime shuts down (in the background) under bodies in each state: each is reported once
/// as cancelled and leaves the list; the one in blocking code when its stretch ends on its
/// thread; the queued one never runs.
#[test]
fn a_runtime_shut_down_under_bodies_in_every_state() {
    let _g = shared();
    let rt = multi_thread();
    let gate = Gate::default();
    let (after, ran) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    rt.spawn(shutdown_mid_stretch(gate.clone(), after.clone()));
    gate.wait_started();
    rt.spawn(shutdown_queued(ran.clone()));
    rt.spawn(shutdown_in_io());
    let (_wake, parked) = oneshot::channel::<()>();
    rt.spawn(shutdown_parked(parked));
    caught("shutdown_mid_stretch", Kind::Blocking);
    caught("shutdown_queued", Kind::SlotWait);
    caught("shutdown_in_io", Kind::Io);
    caught("shutdown_parked", Kind::Parked);
    rt.shutdown_background();
    let names = [
        "shutdown_mid_stretch",
        "shutdown_queued",
        "shutdown_in_io",
        "shutdown_parked",
    ];
    let stopped_at_once = &names[1..];
    wait_until(|| stopped_at_once.iter().all(|name| !splits(name).is_empty()));
    for &name in stopped_at_once {
        let event = the_split(name);
        assert_eq!(event.get("outcome"), "cancelled", "{event:?}");
        assert_eq!(event.num("after_cancel_us"), 0, "{event:?}");
        assert_adds_up(&event);
        assert_unlisted(name);
    }
    // The stretch still holds its thread and slot: listed, as cancelled, until it lets go, and
    // reported then.
    let holding = find("shutdown_mid_stretch").expect("listed while its stretch runs");
    assert!(
        holding.cancelled && holding.state == Kind::Blocking,
        "{holding:?}"
    );
    assert!(splits("shutdown_mid_stretch").is_empty());
    gate.open();
    wait_until(|| SHUTDOWN.stats().in_use == 0);
    wait_until(|| find("shutdown_mid_stretch").is_none());
    wait_until(|| !splits("shutdown_mid_stretch").is_empty());
    let event = the_split("shutdown_mid_stretch");
    assert_eq!(event.get("outcome"), "cancelled", "{event:?}");
    assert_adds_up(&event);
    thread::sleep(5 * MS);
    assert!(!after.load(SeqCst), "nothing after the stretch runs");
    assert!(!ran.load(SeqCst), "the queued body never runs");
    assert_eq!(SHUTDOWN.stats().waiting, 0);
    for name in names {
        assert_eq!(splits(name).len(), 1, "`{name}`: no second event");
    }
}

static ABANDON: Limit = Limit::new("edges-abandon", 1);

#[blocking_first(limit = ABANDON)]
async fn abandon_holder(gate: Gate) {
    gate.enter();
}

#[blocking_first(limit = ABANDON)]
async fn abandoned_waiter() {}

/// A body queued for a slot whose runtime shut down before a loop could start for it is given
/// back to its caller as a panic; its split still covers the time it waited.
#[test]
fn an_abandoned_bodys_split_covers_its_wait() {
    let _g = shared();
    let b = multi_thread();
    let gate = Gate::default();
    let _holder = b.spawn(abandon_holder(gate.clone()));
    gate.wait_started();
    let a = multi_thread();
    let handle_a = a.handle().clone();
    let waiter = thread::spawn(move || {
        let start = Instant::now();
        let result =
            panic::catch_unwind(AssertUnwindSafe(|| handle_a.block_on(abandoned_waiter())));
        (result.map_err(|e| panic_message(&*e)), start.elapsed())
    });
    caught("abandoned_waiter", Kind::SlotWait);
    drop(a); // nothing of A's runs on its blocking pool: it closes at once
    thread::sleep(30 * MS);
    // B goes away while its body holds the slot: its loop ends after the stretch, and the
    // waiter's loop would have to start on A.
    let releaser = {
        let gate = gate.clone();
        thread::spawn(move || {
            thread::sleep(20 * MS);
            gate.open();
        })
    };
    drop(b);
    releaser.join().unwrap();
    let (result, wall) = waiter.join().unwrap();
    let message = result.expect_err("abandoned");
    assert!(message.contains("shut down"), "{message}");
    let event = the_split("abandoned_waiter");
    assert_eq!(event.get("outcome"), "panicked");
    assert_unlisted("abandoned_waiter");
    assert!(
        event.num("slot_wait_us") >= us(40 * MS),
        "it waited {wall:?} for a slot, the split says: {event:?}"
    );
    assert!(
        event.num("total_us") * 100 >= us(wall) * 80,
        "{wall:?}: {event:?}"
    );
}

// ================================================================================================
// 5. Nested bodies: inline on the caller's thread, queued on a full limit, awaited from
//    `parallel!` branches.

#[blocking_first]
async fn inline_outer() -> u32 {
    std::thread::sleep(10 * MS);
    let inner = inline_inner().await;
    std::thread::sleep(5 * MS);
    inner + 1
}

#[blocking_first]
async fn inline_inner() -> u32 {
    std::thread::sleep(20 * MS);
    io! { tokio::time::sleep(15 * MS).await };
    std::thread::sleep(5 * MS);
    1
}

#[test]
fn a_nested_body_run_inline_reports_in_the_callers_span_with_no_hops() {
    let _g = shared();
    let rt = multi_thread();
    let value = rt.block_on(inline_outer().instrument(tracing::info_span!("nest")));
    assert_eq!(value, 2);
    let (outer, inner) = (the_split("inline_outer"), the_split("inline_inner"));
    for event in [&outer, &inner] {
        assert_eq!(event.get("outcome"), "completed");
        assert_eq!(event.span.as_deref(), Some("nest"), "{event:?}");
        assert_adds_up(event);
    }
    assert_eq!(
        inner.num("hops"),
        0,
        "inline: no move of its own: {inner:?}"
    );
    assert!(inner.num("blocking_us") >= us(25 * MS), "{inner:?}");
    assert!(inner.num("io_us") >= us(15 * MS), "{inner:?}");
    // The outer body's blocking code includes the inner body's, run inside it; it waited, parked,
    // while the inner one was in `io!`.
    assert_eq!(outer.num("hops"), 2, "{outer:?}");
    assert!(outer.num("blocking_us") >= us(40 * MS), "{outer:?}");
    assert!(outer.num("parked_us") >= us(14 * MS), "{outer:?}");
    assert!(outer.num("total_us") >= inner.num("total_us"));
    assert_unlisted("inline_outer");
    assert_unlisted("inline_inner");
}

static FULL: Limit = Limit::new("edges-full", 1);
static FULL_CALLER: Limit = Limit::new("edges-full-caller", 2);

#[blocking_first(limit = FULL)]
async fn full_holder(gate: Gate) {
    gate.enter();
}

#[blocking_first(limit = FULL)]
async fn full_inner() -> u32 {
    std::thread::sleep(10 * MS);
    5
}

#[blocking_first(limit = FULL_CALLER)]
async fn full_outer() -> u32 {
    std::thread::sleep(5 * MS);
    full_inner().await + 1
}

#[test]
fn a_nested_body_on_a_full_limit_waits_for_a_slot_while_its_caller_parks() {
    let _g = shared();
    let rt = multi_thread();
    let gate = Gate::default();
    let holder = rt.spawn(full_holder(gate.clone()));
    gate.wait_started();
    let outer = rt.spawn(full_outer().instrument(tracing::info_span!("full")));
    caught("full_inner", Kind::SlotWait);
    caught("full_outer", Kind::Parked);
    thread::sleep(30 * MS);
    gate.open();
    assert_eq!(rt.block_on(outer).unwrap(), 6);
    rt.block_on(holder).unwrap();
    let (outer, inner) = (the_split("full_outer"), the_split("full_inner"));
    assert_eq!(inner.span.as_deref(), Some("full"));
    assert_eq!(inner.get("limit"), "edges-full");
    assert!(inner.num("slot_wait_us") >= us(30 * MS), "{inner:?}");
    assert!(inner.num("blocking_us") >= us(10 * MS), "{inner:?}");
    assert_eq!(inner.num("hops"), 1);
    assert!(outer.num("parked_us") >= us(40 * MS), "{outer:?}");
    assert_eq!(outer.num("hops"), 2);
    for event in [&outer, &inner] {
        assert_adds_up(event);
    }
    assert_unlisted("full_outer");
    assert_unlisted("full_inner");
}

static BRANCHES: Limit = Limit::unbounded("edges-branches");

#[blocking_first(limit = BRANCHES)]
async fn in_a_branch(n: u32) -> u32 {
    std::thread::sleep(2 * MS);
    io! { suspend().await };
    n
}

#[blocking_first(limit = BRANCHES)]
async fn with_branches() -> u32 {
    let (a, b, c) = parallel! {
        Handle::current().block_on(in_a_branch(1)),
        Handle::current().block_on(in_a_branch(2)),
        Handle::current().block_on(in_a_branch(3)),
    };
    a + b + c
}

#[test]
fn bodies_awaited_from_parallel_branches_report_once_each_and_leave_the_list() {
    let _g = shared();
    let rt = multi_thread();
    for _ in 0..3 {
        let value = rt.block_on(with_branches().instrument(tracing::info_span!("branches")));
        assert_eq!(value, 6);
    }
    let events = splits("in_a_branch");
    assert_eq!(events.len(), 9, "{events:?}");
    for event in &events {
        assert_eq!(event.get("outcome"), "completed");
        assert_eq!(event.span.as_deref(), Some("branches"), "{event:?}");
        assert_adds_up(event);
    }
    assert_eq!(splits("with_branches").len(), 3);
    assert_unlisted("in_a_branch");
    assert_unlisted("with_branches");
}

static NEST_CANCEL: Limit = Limit::unbounded("edges-nest-cancel");

#[blocking_first(limit = NEST_CANCEL)]
async fn nest_cancel_outer() {
    std::thread::sleep(MS);
    nest_cancel_inner().await;
}

#[blocking_first(limit = NEST_CANCEL)]
async fn nest_cancel_inner() {
    std::thread::sleep(MS);
    io! { std::future::pending::<()>().await };
}

/// The caller is cancelled while the body it awaits from its blocking code (run inline) waits in
/// `io!`: the inner body is dropped with the caller's body, off the runtime, and reported too.
#[test]
fn a_nested_body_cancelled_with_its_caller_reports_once_each() {
    let _g = shared();
    let rt = multi_thread();
    let task = rt.spawn(nest_cancel_outer().instrument(tracing::info_span!("nest-cancel")));
    caught("nest_cancel_inner", Kind::Io);
    caught("nest_cancel_outer", Kind::Parked);
    task.abort();
    assert!(rt.block_on(task).unwrap_err().is_cancelled());
    assert_eq!(the_split("nest_cancel_outer").get("outcome"), "cancelled");
    // The inner body goes with the outer one's locals, dropped on a blocking thread.
    wait_until(|| !splits("nest_cancel_inner").is_empty());
    let inner = the_split("nest_cancel_inner");
    assert_eq!(inner.get("outcome"), "cancelled");
    assert_eq!(inner.span.as_deref(), Some("nest-cancel"));
    assert_adds_up(&inner);
    assert_unlisted("nest_cancel_outer");
    assert_unlisted("nest_cancel_inner");
}

#[blocking_first]
async fn inline_panic_outer() {
    std::thread::sleep(MS);
    inline_panic_inner().await;
}

#[blocking_first]
async fn inline_panic_inner() {
    std::thread::sleep(MS);
    panic!("inner panics inline");
}

/// Catches a panic of the future it wraps, as `futures::FutureExt::catch_unwind` does.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.get_mut().0;
        match panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(&*payload))),
        }
    }
}

#[blocking_first]
async fn catches_an_inline_panic() -> String {
    std::thread::sleep(MS);
    let caught = CatchUnwind(Box::pin(caught_inline_panic())).await;
    std::thread::sleep(MS);
    caught.unwrap_err()
}

#[blocking_first]
async fn caught_inline_panic() {
    panic!("caught by the caller");
}

#[blocking_first]
async fn caught_panic_in_io() {
    io! {
        suspend().await;
        panic!("caught around the call")
    };
}

/// A body that panics while run inline in its caller's stretch, or in `io!`: `panicked`, also
/// when the caller catches the panic (and then goes on), and nothing stays listed.
#[test]
fn a_panic_inline_or_caught_by_the_caller_is_reported_as_panicked() {
    let _g = shared();
    let rt = multi_thread();
    rt.block_on(async {
        assert!(
            tokio::spawn(inline_panic_outer())
                .await
                .unwrap_err()
                .is_panic()
        );
        let message = tokio::spawn(catches_an_inline_panic()).await.unwrap();
        assert_eq!(message, "caught by the caller");
        let caught = CatchUnwind(Box::pin(caught_panic_in_io())).await;
        assert_eq!(caught.unwrap_err(), "caught around the call");
    });
    for name in [
        "inline_panic_outer",
        "inline_panic_inner",
        "caught_inline_panic",
        "caught_panic_in_io",
    ] {
        let event = the_split(name);
        assert_eq!(event.get("outcome"), "panicked", "{event:?}");
        assert_adds_up(&event);
        assert_unlisted(name);
    }
    assert_eq!(
        the_split("catches_an_inline_panic").get("outcome"),
        "completed"
    );
    assert_eq!(the_split("caught_inline_panic").num("hops"), 0);
}

// ================================================================================================
// 6. Many bodies at once, and the registry's bookkeeping.

static LISTED: Limit = Limit::unbounded("edges-listed");

#[blocking_first(limit = LISTED)]
async fn listed_body(wake: oneshot::Receiver<()>) {
    io! { wake.await.ok() };
}

/// Bodies end in a shuffled order (so the registry's lists are reordered by each removal): after
/// each end, exactly the others are listed.
#[test]
fn in_flight_lists_exactly_the_running_bodies_as_they_end_in_any_order() {
    let _g = shared();
    let rt = multi_thread();
    const N: usize = 150;
    let mut ids = Vec::new();
    let mut wakes = Vec::new();
    let mut tasks = Vec::new();
    let mut known = HashSet::new();
    for _ in 0..N {
        let (wake, wait) = oneshot::channel();
        tasks.push(rt.spawn(listed_body(wait)));
        wakes.push(Some(wake));
        let deadline = Instant::now() + Duration::from_secs(5);
        let id = loop {
            let new = listed("listed_body")
                .into_iter()
                .find(|body| body.state == Kind::Io && !known.contains(&body.id));
            if let Some(body) = new {
                break body.id;
            }
            assert!(Instant::now() < deadline, "body not listed");
            thread::yield_now();
        };
        known.insert(id);
        ids.push(id);
    }
    let mut order: Vec<usize> = (0..N).collect();
    let mut seed = 7u64;
    for i in (1..N).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        order.swap(i, (seed >> 33) as usize % (i + 1));
    }
    let mut running: HashSet<u64> = ids.iter().copied().collect();
    for i in order {
        wakes[i].take().unwrap().send(()).unwrap();
        running.remove(&ids[i]);
        wait_until(|| listed("listed_body").iter().all(|body| body.id != ids[i]));
        let now: HashSet<u64> = listed("listed_body").iter().map(|b| b.id).collect();
        assert_eq!(now, running, "after body {i} ended");
    }
    rt.block_on(async {
        for task in tasks {
            task.await.unwrap();
        }
    });
    assert_eq!(splits("listed_body").len(), N);
    assert_unlisted("listed_body");
}

static STRESS: Limit = Limit::new("edges-stress", 4);

#[blocking_first(limit = STRESS)]
async fn stress_body(n: u32) {
    if n % 3 == 0 {
        io! { tokio::task::yield_now().await };
    }
    if n % 5 == 0 {
        tokio::task::yield_now().await;
    }
    if n % 7 == 0 {
        io! { suspend().await };
    }
}

/// Thousands of bodies start and end while another thread reads `in_flight` in a loop: every
/// snapshot is consistent (an age no older than the test, in its state no longer than its age,
/// one id per body), and at the end nothing is left.
#[test]
fn in_flight_read_in_a_loop_while_thousands_of_bodies_start_and_end() {
    let _g = shared();
    // The clock's epoch well before the bodies: an age counted from it stands out.
    observe::in_flight();
    thread::sleep(30 * MS);
    let rt = multi_thread();
    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let reader = thread::spawn({
        let done = done.clone();
        move || {
            let (mut reads, mut seen, mut wrong) = (0u64, 0u64, Vec::new());
            while !done.load(SeqCst) {
                let bodies = listed("stress_body");
                let bound = start.elapsed();
                let mut ids = HashSet::new();
                for body in &bodies {
                    seen += 1;
                    if body.age > bound || body.in_state > body.age + MS || !ids.insert(body.id) {
                        wrong.push(body.clone());
                    }
                }
                reads += 1;
            }
            (reads, seen, wrong)
        }
    });
    rt.block_on(async {
        let tasks: Vec<_> = (0..3000).map(|n| tokio::spawn(stress_body(n))).collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    done.store(true, SeqCst);
    let (reads, seen, wrong) = reader.join().unwrap();
    assert!(reads > 10 && seen > 0, "{reads} reads, {seen} bodies seen");
    assert!(
        wrong.is_empty(),
        "{} of {seen} snapshots inconsistent (test ran {:?}), e.g. {:?}",
        wrong.len(),
        start.elapsed(),
        &wrong[..wrong.len().min(3)]
    );
    assert_eq!(splits("stress_body").len(), 3000);
    assert_unlisted("stress_body");
}

// ================================================================================================
// 7. Recording toggled while bodies run (process-wide: run alone).

#[blocking_first]
async fn toggled_body(n: u32) {
    if n % 2 == 0 {
        io! { tokio::task::yield_now().await };
    }
    tokio::task::yield_now().await;
}

#[blocking_first]
async fn started_on_ended_off(wake: oneshot::Receiver<()>) {
    io! { wake.await.ok() };
}

#[blocking_first]
async fn started_off_ended_on(wake: oneshot::Receiver<()>) {
    io! { wake.await.ok() };
}

#[test]
fn recording_toggled_while_bodies_run() {
    let _g = exclusive();
    let _restore = Restore;
    let rt = multi_thread();
    // A body keeps the setting it started with.
    let (wake_on, wait_on) = oneshot::channel();
    let on = rt.spawn(started_on_ended_off(wait_on));
    caught("started_on_ended_off", Kind::Io);
    observe::set_enabled(false);
    let (wake_off, wait_off) = oneshot::channel();
    let off = rt.spawn(started_off_ended_on(wait_off));
    thread::sleep(5 * MS);
    observe::set_enabled(true);
    assert!(find("started_off_ended_on").is_none());
    assert!(
        find("started_on_ended_off").is_some(),
        "listed while off too"
    );
    wake_on.send(()).unwrap();
    wake_off.send(()).unwrap();
    rt.block_on(async {
        on.await.unwrap();
        off.await.unwrap();
    });
    assert_eq!(
        the_split("started_on_ended_off").get("outcome"),
        "completed"
    );
    assert!(splits("started_off_ended_on").is_empty());
    assert_unlisted("started_on_ended_off");

    // Toggled all the time while many bodies start and end.
    let stop = Arc::new(AtomicBool::new(false));
    let toggles = Arc::new(AtomicUsize::new(0));
    let toggler = thread::spawn({
        let (stop, toggles) = (stop.clone(), toggles.clone());
        move || {
            while !stop.load(SeqCst) {
                observe::set_enabled(toggles.fetch_add(1, SeqCst) % 2 == 1);
                thread::yield_now();
            }
            observe::set_enabled(true);
        }
    });
    rt.block_on(async {
        let tasks: Vec<_> = (0..1000).map(|n| tokio::spawn(toggled_body(n))).collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    stop.store(true, SeqCst);
    toggler.join().unwrap();
    let events = splits("toggled_body");
    assert!(toggles.load(SeqCst) > 10);
    assert!(events.len() <= 1000, "{}", events.len());
    for event in &events {
        assert_eq!(event.get("outcome"), "completed");
        assert_adds_up(event);
    }
    assert_unlisted("toggled_body");
}

// ================================================================================================
// 8. Time split sums: every kind, a current-thread runtime, a paused clock, many transitions.

static EVERY: Limit = Limit::new("edges-every", 1);

#[blocking_first(limit = EVERY)]
async fn every_kind(go_back: oneshot::Receiver<()>) -> u32 {
    std::thread::sleep(20 * MS);
    io! { go_back.await.ok() };
    std::thread::sleep(10 * MS);
    tokio::time::sleep(30 * MS).await; // parked
    std::thread::sleep(5 * MS);
    9
}

#[blocking_first(limit = EVERY)]
async fn every_holder(gate: Gate) {
    gate.enter();
}

/// A body that spends time in each of the five kinds: each holds what it should, the parts add
/// up to the total, and the total to the caller's wall time.
#[test]
fn a_split_with_time_in_every_kind_adds_up_to_the_wall_time() {
    let _g = shared();
    // One blocking thread, taken: the body's first loop waits for tokio to start it.
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let occupy = Gate::default();
    let taken = rt.spawn_blocking({
        let occupy = occupy.clone();
        move || occupy.enter()
    });
    occupy.wait_started();
    let (go_back, back) = oneshot::channel();
    let start = Instant::now();
    let body = rt.spawn(every_kind(back).instrument(tracing::info_span!("every")));
    caught("every_kind", Kind::PoolQueue);
    thread::sleep(30 * MS);
    occupy.open();
    caught("every_kind", Kind::Io);
    thread::sleep(20 * MS);
    // Another body takes the only slot while this one is in `io!`.
    let holder = Gate::default();
    let holding = rt.spawn(every_holder(holder.clone()));
    holder.wait_started();
    go_back.send(()).unwrap();
    caught("every_kind", Kind::SlotWait);
    thread::sleep(30 * MS);
    holder.open();
    let value = rt.block_on(body).unwrap();
    let wall = start.elapsed();
    assert_eq!(value, 9);
    rt.block_on(async {
        taken.await.unwrap();
        holding.await.unwrap();
    });
    let event = the_split("every_kind");
    assert_eq!(event.span.as_deref(), Some("every"));
    assert_eq!(event.get("outcome"), "completed");
    let at_least = |name: &str, d: Duration| {
        assert!(event.num(name) >= us(d), "{name} below {d:?}: {event:?}");
    };
    at_least("pool_queue_us", 30 * MS);
    at_least("blocking_us", 35 * MS);
    at_least("io_us", 20 * MS);
    at_least("slot_wait_us", 30 * MS);
    at_least("parked_us", 20 * MS); // its timer starts in the stretch before
    assert_adds_up(&event);
    let total = event.num("total_us");
    assert!(
        total <= us(wall) && total + us(20 * MS) >= us(wall),
        "a split of {total} µs for {wall:?} of wall time: {event:?}"
    );
    assert_eq!(event.num("hops"), 3, "{event:?}");
    let covered: f64 = event.segments().iter().map(|(_, _, length)| length).sum();
    assert!(
        (covered - total as f64 / 1e3).abs() < 0.05,
        "segments cover {covered} ms: {event:?}"
    );
}

#[blocking_first]
async fn on_a_current_thread_runtime() -> u32 {
    std::thread::sleep(10 * MS);
    io! { tokio::time::sleep(10 * MS).await };
    tokio::time::sleep(10 * MS).await;
    std::thread::sleep(5 * MS);
    4
}

#[test]
fn a_split_on_a_current_thread_runtime() {
    let _g = shared();
    let rt = common::current_thread();
    let start = Instant::now();
    let value = rt.block_on(on_a_current_thread_runtime().instrument(tracing::info_span!("ct")));
    let wall = start.elapsed();
    assert_eq!(value, 4);
    let event = the_split("on_a_current_thread_runtime");
    assert_eq!(event.span.as_deref(), Some("ct"));
    assert_eq!(event.num("hops"), 3);
    assert!(event.num("blocking_us") >= us(15 * MS), "{event:?}");
    assert!(event.num("io_us") >= us(10 * MS), "{event:?}");
    assert!(event.num("parked_us") >= us(10 * MS), "{event:?}");
    assert_adds_up(&event);
    let total = event.num("total_us");
    assert!(
        total <= us(wall) && total + us(5 * MS) >= us(wall),
        "{wall:?}: {event:?}"
    );
    assert_unlisted("on_a_current_thread_runtime");
}

#[blocking_first]
async fn under_a_paused_clock() -> u32 {
    std::thread::sleep(2 * MS);
    io! { tokio::time::sleep(Duration::from_secs(3600)).await };
    tokio::time::sleep(Duration::from_secs(3600)).await;
    8
}

#[blocking_first]
async fn times_out_under_a_paused_clock() {
    io! { std::future::pending::<()>().await };
}

/// With tokio's clock paused, an hour of `tokio::time::sleep` passes at once; the split, on the
/// real clock, shows the real time, and nothing else changes.
#[test]
fn a_paused_tokio_clock_breaks_nothing() {
    let _g = shared();
    let rt = Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let start = Instant::now();
    let (value, timed_out) = rt.block_on(async {
        let value = under_a_paused_clock().await;
        let timed_out =
            tokio::time::timeout(Duration::from_secs(60), times_out_under_a_paused_clock()).await;
        (value, timed_out.is_err())
    });
    let wall = start.elapsed();
    assert_eq!(value, 8);
    assert!(timed_out);
    assert!(wall < Duration::from_secs(5), "{wall:?}");
    let event = the_split("under_a_paused_clock");
    assert_eq!(event.get("outcome"), "completed");
    assert!(event.num("total_us") <= us(wall), "real time: {event:?}");
    assert!(event.num("blocking_us") >= us(2 * MS));
    assert_adds_up(&event);
    assert_eq!(
        the_split("times_out_under_a_paused_clock").get("outcome"),
        "cancelled"
    );
    assert_unlisted("under_a_paused_clock");
    assert_unlisted("times_out_under_a_paused_clock");
}

#[blocking_first]
async fn many_transitions() {
    for _ in 0..12 {
        std::thread::sleep(Duration::from_micros(200));
        io! { tokio::task::yield_now().await };
    }
}

/// More transitions than the segments field keeps: it ends with `...`, while the totals still
/// count everything.
#[test]
fn a_body_with_many_transitions() {
    let _g = shared();
    let rt = multi_thread();
    rt.block_on(many_transitions());
    let event = the_split("many_transitions");
    assert!(event.get("segments").ends_with(" ..."), "{event:?}");
    assert_eq!(event.segments().len(), 16, "{event:?}");
    assert!(event.num("blocking_us") >= us(12 * 200 * Duration::from_micros(1)));
    assert_eq!(event.num("hops"), 13, "{event:?}");
    assert_adds_up(&event);
    let covered: f64 = event.segments().iter().map(|(_, _, length)| length).sum();
    assert!(
        covered * 1e3 <= event.num("total_us") as f64 + 20.0,
        "{event:?}"
    );
}

// ================================================================================================
// 9. The detectors (process-wide: run alone).

static WIDE: Limit = Limit::unbounded("edges-wide");

#[blocking_first(limit = WIDE)]
async fn long_stretches_at_once(gate: Arc<std::sync::Barrier>) {
    gate.wait();
    std::thread::sleep(25 * MS);
}

#[blocking_first(limit = WIDE)]
async fn another_long_stretch() {
    std::thread::sleep(25 * MS);
}

#[test]
fn concurrent_long_stretches_of_one_function_warn_once_per_interval() {
    let _g = exclusive();
    let _restore = Restore;
    let rt = multi_thread();
    detect::enable(
        Detectors::default()
            .io_poll(None)
            .stretch(10 * MS)
            .interval(Duration::from_secs(3600)),
    );
    let before = blocking_first::stats().detector_warnings;
    rt.block_on(async {
        let gate = Arc::new(std::sync::Barrier::new(6));
        let tasks: Vec<_> = (0..6)
            .map(|_| tokio::spawn(long_stretches_at_once(gate.clone())))
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        another_long_stretch().await;
        another_long_stretch().await;
    });
    let warned = events_at(DETECT, "long_stretches_at_once");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0].get("detector"), "stretch");
    assert!(warned[0].get("message").contains("limit `edges-wide`"));
    assert_eq!(
        events_at(DETECT, "another_long_stretch").len(),
        1,
        "per function"
    );
    assert_eq!(blocking_first::stats().detector_warnings - before, 2);
}

#[blocking_first]
async fn nested_io_outer() {
    nested_io_inner().await;
}

#[blocking_first]
async fn nested_io_inner() {
    io! {
        suspend().await;
        nested_io_third().await;
    };
}

#[blocking_first]
async fn nested_io_third() {
    std::thread::sleep(30 * MS);
}

#[blocking_first]
async fn awaits_a_body_inside_io() {
    io! {
        suspend().await;
        nested_io_third().await;
    };
}

/// Awaiting a `#[blocking_first]` function inside `io!` is the intended use, not blocking code in
/// `io!`: no warning, whether the caller is awaited from a task or from another body's blocking
/// code.
#[test]
fn awaiting_a_body_inside_io_is_not_blocking_inside_io() {
    let _g = exclusive();
    let _restore = Restore;
    let rt = multi_thread();
    detect::enable(
        Detectors::default()
            .io_poll(10 * MS)
            .stretch(None)
            .interval(Duration::ZERO),
    );
    rt.block_on(async {
        awaits_a_body_inside_io().await;
        nested_io_outer().await;
    });
    assert!(events_at(DETECT, "awaits_a_body_inside_io").is_empty());
    let warned = events_at(DETECT, "nested_io_inner");
    assert!(
        warned.is_empty(),
        "a false warning (its io! region ran on a blocking thread): {warned:?}"
    );
}

// ================================================================================================
// 10. The environment variable: a value out of range is "not understood", like any other.

#[blocking_first]
async fn runs_with_the_variable_set() -> u32 {
    io! { suspend().await };
    1
}

/// Run by the test below in a child process, with the variable set.
#[test]
#[ignore = "run by `an_out_of_range_duration_in_the_variable_is_not_understood`"]
fn child_with_an_out_of_range_duration() {
    if std::env::var_os(detect::ENV).is_none() {
        return;
    }
    let rt = multi_thread();
    assert_eq!(rt.block_on(runs_with_the_variable_set()), 1);
    assert_eq!(rt.block_on(runs_with_the_variable_set()), 1);
}

#[test]
fn an_out_of_range_duration_in_the_variable_is_not_understood() {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_with_an_out_of_range_duration",
            "--nocapture",
        ])
        .env(detect::ENV, "stretch=100000000000000000000000s")
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr),
    );
    assert!(
        child.status.success(),
        "bodies fail once the variable holds a duration too large:\n{out}\n{err}"
    );
    assert!(err.contains("is not understood"), "{err}");
}

// ================================================================================================
// 11. Functions of the same name: methods of two types in one module.

struct Users;
struct Notes;

impl Users {
    #[blocking_first]
    async fn get(self: Arc<Self>) -> &'static str {
        "user"
    }
}

impl Notes {
    #[blocking_first]
    async fn get(self: Arc<Self>) -> &'static str {
        "note"
    }
}

/// Two methods `get` of two types in one module share their `function` (`module::get`, as
/// documented): their events and snapshots still tell them apart by line.
#[test]
fn same_named_methods_are_told_apart_by_their_line() {
    let _g = shared();
    let rt = multi_thread();
    rt.block_on(async {
        assert_eq!(Arc::new(Users).get().await, "user");
        assert_eq!(Arc::new(Notes).get().await, "note");
    });
    let events = splits("get");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].get("function"), events[1].get("function"));
    assert_ne!(events[0].num("line"), events[1].num("line"));
}

// ================================================================================================
// 12. A paused clock and a limit shared by two runtimes.

static PAUSED_SHARED: Limit = Limit::new("edges-paused-shared", 1);

#[blocking_first(limit = PAUSED_SHARED)]
async fn warms_a_loop() {}

/// The name of the thread the last stretch of `blocks_under_a_paused_clock` ran on.
static RAN_ON: Mutex<String> = Mutex::new(String::new());

#[blocking_first(limit = PAUSED_SHARED)]
async fn blocks_under_a_paused_clock() {
    *lock(&RAN_ON) = thread::current().name().unwrap_or("").to_string();
    std::thread::sleep(50 * MS);
}

fn paused_runtime() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// With tokio's clock paused (`#[tokio::test(start_paused = true)]`), time does not jump while a
/// body runs blocking code on a loop of its own runtime (whose blocking task keeps tokio from
/// auto-advancing): a 60 s timeout around 50 ms of blocking code does not fire. On an idle loop
/// of another runtime (another test in the same process, sharing the `static` limit) it can:
/// the README's "What does not hold" says so, and this checks that it is as documented.
#[test]
fn a_paused_clock_holds_on_a_limit_of_its_own_and_can_jump_on_a_shared_one() {
    let _g = shared();
    let timed_out = |rt: &Runtime| {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), blocks_under_a_paused_clock())
                .await
                .is_err()
        })
    };
    // On a loop of its own runtime.
    assert!(!timed_out(&paused_runtime()), "timed out on its own loop");
    assert_eq!(
        the_split("blocks_under_a_paused_clock").get("outcome"),
        "completed"
    );
    wait_until(|| PAUSED_SHARED.stats().loops == 0);
    assert_ne!(*lock(&RAN_ON), "other-runtime");
    // On an idle loop of another runtime (named, to tell where the stretch ran: the idle loop
    // lingers 10 ms, which a loaded machine may let pass).
    let other = Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("other-runtime")
        .enable_all()
        .build()
        .unwrap();
    other.block_on(warms_a_loop()); // its loop lingers, idle, on `other`
    let start = Instant::now();
    let fired = timed_out(&paused_runtime());
    let took = start.elapsed();
    wait_until(|| PAUSED_SHARED.stats().in_use == 0);
    // Only where it ran tells what to expect (a loaded machine may let the idle loop end first).
    if *lock(&RAN_ON) == "other-runtime" {
        assert!(
            fired && took < 40 * MS,
            "documented: the timeout fires early on another runtime's loop (after {took:?})"
        );
    }
}

#[blocking_first]
async fn warning_panics() -> u32 {
    thread::sleep(30 * MS);
    7
}

/// Regression: the long-stretch detector warned on the loop outside `catch_unwind` and before
/// the outcome was handed off; a layer that panics on warnings (a common test-harness pattern)
/// made the loop report "a destructor panicked", and the caller waited forever with the body
/// listed in flight. Now the caller sees the subscriber's panic, the slot is back and the body
/// is off the list; the loop serves the next body.
#[test]
fn a_subscriber_that_panics_on_a_warning_from_a_loop_fails_the_call_without_stranding_it() {
    let _g = exclusive();
    let _restore = Restore;
    detect::enable(Detectors::default().stretch(MS).io_poll(None));
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let rt = multi_thread();
        let outcome = rt.block_on(async { tokio::spawn(warning_panics()).await });
        // The next body of the limit still gets a slot and a loop.
        let after = rt.block_on(async {
            detect::disable();
            warning_panics().await
        });
        let _ = tx.send((
            outcome.map_err(|err| panic_message(&*err.into_panic())),
            after,
        ));
    });
    let (outcome, after) = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("hang: in flight {:?}", observe::in_flight()));
    assert_eq!(
        outcome,
        Err("a subscriber that panics on every warning".to_string())
    );
    assert_eq!(after, 7);
    assert_unlisted("warning_panics");
    let global = blocking_first::limit::global().stats();
    assert_eq!((global.in_use, global.waiting), (0, 0));
}

#[blocking_first]
async fn subscriber_panics_while_its_caller_unwinds(wake: oneshot::Receiver<()>) {
    wake.await.ok();
}

/// Regression: a subscriber that panics on the split event of a body dropped while its caller
/// unwinds panicked inside a destructor during unwinding, and the process aborted. Now that
/// panic is dropped; the caller's own panic goes on, and the body leaves the list.
#[test]
fn a_subscriber_that_panics_while_the_caller_unwinds_does_not_abort() {
    let _g = shared();
    let (_wake, parked) = oneshot::channel::<()>();
    dropped_while_its_caller_unwinds(
        "subscriber_panics_while_its_caller_unwinds",
        subscriber_panics_while_its_caller_unwinds(parked),
    );
    assert_eq!(
        splits("subscriber_panics_while_its_caller_unwinds").len(),
        1
    );
    assert_unlisted("subscriber_panics_while_its_caller_unwinds");
}

/// Records whether it was dropped on a runtime worker.
struct DropsWhere(Arc<Mutex<Option<bool>>>);

impl Drop for DropsWhere {
    fn drop(&mut self) {
        *lock(&self.0) = Some(common::is_worker());
    }
}

#[blocking_first]
async fn io_warning_panics(dropped_on_worker: Arc<Mutex<Option<bool>>>) {
    let _resource = DropsWhere(dropped_on_worker);
    io! {
        tokio::task::yield_now().await;
        let start = Instant::now();
        while start.elapsed() < 3 * MS {
            std::hint::spin_loop();
        }
        // A statement last (no final expression): the spin runs in async mode.
        let _spun = start.elapsed();
    };
}

/// Regression (found by the stress harness): a subscriber that panics on the `io!` detector's
/// warning unwound through the caller's poll with the body in a local, so the body's resources
/// were dropped on the runtime worker. Now the caller gets the panic, and the body is dropped
/// off the workers.
#[test]
fn a_subscriber_that_panics_on_an_io_warning_does_not_drop_the_body_on_a_worker() {
    let _g = exclusive();
    let _restore = Restore;
    detect::enable(Detectors::default().io_poll(MS).stretch(None));
    let rt = multi_thread();
    let dropped_on_worker = Arc::new(Mutex::new(None));
    let task = rt.spawn(io_warning_panics(dropped_on_worker.clone()));
    let err = rt.block_on(task).unwrap_err();
    assert_eq!(
        panic_message(&*err.into_panic()),
        "a subscriber that panics on every warning"
    );
    wait_until(|| lock(&dropped_on_worker).is_some());
    assert_eq!(
        *lock(&dropped_on_worker),
        Some(false),
        "dropped on a worker"
    );
    assert_unlisted("io_warning_panics");
}
