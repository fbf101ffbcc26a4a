//! Protocol version 5 appended multi-leader messages to the client
//! protocol: every message that existed before keeps its bytes (pinned
//! here), and the new ones round-trip.

use mimeo_wire::{
    decode_frame, encode_frame, ClientRequest, ClientResponse, Position, ReadConsistency,
    VersionedValue, WriteAck, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};

fn bytes<T: serde::Serialize>(message: &T) -> Vec<u8> {
    postcard::to_allocvec(message).unwrap()
}

#[test]
fn existing_messages_keep_their_encoding() {
    assert_eq!(PROTOCOL_VERSION, 5);
    let get = ClientRequest::Get {
        key: b"k".to_vec(),
        consistency: ReadConsistency::Default,
    };
    assert_eq!(bytes(&get), [0, 1, b'k', 0]);
    let put = ClientRequest::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ack: Some(WriteAck::Quorum),
    };
    assert_eq!(bytes(&put), [1, 1, b'k', 1, b'v', 1, 2]);
    assert_eq!(bytes(&ClientRequest::Status), [4]);
    let written = ClientResponse::Written {
        position: Position {
            term: 3,
            index: 120,
        },
    };
    assert_eq!(bytes(&written), [1, 3, 120]);
    let value = ClientResponse::Value {
        value: Some(b"v".to_vec()),
        position: Position { term: 0, index: 1 },
    };
    assert_eq!(bytes(&value), [0, 1, 1, b'v', 0, 1]);
}

#[test]
fn multi_leader_messages_come_after_every_existing_one() {
    let get = ClientRequest::GetVersioned {
        key: b"k".to_vec(),
        after: Some(vec![9]),
        timeout_ms: None,
    };
    assert_eq!(bytes(&get), [5, 1, b'k', 1, 1, 9, 0]);
    let incr = ClientRequest::Increment {
        key: b"c".to_vec(),
        delta: -2,
        ack: None,
    };
    assert_eq!(bytes(&incr)[0], 7);
    let versioned = ClientResponse::Versioned {
        value: VersionedValue::Counter(5),
        session: vec![],
    };
    assert_eq!(bytes(&versioned), [6, 2, 10, 0]);
    let messages = [
        get,
        incr,
        ClientRequest::PutVersioned {
            key: b"k".to_vec(),
            value: None,
            context: Some(vec![1, 2]),
            ack: Some(WriteAck::All),
        },
        ClientRequest::SetAdd {
            key: b"s".to_vec(),
            element: b"x".to_vec(),
            ack: None,
        },
        ClientRequest::SetRemove {
            key: b"s".to_vec(),
            element: b"x".to_vec(),
            ack: None,
        },
    ];
    for message in messages {
        let frame = encode_frame(&message, DEFAULT_MAX_FRAME).unwrap();
        let (decoded, _) = decode_frame::<ClientRequest>(&frame, DEFAULT_MAX_FRAME)
            .unwrap()
            .unwrap();
        assert_eq!(decoded, message);
    }
    let responses = [
        versioned,
        ClientResponse::Versioned {
            value: VersionedValue::Register {
                values: vec![b"a".to_vec(), b"b".to_vec()],
                deleted: true,
                context: vec![7],
            },
            session: vec![1],
        },
        ClientResponse::WrittenVersioned {
            origin: "n1".into(),
            seq: 4,
            context: None,
            session: vec![3],
        },
    ];
    for message in responses {
        let frame = encode_frame(&message, DEFAULT_MAX_FRAME).unwrap();
        let (decoded, _) = decode_frame::<ClientResponse>(&frame, DEFAULT_MAX_FRAME)
            .unwrap()
            .unwrap();
        assert_eq!(decoded, message);
    }
}

#[test]
fn the_multi_leader_status_is_appended_and_pinned() {
    use mimeo_wire::{MultiLeaderStatus, OriginStatus};
    // After `LeaderlessStatus` (11) and `LeaderlessStatus(_)` (8).
    assert_eq!(bytes(&ClientRequest::MultiLeaderStatus), [12]);
    let status = ClientResponse::MultiLeaderStatus(MultiLeaderStatus {
        origins: vec![OriginStatus {
            origin: "a".into(),
            applied: 5,
            behind_writes: 2,
            behind_ms: 300,
        }],
        tombstones_pending: 1,
        tombstone_bytes: 70,
        siblings: vec![(1, 4), (2, 1)],
        drift_refusals: 3,
        counters: vec![("x".into(), 7)],
    });
    assert_eq!(
        bytes(&status),
        [
            9, // variant
            1, 1, b'a', 5, 2, 0xAC, 0x02, // origins
            1, 70, // tombstones
            2, 1, 4, 2, 1, // siblings
            3, // drift refusals
            1, 1, b'x', 7, // counters
        ]
    );
    let decoded: ClientResponse = postcard::from_bytes(&bytes(&status)).unwrap();
    assert_eq!(decoded, status);
}
