//! The recent-id window that makes retried appends with
//! `ExpectedVersion::Any` idempotent, at its edges: a window of one id, an
//! id the log holds twice, a retry half inside the window, and retries of
//! an append still queued (DESIGN.md, "Appending").

use annal::{AppendResult, Durability, Error, EventData, ExpectedVersion, Options, Store};

fn opts(capacity: usize) -> Options {
    Options::default()
        .with_segment_size_bytes(8 * 1024)
        .with_idempotency_window_events(capacity)
}

fn ev(n: u64) -> EventData {
    EventData::new("E", format!("{{\"n\":{n}}}"))
}

/// The same id in the log twice (written again once the window forgot it),
/// reopened with a window holding both: evicting the older copy must not
/// forget the newer one.
#[test]
fn duplicate_id_in_log_after_reopen_with_bigger_window() {
    let dir = tempfile::tempdir().unwrap();
    let x = ev(1);
    {
        let s = Store::open(dir.path(), opts(1)).unwrap();
        s.append("A-1", ExpectedVersion::Any, [x.clone()]).unwrap(); // @1
        s.append("A-1", ExpectedVersion::Any, [ev(2)]).unwrap(); // @2, X forgotten, not at A's end
        let r = s.append("C-1", ExpectedVersion::Any, [x.clone()]).unwrap(); // @3: written again
        assert_eq!(r.first_position, 3);
        s.close().unwrap();
    }
    // Window 3 holds X@1, Y@2, X@3.
    let s = Store::open(dir.path(), opts(3)).unwrap();
    s.append("C-1", ExpectedVersion::Any, [ev(4)]).unwrap(); // @4 evicts X@1
    s.append("D-1", ExpectedVersion::Any, [ev(5)]).unwrap(); // @5 evicts Y@2
    // X@3 is in the window (positions 3..5): a retry into C is a retry.
    let r = s.append("C-1", ExpectedVersion::Any, [x.clone()]).unwrap();
    assert_eq!((r.first_position, r.first_version), (3, 1));
    assert_eq!(s.last_position(), 5);
    // A retry into A (X@1 is long forgotten, A's end is not X): the window
    // places X in C, so a conflict.
    let err = s.append("A-1", ExpectedVersion::Any, [x.clone()]).unwrap_err();
    assert!(matches!(err, Error::IdempotencyConflict { .. }), "{err}");
    assert_eq!(s.last_position(), 5);
}

#[test]
fn capacity_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts(1)).unwrap();
    let a = ev(1);
    let b = ev(2);
    let ra = s.append("A-1", ExpectedVersion::Any, [a.clone()]).unwrap();
    let rb = s.append("B-1", ExpectedVersion::Any, [b.clone()]).unwrap();
    // a is A's end: still a retry (stream end).
    assert_eq!(s.append("A-1", ExpectedVersion::Any, [a.clone()]).unwrap(), ra);
    assert_eq!(s.append("B-1", ExpectedVersion::Any, [b.clone()]).unwrap(), rb);
    // b into A: window holds b (in B): conflict.
    assert!(matches!(
        s.append("A-1", ExpectedVersion::Any, [b.clone()]),
        Err(Error::IdempotencyConflict { .. })
    ));
    // a into B: a forgotten; B's end is b: written again.
    let r = s.append("B-1", ExpectedVersion::Any, [a.clone()]).unwrap();
    assert_eq!(r.first_position, 3);
    // now a (in B@3) is the window; retry A [a]: conflict (window says B).
    assert!(matches!(
        s.append("A-1", ExpectedVersion::Any, [a.clone()]),
        Err(Error::IdempotencyConflict { .. })
    ));
    assert_eq!(s.append("B-1", ExpectedVersion::Any, [a.clone()]).unwrap(), r);
    assert_eq!(s.last_position(), 3);
}

/// A multi-event retry whose first event the window forgot while it still
/// holds the last, with a different later event: a conflict (the stream
/// ends with the first id), as before the skip of `retry_at_stream_end`.
#[test]
fn partial_retry_at_stream_end_half_in_window_is_a_conflict() {
    for cap in [1usize, 2] {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), opts(cap)).unwrap();
        let batch = vec![ev(1), ev(2), ev(3)];
        s.append("A-1", ExpectedVersion::Any, batch.clone()).unwrap();
        let changed = vec![batch[0].clone(), ev(8), ev(9)];
        let got = s.append("A-1", ExpectedVersion::Any, changed);
        assert!(
            matches!(got, Err(Error::IdempotencyConflict { .. })),
            "cap {cap}: {got:?}"
        );
        assert_eq!(s.last_position(), 3, "cap {cap}");
    }
}

/// Retries racing with other streams' appends while the first attempt is
/// still queued (durable mode, whose leader writes and syncs without the
/// writer lock), with a window of one id: the queued event is found at the
/// stream's end.
#[test]
fn racing_single_event_retries_with_a_window_of_one() {
    racing_single_event_retries(Durability::Sync);
}

/// The same in the modes whose appends never wait queued while another is
/// written (the leader holds the writer lock from queueing to publishing).
#[test]
fn racing_single_event_retries_buffered_and_periodic() {
    racing_single_event_retries(Durability::Buffered);
    racing_single_event_retries(Durability::Periodic(std::time::Duration::from_millis(5)));
}

fn racing_single_event_retries(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .with_idempotency_window_events(1)
        .with_durability(durability);
    let store = Store::open(dir.path(), options).unwrap();
    let threads = 6;
    let rounds = 150;
    let noise = std::sync::atomic::AtomicU64::new(0);
    for round in 0..rounds {
        let e = ev(round);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
        let results: Vec<Option<AppendResult>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (store, e, barrier, noise) = (&store, e.clone(), barrier.clone(), &noise);
                    scope.spawn(move || {
                        barrier.wait();
                        if t % 2 == 0 {
                            Some(
                                store
                                    .append(&format!("Idem-{round}"), ExpectedVersion::Any, [e])
                                    .unwrap(),
                            )
                        } else {
                            noise.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            store
                                .append(&format!("Noise-{t}"), ExpectedVersion::Any, [ev(1_000_000)])
                                .unwrap();
                            None
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mine: Vec<_> = results.into_iter().flatten().collect();
        assert!(mine.iter().all(|r| *r == mine[0]), "round {round}: {mine:?}");
    }
    assert_eq!(
        store.last_position(),
        rounds + noise.load(std::sync::atomic::Ordering::Relaxed)
    );
}
