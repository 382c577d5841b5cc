//! Loading a 10,000-event aggregate: a full replay, and from a snapshot
//! taken at its last version (plus the replay of 100 events after a
//! snapshot 100 events old); loading a snapshot while another stream's
//! are saved.

use annal::aggregate::{Aggregate, CommandMetadata, DomainEvent, JsonCodec, Repository};
use annal::{Durability, EventData, ExpectedVersion, Options, Store};
use criterion::{Criterion, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};

const EVENTS: u64 = 10_000;

#[derive(Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
    movements: u64,
    largest: i64,
}

#[derive(Serialize, Deserialize)]
enum AccountEvent {
    Deposited { amount: i64, reference: String },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

impl Aggregate for Account {
    const CATEGORY: &'static str = "Account";
    type Event = AccountEvent;
    type Command = i64;
    type Error = std::convert::Infallible;
    fn apply(&mut self, AccountEvent::Deposited { amount, .. }: &AccountEvent) {
        self.balance += amount;
        self.movements += 1;
        self.largest = self.largest.max(*amount);
    }
    fn handle(&self, amount: i64) -> Result<Vec<AccountEvent>, Self::Error> {
        Ok(vec![AccountEvent::Deposited {
            amount,
            reference: format!("ref-{amount:>12}"),
        }])
    }
}

fn load(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), Options::default().with_durability(Durability::Buffered)).expect("open");
    let batch = |from: u64, to: u64| {
        (from..to).map(|i| EventData::new("Deposited", format!(r#"{{"amount":{i},"reference":"ref-{i:>12}"}}"#)))
    };
    for start in (0..EVENTS).step_by(1000) {
        for id in ["replay", "snap", "behind"] {
            let stream = format!("Account-{id}");
            store
                .append(&stream, ExpectedVersion::Any, batch(start, start + 1000))
                .expect("append");
        }
    }
    let repo = Repository::<Account>::new(store.clone(), JsonCodec);
    repo.snapshot("snap").expect("snapshot");
    store
        .save_snapshot(
            "Account-behind",
            EVENTS - 100,
            1,
            &serde_json::to_vec(&repo.load_at_version("behind", EVENTS - 100).expect("load").state).expect("json"),
        )
        .expect("snapshot");
    repo.execute("other", 1, CommandMetadata::new()).expect("command");

    let mut group = c.benchmark_group("load_10k_event_aggregate");
    group.bench_function("full_replay", |b| {
        b.iter(|| {
            let l = repo.load("replay").expect("load");
            assert_eq!((l.version, l.replayed), (EVENTS, EVENTS));
        })
    });
    group.bench_function("from_snapshot", |b| {
        b.iter(|| {
            let l = repo.load("snap").expect("load");
            assert_eq!((l.version, l.replayed), (EVENTS, 0));
        })
    });
    group.bench_function("snapshot_plus_100_events", |b| {
        b.iter(|| {
            let l = repo.load("behind").expect("load");
            assert_eq!((l.version, l.replayed), (EVENTS, 100));
        })
    });
    group.finish();

    // A snapshot load while another stream's snapshots (64 KiB each) are
    // saved in a loop: a save's write and sync, and the compactions they
    // cause, must not hold up loads of other streams.
    let mut group = c.benchmark_group("load_snapshot_during_saves_of_another_stream");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let saves = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        let saver = s.spawn(|| {
            let state = vec![7u8; 64 * 1024];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v = store
                    .append("Account-busy", ExpectedVersion::Any, batch(0, 1))
                    .expect("append")
                    .last_version;
                store.save_snapshot("Account-busy", v, 1, &state).expect("save");
                saves.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        // Measured only once saves are running (`cargo bench -- --test`
        // runs the loop once, in microseconds).
        while saves.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        group.bench_function("snapshot_only", |b| {
            b.iter(|| assert!(store.load_snapshot("Account-snap").snapshot.is_some()))
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        saver.join().expect("saver");
    });
    group.finish();
}

criterion_group!(benches, load);
criterion_main!(benches);
