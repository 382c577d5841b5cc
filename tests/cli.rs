//! The `annal` command-line tool, run as a separate process on temporary
//! directories: every command, every exit code, the export/import round
//! trip, verify and repair on damaged stores.
#![cfg(feature = "cli")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use annal::{EventData, ExpectedVersion, Options, ReadAll, Store};
use serde_json::Value;

mod cli_support;
use cli_support::*;

fn ok(args: &[&str]) -> Vec<Value> {
    let o = run(args);
    assert_eq!(code(&o), 0, "{args:?}: {}", stderr(&o));
    json_lines(&o)
}

/// A store in `dir` with small segments, `n` events over streams `c-0`..,
/// with payloads of every kind.
fn sample_store(dir: &Path, n: u64) {
    let store = Store::open(dir, Options::default().with_segment_size_bytes(16 * 1024)).unwrap();
    for i in 0..n {
        let data: Vec<u8> = match i % 5 {
            0 => format!("{{\"i\":{i}, \"pad\":\"{}\"}}", "x".repeat(100)).into_bytes(),
            1 => vec![0xff, 0, i as u8],
            2 => b"{\n  \"pretty\": true\n}".to_vec(),
            3 => Vec::new(),
            _ => format!(" {i} ").into_bytes(),
        };
        let metadata: &[u8] = match i % 4 {
            0 => b"",
            1 => b"null",
            2 => b"{\"m\":1}",
            _ => b"not json",
        };
        let e = EventData::new(format!("T{}", i % 3), data)
            .with_metadata(metadata.to_vec())
            .with_schema_version((i % 2 + 1) as u16);
        store
            .append(&format!("c-{}", i % 4), ExpectedVersion::Any, [e])
            .unwrap();
    }
    store.close().unwrap();
}

#[test]
fn help_works_on_every_command() {
    let o = run(&["--help"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("Exit codes"));
    for cmd in [
        "append", "import", "read", "read-all", "export", "stats", "streams", "verify", "repair", "backup", "salvage",
    ] {
        let o = run(&[cmd, "--help"]);
        assert_eq!(code(&o), 0, "{cmd}: {}", stderr(&o));
        assert!(stdout(&o).contains("Usage: annal"), "{cmd}");
        let o = run(&["help", cmd]);
        assert_eq!(code(&o), 0, "help {cmd}");
    }
}

/// Help and version text that cannot be written is a failure (exit 1,
/// said on stderr), not a success.
#[cfg(target_os = "linux")]
#[test]
fn help_that_cannot_be_written_fails() {
    for args in [&["--help"][..], &["--version"], &["read", "--help"]] {
        let o = run_into_full_disk(args);
        assert_eq!(code(&o), 1, "{args:?}");
        assert!(
            stderr(&o).starts_with("annal: cannot write to standard output"),
            "{args:?}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["append", d],
        vec!["append", d, "s", "T", "--expected", "maybe"],
        vec!["append", d, "s", "T", "--data", "{not json"],
        vec!["append", d, "s", "T", "--id", "not-a-uuid"],
        vec!["read", d, "s", "--limit", "-1"],
    ] {
        let o = run(&args);
        assert_eq!(code(&o), 2, "{args:?}");
        assert!(!stderr(&o).is_empty());
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing created");
}

#[test]
fn append_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("new/store");
    let d = s(&store);
    let r = ok(&["append", d, "Order-1", "Placed", "--data", r#"{"sku":"A", "qty":2}"#]);
    assert_eq!(
        r[0],
        serde_json::json!({"stream":"Order-1","first_version":1,"last_version":1,"first_position":1,"last_position":1})
    );
    let id = "6f1c1b9e-3a57-4c3e-9a47-3f1e0a3a0b01";
    ok(&[
        "append",
        d,
        "Order-1",
        "Paid",
        "--expected",
        "1",
        "--metadata",
        r#"{"user":"u"}"#,
        "--id",
        id,
    ]);
    ok(&[
        "append",
        d,
        "User-1",
        "Registered",
        "--expected",
        "no-stream",
        "--data-base64",
        "/wA=",
    ]);
    ok(&[
        "append",
        d,
        "Order-2",
        "Placed",
        "--expected",
        "any",
        "--metadata",
        "null",
    ]);
    let r = ok(&["append", d, "Order-1", "Shipped", "--expected", "exists"]);
    assert_eq!(r[0]["first_version"], 3);
    assert_eq!(r[0]["first_position"], 5);

    // Wrong expected version: exit 3, the actual version in the message.
    let o = run(&["append", d, "Order-1", "Late", "--expected", "1"]);
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains("actual 3"), "{}", stderr(&o));
    let o = run(&["append", d, "Nope-1", "X", "--expected", "exists"]);
    assert_eq!(code(&o), 3);
    // Invalid input (empty type is not allowed by the library): exit 1.
    let o = run(&["append", d, "s", ""]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));

    let events = ok(&["read", d, "Order-1"]);
    assert_eq!(events.len(), 3);
    let e = &events[0];
    for key in [
        "position",
        "stream",
        "version",
        "id",
        "type",
        "timestamp",
        "data",
        "metadata",
    ] {
        assert!(e.get(key).is_some(), "missing {key} in {e}");
    }
    assert_eq!(e["data"], serde_json::json!({"sku":"A","qty":2}));
    assert_eq!(e["metadata"], Value::Null);
    assert!(e["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(events[1]["id"], id);
    assert_eq!(events[1]["metadata"]["user"], "u");
    // `--metadata null` is no metadata, as in import lines: export (exact
    // bytes) leaves it out rather than giving the bytes `null` in base64.
    let exported = ok(&["export", d]);
    let placed = exported.iter().find(|l| l["stream"] == "Order-2").unwrap();
    assert!(
        placed.get("metadata").is_none() && placed.get("metadata_base64").is_none(),
        "{placed}"
    );
    let versions = |v: &[Value]| v.iter().map(|e| e["version"].as_u64().unwrap()).collect::<Vec<_>>();
    let positions = |v: &[Value]| v.iter().map(|e| e["position"].as_u64().unwrap()).collect::<Vec<_>>();
    assert_eq!(versions(&ok(&["read", d, "Order-1", "--backward"])), [3, 2, 1]);
    assert_eq!(versions(&ok(&["read", d, "Order-1", "--from", "2"])), [2, 3]);
    assert_eq!(
        versions(&ok(&["read", d, "Order-1", "--from", "2", "--backward"])),
        [2, 1]
    );
    assert_eq!(versions(&ok(&["read", d, "Order-1", "--limit", "2"])), [1, 2]);
    assert!(ok(&["read", d, "Missing-1"]).is_empty());

    let user = ok(&["read", d, "User-1"]);
    assert_eq!(user[0]["data_base64"], "/wA=");
    assert!(user[0].get("data").is_none());

    assert_eq!(positions(&ok(&["read-all", d])), [1, 2, 3, 4, 5]);
    assert_eq!(positions(&ok(&["read-all", d, "--from", "2"])), [3, 4, 5]);
    assert_eq!(positions(&ok(&["read-all", d, "--backward"])), [5, 4, 3, 2, 1]);
    assert_eq!(positions(&ok(&["read-all", d, "--backward", "--from", "3"])), [2, 1]);
    assert_eq!(positions(&ok(&["read-all", d, "--limit", "2"])), [1, 2]);
    assert_eq!(positions(&ok(&["read-all", d, "--type", "Placed"])), [1, 4]);
    assert_eq!(
        positions(&ok(&["read-all", d, "--type", "Placed", "--type", "Paid"])),
        [1, 2, 4]
    );
    assert_eq!(positions(&ok(&["read-all", d, "--category", "Order"])), [1, 2, 4, 5]);
    assert_eq!(
        positions(&ok(&[
            "read-all",
            d,
            "--category",
            "Order",
            "--type",
            "Placed",
            "--backward",
            "--limit",
            "1"
        ])),
        [4]
    );

    let streams = ok(&["streams", d]);
    assert_eq!(
        streams,
        [
            serde_json::json!({"stream":"Order-1","version":3}),
            serde_json::json!({"stream":"Order-2","version":1}),
            serde_json::json!({"stream":"User-1","version":1}),
        ]
    );
}

#[test]
fn import_single_and_batch_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let input = concat!(
        r#"{"stream":"a-1","type":"Created","data":{"x":1},"expected":"no-stream","id":"00000000-0000-0000-0000-000000000001"}"#,
        "\n\n",
        r#"{"stream":"a-1","expected":1,"events":[{"type":"E1","data":[1]},{"type":"E2","metadata":{"k":"v"}}]}"#,
        "\n",
        r#"{"stream":"b-1","type":"Bin","data_base64":"AAEC","metadata_base64":"/w=="}"#,
        "\n",
    );
    let o = run_with_stdin(&["import", d], input);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let results = json_lines(&o);
    assert_eq!(results.len(), 3);
    assert_eq!(
        results[1],
        serde_json::json!({"stream":"a-1","first_version":2,"last_version":3,"first_position":2,"last_position":3})
    );
    let all = ok(&["read-all", d]);
    assert_eq!(all.len(), 4);
    assert_eq!(all[0]["id"], "00000000-0000-0000-0000-000000000001");
    assert_eq!(all[2]["metadata"]["k"], "v");
    assert_eq!(all[3]["data_base64"], "AAEC");
    assert_eq!(all[3]["metadata_base64"], "/w==");

    // Base64 in an import line is read as `--data-base64` reads it: its
    // whitespace (here a line break and spaces) is left out.
    let o = run_with_stdin(
        &["import", d],
        "{\"stream\":\"b-1\",\"type\":\"Bin\",\"data_base64\":\"AA\\nEC\",\"metadata_base64\":\" /w== \"}\n",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let all = ok(&["read-all", d]);
    assert_eq!(all.len(), 5);
    assert_eq!(all[4]["data_base64"], "AAEC");
    assert_eq!(all[4]["metadata_base64"], "/w==");

    // From a file, with progress on stderr.
    let file = dir.path().join("in.jsonl");
    std::fs::write(
        &file,
        "{\"stream\":\"c-1\",\"type\":\"T\"}\n{\"stream\":\"c-1\",\"type\":\"T\"}",
    )
    .unwrap();
    let o = run(&["import", d, s(&file), "--progress"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o).len(), 2, "a last line without newline counts");
    assert!(stderr(&o).contains("events"), "{}", stderr(&o));
    let o = run(&["import", d, s(&dir.path().join("missing.jsonl"))]);
    assert_eq!(code(&o), 1);
}

#[test]
fn import_stops_at_the_first_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let input = concat!(
        "{\"stream\":\"s-1\",\"type\":\"A\"}\n",
        "{\"stream\":\"s-1\",\"type\":\"B\"}\n",
        "{\"stream\":\"s-1\",\"type\":\n",
        "{\"stream\":\"s-1\",\"type\":\"C\"}\n",
    );
    let o = run_with_stdin(&["import", d], input);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("line 3"), "{}", stderr(&o));
    assert_eq!(json_lines(&o).len(), 2, "both earlier lines acknowledged");
    assert_eq!(ok(&["read-all", d]).len(), 2);

    for (line, message) in [
        (r#"{"stream":"s-1","type":"X","colour":1}"#, "unknown key"),
        (r#"{"type":"X"}"#, "missing \"stream\""),
        (r#"{"stream":"s-1","type":"X","expected":"soon"}"#, "\"expected\""),
        (r#"[1,2]"#, "JSON object"),
        (r#"{"stream":"s-1","type":"X","data_base64":"***"}"#, "base64"),
    ] {
        let o = run_with_stdin(
            &["import", d],
            format!("{{\"stream\":\"ok-1\",\"type\":\"T\"}}\n{line}\n"),
        );
        assert_eq!(code(&o), 1, "{line}");
        let err = stderr(&o);
        assert!(err.contains("line 2") && err.contains(message), "{line}: {err}");
        assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    }

    // A failed append: wrong expected version, exit 3, earlier lines kept.
    let input = concat!(
        "{\"stream\":\"w-1\",\"type\":\"A\",\"expected\":\"no-stream\"}\n",
        "{\"stream\":\"w-1\",\"type\":\"B\",\"expected\":\"no-stream\"}\n",
        "{\"stream\":\"w-1\",\"type\":\"C\"}\n",
    );
    let o = run_with_stdin(&["import", d], input);
    assert_eq!(code(&o), 3);
    assert!(
        stderr(&o).contains("line 2") && stderr(&o).contains("actual 1"),
        "{}",
        stderr(&o)
    );
    assert_eq!(json_lines(&o).len(), 1);
    assert_eq!(ok(&["read", d, "w-1"]).len(), 1);
}

#[test]
fn an_import_refused_at_its_first_line_creates_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("new");
    let d = s(&store);
    let o = run_with_stdin(&["import", d], "\n{\"stream\":\"s-1\",\"type\":\n");
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));
    assert!(!store.exists(), "nothing was imported, so nothing is created");
    // An empty input imports an empty store, as before.
    let o = run_with_stdin(&["import", d], "");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(ok(&["stats", d])[0]["events"], 0);
}

#[test]
fn export_import_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let c = dir.path().join("c");
    sample_store(&a, 400);
    let exported = ok(&["export", s(&a)]);
    assert_eq!(exported.len(), 400);
    let text = stdout(&run(&["export", s(&a)]));
    let o = run_with_stdin(&["import", s(&b)], &text);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o).len(), 400);

    // Same events, byte for byte, at the same versions and positions.
    let read = |p: &Path| {
        let store = Store::open(p, Options::default()).unwrap();
        let events = store.read_all(ReadAll::forward()).unwrap().collect_all().unwrap();
        let out: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.position(),
                    e.stream().to_string(),
                    e.version(),
                    e.id(),
                    e.event_type().to_string(),
                    e.schema_version(),
                    e.data().to_vec(),
                    e.metadata().to_vec(),
                )
            })
            .collect();
        store.close().unwrap();
        out
    };
    assert_eq!(read(&a), read(&b));

    // export -> import -> export is byte-identical.
    let again = run(&["export", s(&b)]);
    assert_eq!(stdout(&again), text);
    // Importing the same export again is an idempotent retry (same ids at
    // the same expected versions): nothing is written twice.
    let o = run_with_stdin(&["import", s(&b)], &text);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(read(&b).len(), 400);
    // Through a real pipe.
    let mut export = Command::new(BIN)
        .args(["export", s(&a)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let import = Command::new(BIN)
        .args(["import", s(&c)])
        .stdin(export.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(export.wait().unwrap().success());
    assert_eq!(code(&import), 0);
    assert_eq!(stdout(&run(&["export", s(&c)])), text);
}

#[test]
fn export_import_stops_at_an_id_stored_twice_within_the_default_window() {
    // CLI.md, export: a store written with a small id window can hold an
    // id twice (a retry under Any beyond its window), and import, with the
    // default window, refuses the second copy; backup copies the store.
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let store = Store::open(&a, Options::default().with_idempotency_window_events(100)).unwrap();
    let placed = EventData::new("OrderPlaced", "{}");
    store.append("Order-1", ExpectedVersion::Any, [placed.clone()]).unwrap();
    store
        .append("Order-1", ExpectedVersion::Any, [EventData::new("OrderPaid", "{}")])
        .unwrap();
    for _ in 0..100 {
        store
            .append("Other", ExpectedVersion::Any, [EventData::new("T", "{}")])
            .unwrap();
    }
    let again = store.append("Order-1", ExpectedVersion::Any, [placed]).unwrap();
    assert_eq!(again.first_position, 103, "written again, beyond the window");
    store.close().unwrap();
    assert_eq!(ok(&["verify", s(&a)])[0]["duplicate_ids"]["extra_events"], 1);

    let text = stdout(&run(&["export", s(&a)]));
    let b = dir.path().join("b");
    let o = run_with_stdin(&["import", s(&b)], &text);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).starts_with("annal: line 103: "), "{}", stderr(&o));
    assert_eq!(json_lines(&o).len(), 102);

    let c = dir.path().join("c");
    ok(&["backup", s(&a), s(&c)]);
    assert_eq!(stdout(&run(&["export", s(&c)])), text);
}

#[test]
fn stats_has_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    sample_store(dir.path(), 200);
    let st = ok(&["stats", s(dir.path())]);
    assert_eq!(st.len(), 1);
    let st = &st[0];
    for key in [
        "events",
        "streams",
        "segments",
        "disk_bytes",
        "last_position",
        "index_memory_bytes",
        "index_mapped_bytes",
        "largest_streams",
    ] {
        assert!(st.get(key).is_some(), "missing {key}: {st}");
    }
    assert_eq!(st["events"], 200);
    assert_eq!(st["streams"], 4);
    assert_eq!(st["last_position"], 200);
    assert!(st["segments"].as_u64().unwrap() > 1);
    assert_eq!(
        st["largest_streams"][0],
        serde_json::json!({"stream":"c-0","events":50})
    );
    let top = ok(&["stats", s(dir.path()), "--top", "2"]);
    assert_eq!(top[0]["largest_streams"].as_array().unwrap().len(), 2);
}

/// Flips one byte in the middle of the second segment (sealed); returns
/// its path.
fn damage_segment_two(dir: &Path) -> PathBuf {
    let seg = dir.join(annal::log::segment::file_name(2));
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&seg, bytes).unwrap();
    seg
}

#[test]
fn import_into_a_damaged_store_exits_4_naming_the_damage() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    sample_store(dir.path(), 300);
    let seg = damage_segment_two(dir.path());
    // Without the index file, the open replays (and checks) the whole log.
    std::fs::remove_file(dir.path().join("index")).unwrap();
    let before = std::fs::read(&seg).unwrap();
    let o = run_with_stdin(&["import", d], "{\"stream\":\"s-1\",\"type\":\"T\"}\n");
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let err = stderr(&o);
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name) && !err.contains("line 1"), "{err}");
    assert!(stdout(&o).is_empty());
    assert_eq!(std::fs::read(&seg).unwrap(), before, "nothing changed");
}

#[test]
fn verify_clean_and_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    sample_store(dir.path(), 300);
    let o = run(&["verify", d, "--progress"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = &json_lines(&o)[0];
    assert_eq!(v["clean"], true);
    assert_eq!(v["events"], 300);
    assert_eq!(v["index"]["status"], "agrees");
    assert_eq!(v["corruption"], Value::Null);

    let seg = damage_segment_two(dir.path());
    let before: Vec<Vec<u8>> = ["index", &annal::log::segment::file_name(2)]
        .iter()
        .map(|f| std::fs::read(dir.path().join(f)).unwrap())
        .collect();
    let o = run(&["verify", d]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let err = stderr(&o);
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name) && err.contains("byte offset"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let v = &json_lines(&o)[0];
    assert_eq!(v["clean"], false);
    assert_eq!(v["corruption"]["file"], s(&seg));
    let offset = v["corruption"]["offset"].as_u64().unwrap();
    assert!(err.contains(&format!("offset {offset}")), "{err}");
    let after: Vec<Vec<u8>> = ["index", &annal::log::segment::file_name(2)]
        .iter()
        .map(|f| std::fs::read(dir.path().join(f)).unwrap())
        .collect();
    assert!(before == after, "verify changed the store");

    // Reading through the damage is refused with exit 4 too.
    let o = run(&["read-all", d]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains(name));
}

/// Writes 7 bytes of garbage right after the last batch of segment 1, as
/// a write torn by a crash leaves it; returns the segment's path, its new
/// bytes and where the garbage starts.
fn tear_tail(dir: &Path) -> (PathBuf, Vec<u8>, usize) {
    let seg = dir.join(annal::log::segment::file_name(1));
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end..end + 7].copy_from_slice(b"ABT1 xx");
    std::fs::write(&seg, &bytes).unwrap();
    (seg, bytes, end)
}

#[test]
fn verify_reports_a_torn_tail_without_cutting_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    sample_store(dir.path(), 10);
    let (seg, bytes, end) = tear_tail(dir.path());
    let o = run(&["verify", d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = &json_lines(&o)[0];
    assert_eq!(v["torn_tail"]["offset"], end as u64);
    assert_eq!(v["torn_tail"]["bytes"], 7);
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "not cut");

    // The next writing command cuts it, keeps a copy, and says so.
    let o = run(&["append", d, "c-new", "T"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("annal: warning: cut a torn final write of 7 bytes"),
        "{err}"
    );
    let copy = dir
        .path()
        .join("quarantine")
        .join(format!("{}.torn-{end}", annal::log::segment::file_name(1)));
    assert!(err.contains(s(&copy)), "{err}");
    assert_eq!(std::fs::read(&copy).unwrap(), &bytes[end..end + 7]);
}

/// Standard error on a full disk (`/dev/full`): a message or warning that
/// cannot be written is dropped; the command still does its work and
/// exits with its own status (it panicked, exit 101, before the append).
#[cfg(target_os = "linux")]
#[test]
fn messages_that_cannot_be_written_change_no_outcome() {
    let run_stderr_full = |args: &[&str]| {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        Command::new(BIN).args(args).stderr(full).output().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    sample_store(dir.path(), 10);
    // A warning at open (the torn tail cut), then the append itself.
    tear_tail(dir.path());
    let o = run_stderr_full(&["append", d, "c-new", "T"]);
    assert_eq!(code(&o), 0);
    assert_eq!(json_lines(&o)[0]["first_version"], 1);
    // A refused append keeps its exit status (3: wrong expected version).
    let o = run_stderr_full(&["append", d, "c-new", "T", "--expected", "no-stream"]);
    assert_eq!(code(&o), 3);
    // Damage keeps verify's (4).
    let damaged = tempfile::tempdir().unwrap();
    sample_store(damaged.path(), 300);
    damage_segment_two(damaged.path());
    let o = run_stderr_full(&["verify", s(damaged.path())]);
    assert_eq!(code(&o), 4);
    // And repair, which writes its account on standard error, repairs.
    let o = run_stderr_full(&["repair", s(damaged.path())]);
    assert_eq!(code(&o), 0);
    assert_eq!(json_lines(&o)[0]["repaired"], true);
    assert_eq!(code(&run(&["verify", s(damaged.path())])), 0);
}

#[test]
fn repair_keeps_the_prefix_and_quarantines_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    sample_store(dir.path(), 300);
    damage_segment_two(dir.path());
    let v = json_lines(&run(&["verify", d]))[0].clone();
    let kept = v["events"].as_u64().unwrap();
    assert!(kept > 0 && kept < 300);

    let o = run(&["repair", d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = &json_lines(&o)[0];
    assert_eq!(r["repaired"], true);
    assert_eq!(r["kept_events"], kept);
    // Every event but the damaged one is still readable in quarantine.
    assert_eq!(r["quarantined_events"], 300 - kept - 1);
    assert_eq!(r["index_rebuilt"], true);
    assert_eq!(r["checkpoints_lowered"], serde_json::json!([]));
    assert_eq!(r["snapshots_dropped"], serde_json::json!([]));
    assert_eq!(r["headers_rebuilt"], serde_json::json!([]));
    assert_eq!(r["damage"], v["corruption"]);
    assert!(stderr(&o).contains(&format!("kept {kept} events")), "{}", stderr(&o));
    let q = dir.path().join("quarantine");
    let files = r["quarantined_files"].as_array().unwrap();
    assert!(!files.is_empty());
    for f in files {
        let f = PathBuf::from(f.as_str().unwrap());
        assert!(f.starts_with(&q) && f.exists(), "{f:?}");
    }

    let all = ok(&["read-all", d]);
    assert_eq!(all.len() as u64, kept);
    assert_eq!(ok(&["verify", d])[0]["clean"], true);
    ok(&["append", d, "after-1", "Repaired"]);
    assert_eq!(ok(&["stats", d])[0]["events"], kept + 1);

    // A second repair finds nothing to do.
    let o = run(&["repair", d]);
    assert_eq!(code(&o), 0);
    assert_eq!(json_lines(&o)[0]["repaired"], false);
}

/// `salvage` prints the quarantined events exactly as `export` printed
/// them before the damage, and `import` appends them again until one whose
/// stream lost an event no longer follows on.
#[test]
fn salvage_prints_quarantined_events_as_they_were_exported() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let o = run(&["salvage", d]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, ""), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing to salvage"), "{}", stderr(&o));
    assert_eq!(code(&run(&["salvage", &format!("{d}/missing")])), 1);

    sample_store(dir.path(), 300);
    let exported: Vec<String> = stdout(&run(&["export", d])).lines().map(String::from).collect();
    damage_segment_two(dir.path());
    let r = ok(&["repair", d])[0].clone();
    let kept = r["kept_events"].as_u64().unwrap() as usize;
    let moved = r["quarantined_events"].as_u64().unwrap() as usize;
    assert_eq!(kept + 1 + moved, 300, "one event lost in the damaged batch");
    // Later segments were moved whole, and the damaged one's tail: both read.
    assert!(r["quarantined_files"].as_array().unwrap().len() > 2, "{r}");

    let o = run(&["salvage", d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let salvaged: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(
        salvaged,
        exported[kept + 1..],
        "every readable quarantined event, in log order"
    );
    assert!(stderr(&o).contains("unreadable bytes"), "{}", stderr(&o));

    // The lost event was in stream c-(kept % 4): the three events after it
    // are in other streams and follow on; the fourth is in its stream.
    let o = run_with_stdin(&["import", d], stdout(&run(&["salvage", d])));
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("line 4"), "{}", stderr(&o));
    let now: Vec<String> = stdout(&run(&["export", d])).lines().map(String::from).collect();
    assert_eq!(now.len(), kept + 3);
    assert_eq!(
        now[kept..],
        exported[kept + 1..kept + 4],
        "same ids, versions and payloads"
    );
    // Again: the appended lines are idempotent retries, nothing is doubled.
    let o = run_with_stdin(&["import", d], stdout(&run(&["salvage", d])));
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_eq!(ok(&["stats", d])[0]["events"], kept as u64 + 3);

    // A second copy of quarantined bytes (a later repair's, say) prints
    // nothing again: each id once.
    let quarantined = |matches: &dyn Fn(&str) -> bool| -> String {
        let files = r["quarantined_files"].as_array().unwrap();
        let file = files.iter().map(|f| f.as_str().unwrap()).find(|f| matches(f));
        file.unwrap().to_string()
    };
    let from = quarantined(&|f| f.contains(".seg.from-"));
    std::fs::copy(&from, format!("{from}.1")).unwrap();
    let o = run(&["salvage", d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), salvaged, "each id once");
    assert!(stderr(&o).contains("whose id was printed already"), "{}", stderr(&o));
    std::fs::remove_file(format!("{from}.1")).unwrap();

    // A copy of a whole segment under any name ending in .seg reads from
    // after its header; files are checked before anything is printed.
    let whole = quarantined(&|f| f.ends_with(".seg"));
    let copy = dir.path().join("copy.seg");
    std::fs::copy(&whole, &copy).unwrap();
    let o = run(&["salvage", d, s(&copy)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        !stdout(&o).is_empty() && !stderr(&o).contains("unreadable"),
        "{}",
        stderr(&o)
    );
    let o = run(&["salvage", d, s(&copy), &format!("{d}/missing.seg")]);
    assert_eq!((code(&o), stdout(&o).as_str()), (1, ""), "{}", stderr(&o));
    let o = run(&["salvage", &format!("{d}/missing"), s(&copy)]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));

    // Named files only: the first quarantined one.
    let first = r["quarantined_files"][0].as_str().unwrap();
    let o = run(&["salvage", d, first]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let from_first: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert!(!from_first.is_empty() && from_first.len() < salvaged.len());
    assert_eq!(from_first, salvaged[..from_first.len()]);
    assert!(stderr(&o).contains(first), "{}", stderr(&o));
}

/// Input that the append refuses creates no store, from `append` or from
/// the first line of an `import`.
#[test]
fn a_refused_append_creates_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("new");
    let d = s(&store);
    let nil = "00000000-0000-0000-0000-000000000000";
    for args in [
        &["append", d, "", "T"][..],
        &["append", d, "s-1", ""],
        &["append", d, "s-1", "T", "--id", nil],
    ] {
        let o = run(args);
        assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("invalid input"), "{}", stderr(&o));
        assert!(!store.exists(), "{args:?} created a store");
    }
    let o = run_with_stdin(
        &["import", d],
        format!("{{\"stream\":\"s-1\",\"type\":\"T\",\"id\":\"{nil}\"}}\n"),
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("line 1") && stderr(&o).contains("nil"),
        "{}",
        stderr(&o)
    );
    assert!(!store.exists(), "import created a store");
    // A condition no empty store meets: the append's own conflict, exit 3.
    for (flag, field) in [("3", "3"), ("exists", "\"exists\"")] {
        let o = run(&["append", d, "s-1", "T", "--expected", flag]);
        assert_eq!(code(&o), 3, "{flag}: {}", stderr(&o));
        assert!(stderr(&o).contains("wrong expected version"), "{}", stderr(&o));
        let line = format!("{{\"stream\":\"s-1\",\"type\":\"T\",\"expected\":{field}}}\n");
        let o = run_with_stdin(&["import", d], &line);
        assert_eq!(code(&o), 3, "{field}: {}", stderr(&o));
        assert!(stderr(&o).contains("line 1: wrong expected version"), "{}", stderr(&o));
        assert!(!store.exists(), "--expected {flag} created a store");
    }
    // A file in the directory's place is that, not a version conflict.
    let file = dir.path().join("file");
    std::fs::write(&file, "hi").unwrap();
    let o = run(&["append", s(&file), "s-1", "T", "--expected", "1"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));
    // Met by an empty store: created.
    ok(&["append", d, "s-1", "T", "--expected", "0"]);
}

/// `--expected` values that are no version get the command's own message.
#[test]
fn expected_versions_that_cannot_be_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    for (value, message) in [
        ("-1", "must not be negative"),
        ("4294967296", "too large"),
        ("99999999999999999999", "too large"),
        ("soon", "any, no-stream, exists or a number"),
    ] {
        let o = run(&["append", d, "s-1", "T", "--expected", value]);
        assert_eq!(code(&o), 2, "{value}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{value}: {}", stderr(&o));
    }
    for (value, message) in [
        ("4294967296", "too large"),
        ("18446744073709551616", "too large"),
        ("-1", "must not be negative"),
        ("1.5", "a version number"),
    ] {
        let line = format!("{{\"stream\":\"s-1\",\"type\":\"T\",\"expected\":{value}}}\n");
        let o = run_with_stdin(&["import", d], &line);
        assert_eq!(code(&o), 1, "{value}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{value}: {}", stderr(&o));
    }
    // The largest version is accepted (and is the wrong one here).
    let o = run(&["append", d, "s-1", "T", "--expected", "4294967295"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
}

/// An editor's byte-order mark at the start of an import file is skipped.
#[test]
fn import_skips_a_byte_order_mark() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let o = run_with_stdin(&["import", d], "\u{feff}{\"stream\":\"s-1\",\"type\":\"T\"}\n");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(ok(&["read", d, "s-1"]).len(), 1);
    // Anywhere else it is not JSON.
    let o = run_with_stdin(&["import", d], "{\"stream\":\"s-1\",\"type\":\"T\"}\n\u{feff}{}\n");
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));
}

/// Opening a store keeps no file open per segment: one of many more
/// segments than the process may open files opens, reads and appends.
#[cfg(unix)]
#[test]
fn a_store_of_more_segments_than_open_files_allowed_opens() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let options = Options::default()
        .with_segment_size_bytes(annal::limits::SEGMENT_BYTES_MIN)
        .with_durability(annal::Durability::Buffered);
    let store = Store::open(dir.path(), options).unwrap();
    for i in 0..3_000u64 {
        let e = EventData::new("T", format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(200)));
        store
            .append(&format!("c-{}", i % 7), ExpectedVersion::Any, [e])
            .unwrap();
    }
    let segments = store.stats().segments;
    store.close().unwrap();
    assert!(segments > 200, "{segments} segments");
    let limited = |args: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n 64 && exec {BIN} {args}"))
            .output()
            .unwrap()
    };
    let o = limited(&format!("stats {d}"));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["events"], 3_000);
    let o = limited(&format!("append {d} c-1 T"));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = limited(&format!("read-all {d}"));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o).len(), 3_001);
}

/// An import stopped by the file-size limit (`ulimit -f`: the same path
/// as a full disk) reports the line and the write that failed, says which
/// lines were appended without being acknowledged, and every line it did
/// acknowledge is in the store.
#[cfg(target_os = "linux")]
#[test]
fn an_import_stopped_by_the_file_size_limit_says_where_and_what() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let input = dir.path().join("in.jsonl");
    let line = |i: usize| {
        format!(
            "{{\"stream\":\"s-{}\",\"type\":\"T\",\"data\":{{\"pad\":\"{}\"}}}}\n",
            i % 50,
            "x".repeat(200)
        )
    };
    std::fs::write(&input, (0..20_000).map(line).collect::<String>()).unwrap();
    // 2 or 4 MiB, as the shell counts blocks: either is less than the input.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 4096 && exec {BIN} import {} {}",
            s(&store),
            s(&input)
        ))
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.starts_with("annal: line ") && err.contains("File too large"),
        "{err}"
    );
    let acknowledged = json_lines(&o).len() as u64;
    assert!(acknowledged > 0);
    if err.contains("were appended before it") {
        assert!(err.contains(&format!("input lines {} to ", acknowledged + 1)), "{err}");
    }
    let events = ok(&["stats", s(&store)])[0]["events"].as_u64().unwrap();
    assert!(
        events >= acknowledged && events < 20_000,
        "{events} events, {acknowledged} acknowledged"
    );
}

/// A DIR that cannot be read (here a symbolic link to itself) is reported
/// with the system's error, not as "no annal store" (which would say
/// something about the store that nobody knows).
#[cfg(unix)]
#[test]
fn a_dir_that_cannot_be_read_is_an_error_not_a_missing_store() {
    let dir = tempfile::tempdir().unwrap();
    let looped = dir.path().join("loop");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    for command in ["verify", "repair", "stats"] {
        let o = run(&[command, s(&looped)]);
        assert_eq!(code(&o), 1, "{command}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(!err.contains("no annal store"), "{command}: {err}");
        assert!(err.contains("symbolic links"), "{command}: {err}");
    }
}

/// A repair whose copy into quarantine fails (the file-size limit, as a
/// full disk) fails with the error, leaves no partial copy behind, and a
/// later repair does the whole job.
#[cfg(target_os = "linux")]
#[test]
fn a_repair_that_cannot_write_its_copy_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    sample_store(dir.path(), 300);
    damage_segment_two(dir.path());
    // 2 or 4 KiB: less than the half segment (8 KiB) to copy.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -f 4 && exec {BIN} repair {d}"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("File too large"), "{}", stderr(&o));
    let quarantine = dir.path().join("quarantine");
    let partial: Vec<_> = std::fs::read_dir(&quarantine)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        partial.iter().all(|n| !n.to_string_lossy().ends_with(".partial")),
        "{partial:?}"
    );
    let o = run(&["repair", d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["repaired"], true);
    assert_eq!(code(&run(&["verify", d])), 0);
}

/// A repair that lost the first segment's header, killed after it moved
/// the segments into quarantine and before the checkpoints: `repair` again
/// finishes the job (the directory holds no segment); until then other
/// commands refuse the store as damaged (its log missing) and say to run
/// it again.
#[test]
fn repair_finishes_a_store_removal_that_was_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    sample_store(dir.path(), 50);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    store.checkpoints().save("c", 50).unwrap();
    store.close().unwrap();
    let q = dir.path().join("quarantine");
    std::fs::create_dir(&q).unwrap();
    let name = "00000000000000000001.seg";
    std::fs::rename(dir.path().join(name), q.join(name)).unwrap();

    let o = run(&["verify", d]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("no segment file") && stderr(&o).contains("`annal repair` was stopped, run it again"));
    let out = ok(&["repair", d]);
    assert_eq!(out[0]["checkpoints_quarantined"], true, "{out:?}");
    assert!(q.join("checkpoints").exists() && !dir.path().join("checkpoints").exists());
    assert_eq!(code(&run(&["repair", d])), 1);
    ok(&["append", d, "s", "T"]);
    assert_eq!(ok(&["verify", d])[0]["clean"], true);
}

/// A lost last segment leaves no log bytes to move: the summary says so
/// (and why) instead of "moved 0 events".
#[test]
fn repair_of_a_lost_last_segment_says_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    sample_store(dir.path(), 300);
    let last = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| annal::log::segment::parse_file_name(e.unwrap().file_name().to_str()?))
        .max()
        .unwrap();
    std::fs::remove_file(dir.path().join(annal::log::segment::file_name(last))).unwrap();
    let o = run(&["repair", d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = &json_lines(&o)[0];
    assert_eq!(r["repaired"], true);
    assert_eq!(r["quarantined_bytes"], 0);
    let err = stderr(&o);
    assert!(
        err.contains("no log bytes to move") && err.contains("index file"),
        "{err}"
    );
    assert!(!err.contains("moved 0"), "{err}");
    assert_eq!(ok(&["verify", d])[0]["clean"], true);
}

/// The last segment deleted with the index file: only a snapshot of one of
/// the lost events shows the loss, and verify says so (exit 4) until
/// repair drops that snapshot.
#[test]
fn verify_reports_a_lost_segment_that_only_a_snapshot_shows() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    sample_store(dir.path(), 300);
    let segments = || {
        let mut ids: Vec<u64> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| annal::log::segment::parse_file_name(e.unwrap().file_name().to_str()?))
            .collect();
        ids.sort_unstable();
        ids
    };
    let store = Store::open(dir.path(), Options::default().with_segment_size_bytes(16 * 1024)).unwrap();
    let last_event = store
        .read_all(ReadAll::backward().limit(1))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    store
        .save_snapshot(last_event.stream(), last_event.version(), 1, b"state")
        .unwrap();
    store.close().unwrap();
    let last = *segments().last().unwrap();
    assert!(last > 1);
    std::fs::remove_file(dir.path().join(annal::log::segment::file_name(last))).unwrap();
    std::fs::remove_file(dir.path().join("index")).unwrap();

    let o = run(&["verify", d]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    let v = &json_lines(&o)[0];
    assert_eq!(v["clean"], false);
    assert_eq!(v["snapshots"]["status"], "damaged");
    assert_eq!(v["corruption"], v["snapshots"]["first_problem"]);
    let reason = v["corruption"]["reason"].as_str().unwrap();
    assert!(reason.contains("past the stream's last event"), "{reason}");
    assert!(stderr(&o).contains("snapshots"), "{}", stderr(&o));

    let o = run(&["repair", d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["snapshots_dropped"].as_array().map(Vec::len), Some(1));
    assert_eq!(ok(&["verify", d])[0]["clean"], true);
}

#[test]
fn reading_commands_write_nothing_and_share_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    sample_store(dir.path(), 10);
    tear_tail(dir.path());
    let snapshot = || {
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let modified = std::fs::metadata(&p).unwrap().modified().unwrap();
                (p.clone(), std::fs::read(&p).unwrap(), modified)
            })
            .collect();
        files.sort();
        files
    };
    let before = snapshot();
    // A read-only library handle shares the store with the commands.
    let reader = Store::open(dir.path(), Options::default().with_read_only(true)).unwrap();
    assert_eq!(ok(&["read-all", d]).len(), 10);
    assert_eq!(ok(&["read", d, "c-1"]).len(), 3);
    assert_eq!(ok(&["streams", d]).len(), 4);
    assert_eq!(ok(&["export", d]).len(), 10);
    let stats = &ok(&["stats", d])[0];
    assert_eq!(stats["open"]["torn_tail_bytes"], 7);
    let o = run(&["append", d, "c-1", "T"]);
    assert_eq!(code(&o), 5, "a writer must wait for the readers");
    drop(reader);
    assert_eq!(snapshot(), before, "a reading command changed the store");
    ok(&["append", d, "c-1", "T"]);
    assert_eq!(ok(&["read-all", d]).len(), 11);
}

#[test]
fn backup_copies_the_store_and_refuses_an_existing_destination() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    sample_store(&store_dir, 40);
    let dest = dir.path().join("copy");
    let report = &ok(&["backup", s(&store_dir), s(&dest)])[0];
    assert_eq!(report["last_position"], 40);
    assert!(report["segments"].as_u64().unwrap() >= 1);
    assert_eq!(ok(&["read-all", s(&dest)]), ok(&["read-all", s(&store_dir)]));
    let o = run(&["backup", s(&store_dir), s(&dest)]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let missing = dir.path().join("missing");
    let o = run(&["backup", s(&missing), s(&dir.path().join("other"))]);
    assert_eq!(code(&o), 1);
    assert!(!dir.path().join("other").exists());

    // The summary cannot be written: the backup is made all the same, and
    // the message says so (a retry would find DEST taken).
    #[cfg(target_os = "linux")]
    {
        let full = dir.path().join("full");
        let o = run_into_full_disk(&["backup", s(&store_dir), s(&full)]);
        assert_eq!(code(&o), 1);
        assert!(stderr(&o).contains("is complete"), "{}", stderr(&o));
        assert_eq!(ok(&["read-all", s(&full)]).len(), 40);
    }
}

#[test]
fn locked_store_exits_5() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let store = Store::open(dir.path(), Options::default()).unwrap();
    for args in [
        vec!["append", d, "s-1", "T"],
        vec!["read-all", d],
        vec!["stats", d],
        vec!["verify", d],
        vec!["repair", d],
        vec!["backup", d, "/nonexistent-parent/never"],
    ] {
        let o = run(&args);
        assert_eq!(code(&o), 5, "{args:?}");
        // Held by another process (this test's), and said so.
        assert!(
            stderr(&o).contains("locked by another handle or process"),
            "{}",
            stderr(&o)
        );
    }
    let o = run_with_stdin(&["import", d], "{\"stream\":\"s-1\",\"type\":\"T\"}\n");
    assert_eq!(code(&o), 5);
    // The lock is no fault of the first line: no line number.
    assert!(
        stderr(&o).starts_with("annal: ") && !stderr(&o).contains("line 1"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("locked by another handle or process"),
        "{}",
        stderr(&o)
    );
    store.close().unwrap();
    ok(&["append", d, "s-1", "T"]);
}

#[test]
fn commands_other_than_append_and_import_never_create_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = dir.path().join("missing");
    for d in [&empty, &missing] {
        for args in [
            vec!["read", s(d), "s-1"],
            vec!["read-all", s(d)],
            vec!["export", s(d)],
            vec!["stats", s(d)],
            vec!["streams", s(d)],
            vec!["verify", s(d)],
            vec!["repair", s(d)],
        ] {
            let o = run(&args);
            assert_eq!(code(&o), 1, "{args:?}");
            assert!(stderr(&o).contains("no annal store"), "{}", stderr(&o));
        }
    }
    assert!(!missing.exists());
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    // import creates it
    let o = run_with_stdin(&["import", s(&missing)], "");
    assert_eq!(code(&o), 0);
    ok(&["stats", s(&missing)]);
}

/// An append whose result cannot be written still says the event is
/// stored, with its id, so a retry can avoid writing it twice.
#[cfg(target_os = "linux")]
#[test]
fn an_append_whose_output_fails_says_the_event_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let id = "9045a153-227a-4ddb-a492-2c5f7ff97445";
    let o = run_into_full_disk(&["append", s(&store), "Order-1", "Placed", "--id", id]);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(
        err.contains(&format!("event {id} was appended at position 1")) && err.contains("writing the result failed"),
        "{err}"
    );
    // It was: reading shows it, and a retry with the id writes nothing new.
    assert_eq!(ok(&["read-all", s(&store)]).len(), 1);
    ok(&["append", s(&store), "Order-1", "Placed", "--id", id]);
    assert_eq!(ok(&["read-all", s(&store)]).len(), 1);
}

/// An import whose results cannot be written says which input lines are
/// appended all the same, so that they are not imported twice.
#[cfg(target_os = "linux")]
#[test]
fn an_import_whose_output_fails_says_which_lines_were_appended() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let input = dir.path().join("in.jsonl");
    let text: String = (0..3)
        .map(|i| format!("{{\"stream\":\"c-{i}\",\"type\":\"T\",\"data\":{{}}}}\n"))
        .collect();
    std::fs::write(&input, text).unwrap();
    let o = run_into_full_disk(&["import", s(&store), s(&input)]);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(
        err.contains("input lines 1 to 3 are appended and durable, but writing their results failed"),
        "{err}"
    );
    assert_eq!(ok(&["read-all", s(&store)]).len(), 3);
}

/// The index file is a cache: when it cannot be saved as the store closes
/// after an append (here a directory stands in its way), the append,
/// already durable, still succeeds and prints its result; the failure is
/// a warning.
#[test]
fn an_append_whose_index_save_fails_still_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    ok(&["append", s(&store), "Order-1", "Placed"]);
    std::fs::remove_file(store.join("index")).unwrap();
    std::fs::create_dir(store.join("index")).unwrap();
    let o = run(&["append", s(&store), "Order-1", "Paid", "--expected", "1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["last_version"], 2);
    assert!(stderr(&o).starts_with("annal: warning: "), "{}", stderr(&o));
    assert_eq!(ok(&["read", s(&store), "Order-1"]).len(), 2);
}

/// `-` names stdin; a directory given as FILE is refused before anything
/// is created.
#[test]
fn import_reads_stdin_from_a_dash_and_refuses_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let o = run_with_stdin(
        &["import", s(&store), "-"],
        "{\"stream\":\"c-1\",\"type\":\"T\",\"data\":{}}\n",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o).len(), 1);

    let other = dir.path().join("other");
    let o = run(&["import", s(&other), s(dir.path())]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("it is a directory"), "{}", stderr(&o));
    assert!(!other.exists(), "a store was created for a failed import");
}

/// JSON nested deeper than 127 levels is written as base64, as CLI.md says
/// (jq, Python and serde_json refuse deeper values), and export and import
/// still carry it byte for byte.
#[test]
fn json_nested_deeper_than_127_levels_is_written_as_base64() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let input = format!(
        "{{\"stream\":\"d-1\",\"type\":\"T\",\"data\":{}}}\n{{\"stream\":\"d-1\",\"type\":\"T\",\"data\":{}}}\n",
        nested(127),
        nested(128)
    );
    let o = run_with_stdin(&["import", d], &input);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for command in ["read-all", "export"] {
        let o = run(&[command, d]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let out = stdout(&o);
        let rows: Vec<&str> = out.lines().collect();
        assert!(
            rows[0].contains(&format!("\"data\":{}", nested(127))),
            "{command}: {}",
            rows[0]
        );
        assert!(rows[1].contains("\"data_base64\":"), "{command}: {}", rows[1]);
    }
    let copy = dir.path().join("copy");
    let exported = stdout(&run(&["export", d]));
    let o = run_with_stdin(&["import", s(&copy)], &exported);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&run(&["export", s(&copy)])), exported);
}

/// An input without line breaks (a binary file given by mistake) is
/// refused once a line passes what any append could hold (128 MiB), not
/// read whole into memory; what came before it is appended as usual.
#[test]
fn an_import_line_longer_than_any_append_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let mut input = String::from("{\"stream\":\"a-1\",\"type\":\"T\"}\n");
    input.push_str(&"a".repeat((128 << 20) + 1));
    let o = run_with_stdin(&["import", d], &input);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("line 2: longer than 128 MiB"), "{}", stderr(&o));
    assert_eq!(json_lines(&o).len(), 1, "the first line was appended and said so");
    assert_eq!(ok(&["read-all", d]).len(), 1);
}

/// Messages name what is wrong: a regular file given as DIR to `salvage`
/// is not a directory (it exists); a backup destination is named as given.
#[test]
fn messages_name_paths_as_given_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    std::fs::write(&file, b"x").unwrap();
    let o = run(&["salvage", s(&file)]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("is not a directory"), "{}", stderr(&o));
    let o = run(&["salvage", s(&dir.path().join("nope"))]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));

    let store = dir.path().join("st");
    sample_store(&store, 3);
    let o = Command::new(BIN)
        .current_dir(dir.path())
        .args(["backup", "st", "st"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("backup destination st already exists"),
        "{}",
        stderr(&o)
    );
}

/// Bytes added after the last batch of a sealed segment are reported as
/// what they are (not a batch), not as a batch cut short.
#[test]
fn junk_after_a_sealed_segment_is_not_called_a_cut_batch() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    sample_store(dir.path(), 300);
    let sealed = dir.path().join(annal::log::segment::file_name(1));
    let mut f = std::fs::OpenOptions::new().append(true).open(&sealed).unwrap();
    f.write_all(b"junkjunk").unwrap();
    drop(f);
    let o = run(&["verify", d]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let out = stdout(&o) + &stderr(&o);
    assert!(out.contains("bad batch magic"), "{out}");
    assert!(!out.contains("cut short"), "{out}");
}

/// A repair that loses the first segment's header says that no store is
/// left, and why the checkpoints went (not that they were unreadable).
#[test]
fn repair_of_a_lost_first_header_says_no_store_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    sample_store(dir.path(), 300);
    let store = Store::open(dir.path(), Options::default()).unwrap();
    store.checkpoints().save("c", 5).unwrap();
    store.close().unwrap();
    let first = dir.path().join(annal::log::segment::file_name(1));
    let mut bytes = std::fs::read(&first).unwrap();
    // The header and the first batch: the header cannot be rebuilt.
    bytes[20] ^= 1;
    bytes[64 + 45] ^= 1;
    std::fs::write(&first, bytes).unwrap();
    let o = run(&["repair", d]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["checkpoints_quarantined"], true);
    let err = stderr(&o);
    assert!(err.contains("holds no store now"), "{err}");
    assert!(!err.contains("checkpoints file was unreadable"), "{err}");
}
