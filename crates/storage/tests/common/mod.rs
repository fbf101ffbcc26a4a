//! Helpers shared by the integration tests. Each test file uses a subset.
#![allow(dead_code)]

use std::collections::BTreeMap;

use mimeo_storage::{Entry, LogPosition, Mutation, Record, RecordMeta, Store};

/// A record at `position` with a deterministic origin and sequence number.
pub(crate) fn record(term: u64, index: u64, mutation: Mutation) -> Record {
    Record {
        meta: RecordMeta {
            position: LogPosition::new(term, index),
            origin: index % 3,
            seq: index,
            version: index.to_be_bytes().to_vec(),
        },
        mutation,
    }
}

pub(crate) fn put(index: u64, key: &str, value: &str) -> Record {
    record(
        1,
        index,
        Mutation::Put {
            key: key.into(),
            value: value.into(),
        },
    )
}

pub(crate) fn delete(index: u64, key: &str) -> Record {
    record(1, index, Mutation::Delete { key: key.into() })
}

/// The state a log produces: the latest entry of every key, tombstones
/// included.
pub(crate) fn fold<'a>(log: impl IntoIterator<Item = &'a Record>) -> BTreeMap<Vec<u8>, Entry> {
    let mut state = BTreeMap::new();
    for r in log {
        let (key, value) = match &r.mutation {
            Mutation::Put { key, value } => (key.clone(), Some(value.clone())),
            Mutation::Delete { key } => (key.clone(), None),
        };
        state.insert(
            key,
            Entry {
                value,
                meta: r.meta.clone(),
            },
        );
    }
    state
}

/// Asserts that `store` holds exactly `expected`, through `scan` and `get`.
pub(crate) fn assert_state(store: &Store, expected: &BTreeMap<Vec<u8>, Entry>, context: &str) {
    let scanned: BTreeMap<Vec<u8>, Entry> = store.scan(..).unwrap().into_iter().collect();
    assert_eq!(&scanned, expected, "{context}: scan");
    for (key, entry) in expected {
        assert_eq!(
            store.get(key).unwrap().as_ref(),
            Some(entry),
            "{context}: get {}",
            String::from_utf8_lossy(key)
        );
    }
    let live = expected.values().filter(|e| e.value.is_some()).count();
    assert_eq!(store.stats().live_keys, live, "{context}: live_keys");
}
