//! Positive-negative counters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A counter that replicas increment and decrement concurrently without
/// losing an update (a state-based PN-counter: Shapiro et al., 2011).
///
/// Each node keeps its own total of increments and of decrements; the
/// value is the sum of increments less the sum of decrements, and merging
/// takes each node's larger totals. Two concurrent `counter = counter + 1`
/// on a register give 1; on a `PnCounter` they give 2.
///
/// Per-node totals are `u64` and saturate (one node would have to add
/// 2<sup>64</sup> − 1 in one direction); [`value`](Self::value) is an
/// `i128`, exact for any number of nodes that could exist.
///
/// ```
/// use mimeo_causality::PnCounter;
///
/// let mut a = PnCounter::new();
/// let mut b = PnCounter::new();
/// a.increment("n1", 1);   // two replicas count the same event concurrently ...
/// b.increment("n2", 1);
/// b.increment("n2", -3);
/// assert_eq!((a.value(), b.value()), (1, -2));
/// a.merge(&b);            // ... and converge on the sum of everything
/// b.merge(&a);
/// assert_eq!(a, b);
/// assert_eq!(a.value(), -1);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default, Debug, Serialize, Deserialize)]
pub struct PnCounter {
    // Invariant (for equality and canonical encodings): no zero totals.
    #[serde(deserialize_with = "nonzero_totals")]
    increments: BTreeMap<NodeId, u64>,
    #[serde(deserialize_with = "nonzero_totals")]
    decrements: BTreeMap<NodeId, u64>,
}

fn nonzero_totals<'de, D>(deserializer: D) -> Result<BTreeMap<NodeId, u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let mut totals = BTreeMap::<NodeId, u64>::deserialize(deserializer)?;
    totals.retain(|_, total| *total > 0);
    Ok(totals)
}

impl PnCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `delta` (negative to decrement) on behalf of `node`, the
    /// replica making the change.
    pub fn increment(&mut self, node: impl Into<NodeId>, delta: i64) {
        let side = if delta >= 0 {
            &mut self.increments
        } else {
            &mut self.decrements
        };
        if delta != 0 {
            let total = side.entry(node.into()).or_insert(0);
            *total = total.saturating_add(delta.unsigned_abs());
        }
    }

    /// The counter's value: every increment less every decrement.
    pub fn value(&self) -> i128 {
        let sum =
            |side: &BTreeMap<NodeId, u64>| side.values().map(|&n| i128::from(n)).sum::<i128>();
        sum(&self.increments) - sum(&self.decrements)
    }

    /// What `node` added and subtracted in total, as `(increments,
    /// decrements)`.
    pub fn totals(&self, node: &str) -> (u64, u64) {
        let get = |side: &BTreeMap<NodeId, u64>| side.get(node).copied().unwrap_or(0);
        (get(&self.increments), get(&self.decrements))
    }

    /// Merges another replica's counter into this one (each node's larger
    /// totals). Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &PnCounter) {
        fn join(mine: &mut BTreeMap<NodeId, u64>, theirs: &BTreeMap<NodeId, u64>) {
            for (node, &n) in theirs {
                let total = mine.entry(node.clone()).or_insert(0);
                *total = (*total).max(n);
            }
        }
        join(&mut self.increments, &other.increments);
        join(&mut self.decrements, &other.decrements);
    }

    /// The merge of both counters, as a new counter.
    pub fn merged(&self, other: &PnCounter) -> PnCounter {
        let mut merged = self.clone();
        merged.merge(other);
        merged
    }
}
