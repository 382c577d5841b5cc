//! `repair`: keeps the log before its first damage and moves the rest
//! into `quarantine/`, deleting nothing.

use std::fs::{self, File};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::verify::{self, IndexStatus};
use super::walk::{self, map_file};
use super::{Damage, lock};
use crate::error::{IoContext, Result};
use crate::index::file as index_file;
use crate::io::{FileHandle, FileSystem, OpenMode, StdFs};
use crate::log::frame::{self, FrameError};
use crate::log::segment::{self, SEGMENT_HEADER_BYTES, SegmentHeader};
use crate::log::tail::write_zeros;
use crate::options::Options;
use crate::store::Store;
use uuid::Uuid;

/// Name of the folder, inside the store directory, that receives what
/// [`repair`] takes out of the log.
pub const QUARANTINE_DIR: &str = "quarantine";

/// The result of [`repair`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepairReport {
    /// Whether anything was changed (false for a store without damage).
    pub repaired: bool,
    /// The damage that was repaired.
    pub damage: Option<Damage>,
    /// Events in the store after the repair (exact: counted by opening it).
    pub kept_events: u64,
    /// Events found in the quarantined bytes: records of batch frames that
    /// still pass their CRC checks. Damaged frames hold events that cannot
    /// be counted; their bytes are in `unreadable_bytes`.
    pub quarantined_events: u64,
    /// Bytes of the log moved or copied into quarantine: parts of
    /// segments, whole segments (headers included) and the copy of a torn
    /// tail that the repair's own open cut (trailing zeros of a segment's
    /// preallocation not included). Side files moved there (index,
    /// checkpoints, snapshots) and the old bytes of a rebuilt segment
    /// header are listed in `quarantined_files`, not counted here.
    pub quarantined_bytes: u64,
    /// Non-zero quarantined bytes outside any valid batch frame.
    pub unreadable_bytes: u64,
    /// The quarantine folder.
    pub quarantine_dir: PathBuf,
    /// Files created in the quarantine folder.
    pub quarantined_files: Vec<PathBuf>,
    /// Whether the index file was moved to quarantine (the next open
    /// rebuilds it; `repair` does so by opening the store).
    pub index_rebuilt: bool,
    /// Whether the checkpoints file could not be read and was moved to
    /// quarantine: every consumer then starts again from its first event
    /// (delivery is at least once, so idempotent handlers cope).
    pub checkpoints_quarantined: bool,
    /// Checkpoints that named positions past the repaired log, with those
    /// positions; each now names the log's last position (`kept_events`),
    /// so its consumer gets the events appended from now on instead of
    /// skipping them. Its read model may still reflect events that were
    /// quarantined: rebuild it if that matters.
    pub checkpoints_lowered: Vec<(String, u64)>,
    /// Segments whose header was damaged on its own and was written anew
    /// (the old bytes copied into quarantine as `<segment file>.header`):
    /// every field of a header is known from elsewhere (the file name, the
    /// store's id, the position its first batch holds), so one damaged
    /// header does not cost the events of its segment and every later one.
    pub headers_rebuilt: Vec<u64>,
    /// Snapshots, as (stream, version), that no load can use any more:
    /// of versions past their stream's kept events (taken of events the
    /// repair quarantined), or taken at another event than the one the
    /// kept log holds at that version. They are removed from the snapshot
    /// file (the whole old file is copied into quarantine first): loads
    /// already refuse them, by the event id each snapshot records
    /// ([`crate::SnapshotIssue::OtherEvent`]), so they are dead weight.
    pub snapshots_dropped: Vec<(String, u64)>,
    /// Whether the first segment's header was lost, so that no event could
    /// be kept and the directory holds no store any more: every segment,
    /// and the checkpoints and snapshot files, which belonged to that
    /// store, went to quarantine (the next append creates a new store).
    pub store_removed: bool,
}

/// Salvages a store whose log is damaged somewhere a crash cannot explain
/// (so that [`Store::open`] refuses it with [`crate::Error::Corruption`]).
///
/// A segment header damaged on its own (it fails its own checks while the
/// segment's first batch holds exactly the position after the log before
/// it, and the store's id is known) is written anew first, the old bytes
/// copied to `quarantine/<segment file>.header`
/// ([`RepairReport::headers_rebuilt`]); bytes after the last batch of a
/// sealed segment whose next segment follows on are copied to quarantine
/// and cut. Neither costs an event.
///
/// Keeps every batch before the first damaged one. Moves the rest into
/// `DIR/quarantine/`: the bytes of the damaged segment from the damaged
/// batch on (copied to `<segment file>.from-<offset>`, then zeroed in the
/// segment), every later segment file (moved whole), and the index file.
/// Nothing is deleted. Then opens the store, which rebuilds the index, and
/// reports exactly how many events were kept.
///
/// A damaged or contradicting index file alone is moved to quarantine too,
/// and so is a checkpoints file that cannot be read. Checkpoints that name
/// positions past the kept log are lowered to its last position, and
/// snapshots that no load can use any more (of versions past their
/// stream's kept events, or of another event than the kept log's at their
/// version) are removed from the snapshot file (a copy of the old file
/// goes to quarantine).
/// A store without damage is left untouched (`repaired` is false): it is
/// only opened read-only, so even a torn tail or a leftover temporary file
/// stays for the next writable open to clear (a torn tail is not damage).
/// The writes `repair` makes before it looks for damage: the directory's
/// `LOCK` file (created, or its note rewritten, as by any writable open),
/// and storage for the holes of a sparse copy of the store (the bytes
/// stay the same; see docs/DURABILITY.md, "Known limits"), so a full disk
/// fails it then.
/// An index, checkpoints or snapshot file that is not a file at all (a
/// directory) is moved to quarantine too, and so is a snapshot file
/// damaged itself (header, a record, torn bytes): a cache, which loads do
/// without.
///
/// Refuses ([`crate::Error::Corruption`], nothing changed) a directory
/// whose segments carry different store ids, and one whose segments do not
/// chain (a segment's header records another end or CRC for the segment
/// before it than it has: two copies of the store), also past the first
/// damage, where the walk of the log stops (there by each segment's own
/// valid batches: see docs/DURABILITY.md, guarantee 9): which events to
/// keep is for the user to say. (A refusal found only after mending a
/// header or a sealed segment's end says so: those stay mended, their old
/// bytes in quarantine.)
///
/// A repair stopped anywhere (killed, an I/O error) is finished by the
/// next one, as if never stopped (docs/DURABILITY.md, guarantee 10).
/// Never called implicitly by the store.
pub fn repair(dir: impl AsRef<Path>) -> Result<RepairReport> {
    let dir = dir.as_ref();
    // No segment but side files: a log deleted or left behind by a restore
    // is refused (`Corruption`), unless a removal of this repair's own
    // was stopped.
    let ids = match walk::segment_ids(dir) {
        Err(crate::Error::InvalidInput(_) | crate::Error::Corruption { .. }) if removal_unfinished(dir) => Vec::new(),
        found => found?,
    };
    let quarantine_dir = dir.join(QUARANTINE_DIR);
    let mut report = RepairReport {
        repaired: false,
        damage: None,
        kept_events: 0,
        quarantined_events: 0,
        quarantined_bytes: 0,
        unreadable_bytes: 0,
        quarantine_dir: quarantine_dir.clone(),
        quarantined_files: Vec::new(),
        index_rebuilt: false,
        checkpoints_quarantined: false,
        checkpoints_lowered: Vec::new(),
        headers_rebuilt: Vec::new(),
        snapshots_dropped: Vec::new(),
        store_removed: false,
    };
    if ids.is_empty() {
        // A repair that lost segment 1's header, stopped (killed) after it
        // moved the last segment into quarantine: the store's side files
        // are still here. Finish it, as the next append would otherwise
        // create a new store beside another store's checkpoints.
        let _lock = lock::exclusive(dir)?;
        report.index_rebuilt = quarantine_file(dir, index_file::FILE_NAME, &mut report)?;
        report.checkpoints_quarantined = quarantine_file(dir, crate::CHECKPOINTS_FILE_NAME, &mut report)?;
        quarantine_file(dir, crate::snapshot::file::FILE_NAME, &mut report)?;
        report.repaired = true;
        report.store_removed = true;
        return Ok(report);
    }
    {
        let _lock = lock::exclusive(dir)?;
        // Which store's events to keep is for the user to say: keeping the
        // log before the stray file would throw out every later segment
        // of the store, or all of it when the stray file is segment 1.
        if let Some((stray, reason)) = walk::foreign_segment(dir, &ids)? {
            return Err(crate::Error::corruption(
                segment::path(dir, stray),
                0,
                format!("{reason}; repair changed nothing (run it again once one store's segments are left)"),
            ));
        }
        // A writing command: the holes of a sparse copy get storage before
        // the walk maps the segments (see `recovery::fill_holes`).
        // (A segment's name held by a FIFO or directory has no holes: the
        // walk reports it as damage.)
        for &id in &ids {
            let path = segment::path(dir, id);
            let file = match StdFs.open(&path, OpenMode::Read) {
                Err(e) if crate::io::is_not_a_regular_file(&e) => continue,
                opened => opened.ctx(|| format!("opening {}", path.display()))?,
            };
            let len = file.len().ctx(|| format!("opening {}", path.display()))?;
            crate::recovery::fill_holes(&StdFs, &path, &file, len)?;
        }
        let saved = verify::load_index_file(dir)?;
        let target = match &saved {
            Some(Ok((_, cp))) => cp.last_position,
            _ => 0,
        };
        let walk_log = || -> Result<walk::Walk> {
            let mut w = walk::walk(dir, &ids, target, false, &mut |_| {})?;
            walk::hold_to_durable_floor(dir, &mut w)?;
            walk::hold_to_durable_proofs(dir, &mut w)?;
            Ok(w)
        };
        let mut w = walk_log()?;
        refuse_diverged(dir, &ids, &w, false)?;
        // Damage that costs no event is mended in place, and the log walked
        // again: a segment header damaged on its own is written anew, bytes
        // after the last batch of a sealed segment whose next segment
        // follows on are cut (each at most once per segment).
        let mut mended_damage = None;
        let mut mended = Vec::new();
        while let Some(damage) = w.damage.clone()
            && let Some(id) = damage.segment
            && !mended.contains(&(id, damage.offset == 0))
            && (damage.offset == 0 && rebuild_header(dir, &ids, id, &w, &mut report)?
                || damage.offset > 0 && cut_sealed_tail(dir, &ids, &damage, &w, &mut report)?)
        {
            mended.push((id, damage.offset == 0));
            mended_damage.get_or_insert(damage);
            w = walk_log()?;
            refuse_diverged(dir, &ids, &w, true)?;
        }
        let index = verify::check_index(dir, &w, saved);
        let index_damage = match index {
            IndexStatus::Damaged(d) => Some(d),
            _ => None,
        };
        if let Some(damage) = &w.damage {
            make_quarantine(&quarantine_dir)?;
            quarantine_log(dir, &ids, damage, &mut report)?;
        }
        if w.damage.is_some() || index_damage.is_some() {
            report.index_rebuilt = quarantine_file(dir, index_file::FILE_NAME, &mut report)?;
            report.repaired = true;
        }
        let checkpoints_damage = match verify::read_checkpoints(dir, w.store_id)? {
            Some(Err(damage)) => Some(damage),
            _ => None,
        };
        if checkpoints_damage.is_some() {
            report.checkpoints_quarantined = quarantine_file(dir, crate::CHECKPOINTS_FILE_NAME, &mut report)?;
            report.repaired = true;
        }
        // A snapshot file that is damaged itself (its header, a record,
        // torn bytes), or not a file at all, is moved aside whole: it is a
        // cache, and loads replay without it (snapshots of events the log
        // lacks are dropped from a sound file below instead).
        let snapshots = crate::snapshot::file::FILE_NAME;
        let snapshots_damage = match verify::read_store_file(&dir.join(snapshots))? {
            None => None,
            Some(Err(reason)) => Some(Damage {
                file: dir.join(snapshots),
                segment: None,
                offset: 0,
                reason,
            }),
            Some(Ok(bytes)) => {
                let (problems, _) = verify::snapshot_file_problems(&bytes, &dir.join(snapshots), w.store_id);
                problems.into_iter().next()
            }
        };
        if snapshots_damage.is_some() {
            quarantine_file(dir, snapshots, &mut report)?;
            report.repaired = true;
        }
        report.damage = w
            .damage
            .or(mended_damage)
            .or(index_damage)
            .or(checkpoints_damage)
            .or(snapshots_damage);
    }
    // Open (rebuilding the index when it was moved), to count what is kept
    // and to prove the store opens. A store whose first segment header was
    // damaged has no segment left: it holds no events, and the directory no
    // store; its checkpoints and snapshots go to quarantine too (the next
    // append creates a new store, with a new id, which they would not
    // belong to).
    // Only "no segment" means that: an I/O error listing the directory
    // says nothing about it, and must not cost the side files.
    // (`Corruption` here is the side files left without a segment: those
    // are the files moved next.)
    let no_segments = match walk::segment_ids(dir) {
        Ok(_) => false,
        Err(crate::Error::InvalidInput(_) | crate::Error::Corruption { .. }) => true,
        Err(e) => return Err(e),
    };
    if no_segments {
        report.store_removed = true;
        let _lock = lock::exclusive(dir)?;
        let had_checkpoints = quarantine_file(dir, crate::CHECKPOINTS_FILE_NAME, &mut report)?;
        report.checkpoints_quarantined |= had_checkpoints;
        quarantine_file(dir, crate::snapshot::file::FILE_NAME, &mut report)?;
    } else {
        // A store found undamaged is opened read-only and left untouched,
        // unless its checkpoints or snapshots need fixing after all.
        let untouched = !report.repaired && fix_side_files(dir, &mut report, true)?;
        if !untouched {
            fix_side_files(dir, &mut report, false)?;
        }
    }
    Ok(report)
}

/// Whether `dir`, which holds no segment, holds what a [`repair`] that
/// found the first segment's header lost (and so no store to keep) leaves
/// when it is stopped before its end: segment 1 moved whole into
/// `quarantine/`, and the store's index, checkpoints or snapshot file
/// still in `dir`. [`repair`] then finishes the job: it moves those files
/// into quarantine too.
pub fn removal_unfinished(dir: &Path) -> bool {
    let side_file = crate::recovery::SIDE_FILES
        .iter()
        .any(|(name, _)| fs::symlink_metadata(dir.join(name)).is_ok());
    side_file
        && super::quarantined_log_files(dir).is_ok_and(|files| {
            files.iter().any(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| super::salvage::is_whole_segment_numbered(n, 1))
            })
        })
}

/// Refuses a log that holds segments of two copies of the store that went
/// on differently: which copy's events to keep is for the user to say
/// (keeping the log before the later one would serve the other copy's
/// events, and quarantine this store's). Found by the walk (`w`) where it
/// reached, and past its first damage by each segment's own batches;
/// `mended` says whether repair mended something already.
fn refuse_diverged(dir: &Path, ids: &[u64], w: &walk::Walk, mended: bool) -> Result<()> {
    let Some(damage) = &w.damage else {
        return Ok(());
    };
    let diverged = if w.chain_broken {
        Some((damage.file.clone(), damage.offset, damage.reason.clone()))
    } else if let Some(from) = damage.segment {
        walk::diverged_segment(dir, ids, from)?.map(|(id, reason)| (segment::path(dir, id), 0, reason))
    } else {
        None
    };
    let Some((file, offset, reason)) = diverged else {
        return Ok(());
    };
    let changed = if mended {
        "repair changed nothing but the damaged headers and sealed segments' ends it mended (copies in quarantine)"
    } else {
        "repair changed nothing"
    };
    Err(crate::Error::corruption(
        file,
        offset,
        format!(
            "{reason}; {changed} (put back the segment that belongs, or move the segments of the other copy \
             aside, and run it again)"
        ),
    ))
}

/// Opens the store (rebuilding its index when it was moved), counts the
/// kept events, and fixes what the kept log contradicts: checkpoints past
/// it, snapshots of versions it does not hold. With `read_only`, fixes
/// nothing and returns false when something needs fixing (the caller then
/// opens it writable); returns true otherwise.
fn fix_side_files(dir: &Path, report: &mut RepairReport, read_only: bool) -> Result<bool> {
    let options = Options::default()
        .with_create_if_missing(false)
        .with_read_only(read_only);
    if !read_only {
        step("opening the store writable")?;
    }
    let store = Store::open(dir, options)?;
    report.kept_events = store.last_position();
    // A writable open cuts a torn tail of the active segment and keeps a
    // copy in the quarantine folder: a file this repair put there.
    if let Some(kept) = &store.recovery_report().torn_tail_kept {
        let map = map_file(kept)?;
        frames(&map, 0).count(report);
        report.quarantined_bytes += map.len() as u64;
        report.quarantined_files.push(kept.clone());
        report.repaired = true;
    }
    // No checkpoint may name a position the log does not hold: new events
    // will take those positions, and the consumer would skip them.
    let checkpoints = store.checkpoints();
    let past_checkpoints: Vec<(String, u64)> = checkpoints
        .list()?
        .into_iter()
        .filter(|&(_, position)| position > report.kept_events)
        .collect();
    // Nor should the snapshot file keep snapshots of events the log does
    // not hold (loads pass over them, but they are dead weight). Only a
    // snapshot file this store can use is looked into: opening one that is
    // missing would create it, and one with a bad header would be started
    // afresh (its snapshots lost without a copy).
    let path = dir.join(crate::snapshot::file::FILE_NAME);
    let usable = crate::io::read_witness(&StdFs, &path)?
        .filter(|bytes| crate::snapshot::file::decode_header(bytes).is_ok_and(|id| id == store.store_id()));
    let past_snapshots = match usable.as_ref().map(|_| store.dead_snapshots()) {
        None => Vec::new(),
        Some(Ok(past)) => past,
        // A snapshot file that a writable open would repair (a torn
        // tail): look again through one.
        Some(Err(_)) if read_only => {
            store.close()?;
            return Ok(false);
        }
        Some(Err(e)) => return Err(e),
    };
    if read_only {
        let clean = past_checkpoints.is_empty() && past_snapshots.is_empty();
        store.close()?;
        return Ok(clean);
    }
    for (name, position) in past_checkpoints {
        step("lowering a checkpoint")?;
        checkpoints.save(&name, report.kept_events)?;
        report.checkpoints_lowered.push((name, position));
        report.repaired = true;
    }
    if let Some(bytes) = usable.filter(|_| !past_snapshots.is_empty()) {
        let q = report.quarantine_dir.clone();
        make_quarantine(&q)?;
        let to = write_new(&q, crate::snapshot::file::FILE_NAME, &bytes)?;
        sync_dir(&q)?;
        report.quarantined_files.push(to);
        step("dropping snapshots")?;
        store.drop_snapshots(&past_snapshots)?;
        report.snapshots_dropped = past_snapshots;
        report.repaired = true;
    }
    store.close()?;
    Ok(true)
}

/// Moves the store's file `name`, when it exists, into the quarantine
/// folder, durably. Returns whether it existed.
fn quarantine_file(dir: &Path, name: &str, report: &mut RepairReport) -> Result<bool> {
    let q = report.quarantine_dir.clone();
    make_quarantine(&q)?;
    let path = dir.join(name);
    let existed = path.exists();
    if existed {
        let to = move_into(&path, &q, name)?;
        report.quarantined_files.push(to);
    }
    sync_dir(&q)?;
    sync_dir(dir)?;
    Ok(existed)
}

/// Most bits in which a damaged segment header may differ from the one
/// `repair` would write in its place (one byte's worth).
const REBUILD_BITS_MAX: u32 = 8;

/// Writes a new header for segment `id`, when its header is damaged on its
/// own: it fails its own checks (magic, length, CRC), the store's id is
/// known (from the segments before it, or, for segment 1, agreed on by
/// every other segment and side file that names one), and the segment's
/// first batch holds exactly the position after the log before it (or the
/// segment holds nothing but zeros), and the damaged header differs from
/// the new one in at most [`REBUILD_BITS_MAX`] bits (bit rot, not another
/// header). The old header's bytes are copied into quarantine first.
/// Returns whether it did.
fn rebuild_header(dir: &Path, ids: &[u64], id: u64, w: &walk::Walk, report: &mut RepairReport) -> Result<bool> {
    let path = segment::path(dir, id);
    // A missing segment (a gap) has no header to rebuild.
    let Some(map) = ids.contains(&id).then(|| map_file(&path).ok()).flatten() else {
        return Ok(false);
    };
    let header_bytes = SEGMENT_HEADER_BYTES as usize;
    // A valid header that says something else (another number, another
    // store, another position) is not rewritten.
    if map.len() < header_bytes || !matches!(SegmentHeader::decode(&map, &path), Err(crate::Error::Corruption { .. })) {
        return Ok(false);
    }
    let agreed = match w.store_id {
        Some(id) => Some(id),
        None => agreed_store_id(dir, ids, id)?,
    };
    let Some(store_id) = agreed else {
        return Ok(false);
    };
    let first_position = w.index.last_position() + 1;
    let body = &map[header_bytes..];
    match frame::check_batch(body, |_, _| {}) {
        Ok(batch) if batch.first_position == first_position => {}
        Err(FrameError::End) if body.iter().all(|&b| b == 0) => {}
        _ => return Ok(false),
    }
    // The previous segment's last batch, as this header records it: as
    // found in the log, or not recorded (a header written before annal
    // recorded it), whichever the damaged header is closer to.
    let recorded = if id > 1 {
        let previous = map_file(&segment::path(dir, id - 1))?;
        crate::recovery::last_batch_of(id - 1, first_position, &w.index, &previous)
    } else {
        None
    };
    // Only bit rot is mended: a header that differs from the one it would
    // be in more than a byte's worth of bits is some other header (a
    // segment of another store, say, whose batches cannot tell).
    let Some((differing, new)) = [recorded, Some((0, 0))]
        .into_iter()
        .flatten()
        .map(|(previous_end, previous_crc)| {
            let new = SegmentHeader {
                store_id,
                segment_id: id,
                first_position,
                previous_end,
                previous_crc,
            }
            .encode();
            let differing: u32 = new
                .iter()
                .zip(&map[..header_bytes])
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            (differing, new)
        })
        .min_by_key(|&(differing, _)| differing)
    else {
        return Ok(false);
    };
    if differing > REBUILD_BITS_MAX {
        return Ok(false);
    }
    let q = report.quarantine_dir.clone();
    make_quarantine(&q)?;
    let old = write_new(&q, &format!("{}.header", segment::file_name(id)), &map[..header_bytes])?;
    sync_dir(&q)?;
    report.quarantined_files.push(old);
    drop(map);
    let ctx = || format!("rewriting the header of {}", path.display());
    let file = StdFs.open(&path, OpenMode::ReadWrite).ctx(ctx)?;
    step("rewriting a segment header")?;
    file.write_all_at(&new, 0).ctx(ctx)?;
    step("syncing a rewritten segment header")?;
    file.sync_all().ctx(ctx)?;
    report.headers_rebuilt.push(id);
    report.repaired = true;
    Ok(true)
}

/// Cuts the bytes after the last batch of a sealed segment (`damage` in
/// segment N, not the last), when no valid batch follows them in it (other
/// than copies of the log's earlier batches) and segment N + 1 starts at exactly the position after the log before
/// them: bytes added there later (a sealed segment ends at its last
/// batch), holding no event of the log. They are copied into quarantine
/// first. Returns whether it did.
fn cut_sealed_tail(
    dir: &Path,
    ids: &[u64],
    damage: &Damage,
    w: &walk::Walk,
    report: &mut RepairReport,
) -> Result<bool> {
    let Some(id) = damage.segment.filter(|id| ids.contains(&(id + 1))) else {
        return Ok(false);
    };
    let path = segment::path(dir, id);
    let next = segment::path(dir, id + 1);
    let (Ok(map), Ok(next_map)) = (map_file(&path), map_file(&next)) else {
        return Ok(false);
    };
    let expected = w.index.last_position() + 1;
    // The next segment starts right after the valid log: by its header, or
    // (a header damaged itself, which repair rebuilds next) by its first
    // batch.
    let follows_on = match SegmentHeader::decode(&next_map, &next) {
        Ok(h) => Some(h.store_id) == w.store_id && h.first_position == expected,
        Err(crate::Error::Corruption { .. }) => next_map
            .get(SEGMENT_HEADER_BYTES as usize..)
            .and_then(|body| frame::check_batch(body, |_, _| {}).ok())
            .is_some_and(|batch| batch.first_position == expected),
        Err(_) => false,
    };
    let from = usize::try_from(damage.offset).unwrap_or(usize::MAX);
    if !follows_on || from < SEGMENT_HEADER_BYTES as usize || from >= map.len() {
        return Ok(false);
    }
    // A valid batch after them could continue the log in another copy of
    // the store: not cut. A copy of an earlier batch (every position of it
    // held by the log already) continues nothing.
    let mut at = from;
    while let Some(found) = segment::find_valid_batch(&map, at) {
        match frame::check_batch(&map[found..], |_, _| {}) {
            Ok(batch) if batch.first_position.saturating_add(u64::from(batch.record_count)) <= expected => {
                at = found + batch.frame_len as usize;
            }
            _ => return Ok(false),
        }
    }
    let q = report.quarantine_dir.clone();
    make_quarantine(&q)?;
    let bytes = &map[from..];
    let to = write_new(&q, &format!("{}.from-{from}", segment::file_name(id)), bytes)?;
    sync_dir(&q)?;
    report.quarantined_files.push(to);
    report.quarantined_bytes += bytes.len() as u64;
    // The copies of earlier batches there are valid frames: their events
    // count as quarantined (salvage reads them back), the rest unreadable.
    frames(&map, from).count(report);
    drop(map);
    let ctx = || format!("cutting {} at {from}", path.display());
    let file = StdFs.open(&path, OpenMode::ReadWrite).ctx(ctx)?;
    step("cutting a sealed segment")?;
    file.set_len(damage.offset).ctx(ctx)?;
    step("syncing a cut segment")?;
    file.sync_all().ctx(ctx)?;
    report.repaired = true;
    Ok(true)
}

/// The store id that every readable segment header other than segment
/// `except`'s, and every side file header, carries, when they agree on
/// one; an error when a side file cannot be read.
fn agreed_store_id(dir: &Path, ids: &[u64], except: u64) -> Result<Option<Uuid>> {
    let mut found = crate::recovery::side_file_store_ids(&StdFs, dir)?;
    found.extend(
        walk::segment_store_ids(dir, ids)?
            .into_iter()
            .filter(|&(id, _)| id != except)
            .map(|(_, store_id)| store_id),
    );
    let Some(&first) = found.first() else {
        return Ok(None);
    };
    Ok(found.iter().all(|&id| id == first).then_some(first))
}

/// Quarantines the log from `damage` on.
fn quarantine_log(dir: &Path, ids: &[u64], damage: &Damage, report: &mut RepairReport) -> Result<()> {
    let q = report.quarantine_dir.clone();
    let Some(first_bad) = damage.segment else {
        return Ok(());
    };
    // 1. The damaged segment's bytes from the bad batch on: copy them out
    //    (durably) before anything else changes.
    let cut = ids.contains(&first_bad) && damage.offset >= SEGMENT_HEADER_BYTES;
    if cut {
        let path = segment::path(dir, first_bad);
        let map = map_file(&path)?;
        let from = usize::try_from(damage.offset).unwrap_or(usize::MAX).min(map.len());
        let found = frames(&map, from);
        let bytes = &map[from..found.end];
        // A segment cut short (at or before the damage) has no bytes to
        // keep: no empty file.
        if !bytes.is_empty() {
            let name = format!("{}.from-{}", segment::file_name(first_bad), damage.offset);
            let to = write_new(&q, &name, bytes)?;
            found.count(report);
            report.quarantined_bytes += bytes.len() as u64;
            report.quarantined_files.push(to);
            sync_dir(&q)?;
        }
    }
    // 2. Later segments (and the damaged one when its header is bad), the
    //    highest first, so that the segments left are always numbered
    //    1..=k without a gap, whenever a crash interrupts this.
    let whole_from = if cut { first_bad + 1 } else { first_bad };
    for &id in ids.iter().rev().filter(|&&id| id >= whole_from) {
        let path = segment::path(dir, id);
        match map_file(&path) {
            Ok(map) => {
                // Events start after the header, damaged or not.
                let found = frames(&map, SEGMENT_HEADER_BYTES as usize);
                found.count(report);
                // With the header.
                report.quarantined_bytes += found.end as u64;
            }
            // Not a regular file (a FIFO, a directory): moved aside as it
            // is, with no bytes to count.
            Err(crate::Error::Corruption { .. }) => {}
            Err(e) => return Err(e),
        }
        let to = move_into(&path, &q, &segment::file_name(id))?;
        report.quarantined_files.push(to);
        sync_dir(&q)?;
        sync_dir(dir)?;
    }
    // 3. Zero the damaged segment from the bad batch on: it becomes the
    //    active segment, whose data ends where zeros begin.
    if cut {
        let path = segment::path(dir, first_bad);
        let ctx = || format!("zeroing the quarantined part of {}", path.display());
        let file = StdFs.open(&path, OpenMode::ReadWrite).ctx(ctx)?;
        let len = file.len().ctx(ctx)?;
        // (In two parts, so that tests can stop it half done, as a crash
        // can leave it.)
        let half = damage.offset.saturating_add(ZEROS_FIRST_BYTES).min(len);
        step("zeroing a damaged segment's tail")?;
        write_zeros(&file, damage.offset, half).ctx(ctx)?;
        step("zeroing the rest of a damaged segment's tail")?;
        write_zeros(&file, half, len).ctx(ctx)?;
        step("syncing a zeroed segment")?;
        file.sync_all().ctx(ctx)?;
    }
    Ok(())
}

/// Creates the quarantine directory `q` when missing. Something else of
/// that name is the user's to move: repair stops before changing anything.
fn make_quarantine(q: &Path) -> Result<()> {
    if fs::metadata(q).is_ok_and(|m| !m.is_dir()) {
        return Err(crate::Error::InvalidInput(format!(
            "{} exists and is not a directory: move it aside, then run repair again",
            q.display()
        )));
    }
    if !q.is_dir() {
        step("creating the quarantine folder")?;
    }
    fs::create_dir_all(q).ctx(|| format!("creating {}", q.display()))?;
    // Its name made durable before anything is copied into it and cut
    // from the log (also when an earlier run, stopped, created it).
    match q.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// What [`frames`] found in a stretch of log bytes.
struct Frames {
    /// Where it ends: after its last valid batch frame or its last
    /// non-zero byte, whichever comes later (a frame may end in zero
    /// bytes; the zeros after the last one are preallocated).
    end: usize,
    /// Events of its valid batch frames.
    events: u64,
    /// Its non-zero bytes outside them.
    unreadable_bytes: u64,
}

impl Frames {
    /// Adds the stretch's events and unreadable bytes to the report.
    fn count(&self, report: &mut RepairReport) {
        report.quarantined_events += self.events;
        report.unreadable_bytes += self.unreadable_bytes;
    }
}

/// Walks the batch frames of `bytes` from `start`, skipping over damaged
/// stretches ([`segment::walk_valid_frames`]): the events of the valid
/// ones, the non-zero bytes outside them, and where the stretch ends.
fn frames(bytes: &[u8], start: usize) -> Frames {
    let start = start.min(bytes.len());
    let mut found = Frames {
        end: bytes[start..]
            .iter()
            .rposition(|&b| b != 0)
            .map_or(start, |i| start + i + 1),
        events: 0,
        unreadable_bytes: 0,
    };
    segment::walk_valid_frames(bytes, start, |step| {
        match step {
            segment::Frame::Valid(at, header, _) => {
                found.events += u64::from(header.record_count);
                found.end = found.end.max(at + header.frame_len as usize);
            }
            segment::Frame::Skipped(range) => {
                found.unreadable_bytes += bytes[range].iter().filter(|&&b| b != 0).count() as u64;
            }
        }
        ControlFlow::Continue(())
    });
    found
}

/// A path in `q` for `name` that does not exist yet (earlier repairs may
/// have used the name).
fn free_name(q: &Path, name: &str) -> PathBuf {
    let mut candidate = q.join(name);
    let mut n = 1;
    while candidate.exists() {
        candidate = q.join(format!("{name}.{n}"));
        n += 1;
    }
    candidate
}

/// Moves a file into the quarantine folder, under a free name.
fn move_into(path: &Path, q: &Path, name: &str) -> Result<PathBuf> {
    let to = free_name(q, name);
    step("moving a file into quarantine")?;
    fs::rename(path, &to).ctx(|| format!("moving {} to {}", path.display(), to.display()))?;
    Ok(to)
}

/// Writes a new file durably in `q`: temp file, sync, rename.
fn write_new(q: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let to = free_name(q, name);
    let tmp = q.join(format!("{name}.partial"));
    let ctx = || format!("writing {}", to.display());
    step("writing a copy into quarantine")?;
    let written = File::create(&tmp)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, bytes)?;
            step_io("syncing a copy in quarantine")?;
            file.sync_all()
        })
        .and_then(|()| step_io("renaming a copy in quarantine"))
        .and_then(|()| fs::rename(&tmp, &to));
    if let Err(e) = written {
        // No partial copy left behind (a full disk gets its space back).
        let _ = fs::remove_file(&tmp);
        return Err(e).ctx(ctx);
    }
    Ok(to)
}

fn sync_dir(dir: &Path) -> Result<()> {
    step("syncing a directory")?;
    StdFs.sync_dir(dir).ctx(|| format!("syncing {}", dir.display()))
}

/// Bytes of a damaged segment's tail that `quarantine_log` zeroes first.
const ZEROS_FIRST_BYTES: u64 = 4096;

#[cfg(test)]
thread_local! {
    /// Tests stop this thread's repairs before step number `.0` of the
    /// ones [`step`] marks (counting from 0): with an I/O error, or, when
    /// `.1` is true, with a panic, which skips clean-up as a kill would.
    pub(super) static STOP_AT: std::cell::Cell<Option<(u32, bool)>> = const { std::cell::Cell::new(None) };
    /// The step the last stop came before.
    pub(super) static STOPPED_BEFORE: std::cell::Cell<&'static str> = const { std::cell::Cell::new("") };
}

/// Marks a step of a repair that changes the store's directory, `what`;
/// tests may stop the repair there (see `STOP_AT`, in test builds).
fn step(what: &'static str) -> Result<()> {
    step_io(what).map_err(|e| crate::Error::io(what, e))
}

/// [`step`] for closures that return `std::io::Result`.
fn step_io(what: &'static str) -> std::io::Result<()> {
    #[cfg(test)]
    if let Some((left, kill)) = STOP_AT.get() {
        if left > 0 {
            STOP_AT.set(Some((left - 1, kill)));
        } else {
            STOP_AT.set(None);
            STOPPED_BEFORE.set(what);
            if kill {
                panic!("repair killed before {what}");
            }
            return Err(std::io::Error::other(format!("repair stopped before {what}")));
        }
    }
    let _ = what;
    Ok(())
}
