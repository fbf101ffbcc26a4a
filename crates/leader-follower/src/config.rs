//! The core's settings.

use crate::types::{AckMode, NodeId, ReadMode};

/// Settings of one node's core. Every node of a cluster should use the same
/// timings and defaults; `id` and `peers` differ.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// The other nodes of the cluster (not including `id`).
    pub peers: Vec<NodeId>,
    /// How often a leader sends heartbeats.
    pub heartbeat_interval_ms: u64,
    /// A follower that has not heard from a leader for a random time in
    /// `election_timeout_min_ms..election_timeout_max_ms` starts an
    /// election. A node that heard from a leader less than
    /// `election_timeout_min_ms` ago ignores vote requests, and a leader
    /// that has not heard from a majority for `election_timeout_max_ms`
    /// steps down.
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    pub election_timeout_max_ms: u64,
    /// The cluster's ack mode; a request can override it.
    pub ack: AckMode,
    /// The read mode of gets that do not name one.
    pub default_read: ReadMode,
    /// How long a write waits for its acknowledgement before it is
    /// reported as [`Unknown::TimedOut`](crate::Unknown::TimedOut).
    pub write_timeout_ms: u64,
    /// How long a read waits (for leadership confirmation or for the
    /// replica to apply far enough).
    pub read_timeout_ms: u64,
    /// Flow control: at most this many append messages in flight to one
    /// follower.
    pub max_inflight_msgs: usize,
    /// Flow control: at most this many entries in one append message.
    pub max_batch_entries: usize,
    /// An in-flight window that sees no acknowledgement for this long is
    /// assumed lost and resent from the follower's match index.
    pub retransmit_ms: u64,
    /// Seed of the core's random election timeouts.
    pub seed: u64,
    /// Ask for pre-votes before raising the term for an election (see
    /// [`Core`](crate::Core)). Only the exhaustive model check turns it
    /// off, to keep its state space small: safety never depends on it.
    pub pre_vote: bool,
    /// Detect a crashed leader without waiting for the election timeout.
    /// A follower whose leader has been silent for one and a half
    /// heartbeat intervals asks its driver to probe the leader's address
    /// ([`Output::Probe`](crate::Output::Probe)), once per heartbeat
    /// interval while the silence lasts. A refused probe (nothing listens
    /// there any more: the leader's process died and its host is up) makes
    /// the follower forget the leader and stand for election within one
    /// heartbeat interval ([`Core::peer_gone`](crate::Core::peer_gone)).
    /// A paused, partitioned or powered-off leader refuses nothing, and is
    /// still replaced after the election timeout. Safety never depends on
    /// it: only when an election starts.
    pub probe_leader: bool,
    /// Take a snapshot of the applied key-value view once this many
    /// entries have been applied since the last one (0: never). Once the
    /// snapshot is durable, the log before it (but the last
    /// `snapshot_keep` entries) is dropped from memory and from disk.
    /// Default 100,000 (etcd's `--snapshot-count`): a snapshot writes the
    /// whole state, so taking one too often costs more I/O than the log it
    /// saves; the price of a large value is memory (the core holds the log
    /// since the last snapshot) and replay time at a restart.
    pub snapshot_every: u64,
    /// Entries kept in the log at and below the snapshot's index, so that a
    /// follower only slightly behind still catches up from the log rather
    /// than from the whole snapshot (at most a quarter of
    /// `snapshot_bytes` of them, when that is set).
    pub snapshot_keep: u64,
    /// Take a snapshot also once this many bytes of entries (as encoded)
    /// have been applied since the last one (0: by count only). This is
    /// what bounds the log a node holds in memory, and replays at a
    /// restart, when values are large: about `snapshot_bytes` since the
    /// snapshot, plus a kept tail of at most `snapshot_bytes / 4`, plus
    /// what arrives while a snapshot is written. Default 64 MiB.
    pub snapshot_bytes: u64,
    /// The largest number of snapshot bytes in one
    /// [`PeerMsg::InstallSnapshot`](crate::PeerMsg::InstallSnapshot)
    /// message. The leader sends one chunk at a time to each follower and
    /// waits for its answer, so this bounds what snapshot shipping holds in
    /// flight per follower.
    pub snapshot_chunk_bytes: usize,
    /// The largest peer message, in encoded bytes, the transport accepts
    /// (the driver derives it from the transport's maximum frame, minus
    /// the envelope around a message: see
    /// `mimeo_wire::max_peer_payload`). Appends are cut to fit it (an
    /// append always carries at least one entry), snapshot chunks are at
    /// most this minus their header, and a write whose entry could never
    /// fit in one append is refused with [`Reply::BadRequest`](crate::Reply::BadRequest).
    /// At least [`MIN_MESSAGE_BYTES`].
    pub max_message_bytes: usize,
    /// Whether a node that starts with **no state at all** (no hard state,
    /// no log, no snapshot) founds a new cluster and votes at once. When
    /// false (the default) such a node may be one whose data was lost: it
    /// starts as a learner, which neither votes nor counts towards any
    /// quorum until it has caught up from a leader of the cluster (see
    /// [`Core`](crate::Core)). Set it only for the first start of the
    /// nodes of a brand-new cluster: a node that lost its data and is
    /// restarted with it could help elect a leader that lacks
    /// acknowledged writes. Ignored when the node has state.
    pub bootstrap: bool,
}

/// The smallest [`Config::max_message_bytes`] accepted.
pub const MIN_MESSAGE_BYTES: usize = 1024;

impl Config {
    /// Settings with the defaults below for `id` among `peers`.
    ///
    /// Heartbeats every 50 ms, elections after 300–600 ms of silence,
    /// `quorum` acks, leader reads, 2 s write and read timeouts, 8 messages
    /// of at most 256 entries in flight per follower, retransmission after
    /// 200 ms, seed = `id`, pre-vote and leader probes on, a snapshot every
    /// 100,000 applied entries or 64 MiB of them, keeping 1,000 entries
    /// (at most 16 MiB) of log behind it,
    /// shipped in chunks of 1 MiB, peer messages of at most 4 MiB less
    /// 1 KiB (the wire's default frame less room for its envelope), and
    /// no bootstrap (a node without state starts as a learner).
    pub fn new(id: NodeId, peers: Vec<NodeId>) -> Config {
        Config {
            id,
            peers,
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            ack: AckMode::Quorum,
            default_read: ReadMode::Leader,
            write_timeout_ms: 2_000,
            read_timeout_ms: 2_000,
            max_inflight_msgs: 8,
            max_batch_entries: 256,
            retransmit_ms: 200,
            seed: id,
            pre_vote: true,
            probe_leader: true,
            snapshot_every: 100_000,
            snapshot_keep: 1_000,
            snapshot_bytes: 64 << 20,
            snapshot_chunk_bytes: 1 << 20,
            max_message_bytes: mimeo_wire::DEFAULT_MAX_FRAME - 1024,
            bootstrap: false,
        }
    }

    /// Checks the settings hang together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.peers.contains(&self.id) {
            return Err(ConfigError::SelfInPeers { id: self.id });
        }
        let mut sorted = self.peers.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::DuplicatePeer { id: w[0] });
        }
        if self.heartbeat_interval_ms == 0 {
            return Err(ConfigError::Zero {
                field: "heartbeat_interval_ms",
            });
        }
        if self.max_inflight_msgs == 0 {
            return Err(ConfigError::Zero {
                field: "max_inflight_msgs",
            });
        }
        if self.max_batch_entries == 0 {
            return Err(ConfigError::Zero {
                field: "max_batch_entries",
            });
        }
        if self.snapshot_chunk_bytes == 0 {
            return Err(ConfigError::Zero {
                field: "snapshot_chunk_bytes",
            });
        }
        if self.max_message_bytes < MIN_MESSAGE_BYTES {
            return Err(ConfigError::TooSmall {
                field: "max_message_bytes",
                value: self.max_message_bytes,
                min: MIN_MESSAGE_BYTES,
            });
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
        {
            return Err(ConfigError::ElectionTimeout {
                heartbeat_ms: self.heartbeat_interval_ms,
                min_ms: self.election_timeout_min_ms,
                max_ms: self.election_timeout_max_ms,
            });
        }
        if let AckMode::SemiSync(k) = self.ack {
            if k == 0 || k > self.peers.len() {
                return Err(ConfigError::SemiSync {
                    k,
                    followers: self.peers.len(),
                });
            }
        }
        if let crate::ReadMode::Session { .. } = self.default_read {
            return Err(ConfigError::SessionDefault);
        }
        Ok(())
    }

    /// The number of nodes that make a majority of the cluster.
    pub fn majority(&self) -> usize {
        let cluster = self.peers.len() + 1;
        cluster / 2 + 1
    }
}

/// A [`Config`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `peers` lists the node itself.
    #[error("peers lists this node's own id {id}; list only the other nodes")]
    SelfInPeers {
        /// The id.
        id: NodeId,
    },
    /// `peers` lists a node twice.
    #[error("peers lists node {id} twice")]
    DuplicatePeer {
        /// The id.
        id: NodeId,
    },
    /// A setting that must be positive is zero.
    #[error("{field} must be greater than zero")]
    Zero {
        /// The setting.
        field: &'static str,
    },
    /// A setting is below its minimum.
    #[error("{field} is {value}, below its minimum of {min}")]
    TooSmall {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: usize,
        /// The least value that works.
        min: usize,
    },
    /// The election timeouts do not satisfy heartbeat < min < max.
    #[error(
        "election timeouts must satisfy heartbeat_interval_ms ({heartbeat_ms}) < \
         election_timeout_min_ms ({min_ms}) < election_timeout_max_ms ({max_ms})"
    )]
    ElectionTimeout {
        /// heartbeat_interval_ms.
        heartbeat_ms: u64,
        /// election_timeout_min_ms.
        min_ms: u64,
        /// election_timeout_max_ms.
        max_ms: u64,
    },
    /// `semi-sync:K` with K outside 1..=followers.
    #[error("ack mode semi-sync:{k} needs 1 <= K <= the number of followers ({followers})")]
    SemiSync {
        /// K.
        k: usize,
        /// The number of followers.
        followers: usize,
    },
    /// A session read needs a position, so it cannot be the default.
    #[error("default_read cannot be `session`: a session read needs the client's position")]
    SessionDefault,
}
