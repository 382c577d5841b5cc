//! Group commit: the appender that finds no write in progress leads one,
//! writing every queued batch with one write call per segment and one
//! sync in all, then publishing them to readers; the others wait for it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::{COMMIT_SPIN_MICROS_MAX, Chunk, GATHER_WAIT_MICROS_MAX, WriterState};
use crate::error::{Error, Result};
use crate::io::{FileHandle, FileSystem, OpenMode};
use crate::log::segment::{self, SEGMENT_HEADER_BYTES};
use crate::log::tail::{LogTail, write_zeros};
use crate::log::view::SegmentView;
use crate::options::Durability;
use crate::recovery::LogEnd;
use crate::store::Core;

impl<F: FileSystem> Core<F> {
    /// Waits until the append with sequence number `seq` is published,
    /// leading the write when nobody else is.
    pub(super) fn wait_seq<'a>(&'a self, mut w: MutexGuard<'a, WriterState>, seq: u64) -> Result<()> {
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
    pub(super) fn wait_published(&self, w: &mut MutexGuard<'_, WriterState>, position: u64) -> Result<()> {
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
            MutexGuard::unlocked(w, || {
                let outcome = self.write_chunks(&chunks);
                if outcome.is_err() {
                    self.unwrite(&chunks);
                }
                outcome
            })
        } else {
            let outcome = self.write_chunks(&chunks);
            if outcome.is_err() {
                let written_end = chunks
                    .iter()
                    .map(|c| (c.segment, c.offset + c.bytes.len() as u64))
                    .max();
                self.write_back_unsynced(written_end);
            }
            outcome
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

    /// After a failed group commit in durable mode: overwrites the group's
    /// bytes with zeros, as far as it can (all but those in a segment the
    /// group sealed: the seal synced them, and the next segment's header
    /// names its last batch). They were never acknowledged (their write or
    /// sync failed), but they may be in the page cache, where the next open
    /// would read them back. Linux marks the pages of a failed write-back
    /// clean, so that open's sync would succeed without writing them: it
    /// would publish events no sync wrote, acknowledge a retry from them,
    /// and lose both at the next power loss. The zeros (dirty pages) end
    /// the log before them for that open, which writes and syncs them. The
    /// other modes write their unsynced bytes back instead (see
    /// [`Core::write_back_unsynced`]): their appends were acknowledged once
    /// copied to the page cache. Errors are ignored: the store is poisoned
    /// either way.
    fn unwrite(&self, chunks: &[Chunk]) {
        // A segment this group sealed was synced whole by its seal, and the
        // next segment's header names its last batch: its chunks stay. The
        // tail moved past it, unless the roll-over failed once the next
        // segment had its name (its directory sync, or opening it): then
        // that file tells, and its header names the batches as much.
        let current = self.tail.lock().segment_id;
        let named_by_next = |segment: u64| self.fs.exists(&self.dir.join(segment::file_name(segment + 1)));
        for chunk in chunks
            .iter()
            .filter(|c| c.segment >= current && !named_by_next(c.segment))
        {
            let path = self.dir.join(segment::file_name(chunk.segment));
            let Ok(file) = self.fs.open(&path, OpenMode::ReadWrite) else {
                continue;
            };
            // Never past the file's end: a segment the group did not reach
            // keeps its length.
            let end = (chunk.offset + chunk.bytes.len() as u64).min(file.len().unwrap_or(0));
            if chunk.offset < end {
                let _ = write_zeros(&file, chunk.offset, end);
            }
        }
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
