//! [`DirLock`]: the exclusive lock a store holds on its data directory.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{io_err, Error};

/// The name of the lock file in a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// An exclusive lock on a data directory: `flock(LOCK_EX | LOCK_NB)` on its
/// [`LOCK_FILE`], held until the `DirLock` is dropped (or the process
/// exits, whatever way it exits: the kernel releases it with the file).
///
/// Two processes, or two opens in one process, cannot hold it at once: a
/// second [`DirLock::acquire`] fails with [`Error::Locked`], naming the
/// directory and the pid of the holder, which the holder writes into the
/// file once it has the lock. The pid is only for people: the lock is the
/// `flock`, not the file's existence, so a file left behind by a crashed
/// process is taken over without any clean-up.
pub struct DirLock {
    /// Kept open and locked: dropping it unlocks and closes the file.
    _file: Flock<File>,
    path: PathBuf,
}

impl fmt::Debug for DirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirLock").field("path", &self.path).finish()
    }
}

impl DirLock {
    /// Takes the lock on `dir` (which must exist), or fails with
    /// [`Error::Locked`] at once if another holder has it.
    pub fn acquire(dir: &Path) -> Result<DirLock, Error> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open lock file", path.clone()))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                    pid,
                });
            }
            Err((_, errno)) => return Err(io_err("lock data directory", path)(errno.into())),
        };
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())
        };
        write_pid(&mut file).map_err(io_err("write lock file", path.clone()))?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        match DirLock::acquire(dir.path()) {
            Err(Error::Locked { dir: d, pid }) => {
                assert_eq!(d, dir.path());
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        let again = DirLock::acquire(dir.path()).unwrap();
        drop(again);
    }
}
