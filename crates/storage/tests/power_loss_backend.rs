//! Invariant: on a [`PowerLossBackend`], killing the writer (dropping the
//! store and the backend without a flush, which is all a SIGKILL does) keeps
//! exactly what was fsynced, so every write acknowledged under `always` or
//! `batch` survives, writes under `never` are lost, and the directory opens
//! cleanly with the plain [`FsBackend`] (DESIGN.md §3 and §7, "power loss:
//! kill -9 plus the loss of every byte not yet fsynced").
//!
//! Each lossy test has a control: the same workload on the plain
//! `FsBackend` loses nothing at a kill, so what is lost is lost because of
//! the backend.

mod common;

use std::sync::{Arc, Mutex};

use mimeo_storage::{Backend, FsBackend, FsyncMode, Options, PowerLossBackend, Record, Store};

use common::{assert_state, fold, put};

const SEGMENT_BYTES: u64 = 4096;
const PREALLOCATE_BYTES: u64 = 1024;

fn options(fsync: FsyncMode) -> Options {
    Options {
        fsync,
        segment_bytes: SEGMENT_BYTES,
        compact_min_garbage_ratio: 0.3,
        compact_min_bytes: 8 << 10,
        // Zeros ahead of the records, so power cuts land in them too.
        preallocate_bytes: PREALLOCATE_BYTES,
    }
}

/// Record `index`: 23 keys rewritten over and over, so compaction has
/// garbage to drop.
fn record(index: u64) -> Record {
    put(
        index,
        &format!("key-{}", index % 23),
        &format!("value-{index:05}-").repeat(4),
    )
}

fn open_lazy(dir: &std::path::Path, fsync: FsyncMode) -> (Arc<PowerLossBackend>, Store) {
    let backend = Arc::new(PowerLossBackend::new(dir).unwrap());
    let store = Store::open_with_backend(backend.clone(), options(fsync)).unwrap();
    (backend, store)
}

/// What the next process finds: the directory opened on the real disk.
fn reopen(dir: &std::path::Path, fsync: FsyncMode) -> (Store, Vec<Record>) {
    let store = Store::open(dir, options(fsync)).unwrap();
    let last = store.last_position().index;
    let log = (1..=last).map(record).collect();
    (store, log)
}

#[test]
fn under_always_every_acknowledged_write_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, store) = open_lazy(dir.path(), FsyncMode::Always);
    let mut most_segments = 0;
    for index in 1..=400 {
        store.append(&[record(index)]).unwrap();
        most_segments = most_segments.max(store.stats().segments);
        if index % 150 == 0 {
            store.compact().unwrap();
        }
    }
    assert!(most_segments > 2, "the run must roll segments");
    assert_eq!(
        backend.unsynced_bytes(),
        0,
        "`always` leaves nothing unsynced"
    );
    drop((store, backend)); // the kill

    let (store, log) = reopen(dir.path(), FsyncMode::Always);
    assert_eq!(log.len(), 400, "acknowledged writes lost");
    assert_state(&store, &fold(&log), "after the kill");
    assert_eq!(store.stats().truncated_tail_bytes_at_open, 0);
}

#[test]
fn under_batch_writes_that_waited_survive_and_the_others_are_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, store) = open_lazy(dir.path(), FsyncMode::Batch);
    let store = Arc::new(store);
    let next = Mutex::new(1u64);
    let acked = Mutex::new(Vec::new());
    // Four writers: append under one mutex, wait for durability outside it,
    // so group-commit fsyncs run while others append.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let index = {
                    let mut next = next.lock().unwrap();
                    if *next > 300 {
                        return;
                    }
                    store.append(&[record(*next)]).unwrap();
                    *next += 1;
                    *next - 1
                };
                store.wait_durable(index).unwrap();
                acked.lock().unwrap().push(index);
            });
        }
    });
    let acked = acked.into_inner().unwrap();
    assert_eq!(acked.len(), 300);
    // Written but never waited for, hence never fsynced.
    for index in 301..=310 {
        store.append(&[record(index)]).unwrap();
    }
    assert!(backend.unsynced_bytes() > 0);
    drop((store, backend));

    let (store, log) = reopen(dir.path(), FsyncMode::Batch);
    assert_eq!(
        log.len(),
        300,
        "every waited-for write and none of the others"
    );
    assert_state(&store, &fold(&log), "after the kill");
}

/// Appends 1..=300 one record per call under `never`, with an explicit
/// sync after record 100, checking along the way that the memory held for
/// unsynced bytes stays within about one segment.
fn never_workload(store: &Store, unsynced: impl Fn() -> u64) {
    for index in 1..=300 {
        store.append(&[record(index)]).unwrap();
        if index == 100 {
            store.sync().unwrap();
            assert_eq!(unsynced(), 0, "Store::sync flushes the overlay");
        }
        assert!(
            unsynced() <= SEGMENT_BYTES + PREALLOCATE_BYTES,
            "{} unsynced bytes after record {index}: closing a segment must flush them",
            unsynced()
        );
        if index == 250 {
            store.compact().unwrap();
        }
    }
}

#[test]
fn under_never_unsynced_writes_are_lost_and_the_store_reopens_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, store) = open_lazy(dir.path(), FsyncMode::Never);
    never_workload(&store, || backend.unsynced_bytes());
    let lost_bytes = backend.unsynced_bytes();
    assert!(lost_bytes > 0, "the last segment holds unsynced records");
    drop((store, backend));

    let (store, log) = reopen(dir.path(), FsyncMode::Never);
    let kept = log.len();
    assert!(kept < 300, "acknowledged writes under `never` must be lost");
    assert!(
        kept >= 100,
        "{kept} records kept: the explicit sync covered 100"
    );
    assert_state(&store, &fold(&log), "after the kill");
    // Sync boundaries fall between frames, so nothing is torn.
    assert_eq!(store.stats().truncated_tail_bytes_at_open, 0);
    // And the reopened store is usable.
    store.append(&[record(kept as u64 + 1)]).unwrap();
}

#[test]
fn control_under_never_a_kill_on_the_plain_backend_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(FsyncMode::Never)).unwrap();
    never_workload(&store, || 0);
    drop(store);
    let (store, log) = reopen(dir.path(), FsyncMode::Never);
    assert_eq!(log.len(), 300, "the page cache survives a process kill");
    assert_state(&store, &fold(&log), "after the kill");
}

#[test]
fn files_created_but_never_synced_survive_empty_and_recovery_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, store) = open_lazy(dir.path(), FsyncMode::Always);
    for index in 1..=40 {
        store.append(&[record(index)]).unwrap();
    }
    let last = store.last_position().index;
    drop(store);
    // A kill between creating the next segment (or a snapshot), with the
    // directory fsynced, and the fsync of its first bytes. (Without the
    // directory fsync the names themselves are lost: see the backend's
    // own tests.)
    let next_segment = format!("seg-{:020}.log", last + 1);
    let snapshot_tmp = format!("snap-{last:020}.snap.tmp");
    let mut unsynced_names = Vec::new();
    let mut files = Vec::new();
    for name in [&next_segment, &snapshot_tmp] {
        let file = backend.create(name).unwrap();
        unsynced_names.push(name.clone());
        files.push(file);
    }
    backend.sync_dir().unwrap();
    for file in &files {
        file.write_at(&[0x4d; 64], 0).unwrap();
    }
    drop((files, backend));
    let fs = FsBackend::new(dir.path()).unwrap();
    for name in &unsynced_names {
        assert_eq!(fs.open(name).unwrap().len().unwrap(), 0, "{name}");
    }

    let (store, log) = reopen(dir.path(), FsyncMode::Always);
    assert_eq!(log.len(), 40);
    assert_state(&store, &fold(&log), "after the kill");
    let names = fs.list().unwrap();
    for name in &unsynced_names {
        assert!(!names.contains(name), "{name} left behind: {names:?}");
    }
    store.append(&[record(41)]).unwrap();
}
