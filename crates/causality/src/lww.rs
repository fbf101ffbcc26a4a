//! Last-writer-wins registers.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// A last-writer-wins register: a value and the [`Timestamp`] of the write
/// that set it. Merging keeps the value with the larger timestamp (node id
/// breaking ties), so replicas converge, but a write whose timestamp is
/// smaller is silently lost, even if it happened later in real time.
///
/// Use it where losing concurrent writes is acceptable and cheap metadata
/// matters; use a [`DvvSet`](crate::DvvSet) where no acknowledged write may
/// vanish. The crate-level docs show LWW losing a write under clock skew
/// where a `DvvSet` keeps both.
///
/// ```
/// use mimeo_causality::{Lww, Timestamp};
///
/// let mut a = Lww::new(Timestamp::new(100, 0, "n1"), "old");
/// let b = Lww::new(Timestamp::new(100, 0, "n2"), "tie, but n2 > n1");
/// assert!(a.merge(&b));
/// assert_eq!(a.value, "tie, but n2 > n1");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Lww<V> {
    /// The timestamp of the write that set `value`.
    pub ts: Timestamp,
    /// The value.
    pub value: V,
}

impl<V> Lww<V> {
    /// A register holding `value`, written at `ts`.
    pub fn new(ts: Timestamp, value: V) -> Self {
        Self { ts, value }
    }

    /// Writes `value` at `ts` if `ts` is larger than the current
    /// timestamp; returns whether it won. A write with a smaller (or equal)
    /// timestamp is dropped.
    pub fn set(&mut self, ts: Timestamp, value: V) -> bool {
        if ts > self.ts {
            self.ts = ts;
            self.value = value;
            true
        } else {
            false
        }
    }
}

impl<V: Clone> Lww<V> {
    /// Merges another replica's register: keeps the one with the larger
    /// timestamp; returns whether `other` won. Commutative, associative
    /// and idempotent (timestamps from distinct writes are distinct).
    pub fn merge(&mut self, other: &Lww<V>) -> bool {
        if other.ts > self.ts {
            self.ts = other.ts.clone();
            self.value = other.value.clone();
            true
        } else {
            false
        }
    }
}
