//! No acknowledged write lost (issue 23, DESIGN.md §5): under the
//! siblings policy with strict quorums (W + R > N, `sloppy = false`),
//! every write acknowledged to its client is, after the cluster heals and
//! goes quiet, held by every primary replica of its key: as a sibling, or
//! superseded by a write whose client context covered it (its dot is in
//! the key's history and some write's context names it).

use std::collections::BTreeMap;

use mimeo_leaderless::{KeyState, NodeId};

use super::MadeWrite;
use crate::cluster::Final;

/// `primaries(key)`: the key's preference list.
pub(crate) fn check(
    made: &[MadeWrite],
    finals: &[Final],
    primaries: impl Fn(&[u8]) -> Vec<NodeId>,
) -> Result<(), String> {
    let by_node: BTreeMap<&NodeId, &Final> = finals.iter().map(|f| (&f.node, f)).collect();
    for w in made.iter().filter(|w| w.acked) {
        let Some(dot) = &w.key_dot else { continue };
        for p in primaries(&w.key) {
            let state = by_node[&p].states.get(&w.key);
            let Some(KeyState::Siblings(dvv)) = state else {
                return Err(format!(
                    "acknowledged write lost: {dot} to {:?} is not on primary {p} (it holds {state:?})",
                    String::from_utf8_lossy(&w.key)
                ));
            };
            if !dvv.contains(dot) {
                return Err(format!(
                    "acknowledged write lost: primary {p} never saw {dot} to {:?}",
                    String::from_utf8_lossy(&w.key)
                ));
            }
            let sibling = dvv.iter().any(|(d, _)| d == *dot);
            let superseded = made
                .iter()
                .any(|o| o.key == w.key && o.context.contains(dot));
            if !sibling && !superseded {
                return Err(format!(
                    "acknowledged write lost: {dot} to {:?} is gone from primary {p} and no write's context covered it",
                    String::from_utf8_lossy(&w.key)
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn rejects_a_lost_write() {
    use mimeo_causality::DvvSet;
    use mimeo_leaderless::{Dot, VersionVector};
    let mut dvv = DvvSet::new();
    dvv.update(&VersionVector::new(), "a.1", Some(b"x".to_vec()))
        .unwrap();
    let w = MadeWrite {
        key: b"k".to_vec(),
        value: Some(b"y".to_vec()),
        context: VersionVector::new(),
        key_dot: Some(Dot::new("b.1", 1)),
        acked: true,
        acked_at: None,
    };
    let finals = [Final {
        node: "n1".into(),
        states: [(b"k".to_vec(), KeyState::Siblings(dvv.clone()))].into(),
        hints: 0,
    }];
    let err = check(std::slice::from_ref(&w), &finals, |_| vec!["n1".into()]).unwrap_err();
    assert!(err.contains("never saw b.1:1"), "{err}");
    let mut seen = w.clone();
    seen.key_dot = Some(Dot::new("a.1", 1));
    assert!(check(&[seen], &finals, |_| vec!["n1".into()]).is_ok());
}
