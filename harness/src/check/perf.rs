//! The perf checker: latency percentiles, outcome counts and throughput
//! over time, and the intervals during which faults were in force.
//!
//! It is informational, and a measurement never votes: the verdict is
//! always valid, and a history without a client operation says "nothing to
//! measure". (Whether a run that served nothing is a failure is the
//! runner's call, not a checker's: see [`run`](crate::run).)
//!
//! - **Latency** (completion time minus invocation time, in ms) of `ok`
//!   operations, overall and per `f`: p50, p90, p99, p99.9 and max, by the
//!   nearest-rank method (the smallest latency with at least that share of
//!   operations at or below it).
//! - **Counts** of `ok`, `fail` and `info` per `f` (an invocation the
//!   history never completes counts as `info`).
//! - **Throughput**: completions per 1-second bucket of completion time,
//!   split into `ok`, `fail` and `info`.
//! - **Availability**: of the operations invoked while a fault was in
//!   force, and of the others, how many were served (`ok`, or a `cas`
//!   answered with a mismatch: the system answered), their latency
//!   p50/p99 and served operations per second of that time; and the longest
//!   gap without a successful update (any `ok` that is not a `read`)
//!   between the first invocation and the last update's, with the faults
//!   it overlapped.
//! - **Nemesis intervals**: a fault operation opens an interval; the
//!   operation that undoes it closes it: `start` after `kill` or
//!   `power-loss`, `resume` after `pause`, `clock-reset` (or Jepsen's
//!   `reset-clock`) after a clock fault, `stop-X` after `start-X`, and
//!   `heal` (or Jepsen's `stop`) after anything. Jepsen's classic nemeses
//!   use `start`/`stop` for one fault: when a history has `stop` and no
//!   kill is open, `start` opens an interval. A fault repeated while its
//!   interval is open (Jepsen logs a nemesis operation twice, before and
//!   after) does not open another. An interval still open at the end lasts
//!   to the last entry and is marked `"healed": false`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::check::{CheckResult, Verdict};
use crate::history::{History, Op, OpType};

const NS_PER_MS: f64 = 1e6;
const BUCKET_NS: u64 = 1_000_000_000;
/// At most this many throughput buckets: a longer history gets wider ones.
const MAX_BUCKETS: u64 = 100_000;

/// Measures a history (see the module docs).
pub fn check(history: &History) -> CheckResult {
    let pairs = history.pairs();
    let mut all = Vec::new();
    let mut by_f: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut counts: BTreeMap<&str, [u64; 3]> = BTreeMap::new();
    // Imported histories may have absolute or unordered times.
    let first_ns = history.ops.iter().map(|op| op.time_ns).min().unwrap_or(0);
    let last_ns = history.ops.iter().map(|op| op.time_ns).max().unwrap_or(0);
    let span = last_ns - first_ns;
    let bucket_ns = BUCKET_NS * (span / (BUCKET_NS * MAX_BUCKETS) + 1);
    let buckets = (span / bucket_ns + 1) as usize;
    let mut throughput = [
        vec![0u64; buckets],
        vec![0u64; buckets],
        vec![0u64; buckets],
    ];
    for pair in &pairs {
        let f = pair.invoke.f.as_str();
        let slot = match pair.outcome() {
            OpType::Ok => 0,
            OpType::Fail => 1,
            OpType::Info | OpType::Invoke => 2,
        };
        counts.entry(f).or_default()[slot] += 1;
        let Some(complete) = pair.complete else {
            continue;
        };
        throughput[slot][((complete.time_ns - first_ns) / bucket_ns) as usize] += 1;
        if slot == 0 {
            let latency = complete.time_ns.saturating_sub(pair.invoke.time_ns);
            all.push(latency);
            by_f.entry(f).or_default().push(latency);
        }
    }

    let totals = counts.values().fold([0u64; 3], |acc, c| {
        [acc[0] + c[0], acc[1] + c[1], acc[2] + c[2]]
    });
    let overall = percentiles(&mut all);
    let latency_by_f: serde_json::Map<String, Value> = by_f
        .iter_mut()
        .map(|(f, l)| ((*f).to_owned(), percentiles(l)))
        .collect();
    let counts_json: serde_json::Map<String, Value> = counts
        .iter()
        .map(|(f, c)| {
            (
                (*f).to_owned(),
                json!({"ok": c[0], "fail": c[1], "info": c[2]}),
            )
        })
        .collect();
    let intervals = nemesis_intervals(history);
    let availability = availability(history, &pairs);

    let (verdict, summary) = if pairs.is_empty() {
        (
            Verdict::Valid,
            "no client operations: nothing to measure".to_owned(),
        )
    } else {
        let ms = |key: &str| overall.get(key).and_then(Value::as_f64).unwrap_or(0.0);
        let latency = if all.is_empty() {
            "no ok operations".to_owned()
        } else {
            format!(
                "latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                ms("p50"),
                ms("p99"),
                ms("max")
            )
        };
        (
            Verdict::Valid,
            format!(
                "{} operations: {} ok, {} fail, {} info; {latency}; {} nemesis intervals",
                pairs.len(),
                totals[0],
                totals[1],
                totals[2],
                intervals.len()
            ),
        )
    };
    let [ok, fail, info] = throughput;
    CheckResult {
        checker: "perf".into(),
        verdict,
        summary,
        anomalies: Vec::new(),
        details: json!({
            "latency_ms": { "overall": overall, "by_f": latency_by_f },
            "counts": { "total": {"ok": totals[0], "fail": totals[1], "info": totals[2]}, "by_f": counts_json },
            "throughput": {
                "start_ns": first_ns,
                "bucket_s": bucket_ns / BUCKET_NS,
                "note": "completions per bucket; entry i covers [start + i buckets, start + (i+1) buckets)",
                "ok": ok,
                "fail": fail,
                "info": info,
            },
            "nemesis": intervals,
            "availability": availability,
        }),
    }
}

/// The availability figures (see the module docs).
fn availability(history: &History, pairs: &[crate::history::Completed<'_>]) -> Value {
    let last_ns = history.ops.iter().map(|op| op.time_ns).max().unwrap_or(0);
    let faults: Vec<(u64, u64, &str)> = fault_intervals(history)
        .iter()
        .map(|i| {
            (
                i.start.time_ns,
                i.end.map_or(last_ns, |e| e.time_ns),
                i.start.f.as_str(),
            )
        })
        .collect();
    let in_fault = |t: u64| faults.iter().any(|&(a, b, _)| (a..b).contains(&t));
    // [operations, ok, latencies of the ok ones] during and outside faults.
    let mut sides: [(u64, u64, Vec<u64>); 2] = Default::default();
    for pair in pairs {
        let side = &mut sides[usize::from(!in_fault(pair.invoke.time_ns))];
        side.0 += 1;
        // Served: it took effect, or (a cas that found another value) was
        // answered definitely.
        if let Some(c) = pair
            .complete
            .filter(|c| c.kind == OpType::Ok || c.is_cas_mismatch())
        {
            side.1 += 1;
            side.2.push(c.time_ns.saturating_sub(pair.invoke.time_ns));
        }
    }
    let first_ns = pairs.iter().map(|p| p.invoke.time_ns).min().unwrap_or(0);
    let end_ns = pairs
        .iter()
        .filter(|p| p.invoke.f != "read")
        .map(|p| p.invoke.time_ns)
        .max()
        .unwrap_or(first_ns)
        .max(first_ns);
    // Merged fault time within the workload window, for throughput.
    let mut spans: Vec<(u64, u64)> = faults
        .iter()
        .map(|&(a, b, _)| (a.max(first_ns), b.min(end_ns)))
        .filter(|(a, b)| a < b)
        .collect();
    spans.sort_unstable();
    let mut fault_ns = 0;
    let mut reach = 0;
    for (a, b) in spans {
        let a = a.max(reach);
        if b > a {
            fault_ns += b - a;
            reach = b;
        }
    }
    let window_ns = end_ns - first_ns;
    let side_json = |(ops, ok, latencies): &mut (u64, u64, Vec<u64>), seconds: f64| {
        let latency = percentiles(latencies);
        json!({
            "operations": ops,
            "served": ok,
            "served_fraction": if *ops == 0 { Value::Null } else { json!(*ok as f64 / *ops as f64) },
            "latency_ms": { "p50": latency.get("p50"), "p99": latency.get("p99") },
            "served_per_s": if seconds > 0.0 { json!(*ok as f64 / seconds) } else { Value::Null },
            "seconds": seconds,
        })
    };
    let [during, outside] = &mut sides;
    let during = side_json(during, fault_ns as f64 / 1e9);
    let outside = side_json(outside, (window_ns - fault_ns) as f64 / 1e9);
    // The longest gap without a successful update.
    let mut oks: Vec<u64> = pairs
        .iter()
        .filter(|p| p.invoke.f != "read")
        .filter_map(|p| p.complete.filter(|c| c.kind == OpType::Ok))
        .map(|c| c.time_ns)
        .filter(|&t| t <= end_ns)
        .collect();
    oks.sort_unstable();
    let mut gap = (0u64, first_ns, first_ns);
    let mut prev = first_ns;
    for t in oks.into_iter().chain([end_ns]) {
        if t.saturating_sub(prev) > gap.0 {
            gap = (t - prev, prev, t);
        }
        prev = prev.max(t);
    }
    let overlapped: Vec<&str> = faults
        .iter()
        .filter(|&&(a, b, _)| a < gap.2 && gap.1 < b)
        .map(|&(_, _, f)| f)
        .collect();
    json!({
        "during_faults": during,
        "outside_faults": outside,
        "longest_update_gap": {
            "ms": gap.0 as f64 / NS_PER_MS,
            "from_ns": gap.1,
            "to_ns": gap.2,
            "faults": overlapped,
        },
    })
}

/// Nearest-rank percentiles of latencies in ns, reported in ms.
fn percentiles(latencies: &mut [u64]) -> Value {
    if latencies.is_empty() {
        return json!({ "count": 0 });
    }
    latencies.sort_unstable();
    let n = latencies.len();
    let at = |q: f64| {
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        latencies[rank - 1] as f64 / NS_PER_MS
    };
    json!({
        "count": n,
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "p99.9": at(0.999),
        "max": latencies[n - 1] as f64 / NS_PER_MS,
    })
}

/// True when nemesis operation `f` ends faults (rather than starting
/// one); `classic` when Jepsen's `start` opens a fault.
fn is_end(f: &str, classic: bool) -> bool {
    matches!(
        f,
        "heal" | "stop" | "resume" | "clock-reset" | "reset-clock"
    ) || (f == "start" && !classic)
        || f.starts_with("stop-")
}

/// True when end operation `end` closes an open `fault`.
fn closes(end: &str, fault: &str) -> bool {
    match end {
        "heal" | "stop" => true,
        "start" => fault == "kill" || fault == "power-loss",
        "resume" => fault == "pause",
        "clock-reset" | "reset-clock" => fault.contains("clock"),
        _ => end
            .strip_prefix("stop-")
            .is_some_and(|f| fault == f || fault.strip_prefix("start-") == Some(f)),
    }
}

/// A fault in force: the nemesis entry that started it and the one that
/// ended it (`None`: never ended in this history).
pub(crate) struct Interval<'a> {
    pub(crate) start: &'a Op,
    pub(crate) end: Option<&'a Op>,
}

/// The fault intervals, in order of their start (see the module docs).
/// The report shades the same intervals.
pub(crate) fn fault_intervals(history: &History) -> Vec<Interval<'_>> {
    let classic = history.nemesis().any(|op| op.f == "stop");
    let mut open: Vec<Interval<'_>> = Vec::new();
    let mut done: Vec<Interval<'_>> = Vec::new();
    for op in history.nemesis() {
        // `start` ends a kill when one is open, else (classic) opens one.
        let kill_open = open.iter().any(|i| closes("start", &i.start.f));
        if is_end(&op.f, classic && !(op.f == "start" && kill_open)) {
            let (closed, still): (Vec<_>, Vec<_>) =
                open.drain(..).partition(|i| closes(&op.f, &i.start.f));
            open = still;
            done.extend(closed.into_iter().map(|i| Interval { end: Some(op), ..i }));
        } else if !open.iter().any(|i| i.start.f == op.f) {
            open.push(Interval {
                start: op,
                end: None,
            });
        }
    }
    done.extend(open);
    done.sort_by_key(|i| i.start.index);
    done
}

/// The fault intervals as `details` lists them.
fn nemesis_intervals(history: &History) -> Vec<Value> {
    let last_ns = history.ops.iter().map(|op| op.time_ns).max().unwrap_or(0);
    fault_intervals(history)
        .iter()
        .map(|i| {
            json!({
                "fault": i.start.f,
                "value": i.start.value,
                "start_index": i.start.index,
                "start_ns": i.start.time_ns,
                "end_index": i.end.map(|e| e.index),
                "end_ns": i.end.map_or(last_ns, |e| e.time_ns),
                "ended_by": i.end.map(|e| e.f.as_str()),
                "healed": i.end.is_some(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Process;

    fn op(index: u64, ms: u64, process: Process, kind: OpType, f: &str) -> Op {
        Op {
            index,
            time_ns: ms * 1_000_000,
            process,
            kind,
            f: f.into(),
            key: None,
            value: Value::Null,
            node: None,
            error: None,
        }
    }

    /// (process, f, invoke ms, completion ms and type)
    type Client<'a> = (u64, &'a str, u64, Option<(u64, OpType)>);
    /// (ms, order within the same ms, process, type, f)
    type Event<'a> = (u64, u8, Process, OpType, &'a str);

    /// Builds a history from (process, f, invoke ms, completion ms, type)
    /// and nemesis (ms, f) entries, ordered by time.
    fn history(clients: &[Client<'_>], nemesis: &[(u64, &str)]) -> History {
        let mut events: Vec<Event<'_>> = Vec::new();
        for &(p, f, at, done) in clients {
            events.push((at, 0, Process::Client(p), OpType::Invoke, f));
            if let Some((end, kind)) = done {
                events.push((end, 1, Process::Client(p), kind, f));
            }
        }
        for &(at, f) in nemesis {
            events.push((at, 2, Process::Nemesis, OpType::Info, f));
        }
        events.sort_by_key(|e| (e.0, e.1));
        let ops = events
            .into_iter()
            .enumerate()
            .map(|(i, (ms, _, p, kind, f))| op(i as u64, ms, p, kind, f))
            .collect();
        let h = History::new(ops);
        h.validate().unwrap();
        h
    }

    #[test]
    fn percentiles_of_a_known_history() {
        // 100 sequential reads on distinct processes with latencies 1..=100
        // ms, then 10 writes of 5 ms, 3 failed and 2 crashed writes.
        let mut clients = Vec::new();
        let mut t = 0;
        for (p, latency) in (1..=100u64).enumerate() {
            clients.push((p as u64, "read", t, Some((t + latency, OpType::Ok))));
            t += latency;
        }
        for p in 100..110 {
            clients.push((p, "write", t, Some((t + 5, OpType::Ok))));
            t += 5;
        }
        for p in 110..113 {
            clients.push((p, "write", t, Some((t + 1, OpType::Fail))));
        }
        clients.push((113, "write", t, Some((t + 2, OpType::Info))));
        clients.push((114, "write", t, None));
        let r = check(&history(&clients, &[]));
        assert_eq!(r.checker, "perf");
        assert_eq!(r.verdict, Verdict::Valid);
        let read = &r.details["latency_ms"]["by_f"]["read"];
        assert_eq!(
            read,
            &json!({"count": 100, "p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 100.0, "max": 100.0})
        );
        let write = &r.details["latency_ms"]["by_f"]["write"];
        assert_eq!(
            (
                write["count"].as_u64(),
                write["p50"].as_f64(),
                write["max"].as_f64()
            ),
            (Some(10), Some(5.0), Some(5.0))
        );
        // Overall: 10 writes of 5 ms and reads of 1..=100: the 55th of 110
        // is read latency 45.
        let overall = &r.details["latency_ms"]["overall"];
        assert_eq!(
            (overall["count"].as_u64(), overall["p50"].as_f64()),
            (Some(110), Some(45.0))
        );
        assert_eq!(
            r.details["counts"]["by_f"]["write"],
            json!({"ok": 10, "fail": 3, "info": 2})
        );
        assert_eq!(
            r.details["counts"]["total"],
            json!({"ok": 110, "fail": 3, "info": 2})
        );
        assert!(
            r.summary
                .starts_with("115 operations: 110 ok, 3 fail, 2 info; latency p50 45.00 ms"),
            "{}",
            r.summary
        );
    }

    #[test]
    fn throughput_counts_completions_per_second() {
        let h = history(
            &[
                (0, "read", 0, Some((100, OpType::Ok))),
                (1, "read", 0, Some((900, OpType::Fail))),
                (2, "read", 500, Some((1500, OpType::Ok))),
                (3, "read", 2100, Some((2200, OpType::Info))),
            ],
            &[],
        );
        let t = &check(&h).details["throughput"];
        assert_eq!(
            (&t["ok"], &t["fail"], &t["info"]),
            (&json!([1, 1, 0]), &json!([1, 0, 0]), &json!([0, 0, 1]))
        );
    }

    #[test]
    fn nemesis_intervals_pair_faults_with_their_ends() {
        let h = history(
            &[(0, "read", 0, Some((10_000, OpType::Ok)))],
            &[
                (1000, "kill"),
                (2000, "pause"),
                (3000, "start"),
                (4000, "resume"),
                (5000, "partition"),
                (6000, "heal"),
                (7000, "clock"),
            ],
        );
        let n = check(&h).details["nemesis"].clone();
        let summary: Vec<(String, u64, u64, bool)> = n
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["fault"].as_str().unwrap().to_owned(),
                    i["start_ns"].as_u64().unwrap() / 1_000_000,
                    i["end_ns"].as_u64().unwrap() / 1_000_000,
                    i["healed"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("kill".into(), 1000, 3000, true),
                ("pause".into(), 2000, 4000, true),
                ("partition".into(), 5000, 6000, true),
                ("clock".into(), 7000, 10_000, false),
            ]
        );
    }

    #[test]
    fn jepsen_classic_start_stop_is_one_interval() {
        let h = history(
            &[(0, "read", 0, Some((5000, OpType::Ok)))],
            &[
                (1000, "start"),
                (1100, "start"),
                (2000, "stop"),
                (2100, "stop"),
                (3000, "start-partition"),
                (4000, "stop-partition"),
            ],
        );
        let n = check(&h).details["nemesis"].clone();
        assert_eq!(n.as_array().unwrap().len(), 2, "{n}");
        assert_eq!(
            (
                n[0]["fault"].as_str(),
                n[0]["start_index"].as_u64(),
                n[0]["ended_by"].as_str()
            ),
            (Some("start"), Some(1), Some("stop"))
        );
        assert_eq!(
            (n[1]["fault"].as_str(), n[1]["ended_by"].as_str()),
            (Some("start-partition"), Some("stop-partition"))
        );
    }

    #[test]
    fn absolute_and_unordered_times_are_bucketed_safely() {
        let mut h = history(
            &[
                (0, "read", 0, Some((3000, OpType::Ok))),
                (1, "read", 1000, Some((1500, OpType::Ok))),
            ],
            &[],
        );
        // Epoch nanoseconds, and a completion earlier than every invocation.
        for op in &mut h.ops {
            op.time_ns += 1_700_000_000_000_000_000;
        }
        h.ops[3].time_ns -= 10_000_000_000;
        let t = &check(&h).details["throughput"];
        assert_eq!(t["bucket_s"], 1);
        // From the early completion (-7 s) to the last entry (1.5 s).
        assert_eq!(t["ok"].as_array().map(Vec::len), Some(9));
        // A span of decades gets wide buckets, not billions of them.
        h.ops[0].time_ns = 0;
        let t = &check(&h).details["throughput"];
        assert!(t["ok"].as_array().unwrap().len() <= MAX_BUCKETS as usize);
        let total: u64 = t["ok"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_u64)
            .sum();
        assert_eq!(total, 2);
    }

    #[test]
    fn no_client_operations_is_nothing_to_measure_and_no_vote() {
        let h = history(&[], &[(1000, "kill")]);
        let r = check(&h);
        assert_eq!(r.verdict, Verdict::Valid);
        assert_eq!(r.summary, "no client operations: nothing to measure");
        assert_eq!(r.details["nemesis"].as_array().map(Vec::len), Some(1));
        assert_eq!(check(&History::default()).verdict, Verdict::Valid);
    }

    #[test]
    fn availability_during_and_outside_faults_and_the_longest_update_gap() {
        use OpType::{Info, Ok};
        // A partition from 100 to 300 ms: of the three writes invoked in
        // it, one succeeds; outside it, both do. No write succeeds from 20
        // to 250 ms.
        let h = history(
            &[
                (1, "write", 0, Some((20, Ok))),
                (2, "write", 110, Some((150, Info))),
                (3, "write", 160, Some((200, Info))),
                (4, "write", 210, Some((250, Ok))),
                (5, "write", 400, Some((410, Ok))),
                (6, "read", 420, Some((430, Ok))),
            ],
            &[(100, "partition"), (300, "heal")],
        );
        let a = &check(&h).details["availability"];
        assert_eq!(a["during_faults"]["operations"], 3);
        assert_eq!(a["during_faults"]["served"], 1);
        assert_eq!(a["outside_faults"]["served_fraction"], 1.0);
        assert_eq!(a["during_faults"]["seconds"], 0.2);
        assert_eq!(a["during_faults"]["latency_ms"]["p50"], 40.0);
        assert_eq!(a["longest_update_gap"]["ms"], 230.0);
        assert_eq!(a["longest_update_gap"]["faults"], json!(["partition"]));
    }
}
