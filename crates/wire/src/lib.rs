//! The Mimeo wire protocol: the messages nodes, clients and operators
//! exchange, how they are framed, and the QUIC transport with mutual TLS
//! they travel on.
//!
//! # Protocols
//!
//! Three protocols share one transport, chosen by the [`Hello`] that opens
//! every connection:
//!
//! - **client** ([`ClientRequest`] / [`ClientResponse`]): get, put, delete,
//!   cas and status, for applications;
//! - **peer** ([`PeerMessage`]): replication traffic between nodes;
//! - **admin** ([`AdminRequest`] / [`AdminResponse`]): status and fault
//!   injection, for operators and the test harness.
//!
//! The hello carries [`PROTOCOL_VERSION`] and the cluster id; a node refuses
//! a mismatch, or a protocol the peer's certificate does not allow, with a
//! [`HelloReply::Refused`] naming the reason.
//!
//! # Framing
//!
//! Each request travels on its own QUIC bidirectional stream as one frame:
//! a 4-byte big-endian length, then that many bytes of postcard. The length
//! is checked against a configured maximum ([`TransportConfig::max_frame`])
//! before anything is allocated. A malformed or oversized request is answered
//! with an error and its stream closed; the connection and every other
//! request carry on.
//!
//! # Versioning
//!
//! Every message is postcard, whose encoding of an enum is the variant's
//! index and of a struct its fields in order, so the order of variants and
//! fields is the format. Variants are only ever appended; any change that
//! alters the bytes of an existing message (a reordered, inserted or
//! removed variant or field, a changed type) steps [`PROTOCOL_VERSION`]
//! by one, recorded in its docs. There is no translation between versions:
//! the hello carries the version, and a node refuses any other with
//! [`RefusalReason::VersionMismatch`] and a message naming both versions,
//! so a rolling upgrade across a step is refused loudly rather than
//! misread (upgrade all nodes and clients together). The payload of a
//! [`PeerMessage`] is the replicator's own encoding, covered by the same
//! version. `tests/golden.rs` pins a hello and messages of each protocol,
//! frame and all, against `testdata/`: a change that fails it needs a
//! version step and regenerated files (`UPDATE_GOLDEN=1`), not just the
//! latter.
//!
//! # Peer messaging
//!
//! [`PeerBus`] carries replication traffic between nodes: `send` queues a
//! message for a peer and returns at once; one task per peer keeps a
//! connection to it (hello with [`Protocol::Peer`], the peer's certificate
//! checked, reconnection with capped backoff) and streams the queue in
//! order on one long-lived unidirectional stream. The node's accept loop
//! hands peer connections to [`PeerBus::accept`], and the messages come out
//! of a bounded receiver. Delivery is best effort and every queue is
//! bounded: the replicators retry on their own ticks. A frame is delivered
//! only when its `from` is the node named by the certificate it arrived
//! under.
//!
//! # Crash detection
//!
//! A node whose process dies sends nothing over UDP. [`probe`] asks the
//! node's host instead: a refused datagram means no process holds the
//! port any more, which replicators and clients use to act before their
//! timeouts.
//!
//! # Security
//!
//! [`generate_certs`] (behind `mimeo certs init`) writes a cluster CA and one
//! certificate per node, client and admin. Both sides of every connection
//! present a certificate, and each accepts only certificates signed by the
//! cluster CA. A certificate's [`Role`] is its subject name (`node:n1`,
//! `client:cli`, `admin:ops`): an identity is a certificate, never a source
//! address, and only an admin certificate may use the admin protocol.
//!
//! # Example
//!
//! A node and a client on loopback, each with certificates from one CA:
//!
//! ```
//! use mimeo_wire::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("mimeo-wire-doc-{}", std::process::id()));
//! let request = CertRequest { nodes: vec!["n1".into()], clients: vec!["app".into()], ..Default::default() };
//! generate_certs(&dir, &request, true)?;
//! let transport = TransportConfig::default();
//!
//! // The node: accept one connection, check its hello, answer requests.
//! let node = TlsIdentity::from_dir(&dir, "node-n1")?;
//! let server = server_endpoint("127.0.0.1:0".parse()?, &node, &transport)?;
//! let addr = server.local_addr()?;
//! let serving = {
//!     let transport = transport.clone();
//!     tokio::spawn(async move {
//!         let conn = server.accept().await.unwrap().await.unwrap();
//!         let (protocol, role) = accept_hello(&conn, "demo", "n1", &transport).await.unwrap();
//!         assert_eq!((protocol, role), (Protocol::Client, Role::Client("app".into())));
//!         serve_rpc(conn, &transport, |request: ClientRequest| async move {
//!             match request {
//!                 ClientRequest::Get { .. } => ClientResponse::Value { value: Some(b"hi".to_vec()), position: Position::default() },
//!                 _ => ClientResponse::Error { kind: ErrorKind::BadRequest, message: "only gets here".into() },
//!             }
//!         })
//!         .await
//!     })
//! };
//!
//! // The client.
//! let app = TlsIdentity::from_dir(&dir, "client-app")?;
//! let endpoint = client_endpoint(&app, &transport)?;
//! let (conn, node_id) = connect(&endpoint, addr, "demo", Protocol::Client, &transport).await?;
//! assert_eq!(node_id, "n1");
//! let get = ClientRequest::Get { key: b"k".to_vec(), consistency: ReadConsistency::Default };
//! let answer: ClientResponse = call(&conn, &get, transport.max_frame).await?;
//! assert!(matches!(answer, ClientResponse::Value { value: Some(v), .. } if v == b"hi"));
//!
//! conn.close(0u32.into(), b"done");
//! serving.await??;
//! std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

mod certs;
mod frame;
mod message;
mod peer;
mod probe;
mod transport;

pub use certs::{
    generate_certs, validate_name, CertError, CertRequest, CertificateAuthority, Role, TlsIdentity,
    Validity, NODE_SERVER_NAME,
};
pub use frame::{
    decode_frame, encode_frame, read_frame, write_frame, FrameError, DEFAULT_MAX_FRAME,
    FRAME_HEADER_LEN,
};
pub use message::{
    AdminRequest, AdminResponse, ClientRequest, ClientResponse, ErrorKind, ErrorReply, FsyncPolicy,
    Hello, HelloReply, LeaderlessStatus, MultiLeaderStatus, NodeMode, NodeRole, NodeStatus,
    OriginStatus, PeerMessage, PeerStatus, Position, Protocol, QuorumOverride, ReadConsistency,
    RefusalReason, RingRange, VersionedValue, WriteAck, PROTOCOL_VERSION,
};
pub use peer::{max_peer_payload, PeerBus, PeerBusConfig, PeerError, PeerStats, BATCH_BYTES};
pub use probe::{probe, Probe};
pub use transport::{
    accept_hello, call, client_endpoint, codes, connect, peer_role, serve_rpc, server_endpoint,
    TransportConfig, WireError,
};
