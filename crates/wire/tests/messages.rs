//! Every message survives encoding into a frame and decoding back, and no
//! byte string makes the decoder panic or over-allocate.

use mimeo_wire::*;
use proptest::prelude::*;

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}

fn position() -> impl Strategy<Value = Position> {
    (any::<u64>(), any::<u64>()).prop_map(|(term, index)| Position { term, index })
}

fn error_kind() -> impl Strategy<Value = ErrorKind> {
    prop_oneof![
        Just(ErrorKind::BadRequest),
        Just(ErrorKind::TooLarge),
        Just(ErrorKind::Unavailable),
        Just(ErrorKind::Timeout),
        Just(ErrorKind::Internal),
        Just(ErrorKind::StorageFailed),
    ]
}

fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        Just(Protocol::Client),
        Just(Protocol::Peer),
        Just(Protocol::Admin)
    ]
}

fn consistency() -> impl Strategy<Value = ReadConsistency> {
    prop_oneof![
        Just(ReadConsistency::Default),
        Just(ReadConsistency::Leader),
        any::<Option<u64>>()
            .prop_map(|max_staleness_ms| ReadConsistency::Follower { max_staleness_ms }),
        position().prop_map(|after| ReadConsistency::Session { after }),
    ]
}

fn peer_status() -> impl Strategy<Value = PeerStatus> {
    (
        ".{0,8}",
        ".{0,8}",
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(node_id, address, match_index, lag_entries, lag_ms, connected)| PeerStatus {
                node_id,
                address,
                match_index,
                lag_entries,
                lag_ms,
                connected,
            },
        )
}

fn node_mode() -> impl Strategy<Value = NodeMode> {
    prop_oneof![Just(NodeMode::Standalone), Just(NodeMode::LeaderFollower)]
}

fn node_role() -> impl Strategy<Value = NodeRole> {
    prop_oneof![
        Just(NodeRole::Standalone),
        Just(NodeRole::Leader),
        Just(NodeRole::Candidate),
        Just(NodeRole::Follower),
        Just(NodeRole::Learner),
    ]
}

fn fsync_policy() -> impl Strategy<Value = FsyncPolicy> {
    prop_oneof![
        Just(FsyncPolicy::Always),
        Just(FsyncPolicy::Batch),
        Just(FsyncPolicy::Never),
    ]
}

fn node_status() -> impl Strategy<Value = NodeStatus> {
    (
        (
            ".{0,8}",
            ".{0,8}",
            node_mode(),
            node_role(),
            any::<u64>(),
            position(),
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
            fsync_policy(),
        ),
        prop::collection::vec(peer_status(), 0..4),
    )
        .prop_map(
            |(
                (node_id, cluster_id, mode, role, term, last_position),
                (commit_index, durable_index, live_keys, uptime_ms, clock_offset_ms, fsync),
                peers,
            )| NodeStatus {
                node_id,
                cluster_id,
                mode,
                role,
                term,
                last_position,
                commit_index,
                durable_index,
                live_keys,
                uptime_ms,
                clock_offset_ms,
                fsync,
                peers,
            },
        )
}

fn ack() -> impl Strategy<Value = Option<WriteAck>> {
    prop::option::of(prop_oneof![
        Just(WriteAck::Async),
        any::<u32>().prop_map(WriteAck::SemiSync),
        Just(WriteAck::Quorum),
        Just(WriteAck::All),
    ])
}

fn client_request() -> impl Strategy<Value = ClientRequest> {
    prop_oneof![
        (bytes(), consistency())
            .prop_map(|(key, consistency)| ClientRequest::Get { key, consistency }),
        (bytes(), bytes(), ack()).prop_map(|(key, value, ack)| ClientRequest::Put {
            key,
            value,
            ack
        }),
        (bytes(), ack()).prop_map(|(key, ack)| ClientRequest::Delete { key, ack }),
        (bytes(), prop::option::of(bytes()), bytes(), ack()).prop_map(
            |(key, expected, new, ack)| {
                ClientRequest::Cas {
                    key,
                    expected,
                    new,
                    ack,
                }
            }
        ),
        Just(ClientRequest::Status),
    ]
}

fn client_response() -> impl Strategy<Value = ClientResponse> {
    prop_oneof![
        (prop::option::of(bytes()), position())
            .prop_map(|(value, position)| ClientResponse::Value { value, position }),
        position().prop_map(|position| ClientResponse::Written { position }),
        prop::option::of(bytes()).prop_map(|current| ClientResponse::CasMismatch { current }),
        node_status().prop_map(ClientResponse::Status),
        prop::option::of(".{0,20}").prop_map(|leader| ClientResponse::Redirect { leader }),
        (error_kind(), ".{0,20}")
            .prop_map(|(kind, message)| ClientResponse::Error { kind, message }),
    ]
}

fn admin_request() -> impl Strategy<Value = AdminRequest> {
    prop_oneof![
        Just(AdminRequest::Status),
        any::<i64>().prop_map(|offset_ms| AdminRequest::SetClockOffset { offset_ms }),
        Just(AdminRequest::Shutdown),
    ]
}

fn admin_response() -> impl Strategy<Value = AdminResponse> {
    prop_oneof![
        node_status().prop_map(AdminResponse::Status),
        Just(AdminResponse::Ok),
        (error_kind(), ".{0,20}")
            .prop_map(|(kind, message)| AdminResponse::Error { kind, message }),
    ]
}

fn hello() -> impl Strategy<Value = Hello> {
    (any::<u32>(), ".{0,16}", protocol()).prop_map(|(version, cluster_id, protocol)| Hello {
        version,
        cluster_id,
        protocol,
    })
}

fn hello_reply() -> impl Strategy<Value = HelloReply> {
    let reason = prop_oneof![
        Just(RefusalReason::VersionMismatch),
        Just(RefusalReason::ClusterMismatch),
        Just(RefusalReason::Forbidden),
        Just(RefusalReason::Malformed),
    ];
    prop_oneof![
        ".{0,8}".prop_map(|node_id| HelloReply::Accepted { node_id }),
        (reason, ".{0,20}").prop_map(|(reason, message)| HelloReply::Refused { reason, message }),
    ]
}

fn peer_message() -> impl Strategy<Value = PeerMessage> {
    (".{0,8}", bytes()).prop_map(|(from, payload)| PeerMessage { from, payload })
}

fn roundtrip<T>(message: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let frame = encode_frame(message, DEFAULT_MAX_FRAME).unwrap();
    let (decoded, used) = decode_frame::<T>(&frame, DEFAULT_MAX_FRAME)
        .unwrap()
        .expect("a whole frame decodes");
    prop_assert_eq!(used, frame.len());
    prop_assert_eq!(&decoded, message);
    // Two frames back to back: the first one's length is exact.
    let mut two = frame.clone();
    two.extend_from_slice(&frame);
    let (first, used) = decode_frame::<T>(&two, DEFAULT_MAX_FRAME).unwrap().unwrap();
    prop_assert_eq!(used, frame.len());
    prop_assert_eq!(&first, message);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn client_requests_roundtrip(m in client_request()) { roundtrip(&m)?; }

    #[test]
    fn client_responses_roundtrip(m in client_response()) { roundtrip(&m)?; }

    #[test]
    fn admin_requests_roundtrip(m in admin_request()) { roundtrip(&m)?; }

    #[test]
    fn admin_responses_roundtrip(m in admin_response()) { roundtrip(&m)?; }

    #[test]
    fn hellos_roundtrip(m in hello(), r in hello_reply()) { roundtrip(&m)?; roundtrip(&r)?; }

    #[test]
    fn peer_messages_roundtrip(m in peer_message()) { roundtrip(&m)?; }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(buf in prop::collection::vec(any::<u8>(), 0..256)) {
        // Either incomplete, malformed, too large or a valid message; never
        // a panic or an allocation beyond the maximum.
        let _ = decode_frame::<ClientRequest>(&buf, 1024);
        let _ = decode_frame::<AdminRequest>(&buf, 1024);
        let _ = decode_frame::<Hello>(&buf, 1024);
    }
}

#[test]
fn ack_modes_print_and_parse_as_the_config_spells_them() {
    for (text, ack) in [
        ("async", WriteAck::Async),
        ("semi-sync:2", WriteAck::SemiSync(2)),
        ("quorum", WriteAck::Quorum),
        ("all", WriteAck::All),
    ] {
        assert_eq!(text.parse::<WriteAck>(), Ok(ack));
        assert_eq!(ack.to_string(), text);
    }
    for bad in [
        "",
        "Quorum",
        "semi-sync",
        "semi-sync:",
        "semi-sync:0",
        "semi-sync:-1",
        "majority",
    ] {
        let error = bad.parse::<WriteAck>().unwrap_err();
        assert!(error.contains(bad), "the error names the input: {error}");
    }
}

/// Byte fields are serialized as bytes (copied whole) and keep the
/// encoding a plain `Vec<u8>` (a sequence of `u8`) had, so nodes before and
/// after the change read each other: checked through the frame encoding
/// against structs of the old shape.
#[test]
fn byte_fields_keep_the_encoding_of_a_sequence_of_u8() {
    #[derive(serde::Serialize)]
    struct OldPeerMessage {
        from: String,
        payload: Vec<u8>,
    }
    #[derive(serde::Serialize)]
    enum OldRequest {
        #[allow(dead_code)]
        Get,
        Put {
            key: Vec<u8>,
            value: Vec<u8>,
            ack: Option<WriteAck>,
        },
    }
    let payload: Vec<u8> = (0..=255u8).chain(0..=200).collect();
    let new = PeerMessage {
        from: "n1".into(),
        payload: payload.clone(),
    };
    let old = OldPeerMessage {
        from: "n1".into(),
        payload: payload.clone(),
    };
    let frame = encode_frame(&new, DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(frame, encode_frame(&old, DEFAULT_MAX_FRAME).unwrap());
    let (back, _) = decode_frame::<PeerMessage>(&frame, DEFAULT_MAX_FRAME)
        .unwrap()
        .unwrap();
    assert_eq!(back, new);
    let new = ClientRequest::Put {
        key: b"k".to_vec(),
        value: payload.clone(),
        ack: Some(WriteAck::Quorum),
    };
    let old = OldRequest::Put {
        key: b"k".to_vec(),
        value: payload,
        ack: Some(WriteAck::Quorum),
    };
    let frame = encode_frame(&new, DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(frame, encode_frame(&old, DEFAULT_MAX_FRAME).unwrap());
    let (back, _) = decode_frame::<ClientRequest>(&frame, DEFAULT_MAX_FRAME)
        .unwrap()
        .unwrap();
    assert_eq!(back, new);
}

/// A value as `mimeo status --json` writes it: a JSON string.
fn json<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value).unwrap() {
        serde_json::Value::String(s) => s,
        other => panic!("not a string: {other}"),
    }
}

/// `mimeo status --json` writes the status enums by these names (the same
/// strings the status carried before they were enums), and the table shows
/// the same names, padded.
#[test]
fn status_enums_keep_their_names_in_json_and_tables() {
    for (mode, name) in [
        (NodeMode::Standalone, "standalone"),
        (NodeMode::LeaderFollower, "leader-follower"),
    ] {
        assert_eq!(json(&mode), name);
        assert_eq!(mode.to_string(), name);
    }
    for (role, name) in [
        (NodeRole::Standalone, "standalone"),
        (NodeRole::Leader, "leader"),
        (NodeRole::Candidate, "candidate"),
        (NodeRole::Follower, "follower"),
        (NodeRole::Learner, "learner"),
    ] {
        assert_eq!(json(&role), name);
        assert_eq!(role.to_string(), name);
    }
    for (fsync, name) in [
        (FsyncPolicy::Always, "always"),
        (FsyncPolicy::Batch, "batch"),
        (FsyncPolicy::Never, "never"),
    ] {
        assert_eq!(json(&fsync), name);
        assert_eq!(fsync.to_string(), name);
    }
    assert_eq!(format!("[{:<8}]", NodeRole::Leader), "[leader  ]");
}
