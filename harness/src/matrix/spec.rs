//! The matrix spec: rows (a mode and its settings), the faults each row
//! is run under, the workloads of each cell, and what each row claims.
//!
//! ```toml
//! [defaults]          # every field optional; these are the defaults
//! nodes = 3
//! time_limit = 20.0   # seconds of workload per cell
//! concurrency = 8
//! nemesis_interval = 3.0
//!
//! [[row]]
//! name = "lf-quorum-leader"
//! mode = "leader-follower"
//! acks = "quorum"
//! reads = "leader"
//! workloads = ["register", "set"]
//! faults = ["none", "partition", "isolate-leader", "kill", "power-loss", "pause"]
//! claims = ["linearizable", "set"]        # checkers that must say valid
//! # waive = { "power-loss" = ["set"] }    # claims not made under a fault
//! ```
//!
//! A claim names a checker (`linearizable`, `set`, `session`,
//! `convergence`, `siblings`, `counter`, and, for leaderless registers,
//! `quorum-reads`: no read misses a write acknowledged before it began);
//! it is checked
//! in every cell whose workload runs that checker, under every fault but
//! those `waive` lists for it. Everything else a cell measures is reported,
//! never judged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::nemesis::Fault;
use crate::workload::Workload;

/// The column of a cell: no fault, or one fault for the whole cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Column(pub Option<Fault>);

impl Column {
    /// The name in specs, tables and run ids: `none` or the fault's.
    pub fn name(self) -> &'static str {
        self.0.map_or("none", Fault::name)
    }
}

impl TryFrom<String> for Column {
    type Error = String;
    fn try_from(name: String) -> Result<Column, String> {
        if name == "none" {
            return Ok(Column(None));
        }
        <Fault as clap::ValueEnum>::from_str(&name, false)
            .map(|f| Column(Some(f)))
            .map_err(|_| {
                let known: Vec<&str> = <Fault as clap::ValueEnum>::value_variants()
                    .iter()
                    .map(|f| f.name())
                    .collect();
                format!(
                    "unknown fault {name:?}: expected none or one of {}",
                    known.join(", ")
                )
            })
    }
}

impl From<Column> for String {
    fn from(c: Column) -> String {
        c.name().to_string()
    }
}

/// Settings every row starts from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Node processes (standalone rows always run one).
    pub nodes: usize,
    /// Seconds of workload per cell.
    pub time_limit: f64,
    /// Client workers.
    pub concurrency: usize,
    /// Seconds between fault changes.
    pub nemesis_interval: f64,
    /// Seconds before an unanswered operation is `info`.
    pub op_timeout: f64,
    /// Seconds the linearizability search may take.
    pub check_budget: f64,
}

impl Default for Defaults {
    fn default() -> Defaults {
        Defaults {
            nodes: 3,
            time_limit: 20.0,
            concurrency: 8,
            nemesis_interval: 3.0,
            op_timeout: 1.0,
            check_budget: 60.0,
        }
    }
}

/// One mode with its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// A unique name: letters, digits and `-`, used in run ids.
    pub name: String,
    /// The node mode (`standalone`, `leader-follower`, ...).
    pub mode: String,
    /// `replication.acks`, if set.
    #[serde(default)]
    pub acks: Option<String>,
    /// How reads are served (`leader`, `follower`, `session`), if set.
    #[serde(default)]
    pub reads: Option<String>,
    /// Multi-leader and leaderless: `lww` or `siblings`, if set.
    #[serde(default)]
    pub conflicts: Option<String>,
    /// Leaderless: replicas per key, if not the node's default (3).
    #[serde(default)]
    pub n: Option<usize>,
    /// Leaderless: write quorum, if not the node's default.
    #[serde(default)]
    pub w: Option<usize>,
    /// Leaderless: read quorum, if not the node's default.
    #[serde(default)]
    pub r: Option<usize>,
    /// Leaderless: primary owners among the W, if any.
    #[serde(default)]
    pub pw: Option<usize>,
    /// Leaderless: primary owners among the R, if any.
    #[serde(default)]
    pub pr: Option<usize>,
    /// Leaderless: sloppy quorums (default strict).
    #[serde(default)]
    pub sloppy: bool,
    /// The nodes' fsync mode (default `always`).
    #[serde(default)]
    pub fsync: Option<String>,
    /// Node processes, if not the default.
    #[serde(default)]
    pub nodes: Option<usize>,
    /// Extra node config lines, as `--node-config` takes them.
    #[serde(default)]
    pub node_config: Vec<String>,
    /// The workloads of each cell.
    pub workloads: Vec<Workload>,
    /// The columns this row is run under by default.
    pub faults: Vec<Column>,
    /// Checkers that must say valid.
    #[serde(default)]
    pub claims: Vec<String>,
    /// Per fault, claims not made under it.
    #[serde(default)]
    pub waive: BTreeMap<String, Vec<String>>,
    /// One line for people: what the setting is for.
    #[serde(default)]
    pub about: Option<String>,
}

impl Row {
    /// True for a mode whose nodes replicate (and so have links to cut).
    pub fn replicated(&self) -> bool {
        self.mode != "standalone"
    }

    /// The claims made under `column`.
    pub fn claims_under(&self, column: Column) -> Vec<&str> {
        let waived = self.waive.get(column.name());
        self.claims
            .iter()
            .filter(|c| !waived.is_some_and(|w| w.contains(c)))
            .map(String::as_str)
            .collect()
    }

    /// Every column this row can be run under: network faults need links,
    /// `isolate-leader` a leader.
    pub fn possible_columns(&self) -> Vec<Column> {
        let mut columns = vec![Column(None)];
        for &fault in <Fault as clap::ValueEnum>::value_variants() {
            let fits = match fault {
                f if f.is_network() && !self.replicated() => false,
                Fault::IsolateLeader => self.mode == "leader-follower",
                _ => true,
            };
            if fits {
                columns.push(Column(Some(fault)));
            }
        }
        columns
    }
}

/// A whole spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// What every row starts from.
    #[serde(default)]
    pub defaults: Defaults,
    /// The rows, in table order.
    #[serde(rename = "row")]
    pub rows: Vec<Row>,
}

/// The claims a checker can be held to, by workload.
pub fn checkers_of(workload: Workload) -> &'static [&'static str] {
    match workload {
        Workload::Register => &["linearizable", "staleness", "quorum-reads"],
        Workload::Set => &["set"],
        Workload::Session => &["session", "staleness"],
        Workload::Siblings => &["siblings", "convergence"],
        Workload::Counter => &["counter", "convergence"],
        Workload::OrSet => &["orset", "convergence"],
    }
}

impl Spec {
    /// Parses and validates a spec; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Spec, String> {
        let spec: Spec = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        spec.validate().map_err(|e| format!("{origin}: {e}"))?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), String> {
        if self.rows.is_empty() {
            return Err("the spec has no [[row]]".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for row in &self.rows {
            let name = &row.name;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(format!(
                    "row name {name:?} must be letters, digits, '-' or '.' (it names run directories)"
                ));
            }
            if !names.insert(name) {
                return Err(format!("two rows are named {name:?}"));
            }
            if row.workloads.is_empty() || row.faults.is_empty() {
                return Err(format!(
                    "row {name}: needs at least one workload and one fault"
                ));
            }
            let possible = row.possible_columns();
            if let Some(c) = row.faults.iter().find(|c| !possible.contains(c)) {
                return Err(format!(
                    "row {name}: fault {} cannot act on a {} cluster",
                    c.name(),
                    row.mode
                ));
            }
            let measured: Vec<&str> = row
                .workloads
                .iter()
                .flat_map(|w| checkers_of(*w).iter().copied())
                .collect();
            let waived = row.waive.values().flatten();
            if let Some(c) = row
                .claims
                .iter()
                .chain(waived)
                .find(|c| !measured.contains(&c.as_str()))
            {
                return Err(format!(
                    "row {name}: claim {c:?} is not checked by its workloads ({}); claims name \
                     checkers: {}",
                    row.workloads
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    measured.join(", ")
                ));
            }
            for fault in row.waive.keys() {
                Column::try_from(fault.clone()).map_err(|e| format!("row {name}: waive: {e}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROW: &str = r#"
        [[row]]
        name = "async"
        mode = "leader-follower"
        acks = "async"
        workloads = ["set"]
        faults = ["none", "isolate-leader"]
        claims = ["set"]
        waive = { "isolate-leader" = ["set"] }
    "#;

    #[test]
    fn a_row_claims_what_it_does_not_waive() {
        let spec = Spec::parse(ROW, "t").unwrap();
        let row = &spec.rows[0];
        assert_eq!(spec.defaults, Defaults::default());
        assert_eq!(row.claims_under(Column(None)), ["set"]);
        assert!(row
            .claims_under(Column(Some(Fault::IsolateLeader)))
            .is_empty());
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let cases = [
            (
                ROW.replace("isolate-leader\"]", "flood\"]"),
                "unknown fault \"flood\"",
            ),
            (
                ROW.replace("claims = [\"set\"]", "claims = [\"linearizable\"]"),
                "not checked by its workloads",
            ),
            (
                ROW.replace("leader-follower", "standalone"),
                "cannot act on a standalone cluster",
            ),
            (format!("{ROW}{ROW}"), "two rows are named \"async\""),
            (
                ROW.replace("name = \"async\"", "name = \"a/b\""),
                "must be letters",
            ),
            (ROW.replace("acks", "akcs"), "unknown field `akcs`"),
        ];
        for (text, want) in cases {
            let err = Spec::parse(&text, "spec.toml").unwrap_err();
            assert!(err.contains(want), "{err}");
            assert!(err.starts_with("spec.toml"), "{err}");
        }
    }
}
