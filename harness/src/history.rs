//! The operation history: what every client and the nemesis did, in the
//! order the harness saw it, as Jepsen models it.
//!
//! On disk a history is JSON lines, one [`Op`] per line; a run writes them
//! zstd-compressed as `history.jsonl.zst` (every reader here takes either):
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
//! | siblings | `read` | `null` | `{"siblings": [...], "context": "<hex>"}` (older histories: the siblings as an array; `[]`: absent) |
//! | siblings | `write` | `{"value": v, "observed": [...]}` | the same |
//! | siblings | `delete` | `{"observed": [...]}` | the same |
//! | counter | `incr` | the delta | the delta |
//! | counter | `read` | `null` | the counter's value |
//! | or-set | `sadd`, `srem` | the element | the element |
//! | or-set | `read` | `null` | the members, as an array |
//!
//! In the siblings workload `observed` lists the values of the read whose
//! context the write or delete passed: the values it supersedes
//! ([`check::siblings`](crate::check::siblings)).
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
    /// What the reader passed over because the file was cut short (`None`:
    /// it was whole).
    pub cut: Option<Cut>,
}

/// How a history file was cut short: a harness that crashed, was killed or
/// lost power while writing it leaves a prefix, which is still a history
/// (every operation it holds happened; the ones it lacks are unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cut {
    /// The compressed stream ends inside its frame: what was written after
    /// the last block the writer flushed is gone.
    pub stream_ended_early: bool,
    /// The last line stops mid-way and was ignored: its 1-based number and
    /// its length in bytes.
    pub torn_line: Option<(usize, usize)>,
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the history was cut short")?;
        if self.stream_ended_early {
            f.write_str("; its compressed stream ends before its frame does")?;
        }
        if let Some((line, bytes)) = self.torn_line {
            write!(
                f,
                "; the last line ({line}, {bytes} bytes) stops mid-way and was ignored"
            )?;
        }
        f.write_str(" (the run that wrote it did not finish)")
    }
}

/// The first four bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Reads a file, decompressing it if it is zstd (as the harness writes
/// `history.jsonl.zst`). A compressed stream that stops before the end of
/// its frame gives what could be decompressed, and `true`.
pub fn read_file(path: &Path) -> Result<(Vec<u8>, bool), HistoryError> {
    use io::Read as _;
    let io_error = |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io_error)?;
    if !bytes.starts_with(&ZSTD_MAGIC) {
        return Ok((bytes, false));
    }
    let mut decoder = zstd::stream::read::Decoder::new(&bytes[..]).map_err(io_error)?;
    let mut out = Vec::with_capacity(bytes.len() * 8);
    // `read_to_end` keeps what was read before an error: everything up to
    // the last complete block of a stream cut short.
    match decoder.read_to_end(&mut out) {
        Ok(_) => Ok((out, false)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof || !out.is_empty() => Ok((out, true)),
        Err(e) => Err(HistoryError::Parse {
            path: path.to_path_buf(),
            line: 1,
            message: format!("not a readable zstd stream: {e}"),
        }),
    }
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
            cut: None,
        }
    }

    /// Reads `history.jsonl` or `history.jsonl.zst` (zstd, recognised by
    /// its magic number). Blank lines are skipped; a file cut short is read
    /// as far as it goes (see [`History::parse_jsonl`]).
    pub fn read_jsonl(path: &Path) -> Result<History, HistoryError> {
        let (bytes, stream_ended_early) = read_file(path)?;
        History::from_file_bytes(&bytes, stream_ended_early, path)
    }

    /// Parses the JSON lines [`read_file`] returned, noting a stream that
    /// ended early in [`History::cut`].
    pub(crate) fn from_file_bytes(
        bytes: &[u8],
        stream_ended_early: bool,
        path: &Path,
    ) -> Result<History, HistoryError> {
        let mut history = History::parse_jsonl(bytes, path)?;
        if stream_ended_early {
            history
                .cut
                .get_or_insert_with(Cut::default)
                .stream_ended_early = true;
        }
        Ok(history)
    }

    /// Parses JSON lines from `reader`; `path` names the input in errors.
    ///
    /// A last line without its newline that does not parse is a write the
    /// recorder never finished: it is ignored and named in
    /// [`History::cut`]. A bad line anywhere else is an error.
    pub fn parse_jsonl(mut reader: impl BufRead, path: &Path) -> Result<History, HistoryError> {
        let mut ops = Vec::new();
        let mut cut = None;
        let mut line = Vec::new();
        for n in 1.. {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|source| HistoryError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            if read == 0 {
                break;
            }
            let whole = line.ends_with(b"\n");
            // A line that stops mid-way: the text or the JSON ends early.
            // A complete line that is wrong is an error wherever it is.
            let parsed = match std::str::from_utf8(&line) {
                Err(e) => Err((format!("not UTF-8 text: {e}"), e.error_len().is_none())),
                Ok(text) if text.trim().is_empty() => Ok(None),
                Ok(text) => serde_json::from_str::<Op>(text)
                    .map(Some)
                    .map_err(|e| (e.to_string(), e.is_eof())),
            };
            match parsed {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => {}
                Err((_, true)) if !whole => {
                    cut = Some(Cut {
                        stream_ended_early: false,
                        torn_line: Some((n, line.len())),
                    });
                }
                Err((message, _)) => {
                    return Err(HistoryError::Parse {
                        path: path.to_path_buf(),
                        line: n,
                        message,
                    })
                }
            }
        }
        let mut history = History::new(ops);
        history.cut = cut;
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
    fn a_torn_last_line_is_ignored_and_named_but_a_bad_line_before_it_is_an_error() {
        let whole = concat!(
            r#"{"index":0,"time_ns":1,"process":1,"type":"invoke","f":"write","value":1}"#,
            "\n",
            r#"{"index":1,"time_ns":2,"process":1,"type":"ok","f":"write","value":1}"#,
            "\n",
        );
        let torn = format!("{whole}{}", r#"{"index":2,"time_ns":3,"proc"#);
        let history = parse(&torn).unwrap();
        assert_eq!(history.ops.len(), 2);
        let cut = history.cut.expect("the torn line is named");
        assert_eq!(cut.torn_line, Some((3, 28)));
        assert!(
            cut.to_string().contains("the last line (3, 28 bytes)"),
            "{cut}"
        );
        assert_eq!(parse(whole).unwrap().cut, None);
        // Cut inside a multi-byte character: still a torn line.
        let mut bytes = format!("{whole}{}", r#"{"index":2,"f":"é"#).into_bytes();
        bytes.pop();
        let history = History::parse_jsonl(&bytes[..], Path::new("-")).unwrap();
        assert_eq!(history.ops.len(), 2);
        // The same bytes with a newline after them are a malformed line.
        let err = parse(&format!("{torn}\n")).unwrap_err().to_string();
        assert!(err.starts_with("-:3: "), "{err}");
        let err = parse(&format!("{}\n{whole}", r#"{"index":0"#))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("-:1: "), "{err}");
    }

    #[test]
    fn a_compressed_history_cut_anywhere_reads_as_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let ops: String = (0..200)
            .map(|i| {
                format!(
                    "{{\"index\":{i},\"time_ns\":{i},\"process\":\"nemesis\",\"type\":\"info\",\"f\":\"kill\",\"value\":{i}}}\n"
                )
            })
            .collect();
        // Written as the recorder does: a block flushed every 20 lines.
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        for (i, line) in ops.lines().enumerate() {
            writeln!(encoder, "{line}").unwrap();
            if i % 20 == 19 {
                encoder.flush().unwrap();
            }
        }
        let compressed = encoder.finish().unwrap();
        let path = dir.path().join("h.jsonl.zst");
        std::fs::write(&path, &compressed).unwrap();
        let whole = History::read_jsonl(&path).unwrap();
        assert_eq!((whole.ops.len(), whole.cut), (200, None));
        let mut longest = 0;
        for len in (4..compressed.len()).step_by(7) {
            std::fs::write(&path, &compressed[..len]).unwrap();
            let prefix = History::read_jsonl(&path).unwrap_or_else(|e| panic!("cut at {len}: {e}"));
            assert!(
                prefix.cut.is_some_and(|c| c.stream_ended_early),
                "cut at {len}"
            );
            assert_eq!(
                prefix.ops[..],
                whole.ops[..prefix.ops.len()],
                "cut at {len}"
            );
            assert!(prefix.ops.len() >= longest, "a longer cut never reads less");
            longest = prefix.ops.len();
        }
        assert!(longest >= 180, "every flushed block is readable: {longest}");
    }

    #[test]
    fn an_unfinished_invocation_counts_as_info() {
        let text = r#"{"index":0,"time_ns":1,"process":1,"type":"invoke","f":"write","value":1}"#;
        let history = parse(text).unwrap();
        assert_eq!(history.pairs()[0].outcome(), OpType::Info);
    }
}
