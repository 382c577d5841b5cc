//! The append and read contract, one test per promise.

mod common;

use std::sync::Arc;

use annal::{
    Durability, Error, EventData, ExpectedVersion, Options, ReadAll, ReadStream, Store, StreamAppend, Uuid, limits,
};
use common::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), Options::default()).unwrap();
    (dir, store)
}

#[test]
fn versions_and_positions_start_at_one_and_are_gapless() {
    let (_d, store) = open();
    let r = store
        .append("A-1", ExpectedVersion::NoStream, [event("X", 1), event("Y", 2)])
        .unwrap();
    assert_eq!(
        (r.first_version, r.last_version, r.first_position, r.last_position),
        (1, 2, 1, 2)
    );
    let r = store.append("B-1", ExpectedVersion::Any, [event("X", 3)]).unwrap();
    assert_eq!(
        (r.first_version, r.last_version, r.first_position, r.last_position),
        (1, 1, 3, 3)
    );
    let r = store.append("A-1", ExpectedVersion::Exact(2), [event("Z", 4)]).unwrap();
    assert_eq!((r.first_version, r.first_position), (3, 4));
    let events = all(&store);
    assert_eq!(events.iter().map(|e| e.position()).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(
        stream(&store, "A-1").iter().map(|e| e.version()).collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

#[test]
fn envelope_round_trips() {
    let (_d, store) = open();
    let id = Uuid::new_v4();
    let cause = Uuid::new_v4();
    let e = EventData::new("Typed", vec![0u8, 159, 146, 150])
        .with_id(id)
        .with_metadata(r#"{"user":"ann"}"#)
        .causation_id(cause)
        .correlation_id(cause)
        .with_schema_version(7);
    let before = std::time::SystemTime::now();
    store.append("S-1", ExpectedVersion::Any, [e]).unwrap();
    let got = &stream(&store, "S-1")[0];
    assert_eq!(got.id(), id);
    assert_eq!(got.event_type(), "Typed");
    assert_eq!(got.data(), &[0u8, 159, 146, 150]);
    assert_eq!(got.schema_version(), 7);
    assert_eq!(got.causation_id(), Some(cause));
    assert_eq!(got.correlation_id(), Some(cause));
    assert!(std::str::from_utf8(got.metadata()).unwrap().contains(r#""user":"ann""#));
    let ts = got.timestamp();
    assert!(ts >= before - std::time::Duration::from_secs(1) && ts <= std::time::SystemTime::now());
    assert_eq!(got.stream(), "S-1");
    assert_eq!(got.category(), "S");
    // Follow-up events inherit correlation and point at their cause.
    let next = EventData::new("Next", "{}").caused_by(got);
    assert_eq!(
        std::str::from_utf8(next.metadata()).unwrap(),
        format!(r#"{{"$correlationId":"{cause}","$causationId":"{id}"}}"#)
    );
}

#[test]
fn generated_ids_are_unique() {
    let (_d, store) = open();
    for i in 0..100 {
        store.append("S-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
    }
    let mut ids: Vec<_> = all(&store).iter().map(|e| e.id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
}

#[test]
fn expected_version_checks_report_the_actual_version_and_write_nothing() {
    let (_d, store) = open();
    let err = store
        .append("A-1", ExpectedVersion::StreamExists, [event("E", 0)])
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { actual: None, .. }), "{err}");
    let err = store
        .append("A-1", ExpectedVersion::Exact(3), [event("E", 0)])
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { actual: None, .. }), "{err}");
    store.append("A-1", ExpectedVersion::NoStream, [event("E", 1)]).unwrap();
    let err = store
        .append("A-1", ExpectedVersion::NoStream, [event("E", 2)])
        .unwrap_err();
    assert!(
        matches!(err, Error::WrongExpectedVersion { actual: Some(1), .. }),
        "{err}"
    );
    assert!(err.to_string().contains("actual 1"), "{err}");
    let err = store
        .append("A-1", ExpectedVersion::Exact(0), [event("E", 2)])
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { actual: Some(1), .. }));
    let err = store
        .append("A-1", ExpectedVersion::Exact(2), [event("E", 2)])
        .unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { actual: Some(1), .. }));
    store
        .append("A-1", ExpectedVersion::StreamExists, [event("E", 3)])
        .unwrap();
    store.append("A-1", ExpectedVersion::Exact(2), [event("E", 4)]).unwrap();
    store.append("A-1", ExpectedVersion::Any, [event("E", 5)]).unwrap();
    assert_eq!(store.stream_version("A-1"), Some(4));
    assert_eq!(store.last_position(), 4);
}

#[test]
fn exact_retry_returns_the_original_result_without_writing() {
    let (_d, store) = open();
    store.append("A-1", ExpectedVersion::NoStream, [event("E", 0)]).unwrap();
    let batch = vec![event("E", 1), event("E", 2)];
    let first = store.append("A-1", ExpectedVersion::Exact(1), batch.clone()).unwrap();
    store.append("B-1", ExpectedVersion::Any, [event("E", 3)]).unwrap();
    let again = store.append("A-1", ExpectedVersion::Exact(1), batch.clone()).unwrap();
    assert_eq!(first, again);
    assert_eq!(store.last_position(), 4);
    // NoStream is Exact(0) for retries.
    let creation = vec![event("C", 0)];
    let r1 = store
        .append("C-1", ExpectedVersion::NoStream, creation.clone())
        .unwrap();
    let r2 = store.append("C-1", ExpectedVersion::NoStream, creation).unwrap();
    assert_eq!(r1, r2);
    // Only a prefix of the ids matches: an error, nothing written.
    let partial = vec![batch[0].clone(), event("E", 9)];
    let err = store.append("A-1", ExpectedVersion::Exact(1), partial).unwrap_err();
    assert!(matches!(err, Error::IdempotencyConflict { .. }), "{err}");
    // Same ids, different order: not a retry.
    let swapped = vec![batch[1].clone(), batch[0].clone()];
    assert!(store.append("A-1", ExpectedVersion::Exact(1), swapped).is_err());
    assert_eq!(store.last_position(), 5);
}

#[test]
fn any_retry_is_detected_in_the_window_and_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let batch = vec![event("E", 1), event("E", 2)];
    let first = {
        let store = Store::open(dir.path(), Options::default()).unwrap();
        store.append("X-1", ExpectedVersion::Any, [event("E", 0)]).unwrap();
        let first = store.append("A-1", ExpectedVersion::Any, batch.clone()).unwrap();
        let again = store.append("A-1", ExpectedVersion::Any, batch.clone()).unwrap();
        assert_eq!(first, again);
        let again = store
            .append("A-1", ExpectedVersion::StreamExists, batch.clone())
            .unwrap();
        assert_eq!(first, again);
        // Part of the ids: an error.
        let err = store
            .append("A-1", ExpectedVersion::Any, [batch[1].clone(), event("E", 3)])
            .unwrap_err();
        assert!(matches!(err, Error::IdempotencyConflict { .. }));
        // The same ids into another stream: an error, whatever the
        // expected version (an exact one too: the ids are known).
        let err = store.append("B-1", ExpectedVersion::Any, batch.clone()).unwrap_err();
        assert!(matches!(err, Error::IdempotencyConflict { .. }));
        for expected in [ExpectedVersion::NoStream, ExpectedVersion::Exact(0)] {
            let err = store.append("B-1", expected, batch.clone()).unwrap_err();
            assert!(matches!(err, Error::IdempotencyConflict { .. }), "{expected:?}: {err}");
        }
        assert_eq!(store.stream_version("B-1"), None, "nothing written");
        first
    };
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let again = store.append("A-1", ExpectedVersion::Any, batch).unwrap();
    assert_eq!(first, again);
    assert_eq!(store.last_position(), 3);
}

/// A retry matched by ids must carry the same events: another type, data
/// or schema version under a stored id is a conflict (the stored event
/// stays as it was); other metadata is still a retry.
#[test]
fn a_retry_with_other_content_is_a_conflict_and_never_rewrites_the_event() {
    let (_d, store) = open();
    let original = event("E", 1);
    let first = store.append("A-1", ExpectedVersion::Any, [original.clone()]).unwrap();
    let id = original.id();
    let changed = [
        EventData::new("Other", original.data().to_vec()).with_id(id),
        EventData::new("E", "{\"changed\":true}").with_id(id),
        original.clone().with_schema_version(7),
    ];
    for e in changed {
        for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
            let err = store.append("A-1", expected, [e.clone()]).unwrap_err();
            assert!(
                matches!(err, Error::IdempotencyConflict { id: i, .. } if i == id),
                "{err}"
            );
        }
    }
    let new_metadata = original.clone().with_metadata("{\"attempt\":2}");
    assert_eq!(
        store.append("A-1", ExpectedVersion::Any, [new_metadata]).unwrap(),
        first
    );
    let stored = stream(&store, "A-1");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_type(), original.event_type());
    assert_eq!(stored[0].data(), original.data());
    assert_eq!(stored[0].metadata(), original.metadata());
    assert_eq!(store.last_position(), 1);
}

/// Beyond the id window, a retry is still found while its events are the
/// stream's last ones: however many events other streams got since, and
/// across a reopen.
#[test]
fn a_retry_of_a_streams_latest_append_is_found_after_the_window_forgot_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options::default().with_idempotency_window_events(2);
    let batch = vec![event("E", 1), event("E", 2)];
    let first = {
        let store = Store::open(dir.path(), options()).unwrap();
        store.append("I-1", ExpectedVersion::Any, [event("E", 0)]).unwrap();
        let first = store.append("I-1", ExpectedVersion::Any, batch.clone()).unwrap();
        for i in 0..5 {
            store.append("O-1", ExpectedVersion::Any, [event("X", i)]).unwrap();
        }
        for expected in [ExpectedVersion::Any, ExpectedVersion::StreamExists] {
            assert_eq!(store.append("I-1", expected, batch.clone()).unwrap(), first);
        }
        // The last event alone is a retry too (a run of the append).
        let last = store.append("I-1", ExpectedVersion::Any, [batch[1].clone()]).unwrap();
        assert_eq!((last.first_version, last.first_position), (3, first.last_position));
        // The stream's last two events, but not these: first matches, second not.
        let err = store
            .append("I-1", ExpectedVersion::Any, [batch[0].clone(), event("E", 9)])
            .unwrap_err();
        assert!(matches!(err, Error::IdempotencyConflict { .. }), "{err}");
        assert_eq!(store.last_position(), 8);
        first
    };
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.append("I-1", ExpectedVersion::Any, batch.clone()).unwrap(), first);
    // And the content check holds there too.
    let changed = EventData::new("Other", "{}").with_id(batch[1].id());
    let err = store.append("I-1", ExpectedVersion::Any, [changed]).unwrap_err();
    assert!(matches!(err, Error::IdempotencyConflict { .. }), "{err}");
    assert_eq!(store.last_position(), 8);
    assert_eq!(stream(&store, "I-1").len(), 3);
}

/// A retry whose first ids the window has forgotten while it still holds
/// later ones (a batch larger than the window, or one the window is
/// halfway done with) is recognised as the retry it is, whether or not
/// the stream has grown since, instead of being refused as a conflict.
#[test]
fn a_retry_half_forgotten_by_the_window_is_still_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().with_idempotency_window_events(16)).unwrap();
    let big: Vec<EventData> = (0..40).map(|i| event("Big", i)).collect();
    let first = store.append("Big-1", ExpectedVersion::Any, big.clone()).unwrap();
    assert_eq!(store.append("Big-1", ExpectedVersion::Any, big.clone()).unwrap(), first);

    let part: Vec<EventData> = (0..10).map(|i| event("Part", i)).collect();
    let written = store.append("Part-1", ExpectedVersion::Any, part.clone()).unwrap();
    store
        .append("Part-1", ExpectedVersion::Any, [event("Later", 0)])
        .unwrap();
    for i in 0..9 {
        store.append("Filler-1", ExpectedVersion::Any, [event("X", i)]).unwrap();
    }
    // The window now holds the last 6 of `part`'s ids, not the first 4.
    for expected in [ExpectedVersion::Any, ExpectedVersion::StreamExists] {
        assert_eq!(store.append("Part-1", expected, part.clone()).unwrap(), written);
    }
    // Other events in the forgotten places are still a conflict.
    let mut changed = part.clone();
    changed[0] = event("Part", 99);
    let err = store.append("Part-1", ExpectedVersion::Any, changed).unwrap_err();
    assert!(matches!(err, Error::IdempotencyConflict { .. }), "{err}");
    assert_eq!(store.last_position(), 40 + 10 + 1 + 9);
}

/// Retries racing each other while the first attempt is still queued: with
/// no window at all (or one that the rest of the queued group overflows),
/// the queued events are found at the stream's end, so every thread gets
/// the one result and the events are written once.
#[test]
fn racing_retries_write_once_without_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().with_idempotency_window_events(0)).unwrap();
    let threads = 6;
    let rounds = 100;
    for round in 0..rounds {
        let batch: Vec<EventData> = (0..3).map(|i| event("Retried", i)).collect();
        let barrier = Arc::new(std::sync::Barrier::new(threads));
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (store, batch, barrier) = (&store, batch.clone(), barrier.clone());
                    scope.spawn(move || {
                        barrier.wait();
                        store
                            .append(&format!("Idem-{round}"), ExpectedVersion::Any, batch)
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.iter().all(|r| *r == results[0]), "round {round}: {results:?}");
    }
    assert_eq!(store.last_position(), 3 * rounds);
}

#[test]
fn duplicate_ids_in_one_append_are_refused() {
    let (_d, store) = open();
    let e = event("E", 1);
    let err = store.append("A-1", ExpectedVersion::Any, [e.clone(), e]).unwrap_err();
    assert!(matches!(err, Error::DuplicateEventId { .. }));
    // Far apart in a larger batch, and across the streams of one append.
    let mut many: Vec<EventData> = (0..50).map(|i| event("E", i)).collect();
    many[46] = many[3].clone();
    let err = store.append("A-1", ExpectedVersion::Any, many.clone()).unwrap_err();
    assert!(
        matches!(err, Error::DuplicateEventId { id } if id == many[3].id()),
        "{err:?}"
    );
    let (first, second) = many.split_at(25);
    let err = store
        .append_multi(&[
            StreamAppend::new("A-1", ExpectedVersion::Any, first.to_vec()),
            StreamAppend::new("B-1", ExpectedVersion::Any, second.to_vec()),
        ])
        .unwrap_err();
    assert!(
        matches!(err, Error::DuplicateEventId { id } if id == many[3].id()),
        "{err:?}"
    );
    assert_eq!(store.last_position(), 0);
}

#[test]
fn multi_stream_appends_are_all_or_nothing() {
    let (_d, store) = open();
    store
        .append("Acct-1", ExpectedVersion::NoStream, [event("Opened", 0)])
        .unwrap();
    let transfer = [
        StreamAppend::new("Acct-1", ExpectedVersion::Exact(1), [event("Debited", 1)]),
        StreamAppend::new(
            "Acct-2",
            ExpectedVersion::NoStream,
            [event("Opened", 2), event("Credited", 3)],
        ),
    ];
    let results = store.append_multi(&transfer).unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!((results[0].first_version, results[0].first_position), (2, 2));
    assert_eq!((results[1].first_version, results[1].last_version), (1, 2));
    assert_eq!((results[1].first_position, results[1].last_position), (3, 4));
    // One failing condition: nothing written anywhere.
    let bad = [
        StreamAppend::new("Acct-1", ExpectedVersion::Exact(2), [event("Debited", 4)]),
        StreamAppend::new("Acct-2", ExpectedVersion::Exact(1), [event("Credited", 5)]),
    ];
    let err = store.append_multi(&bad).unwrap_err();
    assert!(
        matches!(err, Error::WrongExpectedVersion { actual: Some(2), .. }),
        "{err}"
    );
    assert_eq!(store.last_position(), 4);
    // A retry of the whole multi-stream append returns the original results.
    assert_eq!(store.append_multi(&transfer).unwrap(), results);
    // The same stream twice in one append is refused.
    let twice = [
        StreamAppend::new("Acct-1", ExpectedVersion::Any, [event("A", 6)]),
        StreamAppend::new("Acct-1", ExpectedVersion::Any, [event("B", 7)]),
    ];
    assert!(matches!(store.append_multi(&twice), Err(Error::InvalidInput(_))));
}

#[test]
fn limits_are_enforced_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().with_segment_size_bytes(64 * 1024)).unwrap();
    let long = "x".repeat(limits::STREAM_NAME_BYTES_MAX + 1);
    let cases: Vec<(String, Vec<EventData>)> = vec![
        (String::new(), vec![event("E", 0)]),
        (long.clone(), vec![event("E", 0)]),
        ("S-1".into(), vec![EventData::new("", "{}")]),
        ("S-1".into(), vec![EventData::new(long.clone(), "{}")]),
        ("S-1".into(), vec![]),
        (
            "S-1".into(),
            vec![EventData::new("Big", vec![0u8; limits::EVENT_PAYLOAD_BYTES_MAX + 1])],
        ),
        (
            "S-1".into(),
            vec![EventData::new("TooBigForSegment", vec![0u8; 70 * 1024])],
        ),
    ];
    for (stream, events) in cases {
        let err = store.append(&stream, ExpectedVersion::Any, events).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        assert!(!err.to_string().is_empty());
    }
    let name = "y".repeat(limits::STREAM_NAME_BYTES_MAX);
    store.append(&name, ExpectedVersion::Any, [event("E", 1)]).unwrap();
    assert_eq!(store.last_position(), 1);
    assert!(matches!(
        Options::default().with_segment_size_bytes(10).validate_for_test(),
        Err(Error::InvalidInput(_))
    ));
}

trait ValidateForTest {
    fn validate_for_test(self) -> Result<(), Error>;
}

impl ValidateForTest for Options {
    fn validate_for_test(self) -> Result<(), Error> {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path(), self).map(|_| ())
    }
}

/// The versions a stream read returns.
fn stream_versions(store: &Store, stream: &str, options: ReadStream) -> Vec<u64> {
    store
        .read_stream(stream, options)
        .unwrap()
        .map(|e| e.unwrap().version())
        .collect()
}

#[test]
fn stream_reads_go_both_ways_with_start_and_limit() {
    let (_d, store) = open();
    for i in 0..10 {
        store.append("S-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
        store.append("T-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
    }
    let versions = |o: ReadStream| stream_versions(&store, "S-1", o);
    assert_eq!(versions(ReadStream::forward()), (1..=10).collect::<Vec<_>>());
    assert_eq!(versions(ReadStream::forward().from_version(4).limit(3)), [4, 5, 6]);
    assert_eq!(versions(ReadStream::forward().from_version(11)), Vec::<u64>::new());
    assert_eq!(
        versions(ReadStream::forward().from_version(0)),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(versions(ReadStream::backward()), (1..=10).rev().collect::<Vec<_>>());
    assert_eq!(versions(ReadStream::backward().from_version(4)), [4, 3, 2, 1]);
    assert_eq!(versions(ReadStream::backward().from_version(100).limit(2)), [10, 9]);
    assert_eq!(versions(ReadStream::forward().limit(0)), Vec::<u64>::new());
    assert!(stream(&store, "Nope-1").is_empty());
    assert!(store.read_stream("", ReadStream::forward()).is_err());
}

/// A long stream's read, at any start and limit and in either direction,
/// across the read's pages; and a read covers the versions that existed
/// when it was made, not those appended while it is read.
#[test]
fn long_stream_reads_page_at_any_start_and_limit() {
    let (_d, store) = open();
    let total = 1_300u64;
    for start in (0..total).step_by(100) {
        store
            .append("S-1", ExpectedVersion::Any, (start..start + 100).map(|i| event("E", i)))
            .unwrap();
        store.append("T-1", ExpectedVersion::Any, [event("E", start)]).unwrap();
    }
    let versions = |o: ReadStream| stream_versions(&store, "S-1", o);
    for from in [1u64, 2, 511, 512, 513, 1024, 1299, 1300, 1301] {
        for limit in [1usize, 511, 512, 513, 700, usize::MAX] {
            let forward: Vec<u64> = (from..=total).take(limit).collect();
            assert_eq!(versions(ReadStream::forward().from_version(from).limit(limit)), forward);
            let backward: Vec<u64> = (1..=from.min(total)).rev().take(limit).collect();
            assert_eq!(
                versions(ReadStream::backward().from_version(from).limit(limit)),
                backward
            );
        }
    }
    let mut forward = store.read_stream("S-1", ReadStream::forward()).unwrap();
    let mut backward = store.read_stream("S-1", ReadStream::backward()).unwrap();
    let first = forward.next().unwrap().unwrap().version();
    let last = backward.next().unwrap().unwrap().version();
    store
        .append("S-1", ExpectedVersion::Any, (0..600).map(|i| event("F", i)))
        .unwrap();
    let rest_forward: Vec<u64> = forward.map(|e| e.unwrap().version()).collect();
    let rest_backward: Vec<u64> = backward.map(|e| e.unwrap().version()).collect();
    assert_eq!((first, rest_forward), (1, (2..=total).collect::<Vec<_>>()));
    assert_eq!((last, rest_backward), (total, (1..total).rev().collect::<Vec<_>>()));
}

#[test]
fn long_reads_cross_pages_in_both_directions() {
    let (_d, store) = open();
    // More than two internal read pages, in batches and single events,
    // over two streams.
    let total = 1_300u64;
    let mut written = 0u64;
    while written < total {
        let n = (written % 7 + 1).min(total - written);
        let stream = if written.is_multiple_of(2) { "Order-1" } else { "Cart-1" };
        store
            .append(stream, ExpectedVersion::Any, (0..n).map(|i| event("E", written + i)))
            .unwrap();
        written += n;
    }
    let positions = |o: ReadAll| -> Vec<u64> { store.read_all(o).unwrap().map(|e| e.unwrap().position()).collect() };
    for from in [0u64, 1, 511, 512, 513, 1023, 1024, 1299, 1300] {
        let forward: Vec<u64> = (from + 1..=total).collect();
        assert_eq!(
            positions(ReadAll::forward().from_position(from)),
            forward,
            "forward from {from}"
        );
        let backward: Vec<u64> = (1..from.min(total + 1)).rev().collect();
        if from > 0 {
            assert_eq!(
                positions(ReadAll::backward().from_position(from)),
                backward,
                "backward from {from}"
            );
        }
        let limited: Vec<u64> = forward.iter().copied().take(700).collect();
        assert_eq!(positions(ReadAll::forward().from_position(from).limit(700)), limited);
    }
    assert_eq!(positions(ReadAll::backward()), (1..=total).rev().collect::<Vec<_>>());
    // Stream reads page too; each event's position matches the global read.
    let all: Vec<(String, u64)> = store
        .read_all(ReadAll::forward())
        .unwrap()
        .map(|e| e.map(|e| (e.stream().to_string(), e.position())).unwrap())
        .collect();
    for (stream, direction) in [("Order-1", ReadStream::forward()), ("Cart-1", ReadStream::backward())] {
        let mut want: Vec<u64> = all.iter().filter(|(s, _)| s == stream).map(|(_, p)| *p).collect();
        if direction == ReadStream::backward() {
            want.reverse();
        }
        let got: Vec<u64> = store
            .read_stream(stream, direction)
            .unwrap()
            .map(|e| e.unwrap().position())
            .collect();
        assert_eq!(got, want, "{stream}");
    }
}

#[test]
fn global_reads_use_checkpoint_semantics_and_filters() {
    let (_d, store) = open();
    for i in 0..6u64 {
        let kind = if i % 2 == 0 { "Even" } else { "Odd" };
        let stream = if i < 3 { "Order-1" } else { "Cart-1" };
        store.append(stream, ExpectedVersion::Any, [event(kind, i)]).unwrap();
    }
    let positions = |o: ReadAll| -> Vec<u64> { store.read_all(o).unwrap().map(|e| e.unwrap().position()).collect() };
    assert_eq!(positions(ReadAll::forward()), [1, 2, 3, 4, 5, 6]);
    assert_eq!(positions(ReadAll::forward().from_position(2)), [3, 4, 5, 6]);
    assert_eq!(positions(ReadAll::forward().from_position(6)), Vec::<u64>::new());
    assert_eq!(positions(ReadAll::forward().from_position(2).limit(2)), [3, 4]);
    assert_eq!(positions(ReadAll::backward()), [6, 5, 4, 3, 2, 1]);
    assert_eq!(positions(ReadAll::backward().from_position(3)), [2, 1]);
    assert_eq!(positions(ReadAll::backward().limit(1)), [6]);
    assert_eq!(positions(ReadAll::forward().event_type("Odd")), [2, 4, 6]);
    assert_eq!(
        positions(ReadAll::forward().event_type("Odd").event_type("Even").limit(3)),
        [1, 2, 3]
    );
    assert_eq!(positions(ReadAll::forward().stream_prefix("Cart")), [4, 5, 6]);
    assert_eq!(
        positions(ReadAll::forward().category("Order").event_type("Even")),
        [1, 3]
    );
    let category: Vec<u64> = store
        .read_category("Cart", 4, None)
        .unwrap()
        .map(|e| e.unwrap().position())
        .collect();
    assert_eq!(category, [5, 6]);
    let category: Vec<u64> = store
        .read_category("Order", 0, Some(2))
        .unwrap()
        .map(|e| e.unwrap().position())
        .collect();
    assert_eq!(category, [1, 2]);
    assert!(store.read_category("None", 0, None).unwrap().next().is_none());
}

#[test]
fn category_reads_merge_streams_in_global_order() {
    let (_d, store) = open();
    for i in 0..30u64 {
        store
            .append(&format!("Order-{}", i % 4), ExpectedVersion::Any, [event("E", i)])
            .unwrap();
        store.append("Other-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
    }
    let expected: Vec<u64> = (0..30).map(|i| 2 * i + 1).collect();
    assert_eq!(category_positions(&store, "Order"), expected);
}

/// The positions a category read returns.
fn category_positions(store: &Store, category: &str) -> Vec<u64> {
    store
        .read_category(category, 0, None)
        .unwrap()
        .map(|e| e.unwrap().position())
        .collect()
}

/// A category read made while its streams grow is the category as it was
/// at one moment: every event of it up to some position, none after, with
/// no gap, even with more streams than one slice of the read copies.
#[test]
fn a_category_read_during_appends_is_a_gapless_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().with_durability(Durability::Buffered)).unwrap();
    let streams = 1000u64;
    let appended = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..20_000u64 {
                let stream = if i % 3 == 0 {
                    "Other-1".to_string()
                } else {
                    format!("Order-{}", i % streams)
                };
                store.append(&stream, ExpectedVersion::Any, [event("E", i)]).unwrap();
                appended.store(i + 1, std::sync::atomic::Ordering::Release);
            }
        });
        while appended.load(std::sync::atomic::Ordering::Acquire) < 20_000 {
            let got = category_positions(&store, "Order");
            // Positions are i + 1; Order's are those with i % 3 != 0.
            let expected: Vec<u64> = (1..=got.last().copied().unwrap_or(0))
                .filter(|p| (p - 1) % 3 != 0)
                .collect();
            assert_eq!(got, expected);
        }
    });
}

/// Listing streams walks the index in slices; every stream comes back once,
/// however many slices there are.
#[test]
fn stream_listings_cover_every_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().with_durability(Durability::Buffered)).unwrap();
    let streams = 9_000u64;
    let batch: Vec<StreamAppend> = (0..streams)
        .map(|i| {
            let events = (0..1 + i % 5).map(|k| event("E", i * 10 + k));
            StreamAppend::new(format!("S-{i:05}"), ExpectedVersion::Any, events.collect::<Vec<_>>())
        })
        .collect();
    for part in batch.chunks(1000) {
        store.append_multi(part).unwrap();
    }
    let names = store.stream_names();
    let expected: Vec<String> = (0..streams).map(|i| format!("S-{i:05}")).collect();
    assert_eq!(names, expected);
    let top = store.largest_streams(3);
    assert_eq!(
        top,
        vec![
            ("S-00004".to_string(), 5),
            ("S-00009".to_string(), 5),
            ("S-00014".to_string(), 5)
        ]
    );
}

#[test]
fn a_second_open_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let err = Store::open(dir.path(), Options::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    store.close().unwrap();
    Store::open(dir.path(), Options::default()).unwrap();
}

/// Deleting the lock file of an open store (a cleanup script taking it for
/// a stale lock) does not let a second writer in: the directory itself is
/// locked too (on Unix), and a second open, which would create and lock a
/// new lock file, is still refused; so is a read-only one.
#[cfg(unix)]
#[test]
fn a_deleted_lock_file_does_not_let_a_second_writer_in() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    std::fs::remove_file(dir.path().join(annal::LOCK_FILE_NAME)).unwrap();
    let err = Store::open(dir.path(), Options::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    let err = Store::open(dir.path(), Options::default().with_read_only(true)).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    store.close().unwrap();
    Store::open(dir.path(), Options::default()).unwrap().close().unwrap();
}

#[test]
fn closed_handles_refuse_appends() {
    let (_d, store) = open();
    let other = store.clone();
    store.close().unwrap();
    let err = other.append("A-1", ExpectedVersion::Any, [event("E", 0)]).unwrap_err();
    assert!(matches!(err, Error::Closed));
}

/// After close, a remaining clone's index save is refused (close saved the
/// index, and nothing is written after it), while a sync has nothing left
/// to do.
#[test]
fn closed_handles_refuse_index_saves_and_sync_is_a_no_op() {
    let (d, store) = open();
    store.append("A-1", ExpectedVersion::Any, [event("E", 0)]).unwrap();
    let other = store.clone();
    store.close().unwrap();
    let index = d.path().join("store").join("index");
    std::fs::remove_file(&index).unwrap();
    assert!(matches!(other.save_index(), Err(Error::Closed)));
    assert!(!index.exists(), "an index file was written after close");
    other.sync().unwrap();
    drop(other);
    let store = Store::open(d.path().join("store"), Options::default()).unwrap();
    assert_eq!(store.read_stream("A-1", ReadStream::forward()).unwrap().count(), 1);
}

#[test]
fn open_without_create_fails_on_missing_store() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(
        dir.path().join("nope"),
        Options::default().with_create_if_missing(false),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    // An existing directory without a store: refused, and left untouched.
    let err = Store::open(dir.path(), Options::default().with_create_if_missing(false)).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "open created files");
}

#[test]
fn concurrent_writers_to_one_stream_never_share_a_version() {
    let (_d, store) = open();
    let store = Arc::new(store);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut wins = 0;
                let mut conflicts = 0;
                while wins < 20 {
                    let seen = store.stream_version("Hot-1").unwrap_or(0);
                    let expected = if seen == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(seen)
                    };
                    match store.append("Hot-1", expected, [event("E", t)]) {
                        Ok(r) => {
                            assert_eq!(r.first_version, seen + 1);
                            wins += 1;
                        }
                        Err(Error::WrongExpectedVersion { actual, .. }) => {
                            assert!(actual.unwrap_or(0) > seen);
                            conflicts += 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(store.stream_version("Hot-1"), Some(160));
    let versions: Vec<u64> = stream(&store, "Hot-1").iter().map(|e| e.version()).collect();
    assert_eq!(versions, (1..=160).collect::<Vec<_>>());
    // Not asserted (timing-dependent), but printed for the curious.
    eprintln!("conflicts seen: {conflicts}");
}

#[test]
fn stats_describe_the_store() {
    let (_d, store) = open();
    for i in 0..10 {
        store
            .append(&format!("S-{}", i % 3), ExpectedVersion::Any, [event("E", i)])
            .unwrap();
    }
    let stats = store.stats();
    assert_eq!(
        (stats.events, stats.streams, stats.segments, stats.last_position),
        (10, 3, 1, 10)
    );
    assert!(stats.disk_bytes > 0 && stats.index_memory_bytes > 0);
    assert_eq!(store.largest_streams(1), vec![("S-0".to_string(), 4)]);
    assert_eq!(store.stream_names(), ["S-0", "S-1", "S-2"]);
    assert_eq!(store.read_position(3).unwrap().unwrap().position(), 3);
    assert!(store.read_position(11).unwrap().is_none());
    assert!(store.read_position(0).unwrap().is_none());
}

/// The index memory figure says how much of it is read in place from the
/// index file: nothing for a new store, 8 bytes per loaded event in each
/// of the two tables after a reopen (on unix, where the file stays
/// mapped), unchanged by later appends, which go to the heap.
#[test]
fn stats_tell_mapped_index_memory_from_heap() {
    let (dir, store) = open();
    for i in 0..100 {
        store
            .append(&format!("S-{}", i % 7), ExpectedVersion::Any, [event("E", i)])
            .unwrap();
    }
    assert_eq!(store.stats().index_mapped_bytes, 0);
    store.close().unwrap();
    let store = Store::open(dir.path().join("store"), Options::default()).unwrap();
    assert!(store.recovery_report().index_loaded);
    let stats = store.stats();
    let expected = if cfg!(unix) { 100 * 16 } else { 0 };
    assert_eq!(stats.index_mapped_bytes, expected);
    assert!(stats.index_memory_bytes > stats.index_mapped_bytes);
    store.append("S-0", ExpectedVersion::Any, [event("E", 100)]).unwrap();
    let after = store.stats();
    assert_eq!(after.index_mapped_bytes, expected);
    assert!(after.index_memory_bytes > stats.index_memory_bytes);
}

#[test]
fn durability_modes_all_persist_on_close() {
    for durability in [
        annal::Durability::Sync,
        annal::Durability::Buffered,
        annal::Durability::Periodic(std::time::Duration::from_millis(5)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default().with_durability(durability);
        {
            let store = Store::open(dir.path(), options.clone()).unwrap();
            for i in 0..50 {
                store.append("S-1", ExpectedVersion::Any, [event("E", i)]).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let store = Store::open(dir.path(), options).unwrap();
        assert_eq!(store.stream_version("S-1"), Some(50), "{durability:?}");
    }
}

#[test]
fn the_category_apis_select_the_same_streams() {
    let (_d, store) = open();
    for stream in ["Order", "Order-1", "Order-2-x", "Orders-1", "Cart-1", "Order-1"] {
        store.append(stream, ExpectedVersion::Any, [event("E", 0)]).unwrap();
    }
    let streams =
        |events: Vec<annal::RecordedEvent>| -> Vec<String> { events.iter().map(|e| e.stream().to_string()).collect() };
    let want = ["Order", "Order-1", "Order-2-x", "Order-1"];
    let read_all = store
        .read_all(ReadAll::forward().category("Order"))
        .unwrap()
        .collect_all()
        .unwrap();
    assert_eq!(streams(read_all), want);
    let read_category = store.read_category("Order", 0, None).unwrap().collect_all().unwrap();
    assert_eq!(streams(read_category), want);
    let mut sub = store.subscribe_category("Order", annal::StartFrom::Start).unwrap();
    let mut subscribed = Vec::new();
    while let Some(e) = sub.try_recv().unwrap() {
        subscribed.push(e);
    }
    assert_eq!(streams(subscribed), want);
    // A name with a dash is not a category of its own, and could never
    // match: refused.
    assert!(matches!(
        store.read_all(ReadAll::forward().category("Order-2")),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        store.read_category("Order-2", 0, None),
        Err(Error::InvalidInput(_))
    ));
}

/// A child process forked while the store was open shares the lock file's
/// descriptor, and so its lock, until it starts its program: an open right
/// after a close must wait for that moment, not report `Locked`.
#[cfg(unix)]
#[test]
fn reopening_while_child_processes_start_is_never_locked() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path(), Options::default()).unwrap().close().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let spawning = stop.clone();
    let spawner = std::thread::spawn(move || {
        let mut children = 0;
        while !spawning.load(Ordering::Relaxed) {
            if std::process::Command::new("true").status().is_ok() {
                children += 1;
            }
        }
        children
    });
    let mut locked = 0;
    for round in 0..300 {
        let read_only = round % 2 == 1;
        match Store::open(dir.path(), Options::default().with_read_only(read_only)) {
            Ok(store) => store.close().unwrap(),
            Err(Error::Locked { .. }) => locked += 1,
            Err(e) => panic!("{e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let children = spawner.join().unwrap();
    assert!(children > 0, "no child process started");
    assert_eq!(
        locked, 0,
        "{locked} of 300 opens reported Locked while {children} children started"
    );
}

/// Stream names and event types outside ASCII read back exactly as
/// written (names are read through an ASCII fast path, and the general
/// UTF-8 check otherwise).
#[test]
fn non_ascii_names_and_types_read_back_as_written() {
    let (_d, store) = open();
    let names = [
        ("Bestellung-Größe", "Bezahlt✓"),
        ("注文-1", "支払済み"),
        ("plain-1", "Plain"),
    ];
    for (stream, event_type) in names {
        store
            .append(stream, ExpectedVersion::NoStream, [EventData::new(event_type, "{}")])
            .unwrap();
    }
    for (stream, event_type) in names {
        let read = store
            .read_stream(stream, ReadStream::forward())
            .unwrap()
            .collect_all()
            .unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].stream(), stream);
        assert_eq!(read[0].event_type(), event_type);
    }
    let all: Vec<(String, String)> = store
        .read_all(ReadAll::forward())
        .unwrap()
        .map(|e| e.map(|e| (e.stream().to_string(), e.event_type().to_string())))
        .collect::<annal::Result<_>>()
        .unwrap();
    let want: Vec<(String, String)> = names.iter().map(|(s, t)| (s.to_string(), t.to_string())).collect();
    assert_eq!(all, want);
}
