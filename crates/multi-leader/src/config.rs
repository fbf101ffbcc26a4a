//! Cluster and node settings.

use std::time::Duration;

use mimeo_causality::{NodeId, SiblingLimits};
use serde::{Deserialize, Serialize};

/// How concurrent writes to one key are resolved (one setting for the
/// whole cluster: every node must use the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Policy {
    /// Last writer wins: the write with the largest HLC timestamp (node id
    /// breaking ties) is kept, the others are silently dropped. Cheap; loses
    /// concurrent writes, and under clock skew can keep the write that
    /// happened first in real time.
    Lww,
    /// Keep every concurrent value (a [`DvvSet`](mimeo_causality::DvvSet)
    /// per key): reads return all siblings and a causal context; a write
    /// with that context supersedes exactly what the read saw.
    Siblings,
}

/// When a write is acknowledged to its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AckMode {
    /// When the origin (the node that took the write) has it durably.
    /// A write lost with the origin's disk before it was shipped is lost.
    Local,
    /// When a majority of the cluster's nodes have it durably.
    Quorum,
    /// When every node has it durably (waits for partitioned nodes).
    All,
}

impl AckMode {
    /// How many nodes of a cluster of `n` must hold a write durably.
    pub fn required(self, n: usize) -> usize {
        match self {
            AckMode::Local => 1,
            AckMode::Quorum => n / 2 + 1,
            AckMode::All => n,
        }
    }
}

/// Test-only ways to break the core on purpose, so that the simulation's
/// invariants can be shown to reject a broken core. Not part of the API.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Sabotage {
    /// Apply a remote write by replacing the key's state instead of
    /// merging it (breaks convergence).
    ReplaceOnApply,
    /// LWW keeps the smaller timestamp (breaks the LWW winner).
    LwwKeepsSmallest,
    /// A sibling write supersedes every sibling, not just those its
    /// context covers (loses acknowledged writes).
    IgnoreContext,
    /// `restore` does not restore the clock (breaks HLC monotonicity
    /// across restarts when the physical clock went back).
    ForgetClock,
    /// Collect a tombstone as soon as the key holds only tombstones
    /// locally (resurrects deleted values).
    CollectEarly,
}

/// A node's configuration. Every node of a cluster must agree on `nodes`
/// and `policy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Every node of the cluster, this one included.
    pub nodes: Vec<NodeId>,
    /// The conflict policy for plain values.
    pub policy: Policy,
    /// The default ack mode (a request may override it).
    pub acks: AckMode,
    /// How far ahead of the local physical clock a remote HLC timestamp
    /// may be before the clock refuses to follow it (the write is applied
    /// anyway and the refusal counted; see [`Core`](crate::Core)).
    pub max_drift_ms: u64,
    /// The in-memory log of recent writes (all origins), in bytes; older
    /// writes are read back from storage with [`Output::Load`](crate::Output::Load).
    pub log_bytes: usize,
    /// Writes sent to one peer and not yet acknowledged, at most.
    pub max_inflight_entries: usize,
    /// Bytes sent to one peer and not yet acknowledged, at most (one
    /// write is always allowed, however large).
    pub max_inflight_bytes: usize,
    /// Writes per message, at most.
    pub max_batch_entries: usize,
    /// How often a node tells every peer its vectors (catch-up requests
    /// and durability acknowledgements), in ms.
    pub status_interval_ms: u64,
    /// How long unacknowledged writes to a peer wait before they are sent
    /// again, in ms.
    pub retransmit_ms: u64,
    /// Session reads waiting for replication, at most; more are refused.
    pub max_waiting_reads: usize,
    /// Default session read timeout, in ms.
    pub read_timeout_ms: u64,
    /// Sibling cap (siblings policy).
    pub sibling_limits: SiblingLimits,
    /// Local writes waiting for their acknowledgements, in bytes (their
    /// replies and bookkeeping); a write beyond it is refused
    /// ([`ClientError::AcksFull`](crate::ClientError::AcksFull)).
    pub max_pending_ack_bytes: usize,
    /// Keys holding only tombstones and waiting to be collected, in bytes
    /// (key, record and stability bookkeeping); a local delete beyond it
    /// is refused ([`ClientError::TombstonesFull`](crate::ClientError::TombstonesFull)).
    /// Replicated deletes are always applied (refusing them would stop
    /// their origin's stream), so a replica may exceed it by what the
    /// other nodes accepted.
    pub max_tombstone_bytes: usize,
    /// The largest write, in bytes ([`Write::approx_bytes`](crate::Write::approx_bytes):
    /// the key's whole state after it, every sibling included); a write
    /// beyond it is refused ([`ClientError::WriteTooLarge`](crate::ClientError::WriteTooLarge)).
    /// A driver sets it below what one peer message can carry: a write
    /// that could not be shipped would stop its origin's stream.
    pub max_write_bytes: usize,
    /// The incarnation a node with **no durable state** starts (0: none,
    /// see [`Config::fresh_actor`]). A driver sets it to the wall clock in
    /// microseconds when it opens an empty data directory, so that a node
    /// whose disk was wiped never mints the dots of its lost incarnation;
    /// a node restored from its state keeps the actor it recorded.
    pub fresh_epoch: u64,
    #[doc(hidden)]
    pub sabotage: Option<Sabotage>,
}

impl Config {
    /// A configuration with the defaults: `siblings`, acks `local`,
    /// max drift 500 ms, an 8 MiB memory log, 256 writes / 1 MiB in flight
    /// per peer, batches of 64, status every 100 ms, retransmit after 300 ms,
    /// 16 MiB of pending acknowledgements, 64 MiB of pending tombstones.
    pub fn new(
        id: impl Into<NodeId>,
        nodes: impl IntoIterator<Item = impl Into<NodeId>>,
    ) -> Config {
        Config {
            id: id.into(),
            nodes: nodes.into_iter().map(Into::into).collect(),
            policy: Policy::Siblings,
            acks: AckMode::Local,
            max_drift_ms: 500,
            log_bytes: 8 << 20,
            max_inflight_entries: 256,
            max_inflight_bytes: 1 << 20,
            max_batch_entries: 64,
            status_interval_ms: 100,
            retransmit_ms: 300,
            max_waiting_reads: 1024,
            read_timeout_ms: 1000,
            sibling_limits: SiblingLimits::default(),
            max_pending_ack_bytes: 16 << 20,
            max_tombstone_bytes: 64 << 20,
            max_write_bytes: 2 << 20,
            fresh_epoch: 0,
            sabotage: None,
        }
    }

    /// The actor id a node with no durable state writes as: `<id>.<epoch>`
    /// for a [`fresh_epoch`](Config::fresh_epoch) above 0, the plain id
    /// otherwise (which only a node that never wrote before, under any
    /// incarnation, may use: a core without a driver, in tests).
    pub fn fresh_actor(&self) -> NodeId {
        if self.fresh_epoch == 0 {
            self.id.clone()
        } else {
            NodeId::new(format!("{}.{}", self.id, self.fresh_epoch))
        }
    }

    /// The member an origin (actor) id belongs to, and its incarnation:
    /// `n1` is `n1`'s first incarnation (0: a data directory written
    /// before incarnations existed), `n1.<epoch>` a later one. `None`: no
    /// member of [`nodes`](Config::nodes) has it.
    pub fn member_of(&self, origin: &str) -> Option<(&NodeId, u64)> {
        self.nodes.iter().find_map(|node| {
            let rest = origin.strip_prefix(node.as_str())?;
            if rest.is_empty() {
                return Some((node, 0));
            }
            let epoch = rest.strip_prefix('.')?;
            if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            epoch.parse().ok().map(|e| (node, e))
        })
    }

    /// The maximum drift as a duration.
    pub fn max_drift(&self) -> Duration {
        Duration::from_millis(self.max_drift_ms)
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.nodes.contains(&self.id) {
            return Err(ConfigError::NotAMember {
                id: self.id.clone(),
            });
        }
        let mut sorted = self.nodes.clone();
        sorted.sort();
        if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::Duplicate {
                id: pair[0].clone(),
            });
        }
        // `n1.5` would read as an incarnation of `n1` ([`Config::member_of`]).
        for id in &self.nodes {
            if let Some((node, _)) = self.member_of(id.as_str()).filter(|(n, _)| *n != id) {
                return Err(ConfigError::LooksLikeIncarnation {
                    id: id.clone(),
                    node: node.clone(),
                });
            }
        }
        for (field, value) in [
            ("max_inflight_entries", self.max_inflight_entries as u64),
            ("max_batch_entries", self.max_batch_entries as u64),
            ("status_interval_ms", self.status_interval_ms),
            ("retransmit_ms", self.retransmit_ms),
            ("max_pending_ack_bytes", self.max_pending_ack_bytes as u64),
            ("max_tombstone_bytes", self.max_tombstone_bytes as u64),
            ("max_write_bytes", self.max_write_bytes as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { field });
            }
        }
        Ok(())
    }
}

/// A configuration the core cannot run with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `id` is not in `nodes`.
    #[error("node id {id} is not in `nodes`; list every node of the cluster, this one included")]
    NotAMember {
        /// The node's id.
        id: NodeId,
    },
    /// A node is listed twice.
    #[error("node {id} is listed twice in `nodes`")]
    Duplicate {
        /// The repeated id.
        id: NodeId,
    },
    /// A node id reads as an incarnation of another's (`n1.5` beside `n1`).
    #[error("node id {id} reads as an incarnation of node {node} (`<id>.<number>` names a node's incarnation): rename it")]
    LooksLikeIncarnation {
        /// The ambiguous id.
        id: NodeId,
        /// The node it reads as an incarnation of.
        node: NodeId,
    },
    /// A field that must be positive is 0.
    #[error("`{field}` is 0; it must be at least 1")]
    Zero {
        /// The field.
        field: &'static str,
    },
}
