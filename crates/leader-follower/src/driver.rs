//! The tokio driver: runs a [`Core`] against the storage engine, the peer
//! bus and the monotonic clock.
//!
//! One task owns the core and feeds it, in a loop: client requests from
//! [`Handle`]s, peer messages from the [`PeerBus`], ticks when
//! [`Core::next_timeout`] comes, and durability notices from the writer
//! thread. After every input it drains the core's outputs:
//!
//! - [`Output::Send`]: postcard-encode the [`PeerMsg`] and queue it on the
//!   bus (best effort; the core retransmits).
//! - [`Output::Persist`]: hand it to the **writer thread**, which performs
//!   persists strictly in order, through [`Persist::apply_to`] (the one
//!   implementation of the ordering rule, shared with the simulation and
//!   the model checker). It appends
//!   every persist that has queued up, then waits once for durability and
//!   reports the last durable position back: concurrent writes share an
//!   fsync under `fsync = batch`. A persist that carries a hard state (a new
//!   term or vote) is awaited before any later output leaves the node, so a
//!   vote is never forgotten after it was sent.
//! - [`Output::Probe`]: send one empty datagram to the peer's address on a
//!   task of its own ([`mimeo_wire::probe`]) and, if its host refuses it,
//!   tell the core with [`Core::peer_gone`].
//! - [`Output::Reply`]: answer the waiting [`Handle::request`].
//!
//! It also times every append it sends until the follower answers that the
//! append is durable ([`Handle::replication_latency`]): the core's clock
//! counts milliseconds, and these round trips take a fraction of one.
//!
//! A storage failure stops the driver (the node must not go on acknowledging
//! writes it may not have stored): [`Driver::run`] returns the error.
//!
//! The store holds the log only: every entry is one record under
//! [`RECORD_KEY`](crate::RECORD_KEY) (see [`LogEntry::to_record`]), so the
//! store's own key index and compaction snapshot stay one entry small; the
//! key-value state is the core's, and its snapshots' below.
//!
//! The hard state and the latest snapshot live beside the log, written
//! through the same [`Backend`] as the log ([`Store::backend`]), so a
//! simulated power cut ([`mimeo_storage::sim::SimBackend`],
//! [`mimeo_storage::PowerLossBackend`]) sees them too. The hard state is
//! `leader-follower.state` (JSON), replaced atomically with
//! [`Backend::write_file_durably`] (temporary file, fsync, rename, fsync
//! of the directory).
//!
//! The latest snapshot lives in `leader-follower.snapshot`, written the same
//! way, streamed ([`Backend::replace_file_with`]), and checksummed. A [`Persist::snapshot`] of the core's own applied view is
//! written on a second thread while appends go on, and reported with
//! [`Core::snapshot_persisted`] once it is durable; so is a
//! [`Persist::discard_before`], which drops whole log segments below that
//! index ([`Store::discard_before`]), so the log on disk starts at most a
//! segment before the core's first index. A snapshot with
//! [`Persist::replace_log`] (installed from the leader) is written in line,
//! before anything after it, and resets the store to it
//! ([`Store::reset_to`]).
//!
//! Snapshot file layout (integers little-endian, checksums CRC32C):
//!
//! ```text
//! 0   8  magic "MIMEOLFS"
//! 8   4  format version, u32 (1)
//! 12  4  CRC32C of the payload, u32
//! 16  8  last index, u64
//! 24  8  last term, u64
//! 32  8  payload length, u64
//! 40  4  CRC32C of bytes 0..40, u32
//! 44  n  payload: Snapshot::encode (postcard)
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mimeo_storage::{Backend, Latencies, LogPosition, Options, Record, Store};
use mimeo_wire::{PeerBus, PeerMessage, Probe};
use tokio::sync::{mpsc, oneshot};

mod timing;

pub use self::timing::ReplicationLatency;
use self::timing::ReplicationTimer;
use crate::{AckMode, ClientOp, Core, DurableState, HardState, LogEntry, Millis, NodeId};
use crate::{Config, Persist, Reply, Snapshot, Status};
use crate::{Output, PeerMsg};

/// The file that holds the hard state, in the node's data directory.
pub const HARD_STATE_FILE: &str = "leader-follower.state";

/// The file that holds the latest snapshot, in the node's data directory.
pub const SNAPSHOT_FILE: &str = "leader-follower.snapshot";

const SNAPSHOT_MAGIC: &[u8; 8] = b"MIMEOLFS";
const SNAPSHOT_VERSION: u32 = 1;
const SNAPSHOT_HEADER_LEN: usize = 44;

/// What every error that suggests removing a node's data says is safe.
pub const WIPE_ADVICE: &str = "remove the node's data directory and restart the node without \
`bootstrap`: it rejoins as a learner and votes only once it has caught up from the leader. \
This is safe while the other nodes hold a majority of the cluster; never wipe more nodes at \
once than a minority, and never restart a wiped node with `bootstrap = true`";

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
    /// The hard state file could not be read or written.
    #[error("{path}: {source}")]
    HardState {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The hard state file is not valid.
    #[error("{path}: not a valid hard state ({message}); it is written only by this node: restore it from a backup, or {WIPE_ADVICE}")]
    CorruptHardState {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The snapshot file could not be read or written.
    #[error("{path}: {source}")]
    SnapshotFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The snapshot file is damaged.
    #[error("{path}: not a valid snapshot ({message}); it is written only by this node, renamed into place after an fsync, so this is damage on disk: {WIPE_ADVICE}")]
    CorruptSnapshot {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The log on disk cannot be the log of this mode.
    #[error("the log in {dir} cannot be recovered: {source}")]
    Recover {
        /// The data directory.
        dir: PathBuf,
        /// Why.
        source: crate::RecoverError,
    },
    /// The replication settings are inconsistent.
    #[error("invalid replication settings: {0}")]
    Config(#[from] crate::ConfigError),
    /// An entry of the log on disk cannot be decoded.
    #[error("log entry {index} cannot be decoded ({message}): it was written by a newer build of Mimeo (run that build) or damaged on disk ({WIPE_ADVICE})")]
    UnreadableEntry {
        /// Its index.
        index: u64,
        /// What the decoder said.
        message: String,
    },
    /// The log on disk starts after index 1 but the snapshot file that
    /// must cover the entries before it is missing: the data directory is
    /// incomplete (files removed by hand or by a tool).
    #[error("the log in {dir} starts at index {first_index}, but the snapshot file {SNAPSHOT_FILE} that holds the entries before it is missing: the data directory is incomplete; restore it from a backup, or {WIPE_ADVICE}")]
    MissingSnapshot {
        /// The data directory.
        dir: PathBuf,
        /// The first index the store holds.
        first_index: u64,
    },
    /// The store compacts on its own, which would fold log entries the
    /// replicas may still need into its snapshot.
    #[error("the store compacts on its own (compact_min_bytes = {compact_min_bytes}), which would drop replication log entries followers may still need: open it with driver::store_options")]
    AutoCompaction {
        /// The store's [`Options::compact_min_bytes`](mimeo_storage::Options::compact_min_bytes).
        compact_min_bytes: u64,
    },
}

/// `options` made fit for a store holding a replication log: no automatic
/// compaction. The log is shipped to followers and its uncommitted tail
/// may be truncated, so only the driver may drop entries, the ones its own
/// snapshots cover ([`Store::discard_before`]). [`recover`] refuses a store
/// opened otherwise.
pub fn store_options(options: Options) -> Options {
    Options {
        compact_min_bytes: u64::MAX,
        ..options
    }
}

/// Maps the cluster's node names (`n1`, `n2`...) to the core's numeric
/// ids. Every node must be given the same set of names: ids are positions
/// in the sorted list, from 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeNames {
    sorted: Vec<String>,
}

impl NodeNames {
    /// The names of every node of the cluster, this one included.
    pub fn new(mut names: Vec<String>) -> NodeNames {
        names.sort();
        names.dedup();
        NodeNames { sorted: names }
    }

    /// The id of `name`.
    pub fn id(&self, name: &str) -> Option<NodeId> {
        self.sorted
            .binary_search_by(|n| n.as_str().cmp(name))
            .ok()
            .map(|i| i as NodeId + 1)
    }

    /// The name of `id`.
    pub fn name(&self, id: NodeId) -> Option<&str> {
        let i = usize::try_from(id.checked_sub(1)?).ok()?;
        self.sorted.get(i).map(String::as_str)
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether no node is named.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

/// The directory `backend` works in, for messages.
fn dir_of(backend: &dyn Backend) -> PathBuf {
    backend.path("").components().collect()
}

/// Reads the hard state [`HARD_STATE_FILE`] through `backend` (the
/// default when the node is new).
pub fn read_hard_state(backend: &dyn Backend) -> Result<HardState, DriverError> {
    Ok(load_hard_state(backend)?.unwrap_or_default())
}

/// The hard state, or `None` when the file does not exist.
fn load_hard_state(backend: &dyn Backend) -> Result<Option<HardState>, DriverError> {
    let path = backend.path(HARD_STATE_FILE);
    match backend.read_file(HARD_STATE_FILE) {
        Ok(Some(bytes)) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| DriverError::CorruptHardState {
                    path,
                    message: e.to_string(),
                })
        }
        Ok(None) => Ok(None),
        Err(source) => Err(DriverError::HardState { path, source }),
    }
}

/// Makes `state` durable as [`HARD_STATE_FILE`] through `backend`
/// ([`Backend::write_file_durably`]: temporary file, fsync, rename, fsync
/// of the directory). The bytes are the hard state's JSON, as every
/// earlier build wrote them.
pub fn write_hard_state(backend: &dyn Backend, state: &HardState) -> Result<(), DriverError> {
    let bytes = serde_json::to_vec(state).expect("a hard state serializes");
    backend
        .write_file_durably(HARD_STATE_FILE, &bytes)
        .map_err(|source| DriverError::HardState {
            path: backend.path(HARD_STATE_FILE),
            source,
        })
}

/// An [`std::io::Write`] that only computes the CRC32C and length of what
/// goes through it: the first pass of [`write_snapshot`].
#[derive(Default)]
struct Checksum {
    crc: u32,
    len: u64,
}

impl std::io::Write for Checksum {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encodes `snapshot` (postcard, as [`Snapshot::encode`]) into `out`,
/// keeping the writer's own error when it fails.
fn encode_snapshot_into(snapshot: &Snapshot, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    /// Keeps the first I/O error, which postcard would replace by its own.
    struct Keep<'a> {
        out: &'a mut dyn std::io::Write,
        error: Option<std::io::Error>,
    }
    impl std::io::Write for Keep<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.out.write(buf).inspect_err(|e| {
                self.error
                    .get_or_insert_with(|| std::io::Error::new(e.kind(), e.to_string()));
            })
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.out.flush()
        }
    }
    let mut keep = Keep { out, error: None };
    match postcard::to_io(snapshot, &mut keep) {
        Ok(_) => Ok(()),
        Err(e) => Err(keep
            .error
            .take()
            .unwrap_or_else(|| std::io::Error::other(format!("encoding the snapshot: {e}")))),
    }
}

/// The header of a snapshot file (see the module docs for the layout).
fn snapshot_header(
    last: LogPosition,
    payload_crc: u32,
    payload_len: u64,
) -> [u8; SNAPSHOT_HEADER_LEN] {
    let mut header = [0u8; SNAPSHOT_HEADER_LEN];
    header[..8].copy_from_slice(SNAPSHOT_MAGIC);
    header[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&payload_crc.to_le_bytes());
    header[16..24].copy_from_slice(&last.index.to_le_bytes());
    header[24..32].copy_from_slice(&last.term.to_le_bytes());
    header[32..40].copy_from_slice(&payload_len.to_le_bytes());
    let header_crc = crc32c::crc32c(&header[..40]);
    header[40..].copy_from_slice(&header_crc.to_le_bytes());
    header
}

/// Makes `snapshot` durable as [`SNAPSHOT_FILE`] through `backend`
/// ([`Backend::replace_file_with`]: temporary file, fsync, rename, fsync
/// of the directory), in the layout of the module docs.
///
/// Streamed in two passes over the snapshot (one for the payload's
/// checksum and length, which the header carries, one to write it), so
/// no encoded copy of a large state is held in memory.
pub fn write_snapshot(backend: &dyn Backend, snapshot: &Snapshot) -> Result<(), DriverError> {
    let io = |source| DriverError::SnapshotFile {
        path: backend.path(SNAPSHOT_FILE),
        source,
    };
    let mut sum = std::io::BufWriter::with_capacity(64 << 10, Checksum::default());
    encode_snapshot_into(snapshot, &mut sum).map_err(io)?;
    let sum = sum.into_inner().map_err(|e| io(e.into_error()))?;
    let header = snapshot_header(snapshot.last, sum.crc, sum.len);
    backend
        .replace_file_with(SNAPSHOT_FILE, &mut |out| {
            out.write_all(&header)?;
            encode_snapshot_into(snapshot, out)
        })
        .map_err(io)
}

/// Reads the snapshot [`SNAPSHOT_FILE`] through `backend` (`None` when
/// there is none), checking its checksums.
pub fn read_snapshot(backend: &dyn Backend) -> Result<Option<Snapshot>, DriverError> {
    let path = backend.path(SNAPSHOT_FILE);
    let io = |source| DriverError::SnapshotFile {
        path: path.clone(),
        source,
    };
    let file = match backend.open(SNAPSHOT_FILE) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io(source)),
    };
    let corrupt = |message: String| DriverError::CorruptSnapshot {
        path: path.clone(),
        message,
    };
    let len = file.len().map_err(io)?;
    if len < SNAPSHOT_HEADER_LEN as u64 {
        return Err(corrupt(format!(
            "{len} bytes, shorter than its {SNAPSHOT_HEADER_LEN}-byte header"
        )));
    }
    let mut header = [0u8; SNAPSHOT_HEADER_LEN];
    file.read_at(&mut header, 0).map_err(io)?;
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    if &header[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt("bad magic: not a leader-follower snapshot".into()));
    }
    if crc32c::crc32c(&header[..40]) != u32_at(40) {
        return Err(corrupt("header checksum mismatch at byte offset 40".into()));
    }
    let version = u32_at(8);
    if version != SNAPSHOT_VERSION {
        return Err(corrupt(format!(
            "format version {version}; this build reads version {SNAPSHOT_VERSION}"
        )));
    }
    let last = LogPosition::new(u64_at(24), u64_at(16));
    let payload_len = len - SNAPSHOT_HEADER_LEN as u64;
    if payload_len != u64_at(32) {
        return Err(corrupt(format!(
            "the header promises {} payload bytes, the file holds {payload_len}",
            u64_at(32),
        )));
    }
    // As large as the file, which this node wrote (and the header vouches
    // for): the decoded state is about as large again.
    let mut payload = vec![0u8; payload_len as usize];
    file.read_at(&mut payload, SNAPSHOT_HEADER_LEN as u64)
        .map_err(io)?;
    if crc32c::crc32c(&payload) != u32_at(12) {
        return Err(corrupt(format!(
            "payload checksum mismatch (bytes {SNAPSHOT_HEADER_LEN}..{len})"
        )));
    }
    let snapshot = Snapshot::decode(&payload)
        .map_err(|e| corrupt(format!("the payload does not decode: {e}")))?;
    if snapshot.last != last {
        return Err(corrupt(format!(
            "the header says it ends at {last:?}, the payload at {:?}",
            snapshot.last
        )));
    }
    Ok(Some(snapshot))
}

/// Rebuilds a core from what `store`, and the snapshot and the hard state
/// `backend` holds ([`read_snapshot`], [`read_hard_state`]; usually
/// [`Store::backend`], the directory of the log). The log must start at index 1, or, with a snapshot, at or
/// before the index after it.
///
/// When the store's log does not reach the snapshot, or holds its index
/// with another term, a reset of the store to the snapshot was cut short
/// (a follower that installed its leader's snapshot, or a leader whose
/// snapshot overtook its own fsyncs): it is completed first.
///
/// Fails with [`DriverError::AutoCompaction`] unless `store` was opened
/// with [`store_options`].
pub fn recover(
    config: Config,
    store: &Store,
    backend: &dyn Backend,
    now: Millis,
) -> Result<Core, DriverError> {
    let compact_min_bytes = store.options().compact_min_bytes;
    if compact_min_bytes != u64::MAX {
        return Err(DriverError::AutoCompaction { compact_min_bytes });
    }
    let storage = |doing| move |source| DriverError::Storage { doing, source };
    let stored = load_hard_state(backend)?;
    let snapshot = read_snapshot(backend)?;
    let no_state = stored.is_none() && snapshot.is_none() && store.last_position().index == 0;
    let mut hard_state = stored.unwrap_or_default();
    if no_state && config.bootstrap {
        // Record it: a later start without `bootstrap` is a voter's too.
        tracing::info!(dir = %dir_of(backend).display(), "no state and bootstrap set: founding a new cluster");
        hard_state.voter = true;
        write_hard_state(backend, &hard_state)?;
    }
    if let Some(s) = &snapshot {
        let last = store.last_position();
        let mut reset = last.index < s.last.index;
        if !reset && store.first_index() <= s.last.index {
            let at = store
                .read_log(s.last.index, 1)
                .map_err(storage("reading the log at start-up"))?;
            reset = at.first().is_none_or(|r| r.meta.position != s.last);
        }
        if reset {
            tracing::info!(
                index = s.last.index,
                store_last = last.index,
                "the log does not lead to the snapshot: resetting it to the snapshot"
            );
            // The store holds no key-value state of its own for this mode
            // (every entry is under RECORD_KEY): the snapshot file does.
            store
                .reset_to(s.last, Vec::new())
                .map_err(storage("resetting the log to the snapshot"))?;
        }
    }
    if snapshot.is_none() && store.first_index() > 1 {
        // Only a snapshot lets the store's log start later than 1;
        // restoring without it would start this node from an empty log.
        return Err(DriverError::MissingSnapshot {
            dir: dir_of(backend),
            first_index: store.first_index(),
        });
    }
    let last = store.last_position().index;
    // Below the snapshot only a tail is kept (`snapshot_keep` entries, at
    // most a quarter of `snapshot_bytes`): read no further back, and drop
    // the oldest of it as it passes the byte cap, so that a restart holds
    // no more than the running node did (whole segments stay on disk
    // below the snapshot until a later snapshot discards them).
    let snap_index = snapshot.as_ref().map_or(0, |s| s.last.index);
    let mut next = store.first_index();
    if snapshot.is_some() {
        next = next.max(snap_index.saturating_sub(config.snapshot_keep));
    }
    let tail_cap = match config.snapshot_bytes / 4 {
        0 => u64::MAX,
        cap => cap,
    };
    let mut entries = std::collections::VecDeque::new();
    let mut tail_bytes = 0u64;
    while next <= last {
        let records = store
            .read_log(next, 64) // a few at a time: values may be large
            .map_err(storage("reading the log at start-up"))?;
        if records.is_empty() {
            break;
        }
        next += records.len() as u64;
        for record in &records {
            let entry =
                LogEntry::from_record(record).map_err(|e| DriverError::UnreadableEntry {
                    index: record.meta.position.index,
                    message: e.to_string(),
                })?;
            if entry.position.index <= snap_index {
                tail_bytes += crate::size::entry_bytes(&entry) as u64;
            }
            entries.push_back(entry);
            while tail_bytes > tail_cap
                && entries
                    .front()
                    .is_some_and(|e| e.position.index < snap_index)
            {
                let dropped = entries.pop_front().expect("checked above");
                tail_bytes -= crate::size::entry_bytes(&dropped) as u64;
            }
        }
    }
    let entries = Vec::from(entries);
    Core::restore(config, now, hard_state, snapshot, entries).map_err(|source| {
        DriverError::Recover {
            dir: dir_of(backend),
            source,
        }
    })
}

enum Request {
    Client {
        op: ClientOp,
        ack: Option<AckMode>,
        reply: oneshot::Sender<Reply>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    Transfer {
        reply: oneshot::Sender<Option<NodeId>>,
    },
}

/// A cheap, cloneable way to talk to a running [`Driver`].
#[derive(Clone, Debug)]
pub struct Handle {
    requests: mpsc::Sender<Request>,
    replication: Arc<ReplicationLatency>,
    wakeups: Arc<std::sync::atomic::AtomicU64>,
}

/// The driver stopped (a storage failure, or shutdown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the replication driver has stopped")]
pub struct Stopped;

impl Handle {
    /// Submits a client operation and waits for the core's reply (the core
    /// bounds the wait with its read and write timeouts).
    pub async fn request(&self, op: ClientOp, ack: Option<AckMode>) -> Result<Reply, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Client { op, ack, reply })
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

    /// Per follower (by name), how long the appends this node sent it while
    /// leading took to become durable there: from queued here to its
    /// answer read here (see [`ReplicationLatency`]). Read without asking
    /// the driver, so it answers even when the driver is busy.
    pub fn replication_latency(&self) -> Vec<(String, Latencies)> {
        self.replication.snapshot()
    }

    /// How many times the driver's event loop has woken (for an input, a
    /// finished write or a timer) since it started: a loop that spins
    /// shows here. Read without asking the driver, like
    /// [`Handle::replication_latency`].
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks a leader to hand leadership to its most up-to-date follower
    /// (before a clean shutdown). Returns the chosen successor, if any.
    pub async fn transfer_leadership(&self) -> Result<Option<NodeId>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Transfer { reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }
}

/// A job for the writer thread.
struct Job {
    persist: Persist,
    /// Answered once the job (and every earlier one) is done, when the
    /// event loop must wait for it.
    done: Option<std::sync::mpsc::SyncSender<()>>,
}

/// At most this many ready inputs are fed to the core after the one the
/// event loop woke for, before its outputs are drained.
const MAX_BURST: usize = 256;

/// One input for the core, as the event loop received it.
enum Event {
    Request(Option<Request>),
    Peer(Option<PeerMessage>),
    /// A probe of this peer was refused ([`Output::Probe`]).
    PeerGone(NodeId),
    Written(Option<Result<Durable, DriverError>>),
    Tick,
}

/// The driver of one node's core.
pub struct Driver {
    core: Core,
    names: NodeNames,
    bus: Arc<PeerBus>,
    inbound: mpsc::Receiver<PeerMessage>,
    requests: mpsc::Receiver<Request>,
    store: Arc<Store>,
    backend: Arc<dyn Backend>,
    origin: Instant,
    timer: ReplicationTimer,
    wakeups: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("id", &self.core.id())
            .field("dir", &dir_of(&*self.backend))
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// A driver for `core` (built with [`recover`] at `origin`, the instant
    /// its [`Millis`] count from), persisting the log to `store` and the
    /// hard state and snapshots through `backend` (the one [`recover`] read
    /// them from; usually [`Store::backend`]), talking to peers over `bus` (whose inbound messages
    /// arrive on `inbound`). Run it with [`Driver::run`]; talk to it
    /// through the returned [`Handle`].
    pub fn new(
        core: Core,
        names: NodeNames,
        bus: Arc<PeerBus>,
        inbound: mpsc::Receiver<PeerMessage>,
        store: Arc<Store>,
        backend: Arc<dyn Backend>,
        origin: Instant,
    ) -> (Driver, Handle) {
        let (tx, requests) = mpsc::channel(4096);
        let replication = Arc::new(ReplicationLatency::new(names.clone(), core.id()));
        let driver = Driver {
            core,
            names,
            bus,
            inbound,
            requests,
            store,
            backend,
            origin,
            timer: ReplicationTimer::new(Arc::clone(&replication)),
            wakeups: Arc::default(),
        };
        let handle = Handle {
            requests: tx,
            replication,
            wakeups: Arc::clone(&driver.wakeups),
        };
        (driver, handle)
    }

    fn now(&self) -> Millis {
        Millis(self.origin.elapsed().as_millis() as u64)
    }

    /// Runs until every [`Handle`] is dropped (`Ok`) or storage fails
    /// (`Err`: the node must stop).
    pub async fn run(mut self) -> Result<(), DriverError> {
        let (jobs, job_rx) = std::sync::mpsc::channel::<Job>();
        let (durable_tx, mut durable) = mpsc::unbounded_channel();
        let writer = {
            let store = Arc::clone(&self.store);
            let backend = Arc::clone(&self.backend);
            std::thread::Builder::new()
                .name("lf-writer".into())
                .spawn(move || writer(&store, &*backend, &job_rx, &durable_tx))
                .expect("spawning the writer thread")
        };
        let mut pending: HashMap<u64, oneshot::Sender<Reply>> = HashMap::new();
        let mut next_request = 0u64;
        // Refused probes; the sender stays here, so `recv` never ends.
        let (gone_tx, mut gone) = mpsc::unbounded_channel();
        // Once every sender of `inbound` is gone, `recv` is ready at once,
        // for ever: stop polling it (the node goes on without peers).
        let mut peers_open = true;
        let result = loop {
            if let Err(e) = self.drain(&jobs, &mut pending, &gone_tx).await {
                break Err(e);
            }
            let deadline = self.origin + Duration::from_millis(self.core.next_timeout().0);
            let event = tokio::select! {
                request = self.requests.recv() => Event::Request(request),
                message = self.inbound.recv(), if peers_open => Event::Peer(message),
                written = durable.recv() => Event::Written(written),
                Some(peer) = gone.recv() => Event::PeerGone(peer),
                () = tokio::time::sleep_until(deadline.into()) => Event::Tick,
            };
            self.wakeups
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if matches!(event, Event::Peer(None)) {
                tracing::error!(
                    "the peer message channel closed: this node hears no peer any more"
                );
                peers_open = false;
            }
            if let Some(stop) = self.handle(event, &mut pending, &mut next_request) {
                break stop;
            }
            // Feed the core whatever else is already waiting before draining
            // its outputs: writes that arrived together then share one
            // persist and one append message per follower. Bounded, so the
            // outputs of a long burst are not held back.
            let mut stop = None;
            for _ in 0..MAX_BURST {
                let event = if let Ok(request) = self.requests.try_recv() {
                    Event::Request(Some(request))
                } else if let Ok(message) = self.inbound.try_recv() {
                    Event::Peer(Some(message))
                } else if let Ok(written) = durable.try_recv() {
                    Event::Written(Some(written))
                } else {
                    break;
                };
                stop = self.handle(event, &mut pending, &mut next_request);
                if stop.is_some() {
                    break;
                }
            }
            if let Some(stop) = stop {
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
        pending: &mut HashMap<u64, oneshot::Sender<Reply>>,
        next_request: &mut u64,
    ) -> Option<Result<(), DriverError>> {
        let now = self.now();
        match event {
            Event::Request(Some(Request::Client { op, ack, reply })) => {
                *next_request += 1;
                pending.insert(*next_request, reply);
                self.core.handle_client(now, *next_request, op, ack);
            }
            Event::Request(Some(Request::Status { reply })) => {
                let _ = reply.send(self.core.status(now));
            }
            Event::Request(Some(Request::Transfer { reply })) => {
                let _ = reply.send(self.core.transfer_leadership(now));
            }
            Event::Request(None) | Event::Written(None) => return Some(Ok(())),
            Event::Peer(Some(message)) => self.deliver(message),
            Event::Peer(None) => {}
            Event::PeerGone(peer) => self.core.peer_gone(now, peer),
            Event::Written(Some(Ok(Durable::Log(position)))) => {
                self.core.persisted(now, position);
            }
            Event::Written(Some(Ok(Durable::Snapshot(last)))) => {
                if let Some(replaced) = self.core.snapshot_persisted(now, last) {
                    // Not on the event loop: on a large state, freeing what
                    // only the old snapshot held takes a while.
                    tokio::task::spawn_blocking(move || drop(replaced));
                }
            }
            Event::Written(Some(Err(e))) => return Some(Err(e)),
            Event::Tick => self.core.tick(now),
        }
        None
    }

    /// A peer message: decoded and handed to the core, or dropped with a
    /// warning when it cannot be read (the sender is authenticated by the
    /// bus; a bad payload is a bug or a version skew, never worth a crash).
    fn deliver(&mut self, message: PeerMessage) {
        let Some(from) = self.names.id(&message.from) else {
            tracing::warn!(from = %message.from, "message from a node outside the cluster dropped");
            return;
        };
        match postcard::from_bytes::<PeerMsg>(&message.payload) {
            Ok(msg) => {
                self.timer.received(from, &msg, Instant::now());
                let now = self.now();
                self.core.handle_peer(now, from, msg);
            }
            Err(e) => {
                tracing::warn!(from = %message.from, error = %e, "unreadable peer message dropped");
            }
        }
    }

    /// Performs every pending output of the core.
    async fn drain(
        &mut self,
        jobs: &std::sync::mpsc::Sender<Job>,
        pending: &mut HashMap<u64, oneshot::Sender<Reply>>,
        gone: &mpsc::UnboundedSender<NodeId>,
    ) -> Result<(), DriverError> {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send { to, msg } => {
                    let Some(name) = self.names.name(to) else {
                        tracing::error!(to, "the core addressed an unknown node");
                        continue;
                    };
                    self.timer.sent(to, &msg, Instant::now());
                    let payload = postcard::to_allocvec(&msg).expect("peer messages serialize");
                    if let Err(e) = self.bus.send(name, payload) {
                        // The core hears of it and sends less at once.
                        tracing::debug!(to = name, error = %e, "peer message refused");
                        let now = self.now();
                        self.core.send_failed(now, to, &msg);
                    }
                }
                Output::Persist(persist) => {
                    let wait = persist.must_be_durable_before_next_output();
                    let (done, done_rx) = if wait {
                        let (tx, rx) = std::sync::mpsc::sync_channel(1);
                        (Some(tx), Some(rx))
                    } else {
                        (None, None)
                    };
                    if jobs.send(Job { persist, done }).is_err() {
                        return Err(writer_gone());
                    }
                    if let Some(rx) = done_rx {
                        // The hard state must be durable before anything
                        // that follows it leaves this node.
                        let ok = tokio::task::spawn_blocking(move || rx.recv().is_ok())
                            .await
                            .unwrap_or(false);
                        if !ok {
                            return Err(writer_gone());
                        }
                    }
                }
                Output::Probe { to } => self.probe(to, gone.clone()),
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

impl Driver {
    /// Probes `to`'s address on a task of its own, and reports a refusal
    /// on `gone`. (When the bus goes through a proxy, as under the test
    /// harness, the proxy answers for the node and nothing is refused.)
    fn probe(&self, to: NodeId, gone: mpsc::UnboundedSender<NodeId>) {
        let Some(addr) = self.names.name(to).and_then(|name| self.bus.address(name)) else {
            tracing::error!(to, "the core asked to probe an unknown node");
            return;
        };
        tokio::spawn(async move {
            match mimeo_wire::probe(addr, PROBE_WAIT).await {
                Ok(Probe::Refused) => {
                    let _ = gone.send(to);
                }
                Ok(Probe::NoRefusal) => {}
                Err(e) => tracing::debug!(to, %addr, error = %e, "probe not sent"),
            }
        });
    }
}

/// How long a probe waits for a refusal: longer than any round trip
/// between the nodes of a cluster should take.
const PROBE_WAIT: Duration = Duration::from_millis(250);

fn writer_gone() -> DriverError {
    DriverError::HardState {
        path: PathBuf::from(HARD_STATE_FILE),
        source: std::io::Error::other("the writer thread stopped after a storage failure"),
    }
}

/// What the writer thread made durable.
enum Durable {
    /// The log, up to this position.
    Log(LogPosition),
    /// The snapshot ending at this position.
    Snapshot(LogPosition),
}

/// The writer thread: performs persists in order, batching every job that
/// has queued up before one wait for durability.
///
/// A snapshot of the core's own applied view, and the discard of the log
/// segments it covers, run on a second thread: on a large state they take
/// seconds (encoding, writing and fsyncing the snapshot; folding the
/// segments into the store's own snapshot), and appends must not wait for
/// them. Nothing later depends on them: the core takes no other snapshot
/// until this one is reported, asks for the discard only after that, and
/// never truncates the log below its commit index, which the snapshot does
/// not pass. The store serializes a discard with a truncation itself. Only
/// a snapshot that replaces the log (one a follower installs from its
/// leader) is written in line, after the one in the background finished,
/// so the newer file is the one that stays.
fn writer(
    store: &Store,
    backend: &dyn Backend,
    jobs: &std::sync::mpsc::Receiver<Job>,
    durable: &mpsc::UnboundedSender<Result<Durable, DriverError>>,
) {
    std::thread::scope(|scope| {
        let mut background: Option<std::thread::ScopedJoinHandle<'_, bool>> = None;
        while let Ok(first) = jobs.recv() {
            let mut batch = vec![first];
            batch.extend(jobs.try_iter());
            let mut writer = BatchWriter {
                store,
                backend,
                durable,
                scope,
                background: &mut background,
                records: Vec::new(),
                appended: None,
            };
            let Some(acks) = writer.write(batch) else {
                return;
            };
            for ack in acks {
                let _ = ack.send(());
            }
        }
        // Leaving the scope joins the background work.
    });
}

/// Why a batch stopped.
enum Stop {
    /// Storage failed: report this and stop.
    Failed(DriverError),
    /// The background work failed and reported it already: stop.
    Reported,
}

impl From<DriverError> for Stop {
    fn from(e: DriverError) -> Stop {
        Stop::Failed(e)
    }
}

/// One batch of the writer thread (see [`writer`]): performs each job's
/// [`Persist`] through [`Persist::apply_to`], the one implementation of
/// the ordering rule.
///
/// Entries of consecutive jobs go to the store in one append (one write
/// system call); anything else in a job flushes them first, so every part
/// still happens in the order the core asked for.
struct BatchWriter<'scope, 'env, 'b> {
    store: &'scope Store,
    backend: &'scope dyn Backend,
    durable: &'scope mpsc::UnboundedSender<Result<Durable, DriverError>>,
    scope: &'scope std::thread::Scope<'scope, 'env>,
    background: &'b mut Option<std::thread::ScopedJoinHandle<'scope, bool>>,
    /// Entries not yet handed to the store.
    records: Vec<Record>,
    /// The last position handed to the store in this batch and still in
    /// the log (a later truncation or reset may remove it).
    appended: Option<LogPosition>,
}

fn storage(doing: &'static str) -> impl Fn(mimeo_storage::Error) -> DriverError {
    move |source| DriverError::Storage { doing, source }
}

impl<'scope> BatchWriter<'scope, '_, '_> {
    /// Performs `batch`, then waits once for the log's durability and
    /// reports it. Returns the jobs' completion senders, or `None` once
    /// storage failed (reported on `durable`): the writer must stop.
    fn write(&mut self, batch: Vec<Job>) -> Option<Vec<std::sync::mpsc::SyncSender<()>>> {
        let mut acks = Vec::new();
        let result = (|| -> Result<(), Stop> {
            for job in batch {
                job.persist.apply_to(self)?;
                acks.extend(job.done);
            }
            self.flush()?;
            if let Some(position) = self.appended {
                self.store
                    .wait_durable(position.index)
                    .map_err(storage("waiting for durability"))?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                if let Some(position) = self.appended {
                    let _ = self.durable.send(Ok(Durable::Log(position)));
                }
                Some(acks)
            }
            Err(Stop::Reported) => None,
            Err(Stop::Failed(e)) => {
                tracing::error!(error = %e, "the replication log cannot be written; stopping");
                let _ = self.durable.send(Err(e));
                None
            }
        }
    }

    /// Hands the entries gathered so far to the store.
    fn flush(&mut self) -> Result<(), DriverError> {
        if !self.records.is_empty() {
            self.appended = Some(
                self.store
                    .append(&self.records)
                    .map_err(storage("appending"))?,
            );
            self.records.clear();
        }
        Ok(())
    }

    /// Waits for the background work; `Err(Stop::Reported)` when it
    /// failed (and reported it).
    fn settle(&mut self) -> Result<(), Stop> {
        let ok = self.background.take().is_none_or(|work| {
            work.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        if ok {
            Ok(())
        } else {
            Err(Stop::Reported)
        }
    }

    /// Runs `work` in the background, after the earlier background work.
    fn spawn(
        &mut self,
        work: impl FnOnce() -> Result<(), DriverError> + Send + 'scope,
    ) -> Result<(), Stop> {
        self.settle()?;
        let durable = self.durable;
        let handle = std::thread::Builder::new()
            .name("lf-snapshot".into())
            .spawn_scoped(self.scope, move || match work() {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "a snapshot cannot be written; stopping");
                    let _ = durable.send(Err(e));
                    false
                }
            })
            .expect("spawning the snapshot thread");
        *self.background = Some(handle);
        Ok(())
    }
}

impl DurableState for BatchWriter<'_, '_, '_> {
    type Error = Stop;

    fn store_snapshot(&mut self, snapshot: Arc<Snapshot>, replace_log: bool) -> Result<(), Stop> {
        let (backend, durable) = (self.backend, self.durable);
        if !replace_log {
            // The core's own view: in the background (see `writer`).
            return self.spawn(move || {
                write_snapshot(backend, &snapshot)?;
                let _ = durable.send(Ok(Durable::Snapshot(snapshot.last)));
                Ok(())
            });
        }
        self.flush()?;
        self.settle()?;
        write_snapshot(backend, &snapshot)?;
        // Entries appended earlier in this batch are gone. The store keeps
        // no key-value state for this mode.
        self.store
            .reset_to(snapshot.last, Vec::new())
            .map_err(storage("resetting the log to a snapshot"))?;
        self.appended = None;
        let _ = durable.send(Ok(Durable::Snapshot(snapshot.last)));
        Ok(())
    }

    fn truncate_log(&mut self, from: u64) -> Result<(), Stop> {
        self.flush()?;
        // Positions at or past `from` are gone; a durability notice for
        // them must not be sent.
        self.store
            .truncate_from(from)
            .map_err(storage("truncating the log"))?;
        if self.appended.is_some_and(|p| p.index >= from) {
            self.appended = None;
        }
        Ok(())
    }

    fn append_log(&mut self, entries: Vec<LogEntry>) -> Result<(), Stop> {
        self.records.extend(entries.iter().map(|e| e.to_record(0)));
        Ok(())
    }

    fn store_hard_state(&mut self, state: HardState) -> Result<(), Stop> {
        self.flush()?;
        write_hard_state(self.backend, &state)?;
        Ok(())
    }

    fn discard_log_before(&mut self, index: u64) -> Result<(), Stop> {
        let store = self.store;
        self.spawn(move || {
            let stats = store
                .discard_before(index)
                .map_err(storage("discarding the log before a snapshot"))?;
            if stats.segments_removed > 0 {
                tracing::debug!(
                    before = index,
                    first_index = store.first_index(),
                    segments = stats.segments_removed,
                    "discarded log segments covered by the snapshot"
                );
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mimeo_storage::FsBackend;

    #[test]
    fn names_map_to_ids_in_sorted_order_on_every_node() {
        let a = NodeNames::new(vec!["n2".into(), "n1".into(), "n3".into()]);
        let b = NodeNames::new(vec!["n3".into(), "n2".into(), "n1".into()]);
        assert_eq!(a, b);
        assert_eq!(a.id("n1"), Some(1));
        assert_eq!(a.id("n3"), Some(3));
        assert_eq!(a.id("n4"), None);
        assert_eq!(a.name(2), Some("n2"));
        assert_eq!(a.name(0), None);
        assert_eq!(a.name(4), None);
    }

    #[test]
    fn the_hard_state_survives_a_rewrite_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsBackend::new(dir.path()).unwrap();
        assert_eq!(read_hard_state(&fs).unwrap(), HardState::default());
        let state = HardState {
            term: 7,
            voted_for: Some(2),
            voter: true,
        };
        write_hard_state(&fs, &state).unwrap();
        assert_eq!(read_hard_state(&fs).unwrap(), state);
        std::fs::write(dir.path().join(HARD_STATE_FILE), b"{\"term\":").unwrap();
        let err = read_hard_state(&fs).unwrap_err().to_string();
        assert!(
            err.contains(HARD_STATE_FILE) && err.contains("not a valid hard state"),
            "{err}"
        );
    }

    fn put(term: u64, index: u64, key: &str) -> LogEntry {
        LogEntry {
            position: LogPosition::new(term, index),
            command: crate::Command::Put {
                key: key.into(),
                value: format!("v{index}").into(),
            },
        }
    }

    fn snapshot_of(entries: &[LogEntry]) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for e in entries {
            if let crate::Command::Put { key, value } = &e.command {
                snapshot
                    .kv
                    .insert(key.clone(), (Some(value.clone()), e.position));
            }
            snapshot.last = e.position;
        }
        snapshot
    }

    #[test]
    fn a_snapshot_survives_a_restart_and_a_corrupt_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsBackend::new(dir.path()).unwrap();
        let log: Vec<LogEntry> = (1..=30)
            .map(|i| put(1, i, &format!("k{}", i % 4)))
            .collect();
        write_hard_state(
            &fs,
            &HardState {
                term: 1,
                voted_for: None,
                voter: true,
            },
        )
        .unwrap();
        let options = store_options(mimeo_storage::Options {
            segment_bytes: 256,
            ..mimeo_storage::Options::default()
        });
        {
            let store = Store::open(dir.path(), options.clone()).unwrap();
            let records: Vec<Record> = log.iter().map(|e| e.to_record(0)).collect();
            store.append(&records).unwrap();
            store.sync().unwrap();
            let snapshot = snapshot_of(&log[..20]);
            write_snapshot(&fs, &snapshot).unwrap();
            assert_eq!(read_snapshot(&fs).unwrap(), Some(snapshot));
            store.discard_before(18).unwrap();
            assert!(store.first_index() > 1);
        }
        let mut config = Config::new(1, vec![2, 3]);
        config.snapshot_keep = 2;
        let store = Store::open(dir.path(), options.clone()).unwrap();
        let core = recover(config.clone(), &store, &fs, Millis(0)).unwrap();
        assert_eq!(core.snapshot().unwrap().last, LogPosition::new(1, 20));
        assert_eq!(core.applied_index(), 20);
        assert_eq!(core.first_index(), 19);
        assert_eq!(core.last_position(), LogPosition::new(1, 30));
        assert_eq!(
            core.applied_value(b"k0"),
            Some((Some(&b"v20"[..]), LogPosition::new(1, 20)))
        );
        drop(store);

        // One flipped payload byte.
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_snapshot(&fs).unwrap_err().to_string();
        assert!(
            err.contains(SNAPSHOT_FILE) && err.contains("payload checksum"),
            "{err}"
        );
        let store = Store::open(dir.path(), options.clone()).unwrap();
        let err = recover(config, &store, &fs, Millis(0))
            .unwrap_err()
            .to_string();
        drop(store);
        assert!(
            err.contains(SNAPSHOT_FILE) && err.contains("not a valid snapshot"),
            "{err}"
        );
        // A truncated header too.
        std::fs::write(&path, &bytes[..10]).unwrap();
        let err = read_snapshot(&fs).unwrap_err().to_string();
        assert!(err.contains("shorter than its 44-byte header"), "{err}");

        // No snapshot at all beside a log that starts after index 1: the
        // directory is incomplete, and the node must not start empty.
        std::fs::remove_file(&path).unwrap();
        let store = Store::open(dir.path(), options).unwrap();
        let err = recover(Config::new(1, vec![2, 3]), &store, &fs, Millis(0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(SNAPSHOT_FILE)
                && err.contains("is missing")
                && err.contains("starts at index"),
            "{err}"
        );
    }

    /// The files keep the bytes earlier builds wrote with `std::fs` (the
    /// layout of the module docs), now that they are streamed through a
    /// backend: an existing data directory opens unchanged.
    #[test]
    fn the_files_keep_the_bytes_earlier_builds_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsBackend::new(dir.path()).unwrap();
        // Larger than the write buffer, so it is streamed in pieces.
        let log: Vec<LogEntry> = (1..=3000)
            .map(|i| put(2, i, &format!("key-{i:05}-{}", "x".repeat(40))))
            .collect();
        let snapshot = snapshot_of(&log);
        write_snapshot(&fs, &snapshot).unwrap();
        let payload = snapshot.encode();
        assert!(payload.len() > 2 * mimeo_storage::REPLACE_BUFFER_BYTES);
        let mut expected = Vec::new();
        expected.extend_from_slice(b"MIMEOLFS");
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        expected.extend_from_slice(&3000u64.to_le_bytes());
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        let header_crc = crc32c::crc32c(&expected);
        expected.extend_from_slice(&header_crc.to_le_bytes());
        expected.extend_from_slice(&payload);
        let written = std::fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap();
        assert!(written == expected, "the snapshot file's bytes changed");
        assert_eq!(read_snapshot(&fs).unwrap(), Some(snapshot));

        let state = HardState {
            term: 7,
            voted_for: Some(2),
            voter: true,
        };
        write_hard_state(&fs, &state).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(HARD_STATE_FILE)).unwrap(),
            br#"{"term":7,"voted_for":2,"voter":true}"#
        );
        // No temporary file is left.
        let mut names = fs.list().unwrap();
        names.sort();
        assert_eq!(names, [SNAPSHOT_FILE, HARD_STATE_FILE]);
    }

    #[test]
    fn a_store_that_compacts_on_its_own_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsBackend::new(dir.path()).unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let err = recover(Config::new(1, vec![2, 3]), &store, &fs, Millis(0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("compacts on its own") && err.contains("store_options"),
            "{err}"
        );
        drop(store);
        let store = Store::open(dir.path(), store_options(Options::default())).unwrap();
        recover(Config::new(1, vec![2, 3]), &store, &fs, Millis(0)).unwrap();
    }

    #[test]
    fn an_undecodable_entry_is_refused_with_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsBackend::new(dir.path()).unwrap();
        let store = Store::open(dir.path(), store_options(Options::default())).unwrap();
        let mut bad = put(1, 2, "k").to_record(0);
        bad.mutation = mimeo_storage::Mutation::Put {
            key: crate::RECORD_KEY.to_vec(),
            value: vec![0xff; 3],
        };
        store.append(&[put(1, 1, "k").to_record(0), bad]).unwrap();
        let err = recover(Config::new(1, vec![2, 3]), &store, &fs, Millis(0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("log entry 2 cannot be decoded") && err.contains("data directory"),
            "{err}"
        );
    }

    #[test]
    fn recovery_completes_a_reset_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsBackend::new(dir.path()).unwrap();
        write_hard_state(
            &fs,
            &HardState {
                term: 3,
                voted_for: None,
                voter: true,
            },
        )
        .unwrap();
        let store = Store::open(dir.path(), store_options(Options::default())).unwrap();
        // The old, divergent log: index 5 has term 1.
        let old: Vec<Record> = (1..=6).map(|i| put(1, i, "old").to_record(0)).collect();
        store.append(&old).unwrap();
        // The leader's snapshot ends at 5 with term 3, and was made durable
        // before the crash cut the reset short.
        let snapshot = snapshot_of(&[put(3, 5, "new")]);
        write_snapshot(&fs, &snapshot).unwrap();
        let core = recover(Config::new(2, vec![1, 3]), &store, &fs, Millis(0)).unwrap();
        assert_eq!(core.last_position(), LogPosition::new(3, 5));
        assert_eq!(store.last_position(), LogPosition::new(3, 5));
        assert_eq!(store.first_index(), 6);
        assert_eq!(core.applied_value(b"old"), None);
        assert!(core.applied_value(b"new").is_some());
    }
}
