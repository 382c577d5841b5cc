//! Reading one category of a store of many: `Store::read_category`,
//! `read_all` with a category filter (forward, backward, and the first or
//! the newest 20 events), pages of 100 events (`read_category` and
//! `read_all`, each from the last page's end), and a category
//! subscription catching up from the start (until `try_recv` finds
//! nothing more), and a dispatcher with one handler of the category
//! doing the same (until `wait_for` sees it at the log's end). 1M events over 10,000 streams in 10 categories (`Cat0-…` to `Cat9-…`), so a category
//! holds 100,000 events of 1,000 streams, interleaved with the others' in
//! the log. Warm: the files are in the page cache.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use annal::{Durability, ExpectedVersion, Options, ReadAll, StartFrom, Store, StreamAppend, SubscriptionFilter};
use common::event;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const EVENTS: u64 = 1_000_000;
const CATEGORY_EVENTS: u64 = EVENTS / 10;

fn stream(k: u64) -> String {
    format!("Cat{}-{}", k % 10, k % common::STREAMS)
}

fn build(path: &std::path::Path) {
    let store = Store::open(path, Options::default().with_durability(Durability::Buffered)).unwrap();
    for start in (0..EVENTS).step_by(1000) {
        let batch: Vec<StreamAppend> = (start..start + 1000)
            .map(|k| StreamAppend::new(stream(k), ExpectedVersion::Any, [event(k)]))
            .collect();
        store.append_multi(&batch).unwrap();
    }
    store.close().unwrap();
}

fn categories(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let store = Store::open(dir.path(), Options::default()).unwrap();
    // Warm up: map, verify and page in every segment once.
    assert_eq!(store.read_all(ReadAll::forward()).unwrap().count() as u64, EVENTS);
    let mut group = c.benchmark_group("category_of_100k_in_1M");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(CATEGORY_EVENTS));
    group.bench_function("read_category", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for e in store.read_category("Cat3", 0, None).unwrap() {
                n += e.unwrap().data().len() as u64;
            }
            n
        })
    });
    group.bench_function("read_all_category_filter", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for e in store.read_all(ReadAll::forward().category("Cat3")).unwrap() {
                n += e.unwrap().data().len() as u64;
            }
            n
        })
    });
    group.bench_function("read_all_category_filter_backward", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for e in store.read_all(ReadAll::backward().category("Cat3")).unwrap() {
                n += e.unwrap().data().len() as u64;
            }
            n
        })
    });
    group.bench_function("subscription_catch_up", |b| {
        b.iter(|| {
            let mut sub = store.subscribe_category("Cat3", StartFrom::Start).unwrap();
            let mut n = 0u64;
            while let Some(e) = sub.try_recv().unwrap() {
                n += 1;
                std::hint::black_box(e.data().len());
            }
            assert_eq!(n, CATEGORY_EVENTS);
            n
        })
    });
    group.bench_function("dispatcher_catch_up", |b| {
        b.iter(|| {
            let delivered = Arc::new(AtomicU64::new(0));
            let counter = delivered.clone();
            let dispatcher = store
                .dispatcher()
                .handler(
                    "cat3",
                    SubscriptionFilter::category("Cat3"),
                    StartFrom::Start,
                    move |e| {
                        counter.fetch_add(1, Ordering::Relaxed);
                        std::hint::black_box(e.data().len());
                        Ok(())
                    },
                )
                .unwrap()
                .start()
                .unwrap();
            assert!(dispatcher.wait_for(EVENTS, Duration::from_secs(600)));
            dispatcher.stop().unwrap();
            assert_eq!(delivered.load(Ordering::Relaxed), CATEGORY_EVENTS);
        })
    });
    group.finish();
    let mut group = c.benchmark_group("category_of_100k_in_1M_20_events");
    group.throughput(Throughput::Elements(20));
    group.bench_function("read_all_category_filter_limit_20", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for e in store.read_all(ReadAll::forward().category("Cat3").limit(20)).unwrap() {
                n += e.unwrap().data().len() as u64;
            }
            n
        })
    });
    group.bench_function("read_all_category_filter_backward_limit_20", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for e in store.read_all(ReadAll::backward().category("Cat3").limit(20)).unwrap() {
                n += e.unwrap().data().len() as u64;
            }
            n
        })
    });
    group.finish();
    // Paging through the category as an app would: pages of 100 events,
    // each read after the last page's last position (100 pages).
    let mut group = c.benchmark_group("category_of_100k_in_1M_pages_of_100");
    group.throughput(Throughput::Elements(100 * 100));
    group.bench_function("read_category", |b| {
        b.iter(|| {
            let mut after = 0;
            for _ in 0..100 {
                for e in store.read_category("Cat3", after, Some(100)).unwrap() {
                    after = e.unwrap().position();
                }
            }
            after
        })
    });
    group.bench_function("read_all_category_filter", |b| {
        b.iter(|| {
            let mut after = 0;
            for _ in 0..100 {
                let page = ReadAll::forward().from_position(after).category("Cat3").limit(100);
                for e in store.read_all(page).unwrap() {
                    after = e.unwrap().position();
                }
            }
            after
        })
    });
    group.finish();
}

criterion_group!(benches, categories);
criterion_main!(benches);
