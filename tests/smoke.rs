//! A quick end-to-end check: eight threads appending across segment rolls,
//! then a reopen that must find every event in order.

mod common;

use std::sync::Arc;

use annal::{ExpectedVersion, Store};
use common::*;

#[test]
fn concurrent_appends_with_rollover_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), small_segments()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let s = format!("T{t}-{}", i % 5);
                    store.append(&s, ExpectedVersion::Any, [event("E", i)]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let events = all(&store);
    assert_eq!(events.len(), 1600);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position(), i as u64 + 1);
    }
    assert!(store.stats().segments > 1);
    let before: Vec<_> = events
        .iter()
        .map(|e| (e.position(), e.id(), e.stream().to_string(), e.version()))
        .collect();
    drop(events);
    Arc::try_unwrap(store).unwrap().close().unwrap();
    let store = Store::open(dir.path(), small_segments()).unwrap();
    assert!(store.recovery_report().index_loaded);
    assert_eq!(store.recovery_report().replayed_events, 0);
    let after: Vec<_> = all(&store)
        .iter()
        .map(|e| (e.position(), e.id(), e.stream().to_string(), e.version()))
        .collect();
    assert_eq!(before, after);
    for t in 0..8 {
        for k in 0..5 {
            let s = stream(&store, &format!("T{t}-{k}"));
            assert_eq!(s.len(), 40);
            assert!(s.iter().enumerate().all(|(i, e)| e.version() == i as u64 + 1));
        }
    }
    drop(store);
    std::fs::remove_file(dir.path().join("index")).unwrap();
    let store = Store::open(dir.path(), small_segments()).unwrap();
    assert!(!store.recovery_report().index_loaded);
    assert_eq!(store.recovery_report().replayed_events, 1600);
    let rebuilt: Vec<_> = all(&store)
        .iter()
        .map(|e| (e.position(), e.id(), e.stream().to_string(), e.version()))
        .collect();
    assert_eq!(before, rebuilt);
}
