//! The adaptive mode's report: the tables, the targets and the plot of capacity and p99 against
//! time.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

use super::{
    CLIENTS, MAX, MIN, MULTIPLES, PHASE_FACTOR, Run, SAMPLE_EVERY, SETTLE, ShedRun, Variant, WARMUP,
};
use crate::args::Args;
use crate::fresh::{ChildOutput, Window, median, window};
use crate::load::quantile;
use crate::report::Environment;

/// The settled window of phase `phase` (0 or 1): from [`SETTLE`] after its start to its end.
pub(super) fn settled(args: &Args, out: &ChildOutput, phase: u32) -> Window {
    let start = args.phase_time * phase;
    window(&out.done, 0, start + SETTLE, start + args.phase_time)
}

fn whole(args: &Args, out: &ChildOutput, phase: u32) -> Window {
    let start = args.phase_time * phase;
    window(&out.done, 0, start, start + args.phase_time)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Threads added by the server: peak over the run, and the median over the settled windows.
fn threads(args: &Args, out: &ChildOutput) -> (usize, usize) {
    let before = out.get("threads_before").unwrap_or(0.0) as usize;
    let peak = out.samples.iter().map(|s| s.threads).max().unwrap_or(0);
    let steady: Vec<f64> = out
        .samples
        .iter()
        .filter(|s| in_settled(args, s.at))
        .map(|s| s.threads as f64)
        .collect();
    (
        peak.saturating_sub(before),
        (median(&steady) as usize).saturating_sub(before),
    )
}

fn in_settled(args: &Args, at: Duration) -> bool {
    let t = args.phase_time;
    (at >= SETTLE && at < t) || (at >= t + SETTLE && at < 2 * t)
}

/// The adaptive capacity's median over the settled window of `phase`.
fn capacity(args: &Args, out: &ChildOutput, phase: u32) -> f64 {
    let start = args.phase_time * phase;
    let values: Vec<f64> = out
        .samples
        .iter()
        .filter(|s| s.at >= start + SETTLE && s.at < start + args.phase_time)
        .map(|s| s.capacity as f64)
        .collect();
    median(&values)
}

pub(super) fn line(args: &Args, run: &Run) -> String {
    let (a, b) = (settled(args, &run.out, 0), settled(args, &run.out, 1));
    let (peak, steady) = threads(args, &run.out);
    format!(
        "round {}/{} {:<14} settled: {:>6.0} req/s p99 {:>6.1} ms | x{PHASE_FACTOR}: {:>6.0} \
         req/s p99 {:>7.1} ms | threads +{peak} (steady +{steady}) conns {} capacity {:.0} / {:.0}",
        run.round + 1,
        args.rounds,
        run.variant.short(),
        a.per_second,
        ms(quantile(&a.latencies, 0.99)),
        b.per_second,
        ms(quantile(&b.latencies, 0.99)),
        run.out.get("conns_peak").unwrap_or(0.0),
        capacity(args, &run.out, 0),
        capacity(args, &run.out, 1),
    )
}

pub(super) fn shed_line(run: &ShedRun) -> String {
    let ok = ok_latencies(run);
    format!(
        "{}×R shed by queue time: offered {:.0}/s admitted {:.0}/s p50 {:.1} ms p99 {:.1} ms, \
         503s {}, errors {}",
        run.multiple,
        run.out.get("offered").unwrap_or(0.0),
        run.out.get("admitted").unwrap_or(0.0),
        ms(quantile(&ok, 0.5)),
        ms(quantile(&ok, 0.99)),
        run.out.done.iter().filter(|d| d.tag == 1).count(),
        run.out.get("errors").unwrap_or(0.0),
    )
}

fn ok_latencies(run: &ShedRun) -> Vec<Duration> {
    let mut v: Vec<Duration> = run
        .out
        .done
        .iter()
        .filter(|d| d.tag == 0)
        .map(|d| d.latency)
        .collect();
    v.sort_unstable();
    v
}

/// A variant's rounds merged, for one phase.
struct Merged {
    per_second: f64,
    min: f64,
    max: f64,
    whole: f64,
    latencies: Vec<Duration>,
    errors: usize,
}

fn merge(args: &Args, runs: &[&Run], phase: u32) -> Merged {
    let windows: Vec<Window> = runs.iter().map(|r| settled(args, &r.out, phase)).collect();
    let rates: Vec<f64> = windows.iter().map(|w| w.per_second).collect();
    let mut latencies: Vec<Duration> = windows.iter().flat_map(|w| w.latencies.clone()).collect();
    latencies.sort_unstable();
    Merged {
        per_second: median(&rates),
        min: rates.iter().copied().fold(f64::INFINITY, f64::min),
        max: rates.iter().copied().fold(0.0, f64::max),
        whole: median(
            &runs
                .iter()
                .map(|r| whole(args, &r.out, phase).per_second)
                .collect::<Vec<_>>(),
        ),
        latencies,
        errors: windows.iter().map(|w| w.errors).sum(),
    }
}

/// Seconds from the phase's start until every later 1 s bucket of the phase serves at least
/// `floor` req/s (`None`: not even the last one does).
fn time_to(args: &Args, out: &ChildOutput, phase: u32, floor: f64) -> Option<f64> {
    let start = args.phase_time * phase;
    let buckets = args.phase_time.as_secs() as u32;
    let mut first_good = None;
    for b in (0..buckets).rev() {
        let from = start + Duration::from_secs(u64::from(b));
        let rate = window(&out.done, 0, from, from + Duration::from_secs(1)).per_second;
        if rate >= floor {
            first_good = Some(f64::from(b));
        } else {
            break;
        }
    }
    first_good
}

fn ratio_check(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

pub(super) fn markdown(
    args: &Args,
    env: &Environment,
    variants: &[Variant],
    runs: &[Run],
    rate: f64,
    shed: &[ShedRun],
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# An adaptive limit against static caps, and shedding by time in queue\n"
    );
    md.push_str(&env.header());
    let t = args.phase_time.as_secs();
    let _ = writeln!(
        md,
        "- resource: one query per request on a pool of {MAX} connections; a query keeps its \
         connection busy for q × max(1, n / {slots}) × (1 + {c} × max(0, n − {slots})), n being \
         the queries inside when it starts (it serves {slots} at once, shares itself past them, \
         and loses throughput to contention the further past them it is driven); q = {q} ms for \
         {t} s, then {f} × {q} ms for {t} s\n\
         - each run: a fresh process (cold start), server tokio {workers} workers, {CLIENTS} \
         closed-loop clients from the first request (no warm-up); a static cap is \
         `Limit::new(\"db\", n)`, the adaptive one `Limit::adaptive(\"db\", {MIN}, {MAX})` \
         starting at {MIN}\n\
         - {rounds} rounds, each running every variant once in an order rotated by one per round\n\
         - settled: responses finished from {s} s after the start to the change (phase 1), and \
         from {s} s after the change to the end (phase 2); req/s: median over the rounds \
         (min–max), latencies of all rounds pooled; threads: OS threads the server added to the \
         process (its load client's are not counted), peak over the run and median over the \
         settled windows, sampled every {every} ms; connections: the most in use at once\n",
        slots = args.slots,
        c = args.contention,
        q = ms(args.query),
        f = PHASE_FACTOR,
        workers = args.server_workers,
        rounds = args.rounds,
        s = SETTLE.as_secs(),
        every = SAMPLE_EVERY.as_millis(),
    );
    let _ = writeln!(
        md,
        "| limit | phase 1 req/s (settled) | p50 (ms) | p99 (ms) | phase 2 (×{PHASE_FACTOR}) \
         req/s (settled) | p50 (ms) | p99 (ms) | req/s over each whole phase | peak threads \
         added | steady threads added | peak connections in use | capacity (settled, phase 1 \
         / 2) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut merged = Vec::new();
    for &variant in variants {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.variant == variant).collect();
        if mine.is_empty() {
            continue;
        }
        let (a, b) = (merge(args, &mine, 0), merge(args, &mine, 1));
        let peak = mine
            .iter()
            .map(|r| threads(args, &r.out).0)
            .max()
            .unwrap_or(0);
        let steady = median(
            &mine
                .iter()
                .map(|r| threads(args, &r.out).1 as f64)
                .collect::<Vec<_>>(),
        );
        let conns = mine
            .iter()
            .filter_map(|r| r.out.get("conns_peak"))
            .fold(0.0, f64::max);
        let capacity = match variant {
            Variant::Static(cap) => format!("{cap}"),
            Variant::Adaptive => {
                let caps = |phase| {
                    let values: Vec<f64> =
                        mine.iter().map(|r| capacity(args, &r.out, phase)).collect();
                    format!(
                        "{:.0} ({:.0}–{:.0})",
                        median(&values),
                        values.iter().copied().fold(f64::INFINITY, f64::min),
                        values.iter().copied().fold(0.0, f64::max)
                    )
                };
                format!("{} / {}", caps(0), caps(1))
            }
        };
        let _ = writeln!(
            md,
            "| {} | {:.0} ({:.0}–{:.0}) | {:.1} | {:.1} | {:.0} ({:.0}–{:.0}) | {:.1} | {:.1} | \
             {:.0} / {:.0} | {peak} | {steady:.0} | {conns:.0} | {capacity} |",
            variant.label(),
            a.per_second,
            a.min,
            a.max,
            ms(quantile(&a.latencies, 0.5)),
            ms(quantile(&a.latencies, 0.99)),
            b.per_second,
            b.min,
            b.max,
            ms(quantile(&b.latencies, 0.5)),
            ms(quantile(&b.latencies, 0.99)),
            a.whole,
            b.whole,
        );
        let errors = a.errors + b.errors;
        if errors > 0 {
            let _ = writeln!(md, "<!-- {} errors: {errors} -->", variant.short());
        }
        merged.push((variant, a, b));
    }

    // The targets.
    let _ = writeln!(md, "\n## Targets\n");
    let _ = writeln!(
        md,
        "| phase | best static cap | its req/s | its p99 (ms) | adaptive req/s | ratio (≥ 0.90) \
         | adaptive p99 (ms) | ratio (≤ 1.20) | adaptive at ≥ 90% of the best from (s after the \
         start / change, per round) | target |\n|---|---|---:|---:|---:|---:|---:|---:|---|---|"
    );
    let mut verdicts = Vec::new();
    for phase in 0..2u32 {
        fn pick(m: &(Variant, Merged, Merged), phase: u32) -> &Merged {
            if phase == 0 { &m.1 } else { &m.2 }
        }
        let best = merged
            .iter()
            .filter(|m| m.0 != Variant::Adaptive)
            .max_by(|x, y| {
                pick(x, phase)
                    .per_second
                    .total_cmp(&pick(y, phase).per_second)
            });
        let adaptive = merged.iter().find(|m| m.0 == Variant::Adaptive);
        let (Some(best), Some(adaptive)) = (best, adaptive) else {
            continue;
        };
        let (b, a) = (pick(best, phase), pick(adaptive, phase));
        let tput = a.per_second / b.per_second;
        let (bp99, ap99) = (
            ms(quantile(&b.latencies, 0.99)),
            ms(quantile(&a.latencies, 0.99)),
        );
        let lat = ap99 / bp99;
        let times: Vec<String> = runs
            .iter()
            .filter(|r| r.variant == Variant::Adaptive)
            .map(|r| match time_to(args, &r.out, phase, 0.9 * b.per_second) {
                Some(s) => format!("{s:.0}"),
                None => "never".into(),
            })
            .collect();
        let ok = tput >= 0.9 && lat <= 1.2;
        verdicts.push(ok);
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.1} | {:.0} | {:.2} | {:.1} | {:.2} | {} | {} |",
            if phase == 0 {
                "1 (cold start)".to_string()
            } else {
                format!("2 (×{PHASE_FACTOR})")
            },
            best.0.short(),
            b.per_second,
            bp99,
            a.per_second,
            tput,
            ap99,
            lat,
            times.join(", "),
            ratio_check(ok),
        );
    }

    // Shedding by time in queue.
    let _ = writeln!(
        md,
        "\n## Shedding by time in queue\n\n\
         The adaptive limit with `set_max_queue_time({} ms)` and `ShedLayer`, open loop (one \
         request started per tick of a fixed-rate interval, latency from the scheduled start) at \
         1×, 2× and 4× R = {rate:.0} req/s, the adaptive limit's median settled rate in phase 1 \
         above; phase 1's query time; each run a fresh process, {} s of offered load before a \
         measured window of {} s; {} rounds, the order rotated by one per round.\n",
        ms(args.max_queue()),
        WARMUP.as_secs(),
        args.overload_time.as_secs(),
        args.rounds,
    );
    let _ = writeln!(
        md,
        "| offered | offered req/s | admitted req/s | p50 200 (ms) | p99 200 (ms) | 503s | p99 \
         503 (ms) | other errors |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut p99s = Vec::new();
    for multiple in MULTIPLES {
        let mine: Vec<&ShedRun> = shed.iter().filter(|r| r.multiple == multiple).collect();
        if mine.is_empty() {
            continue;
        }
        let mut ok: Vec<Duration> = mine.iter().flat_map(|r| ok_latencies(r)).collect();
        ok.sort_unstable();
        let mut rejected: Vec<Duration> = mine
            .iter()
            .flat_map(|r| r.out.done.iter().filter(|d| d.tag == 1).map(|d| d.latency))
            .collect();
        rejected.sort_unstable();
        let get = |key: &str| {
            median(
                &mine
                    .iter()
                    .map(|r| r.out.get(key).unwrap_or(0.0))
                    .collect::<Vec<_>>(),
            )
        };
        let errors: f64 = mine
            .iter()
            .map(|r| r.out.get("errors").unwrap_or(0.0))
            .sum();
        p99s.push(ms(quantile(&ok, 0.99)));
        let _ = writeln!(
            md,
            "| {multiple}×R | {:.0} | {:.0} | {:.1} | {:.1} | {} | {:.1} | {errors:.0} |",
            get("offered"),
            get("admitted"),
            ms(quantile(&ok, 0.5)),
            ms(quantile(&ok, 0.99)),
            rejected.len(),
            ms(quantile(&rejected, 0.99)),
        );
    }
    if let (Some(one), Some(four)) = (p99s.first(), p99s.last()) {
        let ratio = four / one;
        let _ = writeln!(
            md,
            "\nAdmitted p99 at 4×R / at 1×R: {four:.1} / {one:.1} ms = {ratio:.2} (target ≤ \
             2.00): {}.",
            ratio_check(ratio <= 2.0)
        );
    }
    md
}

type Error = Box<dyn std::error::Error>;

/// Two panels against time: the adaptive capacity of every round, and the p99 per 500 ms of the
/// adaptive limit and of the best static cap of each phase (all rounds pooled).
pub(super) fn plot(path: &Path, args: &Args, env: &Environment, runs: &[Run]) -> Result<(), Error> {
    let root = SVGBackend::new(path, (1100, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    let end = (2 * args.phase_time).as_secs_f64();
    title.draw_text(
        &format!(
            "Limit::adaptive({MIN}, {MAX}) from a cold start; query cost ×{PHASE_FACTOR} at {} s; \
             {}",
            args.phase_time.as_secs(),
            env.machine_short()
        ),
        &("sans-serif", 15).into_font().color(&BLACK),
        (20, 12),
    )?;
    let panels = body.split_evenly((2, 1));
    let adaptive: Vec<&Run> = runs
        .iter()
        .filter(|r| r.variant == Variant::Adaptive)
        .collect();
    let top = adaptive
        .iter()
        .flat_map(|r| r.out.samples.iter().map(|s| s.capacity))
        .max()
        .unwrap_or(MAX)
        .max(args.slots) as f64
        * 1.15;
    let mut chart = ChartBuilder::on(&panels[0])
        .caption(
            format!(
                "capacity of the adaptive limit (one line per round; dashed: the resource's {} \
                 slots)",
                args.slots
            ),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..end, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .max_light_lines(0)
        .draw()?;
    let grey = RGBColor(150, 150, 150);
    chart.draw_series(DashedLineSeries::new(
        [(0.0, args.slots as f64), (end, args.slots as f64)],
        6,
        4,
        grey.stroke_width(1),
    ))?;
    for run in &adaptive {
        chart.draw_series(LineSeries::new(
            run.out
                .samples
                .iter()
                .map(|s| (s.at.as_secs_f64(), s.capacity as f64)),
            RED.stroke_width(1),
        ))?;
    }

    let bucket = Duration::from_millis(500);
    let buckets = (2 * args.phase_time).as_millis() / bucket.as_millis();
    let series = |variant: Variant| -> Vec<(f64, f64)> {
        (0..buckets as u32)
            .filter_map(|b| {
                let from = bucket * b;
                let mut latencies: Vec<Duration> = runs
                    .iter()
                    .filter(|r| r.variant == variant)
                    .flat_map(|r| window(&r.out.done, 0, from, from + bucket).latencies)
                    .collect();
                latencies.sort_unstable();
                (!latencies.is_empty()).then(|| {
                    (
                        (from + bucket / 2).as_secs_f64(),
                        ms(quantile(&latencies, 0.99)).max(0.1),
                    )
                })
            })
            .collect()
    };
    let best = |phase: u32| -> Option<Variant> {
        let mut statics: Vec<Variant> = Vec::new();
        for run in runs {
            if run.variant != Variant::Adaptive && !statics.contains(&run.variant) {
                statics.push(run.variant);
            }
        }
        statics.into_iter().max_by(|x, y| {
            let rate = |v: &Variant| {
                median(
                    &runs
                        .iter()
                        .filter(|r| r.variant == *v)
                        .map(|r| settled(args, &r.out, phase).per_second)
                        .collect::<Vec<_>>(),
                )
            };
            rate(x).total_cmp(&rate(y))
        })
    };
    let mut lines = vec![(Variant::Adaptive, RED, "adaptive".to_string())];
    for (phase, color) in [(0, BLUE), (1, GREEN)] {
        if let Some(v) = best(phase)
            && !lines.iter().any(|l| l.0 == v)
        {
            lines.push((
                v,
                color,
                format!("{} (best static, phase {})", v.short(), phase + 1),
            ));
        }
    }
    let all: Vec<(Variant, Vec<(f64, f64)>)> =
        lines.iter().map(|(v, _, _)| (*v, series(*v))).collect();
    let high = all
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.5;
    let low = all
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
        .fold(f64::INFINITY, f64::min)
        .min(high / 2.0)
        * 0.7;
    let mut chart = ChartBuilder::on(&panels[1])
        .caption(
            "p99 latency per 500 ms (ms, log; all rounds pooled)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..end, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .max_light_lines(0)
        .draw()?;
    for ((_, color, label), (_, points)) in lines.iter().zip(&all) {
        let color = *color;
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
