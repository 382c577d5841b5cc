//! A mutation review of the typed layer and the projections:
//! `src/aggregate/repository.rs` (loads from a snapshot plus later events,
//! execute under optimistic concurrency, idempotency by command id, the
//! snapshot policy), `src/aggregate/upcast.rs`, `src/aggregate/codec.rs`,
//! `src/projection.rs`, and the check in `Store::load_snapshot_at` that a
//! snapshot's event still matches the log. Each mutant was run against
//! `aggregates`, `aggregates_idempotency_review`, `snapshots`,
//! `snapshot_guard_review`, `projections`, `app_review` and the lib tests
//! `aggregate::`, `projection::`, `snapshot::` (`read_model` and
//! `dispatcher` for the first four: they use neither the repository nor
//! the runner).
//!
//! Mutants (caught: by existing tests; killed: by the test named here):
//! - R1 `next_command` without the command-id fallback for correlation: caught.
//! - R2 `caused_by` ignores the event's correlation id: caught.
//! - R3 `with_snapshot_every(0)` keeps 0 (a division by zero): caught.
//! - R4 `with_max_retries(n)` makes n attempts, not n + 1: caught.
//! - R5 `version_at_position` with `<` for `<=`: caught.
//! - R6 load target `max` for `min` (time travel): caught.
//! - R7 `load_without_snapshot` uses snapshots: caught.
//! - R8 only a newer snapshot schema version refused: caught.
//! - R9 `Loaded::snapshot_version` not set: caught.
//! - R10 `Loaded::replayed` not counted: caught.
//! - R11 only payloads below the current schema version refused: caught.
//! - R12 the decode-back check of new events dropped: killed by
//!   `a_new_event_that_would_not_decode_back_is_not_written`.
//! - R13 causation falls back to the correlation id: caught.
//! - R14 no recent-id window lookup after a load from a snapshot: caught.
//! - R15 the reload after a window hit inverted: caught.
//! - R16 a command of no events reports version 0: caught.
//! - R17 event ids from `k + 1`: caught.
//! - R18 `ExpectedVersion::Any` for `Exact`: caught.
//! - R19 the look at the event after the append dropped (a longer winning
//!   run of the command taken for this one): killed by
//!   `a_longer_run_of_the_same_command_that_won_stands_whole`.
//! - R20 the policy saves only at exact multiples: caught.
//! - R21 `snapshot_saved` names the version before: caught.
//! - R22 `Conflict::attempts` one short: caught.
//! - R23 `snapshot` of an aggregate without events tries a save at 0:
//!   killed by `a_snapshot_of_an_aggregate_without_events_is_version_zero`.
//! - R24 a repeat's events run on past the command's ids: caught.
//! - R25 a repeat's `last_position` is its first event's: caught.
//! - R26 the window lookup ignores the stream: caught.
//! - R28 `snapshot` skips the stream name check: caught.
//! - R32 a replay reads one event too many: caught.
//! - R34 after `IdempotencyConflict`, the search loads from a snapshot:
//!   caught.
//! - R37 new events stored at schema version 1: caught.
//! - R39 a repeat's events counted from one version late: caught.
//! - R40 `next_command` drops the causation id: killed by
//!   `next_command_keeps_the_causation_id`.
//! - R43 the store's snapshot issues left out of `Loaded::issues`: caught.
//! - R44 schema-mismatched snapshots not reported to the store: caught.
//! - S1 `load_snapshot_at` without the event-id check: survives these
//!   modules, caught by `subscriptions_review::
//!   snapshots_ahead_of_a_restored_older_log_are_never_used` (its own
//!   `[[test]]` binary), so no new test.
//! - U1 `register` keeps the first step for a key: killed by
//!   `a_second_registration_of_a_step_replaces_the_first`.
//! - U2 `UpcastError::from_version` one too high: killed by
//!   `an_upcast_error_names_the_version_of_the_failing_step`.
//! - U3 the chain stops after one step: caught.
//! - C1 JSON struct events stored whole no longer decode: caught.
//! - C2 JSON stores a unit variant as its name, not `null`: killed by
//!   `json_stores_a_unit_variant_as_null`.
//! - C3 bincode accepts trailing bytes after a value: survives, and left
//!   so: no written promise says a value followed by more bytes fails.
//! - P1 a batch of `n + 1` events: caught.
//! - P2 the interval ignored: killed by
//!   `an_interval_of_zero_ends_a_batch_after_every_event`.
//! - P3 the saved checkpoint not remembered: caught.
//! - P4 no rewind after a failed `end_batch`: killed by
//!   `a_failed_end_batch_applies_its_events_again`.
//! - P5 a batch left open after its `end_batch`: caught.
//! - P6 no rewind after a handler error: caught.
//! - P7 no rewind after a caught panic: caught.
//! - P8 `rebuild` keeps the remembered checkpoint: killed by
//!   `after_a_rebuild_the_caught_up_checkpoint_is_saved_again`.
//! - P9 `begin_batch` before every event: caught.
//! - P10 a runner allowed on a read-only store: killed by
//!   `a_runner_on_a_read_only_store_is_refused`.
//! - P11 `run` returns on `stop` without saving: caught.
//! - P12 no log sync before `end_batch`: caught.
//! - P13 a failed `reset` not made again: caught.
//! - P14 a runner starts from the first event despite its checkpoint:
//!   caught.
//! - P16 `run` does not save on catching up: killed by
//!   `run_saves_the_checkpoint_when_it_catches_up`.
//! - P17 a store closing ends `run` with an error: caught.
//! - P19 `with_checkpoint_every(0, _)` kept at 0: equivalent (a batch of
//!   at least 0 events ends after each one, as with 1).
//!
//! No real bug found.
#![cfg(feature = "aggregate")]

use std::cell::RefCell;
use std::time::Duration;

use annal::aggregate::{
    Aggregate, CommandMetadata, DomainEvent, Executed, JsonCodec, Repository, RepositoryError, Upcasters,
};
use annal::{
    Error, EventData, ExpectedVersion, HandlerError, Options, Projection, ProjectionError, ProjectionRunner,
    ReadStream, RecordedEvent, Store, SubscriptionFilter,
};
use serde::{Deserialize, Serialize};

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s"), Options::default()).unwrap();
    (dir, store)
}

/// A running total, fed by commands of any number of events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Tally {
    total: u64,
    events: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum TallyEvent {
    Added { n: u64 },
    Cleared,
}

impl DomainEvent for TallyEvent {
    fn event_type(&self) -> &'static str {
        match self {
            TallyEvent::Added { .. } => "Added",
            TallyEvent::Cleared => "Cleared",
        }
    }
}

#[derive(Clone, Debug)]
enum TallyCommand {
    /// One `Added` event per number.
    Add(Vec<u64>),
    /// One `Cleared` event (a unit variant).
    Clear,
    /// Decides one `Added` per number, after running
    /// [`TallyCommand::Inner`] (same command id) through the repository in
    /// [`INNER`], once.
    Outer(Vec<u64>),
    /// Decides `Added` 1, 2 and 3.
    Inner,
}

thread_local! {
    /// The repository and metadata [`TallyCommand::Outer`] runs its inner
    /// command with.
    static INNER: RefCell<Option<(Repository<Tally>, String, CommandMetadata)>> = const { RefCell::new(None) };
}

impl Aggregate for Tally {
    const CATEGORY: &'static str = "Tally";
    type Event = TallyEvent;
    type Command = TallyCommand;
    type Error = std::convert::Infallible;

    fn apply(&mut self, event: &TallyEvent) {
        match event {
            TallyEvent::Added { n } => self.total += n,
            TallyEvent::Cleared => self.total = 0,
        }
        self.events += 1;
    }

    fn handle(&self, command: TallyCommand) -> Result<Vec<TallyEvent>, Self::Error> {
        let added = |ns: &[u64]| ns.iter().map(|&n| TallyEvent::Added { n }).collect();
        Ok(match command {
            TallyCommand::Add(ns) => added(&ns),
            TallyCommand::Clear => vec![TallyEvent::Cleared],
            TallyCommand::Outer(ns) => {
                if let Some((repo, id, meta)) = INNER.with(|c| c.borrow_mut().take()) {
                    let inner = repo.execute(&id, TallyCommand::Inner, meta).unwrap();
                    assert_eq!((inner.events, inner.repeated), (3, false));
                }
                added(&ns)
            }
            TallyCommand::Inner => added(&[1, 2, 3]),
        })
    }
}

fn run(repo: &Repository<Tally>, id: &str, command: TallyCommand) -> Executed<Tally> {
    repo.execute(id, command, CommandMetadata::new()).unwrap()
}

/// `Repository::snapshot` of an aggregate with no events returns 0 and
/// saves nothing (no error). Kills R23 (a save tried at version 0).
#[test]
fn a_snapshot_of_an_aggregate_without_events_is_version_zero() {
    let (_dir, store) = open();
    let repo = Repository::<Tally>::new(store.clone(), JsonCodec);
    assert_eq!(repo.snapshot("none").unwrap(), 0);
    assert!(store.load_snapshot("Tally-none").snapshot.is_none());
    run(&repo, "some", TallyCommand::Add(vec![2]));
    assert_eq!(repo.snapshot("some").unwrap(), 1);
    assert_eq!(repo.load("some").unwrap().snapshot_version, Some(1));
}

/// Another run of the same command that decided more events got there
/// first, between this run's load and its append: the store takes this
/// run's events (the winner's first ones, same ids) for a retry, and
/// `execute` returns the winner's execution whole (its 3 events, the
/// version and state after them), not a 2-event execution. Kills R19
/// (the check of the event after the append dropped).
#[test]
fn a_longer_run_of_the_same_command_that_won_stands_whole() {
    let (_dir, store) = open();
    let repo = Repository::<Tally>::new(store.clone(), JsonCodec);
    run(&repo, "w", TallyCommand::Add(vec![10]));
    let meta = CommandMetadata::new();
    INNER.with(|c| *c.borrow_mut() = Some((repo.clone(), "w".to_string(), meta.clone())));
    let done = repo.execute("w", TallyCommand::Outer(vec![1, 2]), meta).unwrap();
    INNER.with(|c| *c.borrow_mut() = None);
    assert_eq!(store.stream_version("Tally-w"), Some(4), "the winner's 3 events only");
    assert_eq!((done.version, done.events, done.last_position), (4, 3, 4));
    assert_eq!(done.state, Tally { total: 16, events: 4 });
    assert!(done.repeated);
}

/// `JsonCodec` stores a unit variant as `null` under its variant's name
/// (the codec's doc), and reads it back. Kills C2 (stored as the string
/// `"Cleared"`, which also reads back).
#[test]
fn json_stores_a_unit_variant_as_null() {
    let (_dir, store) = open();
    let repo = Repository::<Tally>::new(store.clone(), JsonCodec);
    run(&repo, "u", TallyCommand::Add(vec![3]));
    run(&repo, "u", TallyCommand::Clear);
    let stored: Vec<_> = store
        .read_stream("Tally-u", ReadStream::forward())
        .unwrap()
        .collect_all()
        .unwrap();
    assert_eq!(stored[0].data(), br#"{"n":3}"#);
    assert_eq!((stored[1].event_type(), stored[1].data()), ("Cleared", &b"null"[..]));
    assert_eq!(
        repo.load_without_snapshot("u").unwrap().state,
        Tally { total: 0, events: 2 }
    );
}

/// Registering a step for an (event type, version) already registered
/// replaces the earlier step. Kills U1 (the first one kept).
#[test]
fn a_second_registration_of_a_step_replaces_the_first() {
    let upcasters =
        Upcasters::new()
            .register("E", 1, |_| Ok(b"old".to_vec()))
            .register("E", 1, |_| Ok(b"new".to_vec()));
    let (version, bytes) = upcasters.upcast("E", 1, b"x").unwrap();
    assert_eq!((version, bytes.as_ref()), (2, &b"new"[..]));
}

/// An upcaster's error names the version its failing step starts from
/// (`UpcastError::from_version`), also past the first step of a chain.
/// Kills U2 (the version after it).
#[test]
fn an_upcast_error_names_the_version_of_the_failing_step() {
    let upcasters = Upcasters::new()
        .register("E", 1, |b| Ok(b.to_vec()))
        .register("E", 2, |_| Err("no".into()));
    let err = upcasters.upcast("E", 1, b"x").unwrap_err();
    assert_eq!(
        (err.event_type.as_str(), err.from_version, err.reason.as_str()),
        ("E", 2, "no")
    );
    // Through the repository: the same error, for the stored event.
    let (_dir, store) = open();
    store
        .append(
            "Tally-1",
            ExpectedVersion::NoStream,
            [EventData::new("Added", r#"{"n":1}"#).with_schema_version(1)],
        )
        .unwrap();
    let upcasters = Upcasters::new().register("Added", 1, |_| Err("broken".into()));
    let repo = Repository::<Tally>::new(store, JsonCodec).with_upcasters(upcasters);
    match repo.load("1") {
        Err(RepositoryError::Upcast { version: 1, source, .. }) => assert_eq!(source.from_version, 1),
        other => panic!("expected an upcast error, got {other:?}"),
    }
}

/// A projection that records its calls.
#[derive(Debug, Default)]
struct Calls {
    applied: Vec<u64>,
    begins: u32,
    ends: Vec<u64>,
    fail_end_batch_once: bool,
}

impl Projection for Calls {
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), HandlerError> {
        self.applied.push(event.position());
        Ok(())
    }

    fn begin_batch(&mut self) -> Result<(), HandlerError> {
        self.begins += 1;
        Ok(())
    }

    fn end_batch(&mut self, position: u64) -> Result<(), HandlerError> {
        if std::mem::take(&mut self.fail_end_batch_once) {
            return Err("end_batch failed".into());
        }
        self.ends.push(position);
        Ok(())
    }
}

fn append(store: &Store, stream: &str, n: usize) {
    for _ in 0..n {
        store
            .append(stream, ExpectedVersion::Any, [EventData::new("E", "{}")])
            .unwrap();
    }
}

fn runner(store: &Store, projection: Calls) -> ProjectionRunner<Calls> {
    ProjectionRunner::new(store, "calls", SubscriptionFilter::category("Order"), projection).unwrap()
}

/// With an interval of zero, every event ends its batch (the interval
/// has always passed), though the count is far off. Kills P2 (the
/// interval ignored).
#[test]
fn an_interval_of_zero_ends_a_batch_after_every_event() {
    let (_dir, store) = open();
    append(&store, "Order-1", 3);
    let mut r = runner(&store, Calls::default()).with_checkpoint_every(1000, Duration::ZERO);
    assert_eq!(r.run_until_caught_up().unwrap(), 3);
    assert_eq!(r.projection().ends, [1, 2, 3]);
    assert_eq!(r.projection().begins, 3);
}

/// After a rebuild, the run that catches up again saves its checkpoint
/// (durably), even at the position the one before the rebuild had saved:
/// a runner started afterwards resumes there instead of replaying all.
/// Kills P8 (the remembered checkpoint not reset by `rebuild`).
#[test]
fn after_a_rebuild_the_caught_up_checkpoint_is_saved_again() {
    let (_dir, store) = open();
    append(&store, "Order-1", 3);
    let mut r = runner(&store, Calls::default());
    r.run_until_caught_up().unwrap();
    assert_eq!(store.checkpoints().load("calls").unwrap(), Some(3));
    r.rebuild().unwrap();
    assert_eq!(store.checkpoints().load("calls").unwrap(), None);
    assert_eq!(r.run_until_caught_up().unwrap(), 3);
    assert_eq!(r.checkpoint(), 3);
    assert_eq!(store.checkpoints().load("calls").unwrap(), Some(3));
    drop(r);
    let mut again = runner(&store, Calls::default());
    assert_eq!(again.run_until_caught_up().unwrap(), 0);
}

/// A failed `end_batch` sends the runner back to its last checkpoint: the
/// next run applies the batch's events again (the read model never made
/// them durable). Kills P4 (no rewind after a failed `end_batch`).
#[test]
fn a_failed_end_batch_applies_its_events_again() {
    let (_dir, store) = open();
    append(&store, "Order-1", 3);
    let calls = Calls {
        fail_end_batch_once: true,
        ..Calls::default()
    };
    let mut r = runner(&store, calls);
    match r.run_until_caught_up() {
        Err(ProjectionError::Handler { position: 3, .. }) => {}
        other => panic!("expected the end_batch failure, got {other:?}"),
    }
    assert_eq!(r.checkpoint(), 0);
    assert_eq!(r.run_until_caught_up().unwrap(), 3);
    assert_eq!(r.projection().applied, [1, 2, 3, 1, 2, 3]);
    assert_eq!(r.projection().ends, [3]);
    assert_eq!(r.checkpoint(), 3);
}

/// A runner on a read-only store is refused with `ReadOnly` (it could
/// never save its checkpoint). Kills P10 (the check dropped).
#[test]
fn a_runner_on_a_read_only_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Store::open(&path, Options::default()).unwrap();
    append(&store, "Order-1", 2);
    store.close().unwrap();
    let store = Store::open(&path, Options::default().with_read_only(true)).unwrap();
    let r = ProjectionRunner::new(&store, "calls", SubscriptionFilter::all(), Calls::default());
    assert!(
        matches!(r, Err(ProjectionError::Store(Error::ReadOnly { .. }))),
        "{r:?}"
    );
}

/// A reading, in a float JSON cannot hold when it is NaN or infinite.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Gauge {
    last: f64,
}

#[derive(Debug, Serialize, Deserialize)]
enum GaugeEvent {
    Measured { value: f64 },
}

impl DomainEvent for GaugeEvent {
    fn event_type(&self) -> &'static str {
        "Measured"
    }
}

impl Aggregate for Gauge {
    const CATEGORY: &'static str = "Gauge";
    type Event = GaugeEvent;
    type Command = f64;
    type Error = std::convert::Infallible;

    fn apply(&mut self, GaugeEvent::Measured { value }: &GaugeEvent) {
        self.last = *value;
    }

    fn handle(&self, value: f64) -> Result<Vec<GaugeEvent>, Self::Error> {
        Ok(vec![GaugeEvent::Measured { value }])
    }
}

/// A new event that its codec cannot decode back (a NaN or infinite float
/// under `JsonCodec`, written as `null`) is refused with a codec error and
/// not written: once stored, it would fail every load that replays it.
/// Kills R12 (the decode-back check dropped).
#[test]
fn a_new_event_that_would_not_decode_back_is_not_written() {
    let (_dir, store) = open();
    let repo = Repository::<Gauge>::new(store.clone(), JsonCodec);
    repo.execute("g", 1.5, CommandMetadata::new()).unwrap();
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        match repo.execute("g", bad, CommandMetadata::new()) {
            Err(RepositoryError::Codec { version: 0, stream, .. }) => assert_eq!(stream, "Gauge-g"),
            other => panic!("{bad}: expected a codec error, got {other:?}"),
        }
    }
    assert_eq!(store.stream_version("Gauge-g"), Some(1));
    assert_eq!(repo.load_without_snapshot("g").unwrap().state.last, 1.5);
}

/// `next_command` keeps the request's causation id (and its correlation
/// id, or its command id when it has none), which reach the events of
/// the next command. Kills R40 (the causation id dropped).
#[test]
fn next_command_keeps_the_causation_id() {
    let (_dir, store) = open();
    let repo = Repository::<Tally>::new(store.clone(), JsonCodec);
    let cause = annal::Uuid::new_v4();
    let request = CommandMetadata::new().with_causation_id(cause);
    let next = request.next_command();
    assert_ne!(next.command_id, request.command_id);
    assert_eq!(
        (next.correlation_id, next.causation_id),
        (Some(request.command_id), Some(cause))
    );
    repo.execute("c", TallyCommand::Add(vec![1]), next).unwrap();
    let event = store.read_position(1).unwrap().unwrap();
    assert_eq!(
        (event.correlation_id(), event.causation_id()),
        (Some(request.command_id), Some(cause))
    );
}

/// `run` saves the checkpoint each time it catches up, not only when told
/// to stop: here `stop` waits for the batch to end, which the catch-up
/// does (a bound on the calls keeps a broken runner from looping
/// forever). Kills P16 (no save on catching up).
#[test]
fn run_saves_the_checkpoint_when_it_catches_up() {
    let (_dir, store) = open();
    append(&store, "Order-1", 4);
    let mut r = runner(&store, Calls::default()).with_checkpoint_every(1000, Duration::from_secs(3600));
    let mut calls = 0;
    let applied = r
        .run(Duration::from_millis(5), |p| {
            calls += 1;
            !p.ends.is_empty() || calls > 200
        })
        .unwrap();
    assert_eq!(applied, 4);
    assert!(calls <= 200, "the run never ended a batch on catching up");
    assert_eq!(r.projection().ends, [4]);
    assert_eq!(store.checkpoints().load("calls").unwrap(), Some(4));
}
