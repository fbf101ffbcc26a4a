//! No resurrection (DESIGN.md §5: "deletes are tombstones with their
//! causal context, collected only once every node's vector covers them:
//! nothing deleted comes back"): no node's final state holds a value whose
//! key dot a durable delete's context covered.

use mimeo_multi_leader::{KeyState, NodeId};

use super::MadeWrite;

/// One node's final key states.
pub(crate) type NodeStates = (NodeId, Vec<(Vec<u8>, KeyState)>);

/// `finals`: every node's final records.
pub(crate) fn check(made: &[MadeWrite], finals: &[NodeStates]) -> Result<(), String> {
    for (node, records) in finals {
        for (key, state) in records {
            let KeyState::Siblings(dvv) = state else {
                continue;
            };
            for (dot, value) in dvv.iter() {
                if value.is_none() {
                    continue;
                }
                if let Some(delete) = made
                    .iter()
                    .find(|d| d.value.is_none() && d.key == *key && d.context.contains(&dot))
                {
                    return Err(format!(
                        "resurrection: node {node} holds key {:?}'s value {dot}, which delete {} (context {}) removed",
                        String::from_utf8_lossy(key),
                        delete.id,
                        delete.context
                    ));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn rejects_a_deleted_value() {
    use mimeo_causality::DvvSet;
    use mimeo_multi_leader::{Dot, Timestamp, VersionVector};
    let mut dvv = DvvSet::new();
    dvv.update(&VersionVector::new(), "n1", Some(b"v".to_vec()))
        .unwrap();
    let delete = MadeWrite {
        key: b"k".to_vec(),
        id: Dot::new("n2", 1),
        ts: Timestamp::new(1, 0, "n2"),
        key_dot: Some(Dot::new("n2", 1)),
        context: [("n1", 1)].into(),
        value: None,
        acked: true,
    };
    let finals = [("n3".into(), vec![(b"k".to_vec(), KeyState::Siblings(dvv))])];
    assert!(check(std::slice::from_ref(&delete), &finals)
        .unwrap_err()
        .contains("node n3"));
    let mut blind = delete;
    blind.context = VersionVector::new();
    assert!(check(&[blind], &finals).is_ok());
}
