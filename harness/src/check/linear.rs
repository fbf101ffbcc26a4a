//! Linearizability of register histories: is there a total order of the
//! operations, consistent with real time, in which a sequential
//! [`Register`] returns what every client saw?
//!
//! The history is split per key (linearizability is local, so a map is
//! linearizable exactly when every key is) and the keys are searched in
//! parallel, each with the budget that is left. The search is Wing and
//! Gong's, with Lowe's memoization, as porcupine implements it: operations
//! sit in a doubly linked list of call and return entries in history order;
//! the search walks it from the head, *lifts* a call entry whose operation
//! the model accepts (and whose configuration, the set of linearized
//! operations plus the model state, was never seen), and backtracks when
//! it reaches the return entry of an operation it could not linearize.
//!
//! What each outcome means for the search:
//!
//! - `ok`: the operation took effect between its invocation and its
//!   completion, and returned what was recorded (for a [`Source::Mimeo`]
//!   history a `null` read means absent; for a [`Source::Jepsen`] one, as
//!   in Knossos' cas-register, a `nil` read matches any value and constrains
//!   nothing, so it is dropped);
//! - `fail`: no effect, dropped, except a `cas` that failed with
//!   `cas-mismatch` ([`Op::is_cas_mismatch`](crate::Op::is_cas_mismatch)): it must linearize between its
//!   invocation and completion at an instant when the value differed from
//!   the expected one;
//! - `info` (or never completed): it may take effect at any point after its
//!   invocation, or never. Its return entry is at infinity, and the search
//!   succeeds once every other operation is linearized. An indeterminate
//!   read tells nothing and is dropped. The search tries such operations
//!   only after every determinate candidate of a frontier, so a write that
//!   may never have happened is not applied before something needs it.
//!
//! One reduction on top: an operation that never changes the state (a read,
//! a cas that did not match) and whose return the current state allows is
//! linearized at once, and the other candidates of that frontier are not
//! tried, because any linearization from there can be reordered to start
//! with it. On contended keys (ten operations in flight) this cuts the
//! states explored about tenfold.
//!
//! Past the budget, a key is undecided and the verdict `unknown`, never
//! `valid`.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stateright::semantics::SequentialSpec;

use super::model::{Register, RegisterOp, RegisterRet};
use super::{Anomaly, CheckResult, Verdict};
use crate::history::{Completed, History, OpType, Source, F_CAS, F_READ, F_WRITE};

/// The checker's name in results.
pub const CHECKER: &str = "linearizable";

/// Options for [`check`].
#[derive(Clone, Debug)]
pub struct LinearOptions {
    /// Every register's initial value (`None`: absent).
    pub initial: Option<Value>,
    /// Wall-clock budget for the whole search; keys not decided in time
    /// make the verdict `unknown`.
    pub budget: Duration,
    /// Worker threads searching keys in parallel (0: one per core).
    pub threads: usize,
}

impl Default for LinearOptions {
    fn default() -> LinearOptions {
        LinearOptions {
            initial: None,
            budget: Duration::from_secs(60),
            threads: 0,
        }
    }
}

/// Checks that the register operations of `history` are linearizable,
/// key by key.
///
/// Invalid: one `not-linearizable` anomaly per failing key, whose indices
/// are the invocations and completions of the operations at the frontier
/// where the deepest search got stuck; `details.per_key` holds, for each
/// key, its operation counts, the states explored, the time spent and, when
/// it failed, the longest linearizable prefix found (invocation indices in
/// linearization order).
pub fn check(history: &History, options: &LinearOptions) -> CheckResult {
    let started = Instant::now();
    let deadline = started + options.budget;
    if let Err(message) = history.validate() {
        return CheckResult::unsupported(
            CHECKER,
            format!("malformed history: {message}"),
            Vec::new(),
        );
    }
    let (keys, values) = match split(history, options.initial.as_ref()) {
        Ok(split) => split,
        Err(Unsupported { message, index }) => {
            return CheckResult::unsupported(CHECKER, message, vec![index])
        }
    };
    let outcomes = search_keys(&keys, options.threads, deadline);
    report(&keys, &values, &outcomes, options.budget, started.elapsed())
}

// ---------------------------------------------------------------------------
// From a history to per-key search problems.

/// One register operation the search must (or may) linearize.
#[derive(Clone, Debug)]
struct KeyOp {
    call: SearchOp<Register<u32>>,
    /// The pair, for reports.
    invoke_index: u64,
    complete_index: Option<u64>,
    describe: String,
}

/// The operations of one key.
#[derive(Debug)]
struct KeyProblem {
    key: Option<String>,
    initial: Register<u32>,
    ops: Vec<KeyOp>,
    /// Client operations on the key that constrain nothing (failed, or
    /// indeterminate reads, or Jepsen `nil` reads).
    dropped: usize,
}

#[derive(Debug)]
struct Unsupported {
    message: String,
    index: u64,
}

/// Interns JSON values as small integers; `null` is absent.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    values: Vec<Value>,
}

impl Interner {
    fn intern(&mut self, value: &Value) -> Option<u32> {
        if value.is_null() {
            return None;
        }
        let next = self.values.len() as u32;
        let id = *self.ids.entry(value.to_string()).or_insert(next);
        if id == next {
            self.values.push(value.clone());
        }
        Some(id)
    }
}

/// The per-key problems, and the interned values (id `i` is `values[i]`).
fn split(
    history: &History,
    initial: Option<&Value>,
) -> Result<(Vec<KeyProblem>, Vec<Value>), Unsupported> {
    let mut interner = Interner::default();
    let initial = Register::new(initial.and_then(|v| interner.intern(v)));
    let mut keys: BTreeMap<Option<String>, KeyProblem> = BTreeMap::new();
    for pair in history.pairs() {
        let invoke = pair.invoke;
        let problem = keys
            .entry(invoke.key.clone())
            .or_insert_with(|| KeyProblem {
                key: invoke.key.clone(),
                initial,
                ops: Vec::new(),
                dropped: 0,
            });
        match to_search_op(&pair, history.source, &mut interner)? {
            Some(call) => problem.ops.push(KeyOp {
                call,
                invoke_index: invoke.index,
                complete_index: pair.complete.map(|c| c.index),
                describe: describe(&pair),
            }),
            None => problem.dropped += 1,
        }
    }
    Ok((keys.into_values().collect(), interner.values))
}

/// The search operation for a pair, `None` when it constrains nothing.
fn to_search_op(
    pair: &Completed<'_>,
    source: Source,
    interner: &mut Interner,
) -> Result<Option<SearchOp<Register<u32>>>, Unsupported> {
    let invoke = pair.invoke;
    let outcome = pair.outcome();
    let call = invoke.index;
    let ret_pos = match (outcome, pair.complete) {
        (OpType::Ok | OpType::Fail, Some(complete)) => Some(complete.index),
        _ => None,
    };
    let (op, ret) = match invoke.f.as_str() {
        F_READ => {
            let Some(complete) = pair.complete.filter(|_| outcome == OpType::Ok) else {
                return Ok(None);
            };
            if complete.value.is_null() && source == Source::Jepsen {
                return Ok(None);
            }
            let read = interner.intern(&complete.value);
            (RegisterOp::Read, RegisterRet::ReadOk(read))
        }
        F_WRITE => (
            RegisterOp::Write(interner.intern(&invoke.value)),
            RegisterRet::WriteOk,
        ),
        F_CAS => {
            let Some([expected, new]) = invoke
                .value
                .as_array()
                .map(Vec::as_slice)
                .and_then(|a| <&[Value; 2]>::try_from(a).ok())
            else {
                return Err(Unsupported {
                    message: format!(
                        "index {}: a cas value must be [expected, new], found {}",
                        invoke.index, invoke.value
                    ),
                    index: invoke.index,
                });
            };
            let op = RegisterOp::Cas {
                expected: interner.intern(expected),
                new: interner.intern(new),
            };
            let mismatch = pair.complete.is_some_and(|c| c.is_cas_mismatch());
            (
                op,
                if mismatch {
                    RegisterRet::CasMismatch
                } else {
                    RegisterRet::CasOk
                },
            )
        }
        other => {
            return Err(Unsupported {
                message: format!(
                    "index {}: client operation `{other}` is not a register operation \
                     (read, write, cas); the linearizability checker cannot model it",
                    invoke.index
                ),
                index: invoke.index,
            })
        }
    };
    // Reads and mismatched compare-and-sets never change the register.
    let pure = matches!(ret, RegisterRet::ReadOk(_) | RegisterRet::CasMismatch);
    let determinate = outcome == OpType::Ok || ret == RegisterRet::CasMismatch;
    Ok(match outcome {
        _ if determinate => Some(SearchOp {
            op,
            ret: Some(ret),
            call,
            ret_pos,
            pure,
        }),
        OpType::Fail => None,
        // Indeterminate: may take effect any time after `call`, or never.
        _ => Some(SearchOp {
            op,
            ret: None,
            call,
            ret_pos: None,
            pure: false,
        }),
    })
}

fn describe(pair: &Completed<'_>) -> String {
    let invoke = pair.invoke;
    let what = match (pair.complete, invoke.f.as_str()) {
        (Some(c), F_READ) if c.kind == OpType::Ok => format!("read {}", c.value),
        (_, F_READ) => "read".to_string(),
        (_, f) => format!("{f} {}", invoke.value),
    };
    let outcome = match pair.complete {
        Some(c) if c.is_cas_mismatch() => "fail (cas-mismatch)".to_string(),
        Some(c) => format!("{:?}", c.kind).to_lowercase(),
        None => "never completed".to_string(),
    };
    let indices = match pair.complete {
        Some(c) => format!("indices {}-{}", invoke.index, c.index),
        None => format!("index {}", invoke.index),
    };
    format!("process {} {what} {outcome} ({indices})", invoke.process)
}

// ---------------------------------------------------------------------------
// The search.

/// An operation for [`search`]: a model operation, the return it must
/// produce, and where it sits in the history.
#[derive(Clone, Debug)]
struct SearchOp<S: SequentialSpec> {
    op: S::Op,
    /// `None`: indeterminate; it may linearize any time after `call`, or
    /// never, and its return is not checked.
    ret: Option<S::Ret>,
    /// Position of the invocation in the history.
    call: u64,
    /// Position of the completion; `None` for indeterminate operations.
    ret_pos: Option<u64>,
    /// It never changes the state, whatever the state (a read, a cas that
    /// did not match): when the state allows its return, linearizing it
    /// at once loses no linearization, so the search does not try the
    /// alternatives.
    pure: bool,
}

/// How the search of one key ended.
#[derive(Clone, Debug, PartialEq)]
enum Outcome<S> {
    Linearizable,
    NotLinearizable {
        /// The longest linearizable prefix found (operation ids).
        prefix: Vec<usize>,
        /// The model's state after it.
        state: S,
        /// The operations pending where it got stuck, the one whose
        /// completion could not be passed first.
        frontier: Vec<usize>,
    },
    OutOfTime {
        /// The deepest prefix reached.
        deepest: usize,
    },
}

/// Figures of one search.
#[derive(Clone, Debug, Default)]
struct Stats {
    /// Distinct configurations (linearized set, model state) visited.
    states: usize,
    time: Duration,
}

const NIL: u32 = u32::MAX;
const REQUIRED_HEAD: u32 = 0;
const OPTIONAL_HEAD: u32 = 1;

/// One entry of the doubly linked lists (the heads are sentinels).
#[derive(Clone, Copy, Debug)]
struct Node {
    prev: u32,
    next: u32,
    op: u32,
    is_return: bool,
    pos: u64,
}

/// The entries: required operations (calls and returns) in one list,
/// indeterminate ones (calls only) in another, each in history order.
/// Lifting unlinks an operation's entries; unlifting, in reverse order,
/// relinks them where they were.
struct Entries {
    nodes: Vec<Node>,
    /// Per operation: its call node and return node (NIL if none).
    of_op: Vec<(u32, u32)>,
}

impl Entries {
    fn new<S: SequentialSpec>(ops: &[SearchOp<S>]) -> Entries {
        let head = |op| Node {
            prev: NIL,
            next: NIL,
            op,
            is_return: false,
            pos: 0,
        };
        let mut nodes = vec![head(NIL), head(NIL)];
        let mut of_op = vec![(NIL, NIL); ops.len()];
        let mut required = Vec::new();
        let mut optional = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op.ret_pos {
                Some(ret) => {
                    required.push((op.call, i, false));
                    required.push((ret, i, true));
                }
                None => optional.push((op.call, i, false)),
            }
        }
        required.sort_unstable();
        optional.sort_unstable();
        for (head, list) in [(REQUIRED_HEAD, required), (OPTIONAL_HEAD, optional)] {
            let mut last = head;
            for (pos, op, is_return) in list {
                let id = nodes.len() as u32;
                nodes.push(Node {
                    prev: last,
                    next: NIL,
                    op: op as u32,
                    is_return,
                    pos,
                });
                nodes[last as usize].next = id;
                last = id;
                if is_return {
                    of_op[op].1 = id;
                } else {
                    of_op[op].0 = id;
                }
            }
        }
        Entries { nodes, of_op }
    }

    fn next(&self, node: u32) -> u32 {
        self.nodes[node as usize].next
    }

    fn unlink(&mut self, id: u32) {
        let Node { prev, next, .. } = self.nodes[id as usize];
        self.nodes[prev as usize].next = next;
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn relink(&mut self, id: u32) {
        let Node { prev, next, .. } = self.nodes[id as usize];
        self.nodes[prev as usize].next = id;
        if next != NIL {
            self.nodes[next as usize].prev = id;
        }
    }

    fn lift(&mut self, op: usize) {
        let (call, ret) = self.of_op[op];
        self.unlink(call);
        if ret != NIL {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, op: usize) {
        let (call, ret) = self.of_op[op];
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// A fast, deterministic hasher (FxHash's round, splitmix64's finalizer):
/// the search hashes one small state per step.
#[derive(Default)]
struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        splitmix(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type BuildMix = BuildHasherDefault<Mix>;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The set of linearized operations as a bitset, with a Zobrist hash kept
/// up to date so that looking a configuration up costs O(1) until hashes
/// collide, and kept compact for the cache: required operations take bits
/// `0..` in invocation order and indeterminate ones the words from
/// `optional_base`. Every required operation invoked long ago is linearized,
/// so the required words below `full` are all ones and those from `end`
/// all zeros: a configuration is `full`, the window of words between, and
/// the indeterminate words, whose size is bounded by the concurrency and
/// the number of indeterminate operations, not by the history's length.
struct Linearized {
    words: Vec<u64>,
    optional_base: usize,
    full: usize,
    end: usize,
    hash: u64,
}

impl Linearized {
    fn new(required: usize, optional: usize) -> Linearized {
        let optional_base = required.div_ceil(64);
        Linearized {
            words: vec![0; optional_base + optional.div_ceil(64)],
            optional_base,
            full: 0,
            end: 0,
            hash: 0,
        }
    }

    fn toggle(&mut self, bit: usize) {
        let w = bit / 64;
        self.words[w] ^= 1 << (bit % 64);
        self.hash ^= splitmix(bit as u64);
        if w >= self.optional_base {
            return;
        }
        if self.words[w] != u64::MAX {
            self.full = self.full.min(w);
        }
        while self.full < self.optional_base && self.words[self.full] == u64::MAX {
            self.full += 1;
        }
        if self.words[w] != 0 {
            self.end = self.end.max(w + 1);
        }
        while self.end > 0 && self.words[self.end - 1] == 0 {
            self.end -= 1;
        }
    }

    /// The words between the full prefix and the zero suffix of the
    /// required region.
    fn window(&self) -> &[u64] {
        &self.words[self.full..self.end.max(self.full)]
    }

    fn optional(&self) -> &[u64] {
        &self.words[self.optional_base..]
    }
}

/// Lowe's cache: every configuration (linearized set, state) visited, the
/// compact sets stored back to back in one arena.
struct Cache<S> {
    heads: HashMap<u64, u32, BuildMix>,
    /// Per configuration: where its words start in `words`, its `full`,
    /// and its window's length.
    sets: Vec<(usize, u32, u32)>,
    words: Vec<u64>,
    states: Vec<S>,
    chain: Vec<u32>,
}

impl<S: Eq + Hash> Cache<S> {
    fn new() -> Cache<S> {
        Cache {
            heads: HashMap::default(),
            sets: Vec::new(),
            words: Vec::new(),
            states: Vec::new(),
            chain: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.states.len()
    }

    /// Inserts the configuration (`linearized`, `state`); false if it was
    /// already there.
    fn insert(&mut self, linearized: &Linearized, state: S) -> bool {
        let key = linearized.hash ^ BuildMix::default().hash_one(&state);
        let (window, optional) = (linearized.window(), linearized.optional());
        let first = self.heads.get(&key).copied().unwrap_or(NIL);
        let mut at = first;
        while at != NIL {
            let i = at as usize;
            let (offset, full, len) = self.sets[i];
            let stored = &self.words[offset..offset + len as usize + optional.len()];
            if full as usize == linearized.full
                && len as usize == window.len()
                && self.states[i] == state
                && stored[..window.len()] == *window
                && stored[window.len()..] == *optional
            {
                return false;
            }
            at = self.chain[i];
        }
        let id = self.states.len() as u32;
        self.sets.push((
            self.words.len(),
            linearized.full as u32,
            window.len() as u32,
        ));
        self.words.extend_from_slice(window);
        self.words.extend_from_slice(optional);
        self.states.push(state);
        self.chain.push(first);
        self.heads.insert(key, id);
        true
    }
}

/// A linearized operation on the search stack, with what is needed to
/// undo it and resume the frontier after it.
struct Frame<S> {
    op: usize,
    state: S,
    /// For an indeterminate operation, the return entry that bounded the
    /// frontier it was chosen from.
    blocked: u32,
    /// Chosen as a pure operation: the other candidates of its frontier
    /// need no trying.
    forced: bool,
}

/// Where the search is in the frontier it is exploring.
#[derive(Clone, Copy)]
enum Cursor {
    /// Walking the required list (calls until the first return).
    Required(u32),
    /// Trying indeterminate calls invoked before the return entry `blocked`.
    Optional { node: u32, blocked: u32 },
}

/// Searches for a linearization of `ops` from `init`, giving up at
/// `deadline`.
fn search<S>(init: S, ops: &[SearchOp<S>], deadline: Instant) -> (Outcome<S>, Stats)
where
    S: SequentialSpec + Clone + Eq + Hash,
{
    let started = Instant::now();
    let required = ops.iter().filter(|op| op.ret_pos.is_some()).count();
    let mut entries = Entries::new(ops);
    let mut cache = Cache::new();
    let mut linearized = Linearized::new(required, ops.len() - required);
    // Each operation's bit: required ones first, in invocation order.
    let mut bit_of = vec![0; ops.len()];
    let (mut next_required, mut next_optional) = (0, linearized.optional_base * 64);
    for (op, bit) in ops.iter().zip(&mut bit_of) {
        let next = if op.ret_pos.is_some() {
            &mut next_required
        } else {
            &mut next_optional
        };
        *bit = *next;
        *next += 1;
    }
    let mut stack: Vec<Frame<S>> = Vec::new();
    let mut state = init;
    let mut done = 0;
    let mut steps: u64 = 0;
    let mut best: Option<(Vec<usize>, S, Vec<usize>)> = None;
    let mut cursor = Cursor::Required(entries.next(REQUIRED_HEAD));
    let stats = |cache: &Cache<S>| Stats {
        states: cache.len(),
        time: started.elapsed(),
    };

    while done < required {
        steps += 1;
        if steps % 1024 == 0 && Instant::now() >= deadline {
            let deepest = best.as_ref().map_or(0, |(p, ..)| p.len()).max(stack.len());
            return (Outcome::OutOfTime { deepest }, stats(&cache));
        }
        // The next candidate of this frontier, or None when it is exhausted.
        let candidate = match cursor {
            Cursor::Required(node) => {
                let n = entries.nodes[node as usize];
                if n.is_return {
                    cursor = Cursor::Optional {
                        node: entries.next(OPTIONAL_HEAD),
                        blocked: node,
                    };
                    continue;
                }
                Some((node, NIL))
            }
            Cursor::Optional { node, blocked } => {
                let limit = entries.nodes[blocked as usize].pos;
                (node != NIL && entries.nodes[node as usize].pos < limit).then_some((node, blocked))
            }
        };
        let frontier_failed = match candidate {
            None => true,
            Some((node, blocked)) => {
                let op = entries.nodes[node as usize].op as usize;
                let mut next = state.clone();
                let accepted = match &ops[op].ret {
                    Some(ret) => next.is_valid_step(&ops[op].op, ret),
                    None => {
                        next.invoke(&ops[op].op);
                        true
                    }
                };
                // A pure operation the state allows can go first: if no
                // linearization starts with it, none starts here at all.
                let forced = accepted && ops[op].pure;
                if accepted {
                    linearized.toggle(bit_of[op]);
                }
                if accepted && cache.insert(&linearized, next.clone()) {
                    stack.push(Frame {
                        op,
                        state: std::mem::replace(&mut state, next),
                        blocked,
                        forced,
                    });
                    entries.lift(op);
                    done += usize::from(ops[op].ret_pos.is_some());
                    cursor = Cursor::Required(entries.next(REQUIRED_HEAD));
                    false
                } else if forced {
                    linearized.toggle(bit_of[op]);
                    true
                } else {
                    if accepted {
                        linearized.toggle(bit_of[op]);
                    }
                    let after = entries.next(node);
                    cursor = match cursor {
                        Cursor::Required(_) => Cursor::Required(after),
                        Cursor::Optional { blocked, .. } => Cursor::Optional {
                            node: after,
                            blocked,
                        },
                    };
                    false
                }
            }
        };
        if !frontier_failed {
            continue;
        }
        // Nothing can be linearized here: remember the deepest frontier,
        // then undo the last choice and try the next one.
        if best
            .as_ref()
            .is_none_or(|(prefix, ..)| stack.len() > prefix.len())
        {
            let prefix = stack.iter().map(|f| f.op).collect();
            best = Some((prefix, state.clone(), pending(&entries)));
        }
        loop {
            let Some(frame) = stack.pop() else {
                let (prefix, state, frontier) = best.expect("recorded just above");
                let outcome = Outcome::NotLinearizable {
                    prefix,
                    state,
                    frontier,
                };
                return (outcome, stats(&cache));
            };
            let op = frame.op;
            state = frame.state;
            linearized.toggle(bit_of[op]);
            entries.unlift(op);
            let call = entries.of_op[op].0;
            if ops[op].ret_pos.is_some() {
                done -= 1;
            }
            if frame.forced {
                // Its frontier failed with it: no need to try the others.
                continue;
            }
            cursor = if ops[op].ret_pos.is_some() {
                Cursor::Required(entries.next(call))
            } else {
                Cursor::Optional {
                    node: entries.next(call),
                    blocked: frame.blocked,
                }
            };
            break;
        }
    }
    (Outcome::Linearizable, stats(&cache))
}

/// The required operations pending at the current frontier: the one whose
/// return entry comes first in the list (the deadline nothing could meet)
/// first, then those invoked before that return.
fn pending(entries: &Entries) -> Vec<usize> {
    let mut calls = Vec::new();
    let mut node = entries.next(REQUIRED_HEAD);
    while node != NIL {
        let n = entries.nodes[node as usize];
        if n.is_return {
            let stuck = n.op as usize;
            calls.retain(|&op| op != stuck);
            calls.insert(0, stuck);
            break;
        }
        calls.push(n.op as usize);
        node = n.next;
    }
    calls
}

// ---------------------------------------------------------------------------
// Keys in parallel, and the result.

fn search_keys(
    keys: &[KeyProblem],
    threads: usize,
    deadline: Instant,
) -> Vec<(Outcome<Register<u32>>, Stats)> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, keys.len().max(1));
    // Largest keys first, so that one long key does not start last.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(keys[i].ops.len()));
    let next = AtomicUsize::new(0);
    let search_one = |i: usize| {
        let problem = &keys[i];
        if Instant::now() >= deadline {
            return (Outcome::OutOfTime { deepest: 0 }, Stats::default());
        }
        let ops: Vec<_> = problem.ops.iter().map(|op| op.call.clone()).collect();
        search(problem.initial, &ops, deadline)
    };
    let mut outcomes: Vec<Option<(Outcome<Register<u32>>, Stats)>> = vec![None; keys.len()];
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let at = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = order.get(at) else { break };
                        done.push((i, search_one(i)));
                    }
                    done
                })
            })
            .collect();
        for worker in workers {
            // A panic in the search is a bug: let it surface.
            for (i, outcome) in worker
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
            {
                outcomes[i] = Some(outcome);
            }
        }
    });
    outcomes
        .into_iter()
        .map(|o| o.expect("every key is searched"))
        .collect()
}

fn key_name(key: &Option<String>) -> String {
    match key {
        Some(k) => format!("key {k:?}"),
        None => "the register".to_string(),
    }
}

fn report(
    keys: &[KeyProblem],
    values: &[Value],
    outcomes: &[(Outcome<Register<u32>>, Stats)],
    budget: Duration,
    elapsed: Duration,
) -> CheckResult {
    let mut anomalies = Vec::new();
    let mut per_key = Vec::new();
    let mut undecided = Vec::new();
    let mut invalid = 0;
    let mut states = 0;
    for (problem, (outcome, stats)) in keys.iter().zip(outcomes) {
        states += stats.states;
        let mut entry = json!({
            "key": problem.key,
            "ops": problem.ops.len() + problem.dropped,
            "checked": problem.ops.len(),
            "indeterminate": problem.ops.iter().filter(|op| op.call.ret_pos.is_none()).count(),
            "states": stats.states,
            "time_ms": stats.time.as_secs_f64() * 1e3,
        });
        match outcome {
            Outcome::Linearizable => entry["verdict"] = json!(Verdict::Valid),
            Outcome::OutOfTime { deepest } => {
                entry["verdict"] = json!(Verdict::Unknown);
                entry["deepest_prefix"] = json!(deepest);
                undecided.push(key_name(&problem.key));
            }
            Outcome::NotLinearizable {
                prefix,
                state,
                frontier,
            } => {
                invalid += 1;
                entry["verdict"] = json!(Verdict::Invalid);
                let invoke = |&i: &usize| problem.ops[i].invoke_index;
                entry["longest_prefix"] = json!(prefix.iter().map(invoke).collect::<Vec<_>>());
                entry["frontier"] = json!(frontier.iter().map(invoke).collect::<Vec<_>>());
                let holds = state
                    .value
                    .map_or(Value::Null, |id| values[id as usize].clone());
                entry["state_after_prefix"] = holds.clone();
                anomalies.push(not_linearizable(problem, prefix, &holds, frontier));
            }
        }
        per_key.push(entry);
    }
    let ops: usize = keys.iter().map(|k| k.ops.len() + k.dropped).sum();
    let verdict = if invalid > 0 {
        Verdict::Invalid
    } else if !undecided.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Valid
    };
    let scope = format!(
        "{ops} register operations on {} key{}",
        keys.len(),
        if keys.len() == 1 { "" } else { "s" }
    );
    let effort = format!(
        "{states} state{} explored in {:.2} s",
        if states == 1 { "" } else { "s" },
        elapsed.as_secs_f64()
    );
    let summary = match verdict {
        Verdict::Valid => format!("{scope}: linearizable ({effort})"),
        Verdict::Invalid => format!(
            "{scope}: {invalid} key{} not linearizable ({effort})",
            if invalid == 1 { "" } else { "s" }
        ),
        Verdict::Unknown => format!(
            "{scope}: {} undecided within the {:.1} s budget ({effort})",
            undecided.len(),
            budget.as_secs_f64()
        ),
    };
    if !undecided.is_empty() {
        const NAMED: usize = 20;
        let mut names = undecided
            .iter()
            .take(NAMED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if undecided.len() > NAMED {
            names.push_str(&format!(" and {} more", undecided.len() - NAMED));
        }
        anomalies.push(Anomaly {
            kind: "undecided".into(),
            message: format!(
                "the search ran out of its {:.1} s budget before deciding {names}; \
                 raise the budget or check fewer operations per key",
                budget.as_secs_f64()
            ),
            indices: Vec::new(),
        });
    }
    CheckResult {
        checker: CHECKER.into(),
        verdict,
        summary,
        anomalies,
        details: json!({
            "keys": keys.len(),
            "ops": ops,
            "states": states,
            "time_ms": elapsed.as_secs_f64() * 1e3,
            "undecided": undecided,
            "per_key": per_key,
        }),
    }
}

fn not_linearizable(
    problem: &KeyProblem,
    prefix: &[usize],
    holds: &Value,
    frontier: &[usize],
) -> Anomaly {
    let mut indices = Vec::new();
    for &i in frontier {
        let op = &problem.ops[i];
        indices.push(op.invoke_index);
        indices.extend(op.complete_index);
    }
    let stuck = frontier
        .first()
        .map_or_else(String::new, |&i| problem.ops[i].describe.clone());
    let others = frontier.len().saturating_sub(1);
    let others = match others {
        0 => String::new(),
        n => format!(
            ", nor can the {n} other operation{} pending with it ({})",
            if n == 1 { "" } else { "s" },
            frontier[1..]
                .iter()
                .map(|&i| problem.ops[i].describe.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    let last = match prefix.last() {
        Some(&i) => format!(", the last {}", problem.ops[i].describe),
        None => String::new(),
    };
    Anomaly {
        kind: "not-linearizable".into(),
        message: format!(
            "{}: not linearizable. After the longest linearizable prefix found \
             ({} operation{}{last}), where the register holds {holds}, \
             {stuck} cannot take effect before it completes{others}",
            key_name(&problem.key),
            prefix.len(),
            if prefix.len() == 1 { "" } else { "s" },
        ),
        indices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Process};

    /// A history from `(process, type, f, key, value)` rows, in order.
    fn history(rows: &[(u64, &str, &str, Option<&str>, Value)]) -> History {
        let ops = rows
            .iter()
            .enumerate()
            .map(|(i, (p, kind, f, key, value))| Op {
                index: i as u64,
                time_ns: i as u64,
                process: Process::Client(*p),
                kind: serde_json::from_value(json!(kind)).unwrap(),
                f: f.to_string(),
                key: key.map(str::to_string),
                value: value.clone(),
                node: None,
                error: None,
            })
            .collect();
        History::new(ops)
    }

    fn verdict(h: &History) -> Verdict {
        check(h, &LinearOptions::default()).verdict
    }

    #[test]
    fn a_stale_read_is_invalid_and_the_read_is_the_counterexample() {
        let h = history(&[
            (0, "invoke", "write", None, json!(1)),
            (0, "ok", "write", None, json!(1)),
            (1, "invoke", "read", None, Value::Null),
            (1, "ok", "read", None, json!(0)),
        ]);
        let result = check(&h, &LinearOptions::default());
        assert_eq!(result.verdict, Verdict::Invalid, "{result:?}");
        assert_eq!(result.checker, "linearizable");
        let anomaly = &result.anomalies[0];
        assert_eq!(anomaly.kind, "not-linearizable");
        assert_eq!(anomaly.indices, vec![2, 3]);
        assert!(
            anomaly
                .message
                .contains("process 1 read 0 ok (indices 2-3)"),
            "{}",
            anomaly.message
        );
        assert_eq!(result.details["per_key"][0]["longest_prefix"], json!([0]));
        assert_eq!(result.details["per_key"][0]["frontier"], json!([2]));
        assert_eq!(result.details["per_key"][0]["state_after_prefix"], json!(1));
        assert!(
            anomaly.message.contains("where the register holds 1"),
            "{}",
            anomaly.message
        );
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // write 1 and write 2 overlap; reads after both see one of them.
        for last in [1, 2] {
            let h = history(&[
                (0, "invoke", "write", None, json!(1)),
                (1, "invoke", "write", None, json!(2)),
                (0, "ok", "write", None, json!(1)),
                (1, "ok", "write", None, json!(2)),
                (2, "invoke", "read", None, Value::Null),
                (2, "ok", "read", None, json!(last)),
            ]);
            assert_eq!(verdict(&h), Verdict::Valid, "last = {last}");
        }
    }

    #[test]
    fn the_initial_value_is_an_option() {
        let h = history(&[
            (0, "invoke", "read", None, Value::Null),
            (0, "ok", "read", None, json!(0)),
        ]);
        assert_eq!(verdict(&h), Verdict::Invalid);
        let options = LinearOptions {
            initial: Some(json!(0)),
            ..Default::default()
        };
        assert_eq!(check(&h, &options).verdict, Verdict::Valid);
        let absent = history(&[
            (0, "invoke", "read", None, Value::Null),
            (0, "ok", "read", None, Value::Null),
        ]);
        assert_eq!(verdict(&absent), Verdict::Valid);
        assert_eq!(check(&absent, &options).verdict, Verdict::Invalid);
    }

    #[test]
    fn an_indeterminate_write_may_take_effect_late_or_never() {
        let late = history(&[
            (0, "invoke", "write", None, json!(1)),
            (0, "info", "write", None, json!(1)),
            (1, "invoke", "read", None, Value::Null),
            (1, "ok", "read", None, Value::Null),
            (1, "invoke", "read", None, Value::Null),
            (1, "ok", "read", None, json!(1)),
        ]);
        assert_eq!(verdict(&late), Verdict::Valid);
        let never = history(&[
            (0, "invoke", "write", None, json!(1)),
            (1, "invoke", "read", None, Value::Null),
            (1, "ok", "read", None, Value::Null),
        ]);
        assert_eq!(verdict(&never), Verdict::Valid);
        // Once it showed, it cannot un-happen.
        let flicker = history(&[
            (0, "invoke", "write", None, json!(1)),
            (1, "invoke", "read", None, Value::Null),
            (1, "ok", "read", None, json!(1)),
            (1, "invoke", "read", None, Value::Null),
            (1, "ok", "read", None, Value::Null),
        ]);
        assert_eq!(verdict(&flicker), Verdict::Invalid);
    }

    #[test]
    fn a_cas_mismatch_is_evidence_and_a_plain_fail_is_not() {
        let mut h = history(&[
            (0, "invoke", "write", None, json!(1)),
            (0, "ok", "write", None, json!(1)),
            (1, "invoke", "cas", None, json!([1, 2])),
            (1, "fail", "cas", None, json!([1, 2])),
        ]);
        assert_eq!(
            verdict(&h),
            Verdict::Valid,
            "a failure without a reason has no effect"
        );
        h.ops[3].error = Some("cas-mismatch".into());
        assert_eq!(
            verdict(&h),
            Verdict::Invalid,
            "the value was 1 throughout the cas"
        );
        h.ops[2].value = json!([0, 2]);
        h.ops[3].value = json!([0, 2]);
        assert_eq!(verdict(&h), Verdict::Valid);
    }

    #[test]
    fn jepsen_nil_reads_match_anything() {
        let mut h = history(&[
            (0, "invoke", "write", None, json!(1)),
            (0, "ok", "write", None, json!(1)),
            (1, "invoke", "read", None, Value::Null),
            (1, "ok", "read", None, Value::Null),
        ]);
        assert_eq!(verdict(&h), Verdict::Invalid, "mimeo: null is absent");
        h.source = Source::Jepsen;
        assert_eq!(verdict(&h), Verdict::Valid);
    }

    #[test]
    fn keys_are_checked_separately_and_the_bad_one_is_named() {
        let h = history(&[
            (0, "invoke", "write", Some("a"), json!(1)),
            (1, "invoke", "write", Some("b"), json!(1)),
            (0, "ok", "write", Some("a"), json!(1)),
            (1, "ok", "write", Some("b"), json!(1)),
            (0, "invoke", "read", Some("a"), Value::Null),
            (1, "invoke", "read", Some("b"), Value::Null),
            (0, "ok", "read", Some("a"), json!(1)),
            (1, "ok", "read", Some("b"), json!(2)),
        ]);
        let result = check(
            &h,
            &LinearOptions {
                threads: 2,
                ..Default::default()
            },
        );
        assert_eq!(result.verdict, Verdict::Invalid);
        assert_eq!(result.anomalies.len(), 1);
        assert!(
            result.anomalies[0].message.starts_with("key \"b\""),
            "{:?}",
            result.anomalies
        );
        assert_eq!(result.anomalies[0].indices, vec![5, 7]);
        assert_eq!(result.details["keys"], 2);
        assert_eq!(result.details["per_key"][0]["verdict"], "valid");
    }

    #[test]
    fn operations_it_cannot_model_make_the_verdict_unknown() {
        let h = history(&[
            (0, "invoke", "add", None, json!(1)),
            (0, "ok", "add", None, json!(1)),
        ]);
        let result = check(&h, &LinearOptions::default());
        assert_eq!(result.verdict, Verdict::Unknown);
        assert!(result.anomalies[0]
            .message
            .contains("index 0: client operation `add`"));
        let h = history(&[
            (0, "invoke", "cas", None, json!(1)),
            (0, "ok", "cas", None, json!(1)),
        ]);
        let result = check(&h, &LinearOptions::default());
        assert_eq!(result.verdict, Verdict::Unknown);
        assert!(
            result.summary.contains("[expected, new], found 1"),
            "{}",
            result.summary
        );
    }

    #[test]
    fn nemesis_operations_are_ignored() {
        let mut h = history(&[
            (0, "invoke", "write", None, json!(1)),
            (0, "ok", "write", None, json!(1)),
        ]);
        h.ops.insert(
            1,
            Op {
                process: Process::Nemesis,
                kind: OpType::Info,
                f: "partition".into(),
                ..h.ops[0].clone()
            },
        );
        for (i, op) in h.ops.iter_mut().enumerate() {
            op.index = i as u64;
        }
        assert_eq!(verdict(&h), Verdict::Valid);
    }

    /// `n` concurrent writes of distinct values, then a read of a value
    /// none wrote: every order of the writes is a distinct configuration.
    fn pathological(n: u64) -> History {
        let mut rows = Vec::new();
        for p in 0..n {
            rows.push((p, "invoke", "write", None, json!(p)));
        }
        for p in 0..n {
            rows.push((p, "ok", "write", None, json!(p)));
        }
        rows.push((n, "invoke", "read", None, Value::Null));
        rows.push((n, "ok", "read", None, json!(n)));
        history(&rows)
    }

    #[test]
    fn out_of_budget_is_unknown_never_valid() {
        let h = pathological(40);
        let started = Instant::now();
        let options = LinearOptions {
            budget: Duration::from_millis(50),
            ..Default::default()
        };
        let result = check(&h, &options);
        assert_eq!(result.verdict, Verdict::Unknown, "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the budget is enforced"
        );
        assert_eq!(result.anomalies[0].kind, "undecided");
        assert!(result.anomalies[0].message.contains("the register"));
        assert_eq!(result.details["undecided"], json!(["the register"]));
        // A zero budget decides nothing, even a trivial history.
        let trivial = history(&[
            (0, "invoke", "write", None, json!(1)),
            (0, "ok", "write", None, json!(1)),
        ]);
        let zero = LinearOptions {
            budget: Duration::ZERO,
            ..Default::default()
        };
        assert_eq!(check(&trivial, &zero).verdict, Verdict::Unknown);
        // And with time, the small pathological case is decided.
        assert_eq!(verdict(&pathological(8)), Verdict::Invalid);
    }

    #[test]
    fn the_search_prefers_determinate_candidates_but_backtracks_through_all() {
        // An indeterminate cas is needed to explain the final read, and
        // only if applied after the write of 2.
        let h = history(&[
            (0, "invoke", "cas", None, json!([2, 3])),
            (1, "invoke", "write", None, json!(2)),
            (1, "ok", "write", None, json!(2)),
            (1, "invoke", "read", None, Value::Null),
            (1, "ok", "read", None, json!(3)),
        ]);
        assert_eq!(verdict(&h), Verdict::Valid);
    }
}
