//! Hints delivered (issue 23, Dynamo §4.6): with `sloppy = true`, a
//! primary that was down while writes to its keys were acknowledged holds
//! every one of them after it returns, although nothing else can bring
//! them: no client reads (no read repair) and anti-entropy is off. Only
//! hinted handoff moves them.

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
            let held = match by_node[&p].states.get(&w.key) {
                Some(KeyState::Siblings(dvv)) => dvv.contains(dot),
                _ => false,
            };
            if !held {
                return Err(format!(
                    "hints delivered: primary {p} does not hold the acknowledged write {dot} to {:?} ({} hints left on {})",
                    String::from_utf8_lossy(&w.key),
                    finals.iter().map(|f| f.hints).sum::<usize>(),
                    finals.iter().filter(|f| f.hints > 0).map(|f| f.node.to_string()).collect::<Vec<_>>().join(",")
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn rejects_a_write_the_owner_never_got() {
    use mimeo_leaderless::{Dot, VersionVector};
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
        states: Default::default(),
        hints: 1,
    }];
    let err = check(&[w], &finals, |_| vec!["n1".into()]).unwrap_err();
    assert!(err.contains("primary n1"), "{err}");
}
