//! Opening a store: find the segments, load the index file when it can be
//! trusted, replay the log after it, and deal with the log's tail.
//!
//! # Decision table
//!
//! | what open finds                                         | decision                                  |
//! |---------------------------------------------------------|-------------------------------------------|
//! | no segment file                                         | new store (if `create_if_missing`)        |
//! | no segment file, but the index, checkpoints or snapshots | refuse: `Corruption` (the log is missing) |
//! | file of a store (starting with its magic)               |                                           |
//! | no segment file, but a file or folder of one of those    | refuse: `InvalidInput`, create nothing    |
//! | names, or a `LOCK` file, that is another program's       | (`foreign_files`)                         |
//! | the store's own `*.tmp` files (`is_own_temp_file`)      | remove (unfinished creations or renames)  |
//! | a gap in segment numbers, or a bad segment header       | refuse: `Corruption`                      |
//! | segments of different stores (store ids differ)         | refuse: `Corruption` naming the segment   |
//! |                                                         | whose id most of the store's files lack   |
//! | index file missing, corrupt, of another store           | rebuild the index from the whole log      |
//! | index file with a sound header but an unusable body     | rebuild, holding the log to the header:   |
//! | log shorter than the index file's header says was synced | refuse: `Corruption` (acknowledged data)  |
//! | log holding another batch where that header's last     | refuse: `Corruption` (acknowledged events |
//! | batch ended                                             | replaced)                                 |
//! | index file behind the log                               | load it, replay the log after it          |
//! | sealed segment: invalid bytes after its last batch      | refuse: `Corruption` (it was synced)      |
//! | last segment: zeros after the last batch                | clean end                                 |
//! | last segment: invalid bytes, no valid batch after them, | torn tail: copy to quarantine/, zero, sync|
//! | past the index file's synced end, every saved           |                                           |
//! | checkpoint's position and every saved snapshot's version|                                           |
//! | the same, but a checkpoint names a later position, or a | refuse: `Corruption` (it was synced)      |
//! | snapshot a later version of a stream                    |                                           |
//! | last segment: invalid bytes, a valid batch after them   | refuse: `Corruption` naming file, offset  |
//! | batch positions or stream versions that do not follow   | refuse: `Corruption`                      |
//! | a segment header's first position that does not follow  | refuse: `Corruption`                      |
//! | (the log before it, or the index file's events in it)   |                                           |
//!
//! A writable open syncs the last segment before it publishes the log: what
//! it holds may be only in the page cache (a process that died before its
//! sync), and published events count as durable.
//!
//! A read-only open makes the same decisions but writes nothing: it never
//! creates a store, and leaves `*.tmp` files and a torn tail in place (the
//! published log ends before the tail, so readers never reach it).
//!
//! Why a torn tail may be cut: a batch is acknowledged (in durable mode)
//! only after the sync that covers it, and batches are written in order, so
//! bytes after the last valid batch were never acknowledged. A valid batch
//! after invalid bytes cannot come from a torn append, so it is reported.

mod chain;
mod replay;

pub(crate) use chain::{
    chain_broken, chain_contradicted, durable_floor_of, floor_batch_replaced, last_batch_of, short_of_floor,
};
use chain::{durable_floor, log_holds_batch};
pub(crate) use replay::durable_proof;
use replay::{TailRules, keep_torn_tail};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use crate::error::{Error, IoContext, Result};
use crate::index::Index;
use crate::index::file::{self as index_file, Checkpoint};
use crate::io::{self, FileHandle, FileSystem, OpenMode};
use crate::log::segment::{self, SEGMENT_HEADER_BYTES, SegmentHeader};
use crate::log::tail::{LogTail, write_back};
use crate::log::view::{SegmentView, Segments};
use crate::options::Options;

/// Where the published log ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEnd {
    /// Segment of the end.
    pub segment: u64,
    /// Offset just past the last batch.
    pub offset: u64,
    /// CRC field of the last batch (0 when the log is empty).
    pub last_batch_crc: u32,
}

/// What open found and did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Whether the store was created by this open.
    pub created: bool,
    /// Whether the index file was loaded (else the index was rebuilt).
    pub index_loaded: bool,
    /// Why the index file was not used, when it was not.
    pub index_rejected: Option<String>,
    /// Events replayed from the log.
    pub replayed_events: u64,
    /// Log bytes replayed.
    pub replayed_bytes: u64,
    /// Bytes of a torn final write that were zeroed (found and left in
    /// place by a read-only open).
    pub torn_tail_bytes: u64,
    /// Where a copy of those bytes was kept before they were zeroed:
    /// `quarantine/<N>.seg.torn-<offset>` (from the offset where the
    /// valid log ends to the last non-zero byte).
    pub torn_tail_kept: Option<PathBuf>,
    /// Why no copy could be kept (a full disk, say): the bytes were zeroed
    /// all the same, as a torn write may be.
    pub torn_tail_not_kept: Option<String>,
    /// Number of segment files.
    pub segments: usize,
}

/// Everything an open store starts from.
pub(crate) struct Recovered<F: FileSystem> {
    pub store_id: Uuid,
    pub index: Index,
    pub end: LogEnd,
    pub tail: LogTail<F>,
    pub segments: Segments,
    pub report: RecoveryReport,
    /// The log end the index file on disk covers, when it was loaded.
    pub index_file_end: Option<LogEnd>,
    /// The loaded index file's size (0 when none was loaded).
    pub index_file_bytes: u64,
}

/// A segment found on disk.
struct Found<F: FileSystem> {
    header: SegmentHeader,
    path: PathBuf,
    /// The last segment's file, which becomes the log's tail. Earlier
    /// segments are only read, through their maps: their files are closed
    /// at once, so that a store of any number of segments opens within a
    /// small limit of open files.
    file: Option<F::File>,
    map: Bytes,
}

/// Opens (or creates) the log in `dir`. The caller holds the store lock.
pub(crate) fn recover<F: FileSystem>(fs: &F, dir: &Path, options: &Options) -> Result<Recovered<F>> {
    let names = fs.list_dir(dir).ctx(|| format!("listing {}", dir.display()))?;
    if !options.read_only {
        remove_leftovers(fs, dir, &names)?;
    }
    let mut ids: Vec<u64> = names.iter().filter_map(|n| segment::parse_file_name(n)).collect();
    ids.sort_unstable();
    if ids.is_empty() {
        if let Some(missing) = missing_log(fs, dir, &names) {
            return Err(missing);
        }
        if !options.create_if_missing || options.read_only {
            return Err(Error::InvalidInput(format!("no annal store in {}", dir.display())));
        }
        // (`Store::open_with` refused another program's files of the
        // store's names, `foreign_files`, before it took the lock.)
        return create(fs, dir, options);
    }
    check_contiguous(dir, &ids)?;
    if !options.read_only {
        // Always, whether a leftover was removed or not: the segment names
        // found here (one renamed into place, the spare) may not be
        // durable yet, left by a process that failed or died before its
        // own directory sync, and the events this open publishes, and
        // those appended after it, are in those files. (Not for a new
        // store: its first segment's creation syncs the directory, so
        // that no power loss leaves its `LOCK` without a segment.)
        fs.sync_dir(dir).ctx(|| format!("syncing {}", dir.display()))?;
    }
    let found = open_segments(fs, dir, &ids, options.read_only)?;
    let index_bytes = read_index_file(fs, dir)?;
    let index_len = index_bytes.as_ref().map_or(0, |b| b.len() as u64);
    let floor = index_bytes.as_ref().ok().and_then(|b| durable_floor(b, &found));
    let (index, checkpoint, rejected) = match index_bytes.and_then(|b| load_index(&b, &found)) {
        Ok((index, checkpoint)) => (index, Some(checkpoint), None),
        Err(reason) => (Index::default(), None, Some(reason)),
    };
    let store_id = found[0].header.store_id;
    let proven = |index: &Index, torn_bytes: u64| durable_proof(fs, dir, store_id, index, torn_bytes);
    let keep = |segment: &Path, offset: u64, bytes: &[u8]| keep_torn_tail(fs, dir, segment, offset, bytes);
    let tail_rules = TailRules {
        floor: floor.as_ref(),
        proven: &proven,
        keep: &keep,
    };
    let mut recovered = replay::replay(options, found, index, checkpoint, rejected, &tail_rules)?;
    if !options.read_only && options.durability != crate::options::Durability::Sync {
        let path = recovered.tail.path.clone();
        let file = fs
            .open(&path, OpenMode::ReadWrite)
            .ctx(|| format!("opening {}", path.display()))?;
        recovered.tail.attach_sync_file(file);
    }
    if recovered.index_file_end.is_some() {
        recovered.index_file_bytes = index_len;
    }
    Ok(recovered)
}

/// The files a store keeps beside its log, each with the magic its bytes
/// start with (FORMAT.md). Each is written only once the store's first
/// segment exists.
pub(crate) const SIDE_FILES: [(&str, &[u8; 8]); 3] = [
    (index_file::FILE_NAME, &index_file::MAGIC),
    (crate::checkpoint::CHECKPOINTS_FILE_NAME, crate::checkpoint::MAGIC),
    (crate::snapshot::file::FILE_NAME, &crate::snapshot::file::FILE_MAGIC),
];

/// The error for a directory that holds no segment file but a store's
/// index, checkpoints or snapshots file (`names` lists the directory): the
/// log is missing, deleted or left behind by a restore, and was never
/// empty. `None` when none of them is there: the directory holds no store.
/// Without this check a writable open would start a new, empty store
/// beside the old one's files. A file of one of those names counts when it
/// starts with its magic, or cannot be read (it may be one); a directory,
/// or a file of other bytes (another program's `checkpoints` folder, say),
/// does not.
pub(crate) fn missing_log<F: FileSystem>(fs: &F, dir: &Path, names: &[String]) -> Option<Error> {
    let found: Vec<&str> = SIDE_FILES
        .into_iter()
        .filter(|(name, magic)| names.iter().any(|n| n == name) && is_side_file(fs, &dir.join(name), magic))
        .map(|(name, _)| name)
        .collect();
    let files = match found.as_slice() {
        [one] => format!("the {one} file"),
        [init @ .., last] => format!("the {} and {last} files", init.join(", ")),
        [] => return None,
    };
    Some(Error::corruption(
        dir.join(segment::file_name(1)),
        0,
        format!(
            "the file is missing: the directory holds no segment file but {files} of a store, written only \
             once its log exists. Restore the segment files (from a backup, or the copy they came from); if an \
             `annal repair` was stopped, run it again; or move {files} away to start a new store here"
        ),
    ))
}

/// The error for a directory without a store (no segment file, and no
/// side file of one: see [`missing_log`]) where creating one would write
/// over another program's files: a file or folder named like one of the
/// store's side files (`index`, `checkpoints`, `snapshots`), which the
/// store replaces by renaming a new file over it, or like their temporary
/// files (`index.tmp`...) that hold another program's bytes, which open
/// would remove, or a `LOCK` file that holds something else than the
/// store's lock note, which the store writes over. `None` when the store
/// can be created without touching any file that is there. `names` lists
/// the directory.
pub(crate) fn foreign_files<F: FileSystem>(fs: &F, dir: &Path, names: &[String]) -> Option<Error> {
    let mut found: Vec<&str> = SIDE_FILES
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| names.iter().any(|n| n == name))
        .collect();
    // Their temporary files too, which open removes as its own leftovers,
    // unless they hold another program's bytes (a store's starts with the
    // side file's magic, or is shorter: a save stopped early; `repair`
    // that removes a store leaves them).
    found.extend(names.iter().map(String::as_str).filter(|n| {
        SIDE_FILES.iter().any(|(name, magic)| {
            n.strip_suffix(".tmp") == Some(name) && !is_own_temporary_file(fs, &dir.join(n), magic)
        })
    }));
    if names.iter().any(|n| n == crate::dir_lock::LOCK_FILE_NAME) && !is_own_lock_file(fs, dir) {
        found.push(crate::dir_lock::LOCK_FILE_NAME);
    }
    let (files, them) = match found.as_slice() {
        [one] => (format!("`{one}`"), "it"),
        [init @ .., last] => (
            format!(
                "{} and `{last}`",
                init.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            ),
            "them",
        ),
        [] => return None,
    };
    Some(Error::InvalidInput(format!(
        "no annal store in {dir}, and none is created there: the directory holds {files}, which a new store \
         would write over. Give another directory, or move {them} away",
        dir = dir.display()
    )))
}

/// Whether the file at `path`, named like a side file's temporary file,
/// is one a store could have left (or is gone): it starts with the side
/// file's `magic`, or is shorter than it, or cannot be read for another
/// reason than its not being a regular file (the removal of leftovers
/// then reports why).
fn is_own_temporary_file<F: FileSystem>(fs: &F, path: &Path, magic: &[u8; 8]) -> bool {
    match head_of(fs, path) {
        Ok(head) => head == *magic,
        Err(e) => !(e.kind() == std::io::ErrorKind::IsADirectory || io::is_not_a_regular_file(&e)),
    }
}

/// The first 8 bytes of the file at `path`, where a side file keeps its
/// magic.
fn head_of<F: FileSystem>(fs: &F, path: &Path) -> std::io::Result<[u8; 8]> {
    let mut head = [0u8; 8];
    fs.open(path, OpenMode::Read)
        .and_then(|f| f.read_exact_at(&mut head, 0))
        .map(|()| head)
}

/// Whether the directory's `LOCK` file is one a store could have left: it
/// is empty (the store was stopped before it wrote its note) or starts
/// with the note. A file that cannot be read is left to the lock, which
/// reports why it cannot open it.
fn is_own_lock_file<F: FileSystem>(fs: &F, dir: &Path) -> bool {
    let note = crate::dir_lock::LOCK_NOTE_START.as_bytes();
    let Ok(file) = fs.open(&dir.join(crate::dir_lock::LOCK_FILE_NAME), OpenMode::Read) else {
        return true;
    };
    let Ok(len) = file.len() else {
        return true;
    };
    if len == 0 {
        return true;
    }
    let mut head = vec![0u8; note.len()];
    match file.read_exact_at(&mut head, 0) {
        Ok(()) => head == note,
        Err(e) => e.kind() != std::io::ErrorKind::UnexpectedEof,
    }
}

/// Whether the file at `path` is a store's side file: it starts with
/// `magic`, or cannot be read for another reason than its absence, its
/// shortness or its not being a regular file.
fn is_side_file<F: FileSystem>(fs: &F, path: &Path, magic: &[u8; 8]) -> bool {
    match head_of(fs, path) {
        Ok(head) => head == *magic,
        Err(e) => {
            let not_one = matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::IsADirectory
            ) || io::is_not_a_regular_file(&e);
            !not_one
        }
    }
}

/// Maps the index file's bytes; the inner error says why there are none.
/// (A later save replaces the file by renaming a new one over it, so the
/// mapped file itself never changes.) A file that is there but cannot be
/// read is an error: its header is where the log was durable to, a floor
/// that a torn tail must not be cut below.
fn read_index_file<F: FileSystem>(fs: &F, dir: &Path) -> Result<Result<Bytes, String>> {
    let path = dir.join(index_file::FILE_NAME);
    let read = fs.open(&path, OpenMode::Read).and_then(|f| {
        let len = f.len()?;
        f.map(len)
    });
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Err("no index file".into())),
        Err(e) if io::is_not_a_regular_file(&e) => Ok(Err(format!("cannot read index file: {e}"))),
        read => Ok(Ok(read.ctx(|| {
            format!(
                "reading {} (a cache of the log: once it is removed, open rebuilds it from the log)",
                path.display()
            )
        })?)),
    }
}

/// Whether `name` is a temporary file the store itself makes: a segment
/// being created (`N.seg.tmp`), the spare segment, or a side file being
/// replaced (`index.tmp`, `checkpoints.tmp`, `snapshots.tmp`). Only these
/// are removed at open: other `*.tmp` files in the directory are someone
/// else's (a store created in a directory that already held files).
fn is_own_temp_file(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".tmp") else {
        return false;
    };
    segment::parse_file_name(stem).is_some()
        || name == crate::log::spare::SPARE_FILE_NAME
        || [
            index_file::FILE_NAME,
            crate::CHECKPOINTS_FILE_NAME,
            crate::snapshot::file::FILE_NAME,
        ]
        .contains(&stem)
}

/// Removes the store's own temporary files (`names` lists `dir`).
fn remove_leftovers<F: FileSystem>(fs: &F, dir: &Path, names: &[String]) -> Result<()> {
    for name in names.iter().filter(|n| is_own_temp_file(n)) {
        let path = dir.join(name);
        match fs.remove_file(&path) {
            Ok(()) => {}
            // The store makes temporary files, never directories: a
            // directory of that name is someone else's.
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {}
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }
    // Removals are made durable by `recover`'s directory sync that follows
    // (or, for a new store, by its first segment's).
    Ok(())
}

/// Why a segment number is missing, naming the next file that is there
/// (so a stray file numbered past a gap is named too; also used by `verify` and `repair`).
pub(crate) fn missing_segment_reason(next_present: u64) -> String {
    format!(
        "segment file is missing (the next segment file present is {})",
        segment::file_name(next_present)
    )
}

fn check_contiguous(dir: &Path, ids: &[u64]) -> Result<()> {
    if ids[0] != 1 {
        return Err(Error::corruption(
            segment::path(dir, 1),
            0,
            missing_segment_reason(ids[0]),
        ));
    }
    for pair in ids.windows(2) {
        if pair[1] != pair[0] + 1 {
            let missing = segment::path(dir, pair[0] + 1);
            return Err(Error::corruption(missing, 0, missing_segment_reason(pair[1])));
        }
    }
    if ids.len() as u64 > crate::limits::SEGMENTS_MAX {
        return Err(Error::InvalidInput("too many segment files".into()));
    }
    Ok(())
}

fn create<F: FileSystem>(fs: &F, dir: &Path, options: &Options) -> Result<Recovered<F>> {
    let store_id = Uuid::new_v4();
    let header = SegmentHeader {
        store_id,
        segment_id: 1,
        first_position: 1,
        previous_end: 0,
        previous_crc: 0,
    };
    let sync_handle = options.durability != crate::options::Durability::Sync;
    let tail = LogTail::create(fs, dir, header, options.segment_size_bytes, sync_handle)?;
    let map = tail.map()?;
    let view = SegmentView::new(1, tail.path.clone(), map, SEGMENT_HEADER_BYTES);
    Ok(Recovered {
        store_id,
        index: Index::default(),
        end: LogEnd {
            segment: 1,
            offset: SEGMENT_HEADER_BYTES,
            last_batch_crc: 0,
        },
        tail,
        segments: Segments::new(1, vec![Arc::new(view)]),
        report: RecoveryReport {
            created: true,
            segments: 1,
            ..RecoveryReport::default()
        },
        index_file_end: None,
        index_file_bytes: 0,
    })
}

/// Opens and maps every segment: the last one writable, unless read-only.
fn open_segments<F: FileSystem>(fs: &F, dir: &Path, ids: &[u64], read_only: bool) -> Result<Vec<Found<F>>> {
    let mut found: Vec<Found<F>> = Vec::with_capacity(ids.len());
    for (i, &id) in ids.iter().enumerate() {
        let path = segment::path(dir, id);
        let last = i + 1 == ids.len();
        let mode = if last && !read_only {
            OpenMode::ReadWrite
        } else {
            OpenMode::Read
        };
        let ctx = || format!("opening {}", path.display());
        let file = match fs.open(&path, mode) {
            Err(e) if crate::io::is_not_a_regular_file(&e) => {
                return Err(segment::not_a_regular_file(&path));
            }
            opened => opened.ctx(ctx)?,
        };
        let len = file.len().ctx(ctx)?;
        if len < SEGMENT_HEADER_BYTES {
            return Err(Error::corruption(&path, 0, "segment file shorter than its header"));
        }
        if len > crate::limits::SEGMENT_BYTES_MAX {
            // No store makes one (offsets past it do not fit a location).
            return Err(Error::corruption(
                &path,
                crate::limits::SEGMENT_BYTES_MAX,
                "segment file longer than the largest segment (1 TiB)",
            ));
        }
        let mut head = [0u8; SEGMENT_HEADER_BYTES as usize];
        file.read_exact_at(&mut head, 0).ctx(ctx)?;
        let header = SegmentHeader::decode(&head, &path)?;
        if header.segment_id != id {
            return Err(Error::corruption(
                &path,
                0,
                "segment number in header differs from file name",
            ));
        }
        if !read_only {
            fill_holes(fs, &path, &file, len)?;
        }
        let map = file.map(len).ctx(ctx)?;
        found.push(Found {
            header,
            path,
            file: last.then_some(file),
            map,
        });
    }
    let headers: Vec<(u64, Uuid)> = found.iter().map(|f| (f.header.segment_id, f.header.store_id)).collect();
    if let Some((id, reason)) = foreign_segment(fs, dir, &headers)? {
        return Err(Error::corruption(segment::path(dir, id), 0, reason));
    }
    Ok(found)
}

/// Gives storage to the holes of a sparse segment file (a copy of the
/// store made by a tool that drops runs of zeros: `cp --sparse=always`,
/// `rsync -S`), so that the store's maps of it never land in a hole: a
/// copy into a writable map there on a full disk, or on tmpfs any access,
/// kills the process with `SIGBUS` instead of failing. The bytes do not
/// change: each hole is reserved ([`FileHandle::reserve`], which writes
/// nothing), or where the file system cannot, read and written back. A
/// full disk fails the open instead.
///
/// Space reserved and never written reads as a hole too on some file
/// systems (ext4's unwritten extents: the spare segment of the periodic
/// and buffered modes, see [`crate::log::spare`]); reserving it again
/// costs one call and changes nothing. One `lseek` per file when there
/// are no holes.
pub(crate) fn fill_holes<F: FileSystem>(fs: &F, path: &Path, file: &F::File, len: u64) -> Result<()> {
    let ctx = || format!("filling the holes of {} (a sparse copy?)", path.display());
    let holes = file.holes(len).ctx(ctx)?;
    if holes.is_empty() {
        return Ok(());
    }
    let writable = fs.open(path, OpenMode::ReadWrite).ctx(ctx)?;
    let mut rewrite = Vec::new();
    for hole in holes {
        if !writable.reserve(hole.clone()).ctx(ctx)? {
            rewrite.push(hole);
        }
    }
    if rewrite.is_empty() {
        return Ok(());
    }
    // What is read is written back, not zeros: the bytes stay what they
    // are even if the file system reported a range with data as a hole.
    for hole in rewrite {
        write_back(&writable, hole.start, hole.end).ctx(ctx)?;
    }
    writable.sync_data().ctx(ctx)
}

/// [`segment::foreign_segment`] with the store's side files of `dir` as
/// witnesses (read only when the segments disagree); an error when one of
/// them cannot be read. (Also used by `verify` and `repair`.)
pub(crate) fn foreign_segment<F: FileSystem>(
    fs: &F,
    dir: &Path,
    headers: &[(u64, Uuid)],
) -> Result<Option<(u64, String)>> {
    let mut unread = None;
    let foreign = segment::foreign_segment(headers, || {
        side_file_store_ids(fs, dir).unwrap_or_else(|e| {
            unread = Some(e);
            Vec::new()
        })
    });
    unread.map_or(Ok(foreign), Err)
}

/// The store ids in the headers of the store's files other than segments
/// (index, checkpoints, snapshots), each only where its header checks out:
/// the witnesses of [`segment::foreign_segment`]. (Also used by `verify`
/// and `repair`.) An absent file, or a path that is no regular file, is
/// no witness; a file that cannot be read is an error, since its vote could
/// name another segment as the one that does not belong.
pub(crate) fn side_file_store_ids<F: FileSystem>(fs: &F, dir: &Path) -> Result<Vec<Uuid>> {
    let head = |name: &str, len: usize| -> Result<Option<Vec<u8>>> {
        let path = dir.join(name);
        let ctx = || format!("reading {}", path.display());
        let file = match fs.open(&path, OpenMode::Read) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || io::is_not_a_regular_file(&e) => return Ok(None),
            opened => opened.ctx(ctx)?,
        };
        let len = usize::try_from(file.len().ctx(ctx)?).unwrap_or(usize::MAX).min(len);
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, 0).ctx(ctx)?;
        Ok(Some(bytes))
    };
    let index = head(index_file::FILE_NAME, index_file::HEADER_BYTES)?
        .and_then(|b| Some(index_file::decode_checkpoint(&b).ok()?.0.store_id));
    let checkpoints =
        io::read_witness(fs, &dir.join(crate::CHECKPOINTS_FILE_NAME))?.and_then(|b| crate::checkpoint::store_id_of(&b));
    let snapshots = head(
        crate::snapshot::file::FILE_NAME,
        crate::snapshot::file::FILE_HEADER_BYTES,
    )?
    .and_then(|b| crate::snapshot::file::decode_header(&b).ok());
    Ok([index, checkpoints, snapshots].into_iter().flatten().collect())
}

/// Loads the index file and checks it against the log; the error says why
/// it cannot be used.
fn load_index<F: FileSystem>(bytes: &Bytes, found: &[Found<F>]) -> Result<(Index, Checkpoint), String> {
    let (index, checkpoint) = index_file::decode(bytes)?;
    let store_id = found.first().map(|f| f.header.store_id);
    if Some(checkpoint.store_id) != store_id {
        return Err("index file belongs to another store".into());
    }
    let end_segment = found
        .get(usize::try_from(checkpoint.end_segment.wrapping_sub(1)).unwrap_or(usize::MAX))
        .ok_or("index file ends in a segment that does not exist")?;
    if checkpoint.end_offset > end_segment.map.len() as u64 || checkpoint.end_offset < SEGMENT_HEADER_BYTES {
        return Err("index file ends past its segment's end".into());
    }
    if checkpoint.last_position == 0 {
        if checkpoint.end_segment != 1 || checkpoint.end_offset != SEGMENT_HEADER_BYTES {
            return Err("empty index file with a non-empty checkpoint".into());
        }
        return Ok((index, checkpoint));
    }
    let location = index
        .location(checkpoint.last_position)
        .ok_or("index file lacks its last position")?;
    if location.segment != checkpoint.end_segment {
        return Err("index file's last event is not in its end segment".into());
    }
    log_holds_batch(&checkpoint, location.offset, &end_segment.map).map_err(|(_, why)| why)?;
    Ok((index, checkpoint))
}
