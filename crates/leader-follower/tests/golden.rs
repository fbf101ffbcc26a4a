//! Golden bytes of the leader-follower formats, committed under
//! `testdata/`:
//!
//! - `hard-state.json`: the hard-state file (`leader-follower.state`),
//!   JSON, byte for byte as the driver writes it;
//! - `snapshot-payload.bin`: the snapshot encoding ([`Snapshot::encode`],
//!   postcard), which the snapshot file (`leader-follower.snapshot`)
//!   stores after its 44-byte header and `InstallSnapshot` chunks carry;
//! - `snapshot-file.bin`: the whole snapshot file, its 44-byte header
//!   (magic, format version, length, checksum) and that payload, as the
//!   driver writes and reads it through the storage backend;
//! - `log-entries.bin`: log entries (postcard), one of each [`Command`], as
//!   `Append` carries them and the log stores each command;
//! - `peer-messages.bin`: one [`PeerMsg`] of every variant (postcard, the
//!   payload of a `mimeo_wire::PeerMessage`).
//!
//! Each test decodes the committed bytes into exactly the expected values
//! and encodes them back to the same bytes, through the encode and decode
//! functions the driver uses (not its file I/O, which has its own tests).
//! A reordered or inserted variant, or a moved field, fails here. Such a
//! change needs a version step: `mimeo_wire::PROTOCOL_VERSION` for peer
//! messages and snapshot chunks, the snapshot file's format version for
//! snapshots, and a compatible reading of old files for the hard state and
//! the log (see the crate docs, *Versioning*).
//!
//! The files are written only on request, never silently:
//! `UPDATE_GOLDEN=1 cargo test -p mimeo-leader-follower --test golden`, and
//! the diff is reviewed and committed with the version step.

use std::path::Path;

use mimeo_leader_follower::{
    driver, AppendResult, Command, HardState, KeyValues, LogEntry, LogPosition, Millis, PeerMsg,
    Snapshot,
};

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
            "{}: {e}; generate it with UPDATE_GOLDEN=1 cargo test -p mimeo-leader-follower --test golden",
            path.display()
        )
    })
}

fn at(term: u64, index: u64) -> LogPosition {
    LogPosition::new(term, index)
}

/// One entry of each command.
fn entries() -> Vec<LogEntry> {
    vec![
        LogEntry {
            position: at(3, 10),
            command: Command::Noop,
        },
        LogEntry {
            position: at(3, 11),
            command: Command::Put {
                key: b"k".to_vec(),
                value: vec![0, 1, 255],
            },
        },
        LogEntry {
            position: at(3, 12),
            command: Command::Delete { key: b"k".to_vec() },
        },
    ]
}

/// One message of every variant (two for `AppendResp`, one per result).
fn messages() -> Vec<PeerMsg> {
    vec![
        PeerMsg::RequestVote {
            term: 4,
            last: at(3, 12),
            transfer: true,
        },
        PeerMsg::Vote {
            term: 4,
            granted: true,
        },
        PeerMsg::Append {
            term: 4,
            prev: at(3, 9),
            entries: entries(),
            commit: 9,
        },
        PeerMsg::AppendResp {
            term: 4,
            result: AppendResult::Ok {
                matched: 12,
                durable: 11,
            },
            voter: true,
        },
        PeerMsg::AppendResp {
            term: 4,
            result: AppendResult::Conflict { hint: 5 },
            voter: false,
        },
        PeerMsg::Heartbeat {
            term: 4,
            commit: 11,
            leader_commit: 12,
            seq: 77,
            sent_at: Millis(123_456),
            settled: true,
        },
        PeerMsg::HeartbeatResp {
            term: 4,
            seq: 77,
            voter: true,
        },
        PeerMsg::TimeoutNow { term: 4 },
        PeerMsg::PreVote {
            term: 5,
            last: at(4, 12),
        },
        PeerMsg::PreVoteResp {
            term: 5,
            granted: false,
        },
        PeerMsg::InstallSnapshot {
            term: 4,
            last: at(3, 12),
            offset: 4096,
            data: vec![9, 8, 7],
            done: false,
        },
        PeerMsg::SnapshotAck {
            term: 4,
            last: at(3, 12),
            next_offset: 4099,
        },
    ]
}

#[test]
fn the_hard_state_file() {
    let state = HardState {
        term: 7,
        voted_for: Some(2),
        voter: true,
    };
    // As the driver writes it: compact JSON.
    let encoded = serde_json::to_vec(&state).unwrap();
    let fixed = golden("hard-state.json", &encoded);
    let decoded: HardState = serde_json::from_slice(&fixed).unwrap();
    assert_eq!(decoded, state);
    assert_eq!(serde_json::to_vec(&decoded).unwrap(), fixed);
    // Hard states written before `voter` existed were voters'.
    let old: HardState = serde_json::from_str(r#"{"term":7,"voted_for":2}"#).unwrap();
    assert_eq!(old, state);
}

/// The snapshot every snapshot test uses.
fn snapshot() -> Snapshot {
    let mut kv = KeyValues::new();
    kv.insert(b"alpha".to_vec(), (Some(b"one".to_vec()), at(2, 5)));
    kv.insert(b"beta".to_vec(), (None, at(3, 12)));
    Snapshot {
        last: at(3, 12),
        kv,
    }
}

#[test]
fn the_snapshot_file_header_and_all() {
    // The whole file, header (magic, version, length, checksum) included,
    // as the driver writes and reads it through the storage backend.
    let dir = tempfile::tempdir().unwrap();
    let backend = mimeo_storage::FsBackend::new(dir.path()).unwrap();
    driver::write_snapshot(&backend, &snapshot()).unwrap();
    let written = std::fs::read(dir.path().join(driver::SNAPSHOT_FILE)).unwrap();
    let fixed = golden("snapshot-file.bin", &written);
    assert_eq!(written, fixed, "the snapshot file's bytes changed");
    std::fs::write(dir.path().join(driver::SNAPSHOT_FILE), &fixed).unwrap();
    assert_eq!(driver::read_snapshot(&backend).unwrap(), Some(snapshot()));
}

#[test]
fn the_snapshot_encoding() {
    let snapshot = snapshot();
    let fixed = golden("snapshot-payload.bin", &snapshot.encode());
    let decoded = Snapshot::decode(&fixed).unwrap();
    assert_eq!(decoded, snapshot);
    assert_eq!(decoded.encode(), fixed);
}

#[test]
fn log_entries() {
    let fixed = golden(
        "log-entries.bin",
        &postcard::to_allocvec(&entries()).unwrap(),
    );
    let decoded: Vec<LogEntry> = postcard::from_bytes(&fixed).unwrap();
    assert_eq!(decoded, entries());
    assert_eq!(postcard::to_allocvec(&decoded).unwrap(), fixed);
}

#[test]
fn every_peer_message() {
    let fixed = golden(
        "peer-messages.bin",
        &postcard::to_allocvec(&messages()).unwrap(),
    );
    let decoded: Vec<PeerMsg> = postcard::from_bytes(&fixed).unwrap();
    assert_eq!(decoded, messages());
    assert_eq!(postcard::to_allocvec(&decoded).unwrap(), fixed);
}
