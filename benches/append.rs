//! Append throughput: batch sizes, durability modes, writer threads.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use annal::{Durability, ExpectedVersion, Options, Store};
use common::{event, stream_name};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn durable_batches(c: &mut Criterion) {
    let mut group = c.benchmark_group("append/durable/1_writer");
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    for batch in [1u64, 10, 100] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let mut i = 0u64;
        group.throughput(Throughput::Elements(batch));
        group.bench_function(BenchmarkId::new("events_per_append", batch), |b| {
            b.iter(|| {
                let events: Vec<_> = (i..i + batch).map(event).collect();
                store.append(&stream_name(i), ExpectedVersion::Any, events).unwrap();
                i += batch;
            })
        });
    }
    group.finish();
}

/// The machine's own ceiling for one-sync-per-append: overwrite 335 bytes
/// (one event's record) inside a preallocated, synced file, then
/// fdatasync. annal's durable single-writer figure is measured against it.
/// The same with 32,800 bytes (one append of 100 such events) gives the
/// ceiling for 100 events per append.
fn fdatasync_baseline(c: &mut Criterion) {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let size = 64u64 << 20;
    let file = common::preallocated_file(&dir.path().join("prealloc"), size);
    let mut offset = 0u64;
    let mut group = c.benchmark_group("baseline");
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    for (events, bytes) in [(1u64, 335usize), (100, 32_800)] {
        let record = vec![7u8; bytes];
        group.throughput(Throughput::Elements(events));
        group.bench_function(format!("prealloc_write_{bytes}B_fdatasync"), |b| {
            b.iter(|| {
                file.write_all_at(&record, offset).unwrap();
                file.sync_data().unwrap();
                offset = (offset + record.len() as u64) % (size - record.len() as u64);
            })
        });
    }
    group.finish();
}

fn modes(c: &mut Criterion) {
    let mut group = c.benchmark_group("append/mode/1_writer/1_event");
    group.throughput(Throughput::Elements(1));
    for (name, durability) in [
        ("buffered", Durability::Buffered),
        ("periodic_10ms", Durability::Periodic(Duration::from_millis(10))),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default().with_durability(durability)).unwrap();
        let mut i = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                store.append(&stream_name(i), ExpectedVersion::Any, [event(i)]).unwrap();
                i += 1;
            })
        });
    }
    group.finish();
}

/// `threads` writers, each appending single events; time for `iters`
/// appends per thread.
fn threaded(store: &Arc<Store>, threads: u64, iters: u64) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..iters {
                    let n = t * 1_000_000_000 + i;
                    store.append(&stream_name(n), ExpectedVersion::Any, [event(n)]).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}

fn writers(c: &mut Criterion) {
    let mut group = c.benchmark_group("append/durable/1_event");
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    for threads in [1u64, 4, 16] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), Options::default()).unwrap());
        group.throughput(Throughput::Elements(threads));
        group.bench_function(BenchmarkId::new("writers", threads), |b| {
            b.iter_custom(|iters| threaded(&store, threads, iters))
        });
    }
    group.finish();
}

fn buffered_writers(c: &mut Criterion) {
    let mut group = c.benchmark_group("append/buffered/1_event");
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    for threads in [1u64, 4, 16] {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default().with_durability(Durability::Buffered);
        let store = Arc::new(Store::open(dir.path(), options).unwrap());
        group.throughput(Throughput::Elements(threads));
        group.bench_function(BenchmarkId::new("writers", threads), |b| {
            b.iter_custom(|iters| threaded(&store, threads, iters))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    fdatasync_baseline,
    durable_batches,
    modes,
    writers,
    buffered_writers
);
criterion_main!(benches);
