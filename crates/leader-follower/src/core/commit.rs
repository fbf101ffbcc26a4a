//! Durability and commit: what the driver made durable, the commit index
//! a leader counts from its followers, and applying committed entries.

use mimeo_storage::LogPosition;

use super::role::RoleState;
use super::Core;
use crate::message::AppendResult;
use crate::size;
use crate::types::{Command, Millis};

impl Core {
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
    pub(super) fn after_durable(&mut self, now: Millis) {
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

    pub(super) fn advance_leader_commit(&mut self, now: Millis) {
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

    pub(super) fn advance_commit_to(&mut self, now: Millis, commit: u64) {
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
}
