//! A simulated, fault-injecting file system for crash and I/O-error tests
//! (cargo feature `sim`).
//!
//! [`SimFs`] keeps files in memory and tracks, per file, which bytes are
//! durable: covered by a completed `sync_data`/`sync_all`. Names (file
//! creation, rename, removal) are durable only after `sync_dir` of their
//! directory. So is a new directory's own name: until its parent is
//! synced, a power loss takes it away with everything in it (a root, or
//! a relative name's first part, counts as durable at once).
//!
//! A simulated power loss ([`SimFs::crash_after`], [`SimFs::crash_now`])
//! freezes a [`SimImage`] of what the disk would hold: for each durable
//! name, its durable bytes plus, chosen at random per file, none of the
//! unsynced writes, a prefix of them in issue order, such a prefix with
//! the next write torn at a random byte, or with the last 512-byte sector
//! it touched garbled. Every mutating call after the crash fails, as the
//! process would be gone. [`SimFs::from_image`] boots a new file system
//! from the image, with everything in it durable.
//!
//! Faults ([`SimFs::inject`]) make the n-th call of a kind (write, sync,
//! allocate, rename, create, directory sync) fail with EIO or ENOSPC, once
//! or from then on. A failed write may leave a prefix of its bytes in the
//! (volatile) file, as a real short write does; a failed sync leaves the
//! file's unsynced bytes undurable, though reads still show them (the
//! page-cache behaviour behind the PostgreSQL fsync incident).
//!
//! The production store is generic over [`FileSystem`]; this module exists
//! only with the feature, so the real path pays nothing for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use super::{FileHandle, FileSystem, OpenMode};

/// Size of the unit a garbled write damages.
const SECTOR_BYTES: u64 = 512;

/// A small deterministic random generator (SplitMix64) for simulations.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The kinds of call a fault can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// `write_all_at`.
    Write,
    /// `sync_data` or `sync_all`.
    Sync,
    /// `set_len` (allocation and truncation).
    Allocate,
    /// `rename`.
    Rename,
    /// Creating a file (`open` with a create mode on an absent name).
    Create,
    /// `sync_dir`.
    SyncDir,
    /// `remove_file`.
    Remove,
    /// `start_writeback` (changes nothing durable; only an injected fault
    /// makes it fail).
    Writeback,
    /// `read_exact_at` or `map`. Not a mutating call: reads are not counted
    /// in [`SimFs::ops`], and a crash point or process death never falls on
    /// one; only an injected fault makes a read fail.
    Read,
    /// Opening a file that exists (any mode but a failing `CreateNew`).
    /// Not a mutating call, like [`OpKind::Read`]: an injected fault (EIO,
    /// or ENOSPC standing in for any other error, such as too many open
    /// files) is the only way it fails.
    Open,
}

impl OpKind {
    /// Every kind.
    pub const ALL: [OpKind; 10] = [
        OpKind::Write,
        OpKind::Sync,
        OpKind::Allocate,
        OpKind::Rename,
        OpKind::Create,
        OpKind::SyncDir,
        OpKind::Remove,
        OpKind::Writeback,
        OpKind::Read,
        OpKind::Open,
    ];
}

/// The error an injected fault returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// An I/O error (EIO).
    Eio,
    /// No space left on the device (ENOSPC).
    Enospc,
}

impl FaultError {
    fn to_io(self, kind: OpKind) -> io::Error {
        match self {
            FaultError::Eio => io::Error::other(format!("injected EIO on {kind:?}")),
            FaultError::Enospc => io::Error::new(io::ErrorKind::StorageFull, format!("injected ENOSPC on {kind:?}")),
        }
    }
}

/// A fault to inject: the `nth` call (0-based, counted from injection) of
/// `kind` fails with `error`; with `sticky`, every later call of that kind
/// fails too, until [`SimFs::clear_faults`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Which calls.
    pub kind: OpKind,
    /// Which one of them fails first.
    pub nth: u64,
    /// The error.
    pub error: FaultError,
    /// Whether later calls of the kind fail too.
    pub sticky: bool,
}

/// What a simulated disk holds after a power loss: file contents by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimImage {
    /// Directories.
    pub dirs: BTreeSet<PathBuf>,
    /// Files and their bytes.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
}

/// A change to a file not yet covered by a sync.
#[derive(Clone, Debug)]
enum Pending {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl Pending {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            Pending::Write { offset, bytes } => write_into(data, *offset, bytes),
            Pending::SetLen(len) => data.resize(*len as usize, 0),
        }
    }
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let offset = offset as usize;
    let end = offset + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset..end].copy_from_slice(bytes);
}

#[derive(Clone, Debug, Default)]
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a power loss.
    durable: Vec<u8>,
    /// Changes since the last sync, in issue order.
    pending: Vec<Pending>,
    /// Failed syncs so far: each is reported once to every handle open
    /// when it happened (Linux's `errseq_t`), see `SimFile::seen`.
    errors: u64,
}

#[derive(Debug, Default)]
struct State {
    rng: Option<SimRng>,
    next_inode: u64,
    inodes: HashMap<u64, Inode>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    /// Directories made since their parent's last sync: a power loss takes
    /// them away, with everything in them.
    volatile_dirs: BTreeSet<PathBuf>,
    locked: BTreeSet<u64>,
    /// Holders of shared locks, by inode.
    shared: BTreeMap<u64, usize>,
    counts: HashMap<OpKind, u64>,
    faults: Vec<(Fault, u64)>,
    /// Total mutating calls so far.
    ops: u64,
    crash_at: Option<u64>,
    image: Option<SimImage>,
    /// The disk's size: bytes of all named files together (`None`:
    /// unlimited). A write or length change past it fails with ENOSPC.
    capacity: Option<u64>,
    /// Holds the next sync on its way out (see [`SimFs::hold_next_sync`]).
    sync_hold: Option<SyncHold>,
    /// The process dies at the next call of this kind (see
    /// [`SimFs::kill_process_at_next`]).
    kill_at: Option<OpKind>,
    /// The process dies at this mutating call (see
    /// [`SimFs::kill_process_after`]).
    kill_at_op: Option<u64>,
    /// The process died: every call fails, the page cache is kept.
    dead: bool,
    /// Holds the next write at or past an offset on its way in (see
    /// [`SimFs::hold_next_write_from`]).
    write_hold: Option<(u64, SyncHold)>,
}

/// A call held until released: a sync on its way out, done (or failed)
/// but not yet returned to its caller ([`SimFs::hold_next_sync`]), or a
/// write on its way in, not yet done ([`SimFs::hold_next_write_from`]).
/// Other calls go on meanwhile: to test what races the held one.
#[derive(Clone, Debug, Default)]
pub struct SyncHold {
    inner: Arc<(Mutex<HoldState>, parking_lot::Condvar)>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum HoldState {
    #[default]
    Armed,
    Holding,
    Released,
}

impl SyncHold {
    /// Waits until a sync is held.
    pub fn wait_held(&self) {
        let (state, changed) = &*self.inner;
        let mut state = state.lock();
        while *state == HoldState::Armed {
            changed.wait(&mut state);
        }
    }

    /// Lets the held sync (or the next one, if none is held yet) return.
    pub fn release(&self) {
        let (state, changed) = &*self.inner;
        *state.lock() = HoldState::Released;
        changed.notify_all();
    }

    /// Called by the held sync: waits until released.
    fn hold_here(&self) {
        let (state, changed) = &*self.inner;
        let mut state = state.lock();
        if *state == HoldState::Armed {
            *state = HoldState::Holding;
            changed.notify_all();
        }
        while *state != HoldState::Released {
            changed.wait(&mut state);
        }
    }
}

impl State {
    fn rng(&mut self) -> &mut SimRng {
        self.rng.get_or_insert_with(|| SimRng::new(0))
    }

    /// Counts a call that changes nothing (a read, an open); fails it if a
    /// fault targets it. (Such calls go on after a power loss or the
    /// process's death: the tests read what is left.)
    fn enter_unchanging(&mut self, kind: OpKind) -> io::Result<()> {
        let count = self.counts.entry(kind).or_insert(0);
        let n = *count;
        *count += 1;
        self.fault_for(kind, n)
    }

    /// The injected fault, if any, for the `n`th call of `kind`.
    fn fault_for(&self, kind: OpKind, n: u64) -> io::Result<()> {
        for (fault, base) in &self.faults {
            if fault.kind == kind && (n == base + fault.nth || (fault.sticky && n > base + fault.nth)) {
                return Err(fault.error.to_io(kind));
            }
        }
        Ok(())
    }

    /// Counts a mutating call; fails it if the machine crashed or a fault
    /// targets it.
    fn enter(&mut self, kind: OpKind) -> io::Result<()> {
        if self.image.is_some() {
            return Err(io::Error::other("simulated power loss"));
        }
        if self.crash_at == Some(self.ops) {
            self.crash();
            return Err(io::Error::other("simulated power loss"));
        }
        if self.kill_at == Some(kind) || self.kill_at_op == Some(self.ops) {
            self.kill_at = None;
            self.kill_at_op = None;
            self.dead = true;
        }
        if self.dead {
            return Err(io::Error::other("simulated process death"));
        }
        self.ops += 1;
        let count = self.counts.entry(kind).or_insert(0);
        let n = *count;
        *count += 1;
        self.fault_for(kind, n)
    }

    /// What a sync call (its outcome so far `entered`) leaves of `ino`'s
    /// pending changes. After a power loss or the process's death nothing
    /// changes (a dead process's calls do nothing). A sync that succeeds
    /// makes them all durable. A failed one (an injected fault) made a
    /// prefix durable, and the rest never will be: they stay readable but
    /// are no longer pending, as on Linux, which marks the pages of a
    /// failed write-back clean (a later sync succeeds without them). Each
    /// failure is reported once to every handle open on the file when it
    /// happened (`seen`, the failures this handle was told of): a sync that
    /// succeeds reports one through another handle since its last sync.
    fn settle_sync(&mut self, ino: u64, seen: &AtomicU64, entered: io::Result<()>) -> io::Result<()> {
        if self.image.is_some() || self.dead {
            return entered;
        }
        let failed = entered.is_err();
        let Some(n) = self.inodes.get(&ino).map(|i| i.pending.len()) else {
            return entered.and(Err(io::Error::other("file vanished")));
        };
        let applied = if failed {
            self.rng().below(n as u64 + 1) as usize
        } else {
            n
        };
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return entered;
        };
        let pending = std::mem::take(&mut inode.pending);
        for change in &pending[..applied] {
            change.apply(&mut inode.durable);
        }
        inode.errors += u64::from(failed);
        if seen.swap(inode.errors, Ordering::AcqRel) < inode.errors && !failed {
            return Err(io::Error::other(
                "injected EIO on Sync (an earlier write-back of this file failed)",
            ));
        }
        entered
    }

    /// Fails with ENOSPC when growing `inode` to `len` bytes would pass the
    /// disk's capacity.
    fn make_room(&self, inode: u64, len: u64) -> io::Result<()> {
        let Some(capacity) = self.capacity else { return Ok(()) };
        let size = |ino: &u64| self.inodes.get(ino).map_or(0, |i| i.data.len() as u64);
        let current = size(&inode);
        if len <= current {
            return Ok(());
        }
        let mut linked: Vec<u64> = self.names.values().copied().collect();
        linked.sort_unstable();
        linked.dedup();
        let used: u64 = linked.iter().map(size).sum();
        if used + (len - current) > capacity {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "simulated disk full"));
        }
        Ok(())
    }

    /// Whether a power loss now would take `path` away with a directory
    /// it is in (itself included) whose name was never synced.
    fn in_volatile_dir(&self, path: &Path) -> bool {
        path.ancestors().any(|a| self.volatile_dirs.contains(a))
    }

    /// The directories a power loss now would leave.
    fn durable_dirs(&self) -> BTreeSet<PathBuf> {
        self.dirs.iter().filter(|d| !self.in_volatile_dir(d)).cloned().collect()
    }

    fn crash(&mut self) {
        let mut image = SimImage {
            dirs: self.durable_dirs(),
            files: BTreeMap::new(),
        };
        let names: Vec<(PathBuf, u64)> = self
            .durable_names
            .iter()
            .filter(|(p, _)| !p.parent().is_some_and(|d| self.in_volatile_dir(d)))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        for (path, ino) in names {
            let Some(inode) = self.inodes.get(&ino).cloned() else {
                continue;
            };
            let bytes = self.power_loss(&inode);
            image.files.insert(path, bytes);
        }
        self.image = Some(image);
    }

    /// The bytes of one file after a power loss.
    fn power_loss(&mut self, inode: &Inode) -> Vec<u8> {
        let mut data = inode.durable.clone();
        let pending = &inode.pending;
        if pending.is_empty() {
            return data;
        }
        let rng = self.rng();
        let mode = rng.below(100);
        if mode < 35 {
            return data; // every unsynced change lost
        }
        let kept = rng.below(pending.len() as u64 + 1) as usize;
        for change in &pending[..kept] {
            change.apply(&mut data);
        }
        let Some(Pending::Write { offset, bytes }) = pending.get(kept) else {
            return data;
        };
        if mode < 70 || bytes.is_empty() {
            return data; // a prefix of the changes, each whole
        }
        if mode < 90 {
            // The next write torn at a random byte.
            let cut = rng.below(bytes.len() as u64) as usize;
            write_into(&mut data, *offset, &bytes[..cut]);
            return data;
        }
        // The next write landed, but its last sector is garbage.
        write_into(&mut data, *offset, bytes);
        let end = *offset + bytes.len() as u64;
        let sector = ((end - 1) / SECTOR_BYTES * SECTOR_BYTES).max(*offset);
        for at in sector..end {
            data[at as usize] = rng.next_u64() as u8;
        }
        data
    }
}

/// A simulated file system; clones share one disk.
#[derive(Clone, Debug, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl SimFs {
    /// An empty disk whose random choices (at a crash) follow `seed`.
    pub fn new(seed: u64) -> SimFs {
        let fs = SimFs::default();
        fs.state.lock().rng = Some(SimRng::new(seed));
        fs
    }

    /// A disk holding `image`, all of it durable.
    pub fn from_image(image: &SimImage, seed: u64) -> SimFs {
        let fs = SimFs::new(seed);
        {
            let mut s = fs.state.lock();
            s.dirs = image.dirs.clone();
            for (path, bytes) in &image.files {
                let ino = s.next_inode;
                s.next_inode += 1;
                s.inodes.insert(
                    ino,
                    Inode {
                        data: bytes.clone(),
                        durable: bytes.clone(),
                        pending: Vec::new(),
                        errors: 0,
                    },
                );
                s.names.insert(path.clone(), ino);
                s.durable_names.insert(path.clone(), ino);
            }
        }
        fs
    }

    /// Loses power just before the `n`-th mutating call from now (0: the
    /// next one).
    pub fn crash_after(&self, n: u64) {
        let mut s = self.state.lock();
        s.crash_at = Some(s.ops + n);
    }

    /// Loses power now (if it has not already).
    pub fn crash_now(&self) {
        let mut s = self.state.lock();
        if s.image.is_none() {
            s.crash();
        }
    }

    /// Whether the power was lost.
    pub fn crashed(&self) -> bool {
        self.state.lock().image.is_some()
    }

    /// What the disk held at the power loss.
    pub fn image(&self) -> Option<SimImage> {
        self.state.lock().image.clone()
    }

    /// What the disk would hold if every unsynced change were lost now
    /// (the current durable state), without crashing.
    pub fn durable_image(&self) -> SimImage {
        let s = self.state.lock();
        let mut image = SimImage {
            dirs: s.durable_dirs(),
            files: BTreeMap::new(),
        };
        for (path, ino) in &s.durable_names {
            if path.parent().is_some_and(|d| s.in_volatile_dir(d)) {
                continue;
            }
            if let Some(inode) = s.inodes.get(ino) {
                image.files.insert(path.clone(), inode.durable.clone());
            }
        }
        image
    }

    /// Sets the disk's size: the bytes of all files together (`None`:
    /// unlimited). Writes and length changes past it fail with ENOSPC;
    /// removing a file frees its bytes.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity = bytes;
    }

    /// Adds a fault; its `nth` counts calls of its kind from now.
    pub fn inject(&self, fault: Fault) {
        let mut s = self.state.lock();
        let base = s.counts.get(&fault.kind).copied().unwrap_or(0);
        s.faults.push((fault, base));
    }

    /// Removes every fault (for example, once disk space is freed).
    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// Calls of `kind` so far.
    pub fn count(&self, kind: OpKind) -> u64 {
        self.state.lock().counts.get(&kind).copied().unwrap_or(0)
    }

    /// Mutating calls of every kind so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// The current (volatile) bytes of a file, if it exists.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        let ino = s.names.get(path)?;
        s.inodes.get(ino).map(|i| i.data.clone())
    }

    /// Replaces a file's bytes, durably (for corruption tests).
    pub fn write_durable(&self, path: &Path, bytes: &[u8]) {
        let mut s = self.state.lock();
        let ino = match s.names.get(path) {
            Some(ino) => *ino,
            None => {
                let ino = s.next_inode;
                s.next_inode += 1;
                s.names.insert(path.to_path_buf(), ino);
                ino
            }
        };
        s.durable_names.insert(path.to_path_buf(), ino);
        s.inodes.insert(
            ino,
            Inode {
                data: bytes.to_vec(),
                durable: bytes.to_vec(),
                pending: Vec::new(),
                errors: 0,
            },
        );
    }

    /// Removes a file, durably.
    pub fn remove_durable(&self, path: &Path) {
        let mut s = self.state.lock();
        s.names.remove(path);
        s.durable_names.remove(path);
    }

    /// Holds the next `sync_data` or `sync_all` call on its way out, its
    /// work done (or failed), until [`SyncHold::release`]: to test what
    /// happens while a sync has not yet returned.
    pub fn hold_next_sync(&self) -> SyncHold {
        let hold = SyncHold::default();
        self.state.lock().sync_hold = Some(hold.clone());
        hold
    }

    /// Kills the process at the next call of `kind`, before it does
    /// anything: that call and every later one fail, and the page cache
    /// (every write so far, synced or not) is kept, as when a process is
    /// killed (SIGKILL) and the machine goes on. [`SimFs::revive`] starts
    /// the next process on the same machine.
    pub fn kill_process_at_next(&self, kind: OpKind) {
        self.state.lock().kill_at = Some(kind);
    }

    /// Kills the process just before the `n`-th mutating call from now (0:
    /// the next one), as [`SimFs::kill_process_at_next`] does.
    pub fn kill_process_after(&self, n: u64) {
        let mut s = self.state.lock();
        s.kill_at_op = Some(s.ops + n);
    }

    /// Lets calls work again after [`SimFs::kill_process_at_next`] killed
    /// the process: the next process, seeing the page cache as the dead
    /// one left it. Drop the dead process's store first.
    pub fn revive(&self) {
        let mut s = self.state.lock();
        s.dead = false;
        s.kill_at = None;
        s.kill_at_op = None;
    }

    /// Holds the next `write_all_at` call, on any file, whose offset is at
    /// least `offset`, before it writes anything, until
    /// [`SyncHold::release`]: to test what happens while a write (such as
    /// zeros written ahead by a background thread) is in progress.
    pub fn hold_next_write_from(&self, offset: u64) -> SyncHold {
        let hold = SyncHold::default();
        self.state.lock().write_hold = Some((offset, hold.clone()));
        hold
    }

    /// Paths of every file, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        self.state.lock().names.keys().cloned().collect()
    }
}

/// An open file of [`SimFs`]: it refers to the file itself, so it survives
/// a rename, as on POSIX systems.
#[derive(Debug)]
pub struct SimFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    /// The inode's failed syncs this handle has been told of (all of them
    /// at open): a sync through this handle fails once for newer ones, as
    /// on Linux, where a write-back error is reported to every file open
    /// on the inode when it happened.
    seen: AtomicU64,
    holds_lock: AtomicBool,
    holds_shared: AtomicBool,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

impl FileSystem for SimFs {
    type File = SimFile;
    const MAP_IS_LIVE: bool = false;

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        for dir in path.ancestors() {
            if !dir.as_os_str().is_empty() && s.dirs.insert(dir.to_path_buf()) {
                // A new name in its parent, durable once the parent is
                // synced (a root, or a name relative to the working
                // directory, counts as durable at once).
                if dir.parent().is_some_and(|p| !p.as_os_str().is_empty()) {
                    s.volatile_dirs.insert(dir.to_path_buf());
                }
            }
        }
        Ok(())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<SimFile> {
        let mut s = self.state.lock();
        let existing = s.names.get(path).copied();
        let inode = match (mode, existing) {
            (OpenMode::Read | OpenMode::ReadWrite, None) => return Err(not_found(path)),
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ));
            }
            (_, Some(ino)) => {
                s.enter_unchanging(OpKind::Open)?;
                ino
            }
            (OpenMode::CreateNew | OpenMode::CreateOrOpen, None) => {
                let parent = path.parent().unwrap_or(Path::new(""));
                if !s.dirs.contains(parent) {
                    return Err(not_found(parent));
                }
                s.enter(OpKind::Create)?;
                let ino = s.next_inode;
                s.next_inode += 1;
                s.inodes.insert(ino, Inode::default());
                s.names.insert(path.to_path_buf(), ino);
                ino
            }
        };
        let seen = s.inodes.get(&inode).map_or(0, |i| i.errors);
        Ok(SimFile {
            state: self.state.clone(),
            inode,
            seen: AtomicU64::new(seen),
            holds_lock: AtomicBool::new(false),
            holds_shared: AtomicBool::new(false),
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let ino = s.names.get(from).copied().ok_or_else(|| not_found(from))?;
        s.enter(OpKind::Rename)?;
        s.names.remove(from);
        s.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        if !s.names.contains_key(path) {
            return Err(not_found(path));
        }
        s.enter(OpKind::Remove)?;
        s.names.remove(path);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.enter(OpKind::SyncDir)?;
        let in_dir = |p: &Path| p.parent() == Some(path);
        s.volatile_dirs.retain(|d| !in_dir(d));
        s.durable_names.retain(|p, _| !in_dir(p));
        let current: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable_names.extend(current);
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        if !s.dirs.contains(path) {
            return Err(not_found(path));
        }
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.state.lock();
        s.names.contains_key(path) || s.dirs.contains(path)
    }
}

impl SimFile {
    fn with_inode<T>(&self, f: impl FnOnce(&mut Inode) -> T) -> io::Result<T> {
        let mut s = self.state.lock();
        let inode = s
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| io::Error::other("file vanished"))?;
        Ok(f(inode))
    }
}

impl FileHandle for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.state.lock().enter_unchanging(OpKind::Read)?;
        self.with_inode(|inode| {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            match inode.data.get(start..).and_then(|rest| rest.get(..buf.len())) {
                Some(bytes) => {
                    buf.copy_from_slice(bytes);
                    Ok(())
                }
                None => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            }
        })?
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let hold = {
            let mut s = self.state.lock();
            match &s.write_hold {
                Some((from, _)) if offset >= *from => s.write_hold.take().map(|(_, hold)| hold),
                _ => None,
            }
        };
        if let Some(hold) = hold {
            hold.hold_here();
        }
        let mut s = self.state.lock();
        if let Err(e) = s.enter(OpKind::Write) {
            // A failed write may still have put a prefix of its bytes in
            // the page cache, unsynced.
            if s.image.is_none() && !s.dead {
                let cut = s.rng().below(buf.len() as u64 + 1) as usize;
                if let Some(inode) = s.inodes.get_mut(&self.inode) {
                    let bytes = buf[..cut].to_vec();
                    write_into(&mut inode.data, offset, &bytes);
                    inode.pending.push(Pending::Write { offset, bytes });
                }
            }
            return Err(e);
        }
        s.make_room(self.inode, offset + buf.len() as u64)?;
        let inode = s
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| io::Error::other("file vanished"))?;
        write_into(&mut inode.data, offset, buf);
        inode.pending.push(Pending::Write {
            offset,
            bytes: buf.to_vec(),
        });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let (result, hold) = {
            let mut s = self.state.lock();
            let hold = s.sync_hold.take();
            let result = s.enter(OpKind::Sync);
            let result = s.settle_sync(self.inode, &self.seen, result);
            (result, hold)
        };
        if let Some(hold) = hold {
            hold.hold_here();
        }
        result
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn start_writeback(&self, _range: std::ops::Range<u64>) -> io::Result<()> {
        self.state.lock().enter(OpKind::Writeback)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.state.lock();
        s.enter(OpKind::Allocate)?;
        s.make_room(self.inode, len)?;
        let inode = s
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| io::Error::other("file vanished"))?;
        let len_usize = usize::try_from(len).map_err(|_| io::Error::other("length too large"))?;
        inode.data.resize(len_usize, 0);
        inode.pending.push(Pending::SetLen(len));
        Ok(())
    }

    /// Like a zero-extending `set_len` that never cuts: the new length is
    /// lost with the other unsynced changes at a power loss.
    fn reserve(&self, range: std::ops::Range<u64>) -> io::Result<bool> {
        if range.end <= self.len()? {
            return Ok(true);
        }
        self.set_len(range.end).map(|()| true)
    }

    fn len(&self) -> io::Result<u64> {
        self.with_inode(|inode| inode.data.len() as u64)
    }

    fn map(&self, len: u64) -> io::Result<Bytes> {
        self.state.lock().enter_unchanging(OpKind::Read)?;
        self.with_inode(|inode| {
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            inode
                .data
                .get(..len)
                .map(Bytes::copy_from_slice)
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
        })?
    }

    fn try_lock(&self) -> io::Result<bool> {
        let mut s = self.state.lock();
        if s.shared.contains_key(&self.inode) {
            return Ok(false);
        }
        if s.locked.insert(self.inode) {
            self.holds_lock.store(true, Ordering::Relaxed);
            Ok(true)
        } else {
            Ok(self.holds_lock.load(Ordering::Relaxed))
        }
    }

    fn try_lock_shared(&self) -> io::Result<bool> {
        let mut s = self.state.lock();
        if s.locked.contains(&self.inode) {
            return Ok(false);
        }
        if !self.holds_shared.swap(true, Ordering::Relaxed) {
            *s.shared.entry(self.inode).or_default() += 1;
        }
        Ok(true)
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        if self.holds_lock.load(Ordering::Relaxed) {
            self.state.lock().locked.remove(&self.inode);
        }
        if self.holds_shared.load(Ordering::Relaxed) {
            let mut s = self.state.lock();
            if let Some(n) = s.shared.get_mut(&self.inode) {
                *n -= 1;
                if *n == 0 {
                    s.shared.remove(&self.inode);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/db")
    }

    /// Makes [`dir`], its name synced in its parent.
    fn made_durably(fs: &SimFs) {
        fs.create_dir_all(&dir()).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
    }

    /// A new directory's name is durable once its parent is synced: until
    /// then a power loss takes it away, with the files in it, synced or
    /// not.
    #[test]
    fn a_new_directory_vanishes_unless_its_parent_is_synced() {
        let fs = SimFs::new(4);
        let deep = dir().join("sub");
        fs.create_dir_all(&deep).unwrap();
        let f = fs.open(&deep.join("a"), OpenMode::CreateNew).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_all().unwrap();
        fs.sync_dir(&deep).unwrap();
        assert!(fs.durable_image().files.is_empty());
        fs.sync_dir(&dir()).unwrap();
        // `sub` is named durably in `/db`, but `/db` is not in `/`.
        assert!(fs.durable_image().files.is_empty());
        assert!(!fs.durable_image().dirs.contains(&deep));
        fs.sync_dir(Path::new("/")).unwrap();
        let image = fs.durable_image();
        assert_eq!(image.files[&deep.join("a")], b"hello");
        assert!(image.dirs.contains(&deep) && image.dirs.contains(&dir()));
    }

    #[test]
    fn unsynced_bytes_and_names_can_vanish() {
        let fs = SimFs::new(1);
        made_durably(&fs);
        let f = fs.open(&dir().join("a"), OpenMode::CreateNew).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.sync_data().unwrap();
        // Not durable: the name was never synced.
        assert!(fs.durable_image().files.is_empty());
        fs.sync_dir(&dir()).unwrap();
        f.write_all_at(b"world", 5).unwrap();
        let image = fs.durable_image();
        assert_eq!(image.files[&dir().join("a")], b"hello");
        fs.crash_now();
        let after = fs.image().unwrap();
        let a = &after.files[&dir().join("a")];
        assert!(a.starts_with(b"hello") && a.len() <= 10, "{a:?}");
        assert!(f.write_all_at(b"x", 0).is_err(), "writes fail after the crash");
    }

    #[test]
    fn crash_keeps_a_prefix_torn_or_garbled_write() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..200 {
            let fs = SimFs::new(seed);
            made_durably(&fs);
            let f = fs.open(&dir().join("a"), OpenMode::CreateNew).unwrap();
            fs.sync_dir(&dir()).unwrap();
            f.write_all_at(&[1; 600], 0).unwrap();
            f.write_all_at(&[2; 600], 600).unwrap();
            fs.crash_now();
            let bytes = fs.image().unwrap().files[&dir().join("a")].clone();
            let ones = bytes.iter().take_while(|b| **b == 1).count();
            let twos = bytes[ones..].iter().take_while(|b| **b == 2).count();
            outcomes.insert(match (ones, twos, bytes.len()) {
                (0, 0, 0) => "none",
                (600, 600, 1200) => "all",
                (600, 0, 600) => "first",
                (o, _, _) if o < 600 && bytes.len() == o => "torn first",
                (600, t, len) if t < 600 && len == 600 + t => "torn second",
                _ => "garbled",
            });
        }
        for expected in ["none", "all", "first", "torn first", "torn second", "garbled"] {
            assert!(outcomes.contains(expected), "{expected} never happened: {outcomes:?}");
        }
    }

    #[test]
    fn faults_hit_the_nth_call_once_or_sticky() {
        let fs = SimFs::new(2);
        made_durably(&fs);
        let f = fs.open(&dir().join("a"), OpenMode::CreateNew).unwrap();
        fs.inject(Fault {
            kind: OpKind::Sync,
            nth: 1,
            error: FaultError::Eio,
            sticky: false,
        });
        assert!(f.sync_data().is_ok());
        assert!(f.sync_data().is_err());
        assert!(f.sync_data().is_ok());
        fs.inject(Fault {
            kind: OpKind::Write,
            nth: 0,
            error: FaultError::Enospc,
            sticky: true,
        });
        let e = f.write_all_at(b"x", 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert!(f.write_all_at(b"x", 0).is_err());
        fs.clear_faults();
        assert!(f.write_all_at(b"x", 0).is_ok());
    }

    #[test]
    fn rename_is_durable_only_after_dir_sync() {
        let fs = SimFs::new(3);
        made_durably(&fs);
        fs.write_durable(&dir().join("index"), b"old");
        let f = fs.open(&dir().join("index.tmp"), OpenMode::CreateNew).unwrap();
        f.write_all_at(b"new", 0).unwrap();
        f.sync_all().unwrap();
        fs.rename(&dir().join("index.tmp"), &dir().join("index")).unwrap();
        assert_eq!(fs.durable_image().files[&dir().join("index")], b"old");
        fs.sync_dir(&dir()).unwrap();
        assert_eq!(fs.durable_image().files[&dir().join("index")], b"new");
        assert_eq!(fs.read(&dir().join("index")).unwrap(), b"new");
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let fs = SimFs::new(4);
        made_durably(&fs);
        let a = fs.open(&dir().join("LOCK"), OpenMode::CreateOrOpen).unwrap();
        let b = fs.open(&dir().join("LOCK"), OpenMode::CreateOrOpen).unwrap();
        assert!(a.try_lock().unwrap());
        assert!(!b.try_lock().unwrap());
        drop(a);
        assert!(b.try_lock().unwrap());
    }

    #[test]
    fn shared_locks_exclude_an_exclusive_one_and_not_each_other() {
        let fs = SimFs::new(1);
        made_durably(&fs);
        let open = || fs.open(&dir().join("LOCK"), OpenMode::CreateOrOpen).unwrap();
        let (a, b, c) = (open(), open(), open());
        assert!(a.try_lock_shared().unwrap());
        assert!(b.try_lock_shared().unwrap());
        assert!(!c.try_lock().unwrap());
        drop(a);
        assert!(!c.try_lock().unwrap());
        drop(b);
        assert!(c.try_lock().unwrap());
        assert!(!open().try_lock_shared().unwrap());
    }
}
