//! The open snapshot file: its in-memory map, saves, loads and compaction,
//! and the [`Store`] methods that use them.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use uuid::Uuid;

use super::file::{self, FILE_HEADER_BYTES, FILE_NAME};
use super::{Snapshot, SnapshotIssue, SnapshotLoad, SnapshotOptions, SnapshotStats};
use crate::error::{Error, IoContext, Result};
use crate::io::{self, FileHandle, FileSystem, OpenMode};
use crate::log::tail::write_zeros;
use crate::options::Durability;
use crate::store::{Core, Store};

/// Most issues kept for [`Store::snapshot_issues`] (the oldest go first).
const ISSUES_KEPT: usize = 256;

/// Where one snapshot record is.
#[derive(Clone, Copy, Debug)]
struct Entry {
    version: u64,
    event_id: Uuid,
    schema_version: u32,
    offset: u64,
    len: u32,
}

/// The snapshot file, opened.
struct Open<F: FileSystem> {
    /// None for a read-only store without a snapshot file. Shared, so that
    /// a save writes and syncs it without holding the map's lock.
    file: Option<Arc<F::File>>,
    /// Where the next record goes (the file's valid length).
    end: u64,
    /// Per stream, its records sorted by version (one per version).
    streams: HashMap<String, Vec<Entry>>,
    /// Bytes of the kept records (the newest `keep` per stream).
    live_bytes: u64,
    /// The `keep_per_stream` that `live_bytes` counts with: kept here, with
    /// the count, so that an options change racing a save cannot subtract
    /// with one and add with another.
    keep: usize,
}

/// The store's snapshot side-file, opened on first use (a store that never
/// uses snapshots has no snapshot file).
///
/// Two locks: `writing`, held for a whole save or compaction (one writer
/// of the file at a time, and what close waits for), and `state`, the map,
/// held only briefly, so that loads of other streams never wait for a
/// save's write and sync or a compaction's rewrite. The file a save writes
/// to is the one in `state` when it started: only holders of `writing`
/// replace or drop it, and a load opens the file only when none is open.
pub(crate) struct Snapshots<F: FileSystem> {
    writing: Mutex<()>,
    state: Mutex<Option<Open<F>>>,
    options: Mutex<SnapshotOptions>,
    issues: Mutex<VecDeque<SnapshotIssue>>,
    compactions: Mutex<u64>,
}

impl<F: FileSystem> Snapshots<F> {
    /// Waits for a save or compaction in progress (a store's close does,
    /// having marked the store closed, which they check under the same
    /// lock), and for a load opening the file (which may create it, start
    /// it afresh or cut a torn tail; once the store is closed, an open
    /// writes nothing: see [`Snapshots::ensure_open`]).
    pub(crate) fn wait_for_save(&self) {
        drop(self.writing.lock());
        drop(self.state.lock());
    }
}

impl<F: FileSystem> Default for Snapshots<F> {
    fn default() -> Self {
        Snapshots {
            writing: Mutex::new(()),
            state: Mutex::new(None),
            options: Mutex::new(SnapshotOptions::default()),
            issues: Mutex::new(VecDeque::new()),
            compactions: Mutex::new(0),
        }
    }
}

fn kept_bytes(entries: &[Entry], keep: usize) -> u64 {
    entries.iter().rev().take(keep).map(|e| u64::from(e.len)).sum()
}

impl<F: FileSystem> Open<F> {
    /// A file without records.
    fn empty(file: Option<F::File>, keep: usize) -> Self {
        Open {
            file: file.map(Arc::new),
            end: FILE_HEADER_BYTES as u64,
            streams: HashMap::new(),
            live_bytes: 0,
            keep,
        }
    }

    /// The records of a file's `bytes` (whose header was checked), with
    /// damaged records and a torn tail reported; `true` when the file has
    /// a torn tail past `end`.
    fn scanned(file: F::File, bytes: &[u8], keep: usize, issues: &mut Vec<SnapshotIssue>) -> (Self, bool) {
        let scan = file::scan(bytes);
        for s in scan.skipped {
            issues.push(SnapshotIssue::Corrupt {
                offset: s.offset,
                reason: s.reason,
            });
        }
        let len = bytes.len() as u64;
        let torn = scan.end < len;
        if torn {
            issues.push(SnapshotIssue::TornTail {
                offset: scan.end,
                bytes: len - scan.end,
                reason: scan.cut_reason.unwrap_or_default(),
            });
        }
        let mut open = Open::empty(Some(file), keep);
        open.end = scan.end;
        for r in scan.records {
            let entry = Entry {
                version: r.version,
                event_id: r.event_id,
                schema_version: r.schema_version,
                offset: r.offset,
                len: r.len,
            };
            open.insert(&r.stream, entry);
        }
        (open, torn)
    }

    /// Adds (or replaces, for the same version) a record in the map.
    fn insert(&mut self, stream: &str, entry: Entry) {
        let keep = self.keep;
        let entries = self.streams.entry(stream.to_string()).or_default();
        self.live_bytes -= kept_bytes(entries, keep);
        match entries.binary_search_by_key(&entry.version, |e| e.version) {
            Ok(i) => entries[i] = entry,
            Err(i) => entries.insert(i, entry),
        }
        self.live_bytes += kept_bytes(entries, keep);
    }

    /// Counts `live_bytes` again, keeping `keep` per stream from now on.
    fn recount(&mut self, keep: usize) {
        self.keep = keep;
        self.live_bytes = self.streams.values().map(|e| kept_bytes(e, keep)).sum();
    }

    /// Reads and checks the record an entry points at.
    fn read(&self, stream: &str, entry: &Entry) -> std::result::Result<Snapshot, SnapshotIssue> {
        let file = self.file.as_deref().ok_or_else(|| SnapshotIssue::Io {
            reason: "no snapshot file".into(),
        })?;
        read_record::<F>(file, stream, entry)
    }
}

/// Reads and checks the record `entry` points at in `file`.
fn read_record<F: FileSystem>(
    file: &F::File,
    stream: &str,
    entry: &Entry,
) -> std::result::Result<Snapshot, SnapshotIssue> {
    let mut buf = vec![0u8; entry.len as usize];
    file.read_exact_at(&mut buf, entry.offset)
        .map_err(|e| SnapshotIssue::Io { reason: e.to_string() })?;
    let corrupt = |reason: String| SnapshotIssue::Corrupt {
        offset: entry.offset,
        reason,
    };
    let r = file::decode_record(&buf).map_err(|e| corrupt(e.to_string()))?;
    if r.stream != stream
        || r.version != entry.version
        || r.event_id != entry.event_id
        || r.schema_version != entry.schema_version
    {
        return Err(corrupt("record changed since the file was opened".into()));
    }
    let data = Bytes::copy_from_slice(r.data);
    Ok(Snapshot {
        stream: stream.to_string(),
        version: r.version,
        event_id: r.event_id,
        schema_version: r.schema_version,
        data,
    })
}

/// The highest snapshot version of each stream in the snapshot file of
/// store `store_id` in `dir`, read through `fs`: empty when there is no
/// file or it belongs to no such store. A save makes the log durable up to
/// its version first, so each proves its stream had that many durable
/// events; open, `verify` and `repair` hold a torn tail to them as they do
/// to checkpoints. (Damaged records are passed over: they prove nothing.)
/// A file that cannot be read is an error, not an empty one: an unread
/// witness may hold the proof.
pub(crate) fn durable_versions_in<F: FileSystem>(fs: &F, dir: &Path, store_id: Uuid) -> Result<Vec<(String, u64)>> {
    let Some(bytes) = io::read_witness(fs, &dir.join(FILE_NAME))? else {
        return Ok(Vec::new());
    };
    if file::decode_header(&bytes).ok() != Some(store_id) {
        return Ok(Vec::new());
    }
    let mut highest: HashMap<String, u64> = HashMap::new();
    for r in file::scan(&bytes).records {
        let v = highest.entry(r.stream).or_default();
        *v = (*v).max(r.version);
    }
    let mut versions: Vec<(String, u64)> = highest.into_iter().collect();
    versions.sort_unstable();
    Ok(versions)
}

/// At a writable open, and after snapshots are dropped: refuses appends
/// while the snapshot file holds a snapshot of a version past its stream's
/// last event. A snapshot is saved only once the log is durable up to its
/// version, so the log lost acknowledged events (cut back, a segment
/// deleted, an older copy of the log beside a newer snapshot file), and
/// new appends would take the versions those events had. As with a
/// checkpoint past the log ([`crate::checkpoint::guard_appends`]), appends
/// wait for `annal repair`, which removes such snapshots (loads already
/// pass over them, [`SnapshotIssue::AheadOfLog`]).
///
/// Cheap, so that an open does not pay for checking a large file that
/// only the first snapshot use needs: the file is walked by its records'
/// length fields ([`file::walk_records`]), reading only the first bytes of
/// large records, and only a record past its stream has its CRC checked. Nothing is written (a
/// store that never used snapshots has no file, and none is made). A file
/// that cannot be read, or is not this store's, is left to loads and
/// `repair` to report: like an unreadable checkpoints file, it leaves
/// appends alone (the log itself is sound, and an I/O error on a cache
/// should not stop writes), and the loss it might have shown goes
/// unnoticed until the file can be read.
pub(crate) fn guard_appends<F: FileSystem>(core: &Core<F>) {
    let ahead = snapshot_past_the_log(core);
    core.writer.lock().set_snapshot_ahead(ahead);
}

/// The snapshot (of the lowest stream name) past its stream's last event,
/// as the file and why appends are refused; see [`guard_appends`].
fn snapshot_past_the_log<F: FileSystem>(core: &Core<F>) -> Option<(PathBuf, String)> {
    let path = core.dir.join(FILE_NAME);
    let file = core.fs.open(&path, OpenMode::Read).ok()?;
    let len = file.len().ok()?;
    let mut header = [0u8; FILE_HEADER_BYTES];
    file.read_exact_at(&mut header, 0).ok()?;
    if file::decode_header(&header).ok()? != core.store_id {
        return None;
    }
    let mut ahead: Option<(String, u64, u64)> = None;
    let walked = file::walk_records(
        len,
        |at, buf| file.read_exact_at(buf, at),
        |at, stream, version, record_len| {
            // Looked up record by record: no lock is held over the file's
            // reads (after `drop_snapshots`, appends may wait for the
            // index's lock).
            let have = core.published.read().index.stream_version(stream);
            let lower_name = ahead.as_ref().is_none_or(|(first, _, _)| stream < first.as_str());
            if version > have && lower_name && whole_record(&file, at, record_len, stream, version) {
                ahead = Some((stream.to_string(), version, have));
            }
        },
    );
    walked.ok()?;
    let (stream, version, have) = ahead?;
    Some((
        path,
        format!(
            "snapshot of '{stream}' at version {version} is past the stream's last event (version {have}): the \
             log lost acknowledged events, and appends would take their versions; appends are refused until \
             `annal repair` removes it"
        ),
    ))
}

/// Whether the `len`-byte record at `at` of `file` passes every check and
/// is the snapshot of `stream` at `version` (a damaged one proves nothing).
fn whole_record<H: FileHandle>(file: &H, at: u64, len: usize, stream: &str, version: u64) -> bool {
    let mut record = vec![0u8; len];
    file.read_exact_at(&mut record, at).is_ok()
        && file::decode_record(&record).is_ok_and(|r| r.stream == stream && r.version == version)
}

impl<F: FileSystem> Snapshots<F> {
    /// The snapshot file's bytes, `None` when there is none; read while no
    /// save can write (saves hold the same lock).
    pub(crate) fn file_bytes(&self, fs: &F, dir: &Path) -> Result<Option<Vec<u8>>> {
        let _no_saves = self.writing.lock();
        // And no load opening the file meanwhile (which may cut a torn
        // tail or start the file afresh).
        let _no_opens = self.state.lock();
        let path = dir.join(FILE_NAME);
        io::read_if_exists(fs, &path).ctx(|| format!("reading {}", path.display()))
    }

    fn report(&self, issue: SnapshotIssue) {
        let mut issues = self.issues.lock();
        if issues.len() >= ISSUES_KEPT {
            issues.pop_front();
        }
        issues.push_back(issue);
    }

    /// Opens the file of `core`'s store if it is not yet, reporting what
    /// opening found, and adding it to `met` (a load reports it in its
    /// result too). Once the store is closed it opens the file as a
    /// read-only store does, writing nothing (close waits for an open in
    /// progress: it is made under `state`, which close takes after marking
    /// the store closed).
    fn ensure_open<'a>(
        &self,
        state: &'a mut Option<Open<F>>,
        core: &Core<F>,
        met: &mut Vec<SnapshotIssue>,
    ) -> Result<&'a mut Open<F>> {
        if state.is_none() {
            let mut found = Vec::new();
            let keep = self.options.lock().keep_per_stream;
            let open = open_file(
                &core.fs,
                &core.dir,
                core.store_id,
                keep,
                &mut found,
                core.options.read_only || core.check_not_closed().is_err(),
            )?;
            for issue in found {
                self.report(issue.clone());
                met.push(issue);
            }
            *state = Some(open);
        }
        state
            .as_mut()
            .ok_or_else(|| Error::InvalidInput("snapshot file not open".into()))
    }
}

/// Creates a fresh, empty snapshot file (atomically).
fn create_file<F: FileSystem>(fs: &F, dir: &Path, store_id: Uuid) -> Result<F::File> {
    let path = dir.join(FILE_NAME);
    io::write_atomic(fs, dir, FILE_NAME, &file::encode_header(store_id))
        .ctx(|| format!("creating {}", path.display()))?;
    fs.open(&path, OpenMode::ReadWrite)
        .ctx(|| format!("opening {}", path.display()))
}

/// Opens the snapshot file, creating it or starting it afresh when needed,
/// cuts a torn tail, and builds the map. Read-only, it reports what it
/// would repair and writes nothing: a missing or unusable file reads as
/// empty, a torn tail stays in place.
fn open_file<F: FileSystem>(
    fs: &F,
    dir: &Path,
    store_id: Uuid,
    keep: usize,
    issues: &mut Vec<SnapshotIssue>,
    read_only: bool,
) -> Result<Open<F>> {
    let path: PathBuf = dir.join(FILE_NAME);
    let fresh = |issues: &mut Vec<SnapshotIssue>, reason: Option<String>| -> Result<Open<F>> {
        if read_only {
            if let Some(reason) = reason {
                issues.push(SnapshotIssue::Corrupt {
                    offset: 0,
                    reason: format!("unusable snapshot file, read as empty: {reason}"),
                });
            }
            return Ok(Open::empty(None, keep));
        }
        if let Some(reason) = reason {
            issues.push(SnapshotIssue::FileReplaced { reason });
        }
        Ok(Open::empty(Some(create_file(fs, dir, store_id)?), keep))
    };
    let mode = if read_only { OpenMode::Read } else { OpenMode::ReadWrite };
    // Asked by opening it, not by `exists`: a file that cannot be looked
    // at is an error, never one to make afresh over the old one.
    let file = match fs.open(&path, mode) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return fresh(issues, None),
        opened => opened.ctx(|| format!("opening {}", path.display()))?,
    };
    if !read_only {
        // Its name may not be durable: a save that replaced the file (made
        // it, or compacted it) may have failed at its directory sync. A
        // record saved into it is acknowledged only once the name is.
        fs.sync_dir(dir).ctx(|| format!("syncing {}", dir.display()))?;
    }
    let bytes = io::read_whole(&file).ctx(|| format!("reading {}", path.display()))?;
    if let Err(reason) = check_header(&bytes, store_id) {
        drop(file);
        return fresh(issues, Some(reason));
    }
    let (open, torn) = Open::scanned(file, &bytes, keep, issues);
    if torn && !read_only {
        file_of(&open)
            .and_then(|file: &Arc<F::File>| file.set_len(open.end).and_then(|()| file.sync_all()))
            .ctx(|| format!("cutting {}", path.display()))?;
    }
    Ok(open)
}

/// Why a snapshot file's header cannot be used by store `store_id`.
fn check_header(bytes: &[u8], store_id: Uuid) -> std::result::Result<(), String> {
    match file::decode_header(bytes) {
        Ok(id) if id == store_id => Ok(()),
        Ok(id) => Err(format!("written for store {id}, this store is {store_id}")),
        Err(file::HeaderError::Short) => Err("file shorter than its header".to_string()),
        Err(file::HeaderError::Invalid(why)) => Err(why),
        Err(file::HeaderError::Version(v)) => Err(format!("unknown format version {v}")),
    }
}

/// The open file, which a writable store always has.
fn file_of<F: FileSystem>(open: &Open<F>) -> std::io::Result<&Arc<F::File>> {
    open.file
        .as_ref()
        .ok_or_else(|| std::io::Error::other("snapshot file not open"))
}

/// Writes a new file with only the kept records of `streams` (records of
/// `old_file`); returns it opened. Damaged records are left behind (and
/// reported in `issues`); a record that cannot be read fails the whole
/// compaction instead.
fn compact<F: FileSystem>(
    fs: &F,
    dir: &Path,
    store_id: Uuid,
    (streams, old_file): (&HashMap<String, Vec<Entry>>, &F::File),
    keep: usize,
    issues: &mut Vec<SnapshotIssue>,
) -> Result<Open<F>> {
    // Kept records, in their order in the old file.
    let mut kept: Vec<(&str, Entry)> = streams
        .iter()
        .flat_map(|(s, entries)| entries.iter().rev().take(keep).map(move |e| (s.as_str(), *e)))
        .collect();
    kept.sort_unstable_by_key(|(_, e)| e.offset);
    let mut bytes = file::encode_header(store_id).to_vec();
    let mut placed = Vec::with_capacity(kept.len());
    for (stream, entry) in kept {
        match read_record::<F>(old_file, stream, &entry) {
            Ok(s) => {
                let record = file::encode_record(stream, s.version, s.event_id, s.schema_version, &s.data)
                    .map_err(|why| Error::InvalidInput(format!("re-encoding a snapshot: {why}")))?;
                let at = bytes.len() as u64;
                placed.push((
                    stream.to_string(),
                    Entry {
                        offset: at,
                        len: record.len() as u32,
                        ..entry
                    },
                ));
                bytes.extend_from_slice(&record);
            }
            // A record that could not be read may be sound: the
            // compaction stops, and the old file stays as it is.
            Err(SnapshotIssue::Io { reason }) => {
                return Err(Error::io(
                    format!(
                        "compacting {}: reading the snapshot of '{stream}' at version {}",
                        dir.join(FILE_NAME).display(),
                        entry.version
                    ),
                    std::io::Error::other(reason),
                ));
            }
            // A damaged one is of no use to any load: left behind.
            Err(issue) => issues.push(issue),
        }
    }
    let path = dir.join(FILE_NAME);
    io::write_atomic(fs, dir, FILE_NAME, &bytes).ctx(|| format!("compacting {}", path.display()))?;
    let file = fs
        .open(&path, OpenMode::ReadWrite)
        .ctx(|| format!("opening {}", path.display()))?;
    let mut open = Open::empty(Some(file), keep);
    open.end = bytes.len() as u64;
    for (stream, entry) in placed {
        open.insert(&stream, entry);
    }
    Ok(open)
}

impl<F: FileSystem> Store<F> {
    /// Saves a snapshot of `stream` as of `version`: durable (fsync) and
    /// atomic (a crash leaves it whole or absent) when this returns `Ok`.
    ///
    /// `schema_version` is the application's version of the `data` layout;
    /// loaders compare it with the one they expect. Fails with
    /// [`Error::InvalidInput`] when the stream does not have `version` (a
    /// snapshot is never ahead of the log) or the snapshot is too large.
    /// In the non-durable [`Durability`] modes, the log is synced first, so
    /// that no crash can leave a snapshot of events that are gone. Fails
    /// with [`Error::ReadOnly`] on a read-only store, and with
    /// [`Error::Closed`] once the store was closed (through any clone).
    pub fn save_snapshot(&self, stream: &str, version: u64, schema_version: u32, data: &[u8]) -> Result<()> {
        self.core().check_writable()?;
        self.core().check_not_closed()?;
        crate::writer::validate_stream_name(stream)?;
        file::record_len(stream, data.len()).map_err(Error::InvalidInput)?;
        let have = self.stream_version(stream).unwrap_or(0);
        if version == 0 || version > have {
            return Err(Error::InvalidInput(format!(
                "cannot save a snapshot of '{stream}' at version {version}: the stream has {have} events"
            )));
        }
        let core = self.core();
        if core.options.durability != Durability::Sync {
            core.sync_tail()?;
        }
        let event_id = self.event_id_at(stream, version)?;
        let record =
            file::encode_record(stream, version, event_id, schema_version, data).map_err(Error::InvalidInput)?;
        let snapshots = &core.snapshots;
        let options = *snapshots.options.lock();
        let _writing = snapshots.writing.lock();
        // Again under the lock that close takes: no save writes once the
        // store's close has returned.
        core.check_not_closed()?;
        let path = core.dir.join(FILE_NAME);
        let (file, offset) = {
            let mut guard = snapshots.state.lock();
            let open = snapshots.ensure_open(&mut guard, core, &mut Vec::new())?;
            let file = file_of(open).ctx(|| format!("saving a snapshot to {}", path.display()))?;
            (Arc::clone(file), open.end)
        };
        // Written and synced without the map's lock: loads go on meanwhile
        // (they see the record only once it is durable and inserted).
        let written = file
            .write_all_at(&record, offset)
            .and_then(|()| file.sync_all())
            .ctx(|| format!("saving a snapshot to {}", path.display()));
        let mut guard = snapshots.state.lock();
        if let Err(e) = written {
            // The page cache may hold the record whole while the disk does
            // not: Linux marks the pages of a failed write-back clean, so a
            // later sync would not write them, and the next open of the
            // file (which scans it from here) would append after them,
            // behind bytes a power loss takes. Zeros over it (best effort:
            // the save fails either way) end the file here for that scan,
            // and the next save's sync writes them. Reopened (and cut)
            // next time.
            let _ = write_zeros(&*file, offset, offset + record.len() as u64);
            *guard = None;
            return Err(e);
        }
        // The same file as above: only holders of `writing` replace it.
        let open = guard
            .as_mut()
            .ok_or_else(|| Error::InvalidInput("snapshot file not open".into()))?;
        let entry = Entry {
            version,
            event_id,
            schema_version,
            offset,
            len: record.len() as u32,
        };
        open.end = offset + record.len() as u64;
        open.insert(stream, entry);
        let dead = open.end - FILE_HEADER_BYTES as u64 - open.live_bytes;
        if open.end > options.compact_min_bytes && dead > open.live_bytes {
            drop(guard);
            self.compact_writing(options)?;
        }
        Ok(())
    }

    /// The id of `stream`'s event at `version`, which a snapshot there is
    /// bound to.
    fn event_id_at(&self, stream: &str, version: u64) -> Result<Uuid> {
        let core = self.core();
        let position = {
            let published = core.published.read();
            let i = usize::try_from(version.wrapping_sub(1)).unwrap_or(usize::MAX);
            published.index.stream(stream).and_then(|e| e.get(i))
        };
        let position = position
            .ok_or_else(|| Error::InvalidInput(format!("stream '{stream}' has no event at version {version}")))?;
        Ok(core.read_position(position)?.id())
    }

    /// The newest usable snapshot of `stream` (see [`Store::load_snapshot_at`]).
    pub fn load_snapshot(&self, stream: &str) -> SnapshotLoad {
        self.load_snapshot_at(stream, u64::MAX)
    }

    /// The newest usable snapshot of `stream` at or before version
    /// `max_version`, with the problems met on the way. Snapshots beyond the
    /// stream's current version, damaged ones and unreadable ones are
    /// passed over (and reported); this never fails. A load of a past
    /// version (`max_version` below the stream's) reports nothing about
    /// snapshots beyond it.
    pub fn load_snapshot_at(&self, stream: &str, max_version: u64) -> SnapshotLoad {
        let mut result = SnapshotLoad::default();
        let core = self.core();
        let snapshots = &core.snapshots;
        let mut guard = snapshots.state.lock();
        // Read under the lock saves take: every snapshot saved so far was
        // of a version the stream had then, so only a log cut shorter
        // since (by `repair`) leaves one ahead of it. (Read before the
        // lock, a save of a newer version in between looked ahead.)
        let have = self.stream_version(stream).unwrap_or(0);
        // Problems found in the file by the open this load makes, if any:
        // reported in its result (first) as well.
        let mut met = Vec::new();
        let opened = snapshots.ensure_open(&mut guard, core, &mut met);
        let open = match opened {
            Ok(open) => open,
            Err(e) => {
                drop(guard);
                let issue = SnapshotIssue::Io { reason: e.to_string() };
                snapshots.report(issue.clone());
                result.issues.push(issue);
                return result;
            }
        };
        let entries = open.streams.get(stream).cloned().unwrap_or_default();
        for entry in entries.iter().rev() {
            // Beyond a load of a past version: not this load's to pass over
            // (nor to report again each time a repository looks further
            // back).
            if entry.version > max_version && max_version < have {
                continue;
            }
            if entry.version > have {
                result.issues.push(SnapshotIssue::AheadOfLog {
                    stream: stream.to_string(),
                    snapshot_version: entry.version,
                    stream_version: have,
                });
                continue;
            }
            if entry.version > max_version {
                continue;
            }
            if self.event_id_at(stream, entry.version).ok() != Some(entry.event_id) {
                result.issues.push(SnapshotIssue::OtherEvent {
                    stream: stream.to_string(),
                    snapshot_version: entry.version,
                });
                continue;
            }
            match open.read(stream, entry) {
                Ok(s) => {
                    result.snapshot = Some(s);
                    break;
                }
                Err(issue) => result.issues.push(issue),
            }
        }
        drop(guard);
        for issue in &result.issues {
            snapshots.report(issue.clone());
        }
        result.issues.splice(0..0, met);
        result
    }

    /// Problems with snapshots met since the store was opened (the last
    /// 256), oldest first: damaged or torn records found when the snapshot
    /// file was opened, and snapshots passed over by loads.
    pub fn snapshot_issues(&self) -> Vec<SnapshotIssue> {
        self.core().snapshots.issues.lock().iter().cloned().collect()
    }

    /// Records a snapshot problem found above the store (the typed layer
    /// reports schema mismatches and undecodable snapshots this way).
    pub fn report_snapshot_issue(&self, issue: SnapshotIssue) {
        self.core().snapshots.report(issue);
    }

    /// Sets how many snapshots to keep per stream and when to compact.
    pub fn set_snapshot_options(&self, options: SnapshotOptions) {
        let options = SnapshotOptions {
            keep_per_stream: options.keep_per_stream.max(1),
            ..options
        };
        let snapshots = &self.core().snapshots;
        *snapshots.options.lock() = options;
        if let Some(open) = snapshots.state.lock().as_mut() {
            open.recount(options.keep_per_stream);
        }
    }

    /// The snapshot options in force.
    pub fn snapshot_options(&self) -> SnapshotOptions {
        *self.core().snapshots.options.lock()
    }

    /// Rewrites the snapshot file with only the kept snapshots (the newest
    /// [`SnapshotOptions::keep_per_stream`] per stream), crash-safely.
    /// Saves do this by themselves when superseded snapshots dominate.
    /// Fails with [`Error::ReadOnly`] on a read-only store, and with
    /// [`Error::Closed`] once the store was closed.
    pub fn compact_snapshots(&self) -> Result<()> {
        let core = self.core();
        core.check_writable()?;
        let snapshots = &core.snapshots;
        let options = *snapshots.options.lock();
        let _writing = snapshots.writing.lock();
        core.check_not_closed()?;
        {
            let mut guard = snapshots.state.lock();
            snapshots.ensure_open(&mut guard, core, &mut Vec::new())?;
        }
        self.compact_writing(options)
    }

    /// Figures about the snapshot file (opening it if needed).
    pub fn snapshot_stats(&self) -> Result<SnapshotStats> {
        let core = self.core();
        let snapshots = &core.snapshots;
        let compactions = *snapshots.compactions.lock();
        let mut guard = snapshots.state.lock();
        let open = snapshots.ensure_open(&mut guard, core, &mut Vec::new())?;
        Ok(SnapshotStats {
            streams: open.streams.len() as u64,
            records: open.streams.values().map(|e| e.len() as u64).sum(),
            file_bytes: open.end,
            live_bytes: open.live_bytes,
            compactions,
        })
    }

    /// Snapshots the log no longer holds the events of, as (stream,
    /// version): a version past the stream's last one, or an event id other
    /// than that of the log's event at that version. Only a log that lost
    /// events (to `repair`, an older annal, a deleted segment) has them.
    /// Loads never use them, but they are dead weight in the file.
    pub(crate) fn dead_snapshots(&self) -> Result<Vec<(String, u64)>> {
        let core = self.core();
        let snapshots = &core.snapshots;
        let held: Vec<(String, Vec<(u64, Uuid)>)> = {
            let mut guard = snapshots.state.lock();
            let open = snapshots.ensure_open(&mut guard, core, &mut Vec::new())?;
            open.streams
                .iter()
                .map(|(stream, entries)| {
                    let held = entries.iter().map(|e| (e.version, e.event_id)).collect();
                    (stream.clone(), held)
                })
                .collect()
        };
        let mut past = Vec::new();
        for (stream, versions) in held {
            let of_this_log = |&(version, id): &(u64, Uuid)| self.event_id_at(&stream, version).ok() == Some(id);
            past.extend(
                versions
                    .into_iter()
                    .filter(|held| !of_this_log(held))
                    .map(|(v, _)| (stream.clone(), v)),
            );
        }
        past.sort_unstable();
        Ok(past)
    }

    /// Rewrites the snapshot file without the given (stream, version)
    /// snapshots, crash-safely (as a compaction).
    pub(crate) fn drop_snapshots(&self, drop: &[(String, u64)]) -> Result<()> {
        let core = self.core();
        core.check_writable()?;
        let snapshots = &core.snapshots;
        let options = *snapshots.options.lock();
        let _writing = snapshots.writing.lock();
        {
            let mut guard = snapshots.state.lock();
            let open = snapshots.ensure_open(&mut guard, core, &mut Vec::new())?;
            for (stream, version) in drop {
                if let Some(entries) = open.streams.get_mut(stream) {
                    entries.retain(|e| e.version != *version);
                    if entries.is_empty() {
                        open.streams.remove(stream);
                    }
                }
            }
            open.recount(open.keep);
        }
        self.compact_writing(options)?;
        guard_appends(core);
        Ok(())
    }

    /// Rewrites the file to its kept records; called holding `writing`.
    /// The map's lock is held only to copy the map and to swap in the new
    /// file: loads read the old file meanwhile (it stays valid, open, after
    /// the new one is renamed over its name).
    fn compact_writing(&self, options: SnapshotOptions) -> Result<()> {
        let core = self.core();
        let (streams, old_file) = {
            let guard = core.snapshots.state.lock();
            let Some(old) = guard.as_ref() else {
                return Ok(());
            };
            let file = file_of(old).ctx(|| format!("compacting {}", core.dir.join(FILE_NAME).display()))?;
            (old.streams.clone(), Arc::clone(file))
        };
        let mut issues = Vec::new();
        let result = compact(
            &core.fs,
            &core.dir,
            core.store_id,
            (&streams, &old_file),
            options.keep_per_stream,
            &mut issues,
        );
        for issue in issues {
            core.snapshots.report(issue);
        }
        let mut guard = core.snapshots.state.lock();
        match result {
            Ok(mut open) => {
                // Options changed during the rewrite were counted into the
                // old map: count the new one with those in force.
                let keep = core.snapshots.options.lock().keep_per_stream;
                if keep != open.keep {
                    open.recount(keep);
                }
                *guard = Some(open);
                *core.snapshots.compactions.lock() += 1;
                Ok(())
            }
            Err(e) => {
                // Old or new file: reopen from the directory next time.
                *guard = None;
                Err(e)
            }
        }
    }
}
