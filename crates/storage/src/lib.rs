//! The Mimeo storage engine: a durable, segmented, checksummed append-only
//! log of replication [`Record`]s, and the key-value state they produce,
//! kept as an in-memory index over the log (Bitcask style).
//!
//! Every replicator in Mimeo persists through it. A record carries what the
//! replicators need: a [`LogPosition`] (term and index) for leader-follower,
//! an origin node and sequence number for multi-leader, and an opaque
//! per-value version (an HLC timestamp or a causal context). The store never
//! interprets versions; it keeps the latest record per key, including
//! deletes, which stay as tombstones so that replicas can compare them.
//!
//! # Using it
//!
//! ```
//! use mimeo_storage::{FsyncMode, LogPosition, Mutation, Options, Record, RecordMeta, Store};
//!
//! let dir = std::env::temp_dir().join(format!("mimeo-storage-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let record = |index: u64, mutation: Mutation| Record {
//!     meta: RecordMeta {
//!         position: LogPosition::new(1, index),
//!         origin: 7,
//!         seq: index,
//!         version: Vec::new(),
//!     },
//!     mutation,
//! };
//! let put = |key: &str, value: &str| Mutation::Put { key: key.into(), value: value.into() };
//!
//! let store = Store::open(&dir, Options { fsync: FsyncMode::Batch, ..Options::default() })?;
//! // Records continue the log: index = last_position().index + 1.
//! let last = store.append(&[
//!     record(1, put("colour", "red")),
//!     record(2, put("shape", "square")),
//!     record(3, put("colour", "blue")),
//! ])?;
//! // Under `batch`, a write is acknowledged once a (shared) fsync covers it.
//! store.wait_durable(last.index)?;
//!
//! let colour = store.get(b"colour")?.expect("written");
//! assert_eq!(colour.value.as_deref(), Some(&b"blue"[..]));
//! assert_eq!(colour.meta.position, LogPosition::new(1, 3));
//!
//! // A deposed leader drops its divergent suffix: older values come back.
//! assert_eq!(store.truncate_from(3)?, 1);
//! assert_eq!(store.get(b"colour")?.unwrap().value.as_deref(), Some(&b"red"[..]));
//!
//! // Deletes leave tombstones.
//! store.append(&[record(3, Mutation::Delete { key: b"shape".to_vec() })])?;
//! assert_eq!(store.get(b"shape")?.unwrap().value, None);
//!
//! // Compaction folds the log into a snapshot; the log then starts after it.
//! let stats = store.compact()?;
//! assert_eq!(stats.floor.index, 3);
//! assert!(matches!(store.read_log(1, 10), Err(mimeo_storage::Error::Compacted { .. })));
//!
//! // Reopening recovers everything.
//! drop(store);
//! let store = Store::open(&dir, Options::default())?;
//! assert_eq!(store.last_position(), LogPosition::new(1, 3));
//! assert_eq!(store.scan(..)?.len(), 2); // `colour` and the `shape` tombstone
//! # drop(store);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), mimeo_storage::Error>(())
//! ```
//!
//! # Durability
//!
//! [`Options::fsync`] chooses when the log is fsynced ([`FsyncMode`]):
//!
//! - `always`: [`Store::append`] returns after an fsync covering its records
//!   (one fsync per call: writers taking turns to append do not share
//!   fsyncs, so pass several records per call, or use `batch`);
//! - `batch` (the default) is group commit: `append` returns after the
//!   write, and [`Store::wait_durable`] blocks until an fsync covers the
//!   index. Concurrent waiters share one fsync, and nobody is released
//!   before the fsync that covers them;
//! - `never`: nothing is fsynced on the write path (segments are still
//!   fsynced when they are closed, and [`Store::sync`] fsyncs on demand). A
//!   power cut loses recent writes; a process crash does not (except on a
//!   [`PowerLossBackend`], which makes a crash a power cut).
//!
//! A failed write or fsync poisons the store: after an fsync error the
//! kernel may have dropped the unwritten pages, or kept them in the page
//! cache marked clean, so what reached the disk is unknown. Every later
//! write fails with [`Error::Poisoned`] ([`Store::is_poisoned`] tells), and
//! the store records durably, in the file `synced-through`, the index up
//! to which every record had been fsynced. Reopening drops the records
//! after it (logged, and counted in
//! [`Stats::unsynced_records_dropped_at_open`]): the page cache may still
//! show them, and an fsync at open may then succeed without writing them,
//! so they cannot be trusted (PostgreSQL's lesson of 2018). They were never
//! acknowledged as durable. Under `fsync = never` nothing waits for an
//! fsync, so records acknowledged before it may be dropped too, as a power
//! cut would.
//!
//! The API is synchronous and thread-safe: share one [`Store`] behind an
//! `Arc` and call it from async code through `spawn_blocking`.
//!
//! [`Store::stats`] reports sizes and counters, and how long the store's
//! writes and fsyncs took since open ([`Stats::write_latency`],
//! [`Stats::fsync_latency`]: [`Latencies`] histograms). A `mimeo` node
//! exports them as `mimeo_storage_write_seconds` and
//! `mimeo_storage_fsync_seconds`.
//!
//! # On-disk format
//!
//! The store keeps these files in its data directory, and leaves any other
//! file there alone:
//!
//! | name                                | what                                        |
//! |-------------------------------------|---------------------------------------------|
//! | `seg-<first index>.log`             | a log segment, e.g. `seg-00000000000000000001.log` |
//! | `snap-<floor index>.snap`           | the snapshot: the state up to the floor    |
//! | `snap-<floor index>.snap.tmp`       | a snapshot being written; removed at open  |
//! | `LOCK`                              | the directory lock; holds the holder's pid as text |
//! | `synced-through`                    | written when the store is poisoned; read and removed at open |
//!
//! Indexes in names are 20 decimal digits, so names sort like indexes. All
//! integers in headers are little-endian; checksums are CRC32C
//! (Castagnoli).
//!
//! **Segment header** (32 bytes):
//!
//! ```text
//! 0   8  magic "MIMEOLOG"
//! 8   4  format version, u32 (2; version 1 is still read)
//! 12  4  reserved, zero
//! 16  8  index of the segment's first record, u64 (matches the name)
//! 24  4  CRC32C of bytes 0..24, u32
//! 28  4  reserved, zero
//! ```
//!
//! It is followed by **frames**, back to back, one per record, indexes
//! contiguous from the first, and then, in the active segment, by the space
//! written ahead of them: bytes `0xFF` in a version 2 segment, zeros in a
//! version 1 segment. That is the only difference between the versions: a
//! frame header of `0xFF` bytes announces a length no frame has, so in a
//! version 2 segment zeros where a frame belongs are never unwritten space
//! but a record that was written and lost (see *Recovery*). A build writes
//! new segments as version 2 and goes on appending to a version 1 segment
//! with zeros ahead, as version 1 did; once that segment rolls, the log is
//! version 2.
//!
//! ```text
//! 0   4  payload length n, u32 (1 ..= MAX_RECORD_BYTES + 8)
//! 4   4  CRC32C of the payload, u32
//! 8   n  payload: synced_through u64, then the postcard encoding of the Record
//! ```
//!
//! `synced_through` is an index up to which every record had been fsynced
//! when this one was written (see *Recovery*). The postcard encoding follows
//! the field order of [`Record`], [`RecordMeta`] and [`LogPosition`]
//! (integers as varints, byte strings as a varint length and the bytes,
//! [`Mutation`] as a varint variant number, `Put = 0`, `Delete = 1`), so
//! that order is part of the format.
//!
//! **Snapshot** (`snap-<floor>.snap`): a 48-byte header
//!
//! ```text
//! 0   8  magic "MIMEOSNP"
//! 8   4  format version, u32 (1)
//! 12  4  flags, zero
//! 16  8  floor index, u64 (matches the name)
//! 24  8  floor term, u64
//! 32  8  number of entries, u64
//! 40  4  CRC32C of bytes 0..40, u32
//! 44  4  reserved, zero
//! ```
//!
//! followed by one frame per key, in strictly increasing key order, whose
//! payload is the postcard encoding of `{ key: bytes, value: Option<bytes>,
//! meta: RecordMeta }` (`value: None` for a tombstone). The log continues at
//! `floor + 1`; segments at or below the floor are leftovers of a
//! compaction cut short and are removed at open.
//!
//! **Synced-through file** (`synced-through`, 32 bytes), written (temporary
//! file, fsync, rename, fsync of the directory) only when a write or fsync
//! fails:
//!
//! ```text
//! 0   8  magic "MIMEOSYN"
//! 8   4  format version, u32 (1)
//! 12  4  reserved, zero
//! 16  8  synced-through index, u64: every record up to it had been fsynced
//! 24  4  CRC32C of bytes 0..24, u32
//! 28  4  reserved, zero
//! ```
//!
//! At open, records after that index are removed (as a truncation is),
//! then the file is removed. A store that cannot read it refuses to start
//! with [`Error::Corrupt`]. Directories written before this file existed
//! simply have none; nothing else in the format changed, so the format
//! version stays 1.
//!
//! ## Versioning
//!
//! Each file kind carries its own format version in its header (segment:
//! 2; snapshot and synced-through: 1). A change to the bytes a file holds,
//! including the postcard encoding of [`Record`] (a reordered or inserted
//! [`Mutation`] variant, a moved field), bumps that file's version. A
//! build keeps reading every older version it has ever written (as version
//! 2 segments read version 1 ones) and writes only the newest, so a data
//! directory upgrades in place, file by file, as segments roll and
//! snapshots are rewritten; a build refuses to open a file of a version
//! newer than it knows, saying which versions it reads, so downgrading
//! past a format change fails loudly instead of misreading. `tests/golden.rs` pins a segment and a
//! snapshot byte for byte against `testdata/`: a change that fails it needs
//! a version bump, not a regenerated file.
//!
//! ## How files change
//!
//! - **Append**: the frames of one call are written with one positional
//!   write per segment. The active segment is kept
//!   [`Options::preallocate_bytes`] of `0xFF` filler ahead of its records
//!   (written when fewer than half remain), so a group commit's fsync changes
//!   neither the file's blocks nor its length; a closed segment is cut back
//!   to its records before its fsync.
//! - **Segment roll**: once a segment would pass [`Options::segment_bytes`],
//!   it is fsynced, then the next one is created, its header written and
//!   fsynced, and the directory fsynced. Only the last segment can
//!   therefore hold unsynced records.
//! - **Compaction**: the closed segments and the old snapshot are folded
//!   into `snap-<floor>.snap.tmp`, which is fsynced, renamed into place,
//!   and the directory fsynced; only then are the old files removed (and
//!   the directory fsynced again). A crash at any point leaves either the
//!   old or the new snapshot in force, with every record it needs.
//! - **Prefix discard** ([`Store::discard_before`]): a compaction that
//!   folds only the closed segments wholly below an index, for a
//!   replicator that keeps its own snapshot and needs the log only after
//!   it.
//! - **Reset** ([`Store::reset_to`]): the log is truncated to the floor as
//!   below, then a snapshot of the given state is written and renamed into
//!   place as in compaction, then the old snapshot is removed.
//! - **Truncation** ([`Store::truncate_from`]): whole segments are removed
//!   newest first, each removal made durable before the next, then the
//!   segment holding the cut is shortened and fsynced, so a crash leaves a
//!   contiguous log.
//!
//! ## What the store assumes of the disk
//!
//! - When `fdatasync` (`File::sync_data`) returns success, the file's bytes
//!   and length survive a power cut; when an fsync of the directory
//!   returns, earlier creates, renames and removes in it do. Nothing else is
//!   durable: a file created, renamed or removed since the last directory
//!   fsync may come back or vanish.
//! - Sector writes are **not** assumed atomic. Of the bytes written since
//!   the last fsync, any part may be lost, persisted, or torn into garbage,
//!   in any order (a later sector may survive where an earlier one did not).
//! - A write damages no byte outside the range it writes ("powersafe
//!   overwrite", as SQLite calls it); in particular it never damages bytes
//!   that were already fsynced. The store only ever writes past the end of
//!   the data it has (or into files no one reads yet).
//! - An fsync that fails leaves the file in an unknown state: the store
//!   stops writing instead of retrying.
//! - Bit rot is detected by the checksums, when records are read and at
//!   open; it is not corrected.
//! - One process uses a directory at a time, and the store makes sure of
//!   it: [`Store::open`] takes an exclusive `flock` on the file `LOCK`
//!   ([`DirLock`]) and holds it until the store is dropped; a second open,
//!   from any process, fails with [`Error::Locked`] naming the directory
//!   and the holder's pid. The lock is the `flock`, not the file: a `LOCK`
//!   left by a crashed process is simply taken over, and deleting it while
//!   held would let a second process in.
//!
//! ## Recovery
//!
//! At open the store removes temporary files and superseded snapshots,
//! loads the newest snapshot (which must be intact: it was fsynced before it
//! was renamed into place) and replays the segments after it. Each segment
//! header must be intact and match its name; records must decode, have
//! contiguous indexes and non-decreasing terms. If a poisoned store left a
//! `synced-through` file, every record up to its index must be there
//! intact (the *synced-through watermark*; see *Durability*). Then:
//!
//! - filler where a frame header belongs, up to the end of the file (`0xFF`
//!   bytes, or zeros in a version 1 segment), is the end of the segment's
//!   records; if the log ends there below the synced-through watermark,
//!   acknowledged records are missing and start-up is refused with
//!   [`Error::Corrupt`];
//! - zeros where a frame belongs in a version 2 segment are damage, treated
//!   as below: an all-zero record is never passed over as unwritten space;
//! - damage in any segment but the last refuses start-up with
//!   [`Error::Corrupt`] naming the file and byte offset;
//! - damage in the last segment where record `k` belongs is a **torn
//!   write** unless an intact frame later in that segment has
//!   `synced_through >= k`, or `k` is at or below the synced-through
//!   watermark, either of which proves record `k` had been fsynced: then
//!   it is corruption and start-up is refused. A torn write is cut off,
//!   logged with `tracing::warn!` and counted in
//!   [`Stats::truncated_tail_bytes_at_open`]; it only ever holds records no
//!   fsync had covered, so nothing acknowledged under `always` or `batch`
//!   is lost. (The same rule means bit rot in records that no later record
//!   vouches for, in the last group commit of the last segment, cannot be
//!   told from a torn write and is truncated too, with the warning; so is
//!   an acknowledged last record that was zeroed, when nothing written
//!   after it vouches for it: it is counted and logged, never silent.)
//! - a last segment whose header is damaged and that holds no intact frame
//!   was torn while being created, and is removed.
//!
//! # Disk use and start-up time
//!
//! Compaction (explicit with [`Store::compact`], automatic in the
//! background once [`Options::compact_min_bytes`] and
//! [`Options::compact_min_garbage_ratio`] are reached) keeps disk use, and
//! so the bytes read at open, within about `live bytes / (1 - ratio) +
//! compact_min_bytes` plus the active segment. Tombstones are kept: the
//! replicators need them to compare deletes.
//!
//! # Testing against power cuts
//!
//! All I/O goes through the [`Backend`] and [`BackendFile`] traits.
//! [`FsBackend`] is the real file system; [`sim::SimBackend`] keeps a live
//! and a durable image of every file and simulates power cuts at any
//! operation, so tests (here and in the replicator crates) can check that
//! acknowledged writes survive.
//!
//! [`PowerLossBackend`] brings the same fault to a real process: it works
//! on a real directory but keeps every byte not yet fsynced in process
//! memory, and writes it to the file only at `sync_data`. Killing the
//! process (SIGKILL) then loses exactly the unsynced writes, as a power cut
//! would, which a plain SIGKILL never does (the page cache survives it).
//! The node turns it on with `simulate_power_loss = true`, and the harness
//! uses it for its power-loss fault. It is a test aid: file contents and
//! lengths are held back until `sync_data`, and creates, renames and
//! removes until [`Backend::sync_dir`] (a kill forgets a file created
//! since, even one whose bytes were fsynced), and under `fsync = never`
//! the memory it holds grows up to about one segment before the segment's
//! close flushes it.
//!
//! # Atomic batches
//!
//! An append is not atomic across a crash (the store keeps a prefix of
//! it). A replicator that changes several keys together builds a
//! [`CommitBatch`], seals it with a commit record
//! ([`Store::append_committed`]), and at start-up calls
//! [`Store::recover_committed`], which drops the records after the last
//! commit record: the store then holds whole batches only.
//!
//! # Metadata beside the log
//!
//! A replicator's own durable files (the leader-follower hard state and
//! snapshot; multi-leader origin vectors; leaderless hints and trees) go
//! through the same [`Backend`] as the log, usually [`Store::backend`],
//! under names of their own, so the power-cut tests above cover them:
//!
//! - [`Backend::write_file_durably`] replaces a small file atomically
//!   (temporary file, fsync, rename, fsync of the directory);
//!   [`Backend::replace_file_with`] does the same for a large one,
//!   streamed through a bounded buffer;
//! - [`Backend::read_file`] reads a small file whole (`None` when it does
//!   not exist); [`Backend::open`] and a [`FileCursor`] read a large one
//!   in pieces.
//!
//! After a crash a file replaced this way holds its old contents or its
//! new ones, whole; a leftover `<name>.tmp` is the next replacement's to
//! truncate. The file's own format (magic, version, checksums) is the
//! caller's.

mod backend;
mod commit;
mod compaction;
mod error;
mod fault;
mod format;
mod latency;
mod lock;
mod options;
mod power_loss;
mod record;
mod recovery;
pub mod sim;
mod state;
mod store;

pub use backend::{Backend, BackendFile, FileCursor, FsBackend, REPLACE_BUFFER_BYTES};
pub use commit::{CommitBatch, CommitRecovery, SealedBatch};
pub use error::{Error, Result};
pub use fault::{FsyncFaultBackend, FAIL_FSYNC_FILE};
pub use format::MAX_RECORD_BYTES;
pub use latency::{Latencies, LatencyHistogram, LATENCY_BOUNDS_US};
pub use lock::{DirLock, LOCK_FILE};
pub use options::{FsyncMode, Options, ParseFsyncModeError};
pub use power_loss::{PowerLossBackend, STAGING_DIR_PREFIX};
pub use record::{Entry, LogPosition, Mutation, Record, RecordMeta};
pub use store::{CompactionStats, Stats, Store};
