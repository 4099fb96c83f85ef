//! A notes service on embedded SQLite that calls a slow link-preview service, its handlers
//! written as blocking code with `#[blocking_first]`.
//!
//! ```text
//! cargo run --example notes -- --help
//! ```

mod api;
mod app;
mod db;
mod ops;
mod preview;
mod serve;
mod upstream;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::upstream::UpstreamConfig;

const USAGE: &str = "\
Usage: cargo run --example notes -- [OPTIONS]

Options:
  --listen ADDR                 where the notes service listens [127.0.0.1:3000]
  --db PATH                     the SQLite file, created and seeded if needed, kept
                                between runs [default: a fresh one each run,
                                <temp dir>/blocking-first-notes.sqlite]
  --cap N                       bodies in database code at once = pooled connections [4]
  --upstream URL                use this link-preview service instead of starting one
  --upstream-listen ADDR        where the started preview service listens [127.0.0.1:0]
  --upstream-latency-ms MS      how long the started preview service takes [200]
  --upstream-failure-rate F     share of its answers that are 503s, 0 to 1 [0.1]
  --upstream-timeout-ms MS      how long the notes service waits for a preview [1000]
  --max-upload-bytes N          the largest attachment accepted [1048576]
  -h, --help                    this text

Logs: RUST_LOG as `target=level` directives (default `info,notes=debug`).";

struct Args {
    listen: SocketAddr,
    db: PathBuf,
    /// Whether `--db` was given; without it the database starts fresh, so the output matches
    /// README's.
    db_given: bool,
    cap: usize,
    upstream: Option<String>,
    upstream_listen: SocketAddr,
    upstream_config: UpstreamConfig,
    upstream_timeout: Duration,
    max_upload_bytes: usize,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
        db: std::env::temp_dir().join("blocking-first-notes.sqlite"),
        db_given: false,
        cap: 4,
        upstream: None,
        upstream_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream_config: UpstreamConfig {
            latency: Duration::from_millis(200),
            failure_rate: 0.1,
        },
        upstream_timeout: Duration::from_millis(1000),
        max_upload_bytes: 1 << 20,
    };
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = args
            .next()
            .ok_or_else(|| format!("`{flag}` needs a value"))?;
        let bad = |err: &dyn std::fmt::Display| format!("bad value `{value}` for `{flag}`: {err}");
        let millis = |value: &str| value.parse().map(Duration::from_millis);
        match flag.as_str() {
            "--listen" => parsed.listen = value.parse().map_err(|e| bad(&e))?,
            "--db" => {
                parsed.db = PathBuf::from(&value);
                parsed.db_given = true;
            }
            "--cap" => match value.parse() {
                Ok(0) => return Err(bad(&"the cap must be at least 1")),
                Ok(cap) => parsed.cap = cap,
                Err(err) => return Err(bad(&err)),
            },
            "--upstream" => parsed.upstream = Some(value.clone()),
            "--upstream-listen" => parsed.upstream_listen = value.parse().map_err(|e| bad(&e))?,
            "--upstream-latency-ms" => {
                parsed.upstream_config.latency = millis(&value).map_err(|e| bad(&e))?;
            }
            "--upstream-failure-rate" => match value.parse::<f64>() {
                Ok(rate) if (0.0..=1.0).contains(&rate) => {
                    parsed.upstream_config.failure_rate = rate
                }
                Ok(_) => return Err(bad(&"a rate is between 0 and 1")),
                Err(err) => return Err(bad(&err)),
            },
            "--upstream-timeout-ms" => {
                parsed.upstream_timeout = millis(&value).map_err(|e| bad(&e))?
            }
            "--max-upload-bytes" => parsed.max_upload_bytes = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option `{flag}`")),
        }
    }
    Ok(Some(parsed))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("error: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Logs go to stderr, so stdout keeps only the addresses and the lines to try.
    // `RUST_LOG` as `target=level` directives (tracing-subscriber's `Targets`: no regex engine
    // to build for a log filter).
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_else(|| "info,notes=debug".parse().expect("valid directives"));
    // Colours only on a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi),
        )
        .with(filter)
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // The metrics recorder, before the first body ends (each one records its split into it).
    let metrics = ops::install_metrics()?;
    // Nothing scrapes on a schedule here: drain the histograms now and then, so that samples
    // do not pile up between scrapes (or without any).
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    // The preview service: the one given with `--upstream`, or one started here.
    let (upstream, upstream_url) = match args.upstream.clone() {
        Some(url) => (None, url),
        None => {
            let started = upstream::start(args.upstream_listen, args.upstream_config).await?;
            let url = started.url();
            (Some(started), url)
        }
    };
    if !args.db_given {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = args.db.clone().into_os_string();
            file.push(suffix);
            match std::fs::remove_file(&file) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err.into()),
                _ => {}
            }
        }
    }
    let server = app::start(app::Config {
        listen: args.listen,
        db_path: args.db.clone(),
        cap: args.cap,
        upstream: upstream_url.clone(),
        upstream_timeout: args.upstream_timeout,
        max_upload_bytes: args.max_upload_bytes,
        metrics,
    })
    .await?;

    let base = format!("http://{}", server.addr);
    println!("database:  {}", args.db.display());
    match &upstream {
        Some(_) => println!(
            "upstream:  {upstream_url} (started here: {} ms latency, {}% failures)",
            args.upstream_config.latency.as_millis(),
            args.upstream_config.failure_rate * 100.0
        ),
        None => println!("upstream:  {upstream_url}"),
    }
    println!("listening: {base}  (cap `db`: {} slots)", args.cap);
    println!();
    println!("try:");
    println!("  curl -s {base}/notes");
    println!("  curl -s {base}/notes/1");
    println!(
        "  curl -s -X POST {base}/notes -H 'content-type: application/json' \\\n       -d '{{\"title\": \"Hello\", \"link\": \"https://example.com/\", \"tags\": [\"demo\"]}}'"
    );
    println!("  curl -s -X PUT --data-binary @Cargo.toml {base}/notes/1/attachments/Cargo.toml");
    println!("  curl -s {base}/dashboard");
    println!("  curl -s {base}/status");
    println!("  curl -s {base}/metrics");
    println!("  curl -s {base}/debug/bodies");
    println!();
    println!("Ctrl-C to stop.");

    tokio::signal::ctrl_c().await?;
    tracing::info!("Ctrl-C: finishing the requests in flight");
    server.stop().await?;
    if let Some(upstream) = upstream {
        let seen = upstream.stats();
        upstream.stop().await?;
        tracing::info!(
            requests = seen.requests,
            failures = seen.failures,
            peak_in_flight = seen.peak_in_flight,
            "preview service stopped"
        );
    }
    tracing::info!("stopped");
    Ok(())
}
