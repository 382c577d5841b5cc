//! Checkpoints: load/save/remove/list semantics, refusal of positions
//! ahead of the log, and crash safety on the simulated file system: after
//! a power loss at a random call while checkpoints are being saved, every
//! checkpoint holds its old or its new value (never garbage) and is never
//! ahead of the recovered log, in every durability mode.

use std::collections::BTreeMap;

use annal::{Error, EventData, ExpectedVersion, Options, Store};

#[test]
fn save_load_remove_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, Options::default()).unwrap();
    let cps = store.checkpoints();
    assert_eq!(cps.load("orders").unwrap(), None);
    assert!(cps.list().unwrap().is_empty());
    // Nothing in the log yet: only 0 is acceptable.
    assert!(matches!(cps.save("orders", 1), Err(Error::InvalidInput(_))));
    cps.save("orders", 0).unwrap();
    for i in 0..5 {
        store
            .append("Order-1", ExpectedVersion::Any, [EventData::new("E", format!("{i}"))])
            .unwrap();
    }
    cps.save("orders", 3).unwrap();
    cps.save("totals", 5).unwrap();
    assert!(matches!(cps.save("totals", 6), Err(Error::InvalidInput(_))));
    assert!(matches!(cps.save("", 1), Err(Error::InvalidInput(_))));
    for name in [String::new(), "n".repeat(annal::CHECKPOINT_NAME_BYTES_MAX + 1)] {
        assert!(matches!(cps.load(&name), Err(Error::InvalidInput(_))));
        assert!(matches!(cps.remove(&name), Err(Error::InvalidInput(_))));
    }
    assert_eq!(cps.load("orders").unwrap(), Some(3));
    assert_eq!(cps.load("totals").unwrap(), Some(5));
    cps.remove("totals").unwrap();
    cps.remove("never-saved").unwrap();
    assert_eq!(cps.load("totals").unwrap(), None);
    store.close().unwrap();
    assert!(matches!(cps.load("orders"), Err(Error::Closed)));

    let store = Store::open(&path, Options::default()).unwrap();
    let cps = store.checkpoints();
    let expect: BTreeMap<String, u64> = [("orders".to_string(), 3)].into();
    assert_eq!(cps.list().unwrap(), expect);

    // A damaged file is reported as corruption, never read as values.
    drop(cps);
    store.close().unwrap();
    let file = path.join(annal::CHECKPOINTS_FILE_NAME);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let store = Store::open(&path, Options::default()).unwrap();
    assert!(matches!(
        store.checkpoints().load("orders"),
        Err(Error::Corruption { .. })
    ));
}

#[cfg(feature = "sim")]
mod sim {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::time::Duration;

    use annal::Durability;
    use annal::io::sim::{SimFs, SimRng};

    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/sim/store")
    }

    fn options(rng: &mut SimRng) -> Options {
        let durability = match rng.below(3) {
            0 => Durability::Sync,
            1 => Durability::Buffered,
            _ => Durability::Periodic(Duration::from_millis(1 + rng.below(5))),
        };
        Options::default()
            .with_durability(durability)
            .with_segment_size_bytes(4096 + rng.below(2) * 8192)
    }

    /// What is known of one checkpoint: its last acknowledged value and a
    /// save that was in flight at the crash.
    #[derive(Default, Clone, Copy, Debug)]
    struct Known {
        acked: Option<u64>,
        in_flight: Option<Option<u64>>,
    }

    fn run_seed(seed: u64) -> bool {
        let mut rng = SimRng::new(seed);
        let options = options(&mut rng);
        let fs = SimFs::new(seed);
        let store = Store::open_with(fs.clone(), dir(), options.clone()).expect("open");
        let names = ["a", "b", "c"];
        let mut known: HashMap<&str, Known> = HashMap::new();
        fs.crash_after(rng.below(120));
        'work: for _ in 0..60 {
            let events = 1 + rng.below(4);
            for _ in 0..events {
                let data: Vec<u8> = (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect();
                let stream = format!("S-{}", rng.below(3));
                if store
                    .append(&stream, ExpectedVersion::Any, [EventData::new("E", data)])
                    .is_err()
                {
                    break 'work;
                }
            }
            let name = names[rng.below(3) as usize];
            let last = store.last_position();
            let k = known.entry(name).or_default();
            if rng.chance(10) {
                k.in_flight = Some(None);
                match store.checkpoints().remove(name) {
                    Ok(()) => {
                        *k = Known {
                            acked: None,
                            in_flight: None,
                        }
                    }
                    Err(_) => break,
                }
            } else {
                let position = last - rng.below(last.min(5) + 1);
                k.in_flight = Some(Some(position));
                match store.checkpoints().save(name, position) {
                    Ok(()) => {
                        *k = Known {
                            acked: Some(position),
                            in_flight: None,
                        }
                    }
                    Err(Error::InvalidInput(why)) => panic!("seed {seed}: refused {position} <= {last}: {why}"),
                    Err(_) => break,
                }
            }
        }
        fs.crash_now();
        drop(store);
        let image = fs.image().expect("crashed");
        if !image.dirs.contains(&dir()) {
            return false;
        }
        let fs = SimFs::from_image(&image, seed);
        let store = Store::open_with(fs, dir(), options).expect("reopen after a crash");
        let last = store.last_position();
        let cps = store.checkpoints();
        let list = cps
            .list()
            .unwrap_or_else(|e| panic!("seed {seed}: checkpoints unreadable: {e}"));
        for name in names {
            let k = known.get(name).copied().unwrap_or_default();
            let got = list.get(name).copied();
            assert!(
                got == k.acked || Some(got) == k.in_flight,
                "seed {seed}: checkpoint {name} is {got:?}, expected {:?} or {:?}",
                k.acked,
                k.in_flight
            );
            if let Some(p) = got {
                assert!(
                    p <= last,
                    "seed {seed}: checkpoint {name} at {p} is ahead of the log ({last})"
                );
            }
        }
        assert!(list.keys().all(|n| names.contains(&n.as_str())));
        // The checkpoint store works after recovery.
        cps.save("a", last).expect("save after recovery");
        assert_eq!(cps.load("a").unwrap(), Some(last));
        true
    }

    #[test]
    fn crash_while_saving_checkpoints_leaves_old_or_new_values_never_ahead_of_the_log() {
        let seeds: u64 = std::env::var("ANNAL_CHECKPOINT_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(400);
        let checked = (0..seeds).filter(|&s| run_seed(s)).count();
        assert!(
            checked as u64 > seeds / 2,
            "only {checked} seeds got far enough to check"
        );
    }
}

/// Once a store is closed through one handle, snapshot and checkpoint
/// saves through another fail with `Closed` and write nothing, as appends
/// do; reads, snapshot loads included, still work. (Close also waits for
/// a save already in progress, and a save checks again under the lock
/// close takes, so none writes once close has returned.)
#[test]
fn saves_through_a_clone_fail_once_the_store_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    store
        .append("Order-1", ExpectedVersion::Any, [EventData::new("E", "{}")])
        .unwrap();
    store.save_snapshot("Order-1", 1, 1, b"state").unwrap();
    let clone = store.clone();
    let cps = store.checkpoints();
    store.close().unwrap();
    let snapshot_file = std::fs::read(dir.path().join(annal::snapshot::file::FILE_NAME)).unwrap();
    assert!(matches!(
        clone.save_snapshot("Order-1", 1, 1, b"later"),
        Err(Error::Closed)
    ));
    assert!(matches!(clone.compact_snapshots(), Err(Error::Closed)));
    assert!(matches!(cps.save("orders", 1), Err(Error::Closed)));
    assert_eq!(
        std::fs::read(dir.path().join(annal::snapshot::file::FILE_NAME)).unwrap(),
        snapshot_file
    );
    assert!(!dir.path().join(annal::CHECKPOINTS_FILE_NAME).exists());
    assert!(clone.load_snapshot("Order-1").snapshot.is_some());
    assert_eq!(clone.read_position(1).unwrap().unwrap().version(), 1);
}
