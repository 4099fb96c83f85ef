//! One measurement (a cell: one variant, one concurrency, one round) and one row of the table
//! (the cells of a variant and a concurrency over all rounds, merged).

use std::time::Duration;

use super::ms;
use crate::load::{self, Outcome};
use crate::variants::Variant;

/// One variant at one concurrency in one round, on a fresh server.
pub struct Cell {
    pub variant: Variant,
    pub concurrency: usize,
    /// From 0.
    pub round: usize,
    pub outcome: Outcome,
    /// Threads inside the blocking sections (for the thread-per-request server: busy threads).
    pub blocking_peak: usize,
    /// Variant (a): the most slots of its `Limit` taken at once.
    pub slots_peak: Option<usize>,
    /// OS threads of the process before the server started.
    pub os_threads_before: usize,
    /// OS threads of the process at the peak (sampled), whoever started them.
    pub os_threads_peak: usize,
    pub conns_peak: usize,
    pub waiting_peak: usize,
    pub pg_active: Option<usize>,
    pub pg_connected: Option<usize>,
    /// Moves of work to another thread (hops, `spawn_blocking`, `block_in_place`), in all.
    pub handoffs: u64,
    /// Requests the server served, warm-up requests included.
    pub served: u64,
}

impl Cell {
    /// A progress line for the terminal.
    pub fn line(&self, rounds: usize) -> String {
        format!(
            "round {}/{rounds} ({}) {:<26} c={:<4} {:>8.1} req/s  p50 {:>8.1} ms  p99 {:>8.1} ms  \
             errors {}  blocking {}  threads {} (+{})  conns {}  waiting {}",
            self.round + 1,
            self.variant.letter(),
            self.variant.label(),
            self.concurrency,
            self.outcome.per_second(),
            ms(self.outcome.quantile(0.5)),
            ms(self.outcome.quantile(0.99)),
            self.outcome.errors,
            self.blocking_peak,
            self.os_threads_peak,
            self.os_threads_added(),
            self.conns_peak,
            self.waiting_peak,
        )
    }

    fn os_threads_added(&self) -> usize {
        self.os_threads_peak.saturating_sub(self.os_threads_before)
    }
}

/// One variant at one concurrency: its cells of all rounds, merged.
pub struct Row {
    pub variant: Variant,
    pub concurrency: usize,
    /// Cells merged.
    pub rounds: usize,
    /// Throughput of the rounds (req/s): median, min, max.
    pub per_second: f64,
    pub per_second_min: f64,
    pub per_second_max: f64,
    /// Latencies of the successful measured requests of all rounds, sorted.
    pub latencies: Vec<Duration>,
    /// Failed measured requests over all rounds, and the first reason (of the earliest round).
    pub errors: usize,
    pub first_error: Option<String>,
    /// Rounds the time bound stopped before their request budget was spent.
    pub rounds_cut_by_time: usize,
    /// The following peaks: the max over rounds.
    pub blocking_peak: usize,
    pub slots_peak: Option<usize>,
    /// OS threads the server added to the process at the peak (peak minus before, max over rounds).
    pub os_threads_added: usize,
    /// OS threads of the process at the peak, absolute.
    pub os_threads_peak: usize,
    /// OS threads of the process before the server started: min and max over rounds.
    pub os_threads_before: (usize, usize),
    pub conns_peak: usize,
    pub waiting_peak: usize,
    pub pg_active: Option<usize>,
    pub pg_connected: Option<usize>,
    /// Handoffs of all rounds / requests served in all rounds.
    pub handoffs_per_request: f64,
}

impl Row {
    pub fn quantile(&self, q: f64) -> Duration {
        load::quantile(&self.latencies, q)
    }

    /// The cells of one variant at one concurrency (at least one) as one row.
    fn merge(mut cells: Vec<Cell>) -> Row {
        cells.sort_by_key(|cell| cell.round);
        let first = &cells[0];
        let (variant, concurrency) = (first.variant, first.concurrency);
        let mut throughput: Vec<f64> = cells.iter().map(|c| c.outcome.per_second()).collect();
        throughput.sort_by(f64::total_cmp);
        let mut latencies: Vec<Duration> = cells
            .iter()
            .flat_map(|c| c.outcome.latencies.iter().copied())
            .collect();
        latencies.sort_unstable();
        let max = |f: &dyn Fn(&Cell) -> usize| cells.iter().map(f).max().unwrap_or(0);
        let max_option = |f: &dyn Fn(&Cell) -> Option<usize>| cells.iter().filter_map(f).max();
        let handoffs: u64 = cells.iter().map(|c| c.handoffs).sum();
        let served: u64 = cells.iter().map(|c| c.served).sum();
        Row {
            variant,
            concurrency,
            rounds: cells.len(),
            per_second: median(&throughput),
            per_second_min: throughput[0],
            per_second_max: throughput[throughput.len() - 1],
            latencies,
            errors: cells.iter().map(|c| c.outcome.errors).sum(),
            first_error: cells.iter().find_map(|c| c.outcome.first_error.clone()),
            rounds_cut_by_time: cells.iter().filter(|c| c.outcome.cut_by_time).count(),
            blocking_peak: max(&|c| c.blocking_peak),
            slots_peak: max_option(&|c| c.slots_peak),
            os_threads_added: max(&|c| c.os_threads_added()),
            os_threads_peak: max(&|c| c.os_threads_peak),
            os_threads_before: (
                cells.iter().map(|c| c.os_threads_before).min().unwrap_or(0),
                max(&|c| c.os_threads_before),
            ),
            conns_peak: max(&|c| c.conns_peak),
            waiting_peak: max(&|c| c.waiting_peak),
            pg_active: max_option(&|c| c.pg_active),
            pg_connected: max_option(&|c| c.pg_connected),
            handoffs_per_request: handoffs as f64 / served.max(1) as f64,
        }
    }

    /// A summary line for the terminal.
    pub fn line(&self) -> String {
        format!(
            "({}) {:<26} c={:<4} {:>8.1} req/s ({:.1}-{:.1}, {} rounds)  p50 {:>8.1} ms  \
             p99 {:>8.1} ms  errors {}  threads {} (+{})",
            self.variant.letter(),
            self.variant.label(),
            self.concurrency,
            self.per_second,
            self.per_second_min,
            self.per_second_max,
            self.rounds,
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            self.errors,
            self.os_threads_peak,
            self.os_threads_added,
        )
    }
}

/// Merges the cells into one row per (variant, concurrency), rows ordered as `variants` then
/// `concurrencies` (a pair without cells has no row).
pub fn merge(cells: Vec<Cell>, variants: &[Variant], concurrencies: &[usize]) -> Vec<Row> {
    let mut groups: Vec<((Variant, usize), Vec<Cell>)> = variants
        .iter()
        .flat_map(|&v| concurrencies.iter().map(move |&c| ((v, c), Vec::new())))
        .collect();
    for cell in cells {
        if let Some((_, group)) = groups
            .iter_mut()
            .find(|(key, _)| *key == (cell.variant, cell.concurrency))
        {
            group.push(cell);
        }
    }
    groups
        .into_iter()
        .filter(|(_, group)| !group.is_empty())
        .map(|(_, group)| Row::merge(group))
        .collect()
}

/// The median of sorted values (the mean of the middle two for an even count); 0 if empty.
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The order of the variants in round `round` (from 0): rotated by one per round, so round r
/// starts at variant r mod the count.
pub fn rotated<T: Copy>(variants: &[T], round: usize) -> Vec<T> {
    if variants.is_empty() {
        return Vec::new();
    }
    let start = round % variants.len();
    variants[start..]
        .iter()
        .chain(&variants[..start])
        .copied()
        .collect()
}
