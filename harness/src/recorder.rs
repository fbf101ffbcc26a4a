//! The history recorder shared by client workers and the nemesis.
//!
//! Indices and times are assigned under one lock, so history order, index
//! order and time order agree: if an operation completed before another was
//! invoked, its completion has the smaller index. That is the real-time
//! order the checkers rely on.
//!
//! A recorder made with [`Recorder::to_file`] also appends every operation,
//! as it is recorded, to a zstd-compressed `history.jsonl.zst`: buffered,
//! and flushed to the file at every nemesis event and at least once a
//! second ([`Recorder::flush`], which the runner also calls on a timer), so
//! a harness that crashes leaves a checkable prefix of its history, at most
//! a second short. [`Recorder::finish`] closes the stream and fsyncs it.
//! (A reader of a stream cut short gets every line up to the last flush:
//! each flush ends a zstd block.)

use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

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

/// The zstd level of `history.jsonl.zst`: JSON lines of a run shrink
/// about tenfold at a few percent of a core for the rates a run records.
const ZSTD_LEVEL: i32 = 6;
/// The longest an operation waits in the buffer before it is written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Bytes of JSON lines buffered before they go to the compressor.
const BUFFER_BYTES: usize = 256 * 1024;

/// Appends operations to a history in memory and, optionally, on disk.
pub struct Recorder {
    start: Instant,
    inner: Mutex<Inner>,
    /// Totals of client completions so far.
    pub counts: Counts,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Recorder")
            .field("ops", &inner.ops.len())
            .field("file", &inner.sink.as_ref().map(|s| &s.path))
            .finish()
    }
}

struct Inner {
    ops: Vec<Op>,
    sink: Option<Sink>,
}

/// The history file being written.
struct Sink {
    path: PathBuf,
    out: BufWriter<zstd::stream::write::Encoder<'static, File>>,
    last_flush: Instant,
    /// The first write error: the file stops growing, and
    /// [`Recorder::finish`] reports it.
    error: Option<io::Error>,
}

impl Sink {
    fn append(&mut self, op: &Op) {
        if self.error.is_some() {
            return;
        }
        let written = serde_json::to_writer(&mut self.out, op)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(e) = written {
            self.error = Some(e);
        }
    }

    fn flush(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(e);
            }
        }
        self.last_flush = Instant::now();
    }
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
    /// A recorder whose clock starts now, keeping the history in memory.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                ops: Vec::new(),
                sink: None,
            }),
            counts: Counts::default(),
        }
    }

    /// A recorder that also writes the history to `path` (zstd-compressed
    /// JSON lines) as it grows. The file must not exist.
    pub fn to_file(path: &Path) -> io::Result<Recorder> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
        let mut encoder = zstd::stream::write::Encoder::new(file, ZSTD_LEVEL)?;
        encoder.include_checksum(true)?;
        let recorder = Recorder::new();
        recorder.lock().sink = Some(Sink {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(BUFFER_BYTES, encoder),
            last_flush: Instant::now(),
            error: None,
        });
        Ok(recorder)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what is buffered to the history file (a no-op without one).
    pub fn flush(&self) {
        if let Some(sink) = &mut self.lock().sink {
            sink.flush();
        }
    }

    /// Ends the history file's compressed stream and fsyncs it; later
    /// operations are kept in memory only. Reports the first write error.
    pub fn finish(&self) -> io::Result<()> {
        let Some(mut sink) = self.lock().sink.take() else {
            return Ok(());
        };
        sink.flush();
        if let Some(e) = sink.error {
            return Err(io::Error::new(
                e.kind(),
                format!("writing {}: {e}", sink.path.display()),
            ));
        }
        let context = |e: io::Error| {
            io::Error::new(e.kind(), format!("writing {}: {e}", sink.path.display()))
        };
        let encoder = sink.out.into_inner().map_err(|e| context(e.into_error()))?;
        let file = encoder.finish().map_err(context)?;
        file.sync_all().map_err(context)
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
        let mut inner = self.lock();
        let index = inner.ops.len() as u64;
        let op = Op {
            index,
            time_ns: self.start.elapsed().as_nanos() as u64,
            process,
            kind: event.kind,
            f: event.f,
            key: event.key,
            value: event.value,
            node: event.node,
            error: event.error,
        };
        if let Some(sink) = &mut inner.sink {
            sink.append(&op);
            if process == Process::Nemesis || sink.last_flush.elapsed() >= FLUSH_EVERY {
                sink.flush();
            }
        }
        inner.ops.push(op);
        index
    }

    /// Records a nemesis event (type `info`); the history file is flushed.
    pub fn nemesis(&self, f: &str, value: Value) -> u64 {
        self.record(Process::Nemesis, Event::new(OpType::Info, f, value))
    }

    /// A copy of the history so far.
    pub fn history(&self) -> History {
        History::new(self.lock().ops.clone())
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

    fn read(c: u64) -> Event {
        Event::new(OpType::Ok, "read", Value::from(c))
    }

    #[test]
    fn the_file_holds_every_operation_once_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl.zst");
        let recorder = Recorder::to_file(&path).unwrap();
        for p in 0..1000 {
            recorder.record(
                Process::Client(p),
                Event::new(OpType::Invoke, "read", Value::Null),
            );
            recorder.record(Process::Client(p), read(p));
        }
        recorder.finish().unwrap();
        let on_disk = History::read_jsonl(&path).unwrap();
        assert_eq!(on_disk, recorder.history());
        assert_eq!(on_disk.cut, None);
        assert!(
            Recorder::to_file(&path).is_err(),
            "an existing file is kept"
        );
    }

    #[test]
    fn a_nemesis_event_puts_everything_before_it_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl.zst");
        let recorder = Recorder::to_file(&path).unwrap();
        recorder.record(
            Process::Client(0),
            Event::new(OpType::Invoke, "read", Value::Null),
        );
        recorder.record(Process::Client(0), read(1));
        recorder.nemesis("kill", serde_json::json!(["n1"]));
        // Buffered, not yet flushed: lost if the harness dies now.
        recorder.record(
            Process::Client(1),
            Event::new(OpType::Invoke, "read", Value::Null),
        );
        // The harness dies here: the stream is never finished.
        let prefix = History::read_jsonl(&path).unwrap();
        assert_eq!(prefix.ops, recorder.history().ops[..3]);
        assert_eq!(
            prefix.cut.as_ref().map(|c| c.stream_ended_early),
            Some(true),
            "{prefix:?}"
        );
        recorder.flush();
        let flushed = History::read_jsonl(&path).unwrap();
        assert_eq!(flushed.ops.len(), 4);
    }
}
