//! One store per data directory (issue 19, item 2): a second open is
//! refused while the first holds the lock, and a lookup that finds another
//! key's record where the index points (what a second writer on the same
//! directory produces) is an error, never a wrong value.

mod common;

use common::put;
use mimeo_storage::{Error, FsyncMode, Options, PowerLossBackend, Store};
use std::sync::Arc;

#[test]
fn a_second_open_of_a_directory_is_refused_naming_it_and_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path(), Options::default()).unwrap();
    first.append(&[put(1, "a", "1")]).unwrap();

    let err = Store::open(dir.path(), Options::default()).unwrap_err();
    match &err {
        Error::Locked { dir: locked, pid } => {
            assert_eq!(locked, dir.path());
            assert_eq!(*pid, Some(std::process::id()));
        }
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string())
            && message.contains(&std::process::id().to_string()),
        "{message}"
    );
    // A power-loss backend on the same directory is refused too.
    let backend = Arc::new(PowerLossBackend::new(dir.path()).unwrap());
    assert!(matches!(
        Store::open_with_backend(backend, Options::default()),
        Err(Error::Locked { .. })
    ));

    // The first store is untouched, and once it is gone the directory
    // opens again.
    first.sync().unwrap();
    assert_eq!(first.get(b"a").unwrap().unwrap().value.unwrap(), b"1");
    drop(first);
    let again = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(again.last_position().index, 1);
}

#[test]
fn a_lookup_that_reads_another_keys_record_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        fsync: FsyncMode::Always,
        preallocate_bytes: 0,
        ..Options::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    // Two frames of the same length: keys, values and metadata of the same
    // sizes.
    store.append(&[put(1, "a", "1"), put(2, "b", "2")]).unwrap();
    let segment = dir.path().join("seg-00000000000000000001.log");
    let bytes = std::fs::read(&segment).unwrap();
    let header = 32;
    let frame = (bytes.len() - header) / 2;
    assert_eq!(header + 2 * frame, bytes.len());

    // Another writer puts record 2's frame where record 1 was, as two
    // processes appending to one directory do: every checksum is intact.
    let mut changed = bytes.clone();
    changed.copy_within(header + frame..header + 2 * frame, header);
    std::fs::write(&segment, &changed).unwrap();

    let err = store.get(b"a").unwrap_err();
    assert!(
        matches!(err, Error::IndexMismatch { offset, .. } if offset == header as u64),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("\"a\"") && message.contains("\"b\""),
        "{message}"
    );
    assert!(store.scan(..).is_err());
    // The key whose frame is where the index says still reads.
    assert_eq!(store.get(b"b").unwrap().unwrap().value.unwrap(), b"2");
}
