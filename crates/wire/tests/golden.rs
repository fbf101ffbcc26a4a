//! Golden bytes of the wire formats of protocol version 5: a hello and its
//! reply, and messages of the client, admin and peer protocols, each as the
//! whole frame that travels (length prefix and postcard payload), committed
//! under `testdata/`.
//!
//! Each test decodes the committed frame into exactly the expected message
//! and encodes that message back to the same bytes. A change that would
//! make nodes of one build misread another's messages (a reordered or
//! inserted enum variant, a moved field) fails here; such a change needs a
//! [`PROTOCOL_VERSION`] step (see the crate docs, *Versioning*). The
//! messages use later variants on purpose (`Protocol::Admin`,
//! `NodeRole::Learner`, `ErrorKind::StorageFailed`...), so that moving a
//! variant before them changes their index.
//!
//! The files are written only on request, never silently:
//! `UPDATE_GOLDEN=1 cargo test -p mimeo-wire --test golden`, and the diff
//! is reviewed and committed with the version step.

use std::fmt::Debug;
use std::path::Path;

use mimeo_wire::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// `testdata/<name>`, written from `fresh` when `UPDATE_GOLDEN=1`, and
/// otherwise read (the test fails when the file is missing).
fn golden(name: &str, fresh: &[u8]) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, fresh).unwrap();
        eprintln!("UPDATE_GOLDEN=1: wrote {}", path.display());
    }
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; generate it with UPDATE_GOLDEN=1 cargo test -p mimeo-wire --test golden",
            path.display()
        )
    })
}

/// The committed frame `name` decodes to `expected`, which encodes back to
/// it byte for byte.
fn pinned<T>(name: &str, expected: T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let encoded = encode_frame(&expected, DEFAULT_MAX_FRAME).unwrap();
    let fixed = golden(name, &encoded);
    let (decoded, used) = decode_frame::<T>(&fixed, DEFAULT_MAX_FRAME)
        .unwrap_or_else(|e| panic!("testdata/{name} no longer decodes: {e}"))
        .unwrap_or_else(|| panic!("testdata/{name} is not a whole frame"));
    assert_eq!(used, fixed.len(), "testdata/{name}: trailing bytes");
    assert_eq!(
        decoded, expected,
        "testdata/{name} decodes to another message"
    );
    assert_eq!(
        encode_frame(&decoded, DEFAULT_MAX_FRAME).unwrap(),
        fixed,
        "testdata/{name} does not re-encode byte for byte"
    );
}

#[test]
fn the_protocol_version_of_these_files() {
    assert_eq!(
        PROTOCOL_VERSION, 5,
        "a version step regenerates testdata/ (UPDATE_GOLDEN=1) and updates this test"
    );
}

#[test]
fn a_hello_and_its_replies() {
    pinned(
        "hello.bin",
        Hello {
            version: PROTOCOL_VERSION,
            cluster_id: "golden".into(),
            protocol: Protocol::Admin,
        },
    );
    pinned(
        "hello-reply-refused.bin",
        HelloReply::Refused {
            reason: RefusalReason::Forbidden,
            message: "no".into(),
        },
    );
}

#[test]
fn client_requests() {
    pinned(
        "client-request-put.bin",
        ClientRequest::Put {
            key: b"k".to_vec(),
            value: vec![0, 255],
            ack: Some(WriteAck::SemiSync(2)),
        },
    );
    pinned(
        "client-request-get.bin",
        ClientRequest::Get {
            key: b"k".to_vec(),
            consistency: ReadConsistency::Session {
                after: Position {
                    term: 3,
                    index: 300,
                },
            },
        },
    );
    pinned(
        "client-request-cas.bin",
        ClientRequest::Cas {
            key: b"k".to_vec(),
            expected: Some(b"a".to_vec()),
            new: b"b".to_vec(),
            ack: Some(WriteAck::All),
        },
    );
}

fn status() -> NodeStatus {
    NodeStatus {
        node_id: "n2".into(),
        cluster_id: "golden".into(),
        mode: NodeMode::LeaderFollower,
        role: NodeRole::Learner,
        term: 4,
        last_position: Position {
            term: 4,
            index: 130,
        },
        commit_index: 129,
        durable_index: 128,
        live_keys: 7,
        uptime_ms: 65_000,
        clock_offset_ms: -250,
        fsync: FsyncPolicy::Never,
        peers: vec![PeerStatus {
            node_id: "n1".into(),
            address: "127.0.0.1:7001".into(),
            match_index: 0,
            lag_entries: 0,
            lag_ms: 0,
            connected: true,
        }],
    }
}

#[test]
fn client_responses() {
    pinned(
        "client-response-status.bin",
        ClientResponse::Status(status()),
    );
    pinned(
        "client-response-error.bin",
        ClientResponse::Error {
            kind: ErrorKind::StorageFailed,
            message: "fsync failed".into(),
        },
    );
    pinned(
        "client-response-redirect.bin",
        ClientResponse::Redirect {
            leader: Some("127.0.0.1:7001".into()),
        },
    );
}

#[test]
fn admin_messages() {
    pinned(
        "admin-request-set-clock-offset.bin",
        AdminRequest::SetClockOffset { offset_ms: -1500 },
    );
    pinned("admin-response-status.bin", AdminResponse::Status(status()));
    pinned(
        "admin-response-error.bin",
        AdminResponse::Error {
            kind: ErrorKind::Timeout,
            message: "slow".into(),
        },
    );
}

#[test]
fn a_peer_message() {
    pinned(
        "peer-message.bin",
        PeerMessage {
            from: "n3".into(),
            payload: vec![1, 2, 3, 0, 255],
        },
    );
}
