//! Helpers shared by the behaviour tests: runtimes of both flavours and checks of where code runs.
#![allow(dead_code)]

pub mod capture;
pub mod warnings;

use std::future::Future;
use std::panic;
use std::sync::Once;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};

/// A current-thread runtime (its only worker is the thread that calls `block_on`).
pub fn current_thread() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

/// A multi-thread runtime with two workers.
pub fn multi_thread() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A runtime of each flavour whose blocking pool has a single thread.
pub fn with_one_blocking_thread() -> [Runtime; 2] {
    [
        Builder::new_current_thread()
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap(),
        Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    ]
}

/// Runs `f` on a blocking-pool thread of a two-worker multi-thread runtime, where
/// `parallel::scope` sends its branches to the pool; re-raises its panic.
pub fn on_a_blocking_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    multi_thread().block_on(async {
        tokio::task::spawn_blocking(f)
            .await
            .unwrap_or_else(|err| panic::resume_unwind(err.into_panic()))
    })
}

/// Runs the same async test on a current-thread and on a multi-thread runtime.
pub fn on_both_flavors<F, Fut>(test: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    current_thread().block_on(test());
    multi_thread().block_on(test());
}

const NESTED_RUNTIME: &str = "Cannot start a runtime from within a runtime";

/// Whether this thread is a runtime worker (or inside `block_on`): there, `Handle::block_on`
/// panics; on a blocking-pool thread it works.
pub fn is_worker() -> bool {
    quiet_nested_runtime_panics();
    panic::catch_unwind(|| Handle::current().block_on(async {})).is_err()
}

/// Panics unless this is a blocking-pool thread (where `Handle::block_on` works).
pub fn assert_blocking_thread() {
    Handle::current().block_on(async {});
}

/// Panics unless this is a runtime worker.
pub fn assert_worker() {
    assert!(is_worker(), "expected to run on a runtime worker");
}

/// Keeps the expected "nested runtime" panics of `is_worker` out of the test output.
fn quiet_nested_runtime_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.contains(NESTED_RUNTIME) {
                default(info);
            }
        }));
    });
}

/// The process's OS threads now (Linux: `/proc/self/status`).
pub fn os_threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// A short real suspension: an await that returns `Pending` at least once.
pub async fn suspend() {
    tokio::time::sleep(Duration::from_millis(2)).await;
}

/// Waits (polling, holding no lock) until `cond` holds, failing after 10 s.
pub fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached in 10 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `f` on its own thread and returns its value (or re-raises its panic); fails if it does
/// not finish within `limit`, with `dump()` (the state worth seeing after a hang) in the message.
pub fn bounded<R: Send + 'static>(
    limit: Duration,
    dump: impl FnOnce() -> String,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = panic::catch_unwind(panic::AssertUnwindSafe(f));
        let _ = tx.send(out);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(_) => panic!("did not finish within {limit:?} (hang): {}", dump()),
    }
}

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "<non-string payload>".into())
}
