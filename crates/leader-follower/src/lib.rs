//! Mimeo leader-follower replication: one leader per term streams its log
//! to followers; writes are acknowledged under a chosen ack mode; reads are
//! served linearizably by the leader, possibly stale by any replica, or
//! per session.
//!
//! This crate holds the **core**: a state machine without I/O, in the shape
//! of quinn-proto and raft-rs. A driver feeds it inputs, each with the
//! current time as [`Millis`] (the core never reads a clock):
//!
//! | input | when |
//! |---|---|
//! | [`Core::handle_client`] | a client request arrived (the driver picks the [`RequestId`]) |
//! | [`Core::handle_peer`] | a [`PeerMsg`] arrived from another node |
//! | [`Core::tick`] | the time [`Core::next_timeout`] named has come |
//! | [`Core::persisted`] | the log is durable up to a position |
//! | [`Core::snapshot_persisted`] | a snapshot the core asked for is durable |
//! | [`Core::transfer_leadership`] | the node is shutting down (SIGTERM) |
//! | [`Core::peer_gone`] | a probe of the leader's address was refused |
//! | [`Core::send_failed`] | the transport refused a message (too large for a frame) |
//!
//! and drains [`Output`]s with [`Core::poll_output`]: [`Output::Send`] a
//! message, [`Output::Persist`] a snapshot, log change, hard state or log
//! prefix discard (see [`Persist`] for the ordering rule),
//! [`Output::Reply`] to a client, [`Output::Probe`] a silent leader's
//! address (a refusal means its process died: the followers elect a new
//! leader without waiting for the election timeout). A node restarts with [`Core::restore`]
//! from its hard state, its latest [`Snapshot`] and the log after it.
//! [`Core::status`] reports role, term, commit position, elections, rolled
//! back entries and per-follower lag.
//!
//! # A three-node cluster in a loop
//!
//! The driver below delivers every message at once and has an instant
//! disk; the simulation in `tests/sim/` does the same with a faulty
//! network and crashes.
//!
//! ```
//! use mimeo_leader_follower::{ClientOp, Config, Core, Millis, Output, ReadMode, Reply, Role};
//!
//! let ids = [1, 2, 3];
//! let mut nodes: Vec<Core> = ids
//!     .iter()
//!     .map(|&id| {
//!         let peers = ids.iter().copied().filter(|&p| p != id).collect();
//!         let mut config = Config::new(id, peers);
//!         config.bootstrap = true; // a brand-new cluster: every node votes
//!         Core::new(config, Millis(0)).unwrap()
//!     })
//!     .collect();
//!
//! /// Perform every output until the cluster is quiet; collect the replies.
//! fn settle(nodes: &mut [Core], now: Millis) -> Vec<(u64, Reply)> {
//!     let mut replies = Vec::new();
//!     loop {
//!         let mut quiet = true;
//!         for i in 0..nodes.len() {
//!             while let Some(output) = nodes[i].poll_output() {
//!                 quiet = false;
//!                 match output {
//!                     Output::Send { to, msg } => {
//!                         let from = nodes[i].id();
//!                         nodes[to as usize - 1].handle_peer(now, from, msg);
//!                     }
//!                     // An instant disk: durable as soon as asked.
//!                     Output::Persist(p) => {
//!                         if let Some(snapshot) = &p.snapshot {
//!                             nodes[i].snapshot_persisted(now, snapshot.last);
//!                         }
//!                         if let Some(last) = p.entries.last() {
//!                             nodes[i].persisted(now, last.position);
//!                         }
//!                     }
//!                     Output::Reply { req_id, reply } => replies.push((req_id, reply)),
//!                     // Nobody dies here: no probe is ever refused.
//!                     Output::Probe { .. } => {}
//!                 }
//!             }
//!         }
//!         if quiet {
//!             return replies;
//!         }
//!     }
//! }
//!
//! // Node 1's election timeout passes first: it asks for pre-votes (would
//! // the others vote for it?), then, with a majority, for votes, and wins.
//! let now = nodes[0].next_timeout();
//! nodes[0].tick(now);
//! settle(&mut nodes, now);
//! assert_eq!(nodes[0].role(), Role::Leader);
//! assert_eq!(nodes[1].leader(), Some(1));
//!
//! // A write, acknowledged once a majority holds it (the default `quorum`).
//! let put = ClientOp::Put { key: b"k".to_vec(), value: b"v".to_vec() };
//! nodes[0].handle_client(now, 7, put, None);
//! let replies = settle(&mut nodes, now);
//! let Reply::Written { position } = replies[0].1 else { panic!("{replies:?}") };
//! assert_eq!((position.term, position.index), (1, 2)); // after the leader's no-op
//!
//! // A linearizable read: the leader confirms it leads with a heartbeat round.
//! let get = ClientOp::Get { key: b"k".to_vec(), consistency: Some(ReadMode::Leader) };
//! nodes[0].handle_client(now, 8, get, None);
//! let replies = settle(&mut nodes, now);
//! assert!(matches!(&replies[0].1, Reply::Value { value: Some(v), .. } if v == b"v"));
//!
//! // Followers refuse writes and point at the leader.
//! nodes[2].handle_client(now, 9, ClientOp::Delete { key: b"k".to_vec() }, None);
//! let replies = settle(&mut nodes, now);
//! assert_eq!(replies[0].1, Reply::NotLeader { leader_hint: Some(1) });
//! ```
//!
//! # Guarantees
//!
//! See [`Core`] for the election rules (pre-vote and leader stickiness keep
//! a node that was cut off or restarted from raising the term and deposing
//! a healthy leader) and commit rules, what is applied when,
//! and what each read mode sees; [`AckMode`] for what each ack mode risks.
//! In short: `quorum` and `all` writes survive any failover;
//! `async` and `semi-sync` writes can be lost when the leader fails before
//! a majority has them (the old leader rolls them back when it rejoins and
//! counts them in [`Status::rolled_back_entries`]). A write that times out
//! or whose leader steps down is [`Reply::Unknown`], never a failure.
//!
//! # A node that lost its data does not vote
//!
//! Membership is static, so a node that starts with no state at all
//! cannot tell whether it is new or lost its data; if it voted at once
//! after losing it, a write a majority (itself included) had acknowledged
//! could be lost: it could help elect a leader that never had the write.
//! So founding a cluster is an explicit choice, [`Config::bootstrap`]:
//! a node that starts with no state and without it is a **learner**
//! ([`HardState::voter`] false). A learner follows a leader and takes its
//! log like any follower, but grants no (pre-)votes, never stands for
//! election, and its answers ([`PeerMsg::AppendResp`],
//! [`PeerMsg::HeartbeatResp`], which say whether the sender votes) count
//! towards no commit, `semi-sync` acknowledgement, leader-read
//! confirmation or leader lease (an `all` write still waits for it). A
//! leader that hears a follower is a learner forgets what it knew that
//! follower to hold. A learner becomes a voter once a
//! [`PeerMsg::Heartbeat`] says the leader's commit index is of the
//! leader's own term (every entry before it is then committed) and its own
//! log durably holds the leader's up to that index: it then holds every
//! committed entry, so the quorum overlap argument holds again. It records
//! `voter = true` in its hard state before anything else leaves it. This
//! assumes that no message a node's process sent before the loss arrives
//! after the restarted process speaks (the process's connections die with
//! it). The tokio driver records a founding node's vote on its first start
//! ([`driver::recover`]), so later starts need no flag; hard states
//! written by earlier builds read as voters'.
//!
//! # Messages fit the transport
//!
//! The transport refuses a message larger than its frame
//! ([`Config::max_message_bytes`], which the driver derives from it). So
//! an append carries at most `max_batch_entries` entries **and** at most
//! that many encoded bytes, but always at least one entry; a write whose
//! entry could not fit even alone is refused ([`Reply::BadRequest`]), so
//! no entry in the log is too large to ship. Snapshot chunks are cut to
//! fit as well. Should the transport still refuse a message, the driver
//! tells the core ([`Core::send_failed`]): the leader halves what it
//! sends that follower at once and probes it again. A follower that
//! leaves appends unanswered for `retransmit_ms` is probed with ever
//! smaller messages too, and each acknowledgement doubles the size back,
//! so a paused or cut-off follower does not cost its leader a full
//! message per retransmission.
//!
//! # Versioning
//!
//! Four formats outlive a process, each pinned byte for byte by
//! `tests/golden.rs` against `testdata/`:
//!
//! - **Peer messages** ([`PeerMsg`], postcard, the payload of a
//!   `mimeo_wire::PeerMessage`) and snapshot chunks are part of the wire
//!   protocol: any change to their bytes (a reordered or inserted variant,
//!   a moved field) steps `mimeo_wire::PROTOCOL_VERSION`, and nodes of
//!   different versions refuse each other's hello.
//! - **The snapshot file** (`leader-follower.snapshot`: a 44-byte header
//!   with magic `MIMEOLFS`, format version 1 and checksums, then
//!   [`Snapshot::encode`]): a change to the payload's encoding steps the
//!   header's format version; a build reads every version it has written
//!   and refuses a newer one, naming the file and the versions it reads.
//! - **Log entries** ([`Command`] in a storage record, postcard): old logs
//!   must stay readable, so commands are only ever appended, and a change
//!   to an existing one's encoding needs a new record layout read beside
//!   the old ([`LogEntry::from_record`] already reads two).
//! - **The hard state** (`leader-follower.state`, JSON): fields are only
//!   added, with a serde default that reads older files correctly (as
//!   `voter` was).
//!
//! # Snapshots and log compaction
//!
//! Every `snapshot_every` applied entries ([`Config::snapshot_every`]), or
//! once `snapshot_bytes` of entries were applied since the last snapshot
//! ([`Config::snapshot_bytes`], 64 MiB: what bounds memory when values are
//! large), a core snapshots its applied key-value view ([`Snapshot`]: the view and
//! the position of the last entry in it). Once the driver reports the
//! snapshot durable, the core keeps only `snapshot_keep` entries (at most
//! `snapshot_bytes / 4` of them) at and below it in memory and tells the driver it may drop the rest from disk
//! ([`Persist::discard_before`]; the tokio driver drops whole storage
//! segments). So memory, disk and restart time stay bounded by the live
//! state plus the entries since the last snapshot (fewer than
//! `snapshot_every`, about `snapshot_bytes`) and the kept tail; the
//! driver's recovery reads no more of the log back than that. (Entries
//! not yet committed cannot be folded into a snapshot: a leader that
//! cannot commit keeps appending them to memory until writes time out.) The view is a
//! persistent map ([`KeyValues`]), so taking a snapshot costs no copy, and
//! the tokio driver writes it while appends go on. A store given to the
//! driver must not compact on its own ([`driver::store_options`]).
//!
//! A follower that needs entries its leader has dropped (new, or down for a
//! long time) gets the leader's snapshot in [`PeerMsg::InstallSnapshot`]
//! chunks of at most [`Config::snapshot_chunk_bytes`], one chunk in flight
//! at a time (flow control: the leader holds one encoded snapshot and one
//! chunk per follower), and answers with the offset it expects next
//! ([`PeerMsg::SnapshotAck`]), so a lost or reordered chunk is sent again.
//! It installs the snapshot only if it is ahead of its commit index, keeps
//! the log after it when its log holds the snapshot's last position
//! (Raft §7) and otherwise replaces its log, makes it durable, and only
//! then answers like an append, which moves the leader's view of it to
//! the snapshot's index. Terms fence snapshot messages as they fence
//! appends.
//!
//! One limit: a session read whose `after` position has been folded into a
//! snapshot on the replica cannot be checked for
//! [`Unavailable::SessionDiverged`] any more (the entry's term is gone);
//! it is answered, as after any committed position.

mod config;
mod core;
pub mod driver;
mod message;
mod output;
mod progress;
mod size;
mod snapshot;
mod types;

pub use crate::config::{Config, ConfigError, MIN_MESSAGE_BYTES};
pub use crate::core::{Core, RecoverError};
pub use crate::driver::ReplicationLatency;
pub use crate::message::{AppendResult, PeerMsg};
pub use crate::output::{DurableState, FollowerLag, Output, Persist, Role, Status};
pub use crate::size::{single_put_append_bytes, APPEND_OVERHEAD, SNAPSHOT_OVERHEAD};
pub use crate::snapshot::{KeyState, KeyValues, Snapshot};
pub use crate::types::{
    AckMode, ClientOp, Command, HardState, LogEntry, Millis, NodeId, ReadMode, Reply, RequestId,
    Unavailable, Unknown, RECORD_KEY,
};
pub use mimeo_storage::LogPosition;

#[cfg(test)]
mod tests;
