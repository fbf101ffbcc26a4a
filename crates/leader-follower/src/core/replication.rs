//! Log shipping: a leader appends and sends its followers what their
//! windows allow; a follower checks each append against its log, keeps
//! it, and answers.

use mimeo_storage::LogPosition;

use super::timer::Timer;
use super::{Core, Stored};
use crate::message::{AppendResult, PeerMsg};
use crate::output::{Output, Persist};
use crate::progress::Mode;
use crate::size;
use crate::types::{Command, LogEntry, Millis, NodeId};

impl Core {
    /// The driver could not send `msg` to `to`: the transport refused it
    /// (too large for one frame, which the core's byte budget should
    /// prevent; an unknown peer). For an append or a snapshot chunk, the
    /// leader halves what it puts in one message to that follower and
    /// probes it again from its match index, so replication to it resumes
    /// in smaller pieces instead of rebuilding the refused message for
    /// ever. Counted in [`Status::send_failures`](crate::Status::send_failures). Other messages are
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

    /// The highest index known to match the log of the leader this node
    /// follows (0 when it follows none).
    pub(super) fn leader_match(&self) -> u64 {
        self.role.followed().map_or(0, |l| l.matched)
    }

    /// The leader this node follows holds its log up to `index`, at least.
    pub(super) fn raise_leader_match(&mut self, index: u64) {
        if let Some(leader) = self.role.followed_mut() {
            leader.matched = leader.matched.max(index);
        }
    }

    pub(super) fn last_index(&self) -> u64 {
        self.offset + self.log.len() as u64
    }

    /// The most encoded bytes of entries one append may carry.
    pub(super) fn entry_budget(&self) -> usize {
        self.config.max_message_bytes - size::APPEND_OVERHEAD
    }

    /// The term of the entry at `index`, when known: from `offset` (the
    /// snapshot's position or an entry kept beside it) to the last index.
    pub(super) fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.offset {
            Some(self.offset_term)
        } else {
            self.entry(index).map(|e| e.position.term)
        }
    }

    pub(super) fn position_at(&self, index: u64) -> LogPosition {
        LogPosition::new(self.term_at(index).unwrap_or(0), index)
    }

    /// Append a new entry of the current term (leader).
    pub(super) fn append(&mut self, now: Millis, command: Command) -> LogPosition {
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
    pub(super) fn heartbeat(&mut self, now: Millis) {
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
    pub(super) fn send_appends(&mut self, now: Millis, peer: NodeId) {
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

    pub(super) fn on_append(
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
    pub(super) fn send_append_ok(&mut self, to: NodeId, term: u64, result: AppendResult) {
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

    pub(super) fn on_append_resp(&mut self, now: Millis, from: NodeId, result: AppendResult) {
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

    /// The answer to a message from an older term: the current term, which
    /// makes its sender step down.
    pub(super) fn stale_term_answer(&self) -> PeerMsg {
        PeerMsg::HeartbeatResp {
            term: self.hard.term,
            seq: 0,
            voter: self.hard.voter,
        }
    }

    /// This node's answer to an append.
    pub(super) fn append_resp(&self, term: u64, result: AppendResult) -> PeerMsg {
        PeerMsg::AppendResp {
            term,
            result,
            voter: self.hard.voter,
        }
    }

    /// A heartbeat from the leader `from`: it still leads `term`, and
    /// commits `commit` of what this follower holds (`leader_commit` in
    /// all, which `settled` says is of its own term); round `seq`, sent at
    /// `sent_at` on its clock.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_heartbeat(
        &mut self,
        now: Millis,
        from: NodeId,
        term: u64,
        commit: u64,
        leader_commit: u64,
        seq: u64,
        settled: bool,
        sent_at: Millis,
    ) {
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

    /// A follower answered heartbeat round `seq` of `term` (leader).
    pub(super) fn on_heartbeat_resp(
        &mut self,
        now: Millis,
        from: NodeId,
        term: u64,
        seq: u64,
        voter: bool,
    ) {
        if self.is_leader() && term == self.hard.term {
            if let Some(p) = self.role.progress_mut(from) {
                p.set_voter(voter);
                p.acked_seq = p.acked_seq.max(seq);
                p.last_heard = Some(now);
            }
            self.check_reads(now);
        }
    }
}
