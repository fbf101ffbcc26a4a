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
/// and each one's parts in the order above: [`Persist::apply_to`] does
/// that over the driver's [`DurableState`].
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

impl Persist {
    /// Whether the driver must wait until this persist is durable before
    /// it performs any later output: it carries a hard state (a vote or a
    /// term must never be forgotten after it was sent or acted on).
    pub fn must_be_durable_before_next_output(&self) -> bool {
        self.hard_state.is_some()
    }

    /// Performs this persist on `disk`: its parts, in the order the rule
    /// above requires (snapshot, with or without replacing the log;
    /// truncation; appended entries; hard state; prefix discard), each
    /// only when present, stopping at the first error.
    ///
    /// This is the one implementation of the ordering rule: the tokio
    /// driver, the simulation and the model checker all perform persists
    /// through it, each over its own [`DurableState`].
    pub fn apply_to<D: DurableState + ?Sized>(self, disk: &mut D) -> Result<(), D::Error> {
        let Persist {
            snapshot,
            replace_log,
            truncate_from,
            entries,
            hard_state,
            discard_before,
        } = self;
        if let Some(snapshot) = snapshot {
            disk.store_snapshot(snapshot, replace_log)?;
        }
        if let Some(from) = truncate_from {
            disk.truncate_log(from)?;
        }
        if !entries.is_empty() {
            disk.append_log(entries)?;
        }
        if let Some(state) = hard_state {
            disk.store_hard_state(state)?;
        }
        if let Some(before) = discard_before {
            disk.discard_log_before(before)?;
        }
        Ok(())
    }
}

/// A node's durable state as a driver keeps it: what
/// [`Persist::apply_to`] changes, one part at a time, in order.
///
/// Each method starts its change; whether it must be durable when the
/// method returns, or may complete later, is the driver's choice within
/// the rule of [`Persist`] (the hard state must be durable before the
/// next output; entries are reported with
/// [`Core::persisted`](crate::Core::persisted) once durable; a snapshot
/// with [`Core::snapshot_persisted`](crate::Core::snapshot_persisted)
/// before any later entry).
pub trait DurableState {
    /// Why a change failed (the driver must stop).
    type Error;
    /// Store `snapshot`, replacing the previous one; with `replace_log`,
    /// also drop every log entry (after the snapshot is durable): the log
    /// continues at `snapshot.last.index + 1`.
    fn store_snapshot(
        &mut self,
        snapshot: Arc<Snapshot>,
        replace_log: bool,
    ) -> Result<(), Self::Error>;
    /// Drop every log entry at index `from` and above.
    fn truncate_log(&mut self, from: u64) -> Result<(), Self::Error>;
    /// Append `entries` (never empty) to the log.
    fn append_log(&mut self, entries: Vec<LogEntry>) -> Result<(), Self::Error>;
    /// Store the hard state.
    fn store_hard_state(&mut self, state: HardState) -> Result<(), Self::Error>;
    /// Entries below `index` are covered by a durable snapshot: drop all,
    /// some or none of them.
    fn discard_log_before(&mut self, index: u64) -> Result<(), Self::Error>;
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
