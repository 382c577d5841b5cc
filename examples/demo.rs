//! End-to-end demo: appends (batched, single, concurrent), reads, a clean
//! reopen and a reopen after deleting the index file, printing what it did
//! and how fast.
//!
//! Run with `cargo run --release --example demo [DIR]` (a temporary
//! directory by default).

use std::sync::Arc;
use std::time::{Duration, Instant};

use annal::{EventData, ExpectedVersion, Options, ReadAll, ReadStream, Store};

const STREAMS: u64 = 1_000;

fn payload(i: u64) -> EventData {
    let data = format!(
        r#"{{"order":{i},"sku":"SKU-{}","qty":{},"note":"demo event"}}"#,
        i % 97,
        i % 7 + 1
    );
    EventData::new("OrderPlaced", data).with_metadata(r#"{"source":"demo"}"#)
}

fn rate(n: u64, elapsed: Duration) -> String {
    format!("{:>10.0} events/s", n as f64 / elapsed.as_secs_f64())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| temp.path().join("events"), Into::into);
    println!("annal demo in {}", dir.display());
    let store = Store::open(&dir, Options::default())?;

    // 1. Batched durable appends: 100 events per append, one sync each.
    let started = Instant::now();
    let mut written = 0u64;
    for batch in 0..500u64 {
        let stream = format!("Order-{}", batch % STREAMS);
        let events: Vec<_> = (0..100).map(|k| payload(batch * 100 + k)).collect();
        store.append(&stream, ExpectedVersion::Any, events)?;
        written += 100;
    }
    println!(
        "durable, 1 writer, 100 events/append : {}",
        rate(written, started.elapsed())
    );

    // 2. Single-event durable appends from one thread.
    let started = Instant::now();
    for i in 0..500u64 {
        store.append(&format!("Cart-{}", i % STREAMS), ExpectedVersion::Any, [payload(i)])?;
    }
    println!(
        "durable, 1 writer, 1 event/append    : {}",
        rate(500, started.elapsed())
    );

    // 3. The same from 16 threads: group commit shares the syncs.
    let before = store.stats();
    let shared = Arc::new(store.clone());
    let started = Instant::now();
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let store = shared.clone();
            std::thread::spawn(move || -> Result<(), annal::Error> {
                for i in 0..250u64 {
                    store.append(
                        &format!("Cart-{}", (t * 250 + i) % STREAMS),
                        ExpectedVersion::Any,
                        [payload(i)],
                    )?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "writer thread panicked")??;
    }
    println!(
        "durable, 16 writers, 1 event/append  : {}",
        rate(16 * 250, started.elapsed())
    );
    let after = store.stats();
    println!(
        "  group commit: {:.1} appends per sync",
        (after.appends_written - before.appends_written) as f64 / (after.group_commits - before.group_commits) as f64
    );
    drop(shared);

    // 4. Optimistic concurrency in action.
    let v = store.stream_version("Order-7").unwrap_or(0);
    store.append("Order-7", ExpectedVersion::Exact(v), [payload(1)])?;
    match store.append("Order-7", ExpectedVersion::Exact(v), [payload(2)]) {
        Err(e) => println!("stale write refused                  : {e}"),
        Ok(_) => return Err("a stale write was accepted".into()),
    }

    // 5. Reads.
    let started = Instant::now();
    let n = store.read_stream("Order-7", ReadStream::forward())?.count() as u64;
    println!(
        "{:<37}: {:?}",
        format!("read one stream ({n} events)"),
        started.elapsed()
    );
    let started = Instant::now();
    let mut total = 0u64;
    let mut bytes = 0usize;
    for e in store.read_all(ReadAll::forward())? {
        bytes += e?.data().len();
        total += 1;
    }
    println!(
        "read all ({total} events, {bytes} data bytes): {}",
        rate(total, started.elapsed())
    );
    let stats = store.stats();
    println!(
        "stats: {} events, {} streams, {} segment(s), {} bytes on disk, index {} bytes",
        stats.events, stats.streams, stats.segments, stats.disk_bytes, stats.index_memory_bytes
    );

    // 6. Reopen after a clean close, then after losing the index file.
    store.close()?;
    let started = Instant::now();
    let store = Store::open(&dir, Options::default())?;
    println!(
        "reopen after clean close              : {:?} ({:?})",
        started.elapsed(),
        store.recovery_report()
    );
    let last = store.last_position();
    store.close()?;
    std::fs::remove_file(dir.join("index"))?;
    let started = Instant::now();
    let store = Store::open(&dir, Options::default())?;
    println!("reopen with the index rebuilt from log: {:?}", started.elapsed());
    if store.last_position() != last {
        return Err("the rebuilt index disagrees with the saved one".into());
    }
    println!("all {last} events accounted for after both reopens");
    Ok(())
}
