//! What a leader knows about one follower's log, and the flow control of
//! the appends it sends it.

use std::collections::VecDeque;

use mimeo_storage::LogPosition;

use crate::types::Millis;

/// How the leader ships entries to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    /// The follower's position is unknown: one append at a time, each
    /// waiting for its answer (after a conflict, a retransmission, or at
    /// the start of a term).
    Probe,
    /// The follower matched: appends are pipelined, up to the window.
    Replicate,
    /// The follower needs entries the leader has dropped: the leader ships
    /// its snapshot ending at `last`, one chunk at a time; `offset` is the
    /// next byte to send.
    Snapshot {
        /// The snapshot being shipped.
        last: LogPosition,
        /// The next byte to send.
        offset: u64,
    },
}

/// A leader's view of one follower.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Progress {
    /// The highest index known to match the leader's log and be durable on
    /// the follower.
    pub(crate) match_index: u64,
    /// The next index to send.
    pub(crate) next_index: u64,
    /// Probing or pipelining.
    pub(crate) mode: Mode,
    /// The last index of each append in flight, oldest first. Its length is
    /// bounded by `max_inflight_msgs` (1 while probing), which bounds what
    /// a slow follower can make the leader hold in flight (1 while shipping
    /// a snapshot: one chunk at a time).
    pub(crate) inflight: VecDeque<u64>,
    /// When the follower last answered an append (any outcome) in this
    /// term, or when the window last moved.
    pub(crate) last_progress: Millis,
    /// When the follower last answered anything in this term.
    pub(crate) last_heard: Option<Millis>,
    /// The highest heartbeat round it has answered in this term.
    pub(crate) acked_seq: u64,
    /// Whether a leadership transfer's `TimeoutNow` was sent to it.
    pub(crate) timeout_now_sent: bool,
    /// The most encoded bytes of entries (or snapshot data) one message to
    /// it may carry: the config's budget, halved each time the transport
    /// refuses a message to it, and doubled back on each acknowledgement.
    pub(crate) max_bytes: usize,
    /// Whether the follower votes, as its latest answer said: a learner's
    /// answers count towards no quorum.
    pub(crate) voter: bool,
}

impl Progress {
    /// A follower whose log is unknown, at the start of a term whose leader
    /// has `last_index` entries.
    pub(crate) fn new(last_index: u64, now: Millis, max_bytes: usize) -> Progress {
        Progress {
            match_index: 0,
            next_index: last_index + 1,
            mode: Mode::Probe,
            inflight: VecDeque::new(),
            last_progress: now,
            last_heard: None,
            acked_seq: 0,
            timeout_now_sent: false,
            max_bytes,
            voter: true,
        }
    }

    /// Whether another append may be sent now.
    pub(crate) fn window_open(&self, max_inflight: usize) -> bool {
        match self.mode {
            Mode::Probe | Mode::Snapshot { .. } => self.inflight.is_empty(),
            Mode::Replicate => self.inflight.len() < max_inflight,
        }
    }

    /// The follower's answer says whether it votes. A follower found to be
    /// a learner started without state (its data may have been lost): what
    /// it was known to hold is forgotten, and it counts towards no quorum
    /// until an answer says it votes again. (This assumes that no answer
    /// its process sent before the loss arrives after one from the new
    /// process: a process's connections die with it.)
    pub(crate) fn set_voter(&mut self, voter: bool) {
        if self.voter && !voter {
            self.match_index = 0;
        }
        self.voter = voter;
    }

    /// The follower matched through `matched` and holds `durable` durably.
    /// `budget` is the configured message budget, which `max_bytes` grows
    /// back towards.
    pub(crate) fn on_ok(&mut self, matched: u64, durable: u64, now: Millis, budget: usize) {
        self.max_bytes = self.max_bytes.saturating_mul(2).min(budget);
        self.match_index = self.match_index.max(durable);
        self.next_index = self.next_index.max(matched + 1);
        let before = self.inflight.len();
        while self.inflight.front().is_some_and(|&last| last <= matched) {
            self.inflight.pop_front();
        }
        if self.mode == Mode::Probe || self.inflight.len() != before {
            self.last_progress = now;
        }
        self.mode = Mode::Replicate;
    }

    /// The follower's log did not match; resend from after `hint`.
    pub(crate) fn on_conflict(&mut self, hint: u64, last_index: u64, now: Millis) {
        self.next_index = (hint + 1).clamp(self.match_index + 1, last_index + 1);
        self.mode = Mode::Probe;
        self.inflight.clear();
        self.last_progress = now;
    }

    /// The transport refused a message to the follower (too large for a
    /// frame): halve what one message may carry (an append still carries
    /// at least one entry), and probe again from the match index at the
    /// next heartbeat, the back-off. A snapshot being shipped is resent
    /// from the same offset, in smaller chunks.
    pub(crate) fn on_send_failed(&mut self, now: Millis) {
        self.max_bytes = (self.max_bytes / 2).max(1);
        self.inflight.clear();
        self.last_progress = now;
        if let Mode::Snapshot { .. } = self.mode {
            return;
        }
        self.next_index = self.match_index + 1;
        self.mode = Mode::Probe;
    }

    /// Forget the window when it has not moved for `retransmit_ms` (its
    /// messages or their answers were lost): probe again from the match
    /// index. Also probe a follower whose window is empty but whose match
    /// index is behind `last_index` (its answer that more became durable
    /// was lost).
    ///
    /// While shipping a snapshot, the lost chunk is sent again from the
    /// same offset (the follower answers with the offset it expects).
    ///
    /// Each retransmission halves `max_bytes` (acknowledgements double it
    /// back): a follower that answers nothing (paused, cut off) is sent
    /// ever smaller probes, down to one entry and then none, rather than
    /// the largest message every `retransmit_ms`.
    pub(crate) fn maybe_retransmit(&mut self, now: Millis, retransmit_ms: u64, last_index: u64) {
        let stuck = !self.inflight.is_empty() || self.match_index < last_index;
        if stuck && now.since(self.last_progress) >= retransmit_ms {
            self.max_bytes = (self.max_bytes / 2).max(1);
            if let Mode::Snapshot { .. } = self.mode {
                self.inflight.clear();
                self.last_progress = now;
                return;
            }
            self.inflight.clear();
            self.next_index = self.match_index + 1;
            self.mode = Mode::Probe;
            self.last_progress = now;
        }
    }
}
