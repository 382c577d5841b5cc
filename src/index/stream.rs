//! One stream's positions in the index: the global position of each of
//! its versions, held inline for a short stream, in 4-byte or 8-byte
//! vectors, or read in place from the loaded index file.

use super::locations::split_range;
use super::push_grow;
use crate::le::u64_at;

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
    /// hold, see [`super::Index::from_parts`]): read in place where the platform
    /// allows keeping the file mapped (see [`super::LocationTable::from_le_bytes`])
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
    pub(super) fn prefetch_end(&self) {
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
    pub(super) fn len(&self) -> usize {
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

    pub(super) fn push(&mut self, position: u64) {
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

    pub(super) fn heap_bytes(&self) -> usize {
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
    pub(super) fn mapped_bytes(&self) -> usize {
        match &self.positions {
            Positions::Loaded { len, .. } => *len as usize * 8,
            Positions::Inline { .. } | Positions::Narrow(_) | Positions::Wide(_) => 0,
        }
    }
}

/// A stream's positions, as the index holds them: the global position of
/// each version.
#[derive(Clone, Copy, Debug)]
pub struct Stream<'a> {
    pub(super) entry: &'a StreamEntry,
    pub(super) loaded: &'a [u8],
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `entry` read with `loaded` as the index's loaded bytes.
    fn view<'a>(entry: &'a StreamEntry, loaded: &'a [u8]) -> Stream<'a> {
        Stream { entry, loaded }
    }

    use crate::index::tests::le;

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
}
