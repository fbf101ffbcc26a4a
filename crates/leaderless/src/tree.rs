//! Tictac trees for anti-entropy (after Riak's `kv_index_tictactree`).
//!
//! A tree covers the keys of one replica set. Each key falls in a
//! segment (low bits of its XXH3 hash); a segment's hash is the XOR of
//! `hash(key, state hash)` over its keys, a branch's the XOR of its 32
//! segments, and the root the XOR of the branches. XOR makes every level
//! incremental: a changed key updates one segment, one branch and the root
//! with `old ^ new`, with no rebuild. Two replicas compare roots, then
//! branches, then the segments under differing branches, then the keys of
//! differing segments: a single changed key is found by descending one
//! path. XOR is not collision-resistant against an adversary (two equal
//! changes cancel), which is acceptable for detecting accidental
//! divergence; the per-key hashes are 64-bit.
//!
//! Each tree also keeps its keys per segment (with their state hashes),
//! a second copy of the key names in memory, so that an exchange lists a
//! differing segment's keys without scanning the store.
//!
//! Written here: the structure is a few arrays and XORs; we know of no
//! maintained crate with incremental XOR Merkle trees of this shape.

use std::collections::{BTreeMap, BTreeSet};

use crate::ring::hash64;

/// Segments per branch.
pub(crate) const FANOUT: u32 = 32;

/// The segment of a key in a tree of `segments` segments.
pub(crate) fn segment_of(key: &[u8], segments: u32) -> u32 {
    (hash64(key) as u32) & (segments - 1)
}

/// The hash a key contributes: of the key and its state's hash.
pub(crate) fn key_hash(key: &[u8], state_hash: u64) -> u64 {
    let mut bytes = Vec::with_capacity(key.len() + 8);
    bytes.extend_from_slice(&state_hash.to_be_bytes());
    bytes.extend_from_slice(key);
    hash64(&bytes)
}

/// One replica set's tree on one node, with the keys per segment.
#[derive(Clone, Debug)]
pub(crate) struct Tree {
    segments: Vec<u64>,
    branches: Vec<u64>,
    root: u64,
    /// Per segment, its keys and their state hashes.
    keys: BTreeMap<u32, BTreeMap<Vec<u8>, u64>>,
}

impl Tree {
    pub(crate) fn new(segments: u32) -> Tree {
        Tree {
            segments: vec![0; segments as usize],
            branches: vec![0; (segments / FANOUT) as usize],
            root: 0,
            keys: BTreeMap::new(),
        }
    }

    pub(crate) fn root(&self) -> u64 {
        self.root
    }

    pub(crate) fn branches(&self) -> &[u64] {
        &self.branches
    }

    /// The hashes of the segments under `branch`.
    pub(crate) fn branch_segments(&self, branch: u32) -> impl Iterator<Item = (u32, u64)> + '_ {
        let start = branch * FANOUT;
        (start..start + FANOUT).map(|s| (s, self.segments[s as usize]))
    }

    /// The keys of a segment with their state hashes.
    pub(crate) fn segment_keys(&self, segment: u32) -> impl Iterator<Item = (&Vec<u8>, u64)> + '_ {
        self.keys
            .get(&segment)
            .into_iter()
            .flat_map(|m| m.iter().map(|(k, h)| (k, *h)))
    }

    /// The state hash of `key`, if the tree holds it.
    pub(crate) fn get(&self, key: &[u8]) -> Option<u64> {
        let segment = segment_of(key, self.segments.len() as u32);
        self.keys.get(&segment)?.get(key).copied()
    }

    /// Sets the state hash of `key` (`None`: the key is gone).
    pub(crate) fn update(&mut self, key: &[u8], state_hash: Option<u64>) {
        let segment = segment_of(key, self.segments.len() as u32);
        let seg_keys = self.keys.entry(segment).or_default();
        let old = match state_hash {
            Some(h) => seg_keys.insert(key.to_vec(), h),
            None => seg_keys.remove(key),
        };
        if old == state_hash {
            return;
        }
        let delta =
            old.map_or(0, |h| key_hash(key, h)) ^ state_hash.map_or(0, |h| key_hash(key, h));
        self.segments[segment as usize] ^= delta;
        self.branches[(segment / FANOUT) as usize] ^= delta;
        self.root ^= delta;
    }

    /// The branches whose hash differs from `theirs`.
    pub(crate) fn differing_branches(&self, theirs: &[u64]) -> Vec<u32> {
        (0..self.branches.len() as u32)
            .filter(|&b| theirs.get(b as usize) != Some(&self.branches[b as usize]))
            .collect()
    }

    /// The segments (of those given) whose hash differs.
    pub(crate) fn differing_segments(&self, theirs: &[(u32, u64)]) -> Vec<u32> {
        let mut out: BTreeSet<u32> = BTreeSet::new();
        for &(s, h) in theirs {
            if (s as usize) < self.segments.len() && self.segments[s as usize] != h {
                out.insert(s);
            }
        }
        out.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_incremental_and_order_free() {
        let mut a = Tree::new(64);
        let mut b = Tree::new(64);
        for k in 0..100u32 {
            a.update(&k.to_be_bytes(), Some(u64::from(k)));
        }
        for k in (0..100u32).rev() {
            b.update(&k.to_be_bytes(), Some(u64::from(k) + 1));
            b.update(&k.to_be_bytes(), Some(u64::from(k)));
        }
        assert_eq!(a.root(), b.root());
        assert_eq!(a.branches(), b.branches());
        a.update(b"x", Some(7));
        a.update(b"x", None);
        assert_eq!(a.root(), b.root());
    }

    #[test]
    fn one_changed_key_is_found_down_one_path() {
        let mut a = Tree::new(1024);
        let mut b = Tree::new(1024);
        for k in 0..5_000u32 {
            let key = format!("key-{k}");
            a.update(key.as_bytes(), Some(u64::from(k)));
            b.update(key.as_bytes(), Some(u64::from(k)));
        }
        b.update(b"key-1234", Some(99));
        assert_ne!(a.root(), b.root());
        let branches = a.differing_branches(b.branches());
        assert_eq!(branches.len(), 1);
        let theirs: Vec<(u32, u64)> = b.branch_segments(branches[0]).collect();
        let segments = a.differing_segments(&theirs);
        assert_eq!(segments, vec![segment_of(b"key-1234", 1024)]);
        let differing: Vec<&Vec<u8>> = a
            .segment_keys(segments[0])
            .filter(|(k, h)| {
                b.segment_keys(segments[0])
                    .any(|(k2, h2)| k2 == *k && h2 != *h)
            })
            .map(|(k, _)| k)
            .collect();
        assert_eq!(differing, vec![&b"key-1234".to_vec()]);
    }
}
