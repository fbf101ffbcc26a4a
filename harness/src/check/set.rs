//! The set checker: Jepsen's set-full analysis, for histories of unique
//! adds and reads of the whole set.
//!
//! An `add` puts one element (its `value`) into the set; an `ok` `read`
//! returns every element present, as an array. Our set workload reads once
//! per node after the faults are healed, but reads may come anywhere, and
//! keyed histories (Jepsen's independent sets) are checked per key.
//!
//! For every element, as Jepsen's `set-full` does:
//!
//! - it is *known* from the completion of its `ok` add, or of the first read
//!   that returned it, whichever came first;
//! - the *last present* read is the last-invoked read that returned it, the
//!   *last absent* read the last-invoked read that did not.
//!
//! Its outcome is then:
//!
//! | outcome | when | verdict |
//! | --- | --- | --- |
//! | `lost` | known, and the last absent read began after it was known and either after the last present read or after every add ended | invalid |
//! | `stale` | the last read has it, but a read begun after it was known did not: it appeared late | valid (counted) |
//! | `ok` | acknowledged, and every read begun after it was known has it | valid |
//! | `recovered` | `info` (or unfinished) add, present in every read since it first appeared | valid |
//! | `never-read` | known, but no read began after that | valid (counted) |
//! | `not-added` | `info` add never seen: it did not happen | valid |
//! | `failed-add-present` | a `fail` add that a read returned | invalid |
//!
//! A read begun after every add ended is a *final* read. Our set workload
//! makes one final read per node after healing, and every node must then
//! hold every acknowledged element: a final read that lacks one proves it
//! lost on that node even if another node's later read has it (Jepsen's
//! `set-full`, reading one set, would call that stale).
//!
//! Jepsen's `set-full` lets a failed add that shows up pass as recovered;
//! here `fail` means the operation certainly did not take effect (the
//! harness records it only for definite errors), so a read that returns
//! it contradicts the history and is reported. Reads also must not return
//! an element no add attempted (`unexpected`) or one element twice
//! (`duplicated`).
//!
//! The verdict is invalid if any element is lost, failed-add-present,
//! unexpected or duplicated; else unknown if nothing could be confirmed
//! (no successful read, a final read that failed, a read whose value is no
//! array, or no element present in the end); else valid.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde_json::{json, Value};

use crate::check::{Anomaly, CheckResult, Verdict};
use crate::history::{Completed, History, OpType, F_ADD, F_READ};

/// How many elements of one kind get an anomaly each; the rest are summed
/// up in one.
const DETAILED: usize = 20;
/// How many stale elements `details` describes (the latest to appear).
const STALE_DETAILS: usize = 100;

/// Checks a set history (see the module docs).
pub fn check(history: &History) -> CheckResult {
    let pairs = history.pairs();
    Analysis::new(&pairs).result()
}

/// A set element: integers order numerically, anything else by its JSON.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Elem {
    Int(i64),
    Other(String),
}

impl Elem {
    fn of(value: &Value) -> Elem {
        value
            .as_i64()
            .map_or_else(|| Elem::Other(value.to_string()), Elem::Int)
    }

    fn json(&self) -> Value {
        match self {
            Elem::Int(i) => json!(i),
            Elem::Other(text) => serde_json::from_str(text).unwrap_or(Value::String(text.clone())),
        }
    }
}

impl fmt::Display for Elem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Elem::Int(i) => write!(f, "{i}"),
            Elem::Other(text) => f.write_str(text),
        }
    }
}

/// A successful read.
struct Read<'p, 'h> {
    pair: &'p Completed<'h>,
    /// Each element returned, with how many times.
    elements: HashMap<Elem, usize>,
    /// Begun after every add ended.
    last: bool,
}

impl Read<'_, '_> {
    fn invoked(&self) -> u64 {
        self.pair.invoke.index
    }

    fn describe(&self) -> String {
        let node = self
            .pair
            .complete
            .and_then(|c| c.node.as_deref())
            .map(|n| format!(" on {n}"))
            .unwrap_or_default();
        let done = self.pair.complete.map_or(0, |c| c.index);
        let last = if self.last { "final " } else { "" };
        format!(
            "the {last}read{node} invoked at index {} (completed at {done})",
            self.invoked()
        )
    }
}

fn indices(pair: &Completed<'_>) -> Vec<u64> {
    [Some(pair.invoke.index), pair.complete.map(|c| c.index)]
        .into_iter()
        .flatten()
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Outcome {
    Ok,
    Lost,
    Stale,
    Recovered,
    NeverRead,
    NotAdded,
    FailedAddPresent,
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::Lost,
        Outcome::Stale,
        Outcome::Recovered,
        Outcome::NeverRead,
        Outcome::NotAdded,
        Outcome::FailedAddPresent,
    ];

    fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Lost => "lost",
            Outcome::Stale => "stale",
            Outcome::Recovered => "recovered",
            Outcome::NeverRead => "never-read",
            Outcome::NotAdded => "not-added",
            Outcome::FailedAddPresent => "failed-add-present",
        }
    }
}

/// What the history says about one element.
struct Element<'p, 'h> {
    key: Option<String>,
    elem: Elem,
    /// Its add (the most conclusive one, if it was added more than once).
    add: &'p Completed<'h>,
    /// History index (a completion) from which it is known to be in the set.
    known: Option<u64>,
    known_ns: u64,
    /// Indices into the reads.
    first_present: Option<usize>,
    last_present: Option<usize>,
    last_absent: Option<usize>,
    outcome: Outcome,
}

impl Element<'_, '_> {
    fn name(&self) -> String {
        match &self.key {
            Some(key) => format!("key {key}: element {}", self.elem),
            None => format!("element {}", self.elem),
        }
    }

    fn add_text(&self) -> String {
        let add = self.add;
        match add.complete {
            Some(c) => format!(
                "its add was invoked at index {} and completed {} at index {}",
                add.invoke.index,
                kind_name(c.kind),
                c.index
            ),
            None => format!(
                "its add was invoked at index {} and never completed",
                add.invoke.index
            ),
        }
    }
}

fn kind_name(kind: OpType) -> &'static str {
    match kind {
        OpType::Invoke => "invoke",
        OpType::Ok => "ok",
        OpType::Fail => "fail",
        OpType::Info => "info",
    }
}

/// Rank of an add's outcome: an acknowledged add says most.
fn add_rank(pair: &Completed<'_>) -> u8 {
    match pair.outcome() {
        OpType::Ok => 3,
        OpType::Info | OpType::Invoke => 2,
        OpType::Fail => 1,
    }
}

struct Analysis<'p, 'h> {
    elements: Vec<Element<'p, 'h>>,
    reads: Vec<Read<'p, 'h>>,
    /// (key, element, read) for elements no add attempted.
    unexpected: Vec<(Option<String>, Elem, usize)>,
    /// (key, element, read, times) for elements a read returned more than once.
    duplicated: Vec<(Option<String>, Elem, usize, usize)>,
    /// Why nothing may be concluded, with indices.
    undecided: Vec<Anomaly>,
    attempted: usize,
    keyed: bool,
}

impl<'p, 'h> Analysis<'p, 'h> {
    fn new(pairs: &'p [Completed<'h>]) -> Self {
        let keyed = pairs.iter().any(|p| p.invoke.key.is_some());
        let mut undecided = Vec::new();

        // Adds, per (key, element); the most conclusive add wins.
        let mut adds: BTreeMap<(Option<String>, Elem), &'p Completed<'h>> = BTreeMap::new();
        let mut attempted = 0;
        let mut last_add = None;
        for pair in pairs.iter().filter(|p| p.invoke.f == F_ADD) {
            attempted += 1;
            // A read is final when it began after every add ended (or, for
            // an add that never completed, began).
            let end = pair.complete.unwrap_or(pair.invoke).index;
            last_add = last_add.max(Some(end));
            let id = (pair.invoke.key.clone(), Elem::of(&pair.invoke.value));
            let slot = adds.entry(id).or_insert(pair);
            if add_rank(pair) > add_rank(slot) {
                *slot = pair;
            }
        }

        // Reads: successful ones are evidence; a final one that failed
        // leaves that node's state unknown.
        let mut reads = Vec::new();
        for pair in pairs.iter().filter(|p| p.invoke.f == F_READ) {
            let complete = match pair.complete {
                Some(c) if c.kind == OpType::Ok => c,
                _ => {
                    let is_final = last_add.is_none_or(|last| pair.invoke.index > last);
                    if is_final {
                        let why = pair
                            .complete
                            .and_then(|c| c.error.clone())
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default();
                        let node = pair
                            .complete
                            .and_then(|c| c.node.as_deref())
                            .map(|n| format!(" on {n}"))
                            .unwrap_or_default();
                        undecided.push(Anomaly {
                            kind: "final-read-failed".into(),
                            message: format!(
                                "the final read{node} invoked at index {} did not succeed ({}){why}: \
                                 what that node holds is unknown",
                                pair.invoke.index,
                                kind_name(pair.outcome())
                            ),
                            indices: indices(pair),
                        });
                    }
                    continue;
                }
            };
            let Some(items) = complete.value.as_array() else {
                undecided.push(Anomaly {
                    kind: "malformed-read".into(),
                    message: format!(
                        "the read completed at index {} returned {} instead of an array of elements",
                        complete.index, complete.value
                    ),
                    indices: indices(pair),
                });
                continue;
            };
            let mut elements = HashMap::new();
            for item in items {
                *elements.entry(Elem::of(item)).or_insert(0) += 1;
            }
            let last = last_add.is_none_or(|last| pair.invoke.index > last);
            reads.push(Read {
                pair,
                elements,
                last,
            });
        }
        if reads.is_empty() && undecided.is_empty() {
            undecided.push(Anomaly {
                kind: "no-reads".into(),
                message: "no read succeeded: nothing can be said about the set".into(),
                indices: Vec::new(),
            });
        }

        // Elements no add attempted, and duplicates.
        let mut unexpected = Vec::new();
        let mut duplicated = Vec::new();
        let mut seen_unexpected = BTreeSet::new();
        for (r, read) in reads.iter().enumerate() {
            let key = &read.pair.invoke.key;
            let mut sorted: Vec<_> = read.elements.iter().collect();
            sorted.sort();
            for (elem, &times) in sorted {
                let id = (key.clone(), elem.clone());
                if !adds.contains_key(&id) && seen_unexpected.insert(id) {
                    unexpected.push((key.clone(), elem.clone(), r));
                }
                if times > 1 {
                    duplicated.push((key.clone(), elem.clone(), r, times));
                }
            }
        }

        // Each element against every read of its key.
        let mut elements = Vec::with_capacity(adds.len());
        for ((key, elem), add) in adds {
            let mut element = Element {
                key,
                elem,
                add,
                known: None,
                known_ns: 0,
                first_present: None,
                last_present: None,
                last_absent: None,
                outcome: Outcome::NotAdded,
            };
            if let Some(c) = add.complete.filter(|c| c.kind == OpType::Ok) {
                element.known = Some(c.index);
                element.known_ns = c.time_ns;
            }
            for (r, read) in reads.iter().enumerate() {
                if read.pair.invoke.key != element.key {
                    continue;
                }
                let later = |slot: Option<usize>| {
                    slot.is_none_or(|s: usize| reads[s].invoked() < read.invoked())
                };
                if read.elements.contains_key(&element.elem) {
                    if let Some(c) = read.pair.complete {
                        if element.known.is_none_or(|k| c.index < k) {
                            element.known = Some(c.index);
                            element.known_ns = c.time_ns;
                        }
                    }
                    if element
                        .first_present
                        .is_none_or(|s| reads[s].invoked() > read.invoked())
                    {
                        element.first_present = Some(r);
                    }
                    if later(element.last_present) {
                        element.last_present = Some(r);
                    }
                } else if later(element.last_absent) {
                    element.last_absent = Some(r);
                }
            }
            element.outcome = classify(&element, &reads);
            elements.push(element);
        }

        Analysis {
            elements,
            reads,
            unexpected,
            duplicated,
            undecided,
            attempted,
            keyed,
        }
    }

    fn result(&self) -> CheckResult {
        let mut counts: BTreeMap<Outcome, usize> = Outcome::ALL.iter().map(|&o| (o, 0)).collect();
        for e in &self.elements {
            *counts.entry(e.outcome).or_default() += 1;
        }
        let of = |o: Outcome| -> Vec<&Element<'_, '_>> {
            self.elements.iter().filter(|e| e.outcome == o).collect()
        };
        let lost = of(Outcome::Lost);
        let failed_present = of(Outcome::FailedAddPresent);

        let mut anomalies = Vec::new();
        grouped(&mut anomalies, "lost", &lost, |e| self.lost_anomaly(e));
        grouped(&mut anomalies, "failed-add-present", &failed_present, |e| {
            self.failed_present_anomaly(e)
        });
        grouped(
            &mut anomalies,
            "unexpected",
            &self.unexpected,
            |(key, elem, r)| {
                let read = &self.reads[*r];
                Anomaly {
                    kind: "unexpected".into(),
                    message: format!(
                        "{} returned {}, which no add attempted",
                        read.describe(),
                        elem_name(key, elem)
                    ),
                    indices: indices(read.pair),
                }
            },
        );
        grouped(
            &mut anomalies,
            "duplicated",
            &self.duplicated,
            |(key, elem, r, times)| {
                let read = &self.reads[*r];
                Anomaly {
                    kind: "duplicated".into(),
                    message: format!(
                        "{} returned {} {times} times",
                        read.describe(),
                        elem_name(key, elem)
                    ),
                    indices: indices(read.pair),
                }
            },
        );
        let invalid = !anomalies.is_empty();
        let confirmed =
            counts[&Outcome::Ok] + counts[&Outcome::Stale] + counts[&Outcome::Recovered];
        let mut undecided = self.undecided.clone();
        if !invalid && undecided.is_empty() && confirmed == 0 {
            undecided.push(Anomaly {
                kind: "nothing-confirmed".into(),
                message: format!(
                    "no element was found in the set in the end ({} adds attempted): nothing to check",
                    self.attempted
                ),
                indices: Vec::new(),
            });
        }
        let verdict = if invalid {
            Verdict::Invalid
        } else if !undecided.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Valid
        };
        anomalies.extend(undecided);

        let summary = {
            let mut parts = vec![format!("{} adds attempted", self.attempted)];
            for o in Outcome::ALL {
                if counts[&o] > 0 {
                    parts.push(format!("{} {}", counts[&o], o.name()));
                }
            }
            if !self.unexpected.is_empty() {
                parts.push(format!("{} unexpected", self.unexpected.len()));
            }
            if !self.duplicated.is_empty() {
                parts.push(format!("{} duplicated", self.duplicated.len()));
            }
            let headline = match (lost.len(), verdict) {
                (n, _) if n > 0 => format!("; LOST: {}", ranges(&lost)),
                (_, Verdict::Unknown) => {
                    format!("; {}", anomalies.last().map_or("", |a| a.message.as_str()))
                }
                _ => String::new(),
            };
            format!("{}{headline}", parts.join(", "))
        };

        CheckResult {
            checker: "set".into(),
            verdict,
            summary,
            anomalies,
            details: self.details(&counts),
        }
    }

    fn lost_anomaly(&self, e: &Element<'_, '_>) -> Anomaly {
        let mut idx = indices(e.add);
        let absent = &self.reads[e.last_absent.unwrap_or(0)];
        let evidence = match e.last_present.map(|p| &self.reads[p]) {
            Some(present) if present.invoked() < absent.invoked() => {
                idx.extend(indices(present.pair));
                format!(
                    "{} had it, but {} no longer does",
                    present.describe(),
                    absent.describe()
                )
            }
            Some(present) => {
                idx.extend(indices(present.pair));
                format!(
                    "{} does not have it (although {} does)",
                    absent.describe(),
                    present.describe()
                )
            }
            None => format!("{} does not have it", absent.describe()),
        };
        idx.extend(indices(absent.pair));
        Anomaly {
            kind: "lost".into(),
            message: format!("{} was lost: {}; {}", e.name(), e.add_text(), evidence),
            indices: idx,
        }
    }

    fn failed_present_anomaly(&self, e: &Element<'_, '_>) -> Anomaly {
        let read = &self.reads[e.first_present.unwrap_or(0)];
        let why = e
            .add
            .complete
            .and_then(|c| c.error.as_deref())
            .map(|x| format!(" ({x})"))
            .unwrap_or_default();
        let mut idx = indices(e.add);
        idx.extend(indices(read.pair));
        Anomaly {
            kind: "failed-add-present".into(),
            message: format!(
                "{} is in the set although its add certainly failed{why}: {}; {} has it",
                e.name(),
                e.add_text(),
                read.describe()
            ),
            indices: idx,
        }
    }

    fn details(&self, counts: &BTreeMap<Outcome, usize>) -> Value {
        let list = |o: Outcome| -> Value {
            Value::Array(
                self.elements
                    .iter()
                    .filter(|e| e.outcome == o)
                    .map(|e| self.elem_json(&e.key, &e.elem))
                    .collect(),
            )
        };
        let mut stale: Vec<(f64, Value)> = self
            .elements
            .iter()
            .filter(|e| e.outcome == Outcome::Stale)
            .map(|e| {
                let absent = &self.reads[e.last_absent.unwrap_or(0)];
                let present = self
                    .reads
                    .iter()
                    .filter(|r| {
                        r.invoked() > absent.invoked()
                            && r.pair.invoke.key == e.key
                            && r.elements.contains_key(&e.elem)
                    })
                    .min_by_key(|r| r.invoked());
                let ms = |t: u64| t.saturating_sub(e.known_ns) as f64 / 1e6;
                let invisible = ms(absent.pair.invoke.time_ns);
                let visible_by = present.and_then(|r| r.pair.complete).map(|c| ms(c.time_ns));
                (
                    invisible,
                    json!({
                        "element": self.elem_json(&e.key, &e.elem),
                        "add": indices(e.add),
                        "known_index": e.known,
                        "last_absent_read": indices(absent.pair),
                        "first_present_read_after": present.map(|r| indices(r.pair)),
                        "invisible_for_ms": invisible,
                        "visible_by_ms": visible_by,
                    }),
                )
            })
            .collect();
        stale.sort_by(|a, b| b.0.total_cmp(&a.0));
        let stale_count = stale.len();
        let worst_stale: Vec<Value> = stale
            .into_iter()
            .take(STALE_DETAILS)
            .map(|(_, v)| v)
            .collect();
        let acknowledged = self
            .elements
            .iter()
            .filter(|e| e.add.outcome() == OpType::Ok)
            .count();
        let mut by_outcome = serde_json::Map::new();
        for (o, n) in counts {
            by_outcome.insert(o.name().into(), json!(n));
        }
        by_outcome.insert("unexpected".into(), json!(self.unexpected.len()));
        by_outcome.insert("duplicated".into(), json!(self.duplicated.len()));
        json!({
            "attempted": self.attempted,
            "acknowledged": acknowledged,
            "elements": self.elements.len(),
            "reads": self.reads.len(),
            "counts": by_outcome,
            "lost": list(Outcome::Lost),
            "failed_add_present": list(Outcome::FailedAddPresent),
            "never_read": list(Outcome::NeverRead),
            "recovered": list(Outcome::Recovered),
            "unexpected": self.unexpected.iter().map(|(k, e, _)| self.elem_json(k, e)).collect::<Vec<_>>(),
            "stale": {
                "count": stale_count,
                "note": "invisible_for_ms: from when the element was known (add acknowledged or first read) to the start of the last read that lacked it; visible_by_ms: to the end of the first later read that had it",
                "latest": worst_stale,
            },
        })
    }

    /// An element in `details`: the element, or `[key, element]` in a keyed
    /// history.
    fn elem_json(&self, key: &Option<String>, elem: &Elem) -> Value {
        if self.keyed {
            json!([key, elem.json()])
        } else {
            elem.json()
        }
    }
}

fn classify(e: &Element<'_, '_>, reads: &[Read<'_, '_>]) -> Outcome {
    let invoked = |slot: Option<usize>| slot.map(|s| reads[s].invoked());
    let present = invoked(e.last_present);
    let absent = invoked(e.last_absent);
    let absent_is_final = e.last_absent.is_some_and(|s| reads[s].last);
    if e.add.outcome() == OpType::Fail && present.is_some() {
        return Outcome::FailedAddPresent;
    }
    match (e.known, present, absent) {
        // The last read to lack it began after it was known, and after the
        // last read that had it or after every add ended.
        (Some(known), p, Some(a)) if a > known && (absent_is_final || p.is_none_or(|p| a > p)) => {
            Outcome::Lost
        }
        // The latest read has it.
        (_, Some(p), a) if a.is_none_or(|a| a < p) => {
            if matches!((e.known, a), (Some(known), Some(a)) if a > known) {
                Outcome::Stale
            } else if e.add.outcome() == OpType::Ok {
                Outcome::Ok
            } else {
                Outcome::Recovered
            }
        }
        (Some(_), ..) => Outcome::NeverRead,
        (None, ..) => Outcome::NotAdded,
    }
}

fn elem_name(key: &Option<String>, elem: &Elem) -> String {
    match key {
        Some(key) => format!("key {key}: element {elem}"),
        None => format!("element {elem}"),
    }
}

/// One anomaly per item for the first [`DETAILED`], then one that names
/// the rest.
fn grouped<T>(out: &mut Vec<Anomaly>, kind: &str, items: &[T], one: impl Fn(&T) -> Anomaly) {
    out.extend(items.iter().take(DETAILED).map(&one));
    if items.len() > DETAILED {
        let rest: Vec<Anomaly> = items[DETAILED..].iter().map(one).collect();
        let mut indices: Vec<u64> = rest
            .iter()
            .flat_map(|a| a.indices.iter().copied())
            .collect();
        indices.sort_unstable();
        indices.dedup();
        indices.truncate(DETAILED * 4);
        out.push(Anomaly {
            kind: kind.into(),
            message: format!(
                "and {} more {kind} elements (details in `details`); the first: {}",
                rest.len(),
                rest[0].message
            ),
            indices,
        });
    }
}

/// Elements as ranges: `1..4 7 9..10`, at most 30 items.
fn ranges(elements: &[&Element<'_, '_>]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(i64, i64)> = None;
    let flush = |run: Option<(i64, i64)>, out: &mut Vec<String>| match run {
        Some((a, b)) if a == b => out.push(a.to_string()),
        Some((a, b)) => out.push(format!("{a}..{b}")),
        None => {}
    };
    for e in elements {
        let label = e.key.as_ref().map(|k| format!("{k}/")).unwrap_or_default();
        match (&e.elem, run, label.is_empty()) {
            (Elem::Int(i), Some((a, b)), true) if *i == b + 1 => run = Some((a, *i)),
            (Elem::Int(i), _, true) => {
                flush(run, &mut out);
                run = Some((*i, *i));
            }
            (other, _, _) => {
                flush(run.take(), &mut out);
                out.push(format!("{label}{other}"));
            }
        }
    }
    flush(run, &mut out);
    if out.len() > 30 {
        let more = out.len() - 30;
        out.truncate(30);
        out.push(format!("(+{more} more)"));
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Process};

    /// Builds a history one entry at a time; time is the index in ms.
    #[derive(Default)]
    struct Builder {
        ops: Vec<Op>,
    }

    impl Builder {
        fn push(&mut self, p: u64, kind: OpType, f: &str, value: Value) -> u64 {
            let index = self.ops.len() as u64;
            self.ops.push(Op {
                index,
                time_ns: index * 1_000_000,
                process: Process::Client(p),
                kind,
                f: f.into(),
                key: None,
                value,
                node: None,
                error: None,
            });
            index
        }

        /// An add of `e` by process `p` that completes with `kind` at once.
        fn add(&mut self, p: u64, e: i64, kind: OpType) -> &mut Self {
            self.push(p, OpType::Invoke, F_ADD, json!(e));
            if kind != OpType::Invoke {
                self.push(p, kind, F_ADD, json!(e));
            }
            self
        }

        /// A read by `p` returning `elements`.
        fn read(&mut self, p: u64, elements: &[i64]) -> &mut Self {
            self.push(p, OpType::Invoke, F_READ, Value::Null);
            self.push(p, OpType::Ok, F_READ, json!(elements));
            self
        }

        fn check(&self) -> CheckResult {
            let history = History::new(self.ops.clone());
            history.validate().unwrap();
            check(&history)
        }
    }

    fn kinds(r: &CheckResult) -> Vec<&str> {
        r.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    #[test]
    fn a_clean_history_is_valid() {
        let r = Builder::default()
            .add(0, 1, OpType::Ok)
            .add(1, 2, OpType::Ok)
            .add(0, 3, OpType::Ok)
            .read(10, &[3, 1, 2])
            .read(11, &[1, 2, 3])
            .check();
        assert_eq!(r.checker, "set");
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        assert!(r.anomalies.is_empty());
        assert_eq!(r.details["counts"]["ok"], 3);
        assert_eq!(r.details["counts"]["lost"], 0);
        assert_eq!(r.details["reads"], 2);
    }

    #[test]
    fn an_acknowledged_add_missing_from_a_final_read_is_lost() {
        // add 1: indices 0,1; add 2: 2,3; read on n1: 4,5 has both; read on
        // n2: 6,7 lacks 2.
        let mut b = Builder::default();
        b.add(0, 1, OpType::Ok)
            .add(1, 2, OpType::Ok)
            .read(10, &[1, 2])
            .read(11, &[1]);
        b.ops[5].node = Some("n1".into());
        b.ops[7].node = Some("n2".into());
        let r = b.check();
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(kinds(&r), ["lost"]);
        assert_eq!(r.anomalies[0].indices, [2, 3, 4, 5, 6, 7]);
        let message = &r.anomalies[0].message;
        assert!(message.starts_with("element 2 was lost"), "{message}");
        assert!(
            message.contains("on n1") && message.contains("on n2 invoked at index 6"),
            "{message}"
        );
        assert_eq!(r.details["lost"], json!([2]));
        assert!(r.summary.contains("LOST: 2"), "{}", r.summary);
    }

    #[test]
    fn a_final_read_lacking_an_element_loses_it_even_if_a_later_node_has_it() {
        let r = Builder::default()
            .add(0, 1, OpType::Ok)
            .read(10, &[])
            .read(11, &[1])
            .check();
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(kinds(&r), ["lost"]);
        assert_eq!(r.anomalies[0].indices, [0, 1, 4, 5, 2, 3]);
        assert!(
            r.anomalies[0].message.contains(
                "the final read invoked at index 2 (completed at 3) does not have it (although"
            ),
            "{}",
            r.anomalies[0].message
        );
    }

    #[test]
    fn an_element_seen_then_gone_is_lost_even_if_its_add_crashed() {
        let r = Builder::default()
            .add(0, 5, OpType::Info)
            .read(10, &[5])
            .read(11, &[])
            .check();
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(kinds(&r), ["lost"]);
        assert_eq!(r.anomalies[0].indices, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn an_element_no_add_attempted_is_unexpected() {
        let r = Builder::default()
            .add(0, 1, OpType::Ok)
            .read(10, &[1, 99])
            .check();
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(kinds(&r), ["unexpected"]);
        assert_eq!(r.anomalies[0].indices, [2, 3]);
        assert!(r.anomalies[0].message.contains("element 99"));
        assert_eq!(r.details["unexpected"], json!([99]));
    }

    #[test]
    fn a_failed_add_that_shows_up_contradicts_the_history() {
        let mut b = Builder::default();
        b.add(0, 1, OpType::Ok)
            .add(1, 2, OpType::Fail)
            .read(10, &[1, 2]);
        b.ops[3].error = Some("not the leader".into());
        let r = b.check();
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(kinds(&r), ["failed-add-present"]);
        assert!(r.anomalies[0].message.contains("(not the leader)"));
        assert_eq!(r.anomalies[0].indices, [2, 3, 4, 5]);
    }

    #[test]
    fn a_read_that_returns_an_element_twice_is_invalid() {
        let r = Builder::default()
            .add(0, 1, OpType::Ok)
            .read(10, &[1, 1])
            .check();
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(kinds(&r), ["duplicated"]);
    }

    #[test]
    fn without_reads_the_verdict_is_unknown() {
        let r = Builder::default()
            .add(0, 1, OpType::Ok)
            .add(1, 2, OpType::Ok)
            .check();
        assert_eq!(r.verdict, Verdict::Unknown);
        assert_eq!(kinds(&r), ["no-reads"]);
        assert_eq!(r.details["counts"]["never-read"], 2);
    }

    #[test]
    fn a_failed_final_read_makes_it_unknown_but_not_valid() {
        let mut b = Builder::default();
        b.add(0, 1, OpType::Ok).read(10, &[1]);
        b.push(11, OpType::Invoke, F_READ, Value::Null);
        let i = b.push(11, OpType::Fail, F_READ, Value::Null);
        b.ops[i as usize].error = Some("timed out reading set/1".into());
        let r = b.check();
        assert_eq!(r.verdict, Verdict::Unknown);
        assert_eq!(kinds(&r), ["final-read-failed"]);
        assert!(r.anomalies[0].message.contains("timed out reading set/1"));
        // A lost element still makes it invalid.
        b.add(1, 2, OpType::Ok).read(12, &[1]);
        assert_eq!(b.check().verdict, Verdict::Invalid);
    }

    #[test]
    fn an_element_that_appears_late_is_stale_but_valid() {
        // add 1 ok (0,1); read (2,3) lacks it; read (4,5) has it; then an
        // add of 2 and a final read.
        let r = Builder::default()
            .add(0, 1, OpType::Ok)
            .read(10, &[])
            .read(11, &[1])
            .add(0, 2, OpType::Ok)
            .read(12, &[1, 2])
            .check();
        assert_eq!(r.verdict, Verdict::Valid, "{r:?}");
        assert_eq!(r.details["counts"]["stale"], 1);
        let stale = &r.details["stale"]["latest"][0];
        assert_eq!(stale["element"], 1);
        assert_eq!(stale["last_absent_read"], json!([2, 3]));
        assert_eq!(stale["first_present_read_after"], json!([4, 5]));
        assert_eq!(stale["invisible_for_ms"], 1.0);
        assert_eq!(stale["visible_by_ms"], 4.0);
    }

    #[test]
    fn a_read_concurrent_with_the_add_may_miss_it() {
        let mut b = Builder::default();
        b.push(0, OpType::Invoke, F_ADD, json!(1));
        b.push(10, OpType::Invoke, F_READ, Value::Null);
        b.push(10, OpType::Ok, F_READ, json!([]));
        b.push(0, OpType::Ok, F_ADD, json!(1));
        b.read(11, &[1]);
        let r = b.check();
        assert_eq!(r.verdict, Verdict::Valid);
        assert_eq!(r.details["counts"]["ok"], 1);
        assert_eq!(r.details["counts"]["stale"], 0);
    }

    #[test]
    fn crashed_adds_are_recovered_or_not_added() {
        let mut b = Builder::default();
        b.add(0, 1, OpType::Info)
            .add(1, 2, OpType::Info)
            .add(2, 3, OpType::Ok);
        b.add(3, 4, OpType::Invoke); // never completes
        let r = b.read(10, &[1, 3, 4]).check();
        assert_eq!(r.verdict, Verdict::Valid);
        let c = &r.details["counts"];
        assert_eq!(
            (
                c["recovered"].as_u64(),
                c["not-added"].as_u64(),
                c["ok"].as_u64()
            ),
            (Some(2), Some(1), Some(1))
        );
        assert_eq!(r.details["recovered"], json!([1, 4]));
    }

    #[test]
    fn an_add_after_the_last_read_is_never_read() {
        let r = Builder::default()
            .add(0, 1, OpType::Ok)
            .read(10, &[1])
            .add(0, 2, OpType::Ok)
            .check();
        assert_eq!(r.verdict, Verdict::Valid);
        assert_eq!(r.details["never_read"], json!([2]));
    }

    #[test]
    fn nothing_confirmed_is_unknown() {
        let r = Builder::default()
            .add(0, 1, OpType::Info)
            .read(10, &[])
            .check();
        assert_eq!(r.verdict, Verdict::Unknown);
        assert_eq!(kinds(&r), ["nothing-confirmed"]);
    }

    #[test]
    fn a_read_that_is_no_array_is_unknown() {
        let mut b = Builder::default();
        b.add(0, 1, OpType::Ok).read(10, &[1]);
        b.push(11, OpType::Invoke, F_READ, Value::Null);
        b.push(11, OpType::Ok, F_READ, json!(7));
        let r = b.check();
        assert_eq!(r.verdict, Verdict::Unknown);
        assert_eq!(kinds(&r), ["malformed-read"]);
    }

    #[test]
    fn many_lost_elements_make_a_few_anomalies() {
        let mut b = Builder::default();
        for e in 0..50 {
            b.add(0, e, OpType::Ok);
        }
        let r = b.read(10, &[0, 1, 2]).check();
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.anomalies.len(), DETAILED + 1);
        assert!(r.anomalies[DETAILED]
            .message
            .starts_with("and 27 more lost elements"));
        assert_eq!(r.details["lost"].as_array().map(Vec::len), Some(47));
        assert!(r.summary.contains("LOST: 3..49"), "{}", r.summary);
    }

    #[test]
    fn keyed_histories_are_checked_per_key() {
        let mut b = Builder::default();
        b.add(0, 1, OpType::Ok)
            .add(1, 1, OpType::Ok)
            .read(10, &[1])
            .read(11, &[]);
        for (i, key) in [
            (0, "a"),
            (1, "a"),
            (2, "b"),
            (3, "b"),
            (4, "a"),
            (5, "a"),
            (6, "b"),
            (7, "b"),
        ] {
            b.ops[i].key = Some(key.into());
        }
        let r = b.check();
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(kinds(&r), ["lost"]);
        assert!(
            r.anomalies[0].message.starts_with("key b: element 1"),
            "{}",
            r.anomalies[0].message
        );
        assert_eq!(r.details["lost"], json!([["b", 1]]));
    }
}
