//! The store's error type: one enum, each variant saying what went wrong
//! and, in its doc comment, what the caller can do about it.

use std::io;
use std::path::PathBuf;

use crate::event::ExpectedVersion;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in annal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed. The store may have entered the
    /// fail-stop state (see [`Error::Poisoned`]); reopen it after fixing the
    /// cause (disk full, permissions, failing disk).
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Another process (or another handle in this process) has the store
    /// open. Close it first; only one handle may own a directory. (On Unix
    /// the directory itself is locked too, with `flock`: a script that
    /// `flock`s the store directory excludes the store as well.) A closed
    /// store keeps its directory locked until every clone of its handle is
    /// dropped (a `Repository`, an `Events` iterator, or a handler closure
    /// that owns a `Store` clone holds one; subscriptions, dispatchers and
    /// checkpoint handles do not): `by_this_process` says the holder is in
    /// this process.
    #[error(
        "store at {} is locked {}",
        path.display(),
        if *by_this_process {
            "by a handle of this process: a store, closed or not, holds its directory until the last clone of \
             its handle is dropped (held by a Repository, an Events iterator, a handler that owns a Store clone)"
        } else {
            "by another handle or process (its LOCK file or the directory itself)"
        }
    )]
    Locked {
        /// The store directory.
        path: PathBuf,
        /// Whether a handle of this process holds the lock (the directory
        /// is told apart by its device and inode on Unix, by its canonical
        /// path elsewhere).
        by_this_process: bool,
    },

    /// The append's expected version did not match the stream. Nothing was
    /// written. Reload the stream and decide again.
    #[error("wrong expected version for stream '{stream}': expected {expected}, actual {}", display_version(*.actual))]
    WrongExpectedVersion {
        /// The stream whose check failed.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's last version, `None` when the stream has no events.
        actual: Option<u64>,
    },

    /// An append reused event ids that are already stored, but not as a
    /// retry. An append is a retry (nothing is written, and the result says
    /// where its events are) when, for each of its streams, every event id
    /// is already stored in that stream, in the same order, at consecutive
    /// versions and positions, right after the expected version when that
    /// is exact. This holds for an exact retry of one earlier append, and
    /// also for a part of one (the events of one of its streams, or a run
    /// of consecutive events of it) or for consecutive earlier appends sent
    /// as one.
    /// It is a conflict when some ids are stored and others are not, or
    /// they are stored in another stream, order or place, or a stored
    /// event's type, data or schema version differs from the retried one
    /// (metadata is not compared). Nothing was written.
    ///
    /// Under an exact expected version (`Exact`, `NoStream`) that the
    /// stream has moved past, the events are looked for right after that
    /// version only: when its next event is not the append's first, the
    /// append fails the concurrency check instead
    /// ([`Error::WrongExpectedVersion`]), wherever else its ids are stored.
    #[error(
        "an append to stream '{stream}' reuses event id {id}, already written by a different append (partial or mismatched retry)"
    )]
    IdempotencyConflict {
        /// The stream of the rejected append.
        stream: String,
        /// An id of the rejected append that is already stored: the first
        /// found to conflict when it is stored itself, else the stored id
        /// the append was matched by.
        id: uuid::Uuid,
    },

    /// The same event id appears twice in one append.
    #[error("event id {id} appears more than once in the same append")]
    DuplicateEventId {
        /// The repeated id.
        id: uuid::Uuid,
    },

    /// A name, size or count broke one of the limits in [`crate::limits`].
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A file of the store holds bytes that fail their checksum or make no
    /// sense, at a place where a torn write cannot explain them. Nothing was
    /// skipped. Run the CLI's `verify`/`repair`, or restore a backup.
    #[error("corruption in {file} at byte offset {offset}: {reason}")]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset in that file where the first damage starts: in a
        /// segment, the start of the first bad batch frame (or of a record
        /// an index lookup found wrong); in a side file, its bad header or
        /// record.
        offset: u64,
        /// What check failed.
        reason: String,
    },

    /// A file was written by a newer (or unknown) on-disk format version.
    /// Upgrade annal to a version that reads it.
    #[error("{file} has on-disk format version {found}, this build of annal reads version {supported}")]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build understands.
        supported: u32,
    },

    /// An earlier write or sync failed, so the store no longer accepts
    /// writes: retrying a failed fsync can report success while the data is
    /// gone. Reads still work. Reopen the store to recover.
    #[error("the store stopped accepting writes after an I/O failure ({0}); reopen it")]
    Poisoned(String),

    /// The store was opened read-only ([`crate::Options::with_read_only`])
    /// and the call would write. Nothing was written.
    #[error("store at {path} is open read-only")]
    ReadOnly {
        /// The store directory.
        path: PathBuf,
    },

    /// The append needs a new segment file, and the log already has
    /// [`crate::limits::SEGMENTS_MAX`], the most a store can number.
    /// Nothing was written; reads, and appends that fit in the room left
    /// in the last segment, still work. Only a store configured with tiny
    /// segments gets here (4 KiB segments fill the numbers at 64 GiB of
    /// log; the default 64 MiB ones at 1 PiB): copy its events into a
    /// store opened with larger segments (`annal export OLD | annal
    /// import NEW`).
    #[error(
        "the log has {limit} segment files, the most a store can have, and this append needs another; copy the store into one with larger segments"
    )]
    StoreFull {
        /// The limit reached ([`crate::limits::SEGMENTS_MAX`]).
        limit: u64,
    },

    /// The store handle was closed.
    #[error("the store is closed")]
    Closed,
}

fn display_version(v: Option<u64>) -> String {
    match v {
        Some(v) => v.to_string(),
        None => "no stream".to_string(),
    }
}

impl Error {
    /// Builds an [`Error::Io`] with a short description of the operation.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A copy of this error for another caller that shares its cause (the
    /// appenders of one failed group commit). I/O errors keep their kind
    /// and message; others become [`Error::Poisoned`] with their message.
    pub(crate) fn share(&self) -> Self {
        match self {
            Error::Io { context, source } => Error::Io {
                context: context.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::Poisoned(why) => Error::Poisoned(why.clone()),
            other => Error::Poisoned(other.to_string()),
        }
    }

    /// Builds an [`Error::Corruption`].
    pub(crate) fn corruption(file: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// Adds a context string to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Wraps the error in [`Error::Io`] with the given context.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
