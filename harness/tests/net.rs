//! The fault network with real traffic on 127.0.0.1: plain UDP sockets for
//! each fault's exact effect, and QUIC connections (mimeo-wire endpoints
//! with mutual TLS) for what a node sees — answers, timeouts under a block
//! or a partition, service again after a heal.
//!
//! Absence is never proven by sleeping: a dropped datagram is awaited in
//! the link counters, and after a heal a marker datagram must be the next
//! thing to arrive.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use mimeo_harness::net::{FaultNet, LinkStats, MAX_SESSIONS, QUEUE_CAP};
use mimeo_wire::*;
use tokio::net::UdpSocket;

/// Bound on every wait for something that must happen.
const WAIT: Duration = Duration::from_secs(10);
/// How long a request through a blocked link is given before it counts as
/// timed out.
const SHORT: Duration = Duration::from_millis(300);
const CLUSTER: &str = "net-test";
const MAX_FRAME: usize = 64 * 1024;

fn nodes(list: &[(&str, SocketAddr)]) -> Vec<(String, SocketAddr)> {
    list.iter()
        .map(|(id, addr)| (id.to_string(), *addr))
        .collect()
}

async fn udp() -> UdpSocket {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap()
}

/// Two UDP "nodes" n1 and n2 behind a fault network.
async fn udp_pair(seed: u64) -> (UdpSocket, UdpSocket, FaultNet) {
    let (n1, n2) = (udp().await, udp().await);
    let list = nodes(&[
        ("n1", n1.local_addr().unwrap()),
        ("n2", n2.local_addr().unwrap()),
    ]);
    let net = FaultNet::start_seeded(&list, seed).await.unwrap();
    (n1, n2, net)
}

async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (len, from) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("no datagram within the wait bound")
        .unwrap();
    buf.truncate(len);
    (buf, from)
}

/// Waits (bounded) until the counters of `from → to` satisfy `done`.
async fn await_stats(net: &FaultNet, from: &str, to: &str, done: impl Fn(&LinkStats) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = net.link_stats(from, to).unwrap();
        if done(&stats) {
            return;
        }
        assert!(Instant::now() < deadline, "{from}→{to}: still {stats:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn certain_loss_drops_everything_until_healed() {
    let (n1, n2, net) = udp_pair(1).await;
    let proxy = net.proxy_addr("n1", "n2").unwrap();
    net.set_loss(1.0);
    for i in 0..20u8 {
        n1.send_to(&[i], proxy).await.unwrap();
    }
    await_stats(&net, "n1", "n2", |s| s.dropped == 20).await;
    net.heal();
    n1.send_to(b"marker", proxy).await.unwrap();
    assert_eq!(recv(&n2).await.0, b"marker", "a lost datagram arrived");
    let stats = net.link_stats("n1", "n2").unwrap();
    assert_eq!((stats.forwarded, stats.dropped), (1, 20));
}

#[tokio::test]
async fn delay_delays_each_direction_by_at_least_the_base() {
    let (n1, n2, net) = udp_pair(2).await;
    let proxy = net.proxy_addr("n1", "n2").unwrap();
    let base = Duration::from_millis(100);
    net.set_delay(base, Duration::ZERO);
    let sent = Instant::now();
    n1.send_to(b"ping", proxy).await.unwrap();
    let (ping, upstream) = recv(&n2).await;
    let there = sent.elapsed();
    assert_eq!(ping, b"ping");
    n2.send_to(b"pong", upstream).await.unwrap();
    let (pong, from) = recv(&n1).await;
    assert_eq!((pong.as_slice(), from), (&b"pong"[..], proxy));
    let round_trip = sent.elapsed();
    assert!(there >= base, "one way took {there:?}");
    assert!(round_trip >= 2 * base, "round trip took {round_trip:?}");
    assert!(round_trip < WAIT, "round trip took {round_trip:?}");
    assert_eq!(net.link_stats("n1", "n2").unwrap().delayed, 1);
    assert_eq!(net.link_stats("n2", "n1").unwrap().delayed, 1);
}

#[tokio::test]
async fn certain_duplication_doubles() {
    let (n1, n2, net) = udp_pair(3).await;
    let proxy = net.proxy_addr("n1", "n2").unwrap();
    net.set_duplicate(1.0);
    for i in 0..10u8 {
        n1.send_to(&[i], proxy).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..20 {
        got.push(recv(&n2).await.0[0]);
    }
    got.sort_unstable();
    let expected: Vec<u8> = (0..10u8).flat_map(|i| [i, i]).collect();
    assert_eq!(got, expected);
    net.heal();
    n1.send_to(b"marker", proxy).await.unwrap();
    assert_eq!(recv(&n2).await.0, b"marker", "a third copy arrived");
    assert_eq!(net.link_stats("n1", "n2").unwrap().duplicated, 10);
}

#[tokio::test]
async fn certain_reordering_swaps_neighbours() {
    let (n1, n2, net) = udp_pair(4).await;
    let proxy = net.proxy_addr("n1", "n2").unwrap();
    net.set_reorder(1.0);
    for i in 0..4u8 {
        n1.send_to(&[i], proxy).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(recv(&n2).await.0[0]);
    }
    assert_eq!(got, vec![1, 0, 3, 2]);
}

#[tokio::test]
async fn a_block_cuts_one_direction_only() {
    let (n1, n2, net) = udp_pair(5).await;
    let n1_to_n2 = net.proxy_addr("n1", "n2").unwrap();
    let n2_to_n1 = net.proxy_addr("n2", "n1").unwrap();
    net.block("n1", "n2");

    // On the path n2 opened to n1: n2 is heard, n1's answer is cut.
    n2.send_to(b"hello", n2_to_n1).await.unwrap();
    let (hello, upstream) = recv(&n1).await;
    assert_eq!(hello, b"hello");
    n1.send_to(b"answer", upstream).await.unwrap();
    await_stats(&net, "n1", "n2", |s| s.dropped == 1).await;

    // On the path n1 opened to n2: cut.
    n1.send_to(b"cut", n1_to_n2).await.unwrap();
    await_stats(&net, "n1", "n2", |s| s.dropped == 2).await;
    assert_eq!(net.link_stats("n2", "n1").unwrap().dropped, 0);

    net.heal();
    n1.send_to(b"marker", n1_to_n2).await.unwrap();
    let (marker, upstream) = recv(&n2).await;
    assert_eq!(marker, b"marker", "a blocked datagram arrived");
    n2.send_to(b"reply", upstream).await.unwrap();
    assert_eq!(recv(&n1).await.0, b"reply");
}

#[tokio::test]
async fn sessions_are_capped_and_every_task_ends_when_the_network_is_dropped() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let (_n1, n2, net) = udp_pair(6).await;
    let proxy = net.proxy_addr("n1", "n2").unwrap();
    // Many source addresses, as many restarts of n1 would make: each gets
    // a session, and the oldest give way beyond the cap.
    let sources = MAX_SESSIONS + 36;
    for i in 0..sources {
        let source = udp().await;
        source
            .send_to(&(i as u32).to_be_bytes(), proxy)
            .await
            .unwrap();
        recv(&n2).await;
    }
    // Two proxies, and at most MAX_SESSIONS reply tasks.
    let deadline = Instant::now() + WAIT;
    while metrics.num_alive_tasks().saturating_sub(before) > 2 + MAX_SESSIONS {
        assert!(
            Instant::now() < deadline,
            "{} tasks alive",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        net.link_stats("n1", "n2").unwrap().forwarded,
        sources as u64
    );

    drop(net);
    let deadline = Instant::now() + WAIT;
    while metrics.num_alive_tasks() > before {
        assert!(
            Instant::now() < deadline,
            "{} tasks still alive after the drop",
            metrics.num_alive_tasks() - before
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The proxy's port is free again.
    UdpSocket::bind(proxy)
        .await
        .expect("the proxy socket was not closed");
}

#[tokio::test]
async fn the_delay_queue_is_bounded_and_counts_what_it_refuses() {
    let (n1, _n2, net) = udp_pair(7).await;
    let proxy = net.proxy_addr("n1", "n2").unwrap();
    net.set_delay(WAIT, Duration::ZERO);
    let extra = 500;
    for i in 0..(QUEUE_CAP + extra) as u32 {
        n1.send_to(&i.to_be_bytes(), proxy).await.unwrap();
        // Let the proxy drain its socket now and then, so that the kernel
        // buffer never overflows and every datagram reaches the queue.
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    await_stats(&net, "n1", "n2", |s| {
        s.delayed == QUEUE_CAP as u64 && s.overflowed == extra as u64
    })
    .await;
}

#[tokio::test]
async fn duplicate_node_ids_are_refused() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let err = FaultNet::start(&nodes(&[("n1", addr), ("n1", addr)]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"n1\""), "{err}");
}

// --- QUIC through the proxies -------------------------------------------

fn transport() -> TransportConfig {
    TransportConfig {
        max_frame: MAX_FRAME,
        ..TransportConfig::default()
    }
}

/// A node that answers `Get` with the key as the value.
fn spawn_node(dir: &Path, id: &'static str) -> SocketAddr {
    let identity = TlsIdentity::from_dir(dir, &format!("node-{id}")).unwrap();
    let endpoint =
        server_endpoint("127.0.0.1:0".parse().unwrap(), &identity, &transport()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok((Protocol::Client, _)) =
                    accept_hello(&conn, CLUSTER, id, &transport()).await
                else {
                    return;
                };
                let _ = serve_rpc(conn, &transport(), |request: ClientRequest| async move {
                    match request {
                        ClientRequest::Get { key, .. } => ClientResponse::Value {
                            value: Some(key),
                            position: Position::default(),
                        },
                        other => ClientResponse::Error {
                            kind: ErrorKind::BadRequest,
                            message: format!("unsupported: {other:?}"),
                        },
                    }
                })
                .await;
            });
        }
    });
    addr
}

/// A client endpoint standing for node `name`, and the loopback address it
/// sends from.
fn endpoint(dir: &Path, name: &str) -> (quinn::Endpoint, SocketAddr) {
    let identity = TlsIdentity::from_dir(dir, &format!("client-{name}")).unwrap();
    let endpoint = client_endpoint(&identity, &transport()).unwrap();
    let port = endpoint.local_addr().unwrap().port();
    (endpoint, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

async fn open(endpoint: &quinn::Endpoint, addr: SocketAddr) -> quinn::Connection {
    let (conn, node) = tokio::time::timeout(
        WAIT,
        connect(endpoint, addr, CLUSTER, Protocol::Client, &transport()),
    )
    .await
    .expect("connect timed out")
    .unwrap();
    assert_eq!(node, "n2");
    conn
}

/// A get with a `limit`: `None` when it timed out.
async fn try_get(conn: &quinn::Connection, key: &[u8], limit: Duration) -> Option<ClientResponse> {
    let request = ClientRequest::Get {
        key: key.to_vec(),
        consistency: ReadConsistency::Default,
    };
    let answer = tokio::time::timeout(limit, call(conn, &request, MAX_FRAME)).await;
    answer.ok().map(|r| r.expect("request failed"))
}

fn served(answer: &ClientResponse, key: &[u8]) -> bool {
    *answer
        == ClientResponse::Value {
            value: Some(key.to_vec()),
            position: Position::default(),
        }
}

async fn assert_served(conn: &quinn::Connection, key: &[u8]) {
    let answer = try_get(conn, key, WAIT).await.expect("request timed out");
    assert!(served(&answer, key), "{answer:?}");
}

async fn assert_times_out(conn: &quinn::Connection, key: &[u8]) {
    if let Some(answer) = try_get(conn, key, SHORT).await {
        panic!("answered through a cut link: {answer:?}");
    }
}

/// Retries short requests until one is answered, within [`WAIT`].
async fn await_served(conn: &quinn::Connection, key: &[u8]) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(answer) = try_get(conn, key, SHORT).await {
            assert!(served(&answer, key), "{answer:?}");
            return;
        }
        assert!(Instant::now() < deadline, "not served again after the heal");
    }
}

/// Certificates for node n2 and clients standing for n1 and n3; n2 serving;
/// a fault network over the three.
async fn quic_cluster(dir: &Path) -> (FaultNet, quinn::Endpoint, quinn::Endpoint) {
    let request = CertRequest {
        nodes: vec!["n2".into()],
        clients: vec!["n1".into(), "n3".into()],
        admins: Vec::new(),
    };
    generate_certs(dir, &request, false).unwrap();
    let n2 = spawn_node(dir, "n2");
    let (n1, n1_addr) = endpoint(dir, "n1");
    let (n3, n3_addr) = endpoint(dir, "n3");
    let list = nodes(&[("n1", n1_addr), ("n2", n2), ("n3", n3_addr)]);
    let net = FaultNet::start_seeded(&list, 42).await.unwrap();
    (net, n1, n3)
}

#[tokio::test]
async fn quic_requests_time_out_across_a_block_either_way_and_are_served_after_heal() {
    let dir = tempfile::tempdir().unwrap();
    let (net, n1, _n3) = quic_cluster(dir.path()).await;
    let conn = open(&n1, net.proxy_addr("n1", "n2").unwrap()).await;
    assert_served(&conn, b"before").await;

    // Requests cut.
    net.block("n1", "n2");
    assert_times_out(&conn, b"blocked-forward").await;
    net.heal();
    await_served(&conn, b"healed-forward").await;

    // Answers cut: on the connection n1 opened, n2's replies are the link
    // n2 → n1.
    net.block("n2", "n1");
    assert_times_out(&conn, b"blocked-reply").await;
    net.heal();
    await_served(&conn, b"healed-reply").await;

    assert!(net.link_stats("n1", "n2").unwrap().dropped > 0);
    assert!(net.link_stats("n2", "n1").unwrap().dropped > 0);
}

#[tokio::test]
async fn a_quic_partition_cuts_between_groups_only() {
    let dir = tempfile::tempdir().unwrap();
    let (net, n1, n3) = quic_cluster(dir.path()).await;
    let lonely = open(&n1, net.proxy_addr("n1", "n2").unwrap()).await;
    let together = open(&n3, net.proxy_addr("n3", "n2").unwrap()).await;

    net.partition(&[vec!["n1".into()], vec!["n2".into(), "n3".into()]]);
    assert_times_out(&lonely, b"cut").await;
    assert_served(&together, b"same-side").await;

    net.heal();
    await_served(&lonely, b"healed").await;
    assert_served(&together, b"still").await;
    assert_eq!(net.link_stats("n3", "n2").unwrap().dropped, 0);
}

#[tokio::test]
async fn quic_survives_loss_and_feels_delay() {
    let dir = tempfile::tempdir().unwrap();
    let (net, n1, _n3) = quic_cluster(dir.path()).await;
    let conn = open(&n1, net.proxy_addr("n1", "n2").unwrap()).await;
    assert_served(&conn, b"warm-up").await;

    // One request is at least one round trip: 2 × 50 ms.
    net.set_delay(Duration::from_millis(50), Duration::ZERO);
    let started = Instant::now();
    assert_served(&conn, b"slow").await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(100), "took {took:?}");
    net.heal();

    // QUIC retransmits through 20% loss.
    net.set_loss(0.2);
    for i in 0..20u32 {
        assert_served(&conn, &i.to_be_bytes()).await;
    }
    net.heal();
    let lost: u64 = net.stats().iter().map(|s| s.dropped).sum();
    assert!(lost > 0, "{:?}", net.stats());
}

/// A downed node's proxies close, so a peer's probe of the address it
/// reaches that node by is refused, as at a dead process's own address;
/// once the node is up again the same addresses forward as before, and
/// the proxies in the other direction never stopped.
#[tokio::test]
async fn a_downed_node_is_refused_at_its_proxies_until_it_is_up_again() {
    let (n1, n2, net) = udp_pair(9).await;
    let to_n2 = net.proxy_addr("n1", "n2").unwrap();
    let to_n1 = net.proxy_addr("n2", "n1").unwrap();
    assert_eq!(probe(to_n2, SHORT).await.unwrap(), Probe::NoRefusal);

    net.node_down("n2").await;
    assert_eq!(probe(to_n2, WAIT).await.unwrap(), Probe::Refused);
    n2.send_to(b"n2 still reaches n1", to_n1).await.unwrap();
    assert_eq!(recv_data(&n1).await, b"n2 still reaches n1");
    assert_eq!(probe(to_n1, SHORT).await.unwrap(), Probe::NoRefusal);
    net.node_down("n2").await; // again: a no-op

    net.node_up("n2").await.unwrap();
    net.node_up("n2").await.unwrap(); // again: a no-op
    assert_eq!(net.proxy_addr("n1", "n2"), Some(to_n2));
    assert_eq!(probe(to_n2, SHORT).await.unwrap(), Probe::NoRefusal);
    n1.send_to(b"n1 reaches n2 again", to_n2).await.unwrap();
    assert_eq!(recv_data(&n2).await, b"n1 reaches n2 again");
}

/// The next non-empty datagram (probes that went through are empty).
async fn recv_data(socket: &UdpSocket) -> Vec<u8> {
    loop {
        let (data, _) = recv(socket).await;
        if !data.is_empty() {
            return data;
        }
    }
}
