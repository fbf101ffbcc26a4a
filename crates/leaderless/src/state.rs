//! A key's replicated state and how two states merge.

use mimeo_causality::{DvvSet, Lww, OrSet, PnCounter, Timestamp, VersionVector};
use serde::{Deserialize, Serialize};

use crate::ring::hash64;
use crate::types::{KeyType, ReadValue};

/// The data of one key on one replica: a state-based CRDT of the key's
/// type. Replicas exchange whole states and merge them (a join), so a
/// state received twice, late or out of order changes nothing.
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

    /// The state's deterministic encoding (postcard; causality types keep
    /// ordered maps only).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("key states serialize")
    }

    /// The state's hash (XXH3-64 of its encoding): equal states, equal
    /// hashes, on every node.
    pub fn hash(&self) -> u64 {
        hash64(&self.encode())
    }

    /// Merges `other` into `self` (a join: commutative, associative,
    /// idempotent). States of different types (two coordinators chose a
    /// type concurrently) resolve deterministically: the larger
    /// [`KeyType`] wins whole; a register under both policies keeps the
    /// siblings. Returns whether the types conflicted.
    pub(crate) fn merge(&mut self, other: &KeyState) -> bool {
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
                context: Default::default(),
                ts: Some(lww.ts.clone()),
            },
            KeyState::Counter(c) => ReadValue::Counter(c.value()),
            KeyState::Set(s) => ReadValue::Set(s.iter().cloned().collect()),
        }
    }
}

/// What anti-entropy ships beside a key's hash so that, where it can
/// tell, only the replica that is behind receives a state: the causal
/// context of a siblings value (a replica whose context covers another's
/// holds everything the other does, merged), or an LWW value's
/// timestamp. Counters and sets ship both ways.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyClock {
    /// Nothing to compare: ship both ways.
    Opaque,
    /// A siblings value's context.
    Vector(VersionVector),
    /// An LWW value's timestamp.
    Ts(Timestamp),
}

/// Which way a differing key's state must go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ship {
    /// Only theirs to us.
    Pull,
    /// Only ours to them.
    Push,
    /// Both ways.
    Both,
}

impl KeyClock {
    /// Which way states must go between `self` (ours) and `theirs`.
    pub(crate) fn ship(&self, theirs: &KeyClock) -> Ship {
        match (self, theirs) {
            (KeyClock::Vector(a), KeyClock::Vector(b)) if a != b => {
                if b.descends(a) {
                    Ship::Pull
                } else if a.descends(b) {
                    Ship::Push
                } else {
                    Ship::Both
                }
            }
            (KeyClock::Ts(a), KeyClock::Ts(b)) if a != b => {
                if b > a {
                    Ship::Pull
                } else {
                    Ship::Push
                }
            }
            _ => Ship::Both,
        }
    }
}

impl KeyState {
    /// The state's [`KeyClock`].
    pub fn clock(&self) -> KeyClock {
        match self {
            KeyState::Siblings(dvv) => KeyClock::Vector(dvv.context()),
            KeyState::Lww(lww) => KeyClock::Ts(lww.ts.clone()),
            KeyState::Counter(_) | KeyState::Set(_) => KeyClock::Opaque,
        }
    }
}

/// Merges optional states.
pub(crate) fn merge_opt(into: &mut Option<KeyState>, other: &KeyState) {
    match into {
        Some(mine) => {
            mine.merge(other);
        }
        None => *into = Some(other.clone()),
    }
}
