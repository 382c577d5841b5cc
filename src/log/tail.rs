//! The writable end of the log: the active segment file, its zero-filled
//! preallocation, sealing, and rolling over to a new segment.
//!
//! Preallocation is why a durable append costs one data sync: the active
//! segment is extended ahead of the data with zeros that are synced once
//! (file size and block allocation included), so a later append only
//! overwrites allocated blocks and `fdatasync` has no metadata to flush.
//! Zero-filling works the same on every operating system.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use super::segment::{self, SEGMENT_HEADER_BYTES, SegmentHeader};
use crate::error::{IoContext, Result};
use crate::io::{FileHandle, FileSystem, OpenMode, WritableMap};

/// Zeros are written in pieces of this size.
const ZERO_CHUNK_BYTES: usize = 1024 * 1024;
/// Smallest preallocation step.
const PREALLOCATE_STEP_MIN_BYTES: u64 = 1024 * 1024;
/// Largest preallocation step.
const PREALLOCATE_STEP_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// Data written between starts of write-back in the periodic and buffered
/// modes.
pub const WRITEBACK_STEP_BYTES: u64 = 8 * 1024 * 1024;

/// Write-back ranges end on a multiple of this, a multiple of every usual
/// page size (4, 16 or 64 KiB), so that the page still taking appends is
/// never in one.
const WRITEBACK_ALIGN_BYTES: u64 = 64 * 1024;

/// The active segment, owned by whichever appender is writing.
pub struct LogTail<F: FileSystem> {
    /// Segment number.
    pub segment_id: u64,
    /// Its path.
    pub path: PathBuf,
    /// The open file.
    pub file: F::File,
    /// A second handle to the file, opened with it, for syncs made outside
    /// the tail's lock (see [`LogTail::sync_handle`]); `None` on a
    /// read-only store.
    sync_file: Option<Arc<F::File>>,
    /// Data before here has had its write-back started (see
    /// [`LogTail::start_writeback_step`]).
    writeback_from: u64,
    /// Bytes of the file that exist and are zero-filled or written.
    pub allocated: u64,
    /// The configured segment size.
    pub segment_size: u64,
    /// A writable map of the allocated bytes, made on the first
    /// [`LogTail::write_mapped`] and dropped whenever the file's length
    /// changes.
    write_map: WriteMap,
}

/// Whether [`LogTail::write_mapped`] copies into a map.
enum WriteMap {
    /// Not asked yet, or dropped since the file's length changed.
    Unknown,
    /// Mapped: copies go here.
    Mapped(WritableMap),
    /// The file system has no writable maps for this file: write calls
    /// (asked once per file, not once per append).
    Unavailable,
}

impl<F: FileSystem> LogTail<F> {
    /// Creates segment `id` durably (temp file, header, preallocation,
    /// sync, rename, directory sync) and returns it as the active tail;
    /// with `sync_handle`, with its second handle (see [`LogTail::new`]).
    pub fn create(
        fs: &F,
        dir: &Path,
        header: SegmentHeader,
        segment_size: u64,
        sync_handle: bool,
    ) -> Result<LogTail<F>> {
        let path = segment::path(dir, header.segment_id);
        let tmp = dir.join(format!("{}.tmp", segment::file_name(header.segment_id)));
        let ctx = || format!("creating segment {}", path.display());
        if fs.exists(&tmp) {
            fs.remove_file(&tmp).ctx(ctx)?;
        }
        let file = fs.open(&tmp, OpenMode::CreateNew).ctx(ctx)?;
        file.write_all_at(&header.encode(), 0).ctx(ctx)?;
        let allocated = first_allocation(segment_size);
        write_zeros(&file, SEGMENT_HEADER_BYTES, allocated).ctx(ctx)?;
        file.sync_all().ctx(ctx)?;
        drop(file);
        fs.rename(&tmp, &path).ctx(ctx)?;
        fs.sync_dir(dir).ctx(ctx)?;
        LogTail::open_placed(fs, header.segment_id, &path, allocated, segment_size, sync_handle).ctx(ctx)
    }

    /// Makes the spare file at `spare` (`len` synced zeros, see
    /// [`super::spare`]) segment `header.segment_id`: header written over
    /// its first zeros and synced, then renamed into place and the
    /// directory synced. The same invariant as [`LogTail::create`]: a
    /// segment file has a durable header from the moment it has its name.
    pub fn adopt(
        fs: &F,
        dir: &Path,
        header: SegmentHeader,
        (spare, file, len): (PathBuf, F::File, u64),
        segment_size: u64,
        sync_handle: bool,
    ) -> Result<LogTail<F>> {
        let path = segment::path(dir, header.segment_id);
        let ctx = || format!("creating segment {} from {}", path.display(), spare.display());
        file.write_all_at(&header.encode(), 0).ctx(ctx)?;
        file.sync_data().ctx(ctx)?;
        // Closed across the rename, as in `create`: some systems (Windows)
        // do not rename open files.
        drop(file);
        fs.rename(&spare, &path).ctx(ctx)?;
        fs.sync_dir(dir).ctx(ctx)?;
        LogTail::open_placed(fs, header.segment_id, &path, len, segment_size, sync_handle).ctx(ctx)
    }

    /// Opens segment `id`, just put in place at `path` with `allocated`
    /// bytes, as the active tail (with its second handle when
    /// `sync_handle`, see [`LogTail::new`]).
    fn open_placed(
        fs: &F,
        id: u64,
        path: &Path,
        allocated: u64,
        segment_size: u64,
        sync_handle: bool,
    ) -> std::io::Result<LogTail<F>> {
        let file = fs.open(path, OpenMode::ReadWrite)?;
        let sync_file = sync_handle.then(|| fs.open(path, OpenMode::ReadWrite)).transpose()?;
        Ok(LogTail::new(
            id,
            path.to_path_buf(),
            file,
            sync_file,
            allocated,
            segment_size,
        ))
    }

    /// The tail of an existing segment file whose first `allocated` bytes
    /// exist; `sync_file` is a second handle to it, opened before anything
    /// more is written through `file`, for the syncs of the periodic and
    /// buffered modes (`None` in durable mode and on a read-only store).
    pub fn new(
        segment_id: u64,
        path: PathBuf,
        file: F::File,
        sync_file: Option<F::File>,
        allocated: u64,
        segment_size: u64,
    ) -> LogTail<F> {
        LogTail {
            segment_id,
            path,
            file,
            sync_file: sync_file.map(Arc::new),
            writeback_from: 0,
            allocated,
            segment_size,
            write_map: WriteMap::Unknown,
        }
    }

    /// Makes sure bytes up to `end` are preallocated. Returns true when the
    /// file grew (readers then need a new, longer map). With `sync`, the
    /// zeros and the new length are made durable, so that later data syncs
    /// have no metadata to flush (not needed when nothing is synced).
    /// `written`: zeros already there, written ahead by another thread
    /// (see [`super::ahead`]), which are not written again.
    pub fn ensure_allocated(&mut self, end: u64, sync: bool, written: Option<Range<u64>>) -> Result<bool> {
        if end <= self.allocated {
            return Ok(false);
        }
        self.drop_write_map();
        let step = self.step();
        let target = end.max(self.allocated + step).min(self.segment_size.max(end));
        let ctx = || format!("preallocating {}", self.path.display());
        let from = match written {
            Some(zeros) if zeros.start <= self.allocated => zeros.end.clamp(self.allocated, target),
            _ => self.allocated,
        };
        write_zeros(&self.file, from, target).ctx(ctx)?;
        if sync {
            self.file.sync_all().ctx(ctx)?;
        }
        self.allocated = target;
        Ok(true)
    }

    /// The range the next preallocation step would add (none at the
    /// segment size): what may be zero-filled ahead of need.
    pub fn next_step(&self) -> Option<Range<u64>> {
        let end = self.allocated.saturating_add(self.step()).min(self.segment_size);
        (end > self.allocated).then_some(self.allocated..end)
    }

    /// The size of the next preallocation step: the current length, kept
    /// between 1 and 4 MiB.
    fn step(&self) -> u64 {
        self.allocated
            .clamp(PREALLOCATE_STEP_MIN_BYTES, PREALLOCATE_STEP_MAX_BYTES)
    }

    /// Writes bytes at `offset` (already preallocated).
    pub fn write(&self, bytes: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(bytes, offset)
            .ctx(|| format!("writing {}", self.path.display()))
    }

    /// Writes bytes at `offset` (already preallocated) by copying them into
    /// a writable map of the file, without a system call, where the file
    /// system has such maps; with a write call otherwise. The bytes are in
    /// the OS page cache either way: a process crash does not lose them.
    pub fn write_mapped(&mut self, bytes: &[u8], offset: u64) -> Result<()> {
        if matches!(self.write_map, WriteMap::Unknown) {
            let map = self
                .file
                .map_writable(self.allocated)
                .ctx(|| format!("mapping {} for writing", self.path.display()))?;
            self.write_map = map.map_or(WriteMap::Unavailable, WriteMap::Mapped);
        }
        let copied = match &mut self.write_map {
            WriteMap::Mapped(map) => map.write_at(bytes, offset),
            WriteMap::Unknown | WriteMap::Unavailable => false,
        };
        if copied { Ok(()) } else { self.write(bytes, offset) }
    }

    /// Unmaps before the file's length changes; a file without maps stays
    /// without.
    fn drop_write_map(&mut self) {
        if matches!(self.write_map, WriteMap::Mapped(_)) {
            self.write_map = WriteMap::Unknown;
        }
    }

    /// Writes `[from, to)` back with the same bytes, so that their pages
    /// are dirty again (see [`write_back`]).
    pub fn write_back(&self, from: u64, to: u64) -> Result<()> {
        write_back(&self.file, from, to).ctx(|| format!("writing back {}", self.path.display()))
    }

    /// Makes written data durable.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().ctx(|| format!("syncing {}", self.path.display()))
    }

    /// Starts the write-back of the data written before `end`, once
    /// [`WRITEBACK_STEP_BYTES`] more of it has been written since the last
    /// time, without waiting for it (periodic and buffered modes): the
    /// segment's seal, which the appender waits for, then finds at most a
    /// step's data left to flush instead of up to a whole segment's. The
    /// page that `end` falls in is left alone (more appends go there).
    /// Fails when the write-back failed in the call (see
    /// [`FileHandle::start_writeback`]): a failed write, which poisons the
    /// store.
    pub fn start_writeback_step(&mut self, end: u64) -> Result<()> {
        let to = end - end % WRITEBACK_ALIGN_BYTES;
        if to < self.writeback_from.saturating_add(WRITEBACK_STEP_BYTES) {
            return Ok(());
        }
        if let WriteMap::Mapped(map) = &self.write_map {
            map.release(self.writeback_from..to);
        }
        self.file
            .start_writeback(self.writeback_from..to)
            .ctx(|| format!("writing back {}", self.path.display()))?;
        self.writeback_from = to;
        Ok(())
    }

    /// Gives the tail its second handle (see [`LogTail::new`]).
    pub fn attach_sync_file(&mut self, file: F::File) {
        self.sync_file = Some(Arc::new(file));
    }

    /// The second handle to the segment and its path, for a sync made
    /// without holding the tail: appends go on meanwhile. A handle of its
    /// own, opened with the segment before any data was written, because a
    /// failed writeback is reported once to each open file description (on
    /// Linux): a sync through `file` cannot take the error away from this
    /// handle's sync, nor this one from the writer's.
    pub fn sync_handle(&self) -> Option<(Arc<F::File>, PathBuf)> {
        self.sync_file.clone().map(|f| (f, self.path.clone()))
    }

    /// Seals the segment: syncs its data, cuts the unused preallocation at
    /// `data_end`, and syncs the new size. The file never changes again.
    pub fn seal(&mut self, data_end: u64) -> Result<()> {
        self.drop_write_map();
        let ctx = || format!("sealing {}", self.path.display());
        self.file.sync_data().ctx(ctx)?;
        self.file.set_len(data_end).ctx(ctx)?;
        self.file.sync_all().ctx(ctx)?;
        self.allocated = data_end;
        Ok(())
    }

    /// Maps the allocated part of the file for readers.
    pub fn map(&self) -> Result<Bytes> {
        self.file
            .map(self.allocated)
            .ctx(|| format!("mapping {}", self.path.display()))
    }

    /// The header of the segment after this one, once this one is sealed
    /// with its last batch ending at `previous_end` with CRC
    /// `previous_crc` (64 and 0 when it holds none).
    pub fn next_header(
        &self,
        store_id: Uuid,
        first_position: u64,
        previous_end: u64,
        previous_crc: u32,
    ) -> SegmentHeader {
        SegmentHeader {
            store_id,
            segment_id: self.segment_id + 1,
            first_position,
            previous_end,
            previous_crc,
        }
    }
}

/// Size of a new segment's first preallocation.
fn first_allocation(segment_size: u64) -> u64 {
    segment_size.min(SEGMENT_HEADER_BYTES + PREALLOCATE_STEP_MIN_BYTES)
}

/// The source of [`write_zeros`]: in the zero-filled data section, so it
/// costs no allocation (nor a memset of a reused one) per call.
static ZEROS: [u8; ZERO_CHUNK_BYTES] = [0; ZERO_CHUNK_BYTES];

/// Writes zeros over `[from, to)`.
pub fn write_zeros<H: FileHandle>(file: &H, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = &ZEROS;
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZERO_CHUNK_BYTES as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Reads `[from, to)` and writes the same bytes back, a megabyte at a
/// time: the bytes do not change, but their pages are dirty again, so the
/// next sync writes them (after a failed sync, Linux leaves the pages it
/// could not write clean: see `Core::write_back_unsynced`).
pub fn write_back<H: FileHandle>(file: &H, from: u64, to: u64) -> std::io::Result<()> {
    let mut chunk = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at).map_or(chunk.len(), |n| n.min(chunk.len()));
        file.read_exact_at(&mut chunk[..n], at)?;
        file.write_all_at(&chunk[..n], at)?;
        at += n as u64;
    }
    Ok(())
}
