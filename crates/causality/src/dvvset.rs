//! Dotted version vector sets: a key's concurrent values (siblings) and
//! their causal history (Almeida, Baquero et al., "Scalable and Accurate
//! Causality Tracking for Eventually Consistent Stores", 2014; the
//! behaviour of Riak's `dvvset`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Dot, NodeId, VersionVector};

/// The sibling cap of a [`DvvSet`]: a write that leaves `warn_at` or more
/// siblings is flagged ([`Written::warn`]); a write that would leave more
/// than `max` is refused ([`SiblingError::TooManySiblings`]).
///
/// The defaults are Riak's: warn at 25, refuse beyond 100.
///
/// The cap applies to writes only: [`DvvSet::merge`] never drops a value,
/// so replicas converge even if one of them holds more than `max`
/// siblings (at most the sum of what each accepted).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "RawLimits", into = "RawLimits")]
pub struct SiblingLimits {
    warn_at: usize,
    max: usize,
}

#[derive(Serialize, Deserialize)]
struct RawLimits {
    warn_at: usize,
    max: usize,
}

impl TryFrom<RawLimits> for SiblingLimits {
    type Error = LimitsError;

    fn try_from(raw: RawLimits) -> Result<Self, LimitsError> {
        SiblingLimits::new(raw.warn_at, raw.max)
    }
}

impl From<SiblingLimits> for RawLimits {
    fn from(limits: SiblingLimits) -> Self {
        RawLimits {
            warn_at: limits.warn_at,
            max: limits.max,
        }
    }
}

impl Default for SiblingLimits {
    fn default() -> Self {
        Self {
            warn_at: 25,
            max: 100,
        }
    }
}

impl SiblingLimits {
    /// Limits that warn at `warn_at` siblings and refuse a write that
    /// would leave more than `max`.
    ///
    /// # Errors
    ///
    /// [`LimitsError`] unless `1 <= max` and `warn_at <= max`.
    pub fn new(warn_at: usize, max: usize) -> Result<Self, LimitsError> {
        if max == 0 || warn_at > max {
            return Err(LimitsError { warn_at, max });
        }
        Ok(Self { warn_at, max })
    }

    /// How many siblings make a write warn.
    pub fn warn_at(&self) -> usize {
        self.warn_at
    }

    /// The most siblings a write may leave.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// Sibling limits that make no sense (see [`SiblingLimits::new`]).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, thiserror::Error)]
#[error("invalid sibling limits: warn_at is {warn_at} and max is {max}; max must be at least 1 and warn_at at most max (the defaults are 25 and 100)")]
#[non_exhaustive]
pub struct LimitsError {
    /// The warning threshold given.
    pub warn_at: usize,
    /// The cap given.
    pub max: usize,
}

/// A write a [`DvvSet`] refused.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum SiblingError {
    /// The write would leave more siblings than the cap allows. Nothing
    /// was changed.
    #[error("write refused: it would leave {siblings} siblings, more than the cap of {max}; read the key, merge its siblings into one value, and write that value back with the context the read returned (it supersedes every sibling the read saw)")]
    TooManySiblings {
        /// How many siblings the write would have left.
        siblings: usize,
        /// The cap ([`SiblingLimits::max`]).
        max: usize,
    },
}

/// What a successful [`DvvSet::update`] did.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Written {
    /// The dot that names the new value.
    pub dot: Dot,
    /// The context after the write ([`DvvSet::context`]), to return to the
    /// writer: a later write with it supersedes this value and every
    /// sibling that survived this write.
    pub context: VersionVector,
    /// How many siblings the key has now, the new value included.
    pub siblings: usize,
    /// Whether `siblings` reached [`SiblingLimits::warn_at`]: the key's
    /// writers are not reading before they write (or not writing back
    /// the context), and should be told.
    pub warn: bool,
}

/// The values one node coordinated for a key: `values` holds the dots
/// `node:(counter - len + 1)..=counter`, oldest first; the history covers
/// `node:1..=counter`.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "RawEntry<V>")]
#[serde(bound(deserialize = "V: Deserialize<'de>"))]
struct Entry<V> {
    counter: u64,
    values: Vec<V>,
}

#[derive(Deserialize)]
struct RawEntry<V> {
    counter: u64,
    values: Vec<V>,
}

impl<V> TryFrom<RawEntry<V>> for Entry<V> {
    type Error = String;

    fn try_from(raw: RawEntry<V>) -> Result<Self, String> {
        if raw.counter == 0 || (raw.values.len() as u64) > raw.counter {
            return Err(format!(
                "invalid DVV set entry: counter {} with {} values (a counter is at least 1 and at least the number of values)",
                raw.counter,
                raw.values.len()
            ));
        }
        Ok(Entry {
            counter: raw.counter,
            values: raw.values,
        })
    }
}

impl<V> Entry<V> {
    /// The largest counter whose value is not held (every value's dot is
    /// above it).
    fn floor(&self) -> u64 {
        self.counter - self.values.len() as u64
    }

    /// How many values have a dot above `seen` (not covered by a context
    /// that saw `node:1..=seen`).
    fn above(&self, seen: u64) -> usize {
        let floor = self.floor().max(seen);
        // `counter - floor` values at most, as floor >= counter - len.
        usize::try_from(self.counter.saturating_sub(floor)).unwrap_or(usize::MAX)
    }

    /// Drops the values with a dot at or below `seen`.
    fn discard(&mut self, seen: u64) {
        let keep = self.above(seen);
        let drop = self.values.len() - keep;
        self.values.drain(..drop);
    }
}

/// A dotted version vector set: the concurrent values (siblings) of one key
/// and the causal history that produced them.
///
/// Each value carries a [`Dot`] naming the write that made it, and the set
/// keeps, per node, a counter of the writes it has seen. That is what lets
/// a write supersede **exactly** the values its writer saw and nothing
/// else:
///
/// - a client reads the key: the values and the [`context`](Self::context);
/// - it writes a value with that context through a coordinating node
///   ([`update`](Self::update)): every value the context covers is
///   replaced, and values it does not cover (written concurrently, since
///   the read) stay as siblings;
/// - replicas exchange states and [`merge`](Self::merge) them: a value is
///   kept unless the other side has seen its dot and dropped it.
///
/// The node passed to `update` is the **coordinating replica** (it must
/// store the result), not the client: dots stay unique, and the number of
/// nodes in the history is bounded by the replicas, not the clients.
/// Unlike a per-key version vector without dots, two clients writing
/// through the same node with the contexts of their own previous writes
/// never make more than one sibling each (Riak's "sibling explosion").
///
/// Values are listed by coordinating node, then oldest first; `V` is
/// whatever the caller stores, e.g. `Option<Bytes>` for a value or a
/// tombstone.
///
/// ```
/// use mimeo_causality::{DvvSet, VersionVector};
///
/// let mut key = DvvSet::new();
/// // Two clients write blind (empty context) through n1: concurrent, so both stay.
/// key.update(&VersionVector::new(), "n1", "red")?;
/// key.update(&VersionVector::new(), "n1", "green")?;
/// assert_eq!(key.values().collect::<Vec<_>>(), [&"red", &"green"]);
///
/// // A client reads both and writes back their merge with the read's context.
/// let read = key.context();
/// let written = key.update(&read, "n2", "red+green")?;
/// assert_eq!(key.values().collect::<Vec<_>>(), [&"red+green"]);
/// assert_eq!(written.siblings, 1);
/// # Ok::<(), mimeo_causality::SiblingError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
#[serde(bound(serialize = "V: Serialize", deserialize = "V: Deserialize<'de>"))]
pub struct DvvSet<V> {
    entries: BTreeMap<NodeId, Entry<V>>,
}

impl<V> Default for DvvSet<V> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }
}

impl<V> DvvSet<V> {
    /// An empty set: no value, no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many siblings there are.
    pub fn len(&self) -> usize {
        self.entries.values().map(|entry| entry.values.len()).sum()
    }

    /// Whether there is no value (there may still be history).
    pub fn is_empty(&self) -> bool {
        self.entries.values().all(|entry| entry.values.is_empty())
    }

    /// The siblings, by coordinating node, then oldest first.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.entries.values().flat_map(|entry| entry.values.iter())
    }

    /// The siblings with their dots, in the order of
    /// [`values`](Self::values).
    pub fn iter(&self) -> impl Iterator<Item = (Dot, &V)> + '_ {
        self.entries.iter().flat_map(|(node, entry)| {
            let floor = entry.floor();
            entry
                .values
                .iter()
                .zip(floor + 1..)
                .map(move |(value, counter)| (Dot::new(node.clone(), counter), value))
        })
    }

    /// The causal context of a read (Riak's `join`): every write this set has seen,
    /// including those its siblings replaced. A write made with it
    /// supersedes every current sibling.
    #[doc(alias = "join")]
    pub fn context(&self) -> VersionVector {
        VersionVector::from_counters(
            self.entries
                .iter()
                .map(|(node, entry)| (node.clone(), entry.counter))
                .collect(),
        )
    }

    /// Writes `value` through the coordinating node `node`, as a write that
    /// follows a read whose [`context`](Self::context) was `context`,
    /// under the default [`SiblingLimits`] (warn at 25, refuse beyond
    /// 100). See [`update_with`](Self::update_with).
    ///
    /// # Errors
    ///
    /// [`SiblingError::TooManySiblings`] if the write would leave more
    /// than 100 siblings; nothing is changed.
    pub fn update(
        &mut self,
        context: &VersionVector,
        node: impl Into<NodeId>,
        value: V,
    ) -> Result<Written, SiblingError> {
        self.update_with(&SiblingLimits::default(), context, node, value)
    }

    /// Writes `value` through the coordinating node `node`, as a write that
    /// follows a read whose [`context`](Self::context) was `context`:
    /// removes every sibling whose dot the context contains, adds `value`
    /// with a new dot `node:n+1` (`n` the larger of this set's and the
    /// context's counter for `node`), and adds the context to the history.
    /// An empty context is a blind write: it replaces nothing.
    ///
    /// # Errors
    ///
    /// [`SiblingError::TooManySiblings`] if the write would leave more
    /// than `limits.max()` siblings; nothing is changed. The writer should
    /// read the key, merge the siblings, and write the result back with
    /// the read's context.
    pub fn update_with(
        &mut self,
        limits: &SiblingLimits,
        context: &VersionVector,
        node: impl Into<NodeId>,
        value: V,
    ) -> Result<Written, SiblingError> {
        let surviving: usize = self
            .entries
            .iter()
            .map({
                let mut seen = context.lookup_in_order();
                move |(node, entry)| entry.above(seen(node))
            })
            .sum();
        let siblings = surviving + 1;
        if siblings > limits.max {
            return Err(SiblingError::TooManySiblings {
                siblings,
                max: limits.max,
            });
        }
        let mut lookup = context.lookup_in_order();
        for (node, entry) in &mut self.entries {
            let seen = lookup(node);
            entry.discard(seen);
            entry.counter = entry.counter.max(seen);
        }
        self.add_history(context);
        let node = node.into();
        let entry = self.entries.entry(node.clone()).or_insert_with(|| Entry {
            counter: 0,
            values: Vec::new(),
        });
        entry.counter += 1;
        entry.values.push(value);
        let dot = Dot::new(node, entry.counter);
        Ok(Written {
            dot,
            context: self.context(),
            siblings,
            warn: siblings >= limits.warn_at,
        })
    }

    /// Removes the siblings that `context` covers, without writing a new
    /// value, and adds `context` to the history (Riak's `discard`): e.g.
    /// after handing those siblings to the application to resolve.
    pub fn discard(&mut self, context: &VersionVector) {
        let mut lookup = context.lookup_in_order();
        for (node, entry) in &mut self.entries {
            let seen = lookup(node);
            entry.discard(seen);
            entry.counter = entry.counter.max(seen);
        }
        self.add_history(context);
    }

    /// Adds an entry (history only) for each node of `context` this set
    /// has none for.
    fn add_history(&mut self, context: &VersionVector) {
        // Both are sorted by node: find the missing ones in one pass.
        let mut held = self.entries.keys().peekable();
        let missing: Vec<(NodeId, u64)> = context
            .iter()
            .filter(|&(node, _)| {
                while held.next_if(|held| *held < node).is_some() {}
                held.next_if(|held| *held == node).is_none()
            })
            .map(|(node, counter)| (node.clone(), counter))
            .collect();
        for (node, counter) in missing {
            let values = Vec::new();
            self.entries.insert(node, Entry { counter, values });
        }
    }

    /// Whether the write `dot` is in this set's history (as a sibling, or
    /// superseded).
    pub fn contains(&self, dot: &Dot) -> bool {
        self.entries
            .get(dot.node.as_str())
            .is_some_and(|entry| dot.counter <= entry.counter)
    }
}

impl<V: Clone> DvvSet<V> {
    /// Merges another replica's state for the same key into this one
    /// (Riak's `sync`): a sibling survives unless the other side has seen
    /// its dot and no longer holds it; the histories are joined.
    /// Commutative, associative and idempotent, so replicas that have
    /// exchanged states hold the same set.
    ///
    /// Both sides must come from the same key's writes: a dot names one
    /// value everywhere.
    #[doc(alias = "sync")]
    pub fn merge(&mut self, other: &DvvSet<V>) {
        for (node, theirs) in &other.entries {
            match self.entries.get_mut(node.as_str()) {
                None => {
                    self.entries.insert(node.clone(), theirs.clone());
                }
                Some(mine) => {
                    let floor = mine.floor().max(theirs.floor());
                    if theirs.counter > mine.counter {
                        let keep = usize::try_from(theirs.counter - floor).unwrap_or(usize::MAX);
                        let start = theirs.values.len() - keep;
                        mine.values = theirs.values[start..].to_vec();
                        mine.counter = theirs.counter;
                    } else {
                        // Same counter or ours is ahead: our values above
                        // the larger floor are exactly the survivors.
                        mine.discard(floor);
                    }
                }
            }
        }
    }

    /// The merge of both states, as a new set.
    pub fn merged(&self, other: &DvvSet<V>) -> DvvSet<V> {
        let mut merged = self.clone();
        merged.merge(other);
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv<const K: usize>(entries: [(&str, u64); K]) -> VersionVector {
        entries.into()
    }

    fn values(set: &DvvSet<&'static str>) -> Vec<&'static str> {
        set.values().copied().collect()
    }

    #[test]
    fn a_write_with_a_read_context_supersedes_what_the_read_saw() {
        let mut key = DvvSet::new();
        key.update(&vv([]), "a", "v1").unwrap();
        let read = key.context();
        // Someone else writes after the read.
        key.update(&vv([]), "b", "v2").unwrap();
        let written = key.update(&read, "a", "v3").unwrap();
        assert_eq!(values(&key), ["v3", "v2"]);
        assert_eq!(written.dot, Dot::new("a", 2));
        assert_eq!(written.context, vv([("a", 2), ("b", 1)]));
        assert_eq!(written.siblings, 2);
        assert!(!written.warn);
    }

    fn dotted(set: &DvvSet<&'static str>) -> Vec<(String, &'static str)> {
        set.iter().map(|(dot, &v)| (dot.to_string(), v)).collect()
    }

    /// The cases of Riak's `dvvset` eunit tests (`update_test`,
    /// `sync_update_test`, `sync_test`), restated in this API: the same
    /// writes and syncs must leave the same values, dots and history.
    #[test]
    fn riak_dvvset_reference_cases() {
        // update_test
        let mut a0 = DvvSet::new();
        a0.update(&vv([]), "a", "v1").unwrap();
        let mut a1 = a0.clone();
        a1.update(&a0.context(), "a", "v2").unwrap();
        assert_eq!(dotted(&a1), [("a:2".into(), "v2")]);
        let mut a2 = a1.clone();
        a2.update(&a1.context(), "b", "v3").unwrap();
        assert_eq!(dotted(&a2), [("b:1".into(), "v3")]);
        assert_eq!(a2.context(), vv([("a", 2), ("b", 1)]));
        let mut a3 = a1.clone();
        a3.update(&a0.context(), "b", "v4").unwrap();
        assert_eq!(dotted(&a3), [("a:2".into(), "v2"), ("b:1".into(), "v4")]);
        let mut a4 = a1.clone();
        a4.update(&a0.context(), "a", "v5").unwrap();
        assert_eq!(dotted(&a4), [("a:2".into(), "v2"), ("a:3".into(), "v5")]);

        // sync_update_test: Mary writes v1 and v2 blind, Peter writes v3
        // having read v1: v1 goes, v2 stays.
        let mut key = DvvSet::new();
        key.update(&vv([]), "a", "v1").unwrap();
        let peter = key.context();
        assert_eq!(peter, vv([("a", 1)]));
        key.update(&vv([]), "a", "v2").unwrap();
        assert_eq!(dotted(&key), [("a:1".into(), "v1"), ("a:2".into(), "v2")]);
        key.update(&peter, "a", "v3").unwrap();
        assert_eq!(dotted(&key), [("a:2".into(), "v2"), ("a:3".into(), "v3")]);

        // sync_test
        let mut w: DvvSet<&str> = DvvSet::new();
        w.discard(&vv([("a", 1)]));
        let mut z = DvvSet::new();
        z.update(&vv([]), "a", "v1").unwrap();
        z.update(&vv([]), "a", "v2").unwrap();
        assert_eq!(dotted(&w.merged(&z)), [("a:2".into(), "v2")]);
        assert_eq!(w.merged(&z), z.merged(&w));
        let mut a3 = DvvSet::new();
        a3.update(&vv([("a", 2)]), "b", "v3").unwrap();
        let mut a4 = DvvSet::new();
        a4.update(&vv([("a", 2)]), "c", "v3").unwrap();
        let synced = a4.merged(&a3);
        assert_eq!(synced, a3.merged(&a4));
        assert_eq!(
            dotted(&synced),
            [("b:1".into(), "v3"), ("c:1".into(), "v3")]
        );
        assert_eq!(synced.context(), vv([("a", 2), ("b", 1), ("c", 1)]));
        let mut x: DvvSet<&str> = DvvSet::new();
        x.discard(&vv([("x", 1)]));
        let synced = x.merged(&a0);
        assert_eq!(synced, a0.merged(&x));
        assert_eq!(dotted(&synced), [("a:1".into(), "v1")]);
        assert_eq!(synced.context(), vv([("a", 1), ("x", 1)]));
    }

    #[test]
    fn replicas_diverge_and_converge() {
        let mut a = DvvSet::new();
        a.update(&vv([]), "a", "v1").unwrap();
        let mut b = a.clone();
        let read = a.context();
        a.update(&read, "a", "va").unwrap();
        b.update(&read, "b", "vb").unwrap();
        let ab = a.merged(&b);
        let ba = b.merged(&a);
        assert_eq!(ab, ba);
        assert_eq!(values(&ab), ["va", "vb"]);
        assert_eq!(ab.context(), vv([("a", 2), ("b", 1)]));
        // Merging an older state changes nothing.
        let mut again = ab.clone();
        let mut old = DvvSet::new();
        old.update(&vv([]), "a", "v1").unwrap();
        again.merge(&old);
        assert_eq!(again, ab);
    }

    #[test]
    fn a_context_ahead_of_the_node_raises_its_counter() {
        // The coordinator has not seen b's write yet, but the client has.
        let mut key: DvvSet<&str> = DvvSet::new();
        let written = key.update(&vv([("b", 3)]), "a", "v").unwrap();
        assert_eq!(written.context, vv([("a", 1), ("b", 3)]));
        // b's values 1..=3 arriving later are superseded.
        let mut from_b = DvvSet::new();
        for v in ["b1", "b2", "b3"] {
            from_b.update(&vv([]), "b", v).unwrap();
        }
        key.merge(&from_b);
        assert_eq!(values(&key), ["v"]);
        // And a coordinator that is behind the context for its own id
        // still mints a fresh dot.
        let mut key: DvvSet<&str> = DvvSet::new();
        let written = key.update(&vv([("a", 5)]), "a", "v").unwrap();
        assert_eq!(written.dot, Dot::new("a", 6));
    }

    #[test]
    fn the_cap_warns_then_refuses_and_a_merged_write_back_resolves() {
        let limits = SiblingLimits::new(3, 4).unwrap();
        let mut key = DvvSet::new();
        let warns: Vec<bool> = (0..4)
            .map(|i| key.update_with(&limits, &vv([]), "a", i).unwrap().warn)
            .collect();
        assert_eq!(warns, [false, false, true, true]);
        let before = key.clone();
        let err = key.update_with(&limits, &vv([]), "a", 99).unwrap_err();
        assert_eq!(
            err,
            SiblingError::TooManySiblings {
                siblings: 5,
                max: 4
            }
        );
        assert_eq!(key, before, "a refused write changes nothing");
        let message = err.to_string();
        assert!(
            message.contains("read the key, merge its siblings"),
            "{message}"
        );
        assert!(
            message.contains("with the context the read returned"),
            "{message}"
        );
        // What the message says works.
        let merged: i32 = key.values().sum();
        let written = key
            .update_with(&limits, &key.context(), "a", merged)
            .unwrap();
        assert_eq!(written.siblings, 1);
        assert_eq!(key.values().collect::<Vec<_>>(), [&6]);
    }

    #[test]
    fn limits_are_validated() {
        assert!(SiblingLimits::new(0, 1).is_ok());
        assert!(SiblingLimits::new(5, 4).is_err());
        let err = SiblingLimits::new(1, 0).unwrap_err();
        assert!(err.to_string().contains("max must be at least 1"));
        assert_eq!(SiblingLimits::default().warn_at(), 25);
        assert_eq!(SiblingLimits::default().max(), 100);
        let bad: Result<SiblingLimits, _> = serde_json::from_str(r#"{"warn_at":9,"max":2}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn discard_removes_what_the_context_covers() {
        let mut key = DvvSet::new();
        key.update(&vv([]), "a", "v1").unwrap();
        key.update(&vv([]), "a", "v2").unwrap();
        key.discard(&vv([("a", 1), ("c", 2)]));
        assert_eq!(values(&key), ["v2"]);
        assert_eq!(key.context(), vv([("a", 2), ("c", 2)]));
        assert!(key.contains(&Dot::new("a", 1)) && !key.contains(&Dot::new("b", 1)));
        let dots: Vec<Dot> = key.iter().map(|(dot, _)| dot).collect();
        assert_eq!(dots, [Dot::new("a", 2)]);
    }

    #[test]
    fn invalid_encodings_are_refused() {
        let bad = r#"{"a":{"counter":1,"values":["x","y"]}}"#;
        let err = serde_json::from_str::<DvvSet<String>>(bad).unwrap_err();
        assert!(err.to_string().contains("counter 1 with 2 values"), "{err}");
        let good = r#"{"a":{"counter":3,"values":["x","y"]}}"#;
        let set: DvvSet<String> = serde_json::from_str(good).unwrap();
        let dots: Vec<Dot> = set.iter().map(|(dot, _)| dot).collect();
        assert_eq!(dots, [Dot::new("a", 2), Dot::new("a", 3)]);
    }
}
