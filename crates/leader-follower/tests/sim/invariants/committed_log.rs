//! Log matching and leader completeness (Raft §5.3, §5.4): once an entry is
//! committed at an index, no node ever holds a different entry at that
//! index below its commit index, and no node's commit index ever points at
//! an entry it does not have. Since every core applies exactly its
//! committed prefix, this is also state machine safety: no two nodes apply
//! different entries at the same index.

use std::collections::BTreeMap;

use mimeo_leader_follower::{Core, LogEntry, NodeId};

/// The committed log as first observed on any node.
#[derive(Default)]
pub(crate) struct CommittedLog {
    entries: Vec<LogEntry>,
    /// Per node, the commit index up to which it was last checked, so that
    /// the check after every step only looks at what is new.
    checked: BTreeMap<NodeId, u64>,
}

impl CommittedLog {
    /// The committed entries seen so far.
    pub(crate) fn entries(&self) -> &[LogEntry] {
        &self.entries
    }

    /// Check (and extend) with `core`'s committed prefix: all of it when
    /// `full`, else only what was committed since the last check.
    pub(crate) fn observe(&mut self, core: &Core, full: bool) -> Result<(), String> {
        if core.applied_index() != core.commit_index() {
            return Err(format!(
                "node {} applied {} but committed {}",
                core.id(),
                core.applied_index(),
                core.commit_index()
            ));
        }
        // Entries below the first index are folded into the snapshot (the
        // state machine check covers what it holds).
        let from = if full {
            1
        } else {
            let checked = self.checked.get(&core.id()).copied().unwrap_or(0);
            checked.min(core.commit_index()) + 1
        }
        .max(core.first_index());
        self.checked.insert(core.id(), core.commit_index());
        for index in from..=core.commit_index() {
            let Some(entry) = core.entry(index) else {
                return Err(format!(
                    "node {} has commit index {} but no entry {index}",
                    core.id(),
                    core.commit_index()
                ));
            };
            self.check(core.id(), index, entry)?;
        }
        Ok(())
    }

    fn check(&mut self, node: u64, index: u64, entry: &LogEntry) -> Result<(), String> {
        match self.entries.get(index as usize - 1) {
            Some(known) if known != entry => Err(format!(
                "committed entry {index} changed: {known:?} was committed, node {node} has \
                 {entry:?} below its commit index"
            )),
            Some(_) => Ok(()),
            None if index as usize == self.entries.len() + 1 => {
                self.entries.push(entry.clone());
                Ok(())
            }
            None => Err(format!(
                "node {node} committed entry {index} but entries {}..{index} were never seen \
                 committed on any node",
                self.entries.len() + 1
            )),
        }
    }
}

#[test]
fn rejects_a_changed_committed_entry() {
    use mimeo_leader_follower::{Command, LogPosition};
    let e = |term, index| LogEntry {
        position: LogPosition::new(term, index),
        command: Command::Noop,
    };
    let mut log = CommittedLog::default();
    assert!(log.check(1, 1, &e(1, 1)).is_ok());
    assert!(log.check(2, 1, &e(1, 1)).is_ok());
    assert!(log.check(2, 2, &e(2, 2)).is_ok());
    assert!(log
        .check(3, 2, &e(3, 2))
        .unwrap_err()
        .contains("entry 2 changed"));
    assert!(log
        .check(3, 4, &e(3, 4))
        .unwrap_err()
        .contains("never seen committed"));
}
