//! No acknowledged write lost under `siblings` (DESIGN.md §7, the
//! `siblings` checker; Almeida, Baquero et al. 2014): every acknowledged
//! put or delete is a sibling in the final state, or was superseded by a
//! durable write whose *client's* context covered it. An acknowledged
//! delete may also have been collected (its tombstone, once causally
//! stable, is removed by design).

use std::collections::BTreeMap;

use mimeo_multi_leader::{Dot, KeyState, VersionVector};

use super::MadeWrite;

/// `finals`: the final state of each key (absent keys are missing);
/// `collected`: per key, the `writes` vectors of its collections.
pub(crate) fn check(
    made: &[MadeWrite],
    finals: &BTreeMap<Vec<u8>, KeyState>,
    collected: &BTreeMap<Vec<u8>, Vec<VersionVector>>,
) -> Result<(), String> {
    for write in made.iter().filter(|w| w.acked) {
        let Some(dot) = &write.key_dot else { continue };
        let present = match finals.get(&write.key) {
            Some(KeyState::Siblings(dvv)) => dvv.iter().any(|(d, _)| d == *dot),
            _ => false,
        };
        let superseded = made
            .iter()
            .any(|other| other.key == write.key && covers(other, dot));
        let collected_delete = write.value.is_none()
            && collected
                .get(&write.key)
                .is_some_and(|c| c.iter().any(|writes| writes.contains(&write.id)));
        if !present && !superseded && !collected_delete {
            return Err(format!(
                "acknowledged write lost: {} (key {:?}, key dot {dot}, ts {}) is not in the final state and no write's context covered it",
                write.id,
                String::from_utf8_lossy(&write.key),
                write.ts
            ));
        }
    }
    Ok(())
}

fn covers(other: &MadeWrite, dot: &Dot) -> bool {
    other.context.contains(dot)
}

#[test]
fn rejects_a_write_that_vanished() {
    use mimeo_multi_leader::Timestamp;
    let write = |n, context: VersionVector| MadeWrite {
        key: b"k".to_vec(),
        id: Dot::new("n1", n),
        ts: Timestamp::new(n, 0, "n1"),
        key_dot: Some(Dot::new("n1", n)),
        context,
        value: Some(b"v".to_vec()),
        acked: true,
    };
    let empty = BTreeMap::new();
    // Write 1 superseded by write 2 whose context covered it; write 2 lost.
    let made = [write(1, VersionVector::new()), write(2, [("n1", 1)].into())];
    let none = BTreeMap::new();
    let err = check(&made, &empty, &none).unwrap_err();
    assert!(err.contains("n1:2"), "{err}");
    assert!(check(&made[..1], &empty, &none).is_err());
    // A delete that was collected is not lost.
    let mut delete = write(2, [("n1", 1)].into());
    delete.value = None;
    let collected = BTreeMap::from([(b"k".to_vec(), vec![VersionVector::from([("n1", 2)])])]);
    assert!(check(&[made[0].clone(), delete.clone()], &empty, &collected).is_ok());
    assert!(check(&[made[0].clone(), delete], &empty, &none).is_err());
    let mut dvv = mimeo_causality_dvv();
    dvv.update(&[("n1", 1)].into(), "n1", Some(b"v".to_vec()))
        .unwrap();
    let finals = BTreeMap::from([(b"k".to_vec(), KeyState::Siblings(dvv))]);
    assert!(check(&made, &finals, &none).is_ok());
}

#[cfg(test)]
fn mimeo_causality_dvv() -> mimeo_causality::DvvSet<Option<Vec<u8>>> {
    mimeo_causality::DvvSet::new()
}
