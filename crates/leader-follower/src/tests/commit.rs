//! Commit and apply: ack modes, the current-term rule, a one-node cluster, the live key count.

use super::*;

#[test]
fn ack_modes_decide_when_the_client_hears_back() {
    let mut core = leader(3, config(1, 3));
    let now = Millis(1100);
    core.handle_client(now, 10, put_op("a"), Some(AckMode::Async));
    core.handle_client(now, 11, put_op("b"), Some(AckMode::SemiSync(1)));
    core.handle_client(now, 12, put_op("c"), Some(AckMode::Quorum));
    core.handle_client(now, 13, put_op("d"), Some(AckMode::All));
    assert_eq!(replies(&mut core), vec![]);
    // The leader's disk: async is acknowledged, before any follower has it.
    core.persisted(now, pos(1, 5));
    assert_eq!(replies(&mut core), vec![written(10, pos(1, 2))]);
    assert_eq!(core.commit_index(), 1);
    // One follower durable through 5: semi-sync:1, and a majority: quorum.
    core.handle_peer(now, 2, ok(1, 5, 5));
    assert_eq!(
        replies(&mut core),
        vec![written(11, pos(1, 3)), written(12, pos(1, 4))]
    );
    assert_eq!(core.commit_index(), 5);
    // The last follower: all.
    core.handle_peer(now, 3, ok(1, 5, 5));
    assert_eq!(replies(&mut core), vec![written(13, pos(1, 5))]);
}

#[test]
fn a_follower_ack_of_entries_not_yet_durable_does_not_count() {
    let mut core = leader(3, config(1, 3));
    let now = Millis(1100);
    core.handle_client(now, 10, put_op("a"), None);
    core.persisted(now, pos(1, 2));
    core.handle_peer(now, 2, ok(1, 2, 1));
    assert_eq!(core.commit_index(), 1);
    core.handle_peer(now, 2, ok(1, 2, 2));
    assert_eq!(core.commit_index(), 2);
}

#[test]
fn entries_of_an_earlier_term_commit_only_through_one_of_the_current_term() {
    // Node 1 has entry 2 of term 1 that nobody else has; it is elected in
    // term 2 and appends its no-op at 3.
    let hard_state = HardState {
        term: 1,
        voted_for: None,
        voter: true,
    };
    let log = vec![noop(1, 1), put(1, 2, "a")];
    let mut core = Core::recover(config(1, 3), Millis(0), hard_state, log).unwrap();
    campaign(&mut core, Millis(1000), 2);
    core.handle_peer(
        Millis(1000),
        2,
        PeerMsg::Vote {
            term: 2,
            granted: true,
        },
    );
    assert_eq!(core.role(), Role::Leader);
    // A follower acknowledges entry 2 (term 1) durably: a majority holds
    // it, but it is not of term 2, so it does not commit by counting.
    core.handle_peer(Millis(1000), 2, ok(2, 2, 2));
    assert_eq!(core.commit_index(), 0);
    core.persisted(Millis(1000), pos(2, 3));
    core.handle_peer(Millis(1000), 2, ok(2, 3, 3));
    assert_eq!(core.commit_index(), 3);
}

#[test]
fn a_single_node_cluster_commits_on_its_own_disk() {
    let mut core = Core::new(Config::new(1, vec![]), Millis(0)).unwrap();
    core.tick(core.next_timeout());
    assert_eq!(core.role(), Role::Leader);
    core.handle_client(Millis(700), 1, put_op("a"), None);
    assert!(!drain(&mut core)
        .iter()
        .any(|o| matches!(o, Output::Reply { .. })));
    core.persisted(Millis(700), pos(1, 2));
    assert_eq!(drain(&mut core), vec![written(1, pos(1, 2))]);
    core.handle_client(
        Millis(701),
        2,
        ClientOp::Get {
            key: b"a".to_vec(),
            consistency: None,
        },
        None,
    );
    assert!(matches!(
        &drain(&mut core)[..],
        [Output::Reply {
            reply: Reply::Value { value: Some(_), .. },
            ..
        }]
    ));
}

#[test]
fn live_keys_count_values_not_tombstones() {
    let mut core = Core::new(Config::new(1, vec![]), Millis(0)).unwrap();
    core.tick(core.next_timeout());
    assert_eq!(core.role(), Role::Leader);
    let delete = |key: &str| ClientOp::Delete { key: key.into() };
    // Index 1 is the leader's noop.
    let ops = [
        put_op("a"),
        put_op("b"),
        put_op("a"),
        delete("a"),
        delete("c"),
    ];
    let mut live = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        let index = i as u64 + 2;
        core.handle_client(Millis(700 + index), index, op, None);
        core.persisted(Millis(700 + index), pos(1, index));
        drain(&mut core);
        live.push(core.status(Millis(700 + index)).live_keys);
    }
    assert_eq!(live, [1, 2, 2, 1, 1]);
}
