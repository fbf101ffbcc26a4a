//! A key's replicated state and how two states merge.

pub use mimeo_causality::KeyState;
use mimeo_causality::VersionVector;
use serde::{Deserialize, Serialize};

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
    /// idempotent), the states by [`KeyState::merge`] (unless the
    /// `LwwKeepsSmallest` sabotage is on). Returns whether the types
    /// conflicted.
    pub(crate) fn merge(&mut self, other: &KeyRecord, lww_smallest: bool) -> bool {
        self.writes.join(&other.writes);
        if lww_smallest {
            // Sabotage: LWW keeps the smaller timestamp.
            if let (KeyState::Lww(a), KeyState::Lww(b)) = (&mut self.state, &other.state) {
                if b.ts < a.ts {
                    *a = b.clone();
                }
                return false;
            }
        }
        self.state.merge(&other.state)
    }
}
