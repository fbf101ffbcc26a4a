//! The multi-leader mode: the client protocol in front of a
//! [`mimeo_multi_leader`] driver.
//!
//! Every node takes writes; reads are answered from the local replica.
//!
//! The multi-leader requests of the client protocol (version 5:
//! `GetVersioned`, `PutVersioned`, `Increment`, `SetAdd`, `SetRemove`)
//! map one to one onto the core's operations. Contexts and session tokens
//! travel as opaque bytes: a format byte ([`TOKEN_FORMAT`]) then the
//! postcard encoding of a version vector; a token that does not decode is
//! refused as a bad request. A vector's entries name origins, which are
//! node incarnations (`n1.<epoch>`; a node's plain id for a data
//! directory older than incarnations): the token format is unchanged.
//!
//! The older requests carry no causal context, so:
//!
//! - a `put` or `delete` supersedes what **this node** holds for the key
//!   (it reads the key's context here first and writes with it): values
//!   written concurrently on other nodes that this node has not applied
//!   yet stay as siblings (`conflicts = "siblings"`), or lose to the
//!   larger timestamp (`lww`);
//! - a `get` of a key with several siblings is refused with an error
//!   saying how many (the client protocol cannot show them yet), and a
//!   counter or set reads as text (the counter's value; the members, one
//!   per line);
//! - session and leader reads are refused: a multi-leader session token is
//!   a version vector, not a log position, and no node can serve a
//!   linearizable read;
//! - `cas` is refused: no node can compare and set atomically when every
//!   node takes writes.
//!
//! A write the node stopped waiting for is a timeout (outcome unknown),
//! never a failure.
//!
//! The status names the node's own origin position in `last_position`
//! and `durable_index`, and reports its applied vector per origin in
//! `peers`: `match_index` is how far this node has applied that peer's
//! writes, `lag_entries` how many more of them it knows exist, `lag_ms`
//! how old the latest one it applied is. The multi-leader status
//! (`ClientRequest::MultiLeaderStatus`, [`multi_leader_status`]) adds the
//! tombstones waiting for collection, siblings per key, HLC drift
//! refusals and the core's other counters; the metrics endpoint exports
//! the same numbers and the replication lag of applied writes
//! (`mimeo_multi_leader_*`, see `metrics.rs`).

use std::sync::Arc;
use std::time::Instant;

use mimeo_multi_leader::driver::Handle;
use mimeo_multi_leader::{AckMode, ClientError, ClientOp, ReadValue, Reply, Status};
use mimeo_wire::{
    ClientRequest, ClientResponse, ErrorKind, MultiLeaderStatus, NodeRole, NodeStatus,
    OriginStatus, PeerBus, PeerStatus, Position, ReadConsistency, VersionedValue, WriteAck,
};

use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::standalone::{check_limits, error};

/// The first byte of a context or session token.
pub(crate) const TOKEN_FORMAT: u8 = 1;

/// A version vector as a token.
fn token(vector: &mimeo_multi_leader::VersionVector) -> Vec<u8> {
    let mut bytes = vec![TOKEN_FORMAT];
    bytes.extend(postcard::to_allocvec(vector).expect("a version vector serializes"));
    bytes
}

/// The versioned response to a read of `value` with the `session` token
/// (the multi-leader and leaderless modes both read a [`ReadValue`]), or
/// an error for a kind of value the client protocol has no form for.
pub(crate) fn versioned(value: ReadValue, session: Vec<u8>) -> ClientResponse {
    let value = match value {
        ReadValue::Absent => VersionedValue::Absent,
        ReadValue::Register {
            values,
            deleted,
            context,
            ..
        } => VersionedValue::Register {
            values,
            deleted,
            context: if context.is_empty() {
                Vec::new()
            } else {
                token(&context)
            },
        },
        ReadValue::Counter(n) => VersionedValue::Counter(n),
        ReadValue::Set(members) => VersionedValue::Set(members),
        _ => return error(ErrorKind::Internal, "an unknown kind of value".into()),
    };
    ClientResponse::Versioned { value, session }
}

/// A token back to its version vector, or why it is not one.
fn from_token(what: &str, bytes: &[u8]) -> Result<mimeo_multi_leader::VersionVector, String> {
    let bad = |why: String| {
        format!("the {what} token is not one a multi-leader node gave ({why}); pass it as printed")
    };
    match bytes.split_first() {
        Some((&TOKEN_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| bad(e.to_string())),
        Some((format, _)) => Err(bad(format!("format {format}, expected {TOKEN_FORMAT}"))),
        None => Err(bad("empty".into())),
    }
}

/// Refuses a multi-leader request sent to a node of another mode, saying so.
pub(crate) fn refuse_outside_multi_leader(
    request: &ClientRequest,
    mode: &str,
) -> Option<ClientResponse> {
    let name = match request {
        ClientRequest::GetVersioned { .. } => "a versioned get (siblings and context)",
        ClientRequest::PutVersioned { .. } => "a write with a context",
        ClientRequest::Increment { .. } => "a counter increment",
        ClientRequest::SetAdd { .. } | ClientRequest::SetRemove { .. } => "a set operation",
        ClientRequest::MultiLeaderStatus => "the multi-leader status",
        _ => return None,
    };
    Some(error(
        ErrorKind::BadRequest,
        format!(
            "{name} needs a multi-leader node, and this node is in mode {mode}: nothing was done"
        ),
    ))
}

/// The multi-leader service behind the client protocol.
pub(crate) struct MultiLeader {
    handle: Handle,
    bus: Arc<PeerBus>,
    config: NodeConfig,
    clock: Arc<Clock>,
    started: Instant,
}

impl MultiLeader {
    pub(crate) fn new(
        handle: Handle,
        bus: Arc<PeerBus>,
        config: NodeConfig,
        clock: Arc<Clock>,
    ) -> MultiLeader {
        MultiLeader {
            handle,
            bus,
            config,
            clock,
            started: Instant::now(),
        }
    }

    /// Serves one client request.
    pub(crate) async fn handle(self: Arc<Self>, request: ClientRequest) -> ClientResponse {
        if let Err((kind, message)) = check_limits(&self.config.limits, &request) {
            return error(kind, message);
        }
        match request {
            ClientRequest::WithQuorum { .. }
            | ClientRequest::LeaderlessStatus
            | ClientRequest::LocalRead { .. } => crate::leaderless::refused_here(),
            ClientRequest::Status => match self.status().await {
                Some(status) => ClientResponse::Status(status),
                None => stopped(),
            },
            ClientRequest::MultiLeaderStatus => match self.core_status().await {
                Some(status) => ClientResponse::MultiLeaderStatus(multi_leader_status(&status)),
                None => stopped(),
            },
            ClientRequest::Get { key, consistency } => match consistency {
                ReadConsistency::Default | ReadConsistency::Follower { .. } => {
                    let op = ClientOp::Get {
                        key,
                        session: None,
                        timeout_ms: None,
                    };
                    self.call(op, None, false).await
                }
                ReadConsistency::Leader => error(
                    ErrorKind::BadRequest,
                    "a leader read is linearizable, and no node of a multi-leader cluster can \
                     serve one (every node takes writes): read without --read, or use \
                     leader-follower mode"
                        .into(),
                ),
                ReadConsistency::Session { .. } => error(
                    ErrorKind::BadRequest,
                    "a multi-leader session is a version vector, not a log position; this \
                     client protocol cannot carry one yet: read without --read session"
                        .into(),
                ),
            },
            ClientRequest::Put { key, value, ack } => {
                let context = match self.context(&key).await {
                    Ok(context) => context,
                    Err(response) => return response,
                };
                let op = ClientOp::Put {
                    key,
                    value,
                    context,
                };
                self.write(op, ack).await
            }
            ClientRequest::Delete { key, ack } => {
                let context = match self.context(&key).await {
                    Ok(context) => context,
                    Err(response) => return response,
                };
                self.write(ClientOp::Delete { key, context }, ack).await
            }
            ClientRequest::Cas { .. } => error(
                ErrorKind::BadRequest,
                ClientError::CasUnsupported.to_string(),
            ),
            ClientRequest::GetVersioned {
                key,
                after,
                timeout_ms,
            } => {
                let session = match after.map(|t| from_token("session", &t)).transpose() {
                    Ok(session) => session,
                    Err(message) => return error(ErrorKind::BadRequest, message),
                };
                let op = ClientOp::Get {
                    key,
                    session,
                    timeout_ms,
                };
                self.call_versioned(op, None, false).await
            }
            ClientRequest::PutVersioned {
                key,
                value,
                context,
                ack,
            } => {
                let context = match context.map(|t| from_token("context", &t)).transpose() {
                    Ok(context) => context,
                    Err(message) => return error(ErrorKind::BadRequest, message),
                };
                let op = match value {
                    Some(value) => ClientOp::Put {
                        key,
                        value,
                        context,
                    },
                    None => ClientOp::Delete { key, context },
                };
                self.write_versioned(op, ack).await
            }
            ClientRequest::Increment { key, delta, ack } => {
                self.write_versioned(ClientOp::Increment { key, delta }, ack)
                    .await
            }
            ClientRequest::SetAdd { key, element, ack } => {
                self.write_versioned(ClientOp::SetAdd { key, element }, ack)
                    .await
            }
            ClientRequest::SetRemove { key, element, ack } => {
                self.write_versioned(ClientOp::SetRemove { key, element }, ack)
                    .await
            }
        }
    }

    async fn write_versioned(&self, op: ClientOp, ack: Option<WriteAck>) -> ClientResponse {
        match ack.map(ack_mode).transpose() {
            Ok(acks) => self.call_versioned(op, acks, true).await,
            Err(message) => error(ErrorKind::BadRequest, message),
        }
    }

    /// Like [`call`](Self::call), answering with the versioned responses.
    async fn call_versioned(
        &self,
        op: ClientOp,
        acks: Option<AckMode>,
        is_write: bool,
    ) -> ClientResponse {
        let answer =
            tokio::time::timeout(self.config.request_timeout(), self.handle.request(op, acks))
                .await;
        match answer {
            Ok(Ok(Reply::Written {
                write,
                context,
                session,
                ..
            })) => ClientResponse::WrittenVersioned {
                origin: write.node.to_string(),
                seq: write.counter,
                context: context.as_ref().map(token),
                session: token(&session),
            },
            Ok(Ok(Reply::Value { value, session })) => versioned(value, token(&session)),
            Ok(Ok(reply)) => response(reply),
            Ok(Err(_)) => stopped(),
            Err(_) if is_write => error(
                ErrorKind::Timeout,
                format!(
                    "not acknowledged within {} ms (peers down or partitioned, with acks = \
                     quorum or all?); the write may still take effect",
                    self.config.limits.request_timeout_ms
                ),
            ),
            Err(_) => error(
                ErrorKind::Unavailable,
                "the read was not served in time; retry".into(),
            ),
        }
    }

    /// The context of what this node holds for `key` (siblings policy).
    async fn context(
        &self,
        key: &[u8],
    ) -> Result<Option<mimeo_multi_leader::VersionVector>, ClientResponse> {
        let op = ClientOp::Get {
            key: key.to_vec(),
            session: None,
            timeout_ms: None,
        };
        match self.handle.request(op, None).await {
            Ok(Reply::Value {
                value: ReadValue::Register { context, .. },
                ..
            }) => Ok((!context.is_empty()).then_some(context)),
            Ok(_) => Ok(None),
            Err(_) => Err(stopped()),
        }
    }

    async fn write(&self, op: ClientOp, ack: Option<WriteAck>) -> ClientResponse {
        let acks = match ack.map(ack_mode).transpose() {
            Ok(acks) => acks,
            Err(message) => return error(ErrorKind::BadRequest, message),
        };
        self.call(op, acks, true).await
    }

    async fn call(&self, op: ClientOp, acks: Option<AckMode>, is_write: bool) -> ClientResponse {
        let answer =
            tokio::time::timeout(self.config.request_timeout(), self.handle.request(op, acks))
                .await;
        match answer {
            Ok(Ok(reply)) => response(reply),
            Ok(Err(_)) => stopped(),
            Err(_) if is_write => error(
                ErrorKind::Timeout,
                format!(
                    "not acknowledged within {} ms (peers down or partitioned, with acks = \
                     quorum or all?); the write may still take effect",
                    self.config.limits.request_timeout_ms
                ),
            ),
            Err(_) => error(
                ErrorKind::Unavailable,
                "the read was not served in time; retry".into(),
            ),
        }
    }

    /// The core's status (for the multi-leader status and the metrics).
    pub(crate) async fn core_status(&self) -> Option<Status> {
        self.handle.status().await.ok()
    }

    /// The node's peer links (for the metrics).
    pub(crate) fn links(&self) -> Vec<mimeo_wire::PeerStats> {
        self.bus.stats()
    }

    /// The node's status: its applied vector and per-origin lag in `peers`
    /// (per peer: its latest incarnation's position, and the writes of
    /// every incarnation of it not applied here).
    pub(crate) async fn status(&self) -> Option<NodeStatus> {
        let status: Status = self.handle.status().await.ok()?;
        let me = status.actor.as_str();
        let links = self.bus.stats();
        let peers = self
            .config
            .replication
            .peers
            .iter()
            .map(|peer| {
                let incarnations = || {
                    status
                        .origins
                        .values()
                        .filter(|l| l.node.as_str() == peer.id)
                };
                let lag = incarnations().max_by_key(|l| l.incarnation);
                let link = links.iter().find(|l| l.node_id == peer.id);
                PeerStatus {
                    node_id: peer.id.clone(),
                    address: peer.addr.to_string(),
                    match_index: lag.map_or(0, |l| l.applied),
                    lag_entries: incarnations().map(|l| l.behind_writes).sum(),
                    lag_ms: lag.map_or(0, |l| l.since_latest_ms),
                    connected: link.is_some_and(|l| l.connected),
                }
            })
            .collect();
        let own = status.applied.get(me);
        Some(NodeStatus {
            node_id: self.config.node_id.clone(),
            cluster_id: self.config.cluster_id.clone(),
            mode: self.config.mode.into(),
            role: NodeRole::Origin,
            term: 0,
            last_position: Position {
                term: 0,
                index: own,
            },
            commit_index: status.applied.iter().map(|(_, n)| n).sum(),
            durable_index: status.durable.get(me),
            live_keys: status.live_keys,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            clock_offset_ms: self.clock.offset_ms(),
            fsync: crate::config::fsync_policy(self.config.storage.fsync),
            peers,
        })
    }
}

/// What the multi-leader status reports, from the core's status: every
/// origin's lag (in node-id order), tombstones, siblings per key, drift
/// refusals and the other counters.
pub(crate) fn multi_leader_status(status: &Status) -> MultiLeaderStatus {
    let origins = status
        .origins
        .iter()
        .map(|(origin, lag)| OriginStatus {
            origin: origin.to_string(),
            applied: lag.applied,
            behind_writes: lag.behind_writes,
            behind_ms: lag.since_latest_ms,
        })
        .collect();
    let siblings = status
        .siblings_histogram
        .iter()
        .map(|(&count, &keys)| (count as u64, keys))
        .collect();
    let counters = [
        ("tombstones_collected", status.tombstones_collected),
        ("duplicates", status.duplicates),
        ("out_of_order", status.out_of_order),
        ("type_conflicts", status.type_conflicts),
        ("pending_acks", status.pending_acks),
        ("pending_ack_bytes", status.pending_ack_bytes),
        ("live_keys", status.live_keys),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect();
    MultiLeaderStatus {
        origins,
        tombstones_pending: status.tombstones_pending,
        tombstone_bytes: status.tombstone_bytes,
        siblings,
        drift_refusals: status.drift_refusals,
        counters,
    }
}

fn response(reply: Reply) -> ClientResponse {
    match reply {
        Reply::Written { write, .. } => ClientResponse::Written {
            position: Position {
                term: 0,
                index: write.counter,
            },
        },
        Reply::Value { value, session } => {
            // The position of a read: how many writes this replica has applied.
            let position = Position {
                term: 0,
                index: session.iter().map(|(_, n)| n).sum(),
            };
            let value = match value {
                ReadValue::Absent => None,
                ReadValue::Register { mut values, .. } if values.len() <= 1 => values.pop(),
                ReadValue::Register { values, .. } => {
                    return error(
                        ErrorKind::BadRequest,
                        format!(
                            "the key holds {} concurrent values (siblings), which this client \
                             protocol cannot show yet; a put supersedes the ones this node holds",
                            values.len()
                        ),
                    )
                }
                ReadValue::Counter(n) => Some(n.to_string().into_bytes()),
                ReadValue::Set(members) => Some(members.join(&b'\n')),
                _ => return error(ErrorKind::Internal, "an unknown kind of value".into()),
            };
            ClientResponse::Value { value, position }
        }
        Reply::Failed(e) => {
            let kind = match e {
                ClientError::SessionTimeout { .. }
                | ClientError::Busy { .. }
                | ClientError::AcksFull { .. }
                | ClientError::TombstonesFull { .. } => ErrorKind::Unavailable,
                ClientError::WriteTooLarge { .. } => ErrorKind::TooLarge,
                _ => ErrorKind::BadRequest,
            };
            error(kind, e.to_string())
        }
        _ => error(ErrorKind::Internal, "an unknown reply".into()),
    }
}

fn stopped() -> ClientResponse {
    error(
        ErrorKind::Internal,
        "the replication driver has stopped (see the node's log); the node is shutting down".into(),
    )
}

/// The core's ack mode for a request's override.
fn ack_mode(ack: WriteAck) -> Result<AckMode, String> {
    match ack {
        WriteAck::Async => Ok(AckMode::Local),
        WriteAck::Quorum => Ok(AckMode::Quorum),
        WriteAck::All => Ok(AckMode::All),
        WriteAck::SemiSync(_) => Err(
            "semi-sync:K is a leader-follower ack mode; multi-leader takes async (the node that \
             took the write holds it durably), quorum or all"
                .into(),
        ),
    }
}
