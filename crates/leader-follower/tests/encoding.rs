//! A log entry's key and value are serialized as bytes (copied whole, not
//! byte by byte), keeping the postcard encoding a plain `Vec<u8>` had: logs,
//! snapshots and appends written before the change read the same.

use mimeo_leader_follower::Command;

#[test]
fn byte_fields_keep_the_encoding_of_a_sequence_of_u8() {
    #[derive(serde::Serialize)]
    enum OldCommand {
        #[allow(dead_code)]
        Noop,
        Put {
            key: Vec<u8>,
            value: Vec<u8>,
        },
    }
    let value: Vec<u8> = (0..=255u8).chain(0..=100).collect();
    let new = Command::Put {
        key: b"key".to_vec(),
        value: value.clone(),
    };
    let old = OldCommand::Put {
        key: b"key".to_vec(),
        value,
    };
    let bytes = postcard::to_allocvec(&new).unwrap();
    assert_eq!(bytes, postcard::to_allocvec(&old).unwrap());
    assert_eq!(postcard::from_bytes::<Command>(&bytes).unwrap(), new);
    // JSON (hard state and status tools) too: an array of numbers.
    let json = serde_json::to_string(&new).unwrap();
    assert_eq!(json, serde_json::to_string(&old).unwrap());
    assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), new);
}
