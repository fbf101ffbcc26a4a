//! The messages cores exchange. The driver encodes them (postcard) into
//! `mimeo_wire::PeerMessage::payload`.

use mimeo_storage::LogPosition;
use serde::{Deserialize, Serialize};

use crate::types::LogEntry;

/// A message from one core to another.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PeerMsg {
    /// A candidate asks for a vote.
    RequestVote {
        /// The candidate's term.
        term: u64,
        /// The candidate's last log position (the election restriction:
        /// votes go only to candidates at least as up to date).
        last: LogPosition,
        /// Sent because the leader handed leadership over: the receiver
        /// must not ignore it for having heard from a leader recently.
        transfer: bool,
    },
    /// The answer to a vote request.
    Vote {
        /// The voter's term.
        term: u64,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Entries from the leader, after `prev` (log matching: the follower
    /// accepts them only if its entry at `prev.index` has `prev.term`).
    Append {
        /// The leader's term.
        term: u64,
        /// The position just before `entries`.
        prev: LogPosition,
        /// The entries (possibly none: a probe).
        entries: Vec<LogEntry>,
        /// The leader's commit index.
        commit: u64,
    },
    /// A follower's answer to an append (or, unsolicited, news that more
    /// entries became durable).
    AppendResp {
        /// The follower's term.
        term: u64,
        /// The outcome.
        result: AppendResult,
        /// Whether the follower is a voter: a learner's durable entries
        /// do not count towards commit or any ack mode but `all`.
        voter: bool,
    },
    /// The leader's heartbeat: keeps followers from starting elections,
    /// carries the commit index, and (echoed in the answer) confirms
    /// leadership for leader reads.
    Heartbeat {
        /// The leader's term.
        term: u64,
        /// The commit index this follower may apply up to (the leader's
        /// commit index capped at the follower's match index).
        commit: u64,
        /// The leader's own commit index (the follower is up to date once
        /// it has applied this far).
        leader_commit: u64,
        /// The leader's read round, echoed back.
        seq: u64,
        /// When the leader sent it, on the leader's own clock (its
        /// [`Millis`](crate::Millis), which count from an origin of its
        /// own): a follower measures its staleness from this, not from
        /// when the heartbeat arrived.
        sent_at: crate::Millis,
        /// The leader's commit index is of its own term, so every entry
        /// before it is committed too: a learner whose log durably holds
        /// the leader's up to `leader_commit` may become a voter.
        settled: bool,
    },
    /// The answer to a heartbeat.
    HeartbeatResp {
        /// The follower's term.
        term: u64,
        /// The round it answers.
        seq: u64,
        /// Whether the follower is a voter (a learner's answer does not
        /// confirm leadership for leader reads).
        voter: bool,
    },
    /// The leader hands leadership over: the receiver starts an election at
    /// once.
    TimeoutNow {
        /// The leader's term.
        term: u64,
    },
    /// A node whose election timeout passed asks whether it could win an
    /// election, before it raises its own term (pre-vote, Raft thesis
    /// §9.6). Neither the sender nor the receiver changes term or vote.
    PreVote {
        /// The term the sender would stand in: its current term plus one.
        term: u64,
        /// The sender's last log position.
        last: LogPosition,
    },
    /// The answer to a pre-vote.
    PreVoteResp {
        /// When granted, the term of the pre-vote (the receiver must not
        /// adopt it); when refused, the voter's current term.
        term: u64,
        /// Whether the voter would grant a vote in that term.
        granted: bool,
    },
    /// One chunk of the leader's snapshot, for a follower that needs
    /// entries the leader no longer has in its log (Raft §7). The leader
    /// sends the next chunk only after the answer to this one, so at most
    /// one chunk is in flight per follower.
    InstallSnapshot {
        /// The leader's term.
        term: u64,
        /// The snapshot's last applied position.
        last: LogPosition,
        /// Where `data` starts in the encoded snapshot.
        offset: u64,
        /// The bytes (at most `Config::snapshot_chunk_bytes`).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Whether this chunk ends the snapshot.
        done: bool,
    },
    /// A follower's answer to a chunk that did not complete a snapshot:
    /// the offset it expects next (after a gap, or a restart that lost
    /// what it had assembled, an earlier offset; 0 starts over). A
    /// completed snapshot is answered with an [`PeerMsg::AppendResp`] once
    /// it is durable.
    SnapshotAck {
        /// The follower's term.
        term: u64,
        /// The snapshot being assembled.
        last: LogPosition,
        /// The next byte the follower expects.
        next_offset: u64,
    },
}

/// The outcome of an append.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to `matched` (the
    /// append's last entry), and is durable up to `durable` (which may be
    /// lower; another answer follows when more becomes durable).
    Ok {
        /// The highest index known to match the leader's log.
        matched: u64,
        /// The highest index that matches the leader's log and is durable.
        durable: u64,
    },
    /// `prev` did not match: resend from `hint + 1`.
    Conflict {
        /// An index at or below which the logs may match.
        hint: u64,
    },
}

impl PeerMsg {
    /// The sender's term.
    pub fn term(&self) -> u64 {
        match self {
            PeerMsg::RequestVote { term, .. }
            | PeerMsg::Vote { term, .. }
            | PeerMsg::Append { term, .. }
            | PeerMsg::AppendResp { term, .. }
            | PeerMsg::Heartbeat { term, .. }
            | PeerMsg::HeartbeatResp { term, .. }
            | PeerMsg::TimeoutNow { term }
            | PeerMsg::PreVote { term, .. }
            | PeerMsg::PreVoteResp { term, .. }
            | PeerMsg::InstallSnapshot { term, .. }
            | PeerMsg::SnapshotAck { term, .. } => *term,
        }
    }

    /// Who may send it: `true` for messages only a leader sends.
    pub fn from_leader(&self) -> bool {
        matches!(
            self,
            PeerMsg::Append { .. }
                | PeerMsg::Heartbeat { .. }
                | PeerMsg::TimeoutNow { .. }
                | PeerMsg::InstallSnapshot { .. }
        )
    }
}
