//! Cancellation reaching blocking code: `is_cancelled()` / `check_cancelled()` in bodies, their
//! branches and the bodies they await; what stops, how soon, what is given back, and what the
//! split event and the metrics report about it.
//!
//! (Own test binary: it installs the process-wide tracing subscriber and metrics recorder.)

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use blocking_first::limit::Limit;
use blocking_first::{Cancelled, blocking_first, check_cancelled, is_cancelled, parallel};
use common::capture::{self, Captured};
use common::{bounded, multi_thread, on_both_flavors, wait_until};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::runtime::{Builder, Handle};

/// How often the bodies below check: the bound on how late they may see a cancellation is this
/// plus scheduling noise.
const TICK: Duration = Duration::from_millis(1);
/// How long any body here may run before the test calls it a failure to stop.
const FOREVER: Duration = Duration::from_secs(20);

/// What a body saw, for the test to read from outside.
#[derive(Default)]
struct Seen {
    started: AtomicBool,
    /// Rows done before the body stopped.
    rows: AtomicUsize,
    /// Milliseconds since `EPOCH` when the body saw its cancellation (0: never).
    saw_at: AtomicU64,
    stopped: AtomicBool,
    /// `is_cancelled()` read anywhere it was expected to be false, but was true.
    wrong: AtomicBool,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn stamp() -> u64 {
    epoch().elapsed().as_micros() as u64 + 1
}

impl Seen {
    fn new() -> Arc<Seen> {
        epoch();
        Arc::new(Seen::default())
    }

    /// Marks the stop when dropped: also when the body stops with `?`.
    fn stop_guard(self: &Arc<Seen>) -> StopGuard {
        StopGuard(self.clone())
    }

    /// The long blocking work: a row per tick, checking before each, until cancelled.
    fn rows(&self) -> Result<usize, Cancelled> {
        let start = Instant::now();
        while start.elapsed() < FOREVER {
            if let Err(cancelled) = check_cancelled() {
                self.saw_at.store(stamp(), Ordering::SeqCst);
                return Err(cancelled);
            }
            thread::sleep(TICK);
            self.rows.fetch_add(1, Ordering::SeqCst);
        }
        Ok(self.rows.load(Ordering::SeqCst))
    }

    fn wait_started(&self) {
        wait_until(|| self.started.load(Ordering::SeqCst));
    }

    fn wait_stopped(&self) {
        wait_until(|| self.stopped.load(Ordering::SeqCst));
    }
}

struct StopGuard(Arc<Seen>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::SeqCst);
    }
}

/// Waits off the runtime's workers.
async fn off_workers(f: impl FnOnce() + Send + 'static) {
    tokio::task::spawn_blocking(f).await.unwrap();
}

static EXPORT: Limit = Limit::new("cancellation-export", 1);

#[blocking_first(limit = EXPORT)]
async fn export(seen: Arc<Seen>) -> Result<usize, Cancelled> {
    let _stop = seen.stop_guard();
    seen.started.store(true, Ordering::SeqCst);
    seen.rows()
}

#[blocking_first(limit = EXPORT)]
async fn first_line(ran: Arc<AtomicBool>) -> bool {
    ran.store(true, Ordering::SeqCst);
    is_cancelled()
}

#[test]
fn is_cancelled_is_false_outside_every_body_and_while_the_caller_waits() {
    #[blocking_first]
    async fn everywhere_it_can_be_read() -> [bool; 6] {
        let blocking = is_cancelled();
        let in_io = io!({
            tokio::task::yield_now().await;
            is_cancelled()
        });
        let (left, right) = parallel!(is_cancelled(), is_cancelled());
        let in_scope = parallel::scope(|s| {
            let branch = s.spawn(is_cancelled);
            branch.join()
        });
        let ok = check_cancelled().is_err();
        [blocking, in_io, left || right, in_scope, ok, is_cancelled()]
    }

    assert!(!is_cancelled());
    assert_eq!(check_cancelled(), Ok(()));
    on_both_flavors(|| async {
        assert!(!is_cancelled(), "on a runtime worker, outside every body");
        assert_eq!(everywhere_it_can_be_read().await, [false; 6]);
        let on_the_pool = tokio::task::spawn_blocking(is_cancelled).await.unwrap();
        assert!(!on_the_pool, "on a plain blocking thread");
    });
}

#[test]
fn a_caller_that_lets_go_stops_the_blocking_work_at_its_next_check_and_frees_the_slot() {
    on_both_flavors(|| async {
        for how in ["abort", "timeout"] {
            let seen = Seen::new();
            let let_go = if how == "abort" {
                let task = tokio::spawn(export(seen.clone()));
                let started = seen.clone();
                off_workers(move || started.wait_started()).await;
                let let_go = stamp();
                task.abort();
                assert!(task.await.unwrap_err().is_cancelled());
                let_go
            } else {
                // What a `TimeoutLayer` does: the handler's future is dropped at the deadline.
                let deadline = Duration::from_millis(30);
                let timed_out = tokio::time::timeout(deadline, export(seen.clone())).await;
                assert!(timed_out.is_err(), "the export ran for 20 s");
                stamp()
            };
            let stopped = seen.clone();
            off_workers(move || stopped.wait_stopped()).await;
            let saw_at = seen.saw_at.load(Ordering::SeqCst);
            assert!(saw_at > 0, "{how}: the body never saw its cancellation");
            let late = Duration::from_micros(saw_at.saturating_sub(let_go));
            assert!(
                late < Duration::from_millis(500),
                "{how}: the body saw it {late:?} after its caller let go"
            );
            // The slot is free: another body of the same cap runs now.
            let ran = Arc::new(AtomicBool::new(false));
            let next = tokio::time::timeout(Duration::from_secs(10), first_line(ran.clone()))
                .await
                .expect("the cancelled body kept the only slot");
            assert!(!next, "a fresh body is not cancelled");
            assert!(ran.load(Ordering::SeqCst));
        }
    });
}

#[test]
fn a_body_cancelled_while_it_waits_for_a_slot_never_starts() {
    static ONE: Limit = Limit::new("cancellation-one", 1);

    #[blocking_first(limit = ONE)]
    async fn holder(seen: Arc<Seen>) -> Result<usize, Cancelled> {
        let _stop = seen.stop_guard();
        seen.started.store(true, Ordering::SeqCst);
        seen.rows()
    }

    #[blocking_first(limit = ONE)]
    async fn queued(ran: Arc<AtomicBool>) {
        ran.store(true, Ordering::SeqCst);
    }

    on_both_flavors(|| async {
        let seen = Seen::new();
        let holding = tokio::spawn(holder(seen.clone()));
        let started = seen.clone();
        off_workers(move || started.wait_started()).await;
        let ran = Arc::new(AtomicBool::new(false));
        let waiting = tokio::spawn(queued(ran.clone()));
        while ONE.stats().waiting == 0 {
            tokio::time::sleep(TICK).await;
        }
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        assert_eq!(ONE.stats().waiting, 0, "the cancelled body left the queue");
        holding.abort();
        let _ = holding.await;
        let stopped = seen.clone();
        off_workers(move || stopped.wait_stopped()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!ran.load(Ordering::SeqCst), "the cancelled body ran");
    });
}

#[test]
fn every_branch_of_a_cancelled_body_sees_it() {
    #[blocking_first]
    async fn branches(seen: Arc<Seen>, each: Arc<AtomicUsize>) {
        let _stop = seen.stop_guard();
        let until_cancelled = || {
            let _ = seen.rows();
            each.fetch_add(1, Ordering::SeqCst);
        };
        seen.started.store(true, Ordering::SeqCst);
        parallel!(until_cancelled(), until_cancelled());
        parallel::scope(|s| {
            s.spawn(until_cancelled);
            s.spawn(until_cancelled);
        });
        parallel::map(0..2, |_| until_cancelled());
    }

    on_both_flavors(|| async {
        let seen = Seen::new();
        let each = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(branches(seen.clone(), each.clone()));
        let started = seen.clone();
        off_workers(move || started.wait_started()).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        task.abort();
        let _ = task.await;
        let stopped = seen.clone();
        off_workers(move || stopped.wait_stopped()).await;
        // Once cancelled, every later branch sees it at its first check: all six ran, and all
        // ended well before their 20 s.
        assert_eq!(each.load(Ordering::SeqCst), 6);
    });
}

#[test]
fn a_nested_body_sees_its_outermost_callers_cancellation() {
    static OTHER: Limit = Limit::new("cancellation-other", 2);

    #[blocking_first]
    async fn inner(seen: Arc<Seen>) -> Result<usize, Cancelled> {
        seen.started.store(true, Ordering::SeqCst);
        seen.rows()
    }

    // Another cap: awaited in the caller's blocking code, it runs inline under a slot of its
    // own, not the caller's.
    #[blocking_first(limit = OTHER)]
    async fn middle(seen: Arc<Seen>) -> Result<usize, Cancelled> {
        inner(seen).await
    }

    #[blocking_first]
    async fn outer(seen: Arc<Seen>) -> Result<usize, Cancelled> {
        let _stop = seen.stop_guard();
        let rows = Handle::current().block_on(middle(seen.clone()));
        // Back in the outer body's blocking code: cancelled too.
        if !is_cancelled() {
            seen.wrong.store(true, Ordering::SeqCst);
        }
        rows
    }

    // Awaited right in the caller's blocking code, same cap: inline, under the caller's slot.
    #[blocking_first]
    async fn outer_awaiting(seen: Arc<Seen>) -> Result<usize, Cancelled> {
        let _stop = seen.stop_guard();
        inner(seen.clone()).await
    }

    // Awaited from branches: one dispatched to a loop, one on the caller's thread.
    #[blocking_first]
    async fn outer_of_branches(seen: Arc<Seen>) -> Result<usize, Cancelled> {
        let _stop = seen.stop_guard();
        let (left, right) = parallel!(
            Handle::current().block_on(middle(seen.clone())),
            Handle::current().block_on(inner(seen.clone())),
        );
        left.and(right)
    }

    on_both_flavors(|| async {
        for how in ["block_on", "branches", "await"] {
            let seen = Seen::new();
            let task = match how {
                "block_on" => tokio::spawn(outer(seen.clone())),
                "branches" => tokio::spawn(outer_of_branches(seen.clone())),
                _ => tokio::spawn(outer_awaiting(seen.clone())),
            };
            let started = seen.clone();
            off_workers(move || started.wait_started()).await;
            let let_go = stamp();
            task.abort();
            let _ = task.await;
            let stopped = seen.clone();
            off_workers(move || stopped.wait_stopped()).await;
            let saw_at = seen.saw_at.load(Ordering::SeqCst);
            assert!(saw_at > 0, "{how}: never seen");
            let late = Duration::from_micros(saw_at.saturating_sub(let_go));
            assert!(
                late < Duration::from_millis(500),
                "{how}: seen {late:?} late"
            );
            assert!(
                !seen.wrong.load(Ordering::SeqCst),
                "the outer body's own code did not see its cancellation"
            );
        }
    });
}

#[test]
fn a_task_spawned_from_a_body_is_not_cancelled_with_it() {
    #[blocking_first]
    async fn child(go: Arc<AtomicBool>, cancelled: Arc<AtomicBool>) {
        wait_until(|| go.load(Ordering::SeqCst));
        cancelled.store(is_cancelled(), Ordering::SeqCst);
    }

    #[blocking_first]
    async fn parent(seen: Arc<Seen>, go: Arc<AtomicBool>, cancelled: Arc<AtomicBool>) {
        let _stop = seen.stop_guard();
        let detached = tokio::spawn(child(go, cancelled));
        seen.started.store(true, Ordering::SeqCst);
        let _ = seen.rows();
        drop(detached);
    }

    on_both_flavors(|| async {
        let seen = Seen::new();
        let (go, cancelled) = (Arc::default(), Arc::new(AtomicBool::new(true)));
        let task = tokio::spawn(parent(seen.clone(), Arc::clone(&go), cancelled.clone()));
        let started = seen.clone();
        off_workers(move || started.wait_started()).await;
        task.abort();
        let _ = task.await;
        let stopped = seen.clone();
        off_workers(move || stopped.wait_stopped()).await;
        go.store(true, Ordering::SeqCst);
        let done = cancelled.clone();
        off_workers(move || wait_until(|| !done.load(Ordering::SeqCst))).await;
    });
}

#[test]
fn a_runtime_shutting_down_cancels_the_bodies_it_runs() {
    // `drop` is what `#[tokio::main]` does at its end.
    for (flavor, how) in [
        ("current_thread", "drop"),
        ("multi_thread", "drop"),
        ("multi_thread", "shutdown_timeout"),
        ("current_thread", "shutdown_timeout"),
    ] {
        let runtime = match flavor {
            "current_thread" => Builder::new_current_thread().enable_all().build(),
            _ => Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build(),
        }
        .unwrap();
        // One body a task of the runtime, one awaited from a plain thread with
        // `Handle::block_on` (no task of the runtime owns it: only the runtime's shutdown tells
        // it).
        let (spawned, blocked_on) = (Seen::new(), Seen::new());
        runtime.spawn(export_anywhere(spawned.clone()));
        let handle = runtime.handle().clone();
        let from_a_thread = blocked_on.clone();
        let plain = thread::spawn(move || handle.block_on(export_anywhere(from_a_thread)));
        runtime.block_on(async {
            let both = (spawned.clone(), blocked_on.clone());
            off_workers(move || {
                both.0.wait_started();
                both.1.wait_started();
            })
            .await;
        });
        let shut_down = Instant::now();
        bounded(
            Duration::from_secs(30),
            || "the runtime's shutdown waited for bodies that do not stop".into(),
            move || match how {
                "drop" => drop(runtime),
                _ => runtime.shutdown_timeout(Duration::from_secs(3)),
            },
        );
        let took = shut_down.elapsed();
        if (flavor, how) == ("current_thread", "shutdown_timeout") {
            // tokio's order, not ours: a current-thread runtime's `shutdown_timeout` waits for
            // its blocking pool first and drops its tasks after, so the bodies hear of the
            // shutdown only once the timeout ran out (documented in the cancellation guide).
            assert!(took >= Duration::from_secs(3), "{flavor} {how}: {took:?}");
            wait_until(|| spawned.stopped.load(Ordering::SeqCst));
        } else {
            assert!(
                took < Duration::from_secs(2),
                "{flavor} {how}: shutdown took {took:?}"
            );
        }
        // The task's body may run on a loop of another test's runtime (the global limit is
        // shared), which this shutdown does not wait for: it sees the cancellation there.
        wait_until(|| spawned.saw_at.load(Ordering::SeqCst) > 0);
        let result = plain.join().unwrap();
        assert_eq!(
            result,
            Err(Cancelled::default()),
            "{flavor} {how}: block_on"
        );
        assert!(
            blocked_on.saw_at.load(Ordering::SeqCst) > 0,
            "{flavor} {how}"
        );
    }
}

/// A limit of this test's own: its loops belong to the runtime under test (a shared limit's loop
/// of another test's runtime says nothing of this one's shutdown).
static SHUTDOWN: Limit = Limit::unbounded("cancellation-shutdown");

#[blocking_first(limit = SHUTDOWN)]
async fn export_anywhere(seen: Arc<Seen>) -> Result<usize, Cancelled> {
    let _stop = seen.stop_guard();
    seen.started.store(true, Ordering::SeqCst);
    seen.rows()
}

/// The process's recorder, installed once for every test of this file.
fn metrics() -> PrometheusHandle {
    static METRICS: OnceLock<PrometheusHandle> = OnceLock::new();
    METRICS
        .get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
        .clone()
}

/// The split events of `function` with outcome `cancelled`.
fn cancelled_splits(function: &str) -> Vec<Captured> {
    capture::events("blocking_first::split", function)
        .into_iter()
        .filter(|event| event.get("outcome") == "cancelled")
        .collect()
}

#[test]
fn the_split_event_and_the_metrics_say_how_long_a_cancelled_body_ran_for_nobody() {
    const IGNORES: Duration = Duration::from_millis(80);

    /// Sees its cancellation, then goes on for `IGNORES` as if it had not.
    #[blocking_first]
    async fn finishes_its_row(seen: Arc<Seen>) {
        let _stop = seen.stop_guard();
        seen.started.store(true, Ordering::SeqCst);
        let _ = seen.rows();
        thread::sleep(IGNORES);
    }

    #[blocking_first]
    async fn stops_at_once(seen: Arc<Seen>) -> Result<usize, Cancelled> {
        let _stop = seen.stop_guard();
        seen.started.store(true, Ordering::SeqCst);
        seen.rows()
    }

    #[blocking_first]
    async fn waits_on_a_timer(seen: Arc<Seen>) {
        let _stop = seen.stop_guard();
        seen.started.store(true, Ordering::SeqCst);
        tokio::time::sleep(FOREVER).await;
    }

    capture::install();
    let metrics = metrics();
    let recorded = Mutex::new(Vec::new());
    multi_thread().block_on(async {
        for which in 0..3 {
            let seen = Seen::new();
            let moved = seen.clone();
            let task = match which {
                0 => tokio::spawn(finishes_its_row(seen.clone())),
                1 => tokio::spawn(async move {
                    let _ = stops_at_once(moved).await;
                }),
                _ => tokio::spawn(waits_on_a_timer(seen.clone())),
            };
            let started = seen.clone();
            off_workers(move || started.wait_started()).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            task.abort();
            let _ = task.await;
            let stopped = seen.clone();
            off_workers(move || stopped.wait_stopped()).await;
            recorded.lock().unwrap().push(seen);
        }
    });
    // A loop reports the body it stopped after the body's destructors ran: wait for it.
    let names = ["finishes_its_row", "stops_at_once", "waits_on_a_timer"];
    wait_until(|| names.iter().all(|name| !cancelled_splits(name).is_empty()));
    thread::sleep(Duration::from_millis(20));
    let after = |name: &str| {
        let events = cancelled_splits(name);
        assert_eq!(events.len(), 1, "{name}: reported once: {events:?}");
        // The global limit's capacity as the body ended: adaptive, at least its floor.
        assert!(events[0].num("capacity") >= 2, "{events:?}");
        Duration::from_micros(events[0].num("after_cancel_us"))
    };
    let ignored = after("finishes_its_row");
    assert!(
        ignored >= IGNORES && ignored < IGNORES + Duration::from_millis(900),
        "a body that ran {IGNORES:?} after it saw the cancellation reports {ignored:?}"
    );
    let stopped = after("stops_at_once");
    assert!(
        stopped < Duration::from_millis(500),
        "a body that stopped at its next check reports {stopped:?}"
    );
    assert_eq!(
        after("waits_on_a_timer"),
        Duration::ZERO,
        "a body parked on an .await stops the moment its caller lets go"
    );
    let text = metrics.render();
    for name in names {
        let line = text
            .lines()
            .find(|line| {
                line.starts_with("blocking_first_after_cancel_seconds_count") && line.contains(name)
            })
            .unwrap_or_else(|| panic!("no after_cancel count for {name}:\n{text}"));
        assert!(line.ends_with(" 1"), "{line}");
    }
    let sum = text
        .lines()
        .find(|line| {
            line.starts_with("blocking_first_after_cancel_seconds_sum")
                && line.contains("finishes_its_row")
        })
        .unwrap();
    let seconds: f64 = sum.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(seconds >= IGNORES.as_secs_f64(), "{sum}");
}

#[test]
fn cancelled_is_an_error_that_converts() {
    fn is_error<E: std::error::Error + Send + Sync + Clone + Default + 'static>() {}
    is_error::<Cancelled>();
    let boxed: Box<dyn std::error::Error + Send + Sync> = Cancelled::default().into();
    assert!(boxed.to_string().contains("stopped waiting"), "{boxed}");
    assert!(boxed.downcast_ref::<Cancelled>().is_some());
}
