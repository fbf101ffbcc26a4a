//! Deterministic simulation of 3- and 5-node multi-leader clusters: a
//! seeded network that drops, duplicates, delays and reorders messages and
//! partitions the cluster; crashes that lose every record not yet synced;
//! skewed clocks (beyond `max_drift`, and going back across restarts);
//! clients writing values, deletes, counters and sets with every ack mode,
//! and session reads; on every third seed, byte budgets for pending
//! acknowledgements and tombstones small enough that writes and deletes
//! are refused while peers are cut off. After the faults, everything heals and goes quiet,
//! and the invariants in `invariants/` are checked (HLC monotonicity on
//! every sync, during the run).
//!
//! A failure prints its seed; replay it with `ML_SIM_SEED=<seed>`. Run more
//! seeds with `ML_SIM_SEEDS=<count>`, longer runs with `ML_SIM_STEPS=<ms>`.
//! A wipe fault (a crash that also empties the disk: the node comes back
//! as a new incarnation) runs in its own tests, one of them ignored with
//! what it found.
//! Each invariant is shown to catch a core broken on purpose
//! ([`Sabotage`], a hidden test-only setting) in
//! `each_invariant_catches_a_broken_core`.

mod cluster;
mod invariants;

use std::panic::{catch_unwind, AssertUnwindSafe};

use cluster::{Sim, Tally};
use mimeo_multi_leader::{Policy, Sabotage};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

fn policy(seed: u64) -> Policy {
    if seed % 2 == 0 {
        Policy::Siblings
    } else {
        Policy::Lww
    }
}

/// One run: faults for `steps` ms, then 4 s healed and quiet, then checks.
fn run(
    nodes: usize,
    seed: u64,
    steps: u64,
    policy: Policy,
    sabotage: Option<Sabotage>,
) -> Result<Tally, String> {
    run_sim(Sim::new(nodes, seed, policy, sabotage), steps)
}

fn run_sim(mut sim: Sim, steps: u64) -> Result<Tally, String> {
    for _ in 0..steps {
        sim.random_step()
            .map_err(|e| format!("t={} ms: {e}", sim.now.0))?;
    }
    sim.heal_and_quiet(4_000)?;
    sim.check_final()?;
    Ok(std::mem::take(&mut sim.tally))
}

fn run_many(nodes: usize, default_seeds: u64, default_steps: u64) {
    let steps = env("ML_SIM_STEPS").unwrap_or(default_steps);
    let seeds: Vec<u64> = match env("ML_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("ML_SIM_SEEDS").unwrap_or(default_seeds)).collect(),
    };
    let mut total = Tally::default();
    for &seed in &seeds {
        let result = catch_unwind(AssertUnwindSafe(|| {
            run(nodes, seed, steps, policy(seed), None)
        }));
        let replay =
            format!("replay: ML_SIM_SEED={seed} cargo test -p mimeo-multi-leader --test sim");
        let t = match result {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => panic!(
                "{nodes}-node simulation failed with seed {seed} ({:?}): {e}\n{replay}",
                policy(seed)
            ),
            Err(_) => panic!(
                "{nodes}-node simulation panicked with seed {seed} (message above)\n{replay}"
            ),
        };
        total.writes += t.writes;
        total.acked += t.acked;
        total.refused += t.refused;
        total.reads += t.reads;
        total.crashes += t.crashes;
        total.partitions += t.partitions;
        total.collected += t.collected;
        total.loads += t.loads;
        total.drift_refusals += t.drift_refusals;
        total.max_siblings = total.max_siblings.max(t.max_siblings);
    }
    println!(
        "{nodes} nodes, {} seeds x {steps} ms: {total:?}",
        seeds.len()
    );
    if seeds.len() >= 10 {
        assert!(total.acked > 0 && total.reads > 0, "{total:?}");
        assert!(total.crashes > 0 && total.partitions > 0, "{total:?}");
        assert!(total.collected > 0, "no tombstone was collected: {total:?}");
        assert!(total.loads > 0, "no catch-up read storage: {total:?}");
        assert!(
            total.drift_refusals > 0,
            "no clock drift was refused: {total:?}"
        );
        assert!(total.max_siblings > 1, "no siblings: {total:?}");
    }
}

#[test]
fn three_node_clusters_keep_every_invariant() {
    run_many(3, 24, 3_000);
}

#[test]
fn five_node_clusters_keep_every_invariant() {
    run_many(5, 10, 3_000);
}

/// Each invariant rejects a core broken on purpose: some seed among the
/// first 30 makes the broken core fail with that invariant's message.
#[test]
fn each_invariant_catches_a_broken_core() {
    let cases = [
        (Sabotage::ReplaceOnApply, Policy::Siblings, "convergence"),
        (
            Sabotage::IgnoreContext,
            Policy::Siblings,
            "acknowledged write lost",
        ),
        (Sabotage::LwwKeepsSmallest, Policy::Lww, "LWW winner"),
        (Sabotage::ForgetClock, Policy::Lww, "HLC monotonic"),
        (Sabotage::CollectEarly, Policy::Siblings, "resurrection"),
    ];
    for (sabotage, policy, expected) in cases {
        let caught = (0..30).find(|&seed| {
            matches!(run(3, seed, 3_000, policy, Some(sabotage)), Err(e) if e.contains(expected))
        });
        let seed =
            caught.unwrap_or_else(|| panic!("{sabotage:?}: no seed failed with {expected:?}"));
        println!("{sabotage:?} caught by {expected:?} with seed {seed}");
    }
}

fn run_with_wipes(seed: u64, reuse_id: bool) -> Result<Tally, String> {
    let sim = Sim::new(3, seed, policy(seed), None).with_wipes(0.0005, reuse_id);
    run_sim(sim, 3_000)
}

/// Wipes (a crash that also replaces the disk with an empty one, at
/// 1/2000 per ms on top of the usual faults): a wiped node comes back as
/// a new incarnation, and every invariant should hold for the writes some
/// other disk still held (issue 22).
///
/// Found (ignored until fixed): a wiped node re-applies its lost past
/// (old writes, in each origin's order) interleaved with newer writes and
/// its own new ones, and can end holding a tombstone every other node
/// collected while it was gone: convergence fails on 2 of the first 100
/// seeds (3 nodes, 3 s: `ML_SIM_SEED=38` and 84). The way out is a state
/// transfer to a wiped node (key states, not old writes), or holding its
/// own writes to a key until it has caught up on the key's past: see the
/// crate docs, "Incarnations".
#[test]
#[ignore = "a wiped node can keep a tombstone the others collected (convergence, seed 38)"]
fn wiped_nodes_come_back_as_new_incarnations_and_keep_every_invariant() {
    let seeds: Vec<u64> = match env("ML_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("ML_SIM_SEEDS").unwrap_or(100)).collect(),
    };
    let mut wipes = 0;
    let mut failed = Vec::new();
    for seed in seeds {
        match run_with_wipes(seed, false) {
            Ok(t) => wipes += t.wipes,
            Err(e) => failed.push(format!("seed {seed} ({:?}): {e}", policy(seed))),
        }
    }
    assert!(wipes > 0, "no node was wiped");
    assert!(
        failed.is_empty(),
        "{} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The wipe fault matters: a wiped node back under its old actor id (the
/// bug of issue 22) breaks an invariant on some seed.
#[test]
fn a_wiped_node_reusing_its_actor_id_breaks_an_invariant() {
    let caught = (0..30).find_map(|seed| run_with_wipes(seed, true).err().map(|e| (seed, e)));
    let (seed, error) = caught.expect("a wiped node reusing its actor id broke no invariant");
    println!("reused actor ids caught with seed {seed}: {error}");
}
