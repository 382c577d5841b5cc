//! A review of the snapshot append guard (a snapshot past its stream's
//! last event refuses appends at open): its chunked walk of the snapshot
//! file (`file::walk_records`: 64 KiB chunks of small records, the first
//! bytes only of large ones; the fuzz target's inputs are mostly too small
//! to reach the second) is checked against `file::scan` as the oracle, on
//! random files of mixed record sizes around the walk's switch points,
//! with damaged records, bad magic and torn tails; after every refusal,
//! `repair` clears it.

mod common;

use annal::snapshot::file;
use annal::{Error, EventData, ExpectedVersion, Options, Store, Uuid};
use common::rng::Rng;

const STREAMS: [&str; 6] = ["S-0", "S-1", "S-2", "S-3", "S-4", "S-9"];

fn have(s: &str) -> u64 {
    match s {
        "S-9" => 0,
        _ => 3,
    }
}

fn data_len(rng: &mut Rng) -> usize {
    match rng.below(6) {
        0 | 1 => rng.below(200) as usize,
        2 => 5_000 + rng.below(4_000) as usize,
        3 => 8_000 + rng.below(400) as usize,
        4 => 9_000 + rng.below(70_000) as usize,
        _ => 60_000 + rng.below(200_000) as usize,
    }
}

#[test]
fn the_guard_agrees_with_scan_on_random_snapshot_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Store::open(&path, Options::default()).unwrap();
    for s in &STREAMS[..5] {
        for _ in 0..3 {
            store
                .append(s, ExpectedVersion::Any, [EventData::new("E", "{}")])
                .unwrap();
        }
    }
    let id = store.store_id();
    store.close().unwrap();
    let (mut refused_n, mut allowed_n) = (0, 0);
    for seed in 0..160u64 {
        let mut rng = Rng::new(seed);
        let mut bytes = file::encode_header(id).to_vec();
        let n = 1 + rng.below(25);
        for _ in 0..n {
            let stream = STREAMS[rng.below(6) as usize];
            let h = have(stream);
            let version = if rng.below(10) == 0 {
                h + 1 + rng.below(3)
            } else {
                1 + rng.below(h.max(1))
            };
            let data = vec![b'x'; data_len(&mut rng)];
            let mut rec = file::encode_record(stream, version, Uuid::from_u128(7), 1, &data).unwrap();
            match rng.below(12) {
                // Damaged payload (CRC mismatch), magic intact.
                0 => {
                    let last = rec.len() - 1;
                    rec[last] ^= 0x55;
                }
                // Bad magic.
                1 => rec[0] ^= 1,
                _ => {}
            }
            bytes.extend_from_slice(&rec);
        }
        // Sometimes a torn tail.
        if rng.below(4) == 0 {
            let cut = rng.below(300) as usize;
            let keep = bytes.len().saturating_sub(cut).max(file::FILE_HEADER_BYTES);
            bytes.truncate(keep);
        }
        let oracle = file::scan(&bytes).records.iter().any(|r| r.version > have(&r.stream));
        std::fs::write(path.join(file::FILE_NAME), &bytes).unwrap();
        let store = Store::open(&path, Options::default()).unwrap();
        let r = store.append("Z-1", ExpectedVersion::Any, [EventData::new("E", "{}")]);
        let refused = matches!(r, Err(Error::Corruption { .. }));
        assert!(r.is_ok() || refused, "seed {seed}: {r:?}");
        assert_eq!(refused, oracle, "seed {seed}: guard {refused}, scan says {oracle}");
        store.close().unwrap();
        if refused {
            refused_n += 1;
            // `annal repair` must always clear the refusal.
            annal::tools::repair(&path).unwrap_or_else(|e| panic!("seed {seed}: repair: {e}"));
            let store = Store::open(&path, Options::default()).unwrap();
            let r = store.append("Z-1", ExpectedVersion::Any, [EventData::new("E", "{}")]);
            assert!(r.is_ok(), "seed {seed}: after repair: {r:?}");
            store.close().unwrap();
        } else {
            allowed_n += 1;
        }
    }
    assert!(refused_n > 10 && allowed_n > 10, "{refused_n} {allowed_n}");
}
