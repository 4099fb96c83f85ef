//! Counts of thread hops, from the driver's own counters. (Own test binary, one test: the counters
//! are process-wide.)

mod common;

use std::time::Duration;

use blocking_first::blocking_first;

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
