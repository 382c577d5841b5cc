//! The window of recent event ids that makes retried appends idempotent
//! under `ExpectedVersion::Any` and `StreamExists`.
//!
//! Holds the last `capacity` event ids written (or being written), each
//! with its stream version and global position: about 40 bytes per id
//! (a ring slot plus a hash-table entry). The stream itself is not
//! stored: the stream that holds `position` at `version` is the one the id
//! was written to, and the writer checks that against the index. Rebuilt
//! on open from the log's last `capacity` events, so retries across a
//! restart are detected too.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use uuid::Uuid;

use crate::hash::Hasher;

/// Where an id was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Its version in its stream.
    pub version: u64,
    /// Its global position.
    pub position: u64,
}

/// A bounded map of recent event ids.
///
/// The ids sit in a ring in the order they were written; a hash table
/// holds ring slot numbers. Forgetting the oldest id finds its table entry
/// by slot number, so it touches only the table's 4-byte entries, never a
/// random id: a removal by id cost a cache miss on every append.
#[derive(Debug, Default)]
pub struct IdWindow {
    capacity: usize,
    /// The remembered ids, `capacity` at most; once full, `oldest` is the
    /// slot the next id overwrites.
    ring: Vec<(Uuid, Written)>,
    oldest: usize,
    /// Ring slot of each remembered id, by the id's hash.
    slots: HashTable<u32>,
    hasher: Hasher,
    /// The first position whose id the window holds, when it holds any:
    /// ids are inserted in position order, so it holds every later one.
    floor: Option<u64>,
}

impl IdWindow {
    /// An empty window remembering up to `capacity` ids (at most
    /// `u32::MAX`: 128 GiB of ids).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(u32::MAX as usize);
        IdWindow {
            capacity,
            ring: Vec::with_capacity(capacity.min(1 << 20)),
            oldest: 0,
            slots: HashTable::with_capacity(capacity.min(1 << 20)),
            hasher: Hasher::default(),
            floor: None,
        }
    }

    /// Where `id` was written, when it is still in the window.
    #[inline]
    pub fn get(&self, id: &Uuid) -> Option<Written> {
        let ring = &self.ring;
        let slot = self
            .slots
            .find(self.hasher.hash_one(id), |&s| ring[s as usize].0 == *id)?;
        Some(ring[*slot as usize].1)
    }

    /// Whether the window holds the id of every event from `position` on,
    /// so that an id it lacks was not written there.
    #[inline]
    pub fn covers(&self, position: u64) -> bool {
        self.floor.is_some_and(|floor| position >= floor)
    }

    /// Remembers an id (of the event after the last one remembered),
    /// forgetting the oldest beyond capacity. An id remembered twice is
    /// found at its latest place.
    #[inline]
    pub fn insert(&mut self, id: Uuid, written: Written) {
        if self.capacity == 0 {
            return;
        }
        let IdWindow {
            ring,
            oldest,
            slots,
            hasher,
            floor,
            ..
        } = self;
        let slot = if ring.len() < self.capacity {
            ring.push((id, written));
            ring.len() - 1
        } else {
            let slot = *oldest;
            let (old_id, old) = ring[slot];
            // The entry pointing at this slot, if the id was not written
            // again since (then its entry points at the later slot).
            if let Ok(entry) = slots.find_entry(hasher.hash_one(old_id), |&s| s as usize == slot) {
                entry.remove();
            }
            *floor = Some(old.position + 1);
            ring[slot] = (id, written);
            *oldest = (slot + 1) % self.capacity;
            slot
        };
        if floor.is_none() {
            *floor = Some(written.position);
        }
        let hash = hasher.hash_one(id);
        // `slot` fits: the capacity is at most u32::MAX.
        let number = slot as u32;
        match slots.entry(
            hash,
            |&s| ring[s as usize].0 == id,
            |&s| hasher.hash_one(ring[s as usize].0),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut entry) => *entry.get_mut() = number,
            hashbrown::hash_table::Entry::Vacant(entry) => {
                entry.insert(number);
            }
        }
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
        assert_eq!(w.ring.len(), 2);
        assert!(!w.covers(1) && w.covers(2) && w.covers(3));
        assert!(!IdWindow::new(0).covers(1), "an empty window covers nothing");
    }

    proptest::proptest! {
        /// Against a model that keeps the last `capacity` inserts: an id
        /// is found at its latest place among them, and only there.
        #[test]
        fn matches_the_last_inserts(capacity in 0usize..8, ids in proptest::collection::vec(0u128..12, 0..64)) {
            let mut w = IdWindow::new(capacity);
            let mut inserted = Vec::new();
            for (position, id) in ids.into_iter().enumerate() {
                let written = Written { version: id as u64, position: position as u64 };
                w.insert(Uuid::from_u128(id), written);
                inserted.push((id, written));
                let kept = &inserted[inserted.len().saturating_sub(capacity)..];
                for probe in 0u128..12 {
                    let expected = kept.iter().rev().find(|(k, _)| *k == probe).map(|(_, at)| *at);
                    proptest::prop_assert_eq!(w.get(&Uuid::from_u128(probe)), expected);
                }
                let distinct: std::collections::HashSet<u128> = kept.iter().map(|(k, _)| *k).collect();
                proptest::prop_assert_eq!(w.slots.len(), distinct.len(), "forgotten ids leave the table");
                let floor = kept.first().map(|(_, at)| at.position);
                proptest::prop_assert_eq!(w.floor, floor);
            }
        }
    }
}
