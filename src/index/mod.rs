//! The in-memory stream index: stream -> version -> global position, and
//! global position -> log location.
//!
//! Memory: 8 bytes per event in the global location table, 4 bytes per
//! event in its stream's position list (8 once a stream holds a position
//! past 2^32; none of its own for a stream of up to five events, held in
//! the entry), plus per stream its name, a 48-byte entry in the list of
//! streams, an 8-byte slot in a hash table of stream numbers (the number
//! and the stream's last position, see `Slot`), and a 4-byte number in
//! its category's list. The tables grow by a fraction of
//! their size rather than by doubling, which bounds the slack to an
//! eighth (locations, streams) and a half (positions, categories). What
//! was loaded from the index file stays in that file's read-only mapping
//! instead (8 bytes per event in each table, page-cache memory).
//! `Index::memory_bytes` reports the figure, slack and mapped bytes
//! included.

pub mod file;
mod locations;
mod stream;

pub use locations::LocationTable;
pub use stream::{Stream, StreamEntry};

use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;
use hashbrown::HashTable;

use crate::event::category_of;
use crate::hash::{FastMap, Hasher};
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
    /// Packs into 64 bits: 24 bits of segment, 40 bits of offset. Only a
    /// location within [`limits::SEGMENTS_MAX`] and
    /// [`limits::SEGMENT_BYTES_MAX`] (every location the store makes)
    /// packs reversibly; outside them, bits are lost (checked in debug
    /// builds only: this is on every append's path).
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

/// A slot of the index's table of stream numbers: the stream's number,
/// and the position of its last event while it fits in 32 bits (0 when it
/// does not, when the stream has none, and for a stream loaded from the
/// index file until its next append). An append reads the slot while it
/// looks the stream up, so it learns the stream's last position without
/// reading the stream's positions, a cache miss in a store of many
/// streams (see `Index::stream_key`).
#[derive(Clone, Copy, Debug)]
struct Slot {
    id: u32,
    last: u32,
}

impl Slot {
    /// The `last` field for a stream whose last position is `position`:
    /// the position while it fits in 32 bits, else 0 (unknown).
    fn last_of(position: u64) -> u32 {
        u32::try_from(position).unwrap_or(0)
    }
}

/// The bytes of a hashbrown table holding `capacity` items of `item`
/// bytes: a power of two of buckets (capacity is 7/8 of them from 8
/// buckets up), each with a control byte, and 16 more control bytes.
fn hash_table_bytes(capacity: usize, item: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity.saturating_mul(8) / 7).next_power_of_two()
    };
    buckets * (item + 1) + 16
}

/// Pushes onto `v`, growing a full vector by `1 / shrink` of its length
/// (at least 4 elements) instead of doubling it.
fn push_grow<T>(v: &mut Vec<T>, value: T, shrink: usize) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / shrink).max(4));
    }
    v.push(value);
}

/// The index of everything that is visible to readers.
#[derive(Clone, Debug, Default)]
pub struct Index {
    /// Every stream, in the order it was added (for a loaded index, the
    /// index file's order first): its interned name and its positions. A
    /// stream's number is its place here. The order is stable, to walk
    /// the streams in slices while streams are added (see
    /// [`file::encode_sliced`]).
    entries: Vec<(Arc<str>, StreamEntry)>,
    /// Stream numbers, found by the hash of the name: 8 bytes per slot
    /// instead of a map's name and entry (see "Memory" above).
    ids: HashTable<Slot>,
    hasher: Hasher,
    /// Each category's stream numbers, in the order the streams were added.
    categories: FastMap<Arc<str>, Vec<u32>>,
    /// Entry `p - 1` is the packed location of position `p`.
    locations: LocationTable,
    /// The index file's bytes that loaded streams' positions refer to
    /// (empty unless loaded from an index file).
    loaded: Bytes,
}

impl PartialEq for Index {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self.locations == other.locations
            && self.streams().all(|(name, s)| other.stream(name) == Some(s))
    }
}

impl Index {
    /// The last global position (0 when the store is empty).
    #[inline]
    pub fn last_position(&self) -> u64 {
        self.locations.len() as u64
    }

    /// Number of streams.
    pub fn stream_count(&self) -> usize {
        self.entries.len()
    }

    /// The number of the stream named `name`.
    #[inline]
    fn find(&self, name: &str) -> Option<usize> {
        self.find_slot(self.hasher.hash_one(name), name).map(|s| s.id as usize)
    }

    /// The slot of the stream named `name`, whose hash is `hash`.
    #[inline]
    fn find_slot(&self, hash: u64, name: &str) -> Option<Slot> {
        let entries = &self.entries;
        self.ids
            .find(hash, |s| entries.get(s.id as usize).is_some_and(|(n, _)| **n == *name))
            .copied()
    }

    /// Records in stream `id`'s slot (hash `hash`) the position of its
    /// last event, now `last`.
    fn set_last(&mut self, hash: u64, id: usize, last: u64) {
        if let Some(slot) = self.ids.find_mut(hash, |s| s.id as usize == id) {
            slot.last = Slot::last_of(last);
        }
    }

    /// The stream numbered `id`, with its name.
    #[inline]
    fn at(&self, id: usize) -> Option<(&Arc<str>, Stream<'_>)> {
        let loaded = &self.loaded;
        self.entries
            .get(id)
            .map(|(name, entry)| (name, Stream { entry, loaded }))
    }

    /// A stream's positions.
    #[inline]
    pub fn stream(&self, name: &str) -> Option<Stream<'_>> {
        self.at(self.find(name)?).map(|(_, s)| s)
    }

    /// The interned name of a stream, its last version and that version's
    /// position, when the stream exists.
    #[inline]
    pub fn stream_key(&self, name: &str) -> Option<(Arc<str>, u64, Option<u64>)> {
        let slot = self.find_slot(self.hasher.hash_one(name), name)?;
        self.at(slot.id as usize).map(|(k, s)| {
            let last = match slot.last {
                // Past 32 bits, an empty stream, or loaded and not appended
                // to since: from the positions.
                0 => s.last(),
                // Known without reading the stream's positions, whose end
                // an append of this stream will write: fetched meanwhile.
                last => {
                    s.entry.prefetch_end();
                    Some(u64::from(last))
                }
            };
            (k.clone(), s.version(), last)
        })
    }

    /// A stream's last version (0 when it has no events).
    #[inline]
    pub fn stream_version(&self, name: &str) -> u64 {
        self.stream(name).map_or(0, |s| s.version())
    }

    /// Every stream with its entry, in the order the streams were added
    /// (for a loaded index, the index file's order first).
    pub fn streams(&self) -> impl Iterator<Item = (&Arc<str>, Stream<'_>)> {
        let loaded = &self.loaded;
        self.entries
            .iter()
            .map(move |(name, entry)| (name, Stream { entry, loaded }))
    }

    /// The `i`-th stream in the order of [`Index::streams`], for walking
    /// them in slices while streams are added (a stream keeps its place).
    pub fn stream_in_order(&self, i: usize) -> Option<(&Arc<str>, Stream<'_>)> {
        self.at(i)
    }

    /// The streams of a category, in the order they were added.
    pub fn category_streams(&self, category: &str) -> impl Iterator<Item = (&Arc<str>, Stream<'_>)> {
        self.category_streams_in(category, 0..usize::MAX)
    }

    /// Number of streams of a category.
    pub fn category_stream_count(&self, category: &str) -> usize {
        self.categories.get(category).map_or(0, Vec::len)
    }

    /// The streams of a category numbered `range` in the order of
    /// [`Index::category_streams`] (clamped to the category), for walking
    /// them in slices while streams are added (a stream keeps its place).
    pub fn category_streams_in(
        &self,
        category: &str,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (&Arc<str>, Stream<'_>)> {
        let ids = self.categories.get(category).map_or(&[][..], Vec::as_slice);
        let end = range.end.min(ids.len());
        ids[range.start.min(end)..end]
            .iter()
            .filter_map(|&id| self.at(id as usize))
    }

    /// The streams of a category with the given numbers in the order of
    /// [`Index::category_streams`] (`None` for a number past the
    /// category's streams), the category looked up once for all of them.
    pub fn category_streams_numbered<'a>(
        &'a self,
        category: &str,
        numbers: impl IntoIterator<Item = usize> + 'a,
    ) -> impl Iterator<Item = Option<Stream<'a>>> + 'a {
        let ids = self.categories.get(category).map_or(&[][..], Vec::as_slice);
        numbers
            .into_iter()
            .map(move |n| ids.get(n).and_then(|&id| self.at(id as usize)).map(|(_, entry)| entry))
    }

    /// The location of a global position.
    pub fn location(&self, position: u64) -> Option<Location> {
        let i = position.checked_sub(1)?;
        self.locations.get(usize::try_from(i).ok()?).map(Location::unpack)
    }

    /// The packed location table.
    pub fn locations(&self) -> &LocationTable {
        &self.locations
    }

    /// Adds the next event. Positions and versions must follow on exactly
    /// from what the index holds; anything else is an error message (the
    /// log contradicts itself).
    pub fn push(&mut self, stream: &str, version: u64, position: u64, location: Location) -> Result<(), String> {
        self.push_run(stream, position, [(version, location)])
    }

    /// Adds the next events, all of one stream, from global position
    /// `position` on: one look-up of the stream for them all. Each
    /// version and position must follow on exactly, as in
    /// [`Index::push`]; on an error, the events before the wrong one stay.
    pub fn push_run(
        &mut self,
        stream: &str,
        position: u64,
        events: impl IntoIterator<Item = (u64, Location)>,
    ) -> Result<(), String> {
        if position != self.last_position() + 1 {
            return Err(format!(
                "global position {position} does not follow {}",
                self.last_position()
            ));
        }
        let hash = self.hasher.hash_one(stream);
        let id = match self.find_slot(hash, stream) {
            Some(slot) => slot.id as usize,
            None => self.insert_stream(Arc::from(stream))?,
        };
        let Index { entries, locations, .. } = self;
        let entry = &mut entries[id].1;
        let mut outcome = Ok(());
        for (version, location) in events {
            let current = entry.len() as u64;
            if version != current + 1 {
                outcome = Err(format!("stream '{stream}' version {version} does not follow {current}"));
                break;
            }
            entry.push(locations.len() as u64 + 1);
            locations.push(location.pack());
        }
        if position <= self.last_position() {
            self.set_last(hash, id, self.last_position());
        }
        outcome
    }

    /// Adds a new, empty stream (not yet in the index) and returns its
    /// number.
    fn insert_stream(&mut self, name: Arc<str>) -> Result<usize, String> {
        let id = self.entries.len();
        let id32 = u32::try_from(id).map_err(|_| format!("more than {} streams", u32::MAX))?;
        let category = category_of(&name);
        match self.categories.get_mut(category) {
            Some(list) => push_grow(list, id32, 2),
            None => {
                self.categories.insert(Arc::from(category), vec![id32]);
            }
        }
        let hash = self.hasher.hash_one(&*name);
        // Grown by an eighth: a large vector is moved by remapping, not
        // copying, and the slack stays small (see "Memory" above).
        push_grow(&mut self.entries, (name, StreamEntry::default()), 8);
        let Index {
            entries, ids, hasher, ..
        } = self;
        let rehash = |s: &Slot| entries.get(s.id as usize).map_or(0, |(n, _)| hasher.hash_one(&**n));
        ids.insert_unique(hash, Slot { id: id32, last: 0 }, rehash);
        Ok(id)
    }

    /// Builds an index from parts loaded from the index file; `loaded` is
    /// the bytes that entries made by [`StreamEntry::from_le_bytes`] refer
    /// to. The caller has checked that the positions are consistent; a
    /// stream named twice is an error.
    pub fn from_parts(
        locations: LocationTable,
        streams: Vec<(Arc<str>, StreamEntry)>,
        loaded: Bytes,
    ) -> Result<Index, String> {
        let mut index = Index {
            entries: Vec::with_capacity(streams.len()),
            ids: HashTable::with_capacity(streams.len()),
            hasher: Hasher::default(),
            categories: FastMap::default(),
            locations,
            loaded,
        };
        for (name, decoded) in streams {
            if index.find(&name).is_some() {
                return Err(format!("stream '{name}' appears twice"));
            }
            // The slot's last position stays unknown (0) until the
            // stream's next append: reading every stream's last position
            // here would touch the whole file at open.
            let id = index.insert_stream(name)?;
            index.entries[id].1 = decoded;
        }
        Ok(index)
    }

    /// Approximate heap bytes used, counting vector capacity and hash-table
    /// slots (not the allocator's own overhead).
    pub fn memory_bytes(&self) -> usize {
        self.shared_memory_bytes() + self.streams_memory_bytes(0..self.entries.len()).0
    }

    /// Of [`Index::memory_bytes`], the bytes read in place from the index
    /// file's mapping (page cache the system can reclaim and read again)
    /// rather than allocated.
    pub fn mapped_bytes(&self) -> usize {
        self.shared_mapped_bytes() + self.streams_memory_bytes(0..self.entries.len()).1
    }

    /// The part of [`Index::memory_bytes`] that is not each stream's own:
    /// the location table, the stream list's and tables' slots, and the
    /// categories.
    pub fn shared_memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let categories: usize = self
            .categories
            .iter()
            .map(|(name, list)| name.len() + 16 + list.capacity() * size_of::<u32>())
            .sum();
        let category_slot = size_of::<Arc<str>>() + size_of::<Vec<u32>>() + 1;
        self.locations.memory_bytes()
            + self.entries.capacity() * size_of::<(Arc<str>, StreamEntry)>()
            + hash_table_bytes(self.ids.capacity(), size_of::<Slot>())
            + self.categories.capacity() * category_slot
            + categories
    }

    /// The part of [`Index::mapped_bytes`] that is not each stream's own.
    pub fn shared_mapped_bytes(&self) -> usize {
        self.locations.mapped_bytes()
    }

    /// The memory and mapped bytes of the streams numbered `range` in the
    /// order of [`Index::streams`] (clamped), for summing them in slices.
    pub fn streams_memory_bytes(&self, range: std::ops::Range<usize>) -> (usize, usize) {
        let end = range.end.min(self.entries.len());
        self.entries[range.start.min(end)..end]
            .iter()
            .fold((0, 0), |(memory, mapped), (name, entry)| {
                (
                    memory + name.len() + 16 + entry.heap_bytes(),
                    mapped + entry.mapped_bytes(),
                )
            })
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

    /// `positions` as the index file holds them: little-endian `u64`s.
    pub(super) fn le(positions: &[u64]) -> Vec<u8> {
        positions.iter().flat_map(|p| p.to_le_bytes()).collect()
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
        assert_eq!(index.stream("a-1").unwrap().iter().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(index.category_streams("a").count(), 1);
        assert_eq!(index.last_position(), 3);
        assert!(index.memory_bytes() > 0);
        // Summed in slices of streams (as `Store::stats` does), the same.
        let slices = [0..1, 1..2, 2..usize::MAX].map(|r| index.streams_memory_bytes(r));
        let memory: usize = slices.iter().map(|s| s.0).sum();
        let mapped: usize = slices.iter().map(|s| s.1).sum();
        assert_eq!(index.shared_memory_bytes() + memory, index.memory_bytes());
        assert_eq!(index.shared_mapped_bytes() + mapped, index.mapped_bytes());
        assert_eq!(index.streams_memory_bytes(5..9), (0, 0));
    }

    #[test]
    fn a_run_is_checked_event_by_event() {
        let mut index = Index::default();
        let at = |offset| Location { segment: 1, offset };
        index.push_run("a-1", 1, [(1, at(64)), (2, at(128))]).unwrap();
        index.push_run("b-1", 3, [(1, at(192))]).unwrap();
        assert!(index.push_run("a-1", 5, [(3, at(256))]).is_err(), "a gap in positions");
        // The third event skips version 4: the two before it stay.
        assert!(
            index
                .push_run("a-1", 4, [(3, at(256)), (4, at(320)), (6, at(384))])
                .is_err()
        );
        assert_eq!(
            index.stream("a-1").unwrap().iter().collect::<Vec<_>>(),
            vec![1, 2, 4, 5]
        );
        assert_eq!(index.last_position(), 5);
        assert_eq!(index.location(5), Some(at(320)));
    }

    /// A stream is found by its whole name only, never by a prefix of it,
    /// whatever the (randomly seeded) hashes: names long enough that many
    /// prefixes share a probe group with them.
    #[test]
    fn streams_are_found_by_their_whole_name_only() {
        let at = Location { segment: 1, offset: 64 };
        for round in 0..20 {
            let mut index = Index::default();
            let names: Vec<String> = (0..3).map(|k| format!("{k}-{}", "x".repeat(240 - round))).collect();
            for (i, name) in (1u64..).zip(&names) {
                index.push(name, 1, i, at).unwrap();
            }
            for (i, name) in (1u64..).zip(&names) {
                assert_eq!(index.stream(name).and_then(|s| s.get(0)), Some(i));
                for end in 1..name.len() {
                    assert!(index.stream(&name[..end]).is_none(), "{}", &name[..end]);
                }
            }
            // Categories list each stream once, in order.
            assert_eq!(index.category_streams("0").count(), 1);
        }
    }

    /// `stream_key` gives each stream's last position, which appends take
    /// from the stream's slot while it fits in 32 bits: after every push,
    /// after a run cut short by a wrong version, and for streams loaded
    /// from parts (inline, vector, in place and past 32 bits).
    #[test]
    fn stream_key_gives_the_last_position() {
        let at = Location { segment: 1, offset: 64 };
        let mut index = Index::default();
        let names = ["a-1", "b-1", "c-1"];
        let check = |index: &Index| {
            for name in names {
                let Some((key, version, last)) = index.stream_key(name) else {
                    continue;
                };
                let stream = index.stream(name).unwrap();
                assert_eq!(&*key, name);
                assert_eq!(version, stream.version());
                assert_eq!(last, stream.last(), "{name}");
                assert_eq!(last, stream.iter().last());
            }
        };
        let mut rng = 7u64;
        for _ in 0..200 {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let name = names[(rng >> 33) as usize % names.len()];
            let run = 1 + (rng >> 40) % 4;
            let version = index.stream_version(name);
            let position = index.last_position() + 1;
            index
                .push_run(name, position, (1..=run).map(|k| (version + k, at)))
                .unwrap();
            check(&index);
        }
        // A run cut short: its events before the wrong version stay, and
        // the last of them is the stream's last.
        let version = index.stream_version("a-1");
        let position = index.last_position() + 1;
        assert!(
            index
                .push_run("a-1", position, [(version + 1, at), (version + 3, at)])
                .is_err()
        );
        assert_eq!(index.stream_key("a-1").unwrap().2, Some(position));
        check(&index);

        let wide = 1u64 << 33;
        let raw = le(&[3, 4, 5, 6, 7, 8, 9]);
        let streams = vec![
            (Arc::from("a-1"), StreamEntry::from_positions(vec![1, 2])),
            (Arc::from("b-1"), StreamEntry::from_positions(vec![10, wide])),
            (Arc::from("c-1"), StreamEntry::from_le_bytes(&raw, 0, 7)),
        ];
        let table = LocationTable::from_vec(vec![64; 10]);
        let index = Index::from_parts(table, streams, Bytes::from(raw.clone())).unwrap();
        assert_eq!(index.stream_key("a-1").unwrap().2, Some(2));
        assert_eq!(index.stream_key("b-1").unwrap().2, Some(wide));
        assert_eq!(index.stream_key("c-1").unwrap().2, Some(9));
        check(&index);
    }

    /// A run refused at its first event pushes nothing: the stream's slot
    /// keeps its own last position, not the log's.
    #[test]
    fn a_run_refused_at_its_first_event_leaves_the_slot() {
        let at = Location { segment: 1, offset: 64 };
        let mut index = Index::default();
        index.push("a-1", 1, 1, at).unwrap();
        index.push("b-1", 1, 2, at).unwrap();
        assert!(index.push_run("a-1", 3, [(3, at)]).is_err());
        assert_eq!(index.stream_key("a-1").unwrap().2, Some(1));
        assert_eq!(index.stream_key("b-1").unwrap().2, Some(2));
    }

    /// An append records its stream's last position in the stream's slot
    /// (which spares `stream_key` reading the positions); a stream loaded
    /// from the index file learns it at its next append; a position past
    /// 32 bits is recorded as unknown, never truncated.
    #[test]
    fn appends_fill_the_slot() {
        let slot = |index: &Index, name: &str| index.find_slot(index.hasher.hash_one(name), name).unwrap().last;
        let at = Location { segment: 1, offset: 64 };
        let streams = vec![(Arc::from("a-1"), StreamEntry::from_positions(vec![1, 2]))];
        let mut index = Index::from_parts(LocationTable::from_vec(vec![64, 64]), streams, Bytes::new()).unwrap();
        assert_eq!(slot(&index, "a-1"), 0);
        index.push_run("a-1", 3, [(3, at), (4, at)]).unwrap();
        index.push("b-1", 1, 5, at).unwrap();
        assert_eq!((slot(&index, "a-1"), slot(&index, "b-1")), (4, 5));
        assert!(index.push_run("a-1", 6, [(5, at), (7, at)]).is_err());
        assert_eq!(slot(&index, "a-1"), 6);
        let max = u64::from(u32::MAX);
        assert_eq!(Slot::last_of(max), u32::MAX);
        assert_eq!(Slot::last_of(max + 1), 0);
        assert_eq!(Slot::last_of(max + 2), 0);
        assert_eq!(Slot::last_of(2 * max + 3), 0);
    }

    /// Appends as the log crosses 2^32 events (the location table of the
    /// events before it read from a sparse file): a slot whose stream's
    /// last position no longer fits in 32 bits falls back to the positions,
    /// never holds a truncated or stale one. Ignored by default: it maps a
    /// 32 GiB sparse file and reserves 4 GiB of address space for the
    /// table's growth (few pages are touched; about 0.1 s). Run it with
    /// `cargo test --release --lib slots_across_32_bits -- --ignored`.
    #[test]
    #[ignore = "maps a 32 GiB sparse file and reserves 4 GiB of address space"]
    #[cfg(all(unix, target_pointer_width = "64"))]
    fn slots_across_32_bits() {
        let loaded: u64 = (1 << 32) - 2;
        let file = tempfile::tempfile().unwrap();
        file.set_len(loaded * 8).unwrap();
        // SAFETY: a private temporary file that nothing else changes.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let table = LocationTable::from_le_bytes(Bytes::from_owner(map));
        assert_eq!(table.len() as u64, loaded);
        let streams = vec![
            (Arc::from("a-1"), StreamEntry::from_positions(vec![1, 2])),
            (Arc::from("b-1"), StreamEntry::from_positions(vec![loaded])),
        ];
        let mut index = Index::from_parts(table, streams, Bytes::new()).unwrap();
        let at = Location { segment: 9, offset: 64 };
        let check = |index: &Index| {
            for name in ["a-1", "b-1", "c-1"] {
                let Some((_, version, last)) = index.stream_key(name) else {
                    continue;
                };
                let stream = index.stream(name).unwrap();
                assert_eq!(version, stream.version(), "{name}");
                assert_eq!(last, stream.last(), "{name}");
            }
        };
        // Position 2^32 - 1 fits: the slot holds it.
        index.push("a-1", 3, loaded + 1, at).unwrap();
        assert_eq!(index.stream_key("a-1").unwrap().2, Some(loaded + 1));
        // Positions 2^32, 2^32 + 1, 2^32 + 2 (one run), then a new stream.
        index.push("a-1", 4, loaded + 2, at).unwrap();
        check(&index);
        index.push_run("b-1", loaded + 3, [(2, at), (3, at)]).unwrap();
        index.push("c-1", 1, loaded + 5, at).unwrap();
        index.push("a-1", 5, loaded + 6, at).unwrap();
        check(&index);
        assert_eq!(index.stream_key("a-1").unwrap().2, Some(loaded + 6));
        assert_eq!(index.stream_key("b-1").unwrap().2, Some(loaded + 4));
        assert_eq!(index.stream_key("c-1").unwrap().2, Some(loaded + 5));
    }

    /// An index file naming a stream twice (its CRC intact) is refused.
    #[test]
    fn from_parts_refuses_a_stream_named_twice() {
        let streams = vec![
            (Arc::from("a"), StreamEntry::from_positions(vec![1])),
            (Arc::from("a"), StreamEntry::from_positions(vec![2])),
        ];
        let refused = Index::from_parts(LocationTable::from_vec(vec![64, 164]), streams, Bytes::new());
        assert!(refused.is_err_and(|why| why.contains("appears twice")));
        let streams = vec![
            (Arc::from("a"), StreamEntry::from_positions(vec![1])),
            (Arc::from("b"), StreamEntry::from_positions(vec![2])),
        ];
        let index = Index::from_parts(LocationTable::from_vec(vec![64, 164]), streams, Bytes::new()).unwrap();
        assert_eq!(index.stream_count(), 2);
        assert_eq!(index.stream("b").and_then(|s| s.get(0)), Some(2));
    }
}
