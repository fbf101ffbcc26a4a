//! An exhaustive (bounded) check of the multi-leader core with
//! stateright: two nodes, each a real [`Core`] with an instant-but-explicit
//! disk, each taking one blind `siblings` write acknowledged `local`,
//! exchange the core's own messages over a network that delivers them in
//! any order (no loss: the simulation covers loss); each node's disk syncs
//! at any moment, its status timer fires at most once, and one node may
//! crash once, losing what its disk had not synced, and restart from it.
//! A second model adds one wipe: a node loses its whole disk after its
//! write, comes back as a new incarnation and writes again (issue 22).
//!
//! Properties, over every reachable state within the bound:
//! - **no acknowledged write lost**: a node whose applied vector covers an
//!   acknowledged write holds its value as a sibling (both writes are
//!   blind, so nothing may supersede them);
//! - **convergence**: when nothing is in flight or unsynced and both
//!   nodes have applied the same writes, their key records are equal;
//! - and, as sanity checks that the bound reaches the interesting states,
//!   both writes acknowledged, and both nodes holding both (the bound,
//!   10 steps, does not reach a fully quiet network after both writes:
//!   the convergence property is checked on the quiet states it reaches).
//!
//! States are identified by the `Debug` rendering of every core (all of
//! the core's fields, in deterministic order), so no two distinct states
//! are merged.

use std::hash::Hash;
use std::time::Instant;

use mimeo_multi_leader::{
    ClientOp, Config, Core, Dot, DurableState, KeyState, Message, Millis, Output, Persist, Reply,
    Write,
};
use mimeo_testkit::unordered;
use stateright::{Checker, Model, Property};

const KEY: &[u8] = b"k";

#[derive(Clone, Debug)]
struct Node {
    core: Core,
    disk: DurableState,
    /// The durable origin-sequence log (for loads).
    log: Vec<Write>,
    unsynced: Vec<Persist>,
    wrote: bool,
    ticks: u8,
    /// Set once its disk was wiped.
    wiped: bool,
}

#[derive(Clone, Debug)]
struct State {
    nodes: Vec<Node>,
    /// In flight: (from, to, message).
    net: Vec<(usize, usize, Message)>,
    /// Acknowledged writes: (write id, key dot, value).
    acked: Vec<(Dot, Dot, Vec<u8>)>,
    crashed: bool,
    /// Whether a node's disk was wiped (at most once; wipe models only).
    wiped: bool,
}

impl State {
    fn fingerprint(&self) -> String {
        let net = unordered(&self.net);
        format!(
            "{:?}|{net:?}|{:?}|{}|{}",
            self.nodes, self.acked, self.crashed, self.wiped
        )
    }
}

mimeo_testkit::eq_by_fingerprint!(State);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    Write(usize),
    Deliver(usize),
    Sync(usize),
    Tick(usize),
    Crash(usize),
    Wipe(usize),
}

/// The model; `wipe` adds one wipe of a node's disk (after its write),
/// after which it comes back empty and writes once more: as a new
/// incarnation, or under its old actor id (`reuse_id`, issue 22's bug).
#[derive(Default)]
struct Cluster {
    wipe: bool,
    reuse_id: bool,
}

const IDS: [&str; 2] = ["n1", "n2"];

fn config(i: usize) -> Config {
    Config::new(IDS[i], IDS)
}

fn drain(state: &mut State, i: usize) {
    while let Some(output) = state.nodes[i].core.poll_output() {
        match output {
            Output::Send { to, msg } => {
                let to = IDS.iter().position(|n| *n == to.as_str()).expect("member");
                state.net.push((i, to, msg));
            }
            Output::Persist(p) => state.nodes[i].unsynced.push(p),
            Output::Reply {
                reply: Reply::Written { write, key_dot, .. },
                ..
            } => {
                let value = written_value(state, i);
                state.acked.push((write, key_dot.expect("siblings"), value));
            }
            Output::Reply { .. } => {}
            Output::Load {
                peer,
                origin,
                from_seq,
                to_seq,
            } => {
                let writes: Vec<Write> = state.nodes[i]
                    .log
                    .iter()
                    .filter(|w| w.id.node == origin && (from_seq..=to_seq).contains(&w.id.counter))
                    .cloned()
                    .collect();
                state.nodes[i].core.loaded(Millis(1), &peer, writes);
            }
            other => panic!("unexpected output {other:?}"),
        }
    }
}

impl Model for Cluster {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let nodes = (0..2)
            .map(|i| Node {
                core: Core::new(config(i), Millis(0)).expect("valid"),
                disk: DurableState::default(),
                log: Vec::new(),
                unsynced: Vec::new(),
                wrote: false,
                ticks: 0,
                wiped: false,
            })
            .collect();
        vec![State {
            nodes,
            net: Vec::new(),
            acked: Vec::new(),
            crashed: false,
            wiped: false,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        for i in 0..2 {
            let node = &state.nodes[i];
            if !node.wrote {
                actions.push(Action::Write(i));
            }
            if !node.unsynced.is_empty() {
                actions.push(Action::Sync(i));
            }
            if node.ticks < 1 {
                actions.push(Action::Tick(i));
            }
            if !state.crashed && node.wrote {
                actions.push(Action::Crash(i));
            }
            if self.wipe && !state.wiped && node.wrote {
                actions.push(Action::Wipe(i));
            }
        }
        for m in 0..state.net.len() {
            actions.push(Action::Deliver(m));
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        let now = Millis(1);
        match action {
            Action::Write(i) => {
                s.nodes[i].wrote = true;
                let op = ClientOp::Put {
                    key: KEY.to_vec(),
                    value: written_value(&s, i),
                    context: None,
                };
                s.nodes[i].core.handle_client(now, 1_000, 1, op, None);
                drain(&mut s, i);
            }
            Action::Deliver(m) => {
                let (from, to, msg) = s.net.remove(m);
                s.nodes[to]
                    .core
                    .handle_peer(now, 1_000, IDS[from].into(), msg);
                drain(&mut s, to);
            }
            Action::Sync(i) => {
                let unsynced = std::mem::take(&mut s.nodes[i].unsynced);
                for p in &unsynced {
                    s.nodes[i].disk.apply(p);
                    s.nodes[i].log.extend(p.writes.iter().cloned());
                }
                let last = unsynced.last().expect("something to sync").id;
                s.nodes[i].core.persisted(now, last);
                drain(&mut s, i);
            }
            Action::Tick(i) => {
                s.nodes[i].ticks += 1;
                let at = Millis(1_000 * u64::from(s.nodes[i].ticks));
                s.nodes[i].core.tick(at);
                drain(&mut s, i);
            }
            Action::Crash(i) => {
                s.crashed = true;
                s.nodes[i].unsynced.clear();
                let disk = s.nodes[i].disk.clone();
                let config = s.nodes[i].core.config().clone();
                s.nodes[i].core = Core::restore(config, disk, now).expect("valid");
                drain(&mut s, i);
            }
            Action::Wipe(i) => {
                s.wiped = true;
                let node = &mut s.nodes[i];
                node.unsynced.clear();
                node.disk = DurableState::default();
                node.log.clear();
                node.wrote = false;
                node.wiped = true;
                let mut config = config(i);
                if !self.reuse_id {
                    config.fresh_epoch = 7;
                }
                node.core = Core::new(config, now).expect("valid");
                drain(&mut s, i);
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("no acknowledged write lost", |_, s: &State| {
                s.nodes.iter().all(|n| {
                    s.acked.iter().all(|(write, key_dot, value)| {
                        n.core.applied().get(write.node.as_str()) < write.counter
                            || holds(&n.core, key_dot, value)
                    })
                })
            }),
            Property::always("convergence", |_, s: &State| {
                !quiet(s)
                    || s.nodes[0].core.applied() != s.nodes[1].core.applied()
                    || records(&s.nodes[0].core) == records(&s.nodes[1].core)
            }),
            Property::sometimes("both acknowledged", |_, s: &State| s.acked.len() == 2),
            Property::sometimes("a wiped node's old write is back on it", |_, s: &State| {
                s.nodes.iter().enumerate().any(|(i, n)| {
                    n.wiped && {
                        let old = IDS[i].as_bytes();
                        s.acked
                            .iter()
                            .any(|(_, d, v)| v == old && holds(&n.core, d, old))
                    }
                })
            }),
            Property::sometimes("both nodes hold both", |_, s: &State| {
                s.nodes.iter().all(|n| siblings(&n.core) == 2)
            }),
        ]
    }
}

fn quiet(s: &State) -> bool {
    s.net.is_empty() && s.nodes.iter().all(|n| n.unsynced.is_empty())
}

fn records(core: &Core) -> String {
    format!("{:?}", core.records().collect::<Vec<_>>())
}

fn siblings(core: &Core) -> usize {
    match core.record(KEY).map(|r| &r.state) {
        Some(KeyState::Siblings(dvv)) => dvv.len(),
        _ => 0,
    }
}

/// Whether `core` holds `value` as the sibling of `key_dot`.
fn holds(core: &Core, key_dot: &Dot, value: &[u8]) -> bool {
    match core.record(KEY).map(|r| &r.state) {
        Some(KeyState::Siblings(dvv)) => dvv
            .iter()
            .any(|(d, v)| d == *key_dot && v.as_deref() == Some(value)),
        _ => false,
    }
}

/// What node `i` writes: its id, and `+` after a wipe (so that a write
/// reusing a dot of the lost incarnation shows).
fn written_value(state: &State, i: usize) -> Vec<u8> {
    let suffix = if state.nodes[i].wiped { "+" } else { "" };
    format!("{}{suffix}", IDS[i]).into_bytes()
}

#[test]
fn two_nodes_converge_and_lose_no_acknowledged_write() {
    let started = Instant::now();
    let checker = Cluster::default()
        .checker()
        .target_max_depth(10)
        .spawn_bfs()
        .join();
    println!(
        "{} unique states, {:.1?}",
        checker.unique_state_count(),
        started.elapsed()
    );
    checker.assert_no_discovery("no acknowledged write lost");
    checker.assert_no_discovery("convergence");
    checker.assert_any_discovery("both acknowledged");
    checker.assert_any_discovery("both nodes hold both");
}

/// One node's disk may be wiped once: it comes back as a new incarnation
/// and writes again. No acknowledged write is lost, and replicas that
/// applied the same writes agree. With the wiped node back under its old
/// actor id (issue 22's bug), the checker finds an acknowledged write
/// lost.
#[test]
fn a_wiped_node_loses_no_acknowledged_write_as_a_new_incarnation() {
    let started = Instant::now();
    let model = Cluster {
        wipe: true,
        reuse_id: false,
    };
    let checker = model.checker().target_max_depth(9).spawn_bfs().join();
    println!(
        "{} unique states, {:.1?}",
        checker.unique_state_count(),
        started.elapsed()
    );
    checker.assert_no_discovery("no acknowledged write lost");
    checker.assert_no_discovery("convergence");
    checker.assert_any_discovery("a wiped node's old write is back on it");
    let reused = Cluster {
        wipe: true,
        reuse_id: true,
    };
    let checker = reused.checker().target_max_depth(9).spawn_bfs().join();
    checker.assert_any_discovery("no acknowledged write lost");
}
