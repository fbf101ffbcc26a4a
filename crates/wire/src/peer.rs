//! The peer bus: best-effort, bounded, authenticated messaging between the
//! nodes of a cluster, for the replicators.
//!
//! The design is documented on [`PeerBus`], where readers of the public
//! API find it.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use crate::certs::Role;
use crate::frame::{encode_frame, read_frame, FrameError, FRAME_HEADER_LEN};
use crate::message::{PeerMessage, Protocol};
use crate::transport::{codes, connect, peer_role, TransportConfig, WireError};

/// The most bytes of queued frames one write to a peer's stream carries.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Streams read at once on one incoming connection. A bus sends on one
/// stream per connection; a peer opening more gets the extras stopped, so
/// that it cannot make this node allocate a maximum frame per stream.
pub(crate) const MAX_STREAMS_PER_CONNECTION: usize = 4;

/// Bounds and timers of a [`PeerBus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerBusConfig {
    /// Frames queued per peer before the oldest are dropped.
    pub queue_messages: usize,
    /// Bytes of frames queued per peer before the oldest are dropped. One
    /// frame of the transport's maximum size always fits, whatever this
    /// says.
    pub queue_bytes: usize,
    /// Received messages waiting for the consumer before new ones are
    /// dropped.
    pub inbound_capacity: usize,
    /// How long one attempt to connect (QUIC handshake and hello) may take.
    pub connect_timeout: Duration,
    /// The wait after the first failure; it doubles after each further
    /// failure.
    pub backoff_min: Duration,
    /// The longest wait between two attempts. Each wait is drawn between
    /// half the current backoff and all of it.
    pub backoff_max: Duration,
}

impl Default for PeerBusConfig {
    fn default() -> Self {
        PeerBusConfig {
            queue_messages: 4096,
            queue_bytes: 16 * 1024 * 1024,
            inbound_capacity: 4096,
            connect_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// The largest payload a node named `from` can send in one
/// [`PeerMessage`] when frames are at most `max_frame` bytes: the frame
/// less the message's envelope (the sender's name and the payload's
/// length, as postcard writes them).
pub fn max_peer_payload(max_frame: usize, from: &str) -> usize {
    // A varint length takes at most 5 bytes for a u32; `from` its length
    // and its bytes.
    max_frame.saturating_sub(from.len() + 5 + 5)
}

/// Errors of the peer bus. A full queue is not one: the oldest messages
/// give way and are counted in [`PeerStats::dropped`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The message is addressed to a node that is not a configured peer.
    #[error("node {to} is not a peer of node {me}; peers are {peers:?}")]
    UnknownPeer {
        /// The addressee.
        to: String,
        /// This node.
        me: String,
        /// The configured peers.
        peers: Vec<String>,
    },
    /// The message does not fit in one frame.
    #[error("a message of {len} bytes for peer {to} exceeds the maximum frame of {max} bytes")]
    TooLarge {
        /// The addressee.
        to: String,
        /// The encoded size.
        len: usize,
        /// The transport's `max_frame`.
        max: usize,
    },
    /// The message could not be encoded (not expected: a [`PeerMessage`]
    /// always encodes).
    #[error("encoding a message for peer {to}: {message}")]
    Encode {
        /// The addressee.
        to: String,
        /// What failed.
        message: String,
    },
    /// The peer list given to [`PeerBus::new`] is unusable.
    #[error("peer list of node {me}: {message}")]
    Config {
        /// This node.
        me: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// What a [`PeerBus`] knows about one peer ([`PeerBus::stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's node id.
    pub node_id: String,
    /// The address the bus connects to (maybe a proxy).
    pub address: SocketAddr,
    /// Whether the outgoing connection is up.
    pub connected: bool,
    /// Frames waiting in the queue.
    pub queued: usize,
    /// Bytes of the frames waiting in the queue.
    pub queued_bytes: usize,
    /// Frames handed to QUIC on the outgoing stream. A frame handed over
    /// just before the connection failed may still be lost.
    pub sent: u64,
    /// Outgoing frames dropped because the queue was full.
    pub dropped: u64,
    /// Outgoing connections established after the first.
    pub reconnects: u64,
    /// Times the peer dialed us while our connection to it looked up and
    /// its previous connection to us was still open: the peer had
    /// restarted, so our connection was to its old process, and the bus
    /// dropped it and dialed afresh (see [`PeerBus::accept`]).
    pub restarts_noticed: u64,
    /// The last outgoing connection failure, if any.
    pub last_error: Option<String>,
    /// Messages from this peer delivered to the receiver.
    pub received: u64,
    /// Messages from this peer dropped because the receiver was full.
    pub received_dropped: u64,
    /// Frames and streams from this peer refused: malformed or oversized
    /// frames, frames claiming to come from another node, and streams
    /// beyond the per-connection limit.
    pub rejected: u64,
}

/// Node-to-node messaging for the replicators: best effort, bounded,
/// authenticated. Dropping the bus stops all its tasks and closes its
/// connections.
///
/// # Shape
///
/// Every node runs one [`PeerBus`]. Messages from node `a` to node `b`
/// travel on a connection that `a` opened to `b` (so two nodes talking both
/// ways use two connections, one per direction):
///
/// - **Outgoing.** [`PeerBus::send`] encodes the message into a frame and
///   appends it to the peer's queue without waiting. One task per peer owns
///   the connection to it: it connects with the [`Protocol::Peer`] hello,
///   checks that the certificate (and the hello) of the node that answered
///   names the expected peer, opens one long-lived unidirectional stream and
///   writes the queued frames on it in order, coalescing what has piled up
///   into writes of up to [`BATCH_BYTES`]. After a failure it reconnects
///   with capped exponential backoff and jitter.
/// - **Incoming.** The node's accept loop hands every connection that said
///   hello with [`Protocol::Peer`] to [`PeerBus::accept`]. The bus reads
///   frames from its unidirectional streams and delivers them to the
///   receiver returned by [`PeerBus::new`].
///
/// One long-lived stream rather than a stream per message: it keeps the
/// sender's order without sequence numbers, costs no stream-opening frames
/// or stream credit per message, and lets small messages share packets. Its
/// price is head-of-line blocking behind a lost packet, which the ordering
/// needs anyway.
///
/// # Best effort, bounded
///
/// Replication protocols retry on their own ticks, so the bus may lose,
/// and never blocks to avoid losing:
///
/// - each peer's queue holds at most [`PeerBusConfig::queue_messages`]
///   frames and [`PeerBusConfig::queue_bytes`] bytes; when a new message
///   does not fit, the **oldest** queued ones are dropped (and counted), so
///   a peer that comes back gets the freshest state first;
/// - the inbound channel holds [`PeerBusConfig::inbound_capacity`] messages;
///   when the consumer lags, new messages are dropped (and counted) instead
///   of stalling the network tasks;
/// - frames being written when a connection fails are lost.
///
/// Order is kept per sender and connection: what `a` sends to `b` arrives
/// in order, with possible gaps, and never duplicated by the bus.
///
/// # Security
///
/// A peer is its certificate, never its address (the harness puts a fault
/// proxy between nodes). An outgoing connection is kept only when the
/// accepting node's certificate is `node:<to>`; an incoming one only when
/// its certificate names a configured peer; and a frame whose `from` is not
/// the node of the certificate it arrived under is dropped with a warning:
/// a node cannot speak for another. A malformed or oversized frame stops
/// its stream with an error code and a log line; the connection and every
/// other stream carry on.
///
/// # Endpoints
///
/// The bus connects through the endpoint given to [`PeerBus::new`], which
/// must have a default client configuration presenting this node's
/// certificate: [`client_endpoint`](crate::client_endpoint) with the node's
/// [`TlsIdentity`](crate::TlsIdentity) does. Incoming connections arrive on
/// the node's server endpoint and are handed over by its accept loop, so
/// the hello is checked in one place for every protocol.
///
/// # Cost
///
/// On loopback, in a release build on a 2-core machine, one link carried
/// about a million 100-byte messages per second, and 265 MB/s of 4 KB
/// messages; encoding in [`PeerBus::send`] is most of the sender's work.
///
/// # Example
///
/// Node `n1` sends to node `n2`, whose accept loop hands peer connections
/// to its bus:
///
/// ```
/// use std::sync::Arc;
/// use mimeo_wire::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("mimeo-peer-doc-{}", std::process::id()));
/// let request = CertRequest { nodes: vec!["n1".into(), "n2".into()], ..Default::default() };
/// generate_certs(&dir, &request, true)?;
/// let transport = TransportConfig::default();
/// let (n1, n2) = (TlsIdentity::from_dir(&dir, "node-n1")?, TlsIdentity::from_dir(&dir, "node-n2")?);
/// let n1_server = server_endpoint("127.0.0.1:0".parse()?, &n1, &transport)?;
/// let n2_server = server_endpoint("127.0.0.1:0".parse()?, &n2, &transport)?;
/// let (n1_addr, n2_addr) = (n1_server.local_addr()?, n2_server.local_addr()?);
///
/// // n2: its bus, and the accept loop every node runs.
/// let (bus2, mut inbox2) = PeerBus::new(
///     client_endpoint(&n2, &transport)?, "n2".into(), vec![("n1".into(), n1_addr)],
///     "demo".into(), transport.clone(),
/// )?;
/// let bus2 = Arc::new(bus2);
/// let accepting = Arc::clone(&bus2);
/// tokio::spawn(async move {
///     while let Some(incoming) = n2_server.accept().await {
///         let Ok(conn) = incoming.await else { continue };
///         // The node checks every hello, then routes by protocol.
///         if let Ok((Protocol::Peer, _)) = accept_hello(&conn, "demo", "n2", &TransportConfig::default()).await {
///             accepting.accept(conn);
///         }
///     }
/// });
///
/// // n1 sends; n2 receives, from the node its certificate names.
/// let (bus1, _inbox1) = PeerBus::new(
///     client_endpoint(&n1, &transport)?, "n1".into(), vec![("n2".into(), n2_addr)],
///     "demo".into(), transport.clone(),
/// )?;
/// bus1.send("n2", b"append entries".to_vec())?;
/// let message = inbox2.recv().await.expect("the bus runs");
/// assert_eq!(message.from, "n1");
/// assert_eq!(message.payload, b"append entries");
/// # drop(n1_server);
/// std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub struct PeerBus {
    me: String,
    max_frame: usize,
    links: HashMap<String, Arc<Link>>,
    /// Peer ids in configuration order, for stats.
    order: Vec<String>,
    inbound: mpsc::Sender<PeerMessage>,
    /// Every task of the bus; dropping the set aborts them.
    tasks: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for PeerBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerBus")
            .field("me", &self.me)
            .field("peers", &self.order)
            .finish_non_exhaustive()
    }
}

/// Everything the bus keeps about one peer, shared with its tasks.
struct Link {
    id: String,
    addr: SocketAddr,
    outbox: Mutex<Outbox>,
    /// Wakes the outgoing task when the outbox gains a frame.
    wake: Notify,
    /// Tells an outgoing task that is not connected that the peer just
    /// connected to us, so it is up: abandon the wait or the attempt under
    /// way (which may be retransmitting its handshake into a node that was
    /// down when it started) and dial now.
    redial: Notify,
    /// The round-trip time of the peer's latest connection to us, in
    /// microseconds, when it asked for a redial: an attempt younger than
    /// a few of these is still on time and is left alone.
    peer_rtt_us: AtomicU64,
    /// The current incoming connection from this peer; a newer one
    /// replaces (and closes) it.
    incoming: Mutex<Option<quinn::Connection>>,
    /// The outgoing connection while it is up, and when it came up.
    outgoing: Mutex<Option<(quinn::Connection, Instant)>>,
    /// Set (under the `outgoing` lock) when [`PeerBus::accept`] closed the
    /// outgoing connection because the peer restarted: the outgoing task
    /// then dials again at once instead of backing off.
    restarted: AtomicBool,
    connected: AtomicBool,
    sent: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    restarts_noticed: AtomicU64,
    last_error: Mutex<Option<String>>,
    received: AtomicU64,
    received_dropped: AtomicU64,
    rejected: AtomicU64,
}

/// A peer's queue of encoded frames, bounded in frames and bytes.
struct Outbox {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
    max_frames: usize,
    max_bytes: usize,
}

impl Outbox {
    /// Appends `frame`, dropping the oldest frames until it fits; returns
    /// how many were dropped.
    fn push(&mut self, frame: Vec<u8>) -> u64 {
        let mut dropped = 0;
        while !self.frames.is_empty()
            && (self.frames.len() >= self.max_frames || self.bytes + frame.len() > self.max_bytes)
        {
            if let Some(old) = self.frames.pop_front() {
                self.bytes -= old.len();
                dropped += 1;
            }
        }
        self.bytes += frame.len();
        self.frames.push_back(frame);
        dropped
    }

    /// Takes the oldest frames, up to [`BATCH_BYTES`] (at least one frame),
    /// as one buffer, and how many frames it holds.
    fn take_batch(&mut self) -> Option<(Vec<u8>, u64)> {
        let mut batch = self.frames.pop_front()?;
        let mut count = 1;
        while let Some(next) = self.frames.front() {
            if batch.len() + next.len() > BATCH_BYTES {
                break;
            }
            batch.extend_from_slice(next);
            self.frames.pop_front();
            count += 1;
        }
        self.bytes -= batch.len();
        Some((batch, count))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent, so a panic
    // elsewhere while holding the lock does not make the data unusable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Link {
    /// The peer dialed us again although its previous connection to us was
    /// open: it restarted. Closes the outgoing connection (it leads to the
    /// old process, or, if we already reached the new one, costs one more
    /// handshake) and has the outgoing task dial again at once. However
    /// young the outgoing connection is: a peer that restarted within
    /// [`STALE_ATTEMPT`] of our connecting was otherwise left to the idle
    /// timeout (seen on a quiet machine, where a node test kills a peer
    /// 300 ms after the links came up). The close reaches the peer before
    /// our new handshake, so the peer does not take our re-dial for a
    /// restart of ours: no re-dial war.
    fn drop_stale_outgoing(&self) {
        let outgoing = lock(&self.outgoing);
        let Some((conn, since)) = outgoing.as_ref() else {
            return;
        };
        tracing::info!(peer = %self.id, addr = %self.addr, up_for = ?since.elapsed(), "the peer dialed us again while its previous connection was open: it restarted; re-dialing it");
        self.restarted.store(true, Ordering::Relaxed);
        self.restarts_noticed.fetch_add(1, Ordering::Relaxed);
        conn.close(codes::OK.into(), b"peer restarted: dialing its new process");
    }

    fn set_error(&self, error: String) {
        let mut last = lock(&self.last_error);
        if last.as_deref() == Some(error.as_str()) {
            tracing::debug!(peer = %self.id, addr = %self.addr, %error, "peer still unreachable");
        } else {
            tracing::warn!(peer = %self.id, addr = %self.addr, %error, "peer unreachable; retrying");
        }
        *last = Some(error);
    }
}

/// What an outgoing task needs besides its link.
struct Dialer {
    endpoint: quinn::Endpoint,
    cluster_id: String,
    transport: TransportConfig,
    config: PeerBusConfig,
}

impl PeerBus {
    /// A bus for node `me` and its `peers` (node id and address, which may
    /// be a proxy's), with the default [`PeerBusConfig`]. See
    /// [`PeerBus::with_config`].
    pub fn new(
        endpoint: quinn::Endpoint,
        me: String,
        peers: Vec<(String, SocketAddr)>,
        cluster_id: String,
        transport: TransportConfig,
    ) -> Result<(PeerBus, mpsc::Receiver<PeerMessage>), PeerError> {
        PeerBus::with_config(
            endpoint,
            me,
            peers,
            cluster_id,
            transport,
            PeerBusConfig::default(),
        )
    }

    /// A bus for node `me` and its `peers`, connecting through `endpoint`
    /// (which must present `me`'s node certificate as a client, see
    /// [`PeerBus`]), and the receiver of the messages
    /// peers send to this node. Starts one task per peer, which connects
    /// right away; must be called inside a tokio runtime.
    ///
    /// Fails when a peer is listed twice or is `me`.
    pub fn with_config(
        endpoint: quinn::Endpoint,
        me: String,
        peers: Vec<(String, SocketAddr)>,
        cluster_id: String,
        transport: TransportConfig,
        config: PeerBusConfig,
    ) -> Result<(PeerBus, mpsc::Receiver<PeerMessage>), PeerError> {
        let config_error = |message: String| PeerError::Config {
            me: me.clone(),
            message,
        };
        let mut links = HashMap::new();
        let mut order = Vec::new();
        for (id, addr) in peers {
            if id == me {
                return Err(config_error(format!(
                    "node {id} is listed as its own peer; remove it from the peer list"
                )));
            }
            let link = Arc::new(Link {
                id: id.clone(),
                addr,
                outbox: Mutex::new(Outbox {
                    frames: VecDeque::new(),
                    bytes: 0,
                    max_frames: config.queue_messages.max(1),
                    max_bytes: config
                        .queue_bytes
                        .max(transport.max_frame + FRAME_HEADER_LEN),
                }),
                wake: Notify::new(),
                redial: Notify::new(),
                peer_rtt_us: AtomicU64::new(0),
                incoming: Mutex::new(None),
                outgoing: Mutex::new(None),
                restarted: AtomicBool::new(false),
                connected: AtomicBool::new(false),
                sent: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
                restarts_noticed: AtomicU64::new(0),
                last_error: Mutex::new(None),
                received: AtomicU64::new(0),
                received_dropped: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
            });
            if links.insert(id.clone(), link).is_some() {
                return Err(config_error(format!(
                    "node {id} is listed twice; list each peer once"
                )));
            }
            order.push(id);
        }
        let (inbound, receiver) = mpsc::channel(config.inbound_capacity.max(1));
        let dialer = Arc::new(Dialer {
            endpoint,
            cluster_id,
            transport,
            config,
        });
        let mut tasks = JoinSet::new();
        for id in &order {
            tasks.spawn(run_outgoing(Arc::clone(&links[id]), Arc::clone(&dialer)));
        }
        let bus = PeerBus {
            me,
            max_frame: dialer.transport.max_frame,
            links,
            order,
            inbound,
            tasks: Mutex::new(tasks),
        };
        Ok((bus, receiver))
    }

    /// The largest payload [`PeerBus::send`] accepts: the transport's
    /// maximum frame less the envelope around the payload
    /// ([`max_peer_payload`]).
    pub fn max_payload(&self) -> usize {
        max_peer_payload(self.max_frame, &self.me)
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The address the bus connects to for `peer` (maybe a proxy's), if it
    /// is a configured peer.
    pub fn address(&self, peer: &str) -> Option<SocketAddr> {
        self.links.get(peer).map(|link| link.addr)
    }

    /// Queues `payload` for peer `to` and returns at once. When the peer's
    /// queue is full the oldest queued messages are dropped to make room
    /// (counted in [`PeerStats::dropped`]); delivery is best effort.
    pub fn send(&self, to: &str, payload: Vec<u8>) -> Result<(), PeerError> {
        let link = self.links.get(to).ok_or_else(|| PeerError::UnknownPeer {
            to: to.to_string(),
            me: self.me.clone(),
            peers: self.order.clone(),
        })?;
        let message = PeerMessage {
            from: self.me.clone(),
            payload,
        };
        let frame = encode_frame(&message, self.max_frame).map_err(|e| match e {
            FrameError::TooLarge { len, max } => PeerError::TooLarge {
                to: to.to_string(),
                len,
                max,
            },
            other => PeerError::Encode {
                to: to.to_string(),
                message: other.to_string(),
            },
        })?;
        let dropped = lock(&link.outbox).push(frame);
        if dropped > 0 {
            link.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        link.wake.notify_one();
        Ok(())
    }

    /// Takes over a connection that said hello with [`Protocol::Peer`] and
    /// was accepted (by [`accept_hello`](crate::accept_hello)), and
    /// delivers the messages that arrive on it. Returns at once.
    ///
    /// The sender is the node named by the connection's certificate: a
    /// connection whose certificate is not a configured peer's node
    /// certificate is closed with [`codes::REFUSED`]. A newer connection
    /// from the same peer replaces the older one, which is closed.
    ///
    /// # A peer that restarted
    ///
    /// A peer killed and restarted on the same address dials us from its
    /// new process, while our outgoing connection to its old process still
    /// looks up: nothing tells QUIC the old process is gone until the idle
    /// timeout, and frames sent meanwhile are lost. So when a peer dials
    /// us while our connection to it is up, the bus takes that connection
    /// for stale, closes it and dials at once ([`PeerStats::restarts_noticed`])
    /// — but only when both hold:
    ///
    /// - our connection is older than a handshake takes on a working path
    ///   (`STALE_ATTEMPT`, 500 ms), so that a peer that dials us right
    ///   after we dialed it (both sides do at start-up) is left alone;
    /// - the peer's previous connection to us was still open. A restarted
    ///   process never closed it; a live peer that dials us again closed
    ///   its old connection first (the bus always does, and the close
    ///   travels ahead of the new handshake), or it had failed.
    ///
    /// The second condition is what stops two live nodes from re-dialing
    /// each other in turn: our re-dial closes our old connection to the
    /// peer before the new one reaches it, so the peer sees its previous
    /// connection from us closed and does not re-dial in return, however
    /// long handshakes take. The age alone would not do: on a path where a
    /// handshake takes longer than the bound (high latency, loss), each
    /// side's new connection would find the other's older than the bound.
    pub fn accept(&self, conn: quinn::Connection) {
        let remote = conn.remote_address();
        let link = match peer_role(&conn) {
            Ok(Role::Node(id)) => match self.links.get(&id) {
                Some(link) => Arc::clone(link),
                None => {
                    tracing::warn!(%remote, node = %id, me = %self.me, "refusing a peer connection from a node that is not a configured peer");
                    conn.close(codes::REFUSED.into(), b"not a configured peer");
                    return;
                }
            },
            Ok(role) => {
                tracing::warn!(%remote, %role, "refusing a peer connection without a node certificate");
                conn.close(
                    codes::REFUSED.into(),
                    b"peer traffic needs a node certificate",
                );
                return;
            }
            Err(e) => {
                tracing::warn!(%remote, error = %e, "refusing a peer connection");
                conn.close(codes::REFUSED.into(), b"no usable certificate");
                return;
            }
        };
        let previous = lock(&link.incoming).replace(conn.clone());
        // A connection the peer closed, or that failed, has a reason.
        let previous_open = previous
            .as_ref()
            .is_some_and(|old| old.close_reason().is_none());
        if let Some(old) = previous {
            old.close(codes::OK.into(), b"replaced by a newer connection");
        }
        tracing::debug!(%remote, peer = %link.id, previous_open, "peer connection accepted");
        if previous_open {
            link.drop_stale_outgoing();
        }
        if !link.connected.load(Ordering::Relaxed) {
            let rtt = u64::try_from(conn.rtt().as_micros()).unwrap_or(u64::MAX);
            link.peer_rtt_us.store(rtt, Ordering::Relaxed);
            link.redial.notify_one();
        }
        let mut tasks = lock(&self.tasks);
        // Reap finished connection tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(run_incoming(
            conn,
            link,
            self.inbound.clone(),
            self.max_frame,
        ));
    }

    /// What the bus knows about each peer, in configuration order.
    pub fn stats(&self) -> Vec<PeerStats> {
        self.order
            .iter()
            .map(|id| {
                let link = &self.links[id];
                let (queued, queued_bytes) = {
                    let outbox = lock(&link.outbox);
                    (outbox.frames.len(), outbox.bytes)
                };
                PeerStats {
                    node_id: link.id.clone(),
                    address: link.addr,
                    connected: link.connected.load(Ordering::Relaxed),
                    queued,
                    queued_bytes,
                    sent: link.sent.load(Ordering::Relaxed),
                    dropped: link.dropped.load(Ordering::Relaxed),
                    reconnects: link.reconnects.load(Ordering::Relaxed),
                    restarts_noticed: link.restarts_noticed.load(Ordering::Relaxed),
                    last_error: lock(&link.last_error).clone(),
                    received: link.received.load(Ordering::Relaxed),
                    received_dropped: link.received_dropped.load(Ordering::Relaxed),
                    rejected: link.rejected.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

impl Drop for PeerBus {
    fn drop(&mut self) {
        // Aborting the tasks drops their connections, which closes them;
        // incoming connections are also held by the links, so close those
        // now rather than when the last link reference goes.
        lock(&self.tasks).abort_all();
        for link in self.links.values() {
            if let Some(conn) = lock(&link.incoming).take() {
                conn.close(codes::OK.into(), b"node shutting down");
            }
        }
    }
}

/// Capped exponential backoff with jitter.
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        let max = max.max(min);
        Backoff {
            next: min,
            min,
            max,
        }
    }

    /// The wait before the next attempt: uniform between half the current
    /// backoff and all of it, so that nodes restarted together do not
    /// retry in lockstep.
    fn wait(&mut self) -> Duration {
        let current = self.next;
        self.next = (current * 2).min(self.max);
        // A freshly keyed SipHash of the time is random enough for jitter.
        let random = RandomState::new().hash_one(Instant::now());
        let half = current / 2;
        half + half.mul_f64((random % 1024) as f64 / 1024.0)
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// An outgoing connection attempt older than this, when the peer connects
/// to us, is abandoned for a fresh one: a handshake on a working path takes
/// far less, so the attempt is probably retransmitting into a node that was
/// down when it started.
const STALE_ATTEMPT: Duration = Duration::from_millis(500);

/// Round trips a connection attempt (handshake, hello, stream) takes on a
/// working path, with room to spare: an attempt younger than this many of
/// the path's round trips is not abandoned, however long they are.
const ATTEMPT_ROUND_TRIPS: u32 = 4;

/// How old an attempt must be to be abandoned when the peer connects to
/// us: [`STALE_ATTEMPT`], or [`ATTEMPT_ROUND_TRIPS`] round trips of the
/// peer's connection to us when that is longer. On a slow path (a round
/// trip of several hundred milliseconds) both nodes' attempts take longer
/// than [`STALE_ATTEMPT`], and each lands while the other's is under way:
/// abandoning them would have the two abandon each other's attempts in
/// turn, for ever.
fn stale_attempt(peer_rtt: Duration) -> Duration {
    STALE_ATTEMPT.max(peer_rtt * ATTEMPT_ROUND_TRIPS)
}

/// Owns the connection to one peer for the bus's lifetime: connect, stream
/// the queue, back off after a failure, again. When the peer connects to
/// us while this task is not connected, it dials at once rather than
/// finishing its backoff (or a stale attempt); when it connects to us
/// while this task is connected, [`PeerBus::accept`] may close the
/// connection as stale, and this task dials again at once.
async fn run_outgoing(link: Arc<Link>, dialer: Arc<Dialer>) {
    let mut backoff = Backoff::new(dialer.config.backoff_min, dialer.config.backoff_max);
    let mut connections = 0u64;
    loop {
        let started = Instant::now();
        let attempt = open(&link, &dialer);
        tokio::pin!(attempt);
        let attempt = loop {
            tokio::select! {
                result = &mut attempt => break Some(result),
                // A young attempt is left alone: it is about to succeed,
                // and the peer is probably dialing us at the same moment
                // (abandoning it would have both sides abandon each
                // other's attempts in turn).
                () = link.redial.notified() => {
                    let rtt = Duration::from_micros(link.peer_rtt_us.load(Ordering::Relaxed));
                    if started.elapsed() >= stale_attempt(rtt) {
                        break None;
                    }
                },
            }
        };
        match attempt {
            None => {
                tracing::debug!(peer = %link.id, "the peer connected to us: dialing it afresh");
                backoff.reset();
                continue;
            }
            Some(Ok((conn, stream))) => {
                let since = Instant::now();
                if connections > 0 {
                    link.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                connections += 1;
                *lock(&link.outgoing) = Some((conn.clone(), since));
                link.connected.store(true, Ordering::Relaxed);
                tracing::info!(peer = %link.id, addr = %link.addr, "connected to peer");
                let error = pump(&link, &conn, stream).await;
                link.connected.store(false, Ordering::Relaxed);
                let restarted = {
                    let mut outgoing = lock(&link.outgoing);
                    *outgoing = None;
                    link.restarted.swap(false, Ordering::Relaxed)
                };
                conn.close(codes::OK.into(), b"peer stream failed");
                if restarted {
                    backoff.reset();
                    continue;
                }
                link.set_error(format!("connection lost: {error}"));
                // A connection that held for a while earns a fresh start;
                // one that fails right after connecting keeps backing off.
                if since.elapsed() >= dialer.config.backoff_max {
                    backoff.reset();
                }
            }
            Some(Err(error)) => link.set_error(error),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.wait()) => {}
            () = link.redial.notified() => backoff.reset(),
        }
    }
}

/// Connects to the peer, checks who answered, and opens the stream.
async fn open(
    link: &Link,
    dialer: &Dialer,
) -> Result<(quinn::Connection, quinn::SendStream), String> {
    let connecting = connect(
        &dialer.endpoint,
        link.addr,
        &dialer.cluster_id,
        Protocol::Peer,
        &dialer.transport,
    );
    let (conn, node_id) = tokio::time::timeout(dialer.config.connect_timeout, connecting)
        .await
        .map_err(|_| {
            format!(
                "no answer within {:?} (connect_timeout)",
                dialer.config.connect_timeout
            )
        })?
        .map_err(|e: WireError| e.to_string())?;
    let expected = Role::Node(link.id.clone());
    let role = peer_role(&conn).map_err(|e| e.to_string())?;
    if role != expected || node_id != link.id {
        conn.close(codes::REFUSED.into(), b"not the expected peer");
        return Err(format!(
            "refused: the node at {} is {role} (hello: {node_id}), not {expected}; check the peer list",
            link.addr
        ));
    }
    let stream = conn
        .open_uni()
        .await
        .map_err(|e| format!("opening a stream: {e}"))?;
    Ok((conn, stream))
}

/// Writes queued frames to the stream until the connection or the stream
/// fails; returns why.
async fn pump(link: &Link, conn: &quinn::Connection, mut stream: quinn::SendStream) -> String {
    loop {
        let batch = lock(&link.outbox).take_batch();
        let Some((bytes, count)) = batch else {
            tokio::select! {
                _ = link.wake.notified() => continue,
                error = conn.closed() => return error.to_string(),
            }
        };
        if let Err(e) = stream.write_all(&bytes).await {
            return e.to_string();
        }
        link.sent.fetch_add(count, Ordering::Relaxed);
    }
}

/// Reads every unidirectional stream of an incoming peer connection until
/// it closes. Aborting this task aborts its stream readers.
async fn run_incoming(
    conn: quinn::Connection,
    link: Arc<Link>,
    inbound: mpsc::Sender<PeerMessage>,
    max_frame: usize,
) {
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            accepted = conn.accept_uni() => match accepted {
                Ok(mut recv) if streams.len() >= MAX_STREAMS_PER_CONNECTION => {
                    link.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = %link.id, limit = MAX_STREAMS_PER_CONNECTION, "refusing a peer stream beyond the limit");
                    let _ = recv.stop(codes::REFUSED.into());
                }
                Ok(recv) => {
                    streams.spawn(read_stream(recv, Arc::clone(&link), inbound.clone(), max_frame));
                }
                Err(e) => {
                    tracing::debug!(peer = %link.id, error = %e, "peer connection ended");
                    break;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    let mut incoming = lock(&link.incoming);
    if incoming
        .as_ref()
        .is_some_and(|current| current.stable_id() == conn.stable_id())
    {
        *incoming = None;
    }
}

/// Delivers the frames of one stream in order.
async fn read_stream(
    mut recv: quinn::RecvStream,
    link: Arc<Link>,
    inbound: mpsc::Sender<PeerMessage>,
    max_frame: usize,
) {
    // Warn once per stream and count the rest, so that a misbehaving peer
    // cannot flood the log.
    let mut warned_spoof = false;
    let mut warned_full = false;
    loop {
        let message = match read_frame::<PeerMessage>(&mut recv, max_frame).await {
            Ok(message) => message,
            Err(e @ (FrameError::Malformed(_) | FrameError::TooLarge { .. })) => {
                let code = match e {
                    FrameError::TooLarge { .. } => codes::TOO_LARGE,
                    _ => codes::MALFORMED,
                };
                link.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %link.id, error = %e, "closing a peer stream after a bad frame");
                let _ = recv.stop(code.into());
                return;
            }
            Err(e) => {
                // The stream finished or the connection went away.
                tracing::debug!(peer = %link.id, error = %e, "peer stream ended");
                return;
            }
        };
        if message.from != link.id {
            link.rejected.fetch_add(1, Ordering::Relaxed);
            if !warned_spoof {
                warned_spoof = true;
                tracing::warn!(peer = %link.id, claimed = %message.from, "dropping a message that claims to come from another node");
            }
            continue;
        }
        match inbound.try_send(message) {
            Ok(()) => {
                link.received.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                link.received_dropped.fetch_add(1, Ordering::Relaxed);
                if !warned_full {
                    warned_full = true;
                    tracing::warn!(peer = %link.id, "peer messages dropped: the consumer is not keeping up");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(max_frames: usize, max_bytes: usize) -> Outbox {
        Outbox {
            frames: VecDeque::new(),
            bytes: 0,
            max_frames,
            max_bytes,
        }
    }

    #[test]
    fn a_full_outbox_drops_its_oldest_frames() {
        let mut queue = outbox(3, 1000);
        let dropped: u64 = (0u8..10).map(|i| queue.push(vec![i; 10])).sum();
        assert_eq!(dropped, 7);
        let kept: Vec<u8> = queue.frames.iter().map(|f| f[0]).collect();
        assert_eq!(kept, vec![7, 8, 9]);
        assert_eq!(queue.bytes, 30);

        let mut queue = outbox(100, 25);
        assert_eq!(queue.push(vec![1; 10]), 0);
        assert_eq!(queue.push(vec![2; 10]), 0);
        assert_eq!(queue.push(vec![3; 10]), 1, "the byte bound holds too");
        assert_eq!(queue.bytes, 20);
        assert_eq!(queue.push(vec![4; 40]), 2, "a big frame displaces all");
        assert_eq!(queue.frames.len(), 1);
    }

    #[test]
    fn batches_keep_order_and_their_size_bound() {
        let mut queue = outbox(10_000, usize::MAX);
        for i in 0..100u32 {
            queue.push(vec![(i % 256) as u8; 3000]);
        }
        let mut seen = Vec::new();
        while let Some((batch, count)) = queue.take_batch() {
            assert!(batch.len() <= BATCH_BYTES);
            assert_eq!(batch.len(), count as usize * 3000);
            seen.extend(batch.chunks(3000).map(|c| c[0]));
        }
        assert_eq!(seen, (0..100u8).collect::<Vec<_>>());
        assert_eq!(queue.bytes, 0);

        let mut queue = outbox(10, usize::MAX);
        queue.push(vec![0; BATCH_BYTES * 2]);
        let (batch, count) = queue.take_batch().unwrap();
        assert_eq!(
            (batch.len(), count),
            (BATCH_BYTES * 2, 1),
            "a big frame goes alone"
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let caps = [100, 200, 400, 800, 800, 800];
        for cap in caps {
            let wait = backoff.wait();
            let cap = Duration::from_millis(cap);
            assert!(
                wait >= cap / 2 && wait <= cap,
                "{wait:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        backoff.reset();
        assert!(backoff.wait() <= Duration::from_millis(100));
    }
}
