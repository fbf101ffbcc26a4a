//! What the core asks its driver to do, and what it reports.

use std::collections::BTreeMap;

use mimeo_causality::{NodeId, VersionVector};
use serde::{Deserialize, Serialize};

use crate::lag::LagHistogram;
use crate::message::Message;
use crate::record::Persist;
use crate::types::{Reply, RequestId};

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
    /// Read `origin`'s writes `from_seq..=to_seq` (or as many as exist
    /// from `from_seq`) from the durable log and hand them to
    /// [`Core::loaded`](crate::Core::loaded) for `peer`. The memory log no
    /// longer holds them.
    Load {
        /// The peer that needs them.
        peer: NodeId,
        /// The origin.
        origin: NodeId,
        /// The first sequence number.
        from_seq: u64,
        /// The last.
        to_seq: u64,
    },
    /// Answer a client.
    Reply {
        /// The request.
        req_id: RequestId,
        /// The answer.
        reply: Reply,
    },
}

/// How far this node is behind one origin (one incarnation of a node),
/// as far as it knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginLag {
    /// The member the origin belongs to ([`Config::member_of`](crate::Config::member_of);
    /// the origin itself if no member has it).
    pub node: NodeId,
    /// Its incarnation (0: the node's plain id, from a data directory
    /// written before incarnations existed).
    pub incarnation: u64,
    /// Applied writes of that origin (its contiguous prefix).
    pub applied: u64,
    /// Writes of that origin known to exist (from any peer's vector) and
    /// not applied here.
    pub behind_writes: u64,
    /// Milliseconds between this node's physical clock and the HLC time
    /// of the origin's latest write this node applied (0 if none or in
    /// the future).
    pub since_latest_ms: u64,
}

/// What a core reports: [`Core::status`](crate::Core::status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Status {
    /// The node.
    pub id: NodeId,
    /// The actor (incarnation) it writes as ([`Core::actor`](crate::Core::actor)).
    pub actor: NodeId,
    /// Its applied vector.
    pub applied: VersionVector,
    /// Its durable vector.
    pub durable: VersionVector,
    /// The meet of every node's durable vector as known here: writes
    /// every node holds durably. A driver may drop log entries at or
    /// below it.
    pub stable: VersionVector,
    /// Per origin (every incarnation of every node known here), how far
    /// behind.
    pub origins: BTreeMap<NodeId, OriginLag>,
    /// Keys holding only tombstones, waiting to be collected.
    pub tombstones_pending: u64,
    /// Bytes the pending tombstones hold (against `max_tombstone_bytes`).
    pub tombstone_bytes: u64,
    /// Local writes waiting for their acknowledgements.
    pub pending_acks: u64,
    /// Bytes they hold (against `max_pending_ack_bytes`).
    pub pending_ack_bytes: u64,
    /// Tombstoned keys collected so far (since start).
    pub tombstones_collected: u64,
    /// Live keys by sibling count (siblings policy): count → keys. A
    /// deleted value concurrent with live ones counts as a sibling; a key
    /// holding only tombstones is in `tombstones_pending` instead.
    pub siblings_histogram: BTreeMap<usize, u64>,
    /// Remote HLC timestamps the clock refused to follow (more than
    /// `max_drift_ms` ahead); their writes were applied anyway.
    pub drift_refusals: u64,
    /// Writes received twice (ignored).
    pub duplicates: u64,
    /// Writes received ahead of a gap (dropped, asked again).
    pub out_of_order: u64,
    /// Merges where two nodes had given a key different types.
    pub type_conflicts: u64,
    /// Live keys (not only tombstones).
    pub live_keys: u64,
    /// Per origin, the replication lag of its writes applied here since
    /// the node started: this node's physical clock when it applied a
    /// write less the write's HLC physical time (0 when the origin's clock
    /// was ahead). Origins whose writes this node never applied have no
    /// entry.
    pub apply_lag: BTreeMap<NodeId, LagHistogram>,
}
