//! Election safety (Raft §5.2, figure 3): at most one leader is elected in
//! a given term. Checked over the whole run, not just at one instant: a
//! leader that stepped down still counts for its term.

use std::collections::BTreeMap;

use mimeo_leader_follower::NodeId;

/// Every (term, leader) seen so far.
#[derive(Default)]
pub(crate) struct LeadersPerTerm {
    seen: BTreeMap<u64, NodeId>,
}

impl LeadersPerTerm {
    /// `node` is a leader in `term`.
    pub(crate) fn observe(&mut self, term: u64, node: NodeId) -> Result<(), String> {
        match self.seen.insert(term, node) {
            Some(other) if other != node => Err(format!(
                "election safety: nodes {other} and {node} were both leaders in term {term}"
            )),
            _ => Ok(()),
        }
    }
}

#[test]
fn rejects_two_leaders_in_one_term() {
    let mut leaders = LeadersPerTerm::default();
    assert!(leaders.observe(1, 1).is_ok());
    assert!(leaders.observe(1, 1).is_ok());
    assert!(leaders.observe(2, 2).is_ok());
    assert!(leaders.observe(1, 3).unwrap_err().contains("term 1"));
}
