//! What the core asks its driver to make durable, and what a node
//! restarts from.
//!
//! Encoded with postcard, versioned by [`FORMAT_VERSION`]: a change of
//! encoding bumps it, and a driver refuses records of another version.

use std::collections::BTreeMap;

use mimeo_causality::{NodeId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::state::KeyState;

/// The version of the persisted records and messages.
pub const FORMAT_VERSION: u32 = 1;

/// A key as this replica stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// The replicated state.
    pub state: KeyState,
    /// The writer id this node uses for the key's dots (siblings, counters,
    /// sets), if it has coordinated a write to it: `<node>.<epoch>`. Local
    /// to this node: a node mints a new one whenever it has no state for
    /// the key, so it never issues the same dot twice.
    pub actor: Option<NodeId>,
}

/// A write held by a fallback for an unreachable primary owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hint {
    /// The owner it is held for.
    pub owner: NodeId,
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The merged state of every write hinted for (owner, key).
    pub state: KeyState,
    /// The writer id, as in [`StoredKey::actor`].
    pub actor: Option<NodeId>,
    /// When the hint was first stored (wall clock, ms): it expires
    /// [`hint_max_age_ms`](crate::Config::hint_max_age_ms) later.
    pub stored_wall_ms: u64,
}

/// A change to the hints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HintChange {
    /// Store (replace) the hint for (owner, key).
    Put(Hint),
    /// Drop the hint for (owner, key).
    Remove {
        /// The owner.
        owner: NodeId,
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

/// Records to make durable, atomically and after every earlier one; then
/// call [`Core::persisted`](crate::Core::persisted) with `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persist {
    /// Increasing from 1 per core instance.
    pub id: u64,
    /// The ring's fingerprint (to store once, and check at restart).
    pub ring: u64,
    /// The node's epoch counter (writer ids and request ids).
    pub epoch: u64,
    /// The HLC's last timestamp.
    pub clock: Timestamp,
    /// Keys to store (replace).
    pub keys: Vec<(Vec<u8>, StoredKey)>,
    /// Hint changes, in order.
    pub hints: Vec<HintChange>,
}

/// Everything a node restarts from: the fold of its durable [`Persist`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    /// The ring fingerprint the data was placed with.
    pub ring: Option<u64>,
    /// The epoch counter.
    pub epoch: u64,
    /// The clock.
    pub clock: Option<Timestamp>,
    /// Every key.
    pub keys: BTreeMap<Vec<u8>, StoredKey>,
    /// Every hint, by (owner, key).
    pub hints: BTreeMap<(NodeId, Vec<u8>), Hint>,
}

impl DurableState {
    /// Folds a durable [`Persist`] in (what a driver or a test disk does).
    pub fn apply(&mut self, p: &Persist) {
        self.ring = Some(p.ring);
        self.epoch = self.epoch.max(p.epoch);
        self.clock = Some(p.clock.clone());
        for (key, stored) in &p.keys {
            self.keys.insert(key.clone(), stored.clone());
        }
        for change in &p.hints {
            match change {
                HintChange::Put(h) => {
                    self.hints
                        .insert((h.owner.clone(), h.key.clone()), h.clone());
                }
                HintChange::Remove { owner, key } => {
                    self.hints.remove(&(owner.clone(), key.clone()));
                }
            }
        }
    }
}
