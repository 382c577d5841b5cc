//! Group commit in durable mode: appends made while a leader's sync runs
//! queue up (the leader does not hold the writer lock through its write and
//! sync) and share the next sync.
#![cfg(feature = "sim")]

use std::time::Duration;

use annal::io::sim::SimFs;
use annal::{Durability, EventData, ExpectedVersion, Options, Store};

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
