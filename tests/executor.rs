//! The blocking loops of a limit: quick awaits continue in place, slow ones give the thread
//! back, started bodies go first, loops never outnumber slots, a panic does not take a loop's
//! slot with it, bodies of several runtimes see their own runtime, and idle loops end with their
//! runtime.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use common::*;

/// The tests here read counters of shared limits: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A future resolved from another thread after `after` (the thread is started first, so the
/// delay is the thread's spin, not its start).
async fn resolved_after(helper: &Helper, after: Duration) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    helper.0.send((after, tx)).unwrap();
    rx.await.unwrap();
}

/// A thread that resolves futures after a busy wait.
struct Helper(mpsc::Sender<(Duration, tokio::sync::oneshot::Sender<()>)>);

impl Helper {
    fn start() -> Helper {
        let (tx, rx) = mpsc::channel::<(Duration, tokio::sync::oneshot::Sender<()>)>();
        thread::spawn(move || {
            for (after, done) in rx {
                let start = Instant::now();
                while start.elapsed() < after {
                    std::hint::spin_loop();
                }
                let _ = done.send(());
            }
        });
        Helper(tx)
    }
}

static QUICK: Limit = Limit::new("quick", 2);

#[blocking_first(limit = QUICK)]
async fn awaits_quickly(helper: Arc<Helper>) -> bool {
    let before = thread::current().id();
    resolved_after(&helper, Duration::from_micros(10)).await;
    assert_blocking_thread();
    before == thread::current().id()
}

#[test]
fn a_quick_await_in_blocking_code_continues_on_the_same_thread_without_a_hop() {
    let _serial = serial();
    let helper = Arc::new(Helper::start());
    multi_thread().block_on(async {
        let calls = 50;
        let hops_before = blocking_first::stats().hops;
        let mut same_thread = 0u64;
        for _ in 0..calls {
            same_thread += u64::from(awaits_quickly(helper.clone()).await);
        }
        let hops = blocking_first::stats().hops - hops_before;
        // Every call hops once to start; a hop back after the await is the exception (a
        // descheduled helper thread), not the rule (two hops per call before).
        assert!(
            hops < calls * 3 / 2,
            "{hops} hops for {calls} calls with a 10 µs await"
        );
        assert!(same_thread > calls / 2, "{same_thread} of {calls} in place");
    });
}

static ONE_THREAD: Limit = Limit::new("one_thread", 1);

#[blocking_first(limit = ONE_THREAD)]
async fn awaits_slowly() {
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_blocking_thread();
}

#[test]
fn a_slow_await_gives_the_thread_back_so_twenty_bodies_overlap_on_one_loop() {
    let _serial = serial();
    on_both_flavors(|| async {
        ONE_THREAD.reset_peak();
        let start = Instant::now();
        let bodies: Vec<_> = (0..20).map(|_| tokio::spawn(awaits_slowly())).collect();
        for body in bodies {
            body.await.unwrap();
        }
        let took = start.elapsed();
        // One after another they would take 2 s.
        assert!(took < Duration::from_millis(1000), "took {took:?}");
        let stats = ONE_THREAD.stats();
        assert_eq!(stats.peak, 1, "never more than the one slot");
        assert!(stats.loops <= 1, "{} loops for one slot", stats.loops);
    });
}

static ORDER: Limit = Limit::new("order", 1);

/// Runs some blocking code, waits in `io!` for `go`, then records itself.
#[blocking_first(limit = ORDER)]
async fn started_one(go: tokio::sync::oneshot::Receiver<()>, log: Arc<Mutex<Vec<&'static str>>>) {
    log.lock().unwrap().push("started: first stretch");
    io! { go.await.unwrap() };
    log.lock().unwrap().push("started: came back");
}

/// Holds the only slot until `release` says so.
#[blocking_first(limit = ORDER)]
async fn holder(held: mpsc::Sender<()>, release: mpsc::Receiver<()>) {
    held.send(()).unwrap();
    release.recv().unwrap();
}

#[blocking_first(limit = ORDER)]
async fn fresh_one(log: Arc<Mutex<Vec<&'static str>>>) {
    log.lock().unwrap().push("fresh");
}

#[test]
fn a_started_body_coming_back_runs_before_bodies_that_have_not_started() {
    let _serial = serial();
    on_both_flavors(|| async {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (go, go_rx) = tokio::sync::oneshot::channel();
        let started = tokio::spawn(started_one(go_rx, log.clone()));
        while log.lock().unwrap().is_empty() || ORDER.stats().in_use != 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (held, held_rx) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let holding = tokio::spawn(holder(held, release_rx));
        tokio::task::spawn_blocking(move || held_rx.recv().unwrap())
            .await
            .unwrap();
        // Three new bodies queue first, then the started one comes back from `io!`.
        let fresh: Vec<_> = (0..3)
            .map(|_| tokio::spawn(fresh_one(log.clone())))
            .collect();
        while ORDER.stats().waiting < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        go.send(()).unwrap();
        while ORDER.stats().waiting < 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.send(()).unwrap();
        holding.await.unwrap();
        started.await.unwrap();
        for body in fresh {
            body.await.unwrap();
        }
        assert_eq!(
            *log.lock().unwrap(),
            [
                "started: first stretch",
                "started: came back",
                "fresh",
                "fresh",
                "fresh"
            ]
        );
    });
}

static FOUR: Limit = Limit::new("four", 4);

#[blocking_first(limit = FOUR)]
async fn db_then_upstream_then_db(peak_loops: Arc<AtomicUsize>) {
    thread::sleep(Duration::from_millis(1));
    peak_loops.fetch_max(FOUR.stats().loops, Ordering::SeqCst);
    io! { tokio::time::sleep(Duration::from_millis(5)).await };
    thread::sleep(Duration::from_millis(1));
    peak_loops.fetch_max(FOUR.stats().loops, Ordering::SeqCst);
}

#[test]
fn loops_never_outnumber_slots_and_lingering_ones_do_not_block_set_capacity_checks() {
    let _serial = serial();
    on_both_flavors(|| async {
        FOUR.reset_peak();
        let peak_loops = Arc::new(AtomicUsize::new(0));
        let bodies: Vec<_> = (0..64)
            .map(|_| tokio::spawn(db_then_upstream_then_db(peak_loops.clone())))
            .collect();
        for body in bodies {
            body.await.unwrap();
        }
        let stats = FOUR.stats();
        assert_eq!(stats.peak, 4, "the cap is used and never exceeded");
        assert!(
            peak_loops.load(Ordering::SeqCst) <= 4,
            "more loops than slots"
        );
        assert!(stats.loops <= 4);
        // Idle loops hold slots while they linger, yet the limit counts as idle for a change.
        assert_eq!(stats.in_use, 0);
        FOUR.set_capacity(4).unwrap();
    });
}

static PANICKY: Limit = Limit::new("panicky", 1);

#[blocking_first(limit = PANICKY)]
async fn panics_on_its_loop() {
    panic!("blocking code failed");
}

#[blocking_first(limit = PANICKY)]
async fn runs_after_a_panic() -> bool {
    on_blocking_loop()
}

fn on_blocking_loop() -> bool {
    !is_worker()
}

#[test]
fn a_panic_reaches_the_caller_and_the_loop_keeps_its_slot_for_the_next_body() {
    let _serial = serial();
    on_both_flavors(|| async {
        for _ in 0..3 {
            let err = tokio::spawn(panics_on_its_loop()).await.unwrap_err();
            assert_eq!(panic_message(&*err.into_panic()), "blocking code failed");
            assert!(
                runs_after_a_panic().await,
                "the next body ran on a blocking thread"
            );
        }
        let stats = PANICKY.stats();
        assert_eq!((stats.in_use, stats.peak), (0, 1));
        assert!(stats.loops <= 1);
    });
}

static SHARED: Limit = Limit::new("shared", 1);

#[blocking_first(limit = SHARED)]
async fn which_runtime() -> tokio::runtime::Id {
    tokio::runtime::Handle::current().id()
}

#[test]
fn bodies_of_two_runtimes_on_one_limit_each_see_their_own_runtime() {
    let _serial = serial();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            thread::spawn(|| {
                let runtime = multi_thread();
                let id = runtime.handle().id();
                runtime.block_on(async move {
                    for _ in 0..200 {
                        assert_eq!(
                            which_runtime().await,
                            id,
                            "blocking code saw another runtime"
                        );
                    }
                });
            })
        })
        .collect();
    for run in runs {
        run.join().unwrap();
    }
}

static LINGERING: Limit = Limit::new("lingering", 2);

#[blocking_first(limit = LINGERING)]
async fn leaves_a_loop_lingering() {}

#[test]
fn idle_loops_end_with_their_runtime_or_after_their_linger() {
    let _serial = serial();
    for runtime in [current_thread(), multi_thread()] {
        // Dropped at once: the loop may still be idle, and ends with its runtime.
        runtime.block_on(leaves_a_loop_lingering());
        let start = Instant::now();
        drop(runtime);
        let took = start.elapsed();
        assert!(took < Duration::from_millis(250), "shutdown took {took:?}");
        wait_until(|| LINGERING.stats().loops == 0);
    }
    // With the runtime alive, an idle loop gives its slot and thread back after its linger.
    let runtime = multi_thread();
    runtime.block_on(async {
        leaves_a_loop_lingering().await;
        let start = Instant::now();
        while LINGERING.stats().loops != 0 {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "an idle loop never ended"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
}

static CHURN: Limit = Limit::new("churn", 2);

/// One of several shapes, picked by `kind`: quick and slow awaits, a waiting region, branches,
/// a panic, a nested call.
#[blocking_first(limit = CHURN)]
async fn churn_body(kind: u64, helper: Arc<Helper>) -> u64 {
    match kind % 6 {
        0 => resolved_after(&helper, Duration::from_micros(20)).await,
        1 => tokio::time::sleep(Duration::from_millis(2)).await,
        2 => io! { tokio::time::sleep(Duration::from_millis(1)).await },
        3 => {
            let (a, b) = parallel! { kind + 1, kind + 2 };
            assert_eq!(a + 1, b);
        }
        4 => panic!("churn"),
        _ => assert_eq!(nested_in_churn(kind).await, kind),
    }
    kind
}

#[blocking_first(limit = CHURN)]
async fn nested_in_churn(kind: u64) -> u64 {
    kind
}

#[test]
fn bodies_cancelled_panicking_and_waiting_at_random_leave_no_job_stranded_and_no_slot_lost() {
    let _serial = serial();
    let helper = Arc::new(Helper::start());
    on_both_flavors(|| {
        let helper = helper.clone();
        async move {
            let mut seed = 0x2545_f491_4f6c_dd1d_u64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut calls = Vec::new();
            for i in 0..300 {
                let (kind, cancel_after) = (next(), next() % 4000);
                let body = churn_body(kind, helper.clone());
                calls.push(tokio::spawn(async move {
                    // Some are dropped at a random moment: queued, running, parked or in `io!`.
                    let cancelled = i % 3 == 0;
                    if cancelled {
                        let limit = Duration::from_micros(cancel_after);
                        drop(tokio::time::timeout(limit, body).await);
                    } else {
                        let _ = tokio::spawn(body).await;
                    }
                }));
                if i % 50 == 0 {
                    // Racing submitters: refused while in use, never corrupting the permits.
                    let _ = CHURN.set_capacity(2);
                }
            }
            let all = async {
                for call in calls {
                    // A dropped-at-random body that panicked first panics its caller's task.
                    if let Err(err) = call.await {
                        assert_eq!(panic_message(&*err.into_panic()), "churn");
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(20), all)
                .await
                .expect("a body never finished: a job was left without a loop");
        }
    });
    // Every loop ends after its linger; then every permit is back.
    wait_until(|| CHURN.stats().loops == 0);
    let stats = CHURN.stats();
    assert_eq!((stats.in_use, stats.waiting, stats.peak), (0, 0, 2));
    CHURN.set_capacity(2).expect("all permits back");
    multi_thread().block_on(async {
        let (a, b) = tokio::join!(churn_body(3, helper.clone()), churn_body(3, helper.clone()));
        assert_eq!((a, b), (3, 3));
    });
}
