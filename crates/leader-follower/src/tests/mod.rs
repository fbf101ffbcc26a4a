//! Unit tests in the openraft style: one input, the exact outputs. One
//! file per part of the core (`src/core/`), with the helpers they share
//! here.

mod commit;
mod election;
mod replication;
mod requests;
mod restore;
mod snapshots;
mod timers;

use crate::*;

fn pos(term: u64, index: u64) -> LogPosition {
    LogPosition::new(term, index)
}

fn put(term: u64, index: u64, key: &str) -> LogEntry {
    LogEntry {
        position: pos(term, index),
        command: Command::Put {
            key: key.into(),
            value: format!("v{index}").into(),
        },
    }
}

fn noop(term: u64, index: u64) -> LogEntry {
    LogEntry {
        position: pos(term, index),
        command: Command::Noop,
    }
}

/// A founding member's settings (`bootstrap`: it votes from the start).
fn config(id: NodeId, n: u64) -> Config {
    let mut config = Config::new(id, (1..=n).filter(|&p| p != id).collect());
    config.bootstrap = true;
    config
}

fn drain(core: &mut Core) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

fn hard(term: u64, voted_for: Option<NodeId>) -> Output {
    Output::Persist(Persist {
        truncate_from: None,
        entries: Vec::new(),
        hard_state: Some(HardState {
            term,
            voted_for,
            voter: true,
        }),
        ..Persist::default()
    })
}

fn send(to: NodeId, msg: PeerMsg) -> Output {
    Output::Send { to, msg }
}

fn reply(req_id: RequestId, reply: Reply) -> Output {
    Output::Reply { req_id, reply }
}

/// The reply acknowledging request `req_id`'s write at `position`.
fn written(req_id: RequestId, position: LogPosition) -> Output {
    reply(req_id, Reply::Written { position })
}

fn ok(term: u64, matched: u64, durable: u64) -> PeerMsg {
    PeerMsg::AppendResp {
        term,
        result: AppendResult::Ok { matched, durable },
        voter: true,
    }
}

fn put_op(key: &str) -> ClientOp {
    ClientOp::Put {
        key: key.into(),
        value: b"x".to_vec(),
    }
}

/// Let `core`'s election timeout pass at `now` and grant its pre-vote
/// (from node 2): it starts the real election, for `term`.
fn campaign(core: &mut Core, now: Millis, term: u64) {
    core.tick(now);
    core.handle_peer(
        now,
        2,
        PeerMsg::PreVoteResp {
            term,
            granted: true,
        },
    );
    assert_eq!((core.role(), core.term()), (Role::Candidate, term));
}

/// Node 1 of an `n`-node cluster, elected in term 1 at time 1000, its no-op
/// durable and acknowledged by every follower (so committed).
fn leader(n: u64, mut config: Config) -> Core {
    config.id = 1;
    config.peers = (2..=n).collect();
    let mut core = Core::new(config, Millis(0)).unwrap();
    campaign(&mut core, Millis(1000), 1);
    for p in 2..=n {
        core.handle_peer(
            Millis(1000),
            p,
            PeerMsg::Vote {
                term: 1,
                granted: true,
            },
        );
    }
    assert_eq!(core.role(), Role::Leader);
    core.persisted(Millis(1000), pos(1, 1));
    for p in 2..=n {
        core.handle_peer(Millis(1000), p, ok(1, 1, 1));
    }
    assert_eq!(core.commit_index(), 1);
    drain(&mut core);
    core
}

fn heartbeat(term: u64, seq: u64) -> PeerMsg {
    PeerMsg::Heartbeat {
        term,
        commit: 0,
        leader_commit: 0,
        seq,
        settled: false,
        sent_at: Millis(0),
    }
}

/// Node 2 of 3, following node 1 in term 1, which last spoke at time 100.
fn follower_of_1() -> Core {
    let mut core = Core::new(config(2, 3), Millis(0)).unwrap();
    core.handle_peer(Millis(100), 1, heartbeat(1, 1));
    drain(&mut core);
    core
}

/// Only the replies among `core`'s outputs.
fn replies(core: &mut Core) -> Vec<Output> {
    drain(core)
        .into_iter()
        .filter(|o| matches!(o, Output::Reply { .. }))
        .collect()
}

fn snapshot_config(id: NodeId, n: u64) -> Config {
    let mut c = config(id, n);
    c.snapshot_every = 5;
    c.snapshot_keep = 2;
    c.snapshot_chunk_bytes = 16;
    c
}

fn kv_of(entries: &[LogEntry]) -> Snapshot {
    let mut kv = crate::KeyValues::new();
    let mut last = pos(0, 0);
    for e in entries {
        if let Command::Put { key, value } = &e.command {
            kv.insert(key.clone(), (Some(value.clone()), e.position));
        }
        last = e.position;
    }
    Snapshot { last, kv }
}

fn put_value(key: &str, len: usize) -> ClientOp {
    ClientOp::Put {
        key: key.into(),
        value: vec![b'v'; len],
    }
}
