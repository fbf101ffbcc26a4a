//! No resurrection (DESIGN.md §5, "nothing deleted comes back"): no
//! node's final state holds a value whose dot an acknowledged delete's
//! context covered. (Tombstones are kept: this core never collects them.)

use mimeo_leaderless::KeyState;

use super::MadeWrite;
use crate::cluster::Final;

pub(crate) fn check(made: &[MadeWrite], finals: &[Final]) -> Result<(), String> {
    for f in finals {
        for (key, state) in &f.states {
            let KeyState::Siblings(dvv) = state else {
                continue;
            };
            for (dot, value) in dvv.iter() {
                if value.is_none() {
                    continue;
                }
                if let Some(delete) = made.iter().find(|d| {
                    d.acked && d.value.is_none() && d.key == *key && d.context.contains(&dot)
                }) {
                    return Err(format!(
                        "resurrection: node {} holds key {:?}'s value {dot}, which a delete (context {}) removed",
                        f.node,
                        String::from_utf8_lossy(key),
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
    use mimeo_leaderless::{Dot, VersionVector};
    let mut dvv = DvvSet::new();
    dvv.update(&VersionVector::new(), "a.1", Some(b"v".to_vec()))
        .unwrap();
    let delete = MadeWrite {
        key: b"k".to_vec(),
        value: None,
        context: [("a.1", 1)].into(),
        key_dot: Some(Dot::new("b.1", 1)),
        acked: true,
        acked_at: None,
    };
    let finals = [Final {
        node: "n3".into(),
        states: [(b"k".to_vec(), KeyState::Siblings(dvv))].into(),
        hints: 0,
    }];
    assert!(check(std::slice::from_ref(&delete), &finals)
        .unwrap_err()
        .contains("node n3"));
    let mut blind = delete;
    blind.context = VersionVector::new();
    assert!(check(&[blind], &finals).is_ok());
}
