//! Helpers shared by the integration tests.
#![allow(dead_code)]

use annal::{Durability, EventData, ExpectedVersion, Options, ReadAll, ReadStream, RecordedEvent, Store};

/// A small-segment store configuration that exercises rollover.
pub fn small_segments() -> Options {
    Options::default().with_segment_size_bytes(16 * 1024)
}

/// An event with a recognisable payload.
pub fn event(kind: &str, n: u64) -> EventData {
    EventData::new(kind, format!("{{\"n\":{n}}}")).with_metadata(format!("{{\"m\":{n}}}"))
}

/// Every event of a stream, oldest first.
pub fn stream(store: &Store, name: &str) -> Vec<RecordedEvent> {
    store
        .read_stream(name, ReadStream::forward())
        .unwrap()
        .collect_all()
        .unwrap()
}

/// Every event in global order.
pub fn all(store: &Store) -> Vec<RecordedEvent> {
    store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap()
}

/// A store in `dir/store` with the given durability.
pub fn open_with(dir: &std::path::Path, durability: Durability) -> Store {
    Store::open(dir.join("store"), Options::default().with_durability(durability)).expect("open")
}

/// Appends `n` single-event appends of `event_type` to `stream`, the
/// payload of each its index.
pub fn append_n(store: &Store, stream: &str, event_type: &str, n: usize) {
    for i in 0..n {
        store
            .append(
                stream,
                ExpectedVersion::Any,
                [EventData::new(event_type, format!("{i}"))],
            )
            .expect("append");
    }
}
