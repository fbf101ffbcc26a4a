//! A key's replicated state and how two states merge.

use mimeo_causality::{DvvSet, Lww, OrSet, PnCounter, VersionVector};
use serde::{Deserialize, Serialize};

use crate::types::KeyType;

/// The data of one key on one replica: a state-based CRDT of the key's type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
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

    /// A rough size in bytes, for the memory and flow-control budgets.
    pub(crate) fn approx_bytes(&self) -> usize {
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
}

/// A key's state and the origin writes it reflects.
///
/// `writes` is the state's causal past: the join, over every write to
/// this key merged into the state (directly or through another write's
/// state), of the applied vector its origin had when it made it. It
/// decides when a tombstone is causally stable, and lets a replica
/// recognise a write whose origin had seen everything its own state
/// reflects (and may have collected its tombstones since).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The data.
    pub state: KeyState,
    /// Origin writes reflected in it: its causal past.
    pub writes: VersionVector,
}

impl KeyRecord {
    /// Merges `other` into `self` (a join: commutative, associative,
    /// idempotent). States of different types (two nodes chose a type
    /// concurrently) resolve deterministically: the larger [`KeyType`]
    /// wins whole. Returns whether the types conflicted.
    pub(crate) fn merge(&mut self, other: &KeyRecord, lww_smallest: bool) -> bool {
        self.writes.join(&other.writes);
        let (mine, theirs) = (self.state.key_type(), other.state.key_type());
        if mine != theirs {
            if theirs > mine {
                self.state = other.state.clone();
            }
            return true;
        }
        match (&mut self.state, &other.state) {
            (KeyState::Siblings(a), KeyState::Siblings(b)) => a.merge(b),
            (KeyState::Lww(a), KeyState::Lww(b)) => {
                if lww_smallest {
                    if b.ts < a.ts {
                        *a = b.clone();
                    }
                } else {
                    a.merge(b);
                }
            }
            (KeyState::Counter(a), KeyState::Counter(b)) => a.merge(b),
            (KeyState::Set(a), KeyState::Set(b)) => a.merge(b),
            // A register under both policies: a misconfigured cluster.
            // Keep the siblings state, deterministically.
            (a @ KeyState::Lww(_), b @ KeyState::Siblings(_)) => *a = b.clone(),
            (KeyState::Siblings(_), KeyState::Lww(_)) => {}
            _ => unreachable!("types compared equal"),
        }
        false
    }
}
