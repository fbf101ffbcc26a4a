//! No acknowledged write is lost when a minority of nodes loses its disks
//! (DESIGN.md §9: "a node that lost its data does not vote until it has
//! caught up"; issue 19). A `quorum` write is held by a majority; a node
//! of that majority that lost its disk no longer holds it, and if it voted
//! at once it could help elect a leader that lacks the write (the write is
//! then lost although no majority ever lost its data). So: a node that
//! lost its disk votes (and counts towards quorums) again only once its
//! log holds every `quorum`/`all` write acknowledged before the loss, or
//! its snapshot covers it. The end-to-end loss itself is also caught by
//! [`AckedWrites`](super::AckedWrites), once such a leader is elected.

use std::collections::BTreeMap;

use mimeo_leader_follower::{Core, LogPosition, NodeId};

/// The `quorum`/`all` writes acknowledged so far, and which nodes lost
/// their disks after how many of them.
#[derive(Default)]
pub(crate) struct DiskLoss {
    acked: Vec<LogPosition>,
    /// Per node: how many of `acked` were acknowledged when it last lost
    /// its disk.
    lost: BTreeMap<NodeId, usize>,
}

impl DiskLoss {
    /// A `quorum`/`all` write was acknowledged at `position`.
    pub(crate) fn acked(&mut self, position: LogPosition) {
        self.acked.push(position);
    }

    /// Node `id` lost everything on its disk.
    pub(crate) fn lost_disk(&mut self, id: NodeId) {
        self.lost.insert(id, self.acked.len());
    }

    /// Check that `core`, if it lost its disk and votes again, holds every
    /// write acknowledged before the loss.
    pub(crate) fn observe(&self, core: &Core) -> Result<(), String> {
        let Some(&before) = self.lost.get(&core.id()) else {
            return Ok(());
        };
        if !core.hard_state().voter {
            return Ok(()); // a learner: it neither votes nor counts
        }
        for &p in &self.acked[..before] {
            let held = core.entry(p.index).map(|e| e.position) == Some(p);
            // Folded into a snapshot, which holds only committed state.
            let folded = p.index < core.first_index() && core.commit_index() >= p.index;
            if !held && !folded {
                return Err(format!(
                    "node {} lost its disk and votes again without the write {p:?} \
                     acknowledged (under quorum/all) before the loss: it holds {:?} at that \
                     index (commit index {}, first index {})",
                    core.id(),
                    core.entry(p.index).map(|e| e.position),
                    core.commit_index(),
                    core.first_index()
                ));
            }
        }
        Ok(())
    }
}

#[test]
fn rejects_a_wiped_node_that_votes_without_an_acknowledged_write() {
    use mimeo_leader_follower::{Config, Millis};
    let mut invariant = DiskLoss::default();
    invariant.acked(LogPosition::new(1, 2));
    invariant.lost_disk(2);
    // Restarted empty as a founding member (the behaviour before issue
    // 19): it votes at once, holding nothing.
    let mut config = Config::new(2, vec![1, 3]);
    config.bootstrap = true;
    let founder = Core::new(config.clone(), Millis(0)).unwrap();
    assert!(invariant
        .observe(&founder)
        .unwrap_err()
        .contains("votes again without the write"));
    // Restarted empty as a learner: fine until it votes.
    config.bootstrap = false;
    let learner = Core::new(config, Millis(0)).unwrap();
    assert!(invariant.observe(&learner).is_ok());
    // A write acknowledged after the loss is not its concern.
    invariant.acked(LogPosition::new(1, 3));
    assert!(invariant.observe(&learner).is_ok());
}
