//! What `--adaptive` and `--mixed` share: every variant runs in a fresh process (the benchmark
//! runs itself again with `--child SPEC`), so each starts cold and its OS threads are its own; a
//! closed-loop load that timestamps every response; a sampler of the process; and the plain-text
//! lines a child prints for its parent.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::gauge::os_threads;

/// Runs this benchmark again, with the same flags and `--child spec`, and returns what it
/// printed on stdout (its stderr goes to ours).
pub fn run_child(spec: &str) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = Command::new(exe)
        .args(std::env::args().skip(1))
        .arg("--child")
        .arg(spec)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("child {spec}: {e}"))?;
    if !output.status.success() {
        return Err(format!("child {spec} failed: {}", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// One response: which endpoint (`tag`), when it finished (since the load started), its
/// latency, and whether it was a 200.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub tag: usize,
    pub at: Duration,
    pub latency: Duration,
    pub ok: bool,
}

/// Closed loop: for each `(url, workers)` of `endpoints` (its index is the tag), `workers`
/// workers send requests back to back from `start` until `start + duration`; no warm-up (the
/// first requests open the connections, as after a deploy).
pub async fn closed_loop(
    endpoints: &[(String, usize)],
    start: Instant,
    duration: Duration,
) -> Vec<Done> {
    let total: usize = endpoints.iter().map(|(_, n)| n).sum();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(total)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client");
    let end = start + duration;
    let mut workers = Vec::new();
    for (tag, (url, count)) in endpoints.iter().enumerate() {
        for worker in 0..*count {
            let (client, url) = (client.clone(), url.clone());
            workers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut n = worker as i64;
                while Instant::now() < end {
                    let sent = Instant::now();
                    n += 1;
                    let ok = match client
                        .get(format!("{url}?id={}", n % 1000 + 1))
                        .send()
                        .await
                    {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            ok && response.bytes().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    let now = Instant::now();
                    mine.push(Done {
                        tag,
                        at: now - start,
                        latency: now - sent,
                        ok,
                    });
                }
                mine
            }));
        }
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.expect("load worker panicked"));
    }
    all
}

/// One sample of the process, `every` apart: time since the start, OS threads, and whatever
/// `extra` reads (a limit's capacity, connections in use).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Duration,
    pub threads: usize,
    pub capacity: usize,
    pub conns: usize,
}

/// A thread sampling the process every `every` until dropped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Sample>>>,
}

impl Sampler {
    pub fn start(
        start: Instant,
        every: Duration,
        extra: impl Fn() -> (usize, usize) + Send + 'static,
    ) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("sampler".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Acquire) {
                        let (capacity, conns) = extra();
                        samples.push(Sample {
                            at: start.elapsed(),
                            threads: os_threads(),
                            capacity,
                            conns,
                        });
                        std::thread::sleep(every);
                    }
                    samples
                }
            })
            .expect("sampler thread");
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .map(|t| t.join().expect("sampler"))
            .unwrap_or_default()
    }
}

/// What a child prints: `key value` lines, `r tag at_us latency_us ok` per response and
/// `s at_ms threads capacity conns` per sample.
pub fn print_child(pairs: &[(&str, String)], done: &[Done], samples: &[Sample]) {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (key, value) in pairs {
        let _ = writeln!(out, "k {key} {value}");
    }
    for d in done {
        let _ = writeln!(
            out,
            "r {} {} {} {}",
            d.tag,
            d.at.as_micros(),
            d.latency.as_micros(),
            u8::from(d.ok)
        );
    }
    for s in samples {
        let _ = writeln!(
            out,
            "s {} {} {} {}",
            s.at.as_millis(),
            s.threads,
            s.capacity,
            s.conns
        );
    }
    print!("{out}");
}

/// A child's output, parsed back.
#[derive(Debug, Default)]
pub struct ChildOutput {
    pub pairs: Vec<(String, String)>,
    pub done: Vec<Done>,
    pub samples: Vec<Sample>,
}

impl ChildOutput {
    pub fn parse(text: &str) -> ChildOutput {
        let mut out = ChildOutput::default();
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let kind = fields.next();
            let mut num = || -> u64 { fields.next().and_then(|f| f.parse().ok()).unwrap_or(0) };
            match kind {
                Some("r") => out.done.push(Done {
                    tag: num() as usize,
                    at: Duration::from_micros(num()),
                    latency: Duration::from_micros(num()),
                    ok: num() == 1,
                }),
                Some("s") => out.samples.push(Sample {
                    at: Duration::from_millis(num()),
                    threads: num() as usize,
                    capacity: num() as usize,
                    conns: num() as usize,
                }),
                Some("k") => {
                    let mut rest = line.splitn(3, ' ').skip(1);
                    if let (Some(key), Some(value)) = (rest.next(), rest.next()) {
                        out.pairs.push((key.to_string(), value.to_string()));
                    }
                }
                _ => {}
            }
        }
        out
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse().ok())
    }
}

/// Responses of endpoint `tag` finished in `[from, to)`: 200s per second, the 200s' latencies
/// sorted, and the failures.
pub fn window(done: &[Done], tag: usize, from: Duration, to: Duration) -> Window {
    let mut latencies: Vec<Duration> = Vec::new();
    let mut errors = 0;
    for d in done
        .iter()
        .filter(|d| d.tag == tag && d.at >= from && d.at < to)
    {
        if d.ok {
            latencies.push(d.latency);
        } else {
            errors += 1;
        }
    }
    latencies.sort_unstable();
    Window {
        per_second: latencies.len() as f64 / (to - from).as_secs_f64(),
        latencies,
        errors,
    }
}

#[derive(Debug, Default, Clone)]
pub struct Window {
    pub per_second: f64,
    pub latencies: Vec<Duration>,
    pub errors: usize,
}

/// The median of `values` (0 if empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A CPU-bound loop of `iterations` rounds of arithmetic the optimizer cannot remove.
pub fn spin(iterations: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..iterations {
        x = std::hint::black_box(x.rotate_left(5) ^ i).wrapping_mul(0x100_0000_01b3);
    }
    x
}

/// How many [`spin`] iterations take `target` on one thread of this machine (the fastest of 5
/// tries of a 20 ms probe, so a busy machine does not inflate it).
pub fn calibrate(target: Duration) -> u64 {
    let probe = 2_000_000u64;
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(spin(probe));
            t.elapsed()
        })
        .min()
        .unwrap_or(Duration::from_millis(1));
    (probe as f64 * target.as_secs_f64() / best.as_secs_f64().max(1e-6)) as u64
}
