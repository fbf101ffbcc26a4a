//! LWW winner (DESIGN.md §5, `lww`: "hybrid-logical-clock timestamp, node
//! id breaks ties"): a key's final value carries a timestamp at least as
//! large as every durable write to the key, except writes whose tombstone
//! was collected (a write made after a collection starts the key afresh).

use std::collections::BTreeMap;

use mimeo_multi_leader::{KeyState, VersionVector};

use super::MadeWrite;

/// `collected`: per key, the `writes` vectors of its collections.
pub(crate) fn check(
    made: &[MadeWrite],
    finals: &BTreeMap<Vec<u8>, KeyState>,
    collected: &BTreeMap<Vec<u8>, Vec<VersionVector>>,
) -> Result<(), String> {
    for write in made {
        let was_collected = collected
            .get(&write.key)
            .is_some_and(|c| c.iter().any(|writes| writes.contains(&write.id)));
        if was_collected {
            continue;
        }
        let key = String::from_utf8_lossy(&write.key);
        match finals.get(&write.key) {
            Some(KeyState::Lww(lww)) if lww.ts >= write.ts => {}
            Some(KeyState::Lww(lww)) => {
                return Err(format!(
                    "LWW winner: key {key:?} ended with timestamp {} but write {} had the larger {}",
                    lww.ts, write.id, write.ts
                ))
            }
            other => {
                return Err(format!(
                    "LWW winner: key {key:?} ended as {other:?}, but write {} (ts {}) was never collected",
                    write.id, write.ts
                ))
            }
        }
    }
    Ok(())
}

#[test]
fn rejects_a_smaller_winner() {
    use mimeo_causality::Lww;
    use mimeo_multi_leader::{Dot, Timestamp};
    let write = |n| MadeWrite {
        key: b"k".to_vec(),
        id: Dot::new("n1", n),
        ts: Timestamp::new(n, 0, "n1"),
        key_dot: None,
        context: VersionVector::new(),
        value: Some(b"v".to_vec()),
        acked: true,
    };
    let made = [write(1), write(2)];
    let finals = |n| {
        BTreeMap::from([(
            b"k".to_vec(),
            KeyState::Lww(Lww::new(Timestamp::new(n, 0, "n1"), Some(b"v".to_vec()))),
        )])
    };
    let none = BTreeMap::new();
    assert!(check(&made, &finals(2), &none).is_ok());
    assert!(check(&made, &finals(1), &none)
        .unwrap_err()
        .contains("larger"));
    let collected = BTreeMap::from([(b"k".to_vec(), vec![VersionVector::from([("n1", 2)])])]);
    assert!(check(&made, &BTreeMap::new(), &collected).is_ok());
}
