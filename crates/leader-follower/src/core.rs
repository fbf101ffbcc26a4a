//! The replication state machine: elections, log shipping, commit, ack
//! modes and reads, with no I/O.
//!
//! [`Core`] is defined here with its queries and the dispatch of its
//! inputs; its handlers live beside it, one file per part of the
//! protocol:
//!
//! | file | what |
//! |---|---|
//! | `restore.rs` | starting from nothing or from a node's persisted state |
//! | `election.rs` | pre-votes, votes, probes of a silent leader, role changes, leadership transfer |
//! | `replication.rs` | appends, heartbeats and flow control |
//! | `commit.rs` | durability notices, the commit index, applying entries |
//! | `snapshots.rs` | taking, compacting behind, shipping and installing snapshots |
//! | `requests.rs` | client writes, reads, cas, held requests and their deadlines |
//! | `role.rs` | the state each role holds ([`RoleState`]) |
//! | `timer.rs` | every deadline in one table ([`TimerTable`]) |

mod commit;
mod election;
mod replication;
mod requests;
mod restore;
mod role;
mod snapshots;
mod timer;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use mimeo_storage::LogPosition;

use self::requests::{HeldRequest, LeaderClock, PendingRead};
pub use self::restore::RecoverError;
use self::role::RoleState;
use self::timer::{Timer, TimerTable};
use crate::config::Config;
use crate::message::PeerMsg;
use crate::output::{FollowerLag, Output, Persist, Role, Status};
use crate::snapshot::{KeyValues, Snapshot};
use crate::types::{HardState, LogEntry, Millis, NodeId, Reply, RequestId};

/// A log entry with the time this node received (or created) it, for lag
/// in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Stored {
    entry: LogEntry,
    at: Millis,
}

/// One node's leader-follower replication state machine.
///
/// It never performs I/O: inputs are the `handle_*`, [`tick`](Core::tick),
/// [`persisted`](Core::persisted),
/// [`snapshot_persisted`](Core::snapshot_persisted) and
/// [`transfer_leadership`](Core::transfer_leadership) calls, each with the
/// current time; outputs are drained with [`poll_output`](Core::poll_output),
/// and [`next_timeout`](Core::next_timeout) says when to call `tick`.
///
/// # The rules
///
/// Elections and commit follow Raft: one vote per term, persisted before it
/// is sent; votes only for candidates whose last position `(term, index)`
/// is at least the voter's; appends carry the previous position and are
/// refused unless it matches; a conflicting suffix is truncated (and
/// counted in [`Status::rolled_back_entries`]); a leader commits an index
/// once a majority (itself included) holds it durably and its entry is of
/// the leader's term; a new leader appends a [`Command::Noop`](crate::Command::Noop) so that
/// earlier entries commit. A leader that has not heard from a majority for
/// `election_timeout_max_ms` steps down.
///
/// Elections start with a **pre-vote** (Raft thesis §9.6): when a node's
/// election timeout passes it asks its peers whether they would vote for
/// it in the next term ([`PeerMsg::PreVote`]), without raising its own term
/// or casting a vote. A peer says yes only if it would grant the real vote
/// (the term is not behind, it has not voted for another in it, the log is
/// at least as up to date) **and** it has not heard from a leader within
/// `election_timeout_min_ms` (leader stickiness; a leader always says no).
/// Nobody adopts the term a pre-vote proposes. Only with a majority of
/// yeses (its own included) does the node raise its term and ask for real
/// votes. So a node cut off from the majority, or restarted with a stale
/// log, keeps its term, and cannot depose a healthy leader when it
/// rejoins. Vote requests themselves are also ignored while a leader is
/// heard. A leadership transfer ([`transfer_leadership`](Core::transfer_leadership))
/// skips both: its target starts the real election at once, and its vote
/// requests are honoured by nodes that just heard from the leader.
///
/// # Requests at a node that is not the leader
///
/// Writes, cas and leader reads are answered [`Reply::NotLeader`] with
/// the leader this node follows, for the client to retry there, when it
/// heard from that leader within the last one and a half heartbeat
/// intervals. Otherwise the leader may be gone and an election may be
/// near or under way: it stands, or voted in a new term, or found its
/// leader gone, or its leader fell silent. Then the node holds them, for
/// at most `election_timeout_max_ms`:
///
/// - as soon as it hears from a leader (the old one again, or the newly
///   elected one), they are answered with its hint;
/// - if this node is the one elected, it serves them itself;
/// - if neither happens in that time, the answer is `NotLeader` with
///   whatever leader it last knew.
///
/// So a client need not poll the cluster through an election, and hears
/// of the new leader the moment this node does. Follower and session reads
/// are served by any node, as ever.
///
/// # What is applied, and what reads see
///
/// The key-value view applies entries once they are **committed**
/// (majority durable), on every node. Ack modes only decide when the client
/// hears back; they do not change what is applied. Hence:
///
/// - `quorum` and `all` writes are acknowledged once committed, so every
///   read mode started after the acknowledgement (on a replica that has
///   caught up) sees them;
/// - `async` and `semi-sync` writes are acknowledged earlier, and are not
///   visible to any read until they commit. A **leader read** waits for
///   them: its read index is the highest of the commit index, the index of
///   the leader's own no-op, and the highest index it acknowledged, so a
///   leader read never misses a write that leader acknowledged (it times
///   out instead if the write cannot commit). A **session read** after an
///   async write waits until the write commits on the replica, and reports
///   [`Unavailable::SessionDiverged`](crate::Unavailable::SessionDiverged) if the write was lost. A **follower
///   read** may miss them, as it may miss anything recent.
/// - Reads never see an entry that could be rolled back.
///
/// A cas compares against the newest state in the leader's log (including
/// entries not yet committed, which is what a write appended after them
/// will follow). When the comparison fails, the mismatch is a read: it is
/// reported only after a leader-read round confirms it (and re-evaluated
/// then).
///
/// # Snapshots
///
/// Once `snapshot_every` entries have been applied since the last
/// snapshot, the core takes one (the applied view and the position of the
/// last applied entry, [`Snapshot`]) and asks the driver to store it
/// ([`Persist::snapshot`]). Only when the driver reports it durable
/// ([`snapshot_persisted`](Core::snapshot_persisted)) does the core drop
/// the log before it from memory, keeping the last `snapshot_keep` entries
/// at and below its index, and tell the driver it may drop them from disk
/// ([`Persist::discard_before`]).
///
/// A follower that needs an entry the leader dropped gets the snapshot
/// instead ([`PeerMsg::InstallSnapshot`], in chunks, one in flight at a
/// time). It installs it only if it is ahead of its own commit index,
/// fenced by terms exactly like an append. If its log holds the snapshot's
/// last position, the entries after it are kept (they match the leader's,
/// by log matching); otherwise the whole log is replaced (Raft §7). It
/// answers only once the snapshot is durable, so a leader never counts a
/// follower as holding what a crash could take from it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Core {
    config: Config,
    rng: u64,
    hard: HardState,
    /// What this node holds as follower, candidate or leader.
    role: RoleState,
    /// Every deadline this node waits for.
    timers: TimerTable,
    /// The entries after `offset`: `log[0]` has index `offset + 1`.
    log: Vec<Stored>,
    /// The index just before the first entry held in `log` (0 until a
    /// snapshot lets the log be shortened); never above `applied`.
    offset: u64,
    /// The term of the entry at `offset` (0 when `offset` is 0).
    offset_term: u64,
    /// The latest durable snapshot.
    snapshot: Option<Arc<Snapshot>>,
    /// Its encoding, made when a follower first needs it.
    snapshot_bytes: Option<Arc<Vec<u8>>>,
    /// A snapshot handed to the driver and not yet reported durable.
    snapshot_pending: Option<Arc<Snapshot>>,
    commit: u64,
    applied: u64,
    durable: u64,
    kv: KeyValues,
    /// Keys of `kv` holding a value (not a tombstone).
    live_keys: u64,
    /// The election deadline was brought forward because the leader's
    /// address refused a probe ([`Core::peer_gone`]). Cleared when this
    /// node starts a pre-vote, hears a leader or grants a pre-vote; a
    /// node keeps it through an election it wins and its leadership.
    early_election: bool,
    /// The leader's clock, as this node sees it: see [`LeaderClock`]. It
    /// outlives roles: a candidate's reads are as stale as its last
    /// leader's heartbeat says.
    leader_clock: Option<LeaderClock>,
    /// The number of the last heartbeat round this node sent as a leader
    /// (counted across its terms).
    read_seq: u64,
    /// Reads waiting (leader reads only while leading, session reads in
    /// any role).
    reads: BTreeMap<RequestId, PendingRead>,
    /// The deadline of every pending write and read, earliest first: what
    /// arms [`Timer::Requests`].
    deadlines: BTreeSet<(Millis, RequestId)>,
    /// Requests waiting to hear from a leader, oldest first.
    held: VecDeque<HeldRequest>,
    out: VecDeque<Output>,
    elections_started: u64,
    elections_won: u64,
    rolled_back: u64,
    /// Leaders found gone by a refused probe.
    leaders_gone: u64,
    /// Messages the driver could not send ([`Core::send_failed`]).
    send_failures: u64,
    /// Encoded bytes of the entries applied since the last snapshot was
    /// taken ([`Config::snapshot_bytes`]).
    applied_bytes: u64,
}

impl Core {
    /// The next output for the driver, in order.
    ///
    /// Entries the leader appended since the last drain are offered to the
    /// followers here, once the queue is empty: a driver that feeds the
    /// core every input that is ready before it drains gets one append
    /// message per follower (and one [`Persist`]) for the whole burst.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.out.is_empty() {
            if let Some(leader) = self.role.leader_mut() {
                if let Some(now) = leader.replicate_due.take() {
                    let peers: Vec<NodeId> = leader.progress.keys().copied().collect();
                    for peer in peers {
                        self.send_appends(now, peer);
                    }
                }
            }
        }
        self.out.pop_front()
    }

    /// When the driver should next call [`tick`](Core::tick).
    pub fn next_timeout(&self) -> Millis {
        self.timers
            .next_timeout()
            .expect("every role arms a timer of its own: an election or a heartbeat")
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        self.role.role()
    }

    fn is_leader(&self) -> bool {
        matches!(self.role, RoleState::Leader(_))
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.hard.term
    }

    /// The durable hard state (as last handed to the driver).
    pub fn hard_state(&self) -> HardState {
        self.hard
    }

    /// The leader this node knows of in the current term.
    pub fn leader(&self) -> Option<NodeId> {
        match &self.role {
            RoleState::Follower(f) => f.leader.map(|l| l.id),
            RoleState::Candidate(_) => None,
            RoleState::Leader(_) => Some(self.config.id),
        }
    }

    /// The highest index known committed.
    pub fn commit_index(&self) -> u64 {
        self.commit
    }

    /// The highest index applied to the key-value view.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// The last log position (0/0 when the log is empty; the snapshot's
    /// last position when the log holds nothing after it).
    pub fn last_position(&self) -> LogPosition {
        self.log
            .last()
            .map_or(LogPosition::new(self.offset_term, self.offset), |s| {
                s.entry.position
            })
    }

    /// The entry at `index`, if this node has it in its log (not when it
    /// is only folded into the snapshot).
    pub fn entry(&self, index: u64) -> Option<&LogEntry> {
        self.stored(index).map(|s| &s.entry)
    }

    /// The lowest index held in the log (entries below it exist only
    /// folded into the snapshot): the driver may drop them from disk.
    pub fn first_index(&self) -> u64 {
        self.offset + 1
    }

    /// The latest durable snapshot.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_deref()
    }

    fn stored(&self, index: u64) -> Option<&Stored> {
        let i = usize::try_from(index.checked_sub(self.offset + 1)?).ok()?;
        self.log.get(i)
    }

    /// The applied state of `key`: its value (`None` for a tombstone) and
    /// the position that wrote it; `None` when never written.
    pub fn applied_value(&self, key: &[u8]) -> Option<(Option<&[u8]>, LogPosition)> {
        self.kv.get(key).map(|(v, p)| (v.as_deref(), *p))
    }

    /// Status and lag, as of `now`.
    pub fn status(&self, now: Millis) -> Status {
        let last = self.last_index();
        let followers = if let Some(leader) = self.role.leader() {
            leader
                .progress
                .iter()
                .map(|(&id, p)| {
                    let lag_entries = last.saturating_sub(p.match_index);
                    let lag_ms = if lag_entries == 0 {
                        0
                    } else {
                        self.stored(p.match_index + 1)
                            .map_or(0, |s| now.since(s.at))
                    };
                    FollowerLag {
                        id,
                        match_index: p.match_index,
                        lag_entries,
                        lag_ms,
                        inflight_msgs: p.inflight.len(),
                        last_heard_ms: p.last_heard.map(|t| now.since(t)),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        Status {
            id: self.config.id,
            role: self.role(),
            term: self.hard.term,
            leader: self.leader(),
            last: self.last_position(),
            commit_index: self.commit,
            applied_index: self.applied,
            durable_index: self.durable,
            snapshot: self.snapshot.as_ref().map(|s| s.last).unwrap_or_default(),
            first_index: self.first_index(),
            staleness_ms: self.staleness(now),
            elections_started: self.elections_started,
            elections_won: self.elections_won,
            rolled_back_entries: self.rolled_back,
            leaders_gone: self.leaders_gone,
            send_failures: self.send_failures,
            voter: self.hard.voter,
            live_keys: self.live_keys,
            followers,
        }
    }

    /// A message from peer `from`.
    pub fn handle_peer(&mut self, now: Millis, from: NodeId, msg: PeerMsg) {
        self.on_peer_msg(now, from, msg);
        self.settle_held(now);
    }

    fn on_peer_msg(&mut self, now: Millis, from: NodeId, msg: PeerMsg) {
        if from == self.config.id || !self.config.peers.contains(&from) {
            tracing::warn!(
                from,
                "ignoring a peer message from a node outside the cluster"
            );
            return;
        }
        let term = msg.term();
        // A pre-vote, and a granted answer to one, carry a term nobody has
        // started yet: adopting it would be the disruption pre-vote exists
        // to prevent.
        let proposed_term = matches!(
            msg,
            PeerMsg::PreVote { .. } | PeerMsg::PreVoteResp { granted: true, .. }
        );
        if term > self.hard.term && !proposed_term {
            if let PeerMsg::RequestVote {
                transfer: false, ..
            } = msg
            {
                if self.in_lease(now) {
                    // Leader stickiness: a leader is alive; this candidate
                    // was probably partitioned. Do not let it disrupt.
                    return;
                }
            }
            let leader = msg.from_leader().then_some(from);
            self.become_follower(now, term, leader);
        }
        match msg {
            PeerMsg::RequestVote { term, last, .. } => self.on_request_vote(now, from, term, last),
            PeerMsg::Vote { term, granted } => self.on_vote(now, from, term, granted),
            PeerMsg::Append {
                term,
                prev,
                entries,
                commit,
            } => self.on_append(now, from, term, prev, entries, commit),
            PeerMsg::AppendResp {
                term,
                result,
                voter,
            } => {
                if self.is_leader() && term == self.hard.term {
                    if let Some(p) = self.role.progress_mut(from) {
                        p.set_voter(voter);
                    }
                    self.on_append_resp(now, from, result);
                }
            }
            PeerMsg::Heartbeat {
                term,
                commit,
                leader_commit,
                seq,
                settled,
                sent_at,
            } => self.on_heartbeat(
                now,
                from,
                term,
                commit,
                leader_commit,
                seq,
                settled,
                sent_at,
            ),
            PeerMsg::HeartbeatResp { term, seq, voter } => {
                self.on_heartbeat_resp(now, from, term, seq, voter)
            }
            PeerMsg::TimeoutNow { term } => self.on_timeout_now(now, from, term),
            PeerMsg::PreVote { term, last } => self.on_pre_vote(now, from, term, last),
            PeerMsg::InstallSnapshot {
                term,
                last,
                offset,
                data,
                done,
            } => self.on_install_snapshot(now, from, term, last, offset, data, done),
            PeerMsg::SnapshotAck {
                term,
                last,
                next_offset,
            } => {
                if self.is_leader() && term == self.hard.term {
                    self.on_snapshot_ack(now, from, last, next_offset);
                }
            }
            PeerMsg::PreVoteResp { term, granted } => {
                self.on_pre_vote_resp(now, from, term, granted)
            }
        }
    }

    /// Time passed: elections, heartbeats, retransmissions, timeouts.
    pub fn tick(&mut self, now: Millis) {
        match &mut self.role {
            RoleState::Follower(_) | RoleState::Candidate(_) => {
                let election = self.timers.expired(Timer::Election, now);
                if election && !self.hard.voter {
                    // A learner never stands: it waits for a leader.
                    self.reset_election_deadline(now);
                } else if election {
                    self.start_pre_vote(now);
                } else if self.timers.expired(Timer::Probe, now) {
                    self.probe_leader(now);
                }
            }
            RoleState::Leader(leader) => {
                if self.timers.expired(Timer::Transfer, now) {
                    self.timers.stop(Timer::Transfer);
                    if let Some(target) = leader.transfer.take() {
                        tracing::warn!(target, "leadership transfer timed out; leading on");
                    }
                }
                if self.timers.expired(Timer::Heartbeat, now) {
                    if self.lost_quorum(now) {
                        tracing::warn!(
                            term = self.hard.term,
                            "no answer from a majority within the election timeout; stepping down"
                        );
                        self.become_follower(now, self.hard.term, None);
                    } else {
                        self.heartbeat(now);
                    }
                }
            }
        }
        self.expire_requests(now);
        self.settle_held(now);
    }

    fn reply(&mut self, req_id: RequestId, reply: Reply) {
        self.out.push_back(Output::Reply { req_id, reply });
    }

    fn send(&mut self, to: NodeId, msg: PeerMsg) {
        self.out.push_back(Output::Send { to, msg });
    }

    fn persist_hard(&mut self) {
        // A hard state just queued and not yet followed by anything is
        // superseded: keep one write (e.g. a term bump then a vote).
        if let Some(Output::Persist(Persist {
            snapshot: None,
            replace_log: false,
            truncate_from: None,
            entries,
            hard_state: Some(hard),
            discard_before: None,
        })) = self.out.back_mut()
        {
            if entries.is_empty() {
                *hard = self.hard;
                return;
            }
        }
        self.out.push_back(Output::Persist(Persist {
            hard_state: Some(self.hard),
            ..Persist::default()
        }));
    }
}
