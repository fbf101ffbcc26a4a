//! An exhaustive (bounded) check of the core's election and commit rules
//! with stateright's actor model: three actors, each wrapping a real
//! [`Core`], exchange the core's own messages over a network that delivers
//! them in any order; timers fire in any order; a node's disk is instant.
//!
//! Properties, over every reachable state up to the depth bound:
//! - **at most one leader per term** (over the whole history: every
//!   (term, sender) of a leader-only message is recorded);
//! - **no quorum-acknowledged write is lost**: every leader of the write's
//!   term or later, and every node whose commit index covers it, holds it.
//!
//! The same model with a broken driver (one that does not persist its vote
//! across a crash) must find two leaders in one term: the check can fail.

use std::borrow::Cow;
use std::collections::BTreeSet;

use mimeo_leader_follower::{
    AckMode, ClientOp, Config, Core, HardState, LogEntry, LogPosition, Millis, NodeId, Output,
    PeerMsg, Reply, Role,
};
use stateright::actor::{
    model_timeout, Actor, ActorModel, ActorModelState, Envelope, Id, Network, Out,
};
use stateright::{Checker, Expectation, Model};

const NODES: usize = 3;

/// The depth bound; `LF_MODEL_DEPTH` explores further.
fn depth() -> usize {
    std::env::var("LF_MODEL_DEPTH")
        .map(|d| d.parse().expect("LF_MODEL_DEPTH is a number"))
        .unwrap_or(10)
}

/// One node: the core, its own clock, and what it acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct NodeState {
    core: Core,
    now: Millis,
    writes_left: u8,
    acked: Vec<LogPosition>,
    disk: Disk,
}

/// What survives a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Disk {
    hard: HardState,
    log: Vec<LogEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    /// Time passes until the core's next deadline.
    Tick,
    /// A client writes to this node (once), under `quorum`.
    Write,
}

#[derive(Clone)]
struct Node {
    /// A deliberately broken driver: does not keep its vote across crashes.
    forget_vote: bool,
    /// Whether the cores ask for pre-votes before elections.
    pre_vote: bool,
}

fn config(id: usize, pre_vote: bool) -> Config {
    let peers = (0..NODES)
        .filter(|&p| p != id)
        .map(|p| p as NodeId)
        .collect();
    let mut c = Config::new(id as NodeId, peers);
    c.seed = 1;
    c.pre_vote = pre_vote;
    c
}

impl Node {
    /// Perform the core's outputs: messages out, an instant disk, replies.
    fn drain(&self, state: &mut NodeState, o: &mut Out<Self>) {
        while let Some(output) = state.core.poll_output() {
            match output {
                Output::Send { to, msg } => o.send(Id::from(to as usize), msg),
                Output::Persist(p) => {
                    if let Some(from) = p.truncate_from {
                        state.disk.log.truncate(from as usize - 1);
                    }
                    let last = p.entries.last().map(|e| e.position);
                    state.disk.log.extend(p.entries);
                    if let Some(mut hard) = p.hard_state {
                        if self.forget_vote {
                            hard.voted_for = None;
                        }
                        state.disk.hard = hard;
                    }
                    o.save(state.disk.clone());
                    if let Some(last) = last {
                        state.core.persisted(state.now, last);
                    }
                }
                Output::Reply { reply, .. } => {
                    if let Reply::Written { position } = reply {
                        state.acked.push(position);
                    }
                }
            }
        }
    }
}

impl Actor for Node {
    type Msg = PeerMsg;
    type Timer = Timer;
    type State = NodeState;
    type Storage = Disk;
    type Random = ();

    fn on_start(&self, id: Id, storage: &Option<Disk>, o: &mut Out<Self>) -> NodeState {
        let disk = storage.clone().unwrap_or_default();
        let core = Core::recover(
            config(usize::from(id), self.pre_vote),
            Millis(0),
            disk.hard,
            disk.log.clone(),
        )
        .expect("valid");
        o.set_timer(Timer::Tick, model_timeout());
        o.set_timer(Timer::Write, model_timeout());
        NodeState {
            core,
            now: Millis(0),
            writes_left: 1,
            acked: Vec::new(),
            disk,
        }
    }

    fn on_msg(
        &self,
        _id: Id,
        state: &mut Cow<'_, NodeState>,
        src: Id,
        msg: PeerMsg,
        o: &mut Out<Self>,
    ) {
        let s = state.to_mut();
        s.core.handle_peer(s.now, usize::from(src) as NodeId, msg);
        self.drain(s, o);
    }

    fn on_timeout(
        &self,
        _id: Id,
        state: &mut Cow<'_, NodeState>,
        timer: &Timer,
        o: &mut Out<Self>,
    ) {
        match timer {
            Timer::Tick => {
                let s = state.to_mut();
                s.now = s.now.max(s.core.next_timeout());
                s.core.tick(s.now);
                self.drain(s, o);
                o.set_timer(Timer::Tick, model_timeout());
            }
            Timer::Write => {
                if state.core.role() == Role::Leader && state.writes_left > 0 {
                    let s = state.to_mut();
                    s.writes_left -= 1;
                    let op = ClientOp::Put {
                        key: b"k".to_vec(),
                        value: vec![s.core.id() as u8],
                    };
                    s.core.handle_client(s.now, 0, op, Some(AckMode::Quorum));
                    self.drain(s, o);
                }
                if state.writes_left > 0 {
                    o.set_timer(Timer::Write, model_timeout());
                }
            }
        }
    }
}

/// Every (term, node) that sent a leader-only message.
type Leaders = BTreeSet<(u64, usize)>;

/// Pre-vote adds two message deliveries to every election, which puts a
/// quorum write and the broken driver's counterexample out of reach of a
/// quick check: the main checks run without it, and
/// `pre_vote_keeps_the_election_and_commit_rules` checks it for safety.
fn model(
    forget_vote: bool,
    pre_vote: bool,
    max_term: u64,
    max_crashes: usize,
) -> ActorModel<Node, u64, Leaders> {
    ActorModel::new(max_term, Leaders::new())
        .actors((0..NODES).map(|_| Node {
            forget_vote,
            pre_vote,
        }))
        .init_network(Network::new_unordered_nonduplicating([]))
        .max_crashes(max_crashes)
        .record_msg_out(|_, leaders, env: Envelope<&PeerMsg>| {
            if env.msg.from_leader() {
                let mut leaders = leaders.clone();
                leaders.insert((env.msg.term(), usize::from(env.src)));
                Some(leaders)
            } else {
                None
            }
        })
        .within_boundary(|&max_term, state| {
            state
                .actor_states
                .iter()
                .all(|s| s.core.term() <= max_term && s.core.last_position().index <= 3)
        })
        .property(
            Expectation::Always,
            "at most one leader per term",
            |_, state| one_leader_per_term(state),
        )
        .property(
            Expectation::Always,
            "no quorum-acknowledged write is lost",
            |_, state| no_acked_write_lost(state),
        )
        .property(Expectation::Sometimes, "a leader is elected", |_, state| {
            state
                .actor_states
                .iter()
                .any(|s| s.core.role() == Role::Leader)
        })
        .property(
            Expectation::Sometimes,
            "a quorum write is acknowledged",
            |_, state| state.actor_states.iter().any(|s| !s.acked.is_empty()),
        )
}

fn one_leader_per_term(state: &ActorModelState<Node, Leaders>) -> bool {
    let mut terms = BTreeSet::new();
    let history_ok = state.history.iter().all(|&(term, _)| terms.insert(term));
    let mut now_leading = BTreeSet::new();
    let current_ok = state
        .actor_states
        .iter()
        .filter(|s| s.core.role() == Role::Leader)
        .all(|s| now_leading.insert(s.core.term()));
    history_ok && current_ok
}

fn no_acked_write_lost(state: &ActorModelState<Node, Leaders>) -> bool {
    let acked: Vec<LogPosition> = state
        .actor_states
        .iter()
        .flat_map(|s| s.acked.iter().copied())
        .collect();
    state.actor_states.iter().all(|s| {
        acked.iter().all(|p| {
            let must_hold = (s.core.role() == Role::Leader && s.core.term() >= p.term)
                || s.core.commit_index() >= p.index;
            !must_hold || s.core.entry(p.index).map(|e| e.position) == Some(*p)
        })
    })
}

#[test]
fn election_and_commit_rules_hold_on_three_nodes() {
    let checker = model(false, false, 2, 0)
        .checker()
        .target_max_depth(depth())
        .spawn_bfs()
        .join();
    println!(
        "states: {} unique of {} visited",
        checker.unique_state_count(),
        checker.state_count()
    );
    checker.assert_properties();
}

#[test]
fn the_check_finds_two_leaders_when_votes_are_not_persisted() {
    let checker = model(true, false, 1, 1)
        .checker()
        .target_max_depth(depth())
        .spawn_bfs()
        .join();
    let path = checker
        .discovery("at most one leader per term")
        .expect("forgetting votes across a crash must allow two leaders in a term");
    println!("counterexample: {:?}", path.last_state().history);
}

#[test]
fn pre_vote_keeps_the_election_and_commit_rules() {
    let checker = model(false, true, 2, 0)
        .checker()
        .target_max_depth(depth())
        .spawn_bfs()
        .join();
    println!(
        "states: {} unique of {} visited",
        checker.unique_state_count(),
        checker.state_count()
    );
    checker.assert_no_discovery("at most one leader per term");
    checker.assert_no_discovery("no quorum-acknowledged write is lost");
    // The bound reaches elections won through pre-votes.
    checker
        .discovery("a leader is elected")
        .expect("a leader within the depth bound");
}
