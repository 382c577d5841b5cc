//! The window of recent event ids that makes retried appends idempotent
//! under `ExpectedVersion::Any` and `StreamExists`.
//!
//! Holds the last `capacity` event ids written (or being written), each
//! with its stream version and global position: about 56 bytes per id
//! (hash-table slot plus the eviction queue). The stream itself is not
//! stored: the stream that holds `position` at `version` is the one the id
//! was written to, and the writer checks that against the index. Rebuilt
//! on open from the log's last `capacity` events, so retries across a
//! restart are detected too.

use std::collections::VecDeque;

use uuid::Uuid;

use crate::hash::{FastMap, map_with_capacity};

/// Where an id was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Its version in its stream.
    pub version: u64,
    /// Its global position.
    pub position: u64,
}

/// A bounded map of recent event ids.
#[derive(Debug, Default)]
pub struct IdWindow {
    capacity: usize,
    ids: FastMap<Uuid, Written>,
    order: VecDeque<Uuid>,
    /// The first position whose id the window holds, when it holds any:
    /// ids are inserted in position order, so it holds every later one.
    floor: Option<u64>,
}

impl IdWindow {
    /// An empty window remembering up to `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        IdWindow {
            capacity,
            ids: map_with_capacity(capacity.min(1 << 20)),
            order: VecDeque::with_capacity(capacity.min(1 << 20)),
            floor: None,
        }
    }

    /// Where `id` was written, when it is still in the window.
    #[inline]
    pub fn get(&self, id: &Uuid) -> Option<Written> {
        self.ids.get(id).copied()
    }

    /// Whether the window holds the id of every event from `position` on,
    /// so that an id it lacks was not written there.
    #[inline]
    pub fn covers(&self, position: u64) -> bool {
        self.floor.is_some_and(|floor| position >= floor)
    }

    /// Remembers an id (of the event after the last one remembered),
    /// forgetting the oldest beyond capacity.
    #[inline]
    pub fn insert(&mut self, id: Uuid, written: Written) {
        if self.capacity == 0 {
            return;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
            && let Some(gone) = self.ids.remove(&old)
        {
            self.floor = Some(gone.position + 1);
        }
        if self.floor.is_none() {
            self.floor = Some(written.position);
        }
        self.ids.insert(id, written);
        self.order.push_back(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest() {
        let mut w = IdWindow::new(2);
        for i in 1..=3u128 {
            let written = Written {
                version: i as u64,
                position: i as u64,
            };
            w.insert(Uuid::from_u128(i), written);
        }
        assert!(w.get(&Uuid::from_u128(1)).is_none());
        assert_eq!(w.get(&Uuid::from_u128(3)).map(|x| x.position), Some(3));
        assert_eq!(w.order.len(), 2);
        assert!(!w.covers(1) && w.covers(2) && w.covers(3));
        assert!(!IdWindow::new(0).covers(1), "an empty window covers nothing");
    }
}
