//! HLC monotonic per node (Kulkarni et al., "Logical Physical Clocks",
//! 2014: timestamps a node issues strictly increase), across restarts:
//! every write a node makes durable carries a larger timestamp than every
//! write it made durable before, whatever its physical clock did.

use std::collections::BTreeMap;

use mimeo_multi_leader::{Dot, NodeId, Timestamp};

#[derive(Default)]
pub(crate) struct HlcMonotonic {
    last: BTreeMap<NodeId, (Dot, Timestamp)>,
}

impl HlcMonotonic {
    /// `write`, stamped `ts`, became durable at its origin.
    pub(crate) fn observe(&mut self, write: &Dot, ts: &Timestamp) -> Result<(), String> {
        if let Some((before, last)) = self.last.get(&write.node) {
            if ts <= last {
                return Err(format!(
                    "HLC monotonic: node {} issued {ts} for write {write} after {last} for write {before}",
                    write.node
                ));
            }
        }
        self.last
            .insert(write.node.clone(), (write.clone(), ts.clone()));
        Ok(())
    }
}

#[test]
fn rejects_a_clock_going_back() {
    let mut hlc = HlcMonotonic::default();
    hlc.observe(&Dot::new("n1", 1), &Timestamp::new(10, 0, "n1"))
        .unwrap();
    hlc.observe(&Dot::new("n2", 1), &Timestamp::new(5, 0, "n2"))
        .unwrap();
    hlc.observe(&Dot::new("n1", 2), &Timestamp::new(10, 1, "n1"))
        .unwrap();
    let err = hlc
        .observe(&Dot::new("n1", 3), &Timestamp::new(9, 0, "n1"))
        .unwrap_err();
    assert!(err.contains("node n1"), "{err}");
}
