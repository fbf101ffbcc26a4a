//! The observed-remove set checker: adds and removes of elements of
//! add-wins observed-remove sets (multi-leader `sadd` / `srem`), judged by
//! what each remove could have observed.
//!
//! The history records:
//!
//! | `f` | `value` on invoke and `ok` | `value` of an `ok` read |
//! | --- | --- | --- |
//! | `sadd` | the element | |
//! | `srem` | the element | |
//! | `read` | | the members, an array (`[]` or `null`: empty) |
//!
//! each with its `key` and the `node` that answered.
//!
//! ## What the set promises
//!
//! An add is an event; an element is a member while some add of it
//! survives. A remove on node *n* deletes exactly the adds of the element
//! that *n* had applied when it ran (it *observed* them), and nothing
//! else: an add it did not observe (made elsewhere and not yet
//! replicated to *n*, or made after it) survives it. So a concurrent add
//! wins over a remove, and a remove wins over every add it saw. After
//! the faults heal and the replicas exchange everything, every replica
//! holds the same members.
//!
//! The history does not say which adds a remove observed, so the checker
//! uses what it can prove from real time and from the worker's own
//! reads. An add or remove *may have taken effect* unless it `fail`ed.
//!
//! - A remove *R* **could have observed** an add *A* of its element when
//!   *A* was invoked before *R* completed (an add cannot be applied
//!   anywhere before it is invoked). *R* still running at the end of the
//!   history could have observed every add.
//! - A remove *R* acknowledged by node *n* **certainly observed** an add
//!   *A* when *A* was acknowledged by the same node *n* before *R* was
//!   invoked (a node applies its own add before acknowledging it), or when
//!   the same process's operation just before *R* was a read of the key
//!   on *n* that returned the element and *A* is the only add of the
//!   element that may have taken effect and was invoked before that read
//!   completed (the read saw an add, and that is the only one it can have
//!   been). The workload removes only elements its last read returned.
//!
//! The final reads are the *settled* ones: each node's last successful
//! read of the key begun after every add and remove ended (a run reads
//! every node in rounds until they agree; earlier rounds show replicas
//! still catching up). Then, per key:
//!
//! - **diverged**: two settled final reads return different members;
//! - **lost**: an acknowledged add of *e*, which no remove of *e* that may
//!   have taken effect could have observed, is missing from a settled
//!   final read (the add survives every remove: add wins). Each add
//!   counts once, naming the replicas that lack it;
//! - **resurrected**: a settled final read returns *e* although an
//!   acknowledged remove of *e* certainly observed every add of *e* that
//!   may have taken effect (the remove was the element's last effect);
//! - **phantom**: any successful read returns an element no add that may
//!   have taken effect had been invoked for before the read completed
//!   (never added, or added only by `fail`ed adds).
//!
//! Elements whose fate the history leaves open (an add that some remove
//! may or may not have seen, a remove that did not certainly see every
//! add) may be present or absent. The check is sound, not complete.
//!
//! The verdict is invalid if any of the above is found; else unknown if a
//! key with acknowledged adds has no settled final read; else valid.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

use crate::check::{settled_reads, Anomaly, CheckResult, Verdict};
use crate::history::{Completed, History, OpType, Process, F_READ};

/// The `f` of an add to an observed-remove set.
pub const F_SADD: &str = "sadd";
/// The `f` of a remove from an observed-remove set.
pub const F_SREM: &str = "srem";

/// How many anomalies of one kind are listed; the rest are counted.
const DETAILED: usize = 20;

/// An element as written and read: its JSON text.
type Elem = String;

/// Checks an observed-remove set history (see the module docs).
pub fn check(history: &History) -> CheckResult {
    let pairs = history.pairs();
    let mut keys: BTreeMap<Option<&str>, Key<'_, '_>> = BTreeMap::new();
    // Each process's previous operation, for a remove's preceding read.
    let mut previous: HashMap<Process, usize> = HashMap::new();
    for (i, pair) in pairs.iter().enumerate() {
        let key = keys.entry(pair.invoke.key.as_deref()).or_default();
        let before = previous.insert(pair.invoke.process, i).map(|j| &pairs[j]);
        match pair.invoke.f.as_str() {
            F_READ => {
                let Some(done) = pair.complete.filter(|c| c.kind == OpType::Ok) else {
                    continue;
                };
                match members(&done.value) {
                    Some(members) => key.reads.push(Read {
                        pair,
                        members,
                        settled: false,
                    }),
                    None => {
                        return unsupported(
                            format!("a read returned {}, not an array of members", done.value),
                            pair,
                        )
                    }
                }
            }
            f @ (F_SADD | F_SREM) => {
                if !matches!(pair.invoke.value, Value::Number(_) | Value::String(_)) {
                    return unsupported(
                        format!("the {f} names {}, not an element", pair.invoke.value),
                        pair,
                    );
                }
                let element = pair.invoke.value.to_string();
                let update = Update {
                    pair,
                    element: element.clone(),
                    read_before: None,
                };
                if f == F_SADD {
                    key.adds.push(update);
                } else {
                    // The read just before, on the same key, that returned
                    // the element: the remove saw what that read saw.
                    let read_before = before.filter(|b| {
                        b.invoke.f == F_READ
                            && b.invoke.key == pair.invoke.key
                            && b.complete.is_some_and(|c| {
                                c.kind == OpType::Ok
                                    && members(&c.value).is_some_and(|m| m.contains(&element))
                            })
                    });
                    key.removes.push(Update {
                        read_before: read_before.and_then(|b| b.complete.map(|c| c.index)),
                        ..update
                    });
                }
            }
            other => {
                return unsupported(
                    format!("operation {other:?} is not part of an observed-remove set history"),
                    pair,
                )
            }
        }
    }
    let mut report = Report::default();
    for (name, key) in &mut keys {
        let name = name.map_or_else(|| "the set".to_string(), |k| format!("key {k}"));
        key.check(&name, &mut report);
    }
    report.result()
}

/// The members a read returned, or `None` when it is not an array.
fn members(value: &Value) -> Option<BTreeSet<Elem>> {
    match value {
        Value::Null => Some(BTreeSet::new()),
        Value::Array(items) => Some(items.iter().map(Value::to_string).collect()),
        _ => None,
    }
}

fn unsupported(message: String, pair: &Completed<'_>) -> CheckResult {
    CheckResult::unsupported("orset", message, vec![pair.invoke.index])
}

/// One add or remove.
struct Update<'p, 'h> {
    pair: &'p Completed<'h>,
    element: Elem,
    /// A remove: the completion index of the same process's read just
    /// before it, when that read returned the element.
    read_before: Option<u64>,
}

impl Update<'_, '_> {
    fn may_have_taken_effect(&self) -> bool {
        self.pair.outcome() != OpType::Fail
    }

    fn acknowledged(&self) -> bool {
        self.pair.outcome() == OpType::Ok
    }

    fn completed_at(&self) -> u64 {
        self.pair.complete.map_or(u64::MAX, |c| c.index)
    }

    fn node(&self) -> Option<&str> {
        self.pair.complete.and_then(|c| c.node.as_deref())
    }
}

/// One successful read.
struct Read<'p, 'h> {
    pair: &'p Completed<'h>,
    members: BTreeSet<Elem>,
    /// A node's settled final read.
    settled: bool,
}

#[derive(Default)]
struct Key<'p, 'h> {
    adds: Vec<Update<'p, 'h>>,
    removes: Vec<Update<'p, 'h>>,
    reads: Vec<Read<'p, 'h>>,
}

impl Key<'_, '_> {
    /// Whether remove `r` could have observed add `a` (see the module docs).
    fn could_observe(r: &Update<'_, '_>, a: &Update<'_, '_>) -> bool {
        a.pair.invoke.index < r.completed_at()
    }

    /// Whether acknowledged remove `r` certainly observed add `a`, given
    /// the adds of its element that may have taken effect.
    fn certainly_observed(
        r: &Update<'_, '_>,
        a: &Update<'_, '_>,
        effective: &[&Update<'_, '_>],
    ) -> bool {
        let Some(done) = r.pair.complete.filter(|c| c.kind == OpType::Ok) else {
            return false;
        };
        let same_node_before = a.acknowledged()
            && a.node().is_some()
            && a.node() == done.node.as_deref()
            && a.completed_at() < r.pair.invoke.index;
        let only_one_read = r.read_before.is_some_and(|read_done| {
            let candidates: Vec<_> = effective
                .iter()
                .filter(|x| x.pair.invoke.index < read_done)
                .collect();
            candidates.len() == 1 && std::ptr::eq(*candidates[0], a)
        });
        same_node_before || only_one_read
    }

    fn check(&mut self, name: &str, report: &mut Report) {
        let ended = self
            .adds
            .iter()
            .chain(&self.removes)
            .map(Update::completed_at)
            .max()
            .unwrap_or(0);
        let settled = settled_reads(self.reads.iter().map(|r| r.pair), ended);
        for read in &mut self.reads {
            read.settled = settled.contains(&read.pair.invoke.index);
        }
        let finals: Vec<&Read<'_, '_>> = self.reads.iter().filter(|r| r.settled).collect();
        report.keys += 1;
        report.acked_adds += self.adds.iter().filter(|a| a.acknowledged()).count();
        report.acked_removes += self.removes.iter().filter(|r| r.acknowledged()).count();
        if finals.is_empty() {
            if self.adds.iter().any(Update::acknowledged) {
                report.unread.push(name.to_owned());
            }
        } else {
            report.final_members += finals[0].members.len();
        }

        // Diverged: the settled replicas disagree.
        if let Some(first) = finals.first() {
            if finals.iter().any(|r| r.members != first.members) {
                let held: Vec<String> = finals
                    .iter()
                    .map(|r| {
                        let node = r.pair.complete.and_then(|c| c.node.as_deref());
                        let m: Vec<&str> = r.members.iter().map(String::as_str).collect();
                        format!("{}: [{}]", node.unwrap_or("?"), m.join(", "))
                    })
                    .collect();
                report.push(Anomaly {
                    kind: "diverged".into(),
                    message: format!(
                        "{name}: the replicas settled on different members: {}",
                        held.join("; ")
                    ),
                    indices: finals
                        .iter()
                        .filter_map(|r| r.pair.complete.map(|c| c.index))
                        .collect(),
                });
            }
        }

        let mut by_element: BTreeMap<&str, (Vec<&Update<'_, '_>>, Vec<&Update<'_, '_>>)> =
            BTreeMap::new();
        for a in &self.adds {
            by_element.entry(&a.element).or_default().0.push(a);
        }
        for r in &self.removes {
            by_element.entry(&r.element).or_default().1.push(r);
        }
        let present_somewhere = |e: &str| finals.iter().any(|r| r.members.contains(e));
        for (element, (adds, removes)) in &by_element {
            let effective: Vec<&Update<'_, '_>> = adds
                .iter()
                .copied()
                .filter(|a| a.may_have_taken_effect())
                .collect();
            // Lost: an acknowledged add no remove could have observed.
            for a in adds.iter().filter(|a| a.acknowledged()) {
                let covered = removes
                    .iter()
                    .any(|r| r.may_have_taken_effect() && Self::could_observe(r, a));
                if covered {
                    continue;
                }
                let lacking: Vec<&Read<'_, '_>> = finals
                    .iter()
                    .copied()
                    .filter(|r| !r.members.contains(*element))
                    .collect();
                if lacking.is_empty() {
                    continue;
                }
                report.lost += 1;
                let nodes: Vec<&str> = lacking
                    .iter()
                    .map(|r| {
                        r.pair
                            .complete
                            .and_then(|c| c.node.as_deref())
                            .unwrap_or("?")
                    })
                    .collect();
                let mut indices = indices(a.pair);
                indices.extend(
                    lacking
                        .iter()
                        .filter_map(|r| r.pair.complete.map(|c| c.index)),
                );
                report.push(Anomaly {
                    kind: "lost".into(),
                    message: format!(
                        "{name}: the acknowledged add of {element} (index {}) is missing from the \
                         final read of {}, and no remove of it could have observed it",
                        a.pair.invoke.index,
                        nodes.join(", ")
                    ),
                    indices,
                });
            }
            // Resurrected: a remove that saw every add, and the element is back.
            if present_somewhere(element) {
                if removes.iter().any(|r| r.acknowledged()) {
                    report.removed_yet_present += 1;
                }
                let winner = removes.iter().find(|r| {
                    !effective.is_empty()
                        && effective
                            .iter()
                            .all(|a| Self::certainly_observed(r, a, &effective))
                });
                if let Some(r) = winner {
                    let mut indices = indices(r.pair);
                    indices.extend(
                        finals
                            .iter()
                            .filter(|f| f.members.contains(*element))
                            .filter_map(|f| f.pair.complete.map(|c| c.index)),
                    );
                    report.push(Anomaly {
                        kind: "resurrected".into(),
                        message: format!(
                            "{name}: {element} is in a final read, but the acknowledged remove \
                             at index {} had observed every add of it ({} add(s))",
                            r.pair.invoke.index,
                            effective.len()
                        ),
                        indices,
                    });
                }
            }
        }

        // Phantom: a read returns an element no add had been invoked for.
        for read in &self.reads {
            let done = read.pair.complete.expect("reads are completed");
            for element in &read.members {
                let added = by_element.get(element.as_str()).is_some_and(|(adds, _)| {
                    adds.iter()
                        .any(|a| a.may_have_taken_effect() && a.pair.invoke.index < done.index)
                });
                if !added {
                    report.push(Anomaly {
                        kind: "phantom".into(),
                        message: format!(
                            "{name}: the read at index {} returned {element}, which no add that \
                             may have taken effect had been invoked for",
                            done.index
                        ),
                        indices: indices(read.pair),
                    });
                }
            }
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
    acked_adds: usize,
    acked_removes: usize,
    lost: usize,
    final_members: usize,
    /// Elements present at the end although an acknowledged remove of
    /// them exists: add-wins (or re-adds) at work.
    removed_yet_present: usize,
    unread: Vec<String>,
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
                    "no settled final read of {}: its adds cannot be confirmed",
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
            checker: "orset".into(),
            verdict,
            summary: format!(
                "{} key(s), {} acknowledged add(s), {} acknowledged remove(s): {found}",
                self.keys, self.acked_adds, self.acked_removes
            ),
            anomalies: self.anomalies,
            details: json!({
                "acknowledged_adds": self.acked_adds,
                "acknowledged_removes": self.acked_removes,
                "lost": self.lost,
                "final_members": self.final_members,
                "removed_yet_present": self.removed_yet_present,
                "anomalies": self.counts,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OpType::{Fail, Info, Invoke, Ok};

    /// Rows on key `k`; process `p` is answered by node `n<p>`.
    fn history(rows: &[(u64, OpType, &str, Value)]) -> History {
        crate::check::rows_history("k", rows)
    }

    fn kinds(result: &CheckResult) -> Vec<&str> {
        result.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    fn read(p: u64, members: Value) -> [(u64, OpType, &'static str, Value); 2] {
        [(p, Invoke, F_READ, Value::Null), (p, Ok, F_READ, members)]
    }

    /// `rows`, then settled final reads of `members` from processes 7 and 8.
    fn with_finals(rows: &[(u64, OpType, &str, Value)], finals: [Value; 2]) -> CheckResult {
        let mut all = rows.to_vec();
        let [a, b] = finals;
        all.extend(read(7, a));
        all.extend(read(8, b));
        check(&history(&all))
    }

    /// Node n1 adds 1; node n2 reads it and removes it while n1 adds it
    /// again, concurrently (n2's remove cannot have seen the re-add: it
    /// completes before the re-add is invoked... on the other side of the
    /// partition it could not have anyway).
    fn add_remove_readd() -> Vec<(u64, OpType, &'static str, Value)> {
        let mut rows = vec![(1, Invoke, F_SADD, json!(1)), (1, Ok, F_SADD, json!(1))];
        rows.extend(read(2, json!([1])));
        rows.extend([
            (2, Invoke, F_SREM, json!(1)),
            (2, Ok, F_SREM, json!(1)),
            (1, Invoke, F_SADD, json!(1)),
            (1, Ok, F_SADD, json!(1)),
        ]);
        rows
    }

    #[test]
    fn an_add_the_remove_could_not_have_seen_wins() {
        let result = with_finals(&add_remove_readd(), [json!([1]), json!([1])]);
        assert_eq!(result.verdict, Verdict::Valid, "{result:#?}");
        assert_eq!(result.details["removed_yet_present"], 1);
        assert_eq!(result.details["acknowledged_adds"], 2);
        assert_eq!(result.details["acknowledged_removes"], 1);
    }

    #[test]
    fn a_lost_add_is_found_once_naming_the_replicas_that_lack_it() {
        // The re-add was invoked after the remove completed: it must win.
        let result = with_finals(&add_remove_readd(), [json!([]), json!([])]);
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(kinds(&result), ["lost"]);
        assert_eq!(result.details["lost"], 1);
        assert!(
            result.anomalies[0].message.contains("n7, n8"),
            "{result:#?}"
        );
        // An add never removed, missing on one replica only: lost, and the
        // replicas diverged.
        let rows = [(1, Invoke, F_SADD, json!(5)), (1, Ok, F_SADD, json!(5))];
        let result = with_finals(&rows, [json!([5]), json!([])]);
        assert_eq!(kinds(&result), ["diverged", "lost"]);
    }

    #[test]
    fn a_remove_concurrent_with_an_add_may_or_may_not_have_seen_it() {
        // The re-add is invoked before the remove completes: either way.
        let mut rows = vec![(1, Invoke, F_SADD, json!(1)), (1, Ok, F_SADD, json!(1))];
        rows.extend(read(2, json!([1])));
        rows.extend([
            (2, Invoke, F_SREM, json!(1)),
            (1, Invoke, F_SADD, json!(1)),
            (2, Ok, F_SREM, json!(1)),
            (1, Ok, F_SADD, json!(1)),
        ]);
        for last in [json!([]), json!([1])] {
            let result = with_finals(&rows, [last.clone(), last]);
            assert_eq!(result.verdict, Verdict::Valid, "{result:#?}");
        }
        // A remove whose outcome is unknown may have removed the add.
        let rows = [
            (1, Invoke, F_SADD, json!(3)),
            (1, Ok, F_SADD, json!(3)),
            (2, Invoke, F_SREM, json!(3)),
            (2, Info, F_SREM, json!(3)),
        ];
        assert_eq!(
            with_finals(&rows, [json!([]), json!([])]).verdict,
            Verdict::Valid
        );
    }

    #[test]
    fn an_element_whose_remove_saw_every_add_must_stay_removed() {
        // n1 adds and removes on its own node: the remove saw the add.
        let rows = [
            (1, Invoke, F_SADD, json!(4)),
            (1, Ok, F_SADD, json!(4)),
            (1, Invoke, F_SREM, json!(4)),
            (1, Ok, F_SREM, json!(4)),
        ];
        assert_eq!(
            with_finals(&rows, [json!([]), json!([])]).verdict,
            Verdict::Valid
        );
        let result = with_finals(&rows, [json!([4]), json!([4])]);
        assert_eq!(kinds(&result), ["resurrected"], "{result:#?}");
        // n2 saw the one add through its read, then removed it.
        let mut rows = vec![(1, Invoke, F_SADD, json!(6)), (1, Ok, F_SADD, json!(6))];
        rows.extend(read(2, json!([6])));
        rows.extend([(2, Invoke, F_SREM, json!(6)), (2, Ok, F_SREM, json!(6))]);
        let result = with_finals(&rows, [json!([]), json!([6])]);
        assert_eq!(kinds(&result), ["diverged", "resurrected"], "{result:#?}");
        // With two adds before the read, the read does not say which one n2
        // saw: the element may stay.
        rows.splice(
            0..0,
            [(3, Invoke, F_SADD, json!(6)), (3, Ok, F_SADD, json!(6))],
        );
        let result = with_finals(&rows, [json!([6]), json!([6])]);
        assert_eq!(result.verdict, Verdict::Valid, "{result:#?}");
    }

    #[test]
    fn an_element_never_added_or_only_by_failed_adds_is_a_phantom() {
        let mut rows = vec![(1, Invoke, F_SADD, json!(1)), (1, Fail, F_SADD, json!(1))];
        rows.extend(read(2, json!([1, 2])));
        rows.extend([(3, Invoke, F_SADD, json!(9)), (3, Ok, F_SADD, json!(9))]);
        let result = with_finals(&rows, [json!([9]), json!([9])]);
        assert_eq!(kinds(&result), ["phantom", "phantom"], "{result:#?}");
        // An add still running when the read completed may show.
        let mut rows = vec![(1, Invoke, F_SADD, json!(1))];
        rows.extend(read(2, json!([1])));
        rows.push((1, Info, F_SADD, json!(1)));
        let result = with_finals(&rows, [json!([1]), json!([1])]);
        assert_eq!(result.verdict, Verdict::Valid, "{result:#?}");
    }

    #[test]
    fn acknowledged_adds_without_a_final_read_are_unknown_and_strangers_unsupported() {
        let rows = [(1, Invoke, F_SADD, json!(1)), (1, Ok, F_SADD, json!(1))];
        let result = check(&history(&rows));
        assert_eq!(result.verdict, Verdict::Unknown);
        assert_eq!(kinds(&result), ["not-read"]);
        let rows = [(1, Invoke, "incr", json!(1)), (1, Ok, "incr", json!(1))];
        assert_eq!(kinds(&check(&history(&rows))), ["unsupported"]);
        let mut rows = vec![(1, Invoke, F_SADD, json!(1)), (1, Ok, F_SADD, json!(1))];
        rows.extend(read(2, json!({"a": 1})));
        assert_eq!(kinds(&check(&history(&rows))), ["unsupported"]);
    }
}
