//! Many threads appending to a few shared streams under `Exact`
//! expectations, as command handlers do: read the version, decide, append
//! with `Exact(version)`, retry on conflict. No update may be lost: every
//! acknowledged append is in the stream exactly once, each event was
//! decided on the state just before it (the version it observed is its own
//! version minus one), and versions and positions are gapless.

use std::collections::HashMap;
use std::sync::Arc;

use annal::{Durability, Error, EventData, ExpectedVersion, Options, ReadAll, Store};

const STREAMS: u64 = 4;

fn run(durability: Durability, threads: u64, appends_per_thread: u64) {
    run_with(
        Options::default().with_durability(durability),
        threads,
        appends_per_thread,
    );
}

fn run_with(options: Options, threads: u64, appends_per_thread: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), options).unwrap());
    // Every thread reads its first stream's version, then all append at
    // once: threads sharing a stream are then certain to conflict.
    let start = Arc::new(std::sync::Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut conflicts = 0u64;
                for i in 0..appends_per_thread {
                    let stream = format!("Account-{}", (t + i) % STREAMS);
                    loop {
                        let seen = store.stream_version(&stream).unwrap_or(0);
                        if i == 0 && conflicts == 0 {
                            start.wait();
                        }
                        let expected = if seen == 0 {
                            ExpectedVersion::NoStream
                        } else {
                            ExpectedVersion::Exact(seen)
                        };
                        let body = format!("{t}:{i}:{seen}");
                        match store.append(&stream, expected, [EventData::new("Changed", body.clone())]) {
                            Ok(r) => {
                                assert_eq!(r.first_version, seen + 1);
                                acked.push((stream.clone(), r.first_version, r.first_position, body));
                                break;
                            }
                            Err(Error::WrongExpectedVersion { actual, .. }) => {
                                assert!(actual.unwrap_or(0) > seen, "a conflict must mean someone moved on");
                                conflicts += 1;
                            }
                            Err(e) => panic!("append failed: {e}"),
                        }
                    }
                }
                (acked, conflicts)
            })
        })
        .collect();
    let mut acked = Vec::new();
    let mut conflicts = 0;
    for h in handles {
        let (a, c) = h.join().unwrap();
        acked.extend(a);
        conflicts += c;
    }
    assert_eq!(acked.len() as u64, threads * appends_per_thread);
    let events: Vec<_> = store
        .read_all(ReadAll::forward())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(events.len(), acked.len(), "lost or extra updates");
    let mut versions: HashMap<String, u64> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position(), i as u64 + 1);
        let v = versions.entry(e.stream().to_string()).or_insert(0);
        *v += 1;
        assert_eq!(e.version(), *v, "versions of {} have a gap", e.stream());
        let body = std::str::from_utf8(e.data()).unwrap();
        let seen: u64 = body.rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(seen + 1, e.version(), "event {body} was decided on a stale version");
    }
    for (stream, version, position, body) in &acked {
        let e = &events[*position as usize - 1];
        assert_eq!(
            (e.stream(), e.version(), std::str::from_utf8(e.data()).unwrap()),
            (stream.as_str(), *version, body.as_str())
        );
    }
    assert!(
        conflicts > 0 || threads <= STREAMS,
        "the test never produced a conflict"
    );
}

#[test]
fn exact_appends_from_many_threads_lose_no_update_buffered() {
    for _ in 0..5 {
        run(Durability::Buffered, 16, 300);
    }
}

#[test]
fn exact_appends_from_many_threads_lose_no_update_durable() {
    run(Durability::Sync, 16, 40);
}

/// The same with group-commit waiters that park at once instead of
/// yielding first.
#[test]
fn exact_appends_from_many_threads_lose_no_update_durable_parking() {
    run_with(Options::default().with_group_commit_spin(false), 16, 40);
}
