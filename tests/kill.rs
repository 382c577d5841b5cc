//! A child process appends and reports each acknowledged append on stdout;
//! the parent kills it mid-write (SIGKILL) and checks that every
//! acknowledged event is there after reopen, batches whole. Every
//! durability mode promises this for a process crash: periodic and
//! buffered appends are in the OS page cache when acknowledged (copied
//! there through a writable map of the segment on Linux), which outlives
//! the process.

mod common;

use std::time::Duration;

use annal::{EventData, ExpectedVersion, Options, ReadAll, Store};
use common::child;

const CHILD_DIR: &str = "ANNAL_KILL_CHILD_DIR";
const CHILD_MODE: &str = "ANNAL_KILL_CHILD_MODE";

/// Options of both processes; small segments, so that a run rolls over
/// many segments and grows each one's preallocation.
fn options(mode: &str) -> Options {
    Options::default()
        .with_segment_size_bytes(64 * 1024)
        .with_durability(child::durability(mode))
}

/// The child's workload: runs only when the parent sets the variable.
#[test]
fn child_workload() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let mode = std::env::var(CHILD_MODE).unwrap_or_default();
    let store = Store::open(&dir, options(&mode)).unwrap();
    let start = store.last_position();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let n = (i % 5 + 1) as usize;
                    let events: Vec<_> = (0..n)
                        .map(|k| EventData::new("Tick", format!("{t} {i} {n} {k}")))
                        .collect();
                    let ids: Vec<String> = events.iter().map(|e| e.id().to_string()).collect();
                    let r = store.append(&format!("K-{t}"), ExpectedVersion::Any, events).unwrap();
                    // Printed only after the acknowledgement.
                    println!("ack {} {} {}", r.first_position, r.last_position, ids.join(","));
                }
            })
        })
        .collect();
    let _ = start;
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn killed_writer_loses_no_acknowledged_event() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    kill_rounds("durable");
}

#[test]
fn killed_buffered_writer_loses_no_acknowledged_event() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    kill_rounds("buffered");
}

#[test]
fn killed_periodic_writer_loses_no_acknowledged_event() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    kill_rounds("periodic");
}

/// Starts, kills and checks the child four times over one directory.
fn kill_rounds(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4u64 {
        let lines = child::run_and_kill(
            "child_workload",
            &[(CHILD_DIR, &dir.path()), (CHILD_MODE, &mode)],
            Duration::from_millis(150 + 100 * round),
        );
        let acks = child::acks(&lines);
        let store = Store::open(dir.path(), options(mode))
            .unwrap_or_else(|e| panic!("{mode} round {round}: reopen failed: {e}"));
        let events: Vec<_> = store
            .read_all(ReadAll::forward())
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.position(), i as u64 + 1, "positions are gapless");
        }
        for (first, last, ids) in &acks {
            for (k, p) in (*first..=*last).enumerate() {
                let e = events
                    .get(p as usize - 1)
                    .unwrap_or_else(|| panic!("acknowledged position {p} lost"));
                assert_eq!(e.id().to_string(), ids[k], "position {p} holds another event");
            }
        }
        // Batches are whole: each event says "t i n k" (k-th of n events of
        // one append); in every stream the k of consecutive events run
        // 0..n for each append, none cut short.
        for stream in store.stream_names() {
            let mut open: Option<(u64, u64, u64)> = None; // (i, n, next k)
            for e in store.read_stream(&stream, annal::ReadStream::forward()).unwrap() {
                let e = e.unwrap();
                let f: Vec<u64> = std::str::from_utf8(e.data())
                    .unwrap()
                    .split(' ')
                    .map(|x| x.parse().unwrap())
                    .collect();
                let (i, n, k) = (f[1], f[2], f[3]);
                match open {
                    Some((oi, on, ok)) if ok < on => assert_eq!((i, k), (oi, ok), "torn batch in {stream}"),
                    _ => assert_eq!(k, 0, "batch in {stream} starts mid-way"),
                }
                open = Some((i, n, k + 1));
            }
            if let Some((_, n, next)) = open {
                assert_eq!(next, n, "last batch of {stream} is cut short");
            }
        }
        eprintln!(
            "{mode} round {round}: {} acknowledged appends, {} events after reopen",
            acks.len(),
            events.len()
        );
    }
}
