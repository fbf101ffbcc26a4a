//! The operation history: what every client and the nemesis did, in the
//! order the harness saw it, as Jepsen models it.
//!
//! On disk a history is `history.jsonl`, one [`Op`] per line:
//!
//! ```text
//! {"index":12,"time_ns":5310021,"process":3,"type":"invoke","f":"write","key":"k7","value":42}
//! {"index":13,"time_ns":5412877,"process":3,"type":"ok","f":"write","key":"k7","value":42,"node":"n2"}
//! {"index":14,"time_ns":5500000,"process":"nemesis","type":"info","f":"partition","value":[["n1"],["n2","n3"]]}
//! ```
//!
//! Each client operation is an `invoke` followed, on the same process, by
//! exactly one completion:
//!
//! - `ok`: it took effect (a read's `value` is what it read; `null` means
//!   the key was absent);
//! - `fail`: it certainly did not take effect. One `fail` carries
//!   information: a `cas` whose comparison failed is recorded as `fail`
//!   with `"error":"cas-mismatch"`, which tells the checker that the value
//!   differed from the expected one at some instant between invoke and
//!   completion;
//! - `info`: the outcome is unknown (a timeout, a dropped connection). It
//!   may take effect at any later time, or never, and the process never
//!   issues another operation: the harness gives the worker a fresh
//!   process id (Jepsen's rule, which keeps the checkers sound).
//!
//! The operation's `f` and `value` by workload:
//!
//! | workload | `f` | `value` on invoke | `value` on `ok` |
//! | --- | --- | --- | --- |
//! | register | `read` | `null` | the value read, `null` if absent |
//! | register | `write` | the value | the value |
//! | register | `cas` | `[expected, new]` | `[expected, new]` |
//! | set | `add` | the element | the element |
//! | set | `read` (final reads) | `null` | every element read, as an array |
//!
//! Nemesis operations use the process `"nemesis"` and type `info`; their
//! `f` names the fault (`partition`, `kill`, `start`, `pause`, `resume`,
//! `heal`, `clock`, ...) and `value` says what it did and to whom.

use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// The `f` of a register or set read.
pub const F_READ: &str = "read";
/// The `f` of a register write.
pub const F_WRITE: &str = "write";
/// The `f` of a register compare-and-set.
pub const F_CAS: &str = "cas";
/// The `f` of a set add.
pub const F_ADD: &str = "add";
/// The `error` of a `fail` cas whose comparison did not match.
pub const CAS_MISMATCH: &str = "cas-mismatch";

/// Who performed an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Process {
    /// A client worker's logical process (a worker takes a fresh one after
    /// an `info`).
    Client(u64),
    /// The fault injector.
    Nemesis,
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Process::Client(p) => write!(f, "{p}"),
            Process::Nemesis => f.write_str("nemesis"),
        }
    }
}

impl Serialize for Process {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(p) => serializer.serialize_u64(*p),
            Process::Nemesis => serializer.serialize_str("nemesis"),
        }
    }
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProcessVisitor;
        impl Visitor<'_> for ProcessVisitor {
            type Value = Process;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or \"nemesis\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Process, E> {
                Ok(Process::Client(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Process, E> {
                u64::try_from(v)
                    .map(Process::Client)
                    .map_err(|_| E::custom(format!("process id {v} is negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Process, E> {
                if v == "nemesis" {
                    Ok(Process::Nemesis)
                } else {
                    Err(E::custom(format!(
                        "unknown process {v:?} (expected an integer or \"nemesis\")"
                    )))
                }
            }
        }
        deserializer.deserialize_any(ProcessVisitor)
    }
}

/// What an entry of the history records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The operation started.
    Invoke,
    /// It took effect.
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Its outcome is unknown (or, for the nemesis, it simply happened).
    Info,
}

/// One entry of a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history, from 0, without gaps.
    pub index: u64,
    /// Nanoseconds since the run started.
    pub time_ns: u64,
    /// Who performed it.
    pub process: Process,
    /// Invocation or completion, and which.
    #[serde(rename = "type")]
    pub kind: OpType,
    /// The function: `read`, `write`, `cas`, `add`, or a nemesis fault.
    pub f: String,
    /// The key, for keyed workloads (`None`: a single-register history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The argument or result (see the module docs).
    #[serde(default)]
    pub value: Value,
    /// The node that answered, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Why the operation failed or is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    /// True for an operation of the fault injector.
    pub fn is_nemesis(&self) -> bool {
        self.process == Process::Nemesis
    }

    /// True for a `fail` cas whose comparison did not match: no effect, but
    /// evidence that the value differed from the expected one.
    pub fn is_cas_mismatch(&self) -> bool {
        self.kind == OpType::Fail && self.f == F_CAS && self.error.as_deref() == Some(CAS_MISMATCH)
    }
}

/// Where a history came from; it decides how a `null` read is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Recorded by this harness: a `null` read means the key was absent.
    #[default]
    Mimeo,
    /// Imported from Jepsen (EDN or log lines): as in Knossos, a read that
    /// returned `nil` matches any value.
    Jepsen,
}

/// A whole history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// The entries, in history order.
    pub ops: Vec<Op>,
    /// Where it came from.
    pub source: Source,
}

/// Why a history could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A line or entry is not a valid history entry.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file (or `-` for a string).
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A value of a file read with positions (EDN) is not a valid history
    /// entry.
    #[error("{path}:{line}:{column}: {message}")]
    ParseAt {
        /// The file (or `-` for a string).
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// The 1-based column, in characters.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The entries parse but do not form a well-formed history.
    #[error("{path}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the history index.
        message: String,
    },
}

/// A client operation with its invocation and completion paired up.
#[derive(Clone, Debug, PartialEq)]
pub struct Completed<'a> {
    /// The invocation.
    pub invoke: &'a Op,
    /// The completion (`None`: the history ended first; treat as `info`).
    pub complete: Option<&'a Op>,
}

impl Completed<'_> {
    /// The completion type, `info` when the history ended first.
    pub fn outcome(&self) -> OpType {
        self.complete.map_or(OpType::Info, |c| c.kind)
    }
}

impl History {
    /// A history recorded by this harness.
    pub fn new(ops: Vec<Op>) -> History {
        History {
            ops,
            source: Source::Mimeo,
        }
    }

    /// Reads `history.jsonl`. Blank lines are skipped.
    pub fn read_jsonl(path: &Path) -> Result<History, HistoryError> {
        let file = std::fs::File::open(path).map_err(|source| HistoryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        History::parse_jsonl(io::BufReader::new(file), path)
    }

    /// Parses JSON lines from `reader`; `path` names the input in errors.
    pub fn parse_jsonl(reader: impl BufRead, path: &Path) -> Result<History, HistoryError> {
        let mut ops = Vec::new();
        for (n, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| HistoryError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let op: Op = serde_json::from_str(&line).map_err(|e| HistoryError::Parse {
                path: path.to_path_buf(),
                line: n + 1,
                message: e.to_string(),
            })?;
            ops.push(op);
        }
        let history = History::new(ops);
        history
            .validate()
            .map_err(|message| HistoryError::Malformed {
                path: path.to_path_buf(),
                message,
            })?;
        Ok(history)
    }

    /// Writes the history as JSON lines.
    pub fn write_jsonl(&self, mut out: impl Write) -> io::Result<()> {
        for op in &self.ops {
            serde_json::to_writer(&mut out, op)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Checks that the history is well formed: indices count up from 0,
    /// every client completion follows an invocation by the same process,
    /// and no process invokes twice without completing. Returns a message
    /// naming the offending index.
    pub fn validate(&self) -> Result<(), String> {
        let mut open: std::collections::HashMap<u64, &Op> = std::collections::HashMap::new();
        for (i, op) in self.ops.iter().enumerate() {
            if op.index != i as u64 {
                return Err(format!(
                    "entry {i} has index {} (indices must count up from 0)",
                    op.index
                ));
            }
            let Process::Client(p) = op.process else {
                continue;
            };
            match op.kind {
                OpType::Invoke => {
                    if let Some(prev) = open.insert(p, op) {
                        return Err(format!(
                            "index {}: process {p} invokes while its operation at index {} is still open",
                            op.index, prev.index
                        ));
                    }
                }
                _ => match open.remove(&p) {
                    Some(inv) if inv.f != op.f => {
                        return Err(format!(
                            "index {}: process {p} completes `{}` but invoked `{}` at index {}",
                            op.index, op.f, inv.f, inv.index
                        ))
                    }
                    Some(_) => {}
                    None => {
                        return Err(format!(
                            "index {}: process {p} completes an operation it never invoked",
                            op.index
                        ))
                    }
                },
            }
        }
        Ok(())
    }

    /// Pairs every client invocation with its completion, in invocation
    /// order. An invocation the history never completes has `complete:
    /// None`. Assumes a [validated](History::validate) history.
    pub fn pairs(&self) -> Vec<Completed<'_>> {
        let mut out: Vec<Completed<'_>> = Vec::new();
        let mut open: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
        for op in &self.ops {
            let Process::Client(p) = op.process else {
                continue;
            };
            if op.kind == OpType::Invoke {
                open.insert(p, out.len());
                out.push(Completed {
                    invoke: op,
                    complete: None,
                });
            } else if let Some(slot) = open.remove(&p) {
                out[slot].complete = Some(op);
            }
        }
        out
    }

    /// The nemesis entries.
    pub fn nemesis(&self) -> impl Iterator<Item = &Op> {
        self.ops.iter().filter(|op| op.is_nemesis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<History, HistoryError> {
        History::parse_jsonl(text.as_bytes(), Path::new("-"))
    }

    #[test]
    fn reads_the_design_example_and_writes_it_back() {
        let text = concat!(
            r#"{"index":0,"time_ns":5310021,"process":3,"type":"invoke","f":"write","key":"k7","value":42}"#,
            "\n",
            r#"{"index":1,"time_ns":5412877,"process":3,"type":"ok","f":"write","key":"k7","value":42,"node":"n2"}"#,
            "\n",
            r#"{"index":2,"time_ns":5500000,"process":"nemesis","type":"info","f":"partition","value":[["n1"],["n2","n3"]]}"#,
            "\n",
        );
        let history = parse(text).unwrap();
        assert_eq!(history.ops.len(), 3);
        assert_eq!(history.ops[0].process, Process::Client(3));
        assert_eq!(history.ops[1].node.as_deref(), Some("n2"));
        assert!(history.ops[2].is_nemesis());
        let pairs = history.pairs();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].outcome(), OpType::Ok);

        let mut out = Vec::new();
        history.write_jsonl(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), text);
    }

    #[test]
    fn refuses_malformed_histories_naming_the_index() {
        let twice = concat!(
            r#"{"index":0,"time_ns":1,"process":1,"type":"invoke","f":"read","value":null}"#,
            "\n",
            r#"{"index":1,"time_ns":2,"process":1,"type":"invoke","f":"read","value":null}"#,
        );
        let err = parse(twice).unwrap_err().to_string();
        assert!(err.contains("index 1: process 1 invokes"), "{err}");

        let orphan = r#"{"index":0,"time_ns":1,"process":1,"type":"ok","f":"read","value":3}"#;
        let err = parse(orphan).unwrap_err().to_string();
        assert!(err.contains("never invoked"), "{err}");

        let gap = r#"{"index":4,"time_ns":1,"process":1,"type":"invoke","f":"read","value":3}"#;
        assert!(parse(gap).unwrap_err().to_string().contains("count up"));

        let bad = r#"{"index":0,"time_ns":1,"process":-2,"type":"invoke","f":"read"}"#;
        let err = parse(bad).unwrap_err().to_string();
        assert!(err.contains("-:1:") && err.contains("negative"), "{err}");
    }

    #[test]
    fn an_unfinished_invocation_counts_as_info() {
        let text = r#"{"index":0,"time_ns":1,"process":1,"type":"invoke","f":"write","value":1}"#;
        let history = parse(text).unwrap();
        assert_eq!(history.pairs()[0].outcome(), OpType::Info);
    }
}
