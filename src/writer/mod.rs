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
//! The parts: `validate.rs` checks an append before any lock is taken,
//! `decide.rs` checks expected versions and finds retries under the
//! writer lock, this file queues the encoded batch, and `commit.rs` leads
//! and waits for group commits.
//!
//! Invariants:
//! - readers see a batch only after it is written (and, in durable mode,
//!   synced), and see batches in log order;
//! - after a failed write or sync the store is poisoned: nothing more is
//!   acknowledged until it is reopened (a retried fsync can lie).

mod commit;
mod decide;
mod validate;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{AppendResult, EventData, ExpectedVersion, StreamAppend};
use crate::hash::FastMap;
use crate::idempotency::{IdWindow, Written};
use crate::index::Location;
use crate::io::FileSystem;
use crate::limits;
use crate::log::frame::{self, BATCH_HEADER_BYTES, RecordInput};
use crate::log::segment::SEGMENT_HEADER_BYTES;
use crate::one_or_many::OneOrMany;
use crate::options::Durability;
use crate::recovery::LogEnd;
use crate::store::Core;
use decide::Decision;
pub(crate) use validate::{validate, validate_category, validate_event_type, validate_stream_name};

/// Longest a group-commit leader waits for more appends to join.
const GATHER_WAIT_MICROS_MAX: u64 = 500;

/// Longest an appender yields, waiting for another thread's group commit,
/// before it parks (see `Options::with_group_commit_spin`).
const COMMIT_SPIN_MICROS_MAX: u64 = 1_000;

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
    /// A snapshot past its stream's last event (file, and why appends are
    /// refused), found at open; see [`crate::snapshot::guard_appends`].
    snapshot_ahead: Option<(std::path::PathBuf, String)>,
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
            snapshot_ahead: None,
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

    /// Refuses appends (with this corruption) while a snapshot is past its
    /// stream's last event, or accepts them again (`None`).
    pub(crate) fn set_snapshot_ahead(&mut self, ahead: Option<(std::path::PathBuf, String)>) {
        self.snapshot_ahead = ahead;
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        if let Some(why) = &self.poisoned {
            return Err(Error::Poisoned(why.clone()));
        }
        if let Some((file, why)) = self.checkpoint_ahead.as_ref().or(self.snapshot_ahead.as_ref()) {
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
        let (results, seq) = self.enqueue(&mut w, appends, &decisions)?;
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

    /// Assigns versions and positions, encodes the batch into the queue
    /// and updates the queued-state view. Returns the results and the
    /// sequence number to wait for; fails, with nothing changed, when the
    /// batch needs a segment past [`limits::SEGMENTS_MAX`].
    fn enqueue(
        &self,
        w: &mut WriterState,
        appends: &[AppendRef<'_>],
        decisions: &[Decision],
    ) -> Result<(OneOrMany<AppendResult>, u64)> {
        let size: usize = BATCH_HEADER_BYTES
            + appends
                .iter()
                .flat_map(|a| a.events.iter().map(|e| frame::record_len(a.stream, e)))
                .sum::<usize>();
        if w.tail_offset + size as u64 > self.options.segment_size_bytes && w.tail_offset > SEGMENT_HEADER_BYTES {
            if w.tail_segment >= limits::SEGMENTS_MAX {
                return Err(Error::StoreFull {
                    limit: limits::SEGMENTS_MAX,
                });
            }
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
            return Ok((results, seq));
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
        Ok((results, seq))
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
    use std::sync::Arc;

    use uuid::Uuid;

    use super::PendingStream;
    use crate::{Error, EventData, ExpectedVersion, Options, Store, limits};

    /// The version limit is checked under the writer lock, on the
    /// stream's version with queued appends included, for every kind of
    /// expected version, before anything is queued. (A stream of 2^32
    /// events is out of a test's reach: its queued view is set to one
    /// short of the limit instead.)
    #[test]
    fn an_append_past_the_highest_stream_version_is_refused_with_nothing_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        store
            .append("S-1", ExpectedVersion::Any, [EventData::new("E", "{}")])
            .unwrap();
        let max = limits::STREAM_VERSION_MAX;
        let name: Arc<str> = Arc::from("S-1");
        let near_the_end = PendingStream {
            name: name.clone(),
            version: max - 1,
            events: vec![(Uuid::from_u128(7), 1)],
        };
        store.core().writer.lock().pending.insert(name, near_the_end);
        for expected in [
            ExpectedVersion::Any,
            ExpectedVersion::StreamExists,
            ExpectedVersion::Exact(max - 1),
        ] {
            let two = [EventData::new("E", "{}"), EventData::new("E", "{}")];
            let err = store.append("S-1", expected, two).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput(m) if m.contains("highest stream version")),
                "{expected:?}: {err}"
            );
        }
        let mut w = store.core().writer.lock();
        w.pending.clear();
        assert_eq!((w.next_position, w.next_seq), (2, 1), "something was queued");
        drop(w);
        let r = store
            .append("S-1", ExpectedVersion::Exact(1), [EventData::new("E", "{}")])
            .unwrap();
        assert_eq!((r.first_version, r.first_position), (2, 2));
    }

    /// An append that needs a segment numbered past the limit fails with
    /// `StoreFull` and queues nothing: the same append succeeds once a
    /// number is free. (The writer's idea of the tail's number is set to
    /// the limit for that one append: 2^24 segment files are out of a
    /// test's reach.)
    #[test]
    fn an_append_needing_a_segment_past_the_limit_is_refused_with_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default().with_segment_size_bytes(4096);
        let store = Store::open(dir.path(), options.clone()).unwrap();
        let big = || EventData::new("E", vec![b'x'; 2500]);
        store.append("S-1", ExpectedVersion::Any, [big()]).unwrap();
        let real = std::mem::replace(&mut store.core().writer.lock().tail_segment, limits::SEGMENTS_MAX);
        let err = store.append("S-1", ExpectedVersion::Exact(1), [big()]).unwrap_err();
        assert!(
            matches!(err, Error::StoreFull { limit } if limit == limits::SEGMENTS_MAX),
            "{err}"
        );
        let mut w = store.core().writer.lock();
        assert_eq!((w.next_position, w.next_seq), (2, 1), "something was queued");
        w.tail_segment = real;
        drop(w);
        let small = store.append("S-1", ExpectedVersion::Exact(1), [EventData::new("E", "{}")]);
        assert_eq!(small.unwrap().first_version, 2);
        store.append("S-1", ExpectedVersion::Exact(2), [big()]).unwrap();
        assert_eq!(store.last_position(), 3);
        store.close().unwrap();
        let store = Store::open(dir.path(), options).unwrap();
        let versions: Vec<u64> = store
            .read_stream("S-1", crate::ReadStream::forward())
            .unwrap()
            .map(|e| e.unwrap().version())
            .collect();
        assert_eq!(versions, [1, 2, 3]);
    }

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
