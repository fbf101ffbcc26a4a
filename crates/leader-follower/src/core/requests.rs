//! Client requests: writes and their ack modes, leader, follower and
//! session reads, cas, requests held while no leader is heard, and their
//! deadlines.

use mimeo_storage::LogPosition;

use super::role::{Leader, PendingWrite};
use super::timer::Timer;
use super::Core;
use crate::size;
use crate::types::{
    AckMode, ClientOp, Command, LogEntry, Millis, NodeId, ReadMode, Reply, RequestId, Unavailable,
    Unknown,
};

/// A request that needs a leader, held by a node that has not heard from
/// one lately (an election may be near or under way) until it does:
/// answered with that leader's hint, or served here if this node wins.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct HeldRequest {
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
pub(super) enum ReadWait {
    /// Leadership confirmed by heartbeat round `seq`, and `read_index`
    /// applied.
    Leader { read_index: u64, seq: u64 },
    /// `after` applied.
    Session { after: LogPosition },
}

/// A read (or a cas that found a mismatch, which is a read too) waiting.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct PendingRead {
    key: Vec<u8>,
    pub(super) wait: ReadWait,
    /// For a cas: the expected value, the new value and the ack mode.
    cas: Option<(Option<Vec<u8>>, Vec<u8>, AckMode)>,
    deadline: Millis,
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
pub(super) struct LeaderClock {
    term: u64,
    leader: NodeId,
    offset: i128,
    /// The latest send time (leader clock) of a heartbeat whose commit
    /// index this node had applied.
    fresh_at: Option<Millis>,
}

impl Core {
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
    pub(super) fn settle_held(&mut self, now: Millis) {
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

    pub(super) fn staleness(&self, now: Millis) -> Option<u64> {
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
    pub(super) fn observe_leader_clock(
        &mut self,
        now: Millis,
        leader: NodeId,
        sent_at: Millis,
        fresh: bool,
    ) {
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

    pub(super) fn check_writes(&mut self) {
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

    pub(super) fn check_reads(&mut self, now: Millis) {
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

    pub(super) fn expire_requests(&mut self, now: Millis) {
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
    pub(super) fn take_read(&mut self, req_id: RequestId) -> Option<PendingRead> {
        let read = self.reads.remove(&req_id)?;
        self.forget_deadline(read.deadline, req_id);
        Some(read)
    }

    /// Request `req_id`, due at `deadline`, is no longer pending. (A write
    /// and a read under one id with one deadline share an entry: kept
    /// while either is pending.)
    pub(super) fn forget_deadline(&mut self, deadline: Millis, req_id: RequestId) {
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
