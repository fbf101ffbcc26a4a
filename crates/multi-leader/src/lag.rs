//! A histogram of replication lags in milliseconds, kept by the core
//! without I/O and read through [`Status::apply_lag`](crate::Status::apply_lag).
//!
//! Hand-written rather than taken from a metrics crate: the core is a
//! plain single-threaded value that must be cloned and compared in tests
//! and serialized with its [`Status`](crate::Status); a fixed array of
//! counters is all it needs, and drivers render it in whatever format
//! they export (the node's is Prometheus text).

use serde::{Deserialize, Serialize};

/// The buckets' upper bounds in milliseconds (inclusive, as Prometheus's
/// `le`); a lag beyond the last falls in an unbounded bucket. From one
/// millisecond (loopback) to five minutes (a partition healing).
pub const LAG_BOUNDS_MS: [u64; 19] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000,
    120_000, 180_000, 300_000,
];

/// Lags observed, by bucket of [`LAG_BOUNDS_MS`], with their sum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LagHistogram {
    /// Observations per bucket (not cumulative), the unbounded one last;
    /// empty until the first observation.
    counts: Vec<u64>,
    /// Their sum in milliseconds (saturating).
    sum_ms: u64,
}

impl LagHistogram {
    /// Records one lag.
    pub fn observe(&mut self, lag_ms: u64) {
        if self.counts.is_empty() {
            self.counts = vec![0; LAG_BOUNDS_MS.len() + 1];
        }
        let bucket = LAG_BOUNDS_MS
            .iter()
            .position(|&bound| lag_ms <= bound)
            .unwrap_or(LAG_BOUNDS_MS.len());
        self.counts[bucket] += 1;
        self.sum_ms = self.sum_ms.saturating_add(lag_ms);
    }

    /// How many lags were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their sum, in milliseconds.
    pub fn sum_ms(&self) -> u64 {
        self.sum_ms
    }

    /// Cumulative counts: for each upper bound in milliseconds, how many
    /// lags were at most that, ending with `None` (+Inf: all of them).
    pub fn buckets(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        let bounds = LAG_BOUNDS_MS
            .iter()
            .map(|&ms| Some(ms))
            .chain(std::iter::once(None));
        let counts = (0..=LAG_BOUNDS_MS.len()).map(|i| self.counts.get(i).copied().unwrap_or(0));
        bounds.zip(counts.scan(0, |total, n| {
            *total += n;
            Some(*total)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lags_fall_in_the_first_bucket_that_holds_them() {
        let mut lag = LagHistogram::default();
        assert_eq!(lag.count(), 0);
        assert!(lag.buckets().all(|(_, n)| n == 0));
        for ms in [0, 1, 2, 150, 400_000] {
            lag.observe(ms);
        }
        assert_eq!((lag.count(), lag.sum_ms()), (5, 400_153));
        let buckets: Vec<_> = lag.buckets().collect();
        assert_eq!(buckets.len(), LAG_BOUNDS_MS.len() + 1);
        assert_eq!(buckets[0], (Some(1), 2), "0 and 1 ms");
        assert_eq!(buckets[1], (Some(2), 3));
        assert_eq!(buckets[6], (Some(100), 3));
        assert_eq!(buckets[7], (Some(200), 4), "150 ms");
        assert_eq!(buckets[18], (Some(300_000), 4));
        assert_eq!(buckets[19], (None, 5), "beyond five minutes");
    }
}
