//! An outside-in review of the library API against its docs (rustdoc,
//! README.md, docs/*.md), as an application that embeds annal would use
//! it. Only probes that failed when they were written are kept here (one:
//! the docs were wrong, and were changed to what the code does); the many
//! that held (expected versions, append_multi edge cases, idempotent
//! retries before and after reopen, read edges, subscriptions and
//! dispatchers racing writers and close, snapshots, checkpoints,
//! projections, repository, backups, simulated power loss) are listed in
//! the review's report.

use annal::{Error, EventData, ExpectedVersion, Options, Store};

fn ev(n: u64) -> EventData {
    EventData::new("X", format!("{{\"n\":{n}}}"))
}

/// `Options::with_idempotency_window_events`: a retry of an older append
/// after later appends to its stream, beyond the window, writes its events
/// again under the same ids; a later retry under `Any` finds those copies
/// in the window and gets their result (no third copy), while under
/// `Exact` it still gets the original's. (The docs said that later `Any`
/// retry was refused with `IdempotencyConflict`; the window has always
/// taken it for a retry of the copy, the latest append of those ids.)
#[test]
fn a_later_any_retry_of_an_append_written_twice_gets_the_copys_result() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().with_idempotency_window_events(3)).unwrap();
    let e1 = ev(1);
    let original = store.append("a-1", ExpectedVersion::Any, [e1.clone()]).unwrap(); // @1, v1
    store.append("a-1", ExpectedVersion::Any, [ev(2)]).unwrap(); // @2: a-1 moved on
    for n in 0..3 {
        store.append("b-1", ExpectedVersion::Any, [ev(10 + n)]).unwrap(); // @3..@5: e1 leaves the window
    }
    // Beyond the window: written again, as documented.
    let copy = store.append("a-1", ExpectedVersion::Any, [e1.clone()]).unwrap();
    assert_eq!((copy.first_version, copy.first_position), (3, 6));
    store.append("a-1", ExpectedVersion::Any, [ev(3)]).unwrap(); // @7
    let before = store.last_position();

    // Under Exact: the original result.
    assert_eq!(
        store.append("a-1", ExpectedVersion::Exact(0), [e1.clone()]).unwrap(),
        original
    );
    // Under Any and StreamExists: the copy's, and nothing is written.
    for expected in [ExpectedVersion::Any, ExpectedVersion::StreamExists] {
        assert_eq!(
            store.append("a-1", expected, [e1.clone()]).unwrap(),
            copy,
            "{expected:?}"
        );
        assert_eq!(store.last_position(), before, "{expected:?}");
    }
    // The same id with other content is still refused.
    let other = EventData::new("X", "{\"n\":99}").with_id(e1.id());
    assert!(matches!(
        store.append("a-1", ExpectedVersion::Any, [other]),
        Err(Error::IdempotencyConflict { .. })
    ));
    assert_eq!(store.last_position(), before);
    store.close().unwrap();
}
