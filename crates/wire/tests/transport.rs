//! The transport under misuse: bad frames, foreign certificates, wrong
//! roles, versions and clusters — each refused with an error while a
//! well-behaved client on the same node keeps being served.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mimeo_wire::*;

const CLUSTER: &str = "test-cluster";
const MAX_FRAME: usize = 64 * 1024;
/// Bound on every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

fn certs(dir: &Path) {
    let request = CertRequest {
        nodes: vec!["n1".into()],
        clients: vec!["good".into(), "bad".into()],
        admins: vec!["ops".into()],
    };
    generate_certs(dir, &request, false).unwrap();
}

fn transport() -> TransportConfig {
    TransportConfig {
        max_frame: MAX_FRAME,
        ..TransportConfig::default()
    }
}

/// A node that answers `Get` with the key as the value and admin `Status`
/// with `Ok`, until the test ends.
fn spawn_node(dir: &Path) -> SocketAddr {
    let identity = TlsIdentity::from_dir(dir, "node-n1").unwrap();
    let endpoint =
        server_endpoint("127.0.0.1:0".parse().unwrap(), &identity, &transport()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok((protocol, _role)) = accept_hello(&conn, CLUSTER, "n1", &transport()).await
                else {
                    return;
                };
                let _ = match protocol {
                    Protocol::Client => {
                        serve_rpc(conn, &transport(), |request: ClientRequest| async move {
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
                        .await
                    }
                    Protocol::Admin => {
                        serve_rpc(conn, &transport(), |_: AdminRequest| async {
                            AdminResponse::Ok
                        })
                        .await
                    }
                    Protocol::Peer => Ok(()),
                };
            });
        }
    });
    addr
}

/// Certificates in a fresh directory and a node serving with them.
fn serving_node() -> (tempfile::TempDir, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let addr = spawn_node(dir.path());
    (dir, addr)
}

async fn open(
    dir: &Path,
    name: &str,
    addr: SocketAddr,
    cluster: &str,
    protocol: Protocol,
) -> Result<quinn::Connection, WireError> {
    let identity = TlsIdentity::from_dir(dir, name).unwrap();
    let endpoint = client_endpoint(&identity, &transport()).unwrap();
    let (conn, node) = tokio::time::timeout(
        WAIT,
        connect(&endpoint, addr, cluster, protocol, &transport()),
    )
    .await
    .expect("connect timed out")?;
    assert_eq!(node, "n1");
    Ok(conn)
}

async fn get(conn: &quinn::Connection, key: &[u8]) -> ClientResponse {
    let request = ClientRequest::Get {
        key: key.to_vec(),
        consistency: ReadConsistency::Default,
    };
    tokio::time::timeout(WAIT, call(conn, &request, MAX_FRAME))
        .await
        .expect("request timed out")
        .expect("request failed")
}

fn assert_served(response: &ClientResponse, key: &[u8]) {
    assert_eq!(
        response,
        &ClientResponse::Value {
            value: Some(key.to_vec()),
            position: Position::default()
        }
    );
}

/// Sends raw bytes as a request and returns the decoded answer.
async fn raw_request(conn: &quinn::Connection, bytes: &[u8]) -> ClientResponse {
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        // An oversized frame is stopped by the node part-way; the write
        // error that follows is expected.
        let _ = send.write_all(bytes).await;
        let _ = send.finish();
        read_frame::<ClientResponse>(&mut recv, MAX_FRAME).await
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("no answer to a bad frame")
        .expect("the node should answer a bad frame with an error")
}

#[tokio::test]
async fn malformed_and_oversized_frames_are_refused_while_others_are_served() {
    let (dir, addr) = serving_node();
    let good = open(dir.path(), "client-good", addr, CLUSTER, Protocol::Client)
        .await
        .unwrap();
    let bad = open(dir.path(), "client-bad", addr, CLUSTER, Protocol::Client)
        .await
        .unwrap();
    assert_served(&get(&good, b"before").await, b"before");

    // A frame whose payload is not a ClientRequest (variant 200 does not exist).
    let mut malformed = 3u32.to_be_bytes().to_vec();
    malformed.extend_from_slice(&[200, 1, 2]);
    let answer = raw_request(&bad, &malformed).await;
    assert!(
        matches!(
            answer,
            ClientResponse::Error {
                kind: ErrorKind::BadRequest,
                ..
            }
        ),
        "{answer:?}"
    );

    // A frame announcing more than the maximum, followed by a stream of junk.
    let mut oversized = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    oversized.extend(std::iter::repeat_n(7u8, MAX_FRAME + 1));
    let answer = raw_request(&bad, &oversized).await;
    assert!(
        matches!(
            answer,
            ClientResponse::Error {
                kind: ErrorKind::TooLarge,
                ..
            }
        ),
        "{answer:?}"
    );

    // A frame cut short: the node gets nothing to answer and drops the stream.
    let truncated = 100u32.to_be_bytes();
    let (mut send, _recv) = bad.open_bi().await.unwrap();
    send.write_all(&truncated).await.unwrap();
    send.finish().unwrap();

    // The misbehaving connection is still usable, and so is the good one.
    assert_served(&get(&bad, b"bad-after").await, b"bad-after");
    assert_served(&get(&good, b"good-after").await, b"good-after");
}

#[tokio::test]
async fn concurrent_requests_on_one_connection_are_all_answered() {
    let (dir, addr) = serving_node();
    let conn = open(dir.path(), "client-good", addr, CLUSTER, Protocol::Client)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let key = i.to_be_bytes();
            assert_served(&get(&conn, &key).await, &key);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let foreign = tempfile::tempdir().unwrap();
    // Same names, different CA: only the signature tells them apart.
    certs(foreign.path());
    let addr = spawn_node(dir.path());

    // A client of the other CA, but trusting this cluster's CA so that only
    // the node's check of the client certificate can refuse it.
    std::fs::copy(dir.path().join("ca.pem"), foreign.path().join("ca.pem")).unwrap();
    let refused = open(
        foreign.path(),
        "client-good",
        addr,
        CLUSTER,
        Protocol::Client,
    )
    .await;
    assert!(
        matches!(refused, Err(WireError::Connect { .. })),
        "{refused:?}"
    );

    let good = open(dir.path(), "client-good", addr, CLUSTER, Protocol::Client)
        .await
        .unwrap();
    assert_served(&get(&good, b"still").await, b"still");
}

#[tokio::test]
async fn a_node_from_another_ca_is_not_trusted_by_clients() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let impostor = tempfile::tempdir().unwrap();
    certs(impostor.path());
    let addr = spawn_node(impostor.path());
    let refused = open(dir.path(), "client-good", addr, CLUSTER, Protocol::Client).await;
    assert!(
        matches!(refused, Err(WireError::Connect { .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn only_admin_certificates_may_use_the_admin_protocol() {
    let (dir, addr) = serving_node();
    let refused = open(dir.path(), "client-good", addr, CLUSTER, Protocol::Admin).await;
    assert!(
        matches!(
            refused,
            Err(WireError::Refused {
                reason: RefusalReason::Forbidden,
                ..
            })
        ),
        "{refused:?}"
    );
    let refused = open(dir.path(), "client-good", addr, CLUSTER, Protocol::Peer).await;
    assert!(matches!(
        refused,
        Err(WireError::Refused {
            reason: RefusalReason::Forbidden,
            ..
        })
    ));

    let admin = open(dir.path(), "admin-ops", addr, CLUSTER, Protocol::Admin)
        .await
        .unwrap();
    let answer: AdminResponse = call(&admin, &AdminRequest::Status, MAX_FRAME)
        .await
        .unwrap();
    assert_eq!(answer, AdminResponse::Ok);
}

#[tokio::test]
async fn a_wrong_cluster_id_is_refused_with_a_clear_message() {
    let (dir, addr) = serving_node();
    let refused = open(
        dir.path(),
        "client-good",
        addr,
        "other-cluster",
        Protocol::Client,
    )
    .await;
    match refused {
        Err(WireError::Refused {
            reason: RefusalReason::ClusterMismatch,
            message,
        }) => {
            assert!(message.contains("test-cluster"), "{message}");
            assert!(message.contains("other-cluster"), "{message}");
        }
        other => panic!("expected a cluster mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_protocol_version_is_refused() {
    let (dir, addr) = serving_node();
    let identity = TlsIdentity::from_dir(dir.path(), "client-good").unwrap();
    let endpoint = client_endpoint(&identity, &transport()).unwrap();
    let conn = endpoint
        .connect(addr, NODE_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let hello = Hello {
        version: PROTOCOL_VERSION + 1,
        cluster_id: CLUSTER.into(),
        protocol: Protocol::Client,
    };
    let reply: HelloReply = tokio::time::timeout(WAIT, call(&conn, &hello, MAX_FRAME))
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            reply,
            HelloReply::Refused {
                reason: RefusalReason::VersionMismatch,
                ..
            }
        ),
        "{reply:?}"
    );
}

/// A peer of the previous protocol (version 4, whose `NodeStatus` carried
/// strings) is refused with a reason it can match on and a message naming
/// both versions, before any request could be misread.
#[tokio::test]
async fn a_previous_version_peer_is_refused_naming_both_versions() {
    assert_eq!(PROTOCOL_VERSION, 5, "update this test's previous version");
    let (dir, addr) = serving_node();
    let identity = TlsIdentity::from_dir(dir.path(), "client-good").unwrap();
    let endpoint = client_endpoint(&identity, &transport()).unwrap();
    let conn = endpoint
        .connect(addr, NODE_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let hello = Hello {
        version: 4,
        cluster_id: CLUSTER.into(),
        protocol: Protocol::Client,
    };
    let reply: HelloReply = tokio::time::timeout(WAIT, call(&conn, &hello, MAX_FRAME))
        .await
        .unwrap()
        .unwrap();
    match reply {
        HelloReply::Refused {
            reason: RefusalReason::VersionMismatch,
            message,
        } => {
            assert!(message.contains("protocol version 4"), "{message}");
            assert!(message.contains("speaks version 5"), "{message}");
        }
        other => panic!("expected a version mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn probes_of_a_live_node_are_not_refused_and_leave_it_serving() {
    let (dir, addr) = serving_node();
    let conn = open(dir.path(), "client-good", addr, CLUSTER, Protocol::Client)
        .await
        .unwrap();
    assert_served(&get(&conn, b"before").await, b"before");
    for _ in 0..20 {
        let found = probe(addr, Duration::from_millis(20)).await.unwrap();
        assert_eq!(found, Probe::NoRefusal);
    }
    // The same connection still works: the empty datagrams were dropped.
    assert_served(&get(&conn, b"after").await, b"after");
    assert!(conn.close_reason().is_none());
}

/// A setting quinn cannot use is named, and quinn's own error is kept as
/// the source (not flattened into a string).
#[tokio::test]
async fn an_unusable_setting_is_named_and_keeps_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let identity = TlsIdentity::from_dir(dir.path(), "client-good").unwrap();
    let config = TransportConfig {
        idle_timeout: Duration::MAX,
        ..transport()
    };
    let error = client_endpoint(&identity, &config).unwrap_err();
    assert!(
        matches!(
            error,
            WireError::Config {
                what: "idle timeout",
                ..
            }
        ),
        "{error:?}"
    );
    let source = std::error::Error::source(&error).expect("the cause is kept");
    assert!(
        source.is::<quinn::VarIntBoundsExceeded>(),
        "{source:?}: not quinn's error"
    );
    assert!(error.to_string().contains("idle timeout"), "{error}");
}
