//! An exhaustive (bounded) check of the core's election and commit rules
//! with stateright's actor model: three actors, each wrapping a real
//! [`Core`] behind a small driver, exchange the core's own messages over a
//! network that delivers them in any order; timers fire in any order; a
//! node may restart, losing everything its driver did not write to disk;
//! the disk is instant.
//!
//! Properties, over every state within the step bound:
//! - **at most one leader per term** (over the whole history: every
//!   (term, sender) of a leader-only message is recorded);
//! - **no quorum-acknowledged write is lost**: every leader of the write's
//!   term or later, and every node whose commit index covers it, holds it;
//! - **no core assertion fails** (a panic in the core is caught and
//!   recorded, see [`guarded`]).
//!
//! # Where the checks start
//!
//! From an empty cluster a quorum write is acknowledged after eight steps
//! (election, no-op, write), and a later leader that has committed past it
//! needs six more: out of reach of an exhaustive search. So the write
//! checks start from chosen states, reached by driving the same actors
//! along a script from the empty cluster ([`scripted`]); every start is a
//! reachable state of the very model that is checked:
//!
//! - [`write_submitted`]: node 0 leads term 1 and has just appended a
//!   quorum write; its appends to both followers are in flight.
//! - [`write_acknowledged`]: node 1 stored the write, node 0 committed and
//!   acknowledged it; the append to node 2 is still in flight.
//!
//! From there every interleaving of deliveries, ticks and a restart is
//! explored, and each check **proves that it reached the interesting
//! states**: it fails unless it found a quorum-acknowledged write followed
//! by another node leading a later term (where the property bites), and,
//! without pre-vote, the node that acknowledged the write restarting and a
//! later leader committing past the write.
//!
//! # Bounds and reductions
//!
//! - Terms up to 3 from the empty cluster, 2 from the write states; logs
//!   up to 4 entries; one restart per run. A restart is one step (memory
//!   lost, started again from the disk); messages to the node stay in
//!   flight, as they would while it is down.
//! - A leader's heartbeat round is explored once per commit index (the
//!   round that tells followers the new commit index): more rounds only
//!   matter to leader reads (not modelled) and to the retransmission and
//!   check-quorum deadlines, 4 and 12 rounds away, beyond the bound.
//! - A restart that would lose nothing (the recovered core equals the
//!   running one) is not explored.
//! - No symmetry reduction: node ids live in the cores' private state
//!   (votes, leader, progress), which a representative function cannot
//!   rewrite.
//!
//! # Negative checks
//!
//! The same model with a broken driver must fail: one that does not keep
//! its vote across a restart must yield two leaders in a term, and one
//! that tells the core entries are durable before they are on disk must
//! lose a quorum-acknowledged write.
//!
//! # Cost
//!
//! `LF_MODEL_DEPTH=n` sets every check's step bound (actions after the
//! start state) to `n`; the defaults keep the whole file under about a
//! minute and 2 GB in debug. Measured with
//! `/usr/bin/time -v cargo test -p mimeo-leader-follower --test model -- --nocapture`
//! after the build (debug, two tests at a time, 2 cores):
//!
//! | test | start | steps | unique states | time |
//! |---|---|---|---|---|
//! | `elections_from_an_empty_cluster_…` | empty | 7 | 283,202 | 9.4 s |
//! | `pre_vote_elections_from_an_empty_cluster_…` | empty | 8 | 271,154 | 12.4 s |
//! | `a_quorum_acknowledged_write_survives_failover` | both write states | 9 | 561,266 | 39.4 s |
//! | `…_with_pre_vote` | acknowledged | 7 | 123,541 | 5.9 s |
//! | `the_check_finds_two_leaders_…` | empty | 7 (a violation at 7) | 8,774 | 0.6 s |
//! | `the_check_finds_a_lost_write_…` | acknowledged | 7 (a violation at 4) | 4,191 | 0.2 s |
//!
//! Whole run: 41 s wall, 2.1 GB peak resident. Each step deeper costs
//! 3–5 times as much: run one test deeper with a filter, e.g.
//! `LF_MODEL_DEPTH=8 cargo test -p mimeo-leader-follower --test model -- --exact
//! a_quorum_acknowledged_write_survives_failover_with_pre_vote` (411,109
//! states, 25 s, 1.4 GB; it also reaches the restart-and-commit failover).

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Once};
use std::time::Instant;

use mimeo_leader_follower::{
    AckMode, ClientOp, Config, Core, DurableState, HardState, LogEntry, LogPosition, Millis,
    NodeId, Output, PeerMsg, Reply, Role, Snapshot,
};
use stateright::actor::{
    model_timeout, Actor, ActorModel, ActorModelAction, ActorModelState, Envelope, Id, Network, Out,
};
use stateright::{Checker, HasDiscoveries, Model, Property};

const NODES: usize = 3;

/// The step bound: `default`, or `LF_MODEL_DEPTH` when set.
fn steps(default: usize) -> usize {
    match std::env::var("LF_MODEL_DEPTH") {
        Ok(d) => d
            .parse()
            .unwrap_or_else(|_| panic!("LF_MODEL_DEPTH={d:?} is not a number of steps")),
        Err(_) => default,
    }
}

// ------------------------------------------------------------------ actors

/// How a node's driver treats its disk: as [`mimeo_leader_follower::Persist`]
/// requires, or with one deliberate bug the check must catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    /// Writes the hard state and the log before anything that follows.
    Correct,
    /// Does not keep its vote across a restart.
    ForgetsVote,
    /// Tells the core log entries are durable as soon as it has them, but
    /// writes them to disk only at the node's next tick (a deferred fsync):
    /// a restart in between loses entries the node already acknowledged.
    AcksBeforeFsync,
}

/// One node: the core, its clock and disk, and the model's bookkeeping
/// (kept across restarts).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct NodeState {
    core: Core,
    now: Millis,
    disk: Disk,
    /// [`Driver::AcksBeforeFsync`]: the log as written, not yet on disk.
    unsynced: Option<Vec<LogEntry>>,
    /// Quorum writes this node's client may still send.
    writes_left: u8,
    /// Writes acknowledged to this node's client.
    acked: Vec<LogPosition>,
    /// Whether this node has restarted.
    restarted: bool,
    /// The leader's commit index its last heartbeat round carried.
    heartbeat_commit: u64,
    /// The message of a panic in the core: the node has stopped.
    panicked: Option<String>,
}

/// What survives a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Disk {
    hard: HardState,
    log: Vec<LogEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    /// Time passes until the core's next deadline.
    Tick,
    /// The client writes to this node (if it leads), under `quorum`.
    Write,
    /// The node loses its memory and starts again from its disk.
    Restart,
}

#[derive(Clone)]
struct Node {
    driver: Driver,
    /// Whether the cores ask for pre-votes before elections.
    pre_vote: bool,
    /// Quorum writes this node's client sends (when the node leads).
    writes: u8,
}

fn config(id: usize, pre_vote: bool) -> Config {
    let peers = (0..NODES)
        .filter(|&p| p != id)
        .map(|p| p as NodeId)
        .collect();
    let mut c = Config::new(id as NodeId, peers);
    c.bootstrap = true;
    c.seed = 1;
    c.pre_vote = pre_vote;
    // Off: a probe would cost a follower's tick a step before its
    // election. What a refused probe does (forget the leader and its
    // stickiness, stand early) is what a tick reaches anyway here, where
    // any timer may fire at any point and time jumps to each deadline.
    c.probe_leader = false;
    c
}

/// A node's [`Disk`] as [`Persist::apply_to`](mimeo_leader_follower::Persist::apply_to)
/// changes it: instantly, except for the deliberate bugs of [`Driver`].
struct Writing<'a> {
    driver: Driver,
    disk: &'a mut Disk,
    /// [`Driver::AcksBeforeFsync`]: the log as written, not yet on disk.
    unsynced: &'a mut Option<Vec<LogEntry>>,
}

impl Writing<'_> {
    /// The log image writes go to.
    fn log(&mut self) -> &mut Vec<LogEntry> {
        if self.driver == Driver::AcksBeforeFsync {
            self.unsynced.get_or_insert_with(|| self.disk.log.clone())
        } else {
            &mut self.disk.log
        }
    }
}

impl DurableState for Writing<'_> {
    type Error = Infallible;

    fn store_snapshot(&mut self, _: Arc<Snapshot>, _: bool) -> Result<(), Infallible> {
        unreachable!("the model's logs stay far below `snapshot_every`")
    }

    fn truncate_log(&mut self, from: u64) -> Result<(), Infallible> {
        self.log().truncate(from as usize - 1);
        Ok(())
    }

    fn append_log(&mut self, entries: Vec<LogEntry>) -> Result<(), Infallible> {
        self.log().extend(entries);
        Ok(())
    }

    fn store_hard_state(&mut self, mut state: HardState) -> Result<(), Infallible> {
        if self.driver == Driver::ForgetsVote {
            state.voted_for = None;
        }
        self.disk.hard = state;
        Ok(())
    }

    fn discard_log_before(&mut self, _: u64) -> Result<(), Infallible> {
        unreachable!("the model takes no snapshot, so nothing is discarded")
    }
}

impl Node {
    /// Perform the core's outputs: messages out, the disk, replies.
    fn drain(&self, state: &mut NodeState, o: &mut Out<Self>) {
        while let Some(output) = state.core.poll_output() {
            match output {
                Output::Send { to, msg } => {
                    if let PeerMsg::Heartbeat { leader_commit, .. } = msg {
                        state.heartbeat_commit = leader_commit;
                    }
                    o.send(Id::from(to as usize), msg)
                }
                Output::Persist(p) => {
                    let last = p.entries.last().map(|e| e.position);
                    let Ok(()) = p.apply_to(&mut Writing {
                        driver: self.driver,
                        disk: &mut state.disk,
                        unsynced: &mut state.unsynced,
                    });
                    if let Some(last) = last {
                        state.core.persisted(state.now, last);
                    }
                }
                Output::Reply { reply, .. } => {
                    if let Reply::Written { position } = reply {
                        state.acked.push(position);
                    }
                }
                Output::Probe { .. } => {} // off, see `config`
            }
        }
    }
}

impl Actor for Node {
    type Msg = PeerMsg;
    type Timer = Timer;
    type State = NodeState;
    type Storage = ();
    type Random = ();

    fn on_start(&self, id: Id, _storage: &Option<()>, o: &mut Out<Self>) -> NodeState {
        let core = Core::new(config(usize::from(id), self.pre_vote), Millis(0)).expect("valid");
        o.set_timer(Timer::Tick, model_timeout());
        if self.writes > 0 {
            o.set_timer(Timer::Write, model_timeout());
        }
        o.set_timer(Timer::Restart, model_timeout());
        NodeState {
            core,
            now: Millis(0),
            disk: Disk::default(),
            unsynced: None,
            writes_left: self.writes,
            acked: Vec::new(),
            restarted: false,
            heartbeat_commit: 0,
            panicked: None,
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
        if state.panicked.is_some() {
            return; // a stopped node: a no-op
        }
        guarded(state.to_mut(), |s| {
            s.core.handle_peer(s.now, usize::from(src) as NodeId, msg);
            self.drain(s, o);
        });
    }

    fn on_timeout(&self, id: Id, state: &mut Cow<'_, NodeState>, timer: &Timer, o: &mut Out<Self>) {
        // Leave `state` borrowed and re-arm `timer` for a no-op.
        let no_op = |o: &mut Out<Self>| o.set_timer(timer.clone(), model_timeout());
        if state.panicked.is_some() {
            return no_op(o);
        }
        match timer {
            Timer::Tick => {
                // A leader's tick sends a heartbeat round. Only one per
                // commit index is explored (the one that tells followers
                // the new commit index): leader reads are not modelled,
                // and the retransmission and check-quorum deadlines more
                // rounds could reach lie beyond the step bound (4 and 12
                // rounds away).
                let leader = state.core.role() == Role::Leader;
                if leader && state.core.commit_index() <= state.heartbeat_commit {
                    return no_op(o);
                }
                guarded(state.to_mut(), |s| {
                    s.now = s.now.max(s.core.next_timeout());
                    if let Some(log) = s.unsynced.take() {
                        s.disk.log = log; // the deferred write reaches the disk
                    }
                    s.core.tick(s.now);
                    self.drain(s, o);
                });
                no_op(o);
            }
            Timer::Write => {
                if state.core.role() != Role::Leader || state.writes_left == 0 {
                    return no_op(o);
                }
                guarded(state.to_mut(), |s| {
                    s.writes_left -= 1;
                    let op = ClientOp::Put {
                        key: b"k".to_vec(),
                        value: vec![s.core.id() as u8],
                    };
                    s.core.handle_client(s.now, 0, op, Some(AckMode::Quorum));
                    self.drain(s, o);
                });
                if state.writes_left > 0 {
                    no_op(o);
                }
            }
            Timer::Restart => {
                // The clock goes on; memory, pending requests and unsynced
                // writes are gone. Not re-armed: one restart per node.
                let config = config(usize::from(id), self.pre_vote);
                let disk = &state.disk;
                let core = Core::recover(config, state.now, disk.hard, disk.log.clone())
                    .expect("the driver's disk holds a log the core can recover");
                if core == state.core && state.unsynced.is_none() {
                    return no_op(o); // nothing would be lost
                }
                let s = state.to_mut();
                s.core = core;
                s.unsynced = None;
                s.restarted = true;
            }
        }
    }
}

thread_local! {
    /// Set while [`guarded`] runs a core input: its panic is expected to
    /// be caught, so the panic hook keeps quiet about it.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Run `input` on a node. A panic (one of the core's own assertions,
/// such as "a leader conflicts with a committed entry") is recorded in
/// the node's state, which stops the node and fails the property
/// [`CORE_OK`], instead of unwinding through the checker.
fn guarded(state: &mut NodeState, input: impl FnOnce(&mut NodeState)) {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let report = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !GUARDED.get() {
                report(info);
            }
        }));
    });
    GUARDED.set(true);
    let result = panic::catch_unwind(AssertUnwindSafe(|| input(state)));
    GUARDED.set(false);
    if let Err(payload) = result {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|m| m.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string());
        state.panicked = Some(message);
    }
}

// ------------------------------------------------------------------- model

/// Every (term, node) that sent a leader-only message.
type Leaders = BTreeSet<(u64, usize)>;

type Actors = ActorModel<Node, (), Leaders>;
type State = ActorModelState<Node, Leaders>;
type Action = ActorModelAction<PeerMsg, Timer, ()>;

/// The actor model, started from chosen states and bounded.
struct Check {
    actors: Actors,
    init: Vec<State>,
    max_term: u64,
    max_index: u64,
}

/// Restarts in one run, over all nodes.
const MAX_RESTARTS: usize = 1;

/// The actors: three nodes with `driver`; node 0's client sends `writes`
/// quorum writes when it leads.
fn actors(driver: Driver, pre_vote: bool, writes: u8) -> Actors {
    ActorModel::new((), Leaders::new())
        .actors((0..NODES).map(|id| Node {
            driver,
            pre_vote,
            writes: if id == 0 { writes } else { 0 },
        }))
        .init_network(Network::new_unordered_nonduplicating([]))
        .record_msg_out(|_, leaders, env: Envelope<&PeerMsg>| {
            if env.msg.from_leader() {
                let mut leaders = leaders.clone();
                leaders.insert((env.msg.term(), usize::from(env.src)));
                Some(leaders)
            } else {
                None
            }
        })
}

impl Check {
    /// Explore from the empty cluster.
    fn from_empty(actors: Actors) -> Check {
        let init = actors.init_states();
        Check {
            actors,
            init,
            max_term: 3,
            max_index: 4,
        }
    }

    /// Explore from `starts` (states of `actors`).
    fn from(actors: Actors, starts: Vec<State>) -> Check {
        Check {
            init: starts,
            ..Check::from_empty(actors)
        }
    }

    fn max_term(self, max_term: u64) -> Check {
        Check { max_term, ..self }
    }
}

impl Model for Check {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        self.init.clone()
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        self.actors.actions(state, actions)
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        self.actors.next_state(state, action)
    }

    fn format_action(&self, action: &Action) -> String {
        self.actors.format_action(action)
    }

    fn format_step(&self, state: &State, action: Action) -> Option<String> {
        self.actors.format_step(state, action)
    }

    fn within_boundary(&self, state: &State) -> bool {
        let restarts = state.actor_states.iter().filter(|s| s.restarted).count();
        restarts <= MAX_RESTARTS
            && state.actor_states.iter().all(|s| {
                s.core.term() <= self.max_term && s.core.last_position().index <= self.max_index
            })
    }

    fn properties(&self) -> Vec<Property<Check>> {
        vec![
            Property::always(ONE_LEADER, |_, s| one_leader_per_term(s)),
            Property::always(NOTHING_LOST, |_, s| no_acked_write_lost(s)),
            Property::always(CORE_OK, |_, s| no_core_panicked(s)),
            Property::sometimes(ELECTED, |_, s| leader_elected(s)),
            Property::sometimes(ACKED, |_, s| acked(s).next().is_some()),
            Property::sometimes(NEW_LEADER, |_, s| new_leader_after_ack(s)),
            Property::sometimes(FAILED_OVER, |_, s| failed_over_after_ack(s)),
        ]
    }
}

const ONE_LEADER: &str = "at most one leader per term";
const NOTHING_LOST: &str = "no quorum-acknowledged write is lost";
const CORE_OK: &str = "no core assertion fails";
const ELECTED: &str = "a leader is elected";
const ACKED: &str = "a quorum write is acknowledged";
const NEW_LEADER: &str = "after a quorum-acknowledged write, another node leads a later term";
const FAILED_OVER: &str =
    "the node that acknowledged a quorum write restarted, and a later leader committed past it";

fn one_leader_per_term(state: &State) -> bool {
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

fn no_core_panicked(state: &State) -> bool {
    state.actor_states.iter().all(|s| s.panicked.is_none())
}

fn leader_elected(state: &State) -> bool {
    state
        .actor_states
        .iter()
        .any(|s| s.core.role() == Role::Leader)
}

/// Every write acknowledged to a client, with the node that acknowledged it.
fn acked(state: &State) -> impl Iterator<Item = (usize, LogPosition)> + '_ {
    state
        .actor_states
        .iter()
        .enumerate()
        .flat_map(|(node, s)| s.acked.iter().map(move |&p| (node, p)))
}

fn no_acked_write_lost(state: &State) -> bool {
    acked(state).all(|(_, p)| {
        state.actor_states.iter().all(|s| {
            let must_hold = (s.core.role() == Role::Leader && s.core.term() >= p.term)
                || s.core.commit_index() >= p.index;
            !must_hold || s.core.entry(p.index).map(|e| e.position) == Some(p)
        })
    })
}

fn new_leader_after_ack(state: &State) -> bool {
    acked(state).any(|(acker, p)| {
        state.actor_states.iter().enumerate().any(|(node, s)| {
            node != acker && s.core.role() == Role::Leader && s.core.term() > p.term
        })
    })
}

fn failed_over_after_ack(state: &State) -> bool {
    acked(state).any(|(acker, p)| {
        state.actor_states[acker].restarted
            && state.actor_states.iter().any(|s| {
                s.core.role() == Role::Leader
                    && s.core.term() > p.term
                    && s.core.commit_index() > p.index
            })
    })
}

// ------------------------------------------------------------ start states

/// One item of a script that drives the actors from the empty cluster.
enum Scripted {
    /// This action (which must change the state).
    Step(Action),
    /// Deliver, one at a time, every message between these two nodes
    /// (including those the deliveries cause) until none is left.
    Settle(usize, usize),
}

/// The state `script` leads to from `actors`' empty cluster.
fn scripted(actors: &Actors, script: &[Scripted]) -> State {
    let mut state = actors.init_states().remove(0);
    for item in script {
        state = match item {
            Scripted::Step(action) => actors
                .next_state(&state, action.clone())
                .unwrap_or_else(|| panic!("scripted action {action:?} changes nothing")),
            &Scripted::Settle(a, b) => settle(actors, state, a, b),
        };
    }
    state
}

fn settle(actors: &Actors, mut state: State, a: usize, b: usize) -> State {
    let between = |src: Id, dst: Id| {
        let pair = (usize::from(src), usize::from(dst));
        pair == (a, b) || pair == (b, a)
    };
    let mut actions = Vec::new();
    loop {
        actors.actions(&state, &mut actions);
        let next = actions.drain(..).find_map(|action| match action {
            ActorModelAction::Deliver { src, dst, .. } if between(src, dst) => {
                actors.next_state(&state, action)
            }
            _ => None,
        });
        match next {
            Some(next) => state = next,
            None => return state,
        }
    }
}

fn timeout(node: usize, timer: Timer) -> Scripted {
    Scripted::Step(ActorModelAction::Timeout(Id::from(node), timer))
}

/// Node 0 leads term 1 (elected with node 1's vote; both followers hold
/// its no-op) and has just appended a quorum write: its appends to both
/// followers are in flight.
fn write_submitted(actors: &Actors) -> State {
    let state = scripted(
        actors,
        &[
            timeout(0, Timer::Tick),
            Scripted::Settle(0, 1),
            Scripted::Settle(0, 2),
            timeout(0, Timer::Write),
        ],
    );
    let leader = &state.actor_states[0].core;
    assert_eq!((leader.role(), leader.term()), (Role::Leader, 1));
    assert_eq!(leader.last_position(), LogPosition::new(1, 2));
    assert!(state.actor_states[0].acked.is_empty());
    assert_eq!(
        state.actor_states[2].core.last_position(),
        LogPosition::new(1, 1)
    );
    state
}

/// [`write_submitted`], after node 1 stored the write and node 0
/// committed and acknowledged it; the append to node 2 is still in
/// flight.
fn write_acknowledged(actors: &Actors) -> State {
    let state = settle(actors, write_submitted(actors), 0, 1);
    assert_eq!(state.actor_states[0].acked, [LogPosition::new(1, 2)]);
    state
}

// ------------------------------------------------------------------ checks

/// Run `check` breadth-first over every state within `steps` actions of
/// its start, stopping early once `finish_when` holds; print the cost.
fn run(name: &str, check: Check, steps: usize, finish_when: HasDiscoveries) -> impl Checker<Check> {
    let started = Instant::now();
    // stateright counts a start state as depth 1 and checks properties on
    // the states below the target depth (it generates, but does not check,
    // the states one step further).
    let checker = check
        .checker()
        .target_max_depth(steps + 2)
        .finish_when(finish_when)
        .spawn_bfs()
        .join();
    println!(
        "{name}: {steps} steps, {} unique states ({} visited), {:.1?}",
        checker.unique_state_count(),
        checker.state_count(),
        started.elapsed()
    );
    checker
}

fn assert_safe(checker: &impl Checker<Check>) {
    checker.assert_no_discovery(ONE_LEADER);
    checker.assert_no_discovery(NOTHING_LOST);
    checker.assert_no_discovery(CORE_OK);
}

/// The actions that led to a discovery, one a line.
fn describe(checker: &impl Checker<Check>, property: &'static str) -> String {
    let path = checker
        .discovery(property)
        .unwrap_or_else(|| panic!("no counterexample to {property:?}"));
    path.into_actions()
        .iter()
        .map(|a| format!("  {}\n", checker.model().format_action(a)))
        .collect()
}

#[test]
fn elections_from_an_empty_cluster_keep_one_leader_per_term() {
    let check = Check::from_empty(actors(Driver::Correct, false, 0));
    let checker = run(
        "empty cluster",
        check,
        steps(7),
        HasDiscoveries::AllFailures,
    );
    assert_safe(&checker);
    checker.assert_any_discovery(ELECTED);
}

#[test]
fn pre_vote_elections_from_an_empty_cluster_keep_one_leader_per_term() {
    let check = Check::from_empty(actors(Driver::Correct, true, 0));
    let checker = run(
        "empty cluster, pre-vote",
        check,
        steps(8),
        HasDiscoveries::AllFailures,
    );
    assert_safe(&checker);
    checker.assert_any_discovery(ELECTED);
}

/// The write checks start from both [`write_submitted`] and
/// [`write_acknowledged`]: the second reaches two steps further along the
/// path where the write is acknowledged at once.
fn write_starts(actors: &Actors) -> Vec<State> {
    vec![write_submitted(actors), write_acknowledged(actors)]
}

#[test]
fn a_quorum_acknowledged_write_survives_failover() {
    let actors = actors(Driver::Correct, false, 1);
    let starts = write_starts(&actors);
    let check = Check::from(actors, starts).max_term(2);
    let checker = run("quorum write", check, steps(9), HasDiscoveries::AllFailures);
    assert_safe(&checker);
    checker.assert_any_discovery(ACKED);
    checker.assert_any_discovery(NEW_LEADER);
    checker.assert_any_discovery(FAILED_OVER);
}

#[test]
fn a_quorum_acknowledged_write_survives_failover_with_pre_vote() {
    let actors = actors(Driver::Correct, true, 1);
    let start = write_acknowledged(&actors);
    let check = Check::from(actors, vec![start]).max_term(2);
    let checker = run(
        "quorum write, pre-vote",
        check,
        steps(7),
        HasDiscoveries::AllFailures,
    );
    assert_safe(&checker);
    // A restart and a commit by the new leader take 8 steps with pre-vote:
    // LF_MODEL_DEPTH=8 reaches them (see the module doc for the cost).
    checker.assert_any_discovery(NEW_LEADER);
}

#[test]
fn the_check_finds_two_leaders_when_votes_are_not_persisted() {
    let check = Check::from_empty(actors(Driver::ForgetsVote, false, 0)).max_term(1);
    let checker = run(
        "forgets its vote",
        check,
        steps(7),
        HasDiscoveries::AnyOf(BTreeSet::from([ONE_LEADER])),
    );
    println!("counterexample:\n{}", describe(&checker, ONE_LEADER));
}

#[test]
fn the_check_finds_a_lost_write_when_entries_are_acknowledged_before_fsync() {
    let actors = actors(Driver::AcksBeforeFsync, false, 1);
    let start = write_acknowledged(&actors);
    let check = Check::from(actors, vec![start]).max_term(2);
    let checker = run(
        "acks before fsync",
        check,
        steps(7),
        HasDiscoveries::AnyOf(BTreeSet::from([NOTHING_LOST])),
    );
    println!("counterexample:\n{}", describe(&checker, NOTHING_LOST));
}
