//! Invariant: compaction changes how the state is stored, never what it
//! is. It reduces disk use, keeps tombstones, preserves the state across
//! reopening, and moves the start of the log to the floor: reading below it
//! answers `Compacted`. Automatic compaction bounds disk use as the log
//! grows, and a power cut at any point of a compaction loses nothing.

mod common;

use std::sync::{Arc, Mutex};

use mimeo_storage::sim::{SimBackend, Unsynced};
use mimeo_storage::{Error, FsyncMode, Options, Record, Store};

use common::{assert_state, delete, fold, put};

fn options(segment_bytes: u64) -> Options {
    Options {
        fsync: FsyncMode::Never,
        segment_bytes,
        compact_min_bytes: u64::MAX,
        ..Options::default()
    }
}

/// 20 keys, each overwritten 30 times; then 5 of them deleted.
fn overwrites() -> Vec<Record> {
    let mut log: Vec<_> = (1..=600)
        .map(|i| {
            put(
                i,
                &format!("key{:02}", i % 20),
                &format!("value {i:04} ").repeat(8),
            )
        })
        .collect();
    for k in 0..5 {
        let index = log.len() as u64 + 1;
        log.push(delete(index, &format!("key{k:02}")));
    }
    log
}

#[test]
fn compaction_reduces_disk_use_and_preserves_state_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(4096)).unwrap();
    let log = overwrites();
    for chunk in log.chunks(10) {
        store.append(chunk).unwrap();
    }
    let before = store.stats();
    assert!(before.garbage_bytes > before.disk_bytes / 2, "{before:?}");

    let stats = store.compact().unwrap();
    assert_eq!(stats.floor, log.last().unwrap().meta.position);
    assert_eq!(stats.entries, 20, "15 live keys and 5 tombstones");
    assert_eq!(stats.segments_removed, before.segments);
    assert_eq!(stats.bytes_before, before.disk_bytes);
    assert!(
        stats.bytes_after * 10 < stats.bytes_before,
        "compaction kept {} of {} bytes",
        stats.bytes_after,
        stats.bytes_before
    );
    let after = store.stats();
    assert_eq!(after.disk_bytes, stats.bytes_after);
    assert_eq!(after.segments, 0);
    assert_eq!(after.compactions, 1);
    assert_eq!(after.garbage_bytes, 0);
    assert_eq!(after.durable_index, log.len() as u64);
    assert_state(&store, &fold(&log), "after compaction");
    assert_eq!(
        store.get(b"key03").unwrap().unwrap().value,
        None,
        "tombstone kept"
    );

    // Writes continue after the floor; a second compaction folds them in.
    store.append(&[put(606, "key03", "back")]).unwrap();
    drop(store);
    let store = Store::open(dir.path(), options(4096)).unwrap();
    let mut expected = fold(&log);
    expected.extend(fold(&[put(606, "key03", "back")]));
    assert_state(&store, &expected, "after reopening");
    assert_eq!(store.first_index(), 606);
    store.compact().unwrap();
    drop(store);
    let store = Store::open(dir.path(), options(4096)).unwrap();
    assert_state(&store, &expected, "after a second compaction and reopening");
    let files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != mimeo_storage::LOCK_FILE)
        .count();
    assert_eq!(files, 1, "only the newest snapshot is left (besides LOCK)");
}

#[test]
fn reading_the_log_below_the_floor_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(4096)).unwrap();
    let log = overwrites();
    store.append(&log[..100]).unwrap();
    store.compact().unwrap();
    store.append(&log[100..120]).unwrap();

    assert_eq!(store.first_index(), 101);
    for from in [0, 1, 50, 100] {
        match store.read_log(from, 10) {
            Err(Error::Compacted {
                requested,
                first_available,
            }) => {
                assert_eq!(requested, from);
                assert_eq!(first_available, 101);
            }
            other => panic!("read_log({from}): {other:?}"),
        }
    }
    let err = store.read_log(5, 10).unwrap_err().to_string();
    assert!(err.contains("first index still in the log is 101"), "{err}");
    assert_eq!(store.read_log(101, 100).unwrap(), log[100..120]);
}

#[test]
fn automatic_compaction_bounds_disk_use() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        fsync: FsyncMode::Never,
        segment_bytes: 8192,
        compact_min_garbage_ratio: 0.5,
        compact_min_bytes: 16 << 10,
        ..Options::default()
    };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    let mut written = 0u64;
    let mut log = Vec::new();
    for i in 1..=3000 {
        let r = put(i, &format!("key{:02}", i % 25), &"x".repeat(200));
        written += 230;
        log.push(r);
    }
    for chunk in log.chunks(20) {
        store.append(chunk).unwrap();
    }
    // Dropping the store waits for a running background compaction.
    drop(store);
    let store = Store::open(dir.path(), options).unwrap();
    let stats = store.stats();
    assert!(
        store.first_index() > 1,
        "no automatic compaction ran: {stats:?}"
    );
    assert!(
        stats.disk_bytes * 4 < written,
        "{} bytes on disk after writing about {written}",
        stats.disk_bytes
    );
    assert_state(&store, &fold(&log), "after automatic compaction");
}

#[test]
fn compaction_runs_alongside_writers() {
    let disk = Arc::new(SimBackend::new());
    let store = Store::open_with_backend(disk, options(2048)).unwrap();
    let log = overwrites();
    let next = Mutex::new(0usize);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| loop {
                let mut next = next.lock().unwrap();
                let Some(r) = log.get(*next) else { return };
                store.append(std::slice::from_ref(r)).unwrap();
                *next += 1;
            });
        }
        s.spawn(|| {
            for _ in 0..10 {
                store.compact().unwrap();
            }
        });
    });
    assert_state(&store, &fold(&log), "after concurrent compactions");
    assert_eq!(
        store.read_log(store.first_index(), usize::MAX).unwrap(),
        log[store.first_index() as usize - 1..]
    );
}

#[test]
fn a_power_cut_at_any_point_of_a_compaction_loses_nothing() {
    let log = overwrites();
    let mut cut_after = 1;
    loop {
        let disk = Arc::new(SimBackend::new());
        let store = Store::open_with_backend(disk.clone(), options(2048)).unwrap();
        // A first compaction, so the second one also replaces a snapshot.
        store.append(&log[..300]).unwrap();
        store.compact().unwrap();
        store.append(&log[300..]).unwrap();
        store.sync().unwrap();
        disk.schedule_power_cut(cut_after);
        let finished = store.compact().is_ok();
        drop(store);

        for unsynced in [Unsynced::Lost, Unsynced::Torn { seed: cut_after }] {
            let context = format!("cut after {cut_after} operations, {unsynced:?}");
            let store = Store::open_with_backend(Arc::new(disk.reboot(unsynced)), options(2048))
                .unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_state(&store, &fold(&log), &context);
            assert_eq!(store.last_position(), log.last().unwrap().meta.position);
            let first = store.first_index();
            assert!(
                first == 301 || first == log.len() as u64 + 1,
                "{context}: first index {first}"
            );
            if finished {
                assert_eq!(
                    first,
                    log.len() as u64 + 1,
                    "{context}: a finished compaction is durable"
                );
            }
        }
        if finished {
            break;
        }
        cut_after += 1;
    }
    assert!(
        cut_after > 10,
        "the compaction took only {cut_after} operations"
    );
}
