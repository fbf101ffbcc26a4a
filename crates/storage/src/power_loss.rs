//! [`PowerLossBackend`]: a real-disk backend that keeps unsynced bytes in
//! process memory, so that SIGKILL simulates a power cut.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::backend::{Backend, BackendFile, FsBackend};
use crate::error::Error;
use crate::lock::DirLock;

/// A directory on the local file system whose unsynced file contents live
/// in process memory, so that killing the process (SIGKILL) loses exactly
/// what a power cut would.
///
/// **This is a test aid.** A plain SIGKILL loses nothing that reached the
/// page cache, so it cannot expose a missing or misplaced fsync. Jepsen
/// answers that with lazyfs, a FUSE file system that drops unsynced writes
/// on demand; this backend does the same inside the process, with
/// no kernel module, mount or root:
///
/// - `write_at` and `set_len` change an in-memory *overlay* of the file and
///   never the file itself;
/// - `read_at` and `len` see the file with the overlay applied, so the store
///   reads its own writes;
/// - `sync_data` writes the overlay into the file, empties it, then
///   fdatasyncs as [`FsBackend`] does;
/// - dropping a file or the backend discards the overlay: nothing is ever
///   flushed except by `sync_data`. Killing the process discards it too,
///   which is the point.
///
/// After a SIGKILL the directory therefore holds exactly the bytes that
/// were fsynced: the *strict* power-cut model, where every unsynced write
/// is lost (a real disk may keep some of them, or tear them; the
/// simulated [`sim::SimBackend`](crate::sim::SimBackend) explores those
/// outcomes in-process).
///
/// # The directory
///
/// Directory changes are held back too, as a file system may lose them at
/// a power cut until the directory is fsynced:
///
/// - `create` of a new name makes the file in a staging directory (a
///   subdirectory whose name starts with [`STAGING_DIR_PREFIX`], which
///   [`Backend::list`] never shows), not under its name;
/// - `rename` and `remove` change only the live directory in memory: the
///   backend's own `open`, `list` and `create` see them at once, the disk
///   does not;
/// - [`sync_dir`](Backend::sync_dir) performs the held-back changes on
///   disk, in the order they were made (linking each created file under
///   its name, renaming, removing), then fsyncs the directory.
///
/// After a kill the directory therefore names exactly what it named at
/// the last `sync_dir`: a file created since is gone (its synced bytes
/// with it), a file renamed since is back under its old name, a file
/// removed since is back. A kill in the middle of a `sync_dir` keeps a
/// prefix of the changes, as a real power cut may. The holder of the
/// directory lock removes staging directories earlier processes left
/// behind. `create` over an existing name empties that file at once (the
/// truncation is a change to the file, not to the directory), as before.
/// A file whose name changed since the last `sync_dir` stays open (its
/// overlay kept) until then, even without handles.
///
/// # Memory
///
/// The overlay holds every byte written since the file was last synced,
/// coalesced into contiguous extents. With `fsync = always` or `batch` that
/// is only what was written since the last (group) commit. With `fsync = never` it grows with the
/// write load until the active segment is closed — closing a segment, and
/// writing a snapshot during compaction, fsync and so empty it — so it is
/// bounded by about one segment ([`Options::segment_bytes`]) plus the
/// largest batch of records. [`PowerLossBackend::unsynced_bytes`] reports
/// it. Choose a small segment size for long runs under `never`.
///
/// [`Options::segment_bytes`]: crate::Options::segment_bytes
///
/// ```
/// use mimeo_storage::{Backend, FsBackend, PowerLossBackend};
///
/// let dir = tempfile::tempdir().unwrap();
/// let disk = PowerLossBackend::new(dir.path())?;
/// let file = disk.create("f")?;
/// disk.sync_dir()?; // the name is durable from here on
/// file.write_at(b"synced", 0)?;
/// file.sync_data()?;
/// file.write_at(b" and lost", 6)?;
/// assert_eq!(file.len()?, 15); // the writer sees its own writes
/// assert_eq!(disk.unsynced_bytes(), 9);
/// drop((file, disk)); // what a SIGKILL does: no flush
///
/// let file = FsBackend::new(dir.path())?.open("f")?;
/// let mut buf = vec![0; file.len()? as usize];
/// file.read_at(&mut buf, 0)?;
/// assert_eq!(buf, b"synced");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct PowerLossBackend {
    fs: FsBackend,
    /// The live directory and what of it is not yet on disk.
    names: Mutex<Names>,
    /// This backend's staging directory (a subdirectory of `fs`'s), where
    /// files created since the last [`sync_dir`](Backend::sync_dir) live
    /// until it links them under their names.
    staging: String,
}

/// The prefix of the staging directories a [`PowerLossBackend`] keeps its
/// not yet durably created files in, inside the directory it works in.
/// The holder of the directory's lock ([`Backend::lock`]) removes those
/// left behind by earlier processes: their files were lost with the power.
pub const STAGING_DIR_PREFIX: &str = ".mimeo-unsynced";

/// The live directory of a [`PowerLossBackend`].
///
/// The directory on disk holds the durable names (as of the last
/// `sync_dir`); `changed` says where the live names differ from it, and
/// `pending` lists the changes that turn the one into the other, in order.
#[derive(Default)]
struct Names {
    /// Open files by their name on disk, so that every handle to one file
    /// shares one overlay (a second `open` of a name must see the first
    /// handle's unsynced writes). Dead entries are pruned as files open.
    open: HashMap<String, Weak<LazyFile>>,
    /// Live names that differ from the disk's: bound to this file (which
    /// stays open until the next `sync_dir`), or removed (`None`).
    changed: HashMap<String, Option<Arc<LazyFile>>>,
    /// Directory changes since the last `sync_dir`, replayed on disk by it.
    pending: Vec<DirOp>,
    /// The number of the next staged file.
    next_staged: u64,
}

/// One directory change a [`PowerLossBackend`] holds back.
#[derive(Clone, Debug)]
enum DirOp {
    /// A created file, in the staging directory: link it under `name`.
    Link {
        staged: String,
        name: String,
    },
    Remove {
        name: String,
    },
    Rename {
        from: String,
        to: String,
    },
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no file named {name}"))
}

impl fmt::Debug for PowerLossBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerLossBackend")
            .field("dir", &self.fs.dir())
            .field("unsynced_bytes", &self.unsynced_bytes())
            .field("unsynced_dir_ops", &lock(&self.names).pending.len())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PowerLossBackend {
    /// Uses `dir`, creating it (and its parents) if missing, as
    /// [`FsBackend::new`] does.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<PowerLossBackend> {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
        Ok(PowerLossBackend {
            fs: FsBackend::new(dir)?,
            names: Mutex::new(Names::default()),
            staging: format!("{STAGING_DIR_PREFIX}.{}.{instance}", std::process::id()),
        })
    }

    /// The directory this backend works in.
    pub fn dir(&self) -> &Path {
        self.fs.dir()
    }

    /// Bytes written to files reachable by a live name and not yet synced:
    /// what a SIGKILL would lose now, and the memory the overlays hold.
    /// (Files that were removed or renamed away while open are not
    /// counted.)
    pub fn unsynced_bytes(&self) -> u64 {
        let names = lock(&self.names);
        let bound = names.changed.values().flatten().cloned();
        let open = names
            .open
            .iter()
            .filter(|(name, _)| !names.changed.contains_key(*name))
            .filter_map(|(_, file)| file.upgrade());
        bound
            .chain(open)
            .map(|file| file.overlay().pending_bytes)
            .sum()
    }

    /// Directory changes (creates, renames, removes) made since the last
    /// [`sync_dir`](Backend::sync_dir): what a SIGKILL would undo now.
    pub fn unsynced_dir_ops(&self) -> usize {
        lock(&self.names).pending.len()
    }

    /// The live file named `name`: bound by a change not yet on disk, or
    /// the file on disk (opened, and shared with its other handles).
    fn resolve(&self, names: &mut Names, name: &str) -> io::Result<Arc<LazyFile>> {
        match names.changed.get(name) {
            Some(Some(file)) => return Ok(Arc::clone(file)),
            Some(None) => return Err(not_found(name)),
            None => {}
        }
        if let Some(open) = names.open.get(name).and_then(Weak::upgrade) {
            return Ok(open);
        }
        if name.starts_with(STAGING_DIR_PREFIX) {
            // Not a regular file of the directory (and `list` never names it).
            return Err(not_found(name));
        }
        let file = self.fs.open(name)?;
        let len = file.len()?;
        let lazy = Arc::new(LazyFile::new(file, len));
        names.open.retain(|_, weak| weak.strong_count() > 0);
        names.open.insert(name.to_owned(), Arc::downgrade(&lazy));
        Ok(lazy)
    }

    /// Performs one held-back directory change on disk.
    fn replay(&self, op: &DirOp) -> io::Result<()> {
        match op {
            DirOp::Link { staged, name } => self.fs.rename(staged, name),
            DirOp::Remove { name } => self.fs.remove(name),
            DirOp::Rename { from, to } => self.fs.rename(from, to),
        }
    }
}

impl Backend for PowerLossBackend {
    fn list(&self) -> io::Result<Vec<String>> {
        let names = lock(&self.names);
        let mut list: BTreeSet<String> = self.fs.list()?.into_iter().collect();
        for (name, file) in &names.changed {
            if file.is_some() {
                list.insert(name.clone());
            } else {
                list.remove(name);
            }
        }
        Ok(list.into_iter().collect())
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        let mut names = lock(&self.names);
        Ok(self.resolve(&mut names, name)?)
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        let mut names = lock(&self.names);
        match self.resolve(&mut names, name) {
            Ok(open) => {
                // The same file, emptied at once (see the type's docs): its
                // open handles must see that, and their unsynced writes
                // were to the old contents.
                open.file.set_len(0)?;
                open.overlay().reset(0);
                return Ok(open);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // A new file: it lives in the staging directory until `sync_dir`
        // links it under its name.
        std::fs::create_dir_all(self.fs.path(&self.staging))?;
        let staged = format!("{}/{}", self.staging, names.next_staged);
        names.next_staged += 1;
        let file = self.fs.create(&staged)?;
        let lazy = Arc::new(LazyFile::new(file, 0));
        names
            .changed
            .insert(name.to_owned(), Some(Arc::clone(&lazy)));
        names.pending.push(DirOp::Link {
            staged,
            name: name.to_owned(),
        });
        Ok(lazy)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut names = lock(&self.names);
        self.resolve(&mut names, name)?;
        names.changed.insert(name.to_owned(), None);
        names.pending.push(DirOp::Remove {
            name: name.to_owned(),
        });
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut names = lock(&self.names);
        let file = self.resolve(&mut names, from)?;
        names.changed.insert(from.to_owned(), None);
        names.changed.insert(to.to_owned(), Some(file));
        names.pending.push(DirOp::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
        });
        Ok(())
    }

    /// Performs the held-back directory changes on disk, in order, then
    /// fsyncs the directory. On an error the changes not yet performed
    /// stay held back (a later call retries them); the live directory is
    /// unchanged either way.
    fn sync_dir(&self) -> io::Result<()> {
        let mut names = lock(&self.names);
        let pending = std::mem::take(&mut names.pending);
        for (done, op) in pending.iter().enumerate() {
            if let Err(e) = self.replay(op) {
                names.pending = pending[done..].to_vec();
                return Err(e);
            }
        }
        // The disk now names what the live directory does.
        let changed: Vec<_> = names.changed.drain().collect();
        for (name, file) in changed {
            match file {
                Some(file) => names.open.insert(name, Arc::downgrade(&file)),
                None => names.open.remove(&name),
            };
        }
        self.fs.sync_dir()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.fs.path(name)
    }

    /// Takes the lock as [`FsBackend`] does, then removes the staging
    /// directories earlier holders left behind (files they created and
    /// never linked durably: lost with the power).
    fn lock(&self) -> Result<Option<DirLock>, Error> {
        let held = self.fs.lock()?;
        if let Ok(entries) = std::fs::read_dir(self.dir()) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(STAGING_DIR_PREFIX) && *name != *self.staging {
                    if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                        tracing::warn!(path = %entry.path().display(), error = %e,
                            "cannot remove a staging directory left by an earlier process");
                    }
                }
            }
        }
        Ok(held)
    }
}

/// The unsynced changes to one file.
///
/// The live image (what reads see) is, byte by byte below `len`: the byte
/// of the extent covering it if any, else the file's byte if it lies below
/// `cut`, else zero (a hole, or bytes a pending truncation removed).
#[derive(Debug)]
struct Overlay {
    /// The live length.
    len: u64,
    /// The length of the file on disk.
    file_len: u64,
    /// Bytes of the file on disk at or past this offset are not in the live
    /// image: a pending `set_len` cut them off. `cut <= file_len` and
    /// `cut <= len`.
    cut: u64,
    /// Unsynced writes, coalesced into non-overlapping extents keyed by
    /// their offset.
    extents: BTreeMap<u64, Vec<u8>>,
    /// Total length of the extents.
    pending_bytes: u64,
    /// Whether anything (a write or a `set_len`) awaits the next sync.
    dirty: bool,
}

impl Overlay {
    /// Nothing pending over a file of `len` bytes.
    fn reset(&mut self, len: u64) {
        *self = Overlay {
            len,
            file_len: len,
            cut: len,
            extents: BTreeMap::new(),
            pending_bytes: 0,
            dirty: false,
        };
    }

    fn write(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("write of {} bytes at offset {offset} overflows", data.len()),
            )
        })?;
        // The extent reaching `offset` from below is extended in place:
        // appends, the common case, copy only the new bytes.
        let (start, mut merged) = match self.extents.range(..=offset).next_back() {
            Some((&start, extent)) if start + extent.len() as u64 >= offset => {
                let extent = self.extents.remove(&start).expect("just found");
                (start, extent)
            }
            _ => (offset, Vec::new()),
        };
        self.pending_bytes -= merged.len() as u64;
        // Extents starting inside the write are absorbed; only the last can
        // reach past its end, and keeps that part.
        let absorbed: Vec<u64> = self
            .extents
            .range(offset + 1..=end)
            .map(|(&s, _)| s)
            .collect();
        let mut tail = None;
        for s in absorbed {
            let extent = self.extents.remove(&s).expect("just listed");
            self.pending_bytes -= extent.len() as u64;
            if s + extent.len() as u64 > end {
                tail = Some((s, extent));
            }
        }
        let at = (offset - start) as usize;
        if merged.len() < at + data.len() {
            merged.resize(at + data.len(), 0);
        }
        merged[at..at + data.len()].copy_from_slice(data);
        if let Some((s, extent)) = tail {
            merged.extend_from_slice(&extent[(end - s) as usize..]);
        }
        self.pending_bytes += merged.len() as u64;
        self.extents.insert(start, merged);
        self.len = self.len.max(end);
        self.dirty = true;
        Ok(())
    }

    fn set_len(&mut self, len: u64) {
        if len < self.len {
            let cut_off: Vec<u64> = self.extents.range(len..).map(|(&s, _)| s).collect();
            for s in cut_off {
                let extent = self.extents.remove(&s).expect("just listed");
                self.pending_bytes -= extent.len() as u64;
            }
            if let Some((&s, extent)) = self.extents.range_mut(..len).next_back() {
                let keep = (len - s) as usize;
                if extent.len() > keep {
                    self.pending_bytes -= (extent.len() - keep) as u64;
                    extent.truncate(keep);
                }
            }
            self.cut = self.cut.min(len);
        }
        self.len = len;
        self.dirty = true;
    }

    fn read(&self, file: &dyn BackendFile, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at offset {offset} past the end of a {}-byte file",
                        buf.len(),
                        self.len
                    ),
                )
            })?;
        let from_file = end.min(self.cut).saturating_sub(offset) as usize;
        if from_file > 0 {
            file.read_at(&mut buf[..from_file], offset)?;
        }
        buf[from_file..].fill(0);
        let first = match self.extents.range(..=offset).next_back() {
            Some((&s, _)) => s,
            None => offset,
        };
        for (&s, extent) in self.extents.range(first..end) {
            let e = s + extent.len() as u64;
            let (lo, hi) = (s.max(offset), e.min(end));
            if lo < hi {
                buf[(lo - offset) as usize..(hi - offset) as usize]
                    .copy_from_slice(&extent[(lo - s) as usize..(hi - s) as usize]);
            }
        }
        Ok(())
    }

    /// Writes the overlay into `file` and empties it. On error the overlay
    /// is kept, so reads stay correct whatever part reached the file.
    fn flush(&mut self, file: &dyn BackendFile) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if self.cut < self.file_len {
            file.set_len(self.cut)?;
            self.file_len = self.cut;
        }
        let mut written_to = self.cut;
        for (&s, extent) in &self.extents {
            file.write_at(extent, s)?;
            written_to = written_to.max(s + extent.len() as u64);
        }
        if written_to != self.len {
            file.set_len(self.len)?;
        }
        self.reset(self.len);
        Ok(())
    }
}

/// One open file of a [`PowerLossBackend`]: the real file plus its overlay.
struct LazyFile {
    file: Arc<dyn BackendFile>,
    overlay: Mutex<Overlay>,
}

impl LazyFile {
    fn new(file: Arc<dyn BackendFile>, len: u64) -> LazyFile {
        let mut overlay = Overlay {
            len: 0,
            file_len: 0,
            cut: 0,
            extents: BTreeMap::new(),
            pending_bytes: 0,
            dirty: false,
        };
        overlay.reset(len);
        LazyFile {
            file,
            overlay: Mutex::new(overlay),
        }
    }

    fn overlay(&self) -> MutexGuard<'_, Overlay> {
        lock(&self.overlay)
    }
}

// No `Drop`: dropping a file discards its overlay, as a power cut does.

impl BackendFile for LazyFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.overlay().len)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        // Held across the file read, so a concurrent flush cannot move
        // bytes from the overlay to the file under it.
        self.overlay().read(&*self.file, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.overlay().write(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.overlay().set_len(len);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        // The overlay goes to the page cache under the lock; the fdatasync
        // runs outside it, so writers carry on meanwhile (group commit
        // depends on that). Bytes they write go to the next overlay; bytes
        // flushed here are, until the fdatasync returns, unsynced bytes in
        // the page cache, which a real power cut may or may not keep: an
        // allowed outcome, and nothing was acknowledged on them yet.
        self.overlay().flush(&*self.file)?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::LOCK_FILE;

    fn contents(file: &dyn BackendFile) -> Vec<u8> {
        let mut buf = vec![0; file.len().unwrap() as usize];
        file.read_at(&mut buf, 0).unwrap();
        buf
    }

    /// What a plain `FsBackend` (the next process, after a kill) finds.
    fn on_disk(dir: &Path, name: &str) -> Vec<u8> {
        contents(&*FsBackend::new(dir).unwrap().open(name).unwrap())
    }

    /// As `pwrite` does: an empty write does not extend the file.
    fn write_model(model: &mut Vec<u8>, data: &[u8], offset: usize) {
        if data.is_empty() {
            return;
        }
        if model.len() < offset + data.len() {
            model.resize(offset + data.len(), 0);
        }
        model[offset..offset + data.len()].copy_from_slice(data);
    }

    /// Reference model: a byte vector for the live image, a copy of it
    /// taken at each sync for the durable one. Random writes (appends,
    /// overwrites, writes past the end), truncations, extensions, syncs and
    /// reads; after each step the file must read exactly as the live model,
    /// and after a kill the disk must hold exactly the durable one.
    #[test]
    fn matches_a_byte_vector_model_and_a_kill_keeps_only_synced_bytes() {
        let mut lost_something = false;
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let dir = tempfile::tempdir().unwrap();
            let backend = PowerLossBackend::new(dir.path()).unwrap();
            let file = backend.create("f").unwrap();
            backend.sync_dir().unwrap(); // the name is durable; the bytes are tested
            let mut live: Vec<u8> = Vec::new();
            let mut durable: Vec<u8> = Vec::new();
            for step in 0..300 {
                let context = format!("seed {seed}, step {step}");
                match rng.random_range(0..10) {
                    0..=5 => {
                        let len = rng.random_range(0..200);
                        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                        let offset = match rng.random_range(0..3) {
                            0 => live.len(),
                            1 => rng.random_range(0..=live.len()),
                            _ => live.len() + rng.random_range(0..100),
                        };
                        file.write_at(&data, offset as u64).unwrap();
                        write_model(&mut live, &data, offset);
                    }
                    6 => {
                        let len = rng.random_range(0..=live.len() + 50);
                        file.set_len(len as u64).unwrap();
                        live.resize(len, 0);
                    }
                    7 => {
                        file.sync_data().unwrap();
                        durable = live.clone();
                        assert_eq!(on_disk(dir.path(), "f"), durable, "{context}");
                        assert_eq!(backend.unsynced_bytes(), 0, "{context}");
                    }
                    _ => {
                        let offset = rng.random_range(0..=live.len());
                        let len = rng.random_range(0..=live.len() - offset);
                        let mut buf = vec![0xAA; len];
                        file.read_at(&mut buf, offset as u64).unwrap();
                        assert_eq!(buf, live[offset..offset + len], "{context}");
                        let mut past = vec![0; len + 1];
                        let err = file
                            .read_at(&mut past, (live.len() - len) as u64)
                            .unwrap_err();
                        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{context}");
                    }
                }
                assert_eq!(file.len().unwrap(), live.len() as u64, "{context}");
                assert_eq!(contents(&*file), live, "{context}");
                assert!(
                    backend.unsynced_bytes() <= live.len() as u64,
                    "{context}: overlapping writes must coalesce"
                );
            }
            lost_something |= live != durable;
            drop((file, backend)); // the kill
            assert_eq!(
                on_disk(dir.path(), "f"),
                durable,
                "seed {seed} after the kill"
            );
        }
        assert!(lost_something, "no seed left unsynced data to lose");
    }

    #[test]
    fn drop_flushes_nothing_and_sync_flushes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let backend = PowerLossBackend::new(dir.path()).unwrap();
        let file = backend.create("f").unwrap();
        backend.sync_dir().unwrap();
        file.write_at(b"0123456789", 0).unwrap();
        file.sync_data().unwrap();
        // A pending truncation and a rewrite past it: both lost at a kill.
        file.set_len(4).unwrap();
        file.write_at(b"xy", 6).unwrap();
        assert_eq!(contents(&*file), b"0123\0\0xy");
        assert_eq!(on_disk(dir.path(), "f"), b"0123456789");
        assert_eq!(backend.unsynced_bytes(), 2);
        drop((file, backend));
        assert_eq!(on_disk(dir.path(), "f"), b"0123456789");

        let backend = PowerLossBackend::new(dir.path()).unwrap();
        let file = backend.open("f").unwrap();
        assert_eq!(file.len().unwrap(), 10);
        file.set_len(4).unwrap();
        file.write_at(b"xy", 6).unwrap();
        file.sync_data().unwrap();
        assert_eq!(on_disk(dir.path(), "f"), b"0123\0\0xy");
        // Extending with set_len alone must reach the disk too.
        file.set_len(12).unwrap();
        file.sync_data().unwrap();
        assert_eq!(on_disk(dir.path(), "f"), b"0123\0\0xy\0\0\0\0");
    }

    #[test]
    fn every_handle_to_a_file_shares_its_unsynced_writes() {
        let dir = tempfile::tempdir().unwrap();
        let backend = PowerLossBackend::new(dir.path()).unwrap();
        let first = backend.create("a.tmp").unwrap();
        first.write_at(b"pending", 0).unwrap();
        assert_eq!(contents(&*backend.open("a.tmp").unwrap()), b"pending");

        backend.rename("a.tmp", "a").unwrap();
        assert!(backend.open("a.tmp").is_err());
        let second = backend.open("a").unwrap();
        assert_eq!(contents(&*second), b"pending");
        second.write_at(b"!", 7).unwrap();
        assert_eq!(contents(&*first), b"pending!");
        assert_eq!(backend.unsynced_bytes(), 8);

        // Creating over an open file empties it for every handle.
        let third = backend.create("a").unwrap();
        assert_eq!(first.len().unwrap(), 0);
        third.write_at(b"new", 0).unwrap();
        assert_eq!(contents(&*second), b"new");

        // A removed name opens afresh; the old handles keep their file.
        backend.remove("a").unwrap();
        assert!(backend.open("a").is_err());
        assert_eq!(contents(&*first), b"new");
        let fresh = backend.create("a").unwrap();
        assert_eq!(fresh.len().unwrap(), 0);
        assert_eq!(first.len().unwrap(), 3);
        // Only files reachable by name are counted.
        assert_eq!(backend.unsynced_bytes(), 0);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names = FsBackend::new(dir).unwrap().list().unwrap();
        names.sort();
        names
    }

    #[test]
    fn directory_changes_survive_a_kill_only_after_sync_dir() {
        let dir = tempfile::tempdir().unwrap();
        let backend = PowerLossBackend::new(dir.path().join("data")).unwrap();
        assert_eq!(backend.dir(), dir.path().join("data"));
        assert_eq!(backend.path("x"), dir.path().join("data/x"));
        let data = backend.dir().to_path_buf();
        for name in ["kept", "renamed", "removed"] {
            let file = backend.create(name).unwrap();
            file.write_at(name.as_bytes(), 0).unwrap();
            file.sync_data().unwrap();
        }
        assert_eq!(backend.unsynced_dir_ops(), 3);
        // Synced data, but no name on disk yet.
        assert!(names(&data).is_empty());
        backend.sync_dir().unwrap();
        assert_eq!(backend.unsynced_dir_ops(), 0);
        assert_eq!(names(&data), ["kept", "removed", "renamed"]);

        let new = backend.create("new").unwrap();
        new.write_at(b"fsynced, never linked", 0).unwrap();
        new.sync_data().unwrap();
        backend.rename("renamed", "moved").unwrap();
        backend.remove("removed").unwrap();
        // The backend sees its own changes at once...
        let mut live = backend.list().unwrap();
        live.sort();
        assert_eq!(live, ["kept", "moved", "new"]);
        assert!(backend.open("removed").is_err());
        assert_eq!(contents(&*backend.open("moved").unwrap()), b"renamed");
        assert_eq!(
            contents(&*backend.open("new").unwrap()),
            b"fsynced, never linked"
        );
        // ...the disk does not, and a kill undoes them.
        drop((new, backend));
        assert_eq!(names(&data), ["kept", "removed", "renamed"]);
        assert_eq!(on_disk(&data, "renamed"), b"renamed");

        // The same changes, then a sync_dir: they are on disk.
        let backend = PowerLossBackend::new(&data).unwrap();
        let _lock = backend.lock().unwrap();
        let new = backend.create("new").unwrap();
        new.write_at(b"linked", 0).unwrap();
        new.sync_data().unwrap();
        backend.rename("renamed", "moved").unwrap();
        backend.remove("removed").unwrap();
        backend.sync_dir().unwrap();
        drop((new, backend));
        assert_eq!(names(&data), [LOCK_FILE, "kept", "moved", "new"]);
        assert_eq!(on_disk(&data, "new"), b"linked");
        assert_eq!(on_disk(&data, "moved"), b"renamed");
        // Only this backend's staging directory is left; the lock holder
        // removed the first one's.
        let staging: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(STAGING_DIR_PREFIX)
            })
            .collect();
        assert_eq!(staging.len(), 1, "{staging:?}");
    }

    #[test]
    fn changes_are_replayed_in_order_at_sync_dir() {
        let dir = tempfile::tempdir().unwrap();
        let backend = PowerLossBackend::new(dir.path()).unwrap();
        let a = backend.create("a").unwrap();
        a.write_at(b"first a", 0).unwrap();
        a.sync_data().unwrap();
        // A name reused after a rename, a temporary file renamed over an
        // existing name, and a file created and removed unsynced.
        backend.rename("a", "b").unwrap();
        let again = backend.create("a").unwrap();
        again.write_at(b"second a", 0).unwrap();
        again.sync_data().unwrap();
        let tmp = backend.create("b.tmp").unwrap();
        tmp.write_at(b"new b", 0).unwrap();
        tmp.sync_data().unwrap();
        backend.rename("b.tmp", "b").unwrap();
        backend.create("gone").unwrap();
        backend.remove("gone").unwrap();
        backend.sync_dir().unwrap();
        assert_eq!(names(dir.path()), ["a", "b"]);
        assert_eq!(on_disk(dir.path(), "a"), b"second a");
        assert_eq!(on_disk(dir.path(), "b"), b"new b");
        // The old `a`, renamed to `b` and then replaced, is still open.
        assert_eq!(contents(&*a), b"first a");
    }

    /// `write_file_durably` is durable when it returns, names included.
    /// (Fails if its `sync_dir` is left out: the rename is lost.)
    #[test]
    fn a_durable_write_survives_a_kill_and_an_interrupted_one_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let backend = PowerLossBackend::new(dir.path()).unwrap();
        backend.write_file_durably("meta", b"one").unwrap();
        drop(backend);
        assert_eq!(on_disk(dir.path(), "meta"), b"one");

        let backend = PowerLossBackend::new(dir.path()).unwrap();
        backend.write_file_durably("meta", b"two").unwrap();
        // Interrupted before its rename reached the disk: the old file.
        let tmp = backend.create("meta.tmp").unwrap();
        tmp.write_at(b"three", 0).unwrap();
        tmp.sync_data().unwrap();
        backend.rename("meta.tmp", "meta").unwrap();
        assert_eq!(backend.read_file("meta").unwrap().unwrap(), b"three");
        drop((tmp, backend));
        assert_eq!(on_disk(dir.path(), "meta"), b"two");
        assert_eq!(names(dir.path()), ["meta"]);
    }
}
