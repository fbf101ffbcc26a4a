//! Appends: log matching, truncation, batching, flow control and the message budget.

use super::*;

/// The `Append` messages in `out` to `peer`, as (prev index, entries).
fn appends_to(out: &[Output], peer: NodeId) -> Vec<(u64, usize)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send {
                to,
                msg: PeerMsg::Append { prev, entries, .. },
            } if *to == peer => Some((prev.index, entries.len())),
            _ => None,
        })
        .collect()
}

/// The appends in `outputs` for `to`, with their encoded sizes.
fn sized_appends_to(outputs: &[Output], to: NodeId) -> Vec<(usize, Vec<u64>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                to: t,
                msg: msg @ PeerMsg::Append { entries, .. },
            } if *t == to => Some((
                postcard::to_allocvec(msg).unwrap().len(),
                entries.iter().map(|e| e.position.index).collect(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn append_truncates_a_conflicting_suffix_and_counts_it() {
    let hard_state = HardState {
        term: 2,
        voted_for: Some(1),
        voter: true,
    };
    let log = vec![noop(1, 1), put(1, 2, "a"), put(2, 3, "b"), put(2, 4, "c")];
    let mut core = Core::recover(config(2, 3), Millis(0), hard_state, log).unwrap();
    let new = put(3, 3, "d");
    core.handle_peer(
        Millis(10),
        1,
        PeerMsg::Append {
            term: 3,
            prev: pos(1, 2),
            entries: vec![new.clone()],
            commit: 2,
        },
    );
    assert_eq!(
        drain(&mut core),
        vec![
            hard(3, None),
            Output::Persist(Persist {
                truncate_from: Some(3),
                entries: vec![new.clone()],
                ..Persist::default()
            }),
            // Entry 3 is not durable yet: only 2 is acknowledged as such.
            send(1, ok(3, 3, 2)),
        ]
    );
    assert_eq!(core.status(Millis(10)).rolled_back_entries, 2);
    assert_eq!(core.entry(3), Some(&new));
    assert_eq!(core.entry(4), None);
    assert_eq!(core.commit_index(), 2);
    assert_eq!(
        core.applied_value(b"a"),
        Some((Some(&b"v2"[..]), pos(1, 2)))
    );
    // Storage completes: the follower says so on its own.
    core.persisted(Millis(11), pos(3, 3));
    assert_eq!(drain(&mut core), vec![send(1, ok(3, 3, 3))]);
    // A stale completion for the replaced entry is ignored.
    core.persisted(Millis(12), pos(2, 4));
    assert_eq!(drain(&mut core), vec![]);
}

#[test]
fn append_with_a_mismatched_prev_is_refused_with_a_hint() {
    let hard_state = HardState {
        term: 2,
        voted_for: None,
        voter: true,
    };
    let log = vec![noop(1, 1), put(2, 2, "a"), put(2, 3, "b")];
    let mut core = Core::recover(config(2, 3), Millis(0), hard_state, log).unwrap();
    let append = |prev| PeerMsg::Append {
        term: 3,
        prev,
        entries: vec![],
        commit: 0,
    };
    // Beyond our log: resend after our last entry.
    core.handle_peer(Millis(10), 1, append(pos(3, 7)));
    let conflict = |hint| {
        send(
            1,
            PeerMsg::AppendResp {
                term: 3,
                result: AppendResult::Conflict { hint },
                voter: true,
            },
        )
    };
    assert_eq!(drain(&mut core), vec![hard(3, None), conflict(3)]);
    // Term mismatch at 3: skip the whole of term 2.
    core.handle_peer(Millis(11), 1, append(pos(3, 3)));
    assert_eq!(drain(&mut core), vec![conflict(1)]);
    assert_eq!(core.last_position(), pos(2, 3), "a refusal changes nothing");
}

#[test]
fn append_from_an_older_term_is_answered_with_the_current_term() {
    let mut core = Core::new(config(2, 3), Millis(0)).unwrap();
    core.handle_peer(
        Millis(1),
        3,
        PeerMsg::Heartbeat {
            term: 5,
            commit: 0,
            leader_commit: 0,
            seq: 0,
            settled: false,
            sent_at: Millis(0),
        },
    );
    drain(&mut core);
    core.handle_peer(
        Millis(2),
        1,
        PeerMsg::Append {
            term: 4,
            prev: pos(0, 0),
            entries: vec![noop(4, 1)],
            commit: 0,
        },
    );
    assert_eq!(
        drain(&mut core),
        vec![send(
            1,
            PeerMsg::HeartbeatResp {
                term: 5,
                seq: 0,
                voter: true
            }
        )]
    );
    assert_eq!(core.last_position(), pos(0, 0));
}

#[test]
fn a_follower_fed_a_burst_of_appends_persists_and_answers_once() {
    let mut core = Core::new(config(2, 3), Millis(0)).unwrap();
    let heartbeat = PeerMsg::Heartbeat {
        term: 1,
        commit: 0,
        leader_commit: 0,
        seq: 0,
        settled: false,
        sent_at: Millis(0),
    };
    core.handle_peer(Millis(1), 1, heartbeat);
    drain(&mut core);
    let append = |prev: u64, entries: Vec<LogEntry>| PeerMsg::Append {
        term: 1,
        prev: pos(if prev == 0 { 0 } else { 1 }, prev),
        entries,
        commit: 0,
    };
    core.handle_peer(Millis(2), 1, append(0, vec![noop(1, 1), put(1, 2, "a")]));
    core.handle_peer(
        Millis(2),
        1,
        append(2, vec![put(1, 3, "b"), put(1, 4, "c")]),
    );
    core.handle_peer(Millis(2), 1, append(4, vec![put(1, 5, "d")]));
    assert_eq!(
        drain(&mut core),
        vec![
            Output::Persist(Persist {
                entries: vec![
                    noop(1, 1),
                    put(1, 2, "a"),
                    put(1, 3, "b"),
                    put(1, 4, "c"),
                    put(1, 5, "d")
                ],
                ..Persist::default()
            }),
            send(1, ok(1, 5, 0)),
        ]
    );
    core.persisted(Millis(3), pos(1, 5));
    assert_eq!(drain(&mut core), vec![send(1, ok(1, 5, 5))]);
}

#[test]
fn a_new_leader_appends_a_noop_and_ships_it() {
    let mut core = Core::new(config(1, 3), Millis(0)).unwrap();
    campaign(&mut core, Millis(1000), 1);
    drain(&mut core);
    core.handle_peer(
        Millis(1000),
        2,
        PeerMsg::Vote {
            term: 1,
            granted: true,
        },
    );
    let append = PeerMsg::Append {
        term: 1,
        prev: pos(0, 0),
        entries: vec![noop(1, 1)],
        commit: 0,
    };
    let hb = PeerMsg::Heartbeat {
        term: 1,
        commit: 0,
        leader_commit: 0,
        seq: 1,
        settled: false,
        sent_at: Millis(1000),
    };
    assert_eq!(
        drain(&mut core),
        vec![
            Output::Persist(Persist {
                truncate_from: None,
                entries: vec![noop(1, 1)],
                ..Persist::default()
            }),
            send(2, hb.clone()),
            send(2, append.clone()),
            send(3, hb),
            send(3, append),
        ]
    );
    assert_eq!(core.status(Millis(1000)).elections_won, 1);
}

#[test]
fn writes_fed_together_share_one_persist_and_one_append_per_follower() {
    let mut core = leader(3, config(1, 3));
    let now = Millis(1100);
    for i in 0..50 {
        core.handle_client(now, i, put_op("k"), None);
    }
    let out = drain(&mut core);
    let persists: Vec<Vec<u64>> = out
        .iter()
        .filter_map(|o| match o {
            Output::Persist(p) => Some(p.entries.iter().map(|e| e.position.index).collect()),
            _ => None,
        })
        .collect();
    assert_eq!(persists, vec![(2..=51).collect::<Vec<u64>>()]);
    for peer in [2, 3] {
        assert_eq!(appends_to(&out, peer), vec![(1, 50)], "to node {peer}");
    }
    // A write drained on its own still goes out at once.
    core.handle_client(now, 50, put_op("k"), None);
    assert_eq!(appends_to(&drain(&mut core), 2), vec![(51, 1)]);
}

#[test]
fn flow_control_bounds_the_entries_in_flight_to_a_slow_follower() {
    let mut c = config(1, 3);
    c.max_inflight_msgs = 2;
    c.max_batch_entries = 3;
    let mut core = leader(3, c);
    let now = Millis(1100);
    // Writes arriving one at a time, each drained before the next.
    let mut out = Vec::new();
    for i in 0..20 {
        core.handle_client(now, i, put_op("k"), Some(AckMode::Async));
        out.extend(drain(&mut core));
    }
    // The first two writes go out at once; then the window (two
    // messages) is full and nothing more is sent until an answer.
    assert_eq!(appends_to(&out, 2), vec![(1, 1), (2, 1)]);
    assert_eq!(core.status(now).followers[0].inflight_msgs, 2);
    core.handle_peer(now, 2, ok(1, 3, 3));
    // Both messages answered: the backlog goes out in full batches.
    assert_eq!(appends_to(&drain(&mut core), 2), vec![(3, 3), (6, 3)]);
    assert_eq!(core.status(now).followers[0].lag_entries, 21 - 3);
    // Lost messages: after the retransmit time the window restarts from
    // the match index, probing with one message.
    let later = Millis(1100 + 250);
    core.tick(later);
    assert_eq!(appends_to(&drain(&mut core), 2), vec![(3, 3)]);
    let lag = &core.status(later).followers[0];
    assert_eq!((lag.match_index, lag.lag_ms), (3, 250));
}

/// Issue 19: a backlog larger than a frame stalled replication for good
/// (the leader cut appends at 256 entries, never by bytes, and the
/// transport refused every one). Appends now fit the message budget, and
/// an entry larger than half of it still goes, alone.
#[test]
fn appends_never_exceed_the_message_budget_and_a_large_entry_goes_alone() {
    let mut c = config(1, 3);
    c.max_message_bytes = MIN_MESSAGE_BYTES;
    let mut core = leader(3, c);
    let budget = MIN_MESSAGE_BYTES;
    // Sizes: small, small, two of more than half the budget, nearly the
    // whole budget, small, small.
    let sizes = [100, 100, 600, 700, 900, 50, 50];
    for (i, len) in sizes.iter().enumerate() {
        core.handle_client(Millis(1000), 10 + i as u64, put_value("k", *len), None);
    }
    core.persisted(Millis(1000), pos(1, 8));
    let mut outputs = drain(&mut core);
    // Follower 2 answers each append; its window never fills.
    for _ in 0..10 {
        let last = sized_appends_to(&outputs, 2)
            .last()
            .and_then(|(_, e)| e.last().copied());
        let Some(last) = last else { break };
        core.handle_peer(Millis(1001), 2, ok(1, last, last));
        outputs.extend(drain(&mut core));
    }
    let sent = sized_appends_to(&outputs, 2);
    let indexes: Vec<u64> = sent.iter().flat_map(|(_, e)| e.clone()).collect();
    assert_eq!(indexes, (2..=8).collect::<Vec<_>>(), "{sent:?}");
    for (bytes, _) in &sent {
        assert!(*bytes <= budget, "an append of {bytes} bytes: {sent:?}");
    }
    // Each entry of more than half the budget went, in a message without
    // the other large ones; the one of nearly the whole budget alone.
    let carrying = |index: u64| sent.iter().find(|(_, e)| e.contains(&index)).unwrap();
    assert_ne!(carrying(4), carrying(5));
    assert_ne!(carrying(5), carrying(6));
    assert_eq!(carrying(6).1, vec![6]);
    // The window to follower 3 is open too: every append fits.
    assert!(sized_appends_to(&outputs, 3)
        .iter()
        .all(|(b, _)| *b <= budget));
    // A write no append could carry is refused, not appended.
    core.handle_client(Millis(1002), 99, put_value("k", budget), None);
    let refused = drain(&mut core);
    assert!(
        matches!(&refused[..], [Output::Reply { req_id: 99, reply: Reply::BadRequest { message } }] if message.contains("max_message_bytes")),
        "{refused:?}"
    );
}

/// A message the transport refuses is an input: the leader halves what it
/// sends that follower at once and probes it again, instead of building
/// the same refused message for ever.
#[test]
fn a_refused_append_makes_the_leader_send_less_at_once() {
    let mut core = leader(3, config(1, 3));
    for i in 0..6 {
        core.handle_client(Millis(1000), 10 + i, put_value("k", 10), None);
    }
    core.persisted(Millis(1000), pos(1, 7));
    let outputs = drain(&mut core);
    let refused = outputs
        .iter()
        .find_map(|o| match o {
            Output::Send { to: 3, msg } => Some(msg.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(sized_appends_to(&outputs, 3)[0].1, vec![2, 3, 4, 5, 6, 7]);
    // Pretend the transport accepted only tiny messages.
    for _ in 0..30 {
        core.send_failed(Millis(1001), 3, &refused);
    }
    assert_eq!(core.status(Millis(1001)).send_failures, 30);
    // The next heartbeat probes follower 3 from its match index, with no
    // entries (nothing at all fits its budget now); once it answers, the
    // window is pipelined with one entry per append.
    let next = core.next_timeout();
    core.tick(next);
    let outputs = drain(&mut core);
    let probe: Vec<Vec<u64>> = sized_appends_to(&outputs, 3)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(probe, vec![Vec::<u64>::new()]);
    core.handle_peer(next, 3, ok(1, 1, 1));
    let outputs = drain(&mut core);
    let entries: Vec<Vec<u64>> = sized_appends_to(&outputs, 3)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(
        entries,
        vec![vec![2], vec![3], vec![4], vec![5], vec![6], vec![7]]
    );
    // Acknowledgements grow the budget back.
    for i in 2..=7 {
        core.handle_peer(next, 3, ok(1, i, i));
    }
    drain(&mut core);
    assert_eq!(core.status(next).followers[1].match_index, 7);
}
