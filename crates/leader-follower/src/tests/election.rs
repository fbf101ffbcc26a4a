//! Pre-votes, votes, leader stickiness, probes of a silent leader, stepping down and leadership transfer.

use super::*;

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
