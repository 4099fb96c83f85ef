//! Command-line flags.

use std::path::PathBuf;
use std::time::Duration;

use crate::variants::Variant;

pub const USAGE: &str = "\
cargo run --release -p blocking-first-bench -- [flags]

One handler (a blocking database read step, a call to a local upstream, a blocking database
write) written six ways, served on 127.0.0.1 and loaded at several concurrencies.

  --pg URL               PostgreSQL (see scripts/postgres.sh); default: SQLite in a temp file
  --pool N               database pool size = blocking cap = thread-per-request threads [8]
  --upstream-ms MS       upstream latency [50]
  --query-ms MS          time each database call keeps its connection busy (PostgreSQL:
                         pg_sleep in the database; SQLite: a sleep holding the connection) [5]
  --reads N              read queries in the read step [2]
  --concurrency LIST     client concurrencies, comma-separated [16,128,512]
  --variants LIST        any of a,b,c,d,e,f [a,b,c,d,e,f]
  --requests N           measured requests per variant and concurrency, split evenly over the
                         rounds: each cell measures requests / rounds (at least 1) [3000]
  --rounds N             rounds; each round runs, at every concurrency, every variant once,
                         the order rotated by one per round (round r starts at variant r mod
                         count), so machine noise falls on all variants alike. A row of the
                         table merges its rounds: req/s median (min-max), latency percentiles
                         of all rounds' samples pooled, peaks max over rounds [3]
  --max-seconds S        stop starting new requests after S seconds per cell (per round) [60]
  --server-workers N     tokio worker threads of the server under test [2]
  --max-blocking N       tokio max_blocking_threads of the server under test [512]
  --rows N               rows in the table [1000]
  --out PATH             write PATH.md and PATH.svg [docs/bench/loadbench]
  --no-write             print the table only
  --overload             instead of the table above: find the sustainable rate R of (a) (closed
                         loop, concurrency 128), then offer open-loop load at 1x, 2x, 4x R to (a)
                         with ShedLayer and to (a) without shedding, 2 rounds interleaved; writes
                         docs/bench/overload.md and .svg unless --out or --no-write is given
  --overload-seconds S   seconds of offered load per overload cell [8]
  --max-waiting N        the limit's queue bound with shedding [4 x pool]
  --timeline             instead of the table above: one timeline row per request, coloured by
                         where its time goes (slot wait, pool queue, blocking, io, parked,
                         runtime), for (a) (from the runtime's `blocking_first::split` events)
                         and (b) (clock reads in the handler), each on a fresh server at
                         --timeline-clients clients after a 1 s warm-up; writes
                         docs/bench/timeline.md and .svg unless --out or --no-write is given
  --timeline-clients N   client concurrency of the timeline; the default saturates the pool
                         (a request holds a connection 3 x 5 ms of its ~65 ms) [64]
  --timeline-rows N      consecutive requests drawn per variant [40]
  --adaptive             instead of the table above: one query per request against a simulated
                         resource of --slots slots whose query time grows past them (--query-ms,
                         default 10 here, x4 after --phase-seconds), 64 closed-loop clients;
                         static caps (--caps) against Limit::adaptive(2, 64) started cold, each
                         run in a fresh process, --rounds rounds interleaved; then the adaptive
                         limit with max_queue_time and ShedLayer under open-loop load at 1x, 2x
                         and 4x its rate; writes docs/bench/adaptive.md and .svg
  --caps LIST            static caps swept by --adaptive [2,4,8,16,32,64]
  --slots N              queries the simulated resource serves at once [8]
  --contention F         extra query time per query inside the resource past --slots, as a
                         fraction of the query time [0.05]
  --phase-seconds S      --adaptive: seconds before and after the query cost x4 [10]
  --max-queue-ms MS      --adaptive: max_queue_time of the shedding runs [the query time]
  --mixed                instead of the table above: handlers on the global limit (no limit =),
                         a CPU-heavy endpoint at 32 closed-loop clients beside a light one at 4,
                         then a 10 ms sleeping body at 32 clients, with the global limit
                         adaptive (the default), unbounded, and fixed at --fixed-caps; each run
                         in a fresh process, --rounds rounds interleaved; writes
                         docs/bench/mixed.md
  --mixed-seconds S      seconds of each --mixed run [10]
  --heavy-ms MS          --mixed: CPU time of the heavy body on one idle core [5]
  --fixed-caps LIST      --mixed: the fixed global caps compared [the number of cores]
";

#[derive(Debug, Clone)]
pub struct Args {
    pub pg: Option<String>,
    pub pool: usize,
    pub upstream: Duration,
    pub query: Duration,
    pub reads: usize,
    pub concurrency: Vec<usize>,
    pub variants: Vec<Variant>,
    pub requests: usize,
    pub rounds: usize,
    pub max_time: Duration,
    pub server_workers: usize,
    pub max_blocking: usize,
    pub rows: i64,
    pub out: Option<PathBuf>,
    /// `--out` was given (the overload mode has its own default).
    pub out_given: bool,
    pub overload: bool,
    pub overload_time: Duration,
    /// `None`: 4 × pool.
    pub max_waiting: Option<usize>,
    pub timeline: bool,
    pub timeline_clients: usize,
    pub timeline_rows: usize,
    /// `--query-ms` was given (`--adaptive` has its own default).
    pub query_given: bool,
    pub adaptive: bool,
    pub caps: Vec<usize>,
    pub slots: usize,
    pub contention: f64,
    pub phase_time: Duration,
    /// `None`: the query time.
    pub max_queue: Option<Duration>,
    pub mixed: bool,
    pub mixed_time: Duration,
    pub heavy: Duration,
    /// `None`: the number of cores.
    pub fixed_caps: Option<Vec<usize>>,
    /// Set in the processes `--adaptive` and `--mixed` start: what to run.
    pub child: Option<String>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            pg: None,
            pool: 8,
            upstream: Duration::from_millis(50),
            query: Duration::from_millis(5),
            reads: 2,
            concurrency: vec![16, 128, 512],
            variants: Variant::ALL.to_vec(),
            requests: 3000,
            rounds: 3,
            max_time: Duration::from_secs(60),
            server_workers: 2,
            max_blocking: 512,
            rows: 1000,
            out: Some(PathBuf::from("docs/bench/loadbench")),
            out_given: false,
            overload: false,
            overload_time: Duration::from_secs(8),
            max_waiting: None,
            timeline: false,
            timeline_clients: 64,
            timeline_rows: 40,
            query_given: false,
            adaptive: false,
            caps: vec![2, 4, 8, 16, 32, 64],
            slots: 8,
            contention: 0.05,
            phase_time: Duration::from_secs(10),
            max_queue: None,
            mixed: false,
            mixed_time: Duration::from_secs(10),
            heavy: Duration::from_millis(5),
            fixed_caps: None,
            child: None,
        }
    }
}

impl Args {
    /// Where a mode that writes its report by default (`--overload`, `--timeline`) writes it:
    /// `--out` if given, else `default`; `None` for `--out` with no path (print only).
    pub fn out_or(&self, default: &str) -> Option<PathBuf> {
        match (&self.out, self.out_given) {
            (None, _) => None,
            (Some(out), true) => Some(out.clone()),
            (Some(_), false) => Some(PathBuf::from(default)),
        }
    }

    pub fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut args = Args::default();
        while let Some(flag) = argv.next() {
            if flag == "--help" || flag == "-h" {
                return Err(String::new());
            }
            if flag == "--no-write" {
                args.out = None;
                args.out_given = true;
                continue;
            }
            if flag == "--overload" {
                args.overload = true;
                continue;
            }
            if flag == "--timeline" {
                args.timeline = true;
                continue;
            }
            if flag == "--adaptive" {
                args.adaptive = true;
                continue;
            }
            if flag == "--mixed" {
                args.mixed = true;
                continue;
            }
            let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--pg" => args.pg = Some(value),
                "--pool" => args.pool = positive(&flag, &value)?,
                "--upstream-ms" => args.upstream = millis(&flag, &value)?,
                "--query-ms" => {
                    args.query = millis(&flag, &value)?;
                    args.query_given = true;
                }
                "--reads" => args.reads = positive(&flag, &value)?,
                "--concurrency" => {
                    args.concurrency = value
                        .split(',')
                        .map(|n| positive(&flag, n))
                        .collect::<Result<_, _>>()?
                }
                "--variants" => {
                    args.variants = value
                        .split(',')
                        .map(|name| {
                            Variant::ALL
                                .into_iter()
                                .find(|v| v.letter() == name.trim())
                                .ok_or_else(|| format!("unknown variant {name:?} (a to f)"))
                        })
                        .collect::<Result<_, _>>()?
                }
                "--requests" => args.requests = positive(&flag, &value)?,
                "--rounds" => args.rounds = positive(&flag, &value)?,
                "--max-seconds" => {
                    args.max_time = Duration::from_secs(positive(&flag, &value)? as u64)
                }
                "--server-workers" => args.server_workers = positive(&flag, &value)?,
                "--max-blocking" => args.max_blocking = positive(&flag, &value)?,
                "--rows" => args.rows = positive(&flag, &value)? as i64,
                "--out" => {
                    args.out = Some(PathBuf::from(value));
                    args.out_given = true;
                }
                "--overload-seconds" => {
                    args.overload_time = Duration::from_secs(positive(&flag, &value)? as u64)
                }
                "--max-waiting" => args.max_waiting = Some(positive(&flag, &value)?),
                "--timeline-clients" => args.timeline_clients = positive(&flag, &value)?,
                "--timeline-rows" => args.timeline_rows = positive(&flag, &value)?,
                "--caps" => args.caps = list(&flag, &value)?,
                "--slots" => args.slots = positive(&flag, &value)?,
                "--contention" => {
                    args.contention = match value.trim().parse::<f64>() {
                        Ok(f) if f >= 0.0 && f.is_finite() => f,
                        _ => return Err(format!("{flag} expects a fraction, got {value:?}")),
                    }
                }
                "--phase-seconds" => {
                    args.phase_time = Duration::from_secs(positive(&flag, &value)? as u64)
                }
                "--max-queue-ms" => args.max_queue = Some(millis(&flag, &value)?),
                "--mixed-seconds" => {
                    args.mixed_time = Duration::from_secs(positive(&flag, &value)? as u64)
                }
                "--heavy-ms" => args.heavy = millis(&flag, &value)?,
                "--fixed-caps" => args.fixed_caps = Some(list(&flag, &value)?),
                "--child" => args.child = Some(value),
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        if args.adaptive && !args.query_given {
            args.query = Duration::from_millis(10);
        }
        Ok(args)
    }

    /// `--adaptive`'s bound on time in queue.
    pub fn max_queue(&self) -> Duration {
        self.max_queue.unwrap_or(self.query)
    }

    /// `--mixed`'s fixed caps.
    pub fn fixed_caps(&self) -> Vec<usize> {
        self.fixed_caps.clone().unwrap_or_else(|| vec![cores()])
    }

    /// The limit's queue bound in the overload mode's shedding cells.
    pub fn max_waiting(&self) -> usize {
        self.max_waiting.unwrap_or(4 * self.pool)
    }

    /// Measured requests of one cell (one variant, one concurrency, one round).
    pub fn requests_per_cell(&self) -> usize {
        (self.requests / self.rounds).max(1)
    }
}

/// The number of cores (at least 2), the global limit's floor.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .max(2)
}

fn list(flag: &str, value: &str) -> Result<Vec<usize>, String> {
    value.split(',').map(|n| positive(flag, n)).collect()
}

fn positive(flag: &str, value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} expects a positive integer, got {value:?}")),
    }
}

fn millis(flag: &str, value: &str) -> Result<Duration, String> {
    match value.trim().parse::<f64>() {
        Ok(ms) if ms >= 0.0 && ms.is_finite() => Ok(Duration::from_secs_f64(ms / 1000.0)),
        _ => Err(format!("{flag} expects milliseconds, got {value:?}")),
    }
}
