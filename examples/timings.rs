//! Standalone timings that criterion's averages hide: the latency of each
//! append over a long run, sustained buffered appends, and snapshot loads
//! while another stream's snapshots are saved. docs/PERFORMANCE.md quotes
//! them; the criterion benches in `benches/` give the averaged figures.
//!
//! ```sh
//! cargo run --release --example timings -- durable100 60000 /tmp/t   # appends of 100 events, one by one
//! cargo run --release --example timings -- buffered 500000 /tmp/t    # OS-buffered single-event appends
//! cargo run --release --example timings -- buffered16 800000 /tmp/t  # the same from 16 threads, N in all
//! cargo run --release --example timings -- durable16 64000 /tmp/t   # durable single-event appends from 16 threads (durable1: one), with appends per group commit
//! cargo run --release --example timings -- snapshot-loads 4096 /tmp/t  # loads during saves of 4 KiB snapshots
//! cargo run --release --example timings -- stalls-buffered 3000000 /tmp/t    # the slowest single-event appends
//! cargo run --release --example timings -- stalls-periodic 3000000 /tmp/t    # the same, Periodic(100 ms)
//! cargo run --release --example timings -- index-memory 200000 /tmp/t       # index bytes per stream, short streams
//! cargo run --release --example timings -- category-reads 2000 /tmp/t  # appends while a 1M-event category is read
//! ```
//!
//! Each run starts from an empty store in the given directory (removed
//! first). Events are shaped as in the benches (`benches/common/mod.rs`).

#[path = "../benches/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use annal::{Durability, EventData, ExpectedVersion, Options, Store};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, n, dir] = args.as_slice() else {
        return Err(
            "usage: timings durable100|durable1|durable16|buffered|buffered16|snapshot-loads|stalls-buffered|stalls-periodic|index-memory|category-reads N DIR"
                .into(),
        );
    };
    let n: u64 = n.parse()?;
    let dir = std::path::Path::new(dir);
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    match mode.as_str() {
        "durable100" => durable100(n, dir),
        "buffered" => buffered(n, dir),
        "buffered16" => threads(Durability::Buffered, 16, n, dir),
        "durable1" => threads(Durability::Sync, 1, n, dir),
        "durable16" => threads(Durability::Sync, 16, n, dir),
        "snapshot-loads" => snapshot_loads(usize::try_from(n)?, dir),
        "stalls-buffered" => stalls(n, dir, Durability::Buffered),
        "stalls-periodic" => stalls(n, dir, Durability::Periodic(Duration::from_millis(100))),
        "index-memory" => index_memory(n, dir),
        "category-reads" => category_reads(n, dir),
        _ => Err(format!("unknown mode {mode}").into()),
    }
}

/// `n` durable appends of 100 events, each timed.
fn durable100(n: u64, dir: &std::path::Path) -> Result {
    let store = Store::open(dir, Options::default())?;
    let batches: Vec<Vec<EventData>> = (0..n)
        .map(|k| (k * 100..k * 100 + 100).map(common::event).collect())
        .collect();
    let mut each = Vec::with_capacity(batches.len());
    let started = Instant::now();
    for (k, events) in (0u64..).zip(batches) {
        let t = Instant::now();
        store.append(&common::stream_name(k), ExpectedVersion::Any, events)?;
        each.push(t.elapsed());
    }
    let secs = started.elapsed().as_secs_f64();
    store.close()?;
    each.sort_unstable();
    let total: Duration = each.iter().sum();
    let slowest: Duration = each.iter().rev().take(each.len() / 100).sum();
    let q = |p: f64| each[((each.len() as f64 * p) as usize).min(each.len() - 1)];
    println!(
        "durable100: {:.0} events/s; median {:?}, p99 {:?}, p99.9 {:?}, slowest {:?}; the slowest 1 % took {:.0} % of the time",
        (n * 100) as f64 / secs,
        q(0.5),
        q(0.99),
        q(0.999),
        each[each.len() - 1],
        slowest.as_secs_f64() * 100.0 / total.as_secs_f64()
    );
    Ok(())
}

/// `n` OS-buffered single-event appends (events and names built first).
fn buffered(n: u64, dir: &std::path::Path) -> Result {
    let store = Store::open(dir, Options::default().with_durability(Durability::Buffered))?;
    let events: Vec<EventData> = (0..n).map(common::event).collect();
    let names: Vec<String> = (0..n).map(common::stream_name).collect();
    let cpu_before = thread_cpu();
    let started = Instant::now();
    for (name, event) in names.iter().zip(events) {
        store.append(name, ExpectedVersion::Any, [event])?;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = thread_cpu();
    store.close()?;
    println!(
        "buffered: {:.0} appends/s over {n}; appending thread: {:.0} ns user + {:.0} ns system per append",
        n as f64 / secs,
        (cpu.0 - cpu_before.0) * 1e9 / n as f64,
        (cpu.1 - cpu_before.1) * 1e9 / n as f64
    );
    Ok(())
}

/// `n` single-event appends made by `threads` threads, each to its own
/// streams (events and names built beforehand).
fn threads(durability: Durability, threads: u64, n: u64, dir: &std::path::Path) -> Result {
    let store = Store::open(dir, Options::default().with_durability(durability))?;
    let each = n / threads;
    let work: Vec<Vec<(String, EventData)>> = (0..threads)
        .map(|t| {
            (t * each..(t + 1) * each)
                .map(|k| (common::stream_name(k), common::event(k)))
                .collect()
        })
        .collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = work
            .into_iter()
            .map(|appends| {
                let store = &store;
                scope.spawn(move || -> annal::Result<()> {
                    for (name, event) in appends {
                        store.append(&name, ExpectedVersion::Any, [event])?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| -> Result {
            h.join().map_err(|_| "an appender panicked")??;
            Ok(())
        })
    })?;
    let secs = started.elapsed().as_secs_f64();
    let stats = store.stats();
    store.close()?;
    println!(
        "{durability:?}, {threads} threads: {:.0} appends/s over {}; {:.1} appends per group commit",
        (each * threads) as f64 / secs,
        each * threads,
        stats.appends_written as f64 / stats.group_commits.max(1) as f64
    );
    Ok(())
}

/// `n` single-event appends in a non-durable mode, each timed: how long
/// and how often an append waits for the disk (a segment's seal, a
/// periodic or index-save sync).
fn stalls(n: u64, dir: &std::path::Path, durability: Durability) -> Result {
    let store = Store::open(dir, Options::default().with_durability(durability))?;
    let events: Vec<EventData> = (0..n).map(common::event).collect();
    let names: Vec<String> = (0..n).map(common::stream_name).collect();
    let mut each = Vec::with_capacity(events.len());
    let started = Instant::now();
    for (name, event) in names.iter().zip(events) {
        let t = Instant::now();
        store.append(name, ExpectedVersion::Any, [event])?;
        each.push(t.elapsed());
    }
    let secs = started.elapsed().as_secs_f64();
    let segments = store.stats().segments;
    store.close()?;
    let over = |ms: u64| each.iter().filter(|&&d| d > Duration::from_millis(ms)).count();
    let (over1, over10) = (over(1), over(10));
    each.sort_unstable();
    println!(
        "stalls ({durability:?}): {:.0} appends/s over {n}, {segments} segments; p99.99 {:?}, slowest {:?}; {over1} appends over 1 ms, {over10} over 10 ms",
        n as f64 / secs,
        each[((each.len() as f64 * 0.9999) as usize).min(each.len() - 1)],
        each[each.len() - 1],
    );
    Ok(())
}

/// `Stats::index_memory_bytes` for `n` streams (named `Order-<i>`) of 1, 3
/// and 10 events each, written and after a reopen: what each stream costs
/// beyond 16 bytes per event.
fn index_memory(n: u64, dir: &std::path::Path) -> Result {
    for k in [1u64, 3, 10] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        let store = Store::open(dir, Options::default().with_durability(Durability::Buffered))?;
        for round in 0..k {
            for start in (0..n).step_by(1000) {
                let batch: Vec<annal::StreamAppend> = (start..(start + 1000).min(n))
                    .map(|i| {
                        let e = EventData::new("E", format!("{round}"));
                        annal::StreamAppend::new(format!("Order-{i}"), ExpectedVersion::Any, [e])
                    })
                    .collect();
                store.append_multi(&batch)?;
            }
        }
        let per_stream = |bytes: u64| (bytes as f64 - 16.0 * (n * k) as f64) / n as f64;
        let written = store.stats().index_memory_bytes;
        store.close()?;
        let reopened = Store::open(dir, Options::default())?.stats().index_memory_bytes;
        println!(
            "index-memory: {n} streams of {k} events: {written} bytes written ({:.1} B/stream beyond 16 B/event), \
             {reopened} after a reopen ({:.1} B/stream)",
            per_stream(written),
            per_stream(reopened)
        );
    }
    Ok(())
}

/// 500 timed loads of one stream's snapshot, with nothing else running,
/// then while another thread saves `size`-byte snapshots of another stream
/// in a loop.
fn snapshot_loads(size: usize, dir: &std::path::Path) -> Result {
    let store = Store::open(dir, Options::default())?;
    for stream in ["A-1", "B-1"] {
        store.append(stream, ExpectedVersion::Any, [EventData::new("E", "{}")])?;
        store.save_snapshot(stream, 1, 1, b"s")?;
    }
    let loads = || -> Vec<Duration> {
        let mut each: Vec<Duration> = (0..500)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(store.load_snapshot("B-1"));
                let took = t.elapsed();
                std::thread::sleep(Duration::from_micros(200));
                took
            })
            .collect();
        each.sort_unstable();
        each
    };
    let quiet = loads();
    let stop = AtomicBool::new(false);
    let (busy, saves) = std::thread::scope(|s| -> Result<(Vec<Duration>, u64)> {
        let saver = s.spawn(|| -> annal::Result<u64> {
            let state = vec![1u8; size];
            let mut saves = 0;
            while !stop.load(Ordering::Relaxed) {
                let v = store
                    .append("A-1", ExpectedVersion::Any, [EventData::new("E", "{}")])?
                    .last_version;
                store.save_snapshot("A-1", v, 1, &state)?;
                saves += 1;
            }
            Ok(saves)
        });
        let busy = loads();
        stop.store(true, Ordering::Relaxed);
        let saves = saver.join().map_err(|_| "the saver panicked")??;
        Ok((busy, saves))
    })?;
    let show = |each: &[Duration]| format!("p50 {:?}, p99 {:?}, max {:?}", each[250], each[495], each[499]);
    println!(
        "snapshot-loads: quiet {}; during {saves} saves of {size} bytes: {}; compactions {}",
        show(&quiet),
        show(&busy),
        store.snapshot_stats()?.compactions
    );
    store.close()?;
    Ok(())
}

/// `n` buffered single-event appends, each timed, 200 µs apart, while
/// another thread makes category reads of a store of 1M events in one
/// category (10,000 streams) over and over: how long an append waits for
/// a read (the read copies the category's positions under the index lock
/// that an append needs to publish).
fn category_reads(n: u64, dir: &std::path::Path) -> Result {
    common::build(dir, 1_000_000);
    let store = Store::open(dir, Options::default().with_durability(Durability::Buffered))?;
    let stop = AtomicBool::new(false);
    let (reads, each) = std::thread::scope(|scope| -> Result<(u64, Vec<Duration>)> {
        let reader = scope.spawn(|| -> annal::Result<(u64, Duration)> {
            let (mut reads, started) = (0u64, Instant::now());
            while !stop.load(Ordering::Relaxed) {
                drop(store.read_category("Order", 0, Some(1))?);
                reads += 1;
            }
            Ok((
                reads,
                started.elapsed() / u32::try_from(reads.max(1)).unwrap_or(u32::MAX),
            ))
        });
        let mut each = Vec::with_capacity(usize::try_from(n)?);
        for k in 0..n {
            let t = Instant::now();
            store.append(&common::stream_name(k), ExpectedVersion::Any, [common::event(k)])?;
            each.push(t.elapsed());
            std::thread::sleep(Duration::from_micros(200));
        }
        stop.store(true, Ordering::Relaxed);
        let (reads, per_read) = reader.join().map_err(|_| "the reader panicked")??;
        println!("category-reads: {reads} reads of 1M events, {per_read:?} each");
        Ok((reads, each))
    })?;
    store.close()?;
    let mut each = each;
    each.sort_unstable();
    let q = |p: f64| each[((each.len() as f64 * p) as usize).min(each.len() - 1)];
    println!(
        "category-reads: {} appends during {reads} reads: median {:?}, p99 {:?}, slowest {:?}",
        each.len(),
        q(0.5),
        q(0.99),
        each[each.len() - 1]
    );
    Ok(())
}

/// The calling thread's user and system CPU seconds so far (zeros where
/// the platform does not say).
fn thread_cpu() -> (f64, f64) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `getrusage` fills the zeroed struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above; the pointer is valid for the call.
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } == 0 {
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
            return (secs(usage.ru_utime), secs(usage.ru_stime));
        }
    }
    (0.0, 0.0)
}
