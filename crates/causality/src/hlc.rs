//! Hybrid logical clocks (Kulkarni, Demirbas et al., "Logical Physical
//! Clocks", 2014).

use std::cmp;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A hybrid logical clock timestamp: physical milliseconds, a logical
/// counter, and the node that issued it.
///
/// Timestamps are totally ordered by `(physical_ms, logical, node)`: the
/// derived [`Ord`] compares the fields in that order, so two nodes that
/// issue the same `(physical_ms, logical)` are ordered by node id. Two
/// timestamps issued by the same [`Hlc`] are never equal.
///
/// `physical_ms` is in **milliseconds since the Unix epoch**, as read by
/// the caller (this crate never reads a clock). An [`Hlc`] never issues a
/// timestamp behind the physical time it was given for that event, nor
/// more than [`Hlc::max_drift`] ahead of the largest physical time it has
/// been given (unless [`restore`](Hlc::restore)d past that).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Timestamp {
    /// Physical part: the largest physical time (milliseconds since the
    /// Unix epoch) this timestamp's history has seen.
    pub physical_ms: u64,
    /// Logical part: orders events that share `physical_ms`.
    pub logical: u64,
    /// The node that issued the timestamp; breaks ties.
    pub node: NodeId,
}

impl Timestamp {
    /// A timestamp from its parts.
    pub fn new(physical_ms: u64, logical: u64, node: impl Into<NodeId>) -> Self {
        Self {
            physical_ms,
            logical,
            node: node.into(),
        }
    }
}

impl fmt::Display for Timestamp {
    /// `physical_ms.logical@node`, e.g. `1700000000000.3@n1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.physical_ms, self.logical, self.node)
    }
}

/// A remote timestamp was refused because it is too far ahead of this
/// node's physical clock (see [`Hlc::observe`]).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, thiserror::Error)]
#[error(
    "refused HLC timestamp {remote} from node {}: it is {} ms ahead of this node's physical clock ({physical_now_ms} ms), more than max_drift {max_drift_ms} ms; check the clocks (NTP) of node {} and of this node, or raise max_drift if that skew is expected",
    remote.node,
    self.ahead_ms(),
    remote.node
)]
#[non_exhaustive]
pub struct DriftError {
    /// The refused timestamp.
    pub remote: Timestamp,
    /// This node's physical time when it refused, in milliseconds.
    pub physical_now_ms: u64,
    /// The configured maximum drift, in milliseconds.
    pub max_drift_ms: u64,
}

impl DriftError {
    /// How far ahead of the local physical clock the remote timestamp was,
    /// in milliseconds.
    pub fn ahead_ms(&self) -> u64 {
        self.remote.physical_ms.saturating_sub(self.physical_now_ms)
    }
}

/// A hybrid logical clock: timestamps that follow physical time closely
/// and still respect causality (a timestamp is larger than every timestamp
/// its node issued or observed before).
///
/// Physical time is an argument, in **milliseconds since the Unix epoch**;
/// it may stand still or go backwards (an NTP step) and the clock stays
/// strictly monotonic: the logical counter takes over until physical time
/// catches up.
///
/// # Why the logical counter never wraps
///
/// The counter is a `u64`. It grows only while physical time does not pass
/// the clock's physical part, and is reset to 0 as soon as it does. Even
/// at a billion timestamps a second with a frozen physical clock, reaching
/// 2<sup>64</sup> takes 584 years. Should it ever happen, the clock carries
/// into the physical part (one millisecond ahead, counter 0) instead of
/// wrapping, so monotonicity holds unconditionally.
///
/// # Drift
///
/// A remote timestamp more than [`max_drift`](Hlc::max_drift) ahead of the
/// local physical clock is refused with a [`DriftError`] and counted
/// ([`refused`](Hlc::refused)) rather than adopted: one node with a clock
/// set to next year would otherwise drag every clock in the cluster there,
/// and LWW would then let its writes win for a year.
///
/// ```
/// use std::time::Duration;
/// use mimeo_causality::Hlc;
///
/// let mut a = Hlc::new("a", Duration::from_millis(500));
/// let mut b = Hlc::new("b", Duration::from_millis(500));
///
/// let t1 = a.tick(1_000);
/// // b's physical clock is 40 ms behind a's: the message still moves b past t1.
/// let t2 = b.observe(960, &t1).unwrap();
/// assert!(t2 > t1);
/// // Physical time going backwards does not make the clock go backwards.
/// let t3 = b.tick(900);
/// assert!(t3 > t2);
///
/// // A timestamp from a clock 10 s ahead is refused and counted.
/// let future = a.tick(11_000);
/// let err = b.observe(1_000, &future).unwrap_err();
/// assert_eq!(err.ahead_ms(), 10_000);
/// assert_eq!(b.refused(), 1);
/// // ... and left the clock where it was.
/// assert!(b.tick(1_000) < future);
/// ```
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Hlc {
    node: NodeId,
    max_drift_ms: u64,
    physical_ms: u64,
    logical: u64,
    refused: u64,
}

impl Hlc {
    /// A clock for `node` that refuses remote timestamps more than
    /// `max_drift` ahead of the local physical clock (whole milliseconds;
    /// anything finer is dropped). It starts at `0.0`: its first timestamp
    /// follows the physical time passed in. After a restart, call
    /// [`restore`](Hlc::restore) with the last timestamp persisted.
    pub fn new(node: impl Into<NodeId>, max_drift: Duration) -> Self {
        Self {
            node: node.into(),
            max_drift_ms: u64::try_from(max_drift.as_millis()).unwrap_or(u64::MAX),
            physical_ms: 0,
            logical: 0,
            refused: 0,
        }
    }

    /// The node this clock issues timestamps for.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The configured maximum drift.
    pub fn max_drift(&self) -> Duration {
        Duration::from_millis(self.max_drift_ms)
    }

    /// How many remote timestamps [`observe`](Hlc::observe) refused.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The clock's current value: the last timestamp it issued (or `0.0`
    /// before the first). The next one will be larger.
    pub fn last(&self) -> Timestamp {
        self.stamp()
    }

    /// Never issue a timestamp at or below `last` (whatever its node):
    /// call it after a restart with the largest timestamp this node
    /// persisted, so the clock stays monotonic across restarts even if the
    /// physical clock went back while the node was down.
    pub fn restore(&mut self, last: &Timestamp) {
        if (last.physical_ms, last.logical) > (self.physical_ms, self.logical) {
            self.physical_ms = last.physical_ms;
            self.logical = last.logical;
        }
    }

    /// A timestamp for a local event (a write, a message sent) at physical
    /// time `physical_now_ms` (milliseconds since the Unix epoch). Always
    /// larger than every timestamp this clock issued before.
    pub fn tick(&mut self, physical_now_ms: u64) -> Timestamp {
        if physical_now_ms > self.physical_ms {
            self.physical_ms = physical_now_ms;
            self.logical = 0;
        } else {
            (self.physical_ms, self.logical) = next(self.physical_ms, self.logical);
        }
        self.stamp()
    }

    /// Takes in a timestamp received from another node at local physical
    /// time `physical_now_ms`, and returns the timestamp of the receipt:
    /// larger than `remote` and than every timestamp this clock issued
    /// before.
    ///
    /// # Errors
    ///
    /// A [`DriftError`] if `remote` is more than
    /// [`max_drift`](Hlc::max_drift) ahead of `physical_now_ms`. The clock
    /// is then left as it was, and [`refused`](Hlc::refused) counts one
    /// more. The caller should drop the message (or the write) that
    /// carried it.
    pub fn observe(
        &mut self,
        physical_now_ms: u64,
        remote: &Timestamp,
    ) -> Result<Timestamp, DriftError> {
        if remote.physical_ms > physical_now_ms.saturating_add(self.max_drift_ms) {
            self.refused += 1;
            return Err(DriftError {
                remote: remote.clone(),
                physical_now_ms,
                max_drift_ms: self.max_drift_ms,
            });
        }
        let physical = cmp::max(
            cmp::max(self.physical_ms, remote.physical_ms),
            physical_now_ms,
        );
        let local = physical == self.physical_ms;
        let theirs = physical == remote.physical_ms;
        (self.physical_ms, self.logical) = match (local, theirs) {
            (true, true) => next(physical, cmp::max(self.logical, remote.logical)),
            (true, false) => next(physical, self.logical),
            (false, true) => next(physical, remote.logical),
            (false, false) => (physical, 0),
        };
        Ok(self.stamp())
    }

    fn stamp(&self) -> Timestamp {
        Timestamp {
            physical_ms: self.physical_ms,
            logical: self.logical,
            node: self.node.clone(),
        }
    }
}

/// The successor of `(physical, logical)`: the counter plus one, carrying
/// into the physical part in the (practically unreachable) case it is full.
fn next(physical: u64, logical: u64) -> (u64, u64) {
    match logical.checked_add(1) {
        Some(logical) => (physical, logical),
        None => (physical.saturating_add(1), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hlc() -> Hlc {
        Hlc::new("a", Duration::from_millis(100))
    }

    #[test]
    fn tick_follows_physical_time_and_counts_when_it_stands_still() {
        let mut c = hlc();
        assert_eq!(c.tick(10), Timestamp::new(10, 0, "a"));
        assert_eq!(c.tick(10), Timestamp::new(10, 1, "a"));
        assert_eq!(c.tick(9), Timestamp::new(10, 2, "a"));
        assert_eq!(c.tick(11), Timestamp::new(11, 0, "a"));
    }

    #[test]
    fn observe_takes_the_larger_history() {
        let mut c = hlc();
        c.tick(10);
        // Remote ahead (within drift): adopt its physical part, counter + 1.
        assert_eq!(
            c.observe(10, &Timestamp::new(50, 7, "b")).unwrap(),
            Timestamp::new(50, 8, "a")
        );
        // Same physical part on both: max of the counters + 1.
        assert_eq!(
            c.observe(20, &Timestamp::new(50, 9, "b")).unwrap(),
            Timestamp::new(50, 10, "a")
        );
        assert_eq!(
            c.observe(20, &Timestamp::new(50, 3, "b")).unwrap(),
            Timestamp::new(50, 11, "a")
        );
        // Remote behind: local counter + 1.
        assert_eq!(
            c.observe(20, &Timestamp::new(5, 3, "b")).unwrap(),
            Timestamp::new(50, 12, "a")
        );
        // Physical time passes both: counter resets.
        assert_eq!(
            c.observe(60, &Timestamp::new(55, 3, "b")).unwrap(),
            Timestamp::new(60, 0, "a")
        );
    }

    #[test]
    fn drift_is_measured_against_the_physical_clock_inclusive() {
        let mut c = hlc();
        assert!(c.observe(1_000, &Timestamp::new(1_100, 0, "b")).is_ok());
        let err = c
            .observe(1_000, &Timestamp::new(1_101, 0, "b"))
            .unwrap_err();
        assert_eq!(err.ahead_ms(), 101);
        assert_eq!(c.refused(), 1);
        let message = err.to_string();
        assert!(message.contains("node b"), "{message}");
        assert!(message.contains("101 ms ahead"), "{message}");
        assert!(message.contains("max_drift 100 ms"), "{message}");
        // The refused timestamp did not move the clock.
        assert_eq!(c.last(), Timestamp::new(1_100, 1, "a"));
    }

    #[test]
    fn a_full_counter_carries_into_the_physical_part() {
        let mut c = hlc();
        c.restore(&Timestamp::new(7, u64::MAX - 1, "z"));
        assert_eq!(c.tick(0), Timestamp::new(7, u64::MAX, "a"));
        assert_eq!(c.tick(0), Timestamp::new(8, 0, "a"));
        c.restore(&Timestamp::new(8, u64::MAX, "z"));
        let t = c.observe(0, &Timestamp::new(8, u64::MAX, "b")).unwrap();
        assert_eq!(t, Timestamp::new(9, 0, "a"));
    }

    #[test]
    fn restore_never_moves_the_clock_back() {
        let mut c = hlc();
        c.tick(100);
        c.restore(&Timestamp::new(50, 9, "a"));
        assert_eq!(c.last(), Timestamp::new(100, 0, "a"));
        c.restore(&Timestamp::new(200, 9, "a"));
        assert_eq!(c.tick(150), Timestamp::new(200, 10, "a"));
    }

    #[test]
    fn ties_are_broken_by_node() {
        assert!(Timestamp::new(1, 1, "a") < Timestamp::new(1, 1, "b"));
        assert!(Timestamp::new(1, 2, "a") > Timestamp::new(1, 1, "b"));
        assert!(Timestamp::new(2, 0, "a") > Timestamp::new(1, 9, "b"));
    }
}
