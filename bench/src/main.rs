//! Load benchmark: the same handler written six ways, under the same database pool, at several
//! client concurrencies. See `--help` and `docs/bench/loadbench.md`.
//!
//! ```text
//! cargo run --release -p blocking-first-bench -- [--pg postgres://postgres@127.0.0.1:54329/app]
//! ```
//!
//! Four other modes: `--overload` (open-loop load past the sustainable rate, `overload`),
//! `--timeline` (one row per request of (a) and (b), coloured by where its time goes, from the
//! runtime's split events and from clock reads in the handler: `timeline`,
//! `docs/bench/timeline.md`), `--adaptive` (static caps against an adaptive limit, and shedding
//! by time in queue: `adaptive`, `docs/bench/adaptive.md`) and `--mixed` (the global limit's
//! default against unbounded and fixed, under mixed load: `mixed`, `docs/bench/mixed.md`).

mod adaptive;
mod args;
mod db;
mod fresh;
mod gauge;
mod load;
mod mixed;
mod overload;
mod report;
mod timeline;
mod upstream;
mod variants;
mod wsgi;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use args::Args;
use db::Db;
use gauge::Monitor;
use report::{Cell, Environment};
use tokio::runtime::Runtime;
use variants::{App, DB, Variant};

fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}\n");
            }
            eprint!("{}", args::USAGE);
            std::process::exit(if message.is_empty() { 0 } else { 2 });
        }
    };
    if let Err(err) = run(&args) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    if let Some(spec) = &args.child {
        return if args.mixed {
            mixed::child(args, spec)
        } else {
            adaptive::child(args, spec)
        };
    }
    let environment = Environment::capture(args);
    eprintln!("{}", environment.summary());
    if args.adaptive {
        return adaptive::run(args, environment);
    }
    if args.mixed {
        return mixed::run(args, environment);
    }

    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let db = Arc::new(match &args.pg {
        Some(url) => Db::postgres(url, args.pool, args.rows, args.query)?,
        None => Db::sqlite(temp.path(), args.pool, args.rows, args.query)?,
    });
    DB.set_capacity(args.pool).map_err(|e| e.to_string())?;
    let upstream = upstream::Upstream::start(args.upstream).map_err(|e| e.to_string())?;
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let monitor = Monitor::start(args.pg.as_deref())?;
    let setup = Setup {
        args,
        db: &db,
        upstream: &upstream,
        client_runtime: &client_runtime,
        monitor: &monitor,
    };
    if args.overload {
        return overload::run(&setup, environment);
    }
    if args.timeline {
        return timeline::run(&setup, environment);
    }

    // (e) needs a client that runs on a runtime worker: asked once, before the rounds.
    let mut notes = Vec::new();
    let mut variants = Vec::new();
    for &variant in &args.variants {
        if variant == Variant::BlockingInAsync
            && let Some(reason) = refuses_runtime_workers(&db)
        {
            let note = format!(
                "({}) {} was not run: the database client refuses to run on a tokio worker \
                 thread (a read called from a task on a multi-thread runtime panicked with: `{}`). \
                 The accident cannot happen with this driver.",
                variant.letter(),
                variant.label(),
                reason
                    .split(". ")
                    .next()
                    .unwrap_or_default()
                    .replace('`', "'"),
            );
            eprintln!("{note}");
            notes.push(note);
            continue;
        }
        variants.push(variant);
    }

    let per_cell = args.requests_per_cell();
    for &concurrency in args.concurrency.iter().filter(|&&c| c > per_cell) {
        let note = format!(
            "At concurrency {concurrency}, a cell's {per_cell} measured requests are fewer than \
             its {concurrency} client workers: each worker sends at most one, so the cell \
             measures one burst at concurrency {per_cell}, not a steady load."
        );
        eprintln!("warning: {note}");
        notes.push(note);
    }
    // Round by round, concurrency by concurrency, every variant once in a rotated order.
    let started = Instant::now();
    let mut cells = Vec::new();
    for round in 0..args.rounds {
        for &concurrency in &args.concurrency {
            for variant in report::rotated(&variants, round) {
                let cell = cell(&setup, variant, concurrency, round)?;
                eprintln!("{}", cell.line(args.rounds));
                cells.push(cell);
            }
        }
    }
    let total = started.elapsed();
    drop(monitor);

    let rows = report::merge(cells, &variants, &args.concurrency);
    eprintln!("\nmerged over {} rounds:", args.rounds);
    for row in &rows {
        eprintln!("{}", row.line());
    }

    let environment = environment.finish(db.kind(), total);
    let markdown = report::markdown(args, &environment, &rows, &notes);
    println!("\n{markdown}");
    if let Some(out) = &args.out {
        write_report(out, &markdown, |svg| {
            report::plot(svg, args, &environment, &rows)
        })?;
    }
    Ok(())
}

/// A loopback listener on a free port for the server under test, and its address.
fn listen(
    client_runtime: &tokio::runtime::Runtime,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), String> {
    let listener = client_runtime
        .block_on(async { upstream::listen() })
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, addr))
}

/// Serves `router` on a fresh runtime shaped as `args` says (the server under test).
fn serve_on_tokio(
    args: &Args,
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> Result<tokio::runtime::Runtime, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_workers)
        .max_blocking_threads(args.max_blocking)
        .thread_name("server")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let listener = listener.into_std().map_err(|e| e.to_string())?;
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, router).await
    });
    Ok(runtime)
}

/// Writes `markdown` to `out.md` and the plot `draw` makes to `out.svg`.
fn write_report(
    out: &std::path::Path,
    markdown: &str,
    draw: impl FnOnce(&std::path::Path) -> Result<(), String>,
) -> Result<(), String> {
    let (md, svg) = (out.with_extension("md"), out.with_extension("svg"));
    if let Some(dir) = md.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    std::fs::write(&md, markdown).map_err(|e| format!("{}: {e}", md.display()))?;
    draw(&svg)?;
    eprintln!("written {} and {}", md.display(), svg.display());
    Ok(())
}

/// One variant at one concurrency in one round, on a fresh server (and, for tokio, a fresh
/// runtime), measuring `requests / rounds` requests.
fn cell(
    setup: &Setup<'_>,
    variant: Variant,
    concurrency: usize,
    round: usize,
) -> Result<Cell, String> {
    let Setup {
        args,
        db,
        upstream,
        client_runtime,
        monitor,
    } = *setup;
    let app = Arc::new(App::new(db.clone(), upstream.addr, args.reads, args.rows));
    db.in_use.reset_peak();
    db.waiting.reset_peak();
    DB.reset_peak();
    blocking_first::reset_peak();
    let hops_before = blocking_first::stats().hops;
    let threads_before = gauge::os_threads();
    monitor.reset();

    let (listener, addr) = listen(client_runtime)?;
    let server = match variant.router(app.clone()) {
        Some(router) => Server::Tokio(serve_on_tokio(args, listener, router)?),
        None => {
            let listener = listener.into_std().map_err(|e| e.to_string())?;
            Server::Threads(
                wsgi::ThreadPerRequest::start(app.clone(), listener, args.pool)
                    .map_err(|e| e.to_string())?,
            )
        }
    };

    let outcome = client_runtime.block_on(load::run(
        format!("http://{addr}/"),
        concurrency,
        args.requests_per_cell(),
        args.max_time,
        args.rows,
    ));

    match server {
        Server::Tokio(runtime) => runtime.shutdown_timeout(Duration::from_secs(10)),
        Server::Threads(server) => server.stop(),
    }

    let served = app.served.load(Ordering::Relaxed);
    let handoffs = match variant {
        Variant::BlockingFirst => blocking_first::stats().hops.saturating_sub(hops_before),
        _ => app.handoffs.load(Ordering::Relaxed),
    };
    let slots = (variant == Variant::BlockingFirst).then(|| DB.stats().peak);
    let peaks = &monitor.peaks;
    let pg = args.pg.is_some();
    Ok(Cell {
        variant,
        concurrency,
        round,
        outcome,
        blocking_peak: app.blocking.peak(),
        slots_peak: slots,
        os_threads_before: threads_before,
        os_threads_peak: peaks.os_threads.load(Ordering::Acquire),
        conns_peak: db.in_use.peak(),
        waiting_peak: db.waiting.peak(),
        pg_active: pg.then(|| peaks.pg_active.load(Ordering::Acquire)),
        pg_connected: pg.then(|| peaks.pg_connected.load(Ordering::Acquire)),
        handoffs,
        served,
    })
}

/// Calls the database once from a task on a runtime worker, as variant (e) does, and returns the
/// panic message if the client refuses (the synchronous `postgres` client runs its own runtime
/// inside and panics there). `None`: the call works on a worker.
fn refuses_runtime_workers(db: &Arc<Db>) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .ok()?;
    let db = db.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = runtime.block_on(runtime.spawn(async move { db.read(1) }));
    std::panic::set_hook(hook);
    match result {
        Ok(_) => None,
        Err(err) if err.is_panic() => {
            let payload = err.into_panic();
            Some(
                payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into()),
            )
        }
        Err(err) => Some(err.to_string()),
    }
}

/// What every cell shares: the flags, the database, the upstream, the load client's runtime and
/// the monitor.
struct Setup<'a> {
    args: &'a Args,
    db: &'a Arc<Db>,
    upstream: &'a upstream::Upstream,
    client_runtime: &'a Runtime,
    monitor: &'a Monitor,
}

enum Server {
    Tokio(Runtime),
    Threads(wsgi::ThreadPerRequest),
}
