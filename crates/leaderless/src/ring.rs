//! Placement: a consistent-hash ring with virtual nodes.
//!
//! # The hash, fixed and versioned
//!
//! Positions on the ring are 64-bit XXH3 hashes (`xxh3_64`, seed 0) from
//! the `xxhash-rust` crate: XXH3 is a published, frozen algorithm
//! (xxHash's spec, stable since 0.8.0) whose output does not depend on
//! the Rust release, the platform or its byte order, unlike std's
//! `DefaultHasher`, which is documented as free to change. It is fast on
//! short keys, and `xxhash-rust` is a small, widely used crate without
//! dependencies. [`HASH_VERSION`] names this choice: a change of hash (or
//! of how tokens are derived) must bump it, which changes every ring's
//! [`fingerprint`](Ring::fingerprint), so a node restarted with data
//! placed by another hash refuses to start instead of moving data
//! silently. `tests/placement.rs` pins a placement table in `testdata/`.
//!
//! - A key's position: `xxh3_64(key)`.
//! - Node `id`'s `i`-th token: `xxh3_64(id ++ 0x00 ++ i as u32 big-endian)`.
//! - A key belongs to the arc ending at the first token at or after its
//!   position (wrapping); its preference list is the first N *distinct*
//!   physical nodes met walking clockwise from there; the nodes after them
//!   in the same walk are the fallbacks, in order (sloppy quorums).

use mimeo_causality::NodeId;
use xxhash_rust::xxh3::xxh3_64;

/// The version of the placement function (hash and token derivation).
pub const HASH_VERSION: u32 = 1;

/// The 64-bit hash used for placement and for anti-entropy trees.
pub(crate) fn hash64(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// A ring that cannot be built, or that differs from the one the data was
/// placed with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// No nodes.
    #[error("the ring has no nodes; list every node of the cluster")]
    Empty,
    /// `vnodes` is 0.
    #[error("`vnodes` is 0; every node needs at least one token (64 is a good default)")]
    NoTokens,
    /// A node is listed twice.
    #[error("node {id} is listed twice in the ring")]
    Duplicate {
        /// The repeated node.
        id: NodeId,
    },
    /// The data directory was written under another ring.
    #[error("the ring changed: the data was placed with ring fingerprint {stored:016x}, and this configuration gives {current:016x} (nodes, vnodes or placement hash differ); membership is static: restore the cluster's previous `nodes` and `vnodes`, or start this node with an empty data directory")]
    Changed {
        /// The fingerprint recorded with the data.
        stored: u64,
        /// This configuration's.
        current: u64,
    },
}

/// A consistent-hash ring: static membership, `vnodes` tokens per node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    nodes: Vec<NodeId>,
    vnodes: u32,
    /// Sorted tokens: (position, node index).
    tokens: Vec<(u64, u16)>,
    /// Per token (arc), every node in walk order from it.
    walks: Vec<Vec<u16>>,
    fingerprint: u64,
}

impl Ring {
    /// Builds the ring of `nodes` (in any order: the ring does not depend
    /// on it) with `vnodes` tokens each.
    ///
    /// # Errors
    ///
    /// No nodes, no tokens, or a node listed twice.
    pub fn new(nodes: &[NodeId], vnodes: u32) -> Result<Ring, RingError> {
        if nodes.is_empty() {
            return Err(RingError::Empty);
        }
        if vnodes == 0 {
            return Err(RingError::NoTokens);
        }
        let mut nodes = nodes.to_vec();
        nodes.sort();
        if let Some(pair) = nodes.windows(2).find(|w| w[0] == w[1]) {
            return Err(RingError::Duplicate {
                id: pair[0].clone(),
            });
        }
        let mut tokens = Vec::with_capacity(nodes.len() * vnodes as usize);
        for (index, node) in nodes.iter().enumerate() {
            for i in 0..vnodes {
                let mut bytes = node.as_str().as_bytes().to_vec();
                bytes.push(0);
                bytes.extend_from_slice(&i.to_be_bytes());
                tokens.push((hash64(&bytes), index as u16));
            }
        }
        // Ties (astronomically unlikely) break by node order: deterministic.
        tokens.sort_unstable();
        let walks = (0..tokens.len())
            .map(|start| {
                let mut walk: Vec<u16> = Vec::with_capacity(nodes.len());
                for step in 0..tokens.len() {
                    let node = tokens[(start + step) % tokens.len()].1;
                    if !walk.contains(&node) {
                        walk.push(node);
                        if walk.len() == nodes.len() {
                            break;
                        }
                    }
                }
                walk
            })
            .collect();
        let mut id = Vec::new();
        id.extend_from_slice(&HASH_VERSION.to_be_bytes());
        id.extend_from_slice(&vnodes.to_be_bytes());
        for node in &nodes {
            id.extend_from_slice(&(node.as_str().len() as u32).to_be_bytes());
            id.extend_from_slice(node.as_str().as_bytes());
        }
        Ok(Ring {
            fingerprint: hash64(&id),
            nodes,
            vnodes,
            tokens,
            walks,
        })
    }

    /// The nodes, sorted.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// Tokens per node.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// Identifies the ring: the placement hash version, `vnodes` and the
    /// node ids. A driver stores it with the data and calls
    /// [`check_fingerprint`](Ring::check_fingerprint) at restart.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Refuses a ring other than the one the data was placed with.
    ///
    /// # Errors
    ///
    /// [`RingError::Changed`], naming both fingerprints.
    pub fn check_fingerprint(&self, stored: u64) -> Result<(), RingError> {
        if stored == self.fingerprint {
            Ok(())
        } else {
            Err(RingError::Changed {
                stored,
                current: self.fingerprint,
            })
        }
    }

    /// A key's position on the ring.
    pub fn position(key: &[u8]) -> u64 {
        hash64(key)
    }

    /// The arc (token index) a key falls in.
    pub fn arc(&self, key: &[u8]) -> usize {
        let pos = Ring::position(key);
        let i = self.tokens.partition_point(|&(t, _)| t < pos);
        if i == self.tokens.len() {
            0
        } else {
            i
        }
    }

    /// Every node in the walk order for `key`: the first `n` are its
    /// preference list (primary owners), the rest its fallbacks in order.
    pub fn walk(&self, key: &[u8]) -> impl Iterator<Item = &NodeId> + '_ {
        self.walks[self.arc(key)]
            .iter()
            .map(|&i| &self.nodes[i as usize])
    }

    /// The preference list of `key`: the first `n` distinct physical
    /// nodes clockwise from its position (all nodes if there are fewer).
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        self.walk(key).take(n).cloned().collect()
    }

    /// The nodes that may stand in for unreachable primaries of `key`, in
    /// the order they are tried.
    pub fn fallbacks(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        self.walk(key).skip(n).cloned().collect()
    }

    /// The replica sets of the ring for `n` replicas: every distinct
    /// (sorted) preference set, sorted. Anti-entropy keeps one tree per
    /// replica set a node belongs to.
    pub fn replica_sets(&self, n: usize) -> Vec<Vec<NodeId>> {
        let mut sets: Vec<Vec<NodeId>> = self
            .walks
            .iter()
            .map(|walk| {
                let mut set: Vec<NodeId> = walk
                    .iter()
                    .take(n)
                    .map(|&i| self.nodes[i as usize].clone())
                    .collect();
                set.sort();
                set
            })
            .collect();
        sets.sort();
        sets.dedup();
        sets
    }

    /// The sorted preference set of `key` (its anti-entropy replica set).
    pub fn replica_set(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        let mut set = self.preference_list(key, n);
        set.sort();
        set
    }

    /// The ring's arcs in token order: `(start, end, preference list)`,
    /// where the arc holds the positions `start + 1 ..= end` (the first
    /// arc wraps around zero). What a status page shows as "who owns
    /// which ranges".
    pub fn ranges(&self, n: usize) -> Vec<(u64, u64, Vec<NodeId>)> {
        (0..self.tokens.len())
            .map(|i| {
                let prev = self.tokens[(i + self.tokens.len() - 1) % self.tokens.len()].0;
                let owners = self.walks[i]
                    .iter()
                    .take(n)
                    .map(|&j| self.nodes[j as usize].clone())
                    .collect();
                (prev, self.tokens[i].0, owners)
            })
            .collect()
    }

    /// Per node, the fraction of the hash space for which it is the
    /// first owner (the arcs ending at its tokens), in node order.
    pub fn ownership(&self) -> Vec<(NodeId, f64)> {
        let mut owned = vec![0u128; self.nodes.len()];
        for (i, &(token, node)) in self.tokens.iter().enumerate() {
            let prev = if i == 0 {
                self.tokens[self.tokens.len() - 1].0
            } else {
                self.tokens[i - 1].0
            };
            let len = token.wrapping_sub(prev);
            // One token alone owns the whole space.
            owned[node as usize] += if len == 0 && self.tokens.len() == 1 {
                1u128 << 64
            } else {
                u128::from(len)
            };
        }
        let space = (1u128 << 64) as f64;
        self.nodes
            .iter()
            .cloned()
            .zip(owned.into_iter().map(|o| o as f64 / space))
            .collect()
    }

    /// Per node, the fraction of the hash space for which it is one of the
    /// `n` replicas (primary ownership of keys, not only first ownership).
    pub fn replica_ownership(&self, n: usize) -> Vec<(NodeId, f64)> {
        let mut owned = vec![0u128; self.nodes.len()];
        for (i, &(token, _)) in self.tokens.iter().enumerate() {
            let prev = if i == 0 {
                self.tokens[self.tokens.len() - 1].0
            } else {
                self.tokens[i - 1].0
            };
            let len = u128::from(token.wrapping_sub(prev));
            for &node in self.walks[i].iter().take(n) {
                owned[node as usize] += len;
            }
        }
        let space = (1u128 << 64) as f64;
        self.nodes
            .iter()
            .cloned()
            .zip(owned.into_iter().map(|o| o as f64 / space))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<NodeId> {
        (1..=n).map(|i| NodeId::from(format!("n{i}"))).collect()
    }

    #[test]
    fn preference_lists_are_distinct_nodes_then_fallbacks() {
        let ring = Ring::new(&ids(5), 64).unwrap();
        for k in 0..500 {
            let key = format!("key-{k}");
            let walk: Vec<&NodeId> = ring.walk(key.as_bytes()).collect();
            assert_eq!(walk.len(), 5);
            let mut sorted = walk.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 5, "{walk:?}");
            let pref = ring.preference_list(key.as_bytes(), 3);
            let fall = ring.fallbacks(key.as_bytes(), 3);
            assert_eq!(pref.len(), 3);
            assert_eq!(fall.len(), 2);
            assert!(pref.iter().all(|p| !fall.contains(p)));
        }
        // N larger than the cluster: every node.
        assert_eq!(ring.preference_list(b"k", 9).len(), 5);
    }

    #[test]
    fn the_ring_does_not_depend_on_the_order_of_nodes() {
        let mut reversed = ids(5);
        reversed.reverse();
        assert_eq!(
            Ring::new(&ids(5), 16).unwrap(),
            Ring::new(&reversed, 16).unwrap()
        );
    }

    #[test]
    fn balance_five_nodes_sixty_four_vnodes() {
        let ring = Ring::new(&ids(5), 64).unwrap();
        let fair = 1.0 / 5.0;
        println!("first owner: {:?}", ring.ownership());
        println!("replica: {:?}", ring.replica_ownership(3));
        for (node, share) in ring.ownership() {
            assert!(share <= 1.3 * fair, "{node} owns {share:.3} of the ring");
        }
        let fair3 = 3.0 / 5.0;
        for (node, share) in ring.replica_ownership(3) {
            assert!(share <= 1.3 * fair3, "{node} replicates {share:.3}");
        }
        let total: f64 = ring.ownership().iter().map(|(_, s)| s).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        // Keys, too: 10,000 keys land within 1.3x of the fair share.
        let mut counts = std::collections::BTreeMap::new();
        for k in 0..10_000 {
            let first = ring.preference_list(format!("k{k}").as_bytes(), 1)[0].clone();
            *counts.entry(first).or_insert(0u32) += 1;
        }
        assert!(counts.values().all(|&c| c <= 2_600), "{counts:?}");
    }

    #[test]
    fn a_changed_ring_is_refused() {
        let ring = Ring::new(&ids(5), 64).unwrap();
        assert_eq!(ring.check_fingerprint(ring.fingerprint()), Ok(()));
        for other in [Ring::new(&ids(4), 64), Ring::new(&ids(5), 32)] {
            let other = other.unwrap();
            let err = ring.check_fingerprint(other.fingerprint()).unwrap_err();
            assert!(err.to_string().contains("the ring changed"), "{err}");
        }
    }

    #[test]
    fn the_hash_is_xxh3_64_as_specified() {
        // XXH3_64bits("") with seed 0, the spec's known answer.
        assert_eq!(hash64(b""), 0x2d06_8005_38d3_94c2);
    }

    #[test]
    fn bad_rings_are_refused() {
        assert_eq!(Ring::new(&[], 4), Err(RingError::Empty));
        assert_eq!(Ring::new(&ids(2), 0), Err(RingError::NoTokens));
        let twice = [NodeId::from("a"), NodeId::from("a")];
        assert!(matches!(
            Ring::new(&twice, 4),
            Err(RingError::Duplicate { .. })
        ));
    }

    #[test]
    fn ranges_name_each_key_s_preference_list() {
        let ring = Ring::new(&ids(5), 8).unwrap();
        let ranges = ring.ranges(3);
        assert_eq!(ranges.len(), 40);
        for k in 0..200 {
            let key = format!("k{k}");
            let pos = Ring::position(key.as_bytes());
            let (_, _, owners) = ranges
                .iter()
                .find(|(start, end, _)| {
                    if start < end {
                        *start < pos && pos <= *end
                    } else {
                        pos > *start || pos <= *end
                    }
                })
                .expect("an arc");
            assert_eq!(*owners, ring.preference_list(key.as_bytes(), 3));
        }
    }

    #[test]
    fn replica_sets_cover_every_key() {
        let ring = Ring::new(&ids(5), 64).unwrap();
        let sets = ring.replica_sets(3);
        assert!(sets.len() <= 10, "{sets:?}");
        for k in 0..200 {
            let set = ring.replica_set(format!("k{k}").as_bytes(), 3);
            assert!(sets.contains(&set));
        }
    }
}
