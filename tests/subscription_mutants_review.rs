//! Tests written by a tool-driven mutation review of subscriptions
//! (`cargo mutants` over `src/subscription/hub.rs`,
//! `src/subscription/mod.rs` and `src/subscription/dispatcher.rs`): each
//! one kills a mutant that the rest of the suite let through, or caught
//! only by a test timing out, and asserts the promise that the mutant
//! breaks (SUBSCRIPTIONS.md, "Lifetime": dropping a subscription
//! unregisters it, and only it; a dispatcher with nothing to deliver waits
//! for the next append), not how the code keeps it.

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

/// The CPU time, in clock ticks, that the thread of this process named
/// `name` has used so far (user and system), from `/proc`; None when no
/// such thread runs.
#[cfg(target_os = "linux")]
fn thread_cpu_ticks(name: &str) -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        // Fields after the command name's closing parenthesis start at the
        // third (state); utime and stime are the 14th and 15th.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        return Some(utime + stime);
    }
    None
}

/// A dispatcher that has delivered everything waits for the next append
/// instead of reading the log again and again: over two idle seconds its
/// thread uses almost no CPU time (a busy loop would use most of a core),
/// and it still delivers the next append. (Mutant in the dispatcher's run
/// loop: `short && !stopped()` turned into `short && stopped()`, after
/// which a short page never waits on the wake-up channel: every handler
/// still got each event once, so no other test saw it, while the thread
/// spun at 100 % of a core for as long as the store was idle.)
#[cfg(target_os = "linux")]
#[test]
fn an_idle_dispatcher_waits_for_appends_instead_of_spinning() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use annal::SubscriptionFilter;

    let dir = tempfile::tempdir().expect("tempdir");
    let store = common::open_with(dir.path(), Durability::Sync);
    common::append_n(&store, "S-1", "E", 3);
    let delivered = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&delivered);
    let dispatcher = store
        .dispatcher()
        .handler("all", SubscriptionFilter::all(), StartFrom::Start, move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .expect("handler")
        .start()
        .expect("start");
    // Bounded only to turn a lost delivery into a failure.
    assert!(
        dispatcher.wait_for(3, Duration::from_secs(60)),
        "the history was not delivered"
    );
    let before = thread_cpu_ticks("annal-dispatch").expect("the dispatcher's thread");
    std::thread::sleep(Duration::from_secs(2));
    let after = thread_cpu_ticks("annal-dispatch").expect("the dispatcher's thread");
    // Clock ticks are 10 ms on Linux: 20 ticks are a tenth of the idle time.
    assert!(
        after - before < 20,
        "an idle dispatcher used {} clock ticks of CPU in 2 s",
        after - before
    );
    common::append_n(&store, "S-1", "E", 1);
    assert!(
        dispatcher.wait_for(4, Duration::from_secs(60)),
        "the next append was not delivered"
    );
    assert_eq!(delivered.load(Ordering::SeqCst), 4);
    dispatcher.stop().expect("stop");
}
