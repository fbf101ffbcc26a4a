//! After a failed fsync, a restarted node's durable index starts at the
//! store's synced-through watermark, not at the end of what the page cache
//! showed (issue 19, item 5): the entries written after the last successful
//! fsync are gone from the recovered log, so they count toward no quorum
//! until the leader sends them again.

use std::sync::Arc;

use mimeo_leader_follower::driver::{recover, store_options, write_hard_state};
use mimeo_leader_follower::{Command, Config, HardState, LogEntry, LogPosition, Millis};
use mimeo_storage::{FsBackend, FsyncFaultBackend, Options, Store, FAIL_FSYNC_FILE};

fn entry(index: u64) -> LogEntry {
    LogEntry {
        position: LogPosition::new(1, index),
        command: Command::Put {
            key: format!("k{index}").into(),
            value: b"v".to_vec(),
        },
    }
}

#[test]
fn recovery_after_a_failed_fsync_starts_from_the_synced_through_watermark() {
    let dir = tempfile::tempdir().unwrap();
    write_hard_state(
        &FsBackend::new(dir.path()).unwrap(),
        &HardState {
            term: 1,
            voted_for: None,
            voter: true,
        },
    )
    .unwrap();
    let options = store_options(Options::default());
    {
        let backend = FsyncFaultBackend::new(Arc::new(FsBackend::new(dir.path()).unwrap()));
        let store = Store::open_with_backend(Arc::new(backend), options.clone()).unwrap();
        let first: Vec<_> = (1..=5).map(|i| entry(i).to_record(0)).collect();
        store.append(&first).unwrap();
        store.wait_durable(5).unwrap();
        std::fs::write(dir.path().join(FAIL_FSYNC_FILE), b"").unwrap();
        let more: Vec<_> = (6..=8).map(|i| entry(i).to_record(0)).collect();
        store.append(&more).unwrap();
        assert!(store.wait_durable(8).is_err());
        // The driver stops here; the node exits.
    }
    std::fs::remove_file(dir.path().join(FAIL_FSYNC_FILE)).unwrap();

    let store = Store::open(dir.path(), options).unwrap();
    let core = recover(
        Config::new(1, vec![2, 3]),
        &store,
        &**store.backend(),
        Millis(0),
    )
    .unwrap();
    assert_eq!(core.last_position(), LogPosition::new(1, 5));
    assert_eq!(core.status(Millis(0)).durable_index, 5);
}
