//! Client requests, replies and errors.

use std::fmt;

use mimeo_causality::{Dot, SiblingError, Timestamp, VersionVector};
pub use mimeo_causality::{KeyType, ReadValue};
use serde::{Deserialize, Serialize};

/// The core's notion of time: milliseconds on a monotonic clock the driver
/// reads (timers, timeouts). The HLC's physical time is passed separately
/// as wall-clock milliseconds since the Unix epoch.
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

/// Per-request quorum settings; `None` takes the cluster default from
/// [`Config`](crate::Config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Quorum {
    /// Replicas that must have received a write.
    pub w: Option<usize>,
    /// Replicas that must answer a read.
    pub r: Option<usize>,
    /// Of the `w`, how many must be primary owners (not fallbacks).
    pub pw: Option<usize>,
    /// Of the `r`, how many must be primary owners.
    pub pr: Option<usize>,
    /// Of the `w`, how many must hold the write durably.
    pub dw: Option<usize>,
}

/// A client request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClientOp {
    /// Write a value. `context` is the context of the read this write
    /// follows (siblings policy: the write supersedes exactly the values
    /// that read saw; `None` is a blind write). Ignored under LWW.
    Put {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// The read's causal context.
        context: Option<VersionVector>,
    },
    /// Delete: a tombstone superseding what the read with `context` saw.
    Delete {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The read's causal context.
        context: Option<VersionVector>,
    },
    /// Add `delta` (may be negative) to a counter.
    Increment {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The change.
        delta: i64,
    },
    /// Add an element to a set.
    SetAdd {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The element.
        #[serde(with = "serde_bytes")]
        element: Vec<u8>,
    },
    /// Remove an element from a set (the adds the coordinating replica
    /// has seen).
    SetRemove {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The element.
        #[serde(with = "serde_bytes")]
        element: Vec<u8>,
    },
    /// Read from `r` replicas and merge what they return.
    Get {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Compare-and-set: always refused in this mode.
    Cas {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The expected value.
        expected: Option<Vec<u8>>,
        /// The new value.
        #[serde(with = "serde_bytes")]
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
            | ClientOp::Get { key }
            | ClientOp::Cas { key, .. } => key,
        }
    }

    /// Whether it writes.
    pub fn is_write(&self) -> bool {
        !matches!(self, ClientOp::Get { .. } | ClientOp::Cas { .. })
    }
}

/// How many replicas a request heard from, and how many it needed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Replies (writes: replicas that received it; reads: replicas that answered).
    pub replies: usize,
    /// Of those, primary owners.
    pub primaries: usize,
    /// Writes: replicas that hold it durably.
    pub durable: usize,
    /// `w` or `r`.
    pub needed: usize,
    /// `pw` or `pr`.
    pub primaries_needed: usize,
    /// `dw` (writes).
    pub durable_needed: usize,
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} replies ({} of {} from primaries, {} of {} durable)",
            self.replies,
            self.needed,
            self.primaries,
            self.primaries_needed,
            self.durable,
            self.durable_needed
        )
    }
}

/// The answer to a client request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Reply {
    /// The write reached its quorum.
    Written {
        /// Siblings policy, put or delete: the dot naming the value.
        key_dot: Option<Dot>,
        /// Siblings policy: the key's context at the coordinating replica
        /// after the write.
        context: Option<VersionVector>,
        /// LWW: the write's timestamp.
        ts: Option<Timestamp>,
        /// Who acknowledged it by the time of the reply.
        tally: Tally,
    },
    /// A read: the merge of the replies.
    Value {
        /// What the replicas hold, merged.
        value: ReadValue,
        /// Who answered.
        tally: Tally,
    },
    /// A write that did not gather its quorum in time: it may have
    /// landed on some replicas (and may spread from them), or not.
    Unknown {
        /// What it gathered.
        tally: Tally,
        /// How long it waited, in ms.
        waited_ms: u64,
    },
    /// A read that did not gather its quorum in time.
    Unavailable {
        /// What it gathered.
        tally: Tally,
        /// How long it waited, in ms.
        waited_ms: u64,
    },
    /// The request failed: it had no effect.
    Failed(ClientError),
}

/// Why a request failed (it had no effect).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The operation does not fit the key's type.
    #[error("key {key:?} holds a {existing}, and {operation} needs a {requested}; a key's type is fixed by its first write: use another key")]
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
    /// `cas` needs a single leader.
    #[error("cas refused: leaderless replication lets any replica accept writes concurrently, so no node can compare and set atomically; use leader-follower mode (mimeo-leader-follower) for cas")]
    CasUnsupported,
    /// Fewer replicas are reachable than the request needs: nothing was sent.
    #[error("not enough reachable replicas for key {key:?}: {reachable} reachable ({primaries} primaries), the request needs {needed} ({primaries_needed} primaries){hint}")]
    NotEnoughReplicas {
        /// The key (lossy UTF-8).
        key: String,
        /// Reachable targets.
        reachable: usize,
        /// Of which primaries.
        primaries: usize,
        /// `w` or `r`.
        needed: usize,
        /// `pw` or `pr`.
        primaries_needed: usize,
        /// Advice.
        hint: String,
    },
    /// Too many requests are pending on this node.
    #[error(
        "too many requests pending on this node ({limit}); retry later or through another node"
    )]
    Busy {
        /// `max_pending_requests`.
        limit: usize,
    },
    /// A quorum setting is out of range.
    #[error("invalid quorum: {0}")]
    BadQuorum(String),
    /// The sibling cap refused the write.
    #[error(transparent)]
    Siblings(#[from] SiblingError),
}
