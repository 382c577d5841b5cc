//! Snapshots on the simulated file system: loading with and without a
//! snapshot gives the same state; damaged, torn, schema-mismatched and
//! ahead-of-the-log snapshots fall back to replay and are reported; a
//! crash during a snapshot save or a compaction loses no acknowledged
//! snapshot and never leaves a snapshot ahead of the log.
#![cfg(all(feature = "sim", feature = "aggregate"))]

mod aggregate_support;
mod sim_support;

use aggregate_support::{Account, AccountCommand, AccountEvent, fold};
use annal::aggregate::{Aggregate, CommandMetadata, JsonCodec, Repository};
use annal::io::sim::{SimFs, SimImage};
use annal::snapshot::file::FILE_NAME;
use annal::{Durability, Options, SnapshotIssue, SnapshotOptions, Store};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use sim_support::dir;

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Sync)
        .with_segment_size_bytes(64 * 1024)
}

fn open(fs: &SimFs) -> Store<SimFs> {
    Store::open_with(fs.clone(), dir(), options()).expect("open")
}

fn repo(store: &Store<SimFs>, every: u64) -> Repository<Account, SimFs> {
    Repository::new(store.clone(), JsonCodec)
        .with_snapshot_every(every)
        .with_max_retries(100)
}

fn meta() -> CommandMetadata {
    CommandMetadata::new()
}

/// Runs commands; returns the events they appended (refused ones append
/// nothing).
fn run(repo: &Repository<Account, SimFs>, id: &str, commands: &[AccountCommand]) -> Vec<AccountEvent> {
    let mut events = Vec::new();
    for c in commands {
        let before = repo.load(id).expect("load").state;
        if let Ok(r) = repo.execute(id, c.clone(), meta()) {
            let decided = before.handle(c.clone()).expect("decided the same");
            assert_eq!(decided.len(), r.events);
            events.extend(decided);
        }
    }
    events
}

fn snapshot_path() -> std::path::PathBuf {
    dir().join(FILE_NAME)
}

fn command() -> impl Strategy<Value = AccountCommand> {
    prop_oneof![
        1 => Just(AccountCommand::Open("ann".into())),
        4 => (1u64..50).prop_map(AccountCommand::Deposit),
        3 => (1u64..80).prop_map(AccountCommand::Withdraw),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Same state with and without snapshots, now and at every version.
    #[test]
    fn snapshot_and_replay_agree(
        commands in proptest::collection::vec(command(), 0..60),
        every in 1u64..8,
        keep in 1usize..4,
    ) {
        let fs = SimFs::new(7);
        let store = open(&fs);
        store.set_snapshot_options(SnapshotOptions::default().with_keep_per_stream(keep).with_compact_min_bytes(256));
        let repo = repo(&store, every);
        let mut all = vec![AccountCommand::Open("bob".into())];
        all.extend(commands);
        let events = run(&repo, "1", &all);
        let with = repo.load("1").unwrap();
        let without = repo.load_without_snapshot("1").unwrap();
        prop_assert_eq!(&with.state, &without.state);
        prop_assert_eq!(&with.state, &fold(&events));
        prop_assert_eq!(with.version, events.len() as u64);
        prop_assert!(with.issues.is_empty());
        if events.len() as u64 >= every {
            prop_assert!(with.snapshot_version.is_some());
        }
        for v in 0..=events.len() {
            let at = repo.load_at_version("1", v as u64).unwrap();
            prop_assert_eq!(&at.state, &fold(&events[..v]));
            prop_assert_eq!(at.version, v as u64);
            if let Some(s) = at.snapshot_version {
                prop_assert!(s <= v as u64);
            }
        }
        // And after a reopen, from the snapshot file as found on disk.
        drop(repo);
        store.close().unwrap();
        let store = open(&fs);
        let reopened = Repository::<Account, SimFs>::new(store, JsonCodec).load("1").unwrap();
        prop_assert_eq!(&reopened.state, &fold(&events));
        prop_assert_eq!(reopened.snapshot_version, with.snapshot_version);
    }
}

/// A closed store with one account of 12 events and snapshots at 4, 8, 12.
fn small_store() -> (SimImage, Vec<AccountEvent>) {
    let fs = SimFs::new(3);
    let store = open(&fs);
    let repo = repo(&store, 4);
    let mut commands = vec![AccountCommand::Open("ann".into())];
    commands.extend((1..12).map(AccountCommand::Deposit));
    let events = run(&repo, "1", &commands);
    assert_eq!(events.len(), 12);
    assert_eq!(repo.load("1").unwrap().snapshot_version, Some(12));
    drop(repo);
    store.close().unwrap();
    (fs.durable_image(), events)
}

/// Opens `image`, loads the account now and at every version, and checks
/// the states; returns the issues reported.
fn load_checked(image: &SimImage, events: &[AccountEvent]) -> Vec<SnapshotIssue> {
    let fs = SimFs::from_image(image, 1);
    let store = open(&fs);
    let repo = Repository::<Account, SimFs>::new(store.clone(), JsonCodec);
    for v in [12u64, 10, 8, 5, 4, 1] {
        let loaded = repo.load_at_version("1", v).expect("load never fails over a snapshot");
        assert_eq!(loaded.state, fold(&events[..v as usize]), "wrong state at version {v}");
        assert_eq!(loaded.version, v);
    }
    // Saving again works whatever was found.
    assert_eq!(repo.snapshot("1").unwrap(), 12);
    assert_eq!(repo.load("1").unwrap().snapshot_version, Some(12));
    store.snapshot_issues()
}

#[test]
fn every_bit_flip_of_the_snapshot_file_falls_back() {
    let (image, events) = small_store();
    let path = snapshot_path();
    let original = image.files.get(&path).expect("snapshot file").clone();
    assert!(load_checked(&image, &events).is_empty());
    let mut reported = 0;
    for i in 0..original.len() {
        for bit in 0..8 {
            let mut damaged = image.clone();
            let mut bytes = original.clone();
            bytes[i] ^= 1 << bit;
            damaged.files.insert(path.clone(), bytes);
            let issues = load_checked(&damaged, &events);
            // A CRC catches every single-bit error.
            assert!(!issues.is_empty(), "a flip of bit {bit} of byte {i} went unnoticed");
            reported += 1;
        }
    }
    assert_eq!(reported, original.len() * 8);
}

#[test]
fn torn_tail_is_cut_and_earlier_snapshots_are_kept() {
    let (image, events) = small_store();
    let path = snapshot_path();
    let original = image.files.get(&path).expect("snapshot file").clone();
    for len in 0..original.len() {
        let mut torn = image.clone();
        torn.files.insert(path.clone(), original[..len].to_vec());
        let issues = load_checked(&torn, &events);
        if len > 32 {
            assert!(
                issues
                    .iter()
                    .all(|i| matches!(i, SnapshotIssue::TornTail { .. } | SnapshotIssue::FileReplaced { .. })),
                "{issues:?}"
            );
        }
    }
    // A tail torn inside the last record keeps the snapshots before it.
    let mut torn = image.clone();
    torn.files.insert(path.clone(), original[..original.len() - 3].to_vec());
    let fs = SimFs::from_image(&torn, 1);
    let store = open(&fs);
    let loaded = Repository::<Account, SimFs>::new(store.clone(), JsonCodec)
        .load("1")
        .unwrap();
    assert_eq!(loaded.snapshot_version, Some(8));
    assert_eq!(loaded.replayed, 4);
    assert!(matches!(store.snapshot_issues()[..], [SnapshotIssue::TornTail { .. }]));
    // The load that opened the file met the torn tail: its result says so.
    assert!(
        matches!(loaded.issues[..], [SnapshotIssue::TornTail { .. }]),
        "{:?}",
        loaded.issues
    );
    // A missing file: a plain replay, no issue.
    let mut missing = image;
    missing.files.remove(&path);
    assert!(load_checked(&missing, &events).is_empty());
}

/// The account's state as a later version of the program sees it: another
/// snapshot schema.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct AccountV2(Account);

impl Aggregate for AccountV2 {
    const CATEGORY: &'static str = "Account";
    const SNAPSHOT_SCHEMA_VERSION: u32 = 2;
    type Event = AccountEvent;
    type Command = AccountCommand;
    type Error = aggregate_support::AccountError;
    fn apply(&mut self, event: &AccountEvent) {
        self.0.apply(event)
    }
    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, Self::Error> {
        self.0.handle(command)
    }
}

#[test]
fn schema_mismatch_and_undecodable_snapshots_fall_back() {
    let (image, events) = small_store();
    let fs = SimFs::from_image(&image, 1);
    let store = open(&fs);
    let v2 = Repository::<AccountV2, SimFs>::new(store.clone(), JsonCodec);
    let loaded = v2.load("1").unwrap();
    assert_eq!(loaded.state.0, fold(&events));
    assert_eq!(loaded.snapshot_version, None);
    assert_eq!(loaded.replayed, 12);
    // Every v1 snapshot is passed over, the newest first.
    assert!(matches!(
        loaded.issues[0],
        SnapshotIssue::SchemaMismatch {
            found: 1,
            expected: 2,
            version: 12,
            ..
        }
    ));
    assert!(
        loaded.issues.iter().all(|i| matches!(
            i,
            SnapshotIssue::SchemaMismatch {
                found: 1,
                expected: 2,
                ..
            }
        )),
        "{:?}",
        loaded.issues
    );
    // Saving a v2 snapshot makes the next v2 load use it.
    v2.snapshot("1").unwrap();
    assert_eq!(v2.load("1").unwrap().snapshot_version, Some(12));
    // Bytes that do not decode, under the right schema version.
    store.save_snapshot("Account-1", 12, 1, b"{not json").unwrap();
    let v1 = Repository::<Account, SimFs>::new(store.clone(), JsonCodec);
    let loaded = v1.load("1").unwrap();
    assert_eq!(loaded.state, fold(&events));
    assert!(matches!(
        loaded.issues[..],
        [SnapshotIssue::Undecodable { version: 12, .. }]
    ));
    // The older v1 snapshot before it is used instead.
    assert!(loaded.snapshot_version.is_some_and(|v| v < 12), "{loaded:?}");
    assert!(store.snapshot_issues().len() >= 2);
}

#[test]
fn a_snapshot_is_never_ahead_of_the_log() {
    let fs = SimFs::new(5);
    let store = open(&fs);
    let repo = repo(&store, 0);
    let events = run(
        &repo,
        "1",
        &[AccountCommand::Open("a".into()), AccountCommand::Deposit(5)],
    );
    // Saving for a version the stream does not have is refused.
    assert!(store.save_snapshot("Account-1", 3, 1, b"{}").is_err());
    assert!(store.save_snapshot("Account-9", 1, 1, b"{}").is_err());
    assert!(store.save_snapshot("Account-1", 0, 1, b"{}").is_err());
    let short = fs.durable_image();
    // A snapshot file that knows of more events than the log holds (as
    // after a repair cut the log): the snapshot is passed over.
    let more = run(&repo, "1", &[AccountCommand::Deposit(7), AccountCommand::Deposit(9)]);
    repo.snapshot("1").unwrap();
    let snapshots = fs.read(&snapshot_path()).unwrap();
    drop(repo);
    store.close().unwrap();
    let mut image = short;
    image.files.insert(snapshot_path(), snapshots);
    let fs = SimFs::from_image(&image, 1);
    let store = open(&fs);
    let loaded = Repository::<Account, SimFs>::new(store, JsonCodec).load("1").unwrap();
    assert_eq!(loaded.state, fold(&events));
    assert_eq!(loaded.snapshot_version, None);
    assert!(
        matches!(
            loaded.issues[..],
            [SnapshotIssue::AheadOfLog {
                snapshot_version: 4,
                stream_version: 2,
                ..
            }]
        ),
        "{:?}",
        loaded.issues
    );
    assert_eq!(more.len(), 2);
}

#[test]
fn compaction_keeps_the_newest_snapshots_per_stream() {
    let fs = SimFs::new(9);
    let store = open(&fs);
    store.set_snapshot_options(
        SnapshotOptions::default()
            .with_keep_per_stream(2)
            .with_compact_min_bytes(1024),
    );
    let repo = repo(&store, 1);
    let mut expected = Vec::new();
    for id in ["a", "b", "c"] {
        let mut commands = vec![AccountCommand::Open(id.into())];
        commands.extend((1..40).map(AccountCommand::Deposit));
        expected.push(run(&repo, id, &commands));
    }
    let stats = store.snapshot_stats().unwrap();
    assert!(stats.compactions > 0, "{stats:?}");
    assert!(stats.file_bytes < 3 * 40 * 100, "{stats:?}");
    for (id, events) in ["a", "b", "c"].iter().zip(&expected) {
        let now = repo.load(id).unwrap();
        assert_eq!((now.snapshot_version, now.replayed), (Some(40), 0));
        let before = repo.load_at_version(id, 39).unwrap();
        assert_eq!((before.snapshot_version, before.replayed), (Some(39), 0));
        assert_eq!(before.state, fold(&events[..39]));
        // Older snapshots were compacted away: replay from the start.
        let old = repo.load_at_version(id, 20).unwrap();
        assert_eq!(old.state, fold(&events[..20]));
        assert!(old.snapshot_version.is_none_or(|v| v <= 20));
    }
    // A reopen finds the same kept snapshots.
    drop(repo);
    store.close().unwrap();
    let store = open(&fs);
    let stats = store.snapshot_stats().unwrap();
    assert_eq!(stats.streams, 3);
    // At rest, superseded records never outweigh the kept ones (the
    // compaction rule), so the file holds at most twice the kept ones.
    let dead = stats.file_bytes - annal::snapshot::file::FILE_HEADER_BYTES as u64 - stats.live_bytes;
    assert!(dead <= stats.live_bytes, "{stats:?}");
    assert!(stats.records <= 2 * 3 * 2, "{stats:?}");
    assert!(store.snapshot_issues().is_empty());
}

/// Runs a workload of commands with snapshots every 2 events and frequent
/// compactions, with power lost before the `n`-th mutating call. Returns
/// whether the crash happened before the workload ended.
fn crash_at(n: u64) -> bool {
    let fs = SimFs::new(n);
    let store = open(&fs);
    store.set_snapshot_options(
        SnapshotOptions::default()
            .with_keep_per_stream(1)
            .with_compact_min_bytes(300),
    );
    let repo = repo(&store, 2);
    fs.crash_after(n);
    // Acknowledged: events per account, and the last snapshot version.
    let mut acked: Vec<(Vec<AccountEvent>, u64)> = vec![(Vec::new(), 0); 2];
    let mut crashed = false;
    'work: for round in 0..12u64 {
        for (k, id) in ["x", "y"].iter().enumerate() {
            let command = if round == 0 {
                AccountCommand::Open(id.to_string())
            } else {
                AccountCommand::Deposit(round)
            };
            let state = fold(&acked[k].0);
            match repo.execute(id, command.clone(), meta()) {
                Ok(r) => {
                    acked[k].0.extend(state.handle(command).unwrap());
                    assert_eq!(r.version, acked[k].0.len() as u64);
                    if let Some(v) = r.snapshot_saved {
                        acked[k].1 = v;
                    }
                    if r.snapshot_error.is_some() {
                        crashed = true;
                        break 'work;
                    }
                }
                Err(_) => {
                    crashed = true;
                    break 'work;
                }
            }
        }
    }
    if !crashed {
        let stats = store.snapshot_stats().unwrap();
        assert!(stats.compactions >= 3, "{stats:?}");
    }
    fs.crash_now();
    drop(repo);
    drop(store);
    let image = fs.image().expect("crashed");
    let fs = SimFs::from_image(&image, n);
    let store = open(&fs);
    let repo = Repository::<Account, SimFs>::new(store.clone(), JsonCodec);
    for (k, id) in ["x", "y"].iter().enumerate() {
        let (events, snapshot) = &acked[k];
        let stream = repo.stream_name(id);
        let have = store.stream_version(&stream).unwrap_or(0);
        assert!(have >= events.len() as u64, "crash {n}: acknowledged events lost");
        let loaded = repo.load(id).unwrap();
        let replayed = repo.load_without_snapshot(id).unwrap();
        assert_eq!(loaded.state, replayed.state, "crash {n}: snapshot and replay disagree");
        assert_eq!(loaded.version, have);
        assert_eq!(
            &fold(&events[..]),
            &repo.load_at_version(id, events.len() as u64).unwrap().state
        );
        assert!(
            !loaded
                .issues
                .iter()
                .any(|i| matches!(i, SnapshotIssue::AheadOfLog { .. })),
            "crash {n}: a snapshot ahead of the log"
        );
        let found = store.load_snapshot(&stream).snapshot.map_or(0, |s| s.version);
        assert!(
            found >= *snapshot,
            "crash {n}: acknowledged snapshot {snapshot} of {id} lost (found {found})"
        );
        assert!(found <= have);
    }
    // The store and its snapshots work after recovery.
    let again = Repository::<Account, SimFs>::new(store.clone(), JsonCodec).with_snapshot_every(1);
    if store.stream_version("Account-x").is_some() {
        let r = again.execute("x", AccountCommand::Deposit(1), meta()).unwrap();
        assert_eq!(r.snapshot_saved, Some(r.version));
    }
    crashed
}

#[test]
fn crash_during_snapshot_saves_and_compactions() {
    let mut n = 0;
    while crash_at(n) {
        n += 1;
        assert!(n < 100_000, "the workload never ends");
    }
    assert!(n > 50, "the workload made only {n} mutating calls");
}

/// A load racing saves of newer versions finds no snapshot "ahead of the
/// log": every snapshot saved was of a version the stream had then (only
/// a log cut shorter by `repair` leaves one ahead).
#[test]
fn loads_racing_saves_report_nothing_ahead_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().with_durability(Durability::Buffered)).unwrap();
    store
        .append("A-1", annal::ExpectedVersion::Any, [annal::EventData::new("T", "{}")])
        .unwrap();
    store.save_snapshot("A-1", 1, 1, b"1").unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // More loaders than cores: some are preempted between steps.
        let loaders: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut loads = 0u64;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let load = store.load_snapshot("A-1");
                        assert!(load.snapshot.is_some());
                        assert!(load.issues.is_empty(), "{:?}", load.issues);
                        loads += 1;
                    }
                    loads
                })
            })
            .collect();
        for v in 2..=400u64 {
            store
                .append(
                    "A-1",
                    annal::ExpectedVersion::Exact(v - 1),
                    [annal::EventData::new("T", "{}")],
                )
                .unwrap();
            store.save_snapshot("A-1", v, 1, v.to_string().as_bytes()).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for loader in loaders {
            assert!(loader.join().unwrap() > 0);
        }
    });
    assert!(store.snapshot_issues().is_empty(), "{:?}", store.snapshot_issues());
    store.close().unwrap();
}

/// Options changed while saves run: the count of kept bytes (which decides
/// when to compact) stays the one a fresh count gives, and never runs past
/// the file (it once subtracted with one `keep_per_stream` and added with
/// another: an overflow).
#[test]
fn options_changed_during_saves_keep_the_live_count_right() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().with_durability(Durability::Buffered)).unwrap();
    let options = |keep| SnapshotOptions {
        keep_per_stream: keep,
        compact_min_bytes: 1 << 30,
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let toggler = s.spawn(|| {
            let mut keep = 1;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                keep = 5 - keep; // 1, 4, 1, ...
                store.set_snapshot_options(options(keep));
                let stats = store.snapshot_stats().unwrap();
                assert!(stats.live_bytes <= stats.file_bytes, "{stats:?}");
            }
        });
        for v in 1..=600u64 {
            store
                .append("A-1", annal::ExpectedVersion::Any, [annal::EventData::new("T", "{}")])
                .unwrap();
            // Sizes vary, so that counting with another `keep` differs.
            store
                .save_snapshot("A-1", v, 1, &vec![7; 100 + (v % 37) as usize * 11])
                .unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        toggler.join().unwrap();
    });
    let counted = store.snapshot_stats().unwrap().live_bytes;
    store.set_snapshot_options(store.snapshot_options()); // a fresh count
    assert_eq!(store.snapshot_stats().unwrap().live_bytes, counted);
    store.close().unwrap();
}

/// In the buffered mode a snapshot save syncs the log first: after a power
/// loss right after the save, the log holds every event the snapshot
/// covers (so it is served, and the store opens).
#[test]
fn a_buffered_snapshot_save_makes_its_events_durable_first() {
    for seed in 0..20 {
        let fs = SimFs::new(seed);
        let opts = options().with_durability(Durability::Buffered);
        let store = Store::open_with(fs.clone(), dir(), opts.clone()).expect("open");
        for _ in 0..3 {
            store
                .append("A-1", annal::ExpectedVersion::Any, [annal::EventData::new("E", "{}")])
                .expect("append");
        }
        store.save_snapshot("A-1", 3, 1, b"state").expect("save");
        fs.crash_now();
        let image = fs.image().expect("crashed");
        drop(store);
        let store = Store::open_with(SimFs::from_image(&image, seed), dir(), opts).expect("reopen");
        assert_eq!(store.stream_version("A-1"), Some(3), "seed {seed}");
        let load = store.load_snapshot("A-1");
        assert!(load.issues.is_empty(), "seed {seed}: {:?}", load.issues);
        assert_eq!(load.snapshot.map(|s| s.version), Some(3), "seed {seed}");
    }
}
