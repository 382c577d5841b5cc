//! The projection runner: resume from the checkpoint after reopen, batch
//! hooks and checkpoint cadence, at-least-once redelivery after a handler
//! failure (an idempotent handler ends up right), rebuild, and a live run
//! that follows concurrent writers.

use std::collections::BTreeMap;
use std::time::Duration;

use annal::{
    EventData, ExpectedVersion, HandlerError, Options, Projection, ProjectionError, ProjectionRunner, RecordedEvent,
    Store, SubscriptionFilter,
};

/// Orders per customer stream, made idempotent by remembering the last
/// position applied (events at or before it are skipped).
#[derive(Debug, Default)]
struct OrderCounts {
    counts: BTreeMap<String, u64>,
    last_applied: u64,
    /// Every event `apply` saw (duplicates included).
    seen: Vec<u64>,
    batches: Vec<(u64, u64)>,
    batch_first: Option<u64>,
    fail_once_at: Option<u64>,
    panic_once_at: Option<u64>,
    /// Panics in the n-th call of `begin_batch` (counted from 1).
    panic_in_begin_batch: Option<u32>,
    begin_batches: u32,
    fail_reset_once: bool,
    resets: u32,
}

impl Projection for OrderCounts {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        self.seen.push(event.position());
        if self.fail_once_at == Some(event.position()) {
            self.fail_once_at = None;
            return Err("simulated handler failure".into());
        }
        if self.panic_once_at == Some(event.position()) {
            self.panic_once_at = None;
            panic!("simulated handler panic");
        }
        if event.position() <= self.last_applied {
            return Ok(()); // already applied: idempotent skip
        }
        self.batch_first.get_or_insert(event.position());
        *self.counts.entry(event.stream().to_string()).or_default() += 1;
        self.last_applied = event.position();
        Ok(())
    }

    fn begin_batch(&mut self) -> Result<(), HandlerError> {
        self.begin_batches += 1;
        if self.panic_in_begin_batch == Some(self.begin_batches) {
            self.panic_in_begin_batch = None;
            panic!("simulated panic in begin_batch");
        }
        self.batch_first = None;
        Ok(())
    }

    fn end_batch(&mut self, position: u64) -> Result<(), HandlerError> {
        self.batches.push((self.batch_first.unwrap_or(0), position));
        Ok(())
    }

    fn reset(&mut self) -> Result<(), HandlerError> {
        if std::mem::take(&mut self.fail_reset_once) {
            self.counts.remove("Order-1");
            return Err("simulated reset failure, halfway".into());
        }
        self.counts.clear();
        self.last_applied = 0;
        self.resets += 1;
        Ok(())
    }
}

fn place(store: &Store, customer: u32, n: usize) {
    for _ in 0..n {
        store
            .append(
                &format!("Order-{customer}"),
                ExpectedVersion::Any,
                [EventData::new("OrderPlaced", "{}")],
            )
            .unwrap();
        store
            .append("Audit-1", ExpectedVersion::Any, [EventData::new("Logged", "{}")])
            .unwrap();
    }
}

#[test]
fn resumes_from_its_checkpoint_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, Options::default()).unwrap();
    place(&store, 1, 30);
    place(&store, 2, 20);
    let mut runner = ProjectionRunner::new(
        &store,
        "order-counts",
        SubscriptionFilter::category("Order"),
        OrderCounts::default(),
    )
    .unwrap()
    .with_checkpoint_every(7, Duration::from_secs(3600));
    assert_eq!(runner.run_until_caught_up().unwrap(), 50);
    let p = runner.projection();
    assert_eq!(p.counts.get("Order-1"), Some(&30));
    assert_eq!(p.counts.get("Order-2"), Some(&20));
    // Batches of 7 events, the last one shorter, each ending with a save.
    assert_eq!(p.batches.len(), 8);
    assert_eq!(runner.checkpoint(), 100); // past the trailing audit event too
    assert_eq!(store.checkpoints().load("order-counts").unwrap(), Some(100));
    drop(runner);
    store.close().unwrap();

    let store = Store::open(&path, Options::default()).unwrap();
    place(&store, 3, 5);
    let mut runner = ProjectionRunner::new(
        &store,
        "order-counts",
        SubscriptionFilter::category("Order"),
        OrderCounts::default(),
    )
    .unwrap();
    assert_eq!(runner.checkpoint(), 100);
    assert_eq!(runner.run_until_caught_up().unwrap(), 5);
    let p = runner.projection();
    assert_eq!(p.seen, (0..5).map(|i| 101 + 2 * i).collect::<Vec<_>>());
    assert_eq!(p.counts.get("Order-3"), Some(&5));
    assert_eq!(runner.checkpoint(), 110);
    assert_eq!(runner.status().lag, 0);
}

#[test]
fn handler_failure_redelivers_from_the_checkpoint_and_rebuild_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), Options::default()).unwrap();
    place(&store, 1, 20); // Order-1 events at odd positions 1..=39
    let projection = OrderCounts {
        fail_once_at: Some(25),
        ..OrderCounts::default()
    };
    let mut runner = ProjectionRunner::new(&store, "counts", SubscriptionFilter::stream("Order-1"), projection)
        .unwrap()
        .with_checkpoint_every(5, Duration::from_secs(3600));
    match runner.run_until_caught_up() {
        Err(ProjectionError::Handler { position, .. }) => assert_eq!(position, 25),
        other => panic!("expected a handler error, got {other:?}"),
    }
    // Saved after 5 events and 10 events: every Order-1 event up to
    // position 10, then 20, was delivered.
    assert_eq!(runner.checkpoint(), 20);
    assert_eq!(runner.run_until_caught_up().unwrap(), 10);
    let p = runner.projection();
    // At least once: 21 and 23 were applied twice, the handler skipped them.
    assert_eq!(p.seen.iter().filter(|&&x| x == 21).count(), 2);
    assert_eq!(p.seen.iter().filter(|&&x| x == 25).count(), 2);
    assert_eq!(p.counts.get("Order-1"), Some(&20));
    assert_eq!(runner.checkpoint(), 40);

    runner.rebuild().unwrap();
    assert_eq!(store.checkpoints().load("counts").unwrap(), None);
    assert_eq!(runner.projection().resets, 1);
    assert!(runner.projection().counts.is_empty());
    assert_eq!(runner.run_until_caught_up().unwrap(), 20);
    assert_eq!(runner.projection().counts.get("Order-1"), Some(&20));
    assert_eq!(store.checkpoints().load("counts").unwrap(), Some(40));
}

/// A rebuild whose `reset` fails halfway: the next run resets again
/// before applying anything, so no event is applied over a half-reset
/// projection (it skipped everything: its last applied position was kept).
#[test]
fn a_failed_reset_is_made_again_before_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), Options::default()).unwrap();
    place(&store, 1, 5);
    place(&store, 2, 5);
    let mut runner = ProjectionRunner::new(
        &store,
        "counts",
        SubscriptionFilter::category("Order"),
        OrderCounts::default(),
    )
    .unwrap();
    assert_eq!(runner.run_until_caught_up().unwrap(), 10);
    runner.projection_mut().fail_reset_once = true;
    assert!(matches!(
        runner.rebuild(),
        Err(ProjectionError::Handler { position: 0, .. })
    ));
    assert_eq!(runner.run_until_caught_up().unwrap(), 10);
    let p = runner.projection();
    assert_eq!(p.resets, 1, "the second reset went through");
    assert_eq!(p.counts.get("Order-1"), Some(&5));
    assert_eq!(p.counts.get("Order-2"), Some(&5));
}

/// A handler that panics, in an app that catches the panic and goes on
/// using the runner (a worker pool, a supervisor): the event it panicked
/// on had been taken from the subscription, and must be applied again, as
/// after a handler error, not skipped with the checkpoint saved past it.
#[test]
fn a_handler_panic_caught_by_the_app_does_not_skip_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), Options::default()).unwrap();
    place(&store, 1, 20); // Order-1 events at odd positions 1..=39
    // In `apply` at position 25, or in the third `begin_batch` (the batch
    // that starts at 21: batches of 5 events), whose event then had been
    // taken from the subscription without being applied.
    for (live, in_begin) in [(false, false), (true, false), (false, true), (true, true)] {
        let name = format!(
            "{}-{}",
            if live { "live" } else { "caught-up" },
            if in_begin { "begin" } else { "apply" }
        );
        let name = name.as_str();
        let projection = if in_begin {
            OrderCounts {
                panic_in_begin_batch: Some(3),
                ..OrderCounts::default()
            }
        } else {
            OrderCounts {
                panic_once_at: Some(25),
                ..OrderCounts::default()
            }
        };
        let mut runner = ProjectionRunner::new(&store, name, SubscriptionFilter::stream("Order-1"), projection)
            .unwrap()
            .with_checkpoint_every(5, Duration::from_secs(3600));
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if live {
                runner.run(Duration::from_millis(1), |p| p.last_applied == 39)
            } else {
                runner.run_until_caught_up()
            }
        }));
        assert!(first.is_err(), "{name}: the handler's panic reaches the app");
        assert_eq!(runner.checkpoint(), 20, "{name}");
        if live {
            runner.run(Duration::from_millis(1), |p| p.last_applied == 39).unwrap();
        } else {
            assert_eq!(runner.run_until_caught_up().unwrap(), 10, "{name}: 21 to 39 again");
        }
        let p = runner.projection();
        if in_begin {
            assert_eq!(p.seen.iter().filter(|&&x| x == 21).count(), 1, "{name}: {:?}", p.seen);
        } else {
            assert_eq!(p.seen.iter().filter(|&&x| x == 25).count(), 2, "{name}: {:?}", p.seen);
        }
        assert_eq!(p.counts.get("Order-1"), Some(&20), "{name}");
        assert!(runner.checkpoint() >= 39, "{name}: {}", runner.checkpoint());
        assert_eq!(
            store.checkpoints().load(name).unwrap(),
            Some(runner.checkpoint()),
            "{name}"
        );
    }
}

#[test]
fn live_run_follows_concurrent_writers_and_stops_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path().join("store"),
        Options::default().with_durability(annal::Durability::Buffered),
    )
    .unwrap();
    place(&store, 1, 10);
    let writers: Vec<_> = (0..3)
        .map(|c| {
            let store = store.clone();
            std::thread::spawn(move || place(&store, 10 + c, 200))
        })
        .collect();
    let mut runner = ProjectionRunner::new(
        &store,
        "live",
        SubscriptionFilter::category("Order"),
        OrderCounts::default(),
    )
    .unwrap()
    .with_checkpoint_every(64, Duration::from_millis(5));
    let total = 10 + 3 * 200;
    let applied = runner
        .run(Duration::from_millis(20), |p| p.counts.values().sum::<u64>() == total)
        .unwrap();
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(applied, total);
    let p = runner.projection();
    let mut seen = p.seen.clone();
    seen.dedup();
    assert_eq!(
        seen.len(),
        p.seen.len(),
        "an event was delivered twice without a failure"
    );
    assert!(p.seen.windows(2).all(|w| w[0] < w[1]));
    let saved = store.checkpoints().load("live").unwrap().unwrap();
    assert!(saved >= p.last_applied);

    // The store closing ends a run quietly.
    let mut runner = ProjectionRunner::new(&store, "idle", SubscriptionFilter::all(), OrderCounts::default()).unwrap();
    let closer = {
        let store = store.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            store.close().unwrap();
        })
    };
    let applied = runner.run(Duration::from_millis(10), |_| false).unwrap();
    assert!(applied > 0 && applied <= 2 * total);
    closer.join().unwrap();
}

/// A read model that stores its position (`end_batch`) must never be ahead
/// of what a power loss leaves of the log, or the new events that take the
/// lost positions would be skipped as already applied. In the periodic and
/// buffered modes the runner syncs the log before `end_batch`: power lost
/// right after the model's commit leaves a log that holds its position.
#[cfg(feature = "sim")]
#[test]
fn a_committed_read_model_is_never_ahead_of_the_log_after_a_power_loss() {
    use annal::Durability;
    use annal::io::sim::SimFs;
    use std::sync::{Arc, Mutex};

    struct Committing {
        fs: SimFs,
        committed: Arc<Mutex<u64>>,
    }
    impl Projection for Committing {
        fn apply(&mut self, _: &RecordedEvent) -> Result<(), HandlerError> {
            Ok(())
        }
        fn end_batch(&mut self, position: u64) -> Result<(), HandlerError> {
            *self.committed.lock().unwrap() = position; // durable elsewhere
            self.fs.crash_now();
            Ok(())
        }
    }
    let dir = std::path::PathBuf::from("/sim/store");
    for durability in [Durability::Buffered, Durability::Periodic(Duration::from_secs(3600))] {
        for seed in 0..20 {
            let fs = SimFs::new(seed);
            let options = Options::default().with_durability(durability);
            let store = Store::open_with(fs.clone(), &dir, options.clone()).unwrap();
            for i in 0..10u64 {
                store
                    .append("Acc-1", ExpectedVersion::Any, [EventData::new("Dep", i.to_string())])
                    .unwrap();
                if i == 4 {
                    store.sync().unwrap();
                }
            }
            let committed = Arc::new(Mutex::new(0));
            let model = Committing {
                fs: fs.clone(),
                committed: committed.clone(),
            };
            let mut runner = ProjectionRunner::new(&store, "m", SubscriptionFilter::category("Acc"), model).unwrap();
            let _ = runner.run_until_caught_up();
            drop(runner);
            drop(store);
            let image = fs.image().expect("the power was lost");
            let store = Store::open_with(SimFs::from_image(&image, seed), &dir, options).unwrap();
            let committed = *committed.lock().unwrap();
            assert_eq!(committed, 10, "{durability:?} seed {seed}");
            assert!(
                store.last_position() >= committed,
                "{durability:?} seed {seed}: the read model is at {committed}, the log ends at {}",
                store.last_position()
            );
        }
    }
}

/// The runner's sync before `end_batch` also covers the checkpoint it then
/// saves: one sync of the log per batch, not two (the checkpoint file's own
/// sync is the other one counted).
#[cfg(feature = "sim")]
#[test]
fn a_batch_costs_one_sync_of_the_log_in_the_buffered_mode() {
    use annal::Durability;
    use annal::io::sim::{OpKind, SimFs};

    struct Nothing;
    impl Projection for Nothing {
        fn apply(&mut self, _: &RecordedEvent) -> Result<(), HandlerError> {
            Ok(())
        }
    }
    let fs = SimFs::new(1);
    let options = Options::default().with_durability(Durability::Buffered);
    let store = Store::open_with(fs.clone(), std::path::PathBuf::from("/sim/store"), options).unwrap();
    for i in 0..10u64 {
        store
            .append("Acc-1", ExpectedVersion::Any, [EventData::new("Dep", i.to_string())])
            .unwrap();
    }
    let mut runner = ProjectionRunner::new(&store, "m", SubscriptionFilter::category("Acc"), Nothing).unwrap();
    let before = fs.count(OpKind::Sync);
    assert_eq!(runner.run_until_caught_up().unwrap(), 10);
    assert_eq!(
        fs.count(OpKind::Sync) - before,
        2,
        "the log once, the checkpoints file once"
    );
    assert_eq!(store.checkpoints().load("m").unwrap(), Some(10));
}
