//! Tests written by a tool-driven mutation review of subscriptions
//! (`cargo mutants` over `src/subscription/hub.rs`,
//! `src/subscription/mod.rs` and `src/subscription/dispatcher.rs`): each
//! one kills a mutant that the rest of the suite let through, or caught
//! only by a test timing out, and asserts the promise that the mutant
//! breaks (SUBSCRIPTIONS.md, "Lifetime": dropping a subscription
//! unregisters it, and only it), not how the code keeps it.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use annal::{Durability, StartFrom};

/// Dropping a subscription unregisters that subscription only: another
/// one, blocked in `recv`, is still woken by the next append and gets
/// it, and still counts as a subscriber.
/// (Mutant in `Hub::unregister`: `retain(|(i, _)| *i != id)` turned into
/// `==`: dropping one subscription unregisters all the others, which then
/// see the store as closed; the count alone does not show it.)
#[test]
fn dropping_one_subscription_leaves_the_others_woken_by_new_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::open_with(dir.path(), Durability::Sync);
    common::append_n(&store, "S-1", "E", 2);
    let dropped = store.subscribe_all(StartFrom::End).expect("subscribe");
    let mut kept = store.subscribe_all(StartFrom::End).expect("subscribe");
    drop(dropped);
    assert_eq!(store.subscriber_count(), 1, "the kept subscription");
    let (tx, rx) = mpsc::channel();
    let receiver = std::thread::spawn(move || {
        let _ = tx.send(kept.recv().map(|e| e.map(|e| e.position())));
    });
    common::append_n(&store, "S-1", "E", 1);
    // Bounded only to turn a lost wake-up into a failure.
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the kept subscription was never woken by the append");
    assert_eq!(
        got.expect("recv"),
        Some(3),
        "the kept subscription ended or missed the append"
    );
    receiver.join().expect("receiver thread");
}
