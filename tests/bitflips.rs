//! Bit flips: every bit of every byte of a small store's files, flipped one
//! at a time, then the store opened and read.
//!
//! Whatever bit flips: no panic, and no event is ever returned with bytes
//! other than those written. A flip in the log is either harmless (unused
//! preallocated space) or reported as corruption naming the segment file
//! and offset, at open or when the damaged event is read. A flip in the
//! index file makes open rebuild the index from the log.
#![cfg(feature = "sim")]

mod sim_support;

use std::path::PathBuf;

use annal::io::sim::{SimFs, SimImage};
use annal::{Durability, Error, EventData, ExpectedVersion, Options, ReadAll, ReadStream, StartFrom, Store};
use sim_support::{Read, dir, read_everything};

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Sync)
        .with_segment_size_bytes(4096)
}

/// A closed store of a few events in two streams, as a disk image, and
/// the events it holds.
fn small_store() -> (SimImage, Vec<Read>) {
    let fs = SimFs::new(1);
    let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
    for i in 0..4u8 {
        let stream = if i % 2 == 0 { "Order-1" } else { "Order-2" };
        let events = (0..1 + i % 2).map(|k| {
            EventData::new("Placed", vec![i * 16 + k; 40 + usize::from(i)]).with_metadata(format!(r#"{{"n":{i}}}"#))
        });
        store.append(stream, ExpectedVersion::Any, events).expect("append");
    }
    let events = read_everything(&store);
    store.close().expect("close");
    (fs.durable_image(), events)
}

fn segment_path() -> PathBuf {
    dir().join("00000000000000000001.seg")
}

/// Opens a damaged image; checks every outcome allowed. Returns whether
/// the damage was reported (at open or on read).
fn open_damaged(image: &SimImage, original: &[Read]) -> bool {
    let fs = SimFs::from_image(image, 9);
    // No id window: open then reads no event of this small log, so the
    // reads below, filtered ones included, are what meet the damage.
    let store = match Store::open_with(fs, dir(), options().with_idempotency_window_events(0)) {
        Ok(store) => store,
        Err(Error::Corruption { file, .. }) => {
            assert_eq!(file, segment_path(), "corruption names the wrong file");
            return true;
        }
        Err(Error::UnsupportedVersion { .. }) => return true,
        Err(other) => panic!("damage surfaced as {other:?}"),
    };
    let mut reported = false;
    let mut seen = 0;
    // Reads whose filter turns every event away still read every record,
    // and report the same damage as a read that keeps them all.
    let filtered = match store
        .read_all(ReadAll::forward().event_type("Nothing"))
        .expect("read_all")
        .next()
    {
        None => false,
        Some(Err(Error::Corruption { .. })) => true,
        Some(Ok(e)) => panic!("a filtered read kept {e:?}"),
        Some(Err(other)) => panic!("damage surfaced on a filtered read as {other:?}"),
    };
    let mut subscription = store
        .subscribe_category("Nothing", StartFrom::Start)
        .expect("subscribe");
    // Nothing matches: the first call scans the whole log.
    let subscribed = match subscription.try_recv() {
        Ok(None) => false,
        Err(Error::Corruption { .. }) => true,
        Ok(Some(e)) => panic!("a category subscription delivered {e:?}"),
        Err(other) => panic!("damage surfaced in a subscription as {other:?}"),
    };
    let all = store.read_all(ReadAll::forward()).expect("read_all");
    for item in all {
        match item {
            Ok(e) => {
                let want = &original[e.position() as usize - 1];
                assert_eq!(
                    (e.id(), e.version(), e.stream(), e.event_type(), e.data(), e.metadata()),
                    (
                        want.id,
                        want.version,
                        want.written.stream.as_str(),
                        want.written.event_type.as_str(),
                        &want.written.data[..],
                        &want.written.metadata[..]
                    ),
                    "an event came back with other bytes than were written"
                );
                seen += 1;
            }
            Err(Error::Corruption { file, .. }) => {
                assert_eq!(file, segment_path());
                reported = true;
                break;
            }
            Err(other) => panic!("damage surfaced on read as {other:?}"),
        }
    }
    assert_eq!(filtered, reported, "a filtered read and a full one disagree on damage");
    assert_eq!(
        subscribed, reported,
        "a subscription and a full read disagree on damage"
    );
    for stream in ["Order-1", "Order-2"] {
        for item in store.read_stream(stream, ReadStream::backward()).expect("read_stream") {
            match item {
                Ok(e) => assert_eq!(e.data(), &original[e.position() as usize - 1].written.data[..]),
                Err(Error::Corruption { .. }) => reported = true,
                Err(other) => panic!("damage surfaced on read as {other:?}"),
            }
        }
    }
    assert!(
        reported || seen == original.len(),
        "events went missing without a report"
    );
    reported
}

#[test]
fn every_bit_flip_in_a_segment_is_harmless_or_reported() {
    let (image, original) = small_store();
    assert_eq!(original.len(), 6);
    let segment = image.files[&segment_path()].clone();
    // Where the written batches end: preallocated zeros follow.
    let data_end = segment.iter().rposition(|b| *b != 0).expect("data") + 1;
    let mut reported = 0;
    for at in 0..segment.len().min(data_end + 512) {
        for bit in 0..8 {
            let mut damaged = image.clone();
            let bytes = damaged.files.get_mut(&segment_path()).expect("segment");
            bytes[at] ^= 1 << bit;
            let outcome = std::panic::catch_unwind(|| open_damaged(&damaged, &original));
            match outcome {
                Ok(true) => {
                    assert!(at < data_end, "a flip in unused space at {at} was reported");
                    reported += 1;
                }
                Ok(false) => assert!(at >= data_end, "flip of bit {bit} at {at} went unnoticed"),
                Err(_) => panic!("flipping bit {bit} of byte {at} of the segment panicked"),
            }
        }
    }
    // Every flip in the header and the written batches is reported.
    assert_eq!(reported, data_end * 8);
}

#[test]
fn every_bit_flip_in_the_index_file_leads_to_a_rebuild() {
    let (image, original) = small_store();
    let index_path = dir().join("index");
    let index = image.files[&index_path].clone();
    for at in 0..index.len() {
        for bit in 0..8 {
            let mut damaged = image.clone();
            damaged.files.get_mut(&index_path).expect("index")[at] ^= 1 << bit;
            let fs = SimFs::from_image(&damaged, 9);
            let store = Store::open_with(fs, dir(), options())
                .unwrap_or_else(|e| panic!("flip of bit {bit} at {at} of the index file: open failed: {e}"));
            assert!(
                !store.recovery_report().index_loaded,
                "a damaged index file was trusted"
            );
            assert_eq!(read_everything(&store), original);
        }
    }
}

#[test]
fn cutting_files_short_is_harmless_or_reported() {
    let (image, original) = small_store();
    for path in [segment_path(), dir().join("index")] {
        let len = image.files[&path].len();
        for cut in 0..len {
            let mut damaged = image.clone();
            damaged.files.get_mut(&path).expect("file").truncate(cut);
            let outcome = std::panic::catch_unwind(|| open_damaged(&damaged, &original));
            assert!(outcome.is_ok(), "cutting {} at {cut} panicked", path.display());
        }
    }
}

/// Writes the fuzzers' seed corpus (`fuzz/seeds/<target>/`) from a small
/// store: `cargo test --release --features sim --test bitflips -- --ignored`.
#[test]
#[ignore = "writes the fuzz seed corpus"]
fn write_fuzz_seed_corpus() {
    let (image, _) = small_store();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let segment = &image.files[&segment_path()];
    let index = &image.files[&dir().join("index")];
    let data_end = segment.iter().rposition(|b| *b != 0).unwrap_or(0) + 1;
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("corpus file");
    };
    write("segment", "small-store", &segment[..data_end + 16]);
    write("batch_frame", "first-batch", &segment[64..data_end]);
    write("index_file", "small-store", index);
    write("recovery", "flip-segment", &[0, 100, 0, 0x10]);
    write("recovery", "flip-index", &[1, 90, 0, 0x01]);
    write("recovery", "cut-segment", &[0b1000_0010]);
    let fs = SimFs::new(5);
    let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
    store
        .append("S-1", ExpectedVersion::Any, [EventData::new("E", "x")])
        .expect("append");
    store.checkpoints().save("a", 1).expect("save");
    store.save_snapshot("S-1", 1, 1, br#"{"balance":7}"#).expect("snapshot");
    store.close().expect("close");
    let durable = fs.durable_image();
    write(
        "checkpoint_file",
        "two-names",
        &durable.files[&dir().join(annal::CHECKPOINTS_FILE_NAME)],
    );
    write(
        "snapshot_file",
        "small-file",
        &durable.files[&dir().join(annal::snapshot::file::FILE_NAME)],
    );
    let mut ops = 7u64.to_le_bytes().to_vec();
    ops.extend_from_slice(&[0, 10, 65, 20, 4, 0, 6, 0, 1, 30, 5, 0, 7, 3, 2, 200, 7, 9]);
    write("crash_ops", "mixed", &ops);
}

#[test]
fn every_bit_flip_in_the_checkpoints_file_is_reported_never_misread() {
    let fs = SimFs::new(5);
    let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
    for i in 0..3u8 {
        store
            .append("Order-1", ExpectedVersion::Any, [EventData::new("E", vec![i])])
            .expect("append");
    }
    let checkpoints = store.checkpoints();
    checkpoints.save("summary", 2).expect("save");
    checkpoints.save("search-index", 3).expect("save");
    let original = checkpoints.list().expect("list");
    store.close().expect("close");
    let image = fs.durable_image();
    let path = dir().join(annal::CHECKPOINTS_FILE_NAME);
    let bytes = image.files[&path].clone();
    let mut reported = 0;
    for at in 0..bytes.len() {
        for bit in 0..8 {
            let mut damaged = image.clone();
            damaged.files.get_mut(&path).expect("checkpoints")[at] ^= 1 << bit;
            let outcome = std::panic::catch_unwind(|| {
                let store = Store::open_with(SimFs::from_image(&damaged, 9), dir(), options()).expect("open");
                match store.checkpoints().list() {
                    Ok(map) => {
                        assert_eq!(map, original, "a damaged checkpoints file was misread");
                        false
                    }
                    Err(Error::Corruption { .. }) => true,
                    Err(other) => panic!("damage surfaced as {other:?}"),
                }
            });
            match outcome {
                Ok(true) => reported += 1,
                Ok(false) => {}
                Err(_) => panic!("flipping bit {bit} of byte {at} of the checkpoints file panicked"),
            }
        }
    }
    assert_eq!(reported, bytes.len() * 8, "some flips went unnoticed");
}
