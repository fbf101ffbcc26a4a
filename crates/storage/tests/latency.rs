//! The store times each append's write and each group-commit fsync, and
//! counts exactly the fsyncs it performs (DESIGN.md §8: performance is
//! measured, and `mimeo_storage_fsync_seconds` is how a node shows it).

mod common;

use mimeo_storage::{FsyncMode, Options, Store};

use common::put;

fn open(dir: &std::path::Path, fsync: FsyncMode) -> Store {
    let options = Options {
        fsync,
        ..Options::default()
    };
    Store::open(dir, options).unwrap()
}

#[test]
fn each_append_and_each_fsync_is_timed_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncMode::Batch);
    let stats = store.stats();
    assert_eq!(stats.write_latency.count(), 0);
    assert_eq!(stats.fsync_latency.count(), 0);

    store.append(&[put(1, "a", "1"), put(2, "b", "2")]).unwrap();
    store.append(&[put(3, "c", "3")]).unwrap();
    // One fsync covers both appends; waiting again for what is durable
    // does not fsync.
    store.wait_durable(3).unwrap();
    store.wait_durable(2).unwrap();
    let stats = store.stats();
    assert_eq!(stats.write_latency.count(), 2);
    assert_eq!(stats.fsync_latency.count(), 1);
    assert!(stats.fsync_latency.sum() > std::time::Duration::ZERO);

    store.append(&[put(4, "d", "4")]).unwrap();
    store.sync().unwrap();
    let later = store.stats();
    assert_eq!(later.fsync_latency.since(&stats.fsync_latency).count(), 1);
}

#[test]
fn without_fsyncs_none_is_timed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncMode::Never);
    store.append(&[put(1, "a", "1")]).unwrap();
    store.wait_durable(1).unwrap();
    let stats = store.stats();
    assert_eq!(stats.write_latency.count(), 1);
    assert_eq!(stats.fsync_latency.count(), 0);
}

#[test]
fn under_always_each_append_is_fsynced_and_timed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), FsyncMode::Always);
    store.append(&[put(1, "a", "1"), put(2, "b", "2")]).unwrap();
    store.append(&[put(3, "c", "3")]).unwrap();
    store.wait_durable(3).unwrap();
    let stats = store.stats();
    assert_eq!(stats.write_latency.count(), 2);
    assert_eq!(stats.fsync_latency.count(), 2);
}
