//! The multi-leader core: a state machine without I/O.

use std::collections::{BTreeMap, VecDeque};

use mimeo_causality::{Dot, DvvSet, Hlc, Lww, NodeId, OrSet, PnCounter, Timestamp, VersionVector};

use crate::config::{AckMode, Config, ConfigError, Policy, Sabotage};
use crate::lag::LagHistogram;
use crate::log::MemLog;
use crate::message::Message;
use crate::output::{OriginLag, Output, Status};
use crate::record::{DurableState, KeyChange, Persist, Write};
use crate::state::{KeyRecord, KeyState};
use crate::types::{ack_mode, ClientError, ClientOp, KeyType, Millis, ReadValue, Reply, RequestId};

/// What this node knows about one peer.
#[derive(Clone, Debug, Default)]
struct Peer {
    /// Its applied vector, from its latest status.
    applied: VersionVector,
    /// Its durable vector, from its latest status. Not a join of every
    /// status: a node that lost its disk reports less than it once held,
    /// and must be counted for what it holds now (acknowledgements,
    /// tombstone stability, the log a driver keeps). A stale status only
    /// makes those wait.
    durable: VersionVector,
    /// Writes sent to it beyond `applied` (optimistically).
    sent: VersionVector,
    /// Writes in flight: (origin, seq, bytes).
    inflight: VecDeque<(NodeId, u64, usize)>,
    inflight_bytes: usize,
    /// When it last acknowledged progress (or we last reset).
    last_progress: Millis,
    /// A load from storage asked for it: (origin, from_seq).
    loading: Option<(NodeId, u64)>,
}

/// A local write waiting for its acknowledgements.
#[derive(Clone, Debug)]
struct PendingAck {
    req_id: RequestId,
    seq: u64,
    needed: usize,
    reply: Reply,
    /// What it counts against `max_pending_ack_bytes`.
    bytes: usize,
}

/// Bytes of one version vector entry, for the budgets.
const VV_ENTRY: usize = 24;

/// A session read waiting for replication.
#[derive(Clone, Debug)]
struct WaitingRead {
    req_id: RequestId,
    key: Vec<u8>,
    session: VersionVector,
    since: Millis,
    deadline: Millis,
}

/// A key holding only tombstones, on its way to collection.
#[derive(Clone, Debug)]
struct PendingTombstone {
    /// The key's `writes` when it became (or last changed while) only tombstones.
    writes: VersionVector,
    /// Per node, the first durable vector known here that covered `writes`.
    reports: BTreeMap<NodeId, VersionVector>,
    /// What it counts against `max_tombstone_bytes` (with its key's record).
    bytes: usize,
}

impl PendingTombstone {
    /// Its size with the key and record it keeps alive.
    fn size(&self, key: &[u8], record: &KeyRecord) -> usize {
        64 + key.len()
            + record.state.approx_bytes()
            + VV_ENTRY * (record.writes.len() + self.writes.len())
            + self
                .reports
                .values()
                .map(|r| VV_ENTRY * (r.len() + 1))
                .sum::<usize>()
    }
}

/// Counters reported in [`Status`].
#[derive(Clone, Debug, Default)]
struct Counters {
    duplicates: u64,
    out_of_order: u64,
    type_conflicts: u64,
    collected: u64,
    /// Per origin, the lag of its writes applied here.
    apply_lag: BTreeMap<NodeId, LagHistogram>,
}

/// A multi-leader replica without I/O. See the crate docs for the
/// protocol; in short:
///
/// - **Writes.** [`handle_client`](Core::handle_client) takes a write at
///   this node (the origin), gives it the next sequence number of this
///   origin and an HLC timestamp, applies it, and emits one
///   [`Output::Persist`] (the write, the key's new record and the new
///   applied vector, atomically). Once durable
///   ([`persisted`](Core::persisted)) it is streamed to every peer; the
///   client is answered when `acks` nodes hold it durably.
/// - **Replication and catch-up.** Peers exchange [`Message::Status`]
///   (applied and durable vectors); a node sends each peer exactly the
///   durable writes its applied vector lacks, for every origin (its own
///   and those relayed from others), from a memory log bounded in bytes,
///   or, for older writes, from storage through [`Output::Load`]. In
///   flight per peer: at most `max_inflight_entries` writes and
///   `max_inflight_bytes` bytes; unacknowledged writes are sent again
///   after `retransmit_ms`. A receiver applies each origin's writes in
///   sequence order: duplicates are ignored, a write after a gap is
///   dropped and the gap asked for again at once (a status to the
///   sender), so nothing is buffered. Writes are never sent back to
///   their origin (no echo).
/// - **Applying.** A write carries the key's state at its origin after
///   the write; applying it is a merge (join) of key states, so replicas
///   that applied the same writes hold the same states, in any order.
/// - **HLC drift.** A remote write whose timestamp is more than
///   `max_drift_ms` ahead of this node's physical clock is still applied,
///   with its own timestamp: refusing it would stop this origin's stream
///   (writes apply in order) and block convergence forever. The clock
///   only refuses to *follow* it ([`Hlc::observe`] refuses and counts;
///   [`Status::drift_refusals`]), so one fast clock cannot drag every
///   node's timestamps into the future. Under LWW the fast node's writes
///   still win while its clock is ahead: that is LWW's known cost, and the
///   counter shows it.
/// - **Tombstones.** A delete writes a tombstone (with the read's
///   context). A key holding only tombstones is collected (removed) when
///   it is causally stable: every node's durable vector covers the writes
///   it reflects, *and* every node has durably applied everything each
///   node had applied when it first covered them (so every write
///   concurrent with the delete has been merged everywhere). A key's
///   [`KeyRecord::writes`] is the causal past of its state: every write
///   its origin had applied when it wrote the key (not only writes to the
///   key). A replica applying a write whose record's `writes` covers its
///   own record's `writes` takes the write's record instead of merging:
///   the origin had seen everything the replica's record reflects, so the
///   two differ only by tombstones the origin has collected since. This
///   holds for every later write, not only the first one after a
///   collection (a node still holding collected tombstones may hear of
///   the key first through a write made by a third node, which never held
///   the key as absent), so collection is invisible in the converged
///   state. Old writes that come back (a restarted node re-sending, a
///   duplicate) are below the applied vectors and ignored: nothing
///   deleted comes back. A write whose dot the key's record already
///   reflects (a later write that had seen it arrived first; a wiped
///   node catching up on its old incarnation) changes no key state.
#[derive(Clone, Debug)]
pub struct Core {
    config: Config,
    /// The actor (incarnation) id this node mints writes and dots as.
    actor: NodeId,
    hlc: Hlc,
    keys: BTreeMap<Vec<u8>, KeyRecord>,
    applied: VersionVector,
    durable: VersionVector,
    next_persist: u64,
    staged: Option<(Vec<Write>, Vec<KeyChange>)>,
    unpersisted: VecDeque<(u64, VersionVector)>,
    log: MemLog,
    peers: BTreeMap<NodeId, Peer>,
    acks: Vec<PendingAck>,
    /// Bytes of `acks`.
    ack_bytes: usize,
    reads: Vec<WaitingRead>,
    tombstones: BTreeMap<Vec<u8>, PendingTombstone>,
    /// Bytes of `tombstones`.
    tombstone_bytes: usize,
    outputs: VecDeque<Output>,
    latest: BTreeMap<NodeId, Timestamp>,
    known: VersionVector,
    next_status: Millis,
    wall_ms: u64,
    counters: Counters,
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

    /// A node restarted from what its driver persisted: the applied
    /// vector, every key's record and the clock. Peers' vectors are
    /// learnt again from their statuses; the memory log starts empty
    /// (peers that need older writes get them through [`Output::Load`]).
    ///
    /// # Errors
    ///
    /// The configuration is invalid ([`Config::validate`]).
    pub fn restore(
        config: Config,
        durable: DurableState,
        now: Millis,
    ) -> Result<Core, ConfigError> {
        config.validate()?;
        let actor = match (&durable.actor, &durable.clock) {
            (Some(actor), _) => actor.clone(),
            // A store of format version 1: the node wrote as its plain id.
            (None, Some(_)) => config.id.clone(),
            // Nothing durable: new, or wiped. Never the lost incarnation.
            (None, None) => config.fresh_actor(),
        };
        let mut hlc = Hlc::new(actor.clone(), config.max_drift());
        if let Some(clock) = &durable.clock {
            if config.sabotage != Some(Sabotage::ForgetClock) {
                hlc.restore(clock);
            }
        }
        let peers = config
            .nodes
            .iter()
            .filter(|n| **n != config.id)
            .map(|n| {
                let peer = Peer {
                    last_progress: now,
                    ..Peer::default()
                };
                (n.clone(), peer)
            })
            .collect();
        let mut core = Core {
            actor,
            hlc,
            log: MemLog::new(config.log_bytes),
            keys: durable.keys,
            applied: durable.applied.clone(),
            durable: durable.applied.clone(),
            known: durable.applied,
            next_persist: 1,
            staged: None,
            unpersisted: VecDeque::new(),
            peers,
            acks: Vec::new(),
            ack_bytes: 0,
            reads: Vec::new(),
            tombstones: BTreeMap::new(),
            tombstone_bytes: 0,
            outputs: VecDeque::new(),
            latest: BTreeMap::new(),
            next_status: now,
            wall_ms: 0,
            counters: Counters::default(),
            config,
        };
        let keys: Vec<Vec<u8>> = core.keys.keys().cloned().collect();
        for key in keys {
            core.track_tombstone(&key);
        }
        Ok(core)
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.config.id
    }

    /// The actor id this node writes as: the origin of its writes and the
    /// actor of its dots, counter and set entries. One **incarnation** of
    /// the node: it is kept across restarts (in every [`Persist`]), and a
    /// node that lost its state starts a new one
    /// ([`Config::fresh_actor`]), so it never mints a dot its lost
    /// incarnation minted. See the crate docs ("Incarnations").
    pub fn actor(&self) -> &NodeId {
        &self.actor
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The applied vector: per origin, the contiguous prefix of its writes
    /// applied here.
    pub fn applied(&self) -> &VersionVector {
        &self.applied
    }

    /// The durable vector: the applied vector of the last durable
    /// [`Persist`].
    pub fn durable(&self) -> &VersionVector {
        &self.durable
    }

    /// The HLC's last timestamp.
    pub fn clock(&self) -> Timestamp {
        self.hlc.last()
    }

    /// A key's record, if the key has state here.
    pub fn record(&self, key: &[u8]) -> Option<&KeyRecord> {
        self.keys.get(key)
    }

    /// Every key's record, in key order (what the convergence checks
    /// compare).
    pub fn records(&self) -> impl Iterator<Item = (&Vec<u8>, &KeyRecord)> + '_ {
        self.keys.iter()
    }

    /// The next output for the driver, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`tick`](Core::tick) should be called next.
    pub fn next_timeout(&self) -> Millis {
        let mut next = self.next_status;
        for read in &self.reads {
            next = next.min(read.deadline);
        }
        for peer in self.peers.values() {
            if !peer.inflight.is_empty() || peer.loading.is_some() {
                next = next.min(peer.last_progress.plus(self.config.retransmit_ms));
            }
        }
        next
    }

    /// What this node reports, at physical time `wall_ms`.
    pub fn status(&self, wall_ms: u64) -> Status {
        // Every origin (incarnation) known here, this node's own included.
        let mut every = self.known.joined(&self.applied);
        every.raise(self.actor.clone(), 1);
        let origins = every
            .iter()
            .map(|(origin, _)| {
                let applied = self.applied.get(origin.as_str());
                let (node, incarnation) = self
                    .config
                    .member_of(origin.as_str())
                    .map_or((origin.clone(), 0), |(n, e)| (n.clone(), e));
                let lag = OriginLag {
                    node,
                    incarnation,
                    applied,
                    behind_writes: self.known.get(origin.as_str()).saturating_sub(applied),
                    since_latest_ms: self
                        .latest
                        .get(origin)
                        .map_or(0, |ts| wall_ms.saturating_sub(ts.physical_ms)),
                };
                (origin.clone(), lag)
            })
            .collect();
        let mut siblings_histogram = BTreeMap::new();
        let mut live_keys = 0;
        for record in self.keys.values() {
            if record.state.only_tombstones() {
                continue;
            }
            live_keys += 1;
            if let KeyState::Siblings(dvv) = &record.state {
                *siblings_histogram.entry(dvv.len()).or_insert(0) += 1;
            }
        }
        Status {
            id: self.config.id.clone(),
            actor: self.actor.clone(),
            applied: self.applied.clone(),
            durable: self.durable.clone(),
            stable: self.stable(),
            origins,
            tombstones_pending: self.tombstones.len() as u64,
            tombstone_bytes: self.tombstone_bytes as u64,
            pending_acks: self.acks.len() as u64,
            pending_ack_bytes: self.ack_bytes as u64,
            tombstones_collected: self.counters.collected,
            siblings_histogram,
            drift_refusals: self.hlc.refused(),
            duplicates: self.counters.duplicates,
            out_of_order: self.counters.out_of_order,
            type_conflicts: self.counters.type_conflicts,
            live_keys,
            apply_lag: self.counters.apply_lag.clone(),
        }
    }

    /// Bytes held by the memory log of recent writes.
    pub fn log_bytes(&self) -> usize {
        self.log.bytes()
    }

    // ---- inputs -------------------------------------------------------

    /// A client request `req_id` arrived at monotonic time `now` and
    /// physical time `wall_ms` (ms since the Unix epoch; the HLC's input).
    /// `acks` overrides the configured ack mode for a write.
    pub fn handle_client(
        &mut self,
        now: Millis,
        wall_ms: u64,
        req_id: RequestId,
        op: ClientOp,
        acks: Option<AckMode>,
    ) {
        self.wall_ms = self.wall_ms.max(wall_ms);
        match op {
            ClientOp::Get {
                key,
                session,
                timeout_ms,
            } => self.get(now, req_id, key, session, timeout_ms),
            ClientOp::Cas { .. } => self.reply(req_id, Reply::Failed(ClientError::CasUnsupported)),
            op => {
                if let Err(e) = self.write(wall_ms, req_id, op, acks) {
                    self.reply(req_id, Reply::Failed(e));
                }
            }
        }
        self.after_input(now);
    }

    /// A message from peer `from` arrived.
    pub fn handle_peer(&mut self, now: Millis, wall_ms: u64, from: NodeId, msg: Message) {
        self.wall_ms = self.wall_ms.max(wall_ms);
        if !self.peers.contains_key(&from) {
            return; // not a member: ignore
        }
        match msg {
            Message::Status { applied, durable } => self.on_status(now, &from, applied, durable),
            Message::Writes(writes) => self.on_writes(wall_ms, &from, writes),
        }
        self.after_input(now);
    }

    /// A (new) connection to `peer` is up: tell it our vectors at once so
    /// that both sides catch up without waiting for the next status round,
    /// and forget what we believed was in flight to it.
    pub fn connected(&mut self, now: Millis, peer: &NodeId) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.sent = p.applied.clone();
            p.inflight.clear();
            p.inflight_bytes = 0;
            p.loading = None;
            p.last_progress = now;
            let msg = self.status_msg();
            self.send(peer.clone(), msg);
        }
        self.after_input(now);
    }

    /// The driver made every [`Persist`] up to `id` durable.
    pub fn persisted(&mut self, now: Millis, id: u64) {
        let mut advanced = false;
        while self.unpersisted.front().is_some_and(|(i, _)| *i <= id) {
            let (_, applied) = self.unpersisted.pop_front().expect("checked");
            self.durable = applied;
            advanced = true;
        }
        if advanced {
            let msg = self.status_msg();
            for peer in self.peer_ids() {
                self.send(peer, msg.clone());
            }
            self.next_status = now.plus(self.config.status_interval_ms);
            for peer in self.peer_ids() {
                self.pump(&peer);
            }
        }
        self.after_input(now);
    }

    /// The writes an [`Output::Load`] asked for, read from storage, for
    /// `peer` (in sequence order; fewer than asked, or none, if storage no
    /// longer holds them).
    pub fn loaded(&mut self, now: Millis, peer: &NodeId, writes: Vec<Write>) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.loading = None;
            let mut batch = Vec::new();
            for write in writes {
                let origin = write.id.node.clone();
                let next = p
                    .sent
                    .get(origin.as_str())
                    .max(p.applied.get(origin.as_str()))
                    + 1;
                if write.id.counter != next
                    || write.id.counter > self.durable.get(origin.as_str())
                    || !Self::room(&self.config, p)
                {
                    continue;
                }
                let size = write.approx_bytes();
                p.sent.raise(origin.clone(), write.id.counter);
                p.inflight.push_back((origin, write.id.counter, size));
                p.inflight_bytes += size;
                batch.push(write);
            }
            if !batch.is_empty() {
                self.send(peer.clone(), Message::Writes(batch));
            }
            self.pump(peer);
        }
        self.after_input(now);
    }

    /// Time passed: send the periodic status, resend what peers did not
    /// acknowledge, time out session reads, collect stable tombstones.
    pub fn tick(&mut self, now: Millis) {
        if now >= self.next_status {
            let msg = self.status_msg();
            for peer in self.peer_ids() {
                self.send(peer, msg.clone());
            }
            self.next_status = now.plus(self.config.status_interval_ms);
        }
        for id in self.peer_ids() {
            let p = self.peers.get_mut(&id).expect("peer");
            if (!p.inflight.is_empty() || p.loading.is_some())
                && now >= p.last_progress.plus(self.config.retransmit_ms)
            {
                p.sent = p.applied.clone();
                p.inflight.clear();
                p.inflight_bytes = 0;
                p.loading = None;
                p.last_progress = now;
                self.pump(&id);
            }
        }
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads)
            .into_iter()
            .partition(|r| now >= r.deadline);
        self.reads = waiting;
        for read in expired {
            let missing = read
                .session
                .iter()
                .filter(|(node, n)| *n > self.applied.get(node.as_str()))
                .map(|(node, n)| (node.clone(), n))
                .collect();
            let error = ClientError::SessionTimeout {
                waited_ms: now.0.saturating_sub(read.since.0),
                missing,
            };
            self.reply(read.req_id, Reply::Failed(error));
        }
        self.after_input(now);
    }

    // ---- writes -------------------------------------------------------

    fn write(
        &mut self,
        wall_ms: u64,
        req_id: RequestId,
        op: ClientOp,
        acks: Option<AckMode>,
    ) -> Result<(), ClientError> {
        if self.ack_bytes >= self.config.max_pending_ack_bytes {
            return Err(ClientError::AcksFull {
                pending_bytes: self.ack_bytes,
                limit_bytes: self.config.max_pending_ack_bytes,
            });
        }
        if matches!(op, ClientOp::Delete { .. })
            && self.tombstone_bytes >= self.config.max_tombstone_bytes
        {
            return Err(ClientError::TombstonesFull {
                pending_bytes: self.tombstone_bytes,
                limit_bytes: self.config.max_tombstone_bytes,
            });
        }
        let me = self.actor.clone();
        let seq = self.applied.get(me.as_str()) + 1;
        let key = op.key().to_vec();
        let existing = self.keys.get(&key);
        let fresh = existing.is_none().then(|| self.applied.clone());
        let (operation, requested) = match &op {
            ClientOp::Put { .. } => ("put", KeyType::Register),
            ClientOp::Delete { .. } => ("delete", KeyType::Register),
            ClientOp::Increment { .. } => ("increment", KeyType::Counter),
            ClientOp::SetAdd { .. } => ("set add", KeyType::Set),
            _ => ("set remove", KeyType::Set),
        };
        if let Some(record) = existing {
            let existing = record.state.key_type();
            if existing != requested {
                return Err(ClientError::TypeMismatch {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    existing,
                    requested,
                    operation: operation.to_owned(),
                });
            }
        }
        // Build the new state on a copy: a refused write changes nothing.
        let mut state = existing.map(|r| r.state.clone());
        let mut key_dot = None;
        let mut context_after = None;
        let ts = self.hlc.tick(wall_ms);
        match op {
            ClientOp::Put { value, context, .. } => {
                self.write_register(
                    &mut state,
                    Some(value),
                    context,
                    seq,
                    &ts,
                    &mut key_dot,
                    &mut context_after,
                )?;
            }
            ClientOp::Delete { context, .. } => {
                self.write_register(
                    &mut state,
                    None,
                    context,
                    seq,
                    &ts,
                    &mut key_dot,
                    &mut context_after,
                )?;
            }
            ClientOp::Increment { delta, .. } => {
                let mut counter = match state {
                    Some(KeyState::Counter(c)) => c,
                    _ => PnCounter::new(),
                };
                counter.increment(me.clone(), delta);
                state = Some(KeyState::Counter(counter));
            }
            ClientOp::SetAdd { element, .. } => {
                let mut set = match state {
                    Some(KeyState::Set(s)) => s,
                    _ => OrSet::new(),
                };
                set.add(me.clone(), element);
                state = Some(KeyState::Set(set));
            }
            ClientOp::SetRemove { element, .. } => {
                let mut set = match state {
                    Some(KeyState::Set(s)) => s,
                    _ => OrSet::new(),
                };
                set.remove(&element);
                state = Some(KeyState::Set(set));
            }
            ClientOp::Get { .. } | ClientOp::Cas { .. } => unreachable!("not a write"),
        }
        // The record reflects everything this node has applied (its
        // causal past), not only the writes to this key: a replica that
        // still holds tombstones this node has collected recognises the
        // record as superseding them.
        let mut writes = self
            .keys
            .get(&key)
            .map(|r| r.writes.clone())
            .unwrap_or_default();
        writes.join(&self.applied);
        let id = Dot::new(me.clone(), seq);
        writes.insert(&id);
        let record = KeyRecord {
            state: state.expect("a write sets the state"),
            writes,
        };
        let bytes = 64 + key.len() + record.state.approx_bytes();
        if bytes > self.config.max_write_bytes {
            return Err(ClientError::WriteTooLarge {
                bytes,
                limit_bytes: self.config.max_write_bytes,
            });
        }
        self.applied.raise(me.clone(), seq);
        self.latest.insert(me.clone(), ts.clone());
        let write = Write {
            id: id.clone(),
            ts: ts.clone(),
            key: key.clone(),
            record: record.clone(),
            fresh,
        };
        self.keys.insert(key.clone(), record.clone());
        self.track_tombstone(&key);
        self.log.push(write.clone());
        self.stage(write, KeyChange::Set { key, record });
        let needed = ack_mode(acks, self.config.acks).required(self.config.nodes.len());
        let bytes =
            96 + VV_ENTRY * (self.applied.len() + context_after.as_ref().map_or(0, |c| c.len()));
        self.ack_bytes += bytes;
        self.acks.push(PendingAck {
            req_id,
            seq,
            needed,
            reply: Reply::Written {
                write: id,
                ts,
                key_dot,
                context: context_after,
                session: self.applied.clone(),
            },
            bytes,
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn write_register(
        &self,
        state: &mut Option<KeyState>,
        value: Option<Vec<u8>>,
        context: Option<VersionVector>,
        seq: u64,
        ts: &Timestamp,
        key_dot: &mut Option<Dot>,
        context_after: &mut Option<VersionVector>,
    ) -> Result<(), ClientError> {
        let me = &self.actor;
        match self.config.policy {
            Policy::Siblings => {
                let mut context = context.unwrap_or_default();
                let dvv = match state.take() {
                    Some(KeyState::Siblings(d)) => d,
                    _ => DvvSet::new(),
                };
                // Key dots must never repeat, and a collected key has lost
                // its history. When the set holds no value of this node,
                // every value it ever coordinated for the key was
                // superseded here or collected everywhere, and each had a
                // key dot at most the origin sequence number it was made
                // with: start above `seq - 1` (superseding nothing that
                // still exists).
                if !dvv.iter().any(|(dot, _)| dot.node == *me) {
                    context.raise(me.clone(), seq - 1);
                }
                let mut dvv = dvv;
                if self.config.sabotage == Some(Sabotage::IgnoreContext) {
                    context.join(&dvv.context());
                }
                let written =
                    dvv.update_with(&self.config.sibling_limits, &context, me.clone(), value)?;
                *key_dot = Some(written.dot);
                *context_after = Some(written.context);
                *state = Some(KeyState::Siblings(dvv));
            }
            Policy::Lww => {
                let lww = match state.take() {
                    Some(KeyState::Lww(mut l)) => {
                        l.set(ts.clone(), value);
                        l
                    }
                    _ => Lww::new(ts.clone(), value),
                };
                *state = Some(KeyState::Lww(lww));
            }
        }
        Ok(())
    }

    fn on_writes(&mut self, wall_ms: u64, from: &NodeId, writes: Vec<Write>) {
        let mut gap = false;
        for write in writes {
            let origin = write.id.node.clone();
            // The sender holds this origin's writes up to this one (it
            // ships them in order): do not send them back (no echo).
            if let Some(p) = self.peers.get_mut(from) {
                p.sent.raise(origin.clone(), write.id.counter);
            }
            let have = self.applied.get(origin.as_str());
            if write.id.counter <= have {
                self.counters.duplicates += 1;
                continue;
            }
            if write.id.counter > have + 1 {
                self.counters.out_of_order += 1;
                gap = true;
                continue;
            }
            // Follow the timestamp if it is not too far ahead; apply the
            // write either way (see the type's docs).
            let _refused = self.hlc.observe(wall_ms, &write.ts);
            self.counters
                .apply_lag
                .entry(origin.clone())
                .or_default()
                .observe(wall_ms.saturating_sub(write.ts.physical_ms));
            let key = write.key.clone();
            // The write's record reflects everything this replica's
            // record does (its origin had applied every write ours
            // reflects): it supersedes ours. Merging would give the same
            // state, except for tombstones the origin has collected since,
            // which merging would keep here alone (see the type's docs).
            let supersedes = self
                .keys
                .get(&key)
                .is_some_and(|mine| write.record.writes.descends(&mine.writes));
            // Our record already reflects the write (a later write that
            // had seen it was merged first): its state is in ours, or
            // was collected since. This is how a wiped node takes back
            // its old incarnation's writes into newer key states, without
            // bringing back the tombstones collected since (a merge would).
            let reflected = self
                .keys
                .get(&key)
                .is_some_and(|mine| mine.writes.contains(&write.id));
            let sabotaged = self.config.sabotage == Some(Sabotage::ReplaceOnApply);
            match self.keys.get_mut(&key) {
                Some(_) if reflected && !sabotaged => {}
                Some(mine) if !supersedes && !sabotaged => {
                    let lww_smallest = self.config.sabotage == Some(Sabotage::LwwKeepsSmallest);
                    if mine.merge(&write.record, lww_smallest) {
                        self.counters.type_conflicts += 1;
                    }
                }
                _ => {
                    self.keys.insert(key.clone(), write.record.clone());
                }
            }
            let record = self.keys[&key].clone();
            self.applied.raise(origin.clone(), write.id.counter);
            self.known.raise(origin.clone(), write.id.counter);
            let newer = self.latest.get(&origin).is_none_or(|ts| *ts < write.ts);
            if newer {
                self.latest.insert(origin, write.ts.clone());
            }
            self.track_tombstone(&key);
            self.log.push(write.clone());
            self.stage(write, KeyChange::Set { key, record });
        }
        if gap {
            let msg = self.status_msg();
            self.send(from.clone(), msg);
        }
    }

    fn on_status(
        &mut self,
        now: Millis,
        from: &NodeId,
        applied: VersionVector,
        durable: VersionVector,
    ) {
        self.known.join(&applied);
        let p = self.peers.get_mut(from).expect("member");
        if !p.applied.descends(&applied) || applied == p.sent {
            p.last_progress = now;
        }
        p.applied = applied;
        p.durable = durable;
        let applied = &p.applied;
        while let Some((origin, seq, size)) = p.inflight.front() {
            if applied.get(origin.as_str()) >= *seq {
                p.inflight_bytes -= size;
                p.inflight.pop_front();
            } else {
                break;
            }
        }
        // Entries covered out of order (a different origin first).
        let before = p.inflight.len();
        let mut freed = 0;
        p.inflight.retain(|(origin, seq, size)| {
            let keep = applied.get(origin.as_str()) < *seq;
            if !keep {
                freed += size;
            }
            keep
        });
        p.inflight_bytes -= freed;
        if p.inflight.is_empty() && !p.applied.descends(&p.sent) {
            // Nothing in flight, yet the peer lacks writes we believed it
            // had (it sent them to us, or acknowledged them, and has lost
            // its disk since; or the status is stale): send them again.
            p.sent = p.applied.clone();
        }
        if p.inflight.len() != before {
            p.last_progress = now;
        }
        self.pump(from);
    }

    /// Sends `peer` the durable writes it lacks, within the in-flight limits.
    fn pump(&mut self, peer: &NodeId) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if p.loading.is_some() {
            return;
        }
        let mut batch = Vec::new();
        let mut load = None;
        // No echo by name: the peer's vectors, and what it sent us, say
        // what it holds. A peer's id is not an origin: a node that lost
        // its disk writes as a new incarnation and must get the writes of
        // its old one back.
        'origins: for (origin, have) in self.durable.iter() {
            let mut next = p
                .sent
                .get(origin.as_str())
                .max(p.applied.get(origin.as_str()))
                + 1;
            while next <= have {
                if batch.len() >= self.config.max_batch_entries || !Self::room(&self.config, p) {
                    break 'origins;
                }
                let Some(write) = self.log.get(origin, next) else {
                    let to_seq = have.min(next + self.config.max_batch_entries as u64 - 1);
                    load = Some((origin.clone(), next, to_seq));
                    break 'origins;
                };
                let size = write.approx_bytes();
                batch.push(write.clone());
                p.sent.raise(origin.clone(), next);
                p.inflight.push_back((origin.clone(), next, size));
                p.inflight_bytes += size;
                next += 1;
            }
        }
        if let Some((origin, from_seq, to_seq)) = load {
            p.loading = Some((origin.clone(), from_seq));
            self.outputs.push_back(Output::Load {
                peer: peer.clone(),
                origin,
                from_seq,
                to_seq,
            });
        }
        if !batch.is_empty() {
            self.send(peer.clone(), Message::Writes(batch));
        }
    }

    fn room(config: &Config, p: &Peer) -> bool {
        p.inflight.len() < config.max_inflight_entries
            && (p.inflight.is_empty() || p.inflight_bytes < config.max_inflight_bytes)
    }

    // ---- reads --------------------------------------------------------

    fn get(
        &mut self,
        now: Millis,
        req_id: RequestId,
        key: Vec<u8>,
        session: Option<VersionVector>,
        timeout_ms: Option<u64>,
    ) {
        match session {
            Some(session) if !self.applied.descends(&session) => {
                if self.reads.len() >= self.config.max_waiting_reads {
                    let limit = self.config.max_waiting_reads;
                    self.reply(req_id, Reply::Failed(ClientError::Busy { limit }));
                    return;
                }
                let timeout = timeout_ms.unwrap_or(self.config.read_timeout_ms);
                self.reads.push(WaitingRead {
                    req_id,
                    key,
                    session,
                    since: now,
                    deadline: now.plus(timeout),
                });
            }
            _ => {
                let reply = self.read_reply(&key);
                self.reply(req_id, reply);
            }
        }
    }

    fn read_reply(&self, key: &[u8]) -> Reply {
        let value = self
            .keys
            .get(key)
            .map_or(ReadValue::Absent, |r| r.state.read_value());
        Reply::Value {
            value,
            session: self.applied.clone(),
        }
    }

    // ---- bookkeeping --------------------------------------------------

    /// After every input: answer what can be answered, collect what can
    /// be collected, and emit the staged `Persist`.
    fn after_input(&mut self, _now: Millis) {
        self.answer_acks();
        self.answer_reads();
        self.collect();
        self.flush();
    }

    fn answer_acks(&mut self) {
        // Peers are nodes: each counts once, whatever incarnations their
        // vectors hold.
        let me = self.actor.clone();
        let mine = self.durable.get(me.as_str());
        let peers: Vec<u64> = self
            .peers
            .values()
            .map(|p| p.durable.get(me.as_str()))
            .collect();
        let (done, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.acks).into_iter().partition(|a| {
                let holders =
                    usize::from(mine >= a.seq) + peers.iter().filter(|&&d| d >= a.seq).count();
                // The origin ships only durable writes: it is always among the holders.
                mine >= a.seq && holders >= a.needed
            });
        self.acks = waiting;
        for ack in done {
            self.ack_bytes -= ack.bytes;
            self.reply(ack.req_id, ack.reply);
        }
    }

    fn answer_reads(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads)
            .into_iter()
            .partition(|r| self.applied.descends(&r.session));
        self.reads = waiting;
        for read in ready {
            let reply = self.read_reply(&read.key);
            self.reply(read.req_id, reply);
        }
    }

    /// Starts, restarts or stops tracking `key` as a pending tombstone.
    fn track_tombstone(&mut self, key: &[u8]) {
        match self.keys.get(key) {
            Some(record) if record.state.only_tombstones() => {
                let same = self
                    .tombstones
                    .get(key)
                    .is_some_and(|t| t.writes == record.writes);
                if !same {
                    let mut pending = PendingTombstone {
                        writes: record.writes.clone(),
                        reports: BTreeMap::new(),
                        bytes: 0,
                    };
                    pending.bytes = pending.size(key, record);
                    self.tombstone_bytes += pending.bytes;
                    if let Some(old) = self.tombstones.insert(key.to_vec(), pending) {
                        self.tombstone_bytes -= old.bytes;
                    }
                }
            }
            _ => {
                if let Some(old) = self.tombstones.remove(key) {
                    self.tombstone_bytes -= old.bytes;
                }
            }
        }
    }

    /// Every node's durable vector as known here, this node's first.
    fn durables(&self) -> impl Iterator<Item = (&NodeId, &VersionVector)> + '_ {
        std::iter::once((&self.config.id, &self.durable))
            .chain(self.peers.iter().map(|(id, p)| (id, &p.durable)))
    }

    /// The meet of every node's durable vector.
    fn stable(&self) -> VersionVector {
        let mut durables = self.durables().map(|(_, d)| d);
        let first = durables.next().expect("this node").clone();
        durables.fold(first, |meet, d| meet.meet(d))
    }

    fn collect(&mut self) {
        if self.tombstones.is_empty() {
            return;
        }
        let early = self.config.sabotage == Some(Sabotage::CollectEarly);
        let stable = self.stable();
        let durables: Vec<(NodeId, VersionVector)> = self
            .durables()
            .map(|(n, d)| (n.clone(), d.clone()))
            .collect();
        let mut ready = Vec::new();
        for (key, t) in &mut self.tombstones {
            let mut reported = false;
            for (node, durable) in &durables {
                if !t.reports.contains_key(node) && durable.descends(&t.writes) {
                    t.reports.insert(node.clone(), durable.clone());
                    reported = true;
                }
            }
            if reported {
                let record = &self.keys[key];
                self.tombstone_bytes -= t.bytes;
                t.bytes = t.size(key, record);
                self.tombstone_bytes += t.bytes;
            }
            let horizon_reached = t.reports.len() == durables.len()
                && t.reports.values().all(|report| stable.descends(report));
            if early || horizon_reached {
                ready.push(key.clone());
            }
        }
        for key in ready {
            let t = self.tombstones.remove(&key).expect("pending");
            self.tombstone_bytes -= t.bytes;
            self.keys.remove(&key);
            self.counters.collected += 1;
            self.stage_change(KeyChange::Collected {
                key,
                writes: t.writes,
            });
        }
    }

    fn stage(&mut self, write: Write, change: KeyChange) {
        let staged = self.staged.get_or_insert_with(Default::default);
        staged.0.push(write);
        staged.1.push(change);
    }

    fn stage_change(&mut self, change: KeyChange) {
        self.staged
            .get_or_insert_with(Default::default)
            .1
            .push(change);
    }

    fn flush(&mut self) {
        if let Some((writes, keys)) = self.staged.take() {
            let id = self.next_persist;
            self.next_persist += 1;
            self.unpersisted.push_back((id, self.applied.clone()));
            self.outputs.push_back(Output::Persist(Persist {
                id,
                writes,
                keys,
                applied: self.applied.clone(),
                clock: self.hlc.last(),
                actor: self.actor.clone(),
            }));
        }
    }

    fn status_msg(&self) -> Message {
        Message::Status {
            applied: self.applied.clone(),
            durable: self.durable.clone(),
        }
    }

    fn peer_ids(&self) -> Vec<NodeId> {
        self.peers.keys().cloned().collect()
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        self.outputs.push_back(Output::Send { to, msg });
    }

    fn reply(&mut self, req_id: RequestId, reply: Reply) {
        self.outputs.push_back(Output::Reply { req_id, reply });
    }
}
