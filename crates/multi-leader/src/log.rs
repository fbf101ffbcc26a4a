//! The bounded in-memory log of recent writes, per origin.

use std::collections::{BTreeMap, VecDeque};

use mimeo_causality::NodeId;

use crate::record::Write;

/// Recent writes of every origin, at most `budget` bytes in all: the
/// oldest write (of any origin) goes first. Writes of one origin are
/// pushed in sequence order, so each origin's deque is a contiguous run.
#[derive(Clone, Debug)]
pub(crate) struct MemLog {
    budget: usize,
    bytes: usize,
    by_origin: BTreeMap<NodeId, VecDeque<(Write, usize)>>,
    /// Push order, for eviction.
    order: VecDeque<NodeId>,
}

impl MemLog {
    pub(crate) fn new(budget: usize) -> MemLog {
        MemLog {
            budget,
            bytes: 0,
            by_origin: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Appends `write`, the next of its origin (a write that does not
    /// continue its origin's run replaces the run).
    pub(crate) fn push(&mut self, write: Write) {
        let size = write.approx_bytes();
        let origin = write.id.node.clone();
        let run = self.by_origin.entry(origin.clone()).or_default();
        if let Some((last, _)) = run.back() {
            if last.id.counter + 1 != write.id.counter {
                // Cannot happen with in-order pushes; stay correct anyway.
                let dropped: usize = run.iter().map(|(_, s)| s).sum();
                self.bytes -= dropped;
                run.clear();
                self.order.retain(|o| *o != origin);
            }
        }
        run.push_back((write, size));
        self.bytes += size;
        self.order.push_back(origin);
        while self.bytes > self.budget {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, size)) = self
                .by_origin
                .get_mut(&oldest)
                .and_then(VecDeque::pop_front)
            {
                self.bytes -= size;
            }
        }
    }

    /// `origin`'s write `seq`, if still held.
    pub(crate) fn get(&self, origin: &NodeId, seq: u64) -> Option<&Write> {
        let run = self.by_origin.get(origin)?;
        let first = run.front()?.0.id.counter;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        run.get(index).map(|(w, _)| w)
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}
