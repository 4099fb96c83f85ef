//! A composition stress harness: random handlers built from every construct, run side by side on
//! random runtimes, with the library's invariants checked after every case.
//!
//! `#[blocking_first]` is a compile-time macro, so a "random handler" is one of four annotated
//! functions (one per limit: `A` cap 2, `B` cap 3, `C` cap 2, and the unbounded global limit `G`)
//! that interprets a randomly generated *plan*: a small tree of steps, an owned `Arc<Plan>`.
//! The steps:
//!
//! - blocking code: a sleep (0-5 ms, now and then 20-150 ms), a spin, a resource held until the
//!   body or branch ends (in half the cases also a connection of a `blocking_first::pool::Pool` of
//!   diesel's manager, which is `Send` and is counted in the body that took it), a planned panic (with a message, or `panic_any` of a payload whose own
//!   destructor panics), a `Limit::set_capacity` attempt;
//! - in bodies: `io! { tokio::time::sleep(..).await }`, `io! { yield_now().await }` (sometimes
//!   followed by a spin: blocking code inside `io!`), plain `.await`s of `tokio::time::sleep` and
//!   `yield_now` outside regions, a nested annotated call awaited, and `parallel! { a, b }` or
//!   `parallel! { a, b, c }`;
//! - a nested annotated call run with `Handle::current().block_on(..)`, from the blocking code of
//!   bodies *and* of `parallel` branches, on the same limit or on another one;
//! - `parallel::scope`, whose closure spawns branches (joined or not), sleeps between spawns or
//!   panics at the end, and whose branches spawn branches into it; `parallel::map`. Branches
//!   borrow a canary of their caller and may capture a resource, or a value whose destructor
//!   panics (with a message, or with a payload whose destructor panics too).
//!
//! A *case* is 2-6 such calls at once on a current-thread or multi-thread runtime (with a roomy
//! blocking pool, or a tight one of 2-3 threads), sometimes with a second multi-thread runtime
//! running calls on the same limits, which may be shut down mid-flight (`drop`,
//! `shutdown_timeout`, `shutdown_background`). Calls are awaited by tasks or by `Handle::block_on`
//! on plain threads, cancelled at random moments (a `timeout` around the call, or an abort of its
//! task); a thread may keep trying `set_capacity` on the limits; the long-stretch detector (and
//! the `io!` one) may be on with a tiny threshold while a tracing layer panics on every `WARN`.
//!
//! Plans never ask for a deadlock by design. From code that holds slots while it waits
//! (`Handle::block_on`, a branch whose caller waits in the scope) a nested call goes to the same
//! limit (it runs inline, under the caller's slot), to the global limit (inline too: an adaptive
//! limit grows by a slot, up to its ceiling, for a nested call that finds none free), or,
//! with a roomy blocking pool, to a limit ranked above every limit whose slot the thread may hold
//! (A < B < C < G); with a tight pool, only the first two. There is no `Handle::block_on` under
//! another one (tokio forbids it on one thread).
//!
//! The global limit `G` adapts its capacity (its default), so every case also moves it: windows
//! of stretch times, growth while every slot is stuck, a slot made for a nested call. The
//! `set_capacity` thread also turns shedding by time in queue on and off.
//!
//! **Invariants**, checked for every case:
//! 1. every call completes, panics or is cancelled: a case not over after 10 s fails with the
//!    seed, the calls still pending, `observe::in_flight()` and every limit's stats. A call that
//!    completes has exactly its plan's value; it panics iff its plan panics (or its runtime shut
//!    down, or the layer panics), with one of the harness's payloads; it is cancelled only when
//!    it was meant to be;
//! 2. no cap is ever exceeded: the harness counts the threads running blocking code of each limit
//!    (a branch or a nested body counts for the innermost limit) against its capacity, and each
//!    limit's `peak` stays within the largest capacity it had;
//! 3. once the calls are over: nothing in flight, no slot in use, nothing queued, no body in
//!    blocking code; once the runtimes are gone, no loop left, no limit full, the global limit
//!    still adaptive within its bounds, and every capacity can be set back;
//! 4. borrowed data is never touched after its scope: each branch checks, at every step, a canary
//!    that its owner marks dead as soon as `parallel::scope`, `parallel!` or `parallel::map`
//!    returns or unwinds (the canary itself stays allocated; a branch that finds it dead reports
//!    and parks for good rather than touch anything else of its scope);
//! 5. every resource is dropped exactly once and never in its caller's poll (on a runtime worker)
//!    unless its runtime shuts down; blocking code never runs in the caller's poll, and a top-level
//!    body's `io!` code does once it really waited;
//! 6. the process-wide counters (cases run one at a time, in this binary's only test):
//!    `parallel_dispatched` and `parallel_inline` grow by exactly the spawned branches that ran on
//!    the pool and on their caller's thread (a branch spawned by a branch may be either: then only
//!    their sum is exact), every spawned branch runs once or is dropped unrun, `hops` grows by at
//!    least the top-level bodies that started, `detector_warnings` by exactly the `WARN`s of
//!    `blocking_first::detect` the layer saw, and `in_blocking`/`waiting_for_slot` return to 0;
//!    `connection_warnings` grows only in cases that take pool connections, and once the runtimes
//!    are gone every connection is back in the pool.
//!
//! **Environment**:
//! - `BLOCKING_FIRST_STRESS_SEED=<u64>`: run only the case with this seed (decimal or `0x..`);
//! - `BLOCKING_FIRST_STRESS_CASES=<n>`: how many random cases after the regression seeds (300
//!   by default);
//! - `BLOCKING_FIRST_STRESS_SECS=<s>`: a time budget: cases until it is spent (without either
//!   variable, the default 300 cases also stop after 45 s);
//! - `BLOCKING_FIRST_STRESS_BASE=<u64>`: another sequence of case seeds;
//! - `BLOCKING_FIRST_STRESS_VERBOSE=1`: each case on standard error before it runs (written past
//!   the test harness's capture, so it survives a crash).
//!
//! To replay a failure, run the command it prints: `BLOCKING_FIRST_STRESS_SEED=0x... cargo test
//! -p blocking-first-tests --test compose_stress`. A seed fixes the case (runtimes, calls, plans,
//! delays), not the scheduling: it makes a bug likely, not certain; repeat it a few times. Seeds
//! are only meaningful for this file's generator as it is.

use std::any::Any;
use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError, mpsc};
use std::task::{Context, Poll};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use blocking_first::limit::{self, Limit};
use blocking_first::observe::{self, detect};
use blocking_first::pool::{Conn, Pool};
use blocking_first::{blocking_first, parallel};
use diesel::SqliteConnection;
use diesel::r2d2::ConnectionManager;
use tokio::runtime::{Builder, Handle, Runtime};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};

// ================================================================================================
// Settings.

/// How many random cases the default run tries (after the regression seeds).
const DEFAULT_CASES: u64 = 300;
/// The default run stops early once this much time is spent.
const DEFAULT_SECS: f64 = 45.0;
/// The default sequence of case seeds.
const DEFAULT_BASE: u64 = 0x5eed_c0de_b10c_f1f5;
/// A case that has not ended after this long hangs.
const CASE_DEADLINE: Duration = Duration::from_secs(10);
/// How long a case may take to become quiet once its calls ended.
const SETTLE: Duration = Duration::from_secs(3);

/// Seeds that found bugs, replayed before the random ones.
const REGRESSION_SEEDS: &[u64] = &[
    // A `parallel::scope` of the global limit whose closure panics while a slow branch runs and
    // branches whose captures panic in their destructors stay queued (the first seed: on a pool
    // of 2 blocking threads), the last with a payload whose own destructor panics: the scope
    // unwound before the slow branch was done with the data it borrowed.
    0x2f70_6bdf_3bd4_1947,
    0x99c3_2b8f_26ca_417e,
    // A branch of a `parallel::scope` of limit C (cap 2), sent to a loop, `Handle::block_on`s a
    // function of limit C: it waited forever for a slot (C: 2 in use, 1 waiting).
    0xa2ca_4259_1586_c184,
    // The long-stretch detector's `WARN` on a loop, with a layer that panics on it: the stretch's
    // outcome was never handed back, and its caller waited forever.
    0x69c9_c082_cb3b_4706,
];

struct Config {
    seed: Option<u64>,
    base: u64,
    cases: Option<u64>,
    secs: Option<f64>,
    verbose: bool,
}

fn parse_u64(value: &str) -> Option<u64> {
    let value = value.trim();
    match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
        None => value.replace('_', "").parse().ok(),
    }
}

impl Config {
    fn from_env() -> Config {
        let var = |name: &str| std::env::var(name).ok();
        let number = |name: &str| {
            var(name)
                .map(|v| parse_u64(&v).unwrap_or_else(|| panic!("{name}={v:?} is not a number")))
        };
        let cases = number("BLOCKING_FIRST_STRESS_CASES");
        let secs = var("BLOCKING_FIRST_STRESS_SECS").map(|v| {
            v.trim()
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("BLOCKING_FIRST_STRESS_SECS={v:?} is not a number"))
        });
        let (cases, secs) = match (cases, secs) {
            (None, None) => (Some(DEFAULT_CASES), Some(DEFAULT_SECS)),
            other => other,
        };
        Config {
            seed: number("BLOCKING_FIRST_STRESS_SEED"),
            base: number("BLOCKING_FIRST_STRESS_BASE").unwrap_or(DEFAULT_BASE),
            cases,
            secs,
            verbose: var("BLOCKING_FIRST_STRESS_VERBOSE").is_some_and(|v| v != "0"),
        }
    }
}

// ================================================================================================
// A small deterministic PRNG (splitmix64).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// An index, with these weights.
    fn pick(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut at = self.below(total.max(1));
        for (index, &weight) in weights.iter().enumerate() {
            if at < weight {
                return index;
            }
            at -= weight;
        }
        weights.len() - 1
    }
}

fn case_seed(base: u64, index: u64) -> u64 {
    Rng(base ^ index.wrapping_mul(0xa24b_aed4_963e_e407)).next()
}

// ================================================================================================
// The limits, ranked by index: a nested call from code that waits while it holds slots only goes
// up the ranks (or to the same limit, or to the unbounded global one, both inline).

static LA: Limit = Limit::new("compose-a", 2);
static LB: Limit = Limit::new("compose-b", 3);
static LC: Limit = Limit::new("compose-c", 2);
/// Capacities of A, B, C as declared.
const CAPS: [usize; 3] = [2, 3, 2];
const NAMES: [&str; 4] = ["A", "B", "C", "G"];
/// The global limit (unbounded): functions without `limit = ..`.
const G: usize = 3;

fn limit_of(index: usize) -> &'static Limit {
    match index {
        0 => &LA,
        1 => &LB,
        2 => &LC,
        _ => limit::global(),
    }
}

/// Threads now running a leaf step of blocking code, by the innermost limit they run under.
static ACTIVE: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

// ================================================================================================
// Plans.

#[derive(Debug)]
struct Plan {
    steps: Vec<Step>,
    /// The body returns a resource with its value (bodies only).
    returns_resource: bool,
}

#[derive(Debug)]
enum Step {
    Sleep {
        id: u64,
        us: u64,
    },
    /// Blocking work in 200 µs rows, for `us` at most, that stops once `is_cancelled()` says
    /// so (a sleep of the generator's, one in four, one in two in nested bodies: the plans of
    /// older seeds keep their shape).
    UntilCancelled {
        id: u64,
        us: u64,
    },
    Spin {
        id: u64,
        us: u64,
    },
    /// `io! { tokio::time::sleep(us).await }` (bodies only).
    Io {
        id: u64,
        us: u64,
    },
    /// `io! { yield_now().await; <spin> }`: a spin is blocking code inside `io!` (what the
    /// `io_poll` detector reports).
    IoYield {
        id: u64,
        spin_us: u64,
    },
    /// A plain `.await` of `tokio::time::sleep` outside regions (bodies only).
    AwaitSleep {
        id: u64,
        us: u64,
    },
    AwaitYield {
        id: u64,
    },
    /// `helper(plan).await` (bodies only).
    Nested {
        id: u64,
        target: usize,
        plan: Arc<Plan>,
    },
    /// `Handle::current().block_on(helper(plan))`.
    BlockOn {
        id: u64,
        target: usize,
        plan: Arc<Plan>,
    },
    /// `parallel! { .. }` of 2 or 3 branches (bodies only).
    Par {
        id: u64,
        branches: Vec<Arc<BranchPlan>>,
    },
    Scope {
        id: u64,
        scope: Arc<ScopePlan>,
    },
    Map {
        id: u64,
        items: Vec<Arc<Plan>>,
    },
    Panic {
        payload: bool,
    },
    Hold,
    SetCap {
        limit: usize,
        cap: usize,
    },
}

#[derive(Debug)]
struct BranchPlan {
    plan: Arc<Plan>,
    /// A captured value whose destructor panics.
    bomb: Option<BombKind>,
    /// A captured resource.
    holds: bool,
    /// Branches this branch spawns into its scope after its plan (scopes only), joined or not.
    children: Vec<(Arc<BranchPlan>, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BombKind {
    /// Panics with a message.
    Message,
    /// Panics with `panic_any` of a payload whose own destructor panics.
    Payload,
}

#[derive(Debug)]
struct ScopePlan {
    ops: Vec<ScopeOp>,
    /// The closure panics after its ops.
    caller_panics: bool,
}

#[derive(Debug)]
enum ScopeOp {
    Spawn { branch: Arc<BranchPlan>, join: bool },
    Sleep { us: u64 },
}

impl Plan {
    fn panics(&self) -> bool {
        self.steps.iter().any(Step::panics)
    }

    /// The value a run that does not panic returns: its steps' values, in order.
    fn value(&self) -> u64 {
        self.steps.iter().filter_map(Step::value).fold(0, mix)
    }
}

/// Combines values in order: a value in the wrong place (a `parallel!` result swapped, a join
/// that returns another branch's value) changes the total.
fn mix(acc: u64, value: u64) -> u64 {
    (acc.rotate_left(7) ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Step {
    fn panics(&self) -> bool {
        match self {
            Step::Nested { plan, .. } | Step::BlockOn { plan, .. } => plan.panics(),
            Step::Par { branches, .. } => branches.iter().any(|b| b.panics()),
            Step::Scope { scope, .. } => {
                scope.caller_panics
                    || scope.ops.iter().any(|op| match op {
                        ScopeOp::Spawn { branch, .. } => branch.panics(),
                        ScopeOp::Sleep { .. } => false,
                    })
            }
            Step::Map { items, .. } => items.iter().any(|p| p.panics()),
            Step::Panic { .. } => true,
            _ => false,
        }
    }

    /// What the step adds to its frame's value, if anything.
    fn value(&self) -> Option<u64> {
        Some(match self {
            Step::Sleep { id, .. }
            | Step::UntilCancelled { id, .. }
            | Step::Spin { id, .. }
            | Step::Io { id, .. }
            | Step::IoYield { id, .. }
            | Step::AwaitSleep { id, .. }
            | Step::AwaitYield { id } => *id,
            Step::Nested { id, plan, .. } | Step::BlockOn { id, plan, .. } => {
                mix(*id, plan.value())
            }
            Step::Par { id, branches } => branches.iter().map(|b| b.value()).fold(*id, mix),
            Step::Scope { id, scope } => scope
                .ops
                .iter()
                .filter_map(|op| match op {
                    ScopeOp::Spawn { branch, join: true } => Some(branch.value()),
                    _ => None,
                })
                .fold(*id, mix),
            Step::Map { id, items } => items.iter().map(|p| p.value()).fold(*id, mix),
            Step::Panic { .. } | Step::Hold | Step::SetCap { .. } => return None,
        })
    }
}

impl BranchPlan {
    fn panics(&self) -> bool {
        self.plan.panics() || self.bomb.is_some() || self.children.iter().any(|(c, _)| c.panics())
    }

    fn value(&self) -> u64 {
        self.children
            .iter()
            .filter(|(_, join)| *join)
            .map(|(child, _)| child.value())
            .fold(self.plan.value(), mix)
    }
}

// A compact rendering, for failure reports.

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{step}")?;
        }
        if self.returns_resource {
            f.write_str(" ->res")?;
        }
        f.write_str("]")
    }
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Sleep { us, .. } => write!(f, "sleep{}", ms(*us)),
            Step::UntilCancelled { us, .. } => write!(f, "until-cancelled{}", ms(*us)),
            Step::Spin { us, .. } => write!(f, "spin{}", ms(*us)),
            Step::Io { us, .. } => write!(f, "io{}", ms(*us)),
            Step::IoYield { spin_us: 0, .. } => f.write_str("io-yield"),
            Step::IoYield { spin_us, .. } => write!(f, "io-yield+spin{}", ms(*spin_us)),
            Step::AwaitSleep { us, .. } => write!(f, "await{}", ms(*us)),
            Step::AwaitYield { .. } => f.write_str("await-yield"),
            Step::Nested { target, plan, .. } => write!(f, "await:{}{plan}", NAMES[*target]),
            Step::BlockOn { target, plan, .. } => write!(f, "block_on:{}{plan}", NAMES[*target]),
            Step::Par { branches, .. } => {
                f.write_str("parallel!{")?;
                for (i, b) in branches.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" | ")?;
                    }
                    write!(f, "{b}")?;
                }
                f.write_str("}")
            }
            Step::Scope { scope, .. } => {
                f.write_str("scope{")?;
                for (i, op) in scope.ops.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ; ")?;
                    }
                    match op {
                        ScopeOp::Spawn { branch, join } => {
                            write!(f, "spawn{} {branch}", if *join { "+join" } else { "" })?
                        }
                        ScopeOp::Sleep { us } => write!(f, "caller-sleep{}", ms(*us))?,
                    }
                }
                if scope.caller_panics {
                    f.write_str(" ; caller-PANIC")?;
                }
                f.write_str("}")
            }
            Step::Map { items, .. } => {
                f.write_str("map{")?;
                for (i, p) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" | ")?;
                    }
                    write!(f, "{p}")?;
                }
                f.write_str("}")
            }
            Step::Panic { payload: false } => f.write_str("PANIC"),
            Step::Panic { payload: true } => f.write_str("PANIC(payload-bomb)"),
            Step::Hold => f.write_str("hold"),
            Step::SetCap { limit, cap } => write!(f, "set_capacity({}={cap})", NAMES[*limit]),
        }
    }
}

impl fmt::Display for BranchPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.plan)?;
        match self.bomb {
            Some(BombKind::Message) => f.write_str("+bomb")?,
            Some(BombKind::Payload) => f.write_str("+bomb(payload-bomb)")?,
            None => {}
        }
        if self.holds {
            f.write_str("+res")?;
        }
        for (child, join) in &self.children {
            write!(f, " >spawn{} {child}", if *join { "+join" } else { "" })?;
        }
        Ok(())
    }
}

// ================================================================================================
// Generating plans and cases.

#[derive(Clone, Copy)]
struct Ctx {
    /// The innermost limit (the one a branch spawned here runs under).
    limit: usize,
    /// The highest rank of any limit whose slot this thread may hold.
    floor: usize,
    /// Some frame on this thread waits synchronously (`block_on`, a scope's caller).
    pinned: bool,
    /// In a body (may await), or in a branch (blocking code only).
    body: bool,
    /// Under a `Handle::block_on`, maybe on the same thread: another one would panic (tokio's
    /// "Cannot start a runtime from within a runtime").
    blocked: bool,
    depth: usize,
}

struct Gen {
    rng: Rng,
    nodes: usize,
    /// A blocking pool of 2-3 threads: no nested call that may wait for a new loop from code
    /// that holds a thread.
    tight: bool,
}

impl Gen {
    fn id(&mut self) -> u64 {
        self.rng.next() >> 8
    }

    fn short_us(&mut self) -> u64 {
        if self.rng.chance(4) {
            self.rng.range(20_000, 150_000)
        } else {
            self.rng.range(0, 5_000)
        }
    }

    /// Limits a nested call may go to from here without risking a deadlock by design.
    fn targets(&self, ctx: Ctx, awaited: bool) -> Vec<usize> {
        (0..4)
            .filter(|&t| {
                t == ctx.limit
                    || t == G
                    || (awaited && !ctx.pinned)
                    || (!self.tight && t > ctx.floor)
            })
            .collect()
    }

    fn target(&mut self, ctx: Ctx, awaited: bool) -> usize {
        if self.rng.chance(45) {
            return ctx.limit;
        }
        let targets = self.targets(ctx, awaited);
        targets[self.rng.below(targets.len() as u64) as usize]
    }

    fn plan(&mut self, ctx: Ctx) -> Arc<Plan> {
        let most = if ctx.depth == 0 { 5 } else { 3 };
        let n = self.rng.range(1, most);
        let mut steps: Vec<Step> = (0..n).map(|_| self.step(ctx)).collect();
        // A body that takes a resource (a connection) first and keeps it to the end: what its
        // caller's cancellation must drop off the workers.
        if ctx.body && self.rng.chance(if ctx.depth == 0 { 40 } else { 15 }) {
            steps.insert(0, Step::Hold);
        }
        Arc::new(Plan {
            steps,
            returns_resource: ctx.body && self.rng.chance(20),
        })
    }

    fn step(&mut self, ctx: Ctx) -> Step {
        self.nodes += 1;
        let deep = ctx.depth < 3 && self.nodes < 14;
        let body = ctx.body;
        let w = |on: bool, weight: u64| if on { weight } else { 0 };
        let choice = self.rng.pick(&[
            20,                          // 0 sleep
            5,                           // 1 spin
            w(body, 12),                 // 2 io
            w(body, 4),                  // 3 io yield
            w(body, 6),                  // 4 await sleep
            w(body, 4),                  // 5 await yield
            w(body && deep, 10),         // 6 nested
            w(deep && !ctx.blocked, 10), // 7 block_on
            w(body && deep, 10),         // 8 parallel!
            w(deep, 9),                  // 9 scope
            w(deep, 3),                  // 10 map
            3,                           // 11 panic
            6,                           // 12 hold
            2,                           // 13 set_capacity
        ]);
        let id = self.id();
        match choice {
            // More of them in nested bodies, where cancellation reaches through the caller.
            0 if id % 4 == 0 || (ctx.depth > 0 && id % 2 == 0) => Step::UntilCancelled {
                id,
                us: self.short_us(),
            },
            0 => Step::Sleep {
                id,
                us: self.short_us(),
            },
            1 => Step::Spin {
                id,
                us: self.rng.range(0, 1_000),
            },
            2 => Step::Io {
                id,
                us: self.rng.range(0, 4_000),
            },
            3 => Step::IoYield {
                id,
                spin_us: if self.rng.chance(25) {
                    self.rng.range(300, 1_500)
                } else {
                    0
                },
            },
            4 => Step::AwaitSleep {
                id,
                us: self.rng.range(0, 3_000),
            },
            5 => Step::AwaitYield { id },
            6 | 7 => {
                let awaited = choice == 6;
                let target = self.target(ctx, awaited);
                let inner = Ctx {
                    limit: target,
                    floor: ctx.floor.max(target),
                    pinned: ctx.pinned || !awaited,
                    body: true,
                    blocked: ctx.blocked || !awaited,
                    depth: ctx.depth + 1,
                };
                let plan = self.plan(inner);
                if awaited {
                    Step::Nested { id, target, plan }
                } else {
                    Step::BlockOn { id, target, plan }
                }
            }
            8 => {
                let n = self.rng.range(2, 3);
                let branches = (0..n).map(|_| self.branch(ctx, false)).collect();
                Step::Par { id, branches }
            }
            9 => Step::Scope {
                id,
                scope: self.scope(ctx),
            },
            10 => {
                let n = self.rng.range(2, 4);
                let inner = branch_ctx(ctx);
                let items = (0..n).map(|_| self.plan(inner)).collect();
                Step::Map { id, items }
            }
            11 => Step::Panic {
                payload: self.rng.chance(40),
            },
            12 => Step::Hold,
            _ => {
                let limit = self.rng.below(3) as usize;
                Step::SetCap {
                    limit,
                    cap: CAPS[limit] + self.rng.below(2) as usize,
                }
            }
        }
    }

    fn bomb(&mut self, percent: u64) -> Option<BombKind> {
        self.rng.chance(percent).then(|| {
            if self.rng.chance(50) {
                BombKind::Payload
            } else {
                BombKind::Message
            }
        })
    }

    fn branch(&mut self, ctx: Ctx, children: bool) -> Arc<BranchPlan> {
        let inner = branch_ctx(ctx);
        let plan = self.plan(inner);
        let bomb = self.bomb(10);
        let holds = self.rng.chance(15);
        let children = if children && ctx.depth < 2 && self.rng.chance(20) {
            let n = self.rng.range(1, 2);
            (0..n)
                .map(|_| (self.branch(inner, false), self.rng.chance(50)))
                .collect()
        } else {
            Vec::new()
        };
        Arc::new(BranchPlan {
            plan,
            bomb,
            holds,
            children,
        })
    }

    fn scope(&mut self, ctx: Ctx) -> Arc<ScopePlan> {
        let inner = branch_ctx(ctx);
        if self.rng.chance(30) {
            // A slow branch that keeps reading the caller's canary, then branches that stay
            // queued while the caller is still busy, whose captures panic when the caller's own
            // panic has them dropped unrun.
            let slow = Arc::new(BranchPlan {
                plan: Arc::new(Plan {
                    steps: vec![
                        Step::Sleep {
                            id: self.id(),
                            us: self.rng.range(40_000, 150_000),
                        },
                        Step::Spin {
                            id: self.id(),
                            us: 10,
                        },
                    ],
                    returns_resource: false,
                }),
                bomb: None,
                holds: self.rng.chance(30),
                children: Vec::new(),
            });
            let mut ops = vec![
                ScopeOp::Spawn {
                    branch: slow,
                    join: self.rng.chance(30),
                },
                ScopeOp::Sleep {
                    us: self.rng.range(5_000, 30_000),
                },
            ];
            let queued = self.rng.range(2, 3);
            for i in 0..queued {
                let plan = self.plan(Ctx {
                    depth: inner.depth + 2,
                    ..inner
                });
                // Payloads whose destructor panics last: a branch queued after one would be left
                // to a loop, on a scope that a bug let go of (a crash, not a report).
                let bomb = match self.rng.below(100) {
                    0..15 => None,
                    15..40 => Some(BombKind::Message),
                    _ if i + 1 == queued => Some(BombKind::Payload),
                    _ => Some(BombKind::Message),
                };
                ops.push(ScopeOp::Spawn {
                    branch: Arc::new(BranchPlan {
                        plan,
                        bomb,
                        holds: self.rng.chance(20),
                        children: Vec::new(),
                    }),
                    join: false,
                });
            }
            return Arc::new(ScopePlan {
                ops,
                caller_panics: self.rng.chance(90),
            });
        }
        let mut ops = Vec::new();
        for _ in 0..self.rng.range(1, 4) {
            if self.rng.chance(20) {
                ops.push(ScopeOp::Sleep {
                    us: self.rng.range(0, 8_000),
                });
            }
            ops.push(ScopeOp::Spawn {
                branch: self.branch(ctx, true),
                join: self.rng.chance(60),
            });
        }
        Arc::new(ScopePlan {
            ops,
            caller_panics: self.rng.chance(8),
        })
    }
}

fn branch_ctx(ctx: Ctx) -> Ctx {
    Ctx {
        pinned: true,
        body: false,
        depth: ctx.depth + 1,
        ..ctx
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// Awaited by a task of its runtime.
    Task,
    /// `Handle::block_on` on a plain thread.
    Thread,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    Never,
    /// `tokio::time::timeout` around the call.
    Timeout(u64),
    /// Its task aborted after this long.
    Abort(u64),
}

struct CallSpec {
    limit: usize,
    plan: Arc<Plan>,
    /// 0: the case's main runtime; 1: the second one.
    rt: usize,
    caller: Caller,
    cancel: Cancel,
    delay_us: u64,
}

#[derive(Debug, Clone, Copy)]
enum Shutdown {
    Drop,
    Timeout(u64),
    Background,
}

struct CaseSpec {
    seed: u64,
    multi_thread: bool,
    max_blocking: usize,
    /// A second (multi-thread) runtime, maybe shut down mid-flight after `.0` µs.
    second: Option<Option<(u64, Shutdown)>>,
    /// The long-stretch detector (and maybe the `io!` one), thresholds in µs.
    detect: Option<(u64, Option<u64>)>,
    /// A tracing layer panics on every `WARN`.
    panicky: bool,
    /// A thread keeps trying `set_capacity` on A, B and C.
    capper: bool,
    /// Held resources come with a pool connection (from the seed's bits, not the generator: the
    /// plans of older seeds keep their shape).
    conns: bool,
    calls: Vec<CallSpec>,
}

impl CaseSpec {
    fn generate(seed: u64) -> CaseSpec {
        let mut rng = Rng(seed);
        let multi_thread = rng.chance(60);
        let tight = rng.chance(35);
        let max_blocking = if tight { rng.range(2, 3) as usize } else { 64 };
        let second = rng.chance(30).then(|| {
            rng.chance(50).then(|| {
                let at = rng.range(0, 40_000);
                let how = match rng.below(3) {
                    0 => Shutdown::Drop,
                    1 => Shutdown::Timeout(rng.range(0, 20_000)),
                    _ => Shutdown::Background,
                };
                (at, how)
            })
        });
        let detect = rng.chance(25).then(|| {
            let stretch = rng.range(500, 4_000);
            let io_poll = rng.chance(25).then(|| rng.range(200, 1_000));
            (stretch, io_poll)
        });
        let panicky = detect.is_some() && rng.chance(60);
        let capper = rng.chance(15);
        let mut generator = Gen {
            rng: Rng(rng.next()),
            nodes: 0,
            tight,
        };
        let n = rng.range(2, 6);
        let calls = (0..n)
            .map(|_| {
                let limit = rng.pick(&[3, 3, 2, 2]);
                generator.nodes = 0;
                let plan = generator.plan(Ctx {
                    limit,
                    floor: limit,
                    pinned: false,
                    body: true,
                    blocked: false,
                    depth: 0,
                });
                let rt = usize::from(second.is_some() && rng.chance(40));
                let caller = if rt == 0 && rng.chance(10) {
                    Caller::Thread
                } else {
                    Caller::Task
                };
                let cancel = match rng.pick(&[70, 15, 15]) {
                    0 => Cancel::Never,
                    1 => Cancel::Timeout(rng.range(500, 30_000)),
                    _ if caller == Caller::Task => Cancel::Abort(rng.range(0, 30_000)),
                    _ => Cancel::Timeout(rng.range(0, 10_000)),
                };
                CallSpec {
                    limit,
                    plan,
                    rt,
                    caller,
                    cancel,
                    delay_us: rng.range(0, 3_000),
                }
            })
            .collect();
        CaseSpec {
            seed,
            multi_thread,
            max_blocking,
            second,
            detect,
            panicky,
            capper,
            conns: (seed >> 11) & 1 == 1,
            calls,
        }
    }

    fn shuts_down(&self) -> bool {
        matches!(self.second, Some(Some(_)))
    }
}

impl fmt::Display for CaseSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} runtime, max_blocking_threads {}",
            if self.multi_thread {
                "multi-thread"
            } else {
                "current-thread"
            },
            self.max_blocking
        )?;
        match self.second {
            None => {}
            Some(None) => f.write_str("; a second runtime")?,
            Some(Some((at, how))) => write!(
                f,
                "; a second runtime, shut down ({how:?}) after {} ms",
                ms(at)
            )?,
        }
        if let Some((stretch, io_poll)) = self.detect {
            write!(f, "; detectors: stretch {} ms", ms(stretch))?;
            if let Some(io_poll) = io_poll {
                write!(f, ", io_poll {} ms", ms(io_poll))?;
            }
            if self.panicky {
                f.write_str(", a tracing layer that panics on every WARN")?;
            }
        }
        if self.capper {
            f.write_str("; set_capacity attempts")?;
        }
        if self.conns {
            f.write_str("; a hold takes a pool connection too")?;
        }
        for (i, call) in self.calls.iter().enumerate() {
            write!(
                f,
                "\n  call {i}: limit {} on runtime {}, {:?}, cancel {:?}, after {} ms: {}",
                NAMES[call.limit],
                call.rt,
                call.caller,
                call.cancel,
                ms(call.delay_us),
                call.plan
            )?;
        }
        Ok(())
    }
}

// ================================================================================================
// What a case shares with its calls.

struct Case {
    /// Held resources come with a pool connection.
    conns: bool,
    problems: Mutex<Vec<String>>,
    /// A problem after which the case cannot end (a branch parked for good).
    fatal: AtomicBool,
    live: AtomicI64,
    created: AtomicU64,
    /// Branches spawned with `scope.spawn` (also by `parallel!`), and how they ended.
    spawned: AtomicU64,
    ran_here: AtomicU64,
    ran_elsewhere: AtomicU64,
    /// Branches spawned by branches that ran: whether the pool or a caller ran them is not
    /// told by the thread (the scope's caller may claim them, the spawner's thread may have
    /// become a loop that runs them).
    ran_ambiguous: AtomicU64,
    unrun: AtomicU64,
    /// Items of `parallel::map` but the last (the caller's), and where they ran.
    map_spawned: AtomicU64,
    map_here: AtomicU64,
    map_elsewhere: AtomicU64,
    top_entered: AtomicU64,
    /// Each runtime's shutdown has begun.
    shutting: [AtomicBool; 2],
    /// Dead canaries, kept alive until the case ends.
    graveyard: Mutex<Vec<Arc<Canary>>>,
    /// The largest capacity each capped limit had.
    caps_seen: [AtomicUsize; 3],
    /// Each call's state, for a hang report.
    calls: Mutex<Vec<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Case {
    fn new(calls: usize, conns: bool) -> Case {
        Case {
            conns,
            problems: Mutex::new(Vec::new()),
            fatal: AtomicBool::new(false),
            live: AtomicI64::new(0),
            created: AtomicU64::new(0),
            spawned: AtomicU64::new(0),
            ran_here: AtomicU64::new(0),
            ran_elsewhere: AtomicU64::new(0),
            ran_ambiguous: AtomicU64::new(0),
            unrun: AtomicU64::new(0),
            map_spawned: AtomicU64::new(0),
            map_here: AtomicU64::new(0),
            map_elsewhere: AtomicU64::new(0),
            top_entered: AtomicU64::new(0),
            shutting: [AtomicBool::new(false), AtomicBool::new(false)],
            graveyard: Mutex::new(Vec::new()),
            caps_seen: std::array::from_fn(|i| AtomicUsize::new(CAPS[i])),
            calls: Mutex::new(vec!["not started".to_string(); calls]),
        }
    }

    fn problem(&self, message: impl Into<String>) {
        let message = message.into();
        let mut problems = lock(&self.problems);
        if problems.len() < 20 && !problems.contains(&message) {
            problems.push(message);
        }
    }

    fn fatal(&self, message: impl Into<String>) {
        self.problem(message);
        self.fatal.store(true, SeqCst);
    }

    fn set_call(&self, index: usize, state: impl Into<String>) {
        lock(&self.calls)[index] = state.into();
    }

    fn note_capacity(&self, limit: usize, capacity: usize) {
        self.caps_seen[limit].fetch_max(capacity, SeqCst);
    }
}

/// Data a scope's branches borrow: its owner marks it dead as soon as the scope is over.
struct Canary {
    alive: AtomicBool,
    data: Vec<u64>,
}

impl Canary {
    fn new() -> Arc<Canary> {
        Arc::new(Canary {
            alive: AtomicBool::new(true),
            data: (0..16).collect(),
        })
    }

    /// A branch reads its borrowed data. If the scope is over, it records that and parks for
    /// good: touching anything else of the scope now would be a use after free.
    fn check(&self, case: &Case) {
        if !self.alive.load(SeqCst) {
            case.fatal(
                "a branch ran after its `parallel::scope` had returned or unwound: it read data \
                 its caller had already let go of (a use after free)",
            );
            loop {
                thread::park();
            }
        }
        std::hint::black_box(self.data.iter().sum::<u64>());
    }
}

/// Marks a canary dead when dropped (right after the scope returns or unwinds) and keeps it in
/// the case's graveyard.
struct Killer {
    canary: Arc<Canary>,
    case: Arc<Case>,
}

impl Drop for Killer {
    fn drop(&mut self) {
        self.canary.alive.store(false, SeqCst);
        lock(&self.case.graveyard).push(self.canary.clone());
    }
}

thread_local! {
    /// Set while a caller polls (or drops) a top-level call: code here runs in the caller's
    /// task, on a runtime worker (or the thread that called `Handle::block_on`).
    static IN_CALLER: Cell<bool> = const { Cell::new(false) };
}

fn in_caller() -> bool {
    IN_CALLER.get()
}

struct InCaller(bool);

impl InCaller {
    fn enter() -> InCaller {
        InCaller(IN_CALLER.replace(true))
    }
}

impl Drop for InCaller {
    fn drop(&mut self) {
        IN_CALLER.set(self.0);
    }
}

type Manager = ConnectionManager<SqliteConnection>;

/// The limit the connections' pool is sized by: more than a case ever holds at once. (Bodies run
/// under A, B, C and G, so the pool logs once that its connections are taken under another
/// limit.)
static CONNS: Limit = Limit::new("stress-conns", 96);

/// The pool the holds take connections from (in-memory SQLite, opened before the first case).
fn db() -> &'static Pool<Manager> {
    static DB: std::sync::OnceLock<Pool<Manager>> = std::sync::OnceLock::new();
    DB.get_or_init(|| Pool::new(&CONNS, Manager::new(":memory:")).expect("the stress pool"))
}

const ALIVE: u64 = 0xa11c_e000;
const DEAD: u64 = 0xdead_0000;

/// A resource (a connection, a file): counted while alive; its drop must happen exactly once,
/// and not in the caller's poll unless its runtime shuts down.
struct Res {
    case: Arc<Case>,
    rt: usize,
    state: AtomicU64,
    /// Handed over to its owner on purpose (a returned value the caller consumes).
    released: bool,
}

impl Res {
    fn new(case: &Arc<Case>, rt: usize) -> Res {
        case.live.fetch_add(1, SeqCst);
        case.created.fetch_add(1, SeqCst);
        Res {
            case: case.clone(),
            rt,
            state: AtomicU64::new(ALIVE),
            released: false,
        }
    }

    fn release(mut self) {
        self.released = true;
    }
}

impl Drop for Res {
    fn drop(&mut self) {
        if self.state.swap(DEAD, SeqCst) != ALIVE {
            self.case.problem("a resource was dropped twice");
            return;
        }
        self.case.live.fetch_sub(1, SeqCst);
        if !self.released && in_caller() && !self.case.shutting[self.rt].load(SeqCst) {
            self.case.problem(format!(
                "a resource owned by a body was dropped in its caller's poll, on a runtime worker \
                 (thread {:?})",
                thread::current().name().unwrap_or("unnamed")
            ));
        }
    }
}

/// A panic payload whose destructor panics (once, and not while unwinding).
struct BombPayload {
    armed: AtomicBool,
}

impl BombPayload {
    fn raise() -> ! {
        panic::panic_any(BombPayload {
            armed: AtomicBool::new(true),
        })
    }
}

impl Drop for BombPayload {
    fn drop(&mut self) {
        if self.armed.swap(false, SeqCst) && !thread::panicking() {
            panic!("compose-stress: a panic payload panicked in its destructor");
        }
    }
}

/// A captured value whose destructor panics.
struct Bomb(BombKind);

impl Drop for Bomb {
    fn drop(&mut self) {
        if thread::panicking() {
            return;
        }
        match self.0 {
            BombKind::Message => {
                panic!("compose-stress: a captured value panicked in its destructor")
            }
            BombKind::Payload => BombPayload::raise(),
        }
    }
}

/// Records where a spawned branch ran, or that it was dropped unrun.
struct Token {
    case: Arc<Case>,
    spawner: Spawner,
    ran: bool,
}

/// Who spawned a branch: its thread, and whether only that thread may take the branch back
/// (a scope's closure and `parallel!`: it stays busy until the scope is over, so a branch that
/// ran on another thread ran on the pool); not so for a branch spawned by a branch.
#[derive(Clone, Copy)]
struct Spawner {
    thread: ThreadId,
    exact: bool,
}

impl Token {
    fn start(&mut self) {
        self.ran = true;
        let counter = match (
            self.spawner.exact,
            thread::current().id() == self.spawner.thread,
        ) {
            (false, _) => &self.case.ran_ambiguous,
            (true, true) => &self.case.ran_here,
            (true, false) => &self.case.ran_elsewhere,
        };
        counter.fetch_add(1, SeqCst);
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        if !self.ran {
            self.case.unrun.fetch_add(1, SeqCst);
        }
    }
}
// ================================================================================================
// Interpreting plans.

/// Where a frame of a plan runs.
#[derive(Clone)]
struct Frame {
    case: Arc<Case>,
    /// The innermost limit.
    limit: usize,
    rt: usize,
    /// A top-level body (its `io!` code runs in its caller's poll).
    top: bool,
    /// The top-level call this frame belongs to.
    call: Arc<CallState>,
}

/// A top-level call, as its frames see it.
struct CallState {
    /// Its future was dropped before it completed (set before the drop begins).
    dropped: AtomicBool,
    /// It is to be cancelled (a timeout or an abort, at most 30 ms after it starts).
    will_cancel: bool,
}

/// What a body returns.
struct Out {
    value: u64,
    res: Option<Res>,
}

impl Out {
    fn take(mut self) -> u64 {
        if let Some(res) = self.res.take() {
            res.release();
        }
        self.value
    }
}

/// A frame's state while it runs: its value so far, what it holds, the canary it borrows.
struct St<'c> {
    f: Frame,
    held: Vec<Res>,
    conns: Vec<Conn<Manager>>,
    canary: Option<&'c Canary>,
    value: u64,
}

impl<'c> St<'c> {
    fn body(f: Frame) -> St<'static> {
        if f.top {
            f.case.top_entered.fetch_add(1, SeqCst);
        }
        St {
            f,
            held: Vec::new(),
            conns: Vec::new(),
            canary: None,
            value: 0,
        }
    }

    fn branch(f: Frame, canary: &'c Canary) -> St<'c> {
        canary.check(&f.case);
        St {
            f,
            held: Vec::new(),
            conns: Vec::new(),
            canary: Some(canary),
            value: 0,
        }
    }

    fn add(&mut self, value: u64) {
        self.value = mix(self.value, value);
    }

    fn check_canary(&self) {
        if let Some(canary) = self.canary {
            canary.check(&self.f.case);
        }
    }

    fn child(&self, target: usize) -> Frame {
        Frame {
            case: self.f.case.clone(),
            limit: target,
            rt: self.f.rt,
            top: false,
            call: self.f.call.clone(),
        }
    }

    fn branch_frame(&self) -> Frame {
        Frame {
            top: false,
            ..self.f.clone()
        }
    }

    /// A step of blocking code: off the caller's poll, within the cap, its canary alive.
    /// `id`: what it adds to the frame's value (nothing for a scope's closure sleeping).
    fn leaf(&mut self, id: Option<u64>, work: impl FnOnce()) {
        self.check_canary();
        let case = &self.f.case;
        if in_caller() {
            case.problem("blocking code ran in its caller's poll (on a runtime worker)");
        }
        let limit = self.f.limit;
        let now = ACTIVE[limit].fetch_add(1, SeqCst) + 1;
        if limit != G {
            let capacity = limit_of(limit).capacity().unwrap_or(usize::MAX);
            if now > capacity {
                case.problem(format!(
                    "{now} threads ran blocking code of limit {} at once, above its capacity \
                     {capacity}",
                    NAMES[limit]
                ));
            }
        }
        work();
        ACTIVE[limit].fetch_sub(1, SeqCst);
        self.check_canary();
        if let Some(id) = id {
            self.add(id);
        }
    }

    /// After an `io!` region's real wait (its sleep returned `Pending` at least once: a sleep
    /// whose deadline passed before its first poll, on a loaded machine, completes where the
    /// region began, on the blocking thread): the body runs in its caller's poll.
    fn io_check(&self, waited: bool) {
        if self.f.top && waited && !in_caller() {
            self.f.case.problem(format!(
                "`io!` code of a top-level body that really waited did not run in its caller's \
                 task (thread {:?})",
                thread::current().name(),
            ));
        }
    }

    fn finish(self) -> Out {
        Out {
            value: self.value,
            res: None,
        }
    }

    fn sync_step(&mut self, step: &Step) {
        match step {
            Step::Sleep { id, us } => self.leaf(Some(*id), || sleep_us(*us)),
            Step::UntilCancelled { id, us } => {
                let frame = self.f.clone();
                self.leaf(Some(*id), || until_cancelled(&frame, *us));
            }
            Step::Spin { id, us } => self.leaf(Some(*id), || spin_us(*us)),
            Step::BlockOn { id, target, plan } => {
                self.check_canary();
                let out =
                    Handle::current().block_on(call(*target, self.child(*target), plan.clone()));
                self.check_canary();
                self.add(mix(*id, out.take()));
            }
            Step::Scope { id, scope } => {
                let value = run_scope(self, *id, scope);
                self.add(value);
            }
            Step::Map { id, items } => {
                let value = run_map(self, *id, items);
                self.add(value);
            }
            Step::Panic { payload } => {
                self.check_canary();
                if *payload {
                    BombPayload::raise();
                }
                panic!("compose-stress: a planned panic");
            }
            Step::Hold => {
                let res = Res::new(&self.f.case, self.f.rt);
                self.held.push(res);
                if self.f.case.conns {
                    match db().get() {
                        Ok(conn) => self.conns.push(conn),
                        Err(error) => self.f.case.problem(format!("no pool connection: {error}")),
                    }
                }
            }
            Step::SetCap { limit, cap } => {
                if limit_of(*limit).set_capacity(*cap).is_ok() {
                    self.f.case.note_capacity(*limit, *cap);
                }
            }
            Step::Io { .. }
            | Step::IoYield { .. }
            | Step::AwaitSleep { .. }
            | Step::AwaitYield { .. }
            | Step::Nested { .. }
            | Step::Par { .. } => unreachable!("generated for bodies only: {step}"),
        }
    }
}

/// How long after its call was dropped blocking code may go on without `is_cancelled()` saying
/// so (a check every 200 µs; the margin is for loaded and sanitized runs).
const SEES_CANCEL_WITHIN: Duration = Duration::from_millis(500);

/// Works in 200 µs rows for `us` at most (for 2 s in a call that is to be cancelled: in effect,
/// until it is); stops at the first `is_cancelled()`, which must never be true unless the
/// frame's top-level call was dropped or its runtime shuts down, and must be within
/// [`SEES_CANCEL_WITHIN`] after the call was dropped.
fn until_cancelled(frame: &Frame, us: u64) {
    let us = if frame.call.will_cancel {
        us.max(2_000_000)
    } else {
        us
    };
    let start = Instant::now();
    let mut dropped_seen: Option<Instant> = None;
    while start.elapsed() < Duration::from_micros(us) {
        let dropped = frame.call.dropped.load(SeqCst);
        if blocking_first::is_cancelled() {
            // Read again: the call may have been dropped since the read above (`dropped` is set
            // before the drop that cancels it begins).
            let dropped = frame.call.dropped.load(SeqCst);
            if !dropped && !frame.case.shutting[frame.rt].load(SeqCst) {
                frame.case.problem(
                    "is_cancelled() was true in blocking code of a call that was neither dropped \
                     nor shut down",
                );
            }
            return;
        }
        if dropped {
            let seen = *dropped_seen.get_or_insert_with(Instant::now);
            if seen.elapsed() > SEES_CANCEL_WITHIN {
                frame.case.problem(format!(
                    "blocking code of a dropped call did not see is_cancelled() within \
                     {SEES_CANCEL_WITHIN:?}"
                ));
                return;
            }
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// A future's output with whether it returned `Pending` at least once (really waited).
struct Waits<F> {
    inner: Pin<Box<F>>,
    waited: bool,
}

impl<F: Future> Waits<F> {
    fn new(inner: F) -> Waits<F> {
        Waits {
            inner: Box::pin(inner),
            waited: false,
        }
    }
}

impl<F: Future> Future for Waits<F> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        match self.inner.as_mut().poll(cx) {
            Poll::Ready(_) => Poll::Ready(self.waited),
            Poll::Pending => {
                self.waited = true;
                Poll::Pending
            }
        }
    }
}

fn sleep_us(us: u64) {
    thread::sleep(Duration::from_micros(us));
}

fn spin_us(us: u64) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_micros(us) {
        std::hint::spin_loop();
    }
}

fn run_sync(st: &mut St<'_>, plan: &Plan) {
    for step in &plan.steps {
        st.sync_step(step);
    }
}

/// A branch ready to run: what it captures.
struct Prepared {
    frame: Frame,
    bomb: Option<Bomb>,
    res: Option<Res>,
    token: Option<Token>,
}

impl Prepared {
    /// `spawned`: who spawned it, for a branch given to `scope.spawn` (not the last branch of
    /// `parallel!`, which runs on the caller's thread).
    fn new(frame: &Frame, plan: &BranchPlan, spawned: Option<Spawner>) -> Prepared {
        let case = &frame.case;
        let token = spawned.map(|spawner| {
            case.spawned.fetch_add(1, SeqCst);
            Token {
                case: case.clone(),
                spawner,
                ran: false,
            }
        });
        Prepared {
            frame: frame.clone(),
            bomb: plan.bomb.map(Bomb),
            res: plan.holds.then(|| Res::new(case, frame.rt)),
            token,
        }
    }

    /// Runs the branch's plan; its captures (the bomb among them) drop at the end.
    fn run(self, canary: &Canary, plan: &BranchPlan) -> u64 {
        let Prepared {
            frame,
            bomb,
            res,
            mut token,
        } = self;
        if let Some(token) = &mut token {
            token.start();
        }
        let mut st = St::branch(frame, canary);
        run_sync(&mut st, &plan.plan);
        st.check_canary();
        let value = st.value;
        drop(st);
        drop(res);
        drop(bomb);
        value
    }
}

fn run_scope(st: &mut St<'_>, id: u64, plan: &ScopePlan) -> u64 {
    st.check_canary();
    let canary = Canary::new();
    let killer = Killer {
        canary: canary.clone(),
        case: st.f.case.clone(),
    };
    let frame = st.branch_frame();
    let caller = thread::current().id();
    let value = parallel::scope(|s| {
        let mut joins = Vec::new();
        for op in &plan.ops {
            match op {
                ScopeOp::Sleep { us } => st.leaf(None, || sleep_us(*us)),
                ScopeOp::Spawn { branch, join } => {
                    let spawner = Spawner {
                        thread: caller,
                        exact: true,
                    };
                    let handle = spawn_branch(s, &canary, &frame, branch, spawner);
                    if *join {
                        joins.push(handle);
                    }
                }
            }
        }
        if plan.caller_panics {
            panic!("compose-stress: a scope's closure panics");
        }
        joins
            .into_iter()
            .fold(id, |acc, branch| mix(acc, branch.join()))
    });
    drop(killer);
    value
}

fn spawn_branch<'scope, 'env>(
    s: &'scope parallel::Scope<'scope, 'env>,
    canary: &'env Canary,
    frame: &Frame,
    plan: &Arc<BranchPlan>,
    spawner: Spawner,
) -> parallel::Branch<'scope, u64> {
    let prepared = Prepared::new(frame, plan, Some(spawner));
    let (frame, plan) = (frame.clone(), plan.clone());
    s.spawn(move || {
        let mut value = prepared.run(canary, &plan);
        for (child, join) in &plan.children {
            canary.check(&frame.case);
            let spawner = Spawner {
                thread: thread::current().id(),
                exact: false,
            };
            let branch = spawn_branch(s, canary, &frame, child, spawner);
            if *join {
                value = mix(value, branch.join());
            }
        }
        value
    })
}

fn run_map(st: &mut St<'_>, id: u64, items: &[Arc<Plan>]) -> u64 {
    st.check_canary();
    let case = st.f.case.clone();
    let canary = Canary::new();
    let killer = Killer {
        canary: canary.clone(),
        case: case.clone(),
    };
    let frame = st.branch_frame();
    let caller = thread::current().id();
    case.map_spawned.fetch_add(items.len() as u64 - 1, SeqCst);
    let last = items.last().map(|plan| Arc::as_ptr(plan) as usize);
    let values = parallel::map(items, |plan| {
        // Every item but the last is a branch: where it runs is what the counters count.
        if Some(Arc::as_ptr(plan) as usize) != last {
            if thread::current().id() == caller {
                frame.case.map_here.fetch_add(1, SeqCst);
            } else {
                frame.case.map_elsewhere.fetch_add(1, SeqCst);
            }
        }
        let mut branch = St::branch(frame.clone(), &canary);
        run_sync(&mut branch, plan);
        branch.check_canary();
        branch.value
    });
    drop(killer);
    values.into_iter().fold(id, mix)
}

/// One annotated function per limit, each interpreting a plan: bodies (blocking code with
/// `io!` regions, awaits and `parallel!`).
macro_rules! interpreter {
    ($name:ident, $($attr:tt)*) => {
        #[blocking_first($($attr)*)]
        async fn $name(frame: Frame, plan: Arc<Plan>) -> Out {
            let mut st = St::body(frame);
            for step in plan.steps.iter() {
                match step {
                    Step::Io { id, us } => {
                        let us = *us;
                        io! {
                            let sleep = tokio::time::sleep(Duration::from_micros(us));
                            let waited = Waits::new(sleep).await;
                            st.io_check(waited);
                        };
                        st.add(*id);
                    }
                    Step::IoYield { id, spin_us: us } => {
                        let us = *us;
                        io! {
                            tokio::task::yield_now().await;
                            spin_us(us);
                        };
                        st.add(*id);
                    }
                    Step::AwaitSleep { id, us } => {
                        tokio::time::sleep(Duration::from_micros(*us)).await;
                        st.add(*id);
                    }
                    Step::AwaitYield { id } => {
                        tokio::task::yield_now().await;
                        st.add(*id);
                    }
                    Step::Nested { id, target, plan } => {
                        let out = call(*target, st.child(*target), plan.clone()).await;
                        st.add(mix(*id, out.take()));
                    }
                    Step::Par { id, branches } => {
                        let canary = Canary::new();
                        let killer = Killer {
                            canary: canary.clone(),
                            case: st.f.case.clone(),
                        };
                        let frame = st.branch_frame();
                        let caller = Spawner {
                            thread: thread::current().id(),
                            exact: true,
                        };
                        let first = Prepared::new(&frame, &branches[0], Some(caller));
                        let value = if branches.len() == 2 {
                            let second = Prepared::new(&frame, &branches[1], None);
                            let (a, b) = parallel! {
                                first.run(&canary, &branches[0]),
                                second.run(&canary, &branches[1]),
                            };
                            mix(mix(*id, a), b)
                        } else {
                            let second = Prepared::new(&frame, &branches[1], Some(caller));
                            let third = Prepared::new(&frame, &branches[2], None);
                            let (a, b, c) = parallel! {
                                first.run(&canary, &branches[0]),
                                second.run(&canary, &branches[1]),
                                third.run(&canary, &branches[2]),
                            };
                            mix(mix(mix(*id, a), b), c)
                        };
                        drop(killer);
                        st.add(value);
                    }
                    other => st.sync_step(other),
                }
            }
            let returned = plan
                .returns_resource
                .then(|| Res::new(&st.f.case, st.f.rt));
            let mut out = st.finish();
            out.res = returned;
            out
        }
    };
}

interpreter!(on_a, limit = LA);
interpreter!(on_b, limit = LB);
interpreter!(on_c, limit = LC);
interpreter!(on_g,);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

fn call(target: usize, frame: Frame, plan: Arc<Plan>) -> BoxFuture<Out> {
    match target {
        0 => Box::pin(on_a(frame, plan)),
        1 => Box::pin(on_b(frame, plan)),
        2 => Box::pin(on_c(frame, plan)),
        _ => Box::pin(on_g(frame, plan)),
    }
}

// ================================================================================================
// Calling: the caller's side.

type Payload = Box<dyn Any + Send + 'static>;

/// Polls (and drops) a top-level call with [`IN_CALLER`] set, and catches its panic.
struct CallerPoll {
    inner: Option<BoxFuture<Out>>,
    state: Arc<CallState>,
}

impl Future for CallerPoll {
    type Output = Result<Out, Payload>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let _in = InCaller::enter();
        let inner = self.inner.as_mut().expect("polled after completion");
        match panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => {
                self.inner = None;
                Poll::Ready(Ok(out))
            }
            Err(payload) => {
                let inner = self.inner.take();
                if let Err(again) = panic::catch_unwind(AssertUnwindSafe(|| drop(inner))) {
                    forget_payload(again);
                }
                Poll::Ready(Err(payload))
            }
        }
    }
}

impl Drop for CallerPoll {
    fn drop(&mut self) {
        let _in = InCaller::enter();
        if self.inner.is_some() {
            self.state.dropped.store(true, SeqCst);
        }
        self.inner.take();
    }
}

/// How a call ended.
#[derive(Debug)]
enum End {
    Value(u64),
    Panicked(String),
    Cancelled,
}

fn message(payload: &(dyn Any + Send)) -> String {
    if payload.is::<BombPayload>() {
        return "compose-stress: a payload whose destructor panics".to_string();
    }
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "<a payload of another type>".to_string())
}

/// Disarms a payload whose destructor would panic, and drops it.
fn forget_payload(payload: Payload) -> String {
    if let Some(bomb) = payload.downcast_ref::<BombPayload>() {
        bomb.armed.store(false, SeqCst);
    }
    let message = message(&*payload);
    drop(payload);
    message
}

async fn run_call(case: Arc<Case>, index: usize, spec: Arc<CallSpecShared>) -> End {
    tokio::time::sleep(Duration::from_micros(spec.delay_us)).await;
    case.set_call(index, "running");
    let state = Arc::new(CallState {
        dropped: AtomicBool::new(false),
        will_cancel: spec.cancel != Cancel::Never,
    });
    let frame = Frame {
        case: case.clone(),
        limit: spec.limit,
        rt: spec.rt,
        top: true,
        call: state.clone(),
    };
    let call = CallerPoll {
        inner: Some(call(spec.limit, frame, spec.plan.clone())),
        state,
    };
    let result = match spec.cancel {
        Cancel::Timeout(us) => match tokio::time::timeout(Duration::from_micros(us), call).await {
            Ok(result) => result,
            Err(_) => return End::Cancelled,
        },
        _ => call.await,
    };
    match result {
        Ok(out) => End::Value(out.take()),
        Err(payload) => End::Panicked(forget_payload(payload)),
    }
}

/// What a call's task needs of its spec.
struct CallSpecShared {
    limit: usize,
    plan: Arc<Plan>,
    rt: usize,
    cancel: Cancel,
    delay_us: u64,
}

enum Waiting {
    Task(tokio::task::JoinHandle<End>),
    Thread(tokio::sync::oneshot::Receiver<End>),
}

// ================================================================================================
// The process-wide setup: a panic hook that keeps the harness's own panics quiet, and a tracing
// layer that counts `WARN`s and panics on them when told to.

static PANICKY: AtomicBool = AtomicBool::new(false);
static DETECT_WARNINGS: AtomicU64 = AtomicU64::new(0);
/// Panics of runtimes shutting down are expected while a case shuts one down.
static SHUTDOWN_CASE: AtomicBool = AtomicBool::new(false);

fn quiet_expected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let text = message(info.payload());
            let expected = !text.starts_with("FAILED")
                && (text.starts_with("compose-stress:")
                    || text.contains("Cannot start a runtime from within a runtime")
                    || (SHUTDOWN_CASE.load(SeqCst)
                        && (text.contains("shut down") || text.contains("shutdown"))));
            if !expected {
                default(info);
            }
        }));
    });
}

struct Warnings;

impl<S: Subscriber> Layer<S> for Warnings {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: LayerContext<'_, S>) -> bool {
        *metadata.level() <= Level::WARN
    }

    fn on_event(&self, event: &Event<'_>, _: LayerContext<'_, S>) {
        if *event.metadata().level() != Level::WARN {
            return;
        }
        if event.metadata().target() == "blocking_first::detect" {
            DETECT_WARNINGS.fetch_add(1, SeqCst);
        }
        if PANICKY.load(SeqCst) {
            panic!("compose-stress: a tracing layer panicked on a WARN event");
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::WARN)
    }
}

fn install_subscriber() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(Warnings);
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

// ================================================================================================
// Running a case.

fn runtime(multi_thread: bool, max_blocking: usize, name: &str) -> Runtime {
    let mut builder = if multi_thread {
        let mut builder = Builder::new_multi_thread();
        builder.worker_threads(2);
        builder
    } else {
        Builder::new_current_thread()
    };
    builder
        .max_blocking_threads(max_blocking)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

/// The counters of the limits and the process, for reports.
fn describe_state() -> String {
    let mut out = String::new();
    let bodies = observe::in_flight();
    let _ = writeln!(out, "bodies in flight ({}):", bodies.len());
    for body in bodies.iter().take(20) {
        let _ = writeln!(
            out,
            "  #{} {} (limit {}) {:?} for {:?}, age {:?}{}",
            body.id,
            body.function,
            body.limit,
            body.state,
            body.in_state,
            body.age,
            if body.cancelled { ", cancelled" } else { "" }
        );
    }
    let _ = writeln!(out, "limits:");
    for limit in observe::limits() {
        let _ = writeln!(out, "  {:?}", limit.stats());
    }
    let _ = write!(
        out,
        "stats: {:?}\nharness: threads in blocking code by limit {:?}",
        blocking_first::stats(),
        ACTIVE.iter().map(|a| a.load(SeqCst)).collect::<Vec<_>>()
    );
    out
}

/// Whether nothing of any case runs any more.
fn quiet() -> bool {
    let stats = blocking_first::stats();
    observe::in_flight().is_empty()
        && (0..4).all(|l| {
            let s = limit_of(l).stats();
            s.in_use == 0 && s.waiting == 0 && ACTIVE[l].load(SeqCst) == 0
        })
        && stats.in_blocking == 0
        && stats.waiting_for_slot == 0
}

struct Summary {
    calls: usize,
    panicked: usize,
    cancelled: usize,
    spawned: u64,
}

fn run_case(spec: &CaseSpec, case: &Arc<Case>) -> Summary {
    // Set-up: the detectors, the layer, the peaks.
    match spec.detect {
        Some((stretch, io_poll)) => detect::enable(
            detect::Detectors::default()
                .stretch(Duration::from_micros(stretch))
                .io_poll(io_poll.map(Duration::from_micros))
                .interval(Duration::ZERO),
        ),
        None => detect::disable(),
    }
    PANICKY.store(spec.panicky, SeqCst);
    SHUTDOWN_CASE.store(spec.shuts_down(), SeqCst);
    for l in 0..3 {
        limit_of(l).reset_peak();
    }
    let before = blocking_first::stats();
    let warnings_before = DETECT_WARNINGS.load(SeqCst);

    let main = runtime(spec.multi_thread, spec.max_blocking, "case-main");
    let mut second = spec
        .second
        .map(|_| runtime(true, spec.max_blocking, "case-second"));
    let handles = [
        main.handle().clone(),
        second
            .as_ref()
            .map_or_else(|| main.handle().clone(), |rt| rt.handle().clone()),
    ];

    // Something that keeps trying to change the capacities.
    let stop = Arc::new(AtomicBool::new(false));
    let capper = spec.capper.then(|| {
        let (stop, case, mut rng) = (stop.clone(), case.clone(), Rng(spec.seed ^ 0xcafe));
        thread::spawn(move || {
            while !stop.load(SeqCst) {
                let l = rng.below(3) as usize;
                let cap = CAPS[l] + rng.below(2) as usize;
                if limit_of(l).set_capacity(cap).is_ok() {
                    case.note_capacity(l, cap);
                }
                // Shedding by time in queue, on and off (only `is_full` reads it).
                let bound = [0, 200, 2_000][rng.below(3) as usize];
                limit_of(l).set_max_queue_time(Duration::from_micros(bound));
                sleep_us(rng.range(100, 1_500));
            }
        })
    });

    // The second runtime may be shut down mid-flight.
    let shutdown = match (spec.second, second.take()) {
        (Some(Some((at, how))), Some(rt)) => {
            let case = case.clone();
            Some(thread::spawn(move || {
                sleep_us(at);
                case.shutting[1].store(true, SeqCst);
                match how {
                    Shutdown::Drop => drop(rt),
                    Shutdown::Timeout(us) => rt.shutdown_timeout(Duration::from_micros(us)),
                    Shutdown::Background => rt.shutdown_background(),
                }
            }))
        }
        (_, rt) => {
            second = rt;
            None
        }
    };

    let summary = main.block_on(async {
        let mut waiting = Vec::new();
        for (index, call) in spec.calls.iter().enumerate() {
            let shared = Arc::new(CallSpecShared {
                limit: call.limit,
                plan: call.plan.clone(),
                rt: call.rt,
                cancel: call.cancel,
                delay_us: call.delay_us,
            });
            let handle = handles[call.rt].clone();
            match call.caller {
                Caller::Task => {
                    let task = handle.spawn(run_call(case.clone(), index, shared));
                    if let Cancel::Abort(us) = call.cancel {
                        let abort = task.abort_handle();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_micros(us)).await;
                            abort.abort();
                        });
                    }
                    waiting.push(Waiting::Task(task));
                }
                Caller::Thread => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let case = case.clone();
                    thread::spawn(move || {
                        let end = handle.block_on(run_call(case, index, shared));
                        let _ = tx.send(end);
                    });
                    waiting.push(Waiting::Thread(rx));
                }
            }
        }
        let mut summary = Summary {
            calls: spec.calls.len(),
            panicked: 0,
            cancelled: 0,
            spawned: 0,
        };
        for (index, wait) in waiting.into_iter().enumerate() {
            let end = match wait {
                Waiting::Task(task) => match task.await {
                    Ok(end) => end,
                    Err(err) if err.is_cancelled() => End::Cancelled,
                    Err(err) => {
                        let text = forget_payload(err.into_panic());
                        case.problem(format!(
                            "call {index}: a panic escaped the caller's task: {text}"
                        ));
                        End::Panicked(text)
                    }
                },
                Waiting::Thread(rx) => rx.await.unwrap_or_else(|_| {
                    case.problem(format!("call {index}: its caller's thread died"));
                    End::Cancelled
                }),
            };
            check_end(spec, case, index, &end);
            match end {
                End::Panicked(_) => summary.panicked += 1,
                End::Cancelled => summary.cancelled += 1,
                End::Value(_) => {}
            }
            case.set_call(index, format!("ended: {end:?}"));
        }
        // Quiet: stretches of cancelled bodies finish, loops let go.
        let deadline = Instant::now() + SETTLE;
        while !quiet() {
            if case.fatal.load(SeqCst) {
                return summary;
            }
            if Instant::now() > deadline {
                case.problem(format!(
                    "not quiet {SETTLE:?} after every call ended:\n{}",
                    describe_state()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        summary
    });
    if case.fatal.load(SeqCst) {
        // A branch parked for good: dropping the runtimes would wait for it.
        std::mem::forget(main);
        std::mem::forget(second);
        return summary;
    }

    stop.store(true, SeqCst);
    if let Some(capper) = capper {
        capper.join().unwrap();
    }
    if let Some(shutdown) = shutdown {
        shutdown.join().unwrap();
    }
    case.shutting[0].store(true, SeqCst);
    case.shutting[1].store(true, SeqCst);
    drop(second);
    drop(main);
    PANICKY.store(false, SeqCst);

    // With the runtimes gone: no loop left, every resource dropped.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let loops = (0..4).all(|l| limit_of(l).stats().loops == 0);
        let live = case.live.load(SeqCst);
        let pool = db().state();
        let conns_back = pool.idle_connections == pool.connections;
        if loops && live == 0 && conns_back && quiet() {
            break;
        }
        if Instant::now() > deadline {
            if live != 0 {
                case.problem(format!(
                    "{live} of {} resources were never dropped",
                    case.created.load(SeqCst)
                ));
            }
            if !conns_back {
                case.problem(format!(
                    "{} of the pool's {} connections never came back",
                    pool.connections - pool.idle_connections,
                    pool.connections
                ));
            }
            if !loops || !quiet() {
                case.problem(format!(
                    "not quiet 1 s after the runtimes were dropped:\n{}",
                    describe_state()
                ));
            }
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }

    // A quiet limit is never full (whatever its bound on time in queue said while it was busy),
    // and the global limit still adapts, within its bounds.
    for (l, name) in NAMES.iter().enumerate() {
        let limit = limit_of(l);
        if limit.is_full() {
            case.problem(format!(
                "limit {name} is full while quiet: {:?}",
                limit.stats()
            ));
        }
        limit.set_max_queue_time(Duration::ZERO);
    }
    let global = limit::global().stats();
    match (global.bounds, global.capacity) {
        (Some((min, max)), Some(capacity)) if (min..=max).contains(&capacity) => {}
        _ => case.problem(format!(
            "the global limit no longer adapts within its bounds: {global:?}"
        )),
    }

    // Capacities back to what they were (a quiet limit takes any).
    for (l, &capacity) in CAPS.iter().enumerate() {
        let limit = limit_of(l);
        let deadline = Instant::now() + Duration::from_millis(500);
        while limit.capacity() != Some(capacity) {
            if limit.set_capacity(capacity).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                case.problem(format!(
                    "set_capacity refused on a quiet limit: {:?}",
                    limit.stats()
                ));
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
    detect::disable();

    // The counters.
    let after = blocking_first::stats();
    let spawned = case.spawned.load(SeqCst);
    let map_spawned = case.map_spawned.load(SeqCst);
    let dispatched = after.parallel_dispatched - before.parallel_dispatched;
    let inline = after.parallel_inline - before.parallel_inline;
    let (here, elsewhere, ambiguous, unrun) = (
        case.ran_here.load(SeqCst),
        case.ran_elsewhere.load(SeqCst),
        case.ran_ambiguous.load(SeqCst),
        case.unrun.load(SeqCst),
    );
    if here + elsewhere + ambiguous + unrun != spawned {
        case.problem(format!(
            "of {spawned} spawned branches {here} ran on their caller's thread, {elsewhere} on \
             another thread, {ambiguous} were spawned by branches and ran, and {unrun} were dropped \
             unrun"
        ));
    }
    let (map_here, map_elsewhere) = (case.map_here.load(SeqCst), case.map_elsewhere.load(SeqCst));
    if map_here + map_elsewhere > map_spawned {
        case.problem(format!(
            "{} of {map_spawned} branches of `parallel::map` ran",
            map_here + map_elsewhere
        ));
    }
    // A branch counts as dispatched where the pool ran it, as inline where its caller did.
    let (pool, caller) = (elsewhere + map_elsewhere, here + map_here);
    if dispatched + inline != pool + caller + ambiguous
        || dispatched < pool
        || dispatched > pool + ambiguous
    {
        case.problem(format!(
            "parallel_dispatched grew by {dispatched} and parallel_inline by {inline}, but \
             {elsewhere} spawned branches and {map_elsewhere} of `parallel::map` ran on another \
             thread than their caller, {here} and {map_here} on the caller's, {ambiguous} were \
             spawned by branches and ran ({spawned} spawned, \
             {unrun} dropped unrun, {map_spawned} of `parallel::map`)"
        ));
    }
    let hops = after.hops - before.hops;
    let entered = case.top_entered.load(SeqCst);
    if hops < entered {
        case.problem(format!(
            "{entered} top-level bodies started, each with a hop onto the blocking pool, but hops \
             grew by {hops}"
        ));
    }
    if !spec.conns && after.connection_warnings != before.connection_warnings {
        case.problem(format!(
            "connection_warnings grew by {} in a case that took no pool connection",
            after.connection_warnings - before.connection_warnings
        ));
    }
    let warned = after.detector_warnings - before.detector_warnings;
    let seen = DETECT_WARNINGS.load(SeqCst) - warnings_before;
    if warned != seen {
        case.problem(format!(
            "detector_warnings grew by {warned}, but the layer saw {seen} detector WARNs"
        ));
    }
    for (l, seen) in case.caps_seen.iter().enumerate() {
        let stats = limit_of(l).stats();
        let most = seen.load(SeqCst);
        if stats.peak > most {
            case.problem(format!(
                "limit {} peaked at {} slots in use, above its largest capacity {most}",
                NAMES[l], stats.peak
            ));
        }
    }
    Summary { spawned, ..summary }
}

/// Checks how one call ended against its plan.
fn check_end(spec: &CaseSpec, case: &Case, index: usize, end: &End) {
    let call = &spec.calls[index];
    let shut_down = call.rt == 1 && spec.shuts_down();
    let panics = call.plan.panics();
    let problem = |what: String| case.problem(format!("call {index}: {what}"));
    match end {
        End::Value(value) => {
            if panics {
                problem("its plan panics, but it completed: a panic was lost".into());
            } else if *value != call.plan.value() {
                problem(format!(
                    "completed with {value:#x}, not its plan's value {:#x}",
                    call.plan.value()
                ));
            }
        }
        End::Panicked(text) => {
            let ours = text.starts_with("compose-stress:");
            let shutdown_panic = text.contains("shut down") || text.contains("shutdown");
            if !(ours && (panics || spec.panicky)) && !(shut_down && shutdown_panic) {
                problem(format!("an unexpected panic: {text}"));
            }
        }
        End::Cancelled => {
            if call.cancel == Cancel::Never && !shut_down {
                problem("cancelled, but nothing cancelled it".into());
            }
        }
    }
}

/// Runs a case on a thread of its own and waits for it, at most [`CASE_DEADLINE`].
fn run_guarded(spec: Arc<CaseSpec>, verbose: bool) -> Result<Summary, String> {
    let case = Arc::new(Case::new(spec.calls.len(), spec.conns));
    if verbose {
        let _ = writeln!(
            std::io::stderr(),
            "compose-stress: case {:#x}: {spec}",
            spec.seed
        );
    }
    let (tx, rx) = mpsc::channel();
    let (spec2, case2) = (spec.clone(), case.clone());
    thread::Builder::new()
        .name(format!("case-{:#x}", spec.seed))
        .spawn(move || {
            let result = panic::catch_unwind(AssertUnwindSafe(|| run_case(&spec2, &case2)));
            let _ = tx.send(result.map_err(forget_payload));
        })
        .unwrap();
    let start = Instant::now();
    let report = |what: &str| {
        let problems = lock(&case.problems).join("\n  ");
        let calls = lock(&case.calls)
            .iter()
            .enumerate()
            .map(|(i, state)| format!("  call {i}: {state}"))
            .collect::<Vec<_>>()
            .join("\n");
        format!(
            "FAILED: compose-stress case {seed:#x} {what}\n\
             replay: BLOCKING_FIRST_STRESS_SEED={seed:#x} cargo test -p blocking-first-tests --test \
             compose_stress\n\
             case: {spec}\n\
             problems:\n  {problems}\n\
             calls:\n{calls}\n\
             {state}",
            seed = spec.seed,
            state = describe_state(),
        )
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(Ok(summary)) => {
                if lock(&case.problems).is_empty() {
                    return Ok(summary);
                }
                return Err(report("broke an invariant"));
            }
            Ok(Err(text)) => return Err(report(&format!("failed: its driver panicked: {text}"))),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if case.fatal.load(SeqCst) {
                    // Leak the case: the parked branch still refers to it.
                    let report = report("broke an invariant (fatal)");
                    std::mem::forget(case.clone());
                    return Err(report);
                }
                if start.elapsed() > CASE_DEADLINE {
                    std::mem::forget(case.clone());
                    return Err(report(&format!("hung: not over after {CASE_DEADLINE:?}")));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => unreachable!("the case thread sends"),
        }
    }
}

#[test]
fn random_compositions_keep_every_invariant() {
    quiet_expected_panics();
    install_subscriber();
    db();
    observe::set_enabled(true);
    let config = Config::from_env();
    let start = Instant::now();
    let seeds: Box<dyn Iterator<Item = u64>> = match config.seed {
        Some(seed) => Box::new(std::iter::once(seed)),
        None => {
            let base = config.base;
            let random = (0..config.cases.unwrap_or(u64::MAX)).map(move |i| case_seed(base, i));
            Box::new(REGRESSION_SEEDS.iter().copied().chain(random))
        }
    };
    let (mut cases, mut calls, mut panicked, mut cancelled, mut spawned) = (0, 0, 0, 0, 0);
    for seed in seeds {
        if config
            .secs
            .is_some_and(|secs| start.elapsed().as_secs_f64() > secs)
        {
            break;
        }
        let spec = Arc::new(CaseSpec::generate(seed));
        match run_guarded(spec, config.verbose) {
            Ok(summary) => {
                cases += 1;
                calls += summary.calls;
                panicked += summary.panicked;
                cancelled += summary.cancelled;
                spawned += summary.spawned;
            }
            Err(report) => panic!(
                "{report}\n(after {cases} cases that passed, {:.1?} into the run)",
                start.elapsed()
            ),
        }
    }
    println!(
        "compose-stress: {cases} cases, {calls} calls ({panicked} panicked, {cancelled} \
         cancelled), {spawned} branches spawned, in {:.1?}",
        start.elapsed()
    );
}
