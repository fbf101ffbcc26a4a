//! Durable and replicated records.
//!
//! # Versioning
//!
//! These types are what a driver writes to disk (through `mimeo-storage`)
//! and what peers exchange. They are encoded with serde (postcard on disk
//! and on the wire); a driver stores each one behind a format version,
//! [`FORMAT_VERSION`] (2 for this layout), and refuses a version it does
//! not know with an error naming it. Changes keep old data readable: new
//! enum variants go at the end, new fields get a new format version and a
//! conversion from the previous one; a golden-bytes test
//! (`src/tests.rs`) pins the encoding of a [`Write`] (the same in
//! versions 1 and 2).

use std::collections::BTreeMap;

use mimeo_causality::{Dot, NodeId, Timestamp, VersionVector};
use serde::{Deserialize, Serialize};

use crate::state::KeyRecord;

/// The format version of [`Write`], [`Persist`] and [`DurableState`].
///
/// Version 2 added the actor (incarnation) id to [`Persist`] and
/// [`DurableState`] (and to the driver's commit record); [`Write`] and
/// [`KeyRecord`] encode as in version 1, and a driver still reads a
/// version-1 store (whose node keeps writing as its plain id).
pub const FORMAT_VERSION: u16 = 2;

/// One write in its origin's stream: the unit of replication and catch-up.
///
/// It carries the key's **state** at the origin after the write (not the
/// operation): applying it anywhere is a merge, so duplicates are harmless
/// and replicas converge whatever order writes from different origins
/// arrive in. Writes from one origin are applied in sequence order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Write {
    /// The origin node and its sequence number (from 1, no gaps): the
    /// write's place in the replication stream.
    pub id: Dot,
    /// The HLC timestamp the origin gave it.
    pub ts: Timestamp,
    /// The key.
    pub key: Vec<u8>,
    /// The key's state at the origin after the write.
    pub record: KeyRecord,
    /// Set when the origin held no state for the key (never seen, or
    /// collected): the origin's applied vector before the write.
    /// Informational since the record's [`KeyRecord::writes`] became the
    /// origin's whole causal past (which covers this vector): a replica
    /// decides whether the write supersedes its record from that (see
    /// [`Core`](crate::Core)). Kept so that the format stays version 1.
    pub fresh: Option<VersionVector>,
}

impl Write {
    /// A rough size in bytes (memory log and flow control budgets).
    pub fn approx_bytes(&self) -> usize {
        64 + self.key.len() + self.record.state.approx_bytes()
    }
}

/// A change to one key's durable state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum KeyChange {
    /// The key's record is now `record`.
    Set {
        /// The key.
        key: Vec<u8>,
        /// Its new record.
        record: KeyRecord,
    },
    /// The key's tombstones were collected: drop the key. `writes` is the
    /// collected record's [`KeyRecord::writes`] (for logs and checkers).
    Collected {
        /// The key.
        key: Vec<u8>,
        /// The writes the collected state reflected.
        writes: VersionVector,
    },
}

/// A durable change, to be made **atomically**: append `writes` to the
/// origin-sequence log (the driver reads them back for
/// [`Output::Load`](crate::Output::Load)), apply `keys`, and store
/// `applied` and `clock`. The data and the vector describing it advance
/// together: after a crash the node finds either all of it or none.
///
/// The driver performs `Persist` outputs in order and reports each with
/// [`Core::persisted`](crate::Core::persisted) once durable (reporting
/// `id` covers every earlier one).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Persist {
    /// Increasing from 1 in a core's life (restarts from 1).
    pub id: u64,
    /// Writes applied (local ones, and replicated ones in origin order).
    pub writes: Vec<Write>,
    /// Key changes, in order.
    pub keys: Vec<KeyChange>,
    /// The applied vector once this record is applied.
    pub applied: VersionVector,
    /// The largest HLC timestamp this node has issued, to restore its
    /// clock from.
    pub clock: Timestamp,
    /// The actor (incarnation) id this node writes as
    /// ([`Core::actor`](crate::Core::actor)): stored with every commit so
    /// that a restart keeps it, and a wiped node (which finds none) takes
    /// a new one.
    pub actor: NodeId,
}

/// What a driver hands [`Core::restore`](crate::Core::restore) after a
/// restart: the result of every durable [`Persist`], in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    /// The applied vector of the last durable `Persist`.
    pub applied: VersionVector,
    /// Every key's record.
    pub keys: BTreeMap<Vec<u8>, KeyRecord>,
    /// The clock of the last durable `Persist` (`None`: nothing persisted).
    pub clock: Option<Timestamp>,
    /// The actor of the last durable `Persist`. `None` with a clock: a
    /// store written before actors were recorded (format version 1),
    /// whose node wrote as its plain id and keeps doing so; `None`
    /// without a clock: nothing persisted, the node starts a new
    /// incarnation ([`Config::fresh_actor`](crate::Config::fresh_actor)).
    pub actor: Option<NodeId>,
}

impl DurableState {
    /// Applies one durable record (what a driver does on disk, done in
    /// memory: for tests and simple drivers).
    pub fn apply(&mut self, persist: &Persist) {
        for change in &persist.keys {
            match change {
                KeyChange::Set { key, record } => {
                    self.keys.insert(key.clone(), record.clone());
                }
                KeyChange::Collected { key, .. } => {
                    self.keys.remove(key);
                }
            }
        }
        self.applied = persist.applied.clone();
        self.clock = Some(persist.clock.clone());
        self.actor = Some(persist.actor.clone());
    }
}
