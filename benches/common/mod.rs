//! Shared bench fixtures: events shaped like the peers' comparison
//! (200 bytes of JSON data, 67 bytes of JSON metadata, 10,000 streams).
#![allow(dead_code)]

use annal::{EventData, ExpectedVersion, Options, Store};

pub const STREAMS: u64 = 10_000;

/// 200 bytes of JSON data and 67 bytes of JSON metadata.
pub fn event(i: u64) -> EventData {
    let mut data = format!(r#"{{"order":{i:>12},"customer":"C-{:>8}","sku":"SKU-{:>6}","qty":{:>4},"note":""#, i % 99_991, i % 997, i % 13);
    while data.len() < 198 {
        data.push('x');
    }
    data.push_str("\"}");
    let mut metadata = format!(r#"{{"$correlationId":"{:032}","user":""#, i);
    while metadata.len() < 65 {
        metadata.push('u');
    }
    metadata.push_str("\"}");
    debug_assert_eq!((data.len(), metadata.len()), (200, 67));
    EventData::new("OrderPlaced", data).with_metadata(metadata)
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
