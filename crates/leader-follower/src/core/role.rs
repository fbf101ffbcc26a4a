//! What a core holds in its current role only (as openraft keeps a
//! leader's bookkeeping in `Leading`, and quinn per-state data in its
//! connection `State`): a field one role uses cannot be read in another,
//! and nothing is reset by hand on a role change. A role change replaces
//! the whole state; what outlives roles (the log, the commit index, the
//! hard state, the pending reads) stays in [`Core`](crate::Core).

use std::collections::{BTreeMap, BTreeSet};

use mimeo_storage::LogPosition;

use crate::output::Role;
use crate::progress::Progress;
use crate::snapshot::Incoming;
use crate::types::{AckMode, Millis, NodeId, RequestId};

/// The state of the role a core is in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum RoleState {
    /// Following a leader (or waiting to hear from one).
    Follower(Follower),
    /// Standing for election in the current term.
    Candidate(Candidate),
    /// Leading the current term (boxed: a leader holds much more).
    Leader(Box<Leader>),
}

/// A follower's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct Follower {
    /// The leader of the current term, once heard from.
    pub(super) leader: Option<Followed>,
    /// The last probe of the leader's address, while it is silent.
    pub(super) probe: Option<LeaderProbe>,
    /// The pre-votes granted for standing in `term + 1` (this node's own
    /// included), while a pre-vote is under way.
    pub(super) pre_votes: Option<BTreeSet<NodeId>>,
    /// The snapshot being received from the leader.
    pub(super) incoming: Option<Incoming>,
}

/// The leader a follower follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Followed {
    /// Its id.
    pub(super) id: NodeId,
    /// When this follower last heard from it.
    pub(super) contact: Millis,
    /// The highest index known to match its log.
    pub(super) matched: u64,
}

/// A probe of the leader's address ([`Output::Probe`](crate::Output::Probe)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct LeaderProbe {
    /// The leader probed.
    pub(super) to: NodeId,
    /// When the probe was sent.
    pub(super) sent: Millis,
    /// When the follower had last heard from the leader: a report counts
    /// only if nothing was heard since.
    pub(super) contact: Millis,
}

/// A candidate's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Candidate {
    /// The votes granted in the current term, its own included.
    pub(super) votes: BTreeSet<NodeId>,
    /// The pre-votes granted for standing in `term + 1`, while a pre-vote
    /// is under way (its election timed out again).
    pub(super) pre_votes: Option<BTreeSet<NodeId>>,
}

/// A leader's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Leader {
    /// What it knows of each follower's log.
    pub(super) progress: BTreeMap<NodeId, Progress>,
    /// The index of its own no-op, the first entry of its term.
    pub(super) term_start: u64,
    /// The highest index of a write it acknowledged.
    pub(super) acked_through: u64,
    /// The target of a leadership transfer in progress (its deadline is
    /// [`Timer::Transfer`](super::timer::Timer::Transfer)).
    pub(super) transfer: Option<NodeId>,
    /// The writes waiting for their acknowledgement.
    pub(super) writes: BTreeMap<RequestId, PendingWrite>,
    /// New entries were appended and not yet offered to the followers:
    /// the appends go out when the driver next drains the outputs, so
    /// writes that arrive together travel together. Holds the time of the
    /// latest append.
    pub(super) replicate_due: Option<Millis>,
}

/// A write waiting for its acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct PendingWrite {
    pub(super) position: LogPosition,
    pub(super) ack: AckMode,
    pub(super) deadline: Millis,
}

impl RoleState {
    /// The public name of the role.
    pub(super) fn role(&self) -> Role {
        match self {
            RoleState::Follower(_) => Role::Follower,
            RoleState::Candidate(_) => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }

    /// The leader's state, when leading.
    pub(super) fn leader(&self) -> Option<&Leader> {
        match self {
            RoleState::Leader(leader) => Some(leader),
            _ => None,
        }
    }

    /// The leader's state, when leading.
    pub(super) fn leader_mut(&mut self) -> Option<&mut Leader> {
        match self {
            RoleState::Leader(leader) => Some(leader),
            _ => None,
        }
    }

    /// A leader's view of `peer`, when leading.
    pub(super) fn progress_mut(&mut self, peer: NodeId) -> Option<&mut Progress> {
        self.leader_mut()?.progress.get_mut(&peer)
    }

    /// The leader a follower follows.
    pub(super) fn followed(&self) -> Option<&Followed> {
        match self {
            RoleState::Follower(f) => f.leader.as_ref(),
            _ => None,
        }
    }

    /// The leader a follower follows.
    pub(super) fn followed_mut(&mut self) -> Option<&mut Followed> {
        match self {
            RoleState::Follower(f) => f.leader.as_mut(),
            _ => None,
        }
    }

    /// The pre-votes of a pre-vote under way (never a leader's).
    pub(super) fn pre_votes_mut(&mut self) -> Option<&mut BTreeSet<NodeId>> {
        match self {
            RoleState::Follower(f) => f.pre_votes.as_mut(),
            RoleState::Candidate(c) => c.pre_votes.as_mut(),
            RoleState::Leader(_) => None,
        }
    }
}
