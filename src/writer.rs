//! The write path: checks, encoding, and group commit.
//!
//! An append takes the writer lock, checks expected versions against the
//! state that includes appends not yet written (so concurrent appends to
//! one stream get consecutive versions), encodes its batch into the shared
//! queue, and then waits. Whichever waiting appender finds no write in
//! progress becomes the leader: it takes the whole queue, releases the
//! lock, writes every queued batch with one write call per segment and one
//! data sync in all, then publishes the batches to readers and wakes the
//! appenders they belong to. Appends that arrive meanwhile queue up behind
//! it and share the next sync: that is group commit.
//!
//! Invariants:
//! - readers see a batch only after it is written (and, in durable mode,
//!   synced), and see batches in log order;
//! - after a failed write or sync the store is poisoned: nothing more is
//!   acknowledged until it is reopened (a retried fsync can lie).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest a group-commit leader waits for more appends to join.
const GATHER_WAIT_MICROS_MAX: u64 = 500;

/// Longest an appender yields, waiting for another thread's group commit,
/// before it parks (see `Options::with_group_commit_spin`).
const COMMIT_SPIN_MICROS_MAX: u64 = 1_000;

use parking_lot::MutexGuard;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{AppendResult, EventData, ExpectedVersion, StreamAppend};
use crate::hash::{FastMap, FastSet, set_with_capacity};
use crate::idempotency::{IdWindow, Written};
use crate::index::Location;
use crate::io::FileSystem;
use crate::limits;
use crate::log::frame::{self, BATCH_HEADER_BYTES, RecordInput};
use crate::log::segment::SEGMENT_HEADER_BYTES;
use crate::log::tail::LogTail;
use crate::log::view::SegmentView;
use crate::one_or_many::OneOrMany;
use crate::options::Durability;
use crate::recovery::LogEnd;
use crate::store::Core;

/// A stream with appends queued but not yet published.
#[derive(Debug)]
pub(crate) struct PendingStream {
    /// Interned name.
    name: Arc<str>,
    /// The stream's version once everything queued is published.
    version: u64,
    /// Id and position of each queued event, from version
    /// `version - events.len() + 1`.
    events: Vec<(Uuid, u64)>,
}

/// An event queued for publication.
#[derive(Debug)]
struct Entry {
    stream: Arc<str>,
    version: u64,
    location: Location,
}

/// Encoded batches for one segment, waiting to be written.
#[derive(Debug)]
pub(crate) struct Chunk {
    segment: u64,
    offset: u64,
    /// Global position of the chunk's first event.
    first_position: u64,
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    last_seq: u64,
    last_batch_crc: u32,
}

/// State guarded by the writer lock.
#[derive(Debug)]
pub(crate) struct WriterState {
    next_position: u64,
    tail_segment: u64,
    tail_offset: u64,
    pending: FastMap<Arc<str>, PendingStream>,
    window: IdWindow,
    queue: Vec<Chunk>,
    next_seq: u64,
    done_seq: u64,
    published_position: u64,
    leader_active: bool,
    /// Appends in `queue`.
    queued_appends: usize,
    /// Appends the previous group commit carried.
    last_group_appends: usize,
    /// Whether a leader is waiting for more appends to join its group.
    gathering: bool,
    /// Smoothed duration of a data sync, in microseconds.
    sync_micros_avg: u64,
    /// Appenders parked until the current group commit ends.
    waiters: Vec<std::thread::Thread>,
    /// Appends written since open.
    pub(crate) appends_written: u64,
    /// Group commits (write + sync rounds) since open.
    pub(crate) group_commits: u64,
    poisoned: Option<String>,
    /// The error of the group commit that poisoned the store, and the last
    /// sequence number in that group: its appenders get this error (with
    /// its I/O kind, such as `StorageFull`); later ones get `Poisoned`.
    failed_group: Option<(u64, Error)>,
    closed: bool,
    /// A checkpoint past the log's last event (file, and why appends are
    /// refused), found at open; see [`crate::checkpoint::guard_appends`].
    checkpoint_ahead: Option<(std::path::PathBuf, String)>,
    /// Emptied buffers of published chunks, for the next ones.
    spare: Vec<(Vec<u8>, Vec<Entry>)>,
    /// The emptied queue of the last group commit, for the next one.
    spare_queue: Vec<Chunk>,
    /// The emptied decisions of the last append, for the next one.
    decisions: Vec<Decision>,
    /// Emptied event lists of streams no longer pending.
    spare_pending: Vec<Vec<(Uuid, u64)>>,
    bytes_since_checkpoint: u64,
}

impl WriterState {
    pub(crate) fn new(end: LogEnd, tail_segment: u64, last_position: u64, window: IdWindow) -> Self {
        let tail_offset = if end.segment == tail_segment {
            end.offset
        } else {
            SEGMENT_HEADER_BYTES
        };
        WriterState {
            next_position: last_position + 1,
            tail_segment,
            tail_offset,
            pending: FastMap::default(),
            window,
            queue: Vec::new(),
            next_seq: 0,
            done_seq: 0,
            published_position: last_position,
            leader_active: false,
            queued_appends: 0,
            last_group_appends: 0,
            gathering: false,
            sync_micros_avg: 0,
            waiters: Vec::new(),
            appends_written: 0,
            group_commits: 0,
            poisoned: None,
            failed_group: None,
            closed: false,
            checkpoint_ahead: None,
            spare: Vec::new(),
            spare_queue: Vec::new(),
            decisions: Vec::new(),
            spare_pending: Vec::new(),
            bytes_since_checkpoint: 0,
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        !self.leader_active && self.queue.is_empty()
    }

    pub(crate) fn close(&mut self) {
        self.closed = true;
    }

    pub(crate) fn poison(&mut self, why: String) {
        if self.poisoned.is_none() {
            self.poisoned = Some(why);
        }
    }

    pub(crate) fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// The error for the append with sequence number `seq` once the store
    /// is poisoned.
    fn failure_for(&self, seq: u64) -> Error {
        match &self.failed_group {
            Some((last, error)) if seq <= *last => error.share(),
            _ => Error::Poisoned(self.poisoned.clone().unwrap_or_default()),
        }
    }

    /// Forgets queued appends (after poisoning: they will never be written).
    pub(crate) fn drop_queue(&mut self) {
        self.queue.clear();
        self.queued_appends = 0;
    }

    /// Whether no appender is writing right now.
    pub(crate) fn leader_idle(&self) -> bool {
        !self.leader_active
    }

    /// Remembers an id in the idempotency window.
    pub(crate) fn window_insert(&mut self, id: Uuid, written: Written) {
        self.window.insert(id, written);
    }

    /// Refuses appends (with this corruption) while a checkpoint is past
    /// the log's end, or accepts them again (`None`).
    pub(crate) fn set_checkpoint_ahead(&mut self, ahead: Option<(std::path::PathBuf, String)>) {
        self.checkpoint_ahead = ahead;
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        if let Some(why) = &self.poisoned {
            return Err(Error::Poisoned(why.clone()));
        }
        if let Some((file, why)) = &self.checkpoint_ahead {
            return Err(Error::corruption(file, 0, why.clone()));
        }
        Ok(())
    }
}

/// One stream's part of an append, borrowed: what the writer reads of a
/// [`StreamAppend`], so that `Store::append` need not build one (a name
/// and an event vector to allocate and free on every append).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AppendRef<'a> {
    /// The stream to append to.
    pub(crate) stream: &'a str,
    /// The condition on that stream.
    pub(crate) expected: ExpectedVersion,
    /// The events, in order.
    pub(crate) events: &'a [EventData],
}

impl StreamAppend {
    /// This append, borrowed.
    pub(crate) fn borrowed(&self) -> AppendRef<'_> {
        AppendRef {
            stream: &self.stream,
            expected: self.expected,
            events: &self.events,
        }
    }
}

/// Checks names, sizes and ids of an append before taking any lock.
pub(crate) fn validate(appends: &[AppendRef<'_>], batch_bytes_max: usize) -> Result<()> {
    if appends.is_empty() {
        return Err(Error::InvalidInput("an append needs at least one stream".into()));
    }
    let mut events = 0usize;
    let mut bytes = BATCH_HEADER_BYTES;
    // One stream needs no check for a stream named twice (the common
    // case), and no set (whose hasher costs a seed).
    let mut streams: Option<FastSet<&str>> = (appends.len() > 1).then(|| set_with_capacity(appends.len()));
    for a in appends {
        validate_stream_name(a.stream)?;
        if let Some(streams) = &mut streams
            && !streams.insert(a.stream)
        {
            return Err(Error::InvalidInput(format!(
                "stream '{}' appears twice in one append",
                a.stream
            )));
        }
        if a.events.is_empty() {
            return Err(Error::InvalidInput(format!("no events to append to '{}'", a.stream)));
        }
        for e in a.events {
            validate_event(e)?;
            events += 1;
            bytes += frame::record_len(a.stream, e);
        }
    }
    if events > 1 && events <= limits::BATCH_EVENTS_MAX {
        // Sorting the ids finds a repeated one with a few comparisons each,
        // cheaper than hashing them into a set.
        let mut ids: Vec<u128> = appends
            .iter()
            .flat_map(|a| a.events.iter().map(|e| e.id.as_u128()))
            .collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(Error::DuplicateEventId {
                id: Uuid::from_u128(pair[0]),
            });
        }
    }
    if events > limits::BATCH_EVENTS_MAX {
        return Err(Error::InvalidInput(format!(
            "{events} events in one append; the limit is {}",
            limits::BATCH_EVENTS_MAX
        )));
    }
    if bytes > batch_bytes_max {
        let why = if batch_bytes_max < limits::BATCH_BYTES_MAX {
            " (what fits in one segment; see Options::with_segment_size_bytes)"
        } else {
            ""
        };
        return Err(Error::InvalidInput(format!(
            "append encodes to {bytes} bytes; the limit is {batch_bytes_max} bytes{why}"
        )));
    }
    Ok(())
}

/// Checks a stream name against the limits.
#[inline]
pub(crate) fn validate_stream_name(name: &str) -> Result<()> {
    check_name_len("stream name", name, limits::STREAM_NAME_BYTES_MAX)
}

/// Checks a category name: a stream name's part before its first `-`, so
/// one holding a `-` could never match a stream.
pub(crate) fn validate_category(category: &str) -> Result<()> {
    check_name_len("category", category, limits::STREAM_NAME_BYTES_MAX)?;
    if category.contains('-') {
        return Err(Error::InvalidInput(format!(
            "category '{category}' holds a '-': a category is a stream name's part before its first '-'"
        )));
    }
    Ok(())
}

/// Checks an event type used in a filter against the limits.
#[inline]
pub(crate) fn validate_event_type(t: &str) -> Result<()> {
    check_name_len("event type", t, limits::EVENT_TYPE_BYTES_MAX)
}

/// Checks that `name` (a `what`) has 1 to `max` bytes.
#[inline]
fn check_name_len(what: &str, name: &str, max: usize) -> Result<()> {
    if name.is_empty() || name.len() > max {
        return Err(Error::InvalidInput(format!(
            "{what} must be 1 to {max} bytes, got {}",
            name.len()
        )));
    }
    Ok(())
}

fn validate_event(e: &EventData) -> Result<()> {
    if e.id.is_nil() {
        // The usual value of an id that was never set: two such events
        // would pass for retries of each other.
        return Err(Error::InvalidInput(
            "event id is the nil UUID (all zeros); give each event its own id".into(),
        ));
    }
    validate_event_type(&e.event_type)?;
    let payload = e.data.len() + e.metadata.len();
    if payload > limits::EVENT_PAYLOAD_BYTES_MAX {
        return Err(Error::InvalidInput(format!(
            "event data + metadata is {payload} bytes; the limit is {}",
            limits::EVENT_PAYLOAD_BYTES_MAX
        )));
    }
    Ok(())
}

/// Where a stream's event at some version is (see `Core::event_at`).
enum At {
    /// In the queued range: its id and position, if the version exists.
    Queued(Option<(Uuid, u64)>),
    /// Published (or absent): its position, if the version exists.
    Published(Option<u64>),
}

/// What the checks decided for one stream of an append.
#[derive(Debug)]
enum Decision {
    /// Write the events after `version`.
    Write { name: Arc<str>, version: u64 },
    /// An exact retry: return this result without writing.
    Duplicate(AppendResult),
}

impl<F: FileSystem> Core<F> {
    /// Appends to one or more streams atomically.
    pub(crate) fn append(&self, appends: &[AppendRef<'_>]) -> Result<OneOrMany<AppendResult>> {
        self.check_writable()?;
        validate(appends, self.options.batch_bytes_max())?;
        let mut w = self.writer.lock();
        w.check_open()?;
        // The previous append's emptied vector: no allocation per append.
        let mut decisions = std::mem::take(&mut w.decisions);
        decisions.clear();
        for a in appends {
            decisions.push(self.decide(&w, a)?);
        }
        let duplicates = decisions.iter().filter(|d| matches!(d, Decision::Duplicate(_))).count();
        if duplicates == decisions.len() {
            let results: OneOrMany<AppendResult> = decisions
                .into_iter()
                .filter_map(|d| match d {
                    Decision::Duplicate(r) => Some(r),
                    Decision::Write { .. } => None,
                })
                .collect();
            let last = results.as_slice().iter().map(|r| r.last_position).max().unwrap_or(0);
            self.wait_published(&mut w, last)?;
            drop(w);
            self.check_retried_content(appends, results.as_slice())?;
            return Ok(results);
        }
        if duplicates > 0 {
            // Part of a multi-stream append was written before, part not:
            // not a retry of one earlier append.
            let (a, _) = appends
                .iter()
                .zip(&decisions)
                .find(|(_, d)| matches!(d, Decision::Duplicate(_)))
                .ok_or(Error::Closed)?;
            return Err(Error::IdempotencyConflict {
                stream: a.stream.to_string(),
                id: a.events[0].id,
            });
        }
        let (results, seq) = self.enqueue(&mut w, appends, &decisions);
        decisions.clear();
        w.decisions = decisions;
        self.wait_seq(w, seq)?;
        Ok(results)
    }

    /// The position of event `id` when the recent-id window holds it (it
    /// may still be queued, not yet published).
    #[cfg(feature = "aggregate")]
    pub(crate) fn recent_event_position(&self, id: Uuid) -> Option<u64> {
        self.writer.lock().window.get(&id).map(|w| w.position)
    }

    /// A retry matched by ids must also carry the same events: the stored
    /// type, data and schema version must equal the retried ones, or the
    /// caller reused an id for another event, which is refused rather
    /// than acknowledged without being written. Metadata is not compared:
    /// it often carries details of each attempt (a send time, a trace id).
    /// Runs only for retries, after their events are published.
    fn check_retried_content(&self, appends: &[AppendRef<'_>], results: &[AppendResult]) -> Result<()> {
        for (a, r) in appends.iter().zip(results) {
            for (position, e) in (r.first_position..).zip(a.events) {
                let stored = self.read_position(position)?;
                if stored.event_type() != e.event_type()
                    || stored.data() != e.data()
                    || stored.schema_version() != e.schema_version
                {
                    return Err(Error::IdempotencyConflict {
                        stream: a.stream.to_string(),
                        id: e.id,
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether queued appends are kept in `WriterState::pending`, the view
    /// of streams with appends queued but not yet published. Only durable
    /// mode needs it: its leader releases the writer lock while it writes
    /// and syncs, and appends queued meanwhile must see the versions and
    /// ids of those being written. In the other modes the leader holds
    /// the lock from queueing to publishing (see [`Core::lead`]), so no
    /// other append ever sees a queued one.
    #[inline]
    fn tracks_pending(&self) -> bool {
        self.options.durability == Durability::Sync
    }

    /// The stream's version including queued appends, its name, and the
    /// position of its last event.
    fn current(&self, w: &WriterState, stream: &str) -> (Option<Arc<str>>, u64, Option<u64>) {
        if !w.pending.is_empty()
            && let Some(p) = w.pending.get(stream)
        {
            return (Some(p.name.clone()), p.version, p.events.last().map(|&(_, at)| at));
        }
        match self.published.read().index.stream_key(stream) {
            Some((key, version, last)) => (Some(key), version, last),
            None => (None, 0, None),
        }
    }

    /// Checks one stream's expected version and idempotency.
    fn decide(&self, w: &WriterState, a: &AppendRef<'_>) -> Result<Decision> {
        let (name, version, last_position) = self.current(w, a.stream);
        let exact = match a.expected {
            ExpectedVersion::Any => None,
            ExpectedVersion::NoStream => Some(0),
            ExpectedVersion::StreamExists => None,
            ExpectedVersion::Exact(n) => Some(n),
        };
        if let Some(n) = exact {
            if version == n {
                return self.fresh_ids(w, a, name, version);
            }
            if version > n
                && let Some(result) = self.retry_after(w, a, n)?
            {
                return Ok(Decision::Duplicate(result));
            }
            return Err(wrong_version(a, version));
        }
        if let Some(result) = self.retry_in_window(w, a)? {
            return Ok(Decision::Duplicate(result));
        }
        if let Some(result) = self.retry_at_stream_end(w, a, version, last_position)? {
            return Ok(Decision::Duplicate(result));
        }
        if a.expected == ExpectedVersion::StreamExists && version == 0 {
            return Err(wrong_version(a, version));
        }
        let name = name.unwrap_or_else(|| Arc::from(a.stream));
        Ok(Decision::Write { name, version })
    }

    /// Accepts a write whose ids are not already known in the window.
    fn fresh_ids(&self, w: &WriterState, a: &AppendRef<'_>, name: Option<Arc<str>>, version: u64) -> Result<Decision> {
        if let Some(e) = a.events.iter().find(|e| w.window.get(&e.id).is_some()) {
            return Err(Error::IdempotencyConflict {
                stream: a.stream.to_string(),
                id: e.id,
            });
        }
        let name = name.unwrap_or_else(|| Arc::from(a.stream));
        Ok(Decision::Write { name, version })
    }

    /// With `Exact(n)`: are the events right after version `n` these very
    /// events? `Some(result)` when all match, an error when some do.
    fn retry_after(&self, w: &WriterState, a: &AppendRef<'_>, n: u64) -> Result<Option<AppendResult>> {
        let mut matched = Vec::with_capacity(a.events.len());
        for (i, e) in a.events.iter().enumerate() {
            let version = n + 1 + i as u64;
            match self.id_at(w, a.stream, version)? {
                Some((id, position)) if id == e.id => matched.push(position),
                _ => break,
            }
        }
        if matched.is_empty() {
            return Ok(None);
        }
        if matched.len() < a.events.len() {
            return Err(Error::IdempotencyConflict {
                stream: a.stream.to_string(),
                id: reused_id(w, &a.events[matched.len()], &a.events[0]),
            });
        }
        Ok(Some(AppendResult {
            first_version: n + 1,
            last_version: n + a.events.len() as u64,
            first_position: matched[0],
            last_position: matched[matched.len() - 1],
        }))
    }

    /// The id and position of `stream`'s event at `version`, queued or
    /// published.
    fn id_at(&self, w: &WriterState, stream: &str, version: u64) -> Result<Option<(Uuid, u64)>> {
        match self.event_at(w, stream, version) {
            At::Queued(found) => Ok(found),
            At::Published(None) => Ok(None),
            At::Published(Some(position)) => {
                let event = self.read_position(position)?;
                Ok(Some((event.id(), position)))
            }
        }
    }

    /// Whether `stream` holds the event at `written.position` as its
    /// version `written.version` (queued or published): then an id the
    /// window places there was written to this stream.
    fn stream_holds(&self, w: &WriterState, stream: &str, written: Written) -> bool {
        let position = match self.event_at(w, stream, written.version) {
            At::Queued(found) => found.map(|(_, position)| position),
            At::Published(position) => position,
        };
        position == Some(written.position)
    }

    /// Where `stream`'s event at `version` is: among the queued appends
    /// (with its id and position, when the version is in the queued
    /// range), or in the published index (its position, if any).
    fn event_at(&self, w: &WriterState, stream: &str, version: u64) -> At {
        if !w.pending.is_empty()
            && let Some(p) = w.pending.get(stream)
        {
            let first_pending = p.version + 1 - p.events.len() as u64;
            if version >= first_pending {
                let i = usize::try_from(version - first_pending).unwrap_or(usize::MAX);
                return At::Queued(p.events.get(i).copied());
            }
        }
        let published = self.published.read();
        let i = usize::try_from(version.wrapping_sub(1)).unwrap_or(usize::MAX);
        At::Published(published.index.stream(stream).and_then(|e| e.get(i)))
    }

    /// With `Any`/`StreamExists`: is this append a retry of one in the
    /// recent-id window? The first of its ids the window holds places the
    /// whole append; ids before it that the window has forgotten (a batch
    /// larger than the window, or one the window is halfway done with) are
    /// looked up in the stream.
    fn retry_in_window(&self, w: &WriterState, a: &AppendRef<'_>) -> Result<Option<AppendResult>> {
        let Some((i, found)) = (0u64..)
            .zip(a.events)
            .find_map(|(i, e)| Some((i, w.window.get(&e.id)?)))
        else {
            return Ok(None);
        };
        let conflict = |e: &EventData| Error::IdempotencyConflict {
            stream: a.stream.to_string(),
            id: reused_id(w, e, &a.events[i as usize]),
        };
        let (Some(version), Some(position)) = (found.version.checked_sub(i), found.position.checked_sub(i)) else {
            return Err(conflict(&a.events[i as usize]));
        };
        if version == 0 || position == 0 {
            return Err(conflict(&a.events[i as usize]));
        }
        for (j, e) in (0u64..).zip(a.events) {
            let expected = Written {
                version: version + j,
                position: position + j,
            };
            let same = match w.window.get(&e.id) {
                // The window does not keep streams: the stream must hold
                // the event there.
                Some(x) => x == expected && self.stream_holds(w, a.stream, expected),
                // Forgotten by the window (only ids before the first one
                // it holds can be): the stream must hold it there.
                None if j < i => self.id_at(w, a.stream, expected.version)? == Some((e.id, expected.position)),
                None => false,
            };
            if !same {
                return Err(conflict(e));
            }
        }
        let k = a.events.len() as u64;
        Ok(Some(AppendResult {
            first_version: version,
            last_version: version + k - 1,
            first_position: position,
            last_position: position + k - 1,
        }))
    }

    /// With `Any`/`StreamExists`, once the window has forgotten the ids (or
    /// never held them: a window of 0): are these events the stream's last
    /// ones, queued or published? So a retry of a stream's latest append
    /// is found however long ago it was written, and while it is still
    /// queued. Reads the log only when the stream's candidate events are
    /// older than the window (newer ones would have been found in it).
    /// `version` and `last_position` are the stream's version and the
    /// position of its last event (see `Core::current`).
    fn retry_at_stream_end(
        &self,
        w: &WriterState,
        a: &AppendRef<'_>,
        version: u64,
        last_position: Option<u64>,
    ) -> Result<Option<AppendResult>> {
        let k = a.events.len() as u64;
        if version < k {
            return Ok(None);
        }
        let first_version = version - k + 1;
        let first_position = match (k, last_position) {
            // The stream's last event, known already: no look-up (the
            // common case of one event).
            (1, Some(position)) => position,
            _ => match self.event_at(w, a.stream, first_version) {
                At::Queued(Some((_, position))) | At::Published(Some(position)) => position,
                At::Queued(None) | At::Published(None) => return Ok(None),
            },
        };
        if w.window.covers(first_position)
            || self.id_at(w, a.stream, first_version)? != Some((a.events[0].id, first_position))
        {
            return Ok(None);
        }
        for (i, e) in (1u64..).zip(&a.events[1..]) {
            if self.id_at(w, a.stream, first_version + i)? != Some((e.id, first_position + i)) {
                return Err(Error::IdempotencyConflict {
                    stream: a.stream.to_string(),
                    id: reused_id(w, e, &a.events[0]),
                });
            }
        }
        Ok(Some(AppendResult {
            first_version,
            last_version: version,
            first_position,
            last_position: first_position + k - 1,
        }))
    }

    /// Assigns versions and positions, encodes the batch into the queue
    /// and updates the queued-state view. Returns the results and the
    /// sequence number to wait for.
    fn enqueue(
        &self,
        w: &mut WriterState,
        appends: &[AppendRef<'_>],
        decisions: &[Decision],
    ) -> (OneOrMany<AppendResult>, u64) {
        let size: usize = BATCH_HEADER_BYTES
            + appends
                .iter()
                .flat_map(|a| a.events.iter().map(|e| frame::record_len(a.stream, e)))
                .sum::<usize>();
        if w.tail_offset + size as u64 > self.options.segment_size_bytes && w.tail_offset > SEGMENT_HEADER_BYTES {
            w.tail_segment += 1;
            w.tail_offset = SEGMENT_HEADER_BYTES;
        }
        let first_position = w.next_position;
        let (segment, offset) = (w.tail_segment, w.tail_offset);
        let needs_new_chunk = w
            .queue
            .last()
            .is_none_or(|c| c.segment != segment || c.offset + c.bytes.len() as u64 != offset);
        if needs_new_chunk {
            let (bytes, entries) = w.spare.pop().unwrap_or_default();
            w.queue.push(Chunk {
                segment,
                offset,
                first_position,
                bytes,
                entries,
                last_seq: 0,
                last_batch_crc: 0,
            });
        }
        // Each stream's name and version before its events, in append
        // order (every decision is a write here), without collecting them.
        let bases = || {
            decisions.iter().filter_map(|d| match d {
                Decision::Write { name, version } => Some((name, *version)),
                Decision::Duplicate(_) => None,
            })
        };
        let mut position = first_position;
        let results: OneOrMany<AppendResult> = appends
            .iter()
            .zip(bases())
            .map(|(a, (_, version))| {
                let k = a.events.len() as u64;
                let result = AppendResult {
                    first_version: version + 1,
                    last_version: version + k,
                    first_position: position,
                    last_position: position + k - 1,
                };
                position += k;
                result
            })
            .collect();
        let seq = w.next_seq + 1;
        w.next_seq = seq;
        w.tail_offset += size as u64;
        w.next_position = position;
        let state = &mut *w;
        let Some(chunk) = state.queue.last_mut() else {
            return (results, seq);
        };
        let batch_start = chunk.bytes.len();
        let inputs = appends.iter().zip(bases()).flat_map(|(a, (name, version))| {
            a.events.iter().enumerate().map(move |(i, e)| RecordInput {
                stream: name,
                version: version + 1 + i as u64,
                event: e,
            })
        });
        let encoded = frame::encode_batch(&mut chunk.bytes, first_position, now_micros(), inputs);
        debug_assert_eq!(encoded, size);
        let mut record_at = batch_start + BATCH_HEADER_BYTES;
        let mut position = first_position;
        let tracks_pending = self.tracks_pending();
        for (a, (name, version)) in appends.iter().zip(bases()) {
            let spare_pending = &mut state.spare_pending;
            let mut pending = tracks_pending.then(|| {
                state.pending.entry(name.clone()).or_insert_with(|| PendingStream {
                    name: name.clone(),
                    version,
                    events: spare_pending.pop().unwrap_or_default(),
                })
            });
            for (i, e) in a.events.iter().enumerate() {
                let len = frame::record_len(name, e);
                let event_version = version + 1 + i as u64;
                chunk.entries.push(Entry {
                    stream: name.clone(),
                    version: event_version,
                    location: Location {
                        segment,
                        offset: chunk.offset + record_at as u64,
                    },
                });
                if let Some(pending) = &mut pending {
                    pending.events.push((e.id, position));
                    pending.version = event_version;
                }
                let written = Written {
                    version: event_version,
                    position,
                };
                state.window.insert(e.id, written);
                record_at += len;
                position += 1;
            }
        }
        chunk.last_batch_crc = frame::encoded_batch_crc(&chunk.bytes[batch_start..]);
        chunk.last_seq = seq;
        state.queued_appends += 1;
        if state.gathering && state.queued_appends >= state.last_group_appends {
            self.arrivals.notify_one();
        }
        (results, seq)
    }

    /// Waits until the append with sequence number `seq` is published,
    /// leading the write when nobody else is.
    fn wait_seq<'a>(&'a self, mut w: MutexGuard<'a, WriterState>, seq: u64) -> Result<()> {
        loop {
            if w.done_seq >= seq {
                return Ok(());
            }
            if w.poisoned.is_some() {
                return Err(w.failure_for(seq));
            }
            if !w.leader_active {
                self.lead(&mut w);
                continue;
            }
            // Park outside the lock until the leader finishes. Waking by
            // thread rather than through the mutex lets the acknowledged
            // appenders return in parallel, without taking the lock again.
            // Registered first, then yielding for a while (see
            // `Options::with_group_commit_spin`): a leader's unpark of a
            // thread that is not parked only leaves it a token (no system
            // call), which a later `park` consumes at once.
            let generation = self.commit_generation.load(Ordering::Acquire);
            w.waiters.push(std::thread::current());
            let spin = self.commit_spin(&w);
            drop(w);
            let started = Instant::now();
            while self.commit_generation.load(Ordering::Acquire) == generation && started.elapsed() < spin {
                std::thread::yield_now();
            }
            while self.commit_generation.load(Ordering::Acquire) == generation {
                std::thread::park();
            }
            if self.committed_seq.load(Ordering::Acquire) >= seq {
                return Ok(());
            }
            w = self.writer.lock();
        }
    }

    /// How long a waiter yields before it parks: twice the smoothed sync
    /// time, at most [`COMMIT_SPIN_MICROS_MAX`]; nothing when the option
    /// is off.
    fn commit_spin(&self, w: &WriterState) -> Duration {
        if !self.options.group_commit_spin {
            return Duration::ZERO;
        }
        Duration::from_micros(w.sync_micros_avg.saturating_mul(2).min(COMMIT_SPIN_MICROS_MAX))
    }

    /// Waits until `position` is published (for retries of queued appends).
    fn wait_published(&self, w: &mut MutexGuard<'_, WriterState>, position: u64) -> Result<()> {
        loop {
            if w.published_position >= position {
                return Ok(());
            }
            if let Some(why) = &w.poisoned {
                return Err(Error::Poisoned(why.clone()));
            }
            if w.leader_active {
                self.written.wait(w);
            } else {
                self.lead(w);
            }
        }
    }

    /// Writes everything queued, then publishes it. Called and returns
    /// with the writer lock held. In durable mode it releases the lock
    /// during the write and sync, so that other appends queue up for the
    /// next group. In the other modes the write is a copy into the page
    /// cache and the lock stays held: no append is queued while another
    /// is being written (see [`Core::tracks_pending`]).
    pub(crate) fn lead(&self, w: &mut MutexGuard<'_, WriterState>) {
        w.leader_active = true;
        self.gather(w);
        let spare_queue = std::mem::take(&mut w.spare_queue);
        let chunks = std::mem::replace(&mut w.queue, spare_queue);
        w.last_group_appends = std::mem::take(&mut w.queued_appends);
        debug_assert!(self.tracks_pending() || w.last_group_appends <= 1);
        // Only durable mode gathers, so only it needs the sync's duration.
        let started = (self.options.durability == Durability::Sync).then(Instant::now);
        let outcome = if self.tracks_pending() {
            MutexGuard::unlocked(w, || self.write_chunks(&chunks))
        } else {
            self.write_chunks(&chunks)
        };
        if let Some(started) = started {
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            w.sync_micros_avg = (w.sync_micros_avg * 7 + micros) / 8;
        }
        match outcome {
            Ok(views) => {
                // Counted once written: a failed group wrote nothing.
                w.appends_written += w.last_group_appends as u64;
                w.group_commits += 1;
                self.publish(w, chunks, views);
            }
            Err(e) => {
                w.poison(e.to_string());
                if w.failed_group.is_none() {
                    let last = chunks.iter().map(|c| c.last_seq).max().unwrap_or(0);
                    w.failed_group = Some((last, e));
                }
            }
        }
        w.leader_active = false;
        self.committed_seq.store(w.done_seq, Ordering::Release);
        self.commit_generation.fetch_add(1, Ordering::AcqRel);
        let waiters = std::mem::take(&mut w.waiters);
        self.written.notify_all();
        MutexGuard::unlocked(w, || {
            waiters.iter().for_each(std::thread::Thread::unpark);
            // After the published index was updated: wake subscribers.
            self.subscriptions.notify();
        });
    }

    /// Group commit's gathering step. Appenders run in a closed loop: the
    /// ones acknowledged by the last sync come back a few microseconds
    /// after it, just too late for a leader that starts at once, so groups
    /// would split in two halves that alternate. In durable mode, a leader
    /// whose queue holds fewer appends than the previous group waits for
    /// them, at most half a sync's duration: a short wait that lets one
    /// sync carry the whole group. A lone writer never waits (its previous
    /// group had one append, already queued).
    fn gather(&self, w: &mut MutexGuard<'_, WriterState>) {
        if self.options.durability != Durability::Sync || w.queued_appends >= w.last_group_appends {
            return;
        }
        let wait = Duration::from_micros((w.sync_micros_avg / 2).min(GATHER_WAIT_MICROS_MAX));
        let deadline = Instant::now() + wait;
        if self.options.group_commit_spin {
            // Yield to the appenders on their way, with the lock released
            // for them to queue, rather than sleep until the last one
            // wakes this thread (see `Options::with_group_commit_spin`).
            while w.queued_appends < w.last_group_appends && Instant::now() < deadline {
                MutexGuard::unlocked(w, std::thread::yield_now);
            }
            return;
        }
        w.gathering = true;
        while w.queued_appends < w.last_group_appends {
            if self.arrivals.wait_until(w, deadline).timed_out() {
                break;
            }
        }
        w.gathering = false;
    }

    /// The I/O of a group commit: roll segments as the chunks require,
    /// write each chunk, sync. Returns views to replace or add for readers.
    fn write_chunks(&self, chunks: &[Chunk]) -> Result<Vec<Arc<SegmentView>>> {
        let mut tail = self.tail.lock();
        let mut views = Vec::new();
        // Durable mode keeps write calls (whose errors the fault-injection
        // tests prove are handled); the other modes ack before any sync.
        let mapped = self.options.durability != Durability::Sync;
        // Only durable mode syncs a preallocation step's zeros (so that each
        // append's data sync has no metadata to flush). In the other modes
        // that sync would flush every append written since the last sync
        // while the appender waits; their own syncs (periodic, or
        // `Store::sync`) flush the zeros' length with the data instead.
        let sync_zeros = self.options.durability == Durability::Sync;
        for chunk in chunks {
            if chunk.segment != tail.segment_id {
                debug_assert_eq!(chunk.segment, tail.segment_id + 1);
                let (end, last_crc) =
                    last_batch_before_roll(chunks, tail.segment_id, self.published_end_in(tail.segment_id));
                // No zero written ahead may land after the cut.
                self.spare_segment.claim_zeros(tail.segment_id);
                tail.seal(end)?;
                views.push(Arc::new(SegmentView::new(
                    tail.segment_id,
                    tail.path.clone(),
                    tail.map()?,
                    0,
                )));
                let header = tail.next_header(self.store_id, chunk.first_position, end, last_crc);
                let size = self.options.segment_size_bytes;
                let sync_handle = self.options.durability != Durability::Sync;
                *tail = match self.spare_segment.take() {
                    Some(spare) => LogTail::adopt(&self.fs, &self.dir, header, spare, size, sync_handle)?,
                    None => self.with_room(|| LogTail::create(&self.fs, &self.dir, header, size, sync_handle))?,
                };
                views.push(Arc::new(SegmentView::new(
                    tail.segment_id,
                    tail.path.clone(),
                    tail.map()?,
                    SEGMENT_HEADER_BYTES,
                )));
                // A store that filled one segment is likely to fill the next:
                // its spare is asked for now rather than half-way through,
                // so that a fast writer finds it made.
                self.spare_segment.ask();
            }
            let end = chunk.offset + chunk.bytes.len() as u64;
            if end > tail.allocated {
                // Outside durable mode the background thread writes the next
                // step's zeros ahead (see `log::ahead`): taken back first,
                // so that none lands where this chunk goes.
                let written = if sync_zeros {
                    None
                } else {
                    self.spare_segment.claim_zeros(tail.segment_id)
                };
                if self.with_room(|| tail.ensure_allocated(end, sync_zeros, written.clone()))? {
                    views.push(Arc::new(SegmentView::new(
                        tail.segment_id,
                        tail.path.clone(),
                        tail.map()?,
                        0,
                    )));
                }
                if !sync_zeros && let (Some(next), Some((file, _))) = (tail.next_step(), tail.sync_handle()) {
                    self.spare_segment.zero_ahead(file, tail.segment_id, next);
                }
            }
            if mapped {
                tail.write_mapped(&chunk.bytes, chunk.offset)?;
            } else {
                tail.write(&chunk.bytes, chunk.offset)?;
            }
        }
        if self.options.durability == Durability::Sync {
            tail.sync()?;
        } else if let Some(last) = chunks.last() {
            tail.start_writeback_step(last.offset + last.bytes.len() as u64)?;
        }
        if let Some(last) = chunks.last()
            && last.offset + last.bytes.len() as u64 > self.options.segment_size_bytes / 2
        {
            self.spare_segment.ask();
        }
        if !F::MAP_IS_LIVE {
            views.push(Arc::new(SegmentView::new(
                tail.segment_id,
                tail.path.clone(),
                tail.map()?,
                0,
            )));
        }
        Ok(views)
    }

    /// Runs `grow`, which takes disk space for the log; when the disk is
    /// full, gives the spare segment's space back and tries once more.
    fn with_room<T>(&self, mut grow: impl FnMut() -> Result<T>) -> Result<T> {
        match grow() {
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::StorageFull && self.spare_segment.give_way(&self.fs) =>
            {
                grow()
            }
            outcome => outcome,
        }
    }

    /// End of the published data in `segment` (the header's end when the
    /// published log ends in an earlier segment).
    fn published_end_in(&self, segment: u64) -> (u64, u32) {
        let published = self.published.read();
        if published.end.segment == segment {
            (published.end.offset, published.end.last_batch_crc)
        } else {
            (SEGMENT_HEADER_BYTES, 0)
        }
    }

    /// Makes written chunks visible: segment views first, then the index.
    fn publish(&self, w: &mut WriterState, mut chunks: Vec<Chunk>, views: Vec<Arc<SegmentView>>) {
        {
            let mut segments = self.segments.write();
            for view in views {
                let verified = segments
                    .get(view.id)
                    .map_or(SEGMENT_HEADER_BYTES, |old| old.verified_end());
                let view = SegmentView::new(
                    view.id,
                    view.path.clone(),
                    view.map.clone(),
                    verified.max(view.verified_end()),
                );
                segments.put(Arc::new(view));
            }
            for chunk in &chunks {
                if let Some(view) = segments.get(chunk.segment) {
                    view.advance_verified(chunk.offset, chunk.offset + chunk.bytes.len() as u64);
                }
            }
        }
        let mut published = self.published.write();
        let mut written = 0u64;
        for chunk in &chunks {
            // Each run of one stream's events (a batch's events to one
            // stream are contiguous) is added with one look-up.
            let mut position = chunk.first_position;
            for run in chunk.entries.chunk_by(|a, b| Arc::ptr_eq(&a.stream, &b.stream)) {
                let events = run.iter().map(|e| (e.version, e.location));
                if let Err(reason) = published.index.push_run(&run[0].stream, position, events) {
                    w.poison(format!("internal error: {reason}"));
                    return;
                }
                position += run.len() as u64;
            }
            published.end = LogEnd {
                segment: chunk.segment,
                offset: chunk.offset + chunk.bytes.len() as u64,
                last_batch_crc: chunk.last_batch_crc,
            };
            written += chunk.bytes.len() as u64;
        }
        let last_position = published.index.last_position();
        drop(published);
        w.published_position = last_position;
        w.done_seq = chunks
            .iter()
            .map(|c| c.last_seq)
            .max()
            .unwrap_or(w.done_seq)
            .max(w.done_seq);
        if !w.pending.is_empty() {
            let spare_pending = &mut w.spare_pending;
            w.pending.retain(|_, p| {
                let keep = p.events.last().is_some_and(|&(_, pos)| pos > last_position);
                if !keep && spare_pending.len() < 64 {
                    let mut events = std::mem::take(&mut p.events);
                    events.clear();
                    spare_pending.push(events);
                }
                keep
            });
        }
        for mut chunk in chunks.drain(..) {
            chunk.bytes.clear();
            chunk.entries.clear();
            if w.spare.len() < 4 {
                w.spare.push((chunk.bytes, chunk.entries));
            }
        }
        w.spare_queue = chunks;
        w.bytes_since_checkpoint += written;
        let interval = self
            .options
            .index_checkpoint_bytes
            .max(self.index_file_bytes.load(Ordering::Relaxed));
        if w.bytes_since_checkpoint >= interval {
            w.bytes_since_checkpoint = 0;
            self.request_checkpoint();
        }
    }
}

/// Where `segment`'s last batch ends, and its CRC, when the group's
/// `chunks` roll to the next segment: the last chunk written to it in
/// this group, else what was published (`published`: end and CRC; the
/// segment's header end and 0 when it holds no batch).
fn last_batch_before_roll(chunks: &[Chunk], segment: u64, published: (u64, u32)) -> (u64, u32) {
    chunks
        .iter()
        .filter(|c| c.segment == segment)
        .map(|c| (c.offset + c.bytes.len() as u64, c.last_batch_crc))
        .max_by_key(|&(end, _)| end)
        .unwrap_or(published)
}

/// Reject with the actual version.
/// The id to name in an [`Error::IdempotencyConflict`] found at event
/// `at` of a retry whose event `stored` is known to be stored: `at`'s own
/// id when the recent-id window holds it (it is stored, elsewhere), else
/// `stored`'s (`at` may be new: the error names an id that was written).
fn reused_id(w: &WriterState, at: &EventData, stored: &EventData) -> Uuid {
    if w.window.get(&at.id).is_some() {
        at.id
    } else {
        stored.id
    }
}

fn wrong_version(a: &AppendRef<'_>, version: u64) -> Error {
    Error::WrongExpectedVersion {
        stream: a.stream.to_string(),
        expected: a.expected,
        actual: (version > 0).then_some(version),
    }
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
fn now_micros() -> i64 {
    // Seconds and microseconds apart: `Duration::as_micros` works in 128
    // bits. Seconds since 1970 times a million fit in 63 bits until the
    // year 294,000.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        i64::try_from(d.as_secs())
            .ok()
            .and_then(|s| s.checked_mul(1_000_000))
            .map_or(i64::MAX, |s| s.saturating_add(i64::from(d.subsec_micros())))
    })
}

#[cfg(test)]
mod tests {
    /// Durable mode keeps a view of queued appends; once every append is
    /// published it is empty (else it would grow by every stream ever
    /// appended to, and each entry by its events).
    #[test]
    fn the_pending_view_is_empty_once_everything_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path(), crate::Options::default()).unwrap();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let store = &store;
                scope.spawn(move || {
                    for i in 0..50 {
                        let stream = format!("S-{}", (t + i) % 8);
                        let e = crate::EventData::new("E", "{}");
                        store.append(&stream, crate::ExpectedVersion::Any, [e]).unwrap();
                    }
                });
            }
        });
        let w = store.core().writer.lock();
        assert!(w.pending.is_empty(), "{} streams still pending", w.pending.len());
        assert!(w.spare_pending.len() <= 64);
    }
}
