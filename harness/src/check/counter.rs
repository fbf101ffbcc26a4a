//! The counter checker: Jepsen's counter bounds, for histories of
//! increments and reads of a counter (per key when the history is keyed).
//!
//! An `incr` adds its `value` (an integer, negative for a decrement) to the
//! counter; an `ok` `read` returns the counter's value (`null`: absent,
//! which reads as 0). Which increments may be in a read:
//!
//! - an `ok` increment completed before the read was invoked must be in it
//!   *if the read is final*: the last read a node answered of those begun
//!   after every increment of the key ended (a run reads the replicas in
//!   rounds until they agree; earlier rounds show them catching up);
//! - an `info` increment (or one the history ends before) may or may not
//!   be, at any time after its invocation;
//! - a `fail` increment never is, nor one invoked after the read completed.
//!
//! So a final read must lie within `[ok + Σ min(0, unknown), ok + Σ max(0,
//! unknown)]`, where `ok` sums the acknowledged increments and `unknown`
//! ranges over the `info` ones: below it, acknowledged increments were
//! **lost**; above it, the counter holds increments nobody made
//! (**phantom**). Any read, final or not, must not exceed what every
//! increment invoked before it completed could add up to, nor fall below
//! what they could at least subtract (phantom otherwise). A read during the
//! run that lacks acknowledged increments is **stale**: counted, not
//! invalid, because the replication modes this workload runs under
//! (multi-leader, leaderless with small quorums) do not promise reads
//! that recent.
//!
//! The verdict is invalid if a final read lost increments or any read
//! holds phantom ones; else unknown if some key that was incremented has no
//! successful final read; else valid.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::check::{Anomaly, CheckResult, Verdict};
use crate::history::{Completed, History, OpType, F_READ};

/// The `f` of a counter increment.
pub const F_INCR: &str = "incr";

/// How many anomalies of one kind are listed; the rest are counted.
const DETAILED: usize = 20;

/// Checks a counter history (see the module docs).
pub fn check(history: &History) -> CheckResult {
    let pairs = history.pairs();
    let mut keys: BTreeMap<Option<&str>, Vec<&Completed<'_>>> = BTreeMap::new();
    for pair in &pairs {
        match pair.invoke.f.as_str() {
            F_INCR | F_READ => keys
                .entry(pair.invoke.key.as_deref())
                .or_default()
                .push(pair),
            other => {
                return CheckResult::unsupported(
                    "counter",
                    format!("operation {other:?} is not part of a counter history"),
                    vec![pair.invoke.index],
                )
            }
        }
    }
    let mut report = Report::default();
    for (key, ops) in keys {
        if let Err(bad) = report.key(key, &ops) {
            return bad;
        }
    }
    report.result()
}

/// An increment: its delta and the history's times for it.
struct Incr {
    delta: i64,
    kind: OpType,
    /// Index of its invocation and (if any) of its completion.
    invoked: u64,
    completed: Option<u64>,
}

#[derive(Default)]
struct Report {
    anomalies: Vec<Anomaly>,
    lost: usize,
    phantom: usize,
    stale: usize,
    keys_unread: Vec<String>,
    reads: usize,
    final_reads: usize,
    per_key: Vec<Value>,
}

fn key_name(key: Option<&str>) -> String {
    key.map_or_else(|| "the counter".to_string(), |k| format!("key {k}"))
}

impl Report {
    fn key(&mut self, key: Option<&str>, ops: &[&Completed<'_>]) -> Result<(), CheckResult> {
        let mut incrs = Vec::new();
        for pair in ops.iter().filter(|p| p.invoke.f == F_INCR) {
            let Some(delta) = pair.invoke.value.as_i64() else {
                return Err(CheckResult::unsupported(
                    "counter",
                    format!(
                        "the increment at index {} has value {}, not an integer",
                        pair.invoke.index, pair.invoke.value
                    ),
                    vec![pair.invoke.index],
                ));
            };
            incrs.push(Incr {
                delta,
                kind: pair.outcome(),
                invoked: pair.invoke.index,
                completed: pair.complete.map(|c| c.index),
            });
        }
        // Every increment has ended (or never will: info) by this index.
        let all_ended = incrs
            .iter()
            .map(|i| i.completed.unwrap_or(u64::MAX))
            .max()
            .unwrap_or(0);
        let acked: i64 = incrs
            .iter()
            .filter(|i| i.kind == OpType::Ok)
            .map(|i| i.delta)
            .sum();
        let unknown: Vec<&Incr> = incrs.iter().filter(|i| i.kind == OpType::Info).collect();
        let mut final_values = Vec::new();
        let settled = crate::check::settled_reads(
            ops.iter().copied().filter(|p| p.invoke.f == F_READ),
            all_ended,
        );
        for read in ops.iter().filter(|p| p.invoke.f == F_READ) {
            let Some(done) = read.complete.filter(|c| c.kind == OpType::Ok) else {
                continue;
            };
            let value = match &done.value {
                Value::Null => 0,
                v => v.as_i64().ok_or_else(|| {
                    CheckResult::unsupported(
                        "counter",
                        format!(
                            "the read completed at index {} returned {v}, not an integer",
                            done.index
                        ),
                        vec![done.index],
                    )
                })?,
            };
            self.reads += 1;
            let started = read.invoke.index;
            let proof = vec![started, done.index];
            // What the increments invoked before the read completed could
            // add up to, at most and at least.
            let possible = incrs
                .iter()
                .filter(|i| i.invoked < done.index && i.kind != OpType::Fail);
            let (low, high) = possible.fold((0i64, 0i64), |(lo, hi), i| {
                (lo + i.delta.min(0), hi + i.delta.max(0))
            });
            let node = done
                .node
                .as_deref()
                .map(|n| format!(" on {n}"))
                .unwrap_or_default();
            if value < low || value > high {
                self.phantom += 1;
                self.push(Anomaly {
                    kind: "phantom".into(),
                    message: format!(
                        "{}: the read{node} at index {started} returned {value}, outside \
                         [{low}, {high}], all that the increments invoked before it could \
                         make",
                        key_name(key)
                    ),
                    indices: proof.clone(),
                });
                continue;
            }
            // Acknowledged increments that completed before the read began.
            let must: i64 = incrs
                .iter()
                .filter(|i| i.kind == OpType::Ok && i.completed.is_some_and(|c| c < started))
                .map(|i| i.delta)
                .sum();
            let unknown_before = unknown.iter().filter(|i| i.invoked < done.index);
            let (slack_low, slack_high) = unknown_before.fold((0i64, 0i64), |(lo, hi), i| {
                (lo + i.delta.min(0), hi + i.delta.max(0))
            });
            if settled.contains(&started) {
                self.final_reads += 1;
                final_values.push(value);
                let (lower, upper) = (acked + slack_low, acked + slack_high);
                if value < lower {
                    self.lost += 1;
                    self.push(Anomaly {
                        kind: "lost".into(),
                        message: format!(
                            "{}: the final read{node} at index {started} returned {value}, \
                             below {lower}: the acknowledged increments sum to {acked}, the \
                             unknown ones can take away at most {}; {} lost",
                            key_name(key),
                            -slack_low,
                            lower - value
                        ),
                        indices: proof,
                    });
                } else if value > upper {
                    self.phantom += 1;
                    self.push(Anomaly {
                        kind: "phantom".into(),
                        message: format!(
                            "{}: the final read{node} at index {started} returned {value}, \
                             above {upper}: the acknowledged increments sum to {acked}, the \
                             unknown ones can add at most {slack_high}",
                            key_name(key)
                        ),
                        indices: proof,
                    });
                }
            } else if value < must + slack_low {
                self.stale += 1;
            }
        }
        if final_values.is_empty() && !incrs.is_empty() {
            self.keys_unread.push(key_name(key));
        }
        self.per_key.push(json!({
            "key": key,
            "increments": incrs.len(),
            "acknowledged": incrs.iter().filter(|i| i.kind == OpType::Ok).count(),
            "unknown": unknown.len(),
            "acknowledged_sum": acked,
            "final_values": final_values,
        }));
        Ok(())
    }

    fn push(&mut self, anomaly: Anomaly) {
        let same = self
            .anomalies
            .iter()
            .filter(|a| a.kind == anomaly.kind)
            .count();
        if same < DETAILED {
            self.anomalies.push(anomaly);
        }
    }

    fn result(mut self) -> CheckResult {
        let verdict = if self.lost + self.phantom > 0 {
            Verdict::Invalid
        } else if !self.keys_unread.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Valid
        };
        for (kind, count) in [("lost", self.lost), ("phantom", self.phantom)] {
            if count > DETAILED {
                self.anomalies.push(Anomaly {
                    kind: kind.into(),
                    message: format!("{} more {kind} reads not listed", count - DETAILED),
                    indices: Vec::new(),
                });
            }
        }
        if verdict == Verdict::Unknown {
            self.anomalies.push(Anomaly {
                kind: "not-read".into(),
                message: format!(
                    "no successful final read of {}: the increments cannot be confirmed",
                    self.keys_unread.join(", ")
                ),
                indices: Vec::new(),
            });
        }
        let summary = format!(
            "{} key(s), {} read(s) of which {} final: {} lost, {} phantom, {} stale during the run",
            self.per_key.len(),
            self.reads,
            self.final_reads,
            self.lost,
            self.phantom,
            self.stale
        );
        CheckResult {
            checker: "counter".into(),
            verdict,
            summary,
            anomalies: self.anomalies,
            details: json!({
                "lost": self.lost,
                "phantom": self.phantom,
                "stale": self.stale,
                "keys": self.per_key,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(rows: &[(u64, OpType, &str, Value)]) -> History {
        crate::check::rows_history("c", rows)
    }

    use OpType::{Fail, Info, Invoke, Ok};

    fn incrs_then_final_read(read: Value) -> History {
        history(&[
            (1, Invoke, F_INCR, json!(2)),
            (1, Ok, F_INCR, json!(2)),
            (2, Invoke, F_INCR, json!(5)),
            (2, Info, F_INCR, json!(5)),
            (3, Invoke, F_INCR, json!(7)),
            (3, Fail, F_INCR, json!(7)),
            (4, Invoke, F_READ, Value::Null),
            (4, Ok, F_READ, read),
        ])
    }

    #[test]
    fn a_final_read_within_the_bounds_is_valid() {
        for read in [2, 7] {
            let result = check(&incrs_then_final_read(json!(read)));
            assert_eq!(result.verdict, Verdict::Valid, "{read}: {result:?}");
        }
    }

    #[test]
    fn a_final_read_missing_an_acknowledged_increment_is_lost() {
        let result = check(&incrs_then_final_read(json!(1)));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.anomalies[0].kind, "lost");
        assert_eq!(result.anomalies[0].indices, vec![6, 7]);
        // A register that kept one of two concurrent increments: 0 is lost.
        let result = check(&incrs_then_final_read(Value::Null));
        assert_eq!(result.verdict, Verdict::Invalid);
    }

    #[test]
    fn a_read_above_every_increment_is_phantom_and_a_failed_one_counts_for_nothing() {
        // 2 + 5 + 7: only the failed increment could make 14.
        let result = check(&incrs_then_final_read(json!(14)));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.anomalies[0].kind, "phantom");
    }

    #[test]
    fn a_stale_read_during_the_run_is_counted_not_invalid() {
        let h = history(&[
            (1, Invoke, F_INCR, json!(1)),
            (1, Ok, F_INCR, json!(1)),
            (2, Invoke, F_READ, Value::Null),
            (3, Invoke, F_INCR, json!(1)),
            (2, Ok, F_READ, json!(0)),
            (3, Ok, F_INCR, json!(1)),
            (4, Invoke, F_READ, Value::Null),
            (4, Ok, F_READ, json!(2)),
        ]);
        let result = check(&h);
        assert_eq!(result.verdict, Verdict::Valid, "{result:?}");
        assert_eq!(result.details["stale"], 1);
    }

    #[test]
    fn a_read_during_the_run_above_what_was_invoked_is_phantom() {
        let h = history(&[
            (1, Invoke, F_INCR, json!(1)),
            (1, Ok, F_INCR, json!(1)),
            (2, Invoke, F_READ, Value::Null),
            (2, Ok, F_READ, json!(2)),
            (3, Invoke, F_INCR, json!(1)),
            (3, Ok, F_INCR, json!(1)),
            (4, Invoke, F_READ, Value::Null),
            (4, Ok, F_READ, json!(2)),
        ]);
        let result = check(&h);
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.anomalies[0].indices, vec![2, 3]);
    }

    #[test]
    fn a_replica_catching_up_in_early_final_rounds_is_judged_where_it_settled() {
        let h = |first: i64, last: i64| {
            history(&[
                (1, Invoke, F_INCR, json!(2)),
                (1, Ok, F_INCR, json!(2)),
                (4, Invoke, F_READ, Value::Null),
                (4, Ok, F_READ, json!(first)),
                (4, Invoke, F_READ, Value::Null),
                (4, Ok, F_READ, json!(last)),
            ])
        };
        assert_eq!(check(&h(0, 2)).verdict, Verdict::Valid);
        assert_eq!(check(&h(2, 0)).verdict, Verdict::Invalid);
    }

    #[test]
    fn decrements_widen_the_bounds_downwards() {
        let h = history(&[
            (1, Invoke, F_INCR, json!(3)),
            (1, Ok, F_INCR, json!(3)),
            (2, Invoke, F_INCR, json!(-2)),
            (2, Info, F_INCR, json!(-2)),
            (3, Invoke, F_READ, Value::Null),
            (3, Ok, F_READ, json!(1)),
        ]);
        assert_eq!(check(&h).verdict, Verdict::Valid);
    }

    #[test]
    fn without_a_final_read_the_verdict_is_unknown_and_bad_values_are_unsupported() {
        let h = history(&[(1, Invoke, F_INCR, json!(1)), (1, Ok, F_INCR, json!(1))]);
        assert_eq!(check(&h).verdict, Verdict::Unknown);
        let h = history(&[(1, Invoke, F_INCR, json!("x")), (1, Ok, F_INCR, json!("x"))]);
        let result = check(&h);
        assert_eq!(result.verdict, Verdict::Unknown);
        assert_eq!(result.anomalies[0].kind, "unsupported");
    }
}
