//! The values the core takes and gives: time, ids, log entries, client
//! operations and their replies.

use mimeo_storage::{LogPosition, Mutation, Record, RecordMeta};
use serde::{Deserialize, Serialize};

/// A node's id within the cluster.
pub type NodeId = u64;

/// The driver's id for one client request; the core echoes it in the reply.
pub type RequestId = u64;

/// A point in time: milliseconds since an origin the driver chooses (its
/// start, usually). The core never reads a clock; every input carries the
/// time, so a simulation can drive it with a fake one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + ms`, saturating.
    pub const fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self` (0 when `earlier` is later).
    pub const fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// What the durable part of a node's state is besides its log: Raft's
/// "hard state". The driver must make it durable before it performs any
/// output that follows the [`Output::Persist`](crate::Output::Persist) that
/// carries it.
///
/// The default is a node with no state: term 0, no vote, not a voter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: u64,
    /// The candidate this node voted for in `term`, if any.
    pub voted_for: Option<NodeId>,
    /// Whether this node votes and counts towards quorums. A node that
    /// founded the cluster ([`Config::bootstrap`](crate::Config::bootstrap))
    /// is one from the start; a node that started with no state otherwise
    /// (new, or its data lost) is a **learner** until it has caught up from
    /// a leader (see [`Core`](crate::Core)). Hard states written before
    /// this field existed read as `true`: those nodes voted.
    #[serde(default = "voter_by_default")]
    pub voter: bool,
}

/// Hard states of earlier builds, without `voter`, were voters'.
fn voter_by_default() -> bool {
    true
}

/// What a log entry does when applied.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Command {
    /// Nothing: the entry a new leader appends at the start of its term, so
    /// that entries of earlier terms can commit (Raft §5.4.2).
    Noop,
    /// Set `key` to `value`.
    Put {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The value (serialized as bytes: the same encoding as a sequence
        /// of `u8`, copied whole rather than byte by byte).
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Delete `key` (leaving a tombstone).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogEntry {
    /// The term of the leader that created it, and its index.
    pub position: LogPosition,
    /// What it does.
    pub command: Command,
}

/// The key every entry is stored under in a [`Record`]: the empty key,
/// which clients may not use (the core refuses it with
/// [`Reply::BadRequest`]). The record's value is the entry's [`Command`]
/// (postcard). With one key, the store's own key index and the snapshot
/// its compaction writes hold one entry, not a second copy of the state:
/// the replicated state lives in the core and in its [`Snapshot`]s.
///
/// Builds before this layout stored a put or delete under its own key and
/// a noop as a delete of this key; [`LogEntry::from_record`] reads both.
///
/// [`Snapshot`]: crate::Snapshot
pub const RECORD_KEY: &[u8] = b"";

impl LogEntry {
    /// The storage record for this entry, under [`RECORD_KEY`]. `origin` is
    /// the node that appends it (kept for information only;
    /// leader-follower does not use it).
    pub fn to_record(&self, origin: NodeId) -> Record {
        Record {
            meta: RecordMeta {
                position: self.position,
                origin,
                seq: self.position.index,
                version: Vec::new(),
            },
            mutation: Mutation::Put {
                key: RECORD_KEY.to_vec(),
                value: postcard::to_allocvec(&self.command).expect("commands serialize"),
            },
        }
    }

    /// The entry a storage record holds (the inverse of
    /// [`LogEntry::to_record`], and of the layout of earlier builds). Fails
    /// when the command under [`RECORD_KEY`] cannot be decoded: a record
    /// written by a newer build, or damage the store's checksums missed.
    pub fn from_record(record: &Record) -> Result<LogEntry, postcard::Error> {
        let command = match &record.mutation {
            Mutation::Put { key, value } if key.as_slice() == RECORD_KEY => {
                postcard::from_bytes(value)?
            }
            // The layout of earlier builds.
            Mutation::Delete { key } if key.as_slice() == RECORD_KEY => Command::Noop,
            Mutation::Put { key, value } => Command::Put {
                key: key.clone(),
                value: value.clone(),
            },
            Mutation::Delete { key } => Command::Delete { key: key.clone() },
        };
        Ok(LogEntry {
            position: record.meta.position,
            command,
        })
    }
}

/// When a write is acknowledged to its client. All modes replicate the
/// write to every follower; they differ only in how long the client waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AckMode {
    /// Once the leader has it durably. **May be lost** if the leader fails
    /// before a majority has it: a new leader will not have it, and the old
    /// leader rolls it back when it rejoins.
    Async,
    /// Once the leader and at least `K` followers have it durably. May be
    /// lost when `K + 1` is less than a majority.
    SemiSync(usize),
    /// Once a majority of the nodes has it durably, i.e. once it is
    /// committed. Never lost. The leader counts towards the majority once
    /// its own fsync is done, but is not required in it: as in Raft, a
    /// majority of the nodes made of followers alone (two of three, three
    /// of five) commits the entry, since any future leader must hold it.
    Quorum,
    /// Once every node has it durably (and it is committed). Never lost;
    /// waits for the slowest node, and times out while any node is down.
    All,
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadMode {
    /// Linearizable: served by the leader after it has confirmed, with a
    /// heartbeat round answered by a majority, that it still leads, and
    /// once it has applied every entry committed or acknowledged before
    /// the read arrived.
    Leader,
    /// Whatever this replica has applied, possibly stale. With a bound, the
    /// read is refused when the replica has not been known to be up to date
    /// with the leader's commit index within `max_staleness_ms`: measured
    /// from when the leader *sent* the latest heartbeat whose commit index
    /// the replica had applied (mapped onto the replica's clock; a heartbeat
    /// delivered late counts from its sending, see [`Core`](crate::Core)'s
    /// status), up to the shortest one-way delay seen. Assumes the nodes'
    /// monotonic clocks run at the same rate.
    Follower {
        /// The largest staleness accepted, in milliseconds (`None`: any).
        max_staleness_ms: Option<u64>,
    },
    /// Read-your-writes and monotonic reads: any replica answers once it
    /// has applied `after` (the position of the session's last write, or
    /// the highest `version`/`applied` of its reads), waiting up to the
    /// read timeout.
    Session {
        /// The position the replica must have applied.
        after: LogPosition,
    },
}

/// A client operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClientOp {
    /// Read a key. `None`: the configured default mode.
    Get {
        /// The key.
        key: Vec<u8>,
        /// How fresh the answer must be.
        consistency: Option<ReadMode>,
    },
    /// Set a key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete a key (deleting an absent key succeeds and writes a
    /// tombstone).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Set `key` to `new` only if it holds `expected` (`None`: absent).
    Cas {
        /// The key.
        key: Vec<u8>,
        /// The value the key must hold.
        expected: Option<Vec<u8>>,
        /// The value to write.
        new: Vec<u8>,
    },
}

impl ClientOp {
    /// The key the operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            ClientOp::Get { key, .. }
            | ClientOp::Put { key, .. }
            | ClientOp::Delete { key }
            | ClientOp::Cas { key, .. } => key,
        }
    }
}

/// The answer to a client operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reply {
    /// A put, delete or cas was acknowledged under its ack mode at
    /// `position`.
    Written {
        /// Where the write sits in the log.
        position: LogPosition,
    },
    /// The answer to a get.
    Value {
        /// The value (`None`: absent or deleted).
        value: Option<Vec<u8>>,
        /// The position of the write that produced this state of the key
        /// (`0/0` when it was never written).
        version: LogPosition,
        /// The last position the replica had applied when it answered; a
        /// session carries the highest of these as its `after`.
        applied: LogPosition,
    },
    /// A cas found another value; nothing was written.
    CasMismatch {
        /// The value found (`None`: absent or deleted).
        current: Option<Vec<u8>>,
    },
    /// This node cannot serve the request (it is not the leader, or is
    /// handing leadership over); nothing was done. Retry at the hint. (A
    /// node that has not heard from a leader lately first waits, up to an
    /// election timeout, to hear from one: see [`Core`](crate::Core).)
    NotLeader {
        /// The node this one believes leads, when it knows.
        leader_hint: Option<NodeId>,
    },
    /// The request was not served and certainly had no effect.
    Unavailable {
        /// Why.
        reason: Unavailable,
    },
    /// A write whose outcome is unknown: it may or may not take effect
    /// (now or later). Never reported as failed.
    Unknown {
        /// Why the core stopped waiting.
        reason: Unknown,
    },
    /// The request is invalid (for example the empty key); nothing was
    /// done.
    BadRequest {
        /// What is wrong, for people.
        message: String,
    },
}

/// Why a read was refused (reads never have effects, so these are
/// definite).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Unavailable {
    /// A follower read with a staleness bound found this replica too far
    /// behind.
    TooStale {
        /// How long since the replica was last known to be up to date
        /// (`None`: never).
        staleness_ms: Option<u64>,
        /// The bound the read asked for.
        max_staleness_ms: u64,
    },
    /// The read waited for the read timeout without being servable (no
    /// heartbeat round confirmed leadership, or the replica did not apply
    /// far enough).
    TimedOut,
    /// A session read's `after` names an entry this replica's committed log
    /// does not hold (another entry committed at that index): the write
    /// the session saw was rolled back (it was acknowledged under `async`
    /// or `semi-sync` and lost in a failover). The session cannot continue.
    /// Only detected while the replica's log still holds that index (not
    /// once it is folded into a snapshot).
    SessionDiverged {
        /// The session's position.
        after: LogPosition,
        /// The committed entry at that index.
        found: LogPosition,
    },
}

/// Why the core stopped waiting for a write's acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Unknown {
    /// The write timeout passed.
    TimedOut,
    /// This node stopped leading while the write was pending.
    LostLeadership,
}
