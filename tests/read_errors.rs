//! Read errors injected at each read (`read_exact_at`, `map`) and each
//! opening of a file that exists, one at a time, once and from then on:
//! in an open of a populated store, in the reads after it, and in a
//! snapshot compaction.
//!
//! A read that fails says nothing about the bytes it could not read, so:
//! - the caller gets an error naming the failed read, or the store reads
//!   what it needs some other way; a read that returns, returns the same
//!   events as without the fault;
//! - a failed read never passes for damage, an absent file or a file of
//!   another store: nothing is cut, started afresh or forgotten because
//!   of it. Once the fault clears, the store opens as it would have
//!   without it.
//!
//! In particular, the files that prove the log was durable up to a point
//! (the index file's header, a checkpoint, a snapshot) must be read before
//! damage at the log's end may be cut as a torn tail: an unread witness is
//! not a missing one.
#![cfg(feature = "sim")]

mod sim_support;

use annal::io::sim::{Fault, FaultError, OpKind, SimFs, SimImage};
use annal::{Error, EventData, ExpectedVersion, ReadStream, Store};
use sim_support::{Read, dir, flip_payload, snapshot_bytes, tiny_sync_options as options, try_read_everything};

/// A store on a simulated disk after a power loss: 60 events over five
/// streams and several segments (each event's data starts with
/// `payload-NNNNNN`, its position), the index file saved along the way, a checkpoint `p` at the
/// last position, and a snapshot of `Account-0` at its last version, which
/// is not the last event's stream.
fn populated() -> SimImage {
    populated_with(options())
}

/// [`populated`] opened with `options`.
fn populated_with(options: annal::Options) -> SimImage {
    let fs = SimFs::new(5);
    let store = Store::open_with(fs.clone(), dir(), options).expect("open");
    append_60(&store);
    store
        .checkpoints()
        .save("p", store.last_position())
        .expect("checkpoint");
    assert!(
        fs.files()
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .count()
            > 2
    );
    fs.durable_image()
}

/// The test options without index saves while the store is open: an
/// index file saved by the background thread after the last append (how
/// soon it runs depends on the machine) would prove the last batch
/// durable before the proof a test means to check.
fn no_index_saves() -> annal::Options {
    options().with_index_checkpoint_bytes(1 << 40)
}

/// Appends the 60 events, and saves the snapshot after the 41st.
fn append_60(store: &Store<SimFs>) {
    for i in 0..60u64 {
        let stream = format!("Account-{}", i % 5);
        let data = format!("payload-{:06} {}", store.last_position() + 1, "x".repeat(100));
        store
            .append(&stream, ExpectedVersion::Any, [EventData::new("Deposited", data)])
            .expect("append");
        if i == 40 {
            let version = store.stream_version("Account-0").expect("Account-0 has events");
            store
                .save_snapshot("Account-0", version, 1, &snapshot_bytes("Account-0", version))
                .expect("snapshot");
        }
    }
}

/// What the reads under test return: every event in order, each stream
/// forward, the checkpoint and the snapshot's version.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    all: Vec<Read>,
    streams: Vec<Vec<u64>>,
    checkpoint: Option<u64>,
    snapshot: Option<u64>,
}

/// Runs the reads; the first error is returned as text.
fn read_back(store: &Store<SimFs>) -> Result<Seen, String> {
    let all = try_read_everything(store).map_err(|e| e.to_string())?;
    let mut streams = Vec::new();
    for i in 0..5 {
        let positions = store
            .read_stream(&format!("Account-{i}"), ReadStream::forward())
            .map_err(|e| e.to_string())?
            .map(|e| e.map(|e| e.position()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        streams.push(positions);
    }
    let checkpoint = store.checkpoints().load("p").map_err(|e| e.to_string())?;
    let load = store.load_snapshot("Account-0");
    if let Some(issue) = load.issues.first() {
        return Err(format!("{issue:?}"));
    }
    Ok(Seen {
        all,
        streams,
        checkpoint,
        snapshot: load.snapshot.map(|s| s.version),
    })
}

/// Every fault to try after calls that made `counts` of each kind (as
/// [`SimFs::count`] gives them): each read and each open of a file that
/// exists failing with EIO, once and from then on.
fn every_fault(counts: impl Fn(OpKind) -> u64) -> Vec<Fault> {
    let mut faults = Vec::new();
    for kind in [OpKind::Read, OpKind::Open] {
        for nth in 0..counts(kind) {
            for sticky in [false, true] {
                faults.push(Fault {
                    kind,
                    nth,
                    error: FaultError::Eio,
                    sticky,
                });
            }
        }
    }
    faults
}

#[test]
fn a_read_error_is_reported_and_changes_nothing() {
    let image = populated();
    let fs = SimFs::from_image(&image, 1);
    let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
    let want = read_back(&store).expect("reads without a fault");
    assert_eq!(want.all.len(), 60);
    assert_eq!(want.checkpoint, Some(60));
    assert!(want.snapshot.is_some());
    drop(store);
    let faults = every_fault(|kind| fs.count(kind));
    assert!(faults.len() > 30, "only {} faults", faults.len());
    let mut failed_opens = 0;
    let mut failed_reads = 0;
    for fault in &faults {
        let fs = SimFs::from_image(&image, 1);
        fs.inject(*fault);
        match Store::open_with(fs.clone(), dir(), options()) {
            Ok(store) => match read_back(&store) {
                Ok(seen) => assert_eq!(seen, want, "{fault:?} failed unseen"),
                Err(e) => {
                    assert!(e.contains("injected"), "{fault:?}: unclear error: {e}");
                    failed_reads += 1;
                }
            },
            Err(e) => {
                assert!(matches!(e, Error::Io { .. }), "{fault:?} failed open as {e:?}");
                assert!(e.to_string().contains("injected"), "unclear error: {e}");
                failed_opens += 1;
            }
        }
        fs.clear_faults();
        let store = Store::open_with(fs, dir(), options())
            .unwrap_or_else(|e| panic!("{fault:?}: reopen after the fault failed: {e}"));
        let seen = read_back(&store).unwrap_or_else(|e| panic!("{fault:?}: reads after the fault failed: {e}"));
        assert_eq!(seen, want, "{fault:?} changed what the store holds");
    }
    assert!(
        failed_opens > 0 && failed_reads > 0,
        "{failed_opens} opens, {failed_reads} reads failed"
    );
    eprintln!(
        "{} faults; {failed_opens} opens and {failed_reads} later reads failed",
        faults.len()
    );
}

/// What opening a store and reading it back gives: what it holds, or
/// why it would not open.
fn outcome(image: &SimImage, fault: Option<Fault>) -> (SimFs, Result<Seen, String>) {
    let fs = SimFs::from_image(image, 1);
    if let Some(fault) = fault {
        fs.inject(fault);
    }
    let seen = match Store::open_with(fs.clone(), dir(), options()) {
        Ok(store) => read_back(&store),
        Err(e) => Err(e.to_string()),
    };
    (fs, seen)
}

/// Opens `image` with each read and each open of a file failing in turn,
/// once and from then on:
/// each open either fails naming the injected error or gives what a
/// fault-free open gives, and once the fault clears, the store opens as
/// a fault-free open of `image` would have. Returns the fault-free
/// outcome.
fn faults_change_nothing(image: &SimImage, what: &str) -> Result<Seen, String> {
    let (fs, want) = outcome(image, None);
    let faults = every_fault(|kind| fs.count(kind));
    assert!(faults.len() > 20, "{what}: only {} faults", faults.len());
    for fault in faults {
        let (fs, seen) = outcome(image, Some(fault));
        match seen {
            Err(e) if e.contains("injected") => {}
            seen => assert_eq!(seen, want, "{what}: {fault:?} failed unseen"),
        }
        fs.clear_faults();
        let seen = match Store::open_with(fs, dir(), options()) {
            Ok(store) => read_back(&store),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(seen, want, "{what}: {fault:?} changed the store");
    }
    want
}

/// Damage where the last event's record is: refused, for the reason
/// `proof` names, when something saved proves the event was durable.
fn refused_for(image: &SimImage, what: &str, proof: &str) {
    let mut damaged = image.clone();
    flip_payload(&mut damaged, 60);
    match faults_change_nothing(&damaged, what) {
        Ok(seen) => panic!("{what}: damage cut as a torn tail, {} events left", seen.all.len()),
        Err(e) => assert!(e.contains(proof), "{what}: {e}"),
    }
}

#[test]
fn an_unread_checkpoint_never_lets_damage_pass_for_a_torn_tail() {
    // A checkpoint at the last event's position.
    refused_for(&populated_with(no_index_saves()), "checkpoint", "checkpoint 'p' at 60");
}

#[test]
fn an_unread_snapshot_never_lets_damage_pass_for_a_torn_tail() {
    // A snapshot of the last event's stream at its version, and no
    // checkpoint.
    let fs = SimFs::new(5);
    let store = Store::open_with(fs.clone(), dir(), no_index_saves()).expect("open");
    append_60(&store);
    let version = store.stream_version("Account-4").expect("Account-4 has events");
    store
        .save_snapshot("Account-4", version, 1, &snapshot_bytes("Account-4", version))
        .expect("snapshot");
    refused_for(
        &fs.durable_image(),
        "snapshot",
        "a snapshot of 'Account-4' at version 12",
    );
}

#[test]
fn an_unread_index_file_never_lets_damage_pass_for_a_torn_tail() {
    // The index file saved at a clean close, its header past the damage.
    let fs = SimFs::new(5);
    let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
    append_60(&store);
    store.close().expect("close");
    refused_for(&fs.durable_image(), "index file", "index file");
}

#[test]
fn with_no_proof_a_damaged_last_batch_is_cut_read_errors_or_not() {
    let fs = SimFs::new(5);
    let store = Store::open_with(fs.clone(), dir(), no_index_saves()).expect("open");
    append_60(&store);
    let mut damaged = fs.durable_image();
    flip_payload(&mut damaged, 60);
    let seen = faults_change_nothing(&damaged, "no proof").expect("a torn tail is cut");
    assert_eq!(seen.all.len(), 59);
}

#[test]
fn an_unread_side_file_never_changes_which_segment_is_foreign() {
    // The last segment of another store put in this store's place: the
    // store's other files (index, checkpoints, snapshots) tell which
    // segments belong.
    let mut image = populated();
    let other = populated();
    let last = image
        .files
        .keys()
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .expect("segments")
        .clone();
    let stray = other.files.get(&last).expect("the other store has the segment").clone();
    image.files.insert(last, stray);
    match faults_change_nothing(&image, "foreign segment") {
        Ok(_) => panic!("a segment of another store was taken in"),
        Err(e) => assert!(e.contains("segment belongs to another store"), "{e}"),
    }
}

/// The newest snapshot of each of `streams`, as (version, data).
fn newest_snapshots(store: &Store<SimFs>, streams: &[&str]) -> Vec<Option<(u64, Vec<u8>)>> {
    streams
        .iter()
        .map(|s| store.load_snapshot(s).snapshot.map(|s| (s.version, s.data.to_vec())))
        .collect()
}

#[test]
fn a_read_error_during_compaction_drops_no_snapshot() {
    // Four streams with five snapshots each, two kept per stream: the
    // compaction copies the kept ones into a new file, reading each.
    let streams = ["A-1", "B-1", "C-1", "D-1"];
    let fs = SimFs::new(5);
    let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
    store.set_snapshot_options(
        annal::SnapshotOptions::default()
            .with_keep_per_stream(2)
            .with_compact_min_bytes(u64::MAX),
    );
    for version in 1..=5u64 {
        for s in streams {
            store
                .append(s, ExpectedVersion::Any, [EventData::new("E", "{}")])
                .expect("append");
            store
                .save_snapshot(s, version, 1, &snapshot_bytes(s, version))
                .expect("snapshot");
        }
    }
    store.close().expect("close");
    let image = fs.durable_image();
    let compacted = |fault: Option<Fault>| {
        let fs = SimFs::from_image(&image, 1);
        let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
        store.set_snapshot_options(annal::SnapshotOptions::default().with_keep_per_stream(2));
        let before = [OpKind::Read, OpKind::Open].map(|kind| fs.count(kind));
        if let Some(fault) = fault {
            fs.inject(fault);
        }
        let result = store.compact_snapshots();
        let during = [OpKind::Read, OpKind::Open].map(|kind| fs.count(kind));
        ([during[0] - before[0], during[1] - before[1]], result, fs, store)
    };
    let (calls, result, _, store) = compacted(None);
    result.expect("compaction");
    let want = newest_snapshots(&store, &streams);
    assert!(
        want.iter().all(|s| s.as_ref().is_some_and(|(v, _)| *v == 5)),
        "{want:?}"
    );
    drop(store);
    assert!(calls[0] >= 8, "the compaction read {} times", calls[0]);
    // Faults counted from the injection, which comes after the open.
    let faults = every_fault(|kind| if kind == OpKind::Read { calls[0] } else { calls[1] });
    for fault in faults {
        let (_, result, fs, store) = compacted(Some(fault));
        if let Err(e) = result {
            assert!(e.to_string().contains("injected"), "{fault:?}: {e}");
        }
        fs.clear_faults();
        assert_eq!(newest_snapshots(&store, &streams), want, "{fault:?} lost a snapshot");
        // The snapshots one older than the newest are kept too.
        for s in streams {
            let older = store.load_snapshot_at(s, 4).snapshot.map(|s| s.version);
            assert_eq!(older, Some(4), "{fault:?}: {s}'s snapshot at 4 lost");
        }
        drop(store);
        let store = Store::open_with(fs, dir(), options()).expect("reopen");
        assert_eq!(newest_snapshots(&store, &streams), want, "{fault:?}, reopened");
    }
}
