//! Anti-entropy at scale, over the core alone (no I/O): issue 23's
//! acceptance figure, bytes shipped / bytes that differed.
//!
//! Two replicas (n1, n2 of a three-node ring, N = 3, so every key lives on
//! both) are loaded with the same `AE_KEYS` keys (default 1,000,000) of
//! `AE_VALUE_BYTES`-byte values (default 100), each written once by a third
//! writer; then `AE_DIFFER_PER_MILLE` (default 1, i.e. 0.1%) of the keys,
//! evenly spread, are overwritten on n2 only by a write that read the old
//! version (so n2's state supersedes n1's). Then n1 starts exchanges, and
//! messages between n1 and n2 are delivered at once (those to n3 are
//! dropped) until the replicas agree. It prints one JSON line:
//!
//! - `differing_bytes`: the encoded size of the newer states (what a
//!   perfect repair must send);
//! - `shipped_bytes`: every anti-entropy message both sent (roots,
//!   branches, segments, key lists with clocks, states), from the cores'
//!   own `ae_bytes_shipped` counters; `ratio` = shipped / differing
//!   (target ≤ 2);
//! - `exchange_ms`: wall time of the rounds until the replicas agreed (the
//!   cores' CPU time, both on this thread; no network, no disk);
//! - `idle_exchange_bytes` / `idle_exchange_ms`: one more round between the
//!   now identical replicas: what a periodic exchange costs when nothing
//!   differs.
//!
//! A bench binary over the core rather than real nodes: loading a million
//! keys through the client protocol would take minutes and measure the
//! load, and the network would add nothing the byte counters do not
//! already count. It is not a criterion bench because one exchange over a
//! million keys is the measurement, and building the replicas takes far
//! longer than it. Run it with
//!
//! ```text
//! cargo bench -p mimeo-leaderless --bench anti_entropy
//! AE_KEYS=10000 cargo bench -p mimeo-leaderless --bench anti_entropy   # quick
//! ```

use std::time::Instant;

use mimeo_causality::{DvvSet, VersionVector};
use mimeo_leaderless::{Config, Core, KeyState, KeyStateExt as _, Message, Millis, NodeId, Output};

fn env(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
        Err(_) => default,
    }
}

/// Performs a core's outputs that concern only itself (persists are
/// durable at once) and returns the messages it sent, with their targets.
fn drain(core: &mut Core, now: Millis) -> Vec<(NodeId, Message)> {
    let mut sent = Vec::new();
    while let Some(output) = core.poll_output() {
        match output {
            Output::Persist(p) => core.persisted(now, p.id),
            Output::Send { to, msg } => sent.push((to, msg)),
            _ => {}
        }
    }
    sent
}

/// Delivers messages between `a` and `b` until neither sends any more.
fn settle(a: &mut Core, b: &mut Core, now: Millis) {
    loop {
        let mut quiet = true;
        for a_sends in [true, false] {
            let (src, dst) = if a_sends {
                (&mut *a, &mut *b)
            } else {
                (&mut *b, &mut *a)
            };
            let from = src.id().clone();
            for (to, msg) in drain(src, now) {
                if to == *dst.id() {
                    quiet = false;
                    dst.handle_peer(now, 1_000, from.clone(), msg);
                }
            }
        }
        if quiet {
            return;
        }
    }
}

fn store(core: &mut Core, key: &[u8], state: &KeyState) {
    let msg = Message::Store {
        op: 0,
        key: key.to_vec(),
        state: state.clone(),
        hint: None,
        ack_received: false,
    };
    core.handle_peer(Millis(0), 1_000, NodeId::from("n3"), msg);
}

fn shipped(a: &Core, b: &Core) -> u64 {
    a.metrics().ae_bytes_shipped + b.metrics().ae_bytes_shipped
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it too:
    // there, a small instance so the test suite stays quick.
    let testing = !std::env::args().any(|a| a == "--bench");
    let keys = env("AE_KEYS", if testing { 2_000 } else { 1_000_000 });
    let value_bytes = env("AE_VALUE_BYTES", 100) as usize;
    let per_mille = env("AE_DIFFER_PER_MILLE", 1).max(1);
    let interval_ms = 100;

    let ids = ["n1", "n2", "n3"];
    let mut config_a = Config::new("n1", ids);
    config_a.anti_entropy_interval_ms = interval_ms;
    let mut config_b = Config::new("n2", ids);
    config_b.anti_entropy_interval_ms = 0; // only n1 starts exchanges
    let mut a = Core::new(config_a, Millis(0)).expect("a valid config");
    let mut b = Core::new(config_b, Millis(0)).expect("a valid config");

    let loading = Instant::now();
    let value = vec![b'x'; value_bytes];
    let mut original = DvvSet::new();
    original
        .update(&VersionVector::new(), "n3.1", Some(value.clone()))
        .expect("a first write");
    let original = KeyState::Siblings(original);
    for i in 0..keys {
        let key = format!("key-{i:08}").into_bytes();
        store(&mut a, &key, &original);
        store(&mut b, &key, &original);
        if i % 10_000 == 0 {
            drain(&mut a, Millis(0));
            drain(&mut b, Millis(0));
        }
    }
    drain(&mut a, Millis(0));
    drain(&mut b, Millis(0));
    let (mut differing_keys, mut differing_bytes) = (0u64, 0u64);
    for i in (0..keys).step_by((1000 / per_mille) as usize) {
        let key = format!("key-{i:08}").into_bytes();
        let Some(KeyState::Siblings(dvv)) = b.state(&key).cloned() else {
            panic!("key-{i:08} was stored as a register");
        };
        let mut newer = dvv;
        let context = newer.context();
        newer
            .update(&context, "n2.1", Some(value.clone()))
            .expect("a write over what it read");
        let newer = KeyState::Siblings(newer);
        differing_bytes += newer.encode().len() as u64;
        differing_keys += 1;
        store(&mut b, &key, &newer);
    }
    drain(&mut a, Millis(0));
    drain(&mut b, Millis(0));
    let load_s = loading.elapsed().as_secs_f64();

    // Exchanges until the replicas agree (bounded: a tree pair per peer,
    // and each round one exchange with each).
    let started = Instant::now();
    let mut rounds = 0u64;
    let mut now_ms = 0u64;
    let agreed = |a: &Core, b: &Core| {
        (0..keys).step_by((1000 / per_mille) as usize).all(|i| {
            let key = format!("key-{i:08}").into_bytes();
            a.state(&key) == b.state(&key)
        })
    };
    while !agreed(&a, &b) {
        rounds += 1;
        assert!(
            rounds <= 1_000,
            "the replicas did not agree within 1,000 rounds"
        );
        now_ms += interval_ms;
        a.tick(Millis(now_ms), 1_000 + now_ms);
        b.tick(Millis(now_ms), 1_000 + now_ms);
        settle(&mut a, &mut b, Millis(now_ms));
    }
    let exchange_ms = started.elapsed().as_secs_f64() * 1000.0;
    let shipped_bytes = shipped(&a, &b);
    let keys_shipped = a.metrics().ae_keys_shipped + b.metrics().ae_keys_shipped;

    // One more exchange of n1 with n2, between identical replicas: the
    // rounds it takes for n1's timer to come back to n2.
    let before = shipped(&a, &b);
    let idle_started = Instant::now();
    for _ in 0..2 {
        now_ms += interval_ms;
        a.tick(Millis(now_ms), 1_000 + now_ms);
        b.tick(Millis(now_ms), 1_000 + now_ms);
        settle(&mut a, &mut b, Millis(now_ms));
    }
    let idle_ms = idle_started.elapsed().as_secs_f64() * 1000.0;
    let idle_bytes = shipped(&a, &b) - before;

    let ratio = shipped_bytes as f64 / differing_bytes.max(1) as f64;
    println!(
        "{{\"keys\":{keys},\"value_bytes\":{value_bytes},\"differing_keys\":{differing_keys},\
         \"differing_bytes\":{differing_bytes},\"shipped_bytes\":{shipped_bytes},\
         \"keys_shipped\":{keys_shipped},\"ratio\":{ratio:.3},\"rounds\":{rounds},\
         \"exchange_ms\":{exchange_ms:.1},\"idle_rounds\":2,\"idle_exchange_bytes\":{idle_bytes},\
         \"idle_exchange_ms\":{idle_ms:.2},\"load_s\":{load_s:.1}}}"
    );
}
