//! Every limit of the store, in one place, with the reason for its value.
//!
//! Lengths read from disk are checked against these before anything is
//! allocated, so a corrupt length field can never make the store allocate
//! gigabytes or read past the end of a file.

/// Longest stream name, in bytes of UTF-8. Stored in one byte on disk.
pub const STREAM_NAME_BYTES_MAX: usize = 255;

/// Longest event type name, in bytes of UTF-8. Stored in one byte on disk.
pub const EVENT_TYPE_BYTES_MAX: usize = 255;

/// Largest data + metadata of one event. Large enough for any sane event,
/// small enough that one corrupt length cannot cause a huge allocation.
pub const EVENT_PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Most events in one append. Bounds the work done under the writer lock.
pub const BATCH_EVENTS_MAX: usize = 65_536;

/// Largest encoded batch frame. A batch never spans two segments, so with
/// segments smaller than this plus their 64-byte header (down to
/// [`SEGMENT_BYTES_MIN`]) the limit is the segment size minus the header.
pub const BATCH_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Smallest segment size accepted by [`crate::Options`]: small segments are
/// useful in tests, but a segment must hold at least a few events.
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;

/// Largest segment size: offsets inside a segment are stored in 40 bits in
/// the in-memory index.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 40;

/// Most segments in one store: segment numbers are stored in 24 bits in the
/// in-memory index.
pub const SEGMENTS_MAX: u64 = (1 << 24) - 1;

/// Highest stream version: versions are stored in 32 bits on disk.
pub const STREAM_VERSION_MAX: u64 = u32::MAX as u64;

/// Most streams the index file may declare (a sanity bound for decoding).
pub const STREAMS_MAX: u64 = 1 << 32;

/// Largest snapshot payload. Large enough for any sane aggregate state,
/// small enough that one corrupt length cannot cause a huge allocation.
pub const SNAPSHOT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Longest checkpoint name, in bytes (at least 1).
pub const CHECKPOINT_NAME_BYTES_MAX: usize = 1024;
