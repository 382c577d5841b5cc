//! Concurrency torture review: everything at once, in every durability mode,
//! with small segments (roll-overs), then `close` from another thread.
//!
//! Appenders (private and shared streams, every `ExpectedVersion`,
//! `append_multi`, immediate and racing retries with the same ids), readers
//! (streams both ways, categories, global log both ways), subscriptions
//! (several starts, a slow and a stalled consumer), a dispatcher (a slow
//! handler among fast ones), snapshot saves/loads, checkpoint saves,
//! `sync`, `stats`, `backup` mid-write, and `close` from another thread.
//! Every test runs under a watchdog, so a deadlock fails it.

// Tuples of test expectations, spelled out where they are used.
#![allow(clippy::type_complexity)]

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::rng::Rng;

use annal::{
    Durability, Error, EventData, ExpectedVersion, Options, ReadAll, ReadStream, RecordedEvent, StartFrom, Store,
    StreamAppend, SubscriptionFilter, Uuid,
};

// ------------------------------------------------------------------ helpers

/// Runs `f` on its own thread; fails the test (instead of hanging) when it
/// does not finish within `secs`.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = thread::Builder::new()
        .name(format!("body:{what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => {
            h.join().unwrap();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The body panicked: re-raise its panic.
            match h.join() {
                Err(p) => std::panic::resume_unwind(p),
                Ok(()) => unreachable!(),
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("WATCHDOG: '{what}' did not finish within {secs} s (deadlock or hang)")
        }
    }
}

fn options(durability: Durability) -> Options {
    Options::default()
        .with_durability(durability)
        .with_segment_size_bytes(48 * 1024)
        .with_index_checkpoint_bytes(256 * 1024)
}

#[allow(dead_code)]
fn modes() -> Vec<(&'static str, Durability)> {
    vec![
        ("sync", Durability::Sync),
        ("periodic", Durability::Periodic(Duration::from_millis(5))),
        ("buffered", Durability::Buffered),
    ]
}

/// What an acknowledged append wrote, event by event.
#[derive(Clone, Debug)]
struct Acked {
    stream: String,
    version: u64,
    position: u64,
    id: Uuid,
    event_type: String,
    data: Vec<u8>,
}

#[derive(Default)]
struct Ledger {
    acked: Mutex<Vec<Acked>>,
    /// Ids of appends that were refused (never written).
    refused: Mutex<Vec<Uuid>>,
    /// Failures seen by worker threads (reported at the end, so that one
    /// failing thread does not leave the others hanging).
    failures: Mutex<Vec<String>>,
    acks: AtomicU64,
}

impl Ledger {
    fn fail(&self, msg: String) {
        eprintln!("FAILURE: {msg}");
        self.failures.lock().unwrap().push(msg);
    }
    fn record(&self, stream: &str, events: &[EventData], r: &annal::AppendResult) {
        let mut a = self.acked.lock().unwrap();
        for (k, e) in events.iter().enumerate() {
            a.push(Acked {
                stream: stream.to_string(),
                version: r.first_version + k as u64,
                position: r.first_position + k as u64,
                id: e.id(),
                event_type: e.event_type().to_string(),
                data: e.data().to_vec(),
            });
        }
        self.acks.fetch_add(1, Ordering::Relaxed);
    }
    fn max_acked_position(&self) -> u64 {
        self.acked.lock().unwrap().iter().map(|a| a.position).max().unwrap_or(0)
    }
}

fn batch(tag: &str, n: usize, rng: &mut Rng) -> Vec<EventData> {
    (0..n)
        .map(|k| {
            let ty = if rng.below(3) == 0 { "Odd" } else { "Even" };
            EventData::new(ty, format!("{{\"tag\":\"{tag}\",\"k\":{k},\"r\":{}}}", rng.next()))
                .with_metadata(format!("{{\"m\":{k}}}"))
        })
        .collect()
}

fn check_result_shape(ledger: &Ledger, what: &str, r: &annal::AppendResult, n: usize) {
    let n = n as u64;
    if r.last_version + 1 - r.first_version != n || r.last_position + 1 - r.first_position != n {
        ledger.fail(format!("{what}: result {r:?} does not span {n} events"));
    }
}

/// Is this an error an appender may legitimately get while `closing`?
fn closed_ok(e: &Error, closing: &AtomicBool) -> bool {
    matches!(e, Error::Closed) && closing.load(Ordering::Acquire)
}

// ------------------------------------------------------------ the torture

struct Consumer {
    name: String,
    filter: fn(&RecordedEvent) -> bool,
    start: u64,
    got: Vec<(u64, Uuid)>,
}

fn torture(mode: &'static str, durability: Durability, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path, options(durability)).unwrap();
    let ledger = Arc::new(Ledger::default());
    let closing = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicBool::new(false));

    // History, so that subscriptions have something to catch up with.
    {
        let mut rng = Rng::new(seed);
        for i in 0..300u64 {
            let stream = format!("Shared-{}", i % 4);
            let events = batch("hist", 1 + (i % 3) as usize, &mut rng);
            let r = store.append(&stream, ExpectedVersion::Any, events.clone()).unwrap();
            ledger.record(&stream, &events, &r);
        }
    }
    let history_end = store.last_position();

    let mut workers: Vec<thread::JoinHandle<()>> = Vec::new();

    // ---- private-stream appenders: every expected version + immediate retries
    for t in 0..2u64 {
        let (store, ledger, closing) = (store.clone(), ledger.clone(), closing.clone());
        workers.push(thread::spawn(move || {
            let mut rng = Rng::new(seed ^ (100 + t));
            let stream = format!("Priv-{t}");
            let mut version = 0u64;
            let mut i = 0u64;
            loop {
                let events = batch(&stream, 1 + rng.below(3) as usize, &mut rng);
                let expected = match (version, i % 4) {
                    (0, _) => ExpectedVersion::NoStream,
                    (_, 0) => ExpectedVersion::Exact(version),
                    (_, 1) => ExpectedVersion::StreamExists,
                    (_, 2) => ExpectedVersion::Any,
                    _ => ExpectedVersion::Exact(version),
                };
                i += 1;
                match store.append(&stream, expected, events.clone()) {
                    Ok(r) => {
                        check_result_shape(&ledger, &stream, &r, events.len());
                        if r.first_version != version + 1 {
                            ledger.fail(format!(
                                "{stream}: {expected:?} got first version {} after {version}",
                                r.first_version
                            ));
                        }
                        version = r.last_version;
                        ledger.record(&stream, &events, &r);
                        // Retry the same append (same ids, same expectation):
                        // it must return the original result, writing nothing.
                        if rng.below(3) == 0 {
                            match store.append(&stream, expected, events.clone()) {
                                Ok(r2) if r2 == r => {}
                                Ok(r2) => {
                                    ledger.fail(format!("{stream}: retry {expected:?} got {r2:?}, original {r:?}"))
                                }
                                Err(e) if closed_ok(&e, &closing) => return,
                                Err(e) => ledger.fail(format!("{stream}: retry {expected:?} failed: {e:?}")),
                            }
                        }
                    }
                    Err(e) if closed_ok(&e, &closing) => return,
                    Err(e) => {
                        ledger.fail(format!("{stream}: append {expected:?} failed: {e:?}"));
                        return;
                    }
                }
            }
        }));
    }

    // ---- shared-stream appenders: read-decide-append with Exact/NoStream,
    // Any, and multi-stream atomic appends with a conflicting part
    for t in 0..3u64 {
        let (store, ledger, closing) = (store.clone(), ledger.clone(), closing.clone());
        workers.push(thread::spawn(move || {
            let mut rng = Rng::new(seed ^ (200 + t));
            let multi_stream = format!("Multi-{t}");
            let mut multi_version = 0u64;
            loop {
                let a = format!("Shared-{}", rng.below(4));
                let seen = store.stream_version(&a).unwrap_or(0);
                let outcome: Result<(), Error> = match rng.below(4) {
                    0 | 1 => {
                        let expected = if seen == 0 {
                            ExpectedVersion::NoStream
                        } else {
                            ExpectedVersion::Exact(seen)
                        };
                        let events = batch(&a, 1 + rng.below(2) as usize, &mut rng);
                        match store.append(&a, expected, events.clone()) {
                            Ok(r) => {
                                check_result_shape(&ledger, &a, &r, events.len());
                                if r.first_version != seen + 1 {
                                    ledger.fail(format!("{a}: Exact({seen}) wrote at {}", r.first_version));
                                }
                                ledger.record(&a, &events, &r);
                                // An Exact retry is always recognised.
                                if rng.below(4) == 0 {
                                    match store.append(&a, expected, events.clone()) {
                                        Ok(r2) if r2 == r => {}
                                        Ok(r2) => ledger.fail(format!("{a}: Exact retry got {r2:?}, original {r:?}")),
                                        Err(e) if closed_ok(&e, &closing) => return,
                                        Err(e) => ledger.fail(format!("{a}: Exact retry failed: {e:?}")),
                                    }
                                }
                                Ok(())
                            }
                            Err(Error::WrongExpectedVersion { actual, stream, .. }) => {
                                if stream != a || actual.unwrap_or(0) <= seen {
                                    ledger.fail(format!("{a}: conflict with actual {actual:?} <= seen {seen}"));
                                }
                                ledger.refused.lock().unwrap().extend(events.iter().map(|e| e.id()));
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    }
                    2 => {
                        let events = batch(&a, 1, &mut rng);
                        let expected = if rng.below(2) == 0 {
                            ExpectedVersion::Any
                        } else {
                            ExpectedVersion::StreamExists
                        };
                        match store.append(&a, expected, events.clone()) {
                            Ok(r) => {
                                ledger.record(&a, &events, &r);
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    }
                    _ => {
                        // Multi: the shared stream under Exact (may conflict),
                        // this thread's own stream under Exact (never does).
                        let ea = batch(&a, 1 + rng.below(2) as usize, &mut rng);
                        let eb = batch(&multi_stream, 1 + rng.below(2) as usize, &mut rng);
                        let exp_a = if seen == 0 {
                            ExpectedVersion::NoStream
                        } else {
                            ExpectedVersion::Exact(seen)
                        };
                        let appends = vec![
                            StreamAppend::new(a.clone(), exp_a, ea.clone()),
                            StreamAppend::new(multi_stream.clone(), ExpectedVersion::Exact(multi_version), eb.clone()),
                        ];
                        match store.append_multi(&appends) {
                            Ok(rs) => {
                                if rs.len() != 2 {
                                    ledger.fail(format!("multi: {} results", rs.len()));
                                } else {
                                    check_result_shape(&ledger, "multi a", &rs[0], ea.len());
                                    check_result_shape(&ledger, "multi b", &rs[1], eb.len());
                                    if rs[0].last_position + 1 != rs[1].first_position {
                                        ledger.fail(format!("multi: not one contiguous batch: {rs:?}"));
                                    }
                                    if rs[1].first_version != multi_version + 1 || rs[0].first_version != seen + 1 {
                                        ledger.fail(format!("multi: versions {rs:?} after {seen}/{multi_version}"));
                                    }
                                    multi_version = rs[1].last_version;
                                    ledger.record(&a, &ea, &rs[0]);
                                    ledger.record(&multi_stream, &eb, &rs[1]);
                                    if rng.below(3) == 0 {
                                        match store.append_multi(&appends) {
                                            Ok(rs2) if rs2 == rs => {}
                                            Ok(rs2) => ledger.fail(format!("multi retry got {rs2:?}, original {rs:?}")),
                                            Err(e) if closed_ok(&e, &closing) => return,
                                            Err(e) => ledger.fail(format!("multi retry failed: {e:?}")),
                                        }
                                    }
                                }
                                Ok(())
                            }
                            Err(Error::WrongExpectedVersion { stream, actual, .. }) => {
                                if stream != a || actual.unwrap_or(0) <= seen {
                                    ledger.fail(format!("multi conflict on {stream} actual {actual:?} (seen {seen})"));
                                }
                                let mut refused = ledger.refused.lock().unwrap();
                                refused.extend(ea.iter().chain(&eb).map(|e| e.id()));
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    }
                };
                match outcome {
                    Ok(()) => {}
                    Err(e) if closed_ok(&e, &closing) => return,
                    Err(e) => {
                        ledger.fail(format!("shared appender {t}: {e:?}"));
                        return;
                    }
                }
            }
        }));
    }

    // ---- racing retries: two threads append the very same events at once
    {
        let (store, ledger, closing) = (store.clone(), ledger.clone(), closing.clone());
        workers.push(thread::spawn(move || {
            let mut rng = Rng::new(seed ^ 300);
            let stream = "Race-1".to_string();
            let mut version = 0u64;
            for round in 0u64.. {
                let events = batch(&stream, 1 + rng.below(3) as usize, &mut rng);
                let expected = match round % 3 {
                    0 => ExpectedVersion::Any,
                    1 => ExpectedVersion::Exact(version),
                    _ if version > 0 => ExpectedVersion::StreamExists,
                    _ => ExpectedVersion::NoStream,
                };
                let outcomes: Vec<Result<annal::AppendResult, Error>> = thread::scope(|s| {
                    let hs: Vec<_> = (0..2)
                        .map(|_| {
                            let (store, stream, events) = (&store, &stream, events.clone());
                            s.spawn(move || store.append(stream, expected, events))
                        })
                        .collect();
                    hs.into_iter().map(|h| h.join().unwrap()).collect()
                });
                let oks: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
                for o in &outcomes {
                    if let Err(e) = o
                        && !closed_ok(e, &closing)
                    {
                        ledger.fail(format!("race round {round} {expected:?}: {e:?}"));
                    }
                }
                if oks.len() == 2 && oks[0] != oks[1] {
                    ledger.fail(format!(
                        "race round {round} {expected:?}: two different results {:?} {:?}",
                        oks[0], oks[1]
                    ));
                }
                if let Some(r) = oks.first() {
                    if r.first_version != version + 1 {
                        ledger.fail(format!(
                            "race round {round}: first version {} after {version}",
                            r.first_version
                        ));
                    }
                    version = r.last_version;
                    ledger.record(&stream, &events, r);
                }
                if oks.len() < 2 {
                    return; // closed
                }
            }
        }));
    }

    // ---- readers
    for t in 0..2u64 {
        let (store, ledger, closed) = (store.clone(), ledger.clone(), closed.clone());
        workers.push(thread::spawn(move || {
            let mut rng = Rng::new(seed ^ (400 + t));
            let mut iterations = 0u64;
            // Reads keep working after close: go on a little past it.
            let mut after_close = 0;
            while after_close < 20 {
                if closed.load(Ordering::Acquire) {
                    after_close += 1;
                }
                iterations += 1;
                let head = store.last_position();
                let r = (|| -> Result<(), String> {
                    match rng.below(5) {
                        0 => {
                            let from = rng.below(head + 1);
                            let ev = store
                                .read_all(ReadAll::forward().from_position(from).limit(300))
                                .map_err(|e| e.to_string())?
                                .collect_all()
                                .map_err(|e| e.to_string())?;
                            for (k, e) in ev.iter().enumerate() {
                                if e.position() != from + 1 + k as u64 {
                                    return Err(format!("read_all fwd from {from}: #{k} at {}", e.position()));
                                }
                            }
                            if (ev.len() as u64) < 300.min(head - from) {
                                return Err(format!(
                                    "read_all fwd from {from}: {} events, head was {head}",
                                    ev.len()
                                ));
                            }
                        }
                        1 => {
                            let from = head + 1 - rng.below(head.min(2000) + 1);
                            let ev = store
                                .read_all(ReadAll::backward().from_position(from).limit(300))
                                .map_err(|e| e.to_string())?
                                .collect_all()
                                .map_err(|e| e.to_string())?;
                            for (k, e) in ev.iter().enumerate() {
                                if e.position() + 1 + k as u64 != from {
                                    return Err(format!("read_all bwd from {from}: #{k} at {}", e.position()));
                                }
                            }
                            if (ev.len() as u64) < 300.min(from - 1) {
                                return Err(format!("read_all bwd from {from}: {} events", ev.len()));
                            }
                        }
                        2 => {
                            let names = [
                                "Shared-0", "Shared-1", "Shared-2", "Shared-3", "Priv-0", "Priv-1", "Multi-0", "Race-1",
                            ];
                            let name = names[rng.below(names.len() as u64) as usize];
                            let v = store.stream_version(name).unwrap_or(0);
                            let from = 1 + rng.below(v.max(1));
                            let ev = store
                                .read_stream(name, ReadStream::forward().from_version(from).limit(200))
                                .map_err(|e| e.to_string())?
                                .collect_all()
                                .map_err(|e| e.to_string())?;
                            let mut last_pos = 0;
                            for (k, e) in ev.iter().enumerate() {
                                if e.version() != from + k as u64 || e.stream() != name || e.position() <= last_pos {
                                    return Err(format!(
                                        "{name} fwd from {from}: #{k} v{} p{} after p{last_pos}",
                                        e.version(),
                                        e.position()
                                    ));
                                }
                                last_pos = e.position();
                            }
                            if v > 0 && (ev.len() as u64) < 200.min(v - from + 1) {
                                return Err(format!("{name} fwd from {from}: {} events, version was {v}", ev.len()));
                            }
                            let ev = store
                                .read_stream(name, ReadStream::backward().limit(200))
                                .map_err(|e| e.to_string())?
                                .collect_all()
                                .map_err(|e| e.to_string())?;
                            for w in ev.windows(2) {
                                if w[1].version() + 1 != w[0].version() || w[1].position() >= w[0].position() {
                                    return Err(format!("{name} bwd: v{} then v{}", w[0].version(), w[1].version()));
                                }
                            }
                            if let Some(first) = ev.first()
                                && first.version() < v
                            {
                                return Err(format!("{name} bwd starts at v{} below version {v}", first.version()));
                            }
                        }
                        3 => {
                            let after = rng.below(head + 1);
                            let ev = store
                                .read_category("Shared", after, Some(400))
                                .map_err(|e| e.to_string())?
                                .collect_all()
                                .map_err(|e| e.to_string())?;
                            let mut last = after;
                            for e in &ev {
                                if e.position() <= last || e.category() != "Shared" {
                                    return Err(format!(
                                        "category read after {after}: p{} after p{last} ({})",
                                        e.position(),
                                        e.stream()
                                    ));
                                }
                                last = e.position();
                            }
                            // Cross-check with a filtered global read.
                            let ev2 = store
                                .read_all(
                                    ReadAll::forward()
                                        .from_position(after)
                                        .category("Shared")
                                        .limit(ev.len()),
                                )
                                .map_err(|e| e.to_string())?
                                .collect_all()
                                .map_err(|e| e.to_string())?;
                            let a: Vec<_> = ev.iter().map(|e| e.position()).collect();
                            let b: Vec<_> = ev2.iter().map(|e| e.position()).collect();
                            if a != b {
                                return Err(format!(
                                    "category read after {after} differs from filtered read_all: {:?} vs {:?}",
                                    &a[..a.len().min(5)],
                                    &b[..b.len().min(5)]
                                ));
                            }
                        }
                        _ => {
                            let p = 1 + rng.below(head.max(1));
                            if head > 0 {
                                let e = store.read_position(p).map_err(|e| e.to_string())?;
                                match e {
                                    Some(e) if e.position() == p => {}
                                    other => {
                                        return Err(format!("read_position({p}) = {:?}", other.map(|e| e.position())));
                                    }
                                }
                            }
                            let s = store.stats();
                            if s.last_position < head || s.events != s.last_position {
                                return Err(format!("stats {s:?} behind head {head}"));
                            }
                        }
                    }
                    Ok(())
                })();
                if let Err(msg) = r {
                    ledger.fail(format!("reader {t}: {msg}"));
                    return;
                }
            }
            eprintln!("[{mode}] reader {t}: {iterations} reads");
        }));
    }

    // ---- subscriptions (consumer threads)
    let consumers: Arc<Mutex<Vec<Consumer>>> = Arc::default();
    let mut sub_specs: Vec<(String, SubscriptionFilter, StartFrom, fn(&RecordedEvent) -> bool, u64)> = vec![
        (
            "all-start".into(),
            SubscriptionFilter::all(),
            StartFrom::Start,
            |_| true,
            0,
        ),
        (
            "all-mid".into(),
            SubscriptionFilter::all(),
            StartFrom::After(history_end / 3),
            |_| true,
            0,
        ),
        ("all-end".into(), SubscriptionFilter::all(), StartFrom::End, |_| true, 0),
        (
            "cat-shared".into(),
            SubscriptionFilter::category("Shared"),
            StartFrom::After(7),
            |e| e.category() == "Shared",
            0,
        ),
        (
            "stream-shared0".into(),
            SubscriptionFilter::stream("Shared-0"),
            StartFrom::After(history_end / 2),
            |e| e.stream() == "Shared-0",
            0,
        ),
        (
            "odd-types".into(),
            SubscriptionFilter::all().event_type("Odd"),
            StartFrom::Start,
            |e| e.event_type() == "Odd",
            0,
        ),
        // Slow: 2 ms per event.
        (
            "slow-all".into(),
            SubscriptionFilter::all(),
            StartFrom::Start,
            |_| true,
            2,
        ),
        // Stalled: never reads until close.
        (
            "stalled".into(),
            SubscriptionFilter::all(),
            StartFrom::After(5),
            |_| true,
            u64::MAX,
        ),
    ];
    let slow_delivered = Arc::new(AtomicU64::new(0));
    let mut stalled_sub = None;
    for (name, filter, from, accept, delay_ms) in sub_specs.drain(..) {
        let mut sub = store.subscribe(filter, from).unwrap();
        let start = sub.position();
        if delay_ms == u64::MAX {
            stalled_sub = Some((name, sub, start, accept));
            continue;
        }
        let (consumers, ledger, slow_delivered) = (consumers.clone(), ledger.clone(), slow_delivered.clone());
        workers.push(thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match sub.recv() {
                    Ok(Some(e)) => {
                        got.push((e.position(), e.id()));
                        if delay_ms > 0 {
                            slow_delivered.fetch_add(1, Ordering::Relaxed);
                            thread::sleep(Duration::from_millis(delay_ms));
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        ledger.fail(format!("subscription {name}: {e:?}"));
                        break;
                    }
                }
            }
            if !sub.is_closed() {
                ledger.fail(format!("subscription {name}: recv returned None but not closed"));
            }
            consumers.lock().unwrap().push(Consumer {
                name,
                filter: accept,
                start,
                got,
            });
        }));
    }

    // ---- dispatcher: fast handlers and a slow one
    let handler_logs: Vec<Arc<Mutex<Vec<(u64, Uuid)>>>> = (0..4).map(|_| Arc::default()).collect();
    let mk = |log: &Arc<Mutex<Vec<(u64, Uuid)>>>, delay: u64| {
        let log = log.clone();
        move |e: &RecordedEvent| -> Result<(), annal::HandlerError> {
            log.lock().unwrap().push((e.position(), e.id()));
            if delay > 0 {
                thread::sleep(Duration::from_millis(delay));
            }
            Ok(())
        }
    };
    let d_start_mid = history_end / 4;
    let dispatcher = store
        .dispatcher()
        .handler(
            "d-all",
            SubscriptionFilter::all(),
            StartFrom::Start,
            mk(&handler_logs[0], 0),
        )
        .unwrap()
        .handler(
            "d-cat",
            SubscriptionFilter::category("Priv"),
            StartFrom::Start,
            mk(&handler_logs[1], 0),
        )
        .unwrap()
        .handler(
            "d-mid",
            SubscriptionFilter::all().event_type("Even"),
            StartFrom::After(d_start_mid),
            mk(&handler_logs[2], 0),
        )
        .unwrap()
        .handler(
            "d-slow",
            SubscriptionFilter::category("Shared"),
            StartFrom::Start,
            mk(&handler_logs[3], 1),
        )
        .unwrap()
        .start()
        .unwrap();

    // ---- snapshots
    {
        let (store, ledger, closing) = (store.clone(), ledger.clone(), closing.clone());
        workers.push(thread::spawn(move || {
            let mut rng = Rng::new(seed ^ 500);
            let mut saves = 0;
            loop {
                let name = format!("Shared-{}", rng.below(4));
                let v = store.stream_version(&name).unwrap_or(0);
                if v == 0 {
                    continue;
                }
                let at = 1 + rng.below(v);
                let id = match store
                    .read_stream(&name, ReadStream::forward().from_version(at).limit(1))
                    .and_then(|e| e.collect_all())
                {
                    Ok(ev) if ev.len() == 1 && ev[0].version() == at => ev[0].id(),
                    Ok(ev) => {
                        ledger.fail(format!("snapshot: read of {name} v{at} gave {} events", ev.len()));
                        return;
                    }
                    Err(e) => {
                        ledger.fail(format!("snapshot read: {e:?}"));
                        return;
                    }
                };
                match store.save_snapshot(&name, at, 1, format!("{name}@{at}:{id}").as_bytes()) {
                    Ok(()) => saves += 1,
                    Err(e) if closed_ok(&e, &closing) => break,
                    Err(e) => {
                        ledger.fail(format!("snapshot save {name}@{at}: {e:?}"));
                        return;
                    }
                }
                let load = store.load_snapshot(&name);
                if !load.issues.is_empty() {
                    ledger.fail(format!("snapshot load {name}: issues {:?}", load.issues));
                }
                match load.snapshot {
                    None => ledger.fail(format!("snapshot load {name}: none after a save")),
                    Some(s) => {
                        let want = format!("{name}@{}:{}", s.version, s.event_id);
                        if s.data.as_ref() != want.as_bytes() || s.stream != name {
                            ledger.fail(format!(
                                "snapshot load {name}: data {:?}, want {want}",
                                String::from_utf8_lossy(&s.data)
                            ));
                        }
                        match store
                            .read_stream(&name, ReadStream::forward().from_version(s.version).limit(1))
                            .and_then(|e| e.collect_all())
                        {
                            Ok(ev) if ev.len() == 1 && ev[0].id() == s.event_id => {}
                            other => ledger.fail(format!(
                                "snapshot {name}@{}: event id mismatch {:?}",
                                s.version,
                                other.map(|v| v.len())
                            )),
                        }
                    }
                }
                thread::sleep(Duration::from_millis(2));
            }
            // After close: saves refused with Closed, loads still work.
            if !matches!(store.save_snapshot("Shared-0", 1, 1, b"x"), Err(Error::Closed)) {
                ledger.fail("snapshot save after close not Closed".into());
            }
            eprintln!("[{mode}] snapshot saves: {saves}");
        }));
    }

    // ---- checkpoints, sync, stats
    for t in 0..2u64 {
        let (store, ledger, closing) = (store.clone(), ledger.clone(), closing.clone());
        workers.push(thread::spawn(move || {
            let cps = store.checkpoints();
            let name = format!("cp-{t}");
            let mut last_saved = 0;
            let mut last_stats = 0;
            loop {
                let head = store.last_position();
                let r = cps.save(&name, head).and_then(|()| cps.load(&name));
                match r {
                    Ok(Some(p)) if p >= last_saved && p <= store.last_position() => last_saved = p,
                    Ok(other) => ledger.fail(format!("checkpoint {name}: loaded {other:?} after saving {head}")),
                    Err(e) if closed_ok(&e, &closing) => break,
                    Err(e) => {
                        ledger.fail(format!("checkpoint {name}: {e:?}"));
                        return;
                    }
                }
                match store.sync() {
                    Ok(()) => {}
                    Err(e) => ledger.fail(format!("sync: {e:?}")),
                }
                let s = store.stats();
                if s.last_position < last_stats {
                    ledger.fail(format!("stats went back: {} < {last_stats}", s.last_position));
                }
                last_stats = s.last_position;
                thread::sleep(Duration::from_millis(3));
            }
            // Checkpoint calls after close: Closed.
            if !matches!(cps.save(&name, 1), Err(Error::Closed)) {
                ledger.fail("checkpoint save after close not Closed".into());
            }
            if !matches!(store.sync(), Ok(())) {
                ledger.fail("sync after close not Ok".into());
            }
        }));
    }

    // ---- progress monitor: writers never stall (slow and stalled consumers)
    let progress_gaps: Arc<Mutex<Vec<Duration>>> = Arc::default();
    {
        let (ledger, closing, gaps) = (ledger.clone(), closing.clone(), progress_gaps.clone());
        workers.push(thread::spawn(move || {
            let mut last = ledger.acks.load(Ordering::Relaxed);
            let mut since = Instant::now();
            while !closing.load(Ordering::Acquire) {
                thread::sleep(Duration::from_millis(10));
                let now = ledger.acks.load(Ordering::Relaxed);
                if now != last {
                    gaps.lock().unwrap().push(since.elapsed());
                    last = now;
                    since = Instant::now();
                }
            }
        }));
    }

    // ---- backup mid-write (main thread), then close from another thread
    thread::sleep(Duration::from_millis(800));
    let acked_before_backup = ledger.max_acked_position();
    let bdir = dir.path().join("backup");
    let report = store.backup(&bdir).expect("backup while writing");
    assert!(
        report.last_position >= acked_before_backup,
        "[{mode}] backup holds up to {} but {acked_before_backup} was acknowledged before it started",
        report.last_position
    );
    thread::sleep(Duration::from_millis(1200));

    let slow_at_close = slow_delivered.load(Ordering::Relaxed);
    let acks_at_close = ledger.acks.load(Ordering::Relaxed);
    closing.store(true, Ordering::Release);
    let closer = {
        let store = store.clone();
        thread::spawn(move || store.close())
    };
    let close_result = closer.join().unwrap();
    closed.store(true, Ordering::Release);
    assert!(close_result.is_ok(), "[{mode}] close failed: {close_result:?}");

    // Calls after close.
    let e = store.append("Priv-0", ExpectedVersion::Any, [EventData::new("X", "{}")]);
    assert!(matches!(e, Err(Error::Closed)), "[{mode}] append after close: {e:?}");
    let e = store.append_multi(&[StreamAppend::new(
        "Z-1",
        ExpectedVersion::Any,
        [EventData::new("X", "{}")],
    )]);
    assert!(
        matches!(e, Err(Error::Closed)),
        "[{mode}] append_multi after close: {e:?}"
    );
    assert!(matches!(store.subscribe_all(StartFrom::Start), Err(Error::Closed)));
    assert!(matches!(
        store
            .dispatcher()
            .handler("x", SubscriptionFilter::all(), StartFrom::Start, |_| Ok(())),
        Err(Error::Closed)
    ));
    assert!(matches!(store.save_index(), Err(Error::Closed)));
    assert!(store.clone().close().is_ok(), "[{mode}] a second close");
    // The stalled subscription: closed, and what it delivers now (if anything) is a prefix.
    let (sname, mut stalled, sstart, saccept) = stalled_sub.unwrap();
    let mut sgot = Vec::new();
    loop {
        match stalled.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(e)) => sgot.push((e.position(), e.id())),
            Ok(None) => panic!("[{mode}] recv_timeout on a closed store returned Ok(None)"),
            Err(Error::Closed) => break,
            Err(e) => panic!("[{mode}] stalled sub after close: {e:?}"),
        }
    }
    assert!(stalled.is_closed());
    consumers.lock().unwrap().push(Consumer {
        name: sname,
        filter: saccept,
        start: sstart,
        got: sgot,
    });

    for w in workers {
        w.join().expect("worker panicked");
    }
    let statuses = dispatcher.join().expect("dispatcher join after close");
    let failures = ledger.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "[{mode}] {} failures, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );

    // Writers kept going while the slow consumer crawled.
    let worst_gap = progress_gaps.lock().unwrap().iter().max().copied().unwrap_or_default();
    eprintln!(
        "[{mode}] acks {acks_at_close}, slow consumer {slow_at_close} events, worst gap between acks {worst_gap:?}, backup {report:?}"
    );
    assert!(
        worst_gap < Duration::from_secs(1),
        "[{mode}] writers stalled for {worst_gap:?}"
    );
    assert!(
        acks_at_close > slow_at_close,
        "[{mode}] writers ({acks_at_close}) no faster than a 2 ms/event consumer ({slow_at_close})"
    );

    // ---- reopen and verify the whole log
    drop(store);
    let store = Store::open(&path, options(durability)).expect("reopen after close");
    let all = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
    let last = store.last_position();
    assert_eq!(all.len() as u64, last, "[{mode}] read_all count vs last_position");
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut ids = HashSet::new();
    for (k, e) in all.iter().enumerate() {
        assert_eq!(e.position(), k as u64 + 1, "[{mode}] global positions not gapless");
        let v = versions.entry(e.stream().to_string()).or_default();
        *v += 1;
        assert_eq!(e.version(), *v, "[{mode}] versions of {} not gapless", e.stream());
        assert!(
            ids.insert(e.id()),
            "[{mode}] id {} stored twice (at {})",
            e.id(),
            e.position()
        );
    }
    for (s, v) in &versions {
        assert_eq!(store.stream_version(s), Some(*v));
    }
    let acked = ledger.acked.lock().unwrap().clone();
    let mut acked_ids = HashSet::new();
    for a in &acked {
        assert!(acked_ids.insert(a.id), "[{mode}] id {} acknowledged twice", a.id);
        let e = all
            .get(a.position as usize - 1)
            .unwrap_or_else(|| panic!("[{mode}] acked {a:?} missing"));
        assert_eq!(
            (e.stream(), e.version(), e.id(), e.event_type(), e.data()),
            (
                a.stream.as_str(),
                a.version,
                a.id,
                a.event_type.as_str(),
                a.data.as_slice()
            ),
            "[{mode}] acked event differs at {}",
            a.position
        );
    }
    // Appends refuse or acknowledge; none is written without an ack here
    // (close waits for appends in progress, and they are acknowledged).
    let unacked: Vec<_> = all
        .iter()
        .filter(|e| !acked_ids.contains(&e.id()))
        .map(|e| (e.position(), e.stream().to_string()))
        .collect();
    assert!(
        unacked.is_empty(),
        "[{mode}] {} events written without an ack, e.g. {:?}",
        unacked.len(),
        &unacked[..unacked.len().min(5)]
    );
    for id in ledger.refused.lock().unwrap().iter() {
        assert!(!ids.contains(id), "[{mode}] a refused append's event {id} was written");
    }

    // Consumers: each delivered a prefix of its matching events after its
    // start, in order, no gap, no duplicate.
    let check = |name: &str, accept: &dyn Fn(&RecordedEvent) -> bool, start: u64, got: &[(u64, Uuid)]| {
        let want: Vec<(u64, Uuid)> = all
            .iter()
            .filter(|e| e.position() > start && accept(e))
            .map(|e| (e.position(), e.id()))
            .collect();
        assert!(
            got.len() <= want.len(),
            "[{mode}] {name}: {} delivered, {} exist",
            got.len(),
            want.len()
        );
        if let Some(k) = (0..got.len()).find(|&k| got[k] != want[k]) {
            panic!(
                "[{mode}] {name}: delivery #{k} is {:?}, expected {:?} (start {start})",
                got[k], want[k]
            );
        }
        eprintln!("[{mode}] {name}: {} of {} delivered", got.len(), want.len());
    };
    for c in consumers.lock().unwrap().iter() {
        check(&c.name, &c.filter, c.start, &c.got);
    }
    let accepts: [(&str, u64, Box<dyn Fn(&RecordedEvent) -> bool>); 4] = [
        ("d-all", 0, Box::new(|_| true)),
        ("d-cat", 0, Box::new(|e| e.category() == "Priv")),
        ("d-mid", d_start_mid, Box::new(|e| e.event_type() == "Even")),
        ("d-slow", 0, Box::new(|e| e.category() == "Shared")),
    ];
    for (k, (name, start, accept)) in accepts.iter().enumerate() {
        let got = handler_logs[k].lock().unwrap().clone();
        check(name, accept.as_ref(), *start, &got);
        let st = &statuses[k];
        assert!(st.failure.is_none(), "[{mode}] {name} failed: {st:?}");
        if let Some(&(p, _)) = got.last() {
            assert!(
                st.position >= p,
                "[{mode}] {name} status {} before its last handled {p}",
                st.position
            );
        }
        // position: every matching event up to it was handled.
        let want_upto = all
            .iter()
            .filter(|e| e.position() > *start && e.position() <= st.position && accept(e))
            .count();
        assert_eq!(
            got.len(),
            want_upto,
            "[{mode}] {name}: status position {} but {} handled",
            st.position,
            got.len()
        );
    }

    // The backup: opens, holds exactly a prefix of the log.
    let backup = Store::open(&bdir, options(durability)).expect("open the backup");
    assert_eq!(backup.last_position(), report.last_position);
    let ball = backup.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
    assert_eq!(ball.len() as u64, report.last_position);
    for (b, e) in ball.iter().zip(&all) {
        assert_eq!(
            (
                b.position(),
                b.stream(),
                b.version(),
                b.id(),
                b.event_type(),
                b.data(),
                b.metadata()
            ),
            (
                e.position(),
                e.stream(),
                e.version(),
                e.id(),
                e.event_type(),
                e.data(),
                e.metadata()
            ),
            "[{mode}] backup differs"
        );
    }
    backup.close().unwrap();
    // Snapshots and checkpoints survived the reopen.
    let cps = store.checkpoints().list().unwrap();
    for (n, p) in &cps {
        assert!(*p <= last, "[{mode}] checkpoint {n} at {p} past {last}");
    }
    for s in 0..4 {
        let name = format!("Shared-{s}");
        let load = store.load_snapshot(&name);
        assert!(load.issues.is_empty(), "[{mode}] {name}: {:?}", load.issues);
    }
    store.close().unwrap();
}

#[test]
fn torture_sync() {
    within(60, "torture sync", || torture("sync", Durability::Sync, 1));
}

#[test]
fn torture_periodic() {
    within(60, "torture periodic", || {
        torture("periodic", Durability::Periodic(Duration::from_millis(5)), 2)
    });
}

#[test]
fn torture_buffered() {
    within(60, "torture buffered", || torture("buffered", Durability::Buffered, 3));
}

// ------------------------------------------- close racing appends, repeated

/// Short rounds: appenders of every kind, a subscriber and a checkpoint
/// saver, and a close from another thread at a varying moment. Every call
/// returns Ok or `Closed` (never hangs, never another error); everything
/// acknowledged is there after a reopen; nothing unacknowledged is.
fn close_races(durability: Durability, rounds: u64) {
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let store = Store::open(&path, options(durability)).unwrap();
        let ledger = Arc::new(Ledger::default());
        let closing = Arc::new(AtomicBool::new(false));
        let mut hs = Vec::new();
        for t in 0..4u64 {
            let (store, ledger, closing) = (store.clone(), ledger.clone(), closing.clone());
            hs.push(thread::spawn(move || {
                let mut rng = Rng::new(round * 31 + t);
                let stream = format!("C-{t}");
                let mut v = 0;
                loop {
                    let events = batch(&stream, 1 + rng.below(3) as usize, &mut rng);
                    let exp = match rng.below(4) {
                        0 => ExpectedVersion::Any,
                        1 if v > 0 => ExpectedVersion::StreamExists,
                        _ => ExpectedVersion::Exact(v),
                    };
                    let r = if rng.below(3) == 0 {
                        let other = batch("M", 1, &mut rng);
                        let ms = vec![
                            StreamAppend::new(stream.clone(), exp, events.clone()),
                            StreamAppend::new(format!("CM-{t}"), ExpectedVersion::Any, other.clone()),
                        ];
                        store.append_multi(&ms).map(|rs| {
                            ledger.record(&format!("CM-{t}"), &other, &rs[1]);
                            rs[0].clone()
                        })
                    } else {
                        store.append(&stream, exp, events.clone())
                    };
                    match r {
                        Ok(r) => {
                            v = r.last_version;
                            ledger.record(&stream, &events, &r);
                        }
                        Err(e) if closed_ok(&e, &closing) => {
                            ledger.refused.lock().unwrap().extend(events.iter().map(|e| e.id()));
                            return;
                        }
                        Err(e) => {
                            ledger.fail(format!("round {round}: {e:?}"));
                            return;
                        }
                    }
                }
            }));
        }
        let mut sub = store.subscribe_all(StartFrom::Start).unwrap();
        let subh = thread::spawn(move || {
            let mut n = 0u64;
            while let Ok(Some(e)) = sub.recv() {
                n += 1;
                assert_eq!(e.position(), n, "subscription gap/dup");
            }
            assert!(sub.is_closed());
        });
        {
            let (store, ledger, closing) = (store.clone(), ledger.clone(), closing.clone());
            hs.push(thread::spawn(move || {
                let cps = store.checkpoints();
                loop {
                    let p = store.last_position();
                    match cps.save("c", p) {
                        Ok(()) => {}
                        Err(e) if closed_ok(&e, &closing) => return,
                        Err(e) => {
                            ledger.fail(format!("checkpoint: {e:?}"));
                            return;
                        }
                    }
                    if p > 0 {
                        match store.save_snapshot("C-0", store.stream_version("C-0").unwrap_or(1).max(1), 1, b"s") {
                            Ok(()) => {}
                            Err(Error::InvalidInput(_)) => {} // C-0 not yet there
                            Err(e) if closed_ok(&e, &closing) => return,
                            Err(e) => {
                                ledger.fail(format!("snapshot: {e:?}"));
                                return;
                            }
                        }
                    }
                }
            }));
        }
        thread::sleep(Duration::from_millis(20 + round * 7 % 80));
        closing.store(true, Ordering::Release);
        let closer = {
            let store = store.clone();
            thread::spawn(move || store.close())
        };
        closer
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: close: {e:?}"));
        for h in hs {
            h.join().unwrap();
        }
        subh.join().unwrap();
        let failures = ledger.failures.lock().unwrap().clone();
        assert!(failures.is_empty(), "{failures:#?}");
        drop(store);
        let store = Store::open(&path, options(durability)).unwrap();
        let all = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
        let by_id: HashMap<Uuid, &RecordedEvent> = all.iter().map(|e| (e.id(), e)).collect();
        assert_eq!(by_id.len(), all.len(), "round {round}: duplicate ids");
        let acked = ledger.acked.lock().unwrap();
        for a in acked.iter() {
            let e = by_id
                .get(&a.id)
                .unwrap_or_else(|| panic!("round {round}: acked {a:?} lost"));
            assert_eq!(
                (e.position(), e.version(), e.stream()),
                (a.position, a.version, a.stream.as_str())
            );
        }
        assert_eq!(acked.len(), all.len(), "round {round}: events written without an ack");
        for id in ledger.refused.lock().unwrap().iter() {
            assert!(
                !by_id.contains_key(id),
                "round {round}: an append refused as Closed was written"
            );
        }
        store.close().unwrap();
    }
}

#[test]
fn close_races_sync() {
    within(60, "close races sync", || close_races(Durability::Sync, 12));
}

#[test]
fn close_races_periodic() {
    within(60, "close races periodic", || {
        close_races(Durability::Periodic(Duration::from_millis(3)), 12)
    });
}

#[test]
fn close_races_buffered() {
    within(60, "close races buffered", || close_races(Durability::Buffered, 12));
}

// ------------------------------------------------------ helpers for repros

#[allow(dead_code)]
fn open(path: &Path, d: Durability) -> Store {
    Store::open(path, options(d)).unwrap()
}

// ------------------------------------------------ nothing written after close

fn diff(
    a: &std::collections::BTreeMap<String, Vec<u8>>,
    b: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => d.push(format!("{k} removed")),
            Some(w) if w != v => d.push(format!("{k} changed ({} -> {} bytes)", v.len(), w.len())),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            d.push(format!("{k} created"));
        }
    }
    d
}

/// Workers hammer every writing call while another thread closes the
/// store. Once `close` has returned, the directory must not change any
/// more, whatever the remaining clones call (the doc of `close`: none
/// writes once close has returned); and no spare `*.tmp` is left.
fn nothing_written_after_close(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Store::open(&path, options(durability)).unwrap();
    let closing = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut hs = Vec::new();
    for t in 0..6u64 {
        let (store, closing, stop, failures) = (store.clone(), closing.clone(), stop.clone(), failures.clone());
        hs.push(thread::spawn(move || {
            let cps = store.checkpoints();
            let mut rng = Rng::new(t + 77);
            while !stop.load(Ordering::Acquire) {
                let r: Result<(), Error> = match (t, rng.below(3)) {
                    (0 | 1, _) => store
                        .append(&format!("W-{t}"), ExpectedVersion::Any, batch("w", 2, &mut rng))
                        .map(|_| ()),
                    (2, _) => cps.save("c", store.last_position()),
                    (3, _) => match store.stream_version("W-0") {
                        Some(v) => store.save_snapshot("W-0", v, 1, b"snap"),
                        None => Ok(()),
                    },
                    (4, 0) => store.save_index(),
                    (4, 1) => store.compact_snapshots(),
                    (4, _) => store.sync(),
                    _ => {
                        let _ = store.load_snapshot("W-1");
                        let _ = store.snapshot_stats();
                        let _ = cps.load("c");
                        Ok(())
                    }
                };
                match r {
                    Ok(()) => {}
                    Err(Error::Closed) if closing.load(Ordering::Acquire) => {}
                    Err(e) => {
                        failures.lock().unwrap().push(format!("worker {t}: {e:?}"));
                        return;
                    }
                }
            }
        }));
    }
    thread::sleep(Duration::from_millis(300));
    closing.store(true, Ordering::Release);
    let closer = {
        let store = store.clone();
        thread::spawn(move || store.close())
    };
    closer.join().unwrap().expect("close");
    let after_close = common::files::dir_image(&path);
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    for h in hs {
        h.join().unwrap();
    }
    let later = common::files::dir_image(&path);
    let f = failures.lock().unwrap().clone();
    assert!(f.is_empty(), "{f:#?}");
    let d = diff(&after_close, &later);
    assert!(d.is_empty(), "the directory changed after close returned: {d:?}");
    let tmp: Vec<_> = after_close.keys().filter(|k| k.ends_with(".tmp")).collect();
    assert!(tmp.is_empty(), "temporary files left after close: {tmp:?}");
}

#[test]
fn nothing_written_after_close_sync() {
    within(30, "after close sync", || nothing_written_after_close(Durability::Sync));
}

#[test]
fn nothing_written_after_close_periodic() {
    within(30, "after close periodic", || {
        nothing_written_after_close(Durability::Periodic(Duration::from_millis(3)))
    });
}

#[test]
fn nothing_written_after_close_buffered() {
    within(30, "after close buffered", || {
        nothing_written_after_close(Durability::Buffered)
    });
}

/// Every call on a closed store, through a remaining clone: a clear
/// error or the documented value, never a panic or a hang.
#[test]
fn every_call_after_close_is_clear() {
    within(30, "calls after close", || {
        for (mode, d) in modes() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s");
            let store = Store::open(&path, options(d)).unwrap();
            let mut rng = Rng::new(5);
            for _ in 0..50 {
                store
                    .append("A-1", ExpectedVersion::Any, batch("a", 3, &mut rng))
                    .unwrap();
            }
            let cps = store.checkpoints();
            cps.save("c", 10).unwrap();
            let mut sub = store.subscribe_all(StartFrom::Start).unwrap();
            let dispatcher = common::idle_dispatcher(&store);
            let builder = store.dispatcher();
            let before = common::files::dir_image(&path);
            store.clone().close().unwrap();
            let closed_image = common::files::dir_image(&path);
            let closed = |r: Result<(), Error>, what: &str| {
                assert!(matches!(r, Err(Error::Closed)), "[{mode}] {what}: {r:?}");
            };
            closed(
                store
                    .append("A-1", ExpectedVersion::Any, batch("a", 1, &mut rng))
                    .map(|_| ()),
                "append",
            );
            closed(
                store
                    .append("A-1", ExpectedVersion::Exact(150), batch("a", 1, &mut rng))
                    .map(|_| ()),
                "append exact",
            );
            closed(
                store
                    .append_multi(&[StreamAppend::new(
                        "B-1",
                        ExpectedVersion::NoStream,
                        batch("b", 1, &mut rng),
                    )])
                    .map(|_| ()),
                "append_multi",
            );
            closed(store.subscribe_all(StartFrom::Start).map(|_| ()), "subscribe");
            closed(
                builder
                    .handler("x", SubscriptionFilter::all(), StartFrom::Start, |_| Ok(()))
                    .map(|_| ()),
                "handler",
            );
            closed(store.dispatcher().start().map(|_| ()), "dispatcher start");
            closed(cps.save("c", 20), "checkpoint save");
            closed(cps.load("c").map(|_| ()), "checkpoint load");
            closed(cps.remove("c"), "checkpoint remove");
            closed(store.save_snapshot("A-1", 3, 1, b"x"), "save_snapshot");
            closed(store.compact_snapshots(), "compact_snapshots");
            closed(store.save_index(), "save_index");
            assert!(store.sync().is_ok(), "[{mode}] sync after close");
            assert_eq!(store.last_position(), 150);
            assert_eq!(
                store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap().len(),
                150
            );
            assert!(store.load_snapshot("A-1").snapshot.is_none());
            let _ = store.snapshot_stats();
            let _ = store.stats();
            // A subscription: recv gives None; try_recv and recv_timeout Closed.
            assert!(matches!(sub.try_recv(), Err(Error::Closed)), "[{mode}] try_recv");
            assert!(matches!(
                sub.recv_timeout(Duration::from_millis(10)),
                Err(Error::Closed)
            ));
            assert!(matches!(sub.recv(), Ok(None)));
            assert!(
                !dispatcher.wait_for(1_000_000, Duration::from_secs(5)),
                "wait_for on a closed store"
            );
            dispatcher.join().expect("join");
            // Backup of a closed store: Closed, or a complete copy.
            match store.backup(dir.path().join("b")) {
                Err(Error::Closed) => {}
                Ok(r) => {
                    assert_eq!(r.last_position, 150);
                    let b = Store::open(dir.path().join("b"), options(d)).unwrap();
                    assert_eq!(b.last_position(), 150);
                    b.close().unwrap();
                }
                Err(e) => panic!("[{mode}] backup after close: {e:?}"),
            }
            let after = common::files::dir_image(&path);
            let changes: Vec<_> = diff(&before, &after);
            eprintln!("[{mode}] changes between before close and after the calls: {changes:?}");
            let written = diff(&closed_image, &after);
            assert!(written.is_empty(), "[{mode}] written after close: {written:?}");
            store.close().unwrap();
        }
    });
}

/// `close` promises that nothing is written once it has returned, and that
/// snapshot loads through a remaining clone still return what was written.
/// A load (or `snapshot_stats`) after close on a store whose snapshot file
/// was not open yet used to create the file (write to `snapshots.tmp`,
/// rename, directory sync) in the closed store.
#[test]
fn a_snapshot_load_after_close_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Store::open(&path, Options::default()).unwrap();
    store
        .append("A-1", ExpectedVersion::Any, [EventData::new("E", "{}")])
        .unwrap();
    store.clone().close().unwrap();
    assert!(!path.join("snapshots").exists());
    let load = store.load_snapshot("A-1");
    assert!(load.snapshot.is_none());
    assert!(
        !path.join("snapshots").exists(),
        "a snapshot load after close created the snapshot file"
    );
}

// --------------------------- backups while snapshots compact and checkpoints move

/// Several backups, one after another, while appenders write (roll-overs),
/// snapshot savers force frequent compactions and checkpoint savers move
/// checkpoints. Each backup opens, holds a prefix of the log (compared
/// event by event), every checkpoint it holds loads (none past its log),
/// and every snapshot it holds loads without issue and matches its log.
fn backups_under_fire(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = Store::open(&path, options(durability)).unwrap();
    store.set_snapshot_options(
        annal::SnapshotOptions::default()
            .with_keep_per_stream(1)
            .with_compact_min_bytes(2048),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut hs = Vec::new();
    for t in 0..2u64 {
        let (store, stop) = (store.clone(), stop.clone());
        hs.push(thread::spawn(move || {
            let mut rng = Rng::new(t + 900);
            while !stop.load(Ordering::Acquire) {
                let s = format!("B-{}", rng.below(6));
                store
                    .append(&s, ExpectedVersion::Any, batch(&s, 1 + rng.below(3) as usize, &mut rng))
                    .unwrap();
            }
        }));
    }
    for t in 0..2u64 {
        let (store, stop, failures) = (store.clone(), stop.clone(), failures.clone());
        hs.push(thread::spawn(move || {
            let mut rng = Rng::new(t + 950);
            while !stop.load(Ordering::Acquire) {
                let s = format!("B-{}", rng.below(6));
                let Some(v) = store.stream_version(&s) else { continue };
                let data = vec![b'x'; 200 + rng.below(400) as usize];
                if let Err(e) = store.save_snapshot(&s, v, 7, &data) {
                    failures.lock().unwrap().push(format!("snapshot save: {e:?}"));
                    return;
                }
                let cps = store.checkpoints();
                if let Err(e) = cps.save(&format!("cp-{t}"), store.last_position()) {
                    failures.lock().unwrap().push(format!("checkpoint save: {e:?}"));
                    return;
                }
            }
        }));
    }
    thread::sleep(Duration::from_millis(100));
    let mut reports = Vec::new();
    for k in 0..5 {
        let b = dir.path().join(format!("b{k}"));
        let r = store.backup(&b).unwrap_or_else(|e| panic!("backup {k}: {e:?}"));
        reports.push((b, r));
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Release);
    for h in hs {
        h.join().unwrap();
    }
    let f = failures.lock().unwrap().clone();
    assert!(f.is_empty(), "{f:#?}");
    let all = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
    for (b, r) in reports {
        let copy = Store::open(&b, options(durability)).unwrap_or_else(|e| panic!("open backup {b:?}: {e:?}"));
        assert_eq!(copy.last_position(), r.last_position);
        let ev = copy.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
        assert_eq!(ev.len() as u64, r.last_position);
        for (x, y) in ev.iter().zip(&all) {
            assert_eq!(
                (x.position(), x.id(), x.version(), x.data()),
                (y.position(), y.id(), y.version(), y.data())
            );
        }
        let cps = copy.checkpoints();
        for (name, p) in cps.list().unwrap() {
            assert!(
                p <= r.last_position,
                "backup {b:?}: checkpoint {name} at {p} past its log {}",
                r.last_position
            );
            assert_eq!(cps.load(&name).unwrap(), Some(p));
        }
        for s in 0..6 {
            let name = format!("B-{s}");
            let load = copy.load_snapshot(&name);
            assert!(load.issues.is_empty(), "backup {b:?}: {name}: {:?}", load.issues);
            if let Some(sn) = load.snapshot {
                let e = copy
                    .read_stream(&name, ReadStream::forward().from_version(sn.version).limit(1))
                    .unwrap()
                    .collect_all()
                    .unwrap();
                assert_eq!(e[0].id(), sn.event_id);
            }
        }
        assert!(
            copy.snapshot_issues().is_empty(),
            "backup {b:?}: {:?}",
            copy.snapshot_issues()
        );
        copy.close().unwrap();
    }
    eprintln!("compactions: {:?}", store.snapshot_stats().unwrap().compactions);
    store.close().unwrap();
}

#[test]
fn backups_under_fire_sync() {
    within(60, "backups sync", || backups_under_fire(Durability::Sync));
}

#[test]
fn backups_under_fire_buffered() {
    within(60, "backups buffered", || backups_under_fire(Durability::Buffered));
}

#[test]
fn backups_under_fire_periodic() {
    within(60, "backups periodic", || {
        backups_under_fire(Durability::Periodic(Duration::from_millis(2)))
    });
}

// ------------------------------- racing retries: multi-stream, mixed expectations

/// Three threads send the very same append (same ids) at once, each under
/// another expectation that the stream satisfies (Any, StreamExists,
/// Exact(pre-version)), single- and multi-stream, while other appenders
/// write elsewhere. Exactly one copy is written; every caller gets the same
/// result.
fn racing_retries(durability: Durability, rounds: u64) {
    racing_retries_with(options(durability), rounds)
}

fn racing_retries_with(opts: Options, rounds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s"), opts).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let noise: Vec<_> = (0..2u64)
        .map(|t| {
            let (store, stop) = (store.clone(), stop.clone());
            thread::spawn(move || {
                let mut rng = Rng::new(t + 4000);
                while !stop.load(Ordering::Acquire) {
                    store
                        .append(&format!("Noise-{t}"), ExpectedVersion::Any, batch("n", 2, &mut rng))
                        .unwrap();
                }
            })
        })
        .collect();
    let mut rng = Rng::new(4242);
    store
        .append("R-a", ExpectedVersion::NoStream, batch("a", 1, &mut rng))
        .unwrap();
    store
        .append("R-b", ExpectedVersion::NoStream, batch("b", 1, &mut rng))
        .unwrap();
    for round in 0..rounds {
        let va = store.stream_version("R-a").unwrap();
        let vb = store.stream_version("R-b").unwrap();
        let ea = batch("a", 1 + rng.below(3) as usize, &mut rng);
        let eb = batch("b", 1 + rng.below(2) as usize, &mut rng);
        let multi = round % 2 == 1;
        let exps = [
            ExpectedVersion::Any,
            ExpectedVersion::StreamExists,
            ExpectedVersion::Exact(va),
        ];
        let results: Vec<Result<Vec<annal::AppendResult>, Error>> = thread::scope(|s| {
            let hs: Vec<_> = exps
                .iter()
                .enumerate()
                .map(|(k, &exp)| {
                    let (store, ea, eb) = (&store, ea.clone(), eb.clone());
                    s.spawn(move || {
                        if multi {
                            // The second stream's expectation rotates too.
                            let expb = [
                                ExpectedVersion::Exact(vb),
                                ExpectedVersion::Any,
                                ExpectedVersion::StreamExists,
                            ][k];
                            store.append_multi(&[StreamAppend::new("R-a", exp, ea), StreamAppend::new("R-b", expb, eb)])
                        } else {
                            store.append("R-a", exp, ea).map(|r| vec![r])
                        }
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let first = results[0]
            .as_ref()
            .unwrap_or_else(|e| panic!("round {round} (multi {multi}) Any: {e:?}"))
            .clone();
        for (k, r) in results.iter().enumerate() {
            match r {
                Ok(r) => assert_eq!(
                    r, &first,
                    "round {round} (multi {multi}): caller {k} got another result"
                ),
                Err(e) => panic!("round {round} (multi {multi}): caller {k} ({:?}): {e:?}", exps[k]),
            }
        }
        assert_eq!(first[0].first_version, va + 1, "round {round}");
        assert_eq!(
            store.stream_version("R-a"),
            Some(first[0].last_version),
            "round {round}: written more than once"
        );
        if multi {
            assert_eq!(
                store.stream_version("R-b"),
                Some(first[1].last_version),
                "round {round}"
            );
        }
    }
    stop.store(true, Ordering::Release);
    for h in noise {
        h.join().unwrap();
    }
    let all = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
    let ids: HashSet<Uuid> = all.iter().map(|e| e.id()).collect();
    assert_eq!(ids.len(), all.len(), "an id stored twice");
    store.close().unwrap();
}

#[test]
fn racing_retries_sync() {
    within(60, "racing retries sync", || racing_retries(Durability::Sync, 150));
}

#[test]
fn racing_retries_sync_parking() {
    within(60, "racing retries parking", || {
        racing_retries_with(options(Durability::Sync).with_group_commit_spin(false), 100)
    });
}

#[test]
fn racing_retries_buffered() {
    within(60, "racing retries buffered", || {
        racing_retries(Durability::Buffered, 400)
    });
}

#[test]
fn racing_retries_periodic() {
    within(60, "racing retries periodic", || {
        racing_retries(Durability::Periodic(Duration::from_millis(2)), 400)
    });
}

// -------------------------------------------- two closes at once, under load

#[test]
fn concurrent_closes_under_load_with_waiters() {
    within(60, "concurrent closes", || {
        for (mode, d) in modes() {
            for round in 0..5u64 {
                let dir = tempfile::tempdir().unwrap();
                let store = Store::open(dir.path().join("s"), options(d)).unwrap();
                let seen = Arc::new(AtomicU64::new(0));
                let s2 = seen.clone();
                let dispatcher = Arc::new(
                    store
                        .dispatcher()
                        .handler("h", SubscriptionFilter::all(), StartFrom::Start, move |e| {
                            s2.store(e.position(), Ordering::Release);
                            Ok(())
                        })
                        .unwrap()
                        .start()
                        .unwrap(),
                );
                let mut hs = Vec::new();
                for t in 0..3u64 {
                    let store = store.clone();
                    hs.push(thread::spawn(move || {
                        let mut rng = Rng::new(t);
                        loop {
                            match store.append(&format!("X-{t}"), ExpectedVersion::Any, batch("x", 1, &mut rng)) {
                                Ok(_) => {}
                                Err(Error::Closed) => return,
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                    }));
                }
                for _ in 0..2 {
                    let (store, dispatcher) = (store.clone(), dispatcher.clone());
                    hs.push(thread::spawn(move || {
                        while dispatcher.is_running() {
                            let p = store.last_position();
                            let _ = dispatcher.wait_for(p, Duration::from_secs(20));
                        }
                    }));
                }
                thread::sleep(Duration::from_millis(30 + round * 20));
                let closers: Vec<_> = (0..2)
                    .map(|_| {
                        let store = store.clone();
                        thread::spawn(move || store.close())
                    })
                    .collect();
                for c in closers {
                    c.join().unwrap().unwrap_or_else(|e| panic!("[{mode}] close: {e:?}"));
                }
                for h in hs {
                    h.join().unwrap();
                }
                let dispatcher = Arc::try_unwrap(dispatcher).ok().unwrap();
                let st = dispatcher.join().unwrap();
                assert!(st[0].position <= store.last_position());
                assert_eq!(seen.load(Ordering::Acquire), st[0].position);
            }
        }
    });
}
