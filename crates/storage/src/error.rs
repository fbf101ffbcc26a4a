//! The crate's error type.

use std::path::PathBuf;

/// The result type of the store's fallible operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the store. Messages name the file, offset
/// or index involved and say what to do.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// An I/O call failed.
    #[error("storage I/O failed: {op} on {path}: {source} (check the disk, free space and permissions of the data directory)")]
    Io {
        /// What the store was doing, e.g. "fsync segment".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Data on disk failed a check (checksum, length, header, order) somewhere
    /// it cannot be a torn write, so the store refuses to start rather than
    /// drop records.
    #[error("corrupt storage file {path} at byte offset {offset}: {reason}. The store refuses to start rather than silently drop data. Copy the data directory before changing anything in it. Then restore it from a backup; or, for a node of a replicated cluster, start it on a new, empty data directory so that it copies the others' data, one node at a time and only once `mimeo status` shows the other nodes up and caught up (they must hold every acknowledged write). Moving the damaged file aside loses its records and, for a segment, every record after it")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// The byte offset of the damaged frame or header.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// An appended record does not continue the log.
    #[error("append out of order: expected log index {expected}, got {got}; records must continue the log at last_position().index + 1 with no gaps")]
    NonContiguous {
        /// The index the next record must have.
        expected: u64,
        /// The index it had.
        got: u64,
    },
    /// An appended record has a lower term than the record before it.
    #[error("append at log index {index} has term {term}, lower than the previous record's term {previous}; terms must not decrease along the log")]
    TermDecreased {
        /// The index of the offending record.
        index: u64,
        /// Its term.
        term: u64,
        /// The term of the record before it.
        previous: u64,
    },
    /// The requested log index is at or below the compaction floor.
    #[error("log index {requested} has been compacted into the snapshot; the first index still in the log is {first_available}; send the state (Store::scan) instead of log records")]
    Compacted {
        /// The index asked for.
        requested: u64,
        /// The lowest index still readable with `read_log`.
        first_available: u64,
    },
    /// An earlier write or fsync failed, so what reached the disk is unknown;
    /// the store refuses further writes and durability waits.
    #[error("the store is poisoned: an earlier write or fsync failed, so it is unknown what reached the disk; it refuses further writes. Fix the disk problem and restart the process: recovery will rebuild the state from what is on disk")]
    Poisoned,
    /// A record's encoding is larger than [`MAX_RECORD_BYTES`](crate::MAX_RECORD_BYTES).
    #[error("record at log index {index} encodes to {bytes} bytes, more than the maximum of {max}; split the value")]
    RecordTooLarge {
        /// The record's index.
        index: u64,
        /// Its encoded size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// `wait_durable` was asked about an index that has not been written.
    #[error("cannot wait for log index {requested} to be durable: the log only reaches index {last}; append it first")]
    NotWritten {
        /// The index asked for.
        requested: u64,
        /// The last index written.
        last: u64,
    },
    /// An [`Options`](crate::Options) field has a value the store cannot use.
    #[error("invalid storage option {field}: {reason}")]
    InvalidOptions {
        /// The field, e.g. `compact_min_garbage_ratio`.
        field: &'static str,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// Another process (or another open store in this process) holds the
    /// data directory's lock ([`DirLock`](crate::DirLock)).
    #[error("data directory {} is in use: process {} holds its lock ({}/LOCK). One data directory serves one process at a time: stop that process first, or give this one another data directory. Do not delete the LOCK file to get in: the lock lives on the open file, so deleting it would let two processes write the same log, which loses acknowledged writes", dir.display(), pid.map_or_else(|| "(pid unknown)".to_owned(), |p| p.to_string()), dir.display())]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The pid the holder wrote into the lock file, if it could be read.
        pid: Option<u32>,
    },
    /// A frame read for a key holds another key's record (or another log
    /// index): the file changed behind the store's back.
    #[error("storage file {path} at byte offset {offset} holds {found}, but the in-memory index expects {expected} there: the file was changed behind the store's back (another process writing to this data directory, or damage). The read is refused rather than answered with another key's value. Make sure no other process uses the directory, then restart this one: recovery rebuilds the index from what is on disk")]
    IndexMismatch {
        /// The file read.
        path: PathBuf,
        /// The frame's offset.
        offset: u64,
        /// What the index expected (key and log index).
        expected: String,
        /// What the frame holds.
        found: String,
    },
    /// A value could not be encoded.
    #[error("could not encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        reason: String,
    },
}

/// Wraps an `io::Error` with the operation and path, for `map_err`.
pub(crate) fn io_err(op: &'static str, path: PathBuf) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { op, path, source }
}

/// A [`Error::Corrupt`] for `path` at `offset`.
pub(crate) fn corrupt(path: PathBuf, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path,
        offset,
        reason: reason.into(),
    }
}
