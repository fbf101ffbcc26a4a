//! The simulated cluster: cores, a seeded faulty network, disks that lose
//! what was not synced when their node crashes, skewed clocks, clients.

use std::collections::{BTreeMap, BTreeSet};

use mimeo_leaderless::{
    ClientOp, Config, Core, DurableState, KeyState, Message, Millis, NodeId, Output, Persist,
    Policy, Quorum, ReadRepair, ReadValue, Reply, Sabotage, VersionVector,
};
use mimeo_testkit::{LinkFaults, SimNet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::invariants::MadeWrite;

/// Wall-clock origin of the simulation (ms since the Unix epoch).
const EPOCH_MS: u64 = 1_700_000_000_000;

/// Fault rates, per simulated millisecond (per message for drops).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Faults {
    pub(crate) drop: f64,
    pub(crate) duplicate: f64,
    pub(crate) delay_ms: (u64, u64),
    pub(crate) partition: f64,
    pub(crate) crash: f64,
    /// Clock skew range, in ms either way.
    pub(crate) skew_ms: i64,
}

impl Faults {
    pub(crate) const RANDOM: Faults = Faults {
        drop: 0.05,
        duplicate: 0.03,
        delay_ms: (1, 30),
        partition: 0.002,
        crash: 0.001,
        skew_ms: 800,
    };
    /// Only the scripted outage (hinted handoff runs).
    pub(crate) const CALM: Faults = Faults {
        drop: 0.0,
        duplicate: 0.0,
        delay_ms: (1, 10),
        partition: 0.0,
        crash: 0.0,
        skew_ms: 300,
    };
    const HEALED: Faults = Faults {
        drop: 0.0,
        duplicate: 0.0,
        delay_ms: (1, 5),
        partition: 0.0,
        crash: 0.0,
        skew_ms: 0,
    };

    /// The link faults the network draws from.
    fn link(&self) -> LinkFaults {
        LinkFaults {
            drop: self.drop,
            duplicate: self.duplicate,
            delay_ms: self.delay_ms,
        }
    }
}

/// What a run is set up to test.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Setup {
    pub(crate) policy: Policy,
    pub(crate) sloppy: bool,
    pub(crate) read_repair: ReadRepair,
    pub(crate) anti_entropy: bool,
    pub(crate) faults: Faults,
    /// Reads issued by clients (off: nothing but hints and anti-entropy
    /// can move data to a replica that missed it).
    pub(crate) reads: bool,
    pub(crate) sabotage: Option<Sabotage>,
}

#[derive(Default, Debug, Clone)]
pub(crate) struct Tally {
    pub(crate) writes: u64,
    pub(crate) acked: u64,
    pub(crate) unknown: u64,
    pub(crate) refused: u64,
    pub(crate) reads: u64,
    pub(crate) unavailable: u64,
    pub(crate) crashes: u64,
    pub(crate) partitions: u64,
    pub(crate) read_repairs: u64,
    pub(crate) hints_stored: u64,
    pub(crate) hints_delivered: u64,
    pub(crate) ae_keys_shipped: u64,
    pub(crate) max_siblings: usize,
}

impl Tally {
    pub(crate) fn add(&mut self, t: &Tally) {
        self.writes += t.writes;
        self.acked += t.acked;
        self.unknown += t.unknown;
        self.refused += t.refused;
        self.reads += t.reads;
        self.unavailable += t.unavailable;
        self.crashes += t.crashes;
        self.partitions += t.partitions;
        self.read_repairs += t.read_repairs;
        self.hints_stored += t.hints_stored;
        self.hints_delivered += t.hints_delivered;
        self.ae_keys_shipped += t.ae_keys_shipped;
        self.max_siblings = self.max_siblings.max(t.max_siblings);
    }
}

struct Node {
    config: Config,
    core: Option<Core>,
    disk: DurableState,
    unsynced: Vec<Persist>,
    skew_ms: i64,
    restart_at: Option<Millis>,
    /// Peers this core was last told are reachable.
    told_up: BTreeSet<usize>,
    /// Scripted outage: down (crashed) until then.
    down_until: Option<Millis>,
}

pub(crate) struct Sim {
    rng: StdRng,
    pub(crate) now: Millis,
    nodes: Vec<Node>,
    ids: Vec<NodeId>,
    net: SimNet<usize, Message>,
    faults: Faults,
    setup: Setup,
    next_req: u64,
    /// Requests waiting for a reply: the register write's index in
    /// `made`, or the key a read is for.
    pending: BTreeMap<u64, Pending>,
    /// Reads that returned a value.
    pub(crate) reads: Vec<DoneRead>,
    /// Whether clients send requests.
    pub(crate) clients: bool,
    pub(crate) made: Vec<MadeWrite>,
    /// The context of the latest read of each key.
    contexts: BTreeMap<Vec<u8>, VersionVector>,
    pub(crate) tally: Tally,
}

impl Sim {
    pub(crate) fn new(seed: u64, setup: Setup) -> Sim {
        let ids: Vec<NodeId> = (1..=5).map(|i| NodeId::from(format!("n{i}"))).collect();
        let nodes = ids
            .iter()
            .map(|id| {
                let mut config = Config::new(id.clone(), ids.clone());
                config.vnodes = 16;
                config.policy = setup.policy;
                config.sloppy = setup.sloppy;
                config.read_repair = setup.read_repair;
                config.sabotage = setup.sabotage;
                config.request_timeout_ms = 300;
                config.hint_interval_ms = 50;
                config.hint_batch = 4;
                config.anti_entropy_interval_ms = if setup.anti_entropy { 20 } else { 0 };
                config.tree_segments = 32;
                Node {
                    core: Some(Core::new(config.clone(), Millis(0)).expect("valid config")),
                    config,
                    disk: DurableState::default(),
                    unsynced: Vec::new(),
                    skew_ms: 0,
                    restart_at: None,
                    told_up: (0..5).collect(),
                    down_until: None,
                }
            })
            .collect();
        Sim {
            rng: StdRng::seed_from_u64(seed.wrapping_mul(7919).wrapping_add(23)),
            now: Millis(0),
            nodes,
            ids,
            net: SimNet::new(),
            faults: setup.faults,
            setup,
            next_req: 1,
            pending: BTreeMap::new(),
            made: Vec::new(),
            contexts: BTreeMap::new(),
            clients: true,
            reads: Vec::new(),
            tally: Tally::default(),
        }
    }

    fn wall(&self, i: usize) -> u64 {
        (EPOCH_MS + self.now.0).saturating_add_signed(self.nodes[i].skew_ms)
    }

    fn index(&self, id: &NodeId) -> usize {
        self.ids.iter().position(|n| n == id).expect("member")
    }

    /// Takes node `i` down (a crash) for `ms`, and tells every other node
    /// at once (the hinted-handoff runs: a write sent to a node that is
    /// down unbeknownst to its coordinator is anti-entropy's job, not
    /// handoff's).
    pub(crate) fn outage(&mut self, i: usize, ms: u64) -> Result<(), String> {
        self.crash(i);
        self.nodes[i].restart_at = None;
        self.nodes[i].down_until = Some(self.now.plus(ms));
        self.update_reachability()
    }

    /// One simulated millisecond of random activity.
    pub(crate) fn random_step(&mut self) -> Result<(), String> {
        self.now = self.now.plus(1);
        let n = self.nodes.len();
        if self.rng.random_bool(self.faults.partition) {
            self.tally.partitions += 1;
            self.net.random_partition(&mut self.rng, n);
        } else if self.net.is_partitioned() && self.rng.random_bool(0.002) {
            self.net.heal();
        }
        if self.rng.random_bool(self.faults.crash) {
            let i = self.rng.random_range(0..n);
            if self.nodes[i].core.is_some() {
                self.crash(i);
            }
        }
        if self.faults.skew_ms > 0 && self.rng.random_bool(0.002) {
            let i = self.rng.random_range(0..n);
            self.nodes[i].skew_ms = self
                .rng
                .random_range(-self.faults.skew_ms..=self.faults.skew_ms);
        }
        if self.clients && self.rng.random_bool(0.04) {
            let i = self.rng.random_range(0..n);
            if self.nodes[i].core.is_some() {
                self.random_request(i)?;
            }
        }
        self.step()
    }

    /// Heals everything, restarts every node, and runs `ms` without
    /// client requests.
    pub(crate) fn heal_and_quiet(&mut self, ms: u64) -> Result<(), String> {
        self.faults = Faults::HEALED;
        self.net.heal();
        for i in 0..self.nodes.len() {
            self.nodes[i].skew_ms = 0;
            self.nodes[i].down_until = None;
            if self.nodes[i].core.is_none() {
                self.restart(i)?;
            }
        }
        for _ in 0..ms {
            self.now = self.now.plus(1);
            self.step()?;
        }
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        self.tally.crashes += 1;
        if let Some(core) = &self.nodes[i].core {
            self.absorb(&core.metrics().clone());
        }
        self.nodes[i].core = None;
        self.nodes[i].unsynced.clear();
        let back = self.rng.random_range(50..500);
        self.nodes[i].restart_at = Some(self.now.plus(back));
    }

    fn absorb(&mut self, m: &mimeo_leaderless::Metrics) {
        self.tally.read_repairs += m.read_repairs;
        self.tally.hints_stored += m.hints_stored;
        self.tally.hints_delivered += m.hints_delivered;
        self.tally.ae_keys_shipped += m.ae_keys_shipped;
    }

    fn restart(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        node.restart_at = None;
        node.told_up = (0..5).collect();
        let core = Core::restore(node.config.clone(), node.disk.clone(), self.now)
            .map_err(|e| format!("restart of {}: {e}", self.ids[i]))?;
        node.core = Some(core);
        self.drain(i)
    }

    /// Tells each core which peers it can reach now.
    fn update_reachability(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].core.is_none() {
                continue;
            }
            for j in 0..self.nodes.len() {
                if i == j {
                    continue;
                }
                let up = self.nodes[j].core.is_some() && !self.net.is_blocked(i, j);
                let told = self.nodes[i].told_up.contains(&j);
                if up == told {
                    continue;
                }
                let (now, peer) = (self.now, self.ids[j].clone());
                let core = self.nodes[i].core.as_mut().expect("up");
                if up {
                    core.connected(now, &peer);
                    self.nodes[i].told_up.insert(j);
                } else {
                    core.disconnected(now, &peer);
                    self.nodes[i].told_up.remove(&j);
                }
                self.drain(i)?;
            }
        }
        Ok(())
    }

    /// Network, timers, disks and restarts for the current millisecond.
    fn step(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            let due = self.nodes[i].restart_at.is_some_and(|t| t <= self.now)
                || self.nodes[i].down_until.is_some_and(|t| t <= self.now);
            if due && self.nodes[i].core.is_none() {
                self.nodes[i].down_until = None;
                self.restart(i)?;
            }
        }
        self.update_reachability()?;
        while let Some((from, to, msg)) = self.net.next_due(self.now.0) {
            let (now, wall, from_id) = (self.now, self.wall(to), self.ids[from].clone());
            if let Some(core) = self.nodes[to].core.as_mut() {
                core.handle_peer(now, wall, from_id, msg);
                self.drain(to)?;
            }
        }
        for i in 0..self.nodes.len() {
            let (now, wall) = (self.now, self.wall(i));
            let Some(core) = self.nodes[i].core.as_mut() else {
                continue;
            };
            if core.next_timeout() <= now {
                core.tick(now, wall);
                self.drain(i)?;
            }
            if !self.nodes[i].unsynced.is_empty() && self.rng.random_bool(0.3) {
                self.sync(i)?;
            }
        }
        Ok(())
    }

    fn random_request(&mut self, i: usize) -> Result<(), String> {
        let r = self.rng.random_range(0..100);
        let k = self.rng.random_range(0..6);
        let key = |prefix: &str, k: u32| format!("{prefix}{k}").into_bytes();
        let reads = self.setup.reads;
        let op = match r {
            0..=44 => {
                let key = key("k", k);
                let context = if self.rng.random_bool(0.6) {
                    self.contexts.get(&key).cloned()
                } else {
                    None
                };
                let value = format!("v{}", self.next_req).into_bytes();
                ClientOp::Put {
                    key,
                    value,
                    context,
                }
            }
            45..=59 => {
                let key = key("k", k);
                let context = self.contexts.get(&key).cloned();
                ClientOp::Delete { key, context }
            }
            60..=69 => ClientOp::Increment {
                key: key("c", k % 2),
                delta: self.rng.random_range(-3..=5),
            },
            70..=79 => ClientOp::SetAdd {
                key: key("s", k % 2),
                element: vec![self.rng.random_range(0..6)],
            },
            _ if reads => {
                self.tally.reads += 1;
                ClientOp::Get { key: key("k", k) }
            }
            _ => return Ok(()),
        };
        self.client(i, op, Quorum::default())
    }

    pub(crate) fn client(&mut self, i: usize, op: ClientOp, quorum: Quorum) -> Result<(), String> {
        let req = self.next_req;
        self.next_req += 1;
        let made = match &op {
            ClientOp::Put {
                key,
                value,
                context,
            } => Some((key.clone(), Some(value.clone()), context.clone())),
            ClientOp::Delete { key, context } => Some((key.clone(), None, context.clone())),
            _ => None,
        };
        if op.is_write() {
            self.tally.writes += 1;
        }
        let read_key = matches!(op, ClientOp::Get { .. }).then(|| op.key().to_vec());
        let slot = made.map(|(key, value, context)| {
            self.made.push(MadeWrite {
                key,
                value,
                context: context.unwrap_or_default(),
                key_dot: None,
                acked: false,
                acked_at: None,
            });
            self.made.len() - 1
        });
        self.pending.insert(req, (slot, read_key, self.now));
        let (now, wall) = (self.now, self.wall(i));
        let core = self.nodes[i].core.as_mut().expect("up");
        core.handle_client(now, wall, req, op, quorum);
        self.drain(i)
    }

    /// Performs node `i`'s outputs.
    fn drain(&mut self, i: usize) -> Result<(), String> {
        while let Some(output) = self.nodes[i].core.as_mut().and_then(Core::poll_output) {
            match output {
                Output::Send { to, msg } => {
                    let to = self.index(&to);
                    self.transmit(i, to, msg);
                }
                Output::Persist(p) => self.nodes[i].unsynced.push(p),
                Output::Reply { req_id, reply } => {
                    let (slot, read_key, started) =
                        self.pending.remove(&req_id).unwrap_or_default();
                    match reply {
                        Reply::Written { key_dot, .. } => {
                            self.tally.acked += 1;
                            if let Some(s) = slot {
                                self.made[s].acked = true;
                                self.made[s].acked_at = Some(self.now);
                                self.made[s].key_dot = key_dot;
                            }
                        }
                        Reply::Value { value, .. } => {
                            if let ReadValue::Register {
                                context, values, ..
                            } = value
                            {
                                self.tally.max_siblings = self.tally.max_siblings.max(values.len());
                                // The client writes next with what it read.
                                if let Some(key) = read_key {
                                    self.reads.push(DoneRead {
                                        key: key.clone(),
                                        started,
                                        context: context.clone(),
                                    });
                                    self.contexts.insert(key, context);
                                }
                            }
                        }
                        Reply::Unknown { .. } => self.tally.unknown += 1,
                        Reply::Unavailable { .. } => self.tally.unavailable += 1,
                        Reply::Failed(_) => self.tally.refused += 1,
                        _ => return Err("unknown reply".into()),
                    }
                }
                _ => return Err("unknown output".into()),
            }
        }
        Ok(())
    }

    fn transmit(&mut self, from: usize, to: usize, msg: Message) {
        let link = self.faults.link();
        self.net
            .transmit(&mut self.rng, link, self.now.0, from, to, msg);
    }

    /// Node `i`'s disk syncs everything written so far.
    fn sync(&mut self, i: usize) -> Result<(), String> {
        let unsynced = std::mem::take(&mut self.nodes[i].unsynced);
        let Some(last) = unsynced.last().map(|p| p.id) else {
            return Ok(());
        };
        for p in &unsynced {
            self.nodes[i].disk.apply(p);
        }
        let now = self.now;
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.persisted(now, last);
        }
        self.drain(i)
    }

    /// Every live node's final key states and hints.
    pub(crate) fn finals(&mut self) -> Vec<Final> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            let core = self.nodes[i].core.as_ref().expect("healed");
            let m = core.metrics().clone();
            out.push(Final {
                node: self.ids[i].clone(),
                states: core.states().map(|(k, s)| (k.clone(), s.clone())).collect(),
                hints: core.hints().count(),
            });
            self.absorb(&m);
        }
        out
    }

    /// The key's primary owners.
    pub(crate) fn primaries(&self, key: &[u8]) -> Vec<NodeId> {
        self.nodes[0]
            .core
            .as_ref()
            .expect("healed")
            .ring()
            .preference_list(key, 3)
    }
}

/// A request waiting for its reply: the register write's index in
/// `made`, the key of a read, when it was sent.
type Pending = (Option<usize>, Option<Vec<u8>>, Millis);

/// A read that returned a register value.
pub(crate) struct DoneRead {
    pub(crate) key: Vec<u8>,
    pub(crate) started: Millis,
    /// The context it returned (siblings).
    pub(crate) context: VersionVector,
}

/// One node's final state.
pub(crate) struct Final {
    pub(crate) node: NodeId,
    pub(crate) states: BTreeMap<Vec<u8>, KeyState>,
    pub(crate) hints: usize,
}
