//! The convergence checker: after the faults heal and the writes stop,
//! every replica, read locally, holds the same state; and how long that
//! took.
//!
//! It looks only at *final* reads: `ok` reads begun after every other
//! client operation (of any `f`: write, delete, incr, add...) ended, each
//! naming the `node` that answered. A run reads every key from every node
//! after healing, repeatedly until they agree or a bound passes, so a key
//! has several final reads per node. Per key:
//!
//! - it **converged** when the last final read of every node returned the
//!   same value; it converged *at* the completion of the read from which
//!   on every node's latest read agreed, measured from the last nemesis
//!   `heal` (or, without one, from the end of the last write);
//! - it **diverged** when the nodes' last reads differ: the anomaly names
//!   the key, which part differed and what each node held. A register read
//!   recorded as `{"siblings": [...], "context": "..."}` has two parts:
//!   when the siblings differ the anomaly is `diverged`; when they agree
//!   but the causal context token differs, `diverged-context` (a replica
//!   that holds the same values with another causal history would treat
//!   the next write passing that context differently: it has not
//!   converged);
//! - it is **undecided** when only one node, or none, has a final read of
//!   it while the history shows several nodes answering.
//!
//! Values are compared as JSON with every array sorted (siblings, set
//! members and version vectors are sets: their order carries nothing);
//! context tokens byte for byte (a version vector's encoding is canonical).
//!
//! The verdict is invalid if any key diverged; else unknown if a key is
//! undecided or nothing was read finally; else valid.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::check::{Anomaly, CheckResult, Verdict};
use crate::history::{History, OpType, F_READ};

/// The `f` of the nemesis entry that ends every fault.
const F_HEAL: &str = "heal";

/// How many diverged keys are listed; the rest are counted.
const DETAILED: usize = 20;

/// Checks that the replicas converged (see the module docs).
pub fn check(history: &History) -> CheckResult {
    let pairs = history.pairs();
    let updates_ended = pairs
        .iter()
        .filter(|p| p.invoke.f != F_READ)
        .map(|p| p.complete.map_or(u64::MAX, |c| c.index))
        .max();
    let ended_at = updates_ended.unwrap_or(0);
    let end_ns = pairs
        .iter()
        .filter(|p| p.invoke.f != F_READ)
        .filter_map(|p| p.complete.map(|c| c.time_ns))
        .max()
        .unwrap_or(0);
    let heal_ns = history
        .nemesis()
        .filter(|op| op.f == F_HEAL)
        .map(|op| op.time_ns)
        .max();
    let since_ns = heal_ns.unwrap_or(end_ns);
    let nodes: BTreeSet<&str> = pairs
        .iter()
        .filter_map(|p| p.complete.and_then(|c| c.node.as_deref()))
        .collect();
    let mut keys: BTreeMap<Option<&str>, Vec<FinalRead<'_>>> = BTreeMap::new();
    for pair in &pairs {
        if pair.invoke.f != F_READ || pair.invoke.index <= ended_at {
            continue;
        }
        let Some(done) = pair.complete.filter(|c| c.kind == OpType::Ok) else {
            continue;
        };
        let Some(node) = done.node.as_deref() else {
            return CheckResult::unsupported(
                "convergence",
                format!("the final read at index {} names no node", done.index),
                vec![done.index],
            );
        };
        let (value, context) = parts(&done.value);
        keys.entry(pair.invoke.key.as_deref())
            .or_default()
            .push(FinalRead {
                node,
                value,
                context,
                time_ns: done.time_ns,
                index: done.index,
            });
    }
    let mut anomalies = Vec::new();
    let (mut diverged, mut undecided, mut converged) = (0usize, Vec::new(), 0usize);
    let mut context_only = 0usize;
    let mut times_ms: Vec<f64> = Vec::new();
    for (key, mut reads) in keys {
        reads.sort_by_key(|r| r.index);
        let name = key.map_or_else(|| "the register".to_string(), |k| format!("key {k}"));
        let mut latest: BTreeMap<&str, (&Value, Option<&Value>, u64)> = BTreeMap::new();
        // When every node's latest read last started to agree.
        let mut agreed_since: Option<u64> = None;
        for FinalRead {
            node,
            value,
            context,
            time_ns,
            index,
        } in &reads
        {
            latest.insert(node, (value, context.as_ref(), *index));
            let mut states = latest.values().map(|(v, c, _)| (*v, *c));
            let first = states.next().expect("just inserted");
            if states.all(|s| s == first) {
                agreed_since.get_or_insert(*time_ns);
            } else {
                agreed_since = None;
            }
        }
        if latest.len() < 2 && nodes.len() >= 2 {
            undecided.push(name);
            continue;
        }
        match agreed_since {
            Some(at) => {
                converged += 1;
                times_ms.push(at.saturating_sub(since_ns) as f64 / 1e6);
            }
            None => {
                diverged += 1;
                let mut values = latest.values().map(|(v, _, _)| *v);
                let first = values.next().expect("two or more nodes");
                let values_agree = values.all(|v| v == first);
                context_only += usize::from(values_agree);
                if anomalies.len() < DETAILED {
                    let (kind, message) = if values_agree {
                        let held: Vec<String> = latest
                            .iter()
                            .map(|(node, (_, context, _))| {
                                format!(
                                    "{node}: {}",
                                    context.map_or("none".into(), Value::to_string)
                                )
                            })
                            .collect();
                        (
                            "diverged-context",
                            format!(
                                "{name}: the replicas agree on the value {first} but not on its \
                                 causal context after healing: {}",
                                held.join("; ")
                            ),
                        )
                    } else {
                        let held: Vec<String> = latest
                            .iter()
                            .map(|(node, (value, _, _))| format!("{node}: {value}"))
                            .collect();
                        (
                            "diverged",
                            format!(
                                "{name}: the value differs between replicas after healing: {}",
                                held.join("; ")
                            ),
                        )
                    };
                    anomalies.push(Anomaly {
                        kind: kind.into(),
                        message,
                        indices: latest.values().map(|(_, _, i)| *i).collect(),
                    });
                }
            }
        }
    }
    if diverged > DETAILED {
        anomalies.push(Anomaly {
            kind: "diverged".into(),
            message: format!("{} more diverged keys not listed", diverged - DETAILED),
            indices: Vec::new(),
        });
    }
    let verdict = if diverged > 0 {
        Verdict::Invalid
    } else if !undecided.is_empty() || converged == 0 {
        anomalies.push(Anomaly {
            kind: "not-read".into(),
            message: if undecided.is_empty() {
                "no final reads: convergence cannot be judged".into()
            } else {
                format!(
                    "fewer than two replicas read finally for {}",
                    undecided.join(", ")
                )
            },
            indices: Vec::new(),
        });
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    let slowest = times_ms.iter().copied().fold(0.0, f64::max);
    let from = if heal_ns.is_some() {
        "the heal"
    } else {
        "the last write"
    };
    let summary = match verdict {
        Verdict::Invalid => format!(
            "{diverged} of {} key(s) diverged between replicas",
            diverged + converged + undecided.len()
        ),
        _ => format!(
            "{converged} key(s) converged on {} node(s), the last {slowest:.0} ms after {from}",
            nodes.len()
        ),
    };
    CheckResult {
        checker: "convergence".into(),
        verdict,
        summary,
        anomalies,
        details: json!({
            "converged": converged,
            "diverged": diverged,
            "diverged_context_only": context_only,
            "undecided": undecided.len(),
            "converged_ms_max": slowest,
            "measured_from": from,
        }),
    }
}

/// A final read of one key: who answered, what, and when it completed.
struct FinalRead<'h> {
    node: &'h str,
    /// The value (a register's siblings), [`canonical`].
    value: Value,
    /// A register's causal context token, when the read recorded one.
    context: Option<Value>,
    time_ns: u64,
    /// The completion's history index.
    index: u64,
}

/// A final read's value and causal context: a register read recorded as
/// `{"siblings": [...], "context": ...}` splits in two, anything else is
/// all value.
fn parts(value: &Value) -> (Value, Option<Value>) {
    match value.get("siblings") {
        Some(siblings) => (canonical(siblings), value.get("context").cloned()),
        None => (canonical(value), None),
    }
}

/// `value` with every array sorted, recursively: how the checker compares
/// replicas' reads.
pub fn canonical(value: &Value) -> Value {
    match value {
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(canonical).collect();
            items.sort_by_cached_key(|v| v.to_string());
            Value::Array(items)
        }
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), canonical(v))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Process};
    use OpType::{Info, Invoke, Ok};

    fn op(index: u64, process: Process, kind: OpType, f: &str, value: Value, node: &str) -> Op {
        Op {
            index,
            time_ns: index * 1_000_000,
            process,
            kind,
            f: f.into(),
            key: Some("k".into()),
            value,
            node: (!node.is_empty()).then(|| node.to_string()),
            error: None,
        }
    }

    /// A write, a heal, then final reads `(node, value)` in order.
    fn history(reads: &[(&str, Value)]) -> History {
        let c = Process::Client;
        let mut ops = vec![
            op(0, c(1), Invoke, "write", json!(1), ""),
            op(1, c(1), Ok, "write", json!(1), "n1"),
            op(2, Process::Nemesis, Info, F_HEAL, Value::Null, ""),
        ];
        for (i, (node, value)) in reads.iter().enumerate() {
            let at = ops.len() as u64;
            let p = c(10 + i as u64);
            ops.push(op(at, p, Invoke, F_READ, Value::Null, ""));
            ops.push(op(at + 1, p, Ok, F_READ, value.clone(), node));
        }
        History::new(ops)
    }

    #[test]
    fn replicas_that_agree_converged_and_the_time_is_from_the_heal() {
        let h = history(&[
            ("n1", json!([1, 2])),
            ("n2", json!([2])),
            ("n2", json!([2, 1])),
        ]);
        let result = check(&h);
        assert_eq!(result.verdict, Verdict::Valid, "{result:?}");
        // Agreement began with the read completed at index 8: 6 ms after
        // the heal at index 2.
        assert_eq!(result.details["converged_ms_max"], 6.0);
    }

    #[test]
    fn replicas_whose_last_reads_differ_diverged() {
        let h = history(&[("n1", json!([1])), ("n2", json!([1])), ("n2", json!([2]))]);
        let result = check(&h);
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.anomalies[0].kind, "diverged");
        assert_eq!(result.anomalies[0].indices, vec![4, 8]);
        assert!(result.anomalies[0].message.contains("n2: [2]"));
    }

    fn register(siblings: Value, context: &str) -> Value {
        json!({"siblings": siblings, "context": context})
    }

    #[test]
    fn replicas_that_agree_on_siblings_but_not_on_context_diverged() {
        let h = history(&[
            ("n1", register(json!([1, 2]), "0101")),
            ("n2", register(json!([2, 1]), "0102")),
        ]);
        let result = check(&h);
        assert_eq!(result.verdict, Verdict::Invalid, "{result:#?}");
        assert_eq!(result.anomalies[0].kind, "diverged-context");
        assert!(
            result.anomalies[0]
                .message
                .contains("n1: \"0101\"; n2: \"0102\""),
            "{result:#?}"
        );
        assert_eq!(result.details["diverged_context_only"], 1);
        // Siblings that differ are named as such, whatever the contexts.
        let h = history(&[
            ("n1", register(json!([1]), "0101")),
            ("n2", register(json!([2]), "0102")),
        ]);
        let result = check(&h);
        assert_eq!(result.anomalies[0].kind, "diverged");
        assert_eq!(result.details["diverged_context_only"], 0);
        // The same siblings and context, in any order, converged.
        let h = history(&[
            ("n1", register(json!([1, 2]), "0101")),
            ("n2", register(json!([2, 1]), "0101")),
        ]);
        assert_eq!(check(&h).verdict, Verdict::Valid);
    }

    #[test]
    fn one_replica_read_is_undecided_and_a_read_during_writes_is_not_final() {
        let h = history(&[("n1", json!([1]))]);
        // Only n1 answered anything: one node, which is all there is.
        assert_eq!(check(&h).verdict, Verdict::Valid);
        let mut h = history(&[("n1", json!([1])), ("n1", json!([1]))]);
        h.ops[1].node = Some("n2".into());
        assert_eq!(check(&h).verdict, Verdict::Unknown);
        // A read that began before the last write ended is not final.
        let c = Process::Client;
        let h = History::new(vec![
            op(0, c(2), Invoke, F_READ, Value::Null, ""),
            op(1, c(1), Invoke, "write", json!(1), ""),
            op(2, c(2), Ok, F_READ, json!([9]), "n2"),
            op(3, c(1), Ok, "write", json!(1), "n1"),
            op(4, c(3), Invoke, F_READ, Value::Null, ""),
            op(5, c(3), Ok, F_READ, json!([1]), "n1"),
            op(6, c(4), Invoke, F_READ, Value::Null, ""),
            op(7, c(4), Ok, F_READ, json!([1]), "n2"),
        ]);
        assert_eq!(check(&h).verdict, Verdict::Valid);
    }
}
