//! Read throughput: one stream (10 / 1,000 / 100,000 events, both
//! directions), and all events in global order. Warm: the files are in the
//! page cache and every segment was verified once before measuring.

mod common;

use std::time::Duration;

use annal::{Durability, EventData, ExpectedVersion, Options, ReadAll, ReadStream, Store};
use common::{build, event};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const ALL_EVENTS: u64 = 1_000_000;

fn read_stream(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().with_durability(Durability::Buffered)).unwrap();
    for len in [10u64, 1_000, 100_000] {
        let name = format!("Long-{len}");
        let mut i = 0;
        while i < len {
            let n = 1000.min(len - i);
            let events: Vec<EventData> = (i..i + n).map(event).collect();
            store.append(&name, ExpectedVersion::Any, events).unwrap();
            // Interleave another stream so the stream is not contiguous.
            store.append("Noise-1", ExpectedVersion::Any, [event(i)]).unwrap();
            i += n;
        }
    }
    let mut group = c.benchmark_group("read_stream");
    group.measurement_time(Duration::from_secs(3));
    for len in [10u64, 1_000, 100_000] {
        let name = format!("Long-{len}");
        group.throughput(Throughput::Elements(len));
        for (dir_name, options) in [("forward", ReadStream::forward()), ("backward", ReadStream::backward())] {
            let check: usize = store
                .read_stream(&name, options.clone())
                .unwrap()
                .map(|e| e.unwrap().data().len())
                .sum();
            assert!(check > 0);
            group.bench_function(BenchmarkId::new(dir_name, len), |b| {
                b.iter(|| {
                    let mut bytes = 0usize;
                    for e in store.read_stream(&name, options.clone()).unwrap() {
                        bytes += e.unwrap().data().len();
                    }
                    bytes
                })
            });
        }
    }
    group.finish();
}

fn read_all(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), ALL_EVENTS);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    // Warm up: map, verify and page in every segment once.
    assert_eq!(store.read_all(ReadAll::forward()).unwrap().count() as u64, ALL_EVENTS);
    let mut group = c.benchmark_group("read_all");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(ALL_EVENTS));
    group.bench_function("forward_1M", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            for e in store.read_all(ReadAll::forward()).unwrap() {
                bytes += e.unwrap().data().len();
            }
            bytes
        })
    });
    group.finish();
}

criterion_group!(benches, read_stream, read_all);
criterion_main!(benches);
