//! Adversarial review of: `Dispatcher::wait_for`, the hub's handler-call
//! lock and `DISPATCHING_FOR`, the held-locks registry behind
//! `Error::Locked { by_this_process }`, and the repository's
//! `CommandIdReused` / snapshot fall-back loop. Public API only; anything
//! that could hang runs under a timeout.

mod aggregate_support;
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use aggregate_support::{Account, AccountCommand, AccountEvent, fold};
use annal::aggregate::{Aggregate, CommandMetadata, DomainEvent, JsonCodec, Repository, RepositoryError};
use annal::{
    Dispatcher, Durability, Error, EventData, ExpectedVersion, Options, SnapshotIssue, StartFrom, Store,
    SubscriptionFilter,
};
use serde::{Deserialize, Serialize};

/// Runs `f` on its own thread; fails the test if it does not finish within
/// `secs` (a hang or a deadlock) or panics.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still running after {secs} s (hang or deadlock)"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

fn fast() -> Options {
    Options::default().with_durability(Durability::Buffered)
}

fn append(store: &Store, stream: &str, n: usize) -> u64 {
    let mut last = 0;
    for _ in 0..n {
        last = store
            .append(stream, ExpectedVersion::Any, [EventData::new("E", "{}")])
            .unwrap()
            .last_position;
    }
    last
}

fn locked_by_this_process(e: Error) -> bool {
    match e {
        Error::Locked { by_this_process, .. } => by_this_process,
        other => panic!("expected Error::Locked, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// 1. Dispatcher::wait_for
// ---------------------------------------------------------------------------

/// Many waiters, each for its own position, while events are appended one
/// by one: every one returns true, and at that moment every handler is at
/// or past its position (never true while a handler is behind).
#[test]
fn wait_for_many_concurrent_waiters_see_every_handler_there() {
    within(40, "concurrent waiters", || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), fast()).unwrap();
        let dispatcher = Arc::new(
            store
                .dispatcher()
                .handler("all", SubscriptionFilter::all(), StartFrom::Start, |_| Ok(()))
                .unwrap()
                .handler(
                    "a-only",
                    SubscriptionFilter::category("A"),
                    StartFrom::Start,
                    |_| Ok(()),
                )
                .unwrap()
                .handler("slow", SubscriptionFilter::all(), StartFrom::Start, |_| {
                    thread::sleep(Duration::from_micros(300));
                    Ok(())
                })
                .unwrap()
                .start()
                .unwrap(),
        );
        const N: u64 = 400;
        let waiters: Vec<_> = (0..8u64)
            .map(|i| {
                let d = dispatcher.clone();
                thread::spawn(move || {
                    let mut checked = 0;
                    for k in 0..10u64 {
                        let p = (i * 53 + k * 41) % N + 1;
                        let started = Instant::now();
                        assert!(d.wait_for(p, Duration::from_secs(20)), "wait_for({p}) false");
                        assert!(
                            started.elapsed() < Duration::from_secs(15),
                            "wait_for({p}) slept to its timeout"
                        );
                        for h in d.status() {
                            assert!(
                                h.position >= p,
                                "wait_for({p}) true while {} is at {}",
                                h.name,
                                h.position
                            );
                        }
                        checked += 1;
                    }
                    checked
                })
            })
            .collect();
        for i in 0..N {
            let stream = if i % 3 == 0 { "A-1" } else { "B-1" };
            append(&store, stream, 1);
        }
        for w in waiters {
            assert_eq!(w.join().unwrap(), 10);
        }
        // All there: true, then at once, also with a zero timeout.
        assert!(dispatcher.wait_for(N, Duration::from_secs(20)));
        assert!(dispatcher.wait_for(N, Duration::ZERO));
        assert!(!dispatcher.wait_for(N + 1, Duration::from_millis(50)));
    });
}

/// A handler that fails before the position makes waiters (already
/// waiting, or new) return false at once; a position before the failure is
/// still reached.
#[test]
fn wait_for_is_false_at_once_when_a_handler_failed_before_the_position() {
    within(30, "failed handler", || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), fast()).unwrap();
        let dispatcher = Arc::new(
            store
                .dispatcher()
                .handler("ok", SubscriptionFilter::all(), StartFrom::Start, |_| Ok(()))
                .unwrap()
                .handler("fails-at-3", SubscriptionFilter::all(), StartFrom::Start, |e| {
                    if e.position() == 3 { Err("boom".into()) } else { Ok(()) }
                })
                .unwrap()
                .start()
                .unwrap(),
        );
        let d = dispatcher.clone();
        let early = thread::spawn(move || {
            let started = Instant::now();
            (d.wait_for(5, Duration::from_secs(60)), started.elapsed())
        });
        thread::sleep(Duration::from_millis(100));
        append(&store, "S-1", 5);
        let (reached, took) = early.join().unwrap();
        assert!(!reached);
        assert!(took < Duration::from_secs(10), "waited {took:?} for a failed handler");
        let started = Instant::now();
        assert!(!dispatcher.wait_for(4, Duration::from_secs(60)));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(dispatcher.wait_for(2, Duration::from_secs(10)));
        let status = dispatcher.status();
        assert_eq!(status[1].position, 2);
        assert_eq!(status[1].failure.as_ref().map(|f| f.0), Some(3));
    });
}

/// The store closed while a waiter waits: the dispatcher ends, the waiter
/// returns false long before its timeout.
#[test]
fn wait_for_is_false_at_once_when_the_store_closes_while_waiting() {
    within(30, "close while waiting", || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), fast()).unwrap();
        append(&store, "S-1", 1);
        let dispatcher = Arc::new(common::idle_dispatcher(&store));
        assert!(dispatcher.wait_for(1, Duration::from_secs(10)));
        let d = dispatcher.clone();
        let waiter = thread::spawn(move || {
            let started = Instant::now();
            (d.wait_for(100, Duration::from_secs(60)), started.elapsed())
        });
        thread::sleep(Duration::from_millis(200));
        store.close().unwrap();
        let (reached, took) = waiter.join().unwrap();
        assert!(!reached);
        assert!(took < Duration::from_secs(10), "waited {took:?} after the close");
        assert!(!dispatcher.wait_for(100, Duration::from_secs(60)));
    });
}

/// A handler closing its own store: the dispatcher ends (no later event
/// is handled) and a waiter returns false at once.
#[test]
fn wait_for_is_false_at_once_when_a_handler_closes_its_own_store() {
    within(30, "handler closes own store", || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), fast()).unwrap();
        append(&store, "S-1", 5);
        let calls = Arc::new(AtomicU64::new(0));
        let counted = calls.clone();
        let mut own = Some(store.clone());
        let dispatcher = store
            .dispatcher()
            .handler("closer", SubscriptionFilter::all(), StartFrom::Start, move |e| {
                counted.fetch_add(1, Ordering::SeqCst);
                if e.position() == 2
                    && let Some(s) = own.take()
                {
                    s.close().unwrap();
                }
                Ok(())
            })
            .unwrap()
            .start()
            .unwrap();
        let started = Instant::now();
        assert!(!dispatcher.wait_for(5, Duration::from_secs(60)));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "a handler was called after its store's close returned"
        );
        let status = dispatcher.join().unwrap();
        assert_eq!(status[0].position, 2);
    });
}

/// A timeout of `Duration::MAX` ("wait as long as it takes") must not
/// panic: `Instant::now() + timeout` overflows.
#[test]
fn wait_for_accepts_the_largest_timeout() {
    within(20, "Duration::MAX", || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), fast()).unwrap();
        let dispatcher = common::idle_dispatcher(&store);
        append(&store, "S-1", 1);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatcher.wait_for(1, Duration::MAX)));
        assert!(
            matches!(outcome, Ok(true)),
            "wait_for(1, Duration::MAX) panicked or was false"
        );
    });
}

/// `wait_for` from inside one of the dispatcher's own handlers: no
/// deadlock; a position already passed is true, the one being handled can
/// never be reached from there (false once the timeout ends).
#[test]
fn wait_for_from_inside_a_handler_does_not_deadlock() {
    within(30, "wait_for in handler", || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), fast()).unwrap();
        let slot: Arc<Mutex<Option<Arc<Dispatcher>>>> = Arc::new(Mutex::new(None));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (slot.clone(), answers.clone());
        let dispatcher = Arc::new(
            store
                .dispatcher()
                .handler("self-waiter", SubscriptionFilter::all(), StartFrom::Start, move |e| {
                    let d = s.lock().unwrap().clone();
                    if let Some(d) = d {
                        let passed = d.wait_for(e.position() - 1, Duration::from_secs(2));
                        let started = Instant::now();
                        let current = d.wait_for(e.position(), Duration::from_millis(300));
                        a.lock().unwrap().push((passed, current, started.elapsed()));
                    }
                    Ok(())
                })
                .unwrap()
                .start()
                .unwrap(),
        );
        append(&store, "S-1", 1);
        assert!(dispatcher.wait_for(1, Duration::from_secs(10)));
        *slot.lock().unwrap() = Some(dispatcher.clone());
        append(&store, "S-1", 1);
        assert!(dispatcher.wait_for(2, Duration::from_secs(10)));
        *slot.lock().unwrap() = None;
        let answers = answers.lock().unwrap().clone();
        assert_eq!(answers.len(), 1);
        let (passed, current, _took) = answers[0];
        assert!(passed);
        assert!(!current);
    });
}

// ---------------------------------------------------------------------------
// 2. Hub: no handler called once close() has returned
// ---------------------------------------------------------------------------

/// A slow handler; a close from another thread waits for the call in
/// progress, and no call starts after it returned.
#[test]
fn close_from_another_thread_leaves_no_handler_running_or_starting() {
    within(40, "close from another thread", || {
        for round in 0..15 {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), fast()).unwrap();
            append(&store, "S-1", 40);
            let in_call = Arc::new(AtomicBool::new(false));
            let calls = Arc::new(AtomicU64::new(0));
            let (f, c) = (in_call.clone(), calls.clone());
            let dispatcher = store
                .dispatcher()
                .handler("slow", SubscriptionFilter::all(), StartFrom::Start, move |_| {
                    f.store(true, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(3));
                    c.fetch_add(1, Ordering::SeqCst);
                    f.store(false, Ordering::SeqCst);
                    Ok(())
                })
                .unwrap()
                .start()
                .unwrap();
            while calls.load(Ordering::SeqCst) < (round % 5) + 1 {
                thread::yield_now();
            }
            store.close().unwrap();
            assert!(
                !in_call.load(Ordering::SeqCst),
                "round {round}: a handler runs after close returned"
            );
            let after = calls.load(Ordering::SeqCst);
            thread::sleep(Duration::from_millis(30));
            assert_eq!(
                calls.load(Ordering::SeqCst),
                after,
                "round {round}: a handler called after close"
            );
            assert!(dispatcher.join().is_ok());
        }
    });
}

/// A handler of store B closes store A while A's handler is in a call:
/// that close (not from a handler of A) waits for A's call.
#[test]
fn close_from_a_handler_of_another_store_waits_for_this_stores_call() {
    within(30, "close from another store's handler", || {
        let dir_a = tempfile::tempdir().unwrap();
        let dir_b = tempfile::tempdir().unwrap();
        let a = Store::open(dir_a.path(), fast()).unwrap();
        let b = Store::open(dir_b.path(), fast()).unwrap();
        let in_call = Arc::new(AtomicBool::new(false));
        let entered = Arc::new(Barrier::new(2));
        let (f, gate) = (in_call.clone(), entered.clone());
        let da = a
            .dispatcher()
            .handler("slow-a", SubscriptionFilter::all(), StartFrom::Start, move |e| {
                f.store(true, Ordering::SeqCst);
                if e.position() == 1 {
                    gate.wait();
                }
                thread::sleep(Duration::from_millis(200));
                f.store(false, Ordering::SeqCst);
                Ok(())
            })
            .unwrap()
            .start()
            .unwrap();
        let seen_running = Arc::new(Mutex::new(None));
        let (seen, flag, gate) = (seen_running.clone(), in_call.clone(), entered.clone());
        let mut a_clone = Some(a.clone());
        let db = b
            .dispatcher()
            .handler("closes-a", SubscriptionFilter::all(), StartFrom::Start, move |_| {
                if let Some(a) = a_clone.take() {
                    gate.wait();
                    a.close().unwrap();
                    *seen.lock().unwrap() = Some(flag.load(Ordering::SeqCst));
                }
                Ok(())
            })
            .unwrap()
            .start()
            .unwrap();
        append(&a, "A-1", 3);
        append(&b, "B-1", 1);
        assert!(db.wait_for(1, Duration::from_secs(20)));
        assert_eq!(
            *seen_running.lock().unwrap(),
            Some(false),
            "A's handler ran after A's close returned"
        );
        let status = da.join().unwrap();
        assert_eq!(status[0].position, 1, "A's handler was called after A's close returned");
    });
}

// ---------------------------------------------------------------------------
// 3. Error::Locked { by_this_process }
// ---------------------------------------------------------------------------

#[test]
fn locked_by_this_process_through_a_symlink_or_dotdot_path() {
    let root = tempfile::tempdir().unwrap();
    let real = root.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = root.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let store = Store::open(&link, fast()).unwrap();
    assert!(locked_by_this_process(Store::open(&real, fast()).unwrap_err()));
    let dotdot = real.join("..").join("real");
    assert!(locked_by_this_process(Store::open(&dotdot, fast()).unwrap_err()));
    store.close().unwrap();
    Store::open(&dotdot, fast()).unwrap().close().unwrap();
}

/// Read-only opens share the lock: with one of two dropped, a writable
/// open is still refused as held by this process; with both dropped, it
/// opens.
#[test]
fn locked_by_this_process_counts_shared_holders() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), fast()).unwrap();
    append(&store, "S-1", 1);
    store.close().unwrap();
    let ro = || Store::open(dir.path(), fast().with_read_only(true)).unwrap();
    let (r1, r2) = (ro(), ro());
    assert!(locked_by_this_process(Store::open(dir.path(), fast()).unwrap_err()));
    drop(r1);
    assert!(locked_by_this_process(Store::open(dir.path(), fast()).unwrap_err()));
    drop(r2);
    let store = Store::open(dir.path(), fast()).unwrap();
    assert!(locked_by_this_process(
        Store::open(dir.path(), fast().with_read_only(true)).unwrap_err()
    ));
    // A closed store whose clone lives still holds the directory.
    let clone = store.clone();
    store.close().unwrap();
    let e = Store::open(dir.path(), fast()).unwrap_err();
    assert!(e.to_string().contains("this process"), "{e}");
    assert!(locked_by_this_process(e));
    drop(clone);
    Store::open(dir.path(), fast()).unwrap().close().unwrap();
}

/// The store directory renamed while open: an open of the new name meets
/// this process's lock (flock follows the inode), so by_this_process must
/// be true.
#[test]
fn locked_by_this_process_after_the_directory_is_renamed() {
    let root = tempfile::tempdir().unwrap();
    let (old, new) = (root.path().join("old"), root.path().join("new"));
    std::fs::create_dir(&old).unwrap();
    let store = Store::open(&old, fast()).unwrap();
    std::fs::rename(&old, &new).unwrap();
    let e = Store::open(&new, fast()).unwrap_err();
    assert!(locked_by_this_process(e), "the holder is this process's store");
    drop(store);
}

/// Another process holding the directory (`flock`, as the error's docs
/// say excludes the store): by_this_process is false, even in a process
/// that held the same directory before.
#[test]
fn locked_by_another_process_is_not_by_this_process() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path(), fast()).unwrap().close().unwrap();
    // -o: flock(1) itself holds the lock, not the shell (killing it releases).
    let mut child = std::process::Command::new("flock")
        .args(["-x", "-o"])
        .arg(dir.path())
        .args(["-c", "echo locked; sleep 20"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flock(1)");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    let outcome = Store::open(dir.path(), fast());
    let _ = child.kill();
    let _ = child.wait();
    let e = outcome.unwrap_err();
    assert!(e.to_string().contains("another"), "{e}");
    assert!(!locked_by_this_process(e));
    // Released: opens again.
    Store::open(dir.path(), fast()).unwrap().close().unwrap();
}

/// The CLI holding the lock (a child process): `annal` run on the
/// directory while this process holds it reports the lock; meanwhile this
/// process's own second open says by_this_process.
#[test]
fn cli_on_a_directory_this_process_holds_reports_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), fast()).unwrap();
    append(&store, "S-1", 1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_annal"))
        .arg("verify")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("locked"), "{text}");
    assert!(!text.contains("this process"), "the CLI is another process: {text}");
    assert!(locked_by_this_process(Store::open(dir.path(), fast()).unwrap_err()));
    store.close().unwrap();
}

// ---------------------------------------------------------------------------
// 4. Repository: CommandIdReused, snapshot fall-back loop
// ---------------------------------------------------------------------------

fn meta() -> CommandMetadata {
    CommandMetadata::new()
}

#[test]
fn a_command_id_reused_on_another_aggregate_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), fast()).unwrap();
    let repo = Repository::<Account>::new(store.clone(), JsonCodec);
    let m = meta();
    repo.execute("1", AccountCommand::Open("a".into()), m.clone()).unwrap();
    match repo.execute("2", AccountCommand::Open("b".into()), m.clone()) {
        Err(RepositoryError::CommandIdReused { command_id, stream }) => {
            assert_eq!(command_id, m.command_id);
            assert_eq!(stream, "Account-2");
        }
        other => panic!("expected CommandIdReused, got {other:?}"),
    }
    assert_eq!(store.stream_version("Account-2"), None);
    // The same command again on its own aggregate: a repeat.
    let again = repo.execute("1", AccountCommand::Open("a".into()), m.clone()).unwrap();
    assert!(again.repeated);
    // next_command: new id, same conversation.
    let next = m.next_command();
    assert_ne!(next.command_id, m.command_id);
    assert_eq!(next.correlation_id, Some(m.command_id));
    assert_eq!(next.causation_id, m.causation_id);
    assert!(
        !repo
            .execute("2", AccountCommand::Open("b".into()), next)
            .unwrap()
            .repeated
    );
}

/// An aggregate whose command appends `n` events, `n` from its command.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Tally {
    events: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Ticked;

impl DomainEvent for Ticked {
    fn event_type(&self) -> &'static str {
        "Ticked"
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

/// Calls of `Tally::handle` (to make it non-deterministic on purpose).
static HANDLE_CALLS: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Debug)]
enum TallyCommand {
    Tick(usize),
    /// 1 or 2 events, alternating per call: a handler that is not
    /// deterministic.
    Flaky,
}

impl Aggregate for Tally {
    const CATEGORY: &'static str = "Tally";
    type Event = Ticked;
    type Command = TallyCommand;
    type Error = Never;
    fn apply(&mut self, _: &Ticked) {
        self.events += 1;
    }
    fn handle(&self, command: TallyCommand) -> Result<Vec<Ticked>, Never> {
        let n = match command {
            TallyCommand::Tick(n) => n,
            TallyCommand::Flaky => 1 + HANDLE_CALLS.fetch_add(1, Ordering::SeqCst) % 2,
        };
        Ok((0..n).map(|_| Ticked).collect())
    }
}

/// Both runs' outcomes in one round of a race, and the stream's version.
type RaceRound = (
    Vec<Result<annal::aggregate::Executed<Tally>, RepositoryError<Never>>>,
    u64,
);

/// Runs `rounds` races of one command (same id, same aggregate) on two
/// threads, its handler deciding 1 or 2 events alternately; returns, per
/// round, both outcomes and the stream's final version.
fn race_one_command(rounds: usize) -> Vec<RaceRound> {
    let dir = tempfile::tempdir().unwrap();
    let durability = if std::env::var_os("REVIEW_BUFFERED").is_some() {
        Durability::Buffered
    } else {
        Durability::Sync
    };
    let store = Store::open(dir.path(), Options::default().with_durability(durability)).unwrap();
    let repo = Arc::new(Repository::<Tally>::new(store.clone(), JsonCodec));
    (0..rounds)
        .map(|round| {
            let m = meta();
            let id = format!("r{round}");
            let gate = Arc::new(Barrier::new(2));
            let runs: Vec<_> = (0..2)
                .map(|_| {
                    let (repo, m, id, gate) = (repo.clone(), m.clone(), id.clone(), gate.clone());
                    thread::spawn(move || {
                        gate.wait();
                        repo.execute(&id, TallyCommand::Flaky, m)
                    })
                })
                .collect();
            let outcomes: Vec<_> = runs.into_iter().map(|r| r.join().unwrap()).collect();
            (outcomes, store.stream_version(&format!("Tally-{id}")).unwrap_or(0))
        })
        .collect()
}

/// The same command run at once by two threads, its handler deciding a
/// different number of events each time: never `CommandIdReused` (the
/// command id was not used by another command), even while the first
/// run's events are still being synced (durable mode).
#[test]
fn a_genuine_race_of_one_command_is_never_reported_as_reused() {
    within(60, "same command race", || {
        let results = race_one_command(150);
        let reused: Vec<usize> = (0..results.len())
            .filter(|&r| {
                results[r]
                    .0
                    .iter()
                    .any(|o| matches!(o, Err(RepositoryError::CommandIdReused { .. })))
            })
            .collect();
        for (round, (outcomes, _)) in results.iter().enumerate() {
            for o in outcomes {
                if let Err(e) = o
                    && !matches!(e, RepositoryError::CommandIdReused { .. })
                {
                    panic!("round {round}: {e}");
                }
            }
        }
        assert!(
            reused.is_empty(),
            "CommandIdReused for a race of one command in rounds {reused:?}"
        );
    });
}

/// Same races: the run that did not write returns the winner's execution
/// (AGGREGATES.md: "the others return its execution"), so its `version`
/// is the stream's, not that of a prefix of the winner's events taken for
/// a retry.
#[test]
fn a_raced_run_returns_the_winners_execution() {
    within(60, "same command race", || {
        for (round, (outcomes, version)) in race_one_command(150).iter().enumerate() {
            for o in outcomes.iter().flatten() {
                assert_eq!(o.version, *version, "round {round}: {o:?}");
                assert_eq!(o.state.events, *version, "round {round}: {o:?}");
            }
        }
    });
}

/// A command of many events whose first id the window has forgotten but a
/// later one it holds: retried on its own aggregate it is a repeat, on
/// another aggregate it is CommandIdReused.
#[test]
fn a_many_event_command_half_out_of_the_window_is_a_repeat_not_a_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), fast().with_idempotency_window_events(4)).unwrap();
    let repo = Repository::<Tally>::new(store.clone(), JsonCodec).with_snapshot_every(6);
    let m = meta();
    let first = repo.execute("1", TallyCommand::Tick(6), m.clone()).unwrap();
    assert_eq!(first.version, 6);
    assert_eq!(first.snapshot_saved, Some(6));
    let again = repo.execute("1", TallyCommand::Tick(6), m.clone()).unwrap();
    assert!(again.repeated, "{again:?}");
    assert_eq!(again.version, 6);
    assert_eq!(store.stream_version("Tally-1"), Some(6));
    match repo.execute("2", TallyCommand::Tick(6), m.clone()) {
        Err(RepositoryError::CommandIdReused { .. }) => {}
        other => panic!("expected CommandIdReused, got {other:?}"),
    }
    assert_eq!(store.stream_version("Tally-2"), None);
}

fn account_events(repo: &Repository<Account>, id: &str, deposits: &[u64]) -> Vec<AccountEvent> {
    let mut events = Vec::new();
    for &d in deposits {
        let cmd = if d == 0 {
            AccountCommand::Open("o".into())
        } else {
            AccountCommand::Deposit(d)
        };
        repo.execute(id, cmd, meta()).unwrap();
        events.push(if d == 0 {
            AccountEvent::Opened { owner: "o".into() }
        } else {
            AccountEvent::Deposited { amount: d }
        });
    }
    events
}

/// Snapshots at 2 (another schema), 4 (good) and 6 (undecodable): every
/// load, `load_at_version` included, starts from the newest usable one at
/// or below its version and reports each passed-over snapshot once.
#[test]
fn load_at_version_passes_unusable_snapshots_over_for_older_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), fast()).unwrap();
    let repo = Repository::<Account>::new(store.clone(), JsonCodec);
    let mut events = account_events(&repo, "1", &[0, 1]);
    store.save_snapshot("Account-1", 2, 99, b"{}").unwrap();
    events.extend(account_events(&repo, "1", &[2, 3]));
    assert_eq!(repo.snapshot("1").unwrap(), 4);
    events.extend(account_events(&repo, "1", &[4, 5]));
    store
        .save_snapshot("Account-1", 6, Account::SNAPSHOT_SCHEMA_VERSION, b"{nope")
        .unwrap();

    let now = repo.load("1").unwrap();
    assert_eq!(now.state, fold(&events));
    assert_eq!(now.snapshot_version, Some(4));
    assert_eq!(now.replayed, 2);
    assert!(
        matches!(now.issues[..], [SnapshotIssue::Undecodable { version: 6, .. }]),
        "{:?}",
        now.issues
    );

    let at5 = repo.load_at_version("1", 5).unwrap();
    assert_eq!(at5.state, fold(&events[..5]));
    assert_eq!(at5.snapshot_version, Some(4));
    assert!(at5.issues.is_empty(), "{:?}", at5.issues);

    let at3 = repo.load_at_version("1", 3).unwrap();
    assert_eq!(at3.state, fold(&events[..3]));
    assert_eq!(at3.snapshot_version, None);
    assert_eq!(at3.replayed, 3);
    assert!(
        matches!(
            at3.issues[..],
            [SnapshotIssue::SchemaMismatch {
                version: 2,
                found: 99,
                ..
            }]
        ),
        "{:?}",
        at3.issues
    );
    // An impossible id is refused by snapshot, as by every load.
    let long = "x".repeat(100_000);
    assert!(matches!(
        repo.snapshot(&long),
        Err(RepositoryError::Store(Error::InvalidInput(_)))
    ));
}

/// A snapshot ahead of the log (as after a repair cut the log), then one
/// of another schema, then a usable one: the load uses the usable one and
/// reports each passed-over snapshot once (the loop must not report the
/// snapshot ahead of the log again on each step back).
#[test]
fn the_snapshot_loop_reports_each_passed_over_snapshot_once() {
    let root = tempfile::tempdir().unwrap();
    let (full, short) = (root.path().join("full"), root.path().join("short"));
    let store = Store::open(&full, fast()).unwrap();
    let repo = Repository::<Account>::new(store.clone(), JsonCodec);
    let mut events = account_events(&repo, "1", &[0]);
    assert_eq!(repo.snapshot("1").unwrap(), 1);
    events.extend(account_events(&repo, "1", &[1]));
    store.save_snapshot("Account-1", 2, 99, b"{}").unwrap();
    drop(repo);
    store.close().unwrap();
    common::files::copy_files(&full, &short);
    let store = Store::open(&full, fast()).unwrap();
    let repo = Repository::<Account>::new(store.clone(), JsonCodec);
    account_events(&repo, "1", &[2, 3]);
    assert_eq!(repo.snapshot("1").unwrap(), 4);
    drop(repo);
    store.close().unwrap();
    let file = annal::snapshot::file::FILE_NAME;
    std::fs::copy(full.join(file), short.join(file)).unwrap();

    let store = Store::open(&short, fast()).unwrap();
    let loaded = Repository::<Account>::new(store, JsonCodec).load("1").unwrap();
    assert_eq!(loaded.state, fold(&events));
    assert_eq!(loaded.snapshot_version, Some(1));
    let ahead = loaded
        .issues
        .iter()
        .filter(|i| matches!(i, SnapshotIssue::AheadOfLog { .. }))
        .count();
    let mismatched = loaded
        .issues
        .iter()
        .filter(|i| matches!(i, SnapshotIssue::SchemaMismatch { .. }))
        .count();
    assert_eq!((ahead, mismatched), (1, 1), "{:?}", loaded.issues);
}

/// Events 1 and 2 in one page; the handler blocks on event 2 (a slow
/// call). Every handler is at 1 already: `wait_for(1)` must return then,
/// not sleep until its timeout because progress is announced only at the
/// end of the page.
#[test]
fn wait_for_returns_when_handlers_got_there_even_if_a_later_event_of_the_page_is_slow() {
    within(30, "wake-up within a page", || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), fast()).unwrap();
        append(&store, "S-1", 2);
        let (release, blocked) = mpsc::channel::<()>();
        let blocked = Mutex::new(blocked);
        let dispatcher = store
            .dispatcher()
            .handler("blocks-on-2", SubscriptionFilter::all(), StartFrom::Start, move |e| {
                if e.position() == 2 {
                    let _ = blocked.lock().unwrap().recv_timeout(Duration::from_secs(20));
                }
                Ok(())
            })
            .unwrap()
            .start()
            .unwrap();
        let started = Instant::now();
        let reached = dispatcher.wait_for(1, Duration::from_secs(5));
        let took = started.elapsed();
        let _ = release.send(());
        assert!(reached);
        assert!(
            took < Duration::from_secs(3),
            "wait_for(1) slept {took:?} though the handler was at 1"
        );
    });
}

/// A backlog of more than two pages; the handler blocks at event 100 (so
/// a waiter is waiting) and again at the last event (in the last, short
/// page). `wait_for(512)`, the end of the second full page, must return
/// once that page is done, not at its timeout.
#[test]
fn wait_for_wakes_at_the_end_of_each_full_page() {
    within(40, "wake-up after a full page", || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), fast()).unwrap();
        store
            .append("S-1", ExpectedVersion::Any, (0..600).map(|_| EventData::new("E", "{}")))
            .unwrap();
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let dispatcher = Arc::new(
            store
                .dispatcher()
                .handler("gated", SubscriptionFilter::all(), StartFrom::Start, move |e| {
                    if e.position() == 100 || e.position() == 600 {
                        let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(20));
                    }
                    Ok(())
                })
                .unwrap()
                .start()
                .unwrap(),
        );
        let d = dispatcher.clone();
        let waiter = thread::spawn(move || {
            let started = Instant::now();
            (d.wait_for(512, Duration::from_secs(6)), started.elapsed())
        });
        thread::sleep(Duration::from_millis(300));
        release.send(()).unwrap();
        let (reached, took) = waiter.join().unwrap();
        let _ = release.send(());
        assert!(reached);
        assert!(took < Duration::from_secs(4), "wait_for(512) slept {took:?}");
    });
}
