//! The process's OS threads under load stay within the cap plus the runtime's workers plus a
//! small constant, at every concurrency. Alone in its own test binary, so that no other test's
//! threads are counted.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use common::os_threads;

const CAP: usize = 8;
const WORKERS: usize = 2;
/// The test binary's main thread, this test's thread, the sampler, and the starvation detector
/// (which runs while started bodies wait for a slot).
const CONSTANT: usize = 4;

static DB: Limit = Limit::new("db", CAP);

/// A read, a wait on another service, a write.
#[blocking_first(limit = DB)]
async fn handler() {
    std::thread::sleep(Duration::from_millis(1));
    io! { tokio::time::sleep(Duration::from_millis(5)).await };
    std::thread::sleep(Duration::from_millis(1));
}

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "counts threads through /proc")]
fn peak_threads_stay_within_cap_plus_workers_plus_a_constant_at_every_concurrency() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .unwrap();
    let peak = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(os_threads(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    for concurrency in [16, 128, 512] {
        runtime.block_on(async {
            let requests: Vec<_> = (0..concurrency * 2)
                .map(|_| tokio::spawn(handler()))
                .collect();
            for request in requests {
                request.await.unwrap();
            }
        });
        let seen = peak.load(Ordering::SeqCst);
        eprintln!("concurrency {concurrency}: peak {seen} OS threads");
        assert!(
            seen <= CAP + WORKERS + CONSTANT,
            "{seen} threads at concurrency {concurrency}: more than {CAP} + {WORKERS} + {CONSTANT}"
        );
        assert_eq!(DB.stats().peak, CAP, "the cap is used and never exceeded");
    }
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
}
