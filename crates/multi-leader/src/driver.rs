//! The tokio driver: runs a [`Core`] against the storage engine, the peer
//! bus and the clocks.
//!
//! One task owns the core and feeds it, in a loop: client requests from
//! [`Handle`]s, peer messages from the [`PeerBus`], ticks when
//! [`Core::next_timeout`] comes, durability notices from the writer
//! thread, and writes read back from storage for catch-up. After every
//! input it drains the core's outputs:
//!
//! - [`Output::Send`]: postcard-encode the [`Message`] and queue it on the
//!   bus (best effort: the core resends what is not acknowledged). A
//!   batch of writes larger than the bus's largest payload is split; a
//!   single write larger than it cannot be shipped, and is logged as an
//!   error (the node's value size limit must stay below it).
//! - [`Output::Persist`]: hand it to the **writer thread**, which appends
//!   every persist that has queued up, waits once for durability (so
//!   concurrent writes share an fsync under `fsync = batch`), and reports
//!   the last durable persist with [`Core::persisted`].
//! - [`Output::Load`]: read the writes from the store on a blocking task
//!   and hand them to [`Core::loaded`].
//! - [`Output::Reply`]: answer the waiting [`Handle::request`].
//!
//! A storage failure stops the driver (the node must not go on
//! acknowledging writes it may not have stored): [`Driver::run`] returns
//! the error.
//!
//! # On disk: one store, atomic persists
//!
//! Everything lives in one [`Store`] (opened with [`store_options`]: no
//! automatic compaction). A [`Persist`] becomes one `append` of records:
//!
//! | key | value | what |
//! |---|---|---|
//! | `w` ([`WRITE_KEY`]) | a [`Write`] | the origin-sequence log, read back for catch-up |
//! | `k/<key>` ([`KEY_PREFIX`]) | a [`KeyRecord`] (or a delete: collected) | the key's state |
//! | `m` ([`META_KEY`]) | a [`Meta`] (applied vector, clock, actor) | **last**: commits the persist |
//!
//! Every value is [`FORMAT_VERSION`] (u16, little-endian) then postcard.
//! Version 2 added the actor to `m`; a version-1 store (whose `m` has
//! none) opens, and its node keeps writing as its plain id. A write's
//! record metadata names its origin by number (its node's place in the
//! sorted node list, from 1) when the origin is a plain node id, and 0
//! for an incarnation (`n1.<epoch>`), whose name is read from the write.
//!
//! **Atomicity.** A crash can cut an append anywhere (the store keeps a
//! prefix of it: torn frames at the tail are dropped on open), so each
//! persist ends with its commit record, `m`, which holds the applied
//! vector the persist's data leads to (a [`CommitBatch`] sealed by `m`,
//! appended with [`Store::append_committed`]). [`recover`] drops every
//! record after the last `m` ([`Store::recover_committed`], which brings
//! back the older state of the keys they changed): the node restarts with the data
//! and the vector of the last whole persist, never one without the other.
//! The vector is not a separate file (`Backend::write_file_durably`):
//! that would be a second fsync per persist and could not be atomic with
//! the log.
//!
//! **Catch-up reads.** The store's index keeps the latest record per key,
//! so the writes (all under `w`) are found by log index: the driver keeps,
//! per origin, the log index of each write not yet held by every node
//! ([`Status::stable`](crate::Status::stable)); older ones are forgotten
//! and the log segments below the oldest kept write are discarded
//! ([`Store::discard_before`], which keeps the key states). A peer that
//! asks for a write older than that gets none, and catches up through
//! the other writes' key states (each carries its key's whole state). On
//! restart the index is rebuilt from the log, which holds at most the
//! writes after the last discard. Each entry is a few words; under a long
//! partition they grow with the writes the absent node misses, as the log
//! on disk does.
//!
//! **Bounds.** Requests wait in a channel bounded in bytes
//! ([`DriverConfig::request_bytes`]: a [`Handle`] waits for room); persists
//! queued for the writer are bounded in bytes
//! ([`DriverConfig::persist_bytes`]: beyond it the loop stops taking
//! requests and peer messages until the disk catches up); peer messages
//! wait in the bus's bounded inbound channel.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mimeo_causality::{NodeId, Timestamp, VersionVector};
use mimeo_storage::{CommitBatch, Mutation, Options, Record, SealedBatch, Store};
use mimeo_wire::{PeerBus, PeerMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::record::{DurableState, KeyChange, Persist, Write, FORMAT_VERSION};
use crate::state::KeyRecord;
use crate::{AckMode, ClientOp, Config, Core, Message, Millis, Output, Reply, Status};

/// The store key of every write record (the origin-sequence log).
pub const WRITE_KEY: &[u8] = b"w";
/// The prefix of a key's state record: `k/` then the key.
pub const KEY_PREFIX: &[u8] = b"k/";
/// The store key of the commit record that ends every persist.
pub const META_KEY: &[u8] = b"m";

/// What the commit record of a persist holds (format version 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The applied vector once the persist is applied.
    pub applied: VersionVector,
    /// The largest HLC timestamp issued.
    pub clock: Timestamp,
    /// The actor (incarnation) the node writes as
    /// ([`Core::actor`](crate::Core::actor)).
    pub actor: NodeId,
}

/// The commit record of format version 1 (before incarnations): its node
/// wrote as its plain id, and keeps doing so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct MetaV1 {
    applied: VersionVector,
    clock: Timestamp,
}

/// Why the driver could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The storage engine failed; the node must stop.
    #[error("storage failed while {doing}: {source}")]
    Storage {
        /// What the driver was doing.
        doing: &'static str,
        /// The storage error.
        source: mimeo_storage::Error,
    },
    /// A record in the store cannot be decoded.
    #[error("the {what} record at log index {index} cannot be read ({message}): it was written by a newer build of Mimeo (run that build) or damaged on disk")]
    Unreadable {
        /// What it holds.
        what: &'static str,
        /// Its log index (0: from the store's snapshot).
        index: u64,
        /// What is wrong.
        message: String,
    },
    /// The store compacts on its own, which would fold the writes peers
    /// may still need.
    #[error("the store compacts on its own (compact_min_bytes = {compact_min_bytes}), which would drop writes peers may still need: open it with driver::store_options")]
    AutoCompaction {
        /// The store's `compact_min_bytes`.
        compact_min_bytes: u64,
    },
    /// The replication settings are invalid.
    #[error("invalid multi-leader settings: {0}")]
    Config(#[from] crate::ConfigError),
    /// The writer thread is gone (after a storage failure it reported).
    #[error("the multi-leader writer thread stopped after a storage failure")]
    WriterGone,
}

/// `options` made fit for a multi-leader store: no automatic compaction
/// (which would fold the writes peers may still need); the driver
/// discards log segments itself once every node holds their writes.
pub fn store_options(options: Options) -> Options {
    Options {
        compact_min_bytes: u64::MAX,
        ..options
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let bytes = FORMAT_VERSION.to_le_bytes().to_vec();
    postcard::to_extend(value, bytes).expect("records serialize")
}

fn decode<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    index: u64,
    bytes: &[u8],
) -> Result<T, DriverError> {
    let unreadable = |message: String| DriverError::Unreadable {
        what,
        index,
        message,
    };
    let Some((version, payload)) = bytes.split_first_chunk::<2>() else {
        return Err(unreadable("shorter than its format version".into()));
    };
    let version = u16::from_le_bytes(*version);
    // Version 2 changed only the commit record (`decode_meta`): the other
    // records read the same in both.
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(unreadable(format!(
            "format version {version}; this build reads versions 1 to {FORMAT_VERSION}"
        )));
    }
    postcard::from_bytes(payload).map_err(|e| unreadable(e.to_string()))
}

/// Decodes a commit record of either version into the applied vector,
/// the clock and the actor (`None` for version 1: the node writes as its
/// plain id).
fn decode_meta(
    index: u64,
    bytes: &[u8],
) -> Result<(VersionVector, Timestamp, Option<NodeId>), DriverError> {
    if bytes.starts_with(&1u16.to_le_bytes()) {
        let v1: MetaV1 = decode("commit", index, bytes)?;
        return Ok((v1.applied, v1.clock, None));
    }
    let meta: Meta = decode("commit", index, bytes)?;
    Ok((meta.applied, meta.clock, Some(meta.actor)))
}

/// The store key of `key`'s state.
fn state_key(key: &[u8]) -> Vec<u8> {
    let mut k = KEY_PREFIX.to_vec();
    k.extend_from_slice(key);
    k
}

/// The records of one persist, from log index `first`, sealed by the
/// commit record; the writes first, in order.
fn persist_records(persist: &Persist, origins: &[NodeId], first: u64) -> SealedBatch {
    let mut batch = CommitBatch::new(META_KEY, first)
        .with_capacity(persist.writes.len() + persist.keys.len() + 1);
    for write in &persist.writes {
        let origin = origin_number(origins, &write.id.node);
        let value = encode(write);
        batch.push(
            origin,
            write.id.counter,
            Mutation::Put {
                key: WRITE_KEY.to_vec(),
                value,
            },
        );
    }
    for change in &persist.keys {
        let mutation = match change {
            KeyChange::Set { key, record } => Mutation::Put {
                key: state_key(key),
                value: encode(record),
            },
            KeyChange::Collected { key, .. } => Mutation::Delete {
                key: state_key(key),
            },
        };
        batch.push(0, 0, mutation);
    }
    let meta = Meta {
        applied: persist.applied.clone(),
        clock: persist.clock.clone(),
        actor: persist.actor.clone(),
    };
    batch.seal(encode(&meta))
}

/// An origin's number in records: its place in the sorted node list, from
/// 1, for a node's plain id (the only origins of a version-1 store); 0 for
/// any other origin (an incarnation, `n1.<epoch>`), whose name recovery
/// reads from the write itself.
fn origin_number(origins: &[NodeId], origin: &NodeId) -> u64 {
    origins
        .iter()
        .position(|o| o == origin)
        .map_or(0, |i| i as u64 + 1)
}

/// Per origin, the log index of each write still kept (sequence order).
#[derive(Debug, Default)]
struct WriteIndex {
    by_origin: BTreeMap<NodeId, VecDeque<(u64, u64)>>,
}

impl WriteIndex {
    fn insert(&mut self, origin: NodeId, seq: u64, index: u64) {
        let run = self.by_origin.entry(origin).or_default();
        if run.back().is_some_and(|(s, _)| *s >= seq) {
            return; // a write already known (cannot happen: stay correct)
        }
        run.push_back((seq, index));
    }

    /// Log indexes of `origin`'s writes `from..=to` still kept, in order.
    fn find(&self, origin: &NodeId, from: u64, to: u64) -> Vec<u64> {
        let Some(run) = self.by_origin.get(origin) else {
            return Vec::new();
        };
        let start = run.partition_point(|(s, _)| *s < from);
        run.range(start..)
            .take_while(|(s, _)| *s <= to)
            .map(|(_, i)| *i)
            .collect()
    }

    /// Forgets writes every node holds; returns the lowest log index
    /// still needed (`None`: none is).
    fn forget_stable(&mut self, stable: &VersionVector) -> Option<u64> {
        for (origin, run) in &mut self.by_origin {
            let held = stable.get(origin.as_str());
            while run.front().is_some_and(|(s, _)| *s <= held) {
                run.pop_front();
            }
        }
        self.by_origin
            .values()
            .filter_map(|run| run.front().map(|(_, i)| *i))
            .min()
    }

    fn len(&self) -> usize {
        self.by_origin.values().map(VecDeque::len).sum()
    }
}

/// What [`recover`] found.
pub struct Recovered {
    /// The core, restored.
    pub core: Core,
    write_index: WriteIndex,
}

impl std::fmt::Debug for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovered")
            .field("id", self.core.id())
            .field("applied", self.core.applied())
            .field("kept_writes", &self.write_index.len())
            .finish()
    }
}

/// Rebuilds a core from `store`: drops a persist a crash cut short (the
/// records after the last commit record), then reads every key's state,
/// the applied vector, the clock and the actor, and indexes the writes the
/// log still holds. A store without a commit record (new, or wiped) starts
/// a new incarnation, `<id>.<epoch>` with the wall clock in microseconds
/// as the epoch (at least `config.fresh_epoch`); a store of format
/// version 1 keeps writing as the plain id. `now` is the monotonic time the core's [`Millis`] count from.
///
/// Fails with [`DriverError::AutoCompaction`] unless `store` was opened
/// with [`store_options`].
pub fn recover(config: Config, store: &Store, now: Millis) -> Result<Recovered, DriverError> {
    let compact_min_bytes = store.options().compact_min_bytes;
    if compact_min_bytes != u64::MAX {
        return Err(DriverError::AutoCompaction { compact_min_bytes });
    }
    let storage = |doing| move |source| DriverError::Storage { doing, source };
    let mut origins = config.nodes.clone();
    origins.sort();
    // One pass over the log: drops a torn persist, and finds the writes
    // of the whole ones (origin number, sequence, log index).
    let mut writes: Vec<(NodeId, u64, u64)> = Vec::new();
    let mut failed = None;
    let found = store
        .recover_committed(META_KEY, |record| {
            let Mutation::Put { key, value } = &record.mutation else {
                return;
            };
            if key != WRITE_KEY || failed.is_some() {
                return;
            }
            let meta = &record.meta;
            let index = meta.position.index;
            let number = meta.origin;
            let origin = match number {
                // Not a plain node id: the write names its origin.
                0 => match decode::<Write>("write", index, value) {
                    Ok(write) => write.id.node,
                    Err(e) => {
                        failed = Some(e);
                        return;
                    }
                },
                _ => {
                    let origin = usize::try_from(number)
                        .ok()
                        .and_then(|o| o.checked_sub(1))
                        .and_then(|o| origins.get(o));
                    let Some(origin) = origin else {
                        failed = Some(DriverError::Unreadable {
                            what: "write",
                            index,
                            message: format!("origin number {number} names no node of {origins:?}"),
                        });
                        return;
                    };
                    origin.clone()
                }
            };
            writes.push((origin, meta.seq, index));
        })
        .map_err(storage("dropping an incomplete persist at start-up"))?;
    if let Some(e) = failed {
        return Err(e);
    }
    let mut write_index = WriteIndex::default();
    for (origin, seq, index) in writes {
        write_index.insert(origin, seq, index);
    }
    let mut durable = DurableState::default();
    if let Some(entry) = found.commit {
        let bytes = entry.value.unwrap_or_default();
        let (applied, clock, actor) = decode_meta(entry.meta.position.index, &bytes)?;
        durable.applied = applied;
        durable.clock = Some(clock);
        durable.actor = actor;
    }
    // A store without a commit record (new, or wiped) starts a new
    // incarnation: never one its lost state may have used.
    let mut config = config;
    config.fresh_epoch = config.fresh_epoch.max(wall_micros());
    let mut end = KEY_PREFIX.to_vec();
    *end.last_mut().expect("a prefix") += 1;
    for (key, entry) in store
        .scan(KEY_PREFIX.to_vec()..end)
        .map_err(storage("reading the key states"))?
    {
        if let Some(bytes) = entry.value {
            let record: KeyRecord = decode("key state", entry.meta.position.index, &bytes)?;
            durable
                .keys
                .insert(key[KEY_PREFIX.len()..].to_vec(), record);
        }
    }
    let core = Core::restore(config, durable, now)?;
    Ok(Recovered { core, write_index })
}

/// How the driver bounds what waits.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverConfig {
    /// Bytes of client requests waiting for the event loop; a
    /// [`Handle::request`] waits for room.
    pub request_bytes: usize,
    /// Bytes of persists queued for the writer thread; beyond it the event
    /// loop takes no new request or peer message until the disk catches up.
    pub persist_bytes: usize,
    /// How often the driver forgets writes every node holds and discards
    /// the log segments below them.
    pub discard_every: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            request_bytes: 64 << 20,
            persist_bytes: 64 << 20,
            discard_every: Duration::from_secs(5),
        }
    }
}

enum Request {
    Client {
        op: ClientOp,
        acks: Option<AckMode>,
        reply: oneshot::Sender<Reply>,
        _permit: OwnedSemaphorePermit,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
}

/// A cheap, cloneable way to talk to a running [`Driver`].
#[derive(Clone, Debug)]
pub struct Handle {
    requests: mpsc::Sender<Request>,
    room: Arc<Semaphore>,
    room_bytes: usize,
}

/// The driver stopped (a storage failure, or shutdown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the multi-leader driver has stopped")]
pub struct Stopped;

/// A request's size against [`DriverConfig::request_bytes`].
fn op_bytes(op: &ClientOp) -> usize {
    let payload = match op {
        ClientOp::Put { value, context, .. } => {
            value.len() + context.as_ref().map_or(0, |c| 24 * c.len())
        }
        ClientOp::Cas {
            expected, value, ..
        } => value.len() + expected.as_ref().map_or(0, Vec::len),
        ClientOp::SetAdd { element, .. } | ClientOp::SetRemove { element, .. } => element.len(),
        ClientOp::Get { session, .. } => session.as_ref().map_or(0, |s| 24 * s.len()),
        _ => 0,
    };
    64 + op.key().len() + payload
}

impl Handle {
    /// Submits a client operation and waits for the core's reply. Writes
    /// are answered once `acks` nodes hold them durably (the core bounds
    /// nothing here: a caller that must not wait for ever, e.g. for
    /// `all` while a peer is down, puts its own timeout around this call;
    /// the outcome of a write is then unknown).
    pub async fn request(&self, op: ClientOp, acks: Option<AckMode>) -> Result<Reply, Stopped> {
        let bytes = op_bytes(&op).min(self.room_bytes);
        let permit = Arc::clone(&self.room)
            .acquire_many_owned(u32::try_from(bytes).unwrap_or(u32::MAX))
            .await
            .map_err(|_| Stopped)?;
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Client {
                op,
                acks,
                reply,
                _permit: permit,
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// The core's status.
    pub async fn status(&self) -> Result<Status, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Status { reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

/// A job for the writer thread.
enum Job {
    Persist { persist: Persist, bytes: usize },
    Discard(u64),
}

/// What the writer thread did.
enum Written {
    /// Every persist up to `id` is durable; its writes went to these log
    /// indexes.
    Durable {
        id: u64,
        writes: Vec<(NodeId, u64, u64)>,
    },
    Failed(DriverError),
}

/// One input for the core, as the event loop received it.
enum Event {
    Request(Option<Request>),
    Peer(Option<PeerMessage>),
    Written(Option<Written>),
    Loaded(NodeId, Result<Vec<Write>, DriverError>),
    Tick,
    Discard,
}

/// The driver of one node's core.
pub struct Driver {
    core: Core,
    bus: Arc<PeerBus>,
    inbound: mpsc::Receiver<PeerMessage>,
    requests: mpsc::Receiver<Request>,
    store: Arc<Store>,
    origin: Instant,
    write_index: WriteIndex,
    config: DriverConfig,
    origins: Vec<NodeId>,
    wall_clock: WallClock,
}

/// Reads the physical time the HLC follows, in ms since the Unix epoch.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("id", self.core.id())
            .finish_non_exhaustive()
    }
}

/// Wall-clock microseconds since the Unix epoch: a new incarnation's epoch.
fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Wall-clock milliseconds since the Unix epoch: the HLC's physical time.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Driver {
    /// A driver for `recovered` (built by [`recover`] with `Millis(0)` at
    /// `origin`, the instant its [`Millis`] count from), persisting to
    /// `store`, talking to peers over `bus` (whose inbound messages arrive
    /// on `inbound`; peer names are the core's node ids). Run it with
    /// [`Driver::run`]; talk to it through the returned [`Handle`].
    pub fn new(
        recovered: Recovered,
        bus: Arc<PeerBus>,
        inbound: mpsc::Receiver<PeerMessage>,
        store: Arc<Store>,
        origin: Instant,
        config: DriverConfig,
    ) -> (Driver, Handle) {
        // The byte budget bounds the channel; the count only keeps status
        // requests (no permit) from piling up.
        let (tx, requests) = mpsc::channel(4096);
        let room_bytes = config.request_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let handle = Handle {
            requests: tx,
            room: Arc::new(Semaphore::new(room_bytes)),
            room_bytes: room_bytes.min(u32::MAX as usize),
        };
        let mut origins = recovered.core.config().nodes.clone();
        origins.sort();
        let driver = Driver {
            core: recovered.core,
            bus,
            inbound,
            requests,
            store,
            origin,
            write_index: recovered.write_index,
            config,
            origins,
            wall_clock: Arc::new(wall_ms),
        };
        (driver, handle)
    }

    /// Reads physical time from `clock` instead of the system clock (a
    /// node whose clock can be shifted for tests: the HLC follows it).
    pub fn with_wall_clock(mut self, clock: WallClock) -> Driver {
        self.wall_clock = clock;
        self
    }

    fn now(&self) -> Millis {
        Millis(self.origin.elapsed().as_millis() as u64)
    }

    /// Runs until every [`Handle`] is dropped (`Ok`) or storage fails
    /// (`Err`: the node must stop).
    pub async fn run(mut self) -> Result<(), DriverError> {
        let (jobs, job_rx) = std::sync::mpsc::channel::<Job>();
        let (written_tx, mut written) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = {
            let store = Arc::clone(&self.store);
            let origins = self.origins.clone();
            let queued = Arc::clone(&queued);
            std::thread::Builder::new()
                .name("ml-writer".into())
                .spawn(move || writer(&store, &origins, &job_rx, &written_tx, &queued))
                .expect("spawning the writer thread")
        };
        let (loaded_tx, mut loaded) = mpsc::unbounded_channel();
        let mut pending: HashMap<u64, oneshot::Sender<Reply>> = HashMap::new();
        let mut next_request = 0u64;
        let mut peers_open = true;
        let mut discard = tokio::time::interval(self.config.discard_every);
        discard.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            if let Err(e) = self.drain(&jobs, &queued, &mut pending, &loaded_tx) {
                break Err(e);
            }
            // Backpressure: while the writer is behind by more than the
            // budget, only its notices (and timers) are taken.
            let open = queued.load(Ordering::Relaxed) < self.config.persist_bytes;
            let deadline = self.origin + Duration::from_millis(self.core.next_timeout().0);
            let event = tokio::select! {
                request = self.requests.recv(), if open => Event::Request(request),
                message = self.inbound.recv(), if open && peers_open => Event::Peer(message),
                notice = written.recv() => Event::Written(notice),
                Some((peer, writes)) = loaded.recv() => Event::Loaded(peer, writes),
                () = tokio::time::sleep_until(deadline.into()) => Event::Tick,
                _ = discard.tick() => Event::Discard,
            };
            if matches!(event, Event::Peer(None)) {
                tracing::error!(
                    "the peer message channel closed: this node hears no peer any more"
                );
                peers_open = false;
            }
            if let Some(stop) = self.handle(event, &jobs, &mut pending, &mut next_request) {
                break stop;
            }
        };
        drop(jobs);
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        result
    }

    /// Hands one event to the core; `Some` when the driver must stop.
    fn handle(
        &mut self,
        event: Event,
        jobs: &std::sync::mpsc::Sender<Job>,
        pending: &mut HashMap<u64, oneshot::Sender<Reply>>,
        next_request: &mut u64,
    ) -> Option<Result<(), DriverError>> {
        let now = self.now();
        match event {
            Event::Request(Some(Request::Client {
                op, acks, reply, ..
            })) => {
                *next_request += 1;
                pending.insert(*next_request, reply);
                self.core
                    .handle_client(now, (self.wall_clock)(), *next_request, op, acks);
            }
            Event::Request(Some(Request::Status { reply })) => {
                let _ = reply.send(self.core.status((self.wall_clock)()));
            }
            Event::Request(None) | Event::Written(None) => return Some(Ok(())),
            Event::Peer(Some(message)) => self.deliver(message),
            Event::Peer(None) => {}
            Event::Written(Some(Written::Durable { id, writes })) => {
                for (origin, seq, index) in writes {
                    self.write_index.insert(origin, seq, index);
                }
                self.core.persisted(now, id);
            }
            Event::Written(Some(Written::Failed(e))) => return Some(Err(e)),
            Event::Loaded(peer, Ok(writes)) => self.core.loaded(now, &peer, writes),
            Event::Loaded(_, Err(e)) => return Some(Err(e)),
            Event::Tick => self.core.tick(now),
            Event::Discard => {
                let stable = self.core.status((self.wall_clock)()).stable;
                let keep_from = self
                    .write_index
                    .forget_stable(&stable)
                    .unwrap_or_else(|| self.store.last_position().index + 1);
                if jobs.send(Job::Discard(keep_from)).is_err() {
                    return Some(Err(DriverError::WriterGone));
                }
            }
        }
        None
    }

    /// A peer message: decoded and handed to the core, or dropped with a
    /// warning when it cannot be read (the bus authenticated the sender; a
    /// bad payload is a bug or a version skew, never worth a crash).
    fn deliver(&mut self, message: PeerMessage) {
        match decode::<Message>("peer message", 0, &message.payload) {
            Ok(msg) => {
                let now = self.now();
                self.core
                    .handle_peer(now, (self.wall_clock)(), NodeId::from(message.from), msg);
            }
            Err(e) => {
                tracing::warn!(from = %message.from, error = %e, "unreadable peer message dropped");
            }
        }
    }

    /// Performs every pending output of the core.
    fn drain(
        &mut self,
        jobs: &std::sync::mpsc::Sender<Job>,
        queued: &AtomicUsize,
        pending: &mut HashMap<u64, oneshot::Sender<Reply>>,
        loaded: &mpsc::UnboundedSender<(NodeId, Result<Vec<Write>, DriverError>)>,
    ) -> Result<(), DriverError> {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send { to, msg } => self.send(&to, msg),
                Output::Persist(persist) => {
                    let bytes = persist_bytes(&persist);
                    queued.fetch_add(bytes, Ordering::Relaxed);
                    if jobs.send(Job::Persist { persist, bytes }).is_err() {
                        return Err(DriverError::WriterGone);
                    }
                }
                Output::Load {
                    peer,
                    origin,
                    from_seq,
                    to_seq,
                } => {
                    let indexes = self.write_index.find(&origin, from_seq, to_seq);
                    let store = Arc::clone(&self.store);
                    let loaded = loaded.clone();
                    let retry = Duration::from_millis(self.core.config().retransmit_ms);
                    tokio::spawn(async move {
                        let writes = tokio::task::spawn_blocking(move || {
                            load(&store, &origin, from_seq, &indexes)
                        })
                        .await
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
                        if writes.as_ref().is_ok_and(Vec::is_empty) {
                            // Storage no longer holds them (every node did
                            // when they were discarded): the core would ask
                            // again at once; let the retry interval pass.
                            tokio::time::sleep(retry).await;
                        }
                        let _ = loaded.send((peer, writes));
                    });
                }
                Output::Reply { req_id, reply } => {
                    if let Some(tx) = pending.remove(&req_id) {
                        let _ = tx.send(reply);
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends `msg` to `to`, splitting a batch of writes that is larger than
    /// the bus takes.
    fn send(&self, to: &NodeId, msg: Message) {
        let payload = encode(&msg);
        if payload.len() <= self.bus.max_payload() {
            if let Err(e) = self.bus.send(to.as_str(), payload) {
                tracing::debug!(to = %to, error = %e, "peer message refused");
            }
            return;
        }
        match msg {
            Message::Writes(writes) if writes.len() > 1 => {
                let mut writes = writes;
                let second = writes.split_off(writes.len() / 2);
                self.send(to, Message::Writes(writes));
                self.send(to, Message::Writes(second));
            }
            _ => tracing::error!(
                to = %to,
                bytes = payload.len(),
                max = self.bus.max_payload(),
                "a peer message larger than the transport's frame cannot be sent; lower the value size limit"
            ),
        }
    }
}

/// Reads `origin`'s writes at the log `indexes` (found for `from_seq`
/// on), keeping the contiguous run from `from_seq`.
fn load(
    store: &Store,
    origin: &NodeId,
    from_seq: u64,
    indexes: &[u64],
) -> Result<Vec<Write>, DriverError> {
    let mut writes = Vec::with_capacity(indexes.len());
    for &index in indexes {
        let records = match store.read_log(index, 1) {
            Ok(records) => records,
            // Discarded meanwhile: the peer catches up through later writes.
            Err(mimeo_storage::Error::Compacted { .. }) => break,
            Err(source) => {
                return Err(DriverError::Storage {
                    doing: "reading writes for a peer",
                    source,
                })
            }
        };
        let Some(Record {
            mutation: Mutation::Put { value, .. },
            ..
        }) = records.into_iter().next()
        else {
            break;
        };
        let write: Write = decode("write", index, &value)?;
        let expected = from_seq + writes.len() as u64;
        if write.id.node != *origin || write.id.counter != expected {
            break;
        }
        writes.push(write);
    }
    Ok(writes)
}

/// A persist's size against [`DriverConfig::persist_bytes`].
fn persist_bytes(persist: &Persist) -> usize {
    let writes: usize = persist.writes.iter().map(Write::approx_bytes).sum();
    let keys: usize = persist
        .keys
        .iter()
        .map(|change| match change {
            KeyChange::Set { key, record } => key.len() + record.state.approx_bytes(),
            KeyChange::Collected { key, .. } => key.len() + 64,
        })
        .sum();
    64 + writes + keys
}

/// The writer thread: performs jobs in order, appending every persist
/// that has queued up before one wait for durability.
fn writer(
    store: &Store,
    origins: &[NodeId],
    jobs: &std::sync::mpsc::Receiver<Job>,
    written: &mpsc::UnboundedSender<Written>,
    queued: &AtomicUsize,
) {
    let storage = |doing| move |source| DriverError::Storage { doing, source };
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let result = (|| -> Result<Option<Written>, DriverError> {
            let mut last_id = None;
            let mut placed = Vec::new();
            let mut bytes = 0;
            for job in batch {
                match job {
                    Job::Persist { persist, bytes: b } => {
                        bytes += b;
                        let first = store.last_position().index + 1;
                        let batch = persist_records(&persist, origins, first);
                        for (write, record) in persist.writes.iter().zip(batch.records()) {
                            placed.push((
                                write.id.node.clone(),
                                write.id.counter,
                                record.meta.position.index,
                            ));
                        }
                        store
                            .append_committed(&batch)
                            .map_err(storage("appending a persist"))?;
                        last_id = Some(persist.id);
                    }
                    Job::Discard(index) => {
                        // Every persist appended so far is whole: the
                        // segments below `index` hold no partial one.
                        store
                            .discard_before(index)
                            .map_err(storage("discarding log segments every node holds"))?;
                    }
                }
            }
            let last = store.last_position().index;
            store
                .wait_durable(last)
                .map_err(storage("waiting for durability"))?;
            queued.fetch_sub(bytes, Ordering::Relaxed);
            Ok(last_id.map(|id| Written::Durable { id, writes: placed }))
        })();
        match result {
            Ok(Some(notice)) => {
                if written.send(notice).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "multi-leader storage failed; stopping");
                let _ = written.send(Written::Failed(e));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimeo_causality::Dot;

    #[test]
    fn a_record_of_another_format_version_is_refused_naming_it() {
        let meta = Meta {
            applied: VersionVector::new(),
            clock: Timestamp::new(1, 0, "n1"),
            actor: "n1".into(),
        };
        let mut bytes = encode(&meta);
        assert_eq!(decode::<Meta>("commit", 3, &bytes).unwrap(), meta);
        bytes[0] = 9;
        let err = decode::<Meta>("commit", 3, &bytes).unwrap_err().to_string();
        assert!(
            err.contains("format version 9") && err.contains("log index 3"),
            "{err}"
        );
    }

    /// Two persists of n1: the first whole, the second cut short before
    /// its commit record (a crash in the middle of its append).
    fn two_persists() -> (Persist, Persist) {
        let mut core = Core::new(Config::new("n1", ["n1", "n2"]), Millis(0)).unwrap();
        let mut persist = |value: &str| {
            let op = ClientOp::Put {
                key: b"k".to_vec(),
                value: value.into(),
                context: None,
            };
            core.handle_client(Millis(0), 1_000, 1, op, None);
            std::iter::from_fn(|| core.poll_output())
                .find_map(|o| match o {
                    Output::Persist(p) => Some(p),
                    _ => None,
                })
                .unwrap()
        };
        (persist("first"), persist("second"))
    }

    #[test]
    fn recovery_drops_a_persist_a_crash_cut_short_and_keeps_the_last_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        let options = store_options(Options::default());
        let origins: Vec<NodeId> = vec!["n1".into(), "n2".into()];
        let (first, second) = two_persists();
        {
            let store = Store::open(dir.path(), options.clone()).unwrap();
            store
                .append_committed(&persist_records(&first, &origins, 1))
                .unwrap();
            let second = persist_records(&second, &origins, store.last_position().index + 1);
            let (_commit, torn) = second.records().split_last().unwrap();
            store.append(torn).unwrap(); // the commit record never made it
            store.sync().unwrap();
        }
        let store = Store::open(dir.path(), options).unwrap();
        let recovered = recover(Config::new("n1", ["n1", "n2"]), &store, Millis(0)).unwrap();
        let core = &recovered.core;
        assert_eq!(core.applied(), &first.applied);
        let KeyChange::Set { record, .. } = &first.keys[0] else {
            panic!()
        };
        assert_eq!(
            core.record(b"k"),
            Some(record),
            "the key is as the first persist left it"
        );
        assert_eq!(recovered.write_index.find(&"n1".into(), 1, 2), [1]);
        assert_eq!(
            store.last_position().index,
            persist_records(&first, &origins, 1).commit_index(),
            "the torn records are gone from the store"
        );
    }

    /// The records of [`two_persists`] as format version 1 wrote them
    /// (before the commit record held the actor): what a data directory
    /// of an older build holds.
    const V1_RECORDS: &str = concat!(
        "0001010100000177230100026e3101e80700026e31016b0001026e310101010566697273",
        "7401026e31010100000200000000036b2f6b1501000001026e3101010105666972737401",
        "026e3101000300000000016d0d010001026e3101e80700026e3100040102000001772a01",
        "00026e3102e80701026e31016b0001026e3102020105666972737401067365636f6e6401",
        "026e310200000500000000036b2f6b1d01000001026e3102020105666972737401067365",
        "636f6e6401026e3102000600000000016d0d010001026e3102e80701026e31",
    );

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The records of two persists, as the store encodes them: the bytes
    /// a persist puts in the log (captured before persists went through
    /// `mimeo_storage::CommitBatch`, which must not change them). Format
    /// version 2: every value starts `02 00`, and the commit record ends
    /// with the actor (`02 6e 31`: "n1"); version 1 is [`V1_RECORDS`].
    #[test]
    fn the_records_of_a_persist_are_pinned() {
        let origins: Vec<NodeId> = vec!["n1".into(), "n2".into()];
        let (first, second) = two_persists();
        let first = persist_records(&first, &origins, 1);
        let second = persist_records(&second, &origins, first.commit_index() + 1);
        let records = first.records().iter().chain(second.records());
        let bytes = records.flat_map(|r| postcard::to_allocvec(r).unwrap());
        assert_eq!(
            mimeo_testkit::hex(bytes),
            concat!(
                "0001010100000177230200026e3101e80700026e31016b0001026e310101010566697273",
                "7401026e31010100000200000000036b2f6b1502000001026e3101010105666972737401",
                "026e3101000300000000016d10020001026e3101e80700026e31026e3100040102000001",
                "772a0200026e3102e80701026e31016b0001026e3102020105666972737401067365636f",
                "6e6401026e310200000500000000036b2f6b1d02000001026e3102020105666972737401",
                "067365636f6e6401026e3102000600000000016d10020001026e3102e80701026e31026e",
                "31",
            )
        );
    }

    /// A data directory written by format version 1 (no actor in its
    /// commit records) opens, and its node goes on writing as its plain id
    /// after its last sequence number: no re-identification, no reused or
    /// skipped dot.
    #[test]
    fn a_version_1_store_opens_and_its_node_keeps_writing_as_its_plain_id() {
        let dir = tempfile::tempdir().unwrap();
        let options = store_options(Options::default());
        let bytes = unhex(V1_RECORDS);
        let mut rest = &bytes[..];
        let mut records = Vec::new();
        while !rest.is_empty() {
            let (record, tail) = postcard::take_from_bytes::<Record>(rest).unwrap();
            records.push(record);
            rest = tail;
        }
        {
            let store = Store::open(dir.path(), options.clone()).unwrap();
            store.append(&records).unwrap();
            store.sync().unwrap();
        }
        let store = Store::open(dir.path(), options).unwrap();
        let config = Config::new("n1", ["n1", "n2"]);
        let recovered = recover(config, &store, Millis(0)).unwrap();
        let mut core = recovered.core;
        assert_eq!(core.actor().as_str(), "n1", "a version-1 node keeps its id");
        assert_eq!(core.applied(), &[("n1", 2)].into());
        assert_eq!(recovered.write_index.find(&"n1".into(), 1, 2), [1, 4]);
        let op = ClientOp::Put {
            key: b"k".to_vec(),
            value: "third".into(),
            context: None,
        };
        core.handle_client(Millis(0), 1_000, 1, op, None);
        let persist = std::iter::from_fn(|| core.poll_output())
            .find_map(|o| match o {
                Output::Persist(p) => Some(p),
                _ => None,
            })
            .unwrap();
        assert_eq!(persist.writes[0].id, Dot::new("n1", 3));
        assert_eq!(persist.actor.as_str(), "n1");
    }

    /// An empty (new or wiped) data directory starts a new incarnation,
    /// `n1.<wall clock in µs>`; a restart keeps it, and finds its writes
    /// (whose records name their origin by the write, not by number).
    #[test]
    fn an_empty_store_starts_a_new_incarnation_that_a_restart_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let options = store_options(Options::default());
        let origins: Vec<NodeId> = vec!["n1".into(), "n2".into()];
        let config = Config::new("n1", ["n1", "n2"]);
        let before = wall_micros();
        let store = Store::open(dir.path(), options.clone()).unwrap();
        let mut core = recover(config.clone(), &store, Millis(0)).unwrap().core;
        let actor = core.actor().clone();
        let (node, epoch) = config.member_of(actor.as_str()).unwrap();
        assert_eq!((node.as_str(), epoch >= before), ("n1", true), "{actor}");
        let op = ClientOp::Put {
            key: b"k".to_vec(),
            value: "new".into(),
            context: None,
        };
        core.handle_client(Millis(0), 1_000, 1, op, None);
        let persist = std::iter::from_fn(|| core.poll_output())
            .find_map(|o| match o {
                Output::Persist(p) => Some(p),
                _ => None,
            })
            .unwrap();
        assert_eq!(persist.writes[0].id, Dot::new(actor.clone(), 1));
        store
            .append_committed(&persist_records(&persist, &origins, 1))
            .unwrap();
        store.sync().unwrap();
        drop(store);
        let store = Store::open(dir.path(), options).unwrap();
        let recovered = recover(config, &store, Millis(0)).unwrap();
        assert_eq!(recovered.core.actor(), &actor, "a restart keeps it");
        assert_eq!(recovered.core.applied(), &[(actor.clone(), 1)].into());
        assert_eq!(recovered.write_index.find(&actor, 1, 1), [1]);
    }

    #[test]
    fn the_write_index_finds_runs_and_forgets_what_every_node_holds() {
        let mut index = WriteIndex::default();
        for seq in 1..=5 {
            index.insert("n1".into(), seq, 10 * seq);
        }
        index.insert("n2".into(), 1, 15);
        assert_eq!(index.find(&"n1".into(), 2, 4), [20, 30, 40]);
        assert_eq!(index.find(&"n3".into(), 1, 4), Vec::<u64>::new());
        let stable: VersionVector = [("n1", 3), ("n2", 1)].into();
        assert_eq!(index.forget_stable(&stable), Some(40));
        assert_eq!(index.find(&"n1".into(), 1, 5), [40, 50]);
        let all: VersionVector = [("n1", 5), ("n2", 1)].into();
        assert_eq!(index.forget_stable(&all), None);
    }
}
