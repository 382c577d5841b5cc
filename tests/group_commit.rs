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

/// A durable store on a simulated file system, with one event written.
fn store(seed: u64, spin: bool) -> (SimFs, Store<SimFs>) {
    let fs = SimFs::new(seed);
    let options = Options::default()
        .with_durability(Durability::Sync)
        .with_group_commit_spin(spin);
    let store = Store::open_with(fs.clone(), "/sim/store", options).unwrap();
    append(&store, "W-1").unwrap();
    (fs, store)
}

fn append(store: &Store<SimFs>, stream: &str) -> annal::Result<()> {
    store
        .append(stream, ExpectedVersion::Any, [EventData::new("E", "x")])
        .map(|_| ())
}

/// The next sync fails (once).
fn fail_next_sync(fs: &SimFs) {
    fs.inject(Fault {
        kind: OpKind::Sync,
        nth: 0,
        error: FaultError::Eio,
        sticky: false,
    });
}

/// Appends to `A-1` and holds its sync; once it is held, runs `meanwhile`,
/// appends to `B-1` and `C-1` from threads of their own and gives them
/// time to queue behind it (microseconds; half a second leaves room for a
/// loaded machine), then releases the sync. Returns A's outcome, then B's
/// and C's.
fn around_a_held_sync(
    fs: &SimFs,
    store: &Store<SimFs>,
    meanwhile: impl FnOnce(),
) -> (annal::Result<()>, Vec<annal::Result<()>>) {
    let hold = fs.hold_next_sync();
    std::thread::scope(|scope| {
        let a = scope.spawn(|| append(store, "A-1"));
        hold.wait_held();
        meanwhile();
        let others: Vec<_> = ["B-1", "C-1"]
            .into_iter()
            .map(|s| scope.spawn(move || append(store, s)))
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        hold.release();
        let a = a.join().unwrap();
        (a, others.into_iter().map(|t| t.join().unwrap()).collect())
    })
}

/// Three appends, two syncs: the first append's sync is held until the two
/// others have had time to queue behind it; they then share one.
#[test]
fn durable_appends_queue_up_during_a_sync_and_share_the_next() {
    let (fs, store) = store(17, true);
    let before = store.stats();
    let (a, others) = around_a_held_sync(&fs, &store, || {});
    a.unwrap();
    others.into_iter().for_each(|r| r.unwrap());
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

/// A's sync is held and fails; B and C, queued meanwhile, wait for A's
/// leader (parked: the last sync took microseconds, so they hardly
/// yield). The failure must wake them: A gets the I/O error, B and C
/// `Poisoned`, and close returns.
fn waiters_of_a_failed_sync(spin: bool) {
    let (fs, store) = store(5, spin);
    fail_next_sync(&fs);
    let (a, others) = around_a_held_sync(&fs, &store, || {});
    assert!(matches!(a, Err(Error::Io { .. })), "the failed group's append: {a:?}");
    for r in others {
        assert!(matches!(r, Err(Error::Poisoned(_))), "a later append: {r:?}");
    }
    assert!(matches!(store.close(), Err(Error::Poisoned(_))));
}

/// A's sync succeeds (held); B and C queue behind it and form the next
/// group, whose sync fails: the one of them that waits for the other's
/// group must be woken, and both get the I/O error.
fn waiter_in_a_failed_group(spin: bool) {
    let (fs, store) = store(6, spin);
    // Once A's sync is under way, the next one, B and C's, fails.
    let (a, others) = around_a_held_sync(&fs, &store, || fail_next_sync(&fs));
    a.unwrap();
    for r in others {
        assert!(
            matches!(r, Err(Error::Io { .. })),
            "an append of the failed group: {r:?}"
        );
    }
    assert!(matches!(store.close(), Err(Error::Poisoned(_))));
}

/// The previous group carried two appends, and its held sync made the
/// smoothed sync time long (a gather of the full 500 µs): a lone append
/// then leads a group of one, gathers for appends that never come, and
/// must give up at the deadline.
fn lone_append_after_a_group_of_two(spin: bool) {
    let (fs, store) = store(7, spin);
    let (a, others) = around_a_held_sync(&fs, &store, || {});
    a.unwrap();
    others.into_iter().for_each(|r| r.unwrap());
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
