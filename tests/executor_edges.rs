//! The executor's edges: small blocking pools shared by several limits and `spawn_blocking`,
//! runtimes that shut down with jobs queued behind live ones, loop starts that fail, and the
//! runtime context a cancelled body's destructors see. Each scenario failed before its fix;
//! every one is bounded in time (a hang shows as a failure).

mod common;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use common::*;
use tokio::runtime::{Builder, Handle, Id};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn wait_flag(flag: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !flag.load(SeqCst) {
        assert!(Instant::now() < deadline, "never released");
        thread::sleep(Duration::from_millis(1));
    }
}

// ------------------------------------------------------------------------------------------------
// 1. Idle (lingering) loops hold tokio blocking threads: with a small blocking pool another
//    limit's first loop waits out the linger, and a limit kept busy starves the other forever.

static SMALL_X: Limit = Limit::new("attack-x", 1);
static SMALL_Y: Limit = Limit::new("attack-y", 1);

#[blocking_first(limit = SMALL_X)]
async fn on_x() {}

#[blocking_first(limit = SMALL_Y)]
async fn on_y() {}

#[test]
fn an_idle_loop_gives_its_thread_to_another_limits_loop_on_a_full_blocking_pool() {
    let _serial = serial();
    bounded(Duration::from_secs(20), String::new, || {
        for runtime in with_one_blocking_thread() {
            let took = runtime.block_on(async {
                on_x().await; // SMALL_X's loop now lingers, holding the one blocking thread
                let start = Instant::now();
                on_y().await;
                start.elapsed()
            });
            drop(runtime);
            assert!(
                took < Duration::from_millis(200),
                "a body of a second limit took {took:?}: its loop waited for the first limit's \
                 idle loop to give tokio's only blocking thread back"
            );
        }
    });
}

static BUSY_X: Limit = Limit::new("attack-busy-x", 1);
static STARVED_Y: Limit = Limit::new("attack-starved-y", 1);

#[blocking_first(limit = BUSY_X)]
async fn busy_x() {}

#[blocking_first(limit = STARVED_Y)]
async fn starved_y() {}

#[test]
fn a_limit_in_steady_use_does_not_starve_another_limit_on_a_small_blocking_pool() {
    let _serial = serial();
    bounded(Duration::from_secs(20), String::new, || {
        let runtime = Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let outcome = runtime.block_on({
            let stop = stop.clone();
            async move {
                // One request every 20 ms on BUSY_X: its loop never idles for 500 ms.
                let stopped = stop.clone();
                let load = tokio::spawn(async move {
                    while !stopped.load(SeqCst) {
                        busy_x().await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
                let outcome = tokio::time::timeout(Duration::from_secs(3), starved_y()).await;
                stop.store(true, SeqCst);
                load.await.unwrap();
                outcome
            }
        });
        // Let the starved body finish (the busy loop lingers out) before the runtime goes.
        runtime.shutdown_timeout(Duration::from_secs(2));
        assert!(
            outcome.is_ok(),
            "a body of STARVED_Y did not run within 3 s: its loop's spawn_blocking waits behind \
             BUSY_X's loop, which never gives tokio's blocking thread back"
        );
    });
}

static IN_IO: Limit = Limit::new("attack-spawn-blocking-in-io", 1);

/// `tokio::fs` and friends inside `io!` are `spawn_blocking` underneath.
#[blocking_first(limit = IN_IO)]
async fn spawn_blocking_in_io() -> u32 {
    io! { tokio::task::spawn_blocking(|| 1).await.unwrap() }
}

#[test]
fn spawn_blocking_inside_io_waits_at_most_a_linger_for_the_bodys_idle_loop() {
    let _serial = serial();
    bounded(Duration::from_secs(30), String::new, || {
        for runtime in with_one_blocking_thread() {
            let took = runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..5 {
                    assert_eq!(spawn_blocking_in_io().await, 1);
                }
                start.elapsed()
            });
            drop(runtime);
            assert!(
                took < Duration::from_millis(1000),
                "5 bodies each doing one spawn_blocking in io! took {took:?}: each waited for \
                 the body's own idle loop to linger out"
            );
        }
    });
}

// ------------------------------------------------------------------------------------------------
// 2. A failed loop start (runtime shutting down) gives the permit back without a kick, and `kick`
//    starts loops on the *front* job's runtime, which may be the dead one: a live runtime's job
//    behind it is left queued with every permit free and no loop.

static STRAND: Limit = Limit::new("attack-strand", 1);

#[blocking_first(limit = STRAND)]
async fn strand_quick() -> u32 {
    7
}

#[blocking_first(limit = STRAND)]
async fn strand_hold(held: mpsc::Sender<()>, release: mpsc::Receiver<()>) {
    held.send(()).unwrap();
    release.recv_timeout(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_live_runtimes_body_queued_behind_a_dead_runtimes_job_still_runs() {
    let _serial = serial();
    bounded(Duration::from_secs(30), String::new, || {
        let a = multi_thread();
        let handle_a = a.handle().clone();
        a.block_on(strand_quick()); // the one loop, started on A, lingers
        assert_eq!(STRAND.stats().loops, 1);

        let b = multi_thread();
        let (held_tx, held_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let hold = b.spawn(strand_hold(held_tx, release_rx)); // claims A's idle loop
        held_rx.recv_timeout(Duration::from_secs(5)).unwrap();

        // A shuts down: its drop waits for its loop, which runs B's body.
        let (dropped_tx, dropped_rx) = mpsc::channel();
        thread::spawn(move || {
            drop(a);
            dropped_tx.send(()).unwrap();
        });
        thread::sleep(Duration::from_millis(100));

        // A sync bridge on a plain thread still holds A's handle: its job queues first.
        let (bridge_tx, bridge_rx) = mpsc::channel();
        thread::spawn(move || {
            let value = handle_a.block_on(strand_quick());
            let _ = bridge_tx.send(value);
        });
        wait_until(|| STRAND.stats().waiting == 1);
        // A body of the live runtime B queues behind it.
        let live = b.spawn(strand_quick());
        wait_until(|| STRAND.stats().waiting == 2);

        release_tx.send(()).unwrap();
        dropped_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("runtime A's drop finishes");
        b.block_on(hold).unwrap();
        let outcome =
            b.block_on(async { tokio::time::timeout(Duration::from_secs(2), live).await });
        let stats = STRAND.stats();

        // Clean up: any new submit starts a loop that drains the queue.
        assert_eq!(b.block_on(strand_quick()), 7);
        let _ = bridge_rx.recv_timeout(Duration::from_secs(5));

        assert!(
            outcome.is_ok(),
            "runtime B's body never ran: queued with no loop and a free slot ({stats:?})"
        );
    });
}

static STALE: Limit = Limit::new("attack-stale", 2);

#[blocking_first(limit = STALE)]
async fn branches_during_shutdown(
    started: Arc<AtomicBool>,
    go: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
) {
    started.store(true, SeqCst);
    wait_flag(&go);
    // A free slot: the branch is "served" by a loop start on this (shutting-down) runtime,
    // which fails; the caller then claims the branch and runs it itself.
    let (a, b) = parallel! { 1, 2 };
    assert_eq!(a + b, 3);
    done.store(true, SeqCst);
    io! { tokio::task::yield_now().await };
}

#[test]
fn a_branch_dispatched_during_shutdown_leaves_nothing_queued() {
    let _serial = serial();
    bounded(Duration::from_secs(30), String::new, || {
        let a = multi_thread();
        let (started, go, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        a.spawn(branches_during_shutdown(
            started.clone(),
            go.clone(),
            done.clone(),
        ));
        wait_flag(&started);
        let (dropped_tx, dropped_rx) = mpsc::channel();
        thread::spawn(move || {
            drop(a);
            dropped_tx.send(()).unwrap();
        });
        thread::sleep(Duration::from_millis(100)); // A's tasks gone, its blocking pool closed
        go.store(true, SeqCst);
        dropped_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("runtime drop finishes");
        assert!(done.load(SeqCst), "the stretch ran to its end");
        // Well past any linger: nothing will ever pop the branch's job.
        thread::sleep(Duration::from_millis(700));
        let stats = STALE.stats();
        let changed = STALE.set_capacity(2);
        assert!(
            stats.waiting == 0 && changed.is_ok(),
            "a job left queued with no loop and every slot free: {stats:?}, set_capacity: \
             {changed:?}"
        );
    });
}

// ------------------------------------------------------------------------------------------------
// 3. A body cancelled (or abandoned) on a loop of another runtime is dropped outside its own
//    runtime's context: its destructors see the loop's runtime.

static CONTEXT: Limit = Limit::new("attack-context", 1);

#[blocking_first(limit = CONTEXT)]
async fn context_quick() {}

type Seen = Arc<Mutex<Option<Option<Id>>>>;

struct RecordsRuntime(Seen);

impl Drop for RecordsRuntime {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Handle::try_current().ok().map(|h| h.id()));
    }
}

#[blocking_first(limit = CONTEXT)]
async fn cancelled_mid_stretch(
    in_drop: Seen,
    in_body: Seen,
    thread_name: Arc<Mutex<Option<String>>>,
    started: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
) {
    let _guard = RecordsRuntime(in_drop);
    *in_body.lock().unwrap() = Some(Some(Handle::current().id()));
    *thread_name.lock().unwrap() = thread::current().name().map(str::to_owned);
    started.store(true, SeqCst);
    wait_flag(&release);
    io! { tokio::task::yield_now().await };
}

#[test]
fn a_cancelled_bodys_destructors_run_in_its_own_runtimes_context() {
    let _serial = serial();
    bounded(Duration::from_secs(20), String::new, || {
        let a = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("runtime-a")
            .enable_all()
            .build()
            .unwrap();
        a.block_on(context_quick()); // CONTEXT's one loop, on A, lingers
        let b = multi_thread();
        let b_id = b.handle().id();
        let (in_drop, in_body, name) = (Seen::default(), Seen::default(), Arc::default());
        let (started, release) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let body = cancelled_mid_stretch(
            in_drop.clone(),
            in_body.clone(),
            Arc::clone(&name),
            started.clone(),
            release.clone(),
        );
        b.block_on(async {
            let call = tokio::spawn(async move {
                // Dropped while its stretch runs.
                drop(tokio::time::timeout(Duration::from_millis(20), body).await);
            });
            call.await.unwrap();
        });
        assert!(started.load(SeqCst));
        release.store(true, SeqCst);
        wait_until(|| in_drop.lock().unwrap().is_some());
        let (seen_drop, seen_body) = (*in_drop.lock().unwrap(), *in_body.lock().unwrap());
        let name = name.lock().unwrap().clone();
        drop(b);
        drop(a);
        assert_eq!(
            seen_body,
            Some(Some(b_id)),
            "blocking code sees its own runtime"
        );
        assert_eq!(
            seen_drop,
            Some(Some(b_id)),
            "the body ran on {name:?} and its destructor saw another runtime's context \
             (B is {b_id:?})"
        );
    });
}

// ------------------------------------------------------------------------------------------------
// Regression: every loop start spawned a sentinel task on its runtime (to learn of its shutdown);
// on a runtime nobody drives, those tasks are never polled and never finish: 100, 200, 300 tasks
// alive after 100, 200, 300 calls. Now one sentinel per runtime.

static UNDRIVEN: Limit = Limit::new("undriven", 1);

#[blocking_first(limit = UNDRIVEN)]
async fn undriven_call(n: u32) -> u32 {
    n + 1
}

#[test]
fn a_runtime_nobody_drives_keeps_one_task_however_many_loops_start() {
    let _serial = serial();
    bounded(Duration::from_secs(30), String::new, || {
        let runtime = Builder::new_current_thread().enable_all().build().unwrap();
        let handle = runtime.handle().clone();
        // Used only through `Handle::block_on` from a plain thread: nobody polls its tasks.
        let calls = thread::spawn(move || {
            for n in 0..40 {
                assert_eq!(handle.block_on(undriven_call(n)), n + 1);
                // Past the linger: the loop ends, and the next call starts a new one.
                thread::sleep(Duration::from_millis(15));
            }
            handle.metrics().num_alive_tasks()
        })
        .join()
        .unwrap();
        assert!(calls <= 1, "{calls} tasks alive after 40 loop starts");
        drop(runtime);
    });
}
