//! How long followers take to make a leader's entries durable, timed by the
//! driver (the core has no clock finer than its millisecond ticks, and
//! needs none).
//!
//! An append is timed from the moment the leader's driver queues it for a
//! follower to the moment it reads the follower's answer that the append's
//! last entry is durable there: the trip both ways, the follower's write
//! and fsync, and every queue on the way. This is the follower's share of a
//! quorum write's latency, and the first place a slow disk or link shows.
//!
//! Entries sent again (after a lost message or a follower's restart) are
//! timed from their first send: what their writers waited. An append the
//! follower refuses, or that is still unanswered when 4,096 newer
//! ones are in flight, is not timed at all, so a stalled follower shows in
//! the lag metrics rather than here.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mimeo_storage::{Latencies, LatencyHistogram};

use super::NodeNames;
use crate::message::{AppendResult, PeerMsg};
use crate::types::NodeId;

/// Appends timed at once per follower; beyond it the oldest are forgotten
/// (a follower that answers nothing must not grow the leader's memory).
const MAX_TIMED: usize = 4096;

/// Per follower, how long appends took to become durable there: read it
/// with [`Handle::replication_latency`](crate::driver::Handle::replication_latency).
#[derive(Debug)]
pub struct ReplicationLatency {
    names: NodeNames,
    me: NodeId,
    /// By node id - 1 (this node's own stays empty).
    histograms: Vec<LatencyHistogram>,
}

impl ReplicationLatency {
    pub(crate) fn new(names: NodeNames, me: NodeId) -> ReplicationLatency {
        let histograms = (0..names.len()).map(|_| LatencyHistogram::new()).collect();
        ReplicationLatency {
            names,
            me,
            histograms,
        }
    }

    fn observe(&self, follower: NodeId, latency: Duration) {
        let slot = usize::try_from(follower.saturating_sub(1)).ok();
        if let Some(histogram) = slot.and_then(|i| self.histograms.get(i)) {
            histogram.observe(latency);
        }
    }

    /// Every other node of the cluster, by name, with the latencies of the
    /// appends this node sent it while leading (none if it never led).
    pub fn snapshot(&self) -> Vec<(String, Latencies)> {
        (1..)
            .zip(&self.histograms)
            .filter(|&(id, _)| id != self.me)
            .filter_map(|(id, histogram)| {
                let name = self.names.name(id)?;
                Some((name.to_owned(), histogram.snapshot()))
            })
            .collect()
    }
}

/// One append in flight to a follower.
#[derive(Debug)]
struct InFlight {
    term: u64,
    /// The index of its last entry.
    last: u64,
    sent: Instant,
}

/// The driver's record of the appends in flight, fed with every message
/// sent and received.
#[derive(Debug)]
pub(crate) struct ReplicationTimer {
    latency: Arc<ReplicationLatency>,
    in_flight: HashMap<NodeId, VecDeque<InFlight>>,
}

impl ReplicationTimer {
    pub(crate) fn new(latency: Arc<ReplicationLatency>) -> ReplicationTimer {
        ReplicationTimer {
            latency,
            in_flight: HashMap::new(),
        }
    }

    /// `msg` was queued for `to` at `at`.
    pub(crate) fn sent(&mut self, to: NodeId, msg: &PeerMsg, at: Instant) {
        let PeerMsg::Append { term, entries, .. } = msg else {
            return;
        };
        let Some(last) = entries.last().map(|e| e.position.index) else {
            return; // a probe: nothing to make durable
        };
        let queue = self.in_flight.entry(to).or_default();
        // A resend of entries already timed keeps their first send.
        if queue
            .back()
            .is_some_and(|b| b.term == *term && b.last >= last)
        {
            return;
        }
        if queue.len() == MAX_TIMED {
            queue.pop_front();
        }
        queue.push_back(InFlight {
            term: *term,
            last,
            sent: at,
        });
    }

    /// `msg` arrived from `from` at `at`.
    pub(crate) fn received(&mut self, from: NodeId, msg: &PeerMsg, at: Instant) {
        let PeerMsg::AppendResp { term, result, .. } = msg else {
            return;
        };
        let Some(queue) = self.in_flight.get_mut(&from) else {
            return;
        };
        let AppendResult::Ok { durable, .. } = result else {
            // Refused: the appends of that term will be sent again, from
            // where the logs match, and timed from then. (A refusal from
            // an older term is stale and changes nothing.)
            queue.retain(|f| f.term > *term);
            return;
        };
        while let Some(front) = queue.front() {
            if front.term > *term || (front.term == *term && front.last > *durable) {
                break; // not yet durable, or an answer from an older term
            }
            let front = queue.pop_front().expect("checked above");
            // Sent in an earlier term: the answer is not to it.
            if front.term == *term {
                self.latency
                    .observe(from, at.saturating_duration_since(front.sent));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, LogEntry};
    use mimeo_storage::LogPosition;

    fn names() -> NodeNames {
        NodeNames::new(vec!["n1".into(), "n2".into(), "n3".into()])
    }

    fn append(term: u64, first: u64, last: u64) -> PeerMsg {
        PeerMsg::Append {
            term,
            prev: LogPosition::new(term, first - 1),
            entries: (first..=last)
                .map(|i| LogEntry {
                    position: LogPosition::new(term, i),
                    command: Command::Noop,
                })
                .collect(),
            commit: 0,
        }
    }

    fn ok(term: u64, matched: u64, durable: u64) -> PeerMsg {
        PeerMsg::AppendResp {
            term,
            result: AppendResult::Ok { matched, durable },
            voter: true,
        }
    }

    fn counts(latency: &ReplicationLatency) -> Vec<(String, u64, Duration)> {
        latency
            .snapshot()
            .into_iter()
            .map(|(name, l)| (name, l.count(), l.sum()))
            .collect()
    }

    #[test]
    fn an_append_is_timed_until_the_answer_that_it_is_durable() {
        let latency = Arc::new(ReplicationLatency::new(names(), 1));
        let mut timer = ReplicationTimer::new(Arc::clone(&latency));
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        timer.sent(2, &append(3, 1, 2), t0);
        timer.sent(2, &append(3, 3, 3), t0 + ms(1));
        // A resend of what is timed keeps the first send; probes and
        // heartbeats are not timed.
        timer.sent(2, &append(3, 2, 3), t0 + ms(2));
        timer.sent(3, &append(3, 1, 0), t0);
        // Received but not yet durable: nothing yet.
        timer.received(2, &ok(3, 3, 0), t0 + ms(3));
        assert_eq!(counts(&latency)[0].1, 0);
        // Durable through 3: both appends, from their first sends.
        timer.received(2, &ok(3, 3, 3), t0 + ms(5));
        assert_eq!(
            counts(&latency),
            [
                ("n2".to_owned(), 2, ms(5) + ms(4)),
                ("n3".to_owned(), 0, Duration::ZERO)
            ]
        );
    }

    #[test]
    fn refused_appends_and_answers_from_other_terms_are_not_timed_and_stale_refusals_ignored() {
        let latency = Arc::new(ReplicationLatency::new(names(), 2));
        let mut timer = ReplicationTimer::new(Arc::clone(&latency));
        let t0 = Instant::now();
        timer.sent(1, &append(4, 5, 6), t0);
        timer.received(1, &ok(3, 9, 9), t0); // an older term's answer
        timer.received(
            1,
            &PeerMsg::AppendResp {
                term: 4,
                result: AppendResult::Conflict { hint: 2 },
                voter: true,
            },
            t0,
        );
        timer.received(1, &ok(4, 6, 6), t0); // nothing left in flight
                                             // A refusal from an older term is stale: what is in flight stays.
        timer.sent(1, &append(4, 7, 7), t0);
        timer.received(
            1,
            &PeerMsg::AppendResp {
                term: 3,
                result: AppendResult::Conflict { hint: 2 },
                voter: true,
            },
            t0,
        );
        assert_eq!(timer.in_flight[&1].len(), 1);
        timer.received(1, &ok(4, 7, 7), t0 + Duration::from_millis(2));
        timer.sent(3, &append(4, 5, 6), t0);
        timer.received(3, &ok(5, 6, 6), t0); // sent in term 4, answered in 5
        let snapshot = latency.snapshot();
        let names: Vec<&str> = snapshot.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["n1", "n3"], "this node (n2) is not listed");
        assert_eq!(
            counts(&latency),
            [
                ("n1".to_owned(), 1, Duration::from_millis(2)),
                ("n3".to_owned(), 0, Duration::ZERO)
            ],
            "only the append sent after the refusal is timed"
        );
    }

    #[test]
    fn a_silent_follower_costs_a_bounded_record() {
        let latency = Arc::new(ReplicationLatency::new(names(), 1));
        let mut timer = ReplicationTimer::new(latency);
        let t0 = Instant::now();
        for i in 1..=(MAX_TIMED as u64 + 10) {
            timer.sent(2, &append(1, i, i), t0);
        }
        assert_eq!(timer.in_flight[&2].len(), MAX_TIMED);
        assert_eq!(timer.in_flight[&2].front().unwrap().last, 11);
    }
}
