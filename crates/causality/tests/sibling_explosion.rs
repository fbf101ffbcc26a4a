//! Riak's "sibling explosion", and why dotted version vector sets do not
//! have it (Almeida, Baquero et al. 2014, section 2; Riak 2.0 release
//! notes on `dvv_enabled`).
//!
//! Two clients write the same key through the same node without reading
//! it: each sends the context its own previous write returned (the first
//! write is blind). With one version vector per key and no dots (Riak's
//! vnode vclocks), the node cannot tell which sibling a context covers: the
//! context is older than the key's vector, so the new value is kept
//! beside every sibling, and the key gains one sibling per write. With a
//! DVV set, each value has a dot, the context covers the writer's own
//! previous value, and the key keeps at most one sibling per client.
//!
//! `naive_vnode_clock_explodes` runs the same scenario on the naive
//! design and shows the assertion the DVV set passes would fail there.

use std::collections::BTreeSet;

use mimeo_causality::{DvvSet, SiblingError, VersionVector};
use proptest::prelude::*;

/// A key's store, as a coordinating node sees it: write with a context,
/// get back the context to hand to the writer.
trait Register {
    fn put(&mut self, context: &VersionVector, node: &str, value: u32) -> VersionVector;
    fn siblings(&self) -> Vec<u32>;
}

impl Register for DvvSet<u32> {
    fn put(&mut self, context: &VersionVector, node: &str, value: u32) -> VersionVector {
        self.update(context, node, value)
            .expect("under the cap")
            .context
    }

    fn siblings(&self) -> Vec<u32> {
        self.values().copied().collect()
    }
}

/// One version vector for the whole key, no dots: a write whose context
/// descends the key's vector replaces every sibling; otherwise the new
/// value joins them (it might be concurrent with any of them).
#[derive(Default)]
struct VnodeClock {
    clock: VersionVector,
    values: Vec<u32>,
}

impl Register for VnodeClock {
    fn put(&mut self, context: &VersionVector, node: &str, value: u32) -> VersionVector {
        if context.descends(&self.clock) {
            self.values.clear();
        }
        self.values.push(value);
        self.clock.join(context);
        self.clock.increment(node);
        self.clock.clone()
    }

    fn siblings(&self) -> Vec<u32> {
        self.values.clone()
    }
}

/// Clients write in the order `writers` through node `n1`, each with the
/// context of its own previous write; returns the most siblings seen after
/// any write.
fn blind_writers(store: &mut impl Register, writers: &[usize]) -> usize {
    let clients = writers.iter().max().map_or(0, |&m| m + 1);
    let mut contexts = vec![VersionVector::new(); clients];
    let mut most = 0;
    for (value, &client) in (1..).zip(writers) {
        contexts[client] = store.put(&contexts[client], "n1", value);
        most = most.max(store.siblings().len());
    }
    most
}

#[test]
fn two_clients_writing_through_one_node_keep_one_sibling_each() {
    let writers: Vec<usize> = (0..100).map(|i| i % 2).collect();
    let mut key = DvvSet::new();
    assert_eq!(blind_writers(&mut key, &writers), 2);
    // What is left is each client's last write: nothing it wrote before
    // survives, nothing the other wrote since is lost.
    assert_eq!(key.siblings(), [99, 100]);
    assert_eq!(key.context(), VersionVector::from([("n1", 100)]));
}

#[test]
fn naive_vnode_clock_explodes() {
    // The same writes on a per-key vector without dots: one sibling per
    // write. The assertion above (2) fails here.
    let writers: Vec<usize> = (0..100).map(|i| i % 2).collect();
    let mut key = VnodeClock::default();
    assert_eq!(blind_writers(&mut key, &writers), 100);
    assert_eq!(key.siblings(), (1..=100).collect::<Vec<u32>>());
}

#[test]
fn writers_that_never_read_reach_the_cap_and_are_told_how_to_resolve() {
    // Here each write is blind (no context at all): every value is
    // concurrent with every other, so all are kept until the cap.
    let mut key = DvvSet::new();
    let mut warned_at = None;
    for value in 1..=100u32 {
        let written = key.update(&VersionVector::new(), "n1", value).unwrap();
        if written.warn && warned_at.is_none() {
            warned_at = Some(value);
        }
    }
    assert_eq!(warned_at, Some(25));
    let err = key.update(&VersionVector::new(), "n1", 101).unwrap_err();
    assert_eq!(
        err,
        SiblingError::TooManySiblings {
            siblings: 101,
            max: 100
        }
    );
    assert_eq!(key.len(), 100);
    // Read, merge, write back with the context: one value.
    let merged = key.values().sum::<u32>();
    let written = key.update(&key.context(), "n1", merged).unwrap();
    assert_eq!((written.siblings, written.warn), (1, false));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any number of clients, in any interleaving: never more siblings than
    /// clients, and exactly the writes that no later write's context
    /// covered survive. A client's context covers everything up to its
    /// own previous write, so write `q` is superseded by a later write `r`
    /// iff `r`'s client had already written at or after `q` before `r`.
    #[test]
    fn never_more_siblings_than_clients(writers in prop::collection::vec(0..4usize, 1..60)) {
        let mut key = DvvSet::new();
        let clients = writers.iter().collect::<BTreeSet<_>>().len();
        prop_assert!(blind_writers(&mut key, &writers) <= clients);
        let previous_write = |r: usize| writers[..r].iter().rposition(|&w| w == writers[r]);
        let survivors: Vec<u32> = (0..writers.len())
            .filter(|&q| (q + 1..writers.len()).all(|r| previous_write(r).is_none_or(|p| p < q)))
            .map(|q| q as u32 + 1)
            .collect();
        prop_assert_eq!(key.siblings(), survivors);
    }
}
