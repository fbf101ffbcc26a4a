//! Checkers: each reads a [`History`](crate::History) and returns a
//! [`CheckResult`] with a verdict and the anomalies that prove it.
//!
//! No checker depends on the runner: they check any history, recorded here
//! or imported from Jepsen.

use serde::{Deserialize, Serialize};

pub mod convergence;
pub mod counter;
pub mod linear;
pub mod model;
pub mod orset;
pub mod perf;
pub mod quorum;
pub mod session;
pub mod set;
pub mod siblings;
pub mod staleness;

/// What a checker concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The property holds on this history.
    Valid,
    /// The property is violated; the anomalies prove it.
    Invalid,
    /// The checker could not decide (time budget exhausted, not enough
    /// information). Never reported as valid.
    Unknown,
}

impl Verdict {
    /// The verdict of several checks together: invalid if any is invalid,
    /// else unknown if any is unknown, else valid.
    pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        verdicts
            .into_iter()
            .fold(Verdict::Valid, |acc, v| match (acc, v) {
                (Verdict::Invalid, _) | (_, Verdict::Invalid) => Verdict::Invalid,
                (Verdict::Unknown, _) | (_, Verdict::Unknown) => Verdict::Unknown,
                _ => Verdict::Valid,
            })
    }

    /// The process exit code for this verdict, as Maelstrom uses them: 0
    /// valid, 1 invalid, 2 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Valid => 0,
            Verdict::Invalid => 1,
            Verdict::Unknown => 2,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "invalid",
            Verdict::Unknown => "unknown",
        })
    }
}

/// One thing a checker found wrong (or could not decide), with the history
/// indices that show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// A short machine-readable name: `not-linearizable`, `lost`, `stale`...
    pub kind: String,
    /// What happened, for people, naming keys, values and indices.
    pub message: String,
    /// The history indices that prove it (invocations and completions).
    pub indices: Vec<u64>,
}

/// The outcome of one checker on one history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The checker's name: `linearizable`, `set`, `perf`...
    pub checker: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// One line for people: counts and the headline finding.
    pub summary: String,
    /// What it found, each with proving indices.
    pub anomalies: Vec<Anomaly>,
    /// Checker-specific figures (counts, per-key results, percentiles),
    /// written to `results.json` as they are.
    #[serde(default)]
    pub details: serde_json::Value,
}

impl CheckResult {
    /// The result for a history `checker` cannot read (an operation it does
    /// not know, a malformed value): `unknown`, never `valid`, with one
    /// `unsupported` anomaly naming the offending indices.
    pub fn unsupported(checker: &str, message: String, indices: Vec<u64>) -> CheckResult {
        CheckResult {
            checker: checker.into(),
            verdict: Verdict::Unknown,
            summary: format!("not checked: {message}"),
            anomalies: vec![Anomaly {
                kind: "unsupported".into(),
                message,
                indices,
            }],
            details: serde_json::Value::Null,
        }
    }
}

/// The *settled* final reads: of the successful reads begun after index
/// `ended` (every update had ended by then), the last one each node
/// answered, by invocation index. A run that reads every replica in
/// rounds until they agree leaves earlier rounds behind, which show
/// replicas still catching up: what a replica settled on is its last read.
/// A read that names no node is its own replica.
pub(crate) fn settled_reads<'a, 'h: 'a>(
    reads: impl IntoIterator<Item = &'a crate::history::Completed<'h>>,
    ended: u64,
) -> std::collections::HashSet<u64> {
    let mut last: std::collections::HashMap<Result<&str, u64>, u64> = Default::default();
    for read in reads {
        let Some(done) = read
            .complete
            .filter(|c| c.kind == crate::history::OpType::Ok)
        else {
            continue;
        };
        let began = read.invoke.index;
        if began <= ended {
            continue;
        }
        let node = done.node.as_deref().ok_or(began);
        let slot = last.entry(node).or_insert(began);
        *slot = (*slot).max(began);
    }
    last.into_values().collect()
}

/// Test histories from `(process, type, f, value)` rows on one key, each
/// row one entry, its time its index, answered by node `n<process>`.
#[cfg(test)]
pub(crate) fn rows_history(
    key: &str,
    rows: &[(u64, crate::history::OpType, &str, serde_json::Value)],
) -> crate::History {
    use crate::history::{Op, Process};
    crate::History::new(
        rows.iter()
            .enumerate()
            .map(|(i, (p, kind, f, value))| Op {
                index: i as u64,
                time_ns: i as u64,
                process: Process::Client(*p),
                kind: *kind,
                f: (*f).into(),
                key: Some(key.into()),
                value: value.clone(),
                node: Some(format!("n{p}")),
                error: None,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_dominates_unknown_which_dominates_valid() {
        use Verdict::*;
        assert_eq!(Verdict::combine([]), Valid);
        assert_eq!(Verdict::combine([Valid, Valid]), Valid);
        assert_eq!(Verdict::combine([Valid, Unknown, Valid]), Unknown);
        assert_eq!(Verdict::combine([Unknown, Invalid, Valid]), Invalid);
        assert_eq!([Valid, Invalid, Unknown].map(Verdict::exit_code), [0, 1, 2]);
    }
}
