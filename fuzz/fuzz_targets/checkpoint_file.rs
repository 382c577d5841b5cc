//! Arbitrary bytes as a store's `checkpoints` file: loading checkpoints
//! never panics nor allocates beyond the input; the store either reads
//! checkpoints that are within its log or reports corruption.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use annal::io::sim::{SimFs, SimImage};
use annal::{CHECKPOINTS_FILE_NAME, Durability, Error, EventData, ExpectedVersion, Options, Store};
use libfuzzer_sys::fuzz_target;

fn dir() -> PathBuf {
    PathBuf::from("/fuzz/store")
}

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Sync)
        .with_segment_size_bytes(4096)
}

/// A small store with two checkpoints saved.
fn pristine() -> &'static SimImage {
    static STORE: OnceLock<SimImage> = OnceLock::new();
    STORE.get_or_init(|| {
        let fs = SimFs::new(1);
        let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
        for i in 0..3u8 {
            store
                .append("S-1", ExpectedVersion::Any, [EventData::new("E", vec![i])])
                .expect("append");
        }
        store.checkpoints().save("a", 1).expect("save");
        store.checkpoints().save("b", 3).expect("save");
        store.close().expect("close");
        fs.durable_image()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut image = pristine().clone();
    image.files.insert(dir().join(CHECKPOINTS_FILE_NAME), data.to_vec());
    let store = Store::open_with(SimFs::from_image(&image, 2), dir(), options()).expect("open");
    match store.checkpoints().list() {
        Ok(map) => {
            for position in map.values() {
                assert!(
                    *position <= store.last_position(),
                    "a checkpoint ahead of the log was accepted"
                );
            }
        }
        Err(Error::Corruption { .. } | Error::UnsupportedVersion { .. }) => {}
        Err(other) => panic!("a bad checkpoints file surfaced as {other:?}"),
    }
    let _ = store.checkpoints().load("a");
});
