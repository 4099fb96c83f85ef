//! The load generator: a fixed number of workers, each sending requests back to back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Barrier, Mutex};

/// What one cell of the benchmark measured.
#[derive(Debug)]
pub struct Outcome {
    /// Measured requests that got a 200.
    pub ok: usize,
    /// Measured requests that failed (status or transport), and the first reason.
    pub errors: usize,
    pub first_error: Option<String>,
    /// From the end of the warm-up round to the last response.
    pub elapsed: Duration,
    /// Latencies of the successful measured requests, sorted.
    pub latencies: Vec<Duration>,
    /// Whether the time bound stopped the cell before the request budget was spent.
    pub cut_by_time: bool,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn quantile(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }
}

/// The `q` quantile of `sorted` latencies (nearest rank); zero if there are none.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[index - 1]
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

/// `concurrency` workers send `requests` requests in all to `url` (`?id=` varies over `rows`),
/// after a warm-up round of one unmeasured request per worker (it opens their connections).
/// Workers stop taking new requests once `max_time` has passed.
pub async fn run(
    url: String,
    concurrency: usize,
    requests: usize,
    max_time: Duration,
    rows: i64,
) -> Outcome {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client");
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (client, url, next, barrier, tally) = (
                client.clone(),
                url.clone(),
                next.clone(),
                barrier.clone(),
                tally.clone(),
            );
            tokio::spawn(async move {
                let _ = send(&client, &url, id(requests + worker, rows)).await;
                barrier.wait().await;
                let deadline = Instant::now() + max_time;
                let mut mine = Tally::default();
                loop {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= requests {
                        break;
                    }
                    let sent = Instant::now();
                    match send(&client, &url, id(index, rows)).await {
                        Ok(()) => mine.latencies.push(sent.elapsed()),
                        Err(reason) => {
                            mine.errors += 1;
                            mine.first_error.get_or_insert(reason);
                        }
                    }
                }
                let mut all = tally.lock().await;
                all.latencies.append(&mut mine.latencies);
                all.errors += mine.errors;
                if all.first_error.is_none() {
                    all.first_error = mine.first_error;
                }
            })
        })
        .collect();
    // The barrier opens once every worker is through its warm-up request: the clock starts.
    barrier.wait().await;
    let started = Instant::now();
    for worker in workers {
        worker.await.expect("load worker panicked");
    }
    let elapsed = started.elapsed();
    let tally = Arc::try_unwrap(tally)
        .ok()
        .expect("workers are done")
        .into_inner();
    let mut latencies = tally.latencies;
    latencies.sort_unstable();
    Outcome {
        ok: latencies.len(),
        errors: tally.errors,
        first_error: tally.first_error,
        elapsed,
        latencies,
        cut_by_time: next.load(Ordering::Relaxed) < requests,
    }
}

/// Request ids spread over the table.
fn id(index: usize, rows: i64) -> i64 {
    (index as i64).wrapping_mul(7919).rem_euclid(rows) + 1
}

async fn send(client: &reqwest::Client, url: &str, id: i64) -> Result<(), String> {
    let response = client
        .get(format!("{url}?id={id}"))
        .send()
        .await
        .map_err(|e| format!("{e}"))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| format!("{e}"))?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{status}: {body}"))
    }
}
