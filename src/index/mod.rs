//! The in-memory stream index: stream -> version -> global position, and
//! global position -> log location.
//!
//! Memory: 8 bytes per event in the global location table, 8 bytes per
//! event in its stream's position list, plus the stream's map entry (name,
//! vector header, hash-table slot). `Index::memory_bytes` reports the
//! figure, vector slack included.

pub mod file;

use std::sync::Arc;

use crate::event::category_of;
use crate::hash::{FastMap, map_with_capacity};
use crate::limits;

/// Where an event's record starts in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Segment number.
    pub segment: u64,
    /// Byte offset of the record in that segment file.
    pub offset: u64,
}

const OFFSET_BITS: u32 = 40;

impl Location {
    /// Packs into 64 bits: 24 bits of segment, 40 bits of offset.
    pub fn pack(self) -> u64 {
        debug_assert!(self.segment <= limits::SEGMENTS_MAX);
        debug_assert!(self.offset < limits::SEGMENT_BYTES_MAX);
        (self.segment << OFFSET_BITS) | self.offset
    }

    /// Inverse of [`Location::pack`].
    pub fn unpack(packed: u64) -> Location {
        Location {
            segment: packed >> OFFSET_BITS,
            offset: packed & ((1 << OFFSET_BITS) - 1),
        }
    }
}

/// One stream's entry: the global position of each of its versions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamEntry {
    /// `positions[v - 1]` is the global position of version `v`.
    pub positions: Vec<u64>,
}

impl StreamEntry {
    /// The stream's last version (0 when empty).
    pub fn version(&self) -> u64 {
        self.positions.len() as u64
    }
}

/// The index of everything that is visible to readers.
#[derive(Clone, Debug, Default)]
pub struct Index {
    streams: FastMap<Arc<str>, StreamEntry>,
    categories: FastMap<Arc<str>, Vec<Arc<str>>>,
    /// `locations[p - 1]` is the packed location of position `p`.
    locations: Vec<u64>,
}

impl PartialEq for Index {
    fn eq(&self, other: &Self) -> bool {
        self.streams == other.streams && self.locations == other.locations
    }
}

impl Index {
    /// The last global position (0 when the store is empty).
    pub fn last_position(&self) -> u64 {
        self.locations.len() as u64
    }

    /// Number of streams.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// A stream's entry.
    pub fn stream(&self, name: &str) -> Option<&StreamEntry> {
        self.streams.get(name)
    }

    /// The interned name of a stream, when it exists.
    pub fn stream_key(&self, name: &str) -> Option<Arc<str>> {
        self.streams.get_key_value(name).map(|(k, _)| k.clone())
    }

    /// A stream's last version (0 when it has no events).
    pub fn stream_version(&self, name: &str) -> u64 {
        self.streams.get(name).map_or(0, StreamEntry::version)
    }

    /// Every stream with its entry, in no particular order.
    pub fn streams(&self) -> impl Iterator<Item = (&Arc<str>, &StreamEntry)> {
        self.streams.iter()
    }

    /// The streams of a category.
    pub fn category_streams(&self, category: &str) -> &[Arc<str>] {
        self.categories.get(category).map_or(&[], Vec::as_slice)
    }

    /// The location of a global position.
    pub fn location(&self, position: u64) -> Option<Location> {
        let i = position.checked_sub(1)?;
        self.locations
            .get(usize::try_from(i).ok()?)
            .copied()
            .map(Location::unpack)
    }

    /// The packed location table (for the index file).
    pub fn packed_locations(&self) -> &[u64] {
        &self.locations
    }

    /// Adds the next event. Positions and versions must follow on exactly
    /// from what the index holds; anything else is an error message (the
    /// log contradicts itself).
    pub fn push(&mut self, stream: &str, version: u64, position: u64, location: Location) -> Result<(), String> {
        if position != self.last_position() + 1 {
            return Err(format!(
                "global position {position} does not follow {}",
                self.last_position()
            ));
        }
        let entry = match self.streams.get_mut(stream) {
            Some(entry) => entry,
            None => self.insert_stream(Arc::from(stream)),
        };
        if version != entry.version() + 1 {
            return Err(format!(
                "stream '{stream}' version {version} does not follow {}",
                entry.version()
            ));
        }
        entry.positions.push(position);
        self.locations.push(location.pack());
        Ok(())
    }

    /// Adds a new, empty stream and returns its entry.
    fn insert_stream(&mut self, name: Arc<str>) -> &mut StreamEntry {
        let category = category_of(&name);
        match self.categories.get_mut(category) {
            Some(list) => list.push(name.clone()),
            None => {
                self.categories.insert(Arc::from(category), vec![name.clone()]);
            }
        }
        self.streams.entry(name).or_default()
    }

    /// Builds an index from parts loaded from the index file. The caller
    /// has checked that the positions are consistent; a stream named twice
    /// is an error.
    pub fn from_parts(locations: Vec<u64>, streams: Vec<(Arc<str>, Vec<u64>)>) -> Result<Index, String> {
        let mut index = Index {
            streams: map_with_capacity(streams.len()),
            categories: FastMap::default(),
            locations,
        };
        for (name, positions) in streams {
            let entry = index.insert_stream(name.clone());
            if !entry.positions.is_empty() {
                return Err(format!("stream '{name}' appears twice"));
            }
            entry.positions = positions;
        }
        Ok(index)
    }

    /// Approximate heap bytes used, counting vector capacity and hash-table
    /// slots (not the allocator's own overhead).
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let table_slot = size_of::<Arc<str>>() + size_of::<StreamEntry>() + 1;
        let streams: usize = self
            .streams
            .iter()
            .map(|(name, entry)| name.len() + 16 + entry.positions.capacity() * 8)
            .sum();
        let categories: usize = self
            .categories
            .iter()
            .map(|(name, list)| name.len() + 16 + list.capacity() * size_of::<Arc<str>>())
            .sum();
        let category_slot = size_of::<Arc<str>>() + size_of::<Vec<Arc<str>>>() + 1;
        self.locations.capacity() * 8
            + self.streams.capacity() * table_slot
            + streams
            + self.categories.capacity() * category_slot
            + categories
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_packing() {
        let l = Location {
            segment: limits::SEGMENTS_MAX,
            offset: limits::SEGMENT_BYTES_MAX - 1,
        };
        assert_eq!(Location::unpack(l.pack()), l);
        let l = Location { segment: 1, offset: 64 };
        assert_eq!(Location::unpack(l.pack()), l);
    }

    #[test]
    fn push_enforces_gapless_order() {
        let mut index = Index::default();
        let at = Location { segment: 1, offset: 64 };
        index.push("a-1", 1, 1, at).unwrap();
        index.push("b-1", 1, 2, at).unwrap();
        index.push("a-1", 2, 3, at).unwrap();
        assert!(index.push("a-1", 4, 4, at).is_err());
        assert!(index.push("a-1", 3, 5, at).is_err());
        assert_eq!(index.stream_version("a-1"), 2);
        assert_eq!(index.stream("a-1").unwrap().positions, vec![1, 3]);
        assert_eq!(index.category_streams("a").len(), 1);
        assert_eq!(index.last_position(), 3);
        assert!(index.memory_bytes() > 0);
    }
}
