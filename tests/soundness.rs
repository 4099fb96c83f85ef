//! Regression tests for memory-safety and accounting bugs, each shaped like its reproduction and
//! made observable without a crash: a flag the late code sets, a thread check in a destructor, a
//! counter. Each failed before its fix.

mod common;

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

use blocking_first::limit::{CapacityErrorKind, Limit, MAX_CAPACITY};
use blocking_first::{blocking_first, parallel};
use common::*;
use tokio::runtime::Builder;

/// Keeps the panics these tests raise on purpose (hundreds of them) out of the output.
fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let message = panic_message(info.payload());
            let expected = [
                "the caller panics",
                "<non-string payload>",
                "the payload's own destructor panicked",
                "the inner branch panics",
                "a captured value panicked in its destructor",
            ];
            if !expected.contains(&message.as_str()) {
                default(info);
            }
        }));
    });
}

/// A branch may spawn into its own scope after the scope's closure returned; `scope` must still
/// wait for that branch, which borrows the caller's locals.
#[test]
fn a_branch_spawned_from_a_branch_after_the_closure_returned_is_waited_for() {
    on_a_blocking_thread(|| {
        let data: Vec<u64> = (1..=100).collect();
        let closure_returned = AtomicBool::new(false);
        let late_done = AtomicBool::new(false);
        let sum = AtomicU64::new(0);
        parallel::scope(|s| {
            s.spawn(|| {
                wait_until(|| closure_returned.load(SeqCst));
                thread::sleep(Duration::from_millis(20));
                s.spawn(|| {
                    thread::sleep(Duration::from_millis(200));
                    sum.store(data.iter().sum(), SeqCst);
                    late_done.store(true, SeqCst);
                });
            });
            closure_returned.store(true, SeqCst);
        });
        let waited = late_done.load(SeqCst);
        if !waited {
            // Keep the borrowed locals alive until the stray branch is done, so a regression
            // fails this assertion instead of reading freed memory.
            wait_until(|| late_done.load(SeqCst));
        }
        assert!(
            waited,
            "scope returned while a branch spawned from a branch still ran"
        );
        assert_eq!(sum.load(SeqCst), 5050);
    });
}

/// Panics when dropped.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("a captured value panicked in its destructor");
    }
}

/// After the caller panicked, unrun branches are dropped; a destructor that panics there must not
/// make `scope` unwind while another branch still runs on borrowed data.
#[test]
fn a_panicking_destructor_of_an_unrun_branch_does_not_end_the_scope_early() {
    quiet_expected_panics();
    let runtime = Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::task::spawn_blocking(|| {
            let local: Vec<u8> = std::iter::repeat_n(1, 64).collect(); // on the heap, for ASan
            let slow_running = AtomicBool::new(false);
            let slow_done = AtomicBool::new(false);
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                parallel::scope(|s| {
                    // Takes the pool's other thread...
                    s.spawn(|| {
                        slow_running.store(true, SeqCst);
                        thread::sleep(Duration::from_millis(100));
                        assert_eq!(local.len(), 64);
                        slow_done.store(true, SeqCst);
                    });
                    wait_until(|| slow_running.load(SeqCst));
                    // ...so these stay queued, and are dropped unrun after the panic below.
                    for _ in 0..16 {
                        let bomb = PanicOnDrop;
                        s.spawn(move || drop(bomb));
                    }
                    panic!("the caller panics");
                })
            }));
            let waited = slow_done.load(SeqCst);
            if !waited {
                wait_until(|| slow_done.load(SeqCst));
            }
            assert!(waited, "scope unwound while a branch still ran");
            let payload = outcome.expect_err("the scope re-raises the caller's panic");
            assert_eq!(panic_message(&*payload), "the caller panics");
        })
        .await
        .unwrap();
    });
}

/// Counts drops, and those that ran on a runtime worker.
struct DropProbe {
    on_worker: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl Drop for DropProbe {
    fn drop(&mut self) {
        if is_worker() {
            self.on_worker.fetch_add(1, SeqCst);
        }
        self.dropped.fetch_add(1, SeqCst);
    }
}

#[blocking_first]
async fn parks_forever(probe: DropProbe, parked: Arc<AtomicBool>) {
    let _probe = probe;
    parked.store(true, SeqCst);
    std::future::pending::<()>().await;
}

/// Finishes with its probe as its value, once `go` is set (so the first poll surely sees it
/// still running).
#[blocking_first]
async fn returns_its_probe(
    probe: DropProbe,
    go: Arc<AtomicBool>,
    finishing: Arc<AtomicBool>,
) -> DropProbe {
    while !go.load(SeqCst) {
        thread::sleep(Duration::from_millis(1));
    }
    finishing.store(true, SeqCst);
    probe
}

/// A stretch that already ended (the body parked on a plain `.await`, or returned a value) but
/// whose driver has not seen it yet: dropping the driver then must still drop the body, or the
/// value, off the workers.
#[test]
fn a_body_whose_stretch_ended_unseen_is_not_dropped_on_a_worker() {
    multi_thread().block_on(async {
        let on_worker = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        for round in 1..=20 {
            let parked = Arc::new(AtomicBool::new(false));
            let probe = DropProbe {
                on_worker: on_worker.clone(),
                dropped: dropped.clone(),
            };
            // Even rounds park on an `.await`; odd rounds finish with the probe as their value.
            let go = Arc::new(AtomicBool::new(round % 2 == 0));
            let mut body: Pin<Box<dyn Future<Output = ()> + Send>> = if round % 2 == 0 {
                Box::pin(parks_forever(probe, parked.clone()))
            } else {
                let finishing = returns_its_probe(probe, go.clone(), parked.clone());
                Box::pin(async move { drop(finishing.await) })
            };
            // Poll once: the body hops onto the pool and parks there on its `.await`.
            std::future::poll_fn(|cx| {
                assert!(body.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            go.store(true, SeqCst);
            while !parked.load(SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // The stretch ends and hands the body back, unseen: this task does not poll it.
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(body);
            let deadline = Instant::now() + Duration::from_secs(10);
            while dropped.load(SeqCst) < round {
                assert!(Instant::now() < deadline, "body {round} never dropped");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        assert_eq!(dropped.load(SeqCst), 20);
        assert_eq!(
            on_worker.load(SeqCst),
            0,
            "bodies dropped on a runtime worker"
        );
    });
}

static RACY: Limit = Limit::new("racy", 1);

#[blocking_first(limit = RACY)]
async fn tick() {}

#[blocking_first(limit = RACY)]
async fn hold(now: Arc<AtomicUsize>, peak: Arc<AtomicUsize>) {
    let current = now.fetch_add(1, SeqCst) + 1;
    peak.fetch_max(current, SeqCst);
    thread::sleep(Duration::from_millis(5));
    now.fetch_sub(1, SeqCst);
}

/// `set_capacity` racing bodies that take slots must either fail or change the cap exactly; it
/// must never leave an extra slot behind. Absurd capacities are refused before anything changes.
#[test]
fn set_capacity_racing_bodies_keeps_the_cap_exact_and_refuses_bad_values() {
    multi_thread().block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let tickers: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    while !stop.load(SeqCst) {
                        tick().await;
                    }
                })
            })
            .collect();
        let mut changed = 0;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && changed < 20_000 {
            if RACY.set_capacity(1).is_ok() {
                changed += 1;
            }
            tokio::task::yield_now().await;
        }
        stop.store(true, SeqCst);
        for ticker in tickers {
            ticker.await.unwrap();
        }
        assert!(changed > 0, "set_capacity never found the limit idle");

        let err = RACY.set_capacity(usize::MAX).unwrap_err();
        assert_eq!(
            err.kind(),
            CapacityErrorKind::TooLarge { max: MAX_CAPACITY }
        );
        assert!(err.to_string().contains("cannot have more than"), "{err}");
        assert_eq!(RACY.capacity(), Some(1));

        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let bodies: Vec<_> = (0..16)
            .map(|_| tokio::spawn(hold(now.clone(), peak.clone())))
            .collect();
        let finished = tokio::time::timeout(Duration::from_secs(10), async {
            for body in bodies {
                body.await.unwrap();
            }
        })
        .await;
        assert!(finished.is_ok(), "bodies waited forever for a slot");
        assert_eq!(
            peak.load(SeqCst),
            1,
            "bodies ran side by side under a cap of 1"
        );
    });
}

static BRANCHY: Limit = Limit::new("branchy", 4);

#[blocking_first(limit = BRANCHY)]
async fn slots_in_use_after_a_claimed_branch() -> (usize, usize) {
    // With one blocking thread the first branch's pool task cannot start, so the caller takes the
    // branch back and runs it itself.
    let (a, b) = parallel! { 1, 2 };
    (a + b, BRANCHY.stats().in_use)
}

/// A branch the caller ran itself gives back the slot its queued pool task was sent with.
#[test]
fn a_claimed_branch_gives_its_slot_back_at_once() {
    for runtime in with_one_blocking_thread() {
        runtime.block_on(async {
            assert_eq!(
                slots_in_use_after_a_claimed_branch().await,
                (3, 1),
                "only the body's own slot is in use after its parallel! region"
            );
        });
    }
}

/// A value nobody joined whose destructor spawns into the scope (it may hold the scope: a
/// `&Scope` is `Send`): that branch borrows the caller's locals too, so `scope` waits for it.
#[test]
fn a_branch_spawned_by_an_unjoined_values_destructor_is_waited_for() {
    struct SpawnsOnDrop<'scope, 'env> {
        scope: &'scope parallel::Scope<'scope, 'env>,
        data: &'scope String,
        done: &'scope AtomicBool,
    }
    impl Drop for SpawnsOnDrop<'_, '_> {
        fn drop(&mut self) {
            let (data, done) = (self.data, self.done);
            self.scope.spawn(move || {
                thread::sleep(Duration::from_millis(100));
                assert_eq!(data, "borrowed");
                done.store(true, SeqCst);
            });
        }
    }
    on_a_blocking_thread(|| {
        let data = String::from("borrowed");
        let done = AtomicBool::new(false);
        parallel::scope(|s| {
            let (data, done) = (&data, &done);
            drop(s.spawn(move || SpawnsOnDrop {
                scope: s,
                data,
                done,
            }));
        });
        let waited = done.load(SeqCst);
        if !waited {
            wait_until(|| done.load(SeqCst));
        }
        assert!(
            waited,
            "scope returned before a destructor's branch finished"
        );
    });
}

/// A branch's branch that panics, finished before the scope looks again, is still re-raised.
#[test]
fn a_panic_in_a_branch_spawned_by_a_branch_is_never_lost() {
    quiet_expected_panics();
    on_a_blocking_thread(|| {
        for round in 0..500 {
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
                parallel::scope(|s| {
                    s.spawn(|| {
                        s.spawn(|| -> () { panic!("the inner branch panics") });
                    });
                })
            }));
            let payload = outcome.expect_err(&format!("round {round}: the panic was lost"));
            assert_eq!(panic_message(&*payload), "the inner branch panics");
        }
    });
}

/// Two unjoined values whose destructors panic: one panic is re-raised, the process survives.
#[test]
fn two_panicking_destructors_of_unjoined_values_do_not_abort() {
    quiet_expected_panics();
    on_a_blocking_thread(|| {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            parallel::scope(|s| {
                drop(s.spawn(|| PanicOnDrop));
                drop(s.spawn(|| PanicOnDrop));
            })
        }));
        let payload = outcome.expect_err("a destructor's panic is re-raised");
        assert_eq!(
            panic_message(&*payload),
            "a captured value panicked in its destructor"
        );
    });
}

/// A panic payload whose own destructor panics.
struct PanickingPayload;

impl Drop for PanickingPayload {
    fn drop(&mut self) {
        panic!("the payload's own destructor panicked");
    }
}

/// A captured value that panics in its destructor with a [`PanickingPayload`].
struct PanicWithPanickingPayload;

impl Drop for PanicWithPanickingPayload {
    fn drop(&mut self) {
        panic::panic_any(PanickingPayload);
    }
}

/// Regression: with one destructor's panic already kept, `finish` dropped the second payload
/// outside `catch_unwind`; that payload's own destructor panicked, `scope` unwound at once, and
/// a branch still running read the caller's freed `Vec` (AddressSanitizer: heap-use-after-free
/// in 20 of 20 runs). Now `scope` waits for the branch and re-raises the caller's panic.
#[test]
fn a_panic_payload_that_panics_when_dropped_does_not_end_the_scope_early() {
    quiet_expected_panics();
    let runtime = Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(async {
        tokio::task::spawn_blocking(|| {
            let scope_returned = Arc::new(AtomicBool::new(false));
            let read_after_return = Arc::new(AtomicBool::new(false));
            let branch_done = Arc::new(AtomicBool::new(false));
            let data: Vec<u64> = (1..=100).collect();
            let sum = AtomicU64::new(0);
            let caught = panic::catch_unwind(AssertUnwindSafe(|| {
                parallel::scope(|s| {
                    let (returned, late) = (scope_returned.clone(), read_after_return.clone());
                    let done = branch_done.clone();
                    let (data, sum) = (&data, &sum);
                    s.spawn(move || {
                        thread::sleep(Duration::from_millis(300));
                        if returned.load(SeqCst) {
                            // Reading `data` now would be a use after free.
                            late.store(true, SeqCst);
                        } else {
                            sum.store(data.iter().sum(), SeqCst);
                        }
                        done.store(true, SeqCst);
                    });
                    thread::sleep(Duration::from_millis(50));
                    // Both blocking threads are taken (this one and the branch's): these wait
                    // unstarted and are dropped unrun when the closure panics.
                    let first = PanicOnDrop;
                    let second = PanicWithPanickingPayload;
                    s.spawn(move || drop(first));
                    s.spawn(move || drop(second));
                    panic!("the caller panics");
                })
            }));
            scope_returned.store(true, SeqCst);
            wait_until(|| branch_done.load(SeqCst));
            let payload = caught.expect_err("the caller's panic is re-raised");
            let message = panic_message(&*payload);
            (message, read_after_return.load(SeqCst), sum.load(SeqCst))
        })
        .await
        .unwrap()
    });
    let (message, read_after_return, sum) = outcome;
    assert_eq!(message, "the caller panics");
    assert!(
        !read_after_return,
        "the branch ran after `scope` had returned"
    );
    assert_eq!(sum, 5050, "the branch finished before `scope` returned");
}
