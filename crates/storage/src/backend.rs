//! The file seam: every byte the store reads or writes goes through these
//! two traits, so tests can swap in a backend that simulates power loss.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::lock::DirLock;

/// A flat directory of files, as the store sees it.
///
/// Creating, renaming or removing a file is durable only after
/// [`sync_dir`](Backend::sync_dir) returns; the store calls it wherever a
/// directory change must survive a power cut.
pub trait Backend: Send + Sync {
    /// Names (not paths) of the regular files in the directory, in any order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> io::Result<Arc<dyn BackendFile>>;
    /// Creates a file for reading and writing, truncating it if it exists.
    fn create(&self, name: &str) -> io::Result<Arc<dyn BackendFile>>;
    /// Removes a file. Open handles keep working.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes every earlier create, rename and remove durable (fsync of the
    /// directory).
    fn sync_dir(&self) -> io::Result<()>;
    /// A path for `name`, used in error messages and logs.
    fn path(&self, name: &str) -> PathBuf;
    /// Takes the exclusive lock on the directory, for as long as the
    /// returned [`DirLock`] lives; [`Store::open_with_backend`](crate::Store::open_with_backend)
    /// holds it for the store's lifetime. Fails with
    /// [`Error::Locked`](crate::Error::Locked) when another holder has it.
    ///
    /// The default takes no lock (`Ok(None)`): right for backends that
    /// are not a directory other processes can see, such as
    /// [`sim::SimBackend`](crate::sim::SimBackend).
    fn lock(&self) -> Result<Option<DirLock>, Error> {
        Ok(None)
    }

    /// Replaces the file `name` by `bytes` durably and atomically: writes
    /// `<name>.tmp`, fsyncs it, renames it over `name` and fsyncs the
    /// directory. A crash leaves either the old file or the new one (and
    /// perhaps the temporary file, which the next call replaces). For small
    /// metadata files; [`replace_file_with`](Backend::replace_file_with)
    /// streams large ones.
    fn write_file_durably(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.replace_file_with(name, &mut |out| out.write_all(bytes))
    }

    /// Replaces the file `name` durably and atomically by what `write`
    /// writes, streamed through a buffer of [`REPLACE_BUFFER_BYTES`], so
    /// memory stays bounded whatever the file's size.
    ///
    /// The steps, each through this backend (so a simulated power cut can
    /// fall between any two of them):
    ///
    /// 1. create `<name>.tmp` (truncating a leftover one);
    /// 2. `write` fills it, from offset 0;
    /// 3. fsync it ([`BackendFile::sync_data`]);
    /// 4. rename it over `name`;
    /// 5. fsync the directory ([`sync_dir`](Backend::sync_dir)).
    ///
    /// When this returns `Ok`, the new contents survive a power cut. A cut
    /// (or an error) at any earlier point leaves `name` as it was (absent,
    /// or the old contents, whole) — never a mix — and perhaps the
    /// temporary file, which readers must ignore and the next replacement
    /// truncates. An error from `write` is returned as is, after step 2;
    /// `name` is untouched.
    ///
    /// Every durable metadata file of a replicator (hard state, snapshot,
    /// origin vectors, hints, trees) goes through this, so power-cut tests
    /// over [`SimBackend`](crate::sim::SimBackend) or
    /// [`PowerLossBackend`](crate::PowerLossBackend) see it.
    ///
    /// ```
    /// use std::io::Write as _;
    /// use mimeo_storage::{sim::{SimBackend, Unsynced}, Backend};
    ///
    /// let disk = SimBackend::new();
    /// disk.replace_file_with("meta", &mut |out| {
    ///     out.write_all(b"header")?;
    ///     out.write_all(b" and body")
    /// })?;
    /// let after_a_cut = disk.reboot(Unsynced::Lost);
    /// assert_eq!(after_a_cut.read_file("meta")?.as_deref(), Some(&b"header and body"[..]));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    fn replace_file_with(
        &self,
        name: &str,
        write: &mut dyn FnMut(&mut dyn io::Write) -> io::Result<()>,
    ) -> io::Result<()> {
        let tmp = format!("{name}.tmp");
        let file = self.create(&tmp)?;
        let mut out = io::BufWriter::with_capacity(REPLACE_BUFFER_BYTES, FileCursor::new(&*file));
        write(&mut out)?;
        out.flush()?;
        drop(out);
        file.sync_data()?;
        drop(file);
        self.rename(&tmp, name)?;
        self.sync_dir()
    }

    /// The whole contents of the file `name`, or `None` if there is none.
    /// For small files; read a large one with [`open`](Backend::open) and a
    /// [`FileCursor`].
    fn read_file(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let file = match self.open(name) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0; file.len()? as usize];
        file.read_at(&mut buf, 0)?;
        Ok(Some(buf))
    }
}

/// The buffer [`Backend::replace_file_with`] writes through: each full
/// buffer is one [`BackendFile::write_at`].
pub const REPLACE_BUFFER_BYTES: usize = 64 << 10;

/// A position in a [`BackendFile`], read and written as a stream
/// ([`io::Read`], [`io::Write`]): each call is one positioned
/// [`read_at`](BackendFile::read_at) or [`write_at`](BackendFile::write_at)
/// at the cursor, which then advances. Unbuffered: wrap it in an
/// [`io::BufReader`] or [`io::BufWriter`] for many small calls.
///
/// ```
/// use std::io::{Read as _, Write as _};
/// use mimeo_storage::{sim::SimBackend, Backend, FileCursor};
///
/// let disk = SimBackend::new();
/// let file = disk.create("f")?;
/// FileCursor::new(&*file).write_all(b"abcdef")?;
/// let mut tail = String::new();
/// FileCursor::at(&*file, 2).read_to_string(&mut tail)?;
/// assert_eq!(tail, "cdef");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct FileCursor<'a> {
    file: &'a dyn BackendFile,
    offset: u64,
}

impl fmt::Debug for FileCursor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCursor")
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl<'a> FileCursor<'a> {
    /// A cursor at the start of `file`.
    pub fn new(file: &'a dyn BackendFile) -> FileCursor<'a> {
        FileCursor::at(file, 0)
    }

    /// A cursor at `offset` in `file`.
    pub fn at(file: &'a dyn BackendFile, offset: u64) -> FileCursor<'a> {
        FileCursor { file, offset }
    }

    /// Where the next read or write happens.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl io::Write for FileCursor<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_at(buf, self.offset)?;
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Read for FileCursor<'_> {
    /// Reads up to the end of the file; `Ok(0)` there.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.file.len()?.saturating_sub(self.offset);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if n > 0 {
            self.file.read_at(&mut buf[..n], self.offset)?;
            self.offset += n as u64;
        }
        Ok(n)
    }
}

/// One open file.
#[allow(
    clippy::len_without_is_empty,
    reason = "the length is an I/O call the store makes once per file; emptiness is never asked"
)]
pub trait BackendFile: Send + Sync {
    /// The current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` if the file ends
    /// first.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's contents and length durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
}

/// The real backend: a directory on the local file system, through `std::fs`
/// (positioned reads and writes, `File::sync_data`, and an fsync of the
/// directory itself for [`Backend::sync_dir`]).
pub struct FsBackend {
    dir: PathBuf,
}

impl fmt::Debug for FsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FsBackend").field("dir", &self.dir).finish()
    }
}

impl FsBackend {
    /// Uses `dir`, creating it (and its parents) if missing. Every
    /// directory it creates is made durable by an fsync of its parent.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<FsBackend> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.is_dir()).collect();
            std::fs::create_dir_all(&dir)?;
            for created in missing.into_iter().rev() {
                let parent = match created.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(FsBackend { dir })
    }

    /// The directory this backend works in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Backend for FsBackend {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join(name))?;
        Ok(Arc::new(FsFile { file }))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.dir.join(name))?;
        Ok(Arc::new(FsFile { file }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        std::fs::remove_file(self.dir.join(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::rename(self.dir.join(from), self.dir.join(to))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn lock(&self) -> Result<Option<DirLock>, Error> {
        DirLock::acquire(&self.dir).map(Some)
    }
}

struct FsFile {
    file: File,
}

impl BackendFile for FsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_missing_parents_and_reads_back_what_it_wrote() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/data");
        let backend = FsBackend::new(&dir).unwrap();
        assert!(dir.is_dir());
        assert_eq!(backend.dir(), dir);

        let file = backend.create("seg.tmp").unwrap();
        file.write_at(b"hello", 0).unwrap();
        file.write_at(b"!", 5).unwrap();
        file.sync_data().unwrap();
        backend.rename("seg.tmp", "seg").unwrap();
        backend.sync_dir().unwrap();
        assert_eq!(backend.list().unwrap(), vec!["seg".to_owned()]);

        let file = backend.open("seg").unwrap();
        assert_eq!(file.len().unwrap(), 6);
        let mut buf = [0u8; 6];
        file.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello!");
        let err = file.read_at(&mut buf, 3).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        file.set_len(2).unwrap();
        assert_eq!(file.len().unwrap(), 2);
        backend.remove("seg").unwrap();
        assert!(backend.list().unwrap().is_empty());

        assert_eq!(backend.read_file("meta").unwrap(), None);
        backend.write_file_durably("meta", b"one").unwrap();
        backend.write_file_durably("meta", b"two").unwrap();
        assert_eq!(
            backend.read_file("meta").unwrap().as_deref(),
            Some(&b"two"[..])
        );
        assert_eq!(backend.list().unwrap(), vec!["meta".to_owned()]);
    }

    #[test]
    fn a_streamed_replace_is_atomic_and_a_failed_one_leaves_the_old_file() {
        use std::io::Read as _;
        let dir = tempfile::tempdir().unwrap();
        let backend = FsBackend::new(dir.path()).unwrap();
        // Several buffers' worth, in small writes.
        let line = b"0123456789abcdef";
        let lines = 3 * REPLACE_BUFFER_BYTES / line.len() + 7;
        backend
            .replace_file_with("big", &mut |out| {
                for _ in 0..lines {
                    out.write_all(line)?;
                }
                Ok(())
            })
            .unwrap();
        let file = backend.open("big").unwrap();
        assert_eq!(file.len().unwrap(), (lines * line.len()) as u64);
        let mut tail = Vec::new();
        let mut cursor = FileCursor::at(&*file, 16 * 5 + 3);
        cursor.read_to_end(&mut tail).unwrap();
        assert!(tail.starts_with(b"3456789abcdef0123"));
        assert_eq!(cursor.offset(), file.len().unwrap());

        // The writer fails half way: the old file stays, whole.
        let err = backend
            .replace_file_with("big", &mut |out| {
                out.write_all(b"partial")?;
                Err(io::Error::other("the encoder failed"))
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "the encoder failed");
        let bytes = backend.read_file("big").unwrap().unwrap();
        assert_eq!(bytes.len(), lines * line.len());
        assert!(bytes.chunks(line.len()).all(|c| c == line));
    }
}
