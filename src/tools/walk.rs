//! The read-only walk over a store's segment files that `verify` and
//! `repair` share: every header, every batch, every record CRC, positions
//! and versions, up to the first damage.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use uuid::Uuid;

use super::{Damage, Progress};
use crate::error::{Error, IoContext, Result};
use crate::index::{Index, Location};
use crate::io::{FileHandle, FileSystem, OpenMode, StdFs};
use crate::log::frame::{BatchHeader, CheckedRecord, RECORD_HEADER_BYTES};
use crate::log::segment::{self, SEGMENT_HEADER_BYTES, ScanEnd, SegmentHeader};

/// A write torn by a crash at the end of the active segment: not
/// corruption (it was never acknowledged); the next open cuts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The active segment file.
    pub file: PathBuf,
    /// Where its valid data ends.
    pub offset: u64,
    /// Bytes of the torn write (non-zero bytes after `offset`).
    pub bytes: u64,
}

/// Where the batch holding a given position ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchEnd {
    pub segment: u64,
    pub offset: u64,
    pub crc: u32,
}

/// What the walk found.
pub(crate) struct Walk {
    pub store_id: Option<Uuid>,
    /// The events of every valid batch before the damage.
    pub index: Index,
    pub bytes_checked: u64,
    pub torn_tail: Option<TornTail>,
    pub damage: Option<Damage>,
    /// End of the batch holding the position asked for, if in the log.
    pub target_end: Option<BatchEnd>,
    /// The last segment walked, and where its valid batches end.
    pub data_end: Option<(u64, u64)>,
    /// Every event id with its position, when asked for (`verify`).
    pub ids: Option<Vec<(u128, u64)>>,
    /// Whether the damage is a segment that does not end as the next one's
    /// header records (see [`crate::recovery::chain_broken`]): one of the
    /// two comes from another copy of the store.
    pub chain_broken: bool,
}

/// The segment numbers in `dir`, sorted; fails with
/// [`Error::InvalidInput`] when there are none (the directory holds no
/// store, or is missing or not a directory), with [`Error::Corruption`]
/// when there are none but the directory holds a store's other files (see
/// [`crate::recovery::missing_log`]), and with an I/O error when the
/// directory cannot be read (which says nothing about its segments).
pub(crate) fn segment_ids(dir: &Path) -> Result<Vec<u64>> {
    let no_store = || Error::InvalidInput(format!("no annal store in {}", dir.display()));
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(no_store()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(no_store());
        }
        Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
    }
    let names = StdFs.list_dir(dir).ctx(|| format!("listing {}", dir.display()))?;
    let mut ids: Vec<u64> = names.iter().filter_map(|n| segment::parse_file_name(n)).collect();
    if ids.is_empty() {
        return Err(crate::recovery::missing_log(&StdFs, dir, &names).unwrap_or_else(no_store));
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The segment of another store among `ids`, with the reason (see
/// [`segment::foreign_segment`]). Damaged or short headers are left to
/// the walk, which reports them; a file that cannot be read is an error.
pub(crate) fn foreign_segment(dir: &Path, ids: &[u64]) -> Result<Option<(u64, String)>> {
    crate::recovery::foreign_segment(&StdFs, dir, &segment_store_ids(dir, ids)?)
}

/// The first segment among `ids`, from segment `from` on, whose header
/// records an end of the segment before it that this one's own valid
/// batches contradict, with the reason (see
/// [`crate::recovery::chain_contradicted`]): a segment of another copy of
/// the store. Unlike the walk's check, this one looks past damage. A file
/// that is no regular file or whose header does not decode is left to the
/// walk; one that cannot be read is an error.
pub(crate) fn diverged_segment(dir: &Path, ids: &[u64], from: u64) -> Result<Option<(u64, String)>> {
    let map = |id: u64| match map_file(&segment::path(dir, id)) {
        Err(Error::Corruption { .. }) => Ok(None),
        mapped => mapped.map(Some),
    };
    for pair in ids.windows(2) {
        let (previous, id) = (pair[0], pair[1]);
        if id != previous + 1 || id < from {
            continue;
        }
        let Some(next) = map(id)? else { continue };
        let Ok(header) = SegmentHeader::decode(&next, &segment::path(dir, id)) else {
            continue;
        };
        let Some(previous_map) = map(previous)? else { continue };
        if let Some(reason) = crate::recovery::chain_contradicted(&header, previous, &previous_map) {
            return Ok(Some((id, reason)));
        }
    }
    Ok(None)
}

/// The store id of each segment among `ids` whose header can be read and
/// decoded, as (segment number, store id). A file missing, no regular
/// file or shorter than a header is left out (the walk reports it); one
/// that cannot be read is an error, since leaving its vote out could name
/// another segment as the stray one.
pub(crate) fn segment_store_ids(dir: &Path, ids: &[u64]) -> Result<Vec<(u64, Uuid)>> {
    let mut found = Vec::with_capacity(ids.len());
    for &id in ids {
        let path = segment::path(dir, id);
        let ctx = || format!("reading {}", path.display());
        let file = match StdFs.open(&path, OpenMode::Read) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || crate::io::is_not_a_regular_file(&e) => continue,
            opened => opened.ctx(ctx)?,
        };
        let mut head = [0u8; SEGMENT_HEADER_BYTES as usize];
        match file.read_exact_at(&mut head, 0) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => continue,
            read => read.ctx(ctx)?,
        }
        if let Ok(header) = SegmentHeader::decode(&head, &path) {
            found.push((id, header.store_id));
        }
    }
    Ok(found)
}

/// Opens and maps a segment file read-only.
pub(crate) fn map_file(path: &Path) -> Result<Bytes> {
    let ctx = || format!("reading {}", path.display());
    let file = match StdFs.open(path, OpenMode::Read) {
        Err(e) if crate::io::is_not_a_regular_file(&e) => return Err(segment::not_a_regular_file(path)),
        opened => opened.ctx(ctx)?,
    };
    let len = file.len().ctx(ctx)?;
    file.map(len).ctx(ctx)
}

/// Walks the log of `dir` (segments `ids`) from the start, stopping at the
/// first damage. `target` asks for the end of the batch holding that
/// position (0: the empty log's end).
pub(crate) fn walk(
    dir: &Path,
    ids: &[u64],
    target: u64,
    collect_ids: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<Walk> {
    let mut bytes_total = 0;
    for &id in ids {
        let path = segment::path(dir, id);
        bytes_total += std::fs::metadata(&path)
            .ctx(|| format!("reading {}", path.display()))?
            .len();
    }
    let mut w = Walk {
        store_id: None,
        index: Index::default(),
        bytes_checked: 0,
        torn_tail: None,
        damage: None,
        target_end: (target == 0).then_some(BatchEnd {
            segment: 1,
            offset: SEGMENT_HEADER_BYTES,
            crc: 0,
        }),
        data_end: None,
        ids: collect_ids.then(Vec::new),
        chain_broken: false,
    };
    let foreign = foreign_segment(dir, ids)?;
    // The segment before the one walked, to check the chain between them.
    let mut previous: Option<Bytes> = None;
    for (i, &id) in ids.iter().enumerate() {
        let expected = i as u64 + 1;
        if id != expected {
            w.damage = Some(Damage {
                file: segment::path(dir, expected),
                segment: Some(expected),
                offset: 0,
                reason: crate::recovery::missing_segment_reason(id),
            });
            break;
        }
        let last = i + 1 == ids.len();
        let path = segment::path(dir, id);
        // The segment's bytes with a sound header, or why not (a name
        // held by no regular file, a stray segment, a bad header).
        let checked = match (map_file(&path), &foreign) {
            (Err(Error::Corruption { reason, .. }), _) => Err(reason),
            (Err(e), _) => return Err(e),
            (Ok(_), Some((stray, reason))) if *stray == id => Err(reason.clone()),
            (Ok(map), _) => check_header(&map, &path, id, previous.as_ref(), &mut w)?.map(|()| map),
        };
        let map = match checked {
            Ok(map) => map,
            Err(reason) => {
                w.damage = Some(Damage {
                    file: path,
                    segment: Some(id),
                    offset: 0,
                    reason,
                });
                break;
            }
        };
        let done_before = w.bytes_checked;
        let end = walk_segment(&map, id, target, &mut w, &mut |at, events| {
            progress(Progress {
                bytes_done: done_before + at,
                bytes_total,
                events,
            })
        });
        w.bytes_checked = done_before + map.len() as u64;
        previous = Some(map);
        progress(Progress {
            bytes_done: w.bytes_checked,
            bytes_total,
            events: w.index.last_position(),
        });
        match end {
            Ok(ScanEnd::Clean { offset }) => w.data_end = Some((id, offset)),
            Ok(ScanEnd::TornTail {
                offset,
                dirty_end,
                reason,
            }) => {
                w.data_end = Some((id, offset));
                if last {
                    w.torn_tail = Some(TornTail {
                        file: path,
                        offset,
                        bytes: dirty_end - offset,
                    });
                } else {
                    w.damage = Some(Damage {
                        file: path,
                        segment: Some(id),
                        offset,
                        reason: format!("{reason} in a sealed segment"),
                    });
                    break;
                }
            }
            Ok(ScanEnd::Corrupt { offset, next, reason }) => {
                w.damage = Some(Damage {
                    file: path,
                    segment: Some(id),
                    offset,
                    reason: format!("{reason} (valid data follows at offset {next})"),
                });
                break;
            }
            Err((offset, reason)) => {
                w.damage = Some(Damage {
                    file: path,
                    segment: Some(id),
                    offset,
                    reason,
                });
                break;
            }
        }
    }
    Ok(w)
}

/// Holds the walk's log to the point the index file's header says was
/// durable when the file was saved (the store syncs the log before it
/// saves an index file), as open does: a log that ends before it, torn
/// tail or not, lost acknowledged events, which is damage, never a torn
/// write to cut. Only a header with a valid CRC of this very store counts
/// (the rest of the file may be unusable).
pub(crate) fn hold_to_durable_floor(dir: &Path, w: &mut Walk) -> Result<()> {
    if w.damage.is_some() {
        return Ok(());
    }
    let path = dir.join(crate::index::file::FILE_NAME);
    let Some(Ok(bytes)) = super::verify::read_store_file(&path)? else {
        return Ok(());
    };
    let (Some(store_id), Some((segment, end))) = (w.store_id, w.data_end) else {
        return Ok(());
    };
    let Some(floor) = crate::recovery::durable_floor_of(&bytes, store_id) else {
        return Ok(());
    };
    let damage = match crate::recovery::short_of_floor(&floor, segment, end) {
        Some(why) => Some((segment, end, why)),
        // The log reaches the floor: it must hold the very batch recorded
        // there.
        None => {
            let map = map_file(&segment::path(dir, floor.end_segment))?;
            crate::recovery::floor_batch_replaced(&floor, &w.index, &map)
                .map(|(offset, why)| (floor.end_segment, offset, why))
        }
    };
    if let Some((segment, offset, reason)) = damage {
        w.torn_tail = None;
        w.damage = Some(Damage {
            file: segment::path(dir, segment),
            segment: Some(segment),
            offset,
            reason,
        });
    }
    Ok(())
}

/// Holds a torn tail to the saved checkpoints and snapshots, as open does:
/// each proves the log was durable up to its event, so invalid bytes where
/// such events should be are damage, never a torn write to cut. A
/// checkpoints or snapshot file that cannot be read is an error.
pub(crate) fn hold_to_durable_proofs(dir: &Path, w: &mut Walk) -> Result<()> {
    let (Some(torn), Some(store_id)) = (&w.torn_tail, w.store_id) else {
        return Ok(());
    };
    let Some(reason) = crate::recovery::durable_proof(&StdFs, dir, store_id, &w.index, torn.bytes)? else {
        return Ok(());
    };
    w.damage = Some(Damage {
        file: torn.file.clone(),
        segment: w.data_end.map(|(segment, _)| segment),
        offset: torn.offset,
        reason,
    });
    w.torn_tail = None;
    Ok(())
}

/// Checks a segment header; the inner error is the reason it is bad. A
/// header of a newer format version is an error, not damage: a newer
/// annal wrote it, and `repair` must not quarantine it.
fn check_header(
    map: &[u8],
    path: &Path,
    id: u64,
    previous: Option<&Bytes>,
    w: &mut Walk,
) -> Result<Result<(), String>> {
    let header = match SegmentHeader::decode(map, path) {
        Ok(h) => h,
        Err(Error::Corruption { reason, .. }) => return Ok(Err(reason)),
        Err(e) => return Err(e),
    };
    if let Err(why) = check_header_fields(&header, id, w) {
        return Ok(Err(why));
    }
    // The segment before ends with the batch this header records.
    if let Some(why) = previous.and_then(|map| crate::recovery::chain_broken(&header, &w.index, id - 1, map)) {
        w.chain_broken = true;
        return Ok(Err(why));
    }
    Ok(Ok(()))
}

fn check_header_fields(header: &SegmentHeader, id: u64, w: &mut Walk) -> Result<(), String> {
    if header.segment_id != id {
        return Err("segment number in header differs from file name".into());
    }
    match w.store_id {
        Some(store) if store != header.store_id => return Err("segment belongs to another store".into()),
        _ => w.store_id = Some(header.store_id),
    }
    let last = w.index.last_position();
    if header.first_position != last + 1 {
        let why = if header.first_position > last + 1 && id > 1 {
            format!(
                " (events {} to {} are missing: segment {} ends short of them)",
                last + 1,
                header.first_position - 1,
                id - 1
            )
        } else {
            String::new()
        };
        return Err(format!(
            "segment starts at position {} but the log before it ends at {last}{why}",
            header.first_position
        ));
    }
    Ok(())
}

/// Walks one segment's batches; an error is a batch (offset and reason)
/// that is valid on its own but does not follow on from the log before it.
fn walk_segment(
    map: &[u8],
    id: u64,
    target: u64,
    w: &mut Walk,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ScanEnd, (u64, String)> {
    let mut failure = None;
    let end = segment::scan(map, SEGMENT_HEADER_BYTES, |batch_at, header, records| {
        if failure.is_some() {
            return;
        }
        if let Err(reason) = add_batch(map, id, batch_at, header, records, &mut w.index) {
            failure = Some((batch_at, reason));
            return;
        }
        if let Some(ids) = &mut w.ids {
            ids.extend(
                (header.first_position..)
                    .zip(records)
                    .map(|(p, r)| (r.header.id.as_u128(), p)),
            );
        }
        let last = header.first_position.saturating_add(u64::from(header.record_count) - 1);
        if (header.first_position..=last).contains(&target) {
            w.target_end = Some(BatchEnd {
                segment: id,
                offset: batch_at + u64::from(header.frame_len),
                crc: header.crc,
            });
        }
        progress(batch_at + u64::from(header.frame_len), w.index.last_position());
    });
    match failure {
        Some(f) => Err(f),
        None => Ok(end),
    }
}

/// Adds a checked batch to the index, or says why it does not follow on
/// (then nothing of it is added).
fn add_batch(
    map: &[u8],
    id: u64,
    batch_at: u64,
    header: &BatchHeader,
    records: &[CheckedRecord],
    index: &mut Index,
) -> Result<(), String> {
    if header.first_position != index.last_position() + 1 {
        return Err(format!(
            "batch starts at position {} but the log before it ends at {}",
            header.first_position,
            index.last_position()
        ));
    }
    let name_of = |r: &CheckedRecord| {
        let at = batch_at as usize + r.offset as usize + RECORD_HEADER_BYTES;
        map.get(at..at + usize::from(r.header.stream_len))
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    };
    let mut pending: HashMap<&str, u64> = HashMap::new();
    for r in records {
        let name = name_of(r);
        let current = pending.get(name).copied().unwrap_or_else(|| index.stream_version(name));
        let version = u64::from(r.header.version);
        if version != current + 1 {
            return Err(format!("stream '{name}' version {version} does not follow {current}"));
        }
        pending.insert(name, version);
    }
    for (k, r) in records.iter().enumerate() {
        let location = Location {
            segment: id,
            offset: batch_at + u64::from(r.offset),
        };
        index.push(
            name_of(r),
            u64::from(r.header.version),
            header.first_position.saturating_add(k as u64),
            location,
        )?;
    }
    Ok(())
}
