//! Messages between peers.
//!
//! Encoded with postcard by the driver (golden bytes of one of each in
//! `src/tests.rs`); [`FORMAT_VERSION`](crate::FORMAT_VERSION) covers
//! them. New variants go at the end so old ones keep their encoding.

use mimeo_causality::NodeId;
use serde::{Deserialize, Serialize};

use crate::state::{KeyClock, KeyState};
use crate::types::{ClientOp, Quorum, Reply};

/// A message from one core to another. Best effort: cores tolerate loss,
/// duplication and reordering (states merge; a late reply to a finished
/// request is ignored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// A write taken by a node that is not one of the key's targets,
    /// handed to a target to coordinate (it creates the new version on its
    /// own copy first). The answer is a [`Message::ForwardReply`].
    Forward {
        /// The sender's request id for it.
        op: u64,
        /// The write.
        request: ClientOp,
        /// Its quorums.
        quorum: Quorum,
    },
    /// The outcome of a forwarded write.
    ForwardReply {
        /// The forwarder's `op`.
        op: u64,
        /// The outcome.
        reply: Reply,
    },
    /// Merge `state` into the key (or, with `hint`, into the hint held for
    /// that owner) and acknowledge with [`Message::Stored`] (`op` 0: no
    /// acknowledgement wanted).
    Store {
        /// The coordinator's operation.
        op: u64,
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The state to merge.
        state: KeyState,
        /// Whom the receiver stands in for (a sloppy-quorum fallback).
        hint: Option<NodeId>,
        /// Acknowledge on receipt as well as once durable.
        ack_received: bool,
    },
    /// A [`Message::Store`] was received (`durable` false) or is durable.
    Stored {
        /// The coordinator's operation.
        op: u64,
        /// Whether durable.
        durable: bool,
    },
    /// Return the key's state (or the hinted state held for `hint`).
    Fetch {
        /// The coordinator's operation.
        op: u64,
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The owner, if the receiver is asked as a fallback.
        hint: Option<NodeId>,
    },
    /// The answer to a [`Message::Fetch`].
    Fetched {
        /// The coordinator's operation.
        op: u64,
        /// The state, if any.
        state: Option<KeyState>,
    },
    /// A hinted write handed to its owner: merge it and answer
    /// [`Message::HandedOff`] once durable.
    Handoff {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The hinted state.
        state: KeyState,
    },
    /// The owner holds the hinted state durably; `hash` is
    /// [`KeyStateExt::hash`](crate::KeyStateExt::hash) of what it received (the fallback drops the hint
    /// only if it has not changed since).
    HandedOff {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The delivered state's hash.
        hash: u64,
    },
    /// Anti-entropy, step 1: the sender's root for a tree.
    AeRoot {
        /// The exchange.
        xid: u64,
        /// The tree (index into the ring's replica sets).
        tree: u32,
        /// Its root hash.
        root: u64,
    },
    /// Step 2 (roots differ): the receiver's branch hashes, all of them.
    AeBranches {
        /// The exchange.
        xid: u64,
        /// The tree.
        tree: u32,
        /// Branch hashes, in order.
        branches: Vec<u64>,
    },
    /// Step 3: the initiator's segment hashes under the branches that differ.
    AeSegments {
        /// The exchange.
        xid: u64,
        /// The tree.
        tree: u32,
        /// (segment, hash).
        segments: Vec<(u32, u64)>,
    },
    /// Step 4: the receiver's keys in the segments that differ, with
    /// their state hashes and clocks (so that the initiator sends or asks
    /// for a state only in the direction that needs it).
    AeKeys {
        /// The exchange.
        xid: u64,
        /// The tree.
        tree: u32,
        /// The segments that differ.
        segments: Vec<u32>,
        /// (key, state hash, clock).
        keys: Vec<(Vec<u8>, u64, KeyClock)>,
    },
    /// Step 5: states the initiator holds that differ, and the keys it
    /// wants the receiver's states of (answered with [`Message::AeStates`]
    /// with an empty `want`).
    AeStates {
        /// The exchange.
        xid: u64,
        /// The tree.
        tree: u32,
        /// (key, state) to merge.
        states: Vec<(Vec<u8>, KeyState)>,
        /// Keys whose states to send back.
        want: Vec<Vec<u8>>,
    },
}

impl Message {
    /// The message's postcard encoding.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("messages serialize")
    }

    /// Decodes a message.
    ///
    /// # Errors
    ///
    /// The bytes are not a message of this format version.
    pub fn decode(bytes: &[u8]) -> Result<Message, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}
