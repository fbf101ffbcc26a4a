//! The hybrid logical clock's guarantees (Kulkarni et al. 2014, with the
//! drift refusal of issue 21), under any sequence of physical times,
//! including ones that go backwards:
//!
//! - every timestamp a clock issues is larger than the one before it;
//! - a received timestamp is either refused (it was more than `max_drift`
//!   ahead of the local physical clock; the clock does not move and the
//!   refusal is counted) or followed by a larger receipt timestamp;
//! - a timestamp is never behind the physical time it was issued at, and
//!   never more than `max_drift` ahead of the largest physical time its
//!   node has read;
//! - timestamps are totally ordered, node id breaking ties.

use std::time::Duration;

use mimeo_causality::{Hlc, Timestamp};
use proptest::prelude::*;

const CASES: u32 = 3000;
const DRIFT_MS: u64 = 100;
const NODES: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug)]
enum Event {
    /// `node` makes a local event at physical time `now`.
    Tick { node: usize, now: u64 },
    /// `node` receives at `now` the last timestamp `from` issued.
    Receive { node: usize, from: usize, now: u64 },
    /// `node` receives at `now` a timestamp from outside the three, whose
    /// physical part is `now + ahead - 500` (from 500 ms behind to 500 ms
    /// ahead, so well inside and well beyond `max_drift`).
    Foreign {
        node: usize,
        now: u64,
        ahead: u64,
        logical: u64,
    },
}

/// Physical times jump around (backwards too) in a small range, so that
/// equal times, steps back and steps forward are all common.
fn event() -> impl Strategy<Value = Event> {
    let now = 0..1_000u64;
    prop_oneof![
        (0..3usize, now.clone()).prop_map(|(node, now)| Event::Tick { node, now }),
        (0..3usize, 0..3usize, now.clone()).prop_map(|(node, from, now)| Event::Receive {
            node,
            from,
            now
        }),
        (0..3usize, now, 0..1_000u64, 0..5u64).prop_map(|(node, now, ahead, logical)| {
            Event::Foreign {
                node,
                now,
                ahead,
                logical,
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn clocks_are_monotonic_bounded_and_refuse_drift(events in prop::collection::vec(event(), 0..40)) {
        let mut clocks: Vec<Hlc> = NODES
            .iter()
            .map(|&n| Hlc::new(n, Duration::from_millis(DRIFT_MS)))
            .collect();
        let mut max_now = [0u64; 3];
        let mut refusals = [0u64; 3];
        for event in events {
            let (node, now, remote) = match event {
                Event::Tick { node, now } => (node, now, None),
                Event::Receive { node, from, now } => (node, now, Some(clocks[from].last())),
                Event::Foreign { node, now, ahead, logical } => {
                    let physical = (now + ahead).saturating_sub(500);
                    (node, now, Some(Timestamp::new(physical, logical, "zz")))
                }
            };
            let before = clocks[node].last();
            max_now[node] = max_now[node].max(now);
            let issued = match &remote {
                None => clocks[node].tick(now),
                Some(remote) => match clocks[node].observe(now, remote) {
                    Ok(ts) => {
                        prop_assert!(remote.physical_ms <= now + DRIFT_MS, "accepted {remote} at {now}");
                        prop_assert!(&ts > remote, "receipt {ts} not after {remote}");
                        ts
                    }
                    Err(err) => {
                        prop_assert!(remote.physical_ms > now + DRIFT_MS, "refused {remote} at {now}");
                        prop_assert_eq!(&err.remote, remote);
                        prop_assert_eq!(err.ahead_ms(), remote.physical_ms - now);
                        refusals[node] += 1;
                        prop_assert_eq!(clocks[node].last(), before, "a refusal moved the clock");
                        prop_assert_eq!(clocks[node].refused(), refusals[node]);
                        continue;
                    }
                },
            };
            prop_assert!(issued > before, "{issued} not after {before}");
            prop_assert_eq!(issued.node.as_str(), NODES[node]);
            prop_assert_eq!(&clocks[node].last(), &issued);
            prop_assert!(issued.physical_ms >= now, "{issued} behind physical time {now}");
            prop_assert!(
                issued.physical_ms <= max_now[node] + DRIFT_MS,
                "{issued} more than max_drift ahead of {}",
                max_now[node]
            );
            prop_assert_eq!(clocks[node].refused(), refusals[node]);
        }
    }

    #[test]
    fn any_physical_times_keep_one_clock_monotonic(times in prop::collection::vec(any::<u64>(), 1..60)) {
        // Arbitrary u64 times (huge jumps both ways, the extremes included).
        let mut clock = Hlc::new("a", Duration::from_millis(DRIFT_MS));
        let mut last = clock.last();
        for now in times {
            let ts = clock.tick(now);
            prop_assert!(ts > last);
            last = ts;
        }
    }

    #[test]
    fn timestamps_are_totally_ordered(
        x in (0..3u64, 0..3u64, 0..3usize),
        y in (0..3u64, 0..3u64, 0..3usize),
        z in (0..3u64, 0..3u64, 0..3usize),
    ) {
        let ts = |(p, l, n): (u64, u64, usize)| Timestamp::new(p, l, NODES[n]);
        let (x, y, z) = (ts(x), ts(y), ts(z));
        // Exactly one of <, ==, > (Ord is total), consistent with the parts.
        prop_assert_eq!(x == y, (x.physical_ms, x.logical, &x.node) == (y.physical_ms, y.logical, &y.node));
        prop_assert_eq!(x.cmp(&y), (x.physical_ms, x.logical, &x.node).cmp(&(y.physical_ms, y.logical, &y.node)));
        if x <= y && y <= z {
            prop_assert!(x <= z);
        }
    }
}

#[test]
fn a_clock_far_ahead_is_refused_and_counted_while_a_near_one_is_followed() {
    let mut clock = Hlc::new("a", Duration::from_millis(500));
    clock.tick(10_000);
    let near = Timestamp::new(10_500, 3, "b");
    let far = Timestamp::new(10_501, 0, "c");
    assert_eq!(
        clock.observe(10_000, &near).unwrap(),
        Timestamp::new(10_500, 4, "a")
    );
    let err = clock.observe(10_000, &far).unwrap_err();
    assert_eq!(clock.refused(), 1);
    assert_eq!(err.ahead_ms(), 501);
    assert_eq!(err.max_drift_ms, 500);
    assert_eq!(
        err.to_string(),
        "refused HLC timestamp 10501.0@c from node c: it is 501 ms ahead of this node's physical \
         clock (10000 ms), more than max_drift 500 ms; check the clocks (NTP) of node c and of \
         this node, or raise max_drift if that skew is expected"
    );
    // The same timestamp is accepted once local time has caught up.
    assert!(clock.observe(10_001, &far).unwrap() > far);
    assert_eq!(clock.refused(), 1);
}
