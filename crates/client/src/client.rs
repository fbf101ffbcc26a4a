use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mimeo_wire::{
    ClientRequest, ClientResponse, LeaderlessStatus, MultiLeaderStatus, NodeStatus, Position,
    Protocol, QuorumOverride, ReadConsistency, TlsIdentity, TransportConfig, VersionedValue,
    WriteAck,
};

use crate::connector::Connector;
use crate::Error;

/// How to reach a cluster.
#[derive(Debug)]
pub struct ClientConfig {
    /// Nodes to try, in order; the first reachable one is used until a
    /// redirect points elsewhere.
    pub nodes: Vec<SocketAddr>,
    /// The cluster id every node must carry (checked in the hello).
    pub cluster_id: String,
    /// The CA to trust and this client's certificate and key.
    pub identity: TlsIdentity,
    /// How long one operation may take, redirects, connection attempts and
    /// waiting out an election included. A write still unanswered then is
    /// reported as [`Error::Timeout`] (outcome unknown); one that was never
    /// sent, as [`Error::Unavailable`].
    pub request_timeout: Duration,
    /// How long to wait for a connection before a node counts as unreachable.
    pub connect_timeout: Duration,
    /// How many leader redirects one operation follows before giving up.
    pub max_redirects: usize,
    /// Frame size limit and QUIC timers. QUIC gets no reset from a killed
    /// process. A request unanswered for 50 ms has the node's address
    /// probed (every 100 ms while it waits): if the node's host refuses the
    /// probe, its process is gone and the request fails at once with
    /// [`Error::ConnectionLost`]. Otherwise (a paused node, a partition, a
    /// dead host) the idle timeout is how fast a dead node is noticed: the
    /// request fails once the connection has been silent this long
    /// (keep-alives keep a live node's connection busy).
    pub transport: TransportConfig,
    /// Leaderless: quorums for every get, put, delete, versioned request,
    /// increment and set operation (each is sent as a
    /// [`ClientRequest::WithQuorum`]); `None` (the default) sends them as
    /// they are. A node of another mode refuses requests with quorums.
    pub quorum: Option<QuorumOverride>,
}

impl ClientConfig {
    /// A configuration with default timeouts: 5 s per operation, 2 s per
    /// connection attempt, 3 redirects, and a dead node noticed after 300 ms
    /// of silence (keep-alive every 100 ms): about as fast as a
    /// leader-follower cluster notices a dead leader (its default election
    /// timeout is 300-600 ms), so the client is not what failover waits for.
    /// A node whose process died (its host refusing probes) is noticed
    /// within about 100 ms, as the cluster notices a crashed leader.
    pub fn new(
        nodes: Vec<SocketAddr>,
        cluster_id: impl Into<String>,
        identity: TlsIdentity,
    ) -> Self {
        ClientConfig {
            nodes,
            cluster_id: cluster_id.into(),
            identity,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_redirects: 3,
            transport: TransportConfig {
                idle_timeout: Duration::from_millis(300),
                keep_alive: Duration::from_millis(100),
                ..TransportConfig::default()
            },
            quorum: None,
        }
    }
}

/// The outcome of a compare-and-set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value matched and the new value was written.
    Swapped {
        /// Where the write landed in the log.
        position: Position,
    },
    /// The value did not match; nothing was written.
    Mismatch {
        /// The value the node held (`None`: the key was absent).
        current: Option<Vec<u8>>,
    },
}

/// A value read together with the log position it reflects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// The value, or `None` when the key is absent.
    pub value: Option<Vec<u8>>,
    /// The position of the version read; pass it as
    /// [`ReadConsistency::Session`] to read at least this fresh later.
    pub position: Position,
    /// The node that answered.
    pub node: SocketAddr,
}

/// A multi-leader read: every concurrent value and the tokens to go on
/// with ([`Client::get_versioned`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionedRead {
    /// What the node holds.
    pub value: VersionedValue,
    /// The session token: pass it as `after` to read at least this fresh
    /// on any node (read-your-writes, monotonic reads).
    pub session: Vec<u8>,
    /// The node that answered.
    pub node: SocketAddr,
}

/// One leaderless node's own copy of a key ([`Client::local_read_of`]), a
/// diagnostic read that coordinates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRead {
    /// The key's replicas (its preference list, primary first).
    pub replicas: Vec<String>,
    /// The asked node's copy ([`VersionedValue::Absent`]: none), or `None`
    /// when it is not one of `replicas`.
    pub value: Option<VersionedValue>,
}

/// A multi-leader write that took effect ([`Client::put_versioned`] and
/// the counter and set operations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionedWrite {
    /// The node that took it.
    pub origin: String,
    /// Its sequence number there.
    pub seq: u64,
    /// Under siblings, the key's context after the write: a later write
    /// with it supersedes this one.
    pub context: Option<Vec<u8>>,
    /// The session token after the write.
    pub session: Vec<u8>,
    /// The node that answered.
    pub node: SocketAddr,
}

/// An async client for the client protocol. Cheap to share behind `Arc`;
/// concurrent calls run on separate QUIC streams of one connection.
pub struct Client {
    connector: Connector,
    nodes: Vec<SocketAddr>,
    max_redirects: usize,
    request_timeout: Duration,
    quorum: Option<QuorumOverride>,
    /// The node requests go to first (the last one that answered, or the
    /// leader a redirect named) and the nodes that recently failed.
    routing: Mutex<Routing>,
}

impl Client {
    /// Creates the QUIC endpoint and connects to the first reachable node.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        let client = Client::new(config)?;
        let mut failures = Vec::new();
        for &node in &client.nodes {
            match client.connector.connection(node).await {
                Ok(_) => {
                    client.prefer(node);
                    return Ok(client);
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(Error::Unavailable {
            message: failures.join("; "),
        })
    }

    /// Creates the client without connecting; the first request connects.
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        let first = *config.nodes.first().ok_or(Error::NoNodes)?;
        let endpoint = mimeo_wire::client_endpoint(&config.identity, &config.transport)
            .map_err(|e| Error::setup("creating the client's QUIC endpoint", e))?;
        Ok(Client {
            connector: Connector::new(
                endpoint,
                config.cluster_id,
                Protocol::Client,
                config.transport,
                config.connect_timeout,
                config.request_timeout,
            ),
            nodes: config.nodes,
            max_redirects: config.max_redirects,
            request_timeout: config.request_timeout,
            quorum: config.quorum,
            routing: Mutex::new(Routing {
                preferred: first,
                suspects: HashMap::new(),
            }),
        })
    }

    /// Reads a key with the node's default consistency.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.get_with(key, ReadConsistency::Default).await?.value)
    }

    /// Reads a key with an explicit consistency level.
    pub async fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        consistency: ReadConsistency,
    ) -> Result<ReadResult, Error> {
        let request = ClientRequest::Get {
            key: key.as_ref().to_vec(),
            consistency,
        };
        match self.request(&request, true).await? {
            (node, ClientResponse::Value { value, position }) => Ok(ReadResult {
                value,
                position,
                node,
            }),
            (node, other) => Err(unexpected(node, "get", &other)),
        }
    }

    /// Writes a value; returns where it landed in the log.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Position, Error> {
        self.put_with(key, value, None).await
    }

    /// Writes a value, acknowledged once `ack` is met (`None`: the
    /// cluster's ack mode). For example `Some(WriteAck::All)` for one write
    /// that must be on every replica before the call returns.
    pub async fn put_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        ack: Option<WriteAck>,
    ) -> Result<Position, Error> {
        let request = ClientRequest::Put {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            ack,
        };
        self.write(&request, "put").await
    }

    /// Deletes a key (deleting an absent key succeeds).
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<Position, Error> {
        self.delete_with(key, None).await
    }

    /// Deletes a key, acknowledged once `ack` is met (`None`: the cluster's
    /// ack mode).
    pub async fn delete_with(
        &self,
        key: impl AsRef<[u8]>,
        ack: Option<WriteAck>,
    ) -> Result<Position, Error> {
        let request = ClientRequest::Delete {
            key: key.as_ref().to_vec(),
            ack,
        };
        self.write(&request, "delete").await
    }

    /// Writes `new` only if the current value equals `expected` (`None`: the
    /// key must be absent).
    pub async fn cas(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<impl AsRef<[u8]>>,
        new: impl AsRef<[u8]>,
    ) -> Result<CasOutcome, Error> {
        self.cas_with(key, expected, new, None).await
    }

    /// A compare-and-set whose write is acknowledged once `ack` is met
    /// (`None`: the cluster's ack mode).
    pub async fn cas_with(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<impl AsRef<[u8]>>,
        new: impl AsRef<[u8]>,
        ack: Option<WriteAck>,
    ) -> Result<CasOutcome, Error> {
        let request = ClientRequest::Cas {
            key: key.as_ref().to_vec(),
            expected: expected.map(|e| e.as_ref().to_vec()),
            new: new.as_ref().to_vec(),
            ack,
        };
        match self.request(&request, false).await? {
            (_, ClientResponse::Written { position }) => Ok(CasOutcome::Swapped { position }),
            (_, ClientResponse::CasMismatch { current }) => Ok(CasOutcome::Mismatch { current }),
            (node, other) => Err(unexpected(node, "cas", &other)),
        }
    }

    /// Multi-leader: reads a key from the node with every concurrent value
    /// and its context. With `after` (a session token from an earlier
    /// reply) the node answers once it has applied it, waiting at most
    /// `timeout_ms` (`None`: the node's setting); otherwise the request
    /// fails as unavailable (nothing was done). A node of another mode
    /// refuses it as a bad request.
    pub async fn get_versioned(
        &self,
        key: impl AsRef<[u8]>,
        after: Option<Vec<u8>>,
        timeout_ms: Option<u64>,
    ) -> Result<VersionedRead, Error> {
        let request = ClientRequest::GetVersioned {
            key: key.as_ref().to_vec(),
            after,
            timeout_ms,
        };
        match self.request(&request, true).await? {
            (node, ClientResponse::Versioned { value, session }) => Ok(VersionedRead {
                value,
                session,
                node,
            }),
            (node, other) => Err(unexpected(node, "versioned get", &other)),
        }
    }

    /// Multi-leader: writes `value` (`None`: deletes) superseding exactly
    /// the values the read that returned `context` saw (`None`: a blind
    /// write, kept beside every value already there).
    pub async fn put_versioned(
        &self,
        key: impl AsRef<[u8]>,
        value: Option<Vec<u8>>,
        context: Option<Vec<u8>>,
        ack: Option<WriteAck>,
    ) -> Result<VersionedWrite, Error> {
        let request = ClientRequest::PutVersioned {
            key: key.as_ref().to_vec(),
            value,
            context,
            ack,
        };
        self.write_versioned(&request, "versioned put").await
    }

    /// Multi-leader: adds `delta` (may be negative) to a counter; a
    /// concurrent increment on another node is never lost.
    pub async fn increment(
        &self,
        key: impl AsRef<[u8]>,
        delta: i64,
        ack: Option<WriteAck>,
    ) -> Result<VersionedWrite, Error> {
        let request = ClientRequest::Increment {
            key: key.as_ref().to_vec(),
            delta,
            ack,
        };
        self.write_versioned(&request, "increment").await
    }

    /// Multi-leader: adds `element` to a set (a concurrent remove on
    /// another node does not undo it: adds win).
    pub async fn set_add(
        &self,
        key: impl AsRef<[u8]>,
        element: impl AsRef<[u8]>,
        ack: Option<WriteAck>,
    ) -> Result<VersionedWrite, Error> {
        let request = ClientRequest::SetAdd {
            key: key.as_ref().to_vec(),
            element: element.as_ref().to_vec(),
            ack,
        };
        self.write_versioned(&request, "set add").await
    }

    /// Multi-leader: removes `element` from a set (the adds the node has
    /// seen).
    pub async fn set_remove(
        &self,
        key: impl AsRef<[u8]>,
        element: impl AsRef<[u8]>,
        ack: Option<WriteAck>,
    ) -> Result<VersionedWrite, Error> {
        let request = ClientRequest::SetRemove {
            key: key.as_ref().to_vec(),
            element: element.as_ref().to_vec(),
            ack,
        };
        self.write_versioned(&request, "set remove").await
    }

    async fn write_versioned(
        &self,
        request: &ClientRequest,
        op: &str,
    ) -> Result<VersionedWrite, Error> {
        match self.request(request, false).await? {
            (
                node,
                ClientResponse::WrittenVersioned {
                    origin,
                    seq,
                    context,
                    session,
                },
            ) => Ok(VersionedWrite {
                origin,
                seq,
                context,
                session,
                node,
            }),
            (node, other) => Err(unexpected(node, op, &other)),
        }
    }

    /// The status of the node requests currently go to.
    pub async fn status(&self) -> Result<NodeStatus, Error> {
        let node = self.preferred_node();
        self.status_of(node).await
    }

    /// Leaderless: the ring, hints and anti-entropy of one node.
    pub async fn leaderless_status_of(&self, node: SocketAddr) -> Result<LeaderlessStatus, Error> {
        match self
            .connector
            .exchange(node, &ClientRequest::LeaderlessStatus)
            .await?
        {
            ClientResponse::LeaderlessStatus(status) => Ok(status),
            ClientResponse::Error { kind, message } => Err(Error::Node {
                node,
                kind,
                message,
            }),
            other => Err(unexpected(node, "leaderless status", &other)),
        }
    }

    /// Multi-leader: the applied vector, lag per origin, tombstones,
    /// siblings and clock refusals of one node.
    pub async fn multi_leader_status_of(
        &self,
        node: SocketAddr,
    ) -> Result<MultiLeaderStatus, Error> {
        match self
            .connector
            .exchange(node, &ClientRequest::MultiLeaderStatus)
            .await?
        {
            ClientResponse::MultiLeaderStatus(status) => Ok(status),
            ClientResponse::Error { kind, message } => Err(Error::Node {
                node,
                kind,
                message,
            }),
            other => Err(unexpected(node, "multi-leader status", &other)),
        }
    }

    /// Leaderless, diagnostic: node `node`'s own copy of `key`, read from
    /// its local state without a quorum or read repair, or word that it is
    /// not one of the key's replicas (naming them). For convergence checks
    /// (every replica's copy after a heal); applications read with
    /// [`Client::get`] or [`Client::get_versioned`], which coordinate.
    pub async fn local_read_of(
        &self,
        node: SocketAddr,
        key: impl AsRef<[u8]>,
    ) -> Result<LocalRead, Error> {
        let request = ClientRequest::LocalRead {
            key: key.as_ref().to_vec(),
        };
        match self.connector.exchange(node, &request).await? {
            ClientResponse::LocalRead { replicas, value } => Ok(LocalRead { replicas, value }),
            ClientResponse::Error { kind, message } => Err(Error::Node {
                node,
                kind,
                message,
            }),
            other => Err(unexpected(node, "local read", &other)),
        }
    }

    /// The status of one particular node (no redirects).
    pub async fn status_of(&self, node: SocketAddr) -> Result<NodeStatus, Error> {
        match self
            .connector
            .exchange(node, &ClientRequest::Status)
            .await?
        {
            ClientResponse::Status(status) => Ok(status),
            ClientResponse::Error { kind, message } => Err(Error::Node {
                node,
                kind,
                message,
            }),
            other => Err(unexpected(node, "status", &other)),
        }
    }

    /// The node requests go to first.
    pub fn preferred_node(&self) -> SocketAddr {
        self.routing().preferred
    }

    fn prefer(&self, node: SocketAddr) {
        self.routing().preferred = node;
    }

    async fn write(&self, request: &ClientRequest, op: &str) -> Result<Position, Error> {
        match self.request(request, false).await? {
            (_, ClientResponse::Written { position }) => Ok(position),
            (node, other) => Err(unexpected(node, op, &other)),
        }
    }

    /// Sends a request within the request timeout: tries nodes in
    /// [`try_order`], follows leader hints, and while the cluster has no
    /// leader (or names one this client has just seen fail) waits with a
    /// capped backoff and asks again. Nothing is retried once it may have
    /// been applied, except a `retry_lost` request (a read) whose
    /// connection broke. Node errors become [`Error::Node`].
    async fn request(
        &self,
        request: &ClientRequest,
        retry_lost: bool,
    ) -> Result<(SocketAddr, ClientResponse), Error> {
        let wrapped;
        let request = match (self.quorum, request) {
            (Some(quorum), r)
                if !matches!(r, ClientRequest::Status | ClientRequest::Cas { .. }) =>
            {
                wrapped = ClientRequest::WithQuorum {
                    quorum,
                    request: Box::new(r.clone()),
                };
                &wrapped
            }
            _ => request,
        };
        let deadline = Instant::now() + self.request_timeout;
        let mut hint: Option<SocketAddr> = None;
        let mut redirects = 0;
        let mut pause = RETRY_PAUSE_MIN;
        let mut waiting_for: String;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = match hint.take() {
                Some(node) => self.exchange_with(node, request, remaining).await,
                None => self.exchange_with_fallback(request, remaining).await,
            };
            let (node, response) = match result {
                Ok(answer) => answer,
                Err(Error::ConnectionLost { node, message })
                    if retry_lost && Instant::now() < deadline =>
                {
                    tracing::debug!(%node, %message, "connection lost; asking another node");
                    continue;
                }
                Err(e) => return Err(e),
            };
            match response {
                ClientResponse::Redirect { leader } => {
                    let named = leader.as_deref().and_then(|l| l.parse::<SocketAddr>().ok());
                    match named {
                        Some(leader) if leader != node && !self.is_suspect(leader) => {
                            redirects += 1;
                            if redirects > self.max_redirects {
                                return Err(Error::Unavailable {
                                    message: format!(
                                        "gave up after {} leader redirects (last: {node} named {leader})",
                                        self.max_redirects
                                    ),
                                });
                            }
                            tracing::debug!(from = %node, to = %leader, "following leader hint");
                            self.prefer(leader);
                            hint = Some(leader);
                            continue;
                        }
                        Some(leader) => {
                            waiting_for = format!(
                                "{node} names {leader} as leader, which just failed to answer"
                            );
                        }
                        None => {
                            waiting_for = format!(
                                "{node} is not the leader and knows no leader (hint: {leader:?})"
                            );
                        }
                    }
                }
                ClientResponse::Error { kind, message } => {
                    return Err(Error::Node {
                        node,
                        kind,
                        message,
                    })
                }
                other => return Ok((node, other)),
            }
            // No usable leader yet: an election is probably under way.
            let now = Instant::now();
            if now + pause >= deadline {
                return Err(Error::Unavailable {
                    message: format!("no leader within {:?}: {waiting_for}", self.request_timeout),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }

    /// One exchange with `node`, recording whether it answered.
    async fn exchange_with(
        &self,
        node: SocketAddr,
        request: &ClientRequest,
        timeout: Duration,
    ) -> Result<(SocketAddr, ClientResponse), Error> {
        match self.connector.exchange_within(node, request, timeout).await {
            Ok(response) => {
                self.answered(node);
                Ok((node, response))
            }
            Err(e) => {
                if matches!(
                    e,
                    Error::Unavailable { .. }
                        | Error::ConnectionLost { .. }
                        | Error::Timeout { .. }
                ) {
                    self.suspect(node);
                }
                Err(e)
            }
        }
    }

    /// Tries the nodes in [`try_order`] as long as the failure is that no
    /// connection could be made (nothing was sent); the first node that
    /// answers becomes the preferred one.
    async fn exchange_with_fallback(
        &self,
        request: &ClientRequest,
        timeout: Duration,
    ) -> Result<(SocketAddr, ClientResponse), Error> {
        let started = Instant::now();
        let order = {
            let routing = self.routing();
            try_order(routing.preferred, &self.nodes, &routing.suspects, started)
        };
        let mut failures = Vec::new();
        for node in order {
            let remaining = timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            match self.exchange_with(node, request, remaining).await {
                Ok(answer) => {
                    self.prefer(node);
                    return Ok(answer);
                }
                Err(Error::Unavailable { message }) => failures.push(message),
                Err(other) => return Err(other),
            }
        }
        if failures.is_empty() {
            failures.push(format!("no time left within {timeout:?}"));
        }
        Err(Error::Unavailable {
            message: failures.join("; "),
        })
    }

    fn routing(&self) -> std::sync::MutexGuard<'_, Routing> {
        // Routing holds hints only; a panicking holder cannot break them.
        self.routing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_suspect(&self, node: SocketAddr) -> bool {
        self.routing()
            .suspects
            .get(&node)
            .is_some_and(|&since| since.elapsed() < SUSPECT_FOR)
    }

    fn suspect(&self, node: SocketAddr) {
        self.routing().suspects.insert(node, Instant::now());
    }

    fn answered(&self, node: SocketAddr) {
        self.routing().suspects.remove(&node);
    }
}

/// How long a node that failed to answer (no connection, connection lost,
/// or timeout) is tried only after every other node: long enough to cover
/// an election, short enough that a node back from a pause is soon used
/// again.
const SUSPECT_FOR: Duration = Duration::from_secs(1);

/// The first pause while waiting for a leader to be elected; it doubles up
/// to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(10);

/// The longest pause between two attempts to find a leader: it adds up to
/// this much to a failover, and costs each waiting request at most 20 small
/// requests a second.
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(50);

/// Where requests go: the preferred node and the nodes that recently failed
/// to answer, with the instant they did.
struct Routing {
    preferred: SocketAddr,
    suspects: HashMap<SocketAddr, Instant>,
}

/// The order in which to try nodes at `now`: the preferred node, then the
/// other configured nodes in their order, except that nodes suspected
/// within the last [`SUSPECT_FOR`] come last, the longest-suspected first
/// (the likeliest to be back).
fn try_order(
    preferred: SocketAddr,
    nodes: &[SocketAddr],
    suspects: &HashMap<SocketAddr, Instant>,
    now: Instant,
) -> Vec<SocketAddr> {
    let suspected_at = |node: &SocketAddr| {
        suspects
            .get(node)
            .copied()
            .filter(|&since| now.saturating_duration_since(since) < SUSPECT_FOR)
    };
    let mut order: Vec<SocketAddr> = std::iter::once(preferred)
        .chain(nodes.iter().copied().filter(|&n| n != preferred))
        .collect();
    // A stable sort keeps the preferred-then-configured order among equals;
    // `None` (not suspect) sorts before every `Some`.
    order.sort_by_key(suspected_at);
    order
}

fn unexpected(node: SocketAddr, op: &str, response: &ClientResponse) -> Error {
    Error::Protocol {
        node,
        message: format!("{op} got {response:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_preferred_node_goes_first_then_the_configured_order() {
        let nodes = [addr(1), addr(2), addr(3)];
        let order = try_order(addr(2), &nodes, &HashMap::new(), Instant::now());
        assert_eq!(order, [addr(2), addr(1), addr(3)]);
    }

    #[test]
    fn a_node_that_just_failed_is_tried_last_even_when_preferred() {
        // The leader was killed: its connection was lost a moment ago. The
        // next request must not spend a connect timeout on it first.
        let nodes = [addr(1), addr(2), addr(3)];
        let now = Instant::now();
        let suspects = HashMap::from([(addr(1), now)]);
        assert_eq!(
            try_order(addr(1), &nodes, &suspects, now),
            [addr(2), addr(3), addr(1)]
        );
    }

    #[test]
    fn suspects_are_tried_longest_suspected_first_and_forgiven_after_a_while() {
        let nodes = [addr(1), addr(2), addr(3)];
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(300);
        let suspects = HashMap::from([(addr(1), later), (addr(3), t0)]);
        assert_eq!(
            try_order(addr(1), &nodes, &suspects, later),
            [addr(2), addr(3), addr(1)]
        );
        // Once SUSPECT_FOR has passed, node 3 is an ordinary node again.
        let much_later = t0 + SUSPECT_FOR + Duration::from_millis(1);
        assert_eq!(
            try_order(addr(1), &nodes, &suspects, much_later),
            [addr(2), addr(3), addr(1)]
        );
        let all_forgiven = later + SUSPECT_FOR;
        assert_eq!(
            try_order(addr(1), &nodes, &suspects, all_forgiven),
            [addr(1), addr(2), addr(3)]
        );
    }
}
