//! The dispatcher: many handlers on one thread, each fed the events its
//! filter selects from its own start, in global order, each once, catching
//! up then live under concurrent appends; a failing or panicking handler
//! stops alone; a stalled handler never holds writers back; stop and
//! resume from the reported positions without gap or duplicate; the store
//! closing ends it; a damaged log stops it with the error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use annal::{
    Dispatcher, Durability, Error, EventData, ExpectedVersion, HandlerStatus, Options, ReadAll, RecordedEvent,
    StartFrom, Store, SubscriptionFilter,
};

mod common;
use common::{append_n, open_with};

/// Positions a handler received, shared with the test.
type Seen = Arc<Mutex<Vec<u64>>>;

fn recorder(seen: &Seen) -> impl FnMut(&RecordedEvent) -> Result<(), annal::HandlerError> + Send + 'static {
    let seen = seen.clone();
    move |e| {
        seen.lock().unwrap().push(e.position());
        Ok(())
    }
}

/// A started dispatcher with one handler recording into `seen`.
fn one_recorder(store: &Store, filter: SubscriptionFilter, from: StartFrom, seen: &Seen) -> Dispatcher {
    store
        .dispatcher()
        .handler("h", filter, from, recorder(seen))
        .unwrap()
        .start()
        .unwrap()
}

/// The positions `filter` selects after `after`, read straight from the log.
fn expected(store: &Store, filter: impl Fn(&RecordedEvent) -> bool, after: u64) -> Vec<u64> {
    store
        .read_all(ReadAll::forward().from_position(after))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| filter(e))
        .map(|e| e.position())
        .collect()
}

/// Waits until every running handler's position reaches `head`.
fn wait_until_at(dispatcher: &Dispatcher, head: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = dispatcher.status();
        if status.iter().all(|h| h.failure.is_some() || h.position >= head) {
            return;
        }
        assert!(Instant::now() < deadline, "handlers stuck: {status:?} (head {head})");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn every_handler_gets_its_events_once_in_order_under_concurrent_appends() {
    for round in 0..6u64 {
        let dir = tempfile::tempdir().unwrap();
        let durability = if round < 2 {
            Durability::Sync
        } else {
            Durability::Buffered
        };
        let store = open_with(dir.path(), durability);
        // History over several pages, in two categories.
        let history = 300 + (round as usize * 53) % 400;
        append_n(&store, "Order-1", "Placed", history / 2);
        append_n(&store, "Invoice-1", "Raised", history - history / 2);
        let checkpoint = (history / 3) as u64;

        let seen: Vec<Seen> = (0..6).map(|_| Seen::default()).collect();
        let dispatcher = store
            .dispatcher()
            .handler("all", SubscriptionFilter::all(), StartFrom::Start, recorder(&seen[0]))
            .unwrap()
            .handler(
                "orders",
                SubscriptionFilter::category("Order"),
                StartFrom::Start,
                recorder(&seen[1]),
            )
            .unwrap()
            .handler(
                "writer-2",
                SubscriptionFilter::stream("Order-2"),
                StartFrom::Start,
                recorder(&seen[2]),
            )
            .unwrap()
            .handler(
                "paid",
                SubscriptionFilter::all().event_type("Paid"),
                StartFrom::After(checkpoint),
                recorder(&seen[3]),
            )
            .unwrap()
            .handler("new", SubscriptionFilter::all(), StartFrom::End, recorder(&seen[4]))
            .unwrap()
            .handler(
                "resumed",
                SubscriptionFilter::all(),
                StartFrom::After(checkpoint),
                recorder(&seen[5]),
            )
            .unwrap()
            .start()
            .unwrap();

        let go = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4u64)
            .map(|w| {
                let (store, go) = (store.clone(), go.clone());
                thread::spawn(move || {
                    while !go.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    let stream = if w % 2 == 0 {
                        format!("Order-{w}")
                    } else {
                        format!("Invoice-{w}")
                    };
                    for i in 0..150u64 {
                        let events = [EventData::new("Paid", format!("{w}:{i}")), EventData::new("Noted", "x")];
                        store.append(&stream, ExpectedVersion::Any, events).expect("append");
                    }
                })
            })
            .collect();
        go.store(true, Ordering::Release);
        writers.into_iter().for_each(|w| w.join().unwrap());
        let head = store
            .read_all(ReadAll::backward().limit(1))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .position();
        wait_until_at(&dispatcher, head);
        let status = dispatcher.stop().unwrap();

        let want = [
            expected(&store, |_| true, 0),
            expected(&store, |e| e.stream().starts_with("Order-"), 0),
            expected(&store, |e| e.stream() == "Order-2", 0),
            expected(&store, |e| e.event_type() == "Paid", checkpoint),
            expected(&store, |_| true, history as u64),
            expected(&store, |_| true, checkpoint),
        ];
        for (i, want) in want.iter().enumerate() {
            let got = seen[i].lock().unwrap().clone();
            assert_eq!(
                &got, want,
                "round {round}: handler {} got the wrong events",
                status[i].name
            );
            assert_eq!(status[i].position, head, "round {round}: handler {}", status[i].name);
            assert_eq!(status[i].failure, None);
        }
    }
}

#[test]
fn a_failing_or_panicking_handler_stops_alone_and_reports_where() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Buffered);
    append_n(&store, "Order-1", "Placed", 20);
    let (ok, failing, panicking) = (Seen::default(), Seen::default(), Seen::default());
    let failing_seen = failing.clone();
    let panicking_seen = panicking.clone();
    let dispatcher = store
        .dispatcher()
        .handler("failing", SubscriptionFilter::all(), StartFrom::Start, move |e| {
            if e.position() == 7 {
                return Err("no room for event 7".into());
            }
            failing_seen.lock().unwrap().push(e.position());
            Ok(())
        })
        .unwrap()
        .handler("panicking", SubscriptionFilter::all(), StartFrom::Start, move |e| {
            assert!(e.position() != 12, "cannot take event 12");
            panicking_seen.lock().unwrap().push(e.position());
            Ok(())
        })
        .unwrap()
        .handler("ok", SubscriptionFilter::all(), StartFrom::Start, recorder(&ok))
        .unwrap()
        .start()
        .unwrap();
    append_n(&store, "Order-1", "Placed", 30);
    wait_until_at(&dispatcher, 50);
    assert!(dispatcher.is_running());
    let status = dispatcher.stop().unwrap();

    assert_eq!(*failing.lock().unwrap(), (1..7).collect::<Vec<_>>());
    assert_eq!(status[0].position, 6);
    assert_eq!(status[0].failure, Some((7, "no room for event 7".to_string())));

    assert_eq!(*panicking.lock().unwrap(), (1..12).collect::<Vec<_>>());
    assert_eq!(status[1].position, 11);
    let (at, message) = status[1].failure.clone().unwrap();
    assert_eq!(at, 12);
    assert!(
        message.contains("handler panicked") && message.contains("cannot take event 12"),
        "{message}"
    );

    assert_eq!(*ok.lock().unwrap(), (1..=50).collect::<Vec<_>>());
    assert_eq!((status[2].position, status[2].failure.clone()), (50, None));
}

#[test]
fn a_stalled_handler_never_holds_writers_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Buffered);
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let stalled = Seen::default();
    let stalled_seen = stalled.clone();
    let dispatcher = store
        .dispatcher()
        .handler("stalled", SubscriptionFilter::all(), StartFrom::Start, move |e| {
            if e.position() == 1 {
                release_rx.recv().map_err(|e| e.to_string())?;
            }
            stalled_seen.lock().unwrap().push(e.position());
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    // The handler blocks on the first event; the writer goes on regardless.
    append_n(&store, "Order-1", "Placed", 2_000);
    assert!(
        stalled.lock().unwrap().is_empty(),
        "the handler was meant to be stalled"
    );
    release_tx.send(()).unwrap();
    wait_until_at(&dispatcher, 2_000);
    dispatcher.stop().unwrap();
    assert_eq!(*stalled.lock().unwrap(), (1..=2_000).collect::<Vec<_>>());
}

#[test]
fn stop_then_resume_from_the_reported_positions_has_no_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Buffered);
    let seen = Seen::default();
    let writer = {
        let store = store.clone();
        thread::spawn(move || append_n(&store, "Order-1", "Placed", 3_000))
    };
    let mut position = 0;
    // Stop and restart the dispatcher while the writer appends.
    while !writer.is_finished() {
        let dispatcher = one_recorder(
            &store,
            SubscriptionFilter::stream("Order-1"),
            StartFrom::After(position),
            &seen,
        );
        thread::sleep(Duration::from_millis(2));
        let status: Vec<HandlerStatus> = dispatcher.stop().unwrap();
        position = status[0].position;
    }
    writer.join().unwrap();
    let dispatcher = one_recorder(
        &store,
        SubscriptionFilter::stream("Order-1"),
        StartFrom::After(position),
        &seen,
    );
    wait_until_at(&dispatcher, 3_000);
    drop(dispatcher); // dropping stops it too
    assert_eq!(*seen.lock().unwrap(), (1..=3_000).collect::<Vec<_>>());
}

#[test]
fn closing_the_store_ends_the_dispatcher_and_it_does_not_keep_the_store_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Sync);
    append_n(&store, "Order-1", "Placed", 3);
    let seen = Seen::default();
    let dispatcher = one_recorder(&store, SubscriptionFilter::all(), StartFrom::Start, &seen);
    wait_until_at(&dispatcher, 3);
    store.close().unwrap();
    let status = dispatcher.join().unwrap();
    assert_eq!(status[0].position, 3);
    // The directory opens again: the dispatcher held no handle.
    let store = open_with(dir.path(), Durability::Sync);
    assert!(store.dispatcher().start().is_ok());

    // Dropping the last handle (no close) ends it as well.
    let seen = Seen::default();
    let dispatcher = one_recorder(&store, SubscriptionFilter::all(), StartFrom::Start, &seen);
    wait_until_at(&dispatcher, 3);
    drop(store);
    let status = dispatcher.join().unwrap();
    assert_eq!((status[0].position, seen.lock().unwrap().len()), (3, 3));
    let store = open_with(dir.path(), Durability::Sync);
    store.clone().close().unwrap();
    assert!(matches!(store.dispatcher().start(), Err(Error::Closed)));
    let refused = store
        .dispatcher()
        .handler("h", SubscriptionFilter::all(), StartFrom::Start, |_| Ok(()));
    assert!(matches!(refused, Err(Error::Closed)));
}

#[test]
fn bad_starts_and_stream_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Buffered);
    append_n(&store, "Order-1", "Placed", 3);
    let refused = store
        .dispatcher()
        .handler("h", SubscriptionFilter::all(), StartFrom::After(4), |_| Ok(()))
        .unwrap_err();
    assert!(matches!(refused, Error::InvalidInput(_)), "{refused}");
    let refused = store
        .dispatcher()
        .handler("h", SubscriptionFilter::stream(""), StartFrom::Start, |_| Ok(()))
        .unwrap_err();
    assert!(matches!(refused, Error::InvalidInput(_)), "{refused}");
}

#[test]
fn a_damaged_record_stops_the_dispatcher_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Sync);
    for i in 0..20 {
        store
            .append(
                "Order-1",
                ExpectedVersion::Any,
                [EventData::new("Placed", format!("payload-{i:04}"))],
            )
            .unwrap();
    }
    store.close().unwrap();
    // Damage the payload of event 10 in the middle of the log.
    let segment = std::fs::read_dir(dir.path().join("store"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .expect("a segment file");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes
        .windows(12)
        .position(|w| w == b"payload-0009")
        .expect("event 10's payload");
    bytes[at] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();

    // A small idempotency window: open re-reads only the last batches, so
    // the damage is found by the dispatcher's read, not by open.
    let options = Options::default().with_idempotency_window_events(2);
    let store = Store::open(dir.path().join("store"), options).expect("open");
    let seen = Seen::default();
    let dispatcher = one_recorder(&store, SubscriptionFilter::all(), StartFrom::Start, &seen);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dispatcher.is_running() {
        assert!(
            Instant::now() < deadline,
            "the dispatcher went on past a damaged record"
        );
        thread::sleep(Duration::from_millis(1));
    }
    let err = dispatcher.stop().unwrap_err();
    assert!(matches!(err.error, Error::Corruption { .. }), "{err}");
    // Every event before the damaged one was handled, nothing at or past it.
    assert_eq!(*seen.lock().unwrap(), (1..10).collect::<Vec<_>>());
    assert_eq!(err.handlers[0].position, 9);

    // A subscription likewise delivers the events before the damage, then
    // reports it.
    let mut sub = store.subscribe_all(StartFrom::Start).unwrap();
    for p in 1..10 {
        assert_eq!(sub.try_recv().unwrap().map(|e| e.position()), Some(p));
    }
    assert!(matches!(sub.try_recv(), Err(Error::Corruption { .. })));
    assert_eq!(sub.position(), 9);
}

#[test]
fn a_dispatcher_whose_handlers_all_failed_ends_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Buffered);
    append_n(&store, "Order-1", "Placed", 3);
    let dispatcher = store
        .dispatcher()
        .handler("a", SubscriptionFilter::all(), StartFrom::Start, |_| Err("no".into()))
        .unwrap()
        .handler("b", SubscriptionFilter::all(), StartFrom::Start, |e| {
            if e.position() == 2 {
                return Err("no".into());
            }
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    // No append, no close: it must end on its own.
    let status = dispatcher.join().unwrap();
    assert_eq!(status[0].failure, Some((1, "no".to_string())));
    assert_eq!(status[1].failure, Some((2, "no".to_string())));
    assert_eq!((status[0].position, status[1].position), (0, 1));
}

#[test]
fn close_waits_for_the_handler_call_in_progress_then_no_handler_is_called() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Sync);
    append_n(&store, "Order-1", "Placed", 50);
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let calls_after_close = Arc::new(Mutex::new(Vec::new()));
    let closed = Arc::new(AtomicBool::new(false));
    let returned = Arc::new(AtomicBool::new(false));
    let (calls, closed_seen, slow_returned) = (calls_after_close.clone(), closed.clone(), returned.clone());
    let second_calls = calls_after_close.clone();
    let second_closed = closed.clone();
    let dispatcher = store
        .dispatcher()
        .handler("slow", SubscriptionFilter::all(), StartFrom::Start, move |e| {
            if closed_seen.load(Ordering::Acquire) {
                calls.lock().unwrap().push(("slow", e.position()));
            }
            if e.position() == 10 {
                let _ = entered_tx.send(());
                thread::sleep(Duration::from_millis(300));
                slow_returned.store(true, Ordering::Release);
            }
            Ok(())
        })
        .unwrap()
        // Called right after the slow handler for the same event: not once
        // the store's close has returned.
        .handler("next", SubscriptionFilter::all(), StartFrom::Start, move |e| {
            if second_closed.load(Ordering::Acquire) {
                second_calls.lock().unwrap().push(("next", e.position()));
            }
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    entered_rx.recv().unwrap();
    store.close().unwrap();
    closed.store(true, Ordering::Release);
    assert!(
        returned.load(Ordering::Acquire),
        "close returned while a handler call was in progress"
    );
    // The directory opens again at once.
    let reopened = open_with(dir.path(), Durability::Sync);
    let status = dispatcher.join().unwrap();
    assert_eq!(status[0].position, 10);
    assert_eq!(
        status[1].position, 9,
        "the next handler was called after close returned"
    );
    assert!(calls_after_close.lock().unwrap().is_empty());
    drop(reopened);

    // A builder that was never started does not hold the store either.
    let store = open_with(dir.path(), Durability::Sync);
    let builder = store
        .dispatcher()
        .handler("h", SubscriptionFilter::all(), StartFrom::Start, |_| Ok(()))
        .unwrap();
    store.close().unwrap();
    let reopened = open_with(dir.path(), Durability::Sync);
    assert!(matches!(builder.start(), Err(Error::Closed)));
    drop(reopened);
}

#[test]
fn a_handler_may_stop_or_drop_its_own_dispatcher() {
    for drop_it in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_with(dir.path(), Durability::Buffered);
        append_n(&store, "Order-1", "Placed", 20);
        let slot: Arc<Mutex<Option<Dispatcher>>> = Arc::default();
        let seen = Seen::default();
        let (inner_slot, inner_seen) = (slot.clone(), seen.clone());
        let dispatcher = store
            .dispatcher()
            .handler("h", SubscriptionFilter::all(), StartFrom::Start, move |e| {
                inner_seen.lock().unwrap().push(e.position());
                if e.position() == 5 {
                    // The test thread puts the handle in the slot after start.
                    let me = loop {
                        if let Some(me) = inner_slot.lock().unwrap().take() {
                            break me;
                        }
                        thread::sleep(Duration::from_millis(1));
                    };
                    if drop_it {
                        drop(me);
                    } else {
                        let status = me.stop().map_err(|e| e.to_string())?;
                        assert_eq!(status[0].position, 4);
                    }
                }
                Ok(())
            })
            .unwrap()
            .start()
            .unwrap();
        let handle = slot.lock().unwrap().insert(dispatcher).status();
        assert_eq!(handle.len(), 1);
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.lock().unwrap().len() < 5 || slot.lock().unwrap().is_some() {
            assert!(Instant::now() < deadline, "the handler never ran");
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(50));
        assert_eq!(*seen.lock().unwrap(), (1..=5).collect::<Vec<_>>(), "drop: {drop_it}");
    }
}

#[test]
fn a_stop_from_a_handler_skips_the_handlers_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Buffered);
    append_n(&store, "Order-1", "Placed", 10);
    let slot: Arc<Mutex<Option<Dispatcher>>> = Arc::default();
    let calls: Arc<Mutex<Vec<(&str, u64)>>> = Arc::default();
    let (inner_slot, first_calls, second_calls) = (slot.clone(), calls.clone(), calls.clone());
    let dispatcher = store
        .dispatcher()
        .handler("first", SubscriptionFilter::all(), StartFrom::Start, move |e| {
            first_calls.lock().unwrap().push(("first", e.position()));
            if e.position() == 3 {
                let me = loop {
                    if let Some(me) = inner_slot.lock().unwrap().take() {
                        break me;
                    }
                    thread::sleep(Duration::from_millis(1));
                };
                let status = me.stop().map_err(|e| e.to_string())?;
                // Where each got to as it stops: the second one has not
                // had event 3.
                assert_eq!((status[0].position, status[1].position), (2, 2));
            }
            Ok(())
        })
        .unwrap()
        .handler("second", SubscriptionFilter::all(), StartFrom::Start, move |e| {
            second_calls.lock().unwrap().push(("second", e.position()));
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    *slot.lock().unwrap() = Some(dispatcher);
    let deadline = Instant::now() + Duration::from_secs(30);
    while slot.lock().unwrap().is_some() || calls.lock().unwrap().len() < 5 {
        assert!(Instant::now() < deadline, "the handler never stopped its dispatcher");
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        *calls.lock().unwrap(),
        [("first", 1), ("second", 1), ("first", 2), ("second", 2), ("first", 3)]
    );
}

/// A handler that closes the store while another thread closes it too:
/// neither waits for the other forever.
#[test]
fn a_handler_and_another_thread_closing_the_store_together_do_not_deadlock() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let store = open_with(dir.path(), Durability::Buffered);
        append_n(&store, "Order-1", "Placed", 20);
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        let handler_store = store.clone();
        let holder = Arc::new(Mutex::new(Some(handler_store)));
        let inner = holder.clone();
        let dispatcher = store
            .dispatcher()
            .handler("closer", SubscriptionFilter::all(), StartFrom::Start, move |e| {
                if e.position() == 5 {
                    let _ = entered_tx.send(());
                    if let Some(s) = inner.lock().unwrap().take() {
                        s.close().map_err(|e| e.to_string())?;
                    }
                }
                Ok(())
            })
            .unwrap()
            .start()
            .unwrap();
        entered_rx.recv().unwrap();
        if round % 2 == 0 {
            thread::sleep(Duration::from_micros(200));
        }
        let (done_tx, done_rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = store.close();
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("close deadlocked with a handler's close");
        let status = dispatcher.join().unwrap();
        assert!(status[0].position <= 5, "handler went on after the close: {status:?}");
        drop(holder);
    }
}

/// `wait_for(position, timeout)`: true once every handler has handled (or
/// passed over) every event up to the position, the events visible to the
/// caller then; false when the timeout passes first, and false at once
/// (not at the timeout) when a handler fails before the position or the
/// store closes.
#[test]
fn wait_for_a_position_then_read_what_the_handlers_did() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Sync);
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let (slow, gate) = (seen.clone(), Arc::new(Mutex::new(())));
    let held = gate.clone();
    let dispatcher = store
        .dispatcher()
        .handler("slow", SubscriptionFilter::all(), StartFrom::Start, move |e| {
            let _open = held.lock().unwrap();
            thread::sleep(Duration::from_millis(2));
            slow.lock().unwrap().push(e.position());
            Ok(())
        })
        .unwrap()
        .handler(
            "others",
            SubscriptionFilter::stream("Other-1"),
            StartFrom::Start,
            |_| Ok(()),
        )
        .unwrap()
        .start()
        .unwrap();
    append_n(&store, "Order-1", "E", 20);
    let last = store.last_position();
    assert!(dispatcher.wait_for(last, Duration::from_secs(20)));
    assert_eq!(seen.lock().unwrap().len(), 20, "every event handled when it returns");
    assert!(dispatcher.status().iter().all(|h| h.position >= last));

    // A handler held up: the timeout passes first.
    let closed_gate = gate.lock().unwrap();
    append_n(&store, "Order-1", "E", 1);
    let started = Instant::now();
    assert!(!dispatcher.wait_for(last + 1, Duration::from_millis(100)));
    assert!(started.elapsed() >= Duration::from_millis(100));
    drop(closed_gate);
    assert!(dispatcher.wait_for(last + 1, Duration::from_secs(20)));
    drop(dispatcher);

    // A handler failing before the position: false long before the timeout.
    let failing = store
        .dispatcher()
        .handler("fails", SubscriptionFilter::all(), StartFrom::Start, |e| {
            if e.position() == 3 { Err("no".into()) } else { Ok(()) }
        })
        .unwrap()
        .handler("goes on", SubscriptionFilter::all(), StartFrom::Start, |_| Ok(()))
        .unwrap()
        .start()
        .unwrap();
    let started = Instant::now();
    assert!(!failing.wait_for(store.last_position(), Duration::from_secs(30)));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(failing.is_running(), "the other handler goes on");
    drop(failing);

    // The store closing: false at once too.
    let waiting = one_recorder(
        &store,
        SubscriptionFilter::all(),
        StartFrom::End,
        &Arc::new(Mutex::new(Vec::new())),
    );
    let target = store.last_position() + 1;
    let closer = {
        let store = store.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            store.close().unwrap();
        })
    };
    let started = Instant::now();
    assert!(!waiting.wait_for(target, Duration::from_secs(30)));
    assert!(started.elapsed() < Duration::from_secs(10));
    closer.join().unwrap();
}

/// `wait_for` from one of the dispatcher's own handlers does not wait out
/// its timeout (the handler's position moves only once it returns): it
/// says at once whether the handlers are there.
#[test]
fn wait_for_from_an_own_handler_does_not_wait() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Sync);
    let slot: Arc<Mutex<Option<Dispatcher>>> = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel();
    let inside = slot.clone();
    let dispatcher = store
        .dispatcher()
        .handler("asks", SubscriptionFilter::all(), StartFrom::Start, move |e| {
            if e.position() == 2 {
                let guard = inside.lock().unwrap();
                let d = guard.as_ref().expect("set before the append");
                let started = Instant::now();
                let answers = (
                    d.wait_for(1, Duration::from_secs(30)),
                    d.wait_for(2, Duration::from_secs(30)),
                );
                tx.send((answers, started.elapsed())).unwrap();
            }
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    *slot.lock().unwrap() = Some(dispatcher);
    append_n(&store, "Order-1", "E", 2);
    let (answers, took) = rx.recv_timeout(Duration::from_secs(20)).expect("the handler ran");
    assert_eq!(answers, (true, false), "at 1 already, not yet at 2");
    assert!(took < Duration::from_secs(5), "waited {took:?}");
    let dispatcher = slot.lock().unwrap().take().unwrap();
    assert!(dispatcher.wait_for(2, Duration::from_secs(20)));
}

/// When every handler follows one category, the shared read lists that
/// category's events (pages of many of them) instead of reading the whole
/// log: each handler still gets exactly its events from its start, in
/// order, once, over a history of several such pages interleaved with
/// other categories and under concurrent appends; `wait_for` a position
/// of another category's event returns once the handlers passed it; and a
/// handler of another kind added makes the read the whole log's again.
#[test]
fn handlers_of_one_category_get_its_events_from_a_read_of_that_category_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Buffered);
    // 12,000 events, a third of them Order's, interleaved in batches.
    let streams = ["Order-1", "Invoice-1", "Order-2", "Payment-1", "Invoice-2", "Payment-2"];
    for round in 0..200 {
        for (k, stream) in streams.iter().enumerate() {
            let events: Vec<_> = (0..10)
                .map(|i| EventData::new(if i % 3 == 0 { "Paid" } else { "Placed" }, format!("{round}:{k}:{i}")))
                .collect();
            store.append(stream, ExpectedVersion::Any, events).unwrap();
        }
    }
    let checkpoint = 5_001;
    let order = |e: &RecordedEvent| e.stream().starts_with("Order-");
    let seen: Vec<Seen> = (0..3).map(|_| Seen::default()).collect();
    let dispatcher = store
        .dispatcher()
        .handler(
            "orders",
            SubscriptionFilter::category("Order"),
            StartFrom::Start,
            recorder(&seen[0]),
        )
        .unwrap()
        .handler(
            "paid-orders",
            SubscriptionFilter::category("Order").event_type("Paid"),
            StartFrom::After(checkpoint),
            recorder(&seen[1]),
        )
        .unwrap()
        .start()
        .unwrap();
    // The last event of the history is a Payment's.
    assert!(dispatcher.wait_for(12_000, Duration::from_secs(30)));
    for (i, want) in [
        expected(&store, order, 0),
        expected(&store, |e| order(e) && e.event_type() == "Paid", checkpoint),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(&*seen[i].lock().unwrap(), want, "handler {i}");
    }

    let writers: Vec<_> = ["Order-3", "Invoice-3", "Order-4"]
        .into_iter()
        .map(|stream| {
            let store = store.clone();
            thread::spawn(move || {
                for i in 0..300u64 {
                    let events = [EventData::new("Paid", format!("{i}")), EventData::new("Noted", "x")];
                    store.append(stream, ExpectedVersion::Any, events).expect("append");
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    let head = 12_000 + 3 * 600;
    assert!(dispatcher.wait_for(head, Duration::from_secs(30)));
    let status = dispatcher.stop().unwrap();
    let want = [
        expected(&store, order, 0),
        expected(&store, |e| order(e) && e.event_type() == "Paid", checkpoint),
    ];
    for (i, want) in want.iter().enumerate() {
        assert_eq!(&*seen[i].lock().unwrap(), want, "handler {i} after live appends");
        assert_eq!(status[i].position, head);
    }

    // With a handler of all events beside one of the category, both get
    // theirs from a read of the whole log.
    let (all, orders) = (Seen::default(), Seen::default());
    let dispatcher = store
        .dispatcher()
        .handler(
            "all",
            SubscriptionFilter::all(),
            StartFrom::After(11_000),
            recorder(&all),
        )
        .unwrap()
        .handler(
            "orders",
            SubscriptionFilter::category("Order"),
            StartFrom::Start,
            recorder(&orders),
        )
        .unwrap()
        .start()
        .unwrap();
    assert!(dispatcher.wait_for(head, Duration::from_secs(30)));
    dispatcher.stop().unwrap();
    assert_eq!(*all.lock().unwrap(), expected(&store, |_| true, 11_000));
    assert_eq!(*orders.lock().unwrap(), expected(&store, order, 0));
}

/// `wait_for` returns as soon as the handlers pass the position it waits
/// for, also in the middle of a page whose later events a handler is slow
/// to handle; and when a handler fails before that position, at once.
#[test]
fn wait_for_returns_when_the_handlers_pass_its_position_not_at_the_page_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Buffered);
    append_n(&store, "Order-1", "Placed", 200);
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let dispatcher = store
        .dispatcher()
        .handler("slow-at-150", SubscriptionFilter::all(), StartFrom::Start, move |e| {
            if e.position() == 150 {
                let _ = released.lock().unwrap().recv_timeout(Duration::from_secs(30));
            }
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    // Events 1 to 149 are handled while event 150 blocks: the wait for 100
    // returns, the one for 150 does not.
    // (Well before the blocked handler gives up, after 30 s.)
    assert!(dispatcher.wait_for(100, Duration::from_secs(10)));
    assert!(!dispatcher.wait_for(150, Duration::from_millis(200)));
    release.send(()).unwrap();
    assert!(dispatcher.wait_for(200, Duration::from_secs(30)));
    dispatcher.stop().unwrap();

    // A handler that fails at 120 while another blocks at 150 in the same
    // page: the wait for 190 returns false at once, not once the page ends.
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let dispatcher = store
        .dispatcher()
        .handler("fails-at-120", SubscriptionFilter::all(), StartFrom::Start, |e| {
            if e.position() == 120 {
                return Err("no".into());
            }
            Ok(())
        })
        .unwrap()
        .handler("slow-at-150", SubscriptionFilter::all(), StartFrom::Start, move |e| {
            if e.position() == 150 {
                let _ = released.lock().unwrap().recv_timeout(Duration::from_secs(30));
            }
            Ok(())
        })
        .unwrap()
        .start()
        .unwrap();
    let started = Instant::now();
    assert!(!dispatcher.wait_for(190, Duration::from_secs(20)));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    release.send(()).unwrap();
    let status = dispatcher.stop().unwrap();
    assert_eq!(status[0].position, 119);
}
