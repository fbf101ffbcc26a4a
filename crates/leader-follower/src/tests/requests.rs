//! Client requests: held requests, leader, follower and session reads, cas, timeouts and bad requests.

use super::*;

#[test]
fn a_node_that_knows_no_leader_holds_requests_and_serves_them_if_it_wins() {
    let mut core = Core::new(config(1, 3), Millis(0)).unwrap();
    campaign(&mut core, Millis(1000), 1);
    // A candidate knows no leader: writes, cas and leader reads wait...
    core.handle_client(Millis(1001), 10, put_op("a"), Some(AckMode::Async));
    core.handle_client(
        Millis(1002),
        11,
        ClientOp::Get {
            key: b"a".to_vec(),
            consistency: Some(ReadMode::Leader),
        },
        None,
    );
    // ... follower reads do not.
    core.handle_client(
        Millis(1003),
        12,
        ClientOp::Get {
            key: b"a".to_vec(),
            consistency: Some(ReadMode::Follower {
                max_staleness_ms: None,
            }),
        },
        None,
    );
    assert_eq!(
        replies(&mut core),
        vec![reply(
            12,
            Reply::Value {
                value: None,
                version: pos(0, 0),
                applied: pos(0, 0),
            }
        )]
    );
    assert!(core.next_timeout() <= Millis(1001 + 600));
    // It wins: the held write is appended after its no-op, under the ack
    // mode it asked for (async: acknowledged once the leader's disk has it).
    core.handle_peer(
        Millis(1005),
        2,
        PeerMsg::Vote {
            term: 1,
            granted: true,
        },
    );
    assert_eq!(core.role(), Role::Leader);
    assert_eq!(core.last_position(), pos(1, 2));
    // The held leader read started a heartbeat round, as any leader read.
    let seq = drain(&mut core)
        .into_iter()
        .filter_map(|o| match o {
            Output::Send {
                to: 2,
                msg: PeerMsg::Heartbeat { seq, .. },
            } => Some(seq),
            _ => None,
        })
        .max()
        .expect("a heartbeat to node 2");
    core.persisted(Millis(1006), pos(1, 2));
    assert_eq!(replies(&mut core), vec![written(10, pos(1, 2))]);
    // Node 2 answers the round and holds the write: the read sees it.
    core.handle_peer(
        Millis(1007),
        2,
        PeerMsg::HeartbeatResp {
            term: 1,
            seq,
            voter: true,
        },
    );
    core.handle_peer(Millis(1007), 2, ok(1, 2, 2));
    assert_eq!(
        replies(&mut core),
        vec![reply(
            11,
            Reply::Value {
                value: Some(b"x".to_vec()),
                version: pos(1, 2),
                applied: pos(1, 2),
            }
        )]
    );
}

#[test]
fn a_follower_redirects_at_once_to_a_leader_it_just_heard_and_holds_while_it_is_silent() {
    // Node 1 last spoke at 100; a heartbeat interval is 50 ms.
    let mut core = follower_of_1();
    let hint = Reply::NotLeader {
        leader_hint: Some(1),
    };
    core.handle_client(Millis(170), 10, put_op("a"), None);
    assert_eq!(replies(&mut core), vec![reply(10, hint.clone())]);
    // 75 ms of silence: node 1 may be gone; wait and see.
    core.handle_client(Millis(175), 11, put_op("b"), None);
    assert_eq!(replies(&mut core), vec![]);
    core.handle_peer(Millis(190), 1, heartbeat(1, 2));
    assert_eq!(replies(&mut core), vec![reply(11, hint)]);
}

#[test]
fn what_a_leaderless_node_holds_is_bounded_in_requests_and_bytes() {
    let no_hint = Reply::NotLeader { leader_hint: None };
    let mut core = Core::new(config(2, 3), Millis(0)).unwrap();
    for req_id in 0..1024 {
        core.handle_client(Millis(10), req_id, put_op("k"), None);
    }
    assert_eq!(replies(&mut core), vec![]);
    core.handle_client(Millis(10), 1024, put_op("k"), None);
    assert_eq!(replies(&mut core), vec![reply(1024, no_hint.clone())]);

    let mut core = Core::new(config(2, 3), Millis(0)).unwrap();
    let big = |req_id| ClientOp::Put {
        key: format!("big-{req_id}").into_bytes(),
        value: vec![0; 9 * 1024 * 1024],
    };
    core.handle_client(Millis(10), 1, big(1), None);
    core.handle_client(Millis(10), 2, big(2), None);
    assert_eq!(replies(&mut core), vec![reply(2, no_hint.clone())]);
    // Once the first is answered, there is room again.
    let mut now = Millis(10);
    while core.next_timeout() <= Millis(10 + 600) {
        now = core.next_timeout();
        core.tick(now);
    }
    assert_eq!(replies(&mut core), vec![reply(1, no_hint)]);
    core.handle_client(now, 3, big(3), None);
    assert_eq!(replies(&mut core), vec![]);
}

#[test]
fn held_requests_get_the_new_leaders_hint_or_give_up_after_an_election_timeout() {
    // Node 2 granted node 3 its vote in term 2: it knows no leader.
    let mut core = follower_of_1();
    core.handle_peer(
        Millis(500),
        3,
        PeerMsg::RequestVote {
            term: 2,
            last: pos(0, 0),
            transfer: false,
        },
    );
    assert_eq!((core.term(), core.leader()), (2, None));
    core.handle_client(Millis(510), 10, put_op("a"), None);
    core.handle_client(Millis(520), 11, put_op("b"), None);
    assert_eq!(replies(&mut core), vec![]);
    // Node 3's first heartbeat names it: both are sent there.
    core.handle_peer(Millis(530), 3, heartbeat(2, 1));
    let hint = Reply::NotLeader {
        leader_hint: Some(3),
    };
    assert_eq!(
        replies(&mut core),
        vec![reply(10, hint.clone()), reply(11, hint)]
    );
    // A known leader: the client is sent there at once.
    core.handle_client(Millis(540), 12, put_op("c"), None);
    assert_eq!(
        replies(&mut core),
        vec![reply(
            12,
            Reply::NotLeader {
                leader_hint: Some(3)
            }
        )]
    );

    // No election ends: a held request is answered after the longest
    // election timeout, with no hint.
    let mut lonely = Core::new(config(2, 3), Millis(0)).unwrap();
    lonely.handle_client(Millis(10), 20, put_op("d"), None);
    let mut now = Millis(10);
    while replies(&mut lonely).is_empty() {
        assert!(now < Millis(10 + 600), "still held at {now:?}");
        now = lonely.next_timeout();
        lonely.tick(now);
    }
    assert_eq!(now, Millis(10 + 600));
}

#[test]
fn a_leader_read_waits_for_a_heartbeat_round_of_a_majority() {
    let mut core = leader(3, config(1, 3));
    let now = Millis(1100);
    let get = ClientOp::Get {
        key: b"k".to_vec(),
        consistency: Some(ReadMode::Leader),
    };
    core.handle_client(now, 10, get, None);
    let hb = |to| {
        send(
            to,
            PeerMsg::Heartbeat {
                term: 1,
                commit: 1,
                leader_commit: 1,
                seq: 2,
                // The leader's commit index is of its own term.
                settled: true,
                sent_at: now,
            },
        )
    };
    assert_eq!(drain(&mut core), vec![hb(2), hb(3)]);
    // An answer to an older round proves nothing about this read.
    core.handle_peer(
        now,
        2,
        PeerMsg::HeartbeatResp {
            term: 1,
            seq: 1,
            voter: true,
        },
    );
    assert_eq!(drain(&mut core), vec![]);
    core.handle_peer(
        now,
        3,
        PeerMsg::HeartbeatResp {
            term: 1,
            seq: 2,
            voter: true,
        },
    );
    assert_eq!(
        drain(&mut core),
        vec![reply(
            10,
            Reply::Value {
                value: None,
                version: pos(0, 0),
                applied: pos(1, 1)
            }
        )]
    );
}

#[test]
fn a_leader_read_waits_for_async_writes_it_acknowledged() {
    let mut core = leader(3, config(1, 3));
    let now = Millis(1100);
    core.handle_client(now, 10, put_op("k"), Some(AckMode::Async));
    core.persisted(now, pos(1, 2));
    let get = ClientOp::Get {
        key: b"k".to_vec(),
        consistency: Some(ReadMode::Leader),
    };
    core.handle_client(now, 11, get, None);
    core.handle_peer(
        now,
        2,
        PeerMsg::HeartbeatResp {
            term: 1,
            seq: 2,
            voter: true,
        },
    );
    let replies: Vec<RequestId> = drain(&mut core)
        .into_iter()
        .filter_map(|o| match o {
            Output::Reply { req_id, .. } => Some(req_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        replies,
        vec![10],
        "the read must wait for the write to commit"
    );
    core.handle_peer(now, 2, ok(1, 2, 2));
    let out = drain(&mut core);
    assert!(
        out.contains(&reply(
            11,
            Reply::Value {
                value: Some(b"x".to_vec()),
                version: pos(1, 2),
                applied: pos(1, 2)
            }
        )),
        "{out:?}"
    );
}

#[test]
fn cas_mismatch_is_confirmed_by_a_read_round_and_a_match_writes() {
    let mut core = leader(3, config(1, 3));
    let now = Millis(1100);
    let cas = |expected: Option<&str>| ClientOp::Cas {
        key: b"k".to_vec(),
        expected: expected.map(|e| e.as_bytes().to_vec()),
        new: b"n".to_vec(),
    };
    core.handle_client(now, 10, cas(Some("zz")), None);
    let out = drain(&mut core);
    assert!(!out.iter().any(|o| matches!(o, Output::Reply { .. })));
    assert!(!out.iter().any(|o| matches!(o, Output::Persist(_))));
    core.handle_peer(
        now,
        2,
        PeerMsg::HeartbeatResp {
            term: 1,
            seq: 2,
            voter: true,
        },
    );
    assert_eq!(
        drain(&mut core),
        vec![reply(10, Reply::CasMismatch { current: None })]
    );
    core.handle_client(now, 11, cas(None), None);
    let out = drain(&mut core);
    assert!(out.contains(&Output::Persist(Persist {
        truncate_from: None,
        entries: vec![LogEntry {
            position: pos(1, 2),
            command: Command::Put {
                key: b"k".to_vec(),
                value: b"n".to_vec()
            }
        }],
        ..Persist::default()
    })));
}

#[test]
fn writes_that_time_out_are_unknown_not_failed() {
    let mut core = leader(3, config(1, 3));
    core.handle_client(Millis(1100), 10, put_op("a"), None);
    drain(&mut core);
    // Node 2 answers heartbeats (so the leader keeps leading) but never
    // makes the entry durable.
    let (now, timed_out) = loop {
        let now = core.next_timeout();
        core.tick(now);
        core.handle_peer(
            now,
            2,
            PeerMsg::HeartbeatResp {
                term: 1,
                seq: 0,
                voter: true,
            },
        );
        let out = drain(&mut core);
        if out.iter().any(|o| matches!(o, Output::Reply { .. })) {
            break (now, out);
        }
    };
    assert_eq!(now, Millis(3100));
    assert_eq!(core.role(), Role::Leader);
    assert!(timed_out.contains(&reply(
        10,
        Reply::Unknown {
            reason: Unknown::TimedOut
        }
    )));
}

#[test]
fn follower_reads_respect_the_staleness_bound() {
    let mut core = Core::new(config(2, 3), Millis(0)).unwrap();
    let get = |max| ClientOp::Get {
        key: b"k".to_vec(),
        consistency: Some(ReadMode::Follower {
            max_staleness_ms: max,
        }),
    };
    core.handle_client(Millis(5), 1, get(Some(100)), None);
    let never = Reply::Unavailable {
        reason: Unavailable::TooStale {
            staleness_ms: None,
            max_staleness_ms: 100,
        },
    };
    assert_eq!(drain(&mut core), vec![reply(1, never)]);
    core.handle_peer(
        Millis(10),
        1,
        PeerMsg::Heartbeat {
            term: 1,
            commit: 0,
            leader_commit: 0,
            seq: 1,
            settled: false,
            sent_at: Millis(0),
        },
    );
    drain(&mut core);
    core.handle_client(Millis(110), 2, get(Some(100)), None);
    assert!(matches!(
        drain(&mut core)[..],
        [Output::Reply {
            reply: Reply::Value { .. },
            ..
        }]
    ));
    core.handle_client(Millis(111), 3, get(Some(100)), None);
    let stale = Reply::Unavailable {
        reason: Unavailable::TooStale {
            staleness_ms: Some(101),
            max_staleness_ms: 100,
        },
    };
    assert_eq!(drain(&mut core), vec![reply(3, stale)]);
    core.handle_client(Millis(5000), 4, get(None), None);
    assert!(matches!(
        drain(&mut core)[..],
        [Output::Reply {
            reply: Reply::Value { .. },
            ..
        }]
    ));
}

#[test]
fn session_reads_wait_for_their_position_and_detect_rollback() {
    let hard_state = HardState {
        term: 2,
        voted_for: None,
        voter: true,
    };
    let log = vec![noop(1, 1), put(1, 2, "k"), put(2, 3, "k")];
    let mut core = Core::recover(config(2, 3), Millis(0), hard_state, log).unwrap();
    let get = |after| ClientOp::Get {
        key: b"k".to_vec(),
        consistency: Some(ReadMode::Session { after }),
    };
    core.handle_client(Millis(1), 1, get(pos(1, 2)), None);
    core.handle_client(Millis(1), 2, get(pos(3, 3)), None);
    assert_eq!(drain(&mut core), vec![]);
    // The leader of term 2 commits through 3.
    core.handle_peer(
        Millis(2),
        1,
        PeerMsg::Append {
            term: 2,
            prev: pos(2, 3),
            entries: vec![],
            commit: 3,
        },
    );
    let out = drain(&mut core);
    assert_eq!(
        out[..2],
        [
            reply(
                1,
                Reply::Value {
                    value: Some(b"v3".to_vec()),
                    version: pos(2, 3),
                    applied: pos(2, 3)
                }
            ),
            reply(
                2,
                Reply::Unavailable {
                    reason: Unavailable::SessionDiverged {
                        after: pos(3, 3),
                        found: pos(2, 3)
                    }
                }
            ),
        ]
    );
    // A session read that cannot be served in time is refused.
    core.handle_client(Millis(3), 3, get(pos(2, 9)), None);
    core.tick(Millis(2003));
    assert!(drain(&mut core).contains(&reply(
        3,
        Reply::Unavailable {
            reason: Unavailable::TimedOut
        }
    )));
}

#[test]
fn bad_requests_and_configs_are_refused_with_reasons() {
    let mut core = leader(3, config(1, 3));
    core.handle_client(Millis(1100), 1, put_op(""), None);
    core.handle_client(Millis(1100), 2, put_op("a"), Some(AckMode::SemiSync(3)));
    let out = drain(&mut core);
    assert!(
        matches!(
            out[..],
            [
                Output::Reply {
                    reply: Reply::BadRequest { .. },
                    ..
                },
                Output::Reply {
                    reply: Reply::BadRequest { .. },
                    ..
                }
            ]
        ),
        "{out:?}"
    );
    let mut c = config(1, 3);
    c.peers.push(1);
    assert_eq!(c.validate(), Err(ConfigError::SelfInPeers { id: 1 }));
    let mut c = config(1, 3);
    c.election_timeout_min_ms = 50;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("election_timeout_min_ms (50)"));
    let gap = Core::recover(
        config(1, 3),
        Millis(0),
        HardState {
            term: 1,
            voted_for: None,
            voter: true,
        },
        vec![noop(1, 2)],
    );
    assert_eq!(
        gap.unwrap_err(),
        RecoverError::Gap {
            expected: 1,
            found: 2
        }
    );
    let ahead = Core::recover(
        config(1, 3),
        Millis(0),
        HardState::default(),
        vec![noop(1, 1)],
    );
    assert!(matches!(ahead, Err(RecoverError::BadTerm { index: 1, .. })));
}

/// Issue 19: freshness was the arrival time of a heartbeat, so a backlog
/// of old heartbeats delivered after a partition healed let a bounded
/// follower read through while the follower was seconds behind. It is
/// now measured from the leader's send time of the heartbeat.
#[test]
fn an_old_heartbeat_delivered_late_does_not_make_a_follower_fresh() {
    let mut core = Core::new(config(2, 3), Millis(0)).unwrap();
    // The leader's clock reads 5,000 when this follower's reads 1,000.
    let hb = |sent_at: u64, leader_commit: u64| PeerMsg::Heartbeat {
        term: 1,
        commit: 0,
        leader_commit,
        seq: 1,
        settled: true,
        sent_at: Millis(sent_at),
    };
    core.handle_peer(Millis(1000), 1, hb(5000, 0));
    let read = |core: &mut Core, now: u64| {
        let get = ClientOp::Get {
            key: b"k".to_vec(),
            consistency: Some(ReadMode::Follower {
                max_staleness_ms: Some(500),
            }),
        };
        core.handle_client(Millis(now), 9, get, None);
        drain(core).pop()
    };
    assert!(matches!(
        read(&mut core, 1100),
        Some(Output::Reply {
            reply: Reply::Value { .. },
            ..
        })
    ));
    // A partition: nothing arrives for 5 s. Then a heartbeat the leader
    // sent 200 ms after the last one arrives, delayed all that time.
    core.handle_peer(Millis(6000), 1, hb(5200, 0));
    assert_eq!(core.status(Millis(6000)).staleness_ms, Some(4800));
    assert_eq!(
        read(&mut core, 6000),
        Some(reply(
            9,
            Reply::Unavailable {
                reason: Unavailable::TooStale {
                    staleness_ms: Some(4800),
                    max_staleness_ms: 500
                }
            }
        ))
    );
    // A heartbeat sent now (on time) makes it fresh again.
    core.handle_peer(Millis(6001), 1, hb(10_000, 0));
    assert_eq!(core.status(Millis(6001)).staleness_ms, Some(1));
    // One whose commit index is not applied here does not.
    core.handle_peer(Millis(6100), 1, hb(10_100, 7));
    assert_eq!(core.status(Millis(6100)).staleness_ms, Some(100));
}
