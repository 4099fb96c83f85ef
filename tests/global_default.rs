//! The global limit with no configuration: adaptive, it keeps CPU-bound work near the cores
//! (few threads, the same throughput) and lets waiting work grow as an unbounded pool would; and
//! opting out works. One test in its own binary: the global limit starts cold, and no other
//! test's threads are counted.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use blocking_first::blocking_first;
use blocking_first::limit;
use common::os_threads;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// A fixed amount of CPU work: `n` rounds of arithmetic.
fn work(n: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..n {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    x
}

/// Rounds of [`work`] that take about 5 ms of one core, measured once (alone, before the load).
fn five_ms_of_work() -> u64 {
    static ROUNDS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ROUNDS.get_or_init(|| {
        let probe = 1_000_000;
        let start = Instant::now();
        work(probe);
        let per_round = start.elapsed().as_secs_f64() / probe as f64;
        (0.005 / per_round) as u64
    })
}

/// About 5 ms of CPU (not of wall time: with more runnable threads than cores, it takes longer).
#[blocking_first]
async fn burn(done: Arc<AtomicU64>) {
    std::hint::black_box(work(five_ms_of_work()));
    done.fetch_add(1, Ordering::Relaxed);
}

/// The same work under a fixed cap of the cores: what the adaptive limit is compared with, in
/// alternate phases (a machine busy with other work slows both alike).
static CORES: blocking_first::limit::Limit = blocking_first::limit::Limit::new("cores", 2);

#[blocking_first(limit = CORES)]
async fn burn_capped(done: Arc<AtomicU64>) {
    std::hint::black_box(work(five_ms_of_work()));
    done.fetch_add(1, Ordering::Relaxed);
}

/// 10 ms of waiting.
#[blocking_first]
async fn wait(done: Arc<AtomicU64>) {
    std::thread::sleep(Duration::from_millis(10));
    done.fetch_add(1, Ordering::Relaxed);
}

/// Runs `callers` closed-loop calls of `call` for `warm` + `measure`; returns the calls per
/// second over `measure` and the most OS threads seen above the idle runtime's.
fn load<F, Fut>(callers: usize, warm: Duration, measure: Duration, call: F) -> (f64, usize)
where
    F: Fn(Arc<AtomicU64>) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {});
    std::thread::sleep(Duration::from_millis(50));
    let idle = os_threads();
    let (done, stop, peak) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    for _ in 0..callers {
        let (done, stop) = (done.clone(), stop.clone());
        runtime.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                call(done.clone()).await;
            }
        });
    }
    let start = Instant::now();
    let mut counted = None;
    while start.elapsed() < warm + measure {
        peak.fetch_max(os_threads(), Ordering::Relaxed);
        if counted.is_none() && start.elapsed() >= warm {
            counted = Some((Instant::now(), done.load(Ordering::Relaxed)));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (from, before) = counted.unwrap();
    let rate = (done.load(Ordering::Relaxed) - before) as f64 / from.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    drop(runtime);
    // The sampler itself is this thread: not counted.
    (rate, peak.load(Ordering::Relaxed).saturating_sub(idle))
}

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "counts threads through /proc")]
fn with_no_configuration_cpu_work_stays_near_the_cores_and_waiting_work_is_not_throttled() {
    let cores = cores();
    five_ms_of_work();
    let global = limit::global();
    assert_eq!(global.stats().bounds, Some((cores.max(2), 512)));
    assert_eq!(global.capacity(), Some(cores.max(2)));

    // CPU-bound: 64 callers of 5 ms of CPU. An unbounded pool would start a thread per caller.
    // Alternate phases with a fixed cap of the cores.
    CORES.set_capacity(cores).unwrap();
    let (mut adaptive, mut capped, mut threads) = (0.0, 0.0, 0);
    for round in 0..2 {
        let warm = Duration::from_millis(if round == 0 { 1000 } else { 300 });
        let (rate, added) = load(64, warm, Duration::from_millis(1500), burn);
        adaptive += rate / 2.0;
        threads = threads.max(added);
        let (rate, _) = load(
            64,
            Duration::from_millis(300),
            Duration::from_millis(1500),
            burn_capped,
        );
        capped += rate / 2.0;
    }
    let best = cores as f64 / 0.005;
    println!(
        "cpu: {adaptive:.0} calls/s ({:.0}% of {best:.0}; a fixed cap of {cores}: {capped:.0}), \
         {threads} threads added, capacity now {:?}",
        100.0 * adaptive / best,
        global.capacity()
    );
    assert!(threads <= 2 * cores + 6, "{threads} threads added");
    assert!(
        adaptive >= 0.8 * capped,
        "{adaptive:.0} calls/s against {capped:.0} under a fixed cap of the cores"
    );

    // Waiting: 32 callers of a 10 ms sleep, as many at once as an unbounded pool would run.
    let (rate, threads) = load(32, Duration::from_secs(1), Duration::from_secs(2), wait);
    let best = 32.0 / 0.010;
    println!(
        "wait: {rate:.0} calls/s ({:.0}% of {best:.0}), {threads} threads added, capacity now {:?}",
        100.0 * rate / best,
        global.capacity()
    );
    assert!(rate >= 0.8 * best, "{rate:.0} calls/s");

    // Opting out, once nothing runs: a fixed cap, then no cap at all.
    std::thread::sleep(Duration::from_millis(50));
    limit::set_global_capacity(3).unwrap();
    let stats = global.stats();
    assert_eq!((stats.capacity, stats.bounds), (Some(3), None));
    assert!(!global.is_adaptive());
    global.reset_peak();
    let (_, _) = load(16, Duration::ZERO, Duration::from_millis(300), wait);
    assert_eq!(global.stats().peak, 3, "a fixed cap of 3");
    std::thread::sleep(Duration::from_millis(50));
    limit::set_global_unbounded().unwrap();
    assert_eq!(global.capacity(), None);
    global.reset_peak();
    let (rate, _) = load(
        32,
        Duration::from_millis(200),
        Duration::from_millis(500),
        wait,
    );
    assert!(rate >= 0.8 * 3200.0, "{rate:.0} calls/s unbounded");
    assert!(
        global.stats().peak > 3,
        "unbounded: {}",
        global.stats().peak
    );
    // A fixed or unbounded global limit does not become adaptive again by accident.
    assert!(!global.is_adaptive());
}
