//! Session guarantees of register histories: read-your-writes, monotonic
//! reads and monotonic writes (Terry et al., "Session Guarantees for
//! Weakly Consistent Replicated Data", 1994), checked from values and real
//! time alone, as Jepsen does.
//!
//! A *session* is one client process: a worker gets a fresh process id
//! after an `info`, so a session ends at its first indeterminate
//! operation. Guarantees are checked per session and per key.
//!
//! # What the history proves
//!
//! The checker assumes only that the writes of a key take effect in one
//! order (the replicated log's) consistent with real time: a write that
//! completed before another was invoked precedes it. Real time is history
//! order (the harness records an invocation before sending the request and
//! a completion after the reply arrives).
//!
//! Our register workload draws values from a few small integers, so a read
//! of `v` does not say *which* write of `v` it saw. The *possible sources*
//! of a read are every `ok` or indeterminate (`info`, or never completed)
//! write of the value read, and every such `cas` whose new value it is,
//! invoked before the read completed; a `null` read's source is the
//! initial absent state, which precedes every write (the workload never
//! deletes). A read of a value no one wrote has no source: it says nothing
//! about sessions (the linearizability checker reports it) and is counted
//! as `unexplained`. In an imported Jepsen history a `nil` read, as in
//! Knossos, matches anything and is skipped.
//!
//! A read returned a version *provably older* than a point `t` of the
//! history when every possible source completed before `t`. An
//! indeterminate source never completes, so a value that a timed-out write
//! may yet produce is never provably old. Only what is provably wrong is
//! reported; a history may break a guarantee in ways these rules cannot
//! see.
//!
//! # The guarantees
//!
//! For each `ok` read `R` of key `k` by process `P`:
//!
//! - **read-your-writes**: if `P` wrote `k` earlier (the last `ok` write or
//!   `cas`, `W`), `R` must not return a version provably older than `W`'s
//!   invocation (every write of the value read completed before `W`
//!   began). Reading `W`'s own value is never flagged: `W` is one of its
//!   sources.
//! - **monotonic-reads**: if `P` read `k` earlier, every possible source
//!   of an earlier read's value was invoked at or after some point `t`
//!   (the earliest such invocation); `R` must not return a version
//!   provably older than `t`.
//! - **monotonic-writes**: the writes of a session take effect in session
//!   order. A reorder shows when a session has certainly seen a write
//!   `W2` of a process `Q` (`Q` is the session itself, or the session read
//!   a value only `Q`'s writes from `W2` on could have produced) and then
//!   reads a value only `Q`'s writes *before* `W2` could have produced.
//!
//! A read that starts after `W2` completed and returns the older value is
//! no violation by itself: another session may read from a replica that
//! has not applied `W2` yet, which follower and session reads allow. Only
//! an observer whose own view must move forward proves the reorder, so
//! every monotonic-writes anomaly is also, of the same read, a
//! read-your-writes (the observer is the writer) or a monotonic-reads one:
//! values alone cannot tell a reordering of `Q`'s writes from the observer
//! going back in time. The monotonic-writes anomaly names the writes that
//! appear reordered.
//!
//! An `ok` cas counts as a write of its new value; its comparison is not
//! used as a read.
//!
//! The verdict is invalid if any guarantee is broken, unknown if the
//! history has no `ok` read (nothing was checked) or is not a register
//! history, valid otherwise. `details` counts, per guarantee, the reads it
//! applied to (`checked`) and the `violations`; `sessions` is the number of
//! processes with an `ok` read, and `unexplained_reads` and
//! `unconstrained_reads` count the reads no guarantee could be held
//! against.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};

use super::{Anomaly, CheckResult, Verdict};
use crate::history::{History, Op, OpType, Process, Source, F_CAS, F_READ, F_WRITE};

/// The checker's name in results.
pub const CHECKER: &str = "session";

/// How many anomalies of one kind are listed; `details` counts them all.
const LISTED: usize = 20;

/// A point of the history: an entry's index; [`INITIAL`] comes before
/// every entry and [`NEVER`] after every one.
pub(super) type Pos = i64;
/// When the initial absent state was written and completed.
pub(super) const INITIAL: Pos = -1;
/// When an indeterminate write completes.
pub(super) const NEVER: Pos = Pos::MAX;

fn pos(op: &Op) -> Pos {
    Pos::try_from(op.index).unwrap_or(NEVER)
}

/// A write that may have produced a value the register held: an `ok` or
/// indeterminate write or cas, or the initial absent state.
#[derive(Clone, Copy, Debug)]
pub(super) struct Write<'h> {
    /// The invocation (`None`: the initial state).
    pub(super) invoke: Option<&'h Op>,
    /// The `ok` completion (`None`: indeterminate, or the initial state).
    pub(super) complete: Option<&'h Op>,
    /// The process that wrote it (`None`: the initial state).
    pub(super) writer: Option<u64>,
    /// The value written.
    pub(super) value: &'h Value,
    /// Where it was invoked.
    pub(super) invoked: Pos,
    /// Where it completed ([`NEVER`] if indeterminate).
    pub(super) completed: Pos,
}

impl Write<'_> {
    /// The history indices of its invocation and completion.
    pub(super) fn indices(&self) -> impl Iterator<Item = u64> + '_ {
        [self.invoke, self.complete]
            .into_iter()
            .flatten()
            .map(|op| op.index)
    }

    /// "process 3's write of 2 (indices 4-5)", for messages.
    pub(super) fn describe(&self) -> String {
        match self.invoke {
            Some(invoke) => format!("process {}'s {}", invoke.process, self.what()),
            None => "the initial absent state".to_owned(),
        }
    }

    /// "write of 2 (indices 4-5)" or "cas to 2 (indices 4-5)".
    pub(super) fn what(&self) -> String {
        let Some(invoke) = self.invoke else {
            return "initial absent state".to_owned();
        };
        let verb = if invoke.f == F_CAS {
            "cas to"
        } else {
            "write of"
        };
        let at = match self.complete {
            Some(c) => format!("indices {}-{}", invoke.index, c.index),
            None => format!("index {}, never completed", invoke.index),
        };
        format!("{verb} {} ({at})", self.value)
    }
}

/// An `ok` read of a register.
#[derive(Clone, Copy, Debug)]
pub(super) struct Read<'h> {
    /// The reading process (its session).
    pub(super) process: u64,
    pub(super) invoke: &'h Op,
    /// The `ok` completion.
    pub(super) complete: &'h Op,
    /// What it read (`null`: absent).
    pub(super) value: &'h Value,
}

impl<'h> Read<'h> {
    pub(super) fn key(&self) -> Option<&'h str> {
        self.invoke.key.as_deref()
    }

    pub(super) fn invoked(&self) -> Pos {
        pos(self.invoke)
    }

    pub(super) fn completed(&self) -> Pos {
        pos(self.complete)
    }

    pub(super) fn indices(&self) -> [u64; 2] {
        [self.invoke.index, self.complete.index]
    }

    /// "read 1 (indices 8-9)".
    pub(super) fn describe(&self) -> String {
        format!(
            "read {} (indices {}-{})",
            self.value, self.invoke.index, self.complete.index
        )
    }
}

/// A client operation that matters to sessions, in invocation order.
#[derive(Clone, Copy, Debug)]
pub(super) enum Event<'h> {
    /// An `ok` read.
    Read(Read<'h>),
    /// An `ok` write or cas.
    Write(Write<'h>),
}

/// The writes of one (key, value), sorted by invocation, with prefix
/// summaries so that the possible sources of a read are a prefix.
#[derive(Debug, Default)]
struct Candidates<'h> {
    writes: Vec<Write<'h>>,
    /// `latest_completion[i]`: the latest completion among `writes[..=i]`.
    latest_completion: Vec<Pos>,
    /// `sole_writer[i]`: `Some(p)` when every write of `writes[..=i]` is an
    /// `ok` write by process `p`.
    sole_writer: Vec<Option<u64>>,
}

/// The possible sources of one read's value (never empty).
#[derive(Clone, Copy, Debug)]
pub(super) struct Sources<'a, 'h> {
    /// In invocation order.
    pub(super) writes: &'a [Write<'h>],
    /// The latest completion among them ([`NEVER`] if one is
    /// indeterminate): the value is provably older than any later point.
    pub(super) latest_completion: Pos,
    /// `Some(p)` when all are `ok` writes by process `p`.
    pub(super) sole_writer: Option<u64>,
}

impl<'a, 'h> Sources<'a, 'h> {
    /// The earliest invoked: whichever the read saw was invoked no earlier.
    pub(super) fn earliest(&self) -> &'a Write<'h> {
        &self.writes[0]
    }

    /// The latest invoked.
    pub(super) fn last(&self) -> &'a Write<'h> {
        &self.writes[self.writes.len() - 1]
    }

    /// The one that completed last.
    pub(super) fn latest_completing(&self) -> &'a Write<'h> {
        self.writes
            .iter()
            .max_by_key(|w| w.completed)
            .unwrap_or(&self.writes[0])
    }
}

/// What the history says about where a read's value came from.
#[derive(Clone, Copy, Debug)]
pub(super) enum Origin<'a, 'h> {
    /// These writes could have produced it.
    Sources(Sources<'a, 'h>),
    /// A Jepsen `nil` read: it matches anything.
    Unconstrained,
    /// No write of that value was invoked before the read completed.
    Unexplained,
}

/// The register operations of a history, indexed for the session and
/// staleness checkers.
#[derive(Debug)]
pub(super) struct Registers<'h> {
    /// `ok` reads and `ok` writes and cas, in invocation order.
    pub(super) events: Vec<Event<'h>>,
    /// Per key and value (as JSON text), the writes that produced it.
    candidates: HashMap<(Option<&'h str>, String), Candidates<'h>>,
    /// Per key, its `ok` writes and cas sorted by completion.
    completed: HashMap<Option<&'h str>, Vec<Write<'h>>>,
    source: Source,
}

/// Why a history cannot be checked as a register history.
#[derive(Debug)]
pub(super) struct Unsupported {
    pub(super) message: String,
    pub(super) index: u64,
}

impl<'h> Registers<'h> {
    /// The registers of a well-formed history, or the `unknown` result
    /// `checker` reports for a history it cannot read.
    pub(super) fn load(history: &'h History, checker: &str) -> Result<Registers<'h>, CheckResult> {
        if let Err(message) = history.validate() {
            return Err(CheckResult::unsupported(
                checker,
                format!("malformed history: {message}"),
                Vec::new(),
            ));
        }
        Registers::new(history)
            .map_err(|e| CheckResult::unsupported(checker, e.message, vec![e.index]))
    }

    /// Indexes the register operations of a validated `history`.
    pub(super) fn new(history: &'h History) -> Result<Registers<'h>, Unsupported> {
        let mut events = Vec::new();
        let mut candidates: HashMap<(Option<&'h str>, String), Candidates<'h>> = HashMap::new();
        let mut completed: HashMap<Option<&'h str>, Vec<Write<'h>>> = HashMap::new();
        for pair in history.pairs() {
            let invoke = pair.invoke;
            let key = invoke.key.as_deref();
            let outcome = pair.outcome();
            let written = match invoke.f.as_str() {
                F_READ => {
                    if let (OpType::Ok, Some(complete), Process::Client(process)) =
                        (outcome, pair.complete, invoke.process)
                    {
                        events.push(Event::Read(Read {
                            process,
                            invoke,
                            complete,
                            value: &complete.value,
                        }));
                    }
                    continue;
                }
                F_WRITE => &invoke.value,
                F_CAS => match invoke.value.as_array().map(Vec::as_slice) {
                    Some([_expected, new]) => new,
                    _ => {
                        return Err(Unsupported {
                            message: format!(
                                "index {}: a cas value must be [expected, new], found {}",
                                invoke.index, invoke.value
                            ),
                            index: invoke.index,
                        })
                    }
                },
                other => {
                    return Err(Unsupported {
                        message: format!(
                            "index {}: client operation `{other}` is not a register operation \
                             (read, write, cas)",
                            invoke.index
                        ),
                        index: invoke.index,
                    })
                }
            };
            let complete = match outcome {
                OpType::Ok => pair.complete,
                OpType::Info | OpType::Invoke => None,
                OpType::Fail => continue,
            };
            let writer = match invoke.process {
                Process::Client(p) => Some(p),
                Process::Nemesis => None,
            };
            let write = Write {
                invoke: Some(invoke),
                complete,
                writer,
                value: written,
                invoked: pos(invoke),
                completed: complete.map_or(NEVER, pos),
            };
            if complete.is_some() {
                events.push(Event::Write(write));
                completed.entry(key).or_default().push(write);
            }
            candidates
                .entry((key, written.to_string()))
                .or_default()
                .writes
                .push(write);
        }
        // Every key starts absent: the initial state is a source of `null`.
        let keys: HashSet<Option<&'h str>> = events
            .iter()
            .filter_map(|e| match e {
                Event::Read(r) => Some(r.key()),
                Event::Write(_) => None,
            })
            .chain(candidates.keys().map(|(k, _)| *k))
            .collect();
        for key in keys {
            candidates
                .entry((key, Value::Null.to_string()))
                .or_default()
                .writes
                .push(Write {
                    invoke: None,
                    complete: None,
                    writer: None,
                    value: &Value::Null,
                    invoked: INITIAL,
                    completed: INITIAL,
                });
        }
        for c in candidates.values_mut() {
            c.writes.sort_by_key(|w| w.invoked);
            let mut latest = INITIAL;
            let mut sole = Some(None);
            for w in &c.writes {
                latest = latest.max(w.completed);
                sole = match (sole, w.writer, w.complete) {
                    (Some(None), Some(p), Some(_)) => Some(Some(p)),
                    (Some(Some(q)), Some(p), Some(_)) if p == q => Some(Some(p)),
                    _ => None,
                };
                c.latest_completion.push(latest);
                c.sole_writer.push(sole.flatten());
            }
        }
        for writes in completed.values_mut() {
            writes.sort_by_key(|w| w.completed);
        }
        Ok(Registers {
            events,
            candidates,
            completed,
            source: history.source,
        })
    }

    /// Where `read`'s value could have come from.
    pub(super) fn origin(&self, read: &Read<'h>) -> Origin<'_, 'h> {
        if read.value.is_null() && self.source == Source::Jepsen {
            return Origin::Unconstrained;
        }
        let Some(c) = self.candidates.get(&(read.key(), read.value.to_string())) else {
            return Origin::Unexplained;
        };
        let n = c.writes.partition_point(|w| w.invoked < read.completed());
        if n == 0 {
            return Origin::Unexplained;
        }
        Origin::Sources(Sources {
            writes: &c.writes[..n],
            latest_completion: c.latest_completion[n - 1],
            sole_writer: c.sole_writer[n - 1],
        })
    }

    /// The `ok` writes and cas of `key` that completed strictly between
    /// `after` and `before`, in completion order.
    pub(super) fn completed_between(
        &self,
        key: Option<&'h str>,
        after: Pos,
        before: Pos,
    ) -> &[Write<'h>] {
        let Some(writes) = self.completed.get(&key) else {
            return &[];
        };
        let from = writes.partition_point(|w| w.completed <= after);
        let to = writes.partition_point(|w| w.completed < before);
        &writes[from..to.max(from)]
    }
}

/// A `key "x"` or `the register` phrase for messages.
pub(super) fn describe_key(key: Option<&str>) -> String {
    match key {
        Some(k) => format!("key {k:?}"),
        None => "the register".to_owned(),
    }
}

fn sorted(indices: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut v: Vec<u64> = indices.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    v
}

// ---------------------------------------------------------------------------
// The checker.

/// The three guarantees, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Guarantee {
    ReadYourWrites,
    MonotonicReads,
    MonotonicWrites,
}

impl Guarantee {
    const ALL: [Guarantee; 3] = [
        Guarantee::ReadYourWrites,
        Guarantee::MonotonicReads,
        Guarantee::MonotonicWrites,
    ];

    fn kind(self) -> &'static str {
        match self {
            Guarantee::ReadYourWrites => "read-your-writes",
            Guarantee::MonotonicReads => "monotonic-reads",
            Guarantee::MonotonicWrites => "monotonic-writes",
        }
    }
}

/// A write of process `Q` that a session has certainly seen, and how.
#[derive(Clone, Copy, Debug)]
struct Seen<'h> {
    /// The write (its invocation orders `Q`'s writes).
    write: Write<'h>,
    /// The read that saw it (`None`: the session wrote it).
    by: Option<Read<'h>>,
}

/// What one session has certainly seen of one key.
#[derive(Debug, Default)]
struct SessionKey<'h> {
    /// Its last `ok` write.
    wrote: Option<Write<'h>>,
    /// The earlier read that sets the highest floor, with the earliest
    /// possible source of its value: whatever version it returned was
    /// invoked no earlier than that write.
    read_floor: Option<(Read<'h>, Write<'h>)>,
    /// Per writer process, the latest of its writes this session has
    /// certainly seen.
    seen: HashMap<u64, Seen<'h>>,
}

/// Counts of one guarantee.
#[derive(Debug, Default)]
struct Tally {
    /// Reads the guarantee constrained.
    checked: u64,
    violations: u64,
}

/// Checks read-your-writes, monotonic reads and monotonic writes for every
/// session of a register history (see the module docs).
pub fn check(history: &History) -> CheckResult {
    let registers = match Registers::load(history, CHECKER) {
        Ok(r) => r,
        Err(result) => return result,
    };
    let mut sessions: HashMap<(u64, Option<&str>), SessionKey<'_>> = HashMap::new();
    let mut readers: HashSet<u64> = HashSet::new();
    let mut tallies: BTreeMap<Guarantee, Tally> = BTreeMap::new();
    let mut anomalies: BTreeMap<Guarantee, Vec<Anomaly>> = BTreeMap::new();
    let (mut reads, mut unexplained, mut unconstrained) = (0u64, 0u64, 0u64);

    for event in &registers.events {
        match *event {
            Event::Write(write) => {
                let (Some(writer), Some(invoke)) = (write.writer, write.invoke) else {
                    continue;
                };
                let session = sessions.entry((writer, invoke.key.as_deref())).or_default();
                session.wrote = Some(write);
                session.seen.insert(writer, Seen { write, by: None });
            }
            Event::Read(read) => {
                reads += 1;
                readers.insert(read.process);
                let sources = match registers.origin(&read) {
                    Origin::Sources(s) => s,
                    Origin::Unconstrained => {
                        unconstrained += 1;
                        continue;
                    }
                    Origin::Unexplained => {
                        unexplained += 1;
                        continue;
                    }
                };
                let session = sessions.entry((read.process, read.key())).or_default();
                let mut found = |g: Guarantee, violated: Option<Anomaly>| {
                    let tally = tallies.entry(g).or_default();
                    tally.checked += 1;
                    if let Some(anomaly) = violated {
                        tally.violations += 1;
                        anomalies.entry(g).or_default().push(anomaly);
                    }
                };
                if let Some(own) = session.wrote {
                    found(
                        Guarantee::ReadYourWrites,
                        read_your_writes(&read, &sources, &own),
                    );
                }
                if let Some((earlier, floor)) = session.read_floor {
                    found(
                        Guarantee::MonotonicReads,
                        monotonic_reads(&read, &sources, &earlier, &floor),
                    );
                }
                if let Some(seen) = sources.sole_writer.and_then(|q| session.seen.get(&q)) {
                    found(
                        Guarantee::MonotonicWrites,
                        monotonic_writes(&read, &sources, seen),
                    );
                }
                // What this read certainly saw raises the session's floors.
                let earliest = *sources.earliest();
                if session
                    .read_floor
                    .is_none_or(|(_, floor)| floor.invoked < earliest.invoked)
                {
                    session.read_floor = Some((read, earliest));
                }
                if let Some(q) = sources.sole_writer {
                    let newer = session
                        .seen
                        .get(&q)
                        .is_none_or(|seen| seen.write.invoked < earliest.invoked);
                    if newer {
                        let seen = Seen {
                            write: earliest,
                            by: Some(read),
                        };
                        session.seen.insert(q, seen);
                    }
                }
            }
        }
    }
    result(
        reads,
        unexplained,
        unconstrained,
        &readers,
        &tallies,
        anomalies,
    )
}

/// `read` by the writer of `own`, later: is its value provably older than
/// `own`?
fn read_your_writes(
    read: &Read<'_>,
    sources: &Sources<'_, '_>,
    own: &Write<'_>,
) -> Option<Anomaly> {
    if sources.latest_completion >= own.invoked {
        return None;
    }
    let last = sources.latest_completing();
    Some(Anomaly {
        kind: Guarantee::ReadYourWrites.kind().into(),
        message: format!(
            "{}: process {} {} after its own {}, but every write that could have produced {} \
             had completed before that write began (the last: {})",
            describe_key(read.key()),
            read.process,
            read.describe(),
            own.what(),
            read.value,
            last.describe(),
        ),
        indices: sorted(own.indices().chain(last.indices()).chain(read.indices())),
    })
}

/// `read` after `earlier` in one session, where every possible source of
/// `earlier`'s value was invoked no earlier than `floor`.
fn monotonic_reads(
    read: &Read<'_>,
    sources: &Sources<'_, '_>,
    earlier: &Read<'_>,
    floor: &Write<'_>,
) -> Option<Anomaly> {
    if sources.latest_completion >= floor.invoked {
        return None;
    }
    let last = sources.latest_completing();
    Some(Anomaly {
        kind: Guarantee::MonotonicReads.kind().into(),
        message: format!(
            "{}: process {} {} after it {}, but every write that could have produced {} had \
             completed (the last: {}) before any write of {} the earlier read could have seen \
             began (the first: {})",
            describe_key(read.key()),
            read.process,
            read.describe(),
            earlier.describe(),
            read.value,
            last.describe(),
            earlier.value,
            floor.describe(),
        ),
        indices: sorted(
            earlier
                .indices()
                .into_iter()
                .chain(floor.indices())
                .chain(last.indices())
                .chain(read.indices()),
        ),
    })
}

/// `read`, whose value only writer `Q`'s writes could have produced, in a
/// session that has certainly seen `seen`, a write of `Q`.
fn monotonic_writes(
    read: &Read<'_>,
    sources: &Sources<'_, '_>,
    seen: &Seen<'_>,
) -> Option<Anomaly> {
    let stale = sources.last();
    if seen.write.invoked <= stale.invoked {
        return None;
    }
    let writer = seen.write.writer.unwrap_or_default();
    let after = match &seen.by {
        Some(by) => format!("after it {}", by.describe()),
        None => "after that write".to_owned(),
    };
    Some(Anomaly {
        kind: Guarantee::MonotonicWrites.kind().into(),
        message: format!(
            "{}: process {writer}'s {} came before its {}, yet process {}, {after}, {}, which \
             only process {writer}'s earlier writes could have produced: process {writer}'s \
             writes appear out of order",
            describe_key(read.key()),
            stale.what(),
            seen.write.what(),
            read.process,
            read.describe(),
        ),
        indices: sorted(
            stale
                .indices()
                .chain(seen.write.indices())
                .chain(seen.by.iter().flat_map(|r| r.indices()))
                .chain(read.indices()),
        ),
    })
}

fn result(
    reads: u64,
    unexplained: u64,
    unconstrained: u64,
    readers: &HashSet<u64>,
    tallies: &BTreeMap<Guarantee, Tally>,
    mut anomalies: BTreeMap<Guarantee, Vec<Anomaly>>,
) -> CheckResult {
    let mut guarantees = serde_json::Map::new();
    let mut parts = Vec::new();
    for g in Guarantee::ALL {
        let t = tallies.get(&g);
        let (checked, violations) = t.map_or((0, 0), |t| (t.checked, t.violations));
        guarantees.insert(
            g.kind().into(),
            json!({ "checked": checked, "violations": violations }),
        );
        parts.push(format!("{}: {violations} of {checked} reads", g.kind()));
    }
    let violations: u64 = tallies.values().map(|t| t.violations).sum();
    let verdict = if violations > 0 {
        Verdict::Invalid
    } else if reads == 0 {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    let listed: Vec<Anomaly> = Guarantee::ALL
        .iter()
        .flat_map(|g| {
            let mut list = anomalies.remove(g).unwrap_or_default();
            list.truncate(LISTED);
            list
        })
        .collect();
    let summary = if reads == 0 {
        "no ok reads: no session guarantee was checked".to_owned()
    } else {
        let listed_note = if violations as usize > listed.len() {
            format!(" ({} listed)", listed.len())
        } else {
            String::new()
        };
        format!(
            "{} session{}, {reads} reads; violations{listed_note}: {}",
            readers.len(),
            if readers.len() == 1 { "" } else { "s" },
            parts.join(", ")
        )
    };
    CheckResult {
        checker: CHECKER.into(),
        verdict,
        summary,
        anomalies: listed,
        details: json!({
            "sessions": readers.len(),
            "reads": reads,
            "unexplained_reads": unexplained,
            "unconstrained_reads": unconstrained,
            "guarantees": guarantees,
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A history from `(process, type, f, key, value)` rows, 1 ms apart.
    fn history(rows: &[(u64, OpType, &str, &str, Value)]) -> History {
        let ops = rows
            .iter()
            .enumerate()
            .map(|(i, (p, kind, f, key, value))| Op {
                index: i as u64,
                time_ns: i as u64 * 1_000_000,
                process: Process::Client(*p),
                kind: *kind,
                f: (*f).into(),
                key: Some((*key).into()),
                value: value.clone(),
                node: None,
                error: None,
            })
            .collect();
        History::new(ops)
    }

    use OpType::{Invoke, Ok};

    fn kinds(result: &CheckResult) -> Vec<&str> {
        result.anomalies.iter().map(|a| a.kind.as_str()).collect()
    }

    /// Process 0 writes 1, then reads absent.
    fn reads_absent_after_writing() -> History {
        history(&[
            (0, Invoke, "write", "x", json!(1)),
            (0, Ok, "write", "x", json!(1)),
            (0, Invoke, "read", "x", Value::Null),
            (0, Ok, "read", "x", Value::Null),
        ])
    }

    #[test]
    fn a_jepsen_nil_read_constrains_nothing() {
        let mimeo = check(&reads_absent_after_writing());
        assert_eq!(kinds(&mimeo), ["read-your-writes"]);
        let jepsen = History {
            source: Source::Jepsen,
            ..reads_absent_after_writing()
        };
        let result = check(&jepsen);
        assert_eq!(result.verdict, Verdict::Valid, "{result:#?}");
        assert_eq!(result.details["unconstrained_reads"], 1);
    }

    #[test]
    fn sessions_are_per_key() {
        let rows = |read_key| {
            history(&[
                (1, Invoke, "write", "y", json!(1)),
                (1, Ok, "write", "y", json!(1)),
                (0, Invoke, "write", "x", json!(2)),
                (0, Ok, "write", "x", json!(2)),
                (0, Invoke, "read", read_key, Value::Null),
                (0, Ok, "read", read_key, Value::Null),
            ])
        };
        // After writing x, reading y absent breaks no guarantee of process
        // 0 (it never wrote or read y); reading x absent does.
        assert_eq!(check(&rows("y")).verdict, Verdict::Valid);
        assert_eq!(kinds(&check(&rows("x"))), ["read-your-writes"]);
    }

    #[test]
    fn a_value_no_one_wrote_is_left_to_the_linearizability_checker() {
        let result = check(&history(&[
            (0, Invoke, "write", "x", json!(2)),
            (0, Ok, "write", "x", json!(2)),
            (0, Invoke, "read", "x", Value::Null),
            (0, Ok, "read", "x", json!(7)),
        ]));
        assert_eq!(result.verdict, Verdict::Valid, "{result:#?}");
        assert_eq!(result.details["unexplained_reads"], 1);
    }

    #[test]
    fn a_write_invoked_after_the_read_completed_cannot_explain_it() {
        // Process 1 writes 1 only after process 0's read of 1 completed:
        // that read's only source is the old write.
        let result = check(&history(&[
            (2, Invoke, "write", "x", json!(1)),
            (2, Ok, "write", "x", json!(1)),
            (0, Invoke, "write", "x", json!(2)),
            (0, Ok, "write", "x", json!(2)),
            (0, Invoke, "read", "x", Value::Null),
            (0, Ok, "read", "x", json!(1)),
            (1, Invoke, "write", "x", json!(1)),
            (1, Ok, "write", "x", json!(1)),
        ]));
        assert_eq!(kinds(&result), ["read-your-writes"]);
        assert_eq!(result.anomalies[0].indices, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn lists_twenty_of_each_kind_and_counts_them_all() {
        let mut rows = Vec::new();
        for p in 0..25 {
            let key: &'static str = Box::leak(format!("k{p}").into_boxed_str());
            rows.extend([
                (p, Invoke, "write", key, json!(1)),
                (p, Ok, "write", key, json!(1)),
                (p, Invoke, "read", key, Value::Null),
                (p, Ok, "read", key, Value::Null),
            ]);
        }
        let result = check(&history(&rows));
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.anomalies.len(), LISTED);
        assert_eq!(
            result.details["guarantees"]["read-your-writes"]["violations"],
            25
        );
        assert_eq!(result.details["sessions"], 25);
        assert!(result.summary.contains("(20 listed)"), "{}", result.summary);
    }

    #[test]
    fn unknown_without_reads_or_for_other_workloads() {
        let writes = check(&history(&[
            (0, Invoke, "write", "x", json!(1)),
            (0, Ok, "write", "x", json!(1)),
        ]));
        assert_eq!(writes.verdict, Verdict::Unknown);
        assert!(writes.anomalies.is_empty());
        let set = check(&history(&[(0, Invoke, "add", "s", json!(1))]));
        assert_eq!(set.verdict, Verdict::Unknown);
        assert_eq!(set.anomalies[0].kind, "unsupported");
        let bad_cas = check(&history(&[(0, Invoke, "cas", "x", json!(1))]));
        assert_eq!(bad_cas.verdict, Verdict::Unknown);
        assert!(
            bad_cas
                .summary
                .contains("index 0: a cas value must be [expected, new]"),
            "{}",
            bad_cas.summary
        );
    }
}
