//! Invariant: `truncate_from` removes exactly the records from an index on,
//! durably, and the state reverts to what the remaining log produces: keys
//! the removed records overwrote or deleted show their earlier entries
//! again (DESIGN.md §5, a deposed leader truncating its divergent suffix).
//! A power cut part-way through leaves the old log or a shorter prefix of
//! it, never a log with holes.

mod common;

use std::sync::Arc;

use mimeo_storage::sim::{SimBackend, Unsynced};
use mimeo_storage::{Error, FsyncMode, LogPosition, Mutation, Options, Store};

use common::{assert_state, delete, fold, put, record};

fn options(segment_bytes: u64) -> Options {
    Options {
        fsync: FsyncMode::Batch,
        segment_bytes,
        ..Options::default()
    }
}

#[test]
fn truncation_reverts_overwritten_and_deleted_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(1 << 20)).unwrap();
    let log = vec![
        put(1, "a", "a1"),
        put(2, "b", "b1"),
        put(3, "a", "a2"),
        delete(4, "b"),
        put(5, "c", "c1"),
    ];
    store.append(&log).unwrap();
    assert_eq!(store.get(b"b").unwrap().unwrap().value, None);

    assert_eq!(store.truncate_from(3).unwrap(), 3);
    assert_eq!(store.last_position(), LogPosition::new(1, 2));
    let a = store.get(b"a").unwrap().unwrap();
    assert_eq!(a.value.as_deref(), Some(&b"a1"[..]));
    assert_eq!(a.meta, log[0].meta);
    assert_eq!(
        store.get(b"b").unwrap().unwrap().value.as_deref(),
        Some(&b"b1"[..])
    );
    assert_eq!(store.get(b"c").unwrap(), None);
    assert_state(&store, &fold(&log[..2]), "after truncation");
    assert_eq!(store.durable_index(), 2);

    // A new leader's records continue the shortened log.
    assert!(matches!(
        store.append(&[put(6, "d", "d")]).unwrap_err(),
        Error::NonContiguous {
            expected: 3,
            got: 6
        }
    ));
    let next = record(
        2,
        3,
        Mutation::Put {
            key: b"a".to_vec(),
            value: b"a3".to_vec(),
        },
    );
    store.append(std::slice::from_ref(&next)).unwrap();
    drop(store);

    let store = Store::open(dir.path(), options(1 << 20)).unwrap();
    let expected = [log[0].clone(), log[1].clone(), next];
    assert_eq!(store.read_log(1, 10).unwrap(), expected);
    assert_state(&store, &fold(&expected), "after reopening");
}

#[test]
fn truncation_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(400)).unwrap();
    let log: Vec<_> = (1..=100)
        .map(|i| put(i, &format!("k{}", i % 9), &format!("v{i}")))
        .collect();
    for chunk in log.chunks(7) {
        store.append(chunk).unwrap();
    }
    let segments_before = store.stats().segments;
    assert!(segments_before > 10);

    assert_eq!(store.truncate_from(37).unwrap(), 64);
    assert!(store.stats().segments < segments_before);
    assert_eq!(store.read_log(1, usize::MAX).unwrap(), log[..36]);
    assert_state(&store, &fold(&log[..36]), "after truncation");
    drop(store);

    let store = Store::open(dir.path(), options(400)).unwrap();
    assert_eq!(store.last_position().index, 36);
    assert_state(&store, &fold(&log[..36]), "after reopening");
    // Truncating at a segment boundary and at the very start.
    let boundary = store.read_log(1, usize::MAX).unwrap().len() as u64;
    assert_eq!(store.truncate_from(boundary + 1).unwrap(), 0);
    assert_eq!(store.truncate_from(1).unwrap(), 36);
    assert_eq!(store.last_position(), LogPosition::default());
    assert_eq!(store.scan(..).unwrap(), vec![]);
    store.append(&[put(1, "fresh", "start")]).unwrap();
}

#[test]
fn truncation_below_the_compaction_floor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options(1 << 20)).unwrap();
    let log: Vec<_> = (1..=10).map(|i| put(i, "k", &format!("v{i}"))).collect();
    store.append(&log).unwrap();
    store.compact().unwrap();
    store.append(&[put(11, "k", "v11")]).unwrap();
    assert!(matches!(
        store.truncate_from(10).unwrap_err(),
        Error::Compacted {
            requested: 10,
            first_available: 11
        }
    ));
    assert_eq!(store.truncate_from(11).unwrap(), 1);
    assert_eq!(
        store.get(b"k").unwrap().unwrap().value.as_deref(),
        Some(&b"v10"[..])
    );
    assert_eq!(store.truncate_from(12).unwrap(), 0);
}

#[test]
fn a_power_cut_during_truncation_leaves_a_contiguous_prefix() {
    let log: Vec<_> = (1..=60)
        .map(|i| put(i, &format!("k{}", i % 5), &format!("value {i}")))
        .collect();
    let from = 17;
    let mut cut_after = 1;
    loop {
        let disk = Arc::new(SimBackend::new());
        let store = Store::open_with_backend(disk.clone(), options(300)).unwrap();
        for chunk in log.chunks(4) {
            store.append(chunk).unwrap();
        }
        store.sync().unwrap();
        disk.schedule_power_cut(cut_after);
        let finished = store.truncate_from(from).is_ok();
        drop(store);

        let store = Store::open_with_backend(Arc::new(disk.reboot(Unsynced::Lost)), options(300))
            .unwrap_or_else(|e| panic!("cut after {cut_after} operations: {e}"));
        let last = store.last_position().index;
        assert!(
            last >= from - 1,
            "cut after {cut_after}: log ends at {last}"
        );
        if finished {
            assert_eq!(last, from - 1, "a finished truncation is durable");
        }
        let kept = &log[..last as usize];
        assert_eq!(store.read_log(1, usize::MAX).unwrap(), kept);
        assert_state(&store, &fold(kept), &format!("cut after {cut_after}"));
        if finished {
            break;
        }
        cut_after += 1;
    }
    assert!(
        cut_after > 5,
        "the truncation took only {cut_after} operations"
    );
}
