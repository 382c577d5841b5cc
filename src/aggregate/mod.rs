//! The typed layer over the byte-level store: aggregates, commands, codecs,
//! a repository with optimistic concurrency and snapshots, and upcasters
//! for schema evolution (feature `aggregate`).
//!
//! An [`Aggregate`] is a consistency boundary with its own stream, named
//! `{Category}-{id}` ([`stream_name`]). Its state is the fold of its
//! events ([`Aggregate::apply`]); a command is decided against that state
//! ([`Aggregate::handle`]) into new events or a domain error. The
//! [`Repository`] loads the state (from the newest snapshot plus the events
//! after it), runs the command, and appends the events under
//! `ExpectedVersion::Exact(version)`, retrying on a concurrency conflict a
//! bounded number of times, so concurrent handlers never lose an update.
//!
//! Events are stored with a type name and a schema version
//! ([`DomainEvent`]). Old payloads are brought to the current shape on read
//! by [`Upcasters`], chained v1 -> v2 -> v3; stored events are never
//! rewritten. The rules for evolving event types are in docs/AGGREGATES.md.
//!
//! ```
//! use annal::aggregate::{Aggregate, CommandMetadata, DomainEvent, JsonCodec, Repository};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Counter { value: u64 }
//!
//! #[derive(Serialize, Deserialize)]
//! enum CounterEvent { Added { n: u64 } }
//!
//! impl DomainEvent for CounterEvent {
//!     fn event_type(&self) -> &'static str { "Added" }
//! }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("too much")]
//! struct TooMuch;
//!
//! impl Aggregate for Counter {
//!     const CATEGORY: &'static str = "Counter";
//!     type Event = CounterEvent;
//!     type Command = u64;
//!     type Error = TooMuch;
//!     fn apply(&mut self, event: &CounterEvent) {
//!         let CounterEvent::Added { n } = event;
//!         self.value += n;
//!     }
//!     fn handle(&self, n: u64) -> Result<Vec<CounterEvent>, TooMuch> {
//!         if self.value + n > 100 { return Err(TooMuch); }
//!         Ok(vec![CounterEvent::Added { n }])
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = annal::Store::open(dir.path(), annal::Options::default())?;
//! let counters = Repository::<Counter>::new(store, JsonCodec).with_snapshot_every(10);
//! counters.execute("c1", 5, CommandMetadata::new())?;
//! counters.execute("c1", 7, CommandMetadata::new())?;
//! assert_eq!(counters.load("c1")?.state.value, 12);
//! assert!(counters.execute("c1", 90, CommandMetadata::new()).is_err());
//! # Ok(())
//! # }
//! ```

mod codec;
mod repository;
mod upcast;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use codec::{BincodeCodec, Codec, CodecError, JsonCodec};
pub use repository::{CommandMetadata, Executed, Loaded, Repository, RepositoryError, command_event_id};
pub use upcast::{UpcastError, Upcasters};

/// An event type of an aggregate (usually an enum, one variant per kind of
/// event).
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// The event's type name, stored with it (for the JSON codec, the
    /// enum's variant name, which is how serde names it).
    fn event_type(&self) -> &'static str;

    /// The current schema version of this event's type (default 1). Bump
    /// it when the payload's shape changes, and register an upcaster from
    /// the previous version.
    fn schema_version(&self) -> u16 {
        1
    }
}

/// A consistency boundary: state folded from its events, and the decision
/// of a command against that state.
///
/// The state must be serde-serializable so that it can be snapshotted;
/// bump [`Aggregate::SNAPSHOT_SCHEMA_VERSION`] when its shape changes, so
/// older snapshots are ignored (an older snapshot of this schema version is
/// used, or the stream replayed) rather than misread.
pub trait Aggregate: Default + Serialize + DeserializeOwned {
    /// The category: the aggregate's streams are named `{CATEGORY}-{id}`.
    /// Not empty and without `-` (a stream's category is its name up to the
    /// first `-`, see [`crate::category_of`]): a `Repository` of an
    /// aggregate whose category breaks this fails to build (`cargo build`;
    /// `cargo check` does not evaluate the check).
    const CATEGORY: &'static str;
    /// Schema version of the snapshot state (default 1).
    const SNAPSHOT_SCHEMA_VERSION: u32 = 1;
    /// The aggregate's events.
    type Event: DomainEvent;
    /// The commands it handles (cloned when a conflict makes the
    /// repository decide again).
    type Command: Clone;
    /// Its domain error (a refused command).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Folds one event into the state. Must not fail: the event happened.
    fn apply(&mut self, event: &Self::Event);

    /// Decides a command: the events it causes, or why it is refused.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
}

/// The stream name of an aggregate instance: `{category}-{id}`.
pub fn stream_name(category: &str, id: &str) -> String {
    format!("{category}-{id}")
}

/// Splits a stream name `{category}-{id}` at its first `-`; `None` when it
/// has no `-`.
pub fn split_stream_name(stream: &str) -> Option<(&str, &str)> {
    stream.split_once('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        assert_eq!(stream_name("Account", "a-1"), "Account-a-1");
        assert_eq!(split_stream_name("Account-a-1"), Some(("Account", "a-1")));
        assert_eq!(split_stream_name("plain"), None);
    }
}
