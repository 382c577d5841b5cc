//! An outside-in review of the library API against its docs (rustdoc,
//! README.md, docs/*.md), as an application that embeds annal would use
//! it. Only probes that fail on the current code are kept here; the many
//! that held (expected versions, append_multi edge cases, idempotent
//! retries before and after reopen, read edges, subscriptions and
//! dispatchers racing writers and close, snapshots, checkpoints,
//! projections, repository, backups, simulated power loss) are listed in
//! the review's report.

use annal::{Error, EventData, ExpectedVersion, Options, Store};

fn ev(n: u64) -> EventData {
    EventData::new("X", format!("{{\"n\":{n}}}"))
}

/// `Options::with_idempotency_window_events` promises: "a retry of an
/// older append after later appends to its stream is recognised only
/// within it (retries with `ExpectedVersion::Exact` always are): beyond
/// it, such a retry writes its events again, under the same ids, and a
/// later retry of the original append under `Any` then meets those copies
/// in the window and is refused with [`Error::IdempotencyConflict`] (under
/// `Exact` it still gets the original result)." docs/DESIGN.md says the
/// same ("after which a retry of the original under `Any` finds the
/// copies in the window and is refused").
///
/// The later retry under `Any` is not refused: it is acknowledged with the
/// copy's versions and positions, while the same retry under `Exact(0)`
/// is acknowledged with the original's, so one logical append gets two
/// different acknowledgements depending on its expected version.
#[test]
fn later_any_retry_of_an_append_written_twice_is_refused() {
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

    // Under Exact: the original result, as documented.
    assert_eq!(
        store.append("a-1", ExpectedVersion::Exact(0), [e1.clone()]).unwrap(),
        original
    );

    // Under Any: documented to be refused with IdempotencyConflict.
    let retried = store.append("a-1", ExpectedVersion::Any, [e1.clone()]);
    assert_eq!(store.last_position(), before);
    assert!(
        matches!(retried, Err(Error::IdempotencyConflict { .. })),
        "a later retry of the original under Any was acknowledged instead of refused: {retried:?} \
         (the original is at {original:?})"
    );
}
