//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod child;
pub mod failing_open;
pub mod files;
pub mod rng;

use annal::{Durability, EventData, ExpectedVersion, Options, ReadAll, ReadStream, RecordedEvent, Store, Uuid};

/// The ids of every event the store in `dir` serves, in log order (it is
/// opened with `options` and closed again).
pub fn ids_in(dir: &std::path::Path, options: Options) -> Vec<Uuid> {
    let store = Store::open(dir, options).unwrap();
    let ids = store
        .read_all(ReadAll::forward())
        .unwrap()
        .map(|e| e.unwrap().id())
        .collect();
    store.close().unwrap();
    ids
}

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

/// An event as tests compare stores: (position, stream, version, id,
/// data, metadata).
pub type EventSummary = (u64, String, u64, Uuid, Vec<u8>, Vec<u8>);

/// The summary of each event.
pub fn summary(events: &[RecordedEvent]) -> Vec<EventSummary> {
    events
        .iter()
        .map(|e| {
            (
                e.position(),
                e.stream().to_string(),
                e.version(),
                e.id(),
                e.data().to_vec(),
                e.metadata().to_vec(),
            )
        })
        .collect()
}

/// A started dispatcher of one handler, `h`, that takes every event from
/// the start and does nothing with it.
pub fn idle_dispatcher(store: &Store) -> annal::Dispatcher {
    store
        .dispatcher()
        .handler("h", annal::SubscriptionFilter::all(), annal::StartFrom::Start, |_| {
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap()
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

/// Appends one small event at a time, numbered on from `*i`, to three
/// streams `{prefix}-0` to `{prefix}-2` in turn, until `dir`'s log has
/// rolled over to segment `n`.
pub fn append_until_segment(store: &Store, dir: &std::path::Path, n: u64, prefix: &str, i: &mut u64) {
    while !annal::log::segment::path(dir, n).exists() {
        *i += 1;
        store
            .append(&format!("{prefix}-{}", *i % 3), ExpectedVersion::Any, [event("E", *i)])
            .expect("append");
    }
}
