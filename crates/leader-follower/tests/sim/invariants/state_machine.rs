//! State machine safety (Raft §5.4.3), checked on the data: a node's
//! key-value view is exactly the result of applying the committed log up to
//! its applied index, so nodes that applied the same index answer reads
//! alike.

use std::collections::BTreeMap;

use mimeo_leader_follower::{Command, Core, LogEntry, LogPosition};

/// Compare `core`'s view of every key with the fold of `committed`.
pub(crate) fn check_state_machine(core: &Core, committed: &[LogEntry]) -> Result<(), String> {
    let upto = core.applied_index() as usize;
    let Some(prefix) = committed.get(..upto) else {
        return Err(format!(
            "node {} applied {upto} entries, more than the {} known committed",
            core.id(),
            committed.len()
        ));
    };
    let mut expected: BTreeMap<&[u8], (Option<&[u8]>, LogPosition)> = BTreeMap::new();
    for e in prefix {
        match &e.command {
            Command::Noop => {}
            Command::Put { key, value } => {
                expected.insert(key, (Some(value), e.position));
            }
            Command::Delete { key } => {
                expected.insert(key, (None, e.position));
            }
        }
    }
    let keys: std::collections::BTreeSet<&[u8]> = committed
        .iter()
        .filter_map(|e| match &e.command {
            Command::Put { key, .. } | Command::Delete { key } => Some(key.as_slice()),
            Command::Noop => None,
        })
        .collect();
    for key in keys {
        let want = expected.get(key).copied();
        let have = core.applied_value(key);
        if want != have {
            return Err(format!(
                "node {} at applied index {upto} has {have:?} for key {:?}, the committed log \
                 gives {want:?}",
                core.id(),
                String::from_utf8_lossy(key)
            ));
        }
    }
    Ok(())
}

#[test]
fn rejects_a_view_that_differs_from_the_log() {
    use mimeo_leader_follower::{Config, Millis};
    let mut core = Core::new(Config::new(1, vec![]), Millis(0)).unwrap();
    core.tick(core.next_timeout());
    core.persisted(Millis(1000), LogPosition::new(1, 1));
    assert_eq!(core.applied_index(), 1);
    let noop = LogEntry {
        position: LogPosition::new(1, 1),
        command: Command::Noop,
    };
    assert!(check_state_machine(&core, &[noop]).is_ok());
    let put = LogEntry {
        position: LogPosition::new(1, 1),
        command: Command::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        },
    };
    assert!(check_state_machine(&core, &[put])
        .unwrap_err()
        .contains("key \"k\""));
}

/// A broken snapshot (a view that differs from the committed log it claims
/// to fold) is caught, whether it was installed from a leader or
/// recovered.
#[test]
fn rejects_a_snapshot_that_differs_from_the_log() {
    use mimeo_leader_follower::{Config, HardState, Millis, Snapshot};
    let put = |index, value: &str| LogEntry {
        position: LogPosition::new(1, index),
        command: Command::Put {
            key: b"k".to_vec(),
            value: value.as_bytes().to_vec(),
        },
    };
    let committed = [put(1, "a"), put(2, "b")];
    let restore = |value: &str| {
        let mut snapshot = Snapshot {
            last: LogPosition::new(1, 2),
            ..Snapshot::default()
        };
        snapshot.kv.insert(
            b"k".to_vec(),
            (Some(value.as_bytes().to_vec()), LogPosition::new(1, 2)),
        );
        let hard = HardState {
            term: 1,
            voted_for: None,
            voter: true,
        };
        let config = Config::new(1, vec![2, 3]);
        Core::restore(config, Millis(0), hard, Some(snapshot), Vec::new()).unwrap()
    };
    assert!(check_state_machine(&restore("b"), &committed).is_ok());
    // The snapshot kept the first write instead of the last.
    let err = check_state_machine(&restore("a"), &committed).unwrap_err();
    assert!(err.contains("node 1 at applied index 2"), "{err}");
}
