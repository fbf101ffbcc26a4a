//! A replicated key: its type, its state (one of the merge types of this
//! crate), and what a read of it returns. The multi-leader and leaderless
//! replicators store, ship and merge these; they re-export them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{DvvSet, Lww, OrSet, PnCounter, Timestamp, VersionVector};

/// What a key holds; fixed by its first write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KeyType {
    /// A value (put / delete), resolved by the cluster's policy.
    Register,
    /// A PN-counter (increment).
    Counter,
    /// An add-wins observed-remove set (add / remove).
    Set,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Register => "register",
            KeyType::Counter => "counter",
            KeyType::Set => "set",
        })
    }
}

/// The data of one key on one replica: a state-based CRDT of the key's
/// type. Replicas exchange whole states and merge them (a join), so a
/// state received twice, late or out of order changes nothing.
///
/// Exhaustive on purpose: every replicator must decide how it stores,
/// ships and reads a new kind of state, so adding one must not compile
/// until each does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyState {
    /// A value under the siblings policy; `None` is a tombstone.
    Siblings(DvvSet<Option<Vec<u8>>>),
    /// A value under LWW; `None` is a tombstone.
    Lww(Lww<Option<Vec<u8>>>),
    /// A counter.
    Counter(PnCounter),
    /// A set.
    Set(OrSet<Vec<u8>>),
}

impl KeyState {
    /// The key's type.
    pub fn key_type(&self) -> KeyType {
        match self {
            KeyState::Siblings(_) | KeyState::Lww(_) => KeyType::Register,
            KeyState::Counter(_) => KeyType::Counter,
            KeyState::Set(_) => KeyType::Set,
        }
    }

    /// Whether the key holds nothing but tombstones (a deleted value).
    pub fn only_tombstones(&self) -> bool {
        match self {
            KeyState::Siblings(dvv) => dvv.values().all(Option::is_none),
            KeyState::Lww(lww) => lww.value.is_none(),
            KeyState::Counter(_) | KeyState::Set(_) => false,
        }
    }

    /// A rough size in bytes, for memory and flow-control budgets (not
    /// the encoded size).
    pub fn approx_bytes(&self) -> usize {
        const ENTRY: usize = 24;
        match self {
            KeyState::Siblings(dvv) => {
                dvv.values()
                    .map(|v| v.as_ref().map_or(0, Vec::len) + ENTRY)
                    .sum::<usize>()
                    + ENTRY * dvv.context().len()
            }
            KeyState::Lww(lww) => lww.value.as_ref().map_or(0, Vec::len) + ENTRY,
            KeyState::Counter(_) => ENTRY * 4,
            KeyState::Set(set) => {
                set.iter().map(|e| e.len() + ENTRY).sum::<usize>() + ENTRY * set.clock().len()
            }
        }
    }

    /// Merges `other` into `self` (a join: commutative, associative,
    /// idempotent). States of different types (two replicas chose a type
    /// concurrently) resolve deterministically: the larger [`KeyType`]
    /// wins whole; a register under both policies (a misconfigured
    /// cluster) keeps the siblings. Returns whether the types conflicted.
    pub fn merge(&mut self, other: &KeyState) -> bool {
        let (mine, theirs) = (self.key_type(), other.key_type());
        if mine != theirs {
            if theirs > mine {
                *self = other.clone();
            }
            return true;
        }
        match (&mut *self, other) {
            (KeyState::Siblings(a), KeyState::Siblings(b)) => a.merge(b),
            (KeyState::Lww(a), KeyState::Lww(b)) => {
                a.merge(b);
            }
            (KeyState::Counter(a), KeyState::Counter(b)) => a.merge(b),
            (KeyState::Set(a), KeyState::Set(b)) => a.merge(b),
            (a @ KeyState::Lww(_), b @ KeyState::Siblings(_)) => *a = b.clone(),
            (KeyState::Siblings(_), KeyState::Lww(_)) => {}
            _ => unreachable!("types compared equal"),
        }
        false
    }

    /// What a read returns for this state.
    pub fn read_value(&self) -> ReadValue {
        match self {
            KeyState::Siblings(dvv) => ReadValue::Register {
                values: dvv.values().flatten().cloned().collect(),
                deleted: dvv.values().any(Option::is_none),
                context: dvv.context(),
                ts: None,
            },
            KeyState::Lww(lww) => ReadValue::Register {
                values: lww.value.iter().cloned().collect(),
                deleted: lww.value.is_none(),
                context: VersionVector::new(),
                ts: Some(lww.ts.clone()),
            },
            KeyState::Counter(c) => ReadValue::Counter(c.value()),
            KeyState::Set(s) => ReadValue::Set(s.iter().cloned().collect()),
        }
    }
}

/// What a read found.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReadValue {
    /// No state for the key (never written, its tombstone collected, or,
    /// leaderless, on no replica that answered).
    Absent,
    /// A value key. Under LWW at most one value; under siblings every
    /// concurrent one.
    Register {
        /// The live values (siblings), in the [`DvvSet`]'s order.
        values: Vec<Vec<u8>>,
        /// Whether a tombstone is among the siblings (or, under LWW, the
        /// key is deleted).
        deleted: bool,
        /// The causal context to pass back with the next write (siblings;
        /// empty under LWW). Opaque to clients.
        context: VersionVector,
        /// Under LWW, the winning write's timestamp.
        ts: Option<Timestamp>,
    },
    /// A counter's value.
    Counter(i128),
    /// A set's elements, in order.
    Set(Vec<Vec<u8>>),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serde shape the replicators store and ship (postcard): pinned,
    /// since their on-disk records and messages embed it.
    #[test]
    fn the_encodings_are_pinned() {
        let mut counter = PnCounter::new();
        counter.increment("n1", -3);
        let state = KeyState::Counter(counter);
        assert_eq!(
            postcard::to_allocvec(&state).unwrap(),
            [2, 0, 1, 2, b'n', b'1', 3]
        );
        assert_eq!(postcard::to_allocvec(&KeyType::Set).unwrap(), [2]);
        let read = ReadValue::Register {
            values: vec![b"v".to_vec()],
            deleted: true,
            context: VersionVector::new(),
            ts: Some(Timestamp::new(5, 1, "n2")),
        };
        assert_eq!(
            postcard::to_allocvec(&read).unwrap(),
            [1, 1, 1, b'v', 1, 0, 1, 5, 1, 2, b'n', b'2']
        );
        assert_eq!(state.read_value(), ReadValue::Counter(-3));
    }

    #[test]
    fn a_larger_type_wins_whole_and_siblings_beat_lww() {
        let mut counter = KeyState::Counter(PnCounter::new());
        let set = KeyState::Set(OrSet::new());
        assert!(counter.merge(&set));
        assert_eq!(counter, set);
        let mut lww = KeyState::Lww(Lww::new(Timestamp::new(1, 0, "n1"), Some(b"a".to_vec())));
        let siblings = KeyState::Siblings(DvvSet::new());
        assert!(!lww.merge(&siblings));
        assert_eq!(lww, siblings);
    }
}
