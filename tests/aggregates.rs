//! The typed layer: commands, optimistic concurrency with retries, domain
//! errors, correlation and causation, upcasting chains, codecs and time
//! travel.
#![cfg(feature = "aggregate")]

mod aggregate_support;

use std::sync::Arc;

use aggregate_support::{Account, AccountCommand, AccountError, AccountEvent, fold, run_at_once};
use annal::aggregate::{
    Aggregate, BincodeCodec, CommandMetadata, DomainEvent, JsonCodec, Repository, RepositoryError, Upcasters,
    command_event_id, split_stream_name,
};
use annal::{EventData, ExpectedVersion, Options, ReadStream, Store, Uuid};
use serde::{Deserialize, Serialize};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s"), Options::default()).unwrap();
    (dir, store)
}

#[test]
fn concurrent_commands_on_one_aggregate_lose_no_update() {
    let (_dir, store) = store();
    let repo = Repository::<Account>::new(store.clone(), JsonCodec)
        .with_snapshot_every(7)
        .with_max_retries(10_000);
    repo.execute("acc", AccountCommand::Open("ann".into()), CommandMetadata::new())
        .unwrap();
    let repo = Arc::new(repo);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let repo = repo.clone();
            std::thread::spawn(move || {
                let mut retried = 0;
                for i in 0..50u64 {
                    let r = repo
                        .execute("acc", AccountCommand::Deposit(t * 1000 + i), CommandMetadata::new())
                        .unwrap();
                    retried += r.attempts - 1;
                }
                retried
            })
        })
        .collect();
    let retries: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let loaded = repo.load("acc").unwrap();
    let expected: u64 = (0..4u64).flat_map(|t| (0..50).map(move |i| t * 1000 + i)).sum();
    assert_eq!(loaded.state.balance, expected);
    assert_eq!(loaded.version, 201);
    assert_eq!(loaded.state.movements, 201);
    assert_eq!(repo.load_without_snapshot("acc").unwrap().state, loaded.state);
    // Conflicts happened and were retried (on 2 cores, almost surely).
    eprintln!("{retries} retries");
}

/// A command executed again with the same metadata (a retry after an
/// error of unknown outcome) is not applied twice: the repeat returns the
/// first execution, marked `repeated`, and writes nothing; from a fresh
/// repository and after a reopen (found among the replayed events), and
/// when a snapshot covers the first execution (found among the store's
/// recent ids). Another command id is a new command.
#[test]
fn a_repeated_command_is_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Store::open(&path, Options::default()).unwrap();
    for snapshot_every in [None, Some(1)] {
        let repo = Repository::<Account>::new(store.clone(), JsonCodec);
        let repo = match snapshot_every {
            Some(n) => repo.with_snapshot_every(n),
            None => repo,
        };
        let id = format!("acc{}", snapshot_every.unwrap_or(0));
        repo.execute(&id, AccountCommand::Open("ann".into()), CommandMetadata::new())
            .unwrap();
        let deposit = CommandMetadata::new();
        let first = repo.execute(&id, AccountCommand::Deposit(5), deposit.clone()).unwrap();
        assert!(!first.repeated);
        assert_eq!(first.snapshot_saved.is_some(), snapshot_every.is_some());
        for again in [repo.clone(), Repository::<Account>::new(store.clone(), JsonCodec)] {
            let r = again.execute(&id, AccountCommand::Deposit(5), deposit.clone()).unwrap();
            assert!(r.repeated, "{snapshot_every:?}");
            assert_eq!((r.events, r.last_position), (first.events, first.last_position));
            assert_eq!((r.version, r.state.balance), (2, 5));
        }
        let other = repo
            .execute(&id, AccountCommand::Deposit(5), CommandMetadata::new())
            .unwrap();
        assert!(!other.repeated);
        assert_eq!((other.version, other.state.balance), (3, 10));
        let stream = repo.stream_name(&id);
        let ids: Vec<Uuid> = store
            .read_stream(&stream, ReadStream::forward())
            .unwrap()
            .map(|e| e.unwrap().id())
            .collect();
        assert_eq!(
            ids[1],
            command_event_id(deposit.command_id, 0),
            "derived from the command id"
        );
    }
    store.close().unwrap();
    // After a reopen, without a snapshot: found among the replayed events.
    let store = Store::open(&path, Options::default()).unwrap();
    let repo = Repository::<Account>::new(store.clone(), JsonCodec);
    let deposit = CommandMetadata::new();
    let first = repo
        .execute("acc0", AccountCommand::Deposit(1), deposit.clone())
        .unwrap();
    drop(repo);
    store.close().unwrap();
    let store = Store::open(&path, Options::default()).unwrap();
    let repo = Repository::<Account>::new(store.clone(), JsonCodec);
    let r = repo.execute("acc0", AccountCommand::Deposit(1), deposit).unwrap();
    assert!(r.repeated);
    assert_eq!(
        (r.last_position, r.version, r.state.balance),
        (first.last_position, 4, 11)
    );
}

/// Threads running one command (same metadata) at once apply it once.
#[test]
fn one_command_run_by_many_threads_at_once_is_applied_once() {
    let (_dir, store) = store();
    let repo = Arc::new(Repository::<Account>::new(store.clone(), JsonCodec).with_max_retries(10_000));
    repo.execute("acc", AccountCommand::Open("ann".into()), CommandMetadata::new())
        .unwrap();
    for _ in 0..20 {
        run_at_once(&repo, "acc", AccountCommand::Deposit(1), CommandMetadata::new(), 4);
    }
    let loaded = repo.load("acc").unwrap();
    assert_eq!((loaded.version, loaded.state.balance), (21, 20));
}

/// A ticket whose event carries a fresh nonce each time it is decided: a
/// handler that is not deterministic, as one stamping the time would be.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Ticket {
    issued: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Issued {
    nonce: u64,
}

impl DomainEvent for Issued {
    fn event_type(&self) -> &'static str {
        "Issued"
    }
}

impl Aggregate for Ticket {
    const CATEGORY: &'static str = "Ticket";
    type Event = Issued;
    type Command = ();
    type Error = std::convert::Infallible;
    fn apply(&mut self, _: &Issued) {
        self.issued += 1;
    }
    fn handle(&self, (): ()) -> Result<Vec<Issued>, Self::Error> {
        Ok(vec![Issued {
            nonce: Uuid::new_v4().as_u64_pair().0,
        }])
    }
}

/// Threads running one command at once whose handler decides different
/// events each time: the first to write wins, the others return its
/// execution (`repeated`), none fails.
#[test]
fn one_command_with_a_nondeterministic_handler_run_at_once_is_applied_once() {
    let (_dir, store) = store();
    let repo = Arc::new(Repository::<Ticket>::new(store.clone(), JsonCodec).with_max_retries(10_000));
    for round in 1..=20u64 {
        let results = run_at_once(&repo, "t", (), CommandMetadata::new(), 4);
        assert_eq!(results.iter().filter(|r| !r.repeated).count(), 1, "round {round}");
        let loaded = repo.load("t").unwrap();
        assert_eq!((loaded.version, loaded.state.issued), (round, round as u32));
        let last = results
            .iter()
            .map(|r| r.last_position)
            .collect::<std::collections::HashSet<_>>();
        assert_eq!(last.len(), 1, "all name the one execution");
    }
}

/// The ids derived from a command id are pinned: a command retried by a
/// later version of this crate must meet the same ids. (Computed
/// independently with Python's `uuid.uuid5` on the 8 little-endian bytes
/// of `k`.)
#[test]
fn command_event_ids_are_stable() {
    let command = Uuid::parse_str("6ba7b810-9dad-11d1-80b4-00c04fd430c8").unwrap();
    assert_eq!(
        command_event_id(command, 0).to_string(),
        "7689a587-dc34-5882-9aeb-9368592f805f"
    );
    assert_eq!(
        command_event_id(command, 1).to_string(),
        "3f254482-3457-5b56-85e9-ac473ab6ebf4"
    );
}

#[test]
fn retries_are_bounded() {
    // An aggregate whose command handler appends behind its own back, so
    // every attempt meets a conflict.
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Meddler;
    #[derive(Serialize, Deserialize)]
    enum Ev {
        Done,
    }
    impl DomainEvent for Ev {
        fn event_type(&self) -> &'static str {
            "Done"
        }
    }
    thread_local! {
        static STORE: std::cell::RefCell<Option<Store>> = const { std::cell::RefCell::new(None) };
    }
    impl Aggregate for Meddler {
        const CATEGORY: &'static str = "Meddler";
        type Event = Ev;
        type Command = ();
        type Error = std::convert::Infallible;
        fn apply(&mut self, _: &Ev) {}
        fn handle(&self, _: ()) -> Result<Vec<Ev>, Self::Error> {
            STORE.with(|s| {
                let s = s.borrow();
                let store = s.as_ref().unwrap();
                store
                    .append("Meddler-1", ExpectedVersion::Any, [EventData::new("Done", "null")])
                    .unwrap();
            });
            Ok(vec![Ev::Done])
        }
    }
    let (_dir, store) = store();
    STORE.with(|s| *s.borrow_mut() = Some(store.clone()));
    let repo = Repository::<Meddler>::new(store.clone(), JsonCodec).with_max_retries(3);
    let err = repo.execute("1", (), CommandMetadata::new()).unwrap_err();
    assert!(matches!(err, RepositoryError::Conflict { attempts: 4, .. }), "{err}");
    assert_eq!(store.stream_version("Meddler-1"), Some(4), "only the meddler's events");
    STORE.with(|s| *s.borrow_mut() = None);
}

#[test]
fn refused_commands_write_nothing() {
    let (_dir, store) = store();
    let repo = Repository::<Account>::new(store.clone(), JsonCodec);
    let err = repo
        .execute("a", AccountCommand::Deposit(5), CommandMetadata::new())
        .unwrap_err();
    assert!(matches!(err, RepositoryError::Domain(AccountError::NotOpen)));
    repo.execute("a", AccountCommand::Open("x".into()), CommandMetadata::new())
        .unwrap();
    let err = repo
        .execute("a", AccountCommand::Withdraw(1), CommandMetadata::new())
        .unwrap_err();
    assert!(matches!(err, RepositoryError::Domain(AccountError::Insufficient)));
    assert_eq!(store.stream_version("Account-a"), Some(1));
}

#[test]
fn correlation_and_causation_reach_the_events() {
    let (_dir, store) = store();
    let repo = Repository::<Account>::new(store.clone(), JsonCodec);
    let correlation = Uuid::new_v4();
    let meta = CommandMetadata::new().with_correlation_id(correlation);
    repo.execute("a", AccountCommand::Open("x".into()), meta.clone())
        .unwrap();
    let opened = store.read_position(1).unwrap().unwrap();
    assert_eq!(opened.correlation_id(), Some(correlation));
    assert_eq!(opened.causation_id(), Some(meta.command_id));
    assert_eq!(opened.event_type(), "Opened");
    assert_eq!(opened.data(), br#"{"owner":"x"}"#);
    // A command caused by that event carries the conversation on.
    let next = CommandMetadata::caused_by(&opened);
    repo.execute("a", AccountCommand::Deposit(3), next).unwrap();
    let deposited = store.read_position(2).unwrap().unwrap();
    assert_eq!(deposited.correlation_id(), Some(correlation));
    assert_eq!(deposited.causation_id(), Some(opened.id()));
    // Without ids, both are the command's id.
    let plain = CommandMetadata::new();
    repo.execute("a", AccountCommand::Deposit(3), plain.clone()).unwrap();
    let e = store.read_position(3).unwrap().unwrap();
    assert_eq!(
        (e.correlation_id(), e.causation_id()),
        (Some(plain.command_id), Some(plain.command_id))
    );
}

/// Version 3 of a "Deposited" event: v1 was `{"amount": 5}` (whole euros),
/// v2 added `currency`, v3 stores cents under `amount_cents`.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Wallet {
    cents: u64,
    currencies: Vec<String>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum WalletEvent {
    Deposited { amount_cents: u64, currency: String },
}

impl DomainEvent for WalletEvent {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
    fn schema_version(&self) -> u16 {
        3
    }
}

impl Aggregate for Wallet {
    const CATEGORY: &'static str = "Wallet";
    type Event = WalletEvent;
    type Command = u64;
    type Error = std::convert::Infallible;
    fn apply(&mut self, WalletEvent::Deposited { amount_cents, currency }: &WalletEvent) {
        self.cents += amount_cents;
        self.currencies.push(currency.clone());
    }
    fn handle(&self, cents: u64) -> Result<Vec<WalletEvent>, Self::Error> {
        Ok(vec![WalletEvent::Deposited {
            amount_cents: cents,
            currency: "USD".into(),
        }])
    }
}

fn wallet_upcasters() -> Upcasters {
    Upcasters::new()
        .register_json("Deposited", 1, |mut v| {
            v["currency"] = "EUR".into();
            v
        })
        .register_json("Deposited", 2, |v| {
            let cents = v["amount"].as_u64().unwrap_or(0) * 100;
            serde_json::json!({ "amount_cents": cents, "currency": v["currency"] })
        })
}

#[test]
fn upcasters_chain_old_versions_and_never_rewrite() {
    let (_dir, store) = store();
    store
        .append(
            "Wallet-1",
            ExpectedVersion::NoStream,
            [
                EventData::new("Deposited", r#"{"amount":5}"#).with_schema_version(1),
                EventData::new("Deposited", r#"{"amount":2,"currency":"GBP"}"#).with_schema_version(2),
                EventData::new("Deposited", r#"{"amount_cents":7,"currency":"CHF"}"#).with_schema_version(3),
            ],
        )
        .unwrap();
    // Without the upcasters the old shape does not decode: a codec error
    // that says which schema version the payload was left at.
    let plain = Repository::<Wallet>::new(store.clone(), JsonCodec);
    match plain.load("1") {
        Err(e @ RepositoryError::Codec { version: 1, .. }) => {
            assert!(e.to_string().contains("at schema version 1 after upcasting"), "{e}");
        }
        other => panic!("expected a codec error, got {other:?}"),
    }
    let repo = Repository::<Wallet>::new(store.clone(), JsonCodec)
        .with_upcasters(wallet_upcasters())
        .with_snapshot_every(2);
    repo.execute("1", 1, CommandMetadata::new()).unwrap();
    let wallet = repo.load("1").unwrap();
    assert_eq!(wallet.state.cents, 500 + 200 + 7 + 1);
    assert_eq!(wallet.state.currencies, ["EUR", "GBP", "CHF", "USD"]);
    assert_eq!(wallet.snapshot_version, Some(4));
    // Stored events are as written; the new one is at version 3.
    let stored: Vec<(u16, Vec<u8>)> = store
        .read_stream("Wallet-1", ReadStream::forward())
        .unwrap()
        .map(|e| e.map(|e| (e.schema_version(), e.data().to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored[0], (1, br#"{"amount":5}"#.to_vec()));
    assert_eq!(stored[1], (2, br#"{"amount":2,"currency":"GBP"}"#.to_vec()));
    assert_eq!(stored[3].0, 3);
    // A failing upcaster is an error, not a silent skip.
    let broken =
        Repository::<Wallet>::new(store, JsonCodec)
            .with_upcasters(Upcasters::new().register("Deposited", 1, |_| Err("nope".into())));
    assert!(matches!(
        broken.load_without_snapshot("1"),
        Err(RepositoryError::Upcast { version: 1, .. })
    ));
}

/// A payload that would decode into the current shape is still refused
/// when the upcasters do not bring it to the current schema version: a
/// missing step, or an event stored by a newer program. Decoding it would
/// fold wrong state without a word.
#[test]
fn a_payload_not_at_the_current_schema_version_is_an_error_even_when_it_decodes() {
    let cases = [
        // Stored at version 2, only the step from 1 registered.
        (
            2,
            Upcasters::new().register_json("Deposited", 1, |v| v),
            "no upcaster to version 3",
        ),
        // No upcasters at all.
        (1, Upcasters::new(), "no upcaster to version 2"),
        // Stored by a newer program.
        (4, wallet_upcasters(), "newer program"),
    ];
    for (stored_version, upcasters, message) in cases {
        let (_dir, store) = store();
        store
            .append(
                "Wallet-1",
                ExpectedVersion::NoStream,
                [EventData::new("Deposited", r#"{"amount_cents":7,"currency":"CHF"}"#)
                    .with_schema_version(stored_version)],
            )
            .unwrap();
        let repo = Repository::<Wallet>::new(store, JsonCodec).with_upcasters(upcasters);
        match repo.load("1") {
            Err(e @ RepositoryError::Upcast { version: 1, .. }) => {
                assert!(e.to_string().contains(message), "{e}");
            }
            other => panic!("stored at version {stored_version}: expected an upcast error, got {other:?}"),
        }
    }
}

#[test]
fn bincode_codec_round_trips_through_the_store() {
    let (_dir, store) = store();
    let repo = Repository::<Account, _, BincodeCodec>::new(store.clone(), BincodeCodec).with_snapshot_every(3);
    let mut events = Vec::new();
    for c in [
        AccountCommand::Open("b".into()),
        AccountCommand::Deposit(9),
        AccountCommand::Withdraw(4),
        AccountCommand::Deposit(1),
    ] {
        let before = repo.load("1").unwrap().state;
        repo.execute("1", c.clone(), CommandMetadata::new()).unwrap();
        events.extend(before.handle(c).unwrap());
    }
    let loaded = repo.load("1").unwrap();
    assert_eq!(loaded.state, fold(&events));
    assert_eq!((loaded.snapshot_version, loaded.replayed), (Some(3), 1));
}

#[test]
fn time_travel_by_version_and_position() {
    let (_dir, store) = store();
    let repo = Repository::<Account>::new(store.clone(), JsonCodec).with_snapshot_every(3);
    let other = Repository::<Account>::new(store.clone(), JsonCodec);
    let mut events: Vec<AccountEvent> = Vec::new();
    let mut positions = Vec::new();
    other
        .execute("other", AccountCommand::Open("o".into()), CommandMetadata::new())
        .unwrap();
    for (k, c) in [AccountCommand::Open("t".into())]
        .into_iter()
        .chain((1..10).map(AccountCommand::Deposit))
        .enumerate()
    {
        let before = repo.load("t").unwrap().state;
        let r = repo.execute("t", c.clone(), CommandMetadata::new()).unwrap();
        positions.push(r.last_position);
        events.extend(before.handle(c).unwrap());
        other
            .execute("other", AccountCommand::Deposit(k as u64 + 1), CommandMetadata::new())
            .unwrap();
    }
    for v in 0..=10u64 {
        let at = repo.load_at_version("t", v).unwrap();
        assert_eq!(at.state, fold(&events[..v as usize]));
        assert!(at.snapshot_version.is_none_or(|s| s <= v));
    }
    assert_eq!(repo.load_at_version("t", 7).unwrap().snapshot_version, Some(6));
    for p in 0..=store.last_position() + 1 {
        let v = positions.iter().filter(|&&q| q <= p).count();
        let at = repo.load_at_position("t", p).unwrap();
        assert_eq!(at.version, v as u64, "at position {p}");
        assert_eq!(at.state, fold(&events[..v]));
    }
}

/// An id that makes no valid stream name is refused by every load, as by
/// `execute` (before its command is decided), instead of loading as a new,
/// empty aggregate.
#[test]
fn loads_refuse_an_id_no_stream_can_have() {
    let (_dir, store) = store();
    let repo = Repository::<Wallet>::new(store, JsonCodec);
    let id = "x".repeat(300);
    let refused = |r: Result<(), RepositoryError<std::convert::Infallible>>| {
        matches!(r, Err(RepositoryError::Store(annal::Error::InvalidInput(_))))
    };
    assert!(refused(repo.load(&id).map(|_| ())));
    assert!(refused(repo.load_without_snapshot(&id).map(|_| ())));
    assert!(refused(repo.load_at_version(&id, 1).map(|_| ())));
    assert!(refused(repo.load_at_position(&id, 1).map(|_| ())));
    assert!(refused(repo.execute(&id, 1, CommandMetadata::new()).map(|_| ())));
    // Before the command is decided: the handler would refuse this one (the
    // account is not open), and that is not what is reported.
    let accounts = Repository::<Account>::new(repo.store().clone(), JsonCodec);
    let refused = |r: Result<(), RepositoryError<AccountError>>| {
        matches!(r, Err(RepositoryError::Store(annal::Error::InvalidInput(_))))
    };
    let deposit = accounts.execute(&id, AccountCommand::Deposit(5), CommandMetadata::new());
    assert!(refused(deposit.map(|_| ())));
}

#[test]
fn stream_names() {
    let (_dir, store) = store();
    let repo = Repository::<Account>::new(store, JsonCodec);
    assert_eq!(repo.stream_name("42"), "Account-42");
    assert_eq!(split_stream_name("Account-42"), Some(("Account", "42")));
}

/// A state of floats loads the same from a snapshot, from a replay and as
/// `execute` returned it: the JSON codec round-trips every `f64` exactly.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Meter {
    total: f64,
    last: f64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Measured {
    value: f64,
}

impl DomainEvent for Measured {
    fn event_type(&self) -> &'static str {
        "Measured"
    }
}

impl Aggregate for Meter {
    const CATEGORY: &'static str = "Meter";
    type Event = Measured;
    type Command = f64;
    type Error = std::convert::Infallible;
    fn apply(&mut self, e: &Measured) {
        self.total += e.value;
        self.last = e.value;
    }
    fn handle(&self, value: f64) -> Result<Vec<Measured>, Self::Error> {
        Ok(vec![Measured { value }])
    }
}

#[test]
fn floats_load_the_same_from_snapshots_and_replays() {
    let (_dir, store) = store();
    let repo = Repository::<Meter, _, JsonCodec>::new(store.clone(), JsonCodec).with_snapshot_every(1);
    let bits = |m: &Meter| (m.total.to_bits(), m.last.to_bits());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        // Finite values of every magnitude (a xorshift over the bits).
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let value = f64::from_bits(x);
        let value = if value.is_finite() {
            value
        } else {
            f64::from_bits(x >> 2)
        };
        let executed = repo.execute("1", value, CommandMetadata::new()).unwrap();
        let from_snapshot = repo.load("1").unwrap();
        assert!(from_snapshot.snapshot_version.is_some());
        let replayed = repo.load_without_snapshot("1").unwrap();
        assert_eq!(bits(&from_snapshot.state), bits(&replayed.state), "{value:e}");
        assert_eq!(bits(&executed.state), bits(&replayed.state), "{value:e}");
    }
}

/// A snapshot the aggregate cannot use (another schema version, as after
/// rolling the application back, or bytes that do not decode) is reported
/// and passed over for the newest one before it, not for a full replay.
#[test]
fn unusable_snapshots_fall_back_to_an_older_usable_one() {
    let (_dir, store) = store();
    let repo = Repository::<Account>::new(store.clone(), JsonCodec).with_snapshot_every(3);
    repo.execute("1", AccountCommand::Open("ann".into()), CommandMetadata::new())
        .unwrap();
    for i in 0..9 {
        repo.execute("1", AccountCommand::Deposit(i + 1), CommandMetadata::new())
            .unwrap();
    }
    let events: Vec<_> = store
        .read_stream("Account-1", ReadStream::forward())
        .unwrap()
        .map(|e| repo.decode(&e.unwrap()).unwrap())
        .collect();
    let want = fold(&events);
    let usable: Vec<u64> = (1..=10)
        .filter(|&v| {
            store
                .load_snapshot_at("Account-1", v)
                .snapshot
                .is_some_and(|s| s.version == v)
        })
        .collect();
    assert_eq!(usable, [3, 6, 9]);

    // A newer build's snapshot at 10, and undecodable bytes at 9.
    let schema = Account::SNAPSHOT_SCHEMA_VERSION;
    store.save_snapshot("Account-1", 10, schema + 1, b"{}").unwrap();
    store.save_snapshot("Account-1", 9, schema, b"\xff not json").unwrap();
    let l = repo.load("1").unwrap();
    assert_eq!((l.state.clone(), l.version), (want.clone(), 10));
    assert_eq!((l.snapshot_version, l.replayed), (Some(6), 4), "{:?}", l.issues);
    let kinds: Vec<_> = l
        .issues
        .iter()
        .map(|i| match i {
            annal::SnapshotIssue::SchemaMismatch { version, .. } => ("schema", *version),
            annal::SnapshotIssue::Undecodable { version, .. } => ("undecodable", *version),
            other => panic!("unexpected issue {other:?}"),
        })
        .collect();
    assert_eq!(kinds, [("schema", 10), ("undecodable", 9)]);

    // At a past version, the same: the newest usable one at or before it.
    let at8 = repo.load_at_version("1", 8).unwrap();
    assert_eq!((at8.snapshot_version, at8.version), (Some(6), 8));
    // None usable: a full replay, with every snapshot reported.
    for v in [3, 6] {
        store.save_snapshot("Account-1", v, schema + 1, b"{}").unwrap();
    }
    let l = repo.load("1").unwrap();
    assert_eq!(
        (l.state, l.version, l.snapshot_version, l.replayed),
        (want, 10, None, 10)
    );
    assert_eq!(l.issues.len(), 4, "{:?}", l.issues);
}

/// A repository load that looks back past an unusable snapshot reports
/// each snapshot it passed over once: one ahead of a restored older log
/// too (found by the first look, not again by the next ones).
#[test]
fn snapshots_passed_over_are_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let older = dir.path().join("older");
    let store = Store::open(&path, Options::default()).unwrap();
    let repo = Repository::<Account>::new(store.clone(), JsonCodec).with_snapshot_every(3);
    repo.execute("1", AccountCommand::Open("ann".into()), CommandMetadata::new())
        .unwrap();
    for i in 0..9 {
        repo.execute("1", AccountCommand::Deposit(i + 1), CommandMetadata::new())
            .unwrap();
    }
    drop(repo);
    store.close().unwrap();
    // The log as it is now (10 events), kept aside.
    std::fs::create_dir(&older).unwrap();
    for entry in std::fs::read_dir(&path).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".seg") || name == "index" {
            std::fs::copy(entry.path(), older.join(&name)).unwrap();
        }
    }
    // Three more events and a snapshot at 12; then the older log put back.
    let store = Store::open(&path, Options::default()).unwrap();
    let repo = Repository::<Account>::new(store.clone(), JsonCodec).with_snapshot_every(3);
    for i in 0..3 {
        repo.execute("1", AccountCommand::Deposit(i + 1), CommandMetadata::new())
            .unwrap();
    }
    drop(repo);
    store.close().unwrap();
    for entry in std::fs::read_dir(&older).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), path.join(entry.file_name())).unwrap();
    }
    let store = Store::open(&path, Options::default()).unwrap();
    let repo = Repository::<Account>::new(store.clone(), JsonCodec);
    // Unusable for this build at 9 (another schema version).
    store
        .save_snapshot("Account-1", 9, Account::SNAPSHOT_SCHEMA_VERSION + 1, b"{}")
        .unwrap();
    let l = repo.load("1").unwrap();
    assert_eq!((l.version, l.snapshot_version), (10, Some(6)), "{:?}", l.issues);
    let ahead: Vec<_> = l
        .issues
        .iter()
        .filter(|i| matches!(i, annal::SnapshotIssue::AheadOfLog { .. }))
        .collect();
    assert_eq!(ahead.len(), 1, "{:?}", l.issues);
    let mismatch = l
        .issues
        .iter()
        .filter(|i| matches!(i, annal::SnapshotIssue::SchemaMismatch { version: 9, .. }))
        .count();
    assert_eq!(mismatch, 1, "{:?}", l.issues);
    // A load of a past version says nothing of snapshots beyond it.
    let at7 = repo.load_at_version("1", 7).unwrap();
    assert_eq!(at7.snapshot_version, Some(6));
    assert!(at7.issues.is_empty(), "{:?}", at7.issues);
}
