//! `verify`: checks every byte of a store without changing any.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::walk::{self, BatchEnd, TornTail, Walk};
use super::{Damage, Progress, lock};
use crate::checkpoint;
use crate::error::{IoContext, Result};
use crate::index::Index;
use crate::index::file::{self as index_file, Checkpoint};
use crate::log::segment;

/// What [`verify`] found about the index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexStatus {
    /// There is no index file; the next open rebuilds it from the log.
    Missing,
    /// The index file agrees with the log on every event it covers (the
    /// first `covers` events; open replays the log after them).
    Agrees {
        /// Number of events the index file covers.
        covers: u64,
    },
    /// The index file agrees with the log up to the log's damage, but
    /// covers events past it, which could not be compared.
    PastDamage {
        /// Number of events the index file covers.
        covers: u64,
    },
    /// The index file is damaged or contradicts the log.
    Damaged(Damage),
}

/// The result of [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The store directory.
    pub path: PathBuf,
    /// The store id, from the first segment header (when readable).
    pub store_id: Option<Uuid>,
    /// Number of segment files.
    pub segments: u64,
    /// Events checked: every event before the first damage.
    pub events: u64,
    /// Streams among those events.
    pub streams: u64,
    /// Bytes of segment files read.
    pub bytes_checked: u64,
    /// A torn final write, which is not corruption: the next open cuts it.
    pub torn_tail: Option<TornTail>,
    /// The index file's state.
    pub index: IndexStatus,
    /// The first damage in the log, if any.
    pub damage: Option<Damage>,
    /// The snapshot side-file's state. Snapshots are a cache: damage there
    /// makes loads fall back to replaying the stream, so it is reported
    /// here but does not make the store unclean. Snapshots of events the
    /// log does not hold are different: see [`VerifyReport::lost_events`].
    pub snapshots: SnapshotFileStatus,
    /// The first snapshot that shows the log lost events it once held: a
    /// snapshot of a version past its stream's last event in the checked
    /// log, or one taken at another event than the log's at its version.
    /// Snapshot saves refuse versions the log does not hold and sync the
    /// log first, so only a log that lost acknowledged events (a segment
    /// deleted or put back from an older copy, bytes cut by another
    /// program) leaves such a snapshot, even where nothing else in the
    /// directory shows the loss. Makes the store unclean; `repair` drops
    /// those snapshots (loads never use them). Also listed among the
    /// problems of [`VerifyReport::snapshots`].
    pub lost_events: Option<Damage>,
    /// The checkpoints file's state. Unlike snapshots, checkpoints are not
    /// a cache: a damaged file stops every consumer that loads one, and a
    /// checkpoint past the log's end would make a consumer skip the events
    /// later appended up to it. Either makes the store unclean; `repair`
    /// deals with both.
    pub checkpoints: CheckpointsFileStatus,
    /// Event ids the log holds more than once, if any. Not damage (the
    /// store reads and appends as usual), but the trace of retries that
    /// were not recognised: under `ExpectedVersion::Any`/`StreamExists`,
    /// a retry of an older append after later appends to its stream and
    /// beyond the id window writes its events again.
    pub duplicate_ids: Option<DuplicateIds>,
}

/// Event ids stored more than once, found by [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DuplicateIds {
    /// Events whose id an earlier event already has.
    pub extra_events: u64,
    /// The smallest such id, with the positions of its first two events.
    pub first: (Uuid, u64, u64),
}

/// What [`verify`] found in the checkpoints file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointsFileStatus {
    /// No checkpoints file (no checkpoint was ever saved).
    Missing,
    /// The file is intact and every checkpoint is within the log.
    Clean {
        /// Number of checkpoints.
        checkpoints: u64,
    },
    /// The file cannot be read, belongs to another store, or names a
    /// position past the log's last event.
    Damaged(Damage),
}

/// What [`verify`] found in the snapshot side-file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotFileStatus {
    /// No snapshot file.
    Missing,
    /// Every record's CRC holds.
    Clean {
        /// Valid snapshot records.
        records: u64,
    },
    /// Some records (or the header) are damaged or torn; the valid ones
    /// still serve loads.
    Damaged {
        /// Valid snapshot records.
        records: u64,
        /// Each problem, with its byte offset.
        problems: Vec<Damage>,
    },
}

impl VerifyReport {
    /// Whether the store is free of damage (a torn tail is not damage).
    pub fn is_clean(&self) -> bool {
        self.first_damage().is_none()
    }

    /// The first damage found: in the log, else in the index file, else
    /// in the checkpoints file, else a snapshot of events the log lost
    /// ([`VerifyReport::lost_events`]).
    pub fn first_damage(&self) -> Option<&Damage> {
        match (&self.damage, &self.index, &self.checkpoints) {
            (Some(d), _, _) => Some(d),
            (None, IndexStatus::Damaged(d), _) => Some(d),
            (None, _, CheckpointsFileStatus::Damaged(d)) => Some(d),
            _ => self.lost_events.as_ref(),
        }
    }
}

/// Checks a store directory without modifying anything: every segment
/// header, every batch and record CRC, that positions and stream versions
/// follow on without gaps, and that the index file (if any) agrees with the
/// log. Damage is reported in the returned [`VerifyReport`], not as an
/// error; errors are for a directory without a store
/// ([`crate::Error::InvalidInput`]), a store open elsewhere
/// ([`crate::Error::Locked`]) and I/O failures.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport> {
    verify_with_progress(dir, &mut |_| {})
}

/// [`verify`], calling `progress` as it goes (often: throttle the display).
pub fn verify_with_progress(dir: impl AsRef<Path>, progress: &mut dyn FnMut(Progress)) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let ids = walk::segment_ids(dir)?;
    let _lock = lock::shared(dir)?;
    let saved = load_index_file(dir)?;
    let target = match &saved {
        Some(Ok((_, cp))) => cp.last_position,
        _ => 0,
    };
    let mut w = walk::walk(dir, &ids, target, true, progress)?;
    walk::hold_to_durable_floor(dir, &mut w)?;
    walk::hold_to_durable_proofs(dir, &mut w)?;
    let index = check_index(dir, &w, saved);
    let (snapshots, lost_events) = check_snapshots(dir, w.store_id, &w.index)?;
    let checkpoints = check_checkpoints(dir, w.store_id, w.index.last_position(), w.damage.is_some())?;
    let duplicate_ids = w.ids.take().and_then(duplicates);
    Ok(VerifyReport {
        path: dir.to_path_buf(),
        store_id: w.store_id,
        segments: ids.len() as u64,
        events: w.index.last_position(),
        streams: w.index.stream_count() as u64,
        bytes_checked: w.bytes_checked,
        torn_tail: w.torn_tail,
        index,
        damage: w.damage,
        snapshots,
        lost_events,
        checkpoints,
        duplicate_ids,
    })
}

/// Event ids stored more than once (`None` when every id is unique).
fn duplicates(mut ids: Vec<(u128, u64)>) -> Option<DuplicateIds> {
    ids.sort_unstable();
    let mut found: Option<DuplicateIds> = None;
    for pair in ids.windows(2) {
        let ((a, first), (b, second)) = (pair[0], pair[1]);
        if a != b {
            continue;
        }
        match &mut found {
            Some(d) => d.extra_events += 1,
            None => {
                found = Some(DuplicateIds {
                    extra_events: 1,
                    first: (Uuid::from_u128(a), first, second),
                })
            }
        }
    }
    found
}

/// Reads and decodes the checkpoints file: `None` when there is none,
/// else the checkpoints or the damage that stops them being read.
pub(crate) fn read_checkpoints(
    dir: &Path,
    store_id: Option<Uuid>,
) -> Result<Option<std::result::Result<BTreeMap<String, u64>, Damage>>> {
    let path = dir.join(crate::CHECKPOINTS_FILE_NAME);
    let bytes = match read_store_file(&path)? {
        None => return Ok(None),
        Some(Ok(bytes)) => bytes,
        Some(Err(reason)) => {
            return Ok(Some(Err(Damage {
                file: path,
                segment: None,
                offset: 0,
                reason,
            })));
        }
    };
    // Without a readable segment header there is no store id to compare
    // with; the file's own then stands in.
    let id = store_id
        .or_else(|| bytes.get(12..28).and_then(|b| Uuid::from_slice(b).ok()))
        .unwrap_or_default();
    Ok(Some(checkpoint::decode(&bytes, id).map_err(|(offset, reason)| {
        Damage {
            file: path,
            segment: None,
            offset,
            reason,
        }
    })))
}

/// Checks the checkpoints file against the log, which holds `last_position`
/// events (before its first damage, when `log_damaged`).
fn check_checkpoints(
    dir: &Path,
    store_id: Option<Uuid>,
    last_position: u64,
    log_damaged: bool,
) -> Result<CheckpointsFileStatus> {
    Ok(match read_checkpoints(dir, store_id)? {
        None => CheckpointsFileStatus::Missing,
        Some(Err(damage)) => CheckpointsFileStatus::Damaged(damage),
        Some(Ok(map)) => {
            let ahead: Vec<String> = map
                .iter()
                .filter(|(_, p)| **p > last_position)
                .map(|(name, p)| format!("'{name}' at {p}"))
                .collect();
            if ahead.is_empty() {
                CheckpointsFileStatus::Clean {
                    checkpoints: map.len() as u64,
                }
            } else {
                CheckpointsFileStatus::Damaged(Damage {
                    file: dir.join(crate::CHECKPOINTS_FILE_NAME),
                    segment: None,
                    offset: 0,
                    reason: if log_damaged {
                        format!(
                            "checkpoint {} past position {last_position}, the last one before the log's damage \
                             (`annal repair` lowers it to the kept log's end)",
                            ahead.join(", ")
                        )
                    } else {
                        format!(
                            "checkpoint {} past the log's last position {last_position}",
                            ahead.join(", ")
                        )
                    },
                })
            }
        }
    })
}

/// Checks every record of the snapshot side-file, if there is one, and
/// that no snapshot is of a version past its stream's last event in the
/// checked log, nor of another event than the log's at its version.
/// Returns the file's status and the first snapshot of events the log
/// lost ([`VerifyReport::lost_events`]).
fn check_snapshots(dir: &Path, store_id: Option<Uuid>, index: &Index) -> Result<(SnapshotFileStatus, Option<Damage>)> {
    use crate::snapshot::file as snapshot_file;
    let path = dir.join(snapshot_file::FILE_NAME);
    let problem = |offset: u64, reason: String| Damage {
        file: path.clone(),
        segment: None,
        offset,
        reason,
    };
    let bytes = match read_store_file(&path)? {
        None => return Ok((SnapshotFileStatus::Missing, None)),
        Some(Ok(bytes)) => bytes,
        Some(Err(reason)) => {
            let problems = vec![problem(0, reason)];
            return Ok((SnapshotFileStatus::Damaged { records: 0, problems }, None));
        }
    };
    let (mut problems, scan) = snapshot_file_problems(&bytes, &path, store_id);
    let Some(scan) = scan else {
        return Ok((SnapshotFileStatus::Damaged { records: 0, problems }, None));
    };
    // The id of a stream's event at a version, read from its segment.
    let event_id_at = |stream: &str, version: u64| -> Option<Uuid> {
        use std::io::{Read, Seek, SeekFrom};
        let position = index
            .stream(stream)?
            .get(usize::try_from(version.checked_sub(1)?).ok()?)?;
        let location = index.location(position)?;
        let mut file = std::fs::File::open(crate::log::segment::path(dir, location.segment)).ok()?;
        let mut id = [0u8; 16];
        let at = location.offset + crate::log::frame::RECORD_EVENT_ID_AT as u64;
        file.seek(SeekFrom::Start(at)).ok()?;
        file.read_exact(&mut id).ok()?;
        Some(Uuid::from_bytes(id))
    };
    let mut lost_events = None;
    for r in &scan.records {
        let have = index.stream_version(&r.stream);
        let reason = if r.version > have {
            format!(
                "snapshot of '{}' at version {} is past the stream's last event (version {have}): it was taken of \
                 events the log no longer holds (loads never use it); `annal repair` removes it",
                r.stream, r.version
            )
        } else if event_id_at(&r.stream, r.version) != Some(r.event_id) {
            format!(
                "snapshot of '{}' at version {} was taken at another event than the log's at that version (the \
                 log was cut and the stream grew again; loads never use it); `annal repair` removes it",
                r.stream, r.version
            )
        } else {
            continue;
        };
        let found = problem(r.offset, reason);
        lost_events.get_or_insert_with(|| found.clone());
        problems.push(found);
    }
    let records = scan.records.len() as u64;
    let status = if problems.is_empty() {
        SnapshotFileStatus::Clean { records }
    } else {
        SnapshotFileStatus::Damaged { records, problems }
    };
    Ok((status, lost_events))
}

/// The snapshot file's own damage: a header that is unusable or of
/// another store, records that fail their checks, torn bytes after the
/// last valid record; with the scan of its records when the header is
/// usable. (Snapshots of events the log does not hold are not damage of
/// the file: [`check_snapshots`] and `repair` deal with them.)
pub(crate) fn snapshot_file_problems(
    bytes: &[u8],
    path: &Path,
    store_id: Option<Uuid>,
) -> (Vec<Damage>, Option<crate::snapshot::file::Scan>) {
    use crate::snapshot::file as snapshot_file;
    let problem = |offset: u64, reason: String| Damage {
        file: path.to_path_buf(),
        segment: None,
        offset,
        reason,
    };
    match snapshot_file::decode_header(bytes) {
        Ok(id) if Some(id) != store_id && store_id.is_some() => {
            return (vec![problem(0, "snapshot file of another store".into())], None);
        }
        Ok(_) => {}
        Err(e) => return (vec![problem(0, format!("bad snapshot file header: {e}"))], None),
    }
    let scan = snapshot_file::scan(bytes);
    let mut problems: Vec<Damage> = scan
        .skipped
        .iter()
        .map(|skipped| problem(skipped.offset, skipped.reason.clone()))
        .collect();
    if scan.end < bytes.len() as u64 && bytes[scan.end as usize..].iter().any(|b| *b != 0) {
        problems.push(problem(
            scan.end,
            "torn or unreadable bytes after the last valid snapshot".into(),
        ));
    }
    (problems, Some(scan))
}

/// The decoded index file: `None` when absent, else the decoded index or
/// why it cannot be decoded.
pub(crate) type SavedIndex = Option<Result<(Index, Checkpoint), String>>;

/// Reads and decodes the index file, if there is one.
pub(crate) fn load_index_file(dir: &Path) -> Result<SavedIndex> {
    let path = dir.join(index_file::FILE_NAME);
    Ok(read_store_file(&path)?.map(|bytes| index_file::decode(&bytes?.into())))
}

/// Why a store file that is a directory (or another special file) is damage.
pub(crate) const NOT_A_FILE: &str = "not a file: something else has its name";

/// The bytes of one of the store's side files: `None` when there is none,
/// the reason when something other than a file has its name (a directory,
/// say: damage for `repair` to move aside, not an I/O error that stops
/// `verify`).
pub(crate) fn read_store_file(path: &Path) -> Result<Option<std::result::Result<Vec<u8>, String>>> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Ok(meta) if !meta.is_file() => Ok(Some(Err(NOT_A_FILE.into()))),
        _ => {
            let bytes = std::fs::read(path).ctx(|| format!("reading {}", path.display()))?;
            Ok(Some(Ok(bytes)))
        }
    }
}

/// Compares the index file with what the walk found in the log.
pub(crate) fn check_index(dir: &Path, w: &Walk, saved: SavedIndex) -> IndexStatus {
    let path = dir.join(index_file::FILE_NAME);
    let damaged = |offset: u64, reason: String| {
        IndexStatus::Damaged(Damage {
            file: path.clone(),
            segment: None,
            offset,
            reason,
        })
    };
    let (index, cp) = match saved {
        None => return IndexStatus::Missing,
        Some(Err(reason)) => return damaged(0, format!("index file unreadable: {reason}")),
        Some(Ok(parts)) => parts,
    };
    if w.store_id.is_some_and(|id| id != cp.store_id) {
        return damaged(0, "index file belongs to another store".into());
    }
    let log_events = w.index.last_position();
    let compared = cp.last_position.min(log_events);
    let n = usize::try_from(compared).unwrap_or(usize::MAX);
    let (ours, theirs) = (index.locations().iter().take(n), w.index.locations().iter().take(n));
    if let Some(i) = ours.zip(theirs).position(|(a, b)| a != b) {
        return damaged(
            index_file::HEADER_BYTES as u64 + 8 * i as u64,
            format!("index file places position {} elsewhere than the log does", i + 1),
        );
    }
    for (name, entry) in index.streams() {
        let theirs: Vec<u64> = w
            .index
            .stream(name)
            .map(|e| e.iter().take_while(|&p| p <= compared).collect())
            .unwrap_or_default();
        let ours: Vec<u64> = entry.iter().take_while(|&p| p <= compared).collect();
        if ours != theirs {
            return damaged(
                index_file::HEADER_BYTES as u64,
                format!("index file's stream '{name}' differs from the log"),
            );
        }
    }
    if cp.last_position > log_events {
        if w.damage.is_some() {
            return IndexStatus::PastDamage {
                covers: cp.last_position,
            };
        }
        return damaged(
            0,
            format!(
                "index file covers {} events but the log holds {log_events}",
                cp.last_position
            ),
        );
    }
    let claimed = BatchEnd {
        segment: cp.end_segment,
        offset: cp.end_offset,
        crc: cp.last_batch_crc,
    };
    if w.target_end != Some(claimed) {
        return damaged(
            0,
            format!(
                "index file's checkpoint ({} offset {}) is not the end of the batch holding position {}",
                segment::file_name(cp.end_segment),
                cp.end_offset,
                cp.last_position
            ),
        );
    }
    IndexStatus::Agrees {
        covers: cp.last_position,
    }
}
