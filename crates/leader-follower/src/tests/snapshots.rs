//! Snapshots: taking them, dropping the log once durable, and shipping them to a follower.

use super::*;

/// On a leader from [`leader`], commit puts of `keys` with node 2's
/// acknowledgement only; returns the outputs.
fn commit_puts(core: &mut Core, now: Millis, keys: &[&str]) -> Vec<Output> {
    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let position = core.last_position();
        let index = position.index + 1;
        core.handle_client(now, 100 + i as u64, put_op(key), None);
        core.persisted(now, pos(core.term(), index));
        core.handle_peer(now, 2, ok(core.term(), index, index));
        assert_eq!(core.commit_index(), index);
        out.extend(drain(core));
    }
    out
}

fn snapshots_in(out: &[Output]) -> Vec<LogPosition> {
    out.iter()
        .filter_map(|o| match o {
            Output::Persist(Persist {
                snapshot: Some(s), ..
            }) => Some(s.last),
            _ => None,
        })
        .collect()
}

/// Deliver messages between `a` and `b` (and perform their persists on an
/// instant disk) until both are quiet; returns every message sent.
fn exchange(a: &mut Core, b: &mut Core, now: Millis) -> Vec<PeerMsg> {
    let mut sent = Vec::new();
    while pump(a, b, now, &mut sent) | pump(b, a, now, &mut sent) {}
    sent
}

/// Perform `from`'s outputs; whether there were any.
fn pump(from: &mut Core, to: &mut Core, now: Millis, sent: &mut Vec<PeerMsg>) -> bool {
    let out = drain(from);
    let any = !out.is_empty();
    for output in out {
        match output {
            Output::Send { to: id, msg } if id == to.id() => {
                sent.push(msg.clone());
                to.handle_peer(now, from.id(), msg);
            }
            Output::Persist(p) => {
                if let Some(s) = &p.snapshot {
                    from.snapshot_persisted(now, s.last);
                }
                if let Some(last) = p.entries.last() {
                    from.persisted(now, last.position);
                }
            }
            _ => {}
        }
    }
    any
}

fn install(term: u64, last: LogPosition, snapshot: &Snapshot) -> PeerMsg {
    PeerMsg::InstallSnapshot {
        term,
        last,
        offset: 0,
        data: snapshot.encode(),
        done: true,
    }
}

#[test]
fn a_snapshot_is_taken_at_the_threshold_and_the_log_dropped_only_once_durable() {
    let mut core = leader(3, snapshot_config(1, 3));
    let now = Millis(1000);
    // The no-op is entry 1: three more applied entries are not enough.
    let out = commit_puts(&mut core, now, &["a", "b", "c"]);
    assert_eq!(snapshots_in(&out), vec![]);
    let out = commit_puts(&mut core, now, &["d"]);
    assert_eq!(snapshots_in(&out), vec![pos(1, 5)]);
    // Not durable yet: the whole log is still held, and another snapshot
    // is not taken while this one is written.
    let out = commit_puts(&mut core, now, &["e", "f", "g", "h", "i"]);
    assert_eq!(snapshots_in(&out), vec![]);
    assert_eq!(core.first_index(), 1);
    assert!(core.entry(1).is_some());
    assert!(core.snapshot().is_none());
    // Durable: the log is cut to `snapshot_keep` entries at and below 5,
    // and the driver is told it may discard the rest from disk.
    core.snapshot_persisted(now, pos(1, 5));
    assert_eq!(
        drain(&mut core),
        vec![Output::Persist(Persist {
            discard_before: Some(4),
            ..Persist::default()
        })]
    );
    assert_eq!(core.first_index(), 4);
    assert_eq!(core.entry(3), None);
    assert_eq!(core.entry(4).unwrap().position, pos(1, 4));
    assert_eq!(core.snapshot().unwrap().last, pos(1, 5));
    assert_eq!(core.snapshot().unwrap().kv.len(), 4);
    assert_eq!(core.status(now).snapshot, pos(1, 5));
    // A stale notice changes nothing.
    core.snapshot_persisted(now, pos(1, 5));
    assert_eq!(drain(&mut core), vec![]);
    // The next snapshot comes 5 applied entries after the last one (10).
    let out = commit_puts(&mut core, now, &["j"]);
    assert_eq!(snapshots_in(&out), vec![pos(1, 11)]);
}

#[test]
fn a_follower_behind_the_first_index_gets_the_snapshot_and_ends_with_the_leaders_kv() {
    let mut leader = leader(3, snapshot_config(1, 3));
    let now = Millis(1000);
    let keys: Vec<String> = (0..12).map(|i| format!("key{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    commit_puts(&mut leader, now, &keys[..4]);
    leader.snapshot_persisted(now, pos(1, 5));
    commit_puts(&mut leader, now, &keys[4..]);
    leader.snapshot_persisted(now, pos(1, 10));
    drain(&mut leader);
    assert_eq!(leader.first_index(), 9);
    // Node 3 lost everything (a new disk).
    let mut follower = Core::new(snapshot_config(3, 3), Millis(0)).unwrap();
    // Past the retransmission timeout, within the election timeout.
    let later = now.plus(300);
    leader.tick(later);
    let sent = exchange(&mut leader, &mut follower, later);
    let chunks = sent
        .iter()
        .filter(|m| matches!(m, PeerMsg::InstallSnapshot { .. }))
        .count();
    assert!(chunks > 1, "the snapshot went in {chunks} chunk(s)");
    let data_per_chunk = sent.iter().all(|m| match m {
        PeerMsg::InstallSnapshot { data, .. } => data.len() <= 16,
        _ => true,
    });
    assert!(data_per_chunk);
    assert_eq!(follower.snapshot().unwrap().last, pos(1, 10));
    assert_eq!(follower.first_index(), 11);
    // The entries after the snapshot came by appends.
    assert_eq!(follower.last_position(), leader.last_position());
    let last = leader.last_position().index;
    assert_eq!(
        leader.status(later).followers[1].match_index,
        last,
        "{:?}",
        leader.status(later)
    );
    leader.tick(later.plus(50));
    exchange(&mut leader, &mut follower, later.plus(50));
    assert_eq!(follower.applied_index(), leader.applied_index());
    for key in &keys {
        assert_eq!(
            follower.applied_value(key.as_bytes()),
            leader.applied_value(key.as_bytes()),
            "{key}"
        );
    }
}

#[test]
fn a_stale_term_snapshot_is_refused() {
    let hard_state = HardState {
        term: 2,
        voted_for: None,
        voter: true,
    };
    let log = vec![noop(1, 1)];
    let mut core = Core::recover(config(2, 3), Millis(0), hard_state, log).unwrap();
    let snapshot = kv_of(&[noop(1, 1), put(1, 2, "a")]);
    core.handle_peer(Millis(10), 1, install(1, pos(1, 2), &snapshot));
    assert_eq!(
        drain(&mut core),
        vec![send(
            1,
            PeerMsg::HeartbeatResp {
                term: 2,
                seq: 0,
                voter: true
            }
        )]
    );
    assert_eq!(core.applied_value(b"a"), None);
    assert_eq!(core.leader(), None);
    // The same snapshot in the current term is installed.
    core.handle_peer(Millis(10), 1, install(2, pos(1, 2), &snapshot));
    assert_eq!(core.applied_index(), 2);
    assert!(core.applied_value(b"a").is_some());
}

#[test]
fn a_follower_with_a_matching_suffix_keeps_it_and_answers_once_durable() {
    let log = vec![noop(1, 1), put(1, 2, "a"), put(1, 3, "b"), put(1, 4, "c")];
    let hard_state = HardState {
        term: 1,
        voted_for: None,
        voter: true,
    };
    let mut core = Core::recover(config(2, 3), Millis(0), hard_state, log.clone()).unwrap();
    let snapshot = kv_of(&log[..3]);
    core.handle_peer(Millis(10), 1, install(1, pos(1, 3), &snapshot));
    assert_eq!(
        drain(&mut core),
        vec![Output::Persist(Persist {
            snapshot: Some(std::sync::Arc::new(snapshot.clone())),
            ..Persist::default()
        })]
    );
    assert_eq!(core.entry(4), Some(&log[3]));
    assert_eq!((core.commit_index(), core.applied_index()), (3, 3));
    // The answer waits for durability.
    core.snapshot_persisted(Millis(11), pos(1, 3));
    let out = drain(&mut core);
    assert_eq!(out[0], send(1, ok(1, 3, 3)));
    assert_eq!(core.first_index(), 1); // within `snapshot_keep` (1000)
    assert_eq!(core.last_position(), pos(1, 4));

    // A log that holds another term at the snapshot's index is replaced.
    let divergent = vec![noop(1, 1), put(1, 2, "a"), put(2, 3, "x"), put(2, 4, "y")];
    let hard_state = HardState {
        term: 3,
        voted_for: None,
        voter: true,
    };
    let mut core = Core::recover(config(2, 3), Millis(0), hard_state, divergent).unwrap();
    let snapshot = kv_of(&[noop(1, 1), put(1, 2, "a"), put(3, 3, "b")]);
    core.handle_peer(Millis(10), 1, install(3, pos(3, 3), &snapshot));
    let out = drain(&mut core);
    assert!(
        matches!(
            &out[..],
            [Output::Persist(Persist {
                snapshot: Some(_),
                replace_log: true,
                ..
            })]
        ),
        "{out:?}"
    );
    assert_eq!(core.entry(4), None);
    assert_eq!(core.last_position(), pos(3, 3));
    assert_eq!(core.applied_value(b"b").unwrap().1, pos(3, 3));
    assert_eq!(core.applied_value(b"x"), None);
}

/// Issue 19: snapshots were triggered by entry count only, so large values
/// kept the whole log since the last snapshot in memory. A snapshot is now
/// also taken after `snapshot_bytes` of applied entries, and the tail kept
/// behind it holds at most a quarter of that.
#[test]
fn a_snapshot_is_taken_after_snapshot_bytes_and_keeps_a_bounded_tail() {
    let mut c = config(1, 3);
    c.snapshot_every = 100_000;
    c.snapshot_keep = 1_000;
    c.snapshot_bytes = 2_000;
    let mut core = leader(3, c);
    let mut snapshot = None;
    for i in 0..10u64 {
        let now = Millis(1000 + i);
        core.handle_client(now, 10 + i, put_value("k", 300), None);
        core.persisted(now, pos(1, 2 + i));
        core.handle_peer(now, 2, ok(1, 2 + i, 2 + i));
        for output in drain(&mut core) {
            if let Output::Persist(Persist {
                snapshot: Some(s), ..
            }) = output
            {
                snapshot.get_or_insert(s.last);
            }
        }
    }
    // About 310 bytes an entry: the seventh one passes 2,000.
    assert_eq!(snapshot, Some(pos(1, 8)));
    core.snapshot_persisted(Millis(2000), pos(1, 8));
    // 500 bytes of tail: one entry.
    assert_eq!(core.first_index(), 8);
    assert_eq!(core.commit_index(), 11);
}
