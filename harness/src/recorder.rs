//! The history recorder shared by client workers and the nemesis.
//!
//! Indices and times are assigned under one lock, so history order, index
//! order and time order agree: if an operation completed before another was
//! invoked, its completion has the smaller index. That is the real-time
//! order the checkers rely on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde_json::Value;

use crate::history::{History, Op, OpType, Process};

/// Running totals of client completions, for the progress line.
#[derive(Debug, Default)]
pub struct Counts {
    /// Operations that took effect.
    pub ok: AtomicU64,
    /// Operations that certainly did not.
    pub fail: AtomicU64,
    /// Operations whose outcome is unknown.
    pub info: AtomicU64,
}

/// Appends operations to an in-memory history.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    /// Totals of client completions so far.
    pub counts: Counts,
}

/// What an operation is, apart from who did it and when.
#[derive(Clone, Debug)]
pub struct Event {
    /// `invoke`, `ok`, `fail` or `info`.
    pub kind: OpType,
    /// The function.
    pub f: String,
    /// The key, for keyed workloads.
    pub key: Option<String>,
    /// Argument or result.
    pub value: Value,
    /// The node that answered.
    pub node: Option<String>,
    /// Why it failed or is unknown.
    pub error: Option<String>,
}

impl Event {
    /// An event with no key, node or error.
    pub fn new(kind: OpType, f: &str, value: Value) -> Event {
        Event {
            kind,
            f: f.to_owned(),
            key: None,
            value,
            node: None,
            error: None,
        }
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            counts: Counts::default(),
        }
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Appends an event by `process`; returns its index.
    pub fn record(&self, process: Process, event: Event) -> u64 {
        if process != Process::Nemesis {
            let counter = match event.kind {
                OpType::Invoke => None,
                OpType::Ok => Some(&self.counts.ok),
                OpType::Fail => Some(&self.counts.fail),
                OpType::Info => Some(&self.counts.info),
            };
            if let Some(counter) = counter {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut ops = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let index = ops.len() as u64;
        ops.push(Op {
            index,
            time_ns: self.start.elapsed().as_nanos() as u64,
            process,
            kind: event.kind,
            f: event.f,
            key: event.key,
            value: event.value,
            node: event.node,
            error: event.error,
        });
        index
    }

    /// Records a nemesis event (type `info`).
    pub fn nemesis(&self, f: &str, value: Value) -> u64 {
        self.record(Process::Nemesis, Event::new(OpType::Info, f, value))
    }

    /// A copy of the history so far.
    pub fn history(&self) -> History {
        History::new(
            self.ops
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_and_times_follow_recording_order() {
        let recorder = Recorder::new();
        recorder.record(
            Process::Client(0),
            Event::new(OpType::Invoke, "read", Value::Null),
        );
        recorder.nemesis("pause", serde_json::json!(["n1"]));
        recorder.record(
            Process::Client(0),
            Event::new(OpType::Ok, "read", Value::from(3)),
        );
        let history = recorder.history();
        history.validate().unwrap();
        let indices: Vec<u64> = history.ops.iter().map(|o| o.index).collect();
        assert_eq!(indices, [0, 1, 2]);
        assert!(history.ops.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
        assert_eq!(recorder.counts.ok.load(Ordering::Relaxed), 1);
        assert_eq!(recorder.counts.info.load(Ordering::Relaxed), 0);
    }
}
