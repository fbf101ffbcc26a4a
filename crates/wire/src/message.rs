//! The messages of the three protocols. Every type here is encoded with
//! postcard; variants are only ever appended, and a change that breaks the
//! encoding bumps [`PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

/// The version carried in every hello. A node refuses a hello with any other
/// version, so mixed-version clusters fail loudly instead of misreading bytes.
///
/// Version 3: leader-follower peer messages (the payload of a
/// [`PeerMessage`]) say whether the sender votes (`AppendResp`,
/// `HeartbeatResp`) and whether the leader's commit index is of its term
/// (`Heartbeat`).
///
/// Version 4: the leader-follower `Heartbeat` carries the leader's send
/// time (`sent_at`, on the leader's clock), which followers measure their
/// staleness from.
///
/// Version 5: multi-leader requests and responses, appended at the end of
/// [`ClientRequest`] (`GetVersioned`, `PutVersioned`, `Increment`,
/// `SetAdd`, `SetRemove`) and [`ClientResponse`] (`Versioned`,
/// `WrittenVersioned`), every earlier message keeping its encoding; and
/// [`NodeStatus`] carries its mode, role and fsync policy as enums
/// ([`NodeMode`], [`NodeRole`], [`FsyncPolicy`]) instead of strings.
/// Version 5 is not released yet, so variants appended since stay in it
/// (each pinned by a test of its bytes): the leaderless `WithQuorum` and
/// `LeaderlessStatus`, then `MultiLeaderStatus` (a request and its
/// response). A node of an earlier build of version 5 answers a request
/// it does not know as malformed; nothing existing changes.
pub const PROTOCOL_VERSION: u32 = 5;

/// The protocol a connection speaks after its hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// Reads and writes from applications: [`ClientRequest`] / [`ClientResponse`].
    Client,
    /// Replication traffic between nodes: [`PeerMessage`].
    Peer,
    /// Status and fault injection: [`AdminRequest`] / [`AdminResponse`].
    Admin,
}

/// The first message on every connection, sent by the side that connects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The cluster the sender believes it is talking to.
    pub cluster_id: String,
    /// The protocol the connection will speak.
    pub protocol: Protocol,
}

/// The node's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The connection may proceed.
    Accepted {
        /// The id of the node that accepted.
        node_id: String,
    },
    /// The connection is refused and will be closed.
    Refused {
        /// Why, in a form programs can match on.
        reason: RefusalReason,
        /// Why, for people.
        message: String,
    },
}

/// Why a hello was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefusalReason {
    /// The peers speak different protocol versions.
    VersionMismatch,
    /// The peer belongs to another cluster.
    ClusterMismatch,
    /// The peer's certificate does not allow the requested protocol.
    Forbidden,
    /// The hello could not be decoded.
    Malformed,
}

/// A position in a replicated log: the term of the leader that wrote it and
/// its index (1-based; index 0 means "nothing yet"). Ordered by term, then
/// index.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    /// The leader term that wrote the entry (0 for standalone nodes).
    pub term: u64,
    /// The entry's index in the log.
    pub index: u64,
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadConsistency {
    /// Whatever the node is configured to give by default.
    #[default]
    Default,
    /// Linearizable: answered by a leader that has confirmed it still leads.
    Leader,
    /// Any replica's local state, possibly stale.
    Follower {
        /// Refuse the read when the replica is more than this far behind
        /// (`None`: no bound).
        max_staleness_ms: Option<u64>,
    },
    /// Read-your-writes and monotonic reads: answer only once the replica
    /// has applied at least `after`.
    Session {
        /// The position of the session's last write or read.
        after: Position,
    },
}

/// How many durable copies a write needs before the node acknowledges it,
/// for one request (`None` in a request: the cluster's setting). Written
/// and parsed as `async`, `semi-sync:K`, `quorum` or `all`.
///
/// A standalone node is its own leader with no followers: `async`,
/// `quorum` and `all` are met by its own fsync policy, `semi-sync:K` is
/// refused as a bad request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WriteAck {
    /// The leader holds it durably.
    Async,
    /// The leader and K followers hold it durably.
    SemiSync(u32),
    /// A majority of the cluster (the leader included) holds it durably.
    Quorum,
    /// Every member holds it durably.
    All,
}

impl std::fmt::Display for WriteAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteAck::Async => f.write_str("async"),
            WriteAck::SemiSync(k) => write!(f, "semi-sync:{k}"),
            WriteAck::Quorum => f.write_str("quorum"),
            WriteAck::All => f.write_str("all"),
        }
    }
}

impl std::str::FromStr for WriteAck {
    type Err = String;

    fn from_str(s: &str) -> Result<WriteAck, String> {
        match s {
            "async" => Ok(WriteAck::Async),
            "quorum" => Ok(WriteAck::Quorum),
            "all" => Ok(WriteAck::All),
            other => {
                let k = other.strip_prefix("semi-sync:").ok_or_else(|| {
                    format!(
                        "unknown ack mode '{other}'; expected async, semi-sync:K, quorum or all"
                    )
                })?;
                match k.parse::<u32>() {
                    Ok(k) if k > 0 => Ok(WriteAck::SemiSync(k)),
                    _ => Err(format!(
                        "'{other}': K in semi-sync:K must be a whole number of followers, at least 1"
                    )),
                }
            }
        }
    }
}

/// A request on the client protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Read a key.
    Get {
        /// The key.
        key: Vec<u8>,
        /// How fresh the answer must be.
        consistency: ReadConsistency,
    },
    /// Write a value.
    Put {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Overrides the cluster's acknowledgement mode for this write.
        ack: Option<WriteAck>,
    },
    /// Delete a key (deleting an absent key succeeds).
    Delete {
        /// The key.
        key: Vec<u8>,
        /// Overrides the cluster's acknowledgement mode for this write.
        ack: Option<WriteAck>,
    },
    /// Write `new` only if the current value is `expected` (`None`: absent).
    Cas {
        /// The key.
        key: Vec<u8>,
        /// The value the key must hold.
        expected: Option<Vec<u8>>,
        /// The value to write.
        new: Vec<u8>,
        /// Overrides the cluster's acknowledgement mode for this write.
        ack: Option<WriteAck>,
    },
    /// The node's status.
    Status,
    /// Multi-leader: read a key from the asked node, with every concurrent
    /// value (sibling) and the context to write back with.
    GetVersioned {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// A session token (from an earlier reply): wait, at most
        /// `timeout_ms`, until the node has applied it.
        after: Option<Vec<u8>>,
        /// How long to wait for `after` (`None`: the node's setting).
        timeout_ms: Option<u64>,
    },
    /// Multi-leader: write a value (`None`: delete) superseding the values
    /// the read with `context` saw (`None`: a blind write, which
    /// supersedes nothing).
    PutVersioned {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The value; `None` deletes.
        value: Option<Vec<u8>>,
        /// The context token of the read this write follows.
        context: Option<Vec<u8>>,
        /// Overrides the cluster's acknowledgement mode for this write.
        ack: Option<WriteAck>,
    },
    /// Multi-leader: add `delta` (may be negative) to a counter.
    Increment {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The change.
        delta: i64,
        /// Overrides the cluster's acknowledgement mode for this write.
        ack: Option<WriteAck>,
    },
    /// Multi-leader: add an element to a set.
    SetAdd {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The element.
        #[serde(with = "serde_bytes")]
        element: Vec<u8>,
        /// Overrides the cluster's acknowledgement mode for this write.
        ack: Option<WriteAck>,
    },
    /// Multi-leader: remove an element from a set (the adds the node has seen).
    SetRemove {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The element.
        #[serde(with = "serde_bytes")]
        element: Vec<u8>,
        /// Overrides the cluster's acknowledgement mode for this write.
        ack: Option<WriteAck>,
    },
    /// Leaderless: `request` (a `Get`, `Put`, `Delete`, `GetVersioned`,
    /// `PutVersioned`, `Increment`, `SetAdd` or `SetRemove`) with
    /// per-request quorums; the answer is `request`'s. Any other request
    /// inside, and this request on a node of another mode, is refused.
    WithQuorum {
        /// The quorums; `None` fields take the cluster's defaults.
        quorum: QuorumOverride,
        /// The request.
        request: Box<ClientRequest>,
    },
    /// Leaderless: the asked node's ring, hints and anti-entropy
    /// ([`ClientResponse::LeaderlessStatus`]).
    LeaderlessStatus,
    /// Multi-leader: the asked node's applied vector, lag per origin,
    /// tombstones, siblings and clock refusals
    /// ([`ClientResponse::MultiLeaderStatus`]).
    MultiLeaderStatus,
    /// Leaderless, diagnostic: the asked node's *own* copy of a key, read
    /// from its local state without coordinating (no quorum, no read
    /// repair, nothing sent to another node), answered with
    /// [`ClientResponse::LocalRead`]. It shows where each replica stands,
    /// which is what a convergence check needs (the harness reads every
    /// replica of every key after a heal); applications read with `Get` or
    /// `GetVersioned`, which coordinate a quorum.
    LocalRead {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

/// Leaderless per-request quorums ([`ClientRequest::WithQuorum`]); `None`
/// takes the cluster's setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumOverride {
    /// Replicas that must receive a write.
    pub w: Option<u32>,
    /// Replicas whose answers a read merges.
    pub r: Option<u32>,
    /// Of the `w`, primary owners.
    pub pw: Option<u32>,
    /// Of the `r`, primary owners.
    pub pr: Option<u32>,
    /// Of the `w`, replicas holding the write durably.
    pub dw: Option<u32>,
}

/// One range of a leaderless ring ([`LeaderlessStatus::ring`]): the keys
/// whose ring position is in `start..=end` live on `replicas` (primary
/// first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingRange {
    /// The first position (XXH3-64 of the key).
    pub start: u64,
    /// The last position.
    pub end: u64,
    /// The range's preference list.
    pub replicas: Vec<String>,
}

/// What a leaderless node reports beyond [`NodeStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderlessStatus {
    /// Replicas per key.
    pub n: u32,
    /// The ring, range by range in position order (ranges next to each
    /// other with the same replicas merged).
    pub ring: Vec<RingRange>,
    /// Per node, the share of the key space it replicates, in millionths.
    pub shares: Vec<(String, u32)>,
    /// Per owner, the hints this node holds for it: (owner, hints, bytes).
    pub hints: Vec<(String, u64, u64)>,
    /// Per peer, how long ago this node last completed an anti-entropy
    /// exchange with it, in ms (`None`: never since it started).
    pub exchanges: Vec<(String, Option<u64>)>,
    /// Counters since the node started (read repairs, hints stored,
    /// delivered and expired, anti-entropy exchanges, segments, keys and
    /// bytes...), by name.
    pub counters: Vec<(String, u64)>,
}

/// How far a multi-leader node has applied one origin's writes
/// ([`MultiLeaderStatus::origins`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginStatus {
    /// The origin (a node id; the asked node among them).
    pub origin: String,
    /// The origin's writes applied here (a contiguous prefix of its
    /// sequence): this node's applied vector at the origin.
    pub applied: u64,
    /// Writes of the origin that exist (some node reported them) and are
    /// not applied here.
    pub behind_writes: u64,
    /// Milliseconds from the HLC time of the latest write of the origin
    /// applied here to this node's clock now (0: none applied, or the
    /// origin's clock is ahead).
    pub behind_ms: u64,
}

/// What a multi-leader node reports beyond [`NodeStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiLeaderStatus {
    /// Per origin of the cluster, in node-id order, how far this node has
    /// applied its writes.
    pub origins: Vec<OriginStatus>,
    /// Keys holding only tombstones, waiting until every node has them to
    /// be collected.
    pub tombstones_pending: u64,
    /// Bytes those tombstones hold (bounded by `max_tombstone_bytes`).
    pub tombstone_bytes: u64,
    /// Siblings per key (`conflicts = "siblings"`): (sibling count, keys
    /// with that many), by count.
    pub siblings: Vec<(u64, u64)>,
    /// Remote HLC timestamps the clock refused to follow (more than
    /// `max_drift_ms` ahead of it); their writes were applied anyway.
    pub drift_refusals: u64,
    /// Other counters since the node started (tombstones collected,
    /// duplicate and out-of-order writes, type conflicts, writes waiting
    /// for acknowledgements...), by name.
    pub counters: Vec<(String, u64)>,
}

/// What a multi-leader read found ([`ClientResponse::Versioned`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionedValue {
    /// Nothing (never written, or deleted and collected).
    Absent,
    /// A value key: every concurrent value (under last-writer-wins, at most
    /// one).
    Register {
        /// The live values (siblings).
        values: Vec<Vec<u8>>,
        /// Whether a delete is among the concurrent writes.
        deleted: bool,
        /// The context token to pass with the next write (opaque; empty
        /// under last-writer-wins).
        context: Vec<u8>,
    },
    /// A counter's value.
    Counter(i128),
    /// A set's members, in order.
    Set(Vec<Vec<u8>>),
}

/// A response on the client protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// The answer to a get.
    Value {
        /// The value, `None` when the key is absent.
        value: Option<Vec<u8>>,
        /// The log position of the version read (0/0 when never written).
        position: Position,
    },
    /// A put, delete or cas took effect durably at `position`.
    Written {
        /// Where the write landed in the log.
        position: Position,
    },
    /// A cas found another value; nothing was written.
    CasMismatch {
        /// The value found (`None`: absent).
        current: Option<Vec<u8>>,
    },
    /// The node's status.
    Status(NodeStatus),
    /// This node cannot serve the request; try the leader.
    Redirect {
        /// The leader's client address, when known.
        leader: Option<String>,
    },
    /// The request failed; `kind` says whether it may have taken effect.
    Error {
        /// The class of failure.
        kind: ErrorKind,
        /// What happened, for people.
        message: String,
    },
    /// Multi-leader: the answer to a `GetVersioned`.
    Versioned {
        /// What the node holds.
        value: VersionedValue,
        /// The session token: what the node had applied (pass it as
        /// `after` for read-your-writes on any node).
        session: Vec<u8>,
    },
    /// Multi-leader: a write took effect, durably on as many nodes as its
    /// ack mode asked.
    WrittenVersioned {
        /// The node that took it (the write's origin).
        origin: String,
        /// Its sequence number at the origin.
        seq: u64,
        /// Under siblings, the key's context after the write (a later
        /// write with it supersedes this one).
        context: Option<Vec<u8>>,
        /// The session token: what the node had applied after the write.
        session: Vec<u8>,
    },
    /// Leaderless: the answer to a `LeaderlessStatus`.
    LeaderlessStatus(LeaderlessStatus),
    /// Multi-leader: the answer to a `MultiLeaderStatus`.
    MultiLeaderStatus(MultiLeaderStatus),
    /// Leaderless: the answer to a `LocalRead`.
    LocalRead {
        /// The key's preference list (its `n` replicas, primary first).
        replicas: Vec<String>,
        /// The asked node's own copy of the key ([`VersionedValue::Absent`]
        /// when it holds none), or `None` when the asked node is not one of
        /// `replicas` (it holds no copy of its own; ask one of them).
        value: Option<VersionedValue>,
    },
}

/// The class of a failed request. The distinction that matters to callers is
/// [`ErrorKind::is_definite`]: did the request certainly not take effect?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request was invalid (empty key, malformed frame...). Not applied.
    BadRequest,
    /// A key, value or frame exceeded a configured limit. Not applied.
    TooLarge,
    /// The node cannot serve this now (no quorum, shutting down...). Not
    /// applied.
    Unavailable,
    /// The node gave up waiting (for peers, for the disk). May be applied.
    Timeout,
    /// A bug or unexpected condition in the node. May be applied.
    Internal,
    /// The storage engine failed (for example an fsync error) after the
    /// write may have reached the log. May be applied.
    StorageFailed,
}

impl ErrorKind {
    /// True when a request that failed with this kind certainly did not take
    /// effect, so it is safe to retry.
    pub fn is_definite(self) -> bool {
        match self {
            ErrorKind::BadRequest | ErrorKind::TooLarge | ErrorKind::Unavailable => true,
            ErrorKind::Timeout | ErrorKind::Internal | ErrorKind::StorageFailed => false,
        }
    }
}

/// What a node reports about itself (`mimeo status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub node_id: String,
    /// The cluster it belongs to.
    pub cluster_id: String,
    /// The replication mode.
    pub mode: NodeMode,
    /// The node's current role in that mode.
    pub role: NodeRole,
    /// The current term (0 when the mode has none).
    pub term: u64,
    /// The last entry in the node's log.
    pub last_position: Position,
    /// The highest index known to be committed.
    pub commit_index: u64,
    /// The highest index known to be on disk.
    pub durable_index: u64,
    /// Keys with a live value.
    pub live_keys: u64,
    /// Milliseconds since the node started.
    pub uptime_ms: u64,
    /// The offset injected into the node's clock, in milliseconds.
    pub clock_offset_ms: i64,
    /// The fsync policy of the node's storage.
    pub fsync: FsyncPolicy,
    /// What the node knows of its peers.
    pub peers: Vec<PeerStatus>,
}

/// Implements `Display` (padding honoured, for tables) with the same
/// lower-case names serde writes to JSON.
macro_rules! named_enum {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The name shown by `mimeo status` and written to its JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

/// A node's replication mode, as reported in its [`NodeStatus`]. In JSON
/// (`mimeo status --json`) it is written as the name the node's
/// configuration uses: `standalone` or `leader-follower`.
///
/// On the wire (postcard) a variant is its index: variants are only ever
/// appended, and a new one needs a [`PROTOCOL_VERSION`] step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum NodeMode {
    /// One node, no replication.
    Standalone,
    /// One leader per term streams its log to followers.
    LeaderFollower,
    /// Every node takes writes and streams them to the others.
    MultiLeader,
    /// Any node coordinates; each key lives on N nodes of a hash ring.
    Leaderless,
}

named_enum!(NodeMode {
    Standalone => "standalone",
    LeaderFollower => "leader-follower",
    MultiLeader => "multi-leader",
    Leaderless => "leaderless",
});

/// A node's role in its mode, as reported in its [`NodeStatus`]. In JSON
/// it is written in lower case (`leader`, `follower`...).
///
/// On the wire (postcard) a variant is its index: variants are only ever
/// appended, and a new one needs a [`PROTOCOL_VERSION`] step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum NodeRole {
    /// A standalone node: it serves everything itself.
    Standalone,
    /// Leads its term (leader-follower).
    Leader,
    /// Asks for votes (leader-follower).
    Candidate,
    /// Follows a leader, or waits for one (leader-follower).
    Follower,
    /// Follows a leader but neither votes nor counts towards a quorum yet
    /// (leader-follower).
    Learner,
    /// Takes writes of its own and applies every other node's
    /// (multi-leader: every node has this role).
    Origin,
    /// Holds the keys the ring gives it and coordinates any request
    /// (leaderless: every node has this role).
    Replica,
}

named_enum!(NodeRole {
    Standalone => "standalone",
    Leader => "leader",
    Candidate => "candidate",
    Follower => "follower",
    Learner => "learner",
    Origin => "origin",
    Replica => "replica",
});

/// When a node's storage fsyncs its log, as reported in its
/// [`NodeStatus`]; the names (`always`, `batch`, `never`) are the
/// configuration's `storage.fsync` values.
///
/// On the wire (postcard) a variant is its index: variants are only ever
/// appended, and a new one needs a [`PROTOCOL_VERSION`] step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncPolicy {
    /// Every append is fsynced before it returns.
    Always,
    /// Group commit: concurrent writers share fsyncs.
    Batch,
    /// No fsync on the write path (a power cut can lose acknowledged writes).
    Never,
}

named_enum!(FsyncPolicy {
    Always => "always",
    Batch => "batch",
    Never => "never",
});

/// One peer as seen from a node (replication lag lives here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's id.
    pub node_id: String,
    /// The address the node reaches it at.
    pub address: String,
    /// The highest index known to match on the peer.
    pub match_index: u64,
    /// Entries the peer is behind.
    pub lag_entries: u64,
    /// How long ago the peer last matched the leader's last entry, in ms.
    pub lag_ms: u64,
    /// Whether a connection to the peer is up.
    pub connected: bool,
}

/// A request on the admin protocol (admin certificates only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// The node's status.
    Status,
    /// Shift the node's clock by `offset_ms` from the system clock.
    SetClockOffset {
        /// Milliseconds to add to the system clock (may be negative).
        offset_ms: i64,
    },
    /// Shut down cleanly, as on SIGTERM.
    Shutdown,
}

/// A response on the admin protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminResponse {
    /// The node's status.
    Status(NodeStatus),
    /// The request was carried out.
    Ok,
    /// The request failed.
    Error {
        /// The class of failure.
        kind: ErrorKind,
        /// What happened, for people.
        message: String,
    },
}

/// A message between nodes. The payload is the replicator's own encoding;
/// the envelope names the sender so one stream can carry many messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMessage {
    /// The sending node's id.
    pub from: String,
    /// The replicator's message, postcard-encoded by the replicator
    /// (serialized as bytes: the same encoding as a sequence of `u8`, copied
    /// whole rather than byte by byte).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// A response type that can carry an error, so a server can answer a request
/// it could not decode instead of silently dropping it.
pub trait ErrorReply {
    /// The response reporting `kind` with `message`.
    fn error_reply(kind: ErrorKind, message: String) -> Self;
}

impl ErrorReply for ClientResponse {
    fn error_reply(kind: ErrorKind, message: String) -> Self {
        ClientResponse::Error { kind, message }
    }
}

impl ErrorReply for AdminResponse {
    fn error_reply(kind: ErrorKind, message: String) -> Self {
        AdminResponse::Error { kind, message }
    }
}
