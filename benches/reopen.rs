//! Reopen time of a 1M-event store: after a clean close (index file
//! current), with the index file behind by about 64 MiB of log (as a crash
//! leaves it between two background index saves), and with no index file
//! (full rebuild from the log).

mod common;

use std::path::Path;
use std::time::Duration;

use annal::{Durability, ExpectedVersion, Options, Store, StreamAppend};
use common::{build, event, stream_name};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const EVENTS: u64 = 1_000_000;
/// About 64 MiB of log with these events (~335 bytes each on disk).
const BEHIND: u64 = 200_000;

fn reopen(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean");
    build(&clean, EVENTS);

    // The stale case: build a prefix, keep its (then current) index file,
    // append the rest, and put the old index file back before each open.
    let stale = dir.path().join("stale");
    build(&stale, EVENTS - BEHIND);
    let old_index = dir.path().join("old_index");
    std::fs::copy(stale.join("index"), &old_index).unwrap();
    {
        let store = Store::open(&stale, Options::default().with_durability(Durability::Buffered)).unwrap();
        for start in (EVENTS - BEHIND..EVENTS).step_by(1000) {
            let batch: Vec<StreamAppend> = (start..start + 1000)
                .map(|k| StreamAppend::new(stream_name(k), ExpectedVersion::Any, [event(k)]))
                .collect();
            store.append_multi(&batch).unwrap();
        }
        store.close().unwrap();
    }
    let restore_stale = || std::fs::copy(&old_index, stale.join("index")).unwrap();
    restore_stale();
    {
        let store = Store::open(&stale, Options::default()).unwrap();
        let r = store.recovery_report();
        assert!(r.index_loaded && r.replayed_events == BEHIND, "{r:?}");
        eprintln!(
            "stale index: replays {} events, {} bytes of log",
            r.replayed_events, r.replayed_bytes
        );
    }

    let mut group = c.benchmark_group("reopen_1M");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.bench_function("clean", |b| {
        b.iter_batched(|| (), |()| open(&clean), BatchSize::PerIteration);
    });
    group.bench_function("stale_index_64MiB", |b| {
        b.iter_batched(
            || {
                restore_stale();
            },
            |()| open(&stale),
            BatchSize::PerIteration,
        );
    });
    group.bench_function("no_index", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_file(clean.join("index"));
            },
            |()| open(&clean),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

/// Opens the store; the caller's drop (outside the timed region) closes it.
fn open(path: &Path) -> Store {
    Store::open(path, Options::default()).unwrap()
}

criterion_group!(benches, reopen);
criterion_main!(benches);
