//! Snapshots: taking one of the applied view, dropping the log before it
//! once it is durable, shipping it to a follower that needs entries the
//! leader dropped, and installing it there.

use std::sync::Arc;

use mimeo_storage::LogPosition;

use super::restore::{keep_from, live_keys};
use super::role::RoleState;
use super::Core;
use crate::message::{AppendResult, PeerMsg};
use crate::output::{Output, Persist};
use crate::progress::Mode;
use crate::size;
use crate::snapshot::{Incoming, Snapshot};
use crate::types::{Millis, NodeId};

impl Core {
    /// The driver made the snapshot ending at `last` durable (the one a
    /// [`Persist::snapshot`] carried). The core drops the log up to it from
    /// memory, but the last `snapshot_keep` entries, and asks the driver,
    /// with [`Persist::discard_before`], to drop them from disk.
    ///
    /// Returns the snapshot this one replaces, for the caller to drop
    /// where that costs nothing: freeing the keys only it still holds can
    /// take a while on a large state.
    pub fn snapshot_persisted(&mut self, now: Millis, last: LogPosition) -> Option<Arc<Snapshot>> {
        if self
            .snapshot_pending
            .as_ref()
            .is_none_or(|s| s.last != last)
        {
            return None; // superseded by a later snapshot, or unknown
        }
        let snapshot = self.snapshot_pending.take().expect("checked above");
        let replaced = self.snapshot.replace(snapshot);
        self.snapshot_bytes = None;
        // The snapshot durably holds everything up to its index. A follower
        // that installed it from its leader answers now.
        if self.term_at(last.index) == Some(last.term) {
            self.durable = self.durable.max(last.index);
            self.after_durable(now);
        }
        let by_count = last.index.saturating_sub(self.config.snapshot_keep);
        let by_bytes = keep_from(
            (by_count.max(self.offset) + 1..=last.index)
                .rev()
                .filter_map(|i| self.entry(i).map(|e| (i, size::entry_bytes(e)))),
            self.config.snapshot_bytes / 4,
        );
        let new_offset = by_count.max(by_bytes).min(last.index).max(self.offset);
        if new_offset > self.offset {
            let term = self
                .term_at(new_offset)
                .expect("the log holds the new offset");
            self.log.drain(..(new_offset - self.offset) as usize);
            self.offset = new_offset;
            self.offset_term = term;
            self.out.push_back(Output::Persist(Persist {
                discard_before: Some(new_offset + 1),
                ..Persist::default()
            }));
        }
        replaced
    }

    /// Send `peer` the next chunk of the snapshot (its window is open and
    /// it needs entries before the log's start).
    pub(super) fn send_snapshot_chunk(&mut self, now: Millis, peer: NodeId) {
        let snapshot = Arc::clone(
            self.snapshot
                .as_ref()
                .expect("a shortened log has a snapshot"),
        );
        let bytes = Arc::clone(
            self.snapshot_bytes
                .get_or_insert_with(|| Arc::new(snapshot.encode())),
        );
        let len = bytes.len() as u64;
        let p = self.role.progress_mut(peer).expect("the caller checked");
        let chunk = self
            .config
            .snapshot_chunk_bytes
            .min(self.config.max_message_bytes - size::SNAPSHOT_OVERHEAD)
            .min(p.max_bytes) as u64;
        let offset = match p.mode {
            Mode::Snapshot { last, offset } if last == snapshot.last => offset.min(len),
            _ => {
                tracing::info!(
                    peer,
                    next_index = p.next_index,
                    snapshot_index = snapshot.last.index,
                    bytes = len,
                    "the follower needs entries folded into the snapshot: sending it"
                );
                0
            }
        };
        let end = len.min(offset + chunk);
        p.mode = Mode::Snapshot {
            last: snapshot.last,
            offset,
        };
        p.inflight.clear();
        p.inflight.push_back(snapshot.last.index);
        p.last_progress = now;
        let msg = PeerMsg::InstallSnapshot {
            term: self.hard.term,
            last: snapshot.last,
            offset,
            data: bytes[offset as usize..end as usize].to_vec(),
            done: end == len,
        };
        self.send(peer, msg);
    }

    /// A follower received a chunk and expects `next_offset` next.
    pub(super) fn on_snapshot_ack(
        &mut self,
        now: Millis,
        from: NodeId,
        last: LogPosition,
        next_offset: u64,
    ) {
        let Some(p) = self.role.progress_mut(from) else {
            return;
        };
        p.last_heard = Some(now);
        let Mode::Snapshot { last: sending, .. } = p.mode else {
            return; // stale: the follower caught up since
        };
        if sending != last {
            return; // about a snapshot this leader no longer sends
        }
        p.mode = Mode::Snapshot {
            last,
            offset: next_offset,
        };
        p.inflight.clear();
        p.last_progress = now;
        self.send_appends(now, from);
    }

    /// A chunk of the leader's snapshot.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_install_snapshot(
        &mut self,
        now: Millis,
        from: NodeId,
        term: u64,
        last: LogPosition,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        if term < self.hard.term {
            return self.send(from, self.stale_term_answer());
        }
        if !self.observe_leader(now, from) {
            return;
        }
        let term = self.hard.term;
        let RoleState::Follower(follower) = &mut self.role else {
            unreachable!("observe_leader made this node a follower");
        };
        if last.index <= self.commit {
            // Nothing to install: this node holds it all, committed (a
            // retransmission, or the answer to an install was lost).
            follower.incoming = None;
            self.raise_leader_match(last.index);
            let result = AppendResult::Ok {
                matched: last.index,
                durable: self.durable.min(last.index),
            };
            return self.send(from, self.append_resp(term, result));
        }
        let same = follower
            .incoming
            .as_ref()
            .is_some_and(|i| i.term == term && i.last == last);
        if offset == 0 && !same {
            follower.incoming = Some(Incoming {
                term,
                last,
                bytes: Vec::new(),
            });
        }
        let have = match &mut follower.incoming {
            Some(i) if i.term == term && i.last == last => {
                if offset == i.bytes.len() as u64 {
                    i.bytes.extend_from_slice(&data);
                    if done {
                        None
                    } else {
                        Some(i.bytes.len() as u64)
                    }
                } else {
                    Some(i.bytes.len() as u64) // a gap or a duplicate
                }
            }
            _ => Some(0), // another snapshot, or one this node lost: restart
        };
        if let Some(next_offset) = have {
            let msg = PeerMsg::SnapshotAck {
                term,
                last,
                next_offset,
            };
            return self.send(from, msg);
        }
        let bytes = follower.incoming.take().expect("assembled above").bytes;
        match Snapshot::decode(&bytes) {
            Ok(snapshot) if snapshot.last == last => self.install_snapshot(now, snapshot),
            Ok(snapshot) => {
                tracing::error!(from, expected = ?last, found = ?snapshot.last, "the leader's snapshot does not end where its messages say; asking again");
                self.send(
                    from,
                    PeerMsg::SnapshotAck {
                        term,
                        last,
                        next_offset: 0,
                    },
                );
            }
            Err(e) => {
                tracing::error!(from, error = %e, bytes = bytes.len(), "the leader's snapshot does not decode; asking again");
                self.send(
                    from,
                    PeerMsg::SnapshotAck {
                        term,
                        last,
                        next_offset: 0,
                    },
                );
            }
        }
    }

    /// Replace the applied view (and the log before the snapshot) by the
    /// leader's snapshot, which is ahead of this node's commit index. The
    /// answer goes out once it is durable
    /// ([`snapshot_persisted`](Core::snapshot_persisted)).
    fn install_snapshot(&mut self, now: Millis, snapshot: Snapshot) {
        let last = snapshot.last;
        debug_assert!(last.index > self.commit);
        let keep_suffix = self.term_at(last.index) == Some(last.term);
        tracing::info!(
            index = last.index,
            term = last.term,
            keys = snapshot.kv.len(),
            keep_suffix,
            "installing the leader's snapshot"
        );
        let replace_log = !keep_suffix;
        if replace_log {
            // Raft §7: the log does not hold the snapshot's last entry, so
            // nothing in it is known to match the leader's after it.
            self.log.clear();
            self.offset = last.index;
            self.offset_term = last.term;
            self.durable = self.durable.min(self.commit);
        }
        self.kv = snapshot.kv.clone();
        self.live_keys = live_keys(&self.kv);
        self.commit = last.index;
        self.applied = last.index;
        self.raise_leader_match(last.index);
        let snapshot = Arc::new(snapshot);
        self.snapshot_pending = Some(Arc::clone(&snapshot));
        self.out.push_back(Output::Persist(Persist {
            snapshot: Some(snapshot),
            replace_log,
            ..Persist::default()
        }));
        self.check_reads(now);
    }

    /// Take a snapshot of the applied view when `snapshot_every` entries
    /// were applied since the last one (and none is being written).
    pub(super) fn maybe_take_snapshot(&mut self) {
        let every = self.config.snapshot_every;
        let since = self.snapshot.as_ref().map_or(0, |s| s.last.index);
        let by_count = every != 0 && self.applied - since >= every;
        let bytes = self.config.snapshot_bytes;
        let by_bytes = bytes != 0 && self.applied_bytes >= bytes;
        if self.snapshot_pending.is_some() || !(by_count || by_bytes) {
            return;
        }
        self.applied_bytes = 0;
        let snapshot = Arc::new(Snapshot {
            last: self.position_at(self.applied),
            kv: self.kv.clone(),
        });
        tracing::debug!(
            index = snapshot.last.index,
            keys = snapshot.kv.len(),
            "taking a snapshot"
        );
        self.snapshot_pending = Some(Arc::clone(&snapshot));
        self.out.push_back(Output::Persist(Persist {
            snapshot: Some(snapshot),
            ..Persist::default()
        }));
    }
}
