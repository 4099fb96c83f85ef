//! Counts of thread hops, from the driver's own counters. (Own test binary, tests one at a time:
//! the counters are process-wide.)

mod common;

use std::thread::{self, ThreadId};
use std::time::Duration;

use blocking_first::blocking_first;

/// The counters are process-wide: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[blocking_first]
async fn no_region() -> u32 {
    1
}

#[blocking_first]
async fn region_without_suspension() -> u32 {
    let a = io! { std::future::ready(1).await };
    let b = io! { a + 1 };
    a + b
}

#[blocking_first]
async fn region_with_suspension() -> u32 {
    let a = io! {
        tokio::time::sleep(Duration::from_millis(1)).await;
        1
    };
    a + 1
}

#[blocking_first]
async fn tail_region() -> u32 {
    io! {
        tokio::time::sleep(Duration::from_millis(1)).await;
        1
    }
}

#[blocking_first]
async fn many_blocking_statements() -> u32 {
    let mut total = 0;
    for i in 0..100 {
        total += i; // blocking code: no hop per statement
    }
    total
}

async fn hops_of<F: std::future::Future>(body: F) -> u64 {
    let before = blocking_first::stats().hops;
    body.await;
    blocking_first::stats().hops - before
}

#[test]
fn hops_happen_only_where_a_body_really_changes_thread() {
    let _serial = serial();
    common::on_both_flavors(|| async {
        assert_eq!(hops_of(no_region()).await, 1, "one hop onto the pool");
        assert_eq!(hops_of(many_blocking_statements()).await, 1);
        assert_eq!(
            hops_of(region_without_suspension()).await,
            1,
            "a region that never suspends costs no hop"
        );
        assert_eq!(
            hops_of(region_with_suspension()).await,
            2,
            "suspending in a region, then blocking code again: one hop back"
        );
        assert_eq!(
            hops_of(tail_region()).await,
            1,
            "a tail region needs no way back"
        );
        let stats = blocking_first::stats();
        assert_eq!((stats.in_blocking, stats.waiting_for_slot), (0, 0));
        assert!(stats.peak_in_blocking >= 1);
    });
}

#[blocking_first]
async fn three_parallel_branches() -> [ThreadId; 3] {
    let sleep = || {
        thread::sleep(Duration::from_millis(100));
        thread::current().id()
    };
    let (a, b, c) = blocking_first::parallel! { sleep(), sleep(), sleep() };
    [a, b, c]
}

/// Regression: `hops`, `in_blocking` and `peak_in_blocking` counted every job of a loop, so a
/// body whose `parallel!` sent two branches to other loops reported 3 hops and 3 bodies in
/// blocking code; and `parallel_dispatched` counted branches sent to a loop that the caller took
/// back and ran itself (200 `parallel::map`s of 8 items: 1400 dispatched, of which 58 really ran
/// elsewhere).
#[test]
fn stats_count_bodies_as_bodies_and_branches_where_they_ran() {
    let _serial = serial();
    let runtime = common::multi_thread();
    runtime.block_on(async {
        blocking_first::reset_peak();
        let before = blocking_first::stats();
        let threads = three_parallel_branches().await;
        let after = blocking_first::stats();
        assert_eq!(after.hops - before.hops, 1, "one body, one hop");
        assert_eq!(after.peak_in_blocking, 1, "one body in blocking code");
        let elsewhere = threads[..2].iter().filter(|t| **t != threads[2]).count() as u64;
        assert_eq!(
            after.parallel_dispatched - before.parallel_dispatched,
            elsewhere
        );
        assert_eq!(
            after.parallel_inline - before.parallel_inline,
            2 - elsewhere
        );
    });
    // After the loops expired: many branches are sent to loops that are still starting, and
    // their callers take them back. Each branch reports the thread it ran on.
    thread::sleep(Duration::from_millis(50));
    let (ran_elsewhere, sent) = runtime.block_on(async {
        tokio::task::spawn_blocking(|| {
            let before = blocking_first::stats();
            let mut ran_elsewhere = 0u64;
            for _ in 0..200 {
                let caller = thread::current().id();
                let ran_on = blocking_first::parallel::map(0..8, |_| thread::current().id());
                ran_elsewhere += ran_on.iter().filter(|t| **t != caller).count() as u64;
            }
            let after = blocking_first::stats();
            (
                ran_elsewhere,
                (
                    after.parallel_dispatched - before.parallel_dispatched,
                    after.parallel_inline - before.parallel_inline,
                ),
            )
        })
        .await
        .unwrap()
    });
    assert_eq!(sent, (ran_elsewhere, 200 * 7 - ran_elsewhere));
    let stats = blocking_first::stats();
    assert_eq!((stats.in_blocking, stats.waiting_for_slot), (0, 0));
}
