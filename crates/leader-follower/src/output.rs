//! What the core asks its driver to do, and what it reports about itself.

use mimeo_storage::LogPosition;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::message::PeerMsg;
use crate::snapshot::Snapshot;
use crate::types::{HardState, LogEntry, NodeId, Reply, RequestId};

/// One thing for the driver to do, drained with
/// [`Core::poll_output`](crate::Core::poll_output) in order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// Send `msg` to node `to` (best effort: the core tolerates loss,
    /// duplication and reordering).
    Send {
        /// The destination.
        to: NodeId,
        /// The message.
        msg: PeerMsg,
    },
    /// Change the durable state. See [`Persist`] for the ordering the driver
    /// must keep.
    Persist(Persist),
    /// Find out whether anything still listens at node `to`'s address,
    /// and call [`Core::peer_gone`](crate::Core::peer_gone) if the probe is
    /// refused. Only a definite refusal counts (with UDP: an ICMP "port
    /// unreachable", which a host sends for a port no process holds); no
    /// answer proves nothing, and needs no report. A driver that cannot
    /// probe may ignore this output: the election timeout still applies.
    /// See [`Config::probe_leader`](crate::Config::probe_leader).
    Probe {
        /// The node to probe: this follower's leader.
        to: NodeId,
    },
    /// Answer a client request.
    Reply {
        /// The driver's request id.
        req_id: RequestId,
        /// The answer.
        reply: Reply,
    },
}

/// A change to the durable state, in this order: store the snapshot,
/// replace the log by it, truncate the log, append the entries, store the
/// hard state, discard the log prefix.
///
/// The driver must perform `Persist` outputs in the order it drains them,
/// and each one's parts in the order above.
/// `hard_state` must be durable before the driver performs any later
/// output (a vote or a term must never be forgotten after it was sent).
/// The rest may be written asynchronously:
///
/// - when `truncate_from` and `entries` are durable up to a position, the
///   driver calls [`Core::persisted`](crate::Core::persisted) with it
///   (followers acknowledge, and leaders count, only durable entries);
/// - when `snapshot` is durable, the driver calls
///   [`Core::snapshot_persisted`](crate::Core::snapshot_persisted) with its
///   `last` position, and must not report later entries durable before it
///   (entries after a replaced log depend on the snapshot). Only then does
///   the core drop the log prefix from memory and ask, with a later
///   `discard_before`, for it to be dropped from disk: the log is never
///   shortened before the snapshot that replaces it is durable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Persist {
    /// A snapshot to make durable (replacing the previous one), written
    /// before anything else in this `Persist`.
    pub snapshot: Option<Arc<Snapshot>>,
    /// With `snapshot`: the log does not hold the snapshot's last position
    /// (a follower that received the leader's snapshot). Drop every entry;
    /// the log continues at `snapshot.last.index + 1`. The snapshot must be
    /// durable before any entry is dropped.
    pub replace_log: bool,
    /// Drop every entry at this index and above (a divergent suffix).
    pub truncate_from: Option<u64>,
    /// Entries to append; the first continues the log (after truncation).
    pub entries: Vec<LogEntry>,
    /// The new hard state.
    pub hard_state: Option<HardState>,
    /// Entries below this index are covered by a durable snapshot and no
    /// longer needed: the driver may drop them from disk (all, some, or
    /// none of them; recovery accepts a log that starts anywhere from 1 to
    /// the snapshot's index + 1).
    pub discard_before: Option<u64>,
}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks for votes.
    Candidate,
    /// Leads its term.
    Leader,
}

impl Role {
    /// The role's name, as shown by `mimeo status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// What a core reports about itself: [`Core::status`](crate::Core::status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of in `term`.
    pub leader: Option<NodeId>,
    /// Its last log position.
    pub last: LogPosition,
    /// The highest index it knows to be committed.
    pub commit_index: u64,
    /// The highest index applied to its key-value view.
    pub applied_index: u64,
    /// The highest index durable locally.
    pub durable_index: u64,
    /// The last position of the latest durable snapshot (0/0: none).
    pub snapshot: LogPosition,
    /// The lowest index this node still holds in its log (entries below
    /// it exist only folded into the snapshot).
    pub first_index: u64,
    /// How long since this node was last known to have applied everything
    /// the leader had committed (0 on the leader; `None`: never), measured
    /// from the leader's send time of the heartbeat that showed it, not
    /// from its arrival (so a heartbeat delivered late makes nothing look
    /// fresh): the leader's clock is mapped onto this node's by the
    /// smallest `arrival - send` seen from it in this term. Assumes both
    /// monotonic clocks run at the same rate; underestimates by at most
    /// the shortest one-way delay.
    pub staleness_ms: Option<u64>,
    /// Elections this node started.
    pub elections_started: u64,
    /// Elections this node won.
    pub elections_won: u64,
    /// Entries this node dropped from its log because a leader's log
    /// replaced them (writes not committed as far as this node knew, e.g.
    /// async writes lost in a failover).
    pub rolled_back_entries: u64,
    /// Times this node found its leader's process gone by a refused probe
    /// and hurried the election ([`Config::probe_leader`](crate::Config::probe_leader)).
    pub leaders_gone: u64,
    /// Messages the driver could not hand to the transport
    /// ([`Core::send_failed`](crate::Core::send_failed)).
    pub send_failures: u64,
    /// Whether it votes and counts towards quorums (`false`: a learner
    /// catching up after starting without state).
    pub voter: bool,
    /// Keys holding a value in its applied view.
    pub live_keys: u64,
    /// Replication lag per follower (filled on the leader only).
    pub followers: Vec<FollowerLag>,
}

/// Replication lag of one follower, as its leader sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerLag {
    /// The follower.
    pub id: NodeId,
    /// The highest index known durable on it and matching the leader.
    pub match_index: u64,
    /// Entries it lacks (`leader last index - match_index`).
    pub lag_entries: u64,
    /// How long ago the leader received the oldest entry the follower
    /// lacks (0 when it lacks none).
    pub lag_ms: u64,
    /// Append messages in flight to it.
    pub inflight_msgs: usize,
    /// How long since it last answered (`None`: not in this term).
    pub last_heard_ms: Option<u64>,
}
