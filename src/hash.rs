//! Hash maps keyed by stream names and event ids.
//!
//! The standard library's SipHash costs more than the rest of a lookup for
//! short keys; foldhash is several times faster and still seeded per
//! process, so keys chosen by a caller (stream names, event ids) cannot be
//! crafted in advance to collide.

use std::collections::{HashMap, HashSet};

/// The hasher of every map on the hot paths.
pub(crate) type Hasher = foldhash::fast::RandomState;

/// A hash map with [`Hasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, Hasher>;

/// A hash set with [`Hasher`].
pub(crate) type FastSet<K> = HashSet<K, Hasher>;

/// An empty set with room for `capacity` entries.
pub(crate) fn set_with_capacity<K>(capacity: usize) -> FastSet<K> {
    FastSet::with_capacity_and_hasher(capacity, Hasher::default())
}
