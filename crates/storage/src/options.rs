//! Durability and compaction settings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// When the store calls `fsync` (`File::sync_data`) on the log.
///
/// In configuration files it is written in lower case: `always`, `batch` or
/// `never`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// [`Store::append`](crate::Store::append) returns only after an fsync
    /// covering the appended records. The records of one call share that
    /// fsync, but writers that take turns to append (as they must, since
    /// each append continues the log) fsync one after another: to share
    /// fsyncs between concurrent writers, use `Batch`.
    Always,
    /// Group commit: `append` returns after `write(2)`; the caller then calls
    /// [`Store::wait_durable`](crate::Store::wait_durable), and concurrent
    /// waiters share one fsync.
    #[default]
    Batch,
    /// No fsync on the write path: `wait_durable` returns at once. A power cut
    /// can lose acknowledged writes (a process crash cannot: the data is in
    /// the OS page cache). The log still opens after a power cut.
    Never,
}

impl FsyncMode {
    /// Every mode, in the order `always`, `batch`, `never`.
    pub const ALL: [FsyncMode; 3] = [FsyncMode::Always, FsyncMode::Batch, FsyncMode::Never];

    /// The lower-case name used in configuration files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            FsyncMode::Always => "always",
            FsyncMode::Batch => "batch",
            FsyncMode::Never => "never",
        }
    }
}

impl fmt::Display for FsyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when parsing an unknown [`FsyncMode`] name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseFsyncModeError {
    input: String,
}

impl fmt::Display for ParseFsyncModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown fsync mode `{}`: expected one of `always`, `batch`, `never`",
            self.input
        )
    }
}

impl std::error::Error for ParseFsyncModeError {}

impl FromStr for FsyncMode {
    type Err = ParseFsyncModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncMode::Always),
            "batch" => Ok(FsyncMode::Batch),
            "never" => Ok(FsyncMode::Never),
            other => Err(ParseFsyncModeError {
                input: other.to_owned(),
            }),
        }
    }
}

/// Settings for [`Store::open`](crate::Store::open).
#[derive(Clone, Debug)]
pub struct Options {
    /// When to fsync; see [`FsyncMode`]. Default: [`FsyncMode::Batch`].
    pub fsync: FsyncMode,
    /// A segment file is closed (fsynced) and a new one started once the next
    /// record would take it past this many bytes. A single record larger than
    /// this still fits: it gets a segment of its own. Default: 64 MiB.
    pub segment_bytes: u64,
    /// Automatic compaction runs only when at least this fraction (0.0 to
    /// 1.0) of the compactable bytes (closed segments plus the snapshot) is
    /// garbage (superseded records). Default: 0.5.
    pub compact_min_garbage_ratio: f64,
    /// Automatic compaction runs only when at least this many compactable
    /// bytes are garbage. `u64::MAX` disables automatic compaction.
    /// Default: 64 MiB.
    pub compact_min_bytes: u64,
    /// The active segment is extended with filler (`0xFF` bytes) this many bytes ahead of
    /// its records, so that the fsync of a group commit writes only the
    /// records' data blocks: no block allocation, no change of the file's
    /// length, no inode to write (on ext4, one device write instead of
    /// three; about a quarter less latency per fsync). The filler is an
    /// ordinary write, made durable by the next fsync; recovery reads it
    /// as the end of the log (and zeros as a lost record, never as filler), and a segment is cut back to its records when
    /// it is closed. 0 turns it off (the file grows with every append).
    /// Default: 1 MiB.
    pub preallocate_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fsync: FsyncMode::Batch,
            segment_bytes: 64 << 20,
            compact_min_garbage_ratio: 0.5,
            compact_min_bytes: 64 << 20,
            preallocate_bytes: 1 << 20,
        }
    }
}

impl Options {
    /// Checks the fields the store cannot work with.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let ratio = self.compact_min_garbage_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(Error::InvalidOptions {
                field: "compact_min_garbage_ratio",
                reason: format!("{ratio} is not a fraction between 0.0 and 1.0"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_mode_round_trips_through_strings() {
        for mode in FsyncMode::ALL {
            assert_eq!(mode.to_string().parse::<FsyncMode>(), Ok(mode));
        }
        assert_eq!(FsyncMode::default(), FsyncMode::Batch);
    }

    #[test]
    fn unknown_fsync_mode_names_the_valid_values() {
        let err = "sometimes".parse::<FsyncMode>().unwrap_err().to_string();
        assert!(err.contains("sometimes"), "{err}");
        for valid in ["always", "batch", "never"] {
            assert!(err.contains(valid), "{err}");
        }
        assert!("Always".parse::<FsyncMode>().is_err());
    }

    #[test]
    fn fsync_mode_serde_is_lowercase() {
        assert_eq!(
            serde_json::to_string(&FsyncMode::Never).unwrap(),
            "\"never\""
        );
        let mode: FsyncMode = serde_json::from_str("\"always\"").unwrap();
        assert_eq!(mode, FsyncMode::Always);
        assert!(serde_json::from_str::<FsyncMode>("\"Always\"").is_err());
    }

    #[test]
    fn garbage_ratio_must_be_a_fraction() {
        assert!(Options::default().validate().is_ok());
        for bad in [-0.1, 1.5, f64::NAN] {
            let options = Options {
                compact_min_garbage_ratio: bad,
                ..Options::default()
            };
            let err = options.validate().unwrap_err().to_string();
            assert!(err.contains("compact_min_garbage_ratio"), "{err}");
        }
    }
}
