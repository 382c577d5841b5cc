//! Opening a store: find the segments, load the index file when it can be
//! trusted, replay the log after it, and deal with the log's tail.
//!
//! # Decision table
//!
//! | what open finds                                         | decision                                  |
//! |---------------------------------------------------------|-------------------------------------------|
//! | no segment file                                         | new store (if `create_if_missing`)        |
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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use crate::error::{Error, IoContext, Result};
use crate::index::file::{self as index_file, Checkpoint};
use crate::index::{Index, Location};
use crate::io::{self, FileHandle, FileSystem, OpenMode};
use crate::log::frame::{self, RECORD_HEADER_BYTES};
use crate::log::segment::{self, SEGMENT_HEADER_BYTES, ScanEnd, SegmentHeader};
use crate::log::tail::{LogTail, write_zeros};
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
        if !options.create_if_missing || options.read_only {
            return Err(Error::InvalidInput(format!("no annal store in {}", dir.display())));
        }
        return create(fs, dir, options);
    }
    check_contiguous(dir, &ids)?;
    let found = open_segments(fs, dir, &ids, options.read_only)?;
    let index_bytes = read_index_file(fs, dir);
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
    let mut recovered = replay(options, found, index, checkpoint, rejected, &tail_rules)?;
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

/// Maps the index file's bytes; the error says why there are none. (A
/// later save replaces the file by renaming a new one over it, so the
/// mapped file itself never changes.)
fn read_index_file<F: FileSystem>(fs: &F, dir: &Path) -> Result<Bytes, String> {
    let path = dir.join(index_file::FILE_NAME);
    if !fs.exists(&path) {
        return Err("no index file".into());
    }
    fs.open(&path, OpenMode::Read)
        .and_then(|f| {
            let len = f.len()?;
            f.map(len)
        })
        .map_err(|e| format!("cannot read index file: {e}"))
}

/// Where the log was durable when the index file was saved, from the index
/// file's header alone (valid header CRC, same store), even when the rest
/// of the file cannot be used. The store syncs the log before it saves an
/// index file, so the log must reach this point: damage before it is
/// corruption of acknowledged data, never a torn tail to cut.
fn durable_floor<F: FileSystem>(bytes: &[u8], found: &[Found<F>]) -> Option<Checkpoint> {
    durable_floor_of(bytes, found.first()?.header.store_id)
}

/// [`durable_floor`] from an index file's bytes and the log's store id
/// (also used by `verify` and `repair`).
pub(crate) fn durable_floor_of(bytes: &[u8], store_id: Uuid) -> Option<Checkpoint> {
    let (checkpoint, _, _) = index_file::decode_checkpoint(bytes).ok()?;
    (checkpoint.store_id == store_id && checkpoint.last_position > 0 && checkpoint.end_segment > 0)
        .then_some(checkpoint)
}

/// Where and why a log that reaches the durable `floor` holds other data
/// there than the batch the index file recorded (its last position, end
/// and CRC): acknowledged events were replaced, by a segment restored from
/// another copy of the store, say. `index` is the log's, `map` the floor
/// segment's bytes. `None` when the log holds that very batch. (A log that
/// falls short of the floor is [`short_of_floor`]'s to report.)
pub(crate) fn floor_batch_replaced(floor: &Checkpoint, index: &Index, map: &[u8]) -> Option<(u64, String)> {
    let location = index.location(floor.last_position);
    let holds = location
        .filter(|l| l.segment == floor.end_segment)
        .map(|l| log_holds_batch(floor, l.offset, map));
    match holds {
        Some(Ok(())) => None,
        Some(Err((at, _))) => Some((at, replaced_reason(floor))),
        None => Some((floor.end_offset, replaced_reason(floor))),
    }
}

fn replaced_reason(floor: &Checkpoint) -> String {
    format!(
        "the index file records the batch of events up to position {} ending at offset {} as durable, \
         but the log holds other data there: acknowledged events were replaced",
        floor.last_position, floor.end_offset
    )
}

/// Why segment `previous` (its bytes `map`) does not end with the batch
/// that the next segment's header (`next`) records; `None` when it does,
/// or when the header records none (segment 1's, or one written before
/// annal recorded it). The previous segment's last batch is the one
/// holding the position before `next`'s first, found through `index`.
///
/// Its header's end and CRC fields are compared first, without checking
/// its CRCs (reads do that, lazily). When they differ: a valid batch there
/// means another segment; an invalid one is damage, which reads report
/// where it lies (a check at open must not make one damaged batch cost the
/// whole store), as long as the file is as long as the header records (a
/// sealed segment ends at its last batch, and damage leaves a file's
/// length alone). (Also used by `verify` and `repair`.)
pub(crate) fn chain_broken(next: &SegmentHeader, index: &Index, previous: u64, map: &[u8]) -> Option<String> {
    if next.previous_end == 0 {
        return None;
    }
    let recorded = (next.previous_end, next.previous_crc);
    let batch_at = match last_batch_start(previous, next.first_position, index, map) {
        LastBatch::At(at) => Some(at),
        LastBatch::Unreadable => None,
        // Annal never seals such a segment.
        LastBatch::NoBatch => {
            return ((SEGMENT_HEADER_BYTES, 0) != recorded).then(|| chain_reason(previous, recorded, None));
        }
    };
    let fields = batch_at.and_then(|at| {
        let header = frame::parse_batch_header(map.get(at..)?).ok()?;
        Some((at as u64 + u64::from(header.frame_len), header.crc))
    });
    if fields == Some(recorded) {
        return None;
    }
    let valid = batch_at
        .and_then(|at| frame::check_batch(map.get(at..)?, |_, _| {}).ok())
        .is_some();
    if !valid && map.len() as u64 == next.previous_end {
        return None;
    }
    Some(chain_reason(previous, recorded, fields.filter(|_| valid)))
}

/// The reason for a broken chain: what the next segment's header records
/// of segment `previous`, and what its last batch is (`found`, when valid).
fn chain_reason(previous: u64, recorded: (u64, u32), found: Option<(u64, u32)>) -> String {
    let found = match found {
        Some((end, crc)) => format!("its last batch ends at {end} with CRC {crc:#010x}"),
        None => "it holds no valid batch there".to_string(),
    };
    format!(
        "segment header: the previous segment ({}) should end with a batch ending at offset {} with CRC {:#010x}, \
         but {found}: one of the two segments comes from another copy of the store",
        segment::file_name(previous),
        recorded.0,
        recorded.1,
    )
}

/// Where the last batch of segment `previous` (its bytes `map`) ends, and
/// its CRC field, given the first position of the segment after it: the
/// batch holding the position before that one, found through `index`;
/// (64, 0) when that position lies in an earlier segment (this one holds
/// no batch). `None` when the batch there is not valid.
pub(crate) fn last_batch_of(previous: u64, next_first_position: u64, index: &Index, map: &[u8]) -> Option<(u64, u32)> {
    match last_batch_start(previous, next_first_position, index, map) {
        LastBatch::At(at) => {
            let batch = frame::check_batch(map.get(at..)?, |_, _| {}).ok()?;
            Some((at as u64 + u64::from(batch.frame_len), batch.crc))
        }
        LastBatch::NoBatch => Some((SEGMENT_HEADER_BYTES, 0)),
        LastBatch::Unreadable => None,
    }
}

/// Where segment `previous`'s last batch starts (see [`last_batch_of`]).
enum LastBatch {
    /// At this offset of the segment, by the back pointer of its record
    /// of the position before the next segment's first (not checked).
    At(usize),
    /// That position lies in an earlier segment: this one holds no batch.
    NoBatch,
    /// No record header where the index puts that position.
    Unreadable,
}

fn last_batch_start(previous: u64, next_first_position: u64, index: &Index, map: &[u8]) -> LastBatch {
    let Some(last) = next_first_position.checked_sub(1) else {
        return LastBatch::NoBatch;
    };
    match index.location(last) {
        Some(l) if l.segment == previous => usize::try_from(l.offset)
            .ok()
            .and_then(|record_at| {
                let record = map.get(record_at..).and_then(frame::parse_record_header)?;
                record_at.checked_sub(record.batch_back as usize)
            })
            .map_or(LastBatch::Unreadable, LastBatch::At),
        _ => LastBatch::NoBatch,
    }
}

/// Whether the record at `record_at` in `map` belongs to the batch that
/// `checkpoint` recorded: a valid batch holding its last position, ending
/// at its end offset, with its CRC. The error gives the batch's offset (or
/// the record's, when no batch is found) and the reason.
fn log_holds_batch(checkpoint: &Checkpoint, record_at: u64, map: &[u8]) -> Result<(), (u64, String)> {
    let not_in_log = |why: &str| (record_at, why.to_string());
    let record_at = usize::try_from(record_at).map_err(|_| not_in_log("offset out of range"))?;
    let record = map
        .get(record_at..)
        .and_then(frame::parse_record_header)
        .ok_or_else(|| not_in_log("last event not in the log"))?;
    let batch_at = record_at
        .checked_sub(record.batch_back as usize)
        .ok_or_else(|| not_in_log("last event not in the log"))?;
    let header = frame::check_batch(&map[batch_at..], |_, _| {})
        .map_err(|_| not_in_log("the index file's last batch is not in the log"))?;
    let last = header.first_position.saturating_add(u64::from(header.record_count) - 1);
    if header.crc != checkpoint.last_batch_crc
        || last != checkpoint.last_position
        || batch_at as u64 + u64::from(header.frame_len) != checkpoint.end_offset
    {
        return Err((
            batch_at as u64,
            "index file does not match the log (stale or ahead)".into(),
        ));
    }
    Ok(())
}

/// Why a log whose last segment is `segment`, with valid data up to `end`,
/// lost acknowledged events, given the durable `floor` (segment, offset);
/// `None` when it reaches the floor. (Also used by `verify` and `repair`.)
pub(crate) fn short_of_floor(floor: &Checkpoint, segment: u64, end: u64) -> Option<String> {
    let (floor_segment, floor_offset) = (floor.end_segment, floor.end_offset);
    if floor_segment > segment {
        Some(format!(
            "valid data ends in this segment, but the index file records durable data in segment {floor_segment}"
        ))
    } else if floor_segment == segment && end < floor_offset {
        Some(format!(
            "valid data ends here, but the index file records durable data up to offset {floor_offset}; \
             acknowledged events are damaged or missing"
        ))
    } else {
        None
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

fn remove_leftovers<F: FileSystem>(fs: &F, dir: &Path, names: &[String]) -> Result<()> {
    let mut removed = false;
    for name in names.iter().filter(|n| is_own_temp_file(n)) {
        let path = dir.join(name);
        match fs.remove_file(&path) {
            Ok(()) => removed = true,
            // The store makes temporary files, never directories: a
            // directory of that name is someone else's.
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {}
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }
    if removed {
        fs.sync_dir(dir).ctx(|| format!("syncing {}", dir.display()))?;
    }
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
    if let Some((id, reason)) = segment::foreign_segment(&headers, || side_file_store_ids(fs, dir)) {
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
    let mut chunk = vec![0u8; 1 << 20];
    for hole in rewrite {
        let mut at = hole.start;
        while at < hole.end {
            let n = usize::try_from(hole.end - at).map_or(chunk.len(), |n| n.min(chunk.len()));
            writable.read_exact_at(&mut chunk[..n], at).ctx(ctx)?;
            writable.write_all_at(&chunk[..n], at).ctx(ctx)?;
            at += n as u64;
        }
    }
    writable.sync_data().ctx(ctx)
}

/// The store ids in the headers of the store's files other than segments
/// (index, checkpoints, snapshots), each only where its header checks out:
/// the witnesses of [`segment::foreign_segment`]. (Also used by `verify`
/// and `repair`.)
pub(crate) fn side_file_store_ids<F: FileSystem>(fs: &F, dir: &Path) -> Vec<Uuid> {
    let head = |name: &str, len: usize| -> Option<Vec<u8>> {
        let file = fs.open(&dir.join(name), OpenMode::Read).ok()?;
        let mut bytes = vec![0u8; usize::try_from(file.len().ok()?).ok()?.min(len)];
        file.read_exact_at(&mut bytes, 0).ok()?;
        Some(bytes)
    };
    let index = head(index_file::FILE_NAME, index_file::HEADER_BYTES)
        .and_then(|b| Some(index_file::decode_checkpoint(&b).ok()?.0.store_id));
    let checkpoints = io::read_if_exists(fs, &dir.join(crate::CHECKPOINTS_FILE_NAME))
        .ok()
        .flatten()
        .and_then(|b| crate::checkpoint::store_id_of(&b));
    let snapshots = head(
        crate::snapshot::file::FILE_NAME,
        crate::snapshot::file::FILE_HEADER_BYTES,
    )
    .and_then(|b| crate::snapshot::file::decode_header(&b).ok());
    [index, checkpoints, snapshots].into_iter().flatten().collect()
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

fn replay<F: FileSystem>(
    options: &Options,
    found: Vec<Found<F>>,
    mut index: Index,
    checkpoint: Option<Checkpoint>,
    rejected: Option<String>,
    rules: &TailRules<'_>,
) -> Result<Recovered<F>> {
    let floor = rules.floor;
    let store_id = found[0].header.store_id;
    let (start_segment, start_offset, mut end) = match checkpoint {
        Some(cp) => (
            cp.end_segment,
            cp.end_offset,
            LogEnd {
                segment: cp.end_segment,
                offset: cp.end_offset,
                last_batch_crc: cp.last_batch_crc,
            },
        ),
        None => (
            1,
            SEGMENT_HEADER_BYTES,
            LogEnd {
                segment: 1,
                offset: SEGMENT_HEADER_BYTES,
                last_batch_crc: 0,
            },
        ),
    };
    let index_file_end = checkpoint.is_some().then_some(end);
    let mut report = RecoveryReport {
        index_loaded: checkpoint.is_some(),
        index_rejected: rejected,
        segments: found.len(),
        ..RecoveryReport::default()
    };
    let count = found.len();
    let mut views: Vec<Arc<SegmentView>> = Vec::with_capacity(count);
    let mut tail_parts = None;
    for (i, seg) in found.into_iter().enumerate() {
        let id = seg.header.segment_id;
        let last = i + 1 == count;
        // The segment before ends with the batch this one's header records
        // (the index holds all of it by now).
        if let Some(previous) = views.last()
            && let Some(why) = chain_broken(&seg.header, &index, previous.id, &previous.map)
        {
            return Err(Error::corruption(&seg.path, 0, why));
        }
        let mut verified = SEGMENT_HEADER_BYTES;
        let mut map = seg.map;
        if id >= start_segment {
            let from = if id == start_segment {
                start_offset
            } else {
                SEGMENT_HEADER_BYTES
            };
            if from == SEGMENT_HEADER_BYTES && seg.header.first_position != index.last_position() + 1 {
                return Err(Error::corruption(
                    &seg.path,
                    0,
                    "segment does not start at the next global position",
                ));
            }
            let (data_end, torn) = replay_segment(&seg.path, id, &map, from, last, &mut index, &mut end, &mut report)?;
            // A segment that holds the floor must reach it (later ones are
            // checked once the last segment is known, below).
            if let Some(floor) = floor
                && floor.end_segment == id
                && let Some(why) = short_of_floor(floor, id, data_end)
            {
                return Err(Error::corruption(&seg.path, data_end, why));
            }
            if let Some(dirty_end) = torn {
                // A checkpoint or snapshot past the valid data proves the
                // damaged bytes held durable events: corruption, not a
                // torn write.
                if let Some(why) = (rules.proven)(&index, dirty_end - data_end) {
                    return Err(Error::corruption(&seg.path, data_end, why));
                }
                report.torn_tail_bytes = dirty_end - data_end;
                // Read-only: the bytes stay; readers never go past `end`.
                if !options.read_only {
                    let torn_bytes = usize::try_from(data_end)
                        .ok()
                        .zip(usize::try_from(dirty_end).ok())
                        .and_then(|(from, to)| map.get(from..to))
                        .unwrap_or_default();
                    // A safety net, not a condition: a store whose torn
                    // tail cannot be copied (a full disk) still opens.
                    match (rules.keep)(&seg.path, data_end, torn_bytes) {
                        Ok(kept) => report.torn_tail_kept = Some(kept),
                        Err(e) => report.torn_tail_not_kept = Some(e.to_string()),
                    }
                    // Synced with the rest of the last segment below.
                    let ctx = || format!("cutting the torn tail of {}", seg.path.display());
                    let file = seg
                        .file
                        .as_ref()
                        .ok_or_else(|| Error::corruption(&seg.path, data_end, "torn tail in a sealed segment"))?;
                    write_zeros(file, data_end, dirty_end).ctx(ctx)?;
                    map = file.map(map.len() as u64).ctx(ctx)?;
                }
            }
            report.replayed_bytes += data_end - from;
            if from == SEGMENT_HEADER_BYTES {
                verified = data_end;
            }
        }
        let view = SegmentView::new(id, seg.path.clone(), map.clone(), verified);
        views.push(Arc::new(view));
        if let Some(file) = seg.file.filter(|_| last) {
            tail_parts = Some((seg.path, file, map.len() as u64, id));
        }
    }
    let Some((path, file, allocated, segment_id)) = tail_parts else {
        return Err(Error::InvalidInput("no segments".into()));
    };
    // What the last segment holds may be only in the page cache: written
    // by a process that died before its sync, or that ran without syncs.
    // This store publishes it now, and in durable mode what is published
    // counts as durable (reads, subscriptions, retries acknowledged, and
    // checkpoint and snapshot saves, which later opens take as proof), so
    // it is made durable first. (Earlier segments were synced when sealed.)
    if !options.read_only {
        file.sync_data()
            .ctx(|| format!("syncing the recovered log in {}", path.display()))?;
    }
    if let Some(floor) = floor
        && floor.end_segment > segment_id
        && let Some(why) = short_of_floor(floor, segment_id, allocated)
    {
        return Err(Error::corruption(&path, allocated, why));
    }
    // The log reaches the floor; it must hold the very batch recorded there.
    if let Some(floor) = floor
        && let Some(view) = usize::try_from(floor.end_segment.saturating_sub(1))
            .ok()
            .and_then(|i| views.get(i))
        && let Some((offset, why)) = floor_batch_replaced(floor, &index, &view.map)
    {
        return Err(Error::corruption(&view.path, offset, why));
    }
    // The second handle for syncs comes in `recover`, which has the file system.
    let tail = LogTail::new(segment_id, path, file, None, allocated, options.segment_size_bytes);
    Ok(Recovered {
        store_id,
        index,
        end,
        tail,
        segments: Segments::new(1, views),
        report,
        index_file_end,
        index_file_bytes: 0,
    })
}

/// What replay consults about invalid bytes at the log's end, beyond the
/// log itself, and what it does with them.
struct TailRules<'a> {
    /// Where the index file's header says the log was durable (segment,
    /// offset): the log must reach it.
    floor: Option<&'a Checkpoint>,
    /// Why torn-looking bytes (this many) held durable events, when a
    /// saved checkpoint or snapshot proves it (see [`durable_proof`]).
    proven: &'a dyn Fn(&Index, u64) -> Option<String>,
    /// Keeps a copy of a torn tail (segment path, offset, bytes) before it
    /// is zeroed; returns where (see [`keep_torn_tail`]).
    keep: &'a KeepTornTail<'a>,
}

/// See [`TailRules::keep`].
type KeepTornTail<'a> = dyn Fn(&Path, u64, &[u8]) -> Result<PathBuf> + 'a;

/// The fewest bytes a record takes: its header and one-byte stream name
/// and event type.
const MIN_RECORD_BYTES: u64 = RECORD_HEADER_BYTES as u64 + 2;

/// Copies the bytes of a torn tail that open is about to zero into
/// `quarantine/<N>.seg.torn-<offset>` (`.1`, `.2`, ... appended when
/// taken), durably. Nothing saved shows they were ever acknowledged (see
/// [`durable_proof`]), but bit rot in the last batch written since the last
/// index save looks the same as a torn write, and a copy costs little.
fn keep_torn_tail<F: FileSystem>(fs: &F, dir: &Path, segment: &Path, offset: u64, bytes: &[u8]) -> Result<PathBuf> {
    let quarantine = dir.join(crate::tools::QUARANTINE_DIR);
    let ctx = || {
        format!(
            "keeping the torn tail of {} in {}",
            segment.display(),
            quarantine.display()
        )
    };
    fs.create_dir_all(&quarantine).ctx(ctx)?;
    fs.sync_dir(dir).ctx(ctx)?;
    let file_name = segment.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let base = format!("{file_name}.torn-{offset}");
    let mut name = base.clone();
    let mut n = 1;
    while fs.exists(&quarantine.join(&name)) {
        name = format!("{base}.{n}");
        n += 1;
    }
    io::write_atomic(fs, &quarantine, &name, bytes).ctx(ctx)?;
    Ok(quarantine.join(name))
}

/// Why invalid bytes after the last valid batch of the log that `index`
/// holds are damage rather than a torn write, when something saved proves
/// the log was durable past it: a checkpoint past its last position, or a
/// snapshot of a stream at a version past the stream's last one (both are
/// saved only once the log is durable that far). `None` when nothing does.
/// Read only when there are such bytes, `torn_bytes` of them. (Also used by
/// `verify` and `repair`.)
///
/// A snapshot counts only when the events it is ahead by could fit in the
/// torn bytes (each record takes at least 42): the snapshot file's scan
/// steps over a damaged record by its length field, and a damaged length
/// could land on bytes inside a snapshot's data that read as a record.
pub(crate) fn durable_proof<F: FileSystem>(
    fs: &F,
    dir: &Path,
    store_id: Uuid,
    index: &Index,
    torn_bytes: u64,
) -> Option<String> {
    let last = index.last_position();
    if let Some((name, position)) = crate::checkpoint::furthest_in(fs, dir, store_id).filter(|(_, p)| *p > last) {
        return Some(format!(
            "invalid bytes after the last valid batch (position {last}), but checkpoint '{name}' at {position} \
             proves events up to {position} were durable: the damaged bytes held acknowledged events"
        ));
    }
    let snapshots = crate::snapshot::durable_versions_in(fs, dir, store_id);
    let fits = |ahead: u64| ahead.saturating_mul(MIN_RECORD_BYTES) <= torn_bytes;
    let (stream, version) = snapshots.into_iter().find(|(stream, version)| {
        let have = index.stream_version(stream);
        *version > have && fits(*version - have)
    })?;
    let have = index.stream_version(&stream);
    Some(format!(
        "invalid bytes after the last valid batch (position {last}), but a snapshot of '{stream}' at version \
         {version} proves its events up to {version} were durable (the log holds {have}): the damaged bytes \
         held acknowledged events"
    ))
}

/// Replays one segment from `from`; returns where its valid data ends and,
/// for a torn tail to cut, where the garbage ends.
#[allow(clippy::too_many_arguments)]
fn replay_segment(
    path: &Path,
    id: u64,
    map: &Bytes,
    from: u64,
    last: bool,
    index: &mut Index,
    end: &mut LogEnd,
    report: &mut RecoveryReport,
) -> Result<(u64, Option<u64>)> {
    let mut failure: Option<Error> = None;
    let scan_end = segment::scan(map, from, |batch_at, header, records| {
        if failure.is_some() {
            return;
        }
        if header.first_position != index.last_position() + 1 {
            failure = Some(Error::corruption(
                path,
                batch_at,
                "batch does not start at the next global position",
            ));
            return;
        }
        for (k, r) in records.iter().enumerate() {
            let record_at = batch_at as usize + r.offset as usize;
            let name_at = record_at + RECORD_HEADER_BYTES;
            let name = map
                .get(name_at..name_at + usize::from(r.header.stream_len))
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default();
            let location = Location {
                segment: id,
                offset: record_at as u64,
            };
            let position = header.first_position.saturating_add(k as u64);
            if let Err(reason) = index.push(name, u64::from(r.header.version), position, location) {
                failure = Some(Error::corruption(path, record_at as u64, reason));
                return;
            }
        }
        report.replayed_events += records.len() as u64;
        *end = LogEnd {
            segment: id,
            offset: batch_at + u64::from(header.frame_len),
            last_batch_crc: header.crc,
        };
    });
    if let Some(e) = failure {
        return Err(e);
    }
    match scan_end {
        ScanEnd::Clean { offset } => Ok((offset, None)),
        ScanEnd::TornTail {
            offset,
            dirty_end,
            reason,
        } => {
            if last {
                Ok((offset, Some(dirty_end)))
            } else {
                Err(Error::corruption(path, offset, format!("{reason} in a sealed segment")))
            }
        }
        ScanEnd::Corrupt { offset, reason, next } => Err(Error::corruption(
            path,
            offset,
            format!("{reason} (valid data follows at offset {next})"),
        )),
    }
}
