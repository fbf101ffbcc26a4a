//! The deadlines a core waits for: each role's own, and the earliest of
//! its pending requests ([`Core::next_timeout`]).

use super::*;

#[test]
fn a_leader_waits_for_its_heartbeat_or_an_earlier_request_and_a_follower_for_its_own() {
    let mut config = config(1, 3);
    config.write_timeout_ms = 20;
    let mut core = leader(3, config);
    // Elected at 1000: the next heartbeat round is due one interval later.
    assert_eq!(core.next_timeout(), Millis(1050));
    core.handle_client(Millis(1001), 10, put_op("a"), None);
    assert_eq!(core.next_timeout(), Millis(1021), "the write's deadline");
    core.handle_client(Millis(1002), 11, put_op("b"), None);
    assert_eq!(core.next_timeout(), Millis(1021));
    // The first write commits: the second one's deadline is next.
    core.persisted(Millis(1003), pos(1, 3));
    core.handle_peer(Millis(1003), 2, ok(1, 2, 2));
    assert_eq!(replies(&mut core), vec![written(10, pos(1, 2))]);
    assert_eq!(core.next_timeout(), Millis(1022));
    // Deposed with the second write pending: it is answered, and neither
    // its deadline nor the heartbeat is waited for any more. The follower
    // waits to probe its new leader should it fall silent (one and a half
    // heartbeat intervals), before its election timeout.
    core.handle_peer(Millis(1010), 2, heartbeat(2, 1));
    let unknown = Reply::Unknown {
        reason: Unknown::LostLeadership,
    };
    assert_eq!(replies(&mut core), vec![reply(11, unknown)]);
    assert_eq!(core.role(), Role::Follower);
    assert_eq!(core.next_timeout(), Millis(1085));
    // Probed, and still silent: the election timeout comes next.
    core.tick(Millis(1085));
    assert!(drain(&mut core).contains(&Output::Probe { to: 2 }));
    assert_eq!(core.next_timeout(), Millis(1135), "one interval later");
    core.handle_peer(Millis(1100), 2, heartbeat(2, 2));
    assert_eq!(
        core.next_timeout(),
        Millis(1175),
        "heard again: probe later"
    );
}

#[test]
fn a_held_request_is_waited_for_until_it_is_answered() {
    let mut core = Core::new(config(2, 3), Millis(0)).unwrap();
    let election = core.next_timeout();
    assert!(
        (Millis(300)..Millis(600)).contains(&election),
        "{election:?}"
    );
    // No leader heard: the write is held for an election timeout at most
    // (until 610), and the election timeout comes first.
    core.handle_client(Millis(10), 7, put_op("a"), None);
    assert_eq!(core.next_timeout(), election);
    // A vote granted at 400 puts the election off past the held write.
    let vote = PeerMsg::RequestVote {
        term: 2,
        last: pos(0, 0),
        transfer: false,
    };
    core.handle_peer(Millis(400), 3, vote);
    assert_eq!(core.next_timeout(), Millis(610));
    core.tick(Millis(610));
    let no_leader = Reply::NotLeader { leader_hint: None };
    assert_eq!(replies(&mut core), vec![reply(7, no_leader)]);
    let election = core.next_timeout();
    assert!(
        (Millis(700)..Millis(1000)).contains(&election),
        "{election:?}"
    );
    // Held again, until the candidate, elected, speaks.
    core.handle_client(Millis(620), 8, put_op("b"), None);
    assert_eq!(core.next_timeout(), election);
    core.handle_peer(Millis(630), 3, heartbeat(2, 1));
    let not_leader = Reply::NotLeader {
        leader_hint: Some(3),
    };
    assert_eq!(replies(&mut core), vec![reply(8, not_leader)]);
    assert_eq!(
        core.next_timeout(),
        Millis(630 + 75),
        "the probe of a silent leader"
    );
}
