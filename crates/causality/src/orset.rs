//! Add-wins observed-remove sets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Dot, NodeId, VersionVector};

/// An add-wins observed-remove set (an OR-set without tombstones, the
/// "optimized OR-set" of Bieniusa et al., 2012; rust-crdt's `Orswot`).
///
/// Every add is an event with a [`Dot`]; an element is in the set while
/// some add of it survives. A remove deletes only the adds its replica
/// has **observed**, so an add concurrent with a remove wins: the element
/// stays. The set's clock (a [`VersionVector`]) records every add it has
/// seen, which is how a merge tells "removed here" from "not seen here
/// yet" without keeping tombstones.
///
/// Each node id must be used by one replica only (see
/// [`NodeId`](crate::NodeId)): a replica's adds are numbered by its own
/// clock entry.
///
/// ```
/// use mimeo_causality::OrSet;
///
/// let mut a = OrSet::new();
/// a.add("n1", "milk");
/// let mut b = a.clone();        // b has observed a's add of milk
/// b.remove(&"milk");            // b removes it ...
/// a.add("n1", "milk");          // ... while a adds it again, concurrently
/// a.add("n1", "eggs");
/// a.merge(&b);
/// b.merge(&a);
/// assert_eq!(a, b);
/// // The concurrent add wins; the add b observed is gone.
/// assert_eq!(a.iter().collect::<Vec<_>>(), [&"eggs", &"milk"]);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "RawOrSet<T>")]
#[serde(bound(
    serialize = "T: Serialize + Ord",
    deserialize = "T: Deserialize<'de> + Ord"
))]
pub struct OrSet<T: Ord> {
    clock: VersionVector,
    // The surviving adds of each element: at most one per node, since a
    // node's add replaces the adds of the element it had observed (all of
    // its own earlier ones among them). Never an empty map.
    entries: BTreeMap<T, BTreeMap<NodeId, u64>>,
}

/// The encoding of an [`OrSet`], checked before it is trusted: every
/// element has an add, and every add is in the clock.
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de> + Ord"))]
struct RawOrSet<T: Ord> {
    clock: VersionVector,
    entries: BTreeMap<T, BTreeMap<NodeId, u64>>,
}

impl<T: Ord> TryFrom<RawOrSet<T>> for OrSet<T> {
    type Error = String;

    fn try_from(raw: RawOrSet<T>) -> Result<Self, String> {
        for (index, dots) in raw.entries.values().enumerate() {
            if dots.is_empty() {
                return Err(format!(
                    "invalid OR-set: element #{index} (in order) has no add"
                ));
            }
            for (node, &counter) in dots {
                if counter == 0 || counter > raw.clock.get(node.as_str()) {
                    return Err(format!(
                        "invalid OR-set: element #{index} (in order) has the add {node}:{counter}, which the set's clock {} does not contain",
                        raw.clock
                    ));
                }
            }
        }
        Ok(OrSet {
            clock: raw.clock,
            entries: raw.entries,
        })
    }
}

impl<T: Ord> Default for OrSet<T> {
    fn default() -> Self {
        Self {
            clock: VersionVector::new(),
            entries: BTreeMap::new(),
        }
    }
}

impl<T: Ord> OrSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `element` on behalf of `node`, the replica making the change,
    /// and returns the add's dot. The new add replaces the element's adds
    /// that this replica had observed.
    pub fn add(&mut self, node: impl Into<NodeId>, element: T) -> Dot {
        let dot = self.clock.increment(node);
        self.entries
            .insert(element, BTreeMap::from([(dot.node.clone(), dot.counter)]));
        dot
    }

    /// Removes `element`: deletes the adds of it this replica has observed
    /// and returns their dots (empty if it was absent). An add of it that
    /// this replica has not seen yet survives a later merge.
    pub fn remove(&mut self, element: &T) -> Vec<Dot> {
        self.entries
            .remove(element)
            .map(|dots| {
                dots.into_iter()
                    .map(|(node, counter)| Dot { node, counter })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `element` is in the set.
    pub fn contains(&self, element: &T) -> bool {
        self.entries.contains_key(element)
    }

    /// The elements, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.entries.keys()
    }

    /// The surviving adds of `element` (empty if absent).
    pub fn dots(&self, element: &T) -> Vec<Dot> {
        self.entries
            .get(element)
            .into_iter()
            .flatten()
            .map(|(node, &counter)| Dot::new(node.clone(), counter))
            .collect()
    }

    /// How many elements the set holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set holds no element.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every add this replica has seen, removed or not.
    pub fn clock(&self) -> &VersionVector {
        &self.clock
    }
}

impl<T: Ord + Clone> OrSet<T> {
    /// Merges another replica's set into this one: an add survives if both
    /// sides hold it, or one side holds it and the other has not seen it
    /// (had it seen it and dropped it, it was removed there). Commutative,
    /// associative and idempotent.
    pub fn merge(&mut self, other: &OrSet<T>) {
        // One pass over both (sorted) maps; the result is sorted too, so
        // collecting it bulk-builds the new map.
        let mine = std::mem::take(&mut self.entries);
        let mut merged = Vec::with_capacity(mine.len().max(other.entries.len()));
        let mut theirs = other.entries.iter().peekable();
        for (element, dots) in mine {
            while let Some((only_theirs, their_dots)) = theirs.next_if(|(e, _)| **e < element) {
                let unseen = unseen_by(&self.clock, their_dots);
                if !unseen.is_empty() {
                    merged.push((only_theirs.clone(), unseen));
                }
            }
            let same = theirs
                .next_if(|(e, _)| **e == element)
                .map(|(_, dots)| dots);
            let dots = merge_dots(dots, &other.clock, same, &self.clock);
            if !dots.is_empty() {
                merged.push((element, dots));
            }
        }
        for (only_theirs, their_dots) in theirs {
            let unseen = unseen_by(&self.clock, their_dots);
            if !unseen.is_empty() {
                merged.push((only_theirs.clone(), unseen));
            }
        }
        self.entries = merged.into_iter().collect();
        self.clock.join(&other.clock);
    }

    /// The merge of both sets, as a new set.
    pub fn merged(&self, other: &OrSet<T>) -> OrSet<T> {
        let mut merged = self.clone();
        merged.merge(other);
        merged
    }
}

/// The adds in `dots` that `clock` has not seen.
fn unseen_by(clock: &VersionVector, dots: &BTreeMap<NodeId, u64>) -> BTreeMap<NodeId, u64> {
    dots.iter()
        .filter(|&(node, &counter)| counter > clock.get(node.as_str()))
        .map(|(node, &counter)| (node.clone(), counter))
        .collect()
}

/// One element's surviving adds: those both sides hold, and those one side
/// holds that the other has not seen (seen and not held means removed).
fn merge_dots(
    mut mine: BTreeMap<NodeId, u64>,
    their_clock: &VersionVector,
    theirs: Option<&BTreeMap<NodeId, u64>>,
    my_clock: &VersionVector,
) -> BTreeMap<NodeId, u64> {
    mine.retain(|node, counter| {
        let held = theirs.and_then(|dots| dots.get(node)) == Some(counter);
        held || *counter > their_clock.get(node.as_str())
    });
    for (node, &counter) in theirs.into_iter().flatten() {
        if counter > my_clock.get(node.as_str()) {
            let kept = mine.entry(node.clone()).or_insert(counter);
            *kept = (*kept).max(counter);
        }
    }
    mine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remove_deletes_only_observed_adds() {
        let mut a = OrSet::new();
        let first = a.add("a", 1);
        let mut b = a.clone();
        assert_eq!(b.remove(&1), [first]);
        assert!(b.remove(&1).is_empty());
        let second = a.add("a", 1);
        b.merge(&a);
        assert!(b.contains(&1));
        assert_eq!(b.dots(&1), [second]);
        // Removed everywhere once the remove has seen every add.
        b.remove(&1);
        a.merge(&b);
        assert!(!a.contains(&1) && a.is_empty());
        assert_eq!(a.clock(), &VersionVector::from([("a", 2)]));
    }

    #[test]
    fn invalid_encodings_are_refused() {
        let good = r#"{"clock":{"a":2},"entries":{"x":{"a":2}}}"#;
        let set: OrSet<String> = serde_json::from_str(good).unwrap();
        assert!(set.contains(&"x".to_string()));
        let unseen = r#"{"clock":{"a":1},"entries":{"x":{"a":2}}}"#;
        let err = serde_json::from_str::<OrSet<String>>(unseen).unwrap_err();
        assert!(
            err.to_string()
                .contains("the add a:2, which the set's clock {a:1} does not contain"),
            "{err}"
        );
        let empty = r#"{"clock":{"a":1},"entries":{"x":{}}}"#;
        let err = serde_json::from_str::<OrSet<String>>(empty).unwrap_err();
        assert!(
            err.to_string().contains("element #0 (in order) has no add"),
            "{err}"
        );
    }

    #[test]
    fn concurrent_adds_keep_both_dots() {
        let mut a = OrSet::new();
        let mut b = OrSet::new();
        a.add("a", "x");
        b.add("b", "x");
        a.merge(&b);
        assert_eq!(a.dots(&"x"), [Dot::new("a", 1), Dot::new("b", 1)]);
        assert_eq!(a.len(), 1);
        // A remove that saw both removes it for good.
        let mut c = a.clone();
        c.remove(&"x");
        a.merge(&c);
        b.merge(&c);
        assert!(!a.contains(&"x") && !b.contains(&"x"));
    }
}
