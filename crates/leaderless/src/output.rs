//! What the core asks its driver to do, and what it reports.

use std::collections::BTreeMap;

use mimeo_causality::NodeId;
use serde::{Deserialize, Serialize};

use crate::message::Message;
use crate::record::Persist;
use crate::types::{Millis, ReadValue, Reply, RequestId};

/// One thing for the driver to do, drained with
/// [`Core::poll_output`](crate::Core::poll_output) in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Send `msg` to `to` (best effort).
    Send {
        /// The destination.
        to: NodeId,
        /// The message.
        msg: Message,
    },
    /// Make this durable, atomically, after every earlier `Persist`, then
    /// call [`Core::persisted`](crate::Core::persisted).
    Persist(Persist),
    /// Answer a client.
    Reply {
        /// The request.
        req_id: RequestId,
        /// The answer.
        reply: Reply,
    },
}

/// Counters, since the core started (not persisted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Metrics {
    /// Writes this node coordinated (created the version of).
    pub writes_coordinated: u64,
    /// Writes it handed to a target to coordinate.
    pub writes_forwarded: u64,
    /// Reads it coordinated.
    pub reads_coordinated: u64,
    /// Writes that ended `unknown`.
    pub writes_unknown: u64,
    /// Reads that ended `unavailable`.
    pub reads_unavailable: u64,
    /// Requests refused at once: not enough reachable replicas.
    pub not_enough_replicas: u64,
    /// Read-repair writes sent (one per stale replica per read).
    pub read_repairs: u64,
    /// Hints created here (a fallback took a write for an owner).
    pub hints_stored: u64,
    /// Hints the owner acknowledged and this node dropped.
    pub hints_delivered: u64,
    /// Hints dropped for age.
    pub hints_expired: u64,
    /// Hinted writes refused because the hint budget was full.
    pub hints_refused: u64,
    /// Anti-entropy exchanges completed as initiator.
    pub ae_exchanges: u64,
    /// Segments compared (as initiator or responder).
    pub ae_segments_compared: u64,
    /// Key states shipped by anti-entropy.
    pub ae_keys_shipped: u64,
    /// Bytes of anti-entropy messages sent (tree hashes, key lists and
    /// states: the exchange's whole cost).
    pub ae_bytes_shipped: u64,
    /// Merges where two states of a key had different types.
    pub type_conflicts: u64,
}

/// What a core reports: [`Core::status`](crate::Core::status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Status {
    /// The node.
    pub id: NodeId,
    /// The ring's fingerprint.
    pub ring: u64,
    /// Keys held (primary data, not hints).
    pub keys: u64,
    /// Hints pending, per owner: (hints, bytes).
    pub hints_pending: BTreeMap<NodeId, (u64, u64)>,
    /// Per peer, when the last anti-entropy exchange with it (as
    /// initiator) completed.
    pub last_exchange: BTreeMap<NodeId, Millis>,
    /// Peers believed reachable.
    pub reachable: Vec<NodeId>,
    /// HLC refusals (remote timestamps too far ahead).
    pub drift_refusals: u64,
    /// The counters.
    pub metrics: Metrics,
}

/// A node's own copy of a key, read without coordinating:
/// [`Core::local_read`](crate::Core::local_read).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LocalRead {
    /// The key's preference list (its `n` replicas, primary first).
    pub replicas: Vec<NodeId>,
    /// What this node holds of the key ([`ReadValue::Absent`]: nothing),
    /// or `None` when this node is not one of `replicas`.
    pub value: Option<ReadValue>,
}
