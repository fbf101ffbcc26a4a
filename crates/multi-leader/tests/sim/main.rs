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
    let mut sim = Sim::new(nodes, seed, policy, sabotage);
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
