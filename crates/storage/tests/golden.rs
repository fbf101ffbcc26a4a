//! Golden bytes of the on-disk formats: a segment (format version 2) and a
//! store snapshot (format version 1), as committed under `testdata/`.
//!
//! Each test decodes the committed file (the store opens it and reads back
//! exactly the records or state it holds) and encodes the same content
//! again (a fresh store writes it) to the same bytes. A change that would
//! misread existing data directories (a reordered `Mutation` variant, a
//! field moved in `RecordMeta`, a different header) fails here; such a
//! change needs a new format version (see the crate docs, *Versioning*).
//!
//! The files are written only on request, never silently:
//! `UPDATE_GOLDEN=1 cargo test -p mimeo-storage --test golden`, and the diff
//! is reviewed and committed with the format change.

use std::path::{Path, PathBuf};

use mimeo_storage::{Entry, FsyncMode, LogPosition, Mutation, Options, Record, RecordMeta, Store};

/// `testdata/<name>`, written from `fresh` when `UPDATE_GOLDEN=1`, and
/// otherwise read (the test fails when the file is missing).
fn golden(name: &str, fresh: &[u8]) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, fresh).unwrap();
        eprintln!("UPDATE_GOLDEN=1: wrote {}", path.display());
    }
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; generate it with UPDATE_GOLDEN=1 cargo test -p mimeo-storage --test golden",
            path.display()
        )
    })
}

/// Options that make the bytes a function of the records alone: every
/// append fsynced (so each frame's synced-through watermark is the index
/// before it) and no filler ahead of the records.
fn options() -> Options {
    Options {
        fsync: FsyncMode::Always,
        preallocate_bytes: 0,
        ..Options::default()
    }
}

fn meta(term: u64, index: u64) -> RecordMeta {
    RecordMeta {
        position: LogPosition::new(term, index),
        origin: 7,
        seq: 300 + index,
        version: vec![0xAB, index as u8],
    }
}

/// One record of each mutation, in two terms.
fn records() -> Vec<Record> {
    vec![
        Record {
            meta: meta(1, 1),
            mutation: Mutation::Put {
                key: b"alpha".to_vec(),
                value: b"one".to_vec(),
            },
        },
        Record {
            meta: meta(1, 2),
            mutation: Mutation::Put {
                key: b"beta".to_vec(),
                value: vec![0, 1, 2, 255],
            },
        },
        Record {
            meta: meta(2, 3),
            mutation: Mutation::Delete {
                key: b"alpha".to_vec(),
            },
        },
    ]
}

/// A live value and a tombstone.
fn state() -> Vec<(Vec<u8>, Entry)> {
    vec![
        (
            b"alpha".to_vec(),
            Entry {
                value: None,
                meta: meta(2, 3),
            },
        ),
        (
            b"beta".to_vec(),
            Entry {
                value: Some(vec![0, 1, 2, 255]),
                meta: meta(1, 2),
            },
        ),
    ]
}

/// The one file of `dir` whose name starts with `prefix`.
fn only_file(dir: &Path, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "{prefix}* in {}: {found:?}", dir.display());
    found.into_iter().next().unwrap()
}

#[test]
fn a_segment_decodes_and_re_encodes_byte_for_byte() {
    // Encode: a fresh store writes the records, one fsynced append each.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), options()).unwrap();
        for record in records() {
            store.append(std::slice::from_ref(&record)).unwrap();
        }
    }
    let segment = only_file(dir.path(), "seg-");
    assert_eq!(segment.file_name().unwrap(), "seg-00000000000000000001.log");
    let written = std::fs::read(&segment).unwrap();
    let fixed = golden("segment-v2.log", &written);
    assert_eq!(
        written, fixed,
        "a segment no longer encodes as testdata/segment-v2.log"
    );

    // Decode: a store on the committed segment reads back the records.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("seg-00000000000000000001.log"), &fixed).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.last_position(), LogPosition::new(2, 3));
    assert_eq!(store.read_log(1, 10).unwrap(), records());
    // The state the log leads to: a tombstone and a live value.
    assert_eq!(store.scan(..).unwrap(), state());
}

#[test]
fn a_snapshot_decodes_and_re_encodes_byte_for_byte() {
    let floor = LogPosition::new(2, 3);
    // Encode: a fresh store installs the state as its snapshot.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), options()).unwrap();
        store.reset_to(floor, state()).unwrap();
    }
    let snapshot = only_file(dir.path(), "snap-");
    assert_eq!(
        snapshot.file_name().unwrap(),
        "snap-00000000000000000003.snap"
    );
    let written = std::fs::read(&snapshot).unwrap();
    let fixed = golden("snapshot-v1.snap", &written);
    assert_eq!(
        written, fixed,
        "a snapshot no longer encodes as testdata/snapshot-v1.snap"
    );

    // Decode: a store on the committed snapshot holds exactly that state.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("snap-00000000000000000003.snap"), &fixed).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.last_position(), floor);
    assert_eq!(store.first_index(), 4);
    assert_eq!(store.scan(..).unwrap(), state());
}
