//! The tokio driver: runs a [`Core`] against the storage engine, the peer
//! bus and the clocks. Thin: every decision is the core's.
//!
//! One task owns the core and feeds it, in a loop: client requests from
//! [`Handle`]s, peer messages from the [`PeerBus`] (QUIC with mutual TLS,
//! built by the caller as for the multi-leader driver), durability notices
//! from the writer thread, ticks when [`Core::next_timeout`] comes, and
//! link changes: every [`DriverConfig::link_check`] it reads
//! [`PeerBus::stats`] and calls [`Core::connected`] /
//! [`Core::disconnected`] for every peer whose outgoing connection came up
//! or went down (a peer starts *unreachable* until its link is up, so a
//! fresh node does not count on peers it never reached). After every
//! input it drains the core's outputs:
//!
//! - [`Output::Send`]: postcard-encode the [`Message`] (after the
//!   [`FORMAT_VERSION`] prefix) and queue it on the bus, best effort (the
//!   core tolerates loss). A message larger than the bus's largest payload
//!   is logged as an error and dropped (the node's value size limit must
//!   stay below it; anti-entropy bounds its own messages by
//!   `ae_max_bytes`).
//! - [`Output::Persist`]: hand it to the **writer thread**, which appends
//!   every persist that has queued up, waits once for durability (so
//!   concurrent writes share an fsync), and reports the last durable one
//!   with [`Core::persisted`].
//! - [`Output::Reply`]: answer the waiting [`Handle::request`].
//!
//! A storage failure stops the driver: [`Driver::run`] returns the error.
//!
//! # On disk
//!
//! Everything the core persists lives in one [`Store`] (opened with
//! [`store_options`]); a [`Persist`] becomes one `append`:
//!
//! | key | value | what |
//! |---|---|---|
//! | `k/<key>` ([`KEY_PREFIX`]) | a [`StoredKey`] | the key's state and writer id |
//! | `h/<owner len u16 LE><owner><key>` ([`HINT_PREFIX`]) | a [`Hint`] (a delete drops it) | a hint held for `owner` |
//! | `m` ([`META_KEY`]) | a [`Meta`] (ring fingerprint, epoch, clock) | **last**: commits the persist |
//!
//! Every value is [`FORMAT_VERSION`] (u32, little-endian) then postcard
//! (golden bytes in the tests below).
//!
//! **Atomicity.** The core asks for keys and hints to change together (a
//! hint replaces a key write on a fallback; a delivered hint is dropped in
//! the same persist that may store the key). A crash can cut an append
//! anywhere, so each persist ends with its commit record, `m` (a
//! [`CommitBatch`] appended with
//! [`Store::append_committed`]), and [`recover`] drops every record after
//! the last one ([`Store::recover_committed`]). This is the multi-leader driver's scheme;
//! hints are records of the store rather than a metadata file
//! (`Backend::write_file_durably`) because a file would need a second
//! fsync per persist and could not be atomic with the keys.
//!
//! **Metadata beside the log.** The ring the data was placed with is
//! written once, through [`Backend::write_file_durably`](mimeo_storage::Backend::write_file_durably),
//! to [`RING_FILE`] (node list, vnodes and fingerprint): at start a
//! different ring is refused with [`DriverError::RingChanged`], naming
//! both, before anything is read (the core also checks the fingerprint in
//! `m`). The epoch is in `m`; a store with no commit record (new, or
//! wiped) starts from [`Config::fresh_epoch`], which [`recover`] sets to
//! the wall clock in microseconds (unless the caller set a larger one), so
//! a wiped node never reissues a writer id of its old disk.
//!
//! **Trees** are not persisted: [`Core::restore`] rebuilds them from the
//! keys once at start.
//!
//! **Compaction.** Automatic compaction is off (it could fold records of
//! a persist whose commit record a crash then loses); the writer thread
//! instead calls [`Store::discard_before`] every
//! [`DriverConfig::compact_every`], right after a wait for durability, so
//! only whole, durable persists are folded.
//!
//! **Bounds.** Requests wait in a channel bounded in bytes
//! ([`DriverConfig::request_bytes`]: a [`Handle`] waits for room); persists
//! queued for the writer are bounded in bytes
//! ([`DriverConfig::persist_bytes`]: beyond it the loop takes no request or
//! peer message until the disk catches up); peer messages wait in the
//! bus's bounded queues; the core bounds its pending requests
//! (`max_pending_requests`) and hints (`hint_max_bytes`).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mimeo_causality::{NodeId, Timestamp};
use mimeo_storage::{CommitBatch, Mutation, Options, SealedBatch, Store};
use mimeo_wire::{PeerBus, PeerMessage};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::record::{DurableState, Hint, HintChange, Persist, StoredKey, FORMAT_VERSION};
use crate::state::KeyStateExt;
use crate::{
    ClientOp, Config, Core, LocalRead, Message, Millis, Output, Quorum, Reply, Ring, Status,
};

/// The prefix of a key's state record: `k/` then the key.
pub const KEY_PREFIX: &[u8] = b"k/";
/// The prefix of a hint record: `h/`, the owner's length (u16 LE), the
/// owner, the key.
pub const HINT_PREFIX: &[u8] = b"h/";
/// The store key of the commit record that ends every persist.
pub const META_KEY: &[u8] = b"m";
/// The metadata file naming the ring the data was placed with.
pub const RING_FILE: &str = "leaderless-ring";

/// What the commit record of a persist holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The ring's fingerprint.
    pub ring: u64,
    /// The node's epoch.
    pub epoch: u64,
    /// The HLC's last timestamp.
    pub clock: Timestamp,
}

/// What [`RING_FILE`] holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingFile {
    /// The nodes, as configured.
    pub nodes: Vec<NodeId>,
    /// Tokens per node.
    pub vnodes: u32,
    /// [`Ring::fingerprint`].
    pub fingerprint: u64,
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
    /// Reading or writing the ring file failed.
    #[error("{doing} {file}: {source}")]
    RingFile {
        /// What the driver was doing.
        doing: &'static str,
        /// The file's path.
        file: String,
        /// The error.
        source: std::io::Error,
    },
    /// A record in the store cannot be decoded.
    #[error("the {what} record {at} cannot be read ({message}): it was written by a newer build of Mimeo (run that build) or damaged on disk")]
    Unreadable {
        /// What it holds.
        what: &'static str,
        /// Where it is.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// The configured ring is not the one the data was placed with.
    #[error("the ring changed: the data in this directory was placed by a ring of nodes {stored_nodes:?} with {stored_vnodes} vnodes each, and the configuration now names nodes {nodes:?} with {vnodes} vnodes; moving data between rings is not supported: restore the old node list and vnodes, or start this node with an empty data directory")]
    RingChanged {
        /// The nodes in the ring file.
        stored_nodes: Vec<NodeId>,
        /// Its vnodes.
        stored_vnodes: u32,
        /// The configured nodes.
        nodes: Vec<NodeId>,
        /// The configured vnodes.
        vnodes: u32,
    },
    /// The store compacts on its own.
    #[error("the store compacts on its own (compact_min_bytes = {compact_min_bytes}), which could fold part of a persist a crash then cuts: open it with driver::store_options")]
    AutoCompaction {
        /// The store's `compact_min_bytes`.
        compact_min_bytes: u64,
    },
    /// The replication settings are invalid.
    #[error("invalid leaderless settings: {0}")]
    Config(#[from] crate::ConfigError),
    /// The writer thread is gone (after a storage failure it reported).
    #[error("the leaderless writer thread stopped after a storage failure")]
    WriterGone,
}

/// `options` made fit for a leaderless store: no automatic compaction (the
/// writer thread compacts after waiting for durability).
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
    at: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T, DriverError> {
    let unreadable = |message: String| DriverError::Unreadable {
        what,
        at: at(),
        message,
    };
    let Some((version, payload)) = bytes.split_first_chunk::<4>() else {
        return Err(unreadable("shorter than its format version".into()));
    };
    let version = u32::from_le_bytes(*version);
    if version != FORMAT_VERSION {
        return Err(unreadable(format!(
            "format version {version}; this build reads version {FORMAT_VERSION}"
        )));
    }
    postcard::from_bytes(payload).map_err(|e| unreadable(e.to_string()))
}

fn state_key(key: &[u8]) -> Vec<u8> {
    let mut k = KEY_PREFIX.to_vec();
    k.extend_from_slice(key);
    k
}

fn hint_key(owner: &NodeId, key: &[u8]) -> Vec<u8> {
    let owner = owner.as_str().as_bytes();
    let mut k = HINT_PREFIX.to_vec();
    k.extend_from_slice(&(owner.len() as u16).to_le_bytes());
    k.extend_from_slice(owner);
    k.extend_from_slice(key);
    k
}

/// The records of one persist, from log index `first`, sealed by the
/// commit record.
fn persist_records(persist: &Persist, first: u64) -> SealedBatch {
    let mut batch = CommitBatch::new(META_KEY, first)
        .with_capacity(persist.keys.len() + persist.hints.len() + 1);
    for (key, stored) in &persist.keys {
        let mutation = Mutation::Put {
            key: state_key(key),
            value: encode(stored),
        };
        batch.push(0, 0, mutation);
    }
    for change in &persist.hints {
        let mutation = match change {
            HintChange::Put(hint) => Mutation::Put {
                key: hint_key(&hint.owner, &hint.key),
                value: encode(hint),
            },
            HintChange::Remove { owner, key } => Mutation::Delete {
                key: hint_key(owner, key),
            },
        };
        batch.push(0, 0, mutation);
    }
    let meta = Meta {
        ring: persist.ring,
        epoch: persist.epoch,
        clock: persist.clock.clone(),
    };
    batch.seal(encode(&meta))
}

/// A persist's size against [`DriverConfig::persist_bytes`].
fn persist_bytes(persist: &Persist) -> usize {
    let keys: usize = persist
        .keys
        .iter()
        .map(|(k, s)| k.len() + s.state.encode().len() + 32)
        .sum();
    let hints: usize = persist
        .hints
        .iter()
        .map(|h| match h {
            HintChange::Put(h) => h.key.len() + h.state.encode().len() + 64,
            HintChange::Remove { key, .. } => key.len() + 64,
        })
        .sum();
    64 + keys + hints
}

/// Checks (or, on a new store, writes) [`RING_FILE`].
fn check_ring(store: &Store, config: &Config, ring: &Ring) -> Result<(), DriverError> {
    let backend = store.backend();
    let file = backend.path(RING_FILE).display().to_string();
    let io = |doing| {
        let file = file.clone();
        move |source| DriverError::RingFile {
            doing,
            file,
            source,
        }
    };
    match backend.read_file(RING_FILE).map_err(io("reading"))? {
        Some(bytes) => {
            let stored: RingFile = decode("ring", || format!("in {file}"), &bytes)?;
            if stored.fingerprint != ring.fingerprint() {
                return Err(DriverError::RingChanged {
                    stored_nodes: stored.nodes,
                    stored_vnodes: stored.vnodes,
                    nodes: config.nodes.clone(),
                    vnodes: config.vnodes,
                });
            }
            Ok(())
        }
        None => {
            let now = RingFile {
                nodes: config.nodes.clone(),
                vnodes: config.vnodes,
                fingerprint: ring.fingerprint(),
            };
            backend
                .write_file_durably(RING_FILE, &encode(&now))
                .map_err(io("writing"))
        }
    }
}

fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Wall-clock milliseconds since the Unix epoch: the HLC's physical time.
fn wall_ms() -> u64 {
    wall_micros() / 1000
}

/// Rebuilds a core from `store`: refuses a changed ring
/// ([`DriverError::RingChanged`]), drops a persist a crash cut short (the
/// records after the last commit record), reads every key and hint, and
/// restores the core (which rebuilds its trees). Sets
/// [`Config::fresh_epoch`] to at least the wall clock in microseconds.
/// `now` is the monotonic time the core's [`Millis`] count from.
pub fn recover(mut config: Config, store: &Store, now: Millis) -> Result<Core, DriverError> {
    let compact_min_bytes = store.options().compact_min_bytes;
    if compact_min_bytes != u64::MAX {
        return Err(DriverError::AutoCompaction { compact_min_bytes });
    }
    config.validate()?;
    let ring = Ring::new(&config.nodes, config.vnodes).map_err(crate::ConfigError::from)?;
    check_ring(store, &config, &ring)?;
    config.fresh_epoch = config.fresh_epoch.max(wall_micros());
    let storage = |doing| move |source| DriverError::Storage { doing, source };
    let found = store
        .recover_committed(META_KEY, |_| {})
        .map_err(storage("dropping an incomplete persist at start-up"))?;
    let mut durable = DurableState::default();
    if let Some(entry) = found.commit {
        let index = entry.meta.position.index;
        let meta: Meta = decode(
            "commit",
            || format!("at log index {index}"),
            &entry.value.unwrap_or_default(),
        )?;
        durable.ring = Some(meta.ring);
        durable.epoch = meta.epoch;
        durable.clock = Some(meta.clock);
    }
    for (prefix, what) in [(KEY_PREFIX, "key state"), (HINT_PREFIX, "hint")] {
        let mut end = prefix.to_vec();
        *end.last_mut().expect("a prefix") += 1;
        for (key, entry) in store
            .scan(prefix.to_vec()..end)
            .map_err(storage("reading keys and hints"))?
        {
            let Some(bytes) = entry.value else { continue };
            let index = entry.meta.position.index;
            let at = || format!("at log index {index}");
            if prefix == KEY_PREFIX {
                let stored: StoredKey = decode(what, at, &bytes)?;
                durable.keys.insert(key[prefix.len()..].to_vec(), stored);
            } else {
                let hint: Hint = decode(what, at, &bytes)?;
                durable
                    .hints
                    .insert((hint.owner.clone(), hint.key.clone()), hint);
            }
        }
    }
    Ok(Core::restore(config, durable, now)?)
}

/// How the driver bounds what waits, and its timers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverConfig {
    /// Bytes of client requests waiting for the event loop; a
    /// [`Handle::request`] waits for room.
    pub request_bytes: usize,
    /// Bytes of persists queued for the writer thread; beyond it the event
    /// loop takes no new request or peer message until the disk catches up.
    pub persist_bytes: usize,
    /// How often the bus's link states are read for
    /// [`Core::connected`] / [`Core::disconnected`].
    pub link_check: Duration,
    /// How often the writer folds the durable log into the snapshot.
    pub compact_every: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            request_bytes: 64 << 20,
            persist_bytes: 64 << 20,
            link_check: Duration::from_millis(100),
            compact_every: Duration::from_secs(30),
        }
    }
}

enum Request {
    Client {
        op: ClientOp,
        quorum: Quorum,
        reply: oneshot::Sender<Reply>,
        _permit: OwnedSemaphorePermit,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    Local {
        key: Vec<u8>,
        reply: oneshot::Sender<LocalRead>,
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
#[error("the leaderless driver has stopped")]
pub struct Stopped;

/// A request's size against [`DriverConfig::request_bytes`].
fn op_bytes(op: &ClientOp) -> usize {
    let payload = match op {
        ClientOp::Put { value, context, .. } => {
            value.len() + context.as_ref().map_or(0, |c| 24 * c.len())
        }
        ClientOp::Delete { context, .. } => context.as_ref().map_or(0, |c| 24 * c.len()),
        ClientOp::Cas {
            expected, value, ..
        } => value.len() + expected.as_ref().map_or(0, Vec::len),
        ClientOp::SetAdd { element, .. } | ClientOp::SetRemove { element, .. } => element.len(),
        _ => 0,
    };
    64 + op.key().len() + payload
}

impl Handle {
    /// Submits a client operation with its quorum overrides and waits for
    /// the core's reply (the core bounds the wait by its
    /// `request_timeout_ms`: a write then ends [`Reply::Unknown`], a read
    /// [`Reply::Unavailable`]).
    pub async fn request(&self, op: ClientOp, quorum: Quorum) -> Result<Reply, Stopped> {
        let bytes = op_bytes(&op).min(self.room_bytes);
        let permit = Arc::clone(&self.room)
            .acquire_many_owned(u32::try_from(bytes).unwrap_or(u32::MAX))
            .await
            .map_err(|_| Stopped)?;
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Client {
                op,
                quorum,
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

    /// This node's own copy of `key` ([`Core::local_read`]): answered at
    /// once from the core's state, nothing coordinated (a diagnostic).
    pub async fn local_read(&self, key: Vec<u8>) -> Result<LocalRead, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Local { key, reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

enum Job {
    Persist { persist: Persist, bytes: usize },
    Compact,
}

enum Written {
    Durable(u64),
    Failed(DriverError),
}

enum Event {
    Request(Option<Request>),
    Peer(Option<PeerMessage>),
    Written(Option<Written>),
    Tick,
    Links,
    Compact,
}

/// Reads the physical time the HLC follows, in ms since the Unix epoch.
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The driver of one node's core.
pub struct Driver {
    core: Core,
    bus: Arc<PeerBus>,
    inbound: mpsc::Receiver<PeerMessage>,
    requests: mpsc::Receiver<Request>,
    store: Arc<Store>,
    origin: Instant,
    config: DriverConfig,
    wall_clock: WallClock,
    /// Peers whose link was up at the last check.
    up: BTreeSet<NodeId>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("id", self.core.id())
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver for `core` (built by [`recover`] with `Millis(0)` at
    /// `origin`, the instant its [`Millis`] count from), persisting to
    /// `store`, talking to peers over `bus` (whose inbound messages arrive
    /// on `inbound`; peer names are the core's node ids). Run it with
    /// [`Driver::run`]; talk to it through the returned [`Handle`].
    pub fn new(
        mut core: Core,
        bus: Arc<PeerBus>,
        inbound: mpsc::Receiver<PeerMessage>,
        store: Arc<Store>,
        origin: Instant,
        config: DriverConfig,
    ) -> (Driver, Handle) {
        let (tx, requests) = mpsc::channel(4096);
        let room_bytes = config.request_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let handle = Handle {
            requests: tx,
            room: Arc::new(Semaphore::new(room_bytes)),
            room_bytes: room_bytes.min(u32::MAX as usize),
        };
        // Peers are unreachable until their link is up.
        let now = Millis(origin.elapsed().as_millis() as u64);
        let peers: Vec<NodeId> = core
            .config()
            .nodes
            .iter()
            .filter(|n| *n != core.id())
            .cloned()
            .collect();
        for peer in &peers {
            core.disconnected(now, peer);
        }
        let driver = Driver {
            core,
            bus,
            inbound,
            requests,
            store,
            origin,
            config,
            wall_clock: Arc::new(wall_ms),
            up: BTreeSet::new(),
        };
        (driver, handle)
    }

    /// Reads physical time from `clock` instead of the system clock.
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
            let queued = Arc::clone(&queued);
            std::thread::Builder::new()
                .name("ll-writer".into())
                .spawn(move || writer(&store, &job_rx, &written_tx, &queued))
                .expect("spawning the writer thread")
        };
        let mut pending: HashMap<u64, oneshot::Sender<Reply>> = HashMap::new();
        let mut next_request = 0u64;
        let mut peers_open = true;
        let mut links = tokio::time::interval(self.config.link_check);
        links.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut compact = tokio::time::interval(self.config.compact_every);
        compact.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            if let Err(e) = self.drain(&jobs, &queued, &mut pending) {
                break Err(e);
            }
            let open = queued.load(Ordering::Relaxed) < self.config.persist_bytes;
            let deadline = self.origin + Duration::from_millis(self.core.next_timeout().0);
            let event = tokio::select! {
                request = self.requests.recv(), if open => Event::Request(request),
                message = self.inbound.recv(), if open && peers_open => Event::Peer(message),
                notice = written.recv() => Event::Written(notice),
                () = tokio::time::sleep_until(deadline.into()) => Event::Tick,
                _ = links.tick() => Event::Links,
                _ = compact.tick() => Event::Compact,
            };
            if matches!(event, Event::Peer(None)) {
                tracing::error!(
                    "the peer message channel closed: this node hears no peer any more"
                );
                peers_open = false;
            }
            let now = self.now();
            let wall = (self.wall_clock)();
            match event {
                Event::Request(Some(Request::Client {
                    op, quorum, reply, ..
                })) => {
                    next_request += 1;
                    pending.insert(next_request, reply);
                    self.core.handle_client(now, wall, next_request, op, quorum);
                }
                Event::Request(Some(Request::Status { reply })) => {
                    let _ = reply.send(self.core.status());
                }
                Event::Request(Some(Request::Local { key, reply })) => {
                    let _ = reply.send(self.core.local_read(&key));
                }
                Event::Request(None) | Event::Written(None) => break Ok(()),
                Event::Peer(Some(message)) => self.deliver(now, wall, message),
                Event::Peer(None) => {}
                Event::Written(Some(Written::Durable(id))) => self.core.persisted(now, id),
                Event::Written(Some(Written::Failed(e))) => break Err(e),
                Event::Tick => self.core.tick(now, wall),
                Event::Links => self.check_links(now),
                Event::Compact => {
                    if jobs.send(Job::Compact).is_err() {
                        break Err(DriverError::WriterGone);
                    }
                }
            }
        };
        drop(jobs);
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        result
    }

    /// Feeds the core the links that came up or went down.
    fn check_links(&mut self, now: Millis) {
        let up: BTreeSet<NodeId> = self
            .bus
            .stats()
            .into_iter()
            .filter(|s| s.connected)
            .map(|s| NodeId::from(s.node_id))
            .collect();
        for peer in up.difference(&self.up) {
            tracing::debug!(peer = %peer, "peer reachable");
            self.core.connected(now, peer);
        }
        for peer in self.up.difference(&up) {
            tracing::debug!(peer = %peer, "peer unreachable");
            self.core.disconnected(now, peer);
        }
        self.up = up;
    }

    fn deliver(&mut self, now: Millis, wall: u64, message: PeerMessage) {
        let from = message.from.clone();
        match decode::<Message>("peer message", || format!("from {from}"), &message.payload) {
            Ok(msg) => self
                .core
                .handle_peer(now, wall, NodeId::from(message.from), msg),
            Err(e) => tracing::warn!(from = %from, error = %e, "unreadable peer message dropped"),
        }
    }

    fn drain(
        &mut self,
        jobs: &std::sync::mpsc::Sender<Job>,
        queued: &AtomicUsize,
        pending: &mut HashMap<u64, oneshot::Sender<Reply>>,
    ) -> Result<(), DriverError> {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send { to, msg } => {
                    let payload = encode(&msg);
                    if payload.len() > self.bus.max_payload() {
                        tracing::error!(
                            to = %to,
                            bytes = payload.len(),
                            max = self.bus.max_payload(),
                            "a peer message larger than the transport's frame cannot be sent; lower the value size limit"
                        );
                    } else if let Err(e) = self.bus.send(to.as_str(), payload) {
                        tracing::debug!(to = %to, error = %e, "peer message refused");
                    }
                }
                Output::Persist(persist) => {
                    let bytes = persist_bytes(&persist);
                    queued.fetch_add(bytes, Ordering::Relaxed);
                    if jobs.send(Job::Persist { persist, bytes }).is_err() {
                        return Err(DriverError::WriterGone);
                    }
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
}

/// The writer thread: appends every persist that has queued up, then
/// waits once for durability.
fn writer(
    store: &Store,
    jobs: &std::sync::mpsc::Receiver<Job>,
    written: &mpsc::UnboundedSender<Written>,
    queued: &AtomicUsize,
) {
    let storage = |doing| move |source| DriverError::Storage { doing, source };
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        let result = (|| -> Result<Option<u64>, DriverError> {
            let mut last_id = None;
            let mut bytes = 0;
            let mut compact = false;
            for job in batch {
                match job {
                    Job::Persist { persist, bytes: b } => {
                        bytes += b;
                        let first = store.last_position().index + 1;
                        store
                            .append_committed(&persist_records(&persist, first))
                            .map_err(storage("appending a persist"))?;
                        last_id = Some(persist.id);
                    }
                    Job::Compact => compact = true,
                }
            }
            let last = store.last_position().index;
            store
                .wait_durable(last)
                .map_err(storage("waiting for durability"))?;
            queued.fetch_sub(bytes, Ordering::Relaxed);
            if compact {
                // Every persist up to `last` is whole and durable.
                store
                    .discard_before(last + 1)
                    .map_err(storage("compacting the log"))?;
            }
            Ok(last_id)
        })();
        match result {
            Ok(Some(id)) => {
                if written.send(Written::Durable(id)).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "leaderless storage failed; stopping");
                let _ = written.send(Written::Failed(e));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_record_and_ring_file_encodings_are_pinned() {
        let meta = Meta {
            ring: 0x0102,
            epoch: 7,
            clock: Timestamp::new(1_000, 2, "n1"),
        };
        let bytes = encode(&meta);
        assert_eq!(
            bytes,
            [1, 0, 0, 0, 0x82, 0x02, 7, 0xe8, 0x07, 2, 2, b'n', b'1'],
            "{bytes:?}"
        );
        assert_eq!(decode::<Meta>("commit", String::new, &bytes).unwrap(), meta);
        let ring = RingFile {
            nodes: vec!["a".into(), "b".into()],
            vnodes: 2,
            fingerprint: 3,
        };
        assert_eq!(encode(&ring), [1, 0, 0, 0, 2, 1, b'a', 1, b'b', 2, 3]);
        assert_eq!(hint_key(&"n2".into(), b"k"), b"h/\x02\x00n2k");
    }

    #[test]
    fn a_record_of_another_format_version_is_refused_naming_it() {
        let mut bytes = encode(&7u64);
        bytes[0] = 9;
        let err = decode::<u64>("commit", || "at log index 3".into(), &bytes)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("format version 9") && err.contains("log index 3"),
            "{err}"
        );
    }

    fn put(core: &mut Core, value: &str) -> Persist {
        let op = ClientOp::Put {
            key: b"k".to_vec(),
            value: value.into(),
            context: None,
        };
        core.handle_client(Millis(0), 1_000, 1, op, Quorum::default());
        std::iter::from_fn(|| core.poll_output())
            .find_map(|o| match o {
                Output::Persist(p) => Some(p),
                _ => None,
            })
            .unwrap()
    }

    /// The records of two persists (the second with a hint and a dropped
    /// hint), as the store encodes them: the bytes a persist puts in the
    /// log (captured before persists went through
    /// `mimeo_storage::CommitBatch`, which must not change them).
    #[test]
    fn the_records_of_a_persist_are_pinned() {
        let mut core = Core::new(Config::new("n1", ["n1", "n2", "n3"]), Millis(0)).unwrap();
        let mut first = put(&mut core, "first");
        let mut second = put(&mut core, "second");
        first.epoch = 7; // the fresh epoch is the wall clock
        second.epoch = 7;
        let hint = Hint {
            owner: "n2".into(),
            key: b"h".to_vec(),
            state: first.keys[0].1.state.clone(),
            actor: Some("n1".into()),
            stored_wall_ms: 5,
        };
        second.hints = vec![
            HintChange::Put(hint),
            HintChange::Remove {
                owner: "n3".into(),
                key: b"g".to_vec(),
            },
        ];
        let first = persist_records(&first, 1);
        let second = persist_records(&second, first.commit_index() + 1);
        let records = first.records().iter().chain(second.records());
        let bytes = records.flat_map(|r| postcard::to_allocvec(r).unwrap());
        assert_eq!(
            mimeo_testkit::hex(bytes),
            concat!(
                "000100000000036b2f6b1a010000000001046e312e3101010105666972737401046e312e",
                "31000200000000016d1401000000d1c293e9f9dcc2b1e601070000026e31000300000000",
                "036b2f6b22010000000001046e312e3102020105666972737401067365636f6e6401046e",
                "312e3100040000000007682f02006e32681e01000000026e3201680001046e312e310101",
                "0105666972737401026e310500050000000107682f02006e3367000600000000016d1401",
                "000000d1c293e9f9dcc2b1e601070000026e31",
            )
        );
    }

    #[test]
    fn recovery_drops_a_torn_persist_and_refuses_a_changed_ring() {
        let dir = tempfile::tempdir().unwrap();
        let options = store_options(Options::default());
        let ids = ["n1", "n2", "n3"];
        let mut core = Core::new(Config::new("n1", ids), Millis(0)).unwrap();
        let first = put(&mut core, "first");
        let second = put(&mut core, "second");
        {
            let store = Store::open(dir.path(), options.clone()).unwrap();
            recover(Config::new("n1", ids), &store, Millis(0)).unwrap();
            store.append_committed(&persist_records(&first, 1)).unwrap();
            let second = persist_records(&second, store.last_position().index + 1);
            let (_commit, torn) = second.records().split_last().unwrap();
            store.append(torn).unwrap();
            store.sync().unwrap();
        }
        let store = Store::open(dir.path(), options).unwrap();
        let core = recover(Config::new("n1", ids), &store, Millis(0)).unwrap();
        assert_eq!(core.state(b"k"), Some(&first.keys[0].1.state));
        let err = recover(Config::new("n1", ["n1", "n2", "n4"]), &store, Millis(0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the ring changed") && err.contains("n4") && err.contains("n3"),
            "{err}"
        );
    }
}
