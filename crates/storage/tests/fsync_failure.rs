//! A failed fsync, then a restart (issue 19, item 5): the records written
//! after the last successful fsync are not served as durable. The page
//! cache still shows them after the failure (and the fsync at open would
//! succeed), but the disk may never have taken them.

mod common;

use std::sync::Arc;

use common::put;
use mimeo_storage::{
    Error, FsBackend, FsyncFaultBackend, FsyncMode, Options, Store, FAIL_FSYNC_FILE,
};

fn faulty_store(dir: &std::path::Path, fsync: FsyncMode) -> Store {
    let backend = FsyncFaultBackend::new(Arc::new(FsBackend::new(dir).unwrap()));
    let options = Options {
        fsync,
        ..Options::default()
    };
    Store::open_with_backend(Arc::new(backend), options).unwrap()
}

#[test]
fn records_after_a_failed_fsync_are_dropped_at_the_next_open() {
    for fsync in [FsyncMode::Batch, FsyncMode::Always] {
        let dir = tempfile::tempdir().unwrap();
        let store = faulty_store(dir.path(), fsync);
        store.append(&[put(1, "a", "1"), put(2, "b", "2")]).unwrap();
        store.wait_durable(2).unwrap();

        // The disk starts failing fsyncs (EIO).
        let trigger = dir.path().join(FAIL_FSYNC_FILE);
        std::fs::write(&trigger, b"").unwrap();
        let failed = store
            .append(&[put(3, "c", "3"), put(4, "a", "4")])
            .and_then(|last| store.wait_durable(last.index));
        assert!(
            matches!(
                failed,
                Err(Error::Io {
                    op: "fsync segment",
                    ..
                })
            ),
            "{fsync}: {failed:?}"
        );
        assert!(store.is_poisoned());
        assert!(matches!(
            store.append(&[put(5, "d", "5")]),
            Err(Error::Poisoned)
        ));
        assert_eq!(store.durable_index(), 2);
        drop(store);

        // The disk is fixed (or replaced by a working one) and the node
        // restarts: an fsync at open would succeed now, and the page cache
        // still holds records 3 and 4, but nothing ever acknowledged them.
        std::fs::remove_file(&trigger).unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        assert_eq!(store.last_position().index, 2, "{fsync}");
        assert_eq!(store.durable_index(), 2);
        assert!(store.get(b"c").unwrap().is_none(), "{fsync}");
        assert_eq!(store.get(b"a").unwrap().unwrap().value.unwrap(), b"1");
        let stats = store.stats();
        assert_eq!(stats.unsynced_records_dropped_at_open, 2);
        assert!(stats.truncated_tail_bytes_at_open > 0, "{stats:?}");

        // The log goes on from there, and the next open drops nothing.
        store.append(&[put(3, "e", "5")]).unwrap();
        store.sync().unwrap();
        drop(store);
        let store = Store::open(dir.path(), Options::default()).unwrap();
        assert_eq!(store.last_position().index, 3);
        assert_eq!(store.stats().unsynced_records_dropped_at_open, 0);
        assert_eq!(store.get(b"e").unwrap().unwrap().value.unwrap(), b"5");
    }
}
