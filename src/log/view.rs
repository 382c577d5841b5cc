//! The readers' side of the log: one read-only memory map per segment, and
//! the lazy CRC check that makes every byte handed to a reader verified.
//!
//! Open checks only the log tail it replays. Everything else is checked
//! the first time a reader touches it: each segment keeps a watermark below
//! which all batches have passed their CRCs, and a read past the watermark
//! first checks the batches up to the record it wants. A bit flipped on
//! disk is therefore reported as corruption, never returned as data.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::frame::{self, FrameError};
use crate::error::{Error, Result};
use crate::event::RecordedEvent;

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
}

impl SegmentView {
    /// A view whose bytes below `verified_end` are known to be valid.
    pub fn new(id: u64, path: PathBuf, map: Bytes, verified_end: u64) -> Self {
        SegmentView {
            id,
            path,
            map,
            verified_end: AtomicU64::new(verified_end),
        }
    }

    /// The verification watermark.
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
        while at <= offset {
            let rest = usize::try_from(at)
                .ok()
                .and_then(|a| self.map.get(a..))
                .unwrap_or_default();
            match frame::check_batch(rest, |_, _| {}) {
                Ok(header) => at += u64::from(header.frame_len),
                Err(FrameError::End) | Err(FrameError::Truncated) => {
                    return Err(Error::corruption(
                        &self.path,
                        at,
                        "indexed event lies past the end of the log",
                    ));
                }
                Err(FrameError::Invalid(reason)) => return Err(Error::corruption(&self.path, at, reason)),
            }
        }
        self.verified_end.fetch_max(at, Ordering::AcqRel);
        Ok(())
    }

    /// Reads the (verified) record at `offset` as the event at `position`.
    pub fn read(&self, offset: u64, position: u64) -> Result<RecordedEvent> {
        self.ensure_verified(offset)?;
        usize::try_from(offset)
            .ok()
            .and_then(|o| frame::decode_checked_record(&self.map, o, position))
            .ok_or_else(|| Error::corruption(&self.path, offset, "index points at no valid record"))
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
