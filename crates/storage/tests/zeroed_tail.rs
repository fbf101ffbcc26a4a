//! An all-zero record at the tail of the log (issue 19, item 8) is never
//! taken for space the store wrote ahead of its records: below the
//! synced-through watermark it is corruption (start-up is refused, naming
//! file and offset); above it, a torn write, cut and counted in
//! `truncated_tail_bytes_at_open`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::put;
use mimeo_storage::{
    Error, FsBackend, FsyncFaultBackend, FsyncMode, Options, Store, FAIL_FSYNC_FILE,
};

const SEGMENT_HEADER: usize = 32;

fn segment(dir: &Path) -> PathBuf {
    dir.join("seg-00000000000000000001.log")
}

/// The byte ranges of the first `count` frames of a segment.
fn frames(segment: &Path, count: usize) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(segment).unwrap();
    let mut pos = SEGMENT_HEADER;
    (0..count)
        .map(|_| {
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let frame = (pos, pos + 8 + len);
            pos = frame.1;
            frame
        })
        .collect()
}

fn zero(segment: &Path, from: usize, to: usize) {
    let mut bytes = std::fs::read(segment).unwrap();
    bytes[from..to].fill(0);
    std::fs::write(segment, bytes).unwrap();
}

#[test]
fn a_zeroed_last_record_is_reported_not_taken_for_unwritten_space() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        fsync: FsyncMode::Batch,
        ..Options::default()
    };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    for i in 1..=10 {
        store.append(&[put(i, &format!("k{i}"), "v")]).unwrap();
        store.wait_durable(i).unwrap(); // acknowledged
    }
    drop(store);
    let seg = segment(dir.path());
    let (start, end) = frames(&seg, 10)[9];
    assert!(
        std::fs::metadata(&seg).unwrap().len() > end as u64 + 4096,
        "space is written ahead of the records"
    );
    zero(&seg, start, end);

    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(store.last_position().index, 9);
    assert!(store.get(b"k10").unwrap().is_none());
    // The loss is reported: the record's bytes (and the space after it)
    // are counted as a truncated tail, not passed over as unwritten space.
    let truncated = store.stats().truncated_tail_bytes_at_open;
    assert!(
        truncated >= (end - start) as u64,
        "truncated_tail_bytes_at_open = {truncated}: the zeroed record was dropped without a word"
    );
}

#[test]
fn a_zeroed_record_below_the_synced_through_watermark_refuses_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FsyncFaultBackend::new(Arc::new(FsBackend::new(dir.path()).unwrap()));
    let options = Options {
        fsync: FsyncMode::Batch,
        ..Options::default()
    };
    let store = Store::open_with_backend(Arc::new(backend), options.clone()).unwrap();
    for i in 1..=3 {
        store.append(&[put(i, &format!("k{i}"), "v")]).unwrap();
    }
    store.wait_durable(3).unwrap(); // 1..=3 acknowledged
    let trigger = dir.path().join(FAIL_FSYNC_FILE);
    std::fs::write(&trigger, b"").unwrap();
    store.append(&[put(4, "k4", "v")]).unwrap();
    assert!(store.wait_durable(4).is_err());
    drop(store); // poisoned: it recorded that records up to 3 were fsynced
    std::fs::remove_file(&trigger).unwrap();

    // Records 3 (acknowledged) and 4 (not) read back as zeros.
    let seg = segment(dir.path());
    let frames = frames(&seg, 4);
    zero(&seg, frames[2].0, frames[3].1);

    match Store::open(dir.path(), options) {
        Err(Error::Corrupt { path, offset, reason }) => {
            assert_eq!(path, seg);
            assert_eq!(offset, frames[2].0 as u64);
            assert!(
                reason.contains("record 3") && reason.contains("synced-through"),
                "{reason}"
            );
        }
        Ok(store) => panic!(
            "opened with the acknowledged record 3 gone: last index {}, truncated_tail_bytes_at_open {}",
            store.last_position().index,
            store.stats().truncated_tail_bytes_at_open
        ),
        Err(other) => panic!("expected Error::Corrupt, got {other}"),
    }
}
