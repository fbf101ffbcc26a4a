//! Leaderless appended three requests and two responses to the client
//! protocol (still version 5, unreleased): they come after every earlier
//! variant, so earlier messages keep their bytes (pinned in
//! `multi_leader_messages.rs`); here each new one's bytes are pinned.

use mimeo_wire::{
    ClientRequest, ClientResponse, LeaderlessStatus, QuorumOverride, ReadConsistency, RingRange,
    VersionedValue, PROTOCOL_VERSION,
};

fn bytes<T: serde::Serialize>(message: &T) -> Vec<u8> {
    postcard::to_allocvec(message).unwrap()
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    message: &T,
) {
    let decoded: T = postcard::from_bytes(&bytes(message)).unwrap();
    assert_eq!(&decoded, message);
}

#[test]
fn a_request_with_quorums_wraps_the_request_after_its_overrides() {
    assert_eq!(PROTOCOL_VERSION, 5);
    let request = ClientRequest::WithQuorum {
        quorum: QuorumOverride {
            w: Some(3),
            dw: Some(2),
            ..QuorumOverride::default()
        },
        request: Box::new(ClientRequest::Get {
            key: b"k".to_vec(),
            consistency: ReadConsistency::Default,
        }),
    };
    assert_eq!(bytes(&request), [10, 1, 3, 0, 0, 0, 1, 2, 0, 1, b'k', 0]);
    round_trip(&request);
    assert_eq!(bytes(&ClientRequest::LeaderlessStatus), [11]);
    round_trip(&ClientRequest::LeaderlessStatus);
}

#[test]
fn the_leaderless_status_response_is_pinned() {
    let status = ClientResponse::LeaderlessStatus(LeaderlessStatus {
        n: 3,
        ring: vec![RingRange {
            start: 1,
            end: 2,
            replicas: vec!["a".into()],
        }],
        shares: vec![("a".into(), 1_000_000)],
        hints: vec![("b".into(), 1, 10)],
        exchanges: vec![("b".into(), Some(5)), ("c".into(), None)],
        counters: vec![("x".into(), 7)],
    });
    assert_eq!(
        bytes(&status),
        [
            8, 3, // variant, n
            1, 1, 2, 1, 1, b'a', // ring
            1, 1, b'a', 0xC0, 0x84, 0x3D, // shares
            1, 1, b'b', 1, 10, // hints
            2, 1, b'b', 1, 5, 1, b'c', 0, // exchanges
            1, 1, b'x', 7, // counters
        ]
    );
    round_trip(&status);
}

/// The diagnostic local read (appended after `MultiLeaderStatus`) and its
/// answer (after the multi-leader status response): a replica's own copy, and a
/// node that is not a replica naming the key's replicas.
#[test]
fn the_local_read_and_its_answers_are_pinned() {
    let request = ClientRequest::LocalRead { key: b"k".to_vec() };
    assert_eq!(bytes(&request), [13, 1, b'k']);
    round_trip(&request);
    let replica = ClientResponse::LocalRead {
        replicas: vec!["a".into(), "b".into()],
        value: Some(VersionedValue::Counter(3)),
    };
    assert_eq!(
        bytes(&replica),
        [
            10, // variant
            2, 1, b'a', 1, b'b', // replicas
            1, 2, 6, // Some(Counter(3)), zigzag
        ]
    );
    round_trip(&replica);
    let elsewhere = ClientResponse::LocalRead {
        replicas: vec!["a".into()],
        value: None,
    };
    assert_eq!(bytes(&elsewhere), [10, 1, 1, b'a', 0]);
    round_trip(&elsewhere);
}
