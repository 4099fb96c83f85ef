//! An annotated function awaited from another body's blocking code runs its blocking code right
//! there, on the caller's blocking thread, without a hop of its own; caps stay exact. (Own test
//! binary, tests run one after another: the hop counters are process-wide.)

mod common;

use std::sync::Mutex;
use std::thread::{self, ThreadId};
use std::time::Duration;

use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use common::*;

/// The counters are process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[blocking_first]
async fn inner() -> ThreadId {
    assert_blocking_thread();
    thread::current().id()
}

#[blocking_first]
async fn outer() -> (ThreadId, ThreadId) {
    assert_blocking_thread();
    let here = thread::current().id();
    (here, inner().await)
}

#[blocking_first]
async fn two_levels() -> (ThreadId, ThreadId, ThreadId) {
    let here = thread::current().id();
    let (middle, innermost) = outer().await;
    (here, middle, innermost)
}

#[blocking_first]
async fn inner_with_a_region() -> u32 {
    let waited = io! {
        tokio::time::sleep(Duration::from_millis(2)).await;
        1
    };
    assert_blocking_thread();
    waited + 1
}

#[blocking_first]
async fn outer_of_a_region() -> u32 {
    let value = inner_with_a_region().await;
    assert_blocking_thread();
    value
}

static ONE: Limit = Limit::new("one", 1);
static OTHER: Limit = Limit::new("other", 1);

#[blocking_first(limit = ONE)]
async fn inner_one() -> usize {
    ONE.stats().in_use
}

#[blocking_first(limit = ONE)]
async fn outer_one() -> usize {
    inner_one().await
}

#[blocking_first(limit = OTHER)]
async fn inner_other() -> (usize, usize) {
    (ONE.stats().in_use, OTHER.stats().in_use)
}

#[blocking_first(limit = ONE)]
async fn outer_one_inner_other() -> (usize, usize) {
    inner_other().await
}

async fn with_hops<F: std::future::Future>(body: F) -> (F::Output, u64) {
    let before = blocking_first::stats().hops;
    let value = body.await;
    (value, blocking_first::stats().hops - before)
}

#[test]
fn a_nested_call_runs_on_the_callers_thread_with_one_hop_in_all() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    on_both_flavors(|| async {
        let ((outer_thread, inner_thread), hops) = with_hops(outer()).await;
        assert_eq!(
            outer_thread, inner_thread,
            "the inner body ran on the caller's thread"
        );
        assert_eq!(hops, 1, "nested call: one hop in total");
        let ((a, b, c), hops) = with_hops(two_levels()).await;
        assert!(a == b && b == c, "two levels deep, one thread");
        assert_eq!(hops, 1, "two levels deep: one hop in total");
        let (value, hops) = with_hops(outer_of_a_region()).await;
        assert_eq!(value, 2);
        assert_eq!(
            hops, 2,
            "the inner region's wait costs its usual hop back, nothing more"
        );
    });
}

#[test]
fn a_limit_of_one_shared_by_outer_and_inner_neither_deadlocks_nor_exceeds_it() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    on_both_flavors(|| async {
        ONE.reset_peak();
        let (in_use, hops) = with_hops(outer_one()).await;
        assert_eq!(in_use, 1, "the inner body runs under the outer body's slot");
        assert_eq!(hops, 1);
        assert_eq!(ONE.stats().peak, 1);
    });
}

#[test]
fn an_inner_body_with_its_own_limit_takes_a_slot_of_it_or_hops() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    on_both_flavors(|| async {
        // A free slot of its own limit: taken without a hop.
        let ((one, other), hops) = with_hops(outer_one_inner_other()).await;
        assert_eq!((one, other), (1, 1), "a slot of each limit");
        assert_eq!(hops, 1);

        // Its own limit full: it waits in its limit's queue, the outer body holding no thread and
        // no slot of its own limit, then runs on a loop of its own limit; neither cap is exceeded.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
        let holder = tokio::spawn(hold_other(ready_tx, release_rx));
        ready_rx.await.unwrap();
        let waiter = tokio::spawn(with_hops(outer_one_inner_other()));
        while OTHER.stats().waiting == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The outer body's loop waits for the inner body at most its quick-await budget, then
        // gives its slot back.
        let since = std::time::Instant::now();
        while ONE.stats().in_use != 0 {
            assert!(
                since.elapsed() < Duration::from_secs(1),
                "the outer body waits holding a slot of its own"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.send(()).unwrap();
        holder.await.unwrap();
        let ((one, other), hops) = waiter.await.unwrap();
        assert_eq!(
            (one, other),
            (0, 1),
            "after the wait, it runs under its own limit only"
        );
        assert_eq!(
            hops, 3,
            "the wait costs the inner body its hop and the outer body one hop back, nothing more"
        );
        assert_eq!((ONE.stats().peak, OTHER.stats().peak), (1, 1));
    });
}

/// Holds `OTHER`'s only slot until told to let go.
#[blocking_first(limit = OTHER)]
async fn hold_other(
    ready: tokio::sync::oneshot::Sender<()>,
    release: tokio::sync::oneshot::Receiver<()>,
) {
    ready.send(()).unwrap();
    tokio::runtime::Handle::current().block_on(release).unwrap();
}

// Regression: a `parallel!` branch that went to another loop did not count as blocking code of
// its body, so an annotated helper it ran with `Handle::block_on` hopped and waited for a slot
// while the branch held one and the caller another, blocked in `join`: with a limit of 2 the
// call never finished, and every later body of that limit waited forever (`in_use: 2`).

static TWO: Limit = Limit::new("two", 2);

#[blocking_first(limit = TWO)]
async fn load(n: usize) -> (usize, ThreadId) {
    thread::sleep(Duration::from_millis(5));
    (n * 10, thread::current().id())
}

#[blocking_first(limit = TWO)]
async fn both_loads() -> [(usize, ThreadId, ThreadId); 2] {
    let handle = tokio::runtime::Handle::current();
    let (a, b) = blocking_first::parallel! {
        {
            let (value, ran_on) = handle.block_on(load(1));
            (value, ran_on, thread::current().id())
        },
        {
            thread::sleep(Duration::from_millis(50));
            let (value, ran_on) = handle.block_on(load(2));
            (value, ran_on, thread::current().id())
        },
    };
    [a, b]
}

#[test]
fn an_annotated_helper_run_with_block_on_in_a_dispatched_branch_runs_under_the_branchs_slot() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rounds = bounded(
        Duration::from_secs(20),
        || format!("deadlock: {:?}", TWO.stats()),
        || {
            let runtime = multi_thread();
            (0..5)
                .map(|_| runtime.block_on(both_loads()))
                .collect::<Vec<_>>()
        },
    );
    let mut elsewhere = 0;
    for [a, b] in rounds {
        assert_eq!((a.0, b.0), (10, 20));
        // Each helper ran on the thread of the branch that called it: no hop, no slot waited for.
        assert_eq!(a.1, a.2);
        assert_eq!(b.1, b.2);
        elsewhere += usize::from(a.2 != b.2);
    }
    assert!(
        elsewhere > 0,
        "no round sent its first branch to another loop"
    );
    let stats = TWO.stats();
    assert_eq!((stats.in_use, stats.waiting), (0, 0));
    assert!(stats.peak <= 2);
}

// Regression: a body cancelled mid-stretch is dropped on its loop, which still holds the slot;
// its destructors did not count as blocking code of a body, so an annotated function one of them
// ran with `Handle::block_on` hopped and waited for the slot its own thread held: with a limit
// of 1 the drop never ended, and every later body of that limit waited forever.

static CLEANUP: Limit = Limit::new("cleanup", 1);

#[blocking_first(limit = CLEANUP)]
async fn cleanup() -> u32 {
    7
}

/// Runs `cleanup` to completion in its destructor.
struct CleansUp(std::sync::Arc<std::sync::atomic::AtomicU32>);

impl Drop for CleansUp {
    fn drop(&mut self) {
        let value = tokio::runtime::Handle::current().block_on(cleanup());
        self.0.store(value, std::sync::atomic::Ordering::SeqCst);
    }
}

#[blocking_first(limit = CLEANUP)]
async fn holds_a_cleanup(done: std::sync::Arc<std::sync::atomic::AtomicU32>) {
    let _cleans_up = CleansUp(done);
    thread::sleep(Duration::from_millis(100));
    io! { tokio::task::yield_now().await };
}

#[test]
fn a_destructor_of_a_cancelled_body_runs_an_annotated_function_under_the_loops_slot() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (after, done) = bounded(
        Duration::from_secs(20),
        || format!("{:?}", CLEANUP.stats()),
        || {
            let runtime = multi_thread();
            let done = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
            let cancelled = runtime.block_on(async {
                tokio::time::timeout(Duration::from_millis(20), holds_a_cleanup(done.clone())).await
            });
            assert!(cancelled.is_err(), "the body was cancelled mid-stretch");
            let after = runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), cleanup()).await });
            (after.ok(), done.load(std::sync::atomic::Ordering::SeqCst))
        },
    );
    assert_eq!(
        after,
        Some(7),
        "the limit serves the next body: {:?}",
        CLEANUP.stats()
    );
    assert_eq!(done, 7, "the destructor's call finished");
    let stats = CLEANUP.stats();
    assert_eq!((stats.in_use, stats.waiting), (0, 0));
}
