//! How stale were the reads? A measurement of register histories, for
//! follower and session reads, which may lag the leader by design.
//!
//! Staleness is a measurement, not a guarantee, and a measurement never
//! votes: the verdict is always valid. A history with no `ok` read says
//! "nothing to measure", and one that is not a register history "not
//! measured", without changing the run's verdict (the checkers that read
//! the history for a guarantee say what is wrong with it). The checker that fails a run for a stale read
//! is the linearizability checker ([`linear`](super::linear)), for modes
//! that promise linearizable reads, and [`session`](super::session) for the
//! session guarantees; this one says how far behind the reads were, per
//! node that answered.
//!
//! # What counts as stale
//!
//! With the same rules as the session checker (writes take effect in an
//! order consistent with real time; values repeat, so the *possible
//! sources* of a read are every `ok` or indeterminate write or cas of the
//! value read invoked before the read completed, and the initial absent
//! state for a `null` read), a read is *stale* when some `ok` write or cas
//! of the key — an *overwrite* — was invoked after every possible source
//! had completed and itself completed before the read was invoked. Every
//! overwrite certainly follows the version the read returned, and had
//! certainly taken effect before the read began, yet the read did not see
//! it.
//!
//! For a stale read:
//!
//! - **versions behind**: the number of overwrites (each is a distinct
//!   write the read missed, so this is a lower bound on how many log
//!   entries the answering replica lacked);
//! - **time behind**: the read's invocation time minus the completion time
//!   of the first overwrite to complete, in ms: how long a fresher value had
//!   been acknowledged when the read began.
//!
//! A read that an indeterminate write of its value may explain, a Jepsen
//! `nil` read, and a read of a value no one wrote are not measured (never
//! stale); the last is the linearizability checker's business.
//!
//! `details` holds, overall and per node that answered (`unknown` when the
//! completion does not name one), the reads, the stale reads and their
//! fraction of all `ok` reads, and p50, p99 and max (nearest rank) of
//! versions and ms behind over the stale reads. The stalest reads (most
//! versions behind, then most time) are listed as `stale-read` anomalies
//! with the indices of the read, the first overwrite and the latest
//! possible source.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::session::{describe_key, Event, Origin, Read, Registers, Write, NEVER};
use super::{Anomaly, CheckResult, Verdict};
use crate::history::History;

/// The checker's name in results.
pub const CHECKER: &str = "staleness";

/// How many of the stalest reads are listed as anomalies.
const EXAMPLES: usize = 10;

const NS_PER_MS: f64 = 1e6;

/// A read that missed writes.
#[derive(Debug)]
struct Stale<'h> {
    read: Read<'h>,
    /// Overwrites missed.
    versions: u64,
    /// Read invocation minus the first overwrite's completion.
    behind_ns: u64,
    first: Write<'h>,
    /// The possible source of the read's value that completed last.
    source: Write<'h>,
}

/// The reads one node answered.
#[derive(Debug, Default)]
struct NodeStats {
    reads: u64,
    /// (versions behind, ns behind) of each stale read.
    stale: Vec<(u64, u64)>,
}

impl NodeStats {
    fn json(&mut self) -> Value {
        let mut versions: Vec<u64> = self.stale.iter().map(|s| s.0).collect();
        let mut ns: Vec<u64> = self.stale.iter().map(|s| s.1).collect();
        let fraction = if self.reads == 0 {
            0.0
        } else {
            self.stale.len() as f64 / self.reads as f64
        };
        json!({
            "reads": self.reads,
            "stale": self.stale.len(),
            "stale_fraction": fraction,
            "versions_behind": percentiles(&mut versions, |v| json!(v)),
            "ms_behind": percentiles(&mut ns, |v| json!(v as f64 / NS_PER_MS)),
        })
    }
}

/// Nearest-rank p50, p99 and max of `values`, each rendered by `show`.
fn percentiles(values: &mut [u64], show: impl Fn(u64) -> Value) -> Value {
    if values.is_empty() {
        return json!({ "count": 0 });
    }
    values.sort_unstable();
    let n = values.len();
    let at = |q: f64| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    json!({
        "count": n,
        "p50": show(at(0.5)),
        "p99": show(at(0.99)),
        "max": show(values[n - 1]),
    })
}

/// Measures how stale every `ok` read of a register history was (see the
/// module docs).
pub fn check(history: &History) -> CheckResult {
    let registers = match Registers::load(history, CHECKER) {
        Ok(r) => r,
        // Not a register history: nothing to measure, and no vote.
        Err(result) => {
            return CheckResult {
                verdict: Verdict::Valid,
                summary: result.summary.replacen("not checked", "not measured", 1),
                ..result
            }
        }
    };
    let mut overall = NodeStats::default();
    let mut nodes: BTreeMap<&str, NodeStats> = BTreeMap::new();
    let mut unmeasured = 0u64;
    let mut stale = Vec::new();
    for event in &registers.events {
        let Event::Read(read) = *event else {
            continue;
        };
        let node = read.complete.node.as_deref().unwrap_or("unknown");
        let stats = nodes.entry(node).or_default();
        stats.reads += 1;
        overall.reads += 1;
        let Origin::Sources(sources) = registers.origin(&read) else {
            unmeasured += 1;
            continue;
        };
        if sources.latest_completion == NEVER {
            continue;
        }
        let mut overwrites = registers
            .completed_between(read.key(), sources.latest_completion, read.invoked())
            .iter()
            .filter(|w| w.invoked > sources.latest_completion);
        let Some(first) = overwrites.next() else {
            continue;
        };
        let versions = 1 + overwrites.count() as u64;
        let acknowledged = first.complete.map_or(0, |c| c.time_ns);
        let behind_ns = read.invoke.time_ns.saturating_sub(acknowledged);
        stats.stale.push((versions, behind_ns));
        overall.stale.push((versions, behind_ns));
        stale.push(Stale {
            read,
            versions,
            behind_ns,
            first: *first,
            source: *sources.latest_completing(),
        });
    }

    stale.sort_by(|a, b| {
        (b.versions, b.behind_ns, a.read.invoke.index).cmp(&(
            a.versions,
            a.behind_ns,
            b.read.invoke.index,
        ))
    });
    let anomalies: Vec<Anomaly> = stale.iter().take(EXAMPLES).map(anomaly).collect();
    let count = overall.stale.len();
    let overall_json = overall.json();
    let verdict = Verdict::Valid;
    let summary = if overall.reads == 0 {
        "no ok reads: nothing to measure".to_owned()
    } else if count == 0 {
        format!("{} reads, none provably stale", overall.reads)
    } else {
        let d = &overall_json;
        format!(
            "{} reads, {count} stale ({:.1}%); versions behind p50 {}, p99 {}, max {}; \
             ms behind p50 {:.1}, p99 {:.1}, max {:.1}",
            overall.reads,
            100.0 * d["stale_fraction"].as_f64().unwrap_or(0.0),
            d["versions_behind"]["p50"],
            d["versions_behind"]["p99"],
            d["versions_behind"]["max"],
            d["ms_behind"]["p50"].as_f64().unwrap_or(0.0),
            d["ms_behind"]["p99"].as_f64().unwrap_or(0.0),
            d["ms_behind"]["max"].as_f64().unwrap_or(0.0),
        )
    };
    let by_node: serde_json::Map<String, Value> = nodes
        .iter_mut()
        .map(|(node, stats)| ((*node).to_owned(), stats.json()))
        .collect();
    CheckResult {
        checker: CHECKER.into(),
        verdict,
        summary,
        anomalies,
        details: json!({
            "overall": overall_json,
            "by_node": by_node,
            "unmeasured_reads": unmeasured,
        }),
    }
}

fn anomaly(s: &Stale<'_>) -> Anomaly {
    let read = &s.read;
    let node = read
        .complete
        .node
        .as_deref()
        .map(|n| format!(" on {n}"))
        .unwrap_or_default();
    let ms = s.behind_ns as f64 / NS_PER_MS;
    let mut indices: Vec<u64> = read
        .indices()
        .into_iter()
        .chain(s.first.indices())
        .chain(s.source.indices())
        .collect();
    indices.sort_unstable();
    indices.dedup();
    Anomaly {
        kind: "stale-read".into(),
        message: format!(
            "{}: process {} {}{node}, {} version{} and {ms:.1} ms behind: {} completed {ms:.1} \
             ms before the read began, after every write that could have produced {} had \
             completed (the last: {})",
            describe_key(read.key()),
            read.process,
            read.describe(),
            s.versions,
            if s.versions == 1 { "" } else { "s" },
            s.first.describe(),
            read.value,
            s.source.describe(),
        ),
        indices,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::{Op, OpType, Process};

    /// A history from `(ms, process, type, f, key, value, node)` rows.
    fn history(rows: &[(u64, u64, OpType, &str, &str, Value, &str)]) -> History {
        let ops = rows
            .iter()
            .enumerate()
            .map(|(i, (ms, p, kind, f, key, value, node))| Op {
                index: i as u64,
                time_ns: ms * 1_000_000,
                process: Process::Client(*p),
                kind: *kind,
                f: (*f).into(),
                key: Some((*key).into()),
                value: value.clone(),
                node: (!node.is_empty()).then(|| (*node).into()),
                error: None,
            })
            .collect();
        History::new(ops)
    }

    use OpType::{Info, Invoke, Ok};

    /// A read of `x` two versions and 30 ms behind on n2, a fresh read on
    /// n1, one version and 7 ms behind on n3; on `y`, a read a timed-out
    /// write may explain, and a read of a value no one wrote.
    fn known() -> History {
        history(&[
            (0, 0, Invoke, "write", "x", json!(1), ""),
            (1, 0, Ok, "write", "x", json!(1), "n1"),
            (10, 1, Invoke, "write", "x", json!(2), ""),
            (20, 1, Ok, "write", "x", json!(2), "n1"),
            (25, 2, Invoke, "write", "x", json!(3), ""),
            (40, 2, Ok, "write", "x", json!(3), "n1"),
            // Concurrent with the next read: it cannot count.
            (45, 4, Invoke, "write", "x", json!(4), ""),
            (50, 3, Invoke, "read", "x", Value::Null, ""),
            (52, 3, Ok, "read", "x", json!(1), "n2"),
            (55, 4, Ok, "write", "x", json!(4), "n1"),
            (60, 5, Invoke, "read", "x", Value::Null, ""),
            (61, 5, Ok, "read", "x", json!(4), "n1"),
            (62, 5, Invoke, "read", "x", Value::Null, ""),
            (63, 5, Ok, "read", "x", json!(3), "n3"),
            (64, 6, Invoke, "write", "y", json!(1), ""),
            (65, 6, Info, "write", "y", json!(1), ""),
            (66, 7, Invoke, "write", "y", json!(2), ""),
            (67, 7, Ok, "write", "y", json!(2), "n1"),
            (68, 7, Invoke, "read", "y", Value::Null, ""),
            (69, 7, Ok, "read", "y", json!(1), "n2"),
            (70, 7, Invoke, "read", "y", Value::Null, ""),
            (71, 7, Ok, "read", "y", json!(9), "n2"),
        ])
    }

    #[test]
    fn measures_versions_and_time_behind_per_node() {
        let result = check(&known());
        assert_eq!(result.checker, CHECKER);
        assert_eq!(result.verdict, Verdict::Valid, "{result:#?}");
        let overall = &result.details["overall"];
        assert_eq!(overall["reads"], 5);
        assert_eq!(overall["stale"], 2);
        assert_eq!(overall["stale_fraction"], 0.4);
        assert_eq!(
            overall["versions_behind"],
            json!({"count": 2, "p50": 1, "p99": 2, "max": 2})
        );
        assert_eq!(
            overall["ms_behind"],
            json!({"count": 2, "p50": 7.0, "p99": 30.0, "max": 30.0})
        );
        let n2 = &result.details["by_node"]["n2"];
        assert_eq!(n2["reads"], 3);
        assert_eq!(n2["stale"], 1);
        assert_eq!(n2["versions_behind"]["max"], 2);
        assert_eq!(n2["ms_behind"]["max"], 30.0);
        assert_eq!(result.details["by_node"]["n3"]["ms_behind"]["max"], 7.0);
        assert_eq!(result.details["by_node"]["n1"]["stale"], 0);
        assert_eq!(result.details["unmeasured_reads"], 1);
        assert!(
            result.summary.contains("5 reads, 2 stale (40.0%)"),
            "{}",
            result.summary
        );
    }

    #[test]
    fn lists_the_stalest_reads_first_with_the_proving_indices() {
        let result = check(&known());
        let found: Vec<(&str, &[u64])> = result
            .anomalies
            .iter()
            .map(|a| (a.kind.as_str(), a.indices.as_slice()))
            .collect();
        assert_eq!(
            found,
            [
                ("stale-read", &[0, 1, 2, 3, 7, 8][..]),
                ("stale-read", &[4, 5, 6, 9, 12, 13][..]),
            ]
        );
        let message = &result.anomalies[0].message;
        assert!(
            message.starts_with(
                "key \"x\": process 3 read 1 (indices 7-8) on n2, 2 versions and 30.0 ms \
                 behind: process 1's write of 2 (indices 2-3) completed 30.0 ms before"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_read_after_a_completed_write_of_the_same_value_is_fresh() {
        // 1 is written again after 2: reading 1 later is not stale.
        let result = check(&history(&[
            (0, 0, Invoke, "write", "x", json!(1), ""),
            (1, 0, Ok, "write", "x", json!(1), "n1"),
            (2, 0, Invoke, "write", "x", json!(2), ""),
            (3, 0, Ok, "write", "x", json!(2), "n1"),
            (4, 0, Invoke, "write", "x", json!(1), ""),
            (5, 0, Ok, "write", "x", json!(1), "n1"),
            (6, 1, Invoke, "read", "x", Value::Null, ""),
            (7, 1, Ok, "read", "x", json!(1), "n2"),
        ]));
        assert_eq!(result.details["overall"]["stale"], 0, "{result:#?}");
        assert!(result.anomalies.is_empty());
    }

    #[test]
    fn a_measurement_without_reads_or_of_other_workloads_does_not_vote() {
        let writes = check(&history(&[
            (0, 0, Invoke, "write", "x", json!(1), ""),
            (1, 0, Ok, "write", "x", json!(1), "n1"),
        ]));
        assert_eq!(writes.verdict, Verdict::Valid);
        assert_eq!(writes.summary, "no ok reads: nothing to measure");
        let set = check(&history(&[(0, 0, Invoke, "add", "x", json!(1), "")]));
        assert_eq!(set.verdict, Verdict::Valid);
        assert!(set.summary.starts_with("not measured: "), "{}", set.summary);
        assert_eq!(set.anomalies[0].kind, "unsupported");
        assert_eq!(set.anomalies[0].indices, [0]);
        assert!(set.summary.contains("`add`"), "{}", set.summary);
    }
}
