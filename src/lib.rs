//! # annal: an embedded event store
//!
//! annal keeps every change of an application's state as an immutable
//! event, appended to a stream, in a directory on local disk. It is a
//! library: link it in, point it at a directory, append and read.
//!
//! - **Append-only**: no API rewrites an event.
//! - **Ordered**: each stream's versions start at 1 and have no gaps; so do
//!   global positions across the store.
//! - **Optimistic concurrency**: every append carries an [`ExpectedVersion`].
//! - **Atomic**: an append (even across several streams) is written whole
//!   or not at all, also across a crash.
//! - **Idempotent**: retrying an append with the same event ids does not
//!   write the events twice: with `Exact`/`NoStream` always; with
//!   `Any`/`StreamExists` while the events are still their stream's last
//!   ones or within the id window (the last 10,000 ids by default, see
//!   [`Options::with_idempotency_window_events`]).
//! - **Durable**: with [`Durability::Sync`] (the default), an append returns
//!   only once its events are on stable storage; concurrent appends share
//!   syncs (group commit).
//!
//! ```
//! use annal::{EventData, ExpectedVersion, Options, ReadAll, ReadStream, Store};
//!
//! # fn main() -> Result<(), annal::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("events");
//! let store = Store::open(&path, Options::default())?;
//!
//! // Create a stream: it must not exist yet.
//! let placed = EventData::new("OrderPlaced", r#"{"sku":"A-1","qty":2}"#);
//! let r = store.append("Order-42", ExpectedVersion::NoStream, [placed])?;
//! assert_eq!((r.first_version, r.first_position), (1, 1));
//!
//! // Append under optimistic concurrency: we saw version 1.
//! let paid = EventData::new("OrderPaid", r#"{"amount":30}"#);
//! store.append("Order-42", ExpectedVersion::Exact(1), [paid])?;
//!
//! // A stale writer is refused, and told the actual version.
//! let late = EventData::new("OrderCancelled", "{}");
//! let err = store.append("Order-42", ExpectedVersion::Exact(1), [late]).unwrap_err();
//! assert!(matches!(err, annal::Error::WrongExpectedVersion { actual: Some(2), .. }));
//!
//! // Read the stream back, oldest first.
//! let types: Vec<String> = store
//!     .read_stream("Order-42", ReadStream::forward())?
//!     .map(|e| e.map(|e| e.event_type().to_string()))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(types, ["OrderPlaced", "OrderPaid"]);
//!
//! // Everything after checkpoint 1, in global order.
//! let after: Vec<u64> = store
//!     .read_all(ReadAll::forward().from_position(1))?
//!     .map(|e| e.map(|e| e.position()))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(after, [2]);
//!
//! // Close (or drop) and reopen: everything is still there.
//! store.close()?;
//! let store = Store::open(&path, Options::default())?;
//! assert_eq!(store.stream_version("Order-42"), Some(2));
//! store.close()?;
//!
//! // Readers (other processes too) may open it read-only, side by side:
//! // they write nothing, so appends are refused.
//! let reader = Store::open(&path, Options::default().with_read_only(true))?;
//! assert_eq!(reader.last_position(), 2);
//! let refused = reader.append("Order-42", ExpectedVersion::Any, [EventData::new("X", "{}")]);
//! assert!(matches!(refused, Err(annal::Error::ReadOnly { .. })));
//! # Ok(())
//! # }
//! ```
//!
//! The on-disk format is specified in `docs/FORMAT.md`; the design and its
//! invariants in `docs/DESIGN.md`.

#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

#[cfg(feature = "aggregate")]
pub mod aggregate;
mod backup;
mod checkpoint;
mod dir_lock;
mod error;
mod event;
#[cfg(test)]
mod format_doc;
mod hash;
mod held_locks;
mod id;
mod idempotency;
pub mod index;
pub mod io;
mod json;
pub(crate) mod le;
pub mod limits;
pub mod log;
mod one_or_many;
mod options;
mod projection;
mod read;
mod recovery;
pub mod snapshot;
mod store;
mod subscription;
pub mod tools;
mod writer;

pub use backup::BackupReport;
pub use checkpoint::{CHECKPOINT_NAME_BYTES_MAX, CHECKPOINTS_FILE_NAME, Checkpoints};
pub use dir_lock::LOCK_FILE_NAME;
pub use error::{Error, Result};
pub use event::{
    AppendResult, CAUSATION_ID_KEY, CORRELATION_ID_KEY, EventData, ExpectedVersion, RecordedEvent, StreamAppend,
    category_of,
};
pub use options::{Durability, Options};
pub use projection::{HandlerError, Projection, ProjectionError, ProjectionRunner};
pub use read::{Direction, Events, ReadAll, ReadStream};
pub use recovery::RecoveryReport;
pub use snapshot::{Snapshot, SnapshotIssue, SnapshotLoad, SnapshotOptions, SnapshotStats};
pub use store::{Stats, Store};
pub use subscription::{
    Dispatcher, DispatcherBuilder, DispatcherError, HandlerStatus, SUBSCRIPTION_PAGE_EVENTS, StartFrom, Subscription,
    SubscriptionFilter, SubscriptionState, SubscriptionStatus,
};
pub use uuid::Uuid;

/// README.md's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
