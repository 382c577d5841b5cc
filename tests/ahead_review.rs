//! Review of the zeros written ahead (log/ahead.rs): stress in buffered and
//! periodic modes, segments created on the spot, close right after a step.

mod common;

use std::time::Duration;

use annal::{Durability, EventData, ExpectedVersion, Options, ReadAll, Store};
use common::files::{assert_sealed_segments_end_at_their_data, segment_lens};

const SPARE_NAME: &str = "next-segment.tmp";

fn run(mode: Durability, block_spare: bool, rounds: u64, threads: usize) {
    for round in 0..rounds {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        if block_spare {
            std::fs::create_dir_all(dir.join(SPARE_NAME)).unwrap();
        }
        let opts = Options::default()
            .with_segment_size_bytes(6 << 20)
            .with_durability(mode);
        let store = Store::open(&dir, opts.clone()).unwrap();
        let per = 300 + (round * 37 % 400) as usize;
        std::thread::scope(|s| {
            for t in 0..threads {
                let store = &store;
                s.spawn(move || {
                    for i in 0..per {
                        let n = 1 + (i * 7 + t) % 40;
                        let events: Vec<EventData> = (0..n)
                            .map(|k| EventData::new("E", vec![((i + k + t) % 250) as u8 + 1; 200 + (k * 131) % 2000]))
                            .collect();
                        store.append(&format!("s-{t}"), ExpectedVersion::Any, events).unwrap();
                    }
                });
            }
        });
        let count = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap().len();
        store.close().unwrap();
        let lens = segment_lens(&dir);
        std::thread::sleep(Duration::from_millis(30));
        let after = segment_lens(&dir);
        assert_eq!(lens, after, "a file changed after close");
        assert_sealed_segments_end_at_their_data(&dir);
        let store = Store::open(&dir, opts.clone()).unwrap();
        let read = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
        assert_eq!(read.len(), count);
        for e in &read {
            let d = e.data();
            assert!(
                d.iter().all(|b| *b == d[0] && *b != 0),
                "event {} damaged",
                e.position()
            );
        }
        // Appends after a reopen of a file a stopped job extended.
        store
            .append(
                "after",
                ExpectedVersion::Any,
                (0..2000)
                    .map(|_| EventData::new("E", vec![9u8; 3000]))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        store.close().unwrap();
        assert_sealed_segments_end_at_their_data(&dir);
        let store = Store::open(&dir, opts).unwrap();
        assert_eq!(
            store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap().len(),
            count + 2000
        );
    }
}

#[test]
fn buffered_on_the_spot() {
    run(Durability::Buffered, true, 6, 3);
}

#[test]
fn periodic_on_the_spot() {
    run(Durability::Periodic(Duration::from_millis(1)), true, 6, 3);
}

#[test]
fn buffered_with_spares() {
    run(Durability::Buffered, false, 4, 2);
}

/// A full disk (SimFs capacity) in buffered mode: jobs of zeros fail or
/// succeed, `with_room` gives the spare's space back; whatever was
/// acknowledged reads back, sealed segments end at their data.
#[cfg(feature = "sim")]
#[test]
fn full_disk_with_jobs_keeps_acknowledged_data() {
    use annal::io::sim::SimFs;
    for seed in 0..12u64 {
        let fs = SimFs::new(seed);
        let opts = Options::default()
            .with_segment_size_bytes(4 << 20)
            .with_durability(Durability::Buffered);
        let store = Store::open_with(fs.clone(), "/db", opts.clone()).unwrap();
        fs.set_capacity(Some((9 << 20) + seed * 300_000));
        let mut acked = 0usize;
        for i in 0..4000usize {
            let events: Vec<EventData> = (0..1 + i % 9)
                .map(|k| EventData::new("E", vec![((i + k) % 250) as u8 + 1; 500 + (k * 97) % 1500]))
                .collect();
            let n = events.len();
            match store.append("s", ExpectedVersion::Any, events) {
                Ok(_) => acked += n,
                Err(_) => break,
            }
        }
        let read = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
        assert_eq!(read.len(), acked, "seed {seed}");
        let _ = store.close();
        fs.set_capacity(None);
        let store = Store::open_with(fs.clone(), "/db", opts).unwrap();
        let read = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
        assert!(read.len() >= acked, "seed {seed}: {} < {acked}", read.len());
        for e in &read {
            let d = e.data();
            assert!(
                d.iter().all(|b| *b == d[0] && *b != 0),
                "seed {seed}: event {} damaged",
                e.position()
            );
        }
    }
}
