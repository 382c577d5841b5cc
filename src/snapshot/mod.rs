//! Snapshots: a side-file of saved aggregate states, so that loading a
//! long stream replays only the events after its latest snapshot.
//!
//! A snapshot is a cache, never the source of truth. A corrupt, torn,
//! missing or unusable snapshot is passed over for an older one (or a
//! replay of the stream), never a failed load and never a wrong state: every record carries a CRC, a
//! snapshot is never used for a version beyond the stream's, and every
//! problem met is reported as a [`SnapshotIssue`] (in the result of the
//! load that met it, and in [`crate::Store::snapshot_issues`]).
//!
//! The store keeps, per stream, the newest
//! [`SnapshotOptions::keep_per_stream`] snapshots (older ones are
//! *superseded*), so that loads "as of" an earlier version can start from
//! an earlier snapshot. When superseded records make up most of the file,
//! the file is compacted: rewritten with only the kept records, through a
//! temp file, fsync, rename and directory fsync, so a crash leaves either
//! the old or the new file, both holding every kept snapshot.
//!
//! The bytes are specified in docs/FORMAT.md ("Snapshot file").

pub mod file;
mod store;

pub(crate) use store::{durable_versions_in, guard_appends};

use bytes::Bytes;

/// A saved snapshot of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream it belongs to.
    pub stream: String,
    /// The stream version whose state it holds (events 1..=version applied).
    pub version: u64,
    /// The id of the stream's event at `version` when the snapshot was
    /// saved. A load uses a snapshot only while the log's event at that
    /// version still has this id.
    pub event_id: uuid::Uuid,
    /// The application's schema version of `data`, chosen by whoever saved
    /// it; a reader expecting another version should ignore the snapshot.
    pub schema_version: u32,
    /// The snapshot bytes (opaque to the store).
    pub data: Bytes,
}

/// The result of looking for a snapshot: the one found (if any) and the
/// problems met on the way, each of which made the store pass over a
/// snapshot (to an older one, or to none: a full replay).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotLoad {
    /// The newest usable snapshot at or before the requested version.
    pub snapshot: Option<Snapshot>,
    /// What was passed over, and why.
    pub issues: Vec<SnapshotIssue>,
}

/// A problem with a snapshot that was passed over. None of these fails a
/// load: the aggregate is replayed from an older snapshot or from the
/// start of its stream instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotIssue {
    /// The snapshot file's header was damaged, of an unknown format version
    /// or of another store; the file was started afresh (every snapshot in
    /// it is gone; they will be saved again).
    #[error("snapshot file unusable, started afresh: {reason}")]
    FileReplaced {
        /// What was wrong with it.
        reason: String,
    },
    /// A record failed its checks and was skipped.
    #[error("damaged snapshot record at byte {offset} of the snapshot file: {reason}")]
    Corrupt {
        /// Offset of the record in the snapshot file.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The file ended in an incomplete record (a save cut by a crash), cut
    /// off when the file was opened.
    #[error("torn snapshot file tail cut at byte {offset} ({bytes} bytes): {reason}")]
    TornTail {
        /// Where the valid part of the file ends.
        offset: u64,
        /// How many bytes were cut.
        bytes: u64,
        /// What was wrong with them.
        reason: String,
    },
    /// A snapshot claims a version the stream does not have (the log was
    /// cut shorter, for instance by a repair); it is never used.
    #[error("snapshot of '{stream}' at version {snapshot_version} is ahead of the stream (version {stream_version})")]
    AheadOfLog {
        /// The stream.
        stream: String,
        /// The snapshot's version.
        snapshot_version: u64,
        /// The stream's version.
        stream_version: u64,
    },
    /// The snapshot was taken at an event the log no longer holds at its
    /// version (the log was cut, by a repair or an older annal, and the
    /// stream grew again): it is never used.
    #[error(
        "snapshot of '{stream}' at version {snapshot_version} was taken at another event than the log's at that version"
    )]
    OtherEvent {
        /// The stream.
        stream: String,
        /// The snapshot's version.
        snapshot_version: u64,
    },
    /// The snapshot was saved with another schema version than the reader
    /// expects (the aggregate's state type changed).
    #[error("snapshot of '{stream}' at version {version} has schema version {found}, expected {expected}")]
    SchemaMismatch {
        /// The stream.
        stream: String,
        /// The snapshot's stream version.
        version: u64,
        /// The schema version stored.
        found: u32,
        /// The schema version the reader expects.
        expected: u32,
    },
    /// The snapshot's bytes could not be decoded into the aggregate's state.
    #[error("snapshot of '{stream}' at version {version} does not decode: {reason}")]
    Undecodable {
        /// The stream.
        stream: String,
        /// The snapshot's stream version.
        version: u64,
        /// The decoder's message.
        reason: String,
    },
    /// Reading or opening the snapshot file failed.
    #[error("snapshot file I/O error: {reason}")]
    Io {
        /// The error.
        reason: String,
    },
}

/// How many snapshots to keep and when to compact the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Snapshots kept per stream, newest first (at least 1; default 4).
    /// Older ones are superseded and dropped by the next compaction; the
    /// kept ones serve loads "as of" an earlier version.
    pub keep_per_stream: usize,
    /// The file is compacted after a save once it is larger than this
    /// (default 64 KiB) and superseded records take more bytes than kept
    /// ones.
    pub compact_min_bytes: u64,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            keep_per_stream: 4,
            compact_min_bytes: 64 * 1024,
        }
    }
}

impl SnapshotOptions {
    /// Sets [`SnapshotOptions::keep_per_stream`] (0 is taken as 1).
    pub fn with_keep_per_stream(mut self, n: usize) -> Self {
        self.keep_per_stream = n.max(1);
        self
    }

    /// Sets [`SnapshotOptions::compact_min_bytes`].
    pub fn with_compact_min_bytes(mut self, bytes: u64) -> Self {
        self.compact_min_bytes = bytes;
        self
    }
}

/// Figures about the snapshot file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotStats {
    /// Streams with at least one snapshot.
    pub streams: u64,
    /// Records reachable through the in-memory map.
    pub records: u64,
    /// Bytes of the file.
    pub file_bytes: u64,
    /// Bytes of kept records (the newest few per stream).
    pub live_bytes: u64,
    /// Compactions since the store was opened.
    pub compactions: u64,
}

pub(crate) use store::Snapshots;
