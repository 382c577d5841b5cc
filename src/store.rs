//! The store handle: open, append, read, close.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};
use uuid::Uuid;

use crate::dir_lock::{Locks, dir_error, lock, lock_shared};
use crate::error::{Error, IoContext, Result};
use crate::event::{AppendResult, EventData, ExpectedVersion, RecordedEvent, StreamAppend};
use crate::idempotency::{IdWindow, Written};
use crate::index::Index;
use crate::index::file::{self as index_file, Checkpoint};
use crate::io::{self, FileHandle, FileSystem, StdFs};
use crate::log::frame;
use crate::log::segment::SEGMENT_HEADER_BYTES;
use crate::log::spare::{self, Spare};
use crate::log::tail::LogTail;
use crate::log::view::Segments;
use crate::one_or_many::OneOrMany;
use crate::options::{Durability, Options};
use crate::read::{Events, ReadAll, ReadStream};
use crate::recovery::{self, LogEnd, RecoveryReport};
use crate::writer::{AppendRef, WriterState};

/// What readers see: the index of published events and where the
/// published log ends.
pub(crate) struct Published {
    pub index: Index,
    pub end: LogEnd,
}

/// Shared state of an open store. Lock order (docs/DESIGN.md, "Lock
/// order"): `sync_lock`, then `writer`, `published` and `tail`;
/// `index_save`, then `tail` and `sync_lock`; `writer`, then
/// `published`, `segments` or `tail`; `tail`, then `published`.
pub(crate) struct Core<F: FileSystem> {
    pub dir: PathBuf,
    pub fs: F,
    pub options: Options,
    pub store_id: Uuid,
    pub published: RwLock<Published>,
    pub segments: RwLock<Segments>,
    pub writer: Mutex<WriterState>,
    pub written: Condvar,
    pub arrivals: Condvar,
    /// Sequence number of the last append published (mirrors the writer
    /// state, readable without its lock).
    pub committed_seq: AtomicU64,
    /// Incremented each time a group commit ends, successfully or not.
    pub commit_generation: AtomicU64,
    pub tail: Mutex<LogTail<F>>,
    /// Held through each [`Core::sync_tail`] (which, in the periodic and
    /// buffered modes, syncs without holding `tail`), until a failure has
    /// poisoned the store: the next sync sees the poison, never a
    /// successful retry of a failed sync.
    sync_lock: Mutex<()>,
    /// The next segment file, made ahead by a background thread.
    pub spare_segment: Spare<F::File>,
    pub report: RecoveryReport,
    /// Wakes the background thread that saves the index file (not to be
    /// confused with named checkpoints, `checkpoint_cache`).
    index_save_requests: Mutex<Option<Sender<()>>>,
    /// Held while an index file is being saved (the background thread and
    /// explicit saves share one temp file name); holds the log end the
    /// index file on disk covers, when known, so that a save with nothing
    /// new to cover (a close right after open, say) writes nothing.
    index_save: Mutex<Option<LogEnd>>,
    /// Size of the index file last saved: the log written between saves
    /// is at least this much (see [`Options::with_index_checkpoint_bytes`]).
    pub index_file_bytes: AtomicU64,
    /// The last position a successful [`Core::sync_tail`] made durable
    /// (it was published when the sync began), so that a save that names
    /// an earlier position needs no sync of its own.
    synced_position: AtomicU64,
    /// Where the log ended (segment, offset) when the last successful
    /// [`Core::sync_tail`] began, or at open (which synced the recovered
    /// log): in the periodic and buffered modes, what lies past it in the
    /// active segment is not durable yet (see [`Core::write_back_unsynced`]).
    synced_end: Mutex<(u64, u64)>,
    background_error: Mutex<Option<String>>,
    /// Subscribers to wake after each publish.
    pub subscriptions: Arc<crate::subscription::hub::Hub>,
    /// Named checkpoints, as last read or saved.
    pub checkpoint_cache: crate::checkpoint::CheckpointCache,
    /// The snapshot side-file (opened on first use).
    pub snapshots: crate::snapshot::Snapshots<F>,
    /// The directory lock (none for a read-only open of a directory
    /// without a lock file).
    _locks: Locks<F>,
}

/// An open event store. Cheap to clone and share between threads
/// (`Send + Sync`); all clones are one store. The store closes when the
/// last clone is dropped, or explicitly with [`Store::close`].
pub struct Store<F: FileSystem = StdFs> {
    handle: Arc<Handle<F>>,
}

impl<F: FileSystem> Clone for Store<F> {
    fn clone(&self) -> Self {
        Store {
            handle: self.handle.clone(),
        }
    }
}

/// The handle's owner of background threads; closing happens when it drops.
struct Handle<F: FileSystem> {
    core: Arc<Core<F>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Dropped to stop the periodic mode's sync thread (also when the
    /// handle is dropped, however shutdown went).
    stop_flusher: Mutex<Option<Sender<()>>>,
    closed: OnceLock<Result<()>>,
}

/// Figures about an open store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Number of events.
    pub events: u64,
    /// Number of streams.
    pub streams: u64,
    /// Number of segment files.
    pub segments: u64,
    /// Bytes of all segment files (preallocated space included).
    pub disk_bytes: u64,
    /// Last global position (0 when empty).
    pub last_position: u64,
    /// Approximate memory of the stream index: heap, plus the tables read
    /// in place from the index file (see `index_mapped_bytes`).
    pub index_memory_bytes: u64,
    /// Of `index_memory_bytes`, the bytes read in place from the index
    /// file's read-only memory map (8 per event in each of two tables, for
    /// the events the file held at open): page cache, which the system can
    /// reclaim and read again, not heap. 0 when open rebuilt the index,
    /// and on platforms that copy the file instead (Windows).
    pub index_mapped_bytes: u64,
    /// Appends written since open.
    pub appends_written: u64,
    /// Group commits since open: rounds of write (+ sync in durable mode)
    /// that carried those appends. Appends per group shows group commit
    /// at work.
    pub group_commits: u64,
    /// Bytes of the next segment file, made ahead of need and waiting for
    /// the active segment to fill (0 when none is ready; while one is being
    /// made, its file exists already: in durable mode it grows toward the
    /// segment size, in the other modes it has it from the start where
    /// the file system can reserve space).
    /// Not counted in `disk_bytes`; removed at close. See docs/DESIGN.md,
    /// "Segments made ahead".
    pub spare_segment_bytes: u64,
}

impl Store<StdFs> {
    /// Opens the store in directory `path`, creating it when absent (unless
    /// [`Options::with_create_if_missing`] says otherwise).
    ///
    /// Fails with [`Error::Locked`] when another handle has it open (after
    /// trying again for a quarter of a second: a child process forked while
    /// a store was open holds its lock until it starts its own program), and
    /// with [`Error::Corruption`] when the log is damaged somewhere a crash
    /// cannot explain, or missing: a directory that holds no segment file
    /// but the store's index, checkpoints or snapshots file is refused,
    /// never taken for an empty one in which to create a store (see
    /// [`crate::tools::log_missing`]). Nor is a store created over another
    /// program's files: a directory without one that holds a file or
    /// folder named `index`, `checkpoints` or `snapshots`, or those names
    /// with `.tmp` added holding another program's bytes, or a `LOCK` file
    /// that is not annal's, is refused with [`Error::InvalidInput`], and
    /// nothing in it is changed.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Store<StdFs>> {
        Store::open_with(StdFs, path, options)
    }
}

impl<F: FileSystem> Store<F> {
    /// Opens a store through the given file system (tests use this to
    /// inject faults; applications use [`Store::open`]).
    pub fn open_with(fs: F, path: impl AsRef<Path>, options: Options) -> Result<Store<F>> {
        options.validate()?;
        let dir = path.as_ref().to_path_buf();
        if dir.as_os_str().is_empty() {
            return Err(Error::InvalidInput("the store's directory path is empty".to_string()));
        }
        let create = options.create_if_missing && !options.read_only;
        if !fs.exists(&dir) {
            if !create {
                return Err(Error::InvalidInput(format!("no annal store in {}", dir.display())));
            }
            // The levels made here, deepest first: each one's name in its
            // parent is synced below, or a power loss could take the new
            // store, acknowledged appends and all, with it.
            let made: Vec<PathBuf> = dir
                .ancestors()
                .take_while(|p| !p.as_os_str().is_empty() && !fs.exists(p))
                .map(Path::to_path_buf)
                .collect();
            fs.create_dir_all(&dir).map_err(|e| {
                // `exists` follows links: a link to a missing path fails
                // the creation with "file exists", which says nothing.
                let dangling = e.kind() == std::io::ErrorKind::AlreadyExists
                    && std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink());
                if dangling {
                    let to = std::fs::read_link(&dir).map_or_else(|_| "?".into(), |t| t.display().to_string());
                    Error::InvalidInput(format!(
                        "{} is a symbolic link to {to}, which does not exist: create the directory it names, or \
                         give the path of one",
                        dir.display()
                    ))
                } else {
                    Error::io(format!("creating {}", dir.display()), e)
                }
            })?;
            for level in &made {
                let parent = match level.parent() {
                    Some(p) if p.as_os_str().is_empty() => Path::new("."),
                    Some(p) => p,
                    None => continue,
                };
                match fs.sync_dir(parent) {
                    // A parent this process may not read (`-wx`) cannot be
                    // opened to sync: left to the file system's journal, as
                    // SQLite does, rather than refusing the store.
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                    synced => synced.map_err(|e| Error::io(format!("syncing {}", parent.display()), e))?,
                }
            }
        }
        // Refuse before taking the lock, which would create a LOCK file in
        // a directory that holds no store, or write over another program's.
        let names = fs.list_dir(&dir).map_err(|e| dir_error(&dir, "listing", e))?;
        if !names.iter().any(|n| crate::log::segment::parse_file_name(n).is_some()) {
            if let Some(missing) = recovery::missing_log(&fs, &dir, &names) {
                return Err(missing);
            }
            if !create {
                return Err(Error::InvalidInput(format!("no annal store in {}", dir.display())));
            }
            if let Some(foreign) = recovery::foreign_files(&fs, &dir, &names) {
                return Err(foreign);
            }
        }
        let locks = if options.read_only {
            lock_shared(&fs, &dir)?
        } else {
            lock(&fs, &dir)?
        };
        let recovered = recovery::recover(&fs, &dir, &options)?;
        let saved_end = recovered.index_file_end;
        let window = IdWindow::new(options.idempotency_window_events);
        let writer = WriterState::new(
            recovered.end,
            recovered.tail.segment_id,
            recovered.index.last_position(),
            window,
        );
        let core = Arc::new(Core {
            spare_segment: Spare::new(&dir, options.segment_size_bytes, options.durability == Durability::Sync),
            dir,
            fs,
            store_id: recovered.store_id,
            published: RwLock::new(Published {
                index: recovered.index,
                end: recovered.end,
            }),
            segments: RwLock::new(recovered.segments),
            writer: Mutex::new(writer),
            written: Condvar::new(),
            arrivals: Condvar::new(),
            committed_seq: AtomicU64::new(0),
            commit_generation: AtomicU64::new(0),
            tail: Mutex::new(recovered.tail),
            sync_lock: Mutex::new(()),
            report: recovered.report,
            index_save_requests: Mutex::new(None),
            index_save: Mutex::new(saved_end),
            index_file_bytes: AtomicU64::new(recovered.index_file_bytes),
            synced_position: AtomicU64::new(0),
            synced_end: Mutex::new((recovered.end.segment, recovered.end.offset)),
            background_error: Mutex::new(None),
            subscriptions: Arc::default(),
            checkpoint_cache: Default::default(),
            snapshots: Default::default(),
            _locks: locks,
            options,
        });
        let handle = Handle {
            core: core.clone(),
            threads: Mutex::new(Vec::new()),
            stop_flusher: Mutex::new(None),
            closed: OnceLock::new(),
        };
        // Read-only too: filling the window checks the batches of the
        // last events, and both kinds of open must refuse the same damage.
        core.fill_window()?;
        if core.options.read_only {
            // Nothing will be appended: no index file to save, no log to
            // sync.
            return Ok(Store {
                handle: Arc::new(handle),
            });
        }
        crate::checkpoint::guard_appends(&core);
        crate::snapshot::guard_appends(&core);
        handle.start_threads()?;
        if !core.report.index_loaded && core.published.read().index.last_position() > 0 {
            core.request_checkpoint();
        }
        Ok(Store {
            handle: Arc::new(handle),
        })
    }

    pub(crate) fn core(&self) -> &Core<F> {
        &self.handle.core
    }

    pub(crate) fn core_arc(&self) -> &Arc<Core<F>> {
        &self.handle.core
    }

    /// Appends events to one stream, atomically, if the stream matches
    /// `expected`. Returns the versions and positions written (or, for an
    /// exact retry of an earlier append with the same event ids, those of
    /// the original append, without writing again).
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: impl IntoIterator<Item = EventData>,
    ) -> Result<AppendResult> {
        let events: OneOrMany<EventData> = events.into_iter().collect();
        let append = AppendRef {
            stream,
            expected,
            events: events.as_slice(),
        };
        let results = self.core().append(std::slice::from_ref(&append))?;
        results.into_last().ok_or(Error::Closed)
    }

    /// Appends to several streams in one atomic batch: either every
    /// stream's condition holds and all events are written, or nothing is.
    /// Results come in the order of `appends`. Each stream may appear once
    /// (put all of a stream's events in one [`StreamAppend`]); a stream
    /// named twice is [`Error::InvalidInput`].
    pub fn append_multi(&self, appends: &[StreamAppend]) -> Result<Vec<AppendResult>> {
        let appends: OneOrMany<AppendRef<'_>> = appends.iter().map(StreamAppend::borrowed).collect();
        Ok(self.core().append(appends.as_slice())?.into_vec())
    }

    /// Reads a stream (see [`ReadStream`] for direction, start and limit).
    /// Returns an error when the stream name is invalid; an absent stream
    /// reads as empty.
    pub fn read_stream(&self, stream: &str, options: ReadStream) -> Result<Events<F>> {
        crate::writer::validate_stream_name(stream)?;
        Ok(Events::stream(self.handle.core.clone(), stream, options))
    }

    /// Reads all events in global order (see [`ReadAll`] for direction,
    /// start, limit and filters).
    pub fn read_all(&self, options: ReadAll) -> Result<Events<F>> {
        options.validate()?;
        Ok(Events::all(self.handle.core.clone(), options))
    }

    /// Reads the events of every stream of a category (streams named
    /// `{category}` or `{category}-...`: see [`crate::category_of`]) in
    /// global order, after position `after` (0 for all), up to `limit`
    /// events. (A stream whose name starts with `-`
    /// has the empty category, which no category read can name.)
    ///
    /// It reads the category's records only, found through the index:
    /// damage in another category's records never stops it. The price is
    /// paid per stream of the category: each call with a limit of at most
    /// 4,096 looks each stream up once (one binary search), and one
    /// without, or with a larger limit, twice per window of the log it
    /// lists. To page a few events at a time through a category of very
    /// many streams that makes up much of the log, a filtered
    /// [`Store::read_all`] (`ReadAll::forward().from_position(after)
    /// .category(category).limit(n)`) is cheaper: it scans the log from
    /// `after` first, checking every record on its way (so damage in any
    /// record there stops it, as it stops every global read).
    pub fn read_category(&self, category: &str, after: u64, limit: Option<usize>) -> Result<Events<F>> {
        crate::writer::validate_category(category)?;
        Ok(Events::category(self.handle.core.clone(), category, after, limit))
    }

    /// The event at a global position, if it exists.
    pub fn read_position(&self, position: u64) -> Result<Option<RecordedEvent>> {
        if position == 0 || position > self.last_position() {
            return Ok(None);
        }
        self.core().read_position(position).map(Some)
    }

    /// A stream's last version, `None` when it has no events.
    pub fn stream_version(&self, stream: &str) -> Option<u64> {
        let v = self.core().published.read().index.stream_version(stream);
        (v > 0).then_some(v)
    }

    /// The last global position (0 when the store is empty).
    pub fn last_position(&self) -> u64 {
        self.core().published.read().index.last_position()
    }

    /// Names of all streams, sorted. Walked in slices, so that appends go
    /// on meanwhile: a stream created during the call may be listed.
    pub fn stream_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.core().streams_sliced(|name, _| name.to_string());
        names.sort_unstable();
        names
    }

    /// The `n` streams with the most events, largest first. Walked in
    /// slices, so that appends go on meanwhile: with appends during the
    /// call, each stream's count is read at its own moment.
    pub fn largest_streams(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(Arc<str>, u64)> = self.core().streams_sliced(|name, version| (name.clone(), version));
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.into_iter().take(n).map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// The store's unique id (written in every segment and the index file).
    pub fn store_id(&self) -> Uuid {
        self.core().store_id
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.core().dir
    }

    /// What open found and did: index loaded or rebuilt, events replayed,
    /// torn tail cut.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.core().report
    }

    /// Figures about the store.
    pub fn stats(&self) -> Stats {
        let core = self.core();
        let (events, streams, mut memory, mut mapped) = {
            let p = core.published.read();
            (
                p.index.last_position(),
                p.index.stream_count() as u64,
                p.index.shared_memory_bytes(),
                p.index.shared_mapped_bytes(),
            )
        };
        core.index_slices(|index, streams| {
            let (m, mm) = index.streams_memory_bytes(streams);
            memory += m;
            mapped += mm;
        });
        let (index_memory_bytes, index_mapped_bytes) = (memory as u64, mapped as u64);
        let (appends_written, group_commits) = {
            let w = core.writer.lock();
            (w.appends_written, w.group_commits)
        };
        let segments = core.segments.read();
        let disk_bytes = segments.iter().map(|s| s.map.len() as u64).sum();
        Stats {
            events,
            streams,
            segments: segments.len() as u64,
            disk_bytes,
            last_position: events,
            index_memory_bytes,
            index_mapped_bytes,
            appends_written,
            group_commits,
            spare_segment_bytes: core.spare_segment.ready_bytes(),
        }
    }

    /// Makes every acknowledged append durable now (useful in the periodic
    /// and buffered modes; in durable mode everything acknowledged is
    /// durable already, and this costs one data sync; on a read-only store
    /// it does nothing). Fails with [`Error::Poisoned`] once a write or
    /// sync has failed: a failed sync is never retried. After
    /// [`Store::close`], which made everything durable, there is nothing
    /// left to do: `Ok`, unless the store was poisoned.
    pub fn sync(&self) -> Result<()> {
        if self.core().options.read_only {
            return Ok(());
        }
        self.core().sync_tail()
    }

    /// Saves the index file now, so that the next open replays nothing.
    /// Fails with [`Error::ReadOnly`] on a read-only store, and with
    /// [`Error::Closed`] once the store was closed ([`Store::close`] saves
    /// it, and nothing is written after it).
    pub fn save_index(&self) -> Result<()> {
        self.core().check_writable()?;
        self.core().save_index_unless_closed()
    }

    /// Whether the store was opened read-only ([`Options::with_read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.core().options.read_only
    }

    /// The last error of a background task (index saving), if any.
    pub fn background_error(&self) -> Option<String> {
        self.core().background_error.lock().clone()
    }

    /// Closes the store: waits for appends in progress, syncs the log,
    /// saves the index file, ends every subscription and dispatcher (waiting
    /// for a handler call in progress, unless called from a handler of this
    /// store), and releases the directory lock (once every clone of the
    /// handle, and every [`Events`] iterator, is gone).
    /// Further appends,
    /// subscriptions, dispatchers, checkpoint calls and snapshot saves and
    /// compactions on any clone fail with [`Error::Closed`] (a checkpoint
    /// or snapshot save in progress is waited for: none writes once close
    /// has returned); reads through a remaining clone, snapshot loads and
    /// [`Store::backup`] included, still return what was written.
    ///
    /// Fails with the first step's error: [`Error::Poisoned`] when the
    /// store had stopped accepting writes, else an I/O error of the final
    /// sync or of the index save (for a full disk, of kind `StorageFull`).
    /// When only the index save failed, the acknowledged appends are
    /// durable all the same; the next open refreshes the index from the log.
    pub fn close(self) -> Result<()> {
        self.handle.close()
    }
}

impl<F: FileSystem> fmt::Debug for Store<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.core().dir)
            .field("store_id", &self.core().store_id)
            .finish()
    }
}

impl<F: FileSystem> Handle<F> {
    fn start_threads(&self) -> Result<()> {
        let (tx, rx) = mpsc::channel::<()>();
        *self.core.index_save_requests.lock() = Some(tx);
        let core = self.core.clone();
        let checkpointer = std::thread::Builder::new()
            .name("annal-index".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    while rx.try_recv().is_ok() {}
                    if let Err(e) = core.save_index() {
                        *core.background_error.lock() = Some(e.to_string());
                    }
                }
            })
            .map_err(|e| Error::io("starting the index thread", e))?;
        self.threads.lock().push(checkpointer);
        let requests = self.core.spare_segment.connect();
        let core = self.core.clone();
        let spare_maker = std::thread::Builder::new()
            .name("annal-spare".into())
            .spawn(move || spare::serve(&core.fs, &core.spare_segment, &requests))
            .map_err(|e| Error::io("starting the spare segment thread", e))?;
        self.threads.lock().push(spare_maker);
        if let Durability::Periodic(interval) = self.core.options.durability {
            let (stop_tx, stop_rx) = mpsc::channel::<()>();
            *self.stop_flusher.lock() = Some(stop_tx);
            let core = self.core.clone();
            let flusher = std::thread::Builder::new()
                .name("annal-sync".into())
                .spawn(move || {
                    while let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(interval) {
                        // A failed sync poisons the store inside sync_tail.
                        let _ = core.sync_tail();
                    }
                })
                .map_err(|e| Error::io("starting the sync thread", e))?;
            self.threads.lock().push(flusher);
        }
        Ok(())
    }

    fn close(&self) -> Result<()> {
        // Later calls get a copy of the first outcome: an I/O error keeps
        // its kind (a full disk while saving the index file is
        // `StorageFull`, not a poisoned store).
        let outcome = self.closed.get_or_init(|| self.shutdown());
        // Outside the one-time shutdown, so that a handler closing the
        // store while another thread does never waits for that thread.
        self.core.subscriptions.wait_for_handler_calls();
        outcome.as_ref().map(|_| ()).map_err(Error::share)
    }

    fn shutdown(&self) -> Result<()> {
        let core = &self.core;
        let poisoned = {
            let mut w = core.writer.lock();
            while !w.is_idle() {
                core.lead_or_wait(&mut w);
            }
            w.close();
            w.poisoned().map(str::to_string)
        };
        core.subscriptions.close();
        // Waits for a checkpoint or snapshot save in progress; later ones
        // see the store closed under these locks and write nothing.
        core.checkpoint_cache.wait_for_save();
        core.snapshots.wait_for_save();
        drop(self.stop_flusher.lock().take());
        drop(core.index_save_requests.lock().take());
        core.spare_segment.stop();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
        if !core.options.read_only {
            core.spare_segment.remove(&core.fs);
        }
        if let Some(why) = poisoned {
            return Err(Error::Poisoned(why));
        }
        if core.options.read_only {
            return Ok(());
        }
        core.sync_tail()?;
        core.save_index()
    }
}

impl<F: FileSystem> Drop for Handle<F> {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl<F: FileSystem> Core<F> {
    /// Calls `each` with the index and the next slice of its streams (in
    /// the order of [`Index::streams`]), a slice of 4,096 streams at a
    /// time under the index lock, which appends need to publish: walking a
    /// million streams holds them up for a fraction of a millisecond at a
    /// time. Streams added meanwhile may be included.
    pub(crate) fn index_slices(&self, mut each: impl FnMut(&Index, std::ops::Range<usize>)) {
        const SLICE_STREAMS: usize = 4096;
        let mut next = 0usize;
        loop {
            let published = self.published.read();
            let count = published.index.stream_count();
            let end = next.saturating_add(SLICE_STREAMS).min(count);
            each(&published.index, next..end);
            if end >= count {
                return;
            }
            next = end;
        }
    }

    /// `each` of every stream (its name and version), in the index's order,
    /// walked with [`Core::index_slices`].
    pub(crate) fn streams_sliced<T>(&self, mut each: impl FnMut(&Arc<str>, u64) -> T) -> Vec<T> {
        let mut out = Vec::new();
        self.index_slices(|index, streams| {
            out.extend(streams.filter_map(|i| {
                let (name, stream) = index.stream_in_order(i)?;
                Some(each(name, stream.version()))
            }));
        });
        out
    }

    /// Fails with [`Error::Closed`] once the store was closed.
    pub(crate) fn check_not_closed(&self) -> Result<()> {
        if self.subscriptions.is_closed() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Fails with [`Error::ReadOnly`] when the store was opened read-only.
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.options.read_only {
            return Err(Error::ReadOnly { path: self.dir.clone() });
        }
        Ok(())
    }

    /// Asks the background thread to save the index file.
    pub(crate) fn request_checkpoint(&self) {
        if let Some(tx) = &*self.index_save_requests.lock() {
            let _ = tx.send(());
        }
    }

    /// Leads a pending write, or waits for the current leader.
    pub(crate) fn lead_or_wait(&self, w: &mut parking_lot::MutexGuard<'_, WriterState>) {
        if w.is_idle() {
            return;
        }
        if w.poisoned().is_some() {
            // Nothing more will be written; drop what is queued.
            w.drop_queue();
            self.written.notify_all();
            return;
        }
        if w.leader_idle() {
            self.lead(w);
        } else {
            self.written.wait(w);
        }
    }

    /// Syncs the active segment; a failure poisons the store. Refuses on a
    /// poisoned store: a sync retried after a failed one can report success
    /// for writes the kernel dropped, and callers take its success as the
    /// log being durable (snapshot and checkpoint saves, `Store::sync`).
    pub(crate) fn sync_tail(&self) -> Result<()> {
        let _syncing = self.sync_lock.lock();
        if let Some(why) = self.writer.lock().poisoned() {
            return Err(Error::Poisoned(why.to_string()));
        }
        // Published events were written before they were published, and
        // earlier segments synced when sealed: this sync makes them durable.
        let (published, end) = {
            let published = self.published.read();
            (published.index.last_position(), published.end)
        };
        let handle = match self.options.durability {
            // The leader syncs through the tail's file, holding it.
            Durability::Sync => None,
            // Appends only copy into the map meanwhile: they need not wait
            // for this sync (up to an interval's worth of data, or a whole
            // segment's before an index save in buffered mode). The handle
            // is the segment's that held `published` when it was read, or
            // a later one (the earlier segments were synced when sealed).
            _ => self.tail.lock().sync_handle(),
        };
        let result = match handle {
            Some((file, path)) => file.sync_data().ctx(|| format!("syncing {}", path.display())),
            None => self.tail.lock().sync(),
        };
        match &result {
            Ok(()) => {
                self.synced_position.fetch_max(published, Ordering::AcqRel);
                let mut synced = self.synced_end.lock();
                *synced = (*synced).max((end.segment, end.offset));
            }
            Err(e) => {
                self.writer.lock().poison(e.to_string());
                self.write_back_unsynced(None);
            }
        }
        result
    }

    /// After a failed sync or group commit in the periodic and buffered
    /// modes: writes back (the same bytes) what the active segment holds
    /// past the end of the last successful sync, up to the published end
    /// or `written_end` (a failed group's, when later), as far as it can.
    /// Those appends were acknowledged once in the page cache; but Linux
    /// marks the pages of a failed write-back clean while they keep their
    /// bytes, so the next open would read them, sync without writing them,
    /// and publish them as durable. Dirty again, they are written by that
    /// sync (or it fails, truthfully). Durable mode has nothing of the
    /// kind: its published events were synced (a failed group's bytes are
    /// zeroed instead, see `Core::lead`). Errors are ignored: the store is
    /// poisoned either way.
    pub(crate) fn write_back_unsynced(&self, written_end: Option<(u64, u64)>) {
        if self.options.durability == Durability::Sync {
            return;
        }
        let tail = self.tail.lock();
        // An end in an earlier segment is the active one's header end.
        let here = |(segment, offset): (u64, u64)| {
            if segment == tail.segment_id {
                offset
            } else {
                SEGMENT_HEADER_BYTES
            }
        };
        let from = here(*self.synced_end.lock());
        let published = self.published.read().end;
        let to = here((published.segment, published.offset)).max(written_end.map_or(0, here));
        if from < to {
            let _ = tail.write_back(from, to);
        }
    }

    /// Makes the log durable at least up to `position` (published) in the
    /// periodic and buffered modes: a [`Core::sync_tail`], unless an earlier
    /// one already covered it (a store poisoned since refuses all the same,
    /// as the sync would). In durable mode published events were synced.
    pub(crate) fn sync_through(&self, position: u64) -> Result<()> {
        if self.options.durability == Durability::Sync {
            return Ok(());
        }
        if position <= self.synced_position.load(Ordering::Acquire) {
            return match self.writer.lock().poisoned() {
                Some(why) => Err(Error::Poisoned(why.to_string())),
                None => Ok(()),
            };
        }
        self.sync_tail()
    }

    /// Saves the index file for the published state. Syncs the log first
    /// so that the index never covers bytes a crash could still take away.
    pub(crate) fn save_index(&self) -> Result<()> {
        self.save_index_locked(self.index_save.lock())
    }

    /// [`Core::save_index`] for the public call: fails with
    /// [`Error::Closed`] once the store was closed, checked under the save
    /// lock, so that no save starts after the one that close makes.
    pub(crate) fn save_index_unless_closed(&self) -> Result<()> {
        let saved = self.index_save.lock();
        self.check_not_closed()?;
        self.save_index_locked(saved)
    }

    fn save_index_locked(&self, mut saved: parking_lot::MutexGuard<'_, Option<LogEnd>>) -> Result<()> {
        let (checkpoint, end) = {
            let p = self.published.read();
            if *saved == Some(p.end) {
                return Ok(());
            }
            (self.checkpoint_of(&p), p.end)
        };
        // The log first: an index file must never cover more of it than
        // is durable.
        let same_segment = self.tail.lock().segment_id == end.segment;
        if same_segment {
            self.sync_tail()?;
        }
        // Encoded and written a piece at a time: the file (16 bytes per
        // event) is never whole in memory.
        let len = io::write_atomic_streamed(&self.fs, &self.dir, index_file::FILE_NAME, &mut |emit| {
            index_file::encode_streamed(&checkpoint, &mut |f| f(&self.published.read().index), emit)
        })
        .ctx(|| format!("saving the index file in {}", self.dir.display()))?;
        self.index_file_bytes.store(len, Ordering::Relaxed);
        *saved = Some(end);
        Ok(())
    }

    /// The index file checkpoint of the published state `p`.
    pub(crate) fn checkpoint_of(&self, p: &Published) -> Checkpoint {
        Checkpoint {
            store_id: self.store_id,
            last_position: p.index.last_position(),
            end_segment: p.end.segment,
            end_offset: p.end.offset,
            last_batch_crc: p.end.last_batch_crc,
        }
    }

    /// Reads the published event at `position`.
    pub(crate) fn read_position(&self, position: u64) -> Result<RecordedEvent> {
        let location = self
            .published
            .read()
            .index
            .location(position)
            .ok_or_else(|| Error::InvalidInput(format!("no event at position {position}")))?;
        let view = self
            .segments
            .read()
            .get(location.segment)
            .cloned()
            .ok_or_else(|| Error::corruption(&self.dir, location.offset, "index points at a missing segment"))?;
        view.read(location.offset, position)
    }

    /// Fills the idempotency window from the log's last events. Checks the
    /// batches that hold them (each batch's CRCs once), not the segments
    /// from their start: that check is left to readers, lazily.
    fn fill_window(&self) -> Result<()> {
        let capacity = self.options.idempotency_window_events as u64;
        let mut w = self.writer.lock();
        let published = self.published.read();
        let segments = self.segments.read();
        let last = published.index.last_position();
        let mut position = last.saturating_sub(capacity) + 1;
        let mut records = Vec::new();
        while position <= last {
            let bad = |offset: u64, what: &str| Error::corruption(&self.dir, offset, what.to_string());
            let location = published
                .index
                .location(position)
                .ok_or_else(|| bad(0, "index lacks a position"))?;
            let view = segments
                .get(location.segment)
                .ok_or_else(|| bad(location.offset, "index points at a missing segment"))?;
            let record_at = usize::try_from(location.offset).unwrap_or(usize::MAX);
            let batch_at = view
                .map
                .get(record_at..)
                .and_then(frame::parse_record_header)
                .and_then(|h| record_at.checked_sub(h.batch_back as usize))
                .ok_or_else(|| Error::corruption(&view.path, location.offset, "index points at no valid record"))?;
            records.clear();
            let header = frame::check_batch(&view.map[batch_at..], |r, _| {
                records.push((r.header.id, u64::from(r.header.version)));
            })
            .map_err(|e| Error::corruption(&view.path, batch_at as u64, e.to_string()))?;
            // The batch must hold `position`: a damaged record can point
            // at another, valid batch, and the walk must move forward.
            let batch_end = header.first_position.saturating_add(u64::from(header.record_count));
            if header.first_position > position || batch_end <= position {
                return Err(Error::corruption(
                    &view.path,
                    batch_at as u64,
                    "batch positions differ from the index",
                ));
            }
            for (k, &(id, version)) in records.iter().enumerate() {
                let at = header.first_position.saturating_add(k as u64);
                if (position..=last).contains(&at) {
                    w.window_insert(id, Written { version, position: at });
                }
            }
            position = batch_end;
        }
        Ok(())
    }
}
