//! Behaviour of `#[blocking_first]` bodies: where each part runs, control flow through regions,
//! panics, cancellation and shutdown, on both runtime flavours.

// The loops below exit on purpose from inside regions, to test exactly that.
#![allow(clippy::never_loop)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use blocking_first::blocking_first;
use common::*;

#[blocking_first]
async fn where_things_run() -> (bool, bool, bool, bool) {
    assert_blocking_thread();
    let (before_suspension, after_suspension) = io! {
        // Lazy switching: entering the region does not move the body yet.
        let before = is_worker();
        suspend().await;
        let after = is_worker();
        (before, after)
    };
    assert_blocking_thread();
    let after_region = is_worker();
    // In tail position the region needs no way back: the body ends on the runtime.
    io! {
        suspend().await;
        (before_suspension, after_suspension, after_region, is_worker())
    }
}

#[test]
fn blocking_code_runs_off_the_workers_and_io_code_on_them() {
    on_both_flavors(|| async {
        let (before, after, after_region, tail) = where_things_run().await;
        assert!(
            !before,
            "an io region starts where the body is, until it suspends"
        );
        assert!(after, "io code after its first suspension runs on a worker");
        assert!(
            !after_region,
            "blocking code after a region runs off the workers"
        );
        assert!(tail, "a tail region ends on a worker");
    });
}

#[blocking_first]
async fn plain_await_outside_a_region(values: Vec<u32>) -> u32 {
    assert_blocking_thread();
    let doubled = async_double(values[0]).await;
    assert_blocking_thread();
    doubled + values[1]
}

async fn async_double(x: u32) -> u32 {
    suspend().await;
    x * 2
}

#[test]
fn plain_await_outside_a_region_resumes_on_a_blocking_thread() {
    on_both_flavors(|| async {
        assert_eq!(plain_await_outside_a_region(vec![20, 2]).await, 42);
    });
}

#[blocking_first]
async fn waits_in_io(wait: Duration) -> usize {
    std::thread::sleep(Duration::from_millis(1));
    io! { tokio::time::sleep(wait).await };
    std::thread::sleep(Duration::from_millis(1));
    1
}

#[test]
fn bodies_waiting_in_io_hold_no_blocking_thread() {
    for runtime in with_one_blocking_thread() {
        runtime.block_on(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..50)
                .map(|_| tokio::spawn(waits_in_io(Duration::from_millis(100))))
                .collect();
            let mut done = 0;
            for task in tasks {
                done += task.await.unwrap();
            }
            let elapsed = start.elapsed();
            assert_eq!(done, 50);
            // Holding the one blocking thread through each wait would take 50 × 100 ms = 5 s.
            assert!(
                elapsed < Duration::from_millis(1500),
                "50 bodies took {elapsed:?} with one blocking thread"
            );
        });
    }
}

#[derive(Debug, PartialEq)]
struct Failed(&'static str);

async fn fallible(ok: bool) -> Result<u32, Failed> {
    suspend().await;
    if ok { Ok(7) } else { Err(Failed("upstream")) }
}

#[blocking_first]
async fn question_mark_in_io(ok: bool, after: Arc<AtomicBool>) -> Result<u32, Failed> {
    let value = io! { fallible(ok).await? };
    after.store(true, Ordering::SeqCst);
    assert_blocking_thread();
    Ok(value + 1)
}

#[blocking_first]
async fn return_in_io(early: bool, after: Arc<AtomicBool>) -> Box<dyn std::fmt::Display + Send> {
    io! {
        suspend().await;
        if early {
            return Box::new("early");
        }
    };
    after.store(true, Ordering::SeqCst);
    Box::new(5)
}

#[test]
fn question_mark_and_return_inside_io_leave_the_function() {
    on_both_flavors(|| async {
        let after = Arc::new(AtomicBool::new(false));
        assert_eq!(
            question_mark_in_io(false, after.clone()).await,
            Err(Failed("upstream"))
        );
        assert!(
            !after.load(Ordering::SeqCst),
            "code after a failed `?` must not run"
        );
        assert_eq!(question_mark_in_io(true, after.clone()).await, Ok(8));
        assert!(after.load(Ordering::SeqCst));

        let after = Arc::new(AtomicBool::new(false));
        assert_eq!(return_in_io(true, after.clone()).await.to_string(), "early");
        assert!(
            !after.load(Ordering::SeqCst),
            "code after `return` must not run"
        );
        assert_eq!(return_in_io(false, after.clone()).await.to_string(), "5");
        assert!(after.load(Ordering::SeqCst));
    });
}

#[blocking_first]
async fn loops_leaving_regions() -> Vec<String> {
    let mut log = Vec::new();
    for i in 0..4 {
        let value = io! {
            suspend().await;
            if i == 1 {
                continue;
            }
            if i == 3 {
                break;
            }
            i * 10
        };
        assert_blocking_thread();
        log.push(format!("for {value}"));
    }
    assert_blocking_thread();

    let found = loop {
        io! {
            suspend().await;
            break "found";
        }
    };
    assert_blocking_thread();
    log.push(found.to_string());

    let mut rounds = 0;
    'outer: loop {
        rounds += 1;
        loop {
            io! {
                suspend().await;
                if rounds == 2 {
                    break 'outer;
                }
                continue 'outer;
            }
        }
    }
    assert_blocking_thread();
    log.push(format!("outer {rounds}"));

    let mut n = 0;
    while n < 3 {
        io! {
            suspend().await;
            n += 1;
            // A loop inside the region: this `break` stays inside it.
            loop {
                suspend().await;
                break;
            }
        }
        assert_blocking_thread();
    }
    log.push(format!("while {n}"));

    let labeled = 'block: {
        io! {
            suspend().await;
            if n == 3 {
                break 'block "labeled";
            }
        }
        "not reached"
    };
    assert_blocking_thread();
    log.push(labeled.to_string());

    // A let chain in a `while` condition around a region.
    let mut items = vec![3, 2, 1].into_iter();
    let mut kept = Vec::new();
    while let Some(item) = items.next()
        && item > 0
    {
        io! {
            suspend().await;
            if item == 2 {
                continue;
            }
        }
        assert_blocking_thread();
        kept.push(item);
    }
    log.push(format!("chain {kept:?}"));
    log
}

#[test]
fn break_and_continue_out_of_io_return_to_blocking_code() {
    on_both_flavors(|| async {
        assert_eq!(
            loops_leaving_regions().await,
            [
                "for 0",
                "for 20",
                "found",
                "outer 2",
                "while 3",
                "labeled",
                "chain [3, 1]"
            ]
        );
    });
}

#[blocking_first]
async fn borrows_across_regions(name: String) -> (usize, String) {
    let mut seen = Vec::new();
    let greeting = format!("hello {name}");
    io! {
        seen.push(greeting.as_str());
        suspend().await;
        seen.push(&name);
    }
    let first: &str = seen[0];
    assert_blocking_thread();
    let len = io! {
        suspend().await;
        first.len() + seen.len()
    };
    (len, greeting)
}

#[test]
fn regions_borrow_locals_of_the_function() {
    on_both_flavors(|| async {
        assert_eq!(
            borrows_across_regions("you".into()).await,
            (11, "hello you".to_string())
        );
    });
}

#[blocking_first]
async fn panics_in(blocking: bool) -> u32 {
    if blocking {
        panic!("boom in blocking code");
    }
    io! {
        suspend().await;
        panic!("boom in io code");
    }
}

#[test]
fn panics_reach_the_caller_with_their_payload() {
    on_both_flavors(|| async {
        for (blocking, message) in [(true, "boom in blocking code"), (false, "boom in io code")] {
            let err = tokio::spawn(panics_in(blocking)).await.unwrap_err();
            assert!(err.is_panic());
            assert_eq!(panic_message(&*err.into_panic()), message);
        }
    });
}

/// Counts drops and remembers whether any happened on a runtime worker.
struct DropProbe {
    drops: Arc<AtomicUsize>,
    on_worker: Arc<AtomicBool>,
}

impl Drop for DropProbe {
    fn drop(&mut self) {
        if is_worker() {
            self.on_worker.store(true, Ordering::SeqCst);
        }
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Default, Clone)]
struct Probes {
    started: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    ran_after: Arc<AtomicBool>,
    drops: Arc<AtomicUsize>,
    dropped_on_worker: Arc<AtomicBool>,
}

#[blocking_first]
async fn long_blocking_stretch(probes: Probes) {
    let _probe = DropProbe {
        drops: probes.drops.clone(),
        on_worker: probes.dropped_on_worker.clone(),
    };
    probes.started.store(true, Ordering::SeqCst);
    wait_until(|| probes.release.load(Ordering::SeqCst));
    io! { suspend().await };
    probes.ran_after.store(true, Ordering::SeqCst);
}

#[test]
fn dropping_the_future_during_blocking_code_drops_the_body_once_off_the_workers() {
    on_both_flavors(|| async {
        let probes = Probes::default();
        let task = tokio::spawn(long_blocking_stretch(probes.clone()));
        let started = probes.started.clone();
        tokio::task::spawn_blocking(move || wait_until(|| started.load(Ordering::SeqCst)))
            .await
            .unwrap();
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        probes.release.store(true, Ordering::SeqCst);
        let drops = probes.drops.clone();
        tokio::task::spawn_blocking(move || wait_until(|| drops.load(Ordering::SeqCst) == 1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            probes.drops.load(Ordering::SeqCst),
            1,
            "dropped exactly once"
        );
        assert!(
            !probes.dropped_on_worker.load(Ordering::SeqCst),
            "dropped on a worker"
        );
        assert!(
            !probes.ran_after.load(Ordering::SeqCst),
            "ran code after cancellation"
        );
    });
}

#[blocking_first]
async fn parked(probes: Probes, in_io: bool) {
    let _probe = DropProbe {
        drops: probes.drops.clone(),
        on_worker: probes.dropped_on_worker.clone(),
    };
    probes.started.store(true, Ordering::SeqCst);
    if in_io {
        io! { tokio::time::sleep(Duration::from_secs(60)).await };
    } else {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    probes.ran_after.store(true, Ordering::SeqCst);
}

#[test]
fn dropping_a_parked_body_drops_it_on_a_blocking_thread() {
    on_both_flavors(|| async {
        for in_io in [false, true] {
            let probes = Probes::default();
            let task = tokio::spawn(parked(probes.clone(), in_io));
            while !probes.started.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
            let drops = probes.drops.clone();
            tokio::task::spawn_blocking(move || wait_until(|| drops.load(Ordering::SeqCst) == 1))
                .await
                .unwrap();
            assert!(
                !probes.dropped_on_worker.load(Ordering::SeqCst),
                "in_io={in_io}"
            );
            assert!(!probes.ran_after.load(Ordering::SeqCst));
        }
    });
}

#[test]
fn runtime_shutdown_with_bodies_in_flight_does_not_hang_or_run_user_code_after() {
    for runtime in [current_thread(), multi_thread()] {
        let in_blocking = Probes::default();
        let in_io = Probes::default();
        let waiting = Probes::default();
        runtime.spawn(long_blocking_stretch(in_blocking.clone()));
        runtime.spawn(parked(in_io.clone(), true));
        runtime.spawn(parked(waiting.clone(), false));
        // Let the bodies start (the current-thread runtime only runs them inside block_on).
        runtime.block_on(async {
            for probes in [&in_blocking, &in_io, &waiting] {
                while !probes.started.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        // The blocking stretch finishes shortly after shutdown starts.
        let release = in_blocking.release.clone();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            release.store(true, Ordering::SeqCst);
        });
        let start = Instant::now();
        drop(runtime);
        let took = start.elapsed();
        releaser.join().unwrap();
        assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
        std::thread::sleep(Duration::from_millis(50));
        for probes in [&in_blocking, &in_io, &waiting] {
            assert!(
                !probes.ran_after.load(Ordering::SeqCst),
                "user code ran after shutdown"
            );
            assert_eq!(
                probes.drops.load(Ordering::SeqCst),
                1,
                "body dropped exactly once"
            );
        }
    }
}

#[blocking_first]
async fn io_without_suspension(x: u32) -> u32 {
    let y = io! { std::future::ready(x + 1).await };
    let z = io! { y * 2 };
    z + 1
}

#[test]
fn io_regions_that_never_suspend_work() {
    on_both_flavors(|| async {
        assert_eq!(io_without_suspension(1).await, 5);
    });
}

#[blocking_first]
async fn long_body_in_io(rounds: u32) -> u32 {
    let mut total = 0;
    for _ in 0..rounds {
        total += io! {
            tokio::task::yield_now().await;
            1
        };
    }
    total
}

#[test]
fn many_yielding_regions_make_progress() {
    on_both_flavors(|| async {
        let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(long_body_in_io(200))).collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 200);
        }
    });
}

#[blocking_first]
async fn temporaries(name: String) -> usize {
    let s: &String = io! { &String::from("extended") };
    let t: &str = io! { &name };
    s.len() + t.len()
}

#[test]
fn temporaries_in_a_region_tail_live_as_in_a_block() {
    on_both_flavors(|| async {
        assert_eq!(temporaries("abc".into()).await, 11);
    });
}

#[test]
fn awaiting_outside_a_runtime_panics_with_a_clear_message() {
    let payload = std::panic::catch_unwind(|| {
        futures_lite_block_on(io_without_suspension(1));
    })
    .unwrap_err();
    assert!(
        panic_message(&*payload).contains("outside a tokio runtime"),
        "{}",
        panic_message(&*payload)
    );
}

/// A minimal executor without tokio, to poll a body outside any runtime.
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

async fn counted(calls: Arc<AtomicUsize>) -> Result<usize, String> {
    suspend().await;
    Ok(calls.fetch_add(1, Ordering::SeqCst) + 1)
}

#[blocking_first]
async fn region_statements_with_values(calls: Arc<AtomicUsize>) -> Result<usize, String> {
    // Statements whose value is not `()`: discarded as if they ended in `;`.
    io! { counted(calls.clone()).await? }
    io! { counted(calls.clone()).await? }
    assert_blocking_thread();
    Ok(calls.load(Ordering::SeqCst))
}

#[test]
fn a_region_statement_discards_its_value() {
    on_both_flavors(|| async {
        let calls = Arc::new(AtomicUsize::new(0));
        assert_eq!(region_statements_with_values(calls).await, Ok(2));
    });
}

// The binding is the point: the region must not be in tail position.
#[allow(clippy::let_and_return)]
#[blocking_first]
async fn final_expression_of_a_region_in_the_middle() -> bool {
    let on_worker = io! {
        suspend().await;
        is_worker()
    };
    on_worker
}

#[blocking_first]
async fn final_expression_of_a_tail_region() -> bool {
    io! {
        suspend().await;
        is_worker()
    }
}

#[blocking_first]
async fn final_expression_of_a_returned_region(early: bool) -> bool {
    if early {
        return io! {
            suspend().await;
            is_worker()
        };
    }
    false
}

/// Pins what README's "What does not hold" says: a region's final expression without `.await`
/// runs as blocking code, except in a region that ends the body, which has no way back.
#[test]
fn a_region_that_ends_the_body_runs_its_final_expression_on_the_runtime() {
    on_both_flavors(|| async {
        assert!(!final_expression_of_a_region_in_the_middle().await);
        assert!(final_expression_of_a_tail_region().await);
        assert!(final_expression_of_a_returned_region(true).await);
    });
}
