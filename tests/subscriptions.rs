//! Subscriptions: catch-up then live, exactly once and in order under
//! concurrent appends; slow and stalled consumers never hold writers back;
//! start at End; stream, category and event-type filters; status and lag;
//! unregistering on drop; ending on close. And a shuttle model check of the
//! wake-up protocol between writers and subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use annal::{
    Durability, Error, EventData, ExpectedVersion, ReadAll, StartFrom, Store, SubscriptionFilter, SubscriptionState,
};

mod common;
use common::{append_n, open_with};

/// Receives until `count` events arrived (or 30 s passed), checking order.
fn receive(sub: &mut annal::Subscription, count: usize) -> Vec<annal::RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out with {} of {count} events", got.len());
        if let Some(e) = sub.recv_timeout(left).expect("recv") {
            got.push(e);
        }
    }
    got
}

#[test]
fn catch_up_then_live_exactly_once_in_order_under_concurrent_appends() {
    for round in 0..12u64 {
        let dir = tempfile::tempdir().unwrap();
        // Two rounds in durable mode (group commit), the rest buffered.
        let durability = if round < 2 {
            Durability::Sync
        } else {
            Durability::Buffered
        };
        let store = open_with(dir.path(), durability);
        // History spanning several subscription pages.
        let history = 300 + (round as usize * 37) % 400;
        append_n(&store, "History-1", "Old", history);

        let writers = 4u64;
        let per_writer = 250u64;
        let total = history as u64 + writers * per_writer * 2; // batches of 2 events
        let go = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (store, go) = (store.clone(), go.clone());
                thread::spawn(move || {
                    while !go.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    for i in 0..per_writer {
                        let events = [EventData::new("A", format!("{w}:{i}")), EventData::new("B", "x")];
                        store
                            .append(&format!("Writer-{w}"), ExpectedVersion::Any, events)
                            .expect("append");
                    }
                })
            })
            .collect();
        // Subscribers from the start, from a checkpoint inside the history,
        // and one made while the writers run.
        let mut from_start = store.subscribe_all(StartFrom::Start).unwrap();
        let after = (round * 13) % history as u64;
        let mut from_checkpoint = store.subscribe_all(StartFrom::After(after)).unwrap();
        go.store(true, Ordering::Release);
        thread::sleep(Duration::from_millis(round % 4));
        let mut late = store.subscribe_all(StartFrom::Start).unwrap();

        let a = thread::spawn(move || receive(&mut from_start, total as usize));
        let b = thread::spawn(move || receive(&mut from_checkpoint, (total - after) as usize));
        let c = receive(&mut late, total as usize);
        for h in handles {
            h.join().unwrap();
        }
        let a = a.join().unwrap();
        let b = b.join().unwrap();
        let positions = |v: &[annal::RecordedEvent]| v.iter().map(|e| e.position()).collect::<Vec<_>>();
        assert_eq!(positions(&a), (1..=total).collect::<Vec<_>>(), "round {round}");
        assert_eq!(positions(&b), (after + 1..=total).collect::<Vec<_>>(), "round {round}");
        assert_eq!(positions(&c), (1..=total).collect::<Vec<_>>(), "round {round}");
        // The same events as a plain read, byte for byte.
        let all = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
        assert_eq!(a, all);
        assert_eq!(c, all);
        // Nothing more arrives.
        let mut late = late;
        assert!(late.try_recv().unwrap().is_none());
        assert_eq!(late.status().state, SubscriptionState::Live);
        assert_eq!(late.status().lag, 0);
    }
}

#[test]
fn stalled_and_slow_consumers_do_not_hold_writers_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Buffered);
    let writers = 4u64;
    let per_writer = 2_000u64;
    let total = writers * per_writer;

    // Baseline: the same writers with no subscriber.
    let write_all = |store: &Store, tag: &str| {
        let started = Instant::now();
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let store = store.clone();
                let stream = format!("{tag}-{w}");
                thread::spawn(move || {
                    for i in 0..per_writer {
                        let e = EventData::new("E", format!("{i}"));
                        store.append(&stream, ExpectedVersion::Any, [e]).expect("append");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        started.elapsed()
    };
    let baseline = write_all(&store, "Base");

    // A stalled consumer (never reads while the writers run) and a slow
    // one (1 ms per event, so at least `total` ms to finish).
    let mut stalled = store.subscribe_all(StartFrom::End).unwrap();
    let slow = store.subscribe_all(StartFrom::End).unwrap();
    let slow_received = Arc::new(AtomicU64::new(0));
    let slow_thread = {
        let received = slow_received.clone();
        let mut slow = slow;
        thread::spawn(move || {
            let mut last = total; // positions after the baseline's events
            for _ in 0..total {
                let e = slow.recv().unwrap().expect("open");
                assert_eq!(e.position(), last + 1);
                last = e.position();
                received.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let with_consumers = write_all(&store, "Load");
    let slow_done = slow_received.load(Ordering::Relaxed);
    // Writers finished while the slow consumer was far from done, and the
    // stalled one holds at most one page of events.
    assert!(
        slow_done < total / 2,
        "writers waited for the slow consumer ({slow_done} of {total})"
    );
    let status = stalled.status();
    assert_eq!(status.buffered, 0);
    assert_eq!(status.lag, total);
    eprintln!("writers: {baseline:?} without subscribers, {with_consumers:?} with a stalled and a slow one");
    // Loose: consumers that never keep up cost writers little.
    assert!(
        with_consumers < baseline * 4 + Duration::from_secs(2),
        "writers slowed from {baseline:?} to {with_consumers:?}"
    );

    // The stalled consumer now catches up with every event, in order.
    let got = receive(&mut stalled, total as usize);
    assert!(got.iter().zip(total + 1..).all(|(e, p)| e.position() == p));
    assert!(stalled.status().buffered <= annal::SUBSCRIPTION_PAGE_EVENTS);
    assert!(stalled.try_recv().unwrap().is_none());
    slow_thread.join().unwrap();
}

#[test]
fn subscription_from_end_sees_only_new_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Sync);
    append_n(&store, "Order-1", "Placed", 10);
    let mut sub = store.subscribe_all(StartFrom::End).unwrap();
    assert!(sub.try_recv().unwrap().is_none());
    assert_eq!(sub.position(), 10);
    let mut stream_sub = store.subscribe_stream("Order-1", StartFrom::End).unwrap();
    assert!(stream_sub.try_recv().unwrap().is_none());
    let writer = {
        let store = store.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            append_n(&store, "Order-1", "Paid", 3);
        })
    };
    // Blocks until the writer's events are published.
    let got: Vec<u64> = (0..3).map(|_| sub.recv().unwrap().unwrap().position()).collect();
    assert_eq!(got, [11, 12, 13]);
    let versions: Vec<u64> = (0..3).map(|_| stream_sub.recv().unwrap().unwrap().version()).collect();
    assert_eq!(versions, [11, 12, 13]);
    writer.join().unwrap();
    assert!(sub.recv_timeout(Duration::from_millis(20)).unwrap().is_none());
    // A start beyond the log is refused.
    assert!(matches!(
        store.subscribe_all(StartFrom::After(14)),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn stream_category_and_event_type_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Buffered);
    // Interleave categories over more than a page, so filtered reads scan
    // several pages of other events.
    for i in 0..700u64 {
        let (stream, t) = match i % 7 {
            0 => (format!("Order-{}", i % 3), "OrderPlaced"),
            1 => (format!("Order-{}", i % 3), "OrderPaid"),
            2 => ("Order".to_string(), "OrderNoted"),
            3 => ("Orders-1".to_string(), "OrderPlaced"),
            _ => (format!("Cart-{}", i % 5), "ItemAdded"),
        };
        store
            .append(&stream, ExpectedVersion::Any, [EventData::new(t, "{}")])
            .unwrap();
    }
    let all = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
    let expect = |f: &dyn Fn(&annal::RecordedEvent) -> bool| all.iter().filter(|e| f(e)).cloned().collect::<Vec<_>>();
    let drain = |sub: &mut annal::Subscription| {
        let mut v = Vec::new();
        while let Some(e) = sub.try_recv().unwrap() {
            v.push(e);
        }
        v
    };

    let mut orders = store.subscribe_category("Order", StartFrom::Start).unwrap();
    let want = expect(&|e| e.stream() == "Order" || e.stream().starts_with("Order-"));
    assert_eq!(drain(&mut orders), want);
    assert_eq!(orders.status().lag, 0);

    let mut paid = store
        .subscribe(
            SubscriptionFilter::category("Order").event_type("OrderPaid"),
            StartFrom::Start,
        )
        .unwrap();
    assert_eq!(
        drain(&mut paid),
        expect(&|e| e.category() == "Order" && e.event_type() == "OrderPaid")
    );

    let mut two_types = store
        .subscribe(
            SubscriptionFilter::all()
                .event_type("OrderNoted")
                .event_type("ItemAdded"),
            StartFrom::After(100),
        )
        .unwrap();
    assert_eq!(
        drain(&mut two_types),
        expect(&|e| e.position() > 100 && matches!(e.event_type(), "OrderNoted" | "ItemAdded"))
    );

    let mut one = store.subscribe_stream("Order-1", StartFrom::After(350)).unwrap();
    let want = expect(&|e| e.stream() == "Order-1" && e.position() > 350);
    assert!(!want.is_empty());
    assert_eq!(drain(&mut one), want);
    let mut placed = store
        .subscribe(
            SubscriptionFilter::stream("Orders-1").event_type("OrderPlaced"),
            StartFrom::Start,
        )
        .unwrap();
    assert_eq!(drain(&mut placed).len(), 100);

    // Live events go through the same filters.
    store
        .append("Cart-9", ExpectedVersion::Any, [EventData::new("ItemAdded", "{}")])
        .unwrap();
    store
        .append("Order-1", ExpectedVersion::Any, [EventData::new("OrderPaid", "{}")])
        .unwrap();
    let e = orders.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!((e.stream(), e.position()), ("Order-1", 702));
    assert_eq!(
        paid.recv_timeout(Duration::from_secs(5)).unwrap().unwrap().position(),
        702
    );
    assert_eq!(
        one.recv_timeout(Duration::from_secs(5)).unwrap().unwrap().position(),
        702
    );
    assert_eq!(
        two_types
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .unwrap()
            .position(),
        701
    );
    assert!(two_types.try_recv().unwrap().is_none());
    assert_eq!(two_types.position(), 702);
}

#[test]
fn status_reports_position_head_lag_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Buffered);
    append_n(&store, "S-1", "E", 600);
    let mut sub = store.subscribe_all(StartFrom::Start).unwrap();
    let s = sub.status();
    assert_eq!((s.position, s.last_delivered, s.head, s.lag), (0, 0, 600, 600));
    assert_eq!(s.state, SubscriptionState::CatchingUp);
    assert_eq!(sub.recv().unwrap().unwrap().position(), 1);
    let s = sub.status();
    assert_eq!((s.position, s.last_delivered, s.lag), (1, 1, 599));
    assert_eq!(s.buffered, annal::SUBSCRIPTION_PAGE_EVENTS - 1);
    assert_eq!(s.state, SubscriptionState::CatchingUp);
    for p in 2..=600 {
        assert_eq!(sub.try_recv().unwrap().unwrap().position(), p);
    }
    assert!(sub.try_recv().unwrap().is_none());
    let s = sub.status();
    assert_eq!(
        (s.position, s.last_delivered, s.head, s.lag, s.buffered),
        (600, 600, 600, 0, 0)
    );
    assert_eq!(s.state, SubscriptionState::Live);
    append_n(&store, "S-1", "E", 5);
    let s = sub.status();
    assert_eq!((s.position, s.head, s.lag), (600, 605, 5));
    for _ in 0..5 {
        sub.recv().unwrap().unwrap();
    }
    assert_eq!(sub.status().lag, 0);
    // A burst of more than a page puts it back to catching up.
    append_n(&store, "S-1", "E", annal::SUBSCRIPTION_PAGE_EVENTS + 10);
    sub.recv().unwrap().unwrap();
    assert_eq!(sub.status().state, SubscriptionState::CatchingUp);
    // Before any read: live when it starts at the head.
    let head = store.last_position();
    let at_end = store.subscribe_all(StartFrom::End).unwrap();
    assert_eq!(
        (at_end.status().state, at_end.status().lag),
        (SubscriptionState::Live, 0)
    );
    let behind = store.subscribe_all(StartFrom::After(head - 1)).unwrap();
    assert_eq!(
        (behind.status().state, behind.status().lag),
        (SubscriptionState::CatchingUp, 1)
    );
}

#[test]
fn dropping_unregisters_and_closing_ends_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Sync);
    append_n(&store, "S-1", "E", 3);
    let a = store.subscribe_all(StartFrom::Start).unwrap();
    let b = store.subscribe_stream("S-1", StartFrom::End).unwrap();
    assert_eq!(store.subscriber_count(), 2);
    drop(a);
    assert_eq!(store.subscriber_count(), 1);
    drop(b);
    assert_eq!(store.subscriber_count(), 0);

    // A subscriber blocked in recv wakes up with None when the store closes.
    let mut blocked = store.subscribe_all(StartFrom::End).unwrap();
    let mut polling = store.subscribe_all(StartFrom::Start).unwrap();
    let waiter = thread::spawn(move || {
        let started = Instant::now();
        let r = blocked.recv().unwrap();
        (r.is_none(), started.elapsed(), blocked.status().state)
    });
    thread::sleep(Duration::from_millis(50));
    let other = store.clone();
    store.close().unwrap();
    let (ended, waited, state) = waiter.join().unwrap();
    assert!(ended && waited >= Duration::from_millis(40));
    assert_eq!(state, SubscriptionState::Closed);
    assert!(matches!(polling.try_recv(), Err(Error::Closed)));
    assert!(matches!(
        polling.recv_timeout(Duration::from_millis(1)),
        Err(Error::Closed)
    ));
    assert!(polling.recv().unwrap().is_none());
    assert!(matches!(other.subscribe_all(StartFrom::Start), Err(Error::Closed)));
    drop(other);

    // A live subscription does not keep the store open: dropping the last
    // handle ends it and frees the directory for the next open.
    let store = open_with(dir.path(), Durability::Sync);
    let mut sub = store.subscribe_all(StartFrom::Start).unwrap();
    assert_eq!(sub.recv().unwrap().unwrap().position(), 1);
    drop(store);
    assert!(sub.recv().unwrap().is_none());
    let store = open_with(dir.path(), Durability::Sync);
    assert_eq!(store.last_position(), 3);
}

/// A model of the wake-up protocol between writers and a subscriber
/// (`src/subscription/hub.rs`), checked with shuttle over many thread
/// interleavings. It models the protocol, not the store's code: `head` is
/// the published index, the `Mutex<Vec<SyncSender>>` is the hub, and each
/// subscriber's `sync_channel(1)` is its wake-up channel. A lost wake-up
/// shows up as a deadlock (the subscriber blocked forever), which shuttle
/// reports as a failure; a duplicate or gap as a failed assertion.
mod model {
    use shuttle::sync::atomic::{AtomicU64, Ordering};
    use shuttle::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
    use shuttle::sync::{Arc, Mutex};
    use shuttle::thread;

    const WRITERS: u64 = 2;
    const PER_WRITER: u64 = 2;
    const TOTAL: u64 = WRITERS * PER_WRITER;

    struct Hub {
        subscribers: Mutex<Vec<SyncSender<()>>>,
        /// Published head (the store's published index).
        head: AtomicU64,
        /// Positions handed out (the writer lock's job in the store).
        next: Mutex<u64>,
    }

    fn writer(hub: &Hub) {
        for _ in 0..PER_WRITER {
            {
                // Publish under the writer lock: the head moves in order.
                let mut next = hub.next.lock().unwrap();
                *next += 1;
                hub.head.store(*next, Ordering::SeqCst);
            }
            // Then notify, without blocking on any subscriber.
            for tx in hub.subscribers.lock().unwrap().iter() {
                match tx.try_send(()) {
                    Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
                }
            }
        }
    }

    fn register(hub: &Hub) -> Receiver<()> {
        let (tx, rx) = sync_channel(1);
        hub.subscribers.lock().unwrap().push(tx);
        rx
    }

    /// The subscriber: read everything after `last` up to the head, and
    /// block on the wake-up channel only after a read found nothing new.
    /// `register_first` is the real protocol; false registers after the
    /// first read, the bug the protocol exists to prevent.
    fn subscriber(hub: &Hub, register_first: bool) -> Vec<u64> {
        let mut rx = register_first.then(|| register(hub));
        let mut delivered = Vec::new();
        let mut last = 0;
        loop {
            if let Some(rx) = &rx {
                let _ = rx.try_recv();
            }
            let head = hub.head.load(Ordering::SeqCst);
            delivered.extend(last + 1..=head);
            last = last.max(head);
            if last == TOTAL {
                return delivered;
            }
            let r = rx.get_or_insert_with(|| register(hub));
            r.recv().expect("hub alive");
        }
    }

    fn scenario(register_first: bool) {
        let hub = Arc::new(Hub {
            subscribers: Mutex::new(Vec::new()),
            head: AtomicU64::new(0),
            next: Mutex::new(0),
        });
        let writers: Vec<_> = (0..WRITERS)
            .map(|_| {
                let hub = hub.clone();
                thread::spawn(move || writer(&hub))
            })
            .collect();
        let delivered = subscriber(&hub, register_first);
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(delivered, (1..=TOTAL).collect::<Vec<_>>());
    }

    #[test]
    fn no_lost_wakeup_gap_or_duplicate() {
        shuttle::check_random(|| scenario(true), 20_000);
        shuttle::check_pct(|| scenario(true), 5_000, 3);
    }

    /// The checker finds the lost wake-up when the subscriber registers
    /// after its first read (shows the model check can fail).
    #[test]
    #[should_panic]
    fn registering_after_the_first_read_loses_wakeups() {
        shuttle::check_random(|| scenario(false), 20_000);
    }
}

/// `recv_timeout` counts history the filter skips against its timeout: a
/// narrow filter over a long history returns `None` after a page rather
/// than scanning it all, and the scan goes on where it stopped.
#[test]
fn recv_timeout_returns_in_time_while_skipping_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Buffered);
    let page = annal::SUBSCRIPTION_PAGE_EVENTS;
    append_n(&store, "Noise-1", "Other", page * 4 + 10);
    append_n(&store, "Order-1", "Wanted", 1);
    let mut sub = store
        .subscribe(SubscriptionFilter::all().event_type("Wanted"), StartFrom::Start)
        .unwrap();
    let mut calls = 0;
    let mut last_position = 0;
    let event = loop {
        calls += 1;
        assert!(calls < 100, "the scan made no progress");
        match sub.recv_timeout(Duration::ZERO).unwrap() {
            Some(e) => break e,
            None => {
                let position = sub.position();
                assert!(position > last_position, "a call read nothing");
                assert!(position - last_position <= page as u64, "a call read more than a page");
                last_position = position;
            }
        }
    };
    assert_eq!(
        (event.position(), event.event_type()),
        ((page * 4 + 11) as u64, "Wanted")
    );
    assert!(calls >= 5, "only {calls} calls for five pages");
    assert!(sub.try_recv().unwrap().is_none());
}

/// A filter that breaks a limit or could never match is refused, for
/// subscriptions, dispatcher handlers and category reads alike.
#[test]
fn filters_that_could_never_match_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), Durability::Buffered);
    append_n(&store, "Order-1", "Placed", 3);
    let bad = [
        SubscriptionFilter::category("Order-1"),
        SubscriptionFilter::category(""),
        SubscriptionFilter::stream(""),
        SubscriptionFilter::all().event_type(""),
        SubscriptionFilter::category("Order").event_type("x".repeat(256)),
    ];
    for filter in bad {
        let what = format!("{filter:?}");
        assert!(
            matches!(
                store.subscribe(filter.clone(), StartFrom::Start),
                Err(Error::InvalidInput(_))
            ),
            "subscribe accepted {what}"
        );
        assert!(
            matches!(
                store.dispatcher().handler("h", filter, StartFrom::Start, |_| Ok(())),
                Err(Error::InvalidInput(_))
            ),
            "a dispatcher handler accepted {what}"
        );
    }
    assert!(matches!(
        store.read_category("Order-1", 0, None),
        Err(Error::InvalidInput(_))
    ));
    let read: Vec<_> = store.read_category("Order", 0, None).unwrap().collect_all().unwrap();
    assert_eq!(read.len(), 3);
}
