//! Crash simulation: seeded random workloads on the simulated file system,
//! cut by a power loss at a random call, then reopened and checked.
//!
//! Each seed: a store on `SimFs` with tiny segments and frequent index
//! saves, in durable mode (three seeds in four) or in the periodic or
//! buffered mode, where an append counts as acknowledged once a `sync` or
//! a checkpoint save made after it returned; 1 to 3 writer threads doing
//! single- and multi-stream batch appends with every kind of expected
//! version, retries with the same event ids, and explicit index saves; a power loss just before a random
//! mutating call, which keeps a random mix of the unsynced bytes (none, a
//! prefix, a torn write, a garbled sector). Then, on the disk image:
//! - the store opens (a crash is never reported as corruption);
//! - every acknowledged event is there, byte for byte, at its version and
//!   position;
//! - every batch is all there or not at all, and nothing is there that was
//!   never appended, and no event id appears twice;
//! - positions and per-stream versions are gapless;
//! - the index loaded from the index file equals one rebuilt from the log;
//! - an open whose read fails at a random read or file opening (EIO, once
//!   or from then on) fails naming it, or opens; either way, once the fault clears, the
//!   store opens with the same events and side files as without it;
//! - the store takes new appends, and survives a second crash during or
//!   right after recovery.
//!
//! A second test kills the process at a random call instead (the page
//! cache kept), opens the store again on the same machine, checks that
//! nothing whose append returned is lost, then cuts the power and checks
//! that everything that open published survived. A third does the same
//! after an I/O error injected at a random call, in every mode.
//!
//! `ANNAL_CRASH_SEEDS=N` runs N seeds (default 2,000), starting at
//! `ANNAL_CRASH_SEED_START` (default 0); `ANNAL_CRASH_SEED=S` runs seed S
//! alone. A failure names its seed. Seeds with one writer replay exactly
//! (but in periodic mode, whose sync thread runs on a timer); with
//! several, the workload and crash point replay but thread interleaving
//! may differ.
#![cfg(feature = "sim")]

use std::sync::Arc;

mod sim_support;

use annal::io::sim::{Fault, FaultError, OpKind, SimFs, SimImage, SimRng};
use annal::{Durability, Error, EventData, ExpectedVersion, Options, Store, StreamAppend};
use parking_lot::Mutex;
use sim_support::{
    Ledger, check, check_side_files, dir, read_everything, record_attempt, record_attempt_into, snapshot_bytes,
};

/// The store's options, and whether they are durable mode.
fn options(rng: &mut SimRng) -> (Options, bool) {
    // Mostly durable mode; a quarter of the seeds run the modes whose
    // appends are durable once a `sync` (or a checkpoint save) returns.
    let durability = match rng.below(8) {
        0 => Durability::Buffered,
        1 => Durability::Periodic(std::time::Duration::from_millis(1 + rng.below(3))),
        _ => Durability::Sync,
    };
    let options = Options::default()
        .with_durability(durability)
        .with_segment_size_bytes(4096 + rng.below(3) * 8192)
        .with_index_checkpoint_bytes(2048 + rng.below(16384));
    (options, durability == Durability::Sync)
}

/// An append's events as the ledger records an acknowledged one: id, then
/// stream, version and position.
type Placed = (annal::Uuid, (String, u64, u64));

/// Records appends as acknowledged (durable).
fn acknowledge(ledger: &Mutex<Ledger>, placed: impl IntoIterator<Item = Placed>) {
    let mut l = ledger.lock();
    for (id, entry) in placed {
        // A retry acknowledged twice reports the same place.
        if let Some(before) = l.acked.insert(id, entry.clone()) {
            assert_eq!(before, entry, "a retry returned another result");
        }
    }
}

fn stream_name(rng: &mut SimRng) -> String {
    let category = ["Order", "Cart", "User"][rng.below(3) as usize];
    format!("{category}-{}", rng.below(5))
}

fn random_event(rng: &mut SimRng) -> EventData {
    // Mostly small events, now and then one that fills a tiny segment.
    let len = if rng.chance(5) {
        1500 + rng.below(2000)
    } else {
        rng.below(200)
    };
    let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    let mut e = EventData::new(["Created", "Changed", "Removed"][rng.below(3) as usize], data);
    if rng.chance(30) {
        e = e.with_metadata(format!(r#"{{"k":{}}}"#, rng.below(1000)));
    }
    e
}

fn random_append(rng: &mut SimRng, store: &Store<SimFs>) -> Vec<StreamAppend> {
    let streams = if rng.chance(20) { 2 + rng.below(2) } else { 1 };
    let mut appends: Vec<StreamAppend> = Vec::new();
    for _ in 0..streams {
        let stream = stream_name(rng);
        if appends.iter().any(|a| a.stream == stream) {
            continue;
        }
        let expected = match rng.below(10) {
            0..=3 => ExpectedVersion::Any,
            4..=6 => match store.stream_version(&stream) {
                Some(v) => ExpectedVersion::Exact(v),
                None => ExpectedVersion::NoStream,
            },
            7 => ExpectedVersion::NoStream,
            8 => ExpectedVersion::StreamExists,
            _ => ExpectedVersion::Exact(rng.below(4)),
        };
        let most = if rng.chance(10) { 12 } else { 3 };
        let count = 1 + rng.below(most);
        let events: Vec<EventData> = (0..count).map(|_| random_event(rng)).collect();
        appends.push(StreamAppend::new(stream, expected, events));
    }
    appends
}

/// One writer thread. Returns when its appends are done or the machine is
/// gone.
fn writer(seed: u64, store: Store<SimFs>, ledger: Arc<Mutex<Ledger>>, appends: u64, durable: bool) {
    let mut rng = SimRng::new(seed);
    let mut previous: Option<Vec<StreamAppend>> = None;
    let checkpoint_name = format!("projection-{seed}");
    // Outside durable mode: this writer's appends that returned, not yet
    // covered by a sync it made (a `sync`, or a checkpoint save, which
    // syncs the log up to the position it names).
    let mut unsynced: Vec<Placed> = Vec::new();
    for _ in 0..appends {
        if !durable && rng.chance(10) {
            if store.sync().is_err() {
                return;
            }
            acknowledge(&ledger, unsynced.drain(..));
            continue;
        }
        if rng.chance(4) {
            if store.save_index().is_err() {
                return;
            }
            continue;
        }
        if rng.chance(5) {
            // A checkpoint at the current end of the log.
            let position = store.last_position();
            ledger
                .lock()
                .checkpoints_attempted
                .entry(checkpoint_name.clone())
                .or_default()
                .insert(position);
            if store.checkpoints().save(&checkpoint_name, position).is_err() {
                return;
            }
            ledger
                .lock()
                .checkpoints_acked
                .insert(checkpoint_name.clone(), position);
            // Every append of this writer so far is at or before it.
            acknowledge(&ledger, unsynced.drain(..));
            continue;
        }
        if rng.chance(5) {
            // A snapshot of a stream at its current version.
            let stream = stream_name(&mut rng);
            let Some(version) = store.stream_version(&stream) else {
                continue;
            };
            if store
                .save_snapshot(&stream, version, 1, &snapshot_bytes(&stream, version))
                .is_err()
            {
                return;
            }
            let mut l = ledger.lock();
            let acked = l.snapshots_acked.entry(stream).or_insert(0);
            *acked = (*acked).max(version);
            continue;
        }
        let batch = match previous.take() {
            Some(p) if rng.chance(15) => p, // a retry, same ids
            _ => random_append(&mut rng, &store),
        };
        if batch.is_empty() {
            continue;
        }
        record_attempt(&ledger, &batch);
        match store.append_multi(&batch) {
            Ok(results) => {
                let mut placed = Vec::new();
                for (a, r) in batch.iter().zip(&results) {
                    assert_eq!(r.last_version - r.first_version + 1, a.events.len() as u64);
                    for (i, e) in a.events.iter().enumerate() {
                        let i = i as u64;
                        placed.push((e.id(), (a.stream.clone(), r.first_version + i, r.first_position + i)));
                    }
                }
                ledger.lock().returned.extend(placed.iter().cloned());
                if durable {
                    acknowledge(&ledger, placed);
                } else {
                    unsynced.extend(placed);
                }
            }
            Err(Error::WrongExpectedVersion { .. } | Error::IdempotencyConflict { .. }) => {}
            Err(_) => return, // power loss: the store is poisoned from now on
        }
        previous = Some(batch);
    }
}

/// Runs `writers` writer threads of `appends` steps each on `store`, and
/// waits for them (they stop early once the machine or process is gone).
fn run_writers(
    seed: u64,
    store: &Store<SimFs>,
    ledger: &Arc<Mutex<Ledger>>,
    writers: u64,
    appends: u64,
    durable: bool,
) {
    let threads: Vec<_> = (0..writers)
        .map(|t| {
            let (store, ledger) = (store.clone(), ledger.clone());
            let seed = seed.wrapping_mul(31).wrapping_add(t);
            std::thread::spawn(move || writer(seed, store, ledger, appends, durable))
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread panicked");
    }
}

/// `store`, opened on the same machine after a kill or an I/O error,
/// published `recovered`: all of it counts as durable from now on. Cuts
/// the power; the next open must hold it, and everything else
/// acknowledged.
fn survives_power_loss(
    fs: &SimFs,
    store: Store<SimFs>,
    seed: u64,
    options: &Options,
    mut ledger: Ledger,
    recovered: &[sim_support::Read],
) {
    for e in recovered {
        ledger
            .acked
            .insert(e.id, (e.written.stream.clone(), e.version, e.position));
    }
    fs.crash_now();
    drop(store);
    let (_fs, store) = reopen(&fs.image().expect("crashed"), seed, options);
    check(&store, &ledger);
    check_side_files(&store, &ledger);
}

fn reopen(image: &SimImage, seed: u64, options: &Options) -> (SimFs, Store<SimFs>) {
    let fs = SimFs::from_image(image, seed);
    let store = match Store::open_with(fs.clone(), dir(), options.clone()) {
        Ok(s) => s,
        Err(e) => panic!("reopen after a crash failed: {e}"),
    };
    (fs, store)
}

/// What one seed did, to show the simulation exercises something.
#[derive(Default)]
struct Tally {
    acked: usize,
    recovered: usize,
    unacked_recovered: usize,
    index_loaded: usize,
    side_files_acked: usize,
    /// Opens that failed for an injected read fault.
    read_fault_failed_open: usize,
}

fn run_seed(seed: u64) -> Tally {
    let mut tally = Tally::default();
    let mut rng = SimRng::new(seed);
    let (options, durable) = options(&mut rng);
    let fs = SimFs::new(seed);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let writers = 1 + rng.below(3);
    let appends = 5 + rng.below(30);

    let crash_in_open = rng.chance(5);
    if crash_in_open {
        fs.crash_after(rng.below(12));
    }
    if let Ok(store) = Store::open_with(fs.clone(), dir(), options.clone()) {
        if !crash_in_open {
            fs.crash_after(rng.below(writers * appends * 5 + 10));
        }
        run_writers(seed, &store, &ledger, writers, appends, durable);
        fs.crash_now();
        drop(store); // closing a crashed store fails quietly
    }
    let image = fs.image().expect("crashed");
    let ledger = ledger.lock();
    if !image.dirs.contains(&dir()) {
        return tally;
    }

    // Recovery, and the index as loaded equals the index rebuilt.
    let (fs1, store) = reopen(&image, seed, &options);
    let recovered = check(&store, &ledger);
    check_side_files(&store, &ledger);
    let unchanging = [OpKind::Read, OpKind::Open].map(|kind| fs1.count(kind));
    tally.acked = ledger.acked.len();
    tally.recovered = recovered.len();
    tally.unacked_recovered = recovered.iter().filter(|e| !ledger.acked.contains_key(&e.id)).count();
    tally.index_loaded = usize::from(store.recovery_report().index_loaded);
    tally.side_files_acked = ledger.checkpoints_acked.len() + ledger.snapshots_acked.len();
    drop(store);
    let mut no_index = image.clone();
    no_index.files.remove(&dir().join("index"));
    let (_fs2, rebuilt) = reopen(&no_index, seed, &options);
    assert!(!rebuilt.recovery_report().index_loaded);
    assert_eq!(read_everything(&rebuilt), recovered, "index file and log disagree");
    for name in rebuilt.stream_names() {
        assert!(rebuilt.stream_version(&name).is_some());
    }
    drop(rebuilt);

    // A read (or a file's opening) that fails during recovery changes
    // nothing: the store's open fails naming it, or opens; once the fault
    // clears, the same events.
    let mut read_rng = SimRng::new(seed ^ 0x5EAD);
    let open = read_rng.chance(30);
    let fault = Fault {
        kind: if open { OpKind::Open } else { OpKind::Read },
        nth: read_rng.below(unchanging[usize::from(open)] + 1),
        error: FaultError::Eio,
        sticky: read_rng.chance(50),
    };
    let fs5 = SimFs::from_image(&image, seed);
    fs5.inject(fault);
    match Store::open_with(fs5.clone(), dir(), options.clone()) {
        Ok(store) => assert_eq!(read_everything(&store), recovered, "{fault:?} opened other events"),
        Err(e) => {
            assert!(e.to_string().contains("injected"), "{fault:?} failed the open as {e}");
            tally.read_fault_failed_open += 1;
        }
    }
    fs5.clear_faults();
    let store = Store::open_with(fs5, dir(), options.clone())
        .unwrap_or_else(|e| panic!("reopen after {fault:?} cleared failed: {e}"));
    assert_eq!(check(&store, &ledger), recovered, "{fault:?} changed the events");
    check_side_files(&store, &ledger);
    drop(store);

    // The recovered store takes appends; a second crash, during recovery
    // or the appends after it, loses nothing acknowledged either.
    let fs3 = SimFs::from_image(&image, seed ^ 0xA5A5);
    fs3.crash_after(rng.below(40));
    let mut ledger2 = ledger.clone();
    if let Ok(store) = Store::open_with(fs3.clone(), dir(), options.clone()) {
        let mut returned = Vec::new();
        for i in 0..3u64 {
            let e = EventData::new("After", i.to_le_bytes().to_vec());
            let batch = [StreamAppend::new("After-1", ExpectedVersion::Any, [e])];
            record_attempt_into(&mut ledger2, &batch);
            match store.append_multi(&batch) {
                Ok(r) => {
                    let id = batch[0].events[0].id();
                    returned.push((id, ("After-1".to_string(), r[0].first_version, r[0].first_position)));
                }
                Err(_) => break,
            }
        }
        // Outside durable mode they are acknowledged by a sync.
        if durable || store.sync().is_ok() {
            ledger2.acked.extend(returned);
        }
        fs3.crash_now();
    }
    let image3 = fs3.image().expect("crashed");
    let (_fs4, store) = reopen(&image3, seed, &options);
    check(&store, &ledger2);
    check_side_files(&store, &ledger2);
    tally
}

/// One seed's workload on a fresh simulated machine: a store open on it,
/// and the shape of the writers that will append to it.
struct Machine {
    rng: SimRng,
    options: Options,
    durable: bool,
    fs: SimFs,
    ledger: Arc<Mutex<Ledger>>,
    writers: u64,
    appends: u64,
    store: Store<SimFs>,
}

impl Machine {
    /// The machine of `seed`; `salt` tells the simulations apart.
    fn new(seed: u64, salt: u64) -> Machine {
        let mut rng = SimRng::new(seed ^ salt);
        let (options, durable) = options(&mut rng);
        let fs = SimFs::new(seed);
        let writers = 1 + rng.below(3);
        let appends = 5 + rng.below(30);
        let store = Store::open_with(fs.clone(), dir(), options.clone()).expect("open");
        Machine {
            rng,
            options,
            durable,
            fs,
            ledger: Arc::default(),
            writers,
            appends,
            store,
        }
    }

    /// Runs the writers, drops the store, calls `resume`, then opens the
    /// store again on the same machine (its page cache as the writers left
    /// it) and checks it against what was acknowledged. Then
    /// [`survives_power_loss`]. Returns how many events that open found.
    fn run_then_reopen(self, seed: u64, resume: impl FnOnce(&SimFs)) -> usize {
        let Machine {
            options,
            durable,
            fs,
            ledger,
            writers,
            appends,
            store,
            ..
        } = self;
        run_writers(seed, &store, &ledger, writers, appends, durable);
        drop(store);
        resume(&fs);
        let ledger = ledger.lock().clone();
        let store = Store::open_with(fs.clone(), dir(), options.clone())
            .unwrap_or_else(|e| panic!("open on the same machine failed: {e}"));
        let recovered = check(&store, &ledger);
        check_side_files(&store, &ledger);
        let by_id: std::collections::HashMap<annal::Uuid, &sim_support::Read> =
            recovered.iter().map(|e| (e.id, e)).collect();
        // With no power loss yet, nothing whose append returned is gone
        // (in the periodic and buffered modes too).
        for (id, (stream, version, position)) in &ledger.returned {
            let e = by_id
                .get(id)
                .unwrap_or_else(|| panic!("event {id} at {position}, returned before, lost"));
            assert_eq!(
                (&e.written.stream, e.version, e.position),
                (stream, *version, *position)
            );
        }
        let found = recovered.len();
        survives_power_loss(&fs, store, seed, &options, ledger, &recovered);
        found
    }
}

/// A process killed (SIGKILL) at a random call while the machine goes
/// on: the next process opens the page cache as the dead one left it.
/// Nothing whose append returned is lost, in any mode (a process crash
/// loses nothing), and what that open publishes is durable: a power loss
/// right after it loses none of it. Returns the events the open found.
fn run_kill_seed(seed: u64) -> usize {
    let mut machine = Machine::new(seed, 0x6B69_6C6C);
    let calls = machine.writers * machine.appends * 5 + 10;
    machine.fs.kill_process_after(machine.rng.below(calls));
    machine.run_then_reopen(seed, SimFs::revive)
}

/// An I/O error (EIO) injected at a random write, sync or start of
/// write-back: the store fails stop; then the next process opens the page
/// cache the failed one left (where a failed write-back's pages are clean
/// but still readable), and a power loss follows. Nothing whose append
/// returned is lost before the power loss, and everything the open
/// published survives it: it never publishes bytes that no sync wrote.
/// Returns whether the fault was hit.
fn run_fault_seed(seed: u64) -> bool {
    use annal::io::sim::{Fault, FaultError, OpKind};
    let mut machine = Machine::new(seed, 0x0045_494F);
    let kind = [OpKind::Sync, OpKind::Write, OpKind::Writeback][machine.rng.below(3) as usize];
    let nth = machine.rng.below(machine.writers * machine.appends);
    let before = machine.fs.count(kind);
    machine.fs.inject(Fault {
        kind,
        nth,
        error: FaultError::Eio,
        sticky: false,
    });
    let mut hit = false;
    machine.run_then_reopen(seed, |fs| {
        hit = fs.count(kind) > before + nth;
        fs.clear_faults();
    });
    hit
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn crash_at_random_points_loses_nothing_acknowledged() {
    let seeds: Vec<u64> = match env_u64("ANNAL_CRASH_SEED") {
        Some(seed) => vec![seed],
        None => {
            let start = env_u64("ANNAL_CRASH_SEED_START").unwrap_or(0);
            let count = env_u64("ANNAL_CRASH_SEEDS").unwrap_or(2000);
            (start..start + count).collect()
        }
    };
    let total = seeds.len();
    let mut sum = Tally::default();
    for seed in seeds {
        match std::panic::catch_unwind(|| run_seed(seed)) {
            Ok(t) => {
                sum.acked += t.acked;
                sum.recovered += t.recovered;
                sum.unacked_recovered += t.unacked_recovered;
                sum.index_loaded += t.index_loaded;
                sum.side_files_acked += t.side_files_acked;
                sum.read_fault_failed_open += t.read_fault_failed_open;
            }
            Err(_) => panic!("crash simulation failed for seed {seed}; replay with ANNAL_CRASH_SEED={seed}"),
        }
    }
    eprintln!(
        "{total} crash seeds passed: {} events acknowledged, {} recovered ({} of them unacknowledged \
         but whole batches), index file loaded in {} recoveries, {} acknowledged checkpoints and snapshots checked, \
         {} opens failed by an injected read fault",
        sum.acked,
        sum.recovered,
        sum.unacked_recovered,
        sum.index_loaded,
        sum.side_files_acked,
        sum.read_fault_failed_open
    );
    assert!(sum.acked > 0 || total < 20, "the workload acknowledged nothing");
}

#[test]
fn killed_processes_lose_nothing_returned_and_the_next_open_publishes_only_durable_events() {
    let start = env_u64("ANNAL_CRASH_SEED_START").unwrap_or(0);
    let count = env_u64("ANNAL_KILL_SEEDS").unwrap_or(500);
    let mut found = 0;
    for seed in start..start + count {
        match std::panic::catch_unwind(|| run_kill_seed(seed)) {
            Ok(n) => found += n,
            Err(_) => panic!("kill simulation failed for seed {seed}"),
        }
    }
    eprintln!("{count} kill seeds passed: {found} events found by the opens after the kills");
    assert!(found > 0 || count < 20, "the workload wrote nothing before the kills");
}

#[test]
fn after_an_io_error_the_next_open_publishes_only_durable_events() {
    let start = env_u64("ANNAL_CRASH_SEED_START").unwrap_or(0);
    let count = env_u64("ANNAL_FAULT_SEEDS").unwrap_or(500);
    let mut hit = 0;
    for seed in start..start + count {
        match std::panic::catch_unwind(|| run_fault_seed(seed)) {
            Ok(true) => hit += 1,
            Ok(false) => {}
            Err(_) => panic!("I/O error simulation failed for seed {seed}"),
        }
    }
    eprintln!("{count} I/O error seeds passed, {hit} of them poisoned the store");
    assert!(hit * 4 >= count, "only {hit} of {count} seeds hit their I/O error");
}

#[test]
fn the_simulated_disk_really_loses_unsynced_appends() {
    // Guard against a simulation that keeps everything: in buffered mode,
    // unsynced appends must be lost by some crashes.
    let mut lost = 0;
    for seed in 0..50 {
        let fs = SimFs::new(seed);
        let options = Options::default().with_durability(Durability::Buffered);
        let store = Store::open_with(fs.clone(), dir(), options.clone()).expect("open");
        for i in 0..20u64 {
            store
                .append(
                    "S-1",
                    ExpectedVersion::Any,
                    [EventData::new("E", i.to_le_bytes().to_vec())],
                )
                .expect("append");
        }
        fs.crash_now();
        drop(store);
        let (_fs, store) = reopen(&fs.image().expect("crashed"), seed, &options);
        if store.last_position() < 20 {
            lost += 1;
        }
    }
    assert!(lost > 10, "only {lost} of 50 crashes lost unsynced appends");
}
