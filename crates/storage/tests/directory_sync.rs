//! Invariant: every directory change the store depends on is fsynced
//! before a write it covers is acknowledged. On a [`PowerLossBackend`] a
//! kill loses creates, renames and removes made since the last
//! `sync_dir` (as a power cut may on a real file system), so a missing
//! directory fsync in the store (after creating a segment, installing a
//! compaction snapshot, removing segments) loses acknowledged writes or
//! leaves a directory recovery refuses. Issue 20, item 2.
//!
//! The workload is killed after every one of its steps in turn, and the
//! next process (a plain [`Store::open`]) must find exactly the
//! acknowledged writes.

mod common;

use std::sync::Arc;

use mimeo_storage::{FsyncMode, Options, PowerLossBackend, Record, Store};

use common::{assert_state, fold, put};

const STEPS: u64 = 60;

fn options() -> Options {
    Options {
        fsync: FsyncMode::Always,
        segment_bytes: 2048,
        compact_min_bytes: u64::MAX, // compaction only where the workload asks
        ..Options::default()
    }
}

/// Record `index`: 7 keys rewritten, about 300 bytes, so a segment holds
/// about six and compaction has garbage to drop.
fn record(index: u64) -> Record {
    put(
        index,
        &format!("key-{}", index % 7),
        &format!("value-{index:05}-").repeat(24),
    )
}

/// Runs the workload's first `steps` steps on a fresh store and kills it:
/// appends (rolling segments), two compactions (a snapshot renamed into
/// place, segments removed).
fn run_and_kill(dir: &std::path::Path, steps: u64) {
    let backend = Arc::new(PowerLossBackend::new(dir).unwrap());
    let store = Store::open_with_backend(backend.clone(), options()).unwrap();
    for index in 1..=steps {
        // Acknowledged when `append` returns, under `always`.
        store.append(&[record(index)]).unwrap();
        if index % 25 == 0 {
            store.compact().unwrap();
        }
    }
    assert_eq!(
        backend.unsynced_bytes(),
        0,
        "`always` leaves no unsynced bytes"
    );
    drop((store, backend)); // the kill: no flush, no sync_dir
}

#[test]
fn a_kill_after_any_step_keeps_every_acknowledged_write() {
    let mut most_segments = 0;
    for steps in 1..=STEPS {
        let dir = tempfile::tempdir().unwrap();
        run_and_kill(dir.path(), steps);
        let store = Store::open(dir.path(), options())
            .unwrap_or_else(|e| panic!("killed after step {steps}: the store does not open: {e}"));
        most_segments = most_segments.max(store.stats().segments);
        assert_eq!(
            store.last_position().index,
            steps,
            "killed after step {steps}: acknowledged writes lost"
        );
        let log: Vec<Record> = (1..=steps).map(record).collect();
        assert_state(&store, &fold(&log), &format!("killed after step {steps}"));
    }
    assert!(most_segments > 2, "the workload must roll segments");
}
