//! Shared bench fixtures: events shaped like the peers' comparison
//! (200 bytes of JSON data, 67 bytes of JSON metadata, 10,000 streams).
#![allow(dead_code)]

use annal::{EventData, ExpectedVersion, Options, Store};

pub const STREAMS: u64 = 10_000;

/// 200 bytes of JSON data and 67 bytes of JSON metadata. Payloads come
/// from a pool built once, so that benches measure the store rather than
/// string formatting; each call makes a new event (new id).
pub fn event(i: u64) -> EventData {
    static POOL: std::sync::OnceLock<Vec<(bytes::Bytes, bytes::Bytes)>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| (0..1024).map(payload).collect());
    let (data, metadata) = &pool[(i % 1024) as usize];
    EventData::new("OrderPlaced", data.clone()).with_metadata(metadata.clone())
}

fn payload(i: u64) -> (bytes::Bytes, bytes::Bytes) {
    let mut data = format!(
        r#"{{"order":{i:>12},"customer":"C-{:>8}","sku":"SKU-{:>6}","qty":{:>4},"note":""#,
        i % 99_991,
        i % 997,
        i % 13
    );
    while data.len() < 198 {
        data.push('x');
    }
    data.push_str("\"}");
    let mut metadata = format!(r#"{{"$correlationId":"{:032}","user":""#, i);
    while metadata.len() < 65 {
        metadata.push('u');
    }
    metadata.push_str("\"}");
    assert_eq!((data.len(), metadata.len()), (200, 67));
    (data.into(), metadata.into())
}

/// A file of `size` zero bytes, written and synced (size and blocks
/// included), for the fdatasync baselines: overwriting inside it and
/// syncing flushes data only, as annal's preallocated segments do.
pub fn preallocated_file(path: &std::path::Path, size: u64) -> std::fs::File {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    for at in (0..size).step_by(zeros.len()) {
        file.write_all_at(&zeros, at).unwrap();
    }
    file.sync_all().unwrap();
    file
}

pub fn stream_name(i: u64) -> String {
    format!("Order-{}", i % STREAMS)
}

/// A store holding `events` events spread over 10,000 streams, written in
/// batches of 1,000 in buffered mode (fast to build), then closed.
pub fn build(path: &std::path::Path, events: u64) {
    let store = Store::open(path, Options::default().with_durability(annal::Durability::Buffered)).unwrap();
    let mut i = 0;
    while i < events {
        let n = 1000.min(events - i);
        // Consecutive events go to consecutive streams, as a busy app
        // would; 1,000 < 10,000 streams, so each append names a stream once.
        let batch: Vec<annal::StreamAppend> = (i..i + n)
            .map(|k| annal::StreamAppend::new(stream_name(k), ExpectedVersion::Any, [event(k)]))
            .collect();
        store.append_multi(&batch).unwrap();
        i += n;
    }
    store.close().unwrap();
}
