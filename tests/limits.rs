//! Caps on blocking concurrency: never exceeded, waiting holds no thread, `parallel!` branches
//! count against the cap and run inline when it is full.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use common::*;

static FOUR: Limit = Limit::new("four", 4);

/// Counts bodies inside their blocking code with our own gauge, independent of the limit's.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    fn hold(&self, duration: Duration) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        thread::sleep(duration);
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[blocking_first(limit = FOUR)]
async fn capped(gauge: Arc<Gauge>) {
    gauge.hold(Duration::from_millis(2));
    io! { tokio::time::sleep(Duration::from_millis(10)).await };
    gauge.hold(Duration::from_millis(2));
}

#[test]
fn two_hundred_bodies_under_a_cap_of_four_never_exceed_it() {
    on_both_flavors(|| async {
        FOUR.reset_peak();
        let gauge = Arc::new(Gauge::default());
        let tasks: Vec<_> = (0..200)
            .map(|_| tokio::spawn(capped(gauge.clone())))
            .collect();
        let mut saw_waiting = false;
        for task in tasks {
            saw_waiting |= FOUR.stats().waiting > 0;
            task.await.unwrap();
        }
        let stats = FOUR.stats();
        assert_eq!(stats.capacity, Some(4));
        assert!(stats.peak <= 4, "limit peak {}", stats.peak);
        assert!(
            stats.peak >= 2,
            "the bodies never overlapped: peak {}",
            stats.peak
        );
        assert!(
            gauge.peak.load(Ordering::SeqCst) <= 4,
            "blocking code ran above the cap"
        );
        assert!(saw_waiting, "no body ever waited for a slot");
        assert_eq!((stats.in_use, stats.waiting), (0, 0));
    });
}

static ONE: Limit = Limit::new("one", 1);

#[blocking_first(limit = ONE)]
async fn full_cap_runs_branches_inline() -> HashSet<thread::ThreadId> {
    let here = || thread::current().id();
    let (a, b, c) = parallel! { here(), here(), here() };
    HashSet::from([a, b, c, thread::current().id()])
}

#[test]
fn branches_run_inline_when_the_cap_is_full() {
    on_both_flavors(|| async {
        let before = blocking_first::stats().parallel_inline;
        let threads = full_cap_runs_branches_inline().await;
        assert_eq!(
            threads.len(),
            1,
            "every branch ran on the body's own thread"
        );
        assert!(blocking_first::stats().parallel_inline >= before + 2);
        assert!(ONE.stats().peak <= 1);
    });
}

static THREE: Limit = Limit::new("three", 3);

#[blocking_first(limit = THREE)]
async fn wide(gauge: Arc<Gauge>) {
    let work = || gauge.hold(Duration::from_millis(30));
    parallel! { work(), work(), work(), work(), work(), work() };
}

#[test]
fn branches_count_against_the_cap() {
    on_both_flavors(|| async {
        THREE.reset_peak();
        let gauge = Arc::new(Gauge::default());
        let tasks: Vec<_> = (0..4).map(|_| tokio::spawn(wide(gauge.clone()))).collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(THREE.stats().peak <= 3, "peak {}", THREE.stats().peak);
        assert!(gauge.peak.load(Ordering::SeqCst) <= 3);
        assert!(
            gauge.peak.load(Ordering::SeqCst) >= 2,
            "branches never ran side by side"
        );
    });
}

static RESIZED: Limit = Limit::new("resized", 1);

#[blocking_first(limit = RESIZED)]
async fn resized_body(gauge: Arc<Gauge>) {
    gauge.hold(Duration::from_millis(20));
}

#[test]
fn capacity_changes_only_while_idle() {
    multi_thread().block_on(async {
        assert_eq!(RESIZED.capacity(), Some(1));
        RESIZED.set_capacity(2).unwrap();
        assert_eq!(RESIZED.capacity(), Some(2));
        let gauge = Arc::new(Gauge::default());
        let tasks: Vec<_> = (0..6)
            .map(|_| tokio::spawn(resized_body(gauge.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let err = RESIZED.set_capacity(8).unwrap_err();
        assert!(err.to_string().contains("set it at start-up"), "{err}");
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(gauge.peak.load(Ordering::SeqCst), 2);
    });
}
