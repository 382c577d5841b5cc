//! The readers' side of the log: one read-only memory map per segment, and
//! the lazy CRC check that makes every byte handed to a reader verified.
//!
//! Open checks only the log tail it replays. Everything else is checked
//! the first time a reader touches it: each segment keeps a watermark below
//! which all batches have passed their CRCs, and a read past the watermark
//! first checks the batches up to the record it wants. A bit flipped on
//! disk is therefore reported as corruption, never returned as data.
//!
//! Damage stops the watermark, but not the reads of intact events after
//! it: a read past a damaged batch checks the batch of the record it wants
//! on its own (found through the record's back pointer, and accepted only
//! if that batch passes every check and holds the record). The damage and
//! the batches checked past it are remembered (a few runs of batches, each
//! grown by the batch next to it), so that neither is checked again. Only
//! a read of the damaged batch's events fails.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use super::frame::{self, FrameError};
use crate::error::{Error, Result};
use crate::event::RecordedEvent;

/// How many runs of batches checked past damage a segment view keeps
/// (readers in as many places of a damaged segment check each batch once).
const PAST_DAMAGE_RUNS: usize = 8;

/// What a segment view knows past damage that stopped its watermark.
#[derive(Debug, Default)]
struct PastDamage {
    /// Where the damaged batch starts, and what is wrong with it.
    damage: Option<(u64, String)>,
    /// Runs of whole batches checked past it, `start..end`, oldest first.
    runs: Vec<Range<u64>>,
}

/// A readable segment.
#[derive(Debug)]
pub struct SegmentView {
    /// Segment number.
    pub id: u64,
    /// Path of the file (for error messages).
    pub path: PathBuf,
    /// The mapped bytes (the whole file, or its preallocated length).
    pub map: Bytes,
    /// Every batch starting below this offset has passed its CRC check.
    verified_end: AtomicU64,
    /// The damage that stopped `verified_end`, and the batches checked past
    /// it (see [`SegmentView::verify_past_damage`]).
    past_damage: Mutex<PastDamage>,
}

impl SegmentView {
    /// A view whose bytes below `verified_end` are known to be valid.
    pub fn new(id: u64, path: PathBuf, map: Bytes, verified_end: u64) -> Self {
        SegmentView {
            id,
            path,
            map,
            verified_end: AtomicU64::new(verified_end),
            past_damage: Mutex::new(PastDamage::default()),
        }
    }

    /// The verification watermark.
    #[inline]
    pub fn verified_end(&self) -> u64 {
        self.verified_end.load(Ordering::Acquire)
    }

    /// Moves the watermark from exactly `from` to `to`: used by the writer
    /// for bytes it has just written itself, when they follow on directly.
    pub fn advance_verified(&self, from: u64, to: u64) {
        let _ = self
            .verified_end
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Makes sure the batch holding `offset` has been checked.
    #[inline]
    pub fn ensure_verified(&self, offset: u64) -> Result<()> {
        if offset < self.verified_end() {
            return Ok(());
        }
        self.verify_up_to(offset)
    }

    /// Checks the batches from the watermark up to the one holding
    /// `offset` (the first read of those bytes).
    #[cold]
    #[inline(never)]
    fn verify_up_to(&self, offset: u64) -> Result<()> {
        let mut at = self.verified_end();
        {
            // Damage found before stopped the watermark: not checked again.
            let mut past = self.past_damage.lock();
            let past = &mut *past;
            if let Some((damaged, reason)) = &past.damage
                && *damaged == at
            {
                return self.verify_past_damage(offset, at, reason, &mut past.runs);
            }
        }
        while at <= offset {
            match self.check_batch_at(at) {
                Ok(len) => at += len,
                Err(reason) => {
                    self.verified_end.fetch_max(at, Ordering::AcqRel);
                    let mut past = self.past_damage.lock();
                    let past = &mut *past;
                    // (Runs checked past other damage stay valid: each
                    // holds whole batches that passed every check.)
                    let (damaged, reason) = past.damage.insert((at, reason));
                    return self.verify_past_damage(offset, *damaged, reason, &mut past.runs);
                }
            }
        }
        self.verified_end.fetch_max(at, Ordering::AcqRel);
        Ok(())
    }

    /// The mapped bytes from offset `at` on (none past the end).
    fn bytes_from(&self, at: u64) -> &[u8] {
        usize::try_from(at)
            .ok()
            .and_then(|a| self.map.get(a..))
            .unwrap_or_default()
    }

    /// Checks the batch frame at `at`: its length, or what is wrong there.
    fn check_batch_at(&self, at: u64) -> std::result::Result<u64, String> {
        match frame::check_batch(self.bytes_from(at), |_, _| {}) {
            Ok(header) => Ok(u64::from(header.frame_len)),
            Err(FrameError::End) | Err(FrameError::Truncated) => {
                Err("indexed event lies past the end of the log".to_string())
            }
            Err(FrameError::Invalid(reason)) => Err(reason),
        }
    }

    /// Makes sure the batch holding `offset` has been checked, when the
    /// batch at `damaged` (before it) failed its checks for `reason`;
    /// `runs` are the batches checked past it so far.
    ///
    /// The record's batch is found through the record's back pointer and
    /// checked on its own; it must hold a record at exactly `offset`, so
    /// that a damaged back pointer cannot lead to another valid batch (the
    /// record's own CRC covers its back pointer). The batches checked so
    /// are kept as a few runs of whole batches, each grown by the batch
    /// that follows or precedes it, so that readers going either way check
    /// each batch once, and a read costs the check of its own batch at
    /// most, never of the batches between it and an earlier read. Fails
    /// with the damage when the record may lie in the damaged batch, and
    /// with the error of its own batch, named where that batch starts.
    #[cold]
    #[inline(never)]
    fn verify_past_damage(&self, offset: u64, damaged: u64, reason: &str, runs: &mut Vec<Range<u64>>) -> Result<()> {
        let damage = || Error::corruption(&self.path, damaged, reason);
        if runs.iter().any(|r| r.contains(&offset)) {
            return Ok(());
        }
        let Some(start) = frame::parse_record_header(self.bytes_from(offset))
            .and_then(|h| offset.checked_sub(u64::from(h.batch_back)))
            .filter(|&start| start > damaged)
        else {
            return Err(damage());
        };
        let mut holds = false;
        let end = match frame::check_batch(self.bytes_from(start), |record, _| {
            holds |= start + u64::from(record.offset) == offset
        }) {
            Ok(header) if holds => start + u64::from(header.frame_len),
            Ok(_) => return Err(damage()),
            Err(FrameError::Invalid(reason)) => return Err(Error::corruption(&self.path, start, reason)),
            Err(FrameError::End) => {
                return Err(Error::corruption(&self.path, start, "zeros where a batch should start"));
            }
            Err(FrameError::Truncated) => return Err(Error::corruption(&self.path, start, "batch cut short")),
        };
        // The runs it touches (one before, one after: runs never overlap)
        // join it, and the whole becomes the newest run.
        let mut run = start..end;
        runs.retain(|r| {
            let touches = r.end == run.start || r.start == run.end;
            if touches {
                run = run.start.min(r.start)..run.end.max(r.end);
            }
            !touches
        });
        if runs.len() == PAST_DAMAGE_RUNS {
            runs.remove(0);
        }
        runs.push(run);
        Ok(())
    }

    /// Hints the processor to start loading the record header at
    /// `offset` into the cache: a reader that knows which records come next
    /// overlaps their memory latency with the work on the current one.
    #[inline]
    pub fn prefetch(&self, offset: u64) {
        #[cfg(target_arch = "x86_64")]
        if let Some(at) = usize::try_from(offset)
            .ok()
            .filter(|&o| o.saturating_add(frame::RECORD_HEADER_BYTES) <= self.map.len())
        {
            // The header's cache line and the next one: the 40-byte header
            // straddles the two more often than not, and the stream name
            // and event type follow it. (Prefetching only the header's
            // lines reads the 1M events of the read bench 25 % faster, but
            // makes a reader that looks at names 60 % slower.)
            let first = self.map.as_ptr().wrapping_add(at).cast::<i8>();
            let next = first.wrapping_add(64);
            // SAFETY: a prefetch is only a hint. It never faults, even on an
            // invalid address, and changes no memory or register the
            // program can observe. (`next` may point past the map; forming
            // it with `wrapping_add` is defined.)
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(first);
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(next);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = offset;
    }

    /// Reads the (verified) record at `offset` as the event at `position`.
    #[inline]
    pub fn read(&self, offset: u64, position: u64) -> Result<RecordedEvent> {
        self.ensure_verified(offset)?;
        usize::try_from(offset)
            .ok()
            .and_then(|o| frame::decode_checked_record(&self.map, o, position))
            .ok_or_else(|| Error::corruption(&self.path, offset, "index points at no valid record of this position"))
    }

    /// [`SegmentView::read`], building the event only when `keep` accepts
    /// its stream name and event type (see
    /// [`frame::decode_checked_record_if`]): `Ok(None)` for one it turns
    /// away. Damage is an error whatever `keep` would say.
    #[inline]
    pub fn read_if(
        &self,
        offset: u64,
        position: u64,
        keep: impl FnOnce(&[u8], &[u8]) -> bool,
    ) -> Result<Option<RecordedEvent>> {
        self.ensure_verified(offset)?;
        usize::try_from(offset)
            .ok()
            .and_then(|o| frame::decode_checked_record_if(&self.map, o, position, keep))
            .ok_or_else(|| Error::corruption(&self.path, offset, "index points at no valid record of this position"))
    }
}

/// All readable segments, by number.
#[derive(Debug, Default)]
pub struct Segments {
    first_id: u64,
    views: Vec<Arc<SegmentView>>,
}

impl Segments {
    /// Segments numbered from `first_id`, consecutive.
    pub fn new(first_id: u64, views: Vec<Arc<SegmentView>>) -> Self {
        Segments { first_id, views }
    }

    /// The view of segment `id`.
    pub fn get(&self, id: u64) -> Option<&Arc<SegmentView>> {
        let i = usize::try_from(id.checked_sub(self.first_id)?).ok()?;
        self.views.get(i)
    }

    /// Replaces (same id) or appends (next id) a view.
    pub fn put(&mut self, view: Arc<SegmentView>) {
        match id_slot(self.first_id, view.id) {
            Some(i) if i < self.views.len() => self.views[i] = view,
            Some(i) if i == self.views.len() => self.views.push(view),
            _ => debug_assert!(false, "segment {} is not next in line", view.id),
        }
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// All views, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<SegmentView>> {
        self.views.iter()
    }
}

fn id_slot(first: u64, id: u64) -> Option<usize> {
    usize::try_from(id.checked_sub(first)?).ok()
}
