//! Counting what is in use: gauges around code sections, and a monitor thread that samples the
//! process's OS threads, its resident set and the database's backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How many are inside a section now, and the most ever at once.
#[derive(Debug, Default)]
pub struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    /// Counts one inside the section until the guard is dropped.
    pub fn enter(&self) -> Inside<'_> {
        let now = self.now.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak.fetch_max(now, Ordering::AcqRel);
        Inside(self)
    }

    /// How many are inside now.
    pub fn now(&self) -> usize {
        self.now.load(Ordering::Acquire)
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    pub fn reset_peak(&self) {
        self.peak
            .store(self.now.load(Ordering::Acquire), Ordering::Release);
    }
}

/// Guard of [`Gauge::enter`].
#[derive(Debug)]
pub struct Inside<'a>(&'a Gauge);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The number of OS threads of this process.
pub fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |dir| dir.count())
}

/// The resident set of this process (`VmRSS` of `/proc/self/status`), in KiB; 0 if unknown.
pub fn rss_kib() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Peaks seen by the monitor since the last [`Monitor::reset`].
#[derive(Debug, Default)]
pub struct Peaks {
    pub os_threads: AtomicUsize,
    /// Resident set of the process, KiB (sampled every 10 ms).
    pub rss_kib: AtomicUsize,
    /// Backends of the benchmark database running a statement (PostgreSQL only).
    pub pg_active: AtomicUsize,
    /// Backends connected to the benchmark database (PostgreSQL only).
    pub pg_connected: AtomicUsize,
}

/// A thread sampling the process's thread count every 2 ms and, with PostgreSQL,
/// `pg_stat_activity` every 10 ms through its own connection (not counted).
#[derive(Debug)]
pub struct Monitor {
    pub peaks: Arc<Peaks>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    pub fn start(pg: Option<&str>) -> Result<Monitor, String> {
        let mut client = match pg {
            Some(url) => Some(
                postgres::Client::connect(url, postgres::NoTls)
                    .map_err(|err| format!("monitor connection: {err}"))?,
            ),
            None => None,
        };
        let peaks = Arc::new(Peaks::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("monitor".into())
            .spawn({
                let peaks = peaks.clone();
                let stop = stop.clone();
                move || {
                    let mut tick = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        peaks.os_threads.fetch_max(os_threads(), Ordering::AcqRel);
                        if tick % 5 == 0 {
                            peaks.rss_kib.fetch_max(rss_kib(), Ordering::AcqRel);
                        }
                        if tick % 5 == 0
                            && let Some(client) = client.as_mut()
                        {
                            sample_pg(client, &peaks);
                        }
                        tick += 1;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            })
            .map_err(|err| err.to_string())?;
        Ok(Monitor {
            peaks,
            stop,
            thread: Some(thread),
        })
    }

    /// Starts a new phase: the peaks become the current values.
    pub fn reset(&self) {
        self.peaks.os_threads.store(os_threads(), Ordering::Release);
        self.peaks.rss_kib.store(rss_kib(), Ordering::Release);
        self.peaks.pg_active.store(0, Ordering::Release);
        self.peaks.pg_connected.store(0, Ordering::Release);
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sample_pg(client: &mut postgres::Client, peaks: &Peaks) {
    let row = client.query_one(
        "select count(*) filter (where state <> 'idle'), count(*) from pg_stat_activity \
         where datname = current_database() and backend_type = 'client backend' \
         and pid <> pg_backend_pid()",
        &[],
    );
    if let Ok(row) = row {
        let active: i64 = row.get(0);
        let connected: i64 = row.get(1);
        peaks.pg_active.fetch_max(active as usize, Ordering::AcqRel);
        peaks
            .pg_connected
            .fetch_max(connected as usize, Ordering::AcqRel);
    }
}
