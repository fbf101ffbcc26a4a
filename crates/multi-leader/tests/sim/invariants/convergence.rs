//! Convergence (DESIGN.md §5, multi-leader: "all replicas converge to the
//! same state once the network heals and writes stop"; strong eventual
//! consistency, Shapiro et al. 2011): after heal and quiet, every node's
//! key records serialize to the same bytes, and every applied vector is
//! the same.

use mimeo_multi_leader::{NodeId, VersionVector};

/// One node's final state: its applied vector and its records, encoded.
pub(crate) struct Final {
    pub(crate) id: NodeId,
    pub(crate) applied: VersionVector,
    pub(crate) records: Vec<u8>,
}

pub(crate) fn check(nodes: &[Final]) -> Result<(), String> {
    let first = &nodes[0];
    for other in &nodes[1..] {
        if other.applied != first.applied {
            return Err(format!(
                "convergence: {} applied {} but {} applied {}",
                first.id, first.applied, other.id, other.applied
            ));
        }
        if other.records != first.records {
            return Err(format!(
                "convergence: {} and {} applied the same writes ({}) but their key states differ ({} vs {} bytes)",
                first.id,
                other.id,
                first.applied,
                first.records.len(),
                other.records.len()
            ));
        }
    }
    Ok(())
}

#[test]
fn rejects_different_states() {
    let node = |id: &str, records: &[u8]| Final {
        id: id.into(),
        applied: [("n1", 1)].into(),
        records: records.to_vec(),
    };
    assert!(check(&[node("n1", b"a"), node("n2", b"a")]).is_ok());
    let err = check(&[node("n1", b"a"), node("n2", b"b")]).unwrap_err();
    assert!(err.contains("key states differ"), "{err}");
    let mut behind = node("n3", b"a");
    behind.applied = VersionVector::new();
    assert!(check(&[node("n1", b"a"), behind])
        .unwrap_err()
        .contains("applied"));
}
