//! Latency histograms: fixed buckets, recorded without locks.
//!
//! The store times its own writes and fsyncs with them
//! ([`Stats::write_latency`](crate::Stats::write_latency),
//! [`Stats::fsync_latency`](crate::Stats::fsync_latency)), and a node times
//! the requests it serves. The buckets follow the 1-2-5 series from 10 µs
//! to 10 s, which separates a page-cache write (~10 µs) from an fsync
//! (~100 µs) from a network round trip, and is few enough (19 bounds) to
//! export as a Prometheus histogram per label set. The sum is exact (one
//! observation adds at most an hour to it), so means are too; quantiles
//! are estimates within one bucket.
//!
//! ```
//! use std::time::Duration;
//! use mimeo_storage::LatencyHistogram;
//!
//! let histogram = LatencyHistogram::new();
//! histogram.observe(Duration::from_micros(80));
//! histogram.observe(Duration::from_micros(150));
//! let latencies = histogram.snapshot();
//! assert_eq!(latencies.count(), 2);
//! assert_eq!(latencies.mean(), Some(Duration::from_micros(115)));
//! // Cumulative counts per upper bound, ending with +Inf (`None`).
//! let buckets: Vec<_> = latencies.buckets().collect();
//! assert_eq!(buckets[3], (Some(Duration::from_micros(100)), 1));
//! assert_eq!(buckets[4], (Some(Duration::from_micros(200)), 2));
//! assert_eq!(buckets.last(), Some(&(None, 2)));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The buckets' upper bounds, in microseconds (inclusive, as Prometheus's
/// `le`). Anything slower falls in a last, unbounded bucket.
pub const LATENCY_BOUNDS_US: [u64; 19] = [
    10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000,
    500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000,
];

const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// The most one observation adds to the sum.
const MAX_SUMMED: Duration = Duration::from_secs(3600);

/// A latency histogram that threads record into concurrently (relaxed
/// atomic adds, no lock) and that is read with [`snapshot`](Self::snapshot).
#[derive(Debug)]
pub struct LatencyHistogram {
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub const fn new() -> LatencyHistogram {
        LatencyHistogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS],
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one latency.
    pub fn observe(&self, latency: Duration) {
        let ns = latency.as_nanos();
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&bound| ns <= u128::from(bound) * 1_000)
            .unwrap_or(BUCKETS - 1);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        // One observation adds at most an hour to the sum, so the sum (in
        // nanoseconds) lasts centuries of real latencies.
        let ns = latency.min(MAX_SUMMED).as_nanos() as u64;
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The counts so far. Taken bucket by bucket while others may record,
    /// so the count and the sum can miss the observations made while the
    /// snapshot was read (a few at most).
    pub fn snapshot(&self) -> Latencies {
        Latencies {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum: Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed)),
        }
    }
}

/// What a [`LatencyHistogram`] holds at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Latencies {
    /// Observations per bucket (not cumulative), the unbounded one last.
    counts: [u64; BUCKETS],
    sum: Duration,
}

impl Latencies {
    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their sum.
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// Their mean, `None` when there are none.
    pub fn mean(&self) -> Option<Duration> {
        let count = u128::from(self.count());
        (count > 0).then(|| Duration::from_nanos((self.sum.as_nanos() / count) as u64))
    }

    /// Cumulative counts: for each upper bound, how many latencies were at
    /// most that long, ending with `None` (+Inf: all of them).
    pub fn buckets(&self) -> impl Iterator<Item = (Option<Duration>, u64)> + '_ {
        let bounds = LATENCY_BOUNDS_US
            .iter()
            .map(|&us| Some(Duration::from_micros(us)))
            .chain(std::iter::once(None));
        bounds.zip(self.counts.iter().scan(0, |total, &n| {
            *total += n;
            Some(*total)
        }))
    }

    /// An estimate of the `q` quantile (`0.0..=1.0`): linear within the
    /// bucket that holds it, so off by at most that bucket's width. `None`
    /// when there are no latencies; the last bound when the quantile falls
    /// in the unbounded bucket.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        let mut lower = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            let Some(&upper) = LATENCY_BOUNDS_US.get(i) else {
                break;
            };
            if n > 0 && (below + n) as f64 >= rank {
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                let us = lower as f64 + within * (upper - lower) as f64;
                return Some(Duration::from_secs_f64(us / 1e6));
            }
            below += n;
            lower = upper;
        }
        Some(Duration::from_micros(lower))
    }

    /// The latencies recorded between `earlier` and this snapshot of the
    /// same histogram.
    pub fn since(&self, earlier: &Latencies) -> Latencies {
        Latencies {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
            sum: self.sum.saturating_sub(earlier.sum),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn bounds_are_inclusive_and_the_last_bucket_is_unbounded() {
        let h = LatencyHistogram::new();
        for latency in [us(0), us(10), Duration::from_nanos(10_001), us(11), us(20)] {
            h.observe(latency);
        }
        h.observe(Duration::from_secs(11));
        h.observe(Duration::MAX);
        let l = h.snapshot();
        let buckets: Vec<_> = l.buckets().collect();
        assert_eq!(buckets.len(), LATENCY_BOUNDS_US.len() + 1);
        // A nanosecond past a bound is past it.
        assert_eq!(buckets[0], (Some(us(10)), 2));
        assert_eq!(buckets[1], (Some(us(20)), 5));
        assert_eq!(buckets[18], (Some(Duration::from_secs(10)), 5));
        assert_eq!(buckets[19], (None, 7));
        assert_eq!(l.count(), 7);
        // Each observation adds at most an hour to the sum.
        assert_eq!(
            l.sum(),
            Duration::from_nanos(51_001) + Duration::from_secs(11 + 3600)
        );
    }

    #[test]
    fn sums_means_and_differences_are_exact() {
        let h = LatencyHistogram::new();
        assert_eq!(h.snapshot().mean(), None);
        h.observe(us(100));
        let first = h.snapshot();
        h.observe(us(300));
        h.observe(us(500));
        let later = h.snapshot();
        assert_eq!(later.sum(), us(900));
        assert_eq!(later.mean(), Some(us(300)));
        let between = later.since(&first);
        assert_eq!(between.count(), 2);
        assert_eq!(between.mean(), Some(us(400)));
    }

    #[test]
    fn quantiles_fall_in_the_bucket_that_holds_them() {
        let h = LatencyHistogram::new();
        assert_eq!(h.snapshot().quantile(0.5), None);
        // 90 in (100, 200] µs and 10 in (1, 2] ms.
        for _ in 0..90 {
            h.observe(us(150));
        }
        for _ in 0..10 {
            h.observe(us(1_500));
        }
        let l = h.snapshot();
        let median = l.quantile(0.5).unwrap();
        assert!(median > us(100) && median <= us(200), "{median:?}");
        let p95 = l.quantile(0.95).unwrap();
        assert!(p95 > us(1_000) && p95 <= us(2_000), "{p95:?}");
        assert_eq!(l.quantile(1.0), Some(us(2_000)));
        assert_eq!(l.quantile(0.0), Some(us(100)));
        // Beyond the last bound, the last bound is all that is known.
        h.observe(Duration::from_secs(60));
        assert_eq!(h.snapshot().quantile(1.0), Some(Duration::from_secs(10)));
    }
}
