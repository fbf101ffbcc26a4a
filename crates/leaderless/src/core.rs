//! The leaderless core: a state machine without I/O.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mimeo_causality::{DvvSet, Hlc, Lww, NodeId, OrSet, PnCounter, Timestamp};

use crate::config::{Config, ConfigError, Policy, ReadRepair, Sabotage};
use crate::message::Message;
use crate::output::{LocalRead, Metrics, Output, Status};
use crate::record::{DurableState, Hint, HintChange, Persist, StoredKey};
use crate::ring::Ring;
use crate::state::{merge_opt, KeyClock, KeyState, KeyStateExt, Ship};
use crate::tree::{segment_of, Tree};
use crate::types::{
    ClientError, ClientOp, KeyType, Millis, Quorum, ReadValue, Reply, RequestId, Tally,
};

/// A replica a request goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    node: NodeId,
    /// The primary it stands in for (sloppy quorum).
    hint: Option<NodeId>,
    primary: bool,
}

/// Where a coordinated write's outcome goes.
#[derive(Clone, Debug)]
enum ReplyTo {
    Client(RequestId),
    Forwarded { node: NodeId, op: u64 },
}

#[derive(Clone, Debug)]
struct WriteOp {
    reply_to: ReplyTo,
    targets: Vec<Target>,
    received: BTreeSet<NodeId>,
    durable: BTreeSet<NodeId>,
    w: usize,
    pw: usize,
    dw: usize,
    written: Reply,
    started: Millis,
    deadline: Millis,
}

#[derive(Clone, Debug)]
struct ReadOp {
    req_id: RequestId,
    key: Vec<u8>,
    targets: Vec<Target>,
    replies: BTreeMap<NodeId, Option<KeyState>>,
    r: usize,
    pr: usize,
    answered: bool,
    /// Blocking read repair: the reply held until these hold the merge.
    held: Option<(Reply, BTreeSet<NodeId>)>,
    started: Millis,
    deadline: Millis,
}

#[derive(Clone, Debug)]
struct ForwardOp {
    req_id: RequestId,
    started: Millis,
    deadline: Millis,
}

/// An anti-entropy exchange this node started.
#[derive(Clone, Debug)]
struct Exchange {
    peer: NodeId,
    tree: u32,
    deadline: Millis,
}

/// A leaderless replica without I/O. See the crate docs for what it
/// promises; in short:
///
/// - **Placement**: the key's preference list on the [`Ring`] (its first
///   `n` distinct nodes); with `sloppy`, an unreachable primary is
///   replaced by the next reachable node of the walk, which keeps the
///   write as a hint for it.
/// - **Writes** are coordinated by one of the key's targets: it applies
///   the write to its own copy (making the new version: an HLC timestamp,
///   a dot, a counter or set update), persists it, then sends the key's
///   whole state to the other targets, which merge it, persist it and
///   acknowledge. The client is answered when `w` targets received it,
///   `dw` hold it durably and `pw` of them are primaries; otherwise
///   `unknown` at the deadline. A node that is not a target forwards the
///   write to one.
/// - **Reads** go from any node to the targets; the reply is the merge of
///   the first `r` answers (`pr` from primaries), or `unavailable`.
/// - **Reachability** is the driver's knowledge ([`Core::connected`],
///   [`Core::disconnected`]); all peers start reachable.
#[derive(Clone, Debug)]
pub struct Core {
    config: Config,
    ring: Ring,
    /// The ring's replica sets (anti-entropy trees), sorted.
    sets: Vec<Vec<NodeId>>,
    hlc: Hlc,
    epoch: u64,
    next_op: u64,
    keys: BTreeMap<Vec<u8>, StoredKey>,
    hints: BTreeMap<(NodeId, Vec<u8>), Hint>,
    hint_bytes: BTreeMap<(NodeId, Vec<u8>), usize>,
    /// The sum of `hint_bytes`.
    hint_bytes_total: usize,
    /// Hints offered to their owner: (owner, key) → when.
    hints_offered: BTreeMap<(NodeId, Vec<u8>), Millis>,
    trees: BTreeMap<u32, Tree>,
    up: BTreeSet<NodeId>,
    writes: BTreeMap<u64, WriteOp>,
    reads: BTreeMap<u64, ReadOp>,
    forwards: BTreeMap<u64, ForwardOp>,
    exchanges: BTreeMap<u64, Exchange>,
    /// Forwarded writes taken, by (forwarder, its op), until when they are
    /// remembered: a duplicated `Forward` must not write twice.
    forwarded_seen: BTreeMap<(NodeId, u64), Millis>,
    ae_cursor: usize,
    last_exchange: BTreeMap<NodeId, Millis>,
    staged_keys: BTreeMap<Vec<u8>, StoredKey>,
    staged_hints: Vec<HintChange>,
    staged_epoch: bool,
    deferred: Vec<(NodeId, Message)>,
    next_persist: u64,
    unpersisted: VecDeque<(u64, Vec<(NodeId, Message)>)>,
    inbox: VecDeque<Message>,
    outputs: VecDeque<Output>,
    next_hints: Millis,
    next_ae: Millis,
    wall_ms: u64,
    metrics: Metrics,
}

impl Core {
    /// A new, empty node.
    ///
    /// # Errors
    ///
    /// The configuration is invalid ([`Config::validate`]).
    pub fn new(config: Config, now: Millis) -> Result<Core, ConfigError> {
        Core::restore(config, DurableState::default(), now)
    }

    /// A node restarted from what its driver persisted. A node with data
    /// bumps its epoch at once (one [`Output::Persist`]), so its request
    /// ids and writer ids are new.
    ///
    /// # Errors
    ///
    /// The configuration is invalid, or the data was placed with another
    /// ring ([`RingError::Changed`](crate::RingError::Changed)).
    pub fn restore(
        config: Config,
        durable: DurableState,
        now: Millis,
    ) -> Result<Core, ConfigError> {
        config.validate()?;
        let ring = Ring::new(&config.nodes, config.vnodes)?;
        if let Some(stored) = durable.ring {
            ring.check_fingerprint(stored)?;
        }
        let mut hlc = Hlc::new(config.id.clone(), config.max_drift());
        if let Some(clock) = &durable.clock {
            hlc.restore(clock);
        }
        let sets = ring.replica_sets(config.n);
        let trees = sets
            .iter()
            .enumerate()
            .filter(|(_, set)| set.contains(&config.id))
            .map(|(i, _)| (i as u32, Tree::new(config.tree_segments)))
            .collect();
        let up = config
            .nodes
            .iter()
            .filter(|n| **n != config.id)
            .cloned()
            .collect();
        let restarted = durable.ring.is_some();
        let epoch = if restarted {
            durable.epoch + 1
        } else {
            config.fresh_epoch
        };
        let mut core = Core {
            ring,
            sets,
            hlc,
            epoch,
            // Request ids of another incarnation differ in their high bits.
            next_op: epoch.wrapping_shl(32) | 1,
            keys: BTreeMap::new(),
            hints: BTreeMap::new(),
            hint_bytes: BTreeMap::new(),
            hint_bytes_total: 0,
            hints_offered: BTreeMap::new(),
            trees,
            up,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            forwards: BTreeMap::new(),
            exchanges: BTreeMap::new(),
            forwarded_seen: BTreeMap::new(),
            ae_cursor: 0,
            last_exchange: BTreeMap::new(),
            staged_keys: BTreeMap::new(),
            staged_hints: Vec::new(),
            staged_epoch: restarted,
            deferred: Vec::new(),
            next_persist: 1,
            unpersisted: VecDeque::new(),
            inbox: VecDeque::new(),
            outputs: VecDeque::new(),
            next_hints: now.plus(config.hint_interval_ms),
            next_ae: now.plus(config.anti_entropy_interval_ms.max(1)),
            wall_ms: 0,
            metrics: Metrics::default(),
            config,
        };
        for (key, stored) in durable.keys {
            core.tree_update(&key, Some(stored.state.hash()));
            core.keys.insert(key, stored);
        }
        for (id, hint) in durable.hints {
            let bytes = hint.state.encode().len();
            core.hint_bytes_total += bytes;
            core.hint_bytes.insert(id.clone(), bytes);
            core.hints.insert(id, hint);
        }
        core.flush();
        Ok(core)
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.config.id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// A key's state here (primary data, not hints).
    pub fn state(&self, key: &[u8]) -> Option<&KeyState> {
        self.keys.get(key).map(|s| &s.state)
    }

    /// Every key's state here, in key order.
    pub fn states(&self) -> impl Iterator<Item = (&Vec<u8>, &KeyState)> + '_ {
        self.keys.iter().map(|(k, s)| (k, &s.state))
    }

    /// Every hint held here.
    pub fn hints(&self) -> impl Iterator<Item = &Hint> + '_ {
        self.hints.values()
    }

    /// The HLC's last timestamp.
    pub fn clock(&self) -> Timestamp {
        self.hlc.last()
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The root hash of the anti-entropy tree of the key's replica set,
    /// if this node is in it.
    pub fn tree_root(&self, key: &[u8]) -> Option<u64> {
        let tree = self.tree_of(key)?;
        self.trees.get(&tree).map(Tree::root)
    }

    /// Every field that can change, rendered (not the configuration, the
    /// ring, or what is derived from the keys): model checkers identify
    /// states by it. Not part of the API.
    #[doc(hidden)]
    pub fn debug_state(&self) -> String {
        format!(
            "{:?}",
            (
                (&self.hlc, self.epoch, self.next_op, &self.keys, &self.hints),
                (&self.hints_offered, &self.up, &self.writes, &self.reads),
                (&self.forwards, &self.exchanges, &self.forwarded_seen),
                (self.ae_cursor, &self.last_exchange, &self.staged_keys),
                (&self.staged_hints, self.staged_epoch, &self.deferred),
                (
                    self.next_persist,
                    &self.unpersisted,
                    &self.inbox,
                    &self.outputs
                ),
                (self.next_hints, self.next_ae, self.wall_ms),
            )
        )
    }

    /// The next output for the driver, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`tick`](Core::tick) should be called next.
    pub fn next_timeout(&self) -> Millis {
        let mut next = self.next_hints;
        if self.config.anti_entropy_interval_ms > 0 {
            next = next.min(self.next_ae);
        }
        let deadlines = self
            .writes
            .values()
            .map(|w| w.deadline)
            .chain(self.reads.values().map(|r| r.deadline))
            .chain(self.forwards.values().map(|f| f.deadline))
            .chain(self.exchanges.values().map(|x| x.deadline));
        deadlines.fold(next, Millis::min)
    }

    /// What this node reports.
    pub fn status(&self) -> Status {
        let mut hints_pending: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
        for (id, bytes) in &self.hint_bytes {
            let entry = hints_pending.entry(id.0.clone()).or_default();
            entry.0 += 1;
            entry.1 += *bytes as u64;
        }
        Status {
            id: self.config.id.clone(),
            ring: self.ring.fingerprint(),
            keys: self.keys.len() as u64,
            hints_pending,
            last_exchange: self.last_exchange.clone(),
            reachable: self.up.iter().cloned().collect(),
            drift_refusals: self.hlc.refused(),
            metrics: self.metrics.clone(),
        }
    }

    /// This node's own copy of `key`, read without coordinating: nothing
    /// is sent, repaired or persisted (a diagnostic: the harness compares
    /// every replica's copy after a heal; clients read through quorums).
    /// The copy includes writes merged here but not yet durable. A node
    /// that is not one of the key's `n` replicas has no copy of its own
    /// (hints it holds for an owner are not its data): `value` is `None`.
    pub fn local_read(&self, key: &[u8]) -> LocalRead {
        let replicas = self.ring.preference_list(key, self.config.n);
        let value = replicas.contains(&self.config.id).then(|| {
            self.state(key)
                .map_or(ReadValue::Absent, KeyState::read_value)
        });
        LocalRead { replicas, value }
    }

    // ---- inputs -------------------------------------------------------

    /// A client request `req_id` arrived at monotonic time `now` and
    /// physical time `wall_ms` (ms since the Unix epoch), with per-request
    /// quorum overrides.
    pub fn handle_client(
        &mut self,
        now: Millis,
        wall_ms: u64,
        req_id: RequestId,
        op: ClientOp,
        quorum: Quorum,
    ) {
        self.wall_ms = self.wall_ms.max(wall_ms);
        let pending = self.writes.len() + self.reads.len() + self.forwards.len();
        if pending >= self.config.max_pending_requests && !matches!(op, ClientOp::Cas { .. }) {
            let limit = self.config.max_pending_requests;
            self.reply(req_id, Reply::Failed(ClientError::Busy { limit }));
            return self.after_input_at(now);
        }
        match op {
            ClientOp::Cas { .. } => self.reply(req_id, Reply::Failed(ClientError::CasUnsupported)),
            ClientOp::Get { key } => self.start_read(now, req_id, key, quorum),
            op => {
                let targets = self.targets(op.key());
                if targets.iter().any(|t| t.node == self.config.id) {
                    self.coordinate(now, ReplyTo::Client(req_id), op, quorum);
                } else {
                    self.forward(now, req_id, op, quorum, targets);
                }
            }
        }
        self.after_input_at(now);
    }

    /// A message from peer `from` arrived.
    pub fn handle_peer(&mut self, now: Millis, wall_ms: u64, from: NodeId, msg: Message) {
        self.wall_ms = self.wall_ms.max(wall_ms);
        if from == self.config.id || !self.config.nodes.contains(&from) {
            return; // not a peer: ignore
        }
        self.on_message(now, from, msg);
        self.after_input_at(now);
    }

    /// The driver can reach `peer` (again).
    pub fn connected(&mut self, now: Millis, peer: &NodeId) {
        if *peer != self.config.id && self.config.nodes.contains(peer) {
            self.up.insert(peer.clone());
            // Offer its hints at the next round, not after a full interval.
            self.next_hints = self.next_hints.min(now);
        }
        self.after_input_at(now);
    }

    /// The driver lost `peer`: sloppy quorums stand in for it.
    pub fn disconnected(&mut self, now: Millis, peer: &NodeId) {
        self.up.remove(peer);
        self.hints_offered.retain(|(owner, _), _| owner != peer);
        self.after_input_at(now);
    }

    /// The driver made every [`Persist`] up to `id` durable.
    pub fn persisted(&mut self, now: Millis, id: u64) {
        while self.unpersisted.front().is_some_and(|(i, _)| *i <= id) {
            let (_, sends) = self.unpersisted.pop_front().expect("checked");
            for (to, msg) in sends {
                self.send(to, msg);
            }
        }
        self.after_input_at(now);
    }

    /// The time [`next_timeout`](Core::next_timeout) named has come (or
    /// later): request deadlines, hint delivery, anti-entropy.
    pub fn tick(&mut self, now: Millis, wall_ms: u64) {
        self.wall_ms = self.wall_ms.max(wall_ms);
        self.expire_requests(now);
        if now >= self.next_hints {
            self.next_hints = now.plus(self.config.hint_interval_ms);
            self.deliver_hints(now);
        }
        if self.config.anti_entropy_interval_ms > 0 && now >= self.next_ae {
            self.next_ae = now.plus(self.config.anti_entropy_interval_ms);
            self.start_exchange(now);
        }
        self.after_input_at(now);
    }

    // ---- plumbing -----------------------------------------------------

    /// Handles messages to self, then stages one persist.
    fn after_input_at(&mut self, now: Millis) {
        loop {
            while let Some(msg) = self.inbox.pop_front() {
                let me = self.config.id.clone();
                self.on_message(now, me, msg);
            }
            self.flush();
            if self.inbox.is_empty() {
                break;
            }
        }
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        if to == self.config.id {
            self.inbox.push_back(msg);
        } else {
            if is_ae(&msg) {
                self.metrics.ae_bytes_shipped += msg.encode().len() as u64;
            }
            self.outputs.push_back(Output::Send { to, msg });
        }
    }

    /// Sends once everything staged so far is durable.
    fn send_durable(&mut self, to: NodeId, msg: Message) {
        self.deferred.push((to, msg));
    }

    fn reply(&mut self, req_id: RequestId, reply: Reply) {
        self.outputs.push_back(Output::Reply { req_id, reply });
    }

    /// Emits the staged changes as one [`Persist`]; deferred sends wait
    /// for it (or for the last one in flight, if nothing is staged).
    fn flush(&mut self) {
        let staged =
            !self.staged_keys.is_empty() || !self.staged_hints.is_empty() || self.staged_epoch;
        let deferred = std::mem::take(&mut self.deferred);
        if staged {
            let id = self.next_persist;
            self.next_persist += 1;
            let persist = Persist {
                id,
                ring: self.ring.fingerprint(),
                epoch: self.epoch,
                clock: self.hlc.last(),
                keys: std::mem::take(&mut self.staged_keys).into_iter().collect(),
                hints: std::mem::take(&mut self.staged_hints),
            };
            self.staged_epoch = false;
            self.outputs.push_back(Output::Persist(persist));
            self.unpersisted.push_back((id, deferred));
        } else if let Some((_, last)) = self.unpersisted.back_mut() {
            last.extend(deferred);
        } else {
            for (to, msg) in deferred {
                self.send(to, msg);
            }
        }
    }

    fn is_up(&self, node: &NodeId) -> bool {
        *node == self.config.id || self.up.contains(node)
    }

    /// The replicas a request for `key` goes to.
    fn targets(&self, key: &[u8]) -> Vec<Target> {
        let n = self.config.n;
        let walk: Vec<NodeId> = self.ring.walk(key).cloned().collect();
        let (primaries, fallbacks) = walk.split_at(n);
        if !self.config.sloppy {
            return primaries
                .iter()
                .map(|p| Target {
                    node: p.clone(),
                    hint: None,
                    primary: true,
                })
                .collect();
        }
        let mut spare = fallbacks.iter().filter(|f| self.is_up(f));
        let mut out = Vec::with_capacity(n);
        for p in primaries {
            if self.is_up(p) {
                out.push(Target {
                    node: p.clone(),
                    hint: None,
                    primary: true,
                });
            } else if let Some(f) = spare.next() {
                out.push(Target {
                    node: f.clone(),
                    hint: Some(p.clone()),
                    primary: false,
                });
            }
        }
        out
    }

    /// Refuses a request that cannot reach its quorum with the reachable
    /// targets (nothing is sent).
    fn check_reachable(
        &mut self,
        key: &[u8],
        targets: &[Target],
        needed: usize,
        primaries_needed: usize,
    ) -> Result<(), ClientError> {
        let reachable: Vec<&Target> = targets.iter().filter(|t| self.is_up(&t.node)).collect();
        let primaries = reachable.iter().filter(|t| t.primary).count();
        if reachable.len() >= needed && primaries >= primaries_needed {
            return Ok(());
        }
        self.metrics.not_enough_replicas += 1;
        Err(ClientError::NotEnoughReplicas {
            key: String::from_utf8_lossy(key).into_owned(),
            reachable: reachable.len(),
            primaries,
            needed,
            primaries_needed,
            hint: if self.config.sloppy {
                String::new()
            } else {
                "; with sloppy = false only the key's primary owners count".into()
            },
        })
    }

    fn next_op(&mut self) -> u64 {
        let op = self.next_op;
        self.next_op += 1;
        op
    }

    fn mint_actor(&mut self) -> NodeId {
        self.epoch += 1;
        self.staged_epoch = true;
        NodeId::from(format!("{}.{}", self.config.id, self.epoch))
    }

    // ---- writes -------------------------------------------------------

    fn forward(
        &mut self,
        now: Millis,
        req_id: RequestId,
        op: ClientOp,
        quorum: Quorum,
        targets: Vec<Target>,
    ) {
        let Some(to) = targets
            .iter()
            .find(|t| self.is_up(&t.node))
            .map(|t| t.node.clone())
        else {
            let q = self.config.quorum(&quorum).unwrap_or_default();
            let err = self
                .check_reachable(op.key(), &targets, q.w.unwrap_or(1).max(1), 0)
                .expect_err("no reachable target");
            self.reply(req_id, Reply::Failed(err));
            return;
        };
        let id = self.next_op();
        self.metrics.writes_forwarded += 1;
        // The target's own deadline comes first; this one catches a lost link.
        let timeout = self.config.request_timeout_ms;
        self.forwards.insert(
            id,
            ForwardOp {
                req_id,
                started: now,
                deadline: now.plus(timeout + timeout / 2),
            },
        );
        self.send(
            to,
            Message::Forward {
                op: id,
                request: op,
                quorum,
            },
        );
    }

    fn finish_write(&mut self, to: ReplyTo, reply: Reply) {
        match to {
            ReplyTo::Client(req_id) => self.reply(req_id, reply),
            ReplyTo::Forwarded { node, op } => self.send(node, Message::ForwardReply { op, reply }),
        }
    }

    fn coordinate(&mut self, now: Millis, reply_to: ReplyTo, op: ClientOp, quorum: Quorum) {
        let q = match self.config.quorum(&quorum) {
            Ok(q) => q,
            Err(e) => return self.finish_write(reply_to, Reply::Failed(ClientError::BadQuorum(e))),
        };
        let (w, pw, dw) = (q.w.unwrap_or(1), q.pw.unwrap_or(0), q.dw.unwrap_or(0));
        let key = op.key().to_vec();
        let targets = self.targets(&key);
        let Some(me) = targets.iter().find(|t| t.node == self.config.id).cloned() else {
            // Forwarded here, but this node's view of reachability differs.
            let err = ClientError::NotEnoughReplicas {
                key: String::from_utf8_lossy(&key).into_owned(),
                reachable: 0,
                primaries: 0,
                needed: w,
                primaries_needed: pw,
                hint: "; the write was forwarded to a node that is not one of the key's targets in its own view of reachability: retry".into(),
            };
            return self.finish_write(reply_to, Reply::Failed(err));
        };
        if let Err(e) = self.check_reachable(&key, &targets, w, pw) {
            return self.finish_write(reply_to, Reply::Failed(e));
        }
        let (current, actor) = match &me.hint {
            None => self
                .keys
                .get(&key)
                .map(|s| (Some(s.state.clone()), s.actor.clone()))
                .unwrap_or((None, None)),
            Some(owner) => self
                .hints
                .get(&(owner.clone(), key.clone()))
                .map(|h| (Some(h.state.clone()), h.actor.clone()))
                .unwrap_or((None, None)),
        };
        let (state, actor, written) = match self.apply_op(current.as_ref(), actor, op) {
            Ok(done) => done,
            Err(e) => return self.finish_write(reply_to, Reply::Failed(e)),
        };
        self.metrics.writes_coordinated += 1;
        match &me.hint {
            None => self.set_key(&key, state.clone(), actor),
            Some(owner) => {
                if !self.set_hint(owner, &key, state.clone(), actor) {
                    return self.finish_write(
                        reply_to,
                        Reply::Failed(ClientError::BadQuorum(
                            "this node's hint budget (hint_max_bytes) is full".into(),
                        )),
                    );
                }
            }
        }
        let id = self.next_op();
        let me_id = self.config.id.clone();
        self.send_durable(
            me_id.clone(),
            Message::Stored {
                op: id,
                durable: true,
            },
        );
        for t in targets.iter().filter(|t| t.node != me_id) {
            let msg = Message::Store {
                op: id,
                key: key.clone(),
                state: state.clone(),
                hint: t.hint.clone(),
                ack_received: dw < w,
            };
            self.send_durable(t.node.clone(), msg);
        }
        self.writes.insert(
            id,
            WriteOp {
                reply_to,
                targets,
                received: BTreeSet::new(),
                durable: BTreeSet::new(),
                w,
                pw,
                dw,
                written,
                started: now,
                deadline: now.plus(self.config.request_timeout_ms),
            },
        );
    }

    /// The key's new state after `op` at this coordinator.
    fn apply_op(
        &mut self,
        current: Option<&KeyState>,
        actor: Option<NodeId>,
        op: ClientOp,
    ) -> Result<(KeyState, Option<NodeId>, Reply), ClientError> {
        let key = op.key().to_vec();
        let mismatch =
            |existing: KeyType, requested: KeyType, operation: &str| ClientError::TypeMismatch {
                key: String::from_utf8_lossy(&key).into_owned(),
                existing,
                requested,
                operation: operation.into(),
            };
        let requested = match &op {
            ClientOp::Put { .. } | ClientOp::Delete { .. } => KeyType::Register,
            ClientOp::Increment { .. } => KeyType::Counter,
            _ => KeyType::Set,
        };
        if let Some(existing) = current.map(KeyState::key_type) {
            if existing != requested {
                let name = match &op {
                    ClientOp::Put { .. } => "put",
                    ClientOp::Delete { .. } => "delete",
                    ClientOp::Increment { .. } => "increment",
                    ClientOp::SetAdd { .. } => "set add",
                    _ => "set remove",
                };
                return Err(mismatch(existing, requested, name));
            }
        }
        let mut written = Reply::Written {
            key_dot: None,
            context: None,
            ts: None,
            tally: Tally::default(),
        };
        let state = match op {
            ClientOp::Put { context, value, .. } => {
                self.write_register(current, actor, context, Some(value), false, &mut written)?
            }
            ClientOp::Delete { context, .. } => {
                let forget = self.config.sabotage == Some(Sabotage::ForgetOnDelete);
                self.write_register(current, actor, context, None, forget, &mut written)?
            }
            ClientOp::Increment { delta, .. } => {
                let actor = actor.unwrap_or_else(|| self.mint_actor());
                let mut c = match current {
                    Some(KeyState::Counter(c)) => c.clone(),
                    _ => PnCounter::new(),
                };
                c.increment(actor.clone(), delta);
                return Ok((KeyState::Counter(c), Some(actor), written));
            }
            ClientOp::SetAdd { element, .. } => {
                let actor = actor.unwrap_or_else(|| self.mint_actor());
                let mut s = match current {
                    Some(KeyState::Set(s)) => s.clone(),
                    _ => OrSet::new(),
                };
                s.add(actor.clone(), element);
                return Ok((KeyState::Set(s), Some(actor), written));
            }
            ClientOp::SetRemove { element, .. } => {
                let mut s = match current {
                    Some(KeyState::Set(s)) => s.clone(),
                    _ => OrSet::new(),
                };
                s.remove(&element);
                return Ok((KeyState::Set(s), actor, written));
            }
            ClientOp::Get { .. } | ClientOp::Cas { .. } => unreachable!("not a write"),
        };
        Ok(state)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_register(
        &mut self,
        current: Option<&KeyState>,
        actor: Option<NodeId>,
        context: Option<mimeo_causality::VersionVector>,
        value: Option<Vec<u8>>,
        forget: bool,
        written: &mut Reply,
    ) -> Result<(KeyState, Option<NodeId>, Reply), ClientError> {
        match self.config.policy {
            Policy::Siblings => {
                let actor = actor.unwrap_or_else(|| self.mint_actor());
                let mut dvv = match current {
                    Some(KeyState::Siblings(d)) if !forget => d.clone(),
                    _ => DvvSet::new(),
                };
                let context = if forget {
                    Default::default()
                } else {
                    context.unwrap_or_default()
                };
                let w =
                    dvv.update_with(&self.config.sibling_limits, &context, actor.clone(), value)?;
                if let Reply::Written {
                    key_dot, context, ..
                } = written
                {
                    *key_dot = Some(w.dot);
                    *context = Some(w.context);
                }
                Ok((KeyState::Siblings(dvv), Some(actor), written.clone()))
            }
            Policy::Lww => {
                if let Some(KeyState::Lww(c)) = current {
                    let _ = self.hlc.observe(self.wall_ms, &c.ts);
                }
                let ts = self.hlc.tick(self.wall_ms);
                let mut lww = Lww::new(ts.clone(), value);
                if let Some(KeyState::Lww(c)) = current {
                    lww.merge(c);
                }
                if let Reply::Written { ts: t, .. } = written {
                    *t = Some(ts);
                }
                Ok((KeyState::Lww(lww), actor, written.clone()))
            }
        }
    }

    fn on_stored(&mut self, from: NodeId, op: u64, durable: bool) {
        if let Some(write) = self.writes.get_mut(&op) {
            write.received.insert(from.clone());
            if durable {
                write.durable.insert(from);
            }
            let tally = write_tally(write);
            if tally.replies >= write.w && tally.primaries >= write.pw && tally.durable >= write.dw
            {
                let write = self.writes.remove(&op).expect("present");
                let mut reply = write.written;
                if let Reply::Written { tally: t, .. } = &mut reply {
                    *t = tally;
                }
                self.finish_write(write.reply_to, reply);
            }
        } else if durable {
            if let Some(read) = self.reads.get_mut(&op) {
                if let Some((_, waiting)) = &mut read.held {
                    waiting.remove(&from);
                    if waiting.is_empty() {
                        let (reply, _) = read.held.take().expect("held");
                        let req_id = read.req_id;
                        self.reply(req_id, reply);
                        self.maybe_finish_read(op);
                    }
                }
            }
        }
    }

    // ---- reads --------------------------------------------------------

    fn start_read(&mut self, now: Millis, req_id: RequestId, key: Vec<u8>, quorum: Quorum) {
        let q = match self.config.quorum(&quorum) {
            Ok(q) => q,
            Err(e) => return self.reply(req_id, Reply::Failed(ClientError::BadQuorum(e))),
        };
        let (mut r, pr) = (q.r.unwrap_or(1), q.pr.unwrap_or(0));
        if self.config.sabotage == Some(Sabotage::ReadOne) {
            r = 1;
        }
        let targets = self.targets(&key);
        if let Err(e) = self.check_reachable(&key, &targets, r, pr) {
            return self.reply(req_id, Reply::Failed(e));
        }
        self.metrics.reads_coordinated += 1;
        let id = self.next_op();
        for t in &targets {
            let msg = Message::Fetch {
                op: id,
                key: key.clone(),
                hint: t.hint.clone(),
            };
            self.send(t.node.clone(), msg);
        }
        self.reads.insert(
            id,
            ReadOp {
                req_id,
                key,
                targets,
                replies: BTreeMap::new(),
                r,
                pr,
                answered: false,
                held: None,
                started: now,
                deadline: now.plus(self.config.request_timeout_ms),
            },
        );
    }

    fn on_fetched(&mut self, from: NodeId, op: u64, state: Option<KeyState>) {
        let Some(read) = self.reads.get_mut(&op) else {
            return;
        };
        if !read.targets.iter().any(|t| t.node == from) {
            return;
        }
        read.replies.insert(from, state);
        let tally = read_tally(read);
        if !read.answered && tally.replies >= read.r && tally.primaries >= read.pr {
            read.answered = true;
            let merged = merge_all(read.replies.values());
            let value = merged
                .as_ref()
                .map_or(ReadValue::Absent, KeyState::read_value);
            let reply = Reply::Value { value, tally };
            let req_id = read.req_id;
            if self.config.read_repair == ReadRepair::Blocking {
                let stale = self.repair(op, merged.as_ref(), true);
                if !stale.is_empty() {
                    self.reads.get_mut(&op).expect("present").held = Some((reply, stale));
                    return;
                }
            }
            self.reply(req_id, reply);
        }
        self.maybe_finish_read(op);
    }

    /// Writes `merged` back to the repliers of read `op` that differ;
    /// returns them.
    fn repair(&mut self, op: u64, merged: Option<&KeyState>, ack: bool) -> BTreeSet<NodeId> {
        let Some(merged) = merged else {
            return BTreeSet::new();
        };
        let read = &self.reads[&op];
        let stale: Vec<(NodeId, Option<NodeId>)> = read
            .replies
            .iter()
            .filter(|(_, s)| s.as_ref() != Some(merged))
            .map(|(n, _)| {
                let hint = read
                    .targets
                    .iter()
                    .find(|t| t.node == *n)
                    .and_then(|t| t.hint.clone());
                (n.clone(), hint)
            })
            .collect();
        let key = read.key.clone();
        for (node, hint) in &stale {
            self.metrics.read_repairs += 1;
            let msg = Message::Store {
                op: if ack { op } else { 0 },
                key: key.clone(),
                state: merged.clone(),
                hint: hint.clone(),
                ack_received: false,
            };
            self.send(node.clone(), msg);
        }
        stale.into_iter().map(|(n, _)| n).collect()
    }

    /// Ends a read once it answered, every target replied and no repair
    /// holds it: background read repair of everything it heard.
    fn maybe_finish_read(&mut self, op: u64) {
        let Some(read) = self.reads.get(&op) else {
            return;
        };
        if read.answered && read.held.is_none() && read.replies.len() == read.targets.len() {
            self.end_read(op);
        }
    }

    fn end_read(&mut self, op: u64) {
        let merged = merge_all(self.reads[&op].replies.values());
        if self.config.read_repair != ReadRepair::Off {
            self.repair(op, merged.as_ref(), false);
        }
        self.reads.remove(&op);
    }

    fn expire_requests(&mut self, now: Millis) {
        let late: Vec<u64> = self
            .writes
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let write = self.writes.remove(&id).expect("present");
            self.metrics.writes_unknown += 1;
            let reply = Reply::Unknown {
                tally: write_tally(&write),
                waited_ms: now.0 - write.started.0,
            };
            self.finish_write(write.reply_to, reply);
        }
        let late: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let read = self.reads.get_mut(&id).expect("present");
            if let Some((reply, _)) = read.held.take() {
                let req_id = read.req_id;
                self.reply(req_id, reply);
            } else if !read.answered {
                read.answered = true;
                let reply = Reply::Unavailable {
                    tally: read_tally(read),
                    waited_ms: now.0 - read.started.0,
                };
                let req_id = read.req_id;
                self.metrics.reads_unavailable += 1;
                self.reply(req_id, reply);
            }
            self.end_read(id);
        }
        let late: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let f = self.forwards.remove(&id).expect("present");
            self.metrics.writes_unknown += 1;
            let reply = Reply::Unknown {
                tally: Tally::default(),
                waited_ms: now.0 - f.started.0,
            };
            self.reply(f.req_id, reply);
        }
        self.exchanges.retain(|_, x| x.deadline > now);
        self.forwarded_seen.retain(|_, until| *until > now);
    }

    // ---- replica side -------------------------------------------------

    fn on_message(&mut self, now: Millis, from: NodeId, msg: Message) {
        match msg {
            Message::Forward {
                op,
                request,
                quorum,
            } => {
                // The forwarder gives up after 1.5 timeouts: remembering
                // for 2 covers every duplicate it can still wait for.
                let until = now.plus(2 * self.config.request_timeout_ms);
                if self
                    .forwarded_seen
                    .insert((from.clone(), op), until)
                    .is_some()
                {
                    return;
                }
                if request.is_write() {
                    let to = ReplyTo::Forwarded { node: from, op };
                    self.coordinate(now, to, request, quorum);
                }
            }
            Message::ForwardReply { op, reply } => {
                if let Some(f) = self.forwards.remove(&op) {
                    if matches!(reply, Reply::Unknown { .. }) {
                        self.metrics.writes_unknown += 1;
                    }
                    self.reply(f.req_id, reply);
                }
            }
            Message::Store {
                op,
                key,
                state,
                hint,
                ack_received,
            } => {
                let stored = match hint.filter(|owner| *owner != self.config.id) {
                    None => {
                        self.merge_key(&key, &state);
                        true
                    }
                    Some(owner) => self.merge_hint(&owner, &key, &state),
                };
                if stored && op != 0 {
                    if ack_received {
                        self.send(from.clone(), Message::Stored { op, durable: false });
                    }
                    self.send_durable(from, Message::Stored { op, durable: true });
                }
            }
            Message::Stored { op, durable } => self.on_stored(from, op, durable),
            Message::Fetch { op, key, hint } => {
                let state = match hint.filter(|owner| *owner != self.config.id) {
                    None => self.keys.get(&key).map(|s| s.state.clone()),
                    Some(owner) => self.hints.get(&(owner, key)).map(|h| h.state.clone()),
                };
                self.send(from, Message::Fetched { op, state });
            }
            Message::Fetched { op, state } => self.on_fetched(from, op, state),
            Message::Handoff { key, state } => {
                let hash = state.hash();
                self.merge_key(&key, &state);
                self.send_durable(from, Message::HandedOff { key, hash });
            }
            Message::HandedOff { key, hash } => {
                let id = (from, key);
                self.hints_offered.remove(&id);
                if self.hints.get(&id).is_some_and(|h| h.state.hash() == hash) {
                    self.remove_hint(&id);
                    self.metrics.hints_delivered += 1;
                }
            }
            Message::AeRoot { xid, tree, root } => self.on_ae_root(from, xid, tree, root),
            Message::AeBranches {
                xid,
                tree,
                branches,
            } => self.on_ae_branches(now, from, xid, tree, branches),
            Message::AeSegments {
                xid,
                tree,
                segments,
            } => self.on_ae_segments(from, xid, tree, segments),
            Message::AeKeys {
                xid,
                tree,
                segments,
                keys,
            } => self.on_ae_keys(now, from, xid, tree, segments, keys),
            Message::AeStates {
                xid,
                tree,
                states,
                want,
            } => {
                for (key, state) in &states {
                    if self.tree_of(key) == Some(tree) {
                        self.merge_key(key, state);
                    }
                }
                if !want.is_empty() {
                    let states = self.states_of(tree, want);
                    self.metrics.ae_keys_shipped += states.len() as u64;
                    let msg = Message::AeStates {
                        xid,
                        tree,
                        states,
                        want: Vec::new(),
                    };
                    self.send(from, msg);
                }
            }
        }
    }

    /// Merges a received state into the key.
    fn merge_key(&mut self, key: &[u8], state: &KeyState) {
        if let KeyState::Lww(lww) = state {
            // Follow causality: a later local write is stamped after it
            // (a timestamp too far ahead is refused and counted).
            let _ = self.hlc.observe(self.wall_ms, &lww.ts);
        }
        let (mut merged, actor) = match self.keys.get(key) {
            Some(s) => (Some(s.state.clone()), s.actor.clone()),
            None => (None, None),
        };
        if self.config.sabotage == Some(Sabotage::ReplaceOnStore) {
            merged = Some(state.clone());
        } else {
            let before = merged.as_ref().map(KeyState::key_type);
            merge_opt(&mut merged, state);
            if before.is_some_and(|t| t != state.key_type()) {
                self.metrics.type_conflicts += 1;
            }
        }
        let merged = merged.expect("merged with a state");
        if self.keys.get(key).map(|s| &s.state) != Some(&merged) {
            self.set_key(key, merged, actor);
        }
    }

    fn set_key(&mut self, key: &[u8], state: KeyState, actor: Option<NodeId>) {
        self.tree_update(key, Some(state.hash()));
        let stored = StoredKey { state, actor };
        self.staged_keys.insert(key.to_vec(), stored.clone());
        self.keys.insert(key.to_vec(), stored);
    }

    // ---- hints --------------------------------------------------------

    /// Merges a state into the hint for (owner, key); false if the hint
    /// budget refused it.
    fn merge_hint(&mut self, owner: &NodeId, key: &[u8], state: &KeyState) -> bool {
        let id = (owner.clone(), key.to_vec());
        let (mut merged, actor) = match self.hints.get(&id) {
            Some(h) => (Some(h.state.clone()), h.actor.clone()),
            None => (None, None),
        };
        merge_opt(&mut merged, state);
        let merged = merged.expect("merged");
        if self.hints.get(&id).map(|h| &h.state) == Some(&merged) {
            return true;
        }
        self.set_hint(owner, key, merged, actor)
    }

    fn set_hint(
        &mut self,
        owner: &NodeId,
        key: &[u8],
        state: KeyState,
        actor: Option<NodeId>,
    ) -> bool {
        let id = (owner.clone(), key.to_vec());
        let bytes = state.encode().len();
        let held = self.hint_bytes_total - self.hint_bytes.get(&id).copied().unwrap_or(0);
        if held + bytes > self.config.hint_max_bytes {
            self.metrics.hints_refused += 1;
            return false;
        }
        let stored_wall_ms = match self.hints.get(&id) {
            Some(h) => h.stored_wall_ms,
            None => {
                self.metrics.hints_stored += 1;
                self.wall_ms
            }
        };
        let hint = Hint {
            owner: owner.clone(),
            key: key.to_vec(),
            state,
            actor,
            stored_wall_ms,
        };
        self.hint_bytes_total = held + bytes;
        self.hint_bytes.insert(id.clone(), bytes);
        self.staged_hints.push(HintChange::Put(hint.clone()));
        self.hints.insert(id, hint);
        true
    }

    fn remove_hint(&mut self, id: &(NodeId, Vec<u8>)) {
        if self.hints.remove(id).is_some() {
            self.hint_bytes_total -= self.hint_bytes.remove(id).unwrap_or(0);
            self.staged_hints.push(HintChange::Remove {
                owner: id.0.clone(),
                key: id.1.clone(),
            });
        }
    }

    /// Drops hints past their age; offers the others to reachable owners,
    /// at most `hint_batch` in flight per owner.
    fn deliver_hints(&mut self, now: Millis) {
        let max_age = self.config.hint_max_age_ms;
        let old: Vec<(NodeId, Vec<u8>)> = self
            .hints
            .iter()
            .filter(|(_, h)| self.wall_ms.saturating_sub(h.stored_wall_ms) > max_age)
            .map(|(id, _)| id.clone())
            .collect();
        for id in old {
            self.remove_hint(&id);
            self.hints_offered.remove(&id);
            self.metrics.hints_expired += 1;
        }
        let retry = self.config.request_timeout_ms;
        self.hints_offered
            .retain(|_, offered| offered.plus(retry) > now);
        let mut sends = Vec::new();
        let mut per_owner: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (owner, _) in self.hints_offered.keys() {
            *per_owner.entry(owner.clone()).or_default() += 1;
        }
        for (id, hint) in &self.hints {
            if !self.up.contains(&id.0) || self.hints_offered.contains_key(id) {
                continue;
            }
            let n = per_owner.entry(id.0.clone()).or_default();
            if *n >= self.config.hint_batch {
                continue;
            }
            *n += 1;
            sends.push((id.clone(), hint.state.clone()));
        }
        for (id, state) in sends {
            if self.config.sabotage == Some(Sabotage::DropHints) {
                self.remove_hint(&id);
                continue;
            }
            self.hints_offered.insert(id.clone(), now);
            let msg = Message::Handoff {
                key: id.1.clone(),
                state,
            };
            self.send(id.0, msg);
        }
    }

    // ---- anti-entropy -------------------------------------------------

    fn tree_of(&self, key: &[u8]) -> Option<u32> {
        let set = self.ring.replica_set(key, self.config.n);
        let i = self.sets.binary_search(&set).ok()? as u32;
        self.trees.contains_key(&i).then_some(i)
    }

    fn tree_update(&mut self, key: &[u8], hash: Option<u64>) {
        if let Some(t) = self.tree_of(key) {
            self.trees.get_mut(&t).expect("own tree").update(key, hash);
        }
    }

    /// Starts an exchange for the next (tree, peer) pair, round robin,
    /// skipping unreachable peers.
    fn start_exchange(&mut self, now: Millis) {
        let pairs: Vec<(u32, NodeId)> = self
            .trees
            .keys()
            .flat_map(|&t| {
                self.sets[t as usize]
                    .iter()
                    .filter(|n| **n != self.config.id)
                    .map(move |n| (t, n.clone()))
            })
            .collect();
        for _ in 0..pairs.len() {
            let (tree, peer) = pairs[self.ae_cursor % pairs.len()].clone();
            self.ae_cursor = self.ae_cursor.wrapping_add(1);
            if !self.up.contains(&peer) {
                continue;
            }
            let xid = self.next_op();
            let root = self.trees[&tree].root();
            self.exchanges.insert(
                xid,
                Exchange {
                    peer: peer.clone(),
                    tree,
                    deadline: now.plus(self.config.request_timeout_ms),
                },
            );
            self.send(peer, Message::AeRoot { xid, tree, root });
            return;
        }
    }

    fn on_ae_root(&mut self, from: NodeId, xid: u64, tree: u32, root: u64) {
        let Some(mine) = self.trees.get(&tree) else {
            return;
        };
        let branches =
            if mine.root() == root || self.config.sabotage == Some(Sabotage::SkipAntiEntropy) {
                Vec::new()
            } else {
                mine.branches().to_vec()
            };
        self.send(
            from,
            Message::AeBranches {
                xid,
                tree,
                branches,
            },
        );
    }

    fn exchange_done(&mut self, now: Millis, xid: u64) {
        if let Some(x) = self.exchanges.remove(&xid) {
            self.metrics.ae_exchanges += 1;
            self.last_exchange.insert(x.peer, now);
        }
    }

    fn on_ae_branches(
        &mut self,
        now: Millis,
        from: NodeId,
        xid: u64,
        tree: u32,
        branches: Vec<u64>,
    ) {
        if !self
            .exchanges
            .get(&xid)
            .is_some_and(|x| x.peer == from && x.tree == tree)
        {
            return;
        }
        if branches.is_empty() {
            return self.exchange_done(now, xid);
        }
        let mine = &self.trees[&tree];
        let differ = mine.differing_branches(&branches);
        if differ.is_empty() {
            return self.exchange_done(now, xid);
        }
        let segments: Vec<(u32, u64)> = differ
            .iter()
            .flat_map(|&b| mine.branch_segments(b))
            .collect();
        self.send(
            from,
            Message::AeSegments {
                xid,
                tree,
                segments,
            },
        );
    }

    fn on_ae_segments(&mut self, from: NodeId, xid: u64, tree: u32, segments: Vec<(u32, u64)>) {
        let Some(mine) = self.trees.get(&tree) else {
            return;
        };
        self.metrics.ae_segments_compared += segments.len() as u64;
        // Whole segments, until the key list reaches the budget; the
        // other differing segments wait for the next exchange.
        let mut differ = Vec::new();
        let mut keys: Vec<(Vec<u8>, u64, KeyClock)> = Vec::new();
        let mut bytes = 0;
        for s in mine.differing_segments(&segments) {
            if bytes >= self.config.ae_max_bytes {
                break;
            }
            differ.push(s);
            for (k, h) in mine.segment_keys(s) {
                let clock = self
                    .keys
                    .get(k)
                    .map_or(KeyClock::Opaque, |s| s.state.clock());
                bytes += k.len() + 16;
                keys.push((k.clone(), h, clock));
            }
        }
        self.send(
            from,
            Message::AeKeys {
                xid,
                tree,
                segments: differ,
                keys,
            },
        );
    }

    fn on_ae_keys(
        &mut self,
        now: Millis,
        from: NodeId,
        xid: u64,
        tree: u32,
        segments: Vec<u32>,
        keys: Vec<(Vec<u8>, u64, KeyClock)>,
    ) {
        if !self
            .exchanges
            .get(&xid)
            .is_some_and(|x| x.peer == from && x.tree == tree)
        {
            return;
        }
        let mine = &self.trees[&tree];
        let segs = self.config.tree_segments;
        let theirs: BTreeMap<Vec<u8>, (u64, KeyClock)> = keys
            .into_iter()
            .filter(|(k, _, _)| segments.contains(&segment_of(k, segs)))
            .map(|(k, h, c)| (k, (h, c)))
            .collect();
        let mut push = Vec::new();
        let mut want = Vec::new();
        for &s in &segments {
            for (key, hash) in mine.segment_keys(s) {
                let ship = match theirs.get(key) {
                    None => Ship::Push,
                    Some((h, _)) if *h == hash => continue,
                    Some((_, clock)) => {
                        let ours = self
                            .keys
                            .get(key)
                            .map_or(KeyClock::Opaque, |s| s.state.clock());
                        ours.ship(clock)
                    }
                };
                if ship != Ship::Pull {
                    push.push(key.clone());
                }
                if ship != Ship::Push {
                    want.push(key.clone());
                }
            }
        }
        for key in theirs.keys() {
            if mine.get(key).is_none() {
                want.push(key.clone());
            }
        }
        let states = self.states_of(tree, push);
        self.metrics.ae_keys_shipped += states.len() as u64;
        self.exchange_done(now, xid);
        if states.is_empty() && want.is_empty() {
            return;
        }
        self.send(
            from,
            Message::AeStates {
                xid,
                tree,
                states,
                want,
            },
        );
    }

    /// The states of `keys` in `tree`, until they reach `ae_max_bytes`
    /// (at least one): the rest differ still at the next exchange.
    fn states_of(&self, tree: u32, keys: Vec<Vec<u8>>) -> Vec<(Vec<u8>, KeyState)> {
        let mut bytes = 0;
        let mut out = Vec::new();
        for k in keys {
            if bytes >= self.config.ae_max_bytes {
                break;
            }
            if self.tree_of(&k) != Some(tree) {
                continue;
            }
            if let Some(s) = self.keys.get(&k) {
                bytes += k.len() + s.state.encode().len();
                out.push((k, s.state.clone()));
            }
        }
        out
    }
}

fn is_ae(msg: &Message) -> bool {
    matches!(
        msg,
        Message::AeRoot { .. }
            | Message::AeBranches { .. }
            | Message::AeSegments { .. }
            | Message::AeKeys { .. }
            | Message::AeStates { .. }
    )
}

fn write_tally(write: &WriteOp) -> Tally {
    let primary = |n: &NodeId| write.targets.iter().any(|t| t.node == *n && t.primary);
    Tally {
        replies: write.received.len(),
        primaries: write.received.iter().filter(|n| primary(n)).count(),
        durable: write.durable.len(),
        needed: write.w,
        primaries_needed: write.pw,
        durable_needed: write.dw,
    }
}

fn read_tally(read: &ReadOp) -> Tally {
    let primary = |n: &NodeId| read.targets.iter().any(|t| t.node == *n && t.primary);
    Tally {
        replies: read.replies.len(),
        primaries: read.replies.keys().filter(|n| primary(n)).count(),
        durable: 0,
        needed: read.r,
        primaries_needed: read.pr,
        durable_needed: 0,
    }
}

fn merge_all<'a>(states: impl Iterator<Item = &'a Option<KeyState>>) -> Option<KeyState> {
    let mut merged = None;
    for s in states.flatten() {
        merge_opt(&mut merged, s);
    }
    merged
}
