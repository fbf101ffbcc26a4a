//! The replication state machine: elections, log shipping, commit, ack
//! modes and reads, with no I/O.

mod role;
mod timer;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use mimeo_storage::LogPosition;

use crate::config::{Config, ConfigError};
use crate::message::{AppendResult, PeerMsg};
use crate::output::{FollowerLag, Output, Persist, Role, Status};
use crate::progress::{Mode, Progress};
use crate::size;
use crate::snapshot::{Incoming, KeyValues, Snapshot};
use crate::types::{
    AckMode, ClientOp, Command, HardState, LogEntry, Millis, NodeId, ReadMode, Reply, RequestId,
    Unavailable, Unknown,
};

use self::role::{Candidate, Followed, Follower, Leader, LeaderProbe, PendingWrite, RoleState};
use self::timer::{Timer, TimerTable};

/// A request that needs a leader, held by a node that has not heard from
/// one lately (an election may be near or under way) until it does:
/// answered with that leader's hint, or served here if this node wins.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct HeldRequest {
    req_id: RequestId,
    op: ClientOp,
    /// The request's own ack mode, if it set one.
    ack: Option<AckMode>,
    /// When to give up and answer with the last leader known, if any.
    deadline: Millis,
}

/// At most this many requests, holding at most this many bytes of keys
/// and values, wait for an election at once; more are answered at once,
/// as if nothing were held.
const MAX_HELD: usize = 1024;
const MAX_HELD_BYTES: usize = 16 * 1024 * 1024;

/// The bytes of keys and values `op` carries.
fn op_bytes(op: &ClientOp) -> usize {
    match op {
        ClientOp::Get { key, .. } | ClientOp::Delete { key } => key.len(),
        ClientOp::Put { key, value } => key.len() + value.len(),
        ClientOp::Cas { key, expected, new } => {
            key.len() + expected.as_ref().map_or(0, Vec::len) + new.len()
        }
    }
}

/// What a pending read waits for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ReadWait {
    /// Leadership confirmed by heartbeat round `seq`, and `read_index`
    /// applied.
    Leader { read_index: u64, seq: u64 },
    /// `after` applied.
    Session { after: LogPosition },
}

/// A read (or a cas that found a mismatch, which is a read too) waiting.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PendingRead {
    key: Vec<u8>,
    wait: ReadWait,
    /// For a cas: the expected value, the new value and the ack mode.
    cas: Option<(Option<Vec<u8>>, Vec<u8>, AckMode)>,
    deadline: Millis,
}

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
/// the leader's term; a new leader appends a [`Command::Noop`] so that
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
///   [`Unavailable::SessionDiverged`] if the write was lost. A **follower
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

/// What a follower knows of its leader's clock, for the staleness of
/// follower reads.
///
/// Each heartbeat carries the leader's send time on the leader's clock.
/// `offset` is the least `arrival - send` seen from this leader in this
/// term: the difference between the two clocks plus the shortest one-way
/// delay. A heartbeat is mapped to this node's clock as `send + offset`,
/// so its age is measured from when the leader sent it, never from when
/// it arrived: a backlog of old heartbeats delivered after a partition
/// heals carries old send times and makes no read look fresh.
///
/// Assumed: both clocks are monotonic and run at the same rate (as the
/// timeouts assume); nothing about their origins. Staleness is then
/// underestimated by at most the shortest one-way delay seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct LeaderClock {
    term: u64,
    leader: NodeId,
    offset: i128,
    /// The latest send time (leader clock) of a heartbeat whose commit
    /// index this node had applied.
    fresh_at: Option<Millis>,
}

/// The log a node recovered from storage cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The entries do not have consecutive indexes from 1.
    #[error("recovered log entry {found} where index {expected} was expected: the log must be contiguous from 1 (was it compacted?)")]
    Gap {
        /// The index that should come next.
        expected: u64,
        /// The index found.
        found: u64,
    },
    /// The log recovered beside a snapshot neither continues it nor
    /// overlaps it.
    #[error("the recovered log starts at index {first} but the snapshot ends at index {snapshot_index}: entries {snapshot_index}+1..{first} are missing")]
    SnapshotGap {
        /// The snapshot's last index.
        snapshot_index: u64,
        /// The first index of the recovered log.
        first: u64,
    },
    /// The recovered log holds the snapshot's last index with another term.
    #[error("the recovered log holds index {index} with term {log_term}, but the snapshot ends at index {index} with term {snapshot_term}: the log does not belong to this snapshot")]
    SnapshotConflict {
        /// The snapshot's last index.
        index: u64,
        /// The snapshot's last term.
        snapshot_term: u64,
        /// The term of the log's entry at that index.
        log_term: u64,
    },
    /// An entry's term is lower than the one before it, or higher than the
    /// hard state's term.
    #[error("recovered log entry at index {index} has term {term}, out of order (previous term {previous}, hard state term {hard_term})")]
    BadTerm {
        /// The entry's index.
        index: u64,
        /// Its term.
        term: u64,
        /// The previous entry's term.
        previous: u64,
        /// The hard state's term.
        hard_term: u64,
    },
}

impl Core {
    /// A node with an empty log.
    pub fn new(config: Config, now: Millis) -> Result<Core, ConfigError> {
        Core::recover(config, now, HardState::default(), Vec::new()).map_err(|e| match e {
            RecoverError::Config(c) => c,
            other => unreachable!("an empty log cannot be invalid: {other}"),
        })
    }

    /// A node restarting with what it had persisted, without a snapshot:
    /// [`Core::restore`] with `snapshot = None` (the log must start at
    /// index 1).
    pub fn recover(
        config: Config,
        now: Millis,
        hard_state: HardState,
        entries: Vec<LogEntry>,
    ) -> Result<Core, RecoverError> {
        Core::restore(config, now, hard_state, None, entries)
    }

    /// A node restarting with what it had persisted: its hard state, its
    /// latest durable snapshot if any, and its log (all of it is treated as
    /// durable).
    ///
    /// Without a snapshot the log must start at index 1. With one, it must
    /// continue the snapshot (start at `snapshot.last.index + 1`) or overlap
    /// it (start at or below that), and if it holds the snapshot's last
    /// index, with the snapshot's term; entries at or below the snapshot
    /// are kept only as the `snapshot_keep` tail. The snapshot holds only
    /// committed state, so the commit and applied indexes restart at its
    /// index; the rest of the commit index is learnt again from the leader.
    pub fn restore(
        config: Config,
        now: Millis,
        hard_state: HardState,
        snapshot: Option<Snapshot>,
        entries: Vec<LogEntry>,
    ) -> Result<Core, RecoverError> {
        config.validate()?;
        let snap_last = snapshot.as_ref().map(|s| s.last).unwrap_or_default();
        let first = entries
            .first()
            .map_or(snap_last.index + 1, |e| e.position.index);
        if snapshot.is_none() && first != 1 {
            return Err(RecoverError::Gap {
                expected: 1,
                found: first,
            });
        }
        if first > snap_last.index + 1 || first == 0 {
            return Err(RecoverError::SnapshotGap {
                snapshot_index: snap_last.index,
                first,
            });
        }
        if snap_last.term > hard_state.term {
            return Err(RecoverError::BadTerm {
                index: snap_last.index,
                term: snap_last.term,
                previous: 0,
                hard_term: hard_state.term,
            });
        }
        let mut previous = 0;
        for (i, e) in entries.iter().enumerate() {
            let expected = first + i as u64;
            if e.position.index != expected {
                return Err(RecoverError::Gap {
                    expected,
                    found: e.position.index,
                });
            }
            if e.position.term < previous || e.position.term > hard_state.term {
                return Err(RecoverError::BadTerm {
                    index: expected,
                    term: e.position.term,
                    previous,
                    hard_term: hard_state.term,
                });
            }
            if expected == snap_last.index && e.position.term != snap_last.term {
                return Err(RecoverError::SnapshotConflict {
                    index: expected,
                    snapshot_term: snap_last.term,
                    log_term: e.position.term,
                });
            }
            previous = e.position.term;
        }
        if let Some(after) = entries.iter().find(|e| e.position.index > snap_last.index) {
            if after.position.term < snap_last.term {
                return Err(RecoverError::BadTerm {
                    index: after.position.index,
                    term: after.position.term,
                    previous: snap_last.term,
                    hard_term: hard_state.term,
                });
            }
        }
        // Keep at most `snapshot_keep` entries at and below the snapshot,
        // starting after an entry whose term is known.
        let (offset, offset_term, log) = if snapshot.is_none() {
            (0, 0, entries)
        } else {
            let mut wanted = snap_last
                .index
                .saturating_sub(config.snapshot_keep)
                .max(first);
            // And at most a quarter of `snapshot_bytes` of them.
            let at_or_below = |i: u64| entries.get((i - first) as usize);
            let by_bytes = keep_from(
                (wanted + 1..=snap_last.index.min(first + entries.len() as u64 - 1))
                    .rev()
                    .filter_map(|i| at_or_below(i).map(|e| (i, size::entry_bytes(e)))),
                config.snapshot_bytes / 4,
            );
            wanted = wanted.max(by_bytes.min(snap_last.index));
            let last_entry = entries.last().map_or(0, |e| e.position.index);
            if wanted >= snap_last.index || first > snap_last.index || last_entry < snap_last.index
            {
                let log = entries
                    .into_iter()
                    .filter(|e| e.position.index > snap_last.index)
                    .collect();
                (snap_last.index, snap_last.term, log)
            } else {
                let at = (wanted - first) as usize;
                let offset_term = entries[at].position.term;
                (
                    wanted,
                    offset_term,
                    entries.into_iter().skip(at + 1).collect(),
                )
            }
        };
        let durable = offset + log.len() as u64;
        let mut hard_state = hard_state;
        let no_state = hard_state.term == 0
            && hard_state.voted_for.is_none()
            && snapshot.is_none()
            && log.is_empty()
            && offset == 0;
        if no_state && (config.bootstrap || config.peers.is_empty()) {
            // A founding member (or the whole of a one-node cluster).
            hard_state.voter = true;
        }
        if !hard_state.voter {
            tracing::warn!(
                id = config.id,
                "this node has no voting state: it starts as a learner, which neither votes \
                 nor counts towards quorums until it has caught up from a leader (a node \
                 of a brand-new cluster must start with bootstrap)"
            );
        }
        let (kv, snapshot) = match snapshot {
            Some(s) => (s.kv.clone(), Some(Arc::new(s))),
            None => (KeyValues::new(), None),
        };
        let mut core = Core {
            rng: config.seed ^ 0x9E37_79B9_7F4A_7C15,
            config,
            hard: hard_state,
            role: RoleState::Follower(Follower::default()),
            timers: TimerTable::default(),
            log: log
                .into_iter()
                .map(|entry| Stored { entry, at: now })
                .collect(),
            offset,
            offset_term,
            snapshot,
            snapshot_bytes: None,
            snapshot_pending: None,
            commit: snap_last.index,
            applied: snap_last.index,
            durable,
            live_keys: live_keys(&kv),
            kv,
            early_election: false,
            leader_clock: None,
            read_seq: 0,
            reads: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            held: VecDeque::new(),
            out: VecDeque::new(),
            elections_started: 0,
            elections_won: 0,
            rolled_back: 0,
            leaders_gone: 0,
            send_failures: 0,
            applied_bytes: 0,
        };
        core.reset_election_deadline(now);
        Ok(core)
    }

    // ---------------------------------------------------------------- queries

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

    // ----------------------------------------------------------------- inputs

    /// A client request. `ack` overrides the cluster's ack mode for a write.
    pub fn handle_client(
        &mut self,
        now: Millis,
        req_id: RequestId,
        op: ClientOp,
        ack: Option<AckMode>,
    ) {
        let requested_ack = ack;
        if op.key().is_empty() {
            return self.reply(
                req_id,
                Reply::BadRequest {
                    message: "the empty key is reserved; use a key of at least one byte".into(),
                },
            );
        }
        let ack = ack.unwrap_or(self.config.ack);
        if let AckMode::SemiSync(k) = ack {
            if k == 0 || k > self.config.peers.len() {
                return self.reply(
                    req_id,
                    Reply::BadRequest {
                        message: format!(
                            "ack mode semi-sync:{k} needs 1 <= K <= the number of followers ({})",
                            self.config.peers.len()
                        ),
                    },
                );
            }
        }
        if !self.is_leader() && !self.leader_heard_lately(now) && self.needs_leader(&op) {
            return self.hold(now, req_id, op, requested_ack);
        }
        match op {
            ClientOp::Get { key, consistency } => {
                let mode = consistency.unwrap_or(self.config.default_read);
                self.handle_get(now, req_id, key, mode);
            }
            ClientOp::Put { key, value } => {
                self.handle_write(now, req_id, Command::Put { key, value }, ack)
            }
            ClientOp::Delete { key } => {
                self.handle_write(now, req_id, Command::Delete { key }, ack)
            }
            ClientOp::Cas { key, expected, new } => {
                if let Some(hint) = self.refuse_writes() {
                    return self.reply(req_id, Reply::NotLeader { leader_hint: hint });
                }
                if self.latest_value(&key) == expected.as_deref() {
                    self.handle_write(now, req_id, Command::Put { key, value: new }, ack);
                } else {
                    self.start_leader_read(now, req_id, key, Some((expected, new, ack)));
                }
            }
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
            PeerMsg::Vote { term, granted } => {
                let RoleState::Candidate(candidate) = &mut self.role else {
                    return;
                };
                if term == self.hard.term && granted {
                    candidate.votes.insert(from);
                    if candidate.votes.len() >= self.config.majority() {
                        self.become_leader(now);
                    }
                }
            }
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
            } => {
                if term < self.hard.term {
                    return self.send(from, self.stale_term_answer());
                }
                if !self.observe_leader(now, from) {
                    return;
                }
                let commit = commit.min(self.last_index());
                self.advance_commit_to(now, commit);
                self.observe_leader_clock(now, from, sent_at, self.applied >= leader_commit);
                // A learner votes again once it durably holds the log of a
                // leader whose commit index is of its own term (so that
                // everything before it is committed too), up to that index.
                let holds = self.leader_match().min(self.durable) >= leader_commit;
                if settled && holds && !self.hard.voter {
                    self.become_voter(from, leader_commit);
                }
                let term = self.hard.term;
                let voter = self.hard.voter;
                self.send(from, PeerMsg::HeartbeatResp { term, seq, voter });
            }
            PeerMsg::HeartbeatResp { term, seq, voter } => {
                if self.is_leader() && term == self.hard.term {
                    if let Some(p) = self.role.progress_mut(from) {
                        p.set_voter(voter);
                        p.acked_seq = p.acked_seq.max(seq);
                        p.last_heard = Some(now);
                    }
                    self.check_reads(now);
                }
            }
            PeerMsg::TimeoutNow { term } => {
                if term == self.hard.term
                    && self.role.followed().is_some_and(|l| l.id == from)
                    && self.hard.voter
                {
                    tracing::info!(term, from, "leadership handed over; starting an election");
                    self.start_election(now, true);
                }
            }
            PeerMsg::PreVote { term, last } => {
                let granted = !self.in_lease(now) && self.would_vote(from, term, last);
                if granted && self.early_election {
                    // Both followers of a crashed leader hurry; the one
                    // asking first gets the time to win, instead of the
                    // two splitting the vote.
                    self.early_election = false;
                    self.reset_election_deadline(now);
                }
                let term = if granted { term } else { self.hard.term };
                self.send(from, PeerMsg::PreVoteResp { term, granted });
            }
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
                if !granted || term != self.hard.term + 1 {
                    return;
                }
                let majority = self.config.majority();
                if let Some(pre_votes) = self.role.pre_votes_mut() {
                    pre_votes.insert(from);
                    if pre_votes.len() >= majority {
                        self.start_election(now, false);
                    }
                }
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

    /// The driver's storage made the log durable up to `up_to` (every
    /// entry through `up_to.index`, whose entry has `up_to.term`).
    pub fn persisted(&mut self, now: Millis, up_to: LogPosition) {
        if up_to.index <= self.durable || self.term_at(up_to.index) != Some(up_to.term) {
            return; // stale: already known, or about entries since replaced
        }
        self.durable = up_to.index;
        self.after_durable(now);
    }

    /// More of the log became durable: a leader may commit, a follower
    /// tells its leader.
    fn after_durable(&mut self, now: Millis) {
        match &self.role {
            RoleState::Leader(_) => {
                self.advance_leader_commit(now);
                self.check_writes();
            }
            RoleState::Follower(f) => {
                if let Some(leader) = f.leader.filter(|l| l.matched > 0) {
                    let term = self.hard.term;
                    let result = AppendResult::Ok {
                        matched: leader.matched,
                        durable: self.durable.min(leader.matched),
                    };
                    self.send_append_ok(leader.id, term, result);
                }
            }
            RoleState::Candidate(_) => {}
        }
    }

    /// The driver made the snapshot ending at `last` durable (the one a
    /// [`Persist::snapshot`] carried). The core drops the log up to it from
    /// memory, but the last `snapshot_keep` entries, and asks the driver,
    /// with [`Persist::discard_before`], to drop them from disk.
    ///
    /// Returns the snapshot this one replaces, for the caller to drop
    /// where that costs nothing: freeing the keys only it still holds can
    /// take a while on a large state.
    pub fn snapshot_persisted(&mut self, now: Millis, last: LogPosition) -> Option<Arc<Snapshot>> {
        if self
            .snapshot_pending
            .as_ref()
            .is_none_or(|s| s.last != last)
        {
            return None; // superseded by a later snapshot, or unknown
        }
        let snapshot = self.snapshot_pending.take().expect("checked above");
        let replaced = self.snapshot.replace(snapshot);
        self.snapshot_bytes = None;
        // The snapshot durably holds everything up to its index. A follower
        // that installed it from its leader answers now.
        if self.term_at(last.index) == Some(last.term) {
            self.durable = self.durable.max(last.index);
            self.after_durable(now);
        }
        let by_count = last.index.saturating_sub(self.config.snapshot_keep);
        let by_bytes = keep_from(
            (by_count.max(self.offset) + 1..=last.index)
                .rev()
                .filter_map(|i| self.entry(i).map(|e| (i, size::entry_bytes(e)))),
            self.config.snapshot_bytes / 4,
        );
        let new_offset = by_count.max(by_bytes).min(last.index).max(self.offset);
        if new_offset > self.offset {
            let term = self
                .term_at(new_offset)
                .expect("the log holds the new offset");
            self.log.drain(..(new_offset - self.offset) as usize);
            self.offset = new_offset;
            self.offset_term = term;
            self.out.push_back(Output::Persist(Persist {
                discard_before: Some(new_offset + 1),
                ..Persist::default()
            }));
        }
        replaced
    }

    /// Hand leadership to the most up-to-date follower (on shutdown). The
    /// leader stops accepting writes, brings the target up to date and
    /// tells it to start an election at once; if that has not happened
    /// within `election_timeout_max_ms`, it leads on. Returns the target, or
    /// `None` when this node is not a leader with followers.
    pub fn transfer_leadership(&mut self, now: Millis) -> Option<NodeId> {
        let leader = self.role.leader_mut()?;
        let (&target, _) = leader
            .progress
            .iter()
            .filter(|(_, p)| p.voter)
            .max_by_key(|(id, p)| (p.match_index, std::cmp::Reverse(**id)))?;
        tracing::info!(term = self.hard.term, target, "transferring leadership");
        leader.transfer = Some(target);
        if let Some(p) = leader.progress.get_mut(&target) {
            p.timeout_now_sent = false;
        }
        let deadline = now.plus(self.config.election_timeout_max_ms);
        self.timers.set(Timer::Transfer, deadline);
        self.maybe_send_timeout_now(target);
        self.send_appends(now, target);
        Some(target)
    }

    /// The driver could not send `msg` to `to`: the transport refused it
    /// (too large for one frame, which the core's byte budget should
    /// prevent; an unknown peer). For an append or a snapshot chunk, the
    /// leader halves what it puts in one message to that follower and
    /// probes it again from its match index, so replication to it resumes
    /// in smaller pieces instead of rebuilding the refused message for
    /// ever. Counted in [`Status::send_failures`]. Other messages are
    /// small and retried by the protocol's own timers.
    pub fn send_failed(&mut self, now: Millis, to: NodeId, msg: &PeerMsg) {
        self.send_failures += 1;
        let shipping = matches!(
            msg,
            PeerMsg::Append { .. } | PeerMsg::InstallSnapshot { .. }
        );
        if !self.is_leader() || msg.term() != self.hard.term || !shipping {
            return;
        }
        if let Some(p) = self.role.progress_mut(to) {
            p.on_send_failed(now);
            tracing::warn!(
                to,
                max_bytes = p.max_bytes,
                "a message to this follower was refused by the transport; sending it less at once"
            );
        }
    }

    // ------------------------------------------------------------ elections

    /// The driver's probe of `peer` ([`Output::Probe`]) was refused:
    /// nothing listens at its address, so its process is gone. If `peer`
    /// is still this follower's silent leader (nothing was heard from it
    /// since the probe), the follower forgets it, so that it grants
    /// pre-votes and votes at once, and brings its own election forward to
    /// a random point within one heartbeat interval. Otherwise (a stale or
    /// unasked report) nothing happens.
    ///
    /// Only liveness depends on this: an election may start at any time
    /// without breaking the election and commit rules.
    pub fn peer_gone(&mut self, now: Millis, peer: NodeId) {
        let RoleState::Follower(follower) = &mut self.role else {
            return;
        };
        let Some(probe) = follower.probe else { return };
        let silent_since_probe = probe.to == peer
            && follower
                .leader
                .is_some_and(|l| l.id == peer && l.contact == probe.contact);
        if !silent_since_probe {
            return;
        }
        tracing::info!(
            term = self.hard.term,
            leader = peer,
            silent_ms = now.since(probe.contact),
            "the leader's address refused a probe: its process is gone; electing a new leader early"
        );
        follower.probe = None;
        follower.leader = None;
        self.arm_probe();
        self.leaders_gone += 1;
        let jitter = self.next_random() % self.config.heartbeat_interval_ms;
        let early = now.plus(jitter);
        if self
            .timers
            .get(Timer::Election)
            .is_none_or(|deadline| early < deadline)
        {
            self.timers.set(Timer::Election, early);
            self.early_election = true;
        }
    }

    fn reset_election_deadline(&mut self, now: Millis) {
        let span = self.config.election_timeout_max_ms - self.config.election_timeout_min_ms;
        let jitter = self.next_random() % span;
        let deadline = now.plus(self.config.election_timeout_min_ms + jitter);
        self.timers.set(Timer::Election, deadline);
    }

    /// splitmix64: a deterministic, seedable source for election jitter.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn in_lease(&self, now: Millis) -> bool {
        match &self.role {
            RoleState::Leader(_) => true,
            RoleState::Follower(f) => f
                .leader
                .is_some_and(|l| now.since(l.contact) < self.config.election_timeout_min_ms),
            RoleState::Candidate(_) => false,
        }
    }

    /// How long a leader may stay silent before a follower suspects it:
    /// one and a half heartbeat intervals.
    fn leader_silence_ms(&self) -> u64 {
        let interval = self.config.heartbeat_interval_ms;
        interval + interval / 2
    }

    /// Whether this node follows a leader it heard from within
    /// [`leader_silence_ms`](Core::leader_silence_ms).
    fn leader_heard_lately(&self, now: Millis) -> bool {
        self.role
            .followed()
            .is_some_and(|l| now.since(l.contact) < self.leader_silence_ms())
    }

    /// Arms [`Timer::Probe`] for when this follower should probe its
    /// silent leader's address ([`Config::probe_leader`]): one and a half
    /// heartbeat intervals after it last heard from it, then once per
    /// interval. Called whenever the leader, its contact or the probe
    /// change.
    fn arm_probe(&mut self) {
        let due = match &self.role {
            RoleState::Follower(Follower {
                leader: Some(leader),
                probe,
                ..
            }) if self.config.probe_leader => {
                let interval = self.config.heartbeat_interval_ms;
                let silent = leader.contact.plus(self.leader_silence_ms());
                Some(match probe {
                    Some(p) if p.to == leader.id && p.contact == leader.contact => {
                        silent.max(p.sent.plus(interval))
                    }
                    _ => silent,
                })
            }
            _ => None,
        };
        self.timers.set_or_stop(Timer::Probe, due);
    }

    fn probe_leader(&mut self, now: Millis) {
        let RoleState::Follower(Follower {
            leader: Some(leader),
            probe,
            ..
        }) = &mut self.role
        else {
            return;
        };
        *probe = Some(LeaderProbe {
            to: leader.id,
            sent: now,
            contact: leader.contact,
        });
        let to = leader.id;
        self.out.push_back(Output::Probe { to });
        self.arm_probe();
    }

    /// The election timeout passed: ask the peers whether they would vote
    /// for this node in the next term, without raising its own. Only a
    /// majority of yeses starts the real election, so a node that cannot
    /// win (cut off, or behind) never raises the cluster's term.
    fn start_pre_vote(&mut self, now: Millis) {
        let own = Some(BTreeSet::from([self.config.id]));
        match &mut self.role {
            RoleState::Follower(f) => f.pre_votes = own,
            RoleState::Candidate(c) => c.pre_votes = own,
            RoleState::Leader(_) => unreachable!("a leader has no election timeout"),
        }
        self.early_election = false;
        self.reset_election_deadline(now);
        if self.config.majority() == 1 || !self.config.pre_vote {
            return self.start_election(now, false);
        }
        let term = self.hard.term + 1;
        tracing::debug!(term, "election timeout: asking for pre-votes");
        let msg = PeerMsg::PreVote {
            term,
            last: self.last_position(),
        };
        for peer in self.config.peers.clone() {
            self.send(peer, msg.clone());
        }
    }

    /// Start an election at once; `transfer` when the leader handed over
    /// (which skips pre-vote and leader stickiness).
    fn start_election(&mut self, now: Millis, transfer: bool) {
        self.hard = HardState {
            term: self.hard.term + 1,
            voted_for: Some(self.config.id),
            voter: true,
        };
        self.persist_hard();
        debug_assert!(!self.is_leader(), "a leader never stands for election");
        self.role = RoleState::Candidate(Candidate {
            votes: BTreeSet::from([self.config.id]),
            pre_votes: None,
        });
        self.arm_probe();
        self.elections_started += 1;
        self.reset_election_deadline(now);
        tracing::debug!(term = self.hard.term, "starting an election");
        if self.config.majority() <= 1 {
            return self.become_leader(now);
        }
        let msg = PeerMsg::RequestVote {
            term: self.hard.term,
            last: self.last_position(),
            transfer,
        };
        for peer in self.config.peers.clone() {
            self.send(peer, msg.clone());
        }
    }

    /// Whether this node would vote for `candidate` standing in `term`
    /// with `last` as its last log position: the term is not behind, no
    /// other vote was cast in it, and the candidate's log is at least as up
    /// to date. Leader stickiness is the caller's concern.
    fn would_vote(&self, candidate: NodeId, term: u64, last: LogPosition) -> bool {
        let free = match term.cmp(&self.hard.term) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => self.hard.voted_for.is_none_or(|v| v == candidate),
            std::cmp::Ordering::Greater => true,
        };
        // A learner does not vote: its log may lack committed entries.
        self.hard.voter && free && last >= self.last_position()
    }

    fn on_request_vote(&mut self, now: Millis, from: NodeId, term: u64, last: LogPosition) {
        // The term was adopted on arrival: `term` is at most ours.
        let grant = self.would_vote(from, term, last);
        if grant && self.hard.voted_for.is_none() {
            self.hard.voted_for = Some(from);
            self.persist_hard();
        }
        if grant {
            self.reset_election_deadline(now);
        }
        let term = self.hard.term;
        self.send(
            from,
            PeerMsg::Vote {
                term,
                granted: grant,
            },
        );
    }

    fn become_leader(&mut self, now: Millis) {
        tracing::info!(term = self.hard.term, id = self.config.id, "elected leader");
        self.elections_won += 1;
        let last = self.last_index();
        let budget = self.entry_budget();
        let progress = self
            .config
            .peers
            .iter()
            .map(|&p| (p, Progress::new(last, now, budget)))
            .collect();
        self.role = RoleState::Leader(Box::new(Leader {
            progress,
            term_start: 0,
            acked_through: 0,
            transfer: None,
            writes: BTreeMap::new(),
            replicate_due: None,
        }));
        self.timers.stop(Timer::Election);
        self.timers.stop(Timer::Probe);
        self.timers.stop(Timer::Transfer);
        let noop = self.append(now, Command::Noop);
        if let Some(leader) = self.role.leader_mut() {
            leader.term_start = noop.index;
        }
        self.heartbeat(now);
        self.advance_leader_commit(now);
    }

    /// Become a follower in `term` (which is at least the current term),
    /// of `leader` if known. A leader stepping down answers what it was
    /// waiting on.
    fn become_follower(&mut self, now: Millis, term: u64, leader: Option<NodeId>) {
        if term > self.hard.term {
            self.hard = HardState {
                term,
                voted_for: None,
                voter: self.hard.voter,
            };
            self.persist_hard();
        }
        let was_follower = matches!(self.role, RoleState::Follower(_));
        if let RoleState::Leader(leading) = &mut self.role {
            let writes = std::mem::take(&mut leading.writes);
            self.timers.stop(Timer::Heartbeat);
            self.timers.stop(Timer::Transfer);
            for (req_id, write) in writes {
                self.forget_deadline(write.deadline, req_id);
                self.reply(
                    req_id,
                    Reply::Unknown {
                        reason: Unknown::LostLeadership,
                    },
                );
            }
            let leader_reads: Vec<RequestId> = self
                .reads
                .iter()
                .filter(|(_, r)| matches!(r.wait, ReadWait::Leader { .. }))
                .map(|(&id, _)| id)
                .collect();
            for req_id in leader_reads {
                self.take_read(req_id);
                self.reply(
                    req_id,
                    Reply::NotLeader {
                        leader_hint: leader,
                    },
                );
            }
        }
        // A follower that only learns of a higher term (from a candidate)
        // keeps its election timer: otherwise a candidate that cannot win
        // (its log is behind) would keep resetting everyone's timer with
        // each new term and no election could ever succeed.
        if leader.is_some() || !was_follower {
            self.reset_election_deadline(now);
        }
        // A new term or a new role: nothing of the old state carries over
        // (a snapshot half received belongs to an older term, a probe to
        // an older contact).
        self.role = RoleState::Follower(Follower {
            leader: leader.map(|id| Followed {
                id,
                contact: now,
                matched: 0,
            }),
            ..Follower::default()
        });
        self.arm_probe();
    }

    /// A leader of the current term spoke: follow it. False if the message
    /// must be ignored (it claims leadership of a term this node leads,
    /// which the election rules make impossible).
    fn observe_leader(&mut self, now: Millis, from: NodeId) -> bool {
        match &mut self.role {
            RoleState::Leader(_) => {
                tracing::error!(
                    term = self.hard.term,
                    from,
                    "two leaders in one term: ignoring the other's message"
                );
                return false;
            }
            RoleState::Candidate(_) => self.become_follower(now, self.hard.term, Some(from)),
            RoleState::Follower(follower) => {
                match &mut follower.leader {
                    Some(leader) if leader.id == from => leader.contact = now,
                    other => {
                        *other = Some(Followed {
                            id: from,
                            contact: now,
                            matched: 0,
                        })
                    }
                }
                follower.pre_votes = None;
            }
        }
        self.arm_probe();
        self.early_election = false;
        self.reset_election_deadline(now);
        true
    }

    /// The highest index known to match the log of the leader this node
    /// follows (0 when it follows none).
    fn leader_match(&self) -> u64 {
        self.role.followed().map_or(0, |l| l.matched)
    }

    /// The leader this node follows holds its log up to `index`, at least.
    fn raise_leader_match(&mut self, index: u64) {
        if let Some(leader) = self.role.followed_mut() {
            leader.matched = leader.matched.max(index);
        }
    }

    fn lost_quorum(&self, now: Millis) -> bool {
        let Some(leader) = self.role.leader() else {
            return false;
        };
        let window = self.config.election_timeout_max_ms;
        let heard = leader
            .progress
            .values()
            .filter(|p| p.voter && now.since(p.last_heard.unwrap_or(p.last_progress)) < window)
            .count();
        heard + 1 < self.config.majority()
    }

    // ---------------------------------------------------------- replication

    fn last_index(&self) -> u64 {
        self.offset + self.log.len() as u64
    }

    /// The most encoded bytes of entries one append may carry.
    fn entry_budget(&self) -> usize {
        self.config.max_message_bytes - size::APPEND_OVERHEAD
    }

    /// The term of the entry at `index`, when known: from `offset` (the
    /// snapshot's position or an entry kept beside it) to the last index.
    fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.offset {
            Some(self.offset_term)
        } else {
            self.entry(index).map(|e| e.position.term)
        }
    }

    fn position_at(&self, index: u64) -> LogPosition {
        LogPosition::new(self.term_at(index).unwrap_or(0), index)
    }

    /// Append a new entry of the current term (leader).
    fn append(&mut self, now: Millis, command: Command) -> LogPosition {
        let position = LogPosition::new(self.hard.term, self.last_index() + 1);
        let entry = LogEntry { position, command };
        self.log.push(Stored {
            entry: entry.clone(),
            at: now,
        });
        // Entries appended before the driver drains share one persist (one
        // write, one durability wait).
        if let Some(entries) = self.queued_entries() {
            if entries
                .last()
                .is_some_and(|e| e.position.index + 1 == position.index)
            {
                entries.push(entry);
                return position;
            }
        }
        self.out.push_back(Output::Persist(Persist {
            entries: vec![entry],
            ..Persist::default()
        }));
        position
    }

    /// A heartbeat round (leader).
    fn heartbeat(&mut self, now: Millis) {
        let Some(leader) = self.role.leader() else {
            return;
        };
        let peers: Vec<NodeId> = leader.progress.keys().copied().collect();
        self.read_seq += 1;
        let due = now.plus(self.config.heartbeat_interval_ms);
        self.timers.set(Timer::Heartbeat, due);
        for peer in peers {
            let Some(leader) = self.role.leader() else {
                return;
            };
            let msg = PeerMsg::Heartbeat {
                term: self.hard.term,
                commit: self.commit.min(leader.progress[&peer].match_index),
                leader_commit: self.commit,
                seq: self.read_seq,
                settled: self.commit >= leader.term_start,
                sent_at: now,
            };
            self.send(peer, msg);
            let retransmit_ms = self.config.retransmit_ms;
            let last = self.last_index();
            if let Some(p) = self.role.progress_mut(peer) {
                p.maybe_retransmit(now, retransmit_ms, last);
            }
            self.send_appends(now, peer);
        }
    }

    /// Send `peer` what its window allows.
    fn send_appends(&mut self, now: Millis, peer: NodeId) {
        let last = self.last_index();
        let max_inflight = self.config.max_inflight_msgs;
        let batch = self.config.max_batch_entries as u64;
        loop {
            let Some(p) = self.role.leader().and_then(|l| l.progress.get(&peer)) else {
                return;
            };
            if !p.window_open(max_inflight) {
                return;
            }
            if p.next_index <= self.offset {
                // The entries it needs are folded into the snapshot.
                return self.send_snapshot_chunk(now, peer);
            }
            // Pipelining sends only new entries; a probe goes out even
            // empty, to learn where the follower's log matches.
            if p.mode == Mode::Replicate && p.next_index > last {
                return;
            }
            let prev = self.position_at(p.next_index - 1);
            // At most `batch` entries and the follower's byte budget, but
            // at least one entry (which fits a message: writes that could
            // not were refused).
            let budget = p.max_bytes;
            // A follower silent through every halving is probed with no
            // entries at all (cheap), until it answers.
            let silent = p.mode == Mode::Probe && budget <= 1;
            let upto = if silent {
                prev.index
            } else {
                last.min(prev.index + batch)
            };
            let mut entries: Vec<LogEntry> = Vec::new();
            let mut bytes = 0;
            for i in prev.index + 1..=upto {
                let entry = self.entry(i).expect("the log holds it");
                let size = size::entry_bytes(entry);
                if !entries.is_empty() && bytes + size > budget {
                    break;
                }
                bytes += size;
                entries.push(entry.clone());
            }
            let end = prev.index + entries.len() as u64;
            let p = self.role.progress_mut(peer).expect("checked above");
            if p.inflight.is_empty() {
                p.last_progress = now;
            }
            p.inflight.push_back(end);
            if p.mode == Mode::Replicate {
                p.next_index = end + 1;
            }
            let msg = PeerMsg::Append {
                term: self.hard.term,
                prev,
                entries,
                commit: self.commit,
            };
            self.send(peer, msg);
        }
    }

    fn on_append(
        &mut self,
        now: Millis,
        from: NodeId,
        term: u64,
        prev: LogPosition,
        entries: Vec<LogEntry>,
        commit: u64,
    ) {
        if term < self.hard.term {
            return self.send(from, self.stale_term_answer());
        }
        if !self.observe_leader(now, from) {
            return;
        }
        let term = self.hard.term;
        let (prev, entries) = if prev.index < self.offset {
            // Entries up to `offset` are committed here (folded into the
            // snapshot, or kept beside it): they match the leader's.
            let skip = ((self.offset - prev.index) as usize).min(entries.len());
            let covered = prev.index + skip as u64;
            if skip == entries.len() {
                self.raise_leader_match(covered);
                let result = AppendResult::Ok {
                    matched: covered,
                    durable: self.durable.min(covered),
                };
                return self.send(from, self.append_resp(term, result));
            }
            let prev = LogPosition::new(self.offset_term, self.offset);
            (prev, entries[skip..].to_vec())
        } else {
            (prev, entries)
        };
        if prev.index > self.last_index() {
            let hint = self.last_index();
            return self.send(
                from,
                self.append_resp(term, AppendResult::Conflict { hint }),
            );
        }
        if self.term_at(prev.index) != Some(prev.term) {
            // Skip back over the whole conflicting term in one round trip.
            let bad = self.term_at(prev.index).unwrap_or(0);
            let first_of_term = (1..=prev.index)
                .rev()
                .take_while(|&i| self.term_at(i) == Some(bad))
                .last()
                .unwrap_or(prev.index);
            let hint = (first_of_term - 1).max(self.commit);
            return self.send(
                from,
                self.append_resp(term, AppendResult::Conflict { hint }),
            );
        }
        let matched = prev.index + entries.len() as u64;
        let mut truncate_from = None;
        let mut fresh = Vec::new();
        for entry in entries {
            let index = entry.position.index;
            if fresh.is_empty() && index <= self.last_index() {
                if self.term_at(index) == Some(entry.position.term) {
                    continue;
                }
                assert!(
                    index > self.commit,
                    "leader {from} in term {term} conflicts with committed entry {index} \
                     (commit index {}): the log matching property is broken",
                    self.commit
                );
                let dropped = self.last_index() - index + 1;
                self.rolled_back += dropped;
                tracing::warn!(
                    from_index = index,
                    dropped,
                    total = self.rolled_back,
                    "rolling back a divergent log suffix: the leader's log replaces it, so it was not \
                     committed as far as this node knows (if a majority lost its data, it may \
                     have been)"
                );
                self.log.truncate((index - self.offset - 1) as usize);
                self.durable = self.durable.min(index - 1);
                truncate_from = Some(index);
            }
            self.log.push(Stored {
                entry: entry.clone(),
                at: now,
            });
            fresh.push(entry);
        }
        if truncate_from.is_none() && !fresh.is_empty() {
            if let Some(entries) = self.queued_entries() {
                if entries
                    .last()
                    .is_some_and(|e| e.position.index + 1 == fresh[0].position.index)
                {
                    entries.extend(fresh);
                    fresh = Vec::new();
                }
            }
        }
        if truncate_from.is_some() || !fresh.is_empty() {
            self.out.push_back(Output::Persist(Persist {
                truncate_from,
                entries: fresh,
                ..Persist::default()
            }));
        }
        self.raise_leader_match(matched);
        self.advance_commit_to(now, commit.min(matched));
        let result = AppendResult::Ok {
            matched,
            durable: self.durable.min(self.leader_match()),
        };
        self.send_append_ok(from, term, result);
    }

    /// The entries of the latest queued persist that only appends, when
    /// no hard state is queued after it: entries added there are written
    /// in the same order, and nothing that must wait for a hard state can
    /// overtake one. (A burst of appends from the leader, fed before the
    /// driver drains, becomes one persist.)
    fn queued_entries(&mut self) -> Option<&mut Vec<LogEntry>> {
        for output in self.out.iter_mut().rev() {
            match output {
                Output::Send { .. } | Output::Reply { .. } | Output::Probe { .. } => continue,
                Output::Persist(Persist {
                    snapshot: None,
                    replace_log: false,
                    entries,
                    hard_state: None,
                    discard_before: None,
                    ..
                }) if !entries.is_empty() => return Some(entries),
                Output::Persist(_) => return None,
            }
        }
        None
    }

    /// Acknowledge appended (or durable) entries to the leader. An `Ok`
    /// answer still queued for it in the same term is raised instead of
    /// queuing another: answers are cumulative, so one message carries a
    /// whole burst (unless a hard state is queued after it, which must be
    /// durable before anything later leaves).
    fn send_append_ok(&mut self, to: NodeId, term: u64, result: AppendResult) {
        let AppendResult::Ok { matched, durable } = result else {
            return self.send(to, self.append_resp(term, result));
        };
        for output in self.out.iter_mut().rev() {
            match output {
                Output::Send {
                    to: queued_to,
                    msg:
                        PeerMsg::AppendResp {
                            voter: _,
                            term: queued_term,
                            result:
                                AppendResult::Ok {
                                    matched: queued_matched,
                                    durable: queued_durable,
                                },
                        },
                } if *queued_to == to && *queued_term == term => {
                    *queued_matched = (*queued_matched).max(matched);
                    *queued_durable = (*queued_durable).max(durable);
                    return;
                }
                Output::Persist(Persist {
                    hard_state: Some(_),
                    ..
                }) => break,
                _ => {}
            }
        }
        self.send(to, self.append_resp(term, result));
    }

    fn on_append_resp(&mut self, now: Millis, from: NodeId, result: AppendResult) {
        let last = self.last_index();
        let budget = self.entry_budget();
        let Some(p) = self.role.progress_mut(from) else {
            return;
        };
        p.last_heard = Some(now);
        match result {
            AppendResult::Ok { matched, durable } => {
                p.on_ok(matched.min(last), durable.min(last), now, budget);
                self.advance_leader_commit(now);
                self.check_writes();
            }
            AppendResult::Conflict { hint } => {
                if hint < p.match_index {
                    return; // stale: the follower has matched further since
                }
                p.on_conflict(hint, last, now);
            }
        }
        self.send_appends(now, from);
        if self.role.leader().is_some_and(|l| l.transfer == Some(from)) {
            self.maybe_send_timeout_now(from);
        }
    }

    /// Send `peer` the next chunk of the snapshot (its window is open and
    /// it needs entries before the log's start).
    fn send_snapshot_chunk(&mut self, now: Millis, peer: NodeId) {
        let snapshot = Arc::clone(
            self.snapshot
                .as_ref()
                .expect("a shortened log has a snapshot"),
        );
        let bytes = Arc::clone(
            self.snapshot_bytes
                .get_or_insert_with(|| Arc::new(snapshot.encode())),
        );
        let len = bytes.len() as u64;
        let p = self.role.progress_mut(peer).expect("the caller checked");
        let chunk = self
            .config
            .snapshot_chunk_bytes
            .min(self.config.max_message_bytes - size::SNAPSHOT_OVERHEAD)
            .min(p.max_bytes) as u64;
        let offset = match p.mode {
            Mode::Snapshot { last, offset } if last == snapshot.last => offset.min(len),
            _ => {
                tracing::info!(
                    peer,
                    next_index = p.next_index,
                    snapshot_index = snapshot.last.index,
                    bytes = len,
                    "the follower needs entries folded into the snapshot: sending it"
                );
                0
            }
        };
        let end = len.min(offset + chunk);
        p.mode = Mode::Snapshot {
            last: snapshot.last,
            offset,
        };
        p.inflight.clear();
        p.inflight.push_back(snapshot.last.index);
        p.last_progress = now;
        let msg = PeerMsg::InstallSnapshot {
            term: self.hard.term,
            last: snapshot.last,
            offset,
            data: bytes[offset as usize..end as usize].to_vec(),
            done: end == len,
        };
        self.send(peer, msg);
    }

    /// A follower received a chunk and expects `next_offset` next.
    fn on_snapshot_ack(&mut self, now: Millis, from: NodeId, last: LogPosition, next_offset: u64) {
        let Some(p) = self.role.progress_mut(from) else {
            return;
        };
        p.last_heard = Some(now);
        let Mode::Snapshot { last: sending, .. } = p.mode else {
            return; // stale: the follower caught up since
        };
        if sending != last {
            return; // about a snapshot this leader no longer sends
        }
        p.mode = Mode::Snapshot {
            last,
            offset: next_offset,
        };
        p.inflight.clear();
        p.last_progress = now;
        self.send_appends(now, from);
    }

    /// A chunk of the leader's snapshot.
    #[allow(clippy::too_many_arguments)]
    fn on_install_snapshot(
        &mut self,
        now: Millis,
        from: NodeId,
        term: u64,
        last: LogPosition,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        if term < self.hard.term {
            return self.send(from, self.stale_term_answer());
        }
        if !self.observe_leader(now, from) {
            return;
        }
        let term = self.hard.term;
        let RoleState::Follower(follower) = &mut self.role else {
            unreachable!("observe_leader made this node a follower");
        };
        if last.index <= self.commit {
            // Nothing to install: this node holds it all, committed (a
            // retransmission, or the answer to an install was lost).
            follower.incoming = None;
            self.raise_leader_match(last.index);
            let result = AppendResult::Ok {
                matched: last.index,
                durable: self.durable.min(last.index),
            };
            return self.send(from, self.append_resp(term, result));
        }
        let same = follower
            .incoming
            .as_ref()
            .is_some_and(|i| i.term == term && i.last == last);
        if offset == 0 && !same {
            follower.incoming = Some(Incoming {
                term,
                last,
                bytes: Vec::new(),
            });
        }
        let have = match &mut follower.incoming {
            Some(i) if i.term == term && i.last == last => {
                if offset == i.bytes.len() as u64 {
                    i.bytes.extend_from_slice(&data);
                    if done {
                        None
                    } else {
                        Some(i.bytes.len() as u64)
                    }
                } else {
                    Some(i.bytes.len() as u64) // a gap or a duplicate
                }
            }
            _ => Some(0), // another snapshot, or one this node lost: restart
        };
        if let Some(next_offset) = have {
            let msg = PeerMsg::SnapshotAck {
                term,
                last,
                next_offset,
            };
            return self.send(from, msg);
        }
        let bytes = follower.incoming.take().expect("assembled above").bytes;
        match Snapshot::decode(&bytes) {
            Ok(snapshot) if snapshot.last == last => self.install_snapshot(now, snapshot),
            Ok(snapshot) => {
                tracing::error!(from, expected = ?last, found = ?snapshot.last, "the leader's snapshot does not end where its messages say; asking again");
                self.send(
                    from,
                    PeerMsg::SnapshotAck {
                        term,
                        last,
                        next_offset: 0,
                    },
                );
            }
            Err(e) => {
                tracing::error!(from, error = %e, bytes = bytes.len(), "the leader's snapshot does not decode; asking again");
                self.send(
                    from,
                    PeerMsg::SnapshotAck {
                        term,
                        last,
                        next_offset: 0,
                    },
                );
            }
        }
    }

    /// Replace the applied view (and the log before the snapshot) by the
    /// leader's snapshot, which is ahead of this node's commit index. The
    /// answer goes out once it is durable
    /// ([`snapshot_persisted`](Core::snapshot_persisted)).
    fn install_snapshot(&mut self, now: Millis, snapshot: Snapshot) {
        let last = snapshot.last;
        debug_assert!(last.index > self.commit);
        let keep_suffix = self.term_at(last.index) == Some(last.term);
        tracing::info!(
            index = last.index,
            term = last.term,
            keys = snapshot.kv.len(),
            keep_suffix,
            "installing the leader's snapshot"
        );
        let replace_log = !keep_suffix;
        if replace_log {
            // Raft §7: the log does not hold the snapshot's last entry, so
            // nothing in it is known to match the leader's after it.
            self.log.clear();
            self.offset = last.index;
            self.offset_term = last.term;
            self.durable = self.durable.min(self.commit);
        }
        self.kv = snapshot.kv.clone();
        self.live_keys = live_keys(&self.kv);
        self.commit = last.index;
        self.applied = last.index;
        self.raise_leader_match(last.index);
        let snapshot = Arc::new(snapshot);
        self.snapshot_pending = Some(Arc::clone(&snapshot));
        self.out.push_back(Output::Persist(Persist {
            snapshot: Some(snapshot),
            replace_log,
            ..Persist::default()
        }));
        self.check_reads(now);
    }

    fn maybe_send_timeout_now(&mut self, target: NodeId) {
        let last = self.last_index();
        let term = self.hard.term;
        if let Some(p) = self.role.progress_mut(target) {
            if p.match_index == last && !p.timeout_now_sent {
                p.timeout_now_sent = true;
                self.send(target, PeerMsg::TimeoutNow { term });
            }
        }
    }

    /// The answer to a message from an older term: the current term, which
    /// makes its sender step down.
    fn stale_term_answer(&self) -> PeerMsg {
        PeerMsg::HeartbeatResp {
            term: self.hard.term,
            seq: 0,
            voter: self.hard.voter,
        }
    }

    /// This node's answer to an append.
    fn append_resp(&self, term: u64, result: AppendResult) -> PeerMsg {
        PeerMsg::AppendResp {
            term,
            result,
            voter: self.hard.voter,
        }
    }

    /// A learner holds, durably and matching its leader's log, the
    /// leader's commit index, which is of the leader's own term: it holds
    /// every committed entry, so it may vote and count towards quorums
    /// again. Recorded in the hard state before anything else leaves.
    fn become_voter(&mut self, leader: NodeId, leader_commit: u64) {
        tracing::info!(
            term = self.hard.term,
            leader,
            commit = leader_commit,
            durable = self.durable,
            "caught up with the leader: this node votes again"
        );
        self.hard.voter = true;
        self.persist_hard();
    }

    // --------------------------------------------------------------- commit

    fn advance_leader_commit(&mut self, now: Millis) {
        let Some(leader) = self.role.leader() else {
            return;
        };
        // Learners do not count: their logs may lack what they once held.
        let mut matched: Vec<u64> = leader
            .progress
            .values()
            .filter(|p| p.voter)
            .map(|p| p.match_index)
            .collect();
        matched.push(self.durable);
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&candidate) = matched.get(self.config.majority() - 1) else {
            return;
        };
        // Only entries of the current term commit by counting (Raft §5.4.2).
        if candidate > self.commit && self.term_at(candidate) == Some(self.hard.term) {
            self.advance_commit_to(now, candidate);
        }
    }

    fn advance_commit_to(&mut self, now: Millis, commit: u64) {
        if commit <= self.commit {
            return;
        }
        self.commit = commit;
        while self.applied < self.commit {
            self.applied += 1;
            let entry = &self
                .stored(self.applied)
                .expect("committed entries are held")
                .entry;
            let position = entry.position;
            let bytes = size::entry_bytes(entry) as u64;
            match &entry.command {
                Command::Noop => {}
                Command::Put { key, value } => {
                    let old = self.kv.insert(key.clone(), (Some(value.clone()), position));
                    if old.is_none_or(|(v, _)| v.is_none()) {
                        self.live_keys += 1;
                    }
                }
                Command::Delete { key } => {
                    let old = self.kv.insert(key.clone(), (None, position));
                    if old.is_some_and(|(v, _)| v.is_some()) {
                        self.live_keys -= 1;
                    }
                }
            }
            self.applied_bytes += bytes;
        }
        self.maybe_take_snapshot();
        if self.is_leader() {
            self.check_writes();
        }
        self.check_reads(now);
    }

    /// Take a snapshot of the applied view when `snapshot_every` entries
    /// were applied since the last one (and none is being written).
    fn maybe_take_snapshot(&mut self) {
        let every = self.config.snapshot_every;
        let since = self.snapshot.as_ref().map_or(0, |s| s.last.index);
        let by_count = every != 0 && self.applied - since >= every;
        let bytes = self.config.snapshot_bytes;
        let by_bytes = bytes != 0 && self.applied_bytes >= bytes;
        if self.snapshot_pending.is_some() || !(by_count || by_bytes) {
            return;
        }
        self.applied_bytes = 0;
        let snapshot = Arc::new(Snapshot {
            last: self.position_at(self.applied),
            kv: self.kv.clone(),
        });
        tracing::debug!(
            index = snapshot.last.index,
            keys = snapshot.kv.len(),
            "taking a snapshot"
        );
        self.snapshot_pending = Some(Arc::clone(&snapshot));
        self.out.push_back(Output::Persist(Persist {
            snapshot: Some(snapshot),
            ..Persist::default()
        }));
    }

    // ------------------------------------------------------------- requests

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

    /// Whether `op` can only be served by the leader (writes, cas and
    /// leader reads; follower and session reads are served anywhere).
    fn needs_leader(&self, op: &ClientOp) -> bool {
        match op {
            ClientOp::Get { consistency, .. } => matches!(
                consistency.unwrap_or(self.config.default_read),
                ReadMode::Leader
            ),
            ClientOp::Put { .. } | ClientOp::Delete { .. } | ClientOp::Cas { .. } => true,
        }
    }

    /// Holds a request that needs a leader while this node has not heard
    /// from one lately, instead of sending the client to a leader that
    /// may be gone (or nowhere): it is answered as soon as a leader is
    /// heard (or served here, if this node wins an election), so the
    /// client does not have to poll the cluster through the election. At
    /// most an election timeout (see [`settle_held`](Core::settle_held)).
    fn hold(&mut self, now: Millis, req_id: RequestId, op: ClientOp, ack: Option<AckMode>) {
        let held_bytes: usize = self.held.iter().map(|h| op_bytes(&h.op)).sum();
        if self.held.len() >= MAX_HELD || held_bytes + op_bytes(&op) > MAX_HELD_BYTES {
            let leader_hint = self.leader();
            return self.reply(req_id, Reply::NotLeader { leader_hint });
        }
        self.held.push_back(HeldRequest {
            req_id,
            op,
            ack,
            deadline: now.plus(self.config.election_timeout_max_ms),
        });
        self.arm_request_timer();
    }

    /// Answers the held requests once a leader is heard (served here if
    /// this node leads), and those whose wait is over.
    fn settle_held(&mut self, now: Millis) {
        if self.held.is_empty() {
            return;
        }
        if self.is_leader() || self.leader_heard_lately(now) {
            // Served here, or sent to a leader known to be alive (or to
            // the target of this leader's handover).
            let held = std::mem::take(&mut self.held);
            self.arm_request_timer();
            for held in held {
                self.handle_client(now, held.req_id, held.op, held.ack);
            }
            return;
        }
        let leader_hint = self.leader();
        while self.held.front().is_some_and(|h| now >= h.deadline) {
            let held = self.held.pop_front().expect("checked above");
            self.reply(held.req_id, Reply::NotLeader { leader_hint });
        }
        self.arm_request_timer();
    }

    /// `Some(hint)` when this node must refuse writes.
    fn refuse_writes(&self) -> Option<Option<NodeId>> {
        match self.role.leader() {
            None => Some(self.leader()),
            Some(leader) => leader.transfer.map(Some),
        }
    }

    fn handle_write(&mut self, now: Millis, req_id: RequestId, command: Command, ack: AckMode) {
        if let Some(hint) = self.refuse_writes() {
            return self.reply(req_id, Reply::NotLeader { leader_hint: hint });
        }
        // An entry no append can carry would stall replication for good.
        let entry = LogEntry {
            position: LogPosition::new(u64::MAX, u64::MAX),
            command,
        };
        let size = size::entry_bytes(&entry);
        if size > self.entry_budget() {
            let message = format!(
                "this write takes {size} bytes in a replication message, more than the {} \
                 the transport carries (max_message_bytes = {}, from limits.max_frame_bytes): \
                 use a smaller value",
                self.entry_budget(),
                self.config.max_message_bytes
            );
            return self.reply(req_id, Reply::BadRequest { message });
        }
        let command = entry.command;
        let position = self.append(now, command);
        let write = PendingWrite {
            position,
            ack,
            deadline: now.plus(self.config.write_timeout_ms),
        };
        self.add_write(req_id, write);
        if let Some(leader) = self.role.leader_mut() {
            leader.replicate_due = Some(now);
        }
        self.advance_leader_commit(now);
        self.check_writes();
    }

    fn handle_get(&mut self, now: Millis, req_id: RequestId, key: Vec<u8>, mode: ReadMode) {
        match mode {
            ReadMode::Leader => {
                if let Some(hint) = self.refuse_writes() {
                    return self.reply(req_id, Reply::NotLeader { leader_hint: hint });
                }
                self.start_leader_read(now, req_id, key, None);
            }
            ReadMode::Follower { max_staleness_ms } => {
                if let Some(max) = max_staleness_ms {
                    let staleness = self.staleness(now);
                    if staleness.is_none_or(|s| s > max) {
                        return self.reply(
                            req_id,
                            Reply::Unavailable {
                                reason: Unavailable::TooStale {
                                    staleness_ms: staleness,
                                    max_staleness_ms: max,
                                },
                            },
                        );
                    }
                }
                let reply = self.read_reply(&key);
                self.reply(req_id, reply);
            }
            ReadMode::Session { after } => {
                let read = PendingRead {
                    key,
                    wait: ReadWait::Session { after },
                    cas: None,
                    deadline: now.plus(self.config.read_timeout_ms),
                };
                self.add_read(req_id, read);
                self.check_reads(now);
            }
        }
    }

    /// Register a read that needs leadership confirmed (a heartbeat round
    /// answered by a majority) and everything committed or acknowledged so
    /// far applied.
    fn start_leader_read(
        &mut self,
        now: Millis,
        req_id: RequestId,
        key: Vec<u8>,
        cas: Option<(Option<Vec<u8>>, Vec<u8>, AckMode)>,
    ) {
        let Some(leader) = self.role.leader() else {
            return;
        };
        // A cas mismatch was judged against the whole log: wait for all of it.
        let read_index = if cas.is_some() {
            self.last_index()
        } else {
            self.commit.max(leader.term_start).max(leader.acked_through)
        };
        self.heartbeat(now);
        let read = PendingRead {
            key,
            wait: ReadWait::Leader {
                read_index,
                seq: self.read_seq,
            },
            cas,
            deadline: now.plus(self.config.read_timeout_ms),
        };
        self.add_read(req_id, read);
        self.check_reads(now);
    }

    /// The newest value of `key` in the log, committed or not (leader, for
    /// cas).
    fn latest_value(&self, key: &[u8]) -> Option<&[u8]> {
        for s in self.log[(self.applied - self.offset) as usize..]
            .iter()
            .rev()
        {
            match &s.entry.command {
                Command::Put { key: k, value } if k == key => return Some(value),
                Command::Delete { key: k } if k == key => return None,
                _ => {}
            }
        }
        self.kv.get(key).and_then(|(v, _)| v.as_deref())
    }

    fn read_reply(&self, key: &[u8]) -> Reply {
        let (value, version) = self.kv.get(key).cloned().unwrap_or_default();
        Reply::Value {
            value,
            version,
            applied: self.position_at(self.applied),
        }
    }

    fn staleness(&self, now: Millis) -> Option<u64> {
        if self.is_leader() {
            return Some(0);
        }
        let clock = self.leader_clock?;
        let fresh = i128::from(clock.fresh_at?.0) + clock.offset;
        Some(u64::try_from(i128::from(now.0) - fresh).unwrap_or(0))
    }

    /// A heartbeat from `leader`, sent at `sent_at` on its clock, arrived
    /// at `now`; `fresh` when this node had then applied the leader's
    /// commit index as of that send.
    fn observe_leader_clock(&mut self, now: Millis, leader: NodeId, sent_at: Millis, fresh: bool) {
        let term = self.hard.term;
        let offset = i128::from(now.0) - i128::from(sent_at.0);
        let clock = match self.leader_clock {
            Some(c) if c.term == term && c.leader == leader => LeaderClock {
                offset: c.offset.min(offset),
                ..c
            },
            _ => LeaderClock {
                term,
                leader,
                offset,
                fresh_at: None,
            },
        };
        let fresh_at = if fresh {
            clock.fresh_at.max(Some(sent_at))
        } else {
            clock.fresh_at
        };
        self.leader_clock = Some(LeaderClock { fresh_at, ..clock });
    }

    fn check_writes(&mut self) {
        let Some(leader) = self.role.leader() else {
            return;
        };
        let done: Vec<RequestId> = leader
            .writes
            .iter()
            .filter(|(_, w)| self.write_acked(leader, w))
            .map(|(&id, _)| id)
            .collect();
        for req_id in done {
            let w = self.take_write(req_id).expect("listed above");
            if let Some(leader) = self.role.leader_mut() {
                leader.acked_through = leader.acked_through.max(w.position.index);
            }
            self.reply(
                req_id,
                Reply::Written {
                    position: w.position,
                },
            );
        }
    }

    fn write_acked(&self, leader: &Leader, w: &PendingWrite) -> bool {
        let index = w.position.index;
        let followers_with = || {
            leader
                .progress
                .values()
                .filter(|p| p.voter && p.match_index >= index)
                .count()
        };
        match w.ack {
            AckMode::Async => self.durable >= index,
            AckMode::SemiSync(k) => self.durable >= index && followers_with() >= k,
            AckMode::Quorum => self.commit >= index,
            // Every node, learners included.
            AckMode::All => {
                self.commit >= index && leader.progress.values().all(|p| p.match_index >= index)
            }
        }
    }

    fn check_reads(&mut self, now: Millis) {
        let majority = self.config.majority();
        let leader = self.role.leader();
        let ready: Vec<RequestId> = self
            .reads
            .iter()
            .filter(|(_, r)| match r.wait {
                ReadWait::Leader { read_index, seq } => leader.is_some_and(|leader| {
                    let confirmed = 1 + leader
                        .progress
                        .values()
                        .filter(|p| p.voter && p.acked_seq >= seq)
                        .count();
                    confirmed >= majority && self.applied >= read_index
                }),
                ReadWait::Session { after } => self.applied >= after.index,
            })
            .map(|(&id, _)| id)
            .collect();
        for req_id in ready {
            // A cas retried below can re-enter and answer later ones.
            let Some(r) = self.take_read(req_id) else {
                continue;
            };
            if let ReadWait::Session { after } = r.wait {
                let found = self.position_at(after.index);
                // Below the log's start the term is unknown (folded into
                // the snapshot): the divergence cannot be detected there.
                if self.term_at(after.index).is_some() && found != after {
                    self.reply(
                        req_id,
                        Reply::Unavailable {
                            reason: Unavailable::SessionDiverged { after, found },
                        },
                    );
                    continue;
                }
            }
            match r.cas {
                None => {
                    let reply = self.read_reply(&r.key);
                    self.reply(req_id, reply);
                }
                Some((expected, new, ack)) => {
                    let current = self.kv.get(&r.key).and_then(|(v, _)| v.clone());
                    if current == expected {
                        // It matches now: try again as a fresh cas.
                        let op = ClientOp::Cas {
                            key: r.key,
                            expected,
                            new,
                        };
                        self.handle_client(now, req_id, op, Some(ack));
                    } else {
                        self.reply(req_id, Reply::CasMismatch { current });
                    }
                }
            }
        }
    }

    fn expire_requests(&mut self, now: Millis) {
        let writes: Vec<RequestId> = self.role.leader().map_or_else(Vec::new, |leader| {
            leader
                .writes
                .iter()
                .filter(|(_, w)| now >= w.deadline)
                .map(|(&id, _)| id)
                .collect()
        });
        for req_id in writes {
            self.take_write(req_id);
            self.reply(
                req_id,
                Reply::Unknown {
                    reason: Unknown::TimedOut,
                },
            );
        }
        let reads: Vec<RequestId> = self
            .reads
            .iter()
            .filter(|(_, r)| now >= r.deadline)
            .map(|(&id, _)| id)
            .collect();
        for req_id in reads {
            // A cas still waiting here wrote nothing (one that matched on
            // its retry moved to `writes`), so this is definite.
            self.take_read(req_id);
            let reason = Unavailable::TimedOut;
            self.reply(req_id, Reply::Unavailable { reason });
        }
    }

    /// A leader's write waits for its acknowledgement until its deadline.
    fn add_write(&mut self, req_id: RequestId, write: PendingWrite) {
        let deadline = write.deadline;
        let Some(leader) = self.role.leader_mut() else {
            return;
        };
        if let Some(old) = leader.writes.insert(req_id, write) {
            self.forget_deadline(old.deadline, req_id);
        }
        self.deadlines.insert((deadline, req_id));
        self.arm_request_timer();
    }

    /// The leader's pending write `req_id`, no longer pending.
    fn take_write(&mut self, req_id: RequestId) -> Option<PendingWrite> {
        let write = self.role.leader_mut()?.writes.remove(&req_id)?;
        self.forget_deadline(write.deadline, req_id);
        Some(write)
    }

    /// A read waits until its deadline.
    fn add_read(&mut self, req_id: RequestId, read: PendingRead) {
        let deadline = read.deadline;
        if let Some(old) = self.reads.insert(req_id, read) {
            self.forget_deadline(old.deadline, req_id);
        }
        self.deadlines.insert((deadline, req_id));
        self.arm_request_timer();
    }

    /// The pending read `req_id`, no longer pending.
    fn take_read(&mut self, req_id: RequestId) -> Option<PendingRead> {
        let read = self.reads.remove(&req_id)?;
        self.forget_deadline(read.deadline, req_id);
        Some(read)
    }

    /// Request `req_id`, due at `deadline`, is no longer pending. (A write
    /// and a read under one id with one deadline share an entry: kept
    /// while either is pending.)
    fn forget_deadline(&mut self, deadline: Millis, req_id: RequestId) {
        let write_left = self
            .role
            .leader()
            .and_then(|l| l.writes.get(&req_id))
            .is_some_and(|w| w.deadline == deadline);
        let read_left = self
            .reads
            .get(&req_id)
            .is_some_and(|r| r.deadline == deadline);
        if !write_left && !read_left {
            self.deadlines.remove(&(deadline, req_id));
        }
        self.arm_request_timer();
    }

    /// Arms [`Timer::Requests`] for the earliest deadline of a pending
    /// write or read, or of the oldest held request.
    fn arm_request_timer(&mut self) {
        let pending = self.deadlines.first().map(|&(at, _)| at);
        let held = self.held.front().map(|h| h.deadline);
        self.timers
            .set_or_stop(Timer::Requests, pending.into_iter().chain(held).min());
    }
}

/// The index below which a kept tail of entries is dropped, given the
/// tail's `(index, bytes)` from the snapshot's index down: the highest
/// index at which keeping it too would exceed `max_bytes` (0: keep all;
/// `max_bytes` 0 caps nothing).
fn keep_from(tail: impl Iterator<Item = (u64, usize)>, max_bytes: u64) -> u64 {
    if max_bytes == 0 {
        return 0;
    }
    let mut kept = 0u64;
    for (index, bytes) in tail {
        kept += bytes as u64;
        if kept > max_bytes {
            return index;
        }
    }
    0
}

/// The keys of `kv` that hold a value.
fn live_keys(kv: &KeyValues) -> u64 {
    kv.values().filter(|(value, _)| value.is_some()).count() as u64
}
