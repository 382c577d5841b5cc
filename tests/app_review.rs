//! A new user's review of annal through a small task-tracker app
//! (`tests/app_support/mod.rs`, whose domain this file uses): what the
//! README, docs/*.md and the rustdoc promise, checked end to end.

#![cfg(all(feature = "aggregate", feature = "cli"))]

mod app_support;
use app_support as app;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use annal::aggregate::{Aggregate, CommandMetadata, JsonCodec, Repository, RepositoryError, command_event_id};
use annal::{Error, Options, ProjectionRunner, ReadAll, ReadStream, SnapshotIssue, Store, SubscriptionFilter};
use app::{OpenTasks, OpenTasksModel, Task, TaskCommand, TaskError, TaskEvent, Tasks};

/// Runs `f` on a thread and fails the test if it takes longer than `secs`.
fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => {
            t.join().expect("join");
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match t.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!(),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("timed out after {secs} s (hang?)"),
    }
}

fn create(tasks: &Tasks, id: &str, project: &str) -> annal::aggregate::Executed<Task> {
    tasks
        .execute(
            id,
            TaskCommand::Create {
                project: project.into(),
                title: format!("title of {id}"),
                priority: 2,
            },
            CommandMetadata::new(),
        )
        .expect("create")
}

fn comment(tasks: &Tasks, id: &str, text: &str) -> annal::aggregate::Executed<Task> {
    tasks
        .execute(id, TaskCommand::Comment { text: text.into() }, CommandMetadata::new())
        .expect("comment")
}

/// The state of a task folded by hand from the raw stream, up to `version`.
fn fold(store: &Store, tasks: &Tasks, id: &str, version: u64) -> Task {
    let mut t = Task::default();
    for e in store.read_stream(&format!("Task-{id}"), ReadStream::forward()).unwrap() {
        let e = e.unwrap();
        if e.version() > version {
            break;
        }
        t.apply(&tasks.decode(&e).unwrap());
    }
    t
}

// ---------------------------------------------------------------------------
// Aggregates, commands, concurrency
// ---------------------------------------------------------------------------

/// AGGREGATES.md: "Nothing is ever written on a refused command or a
/// conflict, so no update is lost"; README: versions and positions gapless.
#[test]
fn concurrent_commands_on_shared_and_own_tasks_lose_nothing() {
    with_timeout(20, || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let tasks = app::repository(&store);
        create(&tasks, "web.shared", "web");
        let threads = 4;
        let per_thread = 15;
        let attempts = Arc::new(AtomicU64::new(0));
        std::thread::scope(|s| {
            for t in 0..threads {
                let tasks = tasks.clone();
                let attempts = attempts.clone();
                s.spawn(move || {
                    let own = format!("web.own{t}");
                    create(&tasks, &own, "web");
                    for k in 0..per_thread {
                        let r = comment(&tasks, "web.shared", &format!("{t}/{k}"));
                        attempts.fetch_add(r.attempts as u64, Ordering::Relaxed);
                        assert!(!r.repeated);
                        assert_eq!(r.events, 1);
                        comment(&tasks, &own, &format!("{k}"));
                    }
                });
            }
        });
        let shared = tasks.load("web.shared").unwrap();
        assert_eq!(shared.state.comments, threads * per_thread);
        assert_eq!(shared.version, 1 + threads * per_thread);
        assert_eq!(shared.state, tasks.load_without_snapshot("web.shared").unwrap().state);
        for t in 0..threads {
            let own = tasks.load(&format!("web.own{t}")).unwrap();
            assert_eq!((own.state.comments, own.version), (per_thread, 1 + per_thread));
        }
        // The global log: gapless positions, each stream gapless, no id twice.
        let all = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
        assert_eq!(all.len() as u64, store.last_position());
        let mut versions: BTreeMap<String, u64> = BTreeMap::new();
        let mut ids = HashSet::new();
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.position(), i as u64 + 1);
            let v = versions.entry(e.stream().to_string()).or_default();
            *v += 1;
            assert_eq!(e.version(), *v, "{} v{}", e.stream(), e.version());
            assert!(ids.insert(e.id()), "event id {} twice", e.id());
        }
        store.close().unwrap();
    });
}

/// AGGREGATES.md: a command retried with the same metadata after an error
/// whose outcome is unknown is applied once; the retry returns the earlier
/// execution with `repeated` set (its `events` and `last_position`).
#[test]
fn retry_after_unknown_outcome_is_applied_once_even_after_snapshot_and_restart() {
    with_timeout(20, || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let tasks = app::repository(&store); // snapshot every 5
        create(&tasks, "api.1", "api");
        let meta = CommandMetadata::new();
        let first = tasks
            .execute("api.1", TaskCommand::Comment { text: "hi".into() }, meta.clone())
            .unwrap();
        assert!(!first.repeated);
        let again = tasks
            .execute("api.1", TaskCommand::Comment { text: "hi".into() }, meta.clone())
            .unwrap();
        assert!(again.repeated);
        assert_eq!((again.events, again.last_position), (first.events, first.last_position));
        assert_eq!(again.state.comments, 1);

        // Later commands take the stream past a snapshot, beyond the command.
        for k in 0..8 {
            comment(&tasks, "api.1", &format!("{k}"));
        }
        let loaded = tasks.load("api.1").unwrap();
        assert!(loaded.snapshot_version.unwrap() > first.version, "{loaded:?}");
        let again = tasks
            .execute("api.1", TaskCommand::Comment { text: "hi".into() }, meta.clone())
            .unwrap();
        assert!(again.repeated, "found through the id window");
        assert_eq!(again.last_position, first.last_position);

        // A restart (close, reopen): the window is loaded at open.
        drop(tasks);
        store.close().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let tasks = app::repository(&store);
        let again = tasks
            .execute("api.1", TaskCommand::Comment { text: "hi".into() }, meta.clone())
            .unwrap();
        assert!(again.repeated);
        assert_eq!(tasks.load("api.1").unwrap().state.comments, 9);
        // The events carry the documented ids and metadata.
        let e = store.read_position(first.last_position).unwrap().unwrap();
        assert_eq!(e.id(), command_event_id(meta.command_id, 0));
        assert_eq!(e.correlation_id(), Some(meta.command_id));
        assert_eq!(e.causation_id(), Some(meta.command_id));
        store.close().unwrap();
    });
}

/// AGGREGATES.md: "threads running one command at once apply it once".
#[test]
fn one_command_from_several_threads_at_once_is_applied_once() {
    with_timeout(20, || {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Options::default()).unwrap();
        let tasks = app::repository(&store);
        create(&tasks, "api.race", "api");
        for round in 0..20 {
            let meta = CommandMetadata::new();
            let barrier = std::sync::Barrier::new(4);
            let results: Vec<_> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            tasks.execute(
                                "api.race",
                                TaskCommand::Comment {
                                    text: format!("r{round}"),
                                },
                                meta.clone(),
                            )
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let mut positions = BTreeSet::new();
            for r in results {
                let r = r.expect("every run succeeds");
                assert_eq!(r.events, 1);
                positions.insert(r.last_position);
            }
            assert_eq!(positions.len(), 1, "all runs report the one execution");
        }
        assert_eq!(tasks.load("api.race").unwrap().state.comments, 20);
        store.close().unwrap();
    });
}

/// A refused command writes nothing and is matchable as the domain error;
/// a concurrency conflict beyond the retries is `RepositoryError::Conflict`.
#[test]
fn refused_commands_are_matchable_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let tasks = app::repository(&store);
    match tasks.execute("nope", TaskCommand::Complete, CommandMetadata::new()) {
        Err(RepositoryError::Domain(TaskError::NotFound)) => {}
        other => panic!("{other:?}"),
    }
    create(&tasks, "a.1", "a");
    let before = store.last_position();
    match tasks.execute(
        "a.1",
        TaskCommand::Create {
            project: "a".into(),
            title: "x".into(),
            priority: 1,
        },
        CommandMetadata::new(),
    ) {
        Err(RepositoryError::Domain(TaskError::AlreadyExists)) => {}
        other => panic!("{other:?}"),
    }
    // A command deciding nothing: Ok, 0 events, nothing written.
    let title = tasks.load("a.1").unwrap().state.title;
    let r = tasks
        .execute("a.1", TaskCommand::Rename { title }, CommandMetadata::new())
        .unwrap();
    assert_eq!((r.events, r.last_position, r.version), (0, 0, 1));
    assert_eq!(store.last_position(), before);
    store.close().unwrap();
}

// ---------------------------------------------------------------------------
// Upcasting, snapshots, time travel
// ---------------------------------------------------------------------------

/// AGGREGATES.md "Schema evolution": a v1 payload is upcast on read; with no
/// upcaster, the load fails with `Codec` naming the schema version reached.
#[test]
fn legacy_created_v1_is_upcast_and_fails_clearly_without_the_upcaster() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    app::write_legacy_task(&store, "old.1", "old", "Legacy").unwrap();
    let tasks = app::repository(&store);
    let t = tasks.load("old.1").unwrap().state;
    assert_eq!(
        (t.project.as_str(), t.title.as_str(), t.priority, t.exists),
        ("old", "Legacy", 3, true)
    );
    // New commands work on top of it.
    tasks
        .execute("old.1", TaskCommand::Complete, CommandMetadata::new())
        .unwrap();
    // Raw reads show it as stored (rule 6).
    let raw = store
        .read_stream("Task-old.1", ReadStream::forward())
        .unwrap()
        .collect_all()
        .unwrap();
    assert_eq!(raw[0].schema_version(), 1);
    assert_eq!(raw[1].schema_version(), 1);
    let bare = Repository::<Task>::new(store.clone(), JsonCodec);
    match bare.load("old.1") {
        Err(RepositoryError::Codec {
            stream,
            version,
            source,
        }) => {
            assert_eq!((stream.as_str(), version), ("Task-old.1", 1));
            assert!(source.0.contains("schema version 1"), "{source}");
        }
        other => panic!("{other:?}"),
    }
    store.close().unwrap();
}

/// AGGREGATES.md: time travel gives exactly the state at a past version or
/// position, whichever snapshot it starts from.
#[test]
fn time_travel_matches_a_hand_fold_at_every_version_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let tasks = app::repository(&store).with_snapshot_every(3);
    create(&tasks, "t.1", "p");
    create(&tasks, "t.2", "p");
    let mut positions = vec![];
    for k in 0..20 {
        let id = if k % 3 == 0 { "t.2" } else { "t.1" };
        match k % 7 {
            5 => tasks
                .execute(
                    id,
                    TaskCommand::Rename { title: format!("r{k}") },
                    CommandMetadata::new(),
                )
                .unwrap(),
            6 => tasks
                .execute(
                    id,
                    TaskCommand::Assign {
                        assignee: format!("a{k}"),
                    },
                    CommandMetadata::new(),
                )
                .unwrap(),
            _ => comment(&tasks, id, "c"),
        };
        positions.push(store.last_position());
    }
    let v1 = store.stream_version("Task-t.1").unwrap();
    for v in 0..=v1 + 2 {
        let at = tasks.load_at_version("t.1", v).unwrap();
        assert_eq!(at.version, v.min(v1));
        assert_eq!(at.state, fold(&store, &tasks, "t.1", v), "version {v}");
    }
    for p in 0..=store.last_position() {
        let at = tasks.load_at_position("t.1", p).unwrap();
        let expect_version = store
            .read_stream("Task-t.1", ReadStream::forward())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.position() <= p)
            .count() as u64;
        assert_eq!(at.version, expect_version, "position {p}");
        assert_eq!(at.state, fold(&store, &tasks, "t.1", expect_version), "position {p}");
    }
    store.close().unwrap();
}

/// AGGREGATES.md: a schema-mismatched snapshot costs a replay, never a
/// failed load, and is reported in `Loaded::issues`.
#[test]
fn snapshot_of_an_older_state_schema_is_replayed_over() {
    #[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    struct TaskV2(Task);
    impl Aggregate for TaskV2 {
        const CATEGORY: &'static str = "Task";
        const SNAPSHOT_SCHEMA_VERSION: u32 = 2;
        type Event = TaskEvent;
        type Command = TaskCommand;
        type Error = TaskError;
        fn apply(&mut self, e: &TaskEvent) {
            self.0.apply(e)
        }
        fn handle(&self, c: TaskCommand) -> Result<Vec<TaskEvent>, TaskError> {
            self.0.handle(c)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let tasks = app::repository(&store);
    create(&tasks, "s.1", "p");
    for _ in 0..6 {
        comment(&tasks, "s.1", "c");
    }
    assert!(tasks.load("s.1").unwrap().snapshot_version.is_some());
    let v2 = Repository::<TaskV2>::new(store.clone(), JsonCodec).with_upcasters(app::upcasters());
    let l = v2.load("s.1").unwrap();
    assert_eq!(l.snapshot_version, None);
    assert_eq!(l.state.0.comments, 6);
    assert!(l.issues.iter().any(|i| matches!(
        i,
        SnapshotIssue::SchemaMismatch {
            found: 1,
            expected: 2,
            ..
        }
    )));
    store.close().unwrap();
}

// ---------------------------------------------------------------------------
// Read model with its checkpoint; dispatcher; restart
// ---------------------------------------------------------------------------

fn expected_open(tasks: &Tasks, store: &Store) -> BTreeMap<String, BTreeSet<String>> {
    let mut open: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in store.stream_names() {
        let id = s.strip_prefix("Task-").unwrap();
        let t = tasks.load(id).unwrap().state;
        let set = open.entry(t.project.clone()).or_default();
        if !t.done {
            set.insert(id.to_string());
        }
    }
    open
}

fn runner(store: &Store, tasks: &Tasks, file: &Path) -> ProjectionRunner<OpenTasks> {
    ProjectionRunner::new(
        store,
        "open-tasks",
        SubscriptionFilter::category("Task"),
        OpenTasks::load(file.to_path_buf(), tasks.clone()),
    )
    .unwrap()
    .with_checkpoint_every(7, Duration::from_millis(50))
}

/// SUBSCRIPTIONS.md "Writing an idempotent handler" (1): model and position
/// in one file; after a restart (and a model file ahead of the checkpoint,
/// as a crash between end_batch and the checkpoint save leaves) no event is
/// applied twice or skipped.
#[test]
fn open_tasks_read_model_survives_restart_and_redelivery() {
    with_timeout(20, || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let file = dir.path().join("open.json");
        let store = Store::open(&path, Options::default()).unwrap();
        let tasks = app::repository(&store);
        app::write_legacy_task(&store, "web.0", "web", "legacy").unwrap();
        for i in 0..6 {
            create(&tasks, &format!("web.{}", i + 1), "web");
            create(&tasks, &format!("api.{i}"), "api");
        }
        tasks
            .execute("api.0", TaskCommand::Complete, CommandMetadata::new())
            .unwrap();
        tasks
            .execute("web.0", TaskCommand::Complete, CommandMetadata::new())
            .unwrap();
        let mut r = runner(&store, &tasks, &file);
        r.run_until_caught_up().unwrap();
        assert_eq!(r.projection().model.open, expected_open(&tasks, &store));
        assert_eq!(r.checkpoint(), store.last_position());
        drop(r);

        // More events, then the checkpoint is behind the model file (a
        // crash after end_batch, before the checkpoint save).
        tasks
            .execute("api.0", TaskCommand::Reopen, CommandMetadata::new())
            .unwrap();
        tasks
            .execute("web.3", TaskCommand::Complete, CommandMetadata::new())
            .unwrap();
        let mut r = runner(&store, &tasks, &file);
        r.run_until_caught_up().unwrap();
        assert_eq!(r.projection().skipped, 0);
        drop(r);
        store.checkpoints().save("open-tasks", 3).unwrap();

        // Restart.
        drop(tasks);
        store.close().unwrap();
        let store = Store::open(&path, Options::default()).unwrap();
        let tasks = app::repository(&store);
        tasks
            .execute("web.2", TaskCommand::Complete, CommandMetadata::new())
            .unwrap();
        let mut r = runner(&store, &tasks, &file);
        let applied = r.run_until_caught_up().unwrap();
        assert_eq!(applied, store.last_position() - 3, "redelivered after checkpoint 3");
        assert_eq!(r.projection().applied, 1, "only the new event changes the model");
        let saved: OpenTasksModel = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(saved.position, store.last_position());
        assert_eq!(saved.open, expected_open(&tasks, &store));
        assert_eq!(
            store.checkpoints().load("open-tasks").unwrap(),
            Some(store.last_position())
        );
        drop(r);
        drop(tasks);
        store.close().unwrap();
    });
}

/// SUBSCRIPTIONS.md "the dispatcher": each handler gets the events its
/// filter selects, in order, each once; restarted from the positions its
/// status gave, nothing is missed or repeated.
#[test]
fn dispatcher_handlers_see_each_event_once_across_a_restart() {
    with_timeout(20, || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events");
        let side = Arc::new(app::Side::default());
        let store = Store::open(&path, Options::default()).unwrap();
        let d = app::start_dispatcher(&store, &side).unwrap();
        let tasks = app::repository(&store);
        std::thread::scope(|s| {
            for t in 0..3 {
                let tasks = tasks.clone();
                s.spawn(move || {
                    let id = format!("p.{t}");
                    create(&tasks, &id, "p");
                    for k in 0..10 {
                        let cmd = if k % 3 == 0 {
                            TaskCommand::Assign {
                                assignee: format!("u{t}.{k}"),
                            }
                        } else {
                            TaskCommand::Comment { text: "x".into() }
                        };
                        tasks.execute(&id, cmd, CommandMetadata::new()).unwrap();
                    }
                });
            }
        });
        assert!(app::wait_dispatcher(&d, store.last_position(), Duration::from_secs(10)));
        app::save_dispatcher_checkpoints(&store, &d).unwrap();
        let st = d.stop().unwrap();
        assert!(st.iter().all(|h| h.position == store.last_position()), "{st:?}");

        // Restart, with events appended while no dispatcher runs.
        drop(tasks);
        store.close().unwrap();
        let store = Store::open(&path, Options::default()).unwrap();
        let tasks = app::repository(&store);
        tasks
            .execute(
                "p.0",
                TaskCommand::Assign {
                    assignee: "late".into(),
                },
                CommandMetadata::new(),
            )
            .unwrap();
        let d = app::start_dispatcher(&store, &side).unwrap();
        tasks
            .execute(
                "p.1",
                TaskCommand::Assign {
                    assignee: "live".into(),
                },
                CommandMetadata::new(),
            )
            .unwrap();
        assert!(app::wait_dispatcher(&d, store.last_position(), Duration::from_secs(10)));
        d.stop().unwrap();

        let all = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut expected_notes = vec![];
        for e in &all {
            *counts.entry(e.event_type().to_string()).or_default() += 1;
            if e.event_type() == "Assigned" {
                let v: serde_json::Value = serde_json::from_slice(e.data()).unwrap();
                expected_notes.push(format!("{}: {}", v["assignee"].as_str().unwrap(), e.stream()));
            }
        }
        assert_eq!(*side.counts.lock().unwrap(), counts);
        assert_eq!(
            *side.notifications.lock().unwrap(),
            expected_notes,
            "in global order, each once"
        );
        drop(tasks);
        store.close().unwrap();
    });
}

/// Store docs: close "releases the directory lock (once every clone of the
/// handle ... is gone)". A restart inside the app therefore needs every
/// Repository (each holds a clone) dropped first; a forgotten one makes the
/// reopen fail with `Locked`, whose message blames "another handle or
/// process" rather than a clone of this (closed) store.
#[test]
fn reopen_after_close_with_a_repository_still_alive() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let tasks = app::repository(&store);
    create(&tasks, "r.1", "r");
    store.close().unwrap();
    // The closed store still reads; writes fail with Closed.
    assert_eq!(tasks.load("r.1").unwrap().version, 1);
    match tasks.execute("r.1", TaskCommand::Complete, CommandMetadata::new()) {
        Err(RepositoryError::Store(Error::Closed)) => {}
        other => panic!("{other:?}"),
    }
    // The lock is held here, and the error says so (and why).
    let err = Store::open(dir.path(), Options::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Locked {
                by_this_process: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("until the last clone of its handle is dropped"),
        "{err}"
    );
    drop(tasks);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    assert_eq!(store.stream_version("Task-r.1"), Some(1));
    store.close().unwrap();
}

// ---------------------------------------------------------------------------
// CLI: export / import / verify / stats
// ---------------------------------------------------------------------------

fn run_cli(args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    app::cli(Path::new(env!("CARGO_BIN_EXE_annal")), args, stdin).unwrap()
}

/// CLI.md: `annal export A | annal import B` gives B the same events (ids,
/// versions, positions, schema versions, data and metadata bytes); `export
/// B` is byte-identical; `verify` is clean; `stats` counts them. The copy
/// loads to the same task states and time travel by position agrees.
#[test]
fn export_import_through_the_cli_gives_the_same_app() {
    with_timeout(20, || {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let store = Store::open(&a, Options::default()).unwrap();
        app::write_legacy_task(&store, "x.0", "x", "legacy").unwrap();
        let tasks = app::repository(&store);
        for i in 1..4 {
            create(&tasks, &format!("x.{i}"), "x");
            for _ in 0..4 {
                comment(&tasks, &format!("x.{i}"), "c");
            }
        }
        // A snapshot and a checkpoint exist in A (neither is exported).
        store.checkpoints().save("open-tasks", 5).unwrap();
        let states: Vec<_> = (0..4).map(|i| tasks.load(&format!("x.{i}")).unwrap().state).collect();
        let at_pos7 = tasks.load_at_position("x.1", 7).unwrap().state;
        let last = store.last_position();
        drop(tasks);
        store.close().unwrap();

        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        let export = run_cli(&["export", a], None);
        assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
        assert_eq!(export.stdout.iter().filter(|&&c| c == b'\n').count() as u64, last);
        let import = run_cli(&["import", b], Some(&export.stdout));
        assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
        let again = run_cli(&["export", b], None);
        assert!(again.stdout == export.stdout, "export of the copy differs");
        // Importing again is an idempotent retry (ids + exact versions).
        let twice = run_cli(&["import", b], Some(&export.stdout));
        assert!(twice.status.success(), "{}", String::from_utf8_lossy(&twice.stderr));

        let verify = run_cli(&["verify", b], None);
        assert_eq!(
            verify.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
        assert_eq!(v["clean"], true);
        assert_eq!(v["events"], last);
        assert_eq!(v["duplicate_ids"], serde_json::Value::Null);
        let stats = run_cli(&["stats", b], None);
        assert!(stats.status.success());
        let s: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
        assert_eq!((s["events"].as_u64(), s["streams"].as_u64()), (Some(last), Some(4)));

        let copy = Store::open(b, Options::default().with_read_only(true)).unwrap();
        let tasks = Repository::<Task>::new(copy.clone(), JsonCodec).with_upcasters(app::upcasters());
        for (i, st) in states.iter().enumerate() {
            assert_eq!(&tasks.load(&format!("x.{i}")).unwrap().state, st);
        }
        assert_eq!(tasks.load_at_position("x.1", 7).unwrap().state, at_pos7);
        // Metadata ($correlationId) survives.
        let e = copy.read_position(last).unwrap().unwrap();
        assert!(e.correlation_id().is_some());
        // The read-only copy refuses commands with ReadOnly.
        match tasks.execute("x.1", TaskCommand::Complete, CommandMetadata::new()) {
            Err(RepositoryError::Store(Error::ReadOnly { .. })) => {}
            other => panic!("{other:?}"),
        }
    });
}

/// CLI.md "Store creation": every command other than append/import fails
/// with exit code 1 on a directory without a store and creates nothing.
#[test]
fn cli_verify_and_stats_on_a_missing_store_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("none");
    for cmd in ["verify", "stats", "export"] {
        let out = run_cli(&[cmd, p.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no annal store"), "{cmd}");
        assert!(!p.join("LOCK").exists());
    }
}

// ---------------------------------------------------------------------------
// Smaller promises met on the way
// ---------------------------------------------------------------------------

/// `Repository::load` documents InvalidInput for an id that makes no valid
/// stream name "as every load does"; `Repository::snapshot` is a load too.
#[test]
fn snapshot_of_an_invalid_id_is_refused_like_a_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let tasks = app::repository(&store);
    let long = "x".repeat(300);
    assert!(matches!(
        tasks.load(&long),
        Err(RepositoryError::Store(Error::InvalidInput(_)))
    ));
    match tasks.snapshot(&long) {
        Err(RepositoryError::Store(Error::InvalidInput(_))) => {}
        other => panic!("snapshot of an impossible id: {other:?} (a load of it is InvalidInput)"),
    }
    store.close().unwrap();
}

/// One request running several commands (as examples/ledger.rs does):
/// `next_command` gives each its own id under the request's correlation
/// id, so none is taken for a repeat of another. A command id reused on
/// another aggregate is refused, saying so.
#[test]
fn one_request_many_commands_and_a_reused_command_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let tasks = app::repository(&store);
    let request = CommandMetadata::new();
    let create = |id: &str| TaskCommand::Create {
        project: "p".into(),
        title: id.into(),
        priority: 1,
    };
    let first = tasks.execute("bob", create("bob"), request.next_command()).unwrap();
    let second = tasks
        .execute("bob", TaskCommand::Comment { text: "1".into() }, request.next_command())
        .unwrap();
    assert!(!second.repeated && second.state.comments == 1);
    tasks.execute("alice", create("alice"), request.next_command()).unwrap();
    for position in 1..=3 {
        let e = store.read_position(position).unwrap().unwrap();
        assert_eq!(e.correlation_id(), Some(request.command_id));
    }
    let _ = first;

    // The same command id on another aggregate: refused, nothing written.
    let used = request.next_command();
    tasks
        .execute("bob", TaskCommand::Comment { text: "2".into() }, used.clone())
        .unwrap();
    let err = tasks
        .execute("alice", TaskCommand::Comment { text: "x".into() }, used.clone())
        .unwrap_err();
    match &err {
        RepositoryError::CommandIdReused { command_id, stream } => {
            assert_eq!((*command_id, stream.as_str()), (used.command_id, "Task-alice"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("give each command its own id"), "{err}");
    assert_eq!(store.stream_version("Task-alice"), Some(1));
    store.close().unwrap();
}
