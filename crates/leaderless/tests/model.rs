//! An exhaustive (bounded) check of the leaderless core with stateright:
//! three nodes (N = 3, W = R = 2, DW = 2, strict quorums), each a real
//! [`Core`] with an explicit disk. n1 and n2 each take one blind
//! `siblings` write; n3 takes one read, at any moment. The cores' own
//! messages are delivered in any order (no loss: the simulation covers
//! loss); each disk syncs at any moment; one node may crash once, losing
//! what its disk had not synced, and restart from it.
//!
//! Properties, over every reachable state within the bound:
//! - **an acknowledged write is durable on W replicas**: at least two
//!   disks hold (in the key's history) every acknowledged write's dot;
//! - **no stale read** (what W + R > N promises): a read that began after
//!   a write was acknowledged returns a context that contains it;
//! - and, as sanity checks that the bound (10 steps; `LL_MODEL_DEPTH`
//!   for more) reaches the interesting states, a read that began after an
//!   acknowledged write and answered, and a read that returned both
//!   siblings.
//!
//! `the_model_catches_a_core_that_reads_one_replica` shows the stale-read
//! property failing for a core that answers reads from one replica.
//!
//! States are identified by every core's changing fields
//! (`Core::debug_state`: all but the configuration, the ring, the
//! counters and what is derived from the keys), disk and unsynced
//! records, and the network as a multiset.

use std::hash::Hash;
use std::time::Instant;

use mimeo_leaderless::{
    ClientOp, Config, Core, Dot, DurableState, KeyState, Message, Millis, Output, Persist, Quorum,
    ReadRepair, ReadValue, Reply, Sabotage,
};
use mimeo_testkit::unordered;
use stateright::{Checker, Model, Property};

const KEY: &[u8] = b"k";
const IDS: [&str; 3] = ["n1", "n2", "n3"];

#[derive(Clone, Debug)]
struct Node {
    core: Core,
    disk: DurableState,
    unsynced: Vec<Persist>,
}

impl Node {
    fn fingerprint(&self) -> String {
        format!(
            "{}|{:?}|{:?}",
            self.core.debug_state(),
            self.disk,
            self.unsynced
        )
    }
}

#[derive(Clone, Debug)]
struct State {
    nodes: Vec<Node>,
    /// In flight: (from, to, message).
    net: Vec<(usize, usize, Message)>,
    wrote: [bool; 2],
    /// Acknowledged writes' dots.
    acked: Vec<Dot>,
    /// The read: the writes acknowledged when it began.
    read_began: Option<Vec<Dot>>,
    /// The read's answer: how many siblings, and whether it missed an
    /// acknowledged write that came before it.
    read_siblings: Option<usize>,
    stale_read: bool,
    crashed: bool,
}

impl State {
    fn fingerprint(&self) -> String {
        let net = unordered(&self.net);
        let nodes: Vec<String> = self.nodes.iter().map(Node::fingerprint).collect();
        format!(
            "{nodes:?}|{net:?}|{:?}|{:?}|{:?}|{:?}|{}|{}",
            self.wrote,
            self.acked,
            self.read_began,
            self.read_siblings,
            self.stale_read,
            self.crashed
        )
    }
}

mimeo_testkit::eq_by_fingerprint!(State);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Action {
    Write(usize),
    Read,
    Deliver(usize),
    Sync(usize),
    Crash(usize),
}

struct Cluster {
    sabotage: Option<Sabotage>,
}

fn config(i: usize, sabotage: Option<Sabotage>) -> Config {
    let mut c = Config::new(IDS[i], IDS);
    c.sabotage = sabotage;
    c.vnodes = 4;
    c.anti_entropy_interval_ms = 0;
    c.read_repair = ReadRepair::Off;
    c.tree_segments = 32;
    c
}

fn drain(s: &mut State, i: usize) {
    while let Some(output) = s.nodes[i].core.poll_output() {
        match output {
            Output::Send { to, msg } => {
                let to = IDS.iter().position(|n| *n == to.as_str()).expect("member");
                s.net.push((i, to, msg));
            }
            Output::Persist(p) => s.nodes[i].unsynced.push(p),
            Output::Reply {
                reply: Reply::Written { key_dot, .. },
                ..
            } => s.acked.push(key_dot.expect("siblings")),
            Output::Reply {
                reply:
                    Reply::Value {
                        value:
                            ReadValue::Register {
                                values, context, ..
                            },
                        ..
                    },
                ..
            } => {
                s.read_siblings = Some(values.len());
                let before = s.read_began.as_deref().unwrap_or_default();
                s.stale_read |= before.iter().any(|d| !context.contains(d));
            }
            Output::Reply {
                reply: Reply::Value { .. },
                ..
            } => {
                s.read_siblings = Some(0);
                s.stale_read |= !s.read_began.as_deref().unwrap_or_default().is_empty();
            }
            other => panic!("unexpected output {other:?}"),
        }
    }
}

fn disk_holds(disk: &DurableState, dot: &Dot) -> bool {
    match disk.keys.get(KEY).map(|k| &k.state) {
        Some(KeyState::Siblings(dvv)) => dvv.contains(dot),
        _ => false,
    }
}

impl Model for Cluster {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let nodes = (0..3)
            .map(|i| Node {
                core: Core::new(config(i, self.sabotage), Millis(0)).expect("valid"),
                disk: DurableState::default(),
                unsynced: Vec::new(),
            })
            .collect();
        vec![State {
            nodes,
            net: Vec::new(),
            wrote: [false; 2],
            acked: Vec::new(),
            read_began: None,
            read_siblings: None,
            stale_read: false,
            crashed: false,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        for i in 0..2 {
            if !s.wrote[i] {
                actions.push(Action::Write(i));
            }
        }
        if s.read_began.is_none() {
            actions.push(Action::Read);
        }
        for i in 0..3 {
            if !s.nodes[i].unsynced.is_empty() {
                actions.push(Action::Sync(i));
            }
            if !s.crashed && (s.wrote[0] || s.wrote[1]) {
                actions.push(Action::Crash(i));
            }
        }
        for m in 0..s.net.len() {
            actions.push(Action::Deliver(m));
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        let now = Millis(1);
        match action {
            Action::Write(i) => {
                s.wrote[i] = true;
                let op = ClientOp::Put {
                    key: KEY.to_vec(),
                    value: IDS[i].as_bytes().to_vec(),
                    context: None,
                };
                s.nodes[i]
                    .core
                    .handle_client(now, 1_000, 1, op, Quorum::default());
                drain(&mut s, i);
            }
            Action::Read => {
                s.read_began = Some(s.acked.clone());
                let op = ClientOp::Get { key: KEY.to_vec() };
                s.nodes[2]
                    .core
                    .handle_client(now, 1_000, 2, op, Quorum::default());
                drain(&mut s, 2);
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
                }
                let last = unsynced.last().expect("something to sync").id;
                s.nodes[i].core.persisted(now, last);
                drain(&mut s, i);
            }
            Action::Crash(i) => {
                s.crashed = true;
                s.nodes[i].unsynced.clear();
                // Messages to the crashed node are lost with it.
                s.net.retain(|(_, to, _)| *to != i);
                let disk = s.nodes[i].disk.clone();
                s.nodes[i].core =
                    Core::restore(config(i, self.sabotage), disk, now).expect("valid");
                drain(&mut s, i);
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "acknowledged writes are durable on W replicas",
                |_, s: &State| {
                    s.acked
                        .iter()
                        .all(|dot| s.nodes.iter().filter(|n| disk_holds(&n.disk, dot)).count() >= 2)
                },
            ),
            Property::always("no stale read", |_, s: &State| !s.stale_read),
            Property::sometimes(
                "a read after an acknowledged write answered",
                |_, s: &State| {
                    s.read_siblings.is_some()
                        && s.read_began.as_ref().is_some_and(|b| !b.is_empty())
                },
            ),
            Property::sometimes("a read returned both", |_, s: &State| {
                s.read_siblings == Some(2)
            }),
        ]
    }
}

#[test]
fn three_nodes_keep_acknowledged_writes_and_reads_see_them() {
    let started = Instant::now();
    let depth = std::env::var("LL_MODEL_DEPTH")
        .ok()
        .map_or(10, |d| d.parse().expect("LL_MODEL_DEPTH is a number"));
    let checker = Cluster { sabotage: None }
        .checker()
        .target_max_depth(depth)
        .spawn_bfs()
        .join();
    println!(
        "depth {depth}: {} unique states, {:.1?}",
        checker.unique_state_count(),
        started.elapsed()
    );
    checker.assert_no_discovery("acknowledged writes are durable on W replicas");
    checker.assert_no_discovery("no stale read");
    checker.assert_any_discovery("a read after an acknowledged write answered");
    checker.assert_any_discovery("a read returned both");
}

/// The model rejects a broken core: one that answers reads from a single
/// replica (R = 1 with W = 2 of N = 3) returns a stale read.
#[test]
fn the_model_catches_a_core_that_reads_one_replica() {
    let checker = Cluster {
        sabotage: Some(Sabotage::ReadOne),
    }
    .checker()
    .target_max_depth(8)
    .spawn_bfs()
    .join();
    let path = checker
        .discovery("no stale read")
        .expect("a stale read with R = 1");
    println!("stale read after {:?}", path.into_actions());
}
