//! Shared by the simulated-file-system tests: a ledger of what was
//! appended and acknowledged, and the checks run after a crash or fault.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use annal::io::sim::{SimFs, SimImage};
use annal::{ReadAll, Store, StreamAppend, Uuid};
use parking_lot::Mutex;

/// Waits until the store reports its spare segment made, for `limit` at
/// the most.
pub fn wait_for_spare_made(store: &Store<SimFs>, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    while store.stats().spare_segment_bytes == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The store directory on the simulated disk.
pub fn dir() -> PathBuf {
    PathBuf::from("/sim/store")
}

/// Durable mode with 4 KiB segments and an index save every 4 KiB of log:
/// small workloads roll segments and save the index file often.
pub fn tiny_sync_options() -> annal::Options {
    annal::Options::default()
        .with_durability(annal::Durability::Sync)
        .with_segment_size_bytes(4096)
        .with_index_checkpoint_bytes(4096)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub stream: String,
    pub event_type: String,
    pub data: Vec<u8>,
    pub metadata: Vec<u8>,
}

#[derive(Clone, Default)]
pub struct Ledger {
    /// Every event ever handed to an append, by id.
    pub attempted: HashMap<Uuid, Written>,
    /// Every batch handed to an append, as its ids.
    pub batches: Vec<Vec<Uuid>>,
    /// Acknowledged events: id -> (stream, version, position).
    pub acked: HashMap<Uuid, (String, u64, u64)>,
    /// Events whose append returned, durable or not: id -> (stream,
    /// version, position). A process crash loses none of them.
    pub returned: HashMap<Uuid, (String, u64, u64)>,
    /// Checkpoint values handed to a save, by name.
    pub checkpoints_attempted: HashMap<String, HashSet<u64>>,
    /// The last acknowledged checkpoint value, by name.
    pub checkpoints_acked: HashMap<String, u64>,
    /// The highest acknowledged snapshot version, by stream.
    pub snapshots_acked: HashMap<String, u64>,
}

/// The bytes the workloads save as the snapshot of `stream` at `version`.
pub fn snapshot_bytes(stream: &str, version: u64) -> Vec<u8> {
    format!("{stream}@{version}").into_bytes()
}

/// Checks checkpoints and snapshots after recovery: each checkpoint holds
/// a value that was saved, no older than the last acknowledged one, never
/// past the log; each stream's newest snapshot is at least as new as the
/// last acknowledged one, within the stream, with the bytes saved for it.
pub fn check_side_files(store: &Store<SimFs>, ledger: &Ledger) {
    let checkpoints = store.checkpoints().list().expect("checkpoints readable after recovery");
    for (name, acked) in &ledger.checkpoints_acked {
        let value = checkpoints
            .get(name)
            .unwrap_or_else(|| panic!("acknowledged checkpoint {name} lost"));
        assert!(value >= acked, "checkpoint {name} went back from {acked} to {value}");
    }
    for (name, value) in &checkpoints {
        assert!(
            *value <= store.last_position(),
            "checkpoint {name} = {value} is ahead of the log"
        );
        let saved = ledger
            .checkpoints_attempted
            .get(name)
            .is_some_and(|s| s.contains(value));
        assert!(saved, "checkpoint {name} holds {value}, never saved");
    }
    for (stream, acked) in &ledger.snapshots_acked {
        let load = store.load_snapshot(stream);
        let snapshot = load
            .snapshot
            .unwrap_or_else(|| panic!("acknowledged snapshot of {stream} lost"));
        assert!(snapshot.version >= *acked, "snapshot of {stream} went back");
        assert!(
            Some(snapshot.version) <= store.stream_version(stream),
            "snapshot of {stream} ahead of the log"
        );
        assert_eq!(&snapshot.data[..], &snapshot_bytes(stream, snapshot.version)[..]);
    }
}

/// One event as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    pub position: u64,
    pub version: u64,
    pub id: Uuid,
    pub written: Written,
}

pub fn record_attempt(ledger: &Mutex<Ledger>, appends: &[StreamAppend]) {
    let mut l = ledger.lock();
    let mut ids = Vec::new();
    for a in appends {
        for e in &a.events {
            ids.push(e.id());
            l.attempted.insert(
                e.id(),
                Written {
                    stream: a.stream.clone(),
                    event_type: e.event_type().to_string(),
                    data: e.data().to_vec(),
                    metadata: e.metadata().to_vec(),
                },
            );
        }
    }
    l.batches.push(ids);
}

/// Every event in global order; the first error when a read fails.
pub fn try_read_everything(store: &Store<SimFs>) -> annal::Result<Vec<Read>> {
    store
        .read_all(ReadAll::forward())?
        .map(|e| {
            e.map(|e| Read {
                position: e.position(),
                version: e.version(),
                id: e.id(),
                written: Written {
                    stream: e.stream().to_string(),
                    event_type: e.event_type().to_string(),
                    data: e.data().to_vec(),
                    metadata: e.metadata().to_vec(),
                },
            })
        })
        .collect()
}

/// Every event in global order (after recovery, where reads must not fail).
pub fn read_everything(store: &Store<SimFs>) -> Vec<Read> {
    try_read_everything(store).expect("reading every event after recovery")
}

/// Checks the store's contents against what was appended and acknowledged.
pub fn check(store: &Store<SimFs>, ledger: &Ledger) -> Vec<Read> {
    let events = read_everything(store);
    let mut versions: HashMap<&str, u64> = HashMap::new();
    let mut seen = HashSet::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "positions have a gap");
        let v = versions.entry(e.written.stream.as_str()).or_insert(0);
        *v += 1;
        assert_eq!(e.version, *v, "versions of {} have a gap", e.written.stream);
        assert!(seen.insert(e.id), "event id {} appears twice", e.id);
        let attempted = ledger.attempted.get(&e.id).expect("an event nobody appended");
        assert_eq!(
            &e.written, attempted,
            "event {} differs from what was appended",
            e.position
        );
    }
    assert_eq!(store.last_position(), events.len() as u64);
    let mut names: Vec<&str> = versions.keys().copied().collect();
    names.sort_unstable();
    assert_eq!(store.stream_names(), names);
    for (stream, v) in &versions {
        assert_eq!(store.stream_version(stream), Some(*v));
    }
    let by_id: HashMap<Uuid, &Read> = events.iter().map(|e| (e.id, e)).collect();
    for (id, (stream, version, position)) in &ledger.acked {
        let e = by_id
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged event {id} at {position} lost"));
        assert_eq!(
            (&e.written.stream, e.version, e.position),
            (stream, *version, *position)
        );
    }
    for batch in &ledger.batches {
        let present = batch.iter().filter(|id| by_id.contains_key(id)).count();
        assert!(present == 0 || present == batch.len(), "a batch is partly there");
    }
    events
}

pub fn record_attempt_into(ledger: &mut Ledger, appends: &[StreamAppend]) {
    let shared = Mutex::new(std::mem::take(ledger));
    record_attempt(&shared, appends);
    *ledger = shared.into_inner();
}

/// Flips one bit in the first copy, in any file of `image`, of the text
/// `payload-NNNNNN` (the event data the damage tests give the event at
/// position NNNNNN), inside the record's CRC-checked bytes.
pub fn flip_payload(image: &mut SimImage, position: u64) {
    let needle = format!("payload-{position:06}");
    let hit = image.files.values_mut().find_map(|bytes| {
        let at = bytes.windows(needle.len()).position(|w| w == needle.as_bytes())?;
        bytes[at + 3] ^= 0x20;
        Some(())
    });
    assert!(hit.is_some(), "no event {position}");
}

/// Opens `image` with `options` and no id window, so that open reads no
/// event and damage is met by the reads under test; `None` when open
/// reported damage all the same (it checks the log's last batch).
pub fn open_without_id_window(image: &SimImage, options: annal::Options) -> Option<Store<SimFs>> {
    match Store::open_with(
        SimFs::from_image(image, 2),
        dir(),
        options.with_idempotency_window_events(0),
    ) {
        Ok(store) => Some(store),
        Err(annal::Error::Corruption { .. }) => None,
        Err(other) => panic!("damage surfaced at open as {other:?}"),
    }
}

/// Asserts that `got` is `want`, naming the first difference rather than
/// printing thousands of positions.
#[track_caller]
pub fn same(got: &[u64], want: &[u64], what: &str) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(g, w)| g != w)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: {} positions against {} wanted; first difference at index {at}: {:?} against {:?}",
            got.len(),
            want.len(),
            got.get(at),
            want.get(at)
        );
    }
}

/// The positions a subscription delivers before damage, asked until it
/// has reported the damage `errors` times: each time its position stays
/// before `damaged` (the damaged batch's first position). Panics when it
/// has nothing more to deliver first (the damage hidden).
#[track_caller]
pub fn deliveries_before_damage(
    sub: &mut annal::Subscription<SimFs>,
    errors: usize,
    damaged: u64,
    what: &str,
) -> Vec<u64> {
    let mut got = Vec::new();
    let mut seen = 0;
    while seen < errors {
        match sub.try_recv() {
            Ok(Some(e)) => got.push(e.position()),
            Ok(None) => panic!("{what}: damage hidden; delivered up to {:?}", got.last()),
            Err(annal::Error::Corruption { .. }) => {
                seen += 1;
                assert!(
                    sub.position() < damaged,
                    "{what}: position {} past the damage",
                    sub.position()
                );
            }
            Err(other) => panic!("{what}: {other:?}"),
        }
    }
    got
}
