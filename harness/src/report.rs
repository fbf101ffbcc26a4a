//! Checking a history and writing what was found: `results.json` for
//! programs and a self-contained `report.html` for people (inline SVG, no
//! scripts, no server: it opens from the file system).
//!
//! The report shows the verdict of every checker, the anomalies with the
//! history indices that prove them, latency and throughput over time with
//! the nemesis intervals shaded, and a timeline per process around the
//! first anomaly (or the start of the run) with the offending operations
//! outlined in red and listed below it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use crate::check::{self, CheckResult, Verdict};
use crate::history::{History, Op, OpType, Process, F_ADD};
use crate::run::RunInfo;
use crate::workload::Workload;

/// Options for [`check()`].
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// The register's initial value (`None`: absent).
    pub initial: Option<Value>,
    /// Time budget of the linearizability search.
    pub budget: Duration,
    /// Threads of the linearizability search (0: one per core).
    pub threads: usize,
    /// A leaderless run's quorums: its register history is held to what
    /// they promise ([`check::quorum`]) and its linearizability is
    /// measured, not claimed.
    pub quorums: Option<check::quorum::Quorums>,
}

/// The workload a history came from: `or-set` when it has `sadd` or
/// `srem`, `set` when it has adds, `counter`
/// when it has increments, `siblings` when its writes say what they
/// observed, else `register`.
pub fn detect_workload(history: &History) -> Workload {
    let any = |f: &dyn Fn(&Op) -> bool| history.ops.iter().any(f);
    if any(&|op| op.f == check::orset::F_SADD || op.f == check::orset::F_SREM) {
        Workload::OrSet
    } else if any(&|op| op.f == F_ADD) {
        Workload::Set
    } else if any(&|op| op.f == check::counter::F_INCR) {
        Workload::Counter
    } else if any(&|op| op.f == check::siblings::F_DELETE || op.value.get("observed").is_some()) {
        Workload::Siblings
    } else {
        Workload::Register
    }
}

/// Runs the checkers that fit `workload`, then `perf`: `register` is
/// checked for linearizability (with leaderless `quorums`: for fresh
/// quorum reads, linearizability measured only), `session` for the session
/// guarantees, and
/// both are measured for staleness; `set` gets the set-full analysis;
/// `siblings`, `counter` and `or-set` their own checkers and convergence.
pub fn check(history: &History, workload: Workload, options: &CheckOptions) -> Vec<CheckResult> {
    let mut results = Vec::new();
    match workload {
        Workload::Register => {
            let linear = check::linear::check(
                history,
                &check::linear::LinearOptions {
                    initial: options.initial.clone(),
                    budget: options.budget,
                    threads: options.threads,
                },
            );
            match &options.quorums {
                None => results.push(linear),
                Some(quorums) => {
                    results.push(check::quorum::measured(
                        linear,
                        "leaderless quorums are not linearizable under failures",
                    ));
                    results.push(check::quorum::check(history, quorums));
                }
            }
            results.push(check::staleness::check(history));
        }
        Workload::Session => {
            results.push(check::session::check(history));
            results.push(check::staleness::check(history));
        }
        Workload::Set => results.push(check::set::check(history)),
        Workload::Siblings => {
            results.push(check::siblings::check(history));
            results.push(check::convergence::check(history));
        }
        Workload::Counter => {
            results.push(check::counter::check(history));
            results.push(check::convergence::check(history));
        }
        Workload::OrSet => {
            results.push(check::orset::check(history));
            results.push(check::convergence::check(history));
        }
    }
    results.push(check::perf::check(history));
    results
}

/// Writes `results.json` and `report.html` into `dir`.
pub fn write(
    dir: &Path,
    history: &History,
    results: &[CheckResult],
    run: Option<&RunInfo>,
) -> anyhow::Result<()> {
    let verdict = Verdict::combine(results.iter().map(|r| r.verdict));
    let mut json = json!({
        "verdict": verdict,
        "operations": history.ops.len(),
        "config": run.map(|r| &r.config),
        "checkers": results,
    });
    if let Some(run) = run {
        json["nemesis"] = json!({
            "requested": run.config.nemesis,
            "order": run.config.nemesis_order,
            "injected": run.injected,
            "never_injected": run.never_injected,
        });
        json["convergence"] = json!(run.convergence);
    }
    if let Some(cut) = &history.cut {
        json["cut"] = json!(cut.to_string());
    }
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    let title = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "history".into());
    let path = dir.join("report.html");
    std::fs::write(&path, html(&title, history, results, run))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// An interval during which a fault was in force.
#[derive(Clone, Debug, PartialEq)]
struct Band {
    label: String,
    start_ns: u64,
    end_ns: u64,
}

/// The fault intervals, as the perf checker pairs them (each fault closes
/// at the entry that ends it, or at the end of the history).
fn bands(history: &History) -> Vec<Band> {
    let end_of_history = history.ops.iter().map(|op| op.time_ns).max().unwrap_or(0);
    check::perf::fault_intervals(history)
        .into_iter()
        .map(|i| Band {
            label: format!("{} {}", i.start.f, compact(&i.start.value)),
            start_ns: i.start.time_ns,
            end_ns: i.end.map_or(end_of_history, |e| e.time_ns),
        })
        .collect()
}

/// A short rendering of a JSON value for labels.
fn compact(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        other => {
            let text = other.to_string();
            if text.chars().count() > 60 {
                format!("{}…", text.chars().take(60).collect::<String>())
            } else {
                text
            }
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn colour(kind: OpType) -> &'static str {
    match kind {
        OpType::Ok => "#2e7d32",
        OpType::Fail => "#ef6c00",
        OpType::Info => "#c62828",
        OpType::Invoke => "#757575",
    }
}

/// One client operation as drawn.
struct Drawn<'a> {
    invoke: &'a Op,
    complete: Option<&'a Op>,
    end_ns: u64,
    kind: OpType,
}

fn drawn(history: &History) -> Vec<Drawn<'_>> {
    let end = history.ops.last().map_or(0, |op| op.time_ns);
    history
        .pairs()
        .into_iter()
        .map(|p| Drawn {
            invoke: p.invoke,
            complete: p.complete,
            end_ns: p.complete.map_or(end, |c| c.time_ns),
            kind: p.outcome(),
        })
        .collect()
}

fn describe(d: &Drawn<'_>) -> String {
    let c = d.complete;
    format!(
        "process {} #{}{}: {} {}{} → {} {}{}{}",
        d.invoke.process,
        d.invoke.index,
        c.map(|c| format!("–{}", c.index)).unwrap_or_default(),
        d.invoke.f,
        d.invoke
            .key
            .as_deref()
            .map(|k| format!("{k} "))
            .unwrap_or_default(),
        d.invoke.value,
        match d.kind {
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
            OpType::Invoke => "?",
        },
        c.map(|c| c.value.to_string()).unwrap_or_default(),
        c.and_then(|c| c.node.as_deref())
            .map(|n| format!(" on {n}"))
            .unwrap_or_default(),
        c.and_then(|c| c.error.as_deref())
            .map(|e| format!(" ({e})"))
            .unwrap_or_default(),
    )
}

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 60.0;

/// Shaded fault bands over a plot area.
fn band_rects(bands: &[Band], x: &dyn Fn(u64) -> f64, top: f64, height: f64) -> String {
    let mut svg = String::new();
    for (i, band) in bands.iter().enumerate() {
        let (x0, x1) = (x(band.start_ns), x(band.end_ns));
        let _ = write!(
            svg,
            r##"<rect x="{x0:.1}" y="{top}" width="{w:.1}" height="{height}" fill="{fill}" opacity="0.35"><title>{label}</title></rect><text x="{tx:.1}" y="{ty}" font-size="10" fill="#555">{short}</text>"##,
            w = (x1 - x0).max(1.0),
            fill = if i % 2 == 0 { "#90a4ae" } else { "#b0bec5" },
            label = escape(&band.label),
            tx = x0 + 2.0,
            ty = top + 10.0 + (i % 3) as f64 * 10.0,
            short = escape(band.label.split(' ').next().unwrap_or("")),
        );
    }
    svg
}

/// Time buckets of the latency plot: its quantile lines have at most this
/// many points, however long the run.
const LATENCY_BUCKETS: usize = 300;
/// Failed operations drawn one by one up to this many; past it, per bucket.
const INDIVIDUAL_FAILS: usize = 2_000;
/// Bytes of a checker's details shown in the page; the rest is in
/// `results.json`.
const DETAILS_BYTES: usize = 64 * 1024;

/// Latency over time: per time bucket, the p50, p99 and maximum of the `ok`
/// operations' latencies as lines (a 10-minute run draws as few points as a
/// 10-second one); every failed and unknown operation, and every operation
/// an anomaly names, drawn one by one over them.
fn latency_plot(
    ops: &[Drawn<'_>],
    bands: &[Band],
    total_ns: u64,
    marked: &BTreeSet<u64>,
) -> String {
    let height = 260.0;
    let plot_h = height - 40.0;
    let completed: Vec<&Drawn<'_>> = ops.iter().filter(|d| d.complete.is_some()).collect();
    if completed.is_empty() {
        return "<p>No completed operations.</p>".into();
    }
    let latency_ms = |d: &Drawn<'_>| (d.end_ns - d.invoke.time_ns) as f64 / 1e6;
    let max_ms = completed
        .iter()
        .map(|d| latency_ms(d))
        .fold(1.0_f64, f64::max);
    // Logarithmic latency axis from 0.01 ms to the maximum.
    let (lo, hi) = (0.01_f64.log10(), max_ms.max(0.1).log10());
    let y = |ms: f64| 10.0 + plot_h - (ms.max(0.01).log10() - lo) / (hi - lo) * plot_h;
    let x = |ns: u64| LEFT + ns as f64 / total_ns.max(1) as f64 * (WIDTH - LEFT - 10.0);
    let mut svg = format!(
        r##"<svg width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">"##
    );
    svg += &band_rects(bands, &x, 10.0, plot_h);
    let mut decade = 10f64.powf(lo.ceil());
    while decade <= 10f64.powf(hi) {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{WIDTH}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e0e0e0"/><text x="4" y="{ty:.1}" font-size="10">{decade} ms</text>"##,
            yy = y(decade),
            ty = y(decade) + 3.0,
        );
        decade *= 10.0;
    }
    // The ok operations, binned by invocation time.
    let bucket_ns = total_ns / LATENCY_BUCKETS as u64 + 1;
    let mut buckets: Vec<Vec<f64>> = vec![Vec::new(); LATENCY_BUCKETS];
    for d in completed.iter().filter(|d| d.kind == OpType::Ok) {
        buckets[((d.invoke.time_ns / bucket_ns) as usize).min(LATENCY_BUCKETS - 1)]
            .push(latency_ms(d));
    }
    // Failed operations one by one while they are few; past that, per
    // bucket, a bar from the fastest to the slowest (a cluster without a
    // leader fails thousands of requests a second, fast).
    let fails = completed.iter().filter(|d| d.kind == OpType::Fail).count();
    let bin_fails = fails > INDIVIDUAL_FAILS;
    if bin_fails {
        let mut ranges: Vec<Option<(f64, f64, usize)>> = vec![None; LATENCY_BUCKETS];
        for d in completed.iter().filter(|d| d.kind == OpType::Fail) {
            let ms = latency_ms(d);
            let slot =
                &mut ranges[((d.invoke.time_ns / bucket_ns) as usize).min(LATENCY_BUCKETS - 1)];
            let (lo, hi, n) = slot.get_or_insert((ms, ms, 0));
            *lo = lo.min(ms);
            *hi = hi.max(ms);
            *n += 1;
        }
        for (i, range) in ranges.iter().enumerate() {
            let Some((lo, hi, n)) = range else { continue };
            let cx = x(i as u64 * bucket_ns + bucket_ns / 2);
            let _ = write!(
                svg,
                r##"<line x1="{cx:.1}" x2="{cx:.1}" y1="{y1:.1}" y2="{y2:.1}" stroke="{c}" stroke-width="2" stroke-opacity="0.45"><title>{n} failed operations, {lo:.3} to {hi:.3} ms</title></line>"##,
                y1 = y(*lo) + 1.5,
                y2 = y(*hi) - 1.5,
                c = colour(OpType::Fail),
            );
        }
    }
    let mut lines: [Vec<String>; 3] = Default::default();
    for (i, bucket) in buckets.iter_mut().enumerate() {
        if bucket.is_empty() {
            continue;
        }
        bucket.sort_by(f64::total_cmp);
        let rank =
            |q: f64| bucket[((q * bucket.len() as f64).ceil() as usize).clamp(1, bucket.len()) - 1];
        let cx = x(i as u64 * bucket_ns + bucket_ns / 2);
        for (line, ms) in lines
            .iter_mut()
            .zip([rank(0.5), rank(0.99), bucket[bucket.len() - 1]])
        {
            line.push(format!("{cx:.1},{:.1}", y(ms)));
        }
    }
    for (line, (colour, label)) in
        lines
            .iter()
            .zip([("#2e7d32", "p50"), ("#1565c0", "p99"), ("#8d6e63", "max")])
    {
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"><title>ok latency {label} per {b:.2} s</title></polyline>"##,
            line.join(" "),
            b = bucket_ns as f64 / 1e9,
        );
    }
    // Unknown ones (each ends its process, so they stay few), failed ones
    // while few, and every one an anomaly names: one by one.
    for d in &completed {
        let is_marked = marked.contains(&d.invoke.index);
        let single = match d.kind {
            OpType::Info => true,
            OpType::Fail => !bin_fails,
            _ => false,
        };
        if !single && !is_marked {
            continue;
        }
        let ms = latency_ms(d);
        let _ = write!(
            svg,
            r##"<circle cx="{cx:.1}" cy="{cy:.1}" r="{r}" fill="{c}"{stroke}><title>{t} ({ms:.3} ms)</title></circle>"##,
            cx = x(d.invoke.time_ns),
            cy = y(ms),
            r = if is_marked { 4 } else { 2 },
            c = colour(d.kind),
            stroke = if is_marked {
                r##" stroke="#000" stroke-width="1.5""##
            } else {
                ""
            },
            t = escape(&describe(d)),
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{ty}" font-size="11">time (s) → {secs:.1} s; latency on a log scale; ok operations per {b:.2} s: p50 green, p99 blue, max brown; {fails}; each info red; each named by an anomaly outlined</text></svg>"##,
        ty = height - 8.0,
        secs = total_ns as f64 / 1e9,
        b = bucket_ns as f64 / 1e9,
        fails = if bin_fails {
            "failed ones per bucket as orange bars, fastest to slowest"
        } else {
            "each fail orange"
        },
    );
    svg
}

fn throughput_plot(ops: &[Drawn<'_>], bands: &[Band], total_ns: u64) -> String {
    let height = 200.0;
    let plot_h = height - 40.0;
    let buckets = ((total_ns / 1_000_000_000) as usize + 1).min(600);
    let bucket_ns = total_ns / buckets as u64 + 1;
    let mut counts: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for d in ops.iter().filter(|d| d.complete.is_some()) {
        let name = match d.kind {
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            _ => "info",
        };
        counts.entry(name).or_insert_with(|| vec![0; buckets])
            [(d.end_ns / bucket_ns) as usize % buckets] += 1;
    }
    let max = counts
        .values()
        .flat_map(|v| v.iter())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |ns: u64| LEFT + ns as f64 / total_ns.max(1) as f64 * (WIDTH - LEFT - 10.0);
    let y = |count: f64| 10.0 + plot_h - count / max * plot_h;
    let per_sec = 1e9 / bucket_ns as f64;
    let mut svg = format!(
        r##"<svg width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">"##
    );
    svg += &band_rects(bands, &x, 10.0, plot_h);
    let _ = write!(
        svg,
        r##"<text x="4" y="16" font-size="10">{top:.0}/s</text><text x="4" y="{bottom}" font-size="10">0</text>"##,
        top = max * per_sec,
        bottom = 10.0 + plot_h,
    );
    for (name, series) in &counts {
        let kind = match *name {
            "ok" => OpType::Ok,
            "fail" => OpType::Fail,
            _ => OpType::Info,
        };
        let points: Vec<String> = series
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                format!(
                    "{:.1},{:.1}",
                    x(i as u64 * bucket_ns + bucket_ns / 2),
                    y(c as f64)
                )
            })
            .collect();
        let _ = write!(
            svg,
            r##"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"##,
            colour(kind),
            points.join(" ")
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{ty}" font-size="11">completions per second by outcome (buckets of {b:.2} s)</text></svg>"##,
        ty = height - 8.0,
        b = bucket_ns as f64 / 1e9,
    );
    svg
}

/// At most this many operations in the timeline.
const TIMELINE_OPS: usize = 400;

fn timeline(ops: &[Drawn<'_>], bands: &[Band], marked: &BTreeSet<u64>) -> (String, String) {
    if ops.is_empty() {
        return ("<p>No client operations.</p>".into(), String::new());
    }
    // A window of operations around the first marked one, or from the start.
    let centre = ops
        .iter()
        .position(|d| marked.contains(&d.invoke.index))
        .unwrap_or(0);
    let from = centre.saturating_sub(TIMELINE_OPS / 2);
    let window = &ops[from..(from + TIMELINE_OPS).min(ops.len())];
    let t0 = window.iter().map(|d| d.invoke.time_ns).min().unwrap_or(0);
    let t1 = window
        .iter()
        .map(|d| d.end_ns)
        .max()
        .unwrap_or(t0 + 1)
        .max(t0 + 1);
    let processes: BTreeSet<Process> = window.iter().map(|d| d.invoke.process).collect();
    let lane: BTreeMap<Process, usize> =
        processes.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let lane_h = 18.0;
    let height = 30.0 + lane_h * lane.len() as f64;
    let x =
        |ns: u64| LEFT + (ns.clamp(t0, t1) - t0) as f64 / (t1 - t0) as f64 * (WIDTH - LEFT - 10.0);
    let mut svg = format!(
        r##"<svg width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">"##
    );
    let visible: Vec<Band> = bands
        .iter()
        .filter(|b| b.end_ns >= t0 && b.start_ns <= t1)
        .cloned()
        .collect();
    svg += &band_rects(&visible, &x, 0.0, height - 20.0);
    for (p, i) in &lane {
        let _ = write!(
            svg,
            r##"<text x="4" y="{ty:.1}" font-size="10">p{p}</text>"##,
            ty = 12.0 + *i as f64 * lane_h + lane_h / 2.0,
        );
    }
    for d in window {
        let row = lane[&d.invoke.process];
        let is_marked = marked.contains(&d.invoke.index);
        let (x0, x1) = (x(d.invoke.time_ns), x(d.end_ns));
        let label = match (&d.invoke.key, d.complete) {
            (_, Some(c)) if d.invoke.f == "read" => format!("r {}", c.value),
            _ => format!("{} {}", &d.invoke.f[..1], d.invoke.value),
        };
        let _ = write!(
            svg,
            r##"<g><rect x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="{h}" rx="2" fill="{c}" fill-opacity="0.6" stroke="{s}" stroke-width="{sw}"/><text x="{tx:.1}" y="{ty:.1}" font-size="9">{label}</text><title>{t}</title></g>"##,
            y = 4.0 + row as f64 * lane_h,
            w = (x1 - x0).max(2.0),
            h = lane_h - 4.0,
            c = colour(d.kind),
            s = if is_marked { "#d50000" } else { "none" },
            sw = if is_marked { 3 } else { 0 },
            tx = x0 + 2.0,
            ty = 4.0 + row as f64 * lane_h + 11.0,
            label = escape(&label),
            t = escape(&describe(d)),
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{ty}" font-size="11">operations {a}–{b} of {n} ({t0:.3} s to {t1:.3} s); hover for details</text></svg>"##,
        ty = height - 6.0,
        a = window[0].invoke.index,
        b = window[window.len() - 1].invoke.index,
        n = ops.len(),
        t0 = t0 as f64 / 1e9,
        t1 = t1 as f64 / 1e9,
    );
    let mut table = String::new();
    let listed: Vec<&Drawn<'_>> = ops
        .iter()
        .filter(|d| marked.contains(&d.invoke.index))
        .take(200)
        .collect();
    if !listed.is_empty() {
        table += "<table><tr><th>operation</th></tr>";
        for d in listed {
            let _ = write!(
                table,
                "<tr><td><code>{}</code></td></tr>",
                escape(&describe(d))
            );
        }
        table += "</table>";
    }
    (svg, table)
}

/// The whole report page.
fn html(title: &str, history: &History, results: &[CheckResult], run: Option<&RunInfo>) -> String {
    let verdict = Verdict::combine(results.iter().map(|r| r.verdict));
    let ops = drawn(history);
    let bands = bands(history);
    let total_ns = history.ops.last().map_or(1, |op| op.time_ns).max(1);
    // Operations to outline: every index an anomaly names, mapped to the
    // invocation of its operation.
    let mut invocation_of: BTreeMap<u64, u64> = BTreeMap::new();
    for d in &ops {
        invocation_of.insert(d.invoke.index, d.invoke.index);
        if let Some(c) = d.complete {
            invocation_of.insert(c.index, d.invoke.index);
        }
    }
    let marked: BTreeSet<u64> = results
        .iter()
        .filter(|r| r.verdict != Verdict::Valid)
        .flat_map(|r| r.anomalies.iter().flat_map(|a| a.indices.iter()))
        .filter_map(|i| invocation_of.get(i).copied())
        .collect();

    let mut page = String::new();
    let _ = write!(
        page,
        r##"<!doctype html><html><head><meta charset="utf-8"><title>{t} — mimeo-harness</title>
<style>body{{font-family:sans-serif;margin:24px;color:#212121}} h1{{font-size:22px}} h2{{font-size:17px;margin-top:28px}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}}
.valid{{background:#c8e6c9}} .invalid{{background:#ffcdd2}} .unknown{{background:#fff9c4}} .badge{{padding:2px 10px;border-radius:4px;font-weight:bold}}
code{{font-size:12px}} details{{margin:6px 0}}</style></head><body>
<h1>{t} <span class="badge {v}">{v}</span></h1>
<p>{n} history entries, {c} client operations, {f} nemesis events.</p>"##,
        t = escape(title),
        v = verdict,
        n = history.ops.len(),
        c = ops.len(),
        f = history.nemesis().count(),
    );
    if let Some(cut) = &history.cut {
        let _ = write!(
            page,
            "<p class=\"unknown\">{}</p>",
            escape(&cut.to_string())
        );
    }
    if let Some(run) = run {
        page += "<p>";
        if let Some(seed) = run.config.seed {
            let _ = write!(
                page,
                "Seed {seed} (replay with <code>--seed {seed}</code>)."
            );
        }
        if !run.config.nemesis.is_empty() {
            let injected: Vec<String> = run
                .injected
                .iter()
                .map(|(f, n)| format!("{} ×{n}", f.name()))
                .collect();
            let _ = write!(
                page,
                " Faults injected: {}.",
                if injected.is_empty() {
                    "none".to_owned()
                } else {
                    injected.join(", ")
                }
            );
            if !run.never_injected.is_empty() {
                let names: Vec<&str> = run.never_injected.iter().map(|f| f.name()).collect();
                let _ = write!(
                    page,
                    " <span class=\"unknown\">Never injected: {} (the time limit was too \
                     short); nothing is said about them.</span>",
                    escape(&names.join(", "))
                );
            }
        }
        page += "</p>";
        if let Some(q) = run.config.leaderless_quorums() {
            let _ = write!(
                page,
                "<p>Leaderless, {}{}: {}</p>",
                escape(&q.describe()),
                run.config
                    .conflicts
                    .as_deref()
                    .map_or(String::new(), |c| format!(", conflicts {}", escape(c))),
                if q.overlap() {
                    "a read that begins after a write was acknowledged must return it or a \
                     later one (checked: quorum-reads); linearizability is measured, not claimed"
                } else {
                    "W + R <= N: stale reads are measured, nothing is claimed of them"
                },
            );
        }
        if let Some(c) = &run.convergence {
            let converged = c["converged"].as_bool() == Some(true);
            let _ = write!(
                page,
                "<p class=\"{}\">After the heal: replicas {} after {} ms{}.</p>",
                if converged { "valid" } else { "invalid" },
                if converged {
                    "agreed"
                } else {
                    "still differed"
                },
                c["waited_ms"],
                c["rounds"]
                    .as_u64()
                    .map_or(String::new(), |r| format!(" ({r} round(s) of final reads)")),
            );
        }
        let _ = write!(
            page,
            "<details><summary>configuration</summary><pre>{}</pre></details>",
            escape(&serde_json::to_string_pretty(&run.config).unwrap_or_default())
        );
    }
    page += "<h2>Checkers</h2><table><tr><th>checker</th><th>verdict</th><th>summary</th></tr>";
    for r in results {
        let _ = write!(
            page,
            r#"<tr><td>{}</td><td class="{v}">{v}</td><td>{}</td></tr>"#,
            escape(&r.checker),
            escape(&r.summary),
            v = r.verdict,
        );
    }
    page += "</table>";
    let anomalies: Vec<_> = results
        .iter()
        .flat_map(|r| r.anomalies.iter().map(move |a| (r, a)))
        .collect();
    if !anomalies.is_empty() {
        page += "<h2>Anomalies</h2><table><tr><th>checker</th><th>kind</th><th>what</th><th>history indices</th></tr>";
        for (r, a) in anomalies.iter().take(500) {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.checker),
                escape(&a.kind),
                escape(&a.message),
                escape(&format!("{:?}", a.indices)),
            );
        }
        if anomalies.len() > 500 {
            let _ = write!(
                page,
                "<tr><td colspan=4>… and {} more in results.json</td></tr>",
                anomalies.len() - 500
            );
        }
        page += "</table>";
    }
    page += "<h2>Latency over time</h2>";
    page += &latency_plot(&ops, &bands, total_ns, &marked);
    page += "<h2>Throughput over time</h2>";
    page += &throughput_plot(&ops, &bands, total_ns);
    let (timeline_svg, table) = timeline(&ops, &bands, &marked);
    page += if marked.is_empty() {
        "<h2>Timeline (start of the run)</h2>"
    } else {
        "<h2>Timeline around the first anomaly (outlined in red)</h2>"
    };
    page += &timeline_svg;
    if !table.is_empty() {
        page += "<h2>Operations named by the anomalies</h2>";
        page += &table;
    }
    if !bands.is_empty() {
        page += "<h2>Faults</h2><table><tr><th>from (s)</th><th>to (s)</th><th>fault</th></tr>";
        for b in &bands {
            let _ = write!(
                page,
                "<tr><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
                b.start_ns as f64 / 1e9,
                b.end_ns as f64 / 1e9,
                escape(&b.label)
            );
        }
        page += "</table>";
    }
    for r in results {
        let mut json = serde_json::to_string_pretty(&r.details).unwrap_or_default();
        if json.len() > DETAILS_BYTES {
            let cut = (0..=DETAILS_BYTES)
                .rev()
                .find(|&i| json.is_char_boundary(i))
                .unwrap_or(0);
            let total = json.len();
            json.truncate(cut);
            json.push_str(&format!("\n… {} more bytes in results.json", total - cut));
        }
        let _ = write!(
            page,
            "<details><summary>{} details (JSON)</summary><pre>{}</pre></details>",
            escape(&r.checker),
            escape(&json)
        );
    }
    page += "</body></html>\n";
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Anomaly;

    fn op(index: u64, time_ns: u64, process: Process, kind: OpType, f: &str, value: Value) -> Op {
        Op {
            index,
            time_ns,
            process,
            kind,
            f: f.into(),
            key: Some("k".into()),
            value,
            node: None,
            error: None,
        }
    }

    fn sample() -> History {
        History::new(vec![
            op(0, 0, Process::Client(0), OpType::Invoke, "write", json!(1)),
            op(
                1,
                10,
                Process::Nemesis,
                OpType::Info,
                "pause",
                json!(["n1"]),
            ),
            op(2, 20, Process::Client(0), OpType::Ok, "write", json!(1)),
            op(
                3,
                30,
                Process::Client(1),
                OpType::Invoke,
                "read",
                Value::Null,
            ),
            op(
                4,
                40,
                Process::Nemesis,
                OpType::Info,
                "resume",
                json!(["n1"]),
            ),
            op(5, 50, Process::Client(1), OpType::Ok, "read", json!(2)),
        ])
    }

    #[test]
    fn fault_bands_pair_starts_with_ends() {
        let bands = bands(&sample());
        assert_eq!(
            bands,
            vec![Band {
                label: "pause n1".into(),
                start_ns: 10,
                end_ns: 40
            }]
        );
    }

    #[test]
    fn the_page_names_the_verdict_and_outlines_the_anomaly() {
        let history = sample();
        let result = CheckResult {
            checker: "linearizable".into(),
            verdict: Verdict::Invalid,
            summary: "key k <not> linearizable".into(),
            anomalies: vec![Anomaly {
                kind: "not-linearizable".into(),
                message: "read 2".into(),
                indices: vec![3, 5],
            }],
            details: Value::Null,
        };
        let page = html("t", &history, &[result], None);
        assert!(page.contains(r#"class="badge invalid""#));
        assert!(page.contains("key k &lt;not&gt; linearizable"), "escaped");
        assert!(
            page.contains(r##"stroke="#d50000""##),
            "anomalous op outlined"
        );
        assert!(page.contains("pause n1"));
        assert_eq!(page.matches("<svg").count(), 3);
    }

    #[test]
    fn measurements_do_not_turn_a_valid_history_unknown() {
        // Writes only: linearizable, and nothing for the staleness or perf
        // measurements to measure beyond the writes.
        let writes = History::new(vec![
            op(0, 0, Process::Client(0), OpType::Invoke, "write", json!(1)),
            op(1, 20, Process::Client(0), OpType::Ok, "write", json!(1)),
        ]);
        let options = CheckOptions {
            initial: None,
            budget: Duration::from_secs(5),
            threads: 1,
            quorums: None,
        };
        let results = check(&writes, Workload::Register, &options);
        assert_eq!(
            Verdict::combine(results.iter().map(|r| r.verdict)),
            Verdict::Valid,
            "{results:#?}"
        );
        // No client operation at all: no checker may call it invalid or
        // unknown on the measurements' account.
        let empty = History::default();
        let results = check(&empty, Workload::Register, &options);
        let measured: Vec<_> = results
            .iter()
            .filter(|r| r.checker != "linearizable")
            .collect();
        assert!(
            measured.iter().all(|r| r.verdict == Verdict::Valid),
            "{measured:#?}"
        );
    }

    #[test]
    fn workloads_are_recognised_from_content() {
        assert_eq!(detect_workload(&sample()), Workload::Register);
        let mut set = sample();
        set.ops[0].f = F_ADD.into();
        set.ops[2].f = F_ADD.into();
        assert_eq!(detect_workload(&set), Workload::Set);
    }
}
