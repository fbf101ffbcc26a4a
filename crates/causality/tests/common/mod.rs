//! Random programs over a few replicas, and naive reference models that
//! keep every operation (explicit sets of events, no compaction), shared by
//! the property and differential tests.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};

use mimeo_causality::{Dot, DvvSet, OrSet, PnCounter, VersionVector};
use proptest::prelude::*;

/// The replicas' node ids: replica `i` is `NODES[i]`.
pub const NODES: [&str; 3] = ["a", "b", "c"];

/// One step of a replicated-register program.
#[derive(Clone, Debug)]
pub enum DvvOp {
    /// Client `client` reads `replica`: remembers its context.
    Read { client: usize, replica: usize },
    /// Client `client` writes through `replica` with the context it holds
    /// (empty before its first read or write), and keeps the context the
    /// write returns.
    Write { client: usize, replica: usize },
    /// Client `client` forgets its context: its next write is blind.
    Forget { client: usize },
    /// Anti-entropy: `to` merges `from`'s state.
    Sync { from: usize, to: usize },
}

pub fn dvv_op() -> impl Strategy<Value = DvvOp> {
    prop_oneof![
        2 => (0..3usize, 0..3usize).prop_map(|(client, replica)| DvvOp::Read { client, replica }),
        4 => (0..3usize, 0..3usize).prop_map(|(client, replica)| DvvOp::Write { client, replica }),
        1 => (0..3usize).prop_map(|client| DvvOp::Forget { client }),
        3 => (0..3usize, 0..3usize).prop_map(|(from, to)| DvvOp::Sync { from, to }),
    ]
}

pub fn dvv_program(max_len: usize) -> impl Strategy<Value = Vec<DvvOp>> {
    prop::collection::vec(dvv_op(), 0..max_len)
}

/// A dotted causal history kept naively: the explicit set of every write
/// seen, and the values of those not yet superseded, by dot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NaiveRegister {
    pub seen: BTreeSet<Dot>,
    pub values: BTreeMap<Dot, u32>,
}

impl NaiveRegister {
    fn expand(context: &VersionVector) -> BTreeSet<Dot> {
        context
            .iter()
            .flat_map(|(node, n)| (1..=n).map(move |counter| Dot::new(node.clone(), counter)))
            .collect()
    }

    /// The causal context: every write seen, as a version vector (the set
    /// must be down-closed for that to be exact; `check` asserts it).
    pub fn context(&self) -> VersionVector {
        let vv: VersionVector = self
            .seen
            .iter()
            .map(|dot| (dot.node.clone(), dot.counter))
            .collect();
        assert_eq!(Self::expand(&vv), self.seen, "history is not down-closed");
        vv
    }

    pub fn write(&mut self, context: &VersionVector, node: &str, value: u32) -> Dot {
        let read = Self::expand(context);
        self.values.retain(|dot, _| !read.contains(dot));
        self.seen.extend(read);
        let counter = self
            .seen
            .iter()
            .filter(|dot| dot.node.as_str() == node)
            .map(|dot| dot.counter)
            .max()
            .unwrap_or(0)
            + 1;
        let dot = Dot::new(node, counter);
        self.seen.insert(dot.clone());
        self.values.insert(dot.clone(), value);
        dot
    }

    pub fn merge(&mut self, other: &NaiveRegister) {
        let mut values = BTreeMap::new();
        for (dot, &value) in self.values.iter().chain(&other.values) {
            let in_mine = self.values.contains_key(dot) || !self.seen.contains(dot);
            let in_theirs = other.values.contains_key(dot) || !other.seen.contains(dot);
            if in_mine && in_theirs {
                values.insert(dot.clone(), value);
            }
        }
        self.values = values;
        self.seen.extend(other.seen.iter().cloned());
    }
}

/// The outcome of running a register program on `DvvSet`s and on the
/// naive model side by side.
pub struct DvvRun {
    pub replicas: Vec<DvvSet<u32>>,
    pub models: Vec<NaiveRegister>,
}

/// Whether a run compares every replica with its model after every step
/// (the model tests), or leaves the comparison to the caller (the tests
/// of other laws, which only need valid states, and are faster without).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Check {
    EveryStep,
    Caller,
}

/// Runs `program` on three replicas (and the naive model), asserting after
/// every step that each replica agrees with its model if `check` says so.
pub fn run_dvv(program: &[DvvOp], check: Check) -> Result<DvvRun, TestCaseError> {
    let mut replicas = vec![DvvSet::<u32>::new(); 3];
    let mut models = vec![NaiveRegister::default(); 3];
    let mut contexts = vec![VersionVector::new(); 3];
    let mut next_value = 0u32;
    for op in program {
        match *op {
            DvvOp::Read { client, replica } => contexts[client] = replicas[replica].context(),
            DvvOp::Write { client, replica } => {
                next_value += 1;
                let written = replicas[replica]
                    .update(&contexts[client], NODES[replica], next_value)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let dot = models[replica].write(&contexts[client], NODES[replica], next_value);
                prop_assert_eq!(&written.dot, &dot);
                prop_assert_eq!(written.siblings, replicas[replica].len());
                contexts[client] = written.context;
            }
            DvvOp::Forget { client } => contexts[client] = VersionVector::new(),
            DvvOp::Sync { from, to } => {
                let source = replicas[from].clone();
                replicas[to].merge(&source);
                let source = models[from].clone();
                models[to].merge(&source);
            }
        }
        if check == Check::Caller {
            continue;
        }
        for (replica, model) in replicas.iter().zip(&models) {
            let values: BTreeMap<Dot, u32> = replica.iter().map(|(dot, &v)| (dot, v)).collect();
            prop_assert_eq!(&values, &model.values, "values differ after {:?}", op);
            prop_assert_eq!(
                replica.context(),
                model.context(),
                "contexts differ after {:?}",
                op
            );
        }
    }
    Ok(DvvRun { replicas, models })
}

/// One step of a set or counter program.
#[derive(Clone, Debug)]
pub enum CrdtOp {
    /// Replica `replica` adds `element` (a set) or adds `delta` (a
    /// counter).
    Add {
        replica: usize,
        element: u8,
        delta: i64,
    },
    /// Replica `replica` removes `element` (sets only; counters ignore it).
    Remove { replica: usize, element: u8 },
    /// `to` merges `from`'s state.
    Sync { from: usize, to: usize },
}

pub fn crdt_op() -> impl Strategy<Value = CrdtOp> {
    prop_oneof![
        4 => (0..3usize, 0..5u8, -20..20i64)
            .prop_map(|(replica, element, delta)| CrdtOp::Add { replica, element, delta }),
        2 => (0..3usize, 0..5u8).prop_map(|(replica, element)| CrdtOp::Remove { replica, element }),
        3 => (0..3usize, 0..3usize).prop_map(|(from, to)| CrdtOp::Sync { from, to }),
    ]
}

pub fn crdt_program(max_len: usize) -> impl Strategy<Value = Vec<CrdtOp>> {
    prop::collection::vec(crdt_op(), 0..max_len)
}

/// A replica of the operation-log model: the set of operations it has
/// seen, by a global operation id. A set's state is a function of it: an
/// element is present iff some add of it is not cancelled by a remove
/// that observed it. A counter is the sum of the deltas.
#[derive(Clone, Debug, Default)]
pub struct OpLog {
    /// add id -> (element, delta)
    pub adds: BTreeMap<u64, (u8, i64)>,
    /// remove id -> the add ids it observed
    pub removes: BTreeMap<u64, BTreeSet<u64>>,
}

impl OpLog {
    pub fn elements(&self) -> BTreeSet<u8> {
        let cancelled: BTreeSet<u64> = self.removes.values().flatten().copied().collect();
        self.adds
            .iter()
            .filter(|(id, _)| !cancelled.contains(id))
            .map(|(_, &(element, _))| element)
            .collect()
    }

    pub fn value(&self) -> i128 {
        self.adds
            .values()
            .map(|&(_, delta)| i128::from(delta))
            .sum()
    }

    pub fn observed_adds(&self, element: u8) -> BTreeSet<u64> {
        let cancelled: BTreeSet<u64> = self.removes.values().flatten().copied().collect();
        self.adds
            .iter()
            .filter(|(id, &(e, _))| e == element && !cancelled.contains(id))
            .map(|(&id, _)| id)
            .collect()
    }

    pub fn merge(&mut self, other: &OpLog) {
        self.adds.extend(other.adds.iter().map(|(k, v)| (*k, *v)));
        self.removes
            .extend(other.removes.iter().map(|(k, v)| (*k, v.clone())));
    }
}

pub struct CrdtRun {
    pub sets: Vec<OrSet<u8>>,
    pub counters: Vec<PnCounter>,
    pub logs: Vec<OpLog>,
}

/// Runs `program` on three OR-set replicas, three PN-counter replicas and
/// the operation-log model, asserting agreement after every step if
/// `check` says so.
pub fn run_crdt(program: &[CrdtOp], check: Check) -> Result<CrdtRun, TestCaseError> {
    let mut sets = vec![OrSet::<u8>::new(); 3];
    let mut counters = vec![PnCounter::new(); 3];
    let mut logs = vec![OpLog::default(); 3];
    let mut next_id = 0u64;
    for op in program {
        next_id += 1;
        match *op {
            CrdtOp::Add {
                replica,
                element,
                delta,
            } => {
                sets[replica].add(NODES[replica], element);
                counters[replica].increment(NODES[replica], delta);
                logs[replica].adds.insert(next_id, (element, delta));
            }
            CrdtOp::Remove { replica, element } => {
                sets[replica].remove(&element);
                let observed = logs[replica].observed_adds(element);
                logs[replica].removes.insert(next_id, observed);
            }
            CrdtOp::Sync { from, to } => {
                let set = sets[from].clone();
                sets[to].merge(&set);
                let counter = counters[from].clone();
                counters[to].merge(&counter);
                let log = logs[from].clone();
                logs[to].merge(&log);
            }
        }
        if check == Check::Caller {
            continue;
        }
        for i in 0..3 {
            let elements: BTreeSet<u8> = sets[i].iter().copied().collect();
            prop_assert_eq!(elements, logs[i].elements(), "replica {} after {:?}", i, op);
            prop_assert_eq!(
                counters[i].value(),
                logs[i].value(),
                "replica {} after {:?}",
                i,
                op
            );
        }
    }
    Ok(CrdtRun {
        sets,
        counters,
        logs,
    })
}
