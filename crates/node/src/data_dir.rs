//! What a data directory was created for.
//!
//! A data directory holds one node's data in one mode: a standalone
//! directory served in leader-follower mode would have its keys replicated
//! cluster-wide, and a leader-follower directory served standalone would
//! answer from a log it cannot read as key-value state. So the node records
//! the mode, cluster id and node id in [`IDENTITY_FILE`] when it creates the
//! directory, and refuses at start-up a config that asks for anything else.
//!
//! The file is small, versioned JSON, one line, written durably through the
//! storage crate's [`Backend`] (temporary file, fsync, rename, fsync of the
//! directory: [`Backend::write_file_durably`]):
//!
//! ```text
//! {"format":1,"mode":"standalone","cluster_id":"mimeo","node_id":"n1"}
//! ```
//!
//! `format` is bumped whenever a field changes meaning or a field is added;
//! a build refuses a format it does not know. A directory that has data
//! but no file was made by a version of mimeo before the file existed: it is
//! adopted (the file is written for the config that opens it) with a
//! warning in the log.

use std::fmt;
use std::path::{Path, PathBuf};

use mimeo_storage::{Backend, LOCK_FILE};
use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;

/// The file, in the data directory, that records what it was created for.
pub(crate) const IDENTITY_FILE: &str = "mimeo-node.json";

/// The format of [`IDENTITY_FILE`] this build writes and reads.
const FORMAT: u32 = 1;

/// The contents of [`IDENTITY_FILE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Identity {
    format: u32,
    mode: String,
    cluster_id: String,
    node_id: String,
}

impl Identity {
    /// What `config` asks for.
    pub(crate) fn of(config: &NodeConfig) -> Identity {
        Identity {
            format: FORMAT,
            mode: config.mode.to_string(),
            cluster_id: config.cluster_id.clone(),
            node_id: config.node_id.clone(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).expect("an identity always encodes");
        bytes.push(b'\n');
        bytes
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mode {}, node {}, cluster {}",
            self.mode, self.node_id, self.cluster_id
        )
    }
}

/// Why a data directory cannot be served with a config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DataDirError {
    /// The directory was created for another mode, cluster or node.
    #[error("data directory {dir} was created for {recorded}; this config asks for {asked}. A data directory only serves the mode, cluster and node that created it (its data would be misread or replicated where it does not belong). Point data_dir at another directory (a new one is created for this config), or change the config back. If the data in {dir} is no longer wanted, move the directory aside rather than deleting it, until you are sure no acknowledged write exists only there")]
    Mismatch {
        /// The data directory.
        dir: PathBuf,
        /// What its identity file says.
        recorded: Box<Identity>,
        /// What the config asks for.
        asked: Box<Identity>,
    },
    /// The identity file exists but cannot be used.
    #[error("{path}: {reason}. The file records what the data directory was created for; mimeo writes it once and never changes it: restore it from a backup, or check that this mimeo is at least as new as the one that wrote it")]
    Unreadable {
        /// The identity file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing the identity file failed.
    #[error(
        "{op} {path}: {source} (check the disk, free space and permissions of the data directory)"
    )]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What [`check`] found, for [`record`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// The directory records what the config asks for.
    Matches,
    /// No identity file: a new directory (`has_data == false`), or one made
    /// by an older mimeo.
    Missing {
        /// Whether the directory holds any file besides the lock.
        has_data: bool,
    },
}

/// Compares the identity recorded in `backend`'s directory with what
/// `config` asks for. Reads only, so it may run before the directory is
/// locked; [`record`] then writes what is missing, under the lock.
pub(crate) fn check(
    backend: &dyn Backend,
    dir: &Path,
    config: &NodeConfig,
) -> Result<Found, DataDirError> {
    let path = backend.path(IDENTITY_FILE);
    let bytes = backend
        .read_file(IDENTITY_FILE)
        .map_err(|source| DataDirError::Io {
            op: "reading",
            path: path.clone(),
            source,
        })?;
    let Some(bytes) = bytes else {
        let names = backend.list().map_err(|source| DataDirError::Io {
            op: "listing",
            path: dir.to_path_buf(),
            source,
        })?;
        let has_data = names
            .iter()
            .any(|n| n != LOCK_FILE && !n.starts_with(IDENTITY_FILE));
        return Ok(Found::Missing { has_data });
    };
    let unreadable = |reason: String| DataDirError::Unreadable {
        path: path.clone(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(format!("not valid JSON ({e})")))?;
    let format = value.get("format").and_then(serde_json::Value::as_u64);
    if format != Some(u64::from(FORMAT)) {
        return Err(unreadable(match format {
            Some(f) => format!("format {f} is not one this build reads (it reads format {FORMAT})"),
            None => "it has no numeric \"format\" field".to_owned(),
        }));
    }
    let recorded: Identity = serde_json::from_value(value)
        .map_err(|e| unreadable(format!("not a format {FORMAT} identity ({e})")))?;
    let asked = Identity::of(config);
    if recorded != asked {
        return Err(DataDirError::Mismatch {
            dir: dir.to_path_buf(),
            recorded: Box::new(recorded),
            asked: Box::new(asked),
        });
    }
    Ok(Found::Matches)
}

/// Writes the identity file if [`check`] found none: quietly in a new
/// directory, with a warning in one made by an older mimeo (adopted).
pub(crate) fn record(
    backend: &dyn Backend,
    dir: &Path,
    found: &Found,
    config: &NodeConfig,
) -> Result<(), DataDirError> {
    let Found::Missing { has_data } = *found else {
        return Ok(());
    };
    let identity = Identity::of(config);
    backend
        .write_file_durably(IDENTITY_FILE, &identity.encode())
        .map_err(|source| DataDirError::Io {
            op: "writing",
            path: backend.path(IDENTITY_FILE),
            source,
        })?;
    if has_data {
        tracing::warn!(
            dir = %dir.display(),
            %identity,
            file = IDENTITY_FILE,
            "adopted a data directory made by an older mimeo, which did not record what it was created for: it is now recorded as this config's, and other modes, clusters and nodes will be refused"
        );
    } else {
        tracing::info!(dir = %dir.display(), %identity, "created the data directory");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use mimeo_storage::FsBackend;

    fn config(mode: Mode) -> NodeConfig {
        NodeConfig {
            mode,
            node_id: "n1".into(),
            cluster_id: "c1".into(),
            ..NodeConfig::default()
        }
    }

    #[test]
    fn the_identity_file_is_pinned_by_golden_bytes() {
        assert_eq!(
            Identity::of(&config(Mode::Standalone)).encode(),
            b"{\"format\":1,\"mode\":\"standalone\",\"cluster_id\":\"c1\",\"node_id\":\"n1\"}\n"
        );
    }

    #[test]
    fn a_new_directory_is_recorded_and_then_refused_to_another_mode() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FsBackend::new(dir.path()).unwrap();
        let standalone = config(Mode::Standalone);
        let found = check(&backend, dir.path(), &standalone).unwrap();
        assert_eq!(found, Found::Missing { has_data: false });
        record(&backend, dir.path(), &found, &standalone).unwrap();
        assert_eq!(
            check(&backend, dir.path(), &standalone).unwrap(),
            Found::Matches
        );

        let err = check(&backend, dir.path(), &config(Mode::LeaderFollower)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("was created for mode standalone, node n1, cluster c1")
                && message.contains("asks for mode leader-follower, node n1, cluster c1"),
            "{message}"
        );
        let other_node = NodeConfig {
            node_id: "n2".into(),
            ..standalone.clone()
        };
        assert!(matches!(
            check(&backend, dir.path(), &other_node),
            Err(DataDirError::Mismatch { .. })
        ));
    }

    #[test]
    fn a_directory_with_data_and_no_file_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("seg-00000000000000000001.log"), b"x").unwrap();
        let backend = FsBackend::new(dir.path()).unwrap();
        let lf = config(Mode::LeaderFollower);
        let found = check(&backend, dir.path(), &lf).unwrap();
        assert_eq!(found, Found::Missing { has_data: true });
        record(&backend, dir.path(), &found, &lf).unwrap();
        assert_eq!(check(&backend, dir.path(), &lf).unwrap(), Found::Matches);
    }

    #[test]
    fn an_unknown_format_or_damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let backend = FsBackend::new(dir.path()).unwrap();
        let c = config(Mode::Standalone);
        std::fs::write(
            dir.path().join(IDENTITY_FILE),
            "{\"format\":2,\"mode\":\"x\"}\n",
        )
        .unwrap();
        let err = check(&backend, dir.path(), &c).unwrap_err().to_string();
        assert!(err.contains("format 2"), "{err}");
        std::fs::write(dir.path().join(IDENTITY_FILE), "{\"form").unwrap();
        assert!(matches!(
            check(&backend, dir.path(), &c),
            Err(DataDirError::Unreadable { .. })
        ));
    }
}
