//! Helpers shared by the integration tests.
#![allow(dead_code)]

use annal::{EventData, Options, ReadAll, ReadStream, RecordedEvent, Store};

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
