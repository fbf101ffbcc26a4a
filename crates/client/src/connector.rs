//! Connections to nodes, cached per address, and one request/response
//! exchange with the definite/unknown distinction drawn at the right point.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
        let connect = mimeo_wire::connect(
            &self.endpoint,
            node,
            &self.cluster_id,
            self.protocol,
            &self.transport,
        );
        let conn = match tokio::time::timeout(connect_timeout, connect).await {
            Ok(Ok((conn, _node_id))) => conn,
            Ok(Err(e)) => {
                return Err(Error::Unavailable {
                    message: format!("{node}: {e}"),
                })
            }
            Err(_) => {
                return Err(Error::Unavailable {
                    message: format!(
                        "{node}: no connection within {connect_timeout:?} (is the node running?)"
                    ),
                })
            }
        };
        self.lock().insert(node, conn.clone());
        Ok(conn)
    }

    fn cached(&self, node: SocketAddr) -> Option<quinn::Connection> {
        let mut connections = self.lock();
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
        let mut connections = self.lock();
        if connections
            .get(&node)
            .is_some_and(|cached| cached.stable_id() == conn.stable_id())
        {
            connections.remove(&node);
        }
        conn.close(0u32.into(), reason.as_bytes());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, quinn::Connection>> {
        // The map holds no invariant a panicking holder could break.
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether this waiter should probe `node` now: concurrent waiters on
    /// one node take turns (one probe per [`PROBE_AFTER`]), and learn of a
    /// refusal another found from the connection closing under them.
    fn claim_probe(&self, node: SocketAddr) -> bool {
        let mut probed = self
            .probed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
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
