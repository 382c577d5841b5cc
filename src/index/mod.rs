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

pub use locations::LocationTable;
use locations::split_range;

use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;
use hashbrown::HashTable;

use crate::event::category_of;
use crate::hash::{FastMap, Hasher};
use crate::le::u64_at;
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

/// One stream's entry: the global position of each of its versions. Read
/// it through [`Stream`], which pairs it with the index file's bytes that a
/// loaded entry refers to.
#[derive(Clone, Debug, Default)]
pub struct StreamEntry {
    positions: Positions,
}

/// A stream's positions: 4 bytes each while they fit, 8 after; or, for a
/// stream loaded from the index file, read in place from the file.
#[derive(Clone, Debug)]
enum Positions {
    /// Up to [`INLINE_POSITIONS`] positions that fit in 32 bits, held in
    /// the entry itself: a short stream (most of them, in many stores)
    /// costs no allocation of its own.
    Inline {
        len: u8,
        items: [u32; INLINE_POSITIONS],
    },
    Narrow(Vec<u32>),
    Wide(Vec<u64>),
    /// `len` little-endian `u64`s at byte `at` of the index's loaded
    /// positions (the index file's mapping), then the positions appended
    /// since open. Same size as the other variants: no box, no allocation
    /// per stream at open.
    Loaded {
        at: u32,
        len: u32,
        appended: Vec<u64>,
    },
}

/// Positions an entry holds without an allocation: as many as fit beside
/// the length in the room the other variants take anyway.
const INLINE_POSITIONS: usize = 5;

// The inline positions take no room of their own.
const _: () = assert!(std::mem::size_of::<Positions>() <= 32);

impl Default for Positions {
    fn default() -> Self {
        Positions::Inline {
            len: 0,
            items: [0; INLINE_POSITIONS],
        }
    }
}

/// A stream's positions as its methods read them: inline and heap 32-bit
/// positions look the same.
enum View<'a> {
    Narrow(&'a [u32]),
    Wide(&'a [u64]),
    Loaded { at: u32, len: u32, appended: &'a [u64] },
}

impl Positions {
    #[inline]
    fn view(&self) -> View<'_> {
        match self {
            Positions::Inline { len, items } => View::Narrow(items.get(..usize::from(*len)).unwrap_or_default()),
            Positions::Narrow(v) => View::Narrow(v),
            Positions::Wide(v) => View::Wide(v),
            Positions::Loaded { at, len, appended } => View::Loaded {
                at: *at,
                len: *len,
                appended,
            },
        }
    }
}

impl StreamEntry {
    /// An entry holding `positions` (increasing).
    pub fn from_positions(positions: Vec<u64>) -> StreamEntry {
        let narrow = positions.last().is_none_or(|&p| u32::try_from(p).is_ok());
        if narrow && positions.len() <= INLINE_POSITIONS {
            let mut entry = StreamEntry::default();
            positions.iter().for_each(|&p| entry.push(p));
            return entry;
        }
        let positions = if narrow {
            Positions::Narrow(positions.iter().map(|&p| p as u32).collect())
        } else {
            Positions::Wide(positions)
        };
        StreamEntry { positions }
    }

    /// An entry for the increasing positions stored as little-endian `u64`s
    /// at byte `at` of `loaded` (the index file's bytes that the index will
    /// hold, see [`Index::from_parts`]): read in place where the platform
    /// allows keeping the file mapped (see [`LocationTable::from_le_bytes`])
    /// and the offsets fit, else decoded into their in-memory width.
    pub fn from_le_bytes(loaded: &[u8], at: usize, len: usize) -> StreamEntry {
        let raw = at
            .checked_add(len.saturating_mul(8))
            .and_then(|end| loaded.get(at..end))
            .unwrap_or_default();
        let len = raw.len() / 8;
        if cfg!(unix)
            && let (Ok(at), Ok(len)) = (u32::try_from(at), u32::try_from(len))
        {
            let appended = Vec::new();
            return StreamEntry {
                positions: Positions::Loaded { at, len, appended },
            };
        }
        let last = len.checked_sub(1).map_or(0, |i| u64_at(raw, i * 8));
        let chunks = raw.chunks_exact(8);
        let positions = if u32::try_from(last).is_ok() {
            Positions::Narrow(chunks.map(|c| u64_at(c, 0) as u32).collect())
        } else {
            Positions::Wide(chunks.map(|c| u64_at(c, 0)).collect())
        };
        StreamEntry { positions }
    }

    /// Starts fetching into the cache the end of the positions' list,
    /// where the next position goes.
    #[inline]
    fn prefetch_end(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            let end: *const i8 = match &self.positions {
                Positions::Inline { .. } => return,
                Positions::Narrow(v) => v.as_ptr().wrapping_add(v.len()).cast(),
                Positions::Wide(v) => v.as_ptr().wrapping_add(v.len()).cast(),
                Positions::Loaded { appended, .. } => appended.as_ptr().wrapping_add(appended.len()).cast(),
            };
            // SAFETY: a prefetch is only a hint. It never faults, even on
            // an address past the vector's allocation (formed with
            // `wrapping_add`, which is defined), and changes no memory or
            // register the program can observe.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(end) };
        }
    }

    /// Number of events (= last version).
    fn len(&self) -> usize {
        match &self.positions {
            Positions::Inline { len, .. } => usize::from(*len),
            Positions::Narrow(v) => v.len(),
            Positions::Wide(v) => v.len(),
            Positions::Loaded { len, appended, .. } => *len as usize + appended.len(),
        }
    }

    /// The global position of version `i + 1`.
    fn get(&self, i: usize, loaded: &[u8]) -> Option<u64> {
        match self.positions.view() {
            View::Narrow(v) => v.get(i).map(|&p| u64::from(p)),
            View::Wide(v) => v.get(i).copied(),
            View::Loaded { at, len, appended } => match i.checked_sub(len as usize) {
                None => Some(u64_at(loaded, at as usize + i * 8)),
                Some(k) => appended.get(k).copied(),
            },
        }
    }

    /// Adds the positions of versions `start + 1..=end` to `out`; the
    /// caller has clamped the range to the stream.
    fn extend_range(&self, start: usize, end: usize, loaded: &[u8], out: &mut Vec<u64>) {
        match self.positions.view() {
            View::Narrow(v) => {
                let v = v.get(start..end).unwrap_or_default();
                out.extend(v.iter().map(|&p| u64::from(p)));
            }
            View::Wide(v) => out.extend_from_slice(v.get(start..end).unwrap_or_default()),
            View::Loaded { at, len, appended } => {
                let (first, second) = loaded_parts(at, len, appended, start..end, loaded);
                out.extend(first.chunks_exact(8).map(|c| u64_at(c, 0)));
                out.extend_from_slice(second);
            }
        }
    }

    /// Appends the positions of versions `start + 1..=end` to `out` as
    /// little-endian `u64`s (the index file's form); the caller has clamped
    /// the range to the stream.
    fn write_le_range(&self, start: usize, end: usize, loaded: &[u8], out: &mut Vec<u8>) {
        match self.positions.view() {
            View::Narrow(v) => {
                for &p in v.get(start..end).unwrap_or_default() {
                    out.extend_from_slice(&u64::from(p).to_le_bytes());
                }
            }
            View::Wide(v) => {
                for p in v.get(start..end).unwrap_or_default() {
                    out.extend_from_slice(&p.to_le_bytes());
                }
            }
            View::Loaded { at, len, appended } => {
                let (first, second) = loaded_parts(at, len, appended, start..end, loaded);
                out.extend_from_slice(first);
                for p in second {
                    out.extend_from_slice(&p.to_le_bytes());
                }
            }
        }
    }

    /// How many of the stream's events are at or before `position`.
    fn count_up_to(&self, position: u64, loaded: &[u8]) -> usize {
        match self.positions.view() {
            View::Narrow(v) => v.partition_point(|&p| u64::from(p) <= position),
            View::Wide(v) => v.partition_point(|&p| p <= position),
            View::Loaded { at, len, appended } => {
                // Binary search over the loaded part, then the appended one.
                let (at, len) = (at as usize, len as usize);
                let (mut low, mut high) = (0, len);
                while low < high {
                    let mid = low + (high - low) / 2;
                    if u64_at(loaded, at + mid * 8) <= position {
                        low = mid + 1;
                    } else {
                        high = mid;
                    }
                }
                if low < len {
                    low
                } else {
                    low + appended.partition_point(|&p| p <= position)
                }
            }
        }
    }

    fn push(&mut self, position: u64) {
        match &mut self.positions {
            Positions::Inline { len, items } => {
                let n = usize::from(*len);
                match (u32::try_from(position), items.get_mut(n)) {
                    (Ok(p), Some(slot)) => {
                        *slot = p;
                        *len += 1;
                    }
                    // Full, or past 32 bits: onto the heap.
                    _ => {
                        let held = items.get(..n).unwrap_or_default();
                        self.positions = match u32::try_from(position) {
                            Ok(p) => {
                                let mut v = Vec::with_capacity(n * 2);
                                v.extend_from_slice(held);
                                v.push(p);
                                Positions::Narrow(v)
                            }
                            Err(_) => {
                                let mut v: Vec<u64> = held.iter().map(|&p| u64::from(p)).collect();
                                v.push(position);
                                Positions::Wide(v)
                            }
                        };
                    }
                }
            }
            Positions::Narrow(v) => match u32::try_from(position) {
                Ok(p) => push_grow(v, p, 2),
                Err(_) => {
                    let mut wide: Vec<u64> = v.iter().map(|&p| u64::from(p)).collect();
                    wide.push(position);
                    self.positions = Positions::Wide(wide);
                }
            },
            Positions::Wide(v) => push_grow(v, position, 2),
            Positions::Loaded { appended, .. } => push_grow(appended, position, 2),
        }
    }

    fn heap_bytes(&self) -> usize {
        match &self.positions {
            Positions::Inline { .. } => 0,
            Positions::Narrow(v) => v.capacity() * 4,
            Positions::Wide(v) => v.capacity() * 8,
            // The mapped positions are page-cache memory, counted all the same.
            Positions::Loaded { len, appended, .. } => *len as usize * 8 + appended.capacity() * 8,
        }
    }

    /// Of [`StreamEntry::heap_bytes`], the bytes read in place from the
    /// loaded index file.
    fn mapped_bytes(&self) -> usize {
        match &self.positions {
            Positions::Loaded { len, .. } => *len as usize * 8,
            Positions::Inline { .. } | Positions::Narrow(_) | Positions::Wide(_) => 0,
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

/// A stream's positions, as the index holds them: the global position of
/// each version.
#[derive(Clone, Copy, Debug)]
pub struct Stream<'a> {
    entry: &'a StreamEntry,
    loaded: &'a [u8],
}

impl PartialEq for Stream<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Stream<'_> {}

impl<'a> Stream<'a> {
    /// The stream's last version (0 when empty).
    pub fn version(&self) -> u64 {
        self.len() as u64
    }

    /// Number of events (= last version).
    pub fn len(&self) -> usize {
        self.entry.len()
    }

    /// Whether the stream has no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The global position of version `i + 1`.
    pub fn get(&self, i: usize) -> Option<u64> {
        self.entry.get(i, self.loaded)
    }

    /// The position of the last version (`None` when empty).
    pub fn last(&self) -> Option<u64> {
        self.get(self.len().checked_sub(1)?)
    }

    /// The positions of versions `range` (clamped to the stream).
    pub fn range(self, range: std::ops::Range<usize>) -> impl DoubleEndedIterator<Item = u64> + 'a {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        (start..end).filter_map(move |i| self.get(i))
    }

    /// Adds the positions of versions `range` (clamped to the stream) to
    /// `out`, oldest first: [`Stream::range`] for a whole page at once.
    pub fn extend_range(&self, range: std::ops::Range<usize>, out: &mut Vec<u64>) {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        self.entry.extend_range(start, end, self.loaded, out);
    }

    /// Appends the positions of versions `range` (clamped to the stream)
    /// to `out` as little-endian `u64`s, the index file's form.
    pub fn write_le_range(&self, range: std::ops::Range<usize>, out: &mut Vec<u8>) {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        self.entry.write_le_range(start, end, self.loaded, out);
    }

    /// Every position, oldest first.
    pub fn iter(self) -> impl DoubleEndedIterator<Item = u64> + 'a {
        self.range(0..self.len())
    }

    /// How many of the stream's events are at or before `position`.
    pub fn count_up_to(&self, position: u64) -> usize {
        self.entry.count_up_to(position, self.loaded)
    }
}

/// The parts of a loaded entry (`len` positions at byte `at` of `loaded`,
/// then `appended`) that hold versions `range` (`start + 1..=end`): the
/// index file's little-endian bytes, then the appended positions.
fn loaded_parts<'a>(
    at: u32,
    len: u32,
    appended: &'a [u64],
    range: std::ops::Range<usize>,
    loaded: &'a [u8],
) -> (&'a [u8], &'a [u64]) {
    let (in_loaded, in_appended) = split_range(range.start, range.end, len as usize);
    let at = at as usize;
    let first = loaded
        .get(at + in_loaded.start * 8..at + in_loaded.end * 8)
        .unwrap_or_default();
    (first, appended.get(in_appended).unwrap_or_default())
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

    /// `entry` read with `loaded` as the index's loaded bytes.
    fn view<'a>(entry: &'a StreamEntry, loaded: &'a [u8]) -> Stream<'a> {
        Stream { entry, loaded }
    }

    fn le(positions: &[u64]) -> Vec<u8> {
        positions.iter().flat_map(|p| p.to_le_bytes()).collect()
    }

    #[test]
    fn positions_widen_past_u32() {
        let mut entry = StreamEntry::from_positions(vec![1, 7]);
        entry.push(u64::from(u32::MAX));
        entry.push(u64::from(u32::MAX) + 5);
        assert!(matches!(entry.positions, Positions::Wide(_)));
        let all = vec![1, 7, u64::from(u32::MAX), u64::from(u32::MAX) + 5];
        let entry = view(&entry, &[]);
        assert_eq!(entry.iter().collect::<Vec<_>>(), all);
        let model = StreamEntry::from_positions(all.clone());
        assert_eq!(entry, view(&model, &[]));
        // Loaded from index-file bytes (3 bytes of something else first).
        let mut raw = vec![9, 9, 9];
        raw.extend(le(&all));
        let loaded = StreamEntry::from_le_bytes(&raw, 3, 4);
        assert_eq!(view(&loaded, &raw), entry);
        let two = StreamEntry::from_le_bytes(&raw, 3, 2);
        assert_eq!(view(&two, &raw).iter().collect::<Vec<_>>(), vec![1, 7]);
        assert_eq!(entry.count_up_to(u64::from(u32::MAX)), 3);
        assert_eq!(entry.get(3), Some(u64::from(u32::MAX) + 5));
        assert_eq!(entry.range(1..9).rev().collect::<Vec<_>>(), vec![all[3], all[2], 7]);
        // Short streams hold their positions inline, until one more does
        // not fit.
        assert!(matches!(
            StreamEntry::from_positions(vec![1, 2]).positions,
            Positions::Inline { len: 2, .. }
        ));
        let mut grown = StreamEntry::from_positions((1..=INLINE_POSITIONS as u64).collect());
        assert!(matches!(grown.positions, Positions::Inline { .. }));
        grown.push(INLINE_POSITIONS as u64 + 1);
        assert!(matches!(grown.positions, Positions::Narrow(_)));
        let want: Vec<u64> = (1..=INLINE_POSITIONS as u64 + 1).collect();
        assert_eq!(view(&grown, &[]).iter().collect::<Vec<_>>(), want);
        let mut wide = StreamEntry::from_positions(vec![3]);
        wide.push(u64::from(u32::MAX) + 1);
        assert!(matches!(wide.positions, Positions::Wide(_)));
        assert_eq!(
            view(&wide, &[]).iter().collect::<Vec<_>>(),
            vec![3, u64::from(u32::MAX) + 1]
        );
    }

    /// A stream loaded from the index file answers every query as the same
    /// positions held in a vector would, before and after appends.
    #[test]
    fn loaded_positions_read_like_vector_ones() {
        let loaded = [2u64, 5, 9, 10];
        let mut raw = vec![0xAB; 5];
        raw.extend(le(&loaded));
        raw.extend([0xCD; 7]);
        let mut entry = StreamEntry::from_le_bytes(&raw, 5, loaded.len());
        if cfg!(unix) {
            assert!(matches!(entry.positions, Positions::Loaded { .. }));
        }
        let mut all = loaded.to_vec();
        for appended in [0, 14, 30] {
            if appended > 0 {
                entry.push(appended);
                all.push(appended);
            }
            let model = StreamEntry::from_positions(all.clone());
            let (entry, model) = (view(&entry, &raw), view(&model, &[]));
            assert_eq!(entry, model);
            assert_eq!(entry.len(), all.len());
            for i in 0..all.len() + 2 {
                assert_eq!(entry.get(i), model.get(i), "get({i})");
                for j in i..all.len() + 2 {
                    assert_eq!(
                        entry.range(i..j).collect::<Vec<_>>(),
                        model.range(i..j).collect::<Vec<_>>()
                    );
                    assert_eq!(
                        entry.range(i..j).rev().collect::<Vec<_>>(),
                        model.range(i..j).rev().collect::<Vec<_>>()
                    );
                }
            }
            for i in 0..all.len() + 2 {
                for j in 0..all.len() + 2 {
                    let mut out = vec![7];
                    entry.extend_range(i..j, &mut out);
                    let mut expected = vec![7];
                    expected.extend(model.range(i..j));
                    assert_eq!(out, expected, "extend_range({i}..{j})");
                }
            }
            for position in 0..35 {
                let expected = all.iter().filter(|&&p| p <= position).count();
                assert_eq!(entry.count_up_to(position), expected, "count_up_to({position})");
            }
        }
        assert!(entry.heap_bytes() >= 8 * all.len());
        // Offsets past the bytes give an empty entry, not a panic.
        assert_eq!(StreamEntry::from_le_bytes(&raw, 100, 3).len(), 0);
        assert_eq!(StreamEntry::from_le_bytes(&raw, 5, usize::MAX).len(), 0);
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
