//! The siblings checker: no acknowledged write lost, no false
//! concurrency, no phantom, for registers whose writes say what they saw.
//!
//! The workload reads a key, then writes a new unique value passing the
//! causal context of that read, so the write supersedes the values it
//! read. The history records that:
//!
//! | `f` | `value` on invoke and `ok` | `value` of an `ok` read |
//! | --- | --- | --- |
//! | `write` | `{"value": v, "observed": [v1, ...]}` | |
//! | `delete` | `{"observed": [v1, ...]}` | |
//! | `read` | | `{"siblings": [v1, ...], "context": "<hex>"}`, or the siblings alone as an array (`[]` or `null`: absent) |
//!
//! A write *supersedes* the values it observed and, transitively, what
//! they superseded; a delete supersedes what it observed and leaves
//! nothing. A write or delete *may have taken effect* if it is `ok`,
//! `info` (or unfinished), or if any read returned its value. Then:
//!
//! - **lost**: an acknowledged write that a final read (a node's last
//!   read begun after every write and delete ended: where its replica
//!   settled; earlier rounds of final reads show it catching up) lacks, and that no write or delete
//!   which may have taken effect supersedes. When every value of that
//!   final read was written by a write that completed before the lost one
//!   began, it is **lost-to-earlier**: the anomaly of last-writer-wins
//!   under clock skew, where a node whose clock ran ahead wins against a
//!   write made later in real time;
//! - **superseded-kept**: a final read returns a value that an
//!   acknowledged or visible write supersedes;
//! - **false-concurrency**: one read returns two values of which one
//!   supersedes the other;
//! - **phantom**: a read returns a value no write invoked before it
//!   completed has; **failed-write-visible**: it returns the value of a
//!   `fail` write.
//!
//! The same analysis is the lost-update check of registers under
//! last-writer-wins: reads there return one value, and a write that LWW
//! silently dropped is lost unless a later write saw it.
//!
//! The check is sound, not complete: an `info` write is taken to have
//! superseded what it observed, so a write lost behind an unknown one is
//! not reported.
//!
//! The verdict is invalid if any of the above is found; else unknown if a
//! key with acknowledged writes has no successful final read; else valid.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};

use crate::check::{Anomaly, CheckResult, Verdict};
use crate::history::{Completed, History, OpType, F_READ, F_WRITE};

/// The `f` of a delete that carries what it observed.
pub const F_DELETE: &str = "delete";

/// How many anomalies of one kind are listed; the rest are counted.
const DETAILED: usize = 20;

/// Checks a siblings history (see the module docs).
pub fn check(history: &History) -> CheckResult {
    let pairs = history.pairs();
    let mut keys: BTreeMap<Option<&str>, Vec<&Completed<'_>>> = BTreeMap::new();
    for pair in &pairs {
        match pair.invoke.f.as_str() {
            F_WRITE | F_DELETE | F_READ => keys
                .entry(pair.invoke.key.as_deref())
                .or_default()
                .push(pair),
            other => {
                return unsupported(
                    format!("operation {other:?} is not part of a siblings history"),
                    pair,
                )
            }
        }
    }
    let mut report = Report::default();
    for (key, ops) in keys {
        match Key::parse(key, &ops) {
            Ok(analysis) => analysis.check(&mut report),
            Err(bad) => return bad,
        }
    }
    report.result()
}

fn unsupported(message: String, pair: &Completed<'_>) -> CheckResult {
    CheckResult::unsupported("siblings", message, vec![pair.invoke.index])
}

/// A value as written and read: integers by value, anything else by its
/// JSON text.
type Val = String;

fn val(value: &Value) -> Val {
    value.to_string()
}

/// One write or delete.
struct Update<'p, 'h> {
    pair: &'p Completed<'h>,
    /// `None` for a delete.
    value: Option<Val>,
    observed: Vec<Val>,
}

/// One successful read.
struct Read<'p, 'h> {
    pair: &'p Completed<'h>,
    values: Vec<Val>,
    last: bool,
}

struct Key<'p, 'h> {
    name: String,
    updates: Vec<Update<'p, 'h>>,
    /// Value → index into `updates` of the write that wrote it.
    writer: HashMap<Val, usize>,
    reads: Vec<Read<'p, 'h>>,
    /// A key with a read that could not be decided (failed final read).
    final_reads: usize,
}

impl<'p, 'h> Key<'p, 'h> {
    fn parse(key: Option<&str>, ops: &[&'p Completed<'h>]) -> Result<Self, CheckResult> {
        let name = key.map_or_else(|| "the register".to_string(), |k| format!("key {k}"));
        let mut updates = Vec::new();
        let mut writer = HashMap::new();
        let mut reads = Vec::new();
        for &pair in ops {
            let v = &pair.invoke.value;
            match pair.invoke.f.as_str() {
                F_READ => {
                    let Some(done) = pair.complete.filter(|c| c.kind == OpType::Ok) else {
                        continue;
                    };
                    let siblings = done.value.get("siblings").unwrap_or(&done.value);
                    let values = match siblings {
                        Value::Null => Vec::new(),
                        Value::Array(values) => values.iter().map(val).collect(),
                        other => {
                            return Err(unsupported(
                                format!(
                                    "{name}: a read returned {other}, not an array of siblings"
                                ),
                                pair,
                            ))
                        }
                    };
                    reads.push(Read {
                        pair,
                        values,
                        last: false,
                    });
                }
                f => {
                    let observed = match v.get("observed") {
                        Some(Value::Array(o)) => o.iter().map(val).collect(),
                        None | Some(Value::Null) => Vec::new(),
                        Some(other) => {
                            return Err(unsupported(
                                format!("{name}: `observed` is {other}, not an array"),
                                pair,
                            ))
                        }
                    };
                    let value = if f == F_WRITE {
                        let Some(value) = v.get("value") else {
                            return Err(unsupported(
                                format!(
                                    "{name}: the write at index {} has no \"value\" (expected \
                                     {{\"value\": v, \"observed\": [...]}})",
                                    pair.invoke.index
                                ),
                                pair,
                            ));
                        };
                        let value = val(value);
                        if writer.insert(value.clone(), updates.len()).is_some() {
                            return Err(unsupported(
                                format!(
                                    "{name}: value {value} is written twice; values must be unique"
                                ),
                                pair,
                            ));
                        }
                        Some(value)
                    } else {
                        None
                    };
                    updates.push(Update {
                        pair,
                        value,
                        observed,
                    });
                }
            }
        }
        let all_ended = updates
            .iter()
            .map(|u| u.pair.complete.map_or(u64::MAX, |c| c.index))
            .max()
            .unwrap_or(0);
        let settled = crate::check::settled_reads(reads.iter().map(|r| r.pair), all_ended);
        let mut final_reads = 0;
        for read in &mut reads {
            read.last = settled.contains(&read.pair.invoke.index);
            final_reads += usize::from(read.last);
        }
        Ok(Key {
            name,
            updates,
            writer,
            reads,
            final_reads,
        })
    }

    /// Every value each update supersedes, transitively.
    fn superseded(&self) -> Vec<HashSet<Val>> {
        let mut memo: HashMap<Val, HashSet<Val>> = HashMap::new();
        self.updates
            .iter()
            .map(|u| {
                let mut all = HashSet::new();
                for o in &u.observed {
                    all.insert(o.clone());
                    all.extend(self.closure(o, &mut memo, &mut HashSet::new()));
                }
                all
            })
            .collect()
    }

    /// What the write of `value` superseded, transitively (a cycle, which
    /// a bad history could hold, is cut).
    fn closure(
        &self,
        value: &Val,
        memo: &mut HashMap<Val, HashSet<Val>>,
        visiting: &mut HashSet<Val>,
    ) -> HashSet<Val> {
        if let Some(done) = memo.get(value) {
            return done.clone();
        }
        let mut all = HashSet::new();
        if let Some(&w) = self.writer.get(value) {
            if visiting.insert(value.clone()) {
                for o in &self.updates[w].observed {
                    all.insert(o.clone());
                    all.extend(self.closure(o, memo, visiting));
                }
                visiting.remove(value);
            }
        }
        memo.insert(value.clone(), all.clone());
        all
    }

    fn check(&self, report: &mut Report) {
        let superseded = self.superseded();
        let visible: HashSet<&Val> = self.reads.iter().flat_map(|r| &r.values).collect();
        let outcome = |u: &Update<'_, '_>| u.pair.outcome();
        let took_effect = |u: &Update<'_, '_>| {
            outcome(u) != OpType::Fail || u.value.as_ref().is_some_and(|v| visible.contains(v))
        };
        // Values superseded by an update that may have taken effect, and
        // by one that certainly did (acknowledged, or visible).
        let mut maybe_gone: HashSet<&Val> = HashSet::new();
        let mut surely_gone: HashMap<&Val, usize> = HashMap::new();
        for (i, u) in self.updates.iter().enumerate() {
            if took_effect(u) {
                maybe_gone.extend(&superseded[i]);
            }
            if outcome(u) == OpType::Ok || u.value.as_ref().is_some_and(|v| visible.contains(v)) {
                for s in &superseded[i] {
                    surely_gone.entry(s).or_insert(i);
                }
            }
        }
        let mut sibling_counts = Vec::new();
        // A write lost on every replica is one lost write: reported at the
        // first final read that lacks it.
        let mut reported_lost: HashSet<&Val> = HashSet::new();
        for read in &self.reads {
            let done = read.pair.complete.expect("only completed reads are kept");
            let proof = vec![read.pair.invoke.index, done.index];
            let node = done
                .node
                .as_deref()
                .map(|n| format!(" on {n}"))
                .unwrap_or_default();
            let what = format!(
                "{}: the {}read{node} at index {}",
                self.name,
                if read.last { "final " } else { "" },
                read.pair.invoke.index
            );
            for v in &read.values {
                match self.writer.get(v).map(|&w| &self.updates[w]) {
                    Some(w) if w.pair.invoke.index < done.index => {
                        if outcome(w) == OpType::Fail {
                            report.push(Anomaly {
                                kind: "failed-write-visible".into(),
                                message: format!(
                                    "{what} returned {v}, whose write at index {} failed",
                                    w.pair.invoke.index
                                ),
                                indices: proof.clone(),
                            });
                        }
                    }
                    _ => report.push(Anomaly {
                        kind: "phantom".into(),
                        message: format!(
                            "{what} returned {v}, which no write invoked before it wrote"
                        ),
                        indices: proof.clone(),
                    }),
                }
                for other in &read.values {
                    let newer = self.writer.get(other).map(|&w| &superseded[w]);
                    if newer.is_some_and(|s| s.contains(v)) {
                        report.push(Anomaly {
                            kind: "false-concurrency".into(),
                            message: format!(
                                "{what} returned {v} and {other} as siblings, but the write of \
                                 {other} saw {v}"
                            ),
                            indices: proof.clone(),
                        });
                    }
                }
            }
            if !read.last {
                continue;
            }
            sibling_counts.push(read.values.len());
            for v in &read.values {
                if let Some(&by) = surely_gone.get(v) {
                    let u = &self.updates[by];
                    report.push(Anomaly {
                        kind: "superseded-kept".into(),
                        message: format!(
                            "{what} still returned {v}, which the {} at index {} saw and \
                             replaced",
                            if u.value.is_some() { "write" } else { "delete" },
                            u.pair.invoke.index
                        ),
                        indices: [proof.clone(), indices(u.pair)].concat(),
                    });
                }
            }
            let present: HashSet<&Val> = read.values.iter().collect();
            for w in &self.updates {
                let Some(v) = w.value.as_ref() else { continue };
                if outcome(w) != OpType::Ok
                    || present.contains(v)
                    || maybe_gone.contains(v)
                    || !reported_lost.insert(v)
                {
                    continue;
                }
                report.acked_lost += 1;
                let began = w.pair.invoke.index;
                let winners: Vec<&Update<'_, '_>> = read
                    .values
                    .iter()
                    .filter_map(|s| self.writer.get(s).map(|&i| &self.updates[i]))
                    .collect();
                let earlier = !winners.is_empty()
                    && winners
                        .iter()
                        .all(|s| s.pair.complete.is_some_and(|c| c.index < began));
                let (kind, why) = if earlier {
                    (
                        "lost-to-earlier",
                        format!(
                            "; what it kept was written by a write that completed before this \
                             one began (index {}): a clock ahead won",
                            winners[0].pair.invoke.index
                        ),
                    )
                } else {
                    ("lost", String::new())
                };
                report.push(Anomaly {
                    kind: kind.into(),
                    message: format!(
                        "{what} lacks {v}, acknowledged by the write at index {began}, and no \
                         write or delete that saw it took effect{why}"
                    ),
                    indices: [proof.clone(), indices(w.pair)].concat(),
                });
            }
        }
        let acked = self
            .updates
            .iter()
            .filter(|u| u.value.is_some() && outcome(u) == OpType::Ok)
            .count();
        if acked > 0 && self.final_reads == 0 {
            report.unread.push(self.name.clone());
        }
        report.keys += 1;
        report.acked += acked;
        for n in sibling_counts {
            *report.final_siblings.entry(n).or_default() += 1;
        }
    }
}

fn indices(pair: &Completed<'_>) -> Vec<u64> {
    [Some(pair.invoke.index), pair.complete.map(|c| c.index)]
        .into_iter()
        .flatten()
        .collect()
}

#[derive(Default)]
struct Report {
    anomalies: Vec<Anomaly>,
    counts: BTreeMap<String, usize>,
    keys: usize,
    acked: usize,
    acked_lost: usize,
    unread: Vec<String>,
    /// Final reads by how many siblings they returned.
    final_siblings: BTreeMap<usize, usize>,
}

impl Report {
    fn push(&mut self, anomaly: Anomaly) {
        let count = self.counts.entry(anomaly.kind.clone()).or_default();
        *count += 1;
        if *count <= DETAILED {
            self.anomalies.push(anomaly);
        }
    }

    fn result(mut self) -> CheckResult {
        for (kind, &count) in &self.counts {
            if count > DETAILED {
                self.anomalies.push(Anomaly {
                    kind: kind.clone(),
                    message: format!("{} more {kind} not listed", count - DETAILED),
                    indices: Vec::new(),
                });
            }
        }
        let verdict = if !self.counts.is_empty() {
            Verdict::Invalid
        } else if !self.unread.is_empty() {
            self.anomalies.push(Anomaly {
                kind: "not-read".into(),
                message: format!(
                    "no successful final read of {}: its writes cannot be confirmed",
                    self.unread.join(", ")
                ),
                indices: Vec::new(),
            });
            Verdict::Unknown
        } else {
            Verdict::Valid
        };
        let found = if self.counts.is_empty() {
            "nothing wrong".to_string()
        } else {
            self.counts
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        CheckResult {
            checker: "siblings".into(),
            verdict,
            summary: format!(
                "{} key(s), {} acknowledged write(s): {found}",
                self.keys, self.acked
            ),
            anomalies: self.anomalies,
            details: json!({
                "acknowledged": self.acked,
                "lost": self.acked_lost,
                "anomalies": self.counts,
                "final_siblings_histogram": self.final_siblings,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OpType::{Fail, Info, Invoke, Ok};

    fn history(rows: &[(u64, OpType, &str, Value)]) -> History {
        crate::check::rows_history("k", rows)
    }

    fn write(v: i64, observed: &[i64]) -> Value {
        json!({"value": v, "observed": observed})
    }

    fn kinds(result: &CheckResult) -> Vec<&str> {
        result.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    /// Two concurrent writes, then a third that saw only the first, then a
    /// final read returning `last`.
    fn concurrent_then(last: Value) -> History {
        history(&[
            (1, Invoke, F_WRITE, write(1, &[])),
            (2, Invoke, F_WRITE, write(2, &[])),
            (1, Ok, F_WRITE, write(1, &[])),
            (2, Ok, F_WRITE, write(2, &[])),
            (1, Invoke, F_WRITE, write(3, &[1])),
            (1, Ok, F_WRITE, write(3, &[1])),
            (3, Invoke, F_READ, Value::Null),
            (3, Ok, F_READ, last),
        ])
    }

    #[test]
    fn the_maximal_acknowledged_writes_as_siblings_are_valid() {
        let result = check(&concurrent_then(json!([3, 2])));
        assert_eq!(result.verdict, Verdict::Valid, "{result:?}");
        assert_eq!(result.details["final_siblings_histogram"]["2"], 1);
    }

    #[test]
    fn reads_recorded_with_their_context_are_read_as_their_siblings() {
        let with_context = |siblings: Value| json!({"siblings": siblings, "context": "01ab"});
        let result = check(&concurrent_then(with_context(json!([3, 2]))));
        assert_eq!(result.verdict, Verdict::Valid, "{result:?}");
        let result = check(&concurrent_then(with_context(json!([3]))));
        assert_eq!(kinds(&result), ["lost"]);
    }

    #[test]
    fn a_concurrent_write_dropped_is_lost() {
        let result = check(&concurrent_then(json!([3])));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(kinds(&result), ["lost"]);
        assert_eq!(result.anomalies[0].indices, vec![6, 7, 1, 3]);
    }

    #[test]
    fn a_superseded_value_kept_beside_its_successor_is_false_concurrency() {
        let result = check(&concurrent_then(json!([3, 2, 1])));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert!(kinds(&result).contains(&"false-concurrency"), "{result:?}");
        assert!(kinds(&result).contains(&"superseded-kept"), "{result:?}");
    }

    #[test]
    fn a_value_never_written_is_a_phantom_and_a_failed_one_must_not_show() {
        let result = check(&concurrent_then(json!([3, 2, 9])));
        assert_eq!(kinds(&result), ["phantom"]);
        let h = history(&[
            (1, Invoke, F_WRITE, write(1, &[])),
            (1, Fail, F_WRITE, write(1, &[])),
            (2, Invoke, F_READ, Value::Null),
            (2, Ok, F_READ, json!([1])),
        ]);
        assert_eq!(kinds(&check(&h)), ["failed-write-visible"]);
    }

    #[test]
    fn lww_keeping_a_write_that_ended_before_the_lost_one_began_is_lost_to_earlier() {
        // Write 1 completes; write 2 (which did not see 1) begins later and
        // is acknowledged; LWW keeps 1 because its node's clock ran ahead.
        let h = history(&[
            (1, Invoke, F_WRITE, write(1, &[])),
            (1, Ok, F_WRITE, write(1, &[])),
            (2, Invoke, F_WRITE, write(2, &[])),
            (2, Ok, F_WRITE, write(2, &[])),
            (3, Invoke, F_READ, Value::Null),
            (3, Ok, F_READ, json!([1])),
        ]);
        let result = check(&h);
        assert_eq!(kinds(&result), ["lost-to-earlier"]);
        // Had write 2 seen write 1 and LWW kept 2, nothing is wrong.
        let h = history(&[
            (1, Invoke, F_WRITE, write(1, &[])),
            (1, Ok, F_WRITE, write(1, &[])),
            (2, Invoke, F_WRITE, write(2, &[1])),
            (2, Ok, F_WRITE, write(2, &[1])),
            (3, Invoke, F_READ, Value::Null),
            (3, Ok, F_READ, json!([2])),
        ]);
        assert_eq!(check(&h).verdict, Verdict::Valid);
    }

    #[test]
    fn a_delete_or_an_unknown_write_that_saw_a_value_may_have_removed_it() {
        let h = history(&[
            (1, Invoke, F_WRITE, write(1, &[])),
            (1, Ok, F_WRITE, write(1, &[])),
            (2, Invoke, F_DELETE, json!({"observed": [1]})),
            (2, Ok, F_DELETE, json!({"observed": [1]})),
            (3, Invoke, F_READ, Value::Null),
            (3, Ok, F_READ, json!([])),
        ]);
        assert_eq!(check(&h).verdict, Verdict::Valid);
        let h = history(&[
            (1, Invoke, F_WRITE, write(1, &[])),
            (1, Ok, F_WRITE, write(1, &[])),
            (2, Invoke, F_WRITE, write(2, &[1])),
            (2, Info, F_WRITE, write(2, &[1])),
            (3, Invoke, F_READ, Value::Null),
            (3, Ok, F_READ, Value::Null),
        ]);
        assert_eq!(check(&h).verdict, Verdict::Valid);
        // But an acknowledged delete that saw a value and the value kept is
        // wrong.
        let h = history(&[
            (1, Invoke, F_WRITE, write(1, &[])),
            (1, Ok, F_WRITE, write(1, &[])),
            (2, Invoke, F_DELETE, json!({"observed": [1]})),
            (2, Ok, F_DELETE, json!({"observed": [1]})),
            (3, Invoke, F_READ, Value::Null),
            (3, Ok, F_READ, json!([1])),
        ]);
        assert_eq!(kinds(&check(&h)), ["superseded-kept"]);
    }

    #[test]
    fn only_where_a_replica_settled_counts_not_the_rounds_it_took_to_catch_up() {
        let rows = |first: Value, last: Value| {
            history(&[
                (1, Invoke, F_WRITE, write(1, &[])),
                (1, Ok, F_WRITE, write(1, &[])),
                (1, Invoke, F_WRITE, write(2, &[1])),
                (1, Ok, F_WRITE, write(2, &[1])),
                (3, Invoke, F_READ, Value::Null),
                (3, Ok, F_READ, first),
                (3, Invoke, F_READ, Value::Null),
                (3, Ok, F_READ, last),
            ])
        };
        // n3 had 1 but not yet 2, then caught up.
        assert_eq!(check(&rows(json!([1]), json!([2]))).verdict, Verdict::Valid);
        // Settling on the superseded value is wrong.
        assert_eq!(
            kinds(&check(&rows(json!([2]), json!([1])))),
            ["superseded-kept", "lost-to-earlier"]
        );
    }

    #[test]
    fn transitive_supersession_counts_and_no_final_read_is_unknown() {
        let h = history(&[
            (1, Invoke, F_WRITE, write(1, &[])),
            (1, Ok, F_WRITE, write(1, &[])),
            (1, Invoke, F_WRITE, write(2, &[1])),
            (1, Ok, F_WRITE, write(2, &[1])),
            (1, Invoke, F_WRITE, write(3, &[2])),
            (1, Ok, F_WRITE, write(3, &[2])),
            (2, Invoke, F_READ, Value::Null),
            (2, Ok, F_READ, json!([3, 1])),
        ]);
        assert_eq!(
            kinds(&check(&h)),
            ["false-concurrency", "superseded-kept"],
            "1 is superseded by 3 through 2"
        );
        let h = history(&[
            (1, Invoke, F_WRITE, write(1, &[])),
            (1, Ok, F_WRITE, write(1, &[])),
        ]);
        assert_eq!(check(&h).verdict, Verdict::Unknown);
    }
}
