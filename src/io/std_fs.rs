//! The real file system, through `std::fs` and `memmap2`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use bytes::Bytes;

use super::{FileHandle, FileSystem, OpenMode, WritableMap};

/// The operating system's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

/// An open file of [`StdFs`].
#[derive(Debug)]
pub struct StdFile {
    file: File,
}

impl FileSystem for StdFs {
    type File = StdFile;
    const MAP_IS_LIVE: bool = true;

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn try_lock_dir(&self, dir: &Path, shared: bool) -> io::Result<Option<super::DirectoryLock>> {
        #[cfg(unix)]
        {
            // A directory that cannot be opened or locked (a file system
            // without such locks) leaves the lock file's lock alone.
            let Ok(handle) = fs::File::open(dir) else {
                return Ok(Some(super::DirectoryLock::default()));
            };
            let locked = if shared {
                handle.try_lock_shared()
            } else {
                handle.try_lock()
            };
            match locked {
                Ok(()) => Ok(Some(super::DirectoryLock::held_by(handle))),
                Err(fs::TryLockError::WouldBlock) => Ok(None),
                Err(fs::TryLockError::Error(_)) => Ok(Some(super::DirectoryLock::default())),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (dir, shared);
            Ok(Some(super::DirectoryLock::default()))
        }
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<StdFile> {
        let mut options = OpenOptions::new();
        options.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::ReadWrite => {
                options.write(true);
            }
            OpenMode::CreateNew => {
                options.write(true).create_new(true);
            }
            OpenMode::CreateOrOpen => {
                options.write(true).create(true).truncate(false);
            }
        }
        // A FIFO in place of a store file would block the open until some
        // other process opened it for writing: never wait for one. (The
        // flag changes nothing for a regular file.) Elsewhere, a look
        // before opening catches all but a FIFO put there in between.
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NONBLOCK);
        }
        #[cfg(not(target_os = "linux"))]
        if fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            return Err(not_a_regular_file());
        }
        let file = options.open(path).map_err(|e| match e.kind() {
            // A directory opened for writing.
            io::ErrorKind::IsADirectory => not_a_regular_file(),
            _ => e,
        })?;
        // A directory (or device, or pipe) opens fine for reading, and only
        // the map or read after would fail, with a confusing error
        // (ENODEV). Every file the store opens is a regular file.
        if !file.metadata()?.is_file() {
            return Err(not_a_regular_file());
        }
        Ok(StdFile { file })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    #[cfg(unix)]
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    #[cfg(not(unix))]
    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        // Windows cannot open a directory as a file without extra flags;
        // NTFS journals metadata changes such as renames itself.
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

impl FileHandle for StdFile {
    #[cfg(unix)]
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }

    #[cfg(windows)]
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match self.file.seek_read(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    #[cfg(unix)]
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, buf, offset)
    }

    #[cfg(windows)]
    fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match self.file.seek_write(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn map(&self, len: u64) -> io::Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
        // SAFETY: a memory map is sound as long as the mapped bytes do not
        // change while referenced. The store holds an exclusive lock on its
        // directory, never truncates a file below a length it has mapped
        // while readers may use the mapping, and only hands out slices of
        // bytes that are already written and are never written again (new
        // appends go past them; a torn tail is zeroed during open, before
        // any reader exists). The index file stays mapped while the store
        // is open (its tables are read in place) and is only ever replaced
        // by renaming a new file over it, never written in place. Other
        // programs modifying the files while the store is open are outside
        // this contract, as for any database.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&self.file)? };
        #[cfg(target_os = "linux")]
        self.read_in_holes(&map, len as u64)?;
        Ok(Bytes::from_owner(map))
    }

    /// Linux only: its page cache is unified, so `fdatasync` and `fsync`
    /// also write back bytes copied into a shared map (other systems may
    /// need an `msync` first; they keep using write calls). And only on
    /// file systems that overwrite allocated blocks in place (see
    /// [`overwrites_in_place`]).
    #[cfg(target_os = "linux")]
    fn map_writable(&self, len: u64) -> io::Result<Option<WritableMap>> {
        if len == 0 || !overwrites_in_place(&self.file)? {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
        // SAFETY: as for `map` above. The writer alone holds this map (in
        // the log tail, under its lock) and copies into it only bytes past
        // the published end of the log, which no reader has been handed.
        // The file's first `len` bytes exist (preallocated with zeros
        // written or space reserved with `fallocate`, so their blocks are
        // allocated and a copy cannot fault for lack of space), and the
        // tail drops the map before it ever cuts the file.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&self.file)? };
        Ok(Some(WritableMap::new(map)))
    }

    /// Linux: found with `SEEK_HOLE` and `SEEK_DATA` (a file system
    /// without them reports the whole file as data). Moves the file offset,
    /// which the store never uses (it reads and writes at explicit offsets).
    #[cfg(target_os = "linux")]
    fn start_writeback(&self, range: std::ops::Range<u64>) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let Some((from, len)) = offset_and_len(&range) else {
            return Ok(());
        };
        // SAFETY: `sync_file_range` on a descriptor that stays open for the
        // call; it reads and writes no memory of ours.
        let done = unsafe { libc::sync_file_range(self.file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE) };
        if done == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        // A file system (or file) without it: nothing was started, nothing
        // lost. Anything else is a failed write-back, reported here only.
        match e.raw_os_error() {
            Some(libc::EINVAL | libc::ESPIPE | libc::ENOSYS | libc::EOPNOTSUPP) => Ok(()),
            _ => Err(e),
        }
    }

    #[cfg(target_os = "linux")]
    fn reserve(&self, range: std::ops::Range<u64>) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        let Some((from, len)) = offset_and_len(&range) else {
            return Ok(false);
        };
        if len == 0 {
            return Ok(true);
        }
        loop {
            // SAFETY: `fallocate` on a descriptor that stays open for the
            // call; it reads and writes no memory of ours.
            let done = unsafe { libc::fallocate64(self.file.as_raw_fd(), 0, from, len) };
            if done == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                // A file system without it: the caller writes zeros.
                Some(libc::EOPNOTSUPP | libc::ENOSYS) => return Ok(false),
                _ => return Err(e),
            }
        }
    }

    /// Only where the store writes through a map ([`overwrites_in_place`]):
    /// elsewhere its appends are write calls, which need no page read in
    /// (and on a network file system the read would cross the network).
    #[cfg(target_os = "linux")]
    fn prefetch(&self, range: std::ops::Range<u64>) {
        let (Ok(from), Ok(to)) = (usize::try_from(range.start), usize::try_from(range.end)) else {
            return;
        };
        if !matches!(overwrites_in_place(&self.file), Ok(true)) {
            return;
        }
        // SAFETY: as for `map` above; the map lives only for this call and
        // nobody reads through it (the advice faults its pages in).
        let Ok(map) = (unsafe { memmap2::MmapOptions::new().len(to).map(&self.file) }) else {
            return;
        };
        let _ = map.advise_range(memmap2::Advice::PopulateRead, from, to.saturating_sub(from));
    }

    #[cfg(target_os = "linux")]
    fn holes(&self, len: u64) -> io::Result<Vec<std::ops::Range<u64>>> {
        use std::os::fd::AsRawFd;
        let seek = |from: u64, whence: libc::c_int| -> io::Result<Option<u64>> {
            let Ok(from) = libc::off_t::try_from(from) else {
                return Ok(None);
            };
            // SAFETY: `lseek` on a descriptor that stays open for the call;
            // it reads no memory of ours.
            let at = unsafe { libc::lseek(self.file.as_raw_fd(), from, whence) };
            if at >= 0 {
                return Ok(u64::try_from(at).ok());
            }
            let e = io::Error::last_os_error();
            // ENXIO: no hole or data at or after `from` (past the end).
            if e.raw_os_error() == Some(libc::ENXIO) {
                Ok(None)
            } else {
                Err(e)
            }
        };
        let mut holes = Vec::new();
        let mut at = 0;
        while at < len {
            let Some(hole) = seek(at, libc::SEEK_HOLE)?.filter(|&h| h < len) else {
                break;
            };
            let data = seek(hole, libc::SEEK_DATA)?.map_or(len, |d| d.min(len));
            if data <= hole {
                break;
            }
            holes.push(hole..data);
            at = data;
        }
        Ok(holes)
    }

    fn try_lock(&self) -> io::Result<bool> {
        match self.file.try_lock() {
            Ok(()) => Ok(true),
            Err(fs::TryLockError::WouldBlock) => Ok(false),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn try_lock_shared(&self) -> io::Result<bool> {
        match self.file.try_lock_shared() {
            Ok(()) => Ok(true),
            Err(fs::TryLockError::WouldBlock) => Ok(false),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// A byte range as the offset and length Linux's range calls take; `None`
/// when it does not fit them.
#[cfg(target_os = "linux")]
fn offset_and_len(range: &std::ops::Range<u64>) -> Option<(libc::off64_t, libc::off64_t)> {
    let from = libc::off64_t::try_from(range.start).ok()?;
    let len = libc::off64_t::try_from(range.end.saturating_sub(range.start)).ok()?;
    Some((from, len))
}

/// Whether the file lives on a file system that overwrites allocated
/// blocks in place and never faults a copy into a map for its own reasons:
/// ext2/3/4 or tmpfs. A copy into a writable map reports no error: when
/// the file system cannot store a dirtied page (a full disk), the process
/// gets `SIGBUS` instead of an `ENOSPC` the store could return. On these
/// file systems the preallocation (zeros written, or space reserved with
/// `fallocate`) has already given every block a copy can touch.
/// Copy-on-write file systems (btrfs, ZFS, bcachefs) and log-structured or
/// network ones allocate anew on each overwrite, so the store keeps write
/// calls there. So does XFS: a segment whose blocks are shared with a
/// reflink copy (`cp -a` makes one) is copy-on-write too, and a full disk
/// then kills a map writer; and XFS shut down (after a metadata I/O
/// error, or `xfs_io -x -c shutdown`) answers a write fault with `SIGBUS`,
/// where a write call gets `EIO` (`tests/real_fs_review.rs`).
#[cfg(target_os = "linux")]
fn overwrites_in_place(file: &File) -> io::Result<bool> {
    const EXT4_SUPER_MAGIC: i64 = 0xEF53;
    Ok(matches!(file_system_kind(file)?, EXT4_SUPER_MAGIC | TMPFS_MAGIC))
}

impl StdFile {
    /// On tmpfs, reads the holes of `map`'s file into memory (a sparse
    /// copy of a store file: `cp --sparse=always`, `rsync -S`, or `cp` of a
    /// segment whose reserved end ext4 reports as a hole). tmpfs gives a
    /// hole a page at the first access, even a read through a map, and
    /// when it is full that access kills the process with `SIGBUS`; read
    /// in here, a full tmpfs is an error (`StorageFull`) instead, and the
    /// map's later reads cannot fail. Nothing is written: the pages read
    /// in hold the zeros the holes read as. Elsewhere a hole reads as
    /// zeros without storage, and this is one `fstatfs`.
    #[cfg(target_os = "linux")]
    fn read_in_holes(&self, map: &memmap2::Mmap, len: u64) -> io::Result<()> {
        // A file system that cannot say what it is: maps as before.
        if file_system_kind(&self.file).ok() != Some(TMPFS_MAGIC) {
            return Ok(());
        }
        for hole in self.holes(len)? {
            let (Ok(from), Ok(to)) = (usize::try_from(hole.start), usize::try_from(hole.end)) else {
                continue;
            };
            match map.advise_range(memmap2::Advice::PopulateRead, from, to - from) {
                Ok(()) => {}
                // A kernel without MADV_POPULATE_READ (before 5.14).
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(()),
                // The access would have been a SIGBUS.
                Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {
                    return Err(io::Error::new(
                        io::ErrorKind::StorageFull,
                        format!(
                            "bytes {from} to {to} are a hole (a sparse copy?), and the file system (tmpfs) has no \
                             room to read them in"
                        ),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// `statfs`'s `f_type` of tmpfs.
#[cfg(target_os = "linux")]
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The kind of file system `file` is on (`statfs`'s `f_type`).
#[cfg(target_os = "linux")]
fn file_system_kind(file: &File) -> io::Result<i64> {
    use std::os::fd::AsRawFd;
    // SAFETY: `statfs` is a plain C struct of integers, for which all
    // zeros is a valid value.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the duration of the call, and
    // `stats` is a valid, writable `statfs` that the call fills in.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut stats) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // `f_type`'s type differs between targets
    Ok(stats.f_type as i64)
}

/// The error for a store file that is a directory, FIFO or device.
fn not_a_regular_file() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, super::NotARegularFile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_not_opened_as_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = StdFs.open(dir.path(), OpenMode::Read).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), "not a regular file");
    }

    /// Bytes copied into a writable map are what the file holds, and the
    /// map is offered exactly on file systems that overwrite in place (on
    /// Linux; never elsewhere).
    #[test]
    fn a_writable_map_writes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = StdFs.open(&path, OpenMode::CreateNew).unwrap();
        file.write_all_at(&[0u8; 8192], 0).unwrap();
        let map = file.map_writable(8192).unwrap();
        #[cfg(target_os = "linux")]
        assert_eq!(map.is_some(), overwrites_in_place(&file.file).unwrap());
        #[cfg(not(target_os = "linux"))]
        assert!(map.is_none());
        let Some(mut map) = map else { return };
        assert_eq!(map.len(), 8192);
        assert!(map.write_at(b"hello", 4000));
        assert!(!map.write_at(b"past the end", 8190), "a copy past the map is refused");
        let mut buf = [0u8; 7];
        file.read_exact_at(&mut buf, 3999).unwrap();
        assert_eq!(&buf, b"\0hello\0");
        drop(map);
        file.sync_data().unwrap();
        assert_eq!(std::fs::read(&path).unwrap()[4000..4005], *b"hello");
    }

    /// On tmpfs (`/dev/shm`, where a machine has it there), a map of a
    /// sparse file reads its holes in when it is made, so that no read
    /// through it can need a page later; the bytes stay what they were.
    /// (A full tmpfs failing the map instead: `tests/real_fs.rs`.)
    #[cfg(target_os = "linux")]
    #[test]
    fn a_map_on_tmpfs_reads_the_holes_in() {
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let path = dir.path().join("sparse");
        let file = StdFs.open(&path, OpenMode::CreateNew).unwrap();
        if file_system_kind(&file.file).ok() != Some(TMPFS_MAGIC) {
            return;
        }
        file.set_len(1 << 20).unwrap();
        file.write_all_at(b"data", 512 << 10).unwrap();
        assert!(!file.holes(1 << 20).unwrap().is_empty(), "set_len made no hole");
        let map = file.map(1 << 20).unwrap();
        assert_eq!(file.holes(1 << 20).unwrap(), Vec::new(), "the holes were not read in");
        assert_eq!(&map[512 << 10..(512 << 10) + 4], b"data");
        assert!(map[..512 << 10].iter().all(|&b| b == 0));
        assert_eq!(std::fs::read(&path).unwrap(), &map[..]);
    }
}
