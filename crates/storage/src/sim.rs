//! A simulated disk for power-cut tests.
//!
//! [`SimBackend`] keeps, for every file, a *live* image (what reads see, the
//! page cache) and a *durable* image (what survives a power cut), and for
//! the directory a live and a durable name table:
//!
//! - `write_at` and `set_len` change the live image only;
//!   [`BackendFile::sync_data`] copies the file's live image to its durable
//!   image;
//! - `create`, `rename` and `remove` change the live name table only;
//!   [`Backend::sync_dir`] makes every earlier one durable. A file that was
//!   fsynced but whose creation never reached the durable name table is lost.
//!
//! A power cut is scheduled by operation count
//! ([`schedule_power_cut`](SimBackend::schedule_power_cut)) or done at once
//! ([`power_cut`](SimBackend::power_cut)): from then on every operation,
//! reads included, fails, so a store running on the backend stops where
//! the cut caught it, possibly in the middle of a compaction or a
//! truncation. [`reboot`](SimBackend::reboot) then returns a new backend
//! holding what survived, and the test opens a store on it.
//!
//! What survives of unsynced changes is chosen by [`Unsynced`]: nothing
//! (the strict model: only fsynced bytes survive), or, seeded, a random
//! part of them, each write possibly torn at sector granularity with
//! garbage in its torn sectors, written back in any order. Either way an
//! fsynced byte is never lost or damaged.
//!
//! ```
//! use std::sync::Arc;
//! use mimeo_storage::sim::{SimBackend, Unsynced};
//! use mimeo_storage::{FsyncMode, LogPosition, Mutation, Options, Record, RecordMeta, Store};
//!
//! let put = |index: u64| Record {
//!     meta: RecordMeta { position: LogPosition::new(1, index), origin: 0, seq: index, version: vec![] },
//!     mutation: Mutation::Put { key: b"k".to_vec(), value: index.to_le_bytes().to_vec() },
//! };
//! let disk = Arc::new(SimBackend::new());
//! let options = Options { fsync: FsyncMode::Never, ..Options::default() };
//! let store = Store::open_with_backend(disk.clone(), options.clone())?;
//! store.append(&[put(1)])?;
//! store.sync()?;
//! store.append(&[put(2)])?; // never fsynced
//! drop(store);
//!
//! let rebooted = Arc::new(disk.reboot(Unsynced::Lost));
//! let store = Store::open_with_backend(rebooted, options)?;
//! assert_eq!(store.last_position().index, 1);
//! # Ok::<(), mimeo_storage::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::backend::{Backend, BackendFile};

/// What happens at a power cut to changes that were never fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsynced {
    /// All of them are lost: files hold exactly their durable images and
    /// the directory its durable name table.
    Lost,
    /// A random part of them survives, chosen from `seed`: each unsynced
    /// write persists sector by sector (512 bytes), each sector wholly,
    /// not at all, or torn (filled with garbage); writes persist in any
    /// order, so a later write may survive where an earlier one did not,
    /// leaving zeros between; a truncation survives or not; and a prefix of
    /// the unsynced directory changes survives, in order.
    Torn {
        /// Seeds the choices, so a failure can be replayed.
        seed: u64,
    },
}

/// The sector size torn writes are cut at.
const SECTOR: u64 = 512;

#[derive(Clone, Debug)]
enum DataOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug)]
enum DirOp {
    Create { name: String, inode: u64 },
    Remove { name: String },
    Rename { from: String, to: String },
}

#[derive(Clone, Debug, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Changes since the last `sync_data`, in order.
    pending: Vec<DataOp>,
}

#[derive(Default)]
struct Disk {
    inodes: HashMap<u64, Inode>,
    live_dir: BTreeMap<String, u64>,
    durable_dir: BTreeMap<String, u64>,
    /// Directory changes since the last `sync_dir`, in order.
    pending_dir: Vec<DirOp>,
    next_inode: u64,
    /// Operations performed (or refused) so far.
    ops: u64,
    /// The operation count at which the power fails.
    cut_at: Option<u64>,
    powered_off: bool,
}

fn power_is_off() -> io::Error {
    io::Error::other("simulated power cut: the disk is off")
}

impl Disk {
    /// Counts one operation and fails it if the power is (now) off.
    fn operate(&mut self) -> io::Result<()> {
        if self.powered_off {
            return Err(power_is_off());
        }
        self.ops += 1;
        if self.cut_at.is_some_and(|at| self.ops >= at) {
            self.powered_off = true;
            return Err(power_is_off());
        }
        Ok(())
    }

    fn inode(&mut self, inode: u64) -> &mut Inode {
        self.inodes.entry(inode).or_default()
    }

    fn lookup(&self, name: &str) -> io::Result<u64> {
        self.live_dir
            .get(name)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file named {name}")))
    }
}

fn apply_dir_op(dir: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Create { name, inode } => {
            dir.insert(name.clone(), *inode);
        }
        DirOp::Remove { name } => {
            dir.remove(name);
        }
        DirOp::Rename { from, to } => {
            if let Some(inode) = dir.remove(from) {
                dir.insert(to.clone(), inode);
            }
        }
    }
}

fn apply_data_op(image: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write { offset, data } => write_into(image, *offset, data),
        DataOp::SetLen(len) => image.resize(*len as usize, 0),
    }
}

fn write_into(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

/// splitmix64: a small, seedable generator, so the crate needs no RNG
/// dependency and a seed replays the same crash image.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a torn write leaves of one unsynced write: some of its sectors.
fn tear(image: &mut Vec<u8>, offset: u64, data: &[u8], rng: &mut SplitMix) {
    let end = offset + data.len() as u64;
    let mut start = offset;
    while start < end {
        let stop = ((start / SECTOR + 1) * SECTOR).min(end);
        let chunk = &data[(start - offset) as usize..(stop - offset) as usize];
        match rng.below(8) {
            // Half the sectors reach the disk whole.
            0..=3 => write_into(image, start, chunk),
            // One in eight is torn: any mix of bytes.
            4 => {
                let garbage: Vec<u8> = chunk.iter().map(|_| rng.next() as u8).collect();
                write_into(image, start, &garbage);
            }
            _ => {}
        }
        start = stop;
    }
}

/// A simulated disk with a live and a durable image; see the
/// [module documentation](self).
pub struct SimBackend {
    disk: Arc<Mutex<Disk>>,
}

impl fmt::Debug for SimBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let disk = self.lock();
        f.debug_struct("SimBackend")
            .field("files", &disk.live_dir.keys().collect::<Vec<_>>())
            .field("ops", &disk.ops)
            .field("powered_off", &disk.powered_off)
            .finish()
    }
}

impl Default for SimBackend {
    fn default() -> Self {
        SimBackend::new()
    }
}

impl SimBackend {
    /// An empty, powered disk.
    pub fn new() -> SimBackend {
        SimBackend {
            disk: Arc::new(Mutex::new(Disk::default())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Operations (on the backend and its files, reads included) performed
    /// so far; use it to pick power-cut points inside a workload.
    pub fn operations(&self) -> u64 {
        self.lock().ops
    }

    /// Makes the power fail `after` operations from now: that operation
    /// and every later one fail without effect. `after == 0` cuts at the
    /// next operation.
    pub fn schedule_power_cut(&self, after: u64) {
        let mut disk = self.lock();
        disk.cut_at = Some(disk.ops + after.max(1));
    }

    /// Cuts the power now.
    pub fn power_cut(&self) {
        self.lock().powered_off = true;
    }

    /// Whether the power has been cut.
    pub fn is_powered_off(&self) -> bool {
        self.lock().powered_off
    }

    /// Cuts the power (if it is still on) and returns a fresh, powered disk
    /// holding what survived: every durable byte and directory change, plus
    /// what `unsynced` lets through of the rest. Files still open on this
    /// backend keep failing; they never touch the new disk.
    pub fn reboot(&self, unsynced: Unsynced) -> SimBackend {
        let mut disk = self.lock();
        disk.powered_off = true;
        let mut rng = match unsynced {
            Unsynced::Lost => None,
            Unsynced::Torn { seed } => Some(SplitMix(seed)),
        };

        let mut dir = disk.durable_dir.clone();
        if let Some(rng) = rng.as_mut() {
            let survivors = rng.below(disk.pending_dir.len() as u64 + 1) as usize;
            for op in &disk.pending_dir[..survivors] {
                apply_dir_op(&mut dir, op);
            }
        }

        let mut inodes = HashMap::new();
        for &inode in dir.values() {
            let Some(old) = disk.inodes.get(&inode) else {
                continue;
            };
            let mut image = old.durable.clone();
            if let Some(rng) = rng.as_mut() {
                for op in &old.pending {
                    match op {
                        DataOp::Write { offset, data } => tear(&mut image, *offset, data, rng),
                        DataOp::SetLen(_) => {
                            if rng.below(2) == 0 {
                                apply_data_op(&mut image, op);
                            }
                        }
                    }
                }
            }
            inodes.insert(
                inode,
                Inode {
                    live: image.clone(),
                    durable: image,
                    pending: Vec::new(),
                },
            );
        }
        let next_inode = disk.next_inode;
        drop(disk);
        SimBackend {
            disk: Arc::new(Mutex::new(Disk {
                inodes,
                live_dir: dir.clone(),
                durable_dir: dir,
                next_inode,
                ..Disk::default()
            })),
        }
    }
}

impl Backend for SimBackend {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut disk = self.lock();
        disk.operate()?;
        Ok(disk.live_dir.keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        let mut disk = self.lock();
        disk.operate()?;
        let inode = disk.lookup(name)?;
        Ok(Arc::new(SimFile {
            disk: Arc::clone(&self.disk),
            inode,
        }))
    }

    fn create(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        let mut disk = self.lock();
        disk.operate()?;
        let inode = disk.next_inode;
        disk.next_inode += 1;
        disk.inodes.insert(inode, Inode::default());
        disk.live_dir.insert(name.to_owned(), inode);
        disk.pending_dir.push(DirOp::Create {
            name: name.to_owned(),
            inode,
        });
        Ok(Arc::new(SimFile {
            disk: Arc::clone(&self.disk),
            inode,
        }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut disk = self.lock();
        disk.operate()?;
        disk.lookup(name)?;
        let op = DirOp::Remove {
            name: name.to_owned(),
        };
        apply_dir_op(&mut disk.live_dir, &op);
        disk.pending_dir.push(op);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.lock();
        disk.operate()?;
        disk.lookup(from)?;
        let op = DirOp::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
        };
        apply_dir_op(&mut disk.live_dir, &op);
        disk.pending_dir.push(op);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut disk = self.lock();
        disk.operate()?;
        let pending = std::mem::take(&mut disk.pending_dir);
        for op in &pending {
            apply_dir_op(&mut disk.durable_dir, op);
        }
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from("sim").join(name)
    }
}

/// An open file on a [`SimBackend`]. It refers to the file itself (the
/// inode), so it keeps working after the name is removed or renamed.
struct SimFile {
    disk: Arc<Mutex<Disk>>,
    inode: u64,
}

impl SimFile {
    fn lock(&self) -> io::Result<MutexGuard<'_, Disk>> {
        let mut disk = self.disk.lock().unwrap_or_else(PoisonError::into_inner);
        disk.operate()?;
        Ok(disk)
    }
}

impl BackendFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        let mut disk = self.lock()?;
        Ok(disk.inode(self.inode).live.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut disk = self.lock()?;
        let live = &disk.inode(self.inode).live;
        let start = offset as usize;
        let Some(bytes) = live.get(start..start + buf.len()) else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} past the end of a {}-byte file",
                    buf.len(),
                    live.len()
                ),
            ));
        };
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut disk = self.lock()?;
        let inode = disk.inode(self.inode);
        write_into(&mut inode.live, offset, buf);
        inode.pending.push(DataOp::Write {
            offset,
            data: buf.to_vec(),
        });
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut disk = self.lock()?;
        let inode = disk.inode(self.inode);
        let op = DataOp::SetLen(len);
        apply_data_op(&mut inode.live, &op);
        inode.pending.push(op);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut disk = self.lock()?;
        let inode = disk.inode(self.inode);
        for op in std::mem::take(&mut inode.pending) {
            apply_data_op(&mut inode.durable, &op);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(backend: &SimBackend, name: &str) -> Option<Vec<u8>> {
        let file = backend.open(name).ok()?;
        let mut buf = vec![0; file.len().unwrap() as usize];
        file.read_at(&mut buf, 0).unwrap();
        Some(buf)
    }

    #[test]
    fn only_synced_data_and_directory_changes_survive() {
        let disk = SimBackend::new();
        let a = disk.create("a").unwrap();
        a.write_at(b"durable", 0).unwrap();
        a.sync_data().unwrap();
        disk.sync_dir().unwrap();
        a.write_at(b" lost", 7).unwrap();
        // Synced data in a file whose creation was never made durable.
        let b = disk.create("b").unwrap();
        b.write_at(b"unreachable", 0).unwrap();
        b.sync_data().unwrap();
        assert_eq!(contents(&disk, "a").unwrap(), b"durable lost");

        let after = disk.reboot(Unsynced::Lost);
        assert_eq!(contents(&after, "a").unwrap(), b"durable");
        assert_eq!(contents(&after, "b"), None);
        assert_eq!(after.list().unwrap(), vec!["a".to_owned()]);
    }

    #[test]
    fn removed_and_renamed_files_come_back_unless_the_directory_was_synced() {
        let disk = SimBackend::new();
        for name in ["x", "y"] {
            let f = disk.create(name).unwrap();
            f.write_at(name.as_bytes(), 0).unwrap();
            f.sync_data().unwrap();
        }
        disk.sync_dir().unwrap();
        let x = disk.open("x").unwrap();
        disk.remove("x").unwrap();
        disk.rename("y", "z").unwrap();
        // Open handles outlive the name.
        let mut buf = [0u8; 1];
        x.read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"x");

        let lost = disk.reboot(Unsynced::Lost);
        assert_eq!(lost.list().unwrap(), vec!["x".to_owned(), "y".to_owned()]);

        let disk = lost;
        disk.remove("x").unwrap();
        disk.rename("y", "z").unwrap();
        disk.sync_dir().unwrap();
        let kept = disk.reboot(Unsynced::Lost);
        assert_eq!(kept.list().unwrap(), vec!["z".to_owned()]);
        assert_eq!(contents(&kept, "z").unwrap(), b"y");
    }

    #[test]
    fn a_scheduled_cut_fails_that_operation_and_every_later_one() {
        let disk = SimBackend::new();
        let f = disk.create("f").unwrap();
        disk.schedule_power_cut(2);
        f.write_at(b"one", 0).unwrap();
        assert!(f.sync_data().is_err());
        assert!(disk.is_powered_off());
        assert!(f.len().is_err());
        assert!(disk.list().is_err());
    }

    #[test]
    fn torn_writes_never_touch_synced_bytes_and_replay_from_the_seed() {
        let build = || {
            let disk = SimBackend::new();
            let f = disk.create("f").unwrap();
            disk.sync_dir().unwrap();
            f.write_at(&[1u8; 1000], 0).unwrap();
            f.sync_data().unwrap();
            f.write_at(&[2u8; 3000], 1000).unwrap();
            f.write_at(&[3u8; 3000], 4000).unwrap();
            disk
        };
        let mut saw_torn = false;
        for seed in 0..64 {
            let image = contents(&build().reboot(Unsynced::Torn { seed }), "f").unwrap();
            assert_eq!(&image[..1000], &[1u8; 1000][..], "seed {seed}");
            assert!(image.len() <= 7000);
            let partial = image.len() > 1000 && image.len() < 7000;
            let garbage = image[1000..].iter().any(|&b| ![0, 2, 3].contains(&b));
            saw_torn |= partial || garbage;
            let again = contents(&build().reboot(Unsynced::Torn { seed }), "f").unwrap();
            assert_eq!(image, again, "seed {seed} must replay");
        }
        assert!(saw_torn, "64 seeds never tore a write");
    }
}
