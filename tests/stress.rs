//! Many bodies whose wakes come from other tasks and threads at random moments, while they switch
//! modes: a lost wakeup shows up as a hang (caught by the deadline), a wrong switch as a panic.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use blocking_first::blocking_first;
use common::*;
use tokio::sync::{Notify, mpsc, oneshot};

/// A tiny deterministic PRNG, so a failure can be replayed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[blocking_first]
async fn body(mut seed: u64, peer: mpsc::Sender<oneshot::Sender<u64>>) -> u64 {
    let mut total = 0;
    for _ in 0..6 {
        assert_blocking_thread();
        match next(&mut seed) % 6 {
            // A wake from another task, answered at once or later.
            0 => {
                let (tx, rx) = oneshot::channel();
                io! {
                    peer.send(tx).await.unwrap();
                    total += rx.await.unwrap();
                }
            }
            // A wake from a plain std thread, awaited outside any region.
            1 => {
                let (tx, rx) = oneshot::channel();
                let delay = next(&mut seed) % 3;
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(delay));
                    tx.send(1).unwrap();
                });
                total += rx.await.unwrap();
            }
            // Yields in async mode (the cooperative-budget path).
            2 => io! {
                for _ in 0..(next(&mut seed) % 5) {
                    tokio::task::yield_now().await;
                }
            },
            // A notification from another thread, which may already be stored when the body
            // gets there.
            3 => {
                let notify = Arc::new(Notify::new());
                let notifier = notify.clone();
                let delay = next(&mut seed) % 2;
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(delay));
                    notifier.notify_one();
                });
                io! { notify.notified().await };
            }
            // A region that never suspends.
            4 => total += io! { std::future::ready(1).await },
            // A timer in blocking mode.
            _ => tokio::time::sleep(Duration::from_micros(next(&mut seed) % 500)).await,
        }
    }
    total
}

#[test]
fn thousands_of_bodies_with_racing_wakes_all_finish() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let seed = std::env::var("BLOCKING_FIRST_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15_u64);
    runtime.block_on(async move {
        // Answers requests from the bodies, sometimes at once and sometimes after a yield.
        let (peer, mut requests) = mpsc::channel::<oneshot::Sender<u64>>(64);
        let answered = Arc::new(AtomicU64::new(0));
        let counter = answered.clone();
        tokio::spawn(async move {
            while let Some(reply) = requests.recv().await {
                if counter.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
                    tokio::task::yield_now().await;
                }
                let _ = reply.send(1);
            }
        });
        let mut seed = seed;
        let tasks: Vec<_> = (0..2000)
            .map(|_| tokio::spawn(body(next(&mut seed), peer.clone())))
            .collect();
        let all = async {
            let mut finished = 0;
            for task in tasks {
                task.await.unwrap();
                finished += 1;
            }
            finished
        };
        let finished = tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .unwrap_or_else(|_| panic!("bodies hung (seed {seed:#x})"));
        assert_eq!(finished, 2000);
    });
}
