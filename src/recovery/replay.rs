//! Replaying the log after the index file's checkpoint (or all of it):
//! every batch checked and added to the index, and the log's tail judged:
//! a clean end, a torn final write to cut (kept in quarantine first), or
//! damage to refuse.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use super::chain::{chain_broken, floor_batch_replaced, length_damage, short_of_floor};
use super::{Found, LogEnd, Recovered, RecoveryReport};
use crate::error::{Error, IoContext, Result};
use crate::index::file::Checkpoint;
use crate::index::{Index, Location};
use crate::io::{self, FileHandle, FileSystem};
use crate::log::frame::RECORD_HEADER_BYTES;
use crate::log::segment::{self, SEGMENT_HEADER_BYTES, ScanEnd, SegmentHeader};
use crate::log::tail::{LogTail, write_zeros};
use crate::log::view::{SegmentView, Segments};
use crate::options::Options;

/// Replays the log from `checkpoint`'s end (the index file's, when it was
/// loaded into `index`; else from the first segment into an empty index),
/// checking each segment's link to the one before, and judges the tail by
/// `rules`. `found` is never empty: a store without segments is created,
/// not recovered. `rejected` says why an index file was not used.
pub(super) fn replay<F: FileSystem>(
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
    // The last segment's torn tail (valid data end, dirty end), cut only
    // once every check has passed: a refused store is left as it was.
    let mut torn_tail = None;
    for (i, seg) in found.into_iter().enumerate() {
        let id = seg.header.segment_id;
        let last = i + 1 == count;
        // The segment before ends with the batch this one's header records
        // (the index holds all of it by now).
        if let Some(previous) = views.last()
            && let Some(why) = chain_broken(&seg.header, &index, previous.id, &previous.map)
        {
            // A segment cut short, or that lost bytes inside it, is damage
            // in that segment, not another copy's segment here.
            if let Some((offset, why)) = length_damage(&seg.header, &index, previous.id, &previous.map) {
                return Err(Error::corruption(&previous.path, offset, why));
            }
            return Err(Error::corruption(&seg.path, 0, why));
        }
        // A sealed segment that is not replayed (the index file covers it)
        // is not scanned; what a scan would refuse after its last batch is
        // looked for here, where this header says that batch ends.
        if let Some(previous) = views.last()
            && previous.id < start_segment
            && let Some(offset) = bytes_after_sealed_end(&seg.header, &previous.map)
        {
            return Err(Error::corruption(
                &previous.path,
                offset,
                "invalid bytes after the last batch in a sealed segment",
            ));
        }
        let mut verified = SEGMENT_HEADER_BYTES;
        let map = seg.map;
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
            if from > SEGMENT_HEADER_BYTES && !starts_where_indexed(seg.header.first_position, id, &index) {
                return Err(Error::corruption(
                    &seg.path,
                    0,
                    "segment header's first position is not where the index file's events in it start",
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
                if let Some(why) = (rules.proven)(&index, dirty_end - data_end)? {
                    return Err(Error::corruption(&seg.path, data_end, why));
                }
                report.torn_tail_bytes = dirty_end - data_end;
                torn_tail = Some((data_end, dirty_end));
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
    // Every check passed: the torn tail is kept in `quarantine/` and cut.
    // Read-only, the bytes stay; readers never go past `end`.
    if let Some((data_end, dirty_end)) = torn_tail
        && !options.read_only
        && let Some(last) = views.pop()
    {
        let torn_bytes = usize::try_from(data_end)
            .ok()
            .zip(usize::try_from(dirty_end).ok())
            .and_then(|(from, to)| last.map.get(from..to))
            .unwrap_or_default();
        // A safety net, not a condition: a store whose torn tail cannot
        // be copied (a full disk) still opens.
        match (rules.keep)(&path, data_end, torn_bytes) {
            Ok(kept) => report.torn_tail_kept = Some(kept),
            Err(e) => report.torn_tail_not_kept = Some(e.to_string()),
        }
        // Synced with the rest of the last segment just below.
        let ctx = || format!("cutting the torn tail of {}", path.display());
        write_zeros(&file, data_end, dirty_end).ctx(ctx)?;
        let map = file.map(allocated).ctx(ctx)?;
        views.push(Arc::new(SegmentView::new(
            segment_id,
            path.clone(),
            map,
            last.verified_end(),
        )));
    }
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

/// Where a sealed segment (its bytes `map`) has bytes other than zeros
/// after its last batch, whose end the next segment's header records
/// (`next`): that end, or `None` when there are none there or the header
/// records no end. Sealing cuts a segment at its last batch and syncs it
/// before the next segment exists, so any byte there came later.
fn bytes_after_sealed_end(next: &SegmentHeader, map: &[u8]) -> Option<u64> {
    if next.previous_end == 0 {
        return None;
    }
    let after = usize::try_from(next.previous_end).ok().and_then(|end| map.get(end..))?;
    after.iter().any(|&b| b != 0).then_some(next.previous_end)
}

/// Whether segment `id`, which the index file's checkpoint lies inside
/// (so the index holds its events up to there, and it holds at least
/// one), starts at the position its header records, `first_position`:
/// the index puts that position in this segment and the one before it
/// in an earlier one. The check a segment replayed from its start gets
/// against the log before it, made against the index instead.
fn starts_where_indexed(first_position: u64, id: u64, index: &Index) -> bool {
    let in_this = index.location(first_position).is_some_and(|l| l.segment == id);
    let before_elsewhere = match first_position.checked_sub(1) {
        Some(0) => true,
        Some(before) => index.location(before).is_some_and(|l| l.segment < id),
        None => false,
    };
    in_this && before_elsewhere
}

/// What replay consults about invalid bytes at the log's end, beyond the
/// log itself, and what it does with them.
pub(super) struct TailRules<'a> {
    /// Where the index file's header says the log was durable (segment,
    /// offset): the log must reach it.
    pub(super) floor: Option<&'a Checkpoint>,
    /// Why torn-looking bytes (this many) held durable events, when a
    /// saved checkpoint or snapshot proves it (see [`durable_proof`]).
    /// An error when a file that could prove it cannot be read.
    pub(super) proven: &'a dyn Fn(&Index, u64) -> Result<Option<String>>,
    /// Keeps a copy of a torn tail (segment path, offset, bytes) before it
    /// is zeroed; returns where (see [`keep_torn_tail`]).
    pub(super) keep: &'a KeepTornTail<'a>,
}

/// See [`TailRules::keep`].
pub(super) type KeepTornTail<'a> = dyn Fn(&Path, u64, &[u8]) -> Result<PathBuf> + 'a;

/// The fewest bytes a record takes: its header and one-byte stream name
/// and event type.
const MIN_RECORD_BYTES: u64 = RECORD_HEADER_BYTES as u64 + 2;

/// Copies the bytes of a torn tail that open is about to zero into
/// `quarantine/<N>.seg.torn-<offset>` (`.1`, `.2`, ... appended when
/// taken), durably. Nothing saved shows they were ever acknowledged (see
/// [`durable_proof`]), but bit rot in the last batch written since the last
/// index save looks the same as a torn write, and a copy costs little.
pub(super) fn keep_torn_tail<F: FileSystem>(
    fs: &F,
    dir: &Path,
    segment: &Path,
    offset: u64,
    bytes: &[u8],
) -> Result<PathBuf> {
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
/// `verify` and `repair`.) A checkpoints or snapshot file that cannot be
/// read is an error: the bytes are neither cut nor kept until it can be.
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
) -> Result<Option<String>> {
    let last = index.last_position();
    if let Some((name, position)) = crate::checkpoint::furthest_in(fs, dir, store_id)?.filter(|(_, p)| *p > last) {
        return Ok(Some(format!(
            "invalid bytes after the last valid batch (position {last}), but checkpoint '{name}' at {position} \
             proves events up to {position} were durable: the damaged bytes held acknowledged events"
        )));
    }
    let snapshots = crate::snapshot::durable_versions_in(fs, dir, store_id)?;
    let fits = |ahead: u64| ahead.saturating_mul(MIN_RECORD_BYTES) <= torn_bytes;
    let Some((stream, version)) = snapshots.into_iter().find(|(stream, version)| {
        let have = index.stream_version(stream);
        *version > have && fits(*version - have)
    }) else {
        return Ok(None);
    };
    let have = index.stream_version(&stream);
    Ok(Some(format!(
        "invalid bytes after the last valid batch (position {last}), but a snapshot of '{stream}' at version \
         {version} proves its events up to {version} were durable (the log holds {have}): the damaged bytes \
         held acknowledged events"
    )))
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
    let scan_end = segment::scan_after(map, from, Some(index.last_position()), |batch_at, header, records| {
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
