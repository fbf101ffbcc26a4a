//! Starting a core: from nothing, or from what a node persisted (its hard
//! state, its latest snapshot and the log after it).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::role::{Follower, RoleState};
use super::timer::TimerTable;
use super::{Core, Stored};
use crate::config::{Config, ConfigError};
use crate::size;
use crate::snapshot::{KeyValues, Snapshot};
use crate::types::{HardState, LogEntry, Millis};

/// The log a node recovered from storage cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The entries do not have consecutive indexes from 1.
    #[error("recovered log entry {found} where index {expected} was expected: the log must be contiguous from 1 (was it compacted?)")]
    Gap {
        /// The index that should come next.
        expected: u64,
        /// The index found.
        found: u64,
    },
    /// The log recovered beside a snapshot neither continues it nor
    /// overlaps it.
    #[error("the recovered log starts at index {first} but the snapshot ends at index {snapshot_index}: entries {snapshot_index}+1..{first} are missing")]
    SnapshotGap {
        /// The snapshot's last index.
        snapshot_index: u64,
        /// The first index of the recovered log.
        first: u64,
    },
    /// The recovered log holds the snapshot's last index with another term.
    #[error("the recovered log holds index {index} with term {log_term}, but the snapshot ends at index {index} with term {snapshot_term}: the log does not belong to this snapshot")]
    SnapshotConflict {
        /// The snapshot's last index.
        index: u64,
        /// The snapshot's last term.
        snapshot_term: u64,
        /// The term of the log's entry at that index.
        log_term: u64,
    },
    /// An entry's term is lower than the one before it, or higher than the
    /// hard state's term.
    #[error("recovered log entry at index {index} has term {term}, out of order (previous term {previous}, hard state term {hard_term})")]
    BadTerm {
        /// The entry's index.
        index: u64,
        /// Its term.
        term: u64,
        /// The previous entry's term.
        previous: u64,
        /// The hard state's term.
        hard_term: u64,
    },
}

impl Core {
    /// A node with an empty log.
    pub fn new(config: Config, now: Millis) -> Result<Core, ConfigError> {
        Core::recover(config, now, HardState::default(), Vec::new()).map_err(|e| match e {
            RecoverError::Config(c) => c,
            other => unreachable!("an empty log cannot be invalid: {other}"),
        })
    }

    /// A node restarting with what it had persisted, without a snapshot:
    /// [`Core::restore`] with `snapshot = None` (the log must start at
    /// index 1).
    pub fn recover(
        config: Config,
        now: Millis,
        hard_state: HardState,
        entries: Vec<LogEntry>,
    ) -> Result<Core, RecoverError> {
        Core::restore(config, now, hard_state, None, entries)
    }

    /// A node restarting with what it had persisted: its hard state, its
    /// latest durable snapshot if any, and its log (all of it is treated as
    /// durable).
    ///
    /// Without a snapshot the log must start at index 1. With one, it must
    /// continue the snapshot (start at `snapshot.last.index + 1`) or overlap
    /// it (start at or below that), and if it holds the snapshot's last
    /// index, with the snapshot's term; entries at or below the snapshot
    /// are kept only as the `snapshot_keep` tail. The snapshot holds only
    /// committed state, so the commit and applied indexes restart at its
    /// index; the rest of the commit index is learnt again from the leader.
    pub fn restore(
        config: Config,
        now: Millis,
        hard_state: HardState,
        snapshot: Option<Snapshot>,
        entries: Vec<LogEntry>,
    ) -> Result<Core, RecoverError> {
        config.validate()?;
        let snap_last = snapshot.as_ref().map(|s| s.last).unwrap_or_default();
        let first = entries
            .first()
            .map_or(snap_last.index + 1, |e| e.position.index);
        if snapshot.is_none() && first != 1 {
            return Err(RecoverError::Gap {
                expected: 1,
                found: first,
            });
        }
        if first > snap_last.index + 1 || first == 0 {
            return Err(RecoverError::SnapshotGap {
                snapshot_index: snap_last.index,
                first,
            });
        }
        if snap_last.term > hard_state.term {
            return Err(RecoverError::BadTerm {
                index: snap_last.index,
                term: snap_last.term,
                previous: 0,
                hard_term: hard_state.term,
            });
        }
        let mut previous = 0;
        for (i, e) in entries.iter().enumerate() {
            let expected = first + i as u64;
            if e.position.index != expected {
                return Err(RecoverError::Gap {
                    expected,
                    found: e.position.index,
                });
            }
            if e.position.term < previous || e.position.term > hard_state.term {
                return Err(RecoverError::BadTerm {
                    index: expected,
                    term: e.position.term,
                    previous,
                    hard_term: hard_state.term,
                });
            }
            if expected == snap_last.index && e.position.term != snap_last.term {
                return Err(RecoverError::SnapshotConflict {
                    index: expected,
                    snapshot_term: snap_last.term,
                    log_term: e.position.term,
                });
            }
            previous = e.position.term;
        }
        if let Some(after) = entries.iter().find(|e| e.position.index > snap_last.index) {
            if after.position.term < snap_last.term {
                return Err(RecoverError::BadTerm {
                    index: after.position.index,
                    term: after.position.term,
                    previous: snap_last.term,
                    hard_term: hard_state.term,
                });
            }
        }
        // Keep at most `snapshot_keep` entries at and below the snapshot,
        // starting after an entry whose term is known.
        let (offset, offset_term, log) = if snapshot.is_none() {
            (0, 0, entries)
        } else {
            let mut wanted = snap_last
                .index
                .saturating_sub(config.snapshot_keep)
                .max(first);
            // And at most a quarter of `snapshot_bytes` of them.
            let at_or_below = |i: u64| entries.get((i - first) as usize);
            let by_bytes = keep_from(
                (wanted + 1..=snap_last.index.min(first + entries.len() as u64 - 1))
                    .rev()
                    .filter_map(|i| at_or_below(i).map(|e| (i, size::entry_bytes(e)))),
                config.snapshot_bytes / 4,
            );
            wanted = wanted.max(by_bytes.min(snap_last.index));
            let last_entry = entries.last().map_or(0, |e| e.position.index);
            if wanted >= snap_last.index || first > snap_last.index || last_entry < snap_last.index
            {
                let log = entries
                    .into_iter()
                    .filter(|e| e.position.index > snap_last.index)
                    .collect();
                (snap_last.index, snap_last.term, log)
            } else {
                let at = (wanted - first) as usize;
                let offset_term = entries[at].position.term;
                (
                    wanted,
                    offset_term,
                    entries.into_iter().skip(at + 1).collect(),
                )
            }
        };
        let durable = offset + log.len() as u64;
        let mut hard_state = hard_state;
        let no_state = hard_state.term == 0
            && hard_state.voted_for.is_none()
            && snapshot.is_none()
            && log.is_empty()
            && offset == 0;
        if no_state && (config.bootstrap || config.peers.is_empty()) {
            // A founding member (or the whole of a one-node cluster).
            hard_state.voter = true;
        }
        if !hard_state.voter {
            tracing::warn!(
                id = config.id,
                "this node has no voting state: it starts as a learner, which neither votes \
                 nor counts towards quorums until it has caught up from a leader (a node \
                 of a brand-new cluster must start with bootstrap)"
            );
        }
        let (kv, snapshot) = match snapshot {
            Some(s) => (s.kv.clone(), Some(Arc::new(s))),
            None => (KeyValues::new(), None),
        };
        let mut core = Core {
            rng: config.seed ^ 0x9E37_79B9_7F4A_7C15,
            config,
            hard: hard_state,
            role: RoleState::Follower(Follower::default()),
            timers: TimerTable::default(),
            log: log
                .into_iter()
                .map(|entry| Stored { entry, at: now })
                .collect(),
            offset,
            offset_term,
            snapshot,
            snapshot_bytes: None,
            snapshot_pending: None,
            commit: snap_last.index,
            applied: snap_last.index,
            durable,
            live_keys: live_keys(&kv),
            kv,
            early_election: false,
            leader_clock: None,
            read_seq: 0,
            reads: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            held: VecDeque::new(),
            out: VecDeque::new(),
            elections_started: 0,
            elections_won: 0,
            rolled_back: 0,
            leaders_gone: 0,
            send_failures: 0,
            applied_bytes: 0,
        };
        core.reset_election_deadline(now);
        Ok(core)
    }
}

/// The index below which a kept tail of entries is dropped, given the
/// tail's `(index, bytes)` from the snapshot's index down: the highest
/// index at which keeping it too would exceed `max_bytes` (0: keep all;
/// `max_bytes` 0 caps nothing).
pub(super) fn keep_from(tail: impl Iterator<Item = (u64, usize)>, max_bytes: u64) -> u64 {
    if max_bytes == 0 {
        return 0;
    }
    let mut kept = 0u64;
    for (index, bytes) in tail {
        kept += bytes as u64;
        if kept > max_bytes {
            return index;
        }
    }
    0
}

/// The keys of `kv` that hold a value.
pub(super) fn live_keys(kv: &KeyValues) -> u64 {
    kv.values().filter(|(value, _)| value.is_some()).count() as u64
}
