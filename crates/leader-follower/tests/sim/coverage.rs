//! What the random runs must exercise for their passing to mean anything:
//! writes, reads, crashes, partitions, failovers, snapshots, refused probes
//! and lost disks.
//!
//! Each check applies once a sweep has enough seeds for the event to
//! happen in it (measured over the default sweeps, 100 seeds of 3 nodes and
//! 40 of 5, 2000 steps each: every seed writes, reads, crashes a node and
//! cuts a link; a failover is missing from at most 2 seeds in a row;
//! snapshots are configured on odd seeds only; refused probes and lost
//! disks are missing from up to 7 seeds in a row). A sweep too small or too
//! short for some checks names them on stderr, written past the test
//! harness's output capture, so that `LF_SIM_SEEDS=5` does not pass
//! quietly without them.

use std::io::Write as _;

use crate::cluster::Tally;

/// One thing the runs must exercise.
struct Check {
    /// What must happen, as a person reads it.
    what: &'static str,
    /// The fewest seeds (from seed 0, of the default length) that are sure
    /// to hold it, with room to spare.
    min_seeds: usize,
    /// Whether the runs' totals show it.
    seen: fn(&Tally) -> bool,
}

/// Every check, in the order of the seeds each needs.
const CHECKS: &[Check] = &[
    Check {
        what: "writes acknowledged",
        min_seeds: 1,
        seen: |t| t.written > 0,
    },
    Check {
        what: "reads answered",
        min_seeds: 1,
        seen: |t| t.reads > 0,
    },
    Check {
        what: "nodes crashed",
        min_seeds: 1,
        seen: |t| t.crashes > 0,
    },
    Check {
        what: "links cut",
        min_seeds: 1,
        seen: |t| t.partitions > 0,
    },
    Check {
        what: "snapshots taken, log discarded and snapshot chunks sent",
        min_seeds: 4,
        seen: |t| t.snapshots > 0 && t.discarded > 0 && t.snapshot_chunks > 0,
    },
    Check {
        what: "a failover (a term above 1)",
        min_seeds: 5,
        seen: |t| t.max_term > 1,
    },
    Check {
        what: "a crashed leader's host refusing a probe",
        min_seeds: 20,
        seen: |t| t.probes_refused > 0,
    },
    Check {
        what: "a disk lost",
        min_seeds: 20,
        seen: |t| t.disk_losses > 0,
    },
];

/// How the runs were chosen.
pub(crate) struct Sweep {
    /// Cluster size.
    pub(crate) nodes: u64,
    /// How many seeds ran (from seed 0 unless `replay`).
    pub(crate) seeds: usize,
    /// Steps per seed, and the default the checks were measured at.
    pub(crate) steps: u64,
    pub(crate) default_steps: u64,
    /// One seed named by `LF_SIM_SEED`: a replay, not a sweep.
    pub(crate) replay: bool,
}

/// Asserts every check the sweep is large enough for, and says on stderr
/// (uncaptured) which it is not large enough for.
pub(crate) fn check(sweep: &Sweep, total: &Tally) {
    let unchecked: Vec<String> = if sweep.replay {
        vec!["every check (a replay of one seed)".to_string()]
    } else if sweep.steps < sweep.default_steps {
        vec![format!(
            "every check (runs of {} steps, shorter than the {} they were measured at)",
            sweep.steps, sweep.default_steps
        )]
    } else {
        let mut unchecked = Vec::new();
        for c in CHECKS {
            if sweep.seeds < c.min_seeds {
                unchecked.push(format!("{} (needs {} seeds)", c.what, c.min_seeds));
                continue;
            }
            assert!(
                (c.seen)(total),
                "{} nodes, {} seeds x {} steps: the runs never had {}: {total:?}",
                sweep.nodes,
                sweep.seeds,
                sweep.steps,
                c.what
            );
        }
        unchecked
    };
    if !unchecked.is_empty() {
        // Past libtest's capture, which holds back a passing test's
        // println! and eprintln!.
        let _ = writeln!(
            std::io::stderr(),
            "LF SIM COVERAGE NOT CHECKED ({} nodes, {} seeds x {} steps): {}",
            sweep.nodes,
            sweep.seeds,
            sweep.steps,
            unchecked.join("; ")
        );
    }
}
