//! Random operations and crashes against a model. The input is a seed and
//! a list of operations: appends, index saves, clean reopens, power losses
//! between appends, and power losses in the middle of an append. After
//! every reopen, the store must hold exactly the acknowledged events (plus,
//! after a crash in the middle of an append, that whole batch or none of
//! it), in order.
#![no_main]

use std::path::PathBuf;

use annal::io::sim::SimFs;
use annal::{Durability, EventData, ExpectedVersion, Options, ReadAll, Store};
use libfuzzer_sys::fuzz_target;

type Model = Vec<(String, Vec<u8>)>;

fn dir() -> PathBuf {
    PathBuf::from("/fuzz/store")
}

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Sync)
        .with_segment_size_bytes(4096)
        .with_index_checkpoint_bytes(4096)
}

fn contents(store: &Store<SimFs>) -> Model {
    store
        .read_all(ReadAll::forward())
        .expect("read_all")
        .map(|e| {
            let e = e.expect("read after recovery");
            (e.stream().to_string(), e.data().to_vec())
        })
        .collect()
}

fn batch(op: u8, len: u8) -> (String, Vec<EventData>, Model) {
    let stream = format!("S-{}", op % 4);
    let count = 1 + usize::from(op >> 6);
    let mut model = Vec::new();
    let events = (0..count)
        .map(|k| {
            let data = vec![len.wrapping_add(k as u8); usize::from(len) * 2];
            model.push((stream.clone(), data.clone()));
            EventData::new("E", data)
        })
        .collect();
    (stream, events, model)
}

fn reopen(fs: &SimFs, seed: u64) -> (SimFs, Store<SimFs>) {
    let image = fs.image().expect("crashed");
    let fs = SimFs::from_image(&image, seed);
    let store = Store::open_with(fs.clone(), dir(), options()).expect("reopen after a crash");
    (fs, store)
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 8 {
        return;
    }
    let seed = u64::from_le_bytes(input[..8].try_into().expect("8 bytes"));
    let mut fs = SimFs::new(seed);
    let mut store = Store::open_with(fs.clone(), dir(), options()).expect("open");
    let mut model: Model = Vec::new();
    let ops = &input[8..];
    for pair in ops.chunks_exact(2).take(64) {
        let (op, arg) = (pair[0], pair[1]);
        match op % 8 {
            0..=3 => {
                let (stream, events, written) = batch(op, arg);
                store.append(&stream, ExpectedVersion::Any, events).expect("append");
                model.extend(written);
            }
            4 => store.save_index().expect("save index"),
            5 => {
                store.close().expect("close");
                store = Store::open_with(fs.clone(), dir(), options()).expect("reopen");
                assert_eq!(contents(&store), model);
            }
            6 => {
                fs.crash_now();
                drop(store);
                (fs, store) = reopen(&fs, seed);
                assert_eq!(contents(&store), model);
            }
            _ => {
                // Power loss in the middle of an append (or just after).
                let (stream, events, written) = batch(op, arg);
                fs.crash_after(u64::from(arg % 16));
                let acked = store.append(&stream, ExpectedVersion::Any, events).is_ok();
                fs.crash_now();
                drop(store);
                (fs, store) = reopen(&fs, seed);
                let found = contents(&store);
                let mut with_batch = model.clone();
                with_batch.extend(written);
                if acked || found.len() > model.len() {
                    assert_eq!(found, with_batch, "an acknowledged or partial batch");
                    model = with_batch;
                } else {
                    assert_eq!(found, model);
                }
            }
        }
    }
});
