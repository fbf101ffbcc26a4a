//! Differential tests against an independent implementation: rust-crdt's
//! `crdts` 7.3 (`VClock`, `PNCounter`, `Orswot`). The same random
//! operations run on both, and every observable result must agree: the
//! causal order and join of version vectors, counter values, set members
//! and set clocks, after every step.
//!
//! `crdts` is a dev-dependency only; production code does not use it (the
//! crate docs say why).

mod common;

use std::collections::BTreeSet;

use common::{crdt_program, CrdtOp, NODES};
use crdts::{CmRDT, CvRDT, Orswot, PNCounter, VClock};
use mimeo_causality::{Causality, Dot, OrSet, PnCounter, VersionVector};
use proptest::prelude::*;

const CASES: u32 = 3000;

fn vv() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(0..4u64, 3)
}

fn ours(counters: &[u64]) -> VersionVector {
    NODES
        .iter()
        .copied()
        .zip(counters.iter().copied())
        .collect()
}

fn theirs(counters: &[u64]) -> VClock<&'static str> {
    let mut clock = VClock::new();
    for (&node, &counter) in NODES.iter().zip(counters) {
        if counter > 0 {
            clock.apply(crdts::Dot::new(node, counter));
        }
    }
    clock
}

/// Our vector, as theirs.
fn convert(vector: &VersionVector) -> VClock<&'static str> {
    let counters: Vec<u64> = NODES.iter().map(|n| vector.get(n)).collect();
    theirs(&counters)
}

fn same_clock(ours: &VersionVector, theirs: &VClock<&'static str>) -> Result<(), TestCaseError> {
    for node in NODES {
        prop_assert_eq!(ours.get(node), theirs.get(&node), "counter of {}", node);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn version_vectors_agree_with_vclock(a in vv(), b in vv(), probe in (0..3usize, 1..5u64)) {
        let (our_a, our_b) = (ours(&a), ours(&b));
        let (their_a, their_b) = (theirs(&a), theirs(&b));
        // The causal order.
        prop_assert_eq!(our_a.partial_cmp(&our_b), their_a.partial_cmp(&their_b));
        prop_assert_eq!(our_a.concurrent(&our_b), their_a.concurrent(&their_b));
        let expected = match their_a.partial_cmp(&their_b) {
            Some(std::cmp::Ordering::Less) => Causality::Before,
            Some(std::cmp::Ordering::Greater) => Causality::After,
            Some(std::cmp::Ordering::Equal) => Causality::Equal,
            None => Causality::Concurrent,
        };
        prop_assert_eq!(our_a.compare(&our_b), expected);
        // Join and meet.
        let mut joined = their_a.clone();
        joined.merge(their_b.clone());
        prop_assert_eq!(convert(&our_a.joined(&our_b)), joined);
        let mut met = their_a.clone();
        met.glb(&their_b);
        prop_assert_eq!(convert(&our_a.meet(&our_b)), met);
        // Increment, and whether a dot is contained.
        let (node, counter) = (NODES[probe.0], probe.1);
        let their_dot = their_a.inc(node);
        let mut incremented = our_a.clone();
        let our_dot = incremented.increment(node);
        prop_assert_eq!((our_dot.node.as_str(), our_dot.counter), (their_dot.actor, their_dot.counter));
        let mut their_incremented = their_a.clone();
        their_incremented.apply(their_dot);
        prop_assert_eq!(convert(&incremented), their_incremented);
        prop_assert_eq!(
            our_a.contains(&Dot::new(node, counter)),
            their_a.get(&node) >= counter
        );
    }

    #[test]
    fn pn_counters_and_or_sets_agree_with_crdts(program in crdt_program(40)) {
        let mut our_sets = vec![OrSet::<u8>::new(); 3];
        let mut our_counters = vec![PnCounter::new(); 3];
        let mut their_sets = vec![Orswot::<u8, &'static str>::new(); 3];
        let mut their_counters = vec![PNCounter::<&'static str>::new(); 3];
        for op in &program {
            match *op {
                CrdtOp::Add { replica, element, delta } => {
                    let node = NODES[replica];
                    our_sets[replica].add(node, element);
                    let set = &mut their_sets[replica];
                    let add = set.add(element, set.read_ctx().derive_add_ctx(node));
                    set.apply(add);

                    our_counters[replica].increment(node, delta);
                    let counter = &mut their_counters[replica];
                    let change = if delta >= 0 {
                        counter.inc_many(node, delta.unsigned_abs())
                    } else {
                        counter.dec_many(node, delta.unsigned_abs())
                    };
                    counter.apply(change);
                }
                CrdtOp::Remove { replica, element } => {
                    our_sets[replica].remove(&element);
                    let set = &mut their_sets[replica];
                    let remove = set.rm(element, set.contains(&element).derive_rm_ctx());
                    set.apply(remove);
                }
                CrdtOp::Sync { from, to } => {
                    let set = our_sets[from].clone();
                    our_sets[to].merge(&set);
                    let set = their_sets[from].clone();
                    their_sets[to].merge(set);
                    let counter = our_counters[from].clone();
                    our_counters[to].merge(&counter);
                    let counter = their_counters[from].clone();
                    their_counters[to].merge(counter);
                }
            }
            for i in 0..3 {
                let ours: BTreeSet<u8> = our_sets[i].iter().copied().collect();
                let theirs: BTreeSet<u8> = their_sets[i].read().val.into_iter().collect();
                prop_assert_eq!(&ours, &theirs, "members of replica {} after {:?}", i, op);
                same_clock(our_sets[i].clock(), &their_sets[i].clock())?;
                let theirs: i128 = their_counters[i].read().to_string().parse().unwrap();
                prop_assert_eq!(our_counters[i].value(), theirs, "counter of replica {} after {:?}", i, op);
            }
        }
    }
}
