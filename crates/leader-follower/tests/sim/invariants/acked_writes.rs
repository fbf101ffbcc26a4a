//! Durability of acknowledged writes (the ack modes' promise, DESIGN.md
//! §5): a write acknowledged under `quorum` or `all` is in the log of every
//! leader of its term or a later one, so no failover loses it. (`async`
//! and `semi-sync` writes are allowed to be lost; the simulation counts
//! them instead.)

use std::collections::BTreeMap;

use mimeo_leader_follower::{Core, LogEntry, LogPosition, NodeId, Role};

/// The positions of writes acknowledged under `quorum` or `all`.
#[derive(Default)]
pub(crate) struct AckedWrites {
    acked: Vec<LogPosition>,
    /// Per (leader, term): how many of `acked` it was shown to hold (a
    /// leader never drops entries, so each pair is checked once per write;
    /// a full check re-verifies everything).
    checked: BTreeMap<(NodeId, u64), usize>,
}

impl AckedWrites {
    /// A `quorum`/`all` write was acknowledged at `position`.
    pub(crate) fn acked(&mut self, position: LogPosition) {
        self.acked.push(position);
    }

    /// Check that leader `core` holds them all (`full`: re-check those
    /// checked before).
    pub(crate) fn observe(&mut self, core: &Core, full: bool) -> Result<(), String> {
        if core.role() != Role::Leader {
            return Ok(());
        }
        let checked = self.checked.entry((core.id(), core.term())).or_insert(0);
        let from = if full { 0 } else { *checked };
        *checked = self.acked.len();
        for &p in &self.acked[from..] {
            if core.term() < p.term {
                continue;
            }
            if p.index < core.first_index() {
                // Folded into the leader's snapshot, which holds only
                // committed state: the write must be committed there, and
                // `in_committed_log` checks it is the entry committed.
                if core.commit_index() < p.index {
                    return Err(format!(
                        "acknowledged write lost: {p:?} is below leader {}'s first index {} \
                         but above its commit index {}",
                        core.id(),
                        core.first_index(),
                        core.commit_index()
                    ));
                }
                continue;
            }
            let found = core.entry(p.index).map(|e| e.position);
            if found != Some(p) {
                return Err(format!(
                    "acknowledged write lost: {p:?} was acknowledged under quorum/all, but \
                     leader {} of term {} has {found:?} at index {}",
                    core.id(),
                    core.term(),
                    p.index
                ));
            }
        }
        Ok(())
    }

    /// Check that every acknowledged write committed as itself (not
    /// replaced by another entry at its index) in `committed`, as far as
    /// `committed` reaches.
    pub(crate) fn in_committed_log(&self, committed: &[LogEntry]) -> Result<(), String> {
        for p in &self.acked {
            if let Some(e) = committed.get(p.index as usize - 1) {
                if e.position != *p {
                    return Err(format!(
                        "acknowledged write lost: {p:?} was acknowledged under quorum/all, but \
                         {:?} was committed at its index",
                        e.position
                    ));
                }
            }
        }
        Ok(())
    }
}

#[test]
fn rejects_a_leader_missing_an_acknowledged_write() {
    use mimeo_leader_follower::{Command, Config, HardState, LogEntry, Millis};
    let hard = HardState {
        term: 2,
        voted_for: None,
        voter: true,
    };
    let log = vec![LogEntry {
        position: LogPosition::new(1, 1),
        command: Command::Noop,
    }];
    let mut core = Core::recover(Config::new(1, vec![]), Millis(0), hard, log).unwrap();
    core.tick(core.next_timeout());
    assert_eq!(core.role(), Role::Leader); // term 3, log (1,1) (3,2)
    let mut acked = AckedWrites::default();
    acked.acked(LogPosition::new(1, 1));
    assert!(acked.observe(&core, false).is_ok());
    acked.acked(LogPosition::new(2, 2));
    assert!(acked
        .observe(&core, false)
        .unwrap_err()
        .contains("acknowledged write lost"));
    // Against the committed log (for writes folded into snapshots).
    let noop = |term, index| LogEntry {
        position: LogPosition::new(term, index),
        command: Command::Noop,
    };
    assert!(acked.in_committed_log(&[noop(1, 1)]).is_ok());
    assert!(acked
        .in_committed_log(&[noop(1, 1), noop(3, 2)])
        .unwrap_err()
        .contains("was committed at its index"));
}
