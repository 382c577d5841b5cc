//! Subscriptions: append-to-delivery latency with 1 and 64 live
//! subscribers (from the start of the append, and from its durable
//! acknowledgement to the median subscriber, for subscriptions on threads
//! of their own and for handlers of one dispatcher), and durable writer
//! throughput with 0, 1 and 64 consumers attached. Durable mode (the
//! default) throughout.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use annal::{Dispatcher, ExpectedVersion, Options, RecordedEvent, StartFrom, Store, SubscriptionFilter};
use common::{event, stream_name};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// `n` subscriber threads from End, each counting the events it receives
/// into `delivered`; they end when the store closes.
fn subscribers(store: &Store, n: usize, delivered: &Arc<AtomicU64>) -> Vec<JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let mut sub = store.subscribe_all(StartFrom::End).unwrap();
            let delivered = delivered.clone();
            std::thread::spawn(move || {
                while let Ok(Some(_)) = sub.recv() {
                    delivered.fetch_add(1, Ordering::Release);
                }
            })
        })
        .collect()
}

fn wait_for(counter: &AtomicU64, target: u64) {
    while counter.load(Ordering::Acquire) < target {
        std::thread::yield_now();
    }
}

/// From the start of an append to its event reaching every subscriber.
fn delivery_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("subscribe/append_to_delivery");
    group.sample_size(10).measurement_time(Duration::from_secs(3));
    for n in [1usize, 64] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let delivered = Arc::new(AtomicU64::new(0));
        let threads = subscribers(&store, n, &delivered);
        let mut i = 0u64;
        group.bench_function(BenchmarkId::new("subscribers", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let target = delivered.load(Ordering::Acquire) + n as u64;
                    let started = Instant::now();
                    store.append(&stream_name(i), ExpectedVersion::Any, [event(i)]).unwrap();
                    wait_for(&delivered, target);
                    total += started.elapsed();
                    i += 1;
                }
                total
            })
        });
        store.close().unwrap();
        threads.into_iter().for_each(|t| t.join().unwrap());
    }
    group.finish();
}

/// How the consumers of a bench are served.
#[derive(Clone, Copy)]
enum Served {
    /// One thread per consumer, each pulling its own subscription.
    Threads,
    /// One dispatcher thread calling every consumer's handler.
    Dispatcher,
}

impl Served {
    fn label(self) -> &'static str {
        match self {
            Served::Threads => "subscription_threads",
            Served::Dispatcher => "dispatcher_handlers",
        }
    }
}

/// Running consumers, ended by closing the store.
enum Consumers {
    Threads(Vec<JoinHandle<()>>),
    Dispatcher(Dispatcher),
}

impl Consumers {
    fn finish(self) {
        match self {
            Consumers::Threads(threads) => threads.into_iter().for_each(|t| t.join().unwrap()),
            Consumers::Dispatcher(d) => drop(d.join().unwrap()),
        }
    }
}

/// Slots per consumer for receive times.
const SLOTS: usize = 1024;

/// `n` consumers from End; each stores, for the event at position `p`,
/// when it received it (nanoseconds since `base`) in
/// `received[consumer][p % SLOTS]`, then counts it in `delivered`.
fn timed_consumers(
    store: &Store,
    served: Served,
    n: usize,
    base: Instant,
    delivered: &Arc<AtomicU64>,
) -> (Consumers, Arc<Vec<Vec<AtomicU64>>>) {
    let received: Arc<Vec<Vec<AtomicU64>>> = Arc::new(
        (0..n)
            .map(|_| (0..SLOTS).map(|_| AtomicU64::new(0)).collect())
            .collect(),
    );
    let record = move |s: usize, e: &RecordedEvent, received: &[Vec<AtomicU64>], delivered: &AtomicU64| {
        let at = base.elapsed().as_nanos() as u64;
        received[s][e.position() as usize % SLOTS].store(at, Ordering::Release);
        delivered.fetch_add(1, Ordering::Release);
    };
    let consumers = match served {
        Served::Threads => Consumers::Threads(
            (0..n)
                .map(|s| {
                    let mut sub = store.subscribe_all(StartFrom::End).unwrap();
                    let (delivered, received) = (delivered.clone(), received.clone());
                    std::thread::spawn(move || {
                        while let Ok(Some(e)) = sub.recv() {
                            record(s, &e, &received, &delivered);
                        }
                    })
                })
                .collect(),
        ),
        Served::Dispatcher => {
            let mut builder = store.dispatcher();
            for s in 0..n {
                let (delivered, received) = (delivered.clone(), received.clone());
                builder = builder
                    .handler(format!("h{s}"), SubscriptionFilter::all(), StartFrom::End, move |e| {
                        record(s, e, &received, &delivered);
                        Ok(())
                    })
                    .unwrap();
            }
            Consumers::Dispatcher(builder.start().unwrap())
        }
    };
    (consumers, received)
}

/// From the moment an append returns (durable acknowledgement) to the
/// median consumer receiving its event: the time reported per iteration
/// is that median (0 for consumers reached before the appender returned).
/// Consumers are subscriptions on threads of their own, or handlers of
/// one dispatcher.
fn delivery_after_ack(c: &mut Criterion) {
    let mut group = c.benchmark_group("subscribe/ack_to_median_subscriber");
    group.sample_size(10).measurement_time(Duration::from_secs(3));
    for served in [Served::Threads, Served::Dispatcher] {
        for n in [1usize, 64] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), Options::default()).unwrap();
            let delivered = Arc::new(AtomicU64::new(0));
            let base = Instant::now();
            let (consumers, received) = timed_consumers(&store, served, n, base, &delivered);
            let mut i = 0u64;
            let mut latencies = Vec::with_capacity(n);
            group.bench_function(BenchmarkId::new(served.label(), n), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let target = delivered.load(Ordering::Acquire) + n as u64;
                        let r = store.append(&stream_name(i), ExpectedVersion::Any, [event(i)]).unwrap();
                        let acked = base.elapsed().as_nanos() as u64;
                        wait_for(&delivered, target);
                        latencies.clear();
                        latencies.extend(received.iter().map(|slots| {
                            let at = slots[r.last_position as usize % slots.len()].load(Ordering::Acquire);
                            at.saturating_sub(acked)
                        }));
                        latencies.sort_unstable();
                        total += Duration::from_nanos(latencies[latencies.len() / 2]);
                        i += 1;
                    }
                    total
                })
            });
            store.close().unwrap();
            consumers.finish();
        }
    }
    group.finish();
}

/// Four durable writers, one event per append, with subscribers attached
/// and consuming live.
fn writer_throughput(c: &mut Criterion) {
    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = 100;
    let mut group = c.benchmark_group("subscribe/writer_throughput_4_writers");
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(WRITERS * PER_WRITER));
    let cases = [
        (Served::Threads, 0usize),
        (Served::Threads, 1),
        (Served::Threads, 64),
        (Served::Dispatcher, 64),
    ];
    for (served, n) in cases {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let delivered = Arc::new(AtomicU64::new(0));
        let (consumers, _) = timed_consumers(&store, served, n, Instant::now(), &delivered);
        let next = Arc::new(AtomicU64::new(0));
        group.bench_function(BenchmarkId::new(served.label(), n), |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    let writers: Vec<_> = (0..WRITERS)
                        .map(|_| {
                            let (store, next) = (store.clone(), next.clone());
                            std::thread::spawn(move || {
                                for _ in 0..PER_WRITER {
                                    let i = next.fetch_add(1, Ordering::Relaxed);
                                    store.append(&stream_name(i), ExpectedVersion::Any, [event(i)]).unwrap();
                                }
                            })
                        })
                        .collect();
                    writers.into_iter().for_each(|w| w.join().unwrap());
                }
                started.elapsed()
            })
        });
        store.close().unwrap();
        consumers.finish();
    }
    group.finish();
}

criterion_group!(benches, delivery_latency, delivery_after_ack, writer_throughput);
criterion_main!(benches);
