//! Recovery on damaged files: a small valid store, then the input's edits
//! (byte changes and a cut) to its segment or index file, then open and
//! read everything. Never a panic; never an event returned with bytes other
//! than those written; damage is reported as corruption or, for the index
//! file, repaired by a rebuild. A read-only open of the same files reaches
//! the same verdict (refused, or the same events) without a single
//! mutating call. An open whose read fails (EIO at a read or opening of
//! a file the input picks, once or from then on) fails naming it or
//! reaches the same verdict, and once the fault clears, the store opens as
//! it would have: a failed read never passes for damage or for an absent
//! file.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use annal::io::sim::{Fault, FaultError, OpKind, SimFs, SimImage};
use annal::{Durability, Error, EventData, ExpectedVersion, Options, ReadAll, ReadStream, Store};
use libfuzzer_sys::fuzz_target;

fn dir() -> PathBuf {
    PathBuf::from("/fuzz/store")
}

fn options() -> Options {
    Options::default()
        .with_durability(Durability::Sync)
        .with_segment_size_bytes(4096)
}

/// The pristine store and its events' (stream, data) by position.
fn pristine() -> &'static (SimImage, Vec<(String, Vec<u8>)>) {
    static STORE: OnceLock<(SimImage, Vec<(String, Vec<u8>)>)> = OnceLock::new();
    STORE.get_or_init(|| {
        let fs = SimFs::new(1);
        let store = Store::open_with(fs.clone(), dir(), options()).expect("open");
        let mut events = Vec::new();
        for i in 0..8u8 {
            let stream = format!("Order-{}", i % 3);
            let data = vec![i; 10 + usize::from(i) * 7];
            store
                .append(&stream, ExpectedVersion::Any, [EventData::new("E", data.clone())])
                .expect("append");
            events.push((stream, data));
        }
        store.close().expect("close");
        (fs.durable_image(), events)
    })
}

fuzz_target!(|input: &[u8]| {
    let (image, events) = pristine();
    let Some((&selector, edits)) = input.split_first() else {
        return;
    };
    let mut damaged = image.clone();
    let path = if selector & 1 == 0 {
        dir().join("00000000000000000001.seg")
    } else {
        dir().join("index")
    };
    let Some(file) = damaged.files.get_mut(&path) else {
        return;
    };
    for edit in edits.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([edit[0], edit[1]]));
        if let Some(b) = file.get_mut(at) {
            *b ^= edit[2];
        }
    }
    if selector & 2 != 0 && !file.is_empty() {
        let cut = usize::from(selector >> 2) * file.len() / 64;
        file.truncate(cut);
    }
    let ro_fs = SimFs::from_image(&damaged, 2);
    let read_only = match Store::open_with(ro_fs.clone(), dir(), options().with_read_only(true)) {
        Ok(store) => {
            let last = store.last_position();
            drop(store);
            Some(last)
        }
        Err(Error::Corruption { .. } | Error::UnsupportedVersion { .. }) => None,
        Err(other) => panic!("damage surfaced in a read-only open as {other:?}"),
    };
    assert_eq!(ro_fs.ops(), 0, "a read-only open made a mutating call");
    let verdict = |fs: &SimFs| match Store::open_with(fs.clone(), dir(), options()) {
        Ok(store) => Ok(store.last_position()),
        Err(e) => Err(e.to_string()),
    };
    let want = verdict(&SimFs::from_image(&damaged, 2));
    let pick = input.iter().fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let fault = Fault {
        kind: if pick & 16 != 0 { OpKind::Open } else { OpKind::Read },
        nth: pick % 8,
        error: FaultError::Eio,
        sticky: pick & 8 != 0,
    };
    let faulted = SimFs::from_image(&damaged, 2);
    faulted.inject(fault);
    match verdict(&faulted) {
        Err(e) if e.contains("injected") => {}
        got => assert_eq!(got, want, "{fault:?} changed the verdict"),
    }
    faulted.clear_faults();
    assert_eq!(verdict(&faulted), want, "{fault:?} changed the store");
    let store = match Store::open_with(SimFs::from_image(&damaged, 2), dir(), options()) {
        Ok(store) => store,
        Err(Error::Corruption { .. } | Error::UnsupportedVersion { .. }) => {
            assert_eq!(read_only, None, "a read-only open accepted what a writable one refused");
            return;
        }
        Err(other) => panic!("damage surfaced as {other:?}"),
    };
    assert_eq!(
        read_only,
        Some(store.last_position()),
        "read-only and writable opens disagree"
    );
    let check = |e: &annal::RecordedEvent| {
        let (stream, data) = &events[e.position() as usize - 1];
        assert_eq!((e.stream(), e.data()), (stream.as_str(), &data[..]), "an event changed");
    };
    for item in store.read_all(ReadAll::forward()).expect("read_all") {
        match item {
            Ok(e) => check(&e),
            Err(Error::Corruption { .. }) => break,
            Err(other) => panic!("damage surfaced on read as {other:?}"),
        }
    }
    for item in store
        .read_stream("Order-1", ReadStream::backward())
        .expect("read_stream")
    {
        match item {
            Ok(e) => check(&e),
            Err(Error::Corruption { .. }) => break,
            Err(other) => panic!("damage surfaced on read as {other:?}"),
        }
    }
});
