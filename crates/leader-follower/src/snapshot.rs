//! Snapshots: the applied key-value view at one log position, which
//! replaces the log up to it.

use std::collections::BTreeMap;

use mimeo_storage::LogPosition;
use serde::{Deserialize, Serialize};

/// The state of one key in the applied view: its value (`None` for a
/// tombstone) and the position of the write that produced it.
pub type KeyState = (Option<Vec<u8>>, LogPosition);

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
    /// Every key ever written up to `last`, with its state.
    pub kv: BTreeMap<Vec<u8>, KeyState>,
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
