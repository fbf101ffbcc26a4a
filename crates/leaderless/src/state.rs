//! A key's replicated state and how two states merge.

pub use mimeo_causality::KeyState;
use mimeo_causality::{Timestamp, VersionVector};
use serde::{Deserialize, Serialize};

use crate::ring::hash64;

/// The leaderless replicator's view of a [`KeyState`]: the bytes its
/// anti-entropy trees hash and its budgets count, and its
/// anti-entropy clock.
pub trait KeyStateExt {
    /// The state's deterministic encoding (postcard; causality types keep
    /// ordered maps only).
    fn encode(&self) -> Vec<u8>;

    /// The state's hash (XXH3-64 of its encoding): equal states, equal
    /// hashes, on every node.
    fn hash(&self) -> u64;

    /// The state's [`KeyClock`].
    fn clock(&self) -> KeyClock;
}

impl KeyStateExt for KeyState {
    fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("key states serialize")
    }

    fn hash(&self) -> u64 {
        hash64(&self.encode())
    }

    fn clock(&self) -> KeyClock {
        match self {
            KeyState::Siblings(dvv) => KeyClock::Vector(dvv.context()),
            KeyState::Lww(lww) => KeyClock::Ts(lww.ts.clone()),
            KeyState::Counter(_) | KeyState::Set(_) => KeyClock::Opaque,
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

/// Merges optional states.
pub(crate) fn merge_opt(into: &mut Option<KeyState>, other: &KeyState) {
    match into {
        Some(mine) => {
            mine.merge(other);
        }
        None => *into = Some(other.clone()),
    }
}
