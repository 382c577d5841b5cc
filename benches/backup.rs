//! Online backup of a 1M-event store (about 344 MB): every batch CRC-checked,
//! every file written and synced, the directory renamed into place.

mod common;

use std::time::Duration;

use annal::{Options, Store};
use common::build;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const EVENTS: u64 = 1_000_000;

fn backup(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    build(&path, EVENTS);
    let store = Store::open(&path, Options::default()).unwrap();
    let dest = dir.path().join("backup");
    let bytes = store.backup(&dest).unwrap().bytes;
    let mut group = c.benchmark_group("backup");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("1M_events", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_dir_all(&dest);
            },
            |()| store.backup(&dest).unwrap(),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, backup);
criterion_main!(benches);
