//! Async client library for Mimeo nodes.
//!
//! A [`Client`] speaks the client protocol of `mimeo-wire` to one or more
//! nodes over QUIC with mutual TLS: `get`, `put`, `delete`, `cas` and
//! `status`, each bounded by a timeout. An [`AdminClient`] speaks the admin
//! protocol (status, clock offset, shutdown) and needs an admin certificate.
//!
//! Errors say whether an operation **certainly did not happen** or whether
//! its **outcome is unknown** ([`Error::is_definite`]). The distinction is what
//! a consistency checker needs: a timed-out write may still take effect later,
//! so it must never be reported as failed.
//!
//! When a node answers with a redirect (it is not the leader), the client
//! follows the leader hint, up to [`ClientConfig::max_redirects`] times.
//! Across a failover it keeps going by itself within one request timeout: a
//! node whose connection broke or that could not be reached is tried last
//! for a second, a node that knows no leader yet (or names the one that
//! just failed) is asked again after a short, growing pause, and a dead
//! node is noticed after 300 ms of silence (QUIC hears no reset from
//! a killed process). A request already sent is never sent again, except a
//! read whose connection broke.
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//! use mimeo_client::{Client, ClientConfig, CasOutcome};
//! use mimeo_wire::TlsIdentity;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Certificates written by `mimeo certs init --dir certs`.
//! let identity = TlsIdentity::from_dir(Path::new("certs"), "client-cli")?;
//! let config = ClientConfig::new(vec!["127.0.0.1:7001".parse()?], "mimeo", identity);
//! let client = Client::connect(config).await?;
//!
//! client.put("colour", "blue").await?;
//! assert_eq!(client.get("colour").await?.as_deref(), Some(&b"blue"[..]));
//! match client.cas("colour", Some("blue"), "green").await? {
//!     CasOutcome::Swapped { .. } => println!("swapped"),
//!     CasOutcome::Mismatch { current } => println!("someone else wrote {current:?}"),
//! }
//! # Ok(())
//! # }
//! ```

mod admin;
mod client;
mod connector;
mod error;

pub use admin::AdminClient;
pub use client::{
    CasOutcome, Client, ClientConfig, LocalRead, ReadResult, VersionedRead, VersionedWrite,
};
pub use error::Error;
pub use mimeo_wire::{
    FsyncPolicy, LeaderlessStatus, MultiLeaderStatus, NodeMode, NodeRole, NodeStatus, OriginStatus,
    PeerStatus, Position, QuorumOverride, ReadConsistency, RingRange, VersionedValue, WriteAck,
};
