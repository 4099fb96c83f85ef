//! Runtime shutdown (`drop`, `shutdown_timeout`, `shutdown_background`) with bodies in flight:
//! in blocking code, parked on an `.await`, parked in an `io!` region, inside `parallel!`
//! branches, waiting for a slot of a limit. On both runtime flavours, shutdown completes within a
//! bound, no user code runs after the body's next region boundary, a body that never started
//! never starts, and every resource a body owns is dropped exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use blocking_first::blocking_first;
use blocking_first::limit::Limit;
use tokio::runtime::{Builder, Runtime};

/// What one body reports about itself.
#[derive(Default)]
struct Probe {
    /// The body's first statement ran.
    started: AtomicBool,
    /// Lets blocking code that waits on it go on.
    release: AtomicBool,
    /// The stretch of blocking code running at shutdown finished.
    stretch_done: AtomicBool,
    /// Code after the body's next region boundary ran (it must not).
    after: AtomicBool,
    /// `parallel!` branches that started.
    branches: AtomicUsize,
    /// Guards created and dropped.
    created: AtomicUsize,
    dropped: AtomicUsize,
}

/// A resource owned by a body (a connection, a file): counts its drops.
struct Guard(Arc<Probe>);

impl Guard {
    fn new(probe: &Arc<Probe>) -> Guard {
        probe.created.fetch_add(1, Ordering::SeqCst);
        Guard(probe.clone())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// Held by the task that awaits a body, next to the body's future: set once the task is dropped,
/// i.e. once the driver is gone.
struct Sentinel(Arc<AtomicBool>);

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Blocks (in blocking code) until `flag` is set; gives up after 20 s so a broken test ends.
fn wait_for(flag: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !flag.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "never released");
        thread::sleep(Duration::from_millis(1));
    }
}

/// Waits on this (non-runtime) thread until `cond` holds, failing after 10 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not reached in 10 s");
        thread::sleep(Duration::from_millis(1));
    }
}

// ----------------------------------------------------------------------------------------------
// Bodies.

#[blocking_first]
async fn in_blocking_code(probe: Arc<Probe>) {
    let _connection = Guard::new(&probe);
    probe.started.store(true, Ordering::SeqCst);
    wait_for(&probe.release);
    probe.stretch_done.store(true, Ordering::SeqCst);
    io! { tokio::task::yield_now().await };
    probe.after.store(true, Ordering::SeqCst);
}

#[blocking_first]
async fn parked_on_an_await(probe: Arc<Probe>) {
    let _connection = Guard::new(&probe);
    probe.started.store(true, Ordering::SeqCst);
    std::future::pending::<()>().await;
    probe.after.store(true, Ordering::SeqCst);
}

#[blocking_first]
async fn parked_in_io(probe: Arc<Probe>) {
    let _connection = Guard::new(&probe);
    probe.started.store(true, Ordering::SeqCst);
    io! {
        let _in_region = Guard::new(&probe);
        probe.stretch_done.store(true, Ordering::SeqCst);
        std::future::pending::<()>().await;
        probe.after.store(true, Ordering::SeqCst);
    }
    probe.after.store(true, Ordering::SeqCst);
}

fn branch(probe: &Arc<Probe>) -> usize {
    let _file = Guard::new(probe);
    probe.branches.fetch_add(1, Ordering::SeqCst);
    wait_for(&probe.release);
    1
}

/// Unbounded: its three branches wait for each other, so each needs a thread of its own (the
/// global limit adapts from its floor, and a branch that finds no slot runs after the others on
/// its caller's thread).
static WIDE: Limit = Limit::unbounded("shutdown-wide");

#[blocking_first(limit = WIDE)]
async fn in_parallel_branches(probe: Arc<Probe>) {
    let _connection = Guard::new(&probe);
    probe.started.store(true, Ordering::SeqCst);
    let (a, b, c) = parallel! { branch(&probe), branch(&probe), branch(&probe) };
    assert_eq!(a + b + c, 3);
    probe.stretch_done.store(true, Ordering::SeqCst);
    io! { tokio::task::yield_now().await };
    probe.after.store(true, Ordering::SeqCst);
}

static ONE: Limit = Limit::new("shutdown-one", 1);

#[blocking_first(limit = ONE)]
async fn holds_the_slot(probe: Arc<Probe>) {
    let _connection = Guard::new(&probe);
    probe.started.store(true, Ordering::SeqCst);
    wait_for(&probe.release);
    probe.stretch_done.store(true, Ordering::SeqCst);
    io! { tokio::task::yield_now().await };
    probe.after.store(true, Ordering::SeqCst);
}

#[blocking_first(limit = ONE)]
async fn waits_for_the_slot(probe: Arc<Probe>, owned: Guard) {
    probe.started.store(true, Ordering::SeqCst);
    drop(owned);
    probe.after.store(true, Ordering::SeqCst);
}

// ----------------------------------------------------------------------------------------------
// The harness.

/// One body in flight and what must hold for it once the runtime is gone.
struct Watch {
    name: &'static str,
    probe: Arc<Probe>,
    /// Set when the task awaiting the body was dropped.
    gone: Arc<AtomicBool>,
    /// Whether the body ever started (a body waiting for its first slot never does).
    starts: bool,
    /// Whether the stretch running at shutdown finishes (blocking code is not interrupted).
    finishes_stretch: bool,
    /// Guards the body creates in all (arguments included).
    guards: usize,
}

impl Watch {
    fn new(name: &'static str) -> Watch {
        Watch {
            name,
            probe: Arc::default(),
            gone: Arc::default(),
            starts: true,
            finishes_stretch: false,
            guards: 1,
        }
    }

    /// Spawns `body` in a task that also holds this watch's sentinel.
    fn spawn<F>(&self, runtime: &Runtime, body: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let sentinel = Sentinel(self.gone.clone());
        runtime.spawn(async move {
            let _sentinel = sentinel;
            body.await;
        });
    }
}

#[derive(Clone, Copy, Debug)]
enum How {
    Drop,
    Timeout,
    Background,
}

fn runtimes() -> [(&'static str, Runtime); 2] {
    [
        (
            "current_thread",
            Builder::new_current_thread().enable_all().build().unwrap(),
        ),
        (
            "multi_thread",
            Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        ),
    ]
}

/// Starts the bodies with `start`, waits until `ready`, shuts the runtime down `how`, lets
/// blocked code go on once the drivers are gone, and checks every promise.
fn shut_down(
    flavor: &str,
    runtime: Runtime,
    how: How,
    start: impl FnOnce(&Runtime) -> Vec<Watch>,
    ready: impl Fn(&[Watch]) -> bool,
) {
    let context = format!("{flavor}, {how:?}");
    let watches = start(&runtime);
    // A current-thread runtime runs its tasks only inside `block_on`.
    runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready(&watches) {
            assert!(
                Instant::now() < deadline,
                "{context}: bodies never got ready"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });

    let all_gone = |watches: &[Watch]| {
        wait_until(&format!("{context}: tasks dropped"), || {
            watches.iter().all(|w| w.gone.load(Ordering::SeqCst))
        });
    };
    let release = |watches: &[Watch]| {
        for watch in watches {
            watch.probe.release.store(true, Ordering::SeqCst);
        }
    };
    match how {
        How::Drop => {
            // Dropping waits for blocking code: drop on another thread, release once the drivers
            // are gone, and expect the drop to finish soon after.
            let (done, finished) = mpsc::channel();
            let dropper = thread::spawn(move || {
                drop(runtime);
                done.send(Instant::now()).unwrap();
            });
            all_gone(&watches);
            let released = Instant::now();
            release(&watches);
            let at = finished
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{context}: dropping the runtime hung"));
            dropper.join().unwrap();
            let took = at.saturating_duration_since(released);
            assert!(
                took < Duration::from_secs(5),
                "{context}: drop took {took:?}"
            );
            // The drop waited for the blocking pool: every body is gone already.
            for watch in &watches {
                assert_eq!(
                    watch.probe.dropped.load(Ordering::SeqCst),
                    watch.probe.created.load(Ordering::SeqCst),
                    "{context}, {}: resources left when drop returned",
                    watch.name
                );
            }
        }
        How::Timeout => {
            let begin = Instant::now();
            runtime.shutdown_timeout(Duration::from_millis(250));
            let took = begin.elapsed();
            assert!(
                took < Duration::from_secs(5),
                "{context}: shutdown_timeout took {took:?}"
            );
            all_gone(&watches);
            release(&watches);
        }
        How::Background => {
            let begin = Instant::now();
            runtime.shutdown_background();
            assert!(begin.elapsed() < Duration::from_secs(5));
            all_gone(&watches);
            release(&watches);
        }
    }

    for watch in &watches {
        let probe = &watch.probe;
        let name = watch.name;
        // Once every guard is dropped the body future itself is gone: nothing can run later.
        wait_until(&format!("{context}, {name}: resources dropped"), || {
            probe.dropped.load(Ordering::SeqCst) == watch.guards
        });
        assert_eq!(
            probe.created.load(Ordering::SeqCst),
            watch.guards,
            "{context}, {name}: guards created"
        );
        assert_eq!(
            probe.dropped.load(Ordering::SeqCst),
            watch.guards,
            "{context}, {name}: every resource dropped exactly once"
        );
        assert_eq!(
            probe.started.load(Ordering::SeqCst),
            watch.starts,
            "{context}, {name}: started"
        );
        assert_eq!(
            probe.stretch_done.load(Ordering::SeqCst),
            watch.finishes_stretch,
            "{context}, {name}: the running stretch of blocking code"
        );
        assert!(
            !probe.after.load(Ordering::SeqCst),
            "{context}, {name}: user code ran after shutdown"
        );
    }
}

/// One scenario at a time: limits are `static` and their loops are shared by every runtime of
/// the process, so a body of one test's runtime could run on a loop of another's, and dropping
/// its own runtime would not wait for it (README, "What does not hold").
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn every_way(start: impl Fn(&Runtime) -> Vec<Watch>, ready: impl Fn(&[Watch]) -> bool + Copy) {
    let _one_at_a_time = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for how in [How::Drop, How::Timeout, How::Background] {
        for (flavor, runtime) in runtimes() {
            shut_down(flavor, runtime, how, &start, ready);
        }
    }
}

fn started(watches: &[Watch]) -> bool {
    watches
        .iter()
        .all(|w| w.probe.started.load(Ordering::SeqCst))
}

// ----------------------------------------------------------------------------------------------
// Tests.

#[test]
fn shutdown_during_blocking_code_lets_the_stretch_finish_and_runs_nothing_after() {
    every_way(
        |runtime| {
            let watch = Watch {
                finishes_stretch: true,
                ..Watch::new("in blocking code")
            };
            watch.spawn(runtime, in_blocking_code(watch.probe.clone()));
            vec![watch]
        },
        started,
    );
}

#[test]
fn shutdown_while_parked_on_an_await_drops_the_body_once() {
    every_way(
        |runtime| {
            let watch = Watch::new("parked on an await");
            watch.spawn(runtime, parked_on_an_await(watch.probe.clone()));
            vec![watch]
        },
        started,
    );
}

#[test]
fn shutdown_while_parked_in_io_drops_the_body_and_the_regions_locals_once() {
    every_way(
        |runtime| {
            let watch = Watch {
                finishes_stretch: true,
                guards: 2,
                ..Watch::new("parked in io")
            };
            watch.spawn(runtime, parked_in_io(watch.probe.clone()));
            vec![watch]
        },
        // In the region, holding its own guard.
        |watches| {
            watches
                .iter()
                .all(|w| w.probe.stretch_done.load(Ordering::SeqCst))
        },
    );
}

#[test]
fn shutdown_during_parallel_branches_waits_for_them_and_drops_each_once() {
    every_way(
        |runtime| {
            let watch = Watch {
                finishes_stretch: true,
                // The body's own guard and one per branch.
                guards: 4,
                ..Watch::new("in parallel branches")
            };
            watch.spawn(runtime, in_parallel_branches(watch.probe.clone()));
            vec![watch]
        },
        |watches| {
            watches
                .iter()
                .all(|w| w.probe.branches.load(Ordering::SeqCst) == 3)
        },
    );
}

#[test]
fn shutdown_while_waiting_for_a_slot_never_starts_the_body() {
    every_way(
        |runtime| {
            let holder = Watch {
                finishes_stretch: true,
                ..Watch::new("holds the slot")
            };
            holder.spawn(runtime, holds_the_slot(holder.probe.clone()));
            // The holder takes the slot first.
            runtime.block_on(async {
                while !holder.probe.started.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            let waiter = Watch {
                starts: false,
                ..Watch::new("waits for the slot")
            };
            let owned = Guard::new(&waiter.probe);
            waiter.spawn(runtime, waits_for_the_slot(waiter.probe.clone(), owned));
            vec![holder, waiter]
        },
        |watches| watches[0].probe.started.load(Ordering::SeqCst) && ONE.stats().waiting == 1,
    );
    let stats = ONE.stats();
    assert_eq!((stats.in_use, stats.waiting), (0, 0), "slots left taken");
    assert_eq!(stats.peak, 1, "the cap was exceeded");
}
