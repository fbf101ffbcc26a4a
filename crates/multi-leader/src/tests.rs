//! Unit tests in the openraft style: one input, the exact outputs.

use crate::*;
use mimeo_causality::{DvvSet, Lww};

const WALL: u64 = 1_000_000;

fn config(id: &str) -> Config {
    Config::new(id, ["n1", "n2", "n3"])
}

fn core(id: &str) -> Core {
    Core::new(config(id), Millis(0)).unwrap()
}

fn drain(core: &mut Core) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

fn vv<const K: usize>(entries: [(&str, u64); K]) -> VersionVector {
    entries.into_iter().collect()
}

fn put(key: &str, value: &str) -> ClientOp {
    ClientOp::Put {
        key: key.into(),
        value: value.into(),
        context: None,
    }
}

fn send(to: &str, msg: Message) -> Output {
    Output::Send { to: to.into(), msg }
}

fn status(applied: VersionVector, durable: VersionVector) -> Message {
    Message::Status { applied, durable }
}

/// The first write of `n1` to `key`: what `n1` persists and ships.
fn first_write(key: &str, value: &str) -> Write {
    let mut dvv = DvvSet::new();
    dvv.update(&VersionVector::new(), "n1", Some(value.as_bytes().to_vec()))
        .unwrap();
    Write {
        id: Dot::new("n1", 1),
        ts: Timestamp::new(WALL, 0, "n1"),
        key: key.into(),
        record: KeyRecord {
            state: KeyState::Siblings(dvv),
            writes: vv([("n1", 1)]),
        },
        fresh: Some(VersionVector::new()),
    }
}

/// The persist of [`first_write`] (to `k`, n1's first), the first of the
/// node that applies it (writing as the actor its clock names), with its
/// HLC at `clock`.
fn first_persist(write: &Write, clock: Timestamp) -> Output {
    let actor = clock.node.clone();
    Output::Persist(Persist {
        id: 1,
        writes: vec![write.clone()],
        keys: vec![KeyChange::Set {
            key: b"k".to_vec(),
            record: write.record.clone(),
        }],
        applied: vv([("n1", 1)]),
        clock,
        actor,
    })
}

/// Drives `core` through its first status round so it has nothing due.
fn quiet(core: &mut Core) {
    core.tick(Millis(0));
    drain(core);
}

#[test]
fn a_local_write_is_persisted_first_and_shipped_only_once_durable() {
    let mut n1 = core("n1");
    quiet(&mut n1);
    n1.handle_client(Millis(1), WALL, 7, put("k", "v"), None);
    let write = first_write("k", "v");
    assert_eq!(
        drain(&mut n1),
        [first_persist(&write, Timestamp::new(WALL, 0, "n1"))]
    );
    n1.persisted(Millis(2), 1);
    let st = status(vv([("n1", 1)]), vv([("n1", 1)]));
    assert_eq!(
        drain(&mut n1),
        [
            send("n2", st.clone()),
            send("n3", st),
            send("n2", Message::Writes(vec![write.clone()])),
            send("n3", Message::Writes(vec![write])),
            Output::Reply {
                req_id: 7,
                reply: Reply::Written {
                    write: Dot::new("n1", 1),
                    ts: Timestamp::new(WALL, 0, "n1"),
                    key_dot: Some(Dot::new("n1", 1)),
                    context: Some(vv([("n1", 1)])),
                    session: vv([("n1", 1)]),
                }
            },
        ]
    );
}

#[test]
fn a_quorum_write_waits_for_a_peer_to_report_it_durable() {
    let mut n1 = core("n1");
    quiet(&mut n1);
    n1.handle_client(Millis(1), WALL, 7, put("k", "v"), Some(AckMode::Quorum));
    n1.persisted(Millis(2), 1);
    let outputs = drain(&mut n1);
    assert!(!outputs.iter().any(|o| matches!(o, Output::Reply { .. })));
    // n2 has applied it but not made it durable: no ack.
    n1.handle_peer(
        Millis(3),
        WALL,
        "n2".into(),
        status(vv([("n1", 1)]), vv([])),
    );
    assert_eq!(drain(&mut n1), []);
    n1.handle_peer(
        Millis(4),
        WALL,
        "n2".into(),
        status(vv([("n1", 1)]), vv([("n1", 1)])),
    );
    let outputs = drain(&mut n1);
    assert!(
        matches!(
            &outputs[..],
            [Output::Reply {
                req_id: 7,
                reply: Reply::Written { .. }
            }]
        ),
        "{outputs:?}"
    );
}

#[test]
fn a_replicated_write_is_applied_and_persisted_without_echo() {
    let mut n2 = core("n2");
    quiet(&mut n2);
    let write = first_write("k", "v");
    n2.handle_peer(
        Millis(1),
        WALL,
        "n1".into(),
        Message::Writes(vec![write.clone()]),
    );
    assert_eq!(
        drain(&mut n2),
        [first_persist(&write, Timestamp::new(WALL, 1, "n2"))]
    );
    // Durable: it tells everyone, and relays n1's write to n3 only (n3
    // has not said it has it), never back to n1.
    n2.persisted(Millis(2), 1);
    let st = status(vv([("n1", 1)]), vv([("n1", 1)]));
    assert_eq!(
        drain(&mut n2),
        [
            send("n1", st.clone()),
            send("n3", st),
            send("n3", Message::Writes(vec![write.clone()])),
        ]
    );
    // A duplicate changes nothing and persists nothing.
    n2.handle_peer(Millis(3), WALL, "n1".into(), Message::Writes(vec![write]));
    assert_eq!(drain(&mut n2), []);
    assert_eq!(n2.status(WALL).duplicates, 1);
}

#[test]
fn a_write_after_a_gap_is_dropped_and_the_gap_asked_for_at_once() {
    let mut n2 = core("n2");
    quiet(&mut n2);
    let mut second = first_write("k", "v");
    second.id = Dot::new("n1", 2);
    n2.handle_peer(Millis(1), WALL, "n1".into(), Message::Writes(vec![second]));
    assert_eq!(drain(&mut n2), [send("n1", status(vv([]), vv([])))]);
    assert_eq!(n2.status(WALL).out_of_order, 1);
}

#[test]
fn a_timestamp_beyond_max_drift_is_applied_but_not_followed() {
    let mut n2 = core("n2");
    quiet(&mut n2);
    let mut write = first_write("k", "v");
    write.ts = Timestamp::new(WALL + 10_000, 0, "n1");
    n2.handle_peer(
        Millis(1),
        WALL,
        "n1".into(),
        Message::Writes(vec![write.clone()]),
    );
    let outputs = drain(&mut n2);
    assert!(matches!(&outputs[..], [Output::Persist(p)] if p.writes == [write.clone()]));
    assert_eq!(n2.record(b"k"), Some(&write.record));
    assert_eq!(n2.status(WALL).drift_refusals, 1);
    assert!(n2.clock() < write.ts, "the clock did not jump ahead");
}

#[test]
fn a_mismatched_operation_is_refused_naming_the_key_and_both_types() {
    let mut n1 = core("n1");
    n1.handle_client(Millis(0), WALL, 1, put("k", "v"), None);
    drain(&mut n1);
    let inc = ClientOp::Increment {
        key: b"k".to_vec(),
        delta: 1,
    };
    n1.handle_client(Millis(0), WALL, 2, inc, None);
    let outputs = drain(&mut n1);
    let [Output::Reply {
        req_id: 2,
        reply: Reply::Failed(e),
    }] = &outputs[..]
    else {
        panic!("{outputs:?}")
    };
    let message = e.to_string();
    assert!(
        message.contains("\"k\"") && message.contains("register") && message.contains("counter"),
        "{message}"
    );
    assert_eq!(
        n1.applied(),
        &vv([("n1", 1)]),
        "the refused write took no sequence number"
    );
}

#[test]
fn cas_is_refused_and_points_to_leader_follower() {
    let mut n1 = core("n1");
    let cas = ClientOp::Cas {
        key: b"k".to_vec(),
        expected: None,
        value: b"v".to_vec(),
    };
    n1.handle_client(Millis(0), WALL, 1, cas, None);
    assert_eq!(
        drain(&mut n1),
        [Output::Reply {
            req_id: 1,
            reply: Reply::Failed(ClientError::CasUnsupported)
        }]
    );
    assert!(ClientError::CasUnsupported
        .to_string()
        .contains("leader-follower"));
}

#[test]
fn a_session_read_waits_for_the_session_then_times_out() {
    let mut n2 = core("n2");
    quiet(&mut n2);
    let get = |session| ClientOp::Get {
        key: b"k".to_vec(),
        session: Some(session),
        timeout_ms: Some(50),
    };
    n2.handle_client(Millis(10), WALL, 1, get(vv([("n1", 1)])), None);
    n2.handle_client(Millis(10), WALL, 2, get(vv([("n1", 2)])), None);
    assert_eq!(drain(&mut n2), []);
    assert_eq!(n2.next_timeout(), Millis(60));
    // n1's first write arrives: read 1 is answered with it.
    n2.handle_peer(
        Millis(20),
        WALL,
        "n1".into(),
        Message::Writes(vec![first_write("k", "v")]),
    );
    let outputs = drain(&mut n2);
    assert!(
        matches!(&outputs[0], Output::Reply { req_id: 1, reply: Reply::Value { value: ReadValue::Register { values, .. }, .. } } if values == &[b"v".to_vec()]),
        "{outputs:?}"
    );
    n2.tick(Millis(60));
    let outputs = drain(&mut n2);
    assert!(outputs.contains(&Output::Reply {
        req_id: 2,
        reply: Reply::Failed(ClientError::SessionTimeout {
            waited_ms: 50,
            missing: vv([("n1", 2)]),
        }),
    }));
}

#[test]
fn writes_older_than_the_memory_log_are_loaded_from_storage() {
    let mut c = config("n1");
    c.log_bytes = 0; // keeps nothing
    let mut n1 = Core::new(c, Millis(0)).unwrap();
    quiet(&mut n1);
    n1.handle_client(Millis(1), WALL, 1, put("k", "v"), None);
    let Some(Output::Persist(p)) = n1.poll_output() else {
        panic!()
    };
    n1.persisted(Millis(2), p.id);
    let outputs = drain(&mut n1);
    let loads: Vec<_> = outputs
        .iter()
        .filter(|o| matches!(o, Output::Load { .. }))
        .collect();
    assert_eq!(
        loads,
        [
            &Output::Load {
                peer: "n2".into(),
                origin: "n1".into(),
                from_seq: 1,
                to_seq: 1
            },
            &Output::Load {
                peer: "n3".into(),
                origin: "n1".into(),
                from_seq: 1,
                to_seq: 1
            },
        ]
    );
    n1.loaded(Millis(3), &"n2".into(), p.writes.clone());
    assert_eq!(drain(&mut n1), [send("n2", Message::Writes(p.writes))]);
}

#[test]
fn lww_keeps_the_larger_timestamp() {
    let mut c = config("n2");
    c.policy = Policy::Lww;
    let mut n2 = Core::new(c, Millis(0)).unwrap();
    n2.handle_client(Millis(0), WALL, 1, put("k", "mine"), None);
    drain(&mut n2);
    let theirs = Write {
        id: Dot::new("n1", 1),
        ts: Timestamp::new(WALL - 1, 0, "n1"),
        key: b"k".to_vec(),
        record: KeyRecord {
            state: KeyState::Lww(Lww::new(
                Timestamp::new(WALL - 1, 0, "n1"),
                Some(b"old".to_vec()),
            )),
            writes: vv([("n1", 1)]),
        },
        fresh: Some(VersionVector::new()),
    };
    n2.handle_peer(Millis(1), WALL, "n1".into(), Message::Writes(vec![theirs]));
    drain(&mut n2);
    let Some(KeyState::Lww(lww)) = n2.record(b"k").map(|r| &r.state) else {
        panic!()
    };
    assert_eq!(lww.value.as_deref(), Some(&b"mine"[..]));
    assert_eq!(n2.record(b"k").unwrap().writes, vv([("n1", 1), ("n2", 1)]));
}

#[test]
fn restore_keeps_the_clock_and_the_sequence() {
    let mut n1 = core("n1");
    n1.handle_client(Millis(0), WALL, 1, put("k", "v"), None);
    let Some(Output::Persist(p)) = n1.poll_output() else {
        panic!()
    };
    let mut disk = DurableState::default();
    disk.apply(&p);
    // The physical clock went back 10 s while the node was down.
    let mut n1 = Core::restore(config("n1"), disk, Millis(0)).unwrap();
    n1.handle_client(Millis(0), WALL - 10_000, 2, put("k", "w"), None);
    let Some(Output::Persist(p2)) = n1.poll_output() else {
        panic!()
    };
    assert_eq!(p2.writes[0].id, Dot::new("n1", 2));
    assert!(p2.writes[0].ts > p.writes[0].ts);
}

/// Pins the version-1 encoding of a [`Write`] (postcard).
#[test]
fn golden_bytes_of_a_write() {
    let bytes = postcard::to_allocvec(&first_write("k", "v")).unwrap();
    assert_eq!(
        bytes,
        [
            2, 110, 49, 1, // id: "n1", 1
            192, 132, 61, 0, 2, 110, 49, // ts: 1000000, 0, "n1"
            1, 107, // key "k"
            0, 1, 2, 110, 49, 1, 1, 1, 1, 118, // Siblings {n1: counter 1, [Some("v")]}
            1, 2, 110, 49, 1, // writes {n1: 1}
            1, 0, // fresh: Some({})
        ]
    );
}

/// Three cores with an instant disk; `deliver(from, to, msg)` says which
/// messages arrive (the others are dropped). Returns the local writes
/// each node persisted (to hand over out of order).
fn settle_with(
    nodes: &mut [Core],
    now: Millis,
    deliver: &dyn Fn(&str, &str, &Message) -> bool,
) -> Vec<Write> {
    let mut persisted = Vec::new();
    loop {
        let mut quiet = true;
        for i in 0..nodes.len() {
            while let Some(output) = nodes[i].poll_output() {
                quiet = false;
                match output {
                    Output::Send { to, msg } => {
                        let from = nodes[i].id().clone();
                        if deliver(from.as_str(), to.as_str(), &msg) {
                            let j = nodes.iter().position(|n| *n.id() == to).unwrap();
                            nodes[j].handle_peer(now, WALL, from, msg);
                        }
                    }
                    Output::Persist(p) => {
                        let me = nodes[i].actor().clone();
                        persisted.extend(p.writes.iter().filter(|w| w.id.node == me).cloned());
                        nodes[i].persisted(now, p.id);
                    }
                    _ => {}
                }
            }
        }
        if quiet {
            return persisted;
        }
    }
}

/// The trace of the 5-node simulation's seeds 336 (siblings) and 405
/// (LWW), on three nodes: n3 deletes a key; n1 and n2 collect the
/// tombstone, n3 has not yet (it heard nothing from them). n1 writes the
/// key afresh, n2 writes it after n1, and n2's write reaches n3 before
/// n1's. n3 must end where n1 and n2 are: n2's record reflects every
/// write n3's tombstone reflects, so it supersedes it (merging it instead
/// kept the collected tombstone on n3 alone, and, under LWW, the
/// collected writes in n3's `writes`).
#[test]
fn a_write_made_after_a_collection_supersedes_the_tombstone_a_lagging_node_still_holds() {
    for policy in [Policy::Siblings, Policy::Lww] {
        let mut nodes: Vec<Core> = ["n1", "n2", "n3"]
            .iter()
            .map(|id| {
                let mut c = config(id);
                c.policy = policy;
                Core::new(c, Millis(0)).unwrap()
            })
            .collect();
        let all = |_: &str, _: &str, _: &Message| true;
        let not_to_n3 = |_: &str, to: &str, _: &Message| to != "n3";
        // n3 writes then deletes k; everyone applies both.
        nodes[2].handle_client(Millis(0), WALL, 1, put("k", "v"), None);
        settle_with(&mut nodes, Millis(0), &all);
        let context = match &nodes[2].record(b"k").unwrap().state {
            KeyState::Siblings(dvv) => Some(dvv.context()),
            _ => None,
        };
        let delete = ClientOp::Delete {
            key: b"k".to_vec(),
            context,
        };
        nodes[2].handle_client(Millis(0), WALL, 2, delete, None);
        settle_with(&mut nodes, Millis(0), &not_to_n3);
        // Status rounds: n1 and n2 collect; n3 hears nothing.
        for t in [100, 200, 300] {
            for node in nodes.iter_mut() {
                node.tick(Millis(t));
            }
            settle_with(&mut nodes, Millis(t), &not_to_n3);
        }
        assert_eq!(nodes[0].record(b"k"), None, "{policy:?}: n1 collected");
        assert_eq!(nodes[1].record(b"k"), None, "{policy:?}: n2 collected");
        assert!(nodes[2].record(b"k").unwrap().state.only_tombstones());
        // n1 writes k afresh; n2 writes it after n1's write.
        nodes[0].handle_client(Millis(300), WALL + 1, 3, put("k", "a"), None);
        settle_with(&mut nodes, Millis(300), &not_to_n3);
        nodes[1].handle_client(Millis(300), WALL + 2, 4, put("k", "b"), None);
        let made = settle_with(&mut nodes, Millis(300), &not_to_n3);
        // n2's write reaches n3 first, then everything.
        let n2_write = made
            .into_iter()
            .find(|w| w.id.node.as_str() == "n2")
            .unwrap();
        nodes[2].handle_peer(
            Millis(301),
            WALL + 3,
            "n2".into(),
            Message::Writes(vec![n2_write]),
        );
        for t in [400, 500, 600, 700] {
            for node in nodes.iter_mut() {
                node.tick(Millis(t));
            }
            settle_with(&mut nodes, Millis(t), &all);
        }
        assert_eq!(nodes[0].applied(), nodes[2].applied(), "{policy:?}");
        for node in &nodes[1..] {
            assert_eq!(
                node.record(b"k"),
                nodes[0].record(b"k"),
                "{policy:?}: {} and n1 differ",
                node.id()
            );
        }
        assert!(!nodes[2].record(b"k").unwrap().state.only_tombstones());
    }
}

#[test]
fn writes_waiting_for_acknowledgements_are_bounded_in_bytes() {
    let mut c = config("n1");
    c.acks = AckMode::All;
    c.max_pending_ack_bytes = 1;
    let mut n1 = Core::new(c, Millis(0)).unwrap();
    quiet(&mut n1);
    // The first write always fits; it waits for n2 and n3.
    n1.handle_client(Millis(1), WALL, 1, put("k", "a"), None);
    n1.persisted(Millis(1), 1);
    drain(&mut n1);
    let report = n1.status(WALL);
    assert_eq!(report.pending_acks, 1);
    let pending_bytes = report.pending_ack_bytes as usize;
    assert!(pending_bytes > 0);
    // The budget is full: the next write is refused and has no effect.
    n1.handle_client(Millis(2), WALL, 2, put("k", "b"), None);
    let refused = Output::Reply {
        req_id: 2,
        reply: Reply::Failed(ClientError::AcksFull {
            pending_bytes,
            limit_bytes: 1,
        }),
    };
    assert_eq!(drain(&mut n1), [refused]);
    assert_eq!(n1.applied(), &vv([("n1", 1)]));
    let message = ClientError::AcksFull {
        pending_bytes,
        limit_bytes: 1,
    }
    .to_string();
    assert!(message.contains("max_pending_ack_bytes"), "{message}");
    // The peers report it durable: it is answered, and writes are taken again.
    for peer in ["n2", "n3"] {
        let st = status(vv([("n1", 1)]), vv([("n1", 1)]));
        n1.handle_peer(Millis(3), WALL, peer.into(), st);
    }
    let outputs = drain(&mut n1);
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Reply {
            req_id: 1,
            reply: Reply::Written { .. }
        }
    )));
    assert_eq!(n1.status(WALL).pending_ack_bytes, 0);
    n1.handle_client(Millis(4), WALL, 3, put("k", "c"), None);
    assert_eq!(n1.applied(), &vv([("n1", 2)]));
}

#[test]
fn tombstones_waiting_for_collection_are_bounded_in_bytes() {
    let mut c = config("n1");
    c.max_tombstone_bytes = 1;
    let mut n1 = Core::new(c, Millis(0)).unwrap();
    quiet(&mut n1);
    let delete = |key: &str| ClientOp::Delete {
        key: key.into(),
        context: None,
    };
    n1.handle_client(Millis(1), WALL, 1, delete("a"), None);
    n1.persisted(Millis(1), 1);
    drain(&mut n1);
    let report = n1.status(WALL);
    assert_eq!(report.tombstones_pending, 1);
    let pending_bytes = report.tombstone_bytes as usize;
    assert!(pending_bytes > 0);
    // A second delete is refused, with no effect; other writes go on.
    n1.handle_client(Millis(2), WALL, 2, delete("b"), None);
    assert_eq!(
        drain(&mut n1),
        [Output::Reply {
            req_id: 2,
            reply: Reply::Failed(ClientError::TombstonesFull {
                pending_bytes,
                limit_bytes: 1,
            }),
        }]
    );
    assert_eq!(n1.record(b"b"), None);
    n1.handle_client(Millis(2), WALL, 3, put("c", "v"), None);
    n1.persisted(Millis(2), 2);
    drain(&mut n1);
    assert_eq!(n1.applied(), &vv([("n1", 2)]));
    // Every node has it durably: the tombstone is collected, deletes are taken again.
    for peer in ["n2", "n3"] {
        let st = status(vv([("n1", 2)]), vv([("n1", 2)]));
        n1.handle_peer(Millis(3), WALL, peer.into(), st);
    }
    drain(&mut n1);
    let report = n1.status(WALL);
    assert_eq!((report.tombstones_pending, report.tombstone_bytes), (0, 0));
    n1.handle_client(Millis(4), WALL, 4, delete("b"), None);
    assert_eq!(n1.applied(), &vv([("n1", 3)]));
}

#[test]
fn a_write_whose_state_would_not_fit_a_peer_message_is_refused() {
    let mut c = config("n1");
    c.max_write_bytes = 400;
    let mut n1 = Core::new(c, Millis(0)).unwrap();
    quiet(&mut n1);
    let blind = |value: &str| ClientOp::Put {
        key: b"k".to_vec(),
        value: value.into(),
        context: Some(VersionVector::new()),
    };
    // Blind writes pile up as siblings until the state would not fit.
    let value = "v".repeat(100);
    for req in 1..=2 {
        n1.handle_client(Millis(1), WALL, req, blind(&value), None);
    }
    assert_eq!(n1.applied(), &vv([("n1", 2)]));
    drain(&mut n1);
    n1.handle_client(Millis(1), WALL, 3, blind(&value), None);
    let outputs = drain(&mut n1);
    let [Output::Reply {
        req_id: 3,
        reply:
            Reply::Failed(ClientError::WriteTooLarge {
                limit_bytes: 400, ..
            }),
    }] = &outputs[..]
    else {
        panic!("{outputs:?}")
    };
    assert_eq!(
        n1.applied(),
        &vv([("n1", 2)]),
        "the refused write took nothing"
    );
    // A write with the read's context replaces the siblings: it fits.
    let context = match &n1.record(b"k").unwrap().state {
        KeyState::Siblings(dvv) => dvv.context(),
        _ => unreachable!(),
    };
    let put = ClientOp::Put {
        key: b"k".to_vec(),
        value: value.clone().into_bytes(),
        context: Some(context),
    };
    n1.handle_client(Millis(2), WALL, 4, put, None);
    assert_eq!(n1.applied(), &vv([("n1", 3)]));
}

#[test]
fn the_status_reports_lag_per_origin_siblings_and_apply_lag() {
    let mut n2 = core("n2");
    quiet(&mut n2);
    // n1's first write (HLC time WALL) is applied here 250 ms later.
    n2.handle_peer(
        Millis(1),
        WALL + 250,
        "n1".into(),
        Message::Writes(vec![first_write("k", "v")]),
    );
    drain(&mut n2);
    // n3 has applied three of n1's writes: n2 learns it lacks two.
    n2.handle_peer(
        Millis(2),
        WALL + 250,
        "n3".into(),
        status(vv([("n1", 3)]), vv([("n1", 3)])),
    );
    drain(&mut n2);

    let report = n2.status(WALL + 1000);
    let lag = |node: &str, applied, behind_writes, since_latest_ms| OriginLag {
        node: node.into(),
        incarnation: 0,
        applied,
        behind_writes,
        since_latest_ms,
    };
    assert_eq!(report.origins["n1"], lag("n1", 1, 2, 1000));
    assert!(
        !report.origins.contains_key("n3"),
        "nothing heard of n3's writes: no incarnation of n3 is known"
    );
    assert_eq!(report.siblings_histogram, [(1, 1)].into_iter().collect());
    let n1_lag = &report.apply_lag["n1"];
    assert_eq!((n1_lag.count(), n1_lag.sum_ms()), (1, 250));
    assert!(
        n1_lag.buckets().any(|(le, n)| le == Some(500) && n == 1)
            && n1_lag.buckets().any(|(le, n)| le == Some(200) && n == 0),
        "250 ms falls in the 500 ms bucket"
    );
    assert_eq!(report.apply_lag.len(), 1, "only n1's writes were applied");

    // A write here that did not see n1's: two siblings on one key.
    n2.handle_client(Millis(3), WALL + 1000, 1, put("k", "w"), None);
    drain(&mut n2);
    let report = n2.status(WALL + 1000);
    assert_eq!(report.siblings_histogram, [(2, 1)].into_iter().collect());
    assert_eq!(
        report.apply_lag["n1"].count(),
        1,
        "a local write is no remote lag"
    );

    // A write from an origin whose clock is ahead lags by 0, not a wrap.
    let mut ahead = first_write("j", "x");
    ahead.id = Dot::new("n1", 2);
    ahead.ts = Timestamp::new(WALL + 5_000, 0, "n1");
    n2.handle_peer(
        Millis(4),
        WALL + 1000,
        "n1".into(),
        Message::Writes(vec![ahead]),
    );
    let report = n2.status(WALL + 1000);
    assert_eq!(
        (
            report.apply_lag["n1"].count(),
            report.apply_lag["n1"].sum_ms()
        ),
        (2, 250)
    );
    assert_eq!(report.origins["n1"], lag("n1", 2, 1, 0));
    assert_eq!(
        report.siblings_histogram,
        [(1, 1), (2, 1)].into_iter().collect(),
        "j has one value, k two"
    );

    // Deleting j with its context leaves only a tombstone: a pending
    // tombstone, not a key with one sibling.
    let context = match &n2.record(b"j").unwrap().state {
        KeyState::Siblings(dvv) => Some(dvv.context()),
        other => panic!("{other:?}"),
    };
    let delete = ClientOp::Delete {
        key: b"j".to_vec(),
        context,
    };
    n2.handle_client(Millis(5), WALL + 1000, 2, delete, None);
    let report = n2.status(WALL + 1000);
    assert_eq!(report.siblings_histogram, [(2, 1)].into_iter().collect());
    assert_eq!(report.tombstones_pending, 1);
    assert!(report.tombstone_bytes > 0);
    assert_eq!(report.live_keys, 1);
}

/// Three cores with an instant disk delivering every message at once;
/// returns every reply.
fn settle_replies(nodes: &mut [Core]) -> Vec<(RequestId, Reply)> {
    let mut replies = Vec::new();
    loop {
        let mut quiet = true;
        for i in 0..nodes.len() {
            while let Some(output) = nodes[i].poll_output() {
                quiet = false;
                match output {
                    Output::Send { to, msg } => {
                        let from = nodes[i].id().clone();
                        let j = nodes.iter().position(|n| *n.id() == to).unwrap();
                        nodes[j].handle_peer(Millis(0), WALL, from, msg);
                    }
                    Output::Persist(p) => nodes[i].persisted(Millis(0), p.id),
                    Output::Reply { req_id, reply } => replies.push((req_id, reply)),
                    // The memory logs hold everything here.
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        if quiet {
            return replies;
        }
    }
}

/// n1 writes two keys and increments a counter (acknowledged by a
/// quorum), then loses its disk and comes back empty with `fresh_epoch`,
/// writes two more keys and increments again before it hears from
/// anyone. Returns what went wrong: writes acknowledged but missing on a
/// node, replicas that differ.
fn wiped_node_scenario(fresh_epoch: u64) -> Vec<String> {
    let mut nodes: Vec<Core> = ["n1", "n2", "n3"].iter().map(|id| core(id)).collect();
    let incr = |delta| ClientOp::Increment {
        key: b"c".to_vec(),
        delta,
    };
    let quorum = Some(AckMode::Quorum);
    nodes[0].handle_client(Millis(0), WALL, 1, put("old1", "a"), quorum);
    nodes[0].handle_client(Millis(0), WALL, 2, put("old2", "b"), quorum);
    nodes[0].handle_client(Millis(0), WALL, 3, incr(5), quorum);
    nodes[0].handle_client(Millis(0), WALL, 7, put("gone", "x"), quorum);
    let mut replies = settle_replies(&mut nodes);
    let context = match &nodes[0].record(b"gone").unwrap().state {
        KeyState::Siblings(dvv) => Some(dvv.context()),
        _ => None,
    };
    let delete = ClientOp::Delete {
        key: b"gone".to_vec(),
        context,
    };
    nodes[0].handle_client(Millis(0), WALL, 8, delete, quorum);
    replies.extend(settle_replies(&mut nodes));
    // The disk is wiped: a new core with nothing durable.
    let mut wiped = config("n1");
    wiped.fresh_epoch = fresh_epoch;
    nodes[0] = Core::new(wiped, Millis(0)).unwrap();
    nodes[0].handle_client(Millis(0), WALL, 4, put("new1", "c"), quorum);
    nodes[0].handle_client(Millis(0), WALL, 5, put("new2", "d"), quorum);
    nodes[0].handle_client(Millis(0), WALL, 6, incr(1), quorum);
    for peer in ["n2", "n3"] {
        nodes[0].connected(Millis(0), &peer.into());
    }
    replies.extend(settle_replies(&mut nodes));
    // Status rounds until quiet: catch-up from every side.
    for round in 1..=5 {
        for node in nodes.iter_mut() {
            node.tick(Millis(round * 1_000));
        }
        replies.extend(settle_replies(&mut nodes));
    }
    let mut wrong = Vec::new();
    let acknowledged: Vec<RequestId> = replies
        .iter()
        .filter(|(_, r)| matches!(r, Reply::Written { .. }))
        .map(|(id, _)| *id)
        .collect();
    let expected = [
        (1, "old1", "a"),
        (2, "old2", "b"),
        (4, "new1", "c"),
        (5, "new2", "d"),
    ];
    for node in &nodes {
        for (req, key, value) in expected {
            if !acknowledged.contains(&req) {
                continue;
            }
            let holds = node.record(key.as_bytes()).is_some_and(|r| {
                matches!(r.state.read_value(),
                    ReadValue::Register { values, .. } if values == [value.as_bytes().to_vec()])
            });
            if !holds {
                wrong.push(format!("{} lost acknowledged {key}={value}", node.id()));
            }
        }
        let counter = node.record(b"c").map(|r| r.state.read_value());
        let want = [3, 6]
            .iter()
            .filter(|req| acknowledged.contains(req))
            .map(|req| if *req == 3 { 5 } else { 1 })
            .sum::<i128>();
        if counter != Some(ReadValue::Counter(want)) {
            wrong.push(format!(
                "{} counter is {counter:?}, {want} acknowledged",
                node.id()
            ));
        }
        if !matches!(
            node.record(b"gone").map(|r| r.state.read_value()),
            None | Some(ReadValue::Register { deleted: true, .. })
        ) {
            wrong.push(format!("{} resurrected gone", node.id()));
        }
        // The old incarnation's entries in the tombstone's causal past do
        // not block its collection once the new one has caught up.
        let pending = node.status(WALL).tombstones_pending;
        if pending != 0 {
            wrong.push(format!("{} has {pending} tombstone(s) pending", node.id()));
        }
        if node.records().collect::<Vec<_>>() != nodes[1].records().collect::<Vec<_>>() {
            wrong.push(format!("{} differs from n2", node.id()));
        }
    }
    if acknowledged.len() != 8 {
        wrong.push(format!("only {acknowledged:?} acknowledged"));
    }
    wrong
}

/// Issue 22: a node that lost its disk writes as a new incarnation
/// (`n1.<epoch>`), so its new writes are not taken for its old ones: the
/// new writes and the peers' copies of the old ones all survive, on every
/// node (it gets its old writes back), and the counter loses no
/// increment.
#[test]
fn a_wiped_node_writes_as_a_new_incarnation_and_loses_nothing() {
    let wrong = wiped_node_scenario(7);
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The scenario catches an incarnation reused after a wipe (the plain
    // id again): writes acknowledged by a quorum are lost.
    let reused = wiped_node_scenario(0);
    assert!(
        reused.iter().any(|w| w.contains("lost acknowledged new1")),
        "{reused:#?}"
    );
}

/// The acknowledgements of a quorum write count nodes: a peer counts once
/// whichever of this node's incarnations its vector holds, and a wiped
/// node's new incarnation needs the peers' durable reports of *its*
/// writes.
#[test]
fn status_reports_each_origin_with_its_node_and_incarnation() {
    let mut c = config("n1");
    c.fresh_epoch = 42;
    let mut n1 = Core::new(c, Millis(0)).unwrap();
    assert_eq!(n1.actor().as_str(), "n1.42");
    n1.handle_client(Millis(0), WALL, 1, put("k", "v"), None);
    drain(&mut n1);
    // n2 reports it holds n1's old incarnation's writes.
    n1.handle_peer(
        Millis(0),
        WALL,
        "n2".into(),
        status(vv([("n1", 4), ("n2", 1)]), vv([("n1", 4)])),
    );
    let status = n1.status(WALL);
    assert_eq!(status.actor.as_str(), "n1.42");
    let origins: Vec<(&str, &str, u64, u64, u64)> = status
        .origins
        .iter()
        .map(|(o, l)| {
            (
                o.as_str(),
                l.node.as_str(),
                l.incarnation,
                l.applied,
                l.behind_writes,
            )
        })
        .collect();
    assert_eq!(
        origins,
        [
            ("n1", "n1", 0, 0, 4),
            ("n1.42", "n1", 42, 1, 0),
            ("n2", "n2", 0, 0, 1),
        ]
    );
}

/// A peer that lost its disk reports less than it once held durably: it
/// counts for what it holds now, so the writes it lost are not taken as
/// held by every node (the stable vector a driver discards its log below,
/// and tombstone collection waits for).
#[test]
fn a_peer_that_reports_less_than_before_counts_for_what_it_holds_now() {
    let mut n1 = core("n1");
    n1.handle_client(Millis(0), WALL, 1, put("k", "v"), None);
    let Some(Output::Persist(p)) = n1.poll_output() else {
        panic!()
    };
    n1.persisted(Millis(0), p.id);
    let held = vv([("n1", 1)]);
    for peer in ["n2", "n3"] {
        n1.handle_peer(
            Millis(0),
            WALL,
            peer.into(),
            status(held.clone(), held.clone()),
        );
    }
    assert_eq!(n1.status(WALL).stable, held);
    drain(&mut n1);
    // n2 comes back wiped, as a new incarnation.
    let wiped = vv([("n2.9", 1)]);
    n1.handle_peer(Millis(1), WALL, "n2".into(), status(wiped.clone(), wiped));
    assert_eq!(n1.status(WALL).stable, VersionVector::new());
    // It is sent n1's write again at once.
    let sent = drain(&mut n1);
    assert!(
        sent.iter().any(|o| matches!(o,
            Output::Send { to, msg: Message::Writes(w) } if to.as_str() == "n2" && w[0].id == Dot::new("n1", 1))),
        "{sent:?}"
    );
}

/// A write whose dot the key's record already reflects (a later write
/// that had seen it came first) changes nothing: merging it would bring
/// back a tombstone the later write's origin had collected. A wiped node
/// catching up on its old incarnation's writes meets this all the time.
#[test]
fn a_write_the_record_already_reflects_changes_nothing() {
    let mut n3 = core("n3");
    quiet(&mut n3);
    // n1 deleted k; everyone collected it; n2 then wrote k afresh.
    let mut tombstone = DvvSet::new();
    tombstone.update(&VersionVector::new(), "n1", None).unwrap();
    let old = Write {
        id: Dot::new("n1", 1),
        ts: Timestamp::new(WALL, 0, "n1"),
        key: b"k".to_vec(),
        record: KeyRecord {
            state: KeyState::Siblings(tombstone),
            writes: vv([("n1", 1)]),
        },
        fresh: Some(VersionVector::new()),
    };
    let mut fresh = DvvSet::new();
    fresh
        .update(&VersionVector::new(), "n2", Some(b"b".to_vec()))
        .unwrap();
    let newer = Write {
        id: Dot::new("n2", 1),
        ts: Timestamp::new(WALL, 1, "n2"),
        key: b"k".to_vec(),
        record: KeyRecord {
            state: KeyState::Siblings(fresh),
            writes: vv([("n1", 1), ("n2", 1)]),
        },
        fresh: Some(vv([("n1", 1)])),
    };
    // n2's write reaches n3 first, n1's old one after it.
    n3.handle_peer(
        Millis(1),
        WALL,
        "n2".into(),
        Message::Writes(vec![newer.clone()]),
    );
    n3.handle_peer(Millis(1), WALL, "n1".into(), Message::Writes(vec![old]));
    assert_eq!(n3.record(b"k"), Some(&newer.record));
    assert_eq!(n3.applied(), &vv([("n1", 1), ("n2", 1)]));
}

/// An origin maps back to its node and incarnation; a node id that would
/// read as another's incarnation is refused, naming both.
#[test]
fn origins_map_to_their_node_and_ambiguous_ids_are_refused() {
    let c = Config::new("n1", ["n1", "n2", "n10"]);
    let member = |o: &str| c.member_of(o).map(|(n, e)| (n.to_string(), e));
    assert_eq!(member("n1"), Some(("n1".into(), 0)));
    assert_eq!(member("n1.42"), Some(("n1".into(), 42)));
    assert_eq!(member("n10.7"), Some(("n10".into(), 7)));
    assert_eq!(member("n1.x"), None);
    assert_eq!(member("n1."), None);
    assert_eq!(member("n3.1"), None);
    let err = Core::new(Config::new("n1", ["n1", "n1.5"]), Millis(0)).unwrap_err();
    assert_eq!(
        err,
        ConfigError::LooksLikeIncarnation {
            id: "n1.5".into(),
            node: "n1".into()
        }
    );
    assert!(err.to_string().contains("n1.5") && err.to_string().contains("node n1"));
}
