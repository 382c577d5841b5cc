//! The global location table: the packed log location of every position.
//!
//! The part loaded at open stays where the index file holds it: the table
//! is a run of little-endian `u64`s in that file, mapped read-only, and is
//! read in place rather than copied into the heap. Opening a store with a
//! million events then costs no 8 MiB copy and none of the page faults of
//! fresh memory; the pages are the file's, already in the page cache from
//! the CRC check. Positions appended after open go to a vector.
//!
//! The mapped file never changes: a later index save writes a new file and
//! renames it over the old one, and the old file lives on, unlinked, until
//! the table drops its mapping (at close). Where a mapped file cannot be
//! replaced by a rename (Windows), the loaded part is copied instead.

use std::ops::Range;

use bytes::Bytes;

use crate::le::u64_at;

/// Packed locations by position: `get(p - 1)` is position `p`'s.
#[derive(Clone, Debug, Default)]
pub struct LocationTable {
    /// Positions `1..=loaded.len() / 8`, as little-endian `u64`s.
    loaded: Bytes,
    /// Positions after those, in order.
    appended: Vec<u64>,
}

impl PartialEq for LocationTable {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for LocationTable {}

impl LocationTable {
    /// A table holding `bytes` (little-endian `u64`s; a trailing partial
    /// entry is ignored), read in place where the platform allows keeping
    /// the mapping.
    pub fn from_le_bytes(bytes: Bytes) -> LocationTable {
        let whole = bytes.len() / 8 * 8;
        let loaded = bytes.slice(..whole);
        if cfg!(unix) {
            LocationTable {
                loaded,
                appended: Vec::new(),
            }
        } else {
            LocationTable::from_vec(loaded.chunks_exact(8).map(|c| u64_at(c, 0)).collect())
        }
    }

    /// A table holding `packed`.
    pub fn from_vec(packed: Vec<u64>) -> LocationTable {
        LocationTable {
            loaded: Bytes::new(),
            appended: packed,
        }
    }

    /// Number of positions.
    pub fn len(&self) -> usize {
        self.loaded.len() / 8 + self.appended.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i` (position `i + 1`).
    #[inline]
    pub fn get(&self, i: usize) -> Option<u64> {
        let loaded = self.loaded.len() / 8;
        if i < loaded {
            Some(u64_at(&self.loaded, i * 8))
        } else {
            self.appended.get(i - loaded).copied()
        }
    }

    /// Appends the next position's entry.
    pub fn push(&mut self, packed: u64) {
        // Grow by an eighth rather than doubling: the table is the index's
        // largest part, and its slack is memory held for nothing.
        if self.appended.len() == self.appended.capacity() {
            self.appended.reserve_exact((self.len() / 8).max(4));
        }
        self.appended.push(packed);
    }

    /// Every entry, in position order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.loaded
            .chunks_exact(8)
            .map(|c| u64_at(c, 0))
            .chain(self.appended.iter().copied())
    }

    /// Adds `(position, entry)` for the entries in `range` (clamped to the
    /// table) to `out`, in reverse order when `backward`.
    pub fn extend_page(&self, range: Range<usize>, backward: bool, out: &mut Vec<(u64, u64)>) {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        let (in_loaded, in_appended) = split_range(start, end, self.loaded.len() / 8);
        let first = self
            .loaded
            .get(in_loaded.start * 8..in_loaded.end * 8)
            .unwrap_or_default();
        let second = self.appended.get(in_appended).unwrap_or_default();
        let position = |i: usize| i as u64 + 1;
        let from_loaded = first
            .chunks_exact(8)
            .enumerate()
            .map(|(k, c)| (position(start + k), u64_at(c, 0)));
        let from_appended = second
            .iter()
            .enumerate()
            .map(|(k, &l)| (position(in_loaded.end + k), l));
        if backward {
            out.extend(from_appended.rev());
            out.extend(from_loaded.rev());
        } else {
            out.extend(from_loaded);
            out.extend(from_appended);
        }
    }

    /// Appends the entries in `range` (clamped to the table) as
    /// little-endian `u64`s, the index file's form.
    pub fn write_le_range(&self, range: Range<usize>, out: &mut Vec<u8>) {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        let (in_loaded, in_appended) = split_range(start, end, self.loaded.len() / 8);
        out.extend_from_slice(
            self.loaded
                .get(in_loaded.start * 8..in_loaded.end * 8)
                .unwrap_or_default(),
        );
        for l in self.appended.get(in_appended).unwrap_or_default() {
            out.extend_from_slice(&l.to_le_bytes());
        }
    }

    /// Bytes the table occupies: the mapped part (page-cache memory the
    /// store keeps mapped) plus the vector's capacity.
    pub fn memory_bytes(&self) -> usize {
        self.loaded.len() + self.appended.capacity() * 8
    }

    /// Of [`LocationTable::memory_bytes`], the bytes read in place from
    /// the loaded file.
    pub fn mapped_bytes(&self) -> usize {
        self.loaded.len()
    }
}

/// Entries `start..end` (`start <= end`) of a run of `loaded` entries
/// followed by appended ones: the range within the loaded run and the range
/// within the appended entries.
pub(super) fn split_range(start: usize, end: usize, loaded: usize) -> (Range<usize>, Range<usize>) {
    let split = start.max(loaded.min(end));
    (start..split, split.saturating_sub(loaded)..end.saturating_sub(loaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(values: &[u64]) -> Bytes {
        values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into()
    }

    /// A table with `loaded` entries from bytes and `appended` pushed after.
    fn table(loaded: u64, appended: u64) -> LocationTable {
        let mut t = LocationTable::from_le_bytes(le(&(0..loaded).map(|i| i * 10).collect::<Vec<_>>()));
        for i in loaded..loaded + appended {
            t.push(i * 10);
        }
        t
    }

    #[test]
    fn entries_read_the_same_from_both_parts() {
        let t = table(5, 4);
        assert_eq!(t.len(), 9);
        assert_eq!((0..10).map(|i| t.get(i)).collect::<Vec<_>>(), {
            let mut v: Vec<_> = (0..9).map(|i| Some(i * 10)).collect();
            v.push(None);
            v
        });
        assert_eq!(t.iter().collect::<Vec<_>>(), (0..9).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(t, LocationTable::from_vec((0..9).map(|i| i * 10).collect()));
        let mut bytes = Vec::new();
        t.write_le_range(0..t.len(), &mut bytes);
        assert_eq!(Bytes::from(bytes), le(&(0..9).map(|i| i * 10).collect::<Vec<_>>()));
    }

    #[test]
    fn pages_match_the_entries_for_every_range_and_direction() {
        for (loaded, appended) in [(0, 6), (6, 0), (3, 3), (1, 5), (5, 1), (0, 0)] {
            let t = table(loaded, appended);
            let n = t.len();
            for start in 0..=n + 1 {
                for end in start..=n + 2 {
                    let expected: Vec<(u64, u64)> =
                        (start..end.min(n)).map(|i| (i as u64 + 1, i as u64 * 10)).collect();
                    let mut forward = Vec::new();
                    t.extend_page(start..end, false, &mut forward);
                    assert_eq!(forward, expected, "{loaded}+{appended}, {start}..{end}");
                    let mut backward = Vec::new();
                    t.extend_page(start..end, true, &mut backward);
                    assert_eq!(backward, expected.into_iter().rev().collect::<Vec<_>>());
                }
            }
        }
    }

    #[test]
    fn a_partial_trailing_entry_is_ignored() {
        let mut bytes = le(&[7, 8]).to_vec();
        bytes.push(1);
        let t = LocationTable::from_le_bytes(bytes.into());
        assert_eq!(t.iter().collect::<Vec<_>>(), vec![7, 8]);
    }
}
