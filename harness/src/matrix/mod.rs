//! `mimeo-harness matrix`: every strategy × setting × fault, run on real
//! processes, in one table.
//!
//! A [`Spec`] (TOML, see [`spec`]) lists rows (a mode and its settings),
//! the faults each is run under and the workloads of each cell, and what
//! each row *claims* (which checkers must say valid). The matrix runs every
//! cell × seed as an ordinary [`run`](crate::run::run) into
//! `<out>/runs/<row>--<fault>--<workload>--s<seed>/`, so any cell can be
//! opened, replayed and re-checked like any run; then it reads each run's
//! `results.json` and writes, into `<out>/`:
//!
//! - `matrix.json`: every figure of every cell and seed, with its run
//!   directory;
//! - `matrix.md`: the table, a row per setting and a column per fault;
//! - `matrix.html`: the same grid, self-contained, coloured by *claimed and
//!   held* / *claimed and broken* / *not claimed* (and what happened), each
//!   cell linking to its runs' reports.
//!
//! It is resumable: a cell whose run directory already holds
//! `results.json` is read, not re-run (unless `rerun`); a directory left
//! half-written by an interrupted matrix is removed and run again. Seeds
//! are 1..=N, so the same spec and seed count always mean the same runs.
//!
//! What each cell measures, from the run's own checkers: acknowledged
//! writes lost (set and siblings workloads: count and share of the
//! acknowledged),
//! stale reads (share, worst in versions and ms), whether linearizability
//! or the session guarantees held, convergence after heal (how long the
//! replicas' final wait took), availability while the fault was in force
//! (share of requests that succeeded, longest gap without a successful
//! write), and latency p50 / p99 and `ok` throughput outside and during
//! faults.
//!
//! A broken claim is what makes [`Outcome::broken`] true and the command
//! exit 1; a cell that could not run at all is reported as an error (exit
//! 3: the matrix is incomplete, so it proves nothing).

pub mod render;
pub mod spec;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::run::{Interrupt, RunArgs};
use crate::workload::Workload;
pub use spec::{Column, Row, Spec};

/// The built-in default spec (`harness/matrix/default.toml`).
pub const DEFAULT_SPEC: &str = include_str!("../../matrix/default.toml");

/// One cell × seed: a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The row's name.
    pub row: String,
    /// The fault column.
    pub fault: Column,
    /// The workload.
    pub workload: Workload,
    /// The seed.
    pub seed: u64,
}

impl Cell {
    /// The run id, also its directory under `<out>/runs/`.
    pub fn id(&self) -> String {
        format!(
            "{}--{}--{}--s{}",
            self.row,
            self.fault.name(),
            self.workload,
            self.seed
        )
    }
}

/// How to run a matrix.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where `runs/` and the outputs go.
    pub out: PathBuf,
    /// Seeds per cell (1..=seeds).
    pub seeds: u64,
    /// Overrides the spec's time limit.
    pub time_limit: Option<f64>,
    /// Only cells whose id contains one of these.
    pub filter: Vec<String>,
    /// Every possible fault for every row, not only the row's own.
    pub full: bool,
    /// Re-run cells already done.
    pub rerun: bool,
    /// The `mimeo` binary.
    pub mimeo_bin: Option<PathBuf>,
}

/// The cells of `spec`, in table order (row, fault, workload, seed).
pub fn cells(spec: &Spec, options: &Options) -> Vec<Cell> {
    let mut cells = Vec::new();
    for row in &spec.rows {
        let columns = if options.full {
            row.possible_columns()
        } else {
            row.faults.clone()
        };
        for &fault in &columns {
            for &workload in &row.workloads {
                for seed in 1..=options.seeds {
                    let cell = Cell {
                        row: row.name.clone(),
                        fault,
                        workload,
                        seed,
                    };
                    let id = cell.id();
                    if options.filter.is_empty() || options.filter.iter().any(|f| id.contains(f)) {
                        cells.push(cell);
                    }
                }
            }
        }
    }
    cells
}

/// What one cell × seed gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Which cell.
    pub cell: Cell,
    /// Its run directory, relative to the matrix directory.
    pub run_dir: String,
    /// Each checker's verdict (`valid`, `invalid`, `unknown`).
    pub verdicts: std::collections::BTreeMap<String, String>,
    /// The claims made here, each with whether it held.
    pub claims: Vec<Claim>,
    /// The run could not be carried out: why.
    pub error: Option<String>,
    /// The measurements (see the module docs); `null` where not measured.
    pub figures: Value,
}

/// A claim and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The checker.
    pub checker: String,
    /// Its verdict in this run (`missing` if it did not run).
    pub verdict: String,
}

impl Claim {
    /// True when the checker said invalid.
    pub fn broken(&self) -> bool {
        self.verdict == "invalid"
    }
}

impl Outcome {
    /// True when a claim was broken.
    pub fn broken(&self) -> bool {
        self.claims.iter().any(Claim::broken)
    }

    /// Reads a run's `results.json` into an outcome.
    pub fn from_results(cell: &Cell, row: &Row, run_dir: String, results: &Value) -> Outcome {
        let mut verdicts = std::collections::BTreeMap::new();
        let empty = Vec::new();
        let checkers = results["checkers"].as_array().unwrap_or(&empty);
        for c in checkers {
            if let (Some(name), Some(verdict)) = (c["checker"].as_str(), c["verdict"].as_str()) {
                verdicts.insert(name.to_string(), verdict.to_string());
            }
        }
        let measured = spec::checkers_of(cell.workload);
        let claims = row
            .claims_under(cell.fault)
            .into_iter()
            .filter(|c| measured.contains(c))
            .map(|c| Claim {
                checker: c.to_string(),
                verdict: verdicts.get(c).cloned().unwrap_or_else(|| "missing".into()),
            })
            .collect();
        Outcome {
            cell: cell.clone(),
            run_dir,
            verdicts,
            claims,
            error: None,
            figures: figures(checkers, results),
        }
    }
}

/// The figures of a run from its checkers' details.
fn figures(checkers: &[Value], results: &Value) -> Value {
    let find = |name: &str| {
        checkers
            .iter()
            .find(|c| c["checker"] == name)
            .map(|c| &c["details"])
    };
    let mut f = serde_json::Map::new();
    if let Some(set) = find("set") {
        let lost = set["counts"]["lost"].as_u64();
        f.insert("lost_writes".into(), json!(lost));
        if let (Some(lost), Some(acked)) = (lost, set["acknowledged"].as_u64().filter(|a| *a > 0)) {
            f.insert("lost_fraction".into(), json!(lost as f64 / acked as f64));
        }
    }
    if let Some(siblings) = find("siblings") {
        // Lost registers: acknowledged writes no surviving write saw.
        let lost = siblings["lost"].as_u64();
        f.insert("lost_writes".into(), json!(lost));
        if let (Some(lost), Some(acked)) =
            (lost, siblings["acknowledged"].as_u64().filter(|a| *a > 0))
        {
            f.insert("lost_fraction".into(), json!(lost as f64 / acked as f64));
        }
    }
    if let Some(orset) = find("orset") {
        // Lost adds: acknowledged adds no remove could have seen.
        let lost = orset["lost"].as_u64();
        f.insert("lost_writes".into(), json!(lost));
        if let (Some(lost), Some(acked)) =
            (lost, orset["acknowledged_adds"].as_u64().filter(|a| *a > 0))
        {
            f.insert("lost_fraction".into(), json!(lost as f64 / acked as f64));
        }
    }
    if let Some(s) = find("staleness") {
        let o = &s["overall"];
        f.insert("stale_fraction".into(), o["stale_fraction"].clone());
        f.insert(
            "stale_versions_max".into(),
            o["versions_behind"]["max"].clone(),
        );
        f.insert("stale_ms_max".into(), o["ms_behind"]["max"].clone());
    }
    if let Some(p) = find("perf") {
        let a = &p["availability"];
        f.insert(
            "ok_fraction_during_faults".into(),
            a["during_faults"]["served_fraction"].clone(),
        );
        f.insert(
            "longest_write_gap_ms".into(),
            a["longest_update_gap"]["ms"].clone(),
        );
        for (side, key) in [("outside", "outside_faults"), ("during", "during_faults")] {
            f.insert(
                format!("p50_ms_{side}"),
                a[key]["latency_ms"]["p50"].clone(),
            );
            f.insert(
                format!("p99_ms_{side}"),
                a[key]["latency_ms"]["p99"].clone(),
            );
            f.insert(format!("ok_per_s_{side}"), a[key]["served_per_s"].clone());
        }
    }
    if let Some(wait) = results["convergence"].as_object() {
        f.insert("convergence".into(), Value::Object(wait.clone()));
    }
    Value::Object(f)
}

/// Why a matrix could not be run.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// A file of the matrix directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Ctrl-C.
    #[error("interrupted by Ctrl-C; run the same command again to resume")]
    Interrupted,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MatrixError + '_ {
    move |source| MatrixError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The run arguments of a cell: the row's settings over the spec's
/// defaults, as `mimeo-harness run` would take them on its command line
/// (so its defaults and validation apply).
pub fn run_args(spec: &Spec, row: &Row, cell: &Cell, options: &Options) -> Result<RunArgs, String> {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: RunArgs,
    }
    let d = &spec.defaults;
    let nodes = if row.replicated() {
        row.nodes.unwrap_or(d.nodes)
    } else {
        1
    };
    let time_limit = options.time_limit.unwrap_or(d.time_limit);
    let mut argv: Vec<String> = vec!["run".into()];
    let mut flag = |name: &str, value: String| {
        argv.push(format!("--{name}"));
        argv.push(value);
    };
    flag("mode", row.mode.clone());
    flag("workload", cell.workload.to_string());
    flag("nodes", nodes.to_string());
    flag("time-limit", time_limit.to_string());
    flag("concurrency", d.concurrency.to_string());
    flag("nemesis-interval", d.nemesis_interval.to_string());
    flag("op-timeout", d.op_timeout.to_string());
    flag("check-budget", d.check_budget.to_string());
    flag("seed", cell.seed.to_string());
    flag(
        "fsync",
        row.fsync.clone().unwrap_or_else(|| "always".into()),
    );
    flag("store", options.out.join("runs").display().to_string());
    flag("run-id", cell.id());
    if let Some(fault) = cell.fault.0 {
        flag("nemesis", fault.name().into());
    }
    for (name, value) in [
        ("acks", &row.acks),
        ("reads", &row.reads),
        ("conflicts", &row.conflicts),
    ] {
        if let Some(v) = value {
            flag(name, v.clone());
        }
    }
    for (name, value) in [
        ("n", row.n),
        ("w", row.w),
        ("r", row.r),
        ("pw", row.pw),
        ("pr", row.pr),
    ] {
        if let Some(v) = value {
            flag(name, v.to_string());
        }
    }

    for line in &row.node_config {
        flag("node-config", line.clone());
    }
    if let Some(bin) = &options.mimeo_bin {
        flag("mimeo-bin", bin.display().to_string());
    }
    if row.sloppy {
        argv.push("--sloppy".into());
    }
    let args = Wrap::try_parse_from(&argv)
        .map_err(|e| format!("{}: {}", cell.id(), e.to_string().trim()))?
        .args;
    args.validate()
        .map_err(|e| format!("{}: {e:#}", cell.id()))?;
    Ok(args)
}

/// Runs (or reads back) every cell, printing a progress line per cell, and
/// writes `matrix.json`, `matrix.md` and `matrix.html` into `options.out`
/// after every cell (so an interrupted matrix still has its table).
pub async fn run(
    spec: &Spec,
    options: &Options,
    interrupt: &Interrupt,
) -> Result<Vec<Outcome>, MatrixError> {
    let runs = options.out.join("runs");
    std::fs::create_dir_all(&runs).map_err(io(&runs))?;
    let cells = cells(spec, options);
    let started = Instant::now();
    let mut outcomes = Vec::with_capacity(cells.len());
    let mut ran = 0u32;
    for (i, cell) in cells.iter().enumerate() {
        if interrupt.is_set() {
            return Err(MatrixError::Interrupted);
        }
        let row = spec
            .rows
            .iter()
            .find(|r| r.name == cell.row)
            .expect("cells come from the spec's rows");
        let id = cell.id();
        let dir = runs.join(&id);
        let results_path = dir.join("results.json");
        let run_dir = format!("runs/{id}");
        let done = !options.rerun && results_path.is_file();
        let elapsed = started.elapsed();
        let eta = if ran == 0 {
            String::from("?")
        } else {
            let remaining = cells.len() - i;
            format!(
                "{:.0} s",
                elapsed.as_secs_f64() / f64::from(ran) * remaining as f64
            )
        };
        eprintln!(
            "matrix: cell {} of {}: {id}{} (elapsed {:.0} s, remaining ~{eta})",
            i + 1,
            cells.len(),
            if done {
                " (done before: read back)"
            } else {
                ""
            },
            elapsed.as_secs_f64()
        );
        if !done {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
            let error = match run_args(spec, row, cell, options) {
                Ok(args) => crate::run::run(args, interrupt.clone())
                    .await
                    .err()
                    .map(|e| format!("{e:#}")),
                Err(e) => Some(e),
            };
            ran += 1;
            if interrupt.is_set() {
                // A cell cut short says nothing: leave no results for it.
                let _ = std::fs::remove_file(&results_path);
                return Err(MatrixError::Interrupted);
            }
            if let Some(e) = &error {
                eprintln!("matrix: {id}: {e}");
            }
            outcomes.push(read_outcome(cell, row, run_dir, &results_path, error));
        } else {
            outcomes.push(read_outcome(cell, row, run_dir, &results_path, None));
        }
        let last = outcomes.last().expect("just pushed");
        eprintln!("matrix: {id}: {}", render::cell_line(last));
        render::write_all(&options.out, spec, &outcomes)?;
    }
    render::write_all(&options.out, spec, &outcomes)?;
    Ok(outcomes)
}

/// The outcome of a cell from its `results.json`, or an error cell.
fn read_outcome(
    cell: &Cell,
    row: &Row,
    run_dir: String,
    results_path: &Path,
    error: Option<String>,
) -> Outcome {
    let results = std::fs::read(results_path)
        .map_err(|e| format!("{}: {e}", results_path.display()))
        .and_then(|b| {
            serde_json::from_slice::<Value>(&b)
                .map_err(|e| format!("{}: {e}", results_path.display()))
        });
    match results {
        Ok(results) => {
            let mut outcome = Outcome::from_results(cell, row, run_dir, &results);
            outcome.error = error;
            outcome
        }
        Err(read) => Outcome {
            cell: cell.clone(),
            run_dir,
            verdicts: Default::default(),
            claims: Vec::new(),
            error: Some(error.unwrap_or(read)),
            figures: Value::Null,
        },
    }
}

/// The expected wall time of `cells`, for the start-up line: the time
/// limit plus ~10 s of start, heal, final reads and checking each.
pub fn estimate(spec: &Spec, options: &Options, cells: usize) -> Duration {
    let per = options.time_limit.unwrap_or(spec.defaults.time_limit) + 10.0;
    Duration::from_secs_f64(per * cells as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::Fault;

    fn options() -> Options {
        Options {
            out: PathBuf::from("/tmp/m"),
            seeds: 2,
            time_limit: Some(5.0),
            filter: Vec::new(),
            full: false,
            rerun: false,
            mimeo_bin: None,
        }
    }

    #[test]
    fn the_default_spec_parses_and_every_cell_makes_valid_run_arguments() {
        let spec = Spec::parse(DEFAULT_SPEC, "default.toml").unwrap();
        let options = options();
        let cells = cells(&spec, &options);
        assert!(cells.len() > 20);
        for cell in &cells {
            let row = spec.rows.iter().find(|r| r.name == cell.row).unwrap();
            let args = run_args(&spec, row, cell, &options).unwrap();
            assert_eq!(args.seed, Some(cell.seed));
            assert_eq!(args.run_id.as_deref(), Some(cell.id().as_str()));
            assert_eq!(args.nemesis, cell.fault.0.into_iter().collect::<Vec<_>>());
        }
        let full = cells_full(&spec);
        assert!(full > cells.len(), "--full adds faults");
    }

    fn cells_full(spec: &Spec) -> usize {
        let options = Options {
            full: true,
            ..options()
        };
        cells(spec, &options).len()
    }

    #[test]
    fn a_filter_keeps_matching_cells_and_ids_name_everything() {
        let spec = Spec::parse(
            r#"
            [[row]]
            name = "q"
            mode = "leader-follower"
            acks = "quorum"
            workloads = ["register", "set"]
            faults = ["none", "kill"]
            claims = ["linearizable", "set"]
            "#,
            "t",
        )
        .unwrap();
        let options = Options {
            filter: vec!["kill--set".into()],
            ..options()
        };
        let ids: Vec<String> = cells(&spec, &options).iter().map(Cell::id).collect();
        assert_eq!(ids, ["q--kill--set--s1", "q--kill--set--s2"]);
    }

    #[test]
    fn an_invalid_claimed_checker_is_broken_and_an_unclaimed_one_is_not() {
        let spec = Spec::parse(
            r#"
            [[row]]
            name = "a"
            mode = "leader-follower"
            acks = "async"
            workloads = ["set"]
            faults = ["none", "isolate-leader"]
            claims = ["set"]
            waive = { "isolate-leader" = ["set"] }
            "#,
            "t",
        )
        .unwrap();
        let row = &spec.rows[0];
        let results = json!({
            "checkers": [
                {"checker": "set", "verdict": "invalid",
                 "details": {"acknowledged": 100, "counts": {"ok": 90, "lost": 10}}},
                {"checker": "perf", "verdict": "valid", "details": {}},
            ]
        });
        let cell = |fault| Cell {
            row: "a".into(),
            fault: Column(fault),
            workload: Workload::Set,
            seed: 1,
        };
        let claimed = Outcome::from_results(&cell(None), row, "r".into(), &results);
        assert!(claimed.broken());
        let lww = json!({"checkers": [{"checker": "siblings", "verdict": "invalid",
            "details": {"acknowledged": 200, "lost": 50}}]});
        let lww = Outcome::from_results(&cell(None), row, "r".into(), &lww);
        assert_eq!(lww.figures["lost_fraction"], 0.25);
        assert_eq!(claimed.figures["lost_writes"], 10);
        assert_eq!(claimed.figures["lost_fraction"], 0.1);
        let waived =
            Outcome::from_results(&cell(Some(Fault::IsolateLeader)), row, "r".into(), &results);
        assert!(!waived.broken());
        assert!(waived.claims.is_empty());
    }
}
