//! The quorum-reads checker: what leaderless replication with
//! W + R > N promises, and no more.
//!
//! With strict quorums (only a key's N primary replicas count toward W
//! and R), a write acknowledged by W replicas and a read merging R
//! replicas' answers overlap in at least one replica when W + R > N, so
//! **a read that begins after a write was acknowledged returns that
//! write or a later one**. That is the whole promise: it is not
//! linearizability (a write that failed, or timed out having reached one
//! replica, may be seen by one read and missed by the next; concurrent
//! reads and writes may be ordered differently by different replicas),
//! so the register's linearizability is reported beside it as a
//! measurement, never claimed ([`measured`]).
//!
//! A *provably stale* read is the [`staleness`](super::staleness)
//! checker's: some `ok` write of the key was invoked after every possible
//! source of the value read had completed, and was itself acknowledged
//! before the read was invoked. Under W + R > N (whether or not the
//! quorums are sloppy) every such read is a violation and the verdict is
//! invalid. Sloppy quorums void the promise (fallback nodes stand in for
//! unreachable primaries, so W and R may not overlap): the checker still
//! holds the run to it, and finding the stale read is what a sloppy run
//! under partition is expected to show. With W + R <= N nothing is
//! promised: stale reads are counted, and the verdict stays valid.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Anomaly, CheckResult, Verdict};
use crate::history::History;

/// The checker's name in results and matrix claims.
pub const CHECKER: &str = "quorum-reads";

/// The quorums a leaderless run used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorums {
    /// Replicas per key.
    pub n: usize,
    /// Replicas that must take a write.
    pub w: usize,
    /// Replicas a read merges.
    pub r: usize,
    /// Whether fallback nodes counted toward W and R.
    pub sloppy: bool,
}

impl Quorums {
    /// True when a write quorum and a read quorum of primaries must
    /// overlap: W + R > N.
    pub fn overlap(&self) -> bool {
        self.w + self.r > self.n
    }

    /// `N = 3, W = 2, R = 2, strict`.
    pub fn describe(&self) -> String {
        format!(
            "N = {}, W = {}, R = {}, {}",
            self.n,
            self.w,
            self.r,
            if self.sloppy { "sloppy" } else { "strict" }
        )
    }
}

/// Checks that no read missed a write acknowledged before it began, when
/// `quorums` overlap (see the module docs).
pub fn check(history: &History, quorums: &Quorums) -> CheckResult {
    let stale = super::staleness::check(history);
    let Some(count) = stale.details["overall"]["stale"].as_u64() else {
        return CheckResult {
            checker: CHECKER.into(),
            verdict: Verdict::Unknown,
            summary: stale.summary.replacen("not measured", "not checked", 1),
            ..stale
        };
    };
    let reads = stale.details["overall"]["reads"].as_u64().unwrap_or(0);
    let anomalies: Vec<Anomaly> = stale
        .anomalies
        .into_iter()
        .map(|a| Anomaly {
            kind: "stale-quorum-read".into(),
            ..a
        })
        .collect();
    let q = quorums.describe();
    let (verdict, summary) = if !quorums.overlap() {
        (
            Verdict::Valid,
            format!(
                "not claimed: W + R <= N ({q}) promises no fresh read; {count} of {reads} \
                 reads provably stale (measured)"
            ),
        )
    } else if count == 0 {
        (
            Verdict::Valid,
            format!(
                "{reads} reads, none missed a write acknowledged before it began (W + R > N, \
                 {q})"
            ),
        )
    } else {
        let why = if quorums.sloppy {
            "sloppy quorums let fallback nodes stand in, so W and R need not overlap"
        } else {
            "a strict quorum read must overlap every acknowledged write"
        };
        (
            Verdict::Invalid,
            format!(
                "{count} of {reads} reads missed a write acknowledged before they began \
                 although W + R > N ({q}): {why}"
            ),
        )
    };
    CheckResult {
        checker: CHECKER.into(),
        verdict,
        summary,
        anomalies,
        details: json!({
            "quorums": quorums,
            "claimed": quorums.overlap(),
            "reads": reads,
            "stale": count,
        }),
    }
}

/// A checker's result reported as a measurement: its verdict becomes
/// valid (it votes for nothing) and what it found stays in the summary,
/// the anomalies and `details.measured_verdict`. Leaderless registers'
/// linearizability is reported this way: W + R > N is not linearizable
/// under failures, and the report shows where it was not.
pub fn measured(result: CheckResult, why: &str) -> CheckResult {
    let mut details = match result.details {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => serde_json::Map::new(),
        other => {
            let mut map = serde_json::Map::new();
            map.insert("result".into(), other);
            map
        }
    };
    details.insert("measured_verdict".into(), json!(result.verdict));
    details.insert("claimed".into(), json!(false));
    CheckResult {
        verdict: Verdict::Valid,
        summary: format!(
            "measured, not claimed ({why}): {}: {}",
            result.verdict, result.summary
        ),
        details: serde_json::Value::Object(details),
        ..result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::rows_history;
    use crate::history::OpType::{Invoke, Ok as Done};

    const STRICT: Quorums = Quorums {
        n: 3,
        w: 2,
        r: 2,
        sloppy: false,
    };

    /// Write 1 acknowledged, then write 2 acknowledged, then a read of 1:
    /// provably stale.
    fn stale_history() -> History {
        rows_history(
            "k",
            &[
                (0, Invoke, "write", json!(1)),
                (0, Done, "write", json!(1)),
                (0, Invoke, "write", json!(2)),
                (0, Done, "write", json!(2)),
                (1, Invoke, "read", json!(null)),
                (1, Done, "read", json!(1)),
            ],
        )
    }

    #[test]
    fn a_read_missing_an_acknowledged_write_breaks_overlapping_quorums() {
        let result = check(&stale_history(), &STRICT);
        assert_eq!(result.verdict, Verdict::Invalid, "{result:#?}");
        assert_eq!(result.anomalies.len(), 1);
        assert_eq!(result.anomalies[0].kind, "stale-quorum-read");
        assert!(
            result.summary.contains("1 of 1 reads"),
            "{}",
            result.summary
        );
        let sloppy = check(
            &stale_history(),
            &Quorums {
                sloppy: true,
                ..STRICT
            },
        );
        assert_eq!(sloppy.verdict, Verdict::Invalid);
        assert!(sloppy.summary.contains("sloppy"), "{}", sloppy.summary);
    }

    #[test]
    fn without_overlap_stale_reads_are_measured_not_judged() {
        let one = Quorums {
            w: 1,
            r: 1,
            ..STRICT
        };
        let result = check(&stale_history(), &one);
        assert_eq!(result.verdict, Verdict::Valid);
        assert!(
            result.summary.starts_with("not claimed"),
            "{}",
            result.summary
        );
        assert_eq!(result.details["stale"], 1);
    }

    #[test]
    fn a_fresh_read_holds() {
        let history = rows_history(
            "k",
            &[
                (0, Invoke, "write", json!(1)),
                (0, Done, "write", json!(1)),
                (0, Invoke, "write", json!(2)),
                (0, Done, "write", json!(2)),
                (1, Invoke, "read", json!(null)),
                (1, Done, "read", json!(2)),
            ],
        );
        let result = check(&history, &STRICT);
        assert_eq!(result.verdict, Verdict::Valid, "{result:#?}");
    }

    #[test]
    fn a_measured_result_keeps_what_it_found_but_votes_for_nothing() {
        let found = CheckResult {
            checker: "linearizable".into(),
            verdict: Verdict::Invalid,
            summary: "not linearizable".into(),
            anomalies: vec![Anomaly {
                kind: "not-linearizable".into(),
                message: "m".into(),
                indices: vec![3],
            }],
            details: json!({"keys": 1}),
        };
        let m = measured(found, "W + R > N is not linearizable");
        assert_eq!(m.verdict, Verdict::Valid);
        assert_eq!(m.checker, "linearizable");
        assert_eq!(m.anomalies.len(), 1);
        assert_eq!(m.details["measured_verdict"], "invalid");
        assert_eq!(m.details["keys"], 1);
        assert!(
            m.summary.starts_with("measured, not claimed"),
            "{}",
            m.summary
        );
    }
}
