//! Elections: the election timeout, pre-votes and votes, leader
//! stickiness, probes of a silent leader, the role changes, and
//! leadership transfer.

use std::collections::{BTreeMap, BTreeSet};

use mimeo_storage::LogPosition;

use super::requests::ReadWait;
use super::role::{Candidate, Followed, Follower, Leader, LeaderProbe, RoleState};
use super::timer::Timer;
use super::Core;
use crate::message::PeerMsg;
use crate::output::Output;
use crate::progress::Progress;
use crate::types::{Command, HardState, Millis, NodeId, Reply, RequestId, Unknown};

impl Core {
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

    pub(super) fn reset_election_deadline(&mut self, now: Millis) {
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

    pub(super) fn in_lease(&self, now: Millis) -> bool {
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
    pub(super) fn leader_heard_lately(&self, now: Millis) -> bool {
        self.role
            .followed()
            .is_some_and(|l| now.since(l.contact) < self.leader_silence_ms())
    }

    /// Arms [`Timer::Probe`] for when this follower should probe its
    /// silent leader's address ([`Config::probe_leader`](crate::Config::probe_leader)): one and a half
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

    pub(super) fn probe_leader(&mut self, now: Millis) {
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
    pub(super) fn start_pre_vote(&mut self, now: Millis) {
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
    pub(super) fn start_election(&mut self, now: Millis, transfer: bool) {
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
    pub(super) fn would_vote(&self, candidate: NodeId, term: u64, last: LogPosition) -> bool {
        let free = match term.cmp(&self.hard.term) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => self.hard.voted_for.is_none_or(|v| v == candidate),
            std::cmp::Ordering::Greater => true,
        };
        // A learner does not vote: its log may lack committed entries.
        self.hard.voter && free && last >= self.last_position()
    }

    pub(super) fn on_request_vote(
        &mut self,
        now: Millis,
        from: NodeId,
        term: u64,
        last: LogPosition,
    ) {
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

    pub(super) fn become_leader(&mut self, now: Millis) {
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
    pub(super) fn become_follower(&mut self, now: Millis, term: u64, leader: Option<NodeId>) {
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
    pub(super) fn observe_leader(&mut self, now: Millis, from: NodeId) -> bool {
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

    pub(super) fn lost_quorum(&self, now: Millis) -> bool {
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

    pub(super) fn maybe_send_timeout_now(&mut self, target: NodeId) {
        let last = self.last_index();
        let term = self.hard.term;
        if let Some(p) = self.role.progress_mut(target) {
            if p.match_index == last && !p.timeout_now_sent {
                p.timeout_now_sent = true;
                self.send(target, PeerMsg::TimeoutNow { term });
            }
        }
    }

    /// A learner holds, durably and matching its leader's log, the
    /// leader's commit index, which is of the leader's own term: it holds
    /// every committed entry, so it may vote and count towards quorums
    /// again. Recorded in the hard state before anything else leaves.
    pub(super) fn become_voter(&mut self, leader: NodeId, leader_commit: u64) {
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

    /// A vote from `from` in `term` (candidate).
    pub(super) fn on_vote(&mut self, now: Millis, from: NodeId, term: u64, granted: bool) {
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

    /// Would this node vote for `from` standing in `term` with `last`?
    /// Yes only if it would grant the vote and hears no leader.
    pub(super) fn on_pre_vote(&mut self, now: Millis, from: NodeId, term: u64, last: LogPosition) {
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

    /// An answer to this node's pre-vote for `term`.
    pub(super) fn on_pre_vote_resp(&mut self, now: Millis, from: NodeId, term: u64, granted: bool) {
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

    /// The leader `from` hands leadership over to this node.
    pub(super) fn on_timeout_now(&mut self, now: Millis, from: NodeId, term: u64) {
        if term == self.hard.term
            && self.role.followed().is_some_and(|l| l.id == from)
            && self.hard.voter
        {
            tracing::info!(term, from, "leadership handed over; starting an election");
            self.start_election(now, true);
        }
    }
}
