//! Dots and version vectors.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// One event: the `counter`-th event that `node` coordinated.
///
/// Dots name writes (in a [`DvvSet`](crate::DvvSet)) and adds (in an
/// [`OrSet`](crate::OrSet)); a [`VersionVector`] is a compact set of
/// dots. Counters start at 1.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Dot {
    /// The node that made the event.
    pub node: NodeId,
    /// Its sequence number at that node, from 1.
    pub counter: u64,
}

impl Dot {
    /// A dot from its parts.
    pub fn new(node: impl Into<NodeId>, counter: u64) -> Self {
        Self {
            node: node.into(),
            counter,
        }
    }
}

impl fmt::Display for Dot {
    /// `node:counter`, e.g. `n1:3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.counter)
    }
}

/// How two causal histories relate (the result of
/// [`VersionVector::compare`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Causality {
    /// Both have seen exactly the same events.
    Equal,
    /// The first has seen a strict subset of what the second has: it
    /// happened before.
    Before,
    /// The first has seen a strict superset: it happened after.
    After,
    /// Each has seen something the other has not.
    Concurrent,
}

/// A version vector: for each node, how many of its events have been
/// seen (the dots `node:1..=n`).
///
/// It is the causal context of a read in a [`DvvSet`](crate::DvvSet), the
/// "applied up to" vector of a multi-leader replica, and the clock of an
/// [`OrSet`](crate::OrSet). Version vectors form a join-semilattice under
/// [`join`](VersionVector::join) (pointwise max), and are partially ordered
/// by [`compare`](VersionVector::compare) (also available through
/// [`PartialOrd`], where `a < b` means "a happened before b").
///
/// Zero entries are never stored, so equal histories are equal values and
/// serialize to equal bytes (entries in node order).
///
/// ```
/// use mimeo_causality::{Causality, Dot, VersionVector};
///
/// let mut a = VersionVector::new();
/// let mut b = VersionVector::new();
/// a.increment("n1");
/// b.join(&a);              // b has seen a's event ...
/// b.increment("n2");       // ... and made one of its own
/// assert_eq!(a.compare(&b), Causality::Before);
/// assert!(b.descends(&a) && !a.descends(&b));
/// a.increment("n1");       // a moves on without seeing b's event
/// assert_eq!(a.compare(&b), Causality::Concurrent);
/// assert!(a.contains(&Dot::new("n1", 2)) && !b.contains(&Dot::new("n1", 2)));
/// a.join(&b);
/// assert_eq!(a.to_string(), "{n1:2, n2:1}");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector {
    // Invariant: no zero counters.
    #[serde(deserialize_with = "deserialize_nonzero")]
    counters: BTreeMap<NodeId, u64>,
}

fn deserialize_nonzero<'de, D>(deserializer: D) -> Result<BTreeMap<NodeId, u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let mut counters = BTreeMap::<NodeId, u64>::deserialize(deserializer)?;
    counters.retain(|_, counter| *counter > 0);
    Ok(counters)
}

impl VersionVector {
    /// The empty vector: has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many of `node`'s events this vector has seen (0 if none).
    pub fn get(&self, node: &str) -> u64 {
        self.counters.get(node).copied().unwrap_or(0)
    }

    /// Whether the event `dot` is in this history.
    pub fn contains(&self, dot: &Dot) -> bool {
        dot.counter <= self.get(dot.node.as_str())
    }

    /// Records a new event at `node` and returns its dot.
    pub fn increment(&mut self, node: impl Into<NodeId>) -> Dot {
        let node = node.into();
        let counter = self.counters.entry(node.clone()).or_insert(0);
        *counter += 1;
        Dot {
            node,
            counter: *counter,
        }
    }

    /// Raises `node`'s entry to at least `counter` (the history of `node`
    /// up to `counter` has been seen).
    pub fn raise(&mut self, node: impl Into<NodeId>, counter: u64) {
        if counter == 0 {
            return;
        }
        let entry = self.counters.entry(node.into()).or_insert(0);
        *entry = (*entry).max(counter);
    }

    /// Adds `dot` and every earlier event of its node.
    pub fn insert(&mut self, dot: &Dot) {
        if dot.counter > self.get(dot.node.as_str()) {
            self.raise(dot.node.clone(), dot.counter);
        }
    }

    /// The union of both histories (pointwise maximum), in place.
    /// Commutative, associative and idempotent.
    pub fn join(&mut self, other: &VersionVector) {
        for (node, &counter) in &other.counters {
            match self.counters.get_mut(node) {
                Some(mine) => *mine = (*mine).max(counter),
                None => {
                    self.counters.insert(node.clone(), counter);
                }
            }
        }
    }

    /// The union of both histories, as a new vector.
    pub fn joined(&self, other: &VersionVector) -> VersionVector {
        let mut joined = self.clone();
        joined.join(other);
        joined
    }

    /// The events both histories have seen (pointwise minimum). The meet
    /// of every replica's vector is what is causally stable: e.g. a
    /// tombstone whose dot it contains can be collected.
    pub fn meet(&self, other: &VersionVector) -> VersionVector {
        let counters = self
            .counters
            .iter()
            .filter_map(|(node, &counter)| {
                let min = counter.min(other.get(node.as_str()));
                (min > 0).then(|| (node.clone(), min))
            })
            .collect();
        VersionVector { counters }
    }

    /// Whether this history includes all of `other` (`self >= other`).
    pub fn descends(&self, other: &VersionVector) -> bool {
        other
            .counters
            .iter()
            .all(|(node, &counter)| counter <= self.get(node.as_str()))
    }

    /// Whether this history strictly includes `other` (`self > other`).
    pub fn dominates(&self, other: &VersionVector) -> bool {
        self.descends(other) && self != other
    }

    /// Whether neither history includes the other.
    pub fn concurrent(&self, other: &VersionVector) -> bool {
        self.compare(other) == Causality::Concurrent
    }

    /// How this history relates to `other`.
    pub fn compare(&self, other: &VersionVector) -> Causality {
        match (self.descends(other), other.descends(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        }
    }

    /// The entries, in node order, as `(node, counter)`; never a zero.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, u64)> + '_ {
        self.counters.iter().map(|(node, &counter)| (node, counter))
    }

    /// How many nodes have an entry.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// Whether this is the empty history.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// A vector from counters already in a map; zeros are dropped.
    pub(crate) fn from_counters(mut counters: BTreeMap<NodeId, u64>) -> Self {
        counters.retain(|_, counter| *counter > 0);
        VersionVector { counters }
    }

    /// A lookup for nodes asked in increasing order (as a walk over
    /// another map keyed by node yields them): their counters here, found
    /// in one pass over this vector instead of a search each.
    pub(crate) fn lookup_in_order(&self) -> impl FnMut(&NodeId) -> u64 + '_ {
        let mut entries = self.counters.iter().peekable();
        move |node| {
            while entries.next_if(|(n, _)| *n < node).is_some() {}
            entries
                .next_if(|(n, _)| *n == node)
                .map_or(0, |(_, &counter)| counter)
        }
    }

    /// The total number of events in the history (the sum of counters),
    /// saturating.
    pub fn events(&self) -> u64 {
        self.counters
            .values()
            .fold(0u64, |sum, &counter| sum.saturating_add(counter))
    }
}

impl PartialOrd for VersionVector {
    /// The causal order: `Some(Less)` when `self` happened before `other`,
    /// `None` when they are concurrent.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.compare(other) {
            Causality::Equal => Some(Ordering::Equal),
            Causality::Before => Some(Ordering::Less),
            Causality::After => Some(Ordering::Greater),
            Causality::Concurrent => None,
        }
    }
}

impl<N: Into<NodeId>> FromIterator<(N, u64)> for VersionVector {
    /// Builds a vector from `(node, counter)` pairs; a node given twice
    /// keeps the larger counter, and zeros are dropped.
    fn from_iter<I: IntoIterator<Item = (N, u64)>>(iter: I) -> Self {
        let mut vector = VersionVector::new();
        for (node, counter) in iter {
            vector.raise(node, counter);
        }
        vector
    }
}

impl<N: Into<NodeId>, const K: usize> From<[(N, u64); K]> for VersionVector {
    fn from(entries: [(N, u64); K]) -> Self {
        entries.into_iter().collect()
    }
}

impl fmt::Display for VersionVector {
    /// `{n1:2, n2:1}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (node, counter)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{node}:{counter}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_not_stored() {
        let v: VersionVector = [("a", 0), ("b", 2)].into();
        assert_eq!(v.len(), 1);
        assert_eq!(v, VersionVector::from([("b", 2)]));
        let decoded: VersionVector = serde_json::from_str(r#"{"a":0,"b":2}"#).unwrap();
        assert_eq!(decoded, v);
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"b":2}"#);
    }

    #[test]
    fn meet_is_the_common_history() {
        let a: VersionVector = [("a", 3), ("b", 1)].into();
        let b: VersionVector = [("a", 2), ("c", 5)].into();
        assert_eq!(a.meet(&b), VersionVector::from([("a", 2)]));
    }

    #[test]
    fn partial_cmp_matches_compare() {
        let a: VersionVector = [("a", 1)].into();
        let b: VersionVector = [("a", 1), ("b", 1)].into();
        let c: VersionVector = [("c", 1)].into();
        assert!(a < b);
        assert!(b > a);
        assert_eq!(a.partial_cmp(&a.clone()), Some(Ordering::Equal));
        assert_eq!(a.partial_cmp(&c), None);
        assert_eq!(b.events(), 2);
    }
}
