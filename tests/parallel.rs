//! `parallel!`, `parallel::scope` and `parallel::map`: borrowing, order, panics, a saturated pool,
//! shutdown, and real side-by-side execution.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use blocking_first::{blocking_first, parallel};
use common::*;

#[blocking_first]
async fn borrowing(words: Vec<String>) -> (usize, String, Vec<usize>, Vec<String>) {
    let mut lengths = Vec::new();
    let mut upper = Vec::new();
    let joined = words.join(" ");
    let (count, first, (), ()) = parallel! {
        words.len(),                                     // shared borrow
        joined.split(' ').next().unwrap().to_string(),   // shared borrow of another local
        lengths.extend(words.iter().map(String::len)),   // mutable borrow, this branch only
        upper.extend(words.iter().map(|w| w.to_uppercase())),
    };
    (count, first, lengths, upper)
}

#[test]
fn branches_borrow_locals_shared_and_disjoint_mutable_and_keep_their_order() {
    on_both_flavors(|| async {
        let words = vec!["ab".to_string(), "cde".to_string()];
        assert_eq!(
            borrowing(words).await,
            (
                2,
                "ab".into(),
                vec![2, 3],
                vec!["AB".to_string(), "CDE".to_string()]
            )
        );
    });
}

fn parse(text: &str) -> Result<u32, std::num::ParseIntError> {
    text.parse()
}

#[blocking_first]
async fn question_mark_in_branches(a: String, b: String) -> Result<u32, String> {
    let (x, y) = parallel! {
        { let n = parse(&a)?; Ok::<_, std::num::ParseIntError>(n * 2) },
        { let n = parse(&b)?; Ok::<_, std::num::ParseIntError>(n + 1) },
    };
    // Each `?` returned from its own branch only: both results are here.
    match (x, y) {
        (Ok(x), Ok(y)) => Ok(x + y),
        (x, y) => Err(format!("{} {}", x.is_ok(), y.is_ok())),
    }
}

#[test]
fn question_mark_returns_from_its_branch() {
    on_both_flavors(|| async {
        assert_eq!(
            question_mark_in_branches("4".into(), "1".into()).await,
            Ok(10)
        );
        assert_eq!(
            question_mark_in_branches("x".into(), "1".into()).await,
            Err("false true".into())
        );
    });
}

/// On an unbounded limit: three threads at once whatever the global limit's capacity (adaptive,
/// from the cores: a branch that finds no slot runs on its caller's thread, after the others).
#[blocking_first(limit = WIDE)]
async fn three_sleeps() -> (thread::ThreadId, thread::ThreadId, thread::ThreadId) {
    let nap = || {
        assert_blocking_thread();
        thread::sleep(Duration::from_millis(100));
        thread::current().id()
    };
    parallel! { nap(), nap(), nap() }
}

#[test]
fn three_100ms_branches_take_about_100ms_on_three_threads() {
    on_both_flavors(|| async {
        let start = Instant::now();
        let (a, b, c) = three_sleeps().await;
        let elapsed = start.elapsed();
        assert!(elapsed < Duration::from_millis(250), "took {elapsed:?}");
        assert_eq!(
            HashSet::from([a, b, c]).len(),
            3,
            "branches ran on three threads"
        );
    });
}

#[blocking_first]
async fn one_branch_panics(finished: Arc<AtomicUsize>) -> (u32, u32, u32) {
    let slow = || {
        thread::sleep(Duration::from_millis(100));
        finished.fetch_add(1, Ordering::SeqCst);
        1
    };
    parallel! {
        slow(),
        panic!("branch failed"),
        slow(),
    }
}

#[test]
fn a_panicking_branch_is_reraised_after_every_branch_finished() {
    on_both_flavors(|| async {
        let finished = Arc::new(AtomicUsize::new(0));
        let err = tokio::spawn(one_branch_panics(finished.clone()))
            .await
            .unwrap_err();
        assert_eq!(panic_message(&*err.into_panic()), "branch failed");
        assert_eq!(
            finished.load(Ordering::SeqCst),
            2,
            "the other branches finished first"
        );
    });
}

#[test]
fn a_panicking_caller_waits_for_its_started_branches_then_reraises() {
    multi_thread().block_on(async {
        let started = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicBool::new(false));
        let (s1, f1) = (started.clone(), finished.clone());
        let err = tokio::task::spawn_blocking(move || {
            let data = [1, 2, 3];
            parallel::scope(|s| {
                s.spawn(|| {
                    s1.store(true, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(100));
                    f1.store(data.len() == 3, Ordering::SeqCst);
                });
                wait_until(|| s1.load(Ordering::SeqCst));
                panic!("caller failed");
            })
        })
        .await
        .unwrap_err();
        assert_eq!(panic_message(&*err.into_panic()), "caller failed");
        assert!(started.load(Ordering::SeqCst));
        assert!(
            finished.load(Ordering::SeqCst),
            "the re-raise came before the branch finished"
        );
    });
}

#[blocking_first]
async fn four_branches() -> u32 {
    let (a, b, c, d) = parallel! { 1, 2, 3, 4 };
    a + b + c + d
}

#[test]
fn a_saturated_pool_does_not_deadlock() {
    for runtime in with_one_blocking_thread() {
        runtime.block_on(async {
            // The body holds the only blocking thread: its branches can never start on the pool,
            // so the caller takes them back and runs them itself.
            let results = tokio::time::timeout(Duration::from_secs(10), async {
                let tasks: Vec<_> = (0..4).map(|_| tokio::spawn(four_branches())).collect();
                let mut results = Vec::new();
                for task in tasks {
                    results.push(task.await.unwrap());
                }
                results
            })
            .await
            .expect("deadlocked");
            assert_eq!(results, [10, 10, 10, 10]);
        });
    }
}

#[blocking_first]
async fn parallel_then_io(started: Arc<AtomicBool>, after: Arc<AtomicBool>) {
    let data: Vec<u64> = (0..1000).collect();
    started.store(true, Ordering::SeqCst);
    let (a, b) = parallel! {
        { thread::sleep(Duration::from_millis(200)); data.iter().sum::<u64>() },
        { thread::sleep(Duration::from_millis(200)); data.len() as u64 },
    };
    assert_eq!((a, b), (499_500, 1000));
    io! { suspend().await };
    after.store(true, Ordering::SeqCst);
}

#[test]
fn runtime_shutdown_during_a_parallel_region_neither_hangs_nor_runs_code_after() {
    for runtime in [current_thread(), multi_thread()] {
        let started = Arc::new(AtomicBool::new(false));
        let after = Arc::new(AtomicBool::new(false));
        runtime.spawn(parallel_then_io(started.clone(), after.clone()));
        runtime.block_on(async {
            while !started.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let start = Instant::now();
        drop(runtime);
        assert!(start.elapsed() < Duration::from_secs(5), "shutdown hung");
        thread::sleep(Duration::from_millis(50));
        assert!(
            !after.load(Ordering::SeqCst),
            "user code ran after shutdown"
        );
    }
}

/// Unbounded: six items side by side need six threads (the global limit adapts from its floor,
/// and an item that finds no slot runs on its caller's thread).
static WIDE: blocking_first::limit::Limit =
    blocking_first::limit::Limit::unbounded("parallel-wide");

#[blocking_first(limit = WIDE)]
async fn doubled_slowly() -> Vec<u64> {
    parallel::map(0..6u64, |n| {
        thread::sleep(Duration::from_millis(100));
        n * 2
    })
}

#[test]
fn map_keeps_the_order_of_its_items_and_runs_them_side_by_side() {
    multi_thread().block_on(async {
        let start = Instant::now();
        let doubled = doubled_slowly().await;
        assert_eq!(doubled, [0, 2, 4, 6, 8, 10]);
        assert!(
            start.elapsed() < Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
        let empty: Vec<u8> = tokio::task::spawn_blocking(|| parallel::map(Vec::<u8>::new(), |n| n))
            .await
            .unwrap();
        assert!(empty.is_empty());
    });
}

#[blocking_first]
async fn dynamic(ids: Vec<u32>) -> (Vec<u32>, u32) {
    let squares = parallel::map(&ids, |id| id * id);
    let mut total = 0;
    parallel::scope(|s| {
        let branches: Vec<_> = ids.iter().map(|id| s.spawn(move || id + 1)).collect();
        total = branches.into_iter().map(|b| b.join()).sum();
    });
    (squares, total)
}

#[test]
fn the_dynamic_forms_work_inside_a_body() {
    on_both_flavors(|| async {
        assert_eq!(dynamic(vec![1, 2, 3]).await, (vec![1, 4, 9], 9));
    });
}

#[test]
fn unjoined_branch_panics_are_reraised_at_the_end_of_the_scope() {
    multi_thread().block_on(async {
        let err = tokio::task::spawn_blocking(|| {
            parallel::scope(|s| {
                s.spawn(|| panic!("nobody joined me"));
            });
        })
        .await
        .unwrap_err();
        assert_eq!(panic_message(&*err.into_panic()), "nobody joined me");
    });
}

/// Counts drops, to check a branch's captures are dropped exactly once even when the branch is
/// taken back or never run.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Its own limit, so that no loop of another test's runtime can take the branch.
static UNSTARTABLE: blocking_first::limit::Limit =
    blocking_first::limit::Limit::new("unstartable", 2);

/// Spawns a branch that cannot start (its loop waits for the runtime's only blocking thread,
/// which this body holds), then panics.
#[blocking_first(limit = UNSTARTABLE)]
async fn panics_with_an_unstarted_branch(drops: Arc<AtomicUsize>, ran: Arc<AtomicBool>) {
    parallel::scope(|s| {
        let counted = Counted(drops.clone());
        let ran = ran.clone();
        s.spawn(move || {
            let _counted = counted;
            ran.store(true, Ordering::SeqCst);
        });
        panic!("caller failed first");
    })
}

#[test]
fn branches_dropped_unrun_after_a_caller_panic_are_dropped_once() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let drops = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicBool::new(false));
        let err = tokio::spawn(panics_with_an_unstarted_branch(drops.clone(), ran.clone()))
            .await
            .unwrap_err();
        assert_eq!(panic_message(&*err.into_panic()), "caller failed first");
        assert!(
            !ran.load(Ordering::SeqCst),
            "a branch ran after its caller panicked"
        );
        // Dropped by the scope, once; the loop's copy of the job holds no second one.
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}
