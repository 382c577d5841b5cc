//! An outside review of subscriptions, the dispatcher, projections and
//! snapshots: each test checks a promise of README.md,
//! docs/SUBSCRIPTIONS.md, docs/AGGREGATES.md, docs/DURABILITY.md or the
//! rustdoc, through the public API (and the CLI where it says something).

mod aggregate_support;
mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use annal::{
    Durability, Error, EventData, ExpectedVersion, HandlerError, Options, Projection, ProjectionError,
    ProjectionRunner, ReadAll, RecordedEvent, SnapshotIssue, SnapshotOptions, StartFrom, Store, StreamAppend,
    SubscriptionFilter, SubscriptionState,
};

// ---------------------------------------------------------------- helpers

fn opts(durability: Durability) -> Options {
    Options::default()
        .with_segment_size_bytes(64 * 1024)
        .with_durability(durability)
}

fn modes() -> Vec<(&'static str, Durability)> {
    vec![
        ("sync", Durability::Sync),
        ("periodic", Durability::Periodic(Duration::from_millis(2))),
        ("buffered", Durability::Buffered),
    ]
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit`
/// (a hang is a failure, not a stuck test run).
fn within<T: Send + 'static>(limit: Duration, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {limit:?} (hang)"),
    }
}

/// Which events a subscriber or handler is meant to get.
#[derive(Clone)]
struct Spec {
    name: &'static str,
    filter: SubscriptionFilter,
    accepts: fn(&RecordedEvent) -> bool,
}

fn specs() -> Vec<Spec> {
    vec![
        Spec {
            name: "all",
            filter: SubscriptionFilter::all(),
            accepts: |_| true,
        },
        Spec {
            name: "category A",
            filter: SubscriptionFilter::category("A"),
            accepts: |e| e.stream() == "A" || e.stream().starts_with("A-"),
        },
        Spec {
            name: "category A, type X",
            filter: SubscriptionFilter::category("A").event_type("X"),
            accepts: |e| (e.stream() == "A" || e.stream().starts_with("A-")) && e.event_type() == "X",
        },
        Spec {
            name: "type Y",
            filter: SubscriptionFilter::all().event_type("Y"),
            accepts: |e| e.event_type() == "Y",
        },
        Spec {
            name: "stream A-1",
            filter: SubscriptionFilter::stream("A-1"),
            accepts: |e| e.stream() == "A-1",
        },
        Spec {
            name: "stream A (the category's own name)",
            filter: SubscriptionFilter::stream("A"),
            accepts: |e| e.stream() == "A",
        },
        Spec {
            name: "stream B-0 type X",
            filter: SubscriptionFilter::stream("B-0").event_type("X"),
            accepts: |e| e.stream() == "B-0" && e.event_type() == "X",
        },
    ]
}

/// (position, id) of every event after `after` that `accepts` keeps.
fn expected(store: &Store, after: u64, accepts: fn(&RecordedEvent) -> bool) -> Vec<(u64, String)> {
    store
        .read_all(ReadAll::forward().from_position(after))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(accepts)
        .map(|e| (e.position(), e.id().to_string()))
        .collect()
}

/// One append of writer `t`, number `i`: 1 to 5 events over streams A-t,
/// B-t and A, types X and Y.
fn writer_batch(t: usize, i: usize) -> (String, Vec<EventData>) {
    let stream = match i % 3 {
        0 => format!("A-{t}"),
        1 => format!("B-{t}"),
        _ => "A".to_string(),
    };
    let n = i % 5 + 1;
    let events = (0..n)
        .map(|k| {
            EventData::new(
                if (i + k).is_multiple_of(2) { "X" } else { "Y" },
                format!("{t} {i} {k}"),
            )
        })
        .collect();
    (stream, events)
}

/// A dispatcher with a handler of each of `specs()`, started where `from`
/// says for it, that pushes the position of each event it is given to
/// its own of `seen`.
fn recording_dispatcher(
    store: &Store,
    seen: &[Arc<Mutex<Vec<u64>>>],
    from: impl Fn(&Spec) -> StartFrom,
) -> annal::Dispatcher {
    let mut builder = store.dispatcher();
    for (spec, s) in specs().into_iter().zip(seen) {
        let s = s.clone();
        let from = from(&spec);
        builder = builder
            .handler(spec.name, spec.filter, from, move |e| {
                s.lock().unwrap().push(e.position());
                Ok(())
            })
            .unwrap();
    }
    builder.start().unwrap()
}

fn populate(store: &Store, batches: usize) {
    for i in 0..batches {
        let (stream, events) = writer_batch(i % 4, i);
        store.append(&stream, ExpectedVersion::Any, events).unwrap();
    }
}

/// A consumer thread: receives until the writers are done and the
/// subscription's position reached the final head.
fn consume(
    mut sub: annal::Subscription,
    done: Arc<AtomicBool>,
    final_head: Arc<AtomicU64>,
) -> std::thread::JoinHandle<(u64, Vec<(u64, String)>)> {
    let start = sub.position();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        loop {
            assert!(Instant::now() < deadline, "subscription from {start} never caught up");
            match sub.recv_timeout(Duration::from_millis(20)).unwrap() {
                Some(e) => got.push((e.position(), e.id().to_string())),
                None => {
                    if done.load(Ordering::Acquire) && sub.position() >= final_head.load(Ordering::Acquire) {
                        break;
                    }
                }
            }
        }
        (start, got)
    })
}

fn check_in_order_each_once(what: &str, got: &[(u64, String)], want: &[(u64, String)]) {
    for w in got.windows(2) {
        assert!(
            w[0].0 < w[1].0,
            "{what}: out of order or duplicate: {} then {}",
            w[0].0,
            w[1].0
        );
    }
    if got != want {
        let g: Vec<u64> = got.iter().map(|e| e.0).collect();
        let w: Vec<u64> = want.iter().map(|e| e.0).collect();
        let missing: Vec<u64> = w.iter().filter(|p| !g.contains(p)).copied().take(10).collect();
        let extra: Vec<u64> = g.iter().filter(|p| !w.contains(p)).copied().take(10).collect();
        panic!(
            "{what}: got {} events, want {}; missing (first 10) {missing:?}, extra {extra:?}",
            got.len(),
            w.len()
        );
    }
}

// ------------------------------------------- catch-up, live, concurrency

/// Subscriptions and dispatcher handlers of every filter, from Start,
/// inside a multi-event batch, from a checkpoint, and from End taken while
/// four threads append, in every durability mode: each gets exactly the
/// events its filter selects after its start, in global order, once.
#[test]
fn catch_up_then_live_has_no_gap_or_duplicate_in_every_mode_and_filter() {
    for (mode, durability) in modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), opts(durability)).unwrap();
        // More than two pages of history, with multi-event batches.
        populate(&store, 250);
        let head0 = store.last_position();
        assert!(head0 > 2 * annal::SUBSCRIPTION_PAGE_EVENTS as u64);
        // A position strictly inside a multi-event batch.
        let r = store
            .append(
                "A-1",
                ExpectedVersion::Any,
                (0..5).map(|k| EventData::new("X", format!("mid {k}"))),
            )
            .unwrap();
        let inside = r.first_position + 2;

        let done = Arc::new(AtomicBool::new(false));
        let final_head = Arc::new(AtomicU64::new(u64::MAX));
        let mut consumers = Vec::new();
        for spec in specs() {
            for from in [StartFrom::Start, StartFrom::After(inside), StartFrom::After(head0 / 2)] {
                let sub = store.subscribe(spec.filter.clone(), from).unwrap();
                consumers.push((spec.clone(), consume(sub, done.clone(), final_head.clone())));
            }
        }
        // Dispatcher handlers with the same filters and starts.
        let mut builder = store.dispatcher();
        let mut handled = Vec::new();
        for spec in specs() {
            for from in [StartFrom::Start, StartFrom::After(inside)] {
                let seen: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
                let s = seen.clone();
                builder = builder
                    .handler(spec.name, spec.filter.clone(), from, move |e| {
                        s.lock().unwrap().push((e.position(), e.id().to_string()));
                        Ok(())
                    })
                    .unwrap();
                let after = match from {
                    StartFrom::After(p) => p,
                    _ => 0,
                };
                handled.push((spec.clone(), after, seen));
            }
        }
        let dispatcher = builder.start().unwrap();

        let per_thread = if mode == "sync" { 40 } else { 200 };
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        let (stream, events) = writer_batch(t, i);
                        store.append(&stream, ExpectedVersion::Any, events).unwrap();
                    }
                })
            })
            .collect();
        // Subscriptions made while the writers run: from End and from a
        // checkpoint just behind the head.
        let mut late = Vec::new();
        for round in 0..5 {
            std::thread::sleep(Duration::from_millis(3));
            for spec in specs() {
                let from = if round % 2 == 0 {
                    StartFrom::End
                } else {
                    StartFrom::After(store.last_position().saturating_sub(3))
                };
                let sub = store.subscribe(spec.filter.clone(), from).unwrap();
                late.push((spec.clone(), consume(sub, done.clone(), final_head.clone())));
            }
        }
        for w in writers {
            w.join().unwrap();
        }
        final_head.store(store.last_position(), Ordering::Release);
        done.store(true, Ordering::Release);
        let head = store.last_position();

        for (spec, c) in consumers.into_iter().chain(late) {
            let (start, got) = c.join().unwrap();
            let want = expected(&store, start, spec.accepts);
            check_in_order_each_once(
                &format!("{mode}: subscription '{}' after {start}", spec.name),
                &got,
                &want,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while dispatcher.status().iter().any(|h| h.position < head) {
            assert!(
                Instant::now() < deadline,
                "{mode}: dispatcher never reached {head}: {:?}",
                dispatcher.status()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = dispatcher.stop().unwrap();
        for (i, (spec, after, seen)) in handled.into_iter().enumerate() {
            assert_eq!(status[i].position, head, "{mode}: handler '{}' position", spec.name);
            assert!(status[i].failure.is_none());
            let got = seen.lock().unwrap().clone();
            let want = expected(&store, after, spec.accepts);
            check_in_order_each_once(&format!("{mode}: handler '{}' after {after}", spec.name), &got, &want);
        }
        store.close().unwrap();
    }
}

/// After(p) with p inside a batch spanning several streams
/// (append_multi): the rest of the batch comes, the part at or before p
/// does not, for every filter; After(head) and End are live and empty;
/// After(head + 1) is refused for subscriptions and handlers alike.
#[test]
fn starts_inside_a_multi_stream_batch_at_and_past_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(Durability::Sync)).unwrap();
    let r = store
        .append_multi(&[
            StreamAppend::new(
                "A-1",
                ExpectedVersion::NoStream,
                (0..3).map(|k| EventData::new("X", format!("{k}"))),
            ),
            StreamAppend::new(
                "B-0",
                ExpectedVersion::NoStream,
                (0..3).map(|k| EventData::new("X", format!("{k}"))),
            ),
            StreamAppend::new(
                "A",
                ExpectedVersion::NoStream,
                (0..2).map(|k| EventData::new("Y", format!("{k}"))),
            ),
        ])
        .unwrap();
    assert_eq!(r[0].first_position, 1);
    assert_eq!(store.last_position(), 8);
    for spec in specs() {
        for p in 0..=8u64 {
            let mut sub = store.subscribe(spec.filter.clone(), StartFrom::After(p)).unwrap();
            let mut got = Vec::new();
            while let Some(e) = sub.try_recv().unwrap() {
                got.push((e.position(), e.id().to_string()));
            }
            check_in_order_each_once(
                &format!("'{}' after {p}", spec.name),
                &got,
                &expected(&store, p, spec.accepts),
            );
            assert_eq!(sub.position(), 8, "'{}' after {p}: position once caught up", spec.name);
            assert_eq!(sub.status().state, SubscriptionState::Live);
        }
        let at_head = store.subscribe(spec.filter.clone(), StartFrom::After(8)).unwrap();
        assert_eq!(
            at_head.status().state,
            SubscriptionState::Live,
            "starting at the head is Live"
        );
        let end = store.subscribe(spec.filter.clone(), StartFrom::End).unwrap();
        assert_eq!(end.position(), 8);
        match store.subscribe(spec.filter.clone(), StartFrom::After(9)) {
            Err(Error::InvalidInput(_)) => {}
            other => panic!("a start past the head must be InvalidInput, got {other:?}"),
        }
        let refused = store
            .dispatcher()
            .handler("h", spec.filter.clone(), StartFrom::After(9), |_| Ok(()));
        assert!(
            matches!(refused, Err(Error::InvalidInput(_))),
            "handler past the head: {refused:?}"
        );
    }
}

/// A subscription nobody reads while 20,000 events are appended: the
/// writers finish (never blocked), the subscription holds no more than one
/// page, reports its lag, and then catches up with every event in order.
#[test]
fn a_stalled_subscriber_never_blocks_writers_then_catches_up_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(Durability::Buffered)).unwrap();
    let mut sub = store.subscribe_all(StartFrom::Start).unwrap();
    let mut cat = store.subscribe_category("A", StartFrom::Start).unwrap();
    let writer_store = store.clone();
    within(
        Duration::from_secs(20),
        "appends beside a stalled subscriber",
        move || {
            for i in 0..2000 {
                let (stream, events) = writer_batch(i % 4, i);
                let events: Vec<_> = events
                    .into_iter()
                    .chain((0..5).map(|k| EventData::new("X", format!("{k}"))))
                    .collect();
                writer_store.append(&stream, ExpectedVersion::Any, events).unwrap();
            }
        },
    );
    let head = store.last_position();
    let status = sub.status();
    assert_eq!(status.head, head);
    assert_eq!(status.position, 0);
    assert_eq!(status.lag, head);
    assert_eq!(status.buffered, 0);
    // Documented: before its first read, Live if it starts at the head
    // (it did: the store was empty), and it stays Live unread.
    assert_eq!(status.state, SubscriptionState::Live);
    let first = sub.try_recv().unwrap().unwrap();
    assert_eq!(first.position(), 1);
    let status = sub.status();
    assert!(
        status.buffered < annal::SUBSCRIPTION_PAGE_EVENTS,
        "buffers at most one page: {status:?}"
    );
    assert_eq!(
        status.state,
        SubscriptionState::CatchingUp,
        "its last read filled a page"
    );
    assert_eq!(status.position, 1);
    let mut last = 1;
    while let Some(e) = sub.try_recv().unwrap() {
        assert_eq!(e.position(), last + 1);
        last = e.position();
        assert!(sub.status().buffered < annal::SUBSCRIPTION_PAGE_EVENTS);
    }
    assert_eq!(last, head);
    assert_eq!(sub.status().lag, 0);
    assert_eq!(sub.status().state, SubscriptionState::Live);
    let mut got = Vec::new();
    while let Some(e) = cat.try_recv().unwrap() {
        got.push((e.position(), e.id().to_string()));
    }
    check_in_order_each_once(
        "stalled category subscription",
        &got,
        &expected(&store, 0, specs()[1].accepts),
    );
    assert_eq!(cat.position(), head);
}

// --------------------------------------------------- close and reopen

/// Close with a thread blocked in recv, another with buffered events:
/// recv returns Ok(None), recv_timeout and try_recv Err(Closed), state
/// Closed, position stays where delivery stopped; the directory reopens
/// while the old subscriptions live, they stay closed (never fed by the
/// new store), and a subscription after the old position gets the rest.
#[test]
fn close_ends_subscriptions_and_reopen_with_old_ones_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let store = Store::open(&path, opts(Durability::Sync)).unwrap();
    populate(&store, 20);
    let head = store.last_position();
    let mut blocked = store.subscribe_all(StartFrom::End).unwrap();
    let waiter = std::thread::spawn(move || {
        let r = blocked.recv();
        (r.map(|e| e.map(|e| e.position())), blocked)
    });
    let mut buffered = store.subscribe_all(StartFrom::Start).unwrap();
    assert_eq!(buffered.try_recv().unwrap().unwrap().position(), 1);
    assert_eq!(buffered.try_recv().unwrap().unwrap().position(), 2);
    assert!(buffered.status().buffered > 0);
    let mut timed = store.subscribe_all(StartFrom::End).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    store.clone().close().unwrap();
    let (r, blocked) = within(Duration::from_secs(5), "blocked recv after close", move || {
        waiter.join().unwrap()
    });
    assert!(matches!(r, Ok(None)), "blocked recv after close: {r:?}");
    assert!(t0.elapsed() < Duration::from_secs(5), "close took {:?}", t0.elapsed());
    assert!(matches!(
        timed.recv_timeout(Duration::from_millis(10)),
        Err(Error::Closed)
    ));
    assert!(
        matches!(buffered.try_recv(), Err(Error::Closed)),
        "buffered events are not returned after close"
    );
    assert_eq!(buffered.position(), 2, "position stays where delivery stopped");
    assert_eq!(buffered.status().state, SubscriptionState::Closed);
    assert!(buffered.is_closed());
    assert!(matches!(store.subscribe_all(StartFrom::Start), Err(Error::Closed)));
    drop(store);

    // Reopen while the old subscriptions are still alive.
    let store = Store::open(&path, opts(Durability::Sync)).unwrap();
    store
        .append("A-9", ExpectedVersion::Any, [EventData::new("X", "after reopen")])
        .unwrap();
    assert!(matches!(buffered.try_recv(), Err(Error::Closed)));
    assert!(matches!(buffered.recv(), Ok(None)));
    assert!(blocked.is_closed());
    let mut resumed = store.subscribe_all(StartFrom::After(buffered.position())).unwrap();
    let mut positions = Vec::new();
    while let Some(e) = resumed.try_recv().unwrap() {
        positions.push(e.position());
    }
    assert_eq!(positions, (3..=head + 1).collect::<Vec<_>>());
    // Dropping the last handle (not close) also ends subscriptions.
    let mut sub = store.subscribe_all(StartFrom::End).unwrap();
    let waiter = std::thread::spawn(move || sub.recv().map(|e| e.is_some()));
    std::thread::sleep(Duration::from_millis(30));
    drop(store);
    let r = within(
        Duration::from_secs(5),
        "recv after the last handle dropped",
        move || waiter.join().unwrap(),
    );
    assert!(matches!(r, Ok(false)), "{r:?}");
    Store::open(&path, opts(Durability::Sync)).unwrap().close().unwrap();
}

// ----------------------------------------------------------- dispatcher

/// `StartFrom::End` of a handler means after `handler(..)` was called,
/// even when events are appended before `start()`.
#[test]
fn dispatcher_end_counts_from_the_handler_call_not_from_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(Durability::Sync)).unwrap();
    populate(&store, 5);
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let s = seen.clone();
    let builder = store
        .dispatcher()
        .handler("end", SubscriptionFilter::all(), StartFrom::End, move |e| {
            s.lock().unwrap().push(e.position());
            Ok(())
        })
        .unwrap();
    let head = store.last_position();
    store
        .append("A-1", ExpectedVersion::Any, [EventData::new("X", "between")])
        .unwrap();
    let dispatcher = builder.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while dispatcher.status()[0].position < head + 1 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    dispatcher.stop().unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![head + 1]);
}

/// Failing and panicking handlers stop alone at the event (position just
/// before it, failure naming it), the others get everything, and once all
/// have failed the dispatcher ends by itself (join returns).
#[test]
fn dispatcher_failures_are_isolated_and_all_failed_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(Durability::Buffered)).unwrap();
    populate(&store, 100);
    let head = store.last_position();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let dispatcher = store
        .dispatcher()
        .handler("errs-at-7", SubscriptionFilter::all(), StartFrom::Start, |e| {
            if e.position() == 7 { Err("seven".into()) } else { Ok(()) }
        })
        .unwrap()
        .handler(
            "panics-at-A-5",
            SubscriptionFilter::category("A"),
            StartFrom::Start,
            |e| {
                if e.position() >= 50 {
                    panic!("boom at {}", e.position());
                }
                Ok(())
            },
        )
        .unwrap()
        .handler("counts", SubscriptionFilter::all(), StartFrom::Start, move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while dispatcher.status()[2].position < head {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = dispatcher.status();
    assert_eq!(status[0].position, 6);
    assert_eq!(status[0].failure.as_ref().map(|f| f.0), Some(7));
    assert!(status[0].failure.as_ref().unwrap().1.contains("seven"));
    let first_a_from_50 = expected(&store, 49, specs()[1].accepts)[0].0;
    assert_eq!(status[1].failure.as_ref().map(|f| f.0), Some(first_a_from_50));
    assert_eq!(status[1].position, first_a_from_50 - 1);
    assert!(
        status[1].failure.as_ref().unwrap().1.contains("panicked"),
        "{:?}",
        status[1]
    );
    assert_eq!(count.load(Ordering::SeqCst), head);
    // A second dispatcher whose handlers all fail ends by itself.
    let d2 = store
        .dispatcher()
        .handler("a", SubscriptionFilter::all(), StartFrom::Start, |_| Err("no".into()))
        .unwrap()
        .handler("b", SubscriptionFilter::stream("B-0"), StartFrom::Start, |_| {
            Err("no".into())
        })
        .unwrap()
        .start()
        .unwrap();
    let status = within(Duration::from_secs(5), "join of an all-failed dispatcher", move || {
        d2.join()
    })
    .unwrap();
    assert_eq!(status[0].failure.as_ref().map(|f| f.0), Some(1));
    let first_b0 = store
        .read_all(ReadAll::forward())
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.stream() == "B-0")
        .unwrap();
    assert_eq!(status[1].failure.as_ref().map(|f| f.0), Some(first_b0.position()));
    dispatcher.stop().unwrap();
}

/// close() from another thread waits for the handler call in progress,
/// and no handler is called after it returns; join then returns the
/// positions; the directory is released although a handler owns a Store
/// clone.
#[test]
fn close_waits_for_a_running_handler_and_releases_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let store = Store::open(&path, opts(Durability::Sync)).unwrap();
    populate(&store, 3);
    let in_call = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let (ic, cs) = (in_call.clone(), calls.clone());
    let owned = store.clone();
    let dispatcher = store
        .dispatcher()
        .handler("slow", SubscriptionFilter::all(), StartFrom::Start, move |_| {
            let _keep = &owned; // a handler owning a Store clone
            ic.store(true, Ordering::SeqCst);
            cs.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
            ic.store(false, Ordering::SeqCst);
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !in_call.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline);
        std::thread::yield_now();
    }
    let closer = store.clone();
    within(Duration::from_secs(5), "close during a handler call", move || {
        closer.close().unwrap()
    });
    assert!(!in_call.load(Ordering::SeqCst), "close returned while the handler ran");
    let after_close = calls.load(Ordering::SeqCst);
    assert_eq!(after_close, 1);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        after_close,
        "a handler was called after close returned"
    );
    // The directory is released once close() returned and our own handle
    // is gone, although a handler owned a clone (the dispatcher ends).
    drop(store);
    let reopened = Store::open(&path, opts(Durability::Sync));
    assert!(reopened.is_ok(), "reopen after close: {:?}", reopened.err());
    let status = within(Duration::from_secs(5), "join after close", move || dispatcher.join()).unwrap();
    assert_eq!(status[0].position, 1);
}

/// A handler owning a Store clone keeps the dispatcher running when the
/// app drops its own handle; with no owner left, dropping the last handle
/// ends it.
#[test]
fn dropping_the_last_handle_ends_a_dispatcher_without_owners() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(Durability::Sync)).unwrap();
    let dispatcher = common::idle_dispatcher(&store);
    drop(store);
    let status = within(
        Duration::from_secs(5),
        "dispatcher after the last handle dropped",
        move || dispatcher.join(),
    );
    assert!(status.is_ok());
    // The builder of a closed store refuses.
    let store = Store::open(dir.path(), opts(Durability::Sync)).unwrap();
    let builder = store.dispatcher();
    store.clone().close().unwrap();
    assert!(matches!(
        builder.handler("x", SubscriptionFilter::all(), StartFrom::Start, |_| Ok(())),
        Err(Error::Closed)
    ));
}

/// Stop, save the reported positions as checkpoints, reopen, resume from
/// them: no gap, no duplicate, with writers running during the first
/// part.
#[test]
fn dispatcher_positions_as_checkpoints_resume_exactly_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let store = Store::open(&path, opts(Durability::Periodic(Duration::from_millis(3)))).unwrap();
    populate(&store, 50);
    let seen: Vec<Arc<Mutex<Vec<u64>>>> = specs().iter().map(|_| Arc::default()).collect();
    let dispatcher = recording_dispatcher(&store, &seen, |_| StartFrom::Start);
    let w = store.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..300 {
            let (stream, events) = writer_batch(i % 3, i);
            w.append(&stream, ExpectedVersion::Any, events).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(20));
    let status = dispatcher.stop().unwrap();
    writer.join().unwrap();
    let cps = store.checkpoints();
    for h in &status {
        cps.save(&h.name, h.position).unwrap();
    }
    store.close().unwrap();
    let store = Store::open(&path, opts(Durability::Sync)).unwrap();
    let cps = store.checkpoints();
    let dispatcher = recording_dispatcher(&store, &seen, |spec| {
        StartFrom::After(cps.load(spec.name).unwrap().unwrap())
    });
    let head = store.last_position();
    let deadline = Instant::now() + Duration::from_secs(10);
    while dispatcher.status().iter().any(|h| h.position < head) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    dispatcher.stop().unwrap();
    for (spec, s) in specs().into_iter().zip(&seen) {
        let got = s.lock().unwrap().clone();
        let want: Vec<u64> = expected(&store, 0, spec.accepts).into_iter().map(|e| e.0).collect();
        assert_eq!(got, want, "handler '{}' across stop and reopen", spec.name);
    }
}

// ----------------------------------------------------------- projections

#[derive(Default)]
struct Recorder {
    applied: Vec<u64>,
    ends: Vec<u64>,
    fail_at: Option<u64>,
    fail_end_once: bool,
}

impl Projection for Recorder {
    fn apply(&mut self, e: &RecordedEvent) -> Result<(), HandlerError> {
        if self.fail_at == Some(e.position()) {
            self.fail_at = None;
            return Err(format!("refused {}", e.position()).into());
        }
        self.applied.push(e.position());
        Ok(())
    }
    fn end_batch(&mut self, position: u64) -> Result<(), HandlerError> {
        if self.fail_end_once {
            self.fail_end_once = false;
            return Err("end_batch failed".into());
        }
        self.ends.push(position);
        Ok(())
    }
}

/// A handler error mid-batch and a failed end_batch send the runner back
/// to its checkpoint: the next run applies from there again (at least
/// once, nothing skipped), and the checkpoint never passes an event that
/// was not applied.
#[test]
fn projection_errors_rewind_to_the_checkpoint_without_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let store = Store::open(&path, opts(Durability::Buffered)).unwrap();
    populate(&store, 30);
    let want: Vec<u64> = expected(&store, 0, specs()[1].accepts)
        .into_iter()
        .map(|e| e.0)
        .collect();
    let fail = want[want.len() / 2];
    let rec = Recorder {
        fail_at: Some(fail),
        fail_end_once: true,
        ..Recorder::default()
    };
    let mut runner = ProjectionRunner::new(&store, "p", SubscriptionFilter::category("A"), rec)
        .unwrap()
        .with_checkpoint_every(1000, Duration::from_secs(60));
    match runner.run_until_caught_up() {
        Err(ProjectionError::Handler { position, .. }) => assert_eq!(position, fail),
        other => panic!("expected the handler error, got {other:?}"),
    }
    assert_eq!(runner.checkpoint(), 0);
    assert_eq!(store.checkpoints().load("p").unwrap(), None);
    // end_batch fails once: Handler error at the batch's end, no checkpoint.
    match runner.run_until_caught_up() {
        Err(ProjectionError::Handler { position, .. }) => assert_eq!(position, store.last_position()),
        other => panic!("expected the end_batch error, got {other:?}"),
    }
    assert_eq!(store.checkpoints().load("p").unwrap(), None);
    runner.run_until_caught_up().unwrap();
    assert_eq!(runner.checkpoint(), store.last_position());
    let rec = runner.into_projection();
    let before_fail: Vec<u64> = want.iter().copied().filter(|p| *p < fail).collect();
    let mut wanted = before_fail.clone();
    wanted.extend(want.iter().copied()); // run 2 from the start
    wanted.extend(want.iter().copied()); // run 3 from the start again
    assert_eq!(rec.applied, wanted, "each run restarts at the checkpoint (0)");
    assert_eq!(rec.ends, vec![store.last_position()]);
    // A new runner after reopen resumes after the checkpoint: nothing again.
    store.close().unwrap();
    let store = Store::open(&path, opts(Durability::Buffered)).unwrap();
    store
        .append("A-7", ExpectedVersion::Any, [EventData::new("X", "new")])
        .unwrap();
    let mut runner =
        ProjectionRunner::new(&store, "p", SubscriptionFilter::category("A"), Recorder::default()).unwrap();
    runner.run_until_caught_up().unwrap();
    assert_eq!(runner.projection().applied, vec![store.last_position()]);
}

// --- SIGKILL of a projecting child process

const CHILD_DIR: &str = "REVIEW_SUBS_CHILD_DIR";
const CHILD_MODE: &str = "REVIEW_SUBS_CHILD_MODE";

fn child_options(mode: &str) -> Options {
    opts(common::child::durability(mode))
}

/// A read model kept the documented way (SUBSCRIPTIONS.md, "Writing an
/// idempotent handler", 1.): count and position stored together, written
/// with temp + rename in end_batch; apply skips what it already has.
/// Every apply call is logged, for the at-least-once check.
struct FileModel {
    dir: PathBuf,
    count: u64,
    position: u64,
    log: std::fs::File,
}

impl FileModel {
    fn open(dir: &Path) -> FileModel {
        let (count, position) = match std::fs::read_to_string(dir.join("model")) {
            Ok(s) => {
                let mut it = s.split_whitespace().map(|x| x.parse::<u64>().unwrap());
                (it.next().unwrap(), it.next().unwrap())
            }
            Err(_) => (0, 0),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("applied.log"))
            .unwrap();
        FileModel {
            dir: dir.to_path_buf(),
            count,
            position,
            log,
        }
    }
}

impl Projection for FileModel {
    fn apply(&mut self, e: &RecordedEvent) -> Result<(), HandlerError> {
        self.log.write_all(format!("apply {}\n", e.position()).as_bytes())?;
        if e.position() > self.position {
            self.count += 1;
            self.position = e.position();
        }
        Ok(())
    }
    fn end_batch(&mut self, position: u64) -> Result<(), HandlerError> {
        let tmp = self.dir.join("model.tmp");
        std::fs::write(&tmp, format!("{} {}", self.count, position))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, self.dir.join("model"))?;
        self.position = position;
        Ok(())
    }
}

/// The child: a writer thread appends single events to P-* and Q-*, and a
/// projection of category P follows them live until killed.
#[test]
fn child_projection_process() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mode = std::env::var(CHILD_MODE).unwrap_or_default();
    let store = Store::open(dir.join("store"), child_options(&mode)).unwrap();
    let w = store.clone();
    std::thread::spawn(move || {
        for i in 0u64.. {
            let stream = if i % 3 == 2 {
                format!("Q-{}", i % 2)
            } else {
                format!("P-{}", i % 4)
            };
            let n = (i % 3 + 1) as usize;
            w.append(
                &stream,
                ExpectedVersion::Any,
                (0..n).map(|k| EventData::new("E", format!("{i} {k}"))),
            )
            .unwrap();
        }
    });
    let model = FileModel::open(&dir);
    let mut runner = ProjectionRunner::new(&store, "model", SubscriptionFilter::category("P"), model)
        .unwrap()
        .with_checkpoint_every(7, Duration::from_millis(5));
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("applied.log"))
        .unwrap();
    log.write_all(format!("run {}\n", runner.checkpoint()).as_bytes())
        .unwrap();
    runner.run(Duration::from_millis(5), |_| false).unwrap();
}

/// SIGKILL a projecting child at random points, three times, in each
/// durability mode; then finish in-process. Checks: every run starts with
/// the first matching event after the checkpoint it loaded; no matching
/// event is ever skipped (at least once); the checkpoint is never ahead of
/// the model's position; and the model kept the documented way counts
/// each event exactly once.
#[test]
fn killed_projection_resumes_at_least_once_and_the_model_exactly_once() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::File::create(dir.path().join("applied.log")).unwrap();
    for (round, mode) in ["sync", "periodic", "buffered", "buffered", "sync"].iter().enumerate() {
        common::child::run_and_kill(
            "child_projection_process",
            &[(CHILD_DIR, &dir.path()), (CHILD_MODE, mode)],
            Duration::from_millis(150 + 70 * round as u64),
        );
        // Between kills: the model never lags the checkpoint by a matching
        // event (end_batch comes before the checkpoint; the model may lag
        // only by events the filter skips, SUBSCRIPTIONS.md).
        let store = Store::open(dir.path().join("store"), child_options(mode)).unwrap();
        let cp = store.checkpoints().load("model").unwrap().unwrap_or(0);
        let model = FileModel::open(dir.path());
        let between: Vec<u64> = store
            .read_all(ReadAll::forward().from_position(model.position))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.position() <= cp && e.stream().starts_with("P-"))
            .map(|e| e.position())
            .collect();
        assert!(
            between.is_empty(),
            "round {round}: checkpoint {cp} passes events {between:?} the model (at {}) lacks",
            model.position
        );
        assert!(model.position <= store.last_position());
        store.close().unwrap();
    }
    // Finish in-process.
    let store = Store::open(dir.path().join("store"), Options::default()).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("applied.log"))
        .unwrap();
    let model = FileModel::open(dir.path());
    let mut runner = ProjectionRunner::new(&store, "model", SubscriptionFilter::category("P"), model).unwrap();
    log.write_all(format!("run {}\n", runner.checkpoint()).as_bytes())
        .unwrap();
    drop(log);
    runner.run_until_caught_up().unwrap();
    let model = runner.into_projection();
    let want: Vec<u64> = store
        .read_all(ReadAll::forward())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.stream().starts_with("P-"))
        .map(|e| e.position())
        .collect();
    assert!(want.len() > 20, "the children made progress: {}", want.len());
    assert_eq!(
        model.count,
        want.len() as u64,
        "the read model counts each event exactly once"
    );
    // Parse the apply log into runs.
    let text = std::fs::read_to_string(dir.path().join("applied.log")).unwrap();
    let mut runs: Vec<(u64, Vec<u64>)> = Vec::new();
    for line in text.lines() {
        if let Some(cp) = line.strip_prefix("run ") {
            runs.push((cp.parse().unwrap(), Vec::new()));
        } else if let Some(p) = line.strip_prefix("apply ") {
            runs.last_mut().unwrap().1.push(p.parse().unwrap());
        }
    }
    assert!(runs.len() >= 2);
    let mut seen = std::collections::BTreeSet::new();
    for (i, (cp, applied)) in runs.iter().enumerate() {
        for w in applied.windows(2) {
            assert!(w[0] < w[1], "run {i}: out of order {} then {}", w[0], w[1]);
        }
        // Each run's applies are exactly the matching events after its
        // checkpoint, in order (a prefix of them, as it was killed).
        let after: Vec<u64> = want.iter().copied().filter(|p| p > cp).collect();
        assert_eq!(
            &after[..applied.len().min(after.len())],
            &applied[..],
            "run {i} from checkpoint {cp}"
        );
        if let Some((next_cp, _)) = runs.get(i + 1) {
            assert!(next_cp >= cp, "checkpoint went back: {cp} then {next_cp}");
            // The next run's checkpoint never passes an event this run did
            // not apply.
            let last = applied.last().copied().unwrap_or(*cp);
            let skipped: Vec<u64> = want.iter().copied().filter(|p| p > &last && p <= next_cp).collect();
            assert!(skipped.is_empty(), "run {i}: checkpoint {next_cp} skips {skipped:?}");
        }
        seen.extend(applied.iter().copied());
    }
    let missing: Vec<u64> = want.iter().copied().filter(|p| !seen.contains(p)).collect();
    assert!(missing.is_empty(), "never applied: {missing:?}");
}

// ------------------------------------------------------------- snapshots

/// The saved snapshots of `snapshot_store`: (stream, version, data), in
/// save order.
fn saved_snapshots() -> Vec<(&'static str, u64, Vec<u8>)> {
    vec![
        ("S-1", 2, b"s1 at 2".to_vec()),
        ("S-2", 3, b"s2 at three".to_vec()),
        ("S-1", 4, b"s1 at 4, longer".to_vec()),
        ("S-1", 6, b"s1 at 6".to_vec()),
        ("S-2", 4, vec![7u8; 300]),
    ]
}

fn snapshot_store(path: &Path) {
    let store = Store::open(path, opts(Durability::Sync)).unwrap();
    common::append_n(&store, "S-1", "E", 6);
    common::append_n(&store, "S-2", "E", 4);
    for (s, v, d) in saved_snapshots() {
        store.save_snapshot(s, v, 1, &d).unwrap();
    }
    store.close().unwrap();
}

/// Offset and end of each record in the file, in save order (FORMAT.md:
/// 32-byte header, records of 48 + name + data bytes).
fn record_spans() -> Vec<(u64, u64)> {
    let mut at = 32u64;
    saved_snapshots()
        .iter()
        .map(|(s, _, d)| {
            let len = 48 + s.len() as u64 + d.len() as u64;
            let span = (at, at + len);
            at += len;
            span
        })
        .collect()
}

/// Loads both streams and checks: no panic; a snapshot returned is one
/// saved, with its bytes; any snapshot passed over is reported.
fn check_loads(path: &Path, what: &str, whole: &dyn Fn(usize) -> bool, detectable: bool) {
    let store = Store::open(path, opts(Durability::Sync)).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    for stream in ["S-1", "S-2"] {
        let load = store.load_snapshot(stream);
        let newest_whole = saved_snapshots()
            .iter()
            .enumerate()
            .filter(|(i, (s, _, _))| *s == stream && whole(*i))
            .map(|(_, (_, v, d))| (*v, d.clone()))
            .max_by_key(|(v, _)| *v);
        match (&load.snapshot, &newest_whole) {
            (Some(s), Some((v, d))) => {
                assert_eq!((s.version, &s.data[..]), (*v, &d[..]), "{what}: {stream}");
            }
            (None, None) => {}
            (got, want) => panic!(
                "{what}: {stream}: loaded {:?}, the newest undamaged is {:?}; issues {:?}",
                got.as_ref().map(|s| s.version),
                want.as_ref().map(|w| w.0),
                load.issues
            ),
        }
    }
    let lost = saved_snapshots().iter().enumerate().any(|(i, _)| !whole(i));
    if lost && detectable {
        assert!(
            !store.snapshot_issues().is_empty(),
            "{what}: a snapshot was lost silently"
        );
    }
    store.close().unwrap();
}

/// Every single-byte change of the snapshot file: open never fails, a load
/// never fails nor returns other bytes than saved, returns the newest
/// snapshot whose record is untouched (a damaged record is skipped by its
/// length, FORMAT.md), and every loss is reported.
#[test]
fn every_byte_flip_of_the_snapshot_file_on_disk_falls_back_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    snapshot_store(&path);
    let file = path.join("snapshots");
    let orig = std::fs::read(&file).unwrap();
    let spans = record_spans();
    assert_eq!(orig.len() as u64, spans.last().unwrap().1, "FORMAT.md's record sizes");
    for offset in 0..orig.len() {
        let mut bytes = orig.clone();
        bytes[offset] ^= 0x55;
        std::fs::write(&file, &bytes).unwrap();
        let o = offset as u64;
        let damaged_record = spans.iter().position(|(a, b)| (*a..*b).contains(&o));
        // A damaged length field (bytes 8..12 of a record) may end the
        // scan there (FORMAT.md): the records after it are cut too.
        let length_hit = damaged_record.is_some_and(|i| (spans[i].0 + 8..spans[i].0 + 12).contains(&o));
        let whole = |i: usize| match damaged_record {
            None => o >= 32, // a header flip starts the file afresh
            Some(d) if length_hit => i < d,
            Some(d) => i != d,
        };
        if length_hit {
            // Either the scan stepped over it or cut the rest: accept both,
            // but never a wrong snapshot.
            check_loads_lenient(
                &path,
                &format!("flip at {offset} (length field)"),
                damaged_record.unwrap(),
            );
        } else {
            check_loads(&path, &format!("flip at {offset}"), &whole, true);
        }
        std::fs::write(&file, &orig).unwrap();
    }
}

fn check_loads_lenient(path: &Path, what: &str, damaged: usize) {
    let store = Store::open(path, opts(Durability::Sync)).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    for stream in ["S-1", "S-2"] {
        let load = store.load_snapshot(stream);
        if let Some(s) = &load.snapshot {
            let (_, _, d) = saved_snapshots()
                .into_iter()
                .enumerate()
                .find(|(i, (st, v, _))| *st == stream && *v == s.version && *i != damaged)
                .map(|(_, x)| x)
                .unwrap_or_else(|| panic!("{what}: loaded a snapshot never saved whole: {stream} v{}", s.version));
            assert_eq!(&s.data[..], &d[..], "{what}");
        }
    }
    assert!(!store.snapshot_issues().is_empty(), "{what}: damage not reported");
    store.close().unwrap();
}

/// The snapshot file cut at every length: the newest whole record per
/// stream is loaded, a cut is reported (TornTail or FileReplaced), and a
/// save after it works and is loaded.
#[test]
fn a_snapshot_file_cut_anywhere_keeps_the_whole_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    snapshot_store(&path);
    let file = path.join("snapshots");
    let orig = std::fs::read(&file).unwrap();
    let spans = record_spans();
    for len in 0..orig.len() as u64 {
        std::fs::write(&file, &orig[..len as usize]).unwrap();
        let whole = |i: usize| len >= 32 && spans[i].1 <= len;
        // A cut exactly at a record's end looks like a file with fewer
        // records (nothing in the format counts them): not detectable.
        let at_boundary = len == 32 || spans.iter().any(|(_, end)| *end == len);
        check_loads(&path, &format!("cut at {len}"), &whole, !at_boundary);
        // And saving after the cut works.
        let store = Store::open(&path, opts(Durability::Sync)).unwrap();
        store.save_snapshot("S-1", 5, 1, b"after the cut").unwrap();
        let load = store.load_snapshot("S-1");
        let s = load.snapshot.unwrap();
        let want_v = if whole(3) { 6 } else { 5 };
        assert_eq!(s.version, want_v, "cut at {len}");
        store.close().unwrap();
        std::fs::write(&file, &orig).unwrap();
    }
}

/// A snapshot file newer than the log (an older log restored, the
/// snapshots kept): open works; the snapshot ahead is reported, never
/// used; once the stream grows again past it with other events, it is
/// still never used (OtherEvent), and the typed layer gives the state of
/// the log.
#[test]
fn snapshots_ahead_of_a_restored_older_log_are_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let old = dir.path().join("old");
    let store = Store::open(&path, opts(Durability::Sync)).unwrap();
    common::append_n(&store, "S-1", "E", 5);
    store.save_snapshot("S-1", 3, 1, b"at 3").unwrap();
    store.close().unwrap();
    common::files::copy_files(&path, &old);
    let store = Store::open(&path, opts(Durability::Sync)).unwrap();
    common::append_n(&store, "S-1", "E", 5);
    store.save_snapshot("S-1", 10, 1, b"at 10").unwrap();
    store.close().unwrap();
    // The old log with the new snapshot file.
    std::fs::copy(path.join("snapshots"), old.join("snapshots")).unwrap();
    let store = Store::open(&old, opts(Durability::Sync)).unwrap();
    let load = store.load_snapshot("S-1");
    assert_eq!(load.snapshot.as_ref().map(|s| s.version), Some(3));
    assert!(
        load.issues.iter().any(|i| matches!(
            i,
            SnapshotIssue::AheadOfLog {
                snapshot_version: 10,
                stream_version: 5,
                ..
            }
        )),
        "{:?}",
        load.issues
    );
    // The loss the snapshot at 10 proves stops appends (they would take
    // the lost versions); the stream grows again here with the snapshot
    // file set aside, as an older annal would have let it.
    let refused = store.append("S-1", ExpectedVersion::Any, [EventData::new("Other", "{}")]);
    assert!(matches!(refused, Err(Error::Corruption { .. })), "{refused:?}");
    store.close().unwrap();
    std::fs::rename(old.join("snapshots"), old.join("snapshots.aside")).unwrap();
    let store = Store::open(&old, opts(Durability::Sync)).unwrap();
    common::append_n(&store, "S-1", "Other", 7);
    store.close().unwrap();
    std::fs::rename(old.join("snapshots.aside"), old.join("snapshots")).unwrap();
    let store = Store::open(&old, opts(Durability::Sync)).unwrap();
    let load = store.load_snapshot("S-1");
    assert_eq!(load.snapshot.as_ref().map(|s| s.version), Some(3), "{:?}", load.issues);
    assert!(load.issues.iter().any(|i| matches!(
        i,
        SnapshotIssue::OtherEvent {
            snapshot_version: 10,
            ..
        }
    )));
    let load = store.load_snapshot_at("S-1", 11);
    assert_eq!(load.snapshot.as_ref().map(|s| s.version), Some(3));
    store.close().unwrap();
}

/// The largest snapshot allowed saves, survives reopen and loads back
/// byte for byte; one byte more is InvalidInput; saves of versions the
/// stream does not have, on a closed store, are refused as documented.
#[test]
fn snapshot_limits_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, opts(Durability::Buffered)).unwrap();
    common::append_n(&store, "Big-1", "E", 3);
    // The limit is on the record's data: 64 MiB (README "Limits").
    let big: Vec<u8> = (0..annal::limits::SNAPSHOT_BYTES_MAX)
        .map(|i| (i % 251) as u8)
        .collect();
    store.save_snapshot("Big-1", 2, 9, &big).unwrap();
    let mut over = big.clone();
    over.push(0);
    assert!(matches!(
        store.save_snapshot("Big-1", 3, 9, &over),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        store.save_snapshot("Big-1", 4, 9, b"x"),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        store.save_snapshot("Big-1", 0, 9, b"x"),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        store.save_snapshot("Nope-1", 1, 9, b"x"),
        Err(Error::InvalidInput(_))
    ));
    store.save_snapshot("Big-1", 3, 9, b"small").unwrap();
    store.close().unwrap();
    let store = Store::open(&path, opts(Durability::Buffered)).unwrap();
    let load = store.load_snapshot_at("Big-1", 2);
    let s = load.snapshot.unwrap();
    assert_eq!((s.version, s.schema_version), (2, 9));
    assert!(s.data[..] == big[..], "the 64 MiB snapshot loads back whole");
    assert_eq!(&store.load_snapshot("Big-1").snapshot.unwrap().data[..], b"small");
    let clone = store.clone();
    store.close().unwrap();
    assert!(matches!(clone.save_snapshot("Big-1", 3, 9, b"x"), Err(Error::Closed)));
    // "reads through a remaining clone, snapshot loads included, still
    // return what was written" (Store::close).
    assert_eq!(&clone.load_snapshot("Big-1").snapshot.unwrap().data[..], b"small");
}

/// Savers and loaders of one stream at once, with compaction kicking in
/// often: every load returns bytes saved for the version it names, at or
/// below the version asked for, and reports no issue (nothing is damaged).
#[test]
fn concurrent_snapshot_saves_loads_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(Durability::Sync)).unwrap();
    store.set_snapshot_options(
        SnapshotOptions::default()
            .with_keep_per_stream(2)
            .with_compact_min_bytes(4096),
    );
    common::append_n(&store, "C-1", "E", 400);
    common::append_n(&store, "C-2", "E", 50);
    let data = |s: &str, v: u64| format!("{s} state at {v} {}", "x".repeat((v % 97) as usize * 5)).into_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..2u64 {
        let store = store.clone();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut v = 1 + t;
            while !stop.load(Ordering::Relaxed) && v <= 400 {
                store.save_snapshot("C-1", v, 1, &data("C-1", v)).unwrap();
                store
                    .save_snapshot("C-2", v % 50 + 1, 1, &data("C-2", v % 50 + 1))
                    .unwrap();
                v += 2;
            }
        }));
    }
    let mut loaders = Vec::new();
    for t in 0..2u64 {
        let store = store.clone();
        let stop = stop.clone();
        loaders.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (stream, max) = if n.is_multiple_of(3) { ("C-2", 50) } else { ("C-1", 400) };
                let at = if t == 0 { u64::MAX } else { n * 7 % max + 1 };
                let load = store.load_snapshot_at(stream, at);
                assert!(load.issues.is_empty(), "issues without damage: {:?}", load.issues);
                if let Some(s) = load.snapshot {
                    assert!(s.version <= at);
                    assert_eq!(s.data.to_vec(), data(stream, s.version), "{stream} v{}", s.version);
                }
            }
            n
        }));
    }
    std::thread::sleep(Duration::from_millis(1200));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    for l in loaders {
        assert!(l.join().unwrap() > 10);
    }
    assert!(store.snapshot_stats().unwrap().compactions > 0, "compaction ran");
    assert!(store.snapshot_issues().is_empty(), "{:?}", store.snapshot_issues());
}

/// `annal verify` on a damaged snapshot file: reported under snapshots,
/// the store stays clean, exit code 0 (CLI.md).
#[test]
fn cli_verify_reports_a_damaged_snapshot_file_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    snapshot_store(&path);
    let file = path.join("snapshots");
    let mut bytes = std::fs::read(&file).unwrap();
    let spans = record_spans();
    bytes[spans[1].0 as usize + 50] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_annal"))
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout {stdout} stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"clean\":true"), "{stdout}");
    assert!(stdout.contains("\"snapshots\":{\"status\":\"damaged\""), "{stdout}");
}

/// The typed layer over snapshots of another schema version, undecodable
/// bytes, and a snapshot ahead of the log: the state is always the one the
/// log gives, and each passed-over snapshot is reported.
#[test]
fn repository_loads_the_logs_state_past_bad_snapshots() {
    use aggregate_support::{Account, AccountCommand, fold};
    use annal::aggregate::{Aggregate, CommandMetadata, JsonCodec, Repository};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(Durability::Sync)).unwrap();
    let repo: Repository<Account> = Repository::new(store.clone(), JsonCodec).with_snapshot_every(3);
    repo.execute("1", AccountCommand::Open("ann".into()), CommandMetadata::new())
        .unwrap();
    for i in 0..9 {
        repo.execute("1", AccountCommand::Deposit(i + 1), CommandMetadata::new())
            .unwrap();
    }
    let events: Vec<_> = common::stream(&store, "Account-1")
        .iter()
        .map(|e| repo.decode(e).unwrap())
        .collect();
    let want = fold(&events);
    let good = repo.load("1").unwrap();
    assert_eq!((good.state.clone(), good.version), (want.clone(), 10));
    assert!(good.snapshot_version.is_some());
    // The newest snapshot: another schema version.
    store
        .save_snapshot("Account-1", 10, Account::SNAPSHOT_SCHEMA_VERSION + 1, b"{}")
        .unwrap();
    let l = repo.load("1").unwrap();
    assert_eq!((l.state.clone(), l.version), (want.clone(), 10));
    assert!(
        l.issues
            .iter()
            .any(|i| matches!(i, SnapshotIssue::SchemaMismatch { version: 10, .. })),
        "{:?}",
        l.issues
    );
    // Undecodable bytes under the right schema version.
    store
        .save_snapshot("Account-1", 10, Account::SNAPSHOT_SCHEMA_VERSION, b"\xff not json")
        .unwrap();
    let l = repo.load("1").unwrap();
    assert_eq!((l.state.clone(), l.version), (want.clone(), 10));
    assert!(
        l.issues
            .iter()
            .any(|i| matches!(i, SnapshotIssue::Undecodable { version: 10, .. })),
        "{:?}",
        l.issues
    );
    // A state that decodes but is wrong for its version is not detectable:
    // the snapshot is trusted (documented: a cache the app must keep right).
    // Time travel below the bad snapshot uses an older good one.
    let l = repo.load_at_version("1", 7).unwrap();
    assert_eq!(l.state, fold(&events[..7]));
    store.close().unwrap();
}

/// A handler of one dispatcher stopping another dispatcher of the same
/// store while a close() from a third thread waits for handler calls.
/// Documented: close() waits for the handler call in progress to return,
/// and a handler may stop a dispatcher. Here the handler's stop() joins
/// the other dispatcher's thread, which is blocked taking the hub's
/// handler-call read lock behind close()'s waiting write lock (parking_lot
/// readers queue behind a waiting writer): the three wait for each other.
#[test]
fn a_handler_stopping_another_dispatcher_during_close_does_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(Durability::Buffered)).unwrap();
    populate(&store, 400); // a long page for the second dispatcher
    // D2: a slow handler, in a call when close() begins, which it
    // outlasts: its next handler call comes after close() waits.
    let d2 = store
        .dispatcher()
        .handler("slow", SubscriptionFilter::all(), StartFrom::Start, |_| {
            std::thread::sleep(Duration::from_millis(30));
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    let d2 = Arc::new(Mutex::new(Some(d2)));
    let closing = Arc::new(AtomicBool::new(false));
    let (d2h, cl) = (d2.clone(), closing.clone());
    let entered = Arc::new(AtomicBool::new(false));
    let en = entered.clone();
    // D1: on its first event, waits until a close has begun, then stops D2.
    let d1 = store
        .dispatcher()
        .handler("stopper", SubscriptionFilter::all(), StartFrom::Start, move |_| {
            en.store(true, Ordering::SeqCst);
            while !cl.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_millis(200)); // close now waits for this call
            if let Some(d) = d2h.lock().unwrap().take() {
                let _ = d.stop();
            }
            Err("stopped the other one".into())
        })
        .unwrap()
        .start()
        .unwrap();
    while !entered.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    // D2 is in the middle of its page.
    let deadline = Instant::now() + Duration::from_secs(5);
    while d2.lock().unwrap().as_ref().unwrap().status()[0].position < 2 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let closer = store.clone();
    let cl = closing.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        cl.store(true, Ordering::SeqCst);
        let _ = tx.send(closer.close());
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(r) => r.unwrap(),
        Err(_) => {
            // Deadlocked: leak what would block on drop, then fail.
            std::mem::forget(d1);
            std::mem::forget(store);
            panic!("close() never returned: the stopping handler, the other dispatcher and close wait for each other");
        }
    }
    within(Duration::from_secs(5), "join of the stopping dispatcher", move || {
        let _ = d1.join();
    });
}

/// The child: saves snapshots of two streams in a loop (appending between
/// saves), printing each acknowledged save, until killed.
#[test]
fn child_snapshot_process() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let mode = std::env::var(CHILD_MODE).unwrap_or_default();
    let store = Store::open(PathBuf::from(dir).join("store"), child_options(&mode)).unwrap();
    store.set_snapshot_options(
        SnapshotOptions::default()
            .with_keep_per_stream(2)
            .with_compact_min_bytes(8192),
    );
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let stream = format!("K-{}", i % 2);
        let r = store
            .append(&stream, ExpectedVersion::Any, [EventData::new("E", format!("{i}"))])
            .unwrap();
        let v = r.first_version;
        let data = snapshot_bytes(&stream, v);
        store.save_snapshot(&stream, v, 1, &data).unwrap();
        writeln!(out, "ack {stream} {v}").unwrap();
        out.flush().unwrap();
    }
}

fn snapshot_bytes(stream: &str, v: u64) -> Vec<u8> {
    format!("{stream}@{v}:{}", "s".repeat((v % 50) as usize * 20)).into_bytes()
}

/// SIGKILL a child saving snapshots (and compacting) in each durability
/// mode: the latest acknowledged snapshot of each stream loads back with
/// its bytes, the store opens, and nothing but a torn tail is reported.
#[test]
fn killed_snapshot_saver_keeps_every_acknowledged_snapshot() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (round, mode) in ["sync", "buffered", "periodic", "buffered"].iter().enumerate() {
        let lines = common::child::run_and_kill(
            "child_snapshot_process",
            &[(CHILD_DIR, &dir.path()), (CHILD_MODE, mode)],
            Duration::from_millis(200 + 90 * round as u64),
        );
        let mut acked: HashMap<String, u64> = HashMap::new();
        for line in &lines {
            if let Some(rest) = line.strip_prefix("ack ") {
                let mut it = rest.split(' ');
                let s = it.next().unwrap().to_string();
                let v: u64 = it.next().unwrap().parse().unwrap();
                acked.insert(s, v);
            }
        }
        assert!(!acked.is_empty(), "round {round}: the child saved nothing");
        let store = Store::open(dir.path().join("store"), child_options(mode))
            .unwrap_or_else(|e| panic!("round {round} ({mode}): open failed: {e}"));
        for (stream, v) in &acked {
            let load = store.load_snapshot_at(stream, *v);
            let s = load.snapshot.unwrap_or_else(|| {
                panic!(
                    "round {round} ({mode}): acknowledged snapshot {stream}@{v} lost: {:?}",
                    load.issues
                )
            });
            assert_eq!(s.version, *v, "round {round} ({mode}): {stream}");
            assert_eq!(s.data.to_vec(), snapshot_bytes(stream, *v));
        }
        for issue in store.snapshot_issues() {
            assert!(
                matches!(issue, SnapshotIssue::TornTail { .. }),
                "round {round} ({mode}): {issue}"
            );
        }
        store.close().unwrap();
    }
}

/// Snapshot and checkpoint saves racing close(): once close() has
/// returned, neither file changes, and the savers get Error::Closed.
#[test]
fn no_snapshot_or_checkpoint_write_after_close_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let store = Store::open(&path, opts(Durability::Buffered)).unwrap();
    common::append_n(&store, "N-1", "E", 100);
    let stop = Arc::new(AtomicBool::new(false));
    let mut savers = Vec::new();
    for t in 0..3u64 {
        let store = store.clone();
        let stop = stop.clone();
        savers.push(std::thread::spawn(move || {
            let mut closed = false;
            for i in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = if t == 0 {
                    store.checkpoints().save("c", i % 100 + 1)
                } else {
                    store.save_snapshot("N-1", i % 100 + 1, 1, &vec![t as u8; 2000])
                };
                match r {
                    Ok(()) => assert!(!closed, "a save succeeded after one saw Closed"),
                    Err(Error::Closed) => closed = true,
                    Err(e) => panic!("unexpected error racing close: {e}"),
                }
            }
            closed
        }));
    }
    std::thread::sleep(Duration::from_millis(100));
    store.clone().close().unwrap();
    let files = |p: &Path| -> Vec<Vec<u8>> {
        ["snapshots", "checkpoints"]
            .iter()
            .map(|f| std::fs::read(p.join(f)).unwrap_or_default())
            .collect()
    };
    let at_close = files(&path);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    for s in savers {
        assert!(s.join().unwrap(), "every saver met Closed");
    }
    assert!(files(&path) == at_close, "a file changed after close() returned");
}

/// A snapshot file from another store, and a `snapshots` directory where
/// the file should be: opens work, loads never fail (FileReplaced / Io
/// issue), a save on the foreign file works after it was started afresh.
#[test]
fn foreign_or_unusable_snapshot_files_never_fail_a_load() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    snapshot_store(&a);
    snapshot_store(&b);
    std::fs::copy(a.join("snapshots"), b.join("snapshots")).unwrap();
    let store = Store::open(&b, opts(Durability::Sync)).unwrap();
    let load = store.load_snapshot("S-1");
    assert!(load.snapshot.is_none(), "a snapshot of another store was used");
    assert!(
        load.issues
            .iter()
            .any(|i| matches!(i, SnapshotIssue::FileReplaced { .. })),
        "{:?}",
        load.issues
    );
    store.save_snapshot("S-1", 6, 1, b"fresh").unwrap();
    assert_eq!(&store.load_snapshot("S-1").snapshot.unwrap().data[..], b"fresh");
    store.close().unwrap();

    std::fs::remove_file(a.join("snapshots")).unwrap();
    std::fs::create_dir(a.join("snapshots")).unwrap();
    let store = Store::open(&a, opts(Durability::Sync)).unwrap();
    let load = store.load_snapshot("S-1");
    assert!(load.snapshot.is_none());
    assert!(!load.issues.is_empty(), "an unusable snapshot file is reported");
    assert!(store.save_snapshot("S-1", 6, 1, b"x").is_err());
    store.close().unwrap();
}

/// ProjectionRunner::run following live events ends with Ok when another
/// thread closes the store (documented), and the next runner on the
/// reopened store resumes with nothing skipped.
#[test]
fn a_live_projection_run_ends_on_close_and_resumes_without_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let store = Store::open(&path, opts(Durability::Periodic(Duration::from_millis(2)))).unwrap();
    populate(&store, 50);
    let runner_store = store.clone();
    let handle = std::thread::spawn(move || {
        let mut runner = ProjectionRunner::new(&runner_store, "live", SubscriptionFilter::all(), Recorder::default())
            .unwrap()
            .with_checkpoint_every(5, Duration::from_millis(1));
        let r = runner.run(Duration::from_millis(5), |_| false);
        (
            r.map_err(|e| e.to_string()),
            runner.checkpoint(),
            runner.into_projection().applied,
        )
    });
    let w = store.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..2000 {
            let (stream, events) = writer_batch(i % 4, i);
            if w.append(&stream, ExpectedVersion::Any, events).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(60));
    store.clone().close().unwrap();
    writer.join().unwrap();
    let (r, cp, applied) = within(Duration::from_secs(5), "run after close", move || {
        handle.join().unwrap()
    });
    assert!(r.is_ok(), "run after close: {r:?}");
    assert_eq!(applied, (1..=applied.len() as u64).collect::<Vec<_>>());
    assert!(cp <= applied.len() as u64);
    drop(store);
    let store = Store::open(&path, opts(Durability::Sync)).unwrap();
    assert_eq!(store.checkpoints().load("live").unwrap(), Some(cp).filter(|c| *c > 0));
    let mut runner = ProjectionRunner::new(&store, "live", SubscriptionFilter::all(), Recorder::default()).unwrap();
    runner.run_until_caught_up().unwrap();
    assert_eq!(
        runner.projection().applied,
        (cp + 1..=store.last_position()).collect::<Vec<_>>()
    );
}

/// Store B closed from a handler of store A's dispatcher while B's own
/// dispatcher is inside a handler call. Documented: "close() waits for a
/// handler call in progress to return, and no handler is called once
/// close() has returned"; the one exception is "a close from inside a
/// handler" (which would wait for itself). But the "on a dispatcher
/// thread" mark is per thread, not per store: B's close, made on A's
/// dispatcher thread, does not wait for B's handler.
#[test]
fn closing_another_store_from_a_handler_still_waits_for_its_handlers() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path().join("a"), opts(Durability::Sync)).unwrap();
    let b = Store::open(dir.path().join("b"), opts(Durability::Sync)).unwrap();
    b.append("B-1", ExpectedVersion::Any, [EventData::new("X", "1")])
        .unwrap();
    let in_b = Arc::new(AtomicBool::new(false));
    let ib = in_b.clone();
    let db = b
        .dispatcher()
        .handler("slow-b", SubscriptionFilter::all(), StartFrom::Start, move |_| {
            ib.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
            ib.store(false, Ordering::SeqCst);
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    while !in_b.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let b_for_a = Arc::new(Mutex::new(Some(b)));
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let ib = in_b.clone();
    let bb = b_for_a.clone();
    let da = a
        .dispatcher()
        .handler("closes-b", SubscriptionFilter::all(), StartFrom::Start, move |_| {
            if let Some(b) = bb.lock().unwrap().take() {
                b.close().unwrap();
                // close() returned: B's handler must not be running.
                let _ = tx.lock().unwrap().send(ib.load(Ordering::SeqCst));
            }
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    a.append("A-1", ExpectedVersion::Any, [EventData::new("X", "go")])
        .unwrap();
    let b_handler_running_after_close = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    da.stop().unwrap();
    let _ = db.join();
    assert!(
        !b_handler_running_after_close,
        "store B's close() (called on store A's dispatcher thread) returned while B's handler was still running"
    );
}

/// `status` after a close still measures what the consumer did not get
/// to: `head` stays the store's last published position (also once every
/// handle is dropped: the last one the subscription read), and `lag`
/// counts the positions past `position`, buffered ones included.
#[test]
fn status_after_close_still_reports_the_undelivered_lag() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts(Durability::Sync)).unwrap();
    store
        .append("S-1", ExpectedVersion::Any, (0..600).map(|_| EventData::new("T", "{}")))
        .unwrap();
    let mut sub = store.subscribe_all(StartFrom::Start).unwrap();
    assert_eq!(sub.recv().unwrap().unwrap().position(), 1);
    let before = sub.status();
    assert_eq!((before.position, before.head, before.lag), (1, 600, 599));
    assert!(before.buffered > 0);
    store.clone().close().unwrap();
    let after = sub.status();
    assert_eq!(after.state, SubscriptionState::Closed);
    assert_eq!((after.position, after.head, after.lag), (1, 600, 599));
    drop(store);
    let gone = sub.status();
    assert_eq!(
        (gone.state, gone.position, gone.head, gone.lag),
        (SubscriptionState::Closed, 1, 600, 599)
    );
}
