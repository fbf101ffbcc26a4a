//! The simulated cluster: cores, a seeded faulty network, disks that lose
//! what was not synced when their node crashes, skewed clocks, clients.

use std::collections::BTreeMap;

use mimeo_multi_leader::{
    AckMode, ClientOp, Config, Core, DurableState, KeyChange, KeyState, Message, Millis, NodeId,
    Output, Persist, Policy, Reply, Sabotage, VersionVector, Write,
};
use mimeo_testkit::{LinkFaults, SimNet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::invariants::hlc_monotonic::HlcMonotonic;
use crate::invariants::{acked_writes, convergence, lww_winner, no_resurrection, MadeWrite};

/// Wall-clock origin of the simulation (ms since the Unix epoch).
const EPOCH_MS: u64 = 1_700_000_000_000;

/// Fault rates, per simulated millisecond (per message for drops).
#[derive(Clone, Copy)]
pub(crate) struct Faults {
    pub(crate) drop: f64,
    pub(crate) duplicate: f64,
    pub(crate) delay_ms: (u64, u64),
    pub(crate) partition: f64,
    pub(crate) crash: f64,
    /// A crash that also wipes the node's disk: it comes back empty, as
    /// a new incarnation (0 in the standard runs).
    pub(crate) wipe: f64,
    /// Clock skew range, in ms either way.
    pub(crate) skew_ms: i64,
}

impl Faults {
    pub(crate) const RANDOM: Faults = Faults {
        drop: 0.05,
        duplicate: 0.03,
        delay_ms: (1, 40),
        partition: 0.002,
        crash: 0.001,
        wipe: 0.0,
        skew_ms: 800,
    };
    const HEALED: Faults = Faults {
        drop: 0.0,
        duplicate: 0.0,
        delay_ms: (1, 5),
        partition: 0.0,
        crash: 0.0,
        wipe: 0.0,
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

#[derive(Default, Debug)]
pub(crate) struct Tally {
    pub(crate) writes: u64,
    pub(crate) acked: u64,
    pub(crate) refused: u64,
    pub(crate) reads: u64,
    pub(crate) crashes: u64,
    pub(crate) wipes: u64,
    pub(crate) partitions: u64,
    pub(crate) collected: u64,
    pub(crate) loads: u64,
    pub(crate) drift_refusals: u64,
    pub(crate) max_siblings: usize,
}

struct Node {
    config: Config,
    core: Option<Core>,
    disk: DurableState,
    /// The durable origin-sequence log, for loads.
    log: BTreeMap<(NodeId, u64), Write>,
    unsynced: Vec<Persist>,
    skew_ms: i64,
    restart_at: Option<Millis>,
}

pub(crate) struct Sim {
    rng: StdRng,
    pub(crate) now: Millis,
    nodes: Vec<Node>,
    ids: Vec<NodeId>,
    net: SimNet<usize, Message>,
    faults: Faults,
    policy: Policy,
    next_req: u64,
    /// Requests waiting for a reply: the write's index in `made`, if any.
    pending: BTreeMap<u64, Option<usize>>,
    /// Register writes made at their origin (durable or not yet).
    made: Vec<(MadeWrite, bool)>,
    /// The `Write` of each of `made`, as its origin persisted it: what
    /// tells it apart from a later write that reused its sequence number
    /// and timestamp after a crash lost it (a clock set back on restart
    /// can issue the same HLC timestamp again for a write never durable).
    made_writes: Vec<Write>,
    collected: BTreeMap<Vec<u8>, Vec<VersionVector>>,
    hlc: HlcMonotonic,
    /// Wiped nodes come back under their old actor id (issue 22's bug).
    reuse_id: bool,
    pub(crate) tally: Tally,
}

impl Sim {
    pub(crate) fn new(n: usize, seed: u64, policy: Policy, sabotage: Option<Sabotage>) -> Sim {
        let ids: Vec<NodeId> = (1..=n).map(|i| NodeId::from(format!("n{i}"))).collect();
        let nodes = ids
            .iter()
            .map(|id| {
                let mut config = Config::new(id.clone(), ids.clone());
                config.policy = policy;
                config.sabotage = sabotage;
                config.max_inflight_entries = 8;
                config.max_batch_entries = 4;
                // Small memory logs on odd seeds: catch-up reads storage.
                config.log_bytes = if seed % 2 == 1 { 600 } else { 1 << 20 };
                // Small budgets on every third seed: writes and deletes are
                // refused while peers are cut off.
                if seed % 3 == 0 {
                    config.max_pending_ack_bytes = 1_500;
                    config.max_tombstone_bytes = 1_000;
                }
                Node {
                    core: Some(Core::new(config.clone(), Millis(0)).expect("valid config")),
                    config,
                    disk: DurableState::default(),
                    log: BTreeMap::new(),
                    unsynced: Vec::new(),
                    skew_ms: 0,
                    restart_at: None,
                }
            })
            .collect();
        Sim {
            rng: StdRng::seed_from_u64(seed.wrapping_mul(7919).wrapping_add(n as u64)),
            now: Millis(0),
            nodes,
            ids,
            net: SimNet::new(),
            faults: Faults::RANDOM,
            policy,
            next_req: 1,
            pending: BTreeMap::new(),
            made: Vec::new(),
            made_writes: Vec::new(),
            collected: BTreeMap::new(),
            hlc: HlcMonotonic::default(),
            reuse_id: false,
            tally: Tally::default(),
        }
    }

    fn wall(&self, i: usize) -> u64 {
        (EPOCH_MS + self.now.0).saturating_add_signed(self.nodes[i].skew_ms)
    }

    fn index(&self, id: &NodeId) -> usize {
        self.ids.iter().position(|n| n == id).expect("member")
    }

    /// One simulated millisecond of random activity.
    pub(crate) fn random_step(&mut self) -> Result<(), String> {
        self.now = self.now.plus(1);
        let n = self.nodes.len();
        // Faults.
        if self.rng.random_bool(self.faults.partition) {
            self.tally.partitions += 1;
            self.net.random_partition(&mut self.rng, n);
        } else if self.net.is_partitioned() && self.rng.random_bool(0.001) {
            self.net.heal();
        }
        if self.rng.random_bool(self.faults.crash) {
            let i = self.rng.random_range(0..n);
            self.crash(i);
        }
        // Drawn only when enabled: the standard runs keep their streams.
        if self.faults.wipe > 0.0 && self.rng.random_bool(self.faults.wipe) {
            let i = self.rng.random_range(0..n);
            self.wipe(i);
        }
        if self.faults.skew_ms > 0 && self.rng.random_bool(0.002) {
            let i = self.rng.random_range(0..n);
            self.nodes[i].skew_ms = self
                .rng
                .random_range(-self.faults.skew_ms..=self.faults.skew_ms);
        }
        // A client request.
        if self.rng.random_bool(0.03) {
            let i = self.rng.random_range(0..n);
            if self.nodes[i].core.is_some() {
                self.random_request(i)?;
            }
        }
        self.step()
    }

    /// Network, timers, disks and restarts for the current millisecond.
    fn step(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].restart_at.is_some_and(|t| t <= self.now) {
                self.restart(i)?;
            }
        }
        while let Some((from, to, msg)) = self.net.next_due(self.now.0) {
            let (now, wall, from_id) = (self.now, self.wall(to), self.ids[from].clone());
            if let Some(core) = self.nodes[to].core.as_mut() {
                core.handle_peer(now, wall, from_id, msg);
                self.drain(to)?;
            }
        }
        for i in 0..self.nodes.len() {
            let now = self.now;
            let Some(core) = self.nodes[i].core.as_mut() else {
                continue;
            };
            if core.next_timeout() <= now {
                core.tick(now);
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
        let key = |prefix: &str, k: u32| format!("{prefix}{k}").into_bytes();
        let k = self.rng.random_range(0..4);
        let core = self.nodes[i].core.as_ref().expect("up");
        let context = |key: &[u8]| match core.record(key).map(|r| &r.state) {
            Some(KeyState::Siblings(dvv)) => Some(dvv.context()),
            _ => None,
        };
        let op = match r {
            0..=39 => {
                let key = key("k", k);
                // Half the writers read first and pass the read's context.
                let ctx = if self.rng.random_bool(0.5) {
                    context(&key)
                } else {
                    None
                };
                let value = format!("v{}", self.next_req).into_bytes();
                ClientOp::Put {
                    key,
                    value,
                    context: ctx,
                }
            }
            40..=54 => {
                let key = key("k", k);
                let ctx = context(&key);
                ClientOp::Delete { key, context: ctx }
            }
            55..=64 => ClientOp::Increment {
                key: key("c", k % 2),
                delta: self.rng.random_range(-3..=5),
            },
            65..=74 => ClientOp::SetAdd {
                key: key("s", k % 2),
                element: vec![self.rng.random_range(0..6)],
            },
            75..=79 => ClientOp::SetRemove {
                key: key("s", k % 2),
                element: vec![self.rng.random_range(0..6)],
            },
            _ => {
                self.tally.reads += 1;
                let session = self.rng.random_bool(0.5).then(|| {
                    let j = self.rng.random_range(0..self.nodes.len());
                    self.nodes[j]
                        .core
                        .as_ref()
                        .map(|c| c.applied().clone())
                        .unwrap_or_default()
                });
                ClientOp::Get {
                    key: key("k", k),
                    session,
                    timeout_ms: Some(200),
                }
            }
        };
        let acks = match self.rng.random_range(0..4) {
            0 => Some(AckMode::Quorum),
            1 => Some(AckMode::All),
            _ => None,
        };
        self.client(i, op, acks)
    }

    pub(crate) fn client(
        &mut self,
        i: usize,
        op: ClientOp,
        acks: Option<AckMode>,
    ) -> Result<(), String> {
        let req = self.next_req;
        self.next_req += 1;
        let register = match &op {
            ClientOp::Put {
                key,
                value,
                context,
            } => Some((key.clone(), Some(value.clone()), context.clone())),
            ClientOp::Delete { key, context } => Some((key.clone(), None, context.clone())),
            _ => None,
        };
        let (now, wall) = (self.now, self.wall(i));
        let core = self.nodes[i].core.as_mut().expect("up");
        let me = core.actor().clone();
        let before = core.applied().get(me.as_str());
        core.handle_client(now, wall, req, op, acks);
        let after = core.applied().get(me.as_str());
        let ts = core.clock();
        if after > before {
            self.tally.writes += 1;
        }
        // The write's Persist goes to the disk's queue.
        self.pending.insert(req, None);
        self.drain(i)?;
        if let (Some((key, value, context)), true) = (register, after > before) {
            let id = mimeo_multi_leader::Dot::new(me.clone(), after);
            let write = self.nodes[i]
                .unsynced
                .iter()
                .flat_map(|p| &p.writes)
                .find(|w| w.id == id)
                .ok_or("a local write is persisted at once")?;
            self.made_writes.push(write.clone());
            let key_dot = match &write.record.state {
                KeyState::Siblings(dvv) => dvv
                    .iter()
                    .filter(|(d, _)| d.node == me)
                    .map(|(d, _)| d)
                    .last(),
                _ => None,
            };
            self.made.push((
                MadeWrite {
                    key,
                    id,
                    ts,
                    key_dot,
                    context: context.unwrap_or_default(),
                    value,
                    acked: false,
                },
                false,
            ));
            if let Some(slot) = self.pending.get_mut(&req) {
                *slot = Some(self.made.len() - 1);
            }
        }
        Ok(())
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
                Output::Load {
                    peer,
                    origin,
                    from_seq,
                    to_seq,
                } => {
                    self.tally.loads += 1;
                    let writes: Vec<Write> = self.nodes[i]
                        .log
                        .range((origin.clone(), from_seq)..=(origin.clone(), to_seq))
                        .map(|(_, w)| w.clone())
                        .collect();
                    let now = self.now;
                    self.nodes[i]
                        .core
                        .as_mut()
                        .expect("up")
                        .loaded(now, &peer, writes);
                }
                Output::Reply { req_id, reply } => {
                    let index = self.pending.remove(&req_id).flatten();
                    match reply {
                        Reply::Written {
                            key_dot, ts, write, ..
                        } => {
                            self.tally.acked += 1;
                            if let Some(index) = index {
                                let made = &mut self.made[index].0;
                                if made.id != write || made.ts != ts || made.key_dot != key_dot {
                                    return Err(format!(
                                        "reply {write} {ts} does not match the write made {made:?}"
                                    ));
                                }
                                made.acked = true;
                            }
                        }
                        Reply::Failed(_) => self.tally.refused += 1,
                        _ => {}
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
            let me = p.actor.clone();
            for w in &p.writes {
                self.nodes[i]
                    .log
                    .insert((w.id.node.clone(), w.id.counter), w.clone());
                if w.id.node == me {
                    self.hlc.observe(&w.id, &w.ts)?;
                    for ((_, durable), made) in self.made.iter_mut().zip(&self.made_writes).rev() {
                        if made == w {
                            *durable = true;
                            break;
                        }
                    }
                }
            }
            for change in &p.keys {
                if let KeyChange::Collected { key, writes } = change {
                    self.tally.collected += 1;
                    self.collected
                        .entry(key.clone())
                        .or_default()
                        .push(writes.clone());
                }
            }
        }
        let now = self.now;
        self.nodes[i]
            .core
            .as_mut()
            .expect("up")
            .persisted(now, last);
        self.drain(i)
    }

    /// Node `i` crashes: its memory and unsynced writes are lost.
    pub(crate) fn crash(&mut self, i: usize) {
        if self.nodes[i].core.is_none() {
            return;
        }
        self.tally.crashes += 1;
        if let Some(core) = self.nodes[i].core.take() {
            self.tally.drift_refusals += core.status(0).drift_refusals;
        }
        self.nodes[i].unsynced.clear();
        let down = self.rng.random_range(50..1500);
        self.nodes[i].restart_at = Some(self.now.plus(down));
        // Its clock may come back behind where it was.
        if self.faults.skew_ms > 0 && self.rng.random_bool(0.5) {
            self.nodes[i].skew_ms -= 2_000;
        }
    }

    /// Wipes happen at `rate` per ms; a wiped node comes back as a new
    /// incarnation, or, with `reuse_id` (the bug of issue 22, to show the
    /// invariants catch it), under the actor id it had before.
    pub(crate) fn with_wipes(mut self, rate: f64, reuse_id: bool) -> Sim {
        self.faults.wipe = rate;
        self.reuse_id = reuse_id;
        self
    }

    /// Node `i` crashes and its disk is replaced by an empty one. The
    /// writes no other disk holds are lost with it (a `local`
    /// acknowledgement promises no more): they leave the invariants'
    /// durable set. A new incarnation's epoch is the simulated wall clock
    /// in µs.
    pub(crate) fn wipe(&mut self, i: usize) {
        self.crash(i);
        self.tally.wipes += 1;
        let wall_us = (EPOCH_MS + self.now.0) * 1_000 + self.tally.wipes;
        let node = &mut self.nodes[i];
        node.disk = DurableState::default();
        node.log.clear();
        node.unsynced.clear();
        if !self.reuse_id {
            node.config.fresh_epoch = wall_us;
        }
        let nodes = &self.nodes;
        for ((_, durable), write) in self.made.iter_mut().zip(&self.made_writes) {
            let elsewhere = nodes
                .iter()
                .enumerate()
                .any(|(j, n)| j != i && n.disk.applied.contains(&write.id));
            if *durable && !elsewhere {
                *durable = false;
            }
        }
    }

    fn restart(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        node.restart_at = None;
        let core = Core::restore(node.config.clone(), node.disk.clone(), self.now)
            .map_err(|e| e.to_string())?;
        node.core = Some(core);
        for peer in self.ids.clone() {
            if peer != self.ids[i] {
                let now = self.now;
                self.nodes[i]
                    .core
                    .as_mut()
                    .expect("up")
                    .connected(now, &peer);
            }
        }
        self.drain(i)
    }

    /// Heals everything, restarts crashed nodes, and runs `ms` quiet
    /// milliseconds (no faults, no requests, disks sync every step).
    pub(crate) fn heal_and_quiet(&mut self, ms: u64) -> Result<(), String> {
        self.faults = Faults::HEALED;
        self.net.heal();
        for node in &mut self.nodes {
            node.skew_ms = 0;
            if node.core.is_none() {
                node.restart_at = Some(self.now);
            }
        }
        for _ in 0..ms {
            self.now = self.now.plus(1);
            self.step()?;
            for i in 0..self.nodes.len() {
                self.sync(i)?;
            }
        }
        Ok(())
    }

    /// Checks every end-of-run invariant.
    pub(crate) fn check_final(&mut self) -> Result<(), String> {
        let mut finals = Vec::new();
        let mut states = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let core = node.core.as_ref().expect("all up after heal");
            let records: Vec<_> = core.records().collect();
            finals.push(convergence::Final {
                id: self.ids[i].clone(),
                applied: core.applied().clone(),
                records: postcard::to_allocvec(&records).expect("encodes"),
            });
            states.push((
                self.ids[i].clone(),
                core.records()
                    .map(|(k, r)| (k.clone(), r.state.clone()))
                    .collect::<Vec<_>>(),
            ));
            let status = core.status(0);
            // The byte budgets' accounting: every write has been answered
            // after heal and quiet, and tombstone bytes go with tombstones.
            if status.pending_acks != 0 || status.pending_ack_bytes != 0 {
                return Err(format!(
                    "{}: {} writes ({} bytes) still wait for acknowledgements after heal",
                    self.ids[i], status.pending_acks, status.pending_ack_bytes
                ));
            }
            if (status.tombstones_pending == 0) != (status.tombstone_bytes == 0) {
                return Err(format!(
                    "{}: {} tombstones pending but {} tombstone bytes counted",
                    self.ids[i], status.tombstones_pending, status.tombstone_bytes
                ));
            }
            self.tally.drift_refusals += status.drift_refusals;
            self.tally.max_siblings = self
                .tally
                .max_siblings
                .max(status.siblings_histogram.keys().copied().max().unwrap_or(0));
        }
        let made: Vec<MadeWrite> = self
            .made
            .iter()
            .filter(|(_, d)| *d)
            .map(|(w, _)| w.clone())
            .collect();
        // Every invariant is checked; all violations are reported.
        let first: BTreeMap<Vec<u8>, KeyState> = states[0].1.iter().cloned().collect();
        let results = [
            no_resurrection::check(&made, &states),
            convergence::check(&finals),
            match self.policy {
                Policy::Siblings => acked_writes::check(&made, &first, &self.collected),
                Policy::Lww => lww_winner::check(&made, &first, &self.collected),
            },
        ];
        let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        if errors.is_empty() {
            return Ok(());
        }
        // ML_SIM_DEBUG=1 prints what the checks saw.
        if std::env::var("ML_SIM_DEBUG").is_ok() {
            for w in &self.made {
                eprintln!("{w:?}");
            }
            for (n, s) in &states {
                eprintln!("{n}: {s:?}");
            }
            for (i, node) in self.nodes.iter().enumerate() {
                let core = node.core.as_ref().expect("up");
                let writes: Vec<String> = core
                    .records()
                    .map(|(k, r)| format!("{}={}", String::from_utf8_lossy(k), r.writes))
                    .collect();
                eprintln!("{} writes: {}", self.ids[i], writes.join(" "));
            }
            for (k, c) in &self.collected {
                eprintln!("collected {:?}: {c:?}", String::from_utf8_lossy(k));
            }
        }
        Err(errors.join("; "))
    }
}
