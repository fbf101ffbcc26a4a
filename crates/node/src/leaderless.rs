//! The leaderless mode: the client protocol in front of a
//! [`mimeo_leaderless`] driver.
//!
//! Any node takes any request and coordinates it over the key's `n`
//! replicas (a node that is not one forwards writes to one). The client
//! protocol's multi-leader requests (version 5: `GetVersioned`,
//! `PutVersioned`, `Increment`, `SetAdd`, `SetRemove`) map one to one onto
//! the core's operations, with the cluster's default quorums. Contexts
//! travel as the same opaque tokens as in multi-leader mode: a format byte
//! ([`TOKEN_FORMAT`]) then the postcard encoding of a version vector.
//!
//! The older requests carry no causal context, so:
//!
//! - a `put` or `delete` first reads the key (at the request's `r`) and
//!   writes with that read's context (`conflicts = "siblings"`; under
//!   `lww` it writes at once): it supersedes the values that read saw;
//!   values written concurrently elsewhere stay as siblings (or lose to
//!   the larger timestamp under `lww`);
//! - the write's `ack` picks `w`: `async` is 1, `quorum` the cluster's
//!   default, `all` is `n`; `semi-sync:K` is refused;
//! - a `get` of a key with several siblings is refused with an error
//!   saying how many, and a counter or set reads as text, as in
//!   multi-leader mode;
//! - leader and session reads are refused (no node can serve a
//!   linearizable read; a quorum read is what there is);
//! - `cas` is refused, naming leader-follower.
//!
//! Outcomes: a write that did not gather `w` in time is a
//! [`ErrorKind::Timeout`] (its outcome is unknown: it may have landed on
//! some replicas); a read that did not gather `r` in time, or a request
//! that could not reach enough replicas at all (nothing was sent), is
//! [`ErrorKind::Unavailable`].
//!
//! `LocalRead` is a diagnostic, not a client read: the asked node answers
//! from its own state at once (nothing coordinated or repaired), or says
//! it is not one of the key's replicas, naming them. The harness reads
//! every replica of every key with it after a heal, to judge convergence.
//!
//! The status reports, per peer, the hints this node holds for it
//! (`lag_entries`: hints, `match_index`: their bytes) and when this node
//! last completed an anti-entropy exchange with it (`lag_ms`: how long
//! ago; 0 if never); `live_keys` is the keys this node replicates.

use std::sync::Arc;
use std::time::Instant;

use mimeo_leaderless::driver::Handle;
use mimeo_leaderless::{ClientError, ClientOp, Quorum, ReadValue, Reply, Status, VersionVector};
use mimeo_wire::{
    ClientRequest, ClientResponse, ErrorKind, LeaderlessStatus, NodeRole, NodeStatus, PeerBus,
    PeerStatus, Position, ReadConsistency, RingRange, WriteAck,
};

use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::standalone::{check_limits, error};

/// The first byte of a context token (the multi-leader mode's format).
pub(crate) const TOKEN_FORMAT: u8 = 1;

fn token(vector: &VersionVector) -> Vec<u8> {
    let mut bytes = vec![TOKEN_FORMAT];
    bytes.extend(postcard::to_allocvec(vector).expect("a version vector serializes"));
    bytes
}

fn from_token(bytes: &[u8]) -> Result<VersionVector, String> {
    let bad = |why: String| {
        format!("the context token is not one a leaderless node gave ({why}); pass it as printed")
    };
    match bytes.split_first() {
        Some((&TOKEN_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| bad(e.to_string())),
        Some((format, _)) => Err(bad(format!("format {format}, expected {TOKEN_FORMAT}"))),
        None => Err(bad("empty".into())),
    }
}

/// The leaderless service behind the client protocol.
pub(crate) struct Leaderless {
    handle: Handle,
    bus: Arc<PeerBus>,
    config: NodeConfig,
    clock: Arc<Clock>,
    started: Instant,
    /// Replicas per key (for `ack = all`).
    n: usize,
    /// The ring (for the status).
    ring: mimeo_leaderless::Ring,
    started_millis: Instant,
}

impl Leaderless {
    pub(crate) fn new(
        handle: Handle,
        bus: Arc<PeerBus>,
        config: NodeConfig,
        clock: Arc<Clock>,
        n: usize,
        ring: mimeo_leaderless::Ring,
        origin: Instant,
    ) -> Leaderless {
        Leaderless {
            handle,
            bus,
            config,
            clock,
            started: Instant::now(),
            n,
            ring,
            started_millis: origin,
        }
    }

    /// Serves one client request.
    pub(crate) async fn handle(self: Arc<Self>, request: ClientRequest) -> ClientResponse {
        if let Err((kind, message)) = check_limits(&self.config.limits, &request) {
            return error(kind, message);
        }
        match request {
            ClientRequest::WithQuorum { quorum, request } => match *request {
                ClientRequest::WithQuorum { .. }
                | ClientRequest::Status
                | ClientRequest::LeaderlessStatus
                | ClientRequest::MultiLeaderStatus
                | ClientRequest::LocalRead { .. }
                | ClientRequest::Cas { .. } => error(
                    ErrorKind::BadRequest,
                    "quorums apply to a get, put, delete, versioned get or put, increment, sadd \
                     or srem only (cas is refused in leaderless mode: use leader-follower)"
                        .into(),
                ),
                request => {
                    let quorum = Quorum {
                        w: quorum.w.map(|v| v as usize),
                        r: quorum.r.map(|v| v as usize),
                        pw: quorum.pw.map(|v| v as usize),
                        pr: quorum.pr.map(|v| v as usize),
                        dw: quorum.dw.map(|v| v as usize),
                    };
                    self.serve(request, quorum).await
                }
            },
            ClientRequest::LeaderlessStatus => match self.leaderless_status().await {
                Some(status) => ClientResponse::LeaderlessStatus(status),
                None => stopped(),
            },
            request @ ClientRequest::MultiLeaderStatus => {
                crate::multi_leader::refuse_outside_multi_leader(&request, "leaderless")
                    .unwrap_or_else(refused_here)
            }
            ClientRequest::LocalRead { key } => match self.handle.local_read(key).await {
                Ok(read) => local_read(read),
                Err(_) => stopped(),
            },
            request => self.serve(request, Quorum::default()).await,
        }
    }

    /// Serves a request with the quorum overrides `q` (a write's `ack`
    /// picks `w` unless `q` names one).
    async fn serve(&self, request: ClientRequest, q: Quorum) -> ClientResponse {
        let with_ack = |ack: Option<WriteAck>| -> Result<Quorum, String> {
            let from_ack = write_quorum(ack, self.n)?;
            Ok(Quorum {
                w: q.w.or(from_ack.w),
                ..q
            })
        };
        match request {
            ClientRequest::Status => match self.status().await {
                Some(status) => ClientResponse::Status(status),
                None => stopped(),
            },
            ClientRequest::Get { key, consistency } => match consistency {
                ReadConsistency::Default | ReadConsistency::Follower { .. } => {
                    let reply = self.call(ClientOp::Get { key }, q).await;
                    plain(reply)
                }
                ReadConsistency::Leader => error(
                    ErrorKind::BadRequest,
                    "a leader read is linearizable, and a leaderless cluster has no leader: \
                     read without --read (a quorum read, r of n replicas), or use \
                     leader-follower mode"
                        .into(),
                ),
                ReadConsistency::Session { .. } => error(
                    ErrorKind::BadRequest,
                    "session reads are not supported in leaderless mode: read without --read \
                     (a quorum read; with W + R > N it sees every write acknowledged before it \
                     began)"
                        .into(),
                ),
            },
            ClientRequest::Put { key, value, ack } => {
                let quorum = match with_ack(ack) {
                    Ok(q) => q,
                    Err(message) => return error(ErrorKind::BadRequest, message),
                };
                let context = match self.context(&key, q).await {
                    Ok(context) => context,
                    Err(response) => return response,
                };
                let op = ClientOp::Put {
                    key,
                    value,
                    context,
                };
                plain(self.call(op, quorum).await)
            }
            ClientRequest::Delete { key, ack } => {
                let quorum = match with_ack(ack) {
                    Ok(q) => q,
                    Err(message) => return error(ErrorKind::BadRequest, message),
                };
                let context = match self.context(&key, q).await {
                    Ok(context) => context,
                    Err(response) => return response,
                };
                plain(self.call(ClientOp::Delete { key, context }, quorum).await)
            }
            ClientRequest::Cas { .. } => error(
                ErrorKind::BadRequest,
                ClientError::CasUnsupported.to_string(),
            ),
            ClientRequest::GetVersioned { key, after, .. } => {
                if after.is_some() {
                    return error(
                        ErrorKind::BadRequest,
                        "session reads (--after) are not supported in leaderless mode: read \
                         without --after"
                            .into(),
                    );
                }
                versioned(self.call(ClientOp::Get { key }, q).await)
            }
            ClientRequest::PutVersioned {
                key,
                value,
                context,
                ack,
            } => {
                let quorum = match with_ack(ack) {
                    Ok(q) => q,
                    Err(message) => return error(ErrorKind::BadRequest, message),
                };
                let context = match context.map(|t| from_token(&t)).transpose() {
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
                versioned(self.call(op, quorum).await)
            }
            ClientRequest::Increment { key, delta, ack } => match with_ack(ack) {
                Ok(quorum) => {
                    versioned(self.call(ClientOp::Increment { key, delta }, quorum).await)
                }
                Err(message) => error(ErrorKind::BadRequest, message),
            },
            ClientRequest::SetAdd { key, element, ack } => match with_ack(ack) {
                Ok(quorum) => versioned(self.call(ClientOp::SetAdd { key, element }, quorum).await),
                Err(message) => error(ErrorKind::BadRequest, message),
            },
            ClientRequest::SetRemove { key, element, ack } => match with_ack(ack) {
                Ok(quorum) => versioned(
                    self.call(ClientOp::SetRemove { key, element }, quorum)
                        .await,
                ),
                Err(message) => error(ErrorKind::BadRequest, message),
            },
            ClientRequest::WithQuorum { .. }
            | ClientRequest::LeaderlessStatus
            | ClientRequest::MultiLeaderStatus
            | ClientRequest::LocalRead { .. } => {
                error(ErrorKind::BadRequest, "a nested quorum request".into())
            }
        }
    }

    /// Runs one request; `Err` is the response when the driver did not
    /// answer (stopped, or past the node's request timeout).
    async fn call(&self, op: ClientOp, quorum: Quorum) -> Result<Reply, ClientResponse> {
        let is_write = op.is_write();
        match tokio::time::timeout(
            self.config.request_timeout(),
            self.handle.request(op, quorum),
        )
        .await
        {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(stopped()),
            Err(_) if is_write => Err(error(
                ErrorKind::Timeout,
                format!(
                    "not acknowledged within {} ms; the write may still take effect",
                    self.config.limits.request_timeout_ms
                ),
            )),
            Err(_) => Err(error(
                ErrorKind::Unavailable,
                "the read was not served in time; retry".into(),
            )),
        }
    }

    /// The context a quorum read of `key` (with the request's `r` and
    /// `pr`) returns (siblings policy).
    async fn context(
        &self,
        key: &[u8],
        q: Quorum,
    ) -> Result<Option<VersionVector>, ClientResponse> {
        if self.config.replication.conflicts == "lww" {
            // Last-writer-wins ignores contexts: no read needed.
            return Ok(None);
        }
        let read = Quorum {
            r: q.r,
            pr: q.pr,
            ..Quorum::default()
        };
        let reply = self.call(ClientOp::Get { key: key.to_vec() }, read).await?;
        match reply {
            Reply::Value {
                value: ReadValue::Register { context, .. },
                ..
            } => Ok((!context.is_empty()).then_some(context)),
            Reply::Value { .. } => Ok(None),
            other => Err(failure(other)),
        }
    }

    /// The core's status and its clock now, in ms (for the metrics).
    pub(crate) async fn core_status(&self) -> Option<(Status, u64)> {
        let status = self.handle.status().await.ok()?;
        Some((status, self.started_millis.elapsed().as_millis() as u64))
    }

    /// The ring, hints, exchanges and counters.
    async fn leaderless_status(&self) -> Option<LeaderlessStatus> {
        let status: Status = self.handle.status().await.ok()?;
        let now_ms = self.started_millis.elapsed().as_millis() as u64;
        let mut ring: Vec<RingRange> = Vec::new();
        for (start, end, replicas) in self.ring.ranges(self.n) {
            let replicas: Vec<String> = replicas.iter().map(|r| r.to_string()).collect();
            match ring.last_mut() {
                // An arc holds `start + 1 ..= end`.
                Some(last) if last.replicas == replicas && last.end == start => {
                    last.end = end;
                }
                _ => ring.push(RingRange {
                    start: start.wrapping_add(1),
                    end,
                    replicas,
                }),
            }
        }
        let shares = self
            .ring
            .replica_ownership(self.n)
            .into_iter()
            .map(|(node, share)| (node.to_string(), (share * 1e6).round() as u32))
            .collect();
        let hints = status
            .hints_pending
            .iter()
            .map(|(owner, (n, bytes))| (owner.to_string(), *n, *bytes))
            .collect();
        let exchanges = self
            .config
            .replication
            .peers
            .iter()
            .map(|peer| {
                let at = status.last_exchange.get(peer.id.as_str());
                (peer.id.clone(), at.map(|at| now_ms.saturating_sub(at.0)))
            })
            .collect();
        let m = &status.metrics;
        let counters = [
            ("writes_coordinated", m.writes_coordinated),
            ("writes_forwarded", m.writes_forwarded),
            ("reads_coordinated", m.reads_coordinated),
            ("writes_unknown", m.writes_unknown),
            ("reads_unavailable", m.reads_unavailable),
            ("not_enough_replicas", m.not_enough_replicas),
            ("read_repairs", m.read_repairs),
            ("hints_stored", m.hints_stored),
            ("hints_delivered", m.hints_delivered),
            ("hints_expired", m.hints_expired),
            ("hints_refused", m.hints_refused),
            ("ae_exchanges", m.ae_exchanges),
            ("ae_segments_compared", m.ae_segments_compared),
            ("ae_keys_shipped", m.ae_keys_shipped),
            ("ae_bytes_shipped", m.ae_bytes_shipped),
            ("type_conflicts", m.type_conflicts),
            ("drift_refusals", status.drift_refusals),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
        Some(LeaderlessStatus {
            n: self.n as u32,
            ring,
            shares,
            hints,
            exchanges,
            counters,
        })
    }

    /// The node's status: per peer, hints held for it and the last
    /// anti-entropy exchange.
    pub(crate) async fn status(&self) -> Option<NodeStatus> {
        let status: Status = self.handle.status().await.ok()?;
        let links = self.bus.stats();
        let now_ms = self.started_millis.elapsed().as_millis() as u64;
        let peers = self
            .config
            .replication
            .peers
            .iter()
            .map(|peer| {
                let hints = status.hints_pending.get(peer.id.as_str());
                let link = links.iter().find(|l| l.node_id == peer.id);
                PeerStatus {
                    node_id: peer.id.clone(),
                    address: peer.addr.to_string(),
                    match_index: hints.map_or(0, |(_, bytes)| *bytes),
                    lag_entries: hints.map_or(0, |(n, _)| *n),
                    lag_ms: status
                        .last_exchange
                        .get(peer.id.as_str())
                        .map_or(0, |at| now_ms.saturating_sub(at.0).max(1)),
                    connected: link.is_some_and(|l| l.connected),
                }
            })
            .collect();
        let m = &status.metrics;
        Some(NodeStatus {
            node_id: self.config.node_id.clone(),
            cluster_id: self.config.cluster_id.clone(),
            mode: self.config.mode.into(),
            role: NodeRole::Replica,
            term: 0,
            last_position: Position {
                term: 0,
                index: m.writes_coordinated,
            },
            commit_index: m.writes_coordinated,
            durable_index: m.writes_coordinated,
            live_keys: status.keys,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            clock_offset_ms: self.clock.offset_ms(),
            fsync: crate::config::fsync_policy(self.config.storage.fsync),
            peers,
        })
    }
}

/// Refuses a leaderless request sent to a node of another mode, saying so.
pub(crate) fn refuse_outside_leaderless(
    request: &ClientRequest,
    mode: &str,
) -> Option<ClientResponse> {
    let name = match request {
        ClientRequest::WithQuorum { .. } => "a request with quorums (--w, --r, --pw, --pr, --dw)",
        ClientRequest::LeaderlessStatus => "the ring status",
        ClientRequest::LocalRead { .. } => "a replica-local read",
        _ => return None,
    };
    Some(error(
        ErrorKind::BadRequest,
        format!(
            "{name} needs a leaderless node, and this node is in mode {mode}: nothing was done"
        ),
    ))
}

/// The answer of a service that never gets leaderless requests (the
/// server refuses them first with [`refuse_outside_leaderless`]).
pub(crate) fn refused_here() -> ClientResponse {
    error(
        ErrorKind::BadRequest,
        "a leaderless request reached a node of another mode".into(),
    )
}

/// The quorum a write's `ack` asks for.
fn write_quorum(ack: Option<WriteAck>, n: usize) -> Result<Quorum, String> {
    let w = match ack {
        None | Some(WriteAck::Quorum) => None,
        Some(WriteAck::Async) => Some(1),
        Some(WriteAck::All) => Some(n),
        Some(WriteAck::SemiSync(_)) => {
            return Err(
                "semi-sync:K is a leader-follower ack mode; leaderless takes async \
                        (w = 1), quorum (the cluster's w) or all (w = n)"
                    .into(),
            )
        }
    };
    Ok(Quorum {
        w,
        ..Quorum::default()
    })
}

/// The answer to an older (context-free) request.
fn plain(reply: Result<Reply, ClientResponse>) -> ClientResponse {
    let reply = match reply {
        Ok(reply) => reply,
        Err(response) => return response,
    };
    match reply {
        Reply::Written { .. } => ClientResponse::Written {
            position: Position::default(),
        },
        Reply::Value { value, .. } => {
            let value = match value {
                ReadValue::Absent => None,
                ReadValue::Register { mut values, .. } if values.len() <= 1 => values.pop(),
                ReadValue::Register { values, .. } => {
                    return error(
                        ErrorKind::BadRequest,
                        format!(
                            "the key holds {} concurrent values (siblings): read it with \
                             `mimeo get` on a client that shows siblings, or put over it",
                            values.len()
                        ),
                    )
                }
                ReadValue::Counter(n) => Some(n.to_string().into_bytes()),
                ReadValue::Set(members) => Some(members.join(&b'\n')),
                _ => return error(ErrorKind::Internal, "an unknown kind of value".into()),
            };
            ClientResponse::Value {
                value,
                position: Position::default(),
            }
        }
        other => failure(other),
    }
}

/// The answer to a versioned request.
fn versioned(reply: Result<Reply, ClientResponse>) -> ClientResponse {
    let reply = match reply {
        Ok(reply) => reply,
        Err(response) => return response,
    };
    match reply {
        Reply::Written {
            key_dot, context, ..
        } => ClientResponse::WrittenVersioned {
            origin: key_dot
                .as_ref()
                .map_or(String::new(), |d| d.node.to_string()),
            seq: key_dot.as_ref().map_or(0, |d| d.counter),
            context: context.as_ref().map(token),
            session: Vec::new(),
        },
        Reply::Value { value, .. } => crate::multi_leader::versioned(value, Vec::new()),
        other => failure(other),
    }
}

/// The answer to a diagnostic local read: the replicas, and this node's
/// copy when it is one of them (converted as a versioned read's value).
fn local_read(read: mimeo_leaderless::LocalRead) -> ClientResponse {
    let replicas = read.replicas.iter().map(ToString::to_string).collect();
    let value = match read.value {
        None => None,
        Some(value) => {
            let reply = Reply::Value {
                value,
                tally: Default::default(),
            };
            match versioned(Ok(reply)) {
                ClientResponse::Versioned { value, .. } => Some(value),
                other => return other,
            }
        }
    };
    ClientResponse::LocalRead { replicas, value }
}

/// A reply that is neither a write nor a value.
fn failure(reply: Reply) -> ClientResponse {
    match reply {
        Reply::Unknown { tally, waited_ms } => error(
            ErrorKind::Timeout,
            format!(
                "the write gathered {tally} within {waited_ms} ms: its outcome is unknown (it \
                 may have landed on some replicas and may still spread from them)"
            ),
        ),
        Reply::Unavailable { tally, waited_ms } => error(
            ErrorKind::Unavailable,
            format!("the read gathered {tally} within {waited_ms} ms: unavailable; retry"),
        ),
        Reply::Failed(e) => {
            let kind = match e {
                ClientError::NotEnoughReplicas { .. } | ClientError::Busy { .. } => {
                    ErrorKind::Unavailable
                }
                _ => ErrorKind::BadRequest,
            };
            error(kind, e.to_string())
        }
        _ => error(ErrorKind::Internal, "an unexpected reply".into()),
    }
}

fn stopped() -> ClientResponse {
    error(
        ErrorKind::Internal,
        "the replication driver has stopped (see the node's log); the node is shutting down".into(),
    )
}
