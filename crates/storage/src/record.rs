//! The records kept in the log and the entries read back from the index.

use serde::{Deserialize, Serialize};

/// A position in the replicated log: the leader's term and the log index.
///
/// Index 0 means "nothing"; the first record has index 1. Positions order by
/// term first, then index, which is the order leader election compares them
/// in.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogPosition {
    /// The term of the leader that created the record (0 when replication
    /// has no terms).
    pub term: u64,
    /// The 1-based log index.
    pub index: u64,
}

impl LogPosition {
    /// A position from its parts.
    pub const fn new(term: u64, index: u64) -> Self {
        LogPosition { term, index }
    }
}

/// Metadata every record carries for the replicators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    /// Where the record sits in the log.
    pub position: LogPosition,
    /// The node that originally accepted the write (multi-leader).
    pub origin: u64,
    /// The origin's sequence number for this write (multi-leader).
    pub seq: u64,
    /// An opaque per-value version (HLC timestamp or causal context), encoded
    /// by the replicator. The store never interprets it.
    pub version: Vec<u8>,
}

/// What a record does to the key-value state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Delete `key`, leaving a tombstone that carries the record's metadata.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl Mutation {
    /// The key this mutation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Put { key, .. } | Mutation::Delete { key } => key,
        }
    }
}

/// One log record: metadata plus a mutation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Position, origin and version.
    pub meta: RecordMeta,
    /// The change to the key-value state.
    pub mutation: Mutation,
}

/// The latest state of one key, as returned by [`Store::get`](crate::Store::get)
/// and [`Store::scan`](crate::Store::scan).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The value, or `None` for a tombstone (the key was deleted).
    pub value: Option<Vec<u8>>,
    /// The metadata of the record that wrote this state.
    pub meta: RecordMeta,
}
