//! Snapshots: the applied key-value view at one log position, which
//! replaces the log up to it.

use mimeo_storage::LogPosition;
use serde::{Deserialize, Serialize};

/// The state of one key in the applied view: its value (`None` for a
/// tombstone) and the position of the write that produced it.
pub type KeyState = (Option<Vec<u8>>, LogPosition);

/// The applied key-value view: every key ever written, in key order, with
/// its state.
///
/// A persistent B-tree ([`imbl::OrdMap`]): a clone shares every node with
/// the original, and a later insert into either copies only the nodes on
/// its path. A node takes a snapshot of a view of millions of keys by
/// cloning it, without stopping to copy them (a `BTreeMap` of a million
/// keys took over a second to clone: longer than an election timeout).
pub type KeyValues = imbl::OrdMap<Vec<u8>, KeyState>;

/// The applied key-value view of a node at `last`: everything the log up
/// to `last.index` produced, and nothing after it. It holds only
/// committed state (a node applies only committed entries), so a node that
/// has it needs no entry up to `last.index` again.
///
/// Tombstones are kept (as `None` values) with the position of the delete,
/// so that versions reported to readers stay the same after a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last applied position: index and term of the last entry the view
    /// includes (the log continues at `last.index + 1`).
    pub last: LogPosition,
    /// Every key ever written up to `last`, with its state. Encoded as a
    /// map, in key order.
    pub kv: KeyValues,
}

impl Snapshot {
    /// The postcard encoding, as shipped in
    /// [`PeerMsg::InstallSnapshot`](crate::PeerMsg::InstallSnapshot) chunks
    /// and stored by the driver.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a snapshot serializes")
    }

    /// The inverse of [`Snapshot::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// A snapshot a follower is receiving, chunk by chunk.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Incoming {
    /// The term of the leader sending it.
    pub(crate) term: u64,
    /// The snapshot's last position.
    pub(crate) last: LogPosition,
    /// The bytes received so far, contiguous from offset 0.
    pub(crate) bytes: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The layout of snapshot version 1 as earlier builds wrote it, with a
    /// standard map.
    #[derive(Serialize, Deserialize)]
    struct WithBTreeMap {
        last: LogPosition,
        kv: BTreeMap<Vec<u8>, KeyState>,
    }

    #[test]
    fn the_encoding_is_the_one_a_standard_map_gives() {
        let mut kv = BTreeMap::new();
        kv.insert(b"b".to_vec(), (None, LogPosition::new(2, 7)));
        kv.insert(b"a".to_vec(), (Some(b"x".to_vec()), LogPosition::new(1, 3)));
        let old = WithBTreeMap {
            last: LogPosition::new(2, 9),
            kv: kv.clone(),
        };
        let new = Snapshot {
            last: old.last,
            kv: KeyValues::from(kv),
        };
        let bytes = postcard::to_allocvec(&old).unwrap();
        assert_eq!(new.encode(), bytes);
        assert_eq!(Snapshot::decode(&bytes).unwrap(), new);
    }
}
