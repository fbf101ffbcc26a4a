//! The peer bus over real QUIC on 127.0.0.1: ordered delivery between three
//! nodes, reaching a peer that starts late or restarts, refusing nodes that
//! are not who they claim, and staying bounded when a peer is unreachable or
//! the consumer lags; noticing a peer that was killed and restarted long
//! before the idle timeout, without two live nodes re-dialing each other in
//! turn.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use mimeo_wire::*;
use tokio::sync::mpsc;

const CLUSTER: &str = "peer-test";
const MAX_FRAME: usize = 64 * 1024;
/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(8);

fn certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let request = CertRequest {
        nodes: vec!["n1".into(), "n2".into(), "n3".into()],
        clients: vec!["app".into()],
        ..CertRequest::default()
    };
    generate_certs(dir.path(), &request, false).unwrap();
    dir
}

fn transport() -> TransportConfig {
    TransportConfig {
        max_frame: MAX_FRAME,
        idle_timeout: Duration::from_secs(3),
        keep_alive: Duration::from_millis(500),
        ..TransportConfig::default()
    }
}

/// Short timers, so that a refused or failed connection is retried quickly.
fn config() -> PeerBusConfig {
    PeerBusConfig {
        connect_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(250),
        ..PeerBusConfig::default()
    }
}

fn identity(dir: &Path, name: &str) -> TlsIdentity {
    TlsIdentity::from_dir(dir, name).unwrap()
}

fn bind(dir: &Path, id: &str, addr: SocketAddr) -> quinn::Endpoint {
    bind_with(dir, id, addr, &transport())
}

fn bind_with(
    dir: &Path,
    id: &str,
    addr: SocketAddr,
    transport: &TransportConfig,
) -> quinn::Endpoint {
    server_endpoint(addr, &identity(dir, &format!("node-{id}")), transport).unwrap()
}

/// Binds `addr` again once the socket of the process that held it is
/// released, which may take a moment.
async fn rebind(
    dir: &Path,
    id: &str,
    addr: SocketAddr,
    transport: &TransportConfig,
) -> quinn::Endpoint {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match server_endpoint(addr, &identity(dir, &format!("node-{id}")), transport) {
            Ok(server) => return server,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "rebinding: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// An address nothing listens on (yet).
fn free_addr() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn seq(n: u32) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

fn seq_of(message: &PeerMessage) -> u32 {
    u32::from_be_bytes(message.payload.as_slice().try_into().unwrap())
}

/// A node as far as the bus is concerned: a server endpoint whose accept
/// loop checks the hello and hands peer connections to the bus, which
/// connects out through a client endpoint with the node's certificate.
struct Node {
    bus: Arc<PeerBus>,
    rx: mpsc::Receiver<PeerMessage>,
    server: quinn::Endpoint,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl Node {
    fn start(
        dir: &Path,
        id: &str,
        server: quinn::Endpoint,
        peers: &[(&str, SocketAddr)],
        config: PeerBusConfig,
    ) -> Node {
        Node::start_with(dir, id, server, peers, config, transport())
    }

    fn start_with(
        dir: &Path,
        id: &str,
        server: quinn::Endpoint,
        peers: &[(&str, SocketAddr)],
        config: PeerBusConfig,
        transport: TransportConfig,
    ) -> Node {
        let client = client_endpoint(&identity(dir, &format!("node-{id}")), &transport).unwrap();
        let peers = peers.iter().map(|(p, a)| (p.to_string(), *a)).collect();
        let (bus, rx) =
            PeerBus::with_config(client, id.into(), peers, CLUSTER.into(), transport, config)
                .unwrap();
        let bus = Arc::new(bus);
        let accept_loop = tokio::spawn(accept_loop(
            server.clone(),
            id.to_string(),
            Arc::downgrade(&bus),
            true,
        ));
        Node {
            bus,
            rx,
            server,
            accept_loop,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr().unwrap()
    }

    fn stats(&self, peer: &str) -> PeerStats {
        peer_stats(&self.bus, peer)
    }

    async fn recv(&mut self) -> PeerMessage {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no message within {WAIT:?}: {:?}", self.bus.stats()))
            .expect("the bus stopped")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.accept_loop.abort();
        self.server.close(0u32.into(), b"test node stopped");
    }
}

/// Node n1 on a fresh address, with n2 (maybe not up yet) at `n2_addr`.
fn n1_towards(dir: &Path, n2_addr: SocketAddr, config: PeerBusConfig) -> Node {
    let server = bind(dir, "n1", "127.0.0.1:0".parse().unwrap());
    Node::start(dir, "n1", server, &[("n2", n2_addr)], config)
}

/// What a node's accept loop does for the peer protocol; with `hello`
/// false it skips the hello, to show the bus checks certificates itself.
async fn accept_loop(server: quinn::Endpoint, id: String, bus: Weak<PeerBus>, hello: bool) {
    while let Some(incoming) = server.accept().await {
        let (id, bus) = (id.clone(), bus.clone());
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            if hello {
                match accept_hello(&conn, CLUSTER, &id, &transport()).await {
                    Ok((Protocol::Peer, _)) => {}
                    _ => return,
                }
            }
            if let Some(bus) = bus.upgrade() {
                bus.accept(conn);
            }
        });
    }
}

fn peer_stats(bus: &PeerBus, peer: &str) -> PeerStats {
    bus.stats()
        .into_iter()
        .find(|s| s.node_id == peer)
        .unwrap_or_else(|| panic!("{peer} is not a peer"))
}

/// Waits until `condition` holds, checking every few milliseconds.
async fn until(what: &str, condition: impl FnMut() -> bool) {
    within(WAIT, what, condition).await;
}

/// Waits at most `bound` until `condition` holds.
async fn within(bound: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + bound;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {bound:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Node n1 on a port of its own, with `peers` at addresses where nobody
/// listens: its own outgoing links never come up, so whatever it receives
/// comes from the test.
fn lone_n1(dir: &Path, peers: &[&str]) -> Node {
    let peers: Vec<_> = peers.iter().map(|&id| (id, free_addr())).collect();
    Node::start(
        dir,
        "n1",
        bind(dir, "n1", "127.0.0.1:0".parse().unwrap()),
        &peers,
        config(),
    )
}

/// A node-n2 certificate speaking the peer protocol by hand, to send what
/// the bus never would.
async fn rogue_n2(dir: &Path, to: SocketAddr) -> quinn::Connection {
    let endpoint = client_endpoint(&identity(dir, "node-n2"), &transport()).unwrap();
    let (conn, node) = connect(&endpoint, to, CLUSTER, Protocol::Peer, &transport())
        .await
        .unwrap();
    assert_eq!(node, "n1");
    conn
}

#[tokio::test]
async fn three_nodes_exchange_messages_both_ways_in_order() {
    const N: u32 = 500;
    let dir = certs();
    let ids = ["n1", "n2", "n3"];
    let servers: Vec<_> = ids
        .iter()
        .map(|id| bind(dir.path(), id, "127.0.0.1:0".parse().unwrap()))
        .collect();
    let addrs: Vec<_> = servers.iter().map(|s| s.local_addr().unwrap()).collect();
    let mut nodes: Vec<Node> = servers
        .into_iter()
        .enumerate()
        .map(|(i, server)| {
            let peers: Vec<_> = (0..3)
                .filter(|&j| j != i)
                .map(|j| (ids[j], addrs[j]))
                .collect();
            Node::start(dir.path(), ids[i], server, &peers, config())
        })
        .collect();

    for n in 0..N {
        for (i, node) in nodes.iter().enumerate() {
            for (j, to) in ids.iter().enumerate() {
                if i != j {
                    node.bus.send(to, seq(n)).unwrap();
                }
            }
        }
    }
    for (j, node) in nodes.iter_mut().enumerate() {
        let mut next = [0u32; 3];
        for _ in 0..2 * N {
            let message = node.recv().await;
            let i = ids.iter().position(|id| *id == message.from).unwrap();
            assert_ne!(i, j, "a node got its own message");
            assert_eq!(seq_of(&message), next[i], "{} from {}", ids[j], ids[i]);
            next[i] += 1;
        }
    }
    for (i, node) in nodes.iter().enumerate() {
        for (j, peer) in ids.iter().enumerate() {
            if i != j {
                let stats = node.stats(peer);
                assert!(stats.connected, "{stats:?}");
                assert_eq!((stats.sent, stats.dropped), (N as u64, 0), "{stats:?}");
                assert_eq!(stats.received, N as u64, "{stats:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_peer_that_starts_late_is_reached() {
    let dir = certs();
    let n2_addr = free_addr();
    let n1 = n1_towards(dir.path(), n2_addr, config());
    n1.bus.send("n2", seq(1)).unwrap();
    until("n1 fails to reach n2 while n2 is down", || {
        n1.stats("n2").last_error.is_some()
    })
    .await;
    assert!(!n1.stats("n2").connected);
    assert_eq!(n1.stats("n2").queued, 1);

    let mut n2 = Node::start(
        dir.path(),
        "n2",
        bind(dir.path(), "n2", n2_addr),
        &[("n1", n1.addr())],
        config(),
    );
    let message = n2.recv().await;
    assert_eq!((message.from.as_str(), seq_of(&message)), ("n1", 1));
    assert!(n1.stats("n2").connected);
}

#[tokio::test]
async fn a_peer_that_connects_to_us_is_dialed_at_once_not_after_the_backoff() {
    let dir = certs();
    let n2_addr = free_addr();
    // After one failed attempt n1 would wait a minute before the next.
    let patient = PeerBusConfig {
        backoff_min: Duration::from_secs(60),
        backoff_max: Duration::from_secs(120),
        ..config()
    };
    let n1 = n1_towards(dir.path(), n2_addr, patient);
    n1.bus.send("n2", seq(1)).unwrap();
    until("n1 fails to reach n2 while n2 is down", || {
        n1.stats("n2").last_error.is_some()
    })
    .await;

    // n2 comes up and connects to n1: n1 learns n2 is back and dials it
    // now, so its queued message arrives well within WAIT.
    let mut n2 = Node::start(
        dir.path(),
        "n2",
        bind(dir.path(), "n2", n2_addr),
        &[("n1", n1.addr())],
        config(),
    );
    n2.bus.send("n1", seq(7)).unwrap();
    let message = n2.recv().await;
    assert_eq!((message.from.as_str(), seq_of(&message)), ("n1", 1));
    assert!(n1.stats("n2").connected);
}

#[tokio::test]
async fn messages_flow_again_after_a_peer_restarts_on_the_same_address() {
    let dir = certs();
    let n1_server = bind(dir.path(), "n1", "127.0.0.1:0".parse().unwrap());
    let n2_server = bind(dir.path(), "n2", "127.0.0.1:0".parse().unwrap());
    let (n1_addr, n2_addr) = (
        n1_server.local_addr().unwrap(),
        n2_server.local_addr().unwrap(),
    );
    let mut n1 = Node::start(dir.path(), "n1", n1_server, &[("n2", n2_addr)], config());
    let mut n2 = Node::start(dir.path(), "n2", n2_server, &[("n1", n1_addr)], config());
    n1.bus.send("n2", seq(1)).unwrap();
    n2.bus.send("n1", seq(1)).unwrap();
    assert_eq!(seq_of(&n2.recv().await), 1);
    assert_eq!(seq_of(&n1.recv().await), 1);

    let server = n2.server.clone();
    drop(n2);
    let _ = tokio::time::timeout(WAIT, server.wait_idle()).await;
    drop(server);
    until("n1 notices n2 is gone", || !n1.stats("n2").connected).await;

    // The old socket may take a moment to be released.
    let deadline = tokio::time::Instant::now() + WAIT;
    let n2_server = loop {
        match server_endpoint(n2_addr, &identity(dir.path(), "node-n2"), &transport()) {
            Ok(server) => break server,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "rebinding: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let mut n2 = Node::start(dir.path(), "n2", n2_server, &[("n1", n1_addr)], config());
    until("n1 reconnects to the new n2", || {
        let stats = n1.stats("n2");
        stats.connected && stats.reconnects >= 1
    })
    .await;
    for n in 2..12 {
        n1.bus.send("n2", seq(n)).unwrap();
        n2.bus.send("n1", seq(n)).unwrap();
    }
    for n in 2..12 {
        assert_eq!(seq_of(&n2.recv().await), n);
        assert_eq!(seq_of(&n1.recv().await), n);
    }
}

#[tokio::test]
async fn a_node_cannot_speak_for_another() {
    let dir = certs();
    let mut n1 = lone_n1(dir.path(), &["n2", "n3"]);
    let conn = rogue_n2(dir.path(), n1.addr()).await;
    let mut stream = conn.open_uni().await.unwrap();
    for (from, payload) in [("n3", 666), ("n2", 7)] {
        let message = PeerMessage {
            from: from.into(),
            payload: seq(payload),
        };
        write_frame(&mut stream, &message, MAX_FRAME).await.unwrap();
    }
    let message = n1.recv().await;
    assert_eq!((message.from.as_str(), seq_of(&message)), ("n2", 7));
    assert!(
        n1.rx.try_recv().is_err(),
        "the forged message was delivered"
    );
    assert_eq!(n1.stats("n2").rejected, 1);
    assert_eq!(n1.stats("n3").received, 0);
}

#[tokio::test]
async fn a_bad_frame_closes_its_stream_only() {
    let dir = certs();
    let mut n1 = lone_n1(dir.path(), &["n2"]);
    let conn = rogue_n2(dir.path(), n1.addr()).await;
    let mut malformed = conn.open_uni().await.unwrap();
    malformed
        .write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let mut oversized = conn.open_uni().await.unwrap();
    let too_long = u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes();
    oversized.write_all(&too_long).await.unwrap();

    let stopped = |stream: &quinn::SendStream| {
        let stopped = stream.stopped();
        async move { tokio::time::timeout(WAIT, stopped).await.unwrap().unwrap() }
    };
    assert_eq!(stopped(&malformed).await, Some(codes::MALFORMED.into()));
    assert_eq!(stopped(&oversized).await, Some(codes::TOO_LARGE.into()));

    let mut good = conn.open_uni().await.unwrap();
    let message = PeerMessage {
        from: "n2".into(),
        payload: seq(9),
    };
    write_frame(&mut good, &message, MAX_FRAME).await.unwrap();
    assert_eq!(n1.recv().await, message);
    assert!(conn.close_reason().is_none(), "the connection survives");
    assert_eq!(n1.stats("n2").rejected, 2);
}

#[tokio::test]
async fn a_peer_cannot_open_streams_without_limit() {
    let dir = certs();
    let mut n1 = lone_n1(dir.path(), &["n2"]);
    let conn = rogue_n2(dir.path(), n1.addr()).await;
    let mut streams = Vec::new();
    for n in 0..4 {
        let mut stream = conn.open_uni().await.unwrap();
        let message = PeerMessage {
            from: "n2".into(),
            payload: seq(n),
        };
        write_frame(&mut stream, &message, MAX_FRAME).await.unwrap();
        // Kept open: each stream keeps its reader busy.
        streams.push(stream);
    }
    let mut delivered: Vec<u32> = Vec::new();
    for _ in 0..4 {
        delivered.push(seq_of(&n1.recv().await));
    }
    delivered.sort();
    assert_eq!(delivered, vec![0, 1, 2, 3]);
    // QUIC grants a peer connection four streams: a fifth is never opened
    // (the bus's own limit, behind it, is not even reached).
    let fifth = tokio::time::timeout(Duration::from_millis(500), conn.open_uni()).await;
    assert!(fifth.is_err(), "a fifth stream was granted");
    assert!(n1.rx.try_recv().is_err());
    assert_eq!(n1.stats("n2").rejected, 0);
    drop(streams);
}

#[tokio::test]
async fn a_connection_to_the_wrong_node_is_refused() {
    let dir = certs();
    let n1_server = bind(dir.path(), "n1", "127.0.0.1:0".parse().unwrap());
    let n3_server = bind(dir.path(), "n3", "127.0.0.1:0".parse().unwrap());
    let n3_addr = n3_server.local_addr().unwrap();
    // n1 believes n2 lives where n3 does.
    let n1 = Node::start(dir.path(), "n1", n1_server, &[("n2", n3_addr)], config());
    let mut n3 = Node::start(dir.path(), "n3", n3_server, &[("n1", n1.addr())], config());
    n1.bus.send("n2", seq(1)).unwrap();
    until("n1 refuses n3 posing as n2", || {
        n1.stats("n2")
            .last_error
            .is_some_and(|e| e.contains("node:n3"))
    })
    .await;
    let stats = n1.stats("n2");
    assert!(
        !stats.connected && stats.sent == 0 && stats.queued == 1,
        "{stats:?}"
    );
    // n1 opens no stream before it has checked who answered.
    assert!(n3.rx.try_recv().is_err());
    assert_eq!(n3.stats("n1").received, 0);
}

#[tokio::test]
async fn a_client_certificate_cannot_use_the_peer_protocol() {
    let dir = certs();
    let mut n1 = lone_n1(dir.path(), &["n2"]);
    // A bus connecting with a client certificate is refused at the hello.
    let app = client_endpoint(&identity(dir.path(), "client-app"), &transport()).unwrap();
    let peers = vec![("n1".to_string(), n1.addr())];
    let (bus, _rx) = PeerBus::with_config(
        app,
        "n2".into(),
        peers,
        CLUSTER.into(),
        transport(),
        config(),
    )
    .unwrap();
    bus.send("n1", seq(1)).unwrap();
    until("the hello is refused", || {
        peer_stats(&bus, "n1")
            .last_error
            .is_some_and(|e| e.contains("Forbidden"))
    })
    .await;
    assert_eq!(peer_stats(&bus, "n1").sent, 0);

    // Handed over without a hello, the bus refuses it itself.
    let raw = bind(dir.path(), "n1", "127.0.0.1:0".parse().unwrap());
    let raw_addr = raw.local_addr().unwrap();
    tokio::spawn(accept_loop(
        raw.clone(),
        "n1".into(),
        Arc::downgrade(&n1.bus),
        false,
    ));
    let app = client_endpoint(&identity(dir.path(), "client-app"), &transport()).unwrap();
    let conn = app
        .connect(raw_addr, NODE_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    // A server grants no stream before the hello; the bus closes the
    // connection meanwhile, so the stream may never open.
    if let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_millis(500), conn.open_uni()).await
    {
        let message = PeerMessage {
            from: "n2".into(),
            payload: seq(1),
        };
        let _ = write_frame(&mut stream, &message, MAX_FRAME).await;
    }
    let closed = tokio::time::timeout(WAIT, conn.closed()).await.unwrap();
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == codes::REFUSED.into()),
        "{closed:?}"
    );
    assert!(n1.rx.try_recv().is_err());
}

#[tokio::test]
async fn the_queue_of_an_unreachable_peer_stays_bounded() {
    const SENT: u32 = 100_000;
    const QUEUE: usize = 1000;
    let dir = certs();
    let n2_addr = free_addr();
    let config = PeerBusConfig {
        queue_messages: QUEUE,
        ..config()
    };
    let n1 = n1_towards(dir.path(), n2_addr, config.clone());
    for n in 0..SENT {
        n1.bus.send("n2", seq(n)).unwrap();
    }
    let stats = n1.stats("n2");
    assert_eq!(stats.queued, QUEUE, "{stats:?}");
    assert!(stats.queued_bytes <= QUEUE * 64, "{stats:?}");
    assert_eq!(stats.dropped, u64::from(SENT) - QUEUE as u64, "{stats:?}");
    assert_eq!(stats.sent, 0);

    // The oldest gave way: the peer gets the newest messages, in order.
    let mut n2 = Node::start(
        dir.path(),
        "n2",
        bind(dir.path(), "n2", n2_addr),
        &[("n1", n1.addr())],
        config,
    );
    for n in SENT - QUEUE as u32..SENT {
        assert_eq!(seq_of(&n2.recv().await), n);
    }
}

#[tokio::test]
async fn a_lagging_consumer_loses_messages_instead_of_stalling_the_network() {
    const SENT: u32 = 1000;
    const CAPACITY: usize = 16;
    let dir = certs();
    let n1_server = bind(dir.path(), "n1", "127.0.0.1:0".parse().unwrap());
    let n2_server = bind(dir.path(), "n2", "127.0.0.1:0".parse().unwrap());
    let (n1_addr, n2_addr) = (
        n1_server.local_addr().unwrap(),
        n2_server.local_addr().unwrap(),
    );
    let n1 = Node::start(dir.path(), "n1", n1_server, &[("n2", n2_addr)], config());
    let lagging = PeerBusConfig {
        inbound_capacity: CAPACITY,
        ..config()
    };
    let mut n2 = Node::start(dir.path(), "n2", n2_server, &[("n1", n1_addr)], lagging);
    for n in 0..SENT {
        n1.bus.send("n2", seq(n)).unwrap();
    }
    until("n2 has read everything n1 sent", || {
        let stats = n2.stats("n1");
        stats.received + stats.received_dropped == u64::from(SENT)
    })
    .await;
    let stats = n2.stats("n1");
    assert_eq!(stats.received, CAPACITY as u64, "{stats:?}");
    for n in 0..CAPACITY as u32 {
        assert_eq!(seq_of(&n2.recv().await), n);
    }
    // Once the consumer catches up, messages flow again.
    n1.bus.send("n2", seq(SENT)).unwrap();
    assert_eq!(seq_of(&n2.recv().await), SENT);
}

#[tokio::test]
async fn dropping_the_bus_stops_its_tasks_and_closes_its_connections() {
    let dir = certs();
    let mut n2 = Node::start(
        dir.path(),
        "n2",
        bind(dir.path(), "n2", "127.0.0.1:0".parse().unwrap()),
        &[("n1", free_addr())],
        config(),
    );
    let client = client_endpoint(&identity(dir.path(), "node-n1"), &transport()).unwrap();
    let peers = vec![("n2".to_string(), n2.addr())];
    let (bus, mut rx) = PeerBus::with_config(
        client.clone(),
        "n1".into(),
        peers,
        CLUSTER.into(),
        transport(),
        config(),
    )
    .unwrap();
    bus.send("n2", seq(1)).unwrap();
    assert_eq!(seq_of(&n2.recv().await), 1);
    assert_eq!(client.open_connections(), 1);

    drop(bus);
    let end = tokio::time::timeout(WAIT, rx.recv()).await.unwrap();
    assert!(end.is_none(), "every task holding the channel has stopped");
    until("the connection to n2 is closed", || {
        client.open_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn misuse_is_reported() {
    let dir = certs();
    let client = client_endpoint(&identity(dir.path(), "node-n1"), &transport()).unwrap();
    let addr = free_addr();
    let new = |peers: Vec<(&str, SocketAddr)>| {
        let peers = peers.into_iter().map(|(p, a)| (p.to_string(), a)).collect();
        PeerBus::new(
            client.clone(),
            "n1".into(),
            peers,
            CLUSTER.into(),
            transport(),
        )
    };
    let twice = new(vec![("n2", addr), ("n2", addr)]).unwrap_err();
    assert!(twice.to_string().contains("n2 is listed twice"), "{twice}");
    let itself = new(vec![("n1", addr)]).unwrap_err();
    assert!(itself.to_string().contains("its own peer"), "{itself}");

    let (bus, _rx) = new(vec![("n2", addr)]).unwrap();
    let unknown = bus.send("n9", seq(1)).unwrap_err();
    assert!(matches!(unknown, PeerError::UnknownPeer { ref to, .. } if to == "n9"));
    let large = bus.send("n2", vec![0; MAX_FRAME]).unwrap_err();
    assert!(
        matches!(large, PeerError::TooLarge { max: MAX_FRAME, .. }),
        "{large}"
    );
    assert_eq!(peer_stats(&bus, "n2").queued, 0);
    // The payload limit the bus announces is one it accepts.
    let max = bus.max_payload();
    assert_eq!(max, mimeo_wire::max_peer_payload(MAX_FRAME, "n1"));
    bus.send("n2", vec![0; max]).unwrap();
    assert_eq!(peer_stats(&bus, "n2").queued, 1);
}

/// A node on a thread and tokio runtime of its own, which the test can
/// kill as `kill -9` does: its runtime stops, so it never sends another
/// packet (no close, no reply), and its socket is released.
struct Killable {
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Killable {
    /// Starts node `id` on `addr` and waits until it runs; it sends
    /// `seq(1)` to each of its peers.
    async fn start(
        dir: &Path,
        id: &str,
        addr: SocketAddr,
        peers: &[(&str, SocketAddr)],
        transport: &TransportConfig,
    ) -> Killable {
        let (dir, id, transport) = (dir.to_path_buf(), id.to_string(), transport.clone());
        let peers: Vec<(String, SocketAddr)> =
            peers.iter().map(|(p, a)| (p.to_string(), *a)).collect();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let node = runtime.block_on(async {
                let server = bind_with(&dir, &id, addr, &transport);
                let peers: Vec<(&str, SocketAddr)> =
                    peers.iter().map(|(p, a)| (p.as_str(), *a)).collect();
                let node = Node::start_with(&dir, &id, server, &peers, slow_config(), transport);
                for (peer, _) in &peers {
                    node.bus.send(peer, seq(1)).unwrap();
                }
                let _ = ready_tx.send(());
                let _ = killed.await;
                node
            });
            // Dropping the runtime first drops every task of the node (the
            // QUIC drivers among them) unpolled: nothing is sent any more.
            drop(runtime);
            drop(node);
        });
        tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("the node starts")
            .expect("the node thread runs");
        Killable {
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    fn kill(mut self) {
        let _ = self.kill.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

/// Timers for the restart tests: a connection lives until the idle
/// timeout, which the tests must beat by far.
fn slow_transport(idle_timeout: Duration) -> TransportConfig {
    TransportConfig {
        idle_timeout,
        keep_alive: Duration::from_secs(1),
        ..transport()
    }
}

/// Bus timers for paths with a slow handshake.
fn slow_config() -> PeerBusConfig {
    PeerBusConfig {
        connect_timeout: Duration::from_secs(5),
        ..config()
    }
}

/// A UDP relay to `target` that delays every datagram by `delay` each
/// way, as a long path does; returns the address to dial instead of
/// `target`. Each sender gets a socket of its own towards the target, so
/// replies go back to the right sender. It runs until the test's runtime
/// ends.
async fn relay(target: SocketAddr, delay: Duration) -> SocketAddr {
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    tokio::spawn(async move {
        let mut backs: HashMap<SocketAddr, Arc<tokio::net::UdpSocket>> = HashMap::new();
        let mut buf = vec![0u8; 65536];
        loop {
            // Errors (an ICMP "unreachable" from a killed target) are
            // the path's, not the relay's: carry on.
            let Ok((len, from)) = front.recv_from(&mut buf).await else {
                continue;
            };
            let back = match backs.get(&from) {
                Some(back) => Arc::clone(back),
                None => {
                    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    backs.insert(from, Arc::clone(&back));
                    let (front, reader) = (Arc::clone(&front), Arc::clone(&back));
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        loop {
                            let Ok((len, _)) = reader.recv_from(&mut buf).await else {
                                continue;
                            };
                            let (front, datagram) = (Arc::clone(&front), buf[..len].to_vec());
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = front.send_to(&datagram, from).await;
                            });
                        }
                    });
                    back
                }
            };
            let datagram = buf[..len].to_vec();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = back.send_to(&datagram, target).await;
            });
        }
    });
    addr
}

/// The bus's bound on the age of a connection it may take for stale
/// (`STALE_ATTEMPT` in `peer.rs`).
const STALE: Duration = Duration::from_millis(500);

/// n1 and a killable n2, each dialing the other through `delay` relays;
/// kills n2 once its links are older than [`STALE`], as a process restart
/// takes longer than that, and starts a new n2 on the same address.
/// Returns n1, the new n2, and how long n1 took to be connected to the
/// new n2 after it started.
async fn kill_and_restart_n2(
    dir: &Path,
    delay: Duration,
    transport: &TransportConfig,
    noticed_within: Duration,
) -> (Node, Node, Duration) {
    let n1_server = bind_with(dir, "n1", "127.0.0.1:0".parse().unwrap(), transport);
    let n1_addr = n1_server.local_addr().unwrap();
    let n2_addr = free_addr();
    let (to_n1, to_n2) = if delay.is_zero() {
        (n1_addr, n2_addr)
    } else {
        (relay(n1_addr, delay).await, relay(n2_addr, delay).await)
    };
    let mut n1 = Node::start_with(
        dir,
        "n1",
        n1_server,
        &[("n2", to_n2)],
        slow_config(),
        transport.clone(),
    );
    let n2 = Killable::start(dir, "n2", n2_addr, &[("n1", to_n1)], transport).await;
    assert_eq!(seq_of(&n1.recv().await), 1, "n2's link to n1 is up");
    until("n1 connects to n2", || n1.stats("n2").connected).await;
    // What a restart takes at least; the links are then old enough to be
    // taken for stale.
    tokio::time::sleep(STALE + Duration::from_millis(200)).await;
    let stats = n1.stats("n2");
    assert_eq!(
        (stats.reconnects, stats.restarts_noticed),
        (0, 0),
        "{stats:?}"
    );

    n2.kill();
    let n2_server = rebind(dir, "n2", n2_addr, transport).await;
    let restarted = tokio::time::Instant::now();
    let n2 = Node::start_with(
        dir,
        "n2",
        n2_server,
        &[("n1", to_n1)],
        slow_config(),
        transport.clone(),
    );
    within(
        noticed_within,
        "n1 notices that n2 restarted and connects to the new n2",
        || {
            let stats = n1.stats("n2");
            stats.connected && stats.restarts_noticed == 1
        },
    )
    .await;
    let took = restarted.elapsed();
    (n1, n2, took)
}

#[tokio::test]
async fn a_killed_and_restarted_peer_is_reached_again_long_before_the_idle_timeout() {
    let dir = certs();
    // Without noticing the restart, n1's connection to the old n2 would
    // look up for the idle timeout, and what n1 sends would be lost.
    let idle = Duration::from_secs(10);
    let (n1, mut n2, took) =
        kill_and_restart_n2(dir.path(), Duration::ZERO, &slow_transport(idle), idle / 4).await;
    n1.bus.send("n2", seq(2)).unwrap();
    let message = tokio::time::timeout(idle / 4, n2.rx.recv())
        .await
        .expect("the new n2 hears from n1 long before the idle timeout")
        .unwrap();
    assert_eq!((message.from.as_str(), seq_of(&message)), ("n1", 2));
    println!("n1 was connected to the restarted n2 after {took:?}");
}

#[tokio::test]
async fn on_a_slow_path_a_restart_costs_one_redial_not_a_redial_war() {
    let dir = certs();
    // 400 ms each way: a handshake and hello take well over the 500 ms
    // after which a connection may be taken for stale, so the age of a
    // connection alone would have n1 and the new n2 re-dial each other in
    // turn (each finding the other's connection older than the bound).
    let delay = Duration::from_millis(400);
    let idle = Duration::from_secs(60);
    let (mut n1, mut n2, _) =
        kill_and_restart_n2(dir.path(), delay, &slow_transport(idle), idle / 4).await;
    // One re-dial round trip takes about two handshakes: watch for three.
    let window = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut n = 2;
    while tokio::time::Instant::now() < window {
        n1.bus.send("n2", seq(n)).unwrap();
        n2.bus.send("n1", seq(n)).unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (from_n1, from_n2) = (n1.stats("n2"), n2.stats("n1"));
    assert_eq!(
        (from_n1.restarts_noticed, from_n1.reconnects),
        (1, 1),
        "n1 re-dials the new n2 once: {from_n1:?}"
    );
    assert_eq!(
        (from_n2.restarts_noticed, from_n2.reconnects),
        (0, 0),
        "the new n2 keeps its first connection: {from_n2:?}"
    );
    assert!(from_n1.connected && from_n2.connected);
    // And the links carry messages.
    n1.bus.send("n2", seq(1000)).unwrap();
    n2.bus.send("n1", seq(1000)).unwrap();
    while seq_of(&n2.recv().await) != 1000 {}
    while seq_of(&n1.recv().await) != 1000 {}
}

#[tokio::test]
async fn two_live_buses_started_together_settle_on_stable_links() {
    // Started at once, and one a little after the other: each dials the
    // other at once, so each gets the other's connection while its own is
    // up or coming up, in either order.
    for offset_ms in [0, 5, 20, 60] {
        let dir = certs();
        let n1_server = bind(dir.path(), "n1", "127.0.0.1:0".parse().unwrap());
        let n2_server = bind(dir.path(), "n2", "127.0.0.1:0".parse().unwrap());
        let (n1_addr, n2_addr) = (
            n1_server.local_addr().unwrap(),
            n2_server.local_addr().unwrap(),
        );
        let mut n1 = Node::start(dir.path(), "n1", n1_server, &[("n2", n2_addr)], config());
        tokio::time::sleep(Duration::from_millis(offset_ms)).await;
        let mut n2 = Node::start(dir.path(), "n2", n2_server, &[("n1", n1_addr)], config());
        n1.bus.send("n2", seq(1)).unwrap();
        n2.bus.send("n1", seq(1)).unwrap();
        assert_eq!(seq_of(&n2.recv().await), 1);
        assert_eq!(seq_of(&n1.recv().await), 1);
        // Re-dialing in turn would show within a few times the age bound.
        let window = tokio::time::Instant::now() + STALE * 3;
        let mut n = 2;
        while tokio::time::Instant::now() < window {
            n1.bus.send("n2", seq(n)).unwrap();
            n2.bus.send("n1", seq(n)).unwrap();
            assert_eq!(seq_of(&n2.recv().await), n, "no message lost");
            assert_eq!(seq_of(&n1.recv().await), n, "no message lost");
            n += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for stats in [n1.stats("n2"), n2.stats("n1")] {
            assert!(
                stats.connected,
                "n2 started {offset_ms} ms after n1: {stats:?}"
            );
            assert_eq!(
                (stats.reconnects, stats.restarts_noticed),
                (0, 0),
                "n2 started {offset_ms} ms after n1; one connection each way, kept: {stats:?}"
            );
        }
    }
}
