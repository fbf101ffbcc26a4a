//! Checking many histories in one call (`mimeo-harness check PATH...`):
//! which files the paths hold, the options each history needs, and a pool
//! of threads that checks them.
//!
//! # Which files
//!
//! A file named on the command line is a history. A directory is walked
//! recursively, in name order:
//!
//! - a *run directory* (one holding `history.jsonl.zst` or
//!   `history.jsonl`) gives that history and nothing below it (its
//!   `nodes/*.log` are node logs, not Jepsen logs);
//! - elsewhere, `*.jsonl`, `*.jsonl.zst` and `*.edn` files are histories,
//!   and so are `*.log` and `*.txt` files that hold a `jepsen.util`
//!   operation line;
//! - `*.report` directories (reports `check` wrote) and hidden entries are
//!   passed over.
//!
//! # Which options
//!
//! Each history is checked with the flags given on the command line; where
//! a flag is not given, with what a `check.toml` in the history's
//! directory says of it; else, in a run directory, with the workload its
//! `config.json` names; else the workload is recognised from the
//! operations. A `check.toml`:
//!
//! ```toml
//! # every history of this directory
//! workload = "session"
//!
//! # one file's own (over the directory's)
//! [files."valid-cas-register.edn"]
//! initial = 0
//! ```
//!
//! # Verdicts
//!
//! A history that cannot be read (or whose `check.toml` cannot) is
//! reported and counted as unreadable; the others are checked all the
//! same. [`Tally::exit_code`] is the worst outcome: invalid (1) over
//! unreadable (65) over unknown (2) over valid (0).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::check::quorum::Quorums;
use crate::check::{CheckResult, Verdict};
use crate::history::History;
use crate::report::{self, CheckOptions};
use crate::workload::Workload;

/// The name of the file that gives a directory's histories their options.
pub const MANIFEST: &str = "check.toml";

/// How one history is checked; `None` fields fall back (see the module
/// docs).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Which checkers to run.
    pub workload: Option<Workload>,
    /// The register's initial value (absent when not given).
    pub initial: Option<Value>,
    /// A leaderless run's quorums (from its `config.json`; not a
    /// `check.toml` option).
    #[serde(skip)]
    pub quorums: Option<Quorums>,
}

impl Options {
    /// These options, with `fallback`'s where these give none.
    pub fn or(self, fallback: Options) -> Options {
        Options {
            workload: self.workload.or(fallback.workload),
            initial: self.initial.or(fallback.initial),
            quorums: self.quorums.or(fallback.quorums),
        }
    }
}

/// The quorums a run's `config.json` names, if its mode is leaderless (as
/// the run resolved them: each knob given, else the node's default).
fn quorums_of(config: &Value) -> Option<Quorums> {
    if config["mode"] != "leaderless" {
        return None;
    }
    let knob = |k: &str| config[k].as_u64().map(|v| v as usize);
    let nodes = knob("nodes").unwrap_or(1);
    let args = crate::run::QuorumArgs {
        n: knob("n"),
        w: knob("w"),
        r: knob("r"),
        pw: knob("pw"),
        pr: knob("pr"),
        sloppy: config["sloppy"].as_bool().unwrap_or(false),
    };
    Some(args.resolve(nodes))
}

/// A directory's `check.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    workload: Option<Workload>,
    initial: Option<Value>,
    #[serde(default)]
    files: BTreeMap<String, Options>,
}

/// One history to check, and the argument it was found under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The history file.
    pub file: PathBuf,
    /// The command-line path it came from (the file itself, or a directory
    /// above it).
    pub root: PathBuf,
}

impl Target {
    /// The file's path below its root, for naming a report; a run
    /// directory's history is named by its directory.
    pub fn relative(&self) -> PathBuf {
        let named = if is_run_history(&self.file) {
            self.file.parent().unwrap_or(&self.file)
        } else {
            &self.file
        };
        named
            .strip_prefix(&self.root)
            .ok()
            .filter(|rel| !rel.as_os_str().is_empty())
            .or_else(|| named.file_name().map(Path::new))
            .unwrap_or(named)
            .to_path_buf()
    }
}

/// True for the history file of a run directory.
fn is_run_history(file: &Path) -> bool {
    file.file_name()
        .is_some_and(|n| n == crate::run::HISTORY_FILE || n == "history.jsonl")
}

/// The histories `paths` hold, in order (each directory's in name order),
/// or, for a path that cannot be read, why not.
pub fn collect(paths: &[PathBuf]) -> Vec<Result<Target, (PathBuf, String)>> {
    let mut out = Vec::new();
    for root in paths {
        if root.is_dir() {
            walk(root, root, &mut out);
        } else if root.exists() {
            out.push(Ok(Target {
                file: root.clone(),
                root: root.clone(),
            }));
        } else {
            out.push(Err((root.clone(), "no such file or directory".into())));
        }
    }
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Result<Target, (PathBuf, String)>>) {
    let history = crate::run::history_file(dir);
    if history.exists() {
        out.push(Ok(Target {
            file: history,
            root: root.to_path_buf(),
        }));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            out.push(Err((dir.to_path_buf(), e.to_string())));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') || name.ends_with(".report") {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, out);
        } else if is_history_name(&name) || (is_text_log_name(&name) && holds_log_lines(&path)) {
            out.push(Ok(Target {
                file: path,
                root: root.to_path_buf(),
            }));
        }
    }
}

fn is_history_name(name: &str) -> bool {
    [".jsonl", ".jsonl.zst", ".edn"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

fn is_text_log_name(name: &str) -> bool {
    name.ends_with(".log") || name.ends_with(".txt")
}

/// How much of a `.log` or `.txt` file is read to tell whether it is a
/// Jepsen log (a node's own log can be gigabytes).
const SNIFF_BYTES: u64 = 1 << 20;

/// True when a text file holds a `jepsen.util` operation line in its first
/// [`SNIFF_BYTES`].
fn holds_log_lines(path: &Path) -> bool {
    use std::io::Read as _;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(SNIFF_BYTES).read_to_end(&mut head))
        .is_ok_and(|_| {
            crate::jepsen::detect(&String::from_utf8_lossy(&head))
                == Some(crate::jepsen::Format::Log)
        })
}

/// The options a history's surroundings give it: its directory's
/// `check.toml` (the file's own entry over the directory's), then a run
/// directory's `config.json`.
pub fn options_for(file: &Path) -> Result<Options, String> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let manifest_path = dir.join(MANIFEST);
    let mut options = Options::default();
    if manifest_path.is_file() {
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
        let mut manifest: Manifest =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", manifest_path.display()))?;
        let own = manifest.files.remove(&name).unwrap_or_default();
        options = own.or(Options {
            workload: manifest.workload,
            initial: manifest.initial,
            quorums: None,
        });
    }
    if is_run_history(file) {
        let config = dir.join("config.json");
        if let Ok(text) = std::fs::read_to_string(&config) {
            let config = serde_json::from_str::<Value>(&text).unwrap_or_default();
            let workload = serde_json::from_value::<Workload>(config["workload"].clone()).ok();
            options = options.or(Options {
                workload,
                initial: None,
                quorums: quorums_of(&config),
            });
        }
    }
    Ok(options)
}

/// A history that was read and checked.
#[derive(Debug)]
pub struct Checked {
    /// The history.
    pub history: History,
    /// The workload it was checked as.
    pub workload: Workload,
    /// Each checker's result.
    pub results: Vec<CheckResult>,
    /// Their verdict together.
    pub verdict: Verdict,
}

/// The outcome of one target.
#[derive(Debug)]
pub struct Outcome {
    /// What was checked.
    pub target: Target,
    /// The check, or why the history (or its options) could not be read.
    pub checked: Result<Checked, String>,
    /// How long reading and checking took.
    pub elapsed: Duration,
}

/// Reads and checks one history: `cli` over what [`options_for`] finds.
pub fn check_one(target: Target, cli: &Options, budget: Duration, threads: usize) -> Outcome {
    let started = Instant::now();
    let checked = options_for(&target.file).and_then(|found| {
        let options = cli.clone().or(found);
        let history = crate::jepsen::load(&target.file).map_err(|e| e.to_string())?;
        let workload = options
            .workload
            .unwrap_or_else(|| report::detect_workload(&history));
        let results = report::check(
            &history,
            workload,
            &CheckOptions {
                initial: options.initial,
                budget,
                threads,
                quorums: options.quorums,
            },
        );
        let verdict = Verdict::combine(results.iter().map(|r| r.verdict));
        Ok(Checked {
            history,
            workload,
            results,
            verdict,
        })
    });
    Outcome {
        target,
        checked,
        elapsed: started.elapsed(),
    }
}

/// Checks every target on `jobs` threads (each history's search on one
/// thread when there are several histories), and hands each outcome to
/// `done` in the order of `targets`, as soon as it and every one before it
/// are checked.
pub fn check_all(
    targets: Vec<Target>,
    cli: &Options,
    budget: Duration,
    jobs: usize,
    done: &(dyn Fn(usize, Outcome) + Sync),
) {
    let jobs = jobs.clamp(1, targets.len().max(1));
    let threads = if targets.len() == 1 { 0 } else { 1 };
    let next = AtomicUsize::new(0);
    let count = targets.len();
    let slots: Vec<Mutex<Option<Target>>> =
        targets.into_iter().map(|t| Mutex::new(Some(t))).collect();
    // Finished outcomes wait here until those before them are handed on.
    let pending: Mutex<(usize, BTreeMap<usize, Outcome>)> = Mutex::new((0, BTreeMap::new()));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let target = slots[i]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take()
                    .expect("each slot is taken once");
                let outcome = check_one(target, cli, budget, threads);
                let mut pending = pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                pending.1.insert(i, outcome);
                // Hand on, in order, every outcome that is ready.
                loop {
                    let first = pending.0;
                    let Some(outcome) = pending.1.remove(&first) else {
                        break;
                    };
                    pending.0 += 1;
                    done(first, outcome);
                }
            });
        }
    });
}

/// Counts of outcomes, by verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Histories found valid.
    pub valid: usize,
    /// Histories found invalid.
    pub invalid: usize,
    /// Histories no checker could decide.
    pub unknown: usize,
    /// Histories that could not be read.
    pub unreadable: usize,
}

impl Tally {
    /// Counts one outcome: a verdict, or `None` for an unreadable history.
    pub fn add(&mut self, verdict: Option<Verdict>) {
        match verdict {
            Some(Verdict::Valid) => self.valid += 1,
            Some(Verdict::Invalid) => self.invalid += 1,
            Some(Verdict::Unknown) => self.unknown += 1,
            None => self.unreadable += 1,
        }
    }

    /// Histories counted.
    pub fn total(&self) -> usize {
        self.valid + self.invalid + self.unknown + self.unreadable
    }

    /// The worst outcome's exit code: 1 if any history is invalid, else 65
    /// if any could not be read, else 2 if any is unknown, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.invalid > 0 {
            1
        } else if self.unreadable > 0 {
            65
        } else if self.unknown > 0 {
            2
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn directories_give_their_histories_in_name_order_and_run_directories_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(&d.join("b/valid-x.jsonl"), "");
        write(&d.join("a/z.edn"), "");
        write(
            &d.join("a/jepsen.log"),
            "INFO jepsen.util - 0\t:invoke\t:read\tnil\n",
        );
        write(&d.join("a/server.log"), "started\nlistening on 7001\n");
        write(&d.join("a/notes.md"), "");
        write(&d.join("a/x.jsonl.report/results.json"), "{}");
        write(&d.join("run-1/history.jsonl.zst"), "");
        write(&d.join("run-1/nodes/n1.log"), "0\t:invoke\t:read\tnil\n");
        write(&d.join("run-1/other.jsonl"), "");
        write(&d.join(".hidden/h.jsonl"), "");
        let found: Vec<PathBuf> = collect(&[d.to_path_buf(), d.join("missing.edn")])
            .into_iter()
            .map(|t| match t {
                Ok(t) => t.file.strip_prefix(d).unwrap().to_path_buf(),
                Err((p, e)) => {
                    PathBuf::from(format!("{}: {e}", p.file_name().unwrap().to_string_lossy()))
                }
            })
            .collect();
        let expected: Vec<PathBuf> = [
            "a/jepsen.log",
            "a/z.edn",
            "b/valid-x.jsonl",
            "run-1/history.jsonl.zst",
            "missing.edn: no such file or directory",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn a_files_own_options_win_over_its_directorys_and_a_run_names_its_workload() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            &d.join("check.toml"),
            "workload = \"session\"\ninitial = 1\n[files.\"a.edn\"]\ninitial = 0\n",
        );
        assert_eq!(
            options_for(&d.join("a.edn")).unwrap(),
            Options {
                workload: Some(Workload::Session),
                initial: Some(Value::from(0)),
                quorums: None,
            }
        );
        assert_eq!(
            options_for(&d.join("b.edn")).unwrap().initial,
            Some(Value::from(1))
        );
        write(&d.join("run/config.json"), r#"{"workload":"set"}"#);
        assert_eq!(
            options_for(&d.join("run/history.jsonl.zst")).unwrap(),
            Options {
                workload: Some(Workload::Set),
                initial: None,
                quorums: None,
            }
        );
        // A leaderless run's quorums: given knobs, the rest the node's
        // defaults.
        write(
            &d.join("ll/config.json"),
            r#"{"workload":"register","mode":"leaderless","nodes":5,"n":null,"w":1,"r":null,"sloppy":true}"#,
        );
        assert_eq!(
            options_for(&d.join("ll/history.jsonl.zst"))
                .unwrap()
                .quorums,
            Some(Quorums {
                n: 3,
                w: 1,
                r: 2,
                sloppy: true
            })
        );
        write(&d.join("bad/check.toml"), "workloads = \"set\"\n");
        let err = options_for(&d.join("bad/a.jsonl")).unwrap_err();
        assert!(
            err.contains("check.toml") && err.contains("workloads"),
            "{err}"
        );
    }

    #[test]
    fn the_worst_outcome_decides_the_exit_code() {
        let tally = |outcomes: &[Option<Verdict>]| {
            let mut t = Tally::default();
            outcomes.iter().for_each(|v| t.add(*v));
            t.exit_code()
        };
        use Verdict::*;
        assert_eq!(tally(&[]), 0);
        assert_eq!(tally(&[Some(Valid), Some(Valid)]), 0);
        assert_eq!(tally(&[Some(Valid), Some(Unknown)]), 2);
        assert_eq!(tally(&[Some(Unknown), None]), 65);
        assert_eq!(tally(&[None, Some(Invalid), Some(Valid)]), 1);
    }
}
