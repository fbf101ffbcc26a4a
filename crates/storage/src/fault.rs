//! [`FsyncFaultBackend`]: a backend whose log fsyncs fail with `EIO` on
//! demand, to test what the store and a node do when the disk fails.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::{Backend, BackendFile};
use crate::error::Error;
use crate::format::{classify, FileKind};
use crate::lock::DirLock;

/// The name of the trigger file of [`FsyncFaultBackend`].
pub const FAIL_FSYNC_FILE: &str = "fail-fsync";

/// Wraps a backend so that, **while the file [`FAIL_FSYNC_FILE`] exists in
/// the data directory**, every `sync_data` of a log segment fails with
/// `EIO` (after the data was handed to the OS, as a failing disk does).
/// Everything else passes through. **A test aid**: a node turns it on with
/// `storage.inject_fsync_errors = true`, and a test (in process or not)
/// creates and removes the trigger file to make the disk fail and recover.
///
/// Only segment fsyncs fail, so that what the store writes when it learns
/// of the failure (its synced-through record, see the crate docs) still
/// reaches the disk: the failure of one file's writes, as a bad region of a
/// disk fails them.
pub struct FsyncFaultBackend {
    inner: Arc<dyn Backend>,
    trigger: PathBuf,
}

impl fmt::Debug for FsyncFaultBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsyncFaultBackend")
            .field("trigger", &self.trigger)
            .finish_non_exhaustive()
    }
}

impl FsyncFaultBackend {
    /// Wraps `inner`; the trigger is `inner.path(FAIL_FSYNC_FILE)`.
    pub fn new(inner: Arc<dyn Backend>) -> FsyncFaultBackend {
        let trigger = inner.path(FAIL_FSYNC_FILE);
        FsyncFaultBackend { inner, trigger }
    }

    fn wrap(&self, name: &str, file: Arc<dyn BackendFile>) -> Arc<dyn BackendFile> {
        if matches!(classify(name), FileKind::Segment(_)) {
            Arc::new(FaultFile {
                inner: file,
                trigger: self.trigger.clone(),
            })
        } else {
            file
        }
    }
}

impl Backend for FsyncFaultBackend {
    fn list(&self) -> io::Result<Vec<String>> {
        self.inner.list()
    }
    fn open(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        Ok(self.wrap(name, self.inner.open(name)?))
    }
    fn create(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        Ok(self.wrap(name, self.inner.create(name)?))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.inner.sync_dir()
    }
    fn path(&self, name: &str) -> PathBuf {
        self.inner.path(name)
    }
    fn lock(&self) -> Result<Option<DirLock>, Error> {
        self.inner.lock()
    }
}

struct FaultFile {
    inner: Arc<dyn BackendFile>,
    trigger: PathBuf,
}

impl BackendFile for FaultFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        if self.trigger.exists() {
            return Err(nix::errno::Errno::EIO.into());
        }
        self.inner.sync_data()
    }
}
