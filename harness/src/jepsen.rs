//! Jepsen's history formats: import EDN histories and `jepsen.util` log
//! lines, export our histories as EDN, and [`load`] any history file by
//! its content.
//!
//! # EDN
//!
//! A Jepsen history is a sequence of operation maps, one per line or
//! wrapped in a vector or list:
//!
//! ```text
//! {:type :invoke, :f :cas, :value [1 2], :process 3, :time 123456, :index 7}
//! {:type :ok, :f :cas, :value [1 2], :process 3, :time 125011, :index 8}
//! {:type :info, :f :start, :value nil, :process :nemesis, :time 130000}
//! ```
//!
//! Record literals (`#jepsen.history.Op{...}`) read as maps. `:index` is
//! ignored: entries are numbered in file order, as our [`History`] requires.
//! `:time` (nanoseconds) is kept, 0 when absent. `:error` and `:node` are
//! kept; other keys are dropped.
//!
//! Keys of Jepsen's `independent` workloads become our `key`: a value
//! `#jepsen.independent.Tuple{:key 3 :value 2}` always, and a plain
//! `[k v]` when the whole history is keyed that way — every client
//! invocation's value is a pair, and every `cas` pair holds a pair (which
//! tells `[:k3 [1 2]]` from an unkeyed cas `[1 2]`). Keys are written as
//! text: `3` → `"3"`, `:k3` → `"k3"`.
//!
//! Old Jepsen versions wrote a crashed operation's error as its value
//! (`:info :write :timed-out`): such a keyword on an `info` or `fail`
//! completion moves to `error`, and the value is the invocation's.
//!
//! # Log lines
//!
//! `jepsen.util` logs each operation as tab-separated process, type, `f`
//! and value (and, in newer versions, error), behind any prefix:
//!
//! ```text
//! INFO  jepsen.util - 0→:invoke→:read→nil
//! 2013-09-05 09:37:16,781{GMT}→INFO→[jepsen node n1] jepsen.util: 3→:ok→:cas→[4 1]
//! 0→:invoke→:read→nil
//! ```
//!
//! (`→` stands for a tab.)
//!
//! Other lines are skipped. Log lines carry no usable time: every `time_ns`
//! is 0.
//!
//! Both importers produce histories with [`Source::Jepsen`]: as in Knossos,
//! a read of `nil` matches any value. Operations pair by process; a
//! completion with no open invocation, a second invocation while one is
//! open, or an unknown type is an error naming the line (and column).

mod edn;

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use serde_json::Value;

use crate::history::{History, HistoryError, Op, OpType, Process, Source, F_CAS};
use edn::{Edn, Node, Pos};

/// The formats [`load`] recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Our `history.jsonl`.
    Jsonl,
    /// A Jepsen EDN history.
    Edn,
    /// `jepsen.util` log lines.
    Log,
}

/// Tells a history's format from its text: JSON lines when the first
/// non-blank line is a JSON object; a log when it is a `jepsen.util`
/// operation line; EDN when it starts with `{`, `[`, `(`, `#` or a `;`
/// comment; a log when any later line is an operation line. `None` when
/// it is none of these.
pub fn detect(text: &str) -> Option<Format> {
    let first = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    if first.starts_with('{') && serde_json::from_str::<Value>(first).is_ok_and(|v| v.is_object()) {
        return Some(Format::Jsonl);
    }
    if log_fields(first).is_some() {
        return Some(Format::Log);
    }
    if first.starts_with(['{', '[', '(', '#', ';']) {
        return Some(Format::Edn);
    }
    if text.lines().any(|l| log_fields(l).is_some()) {
        return Some(Format::Log);
    }
    None
}

/// Reads a history file of any [`Format`], recognised by its content, and
/// decompressed first if it is zstd (`history.jsonl.zst`).
pub fn load(path: &Path) -> Result<History, HistoryError> {
    let (bytes, stream_ended_early) = crate::history::read_file(path)?;
    if detect_bytes(&bytes) == Some(Format::Jsonl) {
        // Read line by line, so that a torn last line (a recorder that
        // never finished) is passed over rather than refused.
        return History::from_file_bytes(&bytes, stream_ended_early, path);
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let before = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        HistoryError::Parse {
            path: path.to_path_buf(),
            line: before.iter().filter(|&&b| b == b'\n').count() + 1,
            message: "not UTF-8 text".into(),
        }
    })?;
    match detect(&text) {
        Some(Format::Jsonl) => History::parse_jsonl(text.as_bytes(), path),
        Some(Format::Edn) => parse_edn(&text, path),
        Some(Format::Log) => parse_log(&text, path),
        None => Err(HistoryError::Parse {
            path: path.to_path_buf(),
            line: 1,
            message: "not a history: expected JSON lines (`{\"index\":0,...}`), Jepsen EDN \
                      (`{:type :invoke, ...}`) or jepsen.util log lines (`0\t:invoke\t:read\tnil`)"
                .into(),
        }),
    }
}

/// [`detect`] on the first line of bytes that may not be UTF-8 further on.
fn detect_bytes(bytes: &[u8]) -> Option<Format> {
    let first = bytes
        .split(|&b| b == b'\n')
        .find(|l| !l.trim_ascii().is_empty())?;
    let first = std::str::from_utf8(first).ok()?;
    (detect(first) == Some(Format::Jsonl)).then_some(Format::Jsonl)
}

/// Parses a Jepsen EDN history; `path` names the input in errors.
pub fn parse_edn(text: &str, path: &Path) -> Result<History, HistoryError> {
    let at = |pos: Pos, message: String| HistoryError::ParseAt {
        path: path.to_path_buf(),
        line: pos.line,
        column: pos.column,
        message,
    };
    let forms = edn::parse_all(text).map_err(|e| at(e.pos, e.message))?;
    let ops: Vec<Node> = match <[Node; 1]>::try_from(forms) {
        Ok(
            [Node {
                value: Edn::Vector(items) | Edn::List(items),
                ..
            }],
        ) => items,
        Ok([single]) => vec![single],
        Err(forms) => forms,
    };
    let mut raws = Vec::with_capacity(ops.len());
    for node in &ops {
        raws.push(raw_from_edn(node).map_err(|(pos, message)| at(pos, message))?);
    }
    assemble(raws, path)
}

/// Parses `jepsen.util` log lines; `path` names the input in errors.
pub fn parse_log(text: &str, path: &Path) -> Result<History, HistoryError> {
    let mut raws = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some(fields) = log_fields(line) else {
            continue;
        };
        let pos = |column: usize| Pos {
            line: n + 1,
            column,
        };
        let err = |column: usize, message: String| HistoryError::ParseAt {
            path: path.to_path_buf(),
            line: n + 1,
            column,
            message,
        };
        let kind = op_type(fields.kind.1).ok_or_else(|| {
            err(
                fields.kind.0,
                format!(
                    "unknown operation type `{}` (expected :invoke, :ok, :fail or :info)",
                    fields.kind.1
                ),
            )
        })?;
        let (column, rest) = fields.rest;
        let (mut value, after) = edn::parse_prefix(rest).map_err(|e| {
            let text = rest.trim_end();
            err(
                column + e.pos.column - 1,
                format!("in the value `{text}`: {}", e.message),
            )
        })?;
        // Shift positions to the line, for later messages.
        value.pos = pos(column);
        // The error, if any, follows the value: EDN as Jepsen prints it
        // (`:timed-out`), else the text as it stands.
        let error = match after.trim() {
            "" => None,
            text => Some(match edn::parse_one(text) {
                Ok(node) => display(&node.value),
                Err(_) => text.to_owned(),
            }),
        };
        raws.push(Raw {
            pos: pos(fields.process.0),
            process: fields.process.1,
            kind,
            f: fields.f.1.trim_start_matches(':').to_owned(),
            value,
            time_ns: 0,
            error,
            node: None,
        });
    }
    assemble(raws, path)
}

/// Writes `history` as Jepsen EDN, one operation map per line: `:index`,
/// `:time` (ns), `:type`, `:process` (`:nemesis` for the nemesis), `:f`,
/// `:value` (`[key value]` when the operation has a key), then `:error`
/// and `:node` when present. A cas that failed its comparison is a plain
/// `:fail` with `:error :cas-mismatch`.
pub fn export_edn(history: &History, mut out: impl Write) -> io::Result<()> {
    let mut line = String::new();
    for op in &history.ops {
        line.clear();
        line.push_str("{:index ");
        line.push_str(&op.index.to_string());
        line.push_str(", :time ");
        line.push_str(&op.time_ns.to_string());
        line.push_str(", :type :");
        line.push_str(match op.kind {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        });
        line.push_str(", :process ");
        match op.process {
            Process::Client(p) => line.push_str(&p.to_string()),
            Process::Nemesis => line.push_str(":nemesis"),
        }
        line.push_str(", :f ");
        write_name(&op.f, &mut line);
        line.push_str(", :value ");
        match &op.key {
            Some(key) => {
                line.push('[');
                match key.parse::<i64>() {
                    Ok(k) if k.to_string() == *key => line.push_str(key),
                    _ => write_string(key, &mut line),
                }
                line.push(' ');
                write_value(&op.value, &mut line);
                line.push(']');
            }
            None => write_value(&op.value, &mut line),
        }
        if let Some(error) = &op.error {
            line.push_str(", :error ");
            write_name(error, &mut line);
        }
        if let Some(node) = &op.node {
            line.push_str(", :node ");
            write_string(node, &mut line);
        }
        line.push_str("}\n");
        out.write_all(line.as_bytes())?;
    }
    out.flush()
}

/// One operation as read, before pairing.
struct Raw {
    pos: Pos,
    process: Process,
    kind: OpType,
    f: String,
    value: Node,
    time_ns: u64,
    error: Option<String>,
    node: Option<String>,
}

const TUPLE_TAG: &str = "jepsen.independent.Tuple";

/// Pairs, keys and numbers the raw operations.
fn assemble(raws: Vec<Raw>, path: &Path) -> Result<History, HistoryError> {
    let at = |pos: Pos, message: String| HistoryError::ParseAt {
        path: path.to_path_buf(),
        line: pos.line,
        column: pos.column,
        message,
    };
    let independent = is_independent(&raws);
    // Open invocations: process -> (line, f, key, invocation value).
    let mut open: HashMap<u64, (Pos, String, Option<String>, Node)> = HashMap::new();
    let mut ops = Vec::with_capacity(raws.len());
    for raw in raws {
        let (mut key, value) = match split_tuple(&raw.value, independent) {
            Some((k, v)) => (Some(k), v),
            None => (None, raw.value.clone()),
        };
        let mut value_json = to_json(&value).map_err(|(pos, m)| at(pos, m))?;
        let mut error = raw.error;
        if let Process::Client(p) = raw.process {
            if raw.kind == OpType::Invoke {
                if let Some((prev, ..)) = open.get(&p) {
                    return Err(at(
                        raw.pos,
                        format!(
                            "process {p} invokes `{}` while its operation from line {} is still open",
                            raw.f, prev.line
                        ),
                    ));
                }
                open.insert(p, (raw.pos, raw.f.clone(), key.clone(), value.clone()));
            } else {
                let Some((inv_pos, inv_f, inv_key, inv_value)) = open.remove(&p) else {
                    return Err(at(
                        raw.pos,
                        format!(
                            "process {p} completes `{}` ({}) but has no open invocation",
                            raw.f,
                            type_name(raw.kind)
                        ),
                    ));
                };
                if inv_f != raw.f {
                    return Err(at(
                        raw.pos,
                        format!(
                            "process {p} completes `{}` but invoked `{inv_f}` at line {}",
                            raw.f, inv_pos.line
                        ),
                    ));
                }
                if key.is_none() {
                    key = inv_key;
                }
                let crashed = matches!(raw.kind, OpType::Info | OpType::Fail);
                if let (true, Edn::Keyword(reason)) = (crashed, &value.value) {
                    if !matches!(inv_value.value, Edn::Keyword(_)) {
                        error.get_or_insert_with(|| reason.clone());
                        value_json = to_json(&inv_value).map_err(|(pos, m)| at(pos, m))?;
                    }
                }
            }
        }
        ops.push(Op {
            index: ops.len() as u64,
            time_ns: raw.time_ns,
            process: raw.process,
            kind: raw.kind,
            f: raw.f,
            key,
            value: value_json,
            node: raw.node,
            error,
        });
    }
    let history = History {
        ops,
        source: Source::Jepsen,
        cut: None,
    };
    history
        .validate()
        .map_err(|message| HistoryError::Malformed {
            path: path.to_path_buf(),
            message,
        })?;
    Ok(history)
}

/// True when every client invocation's value is a `[key value]` pair (see
/// the module docs).
fn is_independent(raws: &[Raw]) -> bool {
    let mut invokes = raws
        .iter()
        .filter(|r| r.kind == OpType::Invoke && r.process != Process::Nemesis)
        .peekable();
    invokes.peek().is_some()
        && invokes.all(|r| match &r.value.value {
            Edn::Tagged(tag, _) => tag == TUPLE_TAG,
            Edn::Vector(pair) if pair.len() == 2 => {
                r.f != F_CAS || matches!(&pair[1].value, Edn::Vector(inner) if inner.len() == 2)
            }
            _ => false,
        })
}

/// The key and value of an independent tuple.
fn split_tuple(node: &Node, independent: bool) -> Option<(String, Node)> {
    match &node.value {
        Edn::Tagged(tag, inner) if tag == TUPLE_TAG => {
            let key = inner.value.get("key")?;
            let value = inner.value.get("value").cloned().unwrap_or(Node {
                pos: inner.pos,
                value: Edn::Nil,
            });
            Some((display(&key.value), value))
        }
        Edn::Vector(pair) if independent && pair.len() == 2 => {
            Some((display(&pair[0].value), pair[1].clone()))
        }
        _ => None,
    }
}

/// Reads one operation map.
fn raw_from_edn(node: &Node) -> Result<Raw, (Pos, String)> {
    let map = match &node.value {
        Edn::Map(_) => &node.value,
        Edn::Tagged(_, inner) if matches!(inner.value, Edn::Map(_)) => &inner.value,
        other => {
            return Err((
                node.pos,
                format!(
                    "expected an operation map like {{:type :invoke, :f :read, ...}}, found {}",
                    other.kind()
                ),
            ))
        }
    };
    let field = |name: &str| map.get(name);
    let require = |name: &str| {
        field(name).ok_or_else(|| (node.pos, format!("the operation has no `:{name}`")))
    };
    let kind_node = require("type")?;
    let kind = match &kind_node.value {
        Edn::Keyword(k) | Edn::Str(k) | Edn::Symbol(k) => op_type(k),
        _ => None,
    }
    .ok_or_else(|| {
        (
            kind_node.pos,
            format!(
                "unknown operation type {} (expected :invoke, :ok, :fail or :info)",
                short(&kind_node.value)
            ),
        )
    })?;
    let f_node = require("f")?;
    let f = match &f_node.value {
        Edn::Keyword(f) | Edn::Str(f) | Edn::Symbol(f) => f.clone(),
        other => {
            return Err((
                f_node.pos,
                format!("`:f` must be a keyword, found {}", other.kind()),
            ))
        }
    };
    let process_node = require("process")?;
    let process = match &process_node.value {
        Edn::Int(p) if *p >= 0 => Process::Client(*p as u64),
        Edn::Keyword(k) | Edn::Str(k) if k == "nemesis" => Process::Nemesis,
        other => {
            return Err((
                process_node.pos,
                format!(
                    "`:process` must be a non-negative integer or :nemesis, found {}",
                    short(other)
                ),
            ))
        }
    };
    let time_ns = match field("time") {
        None => 0,
        Some(Node {
            value: Edn::Int(t), ..
        }) if *t >= 0 => *t as u64,
        Some(Node {
            value: Edn::Nil, ..
        }) => 0,
        Some(t) => {
            return Err((
                t.pos,
                format!(
                    "`:time` must be non-negative nanoseconds, found {}",
                    short(&t.value)
                ),
            ))
        }
    };
    let value = field("value").cloned().unwrap_or(Node {
        pos: node.pos,
        value: Edn::Nil,
    });
    let text = |name: &str| {
        field(name)
            .filter(|n| n.value != Edn::Nil)
            .map(|n| display(&n.value))
    };
    Ok(Raw {
        pos: node.pos,
        process,
        kind,
        f,
        value,
        time_ns,
        error: text("error"),
        node: text("node"),
    })
}

fn op_type(name: &str) -> Option<OpType> {
    match name.trim_start_matches(':') {
        "invoke" => Some(OpType::Invoke),
        "ok" => Some(OpType::Ok),
        "fail" => Some(OpType::Fail),
        "info" => Some(OpType::Info),
        _ => None,
    }
}

fn type_name(kind: OpType) -> &'static str {
    match kind {
        OpType::Invoke => ":invoke",
        OpType::Ok => ":ok",
        OpType::Fail => ":fail",
        OpType::Info => ":info",
    }
}

/// The fields of a `jepsen.util` operation line, each with its 1-based
/// column: the process, the type and the function, then the rest of the
/// line (the value and, after it, an optional error), read as EDN.
struct LogFields<'a> {
    process: (usize, Process),
    kind: (usize, &'a str),
    f: (usize, &'a str),
    rest: (usize, &'a str),
}

/// Finds `<process> :<type> :<f> <value> [<error>]` in a line, where the
/// process is an integer or `:nemesis` and the fields are separated by
/// any run of tabs and spaces. Jepsen writes tabs; logs that went through
/// a terminal, an editor or a chat arrive with spaces, and Jepsen's own
/// readers (and porcupine's) take any whitespace. Whatever comes before
/// the process (a timestamp, a level, a logger name) is skipped.
fn log_fields(line: &str) -> Option<LogFields<'_>> {
    // Each word: its column, its byte offset and its text.
    let mut words: Vec<(usize, usize, &str)> = Vec::new();
    let mut start: Option<(usize, usize)> = None;
    for (column, (offset, c)) in (1..).zip(line.char_indices()) {
        let blank = c == ' ' || c == '\t';
        match (blank, start) {
            (true, Some((col, from))) => {
                words.push((col, from, &line[from..offset]));
                start = None;
            }
            (false, None) => start = Some((column, offset)),
            _ => {}
        }
    }
    if let Some((col, from)) = start {
        words.push((col, from, &line[from..]));
    }
    for i in 0..words.len().saturating_sub(3) {
        let (col, _, word) = words[i];
        let process = if word == ":nemesis" {
            Process::Nemesis
        } else if let Ok(p) = word.parse::<u64>() {
            Process::Client(p)
        } else {
            continue;
        };
        let (kind, f) = (words[i + 1], words[i + 2]);
        if !kind.2.starts_with(':') || !f.2.starts_with(':') || f.2.len() < 2 {
            continue;
        }
        // With spaces, only a known type makes an operation line, so that
        // an EDN map such as `{:process 0 :type :invoke ...}` is not one;
        // a tab before the type is Jepsen's own layout, where an unknown
        // type is an error worth reporting.
        let tabbed = line.as_bytes()[kind.1 - 1] == b'\t';
        if !tabbed && op_type(kind.2).is_none() {
            continue;
        }
        let (value_col, value_from, _) = words[i + 3];
        return Some(LogFields {
            process: (col, process),
            kind: (kind.0, kind.2),
            f: (f.0, f.2),
            rest: (value_col, &line[value_from..]),
        });
    }
    None
}

/// An EDN value as our JSON value: keywords, symbols and characters become
/// strings, every sequence and set an array, map keys text.
fn to_json(node: &Node) -> Result<Value, (Pos, String)> {
    Ok(match &node.value {
        Edn::Nil => Value::Null,
        Edn::Bool(b) => Value::Bool(*b),
        Edn::Int(i) => Value::from(*i),
        Edn::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| (node.pos, format!("{f} is not a finite number")))?,
        Edn::Str(s) | Edn::Keyword(s) | Edn::Symbol(s) => Value::String(s.clone()),
        Edn::Char(c) => Value::String(c.to_string()),
        Edn::List(items) | Edn::Vector(items) | Edn::Set(items) => {
            Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Edn::Map(entries) => {
            let mut map = serde_json::Map::new();
            for (k, v) in entries {
                map.insert(display(&k.value), to_json(v)?);
            }
            Value::Object(map)
        }
        Edn::Tagged(_, inner) => to_json(inner)?,
    })
}

/// Text for a key, error or node: the name of a keyword, symbol or string,
/// else the value as JSON.
fn display(value: &Edn) -> String {
    match value {
        Edn::Str(s) | Edn::Keyword(s) | Edn::Symbol(s) => s.clone(),
        Edn::Int(i) => i.to_string(),
        other => {
            let node = Node {
                pos: Pos { line: 0, column: 0 },
                value: other.clone(),
            };
            to_json(&node).map_or_else(|_| format!("{other:?}"), |v| v.to_string())
        }
    }
}

/// A value in an error message, cut short.
fn short(value: &Edn) -> String {
    let mut text = match value {
        Edn::Keyword(k) => format!(":{k}"),
        Edn::Str(s) => format!("{s:?}"),
        other => display(other),
    };
    if text.chars().count() > 40 {
        text = text.chars().take(40).collect::<String>() + "...";
    }
    text
}

/// A keyword when `name` is a valid one, else a string.
fn write_name(name: &str, out: &mut String) {
    let keyword = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == ':')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || ".*+!-_?$%&=<>/".contains(c));
    if keyword {
        out.push(':');
        out.push_str(name);
    } else {
        write_string(name, out);
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (None, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => out.push_str(&format!("{f:?}")),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(k, out);
                out.push(' ');
                write_value(v, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn edn(text: &str) -> Result<History, HistoryError> {
        parse_edn(text, Path::new("h.edn"))
    }

    fn log(text: &str) -> Result<History, HistoryError> {
        parse_log(text, Path::new("h.log"))
    }

    #[test]
    fn reads_an_edn_history_with_nemesis_and_pairs_it() {
        let h = edn(concat!(
            "[{:type :invoke, :f :cas, :value [1 2], :process 3, :time 100, :index 7}\n",
            " {:type :info, :f :start, :value nil, :process :nemesis, :time 150}\n",
            " {:type :fail, :f :cas, :value [1 2], :process 3, :time 200, :error :cas-mismatch}\n",
            " {:type :invoke, :f :read, :value nil, :process 4}\n",
            " {:type :ok, :f :read, :value 3, :process 4, :node \"n1\"}]\n",
        ))
        .unwrap();
        assert_eq!(h.source, Source::Jepsen);
        assert_eq!(h.ops.len(), 5);
        let o = &h.ops;
        assert_eq!(
            (o[0].index, o[0].time_ns, o[0].process),
            (0, 100, Process::Client(3))
        );
        assert_eq!(
            (o[0].f.as_str(), &o[0].value, &o[0].key),
            ("cas", &json!([1, 2]), &None)
        );
        assert!(o[1].is_nemesis());
        assert_eq!(o[1].f, "start");
        assert!(o[2].is_cas_mismatch());
        assert_eq!((o[3].time_ns, o[4].node.as_deref()), (0, Some("n1")));
        assert_eq!(o[4].value, json!(3));
        let pairs = h.pairs();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].complete.map(|c| c.index), Some(2));
        assert_eq!(pairs[1].outcome(), OpType::Ok);
    }

    #[test]
    fn reads_bare_maps_lists_and_records() {
        let h = edn(concat!(
            "; one per line, as jepsen's history.edn\n",
            "#jepsen.history.Op{:index 0 :type :invoke :f :write :value \"a\\tb\" :process 0}\n",
            "{:index 1 :type :ok :f :write :value \"a\\tb\" :process 0}\n",
        ))
        .unwrap();
        assert_eq!(h.ops[1].value, json!("a\tb"));
        let h = edn(
            "({:type :invoke :f :read :process 0} {:type :ok :f :read :value #{1 2} :process 0})",
        )
        .unwrap();
        assert_eq!(h.ops[0].value, Value::Null);
        assert_eq!(h.ops[1].value, json!([1, 2]));
    }

    #[test]
    fn maps_independent_tuples_to_keys() {
        let h = edn(concat!(
            "{:type :invoke, :f :cas, :value [:k3 [1 2]], :process 0}\n",
            "{:type :invoke, :f :read, :value [7 nil], :process 1}\n",
            "{:type :ok, :f :cas, :value [:k3 [1 2]], :process 0}\n",
            "{:type :info, :f :read, :value :timed-out, :process 1}\n",
        ))
        .unwrap();
        let o = &h.ops;
        assert_eq!(
            (o[0].key.as_deref(), &o[0].value),
            (Some("k3"), &json!([1, 2]))
        );
        assert_eq!(
            (o[1].key.as_deref(), &o[1].value),
            (Some("7"), &Value::Null)
        );
        assert_eq!(o[2].key.as_deref(), Some("k3"));
        // The info completion takes its invocation's key and value, and its
        // keyword becomes the error.
        assert_eq!(
            (o[3].key.as_deref(), &o[3].value),
            (Some("7"), &Value::Null)
        );
        assert_eq!(o[3].error.as_deref(), Some("timed-out"));

        let h = edn(concat!(
            "{:type :invoke, :f :write, :value #jepsen.independent.Tuple{:key 3 :value 2}, :process 0}\n",
            "{:type :ok, :f :write, :value #jepsen.independent.Tuple{:key 3 :value 2}, :process 0}\n",
            "{:type :invoke, :f :read, :value nil, :process 1}\n",
        ))
        .unwrap();
        assert_eq!(
            (h.ops[0].key.as_deref(), &h.ops[0].value),
            (Some("3"), &json!(2))
        );
        assert_eq!(h.ops[2].key, None);
    }

    #[test]
    fn an_unkeyed_cas_pair_is_not_a_tuple() {
        let h = edn(concat!(
            "{:type :invoke, :f :cas, :value [1 2], :process 0}\n",
            "{:type :ok, :f :cas, :value [1 2], :process 0}\n",
        ))
        .unwrap();
        assert_eq!((&h.ops[0].key, &h.ops[0].value), (&None, &json!([1, 2])));
    }

    #[test]
    fn edn_errors_name_line_and_column() {
        let err = |text: &str| edn(text).unwrap_err().to_string();
        assert_eq!(
            err("{:type :invoke, :f :read, :process 0}\n{:type :ok, :f :read, :process 1}"),
            "h.edn:2:1: process 1 completes `read` (:ok) but has no open invocation"
        );
        assert_eq!(
            err("{:type :invoke, :f :read, :process 0}\n  {:type :invoke, :f :write, :process 0}"),
            "h.edn:2:3: process 0 invokes `write` while its operation from line 1 is still open"
        );
        assert_eq!(
            err("{:type :invoke, :f :read, :process 0}\n{:type :ok, :f :write, :process 0}"),
            "h.edn:2:1: process 0 completes `write` but invoked `read` at line 1"
        );
        assert_eq!(
            err("[{:type :crashed, :f :read, :process 0}]"),
            "h.edn:1:9: unknown operation type :crashed (expected :invoke, :ok, :fail or :info)"
        );
        assert_eq!(
            err("[{:f :read, :process 0}]"),
            "h.edn:1:2: the operation has no `:type`"
        );
        assert_eq!(
            err("[{:type :ok :f :read :process -1}]"),
            "h.edn:1:31: `:process` must be a non-negative integer or :nemesis, found -1"
        );
        assert_eq!(err("[1]"), "h.edn:1:2: expected an operation map like {:type :invoke, :f :read, ...}, found an integer");
        assert_eq!(
            err("{:type :invoke\n :f [1"),
            "h.edn:2:7: expected `]`, found the end of the input"
        );
    }

    #[test]
    fn reads_log_lines_in_every_prefix_style() {
        let text = concat!(
            "2013-09-05 09:37:16,780{GMT}\tINFO\t[jepsen node n1] jepsen.util: 3\t:invoke\t:cas\t[4 1]\n",
            "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n",
            "some unrelated line\n",
            "INFO [2019-04-01 11:25:23,719] jepsen worker 0 - jepsen.util 0\t:ok\t:read\t2\n",
            "2013-09-05 09:37:16,781{GMT}\tINFO\t[jepsen node n1] jepsen.util: 3\t:ok\t:cas\t[4 1]\n",
            "INFO  jepsen.util - :nemesis\t:info\t:start\tnil\n",
            "6\t:invoke\t:write\t4\n",
            "6\t:info\t:write\t:timed-out\n",
            "7\t:invoke\t:cas\t[0 1]\n",
            "7\t:fail\t:cas\t[0 1]\t:cas-mismatch\n",
        );
        let h = log(text).unwrap();
        assert_eq!(h.source, Source::Jepsen);
        let o = &h.ops;
        assert_eq!(o.len(), 9);
        assert_eq!(
            (o[0].process, o[0].kind, o[0].f.as_str()),
            (Process::Client(3), OpType::Invoke, "cas")
        );
        assert_eq!(o[0].value, json!([4, 1]));
        assert_eq!((o[2].kind, &o[2].value), (OpType::Ok, &json!(2)));
        assert!(o[4].is_nemesis());
        assert_eq!(
            (&o[6].value, o[6].error.as_deref()),
            (&json!(4), Some("timed-out"))
        );
        assert!(o[8].is_cas_mismatch());
        assert!(o.iter().all(|op| op.time_ns == 0));
        assert_eq!(h.pairs().len(), 4);
    }

    #[test]
    fn reads_log_lines_separated_by_any_run_of_spaces_and_tabs() {
        let tabs = concat!(
            "INFO  jepsen.util - 0\t:invoke\t:write\t[3 4]\n",
            "INFO  jepsen.util - 0\t:ok\t:write\t[3 4]\n",
            "INFO  jepsen.util - :nemesis\t:info\t:start\t\"Cut off {:n1 #{:n2}}\"\n",
            "1\t:invoke\t:cas\t[0 1]\n",
            "1\t:fail\t:cas\t[0 1]\t:cas-mismatch\n",
            "2\t:invoke\t:read\tnil\n",
            "2\t:info\t:read\tnil\tindeterminate: Read timed out\n",
        );
        // The same log after a terminal, an editor and a chat: runs of
        // spaces, a tab here and there, trailing blanks.
        let spaced = concat!(
            "INFO  jepsen.util - 0    :invoke :write  [3 4]\n",
            "INFO  jepsen.util - 0 \t :ok\t:write [3 4]   \n",
            "INFO  jepsen.util - :nemesis :info :start \"Cut off {:n1 #{:n2}}\"\n",
            "1  :invoke  :cas  [0 1]\n",
            "1  :fail    :cas  [0 1]   :cas-mismatch\n",
            "2 :invoke :read nil\n",
            "2 :info :read nil indeterminate: Read timed out\n",
        );
        let a = log(tabs).unwrap();
        let b = log(spaced).unwrap();
        assert_eq!(a.ops.len(), 7);
        assert_eq!(a.ops, b.ops);
        assert_eq!(b.ops[0].value, json!([3, 4]));
        assert!(b.ops[2].is_nemesis());
        assert_eq!(b.ops[2].value, json!("Cut off {:n1 #{:n2}}"));
        assert!(b.ops[4].is_cas_mismatch());
        assert_eq!(
            b.ops[6].error.as_deref(),
            Some("indeterminate: Read timed out")
        );
        assert_eq!(detect(spaced), Some(Format::Log));
        // An EDN map is no log line, however it is spaced.
        assert_eq!(
            detect("{:process 0 :type :invoke :f :read :value nil}\n"),
            Some(Format::Edn)
        );
    }

    #[test]
    fn spaced_log_errors_name_line_and_column() {
        let err = |text: &str| log(text).unwrap_err().to_string();
        assert_eq!(
            err("0 :invoke :read nil\n0   :ok   :read   [1 2\n"),
            "h.log:2:23: in the value `[1 2`: expected `]`, found the end of the input"
        );
        assert_eq!(
            err("INFO  jepsen.util - 0  :invoke  :write  1\n1 :ok :write 1\n"),
            "h.log:2:1: process 1 completes `write` (:ok) but has no open invocation"
        );
        // A line whose type is no operation type is not an operation line
        // when spaced (log noise), but is an error when tab-separated.
        assert_eq!(log("3 :started :read nil\n").unwrap().ops.len(), 0);
        assert!(err("3\t:started\t:read\tnil\n").contains("unknown operation type"));
    }

    #[test]
    fn log_errors_name_the_line() {
        let err = |text: &str| log(text).unwrap_err().to_string();
        assert_eq!(
            err("0\t:invoke\t:read\tnil\nskip me\n1\t:ok\t:read\t3\n"),
            "h.log:3:1: process 1 completes `read` (:ok) but has no open invocation"
        );
        assert_eq!(
            err("INFO  jepsen.util - 0\t:started\t:read\tnil\n"),
            "h.log:1:23: unknown operation type `:started` (expected :invoke, :ok, :fail or :info)"
        );
        assert_eq!(
            err("0\t:invoke\t:write\t[1 2\n"),
            "h.log:1:22: in the value `[1 2`: expected `]`, found the end of the input"
        );
    }

    #[test]
    fn export_then_import_gives_the_same_operations() {
        let op = |index, time_ns, process, kind, f: &str, key: Option<&str>, value: Value| Op {
            index,
            time_ns,
            process,
            kind,
            f: f.into(),
            key: key.map(Into::into),
            value,
            node: None,
            error: None,
        };
        let c = Process::Client;
        for keyed in [None, Some("k7"), Some("12")] {
            let mut ops = vec![
                op(0, 10, c(0), OpType::Invoke, "write", keyed, json!(42)),
                op(1, 20, c(1), OpType::Invoke, "cas", keyed, json!([1, 2])),
                op(
                    2,
                    25,
                    Process::Nemesis,
                    OpType::Info,
                    "partition",
                    None,
                    json!({"kind": "halves", "blocked": [["n1", "n2"]]}),
                ),
                op(3, 30, c(0), OpType::Ok, "write", keyed, json!(42)),
                op(4, 40, c(1), OpType::Fail, "cas", keyed, json!([1, 2])),
                op(5, 50, c(2), OpType::Invoke, "read", keyed, Value::Null),
                op(
                    6,
                    60,
                    c(2),
                    OpType::Ok,
                    "read",
                    keyed,
                    json!("quote\" back\\ tab\t é"),
                ),
                op(7, 70, c(3), OpType::Invoke, "write", keyed, json!(1.5)),
                op(
                    8,
                    80,
                    Process::Nemesis,
                    OpType::Info,
                    "heal",
                    None,
                    Value::Null,
                ),
            ];
            ops[4].error = Some("cas-mismatch".into());
            ops[3].node = Some("n2".into());
            let ours = History::new(ops);
            ours.validate().unwrap();
            let mut out = Vec::new();
            export_edn(&ours, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            let back = edn(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(back.source, Source::Jepsen);
            assert_eq!(back.ops, ours.ops, "{text}");
        }
    }

    #[test]
    fn exports_the_jepsen_shape() {
        let h = History::new(vec![Op {
            index: 0,
            time_ns: 5,
            process: Process::Client(3),
            kind: OpType::Fail,
            f: "cas".into(),
            key: Some("4".into()),
            value: json!([0, 1]),
            node: None,
            error: Some("cas-mismatch".into()),
        }]);
        let mut out = Vec::new();
        export_edn(&h, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{:index 0, :time 5, :type :fail, :process 3, :f :cas, :value [4 [0 1]], :error :cas-mismatch}\n"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(text in "[\\[\\](){}#:;\"\t\n ,a-z0-9.\\-]{0,200}") {
            let _ = edn(&text);
            let _ = log(&text);
            let _ = detect(&text);
        }

        #[test]
        fn arbitrary_operation_maps_never_panic(
            kind in "[:a-z]{0,8}",
            process in "[:a-z0-9-]{0,4}",
            value in "[\\[\\]#{}:a-z0-9 ]{0,20}",
        ) {
            let text = format!("{{:type {kind} :f :read :process {process} :value {value}}}");
            let _ = edn(&text);
            let _ = log(&format!("{process}\t{kind}\t:read\t{value}"));
        }
    }

    #[test]
    fn detects_formats_by_content() {
        let jsonl =
            r#"{"index":0,"time_ns":0,"process":0,"type":"invoke","f":"read","value":null}"#;
        assert_eq!(detect(&format!("\n{jsonl}\n")), Some(Format::Jsonl));
        assert_eq!(
            detect("{:type :invoke, :f :read, :process 0}"),
            Some(Format::Edn)
        );
        assert_eq!(detect("  [{:type :invoke}]"), Some(Format::Edn));
        assert_eq!(detect("0\t:invoke\t:read\tnil"), Some(Format::Log));
        assert_eq!(
            detect("starting\nINFO  jepsen.util - 0\t:invoke\t:read\tnil"),
            Some(Format::Log)
        );
        assert_eq!(detect("hello\nworld"), None);
        assert_eq!(detect(""), None);
    }

    #[test]
    fn load_reads_each_format_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let jsonl = write(
            "a.jsonl",
            "{\"index\":0,\"time_ns\":0,\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"value\":null}\n",
        );
        assert_eq!(load(&jsonl).unwrap().source, Source::Mimeo);
        let e = write("b.txt", "{:type :invoke, :f :read, :process 0}");
        assert_eq!(load(&e).unwrap().source, Source::Jepsen);
        let l = write("c.edn", "0\t:invoke\t:read\tnil\n");
        assert_eq!(load(&l).unwrap().ops.len(), 1);
        let bad = write("d", "nothing here");
        assert!(load(&bad)
            .unwrap_err()
            .to_string()
            .contains("not a history"));
        assert!(matches!(
            load(&dir.path().join("missing")),
            Err(HistoryError::Io { .. })
        ));
    }
}
