//! The markdown report: the command, the machine, the merged table, and the model.

use std::fmt::Write as _;

use super::{Environment, Row, blocking_time, ms, rotated};
use crate::args::Args;
use crate::variants::Variant;

pub fn markdown(args: &Args, env: &Environment, rows: &[Row], notes: &[String]) -> String {
    // The variants that ran (a refused one has no rows), in the order of the rotation.
    let ran: Vec<Variant> = args
        .variants
        .iter()
        .copied()
        .filter(|v| rows.iter().any(|row| row.variant == *v))
        .collect();
    let orders = (0..args.rounds.min(ran.len().max(1)))
        .map(|round| {
            let order: Vec<String> = rotated(&ran, round)
                .iter()
                .map(|v| format!("({})", v.letter()))
                .collect();
            format!("round {}: {}", round + 1, order.join(" "))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mut md = String::new();
    let _ = writeln!(md, "# Load benchmark\n");
    let _ = writeln!(md, "```sh\n{}\n```\n", env.command);
    let _ = writeln!(
        md,
        "- date: {}; whole run {:.0} s\n\
         - machine: `nproc` = {}; CPU: {}; memory (`free -h`): {}; kernel {}\n\
         - load average (1/5/15 min) before: {}; after: {}\n\
         - database: {}, pool of {} connections; each call keeps its connection busy {} ms \
         (PostgreSQL: `pg_sleep` in the database; SQLite: a sleep holding the connection), then \
         runs its query\n\
         - handler: read step of {} read quer{} → upstream call ({} ms, local axum server) → one \
         write query\n\
         - server under test: tokio {} worker threads, `max_blocking_threads` {}; \
         `#[blocking_first]` limit = {}; thread-per-request server: {} threads\n\
         - load: {} measured requests per cell (`--requests` {} / {} rounds; at most {} s per \
         cell), after one unmeasured request per client worker; reqwest client on its own \
         2-thread runtime in the same process; 127.0.0.1 only\n\
         - rounds: {}, variants interleaved: each round runs, at each concurrency in turn, every \
         variant once on a fresh server, in an order rotated by one per round (round r starts at \
         variant r mod {}) — {} — so that machine noise falls on all variants alike\n\
         - a row merges the {} cells of its variant and concurrency: req/s is the median over the \
         rounds, with its min–max; p50/p99 are of all rounds' latencies pooled; errors are summed; \
         the peaks are the max over the rounds; handoffs / request are all rounds' handoffs / all \
         requests served\n",
        env.date,
        env.total.as_secs_f64(),
        env.nproc,
        env.cpu,
        env.memory,
        env.kernel,
        env.load_before,
        env.load_after,
        env.database,
        args.pool,
        ms(args.query),
        args.reads,
        if args.reads == 1 { "y" } else { "ies" },
        ms(args.upstream),
        args.server_workers,
        args.max_blocking,
        args.pool,
        args.pool,
        args.requests_per_cell(),
        args.requests,
        args.rounds,
        args.max_time.as_secs(),
        args.rounds,
        ran.len(),
        orders,
        args.rounds,
    );

    let pg = args.pg.is_some();
    let _ = write!(
        md,
        "| variant | concurrency | req/s (median) | req/s min–max | p50 ms | p99 ms | errors | \
         threads in blocking code (peak) | OS threads added (peak) | peak OS threads | DB \
         connections in use (peak) | threads waiting for a connection (peak) |{} handoffs / \
         request |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|{}---:|\n",
        if pg {
            " PostgreSQL backends active (sampled peak) |"
        } else {
            ""
        },
        if pg { "---:|" } else { "" },
    );
    for row in rows {
        let mut errors = row.errors.to_string();
        if row.rounds_cut_by_time > 0 {
            let _ = write!(
                errors,
                " (time bound hit in {} of {} rounds)",
                row.rounds_cut_by_time, row.rounds
            );
        }
        let blocking = match row.slots_peak {
            Some(slots) => format!("{} (limit slots: {slots})", row.blocking_peak),
            None => row.blocking_peak.to_string(),
        };
        let pg_cell = match (row.pg_active, row.pg_connected) {
            (Some(active), Some(connected)) => format!(" {active} of {connected} |"),
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "| ({}) {} | {} | {:.0} | {:.0}–{:.0} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} |{} \
             {:.2} |",
            row.variant.letter(),
            row.variant.label().replace('#', "\\#"),
            row.concurrency,
            row.per_second,
            row.per_second_min,
            row.per_second_max,
            ms(row.quantile(0.5)),
            ms(row.quantile(0.99)),
            errors,
            blocking,
            row.os_threads_added,
            row.os_threads_peak,
            row.conns_peak,
            row.waiting_peak,
            pg_cell,
            row.handoffs_per_request,
        );
    }
    for note in notes {
        let _ = writeln!(md, "\n{note}");
    }
    for row in rows {
        if let Some(reason) = &row.first_error {
            let _ = writeln!(
                md,
                "\n({}) at concurrency {}: first error: `{}`",
                row.variant.letter(),
                row.concurrency,
                reason.replace('`', "'")
            );
        }
    }

    let _ = writeln!(
        md,
        "\n## Against the model\n\n\
         Per request, the database keeps a connection busy T_db = {} calls × {} ms = {:.1} ms and \
         the upstream takes T_up = {} ms. Upper bounds on throughput: a server that holds a thread \
         for the whole request with {} threads: min(c, {}) / (T_db + T_up); a server that holds \
         connections only for database calls: min(c / (T_db + T_up), {} / T_db). The measured \
         ratio (a)/(f) is compared with the ratio of these bounds.\n",
        args.reads + 1,
        ms(args.query),
        blocking_time(args) * 1000.0,
        ms(args.upstream),
        args.pool,
        args.pool,
        args.pool,
    );
    let _ = writeln!(
        md,
        "| concurrency | bound, thread per request (req/s) | bound, connections only for \
         queries (req/s) | measured (a) req/s | measured (f) req/s | (a)/(f) measured | (a)/(f) \
         bound | (a)/(b) measured |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let find = |variant, c| {
        rows.iter()
            .find(|row| row.variant == variant && row.concurrency == c)
    };
    for &c in &args.concurrency {
        let (sync_bound, async_bound) = bounds(args, c);
        let a = find(Variant::BlockingFirst, c).map(|r| r.per_second);
        let b = find(Variant::SpawnBlockingPerCall, c).map(|r| r.per_second);
        let f = find(Variant::ThreadPerRequest, c).map(|r| r.per_second);
        let show = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
        let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
            _ => "–".to_string(),
        };
        let _ = writeln!(
            md,
            "| {c} | {sync_bound:.0} | {async_bound:.0} | {} | {} | {} | {:.2} | {} |",
            show(a),
            show(f),
            ratio(a, f),
            async_bound / sync_bound,
            ratio(a, b),
        );
    }

    let low = rows.iter().map(|r| r.os_threads_before.0).min();
    let high = rows.iter().map(|r| r.os_threads_before.1).max();
    let before = match (low, high) {
        (Some(low), Some(high)) if low == high => low.to_string(),
        (Some(low), Some(high)) => format!("{low}–{high}"),
        _ => "?".to_string(),
    };
    let _ = writeln!(
        md,
        "\n## Columns\n\n\
         - **req/s**: per cell, successful measured requests / time from the end of the warm-up \
         round to the last response; the median over the rounds, and its min–max. **p50/p99**: \
         latency of the successful measured requests of all rounds pooled, seen by the client.\n\
         - **threads in blocking code**: the most threads at once inside the blocking sections of \
         the handler, counted by a gauge around them (the whole `spawn_blocking` closure for (b) \
         and (c), the `block_in_place` closure for (d), the database calls on the workers for \
         (e), busy server threads for (f), the blocking code between regions for (a), where the \
         peak slots taken from its `Limit` are shown too).\n\
         - **OS threads added**: the process's threads (`/proc/self/task`) sampled every 2 ms, \
         peak minus the count before the server started (tokio workers + blocking pool, or the \
         server's threads for (f)), the max over the rounds. **peak OS threads**: the same peak, \
         absolute: every thread of the process, the benchmark's own included (main, monitor, load \
         client runtime, upstream server, pool helpers, and threads that outlive a cell, such as \
         the `#[blocking_first]` driver's); before the server started the process had {} \
         threads. Compare with the limit ({}) + tokio workers ({}) + that count.\n\
         - **DB connections in use**: a gauge from `pool.get()` to the connection's return. \
         **threads waiting for a connection**: a gauge around `pool.get()`: threads blocked on \
         an exhausted pool.\n\
         - **PostgreSQL backends active**: `pg_stat_activity` rows of the database with \
         `state <> 'idle'`, sampled every 10 ms from a separate connection (not counted), of all the client \
         backends connected (autovacuum workers excluded).\n\
         - **handoffs / request**: moves of work to another thread per request: the driver's \
         hops onto the blocking pool for (a) (`blocking_first::stats().hops`), `spawn_blocking` \
         calls for (b) and (c), `block_in_place` calls for (d); (e) and (f) never move; all \
         rounds' handoffs / all rounds' requests served (warm-up requests included).\n",
        before, args.pool, args.server_workers,
    );
    md
}

/// The throughput bounds at concurrency `c`: (thread per request, connections only for queries).
fn bounds(args: &Args, c: usize) -> (f64, f64) {
    let t_db = blocking_time(args);
    let t = t_db + args.upstream.as_secs_f64();
    let pool = args.pool as f64;
    let c = c as f64;
    let sync = c.min(pool) / t;
    let held_for_queries = if t_db > 0.0 {
        (c / t).min(pool / t_db)
    } else {
        c / t
    };
    (sync, held_for_queries)
}
