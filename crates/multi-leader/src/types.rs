//! Client requests, replies and errors.

use mimeo_causality::{Dot, SiblingError, Timestamp, VersionVector};
pub use mimeo_causality::{KeyType, ReadValue};
use serde::{Deserialize, Serialize};

use crate::config::AckMode;

/// The core's notion of time: milliseconds on a monotonic clock the driver
/// reads (timers, timeouts). Not the HLC's physical time, which is passed
/// separately as wall-clock milliseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + ms`, saturating.
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
}

/// The driver's id for a client request, echoed in the reply.
pub type RequestId = u64;

/// A client request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClientOp {
    /// Write a value. `context` is the context of the read this write
    /// follows (siblings policy: the write supersedes exactly the values
    /// that read saw; `None` is a blind write). Ignored under LWW.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// The read's causal context.
        context: Option<VersionVector>,
    },
    /// Delete: a tombstone superseding what the read with `context` saw.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// The read's causal context.
        context: Option<VersionVector>,
    },
    /// Add `delta` (may be negative) to a counter.
    Increment {
        /// The key.
        key: Vec<u8>,
        /// The change.
        delta: i64,
    },
    /// Add an element to a set.
    SetAdd {
        /// The key.
        key: Vec<u8>,
        /// The element.
        element: Vec<u8>,
    },
    /// Remove an element from a set (the adds this replica has seen).
    SetRemove {
        /// The key.
        key: Vec<u8>,
        /// The element.
        element: Vec<u8>,
    },
    /// Read from the local replica. With `session` (the vector of a
    /// previous reply), wait until this replica has applied it, at most
    /// `timeout_ms` (the configured default if `None`).
    Get {
        /// The key.
        key: Vec<u8>,
        /// The session token: what the client has written or read.
        session: Option<VersionVector>,
        /// How long to wait for the session, in ms.
        timeout_ms: Option<u64>,
    },
    /// Compare-and-set: always refused in this mode.
    Cas {
        /// The key.
        key: Vec<u8>,
        /// The expected value.
        expected: Option<Vec<u8>>,
        /// The new value.
        value: Vec<u8>,
    },
}

impl ClientOp {
    /// The key the request is about.
    pub fn key(&self) -> &[u8] {
        match self {
            ClientOp::Put { key, .. }
            | ClientOp::Delete { key, .. }
            | ClientOp::Increment { key, .. }
            | ClientOp::SetAdd { key, .. }
            | ClientOp::SetRemove { key, .. }
            | ClientOp::Get { key, .. }
            | ClientOp::Cas { key, .. } => key,
        }
    }
}

/// The answer to a client request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Reply {
    /// The write is durable on as many nodes as its ack mode asked.
    Written {
        /// The write's place in its origin's stream (origin node, sequence).
        write: Dot,
        /// Its HLC timestamp.
        ts: Timestamp,
        /// Siblings policy, put or delete: the dot naming the value in the
        /// key's DVV set (per key, per coordinating node: not `write`).
        key_dot: Option<Dot>,
        /// Siblings policy: the key's context after the write.
        context: Option<VersionVector>,
        /// The session token: this node's applied vector after the write.
        session: VersionVector,
    },
    /// A read.
    Value {
        /// What the replica holds.
        value: ReadValue,
        /// The session token: this replica's applied vector.
        session: VersionVector,
    },
    /// The request failed: it had no effect.
    Failed(ClientError),
}

/// Why a request failed (it had no effect).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The operation does not fit the key's type.
    #[error("key {key:?} holds a {existing}, and {operation} needs a {requested}; a key's type is fixed by its first write: use another key, or delete this one first (only values can be deleted)")]
    TypeMismatch {
        /// The key (lossy UTF-8).
        key: String,
        /// What the key holds.
        existing: KeyType,
        /// What the operation needs.
        requested: KeyType,
        /// The operation.
        operation: String,
    },
    /// `cas` cannot be honoured by a mode where every node accepts writes.
    #[error("cas refused: multi-leader replication lets every node accept writes concurrently, so no node can compare and set atomically; use leader-follower mode (mimeo-leader-follower) for cas")]
    CasUnsupported,
    /// A session read timed out before the replica applied the session.
    #[error("session read timed out after {waited_ms} ms: this replica has not applied {missing} yet (it may be partitioned from those origins); retry, or read from another node")]
    SessionTimeout {
        /// How long the read waited.
        waited_ms: u64,
        /// The part of the session the replica lacks.
        missing: VersionVector,
    },
    /// Too many session reads are waiting.
    #[error("too many session reads are waiting ({limit}); retry later")]
    Busy {
        /// `max_waiting_reads`.
        limit: usize,
    },
    /// The sibling cap refused the write.
    #[error(transparent)]
    Siblings(#[from] SiblingError),
    /// Writes waiting for their acknowledgements (`quorum` or `all`: peers
    /// that have not reported them durable) hold the whole budget.
    #[error("write refused: {pending_bytes} bytes of writes are waiting for acknowledgements from peers (limit {limit_bytes}, max_pending_ack_bytes); peers may be down or partitioned: retry later, or write with acks = local")]
    AcksFull {
        /// Bytes of pending acknowledgements.
        pending_bytes: usize,
        /// `max_pending_ack_bytes`.
        limit_bytes: usize,
    },
    /// The key's state after the write (every sibling, since a write
    /// carries them all) would exceed `max_write_bytes`.
    #[error("write refused: the key's state would take {bytes} bytes with this write (every concurrent value is shipped with it), more than max_write_bytes = {limit_bytes}; resolve the siblings (write with the context of a read) or write a smaller value")]
    WriteTooLarge {
        /// The size the write would have.
        bytes: usize,
        /// `max_write_bytes`.
        limit_bytes: usize,
    },
    /// Deleted keys waiting for collection hold the whole budget.
    #[error("delete refused: {pending_bytes} bytes of tombstones are waiting until every node has them (limit {limit_bytes}, max_tombstone_bytes); a node may be down or partitioned: retry once it is back")]
    TombstonesFull {
        /// Bytes of tombstones pending collection.
        pending_bytes: usize,
        /// `max_tombstone_bytes`.
        limit_bytes: usize,
    },
}

/// The ack mode of a request: the request's override, else the default.
pub(crate) fn ack_mode(requested: Option<AckMode>, default: AckMode) -> AckMode {
    requested.unwrap_or(default)
}
