//! The store: appends, group commit, reads, truncation.
//!
//! Locks, always taken in this order:
//! 1. `maintenance`: one compaction or truncation at a time;
//! 2. `writer`: the active segment and the end of the log; held while
//!    frames are written, so appends are ordered;
//! 3. `state` (read-write): the index; writers hold it only to publish;
//! 4. `sync`: the group-commit bookkeeping, never held across I/O.

use std::fmt;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::backend::{Backend, BackendFile, FsBackend};
use crate::error::{corrupt, io_err, Error};
use crate::format::{
    decode_synced_through, encode_segment_header, encode_synced_through, parse_frame,
    push_log_frame, segment_name, Frame, FILLER, FRAME_HEADER_LEN, MAX_RECORD_BYTES,
    SEGMENT_HEADER_LEN, SYNCED_THROUGH_FILE, SYNCED_THROUGH_LEN,
};
use crate::latency::{Latencies, LatencyHistogram};
use crate::lock::DirLock;
use crate::options::{FsyncMode, Options};
use crate::record::{Entry, LogPosition, Mutation, Record};
use crate::recovery::{self, decode_record, Active};
use crate::state::{read_value_at, Loc, SegmentInfo, Slot, State};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// A snapshot of the store's counters, from [`Store::stats`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Keys whose latest entry is a value (tombstones are not counted).
    pub live_keys: usize,
    /// Segment files in use.
    pub segments: usize,
    /// Bytes in segment files and the snapshot.
    pub disk_bytes: u64,
    /// Bytes of records superseded by later records (at most what
    /// compaction can reclaim).
    pub garbage_bytes: u64,
    /// The last record in the log (the compaction floor if the log after it
    /// is empty).
    pub last_position: LogPosition,
    /// Every record up to this index is durable.
    pub durable_index: u64,
    /// The lowest index [`Store::read_log`] can return.
    pub first_index: u64,
    /// Compactions completed since open.
    pub compactions: u64,
    /// Bytes cut from the tail of the log when it was opened: torn writes,
    /// and records dropped because a write or fsync had failed before
    /// them ([`unsynced_records_dropped_at_open`](Stats::unsynced_records_dropped_at_open)).
    pub truncated_tail_bytes_at_open: u64,
    /// Records dropped at open because they were written after the last
    /// fsync that succeeded before the store was poisoned: the disk may
    /// never have had them (see the crate docs, *Recovery*).
    pub unsynced_records_dropped_at_open: u64,
    /// How long each [`Store::append`] took to write its records, since
    /// open: the write system calls and the filler written ahead, and, when
    /// a segment fills, closing it and creating the next one (their
    /// fsyncs included). Not the group-commit fsync.
    pub write_latency: Latencies,
    /// How long each group-commit fsync of the log took (one however many
    /// records it covered), since open. Segment rolls are counted in
    /// [`write_latency`](Stats::write_latency).
    pub fsync_latency: Latencies,
}

/// What one compaction did, from [`Store::compact`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionStats {
    /// The compaction floor afterwards: the snapshot holds the state up to
    /// this position, and the log starts after it.
    pub floor: LogPosition,
    /// Segment files folded into the snapshot and removed.
    pub segments_removed: usize,
    /// Entries (keys, tombstones included) in the snapshot.
    pub entries: usize,
    /// Disk bytes (segments plus snapshot) before.
    pub bytes_before: u64,
    /// Disk bytes after.
    pub bytes_after: u64,
}

/// The end of the log, owned by whoever holds the `writer` lock.
pub(crate) struct Writer {
    /// The segment appends go to; `None` until the first append after a
    /// seal, or in an empty store.
    pub(crate) active: Option<Active>,
    pub(crate) last: LogPosition,
}

/// Group-commit bookkeeping.
struct SyncState {
    /// Every record up to here has been handed to the OS.
    written: u64,
    /// Every record up to here is durable.
    durable: u64,
    /// An fsync is in flight.
    syncing: bool,
    poisoned: bool,
    /// Bumped by truncation, so an fsync that started before it does not
    /// vouch for records written after it.
    epoch: u64,
    /// The segment an fsync must cover to make `written` durable (earlier
    /// segments were fsynced when they were closed).
    active: Option<(Arc<dyn BackendFile>, PathBuf)>,
}

pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) options: Options,
    /// Held for a whole compaction or truncation: one at a time.
    pub(crate) maintenance: Mutex<()>,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) state: RwLock<State>,
    sync: Mutex<SyncState>,
    /// Signalled whenever `sync` changes in a way a waiter cares about.
    synced: Condvar,
    pub(crate) compactions: AtomicU64,
    truncated_tail_bytes_at_open: u64,
    unsynced_records_dropped_at_open: u64,
    write_latency: LatencyHistogram,
    fsync_latency: LatencyHistogram,
    auto_compacting: AtomicBool,
    /// After an automatic compaction fails, the next is not tried until the
    /// log has more segments than this (0 when the last one succeeded): a
    /// persistent failure, such as a full disk, is retried once per new
    /// segment rather than on every append.
    auto_compact_hold: AtomicUsize,
    background: Mutex<Option<JoinHandle<()>>>,
    /// The data directory's lock, held as long as the store is open
    /// (`None` for backends that take none).
    _lock: Option<DirLock>,
}

/// The storage engine: a durable, segmented log of [`Record`]s plus the
/// key-value state they produce. See the [crate documentation](crate) for
/// how to use it and how it lays data out on disk.
///
/// `Store` is `Send + Sync`; share it behind an `Arc`. Every method blocks
/// on disk I/O: from async code call it through `spawn_blocking`.
pub struct Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.path(""))
            .field("options", &self.inner.options)
            .field("last_position", &self.last_position())
            .field("durable_index", &self.durable_index())
            .finish_non_exhaustive()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(handle) = lock(&self.inner.background).take() {
            // The thread logs its own errors; a panic in it is not ours to
            // re-raise in drop.
            let _ = handle.join();
        }
    }
}

/// Where one appended frame went: segment (by first index), offset, length.
type Placed = (u64, u64, u64);

/// Segments created by one append: first index, name, file.
type NewSegments = Vec<(u64, String, Arc<dyn BackendFile>)>;

impl Store {
    /// Opens the store in `dir`, creating the directory if missing, and
    /// recovers: loads the newest snapshot, replays the segments after it,
    /// truncates a torn write at the tail of the log (logged with
    /// `tracing::warn!` and counted in [`Stats::truncated_tail_bytes_at_open`])
    /// and refuses, with [`Error::Corrupt`], damage anywhere else.
    ///
    /// Only one `Store` may use a directory at a time: the store takes an
    /// exclusive lock on it ([`DirLock`], the file `LOCK`) and holds it
    /// until it is dropped. While another process, or another `Store` in
    /// this one, holds it, `open` fails with [`Error::Locked`], which names
    /// the directory and the holder's pid.
    pub fn open(dir: &Path, options: Options) -> Result<Store, Error> {
        let backend =
            FsBackend::new(dir).map_err(io_err("create data directory", dir.to_path_buf()))?;
        Store::open_with_backend(Arc::new(backend), options)
    }

    /// Like [`Store::open`], doing all I/O through `backend`: the seam tests
    /// use to simulate power cuts (see [`sim`](crate::sim)). The lock is
    /// [`Backend::lock`]'s, taken before anything is read.
    pub fn open_with_backend(backend: Arc<dyn Backend>, options: Options) -> Result<Store, Error> {
        options.validate()?;
        let dir_lock = backend.lock()?;
        let synced_through = read_synced_through(&*backend)?;
        let mut loaded = recovery::load_vouched(&*backend, synced_through.unwrap_or(0))?;
        let (unsynced_records, unsynced_bytes) =
            drop_unsynced(&*backend, synced_through, &mut loaded)?;
        loaded.truncated_tail_bytes += unsynced_bytes;
        // What recovery read may be only in the page cache (after a process
        // crash); make it durable so durable_index can start at the end.
        if let Some(a) = &loaded.active {
            a.file
                .sync_data()
                .map_err(io_err("fsync segment", backend.path(&a.name)))?;
        }
        backend
            .sync_dir()
            .map_err(io_err("fsync data directory", backend.path("")))?;
        let last = loaded.state.last;
        tracing::info!(
            dir = %backend.path("").display(),
            last_index = last.index,
            last_term = last.term,
            first_index = loaded.state.floor().index + 1,
            segments = loaded.state.segments.len(),
            keys = loaded.state.index.len(),
            truncated_tail_bytes = loaded.truncated_tail_bytes,
            "storage opened"
        );
        let sync = SyncState {
            written: last.index,
            durable: last.index,
            syncing: false,
            poisoned: false,
            epoch: 0,
            active: loaded
                .active
                .as_ref()
                .map(|a| (Arc::clone(&a.file), backend.path(&a.name))),
        };
        let inner = Inner {
            backend,
            options,
            maintenance: Mutex::new(()),
            writer: Mutex::new(Writer {
                active: loaded.active,
                last,
            }),
            state: RwLock::new(loaded.state),
            sync: Mutex::new(sync),
            synced: Condvar::new(),
            compactions: AtomicU64::new(0),
            truncated_tail_bytes_at_open: loaded.truncated_tail_bytes,
            unsynced_records_dropped_at_open: unsynced_records,
            write_latency: LatencyHistogram::new(),
            fsync_latency: LatencyHistogram::new(),
            auto_compacting: AtomicBool::new(false),
            auto_compact_hold: AtomicUsize::new(0),
            background: Mutex::new(None),
            _lock: dir_lock,
        };
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// The backend the store does its I/O through: the directory it
    /// lives in. A replicator keeps its durable metadata (hard state,
    /// snapshots, vectors, hints) beside the log through this same
    /// backend ([`Backend::replace_file_with`], [`Backend::read_file`]),
    /// so power-cut tests see it too. The store's own files are its
    /// segments, snapshots and marker files: use other names.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// Appends `records`, which must continue the log: the first has index
    /// `last_position().index + 1`, each next one index + 1, and terms never
    /// decrease ([`Error::NonContiguous`], [`Error::TermDecreased`]
    /// otherwise, and nothing is written). Writes them to the OS in one
    /// write per segment, applies them to the index (so [`get`](Store::get)
    /// sees them at once) and returns the last position.
    ///
    /// With [`FsyncMode::Always`] it returns only after an fsync covering the
    /// records; with `Batch` and `Never` it returns after the write, and the
    /// caller acknowledges the write only after
    /// [`wait_durable`](Store::wait_durable).
    ///
    /// Callers that append from several threads must serialise choosing the
    /// index and calling `append` (e.g. under one mutex). Under `Batch` they
    /// then wait for durability outside that mutex, which is what lets
    /// concurrent writers share one fsync (group commit). Under `Always`
    /// the fsync happens inside `append`, so inside the mutex: only records
    /// passed in the same call share it.
    ///
    /// A failed write or fsync poisons the store: this call returns the I/O
    /// error and every later write returns [`Error::Poisoned`].
    pub fn append(&self, records: &[Record]) -> Result<LogPosition, Error> {
        let inner = &*self.inner;
        if records.is_empty() {
            return Ok(self.last_position());
        }
        let mut encoded = Vec::with_capacity(records.len());
        for r in records {
            let bytes = postcard::to_allocvec(r).map_err(|e| Error::Encode {
                what: "record",
                reason: e.to_string(),
            })?;
            if bytes.len() > MAX_RECORD_BYTES {
                return Err(Error::RecordTooLarge {
                    index: r.meta.position.index,
                    bytes: bytes.len(),
                    max: MAX_RECORD_BYTES,
                });
            }
            encoded.push(bytes);
        }

        let (last, compact) = {
            let mut writer = lock(&inner.writer);
            inner.check_poisoned()?;
            let mut prev = writer.last;
            for r in records {
                let p = r.meta.position;
                if p.index != prev.index + 1 {
                    return Err(Error::NonContiguous {
                        expected: prev.index + 1,
                        got: p.index,
                    });
                }
                if p.term < prev.term {
                    return Err(Error::TermDecreased {
                        index: p.index,
                        term: p.term,
                        previous: prev.term,
                    });
                }
                prev = p;
            }
            let synced_through = lock(&inner.sync).durable.min(writer.last.index);
            let started = Instant::now();
            let (placed, new_segments) =
                match inner.write_frames(&mut writer, records, &encoded, synced_through) {
                    Ok(done) => done,
                    Err(e) => {
                        inner.poison(&e);
                        return Err(e);
                    }
                };
            inner.write_latency.observe(started.elapsed());
            let compact = inner.publish(&writer, records, placed, new_segments);
            writer.last = prev;
            lock(&inner.sync).written = prev.index;
            (prev, compact)
        };

        if compact {
            self.spawn_auto_compaction();
        }
        if inner.options.fsync == FsyncMode::Always {
            inner.wait_for(last.index, true)?;
        }
        Ok(last)
    }

    /// Blocks until every record up to `index` is durable.
    ///
    /// - `Always`: appends were durable when they returned, so this returns
    ///   at once for them.
    /// - `Batch`: group commit. Whoever finds no fsync in flight performs
    ///   one for everything written so far; the others wait for it, and
    ///   nobody returns before an fsync that covers their index.
    /// - `Never`: returns at once without any fsync.
    ///
    /// Fails with [`Error::NotWritten`] if `index` is beyond the log, and
    /// with [`Error::Poisoned`] (or the I/O error) after a failed fsync.
    pub fn wait_durable(&self, index: u64) -> Result<(), Error> {
        self.inner.wait_for(index, false)
    }

    /// Whether a failed write or fsync has poisoned the store: it refuses
    /// every write, and a node should stop and be restarted once the disk
    /// is fixed (the next open drops the records written after the last
    /// successful fsync).
    pub fn is_poisoned(&self) -> bool {
        lock(&self.inner.sync).poisoned
    }

    /// Every record up to this index is durable.
    pub fn durable_index(&self) -> u64 {
        lock(&self.inner.sync).durable
    }

    /// Fsyncs everything written so far, whatever the [`FsyncMode`] (e.g.
    /// at shutdown).
    pub fn sync(&self) -> Result<(), Error> {
        let written = lock(&self.inner.sync).written;
        self.inner.wait_for(written, true)
    }

    /// The latest entry for `key`, tombstones included (`value: None`), or
    /// `None` if the key was never written. The entry may not be durable
    /// yet: call [`wait_durable`](Store::wait_durable) with
    /// `entry.meta.position.index` before acting on it as durable.
    ///
    /// The value is read from disk with one positioned read and its
    /// checksum verified; an I/O error or a damaged frame is an error.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>, Error> {
        let st = read(&self.inner.state);
        let Some(slot) = st.index.get(key) else {
            return Ok(None);
        };
        let value = self.inner.read_value(&st, key, slot)?;
        Ok(Some(Entry {
            value,
            meta: slot.meta.clone(),
        }))
    }

    /// Every key in `range` with its latest entry, tombstones included, in
    /// key order: for final reads, state transfer and anti-entropy (which
    /// must see deletes). Filter on `entry.value.is_some()` for live keys
    /// only. Holds a read lock while it reads, delaying appends: page
    /// through large key spaces with bounded ranges.
    pub fn scan(&self, range: impl RangeBounds<Vec<u8>>) -> Result<Vec<(Vec<u8>, Entry)>, Error> {
        let st = read(&self.inner.state);
        st.index
            .range(range)
            .map(|(key, slot)| {
                let value = self.inner.read_value(&st, key, slot)?;
                let entry = Entry {
                    value,
                    meta: slot.meta.clone(),
                };
                Ok((key.clone(), entry))
            })
            .collect()
    }

    /// The position of the last record (the compaction floor if the log
    /// after it is empty; index 0 for an empty store).
    pub fn last_position(&self) -> LogPosition {
        read(&self.inner.state).last
    }

    /// The lowest index [`read_log`](Store::read_log) can return: the
    /// compaction floor + 1.
    pub fn first_index(&self) -> u64 {
        read(&self.inner.state).floor().index + 1
    }

    /// Up to `max` records from log index `from` (inclusive), in order, for
    /// log shipping; fewer (possibly none) at the end of the log. `from ==
    /// 0` reads from the start. Fails with [`Error::Compacted`] if `from` is
    /// at or below the compaction floor: those records only exist folded
    /// into the snapshot.
    pub fn read_log(&self, from: u64, max: usize) -> Result<Vec<Record>, Error> {
        let st = read(&self.inner.state);
        let floor = st.floor().index;
        if floor > 0 && from <= floor {
            return Err(Error::Compacted {
                requested: from,
                first_available: floor + 1,
            });
        }
        let mut out = Vec::new();
        let mut next = from.max(1);
        while out.len() < max && next <= st.last.index {
            let Some((_, seg)) = st.segments.range(..=next).next_back() else {
                break;
            };
            let end = seg.first + seg.offsets.len() as u64;
            if next >= end {
                break;
            }
            let wanted = (max - out.len()) as u64;
            let upto = (end - 1).min(next.saturating_add(wanted - 1));
            let (start, _) = seg.frame_range(next);
            let (_, stop) = seg.frame_range(upto);
            let path = self.inner.path(&seg.name);
            let mut buf = vec![0u8; (stop - start) as usize];
            seg.file
                .read_at(&mut buf, start)
                .map_err(io_err("read segment", path.clone()))?;
            let mut pos = 0;
            for index in next..=upto {
                let at = start + pos as u64;
                let (payload, after) = match parse_frame(&buf, pos) {
                    Frame::Ok { payload, next } => (payload, next),
                    bad => return Err(corrupt(path, at, bad.describe())),
                };
                let record = decode_record(payload).map_err(|r| corrupt(path.clone(), at, r))?;
                if record.meta.position.index != index {
                    return Err(corrupt(
                        path,
                        at,
                        format!(
                            "record has log index {} where {index} belongs",
                            record.meta.position.index
                        ),
                    ));
                }
                out.push(record);
                pos = after;
            }
            next = upto + 1;
        }
        Ok(out)
    }

    /// Removes every record with index `from` or above, durably (a deposed
    /// leader dropping its divergent suffix), and rebuilds the index so the
    /// keys they wrote show their earlier entries again. Returns how many
    /// records were removed. Fails with [`Error::Compacted`] if `from` is at
    /// or below the compaction floor: those records are already folded into
    /// the snapshot.
    ///
    /// If `from` is past the end it returns 0 without any I/O; otherwise,
    /// afterwards, every remaining record is durable. The index is rebuilt by
    /// re-reading the snapshot and the log, so this costs as much as
    /// [`Store::open`]; it is meant for the rare leader change. Crash-safe:
    /// segments are removed newest first, so a crash part-way leaves a
    /// shorter but contiguous log.
    pub fn truncate_from(&self, from: u64) -> Result<u64, Error> {
        let inner = &*self.inner;
        let _maintenance = lock(&inner.maintenance);
        let mut writer = lock(&inner.writer);
        inner.check_poisoned()?;
        let mut st = write(&inner.state);
        let floor = st.floor().index;
        if floor > 0 && from <= floor {
            return Err(Error::Compacted {
                requested: from,
                first_available: floor + 1,
            });
        }
        let from = from.max(1);
        if from > st.last.index {
            return Ok(0);
        }
        let removed = st.last.index - from + 1;
        let loaded = inner.truncate_files(&st, from);
        inner.install(&mut st, &mut writer, loaded)?;
        tracing::info!(from, removed, "truncated the log");
        Ok(removed)
    }

    /// Compaction: folds every closed segment (after closing the active one)
    /// into a new snapshot holding the latest entry of each key, tombstones
    /// included, then removes those segments and the old snapshot. The
    /// compaction floor moves to the last record folded in; records above
    /// it stay readable with [`read_log`](Store::read_log).
    ///
    /// Crash-safe at every step: the snapshot is written to a temporary file,
    /// fsynced, renamed into place and the directory fsynced before anything
    /// is removed. Appends and reads continue while the snapshot is built.
    ///
    /// Also runs automatically on a background thread, started by
    /// [`append`](Store::append) when the garbage in closed segments and the
    /// snapshot reaches both [`Options::compact_min_bytes`] and
    /// [`Options::compact_min_garbage_ratio`]. That bounds disk use and
    /// start-up time by about `live bytes / (1 - ratio)` plus
    /// `compact_min_bytes` and the active segment.
    pub fn compact(&self) -> Result<CompactionStats, Error> {
        self.inner.compact(true, None)
    }

    /// Discards the log before `index`, segment by segment: every closed
    /// segment whose records all lie below `index` is folded into the
    /// snapshot and removed, exactly as [`compact`](Store::compact) does;
    /// the segment holding `index - 1` and every later one stay. Afterwards
    /// [`first_index`](Store::first_index) is at most `index` (less when
    /// `index` falls inside a segment), and [`get`](Store::get) and
    /// [`scan`](Store::scan) answer as before: the key-value state is kept.
    ///
    /// For a replicator that keeps a snapshot of its own and needs the log
    /// only after it (leader-follower): unlike `compact`, it never folds a
    /// record at or above `index`, which the replicator may still ship or
    /// truncate. Crash-safe as `compact` is; a no-op when no closed segment
    /// lies wholly below `index`.
    pub fn discard_before(&self, index: u64) -> Result<CompactionStats, Error> {
        self.inner.compact(false, Some(index))
    }

    /// Replaces everything the store holds by `state` at `floor`: the log
    /// becomes empty and continues at `floor.index + 1`, and the key-value
    /// state becomes `state` (a replica that received another's state,
    /// whose own log does not lead up to it). `state` need not be sorted;
    /// a key may appear once.
    ///
    /// Fails with [`Error::Compacted`] if `floor` is below the compaction
    /// floor. Crash-safe: the log is first truncated (newest segment
    /// first, as [`truncate_from`](Store::truncate_from) does), then the new
    /// snapshot is written to a temporary file, fsynced, renamed into place
    /// and the directory fsynced, and only then is the old snapshot
    /// removed. A crash leaves either the old state with a shorter log, or
    /// the new state; the caller keeps its own copy of `state` durable
    /// before calling this, and calls it again after a crash if
    /// [`last_position`](Store::last_position) is still below `floor`.
    pub fn reset_to(&self, floor: LogPosition, state: Vec<(Vec<u8>, Entry)>) -> Result<(), Error> {
        let inner = &*self.inner;
        let _maintenance = lock(&inner.maintenance);
        let mut writer = lock(&inner.writer);
        inner.check_poisoned()?;
        let mut st = write(&inner.state);
        let old_floor = st.floor().index;
        if floor.index < old_floor {
            return Err(Error::Compacted {
                requested: floor.index,
                first_available: old_floor + 1,
            });
        }
        let result = inner
            .truncate_files(&st, old_floor + 1)
            .and_then(|_| inner.write_state_snapshot(floor, state))
            .and_then(|()| {
                if let Some(old) = st
                    .snapshot
                    .as_ref()
                    .filter(|s| s.floor.index != floor.index)
                {
                    inner
                        .backend
                        .remove(&old.name)
                        .map_err(io_err("remove snapshot", inner.path(&old.name)))?;
                    inner
                        .backend
                        .sync_dir()
                        .map_err(io_err("fsync data directory", inner.path("")))?;
                }
                recovery::load(&*inner.backend)
            });
        inner.install(&mut st, &mut writer, result)?;
        tracing::info!(
            floor = floor.index,
            term = floor.term,
            keys = st.index.len(),
            "replaced the store's state; the log continues after it"
        );
        Ok(())
    }

    /// Counters and sizes.
    pub fn stats(&self) -> Stats {
        let durable_index = self.durable_index();
        let st = read(&self.inner.state);
        Stats {
            live_keys: st.live_keys,
            segments: st.segments.len(),
            disk_bytes: st.disk_bytes(),
            garbage_bytes: st.garbage_bytes(),
            last_position: st.last,
            durable_index,
            first_index: st.floor().index + 1,
            compactions: self.inner.compactions.load(Ordering::Relaxed),
            truncated_tail_bytes_at_open: self.inner.truncated_tail_bytes_at_open,
            unsynced_records_dropped_at_open: self.inner.unsynced_records_dropped_at_open,
            write_latency: self.inner.write_latency.snapshot(),
            fsync_latency: self.inner.fsync_latency.snapshot(),
        }
    }

    /// Starts a background compaction unless one is running.
    fn spawn_auto_compaction(&self) {
        if self.inner.auto_compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut background = lock(&self.inner.background);
        if let Some(previous) = background.take() {
            // It has finished: clearing the flag was its last act.
            let _ = previous.join();
        }
        let inner = Arc::clone(&self.inner);
        let spawned = std::thread::Builder::new()
            .name("mimeo-compaction".into())
            .spawn(move || {
                match inner.compact(false, None) {
                    Ok(stats) => {
                        inner.auto_compact_hold.store(0, Ordering::Relaxed);
                        tracing::debug!(?stats, "automatic compaction finished");
                    }
                    Err(e) => {
                        let segments = read(&inner.state).segments.len();
                        inner.auto_compact_hold.store(segments, Ordering::Relaxed);
                        tracing::warn!(
                            error = %e,
                            "automatic compaction failed; the log is intact, and compaction will be retried once the log has grown by a segment"
                        );
                    }
                }
                inner.auto_compacting.store(false, Ordering::Release);
            });
        match spawned {
            Ok(handle) => *background = Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the compaction thread");
                self.inner.auto_compacting.store(false, Ordering::Release);
            }
        }
    }
}

impl Inner {
    /// The path of `name` in the data directory, for errors and logs.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.backend.path(name)
    }

    pub(crate) fn check_poisoned(&self) -> Result<(), Error> {
        if lock(&self.sync).poisoned {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Makes a log just reloaded from disk (after a truncation or a reset)
    /// the store's state: all of it is durable, and the durability
    /// bookkeeping starts a new epoch, so that a group commit begun before
    /// cannot mark later records durable. A failed reload poisons the
    /// store (the files may be half changed) and is returned.
    fn install(
        &self,
        st: &mut State,
        writer: &mut Writer,
        loaded: Result<recovery::Loaded, Error>,
    ) -> Result<(), Error> {
        let loaded = loaded.inspect_err(|e| self.poison(e))?;
        *st = loaded.state;
        writer.active = loaded.active;
        writer.last = st.last;
        let mut sync = lock(&self.sync);
        sync.epoch += 1;
        sync.written = st.last.index;
        sync.durable = st.last.index;
        sync.active = writer
            .active
            .as_ref()
            .map(|a| (Arc::clone(&a.file), self.path(&a.name)));
        self.synced.notify_all();
        Ok(())
    }

    /// Refuses every later write, and records durably how far the log is
    /// known to be fsynced, so that the next open drops what came after.
    pub(crate) fn poison(&self, cause: &Error) {
        let mut sync = lock(&self.sync);
        let first = !sync.poisoned;
        sync.poisoned = true;
        let synced_through = sync.durable;
        self.synced.notify_all();
        drop(sync);
        if first {
            self.record_poison(cause, synced_through);
        }
    }

    /// Logs the poisoning and writes [`SYNCED_THROUGH_FILE`].
    fn record_poison(&self, cause: &Error, synced_through: u64) {
        tracing::error!(
            error = %cause,
            synced_through,
            "storage poisoned: refusing further writes; records after index {synced_through} are not known to be on disk and will be dropped at the next open"
        );
        let bytes = encode_synced_through(synced_through);
        if let Err(e) = self.backend.write_file_durably(SYNCED_THROUGH_FILE, &bytes) {
            tracing::error!(
                error = %e,
                file = %self.path(SYNCED_THROUGH_FILE).display(),
                synced_through,
                "could not record how far the log was fsynced: the next open cannot tell the records after index {synced_through} from durable ones (the disk is failing: check it before restarting)"
            );
        }
    }

    /// Records that the active segment was fsynced and closed with `last`
    /// as its last index: everything up to `last` is durable, and group
    /// commits no longer need to fsync that file.
    pub(crate) fn segment_closed(&self, last: u64) {
        let mut sync = lock(&self.sync);
        sync.active = None;
        if last > sync.durable {
            sync.durable = last;
        }
        self.synced.notify_all();
    }

    /// The group-commit loop behind `wait_durable`, `sync` and `Always`
    /// appends. `force` fsyncs even under `FsyncMode::Never`.
    fn wait_for(&self, index: u64, force: bool) -> Result<(), Error> {
        let mut sync = lock(&self.sync);
        loop {
            if sync.poisoned {
                return Err(Error::Poisoned);
            }
            if index <= sync.durable {
                return Ok(());
            }
            if index > sync.written {
                return Err(Error::NotWritten {
                    requested: index,
                    last: sync.written,
                });
            }
            if !force && self.options.fsync == FsyncMode::Never {
                return Ok(());
            }
            if sync.syncing {
                sync = self
                    .synced
                    .wait(sync)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Lead a group commit: one fsync for everything written so far.
            sync.syncing = true;
            let target = sync.written;
            let epoch = sync.epoch;
            let active = sync.active.clone();
            drop(sync);
            let result = match &active {
                Some((file, _)) => {
                    let started = Instant::now();
                    let result = file.sync_data();
                    self.fsync_latency.observe(started.elapsed());
                    result
                }
                None => Ok(()),
            };
            sync = lock(&self.sync);
            sync.syncing = false;
            self.synced.notify_all();
            if let Err(source) = result {
                let first = !sync.poisoned;
                sync.poisoned = true;
                let synced_through = sync.durable;
                drop(sync);
                let err = Error::Io {
                    op: "fsync segment",
                    path: active.map(|(_, p)| p).unwrap_or_default(),
                    source,
                };
                if first {
                    self.record_poison(&err, synced_through);
                }
                return Err(err);
            }
            if sync.epoch == epoch && target > sync.durable {
                sync.durable = target;
            }
        }
    }

    fn create_segment(&self, first: u64) -> Result<Active, Error> {
        let name = segment_name(first);
        let path = self.path(&name);
        let file = self
            .backend
            .create(&name)
            .map_err(io_err("create segment", path.clone()))?;
        file.write_at(&encode_segment_header(first), 0)
            .map_err(io_err("write segment header", path.clone()))?;
        file.sync_data()
            .map_err(io_err("fsync segment", path.clone()))?;
        self.backend
            .sync_dir()
            .map_err(io_err("fsync data directory", self.path("")))?;
        Ok(Active {
            first,
            name,
            file,
            len: SEGMENT_HEADER_LEN,
            allocated: SEGMENT_HEADER_LEN,
            records: 0,
            filler: FILLER,
        })
    }

    fn flush(&self, active: &mut Active, buf: &mut Vec<u8>) -> Result<(), Error> {
        if buf.is_empty() {
            return Ok(());
        }
        let path = self.path(&active.name);
        active
            .file
            .write_at(buf, active.len)
            .map_err(io_err("write segment", path.clone()))?;
        active.len += buf.len() as u64;
        buf.clear();
        // Never more than a segment's worth: tiny segments (tests) stay tiny.
        let ahead = self
            .options
            .preallocate_bytes
            .min(self.options.segment_bytes);
        if ahead > 0 && active.allocated < active.len + ahead / 2 {
            // Keep between half and all of `ahead` filler bytes past the
            // records.
            let from = active.allocated.max(active.len);
            let to = active.len + ahead;
            let filler = vec![active.filler; (to - from) as usize];
            active
                .file
                .write_at(&filler, from)
                .map_err(io_err("preallocate segment", path))?;
            active.allocated = to;
        }
        active.allocated = active.allocated.max(active.len);
        Ok(())
    }

    /// Makes a segment that takes no more records durable, cut back to its
    /// records first (the filler ahead of them is of no use any more).
    pub(crate) fn close_segment_file(&self, active: &Active) -> Result<(), Error> {
        let path = || self.path(&active.name);
        if active.allocated > active.len {
            active
                .file
                .set_len(active.len)
                .map_err(io_err("truncate segment", path()))?;
        }
        active
            .file
            .sync_data()
            .map_err(io_err("fsync segment", path()))
    }

    /// Writes the frames, rolling to new segments as needed (the old one is
    /// fsynced before the new one is created, so only the last segment can
    /// ever hold unsynced records); returns where each frame went and the
    /// new segments.
    fn write_frames(
        &self,
        writer: &mut Writer,
        records: &[Record],
        encoded: &[Vec<u8>],
        synced_through: u64,
    ) -> Result<(Vec<Placed>, NewSegments), Error> {
        let mut placed = Vec::with_capacity(records.len());
        let mut new_segments = Vec::new();
        let mut buf = Vec::new();
        for (record, bytes) in records.iter().zip(encoded) {
            let index = record.meta.position.index;
            let frame_len = FRAME_HEADER_LEN + (SYNCED_THROUGH_LEN + bytes.len()) as u64;
            let roll = match &writer.active {
                None => true,
                Some(a) => {
                    a.records > 0
                        && a.len + buf.len() as u64 + frame_len > self.options.segment_bytes
                }
            };
            if roll {
                if let Some(mut old) = writer.active.take() {
                    self.flush(&mut old, &mut buf)?;
                    self.close_segment_file(&old)?;
                    self.segment_closed(index - 1);
                }
                let new = self.create_segment(index)?;
                lock(&self.sync).active = Some((Arc::clone(&new.file), self.path(&new.name)));
                new_segments.push((new.first, new.name.clone(), Arc::clone(&new.file)));
                writer.active = Some(new);
            }
            let Some(active) = writer.active.as_mut() else {
                unreachable!("a segment is open after rolling")
            };
            placed.push((active.first, active.len + buf.len() as u64, frame_len));
            push_log_frame(&mut buf, synced_through, bytes);
            active.records += 1;
        }
        if let Some(active) = writer.active.as_mut() {
            self.flush(active, &mut buf)?;
        }
        Ok((placed, new_segments))
    }

    /// Makes written records visible to readers; returns whether automatic
    /// compaction is due.
    fn publish(
        &self,
        writer: &Writer,
        records: &[Record],
        placed: Vec<Placed>,
        new_segments: NewSegments,
    ) -> bool {
        let mut st = write(&self.state);
        for (first, name, file) in new_segments {
            let segment = SegmentInfo {
                name,
                file,
                first,
                offsets: Vec::new(),
                len: SEGMENT_HEADER_LEN,
                last: None,
                garbage: 0,
            };
            st.segments.insert(first, segment);
        }
        st.active_first = writer.active.as_ref().map(|a| a.first);
        for (r, (first, offset, frame_len)) in records.iter().zip(placed) {
            if let Some(seg) = st.segments.get_mut(&first) {
                seg.offsets.push(offset);
                seg.len = offset + frame_len;
                seg.last = Some(r.meta.position);
            }
            let (key, tombstone) = match &r.mutation {
                Mutation::Put { key, .. } => (key.clone(), false),
                Mutation::Delete { key } => (key.clone(), true),
            };
            let slot = Slot {
                meta: r.meta.clone(),
                tombstone,
                loc: Loc::Segment(first),
                offset,
                frame_len,
            };
            st.apply(key, slot);
            st.last = r.meta.position;
        }
        st.segments.len() > self.auto_compact_hold.load(Ordering::Relaxed)
            && st.wants_compaction(
                self.options.compact_min_bytes,
                self.options.compact_min_garbage_ratio,
            )
    }

    /// The value a slot of `key` points at (`None` for a tombstone, without
    /// I/O), checked to be `key`'s, at the slot's position.
    fn read_value(&self, st: &State, key: &[u8], slot: &Slot) -> Result<Option<Vec<u8>>, Error> {
        if slot.tombstone {
            return Ok(None);
        }
        let (file, name) = match slot.loc {
            Loc::Segment(first) => st.segments.get(&first).map(|s| (&s.file, &s.name)),
            Loc::Snapshot => st.snapshot.as_ref().map(|s| (&s.file, &s.name)),
        }
        .ok_or_else(|| {
            corrupt(
                self.path(""),
                slot.offset,
                format!(
                    "the index points into {:?}, which is not open (internal error)",
                    slot.loc
                ),
            )
        })?;
        let path = self.path(name);
        let value = read_value_at(
            &**file,
            &path,
            slot.loc,
            slot.offset,
            slot.frame_len,
            (key, slot.meta.position),
        )?;
        if value.is_none() {
            return Err(corrupt(
                path,
                slot.offset,
                "the index expects a value here but the frame holds a delete (internal error)",
            ));
        }
        Ok(value)
    }

    /// Physically removes records `from..` and reloads
    /// ([`truncate_files`]).
    fn truncate_files(&self, st: &State, from: u64) -> Result<recovery::Loaded, Error> {
        truncate_files(&*self.backend, st, from)
    }
}

/// Physically removes records `from..`: whole segments newest first (each
/// removal made durable before the next, so a crash never leaves a gap),
/// then cuts the segment holding `from` and fsyncs it. Then reloads.
fn truncate_files(backend: &dyn Backend, st: &State, from: u64) -> Result<recovery::Loaded, Error> {
    for seg in st.segments.range(from..).rev().map(|(_, s)| s) {
        backend
            .remove(&seg.name)
            .map_err(io_err("remove segment", backend.path(&seg.name)))?;
        backend
            .sync_dir()
            .map_err(io_err("fsync data directory", backend.path("")))?;
    }
    if let Some((_, seg)) = st.segments.range(..from).next_back() {
        if seg.last.is_some_and(|p| p.index >= from) {
            let (offset, _) = seg.frame_range(from);
            let path = backend.path(&seg.name);
            seg.file
                .set_len(offset)
                .map_err(io_err("truncate segment", path.clone()))?;
            seg.file
                .sync_data()
                .map_err(io_err("fsync segment", path))?;
        }
    }
    recovery::load(backend)
}

/// The watermark a poisoned store left in [`SYNCED_THROUGH_FILE`], if any.
fn read_synced_through(backend: &dyn Backend) -> Result<Option<u64>, Error> {
    let path = backend.path(SYNCED_THROUGH_FILE);
    let Some(bytes) = backend
        .read_file(SYNCED_THROUGH_FILE)
        .map_err(io_err("read synced-through file", path.clone()))?
    else {
        return Ok(None);
    };
    decode_synced_through(&bytes)
        .map(Some)
        .map_err(|reason| corrupt(path, 0, reason))
}

/// After a failed write or fsync: drops the records past the watermark the
/// poisoned store recorded (the disk may never have had them, whatever the
/// page cache now says), then removes the record. Returns the records and
/// bytes dropped.
fn drop_unsynced(
    backend: &dyn Backend,
    synced_through: Option<u64>,
    loaded: &mut recovery::Loaded,
) -> Result<(u64, u64), Error> {
    let Some(synced_through) = synced_through else {
        return Ok((0, 0));
    };
    // Compaction never runs on a poisoned store, so the floor is at most
    // the watermark; the max only guards a hand-made file.
    let keep = synced_through.max(loaded.state.floor().index);
    let last = loaded.state.last.index;
    let mut dropped = (0, 0);
    if last > keep {
        let before = loaded.state.disk_bytes();
        *loaded = truncate_files(backend, &loaded.state, keep + 1)?;
        dropped = (
            last - keep,
            before.saturating_sub(loaded.state.disk_bytes()),
        );
        tracing::warn!(
            dir = %backend.path("").display(),
            first_dropped_index = keep + 1,
            last_dropped_index = last,
            bytes_dropped = dropped.1,
            "dropped log records written after the last successful fsync: an fsync (or write) failed before this start, so the disk may never have had them, although the page cache still showed them; they were never acknowledged as durable"
        );
    }
    backend.remove(SYNCED_THROUGH_FILE).map_err(io_err(
        "remove synced-through file",
        backend.path(SYNCED_THROUGH_FILE),
    ))?;
    backend
        .sync_dir()
        .map_err(io_err("fsync data directory", backend.path("")))?;
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordMeta;
    use crate::sim::{SimBackend, Unsynced};
    use std::collections::BTreeMap;

    fn put(index: u64, key: &str, value: &str) -> Record {
        Record {
            meta: RecordMeta {
                position: LogPosition::new(1, index),
                origin: 0,
                seq: index,
                version: Vec::new(),
            },
            mutation: Mutation::Put {
                key: key.into(),
                value: value.into(),
            },
        }
    }

    fn sim_store(options: Options) -> (Arc<SimBackend>, Store) {
        let disk = Arc::new(SimBackend::new());
        let store = Store::open_with_backend(disk.clone(), options).unwrap();
        (disk, store)
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Store>();
    }

    #[test]
    fn appends_must_continue_the_log() {
        let (_, store) = sim_store(Options::default());
        store.append(&[put(1, "a", "1")]).unwrap();
        let err = store.append(&[put(3, "a", "3")]).unwrap_err();
        assert!(matches!(
            err,
            Error::NonContiguous {
                expected: 2,
                got: 3
            }
        ));
        let mut low = put(2, "a", "2");
        low.meta.position.term = 0;
        assert!(matches!(
            store.append(&[low]).unwrap_err(),
            Error::TermDecreased { index: 2, .. }
        ));
        // Nothing was written by the refused appends.
        assert_eq!(store.last_position(), LogPosition::new(1, 1));
        assert_eq!(store.read_log(1, 10).unwrap().len(), 1);
    }

    #[test]
    fn records_carry_the_durable_watermark_of_their_write() {
        let (disk, store) = sim_store(Options::default());
        store.append(&[put(1, "a", "1"), put(2, "a", "2")]).unwrap();
        store.wait_durable(2).unwrap();
        store.append(&[put(3, "b", "3")]).unwrap();
        let seg = disk.open(&segment_name(1)).unwrap();
        let mut buf = vec![0; seg.len().unwrap() as usize];
        seg.read_at(&mut buf, 0).unwrap();
        let mut pos = SEGMENT_HEADER_LEN as usize;
        let mut watermarks = Vec::new();
        while let Frame::Ok { payload, next } = parse_frame(&buf, pos) {
            watermarks.push(crate::format::split_log_payload(payload).unwrap().0);
            pos = next;
        }
        assert_eq!(watermarks, vec![0, 0, 2]);
    }

    #[test]
    fn a_failed_fsync_poisons_the_store() {
        let (disk, store) = sim_store(Options::default());
        store.append(&[put(1, "a", "1")]).unwrap();
        disk.schedule_power_cut(1);
        assert!(matches!(
            store.wait_durable(1).unwrap_err(),
            Error::Io {
                op: "fsync segment",
                ..
            }
        ));
        assert!(matches!(
            store.append(&[put(2, "a", "2")]).unwrap_err(),
            Error::Poisoned
        ));
        assert!(matches!(
            store.wait_durable(1).unwrap_err(),
            Error::Poisoned
        ));
        assert!(matches!(store.compact().unwrap_err(), Error::Poisoned));
    }

    #[test]
    fn waiting_for_an_unwritten_index_is_an_error() {
        let (_, store) = sim_store(Options::default());
        store.append(&[put(1, "a", "1")]).unwrap();
        assert!(matches!(
            store.wait_durable(5).unwrap_err(),
            Error::NotWritten {
                requested: 5,
                last: 1
            }
        ));
        store.wait_durable(0).unwrap();
    }

    #[test]
    fn segments_roll_and_close_durably() {
        let options = Options {
            segment_bytes: 200,
            fsync: FsyncMode::Never,
            ..Options::default()
        };
        let (_, store) = sim_store(options);
        for i in 1..=20 {
            store.append(&[put(i, "k", &"x".repeat(40))]).unwrap();
        }
        let stats = store.stats();
        assert!(stats.segments > 5, "{stats:?}");
        // Under `never`, only closing a segment fsyncs.
        assert!(
            stats.durable_index > 0 && stats.durable_index < 20,
            "{stats:?}"
        );
        assert_eq!(store.read_log(1, 100).unwrap().len(), 20);
        assert_eq!(store.read_log(3, usize::MAX).unwrap().len(), 18);
        assert_eq!(store.read_log(7, 3).unwrap()[0].meta.position.index, 7);
    }

    #[test]
    fn filler_ahead_of_the_records_is_the_clean_end_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            segment_bytes: 64 << 10,
            preallocate_bytes: 16 << 10,
            ..Options::default()
        };
        let file_len = |first: u64| {
            std::fs::metadata(dir.path().join(segment_name(first)))
                .unwrap()
                .len()
        };
        let store = Store::open(dir.path(), options.clone()).unwrap();
        for i in 1..=10 {
            store.append(&[put(i, "k", "v")]).unwrap();
        }
        store.sync().unwrap();
        let used = read(&store.inner.state).segments[&1].len;
        assert!(file_len(1) >= used + (8 << 10), "{} {used}", file_len(1));
        drop(store);

        // Reopened: the filler is neither records nor a torn write.
        let store = Store::open(dir.path(), options.clone()).unwrap();
        assert_eq!(store.stats().truncated_tail_bytes_at_open, 0);
        assert_eq!(store.last_position().index, 10);
        for i in 11..=400 {
            store.append(&[put(i, "k", &"x".repeat(200))]).unwrap();
        }
        store.sync().unwrap();
        // Closed segments are cut back to their records.
        let st = read(&store.inner.state);
        let closed: Vec<(u64, u64)> = st
            .segments
            .values()
            .filter(|s| Some(s.first) != st.active_first)
            .map(|s| (s.first, s.len))
            .collect();
        drop(st);
        assert!(!closed.is_empty());
        for (first, len) in closed {
            assert_eq!(file_len(first), len, "segment {first}");
        }
        drop(store);
        let store = Store::open(dir.path(), options).unwrap();
        assert_eq!(store.stats().truncated_tail_bytes_at_open, 0);
        let records = store.read_log(1, 1000).unwrap();
        assert_eq!(records.len(), 400);
    }

    /// A log of 120 records over keys k0..k9 in segments of a few records,
    /// and the state it produces.
    fn segmented_log(disk: &Arc<SimBackend>) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        let options = Options {
            segment_bytes: 200,
            compact_min_bytes: u64::MAX,
            ..Options::default()
        };
        let store = Store::open_with_backend(disk.clone(), options).unwrap();
        let mut state = BTreeMap::new();
        for i in 1..=120u64 {
            let key = format!("k{}", i % 10);
            let record = if i % 7 == 0 {
                Record {
                    mutation: Mutation::Delete {
                        key: key.clone().into(),
                    },
                    ..put(i, &key, "")
                }
            } else {
                put(i, &key, &format!("v{i}"))
            };
            store.append(&[record]).unwrap();
            let value = (i % 7 != 0).then(|| format!("v{i}").into_bytes());
            state.insert(key.into_bytes(), value);
        }
        store.sync().unwrap();
        assert!(store.stats().segments > 10, "{:?}", store.stats());
        state
    }

    /// The store holds `state` and a contiguous log from `first_index()`
    /// to 120.
    fn check_store(store: &Store, state: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        for (key, value) in state {
            let entry = store.get(key).unwrap().unwrap();
            assert_eq!(&entry.value, value, "key {key:?}");
        }
        assert_eq!(store.scan(..).unwrap().len(), state.len());
        let first = store.first_index();
        let records = store.read_log(first, 1000).unwrap();
        let indexes: Vec<u64> = records.iter().map(|r| r.meta.position.index).collect();
        assert_eq!(indexes, (first..=120).collect::<Vec<_>>());
    }

    #[test]
    fn discard_before_drops_whole_segments_and_keeps_the_state() {
        let disk = Arc::new(SimBackend::new());
        let state = segmented_log(&disk);
        let store = Store::open_with_backend(disk.clone(), Options::default()).unwrap();
        assert_eq!(store.first_index(), 1);
        let stats = store.discard_before(60).unwrap();
        let first = store.first_index();
        assert!(first > 1 && first <= 60, "first index {first}");
        assert!(stats.segments_removed > 0);
        assert!(matches!(
            store.read_log(first - 1, 1),
            Err(Error::Compacted { first_available, .. }) if first_available == first
        ));
        check_store(&store, &state);
        // Nothing at or above the index was folded.
        assert!(store.read_log(59, 1).is_ok());
        // A second call with the same index has nothing left to discard.
        assert_eq!(store.discard_before(60).unwrap().segments_removed, 0);
        assert_eq!(store.first_index(), first);
        drop(store);
        let store = Store::open_with_backend(disk, Options::default()).unwrap();
        assert_eq!(store.first_index(), first);
        check_store(&store, &state);
        // The log goes on after it.
        assert_eq!(store.append(&[put(121, "k1", "x")]).unwrap().index, 121);
    }

    #[test]
    fn discard_before_survives_a_power_cut_at_every_step() {
        for cut in 1.. {
            for unsynced in [Unsynced::Lost, Unsynced::Torn { seed: cut }] {
                let disk = Arc::new(SimBackend::new());
                let state = segmented_log(&disk);
                let store = Store::open_with_backend(disk.clone(), Options::default()).unwrap();
                disk.schedule_power_cut(cut);
                let finished = store.discard_before(60).is_ok() && !disk.is_powered_off();
                drop(store);
                let rebooted = Arc::new(disk.reboot(unsynced));
                let store = Store::open_with_backend(rebooted, Options::default())
                    .unwrap_or_else(|e| panic!("power cut after {cut} operations: {e}"));
                check_store(&store, &state);
                assert!(store.first_index() <= 60, "cut {cut}");
                if finished {
                    assert!(store.first_index() > 1);
                    return;
                }
            }
        }
    }

    #[test]
    fn reset_to_replaces_the_log_and_the_state() {
        let disk = Arc::new(SimBackend::new());
        segmented_log(&disk);
        let store = Store::open_with_backend(disk.clone(), Options::default()).unwrap();
        let floor = LogPosition::new(3, 500);
        let new_state = vec![
            (
                b"z".to_vec(),
                Entry {
                    value: Some(b"1".to_vec()),
                    meta: put(400, "z", "1").meta,
                },
            ),
            (
                b"a".to_vec(),
                Entry {
                    value: None,
                    meta: put(450, "a", "").meta,
                },
            ),
        ];
        store.reset_to(floor, new_state.clone()).unwrap();
        let check = |store: &Store| {
            assert_eq!(store.last_position(), floor);
            assert_eq!(store.first_index(), 501);
            assert_eq!(store.scan(..).unwrap().len(), 2);
            assert_eq!(
                store.get(b"z").unwrap().unwrap().value.as_deref(),
                Some(&b"1"[..])
            );
            assert_eq!(store.get(b"a").unwrap().unwrap().value, None);
            assert!(store.get(b"k1").unwrap().is_none());
        };
        check(&store);
        // Below the new floor is refused.
        assert!(matches!(
            store.reset_to(LogPosition::new(3, 10), Vec::new()),
            Err(Error::Compacted { .. })
        ));
        let next = Record {
            meta: RecordMeta {
                position: LogPosition::new(3, 501),
                ..put(501, "b", "2").meta
            },
            ..put(501, "b", "2")
        };
        assert_eq!(store.append(&[next]).unwrap(), LogPosition::new(3, 501));
        store.sync().unwrap();
        drop(store);
        let store = Store::open_with_backend(disk.clone(), Options::default()).unwrap();
        assert_eq!(store.last_position(), LogPosition::new(3, 501));
        assert_eq!(
            store.get(b"b").unwrap().unwrap().value.as_deref(),
            Some(&b"2"[..])
        );
        // A power cut at any step leaves the old state (with a log that may
        // be shorter) or the new one.
        for cut in 1.. {
            let disk = Arc::new(SimBackend::new());
            let old_state = segmented_log(&disk);
            let store = Store::open_with_backend(disk.clone(), Options::default()).unwrap();
            disk.schedule_power_cut(cut);
            let finished =
                store.reset_to(floor, new_state.clone()).is_ok() && !disk.is_powered_off();
            drop(store);
            let store =
                Store::open_with_backend(Arc::new(disk.reboot(Unsynced::Lost)), Options::default())
                    .unwrap_or_else(|e| panic!("power cut after {cut} operations: {e}"));
            if store.last_position() == floor {
                check(&store);
            } else {
                assert!(store.last_position().index <= 120, "cut {cut}");
                assert!(!finished, "cut {cut}: finished but the old state is back");
                // The old state only ever loses records from the tail.
                let first = store.first_index();
                let last = store.last_position().index;
                assert_eq!(
                    store.read_log(first, 1000).unwrap().len() as u64,
                    last + 1 - first
                );
                if last == 120 {
                    check_store(&store, &old_state);
                }
            }
            if finished {
                return;
            }
        }
    }
}
