//! A simulated cluster of cores: a seeded faulty network (drop, delay,
//! duplicate, reorder, partition), a fake clock, disks that lag behind and
//! lose their unsynced tail on a crash (or everything, on a disk loss), and
//! clients.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use mimeo_leader_follower::{
    AckMode, ClientOp, Config, Core, DurableState, HardState, LogEntry, LogPosition, Millis,
    NodeId, Output, PeerMsg, ReadMode, Reply, RequestId, Role, Snapshot,
};
use mimeo_testkit::{LinkFaults, SimNet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::invariants::{check_state_machine, AckedWrites, CommittedLog, DiskLoss, LeadersPerTerm};

/// A node's disk: the hard state and the snapshot (durable at once, as the
/// driver writes them before anything after them), and a log starting at
/// index `start` whose first `synced` entries are durable.
struct Disk {
    hard: HardState,
    snapshot: Option<Snapshot>,
    /// The snapshot written and not yet reported durable to the core
    /// (the notice is lost in a crash; the snapshot is not), and when it
    /// was written: the notice comes a step later at the earliest, so the
    /// checks see every committed entry before the log drops it.
    snapshot_notice: Option<(LogPosition, Millis)>,
    start: u64,
    log: Vec<LogEntry>,
    synced: usize,
}

impl Default for Disk {
    fn default() -> Disk {
        Disk {
            hard: HardState::default(),
            snapshot: None,
            snapshot_notice: None,
            start: 1,
            log: Vec::new(),
            synced: 0,
        }
    }
}

/// A [`Disk`] as [`Persist::apply_to`](mimeo_leader_follower::Persist::apply_to)
/// changes it: the hard state and the snapshot at once, log entries
/// unsynced until the disk catches up (see `step_time`).
struct Writing<'a> {
    disk: &'a mut Disk,
    now: Millis,
    /// The tally of discarded entries.
    discarded: &'a mut u64,
}

impl DurableState for Writing<'_> {
    type Error = Infallible;

    fn store_snapshot(&mut self, s: Arc<Snapshot>, replace_log: bool) -> Result<(), Infallible> {
        let disk = &mut *self.disk;
        disk.snapshot_notice = Some((s.last, self.now));
        if replace_log {
            disk.log.clear();
            disk.synced = 0;
            disk.start = s.last.index + 1;
        }
        disk.snapshot = Some((*s).clone());
        Ok(())
    }

    fn truncate_log(&mut self, from: u64) -> Result<(), Infallible> {
        let disk = &mut *self.disk;
        let keep = (from - disk.start) as usize;
        disk.log.truncate(keep);
        disk.synced = disk.synced.min(keep);
        Ok(())
    }

    fn append_log(&mut self, entries: Vec<LogEntry>) -> Result<(), Infallible> {
        self.disk.log.extend(entries);
        Ok(())
    }

    fn store_hard_state(&mut self, state: HardState) -> Result<(), Infallible> {
        self.disk.hard = state;
        Ok(())
    }

    fn discard_log_before(&mut self, before: u64) -> Result<(), Infallible> {
        let disk = &mut *self.disk;
        let n = (before.saturating_sub(disk.start) as usize).min(disk.synced);
        disk.log.drain(..n);
        disk.synced -= n;
        disk.start += n as u64;
        *self.discarded += n as u64;
        Ok(())
    }
}

/// What travels between simulated nodes.
#[derive(Clone)]
enum Packet {
    Msg(PeerMsg),
    /// A driver's probe of a node's address ([`Output::Probe`]).
    Probe,
    /// The host of a crashed node refusing a probe.
    Refused,
}

struct Node {
    config: Config,
    core: Option<Core>,
    disk: Disk,
    /// When a crashed node comes back.
    restart_at: Option<Millis>,
}

/// How faulty the network and nodes are.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Faults {
    /// Probability a message is dropped.
    pub(crate) drop: f64,
    /// Probability a message is delivered twice.
    pub(crate) duplicate: f64,
    /// Message delay range, ms (random delays reorder messages).
    pub(crate) delay_ms: (u64, u64),
    /// Per-step probability of a new random partition (or healing).
    pub(crate) partition: f64,
    /// Per-step probability that a live node crashes.
    pub(crate) crash: f64,
    /// Per-step probability that a live node loses its disk (it crashes
    /// and restarts with nothing), while at most a minority is down or
    /// catching up after such a loss.
    pub(crate) disk_loss: f64,
}

impl Faults {
    /// No faults at all.
    pub(crate) const NONE: Faults = Faults {
        drop: 0.0,
        duplicate: 0.0,
        delay_ms: (1, 5),
        partition: 0.0,
        crash: 0.0,
        disk_loss: 0.0,
    };
    /// The faults of the random runs.
    pub(crate) const RANDOM: Faults = Faults {
        drop: 0.05,
        duplicate: 0.03,
        delay_ms: (1, 40),
        partition: 0.004,
        crash: 0.0015,
        disk_loss: 0.0005,
    };
}

/// A pending client request.
struct Pending {
    node: NodeId,
    ack: Option<AckMode>,
    session_after: Option<LogPosition>,
}

/// Counters a run reports.
#[derive(Default, Debug)]
pub(crate) struct Tally {
    pub(crate) written: u64,
    pub(crate) unknown: u64,
    pub(crate) reads: u64,
    pub(crate) async_acked_lost: u64,
    pub(crate) crashes: u64,
    pub(crate) partitions: u64,
    pub(crate) max_term: u64,
    pub(crate) rolled_back: u64,
    /// Snapshots reported durable.
    pub(crate) snapshots: u64,
    /// Log entries discarded from disks after a snapshot.
    pub(crate) discarded: u64,
    /// Snapshot chunks sent.
    pub(crate) snapshot_chunks: u64,
    /// Probes a crashed node's host refused, delivered to a live prober.
    pub(crate) probes_refused: u64,
    /// Disks lost.
    pub(crate) disk_losses: u64,
}

/// The simulated cluster.
pub(crate) struct Sim {
    pub(crate) rng: StdRng,
    pub(crate) now: Millis,
    nodes: Vec<Node>,
    /// Messages in flight, and the directed links that drop everything.
    net: SimNet<NodeId, Packet>,
    pub(crate) faults: Faults,
    next_req: RequestId,
    pending: BTreeMap<RequestId, Pending>,
    pub(crate) replies: Vec<(RequestId, NodeId, Reply)>,
    leaders: LeadersPerTerm,
    committed: CommittedLog,
    acked: AckedWrites,
    disk_loss: DiskLoss,
    async_acked: Vec<LogPosition>,
    pub(crate) tally: Tally,
    key_space: u8,
}

impl Sim {
    /// `n` nodes, ids 1..=n, all up, with the fast timings of the tests.
    pub(crate) fn new(n: u64, seed: u64, faults: Faults) -> Sim {
        let nodes = (1..=n)
            .map(|id| {
                let mut config = Config::new(id, (1..=n).filter(|&p| p != id).collect());
                config.bootstrap = true;
                config.seed = seed.wrapping_mul(31).wrapping_add(id);
                config.max_inflight_msgs = 4;
                config.max_batch_entries = 8;
                // Half the seeds take snapshots often, so that compaction,
                // snapshot shipping, crashes and partitions interleave.
                if seed % 2 == 1 {
                    config.snapshot_every = 5 + seed % 16;
                    config.snapshot_keep = seed % 4;
                    config.snapshot_chunk_bytes = 64;
                } else {
                    config.snapshot_every = 0;
                }
                let core = Core::new(config.clone(), Millis(0)).expect("valid config");
                // As the driver does: a founding member records that it
                // votes, and restarts without `bootstrap`.
                config.bootstrap = false;
                let disk = Disk {
                    hard: core.hard_state(),
                    ..Disk::default()
                };
                Node {
                    core: Some(core),
                    config,
                    disk,
                    restart_at: None,
                }
            })
            .collect();
        Sim {
            rng: StdRng::seed_from_u64(seed.wrapping_mul(1000).wrapping_add(n)),
            now: Millis(0),
            nodes,
            net: SimNet::new(),
            faults,
            next_req: 1,
            pending: BTreeMap::new(),
            replies: Vec::new(),
            leaders: LeadersPerTerm::default(),
            committed: CommittedLog::default(),
            acked: AckedWrites::default(),
            disk_loss: DiskLoss::default(),
            async_acked: Vec::new(),
            tally: Tally::default(),
            key_space: 4,
        }
    }

    pub(crate) fn core(&self, id: NodeId) -> Option<&Core> {
        self.nodes[id as usize - 1].core.as_ref()
    }

    pub(crate) fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .filter(|c| c.role() == Role::Leader)
            .max_by_key(|c| c.term())
            .map(|c| c.id())
    }

    /// Cut every link between `a` and the rest.
    pub(crate) fn isolate(&mut self, a: NodeId) {
        for b in 1..=self.nodes.len() as u64 {
            if a != b {
                self.net.cut(a, b);
            }
        }
    }

    pub(crate) fn heal(&mut self) {
        self.net.heal();
    }

    pub(crate) fn crash(&mut self, id: NodeId) {
        let node = &mut self.nodes[id as usize - 1];
        if node.core.take().is_some() {
            node.disk.log.truncate(node.disk.synced);
            node.disk.snapshot_notice = None;
            self.pending.retain(|_, p| p.node != id);
            self.tally.crashes += 1;
        }
    }

    /// Node `id` loses its disk: it crashes, and its disk comes back
    /// empty. `as_founder` restarts it as if with `bootstrap` (a voter at
    /// once: the behaviour before issue 19); otherwise, as a node without
    /// state does, it restarts as a learner.
    pub(crate) fn lose_disk(&mut self, id: NodeId, as_founder: bool) {
        self.crash(id);
        let node = &mut self.nodes[id as usize - 1];
        node.disk = Disk::default();
        node.disk.hard.voter = as_founder;
        self.disk_loss.lost_disk(id);
        self.tally.disk_losses += 1;
    }

    pub(crate) fn restart(&mut self, id: NodeId) {
        let now = self.now;
        let node = &mut self.nodes[id as usize - 1];
        node.restart_at = None;
        if node.core.is_none() {
            let disk = &mut node.disk;
            // As the driver does: a log that does not lead to the snapshot
            // (a reset, or the snapshot overtook the log's fsyncs) is reset.
            if let Some(s) = &disk.snapshot {
                let held = s
                    .last
                    .index
                    .checked_sub(disk.start)
                    .and_then(|i| disk.log.get(i as usize))
                    .map(|e| e.position);
                if s.last.index >= disk.start && held != Some(s.last) {
                    disk.log.clear();
                    disk.synced = 0;
                    disk.start = s.last.index + 1;
                }
            }
            let core = Core::restore(
                node.config.clone(),
                now,
                disk.hard,
                disk.snapshot.clone(),
                disk.log.clone(),
            )
            .expect("the simulated disk holds a valid log");
            node.core = Some(core);
        }
    }

    /// Send a client request to `node`; returns its id.
    pub(crate) fn client(&mut self, node: NodeId, op: ClientOp, ack: Option<AckMode>) -> RequestId {
        let req_id = self.next_req;
        self.next_req += 1;
        let session_after = match &op {
            ClientOp::Get {
                consistency: Some(ReadMode::Session { after }),
                ..
            } => Some(*after),
            _ => None,
        };
        let now = self.now;
        if let Some(core) = self.nodes[node as usize - 1].core.as_mut() {
            self.pending.insert(
                req_id,
                Pending {
                    node,
                    ack,
                    session_after,
                },
            );
            core.handle_client(now, req_id, op, ack);
            self.drain(node);
        }
        req_id
    }

    /// The reply to `req_id`, if it came.
    pub(crate) fn reply(&self, req_id: RequestId) -> Option<&Reply> {
        self.replies
            .iter()
            .find(|(id, _, _)| *id == req_id)
            .map(|(_, _, r)| r)
    }

    /// Perform `id`'s outputs.
    fn drain(&mut self, id: NodeId) {
        let now = self.now;
        loop {
            let node = &mut self.nodes[id as usize - 1];
            let Some(core) = node.core.as_mut() else {
                return;
            };
            let Some(output) = core.poll_output() else {
                return;
            };
            match output {
                Output::Send { to, msg } => self.send(id, to, msg),
                Output::Probe { to } => self.transmit(id, to, Packet::Probe),
                Output::Persist(p) => {
                    let Ok(()) = p.apply_to(&mut Writing {
                        disk: &mut node.disk,
                        now,
                        discarded: &mut self.tally.discarded,
                    });
                }
                Output::Reply { req_id, reply } => self.on_reply(id, req_id, reply),
            }
        }
    }

    fn on_reply(&mut self, node: NodeId, req_id: RequestId, reply: Reply) {
        let Some(pending) = self.pending.remove(&req_id) else {
            panic!("node {node} answered request {req_id} twice or unasked: {reply:?}");
        };
        match &reply {
            Reply::Written { position } => {
                self.tally.written += 1;
                match pending.ack {
                    Some(AckMode::Quorum | AckMode::All) | None => {
                        self.acked.acked(*position);
                        self.disk_loss.acked(*position);
                    }
                    Some(AckMode::Async | AckMode::SemiSync(_)) => self.async_acked.push(*position),
                }
            }
            Reply::Unknown { .. } => self.tally.unknown += 1,
            Reply::Value { applied, .. } => {
                self.tally.reads += 1;
                if let Some(after) = pending.session_after {
                    assert!(
                        applied.index >= after.index,
                        "session read {req_id} at node {node} answered at {applied:?}, before \
                         its session position {after:?}"
                    );
                }
            }
            _ => {}
        }
        self.replies.push((req_id, node, reply));
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: PeerMsg) {
        // What the driver will do: postcard on the wire.
        if matches!(msg, PeerMsg::InstallSnapshot { .. }) {
            self.tally.snapshot_chunks += 1;
        }
        let bytes = postcard::to_stdvec(&msg).expect("peer messages encode");
        let msg: PeerMsg = postcard::from_bytes(&bytes).expect("peer messages decode");
        self.transmit(from, to, Packet::Msg(msg));
    }

    /// Puts `packet` on the faulty network.
    fn transmit(&mut self, from: NodeId, to: NodeId, packet: Packet) {
        let link = LinkFaults {
            drop: self.faults.drop,
            duplicate: self.faults.duplicate,
            delay_ms: self.faults.delay_ms,
        };
        self.net
            .transmit(&mut self.rng, link, self.now.0, from, to, packet);
    }

    /// Advance the clock by `ms`, delivering messages, firing timers and
    /// completing disk writes on the way. Checks every invariant after each
    /// event.
    pub(crate) fn run_for(&mut self, ms: u64) -> Result<(), String> {
        let end = self.now.plus(ms);
        while self.now < end {
            self.now = self.now.plus(1);
            self.step_time()?;
        }
        Ok(())
    }

    /// One millisecond: deliveries, timers, disks.
    fn step_time(&mut self) -> Result<(), String> {
        let now = self.now;
        while let Some((from, to, packet)) = self.net.next_due(now.0) {
            let Some(core) = self.nodes[to as usize - 1].core.as_mut() else {
                // The crashed node's host is up: a probe is refused.
                if let Packet::Probe = packet {
                    self.transmit(to, from, Packet::Refused);
                }
                continue;
            };
            match packet {
                Packet::Msg(msg) => core.handle_peer(now, from, msg),
                Packet::Probe => {} // a live endpoint drops it
                Packet::Refused => {
                    core.peer_gone(now, from);
                    self.tally.probes_refused += 1;
                }
            }
            self.drain(to);
        }
        for id in 1..=self.nodes.len() as u64 {
            let node = &mut self.nodes[id as usize - 1];
            if node.restart_at.is_some_and(|t| t <= now) {
                self.restart(id);
            }
            let node = &mut self.nodes[id as usize - 1];
            let Some(core) = node.core.as_mut() else {
                continue;
            };
            if core.next_timeout() <= now {
                core.tick(now);
            }
            // The disk completes writes with some lag; a snapshot is
            // reported before the entries written after it.
            if node.disk.snapshot_notice.is_some_and(|(_, at)| at < now)
                && self.rng.random_bool(0.3)
            {
                let (last, _) = node.disk.snapshot_notice.take().expect("checked");
                core.snapshot_persisted(now, last);
                self.tally.snapshots += 1;
            } else if node.disk.snapshot_notice.is_none()
                && node.disk.synced < node.disk.log.len()
                && self.rng.random_bool(0.3)
            {
                node.disk.synced = node.disk.log.len();
                let last = node.disk.log[node.disk.synced - 1].position;
                core.persisted(now, last);
            }
            self.drain(id);
        }
        self.check(false)
    }

    /// Every invariant, on every live node (`full`: the committed log from
    /// its start, not only what is new).
    pub(crate) fn check(&mut self, full: bool) -> Result<(), String> {
        for node in &self.nodes {
            let Some(core) = &node.core else { continue };
            if core.role() == Role::Leader {
                self.leaders.observe(core.term(), core.id())?;
            }
            self.committed.observe(core, full)?;
            self.acked.observe(core, full)?;
            self.disk_loss.observe(core)?;
            self.tally.max_term = self.tally.max_term.max(core.term());
        }
        Ok(())
    }

    /// The slower checks: every node's whole committed log, and its
    /// key-value view against the log.
    pub(crate) fn check_state_machines(&mut self) -> Result<(), String> {
        self.check(true)?;
        for core in self.nodes.iter().filter_map(|n| n.core.as_ref()) {
            check_state_machine(core, self.committed.entries())?;
        }
        self.acked.in_committed_log(self.committed.entries())?;
        Ok(())
    }

    /// One random step: maybe a fault, maybe a client request, then time.
    pub(crate) fn random_step(&mut self) -> Result<(), String> {
        let n = self.nodes.len() as u64;
        if self.rng.random_bool(self.faults.partition) {
            self.heal();
            if self.rng.random_bool(0.7) {
                self.tally.partitions += 1;
                let side: Vec<NodeId> = (1..=n).filter(|_| self.rng.random_bool(0.5)).collect();
                for &a in &side {
                    for b in (1..=n).filter(|b| !side.contains(b)) {
                        self.net.cut(a, b);
                    }
                }
            }
        }
        if self.rng.random_bool(self.faults.crash) {
            let id = self.rng.random_range(1..=n);
            // Keep a majority's worth of disks alive most of the time.
            let down = self.nodes.iter().filter(|n| n.core.is_none()).count() as u64;
            if down < n / 2 {
                self.crash(id);
                let back = self.now.plus(self.rng.random_range(50..800));
                self.nodes[id as usize - 1].restart_at = Some(back);
            }
        }
        if self.rng.random_bool(self.faults.disk_loss) {
            let id = self.rng.random_range(1..=n);
            // Only a minority may be down or without its data at once.
            let out = self
                .nodes
                .iter()
                .filter(|n| n.core.as_ref().is_none_or(|c| !c.hard_state().voter))
                .count() as u64;
            if self.nodes[id as usize - 1].core.is_some() && out < (n - 1) / 2 {
                self.lose_disk(id, false);
                let back = self.now.plus(self.rng.random_range(50..800));
                self.nodes[id as usize - 1].restart_at = Some(back);
            }
        }
        if self.rng.random_bool(0.25) {
            self.random_request();
        }
        let ms = self.rng.random_range(1..=8);
        self.run_for(ms)
    }

    fn random_request(&mut self) {
        let n = self.nodes.len() as u64;
        // Clients mostly find the leader; sometimes they ask anyone.
        let node = match self.leader() {
            Some(l) if self.rng.random_bool(0.8) => l,
            _ => self.rng.random_range(1..=n),
        };
        let key = format!("k{}", self.rng.random_range(0..self.key_space)).into_bytes();
        let value = format!("v{}", self.next_req).into_bytes();
        let ack = match self.rng.random_range(0..5) {
            0 => Some(AckMode::Async),
            1 => Some(AckMode::SemiSync(1)),
            2 => Some(AckMode::All),
            3 => Some(AckMode::Quorum),
            _ => None,
        };
        let op = match self.rng.random_range(0..10) {
            0..=3 => ClientOp::Put { key, value },
            4 => ClientOp::Delete { key },
            5 => ClientOp::Cas {
                key,
                expected: None,
                new: value,
            },
            6 | 7 => ClientOp::Get {
                key,
                consistency: Some(ReadMode::Leader),
            },
            8 => ClientOp::Get {
                key,
                consistency: Some(ReadMode::Follower {
                    max_staleness_ms: Some(500),
                }),
            },
            _ => {
                let after = self.last_written().unwrap_or_default();
                ClientOp::Get {
                    key,
                    consistency: Some(ReadMode::Session { after }),
                }
            }
        };
        self.client(node, op, ack);
    }

    fn last_written(&self) -> Option<LogPosition> {
        self.replies.iter().rev().find_map(|(_, _, r)| match r {
            Reply::Written { position } => Some(*position),
            _ => None,
        })
    }

    /// End of a run: heal, restart everyone, and require that the cluster
    /// elects a leader and commits a `quorum` write within `limit_ms`.
    pub(crate) fn recover_and_make_progress(&mut self, limit_ms: u64) -> Result<(), String> {
        self.heal();
        self.faults = Faults::NONE;
        for id in 1..=self.nodes.len() as u64 {
            self.restart(id);
        }
        let deadline = self.now.plus(limit_ms);
        let mut req: Option<RequestId> = None;
        while self.now < deadline {
            self.run_for(10)?;
            if let Some(r) = req {
                match self.reply(r) {
                    Some(Reply::Written { .. }) => break,
                    None if self.pending.contains_key(&r) => continue,
                    // Redirected, unknown, or lost with a crash: try again.
                    _ => req = None,
                }
            }
            if let Some(l) = self.leader() {
                let op = ClientOp::Put {
                    key: b"final".to_vec(),
                    value: b"x".to_vec(),
                };
                req = Some(self.client(l, op, Some(AckMode::Quorum)));
            }
        }
        if !matches!(req.and_then(|r| self.reply(r)), Some(Reply::Written { .. })) {
            return Err(format!(
                "no progress: {limit_ms} ms after healing, no quorum write succeeded \
                 (leader: {:?})",
                self.leader()
            ));
        }
        // Let everyone catch up, then compare all state machines.
        self.run_for(1000)?;
        let commits: Vec<u64> = self
            .nodes
            .iter()
            .filter_map(|n| n.core.as_ref().map(|c| c.applied_index()))
            .collect();
        if commits.iter().any(|&c| c != commits[0]) {
            let statuses: Vec<_> = self
                .nodes
                .iter()
                .filter_map(|n| n.core.as_ref().map(|c| c.status(self.now)))
                .collect();
            return Err(format!(
                "replicas did not converge after healing: applied {commits:?}\n{statuses:#?}"
            ));
        }
        self.check_state_machines()?;
        // Count the async/semi-sync acknowledged writes a failover lost.
        let committed = self.committed.entries();
        self.tally.async_acked_lost = self
            .async_acked
            .iter()
            .filter(|p| committed.get(p.index as usize - 1).map(|e| e.position) != Some(**p))
            .count() as u64;
        self.tally.rolled_back = self
            .nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .map(|c| c.status(self.now).rolled_back_entries)
            .sum();
        Ok(())
    }
}
