//! The results: one markdown table (with the command and the machine), and an SVG plot, of the
//! cells measured round by round and merged into one row per variant and concurrency.

mod markdown;
mod plot;
mod rows;

use std::process::Command;
use std::time::Duration;

use crate::args::Args;

pub use markdown::markdown;
pub use plot::plot;
pub use rows::{Cell, Row, merge, rotated};

/// The machine and the moment, captured around a run.
pub struct Environment {
    command: String,
    date: String,
    nproc: String,
    memory: String,
    cpu: String,
    kernel: String,
    load_before: String,
    load_after: String,
    database: &'static str,
    total: Duration,
}

impl Environment {
    pub fn capture(_args: &Args) -> Environment {
        let argv: Vec<String> = std::env::args().skip(1).map(|a| shell_quote(&a)).collect();
        let mut command = String::from("cargo run --release -p blocking-first-bench");
        if !argv.is_empty() {
            command.push_str(" -- ");
            command.push_str(&argv.join(" "));
        }
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory = shell("free", &["-h"])
            .lines()
            .find(|line| line.starts_with("Mem:"))
            .map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                format!(
                    "{} total, {} available",
                    cols.get(1).unwrap_or(&"?"),
                    cols.get(6).unwrap_or(&"?")
                )
            })
            .unwrap_or_else(|| "unknown".into());
        Environment {
            command,
            date: shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            nproc: shell("nproc", &[]),
            memory,
            cpu,
            kernel: shell("uname", &["-r"]),
            load_before: loadavg(),
            load_after: String::new(),
            database: "",
            total: Duration::ZERO,
        }
    }

    pub fn finish(mut self, database: &'static str, total: Duration) -> Environment {
        self.load_after = loadavg();
        self.database = database;
        self.total = total;
        self
    }

    /// The command block and the date, machine and load lines of a report.
    pub fn header(&self) -> String {
        format!(
            "```sh\n{}\n```\n\n\
             - date: {}; whole run {:.0} s\n\
             - machine: `nproc` = {}; CPU: {}; memory (`free -h`): {}; kernel {}\n\
             - load average (1/5/15 min) before: {}; after: {}\n\
             - database: {}\n",
            self.command,
            self.date,
            self.total.as_secs_f64(),
            self.nproc,
            self.cpu,
            self.memory,
            self.kernel,
            self.load_before,
            self.load_after,
            self.database,
        )
    }

    /// `nproc` and the load average before and after, for a plot's title.
    pub fn machine_short(&self) -> String {
        format!(
            "{}; nproc {}, load {} → {}",
            self.database, self.nproc, self.load_before, self.load_after
        )
    }

    pub fn summary(&self) -> String {
        format!(
            "{}\n{} | nproc {} | {} | {} | kernel {} | load before: {}",
            self.command,
            self.date,
            self.nproc,
            self.cpu,
            self.memory,
            self.kernel,
            self.load_before
        )
    }
}

fn shell(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|line| {
            line.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn shell_quote(arg: &str) -> String {
    if arg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Blocking time per request: every database call keeps a connection busy for the query time.
fn blocking_time(args: &Args) -> f64 {
    (args.reads + 1) as f64 * args.query.as_secs_f64()
}
