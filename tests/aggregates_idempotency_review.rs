//! Tests from a review of `Repository::execute`'s idempotency by command
//! id: repeats that must be recognised without help from the store's own
//! retry detection (a refused repeat, a window of 0), commands of many
//! events, snapshots taken at other versions than the command's, a command
//! id reused on another aggregate, and runs racing a snapshot load.
#![cfg(feature = "aggregate")]

mod aggregate_support;

use std::sync::Arc;

use aggregate_support::{Account, AccountCommand, run_at_once};
use annal::aggregate::{
    Aggregate, CommandMetadata, DomainEvent, JsonCodec, Repository, RepositoryError, command_event_id,
};
use annal::{Options, ReadStream, Store, Uuid};
use serde::{Deserialize, Serialize};

fn open(path: &std::path::Path, window: usize) -> Store {
    Store::open(path, Options::default().with_idempotency_window_events(window)).unwrap()
}

fn repo<A: Aggregate>(store: &Store, snapshot_every: Option<u64>) -> Repository<A> {
    let repo = Repository::<A>::new(store.clone(), JsonCodec);
    match snapshot_every {
        Some(n) => repo.with_snapshot_every(n),
        None => repo,
    }
}

/// A bag of items: `Put(n)` decides `n` events, `Nothing` decides none.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Bag {
    items: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum BagEvent {
    Put { k: u64 },
}

impl DomainEvent for BagEvent {
    fn event_type(&self) -> &'static str {
        "Put"
    }
}

#[derive(Clone, Debug)]
enum BagCommand {
    Put(u64),
    Nothing,
}

#[derive(Debug, thiserror::Error)]
#[error("not enough items")]
struct NotEnough;

impl Aggregate for Bag {
    const CATEGORY: &'static str = "Bag";
    type Event = BagEvent;
    type Command = BagCommand;
    type Error = NotEnough;
    fn apply(&mut self, e: &BagEvent) {
        let BagEvent::Put { .. } = e;
        self.items += 1;
    }
    fn handle(&self, c: BagCommand) -> Result<Vec<BagEvent>, NotEnough> {
        match c {
            BagCommand::Put(n) => Ok((0..n).map(|k| BagEvent::Put { k }).collect()),
            BagCommand::Nothing => Ok(vec![]),
        }
    }
}

fn ids(store: &Store, stream: &str) -> Vec<Uuid> {
    store
        .read_stream(stream, ReadStream::forward())
        .unwrap()
        .map(|e| e.unwrap().id())
        .collect()
}

/// A repeat of a command that the aggregate would refuse now (the
/// withdrawal emptied the account) is recognised before deciding: it
/// returns the first execution, not the domain error. Without a snapshot
/// that is the replay check's doing, with a snapshot covering it the
/// window probe's: the store's own retry detection (the
/// `IdempotencyConflict` fallback) never sees a refused command.
#[test]
fn a_repeat_the_aggregate_would_now_refuse_is_still_a_repeat() {
    for snapshot_every in [None, Some(1)] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("s"), 10_000);
        let repo = repo::<Account>(&store, snapshot_every);
        repo.execute("a", AccountCommand::Open("ann".into()), CommandMetadata::new())
            .unwrap();
        repo.execute("a", AccountCommand::Deposit(5), CommandMetadata::new())
            .unwrap();
        let withdraw = CommandMetadata::new();
        let first = repo
            .execute("a", AccountCommand::Withdraw(5), withdraw.clone())
            .unwrap();
        let r = repo
            .execute("a", AccountCommand::Withdraw(5), withdraw.clone())
            .unwrap_or_else(|e| panic!("{snapshot_every:?}: {e}"));
        assert!(r.repeated);
        assert_eq!(
            (r.events, r.last_position, r.version, r.state.balance),
            (1, first.last_position, 3, 0)
        );
        // Also after a reopen (the window rebuilt from the log).
        drop(repo);
        store.close().unwrap();
        let store = open(&dir.path().join("s"), 10_000);
        let repo = self::repo::<Account>(&store, snapshot_every);
        let r = repo
            .execute("a", AccountCommand::Withdraw(5), withdraw.clone())
            .unwrap_or_else(|e| panic!("{snapshot_every:?} after reopen: {e}"));
        assert!(r.repeated);
        assert_eq!((r.events, r.last_position, r.version), (1, first.last_position, 3));
    }
}

/// With a window of 0 and no snapshot, the replayed events alone find a
/// repeat (docs: "among the events its load replays (all of them when no
/// snapshot is used)"), also after the stream has grown; the store, with
/// no window and `Exact` at the current version, would write it again.
#[test]
fn without_a_window_or_snapshot_a_repeat_is_found_among_the_replayed_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s"), 0);
    let repo = repo::<Bag>(&store, None);
    let put = CommandMetadata::new();
    let first = repo.execute("b", BagCommand::Put(2), put.clone()).unwrap();
    repo.execute("b", BagCommand::Put(1), CommandMetadata::new()).unwrap();
    let r = repo.execute("b", BagCommand::Put(2), put.clone()).unwrap();
    assert!(r.repeated);
    assert_eq!(
        (r.events, r.last_position, r.version, r.state.items),
        (2, first.last_position, 3, 3)
    );
    assert_eq!(store.stream_version("Bag-b"), Some(3), "nothing written again");
}

/// A command of many events, followed by other commands: its repeat
/// names exactly its own events (not the next command's, not one fewer),
/// found among the replayed events, or by the window when a snapshot taken
/// at a later version than the command's first event covers it.
#[test]
fn a_repeat_of_a_command_of_many_events_names_exactly_its_events() {
    // snapshot_every 3: Put(3) takes the stream from 0 to 3 (snapshot at
    // 3, the command's first event is at 1), the next two commands to 5
    // (no snapshot) and 6 (snapshot at 6).
    for snapshot_every in [None, Some(3), Some(2), Some(1)] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("s"), 10_000);
        let repo = repo::<Bag>(&store, snapshot_every);
        let put = CommandMetadata::new();
        let first = repo.execute("b", BagCommand::Put(3), put.clone()).unwrap();
        assert_eq!((first.events, first.version), (3, 3));
        repo.execute("b", BagCommand::Put(2), CommandMetadata::new()).unwrap();
        let last = repo.execute("b", BagCommand::Put(1), CommandMetadata::new()).unwrap();
        assert_eq!(last.version, 6);
        for again in [repo.clone(), self::repo::<Bag>(&store, snapshot_every)] {
            let r = again.execute("b", BagCommand::Put(3), put.clone()).unwrap();
            assert!(r.repeated, "{snapshot_every:?}");
            assert_eq!(
                (r.events, r.last_position, r.version, r.state.items),
                (3, first.last_position, 6, 6),
                "{snapshot_every:?}"
            );
        }
        let stream = repo.stream_name("b");
        let stored = ids(&store, &stream);
        assert_eq!(stored[..3], [0, 1, 2].map(|k| command_event_id(put.command_id, k)));
        assert_eq!(store.stream_version(&stream), Some(6));
    }
}

/// The middle of three commands repeated, with a snapshot after all three
/// (at a version that is neither its first nor its last event's).
#[test]
fn a_repeat_of_a_middle_command_covered_by_a_later_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s"), 10_000);
    let repo = repo::<Bag>(&store, Some(5));
    repo.execute("b", BagCommand::Put(1), CommandMetadata::new()).unwrap();
    let put = CommandMetadata::new();
    let first = repo.execute("b", BagCommand::Put(2), put.clone()).unwrap();
    assert_eq!(first.version, 3);
    let last = repo.execute("b", BagCommand::Put(3), CommandMetadata::new()).unwrap();
    assert_eq!((last.version, last.snapshot_saved), (6, Some(6)));
    let r = repo.execute("b", BagCommand::Put(2), put.clone()).unwrap();
    assert!(r.repeated);
    assert_eq!(
        (r.events, r.last_position, r.version, r.state.items),
        (2, first.last_position, 6, 6)
    );
    let loaded = repo.load("b").unwrap();
    assert_eq!(
        loaded.snapshot_version,
        Some(6),
        "the repeat was found through the window"
    );
}

/// The window has forgotten the command's first event but not its later
/// ones, and a snapshot covers the command: `execute` decides again, the
/// store refuses the derived ids (`IdempotencyConflict`: stored already),
/// and `execute` returns the earlier execution instead of the error.
#[test]
fn a_repeat_whose_first_event_left_the_window_is_still_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s"), 4);
    let repo = repo::<Bag>(&store, Some(1));
    let put = CommandMetadata::new();
    let first = repo.execute("b", BagCommand::Put(4), put.clone()).unwrap();
    // One event elsewhere: the window forgets the command's first id only.
    repo.execute("other", BagCommand::Put(1), CommandMetadata::new())
        .unwrap();
    let r = repo.execute("b", BagCommand::Put(4), put.clone()).unwrap();
    assert!(r.repeated);
    assert_eq!(
        (r.events, r.last_position, r.version, r.state.items),
        (4, first.last_position, 4, 4)
    );
    assert_eq!(store.stream_version("Bag-b"), Some(4));
}

/// A command that decided no events leaves nothing to find: a repeat
/// decides again (and still writes nothing when the state says so).
#[test]
fn a_command_of_no_events_is_decided_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s"), 10_000);
    let repo = repo::<Bag>(&store, None);
    let meta = CommandMetadata::new();
    let r = repo.execute("b", BagCommand::Nothing, meta.clone()).unwrap();
    assert_eq!((r.events, r.repeated, r.version), (0, false, 0));
    let r = repo.execute("b", BagCommand::Nothing, meta.clone()).unwrap();
    assert_eq!((r.events, r.repeated, r.version), (0, false, 0));
}

/// A command id reused on another aggregate is not "a repeat of the
/// first" (docs/AGGREGATES.md): within the store's window the store
/// refuses the derived ids and `execute` fails with `IdempotencyConflict`;
/// with a snapshot of the other aggregate, the window probe must not take
/// the first aggregate's event for its own (a `repeated` of 0 events).
#[test]
fn a_command_id_reused_on_another_aggregate_is_refused() {
    for snapshot_every in [None, Some(1)] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("s"), 10_000);
        let repo = repo::<Bag>(&store, snapshot_every);
        repo.execute("two", BagCommand::Put(1), CommandMetadata::new()).unwrap();
        let meta = CommandMetadata::new();
        repo.execute("one", BagCommand::Put(1), meta.clone()).unwrap();
        let err = repo
            .execute("two", BagCommand::Put(1), meta.clone())
            .map(|r| r.repeated)
            .unwrap_err();
        assert!(
            matches!(&err, RepositoryError::CommandIdReused { command_id, stream }
                if *command_id == meta.command_id && stream == "Bag-two"),
            "{snapshot_every:?}: {err}"
        );
        assert_eq!(store.stream_version("Bag-two"), Some(1));
    }
}

/// Threads running one command at once, with a snapshot after every
/// command: a run that returns `repeated` must describe the aggregate with
/// the command applied (`state` and `version` "the aggregate now").
/// A run that loads from the snapshot before the winner publishes, then
/// finds the winner's first event through the window, returns the state
/// it loaded: without the command.
#[test]
fn a_repeat_found_through_the_window_reports_a_state_with_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s"), 10_000);
    let repo = Arc::new(repo::<Account>(&store, Some(1)).with_max_retries(10_000));
    repo.execute("acc", AccountCommand::Open("ann".into()), CommandMetadata::new())
        .unwrap();
    let mut stale = Vec::new();
    for round in 1..=600u64 {
        let results = run_at_once(&repo, "acc", AccountCommand::Deposit(1), CommandMetadata::new(), 4);
        for r in results {
            if r.version < round + 1 || r.state.balance < round {
                stale.push((round, r.repeated, r.version, r.state.balance));
            }
        }
        if stale.len() >= 3 {
            break;
        }
    }
    assert!(stale.is_empty(), "(round, repeated, version, balance): {stale:?}");
}
