//! Connections to nodes, cached per address, and one request/response
//! exchange with the definite/unknown distinction drawn at the right point.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use mimeo_wire::{Probe, Protocol, TransportConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Error;

/// Opens (and reuses) connections speaking one protocol.
pub(crate) struct Connector {
    endpoint: quinn::Endpoint,
    cluster_id: String,
    protocol: Protocol,
    transport: TransportConfig,
    connect_timeout: Duration,
    request_timeout: Duration,
    connections: Mutex<HashMap<SocketAddr, quinn::Connection>>,
    /// Connection attempts under way, one per node: requests that need a
    /// node at the same moment (many of them, right after a failover)
    /// share one handshake and its outcome instead of each making its own.
    attempts: Mutex<HashMap<SocketAddr, Attempt>>,
    /// When each node's address was last probed, so that many requests
    /// waiting on one node share a probe.
    probed: Mutex<HashMap<SocketAddr, Instant>>,
}

/// A request that has had no answer for this long has its node's address
/// probed ([`mimeo_wire::probe`]), and again every twice as long while it
/// waits. A refused probe means the node's process is gone: the
/// connection is dropped at once, instead of at the QUIC idle timeout,
/// and the client moves on to the other nodes.
const PROBE_AFTER: Duration = Duration::from_millis(50);

/// Locks one of the connector's maps. They hold no invariant a panicking
/// holder could break, so a poisoned lock is taken over.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection attempt, shared by everyone who needs the node while it
/// runs: its connection, or why there is none.
type Attempt = Arc<OnceCell<Result<quinn::Connection, String>>>;

impl Connector {
    pub(crate) fn new(
        endpoint: quinn::Endpoint,
        cluster_id: String,
        protocol: Protocol,
        transport: TransportConfig,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        Connector {
            endpoint,
            cluster_id,
            protocol,
            transport,
            connect_timeout,
            request_timeout,
            connections: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
            probed: Mutex::new(HashMap::new()),
        }
    }

    /// A live connection to `node`, reusing a cached one. Failing here is
    /// definite: nothing has been sent yet.
    pub(crate) async fn connection(&self, node: SocketAddr) -> Result<quinn::Connection, Error> {
        self.connection_within(node, self.connect_timeout).await
    }

    /// Like [`Connector::connection`], waiting at most `connect_timeout`.
    async fn connection_within(
        &self,
        node: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<quinn::Connection, Error> {
        if let Some(conn) = self.cached(node) {
            return Ok(conn);
        }
        let attempt = Arc::clone(
            lock(&self.attempts)
                .entry(node)
                .or_insert_with(|| Arc::new(OnceCell::new())),
        );
        // The first caller connects; the others wait for its outcome. If
        // the one connecting gives up (its own deadline), a waiter carries
        // on with the attempt.
        let outcome = attempt.get_or_init(|| async {
            let connect = mimeo_wire::connect(
                &self.endpoint,
                node,
                &self.cluster_id,
                self.protocol,
                &self.transport,
            );
            let outcome = match connect.await {
                Ok((conn, _node_id)) => {
                    lock(&self.connections).insert(node, conn.clone());
                    Ok(conn)
                }
                Err(e) => Err(format!("{node}: {e}")),
            };
            // Later callers start afresh (after a failure, or once this
            // connection is gone).
            let mut attempts = lock(&self.attempts);
            if attempts
                .get(&node)
                .is_some_and(|a| Arc::ptr_eq(a, &attempt))
            {
                attempts.remove(&node);
            }
            outcome
        });
        match tokio::time::timeout(connect_timeout, outcome).await {
            Ok(Ok(conn)) => Ok(conn.clone()),
            Ok(Err(message)) => Err(Error::Unavailable {
                message: message.clone(),
            }),
            Err(_) => Err(Error::Unavailable {
                message: format!(
                    "{node}: no connection within {connect_timeout:?} (is the node running?)"
                ),
            }),
        }
    }

    fn cached(&self, node: SocketAddr) -> Option<quinn::Connection> {
        let mut connections = lock(&self.connections);
        match connections.get(&node) {
            Some(conn) if conn.close_reason().is_none() => Some(conn.clone()),
            Some(_) => {
                connections.remove(&node);
                None
            }
            None => None,
        }
    }

    /// Closes `conn`, telling its other users `reason`, and removes it from
    /// the cache (unless another request already replaced it).
    fn forget(&self, node: SocketAddr, conn: &quinn::Connection, reason: &str) {
        let mut connections = lock(&self.connections);
        if connections
            .get(&node)
            .is_some_and(|cached| cached.stable_id() == conn.stable_id())
        {
            connections.remove(&node);
        }
        conn.close(0u32.into(), reason.as_bytes());
    }

    /// Whether this waiter should probe `node` now: concurrent waiters on
    /// one node take turns (one probe per [`PROBE_AFTER`]), and learn of a
    /// refusal another found from the connection closing under them.
    fn claim_probe(&self, node: SocketAddr) -> bool {
        let mut probed = lock(&self.probed);
        let now = Instant::now();
        let due = probed
            .get(&node)
            .is_none_or(|&last| now.duration_since(last) >= PROBE_AFTER);
        if due {
            probed.insert(node, now);
        }
        due
    }

    /// Sends one request to `node` and reads its answer, within the request
    /// timeout.
    pub(crate) async fn exchange<Req, Resp>(
        &self,
        node: SocketAddr,
        req: &Req,
    ) -> Result<Resp, Error>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        self.exchange_within(node, req, self.request_timeout).await
    }

    /// Sends one request to `node` and reads its answer within `timeout`
    /// (connecting first, if needed, within the smaller of the connect
    /// timeout and `timeout`).
    pub(crate) async fn exchange_within<Req, Resp>(
        &self,
        node: SocketAddr,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, Error>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let started = tokio::time::Instant::now();
        let conn = self
            .connection_within(node, self.connect_timeout.min(timeout))
            .await?;
        let timeout = timeout.saturating_sub(started.elapsed());
        let max_frame = self.transport.max_frame;
        let exchange = async {
            // Opening a stream sends nothing yet: a failure here is definite.
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| Error::Unavailable {
                message: format!("{node}: {e}"),
            })?;
            let lost = |e: mimeo_wire::FrameError| Error::ConnectionLost {
                node,
                message: e.to_string(),
            };
            mimeo_wire::write_frame(&mut send, req, max_frame)
                .await
                .map_err(lost)?;
            send.finish().map_err(|e| Error::ConnectionLost {
                node,
                message: e.to_string(),
            })?;
            mimeo_wire::read_frame::<Resp>(&mut recv, max_frame)
                .await
                .map_err(|e| match e {
                    mimeo_wire::FrameError::Malformed(message) => Error::Protocol { node, message },
                    other => lost(other),
                })
        };
        // A broken connection is not reused: `cached` checks its close reason.
        let received_before = conn.stats().udp_rx.datagrams;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut exchange = std::pin::pin!(exchange);
        let mut probe_at = tokio::time::Instant::now() + PROBE_AFTER;
        // One timer per wait (the deadline or the next probe, whichever
        // comes first), so an answer in time costs no more than before.
        loop {
            tokio::select! {
                result = &mut exchange => return result,
                () = tokio::time::sleep_until(probe_at.min(deadline)) => {}
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            if self.claim_probe(node) {
                let wait = PROBE_AFTER.min(deadline - now);
                let refused = tokio::select! {
                    result = &mut exchange => return result,
                    found = mimeo_wire::probe(node, wait) => matches!(found, Ok(Probe::Refused)),
                };
                if refused {
                    let message = "the node's process is gone (its address refuses datagrams)";
                    self.forget(node, &conn, message);
                    return Err(Error::ConnectionLost {
                        node,
                        message: message.into(),
                    });
                }
            }
            probe_at = tokio::time::Instant::now() + PROBE_AFTER;
        }
        // Not one datagram from the node during the whole wait: it is
        // probably gone (killed, restarted with a new endpoint that ignores
        // this connection, or paused), and QUIC would only notice at the
        // idle timeout. Drop the connection so the next request connects
        // afresh; if the node is still unreachable, that attempt fails
        // definitely, before anything is sent.
        if conn.stats().udp_rx.datagrams == received_before {
            self.forget(node, &conn, "no answer; reconnecting");
        }
        Err(Error::Timeout {
            node,
            after: timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use mimeo_wire::{
        accept_hello, client_endpoint, generate_certs, server_endpoint, CertRequest, TlsIdentity,
    };

    use super::*;

    const CLUSTER: &str = "connector-test";

    fn transport() -> TransportConfig {
        TransportConfig::default()
    }

    /// Certificates for node n1 and client "c" in a fresh directory.
    fn certs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let request = CertRequest {
            nodes: vec!["n1".into()],
            clients: vec!["c".into()],
            admins: vec![],
        };
        generate_certs(dir.path(), &request, false).unwrap();
        dir
    }

    fn connector(dir: &Path, connect_timeout: Duration) -> Arc<Connector> {
        let identity = TlsIdentity::from_dir(dir, "client-c").unwrap();
        let endpoint = client_endpoint(&identity, &transport()).unwrap();
        Arc::new(Connector::new(
            endpoint,
            CLUSTER.into(),
            Protocol::Client,
            transport(),
            connect_timeout,
            Duration::from_secs(5),
        ))
    }

    /// `n` concurrent `connection` calls to `node`, with how long they took.
    async fn connect_many(
        connector: &Arc<Connector>,
        node: SocketAddr,
        n: usize,
    ) -> (Vec<Result<quinn::Connection, Error>>, Duration) {
        let started = Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..n {
            let connector = Arc::clone(connector);
            calls.spawn(async move { connector.connection(node).await });
        }
        let results = calls.join_all().await;
        (results, started.elapsed())
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_handshake() {
        let dir = certs();
        let identity = TlsIdentity::from_dir(dir.path(), "node-n1").unwrap();
        let server =
            server_endpoint("127.0.0.1:0".parse().unwrap(), &identity, &transport()).unwrap();
        let node = server.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Some(incoming) = server.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    let _ = accept_hello(&conn, CLUSTER, "n1", &transport()).await;
                    conn.closed().await;
                });
            }
        });
        let connector = connector(dir.path(), Duration::from_secs(5));
        let (results, _) = connect_many(&connector, node, 16).await;
        let ids: Vec<usize> = results
            .into_iter()
            .map(|r| r.expect("connected").stable_id())
            .collect();
        assert!(ids.iter().all(|&id| id == ids[0]), "{ids:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // The next caller reuses it.
        let again = connector.connection(node).await.unwrap();
        assert_eq!(again.stable_id(), ids[0]);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_callers_of_a_silent_node_fail_together_not_one_after_another() {
        let dir = certs();
        // A bound UDP socket that never answers: every handshake hangs.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let node = silent.local_addr().unwrap();
        let timeout = Duration::from_millis(300);
        let connector = connector(dir.path(), timeout);
        let (results, took) = connect_many(&connector, node, 16).await;
        for result in results {
            assert!(
                matches!(result, Err(Error::Unavailable { .. })),
                "{result:?}"
            );
        }
        assert!(took < timeout * 3, "16 callers took {took:?}");
        // A later caller tries again (nothing is cached from a failure).
        let started = Instant::now();
        assert!(connector.connection(node).await.is_err());
        assert!(started.elapsed() >= timeout / 2);
    }
}
