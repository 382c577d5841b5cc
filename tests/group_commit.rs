//! Group commit in durable mode: appends made while a leader's sync runs
//! queue up (the leader does not hold the writer lock through its write and
//! sync) and share the next sync; and the waits of group commit end:
//! appenders waiting on another thread's group commit are woken when it
//! fails, and a leader gathering its group gives up when the appends it
//! waits for never come, whether waiters yield first or park at once
//! (`Options::with_group_commit_spin`). Those scenarios run on a thread of
//! their own with a deadline, so that a thread parked forever fails the
//! test instead of hanging it.
#![cfg(feature = "sim")]

use std::sync::mpsc;
use std::time::Duration;

use annal::io::sim::{Fault, FaultError, OpKind, SimFs};
use annal::{Durability, Error, EventData, ExpectedVersion, Options, Store};

/// Three appends, two syncs: the first append's sync is held until the two
/// others have had time to queue behind it; they then share one.
#[test]
fn durable_appends_queue_up_during_a_sync_and_share_the_next() {
    let fs = SimFs::new(17);
    let options = Options::default().with_durability(Durability::Sync);
    let store = Store::open_with(fs.clone(), "/sim/store", options).unwrap();
    store
        .append("W-1", ExpectedVersion::Any, [EventData::new("E", "0")])
        .unwrap();
    let before = store.stats();
    let hold = fs.hold_next_sync();
    std::thread::scope(|scope| {
        let store = &store;
        let first = scope.spawn(move || store.append("A-1", ExpectedVersion::Any, [EventData::new("E", "a")]));
        hold.wait_held();
        let others: Vec<_> = ["B-1", "C-1"]
            .into_iter()
            .map(|s| scope.spawn(move || store.append(s, ExpectedVersion::NoStream, [EventData::new("E", s)])))
            .collect();
        // Both queue up behind the held sync (microseconds; half a second
        // leaves room for a loaded machine).
        std::thread::sleep(Duration::from_millis(500));
        hold.release();
        first.join().unwrap().unwrap();
        for t in others {
            t.join().unwrap().unwrap();
        }
    });
    let after = store.stats();
    assert_eq!(after.appends_written - before.appends_written, 3);
    assert_eq!(
        after.group_commits - before.group_commits,
        2,
        "the appends made during the sync did not share one"
    );
}

/// Runs `f` on a thread; fails if it has not returned within `limit`.
fn within(limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(limit) {
        Ok(()) => t.join().expect("scenario"),
        // The scenario panicked: report its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => t.join().expect("scenario"),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("still waiting after {limit:?}: a thread never woke"),
    }
}

fn options(spin: bool) -> Options {
    Options::default()
        .with_durability(Durability::Sync)
        .with_group_commit_spin(spin)
}

fn append(store: &Store<SimFs>, stream: &str) -> annal::Result<()> {
    store
        .append(stream, ExpectedVersion::Any, [EventData::new("E", "x")])
        .map(|_| ())
}

/// A's sync is held and fails; B and C, queued meanwhile, wait for A's
/// leader (parked: the last sync took microseconds, so they hardly
/// yield). The failure must wake them: A gets the I/O error, B and C
/// `Poisoned`, and close returns.
fn waiters_of_a_failed_sync(spin: bool) {
    let fs = SimFs::new(5);
    let store = Store::open_with(fs.clone(), "/sim/store", options(spin)).unwrap();
    append(&store, "W-1").unwrap();
    fs.inject(Fault {
        kind: OpKind::Sync,
        nth: 0,
        error: FaultError::Eio,
        sticky: false,
    });
    let hold = fs.hold_next_sync();
    std::thread::scope(|scope| {
        let store = &store;
        let a = scope.spawn(move || append(store, "A-1"));
        hold.wait_held();
        let others: Vec<_> = ["B-1", "C-1"]
            .into_iter()
            .map(|s| scope.spawn(move || append(store, s)))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        hold.release();
        let a = a.join().unwrap();
        assert!(matches!(a, Err(Error::Io { .. })), "the failed group's append: {a:?}");
        for t in others {
            let r = t.join().unwrap();
            assert!(matches!(r, Err(Error::Poisoned(_))), "a later append: {r:?}");
        }
    });
    assert!(matches!(store.close(), Err(Error::Poisoned(_))));
}

/// A's sync succeeds (held); B and C queue behind it and form the next
/// group, whose sync fails: the one of them that waits for the other's
/// group must be woken, and both get the I/O error.
fn waiter_in_a_failed_group(spin: bool) {
    let fs = SimFs::new(6);
    let store = Store::open_with(fs.clone(), "/sim/store", options(spin)).unwrap();
    append(&store, "W-1").unwrap();
    let hold = fs.hold_next_sync();
    std::thread::scope(|scope| {
        let store = &store;
        let a = scope.spawn(move || append(store, "A-1"));
        hold.wait_held();
        // A's sync is done: the next one, B and C's, fails.
        fs.inject(Fault {
            kind: OpKind::Sync,
            nth: 0,
            error: FaultError::Eio,
            sticky: false,
        });
        let others: Vec<_> = ["B-1", "C-1"]
            .into_iter()
            .map(|s| scope.spawn(move || append(store, s)))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        hold.release();
        a.join().unwrap().unwrap();
        for t in others {
            let r = t.join().unwrap();
            assert!(
                matches!(r, Err(Error::Io { .. })),
                "an append of the failed group: {r:?}"
            );
        }
    });
    assert!(matches!(store.close(), Err(Error::Poisoned(_))));
}

/// The previous group carried two appends, and its held sync made the
/// smoothed sync time long (a gather of the full 500 µs): a lone append
/// then leads a group of one, gathers for appends that never come, and
/// must give up at the deadline.
fn lone_append_after_a_group_of_two(spin: bool) {
    let fs = SimFs::new(7);
    let store = Store::open_with(fs.clone(), "/sim/store", options(spin)).unwrap();
    append(&store, "W-1").unwrap();
    let hold = fs.hold_next_sync();
    std::thread::scope(|scope| {
        let store = &store;
        let a = scope.spawn(move || append(store, "A-1"));
        hold.wait_held();
        let others: Vec<_> = ["B-1", "C-1"]
            .into_iter()
            .map(|s| scope.spawn(move || append(store, s)))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        hold.release();
        a.join().unwrap().unwrap();
        for t in others {
            t.join().unwrap().unwrap();
        }
    });
    let before = store.stats();
    for i in 0..3 {
        append(&store, &format!("D-{i}")).unwrap();
    }
    let after = store.stats();
    assert_eq!(after.appends_written - before.appends_written, 3);
    store.close().unwrap();
}

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn a_failed_sync_wakes_the_appenders_waiting_for_it() {
    within(LIMIT, || waiters_of_a_failed_sync(true));
}

#[test]
fn a_failed_sync_wakes_the_appenders_waiting_for_it_parking() {
    within(LIMIT, || waiters_of_a_failed_sync(false));
}

#[test]
fn a_failed_sync_fails_every_append_of_its_group() {
    within(LIMIT, || waiter_in_a_failed_group(true));
}

#[test]
fn a_failed_sync_fails_every_append_of_its_group_parking() {
    within(LIMIT, || waiter_in_a_failed_group(false));
}

#[test]
fn a_gathering_leader_gives_up_when_nobody_comes() {
    within(LIMIT, || lone_append_after_a_group_of_two(true));
}

#[test]
fn a_gathering_leader_gives_up_when_nobody_comes_parking() {
    within(LIMIT, || lone_append_after_a_group_of_two(false));
}
