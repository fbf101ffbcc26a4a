//! Restarting from a hard state, a snapshot and a log; the log record layout.

use super::*;

#[test]
fn records_round_trip_under_one_key_and_the_old_layout_still_reads() {
    use mimeo_storage::{Mutation, Record, RecordMeta};
    let delete = LogEntry {
        position: pos(3, 9),
        command: Command::Delete { key: b"k".to_vec() },
    };
    for entry in [noop(3, 7), put(3, 8, "k"), delete.clone()] {
        let record = entry.to_record(2);
        assert_eq!(record.meta.position, entry.position);
        assert_eq!(record.mutation.key(), crate::RECORD_KEY);
        assert_eq!(LogEntry::from_record(&record).unwrap(), entry);
    }

    // Earlier builds stored each entry under its own key, a noop as a
    // delete of the reserved key.
    let old = |position, mutation| Record {
        meta: RecordMeta {
            position,
            origin: 1,
            seq: position.index,
            version: Vec::new(),
        },
        mutation,
    };
    let old_noop = old(pos(3, 7), Mutation::Delete { key: Vec::new() });
    let old_put = old(
        pos(3, 8),
        Mutation::Put {
            key: b"k".to_vec(),
            value: b"v8".to_vec(),
        },
    );
    let old_delete = old(pos(3, 9), Mutation::Delete { key: b"k".to_vec() });
    assert_eq!(LogEntry::from_record(&old_noop).unwrap(), noop(3, 7));
    assert_eq!(LogEntry::from_record(&old_put).unwrap(), put(3, 8, "k"));
    assert_eq!(LogEntry::from_record(&old_delete).unwrap(), delete);

    // A value under the reserved key that is no command is an error.
    let garbage = old(
        pos(3, 10),
        Mutation::Put {
            key: Vec::new(),
            value: vec![0xff; 3],
        },
    );
    assert!(LogEntry::from_record(&garbage).is_err());
}

#[test]
fn recovery_from_a_snapshot_and_the_log_after_it() {
    let log: Vec<LogEntry> = (1..=8).map(|i| put(1, i, &format!("k{i}"))).collect();
    let snapshot = kv_of(&log[..5]);
    let hard_state = HardState {
        term: 1,
        voted_for: None,
        voter: true,
    };
    let restore = |snapshot: Option<Snapshot>, entries: &[LogEntry]| {
        Core::restore(
            snapshot_config(1, 3),
            Millis(0),
            hard_state,
            snapshot,
            entries.to_vec(),
        )
    };
    // The log overlaps the snapshot: `snapshot_keep` (2) entries stay.
    let core = restore(Some(snapshot.clone()), &log[2..]).unwrap();
    assert_eq!(core.first_index(), 4);
    assert_eq!((core.commit_index(), core.applied_index()), (5, 5));
    assert_eq!(core.last_position(), pos(1, 8));
    assert_eq!(core.applied_value(b"k5").unwrap().1, pos(1, 5));
    assert_eq!(core.applied_value(b"k6"), None); // not known committed yet
                                                 // The log continues the snapshot exactly, or is empty.
    let core = restore(Some(snapshot.clone()), &log[5..]).unwrap();
    assert_eq!(core.first_index(), 6);
    let core = restore(Some(snapshot.clone()), &[]).unwrap();
    assert_eq!(core.last_position(), pos(1, 5));
    // A log that ends before the snapshot.
    let core = restore(Some(snapshot.clone()), &log[..3]).unwrap();
    assert_eq!(core.last_position(), pos(1, 5));
    // A gap after the snapshot.
    assert_eq!(
        restore(Some(snapshot.clone()), &log[6..]).unwrap_err(),
        RecoverError::SnapshotGap {
            snapshot_index: 5,
            first: 7
        }
    );
    // The log holds the snapshot's index with another term.
    let other = Snapshot {
        last: pos(2, 5),
        ..snapshot.clone()
    };
    let hard_state_2 = HardState {
        term: 2,
        voted_for: None,
        voter: true,
    };
    let err = Core::restore(
        snapshot_config(1, 3),
        Millis(0),
        hard_state_2,
        Some(other),
        log[3..].to_vec(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            RecoverError::SnapshotConflict {
                index: 5,
                snapshot_term: 2,
                log_term: 1
            }
        ),
        "{err}"
    );
    // Without a snapshot the log must start at 1.
    assert_eq!(
        restore(None, &log[1..]).unwrap_err(),
        RecoverError::Gap {
            expected: 1,
            found: 2
        }
    );
}
