//! Convergence (DESIGN.md §5, Dynamo's eventual consistency): once the
//! network heals and writes stop, every primary replica of a key holds
//! the same state, and no hint is left undelivered. Run with read repair
//! off, anti-entropy alone must do it.

use std::collections::BTreeSet;

use mimeo_leaderless::NodeId;

use crate::cluster::Final;

/// `primaries(key)`: the key's preference list.
pub(crate) fn check(
    finals: &[Final],
    primaries: impl Fn(&[u8]) -> Vec<NodeId>,
) -> Result<(), String> {
    let keys: BTreeSet<&Vec<u8>> = finals.iter().flat_map(|f| f.states.keys()).collect();
    for key in keys {
        let owners = primaries(key);
        let states: Vec<(&NodeId, Option<_>)> = finals
            .iter()
            .filter(|f| owners.contains(&f.node))
            .map(|f| (&f.node, f.states.get(key)))
            .collect();
        if let Some((node, state)) = states.iter().find(|(_, s)| *s != states[0].1) {
            return Err(format!(
                "convergence: key {:?} differs between primaries {} ({:?}) and {node} ({state:?})",
                String::from_utf8_lossy(key),
                states[0].0,
                states[0].1
            ));
        }
    }
    if let Some(f) = finals.iter().find(|f| f.hints > 0) {
        return Err(format!(
            "convergence: {} still holds {} hints",
            f.node, f.hints
        ));
    }
    Ok(())
}

#[test]
fn rejects_diverged_primaries() {
    use mimeo_causality::PnCounter;
    use mimeo_leaderless::KeyState;
    let mut c = PnCounter::new();
    c.increment("a", 1);
    let one = KeyState::Counter(c);
    let finals = [
        Final {
            node: "n1".into(),
            states: [(b"k".to_vec(), one)].into(),
            hints: 0,
        },
        Final {
            node: "n2".into(),
            states: Default::default(),
            hints: 0,
        },
    ];
    let both = |_: &[u8]| vec![NodeId::from("n1"), NodeId::from("n2")];
    assert!(check(&finals, both).unwrap_err().contains("differs"));
    assert!(check(&finals, |_: &[u8]| vec![NodeId::from("n1")]).is_ok());
}
