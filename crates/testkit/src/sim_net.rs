//! The simulations' network: messages in flight ordered by delivery time,
//! faults drawn from the caller's seeded generator.
//!
//! Every random choice is made in a fixed order from the generator the
//! simulation passes in, so a seed replays the same run; keeping that
//! order is part of this module's contract (a change here changes every
//! simulation's runs).

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;

/// How faulty each link is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkFaults {
    /// Probability a message is dropped.
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Delivery delay range, ms, inclusive (random delays reorder).
    pub delay_ms: (u64, u64),
}

/// Messages of type `P` in flight between nodes named by `A` (an index or
/// an id), and the directed links a partition cuts.
#[derive(Clone, Debug)]
pub struct SimNet<A, P> {
    /// By delivery time (ms), then send order.
    in_flight: BTreeMap<(u64, u64), (A, A, P)>,
    sent: u64,
    /// Directed links that drop everything.
    blocked: BTreeSet<(A, A)>,
}

impl<A, P> Default for SimNet<A, P> {
    fn default() -> Self {
        SimNet {
            in_flight: BTreeMap::new(),
            sent: 0,
            blocked: BTreeSet::new(),
        }
    }
}

impl<A: Ord + Copy, P: Clone> SimNet<A, P> {
    /// An empty network with every link up.
    pub fn new() -> Self {
        SimNet::default()
    }

    /// Puts `packet` from `from` to `to` on the network at `now_ms`:
    /// nothing if the link is cut or the packet is dropped; else one copy,
    /// or two (duplicated), each delivered after its own random delay.
    pub fn transmit(
        &mut self,
        rng: &mut impl Rng,
        faults: LinkFaults,
        now_ms: u64,
        from: A,
        to: A,
        packet: P,
    ) {
        if self.blocked.contains(&(from, to)) || rng.random_bool(faults.drop) {
            return;
        }
        let copies = if rng.random_bool(faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let (lo, hi) = faults.delay_ms;
            let at = now_ms.saturating_add(rng.random_range(lo..=hi));
            self.sent += 1;
            self.in_flight
                .insert((at, self.sent), (from, to, packet.clone()));
        }
    }

    /// The next packet due by `now_ms` (earliest first, then in send
    /// order), taken off the network: `(from, to, packet)`.
    pub fn next_due(&mut self, now_ms: u64) -> Option<(A, A, P)> {
        let entry = self.in_flight.first_entry()?;
        if entry.key().0 > now_ms {
            return None;
        }
        Some(entry.remove())
    }

    /// Whether the link from `from` to `to` is cut.
    pub fn is_blocked(&self, from: A, to: A) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Whether any link is cut.
    pub fn is_partitioned(&self) -> bool {
        !self.blocked.is_empty()
    }

    /// Cuts the links between `a` and `b`, both ways.
    pub fn cut(&mut self, a: A, b: A) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }
}

impl<P: Clone> SimNet<usize, P> {
    /// Heals, then splits nodes `0..n` into two random non-empty sides
    /// (a shuffled order cut at a random point) and cuts every link
    /// between them.
    pub fn random_partition(&mut self, rng: &mut impl Rng, n: usize) {
        self.heal();
        let cut = rng.random_range(1..n);
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        for &a in &order[..cut] {
            for &b in &order[cut..] {
                self.cut(a, b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    const CLEAN: LinkFaults = LinkFaults {
        drop: 0.0,
        duplicate: 0.0,
        delay_ms: (1, 5),
    };

    #[test]
    fn packets_arrive_in_delivery_order_and_not_before_their_time() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut net = SimNet::new();
        for i in 0..20u32 {
            net.transmit(&mut rng, CLEAN, 100, 0usize, 1usize, i);
        }
        assert_eq!(net.next_due(100), None);
        let mut last = (0, 0);
        let mut got = 0;
        for now in 101..=105 {
            while let Some((from, to, _)) = net.next_due(now) {
                assert_eq!((from, to), (0, 1));
                assert!((now, got) >= last);
                last = (now, got);
                got += 1;
            }
        }
        assert_eq!(got, 20);
    }

    #[test]
    fn a_cut_link_drops_and_a_partition_splits_in_two() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut net: SimNet<usize, ()> = SimNet::new();
        net.random_partition(&mut rng, 5);
        // Node 0's side: the nodes it still reaches.
        let side: BTreeSet<usize> = (0..5).filter(|&b| !net.is_blocked(0, b)).collect();
        assert!(side.len() < 5, "someone is across");
        for a in 0..5 {
            for b in 0..5 {
                let across = side.contains(&a) != side.contains(&b);
                assert_eq!(net.is_blocked(a, b), across, "{a} -> {b}");
            }
        }
        let other = (0..5).find(|b| !side.contains(b)).unwrap();
        net.transmit(&mut rng, CLEAN, 0, 0, other, ());
        assert_eq!(net.next_due(1_000), None);
        net.heal();
        assert!(!net.is_partitioned());
    }
}
