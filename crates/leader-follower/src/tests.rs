//! Unit tests in the openraft style: one input, the exact outputs.

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

#[test]
fn election_timeout_asks_for_pre_votes_and_keeps_the_term() {
    let hard_state = HardState {
        term: 3,
        voted_for: Some(2),
        voter: true,
    };
    let mut core = Core::recover(config(1, 3), Millis(0), hard_state, vec![noop(3, 1)]).unwrap();
    let deadline = core.next_timeout();
    assert!(
        (Millis(300)..Millis(600)).contains(&deadline),
        "{deadline:?}"
    );
    core.tick(Millis(deadline.0 - 1));
    assert_eq!(drain(&mut core), vec![]);
    core.tick(deadline);
    let pre_vote = PeerMsg::PreVote {
        term: 4,
        last: pos(3, 1),
    };
    // No durable write, no term change: nothing to undo if nobody answers.
    assert_eq!(
        drain(&mut core),
        vec![send(2, pre_vote.clone()), send(3, pre_vote.clone())]
    );
    assert_eq!(
        (core.role(), core.hard_state()),
        (Role::Follower, hard_state)
    );
    assert_eq!(core.status(deadline).elections_started, 0);
    // Cut off, it asks again at every timeout, never raising its term.
    for _ in 0..10 {
        let now = core.next_timeout();
        core.tick(now);
        assert_eq!(
            drain(&mut core),
            vec![send(2, pre_vote.clone()), send(3, pre_vote.clone())]
        );
    }
    assert_eq!(core.hard_state(), hard_state);
    // Refusals (stale or not) do not start an election either.
    let refusal = PeerMsg::PreVoteResp {
        term: 3,
        granted: false,
    };
    core.handle_peer(Millis(9000), 2, refusal);
    assert_eq!(drain(&mut core), vec![]);
    assert_eq!(core.hard_state(), hard_state);
}

#[test]
fn a_majority_of_pre_votes_starts_the_election_with_a_persisted_vote() {
    let mut core = Core::new(config(1, 5), Millis(0)).unwrap();
    let now = core.next_timeout();
    core.tick(now);
    drain(&mut core);
    let grant = PeerMsg::PreVoteResp {
        term: 1,
        granted: true,
    };
    // A grant for another term (an earlier round's) does not count.
    let stale = PeerMsg::PreVoteResp {
        term: 2,
        granted: true,
    };
    core.handle_peer(now, 3, stale);
    core.handle_peer(now, 2, grant.clone());
    // The same voter twice is one pre-vote; two of five is no majority.
    core.handle_peer(now, 2, grant.clone());
    assert_eq!(drain(&mut core), vec![]);
    assert_eq!((core.role(), core.term()), (Role::Follower, 0));
    core.handle_peer(now, 4, grant);
    let vote = PeerMsg::RequestVote {
        term: 1,
        last: pos(0, 0),
        transfer: false,
    };
    assert_eq!(
        drain(&mut core),
        vec![
            hard(1, Some(1)),
            send(2, vote.clone()),
            send(3, vote.clone()),
            send(4, vote.clone()),
            send(5, vote)
        ]
    );
    assert_eq!(core.role(), Role::Candidate);
    assert_eq!(core.status(now).elections_started, 1);
}

#[test]
fn a_pre_vote_is_granted_like_a_vote_and_changes_nothing() {
    let hard_state = HardState {
        term: 2,
        voted_for: Some(3),
        voter: true,
    };
    let log = vec![noop(1, 1), put(2, 2, "a")];
    let mut core = Core::recover(config(1, 3), Millis(0), hard_state, log).unwrap();
    let answer = |term, granted| send(2, PeerMsg::PreVoteResp { term, granted });
    let ask = |core: &mut Core, term, last| {
        core.handle_peer(Millis(10), 2, PeerMsg::PreVote { term, last });
        drain(core)
    };
    // Up to date, for a later term: granted, and the voter stays in its
    // term with its vote (a pre-vote is not a vote).
    assert_eq!(ask(&mut core, 3, pos(2, 2)), vec![answer(3, true)]);
    // A far higher term is not adopted either.
    assert_eq!(ask(&mut core, 40, pos(2, 5)), vec![answer(40, true)]);
    assert_eq!(core.hard_state(), hard_state);
    // Longer log but an older last term: refused with the voter's term.
    assert_eq!(ask(&mut core, 3, pos(1, 5)), vec![answer(2, false)]);
    // This term: the voter already voted for node 3.
    assert_eq!(ask(&mut core, 2, pos(2, 2)), vec![answer(2, false)]);
    // An older term.
    assert_eq!(ask(&mut core, 1, pos(2, 2)), vec![answer(2, false)]);
    assert_eq!(core.hard_state(), hard_state);
    assert_eq!(core.role(), Role::Follower);
}

#[test]
fn a_pre_vote_is_refused_while_a_leader_is_heard() {
    let mut core = Core::new(config(2, 3), Millis(0)).unwrap();
    let heartbeat = PeerMsg::Heartbeat {
        term: 1,
        commit: 0,
        leader_commit: 0,
        seq: 1,
        settled: false,
        sent_at: Millis(0),
    };
    core.handle_peer(Millis(100), 1, heartbeat);
    drain(&mut core);
    let pre_vote = PeerMsg::PreVote {
        term: 2,
        last: pos(0, 0),
    };
    let refused = send(
        3,
        PeerMsg::PreVoteResp {
            term: 1,
            granted: false,
        },
    );
    core.handle_peer(Millis(200), 3, pre_vote.clone());
    assert_eq!(drain(&mut core), vec![refused]);
    assert_eq!((core.term(), core.leader()), (1, Some(1)));
    // Once the leader has been silent for the minimum election timeout,
    // the same request is granted.
    core.handle_peer(Millis(400), 3, pre_vote);
    let granted = PeerMsg::PreVoteResp {
        term: 2,
        granted: true,
    };
    assert_eq!(drain(&mut core), vec![send(3, granted)]);
    assert_eq!(core.term(), 1);
    // A leader refuses pre-votes, and keeps leading in its term.
    let mut leader = leader(3, config(1, 3));
    leader.handle_peer(
        Millis(5000),
        3,
        PeerMsg::PreVote {
            term: 2,
            last: pos(1, 1),
        },
    );
    let refused = PeerMsg::PreVoteResp {
        term: 1,
        granted: false,
    };
    assert_eq!(drain(&mut leader), vec![send(3, refused)]);
    assert_eq!((leader.role(), leader.term()), (Role::Leader, 1));
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

#[test]
fn a_silent_leader_is_probed_every_heartbeat_interval_and_a_heard_one_never() {
    let mut core = follower_of_1();
    // Heartbeats every 50 ms: the probe comes 75 ms into the silence.
    assert_eq!(core.next_timeout(), Millis(175));
    core.tick(Millis(174));
    assert_eq!(drain(&mut core), vec![]);
    core.tick(Millis(175));
    assert_eq!(drain(&mut core), vec![Output::Probe { to: 1 }]);
    assert_eq!(core.next_timeout(), Millis(225));
    core.tick(Millis(200));
    assert_eq!(drain(&mut core), vec![]);
    core.tick(Millis(225));
    assert_eq!(drain(&mut core), vec![Output::Probe { to: 1 }]);
    // The leader speaks again: no probe until it falls silent again.
    core.handle_peer(Millis(230), 1, heartbeat(1, 2));
    drain(&mut core);
    assert_eq!(core.next_timeout(), Millis(305));
    core.tick(Millis(280));
    assert_eq!(drain(&mut core), vec![]);

    // Off: no probes, only the election timeout.
    let mut quiet = config(2, 3);
    quiet.probe_leader = false;
    let mut core = Core::new(quiet, Millis(0)).unwrap();
    core.handle_peer(Millis(100), 1, heartbeat(1, 1));
    drain(&mut core);
    assert!(
        core.next_timeout() >= Millis(400),
        "{:?}",
        core.next_timeout()
    );
    // A leader and a node that knows no leader never probe.
    let mut leader = leader(3, config(1, 3));
    for t in (1_000..1_400).step_by(10) {
        leader.tick(Millis(t));
    }
    assert!(!drain(&mut leader)
        .iter()
        .any(|o| matches!(o, Output::Probe { .. })));
    let mut fresh = Core::new(config(2, 3), Millis(0)).unwrap();
    fresh.tick(Millis(200));
    assert_eq!(drain(&mut fresh), vec![]);
}

#[test]
fn a_refused_probe_forgets_the_leader_and_brings_the_election_forward() {
    let mut core = follower_of_1();
    core.tick(Millis(175));
    assert_eq!(drain(&mut core), vec![Output::Probe { to: 1 }]);
    core.peer_gone(Millis(176), 1);
    assert_eq!(core.leader(), None);
    assert_eq!(core.status(Millis(176)).leaders_gone, 1);
    // The election comes within a heartbeat interval, not 300-600 ms
    // after the leader's last word.
    let deadline = core.next_timeout();
    assert!(
        (Millis(176)..Millis(226)).contains(&deadline),
        "{deadline:?}"
    );
    // And a pre-vote from the other follower is granted at once: the
    // leader stickiness died with the leader.
    core.handle_peer(
        Millis(177),
        3,
        PeerMsg::PreVote {
            term: 2,
            last: pos(0, 0),
        },
    );
    let granted = PeerMsg::PreVoteResp {
        term: 2,
        granted: true,
    };
    assert_eq!(drain(&mut core), vec![send(3, granted)]);
    // Having said yes, it leaves the asker the time to win instead of
    // splitting the vote with its own hurried election.
    assert!(core.next_timeout() >= Millis(177 + 300));
}

#[test]
fn a_stale_or_unasked_refusal_changes_nothing() {
    // Unasked: no probe was sent.
    let mut core = follower_of_1();
    core.peer_gone(Millis(120), 1);
    assert_eq!(core.leader(), Some(1));
    // Stale: the leader spoke after the probe went out (it restarted, or
    // the refusal was for an old incarnation).
    let mut core = follower_of_1();
    core.tick(Millis(175));
    drain(&mut core);
    core.handle_peer(Millis(176), 1, heartbeat(1, 2));
    drain(&mut core);
    core.peer_gone(Millis(177), 1);
    assert_eq!(core.leader(), Some(1));
    assert!(core.next_timeout() >= Millis(176 + 75));
    // About another node than the leader.
    let mut core = follower_of_1();
    core.tick(Millis(175));
    drain(&mut core);
    core.peer_gone(Millis(176), 3);
    assert_eq!(core.leader(), Some(1));
    assert_eq!(core.status(Millis(176)).leaders_gone, 0);
}

#[test]
fn a_refusal_from_a_later_term_catches_the_asker_up() {
    let mut core = Core::new(config(1, 3), Millis(0)).unwrap();
    core.tick(core.next_timeout());
    drain(&mut core);
    core.handle_peer(
        Millis(700),
        2,
        PeerMsg::PreVoteResp {
            term: 5,
            granted: false,
        },
    );
    // A term the voter really is in: adopting it is safe, and the next
    // pre-vote asks for the term after it.
    assert_eq!(drain(&mut core), vec![hard(5, None)]);
    assert_eq!((core.role(), core.term()), (Role::Follower, 5));
    let now = core.next_timeout();
    core.tick(now);
    let pre_vote = PeerMsg::PreVote {
        term: 6,
        last: pos(0, 0),
    };
    assert_eq!(
        drain(&mut core),
        vec![send(2, pre_vote.clone()), send(3, pre_vote)]
    );
}

#[test]
fn vote_is_granted_to_an_up_to_date_candidate_once_per_term() {
    let mut core = Core::new(config(1, 3), Millis(0)).unwrap();
    let request = PeerMsg::RequestVote {
        term: 1,
        last: pos(0, 0),
        transfer: false,
    };
    core.handle_peer(Millis(10), 2, request.clone());
    // The term bump and the vote are one durable write, before the answer.
    assert_eq!(
        drain(&mut core),
        vec![
            hard(1, Some(2)),
            send(
                2,
                PeerMsg::Vote {
                    term: 1,
                    granted: true
                }
            )
        ]
    );
    // A second candidate in the same term is refused.
    core.handle_peer(Millis(11), 3, request);
    assert_eq!(
        drain(&mut core),
        vec![send(
            3,
            PeerMsg::Vote {
                term: 1,
                granted: false
            }
        )]
    );
}

#[test]
fn vote_is_refused_to_a_candidate_missing_entries() {
    let hard_state = HardState {
        term: 2,
        voted_for: None,
        voter: true,
    };
    let log = vec![noop(1, 1), put(2, 2, "a")];
    let mut core = Core::recover(config(1, 3), Millis(0), hard_state, log).unwrap();
    // Longer log but an older last term: less up to date.
    core.handle_peer(
        Millis(10),
        2,
        PeerMsg::RequestVote {
            term: 3,
            last: pos(1, 5),
            transfer: false,
        },
    );
    assert_eq!(
        drain(&mut core),
        vec![
            hard(3, None),
            send(
                2,
                PeerMsg::Vote {
                    term: 3,
                    granted: false
                }
            )
        ]
    );
}

#[test]
fn vote_requests_are_ignored_while_a_leader_is_heard() {
    let mut core = Core::new(config(2, 3), Millis(0)).unwrap();
    core.handle_peer(
        Millis(100),
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
    let request = PeerMsg::RequestVote {
        term: 2,
        last: pos(0, 0),
        transfer: false,
    };
    core.handle_peer(Millis(200), 3, request.clone());
    assert_eq!(drain(&mut core), vec![]);
    assert_eq!(core.term(), 1);
    // ...unless the leader handed leadership over.
    let transfer = PeerMsg::RequestVote {
        term: 2,
        last: pos(0, 0),
        transfer: true,
    };
    core.handle_peer(Millis(200), 3, transfer);
    assert_eq!(core.term(), 2);
    // ...or the leader has been silent for the minimum election timeout.
    let mut core = Core::new(config(2, 3), Millis(0)).unwrap();
    core.handle_peer(
        Millis(100),
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
    core.handle_peer(Millis(400), 3, request);
    assert_eq!(core.term(), 2);
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
fn a_leader_steps_down_on_a_higher_term_and_writes_become_unknown() {
    let mut core = leader(3, config(1, 3));
    core.handle_client(Millis(1100), 10, put_op("a"), None);
    drain(&mut core);
    core.handle_peer(
        Millis(1101),
        2,
        PeerMsg::HeartbeatResp {
            term: 4,
            seq: 0,
            voter: true,
        },
    );
    assert_eq!(
        drain(&mut core),
        vec![
            hard(4, None),
            reply(
                10,
                Reply::Unknown {
                    reason: Unknown::LostLeadership
                }
            ),
        ]
    );
    assert_eq!(core.role(), Role::Follower);
    // No leader is known in term 4: the next write waits for one.
    core.handle_client(Millis(1102), 11, put_op("b"), None);
    assert_eq!(replies(&mut core), vec![]);
    core.handle_peer(Millis(1110), 2, heartbeat(4, 1));
    assert_eq!(
        replies(&mut core),
        vec![reply(
            11,
            Reply::NotLeader {
                leader_hint: Some(2)
            }
        )]
    );
}

/// Only the replies among `core`'s outputs.
fn replies(core: &mut Core) -> Vec<Output> {
    drain(core)
        .into_iter()
        .filter(|o| matches!(o, Output::Reply { .. }))
        .collect()
}

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
fn a_leader_that_hears_no_majority_steps_down() {
    let mut core = leader(3, config(1, 3));
    let mut now = Millis(1000);
    // Node 2 keeps answering: the leader leads on.
    for _ in 0..20 {
        now = core.next_timeout();
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
    }
    assert_eq!(core.role(), Role::Leader);
    // Silence from everyone for the maximum election timeout.
    let silent_from = now;
    while core.role() == Role::Leader {
        now = core.next_timeout();
        core.tick(now);
    }
    let silence = now.since(silent_from);
    assert!(
        (600..=650).contains(&silence),
        "stepped down after {silence} ms"
    );
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

#[test]
fn leadership_transfer_hands_over_to_a_caught_up_follower() {
    let mut core = leader(3, config(1, 3));
    let now = Millis(1100);
    core.handle_client(now, 10, put_op("a"), None);
    core.persisted(now, pos(1, 2));
    core.handle_peer(now, 3, ok(1, 2, 2));
    drain(&mut core);
    assert_eq!(core.transfer_leadership(now), Some(3));
    let out = drain(&mut core);
    assert_eq!(out[0], send(3, PeerMsg::TimeoutNow { term: 1 }));
    core.handle_client(now, 11, put_op("b"), None);
    assert_eq!(
        drain(&mut core),
        vec![reply(
            11,
            Reply::NotLeader {
                leader_hint: Some(3)
            }
        )]
    );
    // The target answers TimeoutNow with an election the others honour.
    let mut target = Core::recover(
        config(3, 3),
        Millis(0),
        HardState {
            term: 1,
            voted_for: Some(1),
            voter: true,
        },
        vec![noop(1, 1), put(1, 2, "a")],
    )
    .unwrap();
    target.handle_peer(
        now,
        1,
        PeerMsg::Heartbeat {
            term: 1,
            commit: 2,
            leader_commit: 2,
            seq: 3,
            settled: false,
            sent_at: Millis(0),
        },
    );
    drain(&mut target);
    // No pre-vote: the leader asked, and the others must not refuse for
    // having heard from it.
    target.handle_peer(now, 1, PeerMsg::TimeoutNow { term: 1 });
    let request = PeerMsg::RequestVote {
        term: 2,
        last: pos(1, 2),
        transfer: true,
    };
    assert_eq!(
        drain(&mut target),
        vec![
            hard(2, Some(3)),
            send(1, request.clone()),
            send(2, request.clone())
        ]
    );
    core.handle_peer(now, 3, request);
    assert_eq!(
        drain(&mut core),
        vec![
            hard(2, Some(3)),
            send(
                3,
                PeerMsg::Vote {
                    term: 2,
                    granted: true
                }
            )
        ]
    );
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

#[test]
fn records_round_trip_under_one_key_and_the_old_layout_still_reads() {
    use mimeo_storage::{Mutation, Record, RecordMeta};
    let delete = LogEntry {
        position: pos(3, 9),
        command: Command::Delete { key: b"k".to_vec() },
    };
    for entry in [noop(3, 7), put(3, 8, "k"), delete.clone()] {
        let record = entry.to_record(2);
        assert_eq!(record.meta.position, entry.position);
        assert_eq!(record.mutation.key(), crate::RECORD_KEY);
        assert_eq!(LogEntry::from_record(&record).unwrap(), entry);
    }

    // Earlier builds stored each entry under its own key, a noop as a
    // delete of the reserved key.
    let old = |position, mutation| Record {
        meta: RecordMeta {
            position,
            origin: 1,
            seq: position.index,
            version: Vec::new(),
        },
        mutation,
    };
    let old_noop = old(pos(3, 7), Mutation::Delete { key: Vec::new() });
    let old_put = old(
        pos(3, 8),
        Mutation::Put {
            key: b"k".to_vec(),
            value: b"v8".to_vec(),
        },
    );
    let old_delete = old(pos(3, 9), Mutation::Delete { key: b"k".to_vec() });
    assert_eq!(LogEntry::from_record(&old_noop).unwrap(), noop(3, 7));
    assert_eq!(LogEntry::from_record(&old_put).unwrap(), put(3, 8, "k"));
    assert_eq!(LogEntry::from_record(&old_delete).unwrap(), delete);

    // A value under the reserved key that is no command is an error.
    let garbage = old(
        pos(3, 10),
        Mutation::Put {
            key: Vec::new(),
            value: vec![0xff; 3],
        },
    );
    assert!(LogEntry::from_record(&garbage).is_err());
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

// ------------------------------------------------------------- snapshots

fn snapshot_config(id: NodeId, n: u64) -> Config {
    let mut c = config(id, n);
    c.snapshot_every = 5;
    c.snapshot_keep = 2;
    c.snapshot_chunk_bytes = 16;
    c
}

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

fn install(term: u64, last: LogPosition, snapshot: &Snapshot) -> PeerMsg {
    PeerMsg::InstallSnapshot {
        term,
        last,
        offset: 0,
        data: snapshot.encode(),
        done: true,
    }
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

#[test]
fn recovery_from_a_snapshot_and_the_log_after_it() {
    let log: Vec<LogEntry> = (1..=8).map(|i| put(1, i, &format!("k{i}"))).collect();
    let snapshot = kv_of(&log[..5]);
    let hard_state = HardState {
        term: 1,
        voted_for: None,
        voter: true,
    };
    let restore = |snapshot: Option<Snapshot>, entries: &[LogEntry]| {
        Core::restore(
            snapshot_config(1, 3),
            Millis(0),
            hard_state,
            snapshot,
            entries.to_vec(),
        )
    };
    // The log overlaps the snapshot: `snapshot_keep` (2) entries stay.
    let core = restore(Some(snapshot.clone()), &log[2..]).unwrap();
    assert_eq!(core.first_index(), 4);
    assert_eq!((core.commit_index(), core.applied_index()), (5, 5));
    assert_eq!(core.last_position(), pos(1, 8));
    assert_eq!(core.applied_value(b"k5").unwrap().1, pos(1, 5));
    assert_eq!(core.applied_value(b"k6"), None); // not known committed yet
                                                 // The log continues the snapshot exactly, or is empty.
    let core = restore(Some(snapshot.clone()), &log[5..]).unwrap();
    assert_eq!(core.first_index(), 6);
    let core = restore(Some(snapshot.clone()), &[]).unwrap();
    assert_eq!(core.last_position(), pos(1, 5));
    // A log that ends before the snapshot.
    let core = restore(Some(snapshot.clone()), &log[..3]).unwrap();
    assert_eq!(core.last_position(), pos(1, 5));
    // A gap after the snapshot.
    assert_eq!(
        restore(Some(snapshot.clone()), &log[6..]).unwrap_err(),
        RecoverError::SnapshotGap {
            snapshot_index: 5,
            first: 7
        }
    );
    // The log holds the snapshot's index with another term.
    let other = Snapshot {
        last: pos(2, 5),
        ..snapshot.clone()
    };
    let hard_state_2 = HardState {
        term: 2,
        voted_for: None,
        voter: true,
    };
    let err = Core::restore(
        snapshot_config(1, 3),
        Millis(0),
        hard_state_2,
        Some(other),
        log[3..].to_vec(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            RecoverError::SnapshotConflict {
                index: 5,
                snapshot_term: 2,
                log_term: 1
            }
        ),
        "{err}"
    );
    // Without a snapshot the log must start at 1.
    assert_eq!(
        restore(None, &log[1..]).unwrap_err(),
        RecoverError::Gap {
            expected: 1,
            found: 2
        }
    );
}

fn put_value(key: &str, len: usize) -> ClientOp {
    ClientOp::Put {
        key: key.into(),
        value: vec![b'v'; len],
    }
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
