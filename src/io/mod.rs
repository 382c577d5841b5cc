//! The file-system seam: every file operation of the store goes through
//! [`FileSystem`] and [`FileHandle`].
//!
//! Production uses [`StdFs`]. Tests can plug in a simulated file system
//! that loses unsynced bytes, tears writes or fails calls. The store is
//! generic over the file system, so the production path pays nothing for
//! this seam (no dynamic dispatch, no runtime checks).

#[cfg(feature = "sim")]
pub mod sim;
mod std_fs;

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

pub use std_fs::StdFs;

/// Why [`StdFs`] refuses to open a directory, FIFO or device in place of a
/// store file: every file the store opens is a regular file.
#[derive(Debug)]
pub(crate) struct NotARegularFile;

impl std::fmt::Display for NotARegularFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a regular file")
    }
}

impl std::error::Error for NotARegularFile {}

/// Whether an open failed because the path is no regular file (see
/// [`NotARegularFile`]): for a segment, damage to the store rather than an
/// I/O failure.
pub(crate) fn is_not_a_regular_file(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<NotARegularFile>())
}

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read-only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; create the file, failing if it already exists.
    CreateNew,
    /// Read and write; create the file if absent, keep its bytes otherwise.
    CreateOrOpen,
}

/// A lock held on a store directory itself (see
/// [`FileSystem::try_lock_dir`]); released when dropped.
#[derive(Debug, Default)]
pub struct DirectoryLock {
    _dir: Option<std::fs::File>,
}

impl DirectoryLock {
    /// A lock held through `dir`, an open handle of the directory.
    pub fn held_by(dir: std::fs::File) -> Self {
        DirectoryLock { _dir: Some(dir) }
    }
}

/// A directory of files, as the store sees it.
pub trait FileSystem: Send + Sync + 'static {
    /// The open-file type.
    type File: FileHandle;

    /// Whether a mapping returned by [`FileHandle::map`] shows later writes
    /// to the file (true for real memory maps). When false, the store maps
    /// the active segment again after each write so readers see new data.
    const MAP_IS_LIVE: bool;

    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File>;
    /// Locks the directory itself, shared or exclusive, where the platform
    /// locks directories: a lock beside the lock file's that deleting the
    /// lock file cannot drop (a second process would otherwise create a new
    /// lock file and lock that). `Ok(None)` when another holder excludes
    /// it. By default (and where directories cannot be locked) it holds
    /// nothing and always succeeds: the lock file's lock stands alone.
    fn try_lock_dir(&self, _dir: &Path, _shared: bool) -> io::Result<Option<DirectoryLock>> {
        Ok(Some(DirectoryLock::default()))
    }
    /// Renames a file, replacing the target. Durable after [`FileSystem::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file. Durable after [`FileSystem::sync_dir`].
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals in a directory durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Lists the file names (not paths) in a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether a file or directory exists.
    fn exists(&self, path: &Path) -> bool;
}

/// An open file.
#[allow(clippy::len_without_is_empty)]
pub trait FileHandle: Send + Sync + 'static {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata, such as its size, durable (fsync).
    fn sync_all(&self) -> io::Result<()>;
    /// Sets the file's length, cutting or zero-extending it.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Maps the first `len` bytes of the file read-only. The store reads
    /// only bytes it wrote and never changes them after they were read.
    fn map(&self, len: u64) -> io::Result<Bytes>;
    /// Takes an exclusive advisory lock; `Ok(false)` when someone else holds it.
    fn try_lock(&self) -> io::Result<bool>;
    /// Takes a shared advisory lock, which excludes an exclusive one but
    /// not other shared ones; `Ok(false)` when someone holds it exclusively.
    fn try_lock_shared(&self) -> io::Result<bool>;
    /// Maps the first `len` bytes of the file writable and shared, so that
    /// a copy into the map lands in the OS page cache as a write call
    /// would, without the call. `Ok(None)` when this file system has no
    /// such maps (the store then uses [`FileHandle::write_all_at`]). The
    /// store writes through it only in OS-buffered mode, only to bytes past
    /// everything readers may see, and never lets the file shrink below
    /// `len` while it is mapped.
    fn map_writable(&self, _len: u64) -> io::Result<Option<WritableMap>> {
        Ok(None)
    }
    /// The holes (ranges without storage behind them, read as zeros) in
    /// the first `len` bytes of a sparse file, in order. A copy into a
    /// writable map that lands in a hole on a full disk, and on tmpfs even
    /// a read from a map, kills the process with `SIGBUS` instead of
    /// failing, so a writable open fills them first. By default (and where
    /// the platform cannot tell) none.
    fn holes(&self, _len: u64) -> io::Result<Vec<std::ops::Range<u64>>> {
        Ok(Vec::new())
    }

    /// Starts writing back the dirty pages of `range` without waiting for
    /// them and without promising anything: a later sync still has to
    /// wait for them, but finds less to do. (On Linux `sync_file_range`
    /// with only `SYNC_FILE_RANGE_WRITE`, which leaves the file's recorded
    /// write-back errors to the next sync.) An error is a write-back that
    /// failed in the call itself (some, such as a delayed block allocation
    /// that failed, are reported to this call only, the pages dropped):
    /// the caller must treat it as a failed write. Where the file system
    /// cannot do it, nothing (`Ok`). By default nothing.
    fn start_writeback(&self, _range: std::ops::Range<u64>) -> io::Result<()> {
        Ok(())
    }

    /// Gives the file storage for `range`, extending it to `range.end` if
    /// shorter, without writing anything: the new bytes read as zeros and
    /// a later write there, or a copy into a writable map, cannot fail for
    /// lack of space (on Linux `fallocate` with mode 0, which never
    /// changes bytes already there). `Ok(false)` where the platform or
    /// file system cannot (the caller then writes zeros). By default
    /// `Ok(false)`.
    fn reserve(&self, _range: std::ops::Range<u64>) -> io::Result<bool> {
        Ok(false)
    }

    /// Reads `range` into the OS page cache now, in the calling thread, so
    /// that later copies there find their pages (on Linux through a
    /// read-only map and `MADV_POPULATE_READ`). Advice only: a failure
    /// changes nothing. By default nothing.
    fn prefetch(&self, _range: std::ops::Range<u64>) {}
}

/// A writable shared memory map of the start of a file (see
/// [`FileHandle::map_writable`]).
#[derive(Debug)]
pub struct WritableMap {
    map: memmap2::MmapMut,
}

impl WritableMap {
    /// Wraps a map made by this crate's [`StdFs`] (on Linux only).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn new(map: memmap2::MmapMut) -> Self {
        WritableMap { map }
    }

    /// The mapped length.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Copies `bytes` to `offset`; false (and nothing copied) when they do
    /// not fit in the map.
    #[inline]
    pub fn write_at(&mut self, bytes: &[u8], offset: u64) -> bool {
        let Ok(start) = usize::try_from(offset) else {
            return false;
        };
        let end = start.saturating_add(bytes.len());
        match self.map.get_mut(start..end) {
            Some(target) => {
                target.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Unmaps the pages of `range` (clipped to the map) from this process
    /// without touching the file: a shared map's written bytes are the
    /// page cache's, which keeps them. Done before their write-back
    /// starts: the kernel then has no writable mapping of them to
    /// write-protect page by page, each with a TLB flush on every CPU the
    /// process runs on, but drops the whole range at once. A later copy
    /// there faults the page back in. Advice only: where it fails,
    /// nothing changes.
    pub fn release(&self, range: std::ops::Range<u64>) {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: `sysconf` reads no memory of ours.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
            let (Ok(start), Ok(end)) = (usize::try_from(range.start), usize::try_from(range.end)) else {
                return;
            };
            let Some(start) = start.checked_next_multiple_of(page.max(1)) else {
                return;
            };
            let end = end.min(self.map.len()) / page.max(1) * page.max(1);
            if start >= end {
                return;
            }
            // SAFETY: `MADV_DONTNEED` on a shared file map only drops this
            // process's page table entries: the bytes stay in the file (and
            // its page cache), and a later access maps them again. No
            // reference into the map outlives `write_at`.
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
        #[cfg(not(target_os = "linux"))]
        let _ = range;
    }
}

/// Reads a whole (small) file. A length the memory cannot hold (a side
/// file grown to terabytes, sparse, by damage or another program) is an
/// `OutOfMemory` error, not an aborted process.
pub(crate) fn read_whole<F: FileHandle>(file: &F) -> io::Result<Vec<u8>> {
    let len = file.len()?;
    let too_large = || {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("the file is {len} bytes, more than this process can hold in memory"),
        )
    };
    let len = usize::try_from(len).map_err(|_| too_large())?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(len).map_err(|_| too_large())?;
    buf.resize(len, 0);
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Reads a whole (small) file, `None` when it does not exist. (Asked by
/// opening it: a file whose existence cannot be checked is an error, not
/// an absent file.)
pub(crate) fn read_if_exists<Fs: FileSystem>(fs: &Fs, path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs.open(path, OpenMode::Read) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        opened => read_whole(&opened?).map(Some),
    }
}

/// Reads a whole side file consulted as a witness (of how far the log was
/// durable, or of which store a segment belongs to): `None` when it does
/// not exist or is no regular file, neither of which can witness anything.
/// A file that cannot be read is an error, never taken for an absent one:
/// what it would have proved is unknown.
pub(crate) fn read_witness<Fs: FileSystem>(fs: &Fs, path: &Path) -> crate::Result<Option<Vec<u8>>> {
    match read_if_exists(fs, path) {
        Err(e) if is_not_a_regular_file(&e) => Ok(None),
        read => read.map_err(|e| crate::Error::io(format!("reading {}", path.display()), e)),
    }
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, directory
/// fsync. After a crash the file holds either its old or its new contents.
/// (A [`write_atomic_streamed`] of the bytes a piece at a time.)
pub(crate) fn write_atomic<Fs: FileSystem>(fs: &Fs, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    write_atomic_streamed(fs, dir, name, &mut |emit| {
        bytes.chunks(SYNC_PIECE_BYTES as usize).try_for_each(&mut *emit)?;
        Ok(Vec::new())
    })
    .map(|_| ())
}

/// Where [`write_atomic_streamed`]'s writer puts each piece of a file, in
/// order.
pub(crate) type Emit<'a> = dyn FnMut(&[u8]) -> io::Result<()> + 'a;

/// [`write_atomic`] for a file produced a piece at a time, so that it is
/// never whole in memory: `fill` passes each piece to the emitter it is
/// given, in order, and returns bytes to write over the file's start at
/// the end (a header that needs the whole body first; empty for none).
/// Written pieces are synced every [`SYNC_PIECE_BYTES`], so that no single
/// sync puts a large file in flight at once. Returns the file's length.
pub(crate) fn write_atomic_streamed<Fs: FileSystem>(
    fs: &Fs,
    dir: &Path,
    name: &str,
    fill: &mut dyn FnMut(&mut Emit<'_>) -> io::Result<Vec<u8>>,
) -> io::Result<u64> {
    let tmp = dir.join(format!("{name}.tmp"));
    let target: PathBuf = dir.join(name);
    if fs.exists(&tmp) {
        fs.remove_file(&tmp)?;
    }
    let file = fs.open(&tmp, OpenMode::CreateNew)?;
    let mut at = 0u64;
    let mut unsynced = 0u64;
    let written = fill(&mut |piece: &[u8]| {
        file.write_all_at(piece, at)?;
        at += piece.len() as u64;
        unsynced += piece.len() as u64;
        if unsynced >= SYNC_PIECE_BYTES {
            file.sync_data()?;
            unsynced = 0;
        }
        Ok(())
    })
    .and_then(|start| {
        if start.is_empty() {
            Ok(())
        } else {
            file.write_all_at(&start, 0)
        }
    })
    .and_then(|()| file.sync_all());
    drop(file);
    let renamed = written.and_then(|()| fs.rename(&tmp, &target));
    if let Err(e) = renamed {
        // Best effort: a full disk gets its space back now, not at the next
        // save or open (which remove a leftover all the same).
        let _ = fs.remove_file(&tmp);
        return Err(e);
    }
    fs.sync_dir(dir)?;
    Ok(at)
}

/// Large files written in the background (an index file, a spare segment)
/// are written and synced a piece of this size at a time: one sync of tens
/// of MiB would put all of it in flight at once, and the appenders' own
/// syncs would wait behind it.
pub(crate) const SYNC_PIECE_BYTES: u64 = 1024 * 1024;
