//! The leader-follower mode: the client protocol in front of a
//! [`mimeo_leader_follower`] driver.
//!
//! Requests become core operations; replies become client responses. A
//! follower asked to write (or to read linearizably) answers with a
//! redirect to the leader's client address, which the client follows. A
//! write the core stopped waiting for is a timeout (outcome unknown), never
//! a failure.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mimeo_leader_follower::driver::{Handle, NodeNames};
use mimeo_leader_follower::{AckMode, ClientOp, LogPosition, ReadMode, Reply, Status};
use mimeo_wire::{
    ClientRequest, ClientResponse, ErrorKind, NodeRole, NodeStatus, PeerBus, PeerStatus, Position,
    ReadConsistency, WriteAck,
};

use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::standalone::{check_limits, error, position_to_wire};

/// The leader-follower service behind the client protocol.
pub(crate) struct LeaderFollower {
    handle: Handle,
    names: NodeNames,
    /// Client addresses by node name, for redirects.
    client_addrs: HashMap<String, SocketAddr>,
    bus: Arc<PeerBus>,
    config: NodeConfig,
    clock: Arc<Clock>,
    started: Instant,
}

impl LeaderFollower {
    pub(crate) fn new(
        handle: Handle,
        bus: Arc<PeerBus>,
        config: NodeConfig,
        clock: Arc<Clock>,
    ) -> LeaderFollower {
        let mut client_addrs: HashMap<String, SocketAddr> = config
            .replication
            .peers
            .iter()
            .map(|p| (p.id.clone(), p.client_addr.unwrap_or(p.addr)))
            .collect();
        client_addrs.insert(config.node_id.clone(), config.listen);
        LeaderFollower {
            handle,
            names: names(&config),
            client_addrs,
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
        if let Some(refused) =
            crate::multi_leader::refuse_outside_multi_leader(&request, "leader-follower")
        {
            return refused;
        }
        let (op, ack) = match request {
            // Refused above.
            ClientRequest::GetVersioned { .. }
            | ClientRequest::PutVersioned { .. }
            | ClientRequest::Increment { .. }
            | ClientRequest::SetAdd { .. }
            | ClientRequest::SetRemove { .. }
            | ClientRequest::MultiLeaderStatus => {
                return error(
                    ErrorKind::BadRequest,
                    "a multi-leader request reached a leader-follower node".into(),
                )
            }
            ClientRequest::WithQuorum { .. }
            | ClientRequest::LeaderlessStatus
            | ClientRequest::LocalRead { .. } => {
                // Refused before the service is asked (server.rs).
                return crate::leaderless::refused_here();
            }
            ClientRequest::Status => {
                return match self.status().await {
                    Some(status) => ClientResponse::Status(status),
                    None => stopped(),
                };
            }
            ClientRequest::Get { key, consistency } => (
                ClientOp::Get {
                    key,
                    consistency: read_mode(consistency),
                },
                None,
            ),
            ClientRequest::Put { key, value, ack } => (ClientOp::Put { key, value }, ack),
            ClientRequest::Delete { key, ack } => (ClientOp::Delete { key }, ack),
            ClientRequest::Cas {
                key,
                expected,
                new,
                ack,
            } => (ClientOp::Cas { key, expected, new }, ack),
        };
        let is_write = !matches!(op, ClientOp::Get { .. });
        let answer = tokio::time::timeout(
            self.config.request_timeout(),
            self.handle.request(op, ack.map(ack_mode)),
        )
        .await;
        match answer {
            Ok(Ok(reply)) => self.response(reply),
            Ok(Err(_)) => stopped(),
            Err(_) if is_write => error(
                ErrorKind::Timeout,
                format!(
                    "no acknowledgement within {} ms; the write may still take effect",
                    self.config.limits.request_timeout_ms
                ),
            ),
            Err(_) => error(
                ErrorKind::Unavailable,
                "the read was not served in time; retry".into(),
            ),
        }
    }

    fn response(&self, reply: Reply) -> ClientResponse {
        match reply {
            Reply::Written { position } => ClientResponse::Written {
                position: position_to_wire(position),
            },
            Reply::Value { value, version, .. } => ClientResponse::Value {
                value,
                position: position_to_wire(version),
            },
            Reply::CasMismatch { current } => ClientResponse::CasMismatch { current },
            Reply::NotLeader { leader_hint } => ClientResponse::Redirect {
                leader: leader_hint
                    .and_then(|id| self.names.name(id))
                    .and_then(|name| self.client_addrs.get(name))
                    .map(SocketAddr::to_string),
            },
            Reply::Unavailable { reason } => error(
                ErrorKind::Unavailable,
                format!("not served, nothing was done: {reason:?}"),
            ),
            Reply::Unknown { reason } => error(
                ErrorKind::Timeout,
                format!("the write may or may not take effect: {reason:?}"),
            ),
            Reply::BadRequest { message } => error(ErrorKind::BadRequest, message),
        }
    }

    /// The node's status, with the lag table when this node leads.
    pub(crate) async fn status(&self) -> Option<NodeStatus> {
        let status: Status = self.handle.status().await.ok()?;
        let links = self.bus.stats();
        let peers = self
            .config
            .replication
            .peers
            .iter()
            .map(|peer| {
                let id = self.names.id(&peer.id);
                let lag = status.followers.iter().find(|f| Some(f.id) == id);
                let link = links.iter().find(|l| l.node_id == peer.id);
                PeerStatus {
                    node_id: peer.id.clone(),
                    address: peer.addr.to_string(),
                    match_index: lag.map_or(0, |l| l.match_index),
                    lag_entries: lag.map_or(0, |l| l.lag_entries),
                    lag_ms: lag.map_or(0, |l| l.lag_ms),
                    connected: link.is_some_and(|l| l.connected),
                }
            })
            .collect();
        Some(NodeStatus {
            node_id: self.config.node_id.clone(),
            cluster_id: self.config.cluster_id.clone(),
            mode: self.config.mode.into(),
            // A learner follows, but neither votes nor counts yet.
            role: match status.role {
                _ if !status.voter => NodeRole::Learner,
                mimeo_leader_follower::Role::Leader => NodeRole::Leader,
                mimeo_leader_follower::Role::Candidate => NodeRole::Candidate,
                mimeo_leader_follower::Role::Follower => NodeRole::Follower,
            },
            term: status.term,
            last_position: position_to_wire(status.last),
            commit_index: status.commit_index,
            durable_index: status.durable_index,
            live_keys: status.live_keys,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            clock_offset_ms: self.clock.offset_ms(),
            fsync: crate::config::fsync_policy(self.config.storage.fsync),
            peers,
        })
    }

    /// The core's status and the peer links, for the metrics endpoint.
    pub(crate) async fn metrics(&self) -> Option<(Status, Vec<mimeo_wire::PeerStats>)> {
        let status = self.handle.status().await.ok()?;
        Some((status, self.bus.stats()))
    }

    /// Per follower, how long this node's appends took to become durable
    /// there while it led.
    pub(crate) fn replication_latency(&self) -> Vec<(String, mimeo_storage::Latencies)> {
        self.handle.replication_latency()
    }

    /// The configured name of node `id`.
    pub(crate) fn node_name(&self, id: mimeo_leader_follower::NodeId) -> Option<&str> {
        self.names.name(id)
    }

    /// Hands leadership to a follower before a clean shutdown, waiting
    /// (bounded) until this node no longer leads.
    pub(crate) async fn step_down(&self) {
        let Ok(Some(successor)) = self.handle.transfer_leadership().await else {
            return;
        };
        let successor = self.names.name(successor).unwrap_or("?").to_owned();
        tracing::info!(%successor, "SIGTERM: handing leadership over");
        let deadline = Instant::now() + std::time::Duration::from_secs(2);
        while Instant::now() < deadline {
            match self.handle.status().await {
                Ok(s) if s.role != mimeo_leader_follower::Role::Leader => return,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                Err(_) => return,
            }
        }
        tracing::warn!(%successor, "leadership transfer did not finish within 2 s");
    }
}

/// Every node of the cluster, this one included.
pub(crate) fn names(config: &NodeConfig) -> NodeNames {
    let mut names: Vec<String> = config
        .replication
        .peers
        .iter()
        .map(|p| p.id.clone())
        .collect();
    names.push(config.node_id.clone());
    NodeNames::new(names)
}

fn read_mode(consistency: ReadConsistency) -> Option<ReadMode> {
    match consistency {
        ReadConsistency::Default => None,
        ReadConsistency::Leader => Some(ReadMode::Leader),
        ReadConsistency::Follower { max_staleness_ms } => {
            Some(ReadMode::Follower { max_staleness_ms })
        }
        ReadConsistency::Session {
            after: Position { term, index },
        } => Some(ReadMode::Session {
            after: LogPosition { term, index },
        }),
    }
}

fn stopped() -> ClientResponse {
    error(
        ErrorKind::Internal,
        "the replication driver has stopped (see the node's log); the node is shutting down".into(),
    )
}

/// The core's ack mode for a request's override.
fn ack_mode(ack: WriteAck) -> AckMode {
    match ack {
        WriteAck::Async => AckMode::Async,
        // A K beyond any cluster's size is refused by the core as a bad request.
        WriteAck::SemiSync(k) => AckMode::SemiSync(usize::try_from(k).unwrap_or(usize::MAX)),
        WriteAck::Quorum => AckMode::Quorum,
        WriteAck::All => AckMode::All,
    }
}
